package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// TestBench runs Bench on a tiny model and checks its report: every metric
// present, sane, and the JSON lines parseable. (The real figures come from
// nozzle bench engine on the default model.)
func TestBench(t *testing.T) {
	lib := openLib(t)
	cache := t.TempDir()
	opts := engine.BenchOptions{
		CacheDir:       cache,
		Model:          model.Spec{VocabSize: 512, HiddenSize: 128, IntermediateSize: 256, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, DType: safetensors.BF16, Seed: 5},
		Adapters:       6,
		Rank:           8,
		Batches:        []int{1, 4},
		Steps:          2,
		MergeRequests:  2,
		MergeAdapters:  4,
		Threads:        1,
		BandwidthBytes: 16 << 20,
	}
	var out bytes.Buffer
	if err := engine.Bench(context.Background(), lib, opts, &out); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	metrics := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r struct {
			Bench, Metric string
			Value, Ratio  float64
			Batch         int
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if r.Bench != "engine" || !(r.Value == r.Value) {
			t.Errorf("bad result %q", line)
		}
		metrics[r.Metric]++
		if r.Metric == "decode_tokens_per_second" && !(r.Value > 0) {
			t.Errorf("throughput %v", r.Value)
		}
		if (r.Metric == "adapter_load_seconds" || r.Metric == "multi_adapter_speedup_vs_merge") && !(r.Ratio > 0) {
			t.Errorf("%s ratio %v", r.Metric, r.Ratio)
		}
	}
	want := map[string]int{"decode_tokens_per_second": 6, "distinct_adapter_cost": 1, "batch1_bandwidth_efficiency": 1, "adapter_load_seconds": 1, "multi_adapter_speedup_vs_merge": 1, "multi_adapter_speedup_vs_swap_only": 1}
	for k, n := range want {
		if metrics[k] != n {
			t.Errorf("%d %s lines, want %d\n%s", metrics[k], k, n, report)
		}
	}
	if !strings.Contains(report, "decode tokens/s") {
		t.Errorf("no table:\n%s", report)
	}
	t.Log(report)
	// A second run reuses the cached files.
	out.Reset()
	opts.Batches = []int{1}
	if err := engine.Bench(context.Background(), lib, opts, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "generating") {
		t.Error("the cached model was generated again")
	}
	// int8 weights at a context of 40: each decode also timed on the
	// reference engine (bf16 weights, an f32 KV cache), with the ratio.
	out.Reset()
	opts.Batches, opts.WeightDType, opts.Context = []int{1, 2}, engine.Int8, 40
	if err := engine.Bench(context.Background(), lib, opts, &out); err != nil {
		t.Fatal(err)
	}
	report = out.String()
	var refs []int
	for _, line := range strings.Split(report, "\n") {
		var r struct {
			Metric          string
			Batch           int
			Baseline, Ratio float64
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.Metric == "decode_speedup_vs_reference" {
			if !(r.Baseline > 0 && r.Ratio > 0) {
				t.Errorf("reference line %q", line)
			}
			refs = append(refs, r.Batch)
		}
	}
	if !slices.Equal(refs, []int{1, 2}) || !strings.Contains(report, "decodes at context 40: KV cache 16-bit") ||
		!strings.Contains(report, "int8 from BF16's") || !strings.Contains(report, "with BF16 weights, f32 KV cache") {
		t.Errorf("int8 at a context: reference batches %v\n%s", refs, report)
	}
}

var (
	engineBench      = flag.String("engine-bench", "", `run Bench on the "quick" or "default" model and print its report`)
	engineBenchCache = flag.String("engine-bench-cache", filepath.Join(os.TempDir(), "nozzle-bench"), "cache folder for -engine-bench")
)

// TestBenchReport runs the full benchmark when asked:
//
//	go test ./runtime/engine -run TestBenchReport -engine-bench quick -v -timeout 30m
func TestBenchReport(t *testing.T) {
	if *engineBench == "" {
		t.Skip("set -engine-bench quick|default")
	}
	opts := engine.BenchOptions{CacheDir: *engineBenchCache}
	switch *engineBench {
	case "quick":
		opts.Model = engine.QuickBenchModel()
	case "default":
	default:
		t.Fatalf("-engine-bench %q: want quick or default", *engineBench)
	}
	if err := engine.Bench(t.Context(), openLib(t), opts, os.Stdout); err != nil {
		t.Fatal(err)
	}
}
