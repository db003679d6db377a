package model_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

func TestParseConfig(t *testing.T) {
	base := `"hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":8`
	tests := []struct {
		name  string
		json  string
		check func(t *testing.T, c *model.Config)
	}{
		{"LlamaDefaults", `{"architectures":["LlamaForCausalLM"],` + base + `}`, func(t *testing.T, c *model.Config) {
			want := model.Config{Architecture: model.ArchLlama, VocabSize: 32000, HiddenSize: 64, IntermediateSize: 128, NumLayers: 4, NumHeads: 8, NumKVHeads: 8, HeadDim: 8, RotaryDim: 8,
				MaxPositionEmbeddings: 2048, RMSNormEps: 1e-6, RopeTheta: 10000, RopeScaling: model.RopeScaling{Type: "default", Factor: 1}, HiddenAct: model.ActSilu, BOSTokenID: -1, PadTokenID: -1}
			if !reflect.DeepEqual(*c, want) {
				t.Errorf("got  %+v\nwant %+v", *c, want)
			}
		}},
		{"ModelTypeOnly", `{"model_type":"qwen2",` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.Architecture != model.ArchQwen2 || c.VocabSize != 151936 || !c.QKVBias || c.OBias || c.SlidingWindow != 0 {
				t.Errorf("%+v", c)
			}
		}},
		// Qwen3-0.6B's config.json as published.
		{"Qwen3", `{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"bos_token_id":151643,"eos_token_id":151645,
			"head_dim":128,"hidden_act":"silu","hidden_size":1024,"initializer_range":0.02,"intermediate_size":3072,"max_position_embeddings":40960,
			"max_window_layers":28,"model_type":"qwen3","num_attention_heads":16,"num_hidden_layers":28,"num_key_value_heads":8,"rms_norm_eps":1e-06,
			"rope_scaling":null,"rope_theta":1000000,"sliding_window":null,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
			"transformers_version":"4.51.0","use_cache":true,"use_sliding_window":false,"vocab_size":151936}`, func(t *testing.T, c *model.Config) {
			if c.Architecture != model.ArchQwen3 || !c.QKNorm || c.QKVBias || c.OBias || c.MLPBias || c.HeadDim != 128 || c.NumKVHeads != 8 ||
				c.SlidingWindow != 0 || !c.TieWordEmbeddings || c.MaxPositionEmbeddings != 40960 || c.RopeTheta != 1e6 || c.DType != safetensors.BF16 {
				t.Errorf("%+v", c)
			}
		}},
		// Phi-3-mini-4k-instruct's config.json as published (auto_map aside).
		{"Phi3Mini", `{"_name_or_path":"Phi-3-mini-4k-instruct","architectures":["Phi3ForCausalLM"],"attention_dropout":0.0,"bos_token_id":1,
			"embd_pdrop":0.0,"eos_token_id":32000,"hidden_act":"silu","hidden_size":3072,"initializer_range":0.02,"intermediate_size":8192,
			"max_position_embeddings":4096,"model_type":"phi3","num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":32,
			"original_max_position_embeddings":4096,"pad_token_id":32000,"resid_pdrop":0.0,"rms_norm_eps":1e-05,"rope_scaling":null,
			"rope_theta":10000.0,"sliding_window":2047,"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.40.2",
			"use_cache":true,"vocab_size":32064}`, func(t *testing.T, c *model.Config) {
			if c.Architecture != model.ArchPhi3 || !model.Fused(c.Architecture) || c.QKVBias || c.QKNorm || c.HeadDim != 96 || c.SlidingWindow != 2047 ||
				c.SlidingWindowFromLayer != 0 || c.RMSNormEps != 1e-5 || c.VocabSize != 32064 || c.TieWordEmbeddings || c.MaxPositionEmbeddings != 4096 {
				t.Errorf("%+v", c)
			}
		}},
		{"Phi3Defaults", `{"model_type":"phi3",` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.Architecture != model.ArchPhi3 || c.VocabSize != 32064 || c.SlidingWindow != 0 || c.RMSNormEps != 1e-5 || c.MaxPositionEmbeddings != 4096 {
				t.Errorf("%+v", c)
			}
		}},
		// Qwen3Config's defaults: head_dim 128 whatever hidden_size / heads
		// is, attention_bias adds q/k/v and o biases.
		{"Qwen3Defaults", `{"model_type":"qwen3","attention_bias":true,` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.Architecture != model.ArchQwen3 || c.HeadDim != 128 || c.VocabSize != 151936 || c.MaxPositionEmbeddings != 32768 ||
				!c.QKNorm || !c.QKVBias || !c.OBias {
				t.Errorf("%+v", c)
			}
		}},
		{"MistralDefaults", `{"architectures":["MistralForCausalLM"],` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.NumKVHeads != 8 || c.SlidingWindow != 4096 || c.SlidingWindowFromLayer != 0 || c.MaxPositionEmbeddings != 131072 {
				t.Errorf("%+v", c)
			}
		}},
		{"MistralNullWindow", `{"architectures":["MistralForCausalLM"],"sliding_window":null,"num_key_value_heads":2,` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.NumKVHeads != 2 || c.SlidingWindow != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{"Qwen2Window", `{"architectures":["Qwen2ForCausalLM"],"use_sliding_window":true,"sliding_window":16,"max_window_layers":2,` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.SlidingWindow != 16 || c.SlidingWindowFromLayer != 2 || c.SlidingLayer(1) || !c.SlidingLayer(2) {
				t.Errorf("%+v", c)
			}
		}},
		{"Qwen2WindowOff", `{"architectures":["Qwen2ForCausalLM"],"use_sliding_window":false,"sliding_window":16,"max_window_layers":2,` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.SlidingWindow != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{"Qwen2WindowPastLayers", `{"architectures":["Qwen2ForCausalLM"],"use_sliding_window":true,"sliding_window":16,` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.SlidingWindow != 0 { // max_window_layers 28 > 4 layers
				t.Errorf("%+v", c)
			}
		}},
		{"LayerTypes", `{"architectures":["Qwen2ForCausalLM"],"use_sliding_window":true,"sliding_window":16,"layer_types":["full_attention","sliding_attention","sliding_attention","sliding_attention"],` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.SlidingWindow != 16 || c.SlidingWindowFromLayer != 1 {
				t.Errorf("%+v", c)
			}
		}},
		{"HeadDimAndBiases", `{"architectures":["LlamaForCausalLM"],"head_dim":16,"attention_bias":true,"mlp_bias":true,"tie_word_embeddings":true,"torch_dtype":"float16",` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.HeadDim != 16 || !c.QKVBias || !c.OBias || !c.MLPBias || !c.TieWordEmbeddings || c.DType != safetensors.F16 {
				t.Errorf("%+v", c)
			}
		}},
		{"DTypeV5", `{"architectures":["LlamaForCausalLM"],"dtype":"bfloat16","torch_dtype":"float32",` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.DType != safetensors.BF16 {
				t.Errorf("dtype %s", c.DType)
			}
		}},
		{"Llama3Rope", `{"architectures":["LlamaForCausalLM"],"rope_theta":500000,"rope_scaling":{"rope_type":"llama3","factor":32,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192},` + base + `}`, func(t *testing.T, c *model.Config) {
			want := model.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}
			if !reflect.DeepEqual(c.RopeScaling, want) || c.RopeTheta != 500000 {
				t.Errorf("%+v", c.RopeScaling)
			}
		}},
		{"LinearRopeOldKey", `{"architectures":["LlamaForCausalLM"],"rope_scaling":{"type":"linear","factor":2},` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.RopeScaling.Type != "linear" || c.RopeScaling.Factor != 2 {
				t.Errorf("%+v", c.RopeScaling)
			}
		}},
		{"DynamicNTK", `{"architectures":["LlamaForCausalLM"],"rope_scaling":{"type":"dynamic","factor":2},` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.RopeScaling.Type != model.RopeDynamic || c.RopeScaling.Factor != 2 {
				t.Errorf("%+v", c.RopeScaling)
			}
		}},
		{"RopeParametersV5", `{"architectures":["LlamaForCausalLM"],"rope_parameters":{"rope_theta":1000000,"rope_type":"linear","factor":4},` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.RopeTheta != 1e6 || c.RopeScaling.Type != "linear" || c.RopeScaling.Factor != 4 {
				t.Errorf("%+v %v", c.RopeScaling, c.RopeTheta)
			}
		}},
		{"RopeDefaultExplicit", `{"architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"default"},` + base + `}`, func(t *testing.T, c *model.Config) {
			if c.RopeScaling.Type != "default" {
				t.Errorf("%+v", c.RopeScaling)
			}
		}},
		{"EOSList", `{"architectures":["LlamaForCausalLM"],"eos_token_id":[128001,128008,128009],"bos_token_id":128000,` + base + `}`, func(t *testing.T, c *model.Config) {
			if !reflect.DeepEqual(c.EOSTokenIDs, []int{128001, 128008, 128009}) || c.BOSTokenID != 128000 {
				t.Errorf("%+v", c)
			}
		}},
		{"EOSInt", `{"architectures":["LlamaForCausalLM"],"eos_token_id":2,"pad_token_id":null,` + base + `}`, func(t *testing.T, c *model.Config) {
			if !reflect.DeepEqual(c.EOSTokenIDs, []int{2}) || c.PadTokenID != -1 {
				t.Errorf("%+v", c)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := model.ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseConfig_Errors(t *testing.T) {
	base := `"hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":8`
	tests := []struct {
		name, json, want string
	}{
		{"Arch", `{"architectures":["GPT2LMHeadModel"],` + base + `}`, `"GPT2LMHeadModel" is not supported`},
		{"ModelType", `{"model_type":"gemma",` + base + `}`, `"gemma" is not supported`},
		{"NoArch", `{` + base + `}`, "neither architectures nor model_type"},
		{"DynamicNoFactor", `{"model_type":"llama","rope_scaling":{"type":"dynamic"},` + base + `}`, "rope_scaling (rope_type dynamic) needs factor"},
		{"NTKByParts", `{"model_type":"llama","rope_scaling":{"type":"ntk-by-parts","factor":2},` + base + `}`, `rope_type "ntk-by-parts" is not supported`},
		{"Longrope", `{"model_type":"llama","rope_parameters":{"rope_type":"longrope"},` + base + `}`, "rope_parameters (rope_type longrope) needs short_factor"},
		{"Llama3Missing", `{"model_type":"llama","rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4},` + base + `}`, "needs original_max_position_embeddings"},
		{"MissingHidden", `{"model_type":"llama","intermediate_size":1,"num_hidden_layers":1,"num_attention_heads":1}`, "hidden_size is missing"},
		{"GQA", `{"model_type":"llama","num_key_value_heads":3,` + base + `}`, "not a multiple"},
		{"Act", `{"model_type":"llama","hidden_act":"gelu",` + base + `}`, `hidden_act "gelu"`},
		{"DType", `{"model_type":"llama","torch_dtype":"int8",` + base + `}`, `dtype "int8"`},
		{"EOS", `{"model_type":"llama","eos_token_id":"x",` + base + `}`, "eos_token_id"},
		{"JSON", `{"model_type":`, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := model.ParseConfig([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLoadGenerationConfig(t *testing.T) {
	dir := t.TempDir()
	g, err := model.LoadGenerationConfig(dir)
	if err != nil || g != nil {
		t.Fatalf("absent file: %v %v", g, err)
	}
	os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"eos_token_id":[1,2],"temperature":0.6,"top_p":0.9,"top_k":40,"max_new_tokens":100,"do_sample":true}`), 0o644)
	g, err = model.LoadGenerationConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.EOSTokenIDs, []int{1, 2}) || *g.Temperature != 0.6 || *g.TopP != 0.9 || *g.TopK != 40 || *g.MaxNewTokens != 100 || !*g.DoSample || g.BOSTokenID != nil {
		t.Errorf("%+v", g)
	}
	os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(`{"top_p":2}`), 0o644)
	if _, err := model.LoadGenerationConfig(dir); err == nil {
		t.Error("top_p 2 accepted")
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":8,"rope_scaling":{"rope_type":"llama3","factor":32,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}}`))
	f.Add([]byte(`{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":8,"use_sliding_window":true,"layer_types":["full_attention"]}`))
	f.Add([]byte(`{"model_type":"mistral","hidden_size":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := model.ParseConfig(b)
		if err != nil {
			return
		}
		if c.HiddenSize <= 0 || c.NumHeads <= 0 || c.NumKVHeads <= 0 || c.NumHeads%c.NumKVHeads != 0 || c.HeadDim <= 0 || c.HeadDim%2 != 0 || !(c.RMSNormEps > 0) || !(c.RopeTheta > 0) {
			t.Fatalf("accepted bad config %+v", c)
		}
		if c.SlidingWindow < 0 || c.SlidingWindowFromLayer < 0 {
			t.Fatalf("bad window %+v", c)
		}
	})
}
