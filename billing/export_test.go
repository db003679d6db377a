package billing

import (
	"encoding/binary"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// SetSchemaVersionForTest creates a ledger file stamped with version v.
func SetSchemaVersionForTest(path string, v int) error {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return err
		}
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], uint32(v))
		return b.Put(metaVersion, buf[:])
	})
}

// FileVersion is the schema version stamped in l's file.
func FileVersion(l *Ledger) (v int, err error) {
	err = l.db.View(func(tx *bolt.Tx) error { v, err = schemaVersion(tx); return err })
	return v, err
}

// DeletedAdapterPlaces is how many deleted adapters keep their place in
// their tenant's list (adapters_deleted), checked against its time index.
func DeletedAdapterPlaces(tb testing.TB, l *Ledger) int {
	tb.Helper()
	var n, m int
	err := l.db.View(func(tx *bolt.Tx) error {
		n, m = tx.Bucket(bAdapterGone).Stats().KeyN, tx.Bucket(bAdapterGoneAt).Stats().KeyN
		return nil
	})
	if err != nil || n != m {
		tb.Fatalf("adapters_deleted holds %d, adapters_deleted_at %d: %v", n, m, err)
	}
	return n
}
