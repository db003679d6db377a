package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// principal is the authenticated caller of a tenant route.
type principal struct {
	key    *nozzle.APIKey
	tenant *nozzle.Tenant
	state  *keyState // rate-limit and last-use state; nil for console sessions
}

// sessionKeyPrefix begins the id of the synthetic key a console
// session's requests carry (sessionKey); a batch created on the console
// keeps it as its KeyID.
const sessionKeyPrefix = "console:"

// sessionKey is the synthetic key of a console user's requests: every
// scope, no limits of its own (the tenant's apply), its id naming the user.
func sessionKey(userID, tenantID string) *nozzle.APIKey {
	return &nozzle.APIKey{ID: sessionKeyPrefix + userID, TenantID: tenantID, Name: "console",
		Scopes: append([]nozzle.Scope(nil), nozzle.AllScopes...)}
}

// setPrincipal makes key and tenant the caller of the request. Console
// code that authenticates with a session calls it before reusing the
// tenant handlers; key may then be a synthetic key carrying the scopes the
// session grants.
func (s *Server) setPrincipal(c *fiber.Ctx, key *nozzle.APIKey, tenant *nozzle.Tenant) *principal {
	p := &principal{key: key, tenant: tenant}
	if st := stateOf(c); st != nil {
		st.principal = p
	}
	return p
}

// principalFrom returns the caller set by RequireKey or setPrincipal.
func principalFrom(c *fiber.Ctx) *principal {
	if st := stateOf(c); st != nil && st.principal != nil {
		return st.principal
	}
	return nil
}

func bearer(c *fiber.Ctx) (string, bool) {
	h := c.Get(fiber.HeaderAuthorization)
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	return strings.TrimSpace(h[7:]), true
}

var errNoKey = nozzle.Errorf(nozzle.EUNAUTHORIZED,
	"You didn't provide an API key. Provide it in the Authorization header using Bearer auth (Authorization: Bearer nz-...).").
	WithReason("invalid_api_key")

func errBadKey() error {
	return nozzle.Errorf(nozzle.EUNAUTHORIZED, "Incorrect API key provided.").WithReason("invalid_api_key")
}

// RequireKey authenticates the request with a tenant API key carrying
// scope. A malformed key is refused before any lookup; a revoked key is
// refused on the very next request (the revocation's commit clears the
// ledger's key cache); a suspended
// tenant gets 403, and so does a key without the scope.
func (s *Server) RequireKey(scope nozzle.Scope) fiber.Handler {
	return func(c *fiber.Ctx) error {
		secret, ok := bearer(c)
		if !ok || secret == "" {
			return errNoKey
		}
		if !nozzle.ValidKeyFormat(secret) {
			return errBadKey()
		}
		ctx := c.UserContext()
		key, err := s.deps.Keys.KeyByDigest(ctx, nozzle.KeyDigest(secret))
		if err != nil {
			if nozzle.ErrorCode(err) == nozzle.EUNAUTHORIZED || nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
				return errBadKey()
			}
			return err
		}
		if key.Revoked() {
			return errBadKey()
		}
		tenant, err := s.deps.Tenants.Tenant(ctx, key.TenantID)
		if err != nil {
			if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
				return errBadKey()
			}
			return err
		}
		if tenant.Suspended {
			return nozzle.Errorf(nozzle.EFORBIDDEN, "Your organization's access has been suspended. Contact the operator.").WithReason("tenant_suspended")
		}
		if !key.Has(scope) {
			return nozzle.Errorf(nozzle.EFORBIDDEN, "This API key lacks the %q scope needed for this request.", scope).WithReason("missing_scope")
		}
		p := s.setPrincipal(c, key, tenant)
		p.state = s.keyStates.get(key.ID)
		p.state.lastUsed.Store(time.Now().UnixNano())
		return c.Next()
	}
}

// tokenEqual compares a presented token with the configured one in
// constant time (over their digests, so lengths do not leak either).
func tokenEqual(presented, want string) bool {
	a := sha256.Sum256([]byte(presented))
	b := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && want != ""
}

// RequireAdmin authenticates the operator with Config.AdminToken.
func (s *Server) RequireAdmin() fiber.Handler {
	return func(c *fiber.Ctx) error {
		tok, ok := bearer(c)
		if !ok || s.cfg.AdminToken == "" || !tokenEqual(tok, s.cfg.AdminToken) {
			return nozzle.Errorf(nozzle.EUNAUTHORIZED, "Invalid admin token.").WithReason("invalid_admin_token")
		}
		return c.Next()
	}
}

// requireInternal authenticates a runtime with Config.InternalToken.
func (s *Server) requireInternal(c *fiber.Ctx) error {
	tok, ok := bearer(c)
	if !ok || s.cfg.InternalToken == "" || !tokenEqual(tok, s.cfg.InternalToken) {
		return nozzle.Errorf(nozzle.EUNAUTHORIZED, "Invalid internal token.").WithReason("invalid_internal_token")
	}
	return c.Next()
}

// keyState is what the gateway keeps in memory per API key: rate-limit
// buckets and the last-use time not yet written.
type keyState struct {
	mu       sync.Mutex
	requests bucket
	tokens   bucket

	lastUsed atomic.Int64 // unix nanoseconds
	written  atomic.Int64 // lastUsed value last written to the KeyService
}

// keyStates is a sharded map of key id → state: no global lock on the hot
// path.
type keyStateMap struct {
	shards [64]struct {
		mu sync.RWMutex
		m  map[string]*keyState
	}
}

func newKeyStateMap() *keyStateMap {
	ks := &keyStateMap{}
	for i := range ks.shards {
		ks.shards[i].m = map[string]*keyState{}
	}
	return ks
}

func shardOf(s string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

func (ks *keyStateMap) get(id string) *keyState {
	sh := &ks.shards[shardOf(id, len(ks.shards))]
	sh.mu.RLock()
	st := sh.m[id]
	sh.mu.RUnlock()
	if st != nil {
		return st
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if st = sh.m[id]; st == nil {
		st = &keyState{}
		sh.m[id] = st
	}
	return st
}

func (ks *keyStateMap) each(fn func(id string, st *keyState)) {
	for i := range ks.shards {
		sh := &ks.shards[i]
		sh.mu.RLock()
		for id, st := range sh.m {
			fn(id, st)
		}
		sh.mu.RUnlock()
	}
}

// touchLoop writes keys' last-use times every KeyTouchInterval.
func (s *Server) touchLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.KeyTouchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flushTouches(ctx)
		}
	}
}

// flushTouches writes the last-use times that changed since the last write,
// in one KeyService.TouchKeys call.
func (s *Server) flushTouches(ctx context.Context) {
	batch := map[string]time.Time{}
	var states []*keyState
	var values []int64
	s.keyStates.each(func(id string, st *keyState) {
		last := st.lastUsed.Load()
		if last != 0 && last != st.written.Load() {
			batch[id] = time.Unix(0, last).UTC()
			states = append(states, st)
			values = append(values, last)
		}
	})
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.deps.Keys.TouchKeys(ctx, batch); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "write key last-use times", slog.Int("keys", len(batch)), slog.String("error", err.Error()))
		return
	}
	for i, st := range states {
		st.written.Store(values[i])
	}
}
