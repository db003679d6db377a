package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Files and batches (the Files and Batch APIs' records; a file's contents
// are the gateway's, on disk). Both are kept under the tenant and the id
// (bucket files, bucket batches); the gateway's ids begin with their
// creation time, so a tenant's keys are in creation order. A value is a
// format byte followed by the JSON of the nozzle type. docs/LEDGER.md
// gives the buckets' keys and values.

// batchFormat is the format byte of a file's and a batch's value.
const batchFormat = 1

func fileKey(tenantID, id string) []byte { return join(lp(tenantID), []byte(id)) }

func encodeJSONRecord(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{batchFormat}, b...), nil
}

func decodeJSONRecord(b []byte, v any, what string) error {
	if len(b) < 2 || b[0] != batchFormat {
		return fmt.Errorf("%s: unknown format", what)
	}
	if err := json.Unmarshal(b[1:], v); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func validTenantAndID(tenantID, id string) bool {
	return tenantID != "" && id != "" && len(tenantID) <= maxIDLen && len(id) <= maxIDLen
}

// CreateFile records f.
func (l *Ledger) CreateFile(ctx context.Context, f *nozzle.File) error {
	if !validTenantAndID(f.TenantID, f.ID) || f.Bytes < 0 {
		return nozzle.Errorf(nozzle.EINVALID, "invalid file record")
	}
	v, err := encodeJSONRecord(f)
	if err != nil {
		return fmt.Errorf("encode file: %w", err)
	}
	return l.write(ctx, func(w *wtx) error {
		k := fileKey(f.TenantID, f.ID)
		b := w.tx.Bucket(bFiles)
		if b.Get(k) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "File %q exists already.", f.ID)
		}
		if err := b.Put(k, v); err != nil {
			return err
		}
		return addTenantBytes(w.tx, bFileBytes, f.TenantID, f.Bytes)
	})
}

func readFile(tx *bolt.Tx, tenantID, id string) (*nozzle.File, error) {
	if !validTenantAndID(tenantID, id) {
		return nil, nozzle.FileNotFound(id)
	}
	v := tx.Bucket(bFiles).Get(fileKey(tenantID, id))
	if v == nil {
		return nil, nozzle.FileNotFound(id)
	}
	f := &nozzle.File{}
	if err := decodeJSONRecord(v, f, "file "+id); err != nil {
		return nil, err
	}
	f.TenantID, f.ID = tenantID, id
	return f, nil
}

// File returns the tenant's file id.
func (l *Ledger) File(ctx context.Context, tenantID, id string) (*nozzle.File, error) {
	var out *nozzle.File
	err := l.view(func(tx *bolt.Tx) error {
		var err error
		out, err = readFile(tx, tenantID, id)
		return err
	})
	return out, err
}

// Files returns a page of the tenant's files.
func (l *Ledger) Files(ctx context.Context, tenantID string, q nozzle.FileQuery) ([]*nozzle.File, bool, error) {
	if q.Limit <= 0 {
		q.Limit = 10000
	}
	var out []*nozzle.File
	more := false
	err := l.view(func(tx *bolt.Tx) error {
		if q.After != "" {
			if _, err := readFile(tx, tenantID, q.After); err != nil {
				return nozzle.UnknownCursor("after", q.After)
			}
		}
		return scanTenant(tx.Bucket(bFiles), tenantID, q.After, !q.Ascending, func(v []byte) (bool, error) {
			f := &nozzle.File{}
			if err := decodeJSONRecord(v, f, "file"); err != nil {
				return false, err
			}
			if q.Purpose != "" && f.Purpose != q.Purpose {
				return true, nil
			}
			if len(out) == q.Limit {
				more = true
				return false, nil
			}
			out = append(out, f)
			return true, nil
		})
	})
	return out, more, err
}

// scanTenant calls fn with the values of the tenant's keys in bucket b,
// in key order or, with desc, the reverse, starting after the key of id
// after (empty: from the first), until fn says stop.
func scanTenant(b *bolt.Bucket, tenantID, after string, desc bool, fn func(v []byte) (bool, error)) error {
	prefix := lp(tenantID)
	c := b.Cursor()
	var k, v []byte
	switch {
	case after != "":
		at := fileKey(tenantID, after)
		k, v = c.Seek(at)
		if bytes.Equal(k, at) {
			if desc {
				k, v = c.Prev()
			} else {
				k, v = c.Next()
			}
		} else if desc {
			k, v = c.Prev()
		}
	case desc:
		// the last key of the prefix: seek past it, step back
		end := append(bytes.Clone(prefix), 0xff)
		if k, v = c.Seek(end); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	default:
		k, v = c.Seek(prefix)
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = cursorStep(c, desc) {
		ok, err := fn(v)
		if err != nil || !ok {
			return err
		}
	}
	return nil
}

func cursorStep(c *bolt.Cursor, desc bool) ([]byte, []byte) {
	if desc {
		return c.Prev()
	}
	return c.Next()
}

// FileBytes is the sum of the sizes of the tenant's files, kept in
// file_storage as files are recorded and deleted.
func (l *Ledger) FileBytes(ctx context.Context, tenantID string) (int64, error) {
	var sum int64
	err := l.view(func(tx *bolt.Tx) error {
		var err error
		sum, err = tenantBytes(tx, bFileBytes, tenantID)
		return err
	})
	return sum, err
}

// DeleteFile deletes the tenant's file id's record.
func (l *Ledger) DeleteFile(ctx context.Context, tenantID, id string) error {
	return l.write(ctx, func(w *wtx) error {
		f, err := readFile(w.tx, tenantID, id)
		if err != nil {
			return err
		}
		if err := w.tx.Bucket(bFiles).Delete(fileKey(tenantID, id)); err != nil {
			return err
		}
		return addTenantBytes(w.tx, bFileBytes, tenantID, -f.Bytes)
	})
}

// CreateBatch records b.
func (l *Ledger) CreateBatch(ctx context.Context, b *nozzle.Batch) error {
	if !validTenantAndID(b.TenantID, b.ID) {
		return nozzle.Errorf(nozzle.EINVALID, "invalid batch record")
	}
	v, err := encodeJSONRecord(b)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	return l.write(ctx, func(w *wtx) error {
		k := fileKey(b.TenantID, b.ID)
		bk := w.tx.Bucket(bBatches)
		if bk.Get(k) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "Batch %q exists already.", b.ID)
		}
		return bk.Put(k, v)
	})
}

func readBatch(tx *bolt.Tx, tenantID, id string) (*nozzle.Batch, error) {
	if !validTenantAndID(tenantID, id) {
		return nil, nozzle.BatchNotFound(id)
	}
	v := tx.Bucket(bBatches).Get(fileKey(tenantID, id))
	if v == nil {
		return nil, nozzle.BatchNotFound(id)
	}
	b := &nozzle.Batch{}
	if err := decodeJSONRecord(v, b, "batch "+id); err != nil {
		return nil, err
	}
	b.TenantID, b.ID = tenantID, id
	return b, nil
}

// Batch returns the tenant's batch id.
func (l *Ledger) Batch(ctx context.Context, tenantID, id string) (*nozzle.Batch, error) {
	var out *nozzle.Batch
	err := l.view(func(tx *bolt.Tx) error {
		var err error
		out, err = readBatch(tx, tenantID, id)
		return err
	})
	return out, err
}

// Batches returns a page of the tenant's batches, newest first.
func (l *Ledger) Batches(ctx context.Context, tenantID, after string, limit int) ([]*nozzle.Batch, bool, error) {
	if limit <= 0 {
		limit = 10000
	}
	var out []*nozzle.Batch
	more := false
	err := l.view(func(tx *bolt.Tx) error {
		if after != "" {
			if _, err := readBatch(tx, tenantID, after); err != nil {
				return nozzle.UnknownCursor("after", after)
			}
		}
		return scanTenant(tx.Bucket(bBatches), tenantID, after, true, func(v []byte) (bool, error) {
			b := &nozzle.Batch{}
			if err := decodeJSONRecord(v, b, "batch"); err != nil {
				return false, err
			}
			if len(out) == limit {
				more = true
				return false, nil
			}
			out = append(out, b)
			return true, nil
		})
	})
	return out, more, err
}

// UpdateBatch replaces the stored batch b.
func (l *Ledger) UpdateBatch(ctx context.Context, b *nozzle.Batch) error {
	v, err := encodeJSONRecord(b)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	return l.write(ctx, func(w *wtx) error {
		if _, err := readBatch(w.tx, b.TenantID, b.ID); err != nil {
			return err
		}
		return w.tx.Bucket(bBatches).Put(fileKey(b.TenantID, b.ID), v)
	})
}

// OpenBatches returns every tenant's batches not in a final state, by
// tenant and then oldest first. It reads the whole bucket: it runs once, when the gateway starts.
func (l *Ledger) OpenBatches(ctx context.Context) ([]*nozzle.Batch, error) {
	var out []*nozzle.Batch
	err := l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bBatches).ForEach(func(k, v []byte) error {
			b := &nozzle.Batch{}
			if err := decodeJSONRecord(v, b, "batch"); err != nil {
				return err
			}
			if !nozzle.BatchDone(b.Status) {
				out = append(out, b)
			}
			return nil
		})
	})
	return out, err
}

var _ nozzle.BatchStore = (*Ledger)(nil)
