package model_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/model"
)

// Gemma 2's and Gemma 3's config.json as published (google/gemma-2-2b-it,
// google/gemma-3-1b-it, google/gemma-3-4b-it's text_config written as a
// Gemma3ForCausalLM config), and transformers v5's spelling.
const (
	gemma2Config = `{"architectures":["Gemma2ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
		"attn_logit_softcapping":50.0,"bos_token_id":2,"cache_implementation":"hybrid","eos_token_id":[1,107],
		"final_logit_softcapping":30.0,"head_dim":256,"hidden_act":"gelu_pytorch_tanh","hidden_activation":"gelu_pytorch_tanh",
		"hidden_size":2304,"initializer_range":0.02,"intermediate_size":9216,"max_position_embeddings":8192,
		"model_type":"gemma2","num_attention_heads":8,"num_hidden_layers":26,"num_key_value_heads":4,"pad_token_id":0,
		"query_pre_attn_scalar":256,"rms_norm_eps":1e-06,"rope_theta":10000.0,"sliding_window":4096,
		"torch_dtype":"float32","transformers_version":"4.42.4","use_cache":true,"vocab_size":256000}`
	gemma3Config = `{"architectures":["Gemma3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
		"attn_logit_softcapping":null,"bos_token_id":2,"cache_implementation":"hybrid","eos_token_id":[1,106],
		"final_logit_softcapping":null,"head_dim":256,"hidden_activation":"gelu_pytorch_tanh","hidden_size":1152,
		"initializer_range":0.02,"intermediate_size":6912,"max_position_embeddings":32768,"model_type":"gemma3_text",
		"num_attention_heads":4,"num_hidden_layers":26,"num_key_value_heads":1,"pad_token_id":0,"query_pre_attn_scalar":256,
		"rms_norm_eps":1e-06,"rope_local_base_freq":10000,"rope_scaling":null,"rope_theta":1000000,"sliding_window":512,
		"sliding_window_pattern":6,"torch_dtype":"bfloat16","transformers_version":"4.50.0.dev0","use_cache":true,"vocab_size":262144}`
	gemma3LinearConfig = `{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","hidden_size":2560,"intermediate_size":10240,
		"num_attention_heads":8,"num_hidden_layers":34,"num_key_value_heads":4,"head_dim":256,"query_pre_attn_scalar":256,
		"rope_scaling":{"factor":8.0,"rope_type":"linear"},"rope_theta":1000000,"rope_local_base_freq":10000,"sliding_window":1024,
		"vocab_size":262208}`
	// google/gemma-3-4b-it: text_config leaves most fields to
	// Gemma3TextConfig's defaults.
	gemma3MultimodalConfig = `{"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
		"eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
		"text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
		"rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
		"torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
		"vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
		"num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false}}`
	gemma3V5Config = `{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","hidden_size":1152,"intermediate_size":6912,
		"num_attention_heads":4,"num_hidden_layers":6,"num_key_value_heads":1,"head_dim":256,"sliding_window":512,
		"layer_types":["sliding_attention","full_attention","sliding_attention","sliding_attention","sliding_attention","full_attention"],
		"rope_parameters":{"full_attention":{"rope_type":"linear","factor":8.0,"rope_theta":1000000.0},
		"sliding_attention":{"rope_type":"default","rope_theta":10000.0}}}`
)

func TestParseConfig_Gemma(t *testing.T) {
	t.Run("Gemma2", func(t *testing.T) {
		c, err := model.ParseConfig([]byte(gemma2Config))
		if err != nil {
			t.Fatal(err)
		}
		if c.Architecture != model.ArchGemma2 || !model.IsGemma(c.Architecture) || c.HiddenAct != model.ActGeluTanh ||
			c.NormWeightOffset != 1 || !c.EmbedScaled || !c.PostNorms || c.QKNorm || c.QKVBias ||
			c.QueryPreAttnScalar != 256 || c.AttnSoftcap != 50 || c.FinalSoftcap != 30 || c.RopeLocalTheta != 0 ||
			!c.TieWordEmbeddings || c.SlidingWindow != 4096 || c.HeadDim != 256 || c.NumKVHeads != 4 {
			t.Errorf("%+v", c)
		}
		// Even layers slide, odd ones see everything.
		for l := 0; l < c.NumLayers; l++ {
			if got, want := c.SlidingLayer(l), l%2 == 0; got != want {
				t.Errorf("layer %d sliding %v, want %v", l, got, want)
			}
		}
		if !slices.Equal(c.EOSTokenIDs, []int{1, 107}) {
			t.Errorf("eos %v", c.EOSTokenIDs)
		}
	})
	t.Run("Gemma3", func(t *testing.T) {
		c, err := model.ParseConfig([]byte(gemma3Config))
		if err != nil {
			t.Fatal(err)
		}
		if c.Architecture != model.ArchGemma3 || !c.QKNorm || !c.PostNorms || c.AttnSoftcap != 0 || c.FinalSoftcap != 0 ||
			c.RopeTheta != 1e6 || c.RopeLocalTheta != 10000 || c.RopeScaling.Type != model.RopeDefault ||
			c.SlidingWindow != 512 || !c.TieWordEmbeddings || c.VocabSize != 262144 {
			t.Errorf("%+v", c)
		}
		// Five sliding layers, then a full one.
		for l := 0; l < c.NumLayers; l++ {
			if got, want := c.SlidingLayer(l), (l+1)%6 != 0; got != want {
				t.Errorf("layer %d sliding %v, want %v", l, got, want)
			}
		}
	})
	t.Run("Gemma3Linear", func(t *testing.T) {
		c, err := model.ParseConfig([]byte(gemma3LinearConfig))
		if err != nil {
			t.Fatal(err)
		}
		if c.RopeScaling.Type != model.RopeLinear || c.RopeScaling.Factor != 8 || c.RopeLocalTheta != 10000 ||
			c.MaxPositionEmbeddings != 131072 || c.VocabSize != 262208 {
			t.Errorf("%+v", c)
		}
	})
	t.Run("Gemma3RopeParameters", func(t *testing.T) {
		c, err := model.ParseConfig([]byte(gemma3V5Config))
		if err != nil {
			t.Fatal(err)
		}
		if c.RopeScaling.Type != model.RopeLinear || c.RopeScaling.Factor != 8 || c.RopeTheta != 1e6 || c.RopeLocalTheta != 1e4 {
			t.Errorf("%+v", c)
		}
		want := []bool{true, false, true, true, true, false}
		for l := range want {
			if c.SlidingLayer(l) != want[l] {
				t.Errorf("layer %d sliding %v, want %v", l, c.SlidingLayer(l), want[l])
			}
		}
	})
	t.Run("Gemma3Multimodal", func(t *testing.T) {
		c, err := model.ParseConfig([]byte(gemma3MultimodalConfig))
		if err != nil {
			t.Fatal(err)
		}
		if c.Architecture != model.ArchGemma3 || c.LanguageModelOf != model.ArchGemma3Multimodal || c.HiddenSize != 2560 ||
			c.NumLayers != 34 || c.NumHeads != 8 || c.NumKVHeads != 4 || c.HeadDim != 256 || c.VocabSize != 262208 ||
			c.SlidingWindow != 1024 || c.RopeScaling.Type != model.RopeLinear || c.RopeTheta != 1e6 || c.RopeLocalTheta != 1e4 ||
			c.QueryPreAttnScalar != 256 || c.MaxPositionEmbeddings != 131072 || !c.TieWordEmbeddings || !c.QKNorm ||
			!slices.Equal(c.EOSTokenIDs, []int{1, 106}) || c.DType != "BF16" {
			t.Errorf("%+v", c)
		}
		if !c.SlidingLayer(4) || c.SlidingLayer(5) || c.SlidingLayer(11) != false {
			t.Errorf("sliding layers: 4 %v, 5 %v, 11 %v", c.SlidingLayer(4), c.SlidingLayer(5), c.SlidingLayer(11))
		}
	})
	t.Run("LayerTypesAnyOrder", func(t *testing.T) {
		c, err := model.ParseConfig([]byte(`{"model_type":"qwen2","use_sliding_window":true,"sliding_window":16,
			"layer_types":["sliding_attention","full_attention","sliding_attention","sliding_attention"],
			"hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":8}`))
		if err != nil {
			t.Fatal(err)
		}
		for l, want := range []bool{true, false, true, true} {
			if c.SlidingLayer(l) != want {
				t.Errorf("layer %d sliding %v, want %v", l, c.SlidingLayer(l), want)
			}
		}
	})
	t.Run("LayerTypesFullThenSliding", func(t *testing.T) {
		// Full layers, then sliding ones: the compact form.
		c, err := model.ParseConfig([]byte(`{"model_type":"qwen2","use_sliding_window":true,"sliding_window":16,
			"layer_types":["full_attention","full_attention","sliding_attention","sliding_attention"],
			"hidden_size":64,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":8}`))
		if err != nil {
			t.Fatal(err)
		}
		if c.SlidingLayers != nil || c.SlidingWindowFromLayer != 2 {
			t.Errorf("%+v", c)
		}
	})
	errs := []struct{ name, json, want string }{
		{"ExactGelu", strings.Replace(gemma3Config, `"hidden_activation":"gelu_pytorch_tanh"`, `"hidden_activation":"gelu"`, 1), `hidden_activation "gelu" is not supported`},
		{"Scalar", strings.Replace(gemma3Config, `"query_pre_attn_scalar":256`, `"query_pre_attn_scalar":0`, 1), "query_pre_attn_scalar 0"},
		{"Softcap", strings.Replace(gemma2Config, `"final_logit_softcapping":30.0`, `"final_logit_softcapping":-1`, 1), "final_logit_softcapping -1"},
		{"LocalBase", strings.Replace(gemma3Config, `"rope_local_base_freq":10000`, `"rope_local_base_freq":0`, 1), "rope_local_base_freq 0"},
		{"Pattern", strings.Replace(gemma3Config, `"sliding_window_pattern":6`, `"sliding_window_pattern":0`, 1), "sliding_window_pattern 0"},
		{"LocalScaled", strings.Replace(gemma3V5Config, `"sliding_attention":{"rope_type":"default"`, `"sliding_attention":{"rope_type":"linear","factor":2`, 1), "not supported for sliding layers"},
		{"MultimodalNoText", `{"architectures":["Gemma3ForConditionalGeneration"],"model_type":"gemma3"}`, `has no text_config`},
		{"MultimodalBadText", strings.Replace(gemma3MultimodalConfig, `"sliding_window": 1024`, `"sliding_window": -1`, 1), `text_config: sliding_window -1`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, err := model.ParseConfig([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}
