package billing

import (
	"context"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nozzle-ai/nozzle"
)

// A version 16 file opens at version 17: its prices (formats 1 and 3)
// charge cached prompt tokens their prompt price, the migration adds the
// failed and batch requests' cached prompt tokens to the rollups holding
// them (the others keep format 5 in the same hour) and the check holds;
// an hour the outbox took before, on its prompt meter only, is not billed
// its cached tokens a second time when late events come.
func TestLedger_Version16File(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	h0 := time.Date(2026, 3, 4, 8, 5, 0, 0, time.UTC)
	h1 := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	for _, ev := range []*nozzle.UsageEvent{
		{RequestID: "o1", TenantID: ten.ID, AdapterID: "a", Time: h0, PromptTokens: 1000, CachedPromptTokens: 600, CompletionTokens: 100},
		{RequestID: "b1", TenantID: ten.ID, AdapterID: "a", Time: h1, PromptTokens: 1000, CachedPromptTokens: 400, CompletionTokens: 10, Batch: true},
		{RequestID: "f1", TenantID: ten.ID, AdapterID: "a", Time: h1, PromptTokens: 500, CachedPromptTokens: 200, Status: nozzle.UsageFailed},
		{RequestID: "i1", TenantID: ten.ID, AdapterID: "b", Time: h1, PromptTokens: 100, CachedPromptTokens: 50, CompletionTokens: 5},
	} {
		mustRecord(t, l, ev)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// as version 16 left it: rollups in format 5, a price in format 3, and
	// hour 08:00 billed in format 1, its prompt meter holding its cached
	// tokens
	rollupsAs(t, path, rollupV5, 16)
	old := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 1, BatchDiscountPercent: 50}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bPrices).Put(priceKey("", h0.Add(-24*time.Hour)), encodePriceAs(old, priceV3)); err != nil {
			return err
		}
		return tx.Bucket(bBilled).Put(join(lp(ten.ID), hourKey(hourOf(h0))),
			encodeBilledAs(&billed{PromptTokens: 1000, CompletionTokens: 100, Parts: 1}, valueV1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	l, err = Open(Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: 9, CompletionPerMillionUSD: 9, CachedPromptPerMillionUSD: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if v, err := FileVersion(l); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v after open, want %d", v, err, SchemaVersion)
	}
	wantCheck := func() {
		t.Helper()
		res, err := l.Check(ctx)
		if err != nil || len(res.Problems) > 0 {
			t.Fatalf("check: %+v, %v", res, err)
		}
	}
	wantCheck()
	formats := map[string]byte{}
	if err := l.viewUsage(func(tx *bolt.Tx) error {
		for _, ad := range []string{"a", "b"} {
			v := tx.Bucket(bRollups).Get(rollupKey(ten.ID, hourOf(h1), ad))
			formats[ad] = v[0]
			if ad == "a" {
				r, err := decodeRollup(v)
				if err != nil || r.FailedCachedPromptTokens != 200 || r.Batch.CachedPromptTokens != 400 || r.Batch.FailedCachedPromptTokens != 0 {
					t.Errorf("migrated rollup %+v, %v", r, err)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if formats["a"] != rollupV6 || formats["b"] != rollupV5 {
		t.Errorf("rollup formats of hour 10:00 %v, want a: 6 (migrated), b: 5 (kept)", formats)
	}

	hist, err := l.Prices(ctx, "")
	if err != nil || len(hist) != 1 || hist[0].Price.CachedPromptPerMillionUSD != 1 {
		t.Fatalf("the version 16 price reads as %+v, %v; want its cached price equal to its prompt price", hist, err)
	}
	// under the old price, cached tokens cost what the others do (then
	// the batch discount)
	ev := &nozzle.UsageEvent{RequestID: "b2", TenantID: ten.ID, AdapterID: "b", Time: h1.Add(time.Minute), PromptTokens: 1_000_000, CachedPromptTokens: 500_000, Batch: true}
	mustRecord(t, l, ev)
	if math.Abs(ev.ChargeUSD-0.5) > 1e-12 {
		t.Errorf("batch request under the version 16 price charged %v, want 0.5", ev.ChargeUSD)
	}
	wantCheck() // hour 10:00 holds rollups of formats 5 and 6

	// 08:00 gets a late request, all of its prompt cached: the 1000 prompt
	// tokens taken before count as cached first (600 then, 700 now), so
	// only 100 more uncached ones and 10 completion tokens go out.
	mustRecord(t, l, &nozzle.UsageEvent{RequestID: "o2", TenantID: ten.ID, AdapterID: "a", Time: h0.Add(time.Minute), PromptTokens: 100, CachedPromptTokens: 100, CompletionTokens: 10})
	if _, err := l.SweepOutbox(ctx, time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC), OutboxOptions{}); err != nil {
		t.Fatal(err)
	}
	rows, err := l.OutboxRows(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range rows {
		if r.Part != 1 {
			t.Errorf("row %+v: want part 1 (part 0 went out before)", r)
		}
		got[r.Meter] += r.Value
	}
	if len(got) != 2 || got[MeterPrompt] != 100 || got[MeterCompletion] != 10 {
		t.Errorf("late part of a version 16 hour: %v, want prompt 100 and completion 10", got)
	}
	if err := l.viewUsage(func(tx *bolt.Tx) error {
		b, err := decodeBilled(tx.Bucket(bBilled).Get(join(lp(ten.ID), hourKey(hourOf(h0)))))
		if err != nil || b.promptHoldsCached || b.PromptTokens != 400 || b.CachedPromptTokens != 700 || b.CompletionTokens != 110 || b.Parts != 2 {
			t.Errorf("billed hour now %+v, %v", b, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantCheck()
}
