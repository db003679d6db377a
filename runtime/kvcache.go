package runtime

// blockPool hands out the engine's KV cache blocks. The engine owns the
// memory; the scheduler owns which sequence uses which block, through a
// block table per sequence. Only the engine goroutine touches a blockPool.
type blockPool struct {
	size int     // tokens per block
	free []int32 // free block ids, used as a stack
	n    int     // blocks in the pool
}

func newBlockPool(numBlocks, blockSize int) *blockPool {
	p := &blockPool{size: blockSize, n: numBlocks, free: make([]int32, numBlocks)}
	for i := range p.free {
		// Hand out low ids first: pop from the end.
		p.free[i] = int32(numBlocks - 1 - i)
	}
	return p
}

// blocksFor returns how many blocks hold n tokens.
func (p *blockPool) blocksFor(n int) int { return (n + p.size - 1) / p.size }

// available returns the number of free blocks.
func (p *blockPool) available() int { return len(p.free) }

// used returns the number of blocks in use.
func (p *blockPool) used() int { return p.n - len(p.free) }

// grow appends blocks to table until it holds n tokens. It reports false,
// changing nothing, when too few blocks are free.
func (p *blockPool) grow(table []int32, n int) ([]int32, bool) {
	need := p.blocksFor(n) - len(table)
	if need <= 0 {
		return table, true
	}
	if need > len(p.free) {
		return table, false
	}
	k := len(p.free) - need
	for i := len(p.free) - 1; i >= k; i-- {
		table = append(table, p.free[i])
	}
	p.free = p.free[:k]
	return table, true
}

// release returns every block of table to the pool.
func (p *blockPool) release(table []int32) {
	p.free = append(p.free, table...)
}
