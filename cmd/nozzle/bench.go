package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/gateway"
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
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return nil
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
	arch := fs.String("arch", "llama", "the generated model's architecture, same shapes: llama, qwen3 (q and k head norms), phi3 (q/k/v and gate/up fused in the checkpoint and the adapters), gemma2 (sandwich norms, GELU, soft-caps, alternating 512-token window) or gemma3 (Gemma 2's layer without soft-caps, with head norms, five windowed layers in six)")
	batches := fs.String("batches", "", "decode batch sizes (default 1,8,32)")
	adapters := fs.Int("adapters", 0, "adapters (default 32)")
	rank := fs.Int("rank", 0, "adapter rank (default 16)")
	threads := fs.Int("threads", 0, "CPU engine threads (0: every core)")
	rounds := fs.Int("rounds", 0, "rounds per measurement, best counts (default 3)")
	context := fs.Int("context", 0, "position the timed decodes start at: a long context adds its keys and values to every step's reads (decodes without an adapter are then also timed with an f32 KV cache, side by side)")
	weights := fs.String("weights", "checkpoint", "engine weights: checkpoint (bf16) or int8 (CPU; decodes without an adapter are also timed with bf16 weights, side by side)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := engine.BenchOptions{CacheDir: *cache, Adapters: *adapters, Rank: *rank, Threads: *threads, Rounds: *rounds, Context: *context}
	if *context < 0 {
		return fmt.Errorf("--context %d: must not be negative", *context)
	}
	switch *weights {
	case "checkpoint":
	case "int8":
		opts.WeightDType = engine.Int8
	default:
		return fmt.Errorf("--weights %q: want checkpoint or int8", *weights)
	}
	opts.Model = engine.DefaultBenchModel()
	if *quick {
		opts.Model = engine.QuickBenchModel()
	}
	switch *arch {
	case "llama", "qwen3", "phi3":
		opts.Model.Arch = *arch
	case "gemma2":
		opts.Model.Arch, opts.Model.Tied, opts.Model.SlidingWindow = "gemma2", true, 512
		opts.Model.AttnSoftcap, opts.Model.FinalSoftcap = 50, 30
	case "gemma3":
		opts.Model.Arch, opts.Model.Tied, opts.Model.SlidingWindow = "gemma3_text", true, 512
	default:
		return fmt.Errorf("--arch %q: want llama, qwen3, phi3, gemma2 or gemma3", *arch)
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
	fs := flag.NewFlagSet("nozzle bench gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rates := fs.String("rps", "1000,5000", "request rates to measure")
	dur := fs.Duration("duration", 5*time.Second, "length of each load run")
	ledgerDir := fs.String("ledger-dir", "", "folder of the benchmark's ledger (default: a temporary folder); its file system's fsync latency is part of the figure")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	stub := fs.String("stub", "replay", "the upstream: replay (the runtime server's recorded answer to the benchmark's request, served by a lean server) or runtime (the runtime server itself answering each request through a stub generator)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rps, err := intList(*rates)
	if err != nil {
		return fmt.Errorf("--rps: %w", err)
	}
	tuneGC(uint64(DefaultConfig().HeapFloorMB) << 20) // as the servers run by default
	// Write back what earlier work left dirty (a previous run's files,
	// their removal): its writeback would land in this run's fsyncs.
	syscall.Sync()
	dir, err := os.MkdirTemp(*ledgerDir, "nozzle-bench-gateway-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The upstream: a stub runtime on loopback that answers at once, so
	// what is measured is the gateway.
	const token = "bench-internal-token"
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	upHandler := runtime.NewGeneratorServer(&gateway.BenchStubGenerator{}, token)
	directBody := []byte(`{"request_id":"","tenant_id":"bench","prompt":"Hello","max_tokens":8}`)
	upURL := "http://" + upLn.Addr().String()
	switch *stub {
	case "replay":
		upSrv, err := gateway.BenchStubServer(upLn, upHandler, "/internal/v1/generate", token, directBody)
		if err != nil {
			upLn.Close()
			return err
		}
		defer upSrv.Shutdown()
	case "runtime":
		upSrv := &http.Server{Handler: upHandler}
		go upSrv.Serve(upLn)
		defer upSrv.Close()
	default:
		upLn.Close()
		return fmt.Errorf("--stub %q: want replay or runtime", *stub)
	}

	// The gateway: the real ledger (durable metering), auth, limits, and
	// forwarding over HTTP to the stub.
	l, err := billing.Open(billing.Options{Path: filepath.Join(dir, "ledger.db"), Logger: quiet, SyncHoldsP: spareP()}) // as the servers run
	if err != nil {
		return err
	}
	defer l.Close()
	tenant := &nozzle.Tenant{Name: "bench"}
	if err := l.CreateTenant(ctx, tenant); err != nil {
		return err
	}
	secret, err := nozzle.NewKeySecret()
	if err != nil {
		return err
	}
	if err := l.CreateKey(ctx, &nozzle.APIKey{TenantID: tenant.ID, Name: "bench", Prefix: nozzle.KeyDisplayPrefix(secret),
		Digest: nozzle.KeyDigest(secret), Scopes: nozzle.AllScopes}); err != nil {
		return err
	}
	client := runtime.NewClient(upURL, token, nil)
	// One tenant stands for all the traffic, so its cap on sequences at
	// once (a fairness limit among tenants) is off: a stall of the disk
	// would otherwise turn the requests it holds up into 429s.
	gw, err := gateway.New(gateway.Config{Logger: quiet, UploadDir: filepath.Join(dir, "uploads"), TenantSequences: -1}, gateway.Deps{
		Tenants: l, Keys: l, Adapters: l, Store: runtime.NewStore(filepath.Join(dir, "adapters"), nil),
		Ledger: l, Budget: l, Reporter: l,
		Upstreams: []gateway.Upstream{{ID: "stub", Generator: client}},
	})
	if err != nil {
		return err
	}
	gwLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go gw.Serve(gwLn)
	defer gw.Shutdown(context.Background())
	gwURL := "http://" + gwLn.Addr().String()
	gw.CheckUpstreams(ctx)

	direct := benchTarget{url: upURL + "/internal/v1/generate", body: directBody,
		headers: map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}}
	via := benchTarget{url: gwURL + "/v1/completions", body: []byte(`{"model":"base","prompt":"Hello","max_tokens":8}`),
		headers: map[string]string{"Authorization": "Bearer " + secret, "Content-Type": "application/json"}}

	// The floor the ledger's file system puts under every acknowledged
	// request: one durable in-place write, as the usage journal makes.
	syncs, err := billing.SyncLatency(dir, 400)
	if err != nil {
		return err
	}
	syncP50, syncP99 := syncs[len(syncs)/2], syncs[len(syncs)*99/100]

	fmt.Fprintf(stdout, "Gateway added latency over calling the upstream directly (stub upstream on loopback; auth, limits, durable metering, forwarding)\n")
	fmt.Fprintf(stdout, "The ledger's file system, same run: a durable 4 KiB write in place takes p50 %s, p99 %s (%d writes): every request waits for one.\n\n",
		syncP50.Round(time.Microsecond), syncP99.Round(time.Microsecond), len(syncs))
	fmt.Fprintf(stdout, "%8s  %-8s %10s %10s %10s %8s %8s\n", "rps", "path", "p50", "p90", "p99", "errors", "achieved")
	type row struct {
		RPS                  int           `json:"rps"`
		Direct, Gateway      gateway.Stats `json:"-"`
		AddedP50, AddedP99   time.Duration `json:"-"`
		AddedP50us           float64       `json:"added_p50_us"`
		AddedP99us           float64       `json:"added_p99_us"`
		DirectP99us          float64       `json:"direct_p99_us"`
		GatewayP99us         float64       `json:"gateway_p99_us"`
		GatewayAchievedRPS   float64       `json:"gateway_achieved_rps"`
		GatewayErrors        int           `json:"gateway_errors"`
		UsageEventsPerSecond float64       `json:"usage_events_per_second"`
		// CPU time of the whole process (load generator and stub
		// included) per request, in µs.
		DirectCPUus  float64 `json:"direct_cpu_us_per_request"`
		GatewayCPUus float64 `json:"gateway_cpu_us_per_request"`
	}
	var rows []row
	for _, r := range rps {
		// Warm both paths, then measure each at the same rate.
		gateway.BenchLoad(ctx, direct.url, r, time.Second/2, direct.body, direct.headers)
		gateway.BenchLoad(ctx, via.url, r, time.Second/2, via.body, via.headers)
		c0 := processCPU()
		d, err := gateway.BenchLoad(ctx, direct.url, r, *dur, direct.body, direct.headers)
		if err != nil {
			return err
		}
		c1 := processCPU()
		g, err := gateway.BenchLoad(ctx, via.url, r, *dur, via.body, via.headers)
		if err != nil {
			return err
		}
		c2 := processCPU()
		for _, x := range []struct {
			name string
			s    gateway.Stats
		}{{"direct", d}, {"gateway", g}} {
			fmt.Fprintf(stdout, "%8d  %-8s %10s %10s %10s %8d %8.0f\n", r, x.name, x.s.P50, x.s.P90, x.s.P99, x.s.Errors, x.s.RPS)
		}
		rw := row{RPS: r, AddedP50: g.P50 - d.P50, AddedP99: g.P99 - d.P99, GatewayAchievedRPS: g.RPS, GatewayErrors: g.Errors}
		rw.AddedP50us = float64(rw.AddedP50) / 1e3
		rw.AddedP99us = float64(rw.AddedP99) / 1e3
		rw.DirectP99us = float64(d.P99) / 1e3
		rw.GatewayP99us = float64(g.P99) / 1e3
		rw.UsageEventsPerSecond = g.RPS
		rw.DirectCPUus = perRequest(c1-c0, d.Requests)
		rw.GatewayCPUus = perRequest(c2-c1, g.Requests)
		fmt.Fprintf(stdout, "%8d  added    %10s %10s %10s   (target: p99 added ≤ 1ms at 5,000 rps)\n", r, rw.AddedP50, g.P90-d.P90, rw.AddedP99)
		fmt.Fprintf(stdout, "%8d  cpu      %.0fµs per request direct, %.0fµs through the gateway (whole process: load generator and stub included)\n\n", r, rw.DirectCPUus, rw.GatewayCPUus)
		if g.FirstError != "" {
			fmt.Fprintf(stdout, "          first gateway error: %s\n", g.FirstError)
		}
		rows = append(rows, rw)
	}
	enc := json.NewEncoder(stdout)
	enc.Encode(map[string]any{"bench": "gateway", "metric": "ledger_sync", "p50_us": float64(syncP50) / 1e3, "p99_us": float64(syncP99) / 1e3})
	for _, rw := range rows {
		enc.Encode(map[string]any{"bench": "gateway", "result": rw})
	}
	return nil
}

type benchTarget struct {
	url     string
	body    []byte
	headers map[string]string
}

// processCPU is the CPU time the process has used so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func perRequest(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / 1e3 / float64(n)
}
