package nozzle_test

import (
	"encoding/json"
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

// A return to the standard prices has no price of its own: null, not a
// price of zero that reads as free.
func TestPriceVersion_JSON(t *testing.T) {
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	b, err := json.Marshal([]nozzle.PriceVersion{
		{TenantID: "ten_1", Price: nozzle.Price{PromptPerMillionUSD: 0.1, CompletionPerMillionUSD: 0.3}, EffectiveFrom: at},
		{TenantID: "ten_1", EffectiveFrom: at.Add(time.Hour), Standard: true},
	})
	want := `[{"tenant_id":"ten_1","price":{"prompt_per_million_usd":0.1,"completion_per_million_usd":0.3},"effective_from":"2026-03-01T00:00:00Z"},` +
		`{"tenant_id":"ten_1","effective_from":"2026-03-01T01:00:00Z","standard":true,"price":null}]`
	if err != nil || string(b) != want {
		t.Fatalf("got %s, %v\nwant %s", b, err, want)
	}
}
