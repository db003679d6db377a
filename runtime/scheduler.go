package runtime

import (
	"log/slog"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/engine"
)

type seqState int

const (
	stWaiting seqState = iota
	stRunning
	stDone
)

// cancel kinds sent by a request's goroutine.
const (
	cancelClient   = iota // ctx ended or emit failed: ECANCELED
	cancelStop            // a stop sequence matched: finished with "stop"
	cancelShutdown        // the runtime is closing: EUNAVAILABLE
)

// seqEvent is what the engine goroutine tells a request: one sampled token,
// or the final account.
type seqEvent struct {
	prompt  bool // the score of a prompt token (Echo with logprobs), not a sampled one
	token   int32
	logprob float32
	topTok  []int32
	topLP   []float32
	eos     bool
	// dev and cached are the sequence's device seconds so far and its
	// prompt tokens the prefix cache held, with each sampled token.
	dev    float64
	cached int

	final  bool
	reason string
	res    nozzle.GenerateResult
	err    error
}

// mailbox carries events from the engine goroutine to a request's
// goroutine without ever blocking the engine.
type mailbox struct {
	mu     sync.Mutex
	events []seqEvent
	signal chan struct{}
}

func newMailbox() *mailbox { return &mailbox{signal: make(chan struct{}, 1)} }

func (m *mailbox) post(ev seqEvent) {
	m.mu.Lock()
	m.events = append(m.events, ev)
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

func (m *mailbox) take(buf []seqEvent) []seqEvent {
	m.mu.Lock()
	buf = append(buf[:0], m.events...)
	clear(m.events)
	m.events = m.events[:0]
	m.mu.Unlock()
	return buf
}

// sequence is one request inside the scheduler.
type sequence struct {
	id       uint64
	tenantID string
	// background: the batch class (GenerateRequest.Background), admitted
	// only while no interactive sequence waits.
	background bool
	shareKey   string     // share()'s, cached
	sha        string     // adapter content address, "" for the base model
	space      string     // prefix-cache namespace: the tenant, then sha
	host       *hostEntry // the adapter's host-cache entry

	tokens    []int32 // prompt, then generated tokens
	nPrompt   int
	maxTokens int // completion tokens at most
	computed  int // tokens whose keys and values are in the KV cache
	generated int
	blocks    []int32
	keys      []uint64 // prefix-cache keys of its first whole blocks
	cached    int      // prompt tokens the prefix cache held at admission
	slot      int

	temperature float32
	topP        float32
	topK        int32
	seed        uint64
	bias        *seqBias    // logit_bias and penalties; nil for none
	gram        *seqGrammar // the response format's constraint; nil for none
	call        *callEnd    // ends it at its first tool call (GenerateRequest.OneCall); nil for none
	nTop        int
	// score asks for the prompt tokens' logprobs; prompt positions
	// 1..scored-1 have theirs posted.
	score  bool
	scored int
	// promptOnly (a scored prompt, nothing generated) is done once its
	// tokens up to the last one are computed: the last one's logits would
	// score a token that does not come.
	promptOnly bool
	// reasoning: a reasoning model's chat completion, whose thoughts are
	// counted; thoughtsOpen: its prompt opened them.
	reasoning, thoughtsOpen bool
	// spec is its speculative decoding history (greedy sequences).
	spec specState

	state      seqState
	admitOrder uint64
	charged    bool // its prompt counted in the tenant's virtual counter
	skips      int  // times a later sequence of its tenant went first

	arrived      time.Time
	waitingSince time.Time
	queueDur     time.Duration
	firstToken   time.Time
	deviceSec    float64
	adapterLoad  time.Duration
	hostWaited   bool // its adapter was not in host memory when it arrived
	waitsHost    bool // holds a waiter count on host

	out *mailbox
}

// share is the key of q's share in scheduler.tenants: its tenant, or for
// the batch class its tenant and a suffix, so that a tenant's batch work
// is a share of its own, with its own virtual counter.
func (q *sequence) share() string {
	if !q.background {
		return q.tenantID
	}
	if q.shareKey == "" {
		q.shareKey = q.tenantID + "\x00batch"
	}
	return q.shareKey
}

func (q *sequence) pending() int {
	if q.promptOnly {
		return q.nPrompt - 1 - q.computed
	}
	return len(q.tokens) - q.computed
}

// tenant is one tenant's share of the scheduler: a FIFO of waiting
// sequences and S-LoRA's virtual token counter.
type tenant struct {
	id         string // sequence.share()
	background bool   // the batch class's share
	counter    float64
	queue      []*sequence
	running    int
}

type inMsg struct {
	submit *sequence
	cancel *sequence
	kind   int
	all    bool   // cancel everything (shutdown)
	drop   string // a deleted adapter to drop once no sequence uses it
}

type stepEntry struct {
	q      *sequence
	n      int
	sample bool
	decode bool
	off    int // the entry's first token in the batch
	score  bool
	// draft is how many drafted tokens follow the decoded one (n is
	// 1+draft); they are scheduler.drafts[dOff:dOff+draft].
	draft int
	dOff  int
}

// scheduler owns the engine: one goroutine, locked to its OS thread, runs
// engine steps back to back while there is work, mixing decode tokens and
// prefill chunks of sequences with different adapters in one batch.
type scheduler struct {
	be    backend
	clock func() time.Time
	log   *slog.Logger
	m     *runtimeMetrics
	cache *hostCache
	cap   *capacity

	pool  *blockPool
	slots *slotTable
	eos   map[int32]bool

	ctxLen         int
	maxBatchTokens int
	maxBatchSeqs   int
	prefillChunk   int
	prefillWeight  float64
	decodeWeight   float64
	lookahead      int
	maxDrains      int
	// specTokens is the most tokens drafted for a greedy sequence's step
	// (0: no speculative decoding); specMaxSeqs the most decoding
	// sequences a step may have for any of them to draft.
	specTokens  int
	specMaxSeqs int

	mu    sync.Mutex
	inbox []inMsg
	wake  chan struct{}
	quit  chan struct{}
	done  chan struct{}

	// Engine goroutine only.
	tenants  map[string]*tenant
	waiting  int
	running  []*sequence // in admission order
	admitted uint64
	tick     uint64
	drainFor map[string]int  // adapter waiting for a slot → slot draining for it
	drops    map[string]bool // deleted adapters to drop once no sequence uses them
	batch    engine.Batch
	entries  []stepEntry
	targets  []int32
	drafts   []int32 // the step's drafted tokens (stepEntry.dOff)
	chunk    []int32
	scratch  []*sequence
	msgs     []inMsg
	order    []*tenant
	steps    uint64

	slotLoads  atomic.Uint64
	slotLoadNs atomic.Int64
}

func (s *scheduler) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) submit(q *sequence) {
	s.mu.Lock()
	s.inbox = append(s.inbox, inMsg{submit: q})
	s.mu.Unlock()
	s.notify()
}

func (s *scheduler) cancel(q *sequence, kind int) {
	s.mu.Lock()
	s.inbox = append(s.inbox, inMsg{cancel: q, kind: kind})
	s.mu.Unlock()
	s.notify()
}

// drop asks for a deleted adapter to leave the slots, the prefix cache and
// host memory once no sequence running or queued uses it.
func (s *scheduler) drop(sha string) {
	s.mu.Lock()
	s.inbox = append(s.inbox, inMsg{drop: sha})
	s.mu.Unlock()
	s.notify()
}

func (s *scheduler) cancelAll() {
	s.mu.Lock()
	s.inbox = append(s.inbox, inMsg{all: true, kind: cancelShutdown})
	s.mu.Unlock()
	s.notify()
}

// run is the engine goroutine.
func (s *scheduler) run() {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	defer close(s.done)
	for {
		s.drainInbox()
		s.admit()
		if len(s.drops) > 0 {
			s.settleDrops()
		}
		s.updateGauges()
		if len(s.running) == 0 {
			select {
			case <-s.wake:
				continue
			case <-s.quit:
				s.drainInbox()
				if len(s.running) == 0 && s.waiting == 0 {
					return
				}
				// Work arrived with the quit; finish it.
				s.cancelEverything(cancelShutdown)
				continue
			}
		}
		s.step()
	}
}

func (s *scheduler) drainInbox() {
	s.mu.Lock()
	s.msgs, s.inbox = s.inbox, s.msgs[:0]
	s.mu.Unlock()
	now := s.clock()
	for _, msg := range s.msgs {
		switch {
		case msg.drop != "":
			s.drops[msg.drop] = true
		case msg.submit != nil:
			s.enqueue(msg.submit, now)
		case msg.all:
			s.cancelEverything(msg.kind)
		case msg.cancel != nil:
			q := msg.cancel
			if q.state == stDone {
				continue
			}
			switch msg.kind {
			case cancelStop:
				s.finish(q, nozzle.FinishStop, nil)
			case cancelShutdown:
				s.finish(q, "", nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is shutting down."))
			default:
				s.finish(q, "", nozzle.Errorf(nozzle.ECANCELED, "The request was canceled."))
			}
		}
	}
	clear(s.msgs)
	s.msgs = s.msgs[:0]
}

func (s *scheduler) cancelEverything(kind int) {
	for _, q := range slices.Clone(s.running) {
		s.finish(q, "", shutdownErr(kind))
	}
	for _, t := range s.sortedTenants() {
		for _, q := range slices.Clone(t.queue) {
			s.finish(q, "", shutdownErr(kind))
		}
	}
}

func shutdownErr(kind int) error {
	if kind == cancelShutdown {
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is shutting down.")
	}
	return nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.")
}

// minCounter returns the lowest virtual counter among active tenants.
func (s *scheduler) minCounter() (float64, bool) {
	first := true
	var m float64
	for _, t := range s.tenants {
		if first || t.counter < m {
			m, first = t.counter, false
		}
	}
	return m, !first
}

func (s *scheduler) enqueue(q *sequence, now time.Time) {
	t := s.tenants[q.share()]
	if t == nil {
		// A tenant that becomes active starts at the lowest counter of the
		// active ones: it cannot bank credit while idle.
		t = &tenant{id: q.share(), background: q.background}
		if m, ok := s.minCounter(); ok {
			t.counter = m
		}
		s.tenants[q.share()] = t
	}
	q.state = stWaiting
	q.waitingSince = now
	t.queue = append(t.queue, q)
	s.waiting++
}

func (s *scheduler) sortedTenants() []*tenant {
	s.order = s.order[:0]
	for _, t := range s.tenants {
		if len(t.queue) > 0 {
			s.order = append(s.order, t)
		}
	}
	slices.SortFunc(s.order, func(a, b *tenant) int {
		// the interactive class before the batch class, whatever the
		// counters
		if a.background != b.background {
			if b.background {
				return -1
			}
			return 1
		}
		if a.counter != b.counter {
			if a.counter < b.counter {
				return -1
			}
			return 1
		}
		if a.id < b.id {
			return -1
		} else if a.id > b.id {
			return 1
		}
		return 0
	})
	return s.order
}

// admit moves waiting sequences into the running set while KV blocks,
// adapter slots and the batch limit allow, lowest virtual counter first.
func (s *scheduler) admit() {
	if s.waiting == 0 {
		return
	}
	now := s.clock()
	preempted := 0
	for {
		for len(s.running) < s.maxBatchSeqs && s.waiting > 0 {
			q := s.pick(now)
			if q == nil {
				break
			}
			s.start(q, now)
		}
		// A draining slot that nobody took stops draining; sequences of
		// its adapter may then run on it after all.
		undrained := false
		for i := range s.slots.slots {
			sl := &s.slots.slots[i]
			if sl.draining && sl.pins == 0 {
				sl.draining = false
				undrained = true
				for sha, j := range s.drainFor {
					if j == i {
						delete(s.drainFor, sha)
					}
				}
			}
		}
		if undrained && s.waiting > 0 && len(s.running) < s.maxBatchSeqs {
			continue
		}
		if s.waiting > 0 && preempted < s.maxBatchSeqs && s.fairPreempt(now) {
			preempted++
			continue
		}
		break
	}
	s.warmSlots(now)
}

// fairPreempt makes room for the tenant next in line (the lowest virtual
// counter) when it is kept waiting — for a place in the batch, or for KV
// memory the preemption frees — while another tenant, served more,
// holds more than its share of the batch (the batch's sequences over the
// tenants with work): that tenant gives back its newest sequence, which
// waits again first in its queue and is recomputed when readmitted (its
// whole blocks stay in the prefix cache). Without it a tenant that fills
// every place holds the others off until one of its sequences ends.
// Reports whether it preempted.
func (s *scheduler) fairPreempt(now time.Time) bool {
	order := s.sortedTenants()
	if len(order) == 0 {
		return false
	}
	want := order[0]
	if !want.background && s.preemptBackground(want, now) {
		return true
	}
	active := 0
	for _, t := range s.tenants {
		if t.running > 0 || len(t.queue) > 0 {
			active++
		}
	}
	share := max(1, s.maxBatchSeqs/max(active, 1))
	if want.running >= share {
		return false
	}
	var over *tenant
	for _, t := range s.tenants {
		if t == want || t.running <= share || t.counter < want.counter {
			continue
		}
		if over == nil || t.running > over.running || t.running == over.running && t.id < over.id {
			over = t
		}
	}
	if over == nil {
		return false
	}
	// Only for a head that could start at once: not one whose adapter is
	// still to load, or that waits for a leader's blocks.
	head := want.queue[0]
	if !s.resident(head) || s.followsLeader(head) {
		return false
	}
	for i := len(s.running) - 1; i >= 0; i-- {
		if q := s.running[i]; q.share() == over.id {
			// Where places are left and memory is short, only a
			// preemption that frees enough of it for the head.
			if len(s.running) < s.maxBatchSeqs && s.pool.available()+len(q.blocks) < s.pool.blocksFor(len(head.tokens))+len(s.running)-1 {
				return false
			}
			s.preempt(q, now)
			s.m.fairPreemptions.Inc()
			return true
		}
	}
	return false
}

// preemptBackground makes room for the interactive share want, kept
// waiting, by preempting the newest running sequence of the batch class,
// under the same conditions as a fair preemption. Reports whether it
// preempted.
func (s *scheduler) preemptBackground(want *tenant, now time.Time) bool {
	head := want.queue[0]
	if !s.resident(head) || s.followsLeader(head) {
		return false
	}
	for i := len(s.running) - 1; i >= 0; i-- {
		if q := s.running[i]; q.background {
			if len(s.running) < s.maxBatchSeqs && s.pool.available()+len(q.blocks) < s.pool.blocksFor(len(head.tokens))+len(s.running)-1 {
				return false
			}
			s.preempt(q, now)
			s.m.fairPreemptions.Inc()
			return true
		}
	}
	return false
}

// pick returns the next sequence to admit, removed from its tenant's
// queue, or nil.
func (s *scheduler) pick(now time.Time) *sequence {
	reserve := 0
	if len(s.running) > 0 {
		// Leave a block of headroom per running sequence so that
		// admission does not force an immediate preemption.
		reserve = len(s.running)
	}
	interactive := false
	for _, t := range s.sortedTenants() {
		if t.background && interactive {
			// An interactive sequence waits: no batch work goes before it.
			return nil
		}
		interactive = interactive || !t.background
		n := min(len(t.queue), s.lookahead)
		if s.pool.blocksFor(len(t.queue[0].tokens))+reserve > s.pool.available() {
			// Memory is the fair-share resource: nobody behind the head
			// of the lowest counter jumps ahead for it.
			return nil
		}
		// Within the tenant's window, a sequence whose adapter is in a
		// slot goes before one that needs a slot load (fewer loads, less
		// thrash), unless the head has been passed over too often.
		if t.queue[0].skips < s.lookahead {
			for i := 0; i < n; i++ {
				q := t.queue[i]
				if !s.resident(q) || s.pool.blocksFor(len(q.tokens))+reserve > s.pool.available() || s.followsLeader(q) {
					continue
				}
				for _, p := range t.queue[:i] {
					p.skips++
				}
				t.queue = slices.Delete(t.queue, i, i+1)
				return q
			}
		}
		for i := 0; i < n; i++ {
			q := t.queue[i]
			if s.pool.blocksFor(len(q.tokens))+reserve > s.pool.available() {
				return nil
			}
			if s.followsLeader(q) {
				continue
			}
			ok, failed := s.ensureSlot(q, now)
			if failed {
				// ensureSlot finished q; the queue changed under us.
				return s.pick(now)
			}
			if !ok {
				continue
			}
			t.queue = slices.Delete(t.queue, i, i+1)
			return q
		}
	}
	return nil
}

// followsLeader reports whether q should wait for a running sequence of
// its tenant that is still computing the same first block under the same
// adapter (the n choices of one request, requests that share a system
// prompt): once it has, q takes every block they share from the prefix
// cache instead of computing them beside it.
func (s *scheduler) followsLeader(q *sequence) bool {
	size := s.pool.size
	if !s.pool.cache || len(q.tokens) <= size || q.score { // a scored prompt takes no blocks
		return false
	}
	first := q.tokens[:size]
	for _, r := range s.running {
		if r.space == q.space && r.pending() > 1 && len(r.tokens) > size && slices.Equal(r.tokens[:size], first) {
			return true
		}
	}
	return false
}

// resident reports whether q can run without loading its adapter.
func (s *scheduler) resident(q *sequence) bool {
	if q.sha == "" {
		return true
	}
	i, ok := s.slots.lookup(q.sha)
	return ok && !s.slots.slots[i].draining
}

// ensureSlot makes q's adapter resident in a slot that q may pin. It
// reports false when q must wait, and failed when q was finished because
// its adapter could not be loaded.
func (s *scheduler) ensureSlot(q *sequence, now time.Time) (ok, failed bool) {
	if q.sha == "" {
		return true, false
	}
	if i, found := s.slots.lookup(q.sha); found {
		return !s.slots.slots[i].draining, false
	}
	e := q.host
	select {
	case <-e.ready:
	default:
		return false, false
	}
	if e.err != nil {
		s.finish(q, "", e.err)
		return false, true
	}
	v := s.slots.victim()
	if v < 0 {
		// Every slot is in use: drain one for this adapter, so that a
		// stream of requests for resident adapters cannot keep it out.
		if _, ok := s.drainFor[q.sha]; !ok && s.slots.draining() < s.maxDrains {
			if d := s.slots.drainCandidate(); d >= 0 {
				s.slots.slots[d].draining = true
				s.drainFor[q.sha] = d
			}
		}
		return false, false
	}
	if err := s.loadSlot(v, e, now); err != nil {
		if err == errEvicted {
			// Evicted from host memory before it reached a slot (only
			// possible for an entry nobody waited for): fetch it again.
			s.cache.unwait(e)
			q.host = s.cache.prefetch(q.sha)
			return false, false
		}
		s.finish(q, "", err)
		return false, true
	}
	return true, false
}

// loadSlot copies an adapter from host memory into slot v, evicting what
// was there.
func (s *scheduler) loadSlot(v int, e *hostEntry, now time.Time) error {
	sl := &s.slots.slots[v]
	if !e.loaded() {
		return errEvicted
	}
	if sl.sha != "" {
		delete(s.slots.where, sl.sha)
		s.cache.setOnDevice(sl.sha, false)
		s.m.adapterEvictions.With(string(nozzle.TierDevice)).Inc()
	}
	for sha, j := range s.drainFor {
		if j == v {
			delete(s.drainFor, sha)
		}
	}
	a, ok := s.cache.acquire(e)
	if !ok {
		return errEvicted
	}
	*sl = slot{}
	t0 := time.Now()
	err := s.be.LoadAdapter(v, a)
	d := time.Since(t0)
	s.cache.release(e)
	if err != nil {
		s.be.ClearAdapter(v)
		return nozzle.Errorf(nozzle.EINTERNAL, "Internal error.").Wrap(err)
	}
	*sl = slot{sha: e.sha, lastUse: s.tick, loadedAt: now, loadDur: d}
	s.slots.where[e.sha] = v
	s.cache.setOnDevice(e.sha, true)
	s.slotLoads.Add(1)
	s.slotLoadNs.Add(int64(d))
	s.m.adapterLoads.With(string(nozzle.TierDevice)).Inc()
	s.m.adapterLoadSeconds.With(string(nozzle.TierDevice)).Observe(d.Seconds())
	return nil
}

// warmSlots loads host-resident adapters of waiting sequences into empty
// slots, so that they are ready when KV blocks free up.
func (s *scheduler) warmSlots(now time.Time) {
	for _, t := range s.sortedTenants() {
		for _, q := range t.queue[:min(len(t.queue), s.lookahead)] {
			if q.sha == "" || !q.host.loaded() {
				continue
			}
			if _, ok := s.slots.lookup(q.sha); ok {
				continue
			}
			v := -1
			for i := range s.slots.slots {
				if s.slots.slots[i].sha == "" {
					v = i
					break
				}
			}
			if v < 0 {
				return
			}
			if err := s.loadSlot(v, q.host, now); err != nil {
				s.log.Error("adapter slot load failed", "sha256", q.sha, "err", err)
				return
			}
		}
	}
}

// start admits q: its prompt's KV blocks, its slot pin.
func (s *scheduler) start(q *sequence, now time.Time) {
	t := s.tenants[q.share()]
	// The whole blocks of q's tokens that the prefix cache holds are
	// computed already; at least the last token is left to compute, for
	// its logits.
	// A scored prompt is computed whole: its logits are what is asked for.
	var matched []int32
	var keys []uint64
	if !q.score {
		matched, keys = s.pool.match(q.space, q.tokens, len(q.tokens)-1)
	}
	q.blocks = append(q.blocks[:0], matched...)
	q.keys = append(q.keys[:0], keys...)
	q.computed = len(matched) * s.pool.size
	var ok bool
	q.blocks, ok = s.pool.grow(q.blocks, len(q.tokens))
	if !ok {
		panic("runtime: admitted a sequence without free blocks")
	}
	if q.computed > 0 {
		s.m.prefixHitTokens.Add(float64(q.computed))
	}
	q.slot = -1
	if q.sha != "" {
		i := s.slots.where[q.sha]
		sl := &s.slots.slots[i]
		sl.pins++
		sl.lastUse = s.tick
		q.slot = i
		if q.waitingSince.Before(sl.loadedAt) || q.waitingSince.Equal(sl.loadedAt) {
			q.adapterLoad += sl.loadDur
		}
		if q.hostWaited && q.host.loaded() {
			q.adapterLoad += q.host.loadDur
			q.hostWaited = false
		}
		if q.waitsHost {
			s.cache.unwait(q.host)
			q.waitsHost = false
		}
	}
	q.queueDur += now.Sub(q.waitingSince)
	q.state = stRunning
	s.admitted++
	q.admitOrder = s.admitted
	t.running++
	s.waiting--
	if !q.charged {
		// Prompt tokens the cache held cost no prefill: they are not counted.
		q.cached = min(q.computed, q.nPrompt)
		t.counter += float64(q.nPrompt-q.cached) * s.prefillWeight
		q.charged = true
		s.m.promptTokens.Add(float64(q.nPrompt))
	}
	s.running = append(s.running, q)
}

// preempt evicts a running sequence for recompute: its blocks go back to
// the pool and it waits again, first in its tenant's queue, with what it
// generated appended to its prompt. The client sees nothing of it.
func (s *scheduler) preempt(q *sequence, now time.Time) {
	s.removeRunning(q)
	s.pool.release(q.blocks)
	q.blocks, q.keys = q.blocks[:0], q.keys[:0]
	s.unpin(q)
	q.computed = 0
	q.state = stWaiting
	q.waitingSince = now
	if q.sha != "" {
		q.host = s.cache.prefetch(q.sha)
		q.waitsHost = true
	}
	t := s.tenants[q.share()]
	t.running--
	t.queue = slices.Insert(t.queue, 0, q)
	s.waiting++
	s.m.preemptions.Inc()
}

func (s *scheduler) removeRunning(q *sequence) {
	if i := slices.Index(s.running, q); i >= 0 {
		s.running = slices.Delete(s.running, i, i+1)
	}
}

func (s *scheduler) unpin(q *sequence) {
	if q.slot >= 0 {
		s.slots.slots[q.slot].pins--
		q.slot = -1
	}
}

// finish ends q, frees everything it holds and posts its account. reason
// is the finish reason when err is nil.
func (s *scheduler) finish(q *sequence, reason string, err error) {
	now := s.clock()
	t := s.tenants[q.share()]
	switch q.state {
	case stRunning:
		s.removeRunning(q)
		s.pool.release(q.blocks)
		q.blocks = q.blocks[:0]
		s.unpin(q)
		t.running--
	case stWaiting:
		if i := slices.Index(t.queue, q); i >= 0 {
			t.queue = slices.Delete(t.queue, i, i+1)
		}
		s.waiting--
		q.queueDur += now.Sub(q.waitingSince)
		if q.waitsHost {
			s.cache.unwait(q.host)
			q.waitsHost = false
		}
	case stDone:
		return
	}
	q.state = stDone
	if len(t.queue) == 0 && t.running == 0 {
		delete(s.tenants, t.id)
	}
	res := nozzle.GenerateResult{
		FinishReason:       reason,
		PromptTokens:       q.nPrompt,
		CachedPromptTokens: q.cached,
		CompletionTokens:   q.generated,
		DeviceSeconds:      q.deviceSec,
		QueueSeconds:       q.queueDur.Seconds(),
		AdapterLoadSeconds: q.adapterLoad.Seconds(),
	}
	if !q.firstToken.IsZero() {
		res.TTFTSeconds = q.firstToken.Sub(q.arrived).Seconds()
	}
	outcome := "ok"
	if err != nil {
		res.FinishReason = ""
		outcome = nozzle.ErrorCode(err)
	}
	s.m.requests.With(outcome).Inc()
	q.out.post(seqEvent{final: true, reason: res.FinishReason, res: res, err: err})
}

// settleDrops drops the deleted adapters that no sequence uses any more:
// out of their slot, out of the prefix cache, out of host memory. One that
// a request about to be queued holds in host memory stays marked, for a
// later pass.
func (s *scheduler) settleDrops() {
	for sha := range s.drops {
		if s.wanted(sha) {
			continue
		}
		if i, ok := s.slots.lookup(sha); ok {
			s.clearSlot(i)
		}
		delete(s.drainFor, sha)
		s.pool.forgetAdapter(sha)
		if s.cache.drop(sha) {
			delete(s.drops, sha)
		}
	}
}

// wanted reports whether a sequence running or queued uses adapter sha.
func (s *scheduler) wanted(sha string) bool {
	for _, q := range s.running {
		if q.sha == sha {
			return true
		}
	}
	for _, t := range s.tenants {
		for _, q := range t.queue {
			if q.sha == sha {
				return true
			}
		}
	}
	return false
}

// clearSlot empties slot i, which no running sequence pins.
func (s *scheduler) clearSlot(i int) {
	sl := &s.slots.slots[i]
	if err := s.be.ClearAdapter(i); err != nil {
		// The slot is free for the next load whatever the engine says: a
		// load overwrites it.
		s.log.Error("adapter slot clear failed", "slot", i, "sha256", sl.sha, "err", err)
	}
	delete(s.slots.where, sl.sha)
	s.cache.setOnDevice(sl.sha, false)
	for sha, j := range s.drainFor {
		if j == i {
			delete(s.drainFor, sha)
		}
	}
	*sl = slot{}
	s.m.adapterDrops.With(string(nozzle.TierDevice)).Inc()
}

// step runs one engine step: one token for every decoding sequence first,
// then prefill chunks in the token budget left.
func (s *scheduler) step() {
	t0 := s.clock()
	s.tick++
	b := &s.batch
	s.entries = s.entries[:0]
	budget := s.maxBatchTokens

	s.scratch = append(s.scratch[:0], s.running...)
	for _, q := range s.scratch {
		if budget == 0 {
			break
		}
		if q.state != stRunning || q.pending() != 1 || q.promptOnly {
			continue
		}
		for q.state == stRunning {
			var ok bool
			if q.blocks, ok = s.pool.grow(q.blocks, q.computed+1); ok {
				break
			}
			// Out of blocks: recompute later the most recently admitted.
			s.preempt(s.running[len(s.running)-1], t0)
		}
		if q.state != stRunning {
			continue
		}
		s.entries = append(s.entries, stepEntry{q: q, n: 1, sample: true, decode: q.generated > 0})
		budget--
	}
	// Each sampled sequence and each scored prompt token takes a row of
	// logits; a step has maxBatchSeqs of them.
	rows := len(s.entries)
	for _, q := range s.running {
		if budget == 0 {
			break
		}
		p := q.pending()
		if p <= 1 && (p < 1 || !q.promptOnly) {
			continue
		}
		n := min(p, s.prefillChunk, budget)
		score := false
		if first := max(q.computed, q.scored-1); q.score && first < q.nPrompt-1 {
			// positions first.. are scored (each against the next token),
			// the prompt's last excepted; a row stays free for a sample
			// where that leaves one to score with (with a single free
			// row, as under max_batch_seqs 1 or beside decodes filling
			// all but one, the prompt would never be scored)
			free := s.maxBatchSeqs - rows
			if free > 1 {
				free--
			}
			if free <= 0 && first == q.computed {
				continue
			}
			n = min(n, first-q.computed+max(free, 0))
			score = true
			rows += max(0, min(q.computed+n, q.nPrompt-1)-first)
		}
		e := stepEntry{q: q, n: n, sample: !q.promptOnly && q.computed+n == len(q.tokens), score: score}
		if e.sample {
			if rows >= s.maxBatchSeqs {
				// no row left to sample from: the last token waits (it
				// is never a scored one)
				if e.n == 1 {
					continue
				}
				e.n--
				e.sample = false
			} else {
				rows++
			}
		}
		s.entries = append(s.entries, e)
		budget -= e.n
	}
	if len(s.entries) == 0 {
		return
	}
	drafted := false
	if s.specTokens > 0 && budget > 0 && rows < s.maxBatchSeqs {
		drafted = s.planDrafts(budget, rows)
	}

	maxBlocks, nTop := 1, 0
	for _, e := range s.entries {
		maxBlocks = max(maxBlocks, len(e.q.blocks))
		nTop = max(nTop, e.q.nTop)
	}
	if drafted {
		// a scored row's top token is the greedy choice after it
		nTop = max(nTop, 1)
	}
	b.Reset(maxBlocks, nTop)
	for i := range s.entries {
		e := &s.entries[i]
		q := e.q
		e.off = len(b.Tokens)
		var score []int32
		if e.score {
			s.targets = s.targets[:0]
			for p := q.computed; p < q.computed+e.n; p++ {
				t := int32(-1)
				if p+1 >= q.scored && p+1 < q.nPrompt {
					t = q.tokens[p+1]
				}
				s.targets = append(s.targets, t)
			}
			score = s.targets
		}
		var tokens []int32
		if e.draft == 0 {
			tokens = q.tokens[q.computed : q.computed+e.n]
		} else {
			// the decoded token, then the drafts, each scored against
			// the draft after it; the last one is sampled (the bonus)
			drafts := s.drafts[e.dOff : e.dOff+e.draft]
			s.chunk = append(append(s.chunk[:0], q.tokens[q.computed]), drafts...)
			tokens = s.chunk
			s.targets = append(append(s.targets[:0], drafts...), -1)
			score = s.targets
		}
		var allow []uint32
		if e.sample {
			allow = q.gram.mask()
		}
		b.Add(engine.Seq{Tokens: tokens, Pos: q.computed, Slot: q.slot, Blocks: q.blocks,
			Sample: e.sample, Temperature: q.temperature, TopP: q.topP, TopK: int(q.topK), Seed: q.seed, Score: score,
			BiasTokens: q.bias.tokens(), BiasValues: q.bias.values(), Allow: allow})
	}
	err := s.be.Step(b)
	t1 := s.clock()
	s.steps++

	// Split the step's wall time across its sequences by their work.
	dt := t1.Sub(t0).Seconds()
	var work float64
	for _, e := range s.entries {
		work += s.work(e)
	}
	for _, e := range s.entries {
		e.q.deviceSec += dt * s.work(e) / work
	}
	s.cap.addActive(t0, t1)
	s.m.stepSeconds.Observe(dt)
	s.m.batchSeqs.Observe(float64(len(s.entries)))
	s.m.batchTokens.Observe(float64(len(b.Tokens)))

	if err != nil {
		s.log.Error("engine step failed", "err", err, "seqs", len(s.entries), "tokens", len(b.Tokens))
		for _, e := range s.entries {
			s.finish(e.q, "", nozzle.Errorf(nozzle.EINTERNAL, "Internal error.").Wrap(err))
		}
		return
	}
	for i, e := range s.entries {
		q := e.q
		if e.draft > 0 {
			s.acceptDrafts(i, e, t1)
			continue
		}
		if e.score {
			for p := q.computed; p < q.computed+e.n; p++ {
				if t := e.off + p - q.computed; b.ScoreTarget[t] >= 0 {
					ev := seqEvent{prompt: true, token: b.ScoreTarget[t], logprob: b.OutScoreLogprob[t]}
					if q.nTop > 0 {
						ev.topTok = slices.Clone(b.OutScoreTopToken[t*nTop : t*nTop+q.nTop])
						ev.topLP = slices.Clone(b.OutScoreTopLogprob[t*nTop : t*nTop+q.nTop])
					}
					q.out.post(ev)
					q.scored = p + 2
				}
			}
		}
		q.computed += e.n
		s.rememberBlocks(q)
		if q.promptOnly && q.pending() == 0 {
			s.finish(q, nozzle.FinishLength, nil)
			continue
		}
		if !e.sample {
			continue
		}
		var topTok []int32
		var topLP []float32
		if q.nTop > 0 {
			topTok, topLP = b.OutTopToken[i*nTop:i*nTop+q.nTop], b.OutTopLogprob[i*nTop:i*nTop+q.nTop]
		}
		s.emit(q, b.OutToken[i], b.OutLogprob[i], topTok, topLP, t1, false)
	}
}

// emit appends a token q generated, tells its request and finishes q when
// the token ends it. computed says the step wrote the token's keys and
// values too (an accepted draft). It reports whether q finished.
func (s *scheduler) emit(q *sequence, tok int32, logprob float32, topTok []int32, topLP []float32, t1 time.Time, computed bool) bool {
	q.tokens = append(q.tokens, tok)
	if computed {
		q.computed++
		s.rememberBlocks(q)
	}
	q.bias.generated(tok)
	formed := q.gram.feed(tok)
	called := q.call.feed(tok)
	q.generated++
	if q.firstToken.IsZero() {
		q.firstToken = t1
	}
	if t := s.tenants[q.share()]; t != nil {
		t.counter += s.decodeWeight
	}
	ev := seqEvent{token: tok, logprob: logprob, eos: s.eos[tok], dev: q.deviceSec, cached: q.cached}
	if q.nTop > 0 {
		ev.topTok = slices.Clone(topTok)
		ev.topLP = slices.Clone(topLP)
	}
	q.out.post(ev)
	s.m.tokensGenerated.Inc()
	switch {
	case q.gram.failed() != nil:
		s.log.Error("response format constraint failed", "err", q.gram.failed())
		s.finish(q, "", q.gram.failed())
	case ev.eos, formed, called:
		s.finish(q, nozzle.FinishStop, nil)
	case q.generated >= q.maxTokens || len(q.tokens) >= s.ctxLen:
		s.finish(q, nozzle.FinishLength, nil)
	default:
		return false
	}
	return true
}

// planDrafts gives the step's decoding greedy sequences drafted tokens in
// what the step has to spare once every decode and prefill chunk is in:
// budget tokens and the logit rows past rows (each draft is scored, so it
// takes a row). Drafts only take free KV blocks (never a cached one, never
// a preemption). It reports whether any sequence drafted.
func (s *scheduler) planDrafts(budget, rows int) bool {
	decoding := 0
	for _, e := range s.entries {
		if e.n == 1 && e.sample && e.q.pending() == 1 {
			decoding++
		}
	}
	if decoding == 0 || decoding > s.specMaxSeqs {
		return false
	}
	s.drafts = s.drafts[:0]
	drafted := false
	for i := range s.entries {
		e := &s.entries[i]
		q := e.q
		if e.n != 1 || !e.sample || e.score || q.pending() != 1 || !specEligible(q) || s.tick < q.spec.until {
			continue
		}
		// accepted drafts and the token after them stay within
		// max_tokens and the context
		k := min(s.specTokens, budget, s.maxBatchSeqs-rows, q.maxTokens-q.generated-1, s.ctxLen-len(q.tokens)-1)
		if k <= 0 {
			continue
		}
		off := len(s.drafts)
		s.drafts = draftTokens(s.drafts, q.tokens, specMaxNgram, k)
		d := len(s.drafts) - off
		// positions q.computed..q.computed+d, in blocks q holds or free ones
		room := (len(q.blocks)+len(s.pool.free))*s.pool.size - q.computed - 1
		d = min(d, room)
		s.drafts = s.drafts[:off+max(d, 0)]
		if d <= 0 {
			continue
		}
		var ok bool
		if q.blocks, ok = s.pool.grow(q.blocks, q.computed+1+d); !ok {
			panic("runtime: drafts grew past the free blocks")
		}
		e.n, e.draft, e.dOff = 1+d, d, off
		budget -= d
		rows += d
		drafted = true
	}
	return drafted
}

// acceptDrafts settles entry i of the step, a decode with drafts: the
// drafts up to the first whose scored row's top token differs from it are
// accepted, then that top token (or, when every draft holds, the sampled
// bonus token) follows; each goes out as a token of its own, until one
// ends the sequence. Only accepted tokens count as computed: the keys and
// values written for rejected drafts are overwritten by later steps before
// anything reads them, and the prefix cache only sees whole blocks of
// computed tokens.
func (s *scheduler) acceptDrafts(i int, e stepEntry, t1 time.Time) {
	b := &s.batch
	q, nTop := e.q, b.NTop
	drafts := s.drafts[e.dOff : e.dOff+e.draft]
	a := 0
	for a < len(drafts) && b.OutScoreTopToken[(e.off+a)*nTop] == drafts[a] {
		a++
	}
	s.m.specDrafted.Add(float64(len(drafts)))
	s.m.specAccepted.Add(float64(a))
	q.spec.record(a, s.tick)
	q.computed++ // the decoded token
	s.rememberBlocks(q)
	for j := 0; j <= a; j++ {
		row := e.off + j
		var (
			tok     int32
			lp      float32
			topTok  []int32
			topLP   []float32
			topRows = b.OutScoreTopToken
			topLPs  = b.OutScoreTopLogprob
			at      = row * nTop
		)
		switch {
		case j < a: // an accepted draft: scored at the row before it
			tok, lp = drafts[j], b.OutScoreLogprob[row]
		case a < len(drafts): // the first rejected draft's correction
			tok, lp = b.OutScoreTopToken[row*nTop], b.OutScoreTopLogprob[row*nTop]
		default: // every draft held: the bonus token, sampled
			tok, lp = b.OutToken[i], b.OutLogprob[i]
			topRows, topLPs, at = b.OutTopToken, b.OutTopLogprob, i*nTop
		}
		if q.nTop > 0 {
			topTok, topLP = topRows[at:at+q.nTop], topLPs[at:at+q.nTop]
		}
		// an accepted draft's keys and values are in the cache
		if s.emit(q, tok, lp, topTok, topLP, t1, j < a) {
			return
		}
	}
}

// rememberBlocks offers the prefix cache every block of q that is whole
// and computed and that it has not offered yet.
func (s *scheduler) rememberBlocks(q *sequence) {
	if !s.pool.cache {
		return
	}
	size := s.pool.size
	for i := len(q.keys); (i+1)*size <= q.computed; i++ {
		var parent uint64
		if i > 0 {
			parent = q.keys[i-1]
		}
		q.keys = append(q.keys, s.pool.remember(q.blocks[i], parent, q.space, q.tokens[i*size:(i+1)*size]))
	}
}

func (s *scheduler) work(e stepEntry) float64 {
	if e.decode {
		return float64(e.n) * s.decodeWeight
	}
	return float64(e.n) * s.prefillWeight
}

func (s *scheduler) updateGauges() {
	s.m.queueDepth.Set(float64(s.waiting))
	s.m.running.Set(float64(len(s.running)))
	s.m.kvUsed.Set(float64(s.pool.used()))
	s.m.kvFree.Set(float64(s.pool.available()))
	s.m.kvCached.Set(float64(s.pool.cached()))
	s.m.slotsUsed.Set(float64(s.slots.used()))
	s.m.slotsPinned.Set(float64(s.slots.pinned()))
	s.m.hostCacheBytes.Set(float64(s.cache.residentBytes()))
}
