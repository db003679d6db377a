package runtime_test

import (
	"context"
	"encoding/json"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
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
	reg := metrics.NewRegistry()
	rt, adapters := openDemo(t, runtime.Options{Metrics: reg})
	// raising the closing brace and the quote a little keeps the random
	// model's objects and strings short
	closer, ok := rt.TokenID("}")
	quote, ok2 := rt.TokenID(`"`)
	if !ok || !ok2 {
		t.Fatal("no } or \" token")
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
				MaxTokens: 600, ResponseFormat: nozzle.ResponseFormatJSONObject, LogitBias: map[int]float64{closer: 4, quote: 3}}
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

	// logprobs under a mask: the alternatives are the tokens the mask
	// allowed, never one it excluded (-inf, which JSON cannot carry)
	chunks, _ := collect(t, rt, &nozzle.GenerateRequest{Prompt: "Hello", MaxTokens: 30, Logprobs: true, TopLogprobs: 20,
		ResponseFormat: nozzle.ResponseFormatJSONObject})
	fewer := 0
	for _, c := range chunks {
		for _, lp := range c.Logprobs {
			if len(lp.Top) < 20 {
				fewer++
			}
			for _, alt := range lp.Top {
				if math.IsInf(alt.Logprob, 0) || math.IsNaN(alt.Logprob) {
					t.Fatalf("alternative %+v of %q", alt, lp.Token)
				}
			}
		}
	}
	if fewer == 0 {
		t.Errorf("no step had fewer than 20 allowed tokens")
	}
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

	// 4 in a batch, the logprobs' and the cut-off one
	if n := metricValue(promText(reg), `nozzle_runtime_constrained_requests_total{kind="json_object"}`); n != 6 {
		t.Errorf("constrained requests counted: %v, want 6", n)
	}
	_, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", ResponseFormat: "yaml"}, func(nozzle.Chunk) error { return nil })
	if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EINVALID || e.Param != "response_format" {
		t.Errorf("an unknown format: %v", err)
	}
}

// TestDemo_JSONSchema: with response_format json_schema the demo model
// writes values of the schema — properties in the schema's order, the
// required ones present, integers in bounds, enums, nested and nullable
// fields, a pattern, a format and a discriminated union —
// greedy and sampled, with an adapter; the compiled schema serves the
// next request from its cache; a schema it cannot enforce is refused
// naming it.
func TestDemo_JSONSchema(t *testing.T) {
	rt, adapters := openDemo(t, runtime.Options{})
	schema := `{"type":"object","properties":{
		"name":{"type":"string"},
		"age":{"type":"integer","minimum":0,"maximum":150},
		"role":{"enum":["admin","user","guest"]},
		"code":{"type":"string","pattern":"^[A-Z]{2}-[0-9]{2}$"},
		"ip":{"type":"string","format":"ipv4"},
		"pet":{"anyOf":[{"type":"object","properties":{"kind":{"const":"cat"},"lives":{"type":"integer"}},"required":["kind","lives"],"additionalProperties":false},
			{"type":"object","properties":{"kind":{"const":"dog"},"good":{"type":"boolean"}},"required":["kind","good"],"additionalProperties":false}]},
		"tags":{"type":"array","items":{"type":"string"},"maxItems":3},
		"boss":{"anyOf":[{"type":"null"},{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}]},
		"score":{"type":"number"}},
		"required":["name","age","role","code","ip","pet","tags","boss"],"additionalProperties":false}`
	type person struct {
		Name *string  `json:"name"`
		Age  *float64 `json:"age"` // an integer of any size
		Role *string  `json:"role"`
		Code *string  `json:"code"`
		IP   *string  `json:"ip"`
		Pet  *struct {
			Kind  string
			Lives *float64
			Good  *bool
		} `json:"pet"`
		Tags  *[]string `json:"tags"`
		Boss  *struct{ Name *string }
		Score *float64 `json:"score"`
	}
	// raising the quote keeps the random model's strings short
	quote, ok := rt.TokenID(`"`)
	if !ok {
		t.Fatal(`no " token`)
	}
	for i, ad := range []*nozzle.Adapter{nil, adapters["demo-sql"], nil} {
		seed := uint64(i)
		req := &nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "user", Content: "Describe a person."}}, Adapter: ad,
			MaxTokens: 1500, ResponseFormat: nozzle.ResponseFormatJSONSchema, ResponseSchema: json.RawMessage(schema),
			LogitBias: map[int]float64{quote: 5}}
		if i > 0 {
			req.Temperature, req.Seed = 1, &seed
		}
		out, res := text(t, rt, req)
		t.Logf("request %d: %d tokens: %.200q", i, res.CompletionTokens, out)
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		var p person
		if err := dec.Decode(&p); err != nil || res.FinishReason != nozzle.FinishStop {
			t.Fatalf("request %d: %q (finish %q): %v", i, out, res.FinishReason, err)
		}
		if p.Name == nil || p.Age == nil || *p.Age != math.Trunc(*p.Age) || *p.Age < 0 || *p.Age > 150 || p.Role == nil || p.Tags == nil || len(*p.Tags) > 3 ||
			p.Pet == nil || (p.Pet.Kind == "cat") != (p.Pet.Lives != nil && p.Pet.Good == nil) || (p.Pet.Kind == "dog") != (p.Pet.Good != nil && p.Pet.Lives == nil) ||
			p.Code == nil || !regexp.MustCompile(`^[A-Z]{2}-[0-9]{2}$`).MatchString(*p.Code) || p.IP == nil || !netip.MustParseAddr(*p.IP).Is4() ||
			!slices.Contains([]string{"admin", "user", "guest"}, *p.Role) || p.Boss != nil && p.Boss.Name == nil {
			t.Errorf("request %d: %+v does not follow the schema", i, p)
		}
		// the properties come in the schema's order
		at := -1
		for _, k := range []string{`"name"`, `"age"`, `"role"`, `"code"`, `"ip"`, `"pet"`, `"tags"`, `"boss"`} {
			j := strings.Index(out, k)
			if j < at {
				t.Errorf("request %d: %s out of order in %q", i, k, out)
			}
			at = j
		}
	}

	for _, bad := range []string{`{"type":"string","format":"uri"}`, `{"type":"string","pattern":"(?=a)"}`, `{"type":"object","properties":{"a":{"$ref":"#/$defs/nope"}}}`, `{"type":`} {
		_, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", ResponseFormat: nozzle.ResponseFormatJSONSchema, ResponseSchema: json.RawMessage(bad)}, func(nozzle.Chunk) error { return nil })
		if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EINVALID || e.Param != "response_format.json_schema.schema" {
			t.Errorf("schema %s: %v", bad, err)
		}
	}
}

// BenchmarkDemo_Constrained: 8 requests at once on the demo model,
// unconstrained and under response_format json_object and json_schema,
// alternated per iteration; reports the time per completion token of
// each (the masks' cost: a cached mask per draw, the engine's -inf over
// the vocabulary, the feed of each token).
func BenchmarkDemo_Constrained(b *testing.B) {
	rt, _ := openDemo(b, runtime.Options{})
	defer rt.Close(context.Background())
	schema := json.RawMessage(`{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"}},"required":["name","n"],"additionalProperties":false}`)
	kinds := []struct {
		name   string
		format string
	}{{"free", ""}, {"json_object", nozzle.ResponseFormatJSONObject}, {"json_schema", nozzle.ResponseFormatJSONSchema}}
	var spent [3]time.Duration
	var tokens [3]int
	for b.Loop() {
		for k, kind := range kinds {
			start := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					seed := uint64(i)
					req := &nozzle.GenerateRequest{Prompt: "Reply in JSON.", MaxTokens: 64, Temperature: 1, Seed: &seed, ResponseFormat: kind.format}
					if kind.format == nozzle.ResponseFormatJSONSchema {
						req.ResponseSchema = schema
					}
					res, err := rt.Generate(context.Background(), req, func(nozzle.Chunk) error { return nil })
					if err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					tokens[k] += res.CompletionTokens
					mu.Unlock()
				}()
			}
			wg.Wait()
			spent[k] += time.Since(start)
		}
	}
	for k, kind := range kinds {
		b.ReportMetric(float64(spent[k].Microseconds())/float64(max(1, tokens[k])), "µs/token-"+kind.name)
	}
}

// TestDemo_Regex: with ResponseFormatRegex the demo model writes text the
// pattern matches whole — a pattern, a choice among strings — greedy and
// sampled, ending when the match may end with nothing after it; a pattern
// that cannot compile is refused naming response_format.
func TestDemo_Regex(t *testing.T) {
	reg := metrics.NewRegistry()
	rt, _ := openDemo(t, runtime.Options{Metrics: reg})
	for _, tc := range []struct{ pattern, check string }{
		{`[A-Z]{2}-[0-9]{3}`, `^[A-Z]{2}-[0-9]{3}$`},
		{nozzle.ChoicePattern([]string{"red", "green", "blue (dark)"}), `^(red|green|blue \(dark\))$`},
		{`(yes|no), because [a-z ]{1,20}\.`, `^(yes|no), because [a-z ]{1,20}\.$`},
	} {
		pattern, _ := json.Marshal(tc.pattern)
		for i := range 3 {
			seed := uint64(i)
			req := &nozzle.GenerateRequest{Prompt: "Answer:", MaxTokens: 200, ResponseFormat: nozzle.ResponseFormatRegex, ResponseSchema: pattern}
			if i > 0 {
				req.Temperature, req.Seed = 1, &seed
			}
			out, res := text(t, rt, req)
			if !regexp.MustCompile(tc.check).MatchString(out) || res.FinishReason != nozzle.FinishStop {
				t.Errorf("%q, request %d: %q (finish %q)", tc.pattern, i, out, res.FinishReason)
			}
		}
	}
	if n := metricValue(promText(reg), `nozzle_runtime_constrained_requests_total{kind="regex"}`); n != 9 {
		t.Errorf("regex requests counted %v, want 9", n)
	}
	_, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", ResponseFormat: nozzle.ResponseFormatRegex, ResponseSchema: json.RawMessage(`"(?=a)"`)}, func(nozzle.Chunk) error { return nil })
	if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EINVALID || e.Param != "response_format" || !strings.Contains(e.Message, "lookahead") {
		t.Errorf("a lookahead: %v", err)
	}
}
