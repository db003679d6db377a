package runtime_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/engine"
)

// engineLib returns the CPU engine library, built by make.
func engineLib(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("NOZZLE_ENGINE_LIB"); p != "" {
		return p
	}
	p, err := engine.Find("libnozzle_cpu.so")
	if err != nil {
		t.Skipf("engine library not built (make build/libnozzle_cpu.so): %v", err)
	}
	return p
}

var (
	demoOnce   sync.Once
	demoDir    string
	demoModel  string
	demoAdapts map[string]string
	demoErr    error
)

// demo generates the demo model once per test binary.
func demo(t testing.TB) (string, map[string]string) {
	t.Helper()
	demoOnce.Do(func() {
		demoDir, demoErr = os.MkdirTemp("", "nozzle-demo-test-")
		if demoErr == nil {
			demoModel, demoAdapts, demoErr = runtime.EnsureDemo(demoDir)
		}
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	return demoModel, demoAdapts
}

func TestMain(m *testing.M) {
	code := m.Run()
	if demoDir != "" {
		os.RemoveAll(demoDir)
	}
	os.Exit(code)
}

// openDemo opens a runtime on the demo model with the real engine and
// tokenizer, its adapters imported into a Store.
func openDemo(t testing.TB, opts runtime.Options) (*runtime.Runtime, map[string]*nozzle.Adapter) {
	t.Helper()
	modelDir, adapterDirs := demo(t)
	store := demoStore(t, modelDir)
	adapters := map[string]*nozzle.Adapter{}
	for name, dir := range adapterDirs {
		tmp := filepath.Join(t.TempDir(), name)
		if err := os.CopyFS(tmp, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		m, err := store.Import(context.Background(), tmp)
		if err != nil {
			t.Fatal(err)
		}
		adapters[name] = &nozzle.Adapter{ID: name, Name: name, AdapterManifest: *m}
	}
	return openOnStore(t, opts, modelDir, store), adapters
}

// demoStore is an empty adapter Store for the demo model in modelDir.
func demoStore(t testing.TB, modelDir string) *runtime.Store {
	t.Helper()
	validate, err := runtime.ValidateAdapter(modelDir, 64)
	if err != nil {
		t.Fatal(err)
	}
	return runtime.NewStore(filepath.Join(t.TempDir(), "store"), validate)
}

// openOnStore opens a runtime on the model in modelDir with the real CPU
// engine, its adapters from src, closed when the test ends.
func openOnStore(t testing.TB, opts runtime.Options, modelDir string, src runtime.AdapterSource) *runtime.Runtime {
	t.Helper()
	opts.ModelDir, opts.EngineLib, opts.Device, opts.AdapterSource = modelDir, engineLib(t), "cpu", src
	if opts.Threads == 0 {
		opts.Threads = 2
	}
	rt, err := runtime.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rt.Close(ctx)
	})
	return rt
}

func TestDemo_EndToEnd(t *testing.T) {
	rt, adapters := openDemo(t, runtime.Options{})
	ctx := context.Background()
	info, err := rt.Info(ctx)
	if err != nil || info.Device != "cpu" || info.VocabSize == 0 || !rt.Ready() {
		t.Fatalf("info %+v %v", info, err)
	}
	reqs := []*nozzle.GenerateRequest{
		{TenantID: "a", Prompt: "The quick brown fox", MaxTokens: 16},
		{TenantID: "b", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Write a poem."}}, MaxTokens: 16, Adapter: adapters["demo-poet"]},
		{TenantID: "c", Prompt: "SELECT * FROM", MaxTokens: 16, Adapter: adapters["demo-sql"]},
		{TenantID: "a", Prompt: "func main() {", MaxTokens: 16, Adapter: adapters["demo-chat"]},
		{TenantID: "b", Prompt: "The quick brown fox", MaxTokens: 16, Adapter: adapters["demo-code"]},
	}
	alone := make([]outcome, len(reqs))
	for i, r := range reqs {
		t0 := time.Now()
		alone[i] = run(ctx, rt, r)
		if alone[i].err != nil {
			t.Fatalf("request %d: %v", i, alone[i].err)
		}
		t.Logf("alone %d: %v, %q %+v", i, time.Since(t0), alone[i].text, *alone[i].res)
		if again := run(ctx, rt, r); again.text != alone[i].text {
			t.Errorf("request %d: not deterministic: %q vs %q", i, again.text, alone[i].text)
		}
	}
	if alone[0].text == alone[4].text {
		t.Errorf("the adapter changed nothing: %q", alone[0].text)
	}
	// All at once, mixed in one batch: the same text.
	mixed := runAll(ctx, rt, reqs)
	for i := range reqs {
		if mixed[i].err != nil || mixed[i].text != alone[i].text || mixed[i].res.CompletionTokens != alone[i].res.CompletionTokens {
			t.Errorf("request %d: mixed %q (%v), alone %q", i, mixed[i].text, mixed[i].err, alone[i].text)
		}
	}
}

// TestDemo_Int8Weights: a runtime keeping the demo model's weights as int8
// serves base and adapter requests, deterministically and alike alone or
// batched; an unknown weights option is refused.
func TestDemo_Int8Weights(t *testing.T) {
	rt, adapters := openDemo(t, runtime.Options{Weights: "int8"})
	ctx := context.Background()
	reqs := []*nozzle.GenerateRequest{
		{TenantID: "a", Prompt: "The quick brown fox", MaxTokens: 12},
		{TenantID: "b", Prompt: "The quick brown fox", MaxTokens: 12, Adapter: adapters["demo-code"]},
	}
	var alone [2]outcome
	for i, r := range reqs {
		if alone[i] = run(ctx, rt, r); alone[i].err != nil || alone[i].res.CompletionTokens != 12 {
			t.Fatalf("request %d: %v %+v", i, alone[i].err, alone[i].res)
		}
	}
	if alone[0].text == alone[1].text {
		t.Errorf("the adapter changed nothing: %q", alone[0].text)
	}
	var both [2]outcome
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() { defer wg.Done(); both[i] = run(ctx, rt, r) }()
	}
	wg.Wait()
	for i := range reqs {
		if both[i].err != nil || both[i].text != alone[i].text {
			t.Errorf("request %d: batched %q (%v), alone %q", i, both[i].text, both[i].err, alone[i].text)
		}
	}
	modelDir, _ := demo(t)
	if _, err := runtime.Open(ctx, runtime.Options{ModelDir: modelDir, EngineLib: engineLib(t), Weights: "fp4"}); err == nil || !strings.Contains(err.Error(), `weights "fp4"`) {
		t.Errorf("weights fp4: %v", err)
	}
}

func TestEnsureDemo_Repair(t *testing.T) {
	dir := t.TempDir()
	modelDir, adapters, err := runtime.EnsureDemo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(adapters) != 4 {
		t.Fatalf("%d demo adapters", len(adapters))
	}
	weights := filepath.Join(modelDir, "model.safetensors")
	st1, err := os.Stat(weights)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(weights)
	// A second call reuses the files.
	if _, _, err := runtime.EnsureDemo(dir); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(weights); !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("intact demo regenerated")
	}
	// Damage: the same bytes come back.
	os.WriteFile(weights, orig[:len(orig)/2], 0o644)
	os.Remove(filepath.Join(adapters["demo-sql"], nozzle.AdapterWeightsFile))
	if _, _, err := runtime.EnsureDemo(dir); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(weights)
	if string(again) != string(orig) {
		t.Error("regenerated weights differ: generation is not deterministic")
	}
	if _, err := os.Stat(filepath.Join(adapters["demo-sql"], nozzle.AdapterWeightsFile)); err != nil {
		t.Error("adapter not regenerated")
	}
}

// TestDemo_PreemptAndConservation runs the demo model with a KV pool too
// small for its load, with cancellations, on the real clock: texts match
// the unpreempted runs, and the requests' device seconds plus idle time
// add up to the uptime.
func TestDemo_PreemptAndConservation(t *testing.T) {
	reg := metrics.NewRegistry()
	rt, adapters := openDemo(t, runtime.Options{KVBlocks: 8, MaxBatchSeqs: 8, Metrics: reg, PrefillChunk: 32})
	ctx := context.Background()
	names := []string{"", "demo-sql", "demo-chat", "demo-code", "demo-poet"}
	var reqs []*nozzle.GenerateRequest
	for i := range 8 {
		r := &nozzle.GenerateRequest{TenantID: fmt.Sprint("t", i%3), PromptTokens: randomPrompt(newRNG(uint64(i)), 20+7*i), MaxTokens: 40}
		if n := names[i%len(names)]; n != "" {
			r.Adapter = adapters[n]
		}
		reqs = append(reqs, r)
	}
	var device float64
	alone := make([]outcome, len(reqs))
	for i, r := range reqs {
		alone[i] = run(ctx, rt, r)
		if alone[i].err != nil {
			t.Fatal(alone[i].err)
		}
		device += alone[i].res.DeviceSeconds
	}
	// Two more requests are canceled mid-way: copies of the two that ran
	// longest alone (greedy decoding may meet the end of sequence early).
	var long []*nozzle.GenerateRequest
	for i := range reqs {
		if alone[i].res.CompletionTokens >= 8 && len(long) < 2 {
			long = append(long, reqs[i])
		}
	}
	if len(long) < 2 {
		t.Fatal("fewer than two requests generate 8 tokens alone")
	}
	got := make([]outcome, len(reqs)+2)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i >= len(reqs) {
				cctx, cancel := context.WithCancel(ctx)
				n := 0
				var o outcome
				o.res, o.err = rt.Generate(cctx, long[i-len(reqs)], func(nozzle.Chunk) error {
					if n++; n == 3 {
						cancel()
					}
					return nil
				})
				got[i] = o
				return
			}
			got[i] = run(ctx, rt, reqs[i])
		}()
	}
	wg.Wait()
	if metricValue(promText(reg), "nozzle_runtime_preemptions_total") <= 0 {
		t.Error("no preemption happened")
	}
	for i, o := range got {
		device += o.res.DeviceSeconds
		if i >= len(reqs) {
			if nozzle.ErrorCode(o.err) != nozzle.ECANCELED {
				t.Errorf("canceled request %d: %v %+v", i, o.err, o.res)
			}
			continue
		}
		if o.err != nil || o.text != alone[i].text {
			t.Errorf("request %d: preempted %q (%v), alone %q", i, o.text, o.err, alone[i].text)
		}
	}
	time.Sleep(20 * time.Millisecond) // some idle time
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rt.Close(cctx); err != nil {
		t.Fatal(err)
	}
	st := rt.Stats()
	if math.Abs(device-st.ActiveSeconds) > 1e-6*st.ActiveSeconds || math.Abs(device+st.IdleSeconds-st.UptimeSeconds) > 1e-6 {
		t.Errorf("device seconds %.6f + idle %.6f != uptime %.6f (active %.6f)", device, st.IdleSeconds, st.UptimeSeconds, st.ActiveSeconds)
	}
	t.Logf("uptime %.3fs, active %.3fs, idle %.3fs", st.UptimeSeconds, st.ActiveSeconds, st.IdleSeconds)
}

func TestOpen_Devices(t *testing.T) {
	lib := engineLib(t)
	modelDir, _ := demo(t)
	ctx := context.Background()
	rt, err := runtime.Open(ctx, runtime.Options{ModelDir: modelDir, EngineLib: lib, Device: "auto", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := rt.Info(ctx)
	if _, cerr := os.Stat(filepath.Join(filepath.Dir(lib), "libnozzle_cuda.so")); cerr != nil && info.Device != "cpu" {
		t.Errorf("auto without a CUDA library chose %q", info.Device)
	}
	rt.Close(ctx)
	if _, err := rt.Info(ctx); nozzle.ErrorCode(err) != nozzle.EUNAVAILABLE {
		t.Errorf("closed runtime info: %v", err)
	}
	if _, err := runtime.Open(ctx, runtime.Options{ModelDir: modelDir, EngineLib: filepath.Join(t.TempDir(), "libnozzle_cpu.so"), Device: "cuda"}); err == nil {
		t.Error("cuda without a CUDA library opened")
	}
	if _, err := runtime.Open(ctx, runtime.Options{ModelDir: t.TempDir(), EngineLib: lib}); err == nil {
		t.Error("empty model folder opened")
	}
	if _, err := runtime.Open(ctx, runtime.Options{ModelDir: modelDir, EngineLib: lib, Device: "tpu"}); err == nil {
		t.Error("unknown device accepted")
	}
}

// TestDemo_PrefixCache: on the real engine, a request that repeats a long
// system prompt, with or without an adapter, reuses its KV blocks and
// answers exactly as a runtime without the prefix cache does.
func TestDemo_PrefixCache(t *testing.T) {
	on, adapters := openDemo(t, runtime.Options{})
	off, _ := openDemo(t, runtime.Options{DisablePrefixCache: true})
	ctx := context.Background()
	system := strings.Repeat("You answer questions about the billing of shared GPUs, briefly and politely. ", 8)
	ask := func(q string, ad *nozzle.Adapter) *nozzle.GenerateRequest {
		return &nozzle.GenerateRequest{TenantID: "a", MaxTokens: 12, Adapter: ad,
			Messages: []nozzle.ChatMessage{{Role: "system", Content: system}, {Role: "user", Content: q}}}
	}
	for i, r := range []*nozzle.GenerateRequest{
		ask("What is a slot?", nil), ask("What is idle time?", nil),
		ask("What is a slot?", adapters["demo-chat"]), ask("What is idle time?", adapters["demo-chat"]),
	} {
		a, b := run(ctx, on, r), run(ctx, off, r)
		if a.err != nil || b.err != nil {
			t.Fatal(a.err, b.err)
		}
		if a.text != b.text {
			t.Errorf("request %d: with the cache %q, without %q", i, a.text, b.text)
		}
		if i%2 == 0 && a.res.CachedPromptTokens != 0 {
			t.Errorf("request %d: %d cached tokens on first sight of its prefix", i, a.res.CachedPromptTokens)
		}
		if i%2 == 1 && a.res.CachedPromptTokens < a.res.PromptTokens/2 {
			t.Errorf("request %d: %d of %d prompt tokens cached", i, a.res.CachedPromptTokens, a.res.PromptTokens)
		}
		t.Logf("request %d: %d of %d prompt tokens cached; device %.1f ms with the cache, %.1f ms without", i,
			a.res.CachedPromptTokens, a.res.PromptTokens, 1e3*a.res.DeviceSeconds, 1e3*b.res.DeviceSeconds)
	}
}
