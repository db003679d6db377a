package runtime_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
)

// listenTestPort listens on a free loopback port in 19400–19499, the
// range these tests keep to.
func listenTestPort(t testing.TB) net.Listener {
	t.Helper()
	for p := 19400; p < 19500; p++ {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			return ln
		}
	}
	t.Fatal("no free loopback port in 19400-19499")
	return nil
}

// serveOn runs the remote protocol for rt on ln and returns its client;
// stop closes the server.
func serveOn(t testing.TB, rt *runtime.Runtime, ln net.Listener) (cl *runtime.Client, stop func()) {
	t.Helper()
	srv := &http.Server{Handler: runtime.NewServer(rt, internalToken)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return runtime.NewClient("http://"+ln.Addr().String(), internalToken, nil), func() { srv.Close() }
}

// stepGate holds the fake engine after every step until the test lets
// one more step run (next), or lets them all run (free).
type stepGate struct {
	free  atomic.Bool
	steps chan struct{}
}

func gateSteps(rt *testRT) *stepGate {
	g := &stepGate{steps: make(chan struct{})}
	rt.eng.onStep = func(int) {
		if !g.free.Load() {
			<-g.steps
		}
	}
	return g
}

// next lets the engine, held after a step, run one more.
func (g *stepGate) next() { g.steps <- struct{}{} }

// release lets every step run from now on.
func (g *stepGate) release() {
	g.free.Store(true)
	for {
		select {
		case g.steps <- struct{}{}: // the step held now
		default:
			return
		}
	}
}

// inflight is a request running in the background that says when its
// first chunk arrives.
type inflight struct {
	first chan struct{}
	done  chan outcome
}

func startInflight(g nozzle.Generator, req *nozzle.GenerateRequest) *inflight {
	f := &inflight{first: make(chan struct{}), done: make(chan outcome, 1)}
	go func() {
		var o outcome
		var b strings.Builder
		var once sync.Once
		o.res, o.err = g.Generate(context.Background(), req, func(c nozzle.Chunk) error {
			once.Do(func() { close(f.first) })
			b.WriteString(c.Text)
			return nil
		})
		o.text = b.String()
		f.done <- o
	}()
	return f
}

// runUntilStarted lets gate's engine run step by step until every request
// has produced its first chunk: they are running, each with many tokens
// to go.
func runUntilStarted(t *testing.T, gate *stepGate, reqs ...*inflight) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, f := range reqs {
		for {
			select {
			case <-f.first:
			case o := <-f.done:
				t.Fatalf("request ended before its first chunk was seen: %v", o.err)
			case <-time.After(5 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatal("no first chunk")
				}
				gate.next()
				continue
			}
			break
		}
	}
}

// eventually polls cond until it holds, or fails after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("not so after 5 s: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func wantOutcome(t *testing.T, name string, got, alone outcome, tokens int) {
	t.Helper()
	if got.err != nil {
		t.Fatalf("%s: %v", name, got.err)
	}
	if got.text != alone.text || got.res.CompletionTokens != tokens || got.res.FinishReason != nozzle.FinishLength {
		t.Errorf("%s: %q (%d tokens, %q), alone %q", name, got.text, got.res.CompletionTokens, got.res.FinishReason, alone.text)
	}
}

// TestDropAdapter_InProcess: a deleted adapter stays in its slot and in
// host memory while sequences use it, which finish as they would have;
// then it leaves the slot, host memory and the prefix cache, while an
// adapter not deleted stays in all three.
func TestDropAdapter_InProcess(t *testing.T) {
	reg := metrics.NewRegistry()
	rt := startFake(t, runtime.Options{Slots: 2, Metrics: reg}, 128)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100 // every request runs to max_tokens
	ctx := context.Background()
	gone, kept := fakeSHA(1), fakeSHA(2)
	rng := newRNG(3)
	p1, p2, p3 := randomPrompt(rng, 40), randomPrompt(rng, 24), randomPrompt(rng, 40)
	req := func(adapter int, prompt []int) *nozzle.GenerateRequest {
		return &nozzle.GenerateRequest{TenantID: "t", PromptTokens: prompt, MaxTokens: 40, Adapter: adapterFor(adapter)}
	}
	alone1, alone2 := run(ctx, rt, req(1, p1)), run(ctx, rt, req(1, p2))
	keptAlone := run(ctx, rt, req(2, p3))
	for _, o := range []outcome{alone1, alone2, keptAlone} {
		if o.err != nil {
			t.Fatal(o.err)
		}
	}
	// The prefix cache holds both adapters' prompts.
	if o := run(ctx, rt, req(1, p1)); o.res.CachedPromptTokens == 0 {
		t.Fatalf("no prefix cache hit before the drop: %+v", o.res)
	}
	for _, sha := range []string{gone, kept} {
		if tier := rt.AdapterTier(ctx, sha); tier != nozzle.TierDevice {
			t.Fatalf("adapter %.8s in %s before the drop", sha, tier)
		}
	}

	// Two sequences on the adapter run when it is deleted.
	gate := gateSteps(rt)
	defer gate.release() // before closeRT, should the test stop early
	a, b := startInflight(rt, req(1, p1)), startInflight(rt, req(1, p2))
	runUntilStarted(t, gate, a, b)
	if err := rt.DropAdapter(ctx, gone); err != nil {
		t.Fatal(err)
	}
	gate.next() // the scheduler takes note of the drop between two steps
	gate.next()
	if tier := rt.AdapterTier(ctx, gone); tier != nozzle.TierDevice {
		t.Errorf("adapter left %s while sequences use it", tier)
	}
	gate.release()
	wantOutcome(t, "first in flight", <-a.done, alone1, 40)
	wantOutcome(t, "second in flight", <-b.done, alone2, 40)

	eventually(t, "the deleted adapter leaves the slot and host memory", func() bool {
		return rt.AdapterTier(ctx, gone) == nozzle.TierDisk
	})
	eventually(t, "host memory holds only the adapter kept", func() bool {
		return metricValue(promText(reg), "nozzle_runtime_adapter_host_cache_bytes") == 1<<20
	})
	prom := promText(reg)
	for name, want := range map[string]float64{
		`nozzle_runtime_adapter_drops_total{tier="device"}`: 1,
		`nozzle_runtime_adapter_drops_total{tier="host"}`:   1,
		`nozzle_runtime_adapter_slots_used`:                 1,
	} {
		if got := metricValue(prom, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	rt.eng.mu.Lock()
	clears := rt.eng.clears
	rt.eng.mu.Unlock()
	if clears != 1 {
		t.Errorf("%d slot clears, want 1", clears)
	}
	rt.loads.mu.Lock()
	for _, fa := range rt.loads.opened {
		fa.mu.Lock()
		if fa.sha == gone && fa.open {
			t.Errorf("the deleted adapter's host copy is still open")
		}
		fa.mu.Unlock()
	}
	rt.loads.mu.Unlock()
	if tier := rt.AdapterTier(ctx, kept); tier != nozzle.TierDevice {
		t.Errorf("adapter not deleted is in %s", tier)
	}

	// The same content uploaded again loads afresh: nothing of the deleted
	// adapter's prompts is left in the prefix cache; the other adapter's is.
	again := run(ctx, rt, req(1, p1))
	wantOutcome(t, "after the drop", again, alone1, 40)
	if again.res.CachedPromptTokens != 0 {
		t.Errorf("%d prompt tokens from the deleted adapter's prefix cache", again.res.CachedPromptTokens)
	}
	if o := run(ctx, rt, req(2, p3)); o.res.CachedPromptTokens == 0 {
		t.Errorf("the adapter kept lost its prefix cache: %+v", o.res)
	}
	if err := rt.DropAdapter(ctx, "not-a-sha"); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Errorf("drop of a malformed address: %v", err)
	}
	if err := rt.DropAdapter(ctx, fakeSHA(9)); err != nil { // never loaded: nothing to do
		t.Errorf("drop of an adapter never loaded: %v", err)
	}
}

// TestDropAdapter_WhileLoading: an adapter deleted while it loads into
// host memory for nobody (its request went away) is freed when the load
// ends instead of being cached.
func TestDropAdapter_WhileLoading(t *testing.T) {
	reg := metrics.NewRegistry()
	rt := startFake(t, runtime.Options{Metrics: reg}, 64)
	defer closeRT(t, rt)
	loading, held := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(held) })
	defer release() // before closeRT, should the test stop early
	rt.loads.mu.Lock()
	rt.loads.gate = func(string) {
		close(loading)
		<-held
	}
	rt.loads.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan outcome, 1)
	go func() {
		done <- run(ctx, rt, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 4, Adapter: adapterFor(1)})
	}()
	<-loading
	cancel()
	if o := <-done; nozzle.ErrorCode(o.err) != nozzle.ECANCELED {
		t.Fatalf("canceled request: %v", o.err)
	}
	if err := rt.DropAdapter(context.Background(), fakeSHA(1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the drop is settled", func() bool {
		return metricValue(promText(reg), `nozzle_runtime_adapter_drops_total{tier="host"}`) == 1
	})
	release()
	eventually(t, "the late load is closed", func() bool {
		rt.loads.mu.Lock()
		defer rt.loads.mu.Unlock()
		if len(rt.loads.opened) != 1 {
			return false
		}
		fa := rt.loads.opened[0]
		fa.mu.Lock()
		defer fa.mu.Unlock()
		return !fa.open
	})
	if tier := rt.AdapterTier(context.Background(), fakeSHA(1)); tier != nozzle.TierDisk {
		t.Errorf("adapter in %s", tier)
	}
	if v := metricValue(promText(reg), "nozzle_runtime_adapter_host_cache_bytes"); v > 0 {
		t.Errorf("host cache holds %v bytes", v)
	}
}

// TestDropAdapter_Remote: through the remote protocol on a real port, a
// deleted adapter stays while a streamed request uses it, which finishes
// as it would have; then it leaves the slot, host memory and the files
// fetched from the gateway, while the adapter not deleted stays. An
// unreachable runtime answers EUNAVAILABLE; one that missed a deletion
// finds the adapter gone from the gateway when it fetches it.
func TestDropAdapter_Remote(t *testing.T) {
	g := newAdapterGatewayOn(t, listenTestPort(t))
	s, unit := g.addN(t, 2)
	gone, kept := s[0], s[1]
	dir := t.TempDir()
	reg := metrics.NewRegistry()
	src := g.remote(dir, 0, nil, reg)
	rt := remoteRT(t, src, runtime.Options{Metrics: reg}, nil)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	cl, stop := serveOn(t, rt.Runtime, listenTestPort(t))
	ctx := context.Background()
	req := func(sha string) *nozzle.GenerateRequest {
		r := adapterReq(sha)
		r.MaxTokens, r.Stream = 30, true
		return r
	}
	alone, keptAlone := run(ctx, cl, req(gone)), run(ctx, cl, req(kept))
	if alone.err != nil || keptAlone.err != nil {
		t.Fatal(alone.err, keptAlone.err)
	}
	wantCached(t, dir, gone, kept)

	gate := gateSteps(rt)
	defer gate.release() // before closeRT, should the test stop early
	f := startInflight(cl, req(gone))
	runUntilStarted(t, gate, f)
	if err := cl.DropAdapter(ctx, gone); err != nil {
		t.Fatal(err)
	}
	gate.next()
	gate.next()
	if tier := cl.AdapterTier(ctx, gone); tier != nozzle.TierDevice {
		t.Errorf("adapter left %s while a sequence uses it", tier)
	}
	wantCached(t, dir, gone, kept)
	gate.release()
	wantOutcome(t, "in flight", <-f.done, alone, 30)

	eventually(t, "the deleted adapter leaves every tier", func() bool {
		ents, _ := os.ReadDir(dir)
		return cl.AdapterTier(ctx, gone) == nozzle.TierDisk && len(ents) == 1 && ents[0].Name() == kept
	})
	wantCached(t, dir, kept)
	if src.CacheBytes() != unit {
		t.Errorf("the disk cache counts %d bytes, want %d", src.CacheBytes(), unit)
	}
	if tier := cl.AdapterTier(ctx, kept); tier != nozzle.TierDevice {
		t.Errorf("adapter not deleted is in %s", tier)
	}
	if got := metricValue(promText(reg), `nozzle_runtime_adapter_drops_total{tier="disk"}`); got != 1 {
		t.Errorf("disk drops %v, want 1", got)
	}
	if err := cl.DropAdapter(ctx, "xyz"); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Errorf("drop of a malformed address: %v", err)
	}

	// The gateway removed the files: a runtime asked for the adapter (one
	// that missed the deletion) fetches nothing stale.
	if err := g.store.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if o := run(ctx, cl, req(gone)); nozzle.ErrorCode(o.err) != nozzle.ENOTFOUND {
		t.Errorf("request for the deleted adapter: %v", o.err)
	}

	stop()
	if err := cl.DropAdapter(ctx, kept); nozzle.ErrorCode(err) != nozzle.EUNAVAILABLE {
		t.Errorf("drop on a runtime that cannot be reached: %v", err)
	}
}
