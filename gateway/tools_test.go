package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

const weatherTools = `"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather of a city.",` +
	`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`

func withToolFormat(format string, words ...string) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		f.gen.toolFormat = format
		f.gen.words = words
	}
}

type toolAnswer struct {
	Choices []struct {
		Message struct {
			Content   *string
			ToolCalls []nozzle.ToolCall `json:"tool_calls"`
		}
		FinishReason string `json:"finish_reason"`
	}
}

// streamedTools reads a streamed chat answer: its content, its tool
// calls (each delta's) and its finish reason.
func streamedTools(t *testing.T, body string) (string, []json.RawMessage, string) {
	t.Helper()
	var content, finish string
	var calls []json.RawMessage
	for _, e := range sseEvents(t, body) {
		if e == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content   *string
					ToolCalls []json.RawMessage `json:"tool_calls"`
				}
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("%v: %s", err, e)
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil {
				content += *ch.Delta.Content
			}
			calls = append(calls, ch.Delta.ToolCalls...)
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	return content, calls, finish
}

// TestTools_Hermes: a model taught the <tool_call> format calls a tool;
// the call comes back as OpenAI's tool_calls, whole or streamed, with the
// same id in a replay; the request's tools, earlier calls and results
// reach the runtime.
func TestTools_Hermes(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"Let me check.", "\n<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>"))
	conversation := `"messages":[{"role":"user","content":"Weather in Bern?"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Bern\"}"}}]},` +
		`{"role":"tool","tool_call_id":"call_a","content":"{\"temp\":19}"},{"role":"user","content":"And Zürich?"}]`
	body := `{"model":"base",` + weatherTools + `,` + conversation + `}`

	var out toolAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "tools-1")), &out)
	c := out.Choices[0]
	if c.Message.Content == nil || *c.Message.Content != "Let me check.\n" || c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 {
		t.Fatalf("answer %+v", out)
	}
	call := c.Message.ToolCalls[0]
	if !strings.HasPrefix(call.ID, "call_") || call.Type != "function" || call.Function.Name != "get_weather" || call.Function.Arguments != `{"city":"Zürich"}` {
		t.Errorf("call %+v", call)
	}
	req := f.gen.lastReq.Load()
	if string(req.Tools) == "" || !strings.Contains(string(req.Tools), `"get_weather"`) {
		t.Errorf("tools sent to the runtime: %s", req.Tools)
	}
	if m := req.Messages; len(m) != 4 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].Function.Arguments != `{"city":"Bern"}` || m[2].Role != "tool" || m[2].ToolCallID != "call_a" {
		t.Errorf("messages sent to the runtime: %+v", m)
	}

	// Streamed: the text before the call as content, the call as one delta.
	resp := f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA(), hdr("Idempotency-Key", "tools-2"))
	content, calls, finish := streamedTools(t, readAll(t, resp))
	var sc struct {
		Index int
		nozzle.ToolCall
	}
	if len(calls) != 1 || json.Unmarshal(calls[0], &sc) != nil {
		t.Fatalf("streamed calls %s", calls)
	}
	if content != "Let me check.\n" || finish != "tool_calls" || sc.Index != 0 || sc.Function.Name != "get_weather" || sc.Function.Arguments != `{"city":"Zürich"}` {
		t.Errorf("streamed %q %s %q", content, calls, finish)
	}
	// The stored answer replays the call under the id the stream gave.
	var again toolAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "tools-2")), &again)
	if len(again.Choices) != 1 || len(again.Choices[0].Message.ToolCalls) != 1 || again.Choices[0].Message.ToolCalls[0].ID != sc.ID {
		t.Errorf("replay %+v, streamed id %s", again, sc.ID)
	}
	_, replayed, _ := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA(), hdr("Idempotency-Key", "tools-2"))))
	if len(replayed) != 1 || !strings.Contains(string(replayed[0]), sc.ID) {
		t.Errorf("streamed replay %s", replayed)
	}

	// tool_choice "none": the model is not offered the tools.
	out = toolAnswer{}
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","tool_choice":"none",`+weatherTools+`,`+conversation+`}`, f.authA()), &out)
	if r := f.gen.lastReq.Load(); r.Tools != nil || out.Choices[0].FinishReason != "stop" || len(out.Choices[0].Message.ToolCalls) != 0 {
		t.Errorf("tool_choice none: tools %s, answer %+v", r.Tools, out)
	}
}

// TestTools_TextStaysText: an answer that only looks like the start of a
// call, or whose call is malformed, is content, streamed or not.
func TestTools_TextStaysText(t *testing.T) {
	for _, tc := range []struct {
		name, format string
		words        []string
	}{
		{"HermesPrefix", nozzle.ToolFormatHermes, []string{"a <tool", "box> here"}},
		{"HermesBadJSON", nozzle.ToolFormatHermes, []string{"<tool_call>\n{\"name\": ", "oops}\n</tool_call>"}},
		{"HermesTextAfter", nozzle.ToolFormatHermes, []string{"<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>", " and more"}},
		{"Llama3Text", nozzle.ToolFormatLlama3JSON, []string{"  The weather", " is fine."}},
		{"Llama3UnicodeSpaceText", nozzle.ToolFormatLlama3JSON, []string{"\u00a0", "\u2003The weather", " is {fine}."}},
		{"Llama3BadJSON", nozzle.ToolFormatLlama3JSON, []string{"{\"city\": ", "\"Bern\"}"}},
		{"MistralText", nozzle.ToolFormatMistral, []string{" [1] The weather", " is fine."}},
		{"MistralPrefix", nozzle.ToolFormatMistral, []string{"a [TOOL", "S] here ["}},
		{"MistralBadJSON", nozzle.ToolFormatMistral, []string{"[{\"name\": ", "oops}]"}},
		{"MistralTextAfter", nozzle.ToolFormatMistral, []string{"[{\"name\":\"f\",\"arguments\":{}}]", " and more"}},
		{"MistralNotCalls", nozzle.ToolFormatMistral, []string{"[\"Bern\", ", "\"Basel\"]"}},
		{"MistralMarkerBadJSON", nozzle.ToolFormatMistral, []string{"Sure. [TOOL_CALLS]", " {oops"}},
		{"MistralV11Text", nozzle.ToolFormatMistralV11, []string{"[1] The weather", " is fine."}},
		{"MistralV11Prefix", nozzle.ToolFormatMistralV11, []string{"a [TOOL", "S] here [", "TOOL_CALL"}},
		{"MistralV11NoMarker", nozzle.ToolFormatMistralV11, []string{"get_weather[ARGS]", "{\"city\": \"Bern\"}"}},
		{"MistralV11BadJSON", nozzle.ToolFormatMistralV11, []string{"[TOOL_CALLS]get_weather[ARGS]", "{\"city\": oops}"}},
		{"MistralV11Unfinished", nozzle.ToolFormatMistralV11, []string{"[TOOL_CALLS]get_weather[ARGS]", "{\"city\": \"Be"}},
		{"MistralV11TextAfter", nozzle.ToolFormatMistralV11, []string{"[TOOL_CALLS]f[ARGS]{}", " and more"}},
		{"MistralV11NoName", nozzle.ToolFormatMistralV11, []string{"[TOOL_CALLS][ARGS]", "{}"}},
		{"MistralV11NotObject", nozzle.ToolFormatMistralV11, []string{"[TOOL_CALLS]f[ARGS]", "[1, 2]"}},
		{"MistralV11NoArguments", nozzle.ToolFormatMistralV11, []string{"Sure. [TOOL_CALLS]f"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, withToolFormat(tc.format, tc.words...))
			want := strings.Join(tc.words, "")
			body := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"hi"}]}`
			var out toolAnswer
			decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
			if c := out.Choices[0]; c.Message.Content == nil || *c.Message.Content != want || len(c.Message.ToolCalls) != 0 || c.FinishReason != "stop" {
				t.Errorf("answer %+v", out)
			}
			content, calls, finish := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA())))
			if content != want || len(calls) != 0 || finish != "stop" {
				t.Errorf("streamed %q %s %q", content, calls, finish)
			}
		})
	}
}

// TestTools_SpaceBeforeCall: space alone before a call is no content,
// streamed or not; streamed in small pieces it is held until the call
// shows, and sent as content where text follows it.
func TestTools_SpaceBeforeCall(t *testing.T) {
	for _, tc := range []struct {
		name    string
		words   []string
		content string // "" and a call, or the content and no call
	}{
		{"Call", []string{"\n", "\n<", "tool", "_call>{\"name\":\"get_weather\",", "\"arguments\":{}}</tool_call>"}, ""},
		{"Text", []string{"\n", " ", "Hi."}, "\n Hi."},
		{"SpaceOnly", []string{"\n", " "}, "\n "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes, tc.words...))
			body := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"hi"}]}`
			calls := 0
			if tc.content == "" {
				calls = 1
			}
			var out toolAnswer
			decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
			if c := out.Choices[0]; len(c.Message.ToolCalls) != calls || (calls == 1) != (c.Message.Content == nil) || calls == 0 && *c.Message.Content != tc.content {
				t.Errorf("answer %+v", out)
			}
			content, streamed, _ := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA())))
			if content != tc.content || len(streamed) != calls {
				t.Errorf("streamed %q %s", content, streamed)
			}
		})
	}
}

// TestTools_Llama3JSON: a Llama 3.1-style answer, one JSON object per call
// (parameters, calls separated by ";"), is calls and no content, streamed
// or not — as are calls in the shapes the runtime's masks let a strict
// function's take in auto mode: whitespace that strings.TrimSpace trims
// before them (Unicode's too, in a piece of its own), ' ' and '\n' around
// the objects' parts and the ';'.
func TestTools_Llama3JSON(t *testing.T) {
	for _, words := range [][]string{
		{"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Bern\"}}", "; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Basel\"}}"},
		{"\u00a0", "\u3000\v\f\r\t \n", "{\n \"name\" :\n\"get_weather\" ,\"parameters\":\n\n{\"city\": \"Bern\" }\n}", " \n;\n ",
			"{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Basel\"}}\n\n"},
	} {
		f := newFixture(t, withToolFormat(nozzle.ToolFormatLlama3JSON, words...))
		body := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"Bern and Basel?"}]}`
		var out toolAnswer
		decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
		c := out.Choices[0]
		if c.Message.Content != nil || c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 2 || c.Message.ToolCalls[0].Function.Arguments != `{"city":"Bern"}` ||
			c.Message.ToolCalls[1].Function.Arguments != `{"city":"Basel"}` || c.Message.ToolCalls[0].ID == c.Message.ToolCalls[1].ID {
			t.Fatalf("%q: answer %+v", words, out)
		}
		content, calls, finish := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA())))
		if content != "" || len(calls) != 2 || finish != "tool_calls" || !strings.Contains(string(calls[1]), `"index":1`) {
			t.Errorf("%q: streamed %q %s %q", words, content, calls, finish)
		}
	}
}

// TestTools_Mistral: Mistral's answers with tool calls are calls with ids
// of 9 alphanumerics, which Mistral's templates demand when the client
// sends the calls back; text before them is content; streamed, stored and
// replayed alike; the next turn, carrying them, is accepted. In the
// v3-style format the calls are a JSON array after [TOOL_CALLS] (a
// control token the decoder mostly leaves out); in that of tokenizers of
// version 11 and later, [TOOL_CALLS]name[ARGS]{...} per call (control
// tokens the runtime keeps in the text of a request with tools), split
// across chunks here.
func TestTools_Mistral(t *testing.T) {
	validID := regexp.MustCompile(`^[A-Za-z0-9]{9}$`)
	bern := `{"name": "get_weather", "arguments": {"city": "Bern"}}`
	basel := `{"name": "get_weather", "arguments": {"city": "Basel"}}`
	for _, tc := range []struct {
		format  string
		name    string
		words   []string
		content string // before the calls
	}{
		{nozzle.ToolFormatMistral, "NoMarker", []string{"[", bern, ", " + basel + "]"}, ""},
		{nozzle.ToolFormatMistral, "Marker", []string{" [TOOL_", "CALLS] [" + bern, ", " + basel + "]"}, ""},
		// the shapes strict functions' masks let v3 calls take in auto
		// mode (the decoder leaves [TOOL_CALLS] out): ASCII whitespace
		// before the array, ' ' and '\n' around its parts
		{nozzle.ToolFormatMistral, "MaskShapes", []string{" \n", "\t[ ", "{\"name\":\"get_weather\" ,\"arguments\":\n{\"city\": \"Bern\"}}", " ,\n",
			`{"name": "get_weather", "arguments": {"city": "Basel"} }`, "\n]", "\n"}, ""},
		{nozzle.ToolFormatMistral, "TextBeforeMarker", []string{"Checking both. [TOOL_CALLS]", "[" + bern + ", " + basel + "]"}, "Checking both. "},
		{nozzle.ToolFormatMistralV11, "OneMarkerEach", []string{"[TOOL_CALLS]get_weather[ARGS]", `{"city": "Bern"}`, `[TOOL_CALLS]get_weather[ARGS]{"city": "Basel"}`}, ""},
		{nozzle.ToolFormatMistralV11, "MarkersSplit", []string{"[TOOL_", "CALLS]get_", "weather[AR", `GS]{"city": `, `"Bern"}[TOOL`, `_CALLS]get_weather[ARGS]{"city": "Basel"}`}, ""},
		{nozzle.ToolFormatMistralV11, "TextBefore", []string{"Checking both. [TOOL", `_CALLS]get_weather[ARGS]{"city": "Bern"}`, `get_weather[ARGS]{"city": "Basel"}`}, "Checking both. "},
		// the shapes strict functions' masks let a call take in auto mode:
		// the marker's text begun in the text, never whole; whitespace
		// after [ARGS] and between calls
		{nozzle.ToolFormatMistralV11, "MaskShapes", []string{"Checking [TOOL_CALLS", "[TOOL_CALLS]get_", "weather[ARGS]", " \n", `{"city": "Bern"}`,
			"\n \n[TOOL_CALLS]get_weather[ARGS]\n" + `{"city": "Basel"}`, "\n"}, "Checking [TOOL_CALLS"},
		{nozzle.ToolFormatMistralV11, "CallIDs", []string{`[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Bern"}`, `[TOOL_CALLS]get_weather[CALL_ID]f5g6h7i8j[ARGS]{"city": "Basel"}`}, ""},
	} {
		t.Run(tc.format+"/"+tc.name, func(t *testing.T) {
			f := newFixture(t, withToolFormat(tc.format, tc.words...))
			body := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"Bern and Basel?"}]}`
			var out toolAnswer
			decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
			c := out.Choices[0]
			if (tc.content == "") != (c.Message.Content == nil) || (c.Message.Content != nil && *c.Message.Content != tc.content) ||
				c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 2 || c.Message.ToolCalls[0].Function.Name != "get_weather" ||
				c.Message.ToolCalls[0].Function.Arguments != `{"city":"Bern"}` || c.Message.ToolCalls[1].Function.Arguments != `{"city":"Basel"}` {
				t.Fatalf("answer %+v", out)
			}
			ids := []string{c.Message.ToolCalls[0].ID, c.Message.ToolCalls[1].ID}
			if !validID.MatchString(ids[0]) || !validID.MatchString(ids[1]) || ids[0] == ids[1] {
				t.Errorf("ids %q: want two different ones of 9 alphanumerics", ids)
			}

			// Streamed: the calls as deltas, with ids of the same form, and
			// the stored answer replays them under those ids.
			idem := hdr("Idempotency-Key", tc.format+"-"+tc.name)
			stream := strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1)
			content, calls, finish := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA(), idem)))
			if content != tc.content || len(calls) != 2 || finish != "tool_calls" {
				t.Fatalf("streamed %q %s %q", content, calls, finish)
			}
			var streamed [2]nozzle.ToolCall
			for k, raw := range calls {
				if err := json.Unmarshal(raw, &streamed[k]); err != nil {
					t.Fatal(err)
				}
				if !validID.MatchString(streamed[k].ID) || streamed[k].Function.Name != "get_weather" {
					t.Errorf("streamed call %s", raw)
				}
			}
			var again toolAnswer
			decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), idem), &again)
			if r := again.Choices[0].Message.ToolCalls; len(r) != 2 || r[0].ID != streamed[0].ID || r[1].ID != streamed[1].ID {
				t.Errorf("replay %+v, streamed %+v", again, streamed)
			}

			// The next turn sends the calls and their results back.
			assistant, err := json.Marshal(map[string]any{"role": "assistant", "content": nil, "tool_calls": c.Message.ToolCalls})
			if err != nil {
				t.Fatal(err)
			}
			next := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"Bern and Basel?"},` + string(assistant) +
				`,{"role":"tool","tool_call_id":"` + ids[0] + `","content":"{\"temp\":19}"}` +
				`,{"role":"tool","tool_call_id":"` + ids[1] + `","content":"{\"temp\":21}"}]}`
			resp := f.do(http.MethodPost, "/v1/chat/completions", next, f.authA())
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("next turn: %d %s", resp.StatusCode, readAll(t, resp))
			}
			m := f.gen.lastReq.Load().Messages
			if len(m) != 4 || len(m[1].ToolCalls) != 2 || m[1].ToolCalls[0].ID != ids[0] || m[1].ToolCalls[1].Function.Arguments != `{"city":"Basel"}` ||
				m[2].ToolCallID != ids[0] || m[3].ToolCallID != ids[1] {
				t.Errorf("messages sent to the runtime: %+v", m)
			}
		})
	}
}

// TestToolCallIDs: an id is the format's (9 alphanumerics for Mistral,
// OpenAI's call_ form otherwise), the same for the same answer, choice
// and call, and different for another.
func TestToolCallIDs(t *testing.T) {
	for _, tc := range []struct {
		format, text string
		valid        *regexp.Regexp
	}{
		{nozzle.ToolFormatMistral, `[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]`, regexp.MustCompile(`^[A-Za-z0-9]{9}$`)},
		{nozzle.ToolFormatMistralV11, `[TOOL_CALLS]a[ARGS]{}[TOOL_CALLS]b[ARGS]{}`, regexp.MustCompile(`^[A-Za-z0-9]{9}$`)},
		{nozzle.ToolFormatHermes, `<tool_call>{"name": "a"}</tool_call><tool_call>{"name": "b"}</tool_call>`, regexp.MustCompile(`^call_[0-9a-f]{24}$`)},
		{nozzle.ToolFormatLlama3JSON, `{"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}`, regexp.MustCompile(`^call_[0-9a-f]{24}$`)},
	} {
		seen := map[string]bool{}
		for _, answer := range []string{"chatcmpl-1", "chatcmpl-2"} {
			for choice := 0; choice < 2; choice++ {
				_, calls := gateway.SplitToolCalls(tc.format, tc.text, answer, choice)
				_, again := gateway.SplitToolCalls(tc.format, tc.text, answer, choice)
				if len(calls) != 2 {
					t.Fatalf("%s: calls %+v", tc.format, calls)
				}
				for k, c := range calls {
					if !tc.valid.MatchString(c.ID) || c.ID != again[k].ID || seen[c.ID] {
						t.Errorf("%s %s/%d/%d: id %q (again %q)", tc.format, answer, choice, k, c.ID, again[k].ID)
					}
					seen[c.ID] = true
				}
			}
		}
	}
}

func TestSplitToolCalls(t *testing.T) {
	for _, tc := range []struct {
		name, format, text, content string
		calls                       []string // name + " " + arguments
	}{
		{"HermesAfterThoughts", nozzle.ToolFormatHermes, "<think>\nI could write <tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call> here.\n</think>\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>", "<think>\nI could write <tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call> here.\n</think>\n\n", []string{`a {}`}},
		{"HermesThoughtsUnclosed", nozzle.ToolFormatHermes, "<think>maybe <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>", "<think>maybe <tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>", nil},
		{"HermesTwo", nozzle.ToolFormatHermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>", "", []string{`a {"x":1}`, `b {}`}},
		{"HermesUnclosed", nozzle.ToolFormatHermes, "ok <tool_call>{\"name\": \"a\", \"arguments\": {\"y\": [1, 2]}}", "ok ", []string{`a {"y":[1,2]}`}},
		{"HermesArgumentsText", nozzle.ToolFormatHermes, "<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"z\\\": true}\"}</tool_call>", "", []string{`a {"z":true}`}},
		{"HermesNoArguments", nozzle.ToolFormatHermes, "<tool_call>{\"name\": \"a\"}</tool_call>", "", []string{`a {}`}},
		{"HermesArgumentsNotObject", nozzle.ToolFormatHermes, "<tool_call>{\"name\": \"a\", \"arguments\": 5}</tool_call>", "<tool_call>{\"name\": \"a\", \"arguments\": 5}</tool_call>", nil},
		{"HermesNoName", nozzle.ToolFormatHermes, "<tool_call>{\"arguments\": {}}</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>", nil},
		{"Llama3Arguments", nozzle.ToolFormatLlama3JSON, " {\"name\": \"a\", \"arguments\": {\"k\": \"v\"}} ", "", []string{`a {"k":"v"}`}},
		{"Llama3NoArguments", nozzle.ToolFormatLlama3JSON, "{\"name\": \"Alice\", \"age\": 30}", "{\"name\": \"Alice\", \"age\": 30}", nil},
		{"Llama3Trailing", nozzle.ToolFormatLlama3JSON, "{\"name\": \"a\", \"parameters\": {}} done", "{\"name\": \"a\", \"parameters\": {}} done", nil},
		{"MistralArray", nozzle.ToolFormatMistral, " [{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]\n", "", []string{`a {"x":1}`, `b {}`}},
		{"MistralMarker", nozzle.ToolFormatMistral, "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"y\": [1, 2]}}]", "", []string{`a {"y":[1,2]}`}},
		{"MistralTextBeforeMarker", nozzle.ToolFormatMistral, "Let me see.[TOOL_CALLS][{\"name\": \"a\"}]", "Let me see.", []string{`a {}`}},
		{"MistralMarkerOneObject", nozzle.ToolFormatMistral, "[TOOL_CALLS] {\"name\": \"a\", \"arguments\": \"{\\\"z\\\": true}\"}", "", []string{`a {"z":true}`}},
		{"MistralObjectWithoutMarker", nozzle.ToolFormatMistral, "{\"name\": \"a\", \"arguments\": {}}", "{\"name\": \"a\", \"arguments\": {}}", nil},
		{"MistralTextBeforeArray", nozzle.ToolFormatMistral, "ok [{\"name\": \"a\"}]", "ok [{\"name\": \"a\"}]", nil},
		{"MistralEmptyArray", nozzle.ToolFormatMistral, "[]", "[]", nil},
		{"MistralParameters", nozzle.ToolFormatMistral, "[{\"name\": \"a\", \"parameters\": {\"k\": 1}}]", "", []string{`a {"k":1}`}},
		{"MistralTrailing", nozzle.ToolFormatMistral, "[{\"name\": \"a\"}] done", "[{\"name\": \"a\"}] done", nil},
		{"MistralNoName", nozzle.ToolFormatMistral, "[{\"arguments\": {}}]", "[{\"arguments\": {}}]", nil},
		{"MistralV11Two", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]a[ARGS]{\"x\": 1}[TOOL_CALLS]b-2[ARGS]{}", "", []string{`a {"x":1}`, `b-2 {}`}},
		{"MistralV11Spaced", nozzle.ToolFormatMistralV11, " \n[TOOL_CALLS]a[ARGS] {\"x\": [1, 2]}\n[TOOL_CALLS]b[ARGS]{}\n", "", []string{`a {"x":[1,2]}`, `b {}`}},
		{"MistralV11TextBefore", nozzle.ToolFormatMistralV11, "Let me see.[TOOL_CALLS]a[ARGS]{}", "Let me see.", []string{`a {}`}},
		{"MistralV11LaterWithoutMarker", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]a[ARGS]{}b[ARGS]{\"k\": \"[ARGS]\"}", "", []string{`a {}`, `b {"k":"[ARGS]"}`}},
		{"MistralV11CallID", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]a[CALL_ID]x1Y2z3W4v[ARGS]{\"q\": true}", "", []string{`a {"q":true}`}},
		{"MistralV11ArgsDropped", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]a{\"q\": 1}", "", []string{`a {"q":1}`}},
		{"MistralV11NoMarker", nozzle.ToolFormatMistralV11, "a[ARGS]{}", "a[ARGS]{}", nil},
		{"MistralV11TextAfter", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]a[ARGS]{} ok", "[TOOL_CALLS]a[ARGS]{} ok", nil},
		{"MistralV11ArgumentsNotObject", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]a[ARGS]\"{}\"", "[TOOL_CALLS]a[ARGS]\"{}\"", nil},
		{"MistralV11NameTooLong", nozzle.ToolFormatMistralV11, "[TOOL_CALLS]" + strings.Repeat("a", 65) + "[ARGS]{}", "[TOOL_CALLS]" + strings.Repeat("a", 65) + "[ARGS]{}", nil},
		{"MistralV11JSONArray", nozzle.ToolFormatMistralV11, "ok [TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"b\": 1}}]", "ok ", []string{`a {"b":1}`}},
		{"MistralV11BadJSONArray", nozzle.ToolFormatMistralV11, "[TOOL_CALLS][{\"name\": \"a\", oops}]", "[TOOL_CALLS][{\"name\": \"a\", oops}]", nil},
		{"NoFormat", "", "<tool_call>{\"name\": \"a\"}</tool_call>", "<tool_call>{\"name\": \"a\"}</tool_call>", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content, calls := gateway.SplitToolCalls(tc.format, tc.text, "chatcmpl-1", 0)
			var got []string
			for _, c := range calls {
				got = append(got, c.Function.Name+" "+c.Function.Arguments)
			}
			if content != tc.content || strings.Join(got, "|") != strings.Join(tc.calls, "|") {
				t.Errorf("got %q %q, want %q %q", content, got, tc.content, tc.calls)
			}
		})
	}
}

// TestTools_AfterThoughts: a reasoning model (Qwen3) thinks first; a
// <tool_call> inside its thoughts is thought, streamed as text, and the
// call after them is the call, streamed or not.
func TestTools_AfterThoughts(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"<thi", "nk>plan: <tool_", "call> maybe</th", "ink>\n", "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}</tool_call>"))
	body := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"Bern?"}]}`
	const thoughts = "<think>plan: <tool_call> maybe</think>\n"
	var out toolAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
	if c := out.Choices[0]; c.Message.Content == nil || *c.Message.Content != thoughts || len(c.Message.ToolCalls) != 1 || c.FinishReason != "tool_calls" {
		t.Fatalf("answer %+v", out)
	}
	content, calls, finish := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA())))
	if content != thoughts || len(calls) != 1 || finish != "tool_calls" {
		t.Errorf("streamed %q %s %q", content, calls, finish)
	}
}

// TestTools_Forced: tool_choice "required" and a named function reach the
// runtime (nozzle.GenerateRequest.ToolChoice) for a model whose calls can
// be forced, and its call comes back as tool_calls; a model whose format
// begins with a control token is refused.
func TestTools_Forced(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"<tool_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Bern\"}}\n</tool_call>"))
	msgs := `"messages":[{"role":"user","content":"Weather in Bern?"}]`
	for choice, want := range map[string]string{`"required"`: nozzle.ToolChoiceRequired, `{"type":"function","function":{"name":"get_weather"}}`: "get_weather", `"auto"`: ""} {
		var out toolAnswer
		decode(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherTools+`,"tool_choice":`+choice+`,`+msgs+`}`, f.authA()), &out)
		if got := f.gen.lastReq.Load().ToolChoice; got != want {
			t.Errorf("%s: the runtime got tool_choice %q, want %q", choice, got, want)
		}
		if c := out.Choices[0]; c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Name != "get_weather" {
			t.Errorf("%s: answer %+v", choice, out)
		}
	}
	// Mistral's v3 calls are forced (the runtime draws [TOOL_CALLS] first,
	// which the decoder leaves out); a runtime that says it cannot force
	// calls (a v11 vocabulary without the control tokens) is refused
	m := newFixture(t, withToolFormat(nozzle.ToolFormatMistral, " [{\"name\": \"get_weather\", \"arguments\": {}}]"))
	var out toolAnswer
	decode(t, m.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherTools+`,"tool_choice":"required",`+msgs+`}`, m.authA()), &out)
	if c := out.Choices[0]; c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Name != "get_weather" {
		t.Errorf("mistral: answer %+v", out)
	}
	v11 := newFixture(t, withToolFormat(nozzle.ToolFormatMistralV11, "[TOOL_CALLS]get_weather[ARGS]{}"))
	wantError(t, v11.do(http.MethodPost, "/v1/chat/completions", `{"model":"base",`+weatherTools+`,"tool_choice":"required",`+msgs+`}`, v11.authA()),
		http.StatusBadRequest, "invalid_request_error", "unsupported_value", "tool_choice")
}

// TestTools_ParallelToolCallsFalse: with parallel_tool_calls false a
// choice answers one call, the model's first, whole and streamed, in chat
// and in the Responses API: the runtime is asked to end with it
// (nozzle.GenerateRequest.OneCall), so only the tokens up to it are
// generated, and the usage counts those; true or left out answers them
// all and asks for all; a value that is not a boolean is refused.
func TestTools_ParallelToolCallsFalse(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatLlama3JSON,
		"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Bern\"}}", "; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Basel\"}}"))
	for _, tc := range []struct {
		param string
		calls int
	}{{`"parallel_tool_calls":false,`, 1}, {`"parallel_tool_calls":true,`, 2}, {"", 2}} {
		oneCall := tc.calls == 1
		// one word a token: the first call's, then the second's
		tokens := tc.calls
		body := `{"model":"base",` + tc.param + weatherTools + `,"messages":[{"role":"user","content":"Bern and Basel?"}]}`
		var out struct {
			toolAnswer
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
		c := out.Choices[0]
		if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != tc.calls || c.Message.ToolCalls[0].Function.Arguments != `{"city":"Bern"}` {
			t.Errorf("%s: answer %+v", tc.param, out)
		}
		if r := f.gen.lastReq.Load(); r.OneCall != oneCall || out.Usage.CompletionTokens != tokens {
			t.Errorf("%s: OneCall %v, %d completion tokens", tc.param, r.OneCall, out.Usage.CompletionTokens)
		}
		stream := strings.Replace(body, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1)
		raw := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA()))
		_, calls, finish := streamedTools(t, raw)
		if len(calls) != tc.calls || finish != "tool_calls" || !strings.Contains(raw, fmt.Sprintf(`"completion_tokens":%d,`, tokens)) {
			t.Errorf("%s: streamed %s %q: %s", tc.param, calls, finish, raw)
		}
		var first struct{ Function nozzle.FunctionCall }
		if json.Unmarshal(calls[0], &first) != nil || first.Function != c.Message.ToolCalls[0].Function {
			t.Errorf("%s: streamed call %s, answered %+v", tc.param, calls[0], c.Message.ToolCalls[0])
		}
		_, r := postResponses(t, f, `{"model":"base",`+tc.param+respWeatherTools+`,"input":"Bern and Basel?"}`)
		n := 0
		for _, o := range r.Output {
			if o.Type == "function_call" {
				n++
			}
		}
		if n != tc.calls || r.Output[0].Arguments != `{"city":"Bern"}` || r.Usage == nil || r.Usage.OutputTokens != int64(tokens) || f.gen.lastReq.Load().OneCall != oneCall {
			t.Errorf("%s: response output %+v, usage %+v", tc.param, r.Output, r.Usage)
		}
		evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","stream":true,`+tc.param+respWeatherTools+`,"input":"Bern and Basel?"}`, f.authA())))
		if last := evs[len(evs)-1].response; last == nil || len(last.Output) != tc.calls || last.Output[0].Arguments != `{"city":"Bern"}` || last.Usage.OutputTokens != int64(tokens) {
			t.Errorf("%s: streamed response %+v", tc.param, last)
		}
	}
	resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","parallel_tool_calls":"no",`+weatherTools+`,"messages":[{"role":"user","content":"Bern?"}]}`, f.authA())
	wantError(t, resp, 400, "invalid_request_error", "invalid_type", "parallel_tool_calls")
}

// TestTools_ParallelToolCallsFalseMistral: Mistral's v3 array of calls,
// which the runtime leaves open after its first call where one is
// allowed ("[{…}", the "," and the rest never generated), answers that
// call, streamed and not; the Hermes form ends with its first object,
// the text before it kept as content.
func TestTools_ParallelToolCallsFalseMistral(t *testing.T) {
	for _, tc := range []struct {
		format  string
		words   []string
		content string
	}{
		{nozzle.ToolFormatMistral, []string{" [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}", ", {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Basel\"}}]"}, ""},
		{nozzle.ToolFormatMistral, []string{" [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}},", " {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Basel\"}}]"}, ""},
		{nozzle.ToolFormatHermes, []string{"Let me check.\n", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}\n", "</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Basel\"}}\n</tool_call>"}, "Let me check.\n"},
	} {
		f := newFixture(t, withToolFormat(tc.format, tc.words...))
		body := `{"model":"base","parallel_tool_calls":false,` + weatherTools + `,"messages":[{"role":"user","content":"Bern and Basel?"}]}`
		var out struct {
			toolAnswer
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
		c := out.Choices[0]
		want := len(tc.words) - 1 // the last word is the second call's
		if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Arguments != `{"city":"Bern"}` ||
			tc.content == "" && c.Message.Content != nil || tc.content != "" && (c.Message.Content == nil || *c.Message.Content != tc.content) || out.Usage.CompletionTokens != want {
			t.Errorf("%s %q: answer %+v", tc.format, tc.words, out)
		}
		content, calls, finish := streamedTools(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA())))
		var first struct {
			ID       string
			Function nozzle.FunctionCall
		}
		if len(calls) != 1 || json.Unmarshal(calls[0], &first) != nil || first.Function != c.Message.ToolCalls[0].Function || content != tc.content || finish != "tool_calls" {
			t.Errorf("%s %q: streamed %q %s %q", tc.format, tc.words, content, calls, finish)
		}
	}
}
