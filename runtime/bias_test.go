package runtime_test

import (
	"context"
	"math"
	"slices"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// completionIDs runs req and returns the token ids of its completion.
func completionIDs(t *testing.T, rt interface {
	TokenID(string) (int, bool)
}, chunks []nozzle.Chunk) ([]int, []float64) {
	t.Helper()
	var ids []int
	var lps []float64
	for _, c := range chunks {
		for _, lp := range c.Logprobs {
			id, ok := rt.TokenID(lp.Token)
			if !ok {
				t.Fatalf("no token %q", lp.Token)
			}
			ids = append(ids, id)
			lps = append(lps, lp.Logprob)
		}
	}
	return ids, lps
}

// repeats counts the tokens of ids that came before in ids.
func repeats(ids []int) int {
	seen, n := map[int]bool{}, 0
	for _, id := range ids {
		if seen[id] {
			n++
		}
		seen[id] = true
	}
	return n
}

// TestDemo_LogitBias: logit_bias bans and forces tokens, presence and
// frequency penalties steer a greedy completion away from what it has
// said, with and without an adapter, alone and beside other requests; a
// request without them is unchanged; bad values are refused naming the
// parameter.
func TestDemo_LogitBias(t *testing.T) {
	rt, adapters := openDemo(t, runtime.Options{})
	head := []int{1, 450, 1996}
	for _, ad := range []*nozzle.Adapter{nil, adapters["demo-sql"]} {
		name := "base"
		if ad != nil {
			name = ad.Name
		}
		t.Run(name, func(t *testing.T) {
			req := func(mod func(*nozzle.GenerateRequest)) *nozzle.GenerateRequest {
				r := &nozzle.GenerateRequest{PromptTokens: head, MaxTokens: 24, Logprobs: true, Adapter: ad}
				if mod != nil {
					mod(r)
				}
				return r
			}
			chunks, _ := collect(t, rt, req(nil))
			base, _ := completionIDs(t, rt, chunks)
			if len(base) < 10 {
				t.Fatalf("baseline generated %d tokens", len(base))
			}

			// every token of the baseline banned: none of them comes
			ban := map[int]float64{}
			for _, id := range base {
				ban[id] = -100
			}
			chunks, _ = collect(t, rt, req(func(r *nozzle.GenerateRequest) { r.LogitBias = ban }))
			banned, _ := completionIDs(t, rt, chunks)
			for i, id := range banned {
				if _, ok := ban[id]; ok {
					t.Errorf("banned token %d generated at %d", id, i)
				}
			}

			// one token forced, sampled at temperature 1: every token is it,
			// at a logprob of about 0
			forced := base[len(base)/2]
			chunks, _ = collect(t, rt, req(func(r *nozzle.GenerateRequest) {
				r.LogitBias, r.Temperature, r.Seed = map[int]float64{forced: 100}, 1, new(uint64)
			}))
			ids, lps := completionIDs(t, rt, chunks)
			for i, id := range ids {
				if id != forced || lps[i] < -1e-3 {
					t.Fatalf("forced token %d: got %d (logprob %v) at %d", forced, id, lps[i], i)
				}
			}

			// penalties: greedy, the completion repeats itself less, and
			// every token is still greedy's choice under the penalised
			// logits: its logprob is the best one on offer at its step
			pen := func(r *nozzle.GenerateRequest) { r.PresencePenalty, r.FrequencyPenalty, r.TopLogprobs = 2, 2, 5 }
			chunks, _ = collect(t, rt, req(pen))
			penalised, plps := completionIDs(t, rt, chunks)
			if repeats(penalised) > repeats(base) || (repeats(base) > 0 && slices.Equal(penalised, base)) {
				t.Errorf("penalised completion repeats %d tokens (%v), the baseline %d (%v)", repeats(penalised), penalised, repeats(base), base)
			}
			t.Logf("greedy repeats %d of %d tokens, penalised %d of %d", repeats(base), len(base), repeats(penalised), len(penalised))
			var tops [][]nozzle.TopLogprob
			for _, c := range chunks {
				for _, lp := range c.Logprobs {
					tops = append(tops, lp.Top)
				}
			}
			for i := range penalised {
				if len(tops[i]) == 0 || math.Abs(tops[i][0].Logprob-plps[i]) > 1e-6 {
					t.Errorf("step %d: token logprob %v is not the best on offer %+v", i, plps[i], tops[i])
				}
			}

			// the same request beside others asking for none: the same
			// tokens, and theirs are the baseline
			done := make(chan []int)
			go func() {
				var cs []nozzle.Chunk
				rt.Generate(context.Background(), req(nil), func(c nozzle.Chunk) error { cs = append(cs, c); return nil })
				ids, _ := completionIDs(t, rt, cs)
				done <- ids
			}()
			chunks, _ = collect(t, rt, req(pen))
			again, _ := completionIDs(t, rt, chunks)
			if other := <-done; !slices.Equal(other, base) {
				t.Errorf("a request without adjustments beside a penalised one: %v, alone %v", other, base)
			}
			if !slices.Equal(again, penalised) {
				t.Errorf("penalised completion beside another %v, alone %v", again, penalised)
			}
		})
	}

	for _, tc := range []struct {
		name, param string
		mod         func(*nozzle.GenerateRequest)
	}{
		{"presence", "presence_penalty", func(r *nozzle.GenerateRequest) { r.PresencePenalty = 2.5 }},
		{"frequency", "frequency_penalty", func(r *nozzle.GenerateRequest) { r.FrequencyPenalty = math.NaN() }},
		{"token", "logit_bias", func(r *nozzle.GenerateRequest) { r.LogitBias = map[int]float64{1 << 20: 1} }},
		{"negative token", "logit_bias", func(r *nozzle.GenerateRequest) { r.LogitBias = map[int]float64{-1: 1} }},
		{"value", "logit_bias", func(r *nozzle.GenerateRequest) { r.LogitBias = map[int]float64{3: 101} }},
	} {
		r := &nozzle.GenerateRequest{PromptTokens: head, MaxTokens: 4}
		tc.mod(r)
		_, err := rt.Generate(context.Background(), r, func(nozzle.Chunk) error { return nil })
		if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EINVALID || e.Param != tc.param {
			t.Errorf("%s: %v, want EINVALID naming %s", tc.name, err, tc.param)
		}
	}
}
