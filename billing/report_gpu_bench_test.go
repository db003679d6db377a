package billing_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// BenchmarkGPUPage: the data of the operator console's GPU page (the cost
// split by tenant and the GPU's utilisation and active and idle time over
// the period) for the last 7 days (hour by hour) and 90 days (day by day),
// from one report per hour or day beside the split's report (PerBucket,
// the baseline) and from the one report with its GPU series (OneReport);
// SplitOnly is the split's report alone, without the series, the floor.
// The ledger holds 100 days of two runtimes' capacity in 10-minute
// intervals and 20,000 requests of 10 tenants.
func BenchmarkGPUPage(b *testing.B) {
	ctx := context.Background()
	begin := date("2026-01-01T00:00:00Z")
	now := begin.Add(100*24*time.Hour + 10*time.Hour + 30*time.Minute)
	l := mustOpen(b, billing.Options{Now: newClock(now).Now})
	for r := range 2 {
		var ivs []nozzle.CapacityInterval
		seq := uint64(0)
		for t := begin; !t.Add(10 * time.Minute).After(now); t = t.Add(10 * time.Minute) {
			seq++
			active := float64((seq*37+uint64(r)*11)%600) * 0.9
			ivs = append(ivs, nozzle.CapacityInterval{RuntimeID: fmt.Sprint("rt", r), Seq: seq, Start: t, End: t.Add(10 * time.Minute),
				ActiveSeconds: active, IdleSeconds: 600 - active, RatePerHour: 2})
		}
		if err := l.RecordCapacity(ctx, ivs); err != nil {
			b.Fatal(err)
		}
	}
	tenants := mustTenants(b, l, "tenant", 10)
	var evs []nozzle.UsageEvent
	span := now.Sub(begin)
	for i := range 20_000 {
		evs = append(evs, nozzle.UsageEvent{RequestID: fmt.Sprint("r", i), TenantID: tenants[i%len(tenants)], Model: "m",
			AdapterID: fmt.Sprint("ad", i%8), Status: nozzle.UsageOK, Time: begin.Add(span / 20_000 * time.Duration(i)),
			PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 0.5, RatePerHour: 2})
	}
	recordAll(b, l, evs)

	today := now.Truncate(24 * time.Hour)
	for _, p := range []struct {
		name  string
		start time.Time
		step  string
	}{
		{"7d", today.AddDate(0, 0, -6), nozzle.GroupHour},
		{"90d", today.AddDate(0, 0, -89), nozzle.GroupDay},
	} {
		end := today.AddDate(0, 0, 1)
		b.Run(p.name+"/PerBucket", func(b *testing.B) {
			for b.Loop() {
				if _, err := l.Report(ctx, nozzle.ReportQuery{Start: p.start, End: end, GroupBy: []string{nozzle.GroupTenant}}); err != nil {
					b.Fatal(err)
				}
				var active float64
				for x := p.start; x.Before(now); {
					next := x.Add(time.Hour)
					if p.step == nozzle.GroupDay {
						next = x.AddDate(0, 0, 1)
					}
					r, err := l.Report(ctx, nozzle.ReportQuery{Start: x, End: next})
					if err != nil {
						b.Fatal(err)
					}
					active += r.GPU.ActiveSeconds
					x = next
				}
				if active == 0 {
					b.Fatal("no active time")
				}
			}
		})
		b.Run(p.name+"/SplitOnly", func(b *testing.B) {
			for b.Loop() {
				if _, err := l.Report(ctx, nozzle.ReportQuery{Start: p.start, End: end, GroupBy: []string{nozzle.GroupTenant}}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(p.name+"/OneReport", func(b *testing.B) {
			for b.Loop() {
				r, err := l.Report(ctx, nozzle.ReportQuery{Start: p.start, End: end, GroupBy: []string{nozzle.GroupTenant}, GPUStep: p.step})
				if err != nil {
					b.Fatal(err)
				}
				var active float64
				for _, g := range r.GPU.Series {
					active += g.ActiveSeconds
				}
				if active == 0 {
					b.Fatal("no active time")
				}
			}
		})
	}
}
