package gateway

import (
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

type tenantRow struct {
	Tenant  *nozzle.Tenant
	Users   int
	Month   nozzle.ReportRow
	Storage adapterStorage
}

type tenantsView struct {
	Tenants []tenantRow // a page of them, oldest first
	Pager   pager
	Total   nozzle.ReportRow
	Price   nozzle.Price
	Month   string
}

func (cs *console) tenantsPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	now := cs.cfg.Clock().UTC()
	page, q, err := readConsolePage(ctx, c, "", cs.s.deps.Tenants.TenantPage)
	if err != nil {
		return err
	}
	rep, err := cs.report(c, nozzle.ReportQuery{Start: monthStart(now), End: monthStart(now).AddDate(0, 1, 0), GroupBy: []string{nozzle.GroupTenant}})
	if err != nil {
		return err
	}
	byTenant := map[string]nozzle.ReportRow{}
	for _, r := range rep.Rows {
		byTenant[r.TenantID] = r
	}
	v := tenantsView{Total: rep.Total, Month: monthStart(now).Format("January 2006")}
	for _, t := range page.Data {
		st, err := cs.s.adapterStorage(ctx, t.ID)
		if err != nil {
			return err
		}
		// The page's tenants' users only, each tenant's read from its
		// own index in the ledger: not every user of every tenant.
		users, err := cs.users.Users(ctx, t.ID)
		if err != nil {
			return err
		}
		v.Tenants = append(v.Tenants, tenantRow{Tenant: t, Users: len(users), Month: byTenant[t.ID], Storage: st})
	}
	if n := len(page.Data); n > 0 {
		v.Pager = pageLinks(c, "Pages of tenants", "", q, n, page.Data[0].ID, page.Data[n-1].ID, page.HasMore)
	}
	if v.Price, err = cs.s.deps.Tenants.PriceAt(ctx, "", now); err != nil {
		return err
	}
	return cs.page(c, "operator", v)
}

type tenantView struct {
	Tenant *nozzle.Tenant
	Users  []*nozzle.User
	// Keys are the tenant's keys, paged as the tenant's keys page pages
	// them, active and revoked apart.
	Keys     keyLists
	Prices   []nozzle.PriceVersion
	Price    nozzle.Price
	Override bool
	Month    nozzle.ReportRow
	Storage  adapterStorage
	Now      time.Time
}

func (cs *console) tenantPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	now := cs.cfg.Clock().UTC()
	t, err := cs.s.tenantParam(c)
	if err != nil {
		return err
	}
	v := tenantView{Tenant: t, Now: now}
	if v.Users, err = cs.users.Users(ctx, t.ID); err != nil {
		return err
	}
	if v.Keys, err = cs.readKeyLists(c, t.ID); err != nil {
		return err
	}
	if v.Prices, err = cs.s.deps.Tenants.Prices(ctx, t.ID); err != nil {
		return err
	}
	v.Override = nozzle.OverrideInForce(v.Prices, t.ID, now)
	if v.Storage, err = cs.s.adapterStorage(ctx, t.ID); err != nil {
		return err
	}
	if v.Price, err = cs.s.deps.Tenants.PriceAt(ctx, t.ID, now); err != nil {
		return err
	}
	rep, err := cs.report(c, nozzle.ReportQuery{TenantID: t.ID, Start: monthStart(now), End: monthStart(now).AddDate(0, 1, 0)})
	if err != nil {
		return err
	}
	v.Month = rep.Total
	return cs.page(c, "tenant", v)
}

type tenantUsageView struct {
	Tenant      *nozzle.Tenant
	Period      period
	PeriodNames [][2]string
	Error       string
	// ByAdapter and ByDay are the operator's report over the period,
	// grouped by adapter and by day: the figures GET /admin/report gives
	// for the tenant with group_by=adapter and group_by=day.
	ByAdapter *nozzle.Report
	ByDay     *nozzle.Report
	// CSVURL is the same report by adapter and day, as CSV (the
	// console's route to the /admin/report handler).
	CSVURL string
}

// tenantUsagePage shows a tenant's usage over a period, by adapter and
// by day, with the operator's figures (GPU cost, margin), from the report
// /admin/report gives (operatorReport).
func (cs *console) tenantUsagePage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	now := cs.cfg.Clock().UTC()
	t, err := cs.s.tenantParam(c)
	if err != nil {
		return err
	}
	v := tenantUsageView{Tenant: t, PeriodNames: periodNames}
	p, msg := periodOf(c, "month", "this month", now)
	v.Period, v.Error = p, msg
	q := nozzle.ReportQuery{Start: p.Start, End: p.End, GroupBy: []string{nozzle.GroupAdapter}}
	if v.ByAdapter, err = cs.s.operatorReport(ctx, q, t.ID); err != nil {
		return err
	}
	q.GroupBy = []string{nozzle.GroupDay}
	if v.ByDay, err = cs.s.operatorReport(ctx, q, t.ID); err != nil {
		return err
	}
	v.CSVURL = "/console/api/operator/report?" + url.Values{
		"tenant_id": {t.ID}, "start": {p.Start.Format(time.RFC3339)}, "end": {p.End.Format(time.RFC3339)},
		"group_by": {nozzle.GroupAdapter + "," + nozzle.GroupDay}, "format": {"csv"},
	}.Encode()
	return cs.page(c, "tenant_usage", v)
}

type gpuView struct {
	Period      period
	PeriodNames [][2]string
	Error       string
	GPU         nozzle.GPUSummary
	Outbox      *nozzle.OutboxState
	Tenants     []nozzle.ReportRow
	Total       nozzle.ReportRow
	Revenue     float64
	Margin      float64 // revenue − the GPU's whole cost
	IdlePolicy  string
	Utilization chart
	Seconds     chart
	Step        string
	// Buckets are the charts' figures, for the table beside them.
	Buckets []gpuBucket
}

// gpuBucket is an hour or a day of the GPU page's charts.
type gpuBucket struct {
	Time                 time.Time
	Utilization          float64 // 0 to 1
	Active, Idle, Uptime float64 // seconds
}

// gpuPage shows the pool's side: utilisation over time (hour by hour, or
// day by day for long periods, from the operator report's GPU series), the
// cost split by tenant with idle shares, revenue and margin, and the
// Stripe outbox. One report gives all of it.
func (cs *console) gpuPage(c *fiber.Ctx, sess *consoleSession) error {
	now := cs.cfg.Clock().UTC()
	v := gpuView{PeriodNames: periodNames}
	p, msg := periodOf(c, "7d", "the last 7 days", now)
	v.Period, v.Error = p, msg
	v.Step = nozzle.GroupHour
	if p.End.Sub(p.Start) > 7*24*time.Hour {
		v.Step = nozzle.GroupDay
	}
	rep, err := cs.report(c, nozzle.ReportQuery{Start: p.Start, End: p.End, GroupBy: []string{nozzle.GroupTenant}, GPUStep: v.Step})
	if err != nil {
		return err
	}
	if rep.GPU != nil {
		v.GPU = *rep.GPU
	}
	v.Outbox, v.Tenants, v.Total, v.IdlePolicy = rep.Outbox, rep.Rows, rep.Total, rep.IdlePolicy
	v.Revenue = rep.Total.ChargedUSD
	v.Margin = v.GPU.MarginUSD
	sort.SliceStable(v.Tenants, func(i, j int) bool { return v.Tenants[i].CostUSD > v.Tenants[j].CostUSD })

	// The charts run up to the current hour or day; buckets the series lacks
	// stay at zero.
	xs := buckets(p.Start, chartEnd(p.End, now, v.Step), v.Step)
	idx := make(map[int64]int, len(xs))
	for i, x := range xs {
		idx[x.Unix()] = i
	}
	util := make([]float64, len(xs))
	active := make([]float64, len(xs))
	idle := make([]float64, len(xs))
	v.Buckets = make([]gpuBucket, len(xs))
	for i, x := range xs {
		v.Buckets[i].Time = x
	}
	if rep.GPU != nil {
		for _, b := range rep.GPU.Series {
			if i, ok := idx[b.Time.Unix()]; ok {
				util[i] = b.Utilization * 100
				active[i] = b.ActiveSeconds
				idle[i] = b.IdleSeconds
				v.Buckets[i] = gpuBucket{Time: xs[i], Utilization: b.Utilization, Active: b.ActiveSeconds, Idle: b.IdleSeconds, Uptime: b.UptimeSeconds}
			}
		}
	}
	v.Utilization = chart{Title: "GPU utilisation", Unit: "percent", Kind: "line", Step: v.Step, X: unixes(xs),
		Series: []chartSeries{{Label: "Utilisation", Values: util}}}
	v.Seconds = chart{Title: "Active and idle time", Unit: "seconds", Kind: "bars", Stacked: true, Step: v.Step, X: unixes(xs),
		Series: []chartSeries{{Label: "Active", Values: active}, {Label: "Idle", Values: idle}}}
	return cs.page(c, "gpu", v)
}

type userRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

type userJSON struct {
	Object string `json:"object"`
	*nozzle.User
	InviteURL string `json:"invite_url,omitempty"`
}

// invite gives u a new invite token and returns the link.
func (cs *console) invite(c *fiber.Ctx, u *nozzle.User) string {
	tok := randomToken(32)
	u.InviteDigest = inviteDigest(tok)
	u.InviteExpires = cs.cfg.Clock().Add(cs.cfg.InviteLifetime).UTC()
	return cs.baseURL(c) + "/console/invite/" + tok
}

// createUser handles POST /console/api/operator/tenants/{id}/users: a user
// of the tenant, invited (a one-time link, of which only a digest is
// stored) or with a first password.
func (cs *console) createUser(c *fiber.Ctx) error {
	t, err := cs.s.tenantParam(c)
	if err != nil {
		return err
	}
	var r userRequest
	if err := cs.s.readJSON(c, &r, false); err != nil {
		return err
	}
	email := normalizeEmail(r.Email)
	if !validEmail(email) {
		return invalid("email", "Enter a valid email address.")
	}
	u := &nozzle.User{TenantID: t.ID, Email: email, Role: nozzle.RoleTenant}
	link := ""
	if r.Password != "" {
		if err := validatePassword(r.Password); err != nil {
			return err
		}
		if u.PasswordHash, err = hashPassword(r.Password); err != nil {
			return err
		}
	} else {
		link = cs.invite(c, u)
	}
	if err := cs.users.CreateUser(c.UserContext(), u); err != nil {
		if nozzle.ErrorCode(err) == nozzle.ECONFLICT {
			return nozzle.Errorf(nozzle.ECONFLICT, "A user with the email %s exists already.", email).WithParam("email")
		}
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(userJSON{Object: "user", User: u, InviteURL: link})
}

// tenantUserParam returns the tenant user named by the id path parameter.
func (cs *console) tenantUserParam(c *fiber.Ctx) (*nozzle.User, error) {
	id := strings.Clone(c.Params("id"))
	u, err := cs.users.User(c.UserContext(), id)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No user with id %q.", id)
		}
		return nil, err
	}
	if u.Role != nozzle.RoleTenant {
		return nil, nozzle.Errorf(nozzle.EINVALID, "The operator's account is set by the server's configuration, not here.")
	}
	return u, nil
}

type userUpdate struct {
	Disabled *bool `json:"disabled"`
}

// updateUser handles PATCH /console/api/operator/users/{id}
// {"disabled": true|false}: a person who leaves a tenant is disabled,
// signed out at once (every session of theirs ends, for good: enabling
// them again brings none back) and cannot sign in or use an invite or
// password link until enabled again.
func (cs *console) updateUser(c *fiber.Ctx) error {
	u, err := cs.tenantUserParam(c)
	if err != nil {
		return err
	}
	var r userUpdate
	if err := cs.s.readJSON(c, &r, false); err != nil {
		return err
	}
	if r.Disabled == nil {
		return invalid("disabled", "Say whether the user is disabled: {\"disabled\": true} or false.")
	}
	if *r.Disabled && !u.Disabled {
		endSessionsBefore(u, cs.cfg.Clock())
	}
	u.Disabled = *r.Disabled
	if err := cs.users.UpdateUser(c.UserContext(), u); err != nil {
		return err
	}
	return c.JSON(userJSON{Object: "user", User: u})
}

// reinvite handles POST /console/api/operator/users/{id}/invite: a new
// invite link for a user who has not set a password yet, or for one who
// has, a link to choose a new one (a forgotten password: the one in force
// works until the link is used). A link sent before stops working.
func (cs *console) reinvite(c *fiber.Ctx) error {
	u, err := cs.tenantUserParam(c)
	if err != nil {
		return err
	}
	if u.Disabled {
		return nozzle.Errorf(nozzle.ECONFLICT, "%s is disabled: enable them first.", u.Email)
	}
	link := cs.invite(c, u)
	if err := cs.users.UpdateUser(c.UserContext(), u); err != nil {
		return err
	}
	return c.JSON(userJSON{Object: "user", User: u, InviteURL: link})
}

// revokeTenantKey handles DELETE /console/api/operator/tenants/{id}/keys/{key}:
// the operator revokes one of a tenant's API keys. It is the admin API's
// handler (DELETE /admin/tenants/{id}/keys/{key}), which makes the same
// service call as a tenant's own revoke: requests with the key are
// refused from the next one on. The log records which operator revoked
// which key.
func (cs *console) revokeTenantKey(c *fiber.Ctx) error {
	ctx := c.UserContext()
	t, err := cs.s.tenantParam(c)
	if err != nil {
		return err
	}
	id := strings.Clone(c.Params("key"))
	var key *nozzle.APIKey // as it was, for the log
	keys, err := cs.s.deps.Keys.Keys(ctx, t.ID)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.ID == id {
			key = k
		}
	}
	if err := cs.s.adminRevokeKey(c); err != nil {
		return err
	}
	op := sessionFrom(c).user
	attrs := []slog.Attr{slog.String("request_id", requestID(c)), slog.String("operator_id", op.ID), slog.String("operator", op.Email),
		slog.String("tenant_id", t.ID), slog.String("tenant", t.Name), slog.String("key_id", id)}
	if key != nil {
		attrs = append(attrs, slog.String("key_name", key.Name), slog.String("key_prefix", key.Prefix), slog.Bool("already_revoked", key.Revoked()))
	}
	cs.s.log.LogAttrs(ctx, slog.LevelInfo, "API key revoked by an operator", attrs...)
	return nil
}
