package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/engine"
)

const benchUsage = `Usage: nozzle bench <what> [flags]

  engine    decode throughput by batch and adapter mix, bandwidth efficiency,
            adapter load, against merge-and-swap (a ~0.85B-parameter model)
  serve     the runtime under many adapters, cold adapter loads, fairness
  gateway   the gateway's added latency over calling its upstream directly
  billing   ledger report latency, durable appends, the economics simulation
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return errUsage
	}
	what, args := args[0], args[1:]
	switch what {
	case "engine":
		return benchEngine(ctx, args, stdout, stderr)
	case "serve":
		return benchServe(ctx, args, stdout, stderr)
	case "gateway":
		return benchGateway(ctx, args, stdout, stderr)
	case "billing":
		return benchBilling(ctx, args, stdout, stderr)
	}
	fmt.Fprint(stderr, benchUsage)
	return fmt.Errorf("bench: unknown benchmark %q", what)
}

// benchCacheDir is where generated benchmark models are kept between runs.
func benchCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "nozzle", "bench")
	}
	return filepath.Join(os.TempDir(), "nozzle-bench")
}

func benchEngine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nozzle bench engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	device := fs.String("device", "cpu", "cpu or cuda")
	lib := fs.String("engine-lib", "", "engine library (default: found by device)")
	cache := fs.String("cache", benchCacheDir(), "folder keeping the generated model and adapters")
	quick := fs.Bool("quick", false, "a small model: a fast check, not the figures")
	batches := fs.String("batches", "", "decode batch sizes (default 1,8,32)")
	adapters := fs.Int("adapters", 0, "adapters (default 32)")
	rank := fs.Int("rank", 0, "adapter rank (default 16)")
	threads := fs.Int("threads", 0, "CPU engine threads (0: every core)")
	rounds := fs.Int("rounds", 0, "rounds per measurement, best counts (default 3)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := engine.BenchOptions{CacheDir: *cache, Adapters: *adapters, Rank: *rank, Threads: *threads, Rounds: *rounds}
	if *quick {
		opts.Model = engine.QuickBenchModel()
	}
	if *batches != "" {
		b, err := intList(*batches)
		if err != nil {
			return fmt.Errorf("--batches: %w", err)
		}
		opts.Batches = b
	}
	path := *lib
	if path == "" {
		name := "libnozzle_cpu.so"
		if *device == "cuda" {
			name = "libnozzle_cuda.so"
		} else if *device != "cpu" {
			return fmt.Errorf("--device %q: want cpu or cuda", *device)
		}
		p, err := engine.Find(name)
		if err != nil {
			return err
		}
		path = p
	}
	l, err := engine.Open(path)
	if err != nil {
		return err
	}
	return engine.Bench(ctx, l, opts, stdout)
}

func benchServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nozzle bench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o runtime.BenchOptions
	fs.StringVar(&o.DataDir, "data", filepath.Join(benchCacheDir(), "serve"), "folder keeping the demo model and the benchmark's adapters")
	fs.StringVar(&o.EngineLib, "engine-lib", "", "engine library")
	fs.StringVar(&o.Device, "device", "cpu", "cpu or cuda")
	fs.IntVar(&o.Threads, "threads", 0, "CPU engine threads (0: every core)")
	fs.IntVar(&o.Adapters, "adapters", 0, "registered adapters (default 1000)")
	fs.IntVar(&o.Requests, "requests", 0, "requests per throughput run (default 160)")
	fs.IntVar(&o.Slots, "slots", 0, "engine adapter slots (default 8)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return runtime.BenchServe(ctx, o, stdout)
}

func benchBilling(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nozzle bench billing", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o billing.BenchOptions
	fs.StringVar(&o.Dir, "dir", "", "folder for the benchmark's ledgers (default: a temporary one)")
	fs.StringVar(&o.Only, "only", "", "one section: report, append or sim")
	fs.IntVar(&o.ReportEvents, "report-events", 0, "events in the reported month (default 10,000,000)")
	fs.IntVar(&o.Writers, "writers", 0, "concurrent writers (default 256)")
	fs.IntVar(&o.SimTenants, "tenants", 0, "simulated tenants (default 200)")
	fs.StringVar(&o.WriteDoc, "write-doc", "", "rewrite this economics document (docs/ECONOMICS.md) with the simulation")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return billing.Bench(ctx, o, stdout)
}

func benchGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("bench gateway: not wired yet")
}
