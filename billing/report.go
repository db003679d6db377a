package billing

import (
	"bytes"
	"context"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// reportSpec is a validated ReportQuery.
type reportSpec struct {
	q                     nozzle.ReportQuery
	nowHours              float64 // now, in hours since the epoch (a dedicated GPU is not charged ahead)
	startH, endH          int64   // hours, end exclusive
	byHour, byDay, byAd   bool
	byTenant, operatorRep bool
	gpuStep               string // GroupHour, GroupDay or empty: the GPU series
}

// adapterIn reports whether the usage of adapter id (named name then; ""
// for the base model) is in the report: all of it without an adapter
// filter; the base model's under BaseModelAlias, as requests name it.
func (s *reportSpec) adapterIn(id, name string) bool {
	switch s.q.AdapterName {
	case "":
		return true
	case nozzle.BaseModelAlias:
		return id == ""
	}
	return id != "" && name == s.q.AdapterName
}

func (l *Ledger) spec(q nozzle.ReportQuery) (*reportSpec, error) {
	now := l.now().UTC()
	if q.Start.IsZero() && q.End.IsZero() {
		q.Start = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		q.End = q.Start.AddDate(0, 1, 0)
	}
	if q.Start.IsZero() || q.End.IsZero() {
		return nil, nozzle.Errorf(nozzle.EINVALID, "A report needs both a start and an end.").WithParam("start")
	}
	s := &reportSpec{startH: hourOf(q.Start), endH: hourOf(q.End)}
	if q.End.After(hourTime(s.endH)) {
		s.endH++ // a partial last hour is included
	}
	q.Start, q.End = hourTime(s.startH), hourTime(s.endH)
	if s.endH <= s.startH {
		return nil, nozzle.Errorf(nozzle.EINVALID, "The report's end must be after its start.").WithParam("end")
	}
	if s.endH-s.startH > 24*400 {
		return nil, nozzle.Errorf(nozzle.EINVALID, "A report covers at most 400 days.").WithParam("end")
	}
	// Hours that have not begun hold no usage and cost nothing: a period
	// running into the future (this month, say) is measured up to the end
	// of the current hour, so the dedicated GPU it is compared with is
	// charged for the hours that passed, not for the whole month ahead.
	s.nowHours = float64(now.UnixNano()) / float64(time.Hour)
	if nowH := hourOf(now) + 1; s.startH < nowH && s.endH > nowH {
		s.endH = nowH
	}
	var groups []string
	for _, g := range q.GroupBy {
		g = strings.ToLower(strings.TrimSpace(g))
		if g == "" || slices.Contains(groups, g) {
			continue
		}
		switch g {
		case nozzle.GroupHour:
			s.byHour = true
		case nozzle.GroupDay:
			s.byDay = true
		case nozzle.GroupAdapter:
			s.byAd = true
		case nozzle.GroupTenant:
			s.byTenant = true
		default:
			return nil, nozzle.Errorf(nozzle.EINVALID, "Unknown group %q: use hour, day, adapter or tenant.", g).WithParam("group_by")
		}
		groups = append(groups, g)
	}
	if s.byHour && s.byDay {
		return nil, nozzle.Errorf(nozzle.EINVALID, "Group by hour or by day, not both.").WithParam("group_by")
	}
	if s.byAd && !s.byTenant && q.TenantID == "" {
		// an adapter is a tenant's: over all tenants its rows say whose
		// (each tenant's base-model row would otherwise read alike)
		s.byTenant = true
		groups = append(groups, nozzle.GroupTenant)
	}
	q.GroupBy = groups
	switch step := strings.ToLower(strings.TrimSpace(q.GPUStep)); step {
	case nozzle.GroupHour, nozzle.GroupDay:
		s.gpuStep = step
	case "":
		if s.byHour {
			s.gpuStep = nozzle.GroupHour
		} else if s.byDay {
			s.gpuStep = nozzle.GroupDay
		}
	default:
		return nil, nozzle.Errorf(nozzle.EINVALID, "Unknown GPU step %q: use hour or day.", step).WithParam("gpu_step")
	}
	q.GPUStep = s.gpuStep
	s.q = q
	s.operatorRep = q.TenantID == ""
	if !s.operatorRep {
		s.gpuStep = ""
	}
	return s, nil
}

// usageCell is the usage of one tenant and adapter in one hour.
type usageCell struct {
	tenantID  string
	hour      int64
	adapterID string
	r         rollup
}

// periodTotals is what the cost split needs beyond the selected usage:
// every tenant's active cost in the period, hour by hour, and the
// runtimes' capacity.
type periodTotals struct {
	activeCostUSD float64 // all tenants
	deviceSeconds float64
	hourActive    map[int64]float64 // hour → all tenants' active cost
	capacity      capHour           // all runtimes
	hourCap       map[int64]capHour // hour → all runtimes
	// series is the GPU series' buckets (none unless the spec asks for
	// it), each summed in the order a report over the bucket alone sums
	// its hours, so that its figures are that report's to the bit.
	series  []gpuAcc
	startH  int64
	dayStep bool
}

// gpuAcc is the capacity and all tenants' active cost of one bucket of the
// GPU series.
type gpuAcc struct {
	capacity   capHour
	activeCost float64
}

func newTotals(s *reportSpec) periodTotals {
	t := periodTotals{hourActive: map[int64]float64{}, hourCap: map[int64]capHour{}, startH: s.startH}
	switch s.gpuStep {
	case nozzle.GroupHour:
		t.series = make([]gpuAcc, s.endH-s.startH)
	case nozzle.GroupDay:
		t.dayStep = true
		t.series = make([]gpuAcc, (dayOf(s.endH-1)-dayOf(s.startH))/24+1)
	}
	return t
}

// bucket returns the GPU series' bucket holding hour h of the period, or
// nil when the report has no series.
func (t *periodTotals) bucket(h int64) *gpuAcc {
	if t.series == nil {
		return nil
	}
	i := h - t.startH
	if t.dayStep {
		i = (dayOf(h) - dayOf(t.startH)) / 24
	}
	return &t.series[i]
}

// bucketTime returns the start of the GPU series' bucket i: the hour, or
// the UTC day cut by the period's start.
func (t *periodTotals) bucketTime(i int) time.Time {
	if !t.dayStep {
		return hourTime(t.startH + int64(i))
	}
	return hourTime(max(t.startH, dayOf(t.startH)+24*int64(i)))
}

// Report returns the usage and cost report for q, computed from the hourly
// rollups. Returns EINVALID for a bad period or an unknown group key and
// ENOTFOUND for an unknown tenant.
func (l *Ledger) Report(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
	return l.report(ctx, q, false)
}

func (l *Ledger) report(ctx context.Context, q nozzle.ReportQuery, scan bool) (*nozzle.Report, error) {
	s, err := l.spec(q)
	if err != nil {
		return nil, err
	}
	var rep *nozzle.Report
	err = l.viewUsage(func(tx *bolt.Tx) error {
		names := map[string]string{}
		tenants, err := allTenants(tx)
		if err != nil {
			return err
		}
		for _, t := range tenants {
			names[t.ID] = t.Name
		}
		if !s.operatorRep {
			if _, ok := names[s.q.TenantID]; !ok {
				return nozzle.Errorf(nozzle.ENOTFOUND, "Tenant %q does not exist.", s.q.TenantID)
			}
		}
		var cells cellSource
		var tot periodTotals
		if scan {
			var all []usageCell
			if all, tot, err = scanCells(ctx, tx, s); err != nil {
				return err
			}
			cells = func(fn func(*usageCell)) error {
				for i := range all {
					fn(&all[i])
				}
				return nil
			}
		} else {
			if tot, err = rollupTotals(tx, s); err != nil {
				return err
			}
			cells = func(fn func(*usageCell)) error { return eachRollupCell(tx, s, tenants, fn) }
		}
		if err = capacityTotals(tx, s.startH, s.endH, &tot); err != nil {
			return err
		}
		adapters := tx.Bucket(bAdapters)
		exists := func(adapterID string) bool { return adapterID == "" || adapters.Get([]byte(adapterID)) != nil }
		if rep, err = l.buildReport(s, cells, tot, names, exists); err != nil {
			return err
		}
		if s.operatorRep {
			st, err := l.outboxState(tx)
			if err != nil {
				return err
			}
			rep.Outbox = &st
		}
		return nil
	})
	return rep, err
}

// cellSource calls fn for each usage cell of a report, in a fixed order;
// the cell is fn's only for the call.
type cellSource func(fn func(*usageCell)) error

// rollupTotals reads the all-tenant hourly totals of the period.
func rollupTotals(tx *bolt.Tx, s *reportSpec) (periodTotals, error) {
	tot := newTotals(s)
	hc := tx.Bucket(bHours).Cursor()
	for k, v := hc.Seek(hourKey(s.startH)); k != nil && hourFromKey(k) < s.endH; k, v = hc.Next() {
		r, err := decodeRollup(v)
		if err != nil {
			return tot, err
		}
		tot.activeCostUSD += r.ActiveCostUSD
		tot.deviceSeconds += r.DeviceSeconds
		tot.hourActive[hourFromKey(k)] += r.ActiveCostUSD
		if b := tot.bucket(hourFromKey(k)); b != nil {
			b.activeCost += r.ActiveCostUSD
		}
	}
	return tot, nil
}

// eachRollupCell calls fn for each of the selected tenants' rollups in the
// period, tenant by tenant, hour by hour, read from the rollups as they
// stand rather than gathered first.
func eachRollupCell(tx *bolt.Tx, s *reportSpec, tenants []*nozzle.Tenant, fn func(*usageCell)) error {
	var ids []string
	if s.operatorRep {
		for _, t := range tenants {
			ids = append(ids, t.ID)
		}
	} else {
		ids = []string{s.q.TenantID}
	}
	var cell usageCell
	c := tx.Bucket(bRollups).Cursor()
	for _, id := range ids {
		prefix := lp(id)
		for k, v := c.Seek(join(prefix, hourKey(s.startH))); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			rest := k[len(prefix):]
			if len(rest) < 8 {
				continue
			}
			h := hourFromKey(rest[:8])
			if h >= s.endH {
				break
			}
			r, err := decodeRollup(v)
			if err != nil {
				return err
			}
			if !s.adapterIn(string(rest[8:]), r.AdapterName) {
				continue
			}
			cell = usageCell{tenantID: id, hour: h, adapterID: string(rest[8:]), r: r}
			fn(&cell)
		}
	}
	return nil
}

// scanCells computes the same cells and totals from the events themselves:
// the slow path that Check and the benchmark baseline use.
func scanCells(ctx context.Context, tx *bolt.Tx, s *reportSpec) ([]usageCell, periodTotals, error) {
	tot := newTotals(s)
	agg := map[string]*usageCell{}
	c := tx.Bucket(bEvents).Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if n++; n%65536 == 0 && ctx.Err() != nil {
			return nil, tot, ctx.Err()
		}
		ev, err := decodeEvent(v)
		if err != nil {
			return nil, tot, err
		}
		h := hourOf(ev.Time)
		if h < s.startH || h >= s.endH {
			continue
		}
		tot.activeCostUSD += activeCost(ev)
		tot.deviceSeconds += ev.DeviceSeconds
		tot.hourActive[h] += activeCost(ev)
		if b := tot.bucket(h); b != nil {
			b.activeCost += activeCost(ev)
		}
		if !s.operatorRep && ev.TenantID != s.q.TenantID {
			continue
		}
		key := string(rollupKey(ev.TenantID, h, ev.AdapterID))
		cell := agg[key]
		if cell == nil {
			cell = &usageCell{tenantID: ev.TenantID, hour: h, adapterID: ev.AdapterID}
			agg[key] = cell
		}
		cell.r.addEvent(ev)
	}
	cells := make([]usageCell, 0, len(agg))
	for _, cell := range agg {
		if !s.adapterIn(cell.adapterID, cell.r.AdapterName) {
			continue
		}
		cells = append(cells, *cell)
	}
	sort.Slice(cells, func(i, j int) bool {
		a, b := cells[i], cells[j]
		if a.tenantID != b.tenantID {
			return a.tenantID < b.tenantID
		}
		if a.hour != b.hour {
			return a.hour < b.hour
		}
		return a.adapterID < b.adapterID
	})
	return cells, tot, nil
}

// capacityTotals adds the runtimes' capacity in the period: the hourly
// capacity of the closed intervals, then each runtime's provisional (open)
// interval clipped to the period, hour by hour. A provisional interval's
// share of an hour does not depend on the period, so a report over one
// hour or day counts it as the series of a longer report does.
func capacityTotals(tx *bolt.Tx, startH, endH int64, tot *periodTotals) error {
	add := func(h int64, ch capHour) {
		tot.capacity.add(ch)
		hc := tot.hourCap[h]
		hc.add(ch)
		tot.hourCap[h] = hc
		if b := tot.bucket(h); b != nil {
			b.capacity.add(ch)
		}
	}
	c := tx.Bucket(bCapHours).Cursor()
	for k, v := c.Seek(hourKey(startH)); k != nil && len(k) >= 8 && hourFromKey(k[:8]) < endH; k, v = c.Next() {
		ch, err := decodeCapHour(v)
		if err != nil {
			return err
		}
		add(hourFromKey(k[:8]), ch)
	}
	return openIntervals(tx, func(iv *nozzle.CapacityInterval) {
		if !iv.End.After(hourTime(startH)) || !iv.Start.Before(hourTime(endH)) {
			return
		}
		splitHours(iv.Start, iv.End, func(h int64, f float64) {
			if h >= startH && h < endH {
				add(h, intervalShare(iv, f))
			}
		})
	})
}

// rowAcc accumulates one report row.
type rowAcc struct {
	row      nozzle.ReportRow
	idleCost float64 // prorata share of idle, summed over the row's cells
	idleSecs float64
	start    int64 // the row's span in hours
	end      int64
	adapters map[adapterKey]*adapterUse // for the dedicated comparison
}

type adapterKey struct{ tenant, adapter string }

type rowKey struct {
	start           int64
	tenant, adapter string
}

type adapterUse struct {
	activeCost, deviceSeconds float64
	firstH, lastH             int64 // the first and last hours of the row with its requests
}

func (a *rowAcc) add(c *usageCell, idleCost, idleSecs float64) {
	a.idleCost += idleCost
	a.idleSecs += idleSecs
	r := &a.row
	r.Requests += c.r.Requests
	r.PromptTokens += c.r.PromptTokens
	r.CachedPromptTokens += c.r.CachedPromptTokens
	r.CompletionTokens += c.r.CompletionTokens
	r.FailedRequests += c.r.Failed
	r.FailedPromptTokens += c.r.FailedPromptTokens
	r.FailedCompletionTokens += c.r.FailedCompletionTokens
	r.CanceledRequests += c.r.Canceled
	r.InterruptedRequests += c.r.Interrupted
	r.DeviceSeconds += c.r.DeviceSeconds
	r.ActiveCostUSD += c.r.ActiveCostUSD
	r.ChargedUSD += c.r.ChargedUSD
	r.BatchRequests += c.r.Batch.Requests
	r.BatchPromptTokens += c.r.Batch.PromptTokens
	r.BatchCompletionTokens += c.r.Batch.CompletionTokens
	r.BatchChargeUSD += c.r.Batch.ChargedUSD
	k := adapterKey{c.tenantID, c.adapterID}
	u := a.adapters[k]
	if u == nil {
		u = &adapterUse{firstH: c.hour, lastH: c.hour}
		a.adapters[k] = u
	}
	u.firstH, u.lastH = min(u.firstH, c.hour), max(u.lastH, c.hour)
	u.activeCost += c.r.ActiveCostUSD
	u.deviceSeconds += c.r.DeviceSeconds
}

// buildReport groups cells into rows and splits the GPU's cost.
//
// The cost model: a request's active cost is its device seconds at its
// runtime's rate. The runtimes' cost over the period minus the active cost
// of every tenant's requests in it is the idle pool (the model kept warm).
// Under the prorata policy the idle cost of each hour in which requests
// ran goes to those requests' tenants by their share of the hour's active
// cost; what is left of the pool (idle hours with no request at all, and
// any mismatch between the runtimes' and the requests' own accounting of
// active time) goes to the period's tenants by their share of the
// period's active cost. So the rows of the operator's report add up to the
// runtimes' cost. Under the operator policy the pool stays with the
// operator.
func (l *Ledger) buildReport(s *reportSpec, cells cellSource, tot periodTotals, names map[string]string, exists func(adapterID string) bool) (*nozzle.Report, error) {
	// The idle split: each active hour's idle cost by share of the hour,
	// the rest of the pool by share of the period.
	pool := max(0, tot.capacity.CostUSD-tot.activeCostUSD)
	hourIdle, hourIdleSecs := 0.0, 0.0
	for h, a := range tot.hourActive {
		if a > 0 {
			hourIdle += tot.hourCap[h].IdleCostUSD
			hourIdleSecs += tot.hourCap[h].IdleSeconds
		}
	}
	// The requests' active time can run ahead of the runtimes' (their
	// capacity is pulled every few seconds, the requests' usage recorded
	// at once): the active hours' idle cost can then exceed the pool, and
	// is scaled down to it, so that the tenants' costs still add up to the
	// runtimes' cost.
	scale := 1.0
	if hourIdle > pool {
		scale = pool / hourIdle
	}
	rest := max(0, pool-hourIdle*scale)
	restSecs := max(0, tot.capacity.IdleSeconds-hourIdleSecs)
	if scale < 1 {
		rest, restSecs = 0, 0
	}
	prorata := l.idlePolicy == nozzle.IdleProrata && tot.activeCostUSD > 0
	cellIdle := func(c *usageCell) (float64, float64) {
		if !prorata || c.r.ActiveCostUSD == 0 {
			return 0, 0
		}
		cost := rest * c.r.ActiveCostUSD / tot.activeCostUSD
		secs := restSecs * c.r.ActiveCostUSD / tot.activeCostUSD
		if a := tot.hourActive[c.hour]; a > 0 {
			share := c.r.ActiveCostUSD / a
			cost += tot.hourCap[c.hour].IdleCostUSD * share * scale
			secs += tot.hourCap[c.hour].IdleSeconds * share * scale
		}
		return cost, secs
	}

	rows := map[rowKey]*rowAcc{}
	var order []rowKey
	all := &rowAcc{start: s.startH, end: s.endH, adapters: map[adapterKey]*adapterUse{}}
	err := cells(func(c *usageCell) {
		start, end := s.startH, s.endH
		switch {
		case s.byHour:
			start, end = c.hour, c.hour+1
		case s.byDay:
			d := dayOf(c.hour)
			start, end = max(d, s.startH), min(d+24, s.endH)
		}
		key := rowKey{start: start}
		if s.byTenant || s.byAd {
			key.tenant = c.tenantID
		}
		if s.byAd {
			key.adapter = c.adapterID
		}
		acc := rows[key]
		if acc == nil {
			acc = &rowAcc{start: start, end: end, adapters: map[adapterKey]*adapterUse{}}
			if s.byHour || s.byDay {
				acc.row.Time = hourTime(start)
			}
			if s.byTenant {
				acc.row.TenantID, acc.row.TenantName = c.tenantID, names[c.tenantID]
			}
			if s.byAd {
				acc.row.AdapterID = c.adapterID
			}
			rows[key] = acc
			order = append(order, key)
		}
		if s.byAd && c.r.AdapterName != "" {
			acc.row.AdapterName = c.r.AdapterName
		}
		ic, is := cellIdle(c)
		acc.add(c, ic, is)
		all.add(c, ic, is)
	})
	if err != nil {
		return nil, err
	}

	capRate := 0.0
	if tot.capacity.UptimeSeconds > 0 {
		capRate = tot.capacity.CostUSD / tot.capacity.UptimeSeconds * 3600
	}
	finish := func(a *rowAcc) nozzle.ReportRow {
		r := a.row
		r.IdleCostUSD, r.IdleSeconds = a.idleCost, a.idleSecs
		r.CostUSD = r.ActiveCostUSD + r.IdleCostUSD
		r.MarginUSD = r.ChargedUSD - r.CostUSD
		for k, u := range a.adapters {
			// A dedicated GPU for the adapter from its first request in
			// the row's span, not from before it was in use; for one
			// deleted since, until its last request.
			end := a.end
			if !exists(k.adapter) {
				end = min(end, u.lastH+1)
			}
			// up to now in the hour still running (its usage so far is
			// compared with a GPU kept so far, not to the hour's end)
			hours := max(0, min(float64(end), s.nowHours)-float64(max(a.start, u.firstH)))
			rate := l.dedicated
			if rate == 0 {
				if u.deviceSeconds > 0 {
					rate = u.activeCost / u.deviceSeconds * 3600
				} else {
					rate = capRate
				}
			}
			r.DedicatedUSD += hours * rate
		}
		return r
	}

	rep := &nozzle.Report{
		Start:      s.q.Start,
		End:        s.q.End,
		GroupBy:    append([]string{}, s.q.GroupBy...),
		IdlePolicy: l.idlePolicy,
		Rows:       make([]nozzle.ReportRow, 0, len(rows)),
	}
	for _, k := range order {
		rep.Rows = append(rep.Rows, finish(rows[k]))
	}
	sort.SliceStable(rep.Rows, func(i, j int) bool {
		a, b := &rep.Rows[i], &rep.Rows[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		if a.TenantName != b.TenantName {
			return a.TenantName < b.TenantName
		}
		if a.TenantID != b.TenantID {
			return a.TenantID < b.TenantID
		}
		if a.AdapterName != b.AdapterName {
			return a.AdapterName < b.AdapterName
		}
		return a.AdapterID < b.AdapterID
	})
	// The GPU's cost as it reads, and whether the rows carry all of it:
	// an operator report of every adapter, whose tenants' active costs
	// are the requests' and, under the prorata policy, whose idle costs
	// are the whole idle pool.
	gpuCost := nozzle.RoundUSD(tot.capacity.CostUSD)
	wholeGPU := s.operatorRep && s.q.AdapterName == ""
	// The rows' active and idle costs and charges are rounded together
	// (see apportionRows) so that they add up to the total's figures
	// rounded once, and the tenants' costs of a report of the whole GPU
	// under the prorata policy to the GPU's cost as it reads.
	activeUSD := apportionRows(rep.Rows, all.row.ActiveCostUSD,
		func(r *nozzle.ReportRow) *float64 { return &r.ActiveCostUSD })
	idleUSD := all.idleCost
	if wholeGPU && prorata && pool > 0 && activeUSD <= gpuCost {
		// the rows' idle costs add up to the whole pool: to the GPU's
		// cost less their active costs, as they read
		idleUSD = gpuCost - activeUSD
	}
	apportionRows(rep.Rows, idleUSD,
		func(r *nozzle.ReportRow) *float64 { return &r.IdleCostUSD })
	apportionRows(rep.Rows, all.row.ChargedUSD,
		func(r *nozzle.ReportRow) *float64 { return &r.ChargedUSD })
	apportionRows(rep.Rows, all.row.BatchChargeUSD,
		func(r *nozzle.ReportRow) *float64 { return &r.BatchChargeUSD })
	for i := range rep.Rows {
		rep.Rows[i] = roundRow(rep.Rows[i])
	}
	rep.Total = finish(all)
	if len(rep.Rows) > 0 {
		// The total's figures are the sums of the rows' as they read,
		// not sums rounded apart (which could differ in the last step);
		// a dedicated GPU over each hour or day is not summed (see
		// ReportRow).
		var active, idle, charged, batchCharged, dedicated usdSum
		var device, idleSecs secondsSum
		for i := range rep.Rows {
			r := &rep.Rows[i]
			device.add(r.DeviceSeconds)
			idleSecs.add(r.IdleSeconds)
			active.add(r.ActiveCostUSD)
			idle.add(r.IdleCostUSD)
			charged.add(r.ChargedUSD)
			batchCharged.add(r.BatchChargeUSD)
			dedicated.add(r.DedicatedUSD)
		}
		t := &rep.Total
		t.DeviceSeconds, t.IdleSeconds = device.value(), idleSecs.value()
		t.ActiveCostUSD, t.IdleCostUSD, t.ChargedUSD = active.value(), idle.value(), charged.value()
		t.BatchChargeUSD = batchCharged.value()
		if !s.byHour && !s.byDay {
			t.DedicatedUSD = dedicated.value()
		}
	}
	rep.Total = roundRow(rep.Total)
	if s.operatorRep {
		idle := pool
		if wholeGPU {
			// the GPU's cost less the tenants' active cost, as they read
			idle = max(0, nozzle.RoundUSD(gpuCost-rep.Total.ActiveCostUSD))
		}
		g := &nozzle.GPUSummary{GPUFigures: gpuFigures(&tot.capacity, idle, !prorata)}
		if tot.series != nil {
			g.Step = s.gpuStep
			g.Series = make([]nozzle.GPUBucket, len(tot.series))
			for i := range tot.series {
				g.Series[i] = l.gpuBucket(tot.bucketTime(i), &tot.series[i])
			}
		}
		g.MarginUSD = nozzle.RoundUSD(rep.Total.ChargedUSD - g.CostUSD)
		rep.GPU = g
	}
	return rep, nil
}

// gpuBucket returns the GPU figures of one bucket of the series: those of
// GPUSummary for a period of that bucket alone.
func (l *Ledger) gpuBucket(t time.Time, a *gpuAcc) nozzle.GPUBucket {
	idle := max(0, a.capacity.CostUSD-a.activeCost)
	return nozzle.GPUBucket{Time: t,
		GPUFigures: gpuFigures(&a.capacity, idle, !(l.idlePolicy == nozzle.IdleProrata && a.activeCost > 0))}
}

// gpuFigures are the figures of capacity c whose idle time costs idleCost,
// all of it left with the operator when operatorKeepsIdle: rounded once
// each (seconds with nozzle.RoundSeconds, USD with nozzle.RoundUSD), the
// utilization computed from the rounded seconds and rounded with
// nozzle.RoundRatio.
func gpuFigures(c *capHour, idleCost float64, operatorKeepsIdle bool) nozzle.GPUFigures {
	idleCost = nozzle.RoundUSD(idleCost)
	f := nozzle.GPUFigures{UptimeSeconds: nozzle.RoundSeconds(c.UptimeSeconds), ActiveSeconds: nozzle.RoundSeconds(c.ActiveSeconds),
		IdleSeconds: nozzle.RoundSeconds(c.IdleSeconds), CostUSD: nozzle.RoundUSD(c.CostUSD), IdleCostUSD: idleCost}
	if f.UptimeSeconds > 0 {
		f.Utilization = nozzle.RoundRatio(f.ActiveSeconds / f.UptimeSeconds)
	}
	if operatorKeepsIdle {
		f.OperatorIdleUSD = idleCost
	}
	return f
}

// roundRow rounds a finished row's USD figures with nozzle.RoundUSD, once
// each: the active and idle cost, the charge and the dedicated GPU as
// summed, then the cost and the margin from the rounded figures, so that
// cost = active + idle and margin = charged − cost hold as the row reads.
// Its device and idle seconds are rounded with nozzle.RoundSeconds, and the
// saving is computed from the rounded cost and dedicated GPU and rounded
// with nozzle.RoundRatio.
func roundRow(r nozzle.ReportRow) nozzle.ReportRow {
	r.DeviceSeconds = nozzle.RoundSeconds(r.DeviceSeconds)
	r.IdleSeconds = nozzle.RoundSeconds(r.IdleSeconds)
	r.ActiveCostUSD = nozzle.RoundUSD(r.ActiveCostUSD)
	r.IdleCostUSD = nozzle.RoundUSD(r.IdleCostUSD)
	r.CostUSD = nozzle.RoundUSD(r.ActiveCostUSD + r.IdleCostUSD)
	r.ChargedUSD = nozzle.RoundUSD(r.ChargedUSD)
	r.BatchChargeUSD = nozzle.RoundUSD(r.BatchChargeUSD)
	r.MarginUSD = nozzle.RoundUSD(r.ChargedUSD - r.CostUSD)
	r.DedicatedUSD = nozzle.RoundUSD(r.DedicatedUSD)
	r.SavingPercent = 0
	if r.DedicatedUSD > 0 {
		r.SavingPercent = nozzle.RoundRatio((1 - r.CostUSD/r.DedicatedUSD) * 100)
	}
	return r
}

// apportionRows rounds one USD figure of rows (the one field returns)
// with nozzle.RoundUSD's step so that the rows add up to total rounded
// once (see apportion), and returns that sum; figures too large for whole
// steps are rounded apart.
func apportionRows(rows []nozzle.ReportRow, total float64, field func(*nozzle.ReportRow) *float64) float64 {
	xs := make([]float64, len(rows))
	for i := range rows {
		xs[i] = *field(&rows[i])
	}
	ys, sum := apportion[usdGrid](xs, total)
	for i := range rows {
		*field(&rows[i]) = ys[i]
	}
	return sum
}

// apportion rounds figures xs, parts of total, to grid G so that they add
// up exactly to total rounded to G: by the largest remainder method, each
// is rounded down to the grid and the steps still missing go one each to
// the figures with the largest remainders (the first of equal ones). Each
// figure then reads within one step of its exact value (total being their
// exact sum, or within a step of it) and the figures read as their sum, so
// a column of rows adds up to its total as both read, the total being
// the period's figure rounded once. It returns the figures and their sum.
// Where a figure or the total is too large for whole steps (see RoundUSD),
// each figure is rounded apart and their sum is a gridSum's.
func apportion[G grid](xs []float64, total float64) ([]float64, float64) {
	var g G
	ys := make([]float64, len(xs))
	steps := make([]int64, len(xs))
	rem := make([]float64, len(xs))
	target := math.Round(total * g.scale())
	fits := math.Abs(target) < 1<<53
	var sum int64
	for i, x := range xs {
		s := x * g.scale()
		if !(math.Abs(s) < 1<<53) || sum > 1<<62 || sum < -1<<62 {
			fits = false
			break
		}
		f := math.Floor(s)
		steps[i], rem[i] = int64(f), s-f
		sum += int64(f)
	}
	if !fits {
		var u gridSum[G]
		for i, x := range xs {
			ys[i] = g.round(x)
			u.add(ys[i])
		}
		return ys, u.value()
	}
	// The steps go to figures other than zero (a row with no idle cost
	// gets none), unless all are.
	order := make([]int, 0, len(xs))
	for i, x := range xs {
		if x != 0 {
			order = append(order, i)
		}
	}
	if len(order) == 0 {
		for i := range xs {
			order = append(order, i)
		}
	}
	missing := int64(target) - sum
	if missing >= 0 {
		// largest remainders first
		sort.SliceStable(order, func(a, b int) bool { return rem[order[a]] > rem[order[b]] })
	} else {
		// a total a step below the figures' floors (one given, not their
		// sum): smallest remainders first, figures a step or more above
		// zero first
		sort.SliceStable(order, func(a, b int) bool {
			i, j := order[a], order[b]
			if (steps[i] > 0) != (steps[j] > 0) {
				return steps[i] > 0
			}
			return rem[i] < rem[j]
		})
	}
	for n := int64(0); len(order) > 0 && n < max(missing, -missing); n++ {
		i := order[n%int64(len(order))]
		if missing > 0 {
			steps[i]++
		} else {
			steps[i]--
		}
	}
	if len(order) == 0 {
		return ys, 0
	}
	for i := range ys {
		ys[i] = g.round(float64(steps[i]) / g.scale())
	}
	return ys, g.round(target / g.scale())
}

// gridSum adds figures rounded to a grid (G's: nozzle.RoundUSD's 1e-10
// USD, nozzle.RoundSeconds' nanosecond) exactly: as whole steps of the
// grid, so that the sum of many rows is not off their grid by the float
// additions' errors. Figures too large for whole steps (see RoundUSD) fall
// back to a float sum, rounded.
type gridSum[G grid] struct {
	steps int64
	float float64
	large bool
}

// grid is a rounding of report figures: its steps in a unit, and the
// rounding itself.
type grid interface {
	scale() float64
	round(float64) float64
}

type usdGrid struct{}

func (usdGrid) scale() float64          { return 1 / nozzle.USDPrecision }
func (usdGrid) round(x float64) float64 { return nozzle.RoundUSD(x) }

type secondsGrid struct{}

func (secondsGrid) scale() float64          { return 1 / nozzle.SecondsPrecision }
func (secondsGrid) round(x float64) float64 { return nozzle.RoundSeconds(x) }

// usdSum sums USD figures, secondsSum durations in seconds.
type (
	usdSum     = gridSum[usdGrid]
	secondsSum = gridSum[secondsGrid]
)

func (u *gridSum[G]) add(x float64) {
	var g G
	u.float += x
	s := math.Round(x * g.scale())
	if u.large || !(math.Abs(s) < 1<<53) || u.steps > 1<<62 || u.steps < -1<<62 {
		u.large = true
		return
	}
	u.steps += int64(s)
}

func (u *gridSum[G]) value() float64 {
	var g G
	if u.large || u.steps >= 1<<53 || u.steps <= -1<<53 {
		return g.round(u.float)
	}
	return g.round(float64(u.steps) / g.scale())
}

// dayOf returns the first hour of the UTC day holding hour h.
func dayOf(h int64) int64 {
	d := h / 24
	if h < 0 && h%24 != 0 {
		d--
	}
	return d * 24
}
