package nozzle_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

func TestValidateTenantName(t *testing.T) {
	for _, ok := range []string{"acme", "Acme Corp. (EU)", "Société Générale", "x", "ten-x", "tenant_1"} {
		if err := nozzle.ValidateTenantName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "  ", " acme", "acme ", "ten_7yhvcot2s7fd776q", "a/b", `a\b`, "a?b", "a#b", "50%", "a\tb", "a\nb", "\xff", string(make([]byte, 101))} {
		if err := nozzle.ValidateTenantName(bad); nozzle.ErrorCode(err) != nozzle.EINVALID {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// A price charges a batch request its discount off, an interactive one
// in full; no discount charges both alike.
func TestPrice_ChargeEvent(t *testing.T) {
	p := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3, BatchDiscountPercent: 50}
	ev := &nozzle.UsageEvent{PromptTokens: 1_000_000, CompletionTokens: 1_000_000}
	if got := p.ChargeEvent(ev); got != 4 {
		t.Errorf("interactive: %v, want 4", got)
	}
	ev.Batch = true
	if got := p.ChargeEvent(ev); got != 2 {
		t.Errorf("batch at 50%%: %v, want 2", got)
	}
	p.BatchDiscountPercent = 100
	if got := p.ChargeEvent(ev); got != 0 {
		t.Errorf("batch at 100%%: %v, want 0", got)
	}
	p.BatchDiscountPercent = 0
	if got := p.ChargeEvent(ev); got != 4 {
		t.Errorf("batch without a discount: %v, want 4", got)
	}
}

// A return to the standard prices has no price of its own: null, not a
// price of zero that reads as free.
func TestPriceVersion_JSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	b, err := json.Marshal([]nozzle.PriceVersion{
		{TenantID: "ten_1", Price: nozzle.Price{PromptPerMillionUSD: 0.1, CompletionPerMillionUSD: 0.3}, EffectiveFrom: at},
		{TenantID: "ten_1", EffectiveFrom: at.Add(time.Hour), Standard: true},
	})
	want := `[{"tenant_id":"ten_1","price":{"prompt_per_million_usd":0.1,"completion_per_million_usd":0.3,"batch_discount_percent":0,"cached_prompt_per_million_usd":0},"effective_from":"2026-03-01T00:00:00Z"},` +
		`{"tenant_id":"ten_1","effective_from":"2026-03-01T01:00:00Z","standard":true,"price":null}]`
	if err != nil || string(b) != want {
		t.Fatalf("got %s, %v\nwant %s", b, err, want)
	}
}

// A price charges cached prompt tokens its cached prompt price and the
// others its prompt price, then the batch discount on all of it; cached
// tokens beyond the prompt tokens count as no more than those.
func TestPrice_ChargeEventCached(t *testing.T) {
	p := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 3, CachedPromptPerMillionUSD: 0.25, BatchDiscountPercent: 50}
	ev := &nozzle.UsageEvent{PromptTokens: 1_000_000, CachedPromptTokens: 600_000, CompletionTokens: 1_000_000}
	if got := p.ChargeEvent(ev); math.Abs(got-3.55) > 1e-12 { // 0.4 + 0.15 + 3
		t.Errorf("interactive: %v, want 3.55", got)
	}
	ev.Batch = true
	if got := p.ChargeEvent(ev); math.Abs(got-1.775) > 1e-12 {
		t.Errorf("batch: %v, want 1.775", got)
	}
	ev.Batch, ev.CachedPromptTokens = false, 2_000_000
	if got := p.ChargeEvent(ev); math.Abs(got-3.25) > 1e-12 {
		t.Errorf("cached beyond the prompt: %v, want 3.25", got)
	}
	p.CachedPromptPerMillionUSD = p.PromptPerMillionUSD
	if got, want := p.ChargeEvent(ev), p.Charge(ev.PromptTokens, ev.CompletionTokens); got != want {
		t.Errorf("cached price = prompt price: %v, want Charge's %v", got, want)
	}
}
