package billing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// The usage journal. A bbolt commit rewrites every page it touches (the
// event, the request-id index, the rollups and their branch pages) and
// syncs twice; paid per request, that is most of a gateway's work. So
// RecordUsage acknowledges an event once it is appended to the journal
// and fdatasynced — one write and one sync for every event that queued
// meanwhile (group commit) — and the ledger files journaled events into
// the bbolt file in the background, many per transaction.
//
// Durability and exactly-once: an acknowledged event is in the journal
// until a bbolt transaction holding it has committed. Filing is
// idempotent (an event whose request id is stored is skipped), so after a
// crash Open simply files whatever the journal holds and empties it.
// RecordUsage checks both the journaled and the filed events for its
// request id, so a request id is journaled at most once.
//
// Consistency: a read of usage (reports, the outbox, checks, backups)
// first files the journal (viewUsage); every write transaction does too.
// Usage looks a request id up in the journal as well, and ReserveBudget
// adds the journaled charges of the month.
//
// Two files take turns: appends go to the current one; filing makes the
// other current, files every journaled event and then empties the file it
// left, which by then holds only filed events.
//
// The files are written in place, never truncated: each is created at
// journalPrealloc bytes of zeros, and emptying one starts it over at
// offset 0 under a new generation. An fdatasync then flushes data blocks
// only — a file that grew or shrank would make every sync commit the file
// system's metadata journal too, and wait behind its other commits. A
// record carries its file's generation, so the records of an earlier
// generation after the current ones are not read as current.

const (
	// journalFileEvery is how long the first journaled event waits at most
	// before it is filed; journalFileBatch events are filed at once.
	journalFileEvery = 20 * time.Millisecond
	journalFileBatch = 512
	// journalMaxRecord bounds one record: the largest event, with its
	// stored response and ids, fits with room to spare.
	journalMaxRecord = maxResponseLen + 1<<16
	// journalHeader is the length of the payload, a CRC-32C of the
	// generation and the payload, and the generation: 4 bytes each,
	// little-endian.
	journalHeader = 12
	// journalPrealloc is each file's size when created: filing every 20 ms
	// keeps far less than this pending. A file may grow past it.
	journalPrealloc = 1 << 20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

type journal struct {
	files [2]*os.File
	size  [2]int64  // bytes appended this generation; changed under wmu and mu
	gen   [2]uint32 // each file's generation
	cur   int       // the file appends go to; changed under wmu and mu

	// wmu is held by an append across its write and sync and by a switch
	// of files, so that a switch never misses an event written to the
	// file it leaves. Taken before mu.
	wmu sync.Mutex
	// mu guards the journaled events.
	mu      sync.Mutex
	pending []*nozzle.UsageEvent          // journaled, not yet filed, in order
	byID    map[string]*nozzle.UsageEvent // pending by request id
	month   map[string]*pendingCharges    // by monthKey
	n       atomic.Int64                  // len(pending)

	appends group[*jop]
	buf     []byte // the append leader's
	scratch []byte

	failing atomic.Bool // the last filing failed

	sync func(*os.File) error // fdatasync, or fdatasyncHoldingP

	kick chan struct{} // the first event is pending
	full chan struct{} // journalFileBatch events are pending
}

// pendingCharges are a tenant's journaled charges of a month.
type pendingCharges struct {
	usd    float64
	events int
}

// jop is one RecordUsage in the journal's group commit.
type jop struct {
	ev   *nozzle.UsageEvent // the event; the stored one when dup
	dup  bool
	twin *jop // an earlier op of the same batch with the same request id
	err  error
	done chan error
}

func (o *jop) doneCh() chan error { return o.done }

// Files returns the files of the ledger at ledgerPath: the bbolt file and
// its usage journal.
func Files(ledgerPath string) []string {
	j := journalPaths(ledgerPath)
	return []string{ledgerPath, j[0], j[1]}
}

func journalPaths(ledgerPath string) [2]string {
	return [2]string{ledgerPath + ".journal.0", ledgerPath + ".journal.1"}
}

// openJournal opens (creating) the journal files of the ledger at
// ledgerPath and returns the events they hold, oldest file first. A torn
// or damaged record ends a file: it and what follows it were never
// acknowledged.
func openJournal(ledgerPath string, maxBatch int) (*journal, []*nozzle.UsageEvent, error) {
	j := &journal{
		sync:    fdatasync,
		byID:    map[string]*nozzle.UsageEvent{},
		month:   map[string]*pendingCharges{},
		appends: group[*jop]{max: maxBatch},
		kick:    make(chan struct{}, 1),
		full:    make(chan struct{}, 1),
	}
	var found [2][]*nozzle.UsageEvent
	for i, p := range journalPaths(ledgerPath) {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			j.close()
			return nil, nil, fmt.Errorf("open usage journal: %w", err)
		}
		j.files[i] = f
		b, err := io.ReadAll(f)
		if err != nil {
			j.close()
			return nil, nil, fmt.Errorf("read usage journal %s: %w", p, err)
		}
		found[i], _, _ = decodeJournal(b)
		// A random first generation: records an earlier run left behind
		// the current ones are never of the current generation.
		j.gen[i] = rand.Uint32()
		if len(b) < journalPrealloc {
			if _, err := f.WriteAt(make([]byte, journalPrealloc-len(b)), int64(len(b))); err != nil {
				j.close()
				return nil, nil, fmt.Errorf("size usage journal %s: %w", p, err)
			}
		}
		if err := f.Sync(); err != nil {
			j.close()
			return nil, nil, fmt.Errorf("sync usage journal %s: %w", p, err)
		}
	}
	if err := syncDir(filepath.Dir(ledgerPath)); err != nil {
		j.close()
		return nil, nil, err
	}
	// The file whose events are older was filled first.
	if len(found[0]) > 0 && len(found[1]) > 0 && found[1][0].Time.Before(found[0][0].Time) {
		found[0], found[1] = found[1], found[0]
	}
	return j, append(found[0], found[1]...), nil
}

// reset starts file i over, empty, under a new generation. Not synced:
// should the reset be lost, the file's events are filed again, and
// skipped as stored.
func (j *journal) reset(i int) error {
	j.gen[i]++
	if _, err := j.files[i].WriteAt(make([]byte, journalHeader), 0); err != nil {
		return fmt.Errorf("empty usage journal: %w", err)
	}
	return nil
}

// empty starts both files over once their events are filed.
func (j *journal) empty() error {
	for i := range j.files {
		if err := j.reset(i); err != nil {
			return err
		}
		j.size[i] = 0
	}
	return nil
}

func (j *journal) close() {
	for _, f := range j.files {
		if f != nil {
			f.Close()
		}
	}
}

// appendRecord appends ev's journal record of generation gen to b,
// encoding it in scratch, and returns both.
func appendRecord(b, scratch []byte, gen uint32, ev *nozzle.UsageEvent) ([]byte, []byte) {
	var g [4]byte
	binary.LittleEndian.PutUint32(g[:], gen)
	scratch = encodeEvent(scratch, ev)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(scratch)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Update(crc32.Checksum(g[:], crc32c), crc32c, scratch))
	b = append(b, g[:]...)
	return append(b, scratch...), scratch
}

// decodeJournal decodes the records of b up to the first empty, torn or
// damaged one or one of another generation than the first, and returns
// the events, the length of the records read and their generation.
func decodeJournal(b []byte) (evs []*nozzle.UsageEvent, good int, gen uint32) {
	for len(b)-good >= journalHeader {
		n := int(binary.LittleEndian.Uint32(b[good:]))
		sum := binary.LittleEndian.Uint32(b[good+4:])
		g := binary.LittleEndian.Uint32(b[good+8:])
		if n == 0 || n > journalMaxRecord || n > len(b)-good-journalHeader || (good > 0 && g != gen) {
			break
		}
		payload := b[good+journalHeader : good+journalHeader+n]
		if crc32.Update(crc32.Checksum(b[good+8:good+12], crc32c), crc32c, payload) != sum {
			break
		}
		ev, err := decodeEvent(payload)
		if err != nil || validateEvent(ev) != nil {
			break
		}
		evs = append(evs, ev)
		gen = g
		good += journalHeader + n
	}
	return evs, good, gen
}

// pendingEvent returns the journaled event of a request, if any.
func (j *journal) pendingEvent(requestID string) *nozzle.UsageEvent {
	if j.n.Load() == 0 {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if ev := j.byID[requestID]; ev != nil {
		c := *ev
		return &c
	}
	return nil
}

// monthCharges returns the journaled charges under a month key.
func (j *journal) monthCharges(key []byte) float64 {
	if j.n.Load() == 0 {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if m := j.month[string(key)]; m != nil {
		return m.usd
	}
	return 0
}

// appendUsage journals a batch of RecordUsage calls: it answers those
// whose request id is journaled or filed already from the stored event,
// prices the others, appends them in one write, syncs, and only then
// makes them visible and answers.
func (l *Ledger) appendUsage(batch []*jop) {
	j := l.j
	t0 := time.Now()
	fresh := make([]*jop, 0, len(batch))
	first := make(map[string]*jop, len(batch))
	j.mu.Lock()
	for _, o := range batch {
		id := o.ev.RequestID
		if ev := j.byID[id]; ev != nil {
			c := *ev
			o.ev, o.dup = &c, true
		} else if f := first[id]; f != nil {
			o.twin = f
		} else {
			first[id] = o
			fresh = append(fresh, o)
		}
	}
	j.mu.Unlock()

	// Price histories read below are cached under the generation current
	// before the read began (see authCache).
	gen := l.auth.gen.Load()
	err := l.db.View(func(tx *bolt.Tx) error {
		reqids, events := tx.Bucket(bRequestIDs), tx.Bucket(bEvents)
		for _, o := range fresh {
			ev := o.ev
			stored, err := storedEvent(reqids, events, ev.RequestID)
			if err != nil {
				return err
			}
			if stored != nil {
				o.ev, o.dup = stored, true
				continue
			}
			if !l.auth.knowsTenant(ev.TenantID) && tx.Bucket(bTenants).Get([]byte(ev.TenantID)) == nil {
				o.err = nozzle.Errorf(nozzle.EINVALID, "Usage event names unknown tenant %q.", ev.TenantID).WithParam("tenant_id")
				continue
			}
			ev.ChargeUSD = 0
			if ev.Status != nozzle.UsageFailed {
				hist, _, ok := l.auth.priceHistory(ev.TenantID)
				if !ok {
					var err error
					if hist, err = priceHistory(tx, ev.TenantID); err != nil {
						return err
					}
					l.auth.putPrices(gen, ev.TenantID, hist)
				}
				ev.ChargeUSD = priceAt(hist, l.defPrice, ev.Time).Charge(ev.PromptTokens, ev.CompletionTokens)
			}
		}
		return nil
	})
	if err == nil {
		err = l.journalWrite(fresh)
	}
	if err != nil {
		err = fmt.Errorf("record usage: %w", err)
		for _, o := range fresh {
			if !o.dup && o.err == nil {
				o.err = err
			}
		}
	}
	for _, o := range batch {
		if f := o.twin; f != nil {
			if o.err = f.err; o.err == nil {
				c := *f.ev
				o.ev, o.dup = &c, true
			}
		}
		o.done <- o.err
	}
	l.met.journalSeconds.Observe(time.Since(t0).Seconds())
	l.met.journalBatch.Observe(float64(len(batch)))
}

// journalWrite appends the new events of ops, syncs, and makes them
// pending.
func (l *Ledger) journalWrite(ops []*jop) error {
	j := l.j
	// Under wmu: the records carry the generation of the file they go to.
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.buf = j.buf[:0]
	var add []*nozzle.UsageEvent
	for _, o := range ops {
		if o.dup || o.err != nil {
			continue
		}
		j.buf, j.scratch = appendRecord(j.buf, j.scratch, j.gen[j.cur], o.ev)
		add = append(add, o.ev)
	}
	if len(add) == 0 {
		return nil
	}
	f, at := j.files[j.cur], j.size[j.cur]
	_, err := f.WriteAt(j.buf, at)
	if err == nil {
		err = j.sync(f)
	}
	if err != nil {
		// Nothing was acknowledged: end the file before what may have
		// been written (the next append overwrites it anyway).
		if _, werr := f.WriteAt(make([]byte, journalHeader), at); werr != nil {
			l.log.Error("usage journal: cannot cut a failed append", "err", werr)
		}
		return fmt.Errorf("usage journal: %w", err)
	}
	j.mu.Lock()
	j.size[j.cur] += int64(len(j.buf))
	was := len(j.pending)
	for _, ev := range add {
		j.pending = append(j.pending, ev)
		j.byID[ev.RequestID] = ev
		if ev.ChargeUSD != 0 {
			k := string(monthKey(ev.TenantID, monthOf(ev.Time)))
			m := j.month[k]
			if m == nil {
				m = &pendingCharges{}
				j.month[k] = m
			}
			m.usd += ev.ChargeUSD
			m.events++
		}
	}
	now := len(j.pending)
	j.n.Store(int64(now))
	j.mu.Unlock()
	if was == 0 {
		notify(j.kick)
	}
	if was < journalFileBatch && now >= journalFileBatch {
		notify(j.full)
	}
	return nil
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// fileJournal files every journaled event into the bbolt file in one
// transaction. It runs inside a write's commit, so it is the only bbolt
// writer. On failure the events stay journaled, for the next try.
func (l *Ledger) fileJournal() {
	j := l.j
	j.wmu.Lock()
	j.mu.Lock()
	snap := j.pending[:len(j.pending):len(j.pending)]
	if j.size[j.cur^1] == 0 {
		j.cur ^= 1 // the file left holds only events of snap
	}
	left := j.cur ^ 1
	j.mu.Unlock()
	j.wmu.Unlock()
	if len(snap) == 0 {
		return
	}
	if err := l.db.Update(func(tx *bolt.Tx) error { return l.fileEvents(tx, snap) }); err != nil {
		if !j.failing.Swap(true) {
			l.log.Error("usage journal: filing failed; the events stay journaled, and filing is retried every second", "events", len(snap), "err", err)
		}
		return
	}
	if j.failing.Swap(false) {
		l.log.Info("usage journal: filing works again", "events", len(snap))
	}
	j.mu.Lock()
	for _, ev := range snap {
		delete(j.byID, ev.RequestID)
		if ev.ChargeUSD != 0 {
			k := string(monthKey(ev.TenantID, monthOf(ev.Time)))
			m := j.month[k]
			m.usd -= ev.ChargeUSD
			if m.events--; m.events == 0 {
				delete(j.month, k)
			}
		}
	}
	n := copy(j.pending, j.pending[len(snap):])
	clear(j.pending[n:])
	j.pending = j.pending[:n]
	j.n.Store(int64(n))
	j.mu.Unlock()
	// Appends go to the other file until the next fileJournal, which
	// this one precedes: the file left is ours to empty.
	if j.size[left] > 0 {
		if err := j.reset(left); err != nil {
			l.log.Error("usage journal: cannot empty a filed journal", "err", err)
			return
		}
		j.mu.Lock()
		j.size[left] = 0
		j.mu.Unlock()
	}
}

// fileEvents files journaled (priced) events in tx; those stored already
// are skipped.
func (l *Ledger) fileEvents(tx *bolt.Tx, evs []*nozzle.UsageEvent) error {
	w := newWtx(l, tx)
	for _, ev := range evs {
		if _, _, err := w.recordEvent(ev, true); err != nil {
			if nozzle.AsError(err) != nil {
				// Checked when journaled; tenants are never removed.
				l.log.Error("usage journal: event cannot be filed", "request_id", ev.RequestID, "err", err)
				continue
			}
			return err
		}
	}
	return w.flush()
}

// fileLoop files the journal in the background: journalFileEvery after an
// event is journaled, or at once when journalFileBatch are pending.
func (l *Ledger) fileLoop() {
	defer l.wwg.Done()
	j := l.j
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		if j.n.Load() == 0 {
			select {
			case <-l.wctx.Done():
				return
			case <-j.kick:
				continue
			}
		}
		if wait := journalFileEvery; j.n.Load() < journalFileBatch || j.failing.Load() {
			if j.failing.Load() {
				wait = time.Second
			}
			t.Reset(wait)
			select {
			case <-l.wctx.Done():
				t.Stop()
				return
			case <-j.full:
			case <-t.C:
			}
			t.Stop()
		}
		// Errors are fileJournal's to report.
		_ = l.write(l.wctx, nil)
	}
}

// fileJournalNow files the journal before a read that must see every
// acknowledged event.
func (l *Ledger) fileJournalNow() error {
	if l.j.n.Load() == 0 {
		return nil
	}
	err := l.write(context.Background(), nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// replayJournal files the events a journal held when the ledger was opened
// and empties it.
func (l *Ledger) replayJournal(evs []*nozzle.UsageEvent) error {
	if len(evs) > 0 {
		slices.SortStableFunc(evs, func(a, b *nozzle.UsageEvent) int { return a.Time.Compare(b.Time) })
		if err := l.db.Update(func(tx *bolt.Tx) error { return l.fileEvents(tx, evs) }); err != nil {
			return fmt.Errorf("file usage journal: %w", err)
		}
		l.log.Info("filed the usage journal left by the last run", "events", len(evs))
	}
	return l.j.empty()
}

// syncDir makes the creation of files in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
