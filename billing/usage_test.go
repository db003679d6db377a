package billing_test

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

func TestRecordUsage_ExactlyOnce(t *testing.T) {
	ctx := context.Background()
	price := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3}
	l := mustOpen(t, billing.Options{DefaultPrice: price})
	ten := mustTenant(t, l, "acme")
	at := date("2026-03-04T10:30:00Z")
	const n = 1000
	var dups atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := nozzle.UsageEvent{RequestID: "req-same", TenantID: ten.ID, Time: at, PromptTokens: 100, CompletionTokens: 10 + int64(i), DeviceSeconds: 0.5, RatePerHour: 2, Response: []byte(`{"id":"x"}`)}
			dup, err := l.RecordUsage(ctx, &ev)
			if err != nil {
				errs <- err
				return
			}
			if dup {
				dups.Add(1)
			}
			if ev.ChargeUSD == 0 || string(ev.Response) != `{"id":"x"}` {
				errs <- fmt.Errorf("returned event %+v", ev)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := dups.Load(); got != n-1 {
		t.Fatalf("duplicates = %d, want %d", got, n-1)
	}
	stored, err := l.Usage(ctx, "req-same")
	if err != nil {
		t.Fatal(err)
	}
	rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: at.Add(-time.Hour), End: at.Add(time.Hour)})
	if rep.Total.Requests != 1 || rep.Total.CompletionTokens != stored.CompletionTokens || rep.Total.PromptTokens != 100 {
		t.Fatalf("report total = %+v after %d writes of one request", rep.Total, n)
	}
	if want := price.Charge(100, stored.CompletionTokens); math.Abs(stored.ChargeUSD-want) > 1e-15 || math.Abs(rep.Total.ChargedUSD-want) > 1e-15 {
		t.Fatalf("charge = %v (report %v), want %v", stored.ChargeUSD, rep.Total.ChargedUSD, want)
	}
	res := mustCheck(t, l)
	if res.Events != 1 || res.Rollups != 1 {
		t.Fatalf("Check = %+v", res)
	}
}

func TestRecordUsage_Invalid(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")
	at := date("2026-03-04T10:30:00Z")
	for name, ev := range map[string]nozzle.UsageEvent{
		"NoRequestID":     {TenantID: ten.ID, Time: at},
		"NoTime":          {RequestID: "r", TenantID: ten.ID},
		"NegativeTokens":  {RequestID: "r", TenantID: ten.ID, Time: at, PromptTokens: -1},
		"CachedTooMany":   {RequestID: "r", TenantID: ten.ID, Time: at, PromptTokens: 10, CachedPromptTokens: 11},
		"NegativeCached":  {RequestID: "r", TenantID: ten.ID, Time: at, PromptTokens: 10, CachedPromptTokens: -1},
		"NaNSeconds":      {RequestID: "r", TenantID: ten.ID, Time: at, DeviceSeconds: math.NaN()},
		"UnknownStatus":   {RequestID: "r", TenantID: ten.ID, Time: at, Status: "weird"},
		"UnknownTenant":   {RequestID: "r", TenantID: "ten_nope", Time: at},
		"NegativeRate":    {RequestID: "r", TenantID: ten.ID, Time: at, RatePerHour: -2},
		"LongRequestID":   {RequestID: strings.Repeat("x", 300), TenantID: ten.ID, Time: at},
		"InfiniteSeconds": {RequestID: "r", TenantID: ten.ID, Time: at, QueueSeconds: math.Inf(1)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := l.RecordUsage(ctx, &ev)
			wantCode(t, err, nozzle.EINVALID)
		})
	}
	// Nothing was stored half-way.
	if res := mustCheck(t, l); res.Events != 0 || res.Rollups != 0 {
		t.Fatalf("Check after invalid events = %+v", res)
	}
	_, err := l.Usage(ctx, "r")
	wantCode(t, err, nozzle.ENOTFOUND)
}

func TestRecordUsage_FailedIsNotCharged(t *testing.T) {
	l := mustOpen(t, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 1}})
	ten := mustTenant(t, l, "acme")
	ev := mustRecord(t, l, nozzle.UsageEvent{RequestID: "f", TenantID: ten.ID, Status: nozzle.UsageFailed, Time: date("2026-03-04T10:00:00Z"), PromptTokens: 1000, ChargeUSD: 5})
	if ev.ChargeUSD != 0 {
		t.Fatalf("failed request charged %v", ev.ChargeUSD)
	}
	ev = mustRecord(t, l, nozzle.UsageEvent{RequestID: "c", TenantID: ten.ID, Status: nozzle.UsageCanceled, Time: date("2026-03-04T10:00:00Z"), PromptTokens: 1000})
	if ev.ChargeUSD != 0.001 {
		t.Fatalf("canceled request charged %v, want 0.001", ev.ChargeUSD)
	}
}

func TestReport_HourBoundaries(t *testing.T) {
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "a", TenantID: ten.ID, Time: date("2026-03-04T10:59:59.999Z"), PromptTokens: 1})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "b", TenantID: ten.ID, Time: date("2026-03-04T11:00:00Z"), PromptTokens: 2})
	// The same instant in another zone lands in the same UTC hour.
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "c", TenantID: ten.ID, Time: date("2026-03-04T12:00:00.5+01:00"), PromptTokens: 4})
	rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: date("2026-03-04T00:00:00Z"), End: date("2026-03-05T00:00:00Z"), GroupBy: []string{nozzle.GroupHour}})
	if len(rep.Rows) != 2 {
		t.Fatalf("rows = %+v", rep.Rows)
	}
	if got := rep.Rows[0]; !got.Time.Equal(date("2026-03-04T10:00:00Z")) || got.PromptTokens != 1 {
		t.Fatalf("10:00 row = %+v", got)
	}
	if got := rep.Rows[1]; !got.Time.Equal(date("2026-03-04T11:00:00Z")) || got.PromptTokens != 6 {
		t.Fatalf("11:00 row = %+v", got)
	}
	// A period ending at 11:00 excludes 11:00:00 exactly.
	rep = mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: date("2026-03-04T10:00:00Z"), End: date("2026-03-04T11:00:00Z")})
	if rep.Total.PromptTokens != 1 || rep.Total.Requests != 1 {
		t.Fatalf("[10:00, 11:00) total = %+v", rep.Total)
	}
	// By day: the day row spans the period's part of the day.
	rep = mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: date("2026-03-03T00:00:00Z"), End: date("2026-03-06T00:00:00Z"), GroupBy: []string{"day"}})
	if len(rep.Rows) != 1 || !rep.Rows[0].Time.Equal(date("2026-03-04T00:00:00Z")) || rep.Rows[0].Requests != 3 {
		t.Fatalf("day rows = %+v", rep.Rows)
	}
}

func TestReport_EmptyAndInvalid(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-15T12:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	busy, idle := mustTenant(t, l, "busy"), mustTenant(t, l, "idle")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "a", TenantID: busy.ID, Time: date("2026-03-04T10:00:00Z"), PromptTokens: 1, DeviceSeconds: 1, RatePerHour: 3600})

	t.Run("TenantWithNoUsage", func(t *testing.T) {
		rep := mustReport(t, l, nozzle.ReportQuery{TenantID: idle.ID, GroupBy: []string{"adapter"}})
		if len(rep.Rows) != 0 || rep.Total != (nozzle.ReportRow{}) {
			t.Fatalf("idle tenant report = %+v", rep)
		}
		if !rep.Start.Equal(date("2026-03-01T00:00:00Z")) || !rep.End.Equal(date("2026-04-01T00:00:00Z")) {
			t.Fatalf("default period = %v – %v, want the current month", rep.Start, rep.End)
		}
	})
	t.Run("EmptyPeriod", func(t *testing.T) {
		rep := mustReport(t, l, nozzle.ReportQuery{Start: date("2025-01-01T00:00:00Z"), End: date("2025-01-02T00:00:00Z"), GroupBy: []string{"tenant", "hour"}})
		if len(rep.Rows) != 0 || rep.Total.Requests != 0 || rep.GPU == nil || rep.GPU.CostUSD != 0 || rep.Outbox == nil {
			t.Fatalf("empty operator report = %+v", rep)
		}
	})
	t.Run("PartialHourIncluded", func(t *testing.T) {
		rep := mustReport(t, l, nozzle.ReportQuery{TenantID: busy.ID, Start: date("2026-03-04T10:20:00Z"), End: date("2026-03-04T10:40:00Z")})
		if rep.Total.Requests != 1 || !rep.Start.Equal(date("2026-03-04T10:00:00Z")) || !rep.End.Equal(date("2026-03-04T11:00:00Z")) {
			t.Fatalf("report = %+v", rep)
		}
	})
	for name, q := range map[string]nozzle.ReportQuery{
		"EndBeforeStart": {Start: date("2026-03-02T00:00:00Z"), End: date("2026-03-01T00:00:00Z")},
		"OnlyStart":      {Start: date("2026-03-02T00:00:00Z")},
		"UnknownGroup":   {GroupBy: []string{"week"}},
		"HourAndDay":     {GroupBy: []string{"hour", "day"}},
		"TooLong":        {Start: date("2020-01-01T00:00:00Z"), End: date("2026-01-01T00:00:00Z")},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := l.Report(ctx, q)
			wantCode(t, err, nozzle.EINVALID)
		})
	}
	_, err := l.Report(ctx, nozzle.ReportQuery{TenantID: "ten_nope"})
	wantCode(t, err, nozzle.ENOTFOUND)
}

func TestReport_PriceChangeMidPeriod(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")
	change := date("2026-03-04T11:00:00Z")
	if err := l.SetPrice(ctx, "", nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}, date("2026-01-01T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPrice(ctx, ten.ID, nozzle.Price{PromptPerMillionUSD: 10, CompletionPerMillionUSD: 20}, change); err != nil {
		t.Fatal(err)
	}
	before := mustRecord(t, l, nozzle.UsageEvent{RequestID: "a", TenantID: ten.ID, Time: change.Add(-time.Millisecond), PromptTokens: 1e6, CompletionTokens: 1e6})
	after := mustRecord(t, l, nozzle.UsageEvent{RequestID: "b", TenantID: ten.ID, Time: change, PromptTokens: 1e6, CompletionTokens: 1e6})
	if before.ChargeUSD != 3 || after.ChargeUSD != 30 {
		t.Fatalf("charges = %v, %v; want 3 and 30", before.ChargeUSD, after.ChargeUSD)
	}
	rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: date("2026-03-04T00:00:00Z"), End: date("2026-03-05T00:00:00Z"), GroupBy: []string{"hour"}})
	if len(rep.Rows) != 2 || rep.Rows[0].ChargedUSD != 3 || rep.Rows[1].ChargedUSD != 30 || rep.Total.ChargedUSD != 33 {
		t.Fatalf("rows = %+v total %+v", rep.Rows, rep.Total)
	}
}

// trace is a randomized but consistent history: runtimes with capacity
// intervals, and usage events whose device seconds add up to each
// interval's active seconds.
type trace struct {
	start, end time.Time
	runtimeUSD float64
	intervals  []nozzle.CapacityInterval
	events     []nozzle.UsageEvent
}

func randomTrace(r *rand.Rand, tenants []string) trace {
	start := date("2026-05-01T00:00:00Z").Add(time.Duration(r.IntN(500)) * time.Hour)
	hours := 1 + r.IntN(48)
	tr := trace{start: start, end: start.Add(time.Duration(hours) * time.Hour)}
	adapters := []string{"", "ad_a", "ad_b", "ad_c"}
	nrt := 1 + r.IntN(3)
	for rt := range nrt {
		id := fmt.Sprintf("rt%d", rt)
		rate := 0.25 + r.Float64()*4
		t := start
		var seq uint64
		for t.Before(tr.end) {
			length := time.Duration(1+r.IntN(90)) * time.Minute
			if r.IntN(5) == 0 { // the runtime was down for a while
				t = t.Add(length)
				continue
			}
			end := minT(t.Add(length), tr.end)
			dur := end.Sub(t).Seconds()
			active := dur * r.Float64() * r.Float64()
			seq++
			tr.intervals = append(tr.intervals, nozzle.CapacityInterval{RuntimeID: id, Seq: seq, Start: t, End: end, ActiveSeconds: active, IdleSeconds: dur - active, RatePerHour: rate})
			tr.runtimeUSD += dur * rate / 3600
			// Split the active time over a few requests in the interval.
			k := r.IntN(6)
			if active > 0 && k == 0 {
				k = 1
			}
			w := make([]float64, k)
			sum := 0.0
			for i := range w {
				w[i] = r.Float64() + 0.01
				sum += w[i]
			}
			for i := range w {
				tr.events = append(tr.events, nozzle.UsageEvent{
					RequestID:        fmt.Sprintf("%s-%d-%d", id, seq, i),
					TenantID:         tenants[r.IntN(len(tenants))],
					AdapterID:        adapters[r.IntN(len(adapters))],
					RuntimeID:        id,
					Time:             t.Add(time.Duration(r.Float64() * float64(end.Sub(t)))),
					PromptTokens:     int64(r.IntN(4000)),
					CompletionTokens: int64(r.IntN(1000)),
					DeviceSeconds:    active * w[i] / sum,
					RatePerHour:      rate,
				})
			}
			t = end
		}
	}
	return tr
}

// recordAll records events from many goroutines (they share commits).
func recordAll(tb testing.TB, l *billing.Ledger, evs []nozzle.UsageEvent) {
	tb.Helper()
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(evs) {
					return
				}
				ev := evs[i]
				if _, err := l.RecordUsage(context.Background(), &ev); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func minT(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// A report's USD columns add up exactly, as they read, to its total, and
// the total to the GPU's cost as it reads: under the prorata policy the
// tenants' costs are the GPU's cost, under the operator policy their
// costs and the idle kept by the operator are; each row stays within one
// 1e-10 step of its exact value (the rows are rounded together, see
// apportion), on random traces grouped coarsely and finely.
func TestReport_CostsAddUpAsRead(t *testing.T) {
	steps := func(x float64) int64 { return int64(math.Round(x / nozzle.USDPrecision)) }
	for seed := range uint64(30) {
		for _, policy := range []string{nozzle.IdleProrata, nozzle.IdleOperator} {
			t.Run(fmt.Sprint(seed, policy), func(t *testing.T) {
				r := rand.New(rand.NewPCG(seed, 11))
				l := mustOpen(t, billing.Options{IdlePolicy: policy})
				tenants := mustTenants(t, l, "t", 1+r.IntN(5))
				tr := randomTrace(r, tenants)
				recordWithOpen(t, l, r, tr.intervals)
				recordAll(t, l, tr.events)
				if len(tr.events) == 0 {
					return
				}
				for _, group := range [][]string{{"tenant"}, {"hour", "tenant", "adapter"}} {
					rep := mustReport(t, l, nozzle.ReportQuery{Start: tr.start, End: tr.end, GroupBy: group})
					var active, idle, cost, charged, margin int64
					for _, row := range rep.Rows {
						active += steps(row.ActiveCostUSD)
						idle += steps(row.IdleCostUSD)
						cost += steps(row.CostUSD)
						charged += steps(row.ChargedUSD)
						margin += steps(row.MarginUSD)
					}
					tot := rep.Total
					if active != steps(tot.ActiveCostUSD) || idle != steps(tot.IdleCostUSD) || cost != steps(tot.CostUSD) ||
						charged != steps(tot.ChargedUSD) || margin != steps(tot.MarginUSD) {
						t.Fatalf("%v: rows sum to active %d idle %d cost %d charged %d margin %d steps; total %+v", group, active, idle, cost, charged, margin, tot)
					}
					g := rep.GPU
					if g.CostUSD < tot.ActiveCostUSD {
						continue // the requests ran ahead of the capacity pulled: no idle to split
					}
					if steps(g.IdleCostUSD) != steps(g.CostUSD)-steps(tot.ActiveCostUSD) {
						t.Fatalf("%v: GPU idle %v, cost %v, tenants' active %v", group, g.IdleCostUSD, g.CostUSD, tot.ActiveCostUSD)
					}
					if steps(tot.CostUSD)+steps(g.OperatorIdleUSD) != steps(g.CostUSD) {
						t.Fatalf("%v: tenants' cost %v and operator's idle %v, GPU cost %v", group, tot.CostUSD, g.OperatorIdleUSD, g.CostUSD)
					}
					if steps(g.MarginUSD) != steps(tot.MarginUSD)-steps(g.OperatorIdleUSD) {
						t.Fatalf("%v: GPU margin %v, tenants' margin %v, operator idle %v", group, g.MarginUSD, tot.MarginUSD, g.OperatorIdleUSD)
					}
				}
			})
		}
	}
}

func relErr(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

func TestReport_Conservation(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			l := mustOpen(t, billing.Options{})
			tenants := mustTenants(t, l, "t", 1+r.IntN(5))
			tr := randomTrace(r, tenants)
			recordWithOpen(t, l, r, tr.intervals)
			recordAll(t, l, tr.events)
			q := nozzle.ReportQuery{Start: tr.start, End: tr.end, GroupBy: []string{"tenant"}}
			rep := mustReport(t, l, q)
			if e := relErr(rep.GPU.CostUSD, tr.runtimeUSD); e > 1e-9 {
				t.Fatalf("GPU cost %v, runtimes cost %v", rep.GPU.CostUSD, tr.runtimeUSD)
			}
			if len(tr.events) == 0 {
				return
			}
			sum := 0.0
			for _, row := range rep.Rows {
				if row.CostUSD < 0 || row.IdleCostUSD < 0 {
					t.Fatalf("negative cost in %+v", row)
				}
				sum += row.CostUSD
			}
			if e := relErr(sum, tr.runtimeUSD); e > 1e-9 {
				t.Fatalf("tenants' costs sum to %.12f, runtimes cost %.12f (rel err %g)", sum, tr.runtimeUSD, e)
			}
			// Each tenant's own report gives the same cost, and all of them
			// together again add up to the runtimes' cost.
			sum = 0
			for _, id := range tenants {
				tr := mustReport(t, l, nozzle.ReportQuery{TenantID: id, Start: q.Start, End: q.End, GroupBy: []string{"hour", "adapter"}})
				for _, row := range tr.Rows {
					sum += row.CostUSD
				}
			}
			if e := relErr(sum, tr.runtimeUSD); e > 1e-9 {
				t.Fatalf("tenant reports sum to %.12f, runtimes cost %.12f", sum, tr.runtimeUSD)
			}
			mustCheck(t, l)
		})
	}
}

// recordWithOpen records a trace's intervals as a collector would see
// them: each runtime's last interval is, at random, still open (kept as
// provisional after an earlier, shorter snapshot of it), closed after a
// provisional snapshot of it was kept, or closed outright.
func recordWithOpen(tb testing.TB, l *billing.Ledger, r *rand.Rand, ivs []nozzle.CapacityInterval) {
	tb.Helper()
	ctx := context.Background()
	last := map[string]int{}
	for i, iv := range ivs {
		last[iv.RuntimeID] = i
	}
	var closed []nozzle.CapacityInterval
	var open, snaps []nozzle.CapacityInterval
	for i, iv := range ivs {
		if last[iv.RuntimeID] != i {
			closed = append(closed, iv)
			continue
		}
		// A snapshot of the first part of the interval, its active time
		// a part of the final one.
		f := 0.1 + 0.8*r.Float64()
		snap := iv
		snap.End = iv.Start.Add(time.Duration(f * float64(iv.End.Sub(iv.Start))))
		d := snap.End.Sub(snap.Start).Seconds()
		snap.ActiveSeconds = min(iv.ActiveSeconds*r.Float64(), d)
		snap.IdleSeconds = d - snap.ActiveSeconds
		switch r.IntN(3) {
		case 0: // still open
			snaps = append(snaps, snap)
			open = append(open, iv)
		case 1: // closed after a snapshot was kept
			snaps = append(snaps, snap)
			closed = append(closed, iv)
		default:
			closed = append(closed, iv)
		}
	}
	for _, iv := range snaps {
		if err := l.RecordOpenCapacity(ctx, iv); err != nil {
			tb.Fatal(err)
		}
	}
	if err := l.RecordCapacity(ctx, closed); err != nil {
		tb.Fatal(err)
	}
	for _, iv := range open {
		if err := l.RecordOpenCapacity(ctx, iv); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestReport_OperatorIdlePolicy(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{IdlePolicy: nozzle.IdleOperator})
	ten := mustTenant(t, l, "acme")
	start := date("2026-03-04T10:00:00Z")
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{{RuntimeID: "rt", Seq: 1, Start: start, End: start.Add(time.Hour), ActiveSeconds: 360, IdleSeconds: 3240, RatePerHour: 2}}); err != nil {
		t.Fatal(err)
	}
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "a", TenantID: ten.ID, Time: start.Add(time.Minute), DeviceSeconds: 360, RatePerHour: 2})
	rep := mustReport(t, l, nozzle.ReportQuery{Start: start, End: start.Add(time.Hour)})
	if got := rep.Total.CostUSD; math.Abs(got-0.2) > 1e-12 || rep.Total.IdleCostUSD != 0 {
		t.Fatalf("tenant cost = %v (idle %v), want 0.2 active only", got, rep.Total.IdleCostUSD)
	}
	if g := rep.GPU; math.Abs(g.CostUSD-2) > 1e-12 || math.Abs(g.OperatorIdleUSD-1.8) > 1e-12 || math.Abs(g.Utilization-0.1) > 1e-12 {
		t.Fatalf("GPU = %+v", g)
	}
	// The operator's margin is after the whole GPU's cost, idle time kept
	// included; the tenants' total margin leaves that idle out.
	if g := rep.GPU; math.Abs(g.MarginUSD-(rep.Total.ChargedUSD-2)) > 1e-12 ||
		math.Abs(rep.Total.MarginUSD-g.MarginUSD-g.OperatorIdleUSD) > 1e-12 {
		t.Fatalf("GPU margin %v, tenants' margin %v, operator idle %v", g.MarginUSD, rep.Total.MarginUSD, g.OperatorIdleUSD)
	}
	// A dedicated GPU for the base model over the hour costs the same 2 $.
	if math.Abs(rep.Total.DedicatedUSD-2) > 1e-12 || math.Abs(rep.Total.SavingPercent-90) > 1e-9 {
		t.Fatalf("dedicated = %v saving %v", rep.Total.DedicatedUSD, rep.Total.SavingPercent)
	}
}

func TestReport_DedicatedRate(t *testing.T) {
	l := mustOpen(t, billing.Options{DedicatedRatePerHour: 4})
	ten := mustTenant(t, l, "acme")
	at := date("2026-03-04T10:00:00Z")
	adapter := func(name string) string {
		a := &nozzle.Adapter{TenantID: ten.ID, Name: name, AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32), Rank: 8, TargetModules: []string{"q_proj"}}}
		if err := l.CreateAdapter(context.Background(), a); err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	one, two, three := adapter("one"), adapter("two"), adapter("three")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "a", TenantID: ten.ID, AdapterID: one, AdapterName: "one", Time: at, DeviceSeconds: 36, RatePerHour: 1})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "b", TenantID: ten.ID, AdapterID: two, AdapterName: "two", Time: at.Add(2 * time.Hour), DeviceSeconds: 36, RatePerHour: 1})
	for i, h := range []time.Duration{3, 5} {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: fmt.Sprint("c", i), TenantID: ten.ID, AdapterID: three, AdapterName: "three", Time: at.Add(h * time.Hour), DeviceSeconds: 36, RatePerHour: 1})
	}
	if _, err := l.DeleteAdapter(context.Background(), ten.ID, "three"); err != nil {
		t.Fatal(err)
	}
	q := nozzle.ReportQuery{TenantID: ten.ID, Start: at, End: at.Add(10 * time.Hour), GroupBy: []string{"adapter"}}
	rep := mustReport(t, l, q)
	// Adapters at 4 $/h, each from its first request to the period's end:
	// one for ten hours, two (first used at 12:00) for eight; three,
	// deleted since, from 13:00 until its last request at 15:00: three.
	ded := map[string]float64{}
	for _, r := range rep.Rows {
		ded[r.AdapterName] = r.DedicatedUSD
	}
	if rep.Total.DedicatedUSD != 84 || len(rep.Rows) != 3 || ded["one"] != 40 || ded["two"] != 32 || ded["three"] != 12 {
		t.Fatalf("report = %+v", rep)
	}
	q.AdapterName = "two"
	rep = mustReport(t, l, q)
	if len(rep.Rows) != 1 || rep.Rows[0].AdapterID != two || rep.Total.Requests != 1 {
		t.Fatalf("filtered report = %+v", rep)
	}
}

func TestBudget_Concurrent(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-31T23:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now, DefaultPrice: nozzle.Price{PromptPerMillionUSD: 100}})
	ten := mustTenant(t, l, "acme")
	budget := 1.0
	if _, err := l.UpdateTenant(ctx, ten.ID, nozzle.TenantUpdate{MonthlyBudgetUSD: &budget}); err != nil {
		t.Fatal(err)
	}
	var ok atomic.Int32
	var mu sync.Mutex
	var releases []func()
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.ReserveBudget(ctx, ten.ID, 0.03)
			if err != nil {
				if nozzle.ErrorCode(err) != nozzle.EQUOTA {
					t.Error(err)
				}
				return
			}
			ok.Add(1)
			mu.Lock()
			releases = append(releases, rel)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got := ok.Load(); got != 33 {
		t.Fatalf("%d reservations of 0.03 fit a budget of 1, want 33", got)
	}
	// Each admitted request costs 0.02 (200 tokens at 100 $/M),
	// is recorded, then releases its reservation.
	for i, rel := range releases {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: fmt.Sprint("r", i), TenantID: ten.ID, Time: clk.Now(), PromptTokens: 200})
		rel()
		rel() // twice is harmless
	}
	mtd, err := l.MonthToDate(ctx, ten.ID, clk.Now())
	if err != nil || math.Abs(mtd-0.66) > 1e-9 {
		t.Fatalf("month to date = %v, %v; want 0.66", mtd, err)
	}
	// 0.34 is left: eleven more of 0.03 fit, the twelfth does not.
	for range 11 {
		if _, err := l.ReserveBudget(ctx, ten.ID, 0.03); err != nil {
			t.Fatal(err)
		}
	}
	_, err = l.ReserveBudget(ctx, ten.ID, 0.03)
	wantCode(t, err, nozzle.EQUOTA)
	if e := nozzle.AsError(err); e.RetryAfter != time.Hour {
		t.Fatalf("RetryAfter = %v, want 1h (next month)", e.RetryAfter)
	}
	// The refusal says why: what the request may cost, what is left.
	if msg := nozzle.AsError(err).Message; !strings.Contains(msg, "could cost up to $0.03") || !strings.Contains(msg, "the $0.01 left of your monthly budget of $1.00") ||
		!strings.Contains(msg, "$0.33 more is held by requests still running") {
		t.Fatalf("message %q", msg)
	}
	// Next month starts afresh.
	clk.Add(time.Hour)
	if _, err := l.ReserveBudget(ctx, ten.ID, 0.6); err != nil { // 0.33 is still reserved
		t.Fatalf("reservation in a new month: %v", err)
	}
}

// TestRecordUsage_Kill re-runs the test binary as a writer that records
// events and acknowledges each on stdout, kills it mid-stream, and checks
// that every acknowledged event survived.
func TestRecordUsage_Kill(t *testing.T) {
	if os.Getenv("BILLING_KILL_WRITER") != "" {
		return
	}
	if testing.Short() {
		t.Skip("subprocess test")
	}
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := billing.Open(billing.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ten := mustTenant(t, l, "acme")
	l.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestKillWriter$", "-test.v=false")
	cmd.Env = append(os.Environ(), "BILLING_KILL_WRITER="+path, "BILLING_KILL_TENANT="+ten.ID)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "ack "); ok {
			acked[id] = true
		}
		if len(acked) == 20000 && !killed {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("writer ended before it was killed, after %d acks", len(acked))
	}
	l = mustOpen(t, billing.Options{Path: path})
	for id := range acked {
		if _, err := l.Usage(context.Background(), id); err != nil {
			t.Fatalf("acknowledged event %s lost: %v", id, err)
		}
	}
	res := mustCheck(t, l)
	if res.Events < len(acked) {
		t.Fatalf("%d events after the kill, %d were acknowledged", res.Events, len(acked))
	}
	t.Logf("%d acknowledged, %d stored", len(acked), res.Events)
}

// TestKillWriter is the writer process of TestRecordUsage_Kill.
func TestKillWriter(t *testing.T) {
	path := os.Getenv("BILLING_KILL_WRITER")
	if path == "" {
		t.Skip("runs as the subprocess of TestRecordUsage_Kill")
	}
	l, err := billing.Open(billing.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	tenant := os.Getenv("BILLING_KILL_TENANT")
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				ev := nozzle.UsageEvent{RequestID: fmt.Sprintf("k-%d-%d", g, i), TenantID: tenant, Time: time.Now(), PromptTokens: 10, CompletionTokens: 5, DeviceSeconds: 0.01, RatePerHour: 2}
				if _, err := l.RecordUsage(context.Background(), &ev); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s\n", ev.RequestID)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func TestRecordUsage_CanceledContextStillRecords(t *testing.T) {
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ev := nozzle.UsageEvent{RequestID: "gone", TenantID: ten.ID, Status: nozzle.UsageCanceled, Time: date("2026-03-04T10:00:00Z"), CompletionTokens: 7}
	if _, err := l.RecordUsage(ctx, &ev); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Usage(context.Background(), "gone"); err != nil || got.CompletionTokens != 7 {
		t.Fatalf("Usage = %+v, %v", got, err)
	}
}

// TestJournal_SyncHoldingP: the journal with the P-holding fdatasync
// acknowledges concurrent events exactly as with the plain one.
func TestJournal_SyncHoldingP(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{SyncHoldsP: true})
	ten := mustTenant(t, l, "acme")
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := &nozzle.UsageEvent{RequestID: fmt.Sprint("h", i%32), TenantID: ten.ID, Time: time.Now(), PromptTokens: 10}
			if _, err := l.RecordUsage(ctx, ev); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if res := mustCheck(t, l); res.Events != 32 {
		t.Fatalf("check %+v: want 32 events", res)
	}
}
