package runtime

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"
)

// blockPool hands out the engine's KV cache blocks. The engine owns the
// memory; the scheduler owns which sequence uses which block, through a
// block table per sequence. Only the engine goroutine touches a blockPool.
//
// With the prefix cache on, a block that holds a whole block of some
// sequence's tokens is remembered by a key chained over everything before
// it (its namespace — the tenant and the adapter —, then every earlier
// block's tokens): a later sequence of the same tenant whose tokens begin
// the same way, under the same adapter, takes those blocks instead of
// computing their keys and values again. The parameters named adapter
// below are that namespace. Blocks are
// reference counted; a remembered block that no sequence uses stays
// cached until the pool needs it, oldest first. The keys only index: a
// match is checked against the block's adapter, its tokens and its
// parent's key, so the cache never serves another prefix's keys and values.
type blockPool struct {
	size int     // tokens per block
	free []int32 // blocks holding nothing, used as a stack
	n    int     // blocks in the pool

	cache bool
	seed  maphash.Seed
	ref   []int32 // sequences using each block
	meta  []blockMeta
	byKey map[uint64]int32
	lru   int32  // the oldest cached block no sequence uses (-1: none)
	nLRU  int    // cached blocks no sequence uses
	hits  uint64 // blocks matched
}

// blockMeta is what the prefix cache knows of one block.
type blockMeta struct {
	cached     bool
	key        uint64 // chained key of the block's contents
	parent     uint64 // key of the block before it (0 for the first)
	adapter    string
	tokens     []int32
	prev, next int32 // the unused-cached list (circular), when ref is 0
}

func newBlockPool(numBlocks, blockSize int, prefixCache bool) *blockPool {
	p := &blockPool{size: blockSize, n: numBlocks, free: make([]int32, numBlocks), cache: prefixCache, lru: -1}
	for i := range p.free {
		// Hand out low ids first: pop from the end.
		p.free[i] = int32(numBlocks - 1 - i)
	}
	p.ref = make([]int32, numBlocks)
	if prefixCache {
		p.seed = maphash.MakeSeed()
		p.meta = make([]blockMeta, numBlocks)
		p.byKey = map[uint64]int32{}
	}
	return p
}

// blocksFor returns how many blocks hold n tokens.
func (p *blockPool) blocksFor(n int) int { return (n + p.size - 1) / p.size }

// available returns the number of blocks a sequence can be given: free
// ones and cached ones no sequence uses.
func (p *blockPool) available() int { return len(p.free) + p.nLRU }

// used returns the number of blocks sequences hold.
func (p *blockPool) used() int { return p.n - p.available() }

// cached returns the number of blocks the prefix cache remembers.
func (p *blockPool) cached() int { return len(p.byKey) }

// grow appends blocks to table until it holds n tokens. It reports false,
// changing nothing, when too few blocks are available.
func (p *blockPool) grow(table []int32, n int) ([]int32, bool) {
	need := p.blocksFor(n) - len(table)
	if need <= 0 {
		return table, true
	}
	if need > p.available() {
		return table, false
	}
	for ; need > 0; need-- {
		var b int32
		if k := len(p.free); k > 0 {
			b = p.free[k-1]
			p.free = p.free[:k-1]
		} else {
			b = p.lru
			p.unlink(b)
			p.forget(b)
		}
		p.ref[b] = 1
		table = append(table, b)
	}
	return table, true
}

// release gives back table's blocks: a block no sequence uses any more
// becomes free, or, when the prefix cache remembers it, the newest of the
// cached blocks the pool may reuse.
func (p *blockPool) release(table []int32) {
	for _, b := range table {
		if p.ref[b]--; p.ref[b] > 0 {
			continue
		}
		if p.cache && p.meta[b].cached {
			p.link(b)
		} else {
			p.free = append(p.free, b)
		}
	}
}

// chainKey is the key of a block of tokens after the block keyed parent,
// under adapter.
func (p *blockPool) chainKey(parent uint64, adapter string, tokens []int32) uint64 {
	var h maphash.Hash
	h.SetSeed(p.seed)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], parent)
	h.Write(b[:])
	h.WriteString(adapter)
	h.WriteByte(0)
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:4], uint32(t))
		h.Write(b[:4])
	}
	if k := h.Sum64(); k != 0 {
		return k
	}
	return 1 // 0 means "no parent"
}

// match finds the cached blocks that hold the longest whole-block prefix
// of tokens[:limit] under adapter, takes a reference on each and returns
// them with their keys.
func (p *blockPool) match(adapter string, tokens []int32, limit int) (blocks []int32, keys []uint64) {
	if !p.cache {
		return nil, nil
	}
	var parent uint64
	for i := 0; (i+1)*p.size <= limit; i++ {
		toks := tokens[i*p.size : (i+1)*p.size]
		k := p.chainKey(parent, adapter, toks)
		b, ok := p.byKey[k]
		if !ok {
			break
		}
		m := &p.meta[b]
		if m.parent != parent || m.adapter != adapter || !slices.Equal(m.tokens, toks) {
			break
		}
		if p.ref[b] == 0 {
			p.unlink(b)
		}
		p.ref[b]++
		p.hits++
		blocks = append(blocks, b)
		keys = append(keys, k)
		parent = k
	}
	return blocks, keys
}

// remember records that block b, which a sequence holds, now holds the
// whole block tokens after the block keyed parent, under adapter, and
// returns its key. When another block holds the same already, b stays
// private (its keys and values are the same; one copy is enough).
func (p *blockPool) remember(b int32, parent uint64, adapter string, tokens []int32) uint64 {
	if !p.cache {
		return 0
	}
	k := p.chainKey(parent, adapter, tokens)
	if _, ok := p.byKey[k]; ok || p.meta[b].cached {
		return k
	}
	p.meta[b] = blockMeta{cached: true, key: k, parent: parent, adapter: adapter, tokens: slices.Clone(tokens)}
	p.byKey[k] = b
	return k
}

// forgetAdapter drops every block cached under adapter sha, in every
// tenant's namespace (a deleted adapter's: the keys and values of its
// tenants' prompts): those no sequence uses become free.
func (p *blockPool) forgetAdapter(sha string) {
	if !p.cache || sha == "" {
		return
	}
	suffix := "\x00" + sha // a namespace is the tenant, "\x00", then the sha
	for i := range p.meta {
		b := int32(i)
		if m := &p.meta[b]; !m.cached || !strings.HasSuffix(m.adapter, suffix) {
			continue
		}
		if p.ref[b] > 0 {
			p.forget(b) // freed by release, uncached
			continue
		}
		p.unlink(b)
		p.forget(b)
		p.free = append(p.free, b)
	}
}

// forget drops b from the prefix cache.
func (p *blockPool) forget(b int32) {
	m := &p.meta[b]
	if m.cached && p.byKey[m.key] == b {
		delete(p.byKey, m.key)
	}
	*m = blockMeta{}
}

// link puts b at the newest end of the unused-cached list.
func (p *blockPool) link(b int32) {
	m := &p.meta[b]
	if p.lru < 0 {
		m.prev, m.next = b, b
		p.lru = b
	} else {
		head := &p.meta[p.lru]
		tail := head.prev
		m.prev, m.next = tail, p.lru
		p.meta[tail].next = b
		head.prev = b
	}
	p.nLRU++
}

// unlink takes b out of the unused-cached list.
func (p *blockPool) unlink(b int32) {
	m := &p.meta[b]
	if m.next == b {
		p.lru = -1
	} else {
		p.meta[m.prev].next = m.next
		p.meta[m.next].prev = m.prev
		if p.lru == b {
			p.lru = m.next
		}
	}
	m.prev, m.next = 0, 0
	p.nLRU--
}
