package model_test

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/model"
)

// TestParseConfig_Yarn resolves yarn rope_scaling / rope_parameters the way
// transformers' _compute_yarn_parameters reads them. The attention factors
// are literals computed apart (0.1·ln(factor)+1 and its mscale ratio).
func TestParseConfig_Yarn(t *testing.T) {
	base := `"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"rope_theta":1e6,"max_position_embeddings":32768`
	tests := []struct {
		name, json string
		want       model.RopeScaling
		theta      float64
	}{
		{"Qwen25", `{` + base + `,"rope_scaling":{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}}`,
			model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 32768, BetaFast: 32, BetaSlow: 1, AttentionFactor: 1.1386294361119891, Truncate: true}, 1e6},
		{"V5Explicit", `{` + base + `,"rope_parameters":{"rope_type":"yarn","rope_theta":500000,"factor":8,"original_max_position_embeddings":4096,"beta_fast":16,"beta_slow":2,"attention_factor":1.5,"truncate":false}}`,
			model.RopeScaling{Type: model.RopeYarn, Factor: 8, OriginalMaxPosition: 4096, BetaFast: 16, BetaSlow: 2, AttentionFactor: 1.5, Truncate: false}, 500000},
		{"Mscale", `{` + base + `,"rope_scaling":{"rope_type":"yarn","factor":4,"original_max_position_embeddings":4096,"mscale":1,"mscale_all_dim":0.5}}`,
			model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 4096, BetaFast: 32, BetaSlow: 1, AttentionFactor: 1.0648216253695715, Truncate: true}, 1e6},
		// mscale alone (or mscale_all_dim 0) is ignored: HF needs both truthy.
		{"MscaleAlone", `{` + base + `,"rope_scaling":{"rope_type":"yarn","factor":8,"original_max_position_embeddings":4096,"mscale":0.7,"mscale_all_dim":0}}`,
			model.RopeScaling{Type: model.RopeYarn, Factor: 8, OriginalMaxPosition: 4096, BetaFast: 32, BetaSlow: 1, AttentionFactor: 1.2079441541679836, Truncate: true}, 1e6},
		// No original length: max_position_embeddings; beta 0/null: the defaults.
		{"Defaults", `{` + base + `,"rope_scaling":{"rope_type":"yarn","factor":1,"beta_fast":0,"beta_slow":null,"truncate":null}}`,
			model.RopeScaling{Type: model.RopeYarn, Factor: 1, OriginalMaxPosition: 32768, BetaFast: 32, BetaSlow: 1, AttentionFactor: 1, Truncate: true}, 1e6},
		// No factor: max_position_embeddings / the (top-level) original length.
		{"DerivedFactorTopLevel", `{` + strings.Replace(base, "32768", "131072", 1) + `,"original_max_position_embeddings":32768,"rope_scaling":{"rope_type":"yarn"}}`,
			model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 32768, BetaFast: 32, BetaSlow: 1, AttentionFactor: 1.1386294361119891, Truncate: true}, 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parseRope(t, tt.json, tt.want)
			if c.RopeTheta != tt.theta {
				t.Errorf("rope_theta = %v, want %v", c.RopeTheta, tt.theta)
			}
		})
	}
}

// parseRope parses a config.json and checks its resolved rope scaling
// against want, the attention factor to 1e-15.
func parseRope(t *testing.T, js string, want model.RopeScaling) *model.Config {
	t.Helper()
	c, err := model.ParseConfig([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	got := c.RopeScaling
	if math.Abs(got.AttentionFactor-want.AttentionFactor) > 1e-15 {
		t.Errorf("attention factor %.17g, want %.17g", got.AttentionFactor, want.AttentionFactor)
	}
	got.AttentionFactor = want.AttentionFactor
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rope = %+v\nwant   %+v", got, want)
	}
	return c
}

func TestParseConfig_YarnErrors(t *testing.T) {
	base := `"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"max_position_embeddings":4096`
	y := func(fields string) string { return `{` + base + `,"rope_scaling":{"rope_type":"yarn",` + fields + `}}` }
	tests := []struct{ name, json, want string }{
		{"NoFactor", `{` + base + `,"rope_scaling":{"rope_type":"yarn"}}`, "rope_scaling (rope_type yarn) needs factor"},
		{"NoFactorOrigTooLong", y(`"original_max_position_embeddings":8192`), "needs factor"},
		{"FactorNegative", y(`"factor":-1`), "rope_scaling.factor is -1, want a positive number"},
		{"FactorString", y(`"factor":"4"`), "rope_scaling.factor is not a number"},
		{"OrigFraction", y(`"factor":4,"original_max_position_embeddings":1000.5`), "rope_scaling.original_max_position_embeddings 1000.5 is not an integer"},
		{"OrigZero", y(`"factor":4,"original_max_position_embeddings":0`), "rope_scaling.original_max_position_embeddings is 0"},
		{"OrigDisagree", `{` + base + `,"original_max_position_embeddings":2048,"rope_scaling":{"rope_type":"yarn","factor":4,"original_max_position_embeddings":1024}}`, "differ"},
		{"BetaFastNegative", y(`"factor":4,"beta_fast":-1`), "rope_scaling.beta_fast is -1"},
		{"BetaOrder", y(`"factor":4,"beta_fast":1,"beta_slow":2`), "beta_fast 1 must be at least beta_slow 2"},
		{"AttentionFactorZero", y(`"factor":4,"attention_factor":0`), "rope_scaling.attention_factor is 0"},
		{"MscaleNegative", y(`"factor":4,"mscale":1,"mscale_all_dim":-20`), "attention factor from factor 4"},
		{"MscaleString", y(`"factor":4,"mscale":"x","mscale_all_dim":1`), "rope_scaling.mscale is not a number"},
		{"Truncate", y(`"factor":4,"truncate":"yes"`), "rope_scaling.truncate is not a boolean"},
		{"V5Field", `{` + base + `,"rope_parameters":{"rope_type":"yarn","factor":0}}`, "rope_parameters.factor is 0"},
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

// TestConfig_ContextLength: yarn serves its original context times its
// factor where that is longer than max_position_embeddings (Qwen2.5's
// 32768 with factor 4: 131072), as vLLM reads it; the other scalings, and
// a yarn config whose max_position_embeddings was raised already, serve
// max_position_embeddings.
func TestConfig_ContextLength(t *testing.T) {
	base := `"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":8,"max_position_embeddings":32768`
	for _, tt := range []struct {
		name, rope string
		want       int
	}{
		{"None", `null`, 32768},
		{"YarnQwen25", `{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}`, 131072},
		{"YarnRaisedAlready", `{"type":"yarn","factor":2.0,"original_max_position_embeddings":8192}`, 32768},
		{"YarnFractional", `{"type":"yarn","factor":1.5,"original_max_position_embeddings":32768}`, 49152},
		{"Linear", `{"type":"linear","factor":4.0}`, 32768},
		{"Dynamic", `{"type":"dynamic","factor":4.0}`, 32768},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := model.ParseConfig([]byte(`{` + base + `,"rope_scaling":` + tt.rope + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.ContextLength(); got != tt.want {
				t.Errorf("context %d, want %d", got, tt.want)
			}
		})
	}
}
