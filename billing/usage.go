package billing

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Limits on what a usage event may carry.
const (
	maxIDLen       = 200
	maxResponseLen = 4 << 20
)

// wtx is the state of one write transaction: the bbolt transaction and the
// rollup increments of the usage events written in it, which flush adds
// to the stored rollups once per key.
type wtx struct {
	l        *Ledger
	tx       *bolt.Tx
	events   *bolt.Bucket
	reqids   *bolt.Bucket
	attempts *bolt.Bucket

	rollups map[string]*rollup // rollups key → increment
	hours   map[int64]*rollup
	months  map[string]*rollup
	dirty   map[string]struct{}
	prices  map[string][]priceVersion // tenant → history, read once per tx
	tenants map[string]bool

	// cacheChanged says the transaction wrote a key, a tenant or a price,
	// which the ledger's cache (authCache) must forget.
	cacheChanged bool
}

func newWtx(l *Ledger, tx *bolt.Tx) *wtx {
	return &wtx{l: l, tx: tx}
}

// flush adds the accumulated rollup increments to the stored rollups.
func (w *wtx) flush() error {
	if len(w.rollups) == 0 {
		return nil
	}
	if err := addRollups(w.tx.Bucket(bRollups), w.rollups); err != nil {
		return err
	}
	hb := w.tx.Bucket(bHours)
	for h, inc := range w.hours {
		if err := addRollup(hb, hourKey(h), inc); err != nil {
			return err
		}
	}
	if err := addRollups(w.tx.Bucket(bMonths), w.months); err != nil {
		return err
	}
	db := w.tx.Bucket(bDirty)
	for k := range w.dirty {
		if has(db, []byte(k)) {
			continue // marked already: a read leaves its page clean
		}
		if err := db.Put([]byte(k), nil); err != nil {
			return err
		}
	}
	return nil
}

// has reports whether b holds key k (Get cannot tell a missing key from
// an empty value written in the same transaction).
func has(b *bolt.Bucket, k []byte) bool {
	got, _ := b.Cursor().Seek(k)
	return bytes.Equal(got, k)
}

func addRollups(b *bolt.Bucket, incs map[string]*rollup) error {
	for k, inc := range incs {
		if err := addRollup(b, []byte(k), inc); err != nil {
			return err
		}
	}
	return nil
}

func addRollup(b *bolt.Bucket, k []byte, inc *rollup) error {
	var r rollup
	if v := b.Get(k); v != nil {
		var err error
		if r, err = decodeRollup(v); err != nil {
			return fmt.Errorf("rollup %x: %w", k, err)
		}
	}
	r.add(inc)
	return b.Put(k, encodeRollup(&r))
}

func rollupKey(tenantID string, hour int64, adapterID string) []byte {
	return join(lp(tenantID), hourKey(hour), []byte(adapterID))
}

func monthOf(t time.Time) int64 {
	t = t.UTC()
	return int64(t.Year())*12 + int64(t.Month()) - 1
}

func monthKey(tenantID string, month int64) []byte {
	return join(lp(tenantID), u64key(uint64(month)))
}

func dirtyKey(hour int64, tenantID string) []byte { return join(hourKey(hour), []byte(tenantID)) }

// validateEvent checks a usage event before anything is written.
func validateEvent(ev *nozzle.UsageEvent) error {
	bad := func(format string, args ...any) *nozzle.Error {
		return nozzle.Errorf(nozzle.EINVALID, format, args...)
	}
	switch {
	case ev.RequestID == "" || len(ev.RequestID) > maxIDLen:
		return bad("Usage event needs a request id of 1 to %d bytes.", maxIDLen).WithParam("request_id")
	case ev.TenantID == "" || len(ev.TenantID) > 100:
		return bad("Usage event needs a tenant id.").WithParam("tenant_id")
	case len(ev.AdapterID) > maxIDLen || len(ev.AdapterName) > maxIDLen || len(ev.KeyID) > maxIDLen ||
		len(ev.Model) > maxIDLen || len(ev.RuntimeID) > maxIDLen || len(ev.AttemptID) > maxIDLen:
		return bad("Usage event has an id longer than %d bytes.", maxIDLen)
	case ev.Time.IsZero() || ev.Time.Year() < 2000 || ev.Time.Year() > 9999:
		return bad("Usage event needs a time.").WithParam("time")
	case ev.PromptTokens < 0 || ev.CompletionTokens < 0:
		return bad("Token counts must not be negative.")
	case !partOf(ev.CachedPromptTokens, ev.PromptTokens):
		return bad("Cached prompt tokens must be between 0 and the prompt tokens (%d), not %d.", ev.PromptTokens, ev.CachedPromptTokens).WithParam("cached_prompt_tokens")
	case !nonNegative(ev.DeviceSeconds, ev.QueueSeconds, ev.TTFTSeconds, ev.AdapterLoadSeconds, ev.RatePerHour):
		return bad("Usage event durations and rate must be non-negative numbers.")
	case len(ev.Response) > maxResponseLen:
		return bad("Stored response must be at most %d bytes.", maxResponseLen)
	}
	if _, ok := statusCodes[ev.Status]; !ok {
		return bad("Usage event status %q is not one of ok, canceled or failed.", ev.Status).WithParam("status")
	}
	if ca := ev.ConversationAppend; ca != nil {
		if ev.Status != nozzle.UsageOK {
			return bad("Only a completed request's items are appended to a conversation.").WithParam("conversation_append")
		}
		if err := validateConvAppend(ca); err != nil {
			return err
		}
	}
	if sr := ev.StoredResponse; sr != nil {
		if ev.Status != nozzle.UsageOK {
			return bad("Only a completed request's response is stored.").WithParam("stored_response")
		}
		return validateStoredResponse(sr, ev.TenantID)
	}
	return nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func nonNegative(vs ...float64) bool {
	for _, v := range vs {
		if !finite(v) || v < 0 {
			return false
		}
	}
	return true
}

// RecordUsage durably stores ev and adds it to the rollups in the same
// transaction; it returns once the transaction is fsynced. The ledger sets
// ev.ChargeUSD from the price in force at ev.Time (zero for failed
// requests). A request id already stored is not stored again: RecordUsage
// then returns duplicate=true and fills ev from the stored event.
//
// A canceled ctx does not stop the write: the usage of a request whose
// client went away is still charged.
func (l *Ledger) RecordUsage(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
	ctx = context.WithoutCancel(ctx)
	if ev.Status == "" {
		ev.Status = nozzle.UsageOK
	}
	if ev.Status == nozzle.UsageInterrupted {
		return false, nozzle.Errorf(nozzle.EINVALID, "Usage event status %q is the ledger's own, for a checkpoint left by a crash.", ev.Status).WithParam("status")
	}
	if len(ev.CheckpointID) > maxIDLen {
		return false, nozzle.Errorf(nozzle.EINVALID, "Usage event has an id longer than %d bytes.", maxIDLen).WithParam("checkpoint_id")
	}
	if err := validateEvent(ev); err != nil {
		return false, err
	}
	in := *ev
	in.Time = in.Time.UTC()
	// The journal keeps the event until it is filed, after the caller has
	// moved on: the caller's buffer is not kept.
	in.Response = bytes.Clone(in.Response)
	if sr := in.StoredResponse; sr != nil {
		c := *sr
		c.Body, c.Input, c.Created = bytes.Clone(c.Body), bytes.Clone(c.Input), c.Created.UTC()
		in.StoredResponse = &c
	}
	if ca := in.ConversationAppend; ca != nil {
		c := nozzle.ConversationAppend{ConversationID: ca.ConversationID, Items: make([]nozzle.ConversationItem, len(ca.Items))}
		for i, it := range ca.Items {
			c.Items[i] = nozzle.ConversationItem{ID: it.ID, Item: bytes.Clone(it.Item)}
		}
		in.ConversationAppend = &c
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return false, ErrClosed
	}
	in.CheckpointID = "" // the journal's alone: never stored with the event
	if in.AttemptID == in.RequestID {
		in.AttemptID = "" // found under it anyway
	}
	o := &jop{ev: &in, ends: ev.CheckpointID, done: make(chan error, 1)}
	if err := l.j.appends.do(o, l.appendUsage); err != nil {
		return false, err
	}
	out, dup := o.ev, o.dup
	if dup {
		l.met.duplicates.Inc()
	} else {
		l.met.events.Inc()
	}
	*ev = *out
	return dup, nil
}

// CheckpointUsage durably records ev as the usage so far of the running
// request ev.RequestID, in place of its earlier checkpoint: it is
// journaled and fsynced like an event, in the same group commit, and filed
// into bucket checkpoints. The request's final event ends it (see
// nozzle.UsageCheckpointer); Open turns a checkpoint left without one into
// the request's event, status interrupted, priced at ev.Time. Nothing is
// written when the request's event is recorded already.
func (l *Ledger) CheckpointUsage(ctx context.Context, ev *nozzle.UsageEvent) error {
	in := *ev
	in.Status, in.ChargeUSD, in.Response, in.CheckpointID, in.AttemptID, in.StoredResponse, in.ConversationAppend = nozzle.UsageInterrupted, 0, nil, "", "", nil, nil
	in.Time = in.Time.UTC()
	if err := validateEvent(&in); err != nil {
		return err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	o := &jop{ev: &in, ckpt: true, done: make(chan error, 1)}
	if err := l.j.appends.do(o, l.appendUsage); err != nil {
		return err
	}
	if !o.dup {
		l.met.checkpoints.Inc()
	}
	return nil
}

// recordEvent writes one validated event unless its request id is stored
// already; in that case it returns the stored event and true. A priced
// event keeps its charge (the journal priced it); any other is priced at
// the price in force at its time.
func (w *wtx) recordEvent(ev *nozzle.UsageEvent, priced bool) (*nozzle.UsageEvent, bool, error) {
	if w.events == nil {
		w.events = w.tx.Bucket(bEvents)
		w.events.FillPercent = 1 // keys only ever grow
		w.reqids = w.tx.Bucket(bRequestIDs)
		w.attempts = w.tx.Bucket(bAttemptIDs)
		w.rollups = map[string]*rollup{}
		w.hours = map[int64]*rollup{}
		w.months = map[string]*rollup{}
		w.dirty = map[string]struct{}{}
		w.prices = map[string][]priceVersion{}
		w.tenants = map[string]bool{}
	}
	if stored, err := storedEvent(w.reqids, w.events, ev.RequestID); err != nil || stored != nil {
		return stored, stored != nil, err
	}
	known, ok := w.tenants[ev.TenantID]
	if !ok {
		known = w.tx.Bucket(bTenants).Get([]byte(ev.TenantID)) != nil
		w.tenants[ev.TenantID] = known
	}
	if !known {
		return nil, false, nozzle.Errorf(nozzle.EINVALID, "Usage event names unknown tenant %q.", ev.TenantID).WithParam("tenant_id")
	}
	out := *ev
	if !priced {
		out.ChargeUSD = 0
	}
	if a := []byte(out.AttemptID); len(a) > 0 && (out.AttemptID == out.RequestID || w.reqids.Get(a) != nil || w.attempts.Get(a) != nil) {
		out.AttemptID = "" // another event holds it: left out
	}
	if !priced && out.Status != nozzle.UsageFailed {
		hist, ok := w.prices[ev.TenantID]
		if !ok {
			var err error
			if hist, err = priceHistory(w.tx, ev.TenantID); err != nil {
				return nil, false, err
			}
			w.prices[ev.TenantID] = hist
		}
		out.ChargeUSD = priceAt(hist, w.l.defPrice, ev.Time).ChargeEvent(&out)
	}
	seq, err := w.events.NextSequence()
	if err != nil {
		return nil, false, err
	}
	sk := u64key(seq)
	// bbolt keeps the value slice until commit: a fresh one per event.
	if err := w.events.Put(sk, encodeEvent(nil, &out)); err != nil {
		return nil, false, err
	}
	if err := w.reqids.Put([]byte(ev.RequestID), sk); err != nil {
		return nil, false, err
	}
	if out.AttemptID != "" {
		if err := w.attempts.Put([]byte(out.AttemptID), sk); err != nil {
			return nil, false, err
		}
	}
	if out.StoredResponse != nil {
		// In the event's transaction: both or neither.
		if err := w.storeResponse(out.StoredResponse); err != nil {
			return nil, false, err
		}
	}
	if out.ConversationAppend != nil {
		// In the event's transaction too: appended if and only if recorded.
		if err := w.appendConversation(out.TenantID, out.ConversationAppend); err != nil {
			return nil, false, err
		}
	}
	var inc rollup
	inc.addEvent(&out)
	w.addToRollups(&out, &inc)
	return &out, false, nil
}

// addToRollups adds inc, the rollup of ev or part of it, to the increments
// of ev's rollup, hourly and monthly total.
func (w *wtx) addToRollups(ev *nozzle.UsageEvent, inc *rollup) {
	h := hourOf(ev.Time)
	rk := string(rollupKey(ev.TenantID, h, ev.AdapterID))
	ri := w.rollups[rk]
	if ri == nil {
		ri = &rollup{}
		w.rollups[rk] = ri
		w.dirty[string(dirtyKey(h, ev.TenantID))] = struct{}{}
	}
	ri.add(inc)
	hi := w.hours[h]
	if hi == nil {
		hi = &rollup{}
		w.hours[h] = hi
	}
	hi.add(inc)
	mk := string(monthKey(ev.TenantID, monthOf(ev.Time)))
	mi := w.months[mk]
	if mi == nil {
		mi = &rollup{}
		w.months[mk] = mi
	}
	mi.add(inc)
}

// Usage returns the event stored for a request: the one recorded under
// requestID or, failing that, the one whose attempt id it is. Returns
// ENOTFOUND if there is none.
func (l *Ledger) Usage(ctx context.Context, requestID string) (*nozzle.UsageEvent, error) {
	// The journal first, then the file: filing commits an event before
	// the journal lets it go.
	if ev := l.j.pendingEvent(requestID); ev != nil {
		return ev, nil
	}
	var ev *nozzle.UsageEvent
	err := l.view(func(tx *bolt.Tx) (err error) {
		ev, err = storedEvent(tx.Bucket(bRequestIDs), tx.Bucket(bEvents), requestID)
		return err
	})
	if err != nil || ev != nil {
		return ev, err
	}
	if ev := l.j.pendingAttempt(requestID); ev != nil {
		return ev, nil
	}
	err = l.view(func(tx *bolt.Tx) (err error) {
		ev, err = storedEvent(tx.Bucket(bAttemptIDs), tx.Bucket(bEvents), requestID)
		if err == nil && ev == nil {
			err = nozzle.Errorf(nozzle.ENOTFOUND, "No usage is recorded for request %q.", requestID)
		}
		return err
	})
	return ev, err
}

// storedEvent returns the event stored for a request, or nil if there is
// none: reqids is request_ids, or attempt_ids for the event of an attempt.
func storedEvent(reqids, events *bolt.Bucket, requestID string) (*nozzle.UsageEvent, error) {
	seq := reqids.Get([]byte(requestID))
	if seq == nil {
		return nil, nil
	}
	v := events.Get(seq)
	if v == nil {
		return nil, fmt.Errorf("request id %q points to a missing event", requestID)
	}
	return decodeEvent(v)
}

// recordBulk writes many events in transactions of up to per events each:
// the setup path of benchmarks and simulations. Events are priced and
// rolled up exactly as RecordUsage does.
func (l *Ledger) recordBulk(ctx context.Context, evs []nozzle.UsageEvent, per int) error {
	for i := range evs {
		if evs[i].Status == "" {
			evs[i].Status = nozzle.UsageOK
		}
		evs[i].Time = evs[i].Time.UTC()
		if err := validateEvent(&evs[i]); err != nil {
			return err
		}
	}
	for len(evs) > 0 {
		n := min(per, len(evs))
		chunk := evs[:n]
		evs = evs[n:]
		err := l.write(ctx, func(w *wtx) error {
			for i := range chunk {
				out, _, err := w.recordEvent(&chunk[i], false)
				if err != nil {
					// Not an application error: the whole chunk rolls back.
					return fmt.Errorf("bulk record: %s", err)
				}
				chunk[i].ChargeUSD = out.ChargeUSD
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
