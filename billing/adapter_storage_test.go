package billing

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

func storageAdapter(tenantID, name string, size int64) *nozzle.Adapter {
	return &nozzle.Adapter{TenantID: tenantID, Name: name,
		AdapterManifest: nozzle.AdapterManifest{SHA256: fmt.Sprintf("%064x", size), SizeBytes: size}}
}

// wantStorage fails the test unless the tenant's adapter storage is want
// and equals the sum of the sizes of its adapters.
func wantStorage(t *testing.T, l *Ledger, tenantID string, want int64) {
	t.Helper()
	ctx := context.Background()
	got, err := l.AdapterStorageUsed(ctx, tenantID)
	if err != nil || got != want {
		t.Fatalf("AdapterStorageUsed = %d, %v; want %d", got, err, want)
	}
	list, err := l.Adapters(ctx, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, a := range list {
		sum += a.SizeBytes
	}
	if sum != want {
		t.Fatalf("the adapters hold %d bytes, the total says %d", sum, want)
	}
}

// TestAdapterStorage_CreateDelete: the running total follows creates and
// deletes; a duplicate name, an unknown tenant or an invalid adapter
// changes nothing; another tenant's total is its own.
func TestAdapterStorage_CreateDelete(t *testing.T) {
	ctx := context.Background()
	l := openCompat(t, filepath.Join(t.TempDir(), "ledger.db"))
	acme, globex := &nozzle.Tenant{Name: "acme"}, &nozzle.Tenant{Name: "globex"}
	for _, ten := range []*nozzle.Tenant{acme, globex} {
		if err := l.CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	wantStorage(t, l, acme.ID, 0)
	for _, a := range []*nozzle.Adapter{storageAdapter(acme.ID, "sql", 1000), storageAdapter(acme.ID, "chat", 250), storageAdapter(globex.ID, "sql", 7)} {
		if err := l.CreateAdapter(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	wantStorage(t, l, acme.ID, 1250)
	wantStorage(t, l, globex.ID, 7)

	// Creates that fail count nothing.
	if err := l.CreateAdapter(ctx, storageAdapter(acme.ID, "sql", 99)); nozzle.ErrorCode(err) != nozzle.ECONFLICT {
		t.Fatalf("duplicate name: %v", err)
	}
	if err := l.CreateAdapter(ctx, storageAdapter("t_nobody", "sql", 99)); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("unknown tenant: %v", err)
	}
	if err := l.CreateAdapter(ctx, storageAdapter(acme.ID, "../x", 99)); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("invalid name: %v", err)
	}
	wantStorage(t, l, acme.ID, 1250)
	wantStorage(t, l, "t_nobody", 0)

	// A zero-sized adapter counts as an adapter of no bytes.
	if err := l.CreateAdapter(ctx, storageAdapter(acme.ID, "empty", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteAdapter(ctx, acme.ID, "sql"); err != nil {
		t.Fatal(err)
	}
	wantStorage(t, l, acme.ID, 250)
	if _, err := l.DeleteAdapter(ctx, acme.ID, "sql"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("deleting twice: %v", err)
	}
	wantStorage(t, l, acme.ID, 250)
	// The name is free again and counts afresh.
	if err := l.CreateAdapter(ctx, storageAdapter(acme.ID, "sql", 40)); err != nil {
		t.Fatal(err)
	}
	wantStorage(t, l, acme.ID, 290)
	for _, n := range []string{"sql", "chat", "empty"} {
		if _, err := l.DeleteAdapter(ctx, acme.ID, n); err != nil {
			t.Fatal(err)
		}
	}
	wantStorage(t, l, acme.ID, 0)
	wantStorage(t, l, globex.ID, 7)
	// A tenant without adapters has no entry left behind.
	err := l.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bAdapterBytes).Get([]byte(acme.ID)); v != nil {
			return fmt.Errorf("acme's emptied total is still stored: %x", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAdapterStorage_Concurrent: creates of one tenant committed together
// (group commit), duplicate names among them, keep the total right; and
// creates made under one lock with the quota check, as the gateway makes
// them, never pass the quota.
func TestAdapterStorage_Concurrent(t *testing.T) {
	ctx := context.Background()
	l := openCompat(t, filepath.Join(t.TempDir(), "ledger.db"))
	ten := &nozzle.Tenant{Name: "acme"}
	if err := l.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	// 64 writers, 32 names: each name is taken once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := int64(0)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := int64(100 + i)
			err := l.CreateAdapter(ctx, storageAdapter(ten.ID, fmt.Sprint("a", i%32), size))
			switch {
			case err == nil:
				mu.Lock()
				created += size
				mu.Unlock()
			case nozzle.ErrorCode(err) != nozzle.ECONFLICT:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	wantStorage(t, l, ten.ID, created)

	// Under the quota lock: 40 uploads of 1000 bytes into 25,500 bytes of
	// room left; 25 fit.
	other := &nozzle.Tenant{Name: "globex"}
	if err := l.CreateTenant(ctx, other); err != nil {
		t.Fatal(err)
	}
	const quota, size = 25_500, 1000
	var quotaMu sync.Mutex
	refused := 0
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			quotaMu.Lock()
			defer quotaMu.Unlock()
			used, err := l.AdapterStorageUsed(ctx, other.ID)
			if err != nil {
				t.Error(err)
				return
			}
			if used+size > quota {
				refused++
				return
			}
			if err := l.CreateAdapter(ctx, storageAdapter(other.ID, fmt.Sprint("q", i), size)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if refused != 15 {
		t.Errorf("%d refused, want 15", refused)
	}
	wantStorage(t, l, other.ID, 25*size)
	wantStorage(t, l, ten.ID, created)
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLedger_AdapterStorageMigration: a version 7 file opens at version 8
// with each tenant's adapter storage added up from its adapters (deleted
// ones left out), and the totals go on from there.
func TestLedger_AdapterStorageMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	acme, globex, initech := &nozzle.Tenant{Name: "acme"}, &nozzle.Tenant{Name: "globex"}, &nozzle.Tenant{Name: "initech"}
	for _, ten := range []*nozzle.Tenant{acme, globex, initech} {
		if err := l.CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if err := l.CreateAdapter(ctx, storageAdapter(acme.ID, fmt.Sprint("a", i), int64(1000+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.CreateAdapter(ctx, storageAdapter(globex.ID, "only", 5<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteAdapter(ctx, acme.ID, "a3"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 7, bAdapterBytes)

	l = openCompat(t, path)
	if v, err := FileVersion(l); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v after open", v, err)
	}
	wantAcme := int64(20*1000 + 19*20/2 - 1003)
	wantStorage(t, l, acme.ID, wantAcme)
	wantStorage(t, l, globex.ID, 5<<20)
	wantStorage(t, l, initech.ID, 0)
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteAdapter(ctx, acme.ID, "a0"); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateAdapter(ctx, storageAdapter(initech.ID, "new", 42)); err != nil {
		t.Fatal(err)
	}
	wantStorage(t, l, acme.ID, wantAcme-1000)
	wantStorage(t, l, initech.ID, 42)
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheck_AdapterStorage: a total that differs from its adapters, one
// missing, one for a tenant without adapters, or one that does not
// decode is reported.
func TestCheck_AdapterStorage(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		spoil func(b *bolt.Bucket, ten *nozzle.Tenant) error
		want  string
	}{
		{"Wrong", func(b *bolt.Bucket, ten *nozzle.Tenant) error {
			return b.Put([]byte(ten.ID), encodeAdapterStorage(adapterStorage{Bytes: 999, Adapters: 2}))
		}, "is 999 bytes in 2 adapters, its adapters hold 1250 bytes in 2"},
		{"Missing", func(b *bolt.Bucket, ten *nozzle.Tenant) error {
			return b.Delete([]byte(ten.ID))
		}, "is missing, its adapters hold 1250 bytes in 2"},
		{"Stray", func(b *bolt.Bucket, _ *nozzle.Tenant) error {
			return b.Put([]byte("t_ghost"), encodeAdapterStorage(adapterStorage{Bytes: 1, Adapters: 1}))
		}, `adapter storage of tenant "t_ghost" is 1 bytes in 1 adapters, its adapters hold 0 bytes in 0`},
		{"Damaged", func(b *bolt.Bucket, ten *nozzle.Tenant) error {
			return b.Put([]byte(ten.ID), []byte{9})
		}, "adapter storage of tenant"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := openCompat(t, filepath.Join(t.TempDir(), "ledger.db"))
			ten := &nozzle.Tenant{Name: "acme"}
			if err := l.CreateTenant(ctx, ten); err != nil {
				t.Fatal(err)
			}
			for _, a := range []*nozzle.Adapter{storageAdapter(ten.ID, "sql", 1000), storageAdapter(ten.ID, "chat", 250)} {
				if err := l.CreateAdapter(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := l.Check(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.db.Update(func(tx *bolt.Tx) error { return c.spoil(tx.Bucket(bAdapterBytes), ten) }); err != nil {
				t.Fatal(err)
			}
			res, err := l.Check(ctx)
			if !errors.Is(err, ErrInconsistent) || len(res.Problems) == 0 || !strings.Contains(strings.Join(res.Problems, "\n"), c.want) {
				t.Fatalf("check: %v, %v; want a problem with %q", res, err, c.want)
			}
		})
	}
}
