package runtime_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// text runs req and returns its completion's text and result.
func text(t *testing.T, rt *runtime.Runtime, req *nozzle.GenerateRequest) (string, *nozzle.GenerateResult) {
	t.Helper()
	chunks, res := collect(t, rt, req)
	var b strings.Builder
	for _, c := range chunks {
		if !c.Prompt {
			b.WriteString(c.Text)
		}
	}
	return b.String(), res
}

// TestDemo_JSONObject: with response_format json_object the demo model,
// whose weights are random, writes a JSON object and stops when it
// closes (finish reason stop), greedy and sampled, with an adapter,
// beside unconstrained requests in one batch; cut off by max_tokens its
// text is a prefix of one; the same request without the format is not
// JSON.
func TestDemo_JSONObject(t *testing.T) {
	rt, adapters := openDemo(t, runtime.Options{})
	// raising the closing brace a little keeps the random model's objects short
	closer, ok := rt.TokenID("}")
	if !ok {
		t.Fatal("no } token")
	}
	var wg sync.WaitGroup
	for i, ad := range []*nozzle.Adapter{nil, adapters["demo-sql"], nil, adapters["demo-chat"]} {
		wg.Add(2)
		go func() { // an unconstrained neighbour
			defer wg.Done()
			rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "Hello", MaxTokens: 40}, func(nozzle.Chunk) error { return nil })
		}()
		go func() {
			defer wg.Done()
			seed := uint64(i)
			req := &nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "user", Content: "Answer in JSON."}}, Adapter: ad,
				MaxTokens: 400, ResponseFormat: nozzle.ResponseFormatJSONObject, LogitBias: map[int]float64{closer: 4}}
			if i%2 == 1 {
				req.Temperature, req.Seed = 1, &seed
			}
			out, res := text(t, rt, req)
			var v map[string]any
			if err := json.Unmarshal([]byte(out), &v); err != nil || res.FinishReason != nozzle.FinishStop {
				t.Errorf("request %d: %q (finish %q) is not a JSON object: %v", i, out, res.FinishReason, err)
			}
			t.Logf("request %d: %d tokens: %.120q", i, res.CompletionTokens, out)
		}()
	}
	wg.Wait()

	// cut off: the beginning of an object
	out, res := text(t, rt, &nozzle.GenerateRequest{Prompt: "Hello", MaxTokens: 6, ResponseFormat: nozzle.ResponseFormatJSONObject})
	if res.FinishReason != nozzle.FinishLength || !strings.HasPrefix(out, "{") || json.Valid([]byte(out)) {
		t.Errorf("cut off: %q, finish %q", out, res.FinishReason)
	}
	// unconstrained, the same request is no JSON
	out, _ = text(t, rt, &nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "user", Content: "Answer in JSON."}}, MaxTokens: 40})
	if json.Valid([]byte(out)) {
		t.Errorf("the random model wrote JSON unconstrained: %q", out)
	}

	_, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", ResponseFormat: "yaml"}, func(nozzle.Chunk) error { return nil })
	if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EINVALID || e.Param != "response_format" {
		t.Errorf("an unknown format: %v", err)
	}
}
