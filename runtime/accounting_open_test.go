package runtime_test

import (
	"context"
	"math"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestCapacity_Open: the open interval so far starts where the last closed
// one ended, ends now, carries the Seq it closes under, and with the
// closed intervals adds up to the runtime's uptime and active time; once
// it closes, the closed interval starts where it did and holds at least
// its active time; after Close none is open. The remote protocol reports
// the same snapshot.
func TestCapacity_Open(t *testing.T) {
	start := time.Date(2025, 3, 1, 10, 58, 10, 0, time.UTC)
	rt := startFakeAt(t, runtime.Options{IntervalLength: 5 * time.Minute, RuntimeID: "rt-open", RatePerHour: 1.5}, 64, start)
	rt.eng.perStep = 2 * time.Second
	rt.eng.eosBias = -100
	ctx := context.Background()

	iv, ok, err := rt.OpenCapacity(ctx)
	if err != nil || ok {
		t.Fatalf("at start: %+v, %v, %v; want none open yet", iv, ok, err)
	}
	check := func(when string) nozzle.CapacityInterval {
		t.Helper()
		iv, ok, err := rt.OpenCapacity(ctx)
		if err != nil || !ok {
			t.Fatalf("%s: open %v, %v", when, ok, err)
		}
		closed, _ := rt.CapacityIntervals(ctx, 0)
		wantStart, wantSeq := start, uint64(start.UnixMicro())
		var active, total float64
		if n := len(closed); n > 0 {
			wantStart, wantSeq = closed[n-1].End, closed[n-1].Seq+1
		}
		for _, c := range closed {
			active += c.ActiveSeconds
			total += c.End.Sub(c.Start).Seconds()
		}
		d := iv.End.Sub(iv.Start).Seconds()
		if iv.RuntimeID != "rt-open" || iv.RatePerHour != 1.5 || iv.Seq != wantSeq || !iv.Start.Equal(wantStart) ||
			!iv.End.Equal(rt.clock.Now()) || iv.ActiveSeconds < 0 || iv.IdleSeconds < 0 ||
			math.Abs(iv.ActiveSeconds+iv.IdleSeconds-d) > 1e-9 {
			t.Fatalf("%s: open %+v; want seq %d from %v to %v", when, iv, wantSeq, wantStart, rt.clock.Now())
		}
		st := rt.Stats()
		if math.Abs(active+iv.ActiveSeconds-st.ActiveSeconds) > 1e-6 || math.Abs(total+d-st.UptimeSeconds) > 1e-6 {
			t.Fatalf("%s: closed (%v active of %v) and open (%+v) do not add up to %+v", when, active, total, iv, st)
		}
		return iv
	}

	rt.clock.Advance(20 * time.Second)
	if iv := check("idle"); iv.ActiveSeconds != 0 || iv.IdleSeconds != 20 {
		t.Fatalf("idle 20 s: %+v", iv)
	}
	if o := run(ctx, rt, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 8}); o.err != nil {
		t.Fatal(o.err)
	}
	busy := check("after a request")
	if busy.ActiveSeconds <= 0 {
		t.Fatalf("after a request: %+v", busy)
	}
	// The hour ends at 11:00: the snapshot's interval closes there.
	rt.clock.Advance(2 * time.Minute)
	later := check("after the hour")
	if later.Seq == busy.Seq || !later.Start.Equal(time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("after the hour: %+v (before %+v)", later, busy)
	}
	closed, _ := rt.CapacityIntervals(ctx, busy.Seq-1)
	if len(closed) == 0 || closed[0].Seq != busy.Seq || !closed[0].Start.Equal(busy.Start) || closed[0].ActiveSeconds < busy.ActiveSeconds {
		t.Fatalf("closed %+v, snapshot was %+v", closed, busy)
	}

	// Over the remote protocol.
	cl := serve(t, rt.Runtime)
	remote, ok, err := cl.OpenCapacity(ctx)
	if local, _, _ := rt.OpenCapacity(ctx); err != nil || !ok || remote != local {
		t.Fatalf("remote %+v, %v, %v; local %+v", remote, ok, err, local)
	}

	closeRT(t, rt)
	if iv, ok, err := rt.OpenCapacity(ctx); ok || err != nil {
		t.Fatalf("after Close: %+v, %v, %v", iv, ok, err)
	}
	if _, ok, err := cl.OpenCapacity(ctx); ok || err != nil {
		t.Fatalf("remote after Close: %v, %v", ok, err)
	}
}
