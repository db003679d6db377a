package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// The garbage collector's settings for the servers, unless GOGC says
// otherwise. A server's heap is small — model weights and adapters are
// memory-mapped, not on the heap — while a busy gateway makes garbage at
// tens of MB/s (parsed requests, the upstream exchange, usage events). With
// Go's default (collect when the heap doubles) a 4 MB live heap is
// collected several times a second, and each cycle's mark assists and
// sweeping land on the requests in flight: at 5,000 requests/s on 2 cores
// they were the gateway's p99. So the heap may grow to gcBasePercent over
// the live heap, and to at least the heap floor (Config.HeapFloorMB),
// which the collector's goal is raised to after each cycle while the live
// heap is small.
const (
	gcBasePercent = 400
	gcMaxPercent  = 100000
)

var gcTuneOnce sync.Once

// tuneGC applies the servers' GC settings once per process: floor is the
// heap floor in bytes (0: none).
func tuneGC(floor uint64) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	gcTuneOnce.Do(func() {
		debug.SetGCPercent(gcBasePercent)
		if floor > 0 {
			newGCTuner(floor).arm()
		}
	})
}

// gcPercentFor is the GOGC that puts the next collection at the larger of
// base percent over live and floor.
func gcPercentFor(live, floor uint64, base int) int {
	if live == 0 || live >= floor {
		return base
	}
	p := int((floor - live) * 100 / live)
	return min(max(p, base), gcMaxPercent)
}

// gcTuner re-sets GOGC after every collection: a finalizer on an object
// made unreachable on purpose runs once per cycle and re-arms itself.
type gcTuner struct {
	floor  uint64
	sample []metrics.Sample
	last   int
	runs   atomic.Int64
	stop   atomic.Bool // no re-arming after the next run (tests)
}

func newGCTuner(floor uint64) *gcTuner {
	return &gcTuner{floor: floor, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
}

type gcSentinel struct{ _ [16]byte }

func (t *gcTuner) arm() {
	runtime.SetFinalizer(&gcSentinel{}, func(*gcSentinel) {
		if t.stop.Load() {
			return
		}
		t.tune()
		t.runs.Add(1)
		t.arm()
	})
}

func (t *gcTuner) tune() {
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	if p := gcPercentFor(t.sample[0].Value.Uint64(), t.floor, gcBasePercent); p != t.last {
		debug.SetGCPercent(p)
		t.last = p
	}
}
