package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// BenchOptions configure Bench. Zero fields take the defaults noted.
type BenchOptions struct {
	// CacheDir keeps the generated model and adapters between runs
	// (required).
	CacheDir string
	// Model is the random model's shape (default DefaultBenchModel: a
	// 0.85B-parameter bf16 Llama, 1.7 GB, larger than the processor's
	// caches). QuickBenchModel is a small one for a fast check.
	Model model.Spec
	// Adapters is the number of rank-Rank adapters on all seven modules
	// (default 32); Rank defaults to 16.
	Adapters int
	Rank     int
	// Batches are the decode batch sizes measured (default 1, 8, 32).
	Batches []int
	// Steps is the number of timed decode steps per measurement (default
	// 4), after Warmup untimed ones (default 1). Every measurement is
	// repeated Rounds times (default 3), interleaved with the others, and
	// the fastest round counts, which filters out interference from other
	// work on the machine.
	Steps  int
	Warmup int
	Rounds int
	// MergeRequests is how many requests the merge-and-swap baseline times
	// (default 3); MergeAdapters the round-robin set and batch (default 16).
	MergeRequests int
	MergeAdapters int
	// Threads is the CPU backend's worker count (0 = every core).
	Threads int
	// WeightDType is the engine's weight dtype ("" = the checkpoint's).
	// With Int8, the decodes without an adapter are also measured on an
	// engine in the checkpoint's dtype, round by round beside the int8
	// ones, for their ratio.
	WeightDType safetensors.DType
	// Context is the position the timed decodes start at (default 0): at
	// a long one, every step also reads that many tokens' keys and values
	// per sequence. Then the decodes without an adapter are also measured
	// on an engine with an f32 KV cache, beside the default 16-bit one.
	Context int
	// BandwidthBytes is the buffer nz_bench_read_bandwidth reads (default
	// 1 GiB, beyond the last-level cache).
	BandwidthBytes int64
}

// DefaultBenchModel is the model Bench generates by default: Llama-shaped,
// H 2048, 16 layers, 32 heads / 8 KV heads, I 5632, V 32000, bf16.
func DefaultBenchModel() model.Spec {
	return model.Spec{VocabSize: 32000, HiddenSize: 2048, IntermediateSize: 5632, NumLayers: 16, NumHeads: 32, NumKVHeads: 8,
		RopeTheta: 500000, MaxPosition: 4096, DType: safetensors.BF16, Seed: 20240601}
}

// QuickBenchModel is a 0.16B-parameter bf16 Llama for quick runs.
func QuickBenchModel() model.Spec {
	return model.Spec{VocabSize: 32000, HiddenSize: 1024, IntermediateSize: 2816, NumLayers: 8, NumHeads: 16, NumKVHeads: 4,
		RopeTheta: 500000, MaxPosition: 4096, DType: safetensors.BF16, Seed: 20240602}
}

func (o *BenchOptions) defaults() error {
	if o.CacheDir == "" {
		return errors.New("bench: CacheDir is required")
	}
	if o.Model.HiddenSize == 0 {
		o.Model = DefaultBenchModel()
	}
	if o.Adapters == 0 {
		o.Adapters = 32
	}
	if o.Rank == 0 {
		o.Rank = 16
	}
	if len(o.Batches) == 0 {
		o.Batches = []int{1, 8, 32}
	}
	if o.Steps == 0 {
		o.Steps = 4
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Warmup == 0 {
		o.Warmup = 1
	}
	if o.MergeRequests == 0 {
		o.MergeRequests = 3
	}
	if o.MergeAdapters == 0 {
		o.MergeAdapters = 16
	}
	o.MergeAdapters = min(o.MergeAdapters, o.Adapters)
	if o.BandwidthBytes == 0 {
		o.BandwidthBytes = 1 << 30
	}
	return nil
}

// benchResult is one machine-readable line of Bench's output.
type benchResult struct {
	Bench    string  `json:"bench"`
	Metric   string  `json:"metric"`
	Batch    int     `json:"batch,omitempty"`
	Adapters string  `json:"adapters,omitempty"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline float64 `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio,omitempty"`
	Target   string  `json:"target,omitempty"`
}

// Bench measures the engine on a random model and adapters generated once
// into opts.CacheDir: decode throughput by batch size and adapter mix,
// batch-1 memory-bandwidth efficiency, adapter load time against a plain
// copy, and Nozzle's mixed multi-adapter batch against the classic
// merge-and-swap way of serving many adapters. It writes a readable table
// and then one JSON object per line to w.
func Bench(ctx context.Context, lib *Library, opts BenchOptions, w io.Writer) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	dir, adapterDirs, err := benchFiles(ctx, opts, w)
	if err != nil {
		return err
	}
	m, err := model.Open(dir)
	if err != nil {
		return err
	}
	defer m.Close()
	maxBatch := 0
	for _, b := range opts.Batches {
		maxBatch = max(maxBatch, b)
	}
	maxBatch = max(maxBatch, opts.MergeAdapters)
	ctxLen := opts.Context + opts.Warmup + opts.Steps + 1
	const blockSize = 16
	blocksPerSeq := (ctxLen + blockSize - 1) / blockSize
	fmt.Fprintf(w, "loading %s into the engine ...\n", dir)
	eopts := Options{
		WeightDType: opts.WeightDType, MaxSlots: max(opts.Adapters, opts.MergeAdapters), MaxRank: opts.Rank, KVBlockSize: blockSize,
		KVBlocks: maxBatch*blocksPerSeq + blocksPerSeq, MaxBatchTokens: max(maxBatch, 64), MaxBatchSeqs: maxBatch,
		Threads: opts.Threads, MaxPosition: 4096,
	}
	e, err := lib.NewEngine(m, eopts)
	if err != nil {
		return err
	}
	defer e.Close()
	// The reference beside the decodes without an adapter: the
	// checkpoint's dtype beside int8 weights, an f32 KV cache beside the
	// 16-bit one at a long context.
	var ref *Engine
	refName := ""
	if opts.WeightDType == Int8 || opts.Context > 0 {
		ropts := eopts
		ropts.WeightDType, ropts.MaxSlots = "", 1
		refName = string(m.DType) + " weights"
		if opts.Context > 0 {
			ropts.KVF32 = true
			refName += ", f32 KV cache"
		}
		if ref, err = lib.NewEngine(m, ropts); err != nil {
			return err
		}
		defer ref.Close()
	}
	info := e.Info()
	adapters := make([]*model.Adapter, len(adapterDirs))
	for i, d := range adapterDirs {
		if adapters[i], err = model.LoadAdapter(d, m.Info(), opts.Rank); err != nil {
			return err
		}
		defer adapters[i].Close()
	}
	var results []benchResult
	add := func(r benchResult) { r.Bench = "engine"; results = append(results, r) }

	// Adapter load into a slot vs a plain copy of the same bytes.
	loadT, copyT, adapterBytes, err := benchAdapterLoad(ctx, e, adapters)
	if err != nil {
		return err
	}
	add(benchResult{Metric: "adapter_load_seconds", Value: loadT, Unit: "s", Baseline: copyT, Ratio: loadT / copyT, Target: "<= 2x copy"})
	for i, a := range adapters {
		if err := e.LoadAdapter(i, a); err != nil {
			return err
		}
	}

	// Decode throughput: every (batch, mix) measured Rounds times,
	// interleaved; the fastest round counts.
	mixes := []string{"none", "one", "distinct"}
	best := map[string]time.Duration{}
	var b Batch
	var bw float64 // best read bandwidth, measured in every round next to the decodes
	for round := 0; round < opts.Rounds; round++ {
		v, err := lib.ReadBandwidth(opts.BandwidthBytes, 3, opts.Threads)
		if err != nil {
			return err
		}
		bw = max(bw, v)
		for _, n := range opts.Batches {
			for _, mix := range mixes {
				if err := ctx.Err(); err != nil {
					return err
				}
				slots := make([]int, n)
				for i := range slots {
					switch mix {
					case "none":
						slots[i] = -1
					case "one":
						slots[i] = 0
					default:
						slots[i] = i % opts.Adapters
					}
				}
				el, err := benchDecode(e, &b, slots, opts.Context, opts.Warmup, opts.Steps, blocksPerSeq)
				if err != nil {
					return err
				}
				key := fmt.Sprint(n, mix)
				if old, ok := best[key]; !ok || el < old {
					best[key] = el
				}
				fmt.Fprintf(w, "  round %d: decode batch %2d, adapters %-8s %9.1f tokens/s\n", round+1, n, mix, float64(n*opts.Steps)/el.Seconds())
				if ref != nil && mix == "none" {
					el, err := benchDecode(ref, &b, slots, opts.Context, opts.Warmup, opts.Steps, blocksPerSeq)
					if err != nil {
						return err
					}
					if old, ok := best[key+"ref"]; !ok || el < old {
						best[key+"ref"] = el
					}
					fmt.Fprintf(w, "  round %d: decode batch %2d, adapters %-8s %9.1f tokens/s (%s)\n", round+1, n, mix, float64(n*opts.Steps)/el.Seconds(), refName)
				}
			}
		}
	}
	tps := map[string]float64{}
	for _, n := range opts.Batches {
		for _, mix := range mixes {
			v := float64(n*opts.Steps) / best[fmt.Sprint(n, mix)].Seconds()
			tps[fmt.Sprint(n, mix)] = v
			add(benchResult{Metric: "decode_tokens_per_second", Batch: n, Adapters: mix, Value: v, Unit: "tokens/s"})
		}
	}
	if ref != nil {
		for _, n := range opts.Batches {
			v := float64(n*opts.Steps) / best[fmt.Sprint(n, "noneref")].Seconds()
			add(benchResult{Metric: "decode_speedup_vs_reference", Batch: n, Adapters: "none", Value: tps[fmt.Sprint(n, "none")], Unit: "tokens/s",
				Baseline: v, Ratio: tps[fmt.Sprint(n, "none")] / v})
		}
	}
	largest := opts.Batches[len(opts.Batches)-1]
	for _, n := range opts.Batches {
		largest = max(largest, n)
	}
	if base := tps[fmt.Sprint(largest, "none")]; base > 0 {
		d := tps[fmt.Sprint(largest, "distinct")]
		add(benchResult{Metric: "distinct_adapter_cost", Batch: largest, Value: 1 - d/base, Unit: "fraction", Baseline: base, Target: "<= 0.15"})
	}

	// Batch-1 bandwidth efficiency: weight bytes a decode token reads ×
	// tokens/s ÷ the bandwidth the backend's threads reach.
	perToken := info.WeightBytes
	if !m.Tied {
		// Of the embedding only one row is read per token.
		perToken -= int64(m.Config.VocabSize*m.Config.HiddenSize) * info.WeightBytes / max(1, engineWeightElems(m))
	}
	// At a long context the step also reads the sequence's keys and values.
	perToken += int64(opts.Context) * info.KVBytes / max(1, int64(info.KVNumBlocks*info.KVBlockSize))
	if t1, ok := tps[fmt.Sprint(1, "none")]; ok {
		eff := float64(perToken) * t1 / bw
		add(benchResult{Metric: "batch1_bandwidth_efficiency", Batch: 1, Value: eff, Unit: "fraction", Baseline: bw, Target: ">= 0.70"})
	}

	// Merge-and-swap baseline against one mixed batch.
	mt, stepT, err := benchMerge(ctx, e, m, &b, adapters[:opts.MergeAdapters], opts.MergeRequests, opts.Rounds, blocksPerSeq)
	if err != nil {
		return err
	}
	nozzleTPS := float64(opts.MergeAdapters) / stepT
	add(benchResult{Metric: "multi_adapter_speedup_vs_merge", Batch: opts.MergeAdapters, Adapters: "distinct", Value: nozzleTPS, Unit: "tokens/s",
		Baseline: 1 / mt.total(), Ratio: nozzleTPS * mt.total(), Target: ">= 10x"})
	// The same with the merge arithmetic free: what swapping weights alone
	// costs, a bound no merge implementation can beat.
	swap := mt.total() - mt.merge
	add(benchResult{Metric: "multi_adapter_speedup_vs_swap_only", Batch: opts.MergeAdapters, Adapters: "distinct", Value: nozzleTPS, Unit: "tokens/s",
		Baseline: 1 / swap, Ratio: nozzleTPS * swap})

	// Report.
	fmt.Fprintf(w, "\nnozzle bench engine — %s, %d worker threads\n", lib.Backend(), info.Threads)
	wname := string(m.DType)
	if opts.WeightDType == Int8 {
		wname = fmt.Sprintf("int8 from %s's %.2f GB", m.DType, float64(ref.Info().WeightBytes)/1e9)
	}
	kvName := "16-bit"
	if m.DType == "F32" {
		kvName = "f32"
	}
	if opts.Context > 0 {
		fmt.Fprintf(w, "decodes at context %d: KV cache %s, %.2f GB read per step at batch 1 (f32: %.2f GB)\n", opts.Context, kvName,
			float64(opts.Context)*float64(info.KVBytes)/float64(info.KVNumBlocks*info.KVBlockSize)/1e9,
			float64(opts.Context)*float64(ref.Info().KVBytes)/float64(ref.Info().KVNumBlocks*ref.Info().KVBlockSize)/1e9)
	}
	fmt.Fprintf(w, "model: %s, %.2fB parameters, engine weights %.2f GB (%s); %d adapters of rank %d on all 7 modules (%.1f MB each)\n",
		m.Config.Architecture, float64(engineWeightElems(m))/1e9, float64(info.WeightBytes)/1e9, wname, opts.Adapters, opts.Rank, float64(adapterBytes)/1e6)
	fmt.Fprintf(w, "read bandwidth (nz_bench_read_bandwidth, %d MiB): %.1f GB/s; decode context up to %d tokens; best of %d rounds\n\n", opts.BandwidthBytes>>20, bw/1e9, ctxLen, opts.Rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "decode tokens/s\tbatch\tno adapter\tone adapter\tdistinct adapters\tdistinct vs none\t")
	for _, n := range opts.Batches {
		none, one, dis := tps[fmt.Sprint(n, "none")], tps[fmt.Sprint(n, "one")], tps[fmt.Sprint(n, "distinct")]
		fmt.Fprintf(tw, "\t%d\t%.1f\t%.1f\t%.1f\t%+.1f%%\t\n", n, none, one, dis, 100*(dis/none-1))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range results {
		switch r.Metric {
		case "distinct_adapter_cost":
			fmt.Fprintf(w, "%d distinct adapters at batch %d cost %.1f%% of base throughput (target <= 15%%)\n", r.Batch, r.Batch, 100*r.Value)
		case "batch1_bandwidth_efficiency":
			fmt.Fprintf(w, "batch-1 bandwidth efficiency: %.0f%% (%.2f GB/token × %.2f tokens/s ÷ %.1f GB/s; target >= 70%%)\n",
				100*r.Value, float64(perToken)/1e9, tps["1none"], bw/1e9)
		case "adapter_load_seconds":
			fmt.Fprintf(w, "adapter load into a slot: %.2f ms vs %.2f ms plain copy of its %.1f MB = %.2fx (target <= 2x)\n",
				1e3*r.Value, 1e3*r.Baseline, float64(adapterBytes)/1e6, r.Ratio)
		case "multi_adapter_speedup_vs_merge":
			fmt.Fprintf(w, "%d adapters round-robin at batch %d: Nozzle mixed batch %.2f tokens/s vs merge-and-swap %.3f tokens/s = %.1fx (target >= 10x)\n",
				r.Batch, r.Batch, r.Value, r.Baseline, r.Ratio)
			fmt.Fprintf(w, "  merge-and-swap per request (mean of %d): merge %.1f ms, install %.1f ms, decode step %.1f ms, restore %.1f ms; Nozzle's step for all %d: %.1f ms\n",
				opts.MergeRequests, 1e3*mt.merge, 1e3*mt.install, 1e3*mt.step, 1e3*mt.restore, r.Batch, 1e3*stepT)
		case "decode_speedup_vs_reference":
			fmt.Fprintf(w, "batch %d, no adapter: %.1f tokens/s vs %.1f with %s = %.2fx\n", r.Batch, r.Value, r.Baseline, refName, r.Ratio)
		case "multi_adapter_speedup_vs_swap_only":
			fmt.Fprintf(w, "  even with the merge arithmetic free (swap only: %.3f tokens/s) Nozzle is %.1fx faster\n", r.Baseline, r.Ratio)
		}
	}
	fmt.Fprintln(w)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// engineWeightElems counts the elements of every base tensor.
func engineWeightElems(m *model.Model) int64 {
	var n int64
	for _, w := range m.Weights() {
		n += w.NumElements()
	}
	return n
}

// benchFiles generates (once) the model and adapters into the cache.
func benchFiles(ctx context.Context, opts BenchOptions, w io.Writer) (string, []string, error) {
	key, _ := json.Marshal(struct {
		M     model.Spec
		N, R  int
		Layer int
	}{opts.Model, opts.Adapters, opts.Rank, 1})
	sum := sha256.Sum256(key)
	root := filepath.Join(opts.CacheDir, "bench-"+hex.EncodeToString(sum[:6]))
	dir := filepath.Join(root, "model")
	var adapterDirs []string
	for i := 0; i < opts.Adapters; i++ {
		adapterDirs = append(adapterDirs, filepath.Join(root, fmt.Sprintf("adapter-%02d", i)))
	}
	done := filepath.Join(root, "complete")
	if _, err := os.Stat(done); err == nil {
		return dir, adapterDirs, nil
	}
	if err := os.RemoveAll(root); err != nil {
		return "", nil, err
	}
	start := time.Now()
	fmt.Fprintf(w, "generating the benchmark model into %s ...\n", root)
	if err := model.WriteRandomModel(dir, opts.Model); err != nil {
		return "", nil, fmt.Errorf("generate bench model: %w", err)
	}
	info := opts.Model.Info()
	info.ID = "model"
	for i, d := range adapterDirs {
		if err := ctx.Err(); err != nil {
			return "", nil, err
		}
		if err := model.WriteRandomAdapter(d, model.AdapterSpec{Base: info, Rank: opts.Rank, Seed: uint64(1000 + i), DType: safetensors.BF16}); err != nil {
			return "", nil, fmt.Errorf("generate bench adapter: %w", err)
		}
	}
	if err := os.WriteFile(done, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", nil, err
	}
	fmt.Fprintf(w, "generated in %.1f s\n", time.Since(start).Seconds())
	return dir, adapterDirs, nil
}

// benchDecode runs decode steps for len(slots) sequences (sequence i on
// slots[i]) from position context (the cache before it as the pool holds
// it) and times the steps after the warmup ones.
func benchDecode(e *Engine, b *Batch, slots []int, context, warmup, steps, blocksPerSeq int) (time.Duration, error) {
	n := len(slots)
	blocks := make([]int32, blocksPerSeq)
	var start time.Time
	for s := 0; s < warmup+steps; s++ {
		if s == warmup {
			start = time.Now()
		}
		b.Reset(blocksPerSeq, 0)
		for i := 0; i < n; i++ {
			for k := range blocks {
				blocks[k] = int32(i*blocksPerSeq + k)
			}
			b.Add(Seq{Tokens: []int32{int32((7*i + 13*s) % e.vocab)}, Pos: context + s, Slot: slots[i], Blocks: blocks, Sample: true})
		}
		if err := e.Step(b); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// benchAdapterLoad times LoadAdapter into a slot against copying the same
// bytes (from the same mapping) into a Go buffer, averaged over the
// adapters; both run once untimed first so the pages are resident.
func benchAdapterLoad(ctx context.Context, e *Engine, adapters []*model.Adapter) (load, cp float64, bytes int64, err error) {
	n := min(len(adapters), 8)
	for _, l := range adapters[0].LoRAs {
		bytes += int64(len(l.A.Data) + len(l.B.Data))
	}
	buf := make([]byte, bytes)
	copyAll := func(a *model.Adapter) {
		off := 0
		for _, l := range a.LoRAs {
			off += copy(buf[off:], l.A.Data)
			off += copy(buf[off:], l.B.Data)
		}
	}
	for i := 0; i < n; i++ {
		copyAll(adapters[i])
		if err := e.LoadAdapter(0, adapters[i]); err != nil {
			return 0, 0, 0, err
		}
	}
	// Best of three rounds for each, interleaved.
	var lbest, cbest time.Duration
	for r := 0; r < 3; r++ {
		if err := ctx.Err(); err != nil {
			return 0, 0, 0, err
		}
		var lt, ct time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			copyAll(adapters[i])
			ct += time.Since(t0)
			t0 = time.Now()
			if err := e.LoadAdapter(0, adapters[i]); err != nil {
				return 0, 0, 0, err
			}
			lt += time.Since(t0)
		}
		if r == 0 || lt < lbest {
			lbest = lt
		}
		if r == 0 || ct < cbest {
			cbest = ct
		}
	}
	return lbest.Seconds() / float64(n), cbest.Seconds() / float64(n), bytes, nil
}

// mergeTimes splits the merge-and-swap baseline's time per request.
type mergeTimes struct {
	merge, install, step, restore float64
}

func (t mergeTimes) total() float64 { return t.merge + t.install + t.step + t.restore }

// benchMerge times the classic way of serving many adapters on one base
// model: per request, merge its adapter into the base weights
// (W' = W + scale·B·A for every adapted module, in parallel Go), install
// them with SetTensor, run the request's decode step, and restore the base
// weights. It returns the mean seconds of each phase per request, and the
// seconds of Nozzle's one mixed step serving a request of every adapter.
func benchMerge(ctx context.Context, e *Engine, m *model.Model, b *Batch, adapters []*model.Adapter, requests, rounds, blocksPerSeq int) (mergeTimes, float64, error) {
	var mt mergeTimes
	n := len(adapters)
	slots := make([]int, n)
	for i := range slots {
		slots[i] = i
	}
	stepT := 0.0
	for r := 0; r < rounds; r++ {
		step, err := benchDecode(e, b, slots, 0, 1, 2, blocksPerSeq)
		if err != nil {
			return mt, 0, err
		}
		if t := step.Seconds() / 2; r == 0 || t < stepT {
			stepT = t
		}
	}

	var mg merger
	blocks := make([]int32, blocksPerSeq)
	for k := range blocks {
		blocks[k] = int32(k)
	}
	for r := 0; r < requests; r++ {
		if err := ctx.Err(); err != nil {
			return mt, 0, err
		}
		a := adapters[r%n]
		for _, l := range a.LoRAs {
			w, ok := m.Weight(l.Module.Kind(), l.Layer)
			if !ok {
				return mt, 0, fmt.Errorf("bench: no base weight for %s of layer %d", l.Module, l.Layer)
			}
			t0 := time.Now()
			merged, err := mg.merge(w.Tensor, l)
			if err != nil {
				return mt, 0, err
			}
			t1 := time.Now()
			if err := e.SetTensor(l.Module.Kind(), l.Layer, merged); err != nil {
				return mt, 0, err
			}
			mt.merge += t1.Sub(t0).Seconds()
			mt.install += time.Since(t1).Seconds()
		}
		t0 := time.Now()
		b.Reset(blocksPerSeq, 0)
		b.Add(Seq{Tokens: []int32{int32(r % e.vocab)}, Pos: r % 4, Slot: -1, Blocks: blocks, Sample: true})
		if err := e.Step(b); err != nil {
			return mt, 0, err
		}
		t1 := time.Now()
		for _, l := range a.LoRAs {
			w, _ := m.Weight(l.Module.Kind(), l.Layer)
			if err := e.SetTensor(l.Module.Kind(), l.Layer, w.Tensor); err != nil {
				return mt, 0, err
			}
		}
		mt.step += t1.Sub(t0).Seconds()
		mt.restore += time.Since(t1).Seconds()
	}
	q := float64(requests)
	return mergeTimes{mt.merge / q, mt.install / q, mt.step / q, mt.restore / q}, stepT, nil
}
