package billing

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Conversations (the Conversations API's store). A conversation's record
// holds its creation time, metadata, the sequence number its next item
// takes and how many items it holds; each item is stored under the
// conversation and its sequence number (conversation_items), and indexed
// by its id (conversation_item_ids). Items are appended in two ways: by
// the API (create, add: ordinary writes), and by a completed response
// that named the conversation — its items come with its usage event
// (nozzle.UsageEvent.ConversationAppend, journal record recConversation)
// and are appended in the transaction that files the event, so that they
// are there if and only if the event is. docs/LEDGER.md gives the buckets'
// keys and values.

// conversationFormat is the format byte of a conversation's record, of an
// item's value and of a journaled append.
const conversationFormat = 1

// Bounds on what one append may carry (a response's input items with its
// output items, or the API's 20).
const (
	maxConvAppendItems = 10000
	maxConvAppendBytes = 2 * maxResponseLen
)

// convRecord is a conversation's value in bucket conversations.
type convRecord struct {
	created  time.Time
	next     uint64 // the sequence number of the next item appended
	items    uint64 // items held
	metadata map[string]string
}

func encodeConvRecord(r *convRecord) []byte {
	e := enc{b: make([]byte, 0, 32)}
	e.u8(conversationFormat)
	e.time(r.created)
	e.uvarint(r.next)
	e.uvarint(r.items)
	keys := make([]string, 0, len(r.metadata))
	for k := range r.metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.uvarint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(r.metadata[k])
	}
	return e.b
}

func decodeConvRecord(b []byte) (*convRecord, error) {
	d := dec{b: b}
	if d.u8() != conversationFormat {
		d.fail()
	}
	r := &convRecord{created: d.time(), next: d.uvarint(), items: d.uvarint(), metadata: map[string]string{}}
	n := d.uvarint()
	if n > nozzle.MaxConversationMetadata || r.items > r.next {
		d.fail()
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k, v := d.str(), d.str()
		if _, dup := r.metadata[k]; dup {
			d.fail()
		}
		r.metadata[k] = v
	}
	if err := d.done("conversation"); err != nil {
		return nil, err
	}
	return r, nil
}

// encodeConvItem is an item's value in bucket conversation_items.
func encodeConvItem(it nozzle.ConversationItem) []byte {
	e := enc{b: make([]byte, 0, 8+len(it.ID)+len(it.Item))}
	e.u8(conversationFormat)
	e.str(it.ID)
	e.bytes(it.Item)
	return e.b
}

func decodeConvItem(b []byte) (nozzle.ConversationItem, error) {
	d := dec{b: b}
	if d.u8() != conversationFormat {
		d.fail()
	}
	it := nozzle.ConversationItem{ID: d.str(), Item: d.bytesCopy()}
	if d.err == nil && (it.ID == "" || len(it.ID) > maxIDLen) {
		d.fail()
	}
	return it, d.done("conversation item")
}

// encodeConvAppend is an append's part of a journal record.
func encodeConvAppend(e *enc, ca *nozzle.ConversationAppend) {
	e.u8(conversationFormat)
	e.str(ca.ConversationID)
	e.uvarint(uint64(len(ca.Items)))
	for _, it := range ca.Items {
		e.str(it.ID)
		e.bytes(it.Item)
	}
}

func decodeConvAppend(d *dec) *nozzle.ConversationAppend {
	if d.u8() != conversationFormat {
		d.fail()
	}
	ca := &nozzle.ConversationAppend{ConversationID: d.str()}
	n := d.uvarint()
	if n == 0 || n > maxConvAppendItems {
		d.fail()
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		ca.Items = append(ca.Items, nozzle.ConversationItem{ID: d.str(), Item: d.bytesCopy()})
	}
	if d.err == nil && validateConvAppend(ca) != nil {
		d.fail()
	}
	return ca
}

// validateConvAppend checks an append carried by a usage event.
func validateConvAppend(ca *nozzle.ConversationAppend) error {
	if ca.ConversationID == "" || len(ca.ConversationID) > maxIDLen {
		return nozzle.Errorf(nozzle.EINVALID, "Conversation append needs a conversation id of 1 to %d bytes.", maxIDLen).WithParam("conversation_append")
	}
	if len(ca.Items) == 0 {
		return nozzle.Errorf(nozzle.EINVALID, "Conversation append carries no items.").WithParam("conversation_append")
	}
	return validateConvItems(ca.Items, maxConvAppendItems, "conversation_append")
}

// validateConvItems checks items to append: at most max, each with an id
// of 1 to maxIDLen bytes and a JSON object, maxConvAppendBytes in all.
func validateConvItems(items []nozzle.ConversationItem, max int, param string) error {
	if len(items) > max {
		return nozzle.Errorf(nozzle.EINVALID, "At most %d conversation items may be added at once, not %d.", max, len(items)).WithParam(param)
	}
	total := 0
	for _, it := range items {
		if it.ID == "" || len(it.ID) > maxIDLen {
			return nozzle.Errorf(nozzle.EINVALID, "A conversation item needs an id of 1 to %d bytes.", maxIDLen).WithParam(param)
		}
		if !jsonOpens(it.Item, '{') {
			return nozzle.Errorf(nozzle.EINVALID, "A conversation item must be a JSON object.").WithParam(param)
		}
		total += len(it.ID) + len(it.Item)
	}
	if total > maxConvAppendBytes {
		return nozzle.Errorf(nozzle.EINVALID, "Conversation items must be at most %d bytes at once.", maxConvAppendBytes).WithParam(param)
	}
	return nil
}

// validateConversation checks a conversation to create.
func validateConversation(c *nozzle.Conversation) error {
	bad := func(format string, args ...any) error {
		return nozzle.Errorf(nozzle.EINVALID, format, args...).WithParam("conversation")
	}
	switch {
	case c.ID == "" || len(c.ID) > maxIDLen:
		return bad("Conversation needs an id of 1 to %d bytes.", maxIDLen)
	case c.TenantID == "" || len(c.TenantID) > maxIDLen:
		return bad("Conversation needs a tenant.")
	case c.Created.IsZero() || c.Created.Year() < 2000 || c.Created.Year() > 9999:
		return bad("Conversation needs a creation time.")
	}
	return validateMetadata(c.Metadata)
}

func validateMetadata(m map[string]string) error {
	if len(m) > nozzle.MaxConversationMetadata {
		return nozzle.Errorf(nozzle.EINVALID, "Conversation metadata has at most %d pairs.", nozzle.MaxConversationMetadata).WithParam("metadata")
	}
	for k, v := range m {
		if len(k) > 4*nozzle.MaxConversationMetadataKey || len(v) > 4*nozzle.MaxConversationMetadataVal {
			return nozzle.Errorf(nozzle.EINVALID, "Conversation metadata key or value too long.").WithParam("metadata")
		}
	}
	return nil
}

func convKey(tenantID, id string) []byte { return join(lp(tenantID), []byte(id)) }

// convPrefix is the prefix of a conversation's keys in conversation_items
// and conversation_item_ids.
func convPrefix(tenantID, id string) []byte { return join(lp(tenantID), lp(id)) }

// readConv returns the tenant's conversation id.
func readConv(tx *bolt.Tx, tenantID, id string) (*convRecord, error) {
	if tenantID == "" || id == "" || len(tenantID) > maxIDLen || len(id) > maxIDLen {
		return nil, nozzle.ConversationNotFound(id)
	}
	v := tx.Bucket(bConversations).Get(convKey(tenantID, id))
	if v == nil {
		return nil, nozzle.ConversationNotFound(id)
	}
	r, err := decodeConvRecord(v)
	if err != nil {
		return nil, fmt.Errorf("conversation %q: %w", id, err)
	}
	return r, nil
}

func (r *convRecord) conversation(tenantID, id string) *nozzle.Conversation {
	return &nozzle.Conversation{ID: id, TenantID: tenantID, Created: r.created, Metadata: r.metadata}
}

// appendItems appends items to the tenant's conversation id (record r),
// leaving out those whose id it holds already, and writes r.
func appendItems(tx *bolt.Tx, tenantID, id string, r *convRecord, items []nozzle.ConversationItem) error {
	ib, xb := tx.Bucket(bConvItems), tx.Bucket(bConvItemIDs)
	prefix := convPrefix(tenantID, id)
	var added int64
	for _, it := range items {
		xk := join(prefix, []byte(it.ID))
		if xb.Get(xk) != nil {
			continue
		}
		sk := u64key(r.next)
		v := encodeConvItem(it)
		if err := ib.Put(join(prefix, sk), v); err != nil {
			return err
		}
		if err := xb.Put(xk, sk); err != nil {
			return err
		}
		added += convItemSize(v)
		r.next++
		r.items++
	}
	if err := addTenantBytes(tx, bConvBytes, tenantID, added); err != nil {
		return err
	}
	return tx.Bucket(bConversations).Put(convKey(tenantID, id), encodeConvRecord(r))
}

// convItemSize is what a stored conversation item (its encoded value v)
// counts against its tenant's cap.
func convItemSize(v []byte) int64 { return int64(len(v)) }

// ConversationBytes returns how many bytes of conversation items the
// tenant holds, as filed: items a response appends that are still in the
// usage journal are not counted yet.
func (l *Ledger) ConversationBytes(ctx context.Context, tenantID string) (n int64, err error) {
	err = l.view(func(tx *bolt.Tx) error {
		n, err = tenantBytes(tx, bConvBytes, tenantID)
		return err
	})
	return n, err
}

// appendConversation appends a response's items in the transaction that
// files its usage event. A conversation deleted meanwhile takes nothing.
func (w *wtx) appendConversation(tenantID string, ca *nozzle.ConversationAppend) error {
	r, err := readConv(w.tx, tenantID, ca.ConversationID)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
		return nil
	} else if err != nil {
		return err
	}
	return appendItems(w.tx, tenantID, ca.ConversationID, r, ca.Items)
}

// CreateConversation stores c with its first items.
func (l *Ledger) CreateConversation(ctx context.Context, c *nozzle.Conversation, items []nozzle.ConversationItem) error {
	if err := validateConversation(c); err != nil {
		return err
	}
	if err := validateConvItems(items, nozzle.MaxConversationItemsAdded, "items"); err != nil {
		return err
	}
	return l.write(ctx, func(w *wtx) error {
		k := convKey(c.TenantID, c.ID)
		if w.tx.Bucket(bConversations).Get(k) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "Conversation %q exists already.", c.ID).WithParam("conversation")
		}
		md := map[string]string{}
		for k, v := range c.Metadata {
			md[k] = v
		}
		return appendItems(w.tx, c.TenantID, c.ID, &convRecord{created: c.Created.UTC(), metadata: md}, items)
	})
}

// Conversation returns the tenant's conversation id.
func (l *Ledger) Conversation(ctx context.Context, tenantID, id string) (*nozzle.Conversation, error) {
	var out *nozzle.Conversation
	err := l.viewUsage(func(tx *bolt.Tx) error {
		r, err := readConv(tx, tenantID, id)
		if err != nil {
			return err
		}
		out = r.conversation(tenantID, id)
		return nil
	})
	return out, err
}

// UpdateConversation replaces the metadata of the tenant's conversation id.
func (l *Ledger) UpdateConversation(ctx context.Context, tenantID, id string, metadata map[string]string) (*nozzle.Conversation, error) {
	if err := validateMetadata(metadata); err != nil {
		return nil, err
	}
	var out *nozzle.Conversation
	err := l.write(ctx, func(w *wtx) error {
		r, err := readConv(w.tx, tenantID, id)
		if err != nil {
			return err
		}
		r.metadata = map[string]string{}
		for k, v := range metadata {
			r.metadata[k] = v
		}
		out = r.conversation(tenantID, id)
		return w.tx.Bucket(bConversations).Put(convKey(tenantID, id), encodeConvRecord(r))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteConversation deletes the tenant's conversation id and its items.
func (l *Ledger) DeleteConversation(ctx context.Context, tenantID, id string) error {
	return l.write(ctx, func(w *wtx) error {
		if _, err := readConv(w.tx, tenantID, id); err != nil {
			return err
		}
		prefix := convPrefix(tenantID, id)
		var freed int64
		for _, name := range [][]byte{bConvItems, bConvItemIDs} {
			b := w.tx.Bucket(name)
			var keys [][]byte
			c := b.Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				keys = append(keys, bytes.Clone(k))
				if bytes.Equal(name, bConvItems) {
					freed += convItemSize(v)
				}
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		if err := addTenantBytes(w.tx, bConvBytes, tenantID, -freed); err != nil {
			return err
		}
		return w.tx.Bucket(bConversations).Delete(convKey(tenantID, id))
	})
}

// AddConversationItems appends items to the tenant's conversation id.
func (l *Ledger) AddConversationItems(ctx context.Context, tenantID, id string, items []nozzle.ConversationItem) error {
	if err := validateConvItems(items, nozzle.MaxConversationItemsAdded, "items"); err != nil {
		return err
	}
	return l.write(ctx, func(w *wtx) error {
		r, err := readConv(w.tx, tenantID, id)
		if err != nil {
			return err
		}
		return appendItems(w.tx, tenantID, id, r, items)
	})
}

// ConversationItems returns a page of the items of the tenant's
// conversation id, and whether more follow it.
func (l *Ledger) ConversationItems(ctx context.Context, tenantID, id string, page nozzle.ConversationPage) ([]nozzle.ConversationItem, bool, error) {
	if page.Limit < 1 {
		page.Limit = 1
	}
	var out []nozzle.ConversationItem
	more := false
	err := l.viewUsage(func(tx *bolt.Tx) error {
		if _, err := readConv(tx, tenantID, id); err != nil {
			return err
		}
		prefix := convPrefix(tenantID, id)
		c := tx.Bucket(bConvItems).Cursor()
		var k, v []byte
		switch {
		case page.After != "":
			sk := tx.Bucket(bConvItemIDs).Get(join(prefix, []byte(page.After)))
			if len(page.After) > maxIDLen || sk == nil {
				return nozzle.Errorf(nozzle.EINVALID, "Invalid 'after': conversation '%s' holds no item with id '%s'.", id, page.After).WithParam("after")
			}
			at := join(prefix, sk)
			if k, v = c.Seek(at); !bytes.Equal(k, at) {
				return fmt.Errorf("conversation %q: item %q indexed at a missing place: %w", id, page.After, errCorrupt)
			}
			if page.Desc {
				k, v = c.Prev()
			} else {
				k, v = c.Next()
			}
		case page.Desc:
			if k, v = c.Seek(join(prefix, u64key(^uint64(0)))); k == nil {
				k, v = c.Last()
			} else if bytes.HasPrefix(k, prefix) {
				// the item numbered 2^64-1: never reached
			} else {
				k, v = c.Prev()
			}
		default:
			k, v = c.Seek(prefix)
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, v = step(c, page.Desc) {
			if len(out) == page.Limit {
				more = true
				break
			}
			it, err := decodeConvItem(v)
			if err != nil {
				return fmt.Errorf("conversation %q: item %x: %w", id, k, err)
			}
			out = append(out, it)
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

func step(c *bolt.Cursor, back bool) ([]byte, []byte) {
	if back {
		return c.Prev()
	}
	return c.Next()
}

// AllConversationItems returns every item of the tenant's conversation
// id, oldest first; EINVALID when it holds more than max.
func (l *Ledger) AllConversationItems(ctx context.Context, tenantID, id string, max int) ([]nozzle.ConversationItem, error) {
	var out []nozzle.ConversationItem
	err := l.viewUsage(func(tx *bolt.Tx) error {
		r, err := readConv(tx, tenantID, id)
		if err != nil {
			return err
		}
		if r.items > uint64(max) {
			return nozzle.Errorf(nozzle.EINVALID, "The conversation is too long: it holds %d items, more than %d.", r.items, max).WithParam("conversation").WithReason("array_above_max_length")
		}
		prefix := convPrefix(tenantID, id)
		c := tx.Bucket(bConvItems).Cursor()
		out = make([]nozzle.ConversationItem, 0, r.items)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			it, err := decodeConvItem(v)
			if err != nil {
				return fmt.Errorf("conversation %q: item %x: %w", id, k, err)
			}
			out = append(out, it)
		}
		return nil
	})
	return out, err
}

// ConversationItem returns the item itemID of the tenant's conversation id.
func (l *Ledger) ConversationItem(ctx context.Context, tenantID, id, itemID string) (*nozzle.ConversationItem, error) {
	var out *nozzle.ConversationItem
	err := l.viewUsage(func(tx *bolt.Tx) error {
		if _, err := readConv(tx, tenantID, id); err != nil {
			return err
		}
		prefix := convPrefix(tenantID, id)
		sk := tx.Bucket(bConvItemIDs).Get(join(prefix, []byte(itemID)))
		if sk == nil || itemID == "" || len(itemID) > maxIDLen {
			return nozzle.ConversationItemNotFound(id, itemID)
		}
		v := tx.Bucket(bConvItems).Get(join(prefix, sk))
		if v == nil {
			return fmt.Errorf("conversation %q: item %q indexed at a missing place: %w", id, itemID, errCorrupt)
		}
		it, err := decodeConvItem(v)
		if err != nil {
			return fmt.Errorf("conversation %q: item %q: %w", id, itemID, err)
		}
		out = &it
		return nil
	})
	return out, err
}

// DeleteConversationItem deletes the item itemID of the tenant's
// conversation id and returns the conversation.
func (l *Ledger) DeleteConversationItem(ctx context.Context, tenantID, id, itemID string) (*nozzle.Conversation, error) {
	var out *nozzle.Conversation
	err := l.write(ctx, func(w *wtx) error {
		r, err := readConv(w.tx, tenantID, id)
		if err != nil {
			return err
		}
		prefix := convPrefix(tenantID, id)
		xk := join(prefix, []byte(itemID))
		xb := w.tx.Bucket(bConvItemIDs)
		sk := xb.Get(xk)
		if sk == nil || itemID == "" || len(itemID) > maxIDLen {
			return nozzle.ConversationItemNotFound(id, itemID)
		}
		ik := join(prefix, sk)
		ib := w.tx.Bucket(bConvItems)
		if v := ib.Get(ik); v != nil {
			if err := addTenantBytes(w.tx, bConvBytes, tenantID, -convItemSize(v)); err != nil {
				return err
			}
		}
		if err := ib.Delete(ik); err != nil {
			return err
		}
		if err := xb.Delete(xk); err != nil {
			return err
		}
		if r.items > 0 {
			r.items--
		}
		out = r.conversation(tenantID, id)
		return w.tx.Bucket(bConversations).Put(convKey(tenantID, id), encodeConvRecord(r))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
