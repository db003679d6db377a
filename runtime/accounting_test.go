package runtime_test

import (
	"context"
	"math"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestCapacity_Intervals runs a runtime across a UTC hour with idle gaps
// and steps long enough to straddle interval boundaries, and checks the
// intervals: consecutive, split at every interval boundary and at the
// hour, active + idle = end − start, and all of it adding up to the
// runtime's active time and uptime.
func TestCapacity_Intervals(t *testing.T) {
	start := time.Date(2025, 3, 1, 10, 58, 50, 0, time.UTC)
	rt := startFakeAt(t, runtime.Options{IntervalLength: 7 * time.Minute, RuntimeID: "rt-test", RatePerHour: 2.5}, 64, start)
	rt.eng.perStep = 3 * time.Second // steps straddle boundaries
	rt.eng.eosBias = -100
	ctx := context.Background()
	var device float64
	for i := range 6 {
		o := run(ctx, rt, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 10 + i})
		if o.err != nil {
			t.Fatal(o.err)
		}
		device += o.res.DeviceSeconds
		if o.res.RatePerHour != 2.5 || o.res.RuntimeID != "rt-test" {
			t.Errorf("result %+v", o.res)
		}
		rt.clock.Advance(time.Duration(i*97) * time.Second) // idle
	}
	early, err := rt.CapacityIntervals(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeRT(t, rt)
	ivs, _ := rt.CapacityIntervals(ctx, 0)
	if len(ivs) < len(early) || len(early) == 0 {
		t.Fatalf("%d intervals before close, %d after", len(early), len(ivs))
	}
	var active, total float64
	hourSplit := false
	for i, iv := range ivs {
		if iv.Seq != uint64(start.UnixMicro())+uint64(i) || iv.RuntimeID != "rt-test" || iv.RatePerHour != 2.5 {
			t.Errorf("interval %d: %+v", i, iv)
		}
		if i > 0 && !iv.Start.Equal(ivs[i-1].End) {
			t.Errorf("interval %d starts at %v, previous ended at %v", i, iv.Start, ivs[i-1].End)
		}
		d := iv.End.Sub(iv.Start)
		if d <= 0 || d > 7*time.Minute {
			t.Errorf("interval %d lasts %v", i, d)
		}
		if iv.End.Truncate(time.Hour).After(iv.Start) && !iv.End.Equal(iv.End.Truncate(time.Hour)) {
			t.Errorf("interval %d crosses an hour: %v–%v", i, iv.Start, iv.End)
		}
		if iv.End.Equal(time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC)) {
			hourSplit = true
		}
		if math.Abs(iv.ActiveSeconds+iv.IdleSeconds-d.Seconds()) > 1e-9 || iv.ActiveSeconds < 0 || iv.IdleSeconds < 0 {
			t.Errorf("interval %d: active %v + idle %v != %v", i, iv.ActiveSeconds, iv.IdleSeconds, d.Seconds())
		}
		active += iv.ActiveSeconds
		total += d.Seconds()
	}
	if !hourSplit {
		t.Error("no interval ends at 11:00 UTC")
	}
	st := rt.Stats()
	if math.Abs(active-st.ActiveSeconds) > 1e-6 || math.Abs(total-st.UptimeSeconds) > 1e-6 || math.Abs(device-st.ActiveSeconds) > 1e-6 {
		t.Errorf("intervals: active %v, total %v; runtime: %+v; requests' device seconds %v", active, total, st, device)
	}
	if after, _ := rt.CapacityIntervals(ctx, ivs[len(ivs)-2].Seq); len(after) != 1 {
		t.Errorf("after filter: %d intervals", len(after))
	}
}

// A runtime restarted under the same id numbers its intervals after the
// previous run's, so a collector asking for those after the last it stored
// gets the new run's too.
func TestCapacity_SeqAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	var last uint64
	for run := range 3 {
		rt := startFakeAt(t, runtime.Options{IntervalLength: time.Minute, RuntimeID: "rt-same"}, 64, start)
		rt.clock.Advance(30 * time.Minute)
		closeRT(t, rt)
		ivs, err := rt.CapacityIntervals(ctx, last)
		if err != nil {
			t.Fatal(err)
		}
		if len(ivs) < 30 {
			t.Fatalf("run %d: %d intervals after seq %d, want the whole run's", run, len(ivs), last)
		}
		if !ivs[0].Start.Equal(start) || !ivs[len(ivs)-1].End.Equal(start.Add(30*time.Minute)) {
			t.Fatalf("run %d: intervals from %v to %v; want the whole run from %v", run, ivs[0].Start, ivs[len(ivs)-1].End, start)
		}
		last = ivs[len(ivs)-1].Seq
		start = start.Add(31 * time.Minute) // restarted a minute after the stop
	}
}
