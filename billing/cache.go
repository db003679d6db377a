package billing

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nozzle-ai/nozzle"
)

// authCache keeps the decoded keys (by digest), tenants (by id) and price
// histories (by tenant id) that every API request looks up, so that the
// request path neither opens a read transaction nor decodes a record.
//
// The cache is coherent by generation: every commit that changed a key, a
// tenant or a price bumps gen before its writers learn that it committed, and an
// entry is used only while the generation it was read under is current.
// A reader stores what it read only if gen did not move while it read, so
// a value read before a commit can never be kept after it: a revoked key
// or a suspended tenant is refused on the very next request.
type authCache struct {
	gen atomic.Uint64

	mu      sync.RWMutex
	at      uint64 // generation of the entries below
	keys    map[string]nozzle.APIKey
	tenants map[string]nozzle.Tenant
	prices  map[string][]priceVersion // never modified once stored
}

// invalidate drops every entry; called after a commit that changed keys,
// tenants or prices, before that commit is reported.
func (c *authCache) invalidate() { c.gen.Add(1) }

func (c *authCache) key(digest string) (*nozzle.APIKey, uint64, bool) {
	k, g, ok := cached(c, &c.keys, digest)
	if !ok {
		return nil, g, false
	}
	k.Scopes = slices.Clone(k.Scopes)
	return &k, g, true
}

func (c *authCache) tenant(id string) (*nozzle.Tenant, uint64, bool) {
	t, g, ok := cached(c, &c.tenants, id)
	if !ok {
		return nil, g, false
	}
	return &t, g, true
}

// knowsTenant reports whether tenant id is cached, without copying it.
func (c *authCache) knowsTenant(id string) bool {
	_, _, ok := cached(c, &c.tenants, id)
	return ok
}

func (c *authCache) priceHistory(tenantID string) ([]priceVersion, uint64, bool) {
	return cached(c, &c.prices, tenantID)
}

// cached looks k up in *m, one of c's maps, if its entries are current;
// it returns the generation to store a fresh read under otherwise.
func cached[V any](c *authCache, m *map[string]V, k string) (V, uint64, bool) {
	g := c.gen.Load()
	c.mu.RLock()
	defer c.mu.RUnlock()
	var v V
	if c.at != g {
		return v, g, false
	}
	v, ok := (*m)[k]
	return v, g, ok
}

// putKey stores a key read under generation g.
func (c *authCache) putKey(g uint64, digest string, k *nozzle.APIKey) {
	c.put(g, func() {
		v := *k
		v.Scopes = slices.Clone(k.Scopes)
		c.keys[digest] = v
	})
}

// putTenant stores a tenant read under generation g.
func (c *authCache) putTenant(g uint64, t *nozzle.Tenant) {
	c.put(g, func() { c.tenants[t.ID] = *t })
}

// putPrices stores a tenant's price history read under generation g.
func (c *authCache) putPrices(g uint64, tenantID string, hist []priceVersion) {
	c.put(g, func() { c.prices[tenantID] = hist })
}

func (c *authCache) put(g uint64, store func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != g {
		return // something changed while the value was read
	}
	if c.at != g || c.keys == nil {
		c.at = g
		c.keys = map[string]nozzle.APIKey{}
		c.tenants = map[string]nozzle.Tenant{}
		c.prices = map[string][]priceVersion{}
	}
	store()
}
