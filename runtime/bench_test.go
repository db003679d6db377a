package runtime_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime"
)

// TestBenchServe runs the serving benchmark small and checks that it
// reports every case with finite numbers. NOZZLE_BENCH_FULL=1 runs it at
// its default size and prints the report.
func TestBenchServe(t *testing.T) {
	lib := engineLib(t)
	opts := runtime.BenchOptions{EngineLib: lib, Adapters: 24, Requests: 24, Threads: 2}
	if os.Getenv("NOZZLE_BENCH_FULL") != "" {
		opts = runtime.BenchOptions{EngineLib: lib, Threads: 2, DataDir: os.Getenv("NOZZLE_BENCH_DIR")}
		if n, err := strconv.Atoi(os.Getenv("NOZZLE_BENCH_ADAPTERS")); err == nil {
			opts.Adapters = n
		}
		if n, err := strconv.Atoi(os.Getenv("NOZZLE_BENCH_SEQS")); err == nil {
			opts.MaxBatchSeqs = n
		}
		if n, err := strconv.Atoi(os.Getenv("NOZZLE_BENCH_TOKENS")); err == nil {
			opts.MaxBatchTokens = n
		}
	} else if testing.Short() {
		t.Skip("benchmark run")
	}
	var out strings.Builder
	if err := runtime.BenchServe(context.Background(), opts, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	cases := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var row struct {
			Case   string             `json:"case"`
			Values map[string]float64 `json:"values"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		cases[row.Case] = true
		if len(row.Values) == 0 {
			t.Errorf("case %s has no values", row.Case)
		}
		// The shared system prompt comes from the cache but for the first
		// request's and each question's blocks.
		if row.Case == "prefix_cache_shared_system_prompt" && (row.Values["cached_prompt_share"] < 0.8 || row.Values["ttft_ratio"] <= 1) {
			t.Errorf("prefix cache: %v", row.Values)
		}
	}
	for _, c := range []string{"saturated_many_vs_one", "poisson_many_vs_one", "cold_adapter_ttft", "fairness_light_tenant", "prefix_cache_shared_system_prompt"} {
		if !cases[c] {
			t.Errorf("no %s row", c)
		}
	}
}
