package runtime

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
)

// hostEntry is one adapter in (or on its way into) host memory.
type hostEntry struct {
	sha     string
	ready   chan struct{} // closed once loading ended
	a       hostAdapter   // set when loaded
	err     error         // set when loading failed
	size    int64
	loadDur time.Duration
	refs    int // engine copies in flight; an entry with refs is not closed
	waiters int // queued sequences that want it; an entry with waiters is not evicted
	elem    *list.Element
	evicted bool // out of the LRU; closed once refs reach zero
	dropped bool // dropped while loading: closed, not cached, when the load ends
}

func (e *hostEntry) loaded() bool {
	select {
	case <-e.ready:
		return e.err == nil
	default:
		return false
	}
}

// hostCache is the middle tier: adapters parsed into host memory, kept in
// LRU order within a byte budget. Loads from the source (disk, or the
// gateway in remote mode) run on their own goroutines, a few at a time,
// so that they never stall an engine step.
type hostCache struct {
	ctx    context.Context
	src    AdapterSource
	load   adapterLoader
	budget int64
	wake   func()
	log    *slog.Logger
	m      *runtimeMetrics

	sem chan struct{}

	loads  atomic.Uint64
	loadNs atomic.Int64

	mu       sync.Mutex
	used     int64
	entries  map[string]*hostEntry
	lru      *list.List      // of *hostEntry, most recent first
	onDevice map[string]bool // adapters in an engine slot, for AdapterTier
	wg       sync.WaitGroup

	tracker useTracker // src, when it drops adapters it holds on disk
	untrack func()
}

func newHostCache(ctx context.Context, src AdapterSource, load adapterLoader, budget int64, loaders int, wake func(), log *slog.Logger, m *runtimeMetrics) *hostCache {
	c := &hostCache{
		ctx: ctx, src: src, load: load, budget: budget, wake: wake, log: log, m: m,
		sem:      make(chan struct{}, max(1, loaders)),
		entries:  map[string]*hostEntry{},
		lru:      list.New(),
		onDevice: map[string]bool{},
		untrack:  func() {},
	}
	if t, ok := src.(useTracker); ok {
		c.tracker = t
		c.untrack = t.track(c.inUse)
	}
	return c
}

// inUse reports whether the runtime holds an adapter: loading it, in host
// memory, wanted by queued requests (they hold its entry) or in an engine
// slot. The source keeps such an adapter's files.
func (c *hostCache) inUse(sha string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[sha] != nil || c.onDevice[sha]
}

// tier says where an adapter is.
func (c *hostCache) tier(sha string) nozzle.Tier {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.onDevice[sha] {
		return nozzle.TierDevice
	}
	if e := c.entries[sha]; e != nil && e.loaded() {
		return nozzle.TierHost
	}
	return nozzle.TierDisk
}

func (c *hostCache) setOnDevice(sha string, on bool) {
	c.mu.Lock()
	if on {
		c.onDevice[sha] = true
	} else {
		delete(c.onDevice, sha)
	}
	c.mu.Unlock()
}

// prefetch starts bringing an adapter into host memory, unless it is there
// or on its way, and returns its entry. The caller waits for it: the entry
// is not evicted until the caller calls unwait.
func (c *hostCache) prefetch(sha string) *hostEntry {
	if c.tracker != nil {
		c.tracker.used(sha) // before c.mu: the source calls inUse with its lock held
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[sha]; e != nil {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		e.waiters++
		return e
	}
	e := &hostEntry{sha: sha, ready: make(chan struct{}), waiters: 1}
	c.entries[sha] = e
	c.wg.Add(1)
	go c.fill(e)
	return e
}

func (c *hostCache) fill(e *hostEntry) {
	defer c.wg.Done()
	select {
	case c.sem <- struct{}{}:
	case <-c.ctx.Done():
		c.finish(e, nil, 0, nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is shutting down."))
		return
	}
	t0 := time.Now()
	a, err := c.loadFromSource(e.sha)
	d := time.Since(t0)
	<-c.sem
	c.finish(e, a, d, err)
}

func (c *hostCache) loadFromSource(sha string) (hostAdapter, error) {
	if c.src == nil {
		// A runtime set up without a source (no gateway_url): another
		// runtime may have one, so the gateway may try it.
		return nil, nozzle.Errorf(nozzle.EUNAVAILABLE, "This runtime has no adapter source to load adapters from.").
			WithReason("no_adapter_source")
	}
	dir, err := c.src.AdapterDir(c.ctx, sha)
	if err != nil {
		return nil, err
	}
	a, err := c.load(dir)
	if err != nil {
		// The files may have gone between AdapterDir and the load (the
		// adapter was deleted meanwhile): that is the source's not-found,
		// not an internal error.
		if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
			return nil, nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", shortSHA(sha)).WithReason("model_not_found")
		}
		if nozzle.AsError(err) != nil {
			return nil, err
		}
		return nil, nozzle.Errorf(nozzle.EINTERNAL, "Internal error.").Wrap(fmt.Errorf("load adapter %s: %w", shortSHA(sha), err))
	}
	return a, nil
}

func (c *hostCache) finish(e *hostEntry, a hostAdapter, d time.Duration, err error) {
	c.mu.Lock()
	if err != nil {
		e.err = err
		// Forget failures so that a later request tries again.
		if c.entries[e.sha] == e {
			delete(c.entries, e.sha)
		}
		close(e.ready)
		c.mu.Unlock()
		if nozzle.ErrorCode(err) == nozzle.EINTERNAL {
			c.log.Error("adapter load failed", "sha256", e.sha, "err", err)
		}
		c.wake()
		return
	}
	e.a, e.size, e.loadDur = a, a.SizeBytes(), d
	if e.dropped {
		// The adapter was deleted while it loaded, and nobody waits for it.
		close(e.ready)
		c.mu.Unlock()
		a.Close()
		return
	}
	e.elem = c.lru.PushFront(e)
	c.used += e.size
	close(e.ready)
	evicted := c.evictLocked(e)
	c.mu.Unlock()
	c.loads.Add(1)
	c.loadNs.Add(int64(d))
	c.m.adapterLoads.With(string(nozzle.TierHost)).Inc()
	c.m.adapterLoadSeconds.With(string(nozzle.TierHost)).Observe(d.Seconds())
	for _, x := range evicted {
		x.a.Close()
	}
	c.wake()
}

// unwait says that a caller of prefetch no longer waits for e.
func (c *hostCache) unwait(e *hostEntry) {
	c.mu.Lock()
	e.waiters--
	c.mu.Unlock()
}

// evictLocked drops least recently used entries, other than keep, until
// the cache fits its budget. It returns entries to close. Entries that
// queued requests wait for stay: the budget gives way to them rather than
// load an adapter twice.
func (c *hostCache) evictLocked(keep *hostEntry) []*hostEntry {
	var out []*hostEntry
	for el := c.lru.Back(); el != nil && c.used > c.budget; {
		e := el.Value.(*hostEntry)
		prev := el.Prev()
		if e != keep && e.waiters == 0 && e.refs == 0 {
			c.lru.Remove(el)
			e.elem = nil
			e.evicted = true
			c.used -= e.size
			delete(c.entries, e.sha)
			c.m.adapterEvictions.With(string(nozzle.TierHost)).Inc()
			out = append(out, e)
		}
		el = prev
	}
	return out
}

// acquire returns a loaded adapter and holds it until release, so that it
// is not closed while the engine copies it. It reports false when e was
// evicted.
func (c *hostCache) acquire(e *hostEntry) (hostAdapter, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.evicted {
		return nil, false
	}
	e.refs++
	if e.elem != nil {
		c.lru.MoveToFront(e.elem)
	}
	return e.a, true
}

func (c *hostCache) release(e *hostEntry) {
	c.mu.Lock()
	e.refs--
	closeIt := e.refs == 0 && e.evicted
	c.mu.Unlock()
	if closeIt {
		e.a.Close()
	}
}

// drop takes a deleted adapter out of host memory and, once no runtime
// holds it, has the source delete its local files. It reports false, doing
// nothing, while a request waits for the entry (one about to be queued: the
// scheduler knows of no sequence using it) or the engine copies it; the
// caller tries again later. The scheduler calls it once the adapter is out
// of every slot.
func (c *hostCache) drop(sha string) bool {
	c.mu.Lock()
	e := c.entries[sha]
	if e != nil && (e.waiters > 0 || e.refs > 0) {
		c.mu.Unlock()
		return false
	}
	var closeIt hostAdapter
	if e != nil {
		delete(c.entries, sha)
		if e.elem != nil {
			c.lru.Remove(e.elem)
			e.elem = nil
			e.evicted = true
			c.used -= e.size
			closeIt = e.a
		} else {
			e.dropped = true // still loading (a failed load leaves entries)
		}
		c.m.adapterDrops.With(string(nozzle.TierHost)).Inc()
	}
	c.mu.Unlock()
	if closeIt != nil {
		closeIt.Close()
	}
	if c.tracker != nil {
		// Off the engine goroutine: deleting files takes disk time.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.tracker.drop(sha)
		}()
	}
	return true
}

// residentBytes returns the host memory in use.
func (c *hostCache) residentBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// close waits for loads in flight and frees every entry.
func (c *hostCache) close() {
	c.wg.Wait()
	c.untrack()
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*hostEntry)
		if e.refs == 0 {
			e.a.Close()
		}
	}
	c.lru.Init()
	c.entries = map[string]*hostEntry{}
	c.used = 0
}

// slot is one engine adapter slot, as the scheduler tracks it.
type slot struct {
	sha      string // "" when empty
	pins     int    // running sequences using it
	lastUse  uint64 // scheduler tick of the last pin
	draining bool   // no new sequence may pin it; it goes to a waiting adapter
	loadedAt time.Time
	loadDur  time.Duration
}

// slotTable tracks the engine's adapter slots. Engine goroutine only.
type slotTable struct {
	slots []slot
	where map[string]int // sha → slot index
}

func newSlotTable(n int) *slotTable {
	return &slotTable{slots: make([]slot, n), where: map[string]int{}}
}

func (t *slotTable) lookup(sha string) (int, bool) {
	i, ok := t.where[sha]
	return i, ok
}

// victim returns the slot to load a new adapter into: an empty one, else
// the least recently used slot that no running sequence uses, draining
// slots first. It returns -1 when every slot is pinned.
func (t *slotTable) victim() int {
	best := -1
	for i := range t.slots {
		s := &t.slots[i]
		if s.sha == "" {
			return i
		}
		if s.pins > 0 {
			continue
		}
		if best < 0 || (s.draining && !t.slots[best].draining) ||
			(s.draining == t.slots[best].draining && s.lastUse < t.slots[best].lastUse) {
			best = i
		}
	}
	return best
}

// drainCandidate returns the pinned slot to drain for a waiting adapter:
// the one with the fewest pins, least recently used on ties, or -1.
func (t *slotTable) drainCandidate() int {
	best := -1
	for i := range t.slots {
		s := &t.slots[i]
		if s.draining || s.sha == "" {
			continue
		}
		if best < 0 || s.pins < t.slots[best].pins ||
			(s.pins == t.slots[best].pins && s.lastUse < t.slots[best].lastUse) {
			best = i
		}
	}
	return best
}

func (t *slotTable) draining() int {
	n := 0
	for i := range t.slots {
		if t.slots[i].draining {
			n++
		}
	}
	return n
}

func (t *slotTable) used() int {
	n := 0
	for i := range t.slots {
		if t.slots[i].sha != "" {
			n++
		}
	}
	return n
}

func (t *slotTable) pinned() int {
	n := 0
	for i := range t.slots {
		if t.slots[i].pins > 0 {
			n++
		}
	}
	return n
}

func shortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

var errEvicted = errors.New("adapter evicted from host memory")
