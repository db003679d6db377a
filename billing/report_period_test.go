package billing_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestReport_PeriodIntoTheFuture: this month's report, asked for on the
// 10th at 05:30, compares with a dedicated GPU over the 9 days and 5.5
// hours since the hour of the first request (on the 1st), not over the
// whole month ahead nor the rest of the current hour.
func TestReport_PeriodIntoTheFuture(t *testing.T) {
	now := time.Date(2026, 11, 10, 5, 30, 0, 0, time.UTC)
	clk := newClock(now)
	l := mustOpen(t, billing.Options{Now: clk.Now, DedicatedRatePerHour: 2})
	ten := mustTenant(t, l, "acme")
	for i, at := range []time.Time{time.Date(2026, 11, 1, 0, 10, 0, 0, time.UTC), now.Add(-time.Hour)} {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: fmt.Sprint("r", i), TenantID: ten.ID, Model: "m", Status: nozzle.UsageOK,
			Time: at, PromptTokens: 10, CompletionTokens: 5, DeviceSeconds: 1, RatePerHour: 2})
	}

	rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID}) // the current month
	if got, want := rep.End, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("End = %v, want the month's end %v", got, want)
	}
	hours := 9*24 + 5.5
	if got, want := rep.Total.DedicatedUSD, hours*2; math.Abs(got-want) > 1e-9 {
		t.Errorf("DedicatedUSD = %v, want %v (%v hours × $2)", got, want, hours)
	}

	// A period wholly in the past is measured in full.
	past := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: now.Add(-48 * time.Hour).Truncate(time.Hour), End: now.Add(-24 * time.Hour).Truncate(time.Hour)})
	if got, want := past.Total.DedicatedUSD, 0.0; got != want {
		t.Errorf("past day with no usage: DedicatedUSD = %v, want %v", got, want)
	}
}
