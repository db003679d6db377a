package gateway

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// page is what every console template gets.
type page struct {
	Title   string
	Nav     string // the active navigation item
	User    *nozzle.User
	Tenant  *nozzle.Tenant
	CSRF    string // the session's CSRF token, or the sign-in form's
	BaseURL string // where the API is reached, without /v1
	Data    any
	// Batches: the gateway keeps files and batches (the Batch API), so
	// the tenant's navigation offers its Batches page.
	Batches bool
}

// contentSecurityPolicy allows the console's own files only: no inline
// script, no inline style sheet, no other origin.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (cs *console) baseURL(c *fiber.Ctx) string {
	if cs.cfg.PublicURL != "" {
		return cs.cfg.PublicURL
	}
	return c.BaseURL()
}

// render writes a page. sess is nil on the sign-in and invite pages,
// whose CSRF token is the double-submit form token.
func (cs *console) render(c *fiber.Ctx, status int, name string, sess *consoleSession, data any) error {
	t := cs.pages[name]
	if t == nil {
		return fmt.Errorf("console: no page %q", name)
	}
	p := page{Nav: name, BaseURL: cs.baseURL(c), Data: data, Batches: cs.s.storesBatches()}
	if sess != nil {
		p.User, p.Tenant, p.CSRF = sess.user, sess.tenant, sess.csrf
	} else {
		p.CSRF = cs.formToken(c)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, p); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	c.Set("Content-Security-Policy", contentSecurityPolicy)
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(buf.Bytes())
}

type errorView struct {
	Status  int
	Heading string
	Message string
	SignIn  bool
	// Stuck: every page would answer the same (a suspended tenant), so
	// the page offers to sign out, not to go back to the console.
	Stuck bool
	// RequestID names the request of a server error, for the user to
	// quote: the log has what went wrong under it.
	RequestID string
}

// renderError shows an error as a page: the same message the API would
// give, never internal details.
func (cs *console) renderError(c *fiber.Ctx, err error) error {
	e := toAppError(err)
	kind, ok := errorKinds[e.Code]
	if !ok {
		kind = errorKinds[nozzle.EINTERNAL]
	}
	if e.Code == nozzle.EINTERNAL {
		cs.s.log.LogAttrs(c.UserContext(), slog.LevelError, "internal error",
			slog.String("request_id", requestID(c)), slog.String("path", c.Path()), slog.String("error", err.Error()))
	}
	v := errorView{Status: kind.status, Message: nozzle.ErrorMessage(e), SignIn: e.Code == nozzle.EUNAUTHORIZED, Stuck: e.Reason == "tenant_suspended"}
	if kind.status >= 500 {
		v.RequestID = requestID(c)
	}
	switch e.Code {
	case nozzle.ENOTFOUND:
		v.Heading = "Not found"
	case nozzle.EFORBIDDEN:
		v.Heading = "Not allowed"
	case nozzle.EUNAUTHORIZED:
		v.Heading = "Please sign in"
	case nozzle.EINTERNAL, nozzle.EUNAVAILABLE:
		v.Heading = "Something went wrong"
	default:
		v.Heading = "That did not work"
	}
	return cs.render(c, kind.status, "error", sessionFrom(c), v)
}

// page renders a page of the signed-in user.
func (cs *console) page(c *fiber.Ctx, name string, data any) error {
	return cs.render(c, fiber.StatusOK, name, sessionFrom(c), data)
}

// pageHandler turns a page's errors into error pages.
func (cs *console) pageHandler(h func(c *fiber.Ctx, sess *consoleSession) error) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if err := h(c, sessionFrom(c)); err != nil {
			return cs.renderError(c, err)
		}
		return nil
	}
}

func (cs *console) funcs() template.FuncMap {
	return template.FuncMap{
		"asset":     func(name string) string { return cs.assets.url(name) },
		"usd":       formatUSD,
		"num":       formatInt,
		"pct":       nozzle.FormatPercent,
		"ratio":     func(v float64) string { return strconv.FormatFloat(v*100, 'f', 1, 64) + "%" },
		"bytes":     formatBytes,
		"date":      func(t time.Time) string { return t.UTC().Format("2 Jan 2006") },
		"datetime":  func(t time.Time) string { return t.UTC().Format("2 Jan 2006 15:04 UTC") },
		"unixtime":  func(u int64) string { return time.Unix(u, 0).UTC().Format("2 Jan 2006 15:04 UTC") },
		"ago":       func(t time.Time) string { return ago(t, cs.cfg.Clock()) },
		"seconds":   nozzle.FormatSeconds,
		"outcomes":  requestOutcomes,
		"tierLabel": tierLabel,
		"join":      strings.Join,
		"scopes": func(s []nozzle.Scope) string {
			out := make([]string, len(s))
			for i, x := range s {
				out[i] = string(x)
			}
			return strings.Join(out, ", ")
		},
		"add":   func(a, b int64) int64 { return a + b },
		"neg":   func(v float64) float64 { return -v },
		"int64": func(v int) int64 { return int64(v) },
		"deref": func(p *int64) int64 { return *p },
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, fmt.Errorf("dict: odd number of arguments")
			}
			m := map[string]any{}
			for i := 0; i < len(kv); i += 2 {
				k, ok := kv[i].(string)
				if !ok {
					return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
				}
				m[k] = kv[i+1]
			}
			return m, nil
		},
	}
}

// requestOutcomes says how many of a report row's requests ended without
// their full answer, for the line under a page's count of requests
// (ReportRow.Outcomes).
func requestOutcomes(r nozzle.ReportRow) string { return r.Outcomes(formatInt) }

// formatUSD is how the console shows an amount: nozzle.FormatUSD's, with
// a typographic minus (−$0.25).
func formatUSD(v float64) string {
	s := nozzle.FormatUSD(v)
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		return "−" + rest
	}
	return s
}

func formatInt(v int64) string {
	if v < 0 {
		return "−" + nozzle.GroupDigits(strconv.FormatInt(-v, 10))
	}
	return nozzle.GroupDigits(strconv.FormatInt(v, 10))
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return pluralize(int(d.Minutes()), "minute") + " ago"
	case d < 48*time.Hour:
		return pluralize(int(d.Hours()), "hour") + " ago"
	}
	return t.UTC().Format("2 Jan 2006")
}

func pluralize(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func tierLabel(t nozzle.Tier) string {
	switch t {
	case nozzle.TierDevice:
		return "On the GPU"
	case nozzle.TierHost:
		return "In memory"
	case nozzle.TierDisk:
		return "On disk"
	}
	return "Unknown"
}

// chart is one chart's data, read by console.js from a JSON script
// element and drawn with uPlot.
type chart struct {
	Title   string        `json:"title"`
	Unit    string        `json:"unit"` // tokens, usd, percent, seconds, count
	Kind    string        `json:"kind"` // bars or line
	Stacked bool          `json:"stacked"`
	Step    string        `json:"step"` // day or hour: the x axis
	X       []int64       `json:"x"`    // unix seconds
	Series  []chartSeries `json:"series"`
	// Table says where a screen reader finds the same figures in a table
	// (the chart is a picture to it): "the table below" when empty.
	Table string `json:"-"`
}

type chartSeries struct {
	Label  string    `json:"label"`
	Values []float64 `json:"values"`
}

// buckets returns the starts of the days or hours of [from, to).
func buckets(from, to time.Time, step string) []time.Time {
	var out []time.Time
	for t := from; t.Before(to) && len(out) < 24*400; {
		out = append(out, t)
		if step == nozzle.GroupHour {
			t = t.Add(time.Hour)
		} else {
			t = t.AddDate(0, 0, 1)
		}
	}
	return out
}

// series fills a chart's series from report rows, with zeros where a
// bucket has no row.
func seriesByTime(rows []nozzle.ReportRow, xs []time.Time, fns ...func(r *nozzle.ReportRow) float64) [][]float64 {
	idx := map[int64]int{}
	for i, x := range xs {
		idx[x.Unix()] = i
	}
	out := make([][]float64, len(fns))
	for i := range out {
		out[i] = make([]float64, len(xs))
	}
	for k := range rows {
		r := &rows[k]
		i, ok := idx[r.Time.Unix()]
		if !ok {
			continue
		}
		for j, fn := range fns {
			out[j][i] += fn(r)
		}
	}
	return out
}

func unixes(xs []time.Time) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = x.Unix()
	}
	return out
}

// chartEnd returns where a chart of a period ending at end stops: at the
// end of the hour or day (step) holding now when the period runs past
// it, as reports measure a period still running, so that hours or days to
// come are not drawn as zeros.
func chartEnd(end, now time.Time, step string) time.Time {
	if step == nozzle.GroupHour {
		return minTime(end, now.UTC().Truncate(time.Hour).Add(time.Hour))
	}
	return minTime(end, dayStart(now).AddDate(0, 0, 1))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func dayStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func (cs *console) report(c *fiber.Ctx, q nozzle.ReportQuery) (*nozzle.Report, error) {
	rep, err := cs.s.reporter()
	if err != nil {
		return nil, err
	}
	return rep.Report(c.UserContext(), q)
}

// ----- tenant pages -----

type overviewView struct {
	Month     string
	Total     nozzle.ReportRow
	Tokens    int64
	SavingUSD float64 // what a dedicated GPU would have cost more (0 when it would not)
	// Compared: a dedicated GPU's cost is known (a GPU price is set), so
	// the shared GPU's can be set against it. ExtraUSD is what the shared
	// GPU cost more, when it did: the share of idle time spans the whole
	// month (idle hours with no request at all go to the month's tenants),
	// a dedicated GPU counts from each adapter's first request, so a
	// tenant who started late in a quiet month can pay more; the headline
	// then says so instead of a negative saving and "$0.00 less".
	Compared bool
	ExtraUSD float64
	// IdleShared: the tenants carry the GPU's idle time (the prorata
	// policy), so the shared GPU's cost includes a share of it; under the
	// operator policy it is the tenant's active time alone.
	IdleShared   bool
	Chart        chart
	HasUsage     bool
	Keys         int
	Adapters     int
	ExampleModel string
	Budget       float64
	BudgetUsed   float64   // percent
	NextMonth    time.Time // when the month (UTC) ends: the budget starts afresh
}

func (cs *console) overviewPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	now := cs.cfg.Clock().UTC()
	from := monthStart(now)
	to := from.AddDate(0, 1, 0)
	rep, err := cs.report(c, nozzle.ReportQuery{TenantID: sess.tenant.ID, Start: from, End: to, GroupBy: []string{nozzle.GroupDay}})
	if err != nil {
		return err
	}
	v := overviewView{Month: from.Format("January 2006"), Total: rep.Total, NextMonth: to}
	v.Tokens = rep.Total.PromptTokens + rep.Total.CompletionTokens
	v.HasUsage = rep.Total.Requests > 0
	v.SavingUSD = max(0, rep.Total.DedicatedUSD-rep.Total.CostUSD)
	v.Compared = rep.Total.DedicatedUSD > 0
	v.ExtraUSD = max(0, rep.Total.CostUSD-rep.Total.DedicatedUSD)
	v.IdleShared = rep.IdlePolicy != nozzle.IdleOperator
	xs := buckets(from, dayStart(now).AddDate(0, 0, 1), nozzle.GroupDay)
	s := seriesByTime(rep.Rows, xs,
		func(r *nozzle.ReportRow) float64 { return float64(r.PromptTokens) },
		func(r *nozzle.ReportRow) float64 { return float64(r.CompletionTokens) })
	v.Chart = chart{Title: "Tokens by day", Unit: "tokens", Kind: "bars", Stacked: true, Step: nozzle.GroupDay, X: unixes(xs),
		Table:  "the Usage page has the same figures in a table, day by day",
		Series: []chartSeries{{Label: "Prompt tokens", Values: s[0]}, {Label: "Completion tokens", Values: s[1]}}}
	keys, err := cs.s.deps.Keys.Keys(ctx, sess.tenant.ID)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !k.Revoked() {
			v.Keys++
		}
	}
	ads, err := cs.s.deps.Adapters.Adapters(ctx, sess.tenant.ID)
	if err != nil {
		return err
	}
	v.Adapters = len(ads)
	v.ExampleModel = cs.s.baseModel().ID
	if len(ads) > 0 {
		v.ExampleModel = ads[0].Name
	}
	if v.Budget = sess.tenant.MonthlyBudgetUSD; v.Budget > 0 {
		v.BudgetUsed = min(100, rep.Total.ChargedUSD/v.Budget*100)
	}
	return cs.page(c, "overview", v)
}

type adapterView struct {
	adapterJSON
	Tier     nozzle.Tier `json:"tier"`
	Modified time.Time   `json:"-"`
}

// tierWait bounds how long a page waits for the runtimes to say where
// adapters are: a runtime that hangs, until its health checks find it
// out, must not hold the adapters page.
const tierWait = 2 * time.Second

// tierQuestions is how many tier questions are in flight at once.
const tierQuestions = 16

// adapterTiers says where the weights of each adapter (by content
// address) are: the best tier over the healthy upstreams (the one
// affinity routing picks is where it stays warm). The upstreams are asked
// all at once, tierQuestions questions at a time, for at most tierWait
// (for a remote runtime each is a round trip: one after the other, a
// tenant with many adapters waited for all of them); an adapter no
// upstream placed by then is on disk.
func (s *Server) adapterTiers(ctx context.Context, shas []string) map[string]nozzle.Tier {
	rank := map[nozzle.Tier]int{nozzle.TierDevice: 3, nozzle.TierHost: 2, nozzle.TierDisk: 1}
	out := make(map[string]nozzle.Tier, len(shas))
	type question struct {
		u   *upstream
		sha string
	}
	var qs []question
	for _, sha := range shas {
		if _, dup := out[sha]; dup {
			continue
		}
		out[sha] = nozzle.TierDisk
		for _, u := range s.router.ups {
			if u.healthy.Load() {
				qs = append(qs, question{u, sha})
			}
		}
	}
	if len(qs) == 0 {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, tierWait)
	defer cancel()
	var mu sync.Mutex
	next := make(chan question)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range min(tierQuestions, len(qs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q := range next {
				t := q.u.gen.AdapterTier(ctx, q.sha)
				mu.Lock()
				if ctx.Err() == nil && rank[t] > rank[out[q.sha]] {
					out[q.sha] = t
				}
				mu.Unlock()
			}
		}()
	}
	go func() {
		defer close(next)
		for _, q := range qs {
			select {
			case next <- q:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(out)
}

// adapterViews are adapters with where each is right now.
func (cs *console) adapterViews(ctx context.Context, list []*nozzle.Adapter) []adapterView {
	shas := make([]string, len(list))
	for i, a := range list {
		shas[i] = a.SHA256
	}
	tiers := cs.s.adapterTiers(ctx, shas)
	out := make([]adapterView, 0, len(list))
	for _, a := range list {
		out = append(out, adapterView{adapterJSON: toAdapterJSON(a), Tier: tiers[a.SHA256], Modified: a.CreatedAt})
	}
	return out
}

// listAdapters handles GET /console/api/adapters: a page of the tenant's
// adapters (as GET /v1/adapters pages them) with where each is right now.
func (cs *console) listAdapters(c *fiber.Ctx) error {
	q, err := pageQuery(c)
	if err != nil {
		return err
	}
	page, err := cs.s.deps.Adapters.AdapterPage(c.UserContext(), principalFrom(c).tenant.ID, q)
	if err != nil {
		return err
	}
	return writePage(c, cs.adapterViews(c.UserContext(), page.Data), func(a adapterView) string { return a.ID }, page.HasMore)
}

// adapterStorage is what a tenant's adapters take of its storage quota.
type adapterStorage struct {
	Used  int64 // the sum of the adapters' sizes
	Quota int64 // 0 or less: no cap
}

// Capped says whether the tenant's adapter storage has a quota.
func (a adapterStorage) Capped() bool { return a.Quota > 0 }

// Full says whether no upload fits any more.
func (a adapterStorage) Full() bool { return a.Capped() && a.Used >= a.Quota }

// Free is what is left of the quota (0 when uncapped or full).
func (a adapterStorage) Free() int64 {
	if !a.Capped() {
		return 0
	}
	return max(0, a.Quota-a.Used)
}

// Percent is the share of the quota used, 0 to 100.
func (a adapterStorage) Percent() float64 {
	if !a.Capped() {
		return 0
	}
	return min(100, float64(a.Used)/float64(a.Quota)*100)
}

// adapterStorage returns a tenant's adapter storage: what its adapters
// take, the way uploads count it, and the quota.
func (s *Server) adapterStorage(ctx context.Context, tenantID string) (adapterStorage, error) {
	used, err := s.adapterBytes(ctx, tenantID)
	if err != nil {
		return adapterStorage{}, err
	}
	return adapterStorage{Used: used, Quota: s.cfg.TenantAdapterBytes}, nil
}

type adaptersView struct {
	Adapters    []adapterView // a page of them, by name
	Pager       pager
	UploadLimit int64
	BaseModel   string
	MaxRank     int
	Storage     adapterStorage
}

func (cs *console) adaptersPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	page, q, err := readConsolePage(ctx, c, "", func(ctx context.Context, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Adapter], error) {
		return cs.s.deps.Adapters.AdapterPage(ctx, sess.tenant.ID, q)
	})
	if err != nil {
		return err
	}
	v := adaptersView{Adapters: cs.adapterViews(ctx, page.Data), UploadLimit: cs.s.cfg.UploadLimit, BaseModel: cs.s.baseModel().ID}
	if n := len(v.Adapters); n > 0 {
		v.Pager = pageLinks(c, "Pages of adapters", "", q, n, v.Adapters[0].ID, v.Adapters[n-1].ID, page.HasMore)
	}
	if v.Storage, err = cs.s.adapterStorage(ctx, sess.tenant.ID); err != nil {
		return err
	}
	if info, ok := cs.s.router.modelInfo(); ok {
		v.MaxRank = info.MaxLoRARank
	}
	return cs.page(c, "adapters", v)
}

type playgroundView struct {
	Models   []string
	Selected string
	Price    nozzle.Price
}

func (cs *console) playgroundPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	ads, err := cs.s.deps.Adapters.Adapters(ctx, sess.tenant.ID)
	if err != nil {
		return err
	}
	v := playgroundView{Models: []string{cs.s.baseModel().ID}}
	for _, a := range ads {
		v.Models = append(v.Models, a.Name)
	}
	v.Selected = v.Models[0]
	if m := c.Query("model"); slices.Contains(v.Models, m) {
		v.Selected = strings.Clone(m)
	}
	if v.Price, err = cs.s.deps.Tenants.PriceAt(ctx, sess.tenant.ID, cs.cfg.Clock()); err != nil {
		return err
	}
	return cs.page(c, "playground", v)
}

// keyLists are a tenant's keys as the console lists them: Active keys,
// newest first; Revoked ones, the last revoked first, apart: they stay
// listed for good (what was revoked and when), and a tenant that rotates
// keys would otherwise look for its working keys among many dead ones.
// Each is a page of its list, with its own links (the revoked keys'
// cursor under "revoked_"). The tenant's keys page and the operator's
// page of the tenant show them alike.
type keyLists struct {
	Active       []keyJSON
	ActivePager  pager
	Revoked      []keyJSON
	RevokedPager pager
	// RevokedOpen unfolds the revoked keys: the address pages through them.
	RevokedOpen bool
}

// readKeyLists reads the pages of the tenant's active and revoked keys
// that the address asks for.
func (cs *console) readKeyLists(c *fiber.Ctx, tenantID string) (keyLists, error) {
	ctx := c.UserContext()
	var v keyLists
	for _, l := range []struct {
		prefix, label string
		filter        nozzle.KeyFilter
		rows          *[]keyJSON
		pager         *pager
	}{
		{"", "Pages of active keys", nozzle.ActiveKeys, &v.Active, &v.ActivePager},
		{"revoked_", "Pages of revoked keys", nozzle.RevokedKeys, &v.Revoked, &v.RevokedPager},
	} {
		page, q, err := readConsolePage(ctx, c, l.prefix, func(ctx context.Context, q nozzle.PageQuery) (*nozzle.Page[*nozzle.APIKey], error) {
			return cs.s.deps.Keys.KeyPage(ctx, tenantID, q, l.filter)
		})
		if err != nil {
			return v, err
		}
		for _, k := range page.Data {
			*l.rows = append(*l.rows, cs.s.toKeyJSON(k))
		}
		if n := len(*l.rows); n > 0 {
			*l.pager = pageLinks(c, l.label, l.prefix, q, n, (*l.rows)[0].ID, (*l.rows)[n-1].ID, page.HasMore)
		}
	}
	v.RevokedOpen = c.Query("revoked_after") != "" || c.Query("revoked_before") != ""
	return v, nil
}

type keysView struct {
	keyLists
	ExampleModel string
}

func (cs *console) keysPage(c *fiber.Ctx, sess *consoleSession) error {
	lists, err := cs.readKeyLists(c, sess.tenant.ID)
	if err != nil {
		return err
	}
	return cs.page(c, "keys", keysView{keyLists: lists, ExampleModel: cs.s.baseModel().ID})
}

// period is a report period chosen on a page.
type period struct {
	Name       string // month, last_month, 7d, 30d, custom
	Start, End time.Time
	StartDate  string // YYYY-MM-DD, end inclusive, for the form
	EndDate    string
	Label      string
}

// periodOf reads a report page's period from its query (def when none is
// named). A period it cannot show gives def's figures instead, with a
// message saying so (shown names def in words), and custom dates stay in
// the form for the user to correct.
func periodOf(c *fiber.Ctx, def, shown string, now time.Time) (period, string) {
	p, err := parsePeriod(c.Query("period", def), c.Query("start"), c.Query("end"), now)
	if err == nil {
		return p, ""
	}
	p, _ = parsePeriod(def, "", "", now)
	if c.Query("period") == "custom" {
		p.Name, p.StartDate, p.EndDate = "custom", strings.Clone(c.Query("start")), strings.Clone(c.Query("end"))
	}
	return p, nozzle.ErrorMessage(err) + " Showing " + shown + " meanwhile."
}

// parsePeriod reads a page's period: a name, and for "custom" a start and
// an end date (YYYY-MM-DD, the end inclusive).
func parsePeriod(name, start, end string, now time.Time) (period, error) {
	p := period{Name: name}
	today := dayStart(now)
	switch p.Name {
	case "month":
		p.Start, p.End = monthStart(now), monthStart(now).AddDate(0, 1, 0)
		p.Label = p.Start.Format("January 2006")
	case "last_month":
		p.End = monthStart(now)
		p.Start = p.End.AddDate(0, -1, 0)
		p.Label = p.Start.Format("January 2006")
	case "today":
		p.Start, p.End = today, today.AddDate(0, 0, 1)
		p.Label = "Today"
	case "7d":
		p.Start, p.End = today.AddDate(0, 0, -6), today.AddDate(0, 0, 1)
		p.Label = "Last 7 days"
	case "30d":
		p.Start, p.End = today.AddDate(0, 0, -29), today.AddDate(0, 0, 1)
		p.Label = "Last 30 days"
	case "custom":
		s, err1 := time.Parse("2006-01-02", start)
		e, err2 := time.Parse("2006-01-02", end)
		if err1 != nil || err2 != nil {
			return p, nozzle.Errorf(nozzle.EINVALID, "Choose a start and an end date.").WithParam("start")
		}
		if e.Before(s) {
			return p, nozzle.Errorf(nozzle.EINVALID, "The end date must not be before the start date.").WithParam("end")
		}
		if e.Sub(s) > 366*24*time.Hour {
			return p, nozzle.Errorf(nozzle.EINVALID, "Choose a period of at most a year.").WithParam("end")
		}
		p.Start, p.End = s.UTC(), e.UTC().AddDate(0, 0, 1)
		p.Label = s.Format("2 Jan 2006") + " – " + e.Format("2 Jan 2006")
	default:
		return p, nozzle.Errorf(nozzle.EINVALID, "Unknown period %q.", p.Name).WithParam("period")
	}
	p.StartDate = p.Start.Format("2006-01-02")
	p.EndDate = p.End.AddDate(0, 0, -1).Format("2006-01-02")
	return p, nil
}

type usageView struct {
	Period    period
	Group     string
	Adapter   string
	Adapters  []string
	Rows      []nozzle.ReportRow
	ByAdapter []nozzle.ReportRow
	// ByAdapterTotal is the per-adapter table's total line (the report's
	// own, as the operator's tables show theirs).
	ByAdapterTotal nozzle.ReportRow
	Total          nozzle.ReportRow
	Tokens         chart
	Cost           chart
	CSVURL         string
	Error          string
	Notice         string // how the page shows what was asked for otherwise
	PeriodNames    [][2]string
}

var periodNames = [][2]string{{"month", "This month"}, {"last_month", "Last month"}, {"today", "Today"}, {"7d", "Last 7 days"}, {"30d", "Last 30 days"}, {"custom", "Custom dates"}}

func (cs *console) usagePage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	now := cs.cfg.Clock().UTC()
	v := usageView{PeriodNames: periodNames, Group: c.Query("group", nozzle.GroupDay), Adapter: strings.Clone(c.Query("adapter"))}
	ads, err := cs.s.deps.Adapters.Adapters(ctx, sess.tenant.ID)
	if err != nil {
		return err
	}
	for _, a := range ads {
		v.Adapters = append(v.Adapters, a.Name)
	}
	if v.Group != nozzle.GroupHour {
		v.Group = nozzle.GroupDay
	}
	p, msg := periodOf(c, "month", "this month", now)
	v.Period, v.Error = p, msg
	if v.Group == nozzle.GroupHour && p.End.Sub(p.Start) > 31*24*time.Hour {
		v.Group = nozzle.GroupDay
		v.Notice = "By day: hourly figures are offered for periods of up to 31 days."
	}
	q := nozzle.ReportQuery{TenantID: sess.tenant.ID, AdapterName: v.Adapter, Start: p.Start, End: p.End, GroupBy: []string{v.Group}}
	rep, err := cs.report(c, q)
	if err != nil {
		return err
	}
	v.Rows, v.Total = rep.Rows, rep.Total
	for i := range v.Rows {
		v.Rows[i].MarginUSD = 0
	}
	q.GroupBy = []string{nozzle.GroupAdapter}
	byAd, err := cs.report(c, q)
	if err != nil {
		return err
	}
	v.ByAdapter, v.ByAdapterTotal = byAd.Rows, byAd.Total
	v.ByAdapterTotal.MarginUSD = 0 // the operator's figure, not the tenant's
	// The filter also offers adapters deleted since they were used, and
	// the one asked for, so that the selection shows what the page shows.
	for _, r := range byAd.Rows {
		if r.AdapterName != "" && !slices.Contains(v.Adapters, r.AdapterName) {
			v.Adapters = append(v.Adapters, r.AdapterName)
		}
	}
	if v.Adapter != "" && !slices.Contains(v.Adapters, v.Adapter) {
		v.Adapters = append(v.Adapters, v.Adapter)
	}
	xs := buckets(p.Start, chartEnd(p.End, now, v.Group), v.Group)
	s := seriesByTime(rep.Rows, xs,
		func(r *nozzle.ReportRow) float64 { return float64(r.PromptTokens) },
		func(r *nozzle.ReportRow) float64 { return float64(r.CompletionTokens) },
		func(r *nozzle.ReportRow) float64 { return r.ChargedUSD })
	v.Tokens = chart{Title: "Tokens", Unit: "tokens", Kind: "bars", Stacked: true, Step: v.Group, X: unixes(xs),
		Series: []chartSeries{{Label: "Prompt tokens", Values: s[0]}, {Label: "Completion tokens", Values: s[1]}}}
	v.Cost = chart{Title: "Charges", Unit: "usd", Kind: "bars", Step: v.Group, X: unixes(xs),
		Series: []chartSeries{{Label: "Charged", Values: s[2]}}}
	qs := fmt.Sprintf("start=%s&end=%s&group_by=%s&format=csv", p.Start.Format(time.RFC3339), p.End.Format(time.RFC3339), v.Group)
	if v.Adapter != "" {
		qs += "&adapter=" + v.Adapter
	}
	v.CSVURL = "/console/api/usage?" + qs
	return cs.page(c, "usage", v)
}

type settingsView struct {
	Price      nozzle.Price
	Override   bool
	Charged    float64
	BudgetUsed float64 // percent of the budget spent this month
	Users      []*nozzle.User
	Billing    string    // the Stripe sync status in words
	NextMonth  time.Time // when the month (UTC) ends: the budget starts afresh
}

func (cs *console) settingsPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	now := cs.cfg.Clock().UTC()
	v := settingsView{NextMonth: monthStart(now).AddDate(0, 1, 0)}
	var err error
	if v.Price, err = cs.s.deps.Tenants.PriceAt(ctx, sess.tenant.ID, now); err != nil {
		return err
	}
	hist, err := cs.s.deps.Tenants.Prices(ctx, sess.tenant.ID)
	if err != nil {
		return err
	}
	v.Override = nozzle.OverrideInForce(hist, sess.tenant.ID, now)
	rep, err := cs.report(c, nozzle.ReportQuery{TenantID: sess.tenant.ID, Start: monthStart(now), End: monthStart(now).AddDate(0, 1, 0)})
	if err != nil {
		return err
	}
	v.Charged = rep.Total.ChargedUSD
	if b := sess.tenant.MonthlyBudgetUSD; b > 0 {
		v.BudgetUsed = min(100, v.Charged/b*100)
	}
	if v.Users, err = cs.users.Users(ctx, sess.tenant.ID); err != nil {
		return err
	}
	v.Billing = "Not connected to Stripe: your operator bills you directly from these figures."
	if sess.tenant.StripeCustomerID != "" {
		v.Billing = "Usage is sent to Stripe every hour, in hourly totals."
		// The outbox is the operator's: only its state in words is shown.
		if op, err := cs.report(c, nozzle.ReportQuery{Start: dayStart(now), End: dayStart(now).Add(time.Hour)}); err == nil && op.Outbox != nil {
			switch o := op.Outbox; {
			case !o.Enabled:
				v.Billing = "Stripe billing is paused by the operator; usage is kept and will be sent later."
			case o.Failing > 0 || o.NeedsReview > 0:
				v.Billing = "Sending usage to Stripe is delayed; the operator has been told. Nothing is lost or billed twice."
			case o.Pending > 0:
				v.Billing = "Up to date, with the last hours waiting to be sent to Stripe."
			default:
				v.Billing = "Up to date: every closed hour has been sent to Stripe."
			}
		}
	}
	return cs.page(c, "settings", v)
}
