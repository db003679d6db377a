package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

const internalToken = "internal-secret-token"

// serve runs the remote protocol for g on a loopback port.
func serve(t testing.TB, rt *runtime.Runtime) *runtime.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: runtime.NewServer(rt, internalToken)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cl := runtime.NewClient("http://"+ln.Addr().String(), internalToken, nil)
	clientURLs.Store(cl, "http://"+ln.Addr().String())
	return cl
}

// TestRemote_Parity runs the same requests in process and through the
// remote protocol on a loopback port: same text, same token counts, same
// errors; on the engine stand-in and on the demo model with the real
// engine.
func TestRemote_Parity(t *testing.T) {
	t.Run("Fake", func(t *testing.T) {
		rt := startFake(t, runtime.Options{}, 64)
		defer closeRT(t, rt)
		seed := uint64(9)
		testParity(t, rt.Runtime, map[string]*nozzle.GenerateRequest{
			"Greedy":    {Prompt: "hello world", MaxTokens: 30},
			"Chat":      {Messages: []nozzle.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 10, Logprobs: true, TopLogprobs: 2},
			"Seeded":    {Prompt: "the", MaxTokens: 20, Temperature: 1, Seed: &seed},
			"Adapter":   {Prompt: "hello", MaxTokens: 15, Adapter: adapterFor(2)},
			"Stop":      {Prompt: "hello", MaxTokens: 30, Stop: []string{"e"}},
			"TooLong":   {PromptTokens: make([]int, 600)},
			"BadParam":  {Prompt: "x", TopP: 3},
			"BadTokens": {PromptTokens: []int{-1}},
		}, fakeSHA(2))
	})
	t.Run("Demo", func(t *testing.T) {
		rt, adapters := openDemo(t, runtime.Options{})
		seed := uint64(11)
		testParity(t, rt, map[string]*nozzle.GenerateRequest{
			"Greedy":   {Prompt: "The quick brown fox", MaxTokens: 16},
			"Chat":     {Messages: []nozzle.ChatMessage{{Role: "user", Content: "Hello there"}}, MaxTokens: 12, Logprobs: true, TopLogprobs: 3, Adapter: adapters["demo-chat"]},
			"Seeded":   {Prompt: "Once upon a time", MaxTokens: 16, Temperature: 0.9, TopP: 0.95, TopK: 40, Seed: &seed, Adapter: adapters["demo-sql"]},
			"Stop":     {Prompt: "The quick brown fox", MaxTokens: 16, Stop: []string{"xx"}},
			"Echo":     {Prompt: "Once upon a time", MaxTokens: 6, Logprobs: true, TopLogprobs: 2, Echo: true, Adapter: adapters["demo-sql"]},
			"EchoOnly": {Prompt: "Once upon a time", Logprobs: true, TopLogprobs: 1, Echo: true, PromptOnly: true},
			"TooLong":  {PromptTokens: make([]int, 3000)},
			"Missing":  {Prompt: "x", MaxTokens: 4, Adapter: &nozzle.Adapter{Name: "gone", AdapterManifest: nozzle.AdapterManifest{SHA256: fakeSHA(77), Rank: 8}}},
		}, adapters["demo-chat"].SHA256)
	})
}

func testParity(t *testing.T, rt *runtime.Runtime, reqs map[string]*nozzle.GenerateRequest, residentSHA string) {
	cl := serve(t, rt)
	ctx := context.Background()
	info, err := cl.Info(ctx)
	want, _ := rt.Info(ctx)
	// created_at travels as it is: the gateway's /v1/models "created" is
	// the runtime's own
	if err != nil || info.ID != want.ID || info.ContextLength != want.ContextLength || info.Device != want.Device || !info.CreatedAt.Equal(want.CreatedAt) {
		t.Fatalf("info %+v %v, want %+v", info, err, want)
	}
	for name, req := range reqs {
		for _, stream := range []bool{false, true} {
			req := *req
			req.Stream = stream
			if stream {
				name += "/streamed"
			}
			t.Run(name, func(t *testing.T) { checkParity(t, run(ctx, rt, &req), run(ctx, cl, &req), stream) })
		}
	}
	if tier := cl.AdapterTier(ctx, residentSHA); tier != nozzle.TierDevice {
		t.Errorf("tier %q", tier)
	}
	if tier := cl.AdapterTier(ctx, fakeSHA(40)); tier != nozzle.TierDisk {
		t.Errorf("tier %q", tier)
	}
	if !cl.Ready(ctx) {
		t.Error("not ready")
	}
	if ivs, err := cl.CapacityIntervals(ctx, 0); err != nil {
		t.Errorf("capacity: %v", err)
	} else if local, _ := rt.CapacityIntervals(ctx, 0); len(local) != len(ivs) {
		t.Errorf("capacity: %d intervals remote, %d local", len(ivs), len(local))
	}
}

// checkParity compares a generation run in process with the same one run
// remotely: a streamed one chunk by chunk; a whole one arrives as one
// chunk holding all the text and logprobs.
func checkParity(t *testing.T, local, remote outcome, stream bool) {
	t.Helper()
	if local.text != remote.text {
		t.Errorf("text: local %q, remote %q", local.text, remote.text)
	}
	if le, re := nozzle.AsError(local.err), nozzle.AsError(remote.err); (le == nil) != (re == nil) ||
		le != nil && (le.Code != re.Code || le.Message != re.Message || le.Param != re.Param || le.Reason != re.Reason) {
		t.Errorf("error: local %#v, remote %#v", le, re)
	}
	l, r := *local.res, *remote.res
	if l.PromptTokens != r.PromptTokens || l.CompletionTokens != r.CompletionTokens || l.FinishReason != r.FinishReason || l.RuntimeID != r.RuntimeID ||
		l.ReasoningTokens != r.ReasoningTokens {
		t.Errorf("result: local %+v, remote %+v", l, r)
	}
	// A prompt that opened a reasoning model's thoughts marks the first
	// chunk of the completion, and only it.
	opened := func(chunks []nozzle.Chunk) (open []int) {
		for i, c := range chunks {
			if c.ThoughtsOpen {
				open = append(open, i)
			}
		}
		return open
	}
	if lo, ro := opened(local.chunks), opened(remote.chunks); !reflect.DeepEqual(lo, ro) {
		t.Errorf("chunks with ThoughtsOpen: local %v, remote %v", lo, ro)
	}
	// The echoed prompt comes first, alone, streamed or not.
	if len(local.chunks) > 0 && local.chunks[0].Prompt {
		if len(remote.chunks) == 0 || !remote.chunks[0].Prompt || remote.chunks[0].Text != local.chunks[0].Text ||
			!reflect.DeepEqual(remote.chunks[0].Logprobs, local.chunks[0].Logprobs) {
			t.Fatalf("prompt: local %+v, remote %+v", local.chunks[0], remote.chunks)
		}
		local.chunks, remote.chunks = local.chunks[1:], remote.chunks[1:]
	}
	if !stream {
		var lps int
		for _, c := range local.chunks {
			lps += len(c.Logprobs)
		}
		if len(remote.chunks) > 1 || len(remote.chunks) == 1 && len(remote.chunks[0].Logprobs) != lps {
			t.Errorf("whole answer: %d remote chunks, want one holding the %d logprobs", len(remote.chunks), lps)
		}
		return
	}
	if len(local.chunks) != len(remote.chunks) {
		t.Errorf("chunks: local %d, remote %d", len(local.chunks), len(remote.chunks))
	}
	for i := range min(len(local.chunks), len(remote.chunks)) {
		lc, rc := local.chunks[i], remote.chunks[i]
		if lc.Text != rc.Text || len(lc.Logprobs) != len(rc.Logprobs) {
			t.Errorf("chunk %d: local %+v, remote %+v", i, lc, rc)
		}
	}
}

func TestRemote_Cancel(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	rt.eng.onStep = func(int) { time.Sleep(200 * time.Microsecond) }
	cl := serve(t, rt.Runtime)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err := cl.Generate(ctx, &nozzle.GenerateRequest{RequestID: "req-1", Prompt: "hello", MaxTokens: 400, Stream: true}, func(c nozzle.Chunk) error {
		if n++; n == 3 {
			cancel()
		}
		time.Sleep(time.Millisecond)
		return nil
	})
	if nozzle.ErrorCode(err) != nozzle.ECANCELED {
		t.Fatalf("error %v", err)
	}
	if res.DeviceSeconds <= 0 || res.CompletionTokens < 3 || res.CompletionTokens >= 400 || res.PromptTokens != 2 || res.RuntimeID == "" {
		t.Errorf("partial account %+v", res)
	}

	// A whole answer canceled midway: the account of what was made.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	res, err = cl.Generate(ctx, &nozzle.GenerateRequest{RequestID: "req-2", Prompt: "hello", MaxTokens: 400}, func(c nozzle.Chunk) error { return nil })
	if nozzle.ErrorCode(err) != nozzle.ECANCELED {
		t.Fatalf("whole answer: error %v", err)
	}
	if res.DeviceSeconds <= 0 || res.CompletionTokens < 1 || res.CompletionTokens >= 400 || res.RuntimeID == "" {
		t.Errorf("whole answer: partial account %+v", res)
	}
}

func TestRemote_Auth(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	good := serve(t, rt.Runtime)
	for _, tok := range []string{"", "wrong", internalToken + "x"} {
		cl := runtime.NewClient(goodURL(t, good), tok, nil)
		// A wrong internal token is the deployment's fault: to the gateway
		// (and so to its clients) the runtime is unavailable, not the
		// client's key invalid.
		if _, err := cl.Info(context.Background()); nozzle.ErrorCode(err) != nozzle.EUNAVAILABLE || !strings.Contains(err.Error(), "internal token") {
			t.Errorf("token %q: %v", tok, err)
		}
		res, err := cl.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x"}, func(nozzle.Chunk) error { return nil })
		if nozzle.ErrorCode(err) != nozzle.EUNAVAILABLE || res.CompletionTokens != 0 {
			t.Errorf("token %q: %v", tok, err)
		}
	}
}

var clientURLs sync.Map

func goodURL(t testing.TB, c *runtime.Client) string {
	t.Helper()
	v, _ := clientURLs.Load(c)
	if v == nil {
		t.Fatal("unknown client")
	}
	return v.(string)
}

// FuzzServer_Generate posts arbitrary bodies to the generate endpoint: the
// server answers an error or a well-formed stream that ends with the
// account, and never fails otherwise.
func FuzzServer_Generate(f *testing.F) {
	f.Add([]byte(`{"prompt":"hello","max_tokens":4}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stop":["a"],"logprobs":true,"top_logprobs":2}`))
	f.Add([]byte(`{"prompt_tokens":[1,2,3],"max_tokens":2,"temperature":1,"seed":5}`))
	f.Add([]byte(`{"prompt":"x","adapter":{"sha256":"zz"}}`))
	f.Add([]byte(`{`))
	rt := startFake(f, runtime.Options{}, 64)
	defer closeRT(f, rt)
	h := runtime.NewServer(rt.Runtime, internalToken)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/internal/v1/generate", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+internalToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		lines := strings.Split(strings.TrimSpace(w.Body.String()), "\n")
		if w.Code != 200 {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if json.Unmarshal([]byte(lines[0]), &e) != nil || e.Error.Code == "" || e.Error.Code == nozzle.EINTERNAL {
				t.Fatalf("status %d with body %q", w.Code, w.Body.String())
			}
			return
		}
		var last struct {
			Result *struct{ FinishReason string } `json:"result"`
		}
		if json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || last.Result == nil {
			t.Fatalf("stream does not end with the account: %q", w.Body.String())
		}
	})
}

// TestGenerate_SamplingExtremes: sampling parameters at the edges of their
// ranges, on the real engine, never reach it out of range (one bad value
// would fail the whole batch's step): a top_k past the vocabulary filters
// nothing (2^40+1 is 1 as an int32), a top_p too small for float32 keeps the likeliest token, and a
// max_tokens that would overflow is a context-length error.
func TestGenerate_SamplingExtremes(t *testing.T) {
	rt, _ := openDemo(t, runtime.Options{})
	ctx := context.Background()
	gen := func(req nozzle.GenerateRequest) string {
		t.Helper()
		req.Prompt, req.MaxTokens = "The quick brown fox", 12
		var sb strings.Builder
		if _, err := rt.Generate(ctx, &req, func(ch nozzle.Chunk) error { sb.WriteString(ch.Text); return nil }); err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return sb.String()
	}
	seed := uint64(5)
	greedy := gen(nozzle.GenerateRequest{})
	if got := gen(nozzle.GenerateRequest{Temperature: 1, TopP: 1e-50, Seed: &seed}); got != greedy {
		t.Errorf("top_p 1e-50 sampled %q, want the greedy %q", got, greedy)
	}
	if got, want := gen(nozzle.GenerateRequest{Temperature: 1, TopK: 1<<40 + 1, Seed: &seed}), gen(nozzle.GenerateRequest{Temperature: 1, Seed: &seed}); got != want {
		t.Errorf("top_k 2^40+1 sampled %q, want %q as with no filter", got, want)
	}
	_, err := rt.Generate(ctx, &nozzle.GenerateRequest{Prompt: "x", MaxTokens: math.MaxInt}, func(nozzle.Chunk) error { return nil })
	if e := nozzle.AsError(err); e == nil || e.Code != nozzle.ECONTEXTLENGTH || !strings.Contains(e.Message, "9223372036854775807 in the completion") {
		t.Fatalf("max_tokens MaxInt: %v", err)
	}
}

// TestRemote_LastIntervalCollected: a runtime that closes keeps answering
// capacity pulls, under the id it had, until the gateway has stored the
// interval Close ended (WaitCollected), so a stop loses no GPU time.
func TestRemote_LastIntervalCollected(t *testing.T) {
	rt := startFake(t, runtime.Options{RuntimeID: "gpu-7"}, 64)
	srv := runtime.NewServer(rt.Runtime, internalToken)
	ts := httptest.NewServer(srv)
	defer ts.Close()
	cl := runtime.NewClient(ts.URL, internalToken, nil)
	ctx := context.Background()
	if id, err := cl.CapacityRuntimeID(ctx); err != nil || id != "gpu-7" {
		t.Fatalf("CapacityRuntimeID = %q, %v", id, err)
	}
	if _, err := cl.CapacityIntervals(ctx, 0); err != nil { // a gateway collects
		t.Fatal(err)
	}
	closeRT(t, rt)

	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		done <- srv.WaitCollected(wctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("WaitCollected returned %v before the last interval was collected", err)
	case <-time.After(100 * time.Millisecond):
	}
	// The gateway's next pull: the id it had, and the last interval.
	if id, err := cl.CapacityRuntimeID(ctx); err != nil || id != "gpu-7" {
		t.Fatalf("CapacityRuntimeID of the closed runtime = %q, %v", id, err)
	}
	ivs, err := cl.CapacityIntervals(ctx, 0)
	if err != nil || len(ivs) == 0 {
		t.Fatalf("intervals of the closed runtime: %v, %v", ivs, err)
	}
	// Stored: the pull after asks for what follows it.
	if _, err := cl.CapacityIntervals(ctx, ivs[len(ivs)-1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitCollected: %v", err)
	}
}

// TestRemote_FrozenRuntime: a runtime that stops answering (a frozen
// process: connections accepted, nothing answered) does not hold its
// requests until their timeout. After two health checks it leaves
// unanswered, every exchange in flight ends with EUNAVAILABLE, so that one
// that emitted nothing moves to another runtime; a check it answers again
// starts the count over.
func TestRemote_FrozenRuntime(t *testing.T) {
	frozen := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-frozen:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	defer close(frozen)
	cl := runtime.NewClient(ts.URL, internalToken, nil)
	done := make(chan error, 1)
	go func() {
		_, err := cl.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", MaxTokens: 4}, func(nozzle.Chunk) error { return nil })
		done <- err
	}()
	check := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := cl.Info(ctx); err == nil {
			t.Fatal("a frozen runtime answered")
		}
	}
	check()
	select {
	case err := <-done:
		t.Fatalf("one unanswered check ended the exchange: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	check()
	select {
	case err := <-done:
		if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EUNAVAILABLE || !strings.Contains(e.Message, "stopped answering") {
			t.Fatalf("exchange with a lost runtime ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the exchange with a frozen runtime still waits")
	}
}
