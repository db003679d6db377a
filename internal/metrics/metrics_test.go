package metrics_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle/internal/metrics"
)

func TestRegistry_WriteTo(t *testing.T) {
	r := metrics.NewRegistry()
	reqs := r.CounterVec("nozzle_requests_total", "Requests by route and status.", "route", "status")
	reqs.With("/v1/completions", "200").Add(2)
	reqs.With("/v1/chat/completions", "429").Inc()
	r.Gauge("nozzle_queue_depth", "Queued sequences.").Set(3)
	r.GaugeFunc("nozzle_up", "Always 1.", func() float64 { return 1 })
	h := r.Histogram("nozzle_latency_seconds", "Latency.", []float64{0.1, 1})
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)

	var b strings.Builder
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	want := `# HELP nozzle_latency_seconds Latency.
# TYPE nozzle_latency_seconds histogram
nozzle_latency_seconds_bucket{le="0.1"} 1
nozzle_latency_seconds_bucket{le="1"} 2
nozzle_latency_seconds_bucket{le="+Inf"} 3
nozzle_latency_seconds_sum 5.55
nozzle_latency_seconds_count 3
# HELP nozzle_queue_depth Queued sequences.
# TYPE nozzle_queue_depth gauge
nozzle_queue_depth 3
# HELP nozzle_requests_total Requests by route and status.
# TYPE nozzle_requests_total counter
nozzle_requests_total{route="/v1/chat/completions",status="429"} 1
nozzle_requests_total{route="/v1/completions",status="200"} 2
# HELP nozzle_up Always 1.
# TYPE nozzle_up gauge
nozzle_up 1
`
	if got := b.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestCounter_Concurrent(t *testing.T) {
	r := metrics.NewRegistry()
	c := r.Counter("c_total", "c")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Inc()
			}
		}()
	}
	wg.Wait()
	var b strings.Builder
	r.WriteTo(&b)
	if !strings.Contains(b.String(), "c_total 8000\n") {
		t.Fatalf("got %s", b.String())
	}
}
