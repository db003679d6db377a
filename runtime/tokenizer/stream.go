package tokenizer

import (
	"slices"
	"strings"
)

// StreamDecoder turns ids into text one at a time, for streaming. Each Add
// returns only text that is final: complete UTF-8, with the spacing it has
// in the whole decoded sequence. The concatenation of every Add and the
// final Flush equals Decode of all the ids.
//
// It works like Hugging Face's DecodeStream: it decodes a short window (the
// tokens of the previous output as context, plus the new ones) and returns
// what the new tokens added. Text is held back while it ends in an
// incomplete UTF-8 sequence and, for byte-fallback vocabularies,
// while the last token is a <0xHH> byte token (a run of byte tokens decodes
// as a whole).
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	keep        []int // special tokens decoded all the same
	byteFB      bool
	byteLevel   bool // the decoder is ByteLevel alone
	ids         []int
	prefix      string
	prefixIndex int
}

// NewStreamDecoder returns a decoder for one sequence of ids.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return t.NewStreamDecoderKeeping(skipSpecial, nil)
}

// NewStreamDecoderKeeping is NewStreamDecoder whose skipping of special
// tokens keeps those in keep (the control tokens of a tool call that are
// to be read, say).
func (t *Tokenizer) NewStreamDecoderKeeping(skipSpecial bool, keep []int) *StreamDecoder {
	d := &StreamDecoder{t: t, skipSpecial: skipSpecial, keep: keep}
	for _, x := range t.decoder {
		if _, ok := x.(byteFallbackDec); ok {
			d.byteFB = true
		}
	}
	if len(t.decoder) == 1 {
		_, d.byteLevel = t.decoder[0].(byteLevelDec)
	}
	return d
}

// Add adds one id and returns the text that became final ("" if none).
func (d *StreamDecoder) Add(id int) string {
	d.ids = append(d.ids, id)
	if d.byteFB && id >= 0 && id < len(d.t.idToTok) {
		if _, ok := byteToken(d.t.idToTok[id]); ok {
			return ""
		}
	}
	s := d.t.decode(d.ids, d.skipSpecial, d.keep)
	if len(s) <= len(d.prefix) || !strings.HasPrefix(s, d.prefix) {
		return ""
	}
	if strings.HasSuffix(s, "\uFFFD") && !d.finalReplacement() {
		return ""
	}
	out := s[len(d.prefix):]
	n := copy(d.ids, d.ids[d.prefixIndex:])
	d.ids = d.ids[:n]
	d.prefix = d.t.decode(d.ids, d.skipSpecial, d.keep)
	d.prefixIndex = n
	return out
}

// finalReplacement reports whether a trailing U+FFFD is final: for
// byte-level decoding, when the last bytes are not the start of a UTF-8
// sequence that later bytes could complete. (Otherwise text that ends in
// invalid bytes would be held, and re-decoded, until Flush.)
func (d *StreamDecoder) finalReplacement() bool {
	if !d.byteLevel {
		return false
	}
	var tail []byte
	for i := len(d.ids) - 1; i >= 0 && len(tail) < 4; i-- {
		id := d.ids[i]
		if d.skipSpecial && d.t.IsSpecial(id) && !slices.Contains(d.keep, id) {
			continue
		}
		tail = append(append([]byte(nil), d.t.TokenBytes(id)...), tail...)
	}
	return incompleteTail(tail) == 0
}

// Flush returns the text held back and resets the decoder.
func (d *StreamDecoder) Flush() string {
	s := d.t.decode(d.ids, d.skipSpecial, d.keep)
	out := strings.TrimPrefix(s, d.prefix)
	d.ids, d.prefix, d.prefixIndex = d.ids[:0], "", 0
	return out
}
