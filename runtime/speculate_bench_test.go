package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// TestBenchSpeculative measures greedy decode throughput with prompt-lookup
// drafts against without, on the CPU engine bench model
// (engine.DefaultBenchModel, its vocabulary cut to the demo tokenizer's):
// two runtimes in one process, speculative_tokens 0 and
// NOZZLE_BENCH_SPEC_K (default 4), their runs alternated round by round,
// at batch 1 and 8, on (a) prompts that repeat the model's own greedy
// continuation (copy-heavy: drafts mostly hold) and (b) random prompts
// (drafts mostly fail). Completion tokens per second from each batch's
// first token to its end (prompts come from the prefix cache after the
// warm-up round). Runs only with NOZZLE_BENCH_SPEC=1 (minutes); the model
// is kept in NOZZLE_BENCH_DIR when set; NOZZLE_BENCH_QUICK=1 takes the
// quick bench model, NOZZLE_BENCH_DEMO=1 the demo model.
func TestBenchSpeculative(t *testing.T) {
	if os.Getenv("NOZZLE_BENCH_SPEC") == "" {
		t.Skip("NOZZLE_BENCH_SPEC=1 runs the speculative decoding benchmark")
	}
	k := 4
	if v, err := strconv.Atoi(os.Getenv("NOZZLE_BENCH_SPEC_K")); err == nil {
		k = v
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("NOZZLE_BENCH_ROUNDS")); err == nil {
		rounds = v
	}
	spec := engine.DefaultBenchModel()
	name := "bench-model"
	if os.Getenv("NOZZLE_BENCH_QUICK") != "" {
		spec, name = engine.QuickBenchModel(), "quick-model"
	}
	dir := os.Getenv("NOZZLE_BENCH_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	modelDir := filepath.Join(dir, name)
	if os.Getenv("NOZZLE_BENCH_DEMO") != "" {
		// the demo model: small enough to stay in the CPU's cache, where
		// steps are bound by arithmetic (3 sequences, 16 tokens a step)
		modelDir, _ = demo(t)
	}
	if _, err := os.Stat(filepath.Join(modelDir, "config.json")); err != nil {
		if err := os.MkdirAll(modelDir, 0o755); err != nil {
			t.Fatal(err)
		}
		vocab, err := tokenizer.WriteDemo(modelDir, spec.VocabSize)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := tokenizer.Load(modelDir)
		if err != nil {
			t.Fatal(err)
		}
		spec.VocabSize = vocab
		spec.BOSTokenID, _ = tk.BOS()
		spec.EOSTokenIDs = tk.EOS()
		if err := model.WriteRandomModel(modelDir, spec); err != nil {
			t.Fatal(err)
		}
	}
	open := func(k int, reg *metrics.Registry) *runtime.Runtime {
		return openOnStore(t, runtime.Options{SpeculativeTokens: k, Metrics: reg}, modelDir, demoStore(t, modelDir))
	}
	baseRT := open(0, metrics.NewRegistry())
	reg := metrics.NewRegistry()
	specRT := open(k, reg)
	ctx := context.Background()
	info, err := baseRT.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vocab := info.VocabSize
	const maxTokens = 48
	rng := newRNG(17)
	// (b) random prompts of words of the vocabulary
	var random [][]int
	for range 8 {
		p := make([]int, 64)
		for i := range p {
			p[i] = 300 + rng.IntN(vocab-310)
		}
		random = append(random, p)
	}
	// (a) the start of a random prompt, its greedy continuation g1, the
	// continuation g2 of both, and all that again: the model goes on with
	// text it has seen (a random model, with no copying circuit, falls
	// into loops that the drafts follow)
	tk, err := tokenizer.Load(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	byBytes := map[string]int{}
	for id := vocab - 1; id >= 0; id-- {
		byBytes[string(tk.TokenBytes(id))] = id
	}
	// candidates: a random prompt's start with two greedy continuations,
	// or one token repeated; each gets its greedy continuation, and the 8
	// whose continuations repeat their context the most (the share of
	// tokens a bigram lookup predicts) are the copy-heavy prompts, their
	// continuation included (the loop under way)
	var copyHeavy [][]int
	cache := filepath.Join(filepath.Dir(modelDir), filepath.Base(modelDir)+"-copy-prompts.json")
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &copyHeavy) == nil && len(copyHeavy) == 8 {
		t.Logf("copy-heavy prompts from %s", cache)
	} else {
		copyHeavy = findCopyHeavy(t, baseRT, byBytes, random, vocab, rng)
		if b, err := json.Marshal(copyHeavy); err == nil && os.Getenv("NOZZLE_BENCH_DIR") != "" {
			os.WriteFile(cache, b, 0o644)
		}
	}
	measure := func(rt *runtime.Runtime, prompts [][]int) float64 {
		var mu sync.Mutex
		var first, last time.Time
		tokens := 0
		var wg sync.WaitGroup
		for i, p := range prompts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := rt.Generate(ctx, &nozzle.GenerateRequest{TenantID: fmt.Sprint("t", i), PromptTokens: p, MaxTokens: maxTokens},
					func(c nozzle.Chunk) error {
						mu.Lock()
						if first.IsZero() {
							first = time.Now()
						}
						mu.Unlock()
						return nil
					})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				tokens += res.CompletionTokens
				last = time.Now()
				mu.Unlock()
			}()
		}
		wg.Wait()
		return float64(tokens-len(prompts)) / last.Sub(first).Seconds()
	}
	accepted := func() (float64, float64) {
		prom := promText(reg)
		return metricValue(prom, "nozzle_runtime_spec_drafted_tokens_total"), metricValue(prom, "nozzle_runtime_spec_accepted_tokens_total")
	}
	for _, c := range []struct {
		name    string
		prompts [][]int
	}{{"copy", copyHeavy}, {"random", random}} {
		for _, batch := range []int{1, 8} {
			ps := c.prompts[:batch]
			measure(baseRT, ps) // warm-up: the prompts into the prefix cache
			measure(specRT, ps)
			d0, a0 := accepted()
			var ratios []float64
			var bs, ss []float64
			for r := range rounds {
				var b, s float64
				if r%2 == 0 {
					b, s = measure(baseRT, ps), measure(specRT, ps)
				} else {
					s, b = measure(specRT, ps), measure(baseRT, ps)
				}
				bs, ss, ratios = append(bs, b), append(ss, s), append(ratios, s/b)
			}
			d1, a1 := accepted()
			t.Logf("%s batch %d: base %.2f tok/s %v, speculative %.2f tok/s %v, ratio %v (median %.3f); drafted %v accepted %v (%.0f%%)",
				c.name, batch, median(bs), fmtF(bs), median(ss), fmtF(ss), fmtF(ratios), median(ratios), d1-d0, a1-a0, 100*(a1-a0)/max(d1-d0, 1))
		}
	}
}

// findCopyHeavy picks the copy-heavy prompts (see TestBenchSpeculative).
func findCopyHeavy(t *testing.T, baseRT *runtime.Runtime, byBytes map[string]int, random [][]int, vocab int, rng *rand.Rand) [][]int {
	var cands [][]int
	for i := range 8 {
		seq := slices.Clone(random[i][:16])
		for range 2 {
			seq = append(seq, greedyIDs(t, baseRT, byBytes, seq, 32)...)
		}
		cands = append(cands, seq)
	}
	for range 16 {
		tok := 300 + rng.IntN(vocab-310)
		cands = append(cands, slices.Repeat([]int{tok}, 24))
	}
	type scored struct {
		seq   []int
		loopy float64
	}
	var ranked []scored
	for _, c := range cands {
		seq := append(slices.Clone(c), greedyIDs(t, baseRT, byBytes, c, 64)...)
		ranked = append(ranked, scored{seq, loopiness(seq, len(c)+32)})
	}
	slices.SortStableFunc(ranked, func(a, b scored) int {
		switch {
		case a.loopy > b.loopy:
			return -1
		case a.loopy < b.loopy:
			return 1
		}
		return 0
	})
	var copyHeavy [][]int
	for _, r := range ranked[:8] {
		copyHeavy = append(copyHeavy, r.seq)
		t.Logf("copy-heavy prompt: %d tokens, %.0f%% of its last 32 predicted by a bigram lookup", len(r.seq), 100*r.loopy)
	}
	return copyHeavy
}

// greedyIDs returns the n tokens greedy decoding gives after prompt, read
// back from their logprobs' bytes.
func greedyIDs(t *testing.T, rt *runtime.Runtime, byBytes map[string]int, prompt []int, n int) []int {
	t.Helper()
	var out []int
	_, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{TenantID: "w", PromptTokens: prompt, MaxTokens: n, Logprobs: true},
		func(c nozzle.Chunk) error {
			for _, lp := range c.Logprobs {
				id, ok := byBytes[string(bytesOf(lp.Bytes))]
				if !ok {
					return fmt.Errorf("no token has bytes %v", lp.Bytes)
				}
				out = append(out, id)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// loopiness is the share of the tokens of seq from `from` on that
// follow the most recent earlier occurrence of the two tokens before them
// as they followed there.
func loopiness(seq []int, from int) float64 {
	hit, n := 0, 0
	for i := from; i < len(seq); i++ {
		n++
		for j := i - 2; j >= 2; j-- {
			if seq[j-2] == seq[i-2] && seq[j-1] == seq[i-1] {
				if seq[j] == seq[i] {
					hit++
				}
				break
			}
		}
	}
	return float64(hit) / float64(max(n, 1))
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtF(v []float64) string {
	s := "["
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += strconv.FormatFloat(x, 'f', 2, 64)
	}
	return s + "]"
}
