package gateway

import (
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A body of 4 MiB of token ids, prompts or stop sequences must not cost
// the gateway hundreds of megabytes: decoding each id through a
// json.RawMessage and a *int cost about 100 bytes per body byte, and
// sixty such requests at once took a gateway past 17 GB.
func TestParsePromptMemoryBound(t *testing.T) {
	const n = 2_000_000
	for _, tc := range []struct {
		name, body string
		chat       bool
		wantErr    string
	}{
		{"token ids", `{"model":"base","max_tokens":1,"prompt":[` + strings.Repeat("1,", n-1) + `1]}`, false, ""},
		{"token-id lists", `{"model":"base","max_tokens":1,"prompt":[` + strings.Repeat("[1],", n/2-1) + `[1]]}`, false, "Too many choices"},
		{"strings", `{"model":"base","max_tokens":1,"prompt":[` + strings.Repeat(`"a",`, n/2-1) + `"a"]}`, false, "Too many choices"},
		{"nulls", `{"model":"base","max_tokens":1,"prompt":[1,` + strings.Repeat(`null,`, n/2-1) + `null]}`, false, "item 1 is null"},
		{"stop", `{"model":"base","messages":[{"role":"user","content":"a"}],"stop":[` + strings.Repeat(`"a",`, n/2-1) + `"a"]}`, true, "at most 4 stop sequences"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			got := allocated(func() {
				if tc.chat {
					_, err = parseChat([]byte(tc.body), 16)
				} else {
					_, err = parseCompletion([]byte(tc.body), 16)
				}
			})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if limit := uint64(16 * len(tc.body)); got > limit {
				t.Errorf("parsing %d bytes allocated %d bytes, more than %d", len(tc.body), got, limit)
			}
		})
	}
}

// manyMessages is a chat body of n empty messages.
func manyMessages(n int) []byte {
	return []byte(`{"model":"base","messages":[` + strings.Repeat(`{"role":"user","content":""},`, n-1) + `{"role":"user","content":""}]}`)
}

// A chat body of tens of thousands of tiny messages, tools or tool calls
// is refused after counting them, not after decoding them: 62,000 empty
// messages (1.8 MB) cost 57 MB decoded, 32 bytes per body byte.
func TestParseChatMemoryBound(t *testing.T) {
	user := `{"role":"user","content":"a"}`
	for _, tc := range []struct {
		name, body, param string
	}{
		{"messages", string(manyMessages(62000)), "messages"},
		{"tools", `{"model":"base","messages":[` + user + `],"tools":[` + strings.Repeat(`{"type":"function"},`, 99999) + `{"type":"function"}]}`, "tools"},
		{"tool calls", `{"model":"base","messages":[` + user + `,{"role":"assistant","content":null,"tool_calls":[` +
			strings.Repeat(`{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},`, 29999) + `{}]}]}`, "messages[1].tool_calls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			got := allocated(func() { _, err = parseChat([]byte(tc.body), 16) })
			if e := nozzle.AsError(err); e == nil || e.Param != tc.param || e.Reason != "array_above_max_length" {
				t.Fatalf("error %#v, want array_above_max_length for %s", e, tc.param)
			}
			if limit := uint64(8 * len(tc.body)); got > limit {
				t.Errorf("refusing %d bytes allocated %d bytes, more than %d", len(tc.body), got, limit)
			}
		})
	}
	t.Run("limit", func(t *testing.T) {
		if j, err := parseChat(manyMessages(maxChatMessages), 16); err != nil || len(j.messages) != maxChatMessages {
			t.Fatalf("%d messages: %v", maxChatMessages, err)
		}
		if _, err := parseChat(manyMessages(maxChatMessages+1), 16); nozzle.AsError(err) == nil || nozzle.AsError(err).Param != "messages" {
			t.Fatalf("%d messages: %v", maxChatMessages+1, err)
		}
	})
}

// BenchmarkParseChatMessages: a body of 62,000 empty messages is refused
// for about what reading it costs; 4096, the most a request may carry,
// are decoded.
func BenchmarkParseChatMessages(b *testing.B) {
	for _, n := range []int{62000, maxChatMessages, 16} {
		body := manyMessages(n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				_, err := parseChat(body, 16)
				if (err != nil) != (n > maxChatMessages) {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestParsePromptForms(t *testing.T) {
	for _, tc := range []struct {
		prompt  string
		want    []promptSpec
		wantErr string
	}{
		{`"hi"`, []promptSpec{{text: "hi", isText: true}}, ""},
		{` ["a", "b\"]"] `, []promptSpec{{text: "a", isText: true}, {text: `b"]`, isText: true}}, ""},
		{`[1, 2, -0, 2147483647]`, []promptSpec{{tokens: []int{1, 2, 0, 2147483647}}}, ""},
		{`[[1], [2, 3]]`, []promptSpec{{tokens: []int{1}}, {tokens: []int{2, 3}}}, ""},
		{`[]`, nil, "empty array"},
		{`[[]]`, nil, "empty token list"},
		{`[null]`, nil, "item 0 is null"},
		{`[[1], null]`, nil, "item 1 is null"},
		{`[[1, null]]`, nil, "token 1 is null"},
		{`[1, "a"]`, nil, "only integers"},
		{`[1, [2]]`, nil, "only integers"},
		{`[1.5]`, nil, "only integers"},
		{`[1e2]`, nil, "only integers"},
		{`[-1]`, nil, "out of range"},
		{`[2147483648]`, nil, "out of range"},
		{`[99999999999999999999999]`, nil, "only integers"},
		{`[[1], 2]`, nil, "only arrays of integers"},
		{`["a", 1]`, nil, "only strings"},
		{`[{}]`, nil, "only integers"},
		{`[]`, nil, "Invalid 'prompt': empty array. Expected an array with minimum length 1, but got an empty array instead."},
		{`{"a": 1}`, nil, "Invalid type for 'prompt'"},
		{`17`, nil, "Invalid type for 'prompt'"},
		{`["a","a","a","a","a","a","a","a","a","a","a","a","a","a","a","a","a"]`, nil, "17 prompts × n=1 exceeds 16"},
	} {
		j, err := parseCompletion([]byte(`{"model":"base","prompt":`+tc.prompt+`}`), 16)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Errorf("prompt %s: error %v, want %q", tc.prompt, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("prompt %s: %v", tc.prompt, err)
			continue
		}
		if len(j.prompts) != len(tc.want) {
			t.Errorf("prompt %s: %+v, want %+v", tc.prompt, j.prompts, tc.want)
			continue
		}
		for i := range tc.want {
			g, w := j.prompts[i], tc.want[i]
			if g.text != w.text || g.isText != w.isText || len(g.tokens) != len(w.tokens) {
				t.Errorf("prompt %s: %+v, want %+v", tc.prompt, j.prompts, tc.want)
				break
			}
			for k := range w.tokens {
				if g.tokens[k] != w.tokens[k] {
					t.Errorf("prompt %s: %+v, want %+v", tc.prompt, j.prompts, tc.want)
				}
			}
		}
	}
}
