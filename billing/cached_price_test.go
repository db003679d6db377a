package billing_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// near reports whether two charges agree to within float noise.
func nearUSD(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// A request's cached prompt tokens are charged the cached prompt price,
// its other prompt tokens the prompt price, then the batch discount for a
// batch request; a failed one nothing. The report's charges are the
// events', the check holds, and all of it after a reopen too.
func TestCachedPrice_ChargeAndReport(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	price := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3, BatchDiscountPercent: 50, CachedPromptPerMillionUSD: 0.25}
	l := mustOpen(t, billing.Options{Path: path, DefaultPrice: price})
	ten := mustTenant(t, l, "acme")
	at := date("2026-03-04T10:05:00Z")
	ev := func(id string, cached int64, batch bool, status string) nozzle.UsageEvent {
		return mustRecord(t, l, nozzle.UsageEvent{RequestID: id, TenantID: ten.ID, AdapterID: "sql", AdapterName: "sql", Time: at,
			Status: status, PromptTokens: 1_000_000, CachedPromptTokens: cached, CompletionTokens: 1_000_000, DeviceSeconds: 0.5, RatePerHour: 2, Batch: batch})
	}
	for _, c := range []struct {
		got  nozzle.UsageEvent
		want float64
	}{
		{ev("i0", 0, false, nozzle.UsageOK), 4},                  // 1 + 3
		{ev("i1", 400_000, false, nozzle.UsageOK), 3.7},          // 0.6 + 0.1 + 3
		{ev("i2", 1_000_000, false, nozzle.UsageCanceled), 3.25}, // 0.25 + 3
		{ev("b1", 400_000, true, nozzle.UsageOK), 1.85},          // half of 3.7
		{ev("f1", 400_000, false, nozzle.UsageFailed), 0},
		{ev("f2", 200_000, true, nozzle.UsageFailed), 0},
	} {
		if !nearUSD(c.got.ChargeUSD, c.want) {
			t.Errorf("%s (%d cached, batch %v, %s) charged %v, want %v", c.got.RequestID, c.got.CachedPromptTokens, c.got.Batch, c.got.Status, c.got.ChargeUSD, c.want)
		}
	}
	// A tenant's own price has its own cached price; left at the prompt
	// price, cached tokens cost what the others do.
	own := nozzle.Price{PromptPerMillionUSD: 2, CompletionPerMillionUSD: 3, CachedPromptPerMillionUSD: 2}
	if err := l.SetPrice(ctx, ten.ID, own, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	late := mustRecord(t, l, nozzle.UsageEvent{RequestID: "i3", TenantID: ten.ID, Time: at.Add(2 * time.Minute), PromptTokens: 1_000_000, CachedPromptTokens: 500_000})
	if !nearUSD(late.ChargeUSD, 2) {
		t.Errorf("under the tenant's price (cached = prompt) charged %v, want 2", late.ChargeUSD)
	}
	if got, err := l.PriceAt(ctx, ten.ID, at.Add(time.Hour)); err != nil || got != own {
		t.Errorf("the tenant's price reads back as %+v, %v", got, err)
	}

	check := func(l *billing.Ledger) {
		t.Helper()
		rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: at.Truncate(time.Hour), End: at.Truncate(time.Hour).Add(time.Hour)})
		tot := rep.Total
		if tot.Requests != 7 || tot.CachedPromptTokens != 2_900_000 || !nearUSD(tot.ChargedUSD, 4+3.7+3.25+1.85+2) || !nearUSD(tot.BatchChargeUSD, 1.85) {
			t.Errorf("total %+v", tot)
		}
		for id, want := range map[string]float64{"i1": 3.7, "b1": 1.85, "f1": 0} {
			if got, err := l.Usage(ctx, id); err != nil || !nearUSD(got.ChargeUSD, want) || got.CachedPromptTokens == 0 {
				t.Errorf("Usage(%s) = %+v, %v", id, got, err)
			}
		}
		mustCheck(t, l)
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check(mustOpen(t, billing.Options{Path: path, DefaultPrice: price}))
}

// A cached prompt price below 0, above the prompt price or not a number
// is refused naming its field, in a price list and in the ledger's
// default price alike; 0 (free) and the prompt price itself are taken.
func TestCachedPrice_Validation(t *testing.T) {
	priceFieldValidation(t, "cached_prompt_per_million_usd", []float64{-0.01, 1.01, math.NaN(), math.Inf(1)}, []float64{0, 0.5, 1},
		func(p *nozzle.Price, v float64) { p.CachedPromptPerMillionUSD = v })
}

// The outbox sends a closed hour's cached prompt tokens on the cached
// prompt meters (interactive and batch apart) and only the others on the
// prompt meters; failed requests' on none. Late events go out as a later
// part on the meters they add to.
func TestOutbox_CachedMeters(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now, DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 1, CachedPromptPerMillionUSD: 0.5}})
	a := mustTenant(t, l, "a")
	rec := func(id, hour string, prompt, cached, completion int64, batch bool, status string) {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: id, TenantID: a.ID, AdapterID: "x", Time: date("2026-03-04T" + hour + "Z"),
			PromptTokens: prompt, CachedPromptTokens: cached, CompletionTokens: completion, Batch: batch, Status: status})
	}
	rec("i1", "09:10:00", 100, 64, 10, false, nozzle.UsageOK)
	rec("i2", "09:11:00", 50, 0, 5, false, nozzle.UsageCanceled)
	rec("b1", "09:20:00", 300, 128, 30, true, nozzle.UsageOK)
	rec("f1", "09:22:00", 7000, 4096, 700, true, nozzle.UsageFailed)
	rec("f2", "09:23:00", 9000, 512, 900, false, nozzle.UsageFailed)
	if n, err := l.SweepOutbox(ctx, date("2026-03-04T10:00:00Z"), billing.OutboxOptions{}); err != nil || n != 6 {
		t.Fatalf("first sweep: %d rows, %v", n, err)
	}
	// a late request with cached tokens only adds to the cached meter
	// and the completion meter
	rec("i3", "09:50:00", 16, 16, 1, false, nozzle.UsageOK)

	f := &fakeStripe{}
	opts := fastOutbox
	opts.CachedPromptEventName = "custom_cached" // the late part is queued by the worker, with it
	runOutbox(t, l, f, opts, func(st nozzle.OutboxState) bool { return st.Sent == 8 && st.Pending == 0 })
	f.wantTaken(t, map[string]meterWant{
		"nz-" + a.ID + "-prompt-2026030409":              {"nozzle_prompt_tokens", 86}, // 36 + 50
		"nz-" + a.ID + "-cached_prompt-2026030409":       {"nozzle_cached_prompt_tokens", 64},
		"nz-" + a.ID + "-completion-2026030409":          {"nozzle_completion_tokens", 15},
		"nz-" + a.ID + "-batch_prompt-2026030409":        {"nozzle_batch_prompt_tokens", 172},
		"nz-" + a.ID + "-batch_cached_prompt-2026030409": {"nozzle_batch_cached_prompt_tokens", 128},
		"nz-" + a.ID + "-batch_completion-2026030409":    {"nozzle_batch_completion_tokens", 30},
		"nz-" + a.ID + "-cached_prompt-2026030409-1":     {"custom_cached", 16},
		"nz-" + a.ID + "-completion-2026030409-1":        {"nozzle_completion_tokens", 1},
	})
	if n, err := l.SweepOutbox(ctx, date("2026-03-04T11:00:00Z"), billing.OutboxOptions{}); err != nil || n != 0 {
		t.Fatalf("sweep after all was sent: %d rows, %v", n, err)
	}
	mustCheck(t, l)
}
