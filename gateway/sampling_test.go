package gateway_test

import (
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

// Parameters a request leaves out take the model's recommended sampling
// settings; those it gives win; top_k is accepted as an extension.
func TestSamplingDefaults(t *testing.T) {
	temp, topP := 0.6, 0.9
	withModelSampling := func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		f.gen.sampling = nozzle.SamplingDefaults{Temperature: &temp, TopP: &topP, TopK: 40}
	}
	f := newFixture(t, withModelSampling)
	plain := newFixture(t)

	for _, tc := range []struct {
		name    string
		f       *fixture
		body    string
		t, p    float64
		k       int
		wantErr string
	}{
		{"ModelDefaults", f, `{"model":"base","prompt":"hi","max_tokens":1}`, 0.6, 0.9, 40, ""},
		{"ChatModelDefaults", f, `{"model":"base","messages":[{"role":"user","content":"hi"}],"max_tokens":1}`, 0.6, 0.9, 40, ""},
		{"GreedyStaysGreedy", f, `{"model":"base","prompt":"hi","max_tokens":1,"temperature":0}`, 0, 0.9, 40, ""},
		{"GivenWin", f, `{"model":"base","prompt":"hi","max_tokens":1,"temperature":1.2,"top_p":0.5,"top_k":5}`, 1.2, 0.5, 5, ""},
		{"TopKOff", f, `{"model":"base","prompt":"hi","max_tokens":1,"top_k":-1}`, 0.6, 0.9, 0, ""},
		{"NoModelDefaults", plain, `{"model":"base","prompt":"hi","max_tokens":1}`, 1, 1, 0, ""},
		// OpenAI's top_p 0 keeps the likeliest token only; to the runtime
		// 0 would mean no filter.
		{"TopPZero", f, `{"model":"base","prompt":"hi","max_tokens":1,"top_p":0}`, 0.6, math.SmallestNonzeroFloat64, 40, ""},
		{"HugeTopK", plain, `{"model":"base","prompt":"hi","max_tokens":1,"top_k":4294967297}`, 1, 1, 4294967297, ""},
		{"EmptyLogitBias", plain, `{"model":"base","prompt":"hi","max_tokens":1,"logit_bias":{ }}`, 1, 1, 0, ""},
		{"BadTopK", f, `{"model":"base","prompt":"hi","max_tokens":1,"top_k":-2}`, 0, 0, 0, "top_k"},
		{"TopKWrongType", f, `{"model":"base","prompt":"hi","max_tokens":1,"top_k":"many"}`, 0, 0, 0, "top_k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/completions"
			if strings.Contains(tc.body, `"messages"`) {
				path = "/v1/chat/completions"
			}
			tc.f.gen.lastReq.Store(nil)
			resp := tc.f.do(http.MethodPost, path, tc.body, tc.f.authA())
			if tc.wantErr != "" {
				wantError(t, resp, http.StatusBadRequest, "invalid_request_error", "", tc.wantErr)
				if tc.f.gen.lastReq.Load() != nil {
					t.Fatal("a refused request reached the runtime")
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
			}
			resp.Body.Close()
			req := tc.f.gen.lastReq.Load()
			if req.Temperature != tc.t || req.TopP != tc.p || req.TopK != tc.k {
				t.Fatalf("runtime got temperature %v top_p %v top_k %d, want %v %v %d", req.Temperature, req.TopP, req.TopK, tc.t, tc.p, tc.k)
			}
		})
	}
}

// manyBias is the members of a logit_bias naming n tokens.
func manyBias(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = `"` + itoa(i) + `":-1`
	}
	return strings.Join(parts, ",")
}

// TestLogitAdjustments: logit_bias, presence_penalty and frequency_penalty
// reach the runtime as given on both endpoints and for every choice; the
// no-op values ask for nothing; a runtime that cannot apply them makes
// the gateway refuse them (naming the parameter) rather than ignore them.
func TestLogitAdjustments(t *testing.T) {
	f := newFixture(t)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name, path, body string
		bias             map[int]float64
		presence, freq   float64
	}{
		{"Chat", "/v1/chat/completions", `{"model":"base",` + msgs + `,"logit_bias":{"7":-100,"31999":2.5},"presence_penalty":0.5,"frequency_penalty":-1.25,"n":2}`,
			map[int]float64{7: -100, 31999: 2.5}, 0.5, -1.25},
		{"Completions", "/v1/completions", `{"model":"base","prompt":["a","b"],"logit_bias":{"0":100},"frequency_penalty":2}`,
			map[int]float64{0: 100}, 0, 2},
		{"MostTokens", "/v1/completions", `{"model":"base","prompt":"a","logit_bias":{` + manyBias(300) + `}}`, nil, 0, 0},
		{"NoOp", "/v1/chat/completions", `{"model":"base",` + msgs + `,"logit_bias":{},"presence_penalty":0,"frequency_penalty":null}`, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.gen.lastReq.Store(nil)
			resp := f.do(http.MethodPost, tc.path, tc.body, f.authA())
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
			}
			resp.Body.Close()
			req := f.gen.lastReq.Load()
			if tc.name == "MostTokens" {
				if len(req.LogitBias) != 300 || req.LogitBias[299] != -1 {
					t.Errorf("logit_bias of 300 tokens reached the runtime as %d", len(req.LogitBias))
				}
				return
			}
			if !reflect.DeepEqual(req.LogitBias, tc.bias) || req.PresencePenalty != tc.presence || req.FrequencyPenalty != tc.freq {
				t.Errorf("runtime got logit_bias %v presence %v frequency %v, want %v %v %v", req.LogitBias, req.PresencePenalty, req.FrequencyPenalty, tc.bias, tc.presence, tc.freq)
			}
		})
	}

	old := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gen.noBias = true })
	for param, body := range map[string]string{
		"logit_bias":        `{"model":"base","prompt":"a","logit_bias":{"5":1},"presence_penalty":1}`,
		"presence_penalty":  `{"model":"base","prompt":"a","presence_penalty":1}`,
		"frequency_penalty": `{"model":"base","prompt":"a","frequency_penalty":-0.5}`,
	} {
		wantError(t, old.do(http.MethodPost, "/v1/completions", body, old.authA()), http.StatusBadRequest, "invalid_request_error", "unsupported_value", param)
	}
	if resp := old.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"a","logit_bias":{},"presence_penalty":0}`, old.authA()); resp.StatusCode != http.StatusOK {
		t.Errorf("no-op values on an earlier runtime: %d %s", resp.StatusCode, readAll(t, resp))
	}
}

// TestResponseFormat: response_format json_object reaches the runtime as
// nozzle.ResponseFormatJSONObject, json_schema as
// nozzle.ResponseFormatJSONSchema with its schema (without one, as a JSON
// object), text and null as nothing; a runtime that cannot constrain its
// output is refused naming it.
func TestResponseFormat(t *testing.T) {
	f := newFixture(t)
	msgs := `"messages":[{"role":"user","content":"Reply in JSON."}]`
	schema := `{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}`
	for format, want := range map[string]string{`{"type":"json_object"}`: nozzle.ResponseFormatJSONObject, `{"type":"text"}`: "", `null`: "",
		`{"type":"json_schema","json_schema":{"name":"answer","strict":true,"schema":` + schema + `}}`: nozzle.ResponseFormatJSONSchema,
		`{"type":"json_schema","json_schema":{"name":"any"}}`:                                          nozzle.ResponseFormatJSONObject} {
		f.gen.lastReq.Store(nil)
		resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"n":2,"response_format":`+format+`}`, f.authA())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", format, resp.StatusCode, readAll(t, resp))
		}
		resp.Body.Close()
		req := f.gen.lastReq.Load()
		if req.ResponseFormat != want {
			t.Errorf("%s: the runtime got format %q, want %q", format, req.ResponseFormat, want)
		}
		if want == nozzle.ResponseFormatJSONSchema && string(req.ResponseSchema) != schema {
			t.Errorf("the runtime got schema %s", req.ResponseSchema)
		}
	}
	// legacy completions have no response_format
	wantError(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"x","response_format":{"type":"json_object"}}`, f.authA()),
		http.StatusBadRequest, "invalid_request_error", "", "response_format")

	old := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gen.noJSON = true })
	for _, format := range []string{`{"type":"json_object"}`, `{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}`} {
		wantError(t, old.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"response_format":`+format+`}`, old.authA()),
			http.StatusBadRequest, "invalid_request_error", "unsupported_value", "response_format")
	}
	if resp := old.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"response_format":{"type":"text"}}`, old.authA()); resp.StatusCode != http.StatusOK {
		t.Errorf("text on an earlier runtime: %d", resp.StatusCode)
	}
}

// TestGuidedOutputs: vLLM's guided_regex, guided_choice and guided_json
// (and structured_outputs' regex, choice and json) reach the runtime as a
// regex format with its pattern or a JSON Schema, on both endpoints; two
// at once, one beside response_format or a forced call, and values of the
// wrong shape are refused naming the parameter, as is a runtime that
// cannot constrain its output.
func TestGuidedOutputs(t *testing.T) {
	f := newFixture(t)
	msgs := `"messages":[{"role":"user","content":"Pick."}]`
	for _, tc := range []struct{ path, body, format, schema string }{
		{"/v1/chat/completions", `{"model":"base",` + msgs + `,"guided_regex":"[0-9]{3}"}`, nozzle.ResponseFormatRegex, `"[0-9]{3}"`},
		{"/v1/completions", `{"model":"base","prompt":"x","guided_choice":["yes","no","a.b"]}`, nozzle.ResponseFormatRegex, `"yes|no|a\\.b"`},
		{"/v1/chat/completions", `{"model":"base",` + msgs + `,"guided_json":{"type":"object"}}`, nozzle.ResponseFormatJSONSchema, `{"type":"object"}`},
		{"/v1/completions", `{"model":"base","prompt":"x","structured_outputs":{"regex":"a+"}}`, nozzle.ResponseFormatRegex, `"a+"`},
		{"/v1/chat/completions", `{"model":"base",` + msgs + `,"structured_outputs":{"choice":["x"],"json":null}}`, nozzle.ResponseFormatRegex, `"x"`},
		{"/v1/chat/completions", `{"model":"base",` + msgs + `,"guided_regex":null,"response_format":{"type":"text"}}`, "", ``},
	} {
		f.gen.lastReq.Store(nil)
		resp := f.do(http.MethodPost, tc.path, tc.body, f.authA())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.body, resp.StatusCode, readAll(t, resp))
		}
		resp.Body.Close()
		req := f.gen.lastReq.Load()
		if req.ResponseFormat != tc.format || string(req.ResponseSchema) != tc.schema {
			t.Errorf("%s: the runtime got %q %s, want %q %s", tc.body, req.ResponseFormat, req.ResponseSchema, tc.format, tc.schema)
		}
	}
	tools := `"tools":[{"type":"function","function":{"name":"g"}}]`
	for _, tc := range []struct{ body, code, param string }{
		{`"guided_regex":"a","guided_choice":["b"]`, "invalid_parameter_combination", "guided_choice"},
		{`"guided_regex":"a","structured_outputs":{"regex":"b"}`, "invalid_parameter_combination", "structured_outputs.regex"},
		{`"guided_regex":"a","response_format":{"type":"json_object"}`, "invalid_parameter_combination", "guided_regex"},
		{tools + `,"tool_choice":"required","guided_choice":["a"]`, "invalid_parameter_combination", "tool_choice"},
		{`"guided_regex":1`, "invalid_type", "guided_regex"},
		{`"guided_choice":"yes"`, "invalid_type", "guided_choice"},
		{`"guided_choice":[]`, "empty_array", "guided_choice"},
		{`"guided_choice":[` + strings.Repeat(`"a",`, 256) + `"a"]`, "array_above_max_length", "guided_choice"},
		{`"guided_choice":["` + strings.Repeat("a", 4097) + `"]`, "invalid_value", "guided_choice"},
		{`"guided_json":"{}"`, "invalid_type", "guided_json"},
		{`"structured_outputs":"a+"`, "invalid_type", "structured_outputs"},
		{`"structured_outputs":{"grammar":"root ::= x"}`, "unsupported_value", "structured_outputs.grammar"},
	} {
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,`+tc.body+`}`, f.authA()),
			http.StatusBadRequest, "invalid_request_error", tc.code, tc.param)
	}
	old := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gen.noJSON = true })
	wantError(t, old.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"x","guided_choice":["a"]}`, old.authA()),
		http.StatusBadRequest, "invalid_request_error", "unsupported_value", "guided_choice")
	wantError(t, old.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"guided_json":{}}`, old.authA()),
		http.StatusBadRequest, "invalid_request_error", "unsupported_value", "guided_json")
}
