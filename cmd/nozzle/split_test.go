package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// startMain runs one server command of Main in process and returns it once
// it serves, with a function that stops it (as SIGTERM does) and waits;
// the test's cleanup stops it too.
func startMain(t *testing.T, cmd string, args ...string) (*Main, func()) {
	t.Helper()
	cfg, _, err := Load(cmd, args, func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, quietLogger(), io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		switch cmd {
		case "gateway":
			done <- m.RunGateway(ctx)
		default:
			done <- m.RunRuntime(ctx)
		}
	}()
	select {
	case <-m.Ready:
	case err := <-done:
		cancel()
		t.Fatalf("%s: %v", cmd, err)
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatalf("%s did not start", cmd)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", cmd, err)
			}
		})
	}
	t.Cleanup(stop)
	return m, stop
}

// TestSplit_GatewayAndRuntime runs the deployment of fly.toml on loopback:
// a runtime process-alike with the model, a gateway with the ledger and the
// adapter store in front of it. An adapter uploaded to the gateway is
// fetched by the runtime and used; usage lands in the gateway's ledger.
func TestSplit_GatewayAndRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two servers")
	}
	const token = "split-test-internal-token"
	rtData := t.TempDir()
	// The runtime learns the gateway's address after the gateway starts,
	// so the gateway's port is chosen first.
	gwAddr := freeAddr(t)
	rt, stopRT := startMain(t, "runtime", "--addr", "127.0.0.1:0", "--data", rtData, "--internal-token", token,
		"--gateway-url", "http://"+gwAddr, "--engine-lib", engineLib(t), "--kv-memory-mb", "64", "--runtime-id", "rt-a")
	gw, _ := startMain(t, "gateway", "--addr", gwAddr, "--data", t.TempDir(), "--internal-token", token,
		"--upstreams", "http://"+rt.Addr)
	base := "http://" + gw.Addr
	admin, _ := os.ReadFile(filepath.Join(gw.Config.Data, "admin-token"))

	// A tenant, through the admin API.
	req, _ := http.NewRequest("POST", base+"/admin/tenants", strings.NewReader(`{"name":"acme"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tenant struct {
		APIKey string `json:"api_key"`
	}
	json.NewDecoder(resp.Body).Decode(&tenant)
	resp.Body.Close()
	if resp.StatusCode != 201 || tenant.APIKey == "" {
		t.Fatalf("create tenant: %d", resp.StatusCode)
	}

	// An adapter uploaded to the gateway (the runtime made the demo
	// adapters into its data folder).
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("name", "sql")
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors"} {
		w, _ := mw.CreateFormFile(f, f)
		b, err := os.ReadFile(filepath.Join(rtData, "demo-adapters", "demo-sql", f))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	mw.Close()
	req, _ = http.NewRequest("POST", base+"/v1/adapters", &body)
	req.Header.Set("Authorization", "Bearer "+tenant.APIKey)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	var uploaded struct {
		SHA256 string `json:"sha256"`
	}
	json.Unmarshal(b, &uploaded)

	// A completion with it: the runtime fetches the adapter's files from
	// the gateway, runs it, and the gateway meters it.
	resp, b = post(t, base+"/v1/completions", tenant.APIKey, `{"model":"sql","prompt":"SELECT","max_tokens":6,"temperature":0}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"completion_tokens":`) {
		t.Fatalf("completion: %d %s", resp.StatusCode, b)
	}
	ev, err := gw.Ledger.Usage(context.Background(), resp.Header.Get("X-Request-Id"))
	if err != nil {
		t.Fatalf("usage not in the gateway's ledger: %v", err)
	}
	// Several choices of one request run on the runtime at once, each its
	// own exchange.
	resp, b = post(t, base+"/v1/chat/completions", tenant.APIKey,
		`{"model":"sql","n":3,"max_tokens":4,"temperature":1,"seed":7,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || strings.Count(string(b), `"finish_reason"`) != 3 {
		t.Fatalf("n=3: %d %s", resp.StatusCode, b)
	}
	// logit_bias crosses to the runtime: a token raised by 100 is every
	// token of the greedy completion.
	resp, b = post(t, base+"/v1/completions", tenant.APIKey, `{"model":"sql","prompt":"SELECT","max_tokens":4,"temperature":0,"logprobs":1,"logit_bias":{"450":100}}`)
	var forced struct {
		Choices []struct {
			Logprobs struct{ Tokens []string }
		}
	}
	if json.Unmarshal(b, &forced); resp.StatusCode != 200 || len(forced.Choices) != 1 || len(forced.Choices[0].Logprobs.Tokens) != 4 {
		t.Fatalf("logit_bias through the runtime: %d %s", resp.StatusCode, b)
	}
	for _, tok := range forced.Choices[0].Logprobs.Tokens {
		if tok != forced.Choices[0].Logprobs.Tokens[0] {
			t.Fatalf("logit_bias through the runtime: tokens %q", forced.Choices[0].Logprobs.Tokens)
		}
	}
	// a JSON schema crosses too: the answer follows it, and one the
	// runtime cannot enforce comes back as the 400 naming it
	resp, b = post(t, base+"/v1/chat/completions", tenant.APIKey, `{"model":"sql","messages":[{"role":"user","content":"x"}],"max_tokens":300,`+
		`"temperature":0,"response_format":{"type":"json_schema","json_schema":{"name":"flag","schema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}}}}`)
	var flag struct {
		Choices []struct{ Message struct{ Content string } }
	}
	var v struct{ OK *bool }
	if json.Unmarshal(b, &flag); resp.StatusCode != 200 || len(flag.Choices) != 1 || json.Unmarshal([]byte(flag.Choices[0].Message.Content), &v) != nil || v.OK == nil {
		t.Fatalf("json_schema through the runtime: %d %s", resp.StatusCode, b)
	}
	resp, b = post(t, base+"/v1/chat/completions", tenant.APIKey, `{"model":"sql","messages":[{"role":"user","content":"x"}],`+
		`"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"number","multipleOf":2}}}}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"param":"response_format.json_schema.schema"`) {
		t.Fatalf("an unenforceable schema through the runtime: %d %s", resp.StatusCode, b)
	}
	if ev.RuntimeID != "rt-a" || ev.AdapterName != "sql" || ev.DeviceSeconds <= 0 {
		t.Fatalf("usage event %+v", ev)
	}
	if _, err := os.Stat(filepath.Join(rtData, "adapter-cache")); err != nil {
		t.Errorf("the runtime did not cache the fetched adapter: %v", err)
	}

	// The gateway pulls the runtime's capacity (under the runtime's own
	// id, not its address): the operator report shows the GPU's uptime
	// and cost.
	var rep struct {
		GPU struct {
			UptimeSeconds float64 `json:"uptime_seconds"`
			CostUSD       float64 `json:"cost_usd"`
		} `json:"gpu"`
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		req, _ = http.NewRequest("GET", base+"/admin/report", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(admin)))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if rep.GPU.UptimeSeconds > 0 && rep.GPU.CostUSD > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no GPU capacity in the operator report: %+v", rep.GPU)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The tenant deletes the adapter: the runtime lets go of it at once,
	// out of its slot, its host memory and the files it fetched.
	ctx := context.Background()
	if tier := rt.Runtime.AdapterTier(ctx, uploaded.SHA256); tier != nozzle.TierDevice {
		t.Fatalf("adapter %.12q in %s before its deletion", uploaded.SHA256, tier)
	}
	if _, err := os.Stat(filepath.Join(rtData, "adapter-cache", uploaded.SHA256)); err != nil {
		t.Fatalf("the runtime's fetched files: %v", err)
	}
	req, _ = http.NewRequest("DELETE", base+"/v1/adapters/sql", nil)
	req.Header.Set("Authorization", "Bearer "+tenant.APIKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := os.Stat(filepath.Join(rtData, "adapter-cache", uploaded.SHA256))
		tier := rt.Runtime.AdapterTier(ctx, uploaded.SHA256)
		if tier == nozzle.TierDisk && os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted adapter is still in %s on the runtime (its fetched files: %v)", tier, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The runtime stops (SIGTERM): the interval it closes on the way out
	// reaches the gateway's ledger before it goes — at once, as it asks
	// the gateway to pull, rather than at the gateway's next pull.
	start := time.Now()
	stopRT()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the runtime took %v to stop", d)
	}
	ivs, err := rt.Runtime.CapacityIntervals(context.Background(), 0)
	if err != nil || len(ivs) == 0 {
		t.Fatalf("the runtime's intervals: %v, %v", ivs, err)
	}
	if seq, err := gw.Ledger.LastCapacitySeq(context.Background(), "rt-a"); err != nil || seq != ivs[len(ivs)-1].Seq {
		t.Fatalf("the gateway stored up to interval %d (%v); the runtime's last is %d", seq, err, ivs[len(ivs)-1].Seq)
	}
}

// freeAddr returns a loopback address no one listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestWaitForModel: with wait_for_model, a runtime whose model folder is
// not there yet waits for its config.json rather than exiting, and stops
// waiting when asked to stop.
func TestWaitForModel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "base")
	m := NewMain(Config{Model: dir, WaitForModel: true}, quietLogger(), io.Discard)
	done := make(chan error, 1)
	go func() { done <- m.waitForModel(context.Background(), 5*time.Millisecond) }()
	select {
	case err := <-done:
		t.Fatalf("returned %v with no model folder", err)
	case <-time.After(50 * time.Millisecond):
	}
	// A complete folder moved into place.
	tmp := dir + ".tmp"
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, "config.json"), []byte("{}"), 0o644)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting with the model in place")
	}

	ctx, cancel := context.WithCancel(context.Background())
	m.Config.Model = filepath.Join(t.TempDir(), "never")
	go func() { done <- m.waitForModel(ctx, time.Hour) }()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("no error when stopped while waiting")
	}
}

// TestRuntime_AnswersWhileWaitingForModel: a runtime waiting for its
// model answers /healthz at once and says "not ready" to the rest (a
// gateway's health check learns it instead of timing out), and stops when
// asked to.
func TestRuntime_AnswersWhileWaitingForModel(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	m := NewMain(Config{Model: filepath.Join(t.TempDir(), "base"), WaitForModel: true, Addr: addr, Data: t.TempDir(),
		InternalToken: "a-shared-internal-token-of-some-length"}, quietLogger(), io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.RunRuntime(ctx) }()
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer a-shared-internal-token-of-some-length")
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get("/healthz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no /healthz while waiting for the model")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range []string{"/readyz", "/internal/v1/info"} {
		if code, body := get(p); code != http.StatusServiceUnavailable || !strings.Contains(body, "loading its model") {
			t.Errorf("%s while waiting: %d %s", p, code, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stopped while waiting: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop while waiting for the model")
	}
}
