package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

var chartJSON = regexp.MustCompile(`(?s)<script type="application/json">(.*?)</script>`)

// gpuRow is a row of the GPU page's table of the charts' figures.
var gpuRow = regexp.MustCompile(`<tr data-bucket="(\d+)"><th scope="row">[^<]*</th><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>`)

type pageChart struct {
	Title  string  `json:"title"`
	Step   string  `json:"step"`
	X      []int64 `json:"x"`
	Series []struct {
		Label  string    `json:"label"`
		Values []float64 `json:"values"`
	} `json:"series"`
}

// TestConsole_GPUCharts: the GPU page draws utilisation and active and idle
// time from one report, with the figures a report over each hour (or day,
// for periods over a week) gives, up to the current hour.
func TestConsole_GPUCharts(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Hour).Add(40 * time.Minute)
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.Clock = func() time.Time { return now } })
	f.tenantUser("acme")
	f.tenantUser("bolt")
	f.w.mu.Lock()
	f.w.started = now.Add(-50 * 24 * time.Hour).Add(17 * time.Minute)
	var ids []string
	for id := range f.w.tenants {
		ids = append(ids, id)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 600 {
		// Requests over the last 60 days, a few in the current hour.
		at := now.Add(-time.Duration(rng.Int64N(int64(60 * 24 * time.Hour))))
		if i < 5 {
			at = now.Add(-time.Duration(rng.IntN(40*60)) * time.Second)
		}
		f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: fmt.Sprint("gpu-", i), TenantID: ids[i%len(ids)], Time: at,
			Status: nozzle.UsageOK, PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 200 * rng.Float64(), RatePerHour: 2, ChargeUSD: 0.001})
	}
	f.w.mu.Unlock()
	op := f.operator()
	today := now.Truncate(24 * time.Hour)
	for _, tc := range []struct {
		path  string
		step  string
		first time.Time
		n     int
	}{
		{"/console/operator/gpu", nozzle.GroupHour, today.AddDate(0, 0, -6), 6*24 + now.Hour() + 1},
		{"/console/operator/gpu?period=today", nozzle.GroupHour, today, now.Hour() + 1},
		{"/console/operator/gpu?period=30d", nozzle.GroupDay, today.AddDate(0, 0, -29), 30},
		{"/console/operator/gpu?period=custom&start=" + today.AddDate(0, 0, -89).Format("2006-01-02") + "&end=" + today.AddDate(0, 0, 5).Format("2006-01-02"),
			nozzle.GroupDay, today.AddDate(0, 0, -89), 90},
	} {
		t.Run(tc.path, func(t *testing.T) {
			f.w.mu.Lock()
			before := f.w.reports
			f.w.mu.Unlock()
			resp, body := op.page(tc.path)
			wantConsoleStatus(t, resp, 200, body)
			f.w.mu.Lock()
			calls := f.w.reports - before
			f.w.mu.Unlock()
			if calls != 1 {
				t.Errorf("the page asked for %d reports, want 1", calls)
			}
			charts := map[string]pageChart{}
			for _, m := range chartJSON.FindAllStringSubmatch(body, -1) {
				var c pageChart
				if err := json.Unmarshal([]byte(m[1]), &c); err != nil {
					t.Fatalf("chart %s: %v", m[1], err)
				}
				charts[c.Title] = c
			}
			util, secs := charts["GPU utilisation"], charts["Active and idle time"]
			// The same figures in a table, for those who do not see the
			// charts.
			rows := gpuRow.FindAllStringSubmatch(body, -1)
			if len(rows) != tc.n {
				t.Fatalf("%d rows in the table of the charts' figures, want %d", len(rows), tc.n)
			}
			if len(util.X) != tc.n || len(secs.X) != tc.n || util.Step != tc.step || secs.Step != tc.step ||
				len(util.Series) != 1 || len(secs.Series) != 2 || secs.Series[0].Label != "Active" || secs.Series[1].Label != "Idle" {
				t.Fatalf("charts: %+v", charts)
			}
			var busy int
			for i, x := range util.X {
				start := tc.first.Add(time.Duration(i) * time.Hour)
				end := start.Add(time.Hour)
				if tc.step == nozzle.GroupDay {
					start = tc.first.AddDate(0, 0, i)
					end = start.AddDate(0, 0, 1)
				}
				if x != start.Unix() || secs.X[i] != x {
					t.Fatalf("bucket %d at %v, want %v", i, time.Unix(x, 0).UTC(), start)
				}
				// The figures of a report over the bucket alone.
				r, err := f.deps.Reporter.Report(t.Context(), nozzle.ReportQuery{Start: start, End: end})
				if err != nil {
					t.Fatal(err)
				}
				if row := rows[i]; row[1] != fmt.Sprint(x) || row[2] != fmt.Sprintf("%.1f%%", r.GPU.Utilization*100) ||
					row[3] != gateway.FormatSeconds(r.GPU.ActiveSeconds) || row[4] != gateway.FormatSeconds(r.GPU.IdleSeconds) || row[5] != gateway.FormatSeconds(r.GPU.UptimeSeconds) {
					t.Errorf("table row %q, a report over %v gives %+v", row[1:], start, r.GPU.GPUFigures)
				}
				for _, v := range []struct {
					name      string
					got, want float64
				}{
					{"utilisation", util.Series[0].Values[i], r.GPU.Utilization * 100},
					{"active", secs.Series[0].Values[i], r.GPU.ActiveSeconds},
					{"idle", secs.Series[1].Values[i], r.GPU.IdleSeconds},
				} {
					if math.Abs(v.got-v.want) > 1e-9 {
						t.Errorf("%v: %s %v, a report over it gives %v", start, v.name, v.got, v.want)
					}
				}
				if r.GPU.ActiveSeconds > 0 {
					busy++
				}
			}
			if busy == 0 {
				t.Fatal("no bucket with active time")
			}
		})
	}
}

// TestConsole_TenantsTotal: the operator's list of tenants ends with the
// month's total over all of them, the figures of the operator's report:
// what the rows add up to.
func TestConsole_TenantsTotal(t *testing.T) {
	f := newConsoleFixture(t)
	f.tenantUser("acme")
	f.tenantUser("bolt")
	f.tenantUser("idle") // no usage: a row of zeros
	f.w.mu.Lock()
	i := 0
	for id, tn := range f.w.tenants {
		if tn.Name == "idle" {
			continue
		}
		for range 2 + i {
			i++
			f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: fmt.Sprint("total-", i), TenantID: id, Time: time.Now(), Status: nozzle.UsageOK,
				PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 3, RatePerHour: 2, ChargeUSD: 0.25 * float64(i)})
		}
	}
	f.w.mu.Unlock()
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	rep, err := f.deps.Reporter.Report(t.Context(), nozzle.ReportQuery{Start: month, End: month.AddDate(0, 1, 0), GroupBy: []string{nozzle.GroupTenant}})
	if err != nil {
		t.Fatal(err)
	}
	op := f.operator()
	resp, body := op.page("/console/operator")
	wantConsoleStatus(t, resp, 200, body)
	row := regexp.MustCompile(`(?s)<tr data-testid="tenants-total">(.*?)</tr>`).FindStringSubmatch(body)
	if row == nil {
		t.Fatalf("no total row:\n%s", body)
	}
	cells := regexp.MustCompile(`<td class="n">([^<]*)</td>`).FindAllStringSubmatch(row[1], -1)
	if len(cells) != 3 {
		t.Fatalf("total row %q", row[1])
	}
	want := []string{fmt.Sprint(rep.Total.Requests), gateway.FormatUSD(rep.Total.CostUSD), gateway.FormatUSD(rep.Total.ChargedUSD)}
	if rep.Total.Requests != int64(i) || rep.Total.ChargedUSD == 0 || rep.Total.DedicatedUSD == 0 {
		t.Fatalf("report total %+v", rep.Total)
	}
	for k, c := range cells {
		if c[1] != want[k] {
			t.Errorf("total cell %d: %q, want %q", k, c[1], want[k])
		}
	}
	// A tenant's page tells its saving against a dedicated GPU per adapter
	// beside its month's GPU cost.
	for _, r := range rep.Rows {
		resp, page := op.page("/console/operator/tenants/" + r.TenantID)
		wantConsoleStatus(t, resp, 200, page)
		if want := gateway.FormatUSD(r.CostUSD) + " GPU cost (saving " + savingCell(r) + " against a dedicated GPU per adapter)"; !strings.Contains(page, want) {
			t.Errorf("%s's page lacks %q", r.TenantName, want)
		}
	}
}

// savingCell is how the console writes a row's saving against a dedicated
// GPU per adapter: a dash where there is nothing to compare with.
func savingCell(r nozzle.ReportRow) string {
	if r.DedicatedUSD <= 0 {
		return "—"
	}
	return gateway.FormatPercent(r.SavingPercent)
}

// outcomesCell is a table row's cell of its requests that did not end
// with their answer.
var outcomesCell = regexp.MustCompile(`<td class="outcomes">(.*?)</td>`)

// rowOutcomes returns the outcomes cell of each row of a table keyed by
// data-tenant, and of its total row (the first row of the table's foot).
func rowOutcomes(t *testing.T, body, table string) (map[string]string, string) {
	t.Helper()
	m := regexp.MustCompile(`(?s)<table class="[^"]*" id="` + table + `">(.*?)</table>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no table %s:\n%s", table, body)
	}
	rows := map[string]string{}
	for _, r := range regexp.MustCompile(`(?s)<tr data-tenant="([^"]*)">(.*?)</tr>`).FindAllStringSubmatch(m[1], -1) {
		c := outcomesCell.FindStringSubmatch(r[2])
		if c == nil {
			t.Fatalf("%s: no outcomes cell in %s's row %q", table, r[1], r[2])
		}
		rows[r[1]] = c[1]
	}
	foot := regexp.MustCompile(`(?s)<tfoot><tr[^>]*>(.*?)</tr>`).FindStringSubmatch(m[1])
	if foot == nil {
		t.Fatalf("%s: no total row", table)
	}
	c := outcomesCell.FindStringSubmatch(foot[1])
	if c == nil {
		t.Fatalf("%s: no outcomes cell in the total row %q", table, foot[1])
	}
	return rows, c[1]
}

// TestConsole_OperatorOutcomes: the operator's tenants table and the GPU
// page's cost split say, per tenant and in total, how many requests
// failed, were canceled or were interrupted by a restart, in the words of
// the tenant's usage page (ReportRow.Outcomes); a tenant whose requests
// all ended with their answer shows none.
func TestConsole_OperatorOutcomes(t *testing.T) {
	now := time.Now().UTC()
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.Clock = func() time.Time { return now } })
	f.tenantUser("acme")
	f.tenantUser("bolt")
	f.tenantUser("calm") // every request answered in full
	f.w.mu.Lock()
	ids := map[string]string{}
	for id, tn := range f.w.tenants {
		ids[tn.Name] = id
	}
	statuses := map[string][]string{
		"acme": {nozzle.UsageOK, nozzle.UsageFailed, nozzle.UsageCanceled, nozzle.UsageCanceled, nozzle.UsageInterrupted},
		"bolt": {nozzle.UsageOK, nozzle.UsageCanceled},
		"calm": {nozzle.UsageOK, nozzle.UsageOK},
	}
	for name, ss := range statuses {
		for i, st := range ss {
			f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: fmt.Sprint(name, "-", i), TenantID: ids[name], Time: now.Add(-time.Minute),
				Status: st, PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 3, RatePerHour: 2, ChargeUSD: 0.01})
		}
	}
	f.w.mu.Unlock()
	want := map[string]string{
		"acme": "1 failed, not charged · 2 canceled, charged for what they produced · 1 interrupted by a restart",
		"bolt": "1 canceled, charged for what they produced",
		"calm": `<span class="muted">none</span>`,
	}
	const wantTotal = "1 failed, not charged · 3 canceled, charged for what they produced · 1 interrupted by a restart"
	op := f.operator()
	for _, tc := range []struct{ path, table string }{
		{"/console/operator", "tenants-table"},
		{"/console/operator/gpu?period=today", "split-table"},
	} {
		t.Run(tc.table, func(t *testing.T) {
			resp, body := op.page(tc.path)
			wantConsoleStatus(t, resp, http.StatusOK, body)
			rows, total := rowOutcomes(t, body, tc.table)
			for name, w := range want {
				if got, ok := rows[name]; !ok || got != w {
					t.Errorf("%s's outcomes: %q, want %q", name, got, w)
				}
			}
			if total != wantTotal {
				t.Errorf("the total's outcomes: %q, want %q", total, wantTotal)
			}
		})
	}
	// The same figures as the operator's report API gives them.
	resp, body := f.adminGet("/admin/report?group_by=tenant")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	var rep struct {
		Data []struct {
			Tenant      string `json:"tenant"`
			Failed      int64  `json:"failed_requests"`
			Canceled    int64  `json:"canceled_requests"`
			Interrupted int64  `json:"interrupted_requests"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	got := map[string][3]int64{}
	for _, r := range rep.Data {
		got[r.Tenant] = [3]int64{r.Failed, r.Canceled, r.Interrupted}
	}
	if got["acme"] != [3]int64{1, 2, 1} || got["bolt"] != [3]int64{0, 1, 0} || got["calm"] != [3]int64{} {
		t.Errorf("the report API's counts: %v", got)
	}
}

// TestConsole_DisableUser: the operator disables a person who left a
// tenant: signed out at once, refused at sign-in and on links sent to
// them; enabled again, they sign in anew, and no session from before
// comes back.
func TestConsole_DisableUser(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	op := f.operator()
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	stale := *b // the same session, kept for after the user is enabled again
	stale.cookies = maps.Clone(b.cookies)
	path := "/console/api/operator/users/" + u.ID
	_, page := op.page("/console/operator/tenants/" + u.TenantID)
	if !regexp.MustCompile(`(?s)<li data-user="dev@acme.test">.*?data-confirm="Disable dev@acme.test\? .*?data-url="` + path + `" data-body='\{"disabled":true\}'`).MatchString(page) {
		t.Errorf("no Disable button with a confirmation:\n%s", page)
	}
	if !regexp.MustCompile(`<tr data-key="[^"]+"><th scope="row">default</th>`).MatchString(page) { // the tenant's keys, each row named by its key
		t.Errorf("the tenant's keys have no row headers:\n%s", page)
	}

	resp, body := op.api(http.MethodPatch, path, `{"disabled": true}`)
	wantConsoleStatus(t, resp, 200, body)
	resp, body = b.page("/console/overview")
	wantConsoleStatus(t, resp, http.StatusForbidden, body)
	if !strings.Contains(body, "This account is disabled") {
		t.Errorf("a disabled user's page:\n%s", body)
	}
	resp, body = b.api(http.MethodGet, "/console/api/keys", "")
	wantConsoleStatus(t, resp, http.StatusForbidden, body)
	resp, body = f.browser().login("dev@acme.test", "tenant-password-1")
	wantConsoleStatus(t, resp, http.StatusUnauthorized, body)
	resp, body = op.api(http.MethodPost, path+"/invite", "")
	wantConsoleStatus(t, resp, http.StatusConflict, body)
	_, page = op.page("/console/operator/tenants/" + u.TenantID)
	if !strings.Contains(page, `<span class="badge badge-warn">disabled</span>`) || !strings.Contains(page, `data-body='{"disabled":false}'>Enable</button>`) {
		t.Errorf("the tenant's page does not show the user disabled:\n%s", page)
	}

	resp, body = op.api(http.MethodPatch, path, `{"disabled": false}`)
	wantConsoleStatus(t, resp, 200, body)
	resp = stale.do(http.MethodGet, "/console/overview", nil)
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login?") {
		t.Errorf("a session from before the user was disabled: %d %q", resp.StatusCode, loc)
	}
	again := f.browser()
	resp, body = again.login("dev@acme.test", "tenant-password-1")
	wantConsoleStatus(t, resp, http.StatusSeeOther, body)
	if resp, body := again.page("/console/overview"); resp.StatusCode != 200 {
		t.Errorf("signed in again: %d %s", resp.StatusCode, body)
	}

	t.Run("PendingInvite", func(t *testing.T) {
		// a link sent before the person was disabled no longer works
		resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+u.TenantID+"/users", `{"email": "new@acme.test"}`)
		wantConsoleStatus(t, resp, http.StatusCreated, body)
		link := regexp.MustCompile(`/console/invite/[A-Za-z0-9_-]+`).FindString(body)
		nu, _ := f.deps.Users.UserByEmail(t.Context(), "new@acme.test")
		resp, body = op.api(http.MethodPatch, "/console/api/operator/users/"+nu.ID, `{"disabled": true}`)
		wantConsoleStatus(t, resp, 200, body)
		if resp, body := f.browser().page(link); resp.StatusCode != http.StatusNotFound {
			t.Errorf("a disabled user's invite: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		opUser, _ := f.deps.Users.UserByEmail(t.Context(), opEmail)
		resp, body := op.api(http.MethodPatch, "/console/api/operator/users/"+opUser.ID, `{"disabled": true}`)
		wantConsoleStatus(t, resp, http.StatusBadRequest, body)
		resp, body = op.api(http.MethodPatch, path, `{}`)
		wantConsoleStatus(t, resp, http.StatusBadRequest, body)
		resp, body = op.api(http.MethodPatch, "/console/api/operator/users/nope", `{"disabled": true}`)
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
		resp, body = again.api(http.MethodPatch, path, `{"disabled": true}`) // a tenant's user is no operator
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
	})
}

// TestConsole_TenantsUserCounts: the tenants page shows each tenant's
// number of people, reading the page's tenants' users only (never every
// user of every tenant).
func TestConsole_TenantsUserCounts(t *testing.T) {
	f := newConsoleFixture(t)
	want := map[string]int{"acme": 3, "bolt": 1, "idle": 0}
	op := f.operator()
	for _, name := range []string{"acme", "bolt"} {
		f.tenantUser(name)
	}
	resp, body := op.api(http.MethodPost, "/console/api/operator/tenants", `{"name": "idle"}`)
	wantConsoleStatus(t, resp, http.StatusCreated, body)
	acme, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+acme.TenantID+"/users", fmt.Sprintf(`{"email": "more%d@acme.test", "password": "tenant-password-1"}`, i))
		wantConsoleStatus(t, resp, http.StatusCreated, body)
	}
	users := f.deps.Users.(*mock.UserService)
	all := users.UsersFn
	var asked []string
	users.UsersFn = func(ctx context.Context, tenantID string) ([]*nozzle.User, error) {
		asked = append(asked, tenantID)
		return all(ctx, tenantID)
	}
	defer func() { users.UsersFn = all }()
	resp, body = op.page("/console/operator")
	wantConsoleStatus(t, resp, 200, body)
	for name, n := range want {
		row := regexp.MustCompile(`(?s)<tr data-tenant="` + name + `">.*?<td>(\d+)</td>`).FindStringSubmatch(body)
		if row == nil || row[1] != fmt.Sprint(n) {
			t.Errorf("tenant %s: people %v, want %d", name, row, n)
		}
	}
	if len(asked) != len(want) || slices.Contains(asked, "") {
		t.Errorf("the page asked for the users of %q, want its %d tenants' only", asked, len(want))
	}
}
