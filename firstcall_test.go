package nozzle_test

import (
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// firstCallEnd feeds text to a new FirstCall in pieces of size bytes (all
// at once for 0) and returns End.
func firstCallEnd(format string, thoughts *nozzle.ThinkTags, open bool, text string, size int) int {
	f := nozzle.NewFirstCall(format, thoughts, open)
	if size <= 0 {
		size = len(text) + 1
	}
	for i := 0; i < len(text); i += size {
		f.Add(text[i:min(i+size, len(text))])
	}
	return f.End()
}

// TestFirstCall: where the first call of each format ends — the object's
// '}' — and the answers whose first call is none, or not yet complete:
// text, broken objects, calls in thoughts, a closing tag inside a call
// (the gateway cuts the call there), strings with braces and escapes.
func TestFirstCall(t *testing.T) {
	const w1 = `{"name": "get_weather", "arguments": {"city": "Bern}\"{"}}`
	const l1 = `{"name": "get_weather", "parameters": {"city": "Be{rn"}}`
	think := nozzle.DefaultThinkTags
	for _, tc := range []struct {
		format   string
		thoughts bool
		open     bool
		text     string
		want     string // the text up to the end; "-" for none
	}{
		{nozzle.ToolFormatHermes, true, false, "<tool_call>\n" + w1 + "\n</tool_call>\n<tool_call>\n" + w1, "<tool_call>\n" + w1},
		{nozzle.ToolFormatHermes, true, false, "Let me look.\n<tool_call>\n" + w1 + "\n</tool_call>", "Let me look.\n<tool_call>\n" + w1},
		{nozzle.ToolFormatHermes, true, false, "<think>a <tool_call>" + w1 + "</think>\n\n<tool_call>" + w1 + "x", "<think>a <tool_call>" + w1 + "</think>\n\n<tool_call>" + w1},
		{nozzle.ToolFormatHermes, true, true, "a <tool_call>" + w1 + "</think><tool_call>" + w1, "a <tool_call>" + w1 + "</think><tool_call>" + w1},
		{nozzle.ToolFormatHermes, true, false, "<think>a <tool_call>" + w1, "-"},                                // thoughts never closed
		{nozzle.ToolFormatHermes, true, false, "<tool_call>\nget_weather()\n</tool_call><tool_call>" + w1, "-"}, // a first call that is none
		{nozzle.ToolFormatHermes, true, false, `<tool_call>{"name": "f", "arguments": {"a": "</tool_call>"}}`, "-"},
		{nozzle.ToolFormatHermes, true, false, `<tool_call>{"name": "", "arguments": {}}`, "-"},
		{nozzle.ToolFormatHermes, true, false, `<tool_call>{"name": "f"}`, `<tool_call>{"name": "f"}`}, // arguments may be left out
		{nozzle.ToolFormatHermes, true, false, `<tool_call>{"name": "f", "arguments": "{\"a\": 1}"}; x`, `<tool_call>{"name": "f", "arguments": "{\"a\": 1}"}`},
		{nozzle.ToolFormatHermes, true, false, "<tool_call>\n" + w1[:len(w1)-1], "-"},

		{nozzle.ToolFormatLlama3JSON, false, false, " \u00a0\n" + l1 + "; " + l1, " \u00a0\n" + l1},
		{nozzle.ToolFormatLlama3JSON, false, false, l1 + l1, l1},
		{nozzle.ToolFormatLlama3JSON, false, false, `{"name": "f"}; ` + l1, "-"}, // parameters required
		{nozzle.ToolFormatLlama3JSON, false, false, "Sure: " + l1, "-"},
		{nozzle.ToolFormatLlama3JSON, false, false, `{"name": "f", "parameters": {"a": [1, {"b": "\\"}]}}`, `{"name": "f", "parameters": {"a": [1, {"b": "\\"}]}}`},

		{nozzle.ToolFormatMistral, false, false, " [" + w1 + ", " + w1 + "]", " [" + w1},
		{nozzle.ToolFormatMistral, false, false, "[TOOL_CALLS] [" + w1 + "]", "[TOOL_CALLS] [" + w1},
		{nozzle.ToolFormatMistral, false, false, "Sure. [TOOL_CALLS]" + `{"name": "f"}` + "]", "Sure. [TOOL_CALLS]" + `{"name": "f"}`},
		{nozzle.ToolFormatMistral, false, false, `[{"name": "f"}] [TOOL_CALLS][` + w1, `[{"name": "f"}] [TOOL_CALLS][` + w1}, // arguments required without the marker
		{nozzle.ToolFormatMistral, false, false, "Sure: [" + w1, "-"},
		{nozzle.ToolFormatMistral, false, false, "[TOOL_CALLS] hello [" + w1, "-"},
		{nozzle.ToolFormatMistral, false, false, "[]", "-"},

		{nozzle.ToolFormatMistralV11, false, false, `Hi[TOOL_CALLS]get_weather[ARGS]{"city": "B}"}[TOOL_CALLS]f[ARGS]{}`, `Hi[TOOL_CALLS]get_weather[ARGS]{"city": "B}"}`},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS] {"city": "B"}`, `[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS] {"city": "B"}`},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS] f {}x`, `[TOOL_CALLS] f {}`},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS] [` + w1 + `, ` + w1 + `]`, `[TOOL_CALLS] [` + w1},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS]{"name": "f"}`, "-"},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS]f[ARGX]{}`, "-"},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS]f[CALL_ID]x[CALL_ID]y[ARGS]{}`, "-"},
		{nozzle.ToolFormatMistralV11, false, false, `[TOOL_CALLS]f[ARGS]{"a": 1]`, "-"},
	} {
		var thoughts *nozzle.ThinkTags
		if tc.thoughts {
			thoughts = &think
		}
		want := len(tc.want)
		if tc.want == "-" {
			want = -1
		}
		for _, size := range []int{0, 1, 2, 3, 7} {
			if got := firstCallEnd(tc.format, thoughts, tc.open, tc.text, size); got != want {
				t.Errorf("%s %q (pieces of %d): end %d, want %d", tc.format, tc.text, size, got, want)
			}
		}
	}
	if f := nozzle.NewFirstCall("", nil, false); f != nil || f.Add("{}") || f.End() != -1 {
		t.Errorf("a format without calls: %v", f)
	}
}

// FuzzFirstCall: any text, in any pieces, ends at the same place (or
// nowhere), within the text, and the bytes past the end change nothing.
func FuzzFirstCall(f *testing.F) {
	for _, s := range []string{
		`<tool_call>{"name": "f", "arguments": {"a": "\"}"}}`,
		`{"name": "f", "parameters": {}}; {"name": "g", "parameters": {}}`,
		` [{"name": "f", "arguments": {}}]`,
		`x[TOOL_CALLS]f[CALL_ID]abc[ARGS]{"a": [1]}`,
		"<think>\n</think>\n<tool_call>\n{\"name\": \"f\"}",
	} {
		f.Add(s, uint8(0), uint8(3))
	}
	formats := []string{nozzle.ToolFormatHermes, nozzle.ToolFormatLlama3JSON, nozzle.ToolFormatMistral, nozzle.ToolFormatMistralV11}
	f.Fuzz(func(t *testing.T, text string, format, size uint8) {
		fm := formats[int(format)%len(formats)]
		var thoughts *nozzle.ThinkTags
		open := format&8 != 0
		if format&4 != 0 {
			thoughts = &nozzle.DefaultThinkTags
		}
		end := firstCallEnd(fm, thoughts, open, text, 0)
		if end > len(text) || end < -1 || end == 0 {
			t.Fatalf("end %d of %d bytes", end, len(text))
		}
		if got := firstCallEnd(fm, thoughts, open, text, int(size%16)+1); got != end {
			t.Fatalf("in pieces of %d: end %d, at once %d", size%16+1, got, end)
		}
		if end > 0 {
			if got := firstCallEnd(fm, thoughts, open, text[:end], 0); got != end {
				t.Fatalf("the text cut at its end %d ends at %d", end, got)
			}
			if text[end-1] != '}' {
				t.Fatalf("a call ends with %q", text[end-1])
			}
		}
	})
}
