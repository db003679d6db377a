package gateway_test

import (
	"math"
	"net/http"
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
