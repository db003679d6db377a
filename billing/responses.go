package billing

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Stored responses (the Responses API's store). A response is recorded
// with its usage event (nozzle.UsageEvent.StoredResponse): the journal
// record carries both (recResponse), and filing writes the response in
// the transaction that files the event, so that one is never kept without
// the other. A duplicate event stores nothing.
//
// A response keeps its own input items only and the id of the response
// it continued: the conversation is read by walking that chain back, so a
// long conversation costs its length once, not once per turn. A response
// counts the stored responses that continue it (refs); deleting one that
// some response continues keeps its output items, unreadable otherwise,
// until the last of those goes (a tombstone), and retention removes a
// response once it is older than the retention and nothing continues it.
// docs/LEDGER.md gives the buckets' keys and values.

// responseFormat is the format byte of a stored response's value.
const responseFormat = 1

// maxResponseChain bounds the responses one conversation is read through.
const maxResponseChain = 10000

// respRecord is a stored response's value in bucket responses.
type respRecord struct {
	created time.Time
	prev    string
	refs    uint64 // stored responses whose previous response this is
	deleted bool   // deleted while continued: body holds its output items only
	body    []byte // the Response object; when deleted, its output array
	input   []byte // its own input items, a JSON array
}

func encodeRespRecord(r *respRecord) []byte {
	e := enc{b: make([]byte, 0, 32+len(r.prev)+len(r.body)+len(r.input))}
	e.u8(responseFormat)
	e.time(r.created)
	e.str(r.prev)
	e.uvarint(r.refs)
	e.boolean(r.deleted)
	e.bytes(r.body)
	e.bytes(r.input)
	return e.b
}

func decodeRespRecord(b []byte) (*respRecord, error) {
	d := dec{b: b}
	if d.u8() != responseFormat {
		d.fail()
	}
	r := &respRecord{created: d.time(), prev: d.str(), refs: d.uvarint(), deleted: d.boolean(), body: d.bytesCopy(), input: d.bytesCopy()}
	if len(r.prev) > maxIDLen {
		d.fail()
	}
	if err := d.done("stored response"); err != nil {
		return nil, err
	}
	return r, nil
}

// encodeStoredResponse is a stored response's part of a journal record.
func encodeStoredResponse(e *enc, sr *nozzle.StoredResponse) {
	e.u8(responseFormat)
	e.str(sr.ID)
	e.str(sr.TenantID)
	e.str(sr.PreviousID)
	e.time(sr.Created)
	e.bytes(sr.Body)
	e.bytes(sr.Input)
}

func decodeStoredResponse(d *dec) *nozzle.StoredResponse {
	if d.u8() != responseFormat {
		d.fail()
	}
	sr := &nozzle.StoredResponse{ID: d.str(), TenantID: d.str(), PreviousID: d.str(), Created: d.time(), Body: d.bytesCopy(), Input: d.bytesCopy()}
	if d.err == nil && validateStoredResponse(sr, sr.TenantID) != nil {
		d.fail()
	}
	return sr
}

// validateStoredResponse checks a response to store with an event of
// tenantID.
func validateStoredResponse(sr *nozzle.StoredResponse, tenantID string) error {
	bad := func(format string, args ...any) error {
		return nozzle.Errorf(nozzle.EINVALID, format, args...).WithParam("stored_response")
	}
	switch {
	case sr.ID == "" || len(sr.ID) > maxIDLen || len(sr.PreviousID) > maxIDLen:
		return bad("Stored response needs an id of 1 to %d bytes.", maxIDLen)
	case sr.TenantID != tenantID:
		return bad("Stored response belongs to another tenant than its usage event.")
	case sr.Created.IsZero() || sr.Created.Year() < 2000 || sr.Created.Year() > 9999:
		return bad("Stored response needs a creation time.")
	case len(sr.Body) > maxResponseLen || len(sr.Input) > maxResponseLen:
		return bad("Stored response must be at most %d bytes.", maxResponseLen)
	case !jsonOpens(sr.Body, '{') || !jsonOpens(sr.Input, '['):
		return bad("Stored response must be a JSON object with a JSON array of input items.")
	}
	return nil
}

// jsonOpens reports whether b's first byte past white space is open: the
// shape of the JSON a stored response holds. Its writer (the gateway)
// makes it with encoding/json, and its readers parse it; a full validation
// here would be most of the cost of recording a response with its event
// (BenchmarkRecordUsage).
func jsonOpens(b []byte, open byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == open
}

func responseKey(tenantID, id string) []byte { return join(lp(tenantID), []byte(id)) }

// responseTimeKey orders the responses by creation time, for retention.
func responseTimeKey(created time.Time, tenantID, id string) []byte {
	return join(u64key(uint64(timeToNanos(created))^(1<<63)), lp(tenantID), []byte(id))
}

// storeResponse writes sr in w's transaction, unless its id is stored
// already, and counts it on the response it continues.
func (w *wtx) storeResponse(sr *nozzle.StoredResponse) error {
	b := w.tx.Bucket(bResponses)
	k := responseKey(sr.TenantID, sr.ID)
	if b.Get(k) != nil {
		return nil
	}
	r := &respRecord{created: sr.Created.UTC(), prev: sr.PreviousID, body: sr.Body, input: sr.Input}
	if r.prev != "" {
		pk := responseKey(sr.TenantID, r.prev)
		if v := b.Get(pk); v != nil {
			p, err := decodeRespRecord(v)
			if err != nil {
				return fmt.Errorf("stored response %q: %w", r.prev, err)
			}
			p.refs++
			if err := b.Put(pk, encodeRespRecord(p)); err != nil {
				return err
			}
		}
	}
	if err := b.Put(k, encodeRespRecord(r)); err != nil {
		return err
	}
	if err := addTenantBytes(w.tx, bResponseBytes, sr.TenantID, r.size()); err != nil {
		return err
	}
	return w.tx.Bucket(bResponseTimes).Put(responseTimeKey(r.created, sr.TenantID, sr.ID), []byte{})
}

// size is what a stored response counts against its tenant's cap.
func (r *respRecord) size() int64 { return int64(len(r.body) + len(r.input)) }

// addTenantBytes adds n (negative: takes) to the tenant's byte count in
// bucket name (response_storage, conversation_storage: a uvarint; no entry
// at 0).
func addTenantBytes(tx *bolt.Tx, name []byte, tenantID string, n int64) error {
	if n == 0 {
		return nil
	}
	have, err := tenantBytes(tx, name, tenantID)
	if err != nil {
		return err
	}
	if have += n; have <= 0 {
		return tx.Bucket(name).Delete([]byte(tenantID))
	}
	return tx.Bucket(name).Put([]byte(tenantID), binary.AppendUvarint(nil, uint64(have)))
}

// tenantBytes is the tenant's byte count in bucket name (addTenantBytes).
func tenantBytes(tx *bolt.Tx, name []byte, tenantID string) (int64, error) {
	v := tx.Bucket(name).Get([]byte(tenantID))
	if v == nil {
		return 0, nil
	}
	n, k := binary.Uvarint(v)
	if k != len(v) || n > 1<<62 {
		return 0, fmt.Errorf("%s of tenant %q: %w", name, tenantID, errCorrupt)
	}
	return int64(n), nil
}

// StoredResponseBytes returns how many bytes of stored responses the
// tenant holds (their Response objects and input items, deleted ones
// kept for later responses' conversations included), as filed: responses
// still in the usage journal are not counted yet.
func (l *Ledger) StoredResponseBytes(ctx context.Context, tenantID string) (n int64, err error) {
	err = l.view(func(tx *bolt.Tx) error {
		n, err = tenantBytes(tx, bResponseBytes, tenantID)
		return err
	})
	return n, err
}

// expired reports whether a response created at t is past the retention.
func (l *Ledger) expired(t time.Time) bool {
	return l.retention > 0 && t.Before(l.now().Add(-l.retention))
}

// readResponse returns the tenant's readable response id: stored, not
// deleted, not expired.
func (l *Ledger) readResponse(tx *bolt.Tx, tenantID, id string) (*respRecord, error) {
	v := tx.Bucket(bResponses).Get(responseKey(tenantID, id))
	if v == nil || tenantID == "" || id == "" {
		return nil, nozzle.ResponseNotFound(id)
	}
	r, err := decodeRespRecord(v)
	if err != nil {
		return nil, fmt.Errorf("stored response %q: %w", id, err)
	}
	if r.deleted || l.expired(r.created) {
		return nil, nozzle.ResponseNotFound(id)
	}
	return r, nil
}

// StoredResponse returns the tenant's response id; ENOTFOUND when there
// is none (another tenant's, deleted, expired).
func (l *Ledger) StoredResponse(ctx context.Context, tenantID, id string) (*nozzle.StoredResponse, error) {
	var out *nozzle.StoredResponse
	err := l.viewUsage(func(tx *bolt.Tx) error {
		r, err := l.readResponse(tx, tenantID, id)
		if err != nil {
			return err
		}
		out = r.stored(tenantID, id)
		return nil
	})
	return out, err
}

func (r *respRecord) stored(tenantID, id string) *nozzle.StoredResponse {
	return &nozzle.StoredResponse{ID: id, TenantID: tenantID, PreviousID: r.prev, Created: r.created, Body: r.body, Input: r.input}
}

// outputItems returns a record's output items.
func (r *respRecord) outputItems() ([]json.RawMessage, error) {
	var out []json.RawMessage
	if r.deleted {
		return out, json.Unmarshal(r.body, &out)
	}
	var body struct {
		Output []json.RawMessage `json:"output"`
	}
	err := json.Unmarshal(r.body, &body)
	return body.Output, err
}

// ResponseItems returns the tenant's response id, the items of the
// conversation it answered (those of the responses it continued, as far
// back as they are kept, then its own input) and its output items.
func (l *Ledger) ResponseItems(ctx context.Context, tenantID, id string) (*nozzle.StoredResponse, []json.RawMessage, []json.RawMessage, error) {
	var out *nozzle.StoredResponse
	var input, output []json.RawMessage
	err := l.viewUsage(func(tx *bolt.Tx) error {
		r, err := l.readResponse(tx, tenantID, id)
		if err != nil {
			return err
		}
		out = r.stored(tenantID, id)
		if output, err = r.outputItems(); err != nil {
			return fmt.Errorf("stored response %q: output: %w", id, err)
		}
		// The chain back, newest first.
		chain := []*respRecord{r}
		seen := map[string]bool{id: true}
		b := tx.Bucket(bResponses)
		for p := r.prev; p != "" && !seen[p] && len(chain) < maxResponseChain; {
			seen[p] = true
			v := b.Get(responseKey(tenantID, p))
			if v == nil {
				break // removed: the conversation is kept from here on
			}
			pr, err := decodeRespRecord(v)
			if err != nil {
				return fmt.Errorf("stored response %q: %w", p, err)
			}
			chain = append(chain, pr)
			p = pr.prev
		}
		for i := len(chain) - 1; i >= 0; i-- {
			var items []json.RawMessage
			if err := json.Unmarshal(chain[i].input, &items); err != nil {
				return fmt.Errorf("stored response input: %w", err)
			}
			input = append(input, items...)
			if i > 0 {
				o, err := chain[i].outputItems()
				if err != nil {
					return fmt.Errorf("stored response output: %w", err)
				}
				input = append(input, o...)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return out, input, output, nil
}

// DeleteResponse deletes the tenant's response id. One that stored
// responses continue keeps its output items for them until they go.
func (l *Ledger) DeleteResponse(ctx context.Context, tenantID, id string) error {
	return l.write(ctx, func(w *wtx) error {
		r, err := l.readResponse(w.tx, tenantID, id)
		if err != nil {
			return err
		}
		if r.refs > 0 {
			out, err := r.outputItems()
			if err != nil {
				return fmt.Errorf("stored response %q: output: %w", id, err)
			}
			if out == nil {
				out = []json.RawMessage{}
			}
			was := r.size()
			r.deleted = true
			if r.body, err = json.Marshal(out); err != nil {
				return err
			}
			if err := addTenantBytes(w.tx, bResponseBytes, tenantID, r.size()-was); err != nil {
				return err
			}
			return w.tx.Bucket(bResponses).Put(responseKey(tenantID, id), encodeRespRecord(r))
		}
		return removeResponse(w.tx, tenantID, id, r, func(p *respRecord) bool { return p.deleted || l.expired(p.created) })
	})
}

// removeResponse removes the tenant's response id (record r) and counts
// it off the response it continued, which goes too when gone says so and
// nothing continues it any more: and so on back.
func removeResponse(tx *bolt.Tx, tenantID, id string, r *respRecord, gone func(*respRecord) bool) error {
	b, tb := tx.Bucket(bResponses), tx.Bucket(bResponseTimes)
	for n := 0; ; n++ {
		if err := b.Delete(responseKey(tenantID, id)); err != nil {
			return err
		}
		if err := tb.Delete(responseTimeKey(r.created, tenantID, id)); err != nil {
			return err
		}
		if err := addTenantBytes(tx, bResponseBytes, tenantID, -r.size()); err != nil {
			return err
		}
		if r.prev == "" || n >= maxResponseChain {
			return nil
		}
		pk := responseKey(tenantID, r.prev)
		v := b.Get(pk)
		if v == nil {
			return nil
		}
		p, err := decodeRespRecord(v)
		if err != nil {
			return fmt.Errorf("stored response %q: %w", r.prev, err)
		}
		if p.refs > 0 {
			p.refs--
		}
		if p.refs > 0 || !gone(p) {
			return b.Put(pk, encodeRespRecord(p))
		}
		id, r = r.prev, p
	}
}

// PurgeResponses removes the stored responses created before before that
// no stored response continues (and, with them, those they continued
// that are deleted or as old), a batch per transaction; it returns how
// many it removed.
func (l *Ledger) PurgeResponses(ctx context.Context, before time.Time) (int, error) {
	const batch = 1000
	total := 0
	var after []byte // the last time key looked at
	for {
		n, more, next := 0, false, after
		err := l.write(ctx, func(w *wtx) error {
			n, more, next = 0, false, after
			b := w.tx.Bucket(bResponses)
			c := w.tx.Bucket(bResponseTimes).Cursor()
			limit := u64key(uint64(timeToNanos(before)) ^ (1 << 63))
			var k []byte
			if after == nil {
				k, _ = c.First()
			} else {
				k, _ = c.Seek(after)
				if bytes.Equal(k, after) {
					k, _ = c.Next()
				}
			}
			var todo [][]byte
			for ; k != nil && bytes.Compare(k[:8], limit) < 0; k, _ = c.Next() {
				if len(todo) == batch {
					more = true
					break
				}
				todo = append(todo, bytes.Clone(k))
			}
			for _, tk := range todo {
				next = tk
				tenantID, rest, ok := readLP(tk[8:])
				if !ok {
					return fmt.Errorf("response time key %x: %w", tk, errCorrupt)
				}
				id := string(rest)
				v := b.Get(responseKey(tenantID, id))
				if v == nil {
					if err := w.tx.Bucket(bResponseTimes).Delete(tk); err != nil {
						return err
					}
					continue
				}
				r, err := decodeRespRecord(v)
				if err != nil {
					l.log.Error("stored response cannot be read; it is kept", "tenant_id", tenantID, "id", id, "err", err)
					continue
				}
				if r.refs > 0 {
					continue // continued by a newer response: it goes with the last of them
				}
				if err := removeResponse(w.tx, tenantID, id, r, func(p *respRecord) bool { return p.deleted || p.created.Before(before) }); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("purge stored responses: %w", err)
		}
		total, after = total+n, next
		if !more {
			return total, nil
		}
	}
}

// responseRetentionLoop purges expired responses at open and then hourly.
func (l *Ledger) responseRetentionLoop() {
	defer l.wwg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := l.PurgeResponses(l.wctx, l.now().Add(-l.retention)); err != nil {
			if l.wctx.Err() == nil {
				l.log.Error("purge stored responses", "err", err)
			}
		} else if n > 0 {
			l.log.Info("purged expired stored responses", "responses", n)
		}
		select {
		case <-l.wctx.Done():
			return
		case <-t.C:
		}
	}
}
