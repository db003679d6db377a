package runtime_test

// Adapter cache thrash on the real CPU engine. Many more adapters
// than device slots and a host-memory budget that holds only a couple of
// them, with concurrent greedy requests cycling across adapters: every
// answer must be token for token (and logprob for logprob) what the same
// request gives on a runtime where every adapter has its own slot and
// requests run one at a time.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

const thrashAdapterCount = 40

var (
	thrashOnce sync.Once
	thrashDirs []string
	thrashErr  error
)

// thrashAdapterDirs writes 40 random adapters for the demo model once per
// test binary: ranks from 4 to 64, different module sets, some on a subset
// of the layers, bf16 and f32, so that an adapter loaded into a slot after
// another one has to clear whatever the previous one set.
func thrashAdapterDirs(t testing.TB) []string {
	t.Helper()
	modelDir, _ := demo(t)
	thrashOnce.Do(func() {
		m, err := model.Open(modelDir)
		if err != nil {
			thrashErr = err
			return
		}
		info := m.Info()
		m.Close()
		// Beside the demo model, in the folder TestMain removes.
		root := filepath.Join(filepath.Dir(modelDir), "thrash-adapters")
		all := []model.Module{model.ModuleQ, model.ModuleK, model.ModuleV, model.ModuleO, model.ModuleGate, model.ModuleUp, model.ModuleDown}
		ranks := []int{4, 8, 16, 32, 64}
		for i := range thrashAdapterCount {
			r := rand.New(rand.NewPCG(uint64(i), 77))
			var mods []model.Module
			for _, md := range all {
				if r.IntN(2) == 0 {
					mods = append(mods, md)
				}
			}
			if len(mods) == 0 {
				mods = []model.Module{all[i%len(all)]}
			}
			var layers []int
			if i%3 == 0 {
				layers = []int{i % info.NumLayers}
			}
			dt := safetensors.BF16
			if i%4 == 1 {
				dt = safetensors.F32
			}
			dir := filepath.Join(root, fmt.Sprintf("a%02d", i))
			if err := model.WriteRandomAdapter(dir, model.AdapterSpec{
				Base: info, Rank: ranks[i%len(ranks)], Modules: mods, Layers: layers, Seed: uint64(1000 + i), DType: dt,
			}); err != nil {
				thrashErr = err
				return
			}
			thrashDirs = append(thrashDirs, dir)
		}
	})
	if thrashErr != nil {
		t.Fatal(thrashErr)
	}
	return thrashDirs
}

// openThrash opens a runtime on the demo model whose store holds the 40
// adapters.
func openThrash(t testing.TB, opts runtime.Options) (*runtime.Runtime, *runtime.Store, []*nozzle.Adapter) {
	t.Helper()
	modelDir, _ := demo(t)
	dirs := thrashAdapterDirs(t)
	store := demoStore(t, modelDir)
	var ads []*nozzle.Adapter
	for i, dir := range dirs {
		m := importCopy(t, store, dir)
		ads = append(ads, &nozzle.Adapter{ID: fmt.Sprint(i), Name: fmt.Sprintf("a%02d", i), AdapterManifest: *m})
	}
	return openOnStore(t, opts, modelDir, store), store, ads
}

func importCopy(t testing.TB, store *runtime.Store, dir string) *nozzle.AdapterManifest {
	t.Helper()
	tmp, err := os.MkdirTemp(t.TempDir(), "imp-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(tmp, "x"), os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	m, err := store.Import(context.Background(), filepath.Join(tmp, "x"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// answer is a greedy answer reduced to what must match exactly.
type answer struct {
	text   string
	tokens []string
	lps    []float64
	n      int
	reason string
}

func (a answer) String() string {
	return fmt.Sprintf("%q (%d tokens, %s)", a.text, a.n, a.reason)
}

func (a answer) equal(b answer) bool {
	if a.text != b.text || a.n != b.n || a.reason != b.reason || len(a.lps) != len(b.lps) {
		return false
	}
	for i := range a.lps {
		if a.lps[i] != b.lps[i] || a.tokens[i] != b.tokens[i] {
			return false
		}
	}
	return true
}

func greedy(ctx context.Context, rt nozzle.Generator, req *nozzle.GenerateRequest) (answer, error) {
	var a answer
	var b strings.Builder
	res, err := rt.Generate(ctx, req, func(c nozzle.Chunk) error {
		b.WriteString(c.Text)
		for _, lp := range c.Logprobs {
			a.tokens = append(a.tokens, lp.Token)
			a.lps = append(a.lps, lp.Logprob)
		}
		return nil
	})
	a.text = b.String()
	if res != nil {
		a.n, a.reason = res.CompletionTokens, res.FinishReason
	}
	return a, err
}

type thrashCase struct {
	adapter int // -1: the base model
	prompt  int
}

func thrashRequest(ads []*nozzle.Adapter, prompts [][]int, c thrashCase, tenant string) *nozzle.GenerateRequest {
	req := &nozzle.GenerateRequest{TenantID: tenant, PromptTokens: prompts[c.prompt], MaxTokens: 10, Temperature: 0, Logprobs: true}
	if c.adapter >= 0 {
		req.Adapter = ads[c.adapter]
	}
	return req
}

func thrashPrompts() [][]int {
	rng := rand.New(rand.NewPCG(9, 9))
	var ps [][]int
	for i := range 4 {
		ps = append(ps, randomPrompt(rng, 9+13*i)) // 9..48 tokens: one to four KV blocks
	}
	// Two prompts that share their first 32 tokens: the prefix cache must
	// never hand one adapter's blocks to another.
	shared := randomPrompt(rng, 32)
	ps = append(ps, append(append([]int{}, shared...), randomPrompt(rng, 5)...))
	ps = append(ps, append(append([]int{}, shared...), randomPrompt(rng, 7)...))
	return ps
}

// references computes the expected answers on a runtime with a slot per
// adapter, one request at a time.
func references(t *testing.T, cases []thrashCase, prompts [][]int) map[thrashCase]answer {
	t.Helper()
	ref, _, ads := openThrash(t, runtime.Options{Slots: thrashAdapterCount, MaxBatchSeqs: 1})
	ctx := context.Background()
	want := map[thrashCase]answer{}
	for _, c := range cases {
		if _, ok := want[c]; ok {
			continue
		}
		a, err := greedy(ctx, ref, thrashRequest(ads, prompts, c, "ref"))
		if err != nil {
			t.Fatalf("reference %+v: %v", c, err)
		}
		want[c] = a
	}
	// The adapters must make a difference, or the test proves nothing.
	distinct := map[string]bool{}
	for c, a := range want {
		if c.prompt == 0 {
			distinct[a.text] = true
		}
	}
	if len(distinct) < thrashAdapterCount/2 {
		t.Fatalf("only %d distinct answers over %d adapters", len(distinct), thrashAdapterCount)
	}
	return want
}

// TestAdapterThrash_Greedy: 40 adapters, 3 slots, a host cache that
// holds about two adapters, six sequences at a time, 3 requests per adapter
// (plus base-model requests) all submitted at once from several tenants.
func TestAdapterThrash_Greedy(t *testing.T) {
	prompts := thrashPrompts()
	var cases []thrashCase
	for round := range 3 {
		for i := range thrashAdapterCount {
			cases = append(cases, thrashCase{adapter: i, prompt: (i + round) % len(prompts)})
		}
		cases = append(cases, thrashCase{adapter: -1, prompt: round})
	}
	want := references(t, cases, prompts)

	for _, cfg := range []struct {
		name  string
		opts  runtime.Options
		waves bool // rounds submitted one after another, to revisit evicted adapters
	}{
		{"slots2-waves", runtime.Options{Slots: 2, HostCacheBytes: 1, MaxBatchSeqs: 4, MaxBatchTokens: 32, PrefillChunk: 16}, true},
		{"slots3", runtime.Options{Slots: 3, HostCacheBytes: 1 << 20, MaxBatchSeqs: 6, MaxBatchTokens: 64, PrefillChunk: 16}, false},
		{"slots2-preempt", runtime.Options{Slots: 2, HostCacheBytes: 1, MaxBatchSeqs: 8, MaxBatchTokens: 48, PrefillChunk: 16, KVBlocks: 12, AdapterLoaders: 3}, false},
		{"slots4-noprefix", runtime.Options{Slots: 4, HostCacheBytes: 3 << 20, MaxBatchSeqs: 8, MaxBatchTokens: 64, DisablePrefixCache: true}, false},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			rt, _, ads := openThrash(t, cfg.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			order := rand.New(rand.NewPCG(1, 2)).Perm(len(cases))
			if cfg.waves {
				for k := range order {
					order[k] = k
				}
			}
			got := make([]answer, len(cases))
			errs := make([]error, len(cases))
			var wg sync.WaitGroup
			for _, k := range order {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[k], errs[k] = greedy(ctx, rt, thrashRequest(ads, prompts, cases[k], fmt.Sprint("t", k%5)))
				}()
				switch {
				case cfg.waves && k%(thrashAdapterCount+1) == thrashAdapterCount:
					time.Sleep(250 * time.Millisecond)
				case cfg.waves && k%4 == 3:
					time.Sleep(2 * time.Millisecond)
				case k%7 == 0:
					time.Sleep(time.Millisecond)
				}
			}
			// Extra requests canceled at random points (queued, loading
			// their adapter, or running) must not disturb the others.
			for k := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cctx, ccancel := context.WithTimeout(ctx, time.Duration(k%10)*3*time.Millisecond)
					defer ccancel()
					_, err := greedy(cctx, rt, thrashRequest(ads, prompts, thrashCase{adapter: (k * 7) % thrashAdapterCount, prompt: k % len(prompts)}, "canceler"))
					if err != nil && nozzle.ErrorCode(err) != nozzle.ECANCELED {
						t.Errorf("canceled request: %v", err)
					}
				}()
			}
			wg.Wait()
			bad := 0
			for k, c := range cases {
				if errs[k] != nil {
					t.Errorf("case %+v: %v", c, errs[k])
					bad++
					continue
				}
				if !got[k].equal(want[c]) {
					bad++
					if bad <= 10 {
						t.Errorf("case %+v (adapter rank %d): under thrash %v, alone %v", c, rankOf(ads, c.adapter), got[k], want[c])
					}
				}
			}
			st := rt.Stats()
			t.Logf("%d requests, %d wrong; stats %+v", len(cases), bad, st)
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if err := rt.Close(cctx); err != nil {
				t.Fatal(err)
			}
			res := rt.Resources()
			if res.PinnedSlots != 0 || res.Running != 0 || res.Waiting != 0 || res.FreeBlocks != res.TotalBlocks || res.Tenants != 0 {
				t.Errorf("resources held after close: %+v", res)
			}
		})
	}
}

func rankOf(ads []*nozzle.Adapter, i int) int {
	if i < 0 {
		return 0
	}
	return ads[i].Rank
}

// TestAdapterThrash_RemoveWhileRunning: while thrashing requests run,
// another goroutine removes adapters' files from the store and imports them
// again. Every request must either answer exactly as alone or fail with a
// clean not-found error; nothing may hang or crash, and the runtime keeps
// serving afterwards.
func TestAdapterThrash_RemoveWhileRunning(t *testing.T) {
	prompts := thrashPrompts()
	var cases []thrashCase
	for round := range 4 {
		for i := range thrashAdapterCount {
			cases = append(cases, thrashCase{adapter: i, prompt: (2*i + round) % len(prompts)})
		}
	}
	want := references(t, cases, prompts)
	rt, store, ads := openThrash(t, runtime.Options{Slots: 2, HostCacheBytes: 1 << 20, MaxBatchSeqs: 6, MaxBatchTokens: 48, PrefillChunk: 16})
	dirs := thrashAdapterDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	stop := make(chan struct{})
	var churns atomic.Int64
	var churnWG sync.WaitGroup
	churnWG.Add(1)
	go func() {
		defer churnWG.Done()
		r := rand.New(rand.NewPCG(5, 5))
		for {
			select {
			case <-stop:
				return
			default:
			}
			i := r.IntN(thrashAdapterCount)
			if err := store.Remove(ctx, ads[i].SHA256); err != nil {
				t.Errorf("remove: %v", err)
				return
			}
			time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
			tmp := filepath.Join(t.TempDir(), "re")
			if err := os.CopyFS(tmp, os.DirFS(dirs[i])); err != nil {
				t.Errorf("copy: %v", err)
				return
			}
			m, err := store.Import(ctx, tmp)
			if err != nil || m.SHA256 != ads[i].SHA256 {
				t.Errorf("re-import %d: %v (%v)", i, err, m)
				return
			}
			churns.Add(1)
		}
	}()

	got := make([]answer, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for k := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[k], errs[k] = greedy(ctx, rt, thrashRequest(ads, prompts, cases[k], fmt.Sprint("t", k%3)))
		}()
	}
	wg.Wait()
	close(stop)
	churnWG.Wait()
	failed := 0
	for k, c := range cases {
		if errs[k] != nil {
			failed++
			if code := nozzle.ErrorCode(errs[k]); code != nozzle.ENOTFOUND {
				t.Errorf("case %+v: error %v (code %s), want a not-found error or the answer", c, errs[k], code)
			}
			continue
		}
		if !got[k].equal(want[c]) {
			t.Errorf("case %+v: with churn %v, alone %v", c, got[k], want[c])
		}
	}
	t.Logf("%d requests, %d failed while their adapter was away, %d remove/re-import cycles", len(cases), failed, churns.Load())
	// Everything is stored again: every adapter answers right.
	for i := range thrashAdapterCount {
		c := thrashCase{adapter: i, prompt: (2 * i) % len(prompts)}
		a, err := greedy(ctx, rt, thrashRequest(ads, prompts, c, "after"))
		if err != nil || !a.equal(want[c]) {
			t.Errorf("after churn, adapter %d: %v %v, want %v", i, a, err, want[c])
		}
	}
}

// goneAfterLookup is a Store whose adapters are deleted right after the
// runtime looked their folder up: the deletion of an adapter landing
// between AdapterDir and the load, deterministically.
type goneAfterLookup struct{ *runtime.Store }

func (g goneAfterLookup) AdapterDir(ctx context.Context, sha string) (string, error) {
	dir, err := g.Store.AdapterDir(ctx, sha)
	if err == nil {
		g.Store.Remove(ctx, sha)
	}
	return dir, err
}

// TestAdapterDeletedDuringLoad: a request whose adapter is deleted
// while the runtime loads it gets the same not-found error as one that
// comes after the deletion, not an internal error (a 500 at the gateway).
func TestAdapterDeletedDuringLoad(t *testing.T) {
	modelDir, _ := demo(t)
	dirs := thrashAdapterDirs(t)
	store := demoStore(t, modelDir)
	m := importCopy(t, store, dirs[0])
	rt := openOnStore(t, runtime.Options{}, modelDir, goneAfterLookup{store})
	ad := &nozzle.Adapter{ID: "a", Name: "a", AdapterManifest: *m}
	req := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: []int{40, 41, 42}, MaxTokens: 4, Adapter: ad}
	_, err := greedy(context.Background(), rt, req)
	if code := nozzle.ErrorCode(err); code != nozzle.ENOTFOUND {
		t.Errorf("adapter deleted during its load: %v (code %s), want %s", err, code, nozzle.ENOTFOUND)
	}
	// The next request, after the deletion, gets not-found too.
	_, err = greedy(context.Background(), rt, req)
	if code := nozzle.ErrorCode(err); code != nozzle.ENOTFOUND {
		t.Errorf("adapter deleted: %v (code %s), want %s", err, code, nozzle.ENOTFOUND)
	}
}
