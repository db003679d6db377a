package gateway_test

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

// adminGet calls the admin API with the fixture's admin token.
func (f *consoleFixture) adminGet(path string) (*http.Response, string) {
	f.t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Authorization", "Bearer admin")
	resp, err := f.srv.App().Test(req, -1)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, readAll(f.t, resp)
}

// reportRowCells is how the tenant's usage page writes a report row:
// requests, prompt and completion tokens, GPU time, the share of the
// GPU's idle time (which, with the GPU time's, makes the GPU cost), GPU
// cost, per adapter the saving against a dedicated GPU (whose cost the
// cell's title tells), charged, margin.
func reportRowCells(r nozzle.ReportRow, group string) []string {
	cells := []string{gateway.FormatInt(r.Requests), gateway.FormatInt(r.PromptTokens), gateway.FormatInt(r.CompletionTokens),
		gateway.FormatSeconds(r.DeviceSeconds), gateway.FormatUSD(r.IdleCostUSD), gateway.FormatUSD(r.CostUSD)}
	if group == nozzle.GroupAdapter {
		// per adapter, against a dedicated GPU for each
		cells = append(cells, savingCell(r))
	}
	return append(cells, gateway.FormatUSD(r.ChargedUSD), gateway.FormatUSD(r.MarginUSD))
}

var (
	tableCells   = regexp.MustCompile(`<td(?: title="[^"]*")?>([^<]*)</td>`)
	outcomesLine = regexp.MustCompile(`<p class="stat-sub" data-testid="request-outcomes">([^<]*)</p>`)
	csvHref      = regexp.MustCompile(`href="([^"]*)" download="[^"]*" id="tenant-csv-link"`)
)

// pageRows returns a table's body rows of a page, keyed by attr's value
// (data-adapter, data-day), each as its cells, and its total row.
func pageRows(t *testing.T, body, table, attr, total string) (map[string][]string, []string) {
	t.Helper()
	m := regexp.MustCompile(`(?s)<table class="data num" id="` + table + `">(.*?)</table>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no table %s:\n%s", table, body)
	}
	rows := map[string][]string{}
	for _, r := range regexp.MustCompile(`<tr `+attr+`="([^"]*)">(.*?)</tr>`).FindAllStringSubmatch(m[1], -1) {
		for _, c := range tableCells.FindAllStringSubmatch(r[2], -1) {
			rows[r[1]] = append(rows[r[1]], html.UnescapeString(c[1]))
		}
	}
	tot := regexp.MustCompile(`<tr data-testid="` + total + `">(.*?)</tr>`).FindStringSubmatch(m[1])
	if tot == nil {
		t.Fatalf("no total row in %s", table)
	}
	var cells []string
	for _, c := range tableCells.FindAllStringSubmatch(tot[1], -1) {
		cells = append(cells, html.UnescapeString(c[1]))
	}
	return rows, cells
}

// TestConsole_TenantUsage: the operator's page of a tenant's usage by
// adapter and by day over a period shows the operator's report for that
// tenant, as GET /admin/report?tenant_id=…&group_by=adapter (and =day)
// gives it, row for row and in total; its CSV link gives what the admin
// API's CSV gives; a period without usage says so.
func TestConsole_TenantUsage(t *testing.T) {
	now := time.Now().UTC()
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.Clock = func() time.Time { return now } })
	tenant, _ := f.tenantUser("acme")
	f.tenantUser("bolt")
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	ids := map[string]string{}
	f.w.mu.Lock()
	for id, tn := range f.w.tenants {
		ids[tn.Name] = id
	}
	n := 0
	event := func(tenant, adapterID, adapter string, at time.Time) {
		n++
		f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: fmt.Sprint("tu-", n), TenantID: ids[tenant], AdapterID: adapterID, AdapterName: adapter,
			Time: at, Status: nozzle.UsageOK, PromptTokens: 150 * int64(n), CompletionTokens: 20 + int64(n), DeviceSeconds: 1.5 * float64(n), RatePerHour: 2, ChargeUSD: 0.0125 * float64(n)})
	}
	for i := range 3 {
		event("acme", "ad_chat", "chat", month.Add(time.Duration(1+i)*time.Hour))
	}
	for i := range 2 {
		event("acme", "ad_chat", "chat", month.Add(time.Duration(25+i)*time.Hour))
		event("acme", "", "", month.Add(time.Duration(30+i)*time.Hour)) // the base model
		event("acme", "ad_sql", "sql", month.Add(time.Duration(49+i)*time.Hour))
	}
	for i := range 4 {
		event("acme", "ad_chat", "chat", month.AddDate(0, -1, 3).Add(time.Duration(i)*time.Hour)) // last month
		event("bolt", "ad_bolt", "bolt-chat", month.Add(time.Duration(2+i)*time.Hour))            // another tenant
	}
	// Some requests did not end with their answer: the page counts them
	// under the requests (bolt's canceled one is not acme's).
	f.w.events[0].Status, f.w.events[1].Status = nozzle.UsageFailed, nozzle.UsageCanceled
	f.w.events[3].Status, f.w.events[4].Status = nozzle.UsageInterrupted, nozzle.UsageCanceled
	f.w.events[10].Status = nozzle.UsageCanceled
	f.w.mu.Unlock()
	acme := ids["acme"]
	op := f.operator()
	page := "/console/operator/tenants/" + acme + "/usage"

	_, tp := op.page("/console/operator/tenants/" + acme)
	if !strings.Contains(tp, `<a href="`+page+`" id="tenant-usage-link">`) {
		t.Errorf("the tenant's page has no link to its usage:\n%s", tp)
	}

	for _, tc := range []struct {
		name, query string
		start, end  time.Time
		requests    int64
		days        int
		outcomes    string
	}{
		{"ThisMonth", "", month, month.AddDate(0, 1, 0), 9, 3, "1 failed, not charged · 2 canceled, charged for what they produced · 1 interrupted by a restart"},
		{"LastMonth", "?period=last_month", month.AddDate(0, -1, 0), month, 4, 1, ""},
		{"Custom", "?period=custom&start=" + month.Format("2006-01-02") + "&end=" + month.Format("2006-01-02"), month, month.AddDate(0, 0, 1), 3, 1,
			"1 failed, not charged · 1 canceled, charged for what they produced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := op.page(page + tc.query)
			wantConsoleStatus(t, resp, http.StatusOK, body)
			q := url.Values{"tenant_id": {acme}, "start": {tc.start.Format(time.RFC3339)}, "end": {tc.end.Format(time.RFC3339)}}
			var byAdapter nozzle.ReportRow // the report's total by adapter
			var adapters int               // and its rows
			for _, g := range []struct{ group, table, attr, total string }{
				{nozzle.GroupAdapter, "tenant-adapter-table", "data-adapter", "tenant-adapter-total"},
				{nozzle.GroupDay, "tenant-day-table", "data-day", "tenant-day-total"},
			} {
				q.Set("group_by", g.group)
				resp, api := f.adminGet("/admin/report?" + q.Encode())
				wantConsoleStatus(t, resp, http.StatusOK, api)
				var rep struct {
					Data  []nozzle.ReportRow `json:"data"`
					Total nozzle.ReportRow   `json:"total"`
				}
				if err := json.Unmarshal([]byte(api), &rep); err != nil {
					t.Fatal(err)
				}
				if rep.Total.Requests != tc.requests {
					t.Fatalf("the report API's total: %d requests, want %d", rep.Total.Requests, tc.requests)
				}
				if g.group == nozzle.GroupAdapter {
					byAdapter, adapters = rep.Total, len(rep.Data)
				}
				rows, total := pageRows(t, body, g.table, g.attr, g.total)
				if want := reportRowCells(rep.Total, g.group); strings.Join(total, "|") != strings.Join(want, "|") {
					t.Errorf("per %s: total %q, the report API's %q", g.group, total, want)
				}
				if len(rows) != len(rep.Data) {
					t.Errorf("per %s: %d rows, the report API has %d", g.group, len(rows), len(rep.Data))
				}
				if g.group == nozzle.GroupDay && len(rows) != tc.days {
					t.Errorf("%d days, want %d", len(rows), tc.days)
				}
				for _, r := range rep.Data {
					key := r.AdapterName
					if g.group == nozzle.GroupDay {
						key = r.Time.Format("2006-01-02")
					}
					if got, want := strings.Join(rows[key], "|"), strings.Join(reportRowCells(r, g.group), "|"); got != want {
						t.Errorf("per %s, %s: %q, the report API's %q", g.group, key, got, want)
					}
				}
			}
			// The headline's saving against a dedicated GPU per adapter
			// is the report's.
			if byAdapter.DedicatedUSD <= 0 {
				t.Fatalf("the report by adapter compares with no dedicated GPU: %+v", byAdapter)
			}
			for _, want := range []string{`data-testid="tenant-saving">` + savingCell(byAdapter) + `<`,
				`<td title="Dedicated GPUs: ` + gateway.FormatUSD(byAdapter.DedicatedUSD) + `">` + savingCell(byAdapter) + `</td>`} {
				if !strings.Contains(body, want) {
					t.Errorf("no %q on the page", want)
				}
			}
			if got := outcomesLine.FindStringSubmatch(body); tc.outcomes == "" && got != nil || tc.outcomes != "" && (got == nil || got[1] != tc.outcomes) {
				t.Errorf("the line under the requests: %q, want %q", got, tc.outcomes)
			}
			// The tenant's own usage page says the same.
			resp, own := tenant.page("/console/usage" + tc.query)
			wantConsoleStatus(t, resp, http.StatusOK, own)
			if got, want := outcomesLine.FindString(own), outcomesLine.FindString(body); got != want {
				t.Errorf("the tenant's line under its requests: %q, the operator's %q", got, want)
			}
			// Its table per adapter ends with a total line, as the
			// operator's tables do: requests, tokens, GPU share,
			// dedicated GPU, saving, charged.
			ownRows, ownTotal := pageRows(t, own, "usage-adapter-table", "data-adapter", "usage-adapter-total")
			if want := []string{gateway.FormatInt(byAdapter.Requests), gateway.FormatInt(byAdapter.PromptTokens + byAdapter.CompletionTokens),
				gateway.FormatUSD(byAdapter.CostUSD), gateway.FormatUSD(byAdapter.DedicatedUSD), gateway.FormatPercent(byAdapter.SavingPercent),
				gateway.FormatUSD(byAdapter.ChargedUSD)}; strings.Join(ownTotal, "|") != strings.Join(want, "|") {
				t.Errorf("the tenant's total per adapter %q, the report's %q", ownTotal, want)
			}
			if len(ownRows) != adapters {
				t.Errorf("the tenant's rows per adapter: %q, want %d", ownRows, adapters)
			}
			if strings.Contains(body, "bolt-chat") {
				t.Error("another tenant's usage is on the page")
			}
			// The CSV link: the admin report's CSV, by adapter and day.
			m := csvHref.FindStringSubmatch(body)
			if m == nil {
				t.Fatalf("no CSV link:\n%s", body)
			}
			link := html.UnescapeString(m[1])
			resp = op.do(http.MethodGet, link, nil)
			csv := readAll(t, resp)
			wantConsoleStatus(t, resp, http.StatusOK, csv)
			q.Set("group_by", "adapter,day")
			q.Set("format", "csv")
			resp, want := f.adminGet("/admin/report?" + q.Encode())
			wantConsoleStatus(t, resp, http.StatusOK, want)
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") || csv != want || !strings.Contains(csv, "\ntotal,") {
				t.Errorf("the page's CSV (%s):\n%s\nthe admin API's:\n%s", link, csv, want)
			}
		})
	}
	t.Run("Empty", func(t *testing.T) {
		resp, body := op.page(page + "?period=custom&start=2020-01-01&end=2020-01-31")
		wantConsoleStatus(t, resp, http.StatusOK, body)
		if !strings.Contains(body, `<strong>No usage by acme in this period.</strong>`) || strings.Contains(body, `id="tenant-adapter-table"`) ||
			strings.Contains(body, `id="tenant-day-table"`) || !strings.Contains(body, "1 Jan 2020 – 31 Jan 2020") {
			t.Errorf("an empty period:\n%s", body)
		}
	})
	t.Run("BadPeriod", func(t *testing.T) {
		resp, body := op.page(page + "?period=custom&start=2020-02-01&end=2020-01-01")
		wantConsoleStatus(t, resp, http.StatusOK, body)
		for _, w := range []string{"The end date must not be before the start date. Showing this month meanwhile.", `value="2020-02-01"`, `value="2020-01-01"`,
			`<option value="custom" selected>`, `id="tenant-adapter-table"`} {
			if !strings.Contains(body, w) {
				t.Errorf("no %q", w)
			}
		}
	})
	t.Run("NoSuchTenant", func(t *testing.T) {
		resp, body := op.page("/console/operator/tenants/nope/usage")
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
	})
	t.Run("TenantUser", func(t *testing.T) {
		b, _ := f.tenantUser("cult")
		resp := b.do(http.MethodGet, page, nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/overview" {
			t.Errorf("a tenant's user on the operator's page: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		resp, body := b.api(http.MethodGet, "/console/api/operator/report?tenant_id="+acme+"&format=csv", "")
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
	})
}
