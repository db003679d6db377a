package billing_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestCachedPromptTokens: the prompt tokens the prefix cache held travel
// with each event into the rollups, every report grouping, the CSV and
// the ledger check, and survive a reopen.
func TestCachedPromptTokens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	opts := billing.Options{Path: path, Now: newClock(date("2026-03-10T00:00:00Z")).Now,
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}}
	l := mustOpen(t, opts)
	acme, globex := mustTenant(t, l, "acme"), mustTenant(t, l, "globex")
	sql := func(ev nozzle.UsageEvent) nozzle.UsageEvent {
		ev.AdapterID, ev.AdapterName = "ad_sql", "sql"
		return ev
	}
	for _, ev := range []nozzle.UsageEvent{
		sql(nozzle.UsageEvent{RequestID: "a1", TenantID: acme.ID, Time: date("2026-03-04T10:05:00Z"), PromptTokens: 1000, CachedPromptTokens: 768, CompletionTokens: 50, DeviceSeconds: 1, RatePerHour: 2}),
		sql(nozzle.UsageEvent{RequestID: "a2", TenantID: acme.ID, Time: date("2026-03-04T10:40:00Z"), PromptTokens: 1000, CachedPromptTokens: 1000, CompletionTokens: 20, DeviceSeconds: 1, RatePerHour: 2}),
		{RequestID: "a3", TenantID: acme.ID, Time: date("2026-03-04T11:10:00Z"), PromptTokens: 300, CompletionTokens: 30, DeviceSeconds: 1, RatePerHour: 2},
		{RequestID: "a4", TenantID: acme.ID, Status: nozzle.UsageCanceled, Time: date("2026-03-05T09:00:00Z"), PromptTokens: 600, CachedPromptTokens: 512, CompletionTokens: 5, DeviceSeconds: 1, RatePerHour: 2},
		{RequestID: "g1", TenantID: globex.ID, Status: nozzle.UsageFailed, Time: date("2026-03-04T10:20:00Z"), PromptTokens: 200, CachedPromptTokens: 128, DeviceSeconds: 1, RatePerHour: 2},
	} {
		mustRecord(t, l, ev)
	}
	// A retry is not counted twice, whatever it says.
	retry := sql(nozzle.UsageEvent{RequestID: "a1", TenantID: acme.ID, Time: date("2026-03-04T10:05:00Z"), PromptTokens: 1000, CachedPromptTokens: 5})
	if dup, err := l.RecordUsage(ctx, &retry); err != nil || !dup || retry.CachedPromptTokens != 768 {
		t.Fatalf("retry: dup %v, err %v, event %+v", dup, err, retry)
	}
	if ev, err := l.Usage(ctx, "a4"); err != nil || ev.CachedPromptTokens != 512 || ev.PromptTokens != 600 {
		t.Fatalf("Usage(a4) = %+v, %v", ev, err)
	}

	from, to := date("2026-03-04T00:00:00Z"), date("2026-03-06T00:00:00Z")
	type want struct {
		time, tenant, adapter string
		prompt, cached        int64
	}
	check := func(t *testing.T, q nozzle.ReportQuery, rows []want, prompt, cached int64) *nozzle.Report {
		t.Helper()
		q.Start, q.End = from, to
		rep := mustReport(t, l, q)
		if len(rep.Rows) != len(rows) {
			t.Fatalf("%d rows, want %d: %+v", len(rep.Rows), len(rows), rep.Rows)
		}
		for i, w := range rows {
			r := rep.Rows[i]
			if (w.time != "" && !r.Time.Equal(date(w.time))) || r.TenantName != w.tenant || r.AdapterName != w.adapter ||
				r.PromptTokens != w.prompt || r.CachedPromptTokens != w.cached {
				t.Errorf("row %d = %+v, want %+v", i, r, w)
			}
		}
		if rep.Total.PromptTokens != prompt || rep.Total.CachedPromptTokens != cached {
			t.Errorf("total prompt %d cached %d, want %d and %d", rep.Total.PromptTokens, rep.Total.CachedPromptTokens, prompt, cached)
		}
		return rep
	}
	reports := func(t *testing.T) {
		t.Run("TenantTotal", func(t *testing.T) {
			rep := check(t, nozzle.ReportQuery{TenantID: acme.ID}, []want{{prompt: 2900, cached: 2280}}, 2900, 2280)
			b, err := json.Marshal(rep.Total)
			if err != nil || !bytes.Contains(b, []byte(`"prompt_tokens":2900,"cached_prompt_tokens":2280,`)) {
				t.Errorf("total as JSON: %s (%v)", b, err)
			}
		})
		t.Run("Hour", func(t *testing.T) {
			check(t, nozzle.ReportQuery{TenantID: acme.ID, GroupBy: []string{nozzle.GroupHour}}, []want{
				{time: "2026-03-04T10:00:00Z", prompt: 2000, cached: 1768},
				{time: "2026-03-04T11:00:00Z", prompt: 300, cached: 0},
				{time: "2026-03-05T09:00:00Z", prompt: 600, cached: 512},
			}, 2900, 2280)
		})
		t.Run("Day", func(t *testing.T) {
			check(t, nozzle.ReportQuery{TenantID: acme.ID, GroupBy: []string{nozzle.GroupDay}}, []want{
				{time: "2026-03-04T00:00:00Z", prompt: 2300, cached: 1768},
				{time: "2026-03-05T00:00:00Z", prompt: 600, cached: 512},
			}, 2900, 2280)
		})
		t.Run("Adapter", func(t *testing.T) {
			check(t, nozzle.ReportQuery{TenantID: acme.ID, GroupBy: []string{nozzle.GroupAdapter}}, []want{
				{prompt: 900, cached: 512},
				{adapter: "sql", prompt: 2000, cached: 1768},
			}, 2900, 2280)
			check(t, nozzle.ReportQuery{TenantID: acme.ID, AdapterName: "sql"}, []want{{prompt: 2000, cached: 1768}}, 2000, 1768)
			// the base model, named as requests name it
			check(t, nozzle.ReportQuery{TenantID: acme.ID, AdapterName: nozzle.BaseModelAlias}, []want{{prompt: 900, cached: 512}}, 900, 512)
		})
		t.Run("OperatorByTenant", func(t *testing.T) {
			check(t, nozzle.ReportQuery{GroupBy: []string{nozzle.GroupTenant}}, []want{
				{tenant: "acme", prompt: 2900, cached: 2280},
				{tenant: "globex", prompt: 200, cached: 128},
			}, 3100, 2408)
		})
		t.Run("OperatorByDayTenantAdapter", func(t *testing.T) {
			check(t, nozzle.ReportQuery{GroupBy: []string{nozzle.GroupDay, nozzle.GroupTenant, nozzle.GroupAdapter}}, []want{
				{time: "2026-03-04T00:00:00Z", tenant: "acme", prompt: 300, cached: 0},
				{time: "2026-03-04T00:00:00Z", tenant: "acme", adapter: "sql", prompt: 2000, cached: 1768},
				{time: "2026-03-04T00:00:00Z", tenant: "globex", prompt: 200, cached: 128},
				{time: "2026-03-05T00:00:00Z", tenant: "acme", prompt: 600, cached: 512},
			}, 3100, 2408)
		})
		t.Run("CSV", func(t *testing.T) {
			rep := mustReport(t, l, nozzle.ReportQuery{Start: from, End: to, GroupBy: []string{nozzle.GroupHour}})
			var buf bytes.Buffer
			if err := rep.WriteCSV(&buf); err != nil {
				t.Fatal(err)
			}
			recs, err := csv.NewReader(&buf).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			i := slices.Index(recs[0], "cached_prompt_tokens")
			if i < 0 || recs[0][i-1] != "prompt_tokens" || recs[0][i+1] != "completion_tokens" {
				t.Fatalf("header %v", recs[0])
			}
			var got []string
			for _, r := range recs[1:] {
				got = append(got, r[i])
			}
			if want := []string{"1896", "0", "512", "2408"}; !slices.Equal(got, want) {
				t.Errorf("cached column %v, want %v", got, want)
			}
		})
		t.Run("Check", func(t *testing.T) {
			if res := mustCheck(t, l); res.Events != 5 || len(res.Problems) > 0 {
				t.Fatalf("check: %+v", res)
			}
		})
	}
	t.Run("Recorded", reports)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, opts)
	t.Run("Reopened", reports)
}
