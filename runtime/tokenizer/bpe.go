package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// bpe is the BPE model, with Hugging Face's semantics: characters (or
// byte-fallback bytes, or the unknown token) first, then repeatedly the
// adjacent pair of lowest merge rank, leftmost first.
type bpe struct {
	vocab        map[string]int
	merges       map[uint64]uint64 // left<<32|right -> rank<<32|merged id
	unk          int               // -1 when none
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	prefix       string // continuing_subword_prefix
	suffix       string // end_of_word_suffix

	// spaceSplit: words may be cut before each "▁" that follows another
	// character, because "▁" is a token and no token has "▁" after another
	// character, so no merge can cross such a cut. SentencePiece-style vocabularies (no
	// pre-tokenizer: a word is a whole segment) then run BPE and the cache
	// per space-separated piece instead of per segment, with the same
	// result.
	spaceSplit bool
	// innerSpace are the few tokens that do have a "▁" after another
	// character (Gemma 3's ">▁</"): no cut is made inside an occurrence
	// of one of them in the word, so the argument above still holds.
	innerSpace []innerSpaceToken

	byteID [256]int32 // id of the byte-level character of each byte, -1 if none
	fbID   [256]int32 // id of <0xHH>, -1 if none

	mu         sync.RWMutex
	cache      map[string][]int32
	cacheBytes int
}

// The word cache is cleared when it reaches either limit.
const (
	cacheMaxEntries = 1 << 16
	cacheMaxBytes   = 16 << 20
	cacheMaxWordLen = 2048
)

func parseModel(b json.RawMessage) (*bpe, error) {
	var m struct {
		Type         string          `json:"type"`
		Vocab        map[string]int  `json:"vocab"`
		Merges       json.RawMessage `json:"merges"`
		UnkToken     *string         `json:"unk_token"`
		FuseUnk      bool            `json:"fuse_unk"`
		ByteFallback bool            `json:"byte_fallback"`
		IgnoreMerges bool            `json:"ignore_merges"`
		Prefix       *string         `json:"continuing_subword_prefix"`
		Suffix       *string         `json:"end_of_word_suffix"`
		Dropout      *float64        `json:"dropout"`
	}
	if len(b) == 0 || string(b) == "null" {
		return nil, fmt.Errorf("missing")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("bad model object: %w", err)
	}
	if m.Type != "" && m.Type != "BPE" {
		return nil, fmt.Errorf("unsupported model type %q (only BPE)", m.Type)
	}
	if m.Vocab == nil {
		return nil, fmt.Errorf("field \"vocab\": missing")
	}
	p := &bpe{vocab: m.Vocab, unk: -1, fuseUnk: m.FuseUnk, byteFallback: m.ByteFallback, ignoreMerges: m.IgnoreMerges,
		cache: map[string][]int32{}}
	for s, id := range m.Vocab {
		if id < 0 || id > 1<<24 {
			return nil, fmt.Errorf("field \"vocab\": token %q has id %d out of range", truncate(s), id)
		}
	}
	if m.Prefix != nil {
		p.prefix = *m.Prefix
	}
	if m.Suffix != nil {
		p.suffix = *m.Suffix
	}
	if m.UnkToken != nil {
		id, ok := m.Vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("field \"unk_token\": %q is not in the vocabulary", truncate(*m.UnkToken))
		}
		p.unk = id
	}
	pairs, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	p.merges = make(map[uint64]uint64, len(pairs))
	for rank, pr := range pairs {
		a, ok1 := m.Vocab[pr[0]]
		b, ok2 := m.Vocab[pr[1]]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("field \"merges\": merge %d (%q %q) uses a token not in the vocabulary", rank, truncate(pr[0]), truncate(pr[1]))
		}
		merged, ok := m.Vocab[pr[0]+strings.TrimPrefix(pr[1], p.prefix)]
		if !ok {
			return nil, fmt.Errorf("field \"merges\": merge %d (%q %q) makes a token not in the vocabulary", rank, truncate(pr[0]), truncate(pr[1]))
		}
		p.merges[uint64(a)<<32|uint64(b)] = uint64(rank)<<32 | uint64(merged)
	}
	_, hasSpace := m.Vocab[metaspace]
	p.spaceSplit = useSpaceSplit && hasSpace && p.prefix == "" && p.suffix == "" && !p.ignoreMerges
	unkText := ""
	if m.UnkToken != nil {
		unkText = *m.UnkToken
	}
	for s := range m.Vocab {
		if !p.spaceSplit {
			break
		}
		if !strings.Contains(strings.TrimLeft(s, metaspace), metaspace) {
			continue
		}
		// Symbols are text, byte-fallback tokens (<0xHH>) or the unknown
		// token, and a merge's token is its pair's texts joined: a token
		// holding neither "<0x" nor the unknown token's text is made of
		// text symbols only, so it can span a cut only where it occurs
		// in the word.
		if len(p.innerSpace) == maxInnerSpace || strings.Contains(s, "<0x") || unkText != "" && strings.Contains(s, unkText) {
			p.spaceSplit = false
			p.innerSpace = nil
			break
		}
		t := innerSpaceToken{s: s}
		for j := 1; j < len(s); j++ {
			if strings.HasPrefix(s[j:], metaspace) {
				t.offsets = append(t.offsets, j)
			}
		}
		p.innerSpace = append(p.innerSpace, t)
	}
	sort.Slice(p.innerSpace, func(i, j int) bool { return p.innerSpace[i].s < p.innerSpace[j].s })
	for i := range 256 {
		p.byteID[i], p.fbID[i] = -1, -1
		if id, ok := m.Vocab[string(byteToRune[i])]; ok {
			p.byteID[i] = int32(id)
		}
		if id, ok := m.Vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			p.fbID[i] = int32(id)
		}
	}
	return p, nil
}

// parseMerges reads merges as "a b" strings or as ["a", "b"] pairs.
func parseMerges(b json.RawMessage) ([][2]string, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(b, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, c, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("field \"merges\": entry %d (%q) is not two tokens separated by a space", i, truncate(s))
			}
			out[i] = [2]string{a, c}
		}
		return out, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(b, &pairs); err != nil {
		return nil, fmt.Errorf("field \"merges\": want a list of \"a b\" strings or of [a, b] pairs")
	}
	return pairs, nil
}

// bpeScratch is per-call working memory.
type bpeScratch struct {
	key  []byte
	syms []symbol
	heap []mergeItem
}

type symbol struct {
	id         int32
	prev, next int32
	gone       bool
}

type mergeItem struct {
	rank        uint32
	pos         int32
	newID       int32
	left, right int32 // the pair when pushed
}

const metaspace = "\u2581"

// innerSpaceToken is a vocabulary token with a "▁" after another
// character, and the byte offsets of its "▁"s after the first byte.
type innerSpaceToken struct {
	s       string
	offsets []int
}

// maxInnerSpace is the most such tokens a vocabulary may have and still be
// cut before "▁" (each is checked at every cut).
const maxInnerSpace = 16

// useSpaceSplit enables spaceSplit where the vocabulary allows it (tests
// and benchmarks turn it off to compare).
var useSpaceSplit = true

// encodeWord appends the ids of one pre-tokenized word. byteLevel words are
// mapped through the byte-to-unicode table first.
func (p *bpe) encodeWord(dst []int, s string, byteLevel bool, sc *bpeScratch) []int {
	if byteLevel || !p.spaceSplit || len(s) <= 32 {
		return p.encodePiece(dst, s, byteLevel, sc)
	}
	start := 0
	for i := 1; i < len(s); {
		k := strings.Index(s[i:], metaspace)
		if k < 0 {
			break
		}
		i += k
		if !strings.HasSuffix(s[start:i], metaspace) && !p.insideInnerSpace(s, i) {
			dst = p.encodePiece(dst, s[start:i], false, sc)
			start = i
		}
		i += len(metaspace)
	}
	return p.encodePiece(dst, s[start:], false, sc)
}

// insideInnerSpace reports whether the "▁" at s[i:] lies inside an
// occurrence of a token of innerSpace, where encodeWord must not cut.
func (p *bpe) insideInnerSpace(s string, i int) bool {
	for _, t := range p.innerSpace {
		for _, j := range t.offsets {
			if j <= i && strings.HasPrefix(s[i-j:], t.s) {
				return true
			}
		}
	}
	return false
}

// encodePiece runs BPE on one word (or one space-separated piece of it).
func (p *bpe) encodePiece(dst []int, s string, byteLevel bool, sc *bpeScratch) []int {
	key := s
	if byteLevel {
		sc.key = appendByteLevel(sc.key[:0], s)
		key = unsafeString(sc.key)
	}
	if p.ignoreMerges {
		if id, ok := p.vocab[key]; ok {
			return append(dst, id)
		}
	}
	cacheable := len(key) <= cacheMaxWordLen
	if cacheable {
		p.mu.RLock()
		ids, ok := p.cache[key]
		p.mu.RUnlock()
		if ok {
			for _, id := range ids {
				dst = append(dst, int(id))
			}
			return dst
		}
	}
	sc.syms = sc.syms[:0]
	if byteLevel && p.prefix == "" && p.suffix == "" && p.byteIDsComplete(s) {
		for i := 0; i < len(s); i++ {
			sc.syms = append(sc.syms, symbol{id: p.byteID[s[i]]})
		}
	} else {
		p.initSymbols(key, sc)
	}
	p.mergeAll(sc)
	start := len(dst)
	for _, sym := range sc.syms {
		if !sym.gone {
			dst = append(dst, int(sym.id))
		}
	}
	if cacheable {
		ids := make([]int32, len(dst)-start)
		for i, id := range dst[start:] {
			ids[i] = int32(id)
		}
		k := strings.Clone(key)
		p.mu.Lock()
		if len(p.cache) >= cacheMaxEntries || p.cacheBytes+len(k)+4*len(ids) > cacheMaxBytes {
			clear(p.cache)
			p.cacheBytes = 0
		}
		if _, dup := p.cache[k]; !dup {
			p.cacheBytes += len(k) + 4*len(ids)
		}
		p.cache[k] = ids
		p.mu.Unlock()
	}
	return dst
}

func (p *bpe) byteIDsComplete(s string) bool {
	for i := 0; i < len(s); i++ {
		if p.byteID[s[i]] < 0 {
			return false
		}
	}
	return true
}

// initSymbols splits w into characters the way Hugging Face's
// BPE::merge_word does: vocabulary characters, else byte-fallback tokens,
// else the unknown token (fused when fuse_unk).
func (p *bpe) initSymbols(w string, sc *bpeScratch) {
	pendingUnk := false
	var sb strings.Builder
	for i := 0; i < len(w); {
		_, n := utf8.DecodeRuneInString(w[i:])
		end := i + n
		c := w[i:end]
		if (i > 0 && p.prefix != "") || (end == len(w) && p.suffix != "") {
			sb.Reset()
			if i > 0 {
				sb.WriteString(p.prefix)
			}
			sb.WriteString(c)
			if end == len(w) {
				sb.WriteString(p.suffix)
			}
			c = sb.String()
		}
		if id, ok := p.vocab[c]; ok {
			if pendingUnk {
				sc.syms = append(sc.syms, symbol{id: int32(p.unk)})
				pendingUnk = false
			}
			sc.syms = append(sc.syms, symbol{id: int32(id)})
			i = end
			continue
		}
		if p.byteFallback {
			all := true
			for k := 0; k < len(c); k++ {
				if p.fbID[c[k]] < 0 {
					all = false
					break
				}
			}
			if all {
				for k := 0; k < len(c); k++ {
					sc.syms = append(sc.syms, symbol{id: p.fbID[c[k]]})
				}
				i = end
				continue
			}
		}
		if p.unk >= 0 {
			if pendingUnk && !p.fuseUnk {
				sc.syms = append(sc.syms, symbol{id: int32(p.unk)})
			}
			pendingUnk = true
		}
		i = end
	}
	if pendingUnk {
		sc.syms = append(sc.syms, symbol{id: int32(p.unk)})
	}
}

func (p *bpe) lookup(a, b int32) (rank uint32, newID int32, ok bool) {
	v, ok := p.merges[uint64(uint32(a))<<32|uint64(uint32(b))]
	return uint32(v >> 32), int32(uint32(v)), ok
}

// mergeAll applies merges to sc.syms with a priority queue ordered by
// (rank, position), exactly like Hugging Face's Word::merge_all.
func (p *bpe) mergeAll(sc *bpeScratch) {
	syms := sc.syms
	n := len(syms)
	if n < 2 {
		return
	}
	for i := range syms {
		syms[i].prev, syms[i].next = int32(i-1), int32(i+1)
	}
	syms[n-1].next = -1
	h := sc.heap[:0]
	for i := 0; i+1 < n; i++ {
		if rank, id, ok := p.lookup(syms[i].id, syms[i+1].id); ok {
			h = append(h, mergeItem{rank, int32(i), id, syms[i].id, syms[i+1].id})
		}
	}
	heapInit(h)
	for len(h) > 0 {
		var top mergeItem
		top, h = heapPop(h)
		cur := &syms[top.pos]
		if cur.gone || cur.next < 0 {
			continue
		}
		right := syms[cur.next]
		if cur.id != top.left || right.id != top.right {
			// The pair changed since it was queued: Hugging Face still
			// merges when the new pair makes the same token.
			if _, id, ok := p.lookup(cur.id, right.id); !ok || id != top.newID {
				continue
			}
		}
		cur.id = top.newID
		syms[cur.next].gone = true
		cur.next = right.next
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if rank, id, ok := p.lookup(syms[cur.prev].id, cur.id); ok {
				h = heapPush(h, mergeItem{rank, cur.prev, id, syms[cur.prev].id, cur.id})
			}
		}
		if cur.next >= 0 {
			if rank, id, ok := p.lookup(cur.id, syms[cur.next].id); ok {
				h = heapPush(h, mergeItem{rank, top.pos, id, cur.id, syms[cur.next].id})
			}
		}
	}
	sc.heap = h
}

func less(a, b mergeItem) bool {
	return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos
}

func heapInit(h []mergeItem) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
}

func siftDown(h []mergeItem, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && less(h[r], h[l]) {
			m = r
		}
		if !less(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func heapPush(h []mergeItem, x mergeItem) []mergeItem {
	h = append(h, x)
	i := len(h) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !less(h[i], h[parent]) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
	return h
}

func heapPop(h []mergeItem) (mergeItem, []mergeItem) {
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	if last > 0 {
		siftDown(h, 0)
	}
	return top, h
}
