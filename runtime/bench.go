package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// BenchOptions configure BenchServe. Zero values take the defaults named.
type BenchOptions struct {
	// DataDir holds the demo model and the benchmark's adapters, reused
	// across runs (default: a temporary folder removed afterwards).
	DataDir   string
	EngineLib string
	Device    string // default "cpu"
	Threads   int
	// Adapters is the number of registered adapters (default 1000), with
	// ranks 8 to 64 on q_proj and v_proj.
	Adapters int
	// Requests per throughput run (default 160); PromptTokens and
	// MaxTokens per request (default 32 and 16).
	Requests     int
	PromptTokens int
	MaxTokens    int
	// ZipfS is the exponent of the adapters' popularity (default 1.1).
	ZipfS float64
	// Slots is the engine's adapter slots (default 8); MaxBatchSeqs the
	// most sequences in one step (default: the runtime's).
	Slots          int
	MaxBatchSeqs   int
	MaxBatchTokens int
	Seed           uint64
	Logger         *slog.Logger
}

func (o *BenchOptions) defaults() {
	if o.Device == "" {
		o.Device = "cpu"
	}
	if o.Adapters <= 0 {
		o.Adapters = 1000
	}
	if o.Requests <= 0 {
		o.Requests = 160
	}
	if o.PromptTokens <= 0 {
		o.PromptTokens = 32
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 16
	}
	if o.ZipfS <= 1 {
		o.ZipfS = 1.1
	}
	if o.Slots <= 0 {
		o.Slots = 8
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// benchRow is one line of the benchmark's output.
type benchRow struct {
	Bench    string             `json:"bench"`
	Case     string             `json:"case"`
	Values   map[string]float64 `json:"values"`
	Target   string             `json:"target,omitempty"`
	Baseline string             `json:"baseline,omitempty"`
}

// BenchServe measures the runtime on the demo model and writes a table and
// JSON lines to w:
//
//   - many adapters: Adapters registered adapters (ranks 8–64), Zipf
//     popularity, Poisson arrivals, Slots engine slots; throughput and
//     p50/p99 latency against the same load all on one adapter, in the
//     same run (target ratio ≥ 0.9);
//   - cold adapter: the time to first token added by a rank-16
//     all-modules adapter on disk (page-cached) against one already in a
//     slot (target ≤ 5 ms);
//   - fairness: a tenant sending 10× the load of another; the light
//     tenant's p50 latency against its latency alone (target ≤ 2×); and
//     against a flood of long answers filling every place in the batch,
//     the light tenant's time to first token against alone (target ≤ 2×).
func BenchServe(ctx context.Context, opts BenchOptions, w io.Writer) error {
	opts.defaults()
	if opts.DataDir == "" {
		d, err := os.MkdirTemp("", "nozzle-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		opts.DataDir = d
	}
	modelDir, _, err := EnsureDemo(opts.DataDir)
	if err != nil {
		return err
	}
	validate, err := ValidateAdapter(modelDir, 64)
	if err != nil {
		return err
	}
	store := NewStore(filepath.Join(opts.DataDir, "bench-store"), validate)
	t0 := time.Now()
	many, cold, err := benchAdapters(ctx, opts, modelDir, store)
	if err != nil {
		return err
	}
	opts.Logger.Info("bench adapters ready", "adapters", len(many), "took", time.Since(t0))

	rt, err := Open(ctx, Options{
		ModelDir: modelDir, EngineLib: opts.EngineLib, Device: opts.Device, Threads: opts.Threads,
		Slots: opts.Slots, MaxBatchSeqs: opts.MaxBatchSeqs, MaxBatchTokens: opts.MaxBatchTokens, AdapterSource: store, Logger: opts.Logger, Metrics: metrics.NewRegistry(),
		HostCacheBytes: 1 << 30,
	})
	if err != nil {
		return err
	}
	defer rt.Close(context.Background())
	info, _ := rt.Info(ctx)

	var rows []benchRow
	b := &bencher{rt: rt, opts: opts, vocab: info.VocabSize, rng: rand.New(rand.NewPCG(opts.Seed, 7))}

	// Warm up: a few requests, each adapter path once.
	b.burst(ctx, 8, func(int) *nozzle.Adapter { return many[0] }, "warm")

	// Saturated throughput: the whole run submitted at once.
	single := func(int) *nozzle.Adapter { return many[0] }
	zipf := b.zipf(many)
	satOne := b.burst(ctx, opts.Requests, single, "t")
	st0 := rt.Stats()
	satMany := b.burst(ctx, opts.Requests, zipf, "t")
	st1 := rt.Stats()
	manyRow := satMany.row("saturated_many_adapters")
	manyRow.Values["host_loads"] = float64(st1.HostLoads - st0.HostLoads)
	manyRow.Values["host_load_ms"] = (st1.HostLoadSeconds - st0.HostLoadSeconds) * 1000
	manyRow.Values["slot_loads"] = float64(st1.SlotLoads - st0.SlotLoads)
	manyRow.Values["slot_load_ms"] = (st1.SlotLoadSeconds - st0.SlotLoadSeconds) * 1000
	rows = append(rows, satOne.row("saturated_one_adapter"), manyRow,
		benchRow{Bench: "serve", Case: "saturated_many_vs_one", Values: map[string]float64{"throughput_ratio": satMany.rps / satOne.rps}, Target: ">= 0.9", Baseline: "same load on one adapter"})

	// Poisson arrivals at 60% of the one-adapter capacity.
	rate := 0.6 * satOne.rps
	poOne := b.poisson(ctx, opts.Requests, rate, single)
	poMany := b.poisson(ctx, opts.Requests, rate, zipf)
	rows = append(rows, poOne.row("poisson_one_adapter"), poMany.row("poisson_many_adapters"),
		benchRow{Bench: "serve", Case: "poisson_many_vs_one", Values: map[string]float64{
			"throughput_ratio": poMany.rps / poOne.rps, "p50_latency_ratio": poMany.p50 / poOne.p50, "p99_latency_ratio": poMany.p99 / poOne.p99, "rate_rps": rate,
		}, Target: "throughput >= 0.9", Baseline: "same load on one adapter"})

	// Cold adapter against warm.
	coldMS, warmMS := b.coldWarm(ctx, cold)
	rows = append(rows, benchRow{Bench: "serve", Case: "cold_adapter_ttft", Values: map[string]float64{
		"warm_ttft_ms": warmMS, "cold_ttft_ms": coldMS, "added_ms": coldMS - warmMS, "cold_vs_warm_ratio": coldMS / warmMS,
	}, Target: "added <= 5 ms", Baseline: "same adapter already in a slot"})

	// Fairness.
	alone, mixed, heavy := b.fairness(ctx, satOne.rps, many[1])
	rows = append(rows, benchRow{Bench: "serve", Case: "fairness_light_tenant", Values: map[string]float64{
		"alone_p50_ms": alone.p50 * 1000, "with_heavy_p50_ms": mixed.p50 * 1000, "heavy_p50_ms": heavy.p50 * 1000, "p50_ratio": mixed.p50 / alone.p50,
		"alone_ttft_p50_ms": alone.ttft50 * 1000, "with_heavy_ttft_p50_ms": mixed.ttft50 * 1000, "heavy_ttft_p50_ms": heavy.ttft50 * 1000,
	}, Target: "<= 2", Baseline: "light tenant alone"})

	// Fairness against a flood of long answers that fills every place.
	flooded := b.longFlood(ctx, many[1])
	rows = append(rows, benchRow{Bench: "serve", Case: "fairness_long_flood", Values: map[string]float64{
		"alone_ttft_p50_ms": alone.ttft50 * 1000, "flooded_ttft_p50_ms": flooded.ttft50 * 1000, "ttft_ratio": flooded.ttft50 / alone.ttft50,
		"flooded_p50_ms": flooded.p50 * 1000,
	}, Target: "<= 2", Baseline: "light tenant alone"})

	// Prefix cache: one request at a time, each a long system prompt shared
	// by all, then a short question, against prompts of the same length
	// that share nothing (the same runtime, the same run).
	shared, fresh, cachedShare := b.sharedPrefix(ctx, many[2], 24)
	rows = append(rows, benchRow{Bench: "serve", Case: "prefix_cache_shared_system_prompt", Values: map[string]float64{
		"shared_ttft_p50_ms": shared.ttft50 * 1000, "fresh_ttft_p50_ms": fresh.ttft50 * 1000, "ttft_ratio": fresh.ttft50 / shared.ttft50,
		"shared_device_ms": shared.device * 1000, "fresh_device_ms": fresh.device * 1000, "cached_prompt_share": cachedShare,
	}, Target: "informational", Baseline: "prompts of the same length that share nothing"})

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "case\tvalues\ttarget\n")
	for _, r := range rows {
		keys := make([]string, 0, len(r.Values))
		for k := range r.Values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s := ""
		for _, k := range keys {
			s += fmt.Sprintf("%s=%.4g ", k, r.Values[k])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Case, s, r.Target)
	}
	tw.Flush()
	enc := json.NewEncoder(w)
	for _, r := range rows {
		enc.Encode(r)
	}
	return nil
}

// benchAdapters makes (or finds from an earlier run) the benchmark's
// adapters in the store, and a few rank-16 all-module adapters for the
// cold-start case.
func benchAdapters(ctx context.Context, opts BenchOptions, modelDir string, store *Store) (many, cold []*nozzle.Adapter, err error) {
	m, err := model.Open(modelDir)
	if err != nil {
		return nil, nil, err
	}
	info := m.Info()
	m.Close()
	listPath := filepath.Join(opts.DataDir, fmt.Sprintf("bench-adapters-%d-%d.json", opts.Adapters, opts.Seed))
	var list struct{ Many, Cold []*nozzle.Adapter }
	if b, err := os.ReadFile(listPath); err == nil && json.Unmarshal(b, &list) == nil && len(list.Many) == opts.Adapters {
		ok := true
		for _, a := range append(slices.Clone(list.Many), list.Cold...) {
			if _, err := store.AdapterDir(ctx, a.SHA256); err != nil {
				ok = false
				break
			}
		}
		if ok {
			return list.Many, list.Cold, nil
		}
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 11))
	ranks := []int{8, 16, 32, 64}
	make1 := func(name string, spec model.AdapterSpec) (*nozzle.Adapter, error) {
		dir, err := os.MkdirTemp(opts.DataDir, ".bench-adapter-")
		if err != nil {
			return nil, err
		}
		if err := model.WriteRandomAdapter(filepath.Join(dir, "a"), spec); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		mf, err := store.Import(ctx, filepath.Join(dir, "a"))
		os.RemoveAll(dir)
		if err != nil {
			return nil, err
		}
		return &nozzle.Adapter{ID: name, Name: name, AdapterManifest: *mf}, nil
	}
	for i := range opts.Adapters {
		a, err := make1(fmt.Sprintf("bench-%04d", i), model.AdapterSpec{
			Base: info, Rank: ranks[rng.IntN(len(ranks))], Modules: []model.Module{model.ModuleQ, model.ModuleV},
			Seed: opts.Seed*1_000_003 + uint64(i), DType: safetensors.BF16,
		})
		if err != nil {
			return nil, nil, err
		}
		list.Many = append(list.Many, a)
	}
	for i := range 8 {
		a, err := make1(fmt.Sprintf("cold-%d", i), model.AdapterSpec{Base: info, Rank: 16, Seed: opts.Seed*7_000_001 + uint64(i), DType: safetensors.BF16})
		if err != nil {
			return nil, nil, err
		}
		list.Cold = append(list.Cold, a)
	}
	b, _ := json.Marshal(list)
	if err := os.WriteFile(listPath, b, 0o644); err != nil {
		return nil, nil, err
	}
	return list.Many, list.Cold, nil
}

type bencher struct {
	rt    *Runtime
	opts  BenchOptions
	vocab int
	rng   *rand.Rand
	mu    sync.Mutex
}

type runStats struct {
	n             int
	seconds       float64
	rps, tps      float64
	p50, p99      float64 // latency, seconds
	ttft50        float64
	errors        int
	device, queue float64
}

func (s runStats) row(name string) benchRow {
	return benchRow{Bench: "serve", Case: name, Values: map[string]float64{
		"requests": float64(s.n), "seconds": s.seconds, "throughput_rps": s.rps, "tokens_per_s": s.tps,
		"p50_latency_ms": s.p50 * 1000, "p99_latency_ms": s.p99 * 1000, "p50_ttft_ms": s.ttft50 * 1000, "errors": float64(s.errors),
	}}
}

func (b *bencher) prompt() []int { return b.tokens(b.opts.PromptTokens) }

// tokens returns n random token ids.
func (b *bencher) tokens(n int) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := make([]int, n)
	for i := range p {
		p[i] = b.rng.IntN(min(b.vocab, 256))
	}
	return p
}

func (b *bencher) zipf(adapters []*nozzle.Adapter) func(int) *nozzle.Adapter {
	z := rand.NewZipf(rand.New(rand.NewPCG(b.opts.Seed, 13)), b.opts.ZipfS, 1, uint64(len(adapters)-1))
	var mu sync.Mutex
	return func(int) *nozzle.Adapter {
		mu.Lock()
		defer mu.Unlock()
		return adapters[z.Uint64()]
	}
}

type benchResult struct {
	latency, ttft float64
	tokens        int
	err           error
	res           *nozzle.GenerateResult
}

func (b *bencher) one(ctx context.Context, tenant string, a *nozzle.Adapter, maxTokens int) benchResult {
	return b.oneWith(ctx, tenant, a, b.prompt(), maxTokens)
}

func (b *bencher) oneWith(ctx context.Context, tenant string, a *nozzle.Adapter, prompt []int, maxTokens int) benchResult {
	req := &nozzle.GenerateRequest{TenantID: tenant, Adapter: a, PromptTokens: prompt, MaxTokens: maxTokens}
	t0 := time.Now()
	var first time.Duration
	res, err := b.rt.Generate(ctx, req, func(nozzle.Chunk) error {
		if first == 0 {
			first = time.Since(t0)
		}
		return nil
	})
	r := benchResult{latency: time.Since(t0).Seconds(), err: err, res: res}
	if res != nil {
		r.tokens = res.CompletionTokens
		r.ttft = res.TTFTSeconds
	}
	return r
}

func summarize(rs []benchResult, seconds float64) runStats {
	s := runStats{n: len(rs), seconds: seconds}
	var lat, ttft []float64
	tokens := 0
	for _, r := range rs {
		if r.err != nil {
			s.errors++
			continue
		}
		lat = append(lat, r.latency)
		ttft = append(ttft, r.ttft)
		tokens += r.tokens
	}
	s.rps = float64(len(lat)) / seconds
	s.tps = float64(tokens) / seconds
	s.p50, s.p99 = quantile(lat, 0.5), quantile(lat, 0.99)
	s.ttft50 = quantile(ttft, 0.5)
	return s
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// burst submits n requests at once and waits for all.
func (b *bencher) burst(ctx context.Context, n int, pick func(int) *nozzle.Adapter, tenant string) runStats {
	rs := make([]benchResult, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		a := pick(i)
		wg.Add(1)
		go func() { defer wg.Done(); rs[i] = b.one(ctx, tenant, a, b.opts.MaxTokens) }()
	}
	wg.Wait()
	return summarize(rs, time.Since(t0).Seconds())
}

// poisson sends n requests with exponential gaps at rate per second.
func (b *bencher) poisson(ctx context.Context, n int, rate float64, pick func(int) *nozzle.Adapter) runStats {
	rng := rand.New(rand.NewPCG(b.opts.Seed, 17))
	rs := make([]benchResult, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	next := t0
	for i := range n {
		a := pick(i)
		time.Sleep(time.Until(next))
		wg.Add(1)
		go func() { defer wg.Done(); rs[i] = b.one(ctx, "t", a, b.opts.MaxTokens) }()
		next = next.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
	}
	wg.Wait()
	return summarize(rs, time.Since(t0).Seconds())
}

// sharedPrefix runs n requests one after another whose prompts are a
// 512-token system prompt they all share and a 16-token question, then n
// whose prompts of the same length share nothing, on adapter a; it returns
// both runs (device is the mean device time per request) and the share of
// the first run's prompt tokens the prefix cache held.
func (b *bencher) sharedPrefix(ctx context.Context, a *nozzle.Adapter, n int) (shared, fresh runStats, cachedShare float64) {
	system := b.tokens(512)
	measure := func(prompt func() []int) (runStats, float64) {
		rs := make([]benchResult, n)
		var device float64
		var cached, total int
		t0 := time.Now()
		for i := range rs {
			rs[i] = b.oneWith(ctx, "prefix", a, prompt(), 4)
			if r := rs[i].res; r != nil {
				device += r.DeviceSeconds
				cached += r.CachedPromptTokens
				total += r.PromptTokens
			}
		}
		st := summarize(rs, time.Since(t0).Seconds())
		st.device = device / float64(n)
		return st, float64(cached) / float64(max(total, 1))
	}
	shared, cachedShare = measure(func() []int { return append(slices.Clone(system), b.tokens(16)...) })
	fresh, _ = measure(func() []int { return b.tokens(len(system) + 16) })
	return shared, fresh, cachedShare
}

// coldWarm returns the median time to first token, in milliseconds, of
// one-token requests on adapters that are only on disk (page-cached) and
// on an adapter already in a slot, on an otherwise idle runtime.
func (b *bencher) coldWarm(ctx context.Context, cold []*nozzle.Adapter) (coldMS, warmMS float64) {
	// Page-cache the files, as a recently uploaded adapter is.
	for _, a := range cold {
		dir, _ := b.opts.dirOf(ctx, b.rt, a)
		for _, f := range adapterFiles {
			os.ReadFile(filepath.Join(dir, f))
		}
	}
	var c, wm []float64
	for i, a := range cold {
		if i == 0 {
			b.one(ctx, "c", cold[len(cold)-1], 1) // warm the code paths
			continue
		}
		r := b.one(ctx, "c", a, 1)
		c = append(c, r.ttft)
		r = b.one(ctx, "c", a, 1)
		wm = append(wm, r.ttft)
	}
	return quantile(c, 0.5) * 1000, quantile(wm, 0.5) * 1000
}

func (o BenchOptions) dirOf(ctx context.Context, rt *Runtime, a *nozzle.Adapter) (string, error) {
	if rt.opts.AdapterSource == nil {
		return "", fmt.Errorf("no adapter source")
	}
	return rt.opts.AdapterSource.AdapterDir(ctx, a.SHA256)
}

// longFlood returns the light tenant's latencies, one request at a time,
// while another tenant keeps twice the batch's places busy with long
// answers (512 tokens, each followed by another): without fair shares of
// the batch, each light request would wait for one of those to end.
func (b *bencher) longFlood(ctx context.Context, a *nozzle.Adapter) runStats {
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 * b.rt.opts.MaxBatchSeqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fctx.Err() == nil {
				b.one(fctx, "flood", a, 512)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the flood fills the batch
	var rs []benchResult
	for range 12 {
		rs = append(rs, b.one(ctx, "light", a, b.opts.MaxTokens))
	}
	stop()
	wg.Wait()
	return summarize(rs, 1)
}

// fairness returns the light tenant's latencies alone and next to a
// tenant sending ten times its load, and the heavy tenant's.
func (b *bencher) fairness(ctx context.Context, capacity float64, a *nozzle.Adapter) (alone, mixed, heavy runStats) {
	// Together the two tenants offer 1.3× what the runtime serves.
	light := 1.3 * capacity / 11
	nLight := 24
	run := func(tenant string, n int, rate float64, seed uint64, out *[]benchResult, wg *sync.WaitGroup) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 19))
		var inner sync.WaitGroup
		var mu sync.Mutex
		next := time.Now()
		for range n {
			time.Sleep(time.Until(next))
			inner.Add(1)
			go func() {
				defer inner.Done()
				r := b.one(ctx, tenant, a, b.opts.MaxTokens)
				mu.Lock()
				*out = append(*out, r)
				mu.Unlock()
			}()
			next = next.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		}
		inner.Wait()
	}
	lat := func(rs []benchResult) runStats { return summarize(rs, 1) }
	var wg sync.WaitGroup
	var aloneRs, lightRs, heavyRs []benchResult
	wg.Add(1)
	run("light", nLight, light, 23, &aloneRs, &wg)
	wg.Add(2)
	go run("heavy", nLight*10, light*10, 29, &heavyRs, &wg)
	go run("light", nLight, light, 23, &lightRs, &wg)
	wg.Wait()
	return lat(aloneRs), lat(lightRs), lat(heavyRs)
}
