package runtime_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
)

// sameOutcome reports how got differs from want (a request's chunks, its
// finish and its token counts), or "".
func sameOutcome(got, want outcome) string {
	switch {
	case (got.err == nil) != (want.err == nil):
		return fmt.Sprintf("error %v, want %v", got.err, want.err)
	case got.err != nil:
		return ""
	case got.text != want.text:
		return fmt.Sprintf("text %q, want %q", got.text, want.text)
	case got.res.FinishReason != want.res.FinishReason || got.res.CompletionTokens != want.res.CompletionTokens ||
		got.res.PromptTokens != want.res.PromptTokens:
		return fmt.Sprintf("finish %q, %d+%d tokens, want %q, %d+%d", got.res.FinishReason, got.res.PromptTokens,
			got.res.CompletionTokens, want.res.FinishReason, want.res.PromptTokens, want.res.CompletionTokens)
	case !reflect.DeepEqual(alike(got.chunks), alike(want.chunks)):
		return fmt.Sprintf("chunks %s, want %s", showChunks(got.chunks), showChunks(want.chunks))
	}
	return ""
}

// TestSpeculative_SameAsGreedy: on the fake engine, greedy requests decoded
// with prompt-lookup drafts give exactly the chunks, logprobs, finish and
// counts they give without — with logits that depend on the whole history
// (drafts all but never hold) or on the last one or two tokens (the text
// loops and drafts mostly hold), across max_tokens that end inside a
// draft, eos inside one, stop sequences and logprobs; the drafts' work is
// counted in the metrics.
func TestSpeculative_SameAsGreedy(t *testing.T) {
	ctx := context.Background()
	for _, window := range []int{0, 1, 2} {
		for _, eosBias := range []float64{-3, 0.5} {
			t.Run(fmt.Sprintf("window%d/eos%v", window, eosBias), func(t *testing.T) {
				base := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64}, 64)
				defer closeRT(t, base)
				reg := metrics.NewRegistry()
				spec := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64, SpeculativeTokens: 5, Metrics: reg}, 64)
				defer closeRT(t, spec)
				for _, rt := range []*testRT{base, spec} {
					rt.eng.window, rt.eng.eosBias = window, eosBias
				}
				rng := newRNG(uint64(7 + window))
				for i := range 40 {
					req := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: randomPrompt(rng, 3+rng.IntN(40)),
						MaxTokens: []int{1, 2, 3, 7, 19, 60}[i%6]}
					if i%3 == 1 {
						req.Logprobs, req.TopLogprobs = true, i%4
					}
					want := run(ctx, base, req)
					if want.err != nil {
						t.Fatalf("request %d: %v", i, want.err)
					}
					if i%5 == 2 && len(want.text) > 4 {
						// a stop sequence from the middle of the text
						req.Stop = []string{want.text[len(want.text)/2 : len(want.text)/2+2]}
						want = run(ctx, base, req)
					}
					got := run(ctx, spec, req)
					if d := sameOutcome(got, want); d != "" {
						t.Errorf("request %d (%s): %s", i, describe(req), d)
					}
				}
				prom := promText(reg)
				drafted := metricValue(prom, "nozzle_runtime_spec_drafted_tokens_total")
				accepted := metricValue(prom, "nozzle_runtime_spec_accepted_tokens_total")
				t.Logf("drafted %v, accepted %v", drafted, accepted)
				if drafted == 0 || accepted > drafted || window == 1 && eosBias < 0 && accepted < drafted/4 {
					t.Errorf("drafted %v, accepted %v", drafted, accepted)
				}
				for _, rt := range []*testRT{base, spec} {
					for _, err := range rt.eng.invalidSteps() {
						t.Errorf("the engine refused a step: %v", err)
					}
				}
			})
		}
	}
}

// TestSpeculative_MixedBatch: greedy requests that draft share steps with
// sampled, biased, constrained-free adapter and logprob requests that do
// not; every request gives what it gives alone without speculation.
func TestSpeculative_MixedBatch(t *testing.T) {
	ctx := context.Background()
	base := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64}, 128)
	defer closeRT(t, base)
	reg := metrics.NewRegistry()
	spec := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64, SpeculativeTokens: 4, SpeculativeMaxSeqs: 8, Metrics: reg}, 128)
	defer closeRT(t, spec)
	for _, rt := range []*testRT{base, spec} {
		rt.eng.window = 1
	}
	rng := newRNG(11)
	seed := uint64(5)
	var reqs []*nozzle.GenerateRequest
	for i := range 24 {
		req := &nozzle.GenerateRequest{TenantID: fmt.Sprint("t", i%3), PromptTokens: randomPrompt(rng, 5+rng.IntN(30)), MaxTokens: 10 + rng.IntN(30)}
		switch i % 6 {
		case 1:
			req.Temperature, req.Seed = 0.8, &seed
		case 2:
			req.LogitBias = map[int]float64{int(req.PromptTokens[0]): 3}
		case 3:
			req.Adapter = adapterFor(i % 2)
		case 4:
			req.Logprobs, req.TopLogprobs = true, 2
		case 5:
			req.PresencePenalty = 0.5
		}
		reqs = append(reqs, req)
	}
	want := make([]outcome, len(reqs))
	for i, req := range reqs {
		want[i] = run(ctx, base, req)
	}
	got := runAll(ctx, spec, reqs)
	for i := range reqs {
		if d := sameOutcome(got[i], want[i]); d != "" {
			t.Errorf("request %d (%s): %s", i, describe(reqs[i]), d)
		}
	}
	if accepted := metricValue(promText(reg), "nozzle_runtime_spec_accepted_tokens_total"); accepted == 0 {
		t.Errorf("no draft accepted")
	}
	for _, err := range spec.eng.invalidSteps() {
		t.Errorf("the engine refused a step: %v", err)
	}
}

// TestSpeculative_CancelAndPrefixCache: a request canceled while it drafts
// frees its blocks; a later request reusing the prefix cache a speculating
// one filled gives what it gives without speculation.
func TestSpeculative_CancelAndPrefixCache(t *testing.T) {
	base := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64}, 64)
	defer closeRT(t, base)
	reg := metrics.NewRegistry()
	spec := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64, SpeculativeTokens: 6, Metrics: reg}, 64)
	defer closeRT(t, spec)
	for _, rt := range []*testRT{base, spec} {
		rt.eng.window = 1
	}
	rng := newRNG(3)
	prompt := randomPrompt(rng, 40)
	// canceled after a few tokens, mid-draft
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := spec.Generate(ctx, &nozzle.GenerateRequest{TenantID: "t", PromptTokens: prompt, MaxTokens: 200}, func(c nozzle.Chunk) error {
		if n++; n == 5 {
			cancel()
		}
		return nil
	})
	cancel()
	if nozzle.ErrorCode(err) != nozzle.ECANCELED {
		t.Fatalf("canceled request: %v", err)
	}
	waitFor(t, func() bool {
		prom := promText(reg)
		return metricValue(prom, "nozzle_runtime_kv_blocks_used") == 0 && metricValue(prom, "nozzle_runtime_running_sequences") == 0
	})
	// a speculative request fills the prefix cache; its prompt and
	// output, extended, then reuse it
	req := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: prompt, MaxTokens: 50, Logprobs: true}
	first := run(context.Background(), spec, req)
	if d := sameOutcome(first, run(context.Background(), base, req)); d != "" {
		t.Fatalf("first request: %s", d)
	}
	long := append([]int{}, prompt...)
	for _, c := range first.chunks {
		for _, lp := range c.Logprobs {
			long = append(long, fakeTokenID(t, lp.Bytes))
		}
	}
	long = append(long, prompt[:5]...)
	req2 := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: long, MaxTokens: 40}
	got := run(context.Background(), spec, req2)
	if d := sameOutcome(got, run(context.Background(), base, req2)); d != "" {
		t.Errorf("request on the prefix cache: %s", d)
	}
	if got.res.CachedPromptTokens < len(prompt)+16 {
		t.Errorf("the prefix cache held none of the prompt: %+v", got.res)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeTokenID is the fake tokenizer's id of a token of these bytes.
func fakeTokenID(t *testing.T, b []int) int {
	t.Helper()
	if len(b) == 1 {
		return b[0]
	}
	for i, w := range fakeWords {
		if string(bytesOf(b)) == w {
			return fakeEOS + 1 + i
		}
	}
	t.Fatalf("no fake token has bytes %v", b)
	return 0
}

func bytesOf(b []int) []byte {
	out := make([]byte, len(b))
	for i, v := range b {
		out[i] = byte(v)
	}
	return out
}

// TestDemo_Speculative: on the demo model and the real CPU engine, greedy
// requests decoded with prompt-lookup drafts give token for token (text,
// logprobs, finish, counts) what they give without: plain prompts, where
// drafts mostly fail, and prompts that hold their own greedy continuation,
// where drafts mostly hold; alone, with max_tokens ending inside drafts,
// and mixed in steps with sampled, biased and adapter requests.
func TestDemo_Speculative(t *testing.T) {
	base, adapters := openDemo(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64})
	reg := metrics.NewRegistry()
	spec, _ := openDemo(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64, SpeculativeTokens: 4, SpeculativeMaxSeqs: 8, Metrics: reg})
	ctx := context.Background()
	prompts := []string{"The quick brown fox", "SELECT * FROM", "func main() {", "Once upon a time", "a b c d e f", "1, 2, 3, 4,"}
	var reqs []*nozzle.GenerateRequest
	for i, p := range prompts {
		reqs = append(reqs, &nozzle.GenerateRequest{TenantID: "a", Prompt: p, MaxTokens: 40, Logprobs: i%2 == 0, TopLogprobs: i % 3})
		// the prompt then its own greedy continuation, twice: the model
		// is asked to go on with text that repeats
		cont := run(ctx, base, &nozzle.GenerateRequest{TenantID: "a", Prompt: p, MaxTokens: 24})
		if cont.err != nil {
			t.Fatal(cont.err)
		}
		reqs = append(reqs, &nozzle.GenerateRequest{TenantID: "b", Prompt: p + cont.text + p + cont.text + p, MaxTokens: 3 + 7*i, Logprobs: i%2 == 1, TopLogprobs: 2})
	}
	want := make([]outcome, len(reqs))
	for i, req := range reqs {
		want[i] = run(ctx, base, req)
		got := run(ctx, spec, req)
		if d := sameOutcome(got, want[i]); d != "" {
			t.Errorf("request %d (%s) alone: %s", i, describe(req), d)
		}
	}
	prom := promText(reg)
	drafted := metricValue(prom, "nozzle_runtime_spec_drafted_tokens_total")
	accepted := metricValue(prom, "nozzle_runtime_spec_accepted_tokens_total")
	t.Logf("drafted %v, accepted %v", drafted, accepted)
	if accepted == 0 {
		t.Errorf("no draft accepted (%v drafted)", drafted)
	}

	// mixed: the same greedy requests beside sampled, biased and adapter
	// ones (which do not draft) in shared steps
	seed := uint64(9)
	others := []*nozzle.GenerateRequest{
		{TenantID: "c", Prompt: "The quick brown fox", MaxTokens: 30, Temperature: 0.9, Seed: &seed},
		{TenantID: "c", Prompt: "SELECT * FROM", MaxTokens: 30, LogitBias: map[int]float64{5: 2}},
		{TenantID: "d", Prompt: "func main() {", MaxTokens: 30, Adapter: adapters["demo-code"]},
		{TenantID: "d", Prompt: "a b c d e f a b c d e f", MaxTokens: 30, Adapter: adapters["demo-sql"]},
	}
	for _, req := range others {
		reqs = append(reqs, req)
		want = append(want, run(ctx, base, req))
	}
	got := runAll(ctx, spec, reqs)
	for i, req := range reqs {
		if d := sameOutcome(got[i], want[i]); d != "" {
			t.Errorf("request %d (%s) mixed: %s", i, describe(req), d)
		}
	}
}

// TestSpeculative_EOSInsideDraft: a prompt holding the model's own answer
// and its eos makes the drafts run through the eos: the request stops at
// it, nothing after it goes out or counts, exactly as without drafts.
func TestSpeculative_EOSInsideDraft(t *testing.T) {
	base := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64}, 64)
	defer closeRT(t, base)
	reg := metrics.NewRegistry()
	spec := startFake(t, runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 64, SpeculativeTokens: 7, Metrics: reg}, 64)
	defer closeRT(t, spec)
	for _, rt := range []*testRT{base, spec} {
		rt.eng.window, rt.eng.eosBias = 1, 1.5
	}
	ctx := context.Background()
	rng := newRNG(21)
	tried := 0
	for i := 0; i < 200 && tried < 5; i++ {
		prompt := randomPrompt(rng, 6)
		first := run(ctx, base, &nozzle.GenerateRequest{TenantID: "t", PromptTokens: prompt, MaxTokens: 40, Logprobs: true})
		if first.err != nil || first.res.FinishReason != nozzle.FinishStop || first.res.CompletionTokens < 3 {
			continue // no eos soon enough after this prompt
		}
		tried++
		// prompt, answer, eos, prompt: the model answers again, and the
		// drafts copy the answer, its eos and the prompt after it
		long := append([]int{}, prompt...)
		for _, c := range first.chunks {
			for _, lp := range c.Logprobs {
				long = append(long, fakeTokenID(t, lp.Bytes))
			}
		}
		long = append(append(long, fakeEOS), prompt...)
		req := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: long, MaxTokens: 100}
		a0 := metricValue(promText(reg), "nozzle_runtime_spec_accepted_tokens_total")
		want := run(ctx, base, req)
		got := run(ctx, spec, req)
		if d := sameOutcome(got, want); d != "" {
			t.Errorf("prompt %d: %s", i, d)
		}
		if want.res.FinishReason != nozzle.FinishStop || want.res.CompletionTokens != first.res.CompletionTokens {
			t.Errorf("prompt %d: the answer did not repeat: %+v, first %+v", i, want.res, first.res)
		}
		if a1 := metricValue(promText(reg), "nozzle_runtime_spec_accepted_tokens_total"); a1-a0 < float64(want.res.CompletionTokens-1) {
			t.Errorf("prompt %d: %v drafts accepted for %d tokens", i, a1-a0, want.res.CompletionTokens)
		}
	}
	if tried == 0 {
		t.Fatal("no prompt ended with eos")
	}
}
