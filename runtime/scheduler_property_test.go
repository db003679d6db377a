package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestScheduler_Property throws seeded random workloads at a runtime on
// the fake engine with small random limits (1–6 batch places, a token
// budget and prefill chunk down to one token, a KV pool small enough to
// preempt — or, now and then, larger than the context —, one to three
// adapter slots, a host cache of half an adapter to two, the prefix cache
// on or off): many concurrent requests from several tenants — text, token
// and chat prompts, prompts that share a beginning, adapters shared
// across tenants, greedy, seeded and unseeded sampling, logprobs, stop
// sequences, n-like duplicates, echo with and without logprobs,
// prompt-only scoring, max_tokens 0, 1 or more —, clients that go away at
// random points (the context ends before the call, inside emit or on a
// timer; emit fails), adapters dropped while in use, requests that must
// fail (past the context or the KV pool, token ids out of the vocabulary,
// an adapter the source lacks), and now and then all requests at once
// while the engine is held, or a Close with little patience while they
// run. It checks that
//
//   - every request returns (a per-seed timeout), with an account that
//     fits its outcome: the error it must fail with and no work done, or
//     a finish reason, completion tokens against max_tokens, the context
//     and the pool, prompt tokens, one logprob a token where asked, the
//     echo's scores, device seconds where the engine ran;
//   - a request that was not canceled gives the same chunks — text,
//     logprobs, the echoed prompt and its scores — and the same finish
//     and token counts as the same request alone on a fresh runtime of
//     the same limits (the fake engine is deterministic and
//     batch-invariant), and one canceled or cut by the close a prefix of
//     those chunks;
//   - the prompt tokens a request takes from the prefix cache are whole
//     blocks it shares with a request of its own tenant and adapter;
//   - the engine never refused a step (a wrong block table, a read of
//     keys and values not computed, a block written by two sequences, too
//     many rows of logits, tokens or sequences in a step), and nothing
//     logged an engine or slot error;
//   - after Close every KV block is free or cached, no slot is pinned,
//     nothing waits or runs, no tenant is left, every host copy of an
//     adapter is closed;
//   - the requests' device seconds add up to the runtime's active time;
//   - with speculative decoding on (random draft lengths and batch caps;
//     the fake engine's logits now and then a function of the last one or
//     two tokens, so that greedy text loops and drafts hold), all of the
//     above, the requests alone being decoded without it.
//
// The workload (limits, requests, cancellations, drops, arrival pauses)
// is a function of the seed; how the requests interleave in the batch is
// not, so a failure names the seed and the limits to rerun it with. Seeds
// 1..10 run by default (3 with -short); NOZZLE_SCHED_SEEDS=n runs seeds
// 1..n, NOZZLE_SCHED_SEED=s only seed s.
func TestScheduler_Property(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if testing.Short() {
		seeds = seeds[:3]
	}
	if v := os.Getenv("NOZZLE_SCHED_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("NOZZLE_SCHED_SEEDS=%q", v)
		}
		seeds = seeds[:0]
		for s := 1; s <= n; s++ {
			seeds = append(seeds, uint64(s))
		}
	}
	if v := os.Getenv("NOZZLE_SCHED_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("NOZZLE_SCHED_SEED=%q", v)
		}
		seeds = []uint64{s}
	}
	var total propTotals
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			total.add(testSchedulerProperty(t, seed))
		})
	}
	t.Logf("%d seeds: %s", len(seeds), &total)
}

// propLimits are the limits of one seed's runtimes.
type propLimits struct {
	opts   runtime.Options
	blocks int
	// window is the fake engine's (logits that depend on the last window
	// tokens only: greedy text loops and prompt lookup's drafts hold).
	window int
}

func (l propLimits) String() string {
	return fmt.Sprintf("seqs %d, tokens %d, chunk %d, blocks %d, slots %d, host %d half-MiB, prefix cache %v, speculative %d (at most %d seqs), window %d",
		l.opts.MaxBatchSeqs, l.opts.MaxBatchTokens, l.opts.PrefillChunk, l.blocks, l.opts.Slots,
		l.opts.HostCacheBytes>>19, !l.opts.DisablePrefixCache, l.opts.SpeculativeTokens, l.opts.SpeculativeMaxSeqs, l.window)
}

func (l propLimits) poolTokens() int { return l.blocks * 16 }

func randomLimits(rng *rand.Rand) propLimits {
	seqs := 1 + rng.IntN(6)
	l := propLimits{
		opts: runtime.Options{
			MaxBatchSeqs:       seqs,
			MaxBatchTokens:     seqs + rng.IntN(64),
			PrefillChunk:       []int{1 + rng.IntN(4), 4 + rng.IntN(45), 4 + rng.IntN(45)}[rng.IntN(3)],
			Slots:              1 + rng.IntN(3),
			HostCacheBytes:     int64(1+rng.IntN(4)) << 19, // half an adapter to two
			DisablePrefixCache: rng.IntN(3) == 0,
		},
		blocks: 10 + rng.IntN(15), // 160–384 tokens: a few requests at once
	}
	if rng.IntN(8) == 0 {
		l.blocks = 33 + rng.IntN(8) // more than the context holds
	}
	// speculative decoding (the requests alone decode without it: the
	// same chunks prove the drafts change nothing)
	if rng.IntN(3) > 0 {
		l.opts.SpeculativeTokens = 1 + rng.IntN(6)
		l.opts.SpeculativeMaxSeqs = 1 + rng.IntN(6)
	}
	if rng.IntN(2) == 0 {
		l.window = 1 + rng.IntN(2)
	}
	return l
}

// start opens a runtime of these limits on the fake engine, which
// checks each step against them; errs gets what it logs as an error.
func (l propLimits) start(t *testing.T, reg *metrics.Registry, errs *logErrors) *testRT {
	opts := l.opts
	opts.Metrics = reg
	opts.Logger = slog.New(errs)
	rt := startFake(t, opts, l.blocks)
	rt.eng.tokenLimit = max(opts.MaxBatchTokens, opts.MaxBatchSeqs)
	rt.eng.seqLimit = opts.MaxBatchSeqs
	rt.eng.window = l.window
	rt.loads.missing[propMissing] = true
	return rt
}

// logErrors is a slog handler that keeps the scheduler's error records
// about the engine and the slots (the fake engine never fails on its own:
// any such record is a bug).
type logErrors struct {
	mu   sync.Mutex
	msgs []string
}

func (h *logErrors) Enabled(context.Context, slog.Level) bool { return true }
func (h *logErrors) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logErrors) WithGroup(string) slog.Handler            { return h }
func (h *logErrors) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelError || r.Message == "adapter load failed" { // the missing adapter
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *logErrors) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}

const propAdapters = 4

// propTimeout is how long a seed's requests may take (a few hundred
// milliseconds when nothing is wrong).
const propTimeout = 20 * time.Second

// propMissing is an adapter the source does not have.
var propMissing = fakeSHA(propAdapters)

// propCancel is how a request's client goes away.
type propCancel int

const (
	cancelNever     propCancel = iota
	cancelInEmit               // the context ends inside emit, after some chunks
	cancelEmitError            // emit fails after some chunks
	cancelTimer                // the context ends after a random real time
	cancelBefore               // the context ended before the call
)

// propReq is one request of a workload and what the test expects of it.
type propReq struct {
	req     *nozzle.GenerateRequest
	prompt  int    // its prompt tokens
	wantErr string // the error code it must fail with, "" for none
	maxToks int    // completion tokens at most

	cancel   propCancel
	after    int           // chunks before the cancellation (in emit)
	delay    time.Duration // cancelTimer's
	dupOf    int           // the request it duplicates (n-like), or -1
	scored   bool          // echo with logprobs: the prompt is scored
	random   bool          // sampled without a seed: not compared with alone
	logprobs bool
}

// propOutcome is what a request gave.
type propOutcome struct {
	chunks   []nozzle.Chunk
	res      *nozzle.GenerateResult
	err      error
	canceled bool // its cancellation happened
	done     bool
}

var propWords = []string{"hello", " world", " the", "ing", " stop", "é", "€", " and", "ST", "OP", "\n", "...", "ab", "cd", "x", "y", " ", "q"}

func propText(rng *rand.Rand, words int) string {
	var b strings.Builder
	for range words {
		b.WriteString(propWords[rng.IntN(len(propWords))])
	}
	return b.String()
}

// promptIDs are the prompt tokens the fake tokenizer makes of req.
func promptIDs(req *nozzle.GenerateRequest) []int {
	switch {
	case req.Messages != nil:
		text, err := fakeCodec{}.ChatPrompt(req.Messages, nil, nil)
		if err != nil {
			panic(err)
		}
		ids, _ := fakeCodec{}.Encode(text, false)
		return ids
	case req.PromptTokens != nil:
		return req.PromptTokens
	}
	ids, _ := fakeCodec{}.Encode(req.Prompt, true)
	return ids
}

// randomWorkload draws a workload of requests for a runtime of limits l.
func randomWorkload(rng *rand.Rand, l propLimits, n int) []propReq {
	ctxLen := fakeModel.ContextLength
	pool := l.poolTokens()
	tenants := 2 + rng.IntN(3)
	// Shared beginnings: the system prompts that requests of a tenant
	// (and of others: the prefix cache is per tenant) begin with.
	shared := make([][]int, 3)
	for i := range shared {
		shared[i] = randomPrompt(rng, 16+rng.IntN(40))
	}
	var out []propReq
	for len(out) < n {
		maxPrompt := max(2, min(100, pool/3))
		req := &nozzle.GenerateRequest{
			RequestID: fmt.Sprint("r", len(out)),
			TenantID:  fmt.Sprint("t", rng.IntN(tenants)),
			MaxTokens: 1 + rng.IntN(min(40, pool/3)),
		}
		switch k := rng.IntN(10); {
		case k < 4:
			p := randomPrompt(rng, 1+rng.IntN(maxPrompt))
			if rng.IntN(2) == 0 {
				s := shared[rng.IntN(len(shared))]
				p = append(append([]int(nil), s...), p[:max(1, len(p)-len(s))]...)
			}
			if rng.IntN(6) == 0 { // special tokens in the prompt are tokens too
				p[rng.IntN(len(p))] = fakeBOS + rng.IntN(2)
			}
			req.PromptTokens = p
		case k < 7:
			req.Prompt = propText(rng, 1+rng.IntN(maxPrompt*2/3))
		default:
			req.Messages = []nozzle.ChatMessage{{Role: "system", Content: "be brief"}, {Role: "user", Content: propText(rng, 1+rng.IntN(maxPrompt/3))}}
		}
		switch k := rng.IntN(10); {
		case k < 5:
		case k < 7:
			req.MaxTokens = 1
		case k < 8:
			req.MaxTokens = 0 // to the context or the pool
		}
		if k := rng.IntN(propAdapters + 3); k < propAdapters {
			req.Adapter = adapterFor(k)
		}
		if rng.IntN(2) == 0 {
			req.Temperature = 0.3 + rng.Float64()*1.2
			if s := rng.Uint64(); s%8 != 0 {
				req.Seed = &s
			}
			if rng.IntN(3) == 0 {
				req.TopK = 1 + rng.IntN(50)
				req.TopP = 0.5 + rng.Float64()/2
			}
		}
		if rng.IntN(3) == 0 {
			req.Logprobs = rng.IntN(4) != 0
			req.TopLogprobs = rng.IntN(4)
		}
		if rng.IntN(4) == 0 {
			req.Echo = true
			if rng.IntN(2) == 0 {
				req.Logprobs = true
				req.TopLogprobs = rng.IntN(3)
			}
			if rng.IntN(3) == 0 {
				req.PromptOnly, req.MaxTokens = true, 0
			}
		}
		if rng.IntN(4) == 0 {
			stops := []string{"e", " the", "ab", "ST", "OP", "\n", "x", "é", "...", "zz", "a"}
			for range 1 + rng.IntN(2) {
				req.Stop = append(req.Stop, stops[rng.IntN(len(stops))])
			}
		}
		// A few that must fail.
		if rng.IntN(14) == 0 {
			switch rng.IntN(4) {
			case 0: // longer than the context
				req.Prompt, req.Messages = "", nil
				req.PromptTokens = randomPrompt(rng, ctxLen+rng.IntN(20))
			case 1: // more than the KV pool holds
				req.Prompt, req.Messages, req.PromptOnly = "", nil, false
				req.PromptTokens = randomPrompt(rng, pool/2+1)
				req.MaxTokens = pool/2 + rng.IntN(max(1, ctxLen-pool)) // (past the context where that is less)
			case 2: // a token id out of the vocabulary
				req.Prompt, req.Messages = "", nil
				req.PromptTokens = randomPrompt(rng, 1+rng.IntN(20))
				req.PromptTokens[rng.IntN(len(req.PromptTokens))] = fakeVocab + rng.IntN(3)
			case 3:
				req.Adapter = &nozzle.Adapter{Name: "gone", AdapterManifest: nozzle.AdapterManifest{SHA256: propMissing, Rank: 8}}
			}
		}
		p := propReq{req: req, dupOf: -1}
		p.logprobs = req.Logprobs || req.TopLogprobs > 0
		p.scored = req.Echo && p.logprobs
		p.random = req.Temperature > 0 && req.Seed == nil
		p.wantErr, p.prompt, p.maxToks = expectedError(req, pool)
		switch k := rng.IntN(14); {
		case k < 2:
			p.cancel, p.after = cancelInEmit, rng.IntN(6)
		case k < 4:
			p.cancel, p.after = cancelEmitError, rng.IntN(6)
		case k < 5:
			p.cancel, p.delay = cancelTimer, time.Duration(rng.IntN(3000))*time.Microsecond
		case k < 6 && rng.IntN(3) == 0:
			p.cancel = cancelBefore
		}
		out = append(out, p)
		// n-like duplicates: the same request again (the n choices of
		// one completion run as n sequences).
		if p.wantErr == "" && rng.IntN(6) == 0 {
			for range 1 + rng.IntN(3) {
				d := p
				d.dupOf = len(out) - 1
				d.cancel = cancelNever
				out = append(out, d)
			}
		}
	}
	return out
}

// expectedError returns the error code req must fail with on a runtime
// of pool KV tokens, its prompt tokens, and its completion tokens at most.
func expectedError(req *nozzle.GenerateRequest, pool int) (code string, prompt, maxToks int) {
	for _, id := range req.PromptTokens {
		if id < 0 || id >= fakeVocab {
			return nozzle.EINVALID, 0, 0
		}
	}
	n := fakeModel.ContextLength
	prompt = len(promptIDs(req))
	if req.MaxTokens > n-prompt || prompt >= n {
		return nozzle.ECONTEXTLENGTH, prompt, 0
	}
	maxToks = req.MaxTokens
	if maxToks == 0 {
		maxToks = min(n, pool) - prompt
	}
	if prompt+max(maxToks, 1) > pool {
		return nozzle.ECONTEXTLENGTH, prompt, 0
	}
	if req.Adapter != nil && req.Adapter.SHA256 == propMissing && !(req.PromptOnly && (!req.Logprobs && req.TopLogprobs == 0 || prompt < 2)) {
		// (a prompt only echoed, with nothing to compute, needs no adapter)
		return nozzle.ENOTFOUND, prompt, maxToks
	}
	return "", prompt, maxToks
}

// propTotals sums what the seeds exercised.
type propTotals struct {
	mu                                             sync.Mutex
	requests, ok, canceled, failed, compared, shut int
	preemptions, fairPreemptions, prefixHits       float64
	slotLoads, drops, steps, scored                float64
	drafted, accepted                              float64
}

func (p *propTotals) add(o *propTotals) {
	if o == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests += o.requests
	p.ok += o.ok
	p.canceled += o.canceled
	p.failed += o.failed
	p.compared += o.compared
	p.shut += o.shut
	p.preemptions += o.preemptions
	p.fairPreemptions += o.fairPreemptions
	p.prefixHits += o.prefixHits
	p.slotLoads += o.slotLoads
	p.drops += o.drops
	p.steps += o.steps
	p.scored += o.scored
	p.drafted += o.drafted
	p.accepted += o.accepted
}

func (p *propTotals) String() string {
	return fmt.Sprintf("%d requests (%d ok, %d canceled, %d failed as they must, %d ended by a close; %d compared with alone, %v scored prompts), %v steps, %v preemptions (%v fair-share), %v prefix-cache tokens, %v slot loads, %v slot drops, %v drafted tokens (%v accepted)",
		p.requests, p.ok, p.canceled, p.failed, p.shut, p.compared, p.scored, p.steps, p.preemptions, p.fairPreemptions, p.prefixHits, p.slotLoads, p.drops, p.drafted, p.accepted)
}

func testSchedulerProperty(t *testing.T, seed uint64) *propTotals {
	rng := rand.New(rand.NewPCG(seed, 0x5c4ed))
	lim := randomLimits(rng)
	work := randomWorkload(rng, lim, 24+rng.IntN(16))
	// Now and then the runtime closes while requests run, with a patience
	// that may run out: those left end unavailable.
	closeAt, patience := -1, time.Duration(0)
	if rng.IntN(5) == 0 {
		closeAt, patience = rng.IntN(len(work)), time.Duration(rng.IntN(3000))*time.Microsecond
	}
	// Now and then they all come at once, while the engine is held in a
	// step: a long queue for admission.
	burst := rng.IntN(4) == 0
	t.Logf("seed %d: %s; %d requests; close after %d; burst %v", seed, lim, len(work), closeAt, burst)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d (%s): %s", seed, lim, fmt.Sprintf(format, args...))
	}

	reg := metrics.NewRegistry()
	errs := &logErrors{}
	rt := lim.start(t, reg, errs)
	// Steps of the stand-in take microseconds: now and then one takes
	// longer, so that requests arrive while others run and clients keep
	// up with the tokens.
	stepRNG := rand.New(rand.NewPCG(seed, 1))
	var stepMu sync.Mutex
	held := make(chan struct{})
	if !burst {
		close(held)
	}
	rt.eng.onStep = func(int) {
		<-held
		stepMu.Lock()
		d := 0
		if stepRNG.IntN(4) == 0 {
			d = stepRNG.IntN(200)
		}
		stepMu.Unlock()
		time.Sleep(time.Duration(d) * time.Microsecond)
	}

	outs := make([]propOutcome, len(work))
	var wg sync.WaitGroup
	var mu sync.Mutex // outs
	launch := func(i int) {
		defer wg.Done()
		w := work[i]
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var o propOutcome
		switch w.cancel {
		case cancelBefore:
			cancel()
			o.canceled = true
		case cancelTimer:
			tm := time.AfterFunc(w.delay, cancel)
			defer tm.Stop()
		}
		o.res, o.err = rt.Generate(ctx, w.req, func(c nozzle.Chunk) error {
			o.chunks = append(o.chunks, c)
			if len(o.chunks) > w.after {
				switch w.cancel {
				case cancelInEmit:
					o.canceled = true
					cancel()
				case cancelEmitError:
					o.canceled = true
					return errors.New("client gone")
				}
			}
			return nil
		})
		if w.cancel == cancelTimer && ctx.Err() != nil {
			o.canceled = true
		}
		o.done = true
		mu.Lock()
		outs[i] = o
		mu.Unlock()
	}
	arrivals := rand.New(rand.NewPCG(seed, 2))
	dropRNG := rand.New(rand.NewPCG(seed, 3))
	nDrops := 0
	closed := make(chan error, 1)
	for i := range work {
		if i == closeAt {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), patience)
				defer cancel()
				closed <- rt.Close(ctx)
			}()
		}
		wg.Add(1)
		go launch(i)
		if !burst && arrivals.IntN(3) == 0 {
			time.Sleep(time.Duration(arrivals.IntN(400)) * time.Microsecond)
		}
		if dropRNG.IntN(8) == 0 {
			// A deleted adapter, maybe in use: it leaves the runtime once
			// nobody uses it; those using it finish as they would have.
			if err := rt.DropAdapter(context.Background(), fakeSHA(dropRNG.IntN(propAdapters))); err != nil {
				fail("DropAdapter: %v", err)
			}
			nDrops++
		}
	}
	if burst {
		time.Sleep(time.Millisecond) // they queue
		close(held)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(propTimeout):
		mu.Lock()
		var stuck []string
		for i, o := range outs {
			if !o.done {
				stuck = append(stuck, fmt.Sprintf("%d %s", i, describe(work[i].req)))
			}
		}
		mu.Unlock()
		t.Fatalf("seed %d (%s): requests did not return after %v: %s", seed, lim, propTimeout, strings.Join(stuck, "; "))
	}

	tot := &propTotals{requests: len(work)}
	var device float64
	for i, o := range outs {
		w := work[i]
		if o.res == nil {
			fail("request %d: no result (%v)", i, o.err)
			continue
		}
		device += o.res.DeviceSeconds
		if closeAt >= 0 && nozzle.ErrorCode(o.err) == nozzle.EUNAVAILABLE {
			if o.res.FinishReason != "" || o.res.CompletionTokens > w.maxToks {
				fail("request %d ended by the close: %+v", i, *o.res)
			}
			tot.shut++
			continue
		}
		checkOutcome(t, fail, i, w, o, tot)
	}

	// Each chunk tells the account so far: the prompt's tokens, the
	// completion tokens and device seconds up to it, which only grow, up
	// to the result's.
	for i, o := range outs {
		if o.res == nil {
			continue
		}
		var last nozzle.Progress
		for k, c := range o.chunks {
			if c.Prompt {
				continue
			}
			p := c.Progress
			if p.PromptTokens != o.res.PromptTokens || p.CompletionTokens < max(last.CompletionTokens, 1) || p.CompletionTokens > o.res.CompletionTokens ||
				p.DeviceSeconds < last.DeviceSeconds || p.DeviceSeconds > o.res.DeviceSeconds+1e-12 || p.CachedPromptTokens > p.PromptTokens {
				fail("request %d %s: chunk %d tells %+v after %+v; result %+v", i, describe(work[i].req), k, p, last, *o.res)
			}
			last = p
		}
	}

	// The prefix cache is the tenant's own, per adapter: a request takes
	// from it at most the whole blocks its prompt shares with another
	// request of its tenant and adapter (all of them where its prompt
	// goes on past the other's: that one's completion may match), never
	// its last token, nothing for a scored prompt.
	for i, o := range outs {
		w := work[i]
		if o.res == nil || o.res.CachedPromptTokens == 0 {
			continue
		}
		c := o.res.CachedPromptTokens
		ids := promptIDs(w.req)
		bound := 0
		if !lim.opts.DisablePrefixCache && !w.scored {
			for j, v := range work {
				if j == i || v.wantErr != "" || v.req.TenantID != w.req.TenantID || adapterSHA(v.req) != adapterSHA(w.req) {
					continue
				}
				other := promptIDs(v.req)
				n := 0
				for n < len(ids) && n < len(other) && ids[n] == other[n] {
					n++
				}
				if n == len(other) {
					n = len(ids)
				}
				bound = max(bound, n/16*16)
			}
		}
		if c%16 != 0 || c > min(bound, (len(ids)-1)/16*16) {
			fail("request %d %s: %d prompt tokens from the prefix cache, at most %d are shared with requests of its tenant and adapter", i, describe(w.req), c, bound)
		}
	}

	// What the requests give alone, each on a fresh runtime of the same
	// limits, once per distinct request.
	alone := map[int]propOutcome{}
	for i, o := range outs {
		w := work[i]
		if w.wantErr != "" || o.res == nil || w.random {
			continue
		}
		key := i
		if w.dupOf >= 0 {
			key = w.dupOf
		}
		a, ok := alone[key]
		if !ok {
			a = runAlone(t, lim, w.req)
			alone[key] = a
			if a.err != nil {
				fail("request %d alone: %v", i, a.err)
				continue
			}
		}
		if a.err != nil {
			continue
		}
		if o.err == nil {
			tot.compared++
			if !reflect.DeepEqual(alike(o.chunks), alike(a.chunks)) {
				fail("request %d %s: chunks differ from alone:\n got %s\nwant %s", i, describe(w.req), showChunks(o.chunks), showChunks(a.chunks))
			}
			if o.res.FinishReason != a.res.FinishReason || o.res.CompletionTokens != a.res.CompletionTokens || o.res.PromptTokens != a.res.PromptTokens {
				fail("request %d %s: result %+v, alone %+v", i, describe(w.req), *o.res, *a.res)
			}
			continue
		}
		// Canceled: what it emitted is what it emits alone, up to there.
		if len(o.chunks) > len(a.chunks) || len(o.chunks) > 0 && !reflect.DeepEqual(alike(o.chunks), alike(a.chunks[:len(o.chunks)])) {
			fail("request %d %s canceled: chunks are not a prefix of alone's:\n got %s\nwant %s", i, describe(w.req), showChunks(o.chunks), showChunks(a.chunks))
		}
		// (a stop sequence ends a completion short of the tokens generated;
		// canceled first, the request counts them all)
		if len(w.req.Stop) == 0 && o.res.CompletionTokens > a.res.CompletionTokens {
			fail("request %d canceled after %d tokens, alone it has %d", i, o.res.CompletionTokens, a.res.CompletionTokens)
		}
	}

	if closeAt >= 0 {
		select {
		case err := <-closed:
			if err != nil {
				fail("Close: %v", err)
			}
		case <-time.After(propTimeout):
			t.Fatalf("seed %d (%s): Close did not return", seed, lim)
		}
	} else {
		closeRT(t, rt)
	}
	for _, err := range rt.eng.invalidSteps() {
		fail("the engine refused a step: %v", err)
	}
	for _, m := range errs.get() {
		fail("logged: %s", m)
	}
	res := rt.Resources()
	if res.FreeBlocks != res.TotalBlocks || res.PinnedSlots != 0 || res.Waiting != 0 || res.Running != 0 || res.Tenants != 0 {
		fail("resources not returned after Close: %+v", res)
	}
	for _, a := range rt.loads.opened {
		if a.open {
			fail("adapter %.8s left open after Close", a.sha)
		}
	}
	st := rt.Stats()
	if math.Abs(device-st.ActiveSeconds) > 1e-6 {
		fail("device seconds of the requests %.9f, the runtime's active time %.9f", device, st.ActiveSeconds)
	}
	prom := promText(reg)
	tot.preemptions = metricValue(prom, "nozzle_runtime_preemptions_total")
	tot.fairPreemptions = metricValue(prom, "nozzle_runtime_fair_preemptions_total")
	tot.prefixHits = metricValue(prom, "nozzle_runtime_prefix_cache_hit_tokens_total")
	tot.slotLoads = metricValue(prom, `nozzle_runtime_adapter_loads_total{tier="device"}`)
	tot.drops = max(0, metricValue(prom, `nozzle_runtime_adapter_drops_total{tier="device"}`))
	tot.steps = float64(res.Steps)
	tot.drafted = metricValue(prom, "nozzle_runtime_spec_drafted_tokens_total")
	tot.accepted = metricValue(prom, "nozzle_runtime_spec_accepted_tokens_total")
	t.Logf("%s; %d drops asked", tot, nDrops)
	return tot
}

// checkOutcome checks request i's result against what it asked for.
func checkOutcome(t *testing.T, fail func(string, ...any), i int, w propReq, o propOutcome, tot *propTotals) {
	t.Helper()
	res, req := o.res, w.req
	if code := nozzle.ErrorCode(o.err); w.wantErr != "" && !(o.canceled && code == nozzle.ECANCELED && w.wantErr == nozzle.ENOTFOUND) {
		// (a request for a missing adapter canceled while it waits for the
		// load says canceled)
		if code != w.wantErr {
			fail("request %d %s: got %v, want %s", i, describe(req), o.err, w.wantErr)
		}
		chunks := o.chunks
		if w.wantErr == nozzle.ENOTFOUND && req.Echo && !w.scored && len(chunks) > 0 && chunks[0].Prompt {
			chunks = chunks[1:] // an echo without scores goes out first
		}
		if len(chunks) > 0 || res.CompletionTokens != 0 || res.DeviceSeconds != 0 {
			fail("request %d failing with %s did work: %d chunks, %+v", i, w.wantErr, len(o.chunks), *res)
		}
		tot.failed++
		return
	}
	if o.err != nil {
		if nozzle.ErrorCode(o.err) != nozzle.ECANCELED || !o.canceled {
			fail("request %d %s: unexpected error %v (canceled %v)", i, describe(req), o.err, o.canceled)
		}
		if res.FinishReason != "" || res.CompletionTokens > w.maxToks {
			fail("request %d canceled: %+v", i, *res)
		}
		tot.canceled++
		return
	}
	tot.ok++
	if trivial := req.PromptOnly && (!w.scored || w.prompt < 2); trivial != (res.DeviceSeconds == 0) {
		fail("request %d %s: %v device seconds", i, describe(req), res.DeviceSeconds)
	}
	if res.PromptTokens != w.prompt {
		fail("request %d: prompt tokens %d, want %d", i, res.PromptTokens, w.prompt)
	}
	if res.DeviceSeconds < 0 || res.QueueSeconds < 0 {
		fail("request %d: account %+v", i, *res)
	}
	// The echo first, then the completion's chunks.
	chunks := o.chunks
	if req.Echo {
		if len(chunks) == 0 || !chunks[0].Prompt {
			fail("request %d: echo asked, first chunk %s", i, showChunks(chunks))
			return
		}
		p := chunks[0]
		chunks = chunks[1:]
		if w.scored {
			tot.scored++
			if len(p.Logprobs) != w.prompt {
				fail("request %d: %d scores for %d prompt tokens", i, len(p.Logprobs), w.prompt)
			}
			for k, lp := range p.Logprobs {
				if k == 0 && (lp.Top != nil || lp.Logprob != 0) || k > 0 && (len(lp.Top) != req.TopLogprobs || lp.Logprob > 0) {
					fail("request %d: prompt token %d scored %+v", i, k, lp)
					break
				}
			}
		} else if p.Logprobs != nil {
			fail("request %d: prompt not scored but has logprobs", i)
		}
	}
	var lps []nozzle.TokenLogprob
	for _, c := range chunks {
		if c.Prompt {
			fail("request %d: a second prompt chunk", i)
		}
		lps = append(lps, c.Logprobs...)
	}
	if req.PromptOnly {
		if len(chunks) != 0 || res.CompletionTokens != 0 || res.FinishReason != nozzle.FinishLength {
			fail("request %d prompt only: %d chunks after the echo, %+v", i, len(chunks), *res)
		}
		return
	}
	switch res.FinishReason {
	case nozzle.FinishLength:
		if res.CompletionTokens != w.maxToks {
			fail("request %d: finished for length after %d tokens of %d", i, res.CompletionTokens, w.maxToks)
		}
	case nozzle.FinishStop:
		if res.CompletionTokens < 1 || res.CompletionTokens > w.maxToks {
			fail("request %d: stopped after %d tokens, max %d", i, res.CompletionTokens, w.maxToks)
		}
	default:
		fail("request %d: finish reason %q", i, res.FinishReason)
	}
	if !w.logprobs {
		if len(lps) > 0 {
			fail("request %d: logprobs not asked for", i)
		}
		return
	}
	// One logprob a token: the EOS that stopped it has none, and with stop
	// sequences the tokens past the match's start have none.
	want := res.CompletionTokens
	if len(req.Stop) == 0 && res.FinishReason == nozzle.FinishStop {
		want-- // EOS
	}
	if len(req.Stop) == 0 && len(lps) != want || len(req.Stop) > 0 && len(lps) > want {
		fail("request %d: %d logprobs for %d completion tokens (%q)", i, len(lps), res.CompletionTokens, res.FinishReason)
	}
	for _, lp := range lps {
		if len(lp.Top) != req.TopLogprobs || lp.Logprob > 0 {
			fail("request %d: logprob %+v", i, lp)
			break
		}
	}
}

// runAlone runs req by itself on a fresh runtime of limits l.
func runAlone(t *testing.T, l propLimits, req *nozzle.GenerateRequest) propOutcome {
	t.Helper()
	errs := &logErrors{}
	l.opts.SpeculativeTokens = 0
	rt := l.start(t, metrics.NewRegistry(), errs)
	var o propOutcome
	o.res, o.err = rt.Generate(context.Background(), req, func(c nozzle.Chunk) error {
		o.chunks = append(o.chunks, c)
		return nil
	})
	closeRT(t, rt)
	for _, err := range rt.eng.invalidSteps() {
		t.Errorf("alone: the engine refused a step: %v", err)
	}
	for _, m := range errs.get() {
		t.Errorf("alone: logged: %s", m)
	}
	return o
}

func adapterSHA(req *nozzle.GenerateRequest) string {
	if req.Adapter == nil {
		return ""
	}
	return req.Adapter.SHA256
}

func describe(req *nozzle.GenerateRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{tenant %s", req.TenantID)
	switch {
	case req.Messages != nil:
		fmt.Fprintf(&b, ", chat %q", req.Messages[len(req.Messages)-1].Content)
	case req.PromptTokens != nil:
		fmt.Fprintf(&b, ", %d prompt tokens", len(req.PromptTokens))
	default:
		fmt.Fprintf(&b, ", prompt %q", req.Prompt)
	}
	fmt.Fprintf(&b, ", max_tokens %d", req.MaxTokens)
	if req.Adapter != nil {
		fmt.Fprintf(&b, ", adapter %.8s", req.Adapter.SHA256)
	}
	if req.Temperature > 0 {
		fmt.Fprintf(&b, ", temperature %.2f", req.Temperature)
		if req.Seed != nil {
			fmt.Fprintf(&b, " seed %d", *req.Seed)
		}
	}
	if req.Logprobs || req.TopLogprobs > 0 {
		fmt.Fprintf(&b, ", logprobs %d", req.TopLogprobs)
	}
	if req.Echo {
		b.WriteString(", echo")
	}
	if req.PromptOnly {
		b.WriteString(", prompt only")
	}
	if len(req.Stop) > 0 {
		fmt.Fprintf(&b, ", stop %q", req.Stop)
	}
	b.WriteString("}")
	return b.String()
}

// alike is chunks as a request gives them whatever else runs beside it,
// on whichever runtime: without the device seconds and cached prompt
// tokens of their progress, which depend on the batches it ran in, nor the
// runtime's id.
func alike(chunks []nozzle.Chunk) []nozzle.Chunk {
	out := make([]nozzle.Chunk, len(chunks))
	for i, c := range chunks {
		c.Progress.DeviceSeconds, c.Progress.CachedPromptTokens, c.Progress.RuntimeID = 0, 0, ""
		out[i] = c
	}
	return out
}

func showChunks(cs []nozzle.Chunk) string {
	var b strings.Builder
	for _, c := range cs {
		if c.Prompt {
			b.WriteString("[prompt]")
		}
		fmt.Fprintf(&b, "%q", c.Text)
		if len(c.Logprobs) > 0 {
			fmt.Fprintf(&b, "(%d lp)", len(c.Logprobs))
		}
		b.WriteString(" ")
	}
	return b.String()
}
