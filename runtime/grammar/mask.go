package grammar

import (
	"slices"
	"sync"
	"unicode/utf8"
)

// Masker finds the tokens of a vocabulary that may come next in a JSON
// state: a token may when the machine reads all its bytes. It walks a
// trie of the tokens' bytes, so a prefix the machine refuses is read once
// for all the tokens that share it, and keeps the masks it made by state
// (a JSON object revisits few states: inside a key, inside a value's
// string, after a value, at one depth or another), up to a byte budget.
// Inside a string most tokens are plain text that any string takes
// (plain): those are one precomputed mask, and only the others are
// walked. Safe for concurrent use.
type Masker struct {
	vocab int
	words int  // uint32 words of a mask
	all   trie // every token but the ends
	odd   trie // the tokens that are not plain text
	plain []uint32
	// tokens that end the output: allowed once it is done, never before
	ends []int32

	mu       sync.Mutex
	cache    map[string]cached
	cacheMax int // masks kept at most
	keyBuf   []byte
}

// NewMasker builds a Masker for a vocabulary: tokens[id] is the bytes of
// token id, nil (or empty) for a token that never comes in JSON (special
// and control tokens); ends are the tokens that end a generation (EOS).
// cacheBytes bounds the masks kept (0: 64 MiB).
func NewMasker(tokens [][]byte, ends []int, cacheBytes int) *Masker {
	m := &Masker{vocab: len(tokens), words: (len(tokens) + 31) / 32}
	if cacheBytes <= 0 {
		cacheBytes = 64 << 20
	}
	m.cacheMax = max(16, cacheBytes/(4*max(1, m.words)))
	m.cache = make(map[string]cached)
	for _, id := range ends {
		if id >= 0 && id < len(tokens) {
			m.ends = append(m.ends, int32(id))
		}
	}
	// Sort the token ids by their bytes: each trie node's tokens and
	// children are then contiguous, built in one pass.
	ids := make([]int32, 0, len(tokens))
	for id, b := range tokens {
		if len(b) > 0 && !slices.Contains(m.ends, int32(id)) {
			ids = append(ids, int32(id))
		}
	}
	slices.SortFunc(ids, func(a, b int32) int {
		if c := slices.Compare(tokens[a], tokens[b]); c != 0 {
			return c
		}
		return int(a - b)
	})
	m.all.build(tokens, ids)
	m.plain = make([]uint32, m.words)
	var odd []int32
	for _, id := range ids {
		if plainText(tokens[id]) {
			m.plain[id/32] |= 1 << (id % 32)
		} else {
			odd = append(odd, id)
		}
	}
	m.odd.build(tokens, odd)
	return m
}

// plainText reports whether a string takes b and stays as it was: whole
// UTF-8 characters, none of them a quote, a backslash or a control.
func plainText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(b)
}

// trie is a trie of token bytes: node i's children are
// kids[first[i]:first[i+1]] (their bytes in edge), its tokens
// toks[tfirst[i]:tfirst[i+1]]; node 0 is the root.
type trie struct {
	first, tfirst []int32
	kids          []int32
	edge          []byte
	toks          []int32
}

// build lays the trie of ids (sorted by their bytes) out breadth-first.
func (m *trie) build(tokens [][]byte, ids []int32) {
	type span struct{ lo, hi, depth int } // ids[lo:hi] share depth bytes
	level := []span{{0, len(ids), 0}}
	m.first = append(m.first, 0)
	m.tfirst = append(m.tfirst, 0)
	next := int32(1) // the next node's index
	for len(level) > 0 {
		var below []span
		for _, sp := range level {
			lo := sp.lo
			// the tokens that end at this node
			for lo < sp.hi && len(tokens[ids[lo]]) == sp.depth {
				m.toks = append(m.toks, ids[lo])
				lo++
			}
			m.tfirst = append(m.tfirst, int32(len(m.toks)))
			// its children, one per next byte
			for lo < sp.hi {
				b := tokens[ids[lo]][sp.depth]
				hi := lo + 1
				for hi < sp.hi && tokens[ids[hi]][sp.depth] == b {
					hi++
				}
				m.kids = append(m.kids, next)
				m.edge = append(m.edge, b)
				next++
				below = append(below, span{lo, hi, sp.depth + 1})
				lo = hi
			}
			m.first = append(m.first, int32(len(m.kids)))
		}
		level = below
	}
}

// Vocab is the vocabulary's size; Words a mask's length in uint32 words.
func (m *Masker) Vocab() int { return m.vocab }
func (m *Masker) Words() int { return m.words }

// cached is a mask made and whether it allows any token.
type cached struct {
	bits []uint32
	any  bool
}

// Mask returns the tokens that may come next in state s, as bits (bit
// t%32 of word t/32 set: token t may come), and whether there is any (a
// vocabulary without the bytes the state needs, or a done state of a
// vocabulary without end tokens, has none). The slice is shared: the
// caller must not change it.
func (m *Masker) Mask(s *JSON) ([]uint32, bool) {
	m.mu.Lock()
	m.keyBuf = s.Key(m.keyBuf[:0])
	if c, ok := m.cache[string(m.keyBuf)]; ok {
		m.mu.Unlock()
		return c.bits, c.any
	}
	key := string(m.keyBuf)
	m.mu.Unlock()

	mask := make([]uint32, m.words)
	switch {
	case s.Done():
		for _, id := range m.ends {
			mask[id/32] |= 1 << (id % 32)
		}
	case s.lex == jStr:
		copy(mask, m.plain)
		m.odd.walk(s, mask)
	default:
		m.all.walk(s, mask)
	}

	any := false
	for _, w := range mask {
		any = any || w != 0
	}
	m.mu.Lock()
	if len(m.cache) >= m.cacheMax {
		clear(m.cache) // states come back soon enough to be made again
	}
	m.cache[key] = cached{mask, any}
	m.mu.Unlock()
	return mask, any
}

// walk sets the bits of the tokens whose bytes s reads, depth first.
func (m *trie) walk(s *JSON, mask []uint32) {
	type frame struct {
		node int32
		st   JSON
	}
	stack := []frame{{0, *s}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, id := range m.toks[m.tfirst[f.node]:m.tfirst[f.node+1]] {
			mask[id/32] |= 1 << (id % 32)
		}
		for k := m.first[f.node]; k < m.first[f.node+1]; k++ {
			st := f.st
			if st.Feed(m.edge[k]) {
				stack = append(stack, frame{m.kids[k], st})
			}
		}
	}
}

// Allowed reports whether token id's bit is set in mask.
func Allowed(mask []uint32, id int) bool {
	return id >= 0 && id/32 < len(mask) && mask[id/32]&(1<<(id%32)) != 0
}
