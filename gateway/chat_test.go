package gateway_test

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

func chatBody(model, content string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]any{{"role": "user", "content": content}}})
	return string(b)
}

type chatResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Logprobs *struct {
			Content []struct {
				Token       string  `json:"token"`
				Logprob     float64 `json:"logprob"`
				TopLogprobs []struct {
					Token string `json:"token"`
				} `json:"top_logprobs"`
			} `json:"content"`
		} `json:"logprobs"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		TotalTokens         int64 `json:"total_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
}

// TestChat_CachedTokens: prompt tokens the runtime's prefix cache held are
// reported as OpenAI reports them, in usage.prompt_tokens_details (always
// there, zero when there are none). The usage event carries the same count (once
// per prompt, however many choices), and so do the tenant's and the
// operator's usage reports, as JSON and as CSV.
func TestChat_CachedTokens(t *testing.T) {
	f := newFixture(t)
	var first, second, multi chatResponse
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("tiny-llama", "A long system prompt"), f.authA()), &first)
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("tiny-llama", "A long system prompt CACHED"), f.authA()), &second)
	if d := first.Usage.PromptTokensDetails; d == nil || d.CachedTokens != 0 {
		t.Errorf("first answer: details %+v", d)
	}
	d := second.Usage.PromptTokensDetails
	if d == nil || d.CachedTokens != second.Usage.PromptTokens-1 || d.CachedTokens == 0 {
		t.Fatalf("second answer: usage %+v, details %+v", second.Usage, d)
	}
	// Three choices of one prompt: its cached tokens count once, as its
	// prompt tokens do.
	decode(t, f.do(http.MethodPost, "/v1/chat/completions",
		`{"model":"tiny-llama","n":3,"max_tokens":2,"messages":[{"role":"user","content":"Another prompt CACHED"}]}`, f.authA()), &multi)
	md := multi.Usage.PromptTokensDetails
	if len(multi.Choices) != 3 || md == nil || md.CachedTokens != multi.Usage.PromptTokens-1 {
		t.Fatalf("n=3 answer: usage %+v, details %+v", multi.Usage, md)
	}
	// A stream reports them in its usage chunk.
	resp := f.do(http.MethodPost, "/v1/chat/completions",
		`{"model":"tiny-llama","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"A streamed prompt CACHED"}]}`, f.authA())
	events := sseEvents(t, readAll(t, resp))
	var streamed chatResponse
	if len(events) < 2 || json.Unmarshal([]byte(events[len(events)-2]), &streamed) != nil || streamed.Usage.PromptTokensDetails == nil {
		t.Fatalf("stream's usage chunk: %q", events)
	}

	answers := []chatResponse{first, second, multi, streamed}
	var prompt, cached int64
	evs := f.events()
	if len(evs) != len(answers) {
		t.Fatalf("%d usage events, want %d", len(evs), len(answers))
	}
	for i, a := range answers {
		var c int64
		if a.Usage.PromptTokensDetails != nil {
			c = a.Usage.PromptTokensDetails.CachedTokens
		}
		if evs[i].PromptTokens != a.Usage.PromptTokens || evs[i].CachedPromptTokens != c {
			t.Errorf("event %d has %d prompt tokens, %d cached; the answer said %d and %d",
				i, evs[i].PromptTokens, evs[i].CachedPromptTokens, a.Usage.PromptTokens, c)
		}
		prompt += a.Usage.PromptTokens
		cached += c
	}

	type row struct {
		TenantID string `json:"tenant_id"`
		Prompt   int64  `json:"prompt_tokens"`
		Cached   int64  `json:"cached_prompt_tokens"`
	}
	var usage struct {
		Data  []row `json:"data"`
		Total row   `json:"total"`
	}
	decode(t, f.do(http.MethodGet, "/v1/usage", "", f.authA()), &usage)
	if usage.Total.Prompt != prompt || usage.Total.Cached != cached || len(usage.Data) != 1 || usage.Data[0].Cached != cached {
		t.Errorf("/v1/usage: %+v, want %d prompt tokens, %d cached", usage, prompt, cached)
	}
	var op struct {
		Data []row `json:"data"`
	}
	decode(t, f.do(http.MethodGet, "/admin/report?group_by=tenant", "", bearer(adminToken)), &op)
	if len(op.Data) != 1 || op.Data[0].TenantID != f.tenantA.ID || op.Data[0].Cached != cached {
		t.Errorf("/admin/report: %+v, want tenant %s with %d cached", op, f.tenantA.ID, cached)
	}
	for _, c := range []struct {
		path string
		auth header
	}{{"/v1/usage?format=csv", f.authA()}, {"/admin/report?format=csv", bearer(adminToken)}} {
		recs, err := csv.NewReader(strings.NewReader(readAll(t, f.do(http.MethodGet, c.path, "", c.auth)))).ReadAll()
		if err != nil || len(recs) < 2 {
			t.Fatalf("%s: %v %v", c.path, recs, err)
		}
		i := slices.Index(recs[0], "cached_prompt_tokens")
		if i < 1 || recs[0][i-1] != "prompt_tokens" || recs[len(recs)-1][i] != strconv.FormatInt(cached, 10) {
			t.Errorf("%s: header %v, total %v; want %d cached", c.path, recs[0], recs[len(recs)-1], cached)
		}
	}
}

func TestChat(t *testing.T) {
	f := newFixture(t)
	f.addAdapter(f.tenantA.ID, "support-bot", strings.Repeat("a", 64))

	t.Run("Base", func(t *testing.T) {
		resp := f.do(http.MethodPost, "/v1/chat/completions", chatBody("tiny-llama", "Say hello"), f.authA())
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
		}
		rid := resp.Header.Get("X-Request-Id")
		var r chatResponse
		decode(t, resp, &r)
		if r.Object != "chat.completion" || r.ID != "chatcmpl-"+rid || r.Model != "tiny-llama" || r.Created == 0 {
			t.Errorf("head %+v", r)
		}
		if len(r.Choices) != 1 || r.Choices[0].Message.Content != "Hello from the fake runtime." ||
			r.Choices[0].Message.Role != "assistant" || r.Choices[0].FinishReason != "stop" || r.Choices[0].Logprobs != nil {
			t.Errorf("choices %+v", r.Choices)
		}
		if r.Usage.CompletionTokens != 6 || r.Usage.PromptTokens == 0 || r.Usage.TotalTokens != r.Usage.PromptTokens+6 {
			t.Errorf("usage %+v", r.Usage)
		}
		evs := f.events()
		if len(evs) != 1 {
			t.Fatalf("%d events", len(evs))
		}
		ev := evs[0]
		if ev.RequestID != rid || ev.TenantID != f.tenantA.ID || ev.KeyID == "" || ev.Status != nozzle.UsageOK ||
			ev.AdapterID != "" || ev.Model != "tiny-llama" || ev.RuntimeID != "rt0" || ev.RatePerHour != 2.5 ||
			ev.PromptTokens != r.Usage.PromptTokens || ev.CompletionTokens != 6 || ev.DeviceSeconds <= 0 || ev.TTFTSeconds <= 0 {
			t.Errorf("event %+v", ev)
		}
		if len(ev.Response) != 0 {
			t.Errorf("response stored without an idempotency key")
		}
	})
	t.Run("BaseAlias", func(t *testing.T) {
		raw := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA()))
		var r chatResponse
		if err := json.Unmarshal([]byte(raw), &r); err != nil || r.Model != "tiny-llama" {
			t.Errorf("model %q (%v)", r.Model, err)
		}
		// usage's details objects are always there, as OpenAI sends them
		if !strings.Contains(raw, `"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":`+
			`{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}`) {
			t.Errorf("usage details: %s", raw)
		}
	})
	t.Run("Adapter", func(t *testing.T) {
		body := `{"model":"support-bot","messages":[{"role":"developer","content":"Be nice."},{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
			"max_completion_tokens":3,"temperature":0,"top_p":0.5,"seed":42,"stop":["\n\n","END"],"user":"u-1"}`
		resp := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA())
		var r chatResponse
		decode(t, resp, &r)
		if r.Model != "support-bot" || r.Choices[0].Message.Content != "Hello from the" || r.Choices[0].FinishReason != "length" {
			t.Errorf("%+v", r)
		}
		req := f.gen.lastReq.Load()
		if req.Adapter == nil || req.Adapter.Name != "support-bot" || req.MaxTokens != 3 || req.Temperature != 0 || req.TopP != 0.5 ||
			req.Seed == nil || *req.Seed != 42 || len(req.Stop) != 2 || req.TenantID != f.tenantA.ID {
			t.Errorf("request %+v", req)
		}
		if len(req.Messages) != 2 || req.Messages[0].Role != "system" || req.Messages[1].Content != "Hi there" {
			t.Errorf("messages %+v", req.Messages)
		}
		ev := f.events()[len(f.events())-1]
		if ev.AdapterName != "support-bot" || ev.AdapterID == "" {
			t.Errorf("event %+v", ev)
		}
	})
	t.Run("N", func(t *testing.T) {
		resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","n":3,"max_tokens":2,"messages":[{"role":"user","content":"x"}]}`, f.authA())
		var r chatResponse
		decode(t, resp, &r)
		if len(r.Choices) != 3 || r.Usage.CompletionTokens != 6 {
			t.Fatalf("%+v", r)
		}
		for i, c := range r.Choices {
			if c.Index != i || c.Message.Content != "Hello from" {
				t.Errorf("choice %d: %+v", i, c)
			}
		}
		// The prompt counts once, as OpenAI counts it, however many choices.
		var one chatResponse
		decode(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":2,"messages":[{"role":"user","content":"x"}]}`, f.authA()), &one)
		if r.Usage.PromptTokens != one.Usage.PromptTokens || r.Usage.TotalTokens != one.Usage.PromptTokens+6 {
			t.Errorf("n=3 usage %+v, n=1 usage %+v", r.Usage, one.Usage)
		}
		if ev := f.events()[len(f.events())-2]; ev.CompletionTokens != 6 || ev.PromptTokens != one.Usage.PromptTokens {
			t.Errorf("one event for all choices: %+v", ev)
		}
	})
	t.Run("Logprobs", func(t *testing.T) {
		resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","logprobs":true,"top_logprobs":2,"max_tokens":2,"messages":[{"role":"user","content":"x"}]}`, f.authA())
		var r chatResponse
		decode(t, resp, &r)
		lp := r.Choices[0].Logprobs
		if lp == nil || len(lp.Content) != 2 || lp.Content[0].Token != "Hello" || lp.Content[0].Logprob != -0.25 || len(lp.Content[0].TopLogprobs) != 2 {
			t.Fatalf("logprobs %+v", lp)
		}
	})
}

// TestChat_TooManyMessages: a chat request of more than 4096 messages is
// refused as OpenAI refuses an array too long, before the runtime sees
// it; 4096 are served.
func TestChat_TooManyMessages(t *testing.T) {
	f := newFixture(t)
	messages := func(key string, n int) string {
		return `{"model":"base","max_tokens":1,"` + key + `":[` + strings.Repeat(`{"role":"user","content":""},`, n-1) + `{"role":"user","content":"hi"}]}`
	}
	e := wantError(t, f.do(http.MethodPost, "/v1/chat/completions", messages("messages", 62000), f.authA()), 400, "invalid_request_error", "array_above_max_length", "messages")
	if want := "Invalid 'messages': array too long. Expected an array with maximum length 4096, but got an array with length 62000 instead."; e.Error.Message != want {
		t.Errorf("message %q, want %q", e.Error.Message, want)
	}
	// A key of another case is another argument, refused before its
	// array is decoded.
	e = wantError(t, f.do(http.MethodPost, "/v1/chat/completions", messages("Messages", 62000), f.authA()), 400, "invalid_request_error", "", "Messages")
	if !strings.Contains(e.Error.Message, "Unrecognized request argument supplied: Messages") {
		t.Errorf("message %q", e.Error.Message)
	}
	wantError(t, f.do(http.MethodPost, "/v1/chat/completions", messages("messages", 4097), f.authA()), 400, "invalid_request_error", "array_above_max_length", "messages")
	if n := f.w.generations.Load(); n != 0 {
		t.Errorf("the runtime was called %d times", n)
	}
	r := f.do(http.MethodPost, "/v1/chat/completions", messages("messages", 4096), f.authA())
	if body := readAll(t, r); r.StatusCode != http.StatusOK {
		t.Fatalf("4096 messages: %d %s", r.StatusCode, body)
	}
}

func TestChat_BadInput(t *testing.T) {
	f := newFixture(t, withConfig(func(c *gateway.Config) { c.BodyLimit = 4096 }))
	f.addAdapter(f.tenantB.ID, "globex-secret", strings.Repeat("b", 64))
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name, body       string
		status           int
		typ, code, param string
	}{
		{"MalformedJSON", `{"model":"base",`, 400, "invalid_request_error", "", ""},
		{"Empty", ``, 400, "invalid_request_error", "", ""},
		{"NotObject", `[1,2]`, 400, "invalid_request_error", "", ""},
		{"TrailingGarbage", `{"model":"base",` + msgs + `} x`, 400, "invalid_request_error", "", ""},
		{"ModelMissing", `{` + msgs + `}`, 400, "invalid_request_error", "missing_required_parameter", "model"},
		{"ModelType", `{"model":7,` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "model"},
		{"MessagesType", `{"model":"base","messages":"hi"}`, 400, "invalid_request_error", "invalid_type", "messages"},
		{"MessagesMissing", `{"model":"base"}`, 400, "invalid_request_error", "missing_required_parameter", "messages"},
		{"MessagesNull", `{"model":"base","messages":null}`, 400, "invalid_request_error", "missing_required_parameter", "messages"},
		{"MessagesEmpty", `{"model":"base","messages":[]}`, 400, "invalid_request_error", "empty_array", "messages"},
		{"RoleType", `{"model":"base","messages":[{"role":1,"content":"x"}]}`, 400, "invalid_request_error", "invalid_type", "messages[0].role"},
		{"NameType", `{"model":"base","messages":[{"role":"system","content":"x"},{"role":"user","name":5,"content":"x"}]}`, 400, "invalid_request_error", "invalid_type", "messages[1].name"},
		{"RoleUnknown", `{"model":"base","messages":[{"role":"wizard","content":"x"}]}`, 400, "invalid_request_error", "invalid_value", "messages[0].role"},
		{"ContentType", `{"model":"base","messages":[{"role":"user","content":5}]}`, 400, "invalid_request_error", "invalid_type", "messages[0].content"},
		{"ContentImage", `{"model":"base","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "invalid_request_error", "unsupported_value", "messages[0].content[0].type"},
		{"ContentEmptyParts", `{"model":"base","messages":[{"role":"user","content":[]}]}`, 400, "invalid_request_error", "empty_array", "messages[0].content"},
		{"RefusalFromUser", `{"model":"base","messages":[{"role":"user","content":[{"type":"refusal","refusal":"no"}]}]}`, 400, "invalid_request_error", "unsupported_value", "messages[0].content[0].type"},
		{"TemperatureType", `{"model":"base","temperature":"hot",` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "temperature"},
		{"TemperatureRange", `{"model":"base","temperature":3,` + msgs + `}`, 400, "invalid_request_error", "decimal_above_max_value", "temperature"},
		{"MaxTokensZero", `{"model":"base","max_tokens":0,` + msgs + `}`, 400, "invalid_request_error", "integer_below_min_value", "max_tokens"},
		{"MaxTokensFloat", `{"model":"base","max_tokens":1.5,` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "max_tokens"},
		{"MaxTokensWholeFloat", `{"model":"base","max_tokens":2.0,` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "max_tokens"},
		{"SeedPastInt64", `{"model":"base","seed":18446744073709551615,` + msgs + `}`, 400, "invalid_request_error", "integer_above_max_value", "seed"},
		{"SeedBelowInt64", `{"model":"base","seed":-9223372036854775809,` + msgs + `}`, 400, "invalid_request_error", "integer_below_min_value", "seed"},
		// max_tokens is deprecated in favour of max_completion_tokens, and
		// OpenAI refuses the two together, even when they agree
		{"MaxTokensAndMaxCompletionTokens", `{"model":"base","max_tokens":5,"max_completion_tokens":50,` + msgs + `}`, 400, "invalid_request_error", "invalid_parameter_combination", "max_tokens"},
		{"MaxTokensAndMaxCompletionTokensEqual", `{"model":"base","max_tokens":5,"max_completion_tokens":5,` + msgs + `}`, 400, "invalid_request_error", "invalid_parameter_combination", "max_tokens"},
		{"NTooMany", `{"model":"base","n":1000,` + msgs + `}`, 400, "invalid_request_error", "integer_above_max_value", "n"},
		{"NZero", `{"model":"base","n":0,` + msgs + `}`, 400, "invalid_request_error", "integer_below_min_value", "n"},
		{"StopTooMany", `{"model":"base","stop":["a","b","c","d","e"],` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "stop"},
		{"StopType", `{"model":"base","stop":5,` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "stop"},
		{"TopLogprobsNoLogprobs", `{"model":"base","top_logprobs":3,` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "top_logprobs"},
		{"TopLogprobsRange", `{"model":"base","logprobs":true,"top_logprobs":21,` + msgs + `}`, 400, "invalid_request_error", "integer_above_max_value", "top_logprobs"},
		{"TopLogprobsNegative", `{"model":"base","logprobs":true,"top_logprobs":-1,` + msgs + `}`, 400, "invalid_request_error", "integer_below_min_value", "top_logprobs"},
		{"TemperatureNegative", `{"model":"base","temperature":-0.5,` + msgs + `}`, 400, "invalid_request_error", "decimal_below_min_value", "temperature"},
		{"TopPRange", `{"model":"base","top_p":1.5,` + msgs + `}`, 400, "invalid_request_error", "decimal_above_max_value", "top_p"},
		{"PresencePenaltyRange", `{"model":"base","presence_penalty":-2.5,` + msgs + `}`, 400, "invalid_request_error", "decimal_below_min_value", "presence_penalty"},
		{"StreamOptionsNoStream", `{"model":"base","stream_options":{"include_usage":true},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "stream_options"},
		{"ToolWithoutName", `{"model":"base","tools":[{"type":"function"}],` + msgs + `}`, 400, "invalid_request_error", "missing_required_parameter", "tools[0].function.name"},
		{"ToolBadName", `{"model":"base","tools":[{"type":"function","function":{"name":"get weather"}}],` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "tools[0].function.name"},
		{"ToolNotFunction", `{"model":"base","tools":[{"type":"code_interpreter"}],` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "tools[0].type"},
		{"ToolsTooMany", `{"model":"base","tools":[` + strings.Repeat(`{},`, 128) + `{}],` + msgs + `}`, 400, "invalid_request_error", "array_above_max_length", "tools"},
		{"ToolCallsTooMany", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[` + strings.Repeat(`{},`, 128) + `{}]}]}`, 400, "invalid_request_error", "array_above_max_length", "messages[1].tool_calls"},
		{"ToolsNotArray", `{"model":"base","tools":{"type":"function"},` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "tools"},
		{"ToolsModelCannot", `{"model":"base","tools":[{"type":"function","function":{"name":"f"}}],` + msgs + `}`, 400, "invalid_request_error", "unsupported_value", "tools"},
		{"ToolMessageWithoutID", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"tool","content":"42"}]}`, 400, "invalid_request_error", "missing_required_parameter", "messages[1].tool_call_id"},
		{"UserToolCalls", `{"model":"base","messages":[{"role":"user","content":"x","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, 400, "invalid_request_error", "invalid_value", "messages[0].tool_calls"},
		{"ToolCallArgumentsObject", `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":{}}}]}]}`, 400, "invalid_request_error", "invalid_type", "messages[1].tool_calls[0].function.arguments"},
		{"ToolChoiceRequiredNoTools", `{"model":"base","tool_choice":"required",` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "tool_choice"},
		{"ToolChoiceFunctionNoTools", `{"model":"base","tool_choice":{"type":"function","function":{"name":"f"}},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "tool_choice"},
		{"ToolChoiceFunctionUnknown", `{"model":"base","tools":[{"type":"function","function":{"name":"g"}}],"tool_choice":{"type":"function","function":{"name":"f"}},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "tool_choice.function.name"},
		{"ToolChoiceShape", `{"model":"base","tools":[{"type":"function","function":{"name":"g"}}],"tool_choice":{"function":"g"},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "tool_choice"},
		{"ToolChoiceWithFormat", `{"model":"base","tools":[{"type":"function","function":{"name":"g"}}],"tool_choice":"required","response_format":{"type":"json_object"},` + msgs + `}`, 400, "invalid_request_error", "invalid_parameter_combination", "tool_choice"},
		{"ResponseFormatSchemaNoName", `{"model":"base","response_format":{"type":"json_schema","json_schema":{"schema":{}}},` + msgs + `}`, 400, "invalid_request_error", "missing_required_parameter", "response_format.json_schema.name"},
		{"ResponseFormatSchemaBadName", `{"model":"base","response_format":{"type":"json_schema","json_schema":{"name":"a b","schema":{}}},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "response_format.json_schema.name"},
		{"ResponseFormatSchemaMissing", `{"model":"base","response_format":{"type":"json_schema"},` + msgs + `}`, 400, "invalid_request_error", "missing_required_parameter", "response_format.json_schema"},
		{"ResponseFormatSchemaNotObject", `{"model":"base","response_format":{"type":"json_schema","json_schema":{"name":"x","schema":[1]}},` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "response_format.json_schema.schema"},
		{"ResponseFormatUnknown", `{"model":"base","response_format":{"type":"yaml"},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "response_format.type"},
		{"ResponseFormatType", `{"model":"base","response_format":"json",` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "response_format"},
		{"FrequencyPenaltyRange", `{"model":"base","frequency_penalty":3,` + msgs + `}`, 400, "invalid_request_error", "decimal_above_max_value", "frequency_penalty"},
		{"LogitBiasKey", `{"model":"base","logit_bias":{"fifty":-100},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "logit_bias"},
		{"LogitBiasNegativeKey", `{"model":"base","logit_bias":{"-1":-100},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "logit_bias"},
		{"LogitBiasPastVocabulary", `{"model":"base","logit_bias":{"32000":-100},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "logit_bias"},
		{"LogitBiasValue", `{"model":"base","logit_bias":{"50":-100.5},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "logit_bias"},
		{"LogitBiasValueType", `{"model":"base","logit_bias":{"50":"ban"},` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "logit_bias"},
		{"LogitBiasValueNull", `{"model":"base","logit_bias":{"50":null},` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "logit_bias"},
		{"LogitBiasTwice", `{"model":"base","logit_bias":{"50":1,"050":2},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "logit_bias"},
		{"LogitBiasTooMany", `{"model":"base","logit_bias":{` + manyBias(301) + `},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "logit_bias"},
		{"LogitBiasType", `{"model":"base","logit_bias":[1],` + msgs + `}`, 400, "invalid_request_error", "invalid_type", "logit_bias"},
		{"FunctionCallForced", `{"model":"base","function_call":{"name":"get_weather"},` + msgs + `}`, 400, "invalid_request_error", "invalid_value", "function_call"},
		{"ModalitiesAudio", `{"model":"base","modalities":["text","audio"],` + msgs + `}`, 400, "invalid_request_error", "unsupported_value", "modalities"},
		{"Audio", `{"model":"base","audio":{"voice":"alloy","format":"wav"},` + msgs + `}`, 400, "invalid_request_error", "unsupported_parameter", "audio"},
		{"WebSearch", `{"model":"base","web_search_options":{},` + msgs + `}`, 400, "invalid_request_error", "unsupported_parameter", "web_search_options"},
		{"ReasoningEffort", `{"model":"base","reasoning_effort":"low",` + msgs + `}`, 400, "invalid_request_error", "unsupported_parameter", "reasoning_effort"},
		{"Verbosity", `{"model":"base","verbosity":"low",` + msgs + `}`, 400, "invalid_request_error", "unsupported_parameter", "verbosity"},
		// arguments OpenAI's API does not define, such as other servers'
		// extensions that would change the output, are refused as OpenAI
		// refuses them
		{"UnknownArgument", `{"model":"base","guided_grammar":"root ::= x",` + msgs + `}`, 400, "invalid_request_error", "", "guided_grammar"},
		{"UnknownArgumentLast", `{"model":"base",` + msgs + `,"min_tokens":10}`, 400, "invalid_request_error", "", "min_tokens"},
		// parameters are known by their exact names, and given once
		{"ArgumentCased", `{"Model":"base",` + msgs + `}`, 400, "invalid_request_error", "", "Model"},
		{"ArgumentTwice", `{"model":"base",` + msgs + `,"max_tokens":5,"max_tokens":500}`, 400, "invalid_request_error", "", "max_tokens"},
		{"MessageMemberTwice", `{"model":"base","messages":[{"role":"user","content":"a","content":"b"}]}`, 400, "invalid_request_error", "", "messages[0].content"},
		{"UserFunctionCall", `{"model":"base","messages":[{"role":"user","content":"x","function_call":{"name":"f","arguments":"{}"}}]}`, 400, "invalid_request_error", "invalid_value", "messages[0].function_call"},
		{"ContentMissing", `{"model":"base","messages":[{"role":"user"}]}`, 400, "invalid_request_error", "missing_required_parameter", "messages[0].content"},
		{"ContentNull", `{"model":"base","messages":[{"role":"system","content":null},{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "missing_required_parameter", "messages[0].content"},
		{"UnknownModel", `{"model":"nope",` + msgs + `}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"PathTrickModel", `{"model":"../../etc/passwd",` + msgs + `}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"MaxTokensPastContext", `{"model":"base","max_tokens":9223372036854775807,` + msgs + `}`, 400, "invalid_request_error", "context_length_exceeded", "max_tokens"},
		{"MaxCompletionTokensPastContext", `{"model":"base","max_completion_tokens":2049,` + msgs + `}`, 400, "invalid_request_error", "context_length_exceeded", "max_completion_tokens"},
		{"ContextLength", `{"model":"base","messages":[{"role":"user","content":"TOO_LONG"}]}`, 400, "invalid_request_error", "context_length_exceeded", ""},
		{"ContextLengthStream", `{"model":"base","stream":true,"messages":[{"role":"user","content":"TOO_LONG"}]}`, 400, "invalid_request_error", "context_length_exceeded", ""},
		{"TooLarge", `{"model":"base","messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`, 413, "invalid_request_error", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.w.generations.Load()
			e := wantError(t, f.do(http.MethodPost, "/v1/chat/completions", tc.body, f.authA()), tc.status, tc.typ, tc.code, tc.param)
			// a type error reads as OpenAI's: "…, but got a string instead."
			if tc.code == "invalid_type" && strings.Contains(e.Error.Message, ", but got ") && !strings.HasSuffix(e.Error.Message, " instead.") {
				t.Errorf("message %q", e.Error.Message)
			}
			if n := len(f.events()); n != 0 {
				t.Errorf("%d usage events", n)
			}
			if tc.code != "context_length_exceeded" && f.w.generations.Load() != before {
				t.Errorf("the runtime was called")
			}
			f.w.mu.Lock()
			if f.w.reserved != 0 {
				t.Errorf("budget still reserved: %v", f.w.reserved)
			}
			f.w.mu.Unlock()
		})
	}
	t.Run("Compressed", func(t *testing.T) {
		before := f.w.generations.Load()
		body := `{"model":"base",` + msgs + `}`
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Content-Encoding", "gzip")), 400, "invalid_request_error", "", "")
		if f.w.generations.Load() != before {
			t.Errorf("the runtime was called")
		}
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Content-Encoding", "identity")); r.StatusCode != 200 {
			t.Errorf("identity: status %d: %s", r.StatusCode, readAll(t, r))
		}
	})
	t.Run("NoOpValues", func(t *testing.T) {
		// What clients that send every field send: accepted, no effect.
		body := `{"model":"base",` + msgs + `,"presence_penalty":0,"frequency_penalty":0,"logit_bias":{},` +
			`"response_format":{"type":"text"},"tool_choice":"none","tools":[]}`
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()); r.StatusCode != 200 {
			t.Errorf("status %d: %s", r.StatusCode, readAll(t, r))
		}
		body = `{"model":"base",` + msgs + `,"tool_choice":"auto","logit_bias":null,"presence_penalty":null}`
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()); r.StatusCode != 200 {
			t.Errorf("status %d: %s", r.StatusCode, readAll(t, r))
		}
		body = `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":"y"}],` +
			`"function_call":"none","modalities":["text"],"audio":null,"web_search_options":null,"reasoning_effort":null,"verbosity":null,"prediction":{"type":"content","content":"x"},"service_tier":"auto"}`
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()); r.StatusCode != 200 {
			t.Errorf("status %d: %s", r.StatusCode, readAll(t, r))
		}
		// OpenAI's bookkeeping and hints; fields of messages and stream
		// options that change nothing here
		body = `{"model":"base","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"a","refusal":null,"annotations":[]},{"role":"user","content":"y","x_client":1},` +
			`{"role":"assistant","content":[{"type":"refusal","refusal":"I cannot."}]},{"role":"user","content":"z"}],` +
			`"metadata":{"k":"v"},"store":false,"parallel_tool_calls":true,"prompt_cache_key":"c","safety_identifier":"s",` +
			`"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}`
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()); r.StatusCode != 200 {
			t.Errorf("status %d: %s", r.StatusCode, readAll(t, r))
		} else {
			readAll(t, r)
			// an assistant's refusal part is what it said
			if ms := f.gen.lastReq.Load().Messages; len(ms) != 5 || ms[3].Role != "assistant" || ms[3].Content != "I cannot." {
				t.Errorf("messages %+v", ms)
			}
		}
	})
	t.Run("MaxTokensNullBesideMaxCompletionTokens", func(t *testing.T) {
		// null is a parameter left out: max_completion_tokens alone
		body := `{"model":"base",` + msgs + `,"max_tokens":null,"max_completion_tokens":2}`
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()); r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, readAll(t, r))
		}
		if got := f.gen.lastReq.Load().MaxTokens; got != 2 {
			t.Errorf("max tokens %d", got)
		}
	})
	t.Run("OtherTenantsAdapter", func(t *testing.T) {
		// Indistinguishable from a name that does not exist.
		a := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("globex-secret", "hi"), f.authA()))
		b := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("globex-secreT", "hi"), f.authA()))
		if strings.ReplaceAll(a, "globex-secret", "X") != strings.ReplaceAll(b, "globex-secreT", "X") {
			t.Errorf("answers differ:\n%s\n%s", a, b)
		}
		if !strings.Contains(a, "model_not_found") {
			t.Errorf("answer %s", a)
		}
		// The owner can use it.
		if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("globex-secret", "hi"), bearer(f.keyB)); r.StatusCode != 200 {
			t.Errorf("owner: status %d", r.StatusCode)
		}
	})
}
