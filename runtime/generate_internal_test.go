package runtime

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	nozzle "github.com/nozzle-ai/nozzle"
)

// byteCodec decodes each id as one byte, holding back incomplete UTF-8.
type byteCodec struct{}

type byteStream struct{ buf []byte }

func (s *byteStream) Add(id int) string {
	s.buf = append(s.buf, byte(id))
	n := len(s.buf)
	// Hold back a trailing incomplete sequence.
	for i := max(0, n-3); i < n; i++ {
		if utf8.RuneStart(s.buf[i]) && !utf8.FullRune(s.buf[i:]) {
			n = i
			break
		}
	}
	out := strings.ToValidUTF8(string(s.buf[:n]), "\uFFFD")
	s.buf = append(s.buf[:0], s.buf[n:]...)
	return out
}

func (s *byteStream) Flush() string {
	out := strings.ToValidUTF8(string(s.buf), "\uFFFD")
	s.buf = nil
	return out
}

func (byteCodec) Encode(string, bool) ([]int, error) { return nil, nil }
func (byteCodec) ChatPrompt([]nozzle.ChatMessage, json.RawMessage, json.RawMessage) (string, error) {
	return "", nil
}
func (byteCodec) NewStreamDecoder([]int) streamDecoder { return &byteStream{} }
func (byteCodec) TokenText(id int) string              { return string(rune(id)) }
func (byteCodec) TokenBytes(id int) []byte             { return []byte{byte(id)} }
func (byteCodec) EOS() int                             { return -1 }
func (byteCodec) IsSpecial(int) bool                   { return false }

// FuzzTextStream checks the stop-sequence logic against a direct reading
// of the text as it grows token by token: what goes out is the text up to
// the first stop sequence to appear (the earliest-starting one if several
// complete with the same token), in valid UTF-8 chunks, and nothing of
// the stop itself.
func FuzzTextStream(f *testing.F) {
	f.Add([]byte("hello world, stop here"), "stop", "")
	f.Add([]byte("aaab"), "aab", "b")
	f.Add([]byte("caf\xc3\xa9 cr\xc3\xa8me"), "\xc3\xa8", "")
	f.Add([]byte("abc"), "", "x")
	f.Fuzz(func(t *testing.T, text []byte, s1, s2 string) {
		var stops []string
		for _, s := range []string{s1, s2} {
			if s != "" && utf8.ValidString(s) {
				stops = append(stops, s)
			}
		}
		var whole byteStream
		full, want := "", ""
		cut := false
		for i := 0; i <= len(text); i++ {
			if i < len(text) {
				full += whole.Add(int(text[i]))
			} else {
				full += whole.Flush()
			}
			if j := firstStop(full, stops); j >= 0 && !cut {
				want, cut = full[:j], true
			}
		}
		if !cut {
			want = full
		}

		ts := &textStream{dec: byteCodec{}.NewStreamDecoder(nil), stops: stops, logprobs: true}
		var got strings.Builder
		lps := 0
		matched := false
		for _, b := range text {
			c, m := ts.add(byteCodec{}, &seqEvent{token: int32(b)})
			if !utf8.ValidString(c.Text) {
				t.Fatalf("chunk %q is not valid UTF-8", c.Text)
			}
			got.WriteString(c.Text)
			lps += len(c.Logprobs)
			if m {
				matched = true
				break
			}
			// a chunk carries the logprobs of exactly the tokens (here
			// bytes) whose text it holds: what went out so far is the text
			// of the tokens whose logprobs went out
			var d byteStream
			upTo := ""
			for _, b := range text[:lps] {
				upTo += d.Add(int(b))
			}
			if got.String() != upTo {
				t.Fatalf("after chunk %q: text %q, the text of the %d tokens with logprobs %q", c.Text, got.String(), lps, upTo)
			}
		}
		if !matched {
			c, m := ts.flush(byteCodec{})
			got.WriteString(c.Text)
			lps += len(c.Logprobs)
			matched = m
		}
		if got.String() != want {
			t.Fatalf("stops %q over %q: got %q, want %q", stops, full, got.String(), want)
		}
		if matched != cut {
			t.Fatalf("matched %v for %q in %q", matched, stops, full)
		}
		if !matched && lps != len(text) {
			t.Fatalf("%d logprobs for %d tokens", lps, len(text))
		}
	})
}

func TestBatchLimits(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		device       string
		weights, l3  int64
		seqs, tokens int
	}{
		{"cuda", 2000 * mib, 32 * mib, 64, 512},
		{"cuda", 10 * mib, 512 * mib, 64, 512},
		{"cpu", 1000 * mib, 256 * mib, 8, 64}, // streams its weights: batches pay
		{"cpu", 27 * mib, 256 * mib, 3, 16},   // stays in the cache: short steps
		{"cpu", 27 * mib, 32 * mib, 8, 64},    // more than half the cache
		{"cpu", 0, 256 * mib, 8, 64},          // unknown size
	} {
		if s, tok := batchLimits(tc.device, tc.weights, tc.l3); s != tc.seqs || tok != tc.tokens {
			t.Errorf("%s, %d MiB of weights, %d MiB cache: %d seqs, %d tokens; want %d, %d",
				tc.device, tc.weights/mib, tc.l3/mib, s, tok, tc.seqs, tc.tokens)
		}
	}
	o := Options{MaxBatchSeqs: 5}
	o.sizeFor("cpu", 1<<40)
	if o.MaxBatchSeqs != 5 || o.MaxBatchTokens != 64 {
		t.Errorf("given limits: %+v", o)
	}
	for s, want := range map[string]int64{"2048K": 2 << 20, "491520K": 480 << 20, "32M": 32 << 20, "1G": 1 << 30, "x": 0, "": 0} {
		if got := parseCacheSize(s); got != want {
			t.Errorf("parseCacheSize(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestWireRequest_RoundTrip: every field of a request survives the remote
// protocol, tools and tool calls included.
func TestWireRequest_RoundTrip(t *testing.T) {
	seed := uint64(7)
	in := &nozzle.GenerateRequest{
		RequestID: "r", TenantID: "t", Adapter: &nozzle.Adapter{Name: "a"},
		Messages: []nozzle.ChatMessage{{Role: "user", Content: "x"},
			{Role: "assistant", ToolCalls: []nozzle.ToolCall{{ID: "c1", Type: "function", Function: nozzle.FunctionCall{Name: "f", Arguments: `{"k":1}`}}}},
			{Role: "tool", Content: "42", ToolCallID: "c1"}},
		Tools:     json.RawMessage(`[{"type":"function","function":{"name":"f"}}]`),
		MaxTokens: 5, Temperature: 0.5, TopP: 0.9, TopK: 3, Seed: &seed, Stop: []string{"s"},
		Logprobs: true, TopLogprobs: 2, Echo: true, Stream: true,
		LogitBias: map[int]float64{5: -100, 17: 2.5}, PresencePenalty: 0.5, FrequencyPenalty: -1,
		ResponseFormat: nozzle.ResponseFormatJSONSchema, ResponseSchema: json.RawMessage(`{"type":"object"}`), ToolChoice: "f", OneCall: true,
	}
	b, err := json.Marshal(toWire(in))
	if err != nil {
		t.Fatal(err)
	}
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if out := w.request(); !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", out, in)
	}
}
