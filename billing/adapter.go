package billing

import (
	"bytes"
	"context"
	"sort"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// CreateAdapter stores a new adapter, filling ID and CreatedAt. Returns
// ECONFLICT if the tenant already has an adapter of that name.
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
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// DeleteAdapter removes a tenant's adapter by name and returns it. Returns
// ENOTFOUND if there is none. Its usage stays in the ledger.
func (l *Ledger) DeleteAdapter(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
	var out *nozzle.Adapter
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
		out = a
		return w.tx.Bucket(bAdapters).Delete([]byte(a.ID))
	})
	return out, err
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
