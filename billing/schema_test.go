package billing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// asVersion6 turns a closed ledger's metadata back into schema version 6's
// layout: no tenant_order, tenant_keys_revoked or deleted adapters'
// asVersion turns a closed ledger back into an earlier schema version's
// layout: the buckets that version had not (drop) removed, the version
// written. A migration then has them to build.
func asVersion(t *testing.T, path string, version uint32, drop ...[]byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range drop {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], version)
		return tx.Bucket(bMeta).Put(metaVersion, v[:])
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// places, and tenant_keys keyed by lp(tenant) + key id with empty values.
func asVersion6(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bTenantOrder, bRevokedKeys, bAdapterGone, bAdapterGoneAt, bTenantKeys} {
			if err := tx.DeleteBucket(name); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		tk, err := tx.CreateBucket(bTenantKeys)
		if err != nil {
			return err
		}
		err = tx.Bucket(bKeys).ForEach(func(_, v []byte) error {
			k, err := decodeKey(v)
			if err != nil {
				return err
			}
			return tk.Put(join(lp(k.TenantID), []byte(k.ID)), nil)
		})
		if err != nil {
			return err
		}
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], 6)
		return tx.Bucket(bMeta).Put(metaVersion, v[:])
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestLedger_ListIndexMigration: a version 6 file opens at version 7 with
// the tenants, keys and revoked keys indexed in their lists' orders, so
// that pages read from the indexes list what the whole lists did.
func TestLedger_ListIndexMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	var tenants []*nozzle.Tenant
	for _, n := range []string{"acme", "globex", "initech"} {
		ten := &nozzle.Tenant{Name: n}
		if err := l.CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, ten)
	}
	acme := tenants[0].ID
	var keys []*nozzle.APIKey
	for i := range 6 {
		k := &nozzle.APIKey{TenantID: tenants[i%2].ID, Name: fmt.Sprint("k", i), Digest: strings.Repeat(fmt.Sprint(i), 64)}
		if err := l.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if err := l.RevokeKey(ctx, acme, keys[2].ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"sql", "chat", "code"} {
		if err := l.CreateAdapter(ctx, &nozzle.Adapter{TenantID: acme, Name: n, AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32)}}); err != nil {
			t.Fatal(err)
		}
	}
	wantTenants, _ := l.Tenants(ctx)
	wantKeys, _ := l.Keys(ctx, acme)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion6(t, path)

	l = openCompat(t, path)
	if v, err := FileVersion(l); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v after open", v, err)
	}
	tp, err := l.TenantPage(ctx, nozzle.PageQuery{Limit: 2, After: wantTenants[0].ID})
	if err != nil || len(tp.Data) != 2 || tp.Data[0].ID != wantTenants[1].ID || tp.Data[1].ID != wantTenants[2].ID || tp.HasMore {
		t.Fatalf("tenants after the first: %+v, %v", tp, err)
	}
	got, err := l.Keys(ctx, acme)
	if err != nil || len(got) != len(wantKeys) {
		t.Fatalf("Keys: %v, %v", got, err)
	}
	for i := range got {
		if got[i].ID != wantKeys[i].ID {
			t.Fatalf("Keys[%d] = %s, want %s", i, got[i].ID, wantKeys[i].ID)
		}
	}
	kp, err := l.KeyPage(ctx, acme, nozzle.PageQuery{}, nozzle.AllKeys)
	if err != nil || len(kp.Data) != 3 {
		t.Fatalf("acme's keys: %+v, %v", kp, err)
	}
	active, err := l.KeyPage(ctx, acme, nozzle.PageQuery{}, nozzle.ActiveKeys)
	if err != nil || len(active.Data) != 2 || slices.ContainsFunc(active.Data, (*nozzle.APIKey).Revoked) {
		t.Fatalf("acme's active keys: %+v, %v", active, err)
	}
	revoked, err := l.KeyPage(ctx, acme, nozzle.PageQuery{}, nozzle.RevokedKeys)
	if err != nil || len(revoked.Data) != 1 || revoked.Data[0].ID != keys[2].ID {
		t.Fatalf("acme's revoked keys: %+v, %v", revoked, err)
	}
	ap, err := l.AdapterPage(ctx, acme, nozzle.PageQuery{Limit: 2})
	if err != nil || len(ap.Data) != 2 || ap.Data[0].Name != "chat" || ap.Data[1].Name != "code" || !ap.HasMore {
		t.Fatalf("acme's adapters: %+v, %v", ap, err)
	}
	// Deleting keeps the adapter's place, in the buckets the migration made.
	del, err := l.DeleteAdapter(ctx, acme, "code")
	if err != nil {
		t.Fatal(err)
	}
	if ap, err = l.AdapterPage(ctx, acme, nozzle.PageQuery{After: del.ID}); err != nil || len(ap.Data) != 1 || ap.Data[0].Name != "sql" {
		t.Fatalf("after the deleted adapter: %+v, %v", ap, err)
	}
	// A new tenant joins the index (created in the same instant as the
	// others here, it has its place by its id).
	if err := l.CreateTenant(ctx, &nozzle.Tenant{Name: "umbrella"}); err != nil {
		t.Fatal(err)
	}
	all, _ := l.Tenants(ctx)
	if tp, err = l.TenantPage(ctx, nozzle.PageQuery{}); err != nil || len(tp.Data) != 4 {
		t.Fatalf("tenants: %+v, %v", tp, err)
	}
	for i := range all {
		if tp.Data[i].ID != all[i].ID {
			t.Fatalf("tenant page %d: %s, want %s", i, tp.Data[i].ID, all[i].ID)
		}
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheck_ListIndexes: an index entry missing, one too many, or a
// revoked mark that is wrong is reported.
func TestCheck_ListIndexes(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		spoil func(tx *bolt.Tx, ten *nozzle.Tenant, k *nozzle.APIKey) error
		want  string
	}{
		{"TenantMissing", func(tx *bolt.Tx, ten *nozzle.Tenant, _ *nozzle.APIKey) error {
			return tx.Bucket(bTenantOrder).Delete(tenantOrderKey(ten))
		}, "tenant index tenant_order misses 1 of 1 tenants"},
		{"KeyMarkWrong", func(tx *bolt.Tx, _ *nozzle.Tenant, k *nozzle.APIKey) error {
			return tx.Bucket(bTenantKeys).Put(tenantKeyKey(k), []byte{1})
		}, "key index tenant_keys holds"},
		{"RevokedStray", func(tx *bolt.Tx, _ *nozzle.Tenant, k *nozzle.APIKey) error {
			return tx.Bucket(bRevokedKeys).Put(revokedKeyKey(k), nil)
		}, "which names no revoked key"},
		{"AdapterStray", func(tx *bolt.Tx, ten *nozzle.Tenant, _ *nozzle.APIKey) error {
			return tx.Bucket(bAdapterNames).Put(join(lp(ten.ID), []byte("ghost")), []byte("ad_ghost"))
		}, "which names no adapter"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := openCompat(t, filepath.Join(t.TempDir(), "ledger.db"))
			ten := &nozzle.Tenant{Name: "acme"}
			if err := l.CreateTenant(ctx, ten); err != nil {
				t.Fatal(err)
			}
			k := &nozzle.APIKey{TenantID: ten.ID, Digest: strings.Repeat("1", 64)}
			if err := l.CreateKey(ctx, k); err != nil {
				t.Fatal(err)
			}
			if err := l.CreateAdapter(ctx, &nozzle.Adapter{TenantID: ten.ID, Name: "sql", AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32)}}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Check(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.db.Update(func(tx *bolt.Tx) error { return c.spoil(tx, ten, k) }); err != nil {
				t.Fatal(err)
			}
			res, err := l.Check(ctx)
			if !errors.Is(err, ErrInconsistent) || len(res.Problems) == 0 || !strings.Contains(strings.Join(res.Problems, "\n"), c.want) {
				t.Fatalf("check: %v, %v; want a problem with %q", res, err, c.want)
			}
		})
	}
}
