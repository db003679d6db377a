package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

type responseObj struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	CreatedAt         int64           `json:"created_at"`
	Status            string          `json:"status"`
	Model             string          `json:"model"`
	Error             json.RawMessage `json:"error"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Instructions    *string         `json:"instructions"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
	Temperature     float64         `json:"temperature"`
	TopP            float64         `json:"top_p"`
	Tools           json.RawMessage `json:"tools"`
	ToolChoice      json.RawMessage `json:"tool_choice"`
	Text            json.RawMessage `json:"text"`
	Metadata        json.RawMessage `json:"metadata"`
	Output          []struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		Status  string `json:"status"`
		Role    string `json:"role"`
		Content []struct {
			Type        string          `json:"type"`
			Text        string          `json:"text"`
			Annotations json.RawMessage `json:"annotations"`
		} `json:"content"`
		CallID    string `json:"call_id"`
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"output"`
	Usage *struct {
		InputTokens        int64 `json:"input_tokens"`
		OutputTokens       int64 `json:"output_tokens"`
		TotalTokens        int64 `json:"total_tokens"`
		InputTokensDetails struct {
			CachedTokens *int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokensDetails struct {
			ReasoningTokens *int64 `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
	} `json:"usage"`
}

func (r *responseObj) outputText() string {
	var s string
	for _, o := range r.Output {
		if o.Type == "message" {
			for _, c := range o.Content {
				s += c.Text
			}
		}
	}
	return s
}

func postResponses(t *testing.T, f *fixture, body string, hs ...header) (*http.Response, responseObj) {
	t.Helper()
	resp := f.do(http.MethodPost, "/v1/responses", body, append([]header{f.authA()}, hs...)...)
	var r responseObj
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	decode(t, resp, &r)
	return resp, r
}

// TestResponses_StringInput: a string input is one user message; the
// answer is a Response with one message item, its usage, the echoed
// settings, and one usage event in the ledger.
func TestResponses_StringInput(t *testing.T) {
	f := newFixture(t)
	resp, r := postResponses(t, f, `{"model":"base","input":"Say hello","store":false,"metadata":{"k":"v"},"user":"u-1"}`)
	rid := resp.Header.Get("X-Request-Id")
	if r.ID != "resp_"+rid || r.Object != "response" || r.Status != "completed" || r.Model != "tiny-llama" || r.CreatedAt == 0 ||
		string(r.Error) != "null" || r.IncompleteDetails != nil || r.Instructions != nil || r.MaxOutputTokens != nil {
		t.Errorf("head %+v", r)
	}
	if len(r.Output) != 1 || r.Output[0].Type != "message" || r.Output[0].Role != "assistant" || r.Output[0].Status != "completed" ||
		!strings.HasPrefix(r.Output[0].ID, "msg_") || len(r.Output[0].Content) != 1 || r.Output[0].Content[0].Type != "output_text" ||
		string(r.Output[0].Content[0].Annotations) != "[]" || r.outputText() != "Hello from the fake runtime." {
		t.Errorf("output %+v", r.Output)
	}
	if string(r.Tools) != "[]" || string(r.ToolChoice) != `"auto"` || string(r.Text) != `{"format":{"type":"text"}}` || string(r.Metadata) != `{"k":"v"}` ||
		r.Temperature != 1 || r.TopP != 1 {
		t.Errorf("echo tools %s choice %s text %s metadata %s temperature %v top_p %v", r.Tools, r.ToolChoice, r.Text, r.Metadata, r.Temperature, r.TopP)
	}
	u := r.Usage
	if u == nil || u.OutputTokens != 6 || u.InputTokens == 0 || u.TotalTokens != u.InputTokens+6 ||
		u.InputTokensDetails.CachedTokens == nil || u.OutputTokensDetails.ReasoningTokens == nil {
		t.Fatalf("usage %+v", u)
	}
	m := f.gen.lastReq.Load().Messages
	if len(m) != 1 || m[0].Role != "user" || m[0].Content != "Say hello" {
		t.Errorf("messages %+v", m)
	}
	evs := f.events()
	if len(evs) != 1 || evs[0].RequestID != rid || evs[0].Status != nozzle.UsageOK || evs[0].PromptTokens != u.InputTokens || evs[0].CompletionTokens != 6 {
		t.Errorf("events %+v", evs)
	}
}

// TestResponses_Messages: instructions come first as a system message;
// input items map to chat messages (developer as system, text parts
// joined, an earlier answer's output_text as the assistant's); sampling
// settings reach the runtime and are echoed.
func TestResponses_Messages(t *testing.T) {
	f := newFixture(t)
	body := `{"model":"base","instructions":"Be brief.","temperature":0.5,"top_p":0.9,"input":[
		{"role":"developer","content":"Use English."},
		{"role":"user","content":[{"type":"input_text","text":"Hi "},{"type":"input_text","text":"there"}]},
		{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello!","annotations":[]}]},
		{"type":"message","role":"user","content":"Again"}]}`
	_, r := postResponses(t, f, body)
	if r.Instructions == nil || *r.Instructions != "Be brief." || r.Temperature != 0.5 || r.TopP != 0.9 {
		t.Errorf("echo %+v", r)
	}
	req := f.gen.lastReq.Load()
	m := req.Messages
	want := []nozzle.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "system", Content: "Use English."},
		{Role: "user", Content: "Hi there"}, {Role: "assistant", Content: "Hello!"}, {Role: "user", Content: "Again"}}
	if len(m) != len(want) {
		t.Fatalf("messages %+v", m)
	}
	for i := range want {
		if m[i].Role != want[i].Role || m[i].Content != want[i].Content {
			t.Errorf("message %d: %+v, want %+v", i, m[i], want[i])
		}
	}
	if req.Temperature != 0.5 || req.TopP != 0.9 {
		t.Errorf("sampling %v %v", req.Temperature, req.TopP)
	}
}

const respWeatherTools = `"tools":[{"type":"function","name":"get_weather","description":"Weather of a city.",` +
	`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}]`

// TestResponses_FunctionCalls: flat function tools reach the runtime as
// chat tools; the model's call comes back as a function_call item; the
// call and its output, handed back as input items, reach the runtime as
// an assistant's tool_calls and a tool message. Streamed, the call's items
// come at the end.
func TestResponses_FunctionCalls(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"Let me check.", "\n<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>"))
	_, r := postResponses(t, f, `{"model":"base",`+respWeatherTools+`,"tool_choice":"auto","input":"Weather in Zürich?"}`)
	if len(r.Output) != 2 || r.Output[0].Type != "message" || r.outputText() != "Let me check.\n" {
		t.Fatalf("output %+v", r.Output)
	}
	fc := r.Output[1]
	if fc.Type != "function_call" || !strings.HasPrefix(fc.ID, "fc_") || !strings.HasPrefix(fc.CallID, "call_") || fc.Name != "get_weather" ||
		fc.Arguments != `{"city":"Zürich"}` || fc.Status != "completed" || r.Status != "completed" {
		t.Errorf("call %+v", fc)
	}
	if !strings.Contains(string(r.Tools), `"name":"get_weather"`) || strings.Contains(string(r.Tools), `"function":{`) {
		t.Errorf("tools echoed %s", r.Tools)
	}
	req := f.gen.lastReq.Load()
	var tools []struct {
		Type     string
		Function struct {
			Name       string
			Parameters json.RawMessage
		}
	}
	if json.Unmarshal(req.Tools, &tools) != nil || len(tools) != 1 || tools[0].Type != "function" || tools[0].Function.Name != "get_weather" || len(tools[0].Function.Parameters) == 0 {
		t.Errorf("tools sent to the runtime: %s", req.Tools)
	}

	// The round trip: the call and its output back as input items.
	items, _ := json.Marshal([]any{
		map[string]any{"role": "user", "content": "Weather in Zürich?"},
		map[string]any{"type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "Let me check.\n", "annotations": []any{}}}},
		map[string]any{"type": "function_call", "id": fc.ID, "call_id": fc.CallID, "name": fc.Name, "arguments": fc.Arguments, "status": "completed"},
		map[string]any{"type": "function_call_output", "call_id": fc.CallID, "output": `{"temp":19}`},
	})
	postResponses(t, f, `{"model":"base",`+respWeatherTools+`,"input":`+string(items)+`}`)
	m := f.gen.lastReq.Load().Messages
	if len(m) != 3 || m[1].Role != "assistant" || m[1].Content != "Let me check.\n" || len(m[1].ToolCalls) != 1 ||
		m[1].ToolCalls[0].ID != fc.CallID || m[1].ToolCalls[0].Function.Name != "get_weather" || m[1].ToolCalls[0].Function.Arguments != `{"city":"Zürich"}` ||
		m[2].Role != "tool" || m[2].ToolCallID != fc.CallID || m[2].Content != `{"temp":19}` {
		t.Errorf("messages sent to the runtime: %+v", m)
	}

	// A named function forced.
	postResponses(t, f, `{"model":"base",`+respWeatherTools+`,"tool_choice":{"type":"function","name":"get_weather"},"input":"Weather?"}`)
	if got := f.gen.lastReq.Load().ToolChoice; got != "get_weather" {
		t.Errorf("tool choice %q", got)
	}

	// Streamed: the text, then the call's events, then the whole response.
	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","stream":true,`+respWeatherTools+`,"input":"Weather?"}`, f.authA())))
	var types []string
	for _, e := range evs {
		types = append(types, e.typ)
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta+ " +
		"response.output_text.done response.content_part.done response.output_item.done response.output_item.added " +
		"response.function_call_arguments.delta response.function_call_arguments.done response.output_item.done response.completed"
	if got := collapse(types); got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}
	last := evs[len(evs)-1].response
	if last == nil || len(last.Output) != 2 || last.Output[1].Arguments != `{"city":"Zürich"}` || last.outputText() != "Let me check.\n" {
		t.Errorf("final response %+v", last)
	}
}

type respEvent struct {
	typ      string
	seq      int
	raw      map[string]json.RawMessage
	response *responseObj
}

// respEvents reads a Responses stream: named events whose data carry the
// same type and increasing sequence numbers, no [DONE].
func respEvents(t *testing.T, body string) []respEvent {
	t.Helper()
	var out []respEvent
	for _, block := range strings.Split(body, "\n\n") {
		if block == "" {
			continue
		}
		name, data, ok := strings.Cut(block, "\n")
		if !ok || !strings.HasPrefix(name, "event: ") || !strings.HasPrefix(data, "data: ") {
			t.Fatalf("not a named event: %q", block)
		}
		var e respEvent
		e.typ = strings.TrimPrefix(name, "event: ")
		if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &e.raw); err != nil {
			t.Fatalf("%v: %s", err, data)
		}
		var typ string
		json.Unmarshal(e.raw["type"], &typ)
		json.Unmarshal(e.raw["sequence_number"], &e.seq)
		if typ != e.typ || e.seq != len(out) {
			t.Errorf("event %q: type %q, sequence_number %d, want %d", e.typ, typ, e.seq, len(out))
		}
		if r, ok := e.raw["response"]; ok {
			e.response = new(responseObj)
			if err := json.Unmarshal(r, e.response); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, e)
	}
	return out
}

// collapse joins event types, runs of a delta as one "type+".
func collapse(types []string) string {
	var out []string
	for i, ty := range types {
		if strings.HasSuffix(ty, "output_text.delta") {
			if i > 0 && types[i-1] == ty {
				continue
			}
			ty += "+"
		}
		out = append(out, ty)
	}
	return strings.Join(out, " ")
}

// TestResponses_Stream: a streamed response's events in order, the text
// in deltas, the final event with the whole response and its usage,
// metered once, before the final event went out.
func TestResponses_Stream(t *testing.T) {
	f := newFixture(t)
	resp := f.do(http.MethodPost, "/v1/responses", `{"model":"base","stream":true,"input":"hi"}`, f.authA())
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rid := resp.Header.Get("X-Request-Id")
	body := readAll(t, resp)
	if strings.Contains(body, "[DONE]") {
		t.Errorf("a [DONE] line")
	}
	evs := respEvents(t, body)
	var types []string
	text := ""
	for _, e := range evs {
		types = append(types, e.typ)
		if e.typ == "response.output_text.delta" {
			var d string
			json.Unmarshal(e.raw["delta"], &d)
			text += d
		}
	}
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta+ " +
		"response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := collapse(types); got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}
	if text != "Hello from the fake runtime." {
		t.Errorf("text %q", text)
	}
	first, last := evs[0].response, evs[len(evs)-1].response
	if first == nil || first.Status != "in_progress" || first.ID != "resp_"+rid || len(first.Output) != 0 || first.Usage != nil {
		t.Errorf("created %+v", first)
	}
	if last == nil || last.Status != "completed" || last.ID != "resp_"+rid || last.outputText() != text || last.Usage == nil || last.Usage.OutputTokens != 6 {
		t.Fatalf("completed %+v", last)
	}
	ev := f.events()
	if len(ev) != 1 || ev[0].RequestID != rid || ev[0].CompletionTokens != 6 || ev[0].PromptTokens != last.Usage.InputTokens || ev[0].Status != nozzle.UsageOK {
		t.Errorf("usage events %+v", ev)
	}

	// An error after the stream began: an error event, no completed.
	body = readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","stream":true,"input":"FAIL_AFTER"}`, f.authA()))
	evs = respEvents(t, body)
	if l := evs[len(evs)-1]; l.typ != "error" || len(l.raw["message"]) == 0 {
		t.Errorf("failed stream's last event %+v", l)
	}
}

// TestResponses_Limits: max_output_tokens stops the answer, which is
// incomplete (streamed: response.incomplete); text.format json_schema
// reaches the runtime as chat's response_format does.
func TestResponses_Limits(t *testing.T) {
	f := newFixture(t)
	_, r := postResponses(t, f, `{"model":"base","input":"hi","max_output_tokens":3}`)
	if r.Status != "incomplete" || r.IncompleteDetails == nil || r.IncompleteDetails.Reason != "max_output_tokens" ||
		r.outputText() != "Hello from the" || r.MaxOutputTokens == nil || *r.MaxOutputTokens != 3 || r.Output[0].Status != "incomplete" {
		t.Errorf("%+v", r)
	}
	if got := f.gen.lastReq.Load().MaxTokens; got != 3 {
		t.Errorf("max tokens %d", got)
	}
	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","max_output_tokens":3,"stream":true}`, f.authA())))
	if l := evs[len(evs)-1]; l.typ != "response.incomplete" || l.response.IncompleteDetails == nil || l.response.Usage.OutputTokens != 3 {
		t.Errorf("last event %+v", l)
	}

	schema := `{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}`
	_, r = postResponses(t, f, `{"model":"base","input":"json","text":{"format":{"type":"json_schema","name":"thing","schema":`+schema+`,"strict":true}}}`)
	req := f.gen.lastReq.Load()
	if req.ResponseFormat != nozzle.ResponseFormatJSONSchema || string(req.ResponseSchema) != schema {
		t.Errorf("format %q %s", req.ResponseFormat, req.ResponseSchema)
	}
	if !strings.Contains(string(r.Text), `"name":"thing"`) {
		t.Errorf("text echoed %s", r.Text)
	}
	postResponses(t, f, `{"model":"base","input":"json","text":{"format":{"type":"json_object"}}}`)
	if req := f.gen.lastReq.Load(); req.ResponseFormat != nozzle.ResponseFormatJSONObject {
		t.Errorf("format %q", req.ResponseFormat)
	}
}

// TestResponses_Idempotency: a retry with the Idempotency-Key is the
// stored Response, streamed or not, charged once.
func TestResponses_Idempotency(t *testing.T) {
	f := newFixture(t)
	body := `{"model":"base","input":"hi"}`
	r1 := f.do(http.MethodPost, "/v1/responses", body, f.authA(), hdr("Idempotency-Key", "r-1"))
	b1 := readAll(t, r1)
	r2 := f.do(http.MethodPost, "/v1/responses", body, f.authA(), hdr("Idempotency-Key", "r-1"))
	if b2 := readAll(t, r2); b1 != b2 || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay\n%s\n%s", b1, b2)
	}
	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","stream":true}`, f.authA(), hdr("Idempotency-Key", "r-1"))))
	if l := evs[len(evs)-1]; l.typ != "response.completed" || l.response.outputText() != "Hello from the fake runtime." {
		t.Errorf("replayed stream's last event %+v", l)
	}
	if len(f.events()) != 1 {
		t.Errorf("%d usage events", len(f.events()))
	}
	// The key of a chat completion is another endpoint's.
	resp := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("Idempotency-Key", "r-1"))
	if resp.StatusCode != 409 {
		t.Errorf("chat with a responses key: %d", resp.StatusCode)
	}
}

// TestResponses_Refused: what this server cannot do is refused as OpenAI
// refuses a parameter, naming it.
func TestResponses_Refused(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes, defaultWords...))
	for _, tc := range []struct {
		name, body, code, param string
	}{
		{"PreviousResponseType", `{"model":"base","input":"hi","previous_response_id":5}`, "invalid_type", "previous_response_id"},
		{"PreviousResponseEmpty", `{"model":"base","input":"hi","previous_response_id":""}`, "invalid_value", "previous_response_id"},
		{"ConversationType", `{"model":"base","input":"hi","conversation":5}`, "invalid_type", "conversation"},
		{"ConversationID", `{"model":"base","input":"hi","conversation":"resp_1"}`, "invalid_value", "conversation"},
		{"ConversationPath", `{"model":"base","input":"hi","conversation":"conv_../x"}`, "invalid_value", "conversation"},
		{"ConversationObjectID", `{"model":"base","input":"hi","conversation":{"id":5}}`, "invalid_type", "conversation.id"},
		{"ConversationObjectNoID", `{"model":"base","input":"hi","conversation":{}}`, "missing_required_parameter", "conversation.id"},
		{"ConversationObjectMember", `{"model":"base","input":"hi","conversation":{"id":"conv_1","x":1}}`, "unknown_parameter", "conversation.x"},
		{"ConversationAndPrevious", `{"model":"base","input":"hi","conversation":"conv_1","previous_response_id":"resp_1"}`, "invalid_parameter_combination", "conversation"},
		{"Background", `{"model":"base","input":"hi","background":true}`, "unsupported_value", "background"},
		{"Include", `{"model":"base","input":"hi","include":["reasoning.encrypted_content"]}`, "unsupported_parameter", "include"},
		{"Reasoning", `{"model":"base","input":"hi","reasoning":{"effort":"high"}}`, "unsupported_parameter", "reasoning.effort"},
		{"Unknown", `{"model":"base","input":"hi","n":2}`, "", "n"},
		{"NoInput", `{"model":"base"}`, "missing_required_parameter", "input"},
		{"NoModel", `{"input":"hi"}`, "missing_required_parameter", "model"},
		{"EmptyInput", `{"model":"base","input":[]}`, "empty_array", "input"},
		{"Image", `{"model":"base","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/y.png"}]}]}`, "unsupported_value", "input[0].content[0].type"},
		{"FileItem", `{"model":"base","input":[{"type":"item_reference","id":"x"}]}`, "unsupported_value", "input[0].type"},
		{"Role", `{"model":"base","input":[{"role":"tool","content":"x"}]}`, "invalid_value", "input[0].role"},
		{"WebSearch", `{"model":"base","input":"hi","tools":[{"type":"web_search"}]}`, "unsupported_value", "tools[0].type"},
		{"ToolName", `{"model":"base","input":"hi","tools":[{"type":"function","name":"a b"}]}`, "invalid_value", "tools[0].name"},
		{"ToolChoiceUnknown", `{"model":"base","input":"hi","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}`, "invalid_value", "tool_choice.name"},
		{"ToolChoiceHosted", `{"model":"base","input":"hi","tool_choice":{"type":"file_search"}}`, "unsupported_value", "tool_choice.type"},
		{"FormatNoName", `{"model":"base","input":"hi","text":{"format":{"type":"json_schema","schema":{}}}}`, "missing_required_parameter", "text.format.name"},
		{"FormatType", `{"model":"base","input":"hi","text":{"format":{"type":"yaml"}}}`, "invalid_value", "text.format.type"},
		{"MaxOutputTokens", `{"model":"base","input":"hi","max_output_tokens":0}`, "integer_below_min_value", "max_output_tokens"},
		{"Temperature", `{"model":"base","input":"hi","temperature":3}`, "decimal_above_max_value", "temperature"},
		{"Truncation", `{"model":"base","input":"hi","truncation":"auto"}`, "unsupported_value", "truncation"},
		{"CallNoID", `{"model":"base","input":[{"type":"function_call_output","output":"x"}]}`, "missing_required_parameter", "input[0].call_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(http.MethodPost, "/v1/responses", tc.body, f.authA())
			wantError(t, resp, 400, "invalid_request_error", tc.code, tc.param)
		})
	}
	if n := len(f.events()); n != 0 {
		t.Errorf("%d usage events for refused requests", n)
	}
	// No key: refused as every inference endpoint refuses it.
	if resp := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`); resp.StatusCode != 401 {
		t.Errorf("without a key: %d", resp.StatusCode)
	}
}

// TestResponses_Reasoning: a reasoning model's thoughts are a reasoning
// item before the message, streamed or not; its thought tokens are
// counted as reasoning tokens.
func TestResponses_Reasoning(t *testing.T) {
	f := newFixture(t, withReasoning(false, "<think>", "\nThe user", " greets me.\n", "</think>", "\n\n", "Hello!"))
	_, r := postResponses(t, f, `{"model":"base","input":"hi"}`)
	if len(r.Output) != 2 || r.Output[0].Type != "reasoning" || len(r.Output[0].Content) != 1 || r.Output[0].Content[0].Text != "The user greets me." ||
		r.outputText() != "Hello!" || r.Usage.OutputTokensDetails.ReasoningTokens == nil || *r.Usage.OutputTokensDetails.ReasoningTokens == 0 {
		t.Errorf("%+v", r)
	}
	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","stream":true}`, f.authA())))
	var types []string
	for _, e := range evs {
		types = append(types, e.typ)
	}
	want := "response.created response.in_progress response.output_item.added response.output_item.done response.output_item.added " +
		"response.content_part.added response.output_text.delta+ response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := collapse(types); got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}
	if l := evs[len(evs)-1].response; len(l.Output) != 2 || l.Output[0].Content[0].Text != "The user greets me." || l.outputText() != "Hello!" {
		t.Errorf("completed %+v", l)
	}
	// The output handed back: the thoughts go with the assistant's turn.
	out, _ := json.Marshal(r.Output)
	postResponses(t, f, `{"model":"base","input":[{"role":"user","content":"hi"},`+strings.Trim(string(out), "[]")+`,{"role":"user","content":"Again"}]}`)
	if m := f.gen.lastReq.Load().Messages; len(m) != 3 || m[1].Role != "assistant" || m[1].ReasoningContent != "The user greets me." || m[1].Content != "Hello!" {
		t.Errorf("messages %+v", m)
	}
}
