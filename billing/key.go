package billing

import (
	"bytes"
	"context"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// CreateKey stores a key whose Digest and Prefix the caller has set,
// filling ID and CreatedAt (and the default scopes when none are given).
func (l *Ledger) CreateKey(ctx context.Context, k *nozzle.APIKey) error {
	if len(k.Digest) != 64 {
		return nozzle.Errorf(nozzle.EINVALID, "An API key needs the hex SHA-256 digest of its secret.")
	}
	if len(k.Name) > 100 {
		return nozzle.Errorf(nozzle.EINVALID, "Key name must be at most 100 characters.").WithParam("name")
	}
	for _, s := range k.Scopes {
		if s != nozzle.ScopeInference && s != nozzle.ScopeAdapters && s != nozzle.ScopeUsage {
			return nozzle.Errorf(nozzle.EINVALID, "Unknown scope %q.", s).WithParam("scopes")
		}
	}
	if err := k.Limits.Validate(); err != nil {
		return err
	}
	rec := *k
	rec.ID = newID("key_")
	rec.CreatedAt = l.now().UTC()
	if len(rec.Scopes) == 0 {
		rec.Scopes = append([]nozzle.Scope(nil), nozzle.AllScopes...)
	}
	err := l.write(ctx, func(w *wtx) error {
		if _, err := getTenant(w.tx, rec.TenantID); err != nil {
			return err
		}
		digests := w.tx.Bucket(bKeyDigests)
		if digests.Get([]byte(rec.Digest)) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "This API key is stored already.")
		}
		if err := digests.Put([]byte(rec.Digest), []byte(rec.ID)); err != nil {
			return err
		}
		if err := w.tx.Bucket(bTenantKeys).Put(tenantKeyKey(&rec), tenantKeyValue(&rec)); err != nil {
			return err
		}
		w.cacheChanged = true
		return w.tx.Bucket(bKeys).Put([]byte(rec.ID), encodeKey(&rec))
	})
	if err != nil {
		return err
	}
	*k = rec
	return nil
}

// KeyByDigest returns the key with the given digest. Returns EUNAUTHORIZED
// if there is none or it is revoked.
func (l *Ledger) KeyByDigest(ctx context.Context, digest string) (*nozzle.APIKey, error) {
	k, gen, ok := l.auth.key(digest)
	if ok {
		return k, nil // revoked keys are never cached
	}
	err := l.view(func(tx *bolt.Tx) error {
		id := tx.Bucket(bKeyDigests).Get([]byte(digest))
		if id == nil {
			return nozzle.Errorf(nozzle.EUNAUTHORIZED, "Incorrect API key provided.").WithReason("invalid_api_key")
		}
		v := tx.Bucket(bKeys).Get(id)
		if v == nil {
			return nozzle.Errorf(nozzle.EUNAUTHORIZED, "Incorrect API key provided.").WithReason("invalid_api_key")
		}
		var err error
		k, err = decodeKey(v)
		return err
	})
	if err != nil {
		return nil, err
	}
	if k.Revoked() {
		return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "This API key has been revoked.").WithReason("invalid_api_key")
	}
	l.auth.putKey(gen, digest, k)
	return k, nil
}

// Keys returns a tenant's keys, revoked ones included, newest first.
func (l *Ledger) Keys(ctx context.Context, tenantID string) ([]*nozzle.APIKey, error) {
	var out []*nozzle.APIKey
	err := l.view(func(tx *bolt.Tx) error {
		prefix := lp(tenantID)
		keys := tx.Bucket(bKeys)
		c := tx.Bucket(bTenantKeys).Cursor()
		for k, _ := seekLast(c, prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Prev() {
			key, ok, err := keyOfEntry(keys, prefix, k)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, key)
			}
		}
		return nil
	})
	return out, err
}

// keyOfEntry reads the key a tenant_keys entry (lp(tenant), creation
// time, id) names; ok is false when it is gone.
func keyOfEntry(keys *bolt.Bucket, prefix, k []byte) (*nozzle.APIKey, bool, error) {
	if len(k) <= len(prefix)+8 {
		return nil, false, nil
	}
	v := keys.Get(k[len(prefix)+8:])
	if v == nil {
		return nil, false, nil
	}
	key, err := decodeKey(v)
	return key, err == nil, err
}

// KeyPage returns one page of a tenant's keys that pass the filter, by
// creation (newest first unless q asks for ascending), read from
// tenant_keys; the filter reads the entries' revoked mark, not the keys.
// Revoked keys alone are by revocation (the last revoked first), read
// from tenant_keys_revoked.
func (l *Ledger) KeyPage(ctx context.Context, tenantID string, q nozzle.PageQuery, f nozzle.KeyFilter) (*nozzle.Page[*nozzle.APIKey], error) {
	p, param, id, err := pageSpec(q, nozzle.Descending)
	if err != nil {
		return nil, err
	}
	p.prefix = lp(tenantID)
	index, place := bTenantKeys, tenantKeyKey
	if f == nozzle.RevokedKeys {
		index, place = bRevokedKeys, revokedKeyKey
	}
	out := &nozzle.Page[*nozzle.APIKey]{}
	err = l.view(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bKeys)
		if id != "" {
			var k *nozzle.APIKey
			if v := keys.Get([]byte(id)); v != nil {
				var err error
				if k, err = decodeKey(v); err != nil {
					return err
				}
			}
			if k == nil || k.TenantID != tenantID {
				return nozzle.UnknownCursor(param, id)
			}
			// Among the revoked keys, one that is not revoked has the
			// place of the zero time: before every revoked one.
			p.from = place(k)
		}
		var err error
		out.Data, out.HasMore, err = readIndexPage(tx.Bucket(index).Cursor(), p, func(k, v []byte) (*nozzle.APIKey, bool, error) {
			if f == nozzle.ActiveKeys && len(v) > 0 {
				return nil, false, nil // revoked
			}
			return keyOfEntry(keys, p.prefix, k)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeKey revokes a tenant's key. Returns ENOTFOUND if the tenant has no
// such key. Revoking a revoked key is not an error.
func (l *Ledger) RevokeKey(ctx context.Context, tenantID, id string) error {
	now := l.now().UTC()
	return l.write(ctx, func(w *wtx) error {
		keys := w.tx.Bucket(bKeys)
		v := keys.Get([]byte(id))
		var k *nozzle.APIKey
		if v != nil {
			var err error
			if k, err = decodeKey(v); err != nil {
				return err
			}
		}
		if k == nil || k.TenantID != tenantID {
			return nozzle.Errorf(nozzle.ENOTFOUND, "No API key %q.", id)
		}
		if k.Revoked() {
			return nil
		}
		k.RevokedAt = now
		w.cacheChanged = true
		if err := w.tx.Bucket(bTenantKeys).Put(tenantKeyKey(k), tenantKeyValue(k)); err != nil {
			return err
		}
		if err := w.tx.Bucket(bRevokedKeys).Put(revokedKeyKey(k), []byte{}); err != nil {
			return err
		}
		return keys.Put([]byte(id), encodeKey(k))
	})
}

// TouchKeys records last-use times (key id → time) in one transaction.
// Unknown keys are skipped; a time earlier than the stored one is ignored.
func (l *Ledger) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	if len(lastUsed) == 0 {
		return nil
	}
	return l.write(ctx, func(w *wtx) error {
		keys := w.tx.Bucket(bKeys)
		for id, at := range lastUsed {
			v := keys.Get([]byte(id))
			if v == nil {
				continue
			}
			k, err := decodeKey(v)
			if err != nil {
				return err
			}
			if !at.After(k.LastUsedAt) {
				continue
			}
			k.LastUsedAt = at.UTC()
			w.cacheChanged = true
			if err := keys.Put([]byte(id), encodeKey(k)); err != nil {
				return err
			}
		}
		return nil
	})
}
