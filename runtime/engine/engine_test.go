package engine_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

func TestLibrary_Open(t *testing.T) {
	lib := openLib(t)
	if lib.Backend() == "" || (*engineLib == "" && !strings.HasPrefix(lib.Backend(), "cpu")) {
		t.Errorf("backend = %q", lib.Backend())
	}
	bw, err := lib.ReadBandwidth(64<<20, 2, 1)
	if err != nil || !(bw > 1e8) {
		t.Errorf("read bandwidth = %v, %v", bw, err)
	}
	_, err = lib.ReadBandwidth(1, 1, 1)
	var ee *engine.Error
	if !errors.Is(err, engine.ErrInvalid) || !errors.As(err, &ee) || ee.Call != "nz_bench_read_bandwidth" || ee.Message == "" {
		t.Errorf("bad bandwidth call: %v", err)
	}
}

// refCase is one model (and optional adapter) compared with the reference.
type refCase struct {
	name    string
	spec    func(*model.Spec)
	opts    func(*engine.Options)
	adapter *model.AdapterSpec
	tol     float64
}

func refCases() []refCase {
	const tight = 5e-5
	var perModule []refCase
	for mod := model.Module(0); mod < model.NumModules; mod++ {
		perModule = append(perModule, refCase{name: "LoRAOnly_" + mod.String(), adapter: &model.AdapterSpec{Rank: 5, Seed: 50 + uint64(mod), Modules: []model.Module{mod}}, tol: tight})
	}
	return append(perModule, []refCase{
		{name: "LlamaGQA", tol: tight},
		{name: "LlamaTiedBiases", spec: func(s *model.Spec) { s.Tied = true; s.AttentionBias = true; s.MLPBias = true }, tol: tight},
		{name: "Qwen2SlidingWindow", spec: func(s *model.Spec) {
			s.Arch = "qwen2"
			s.Tied = true
			s.SlidingWindow = 5
			s.MaxWindowLayers = 1
			s.RopeTheta = 1e6
		}, tol: tight},
		{name: "MistralSlidingWindow", spec: func(s *model.Spec) { s.Arch = "mistral"; s.SlidingWindow = 6; s.NumKVHeads = 1 }, tol: tight},
		{name: "Llama3RopeHeadDim", spec: func(s *model.Spec) {
			s.HeadDim = 16
			s.Rope = &model.RopeScaling{Type: model.RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 256}
		}, tol: tight},
		{name: "LinearRopeV5", spec: func(s *model.Spec) {
			s.RopeParameters = true
			s.RopeTheta = 500000
			s.Rope = &model.RopeScaling{Type: model.RopeLinear, Factor: 4}
		}, tol: tight},
		// yarn: 14 positions past an original context of 8, theta 100 so
		// that the correction range ([0, 2] truncated, [0, 1.62] not)
		// blends a pair between kept and scaled ones.
		{name: "YarnQwen2", spec: func(s *model.Spec) {
			s.Arch, s.HeadDim, s.RopeTheta = "qwen2", 16, 100
			s.Rope = &model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 8, BetaFast: 4, BetaSlow: 0.5,
				AttentionFactor: model.YarnMscale(4, 1), Truncate: true}
		}, tol: tight},
		{name: "YarnQwen3V5NoTruncate", spec: func(s *model.Spec) {
			s.Arch, s.HeadDim, s.RopeTheta, s.RopeParameters = "qwen3", 16, 100, true
			s.Rope = &model.RopeScaling{Type: model.RopeYarn, Factor: 3, OriginalMaxPosition: 8, BetaFast: 4, BetaSlow: 0.5,
				AttentionFactor: 1.3, Truncate: false}
		}, tol: tight},
		// longrope over Phi-4-mini's partial rotary embedding: 12 of 16
		// dims rotated, 64 positions served over an original 4, so the
		// long factors and the default attention factor √3.
		{name: "LoRALongropePhi4Partial", spec: func(s *model.Spec) {
			s.Arch, s.NumHeads, s.NumKVHeads, s.MaxPosition, s.PartialRotaryFactor = "phi3", 2, 1, 64, 0.75
			s.Rope = longropeSpec(6, 4, model.LongropeAttention(64, 4))
		}, adapter: &model.AdapterSpec{Rank: 8, Seed: 19}, tol: tight},
		// longrope with every dim rotated, served within the original
		// context: the short factors, an explicit attention factor.
		{name: "LongropeShort", spec: func(s *model.Spec) {
			s.MaxPosition = 64
			s.Rope = longropeSpec(4, 64, 1.2)
		}, tol: tight},
		// dynamic NTK: default RoPE within max_position_embeddings (the
		// reference computes no scaling for it)
		{name: "DynamicNTK", spec: func(s *model.Spec) {
			s.Rope = &model.RopeScaling{Type: model.RopeDynamic, Factor: 2}
		}, tol: tight},
		{name: "ShardedF16", spec: func(s *model.Spec) { s.Shards = 3; s.DType = safetensors.F16 }, opts: func(o *engine.Options) { o.WeightDType = safetensors.F32 }, tol: tight},
		{name: "BF16ToF32", spec: func(s *model.Spec) { s.DType = safetensors.BF16 }, opts: func(o *engine.Options) { o.WeightDType = safetensors.F32 }, tol: tight},
		{name: "BF16Weights", spec: func(s *model.Spec) { s.DType = safetensors.BF16 }, tol: 5e-3},
		{name: "F16Weights", spec: func(s *model.Spec) { s.DType = safetensors.F16 }, tol: 2e-3},
		// int8 rows against the checkpoint's own values: the quantization's
		// error, with an adapter (its slots keep their dtype) and with tied
		// embeddings and biases (the LM head is the int8 embedding; biases
		// stay exact)
		{name: "Int8WeightsLoRA", spec: func(s *model.Spec) { s.DType = safetensors.BF16 }, opts: func(o *engine.Options) { o.WeightDType = engine.Int8 },
			adapter: &model.AdapterSpec{Rank: 8, Seed: 20, DType: safetensors.BF16}, tol: 3e-2},
		{name: "Int8Qwen2Tied", spec: func(s *model.Spec) { s.Arch, s.Tied = "qwen2", true }, opts: func(o *engine.Options) { o.WeightDType = engine.Int8 }, tol: 3e-2},
		// Phi-3's fused projections reach the engine as parts, each
		// quantized by its own rows; Gemma 2's scaled, tied embedding is
		// the int8 LM head under a soft-cap (on these tiny random models
		// the quantization moves the logits by 3–6%; a wrong scale or row
		// would move them by far more)
		{name: "Int8Phi3Fused", spec: func(s *model.Spec) { s.Arch, s.DType = "phi3", safetensors.BF16 }, opts: func(o *engine.Options) { o.WeightDType = engine.Int8 },
			adapter: &model.AdapterSpec{Rank: 8, Seed: 21}, tol: 8e-2},
		{name: "Int8Gemma2", spec: func(s *model.Spec) {
			s.Arch, s.Tied, s.HeadDim, s.SlidingWindow, s.DType = "gemma2", true, 16, 5, safetensors.BF16
			s.QueryPreAttnScalar, s.AttnSoftcap, s.FinalSoftcap = 24, 2, 3
		}, opts: func(o *engine.Options) { o.WeightDType = engine.Int8 }, tol: 8e-2},
		{name: "LoRAAllModules", adapter: &model.AdapterSpec{Rank: 8, Seed: 11}, tol: tight},
		{name: "LoRAPatterns", adapter: &model.AdapterSpec{
			Rank: 8, Alpha: 12, RSLoRA: true, Seed: 12, DType: safetensors.BF16,
			RankPattern:  []model.Pattern{{Key: "v_proj", Value: 3}, {Key: `model\.layers\.1\.mlp\..*`, Value: 13}},
			AlphaPattern: []model.Pattern{{Key: "q_proj", Value: 40}, {Key: "down_proj", Value: 2}},
		}, tol: tight},
		{name: "LoRASomeModules", adapter: &model.AdapterSpec{Rank: 4, Seed: 13, DType: safetensors.F16, Modules: []model.Module{model.ModuleK, model.ModuleO, model.ModuleUp}, Layers: []int{1}}, tol: tight},
		{name: "LoRAQwen2", spec: func(s *model.Spec) { s.Arch = "qwen2"; s.Tied = true }, adapter: &model.AdapterSpec{Rank: 16, Alpha: 8, Seed: 14}, tol: tight},
		{name: "LoRAQwen3HeadNorms", spec: func(s *model.Spec) { s.Arch = "qwen3"; s.HeadDim = 16 }, adapter: &model.AdapterSpec{Rank: 8, Alpha: 16, Seed: 15}, tol: tight},
		{name: "Qwen3AttentionBias", spec: func(s *model.Spec) { s.Arch = "qwen3"; s.AttentionBias = true; s.Tied = true }, tol: tight},
		{name: "LoRAPhi3Fused", spec: func(s *model.Spec) { s.Arch = "phi3"; s.SlidingWindow = 5 }, adapter: &model.AdapterSpec{Rank: 8, Seed: 16}, tol: tight},
		// Gemma 2: sandwich norms of (1 + w), scaled embeddings, GELU(tanh),
		// query_pre_attn_scalar, small soft-caps that bend scores and
		// logits, layer 0 sliding and layer 1 full.
		{name: "LoRAGemma2", spec: func(s *model.Spec) {
			s.Arch, s.Tied, s.HeadDim, s.SlidingWindow = "gemma2", true, 16, 5
			s.QueryPreAttnScalar, s.AttnSoftcap, s.FinalSoftcap = 24, 2, 3
		}, adapter: &model.AdapterSpec{Rank: 8, Alpha: 16, Seed: 17}, tol: tight},
		// Gemma 3: head norms, layer 0 sliding with the local RoPE base,
		// layer 1 full with linear scaling of rope_theta's.
		{name: "LoRAGemma3LocalRope", spec: func(s *model.Spec) {
			s.Arch, s.Tied, s.HeadDim, s.SlidingWindow, s.SlidingWindowPattern = "gemma3_text", true, 16, 5, 2
			s.RopeTheta, s.RopeLocalTheta = 1e6, 100
			s.Rope = &model.RopeScaling{Type: model.RopeLinear, Factor: 4}
		}, adapter: &model.AdapterSpec{Rank: 4, Alpha: 8, RSLoRA: true, Seed: 18}, tol: tight},
		{name: "Gemma3BF16", spec: func(s *model.Spec) {
			s.Arch, s.HeadDim, s.SlidingWindow, s.DType = "gemma3_text", 16, 4, safetensors.BF16
		}, tol: 5e-3},
	}...)
}

// longropeSpec is a longrope scaling of n factors per list (short ones
// near 1, long ones growing to 5), over an original context of orig.
func longropeSpec(n, orig int, attention float64) *model.RopeScaling {
	rs := &model.RopeScaling{Type: model.RopeLongrope, Factor: 1, OriginalMaxPosition: orig, AttentionFactor: attention}
	for j := range n {
		rs.ShortFactor = append(rs.ShortFactor, 1+0.05*float64(j))
		rs.LongFactor = append(rs.LongFactor, 1+4*float64(j)/float64(n-1))
	}
	return rs
}

// TestEngine_MatchesReference prefills a chunk of a prompt, then decodes the
// rest one token at a time, and compares the logits of every step with the
// float64 reference.
func TestEngine_MatchesReference(t *testing.T) {
	openLib(t)
	for i, tc := range refCases() {
		t.Run(tc.name, func(t *testing.T) {
			spec := tinySpec(uint64(100 + i))
			if tc.spec != nil {
				tc.spec(&spec)
			}
			m := openModel(t, spec)
			opts := testOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			e := newEngine(t, m, opts)
			ref := newRefModel(t, m)
			slot := -1
			var ad refAdapter
			if tc.adapter != nil {
				a := openAdapter(t, m, *tc.adapter)
				if err := e.LoadAdapter(2, a); err != nil {
					t.Fatal(err)
				}
				slot, ad = 2, newRefAdapter(t, a)
			}
			h := newHarness(t, e, uint64(i))
			r := rand.New(rand.NewPCG(uint64(i), 2))
			s := &seq{tokens: randomTokens(r, 14, spec.VocabSize), slot: slot}
			want := ref.forward(s.tokens, ad)
			logits, _ := h.mustStep(part{s, 7})
			checkLogits(t, "prefill 7", logits[0], want[6], tc.tol)
			worst, _ := logitsErr(logits[0], want[6])
			for s.done < len(s.tokens) {
				logits, _ = h.mustStep(part{s, 1})
				checkLogits(t, fmt.Sprintf("decode pos %d", s.done-1), logits[0], want[s.done-1], tc.tol)
				e, _ := logitsErr(logits[0], want[s.done-1])
				worst = math.Max(worst, e)
			}
			t.Logf("largest relative logit error %.3g (tolerance %.3g)", worst, tc.tol)
			if tc.adapter != nil {
				// The adapter must matter, or the comparison proves little.
				base := ref.forward(s.tokens, nil)
				if e, _ := logitsErr(logits[0], base[len(base)-1]); e < 10*tc.tol {
					t.Errorf("adapter changes logits by only %.3g", e)
				}
			}
		})
	}
}

// TestEngine_YarnChangesLogits: the same weights with yarn rope scaling and
// without it give the same logits at position 0 (RoPE is the identity there
// up to yarn's attention factor, which one key's softmax cancels) and
// different logits at every later position, through and beyond the
// original context; so the yarn cases of TestEngine_MatchesReference check
// a forward pass that yarn changes.
func TestEngine_YarnChangesLogits(t *testing.T) {
	openLib(t)
	spec := tinySpec(77)
	spec.Arch, spec.HeadDim, spec.RopeTheta = "qwen2", 16, 10000
	plain := openModel(t, spec)
	spec.Rope = &model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 16, BetaFast: 32, BetaSlow: 1,
		AttentionFactor: model.YarnMscale(4, 1), Truncate: true}
	yarn := openModel(t, spec)
	if yarn.Config.RopeScaling.Type != model.RopeYarn || plain.Config.RopeScaling.Type != model.RopeDefault {
		t.Fatalf("rope types %q, %q", yarn.Config.RopeScaling.Type, plain.Config.RopeScaling.Type)
	}
	tokens := randomTokens(rand.New(rand.NewPCG(77, 1)), 40, spec.VocabSize)
	run := func(m *model.Model) [][]float32 {
		h := newHarness(t, newEngine(t, m, testOptions()), 1)
		s := &seq{tokens: tokens, slot: -1}
		var out [][]float32
		for s.done < len(s.tokens) {
			logits, _ := h.mustStep(part{s, 1})
			out = append(out, logits[0])
		}
		return out
	}
	a, b := run(yarn), run(plain)
	for pos := range a {
		want := make([]float64, len(b[pos]))
		for i, v := range b[pos] {
			want[i] = float64(v)
		}
		d, _ := logitsErr(a[pos], want)
		switch {
		case pos == 0 && d != 0:
			t.Errorf("position 0: yarn changes logits by %.3g", d)
		case pos > 0 && d < 1e-3:
			t.Errorf("position %d: yarn changes logits by only %.3g", pos, d)
		}
	}
}

// TestEngine_ChunkedPrefill: prefill in chunks of several sizes equals one
// whole prefill within tolerance, and both equal token-by-token decoding.
func TestEngine_ChunkedPrefill(t *testing.T) {
	m := openModel(t, tinySpec(7))
	e := newEngine(t, m, testOptions())
	a := openAdapter(t, m, model.AdapterSpec{Rank: 8, Seed: 3})
	if err := e.LoadAdapter(0, a); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, e, 1)
	r := rand.New(rand.NewPCG(5, 5))
	prompt := randomTokens(r, 23, 96)
	whole := &seq{tokens: prompt, slot: 0}
	want, _ := h.mustStep(part{whole, len(prompt)})
	for _, chunks := range [][]int{{1, 22}, {5, 5, 5, 8}, {4, 4, 4, 4, 4, 3}, {22, 1}} {
		s := &seq{tokens: prompt, slot: 0}
		var got [][]float32
		for _, n := range chunks {
			got, _ = h.mustStep(part{s, n})
		}
		e, at := logitsErr(got[0], toF64(want[0]))
		if e > 1e-5 {
			t.Errorf("chunks %v: relative error %.3g at %d", chunks, e, at)
		}
		h.release(s)
	}
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestEngine_BatchInvariance: a sequence's logits and tokens are
// bit-identical alone and inside a mixed batch with other adapters, other
// sequences prefilling and decoding.
func TestEngine_BatchInvariance(t *testing.T) {
	m := openModel(t, tinySpec(8))
	opts := testOptions()
	opts.Threads = 2
	e := newEngine(t, m, opts)
	adapters := []*model.Adapter{
		openAdapter(t, m, model.AdapterSpec{Rank: 8, Seed: 21}),
		openAdapter(t, m, model.AdapterSpec{Rank: 16, Seed: 22, DType: safetensors.BF16}),
		openAdapter(t, m, model.AdapterSpec{Rank: 3, Seed: 23, Modules: []model.Module{model.ModuleQ, model.ModuleDown}}),
	}
	for i, a := range adapters {
		if err := e.LoadAdapter(i, a); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(8, 8))
	slots := []int{0, -1, 1, 2, 0, -1}
	prompts := make([][]int32, len(slots))
	for i := range prompts {
		prompts[i] = randomTokens(r, 6+3*i, 96)
	}
	// Each sequence alone: prefill, then 4 decode steps.
	alone := make([][][]float32, len(slots))
	aloneTok := make([][]int32, len(slots))
	h := newHarness(t, e, 2)
	for i, slot := range slots {
		s := &seq{tokens: append([]int32(nil), prompts[i]...), slot: slot, temp: 0.8, seed: uint64(i)}
		l, tok := h.mustStep(part{s, len(prompts[i])})
		alone[i] = append(alone[i], l[0])
		aloneTok[i] = append(aloneTok[i], tok[0])
		for k := 0; k < 4; k++ {
			s.tokens = append(s.tokens, tok[0])
			l, tok = h.mustStep(part{s, 1})
			alone[i] = append(alone[i], l[0])
			aloneTok[i] = append(aloneTok[i], tok[0])
		}
		h.release(s)
	}
	// Together, staggered: sequence i joins at step i, so every step mixes
	// prefills and decodes of different adapters.
	seqs := make([]*seq, len(slots))
	got := make([][][]float32, len(slots))
	gotTok := make([][]int32, len(slots))
	for stepN := 0; ; stepN++ {
		var parts []part
		var idx []int
		for i := range seqs {
			if i == stepN {
				seqs[i] = &seq{tokens: append([]int32(nil), prompts[i]...), slot: slots[i], temp: 0.8, seed: uint64(i)}
				parts = append(parts, part{seqs[i], len(prompts[i])})
				idx = append(idx, i)
			} else if seqs[i] != nil && len(got[i]) < 5 {
				seqs[i].tokens = append(seqs[i].tokens, gotTok[i][len(gotTok[i])-1])
				parts = append(parts, part{seqs[i], 1})
				idx = append(idx, i)
			}
		}
		if len(parts) == 0 {
			break
		}
		// Shuffle the order within the batch too.
		r.Shuffle(len(parts), func(a, b int) { parts[a], parts[b] = parts[b], parts[a]; idx[a], idx[b] = idx[b], idx[a] })
		l, tok := h.mustStep(parts...)
		for k, i := range idx {
			got[i] = append(got[i], l[k])
			gotTok[i] = append(gotTok[i], tok[k])
		}
	}
	for i := range slots {
		for k := range alone[i] {
			if !bitsEqual(alone[i][k], got[i][k]) {
				t.Errorf("sequence %d (slot %d) step %d: logits differ alone vs batched (%s)", i, slots[i], k, firstDiff(alone[i][k], got[i][k]))
			}
			if aloneTok[i][k] != gotTok[i][k] {
				t.Errorf("sequence %d step %d: token %d alone, %d batched", i, k, aloneTok[i][k], gotTok[i][k])
			}
		}
	}
}

// TestEngine_SlotReuse: loading Y into the slot X held gives exactly Y's
// results; clearing a slot gives exactly the base model's.
func TestEngine_SlotReuse(t *testing.T) {
	m := openModel(t, tinySpec(9))
	e := newEngine(t, m, testOptions())
	x := openAdapter(t, m, model.AdapterSpec{Rank: 16, Seed: 31})
	y := openAdapter(t, m, model.AdapterSpec{Rank: 4, Seed: 32, Modules: []model.Module{model.ModuleV, model.ModuleGate}})
	prompt := randomTokens(rand.New(rand.NewPCG(9, 9)), 9, 96)
	h := newHarness(t, e, 3)
	run := func(slot int) []float32 {
		s := &seq{tokens: prompt, slot: slot}
		l, _ := h.mustStep(part{s, len(prompt)})
		h.release(s)
		return l[0]
	}
	base := run(-1)
	if err := e.LoadAdapter(3, y); err != nil {
		t.Fatal(err)
	}
	yFresh := run(3)
	if err := e.LoadAdapter(1, x); err != nil {
		t.Fatal(err)
	}
	xRes := run(1)
	if bitsEqual(xRes, base) {
		t.Fatal("adapter X does not change the logits")
	}
	if err := e.LoadAdapter(1, y); err != nil {
		t.Fatal(err)
	}
	if got := run(1); !bitsEqual(got, yFresh) {
		t.Errorf("Y loaded over X differs from Y in a fresh slot (%s)", firstDiff(got, yFresh))
	}
	if err := e.ClearAdapter(1); err != nil {
		t.Fatal(err)
	}
	if got := run(1); !bitsEqual(got, base) {
		t.Errorf("a cleared slot differs from the base model (%s)", firstDiff(got, base))
	}
}

// TestEngine_LongSequence: a sequence spanning many scattered KV blocks
// matches the reference at its end, and two interleaved sequences do not
// disturb each other's caches.
func TestEngine_LongSequence(t *testing.T) {
	spec := tinySpec(10)
	m := openModel(t, spec)
	opts := testOptions()
	opts.KVBlockSize = 2
	e := newEngine(t, m, opts)
	ref := newRefModel(t, m)
	r := rand.New(rand.NewPCG(10, 10))
	a := &seq{tokens: randomTokens(r, 61, 96), slot: -1}
	b := &seq{tokens: randomTokens(r, 47, 96), slot: -1}
	h := newHarness(t, e, 4)
	var la, lb [][]float32
	for a.done < len(a.tokens) || b.done < len(b.tokens) {
		var parts []part
		if a.done < len(a.tokens) {
			parts = append(parts, part{a, min(7, len(a.tokens)-a.done)})
		}
		if b.done < len(b.tokens) {
			parts = append(parts, part{b, min(3, len(b.tokens)-b.done)})
		}
		l, _ := h.mustStep(parts...)
		if a.done == len(a.tokens) && la == nil {
			la = l[:1]
		}
		if b.done == len(b.tokens) && lb == nil {
			lb = l[len(l)-1:]
		}
	}
	if len(a.blocks) != 31 {
		t.Errorf("sequence a used %d blocks", len(a.blocks))
	}
	checkLogits(t, "a", la[0], ref.forward(a.tokens, nil)[60], 2e-5)
	checkLogits(t, "b", lb[0], ref.forward(b.tokens, nil)[46], 2e-5)
}

// TestEngine_YarnContext: a yarn model serves its original context times
// the factor (16 × 4) past max_position_embeddings (16), matching the
// reference there.
func TestEngine_YarnContext(t *testing.T) {
	spec := tinySpec(14)
	spec.MaxPosition = 16
	spec.Rope = &model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 16, BetaFast: 32, BetaSlow: 1,
		AttentionFactor: model.YarnMscale(4, 1), Truncate: true}
	m := openModel(t, spec)
	if n := m.Info().ContextLength; n != 64 {
		t.Fatalf("context %d, want 64", n)
	}
	e := newEngine(t, m, testOptions())
	ref := newRefModel(t, m)
	r := rand.New(rand.NewPCG(14, 14))
	s := &seq{tokens: randomTokens(r, 60, 96), slot: -1}
	h := newHarness(t, e, 5)
	var last []float32
	for s.done < len(s.tokens) {
		l, _ := h.mustStep(part{s, min(9, len(s.tokens)-s.done)})
		last = l[0]
	}
	checkLogits(t, "position 59", last, ref.forward(s.tokens, nil)[59], 5e-5)
}

// TestEngine_Sampling: greedy picks the reference's argmax; seeded sampling
// is deterministic and independent of the batch; logprobs and the top
// tokens follow log_softmax of the logits.
func TestEngine_Sampling(t *testing.T) {
	m := openModel(t, tinySpec(11))
	e := newEngine(t, m, testOptions())
	ref := newRefModel(t, m)
	r := rand.New(rand.NewPCG(11, 11))
	prompt := randomTokens(r, 10, 96)
	want := ref.forward(prompt, nil)[9]

	var b engine.Batch
	run := func(seqs ...engine.Seq) *engine.Batch {
		t.Helper()
		b.Reset(8, 5)
		b.Logits = true
		for i, s := range seqs {
			s.Blocks = []int32{int32(8 * i), int32(8*i + 1), int32(8*i + 2)}
			b.Add(s)
		}
		if err := e.Step(&b); err != nil {
			t.Fatal(err)
		}
		return &b
	}
	greedy := run(engine.Seq{Tokens: prompt, Slot: -1, Sample: true})
	if got := int(greedy.OutToken[0]); got != argmax64(want) {
		t.Errorf("greedy token %d, reference argmax %d", got, argmax64(want))
	}
	// log_softmax
	mx := want[argmax64(want)]
	var sum float64
	for _, v := range want {
		sum += math.Exp(v - mx)
	}
	lsm := func(tok int) float64 { return want[tok] - mx - math.Log(sum) }
	if d := math.Abs(float64(greedy.OutLogprob[0]) - lsm(int(greedy.OutToken[0]))); d > 1e-4 {
		t.Errorf("logprob %v, want %v", greedy.OutLogprob[0], lsm(int(greedy.OutToken[0])))
	}
	for k := 0; k < 5; k++ {
		tok := int(greedy.OutTopToken[k])
		if d := math.Abs(float64(greedy.OutTopLogprob[k]) - lsm(tok)); d > 1e-4 {
			t.Errorf("top %d: token %d logprob %v, want %v", k, tok, greedy.OutTopLogprob[k], lsm(tok))
		}
		if k > 0 && greedy.OutTopLogprob[k] > greedy.OutTopLogprob[k-1] {
			t.Errorf("top logprobs not in order: %v", greedy.OutTopLogprob[:5])
		}
	}
	if greedy.OutTopToken[0] != greedy.OutToken[0] {
		t.Errorf("top token %d differs from greedy %d", greedy.OutTopToken[0], greedy.OutToken[0])
	}
	// top_k 1 at any temperature is greedy.
	if got := run(engine.Seq{Tokens: prompt, Slot: -1, Sample: true, Temperature: 1.5, TopK: 1, Seed: 3}).OutToken[0]; int(got) != argmax64(want) {
		t.Errorf("top_k 1 token %d", got)
	}
	// Seeded draws: same seed, same token, whatever else is in the batch;
	// many seeds give more than one token at a high temperature.
	hot := engine.Seq{Tokens: prompt, Slot: -1, Sample: true, Temperature: 2, TopP: 0.95}
	seen := map[int32]bool{}
	for seed := uint64(0); seed < 24; seed++ {
		hot.Seed = seed
		first := run(hot).OutToken[0]
		other := engine.Seq{Tokens: prompt[:4], Slot: -1, Sample: true, Temperature: 1, Seed: 99}
		again := run(other, hot).OutToken[1]
		if first != again {
			t.Errorf("seed %d: token %d alone, %d in a batch", seed, first, again)
		}
		seen[first] = true
	}
	if len(seen) < 3 {
		t.Errorf("24 seeds at temperature 2 drew only %d distinct tokens", len(seen))
	}
	// top_p keeps the smallest prefix of the sorted distribution reaching p:
	// with a tiny p only the most likely token survives.
	for seed := uint64(0); seed < 8; seed++ {
		if got := run(engine.Seq{Tokens: prompt, Slot: -1, Sample: true, Temperature: 1, TopP: 1e-6, Seed: seed}).OutToken[0]; int(got) != argmax64(want) {
			t.Errorf("top_p 1e-6 seed %d drew %d", seed, got)
		}
	}
	// Logit adjustments: the argmax banned and a token raised; the draw,
	// the logprobs and the logits all see them, the neighbour without
	// adjustments does not.
	low := slices.Index(want, slices.Min(want))
	adj := map[int]float64{argmax64(want): -100, low: want[argmax64(want)] - want[low] + 2}
	var toks []int32
	var vals []float32
	for tok, v := range adj {
		toks, vals = append(toks, int32(tok)), append(vals, float32(v))
	}
	biased := run(engine.Seq{Tokens: prompt, Slot: -1, Sample: true, BiasTokens: toks, BiasValues: vals},
		engine.Seq{Tokens: prompt, Slot: -1, Sample: true})
	if got := int(biased.OutToken[0]); got != low {
		t.Errorf("adjusted greedy token %d, want the raised %d", got, low)
	}
	if got := int(biased.OutToken[1]); got != argmax64(want) {
		t.Errorf("the neighbour's greedy token %d, want %d", got, argmax64(want))
	}
	adjusted := slices.Clone(want)
	for tok, v := range adj {
		adjusted[tok] += v
	}
	var asum float64
	for _, v := range adjusted {
		asum += math.Exp(v - adjusted[low])
	}
	if w := -math.Log(asum); math.Abs(float64(biased.OutLogprob[0])-w) > 1e-4 {
		t.Errorf("adjusted logprob %v, want %v", biased.OutLogprob[0], w)
	}
	V := len(want)
	for tok, v := range adj {
		if d := float64(biased.OutLogits[tok]) - float64(biased.OutLogits[V+tok]); math.Abs(d-v) > 1e-3 {
			t.Errorf("token %d: adjusted logit differs from the neighbour's by %v, want %v", tok, d, v)
		}
	}
	// Token masks: two sequences given one mask share a row of it; a
	// third without one is untouched; every masked draw is allowed.
	mask := make([]uint32, (V+31)/32)
	for _, tok := range []int{3, low, 40} {
		if tok != argmax64(want) {
			mask[tok/32] |= 1 << (tok % 32)
		}
	}
	for seed := uint64(0); seed < 8; seed++ {
		m := run(engine.Seq{Tokens: prompt, Slot: -1, Sample: true, Temperature: 1.5, Seed: seed, Allow: mask},
			engine.Seq{Tokens: prompt, Slot: -1, Sample: true},
			engine.Seq{Tokens: prompt, Slot: -1, Sample: true, Temperature: 1.5, Seed: seed + 100, Allow: mask})
		if len(m.Allow) != len(mask) || !slices.Equal(m.SeqAllow, []int32{0, -1, 0}) {
			t.Fatalf("masks given: %d words, rows %v", len(m.Allow), m.SeqAllow)
		}
		for _, i := range []int{0, 2} {
			if tok := m.OutToken[i]; mask[tok/32]&(1<<(tok%32)) == 0 {
				t.Errorf("seed %d: sequence %d drew %d, not in its mask", seed, i, tok)
			}
			if lg := m.OutLogits[i*V+argmax64(want)]; !math.IsInf(float64(lg), -1) {
				t.Errorf("a masked-out token's logit is %v, want -inf", lg)
			}
		}
		if int(m.OutToken[1]) != argmax64(want) {
			t.Errorf("the unmasked neighbour drew %d", m.OutToken[1])
		}
	}
	// A batch whose adjustments do not add up is refused before the engine.
	b.Reset(8, 0)
	b.Add(engine.Seq{Tokens: prompt, Slot: -1, Sample: true, Blocks: []int32{0, 1, 2}, BiasTokens: toks[:1], BiasValues: vals[:1]})
	b.BiasValue = b.BiasValue[:0]
	if err := e.Step(&b); !errors.Is(err, engine.ErrInvalid) {
		t.Errorf("mismatched adjustments: %v, want ErrInvalid", err)
	}
	// A sequence that only fills its cache leaves its outputs untouched.
	b.Reset(8, 0)
	b.Add(engine.Seq{Tokens: prompt, Slot: -1, Blocks: []int32{0, 1, 2}})
	b.OutToken = append(b.OutToken[:0], -7)
	if err := e.Step(&b); err != nil {
		t.Fatal(err)
	}
	if b.OutToken[0] != -7 {
		t.Errorf("unsampled sequence's token was written: %d", b.OutToken[0])
	}
}

// TestEngine_Errors: bad input from Go reaches Go as typed errors carrying
// the library's message, and the engine keeps working afterwards.
// TestEngine_DynamicPastContext: dynamic NTK RoPE is default RoPE only up
// to max_position_embeddings, so an engine serving more is refused.
func TestEngine_DynamicPastContext(t *testing.T) {
	spec := tinySpec(13)
	spec.MaxPosition = 64
	spec.Rope = &model.RopeScaling{Type: model.RopeDynamic, Factor: 2}
	m := openModel(t, spec)
	opts := testOptions()
	opts.MaxPosition = 128
	if _, err := openLib(t).NewEngine(m, opts); err == nil || !strings.Contains(err.Error(), "dynamic NTK RoPE past max_position_embeddings") {
		t.Fatalf("err = %v", err)
	}
	opts.MaxPosition = 64
	newEngine(t, m, opts)
}

func TestEngine_Errors(t *testing.T) {
	m := openModel(t, tinySpec(12))
	e := newEngine(t, m, testOptions())
	prompt := []int32{1, 2, 3}
	good := engine.Seq{Tokens: prompt, Slot: -1, Blocks: []int32{0}, Sample: true}
	cases := []struct {
		name string
		seq  func(s *engine.Seq)
		want error
	}{
		{"TokenOutOfRange", func(s *engine.Seq) { s.Tokens = []int32{1, 96} }, engine.ErrInvalid},
		{"NegativeToken", func(s *engine.Seq) { s.Tokens = []int32{-1} }, engine.ErrInvalid},
		{"SlotOutOfRange", func(s *engine.Seq) { s.Slot = 4 }, engine.ErrInvalid},
		{"BlockOutOfRange", func(s *engine.Seq) { s.Blocks = []int32{128} }, engine.ErrInvalid},
		{"NoBlocks", func(s *engine.Seq) { s.Blocks = nil }, nil},
		{"NegativePosition", func(s *engine.Seq) { s.Pos = -1 }, engine.ErrInvalid},
		{"BadTopP", func(s *engine.Seq) { s.TopP = 1.5 }, engine.ErrInvalid},
		{"NegativeTemperature", func(s *engine.Seq) { s.Temperature = -1 }, engine.ErrInvalid},
	}
	var b engine.Batch
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.seq(&s)
			mb := 1
			if tc.name == "NoBlocks" {
				mb = 0 // a row with no block for 3 tokens
			}
			b.Reset(mb, 0)
			b.Add(s)
			err := e.Step(&b)
			want := tc.want
			if want == nil {
				want = engine.ErrInvalid
			}
			var ee *engine.Error
			if !errors.Is(err, want) || !errors.As(err, &ee) || ee.Call != "nz_step" || ee.Message == "" {
				t.Fatalf("Step error = %v, want %v from nz_step with a message", err, want)
			}
		})
	}
	t.Run("GoSideLengths", func(t *testing.T) {
		b.Reset(1, 0)
		b.Add(good)
		b.Tokens = b.Tokens[:2]
		if err := e.Step(&b); !errors.Is(err, engine.ErrInvalid) || !strings.Contains(err.Error(), "sum to 3") {
			t.Errorf("Step = %v", err)
		}
		b.Reset(1, engine.MaxTop+1)
		b.Add(good)
		if err := e.Step(&b); !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("Step = %v", err)
		}
	})
	t.Run("AdapterRankTooLarge", func(t *testing.T) {
		a := openAdapter(t, m, model.AdapterSpec{Rank: 32, Seed: 1})
		err := e.LoadAdapter(0, a)
		var ee *engine.Error
		if !errors.Is(err, engine.ErrInvalid) || !errors.As(err, &ee) || ee.Call != "nz_adapter_load" || ee.Message == "" {
			t.Fatalf("LoadAdapter = %v", err)
		}
	})
	t.Run("AdapterBadSlot", func(t *testing.T) {
		a := openAdapter(t, m, model.AdapterSpec{Rank: 4, Seed: 1})
		for _, slot := range []int{-1, 4} {
			if err := e.LoadAdapter(slot, a); !errors.Is(err, engine.ErrInvalid) {
				t.Errorf("slot %d: %v", slot, err)
			}
		}
		if err := e.ClearAdapter(9); !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("ClearAdapter(9) = %v", err)
		}
	})
	t.Run("AdapterWrongShape", func(t *testing.T) {
		a := openAdapter(t, m, model.AdapterSpec{Rank: 4, Seed: 1, Modules: []model.Module{model.ModuleQ}, Layers: []int{0}})
		bad := *a
		bad.LoRAs = append([]model.LoRA(nil), a.LoRAs...)
		bad.LoRAs[0].Module = model.ModuleGate // A is [4, 32] fits gate, B is [32, 4] but gate wants [64, 4]
		err := e.LoadAdapter(0, &bad)
		if !errors.Is(err, engine.ErrInvalid) {
			t.Fatalf("LoadAdapter = %v", err)
		}
		bad.LoRAs[0].Module = model.ModuleQ
		bad.LoRAs[0].Layer = 5
		if err := e.LoadAdapter(0, &bad); !errors.Is(err, engine.ErrInvalid) {
			t.Fatalf("layer 5: %v", err)
		}
	})
	t.Run("SetTensorWrongShape", func(t *testing.T) {
		w, _ := m.Weight(model.KindQ, 0)
		bad := w.Tensor
		bad.Shape = []int64{16, 64}
		err := e.SetTensor(model.KindQ, 0, bad)
		var ee *engine.Error
		if !errors.Is(err, engine.ErrInvalid) || !errors.As(err, &ee) || ee.Message == "" {
			t.Fatalf("SetTensor = %v", err)
		}
	})
	// Still serves after all that.
	b.Reset(1, 0)
	b.Add(good)
	if err := e.Step(&b); err != nil {
		t.Fatalf("Step after errors: %v", err)
	}
}

func TestEngine_MergeEquivalence(t *testing.T) {
	// A forward with the adapter in a slot equals the base model with the
	// adapter merged into its weights (W' = W + scale·B·A) via SetTensor.
	m := openModel(t, tinySpec(13))
	e := newEngine(t, m, testOptions())
	a := openAdapter(t, m, model.AdapterSpec{Rank: 8, Seed: 41})
	if err := e.LoadAdapter(0, a); err != nil {
		t.Fatal(err)
	}
	prompt := randomTokens(rand.New(rand.NewPCG(13, 13)), 8, 96)
	h := newHarness(t, e, 5)
	s := &seq{tokens: prompt, slot: 0}
	withSlot, _ := h.mustStep(part{s, len(prompt)})
	h.release(s)
	for _, l := range a.LoRAs {
		w, _ := m.Weight(l.Module.Kind(), l.Layer)
		merged, err := engine.Merge(w.Tensor, l)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SetTensor(l.Module.Kind(), l.Layer, merged); err != nil {
			t.Fatal(err)
		}
	}
	s = &seq{tokens: prompt, slot: -1}
	mergedLogits, _ := h.mustStep(part{s, len(prompt)})
	if e, at := logitsErr(mergedLogits[0], toF64(withSlot[0])); e > 1e-4 {
		t.Errorf("merged vs slot: relative error %.3g at %d", e, at)
	}
}

// logSoftmax64 is log_softmax of logits in float64.
func logSoftmax64(logits []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - m)
	}
	out := make([]float64, len(logits))
	for i, v := range logits {
		out[i] = float64(v) - m - math.Log(sum)
	}
	return out
}

// TestEngine_Scoring scores a prompt's tokens (prompt logprobs) in chunks,
// in a batch with a sampled sequence on another adapter, and checks each
// against the logits of the same prefix sampled on its own.
func TestEngine_Scoring(t *testing.T) {
	m := openModel(t, tinySpec(11))
	e := newEngine(t, m, testOptions())
	for slot, seed := range []uint64{4, 5} {
		if err := e.LoadAdapter(slot, openAdapter(t, m, model.AdapterSpec{Rank: 8, Seed: seed})); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarness(t, e, 3)
	r := rand.New(rand.NewPCG(9, 9))
	prompt := randomTokens(r, 19, 96)
	other := &seq{tokens: randomTokens(r, 12, 96), slot: 1}
	const nTop = 3

	// The reference: the logits after each prefix prompt[:k+1].
	want := make([][]float64, len(prompt)-1)
	for k := range want {
		s := &seq{tokens: prompt[:k+1], slot: 0}
		l, _ := h.mustStep(part{s, k + 1})
		want[k] = logSoftmax64(l[0])
		h.release(s)
	}

	s := &seq{tokens: prompt, slot: 0}
	got := make([]float32, len(prompt)-1)
	gotTop := make([][]int32, len(prompt)-1)
	for _, n := range []int{7, 5, 7} {
		var b engine.Batch
		b.Reset(h.maxBlocks, nTop)
		for len(s.blocks)*h.bs < s.done+n {
			s.blocks = append(s.blocks, h.free[len(h.free)-1])
			h.free = h.free[:len(h.free)-1]
		}
		score := make([]int32, n)
		for i := range score {
			score[i] = -1
			if p := s.done + i + 1; p < len(prompt) {
				score[i] = prompt[p]
			}
		}
		b.Add(engine.Seq{Tokens: other.tokens[other.done : other.done+1], Pos: other.done, Slot: other.slot, Blocks: append(other.blocks, h.free[0]), Sample: true})
		b.Add(engine.Seq{Tokens: prompt[s.done : s.done+n], Pos: s.done, Slot: s.slot, Blocks: s.blocks, Score: score})
		if err := e.Step(&b); err != nil {
			t.Fatal(err)
		}
		off := 1 // the other sequence's token comes first
		for i := range n {
			if p := s.done + i; p+1 < len(prompt) {
				got[p] = b.OutScoreLogprob[off+i]
				gotTop[p] = slices.Clone(b.OutScoreTopToken[(off+i)*nTop : (off+i+1)*nTop])
			}
		}
		s.done += n
	}
	for k, w := range want {
		target := prompt[k+1]
		if d := math.Abs(float64(got[k]) - w[target]); d > 1e-5 {
			t.Errorf("token %d (%d): scored logprob %v, want %v", k+1, target, got[k], w[target])
		}
		order := make([]int, len(w))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(i, j int) bool { return w[order[i]] > w[order[j]] })
		for j := range nTop {
			if int(gotTop[k][j]) != order[j] {
				t.Errorf("token %d: top %d is %d, want %d", k+1, j, gotTop[k][j], order[j])
			}
		}
	}

	// Rows of logits are bounded by MaxBatchSeqs (16): 17 scored tokens are refused.
	var b engine.Batch
	b.Reset(h.maxBlocks, 0)
	score := make([]int32, 18)
	for i := range score {
		score[i] = 1
	}
	score[17] = -1
	b.Add(engine.Seq{Tokens: prompt[:18], Pos: 0, Slot: -1, Blocks: s.blocks, Score: score})
	if err := e.Step(&b); !errors.Is(err, engine.ErrInvalid) || !strings.Contains(err.Error(), "rows of logits") {
		t.Errorf("17 scored tokens with max_batch_seqs 16: %v", err)
	}
}

// TestEngine_Int8Weights: int8 rows hold a bf16 checkpoint's matrices in
// half its bytes (plus a scale per row), and the logits stay near the bf16
// engine's.
func TestEngine_Int8Weights(t *testing.T) {
	openLib(t)
	spec := tinySpec(31)
	spec.DType = safetensors.BF16
	m := openModel(t, spec)
	full := newEngine(t, m, testOptions())
	opts := testOptions()
	opts.WeightDType = engine.Int8
	q := newEngine(t, m, opts)
	fb, qb := full.Info().WeightBytes, q.Info().WeightBytes
	c := m.Config
	rows := int64(c.VocabSize) // embedding (tied or not, the LM head's rows too)
	if !m.Tied {
		rows *= 2
	}
	rows += int64(c.NumLayers) * int64(c.NumHeads*c.HeadDim+2*c.NumKVHeads*c.HeadDim+c.HiddenSize+2*c.IntermediateSize+c.HiddenSize)
	if qb >= fb*6/10 || qb < fb/2 {
		t.Errorf("int8 weights take %d bytes against bf16's %d", qb, fb)
	}
	if slack := qb - fb/2; slack < 4*rows {
		t.Errorf("int8 weights: %d bytes past half of bf16's, want at least a 4-byte scale for each of %d rows", slack, rows)
	}
	// The same prompt decoded greedily by both: the int8 logits stay near.
	hf, hq := newHarness(t, full, 1), newHarness(t, q, 1)
	tokens := randomTokens(rand.New(rand.NewPCG(31, 1)), 12, spec.VocabSize)
	sf, sq := &seq{tokens: tokens, slot: -1}, &seq{tokens: tokens, slot: -1}
	lf, _ := hf.mustStep(part{sf, len(tokens)})
	lq, _ := hq.mustStep(part{sq, len(tokens)})
	want := make([]float64, len(lf[0]))
	for i, v := range lf[0] {
		want[i] = float64(v)
	}
	if d, _ := logitsErr(lq[0], want); d == 0 || d > 3e-2 {
		t.Errorf("int8 logits differ from bf16's by %.3g, want (0, 0.03]", d)
	}
}
