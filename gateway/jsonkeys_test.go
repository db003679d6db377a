package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// Members are known by their exact names, as OpenAI's API knows its
// parameters, and each is given once.
func TestExactKeys(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	refused := []struct {
		name, body, param, msg string
		chat                   bool
	}{
		{"UpperModel", `{"MODEL":"base",` + msgs + `}`, "MODEL", "Unrecognized request argument supplied: MODEL", true},
		{"TitleMessages", `{"model":"base","Messages":[{"role":"user","content":"hi"}]}`, "Messages", "Unrecognized", true},
		{"MixedMaxTokens", `{"model":"base","prompt":"x","max_TOKENS":5}`, "max_TOKENS", "Unrecognized", false},
		// encoding/json folds more than ASCII: ſ (U+017F) is an s, K (U+212A) a k
		{"LongS", `{"model":"base",` + msgs + `,"ſtream":true}`, "ſtream", "Unrecognized", true},
		{"KelvinSign", `{"model":"base","prompt":"x","top_\u212a":3}`, "top_\u212a", "Unrecognized", false},
		{"EscapedUpper", `{"model":"base","prompt":"x","\u004dodel":"y"}`, "Model", "Unrecognized", false},
		{"DuplicateTop", `{"model":"base","prompt":"x","max_tokens":5,"max_tokens":500}`, "max_tokens", "Duplicate key in the request body: 'max_tokens'", false},
		{"DuplicateEscaped", `{"model":"base","prompt":"x","max_tokens":5,"max_tok\u0065ns":500}`, "max_tokens", "Duplicate", false},
		{"DuplicateModel", `{"model":"base",` + msgs + `,"model":"demo-chat"}`, "model", "Duplicate", true},
		{"DuplicatePenalty", `{"model":"base",` + msgs + `,"presence_penalty":0,"presence_penalty":1}`, "presence_penalty", "Duplicate", true},
		{"DuplicateRole", `{"model":"base","messages":[{"role":"user","content":"a"},{"role":"user","role":"system","content":"b"}]}`, "messages[1].role", "Duplicate key in the request body: 'messages[1].role'", true},
		{"DuplicateContentPart", `{"model":"base","messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}`, "messages[0].content[0].text", "Duplicate", true},
		{"DuplicateIncludeUsage", `{"model":"base",` + msgs + `,"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}`, "stream_options.include_usage", "Duplicate", true},
		{"DuplicateToolName", `{"model":"base",` + msgs + `,"tools":[{"type":"function","function":{"name":"a","name":"b"}}]}`, "tools[0].function.name", "Duplicate", true},
		{"DuplicateCallID", `{"model":"base","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"a","id":"b","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_calls[0].id", "Duplicate", true},
		// a message's member of another spelling is unknown, and let
		// through, as other unknown members of a message are: the message
		// then lacks the member of that name
		{"MessageRoleCased", `{"model":"base","messages":[{"Role":"user","content":"hi"}]}`, "messages[0].role", "Missing required parameter", true},
		{"MessageContentCased", `{"model":"base","messages":[{"role":"user","CONTENT":"hi"}]}`, "messages[0].content", "Missing required parameter", true},
		{"ToolTypeCased", `{"model":"base",` + msgs + `,"tools":[{"Type":"function","function":{"name":"f"}}]}`, "tools[0].type", "only \"function\" tools", true},
		{"ToolNameCased", `{"model":"base",` + msgs + `,"tools":[{"type":"function","function":{"Name":"f"}}]}`, "tools[0].function.name", "Missing required parameter", true},
		{"ResponseFormatCased", `{"model":"base",` + msgs + `,"response_format":{"TYPE":"text"}}`, "response_format", "expected an object with a 'type'", true},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.chat {
				_, err = parseChat([]byte(tc.body), 16)
			} else {
				_, err = parseCompletion([]byte(tc.body), 16)
			}
			e := nozzle.AsError(err)
			if e == nil || e.Code != nozzle.EINVALID || e.Param != tc.param || !strings.Contains(e.Message, tc.msg) {
				t.Fatalf("error %#v, want EINVALID with param %q and %q", e, tc.param, tc.msg)
			}
		})
	}

	t.Run("Accepted", func(t *testing.T) {
		// escapes spelling the exact name, members of a message that
		// differ from known ones in case (let through, not taken for them)
		j, err := parseChat([]byte(`{"m\u006fdel":"base","messages":[{"role":"user","content":"hi","Content":"evil","ROLE":"system","Name":"x"}],`+
			`"stream":true,"stream_options":{"include_usage":true,"Include_Usage":false},"max_tokens":7}`), 16)
		if err != nil {
			t.Fatal(err)
		}
		if j.model != "base" || len(j.messages) != 1 || j.messages[0].Role != "user" || j.messages[0].Content != "hi" || j.messages[0].Name != "" || !j.includeUsage || j.maxTokens != 7 {
			t.Errorf("job %+v, messages %+v", j, j.messages)
		}
		// the same name in different objects is no duplicate
		j, err = parseChat([]byte(`{"model":"base","messages":[{"role":"system","content":"a"},{"role":"user","content":[{"type":"text","text":"b"},{"type":"text","text":"c"}]}],"metadata":{"model":"x"}}`), 16)
		if err != nil || len(j.messages) != 2 || j.messages[1].Content != "bc" {
			t.Fatalf("%v %+v", err, j)
		}
		// unknown members of a message, given twice, are let through as
		// they are once
		if _, err := parseChat([]byte(`{"model":"base","messages":[{"role":"user","content":"a","id":1,"id":2}]}`), 16); err != nil {
			t.Fatal(err)
		}
		// duplicates inside values the gateway does not read as parameters
		// (a tool's JSON Schema, metadata) are the client's business
		if _, err := parseChat([]byte(`{"model":"base",`+msgs+`,"metadata":{"k":"1","k":"2"}}`), 16); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Dropped", func(t *testing.T) {
		// a member of another spelling in a lenient object is left out,
		// with its comma: first, last, only, one after another
		s := shapeFor(&chatBody{})
		for in, want := range map[string]string{
			`{"model":"m","messages":[{"Role":"x","role":"user"}]}`:                                     `{"model":"m","messages":[{"role":"user"}]}`,
			`{"model":"m","messages":[{"role":"user", "ROLE" : {"a":[1,"}"]} }]}`:                       `{"model":"m","messages":[{"role":"user"}]}`,
			`{"model":"m","messages":[{"Role":"x"}]}`:                                                   `{"model":"m","messages":[{}]}`,
			`{"model":"m","messages":[{"id":1,"Role":"x","ROLE":"y"},{"rOLE":"z"}]}`:                    `{"model":"m","messages":[{"id":1},{}]}`,
			`{"model":"m","messages":[{"Role":"x","ROLE":"y","id":1}]}`:                                 `{"model":"m","messages":[{"id":1}]}`,
			`{"model":"m","tools":[{"type":"function","Type":"x","function":{"name":"f","Name":"g"}}]}`: `{"model":"m","tools":[{"type":"function","function":{"name":"f"}}]}`,
			`{"model":"m","stream_options":{"Include_usage":true}}`:                                     `{"model":"m","stream_options":{}}`,
		} {
			out, err := checkKeys([]byte(in), s)
			var c bytes.Buffer
			if err != nil || json.Compact(&c, out) != nil || c.String() != want {
				t.Errorf("%s\n→ %s (%v), want %s", in, out, err, want)
			}
		}
		// and the tools handed to the template are the tools without it
		j, err := parseChat([]byte(`{"model":"base",`+msgs+`,"tools":[{"type":"function","function":{"name":"f","Description":"x","parameters":{"type":"object"}}}]}`), 16)
		if err != nil || string(j.tools) != `[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]` {
			t.Errorf("tools %s (%v)", j.tools, err)
		}
	})

	t.Run("NotAnObject", func(t *testing.T) {
		for _, body := range []string{`[{"MODEL":"a","model":"b"}]`, `"x"`, `[1,2]`} {
			_, err := parseChat([]byte(body), 16)
			if e := nozzle.AsError(err); e == nil || e.Message != "The request body must be a JSON object." {
				t.Errorf("%s: %v", body, err)
			}
		}
	})

	t.Run("NotJSON", func(t *testing.T) {
		// a body that is not JSON gets the decoder's answer, whatever the
		// key check saw before the break
		for _, body := range []string{`{"model":"a","model":`, `{"MODEL":"a",}`, `{"model":"base","prompt":"x"} {"model":"y","model":"z"}`,
			// a stray closing bracket after the object, known members or not
			`{"model":"base","prompt":"x"}}`, `{"model":"base","prompt":"x"} ]`, `{"model":"base","Prompt":"x"}}`, `{"model":"base","prompt":"x"}x`} {
			_, err := parseCompletion([]byte(body), 16)
			if e := nozzle.AsError(err); e == nil || !strings.Contains(e.Message, "parse the JSON body") {
				t.Errorf("%s: %v", body, err)
			}
		}
	})
}

func TestShapeNames(t *testing.T) {
	s := shapeFor(&chatBody{})
	for _, n := range []string{"model", "messages", "presence_penalty", "logit_bias", "stream_options"} {
		if _, ok := s.index[n]; !ok {
			t.Errorf("chat body shape lacks %q: %v", n, s.names)
		}
	}
	if _, ok := s.index["adjustBody"]; ok {
		t.Errorf("embedded struct named: %v", s.names)
	}
	m := s.sub[s.index["messages"]]
	if m == nil || m.strict || m.sub[m.index["content"]] == nil || m.sub[m.index["tool_calls"]] == nil {
		t.Fatalf("messages shape %+v", m)
	}
	if !s.strict || s.sub[s.index["stream_options"]].strict {
		t.Errorf("strictness")
	}
}

// BenchmarkCheckKeys measures the member-name check alone, on the bodies
// of BenchmarkParse (of which it is a part).
func BenchmarkCheckKeys(b *testing.B) {
	for _, bb := range parseBenchBodies {
		body := []byte(bb.body)
		var v any = &completionBody{}
		if bb.chat {
			v = &chatBody{}
		}
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := checkKeys(body, shapeFor(v)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
