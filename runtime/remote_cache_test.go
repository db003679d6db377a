package runtime_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// adapterGateway is the gateway's side of the adapter fetch: a real Store
// serving its files at /internal/adapters/{sha256}/{file} behind the
// internal token, on a loopback port. (The gateway's own handler is tested
// in gateway/ and in cmd/nozzle's split deployment test.)
type adapterGateway struct {
	url   string
	store *runtime.Store
	src   string // where adapters are written before import

	mu   sync.Mutex
	gets map[string]int // weight downloads by sha
}

func newAdapterGateway(t testing.TB) *adapterGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newAdapterGatewayOn(t, ln)
}

// newAdapterGatewayOn is newAdapterGateway serving on ln.
func newAdapterGatewayOn(t testing.TB, ln net.Listener) *adapterGateway {
	t.Helper()
	g := &adapterGateway{
		store: runtime.NewStore(t.TempDir(), func(string) (*nozzle.AdapterManifest, error) { return &nozzle.AdapterManifest{}, nil }),
		src:   t.TempDir(),
		gets:  map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /internal/adapters/{sha}/{file}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+internalToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		sha, file := r.PathValue("sha"), r.PathValue("file")
		f, size, err := g.store.Open(r.Context(), sha, file)
		if err != nil {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		defer f.Close()
		if file == nozzle.AdapterWeightsFile {
			g.mu.Lock()
			g.gets[sha]++
			g.mu.Unlock()
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		io.Copy(w, f)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	g.url = "http://" + ln.Addr().String()
	return g
}

// add stores adapter i, weightBytes of weights, and returns its address.
func (g *adapterGateway) add(t testing.TB, i, weightBytes int) string {
	t.Helper()
	dir, err := os.MkdirTemp(g.src, "adapter-")
	if err != nil {
		t.Fatal(err)
	}
	w := make([]byte, weightBytes)
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	for j := range w {
		w[j] = byte(rng.Uint32())
	}
	os.WriteFile(filepath.Join(dir, nozzle.AdapterConfigFile), []byte(fmt.Sprintf(`{"r":8,"i":%06d}`, i)), 0o644)
	os.WriteFile(filepath.Join(dir, nozzle.AdapterWeightsFile), w, 0o644)
	m, err := g.store.Import(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return m.SHA256
}

// addN stores n adapters and returns their addresses and the bytes each
// takes on disk.
func (g *adapterGateway) addN(t testing.TB, n int) ([]string, int64) {
	t.Helper()
	shas := make([]string, n)
	for i := range shas {
		shas[i] = g.add(t, i, 4096)
	}
	return shas, int64(len(`{"r":8,"i":000000}`) + 4096)
}

func (g *adapterGateway) fetches(sha string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gets[sha]
}

// remote returns a source fetching from g into dir.
func (g *adapterGateway) remote(dir string, budget int64, log *slog.Logger, reg *metrics.Registry) *runtime.RemoteSource {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return runtime.NewRemoteSource(g.url, internalToken, runtime.RemoteSourceOptions{
		CacheDir: dir, CacheBytes: budget, Logger: log, Metrics: reg,
	})
}

// cached returns the adapters in a cache folder and the bytes they take,
// and fails on leftovers of evictions.
func cached(t testing.TB, dir string) (map[string]bool, int64) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	var total int64
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover %s in the cache folder", e.Name())
			continue
		}
		out[e.Name()] = true
		filepath.WalkDir(filepath.Join(dir, e.Name()), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				fi, _ := d.Info()
				total += fi.Size()
			}
			return nil
		})
	}
	return out, total
}

func wantCached(t testing.TB, dir string, want ...string) {
	t.Helper()
	got, _ := cached(t, dir)
	if len(got) != len(want) {
		t.Errorf("cache holds %d adapters, want %d", len(got), len(want))
	}
	for _, sha := range want {
		if !got[sha] {
			t.Errorf("adapter %.12s is not in the cache", sha)
		}
	}
}

func metricLine(t testing.TB, reg *metrics.Registry, prefix string) string {
	t.Helper()
	var b bytes.Buffer
	reg.WriteTo(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, prefix+" ") {
			return l
		}
	}
	return ""
}

func TestRemoteSource_Budget(t *testing.T) {
	g := newAdapterGateway(t)
	shas, unit := g.addN(t, 40)
	dir := t.TempDir()
	reg := metrics.NewRegistry()
	src := g.remote(dir, 5*unit+unit/2, nil, reg)
	ctx := context.Background()
	for i, sha := range shas {
		got, err := src.AdapterDir(ctx, sha)
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if sum, _, err := model.ContentAddress(got); err != nil || sum != sha {
			t.Fatalf("fetch %d: folder holds %s %v", i, sum, err)
		}
		_, disk := cached(t, dir)
		if src.CacheBytes() > 5*unit+unit/2 || src.CacheBytes() != disk {
			t.Fatalf("after %d fetches: cache counts %d bytes, disk holds %d, budget %d", i+1, src.CacheBytes(), disk, 5*unit+unit/2)
		}
	}
	wantCached(t, dir, shas[35:]...)
	if l := metricLine(t, reg, `nozzle_runtime_adapter_evictions_total{tier="disk"}`); !strings.HasSuffix(l, " 35") {
		t.Errorf("evictions metric %q, want 35", l)
	}
	if l := metricLine(t, reg, "nozzle_runtime_adapter_disk_cache_bytes"); l != fmt.Sprintf("nozzle_runtime_adapter_disk_cache_bytes %d", 5*unit) {
		t.Errorf("cache bytes metric %q, want %d", l, 5*unit)
	}
	if l := metricLine(t, reg, `nozzle_runtime_adapter_loads_total{tier="disk"}`); !strings.HasSuffix(l, " 40") {
		t.Errorf("loads metric %q, want 40", l)
	}
}

func TestRemoteSource_Unlimited(t *testing.T) {
	g := newAdapterGateway(t)
	shas, unit := g.addN(t, 12)
	dir := t.TempDir()
	src := g.remote(dir, 0, nil, nil)
	for _, sha := range shas {
		if _, err := src.AdapterDir(context.Background(), sha); err != nil {
			t.Fatal(err)
		}
	}
	wantCached(t, dir, shas...)
	if src.CacheBytes() != 12*unit {
		t.Errorf("cache counts %d bytes, want %d", src.CacheBytes(), 12*unit)
	}
}

// TestRemoteSource_LRU: a fetch or a use makes an adapter the most
// recently used; the least recently used goes first.
func TestRemoteSource_LRU(t *testing.T) {
	g := newAdapterGateway(t)
	s, unit := g.addN(t, 5)
	a, b, c, d, e := s[0], s[1], s[2], s[3], s[4]
	dir := t.TempDir()
	src := g.remote(dir, 3*unit, nil, nil)
	ctx := context.Background()
	for _, step := range []struct {
		sha  string
		want []string
	}{
		{a, []string{a}},
		{b, []string{a, b}},
		{c, []string{a, b, c}},
		{a, []string{a, b, c}}, // a used: b is now the oldest
		{d, []string{a, c, d}},
		{c, []string{a, c, d}}, // c used: a is now the oldest
		{e, []string{c, d, e}},
		{a, []string{a, c, e}}, // a fetched again; d was the oldest
	} {
		if _, err := src.AdapterDir(ctx, step.sha); err != nil {
			t.Fatal(err)
		}
		wantCached(t, dir, step.want...)
	}
	for sha, n := range map[string]int{a: 2, b: 1, c: 1, d: 1, e: 1} {
		if got := g.fetches(sha); got != n {
			t.Errorf("adapter %.12s fetched %d times, want %d", sha, got, n)
		}
	}
}

// remoteRT is a runtime on the fake engine whose adapters come from a
// RemoteSource. Its loader reads the adapter's files and checks their
// address, so a folder deleted while it loads fails the load; gate, when
// set, holds the load of an adapter until it is closed.
func remoteRT(t testing.TB, src runtime.AdapterSource, opts runtime.Options, gate func(sha string)) *testRT {
	t.Helper()
	clock := newFakeClock(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
	if opts.Slots == 0 {
		opts.Slots = 4
	}
	opts.Clock = clock.Now
	opts.AdapterSource = src
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := newFakeEngine(clock, 256, opts.Slots)
	lc := &loadCounter{missing: map[string]bool{}}
	rt, err := runtime.OpenParts(opts, runtime.TestParts{
		Info: fakeModel, Backend: eng, Codec: fakeCodec{}, EOS: []int{fakeEOS},
		Load: func(dir string) (runtime.HostAdapter, error) {
			sha := filepath.Base(dir)
			if gate != nil {
				gate(sha)
			}
			sum, _, err := model.ContentAddress(dir)
			if err != nil || sum != sha {
				return nil, fmt.Errorf("adapter files of %.12s: %s %v", sha, sum, err)
			}
			lc.mu.Lock()
			defer lc.mu.Unlock()
			lc.n++
			a := &fakeAdapter{sha: sha, size: 1 << 20, rank: 8, open: true}
			lc.opened = append(lc.opened, a)
			return a, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testRT{Runtime: rt, eng: eng, clock: clock, loads: lc}
}

func adapterReq(sha string) *nozzle.GenerateRequest {
	return &nozzle.GenerateRequest{TenantID: "t-" + sha[:4], Prompt: "hello", MaxTokens: 6,
		Adapter: &nozzle.Adapter{Name: "a-" + sha[:8], AdapterManifest: nozzle.AdapterManifest{SHA256: sha, Rank: 8}}}
}

// TestRemoteSource_InUseKept: adapters a runtime holds stay on disk even
// when the cache is over budget then, which a log line says; the others
// go as usual.
func TestRemoteSource_InUseKept(t *testing.T) {
	g := newAdapterGateway(t)
	s, unit := g.addN(t, 5)
	dir := t.TempDir()
	var logBuf syncBuffer
	src := g.remote(dir, unit+unit/2, slog.New(slog.NewTextHandler(&logBuf, nil)), nil)
	release := make(chan struct{})
	loading := make(chan struct{})
	rt := remoteRT(t, src, runtime.Options{}, func(sha string) {
		if sha == s[1] {
			close(loading)
			<-release
		}
	})
	defer closeRT(t, rt)
	ctx := context.Background()

	// s[0] is in host memory and an engine slot after its request.
	if o := run(ctx, rt, adapterReq(s[0])); o.err != nil {
		t.Fatal(o.err)
	}
	// s[1] is fetched and held loading.
	done := make(chan outcome, 1)
	go func() { done <- run(ctx, rt, adapterReq(s[1])) }()
	<-loading
	for _, sha := range s[2:] {
		if _, err := src.AdapterDir(ctx, sha); err != nil {
			t.Fatal(err)
		}
		wantCached(t, dir, s[0], s[1], sha)
	}
	if !strings.Contains(logBuf.String(), "over its budget") {
		t.Errorf("no log line says the cache is over budget: %q", logBuf.String())
	}
	if n := strings.Count(logBuf.String(), "over its budget"); n != 1 {
		t.Errorf("%d over-budget log lines, want 1 (at most one a minute)", n)
	}
	close(release)
	if o := <-done; o.err != nil {
		t.Fatalf("request for the adapter held loading: %v", o.err)
	}
	if tier := rt.AdapterTier(ctx, s[0]); tier == nozzle.TierDisk {
		t.Errorf("adapter 0 tier %s", tier)
	}
	if src.CacheBytes() != 3*unit {
		t.Errorf("cache counts %d bytes, want %d", src.CacheBytes(), 3*unit)
	}
}

// TestRemoteSource_RefetchAfterEviction: an adapter deleted from disk once
// the runtime let go of it is fetched again on its next request, which
// answers as before.
func TestRemoteSource_RefetchAfterEviction(t *testing.T) {
	g := newAdapterGateway(t)
	s, unit := g.addN(t, 3)
	dir := t.TempDir()
	src := g.remote(dir, unit, nil, nil)
	// One slot and room for one adapter in host memory: the runtime holds
	// only the adapter of the last request.
	rt := remoteRT(t, src, runtime.Options{Slots: 1, HostCacheBytes: 1 << 20}, nil)
	defer closeRT(t, rt)
	ctx := context.Background()
	first := run(ctx, rt, adapterReq(s[0]))
	if first.err != nil {
		t.Fatal(first.err)
	}
	for _, sha := range s[1:] {
		if o := run(ctx, rt, adapterReq(sha)); o.err != nil {
			t.Fatal(o.err)
		}
	}
	got, _ := cached(t, dir)
	if got[s[0]] {
		t.Fatalf("adapter 0 is still cached after two other adapters took its place")
	}
	again := run(ctx, rt, adapterReq(s[0]))
	if again.err != nil {
		t.Fatal(again.err)
	}
	if again.text != first.text || again.text == "" {
		t.Errorf("after a refetch the adapter answers %q, before %q", again.text, first.text)
	}
	if n := g.fetches(s[0]); n != 2 {
		t.Errorf("adapter 0 fetched %d times, want 2", n)
	}
}

// TestRemoteSource_Restart: a new source counts what the folder holds, takes
// the folders' modification times as last uses, trims to a lower budget,
// and cleans the leftovers of an eviction cut short.
func TestRemoteSource_Restart(t *testing.T) {
	g := newAdapterGateway(t)
	s, unit := g.addN(t, 4)
	a, b, c, d := s[0], s[1], s[2], s[3]
	dir := t.TempDir()
	ctx := context.Background()
	src := g.remote(dir, 0, nil, nil)
	for _, sha := range []string{a, b, c} {
		if _, err := src.AdapterDir(ctx, sha); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for i, sha := range []string{a, b, c} {
		at := now.Add(time.Duration(i-3) * time.Hour)
		if err := os.Chtimes(filepath.Join(dir, sha), at, at); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, ".remove-0123456789ab-7", b), 0o755)

	reg := metrics.NewRegistry()
	src = g.remote(dir, 0, nil, reg)
	if src.CacheBytes() != 3*unit {
		t.Fatalf("after a restart the cache counts %d bytes, want %d", src.CacheBytes(), 3*unit)
	}
	if l := metricLine(t, reg, "nozzle_runtime_adapter_disk_cache_bytes"); l != fmt.Sprintf("nozzle_runtime_adapter_disk_cache_bytes %d", 3*unit) {
		t.Errorf("cache bytes metric %q", l)
	}
	wantCached(t, dir, a, b, c)
	if _, err := src.AdapterDir(ctx, a); err != nil { // a use: a is the newest now
		t.Fatal(err)
	}

	src = g.remote(dir, 2*unit, nil, nil) // a lower budget: b, the oldest, goes
	wantCached(t, dir, a, c)
	if src.CacheBytes() != 2*unit {
		t.Errorf("cache counts %d bytes, want %d", src.CacheBytes(), 2*unit)
	}
	if _, err := src.AdapterDir(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantCached(t, dir, a, d)
	if n := g.fetches(a); n != 1 {
		t.Errorf("adapter a fetched %d times, want once", n)
	}
}

// TestRemoteSource_ConcurrentFetch: concurrent requests for one adapter
// fetch it once.
func TestRemoteSource_ConcurrentFetch(t *testing.T) {
	g := newAdapterGateway(t)
	s, _ := g.addN(t, 1)
	dir := t.TempDir()
	src := g.remote(dir, 0, nil, nil)
	var wg sync.WaitGroup
	dirs := make([]string, 16)
	errs := make([]error, 16)
	for i := range dirs {
		wg.Go(func() { dirs[i], errs[i] = src.AdapterDir(context.Background(), s[0]) })
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != filepath.Join(dir, s[0]) {
			t.Errorf("caller %d: %q %v", i, dirs[i], errs[i])
		}
	}
	if n := g.fetches(s[0]); n != 1 {
		t.Errorf("fetched %d times, want once", n)
	}
}

// TestRemoteSource_ConcurrentFetchEvict fetches and evicts from many
// goroutines at once, alone and under a runtime whose requests must all
// find their adapter's files whole. The bookkeeping ends equal to the
// folder.
func TestRemoteSource_ConcurrentFetchEvict(t *testing.T) {
	g := newAdapterGateway(t)
	s, unit := g.addN(t, 12)
	ctx := context.Background()

	t.Run("Source", func(t *testing.T) {
		dir := t.TempDir()
		src := g.remote(dir, 3*unit, nil, nil)
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() {
				rng := newRNG(uint64(w))
				for range 40 {
					if _, err := src.AdapterDir(ctx, s[rng.IntN(len(s))]); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		_, disk := cached(t, dir)
		if src.CacheBytes() != disk || disk > 3*unit {
			t.Errorf("cache counts %d bytes, the folder holds %d, budget %d", src.CacheBytes(), disk, 3*unit)
		}
	})

	t.Run("Runtime", func(t *testing.T) {
		dir := t.TempDir()
		src := g.remote(dir, 3*unit, nil, nil)
		// Loads take a while, so that fetches of other adapters come
		// between an adapter's fetch and its load.
		rt := remoteRT(t, src, runtime.Options{Slots: 2, HostCacheBytes: 2 << 20}, func(string) { time.Sleep(time.Millisecond) })
		var texts sync.Map
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() {
				rng := newRNG(uint64(100 + w))
				for range 25 {
					sha := s[rng.IntN(len(s))]
					o := run(ctx, rt, adapterReq(sha))
					if o.err != nil {
						t.Errorf("adapter %.12s: %v", sha, o.err)
						return
					}
					if prev, loaded := texts.LoadOrStore(sha, o.text); loaded && prev != o.text {
						t.Errorf("adapter %.12s answered %q, earlier %q", sha, o.text, prev)
					}
				}
			})
		}
		wg.Wait()
		closeRT(t, rt)
		if _, disk := cached(t, dir); src.CacheBytes() != disk {
			t.Errorf("cache counts %d bytes, the folder holds %d", src.CacheBytes(), disk)
		}
	})
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// BenchmarkRemoteSource_Hit measures AdapterDir for a cached adapter: the
// LRU bookkeeping and existence check against the Store's lookup alone,
// which was the whole hit path before the cache had a budget.
func BenchmarkRemoteSource_Hit(b *testing.B) {
	g := newAdapterGateway(b)
	s, unit := g.addN(b, 64)
	dir := b.TempDir()
	src := g.remote(dir, 100*unit, nil, nil)
	ctx := context.Background()
	for _, sha := range s {
		if _, err := src.AdapterDir(ctx, sha); err != nil {
			b.Fatal(err)
		}
	}
	store := runtime.NewStore(dir, nil)
	b.Run("Store", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := store.AdapterDir(ctx, s[i%len(s)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("RemoteSource", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := src.AdapterDir(ctx, s[i%len(s)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("RemoteSourceParallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := src.AdapterDir(ctx, s[i%len(s)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
