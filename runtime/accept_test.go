package runtime_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// acceptTrace runs req on g in the background and reports what it tells,
// in order: "accepted" (OnAccepted), "prompt" (an echoed prompt), "text"
// (a completion chunk), then "end" with the error on errc.
func acceptTrace(g nozzle.Generator, req *nozzle.GenerateRequest) (<-chan string, <-chan error) {
	steps, errc := make(chan string, 256), make(chan error, 1)
	req.OnAccepted = func() { steps <- "accepted" }
	go func() {
		_, err := g.Generate(context.Background(), req, func(c nozzle.Chunk) error {
			if c.Prompt {
				steps <- "prompt"
			} else {
				steps <- "text"
			}
			return nil
		})
		steps <- "end"
		errc <- err
	}()
	return steps, errc
}

// acceptSteps reads steps up to "end", dropping repeats of "text".
func acceptSteps(steps <-chan string) []string {
	var out []string
	for s := range steps {
		if s == "text" && len(out) > 0 && out[len(out)-1] == "text" {
			continue
		}
		out = append(out, s)
		if s == "end" {
			return out
		}
	}
	return out
}

// TestGenerate_OnAccepted: a runtime tells a request's acceptance once,
// after every check that can refuse it (the adapter's load into host
// memory included) and before its first token, in process and through
// the remote protocol; never for a refused request.
func TestGenerate_OnAccepted(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	gens := map[string]nozzle.Generator{"InProcess": rt.Runtime, "Remote": serve(t, rt.Runtime)}
	for name, g := range gens {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				req  nozzle.GenerateRequest
				want []string
				code string
			}{
				{"Base", nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 5}, []string{"accepted", "text", "end"}, ""},
				{"BaseEcho", nozzle.GenerateRequest{PromptTokens: []int{40, 41}, Echo: true, MaxTokens: 5}, []string{"accepted", "prompt", "text", "end"}, ""},
				{"Adapter", nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 5, Adapter: adapterFor(3)}, []string{"accepted", "text", "end"}, ""},
				{"PromptOnly", nozzle.GenerateRequest{PromptTokens: []int{40}, Echo: true, PromptOnly: true}, []string{"accepted", "prompt", "end"}, ""},
				{"TooLong", nozzle.GenerateRequest{PromptTokens: make([]int, 600)}, []string{"end"}, nozzle.ECONTEXTLENGTH},
				{"BadParam", nozzle.GenerateRequest{Prompt: "x", TopP: 3}, []string{"end"}, nozzle.EINVALID},
				// echoed when queued, then the adapter's files are gone
				{"AdapterGone", nozzle.GenerateRequest{PromptTokens: []int{40, 41}, Echo: true, MaxTokens: 5, Adapter: adapterFor(9)}, []string{"prompt", "end"}, nozzle.ENOTFOUND},
			} {
				t.Run(tc.name, func(t *testing.T) {
					rt.loads.mu.Lock()
					rt.loads.missing[fakeSHA(9)] = true
					rt.loads.mu.Unlock()
					req := tc.req
					req.Stream = true
					steps, errc := acceptTrace(g, &req)
					got := acceptSteps(steps)
					err := <-errc
					if nozzle.ErrorCode(err) != tc.code && !(tc.code == "" && err == nil) {
						t.Fatalf("error %v, want %q", err, tc.code)
					}
					if !slices.Equal(got, tc.want) {
						t.Errorf("steps %q, want %q", got, tc.want)
					}
				})
			}
		})
	}
}

// TestGenerate_OnAcceptedWaitsForAdapterLoad: while the adapter loads into
// host memory the request is queued (its prompt echoed) but not accepted.
func TestGenerate_OnAcceptedWaitsForAdapterLoad(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	for name, g := range map[string]nozzle.Generator{"InProcess": rt.Runtime, "Remote": serve(t, rt.Runtime)} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			rt.loads.mu.Lock()
			rt.loads.gate = func(string) { <-release }
			rt.loads.mu.Unlock()
			defer func() {
				rt.loads.mu.Lock()
				rt.loads.gate = nil
				rt.loads.mu.Unlock()
			}()
			sha := map[string]int{"InProcess": 4, "Remote": 5}[name] // not yet in host memory
			req := &nozzle.GenerateRequest{PromptTokens: []int{40, 41}, Echo: true, MaxTokens: 5, Adapter: adapterFor(sha), Stream: true}
			steps, errc := acceptTrace(g, req)
			if s := <-steps; s != "prompt" {
				t.Fatalf("first step %q, want the echoed prompt", s)
			}
			select {
			case s := <-steps:
				t.Fatalf("%q while the adapter loads", s)
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			if got, want := acceptSteps(steps), []string{"accepted", "text", "end"}; !slices.Equal(got, want) {
				t.Errorf("steps after the load %q, want %q", got, want)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRemote_OnAcceptedGeneratorServer: a Generator served over the
// remote protocol passes its acceptance on; one that never tells (as a
// runtime of an earlier version) leaves OnAccepted uncalled, the answer
// unchanged.
func TestRemote_OnAcceptedGeneratorServer(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	for name, tc := range map[string]struct {
		g    nozzle.Generator
		want []string
	}{
		"Tells":  {rt.Runtime, []string{"accepted", "text", "end"}},
		"Silent": {silentGen{rt.Runtime}, []string{"text", "end"}},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(runtime.NewGeneratorServer(tc.g, internalToken))
			defer srv.Close()
			cl := runtime.NewClient(srv.URL, internalToken, nil)
			steps, errc := acceptTrace(cl, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 5, Stream: true})
			if got := acceptSteps(steps); !slices.Equal(got, tc.want) {
				t.Errorf("steps %q, want %q", got, tc.want)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// silentGen is a generator that never tells acceptance.
type silentGen struct{ *runtime.Runtime }

func (g silentGen) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	r := *req
	r.OnAccepted = nil
	return g.Runtime.Generate(ctx, &r, emit)
}

// BenchmarkDemo_Accepted16Prompts runs 16 prompts of 32 tokens at once on
// the demo model, each streamed, as a legacy completion of 16 prompts
// asks, and reports when all of them were accepted (ms/all-accepted: when
// a gateway that hears OnAccepted starts the stream) and when all of
// them had produced their first text (ms/all-first-text: when one that
// does not, a runtime of an earlier version, starts it).
func BenchmarkDemo_Accepted16Prompts(b *testing.B) {
	rt, _ := openDemo(b, runtime.Options{})
	defer rt.Close(context.Background())
	const n = 16
	run := func() (accepted, firstText time.Duration) {
		type mark struct {
			accepted bool
			at       time.Duration
		}
		marks := make(chan mark, 2*n)
		start := time.Now()
		done := make(chan error, n)
		for i := 0; i < n; i++ {
			prompt := make([]int, 32)
			for k := range prompt {
				prompt[k] = 10 + (i*32+k)%200
			}
			req := &nozzle.GenerateRequest{PromptTokens: prompt, MaxTokens: 8, Stream: true,
				OnAccepted: func() { marks <- mark{true, time.Since(start)} }}
			go func() {
				first := true
				_, err := rt.Generate(context.Background(), req, func(c nozzle.Chunk) error {
					if first && !c.Prompt {
						first = false
						marks <- mark{false, time.Since(start)}
					}
					return nil
				})
				done <- err
			}()
		}
		for i := 0; i < n; i++ {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		close(marks)
		for m := range marks {
			if m.accepted {
				accepted = max(accepted, m.at)
			} else {
				firstText = max(firstText, m.at)
			}
		}
		return accepted, firstText
	}
	run()
	b.ResetTimer()
	var acc, first time.Duration
	for i := 0; i < b.N; i++ {
		a, f := run()
		acc += a
		first += f
	}
	b.ReportMetric(float64(acc.Microseconds())/1e3/float64(b.N), "ms/all-accepted")
	b.ReportMetric(float64(first.Microseconds())/1e3/float64(b.N), "ms/all-first-text")
}
