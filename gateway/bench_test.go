package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

// benchServer is a gateway over lock-free mocks and the stub generator:
// what it measures is the gateway's own request path.
func benchServer(tb testing.TB) (*gateway.Server, string) {
	tb.Helper()
	secret, _ := nozzle.NewKeySecret()
	digest := nozzle.KeyDigest(secret)
	key := &nozzle.APIKey{ID: "key_1", TenantID: "ten_1", Digest: digest, Scopes: nozzle.AllScopes}
	tenant := &nozzle.Tenant{ID: "ten_1", Name: "bench", Limits: nozzle.Limits{RequestsPerMinute: 1 << 30, TokensPerMinute: 1 << 30}}
	adapter := &nozzle.Adapter{ID: "ad_1", TenantID: "ten_1", Name: "bench-adapter", AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("f", 64)}}
	deps := gateway.Deps{
		Tenants: &mock.TenantService{TenantFn: func(ctx context.Context, id string) (*nozzle.Tenant, error) {
			t := *tenant
			return &t, nil
		}},
		Keys: &mock.KeyService{
			KeyByDigestFn: func(ctx context.Context, d string) (*nozzle.APIKey, error) {
				if d != digest {
					return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "no")
				}
				k := *key
				return &k, nil
			},
			TouchKeysFn: func(ctx context.Context, m map[string]time.Time) error { return nil },
		},
		Adapters: &mock.AdapterService{AdapterFn: func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
			if name != adapter.Name {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "no")
			}
			a := *adapter
			return &a, nil
		}},
		Store: &mock.AdapterStore{StoredFn: func(context.Context) ([]string, error) { return nil, nil }},
		Ledger: &mock.Ledger{
			RecordUsageFn: func(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) { return false, nil },
			UsageFn: func(ctx context.Context, id string) (*nozzle.UsageEvent, error) {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "no")
			},
		},
		Upstreams: []gateway.Upstream{{ID: "stub", Generator: &gateway.BenchStubGenerator{}}},
	}
	srv, err := gateway.New(gateway.Config{Logger: quietLogger(), UploadDir: tb.TempDir(), HealthInterval: time.Hour}, deps)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv, secret
}

// inmemClient serves app on an in-memory listener and returns a client
// dialing it.
func inmemClient(tb testing.TB, serve func(net.Listener) error) *fasthttp.Client {
	tb.Helper()
	ln := fasthttputil.NewInmemoryListener()
	go serve(ln)
	tb.Cleanup(func() { ln.Close() })
	return &fasthttp.Client{Dial: func(addr string) (net.Conn, error) { return ln.Dial() }, MaxConnsPerHost: 1024}
}

func runBench(b *testing.B, c *fasthttp.Client, path, key, body string, wantIn string) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI("http://gateway" + path)
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/json")
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			req.SetBodyString(body)
			if err := c.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 || !strings.Contains(string(resp.Body()), wantIn) {
				b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
			}
		}
	})
}

const benchChat = `{"model":"bench-adapter","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16,"temperature":0}`

// BenchmarkHandler measures a request through the gateway's whole handler
// path (auth, limits, parsing, routing, metering, encoding) against a
// baseline: a bare fiber handler answering a fixed completion of the same
// size over the same in-memory transport.
func BenchmarkHandler(b *testing.B) {
	b.Run("baseline-fiber", func(b *testing.B) {
		srv, _ := benchServer(b)
		_ = srv
		fixed := []byte(`{"id":"chatcmpl-req_0123456789abcdef01234567","object":"chat.completion","created":1700000000,"model":"bench-adapter","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the stub.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}`)
		app := fiber.New(fiber.Config{DisableStartupMessage: true})
		app.Post("/v1/chat/completions", func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Send(fixed)
		})
		b.Cleanup(func() { _ = app.Shutdown() })
		runBench(b, inmemClient(b, app.Listener), "/v1/chat/completions", "", benchChat, "Hello from the stub.")
	})
	b.Run("chat", func(b *testing.B) {
		srv, key := benchServer(b)
		runBench(b, inmemClient(b, srv.Serve), "/v1/chat/completions", key, benchChat, "Hello from the stub.")
	})
	b.Run("chat-stream", func(b *testing.B) {
		srv, key := benchServer(b)
		body := strings.Replace(benchChat, `"temperature":0`, `"temperature":0,"stream":true,"stream_options":{"include_usage":true}`, 1)
		runBench(b, inmemClient(b, srv.Serve), "/v1/chat/completions", key, body, "[DONE]")
	})
	b.Run("responses", func(b *testing.B) { // the Responses API's translation to the chat path and back
		srv, key := benchServer(b)
		runBench(b, inmemClient(b, srv.Serve), "/v1/responses", key, `{"model":"bench-adapter","instructions":"You are terse.","input":"Say hello to the benchmark.","max_output_tokens":16,"temperature":0}`, "Hello from the stub.")
	})
	b.Run("completions", func(b *testing.B) {
		srv, key := benchServer(b)
		runBench(b, inmemClient(b, srv.Serve), "/v1/completions", key, `{"model":"base","prompt":"Once upon a time","max_tokens":16}`, "Hello from the stub.")
	})
}

func TestBenchLoad(t *testing.T) {
	srv, key := benchServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"
	st, err := gateway.BenchLoad(t.Context(), url, 200, 500*time.Millisecond, []byte(benchChat), map[string]string{"Authorization": "Bearer " + key})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", st)
	if st.Requests != 100 || st.Errors != 0 || st.P50 <= 0 || st.P50 > st.P90 || st.P90 > st.P99 || st.P99 > st.Max || st.Mean <= 0 {
		t.Errorf("stats %+v", st)
	}
	st, _ = gateway.BenchLoad(t.Context(), url, 100, 100*time.Millisecond, []byte(benchChat), nil)
	if st.Errors != st.Requests || st.Requests != 10 || !strings.Contains(st.FirstError, "401") {
		t.Errorf("unauthenticated load: %+v", st)
	}
	if _, err := gateway.BenchLoad(t.Context(), "not a url", 1, time.Second, nil, nil); err == nil {
		t.Error("bad url accepted")
	}
}

// TestBenchStubServer: the generate request of the benchmark gets the
// upstream's recorded answer without running the upstream again; any
// other request, or one without the token, reaches the upstream.
func TestBenchStubServer(t *testing.T) {
	var calls atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprintf(w, "{\"path\":%q,\"body\":%q}\n", r.URL.Path, b)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.BenchStubServer(ln, h, "/gen", "tok", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if calls.Load() != 1 {
		t.Fatalf("%d calls to record the answer", calls.Load())
	}
	base := "http://" + ln.Addr().String()
	post := func(path, token, body string) (int, string, string) {
		t.Helper()
		rq, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		if token != "" {
			rq.Header.Set("Authorization", "Bearer "+token)
		}
		rs, err := http.DefaultClient.Do(rq)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Body.Close()
		b, _ := io.ReadAll(rs.Body)
		return rs.StatusCode, rs.Header.Get("Content-Type"), string(b)
	}
	want := `{"path":"/gen","body":"{\"a\":1}"}` + "\n"
	for range 3 {
		if code, ct, body := post("/gen", "tok", `{"other":2}`); code != 200 || ct != "application/x-ndjson" || body != want {
			t.Errorf("replayed: %d %q %q", code, ct, body)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("the upstream ran %d times for replayed answers", calls.Load()-1)
	}
	if code, _, body := post("/other", "tok", `x`); code != 200 || body != `{"path":"/other","body":"x"}`+"\n" {
		t.Errorf("other path: %d %q", code, body)
	}
	if code, _, _ := post("/gen", "", `x`); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if calls.Load() != 3 {
		t.Errorf("%d upstream calls, want 3", calls.Load())
	}

	bad, _ := net.Listen("tcp", "127.0.0.1:0")
	defer bad.Close()
	if _, err := gateway.BenchStubServer(bad, h, "/gen", "wrong", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a failed recording: %v", err)
	}
}
