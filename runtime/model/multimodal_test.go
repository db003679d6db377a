package model_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// rewriteSafetensors writes src's tensors to dst renamed by rename, plus
// extra (a vision tower's, say).
func rewriteSafetensors(t *testing.T, src, dst string, rename func(string) string, extra ...safetensors.Tensor) {
	t.Helper()
	f, err := safetensors.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ts []safetensors.Tensor
	for _, x := range f.Tensors() {
		x.Name = rename(x.Name)
		ts = append(ts, x)
	}
	ts = append(ts, extra...)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMultimodal_LanguageModel: a Gemma3ForConditionalGeneration or
// Mistral3ForConditionalGeneration checkpoint (text_config nested,
// language-model weights under either transformers layout, a vision tower
// and projector beside them) loads as the same language model as the
// text-only checkpoint it was made from, and adapters trained on it
// (module paths under the language model, LoRA on the vision tower too)
// load as the same LoRAs, the vision tower's left out with a warning.
func TestMultimodal_LanguageModel(t *testing.T) {
	for _, tc := range []struct {
		name, arch, modelType, textArch string
		spec                            model.Spec
		vision                          string // a vision tower's tensor
	}{
		{"Gemma3", model.ArchGemma3Multimodal, "gemma3", model.ArchGemma3,
			model.Spec{Arch: "gemma3_text", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 3, NumHeads: 4, NumKVHeads: 1,
				HeadDim: 16, Tied: true, SlidingWindow: 5, SlidingWindowPattern: 3, Seed: 9001, DType: safetensors.BF16},
			"vision_tower.vision_model.post_layernorm.weight"},
		// Mistral Small 3.1's shape: head_dim apart from hidden/heads, no
		// window, untied
		{"Mistral3", model.ArchMistral3Multimodal, "mistral3", model.ArchMistral,
			model.Spec{Arch: "mistral", VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
				HeadDim: 16, RopeTheta: 1e9, Seed: 9011, DType: safetensors.BF16},
			"multi_modal_projector.patch_merger.merging_layer.weight"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testMultimodal(t, tc.arch, tc.modelType, tc.textArch, tc.spec, tc.vision)
		})
	}
}

func testMultimodal(t *testing.T, arch, modelType, textArch string, spec model.Spec, visionName string) {
	textDir := filepath.Join(t.TempDir(), "text")
	if err := model.WriteRandomModel(textDir, spec); err != nil {
		t.Fatal(err)
	}
	text, err := model.Open(textDir)
	if err != nil {
		t.Fatal(err)
	}
	defer text.Close()
	adapterDir := filepath.Join(t.TempDir(), "lora")
	if err := model.WriteRandomAdapter(adapterDir, model.AdapterSpec{Base: text.Info(), Rank: 4, Alpha: 8, Seed: 9002}); err != nil {
		t.Fatal(err)
	}
	textLoRA, err := text.LoadAdapter(adapterDir, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer textLoRA.Close()

	var textCfg map[string]any
	b, err := os.ReadFile(filepath.Join(textDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &textCfg); err != nil {
		t.Fatal(err)
	}
	eos := textCfg["eos_token_id"]
	for _, k := range []string{"architectures", "eos_token_id", "bos_token_id", "torch_dtype", "_name_or_path"} {
		delete(textCfg, k)
	}
	outer := map[string]any{"architectures": []string{arch}, "model_type": modelType, "eos_token_id": eos,
		"torch_dtype": "bfloat16", "text_config": textCfg, "vision_config": map[string]any{"hidden_size": 8}}
	vision := safetensors.Tensor{Name: visionName, DType: safetensors.BF16, Shape: []int64{8}, Data: make([]byte, 16)}

	for _, layout := range []struct{ name, model, head string }{
		{"before 4.52", "language_model.model.", "language_model.lm_head."},
		{"4.52 on", "model.language_model.", "lm_head."},
	} {
		t.Run(layout.name, func(t *testing.T) {
			dir := t.TempDir()
			cb, _ := json.Marshal(outer)
			if err := os.WriteFile(filepath.Join(dir, "config.json"), cb, 0o644); err != nil {
				t.Fatal(err)
			}
			rewriteSafetensors(t, filepath.Join(textDir, model.WeightsFile), filepath.Join(dir, model.WeightsFile), func(n string) string {
				if h, ok := strings.CutPrefix(n, "lm_head."); ok {
					return layout.head + h
				}
				return layout.model + strings.TrimPrefix(n, "model.")
			}, vision)
			mm, err := model.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer mm.Close()
			if mm.Config.LanguageModelOf != arch || mm.Config.Architecture != textArch {
				t.Fatalf("config %+v", mm.Config)
			}
			if len(mm.Weights()) != len(text.Weights()) {
				t.Fatalf("%d weights, want %d", len(mm.Weights()), len(text.Weights()))
			}
			for _, w := range text.Weights() {
				got, ok := mm.Weight(w.Kind, w.Layer)
				if !ok || !bytes.Equal(got.Data, w.Data) {
					t.Fatalf("weight %s differs", w.Name)
				}
			}

			// The adapter as PEFT saves it for the multimodal model.
			ad := filepath.Join(t.TempDir(), "lora")
			if err := os.MkdirAll(ad, 0o755); err != nil {
				t.Fatal(err)
			}
			cfg, err := os.ReadFile(filepath.Join(adapterDir, nozzle.AdapterConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ad, nozzle.AdapterConfigFile), cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			vA := safetensors.Tensor{Name: "base_model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
				DType: safetensors.F32, Shape: []int64{4, 8}, Data: make([]byte, 4*8*4)}
			vB := vA
			vB.Name, vB.Shape = strings.Replace(vA.Name, "lora_A", "lora_B", 1), []int64{8, 4}
			rewriteSafetensors(t, filepath.Join(adapterDir, nozzle.AdapterWeightsFile), filepath.Join(ad, nozzle.AdapterWeightsFile), func(n string) string {
				return strings.Replace(n, "base_model.model.model.", "base_model.model."+layout.model, 1)
			}, vA, vB)
			a, err := mm.LoadAdapter(ad, 64)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if len(a.LoRAs) != len(textLoRA.LoRAs) {
				t.Fatalf("%d LoRAs, want %d", len(a.LoRAs), len(textLoRA.LoRAs))
			}
			for i, l := range textLoRA.LoRAs {
				g := a.LoRAs[i]
				if g.Layer != l.Layer || g.Module != l.Module || g.Scale != l.Scale || !bytes.Equal(g.A.Data, l.A.Data) || !bytes.Equal(g.B.Data, l.B.Data) {
					t.Fatalf("LoRA %d differs: layer %d module %v", i, g.Layer, g.Module)
				}
			}
			if w := strings.Join(a.Manifest.Warnings, "\n"); !strings.Contains(w, "vision tower") || !strings.Contains(w, "left out") {
				t.Errorf("warnings %q", a.Manifest.Warnings)
			}
		})
	}
}

// mistralSmall31Config is Mistral-Small-3.1-24B-Instruct-2503's
// config.json, its vision config shortened.
const mistralSmall31Config = `{
  "architectures": ["Mistral3ForConditionalGeneration"],
  "image_token_index": 10,
  "model_type": "mistral3",
  "multimodal_projector_bias": false,
  "projector_hidden_act": "gelu",
  "spatial_merge_size": 2,
  "text_config": {
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "intermediate_size": 32768,
    "max_position_embeddings": 131072, "model_type": "mistral", "num_attention_heads": 32,
    "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_theta": 1000000000.0, "sliding_window": null, "vocab_size": 131072
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0",
  "vision_config": {"head_dim": 64, "hidden_size": 1024, "image_size": 1540, "model_type": "pixtral", "num_hidden_layers": 24, "patch_size": 14},
  "vision_feature_layer": -1
}`

// TestParseConfig_Mistral3: Mistral Small 3.1's config parses as its
// Mistral language model: head_dim 128 of hidden 5120 over 32 heads, no
// sliding window (null), rope_theta 1e9, the outer dtype; a text_config
// that leaves fields out gets MistralConfig's defaults (a 4096 window).
func TestParseConfig_Mistral3(t *testing.T) {
	c, err := model.ParseConfig([]byte(mistralSmall31Config))
	if err != nil {
		t.Fatal(err)
	}
	if c.Architecture != model.ArchMistral || c.LanguageModelOf != model.ArchMistral3Multimodal || c.HiddenSize != 5120 ||
		c.NumLayers != 40 || c.NumHeads != 32 || c.NumKVHeads != 8 || c.HeadDim != 128 || c.VocabSize != 131072 ||
		c.SlidingWindow != 0 || c.RopeTheta != 1e9 || c.MaxPositionEmbeddings != 131072 || c.TieWordEmbeddings ||
		c.RMSNormEps != 1e-5 || c.DType != safetensors.BF16 {
		t.Errorf("%+v", c)
	}
	c, err = model.ParseConfig([]byte(`{"model_type":"mistral3","text_config":{"hidden_size":64,"num_attention_heads":16,"num_hidden_layers":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.SlidingWindow != 4096 || c.NumKVHeads != 8 || c.IntermediateSize != 14336 || c.VocabSize != 32000 || c.LanguageModelOf != model.ArchMistral3Multimodal {
		t.Errorf("defaults: %+v", c)
	}
	if _, err := model.ParseConfig([]byte(`{"architectures":["Mistral3ForConditionalGeneration"]}`)); err == nil || !strings.Contains(err.Error(), "Mistral3ForConditionalGeneration config has no text_config") {
		t.Errorf("no text_config: %v", err)
	}
}
