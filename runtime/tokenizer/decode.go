package tokenizer

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// decoder is one step of Hugging Face's decode_chain: tokens in, tokens
// out.
type decoder interface {
	decodeChain(tokens []string) []string
}

type byteLevelDec struct{}

func (byteLevelDec) decodeChain(tokens []string) []string {
	var raw []byte
	for _, t := range tokens {
		var ok bool
		if raw, ok = byteLevelBytes(raw, t); !ok {
			raw = append(raw, t...)
		}
	}
	return []string{string(appendLossy(nil, raw))}
}

// replaceDec is the Replace decoder: the Replace normalizer applied to
// each token.
type replaceDec struct{ normReplace }

func (r *replaceDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		tokens[i] = r.normalize(t)
	}
	return tokens
}

type byteFallbackDec struct{}

// byteToken parses "<0xHH>".
func byteToken(t string) (byte, bool) {
	if len(t) != 6 || t[:3] != "<0x" || t[5] != '>' {
		return 0, false
	}
	hi, ok1 := unhex(t[3])
	lo, ok2 := unhex(t[4])
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func (byteFallbackDec) decodeChain(tokens []string) []string {
	out := tokens[:0:0]
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range tokens {
		if b, ok := byteToken(t); ok {
			pending = append(pending, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

type fuseDec struct{}

func (fuseDec) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

type stripDec struct {
	content     rune
	start, stop int
}

func (s *stripDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		for k := 0; k < s.start; k++ {
			r, n := utf8.DecodeRuneInString(t)
			if n == 0 || r != s.content {
				break
			}
			t = t[n:]
		}
		for k := 0; k < s.stop; k++ {
			r, n := utf8.DecodeLastRuneInString(t)
			if n == 0 || r != s.content {
				break
			}
			t = t[:len(t)-n]
		}
		tokens[i] = t
	}
	return tokens
}

type metaspaceDec struct {
	replacement string
	stripFirst  bool
}

func (m *metaspaceDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		if i == 0 && m.stripFirst {
			tokens[i] = strings.ReplaceAll(t, m.replacement, "")
		} else {
			tokens[i] = strings.ReplaceAll(t, m.replacement, " ")
		}
	}
	return tokens
}

// bpeDec replaces the end-of-word suffix with a space (none after the last
// token).
type bpeDec struct{ suffix string }

func (b *bpeDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		rep := " "
		if i == len(tokens)-1 {
			rep = ""
		}
		tokens[i] = strings.ReplaceAll(t, b.suffix, rep)
	}
	return tokens
}

func parseDecoder(b json.RawMessage, dst []decoder) ([]decoder, error) {
	c, typ, err := parseComponent(b)
	if err != nil || c == nil {
		return dst, err
	}
	switch typ {
	case "Sequence":
		list, err := c.list("decoders")
		if err != nil {
			return nil, err
		}
		for i, x := range list {
			if dst, err = parseDecoder(x, dst); err != nil {
				return nil, fmt.Errorf("decoders[%d]: %w", i, err)
			}
		}
		return dst, nil
	case "ByteLevel":
		return append(dst, byteLevelDec{}), nil
	case "Replace":
		r, err := c.replace()
		if err != nil {
			return nil, err
		}
		return append(dst, &replaceDec{*r}), nil
	case "ByteFallback":
		return append(dst, byteFallbackDec{}), nil
	case "Fuse":
		return append(dst, fuseDec{}), nil
	case "Strip":
		s := &stripDec{}
		content, err := c.str("content", " ")
		if err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(content) != 1 {
			return nil, fmt.Errorf("field \"content\": want one character, got %q", content)
		}
		s.content, _ = utf8.DecodeRuneInString(content)
		if s.start, err = c.integer("start", 0); err != nil {
			return nil, err
		}
		if s.stop, err = c.integer("stop", 0); err != nil {
			return nil, err
		}
		return append(dst, s), nil
	case "Metaspace":
		m := &metaspaceDec{}
		if m.replacement, err = c.str("replacement", "▁"); err != nil {
			return nil, err
		}
		scheme, err := c.str("prepend_scheme", "")
		if err != nil {
			return nil, err
		}
		if scheme == "" {
			add, err := c.boolean("add_prefix_space", true)
			if err != nil {
				return nil, err
			}
			m.stripFirst = add
		} else {
			m.stripFirst = scheme != "never"
		}
		return append(dst, m), nil
	case "BPEDecoder":
		suffix, err := c.str("suffix", "</w>")
		if err != nil {
			return nil, err
		}
		return append(dst, &bpeDec{suffix: suffix}), nil
	}
	return nil, fmt.Errorf("unsupported decoder type %q", typ)
}

// Decode turns ids back into text, as Hugging Face's tokenizer.decode does
// (without clean_up_tokenization_spaces, which would alter the text).
// Unknown ids are skipped; skipSpecial skips special added tokens.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	return t.decode(ids, skipSpecial, nil)
}

// decode is Decode keeping the special tokens in keep when it skips the
// others.
func (t *Tokenizer) decode(ids []int, skipSpecial bool, keep []int) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.idToTok) || t.idToTok[id] == "" {
			continue
		}
		if skipSpecial && t.special[id] && !slices.Contains(keep, id) {
			continue
		}
		tokens = append(tokens, t.idToTok[id])
	}
	if len(t.decoder) == 0 {
		return strings.Join(tokens, " ")
	}
	for _, d := range t.decoder {
		tokens = d.decodeChain(tokens)
	}
	return strings.Join(tokens, "")
}

// TokenBytes returns the bytes a token stands for on its own: for
// byte-level vocabularies the raw bytes (possibly part of a UTF-8
// sequence), for SentencePiece-style ones the text with "▁" as a space and
// <0xHH> as that byte. Context-dependent steps (stripping the leading space
// of the first token) are not applied. Unknown ids give nil.
func (t *Tokenizer) TokenBytes(id int) []byte {
	if id < 0 || id >= len(t.idToTok) {
		return nil
	}
	tok := t.idToTok[id]
	if t.IsSpecial(id) {
		return []byte(tok)
	}
	b := []byte(tok)
	for _, d := range t.decoder {
		switch d := d.(type) {
		case byteLevelDec:
			if raw, ok := byteLevelBytes(nil, string(b)); ok {
				b = raw
			}
		case *replaceDec:
			b = []byte(d.decodeChain([]string{string(b)})[0])
		case byteFallbackDec:
			if x, ok := byteToken(string(b)); ok {
				b = []byte{x}
			}
		case *metaspaceDec:
			b = []byte(strings.ReplaceAll(string(b), d.replacement, " "))
		case *bpeDec:
			b = []byte(strings.ReplaceAll(string(b), d.suffix, " "))
		}
	}
	return b
}
