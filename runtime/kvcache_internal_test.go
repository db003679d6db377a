package runtime

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestBlockPool_Random drives the pool through random admissions, growth,
// matches and releases, checking after every operation that each block is
// exactly one of free, held, or cached and unused; that the unused-cached
// list is consistent; and that a match only ever returns blocks that
// remember exactly the tokens asked for.
func TestBlockPool_Random(t *testing.T) {
	const n, size = 24, 4
	p := newBlockPool(n, size, true)
	rng := rand.New(rand.NewPCG(1, 2))
	type seq struct {
		tokens []int32
		blocks []int32
		keys   []uint64
	}
	var live []*seq
	check := func(what string) {
		t.Helper()
		held := map[int32]int32{}
		for _, q := range live {
			for _, b := range q.blocks {
				held[b]++
			}
		}
		free := map[int32]bool{}
		for _, b := range p.free {
			if free[b] {
				t.Fatalf("%s: block %d free twice", what, b)
			}
			free[b] = true
		}
		unused := map[int32]bool{}
		if p.lru >= 0 {
			for b := p.lru; ; {
				if unused[b] {
					t.Fatalf("%s: list loops at %d", what, b)
				}
				unused[b] = true
				if p.meta[p.meta[b].next].prev != b {
					t.Fatalf("%s: broken links at %d", what, b)
				}
				if b = p.meta[b].next; b == p.lru {
					break
				}
			}
		}
		if len(unused) != p.nLRU {
			t.Fatalf("%s: list holds %d, count says %d", what, len(unused), p.nLRU)
		}
		for b := int32(0); b < n; b++ {
			states := 0
			if free[b] {
				states++
			}
			if unused[b] {
				states++
				if !p.meta[b].cached || p.ref[b] != 0 {
					t.Fatalf("%s: unused block %d cached=%v ref=%d", what, b, p.meta[b].cached, p.ref[b])
				}
			}
			if held[b] > 0 {
				states++
			}
			if states != 1 || p.ref[b] != held[b] {
				t.Fatalf("%s: block %d: free %v, unused %v, held %d, ref %d", what, b, free[b], unused[b], held[b], p.ref[b])
			}
		}
		for k, b := range p.byKey {
			if !p.meta[b].cached || p.meta[b].key != k {
				t.Fatalf("%s: key %x points at block %d whose meta is %+v", what, k, b, p.meta[b])
			}
		}
	}
	vocab := []int32{1, 2, 3}
	for op := range 5000 {
		switch r := rng.IntN(10); {
		case r < 4: // admit a sequence: match, then grow to its length
			q := &seq{}
			for range 1 + rng.IntN(20) {
				q.tokens = append(q.tokens, vocab[rng.IntN(len(vocab))])
			}
			q.blocks, q.keys = p.match("", q.tokens, len(q.tokens)-1)
			for i, b := range q.blocks {
				if !slices.Equal(p.meta[b].tokens, q.tokens[i*size:(i+1)*size]) {
					t.Fatalf("op %d: block %d holds %v, asked for %v", op, b, p.meta[b].tokens, q.tokens[i*size:(i+1)*size])
				}
			}
			var ok bool
			if q.blocks, ok = p.grow(q.blocks, len(q.tokens)); !ok {
				p.release(q.blocks)
				break
			}
			// as if computed: remember its whole blocks
			for i := len(q.keys); (i+1)*size <= len(q.tokens); i++ {
				var parent uint64
				if i > 0 {
					parent = q.keys[i-1]
				}
				q.keys = append(q.keys, p.remember(q.blocks[i], parent, "", q.tokens[i*size:(i+1)*size]))
			}
			live = append(live, q)
		case r < 7 && len(live) > 0: // finish one
			i := rng.IntN(len(live))
			p.release(live[i].blocks)
			live = slices.Delete(live, i, i+1)
		case len(live) > 0: // one grows by a token
			q := live[rng.IntN(len(live))]
			if b, ok := p.grow(q.blocks, len(q.tokens)+1); ok {
				q.blocks = b
				q.tokens = append(q.tokens, vocab[rng.IntN(len(vocab))])
			}
		}
		check("after an operation")
	}
	if p.hits == 0 {
		t.Error("no block was ever matched")
	}
}
