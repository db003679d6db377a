package grammar

import "testing"

func TestFramed(t *testing.T) {
	inner, err := CompileSchema([]byte(`{"type":"object","properties":{"name":{"enum":["get_weather","get_time"]},` +
		`"arguments":{"type":"object"}},"required":["name","arguments"],"additionalProperties":false}`))
	if err != nil {
		t.Fatal(err)
	}
	num, err := CompileSchema([]byte(`{"type":"integer"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		inner     Schema
		pre, post string
		text      string
		fed, done bool
	}{
		{inner, "<tool_call>\n", "\n</tool_call>", "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", true, true},
		{inner, "<tool_call>\n", "\n</tool_call>", "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>", true, true},
		{inner, "<tool_call>\n", "\n</tool_call>", "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}", true, false},
		{inner, "<tool_call>\n", "\n</tool_call>", "<tool_call>{\"name\"", false, false},
		{inner, "<tool_call>\n", "\n</tool_call>", "<tool_call>\n{\"name\": \"other\"", false, false},
		{inner, "<tool_call>\n", "\n</tool_call>", "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n", false, false},
		{inner, "", "", "{\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}", true, true},
		// a number's digits go on until the closing text begins
		{num, "<n>", "</n>", "<n>123</n>", true, true},
		{num, "<n>", "</n>", "<n>12", true, false},
		{num, "", "", "12", true, true},
	} {
		f := Frame(tc.pre, tc.inner, tc.post)
		fed := true
		for i := 0; i < len(tc.text) && fed; i++ {
			fed = f.Feed(tc.text[i])
		}
		if fed != tc.fed || fed && f.Done() != tc.done {
			t.Errorf("%q: fed %v done %v, want %v %v", tc.text, fed, fed && f.Done(), tc.fed, tc.done)
		}
	}
}
