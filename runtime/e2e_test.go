package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
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
	lib := engineLib(t)
	modelDir, adapterDirs := demo(t)
	validate, err := runtime.ValidateAdapter(modelDir, 64)
	if err != nil {
		t.Fatal(err)
	}
	store := runtime.NewStore(filepath.Join(t.TempDir(), "store"), validate)
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
	opts.ModelDir, opts.EngineLib, opts.Device, opts.AdapterSource = modelDir, lib, "cpu", store
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
	return rt, adapters
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
	mixed := make([]outcome, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() { defer wg.Done(); mixed[i] = run(ctx, rt, r) }()
	}
	wg.Wait()
	for i := range reqs {
		if mixed[i].err != nil || mixed[i].text != alone[i].text || mixed[i].res.CompletionTokens != alone[i].res.CompletionTokens {
			t.Errorf("request %d: mixed %q (%v), alone %q", i, mixed[i].text, mixed[i].err, alone[i].text)
		}
	}
}
