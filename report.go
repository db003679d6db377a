package nozzle

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Report group keys.
const (
	GroupHour    = "hour"
	GroupDay     = "day"
	GroupAdapter = "adapter"
	GroupTenant  = "tenant"
)

// Idle-time policies: who carries the cost of the model kept warm while no
// step runs.
const (
	IdleProrata  = "prorata"  // spread over tenants by active share in the period
	IdleOperator = "operator" // left with the operator
)

// ReportQuery selects and groups usage for a report.
type ReportQuery struct {
	// TenantID limits the report to one tenant; empty means every tenant
	// (the operator's report).
	TenantID string
	// AdapterName limits the report to one adapter of the tenant, or with
	// BaseModelAlias to the base model's usage.
	AdapterName string
	// Start is inclusive, End exclusive; both are truncated to the hour.
	Start, End time.Time
	// GroupBy lists group keys (GroupHour, GroupDay, GroupAdapter,
	// GroupTenant); empty means one row.
	GroupBy []string
	// GPUStep asks an operator report for the GPU's capacity per UTC hour
	// (GroupHour) or day (GroupDay) in GPUSummary.Series, whatever the rows
	// are grouped by. Empty means the query's own time group: a report
	// grouped by hour or day carries the series at that step, any other
	// none. Tenant reports carry no GPU figures and ignore it.
	GPUStep string
}

// ReportRow is the usage and cost of one group (or the total).
type ReportRow struct {
	// Group fields; zero when not grouped by them.
	Time        time.Time `json:"time,omitzero"` // start of the hour or day
	TenantID    string    `json:"tenant_id,omitempty"`
	TenantName  string    `json:"tenant,omitempty"`
	AdapterID   string    `json:"adapter_id,omitempty"`
	AdapterName string    `json:"adapter,omitempty"`

	Requests     int64 `json:"requests"`
	PromptTokens int64 `json:"prompt_tokens"`
	// CachedPromptTokens is the part of PromptTokens served from the
	// runtime's prefix cache.
	CachedPromptTokens int64 `json:"cached_prompt_tokens"`
	CompletionTokens   int64 `json:"completion_tokens"`
	// FailedRequests are those the runtime failed, and FailedPromptTokens
	// and FailedCompletionTokens their part of the tokens above: charged
	// nothing and left out of Stripe's counts (the tokens billed are the
	// others).
	FailedRequests         int64 `json:"failed_requests"`
	FailedPromptTokens     int64 `json:"failed_prompt_tokens"`
	FailedCompletionTokens int64 `json:"failed_completion_tokens"`
	// CanceledRequests are those cut short after all but not by the
	// runtime's fault (the client went away, or a stream that had sent
	// text ran out of time or had a choice refused), charged for the
	// tokens produced;
	// InterruptedRequests are streams the gateway's crash cut short,
	// charged from their last checkpoint. Both are counted in Requests.
	CanceledRequests    int64 `json:"canceled_requests"`
	InterruptedRequests int64 `json:"interrupted_requests"`
	// BatchRequests are those the Batch API ran (UsageEvent.Batch), and
	// BatchPromptTokens, BatchCompletionTokens and BatchChargeUSD their
	// part of the tokens and of ChargedUSD (priced at the batch
	// discount). Requests, the tokens and ChargedUSD stay the totals of
	// every request.
	BatchRequests         int64   `json:"batch_requests"`
	BatchPromptTokens     int64   `json:"batch_prompt_tokens"`
	BatchCompletionTokens int64   `json:"batch_completion_tokens"`
	BatchChargeUSD        float64 `json:"batch_charge_usd"`
	// DeviceSeconds is active device time; IdleSeconds the share of idle
	// time allocated to the group.
	DeviceSeconds float64 `json:"device_seconds"`
	IdleSeconds   float64 `json:"idle_seconds"`
	// ActiveCostUSD + IdleCostUSD = CostUSD: the group's share of the
	// GPU's cost.
	ActiveCostUSD float64 `json:"active_cost_usd"`
	IdleCostUSD   float64 `json:"idle_cost_usd"`
	CostUSD       float64 `json:"cost_usd"`
	// ChargedUSD is what was charged at the prices in force; MarginUSD is
	// ChargedUSD − CostUSD.
	ChargedUSD float64 `json:"charged_usd"`
	MarginUSD  float64 `json:"margin_usd"`
	// DedicatedUSD is what an always-on dedicated GPU would have cost over
	// the period (per adapter for adapter rows); SavingPercent compares
	// CostUSD with it.
	DedicatedUSD  float64 `json:"dedicated_usd"`
	SavingPercent float64 `json:"saving_percent"`
}

// Outcomes says how many of the row's requests ended without their full
// answer, as the console and `nozzle report`'s table word it: "2 failed,
// not charged · 5 canceled, charged for what they produced · 1
// interrupted by a restart" (canceled whatever cut it short: the client,
// a timeout or a refused choice after text was sent, see
// CanceledRequests; interrupted by a crash of the gateway, charged when
// it starts again), leaving out the kinds there are none of ("" when
// every request ended normally), each count written by count.
func (r *ReportRow) Outcomes(count func(int64) string) string {
	var parts []string
	for _, o := range []struct {
		n    int64
		what string
	}{
		{r.FailedRequests, "failed, not charged"},
		{r.CanceledRequests, "canceled, charged for what they produced"},
		{r.InterruptedRequests, "interrupted by a restart"},
	} {
		if o.n > 0 {
			parts = append(parts, count(o.n)+" "+o.what)
		}
	}
	return strings.Join(parts, " · ")
}

// LabelBaseRows names the base model's rows of a report grouped by
// adapter as requests name it (BaseModelAlias, never an adapter's name),
// so that every row carries its group's field.
func (r *Report) LabelBaseRows() {
	if !slices.Contains(r.GroupBy, GroupAdapter) {
		return
	}
	for i := range r.Rows {
		if r.Rows[i].AdapterID == "" && r.Rows[i].AdapterName == "" {
			r.Rows[i].AdapterName = BaseModelAlias
		}
	}
}

// Report is a usage and cost report over a period.
type Report struct {
	Start      time.Time   `json:"start"`
	End        time.Time   `json:"end"`
	GroupBy    []string    `json:"group_by"`
	IdlePolicy string      `json:"idle_policy"`
	Rows       []ReportRow `json:"data"`
	Total      ReportRow   `json:"total"`
	// GPU is the capacity side of the period: filled in operator reports.
	GPU *GPUSummary `json:"gpu,omitempty"`
	// Outbox is the Stripe outbox state: filled in operator reports.
	Outbox *OutboxState `json:"outbox,omitempty"`
}

// GPUFigures are runtimes' capacity over a stretch of time and its cost.
type GPUFigures struct {
	UptimeSeconds float64 `json:"uptime_seconds"`
	ActiveSeconds float64 `json:"active_seconds"`
	IdleSeconds   float64 `json:"idle_seconds"`
	Utilization   float64 `json:"utilization"` // ActiveSeconds / UptimeSeconds, rounded with RoundRatio
	CostUSD       float64 `json:"cost_usd"`
	// IdleCostUSD is the cost of idle time (beyond the requests' active
	// cost); OperatorIdleUSD the part of it not allocated to tenants (all
	// of it under the operator policy).
	IdleCostUSD     float64 `json:"idle_cost_usd"`
	OperatorIdleUSD float64 `json:"operator_idle_usd"`
}

// GPUSummary is runtimes' capacity over a report's period.
type GPUSummary struct {
	GPUFigures
	// MarginUSD is the period's charges less the whole GPU's cost: the
	// operator's margin. Under the operator policy it is below the Total
	// row's margin by OperatorIdleUSD (the rows are the tenants' shares,
	// which leave that idle time out).
	MarginUSD float64 `json:"margin_usd"`
	// Step is the series' step (GroupHour or GroupDay); empty when the
	// report carries no series.
	Step string `json:"step,omitempty"`
	// Series is the capacity hour by hour or day by day (UTC) over the
	// period, oldest first, one entry for every hour or day measured
	// (zeros where no runtime was up); see ReportQuery.GPUStep. Each entry
	// holds the figures that an operator report over its hour or day alone
	// gives, so the series adds up to the period's uptime, active and idle
	// seconds and cost.
	Series []GPUBucket `json:"series,omitempty"`
}

// GPUBucket is runtimes' capacity over one hour or day of a report's
// period, with the figures a report over that hour or day alone gives.
type GPUBucket struct {
	// Time is the start of the hour or UTC day; a day cut by the period's
	// start or end covers only the hours inside the period.
	Time time.Time `json:"time"`
	GPUFigures
}

// OutboxState summarises the Stripe outbox.
type OutboxState struct {
	Enabled bool `json:"enabled"`
	Pending int  `json:"pending"`
	Sent    int  `json:"sent"`
	Failing int  `json:"failing"`
	// NeedsReview counts rows parked because an attempt with an unknown
	// outcome is older than Stripe's deduplication window; Expired counts
	// rows older than Stripe accepts. Neither is sent without an operator.
	NeedsReview int       `json:"needs_review"`
	Expired     int       `json:"expired"`
	LastError   string    `json:"last_error,omitempty"`
	LastSentAt  time.Time `json:"last_sent_at,omitzero"`
}

// Reporter produces usage and cost reports. Every USD figure of a report
// is rounded with RoundUSD, every seconds figure with RoundSeconds and the
// utilization and saving percent with RoundRatio, and the total's USD and
// seconds figures are the sums of the rows' (a dedicated GPU by hour or day
// aside, see ReportRow.DedicatedUSD). The rows' active and idle costs and
// charges are rounded together (largest remainder), so that they add up
// to the period's figures rounded once, and in an operator report the
// tenants' costs (with OperatorIdleUSD) to the GPU's CostUSD as it reads.
type Reporter interface {
	// Report returns the report for q. Returns EINVALID for a bad period or
	// an unknown group key.
	Report(ctx context.Context, q ReportQuery) (*Report, error)
}
