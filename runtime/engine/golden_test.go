package engine_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// The golden files come from an independent PyTorch implementation of the
// Hugging Face and PEFT conventions (testdata/golden.py) run on fixture
// models and adapters made by this package's generator:
//
//	go test ./runtime/engine -run TestGolden -update-fixtures   # testdata/models
//	/usr/bin/python3 runtime/engine/testdata/golden.py          # testdata/golden.json
var updateFixtures = flag.Bool("update-fixtures", false, "rewrite the fixture models and adapters under testdata/models")

type fixture struct {
	name     string
	spec     model.Spec
	adapters map[string]model.AdapterSpec
}

func fixtures() []fixture {
	return []fixture{
		{
			name: "llama",
			spec: model.Spec{VocabSize: 64, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, DType: safetensors.F32, Seed: 1001},
			adapters: map[string]model.AdapterSpec{
				"adapter-a": {Rank: 4, Alpha: 8, Seed: 1002},
				"adapter-b": {Rank: 6, Alpha: 10, RSLoRA: true, Seed: 1003, DType: safetensors.BF16,
					Modules:      []model.Module{model.ModuleQ, model.ModuleV, model.ModuleO, model.ModuleDown},
					RankPattern:  []model.Pattern{{Key: "v_proj", Value: 2}, {Key: `model\.layers\.1\.self_attn\.o_proj`, Value: 5}},
					AlphaPattern: []model.Pattern{{Key: "model.layers.0.self_attn.q_proj", Value: 30}, {Key: "q_proj", Value: 3}}},
			},
		},
		{
			name: "qwen2-bf16",
			spec: model.Spec{Arch: "qwen2", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
				HeadDim: 16, Tied: true, SlidingWindow: 4, MaxWindowLayers: 1, RopeTheta: 1e6, DType: safetensors.BF16, Seed: 2001},
			adapters: map[string]model.AdapterSpec{
				"adapter-c": {Rank: 8, Alpha: 4, Seed: 2002, DType: safetensors.F16, Modules: []model.Module{model.ModuleK, model.ModuleGate, model.ModuleUp}},
				// An f32 adapter with a large rsLoRA scale on a bf16 model: its
				// weights must not be rounded to the model's dtype.
				"adapter-d": {Rank: 4, Alpha: 64, RSLoRA: true, Seed: 2003, DType: safetensors.F32},
			},
		},
		{
			// Qwen3: RMS norms of each q and k head before RoPE, no biases,
			// head_dim apart from hidden_size / heads.
			name: "qwen3-bf16",
			spec: model.Spec{Arch: "qwen3", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
				HeadDim: 16, RopeTheta: 1e6, RMSNormEps: 1e-6, DType: safetensors.BF16, Seed: 5001},
			adapters: map[string]model.AdapterSpec{
				"adapter-e": {Rank: 8, Alpha: 16, Seed: 5002, DType: safetensors.BF16},
			},
		},
		{
			// Phi-3: q/k/v and gate/up fused in the checkpoint and in the
			// adapter (qkv_proj, gate_up_proj), a sliding window.
			name: "phi3-f16",
			spec: model.Spec{Arch: "phi3", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
				SlidingWindow: 6, DType: safetensors.F16, Seed: 6001},
			adapters: map[string]model.AdapterSpec{
				"adapter-f": {Rank: 8, Alpha: 16, Seed: 6002, DType: safetensors.F32},
				"adapter-g": {Rank: 4, Alpha: 8, Seed: 6003, DType: safetensors.BF16, Modules: []model.Module{model.ModuleV, model.ModuleUp}},
			},
		},
		{
			// Gemma 2: norms of (1 + w) before and after attention and MLP,
			// scaled embeddings, GELU(tanh), query_pre_attn_scalar apart
			// from head_dim, soft-capped scores and logits (caps small
			// enough to bend these), even layers sliding.
			name: "gemma2-bf16",
			spec: model.Spec{Arch: "gemma2", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
				HeadDim: 16, Tied: true, SlidingWindow: 4, QueryPreAttnScalar: 24, AttnSoftcap: 2, FinalSoftcap: 3,
				RMSNormEps: 1e-6, DType: safetensors.BF16, Seed: 7001},
			adapters: map[string]model.AdapterSpec{
				"adapter-h": {Rank: 8, Alpha: 16, Seed: 7002, DType: safetensors.BF16},
			},
		},
		{
			// Gemma 3: Gemma 2's layer plus q/k head norms, two sliding
			// layers then a full one, local RoPE base on the sliding layers
			// and linear scaling on the full one, no soft-caps.
			name: "gemma3-bf16",
			spec: model.Spec{Arch: "gemma3_text", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 3, NumHeads: 4, NumKVHeads: 1,
				HeadDim: 16, Tied: true, SlidingWindow: 5, SlidingWindowPattern: 3, RopeTheta: 1e6, RopeLocalTheta: 1e4,
				Rope: &model.RopeScaling{Type: model.RopeLinear, Factor: 2}, RMSNormEps: 1e-6, DType: safetensors.BF16, Seed: 8001},
			adapters: map[string]model.AdapterSpec{
				"adapter-i": {Rank: 4, Alpha: 8, RSLoRA: true, Seed: 8002, DType: safetensors.F32,
					Modules: []model.Module{model.ModuleQ, model.ModuleV, model.ModuleGate, model.ModuleDown}},
			},
		},
		{
			// Phi-4-mini's RoPE: longrope over the first 12 of 16 dims of
			// each head (partial_rotary_factor 0.75), 64 positions over an
			// original context of 4, so every prompt runs on the long
			// factors with the default attention factor √3.
			name: "phi4-longrope-bf16",
			spec: model.Spec{Arch: "phi3", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 2, NumKVHeads: 1,
				PartialRotaryFactor: 0.75, MaxPosition: 64, Rope: longropeSpec(6, 4, model.LongropeAttention(64, 4)),
				DType: safetensors.BF16, Seed: 9001},
			adapters: map[string]model.AdapterSpec{
				"adapter-j": {Rank: 8, Alpha: 16, Seed: 9002, DType: safetensors.BF16},
			},
		},
		{
			name: "llama3-sharded",
			spec: model.Spec{VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 2, NumKVHeads: 1, HeadDim: 16,
				AttentionBias: true, MLPBias: true, RopeTheta: 500000, Shards: 2, DType: safetensors.F16, Seed: 3001,
				Rope: &model.RopeScaling{Type: model.RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 64}},
		},
		{
			name: "mistral-linear",
			spec: model.Spec{Arch: "mistral", VocabSize: 64, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 1,
				SlidingWindow: 5, RopeParameters: true, Rope: &model.RopeScaling{Type: model.RopeLinear, Factor: 2}, DType: safetensors.F32, Seed: 4001},
		},
	}
}

func writeFixtures(t *testing.T) {
	for _, f := range fixtures() {
		dir := filepath.Join("testdata", "models", f.name)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		spec := f.spec
		spec.NameOrPath = "nozzle-test/" + f.name
		if err := model.WriteRandomModel(dir, spec); err != nil {
			t.Fatal(err)
		}
		info := spec.Info()
		info.ID = f.name
		for name, as := range f.adapters {
			as.Base = info
			if err := model.WriteRandomAdapter(filepath.Join(dir, name), as); err != nil {
				t.Fatal(err)
			}
		}
	}
}

type goldenCase struct {
	Model     string      `json:"model"`
	Adapter   string      `json:"adapter"`
	Prompt    []int32     `json:"prompt"`
	Positions []int       `json:"positions"`
	Logits    [][]float64 `json:"logits"`
	Greedy    []int32     `json:"greedy"`
}

type goldenFile struct {
	Generator string       `json:"generator"`
	Cases     []goldenCase `json:"cases"`
}

// TestGolden compares the engine with logits and greedy continuations that
// PyTorch computed from the fixture files.
func TestGolden(t *testing.T) {
	if *updateFixtures {
		writeFixtures(t)
		t.Log("fixtures written; now run /usr/bin/python3 runtime/engine/testdata/golden.py")
		return
	}
	b, err := os.ReadFile(filepath.Join("testdata", "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 {
		t.Fatal("no golden cases")
	}
	lib := openLib(t)
	// How an engine keeps the weights and the KV cache.
	type keep struct {
		wdt   safetensors.DType // "": the stored dtype
		kvF32 bool
	}
	type loaded struct {
		m       *model.Model
		engines map[keep]*engine.Engine
		slots   map[string]int
	}
	models := map[string]*loaded{}
	get := func(t *testing.T, name string, k keep) (*model.Model, *engine.Engine, map[string]int) {
		ld := models[name]
		if ld == nil {
			m, err := model.Open(filepath.Join("testdata", "models", name))
			if err != nil {
				t.Fatal(err)
			}
			ld = &loaded{m: m, engines: map[keep]*engine.Engine{}, slots: map[string]int{}}
			models[name] = ld
		}
		e := ld.engines[k]
		if e == nil {
			opts := testOptions()
			opts.WeightDType, opts.KVF32 = k.wdt, k.kvF32
			e, err = lib.NewEngine(ld.m, opts)
			if err != nil {
				t.Fatal(err)
			}
			ld.engines[k] = e
			for _, f := range fixtures() {
				if f.name != name {
					continue
				}
				names := make([]string, 0, len(f.adapters))
				for an := range f.adapters {
					names = append(names, an)
				}
				sort.Strings(names)
				for slot, an := range names {
					a, err := model.LoadAdapter(filepath.Join("testdata", "models", name, an), ld.m.Info(), 16)
					if err != nil {
						t.Fatal(err)
					}
					if err := e.LoadAdapter(slot, a); err != nil {
						t.Fatal(err)
					}
					a.Close()
					ld.slots[an] = slot
				}
			}
		}
		return ld.m, e, ld.slots
	}
	defer func() {
		for _, ld := range models {
			for _, e := range ld.engines {
				e.Close()
			}
			ld.m.Close()
		}
	}()
	for i, c := range g.Cases {
		for _, k := range []keep{{safetensors.F32, false}, {"", true}, {"", false}} {
			kn := map[keep]string{{safetensors.F32, false}: "f32", {"", true}: "stored", {"", false}: "stored-kv16"}[k]
			name := fmt.Sprintf("%d-%s-%s-%s", i, c.Model, c.Adapter, kn)
			t.Run(name, func(t *testing.T) {
				m, e, slots := get(t, c.Model, k)
				// The engine computes in f32 on the stored weights, adapters
				// included, whatever the model's dtype: as tight for a bf16
				// model as for an f32 one, with the KV cache in f32. A
				// 16-bit model's KV cache in its dtype (the default) rounds
				// every key and value once, as transformers does: the logits
				// move by up to about 1%, and the greedy tokens may part.
				tol := 5e-5
				kv16 := !k.kvF32 && k.wdt == "" && m.DType != safetensors.F32
				if kv16 {
					tol = 1.5e-2
				}
				slot := -1
				if c.Adapter != "" {
					slot = slots[c.Adapter]
				}
				h := newHarness(t, e, uint64(i))
				s := &seq{tokens: append([]int32(nil), c.Prompt...), slot: slot}
				// Prefill up to the first golden position, then decode.
				var tok []int32
				for k, p := range c.Positions {
					var logits [][]float32
					logits, tok = h.mustStep(part{s, p + 1 - s.done})
					checkLogits(t, fmt.Sprintf("position %d", p), logits[0], c.Logits[k], tol)
				}
				if s.done != len(c.Prompt) {
					t.Fatalf("golden positions end at %d, prompt has %d tokens", s.done, len(c.Prompt))
				}
				// Greedy continuation: the last position's token, then decode.
				got := []int32{tok[0]}
				for len(got) < len(c.Greedy) {
					s.tokens = append(s.tokens, got[len(got)-1])
					_, tok = h.mustStep(part{s, 1})
					got = append(got, tok[0])
				}
				for k := range got {
					if got[k] != c.Greedy[k] && !kv16 {
						t.Errorf("greedy continuation %v, want %v", got, c.Greedy)
						break
					}
				}
			})
		}
	}
	// One mixed batch of every case of the first model: each sequence's
	// last golden logits must come out as when run alone.
	t.Run("MixedBatch", func(t *testing.T) {
		_, e, slots := get(t, "llama", keep{wdt: safetensors.F32})
		h := newHarness(t, e, 99)
		var parts []part
		var want [][]float64
		for _, c := range g.Cases {
			if c.Model != "llama" {
				continue
			}
			slot := -1
			if c.Adapter != "" {
				slot = slots[c.Adapter]
			}
			last := c.Positions[len(c.Positions)-1]
			parts = append(parts, part{&seq{tokens: c.Prompt[:last+1], slot: slot}, last + 1})
			want = append(want, c.Logits[len(c.Logits)-1])
		}
		if len(parts) < 3 {
			t.Fatalf("only %d llama cases", len(parts))
		}
		logits, _ := h.mustStep(parts...)
		for i := range parts {
			checkLogits(t, fmt.Sprintf("sequence %d", i), logits[i], want[i], 5e-5)
		}
	})
}

// TestReference_MatchesGolden checks the Go float64 reference against the
// PyTorch goldens, so the two independent implementations vouch for each
// other (the engine is checked against both).
func TestReference_MatchesGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenFile
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for i, c := range g.Cases {
		t.Run(fmt.Sprintf("%d-%s-%s", i, c.Model, c.Adapter), func(t *testing.T) {
			m, err := model.Open(filepath.Join("testdata", "models", c.Model))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var ad refAdapter
			if c.Adapter != "" {
				a, err := model.LoadAdapter(filepath.Join("testdata", "models", c.Model, c.Adapter), m.Info(), 16)
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				ad = newRefAdapter(t, a)
			}
			ref := newRefModel(t, m)
			tokens := append([]int32(nil), c.Prompt...)
			logits := ref.forward(tokens, ad)
			for k, p := range c.Positions {
				for j, w := range c.Logits[k] {
					if d := logits[p][j] - w; d > 1e-7 || d < -1e-7 {
						t.Fatalf("position %d token %d: Go reference %v, PyTorch %v", p, j, logits[p][j], w)
					}
				}
			}
			for _, want := range c.Greedy {
				l := ref.forward(tokens, ad)
				got := argmax64(l[len(l)-1])
				if int32(got) != want {
					t.Fatalf("greedy %d, PyTorch %d", got, want)
				}
				tokens = append(tokens, want)
			}
		})
	}
}
