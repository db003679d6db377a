package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServe_IdempotentRequestByRequestID: with the real ledger, a request
// sent with an Idempotency-Key is found at GET /v1/usage/requests/{id} by
// the X-Request-Id its client saw (the server's, or one it chose) as well
// as by its key, before and after a restart, and the ledger checks out.
func TestServe_IdempotentRequestByRequestID(t *testing.T) {
	data := t.TempDir()
	m, stop := startServe(t, "--data", data)
	key := m.demoKey(t)
	chat := `{"model":"demo-chat","messages":[{"role":"user","content":"Hello!"}],"max_tokens":4,"temperature":0}`
	send := func(base, idemKey, chosen string) string {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(chat))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", idemKey)
		if chosen != "" {
			req.Header.Set("X-Request-Id", chosen)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ ID string }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("chat: %d %v", resp.StatusCode, err)
		}
		rid := resp.Header.Get("X-Request-Id")
		if out.ID != "chatcmpl-"+rid {
			t.Fatalf("completion id %q, X-Request-Id %q", out.ID, rid)
		}
		return rid
	}
	lookup := func(base, id string) (string, float64) {
		resp, body := get(t, base+"/v1/usage/requests/"+id, key)
		var u struct {
			ID         string
			Status     string
			ChargedUSD float64 `json:"charged_usd"`
		}
		if err := json.Unmarshal(body, &u); err != nil || resp.StatusCode != 200 || u.Status != "ok" {
			t.Fatalf("usage of %s: %d %s", id, resp.StatusCode, body)
		}
		return u.ID, u.ChargedUSD
	}
	base := "http://" + m.Addr
	ids := map[string]string{"order-1": send(base, "order-1", ""), "order-2": send(base, "order-2", "invoice-9")}
	if ids["order-2"] != "invoice-9" {
		t.Fatalf("the chosen id became %q", ids["order-2"])
	}
	check := func(base string) {
		for k, rid := range ids {
			gotID, byID := lookup(base, rid)
			gotKey, byKey := lookup(base, k)
			if gotID != rid || gotKey != k || byID != byKey || byID <= 0 {
				t.Errorf("%s: by X-Request-Id %s %v, by key %s %v", k, gotID, byID, gotKey, byKey)
			}
		}
	}
	check(base)
	stop()

	admin, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := runLedger(t.Context(), []string{"check", "--data", data, "--admin-token", strings.TrimSpace(string(admin))}, &out, &out); err != nil {
		t.Fatalf("ledger check: %v\n%s", err, out.String())
	}
	m2 := MustRunMain(t, "--data", data)
	check("http://" + m2.Addr)
}
