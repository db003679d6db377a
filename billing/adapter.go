package billing

import (
	"bytes"
	"context"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// CreateAdapter stores a new adapter, filling ID and CreatedAt, and adds
// its size to its tenant's adapter storage in the same transaction.
// Returns ECONFLICT if the tenant already has an adapter of that name.
func (l *Ledger) CreateAdapter(ctx context.Context, a *nozzle.Adapter) error {
	if err := nozzle.ValidateAdapterName(a.Name); err != nil {
		return err
	}
	if len(a.SHA256) != 64 {
		return nozzle.Errorf(nozzle.EINVALID, "An adapter needs the SHA-256 of its files.").WithParam("sha256")
	}
	rec := *a
	rec.ID = newID("ad_")
	rec.CreatedAt = l.now().UTC()
	err := l.write(ctx, func(w *wtx) error {
		if _, err := getTenant(w.tx, rec.TenantID); err != nil {
			return err
		}
		names := w.tx.Bucket(bAdapterNames)
		nk := join(lp(rec.TenantID), []byte(rec.Name))
		if names.Get(nk) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "An adapter named %q exists already.", rec.Name).WithParam("name")
		}
		if err := names.Put(nk, []byte(rec.ID)); err != nil {
			return err
		}
		if err := w.tx.Bucket(bAdapterSHA).Put(join(lp(rec.SHA256), []byte(rec.ID)), nil); err != nil {
			return err
		}
		if err := addAdapterStorage(w.tx, &rec, 1); err != nil {
			return err
		}
		return w.tx.Bucket(bAdapters).Put([]byte(rec.ID), encodeJSON(adapterRecord{rec}))
	})
	if err != nil {
		return err
	}
	*a = rec
	return nil
}

// Adapter returns a tenant's adapter by name. Returns ENOTFOUND if the
// tenant has none of that name.
func (l *Ledger) Adapter(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
	var a *nozzle.Adapter
	err := l.view(func(tx *bolt.Tx) (err error) { a, err = getAdapter(tx, tenantID, name); return err })
	return a, err
}

func getAdapter(tx *bolt.Tx, tenantID, name string) (*nozzle.Adapter, error) {
	id := tx.Bucket(bAdapterNames).Get(join(lp(tenantID), []byte(name)))
	if id == nil {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "The model %q does not exist.", name).WithParam("model").WithReason("model_not_found")
	}
	v := tx.Bucket(bAdapters).Get(id)
	if v == nil {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "The model %q does not exist.", name).WithParam("model").WithReason("model_not_found")
	}
	return decodeAdapter(v)
}

// Adapters returns a tenant's adapters ordered by name.
func (l *Ledger) Adapters(ctx context.Context, tenantID string) ([]*nozzle.Adapter, error) {
	var out []*nozzle.Adapter
	err := l.view(func(tx *bolt.Tx) error {
		prefix := lp(tenantID)
		adapters := tx.Bucket(bAdapters)
		c := tx.Bucket(bAdapterNames).Cursor()
		for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, id = c.Next() {
			v := adapters.Get(id)
			if v == nil {
				continue
			}
			a, err := decodeAdapter(v)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// deletedAdapterKeep is how long a deleted adapter keeps its place in its
// tenant's list: a page may start after (or end before) it for that long,
// time enough for whoever deletes the adapters of a page to ask for the
// next one.
const deletedAdapterKeep = 7 * 24 * time.Hour

// AdapterPage returns one page of a tenant's adapters ordered by name,
// read from adapter_names. The cursor may name an adapter deleted within
// deletedAdapterKeep: the page starts where it was.
func (l *Ledger) AdapterPage(ctx context.Context, tenantID string, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Adapter], error) {
	p, param, id, err := pageSpec(q, nozzle.Ascending)
	if err != nil {
		return nil, err
	}
	p.prefix = lp(tenantID)
	out := &nozzle.Page[*nozzle.Adapter]{}
	now := l.now()
	err = l.view(func(tx *bolt.Tx) error {
		adapters := tx.Bucket(bAdapters)
		if id != "" {
			name, ok, err := adapterPlace(tx, tenantID, id, now)
			if err != nil {
				return err
			}
			if !ok {
				return nozzle.UnknownCursor(param, id)
			}
			p.from = join(p.prefix, []byte(name))
		}
		var err error
		out.Data, out.HasMore, err = readIndexPage(tx.Bucket(bAdapterNames).Cursor(), p, func(_, id []byte) (*nozzle.Adapter, bool, error) {
			v := adapters.Get(id)
			if v == nil {
				return nil, false, nil
			}
			a, err := decodeAdapter(v)
			return a, err == nil, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// adapterPlace returns the name under which the adapter with the given id
// is, or was until it was deleted within deletedAdapterKeep, in the
// tenant's list. ok is false when the tenant has no such adapter, now or
// lately (another tenant's is no different).
func adapterPlace(tx *bolt.Tx, tenantID, id string, now time.Time) (name string, ok bool, err error) {
	if v := tx.Bucket(bAdapters).Get([]byte(id)); v != nil {
		a, err := decodeAdapter(v)
		if err != nil {
			return "", false, err
		}
		return a.Name, a.TenantID == tenantID, nil
	}
	v := tx.Bucket(bAdapterGone).Get([]byte(id))
	if v == nil {
		return "", false, nil
	}
	g, err := decodeDeletedAdapter(v)
	if err != nil {
		return "", false, err
	}
	return g.Name, g.TenantID == tenantID && now.Sub(g.DeletedAt) < deletedAdapterKeep, nil
}

// deletedAdapter is what adapters_deleted keeps of a deleted adapter: its
// place in its tenant's list.
type deletedAdapter struct {
	TenantID  string
	Name      string
	DeletedAt time.Time
}

func encodeDeletedAdapter(g *deletedAdapter) []byte {
	e := enc{}
	e.u8(valueV1)
	e.str(g.TenantID)
	e.str(g.Name)
	e.time(g.DeletedAt)
	return e.b
}

func decodeDeletedAdapter(b []byte) (*deletedAdapter, error) {
	d := dec{b: b}
	if d.u8() != valueV1 {
		d.fail()
	}
	g := &deletedAdapter{TenantID: d.str(), Name: d.str(), DeletedAt: d.time()}
	if err := d.done("deleted adapter"); err != nil {
		return nil, err
	}
	return g, nil
}

// DeleteAdapter removes a tenant's adapter by name and returns it. Returns
// ENOTFOUND if there is none. Its size leaves its tenant's adapter
// storage in the same transaction; its usage stays in the ledger. The adapter
// keeps its place in the tenant's list for deletedAdapterKeep (for pages
// that start after it); places kept longer are forgotten here, a few at a
// time.
func (l *Ledger) DeleteAdapter(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
	var out *nozzle.Adapter
	now := l.now().UTC()
	err := l.write(ctx, func(w *wtx) error {
		a, err := getAdapter(w.tx, tenantID, name)
		if err != nil {
			return err
		}
		if err := w.tx.Bucket(bAdapterNames).Delete(join(lp(tenantID), []byte(name))); err != nil {
			return err
		}
		if err := w.tx.Bucket(bAdapterSHA).Delete(join(lp(a.SHA256), []byte(a.ID))); err != nil {
			return err
		}
		if err := addAdapterStorage(w.tx, a, -1); err != nil {
			return err
		}
		if err := forgetDeletedAdapters(w.tx, now.Add(-deletedAdapterKeep), 64); err != nil {
			return err
		}
		g := &deletedAdapter{TenantID: tenantID, Name: name, DeletedAt: now}
		if err := w.tx.Bucket(bAdapterGone).Put([]byte(a.ID), encodeDeletedAdapter(g)); err != nil {
			return err
		}
		if err := w.tx.Bucket(bAdapterGoneAt).Put(join(timeKey(now), []byte(a.ID)), []byte{}); err != nil {
			return err
		}
		out = a
		return w.tx.Bucket(bAdapters).Delete([]byte(a.ID))
	})
	return out, err
}

// forgetDeletedAdapters drops up to n of the places of adapters deleted
// at or before a time, oldest first.
func forgetDeletedAdapters(tx *bolt.Tx, until time.Time, n int) error {
	at, gone := tx.Bucket(bAdapterGoneAt), tx.Bucket(bAdapterGone)
	end := timeKey(until)
	var drop [][]byte
	c := at.Cursor()
	for k, _ := c.First(); k != nil && len(drop) < n && len(k) >= 8 && bytes.Compare(k[:8], end) <= 0; k, _ = c.Next() {
		drop = append(drop, bytes.Clone(k))
	}
	for _, k := range drop {
		if err := at.Delete(k); err != nil {
			return err
		}
		if len(k) > 8 {
			if err := gone.Delete(k[8:]); err != nil {
				return err
			}
		}
	}
	return nil
}

// AdapterRefs returns how many adapters (of any tenant) use the files with
// the given content address.
func (l *Ledger) AdapterRefs(ctx context.Context, sha256 string) (int, error) {
	n := 0
	err := l.view(func(tx *bolt.Tx) error {
		prefix := lp(sha256)
		c := tx.Bucket(bAdapterSHA).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// AdapterStorageUsed returns the sum of the sizes of a tenant's adapters,
// the storage its quota counts, from the running total the ledger keeps
// with the adapters (adapter_storage): one read, however many adapters the
// tenant has. A tenant with no adapters (or none known) uses 0.
func (l *Ledger) AdapterStorageUsed(ctx context.Context, tenantID string) (int64, error) {
	var st adapterStorage
	err := l.view(func(tx *bolt.Tx) (err error) {
		st, err = getAdapterStorage(tx.Bucket(bAdapterBytes), tenantID)
		return err
	})
	return st.Bytes, err
}

// adapterStorage is what adapter_storage keeps of a tenant: the sum of its
// adapters' sizes and their number. A tenant without adapters has no
// entry.
type adapterStorage struct {
	Bytes    int64
	Adapters uint64
}

func encodeAdapterStorage(st adapterStorage) []byte {
	e := enc{}
	e.u8(valueV1)
	e.varint(st.Bytes)
	e.uvarint(st.Adapters)
	return e.b
}

func decodeAdapterStorage(b []byte) (adapterStorage, error) {
	d := dec{b: b}
	if d.u8() != valueV1 {
		d.fail()
	}
	st := adapterStorage{Bytes: d.varint(), Adapters: d.uvarint()}
	if err := d.done("adapter storage"); err != nil {
		return adapterStorage{}, err
	}
	return st, nil
}

func getAdapterStorage(b *bolt.Bucket, tenantID string) (adapterStorage, error) {
	v := b.Get([]byte(tenantID))
	if v == nil {
		return adapterStorage{}, nil
	}
	return decodeAdapterStorage(v)
}

// putAdapterStorage stores a tenant's total, or drops it when the tenant
// has no adapters left.
func putAdapterStorage(b *bolt.Bucket, tenantID string, st adapterStorage) error {
	if st.Adapters == 0 {
		return b.Delete([]byte(tenantID))
	}
	return b.Put([]byte(tenantID), encodeAdapterStorage(st))
}

// addAdapterStorage counts an adapter stored (sign 1) or deleted (sign -1)
// in its tenant's total, in the transaction that stores or deletes it.
func addAdapterStorage(tx *bolt.Tx, a *nozzle.Adapter, sign int) error {
	b := tx.Bucket(bAdapterBytes)
	st, err := getAdapterStorage(b, a.TenantID)
	if err != nil {
		return err
	}
	if sign > 0 {
		st.Bytes += a.SizeBytes
		st.Adapters++
	} else if st.Adapters > 0 {
		st.Bytes -= a.SizeBytes
		st.Adapters--
	} // else the total is damaged (Check reports it): a delete still goes on
	return putAdapterStorage(b, a.TenantID, st)
}

// adapterStorageSums adds up the adapters' sizes by tenant. A record that
// does not decode is passed to bad (when not nil) and left out.
func adapterStorageSums(tx *bolt.Tx, bad func(k []byte, err error)) (map[string]adapterStorage, error) {
	sums := map[string]adapterStorage{}
	err := tx.Bucket(bAdapters).ForEach(func(k, v []byte) error {
		a, err := decodeAdapter(v)
		if err != nil {
			if bad != nil {
				bad(k, err)
			}
			return nil
		}
		st := sums[a.TenantID]
		st.Bytes += a.SizeBytes
		st.Adapters++
		sums[a.TenantID] = st
		return nil
	})
	return sums, err
}
