package billing

import (
	"bytes"
	"slices"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Pages of the metadata lists (tenants, a tenant's keys and adapters) are
// read from an index whose key order is the list's order: tenant_order
// (creation), tenant_keys (creation, within the tenant),
// tenant_keys_revoked (revocation, within the tenant) and adapter_names
// (name, within the tenant). A page's cursor, the id of an object, is
// turned into that object's index key, the cursor seeks to it, and the page
// is the entries after (or before) it: the work is the page's, whatever
// the list's length, and an object that stays in the list keeps its place
// however many are added or removed around it.

// indexPage is one page to read from an index.
type indexPage struct {
	prefix []byte // the list's entries all begin with it (nil: the whole bucket)
	// desc lists the index in descending key order.
	desc bool
	// from is the cursor's index key: the page starts after it in the
	// list's order, or, with before, ends before it. Nil: the page starts
	// at the list's beginning (with before: ends at its end).
	from   []byte
	before bool
	limit  int
}

// readIndexPage reads one page: load turns an entry into the list's object,
// or skips it (ok false: an entry the filter leaves out, or one whose
// record is gone). The page is in the list's order; hasMore says whether a
// further object lies past it in the direction it was read.
func readIndexPage[T any](c *bolt.Cursor, p indexPage, load func(k, v []byte) (T, bool, error)) (out []T, hasMore bool, err error) {
	// Reading before a cursor walks the list backwards from it.
	forward := p.desc == p.before // walk in ascending key order
	var k, v []byte
	switch {
	case p.from != nil && forward:
		if k, v = c.Seek(p.from); k != nil && bytes.Equal(k, p.from) {
			k, v = c.Next()
		}
	case p.from != nil:
		// The last key below from.
		if k, _ = c.Seek(p.from); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	case forward:
		k, v = c.Seek(p.prefix)
	default:
		k, v = seekLast(c, p.prefix)
	}
	next := c.Next
	if !forward {
		next = c.Prev
	}
	for ; k != nil && bytes.HasPrefix(k, p.prefix); k, v = next() {
		obj, ok, err := load(k, v)
		if err != nil {
			return nil, false, err
		}
		if !ok {
			continue
		}
		if len(out) == p.limit {
			hasMore = true
			break
		}
		out = append(out, obj)
	}
	if p.before {
		slices.Reverse(out)
	}
	return out, hasMore, nil
}

// seekLast puts the cursor on the last key that begins with prefix (or
// after the keys before it, where there is none).
func seekLast(c *bolt.Cursor, prefix []byte) ([]byte, []byte) {
	end := prefixEnd(prefix)
	if end == nil {
		return c.Last()
	}
	if k, _ := c.Seek(end); k == nil {
		return c.Last()
	}
	return c.Prev()
}

// prefixEnd is the first key after every key that begins with prefix, or
// nil when there is none (an empty prefix, or one of 0xff bytes only).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// pageSpec checks q and turns it into the page to read, short of its
// cursor's key: the list's order (def when q leaves it out) and which of
// After and Before is given, as (param, id); the id is empty without one.
func pageSpec(q nozzle.PageQuery, def nozzle.Order) (p indexPage, param, id string, err error) {
	if err := q.Validate(); err != nil {
		return p, "", "", err
	}
	order := q.Order
	if order == "" {
		order = def
	}
	p = indexPage{desc: order == nozzle.Descending, limit: q.PageLimit()}
	switch {
	case q.After != "":
		return p, "after", q.After, nil
	case q.Before != "":
		p.before = true
		return p, "before", q.Before, nil
	}
	return p, "", "", nil
}

// timeKey encodes a time so that byte order is time order (the zero time
// first).
func timeKey(t time.Time) []byte { return u64key(uint64(timeToNanos(t)) ^ (1 << 63)) }

// tenantOrderKey is a tenant's key in tenant_order: its creation time,
// then its id.
func tenantOrderKey(t *nozzle.Tenant) []byte { return join(timeKey(t.CreatedAt), []byte(t.ID)) }

// tenantKeyKey is a key's entry in tenant_keys: its tenant, its creation
// time, then its id.
func tenantKeyKey(k *nozzle.APIKey) []byte {
	return join(lp(k.TenantID), timeKey(k.CreatedAt), []byte(k.ID))
}

// revokedKeyKey is a revoked key's entry in tenant_keys_revoked: its
// tenant, the time it was revoked, then its id.
func revokedKeyKey(k *nozzle.APIKey) []byte {
	return join(lp(k.TenantID), timeKey(k.RevokedAt), []byte(k.ID))
}

// tenantKeyValue is a key's entry's value in tenant_keys: empty while it
// is active, one byte once revoked, so that a page of active or revoked
// keys skips the others without reading them.
func tenantKeyValue(k *nozzle.APIKey) []byte {
	if k.Revoked() {
		return []byte{1}
	}
	return []byte{}
}
