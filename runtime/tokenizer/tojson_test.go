package tokenizer

import (
	"encoding/json"
	"testing"
)

func TestPyFloat(t *testing.T) {
	tests := map[float64]string{1: "1.0", 0.5: "0.5", -2.25: "-2.25", 1e16: "1e+16", 1e15: "1000000000000000.0",
		1e-5: "1e-05", 0.0001: "0.0001", 123456789012345678: "1.2345678901234568e+17", 0: "0.0"}
	for f, want := range tests {
		if got := pyFloat(f); got != want {
			t.Errorf("pyFloat(%v) = %q, want %q", f, got, want)
		}
	}
}

func TestRewriteFilters(t *testing.T) {
	in := `{{ x | tojson }} | tojson {% set y = x|tojson(indent=2) %}{# a | tojson #}{{ "|tojson" }}{{ m['content'] | trim + x|trim_x }}`
	want := `{{ x |__nozzle_tojson }} | tojson {% set y = x|__nozzle_tojson(indent=2) %}{# a | tojson #}{{ "|__nozzle_tojson" }}{{ m['content'] |__nozzle_trim + x|trim_x }}`
	if got := rewriteFilters(in); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestTojson checks json.dumps semantics through a real template.
func TestTojson(t *testing.T) {
	const tj = `{"model": {"vocab": {}}}`
	tests := []struct {
		name, tmpl, want string
	}{
		{"Default", `{{ v | tojson }}`, `{"b": [1, 2.5, "é` + "\u2028" + `<&>\"\\\n\u0001"], "a": {}, "c": null, "d": true}`},
		{"Indent", `{{ v | tojson(indent=2) }}`, "{\n  \"b\": [\n    1,\n    2.5,\n    \"é\u2028<&>\\\"\\\\\\n\\u0001\"\n  ],\n  \"a\": {},\n  \"c\": null,\n  \"d\": true\n}"},
		{"SortKeysSeparators", `{{ v | tojson(sort_keys=true, separators=[",", ":"]) }}`, `{"a":{},"b":[1,2.5,"é` + "\u2028" + `<&>\"\\\n\u0001"],"c":null,"d":true}`},
		{"EnsureASCII", `{{ v.b | tojson(ensure_ascii=true) }}`, `[1, 2.5, "\u00e9\u2028<&>\"\\\n\u0001"]`},
		{"Emoji", `{{ "😀" | tojson(ensure_ascii=true) }}`, `"\ud83d\ude00"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := FromJSON([]byte(tj), []byte(`{"chat_template": `+quoteJSON(tt.tmpl)+`}`))
			if err != nil {
				t.Fatal(err)
			}
			v := json.RawMessage(`{"b": [1, 2.5, "é\u2028<&>\"\\\n\u0001"], "a": {}, "c": null, "d": true}`)
			got, err := tok.ApplyChatTemplateVars(nil, false, map[string]any{"v": v})
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
