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
