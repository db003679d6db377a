package grammar

// ClearCache forgets every mask made (benchmarks of the trie walk).
func (m *Masker[S, P]) ClearCache() {
	m.mu.Lock()
	clear(m.cache)
	m.mu.Unlock()
}
