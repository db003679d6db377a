package gateway

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nozzle-ai/nozzle/internal/metrics"
)

// Metric names. Labels are bounded: route is the route pattern (not the
// path), code the HTTP status, model_kind "base" or "adapter".
const (
	metricRequests     = "nozzle_gateway_requests_total"
	metricDuration     = "nozzle_gateway_request_duration_seconds"
	metricInflight     = "nozzle_gateway_inflight_requests"
	metricTokens       = "nozzle_gateway_tokens_total"
	metricRejected     = "nozzle_gateway_rejected_total"
	metricUpHealthy    = "nozzle_gateway_upstream_healthy"
	metricFailovers    = "nozzle_gateway_upstream_failovers_total"
	metricTTFT         = "nozzle_gateway_time_to_first_token_seconds"
	metricUsageErrors  = "nozzle_gateway_usage_record_errors_total"
	metricUsageRecords = "nozzle_gateway_usage_events_total"
	metricReplays      = "nozzle_gateway_idempotent_replays_total"
	metricCheckpoints  = "nozzle_gateway_stream_checkpoints_total"
	metricCheckpointEr = "nozzle_gateway_stream_checkpoint_errors_total"
)

type gatewayMetrics struct {
	reg       *metrics.Registry
	requests  metrics.CounterVec
	duration  metrics.HistogramVec
	inflight  metrics.Gauge
	tokens    metrics.CounterVec
	rejected  metrics.CounterVec
	healthy   metrics.GaugeVec
	failovers metrics.CounterVec
	ttft      metrics.Histogram
	usageErrs metrics.Counter
	usageRecs metrics.CounterVec
	replays   metrics.Counter

	checkpoints, checkpointErrs metrics.Counter

	// Token counters by kind, resolved once.
	promptBase, completionBase, promptAdapter, completionAdapter metrics.Counter

	routesMu sync.Mutex
	routes   atomic.Pointer[map[string]*routeMetrics] // copy on write
}

func newGatewayMetrics(reg *metrics.Registry) *gatewayMetrics {
	m := &gatewayMetrics{
		reg:       reg,
		requests:  reg.CounterVec(metricRequests, "HTTP requests answered by the gateway, by route pattern and status.", "route", "code"),
		duration:  reg.HistogramVec(metricDuration, "Time from request to the end of the answer (streams included), by route pattern.", metrics.LatencyBuckets, "route"),
		inflight:  reg.Gauge(metricInflight, "Requests being handled now (streams count until their handler returns)."),
		tokens:    reg.CounterVec(metricTokens, "Tokens metered, by kind (prompt, completion) and model kind (base, adapter).", "kind", "model_kind"),
		rejected:  reg.CounterVec(metricRejected, "Requests refused at admission, by reason (requests, tokens, budget).", "reason"),
		healthy:   reg.GaugeVec(metricUpHealthy, "1 if the upstream's last health check succeeded, else 0.", "upstream"),
		failovers: reg.CounterVec(metricFailovers, "Requests moved off an upstream that could not take them.", "upstream"),
		ttft:      reg.Histogram(metricTTFT, "Time from request to the first streamed token.", metrics.LatencyBuckets),
		usageErrs: reg.Counter(metricUsageErrors, "Usage events the ledger failed to record."),
		usageRecs: reg.CounterVec(metricUsageRecords, "Usage events recorded, by status.", "status"),
		replays:   reg.Counter(metricReplays, "Requests answered from the ledger for a repeated Idempotency-Key."),

		checkpoints:    reg.Counter(metricCheckpoints, "Usage checkpoints of running streams written to the ledger."),
		checkpointErrs: reg.Counter(metricCheckpointEr, "Usage checkpoints of running streams the ledger failed to write."),
	}
	m.promptBase = m.tokens.With("prompt", "base")
	m.completionBase = m.tokens.With("completion", "base")
	m.promptAdapter = m.tokens.With("prompt", "adapter")
	m.completionAdapter = m.tokens.With("completion", "adapter")
	empty := map[string]*routeMetrics{}
	m.routes.Store(&empty)
	return m
}

// routeMetrics are one route's counters, resolved lazily per status code
// so that the hot path takes no lock.
type routeMetrics struct {
	name     string
	parent   *gatewayMetrics
	duration metrics.Histogram
	codes    [600]atomic.Pointer[metrics.Counter]
}

func (r *routeMetrics) observe(status int, d time.Duration) {
	r.duration.Observe(d.Seconds())
	if status < 100 || status >= 600 {
		status = 500
	}
	c := r.codes[status].Load()
	if c == nil {
		v := r.parent.requests.With(r.name, strconv.Itoa(status))
		c = &v
		r.codes[status].Store(c)
	}
	c.Inc()
}

// route returns the metrics of a route pattern. A request that matched no
// route (only the "/" middleware) is counted under "unmatched".
func (m *gatewayMetrics) route(pattern, path string) *routeMetrics {
	if pattern == "/" && path != "/" {
		pattern = "unmatched"
	}
	if r, ok := (*m.routes.Load())[pattern]; ok {
		return r
	}
	m.routesMu.Lock()
	defer m.routesMu.Unlock()
	old := *m.routes.Load()
	if r, ok := old[pattern]; ok {
		return r
	}
	r := &routeMetrics{name: pattern, parent: m, duration: m.duration.With(pattern)}
	next := make(map[string]*routeMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[pattern] = r
	m.routes.Store(&next)
	return r
}

func (m *gatewayMetrics) countTokens(adapter bool, prompt, completion int64) {
	if adapter {
		m.promptAdapter.Add(float64(prompt))
		m.completionAdapter.Add(float64(completion))
		return
	}
	m.promptBase.Add(float64(prompt))
	m.completionBase.Add(float64(completion))
}
