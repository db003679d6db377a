package grammar

import (
	"bytes"
	"slices"
	"sync"
	"unicode/utf8"
)

// Machine is a byte-level acceptor a Masker drives. The Masker copies a
// machine's state by assignment at every node of its walk, so a state is
// a small value: what it points to is read-only.
type Machine interface {
	// Feed reads one byte; it reports false (leaving the state unusable)
	// when the byte cannot come next.
	Feed(b byte) bool
	// Done reports whether the output is a whole sentence.
	Done() bool
	// Key appends to dst bytes that identify the state: two states with
	// the same key accept the same continuations.
	Key(dst []byte) []byte
	// Plain reports whether the state is inside a string that takes any
	// plain text (whole UTF-8 characters, none a quote, a backslash or a
	// control) and stays as it is.
	Plain() bool
}

// Looper is a Machine that can tell, of some states, a byte that every
// token without it leaves the state as it is in (free text watching for
// a tag's first byte): the masker takes those tokens at once and walks
// only the ones that have the byte.
type Looper interface {
	Loops() (b byte, ok bool)
}

// Marker is a Machine that reads control tokens besides bytes: tokens
// without bytes in the output's text (Mistral's [TOOL_CALLS] and [ARGS]),
// which a Vocab knows as its marks (NewVocab). Mark reads mark k, the
// Vocab's k-th, and reports false (leaving the state unusable) where it
// cannot come next; the masker allows the mark's token where it can.
type Marker interface {
	Mark(k int) bool
}

// PlainLooper is a Machine that can tell, of some states inside a free
// string, a byte that plain text without it leaves the state as it is in
// (a string that may not hold a tag's text, no part of it read: the tag's
// first byte): the masker takes those plain tokens at once and walks the
// others.
type PlainLooper interface {
	PlainLoops() (b byte, ok bool)
}

// PlainCounter is a Machine that can tell, of some states, that any plain
// text (see Plain) of at most n characters may come next, though it
// changes the state (a string with a length limit): the masker takes
// those tokens at once and walks only the others.
type PlainCounter interface {
	PlainUpTo() (n int, ok bool)
}

// Vocab is a vocabulary prepared for masks, made once per model: a trie of
// its tokens' bytes (so a prefix a machine refuses is read once for all
// the tokens that share it), a second trie of the tokens that are not
// plain text (inside a free string only those need walking; the plain ones
// are one precomputed mask), and the end tokens. Read-only once made.
type Vocab struct {
	vocab int
	words int  // uint32 words of a mask
	all   trie // every token but the ends
	odd   trie // the tokens that are not plain text
	plain []uint32
	// tokens that end the output: allowed once it is done, never before
	ends []int32
	// the tokens split by a byte (Looper), made when first asked for
	tokens [][]byte
	ids    []int32 // the tokens in all, sorted by their bytes
	mu     sync.Mutex
	splits map[byte]*split
	// the plain tokens without a byte, and the others (PlainLooper), made
	// when first asked for
	plainSplits map[byte]*split
	// the plain-text tokens of at most n characters, by n, made when
	// first asked for; plainChars: the most characters a plain token has
	upTo       map[int][]uint32
	plainChars int
	// marks[k] is the token of mark k (Marker), -1 for none
	marks []int32
}

// plainUpTo returns the mask of the plain-text tokens of at most n
// characters.
func (v *Vocab) plainUpTo(n int) []uint32 {
	if n >= v.plainChars {
		return v.plain
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if m := v.upTo[n]; m != nil {
		return m
	}
	m := make([]uint32, v.words)
	for _, id := range v.ids {
		if v.plain[id/32]&(1<<(id%32)) != 0 && utf8.RuneCount(v.tokens[id]) <= n {
			m[id/32] |= 1 << (id % 32)
		}
	}
	if v.upTo == nil {
		v.upTo = map[int][]uint32{}
	}
	v.upTo[n] = m
	return m
}

// split is the vocabulary's tokens split by a byte: the mask of those
// without it, the trie of those with it.
type split struct {
	without []uint32
	with    trie
}

// splitBy returns the tokens split by byte b, made once.
func (v *Vocab) splitBy(b byte) *split {
	return v.cachedSplit(&v.splits, b, false)
}

// plainSplitBy returns the vocabulary's tokens split by byte b and plain
// text: the mask of the plain tokens without b, the trie of the others.
func (v *Vocab) plainSplitBy(b byte) *split {
	return v.cachedSplit(&v.plainSplits, b, true)
}

// cachedSplit makes, once per byte in *cache, the split by byte b: the
// mask of the tokens without b (and plain, when plainOnly), the trie of
// the others.
func (v *Vocab) cachedSplit(cache *map[byte]*split, b byte, plainOnly bool) *split {
	v.mu.Lock()
	defer v.mu.Unlock()
	if sp := (*cache)[b]; sp != nil {
		return sp
	}
	sp := &split{without: make([]uint32, v.words)}
	var with []int32
	for _, id := range v.ids {
		if bytes.IndexByte(v.tokens[id], b) < 0 && (!plainOnly || v.plain[id/32]&(1<<(id%32)) != 0) {
			sp.without[id/32] |= 1 << (id % 32)
		} else {
			with = append(with, id)
		}
	}
	sp.with.build(v.tokens, with)
	if *cache == nil {
		*cache = map[byte]*split{}
	}
	(*cache)[b] = sp
	return sp
}

// NewVocab prepares a vocabulary: tokens[id] is the bytes of token id, nil
// (or empty) for a token that never comes in the output (special and
// control tokens); ends are the tokens that end a generation (EOS); marks
// are control tokens a Marker reads (mark k is token marks[k]; -1 for a
// vocabulary without it), tokens without bytes.
func NewVocab(tokens [][]byte, ends []int, marks ...int) *Vocab {
	v := &Vocab{vocab: len(tokens), words: (len(tokens) + 31) / 32}
	for _, id := range marks {
		if id < 0 || id >= len(tokens) {
			id = -1
		}
		v.marks = append(v.marks, int32(id))
	}
	for _, id := range ends {
		if id >= 0 && id < len(tokens) {
			v.ends = append(v.ends, int32(id))
		}
	}
	// Sort the token ids by their bytes: each trie node's tokens and
	// children are then contiguous, built in one pass.
	ids := make([]int32, 0, len(tokens))
	for id, b := range tokens {
		if len(b) > 0 && !slices.Contains(v.ends, int32(id)) {
			ids = append(ids, int32(id))
		}
	}
	slices.SortFunc(ids, func(a, b int32) int {
		if c := slices.Compare(tokens[a], tokens[b]); c != 0 {
			return c
		}
		return int(a - b)
	})
	v.all.build(tokens, ids)
	v.tokens, v.ids = tokens, ids
	v.plain = make([]uint32, v.words)
	var odd []int32
	for _, id := range ids {
		if plainText(tokens[id]) {
			v.plain[id/32] |= 1 << (id % 32)
			v.plainChars = max(v.plainChars, utf8.RuneCount(tokens[id]))
		} else {
			odd = append(odd, id)
		}
	}
	v.odd.build(tokens, odd)
	return v
}

// Size is the vocabulary's size; Words a mask's length in uint32 words.
func (v *Vocab) Size() int  { return v.vocab }
func (v *Vocab) Words() int { return v.words }

// plainText reports whether a free string takes b and stays as it was:
// whole UTF-8 characters, none of them a quote, a backslash or a control.
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

// Masker finds the tokens of a Vocab that may come next in a state of
// machine S: a token may when the machine reads all its bytes. It keeps
// the masks it made by state (a JSON text revisits few states: inside a
// key, inside a value's string, after a value, at one depth or another),
// up to a byte budget. One Masker serves one language (a JSON object, one
// compiled schema): its states' keys are only comparable within it. Safe
// for concurrent use.
type Masker[S any, P interface {
	*S
	Machine
}] struct {
	v        *Vocab
	mu       sync.Mutex
	cache    map[string]cached
	cacheMax int // masks kept at most
	keyBuf   []byte
}

// cached is a mask made, whether it allows any token and whether any
// but the end tokens.
type cached struct {
	bits      []uint32
	any, more bool
}

// NewMasker returns a Masker of v for machine S; cacheBytes bounds the
// masks kept (0: 64 MiB).
func NewMasker[S any, P interface {
	*S
	Machine
}](v *Vocab, cacheBytes int) *Masker[S, P] {
	if cacheBytes <= 0 {
		cacheBytes = 64 << 20
	}
	return &Masker[S, P]{v: v, cache: make(map[string]cached), cacheMax: max(16, cacheBytes/(4*max(1, v.words)))}
}

// Mask returns the tokens that may come next in state s, as bits (bit
// t%32 of word t/32 set: token t may come), and whether there is any (a
// vocabulary without the bytes the state needs, or a done state of a
// vocabulary without end tokens, has none). The slice is shared: the
// caller must not change it.
func (m *Masker[S, P]) Mask(s *S) ([]uint32, bool) {
	bits, any, _ := m.Lookup(s)
	return bits, any
}

// Lookup is Mask, and more: whether a token other than an end token may
// come in state s (a done output that may yet go on, a top-level number
// that may take more digits, has such tokens; a closed object has none).
func (m *Masker[S, P]) Lookup(s *S) (bits []uint32, any, more bool) {
	c := m.lookup(s)
	return c.bits, c.any, c.more
}

func (m *Masker[S, P]) lookup(s *S) cached {
	p := P(s)
	m.mu.Lock()
	m.keyBuf = p.Key(m.keyBuf[:0])
	if c, ok := m.cache[string(m.keyBuf)]; ok {
		m.mu.Unlock()
		return c
	}
	key := string(m.keyBuf)
	m.mu.Unlock()

	v := m.v
	mask := make([]uint32, v.words)
	if p.Plain() {
		copy(mask, v.plain)
		walk[S, P](&v.odd, s, mask)
	} else if b, ok := plainLooping(p); ok {
		sp := v.plainSplitBy(b)
		copy(mask, sp.without)
		walk[S, P](&sp.with, s, mask)
	} else if n, ok := plainCount(p); ok {
		copy(mask, v.plainUpTo(n))
		walk[S, P](&v.odd, s, mask)
	} else if b, ok := looping(p); ok {
		sp := v.splitBy(b)
		copy(mask, sp.without)
		walk[S, P](&sp.with, s, mask)
	} else {
		walk[S, P](&v.all, s, mask)
	}
	if _, ok := any(p).(Marker); ok {
		for k, id := range v.marks {
			if st := *s; id >= 0 && any(P(&st)).(Marker).Mark(k) {
				mask[id/32] |= 1 << (id % 32)
			}
		}
	}
	c := cached{bits: mask}
	for _, w := range mask {
		c.more = c.more || w != 0
	}
	if p.Done() {
		for _, id := range v.ends {
			mask[id/32] |= 1 << (id % 32)
		}
	}
	c.any = c.more || p.Done() && len(v.ends) > 0
	m.mu.Lock()
	if len(m.cache) >= m.cacheMax {
		clear(m.cache) // states come back soon enough to be made again
	}
	m.cache[key] = c
	m.mu.Unlock()
	return c
}

// plainCount is m's PlainUpTo, where m is a PlainCounter.
func plainCount(m Machine) (int, bool) {
	if c, ok := m.(PlainCounter); ok {
		return c.PlainUpTo()
	}
	return 0, false
}

// plainLooping is m's PlainLoops, where m is a PlainLooper.
func plainLooping(m Machine) (byte, bool) {
	if l, ok := m.(PlainLooper); ok {
		return l.PlainLoops()
	}
	return 0, false
}

// looping is m's Loops, where m is a Looper.
func looping(m Machine) (byte, bool) {
	if l, ok := m.(Looper); ok {
		return l.Loops()
	}
	return 0, false
}

// walk sets the bits of the tokens of t whose bytes s reads, depth first.
func walk[S any, P interface {
	*S
	Machine
}](t *trie, s *S, mask []uint32) {
	type frame struct {
		node int32
		st   S
	}
	stack := []frame{{0, *s}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, id := range t.toks[t.tfirst[f.node]:t.tfirst[f.node+1]] {
			mask[id/32] |= 1 << (id % 32)
		}
		for k := t.first[f.node]; k < t.first[f.node+1]; k++ {
			// fed in place on the stack: a state whose address went to
			// Feed from a local would escape, one allocation a node
			stack = append(stack, frame{t.kids[k], f.st})
			if !P(&stack[len(stack)-1].st).Feed(t.edge[k]) {
				stack = stack[:len(stack)-1]
			}
		}
	}
}

// Allowed reports whether token id's bit is set in mask.
func Allowed(mask []uint32, id int) bool {
	return id >= 0 && id/32 < len(mask) && mask[id/32]&(1<<(id%32)) != 0
}
