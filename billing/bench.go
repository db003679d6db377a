package billing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// BenchOptions configure Bench. Zero values take the defaults shown.
type BenchOptions struct {
	// Dir holds the benchmark's ledger files, removed afterwards. Default:
	// a new folder in the system's temporary folder.
	Dir string
	// Only runs one section: "report", "append" or "sim". Empty runs all.
	Only string
	// ReportEvents is the number of events in the month of the report
	// section. Default 10,000,000.
	ReportEvents int
	// Writers is the number of concurrent writers of the append section.
	// Default: runs with 256 and 1024 writers (random request ids) and
	// 1024 writers (time-ordered request ids), beside the baseline.
	Writers int
	// AppendEvents is the number of events each run writes. Default
	// 200,000.
	AppendEvents int
	// BaselineDuration is how long the one-event-per-transaction baseline
	// runs. Default 3s.
	BaselineDuration time.Duration
	// SimTenants and SimHours size the simulation. Defaults 200 and 24.
	SimTenants int
	SimHours   int
	// Seed makes the simulation reproducible. Default 1.
	Seed uint64
	// WriteDoc, when set, is the path of docs/ECONOMICS.md, rewritten
	// with the simulation's assumptions and results.
	WriteDoc string
}

func (o *BenchOptions) defaults() {
	if o.ReportEvents <= 0 {
		o.ReportEvents = 10_000_000
	}
	if o.AppendEvents <= 0 {
		o.AppendEvents = 200_000
	}
	if o.BaselineDuration <= 0 {
		o.BaselineDuration = 3 * time.Second
	}
	if o.SimTenants <= 0 {
		o.SimTenants = 200
	}
	if o.SimHours <= 0 {
		o.SimHours = 24
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// Bench measures the ledger and runs the economics simulation, printing
// the results to w: report latency from rollups against a full event scan,
// durable append throughput with group commit against one event per
// transaction, and each simulated tenant's cost per million tokens shared
// against a dedicated GPU per adapter.
func Bench(ctx context.Context, opts BenchOptions, w io.Writer) error {
	opts.defaults()
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "nozzle-bench-billing-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	run := func(name string) bool { return opts.Only == "" || opts.Only == name }
	if run("report") {
		if err := benchReport(ctx, opts, filepath.Join(dir, "report.db"), w); err != nil {
			return fmt.Errorf("report benchmark: %w", err)
		}
	}
	if run("append") {
		if err := benchAppend(ctx, opts, filepath.Join(dir, "append.db"), w); err != nil {
			return fmt.Errorf("append benchmark: %w", err)
		}
	}
	if run("sim") {
		if err := benchSim(ctx, opts, filepath.Join(dir, "sim.db"), w); err != nil {
			return fmt.Errorf("simulation: %w", err)
		}
	}
	return nil
}

func quietLedger(path string, o Options) (*Ledger, error) {
	o.Path = path
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return Open(o)
}

func benchReport(ctx context.Context, opts BenchOptions, path string, w io.Writer) error {
	os.Remove(path)
	l, err := quietLedger(path, Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6, CachedPromptPerMillionUSD: 0.2}})
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer l.Close()
	ten := &nozzle.Tenant{Name: "bench"}
	if err := l.CreateTenant(ctx, ten); err != nil {
		return err
	}
	const adapters = 16
	start := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	month := 30 * 24 * time.Hour
	n := opts.ReportEvents
	fmt.Fprintf(w, "== Usage report over a month of %d events (one tenant, %d adapters)\n", n, adapters)
	t0 := time.Now()
	const chunk = 250_000
	evs := make([]nozzle.UsageEvent, chunk)
	for done := 0; done < n; {
		m := min(chunk, n-done)
		for i := range m {
			j := done + i
			evs[i] = nozzle.UsageEvent{
				RequestID:          fmt.Sprintf("b%09d", j),
				TenantID:           ten.ID,
				AdapterID:          fmt.Sprintf("ad_%02d", j%adapters),
				AdapterName:        fmt.Sprintf("adapter-%02d", j%adapters),
				RuntimeID:          "rt",
				Time:               start.Add(time.Duration(float64(month) * float64(j) / float64(n))),
				PromptTokens:       int64(200 + j%700),
				CachedPromptTokens: int64(j%3) * 64, // some requests share a cached prefix
				CompletionTokens:   int64(50 + j%300),
				DeviceSeconds:      0.05,
				RatePerHour:        2,
			}
		}
		if err := l.recordBulk(ctx, evs[:m], chunk); err != nil {
			return err
		}
		done += m
	}
	var ivs []nozzle.CapacityInterval
	for h := range 720 {
		s := start.Add(time.Duration(h) * time.Hour)
		ivs = append(ivs, nozzle.CapacityInterval{RuntimeID: "rt", Seq: uint64(h + 1), Start: s, End: s.Add(time.Hour), ActiveSeconds: 3000, IdleSeconds: 600, RatePerHour: 2})
	}
	if err := l.RecordCapacity(ctx, ivs); err != nil {
		return err
	}
	fi, _ := os.Stat(path)
	fmt.Fprintf(w, "setup: %d events written in %s through the bulk path; ledger file %.0f MiB\n",
		n, nozzle.FormatSeconds(time.Since(t0).Seconds()), float64(fi.Size())/(1<<20))

	queries := []struct {
		name string
		q    nozzle.ReportQuery
	}{
		{"month total", nozzle.ReportQuery{TenantID: ten.ID, Start: start, End: start.Add(month)}},
		{"by day and adapter", nozzle.ReportQuery{TenantID: ten.ID, Start: start, End: start.Add(month), GroupBy: []string{"day", "adapter"}}},
		{"by hour", nozzle.ReportQuery{TenantID: ten.ID, Start: start, End: start.Add(month), GroupBy: []string{"hour"}}},
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "report\trows\tfrom rollups (median of 30)\tfull event scan (baseline)\tspeed-up")
	for _, qq := range queries {
		var lat []time.Duration
		var rep *nozzle.Report
		for range 30 {
			t := time.Now()
			if rep, err = l.Report(ctx, qq.q); err != nil {
				return err
			}
			lat = append(lat, time.Since(t))
		}
		med := median(lat)
		t := time.Now()
		scan, err := l.report(ctx, qq.q, true)
		if err != nil {
			return err
		}
		scanT := time.Since(t)
		if scan.Total.Requests != rep.Total.Requests || scan.Total.CachedPromptTokens != rep.Total.CachedPromptTokens ||
			!near(scan.Total.CostUSD, rep.Total.CostUSD) {
			return fmt.Errorf("rollup report %+v differs from the event scan %+v", rep.Total, scan.Total)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.0fx\n", qq.name, len(rep.Rows), nozzle.FormatLatency(med), nozzle.FormatLatency(scanT), float64(scanT)/float64(med))
	}
	tw.Flush()
	fmt.Fprintln(w)
	return nil
}

// count shows a whole number of things (requests, tokens), rounded, with
// its thousands grouped as nozzle.FormatUSD groups an amount's.
func count(v float64) string {
	if v < 0 {
		return "-" + count(-v)
	}
	return nozzle.GroupDigits(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func randomRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

// timeOrderedRequestID returns an id that starts with the time in hex, as
// ULIDs and UUIDv7 do: such ids keep the request-id index append-only.
func timeOrderedRequestID() string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("req_%013x%s", time.Now().UnixNano()/1000, hex.EncodeToString(b[:]))
}

func benchAppend(ctx context.Context, opts BenchOptions, path string, w io.Writer) error {
	fmt.Fprintf(w, "== Durable usage-event appends (each acknowledged after fsync; a fresh ledger per run)\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\trequest ids\tevents\tevents/s\tlatency p50\tp99\tvs baseline")
	type runSpec struct {
		writers int
		ids     string
	}
	runs := []runSpec{{1, "random"}, {256, "random"}, {1024, "random"}, {1024, "time-ordered"}}
	if opts.Writers > 0 {
		runs = []runSpec{{1, "random"}, {opts.Writers, "random"}, {opts.Writers, "time-ordered"}}
	}
	var baseRate float64
	for _, rs := range runs {
		os.Remove(path)
		l, err := quietLedger(path, Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6, CachedPromptPerMillionUSD: 0.2}})
		if err != nil {
			return err
		}
		ten := &nozzle.Tenant{Name: "bench"}
		if err := l.CreateTenant(ctx, ten); err != nil {
			l.Close()
			return err
		}
		newID := randomRequestID
		if rs.ids == "time-ordered" {
			newID = timeOrderedRequestID
		}
		mk := func(i int) nozzle.UsageEvent {
			return nozzle.UsageEvent{
				RequestID: newID(), TenantID: ten.ID, AdapterID: fmt.Sprintf("ad_%d", i%8), AdapterName: fmt.Sprintf("a%d", i%8),
				Model: "demo", RuntimeID: "rt", Time: time.Now(), PromptTokens: 512, CompletionTokens: 128,
				DeviceSeconds: 0.08, QueueSeconds: 0.01, TTFTSeconds: 0.05, RatePerHour: 2,
			}
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, rs.writers)
		lat := make([][]time.Duration, rs.writers)
		limit := opts.AppendEvents
		deadline := time.Time{}
		if rs.writers == 1 {
			// One caller: every RecordUsage is a transaction of its own.
			limit = math.MaxInt
			deadline = time.Now().Add(opts.BaselineDuration)
		}
		t0 := time.Now()
		for g := range rs.writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1))
					if i > limit || (!deadline.IsZero() && time.Now().After(deadline)) {
						return
					}
					ev := mk(i)
					t := time.Now()
					if _, err := l.RecordUsage(ctx, &ev); err != nil {
						errc <- err
						return
					}
					lat[g] = append(lat[g], time.Since(t))
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		close(errc)
		if err := <-errc; err != nil {
			l.Close()
			return err
		}
		var all []time.Duration
		for _, x := range lat {
			all = append(all, x...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		rate := float64(len(all)) / el.Seconds()
		mode := fmt.Sprintf("group commit, %d writers", rs.writers)
		if rs.writers == 1 {
			mode, baseRate = "one event per transaction (baseline)", rate
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%.0fx\n", mode, rs.ids, len(all), count(rate),
			nozzle.FormatLatency(all[len(all)/2]), nozzle.FormatLatency(all[len(all)*99/100]), rate/baseRate)
		res, err := l.Check(ctx)
		l.Close()
		os.Remove(path)
		if err != nil {
			return err
		}
		if res.Events != len(all) {
			return fmt.Errorf("%d events acknowledged, %d stored", len(all), res.Events)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "(each run ends with Check: every acknowledged event stored, rollups consistent)")
	fmt.Fprintln(w)
	return nil
}

// Simulation assumptions (docs/ECONOMICS.md states them).
const (
	simRatePerHour   = 2.00   // the GPU's price, $/h
	simPrefillTokS   = 20_000 // prompt tokens/s the GPU processes
	simDecodeTokS    = 3_000  // completion tokens/s across a batch
	simPromptMedian  = 400
	simComplMedian   = 120
	simMinRPM        = 1.0 // tenants' mean request rates, uniform in [min, max]
	simMaxRPM        = 4.0
	simBurstOnMin    = 10.0 // mean minutes of a burst
	simBurstOffMin   = 20.0 // mean minutes between bursts
	simZipfS         = 1.2
	simMaxAdapters   = 5
	simPricePrompt   = 0.20 // $/M tokens charged
	simPriceComplete = 0.60
)

type simTenant struct {
	id       string
	name     string
	adapters int
	rpm      float64
}

func benchSim(ctx context.Context, opts BenchOptions, path string, w io.Writer) error {
	os.Remove(path)
	l, err := quietLedger(path, Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: simPricePrompt, CompletionPerMillionUSD: simPriceComplete, CachedPromptPerMillionUSD: simPricePrompt}})
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer l.Close()
	r := mrand.New(mrand.NewPCG(opts.Seed, 2))
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	period := time.Duration(opts.SimHours) * time.Hour
	end := start.Add(period)

	tenants := make([]simTenant, opts.SimTenants)
	type arrival struct {
		t                  time.Time
		tenant, adapter    int
		prompt, completion int64
	}
	var arrivals []arrival
	for i := range tenants {
		t := &nozzle.Tenant{Name: fmt.Sprintf("tenant-%03d", i)}
		if err := l.CreateTenant(ctx, t); err != nil {
			return err
		}
		tenants[i] = simTenant{id: t.ID, name: t.Name, adapters: 1 + r.IntN(simMaxAdapters), rpm: simMinRPM + r.Float64()*(simMaxRPM-simMinRPM)}
		// Zipf weights over the tenant's adapters.
		weights := make([]float64, tenants[i].adapters)
		sum := 0.0
		for k := range weights {
			weights[k] = 1 / math.Pow(float64(k+1), simZipfS)
			sum += weights[k]
		}
		// Bursty Poisson: alternating bursts and quiet spells; during a
		// burst the rate is the tenant's mean rate scaled so that the
		// long-run mean is rpm.
		burstRate := tenants[i].rpm * (simBurstOnMin + simBurstOffMin) / simBurstOnMin / 60 // per second
		t0 := start.Add(-time.Duration(r.ExpFloat64() * simBurstOffMin * float64(time.Minute)))
		for t0.Before(end) {
			on := time.Duration(r.ExpFloat64() * simBurstOnMin * float64(time.Minute))
			for at := t0.Add(time.Duration(r.ExpFloat64() / burstRate * float64(time.Second))); at.Before(t0.Add(on)) && at.Before(end); at = at.Add(time.Duration(r.ExpFloat64() / burstRate * float64(time.Second))) {
				if at.Before(start) {
					continue
				}
				u, k := r.Float64()*sum, 0
				for k < len(weights)-1 && u > weights[k] {
					u -= weights[k]
					k++
				}
				arrivals = append(arrivals, arrival{
					t: at, tenant: i, adapter: k,
					prompt:     int64(math.Min(8000, math.Max(8, simPromptMedian*math.Exp(0.8*r.NormFloat64())))),
					completion: int64(math.Min(2000, math.Max(1, simComplMedian*math.Exp(0.7*r.NormFloat64())))),
				})
			}
			t0 = t0.Add(on + time.Duration(r.ExpFloat64()*simBurstOffMin*float64(time.Minute)))
		}
	}
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].t.Before(arrivals[j].t) })

	// One GPU, work-conserving: a request's device time is its prompt at
	// the prefill rate plus its completion at the batched decode rate; it
	// finishes once the GPU has done the work queued before it.
	evs := make([]nozzle.UsageEvent, 0, len(arrivals))
	var busy [][2]time.Time
	free := start
	for i, a := range arrivals {
		dev := float64(a.prompt)/simPrefillTokS + float64(a.completion)/simDecodeTokS
		s := a.t
		if free.After(s) {
			s = free
		}
		fin := s.Add(time.Duration(dev * float64(time.Second)))
		free = fin
		if n := len(busy); n > 0 && !s.After(busy[n-1][1]) {
			busy[n-1][1] = fin
		} else {
			busy = append(busy, [2]time.Time{s, fin})
		}
		ten := tenants[a.tenant]
		evs = append(evs, nozzle.UsageEvent{
			RequestID: fmt.Sprintf("sim-%08d", i), TenantID: ten.id,
			AdapterID: fmt.Sprintf("%s-a%d", ten.id, a.adapter), AdapterName: fmt.Sprintf("adapter-%d", a.adapter),
			RuntimeID: "gpu0", Time: fin, PromptTokens: a.prompt, CompletionTokens: a.completion,
			DeviceSeconds: dev, RatePerHour: simRatePerHour,
		})
	}
	simEnd := end
	if free.After(simEnd) {
		simEnd = free.Truncate(time.Minute).Add(time.Minute)
	}
	// Capacity: one interval per minute, its active time the GPU's busy
	// time in that minute.
	var ivs []nozzle.CapacityInterval
	bi := 0
	for m := start; m.Before(simEnd); m = m.Add(time.Minute) {
		me := m.Add(time.Minute)
		active := 0.0
		for bi < len(busy) && !busy[bi][1].After(m) {
			bi++
		}
		for j := bi; j < len(busy) && busy[j][0].Before(me); j++ {
			active += minTime(busy[j][1], me).Sub(maxTime(busy[j][0], m)).Seconds()
		}
		ivs = append(ivs, nozzle.CapacityInterval{RuntimeID: "gpu0", Seq: uint64(len(ivs) + 1), Start: m, End: me, ActiveSeconds: active, IdleSeconds: 60 - active, RatePerHour: simRatePerHour})
	}
	t0 := time.Now()
	if err := l.recordBulk(ctx, evs, 100_000); err != nil {
		return err
	}
	if err := l.RecordCapacity(ctx, ivs); err != nil {
		return err
	}
	setup := time.Since(t0)

	rep, err := l.Report(ctx, nozzle.ReportQuery{Start: start, End: simEnd, GroupBy: []string{nozzle.GroupTenant}})
	if err != nil {
		return err
	}
	type res struct {
		name                      string
		adapters                  int
		requests, tokens          int64
		shared, dedicated, saving float64 // $/M tokens, $/M tokens, %
	}
	var out []res
	for _, row := range rep.Rows {
		tok := row.PromptTokens + row.CompletionTokens
		if tok == 0 {
			continue
		}
		var ad int
		for _, t := range tenants {
			if t.id == row.TenantID {
				ad = t.adapters
			}
		}
		out = append(out, res{row.TenantName, ad, row.Requests, tok, row.CostUSD / float64(tok) * 1e6, row.DedicatedUSD / float64(tok) * 1e6, row.SavingPercent})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].saving < out[j].saving })
	q := func(p float64, f func(res) float64) float64 {
		v := make([]float64, len(out))
		for i, x := range out {
			v[i] = f(x)
		}
		sort.Float64s(v)
		return v[int(math.Round(p*float64(len(v)-1)))]
	}
	g := rep.GPU
	var buf strings.Builder
	fmt.Fprintf(&buf, "Simulated %d tenants for %d h on one GPU at %s/h: %s requests, %.1f M tokens, GPU utilisation %s, GPU cost %s, charged %s (margin %s).\n\n",
		len(tenants), opts.SimHours, nozzle.FormatUSD(simRatePerHour), count(float64(rep.Total.Requests)), float64(rep.Total.PromptTokens+rep.Total.CompletionTokens)/1e6,
		nozzle.FormatPercent(g.Utilization*100), nozzle.FormatUSD(g.CostUSD), nozzle.FormatUSD(rep.Total.ChargedUSD), nozzle.FormatUSD(rep.Total.MarginUSD))
	buf.WriteString("| per tenant | p10 | median | p90 |\n| --- | ---: | ---: | ---: |\n")
	rows := []struct {
		name string
		f    func(res) float64
		fmt  func(float64) string
	}{
		{"requests per day", func(x res) float64 { return float64(x.requests) * 24 / float64(opts.SimHours) }, count},
		{"tokens per day (thousands)", func(x res) float64 { return float64(x.tokens) * 24 / float64(opts.SimHours) / 1e3 }, count},
		{"adapters used", func(x res) float64 { return float64(x.adapters) }, count},
		{"shared GPU: cost per million tokens", func(x res) float64 { return x.shared }, nozzle.FormatUSD},
		{"dedicated GPU per adapter: cost per million tokens", func(x res) float64 { return x.dedicated }, nozzle.FormatUSD},
		{"saving", func(x res) float64 { return x.saving }, nozzle.FormatPercent},
	}
	for _, row := range rows {
		fmt.Fprintf(&buf, "| %s | %s | %s | %s |\n", row.name, row.fmt(q(0.1, row.f)), row.fmt(q(0.5, row.f)), row.fmt(q(0.9, row.f)))
	}
	fmt.Fprintf(&buf, "\nMedian tenant saving: %s (target: at least 90%%). Lowest saving of any tenant: %s.\n",
		nozzle.FormatPercent(q(0.5, func(x res) float64 { return x.saving })), nozzle.FormatPercent(out[0].saving))

	fmt.Fprintf(w, "== Economics simulation (%d events and %d capacity intervals recorded in %s through the ledger's cost code)\n", len(evs), len(ivs), nozzle.FormatSeconds(setup.Seconds()))
	fmt.Fprintln(w, buf.String())
	if opts.WriteDoc != "" {
		if err := writeEconomics(opts, buf.String()); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s\n", opts.WriteDoc)
	}
	return nil
}

func writeEconomics(opts BenchOptions, results string) error {
	doc := fmt.Sprintf(`# Economics: a shared GPU against a dedicated GPU per adapter

This file is generated by
`+"`nozzle bench billing -only sim -write-doc docs/ECONOMICS.md`"+`
(BenchOptions.WriteDoc); do not edit it by hand. The numbers come from a
simulation run through the ledger's real cost code: the events and capacity
intervals are recorded in a ledger file and the per-tenant figures are the
operator report's rows.

## Assumptions

- One GPU at **%s per hour**, always on, serving one base model with every
  tenant's LoRA adapters (the product's setup). The idle policy is prorata:
  idle time is paid by the tenants, by their share of the active time.
- Per-request device time is derived from token counts and a stated
  throughput: prompt tokens at **%d tokens/s** (prefill) plus completion
  tokens at **%d tokens/s** (decode, across a continuous batch), roughly an
  8B-parameter model in bf16 on one data-centre GPU. The GPU is
  work-conserving: a request that arrives while it is busy waits.
- **%d tenants**, simulated for **%d hours**. Each tenant's mean rate is
  uniform between %.0f and %.0f requests per minute; arrivals are Poisson and
  bursty (bursts of %.0f minutes on average, quiet spells of %.0f minutes on
  average, the rate during a burst scaled so the long-run mean holds).
- Each tenant has 1 to %d adapters; a request picks one by Zipf popularity
  (s = %.1f) over the tenant's adapters.
- Prompt lengths are log-normal around %d tokens (σ = 0.8, at most 8,000),
  completions log-normal around %d tokens (σ = 0.7, at most 2,000).
- "Dedicated" is what the product is compared with: the same GPU at the same
  hourly rate, always on, one per adapter the tenant used, from that
  adapter's first request in the period to the period's end (to the hour of
  its last request for an adapter deleted since; no cold starts, no
  sharing), as the usage reports count it.
- Charged prices: %s per million prompt tokens, %s per million
  completion tokens. The simulated requests share no prefixes, so none of
  their prompt tokens is cached, and the cached prompt price (set to the
  prompt price here) changes nothing.

## Results (seed %d)

%s
## Reading the table

Alone, a tenant sending a few requests a minute keeps a GPU busy well under
one percent of the time, so a dedicated, always-warm GPU per adapter costs
dollars per million tokens. Pooled, one GPU stays busy most of the time,
adapters switch per request inside a batch, and the idle remainder is split
across everyone: each tenant pays roughly the GPU's price of its own work.
The saving shrinks as a tenant's own traffic grows towards keeping a GPU
busy by itself, or as the pool's utilisation falls.
`, nozzle.FormatUSD(simRatePerHour), simPrefillTokS, simDecodeTokS, opts.SimTenants, opts.SimHours, simMinRPM, simMaxRPM,
		simBurstOnMin, simBurstOffMin, simMaxAdapters, simZipfS, simPromptMedian, simComplMedian,
		nozzle.FormatUSD(simPricePrompt), nozzle.FormatUSD(simPriceComplete), opts.Seed, results)
	return os.WriteFile(opts.WriteDoc, []byte(doc), 0o644)
}
