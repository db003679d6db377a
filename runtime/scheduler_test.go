package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
)

// collect runs req and gathers its chunks.
type outcome struct {
	text   string
	chunks []nozzle.Chunk
	res    *nozzle.GenerateResult
	err    error
}

func run(ctx context.Context, g nozzle.Generator, req *nozzle.GenerateRequest) outcome {
	var o outcome
	var b strings.Builder
	o.res, o.err = g.Generate(ctx, req, func(c nozzle.Chunk) error {
		o.chunks = append(o.chunks, c)
		b.WriteString(c.Text)
		return nil
	})
	o.text = b.String()
	return o
}

// runAll runs reqs on g all at once and returns their outcomes in order.
func runAll(ctx context.Context, g nozzle.Generator, reqs []*nozzle.GenerateRequest) []outcome {
	out := make([]outcome, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = run(ctx, g, req) }()
	}
	wg.Wait()
	return out
}

func closeRT(t testing.TB, rt *testRT) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestGenerate_Greedy(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 256)
	defer closeRT(t, rt)
	req := &nozzle.GenerateRequest{RequestID: "r1", TenantID: "t1", Prompt: "hello world", MaxTokens: 20}
	a := run(context.Background(), rt, req)
	if a.err != nil {
		t.Fatal(a.err)
	}
	b := run(context.Background(), rt, req)
	if a.text != b.text {
		t.Fatalf("greedy text differs: %q vs %q", a.text, b.text)
	}
	if a.res.PromptTokens != 1+2 { // BOS, "hello", " world"
		t.Errorf("prompt tokens = %d, want 3", a.res.PromptTokens)
	}
	if a.res.CompletionTokens == 0 || a.res.CompletionTokens > 20 {
		t.Errorf("completion tokens = %d", a.res.CompletionTokens)
	}
	if a.res.FinishReason != nozzle.FinishLength && a.res.FinishReason != nozzle.FinishStop {
		t.Errorf("finish reason %q", a.res.FinishReason)
	}
	if a.res.DeviceSeconds <= 0 || a.res.TTFTSeconds <= 0 {
		t.Errorf("account %+v", a.res)
	}
	for _, c := range a.chunks {
		if !utf8.ValidString(c.Text) {
			t.Errorf("chunk %q is not valid UTF-8", c.Text)
		}
	}
	t.Logf("text %q, %+v", a.text, *a.res)
}

var _ = sync.Mutex{}

func adapterFor(i int) *nozzle.Adapter {
	return &nozzle.Adapter{Name: "a" + string(rune('A'+i)), AdapterManifest: nozzle.AdapterManifest{SHA256: fakeSHA(i), Rank: 8}}
}

func randomPrompt(rng *rand.Rand, n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = 32 + rng.IntN(95)
	}
	return p
}

type propCase struct {
	req      *nozzle.GenerateRequest
	cancelAt int  // cancel the context after this many chunks; -1 never
	emitFail int  // fail emit after this many chunks; -1 never
	missing  bool // adapter not stored
}

// TestScheduler_RandomArrivals throws seeded random traffic at a small
// runtime — many tenants and adapters, random prompt lengths and max
// tokens, cancellations, a KV pool small enough to force preemption, few
// slots and a small host cache — and checks that every request ends with
// a reason, every block and slot comes back, greedy text is the same as
// alone, and the device seconds of all requests add up to the active
// time.
func TestScheduler_RandomArrivals(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			testRandomArrivals(t, seed)
		})
	}
}

func testRandomArrivals(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	reg := metrics.NewRegistry()
	rt := startFake(t, runtime.Options{
		Slots: 3, MaxBatchSeqs: 12, MaxBatchTokens: 96, PrefillChunk: 40,
		HostCacheBytes: 3 << 20, Metrics: reg,
	}, 48)
	const nAdapters, nReq = 10, 160
	rt.loads.missing[fakeSHA(nAdapters-1)] = true

	// A third of the requests are of the batch class (drawn from an rng
	// of their own: the cases are the same as before the class existed).
	bg := rand.New(rand.NewPCG(seed, 7))
	cases := make([]propCase, nReq)
	for i := range cases {
		c := propCase{cancelAt: -1, emitFail: -1}
		req := &nozzle.GenerateRequest{
			RequestID:    fmt.Sprint("r", i),
			TenantID:     fmt.Sprint("t", rng.IntN(4)),
			PromptTokens: randomPrompt(rng, 1+rng.IntN(180)),
			MaxTokens:    1 + rng.IntN(50),
			Background:   bg.IntN(3) == 0,
		}
		if k := rng.IntN(nAdapters + 3); k < nAdapters {
			req.Adapter = adapterFor(k)
			c.missing = k == nAdapters-1
		}
		if rng.IntN(4) == 0 {
			req.Temperature = 0.8
			s := rng.Uint64()
			req.Seed = &s
		}
		switch rng.IntN(10) {
		case 0:
			c.cancelAt = rng.IntN(4)
		case 1:
			c.emitFail = rng.IntN(4)
		}
		c.req = req
		cases[i] = c
	}

	results := make([]outcome, nReq)
	var wg sync.WaitGroup
	for i := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cases[i]
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var o outcome
			var b strings.Builder
			n := 0
			o.res, o.err = rt.Generate(ctx, c.req, func(ch nozzle.Chunk) error {
				n++
				b.WriteString(ch.Text)
				o.chunks = append(o.chunks, ch)
				if c.cancelAt >= 0 && n > c.cancelAt {
					cancel()
				}
				if c.emitFail >= 0 && n > c.emitFail {
					return errors.New("client gone")
				}
				return nil
			})
			o.text = b.String()
			results[i] = o
		}()
		if rng.IntN(3) == 0 {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("requests did not finish: starvation or a lost request")
	}

	var device float64
	finished, canceled := 0, 0
	for i, o := range results {
		c := cases[i]
		if o.res == nil {
			t.Fatalf("request %d: no result", i)
		}
		device += o.res.DeviceSeconds
		switch {
		case c.missing:
			if nozzle.ErrorCode(o.err) != nozzle.ENOTFOUND {
				t.Errorf("request %d: missing adapter gave %v", i, o.err)
			}
		case o.err != nil:
			if nozzle.ErrorCode(o.err) != nozzle.ECANCELED || (c.cancelAt < 0 && c.emitFail < 0) {
				t.Errorf("request %d: unexpected error %v", i, o.err)
			}
			canceled++
		default:
			finished++
			if o.res.FinishReason != nozzle.FinishStop && o.res.FinishReason != nozzle.FinishLength {
				t.Errorf("request %d: finish reason %q", i, o.res.FinishReason)
			}
			if o.res.CompletionTokens > c.req.MaxTokens || o.res.CompletionTokens < 1 {
				t.Errorf("request %d: %d completion tokens, max %d", i, o.res.CompletionTokens, c.req.MaxTokens)
			}
			if o.res.FinishReason == nozzle.FinishLength && o.res.CompletionTokens != c.req.MaxTokens {
				t.Errorf("request %d: length after %d of %d tokens", i, o.res.CompletionTokens, c.req.MaxTokens)
			}
			if o.res.PromptTokens != len(c.req.PromptTokens) {
				t.Errorf("request %d: prompt tokens %d, want %d", i, o.res.PromptTokens, len(c.req.PromptTokens))
			}
		}
	}
	if finished < nReq/2 {
		t.Errorf("only %d of %d finished", finished, nReq)
	}

	// Greedy and seeded text is the same when the request runs alone.
	for i, o := range results {
		c := cases[i]
		if o.err != nil || c.missing {
			continue
		}
		alone := run(context.Background(), rt, c.req)
		if alone.err != nil || alone.text != o.text || alone.res.CompletionTokens != o.res.CompletionTokens {
			t.Errorf("request %d: batched %q (%d tokens), alone %q (%d tokens, %v)", i, o.text, o.res.CompletionTokens, alone.text, alone.res.CompletionTokens, alone.err)
		}
		device += alone.res.DeviceSeconds
	}

	closeRT(t, rt)
	res := rt.Resources()
	if res.FreeBlocks != res.TotalBlocks || res.PinnedSlots != 0 || res.Waiting != 0 || res.Running != 0 || res.Tenants != 0 {
		t.Errorf("resources not returned: %+v", res)
	}
	st := rt.Stats()
	if math.Abs(device-st.ActiveSeconds) > 1e-6 {
		t.Errorf("device seconds of requests %.9f, active %.9f", device, st.ActiveSeconds)
	}
	if math.Abs(st.ActiveSeconds+st.IdleSeconds-st.UptimeSeconds) > 1e-9 {
		t.Errorf("active %.9f + idle %.9f != uptime %.9f", st.ActiveSeconds, st.IdleSeconds, st.UptimeSeconds)
	}
	var prom strings.Builder
	reg.WriteTo(&prom)
	for _, want := range []string{`nozzle_runtime_adapter_evictions_total{tier="device"}`} {
		if v := metricValue(prom.String(), want); v <= 0 {
			t.Errorf("%s = %v, want > 0", want, v)
		}
	}
	t.Logf("finished %d, canceled %d, steps %d, %s", finished, canceled, res.Steps, summary(prom.String()))
	for _, a := range rt.loads.opened {
		if a.open {
			t.Errorf("adapter %s left open after Close", a.sha[:8])
		}
	}
}

func metricValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(line, name+" "), 64)
			return v
		}
	}
	return -1
}

func summary(text string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "nozzle_runtime_preemptions_total") || strings.HasPrefix(line, "nozzle_runtime_adapter_loads_total") || strings.HasPrefix(line, "nozzle_runtime_adapter_evictions_total") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "; ")
}

// TestScheduler_PreemptRecompute runs more long completions than the KV
// pool holds at once: the scheduler preempts and recomputes, and each text
// is still the one the request produces alone.
func TestScheduler_PreemptRecompute(t *testing.T) {
	reg := metrics.NewRegistry()
	rt := startFake(t, runtime.Options{Metrics: reg, MaxBatchSeqs: 8}, 12) // 192 tokens
	rt.eng.eosBias = -100
	rng := rand.New(rand.NewPCG(7, 7))
	var reqs []*nozzle.GenerateRequest
	for i := range 4 {
		r := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: randomPrompt(rng, 20+i), MaxTokens: 100}
		if i%2 == 1 {
			r.Adapter = adapterFor(i)
		}
		reqs = append(reqs, r)
	}
	alone := make([]outcome, len(reqs))
	for i, r := range reqs {
		alone[i] = run(context.Background(), rt, r)
		if alone[i].err != nil {
			t.Fatal(alone[i].err)
		}
	}
	before := metricValue(promText(reg), "nozzle_runtime_preemptions_total")
	rt.eng.onStep = func(int) { time.Sleep(100 * time.Microsecond) } // all four arrive together
	got := make([]outcome, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = run(context.Background(), rt, r) }()
	}
	wg.Wait()
	if n := metricValue(promText(reg), "nozzle_runtime_preemptions_total") - before; n <= 0 {
		t.Fatalf("no preemption happened")
	}
	for i := range reqs {
		if got[i].err != nil {
			t.Fatalf("request %d: %v", i, got[i].err)
		}
		if got[i].text != alone[i].text || got[i].res.CompletionTokens != 100 {
			t.Errorf("request %d: preempted text %q (%d tokens) differs from alone %q", i, got[i].text, got[i].res.CompletionTokens, alone[i].text)
		}
	}
	closeRT(t, rt)
	if r := rt.Resources(); r.FreeBlocks != r.TotalBlocks || r.PinnedSlots != 0 {
		t.Errorf("resources not returned: %+v", r)
	}
}

func promText(reg *metrics.Registry) string {
	var b strings.Builder
	reg.WriteTo(&b)
	return b.String()
}

// TestAdapters_Tiers cycles requests over more adapters than the slots and
// the host cache hold: adapters move disk → host → device and back out,
// least recently used first, and every host copy is freed.
func TestAdapters_Tiers(t *testing.T) {
	reg := metrics.NewRegistry()
	rt := startFake(t, runtime.Options{Slots: 2, HostCacheBytes: 2 << 20, Metrics: reg}, 64)
	ctx := context.Background()
	texts := map[int]string{}
	for round := range 3 {
		for i := range 6 {
			sha := fakeSHA(i)
			if round == 0 && rt.AdapterTier(ctx, sha) != nozzle.TierDisk {
				t.Errorf("adapter %d starts in %s", i, rt.AdapterTier(ctx, sha))
			}
			o := run(ctx, rt, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 8, Adapter: adapterFor(i)})
			if o.err != nil {
				t.Fatal(o.err)
			}
			if round == 0 {
				texts[i] = o.text
				if o.res.AdapterLoadSeconds < 0 {
					t.Errorf("adapter load seconds %v", o.res.AdapterLoadSeconds)
				}
			} else if texts[i] != o.text {
				t.Errorf("adapter %d: text changed after reload: %q vs %q", i, o.text, texts[i])
			}
			if tier := rt.AdapterTier(ctx, sha); tier != nozzle.TierDevice {
				t.Errorf("adapter %d just used is in %s", i, tier)
			}
		}
	}
	if tier := rt.AdapterTier(ctx, fakeSHA(0)); tier != nozzle.TierDisk {
		t.Errorf("least recently used adapter is in %s", tier)
	}
	if tier := rt.AdapterTier(ctx, fakeSHA(4)); tier != nozzle.TierDevice {
		t.Errorf("recent adapter is in %s", tier)
	}
	prom := promText(reg)
	for name, want := range map[string]float64{
		`nozzle_runtime_adapter_loads_total{tier="host"}`:       18,
		`nozzle_runtime_adapter_loads_total{tier="device"}`:     18,
		`nozzle_runtime_adapter_evictions_total{tier="host"}`:   16,
		`nozzle_runtime_adapter_evictions_total{tier="device"}`: 16,
	} {
		if got := metricValue(prom, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	closeRT(t, rt)
	for _, a := range rt.loads.opened {
		if a.open {
			t.Errorf("adapter %s left open", a.sha[:8])
		}
	}
	if len(rt.loads.opened) != 18 {
		t.Errorf("%d host loads", len(rt.loads.opened))
	}
}

// TestAdapters_NoSlotStarvation keeps every slot busy with a stream of
// requests for resident adapters; a request for another adapter still gets
// a slot (one drains for it) within a few service times.
func TestAdapters_NoSlotStarvation(t *testing.T) {
	rt := startFake(t, runtime.Options{Slots: 2, MaxBatchSeqs: 16}, 256)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	rt.eng.onStep = func(int) { time.Sleep(50 * time.Microsecond) }
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var service float64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRNG(uint64(g))
			for ctx.Err() == nil {
				o := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "t", PromptTokens: randomPrompt(rng, 10), MaxTokens: 30, Adapter: adapterFor(g % 2)})
				if o.err == nil {
					mu.Lock()
					service = math.Max(service, o.res.TTFTSeconds-o.res.QueueSeconds)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	o := run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "t", Prompt: "hello", MaxTokens: 5, Adapter: adapterFor(5)})
	stop()
	wg.Wait()
	if o.err != nil {
		t.Fatal(o.err)
	}
	mu.Lock()
	bound := 3 * 30 * service // three services of 30 steps each
	mu.Unlock()
	if o.res.QueueSeconds > bound {
		t.Errorf("adapter waited %.3fs for a slot, bound %.3fs", o.res.QueueSeconds, bound)
	}
	t.Logf("waited %.3fs (bound %.3fs)", o.res.QueueSeconds, bound)
}

// TestScheduler_ScoredPromptPreempted: a prompt scored a few rows of
// logits a step (echo with logprobs) and preempted part way, when its
// blocks are needed by the sequences decoding beside it, is recomputed
// without scoring again what it had scored: its echo holds one score per
// token after the first, the same as scored alone, and the completion
// after it is the same too.
func TestScheduler_ScoredPromptPreempted(t *testing.T) {
	reg := metrics.NewRegistry()
	// 14 blocks of 16 tokens: the scored prompt (4 blocks) is admitted
	// beside three 20-token prompts (2 blocks each), and preempted when
	// their answers grow past 48 tokens.
	rt := startFake(t, runtime.Options{Metrics: reg, MaxBatchSeqs: 4}, 14)
	rt.eng.eosBias = -100
	rng := rand.New(rand.NewPCG(8, 8))
	scored := &nozzle.GenerateRequest{TenantID: "t", PromptTokens: randomPrompt(rng, 60), MaxTokens: 5,
		Echo: true, Logprobs: true, TopLogprobs: 2}
	alone := run(context.Background(), rt, scored)
	if alone.err != nil {
		t.Fatal(alone.err)
	}
	if len(alone.chunks) == 0 || !alone.chunks[0].Prompt || len(alone.chunks[0].Logprobs) != 60 {
		t.Fatalf("alone: no echo of 60 scored tokens: %+v", alone.chunks)
	}
	before := metricValue(promText(reg), "nozzle_runtime_preemptions_total")

	// Three long answers decode; the scored prompt comes in after them,
	// the newest sequence, and is scored a row or so a step beside them
	// until their growth takes its blocks.
	var wg sync.WaitGroup
	busy := make(chan struct{})
	var once sync.Once
	start := rt.eng.steps
	rt.eng.onStep = func(n int) {
		time.Sleep(200 * time.Microsecond) // the decoders run at a pace a request can join
		if n >= start+5 {
			once.Do(func() { close(busy) })
		}
	}
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "t", PromptTokens: randomPrompt(rand.New(rand.NewPCG(9, uint64(i))), 20), MaxTokens: 100})
			if o.err != nil {
				t.Error(o.err)
			}
		}()
	}
	<-busy
	got := run(context.Background(), rt, scored)
	wg.Wait()
	if got.err != nil {
		t.Fatal(got.err)
	}
	if n := metricValue(promText(reg), "nozzle_runtime_preemptions_total") - before; n <= 0 {
		t.Fatalf("no preemption happened")
	}
	if !reflect.DeepEqual(got.chunks[0], alone.chunks[0]) {
		t.Errorf("echo after preemption differs from alone:\n got %+v\nwant %+v", got.chunks[0], alone.chunks[0])
	}
	if got.text != alone.text || got.res.CompletionTokens != alone.res.CompletionTokens {
		t.Errorf("completion %q (%d tokens), alone %q", got.text, got.res.CompletionTokens, alone.text)
	}
}
