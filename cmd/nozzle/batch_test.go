package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServe_BatchResumesAfterRestart: a batch runs on the demo model's
// real engine; the server stops while it is in progress and starts again
// on the same data folder; the batch completes, every line answered
// once, charged once (the lines that completed before the stop are not
// run or charged again), each line found in the usage by its request id,
// and the ledger checks out.
func TestServe_BatchResumesAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the server twice")
	}
	data := t.TempDir()
	m, stop := startServe(t, "--data", data, "--batch-concurrency", "1")
	key := m.demoKey(t)
	const lines = 12
	var in strings.Builder
	for i := range lines {
		fmt.Fprintf(&in, `{"custom_id":"l%d","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-chat","messages":[{"role":"user","content":"Line %d"}],"max_tokens":48,"temperature":0}}`+"\n", i, i)
	}
	base := "http://" + m.Addr
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write([]byte(in.String()))
	mw.Close()
	req, _ := http.NewRequest("POST", base+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&file)
	resp.Body.Close()
	if resp.StatusCode != 200 || file.ID == "" {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", base+"/v1/batches", strings.NewReader(`{"input_file_id":"`+file.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var batch struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&batch)
	resp.Body.Close()
	type state struct {
		Status        string
		OutputFileID  string                                 `json:"output_file_id"`
		RequestCounts struct{ Total, Completed, Failed int } `json:"request_counts"`
	}
	poll := func(base string, until func(s state) bool) state {
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, body := get(t, base+"/v1/batches/"+batch.ID, key)
			var s state
			json.Unmarshal(body, &s)
			if until(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch stuck: %s", body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	s := poll(base, func(s state) bool { return s.RequestCounts.Completed >= 1 || s.Status == "completed" })
	stop()
	if s.Status == "completed" {
		t.Skip("the batch completed before the server stopped")
	}

	m2 := MustRunMain(t, "--data", data, "--batch-concurrency", "1")
	base = "http://" + m2.Addr
	s = poll(base, func(s state) bool { return s.Status == "completed" || s.Status == "failed" })
	if s.Status != "completed" || s.RequestCounts.Completed != lines || s.RequestCounts.Failed != 0 {
		t.Fatalf("batch after the restart: %+v", s)
	}
	_, body := get(t, base+"/v1/files/"+s.OutputFileID+"/content", key)
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		var o struct {
			CustomID string `json:"custom_id"`
			Response struct {
				StatusCode int    `json:"status_code"`
				RequestID  string `json:"request_id"`
			}
		}
		if err := json.Unmarshal([]byte(l), &o); err != nil || o.Response.StatusCode != 200 || seen[o.CustomID] || o.CustomID != fmt.Sprint("l", len(seen)) {
			t.Fatalf("output line %s (lines in input order, each once)", l)
		}
		seen[o.CustomID] = true
		if resp, body := get(t, base+"/v1/usage/requests/"+o.Response.RequestID, key); resp.StatusCode != 200 {
			t.Errorf("usage of line %s (%s): %d %s", o.CustomID, o.Response.RequestID, resp.StatusCode, body)
		}
	}
	if len(seen) != lines {
		t.Errorf("%d output lines", len(seen))
	}
	if parts, _ := filepath.Glob(filepath.Join(data, "files", "*.part")); len(parts) != 0 {
		t.Errorf("partial files left: %v", parts)
	}
	_, body = get(t, base+"/v1/usage", key)
	var u struct {
		Total struct {
			Requests              int     `json:"requests"`
			PromptTokens          int64   `json:"prompt_tokens"`
			CachedPromptTokens    int64   `json:"cached_prompt_tokens"`
			CompletionTokens      int64   `json:"completion_tokens"`
			ChargedUSD            float64 `json:"charged_usd"`
			BatchRequests         int     `json:"batch_requests"`
			BatchPromptTokens     int64   `json:"batch_prompt_tokens"`
			BatchCompletionTokens int64   `json:"batch_completion_tokens"`
			BatchChargeUSD        float64 `json:"batch_charge_usd"`
		} `json:"total"`
	}
	json.Unmarshal(body, &u)
	if u.Total.Requests != lines {
		t.Errorf("%d requests charged for %d lines: %s", u.Total.Requests, lines, body)
	}
	// every line is the Batch API's, charged at the default price's
	// discount (price_batch_discount_percent, 50), the prompt tokens the
	// prefix cache held at the cached prompt price (price_cached_prompt)
	tot := u.Total
	cfg := DefaultConfig()
	want := (float64(tot.PromptTokens-tot.CachedPromptTokens)*cfg.PricePrompt + float64(tot.CachedPromptTokens)*cfg.PriceCachedPrompt +
		float64(tot.CompletionTokens)*cfg.PriceCompletion) / 1e6 * (1 - cfg.PriceBatchDiscount/100)
	if tot.BatchRequests != lines || tot.BatchPromptTokens != tot.PromptTokens || tot.BatchCompletionTokens != tot.CompletionTokens ||
		tot.BatchChargeUSD != tot.ChargedUSD || math.Abs(tot.BatchChargeUSD-want) > 1e-9 || want == 0 {
		t.Errorf("batch lines' usage %+v, want all of it batch, charged %v", tot, want)
	}
	admin, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder // the server holds the ledger: the check asks it
	if err := runLedger(t.Context(), []string{"check", "--data", data, "--addr", m2.Addr, "--admin-token", strings.TrimSpace(string(admin))}, &out, &out); err != nil {
		t.Fatalf("ledger check: %v\n%s", err, out.String())
	}
}
