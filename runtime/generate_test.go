package runtime_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

func TestGenerate_Errors(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 20) // 320 tokens of KV, context 512
	defer closeRT(t, rt)
	long := make([]int, 600)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name  string
		req   nozzle.GenerateRequest
		code  string
		param string
		msg   string
	}{
		{"PromptTooLong", nozzle.GenerateRequest{PromptTokens: long}, nozzle.ECONTEXTLENGTH, "prompt",
			"This model's maximum context length is 512 tokens. However, you requested 601 tokens (600 in your prompt, 1 in the completion)."},
		{"MaxTokensTooMany", nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 510}, nozzle.ECONTEXTLENGTH, "messages",
			"This model's maximum context length is 512 tokens. However, you requested 533 tokens (23 in the messages, 510 in the completion)."},
		{"KVPoolTooSmall", nozzle.GenerateRequest{PromptTokens: long[:100], MaxTokens: 300}, nozzle.ECONTEXTLENGTH, "prompt",
			"This runtime can hold at most 320 tokens for one request."},
		{"Temperature", nozzle.GenerateRequest{Prompt: "x", Temperature: 2.5}, nozzle.EINVALID, "temperature", "temperature must be"},
		{"TopP", nozzle.GenerateRequest{Prompt: "x", TopP: 1.5}, nozzle.EINVALID, "top_p", "top_p"},
		{"TopK", nozzle.GenerateRequest{Prompt: "x", TopK: -1}, nozzle.EINVALID, "top_k", "top_k"},
		{"MaxTokensNegative", nozzle.GenerateRequest{Prompt: "x", MaxTokens: -1}, nozzle.EINVALID, "max_tokens", "max_tokens"},
		{"TopLogprobs", nozzle.GenerateRequest{Prompt: "x", TopLogprobs: 21}, nozzle.EINVALID, "top_logprobs", "top_logprobs"},
		{"EmptyStop", nozzle.GenerateRequest{Prompt: "x", Stop: []string{""}}, nozzle.EINVALID, "stop", "Stop sequences"},
		{"TokenOutOfRange", nozzle.GenerateRequest{PromptTokens: []int{1, fakeVocab}}, nozzle.EINVALID, "prompt", "out of range"},
		{"TwoPrompts", nozzle.GenerateRequest{Prompt: "x", PromptTokens: []int{1}}, nozzle.EINVALID, "prompt", "exactly one"},
		{"EmptyMessages", nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{}}, nozzle.EINVALID, "messages", "messages"},
		{"BadRole", nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "robot", Content: "x"}}}, nozzle.EINVALID, "messages", "chat template"},
		{"BadAdapter", nozzle.GenerateRequest{Prompt: "x", Adapter: &nozzle.Adapter{Name: "x"}}, nozzle.EINVALID, "model", "content address"},
		{"RankTooHigh", nozzle.GenerateRequest{Prompt: "x", Adapter: &nozzle.Adapter{Name: "big", AdapterManifest: nozzle.AdapterManifest{SHA256: fakeSHA(1), Rank: 128}}}, nozzle.EINVALID, "model", "rank 128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			res, err := rt.Generate(context.Background(), &tt.req, func(nozzle.Chunk) error { called = true; return nil })
			e := nozzle.AsError(err)
			if e == nil || e.Code != tt.code || e.Param != tt.param || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("got %#v, want %s/%s %q", e, tt.code, tt.param, tt.msg)
			}
			if called || res == nil || res.CompletionTokens != 0 || res.DeviceSeconds != 0 {
				t.Errorf("work was done: %+v", res)
			}
			// the gateway's own check of token ids answers the same code
			if tt.name == "TokenOutOfRange" && e.Reason != "invalid_value" {
				t.Errorf("reason %q, want invalid_value", e.Reason)
			}
		})
	}
	if r := startFake(t, runtime.Options{}, 8); true {
		closeRT(t, r)
		_, err := r.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x"}, func(nozzle.Chunk) error { return nil })
		if nozzle.ErrorCode(err) != nozzle.EUNAVAILABLE {
			t.Errorf("closed runtime: %v", err)
		}
	}
}

func TestGenerate_MaxTokensZero(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	prompt := randomPrompt(newRNG(3), 500)
	o := run(context.Background(), rt, &nozzle.GenerateRequest{PromptTokens: prompt})
	if o.err != nil || o.res.FinishReason != nozzle.FinishLength || o.res.CompletionTokens != 12 {
		t.Fatalf("got %+v %v, want 12 tokens to the context length", o.res, o.err)
	}
}

// TestGenerate_StopSequences checks stop sequences against the text the
// request produces without them: matched on the text across token
// boundaries, never emitted, finishing with "stop".
func TestGenerate_StopSequences(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	base := nozzle.GenerateRequest{Prompt: "hello world and", MaxTokens: 40, Logprobs: true}
	full := run(context.Background(), rt, &base)
	if full.err != nil {
		t.Fatal(full.err)
	}
	var toks []string
	for _, c := range full.chunks {
		for _, lp := range c.Logprobs {
			// each token's offset is where its text begins in the completion
			if at := len(strings.Join(toks, "")); lp.Offset != at {
				t.Errorf("token %d %q: offset %d, want %d", len(toks), lp.Token, lp.Offset, at)
			}
			toks = append(toks, lp.Token)
		}
	}
	if len(toks) != 40 || strings.Join(toks, "") != full.text {
		t.Fatalf("tokens %q do not make the text %q", toks, full.text)
	}
	// A stop sequence spanning the boundary of tokens 5 and 6, and one
	// spanning three tokens.
	off := len(strings.Join(toks[:6], ""))
	span2 := full.text[off-1 : off+1]
	off3 := len(strings.Join(toks[:10], ""))
	span3 := full.text[off3-len(toks[9]) : off3+len(toks[10])+1]

	tests := []struct {
		name  string
		stops []string
	}{
		{"TwoTokens", []string{span2}},
		{"ThreeTokens", []string{span3}},
		{"Earliest", []string{span3, span2}},
		{"Never", []string{"\x00never"}},
		{"First", []string{full.text[:2]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base
			req.Stop = tt.stops
			o := run(context.Background(), rt, &req)
			if o.err != nil {
				t.Fatal(o.err)
			}
			cut := len(full.text)
			for _, s := range tt.stops {
				if i := strings.Index(full.text, s); i >= 0 && i < cut {
					cut = i
				}
			}
			if o.text != full.text[:cut] {
				t.Errorf("text %q, want %q", o.text, full.text[:cut])
			}
			if cut == len(full.text) {
				if o.res.FinishReason != nozzle.FinishLength {
					t.Errorf("finish %q", o.res.FinishReason)
				}
				return
			}
			if o.res.FinishReason != nozzle.FinishStop {
				t.Errorf("finish %q, want stop", o.res.FinishReason)
			}
			// The completion ends with the token that completed the match.
			n, end := 0, 0
			for end < cut+len(longestStopAt(full.text, cut, tt.stops)) {
				end += len(toks[n])
				n++
			}
			if o.res.CompletionTokens != n {
				t.Errorf("completion tokens %d, want %d", o.res.CompletionTokens, n)
			}
		})
	}
}

func longestStopAt(text string, at int, stops []string) string {
	best := ""
	for _, s := range stops {
		if strings.HasPrefix(text[at:], s) && len(s) > len(best) {
			best = s
		}
	}
	return best
}

func TestGenerate_Logprobs(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	o := run(context.Background(), rt, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 12, Logprobs: true, TopLogprobs: 3})
	if o.err != nil {
		t.Fatal(o.err)
	}
	n := 0
	for _, c := range o.chunks {
		for _, lp := range c.Logprobs {
			n++
			if len(lp.Top) != 3 || lp.Top[0].Token != lp.Token || lp.Top[0].Logprob != lp.Logprob || lp.Logprob > 0 {
				t.Errorf("greedy logprob %+v", lp)
			}
			if string(intsBytes(lp.Bytes)) != lp.Token {
				t.Errorf("bytes %v of %q", lp.Bytes, lp.Token)
			}
			if lp.Top[1].Logprob > lp.Top[0].Logprob {
				t.Errorf("top not ordered: %+v", lp.Top)
			}
		}
	}
	want := o.res.CompletionTokens
	if o.res.FinishReason == nozzle.FinishStop {
		want-- // EOS
	}
	if n != want {
		t.Errorf("%d logprobs for %d tokens", n, want)
	}
}

func intsBytes(v []int) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func TestGenerate_Seeded(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	gen := func(seed uint64) string {
		o := run(context.Background(), rt, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 30, Temperature: 1.5, Seed: &seed})
		if o.err != nil {
			t.Fatal(o.err)
		}
		return o.text
	}
	a, b, c := gen(42), gen(42), gen(43)
	if a != b {
		t.Errorf("same seed, different text: %q vs %q", a, b)
	}
	if a == c {
		t.Errorf("different seeds, same text %q", a)
	}
}

func TestGenerate_Cancel(t *testing.T) {
	t.Run("MidPrefill", func(t *testing.T) {
		rt := startFake(t, runtime.Options{PrefillChunk: 16}, 64)
		ctx, cancel := context.WithCancel(context.Background())
		var once sync.Once
		rt.eng.onStep = func(n int) {
			if n == 3 {
				once.Do(cancel)
				// Steps of the stand-in take microseconds: give the
				// request's goroutine time to pass the cancellation on.
				time.Sleep(20 * time.Millisecond)
			}
		}
		o := run(ctx, rt, &nozzle.GenerateRequest{PromptTokens: randomPrompt(newRNG(1), 400), MaxTokens: 10})
		if nozzle.ErrorCode(o.err) != nozzle.ECANCELED || o.res.CompletionTokens != 0 || o.res.DeviceSeconds <= 0 || o.res.PromptTokens != 400 {
			t.Fatalf("got %+v %v", o.res, o.err)
		}
		closeRT(t, rt)
		if r := rt.Resources(); r.FreeBlocks != r.TotalBlocks || r.Steps > 5 {
			t.Errorf("resources %+v", r)
		}
	})
	t.Run("MidDecode", func(t *testing.T) {
		rt := startFake(t, runtime.Options{}, 64)
		rt.eng.eosBias = -100
		rt.eng.onStep = func(int) { time.Sleep(100 * time.Microsecond) }
		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		res, err := rt.Generate(ctx, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 200, Adapter: adapterFor(1)}, func(nozzle.Chunk) error {
			if n++; n == 3 {
				cancel()
			}
			return nil
		})
		if nozzle.ErrorCode(err) != nozzle.ECANCELED || res.CompletionTokens < 3 || res.CompletionTokens >= 200 || res.DeviceSeconds <= 0 {
			t.Fatalf("got %+v %v", res, err)
		}
		closeRT(t, rt)
		if r := rt.Resources(); r.FreeBlocks != r.TotalBlocks || r.PinnedSlots != 0 {
			t.Errorf("resources %+v", r)
		}
	})
	t.Run("EmitError", func(t *testing.T) {
		rt := startFake(t, runtime.Options{}, 64)
		defer closeRT(t, rt)
		rt.eng.eosBias = -100
		boom := errors.New("write: broken pipe")
		res, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 100}, func(nozzle.Chunk) error { return boom })
		if nozzle.ErrorCode(err) != nozzle.ECANCELED || !errors.Is(err, boom) || res.CompletionTokens < 1 || res.DeviceSeconds <= 0 {
			t.Fatalf("got %+v %v", res, err)
		}
	})
	t.Run("Close", func(t *testing.T) {
		rt := startFake(t, runtime.Options{}, 64)
		rt.eng.eosBias = -100
		// Steps take real time, so the request is still generating (not
		// only streaming what it already generated) when Close comes.
		rt.eng.onStep = func(int) { time.Sleep(time.Millisecond) }
		started := make(chan struct{})
		var once sync.Once
		done := make(chan outcome)
		go func() {
			var o outcome
			o.res, o.err = rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", MaxTokens: 400}, func(nozzle.Chunk) error {
				once.Do(func() { close(started) })
				time.Sleep(time.Millisecond)
				return nil
			})
			done <- o
		}()
		<-started
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no patience: cancel what runs
		if err := rt.Close(ctx); err != nil {
			t.Fatal(err)
		}
		o := <-done
		if nozzle.ErrorCode(o.err) != nozzle.EUNAVAILABLE || o.res.CompletionTokens == 0 {
			t.Errorf("got %+v %v", o.res, o.err)
		}
	})
}

// TestScheduler_Fairness floods the runtime from one tenant while another
// sends one request at a time: the light tenant waits at most about one
// request's service time, not behind the flood.
func TestScheduler_Fairness(t *testing.T) {
	rt := startFake(t, runtime.Options{MaxBatchSeqs: 4}, 256)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	rng := newRNG(5)
	var wg sync.WaitGroup
	heavy := make([]outcome, 100)
	for i := range heavy {
		wg.Add(1)
		req := &nozzle.GenerateRequest{TenantID: "heavy", PromptTokens: randomPrompt(rng, 30), MaxTokens: 20}
		go func() {
			defer wg.Done()
			heavy[i] = run(context.Background(), rt, req)
		}()
	}
	time.Sleep(5 * time.Millisecond)
	var lightQueue []float64
	for range 10 {
		o := run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "light", PromptTokens: randomPrompt(newRNG(9), 30), MaxTokens: 20})
		if o.err != nil {
			t.Fatal(o.err)
		}
		lightQueue = append(lightQueue, o.res.QueueSeconds)
	}
	wg.Wait()
	var heavyQueue, service float64
	for _, o := range heavy {
		heavyQueue = math.Max(heavyQueue, o.res.QueueSeconds)
		service = math.Max(service, o.res.TTFTSeconds-o.res.QueueSeconds)
	}
	// One heavy request's service: prefill then 20 decode steps.
	service *= 21
	for i, q := range lightQueue {
		if q > service {
			t.Errorf("light request %d waited %.3fs, more than one service time %.3fs (heavy waited up to %.3fs)", i, q, service, heavyQueue)
		}
	}
	t.Logf("light queue %v s; heavy max queue %.3f s; service bound %.3f s", lightQueue, heavyQueue, service)
}

// TestScheduler_FairShare: a tenant whose long requests fill every place
// in the batch does not hold another tenant off until one of them ends:
// the flooding tenant gives back a place (its newest sequence, recomputed
// later) and the other starts within a few steps. The flood's answers are
// the same as alone.
func TestScheduler_FairShare(t *testing.T) {
	rt := startFake(t, runtime.Options{MaxBatchSeqs: 4}, 512)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	heavy := make([]*nozzle.GenerateRequest, 6)
	alone := make([]outcome, len(heavy))
	for i := range heavy {
		heavy[i] = &nozzle.GenerateRequest{TenantID: "heavy", PromptTokens: randomPrompt(newRNG(uint64(40+i)), 30), MaxTokens: 200}
		alone[i] = run(context.Background(), rt, heavy[i])
	}
	steps := rt.eng.steps

	light := make(chan outcome, 1)
	var once sync.Once
	rt.eng.onStep = func(n int) {
		if n >= steps+30 { // the flood fills the batch by now
			once.Do(func() {
				go func() {
					light <- run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "light", PromptTokens: randomPrompt(newRNG(9), 30), MaxTokens: 5})
				}()
			})
		}
	}
	flood := make([]outcome, len(heavy))
	var wg sync.WaitGroup
	for i, req := range heavy {
		wg.Add(1)
		go func() { defer wg.Done(); flood[i] = run(context.Background(), rt, req) }()
	}
	wg.Wait()
	l := <-light
	if l.err != nil {
		t.Fatal(l.err)
	}
	for i, o := range flood {
		if o.err != nil || o.text != alone[i].text || o.res.CompletionTokens != 200 {
			t.Errorf("heavy %d: %q (%v), alone %q", i, o.text, o.err, alone[i].text)
		}
	}
	// One heavy request's service alone: its prefill and 200 decode steps.
	service := alone[0].res.DeviceSeconds
	if l.res.QueueSeconds > service/10 {
		t.Errorf("the light tenant waited %.3fs, a heavy request's service is %.3fs", l.res.QueueSeconds, service)
	}
	t.Logf("light queue %.4fs, heavy service %.3fs", l.res.QueueSeconds, service)
}

// TestGenerate_Progress: each chunk of a completion tells the request's
// account so far — in process and through the remote protocol, streamed:
// its prompt tokens, the completion tokens up to it (with logprobs, one a
// logprob; the first chunk carries at least its own), device seconds that
// only grow up to the result's, the runtime's id and rate.
func TestGenerate_Progress(t *testing.T) {
	rt := startFake(t, runtime.Options{RuntimeID: "rt-p", RatePerHour: 3}, 64)
	defer closeRT(t, rt)
	for name, g := range map[string]nozzle.Generator{"local": rt, "remote": serve(t, rt.Runtime)} {
		t.Run(name, func(t *testing.T) {
			o := run(context.Background(), g, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 12, Logprobs: true, Stream: true})
			if o.err != nil || len(o.chunks) == 0 {
				t.Fatalf("%d chunks, %v", len(o.chunks), o.err)
			}
			var tokens int
			var last nozzle.Progress
			for i, c := range o.chunks {
				tokens += len(c.Logprobs)
				p := c.Progress
				if p.PromptTokens != o.res.PromptTokens || p.CompletionTokens != tokens || p.RuntimeID != "rt-p" || p.RatePerHour != 3 ||
					p.DeviceSeconds < last.DeviceSeconds || p.DeviceSeconds > o.res.DeviceSeconds {
					t.Errorf("chunk %d (%d tokens so far): progress %+v; result %+v", i, tokens, p, o.res)
				}
				last = p
			}
			if last.CompletionTokens > o.res.CompletionTokens {
				t.Errorf("progress %d tokens, result %d", last.CompletionTokens, o.res.CompletionTokens)
			}
		})
	}
}
