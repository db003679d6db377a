package billing_test

import (
	"bytes"
	"encoding/csv"
	"slices"
	"strconv"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestReportCSV_FormulaInjection: tenant and adapter names from the ledger
// that a spreadsheet would run as formulas come out of the operator's and
// the tenant's CSV as text, while a negative margin (usage charged less
// than it cost) stays a number.
func TestReportCSV_FormulaInjection(t *testing.T) {
	hyperlink := `=HYPERLINK("https:"&CHAR(47)&CHAR(47)&"evil.example","Open")`
	l := mustOpen(t, billing.Options{Now: newClock(date("2026-03-10T00:00:00Z")).Now,
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}})
	evil, minus := mustTenant(t, l, hyperlink), mustTenant(t, l, "-2+3")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "e1", TenantID: evil.ID, AdapterID: "ad_x", AdapterName: "@SUM(A1)",
		Time: date("2026-03-04T10:05:00Z"), PromptTokens: 10, CompletionTokens: 5, DeviceSeconds: 36, RatePerHour: 2})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "m1", TenantID: minus.ID,
		Time: date("2026-03-04T10:06:00Z"), PromptTokens: 10, CompletionTokens: 5, DeviceSeconds: 36, RatePerHour: 2})
	rep := mustReport(t, l, nozzle.ReportQuery{Start: date("2026-03-04T00:00:00Z"), End: date("2026-03-05T00:00:00Z"),
		GroupBy: []string{nozzle.GroupTenant, nozzle.GroupAdapter}})
	rep.LabelBaseRows()

	var buf bytes.Buffer
	if err := rep.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	tenant, adapter, margin := slices.Index(recs[0], "tenant"), slices.Index(recs[0], "adapter"), slices.Index(recs[0], "margin_usd")
	names := map[string]string{}
	for _, r := range recs[1 : len(recs)-1] {
		names[r[tenant]] = r[adapter]
		m, err := strconv.ParseFloat(r[margin], 64)
		if err != nil || m >= 0 {
			t.Errorf("margin_usd %q: want a negative number (%v)", r[margin], err)
		}
	}
	want := map[string]string{"'" + hyperlink: "'@SUM(A1)", "'-2+3": nozzle.BaseModelAlias}
	if len(names) != len(want) {
		t.Fatalf("rows %q, want tenants and adapters %q", recs, want)
	}
	for k, v := range want {
		if names[k] != v {
			t.Errorf("tenant %q: adapter %q, want %q (rows %q)", k, names[k], v, recs)
		}
	}
}
