package gateway

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nozzle-ai/nozzle"
)

func FuzzParseChat(f *testing.F) {
	for _, s := range []string{
		`{"model":"base","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"a"}]}],"stop":["x"],"n":2,"logprobs":true,"top_logprobs":3,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"assistant","content":null}],"max_completion_tokens":5,"seed":-1,"temperature":0}`,
		`{"model":"m","messages":[{"role":"assistant","content":"a","reasoning_content":"b"}],"chat_template_kwargs":{"enable_thinking":false,"x":[{"y":"\u00e9"}]}}`,
		`{"model":"m","messages":[{"role":"user","content":"a"}],"chat_template_kwargs":{"tools":1}}`,
		`{"model":1}`, `[]`, `{"messages":{}}`, `{`,
		`{"model":"m","messages":[{"role":"user","content":"a"}],"tools":[` + strings.Repeat(`{},`, maxToolCalls) + `{}]}`,
		`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[` + strings.Repeat(`{},`, maxToolCalls) + `{}]}]}`,
		// members of another spelling, and given twice
		`{"MODEL":"base","Messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"base","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"max_tokens":500}`,
		`{"model":"base","messages":[{"Role":"user","content":"hi","role":"system","CONTENT":"x"}],"ſtream":true}`,
		`{"model":"base","messages":[{"role":"user","content":[{"type":"text","text":"a","Text":"b"}]}],"stream_options":{"include_usage":true,"include_usage":false}}`,
		`{"m\u006fdel":"base","messages":[{"role":"user","content":"\"}\\"}],"tools":[{"type":"function","function":{"Name":"f","name":"g"}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Add(manyMessages(maxChatMessages + 1))
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := parseChat(body, 16)
		if err != nil {
			if nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Fatalf("error code %q: %v", nozzle.ErrorCode(err), err)
			}
			return
		}
		checkExactTopKeys(t, body, &chatBody{})
		if j.model == "" || len(j.messages) == 0 || len(j.messages) > maxChatMessages || j.n < 1 || j.n > 16 || len(j.stop) > 4 || j.topLogprobs > 20 || j.temperature < 0 || j.temperature > 2 {
			t.Fatalf("accepted a bad request: %+v", j)
		}
		for _, m := range j.messages {
			if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
				t.Fatalf("role %q", m.Role)
			}
		}
		if kw := j.templateKwargs; kw != nil {
			var vars map[string]json.RawMessage
			if json.Unmarshal(kw, &vars) != nil || len(vars) == 0 || len(vars) > maxTemplateKwargs || len(kw) > maxTemplateKwargsBytes {
				t.Fatalf("accepted chat_template_kwargs %s", kw)
			}
			for name := range vars {
				if reservedTemplateVars[name] || !templateVarName(name) {
					t.Fatalf("accepted chat_template_kwargs %s", kw)
				}
			}
		}
	})
}

func FuzzParseCompletion(f *testing.F) {
	for _, s := range []string{
		`{"model":"base","prompt":"hi"}`, `{"model":"base","prompt":["a","b"],"n":2}`,
		`{"model":"base","prompt":[1,2,3],"logprobs":2}`, `{"model":"base","prompt":[[1],[2,3]],"echo":false}`,
		`{"model":"base","prompt":[]}`, `{"model":"base","prompt":[[]]}`, `{"model":"base","prompt":[1,"a"]}`,
		// members of another spelling, and given twice
		`{"model":"base","prompt":"x","max_TOKENS":5}`, `{"model":"base","prompt":"x","max_tokens":5,"max_tokens":500}`,
		`{"model":"base","prompt":"x","top_K":3}`, `{"model":"base","prompt":"x","max_tok\u0065ns":1,"max_tokens":2}`,
		`{"model":"base","prompt":"x","stream":true,"stream_options":{"Include_usage":true}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := parseCompletion(body, 16)
		if err != nil {
			if nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Fatalf("error code %q: %v", nozzle.ErrorCode(err), err)
			}
			return
		}
		checkExactTopKeys(t, body, &completionBody{})
		if len(j.prompts) == 0 || j.choices() > 16 {
			t.Fatalf("accepted a bad request: %+v", j)
		}
		for _, p := range j.prompts {
			if !p.isText && len(p.tokens) == 0 {
				t.Fatalf("empty token prompt")
			}
		}
		if n := len(j.requests("r", "t", 0)); n != j.choices() {
			t.Fatalf("%d requests for %d choices", n, j.choices())
		}
	})
}

// checkExactTopKeys fails t unless every member of the accepted body's
// object is one of v's, by its exact name, and given once.
func checkExactTopKeys(t *testing.T, body []byte, v any) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("accepted %q: %v", body, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	s := shapeFor(v)
	seen := map[string]bool{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		key := k.(string)
		if _, ok := s.index[key]; !ok || seen[key] {
			t.Fatalf("accepted %q with member %q", body, key)
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzCheckKeys: the key check never breaks a body: what it hands on is
// as long as what it got, and JSON exactly when that was.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{
		`{"model":"base","messages":[{"role":"user","content":"hi","Role":"x"}]}`,
		`{"model":"base","messages":[{"rOle":"user","content":[{"TYPE":"text","text":"\"}]"}]}]}`,
		`{"model":"base","model":"x"}`, `{"a":[{"b":"}"}]}`, `{"messages":[[{"Role":1}]]}`, `{"\u00":1}`, `"x"`, `{`, ``,
		`{"messages":[[{"Role":A}]]}`, `{"messages":[{"id":1,"Role":"x","ROLE":"y"},{"rOLE":"z"}]}`,
	} {
		f.Add([]byte(s))
	}
	s := shapeFor(&chatBody{})
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := checkKeys(body, s)
		if err != nil {
			if nozzle.ErrorCode(err) != nozzle.EINVALID || !json.Valid(body) {
				t.Fatalf("error %v for %q", err, body)
			}
			return
		}
		if len(out) != len(body) || json.Valid(out) != json.Valid(body) {
			t.Fatalf("%q became %q", body, out)
		}
	})
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "hello", "quote\" back\\slash", "\x00\x1f\n\t", "\u2028\u2029", "\xff\xfe", "日本語 🎉"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %q for %q", b, s)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("round trip %q → %q", s, back)
		}
	})
}

func FuzzEntryPath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/etc/passwd", `..\x`, "C:/x", "./a/./b/", "a//b", "a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		parts, err := entryPath(name)
		if err != nil {
			return
		}
		for _, p := range parts {
			if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "/\\\x00") {
				t.Fatalf("unsafe part %q of %q", p, name)
			}
		}
		joined := filepath.Join(append([]string{"/base"}, parts...)...)
		if len(parts) == 0 && joined == "/base" {
			return // the archive's own folder (".", "./")
		}
		if !strings.HasPrefix(joined, "/base/") {
			t.Fatalf("%q escapes: %q", name, joined)
		}
	})
}

func FuzzExtractArchive(f *testing.F) {
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, true)
	f.Add([]byte("PK\x03\x04garbage"), false)
	f.Add([]byte("PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), false)
	f.Fuzz(func(t *testing.T, data []byte, tgz bool) {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		if err := os.Mkdir(out, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "archive")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		name := "a.zip"
		if tgz {
			name = "a.tar.gz"
		}
		err := extractArchive(path, name, out, 1<<20)
		ents, _ := os.ReadDir(out)
		for _, e := range ents {
			if e.Name() != nozzle.AdapterConfigFile && e.Name() != nozzle.AdapterWeightsFile {
				t.Fatalf("unexpected file %q", e.Name())
			}
		}
		if err != nil && nozzle.ErrorCode(err) != nozzle.EINVALID {
			t.Fatalf("error code %q: %v", nozzle.ErrorCode(err), err)
		}
		if err == nil && len(ents) != 2 {
			t.Fatalf("success with %d files", len(ents))
		}
		top, _ := os.ReadDir(dir)
		if len(top) != 2 {
			t.Fatalf("wrote outside the target folder: %v", top)
		}
	})
}

// FuzzParseResponses: a Responses request parses or is refused as a bad
// request; an accepted one's input items, as stored, are a JSON array of
// objects each with an id and a type, one per item of its input.
func FuzzParseResponses(f *testing.F) {
	for _, s := range []string{
		`{"model":"base","input":"hi"}`,
		`{"model":"base","input":"hi","store":false,"previous_response_id":"resp_1","instructions":"x"}`,
		`{"model":"base","input":[{"role":"user","content":"a"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]}]}`,
		`{"model":"base","input":[{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"x","id":"fco_1"}]}`,
		`{"model":"base","input":[{"type":"reasoning","content":[{"type":"reasoning_text","text":"t"}]},{"role":"assistant","content":"a"}]}`,
		`{"model":"base","input":"hi","previous_response_id":5}`, `{"model":"base","input":[{}]}`, `{`,
		`{"model":"base","input":[{"role":"user","content":"a","id":"msg_1"}],"conversation":{"id":"conv_1"}}`,
		`{"model":"base","input":"hi","conversation":"conv_1","previous_response_id":"resp_1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := parseResponses(body, 16)
		if err != nil {
			if nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Fatalf("error code %q: %v", nozzle.ErrorCode(err), err)
			}
			return
		}
		if j.resp == nil || len(j.messages) > maxChatMessages+1 || len(j.resp.previousID) > maxResponseIDLen ||
			j.resp.conversation != "" && (!validConversationID(j.resp.conversation) || j.resp.previousID != "") {
			t.Fatalf("accepted a bad request: %+v", j)
		}
		j.id = "resp_x"
		var items []map[string]json.RawMessage
		stored := j.respInputItems()
		if err := json.Unmarshal(stored, &items); err != nil || len(items) != len(j.resp.items) {
			t.Fatalf("stored input items %s (%v), %d items", stored, err, len(j.resp.items))
		}
		for _, it := range items {
			if isNull(it["id"]) || isNull(it["type"]) || string(it["id"]) == `""` || string(it["type"]) == `""` {
				t.Fatalf("stored item without id or type: %s", stored)
			}
		}
		// The stored items read back as the same conversation.
		var back []respInputItem
		if json.Unmarshal(stored, &back) != nil {
			t.Fatalf("stored items do not decode: %s", stored)
		}
		msgs, err := respMessages(j.messages[:j.resp.head:j.resp.head], back, 0)
		if err != nil || len(msgs) != len(j.messages) {
			t.Fatalf("stored items read back as %d messages (%v), were %d: %s", len(msgs), err, len(j.messages), stored)
		}
	})
}

// FuzzConversationBody: a conversation's items, metadata and the
// conversation member of a Responses request parse or are refused as a
// bad request; accepted items are at most 20 JSON objects, each with its
// own id (unique, a valid item id) and a type, that read back as input
// items; accepted metadata keeps OpenAI's bounds; an accepted id is a
// valid conversation id.
func FuzzConversationBody(f *testing.F) {
	for _, s := range []string{
		`[{"role":"user","content":"a"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]}]`,
		`[{"type":"function_call","call_id":"c","name":"f","arguments":"{}","id":"fc_x"},{"type":"function_call_output","call_id":"c","output":"x"}]`,
		`[{"type":"reasoning","content":[{"type":"reasoning_text","text":"t"}]}]`,
		`{"a":"b"}`, `"conv_1"`, `{"id":"conv_abc"}`, `[]`, `null`, `[{}]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		check := func(err error) {
			if err != nil && nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Fatalf("error code %q: %v", nozzle.ErrorCode(err), err)
			}
		}
		if len(bytes.TrimSpace(raw)) == 0 || !json.Valid(raw) {
			return // the body's decoder refuses it first
		}
		items, err := parseConversationItems(raw, "items", true)
		check(err)
		if err == nil {
			if len(items) == 0 || len(items) > nozzle.MaxConversationItemsAdded {
				t.Fatalf("%d items accepted", len(items))
			}
			seen := map[string]bool{}
			var in []respInputItem
			for _, it := range items {
				var x struct{ ID, Type string }
				if json.Unmarshal(it.Item, &x) != nil || x.ID != it.ID || !validID(it.ID) || seen[it.ID] || x.Type == "" {
					t.Fatalf("item %s (id %q)", it.Item, it.ID)
				}
				seen[it.ID] = true
				var r respInputItem
				if json.Unmarshal(it.Item, &r) != nil {
					t.Fatalf("item %s does not read back", it.Item)
				}
				in = append(in, r)
			}
			if _, err := respMessages(nil, in, 0); err != nil {
				t.Fatalf("items do not read back as input: %v", err)
			}
		}
		md, err := parseMetadata(raw)
		check(err)
		if err == nil {
			if len(md) > nozzle.MaxConversationMetadata {
				t.Fatalf("%d metadata pairs", len(md))
			}
			for k, v := range md {
				if utf8.RuneCountInString(k) > nozzle.MaxConversationMetadataKey || utf8.RuneCountInString(v) > nozzle.MaxConversationMetadataVal {
					t.Fatalf("metadata %q: %q", k, v)
				}
			}
		}
		id, err := parseConversationParam(raw)
		check(err)
		if err == nil && !validConversationID(id) {
			t.Fatalf("conversation id %q", id)
		}
	})
}
