package model_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/model"
)

// factorsJSON is n factors 1, 1.25, 1.5, ... as a JSON list, and the list.
func factorsJSON(n int, step float64) (string, []float64) {
	f := make([]float64, n)
	for i := range f {
		f[i] = 1 + step*float64(i)
	}
	b, _ := json.Marshal(f)
	return string(b), f
}

// TestParseConfig_Longrope resolves Phi-3's longrope (Phi-3.5-mini,
// Phi-3-mini-128k) and Phi-4-mini's partial rotary embedding as
// transformers' _compute_longrope_parameters and Phi3Config read them.
// sqrt(17/12): the default attention factor of 131072 positions over
// 4096 (ln 32 / ln 4096 = 5/12).
func TestParseConfig_Longrope(t *testing.T) {
	const phi35 = `"architectures":["Phi3ForCausalLM"],"model_type":"phi3","hidden_size":3072,"intermediate_size":8192,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,"max_position_embeddings":131072,"rope_theta":10000.0`
	short48, s48 := factorsJSON(48, 0.25)
	long48, l48 := factorsJSON(48, 0.5)
	tests := []struct {
		name, json string
		rotary     int
		want       model.RopeScaling
	}{
		{"Phi35Mini", `{` + phi35 + `,"original_max_position_embeddings":4096,"rope_scaling":{"type":"longrope","short_factor":` + short48 + `,"long_factor":` + long48 + `}}`,
			96, model.RopeScaling{Type: model.RopeLongrope, Factor: 1, OriginalMaxPosition: 4096, AttentionFactor: math.Sqrt(17.0 / 12), ShortFactor: s48, LongFactor: l48}},
		// Phi-3-mini-128k's first spelling; without the top-level original
		// length Phi3Config's default 4096.
		{"SuDefaultOriginal", `{` + phi35 + `,"rope_scaling":{"type":"su","short_factor":` + short48 + `,"long_factor":` + long48 + `}}`,
			96, model.RopeScaling{Type: model.RopeLongrope, Factor: 1, OriginalMaxPosition: 4096, AttentionFactor: math.Sqrt(17.0 / 12), ShortFactor: s48, LongFactor: l48}},
		// Phi-4-mini: 24 heads of 128 dims, the first 96 rotated.
		{"Phi4MiniPartial", `{` + strings.Replace(phi35, `"num_attention_heads":32,"num_key_value_heads":32`, `"num_attention_heads":24,"num_key_value_heads":8`, 1) +
			`,"partial_rotary_factor":0.75,"original_max_position_embeddings":4096,"rope_scaling":{"rope_type":"longrope","short_factor":` + short48 + `,"long_factor":` + long48 + `}}`,
			96, model.RopeScaling{Type: model.RopeLongrope, Factor: 1, OriginalMaxPosition: 4096, AttentionFactor: math.Sqrt(17.0 / 12), ShortFactor: s48, LongFactor: l48}},
		// transformers v5: inside rope_parameters, with an attention factor
		{"V5AttentionFactor", `{` + strings.Replace(phi35, `,"rope_theta":10000.0`, ``, 1) + `,"rope_parameters":{"rope_type":"longrope","rope_theta":10000.0,"original_max_position_embeddings":8192,"attention_factor":1.25,"short_factor":` + short48 + `,"long_factor":` + long48 + `}}`,
			96, model.RopeScaling{Type: model.RopeLongrope, Factor: 1, OriginalMaxPosition: 8192, AttentionFactor: 1.25, ShortFactor: s48, LongFactor: l48}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parseRope(t, tt.json, tt.want)
			got := c.RopeScaling
			if c.RotaryDim != tt.rotary {
				t.Errorf("rotary dims %d, want %d (head_dim %d)", c.RotaryDim, tt.rotary, c.HeadDim)
			}
			// the served context picks the factors: up to the original
			// length the short ones, past it the long ones
			orig := got.OriginalMaxPosition
			if &got.LongropeFactors(orig)[0] != &got.ShortFactor[0] || &got.LongropeFactors(orig + 1)[0] != &got.LongFactor[0] {
				t.Error("LongropeFactors picks the wrong list")
			}
		})
	}
}

func TestParseConfig_LongropeErrors(t *testing.T) {
	const base = `"model_type":"phi3","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"max_position_embeddings":4096`
	f8, _ := factorsJSON(8, 0.5)
	f6, _ := factorsJSON(6, 0.5)
	lr := func(fields string) string {
		return `{` + base + `,"original_max_position_embeddings":256,"rope_scaling":{"type":"longrope",` + fields + `}}`
	}
	tests := []struct{ name, json, want string }{
		{"NoShort", lr(`"long_factor":` + f8), "rope_scaling (rope_type longrope) needs short_factor"},
		{"NoLong", lr(`"short_factor":` + f8), "needs long_factor"},
		{"Count", lr(`"short_factor":` + f6 + `,"long_factor":` + f8), "rope_scaling.short_factor has 6 factors, want 8"},
		{"Negative", lr(`"short_factor":` + f8 + `,"long_factor":[1,1,1,-2,1,1,1,1]`), "rope_scaling.long_factor[3] is -2"},
		{"NotNumbers", lr(`"short_factor":"x","long_factor":` + f8), "rope_scaling.short_factor is not a list of numbers"},
		{"AttentionZero", lr(`"short_factor":` + f8 + `,"long_factor":` + f8 + `,"attention_factor":0`), "rope_scaling.attention_factor is 0"},
		{"OrigFraction", `{` + base + `,"original_max_position_embeddings":100.5,"rope_scaling":{"type":"longrope","short_factor":` + f8 + `,"long_factor":` + f8 + `}}`, "original_max_position_embeddings 100.5 is not a positive integer"},
		// partial_rotary_factor: Phi-3 only, an even count of dims; the
		// factors then count half the rotated dims (16·0.75 = 12: 6)
		{"PartialCount", `{` + base + `,"partial_rotary_factor":0.75,"original_max_position_embeddings":256,"rope_scaling":{"type":"longrope","short_factor":` + f8 + `,"long_factor":` + f8 + `}}`, "has 8 factors, want 6 (half the 12 dims RoPE rotates)"},
		{"PartialOdd", `{` + base + `,"partial_rotary_factor":0.5625}`, "rotate an even number of head_dim 16's dims (it rotates 9)"},
		{"PartialZero", `{` + base + `,"partial_rotary_factor":0}`, "must be in (0, 1]"},
		{"PartialLlama", `{` + strings.Replace(base, "phi3", "llama", 1) + `,"partial_rotary_factor":0.5}`, "partial_rotary_factor 0.5 is not supported for LlamaForCausalLM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := model.ParseConfig([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
