package tokenizer

import "strings"

// StreamDecoder turns ids into text one at a time, for streaming. Each Add
// returns only text that is final: complete UTF-8, with the spacing it has
// in the whole decoded sequence. The concatenation of every Add and the
// final Flush equals Decode of all the ids.
//
// It works like Hugging Face's DecodeStream: it decodes a short window (the
// tokens of the previous output as context, plus the new ones) and returns
// what the new tokens added. Text is held back while it ends in an
// incomplete UTF-8 sequence (U+FFFD) and, for byte-fallback vocabularies,
// while the last token is a <0xHH> byte token (a run of byte tokens decodes
// as a whole).
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	byteFB      bool
	ids         []int
	prefix      string
	prefixIndex int
}

// NewStreamDecoder returns a decoder for one sequence of ids.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	d := &StreamDecoder{t: t, skipSpecial: skipSpecial}
	for _, x := range t.decoder {
		if _, ok := x.(byteFallbackDec); ok {
			d.byteFB = true
		}
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
	s := d.t.Decode(d.ids, d.skipSpecial)
	if len(s) <= len(d.prefix) || strings.HasSuffix(s, "\uFFFD") || !strings.HasPrefix(s, d.prefix) {
		return ""
	}
	out := s[len(d.prefix):]
	n := copy(d.ids, d.ids[d.prefixIndex:])
	d.ids = d.ids[:n]
	d.prefix = d.t.Decode(d.ids, d.skipSpecial)
	d.prefixIndex = n
	return out
}

// Flush returns the text held back and resets the decoder.
func (d *StreamDecoder) Flush() string {
	s := d.t.Decode(d.ids, d.skipSpecial)
	out := strings.TrimPrefix(s, d.prefix)
	d.ids, d.prefix, d.prefixIndex = d.ids[:0], "", 0
	return out
}
