package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/gateway"
)

// TestChatTemplateKwargs: chat_template_kwargs reach the runtime as a
// compact object; they are refused (400 naming them) when not an object of
// named variables within bounds, when they would set a variable the
// server sets, and where the runtime cannot render them.
func TestChatTemplateKwargs(t *testing.T) {
	f := newFixture(t)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"chat_template_kwargs":{ "enable_thinking" : false, "date_string": "26 Jul 2024", "x": {"b": [1, null], "a": 2.5} }}`, f.authA())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, readAll(t, resp))
	}
	readAll(t, resp)
	if got := string(f.gen.lastReq.Load().ChatTemplateKwargs); got != `{"enable_thinking":false,"date_string":"26 Jul 2024","x":{"b":[1,null],"a":2.5}}` {
		t.Errorf("runtime got %s", got)
	}
	for _, none := range []string{`null`, `{}`} {
		readAll(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"chat_template_kwargs":`+none+`}`, f.authA()))
		if got := f.gen.lastReq.Load().ChatTemplateKwargs; got != nil {
			t.Errorf("%s: runtime got %s", none, got)
		}
	}

	deep := strings.Repeat(`[`, 17) + strings.Repeat(`]`, 17)
	many := make([]string, 65)
	for i := range many {
		many[i] = `"v` + itoa(i) + `":1`
	}
	for _, tc := range []struct{ name, kwargs, code string }{
		{"Array", `[{"enable_thinking": false}]`, "invalid_type"},
		{"String", `"enable_thinking=false"`, "invalid_type"},
		{"Messages", `{"messages": []}`, "invalid_value"},
		{"Tools", `{"tools": null}`, "invalid_value"},
		{"AddGenerationPrompt", `{"add_generation_prompt": false}`, "invalid_value"},
		{"BOS", `{"bos_token": ""}`, "invalid_value"},
		{"EOS", `{"enable_thinking": true, "eos_token": "</s>"}`, "invalid_value"},
		{"NotAName", `{"enable-thinking": false}`, "invalid_value"},
		{"EmptyName", `{"": 1}`, "invalid_value"},
		{"TooMany", `{` + strings.Join(many, ",") + `}`, "invalid_value"},
		{"TooBig", `{"s": "` + strings.Repeat("x", 17<<10) + `"}`, "invalid_value"},
		{"TooDeep", `{"d": ` + deep + `}`, "invalid_value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"chat_template_kwargs":`+tc.kwargs+`}`, f.authA())
			wantError(t, resp, http.StatusBadRequest, "invalid_request_error", tc.code, "chat_template_kwargs")
		})
	}
	// Legacy completions have no template.
	wantError(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"hi","chat_template_kwargs":{}}`, f.authA()),
		http.StatusBadRequest, "invalid_request_error", "", "")

	old := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gen.noKwargs = true })
	wantError(t, old.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`,"chat_template_kwargs":{"enable_thinking":false}}`, old.authA()),
		http.StatusBadRequest, "invalid_request_error", "unsupported_value", "chat_template_kwargs")
	if resp := old.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+msgs+`}`, old.authA()); resp.StatusCode != http.StatusOK {
		t.Errorf("without them: %d", resp.StatusCode)
	}
}

// TestReasoningContentIn: an assistant message sent back with its
// reasoning_content (a reasoning model's multi-turn conversation) is
// accepted and hands it to the template; one of another type is refused;
// on other roles it changes nothing.
func TestReasoningContentIn(t *testing.T) {
	f := newFixture(t)
	body := `{"model":"base","messages":[{"role":"user","content":"hi"},` +
		`{"role":"assistant","content":"Hello.","reasoning_content":"Greet back.","refusal":null},` +
		`{"role":"user","content":"again","reasoning_content":"ignored"}]}`
	resp := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, readAll(t, resp))
	}
	m := f.gen.lastReq.Load().Messages
	if len(m) != 3 || m[1].ReasoningContent != "Greet back." || m[1].Content != "Hello." || m[2].ReasoningContent != "" {
		t.Errorf("messages sent to the runtime: %+v", m)
	}
	for _, v := range []string{`null`} {
		readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `"Greet back."`, v, 1), f.authA()))
		if m := f.gen.lastReq.Load().Messages; m[1].ReasoningContent != "" {
			t.Errorf("%s: %+v", v, m[1])
		}
	}
	wantError(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `"Greet back."`, `["x"]`, 1), f.authA()),
		http.StatusBadRequest, "invalid_request_error", "invalid_type", "messages[1].reasoning_content")
}
