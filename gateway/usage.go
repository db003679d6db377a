package gateway

import (
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// reportQuery parses start, end, group_by, adapter and gpu_step. Times are
// RFC 3339, dates or unix seconds (nozzle.ParseReportTime: a date as the end
// means the end of that day); without them the period is the current
// calendar month in UTC.
func reportQuery(c *fiber.Ctx, allowed map[string]bool) (nozzle.ReportQuery, error) {
	var q nozzle.ReportQuery
	now := time.Now().UTC()
	q.Start = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	q.End = q.Start.AddDate(0, 1, 0)
	for _, f := range []struct {
		name string
		t    *time.Time
	}{{"start", &q.Start}, {"end", &q.End}} {
		v := c.Query(f.name)
		if v == "" {
			continue
		}
		t, err := nozzle.ParseReportTime(v, f.name == "end")
		if err != nil {
			return q, invalid(f.name, "Invalid '%s': %v.", f.name, err)
		}
		*f.t = t
	}
	if !q.End.After(q.Start) {
		// Say which bound the period took by default, when the caller
		// named only one: "'end' must be after 'start'" would blame an
		// 'end' they never gave.
		switch {
		case c.Query("end") == "":
			return q, invalid("end", "'start' %s is not before the end of the current month (%s), where the period ends without 'end': give 'end' too.",
				q.Start.Format(time.RFC3339), q.End.Format(time.RFC3339))
		case c.Query("start") == "":
			return q, invalid("start", "'end' %s is not after the start of the current month (%s), where the period starts without 'start': give 'start' too.",
				q.End.Format(time.RFC3339), q.Start.Format(time.RFC3339))
		}
		return q, invalid("end", "'end' must be after 'start'.")
	}
	switch c.Query("format") {
	case "", "json", "csv":
	default:
		return q, invalid("format", "Invalid 'format' %q: use json or csv.", c.Query("format"))
	}
	// A list, given comma-separated or repeated (group_by=adapter&group_by=day,
	// as HTTP clients send an array).
	for _, v := range c.Context().QueryArgs().PeekMulti("group_by") {
		if len(v) == 0 {
			continue
		}
		for _, g := range strings.Split(string(v), ",") {
			g = strings.TrimSpace(g)
			if !allowed[g] {
				return q, invalidAs("invalid_value", "group_by", "Invalid 'group_by' %q: use %s, or a list of them (adapter,day).", g, groupNames(allowed))
			}
			q.GroupBy = append(q.GroupBy, g)
		}
	}
	q.AdapterName = strings.Clone(c.Query("adapter"))
	// The GPU's series (operator reports): the billing side checks it.
	q.GPUStep = strings.Clone(c.Query("gpu_step"))
	return q, nil
}

// groupNames lists the groupings allowed, for a refusal: "adapter, day
// or hour".
func groupNames(allowed map[string]bool) string {
	var names []string
	for _, g := range []string{nozzle.GroupTenant, nozzle.GroupAdapter, nozzle.GroupDay, nozzle.GroupHour} {
		if allowed[g] {
			names = append(names, g)
		}
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

var tenantGroups = map[string]bool{nozzle.GroupAdapter: true, nozzle.GroupDay: true, nozzle.GroupHour: true}
var operatorGroups = map[string]bool{nozzle.GroupAdapter: true, nozzle.GroupDay: true, nozzle.GroupHour: true, nozzle.GroupTenant: true}

// usageRow is a report row as a tenant sees it: every field of the
// operator's row but the tenant's own name and id and the operator's
// margin, which the empty fields here hide (a shallower field wins in
// encoding/json, and a nil one is left out).
type usageRow struct {
	nozzle.ReportRow
	TenantID   *struct{} `json:"tenant_id,omitempty"`
	TenantName *struct{} `json:"tenant,omitempty"`
	MarginUSD  *struct{} `json:"margin_usd,omitempty"`
}

func toUsageRow(r nozzle.ReportRow) usageRow { return usageRow{ReportRow: r} }

func (s *Server) reporter() (nozzle.Reporter, error) {
	if s.deps.Reporter == nil {
		return nil, nozzle.Errorf(nozzle.EUNAVAILABLE, "Reports are not available on this server.")
	}
	return s.deps.Reporter, nil
}

// usage handles GET /v1/usage: the caller's tenant's usage and cost.
func (s *Server) usage(c *fiber.Ctx) error {
	rep, err := s.reporter()
	if err != nil {
		return err
	}
	q, err := reportQuery(c, tenantGroups)
	if err != nil {
		return err
	}
	q.TenantID = principalFrom(c).tenant.ID
	r, err := rep.Report(c.UserContext(), q)
	if err != nil {
		return err
	}
	if r.GPU != nil || r.Outbox != nil {
		r.GPU, r.Outbox = nil, nil
	}
	for i := range r.Rows {
		r.Rows[i].MarginUSD = 0
	}
	r.Total.MarginUSD = 0
	r.LabelBaseRows()
	if c.Query("format") == "csv" {
		return writeCSV(c, r, "usage.csv", true)
	}
	rows := make([]usageRow, 0, len(r.Rows))
	for _, row := range r.Rows {
		rows = append(rows, toUsageRow(row))
	}
	return c.JSON(fiber.Map{
		"object": "list", "data": rows, "total": toUsageRow(r.Total),
		"start": r.Start, "end": r.End, "group_by": nonNil(r.GroupBy), "idle_policy": r.IdlePolicy,
	})
}

// requestUsage handles GET /v1/usage/requests/{id}: what the ledger holds
// for one of the tenant's requests, named by its X-Request-Id or, for a
// completed request sent with an Idempotency-Key (which the ledger keeps
// under the key, and finds under the X-Request-Id the client saw as its
// attempt id, set when it is recorded), that key: its tokens and its charge at the
// prices in force when it ran.
func (s *Server) requestUsage(c *fiber.Ctx) error {
	id := strings.Clone(c.Params("id"))
	tenantID := principalFrom(c).tenant.ID
	notFound := nozzle.Errorf(nozzle.ENOTFOUND, "No usage recorded for request %q.", id).WithReason("request_not_found")
	// The id the client chose (X-Request-Id), one the gateway gave, or an
	// Idempotency-Key, in that order. The first also finds a completed
	// idempotent request by the X-Request-Id it was answered with, chosen
	// or given (its attempt id).
	ev, err := s.deps.Ledger.Usage(c.UserContext(), clientRequestID(tenantID, id))
	shown := id
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
		ev, err = s.deps.Ledger.Usage(c.UserContext(), id)
		shown = ""
	}
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND && validIdempotencyKey(id) {
		// Shown under the key asked for, not the digest the ledger
		// keeps it under, as a client-chosen X-Request-Id is.
		ev, err = s.deps.Ledger.Usage(c.UserContext(), idempotencyID(tenantID, id))
		shown = id
	}
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
		return notFound
	}
	if err != nil {
		return err
	}
	if ev.TenantID != tenantID { // another tenant's: as if none
		return notFound
	}
	if shown == "" {
		shown = ev.RequestID
	}
	adapter := ev.AdapterName
	if ev.AdapterID == "" {
		adapter = nozzle.BaseModelAlias // as the usage report's rows name the base model
	}
	return c.JSON(fiber.Map{
		"object": "request.usage", "id": shown, "model": ev.Model, "adapter": adapter, "status": ev.Status,
		"created": ev.Time.Unix(), "prompt_tokens": ev.PromptTokens, "cached_prompt_tokens": ev.CachedPromptTokens,
		"completion_tokens": ev.CompletionTokens, "device_seconds": nozzle.RoundSeconds(ev.DeviceSeconds), "charged_usd": nozzle.RoundUSD(ev.ChargeUSD),
		"batch": ev.Batch,
	})
}

// adminReport handles GET /admin/report: every tenant (or tenant_id's).
func (s *Server) adminReport(c *fiber.Ctx) error {
	if _, err := s.reporter(); err != nil {
		return err
	}
	q, err := reportQuery(c, operatorGroups)
	if err != nil {
		return err
	}
	if !c.Context().QueryArgs().Has("group_by") {
		// As `nozzle report` groups by default; group_by= asks for totals.
		q.GroupBy = []string{nozzle.GroupTenant, nozzle.GroupAdapter}
	}
	r, err := s.operatorReport(c.UserContext(), q, c.Query("tenant_id"))
	if err != nil {
		return err
	}
	if c.Query("format") == "csv" {
		return writeCSV(c, r, "report.csv", false)
	}
	r.Rows = nonNil(r.Rows)
	r.GroupBy = nonNil(r.GroupBy)
	return c.JSON(fiber.Map{
		"object": "list", "data": r.Rows, "total": r.Total, "start": r.Start, "end": r.End,
		"group_by": r.GroupBy, "idle_policy": r.IdlePolicy, "gpu": r.GPU, "outbox": r.Outbox,
	})
}

// operatorReport is the operator's report, as GET /admin/report gives
// it and the console's operator pages show it: q over every tenant, or
// over tenant's alone (an id or a name, as `nozzle report --tenant`
// takes), with the base model's rows named.
func (s *Server) operatorReport(ctx context.Context, q nozzle.ReportQuery, tenant string) (*nozzle.Report, error) {
	rep, err := s.reporter()
	if err != nil {
		return nil, err
	}
	if tenant != "" {
		t, err := nozzle.FindTenant(ctx, s.deps.Tenants, tenant)
		if err != nil {
			if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
				// as /admin/tenants/{id} answers an unknown tenant
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant with id or name %q.", tenant).WithParam("tenant_id").WithReason("tenant_not_found")
			}
			return nil, err
		}
		q.TenantID = t.ID
	}
	r, err := rep.Report(ctx, q)
	if err != nil {
		return nil, err
	}
	r.LabelBaseRows()
	return r, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writeCSV answers with the report as CSV: the operator's version, or
// (tenant) without the margin.
func writeCSV(c *fiber.Ctx, r *nozzle.Report, filename string, tenant bool) error {
	var buf bytes.Buffer
	write := r.WriteCSV
	if tenant {
		write = r.WriteTenantCSV
	}
	if err := write(&buf); err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+filename+`"`)
	return c.Send(buf.Bytes())
}
