package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

const weatherFunctions = `"functions":[{"name":"get_weather","description":"Weather of a city.",` +
	`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`

// functionAnswer is a chat answer to a request with legacy functions.
type functionAnswer struct {
	Choices []struct {
		Message struct {
			Content      *string
			FunctionCall *nozzle.FunctionCall `json:"function_call"`
			ToolCalls    json.RawMessage      `json:"tool_calls"`
		}
		Logprobs     *struct{ Content []json.RawMessage }
		FinishReason string `json:"finish_reason"`
	}
	Usage struct {
		CompletionTokens int `json:"completion_tokens"`
	}
}

// streamedFunction is one choice of a streamed answer to a request with
// legacy functions: its content, its delta.function_call pieces (the
// name from the first), its finish reason, and whether a delta had
// tool_calls.
type streamedFunction struct {
	content, name, arguments, finish string
	pieces, logprobs                 int
	toolCalls                        bool
}

// streamedFunctions reads a streamed chat answer by choice, and its usage
// chunk's completion tokens (-1 without one).
func streamedFunctions(t *testing.T, body string) ([]streamedFunction, int) {
	t.Helper()
	var out []streamedFunction
	usage := -1
	for _, e := range sseEvents(t, body) {
		if e == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Index int
				Delta struct {
					Content      *string
					FunctionCall *struct {
						Name      *string
						Arguments *string
					} `json:"function_call"`
					ToolCalls json.RawMessage `json:"tool_calls"`
				}
				Logprobs     *struct{ Content []json.RawMessage }
				FinishReason *string `json:"finish_reason"`
			}
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("%v: %s", err, e)
		}
		if c.Usage != nil {
			usage = c.Usage.CompletionTokens
		}
		for _, ch := range c.Choices {
			for len(out) <= ch.Index {
				out = append(out, streamedFunction{})
			}
			s := &out[ch.Index]
			if ch.Delta.Content != nil {
				s.content += *ch.Delta.Content
			}
			if fc := ch.Delta.FunctionCall; fc != nil {
				if (fc.Name != nil) != (s.pieces == 0) {
					t.Errorf("the name in delta %d of the call: %s", s.pieces, e)
				}
				if fc.Name != nil {
					s.name = *fc.Name
				}
				if fc.Arguments != nil {
					s.arguments += *fc.Arguments
				}
				s.pieces++
			}
			s.toolCalls = s.toolCalls || len(ch.Delta.ToolCalls) > 0
			if ch.Logprobs != nil {
				s.logprobs += len(ch.Logprobs.Content)
			}
			if ch.FinishReason != nil {
				s.finish = *ch.FinishReason
			}
		}
	}
	return out, usage
}

// TestFunctions_Hermes: a request with the legacy functions is answered
// as OpenAI answers one, the model's call as message.function_call and
// finish_reason "function_call" (streamed: delta.function_call, the name,
// then the arguments), stored and replayed alike; the functions reach
// the runtime as tools, and an earlier function_call and the function
// message answering it as a tool call and its result, under one id.
func TestFunctions_Hermes(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"Let me check.", "\n<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>"))
	conversation := `"messages":[{"role":"user","content":"Weather in Bern?"},` +
		`{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"city\":\"Bern\"}"}},` +
		`{"role":"function","name":"get_weather","content":"{\"temp\":19}"},{"role":"user","content":"And Zürich?"}]`
	body := `{"model":"base",` + weatherFunctions + `,` + conversation + `}`
	stream := strings.Replace(body, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1)

	raw := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "functions-1")))
	var out functionAnswer
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	c := out.Choices[0]
	if c.Message.Content == nil || *c.Message.Content != "Let me check.\n" || c.FinishReason != "function_call" || c.Message.ToolCalls != nil {
		t.Fatalf("answer %s", raw)
	}
	if fc := c.Message.FunctionCall; fc == nil || fc.Name != "get_weather" || fc.Arguments != `{"city":"Zürich"}` {
		t.Errorf("function_call %+v", fc)
	}
	req := f.gen.lastReq.Load()
	if !strings.HasPrefix(string(req.Tools), `[{"type":"function","function":{"name":"get_weather",`) || req.ToolChoice != "" {
		t.Errorf("tools sent to the runtime: %s, choice %q", req.Tools, req.ToolChoice)
	}
	if m := req.Messages; len(m) != 4 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].Function.Arguments != `{"city":"Bern"}` ||
		m[2].Role != "tool" || m[2].Name != "get_weather" || m[2].ToolCallID == "" || m[2].ToolCallID != m[1].ToolCalls[0].ID {
		t.Errorf("messages sent to the runtime: %+v", m)
	}
	// The same replayed: the stored answer, and streamed from it.
	if again := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "functions-1"))); again != raw {
		t.Errorf("replay %s\nwant %s", again, raw)
	}

	check := func(what string, ch []streamedFunction, usage int) {
		t.Helper()
		if len(ch) != 1 {
			t.Fatalf("%s: choices %+v", what, ch)
		}
		s := ch[0]
		if s.content != "Let me check.\n" || s.pieces != 2 || s.name != "get_weather" || s.arguments != `{"city":"Zürich"}` || s.finish != "function_call" || s.toolCalls {
			t.Errorf("%s: %+v", what, s)
		}
		if usage != 4 {
			t.Errorf("%s: usage %d", what, usage)
		}
	}
	ch, usage := streamedFunctions(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA(), hdr("Idempotency-Key", "functions-2"))))
	check("streamed", ch, usage)
	ch, usage = streamedFunctions(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA(), hdr("Idempotency-Key", "functions-2"))))
	check("stream replayed", ch, usage)
	ch, usage = streamedFunctions(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA(), hdr("Idempotency-Key", "functions-1"))))
	check("stored answer streamed", ch, usage)
	out = functionAnswer{}
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "functions-2")), &out)
	if fc := out.Choices[0].Message.FunctionCall; fc == nil || fc.Arguments != `{"city":"Zürich"}` || out.Choices[0].FinishReason != "function_call" {
		t.Errorf("streamed answer replayed: %+v", out)
	}

	// function_call "none": the model is not offered the functions.
	out = functionAnswer{}
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","function_call":"none",`+weatherFunctions+`,`+conversation+`}`, f.authA()), &out)
	if r := f.gen.lastReq.Load(); r.Tools != nil || out.Choices[0].FinishReason != "stop" || out.Choices[0].Message.FunctionCall != nil {
		t.Errorf("function_call none: tools %s, answer %+v", r.Tools, out)
	}
	// Each usage event is the tokens the answer said, as for tools.
	for _, ev := range f.events() {
		if ev.CompletionTokens != 4 {
			t.Errorf("event %s: %d completion tokens", ev.RequestID, ev.CompletionTokens)
		}
	}
}

// TestFunctions_OneCall: the legacy answer has one call; the runtime is
// asked to end with the model's first (nozzle.GenerateRequest.OneCall),
// and only the tokens up to it are generated and counted. n choices each
// have theirs, with logprobs, streamed or not.
func TestFunctions_OneCall(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatLlama3JSON,
		"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Bern\"}}", "; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Basel\"}}"))
	body := `{"model":"base","n":2,"logprobs":true,` + weatherFunctions + `,"messages":[{"role":"user","content":"Bern and Basel?"}]}`
	raw := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()))
	var out functionAnswer
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if len(out.Choices) != 2 || strings.Contains(raw, "tool_calls") {
		t.Fatalf("answer %s", raw)
	}
	for i, c := range out.Choices {
		if c.Message.Content != nil || c.FinishReason != "function_call" || c.Message.FunctionCall == nil || c.Message.FunctionCall.Arguments != `{"city":"Bern"}` ||
			c.Logprobs == nil || len(c.Logprobs.Content) != 1 {
			t.Errorf("choice %d: %+v", i, c)
		}
	}
	if r := f.gen.lastReq.Load(); !r.OneCall || out.Usage.CompletionTokens != 2 {
		t.Errorf("OneCall %v, %d completion tokens (one a choice)", r.OneCall, out.Usage.CompletionTokens)
	}
	ch, usage := streamedFunctions(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1), f.authA())))
	if len(ch) != 2 || usage != 2 {
		t.Fatalf("streamed %+v, usage %d", ch, usage)
	}
	for i, s := range ch {
		if s.content != "" || s.name != "get_weather" || s.arguments != `{"city":"Bern"}` || s.pieces != 2 || s.finish != "function_call" || s.toolCalls || s.logprobs != 1 {
			t.Errorf("streamed choice %d: %+v", i, s)
		}
	}
	// Text stays text.
	text := newFixture(t, withToolFormat(nozzle.ToolFormatLlama3JSON, "It is", " sunny."))
	out = functionAnswer{}
	decode(t, text.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherFunctions+`,"messages":[{"role":"user","content":"Bern?"}]}`, text.authA()), &out)
	if c := out.Choices[0]; c.Message.Content == nil || *c.Message.Content != "It is sunny." || c.Message.FunctionCall != nil || c.FinishReason != "stop" {
		t.Errorf("text: %+v", out)
	}
}

// TestFunctions_Forced: function_call {"name": …} forces the call as
// tool_choice does (nozzle.GenerateRequest.ToolChoice); a model whose
// calls cannot be forced, or that has no tools, refuses it naming the
// legacy parameter.
func TestFunctions_Forced(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"<tool_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Bern\"}}\n</tool_call>"))
	msgs := `"messages":[{"role":"user","content":"Weather in Bern?"}]`
	var out functionAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherFunctions+`,"function_call":{"name":"get_weather"},`+msgs+`}`, f.authA()), &out)
	if got := f.gen.lastReq.Load().ToolChoice; got != "get_weather" {
		t.Errorf("the runtime got tool_choice %q", got)
	}
	if c := out.Choices[0]; c.FinishReason != "function_call" || c.Message.Content != nil || c.Message.FunctionCall == nil || c.Message.FunctionCall.Name != "get_weather" {
		t.Errorf("answer %+v", out)
	}

	v11 := newFixture(t, withToolFormat(nozzle.ToolFormatMistralV11, "[TOOL_CALLS]get_weather[ARGS]{}"))
	e := wantError(t, v11.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherFunctions+`,"function_call":{"name":"get_weather"},`+msgs+`}`, v11.authA()),
		http.StatusBadRequest, "invalid_request_error", "unsupported_value", "function_call")
	if !strings.Contains(e.Error.Message, "'function_call' \"auto\"") {
		t.Errorf("message %q", e.Error.Message)
	}
	plain := newFixture(t)
	e = wantError(t, plain.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherFunctions+`,`+msgs+`}`, plain.authA()),
		http.StatusBadRequest, "invalid_request_error", "unsupported_value", "functions")
	if !strings.Contains(e.Error.Message, "'functions' cannot be offered") {
		t.Errorf("message %q", e.Error.Message)
	}
	// With function_call "none" the functions are not offered: a model
	// without tools answers.
	if r := plain.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","function_call":"none",`+weatherFunctions+`,`+msgs+`}`, plain.authA()); r.StatusCode != 200 {
		t.Errorf("none: %d %s", r.StatusCode, readAll(t, r))
	}
	// Refusals reach the client as OpenAI's, naming the legacy parameter.
	wantError(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherFunctions+`,`+weatherTools+`,`+msgs+`}`, f.authA()),
		http.StatusBadRequest, "invalid_request_error", "invalid_parameter_combination", "functions")
	wantError(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherFunctions+`,"function_call":{"name":"get_time"},`+msgs+`}`, f.authA()),
		http.StatusBadRequest, "invalid_request_error", "invalid_value", "function_call.name")
	if n := len(f.events()); n != 1 {
		t.Errorf("%d usage events, want the one answered", n)
	}
}
