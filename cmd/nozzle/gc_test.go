package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live, floor uint64
		base, want  int
	}{
		{4 << 20, 64 << 20, 400, 1500},  // small heap: collect at the floor
		{16 << 20, 64 << 20, 400, 400},  // 5× live reaches the floor already
		{100 << 20, 64 << 20, 400, 400}, // above the floor: the base
		{0, 64 << 20, 400, 400},         // nothing measured yet
		{1, 64 << 20, 400, gcMaxPercent},
		{4 << 20, 256 << 20, 400, 6300},
	} {
		if got := gcPercentFor(c.live, c.floor, c.base); got != c.want {
			t.Errorf("gcPercentFor(%d, %d, %d) = %d, want %d", c.live, c.floor, c.base, got, c.want)
		}
	}
}

// TestGCTuner checks that the tuner runs after every collection, re-arming
// itself, and sets GOGC from the live heap.
func TestGCTuner(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	const floor = 64 << 20
	tu := newGCTuner(floor)
	tu.arm()
	defer tu.stop.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for tu.runs.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("tuner ran %d times after repeated collections, want 3", tu.runs.Load())
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	got := debug.SetGCPercent(100)
	if want := gcPercentFor(ms.HeapAlloc, floor, gcBasePercent); got < gcBasePercent || (ms.HeapAlloc < floor/8 && got <= gcBasePercent) {
		t.Fatalf("GOGC = %d with a %d-byte heap, want about %d", got, ms.HeapAlloc, want)
	}
}
