package gateway

import (
	"strings"
	"testing"
)

// Request bodies of the parse benchmarks: a short chat request (as
// BenchmarkHandler sends), a conversation of a few turns with longer
// content and the parameters SDKs send, and legacy completions.
var parseBenchBodies = []struct {
	name string
	chat bool
	body string
}{
	{"chat-short", true, `{"model":"bench-adapter","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16,"temperature":0}`},
	{"chat-conversation", true, `{"model":"bench-adapter","messages":[` +
		`{"role":"system","content":"` + strings.Repeat("You answer questions about the weather. ", 24) + `"},` +
		`{"role":"user","content":"What is the weather in Bern?"},` +
		`{"role":"assistant","content":"` + strings.Repeat("It is sunny and 21 degrees; tomorrow brings rain. ", 16) + `","refusal":null},` +
		`{"role":"user","content":[{"type":"text","text":"And in Geneva, \"tomorrow\"?"}]}],` +
		`"max_completion_tokens":256,"temperature":0.7,"top_p":0.95,"n":1,"stream":true,"stream_options":{"include_usage":true},` +
		`"presence_penalty":0,"frequency_penalty":0,"logit_bias":{},"user":"user-1234","seed":42,"stop":["\n\n"],"metadata":{"trace":"abc"}}`},
	{"completion", false, `{"model":"base","prompt":"Once upon a time","max_tokens":16}`},
	{"completion-tokens", false, `{"model":"base","prompt":[` + strings.TrimSuffix(strings.Repeat("1234,", 512), ",") + `],"max_tokens":1,"echo":true,"logprobs":1}`},
}

// BenchmarkParse measures the parsing of completion request bodies.
func BenchmarkParse(b *testing.B) {
	for _, bb := range parseBenchBodies {
		body := []byte(bb.body)
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var err error
				if bb.chat {
					_, err = parseChat(body, 16)
				} else {
					_, err = parseCompletion(body, 16)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
