package runtime_test

import (
	"context"
	"net"
	"net/http"
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
// remote protocol: same text, same token counts, same errors.
func TestRemote_Parity(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	cl := serve(t, rt.Runtime)
	ctx := context.Background()

	info, err := cl.Info(ctx)
	if err != nil || info.ID != fakeModel.ID || info.ContextLength != fakeModel.ContextLength {
		t.Fatalf("info %+v %v", info, err)
	}
	seed := uint64(9)
	reqs := map[string]*nozzle.GenerateRequest{
		"Greedy":    {Prompt: "hello world", MaxTokens: 30},
		"Chat":      {Messages: []nozzle.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 10, Logprobs: true, TopLogprobs: 2},
		"Seeded":    {Prompt: "the", MaxTokens: 20, Temperature: 1, Seed: &seed},
		"Adapter":   {Prompt: "hello", MaxTokens: 15, Adapter: adapterFor(2)},
		"Stop":      {Prompt: "hello", MaxTokens: 30, Stop: []string{"e"}},
		"TooLong":   {PromptTokens: make([]int, 600)},
		"BadParam":  {Prompt: "x", TopP: 3},
		"BadTokens": {PromptTokens: []int{-1}},
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			local := run(ctx, rt, req)
			remote := run(ctx, cl, req)
			if local.text != remote.text {
				t.Errorf("text: local %q, remote %q", local.text, remote.text)
			}
			if le, re := nozzle.AsError(local.err), nozzle.AsError(remote.err); (le == nil) != (re == nil) ||
				le != nil && (le.Code != re.Code || le.Message != re.Message || le.Param != re.Param || le.Reason != re.Reason) {
				t.Errorf("error: local %#v, remote %#v", le, re)
			}
			l, r := *local.res, *remote.res
			if l.PromptTokens != r.PromptTokens || l.CompletionTokens != r.CompletionTokens || l.FinishReason != r.FinishReason || l.RuntimeID != r.RuntimeID {
				t.Errorf("result: local %+v, remote %+v", l, r)
			}
			if len(local.chunks) != len(remote.chunks) {
				t.Errorf("chunks: local %d, remote %d", len(local.chunks), len(remote.chunks))
			}
			for i := range min(len(local.chunks), len(remote.chunks)) {
				if len(local.chunks[i].Logprobs) != len(remote.chunks[i].Logprobs) {
					t.Errorf("chunk %d logprobs differ", i)
				}
			}
		})
	}
	if tier := cl.AdapterTier(ctx, fakeSHA(2)); tier != nozzle.TierDevice {
		t.Errorf("tier %q", tier)
	}
	if tier := cl.AdapterTier(ctx, fakeSHA(40)); tier != nozzle.TierDisk {
		t.Errorf("tier %q", tier)
	}
	if !cl.Ready(ctx) {
		t.Error("not ready")
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
	res, err := cl.Generate(ctx, &nozzle.GenerateRequest{RequestID: "req-1", Prompt: "hello", MaxTokens: 400}, func(c nozzle.Chunk) error {
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
}

func TestRemote_Auth(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	good := serve(t, rt.Runtime)
	for _, tok := range []string{"", "wrong", internalToken + "x"} {
		cl := runtime.NewClient(goodURL(t, good), tok, nil)
		if _, err := cl.Info(context.Background()); nozzle.ErrorCode(err) != nozzle.EUNAUTHORIZED {
			t.Errorf("token %q: %v", tok, err)
		}
		res, err := cl.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x"}, func(nozzle.Chunk) error { return nil })
		if nozzle.ErrorCode(err) != nozzle.EUNAUTHORIZED || res.CompletionTokens != 0 {
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
