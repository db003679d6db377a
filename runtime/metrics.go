package runtime

import "github.com/nozzle-ai/nozzle/internal/metrics"

// runtimeMetrics are the runtime's Prometheus metrics.
type runtimeMetrics struct {
	queueDepth      metrics.Gauge
	running         metrics.Gauge
	batchSeqs       metrics.Histogram
	batchTokens     metrics.Histogram
	stepSeconds     metrics.Histogram
	kvUsed          metrics.Gauge
	kvFree          metrics.Gauge
	kvCached        metrics.Gauge
	prefixHitTokens metrics.Counter
	slotsUsed       metrics.Gauge
	slotsPinned     metrics.Gauge
	tokensGenerated metrics.Counter
	specDrafted     metrics.Counter
	specAccepted    metrics.Counter
	promptTokens    metrics.Counter
	preemptions     metrics.Counter
	fairPreemptions metrics.Counter
	requests        metrics.CounterVec // by outcome
	constrained     metrics.CounterVec // by kind

	adapterHits        metrics.CounterVec // by tier
	adapterMisses      metrics.CounterVec
	adapterLoads       metrics.CounterVec
	adapterEvictions   metrics.CounterVec
	adapterDrops       metrics.CounterVec
	adapterLoadSeconds metrics.HistogramVec
	hostCacheBytes     metrics.Gauge
}

// The metric of adapters dropped because they were deleted, which the
// runtime (host, device) and a RemoteSource (disk) both count.
const (
	adapterDropsName = "nozzle_runtime_adapter_drops_total"
	adapterDropsHelp = "Deleted adapters dropped from a tier."
)

var sizeBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192}

func newRuntimeMetrics(r *metrics.Registry, utilisation func() float64) *runtimeMetrics {
	m := &runtimeMetrics{
		queueDepth:      r.Gauge("nozzle_runtime_queue_depth", "Requests waiting for admission."),
		running:         r.Gauge("nozzle_runtime_running_sequences", "Sequences admitted and running."),
		batchSeqs:       r.Histogram("nozzle_runtime_batch_sequences", "Sequences per engine step.", sizeBuckets),
		batchTokens:     r.Histogram("nozzle_runtime_batch_tokens", "Tokens per engine step.", sizeBuckets),
		stepSeconds:     r.Histogram("nozzle_runtime_step_seconds", "Wall time of engine steps.", metrics.LatencyBuckets),
		kvUsed:          r.Gauge("nozzle_runtime_kv_blocks_used", "KV cache blocks in use."),
		kvFree:          r.Gauge("nozzle_runtime_kv_blocks_free", "KV cache blocks a sequence may take: free, or cached by the prefix cache and unused."),
		kvCached:        r.Gauge("nozzle_runtime_kv_blocks_cached", "KV cache blocks the prefix cache remembers (in use or not)."),
		prefixHitTokens: r.Counter("nozzle_runtime_prefix_cache_hit_tokens_total", "Tokens whose keys and values came from the prefix cache instead of a prefill."),
		slotsUsed:       r.Gauge("nozzle_runtime_adapter_slots_used", "Engine adapter slots holding an adapter."),
		slotsPinned:     r.Gauge("nozzle_runtime_adapter_slots_pinned", "Engine adapter slots used by running sequences."),
		tokensGenerated: r.Counter("nozzle_runtime_tokens_generated_total", "Completion tokens generated."),
		specDrafted:     r.Counter("nozzle_runtime_spec_drafted_tokens_total", "Tokens drafted by prompt lookup for speculative decoding and verified in engine steps."),
		specAccepted:    r.Counter("nozzle_runtime_spec_accepted_tokens_total", "Drafted tokens the engine's verification accepted (each saves a decode step)."),
		promptTokens:    r.Counter("nozzle_runtime_prompt_tokens_total", "Prompt tokens admitted."),
		preemptions:     r.Counter("nozzle_runtime_preemptions_total", "Sequences preempted for recompute (KV blocks ran out, or a tenant over its share of the batch made room for another)."),
		fairPreemptions: r.Counter("nozzle_runtime_fair_preemptions_total", "Sequences of a tenant over its share of the batch preempted to admit another tenant's."),
		requests:        r.CounterVec("nozzle_runtime_requests_total", "Requests finished, by outcome.", "outcome"),
		constrained:     r.CounterVec("nozzle_runtime_constrained_requests_total", "Requests whose output a response format, a forced tool call or strict functions constrain, by kind (json_object, json_schema, regex, tool_call, strict_tool_calls).", "kind"),

		adapterHits:        r.CounterVec("nozzle_runtime_adapter_cache_hits_total", "Adapter lookups found in a tier.", "tier"),
		adapterMisses:      r.CounterVec("nozzle_runtime_adapter_cache_misses_total", "Adapter lookups not found in a tier.", "tier"),
		adapterLoads:       r.CounterVec("nozzle_runtime_adapter_loads_total", "Adapters brought into a tier.", "tier"),
		adapterEvictions:   r.CounterVec("nozzle_runtime_adapter_evictions_total", "Adapters evicted from a tier.", "tier"),
		adapterDrops:       r.CounterVec(adapterDropsName, adapterDropsHelp, "tier"),
		adapterLoadSeconds: r.HistogramVec("nozzle_runtime_adapter_load_seconds", "Time to bring an adapter into a tier.", metrics.LatencyBuckets, "tier"),
		hostCacheBytes:     r.Gauge("nozzle_runtime_adapter_host_cache_bytes", "Host memory held by cached adapters."),
	}
	r.GaugeFunc("nozzle_runtime_device_utilisation", "Share of uptime spent in engine steps.", utilisation)
	return m
}
