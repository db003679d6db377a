package runtime

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
)

// touchEvery is how stale an adapter folder's modification time may get
// while it is used: it is the adapter's last use after a restart.
const touchEvery = time.Minute

// useTracker is an AdapterSource that drops adapters from local disk (a
// RemoteSource with a cache budget). The runtime tells it which adapters
// it holds, so that it never drops one in use, and when each is used.
type useTracker interface {
	// track registers inUse, which reports whether the runtime holds an
	// adapter; untrack removes it. inUse is called with the source's lock
	// held and must not call back into the source.
	track(inUse func(sha string) bool) (untrack func())
	// used says that a request asked for the adapter.
	used(sha string)
	// drop says that the adapter was deleted and that the runtime let go
	// of it: its files go now unless another tracked runtime holds them.
	drop(sha string)
}

// diskCache is the bookkeeping of RemoteSource's cache folder: the size
// and last use of every adapter in it, within a byte budget. Adapters
// leave it least recently used first, when a fetch takes it over budget,
// and never while a tracked runtime holds them. A removal renames the
// adapter's folder out of its content address under the lock, so a
// reader finds either the whole folder or none, and a fetch of the same
// adapter never meets a half-removed one.
type diskCache struct {
	dir    string
	budget int64 // 0: unlimited
	log    *slog.Logger
	now    func() time.Time

	bytes     metrics.Gauge
	evictions metrics.Counter
	drops     metrics.Counter

	mu          sync.Mutex
	total       int64
	entries     map[string]*diskEntry
	lru         *list.List // of *diskEntry, most recent first
	trackers    map[uint64]func(string) bool
	nextTracker uint64
	overLogged  time.Time

	removals atomic.Uint64 // names removal folders
}

type diskEntry struct {
	sha     string
	size    int64
	touched time.Time // the modification time last written to its folder
	elem    *list.Element
}

// newDiskCache indexes the adapters already in dir, most recently
// modified first, and trims them to budget.
func newDiskCache(dir string, budget int64, log *slog.Logger, m *metrics.Registry) *diskCache {
	c := &diskCache{
		dir: dir, budget: max(0, budget), log: log, now: time.Now,
		bytes:     m.Gauge("nozzle_runtime_adapter_disk_cache_bytes", "Disk space held by adapters fetched from the gateway."),
		evictions: m.CounterVec("nozzle_runtime_adapter_evictions_total", "Adapters evicted from a tier.", "tier").With(string(nozzle.TierDisk)),
		drops:     m.CounterVec(adapterDropsName, adapterDropsHelp, "tier").With(string(nozzle.TierDisk)),
		entries:   map[string]*diskEntry{},
		lru:       list.New(),
		trackers:  map[uint64]func(string) bool{},
	}
	m.Gauge("nozzle_runtime_adapter_disk_cache_budget_bytes", "Disk budget of adapters fetched from the gateway (0: unlimited).").Set(float64(c.budget))
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("adapter cache folder unreadable; starting empty", "dir", dir, "err", err)
	}
	var found []*diskEntry
	for _, de := range ents {
		if !de.IsDir() || !isSHA256(de.Name()) {
			continue
		}
		if e, ok := scanAdapter(filepath.Join(dir, de.Name())); ok {
			e.sha = de.Name()
			found = append(found, e)
		}
	}
	slices.SortFunc(found, func(a, b *diskEntry) int { return a.touched.Compare(b.touched) })
	for _, e := range found {
		e.elem = c.lru.PushFront(e)
		c.entries[e.sha] = e
		c.total += e.size
	}
	c.mu.Lock()
	gone := c.evictLocked("")
	c.mu.Unlock()
	c.removeAll(gone)
	c.bytes.Set(float64(c.usedBytes()))
	return c
}

// scanAdapter returns the size and last use of a complete adapter folder.
func scanAdapter(path string) (*diskEntry, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, false
	}
	e := &diskEntry{touched: fi.ModTime()}
	for _, name := range adapterFiles {
		fi, err := os.Stat(filepath.Join(path, name))
		if err != nil || !fi.Mode().IsRegular() {
			return nil, false
		}
		e.size += fi.Size()
	}
	return e, true
}

// hit marks an adapter used and returns its entry, or nil when it is not
// in the cache.
func (c *diskCache) hit(sha string) *diskEntry {
	c.mu.Lock()
	e := c.entries[sha]
	if e == nil {
		c.mu.Unlock()
		return nil
	}
	c.lru.MoveToFront(e.elem)
	now := c.now()
	touch := now.Sub(e.touched) >= touchEvery
	if touch {
		e.touched = now
	}
	c.mu.Unlock()
	if touch {
		// The folder may have been evicted meanwhile: nothing to touch then.
		os.Chtimes(filepath.Join(c.dir, sha), now, now)
	}
	return e
}

// used implements useTracker.
func (c *diskCache) used(sha string) { c.hit(sha) }

// track implements useTracker.
func (c *diskCache) track(inUse func(string) bool) func() {
	c.mu.Lock()
	id := c.nextTracker
	c.nextTracker++
	c.trackers[id] = inUse
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.trackers, id)
		c.mu.Unlock()
	}
}

// drop implements useTracker: it deletes a deleted adapter's folder now,
// unless a tracked runtime holds the adapter (it then leaves by the budget,
// as any other).
func (c *diskCache) drop(sha string) {
	c.mu.Lock()
	e := c.entries[sha]
	if e == nil || c.inUseLocked(sha) {
		c.mu.Unlock()
		return
	}
	tmp := filepath.Join(c.dir, fmt.Sprintf(".remove-%s-%d", shortSHA(sha), c.removals.Add(1)))
	err := os.Rename(filepath.Join(c.dir, sha), tmp)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.mu.Unlock()
		c.log.Error("adapter cache: removing a deleted adapter failed", "sha256", sha, "err", err)
		return
	}
	c.dropLocked(e)
	used := c.total
	c.mu.Unlock()
	c.drops.Inc()
	c.bytes.Set(float64(used))
	if err == nil {
		c.removeAll([]string{tmp})
	}
}

// forget drops e, whose folder is gone from under the cache.
func (c *diskCache) forget(e *diskEntry) {
	c.mu.Lock()
	if c.entries[e.sha] == e {
		c.dropLocked(e)
	}
	used := c.total
	c.mu.Unlock()
	c.bytes.Set(float64(used))
}

// add records a fetched adapter of size bytes, now in its folder, and
// evicts least recently used adapters until the cache fits its budget.
// Adapters in use stay, even over budget.
func (c *diskCache) add(sha string, size int64) {
	now := c.now()
	c.mu.Lock()
	if e := c.entries[sha]; e != nil {
		c.lru.MoveToFront(e.elem)
	} else {
		e = &diskEntry{sha: sha, size: size, touched: now}
		e.elem = c.lru.PushFront(e)
		c.entries[sha] = e
		c.total += size
	}
	gone := c.evictLocked(sha)
	used, n := c.total, len(c.entries)
	logOver := c.budget > 0 && used > c.budget && now.Sub(c.overLogged) >= time.Minute
	if logOver {
		c.overLogged = now
	}
	c.mu.Unlock()
	c.removeAll(gone)
	c.bytes.Set(float64(used))
	if logOver {
		c.log.Warn("adapter disk cache is over its budget: the adapters left are in use",
			"cache_bytes", used, "budget_bytes", c.budget, "adapters", n)
	}
}

// evictLocked moves least recently used adapters other than keep out of
// their content address until the cache fits its budget, and returns the
// folders to delete. An adapter in use counts as used now.
func (c *diskCache) evictLocked(keep string) []string {
	if c.budget <= 0 {
		return nil
	}
	var gone []string
	for el, n := c.lru.Back(), c.lru.Len(); el != nil && n > 0 && c.total > c.budget; n-- {
		e := el.Value.(*diskEntry)
		prev := el.Prev()
		switch {
		case e.sha == keep:
		case c.inUseLocked(e.sha):
			c.lru.MoveToFront(el)
		default:
			tmp := filepath.Join(c.dir, fmt.Sprintf(".remove-%s-%d", shortSHA(e.sha), c.removals.Add(1)))
			err := os.Rename(filepath.Join(c.dir, e.sha), tmp)
			switch {
			case err == nil:
				gone = append(gone, tmp)
			case errors.Is(err, fs.ErrNotExist):
			default:
				c.log.Error("adapter cache eviction failed", "sha256", e.sha, "err", err)
				el = prev
				continue
			}
			c.dropLocked(e)
			c.evictions.Inc()
		}
		el = prev
	}
	return gone
}

func (c *diskCache) dropLocked(e *diskEntry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.sha)
	c.total -= e.size
}

func (c *diskCache) inUseLocked(sha string) bool {
	for _, inUse := range c.trackers {
		if inUse(sha) {
			return true
		}
	}
	return false
}

// removeAll deletes evicted folders, already out of their addresses.
func (c *diskCache) removeAll(paths []string) {
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			c.log.Error("adapter cache: removing an evicted adapter failed", "path", p, "err", err)
		}
	}
}

func (c *diskCache) usedBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
