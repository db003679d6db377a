package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// TestTools_StrictCallsParse: the tools reach the runtime with "strict"
// (which holds a Hermes model's calls to their functions in auto mode),
// and what the runtime's masks let through reads as calls: whitespace
// around the object's parts, a tag inside a string, calls back to back.
func TestTools_StrictCallsParse(t *testing.T) {
	tools, force, err := parseTools(json.RawMessage(`[{"type":"function","function":{"name":"f","strict":true,"parameters":{"type":"object"}}}]`), nil)
	if err != nil || force != "" || !strings.Contains(string(tools), `"strict":true`) {
		t.Fatalf("tools %s %q %v", tools, force, err)
	}
	text := "<tool_call>\n{\n\n \"name\" :\n\"get_weather\",\"arguments\" :\n {\"city\" :\"<tool_call>x\",\"days\" :\n4}\n}\n</tool_call>\n\n" +
		"<tool_call>\n{\"name\":\"get_time\",\"arguments\":{\"zone\":\"UTC\"}}\n</tool_call><tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n"
	content, calls := splitToolCalls(nozzle.ToolFormatHermes, text, "chatcmpl-1", 0)
	if content != "" || len(calls) != 3 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"<tool_call>x","days":4}` ||
		calls[1].Function.Arguments != `{"zone":"UTC"}` || calls[2].Function.Arguments != `{}` {
		t.Fatalf("%q %+v", content, calls)
	}
}

// FuzzFirstCallParse: where nozzle.FirstCall (the runtime's) ends an
// answer that allows one call, the text up to there reads, as the
// gateway reads it (splitCalls with oneCall), as that one call; and an
// answer that reads as calls in full ends at its first, which the text up
// to there answers alike, with the same content before it.
func FuzzFirstCallParse(f *testing.F) {
	for _, s := range []string{
		"Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"}\\\"\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"g\"}\n</tool_call>",
		"<think>\n<tool_call>{\"name\": \"x\"}</think>\n\n<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}",
		`{"name": "f", "parameters": {"a": [1, {}]}}; {"name": "g", "parameters": {}}`,
		` [{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": null}}]`,
		`Hi [TOOL_CALLS] [{"name": "f"}]`,
		`Hi[TOOL_CALLS]f[CALL_ID]abc123xyz[ARGS]{"a": [1]}[TOOL_CALLS]g{}`,
		`[TOOL_CALLS] [{"name": "f", "arguments": {}},{"name": "g", "arguments": {}}]`,
	} {
		for k := range 4 {
			f.Add(s, uint8(k))
		}
	}
	formats := []string{nozzle.ToolFormatHermes, nozzle.ToolFormatLlama3JSON, nozzle.ToolFormatMistral, nozzle.ToolFormatMistralV11}
	f.Fuzz(func(t *testing.T, text string, k uint8) {
		format := formats[int(k)%len(formats)]
		var thoughts *nozzle.ThinkTags
		if format == nozzle.ToolFormatHermes {
			thoughts = &nozzle.DefaultThinkTags
		}
		m := nozzle.NewFirstCall(format, thoughts, false)
		m.Add(text)
		end := m.End()
		one := &job{id: "chatcmpl-1", toolFormat: format, oneCall: true}
		if end >= 0 {
			if _, calls := one.splitCalls(text[:end], 0); len(calls) != 1 {
				t.Fatalf("%s: the text up to the first call's end, %q, reads as %d calls", format, text[:end], len(calls))
			}
		}
		pre, calls := splitToolCalls(format, text, "chatcmpl-1", 0)
		if len(calls) == 0 {
			return
		}
		if end < 0 {
			t.Fatalf("%s: %q reads as %d calls, and FirstCall found none", format, text, len(calls))
		}
		pre1, calls1 := one.splitCalls(text[:end], 0)
		if pre1 != pre || len(calls1) != 1 || calls1[0] != calls[0] {
			t.Fatalf("%s: %q reads as %q %+v, cut at its first call as %q %+v", format, text, pre, calls[0], pre1, calls1)
		}
	})
}
