package billing_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// The auth cache never serves what a committed write changed: a revoked
// key and a suspended tenant are refused on the very next lookup, even
// while other goroutines keep filling the cache.
func TestLedger_AuthCacheCoherent(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")

	newKey := func() (*nozzle.APIKey, string) {
		secret, _ := nozzle.NewKeySecret()
		k := &nozzle.APIKey{TenantID: ten.ID, Digest: nozzle.KeyDigest(secret), Scopes: []nozzle.Scope{nozzle.ScopeInference}}
		if err := l.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		return k, k.Digest
	}

	t.Run("CopiesOut", func(t *testing.T) {
		_, digest := newKey()
		a, err := l.KeyByDigest(ctx, digest)
		if err != nil {
			t.Fatal(err)
		}
		a.Scopes[0] = nozzle.ScopeAdapters
		a.TenantID = "ten_evil"
		b, err := l.KeyByDigest(ctx, digest)
		if err != nil || b.TenantID != ten.ID || b.Scopes[0] != nozzle.ScopeInference {
			t.Fatalf("a caller's change leaked into the cache: %+v, %v", b, err)
		}
		tt, _ := l.Tenant(ctx, ten.ID)
		tt.Suspended = true
		if tt2, _ := l.Tenant(ctx, ten.ID); tt2.Suspended {
			t.Fatal("a caller's change to a tenant leaked into the cache")
		}
	})

	t.Run("RevokeUnderLoad", func(t *testing.T) {
		for round := 0; round < 20; round++ {
			k, digest := newKey()
			var stop atomic.Bool
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						l.KeyByDigest(ctx, digest)
						l.Tenant(ctx, ten.ID)
					}
				}()
			}
			if _, err := l.KeyByDigest(ctx, digest); err != nil {
				t.Fatal(err)
			}
			if err := l.RevokeKey(ctx, ten.ID, k.ID); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 200; i++ {
				if _, err := l.KeyByDigest(ctx, digest); nozzle.ErrorCode(err) != nozzle.EUNAUTHORIZED {
					stop.Store(true)
					wg.Wait()
					t.Fatalf("round %d: revoked key still accepted after %d lookups: %v", round, i, err)
				}
			}
			stop.Store(true)
			wg.Wait()
		}
	})

	t.Run("SuspendAndResume", func(t *testing.T) {
		if got, _ := l.Tenant(ctx, ten.ID); got.Suspended {
			t.Fatal("suspended before the test")
		}
		yes, no := true, false
		if _, err := l.UpdateTenant(ctx, ten.ID, nozzle.TenantUpdate{Suspended: &yes}); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.Tenant(ctx, ten.ID); !got.Suspended {
			t.Fatal("suspension not seen by the next lookup")
		}
		if _, err := l.UpdateTenant(ctx, ten.ID, nozzle.TenantUpdate{Suspended: &no}); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.Tenant(ctx, ten.ID); got.Suspended {
			t.Fatal("resumption not seen by the next lookup")
		}
	})

	t.Run("UnknownNotCached", func(t *testing.T) {
		_, err := l.Tenant(ctx, "ten_missing")
		wantCode(t, err, nozzle.ENOTFOUND)
		secret, _ := nozzle.NewKeySecret()
		_, err = l.KeyByDigest(ctx, nozzle.KeyDigest(secret))
		wantCode(t, err, nozzle.EUNAUTHORIZED)
		k := &nozzle.APIKey{TenantID: ten.ID, Digest: nozzle.KeyDigest(secret)}
		if err := l.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		if _, err := l.KeyByDigest(ctx, k.Digest); err != nil {
			t.Fatalf("a key created after a failed lookup: %v", err)
		}
	})
}
