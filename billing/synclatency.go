package billing

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// SyncLatency times n overwrites in place of one 4 KiB block of a
// preallocated file in dir, each made durable the way the usage journal
// makes an append durable (fdatasync where there is one). It returns the
// times in ascending order: the floor a file system puts under every
// acknowledged usage event, for benchmarks to set beside their figures.
func SyncLatency(dir string, n int) ([]time.Duration, error) {
	f, err := os.CreateTemp(dir, "nozzle-sync-*")
	if err != nil {
		return nil, fmt.Errorf("sync latency: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, 4096)
	if _, err := f.Write(block); err != nil {
		return nil, fmt.Errorf("sync latency: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("sync latency: %w", err)
	}
	out := make([]time.Duration, 0, n)
	for i := range n {
		block[0] = byte(i)
		t0 := time.Now()
		if _, err := f.WriteAt(block, 0); err != nil {
			return nil, fmt.Errorf("sync latency: %w", err)
		}
		if err := fdatasync(f); err != nil {
			return nil, fmt.Errorf("sync latency: %w", err)
		}
		out = append(out, time.Since(t0))
	}
	slices.Sort(out)
	return out, nil
}
