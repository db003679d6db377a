package tokenizer

import (
	"sort"
	"unicode"
	"unicode/utf8"
)

type addedToken struct {
	id         int
	content    string // as matched (normalized tokens: after normalization)
	special    bool
	singleWord bool
	lstrip     bool
	rstrip     bool
}

// matcher finds added tokens in text, leftmost first and longest at a
// position, without overlaps (Hugging Face uses Aho-Corasick with
// leftmost-longest semantics).
type matcher struct {
	first  [256]bool
	single [256]int           // index+1 of a one-byte token
	byPair map[uint16]*bucket // tokens by their first two bytes
	tokens []addedToken
}

// bucket holds the tokens that start with the same two bytes. Small
// buckets are scanned; large ones (Gemma 3's 6,242 <unusedN> tokens,
// Llama 3's 256 <|…|> tokens) are looked up by content,
// once per distinct length.
type bucket struct {
	idx       []int          // token indexes, longest first
	lens      []int          // distinct lengths, longest first (large buckets)
	byContent map[string]int // content -> token index (large buckets)
}

// scanMax is the largest bucket that find scans token by token.
const scanMax = 8

func newMatcher(tokens []addedToken) *matcher {
	if len(tokens) == 0 {
		return nil
	}
	m := &matcher{tokens: tokens, byPair: map[uint16]*bucket{}}
	for i, tok := range tokens {
		c := tok.content
		m.first[c[0]] = true
		if len(c) == 1 {
			m.single[c[0]] = i + 1
			continue
		}
		k := uint16(c[0])<<8 | uint16(c[1])
		b := m.byPair[k]
		if b == nil {
			b = &bucket{}
			m.byPair[k] = b
		}
		b.idx = append(b.idx, i)
	}
	for _, b := range m.byPair {
		sort.SliceStable(b.idx, func(i, j int) bool { return len(tokens[b.idx[i]].content) > len(tokens[b.idx[j]].content) })
		if len(b.idx) <= scanMax {
			continue
		}
		b.byContent = make(map[string]int, len(b.idx))
		for _, k := range b.idx {
			c := tokens[k].content
			if _, dup := b.byContent[c]; dup {
				continue // the first of equal tokens wins, as in the scan
			}
			b.byContent[c] = k
			if n := len(b.lens); n == 0 || b.lens[n-1] != len(c) {
				b.lens = append(b.lens, len(c))
			}
		}
	}
	return m
}

// find returns the next match at or after from: token index and span.
func (m *matcher) find(s string, from int) (tok, start, end int) {
	for i := from; i < len(s); i++ {
		if !m.first[s[i]] {
			continue
		}
		if i+1 < len(s) {
			if b := m.byPair[uint16(s[i])<<8|uint16(s[i+1])]; b != nil {
				if b.byContent == nil {
					for _, k := range b.idx {
						c := m.tokens[k].content
						if len(s)-i >= len(c) && s[i:i+len(c)] == c {
							return k, i, i + len(c)
						}
					}
				} else {
					for _, n := range b.lens {
						if len(s)-i >= n {
							if k, ok := b.byContent[s[i:i+n]]; ok {
								return k, i, i + n
							}
						}
					}
				}
			}
		}
		if k := m.single[s[i]]; k > 0 {
			return k - 1, i, i + 1
		}
	}
	return -1, -1, -1
}

// addedVocab holds the added tokens matched on raw text (normalized:false)
// and on normalized text (normalized:true).
type addedVocab struct {
	raw, normalized *matcher
}

func newAddedVocab(list []addedTokenJSON, n normalizer) addedVocab {
	var raw, norm []addedToken
	for _, a := range list {
		tok := addedToken{id: *a.ID, content: a.Content, special: a.Special, singleWord: a.SingleWord, lstrip: a.LStrip, rstrip: a.RStrip}
		normalized := !a.Special
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		if normalized {
			if n != nil {
				tok.content = n.normalize(tok.content)
			}
			if tok.content != "" {
				norm = append(norm, tok)
			}
		} else {
			raw = append(raw, tok)
		}
	}
	return addedVocab{raw: newMatcher(raw), normalized: newMatcher(norm)}
}

// split calls fn for every segment of s in order: added tokens with their
// id, other text with id -1. atStart is true for a segment at offset 0.
// Empty text segments are not reported.
func (v *addedVocab) split(s string, parseSpecial, normalizedPass bool, fn func(seg string, id int, atStart bool)) {
	m := v.raw
	if normalizedPass {
		m = v.normalized
	}
	if m == nil {
		if s != "" {
			fn(s, -1, true)
		}
		return
	}
	offset := 0 // end of the last emitted segment
	for pos := 0; pos < len(s); {
		k, start, stop := m.find(s, pos)
		if k < 0 {
			break
		}
		pos = stop
		tok := &m.tokens[k]
		if tok.special && !parseSpecial {
			continue
		}
		if start < offset {
			continue
		}
		if tok.singleWord {
			startOK := start == 0 || !endsWithWordChar(s[:start])
			stopOK := stop == len(s) || !startsWithWordChar(s[stop:])
			if !startOK || !stopOK {
				continue
			}
		}
		if tok.lstrip {
			start = max(trailingSpaceStart(s[:start]), offset)
		}
		if tok.rstrip {
			stop += leadingSpaceLen(s[stop:])
			pos = stop
		}
		if offset < start {
			fn(s[offset:start], -1, offset == 0)
		}
		fn(s[start:stop], tok.id, start == 0)
		offset = stop
	}
	if offset < len(s) {
		fn(s[offset:], -1, offset == 0)
	}
}

func isWordChar(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

func endsWithWordChar(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isWordChar(r)
}

// trailingSpaceStart returns the offset where the trailing whitespace of s
// begins.
func trailingSpaceStart(s string) int {
	i := len(s)
	for i > 0 {
		r, n := utf8.DecodeLastRuneInString(s[:i])
		if !unicode.IsSpace(r) {
			break
		}
		i -= n
	}
	return i
}

// leadingSpaceLen returns the length of the leading whitespace of s.
func leadingSpaceLen(s string) int {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return i
}
