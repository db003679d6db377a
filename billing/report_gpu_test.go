package billing_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// gpuTrace records a random trace into l: runtimes up in intervals of a
// minute to three hours with gaps between them (some crossing hours and
// UTC midnights), a silent stretch of a day and a half with no runtime
// up, and requests of a few tenants. Each runtime's last interval is
// still open at now, kept as provisional capacity (some crossing an hour,
// as a snapshot the ledger is handed may). Nothing is recorded after now.
func gpuTrace(tb testing.TB, l *billing.Ledger, rng *rand.Rand, from, now time.Time) {
	tb.Helper()
	ctx := context.Background()
	silentFrom := from.Add(50 * time.Hour)
	silentTo := silentFrom.Add(36 * time.Hour)
	rates := []float64{1.5, 2, 3.7}
	for r := range 3 {
		id := fmt.Sprint("rt", r)
		var ivs []nozzle.CapacityInterval
		t := from.Add(time.Duration(rng.IntN(7200)) * time.Second)
		for seq := uint64(1); ; seq++ {
			length := time.Duration(60+rng.IntN(3*3600)) * time.Second
			end := t.Add(length)
			if end.After(now) {
				if now.After(t) {
					d := now.Sub(t).Seconds()
					active := d * rng.Float64()
					open := nozzle.CapacityInterval{RuntimeID: id, Seq: seq, Start: t, End: now,
						ActiveSeconds: active, IdleSeconds: d - active, RatePerHour: rates[r]}
					if err := l.RecordOpenCapacity(ctx, open); err != nil {
						tb.Fatal(err)
					}
				}
				break
			}
			if end.Before(silentFrom) || !t.Before(silentTo) {
				active := length.Seconds() * rng.Float64()
				ivs = append(ivs, nozzle.CapacityInterval{RuntimeID: id, Seq: seq, Start: t, End: end,
					ActiveSeconds: active, IdleSeconds: length.Seconds() - active, RatePerHour: rates[r]})
			}
			t = end.Add(time.Duration(rng.IntN(5400)) * time.Second)
		}
		if err := l.RecordCapacity(ctx, ivs); err != nil {
			tb.Fatal(err)
		}
	}
	tenants := mustTenants(tb, l, "tenant", 3)
	var evs []nozzle.UsageEvent
	span := now.Sub(from)
	for i := range 400 {
		at := from.Add(time.Duration(rng.Int64N(int64(span))))
		if !at.Before(silentFrom) && at.Before(silentTo) {
			continue
		}
		evs = append(evs, nozzle.UsageEvent{RequestID: fmt.Sprint("r", i), TenantID: tenants[rng.IntN(len(tenants))], Model: "m",
			AdapterID: fmt.Sprint("ad", rng.IntN(4)), Status: nozzle.UsageOK, Time: at, PromptTokens: 100, CompletionTokens: 20,
			DeviceSeconds: 30 * rng.Float64(), RatePerHour: rates[rng.IntN(len(rates))]})
	}
	recordAll(tb, l, evs)
}

// TestReport_GPUSeries: the GPU series of one report equals, bucket by
// bucket, the GPU figures of a report over each bucket alone, and adds up
// to the period's, for random traces, both steps and both idle policies.
func TestReport_GPUSeries(t *testing.T) {
	from := date("2026-05-03T21:17:00Z")
	for _, tc := range []struct {
		name       string
		policy     string
		q          nozzle.ReportQuery
		now        time.Time
		step       string
		first      time.Time // the first bucket
		n          int       // buckets
		silentFrom time.Time // a bucket inside the silent stretch
	}{{
		// A past week, hour by hour, asked for with the rows by tenant.
		name: "HourPast", policy: nozzle.IdleProrata, now: date("2026-05-12T08:00:00Z"),
		q:    nozzle.ReportQuery{Start: from, End: date("2026-05-10T21:00:00Z"), GroupBy: []string{nozzle.GroupTenant}, GPUStep: nozzle.GroupHour},
		step: nozzle.GroupHour, first: date("2026-05-03T21:00:00Z"), n: 7 * 24, silentFrom: date("2026-05-06T00:00:00Z"),
	}, {
		// Rows by day bring the series by day; the period begins in the
		// middle of a day, so the first bucket is cut.
		name: "DayGroupOperatorPolicy", policy: nozzle.IdleOperator, now: date("2026-05-14T00:00:00Z"),
		q:    nozzle.ReportQuery{Start: from, End: date("2026-05-13T00:00:00Z"), GroupBy: []string{nozzle.GroupDay}},
		step: nozzle.GroupDay, first: date("2026-05-03T21:00:00Z"), n: 10, silentFrom: date("2026-05-06T00:00:00Z"),
	}, {
		// The current hour is measured as far as it went, later hours not
		// at all (the period runs into the future).
		name: "HourUpToNow", policy: nozzle.IdleProrata, now: date("2026-05-08T14:25:00Z"),
		q:    nozzle.ReportQuery{Start: date("2026-05-03T00:00:00Z"), End: date("2026-05-10T00:00:00Z"), GroupBy: []string{nozzle.GroupTenant}, GPUStep: nozzle.GroupHour},
		step: nozzle.GroupHour, first: date("2026-05-03T00:00:00Z"), n: 5*24 + 15, silentFrom: date("2026-05-06T00:00:00Z"),
	}, {
		// Days of a custom period that runs into the future: today is
		// measured up to the end of the current hour.
		name: "DayUpToNow", policy: nozzle.IdleProrata, now: date("2026-05-11T05:40:00Z"),
		q:    nozzle.ReportQuery{Start: date("2026-05-01T00:00:00Z"), End: date("2026-06-01T00:00:00Z"), GPUStep: nozzle.GroupDay},
		step: nozzle.GroupDay, first: date("2026-05-01T00:00:00Z"), n: 11, silentFrom: date("2026-05-06T00:00:00Z"),
	}, {
		// Local-time bounds: buckets are still UTC hours.
		name: "HourLocalBounds", policy: nozzle.IdleOperator, now: date("2026-05-09T00:00:00Z"),
		q: nozzle.ReportQuery{Start: date("2026-05-04T10:00:00+05:30"), End: date("2026-05-08T10:00:00+05:30"),
			GPUStep: nozzle.GroupHour},
		step: nozzle.GroupHour, first: date("2026-05-04T04:00:00Z"), n: 4*24 + 1, silentFrom: date("2026-05-06T00:00:00Z"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(3) {
				t.Run(fmt.Sprint("Seed", seed), func(t *testing.T) {
					clk := newClock(tc.now)
					l := mustOpen(t, billing.Options{Now: clk.Now, IdlePolicy: tc.policy})
					gpuTrace(t, l, rand.New(rand.NewPCG(seed, 7)), from, tc.now)
					checkGPUSeries(t, l, tc.q, tc.now, tc.step, tc.first, tc.n, tc.silentFrom)
				})
			}
		})
	}
}

func checkGPUSeries(t *testing.T, l *billing.Ledger, q nozzle.ReportQuery, now time.Time, step string, first time.Time, n int, silent time.Time) {
	t.Helper()
	rep := mustReport(t, l, q)
	g := rep.GPU
	if g == nil || g.Step != step || len(g.Series) != n {
		t.Fatalf("GPU step %q with %d buckets, want %q with %d (%+v)", g.Step, len(g.Series), step, n, g)
	}
	periodEnd := rep.End
	if next := now.Truncate(time.Hour).Add(time.Hour); rep.Start.Before(next) && periodEnd.After(next) {
		periodEnd = next
	}
	var sum nozzle.GPUBucket
	sawSilent := false
	for i, b := range g.Series {
		want := first
		if i > 0 {
			switch step {
			case nozzle.GroupHour:
				want = first.Add(time.Duration(i) * time.Hour)
			case nozzle.GroupDay:
				d := first.Truncate(24 * time.Hour)
				want = d.AddDate(0, 0, i)
			}
		}
		if !b.Time.Equal(want) || b.Time.Location() != time.UTC {
			t.Fatalf("bucket %d starts at %v, want %v UTC", i, b.Time, want)
		}
		end := b.Time.Add(time.Hour)
		if step == nozzle.GroupDay {
			end = b.Time.Truncate(24*time.Hour).AddDate(0, 0, 1)
		}
		end = earlier(end, periodEnd)
		one := mustReport(t, l, nozzle.ReportQuery{Start: b.Time, End: end})
		alone := gpuFigures(one.GPU.GPUFigures)
		for name, got := range gpuFigures(b.GPUFigures) {
			if math.Abs(got-alone[name]) > 1e-9 {
				t.Errorf("bucket %v: %s = %v, a report over the bucket gives %v", b.Time, name, got, alone[name])
			}
		}
		if !b.Time.Before(silent) && b.Time.Before(silent.Add(24*time.Hour)) {
			sawSilent = true
			if b != (nozzle.GPUBucket{Time: b.Time}) {
				t.Errorf("bucket %v in the silent stretch = %+v, want zeros", b.Time, b)
			}
		}
		sum.UptimeSeconds += b.UptimeSeconds
		sum.ActiveSeconds += b.ActiveSeconds
		sum.IdleSeconds += b.IdleSeconds
		sum.CostUSD += b.CostUSD
	}
	if !sawSilent {
		t.Errorf("no bucket in the silent stretch from %v", silent)
	}
	if g.UptimeSeconds == 0 || g.ActiveSeconds == 0 {
		t.Fatalf("the trace left the period empty: %+v", g)
	}
	total := gpuFigures(g.GPUFigures)
	for _, name := range []string{"UptimeSeconds", "ActiveSeconds", "IdleSeconds", "CostUSD"} {
		got, want := gpuFigures(sum.GPUFigures)[name], total[name]
		if math.Abs(got-want) > 1e-9*max(1, math.Abs(want)) {
			t.Errorf("series' %s adds up to %v, the period's is %v", name, got, want)
		}
	}
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// TestReport_GPUSeriesWhen: which reports carry a series, and a bad step.
func TestReport_GPUSeriesWhen(t *testing.T) {
	now := date("2026-05-12T08:00:00Z")
	l := mustOpen(t, billing.Options{Now: newClock(now).Now})
	ten := mustTenant(t, l, "acme")
	start, end := date("2026-05-01T00:00:00Z"), date("2026-05-03T00:00:00Z")
	for _, tc := range []struct {
		name  string
		q     nozzle.ReportQuery
		step  string
		count int
	}{
		{"NoGroup", nozzle.ReportQuery{}, "", 0},
		{"ByTenant", nozzle.ReportQuery{GroupBy: []string{nozzle.GroupTenant}}, "", 0},
		{"ByHour", nozzle.ReportQuery{GroupBy: []string{nozzle.GroupHour, nozzle.GroupTenant}}, nozzle.GroupHour, 48},
		{"ByDay", nozzle.ReportQuery{GroupBy: []string{nozzle.GroupDay}}, nozzle.GroupDay, 2},
		{"ByDayStepHour", nozzle.ReportQuery{GroupBy: []string{nozzle.GroupDay}, GPUStep: " Hour "}, nozzle.GroupHour, 48},
		{"StepDay", nozzle.ReportQuery{GPUStep: nozzle.GroupDay}, nozzle.GroupDay, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Start, tc.q.End = start, end
			g := mustReport(t, l, tc.q).GPU
			if g.Step != tc.step || len(g.Series) != tc.count {
				t.Fatalf("step %q with %d buckets, want %q with %d", g.Step, len(g.Series), tc.step, tc.count)
			}
			for _, b := range g.Series {
				if b != (nozzle.GPUBucket{Time: b.Time}) {
					t.Fatalf("empty ledger: bucket %+v", b)
				}
			}
		})
	}
	t.Run("TenantReport", func(t *testing.T) {
		rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: start, End: end, GroupBy: []string{nozzle.GroupDay}, GPUStep: nozzle.GroupHour})
		if rep.GPU != nil {
			t.Fatalf("tenant report with GPU figures: %+v", rep.GPU)
		}
	})
	t.Run("BadStep", func(t *testing.T) {
		_, err := l.Report(context.Background(), nozzle.ReportQuery{Start: start, End: end, GPUStep: "week"})
		wantCode(t, err, nozzle.EINVALID)
		if e := nozzle.AsError(err); e == nil || e.Param != "gpu_step" {
			t.Fatalf("error %v: want param gpu_step", err)
		}
	})
}

// gpuFigures names the figures of f.
func gpuFigures(f nozzle.GPUFigures) map[string]float64 {
	return map[string]float64{
		"UptimeSeconds": f.UptimeSeconds, "ActiveSeconds": f.ActiveSeconds, "IdleSeconds": f.IdleSeconds,
		"Utilization": f.Utilization, "CostUSD": f.CostUSD, "IdleCostUSD": f.IdleCostUSD, "OperatorIdleUSD": f.OperatorIdleUSD,
	}
}
