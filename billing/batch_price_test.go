package billing_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// A batch request is charged its price less the batch discount; an
// interactive one in full; a failed one nothing. The report shows the
// batch requests apart, the totals staying the totals of all, the check
// holds with both kinds in the same rollups, and the events keep their
// batch mark once filed and after a reopen.
func TestBatchPrice_ChargeAndReport(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	price := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3, BatchDiscountPercent: 50}
	l := mustOpen(t, billing.Options{Path: path, DefaultPrice: price})
	ten := mustTenant(t, l, "acme")
	at := date("2026-03-04T10:05:00Z")
	ev := func(id, adapter string, batch bool, status string) nozzle.UsageEvent {
		return mustRecord(t, l, nozzle.UsageEvent{RequestID: id, TenantID: ten.ID, AdapterID: adapter, AdapterName: adapter, Time: at,
			Status: status, PromptTokens: 1_000_000, CompletionTokens: 1_000_000, DeviceSeconds: 0.5, RatePerHour: 2, Batch: batch})
	}
	for _, c := range []struct {
		got  nozzle.UsageEvent
		want float64
	}{
		{ev("i1", "sql", false, nozzle.UsageOK), 4},
		{ev("b1", "sql", true, nozzle.UsageOK), 2},
		{ev("b2", "sql", true, nozzle.UsageCanceled), 2},
		{ev("b3", "sql", true, nozzle.UsageFailed), 0},
		{ev("i2", "", false, nozzle.UsageOK), 4},
		{ev("b4", "", true, nozzle.UsageOK), 2},
	} {
		if c.got.ChargeUSD != c.want {
			t.Errorf("%s (batch %v, %s) charged %v, want %v", c.got.RequestID, c.got.Batch, c.got.Status, c.got.ChargeUSD, c.want)
		}
	}
	// A tenant's own price has its own discount.
	if err := l.SetPrice(ctx, ten.ID, nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3, BatchDiscountPercent: 25}, at.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	late := mustRecord(t, l, nozzle.UsageEvent{RequestID: "b5", TenantID: ten.ID, Time: at.Add(2 * time.Minute), PromptTokens: 1_000_000, Batch: true})
	if late.ChargeUSD != 0.75 {
		t.Errorf("batch request under the tenant's price (25%% off) charged %v, want 0.75", late.ChargeUSD)
	}

	check := func(l *billing.Ledger) {
		t.Helper()
		rep := mustReport(t, l, nozzle.ReportQuery{TenantID: ten.ID, Start: at.Truncate(time.Hour), End: at.Truncate(time.Hour).Add(time.Hour),
			GroupBy: []string{nozzle.GroupAdapter}})
		tot := rep.Total
		if tot.Requests != 7 || tot.PromptTokens != 7_000_000 || tot.CompletionTokens != 6_000_000 || tot.ChargedUSD != 14.75 {
			t.Errorf("total %+v", tot)
		}
		if tot.BatchRequests != 5 || tot.BatchPromptTokens != 5_000_000 || tot.BatchCompletionTokens != 4_000_000 || tot.BatchChargeUSD != 6.75 {
			t.Errorf("total's batch part: %d requests, %d/%d tokens, $%v", tot.BatchRequests, tot.BatchPromptTokens, tot.BatchCompletionTokens, tot.BatchChargeUSD)
		}
		byAdapter := map[string]nozzle.ReportRow{}
		for _, r := range rep.Rows {
			byAdapter[r.AdapterID] = r
		}
		if r := byAdapter["sql"]; r.Requests != 4 || r.BatchRequests != 3 || r.BatchPromptTokens != 3_000_000 || r.BatchChargeUSD != 4 || r.ChargedUSD != 8 {
			t.Errorf("sql row %+v", r)
		}
		if r := byAdapter[""]; r.Requests != 3 || r.BatchRequests != 2 || r.BatchCompletionTokens != 1_000_000 || r.BatchChargeUSD != 2.75 || r.ChargedUSD != 6.75 {
			t.Errorf("base model row %+v", r)
		}
		for _, id := range []string{"b1", "b5"} {
			if got, err := l.Usage(ctx, id); err != nil || !got.Batch {
				t.Errorf("Usage(%s) = %+v, %v", id, got, err)
			}
		}
		if got, err := l.Usage(ctx, "i1"); err != nil || got.Batch {
			t.Errorf("Usage(i1) = %+v, %v", got, err)
		}
		mustCheck(t, l)
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check(mustOpen(t, billing.Options{Path: path, DefaultPrice: price}))
}

// A batch request's stream cut short by a crash is charged from its
// checkpoint as a batch request: at the discount, in the batch columns.
func TestBatchPrice_Checkpoint(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	price := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3, BatchDiscountPercent: 50}
	l := mustOpen(t, billing.Options{Path: path, DefaultPrice: price})
	ten := mustTenant(t, l, "acme")
	ck := nozzle.UsageEvent{RequestID: "b1", TenantID: ten.ID, Time: date("2026-03-04T10:05:00Z"), PromptTokens: 1_000_000, CompletionTokens: 1_000_000, Batch: true}
	if err := l.CheckpointUsage(ctx, &ck); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = mustOpen(t, billing.Options{Path: path, DefaultPrice: price})
	got, err := l.Usage(ctx, "b1")
	if err != nil || got.Status != nozzle.UsageInterrupted || !got.Batch || got.ChargeUSD != 2 {
		t.Fatalf("the checkpoint's event: %+v, %v", got, err)
	}
	mustCheck(t, l)
}

// A batch discount outside 0 to 100, or not a number, is refused naming
// its field, in a price list and in the ledger's default price alike.
func TestBatchPrice_Validation(t *testing.T) {
	priceFieldValidation(t, "batch_discount_percent", []float64{-1, 100.01, math.NaN(), math.Inf(1)}, []float64{0, 0.5, 50, 100},
		func(p *nozzle.Price, v float64) { p.BatchDiscountPercent = v })
}

// priceFieldValidation checks one field of a price list, set by set: each
// of bad is refused naming field, in a price list (the standard one and a
// tenant's) and in the ledger's default price alike; each of good is taken
// and reads back as set.
func priceFieldValidation(t *testing.T, field string, bad, good []float64, set func(p *nozzle.Price, v float64)) {
	t.Helper()
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")
	price := func(v float64) nozzle.Price {
		p := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 1, CachedPromptPerMillionUSD: 1}
		set(&p, v)
		return p
	}
	for _, v := range bad {
		p := price(v)
		for _, tid := range []string{"", ten.ID} {
			err := l.SetPrice(ctx, tid, p, time.Now())
			wantCode(t, err, nozzle.EINVALID)
			if e, ok := err.(*nozzle.Error); !ok || e.Param != field {
				t.Errorf("%s %v: %v, want the field named", field, v, err)
			}
		}
		if _, err := billing.Open(billing.Options{Path: filepath.Join(t.TempDir(), "l.db"), DefaultPrice: p}); err == nil {
			t.Errorf("Open with a default %s of %v succeeded", field, v)
		}
	}
	for _, v := range good {
		p := price(v)
		if err := l.SetPrice(ctx, "", p, time.Now()); err != nil {
			t.Errorf("%s %v: %v", field, v, err)
		}
		if got, err := l.PriceAt(ctx, ten.ID, time.Now().Add(time.Hour)); err != nil || got != p {
			t.Errorf("%s %v reads back as %+v, %v", field, v, got, err)
		}
	}
}

// Property: on random traces of interactive and batch requests of every
// outcome, with cached prompt tokens, at a random discount and cached
// prompt price, each event is charged what its price
// charges it (ChargeEvent; failed ones nothing); the report's charges add
// up to the events' (the batch charges to the batch events'), its rows to
// its total, and the check holds.
func TestBatchPrice_ChargesAddUp(t *testing.T) {
	steps := func(x float64) int64 { return int64(math.Round(x / nozzle.USDPrecision)) }
	statuses := []string{nozzle.UsageOK, nozzle.UsageOK, nozzle.UsageCanceled, nozzle.UsageFailed}
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 23))
			price := nozzle.Price{PromptPerMillionUSD: r.Float64() * 5, CompletionPerMillionUSD: r.Float64() * 15, BatchDiscountPercent: float64(r.IntN(101))}
			price.CachedPromptPerMillionUSD = price.PromptPerMillionUSD * r.Float64()
			l := mustOpen(t, billing.Options{DefaultPrice: price})
			tenants := mustTenants(t, l, "t", 1+r.IntN(4))
			tr := randomTrace(r, tenants)
			var charged, batchCharged float64
			var batchReqs, batchPrompt, batchCompletion int64
			for _, ev := range tr.events {
				ev.Batch = r.IntN(2) == 0
				ev.Status = statuses[r.IntN(len(statuses))]
				if ev.PromptTokens > 0 {
					ev.CachedPromptTokens = r.Int64N(ev.PromptTokens + 1)
				}
				got := mustRecord(t, l, ev)
				want := price.ChargeEvent(&got)
				if got.Status == nozzle.UsageFailed {
					want = 0
				}
				if got.ChargeUSD != want {
					t.Fatalf("%+v charged %v, want %v", got, got.ChargeUSD, want)
				}
				charged += got.ChargeUSD
				if got.Batch {
					batchCharged += got.ChargeUSD
					batchReqs++
					batchPrompt += got.PromptTokens
					batchCompletion += got.CompletionTokens
				}
			}
			rep := mustReport(t, l, nozzle.ReportQuery{Start: tr.start, End: tr.end, GroupBy: []string{"hour", "tenant", "adapter"}})
			tot := rep.Total
			if steps(tot.ChargedUSD) != steps(charged) || steps(tot.BatchChargeUSD) != steps(batchCharged) {
				t.Fatalf("report charges %v (batch %v), events %v (batch %v)", tot.ChargedUSD, tot.BatchChargeUSD, charged, batchCharged)
			}
			if tot.BatchRequests != batchReqs || tot.BatchPromptTokens != batchPrompt || tot.BatchCompletionTokens != batchCompletion {
				t.Fatalf("report's batch part %+v, events' %d/%d/%d", tot, batchReqs, batchPrompt, batchCompletion)
			}
			var rowsBatch, rowsAll int64
			for _, row := range rep.Rows {
				rowsBatch += steps(row.BatchChargeUSD)
				rowsAll += steps(row.ChargedUSD)
				if row.BatchRequests > row.Requests || row.BatchPromptTokens > row.PromptTokens || row.BatchCompletionTokens > row.CompletionTokens {
					t.Fatalf("row's batch part exceeds it: %+v", row)
				}
			}
			if rowsBatch != steps(tot.BatchChargeUSD) || rowsAll != steps(tot.ChargedUSD) {
				t.Fatalf("rows' charges sum to %d (batch %d) steps, total %+v", rowsAll, rowsBatch, tot)
			}
			mustCheck(t, l)
		})
	}
}

// The outbox sends a closed hour's batch tokens on the batch meters and
// only the others on the interactive meters (failed requests' on none);
// an hour already in the outbox before its batch events came keeps its
// rows and identifiers, and the batch tokens go out as a later part of
// it, on the batch meters alone.
func TestOutbox_BatchMeters(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now, DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 1, BatchDiscountPercent: 50}})
	a := mustTenant(t, l, "a")
	rec := func(id, hour string, prompt, completion int64, batch bool, status string) {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: id, TenantID: a.ID, AdapterID: "x", Time: date("2026-03-04T" + hour + "Z"),
			PromptTokens: prompt, CompletionTokens: completion, Batch: batch, Status: status})
	}
	// 08:00: interactive only, swept before any batch request came.
	rec("i0", "08:10:00", 100, 10, false, nozzle.UsageOK)
	if n, err := l.SweepOutbox(ctx, date("2026-03-04T09:00:00Z"), billing.OutboxOptions{}); err != nil || n != 2 {
		t.Fatalf("first sweep: %d rows, %v", n, err)
	}
	// 09:00: both kinds, and a failed one of each.
	rec("i1", "09:10:00", 100, 10, false, nozzle.UsageOK)
	rec("b1", "09:20:00", 300, 30, true, nozzle.UsageOK)
	rec("b2", "09:21:00", 5, 1, true, nozzle.UsageCanceled)
	rec("b3", "09:22:00", 7000, 700, true, nozzle.UsageFailed)
	rec("i3", "09:23:00", 9000, 900, false, nozzle.UsageFailed)
	// 08:00 again: a late batch request.
	rec("b4", "08:50:00", 40, 4, true, nozzle.UsageOK)

	f := &fakeStripe{}
	opts := fastOutbox
	opts.BatchCompletionEventName = "custom_batch_completion"
	runOutbox(t, l, f, opts, func(st nozzle.OutboxState) bool { return st.Sent == 8 && st.Pending == 0 })
	f.wantTaken(t, map[string]meterWant{
		"nz-" + a.ID + "-prompt-2026030408":             {"nozzle_prompt_tokens", 100},
		"nz-" + a.ID + "-completion-2026030408":         {"nozzle_completion_tokens", 10},
		"nz-" + a.ID + "-batch_prompt-2026030408-1":     {"nozzle_batch_prompt_tokens", 40},
		"nz-" + a.ID + "-batch_completion-2026030408-1": {"custom_batch_completion", 4},
		"nz-" + a.ID + "-prompt-2026030409":             {"nozzle_prompt_tokens", 100},
		"nz-" + a.ID + "-completion-2026030409":         {"nozzle_completion_tokens", 10},
		"nz-" + a.ID + "-batch_prompt-2026030409":       {"nozzle_batch_prompt_tokens", 305},
		"nz-" + a.ID + "-batch_completion-2026030409":   {"custom_batch_completion", 31},
	})
	rows, err := l.OutboxRows(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	meters := map[string]int{}
	for _, r := range rows {
		meters[r.Meter]++
	}
	if meters[billing.MeterBatchPrompt] != 2 || meters[billing.MeterBatchCompletion] != 2 || meters[billing.MeterPrompt] != 2 || meters[billing.MeterCompletion] != 2 {
		t.Errorf("rows by meter %v", meters)
	}
	// Nothing more to send: sweeping again adds nothing.
	if n, err := l.SweepOutbox(ctx, date("2026-03-04T10:00:00Z"), billing.OutboxOptions{}); err != nil || n != 0 {
		t.Fatalf("sweep after all was sent: %d rows, %v", n, err)
	}
	mustCheck(t, l)
}
