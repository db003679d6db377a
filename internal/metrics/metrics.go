// Package metrics is a small registry of counters, gauges and histograms
// that renders the Prometheus text exposition format (version 0.0.4). The
// parts of Nozzle register their metrics in one Registry that the gateway
// serves at /metrics.
package metrics

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families by name.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{families: map[string]*family{}} }

type kind int

const (
	counterKind kind = iota
	gaugeKind
	histogramKind
)

type family struct {
	name, help string
	kind       kind
	labels     []string
	buckets    []float64
	mu         sync.Mutex
	series     map[string]*series
	collect    func() float64 // gauge func with no labels
}

type series struct {
	labelValues []string
	bits        atomic.Uint64 // float64 bits: counter or gauge value
	hmu         sync.Mutex
	counts      []uint64
	sum         float64
	count       uint64
}

func (r *Registry) family(name, help string, k kind, labels []string, buckets []float64) *family {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.families[name]; ok {
		if f.kind != k || strings.Join(f.labels, ",") != strings.Join(labels, ",") {
			panic("metrics: " + name + " registered twice with different shapes")
		}
		return f
	}
	f := &family{name: name, help: help, kind: k, labels: labels, buckets: buckets, series: map[string]*series{}}
	r.families[name] = f
	return f
}

func (f *family) with(values []string) *series {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("metrics: %s wants %d label values, got %d", f.name, len(f.labels), len(values)))
	}
	key := strings.Join(values, "\xff")
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.series[key]
	if !ok {
		s = &series{labelValues: append([]string(nil), values...)}
		if f.kind == histogramKind {
			s.counts = make([]uint64, len(f.buckets))
		}
		f.series[key] = s
	}
	return s
}

// Counter is a monotonically increasing value.
type Counter struct{ s *series }

// Add adds v (which must not be negative).
func (c Counter) Add(v float64) {
	for {
		old := c.s.bits.Load()
		if c.s.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Inc adds one.
func (c Counter) Inc() { c.Add(1) }

// Gauge is a value that goes up and down.
type Gauge struct{ s *series }

// Set sets the value.
func (g Gauge) Set(v float64) { g.s.bits.Store(math.Float64bits(v)) }

// Add adds v (which may be negative).
func (g Gauge) Add(v float64) { Counter(g).Add(v) }

// Histogram counts observations into cumulative buckets.
type Histogram struct {
	s       *series
	buckets []float64
}

// Observe records one observation.
func (h Histogram) Observe(v float64) {
	h.s.hmu.Lock()
	for i, b := range h.buckets {
		if v <= b {
			h.s.counts[i]++
		}
	}
	h.s.sum += v
	h.s.count++
	h.s.hmu.Unlock()
}

// CounterVec is a counter family with labels.
type CounterVec struct{ f *family }

// With returns the counter for the label values, in label order.
func (v CounterVec) With(values ...string) Counter { return Counter{v.f.with(values)} }

// GaugeVec is a gauge family with labels.
type GaugeVec struct{ f *family }

// With returns the gauge for the label values, in label order.
func (v GaugeVec) With(values ...string) Gauge { return Gauge{v.f.with(values)} }

// HistogramVec is a histogram family with labels.
type HistogramVec struct{ f *family }

// With returns the histogram for the label values, in label order.
func (v HistogramVec) With(values ...string) Histogram {
	return Histogram{v.f.with(values), v.f.buckets}
}

// Counter registers (or returns) a counter without labels.
func (r *Registry) Counter(name, help string) Counter {
	return Counter{r.family(name, help, counterKind, nil, nil).with(nil)}
}

// CounterVec registers (or returns) a counter family with labels.
func (r *Registry) CounterVec(name, help string, labels ...string) CounterVec {
	return CounterVec{r.family(name, help, counterKind, labels, nil)}
}

// Gauge registers (or returns) a gauge without labels.
func (r *Registry) Gauge(name, help string) Gauge {
	return Gauge{r.family(name, help, gaugeKind, nil, nil).with(nil)}
}

// GaugeVec registers (or returns) a gauge family with labels.
func (r *Registry) GaugeVec(name, help string, labels ...string) GaugeVec {
	return GaugeVec{r.family(name, help, gaugeKind, labels, nil)}
}

// GaugeFunc registers a gauge whose value is read by fn at scrape time.
func (r *Registry) GaugeFunc(name, help string, fn func() float64) {
	f := r.family(name, help, gaugeKind, nil, nil)
	f.mu.Lock()
	f.collect = fn
	f.mu.Unlock()
}

// Histogram registers (or returns) a histogram without labels.
func (r *Registry) Histogram(name, help string, buckets []float64) Histogram {
	return r.HistogramVec(name, help, buckets).With()
}

// HistogramVec registers (or returns) a histogram family with labels.
// Buckets are upper bounds in increasing order; +Inf is implied.
func (r *Registry) HistogramVec(name, help string, buckets []float64, labels ...string) HistogramVec {
	if !sort.Float64sAreSorted(buckets) {
		panic("metrics: buckets of " + name + " are not sorted")
	}
	return HistogramVec{r.family(name, help, histogramKind, labels, append([]float64(nil), buckets...))}
}

// LatencyBuckets are bucket bounds in seconds for request latencies.
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// WriteTo writes every family in the Prometheus text format, sorted by
// name.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })

	var b strings.Builder
	for _, f := range fams {
		f.write(&b)
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func (f *family) write(b *strings.Builder) {
	typ := [...]string{"counter", "gauge", "histogram"}[f.kind]
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, typ)
	f.mu.Lock()
	collect := f.collect
	ss := make([]*series, 0, len(f.series))
	for _, s := range f.series {
		ss = append(ss, s)
	}
	f.mu.Unlock()
	if collect != nil {
		fmt.Fprintf(b, "%s %s\n", f.name, formatFloat(collect()))
		return
	}
	sort.Slice(ss, func(i, j int) bool {
		return strings.Join(ss[i].labelValues, "\xff") < strings.Join(ss[j].labelValues, "\xff")
	})
	for _, s := range ss {
		if f.kind != histogramKind {
			fmt.Fprintf(b, "%s%s %s\n", f.name, labelString(f.labels, s.labelValues, "", ""), formatFloat(math.Float64frombits(s.bits.Load())))
			continue
		}
		s.hmu.Lock()
		for i, ub := range f.buckets {
			fmt.Fprintf(b, "%s_bucket%s %d\n", f.name, labelString(f.labels, s.labelValues, "le", formatFloat(ub)), s.counts[i])
		}
		fmt.Fprintf(b, "%s_bucket%s %d\n", f.name, labelString(f.labels, s.labelValues, "le", "+Inf"), s.count)
		fmt.Fprintf(b, "%s_sum%s %s\n", f.name, labelString(f.labels, s.labelValues, "", ""), formatFloat(s.sum))
		fmt.Fprintf(b, "%s_count%s %d\n", f.name, labelString(f.labels, s.labelValues, "", ""), s.count)
		s.hmu.Unlock()
	}
}

func labelString(names, values []string, extraName, extraValue string) string {
	if len(names) == 0 && extraName == "" {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", n, escapeLabel(values[i]))
	}
	if extraName != "" {
		if len(names) > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", extraName, extraValue)
	}
	b.WriteByte('}')
	return b.String()
}

func escapeLabel(s string) string {
	// %q escapes backslashes, quotes and newlines the way Prometheus wants
	// for ASCII; strip other control characters.
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' {
			return -1
		}
		return r
	}, s)
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
