package grammar

// ClearCache forgets every mask made (benchmarks of the trie walk).
func (m *Masker[S, P]) ClearCache() {
	m.mu.Lock()
	clear(m.cache)
	m.mu.Unlock()
}

// MaskFullWalk makes s's mask by walking every token, the plain-text
// ones inside a string too (the baseline of the precomputed plain mask).
func (m *Masker[S, P]) MaskFullWalk(s *S) []uint32 {
	mask := make([]uint32, m.v.words)
	walk[S, P](&m.v.all, s, mask)
	return mask
}
