package billing_test

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

func TestRecordCapacity(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	start := date("2026-03-04T10:30:00Z")
	iv := nozzle.CapacityInterval{RuntimeID: "rt", Seq: 1, Start: start, End: start.Add(time.Hour), ActiveSeconds: 1800, IdleSeconds: 1800, RatePerHour: 3}
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{iv}); err != nil {
		t.Fatal(err)
	}
	// Stored again: skipped, not doubled.
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{iv}); err != nil {
		t.Fatal(err)
	}
	if seq, err := l.LastCapacitySeq(ctx, "rt"); err != nil || seq != 1 {
		t.Fatalf("LastCapacitySeq = %d, %v", seq, err)
	}
	if seq, _ := l.LastCapacitySeq(ctx, "r"); seq != 0 {
		t.Fatalf("LastCapacitySeq of a prefix runtime = %d", seq)
	}
	// Half of the interval falls in each hour.
	for _, h := range []string{"2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"} {
		rep := mustReport(t, l, nozzle.ReportQuery{Start: date(h), End: date(h).Add(time.Hour)})
		if g := rep.GPU; math.Abs(g.UptimeSeconds-1800) > 1e-9 || math.Abs(g.CostUSD-1.5) > 1e-12 || math.Abs(g.Utilization-0.5) > 1e-12 {
			t.Fatalf("hour %s: GPU = %+v", h, g)
		}
	}
	for name, bad := range map[string]nozzle.CapacityInterval{
		"EndBeforeStart": {RuntimeID: "rt", Seq: 2, Start: start, End: start, RatePerHour: 1},
		"NoRuntime":      {Seq: 2, Start: start, End: start.Add(time.Minute), IdleSeconds: 60},
		"DoesNotAddUp":   {RuntimeID: "rt", Seq: 2, Start: start, End: start.Add(time.Minute), ActiveSeconds: 10, IdleSeconds: 10},
		"NegativeRate":   {RuntimeID: "rt", Seq: 2, Start: start, End: start.Add(time.Minute), IdleSeconds: 60, RatePerHour: -1},
	} {
		t.Run(name, func(t *testing.T) {
			wantCode(t, l.RecordCapacity(ctx, []nozzle.CapacityInterval{bad}), nozzle.EINVALID)
		})
	}
	mustCheck(t, l)
}

// source is a runtime's capacity accounting at the CapacitySource seam
// (the runtime's own implementation is tested in package runtime).
type source struct {
	mu  sync.Mutex
	ivs []nozzle.CapacityInterval
}

func (s *source) add(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := date("2026-03-04T10:00:00Z").Add(time.Duration(seq) * time.Minute)
	s.ivs = append(s.ivs, nozzle.CapacityInterval{Seq: seq, Start: st, End: st.Add(time.Minute), ActiveSeconds: 6, IdleSeconds: 54, RatePerHour: 2})
}

func (s *source) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []nozzle.CapacityInterval
	for _, iv := range s.ivs {
		if iv.Seq > after {
			out = append(out, iv)
		}
	}
	return out, nil
}

// addressed is a runtime known by its address until asked for its id.
type addressed struct {
	*source
	id string
}

func (a addressed) CapacityRuntimeID(context.Context) (string, error) { return a.id, nil }

// TestCollectCapacity_ByReportedID: a source that names its runtime has its
// intervals filed under that name, whatever label it is collected under.
func TestCollectCapacity_ByReportedID(t *testing.T) {
	l := mustOpen(t, billing.Options{})
	src := &source{}
	src.add(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one pull: the final one
	srcs := map[string]nozzle.CapacitySource{"http://10.0.0.7:8081": addressed{src, "gpu-1"}}
	if err := billing.CollectCapacity(ctx, l, srcs, time.Hour, nil, nil); err != nil {
		t.Fatal(err)
	}
	if seq, _ := l.LastCapacitySeq(context.Background(), "gpu-1"); seq != 1 {
		t.Fatalf("last seq of gpu-1 = %d, want 1", seq)
	}
}

func TestCollectCapacity(t *testing.T) {
	l := mustOpen(t, billing.Options{})
	src := &source{}
	for seq := range uint64(3) {
		src.add(seq + 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- billing.CollectCapacity(ctx, l, map[string]nozzle.CapacitySource{"rt": src}, 10*time.Millisecond, nil, nil)
	}()
	deadline := time.Now().Add(20 * time.Second) // only a bound on a broken collector
	for {
		if seq, _ := l.LastCapacitySeq(context.Background(), "rt"); seq == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("intervals were not collected")
		}
		time.Sleep(time.Millisecond)
	}
	// Intervals closed just before shutdown are collected by the final pull.
	src.add(4)
	src.add(5)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seq, _ := l.LastCapacitySeq(context.Background(), "rt"); seq != 5 {
		t.Fatalf("last seq after shutdown = %d, want 5", seq)
	}
	if res := mustCheck(t, l); res.Intervals != 5 {
		t.Fatalf("Check = %+v", res)
	}
}

// hung is a runtime that stopped answering: it holds every call until the
// call's context ends, and counts the calls that ended.
type hung struct{ ended atomic.Int64 }

func (h *hung) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	<-ctx.Done()
	h.ended.Add(1)
	return nil, ctx.Err()
}

// filing is a capacity ledger that notes, as each runtime's intervals are
// filed, whether the hung runtime's first call had ended by then.
type filing struct {
	*billing.Ledger
	hung     *hung
	mu       sync.Mutex
	hungDone map[string]bool // runtime id: the hung call had ended when its intervals were filed
}

func (f *filing) RecordCapacity(ctx context.Context, ivs []nozzle.CapacityInterval) error {
	ended := f.hung.ended.Load() > 0
	f.mu.Lock()
	for _, iv := range ivs {
		if _, ok := f.hungDone[iv.RuntimeID]; !ok {
			f.hungDone[iv.RuntimeID] = ended
		}
	}
	f.mu.Unlock()
	return f.Ledger.RecordCapacity(ctx, ivs)
}

// TestCollectCapacity_HungRuntime: a runtime that hangs holds up no other
// runtime's capacity, and its calls end at the time limit. "Held up" is
// told by order, not by the wall clock: the other runtime's intervals are
// filed while the hung runtime's first call is still waiting (it waits out
// the collector's limit, a second), where a collector that pulled the
// runtimes one after the other would file them only after that call ended.
func TestCollectCapacity_HungRuntime(t *testing.T) {
	l := mustOpen(t, billing.Options{})
	src := &source{}
	src.add(1)
	h := &hung{}
	fl := &filing{Ledger: l, hung: h, hungDone: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- billing.CollectCapacity(ctx, fl, map[string]nozzle.CapacitySource{"a-hung": h, "b": src}, 10*time.Millisecond, slog.New(slog.DiscardHandler), nil)
	}()
	deadline := time.Now().Add(20 * time.Second) // only a bound on a broken collector
	for {
		if seq, _ := l.LastCapacitySeq(context.Background(), "b"); seq == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("runtime b's capacity was never collected")
		}
		time.Sleep(time.Millisecond)
	}
	fl.mu.Lock()
	heldUp := fl.hungDone["b"]
	fl.mu.Unlock()
	if heldUp {
		t.Fatal("a hung runtime held up another's capacity: b's intervals were filed only after the hung call ended")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("collection did not stop: the hung runtime's calls have no time limit")
	}
}

// TestCollectCapacity_SameRuntimeID: two runtimes that report the same id
// (both left at the default, say) cannot both be filed under it: the first
// is, the other is logged, once.
func TestCollectCapacity_SameRuntimeID(t *testing.T) {
	l := mustOpen(t, billing.Options{})
	a, b := &source{}, &source{}
	a.add(1)
	b.add(1)
	b.add(2)
	var logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- billing.CollectCapacity(ctx, l, map[string]nozzle.CapacitySource{"http://a": addressed{a, "local"}, "http://b": addressed{b, "local"}},
			10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seq, _ := l.LastCapacitySeq(context.Background(), "local"); seq != 1 {
		t.Fatalf("last seq of local = %d, want 1 (the first runtime's only)", seq)
	}
	if n := strings.Count(logs.String(), "two runtimes report the same runtime id"); n != 1 {
		t.Fatalf("logged %d times: %s", n, logs.String())
	}
}
