package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// TestMain lets the test binary run as the nozzle binary itself: the crash
// test re-executes it with NOZZLE_TEST_MAIN=1 to get a server process it
// can SIGKILL.
func TestMain(m *testing.M) {
	if os.Getenv("NOZZLE_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// engineLib finds the CPU engine library the Makefile builds.
func engineLib(t testing.TB) string {
	t.Helper()
	p, err := engine.Find("libnozzle_cpu.so")
	if err != nil {
		t.Fatalf("the engine library is needed (make build/libnozzle_cpu.so): %v", err)
	}
	return p
}

// MustRunMain starts `nozzle serve` in process on a free port with the demo
// model and a fresh data folder, and returns it once it serves.
func MustRunMain(t testing.TB, args ...string) *Main {
	t.Helper()
	m, _ := startServe(t, args...)
	return m
}

// startServe is MustRunMain that also returns a function stopping the
// server (as SIGTERM does) and waiting for it; the test's cleanup calls it
// if the test did not.
func startServe(t testing.TB, args ...string) (*Main, func()) {
	t.Helper()
	data := t.TempDir()
	base := []string{"--addr", "127.0.0.1:0", "--data", data, "--engine-lib", engineLib(t), "--log-level", "warn", "--kv-memory-mb", "64"}
	cfg, _, err := Load("serve", append(base, args...), func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, quietLogger(), io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx) }()
	select {
	case <-m.Ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("serve did not become ready")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return m, stop
}

func (m *Main) demoKey(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Config.Data, "demo-api-key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// tokenID is the id of a token of the demo model.
func (m *Main) tokenID(t testing.TB, token string) int {
	t.Helper()
	tk, err := tokenizer.Load(filepath.Join(m.Config.Data, "demo-model"))
	if err != nil {
		t.Fatal(err)
	}
	id, ok := tk.TokenID(token)
	if !ok {
		t.Fatalf("no token %q", token)
	}
	return id
}

func post(t testing.TB, url, key, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// openStream posts a streamed completion with client and fails the test
// unless it is answered 200; the caller reads and closes the body.
func openStream(t testing.TB, client *http.Client, url, key, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp
}

// TestServe_EndToEnd runs the demo as a newcomer would: a chat completion
// with a demo adapter, greedy and repeatable, a stream, the usage report.
func TestServe_EndToEnd(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)

	chat := `{"model":"demo-chat","messages":[{"role":"user","content":"Hello!"}],"max_tokens":12,"temperature":0}`
	resp, b1 := post(t, base+"/v1/chat/completions", key, chat)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, b1)
	}
	var out struct {
		Choices []struct {
			Message      struct{ Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(b1, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Choices) != 1 || out.Usage.CompletionTokens == 0 || out.Usage.PromptTokens == 0 {
		t.Fatalf("chat answer %s", b1)
	}
	_, b2 := post(t, base+"/v1/chat/completions", key, chat)
	var out2 = out
	json.Unmarshal(b2, &out2)
	if out2.Choices[0].Message.Content != out.Choices[0].Message.Content {
		t.Fatalf("greedy decoding is not repeatable: %q vs %q", out.Choices[0].Message.Content, out2.Choices[0].Message.Content)
	}

	// The base model lists with the time it was loaded.
	req0, _ := http.NewRequest("GET", base+"/v1/models/base", nil)
	req0.Header.Set("Authorization", "Bearer "+key)
	r0, err := http.DefaultClient.Do(req0)
	if err != nil {
		t.Fatal(err)
	}
	var model struct {
		ID      string
		Created int64
	}
	json.NewDecoder(r0.Body).Decode(&model)
	r0.Body.Close()
	if model.ID != "demo-model" || time.Since(time.Unix(model.Created, 0)) > time.Hour || model.Created > time.Now().Unix() {
		t.Errorf("base model %+v", model)
	}

	// A stream ends with usage and [DONE].
	resp, b := post(t, base+"/v1/completions", key, `{"model":"base","prompt":"Once upon","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`)
	if resp.StatusCode != 200 || !strings.HasSuffix(strings.TrimSpace(string(b)), "data: [DONE]") || !strings.Contains(string(b), `"completion_tokens":5`) {
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}

	// The usage report counts all three requests.
	req, _ := http.NewRequest("GET", base+"/v1/usage?group_by=adapter", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rep nozzle.Report
	json.NewDecoder(r.Body).Decode(&rep)
	r.Body.Close()
	if rep.Total.Requests != 3 {
		t.Fatalf("usage total %+v, want 3 requests", rep.Total)
	}
	// A row per adapter, the base model's named as requests name it.
	byName := map[string]int64{}
	for _, row := range rep.Rows {
		byName[row.AdapterName] = row.Requests
	}
	if len(byName) != 2 || byName["demo-chat"] != 2 || byName["base"] != 1 {
		t.Fatalf("rows by adapter %v", byName)
	}

	// The demo's four adapters, two at a time, by name, from the ledger.
	var names []string
	for after := ""; ; {
		req, _ := http.NewRequest("GET", base+"/v1/adapters?limit=2&after="+after, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Data    []struct{ Name string }
			LastID  string `json:"last_id"`
			HasMore bool   `json:"has_more"`
		}
		json.NewDecoder(r.Body).Decode(&page)
		r.Body.Close()
		if r.StatusCode != 200 || len(page.Data) != 2 {
			t.Fatalf("page after %q: %d %+v", after, r.StatusCode, page)
		}
		for _, a := range page.Data {
			names = append(names, a.Name)
		}
		if !page.HasMore {
			break
		}
		after = page.LastID
	}
	if len(names) != 4 || !slices.IsSorted(names) {
		t.Fatalf("adapters paged: %v", names)
	}
}

// TestServe_SeedWithN: the n choices of a seeded request are n different
// samples, and the whole request is repeatable; its first choice is what
// the same request with n = 1 gives.
func TestServe_SeedWithN(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	texts := func(body string) []string {
		t.Helper()
		resp, b := post(t, base+"/v1/chat/completions", key, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		var out struct {
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, c := range out.Choices {
			s = append(s, c.Message.Content)
		}
		return s
	}
	req := func(n int) string {
		return fmt.Sprintf(`{"model":"demo-chat","messages":[{"role":"user","content":"Hello!"}],"max_tokens":12,"temperature":1,"seed":42,"n":%d}`, n)
	}
	a, b := texts(req(3)), texts(req(3))
	if len(a) != 3 || !slices.Equal(a, b) {
		t.Fatalf("a seeded request is not repeatable:\n%q\n%q", a, b)
	}
	if a[0] == a[1] || a[1] == a[2] || a[0] == a[2] {
		t.Fatalf("the choices of a seeded request are the same sample: %q", a)
	}
	if one := texts(req(1)); one[0] != a[0] {
		t.Fatalf("n=1 gives %q, the first of n=3 %q", one[0], a[0])
	}
}

// TestServe_LogitBias: logit_bias through the whole server and the real
// engine: a token raised by 100 is every token of a greedy completion, at
// a logprob of about 0.
func TestServe_LogitBias(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	complete := func(extra string) (tokens []string, lps []float64) {
		t.Helper()
		resp, b := post(t, base+"/v1/completions", key, `{"model":"demo-model","prompt":"Hello","max_tokens":8,"temperature":0,"logprobs":1`+extra+`}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		var out struct {
			Choices []struct {
				Logprobs struct {
					Tokens        []string  `json:"tokens"`
					TokenLogprobs []float64 `json:"token_logprobs"`
				}
			}
		}
		if err := json.Unmarshal(b, &out); err != nil || len(out.Choices) != 1 {
			t.Fatalf("%v: %s", err, b)
		}
		return out.Choices[0].Logprobs.Tokens, out.Choices[0].Logprobs.TokenLogprobs
	}
	greedy, _ := complete("")
	forced, lps := complete(`,"logit_bias":{"450":100}`)
	if len(forced) != 8 {
		t.Fatalf("forced completion has %d tokens: %q", len(forced), forced)
	}
	for i, tok := range forced {
		if tok != forced[0] || lps[i] < -1e-3 {
			t.Fatalf("token 450 raised by 100: tokens %q logprobs %v", forced, lps)
		}
	}
	if slices.Equal(forced, greedy) {
		t.Fatalf("logit_bias changed nothing: %q", greedy)
	}
}

// TestServe_JSONObject: response_format json_object and json_schema
// through the whole server and the real engine, streamed and not: the
// demo model (random weights) answers with a JSON object (of the schema)
// and finish_reason stop; a schema it cannot enforce is a 400.
func TestServe_JSONObject(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	body := `{"model":"demo-chat","messages":[{"role":"user","content":"Give me JSON."}],"max_tokens":500,"temperature":0,` +
		`"response_format":{"type":"json_object"},"logit_bias":{"%d":4}`
	closer := m.tokenID(t, "}")
	resp, b := post(t, base+"/v1/chat/completions", key, fmt.Sprintf(body, closer)+`}`)
	var out struct {
		Choices []struct {
			Message      struct{ Content string }
			FinishReason string `json:"finish_reason"`
		}
	}
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var obj map[string]any
	if c := out.Choices[0]; json.Unmarshal([]byte(c.Message.Content), &obj) != nil || c.FinishReason != "stop" {
		t.Fatalf("not a JSON object (finish %q): %q", c.FinishReason, c.Message.Content)
	}
	// streamed: the same object, in deltas
	resp, b = post(t, base+"/v1/chat/completions", key, fmt.Sprintf(body, closer)+`,"stream":true}`)
	var streamed strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		var ev struct {
			Choices []struct{ Delta struct{ Content string } }
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok && data != "[DONE]" && json.Unmarshal([]byte(data), &ev) == nil && len(ev.Choices) > 0 {
			streamed.WriteString(ev.Choices[0].Delta.Content)
		}
	}
	if streamed.String() != out.Choices[0].Message.Content {
		t.Fatalf("streamed %q, not streamed %q", streamed.String(), out.Choices[0].Message.Content)
	}
	// a schema: the answer decodes into it, nothing missing, nothing more
	schema := `{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},"sunny":{"type":"boolean"}},` +
		`"required":["city","days","sunny"],"additionalProperties":false}`
	quote := m.tokenID(t, `"`)
	resp, b = post(t, base+"/v1/chat/completions", key, fmt.Sprintf(`{"model":"demo-chat","messages":[{"role":"user","content":"Weather?"}],`+
		`"max_tokens":800,"temperature":0,"logit_bias":{"%d":5},"response_format":{"type":"json_schema","json_schema":{"name":"weather","strict":true,"schema":%s}}}`, quote, schema))
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	var weather struct {
		City  *string
		Days  *int
		Sunny *bool
	}
	dec := json.NewDecoder(strings.NewReader(out.Choices[0].Message.Content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&weather); err != nil || weather.City == nil || weather.Days == nil || weather.Sunny == nil || out.Choices[0].FinishReason != "stop" {
		t.Fatalf("not the schema's (finish %q): %q: %v", out.Choices[0].FinishReason, out.Choices[0].Message.Content, err)
	}
	// a schema the runtime cannot enforce: 400 naming it, before any work
	resp, b = post(t, base+"/v1/chat/completions", key, `{"model":"demo-chat","messages":[{"role":"user","content":"x"}],`+
		`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","format":"uri"}}}}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"param":"response_format.json_schema.schema"`) || !strings.Contains(string(b), "uri") {
		t.Fatalf("unenforceable schema: %d %s", resp.StatusCode, b)
	}
	// vLLM's guided outputs: a choice on the legacy endpoint, a pattern the
	// runtime cannot compile refused naming the parameter
	resp, b = post(t, base+"/v1/completions", key, `{"model":"demo-chat","prompt":"Sky colour:","max_tokens":20,"guided_choice":["blue","grey","orange"]}`)
	var pick struct {
		Choices []struct {
			Text         string
			FinishReason string `json:"finish_reason"`
		}
	}
	if json.Unmarshal(b, &pick); resp.StatusCode != 200 || len(pick.Choices) != 1 || !slices.Contains([]string{"blue", "grey", "orange"}, pick.Choices[0].Text) || pick.Choices[0].FinishReason != "stop" {
		t.Fatalf("guided_choice: %d %s", resp.StatusCode, b)
	}
	resp, b = post(t, base+"/v1/chat/completions", key, `{"model":"demo-chat","messages":[{"role":"user","content":"x"}],"guided_regex":"(?<=a)b"}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"param":"guided_regex"`) || !strings.Contains(string(b), "lookbehind") {
		t.Fatalf("a lookbehind: %d %s", resp.StatusCode, b)
	}
}

// TestServe_CachedPromptTokens: a prompt that begins like an earlier one
// takes its leading blocks from the prefix cache. The ledger keeps the
// count each answer reported: /v1/usage adds it up, as JSON and CSV, the
// cached tokens are charged the default cached prompt price, and the
// ledger check holds.
func TestServe_CachedPromptTokens(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	system := strings.Repeat("You are a careful assistant who answers in one short sentence. ", 6)
	var prompt, cached int64
	for _, q := range []string{"What is two and two?", "Name a colour.", "What is two and two?"} {
		body, _ := json.Marshal(map[string]any{"model": "base", "max_tokens": 2, "temperature": 0,
			"messages": []map[string]string{{"role": "system", "content": system}, {"role": "user", "content": q}}})
		resp, b := post(t, base+"/v1/chat/completions", key, string(body))
		if resp.StatusCode != 200 {
			t.Fatalf("chat: %d %s", resp.StatusCode, b)
		}
		var out struct {
			Usage struct {
				PromptTokens        int64 `json:"prompt_tokens"`
				PromptTokensDetails struct {
					CachedTokens int64 `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			}
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		prompt += out.Usage.PromptTokens
		cached += out.Usage.PromptTokensDetails.CachedTokens
	}
	if cached == 0 || cached >= prompt {
		t.Fatalf("%d of %d prompt tokens came from the prefix cache", cached, prompt)
	}

	get := func(path string) []byte {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, r.StatusCode, b)
		}
		return b
	}
	var rep nozzle.Report
	if err := json.Unmarshal(get("/v1/usage"), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Total.Requests != 3 || rep.Total.PromptTokens != prompt || rep.Total.CachedPromptTokens != cached {
		t.Fatalf("usage total %+v, want 3 requests, %d prompt tokens, %d cached", rep.Total, prompt, cached)
	}
	// the cached tokens are charged the default cached prompt price
	// (price_cached_prompt, half of price_prompt), the others in full
	cfg := DefaultConfig()
	tot := rep.Total
	want := (float64(prompt-cached)*cfg.PricePrompt + float64(cached)*cfg.PriceCachedPrompt + float64(tot.CompletionTokens)*cfg.PriceCompletion) / 1e6
	if math.Abs(tot.ChargedUSD-want) > 2*nozzle.USDPrecision || cfg.PriceCachedPrompt >= cfg.PricePrompt {
		t.Fatalf("charged %v, want %v (cached tokens at %v per million)", tot.ChargedUSD, want, cfg.PriceCachedPrompt)
	}
	recs, err := csv.NewReader(bytes.NewReader(get("/v1/usage?format=csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(recs[0], "cached_prompt_tokens")
	if i < 1 || recs[0][i-1] != "prompt_tokens" || recs[len(recs)-1][i] != strconv.FormatInt(cached, 10) {
		t.Fatalf("usage CSV %v", recs)
	}

	if res := ledgerCheck(t, base, m.Config.Data); res.Events != 3 || len(res.Problems) > 0 {
		t.Fatalf("ledger check: %+v", res)
	}
}

// TestServe_SIGKILLLosesNoAcknowledgedUsage kills the server with SIGKILL
// in the middle of a load run: every request whose response completed has
// its usage event in the ledger.
func TestServe_SIGKILLLosesNoAcknowledgedUsage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	data := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "serve", "--addr", "127.0.0.1:0", "--data", data, "--engine-lib", engineLib(t), "--log-format", "json", "--kv-memory-mb", "64")
	cmd.Env = append(os.Environ(), "NOZZLE_TEST_MAIN=1")
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// The banner names the address once the server is ready.
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "demo model at http://"); ok {
				addr <- rest
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(2 * time.Minute):
		t.Fatalf("server did not start: %s", stderr.String())
	}
	keyB, _ := os.ReadFile(filepath.Join(data, "demo-api-key"))
	key := strings.TrimSpace(string(keyB))

	var (
		mu        sync.Mutex
		completed []string
		wg        sync.WaitGroup
	)
	stop := make(chan struct{})
	client := &http.Client{Timeout: 30 * time.Second}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"model":"%s","prompt":"load %d %d","max_tokens":4}`, []string{"base", "demo-chat", "demo-sql"}[i%3], w, i)
				req, _ := http.NewRequest("POST", base+"/v1/completions", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					continue // the server died mid-request: not acknowledged
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"usage"`)) {
					continue
				}
				mu.Lock()
				completed = append(completed, resp.Header.Get("X-Request-Id"))
				mu.Unlock()
			}
		}(w)
	}
	// Let the load run, then kill the server in the middle of it.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(completed)
		mu.Unlock()
		if n >= 40 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	close(stop)
	wg.Wait()
	if len(completed) < 10 {
		t.Fatalf("only %d requests completed before the kill: %s", len(completed), stderr.String())
	}

	l, err := billing.Open(billing.Options{Path: filepath.Join(data, "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, id := range completed {
		if _, err := l.Usage(context.Background(), id); err != nil {
			t.Errorf("request %s was answered but its usage is not in the ledger: %v", id, err)
		}
	}
	if _, err := l.Check(context.Background()); err != nil {
		t.Errorf("ledger check after the kill: %v", err)
	}
	t.Logf("%d acknowledged requests, all in the ledger after SIGKILL", len(completed))
}

// startProcess starts `nozzle serve` as a process of its own (this test
// binary, run as the nozzle binary) on data with the demo model, and returns
// it and its base URL once it serves; the test's cleanup kills it.
func startProcess(t *testing.T, data string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	return startProcessLog(t, new(bytes.Buffer), data, args...)
}

// startProcessLog is startProcess with the server's log (its standard
// error, JSON lines) written to stderr, to be read once the process ended.
func startProcessLog(t *testing.T, stderr *bytes.Buffer, data string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", data, "--engine-lib", engineLib(t),
		"--log-format", "json", "--log-level", "warn", "--kv-memory-mb", "64"}, args...)...)
	cmd.Env = append(os.Environ(), "NOZZLE_TEST_MAIN=1")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The banner names the address once the server is ready.
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), "demo model at http://"); ok {
				addr <- rest
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, "http://" + a
	case <-time.After(2 * time.Minute):
		t.Fatalf("server did not start: %s", stderr.String())
		return nil, ""
	}
}

// TestServe_SIGKILLMidStreamChargesItsCheckpoint kills the server with
// SIGKILL while it streams a long completion to a client that has read part
// of it, then starts it again on the same data folder: the stream is
// charged (status interrupted) for at least every token the client had
// read one checkpoint interval (and a margin for the disk) before the kill,
// and for at most the tokens the server sent it.
func TestServe_SIGKILLMidStreamChargesItsCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	const every = 200 * time.Millisecond
	data := t.TempDir()
	// One engine thread: the stream takes seconds to generate (two choices
	// of 2000 tokens; the demo model ends neither earlier), longer than
	// this test runs it, and its 7 MB do not fit the sockets' buffers.
	cmd, base := startProcess(t, data, "--stream-checkpoint", every.String(), "--threads", "1")
	keyB, _ := os.ReadFile(filepath.Join(data, "demo-api-key"))
	key := strings.TrimSpace(string(keyB))

	// A small receive buffer: the server, soon blocked on its writes, can
	// run only a little ahead of what the client reads, so the stream is
	// still running when the server is killed.
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	body := `{"model":"demo-chat","stream":true,"n":2,"max_tokens":2000,"temperature":0,"logprobs":true,"top_logprobs":20,` +
		`"messages":[{"role":"user","content":"tell me a long story"}]}`
	resp := openStream(t, client, base+"/v1/chat/completions", key, body)
	defer resp.Body.Close()
	rid := resp.Header.Get("X-Request-Id")
	// tokens counts the tokens read: one logprob each.
	rd := bufio.NewReader(resp.Body)
	tokens, done := 0, false
	read := func() error {
		line, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		payload, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
		if !ok {
			return nil
		}
		if payload == "[DONE]" {
			done = true
			return nil
		}
		var c struct {
			Choices []struct {
				Logprobs *struct {
					Content []json.RawMessage `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(payload), &c); err != nil {
			return fmt.Errorf("chunk %q: %w", payload, err)
		}
		for _, ch := range c.Choices {
			if ch.Logprobs != nil {
				tokens += len(ch.Logprobs.Content)
			}
		}
		return nil
	}
	for tokens < 300 {
		if err := read(); err != nil {
			t.Fatalf("after %d tokens: %v", tokens, err)
		}
	}
	// The client stops reading; the tokens it has must be checkpointed
	// within the interval (the disk's sync given a second on a busy
	// machine).
	before := tokens
	time.Sleep(every + time.Second)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// What the server had written before it died still arrives.
	var rerr error
	for rerr == nil && !done {
		rerr = read()
	}
	if done {
		t.Fatalf("the stream ended (%d tokens) before the server was killed", tokens)
	}
	t.Logf("client read %d tokens before the pause, %d in all; the stream broke off with %v", before, tokens, rerr)

	// Started again on the same data folder: the ledger charges the stream
	// from its last checkpoint, reports show it, and the check holds.
	_, base = startProcess(t, data)
	var ev struct {
		Status           string  `json:"status"`
		PromptTokens     int     `json:"prompt_tokens"`
		CompletionTokens int     `json:"completion_tokens"`
		ChargedUSD       float64 `json:"charged_usd"`
	}
	r, b := get(t, base+"/v1/usage/requests/"+rid, key)
	if r.StatusCode != 200 || json.Unmarshal(b, &ev) != nil {
		t.Fatalf("usage of the stream: %d %s", r.StatusCode, b)
	}
	if ev.Status != nozzle.UsageInterrupted || ev.PromptTokens <= 0 || ev.ChargedUSD <= 0 ||
		ev.CompletionTokens < before || ev.CompletionTokens > tokens {
		t.Fatalf("the stream is charged %+v; the client read %d tokens before the pause, %d in all", ev, before, tokens)
	}
	t.Logf("charged after the restart: %+v", ev)
	var rep struct {
		Total struct {
			Requests         int `json:"requests"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"total"`
	}
	if r, b := get(t, base+"/v1/usage", key); r.StatusCode != 200 || json.Unmarshal(b, &rep) != nil ||
		rep.Total.Requests != 1 || rep.Total.CompletionTokens != ev.CompletionTokens {
		t.Fatalf("usage report: %d %s", r.StatusCode, b)
	}
	if res := ledgerCheck(t, base, data); res.Events != 1 || res.Checkpoints != 0 || len(res.Problems) > 0 {
		t.Fatalf("ledger check: %+v", res)
	}
}

// ledgerCheck runs the server's ledger check (POST /admin/ledger/check
// with the admin token in data) and returns its answer, which must be a 200.
func ledgerCheck(t testing.TB, base, data string) nozzle.LedgerCheck {
	t.Helper()
	admin, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", base+"/admin/ledger/check", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var res nozzle.LedgerCheck
	if err := json.NewDecoder(r.Body).Decode(&res); err != nil || r.StatusCode != 200 {
		t.Fatalf("ledger check: %d %+v %v", r.StatusCode, res, err)
	}
	return res
}

func get(t testing.TB, url, key string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestServe_BudgetNotOverspent: requests admitted together under a small
// budget cannot spend more than it holds, even with prompts whose tokens
// the gateway cannot guess from their length (punctuation: about a token
// a byte).
func TestServe_BudgetNotOverspent(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	ctx := context.Background()
	ten, err := nozzle.FindTenant(ctx, m.Ledger, demoTenant)
	if err != nil {
		t.Fatal(err)
	}
	budget := 0.0005
	if _, err := m.Ledger.UpdateTenant(ctx, ten.ID, nozzle.TenantUpdate{MonthlyBudgetUSD: &budget}); err != nil {
		t.Fatal(err)
	}
	prompt := strings.Repeat("!?.,;:", 70)
	body := fmt.Sprintf(`{"model":"demo-chat","messages":[{"role":"user","content":%q}],"max_tokens":1}`, prompt)
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, b := post(t, base+"/v1/chat/completions", key, body)
			switch resp.StatusCode {
			case 200:
				ok.Add(1)
			case 429:
				refused.Add(1)
			default:
				t.Errorf("%d %s", resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	spent, err := m.Ledger.MonthToDate(ctx, ten.ID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d admitted, %d refused, $%.7f spent of $%.4f", ok.Load(), refused.Load(), spent, budget)
	if spent > budget*(1+1e-9) || ok.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("spent $%.7f of a $%.4f budget (%d admitted, %d refused)", spent, budget, ok.Load(), refused.Load())
	}
}

// TestServe_DemoSetUpResumes: a first start killed after it created the
// demo tenant (and nothing more) is completed by the next start: key,
// console user and adapters. Once complete, the demo is left alone: an
// adapter the tenant deleted stays deleted.
func TestServe_DemoSetUpResumes(t *testing.T) {
	data := t.TempDir()
	l, err := billing.Open(billing.Options{Path: filepath.Join(data, "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CreateTenant(context.Background(), &nozzle.Tenant{Name: demoTenant}); err != nil {
		t.Fatal(err)
	}
	l.Close()

	list := func(m *Main) []string {
		req, _ := http.NewRequest("GET", "http://"+m.Addr+"/v1/adapters", nil)
		req.Header.Set("Authorization", "Bearer "+m.demoKey(t))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Data []struct{ Name string } }
		json.NewDecoder(resp.Body).Decode(&out)
		var names []string
		for _, a := range out.Data {
			names = append(names, a.Name)
		}
		return names
	}
	m, stop := startServe(t, "--data", data)
	if got := list(m); len(got) != 4 {
		t.Fatalf("adapters after the resumed set-up: %v", got)
	}
	req, _ := http.NewRequest("DELETE", "http://"+m.Addr+"/v1/adapters/demo-poet", nil)
	req.Header.Set("Authorization", "Bearer "+m.demoKey(t))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("delete: %v %v", resp, err)
	}
	stop()
	m, _ = startServe(t, "--data", data)
	if got := list(m); len(got) != 3 {
		t.Fatalf("adapters after a restart: %v (a deleted demo adapter came back?)", got)
	}
}

// TestServe_FirstStartRemovesCrashLeftovers: a first start killed while it
// generated the demo model (DATA/.demo-*) or copied a demo adapter for its
// import (DATA/.import-*) left those folders; the next start, which makes
// the demo anew, removes them rather than keeping them forever.
func TestServe_FirstStartRemovesCrashLeftovers(t *testing.T) {
	data := t.TempDir()
	for _, d := range []string{".demo-1234", ".import-5678"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, d, nozzle.AdapterWeightsFile), make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startServe(t, "--data", data)
	for _, d := range []string{".demo-1234", ".import-5678"} {
		if _, err := os.Stat(filepath.Join(data, d)); err == nil {
			t.Errorf("%s is still in the data folder after a start", d)
		}
	}
}
