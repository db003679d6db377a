package billing

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
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
// Checkpoints: CheckpointUsage journals a running request's usage so far
// the same way (a record of its own kind, acknowledged after the same
// fdatasync), and filing keeps the latest of each request in bucket
// checkpoints. The request's final event ends its checkpoint: an event
// ends the one under its own request id, and one under another id (an
// idempotent request's attempt: UsageEvent.CheckpointID) in its record,
// or in an end record of its own when the event is a duplicate; filing
// then deletes the filed checkpoint. Open files the journal and then
// turns every checkpoint left in the bucket into an interrupted usage
// event, in one transaction. A file that held checkpoint records is
// emptied with an fdatasync (not left to the page cache, as other
// resets are): a checkpoint record that came back after a crash, its
// end's file emptied for good, would be charged beside the event that
// ended it.
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
	// idempotent answer, its stored response (body and input) and ids,
	// fits with room to spare.
	journalMaxRecord = 3*maxResponseLen + 1<<16
	// journalHeader is the length of the payload, a CRC-32C of the
	// generation and the payload, and the generation: 4 bytes each,
	// little-endian.
	journalHeader = 12
	// journalPrealloc is each file's size when created: filing every 20 ms
	// keeps far less than this pending. A file may grow past it.
	journalPrealloc = 1 << 20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// Journal record payloads. A usage event's is its value encoding, whose
// first byte is its format (1 or 2); the other kinds begin with a byte no
// value format uses.
const (
	// recCheckpoint: a running request's usage so far (CheckpointUsage),
	// then its value encoding (status interrupted, not priced).
	recCheckpoint = 0x81
	// recEnd: the end of the checkpoint of another request id than the
	// event's: that id, then the event's value encoding, or nothing when
	// the event was recorded already.
	recEnd = 0x82
	// recResponse: a stored response (nozzle.UsageEvent.StoredResponse),
	// then the record of its event (an event's value encoding, or a recEnd
	// record with one), filed in one transaction with it.
	recResponse = 0x83
	// recConversation: a response's items to append to a conversation
	// (nozzle.UsageEvent.ConversationAppend), then the record of its event
	// (an event's value encoding, a recEnd record with one, or a
	// recResponse record), filed in one transaction with it.
	recConversation = 0x84
)

// jrec is one journal record.
type jrec struct {
	ev   *nozzle.UsageEvent // the event, or the checkpoint; nil for an end alone
	ckpt bool               // ev is a checkpoint
	ends string             // a checkpoint this record ends besides ev's own request id's
}

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
	// byAttempt holds the pending events by attempt id (AttemptID).
	byAttempt map[string]*nozzle.UsageEvent
	month     map[string]*pendingCharges // by monthKey
	n         atomic.Int64               // len(pending)

	appends group[*jop]
	buf     []byte // the append leader's
	scratch []byte

	// Checkpoints, under mu: those journaled since filing last took them
	// (the latest of each request), the request ids checkpointed in this
	// run and not ended, and the ended ones whose filed checkpoint filing
	// is to delete. nc is len(cps) + len(ends).
	cps  map[string]*nozzle.UsageEvent
	live map[string]struct{}
	ends []string
	nc   atomic.Int64
	// ckptIn says file i holds checkpoint records of its generation, so
	// that emptying it is synced.
	ckptIn [2]atomic.Bool

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

// jop is one RecordUsage or CheckpointUsage in the journal's group commit.
type jop struct {
	ev   *nozzle.UsageEvent // the event; the stored one when dup
	ckpt bool               // ev is a checkpoint; dup: dropped, the request's event is recorded
	ends string             // the caller's ev.CheckpointID (ev may become the stored event)
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
// ledgerPath and returns the records they hold, oldest file first. A torn
// or damaged record ends a file: it and what follows it were never
// acknowledged.
func openJournal(ledgerPath string, maxBatch int) (*journal, []jrec, error) {
	j := &journal{
		sync:      fdatasync,
		byID:      map[string]*nozzle.UsageEvent{},
		byAttempt: map[string]*nozzle.UsageEvent{},
		month:     map[string]*pendingCharges{},
		cps:       map[string]*nozzle.UsageEvent{},
		live:      map[string]struct{}{},
		appends:   group[*jop]{max: maxBatch},
		kick:      make(chan struct{}, 1),
		full:      make(chan struct{}, 1),
	}
	var found [2][]jrec
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
		j.ckptIn[i].Store(slices.ContainsFunc(found[i], func(r jrec) bool { return r.ckpt }))
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
	if t0, t1 := firstTime(found[0]), firstTime(found[1]); !t0.IsZero() && !t1.IsZero() && t1.Before(t0) {
		found[0], found[1] = found[1], found[0]
	}
	return j, append(found[0], found[1]...), nil
}

// firstTime is the time of the first record of recs with an event.
func firstTime(recs []jrec) time.Time {
	for _, r := range recs {
		if r.ev != nil {
			return r.ev.Time
		}
	}
	return time.Time{}
}

// reset starts file i over, empty, under a new generation. Not synced
// unless the file held checkpoint records: should the reset be lost, the
// file's events are filed again, and skipped as stored, but a checkpoint
// whose end is gone with another file would be charged again.
func (j *journal) reset(i int) error {
	j.gen[i]++
	if _, err := j.files[i].WriteAt(make([]byte, journalHeader), 0); err != nil {
		return fmt.Errorf("empty usage journal: %w", err)
	}
	if j.ckptIn[i].Load() {
		if err := j.sync(j.files[i]); err != nil {
			return fmt.Errorf("empty usage journal: %w", err)
		}
		j.ckptIn[i].Store(false)
	}
	return nil
}

// empty starts both files over once their records are filed, first (and
// synced) those that held checkpoints.
func (j *journal) empty() error {
	for _, ckpt := range []bool{true, false} {
		for i := range j.files {
			if j.ckptIn[i].Load() != ckpt {
				continue
			}
			if err := j.reset(i); err != nil {
				return err
			}
			j.size[i] = 0
		}
	}
	return nil
}

// pendingWork is how many journaled events, checkpoints and checkpoint
// ends filing has still to take.
func (j *journal) pendingWork() int64 { return j.n.Load() + j.nc.Load() }

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
	return appendJournalRecord(b, scratch, gen, jrec{ev: ev})
}

// appendJournalRecord appends r of generation gen to b, encoding its
// payload in scratch, and returns both.
func appendJournalRecord(b, scratch []byte, gen uint32, r jrec) ([]byte, []byte) {
	var g [4]byte
	binary.LittleEndian.PutUint32(g[:], gen)
	scratch = scratch[:0]
	if !r.ckpt && r.ev != nil && r.ev.ConversationAppend != nil {
		e := enc{b: append(scratch, recConversation)}
		encodeConvAppend(&e, r.ev.ConversationAppend)
		scratch = e.b
	}
	if !r.ckpt && r.ev != nil && r.ev.StoredResponse != nil {
		e := enc{b: append(scratch, recResponse)}
		encodeStoredResponse(&e, r.ev.StoredResponse)
		scratch = e.b
	}
	switch {
	case r.ckpt:
		f := byte(valueV2) // a checkpoint has no attempt id
		if r.ev.Batch {
			f = valueV6
		}
		scratch = appendEventAs(append(scratch[:0], recCheckpoint), r.ev, f)
	case r.ends != "":
		e := enc{b: append(scratch, recEnd)}
		e.str(r.ends)
		scratch = e.b
		if r.ev != nil {
			scratch = appendEventAs(scratch, r.ev, eventFormat(r.ev))
		}
	default:
		scratch = appendEventAs(scratch, r.ev, eventFormat(r.ev))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(scratch)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Update(crc32.Checksum(g[:], crc32c), crc32c, scratch))
	b = append(b, g[:]...)
	return append(b, scratch...), scratch
}

// decodeRecord decodes a journal record's payload.
func decodeRecord(p []byte) (jrec, error) {
	var r jrec
	if len(p) == 0 {
		return r, fmt.Errorf("decode journal record: %w", errCorrupt)
	}
	switch p[0] {
	case recConversation:
		d := dec{b: p[1:]}
		ca := decodeConvAppend(&d)
		if d.err != nil || len(d.b) == 0 || d.b[0] == recCheckpoint || d.b[0] == recConversation {
			return r, fmt.Errorf("decode conversation append: %w", errCorrupt)
		}
		r, err := decodeRecord(d.b)
		if err != nil {
			return r, err
		}
		if r.ev == nil || r.ckpt {
			return r, fmt.Errorf("decode conversation append: no event: %w", errCorrupt)
		}
		r.ev.ConversationAppend = ca
		if err := validateEvent(r.ev); err != nil {
			return r, fmt.Errorf("decode journal record: %w: %w", errCorrupt, err)
		}
		return r, nil
	case recResponse:
		d := dec{b: p[1:]}
		sr := decodeStoredResponse(&d)
		if d.err != nil || len(d.b) == 0 || d.b[0] == recCheckpoint || d.b[0] == recResponse || d.b[0] == recConversation {
			return r, fmt.Errorf("decode stored response: %w", errCorrupt)
		}
		r, err := decodeRecord(d.b)
		if err != nil {
			return r, err
		}
		if r.ev == nil {
			return r, fmt.Errorf("decode stored response: no event: %w", errCorrupt)
		}
		r.ev.StoredResponse = sr
		if err := validateEvent(r.ev); err != nil {
			return r, fmt.Errorf("decode journal record: %w: %w", errCorrupt, err)
		}
		return r, nil
	case recCheckpoint:
		r.ckpt = true
		p = p[1:]
		if len(p) == 0 {
			return r, fmt.Errorf("decode checkpoint: %w", errCorrupt)
		}
	case recEnd:
		d := dec{b: p[1:]}
		r.ends = d.str()
		if d.err != nil || r.ends == "" || len(r.ends) > maxIDLen {
			return r, fmt.Errorf("decode checkpoint end: %w", errCorrupt)
		}
		if p = d.b; len(p) == 0 {
			return r, nil
		}
	}
	ev, err := decodeEvent(p)
	if err != nil {
		return r, err
	}
	if err := validateEvent(ev); err != nil {
		return r, fmt.Errorf("decode journal record: %w: %w", errCorrupt, err)
	}
	if r.ckpt != (ev.Status == nozzle.UsageInterrupted) {
		return r, fmt.Errorf("decode journal record: status %s: %w", ev.Status, errCorrupt)
	}
	r.ev = ev
	return r, nil
}

// decodeJournal decodes the records of b up to the first empty, torn or
// damaged one or one of another generation than the first, and returns
// the records, the length of those read and their generation.
func decodeJournal(b []byte) (recs []jrec, good int, gen uint32) {
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
		r, err := decodeRecord(payload)
		if err != nil {
			break
		}
		recs = append(recs, r)
		gen = g
		good += journalHeader + n
	}
	return recs, good, gen
}

// pendingEvent returns the journaled event of a request, if any.
func (j *journal) pendingEvent(requestID string) *nozzle.UsageEvent {
	return j.lookup(requestID, false)
}

// pendingAttempt returns the journaled event whose attempt id is id, if
// any.
func (j *journal) pendingAttempt(id string) *nozzle.UsageEvent {
	return j.lookup(id, true)
}

// lookup returns a copy of the journaled event under id — its request
// id, or with attempt its attempt id — if any.
func (j *journal) lookup(id string, attempt bool) *nozzle.UsageEvent {
	if j.n.Load() == 0 {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	index := j.byID
	if attempt {
		index = j.byAttempt
	}
	if ev := index[id]; ev != nil {
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

// appendUsage journals a batch of RecordUsage and CheckpointUsage calls:
// it answers those whose request id is journaled or filed already from the
// stored event, prices the others, drops checkpoints of requests whose
// event is recorded (or in the batch), appends the rest in one write,
// syncs, and only then makes them visible and answers.
func (l *Ledger) appendUsage(batch []*jop) {
	j := l.j
	t0 := time.Now()
	fresh := make([]*jop, 0, len(batch))
	first := make(map[string]*jop, len(batch))
	attempts := map[string]bool{} // the batch's attempt ids
	var ckpts []*jop
	j.mu.Lock()
	for _, o := range batch {
		id := o.ev.RequestID
		if o.ckpt {
			if j.byID[id] != nil {
				o.dup = true
			} else {
				ckpts = append(ckpts, o)
			}
			continue
		}
		if ev := j.byID[id]; ev != nil {
			c := *ev
			o.ev, o.dup = &c, true
		} else if f := first[id]; f != nil {
			o.twin = f
		} else {
			first[id] = o
			fresh = append(fresh, o)
			// An attempt id another event holds already is left out.
			if a := o.ev.AttemptID; a != "" {
				if j.byID[a] != nil || j.byAttempt[a] != nil || attempts[a] {
					o.ev.AttemptID = ""
				}
				attempts[a] = true
			}
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
			if a := []byte(ev.AttemptID); len(a) > 0 && (reqids.Get(a) != nil || tx.Bucket(bAttemptIDs).Get(a) != nil) {
				ev.AttemptID = "" // another event holds it
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
				ev.ChargeUSD = priceAt(hist, l.defPrice, ev.Time).ChargeEvent(ev)
			}
		}
		for _, o := range ckpts {
			id := o.ev.RequestID
			if first[id] != nil || tx.Bucket(bRequestIDs).Get([]byte(id)) != nil {
				o.dup = true // the request's event ends it
				continue
			}
			if !l.auth.knowsTenant(o.ev.TenantID) && tx.Bucket(bTenants).Get([]byte(o.ev.TenantID)) == nil {
				o.err = nozzle.Errorf(nozzle.EINVALID, "Usage checkpoint names unknown tenant %q.", o.ev.TenantID).WithParam("tenant_id")
			}
		}
		return nil
	})
	if err == nil {
		err = l.journalWrite(batch)
	}
	if err != nil {
		err = fmt.Errorf("record usage: %w", err)
		for _, o := range batch {
			if !o.dup && o.err == nil && o.twin == nil {
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

// journalWrite appends the new events and checkpoints of ops and the ends
// of the checkpoints they end, syncs, and makes them pending.
func (l *Ledger) journalWrite(ops []*jop) error {
	j := l.j
	// Under wmu: the records carry the generation of the file they go to.
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.buf = j.buf[:0]
	gen := j.gen[j.cur]
	var add, cps []*nozzle.UsageEvent
	var ended []string
	j.mu.Lock()
	// ends reports whether id names a live checkpoint not ended yet, and
	// if so counts it ended.
	ends := func(id string) bool {
		if _, ok := j.live[id]; !ok || id == "" || slices.Contains(ended, id) {
			return false
		}
		ended = append(ended, id)
		return true
	}
	for _, o := range ops {
		switch {
		case o.err != nil:
		case o.ckpt:
			if !o.dup {
				j.buf, j.scratch = appendJournalRecord(j.buf, j.scratch, gen, jrec{ev: o.ev, ckpt: true})
				cps = append(cps, o.ev)
			}
		case o.dup || o.twin != nil:
			// Not journaled again; the checkpoints it names end all the same.
			for _, id := range []string{o.ev.RequestID, o.ends} {
				if ends(id) {
					j.buf, j.scratch = appendJournalRecord(j.buf, j.scratch, gen, jrec{ends: id})
				}
			}
		default:
			r := jrec{ev: o.ev}
			ends(o.ev.RequestID) // the record ends it: its own request id
			if c := o.ends; c != o.ev.RequestID && ends(c) {
				r.ends = c
			}
			j.buf, j.scratch = appendJournalRecord(j.buf, j.scratch, gen, r)
			add = append(add, o.ev)
		}
	}
	j.mu.Unlock()
	if len(j.buf) == 0 {
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
	if len(cps) > 0 {
		j.ckptIn[j.cur].Store(true)
	}
	j.mu.Lock()
	j.size[j.cur] += int64(len(j.buf))
	was := len(j.pending)
	wasWork := was + len(j.cps) + len(j.ends)
	for _, ev := range cps {
		j.cps[ev.RequestID] = ev
		j.live[ev.RequestID] = struct{}{}
	}
	for _, id := range ended {
		delete(j.live, id)
		delete(j.cps, id)
		j.ends = append(j.ends, id)
	}
	j.nc.Store(int64(len(j.cps) + len(j.ends)))
	for _, ev := range add {
		j.pending = append(j.pending, ev)
		j.byID[ev.RequestID] = ev
		if ev.AttemptID != "" {
			j.byAttempt[ev.AttemptID] = ev
		}
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
	nowWork := now + len(j.cps) + len(j.ends)
	j.mu.Unlock()
	if wasWork == 0 && nowWork > 0 {
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
// writer, or from Close once the writes are over: never beside another
// fileJournal, whose snapshot of the pending events shares their slice
// (a test of a ledger whose filer runs files with fileJournalNow). On
// failure the events stay journaled, for the next try.
func (l *Ledger) fileJournal() {
	j := l.j
	j.wmu.Lock()
	j.mu.Lock()
	snap := j.pending[:len(j.pending):len(j.pending)]
	cps := make([]*nozzle.UsageEvent, 0, len(j.cps))
	for _, ev := range j.cps {
		cps = append(cps, ev)
	}
	ends := j.ends[:len(j.ends):len(j.ends)]
	if j.size[j.cur^1] == 0 {
		j.cur ^= 1 // the file left holds only records of this snapshot
	}
	left := j.cur ^ 1
	j.mu.Unlock()
	j.wmu.Unlock()
	if len(snap) == 0 && len(cps) == 0 && len(ends) == 0 {
		return
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		if err := l.fileEvents(tx, snap); err != nil {
			return err
		}
		return fileCheckpoints(tx, cps, ends)
	})
	if err != nil {
		if !j.failing.Swap(true) {
			l.log.Error("usage journal: filing failed; the events stay journaled, and filing is retried every second", "events", len(snap), "checkpoints", len(cps), "err", err)
		}
		return
	}
	if j.failing.Swap(false) {
		l.log.Info("usage journal: filing works again", "events", len(snap))
	}
	j.mu.Lock()
	for _, ev := range cps {
		if j.cps[ev.RequestID] == ev {
			delete(j.cps, ev.RequestID)
		}
	}
	j.ends = j.ends[:copy(j.ends, j.ends[len(ends):])]
	j.nc.Store(int64(len(j.cps) + len(j.ends)))
	for _, ev := range snap {
		delete(j.byID, ev.RequestID)
		if ev.AttemptID != "" && j.byAttempt[ev.AttemptID] == ev {
			delete(j.byAttempt, ev.AttemptID)
		}
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

// fileCheckpoints files journaled checkpoints in tx, each in place of an
// older one of its request unless its request's event is stored (filed
// in tx or before: it ended the checkpoint), then deletes the filed
// checkpoints of the requests in ends.
func fileCheckpoints(tx *bolt.Tx, cps []*nozzle.UsageEvent, ends []string) error {
	if len(cps) == 0 && len(ends) == 0 {
		return nil
	}
	b, reqids := tx.Bucket(bCheckpoints), tx.Bucket(bRequestIDs)
	for _, ev := range cps {
		id := []byte(ev.RequestID)
		if reqids.Get(id) != nil {
			continue
		}
		if v := b.Get(id); v != nil {
			if old, err := decodeEvent(v); err == nil && !checkpointAfter(ev, old) {
				continue
			}
		}
		if err := b.Put(id, encodeEvent(nil, ev)); err != nil {
			return fmt.Errorf("file checkpoint: %w", err)
		}
	}
	for _, id := range ends {
		if err := b.Delete([]byte(id)); err != nil {
			return fmt.Errorf("file checkpoint end: %w", err)
		}
	}
	return nil
}

// checkpointAfter reports whether checkpoint a is later than b of the same
// request: it counts more tokens, or as many at a later time. (Counts only
// grow; a record that came back from a file whose emptying was lost in a
// crash is older than the one filed.)
func checkpointAfter(a, b *nozzle.UsageEvent) bool {
	ta, tb := a.PromptTokens+a.CompletionTokens, b.PromptTokens+b.CompletionTokens
	return ta > tb || ta == tb && !a.Time.Before(b.Time)
}

// recoverCheckpoints turns every checkpoint filed in tx into its request's
// usage event, status interrupted, priced at its time — unless the
// request's event is stored (it ended the checkpoint) — and deletes it.
// It returns how many became events.
func (l *Ledger) recoverCheckpoints(tx *bolt.Tx) (int, error) {
	b, reqids := tx.Bucket(bCheckpoints), tx.Bucket(bRequestIDs)
	type kv struct{ k, v []byte }
	var all []kv
	err := b.ForEach(func(k, v []byte) error {
		all = append(all, kv{bytes.Clone(k), bytes.Clone(v)})
		return nil
	})
	if err != nil || len(all) == 0 {
		return 0, err
	}
	w := newWtx(l, tx)
	n := 0
	for _, c := range all {
		if reqids.Get(c.k) == nil {
			ev, err := decodeEvent(c.v)
			if err == nil {
				err = validateEvent(ev)
			}
			if err != nil {
				// Check reports it; the rest recover.
				l.log.Error("usage checkpoint cannot be read; it is kept, uncharged", "request_id", string(c.k), "err", err)
				continue
			}
			ev.Status, ev.ChargeUSD, ev.Response = nozzle.UsageInterrupted, 0, nil
			if _, _, err := w.recordEvent(ev, false); err != nil {
				if nozzle.AsError(err) == nil {
					return 0, err
				}
				l.log.Error("usage checkpoint cannot be charged", "request_id", ev.RequestID, "err", err)
			} else {
				n++
			}
		}
		if err := b.Delete(c.k); err != nil {
			return 0, err
		}
	}
	return n, w.flush()
}

// fileLoop files the journal in the background: journalFileEvery after an
// event is journaled, or at once when journalFileBatch are pending.
func (l *Ledger) fileLoop() {
	defer l.wwg.Done()
	j := l.j
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		// Once the ledger is closing, Close files what is left: write
		// would refuse at once, so going on could only spin.
		if l.wctx.Err() != nil {
			return
		}
		if j.pendingWork() == 0 {
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

// replayJournal files the records a journal held when the ledger was
// opened, turns the checkpoints left without an end (the requests that
// ran when the last run stopped) into interrupted usage events, all in one
// transaction, and empties the journal.
func (l *Ledger) replayJournal(recs []jrec) error {
	var evs, cps []*nozzle.UsageEvent
	ended := map[string]bool{}
	for _, r := range recs {
		switch {
		case r.ckpt:
			cps = append(cps, r.ev)
		case r.ev != nil:
			evs = append(evs, r.ev)
			ended[r.ev.RequestID] = true
		}
		if r.ends != "" {
			ended[r.ends] = true
		}
	}
	// A checkpoint some record ends is not filed: its end may come before
	// it (a record that came back from a file whose emptying was lost).
	cps = slices.DeleteFunc(cps, func(ev *nozzle.UsageEvent) bool { return ended[ev.RequestID] })
	ends := slices.Collect(maps.Keys(ended))
	left := false
	if err := l.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bCheckpoints).Cursor().First()
		left = k != nil
		return nil
	}); err != nil {
		return fmt.Errorf("file usage journal: %w", err)
	}
	if len(evs) > 0 || len(cps) > 0 || left {
		slices.SortStableFunc(evs, func(a, b *nozzle.UsageEvent) int { return a.Time.Compare(b.Time) })
		interrupted := 0
		err := l.db.Update(func(tx *bolt.Tx) error {
			if err := l.fileEvents(tx, evs); err != nil {
				return err
			}
			if err := fileCheckpoints(tx, cps, ends); err != nil {
				return err
			}
			var err error
			interrupted, err = l.recoverCheckpoints(tx)
			return err
		})
		if err != nil {
			return fmt.Errorf("file usage journal: %w", err)
		}
		if len(evs) > 0 {
			l.log.Info("filed the usage journal left by the last run", "events", len(evs))
		}
		if interrupted > 0 {
			l.log.Warn("charged the requests the last run left running from their last usage checkpoints (status interrupted)", "requests", interrupted)
		}
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
