package tokenizer_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
	"golang.org/x/text/unicode/norm"
)

// streamed decodes ids one at a time and checks every piece is valid UTF-8.
func streamed(tb testing.TB, tok *tokenizer.Tokenizer, ids []int, skip bool) string {
	tb.Helper()
	d := tok.NewStreamDecoder(skip)
	var b strings.Builder
	for _, id := range ids {
		s := d.Add(id)
		if !utf8.ValidString(s) {
			tb.Fatalf("Add(%d) returned invalid UTF-8 %q", id, s)
		}
		b.WriteString(s)
	}
	b.WriteString(d.Flush())
	return b.String()
}

func TestStreamDecoder(t *testing.T) {
	for _, name := range append(models, "demo") {
		t.Run(name, func(t *testing.T) {
			tok := mustModel(t, name)
			t.Run("Corpus", func(t *testing.T) {
				for i, text := range readCorpus(t) {
					ids := tok.Encode(text, tokenizer.EncodeOptions{AddSpecialTokens: true, ParseSpecial: true})
					for _, skip := range []bool{false, true} {
						if got, want := streamed(t, tok, ids, skip), tok.Decode(ids, skip); got != want {
							t.Fatalf("line %d skip=%v: streamed %q, Decode %q", i, skip, got, want)
						}
					}
				}
			})
			t.Run("Random", func(t *testing.T) {
				r := rand.New(rand.NewPCG(1, uint64(len(name))))
				pool := byteHeavyIDs(tok)
				for n := 0; n < 300; n++ {
					ids := make([]int, 1+r.IntN(40))
					for i := range ids {
						if r.IntN(3) == 0 {
							ids[i] = r.IntN(tok.VocabSize())
						} else {
							ids[i] = pool[r.IntN(len(pool))]
						}
					}
					for _, skip := range []bool{false, true} {
						if got, want := streamed(t, tok, ids, skip), tok.Decode(ids, skip); got != want {
							t.Fatalf("ids %v skip=%v: streamed %q, Decode %q", ids, skip, got, want)
						}
					}
				}
			})
			t.Run("Emoji", func(t *testing.T) {
				for _, s := range []string{"👨‍👩‍👧‍👦🇺🇸 ok", "  🦙\n🦙", "中文😀x", "e\u0301\u0301 🏳️‍🌈"} {
					ids := tok.Encode(s, tokenizer.EncodeOptions{AddSpecialTokens: true})
					d := tok.NewStreamDecoder(true)
					var got strings.Builder
					for _, id := range ids {
						got.WriteString(d.Add(id))
					}
					got.WriteString(d.Flush())
					if want := tok.Decode(ids, true); got.String() != want {
						t.Fatalf("%q: streamed %q, Decode %q", s, got.String(), want)
					}
				}
			})
		})
	}
}

// byteHeavyIDs returns ids of single-byte and byte-fallback tokens and of
// the tokens of emoji text: the ones that split UTF-8 sequences.
func byteHeavyIDs(tok *tokenizer.Tokenizer) []int {
	var ids []int
	for id := 0; id < tok.VocabSize(); id++ {
		if len(tok.TokenBytes(id)) == 1 || strings.HasPrefix(tok.TokenText(id), "<0x") {
			ids = append(ids, id)
		}
	}
	ids = append(ids, tok.Encode("😀👍🏽🇯🇵 中文 ▁x", tokenizer.EncodeOptions{})...)
	return ids
}

// TestRoundTrip checks Decode(Encode(x)) == x for every corpus line (after
// the tokenizer's normalization).
func TestRoundTrip(t *testing.T) {
	for _, name := range append(models, "demo") {
		t.Run(name, func(t *testing.T) {
			tok := mustModel(t, name)
			for i, text := range readCorpus(t) {
				want := text
				switch name {
				case "qwen3":
					want = norm.NFC.String(text)
				case "gemma2", "gemma3":
					// Gemma's decoder turns every "▁" into a space,
					// including one the text had (as in Hugging Face).
					want = strings.ReplaceAll(text, "▁", " ")
				}
				for _, parse := range []bool{false, true} {
					// Llama 2 (legacy SentencePiece): "▁" decodes to a
					// space, and a "▁" is prepended after each special
					// token, as in Hugging Face.
					if name == "llama2" && (parse || strings.Contains(text, "▁")) {
						continue
					}
					ids := tok.Encode(text, tokenizer.EncodeOptions{ParseSpecial: parse})
					if got := tok.Decode(ids, false); got != want {
						t.Errorf("line %d parse=%v: got %q, want %q", i, parse, got, want)
					}
				}
			}
		})
	}
}

func TestEncode_ParseSpecial(t *testing.T) {
	tests := []struct {
		model, text, token string
		parsedWhenOff      bool
	}{
		{"llama3", "<|begin_of_text|>Hi<|eot_id|>", "<|begin_of_text|>", false},
		{"llama3", "a<|eot_id|>b", "<|eot_id|>", false},
		{"llama2", "x</s>", "</s>", false},
		{"qwen3", "<|im_start|>user", "<|im_start|>", false},
		{"qwen3", "<think>hm</think>", "<think>", true}, // an added token that is not special
		{"gemma3", "<start_of_turn>user\nHi<end_of_turn>", "<end_of_turn>", false},
		{"gemma3", "<bos>x", "<bos>", false},
		{"gemma3", "a<unused6241>b", "<unused6241>", true}, // not special
		{"gemma3", "<table><tr><td>1</td></tr></table>", "<td>", true},
		{"gemma3", "x\n\n\ty", "\n\n", true},
		{"gemma2", "<start_of_turn>model\n", "<start_of_turn>", false},
		{"demo", "<|im_end|>", "<|im_end|>", false},
	}
	for _, tt := range tests {
		t.Run(tt.model+"/"+tt.token, func(t *testing.T) {
			tok := mustModel(t, tt.model)
			id, ok := tok.TokenID(tt.token)
			if !ok {
				t.Fatalf("no token %q", tt.token)
			}
			on := tok.Encode(tt.text, tokenizer.EncodeOptions{ParseSpecial: true})
			off := tok.Encode(tt.text, tokenizer.EncodeOptions{})
			if !containsInt(on, id) {
				t.Fatalf("ParseSpecial: %v lacks %d", on, id)
			}
			if containsInt(off, id) != tt.parsedWhenOff {
				t.Fatalf("no ParseSpecial: %v contains %d = %v, want %v", off, id, containsInt(off, id), tt.parsedWhenOff)
			}
			if tok.Decode(off, false) != tok.Decode(on, false) {
				t.Fatalf("decodings differ: %q vs %q", tok.Decode(off, false), tok.Decode(on, false))
			}
		})
	}
}

func containsInt(l []int, x int) bool {
	for _, v := range l {
		if v == x {
			return true
		}
	}
	return false
}

func TestTokenBytes(t *testing.T) {
	tests := []struct {
		model, token, want string
	}{
		{"llama3", "Ġhello", " hello"},
		{"llama3", "Ċ", "\n"},
		{"llama3", "<|eot_id|>", "<|eot_id|>"},
		{"qwen3", "ĠĠ", "  "},
		{"llama2", "▁Hello", " Hello"},
		{"llama2", "<0x0A>", "\n"},
		{"llama2", "<0xE4>", "\xe4"},
		{"llama2", "<s>", "<s>"},
		{"gemma3", "▁Hello", " Hello"},
		{"gemma3", "<0x0A>", "\n"},
		{"gemma3", "<0xE4>", "\xe4"},
		{"gemma3", "\n\n", "\n\n"},
		{"gemma3", "▁▁▁", "   "},
		{"gemma3", "<end_of_turn>", "<end_of_turn>"},
		{"gemma3", "<image_soft_token>", "<image_soft_token>"},
		{"gemma2", "▁world", " world"},
	}
	for _, tt := range tests {
		t.Run(tt.model+"/"+tt.token, func(t *testing.T) {
			tok := mustModel(t, tt.model)
			id, ok := tok.TokenID(tt.token)
			if !ok {
				t.Fatalf("no token %q", tt.token)
			}
			if got := string(tok.TokenBytes(id)); got != tt.want {
				t.Fatalf("TokenBytes = %q, want %q", got, tt.want)
			}
			if got := tok.TokenText(id); got != tt.token {
				t.Fatalf("TokenText = %q, want %q", got, tt.token)
			}
		})
	}
	t.Run("ConcatenatesToText", func(t *testing.T) {
		tok := mustModel(t, "llama3")
		text := "Emoji 👨‍👩‍👧‍👦 and 中文\n\tcode()"
		var b []byte
		for _, id := range tok.Encode(text, tokenizer.EncodeOptions{}) {
			b = append(b, tok.TokenBytes(id)...)
		}
		if string(b) != text {
			t.Fatalf("got %q", b)
		}
	})
	t.Run("Unknown", func(t *testing.T) {
		tok := mustModel(t, "llama3")
		if tok.TokenBytes(-1) != nil || tok.TokenBytes(1<<30) != nil || tok.TokenText(1<<30) != "" {
			t.Fatal("want nil/empty for unknown ids")
		}
	})
}

func TestSpecialTokens(t *testing.T) {
	tests := []struct {
		model    string
		bos      string
		eos      []string
		vocab    int
		specials int
	}{
		{"llama2", "<s>", []string{"</s>"}, 32000, 3},
		{"llama3", "<|begin_of_text|>", []string{"<|end_of_text|>", "<|eot_id|>"}, 128256, 256},
		{"qwen3", "", []string{"<|im_end|>"}, 151669, 14},
		// Gemma 3's eos_token is <end_of_turn>; <eos> (1) comes from
		// generation_config.json, which the runtime adds. <image_soft_token>
		// (262144) is past the 262,144-token vocabulary.
		{"gemma3", "<bos>", []string{"<end_of_turn>"}, 262145, 9},
		// Gemma 2's tokenizer_config.json has no chat template: <eos> only.
		{"gemma2", "<bos>", []string{"<eos>"}, 256000, 6},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			tok := mustModel(t, tt.model)
			id, ok := tok.BOS()
			if ok != (tt.bos != "") || ok && tok.TokenText(id) != tt.bos {
				t.Fatalf("BOS = %d %v, want %q", id, ok, tt.bos)
			}
			var eos []string
			for _, id := range tok.EOS() {
				eos = append(eos, tok.TokenText(id))
			}
			if strings.Join(eos, " ") != strings.Join(tt.eos, " ") {
				t.Fatalf("EOS = %q, want %q", eos, tt.eos)
			}
			if tok.VocabSize() != tt.vocab {
				t.Fatalf("VocabSize = %d, want %d", tok.VocabSize(), tt.vocab)
			}
			if n := len(tok.SpecialIDs()); n != tt.specials {
				t.Fatalf("%d special ids, want %d", n, tt.specials)
			}
		})
	}
}

// TestStreamDecoder_InvalidBytes checks that text ending in bytes that can
// never become valid UTF-8 is emitted at once, not held until Flush.
func TestStreamDecoder_InvalidBytes(t *testing.T) {
	tok := mustModel(t, "llama3")
	ff, ok := tok.TokenID("ÿ") // byte 0xFF: never valid in UTF-8
	if !ok {
		t.Fatal("no token for byte 0xFF")
	}
	e4, _ := tok.TokenID("ä") // byte 0xE4: starts a 3-byte sequence
	d := tok.NewStreamDecoder(false)
	if got := d.Add(ff); got != "\uFFFD" {
		t.Fatalf("Add(0xFF) = %q, want U+FFFD at once", got)
	}
	if got := d.Add(e4); got != "" {
		t.Fatalf("Add(0xE4) = %q, want it held", got)
	}
	if got := d.Add(ff); got != "\uFFFD\uFFFD" {
		t.Fatalf("Add(0xFF) = %q, want two U+FFFD", got)
	}
	if got := d.Flush(); got != "" {
		t.Fatalf("Flush = %q", got)
	}
}
