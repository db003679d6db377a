package gateway

import (
	"context"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// keyJSON is an API key as the API shows it; Key (the secret) only once,
// when it is created.
type keyJSON struct {
	ID         string         `json:"id"`
	Object     string         `json:"object"`
	Name       string         `json:"name"`
	Key        string         `json:"key,omitempty"`
	Prefix     string         `json:"prefix"`
	Scopes     []nozzle.Scope `json:"scopes"`
	Limits     nozzle.Limits  `json:"limits"`
	CreatedAt  int64          `json:"created_at"`
	LastUsedAt *int64         `json:"last_used_at"`
	RevokedAt  *int64         `json:"revoked_at"`
}

func unixOrNil(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func (s *Server) toKeyJSON(k *nozzle.APIKey) keyJSON {
	last := k.LastUsedAt
	if st := s.keyStates.peek(k.ID); st != nil {
		if ns := st.lastUsed.Load(); ns != 0 && time.Unix(0, ns).After(last) {
			last = time.Unix(0, ns)
		}
	}
	scopes := k.Scopes
	if scopes == nil {
		scopes = []nozzle.Scope{}
	}
	return keyJSON{ID: k.ID, Object: "api_key", Name: k.Name, Prefix: k.Prefix, Scopes: scopes, Limits: k.Limits,
		CreatedAt: k.CreatedAt.Unix(), LastUsedAt: unixOrNil(last), RevokedAt: unixOrNil(k.RevokedAt)}
}

// keyRequest is the body of a key creation.
type keyRequest struct {
	Name   string         `json:"name"`
	Scopes []nozzle.Scope `json:"scopes"`
	Limits *nozzle.Limits `json:"limits"`
}

func (r *keyRequest) validate() error {
	r.Name = strings.TrimSpace(r.Name)
	if len(r.Name) > 100 {
		return invalid("name", "Key name must be at most 100 characters.")
	}
	if strings.IndexFunc(r.Name, unicode.IsControl) >= 0 || !utf8.ValidString(r.Name) {
		return invalid("name", "Key name must not hold control characters.")
	}
	if r.Scopes != nil && len(r.Scopes) == 0 {
		// Left out is the default; an empty list is a key that could do
		// nothing, most likely every box unticked by mistake.
		return invalid("scopes", "A key needs at least one scope: inference, adapters or usage.")
	}
	var scopes []nozzle.Scope
	for _, sc := range r.Scopes {
		switch sc {
		case nozzle.ScopeInference, nozzle.ScopeAdapters, nozzle.ScopeUsage:
		default:
			return invalid("scopes", "Unknown scope %q: use inference, adapters or usage.", sc)
		}
		if !slices.Contains(scopes, sc) { // a scope named twice is held once
			scopes = append(scopes, sc)
		}
	}
	if r.Scopes != nil {
		r.Scopes = scopes
	}
	if r.Limits != nil {
		return r.Limits.Validate()
	}
	return nil
}

// issueKey creates a key for a tenant and returns it with its secret.
func (s *Server) issueKey(ctx context.Context, tenantID string, r keyRequest) (*nozzle.APIKey, string, error) {
	secret, err := nozzle.NewKeySecret()
	if err != nil {
		return nil, "", err
	}
	scopes := r.Scopes
	if len(scopes) == 0 {
		scopes = append([]nozzle.Scope(nil), nozzle.AllScopes...)
	}
	k := &nozzle.APIKey{
		TenantID: tenantID,
		Name:     r.Name,
		Prefix:   nozzle.KeyDisplayPrefix(secret),
		Digest:   nozzle.KeyDigest(secret),
		Scopes:   scopes,
	}
	if r.Limits != nil {
		k.Limits = *r.Limits
	}
	if err := s.deps.Keys.CreateKey(ctx, k); err != nil {
		return nil, "", err
	}
	return k, secret, nil
}

// createKey handles POST /v1/keys. A key can create keys with at most its
// own scopes and limits: a new key takes the creating key's scopes and
// limits unless the request narrows them.
func (s *Server) createKey(c *fiber.Ctx) error {
	p := principalFrom(c)
	var r keyRequest
	if err := s.readJSON(c, &r, true); err != nil {
		return err
	}
	if err := r.validate(); err != nil {
		return err
	}
	if len(r.Scopes) == 0 {
		r.Scopes = append([]nozzle.Scope(nil), p.key.Scopes...)
	}
	if r.Limits == nil {
		lim := p.key.Limits
		r.Limits = &lim
	}
	if err := within(p.key, r.Scopes, *r.Limits, "grant"); err != nil {
		return err
	}
	k, secret, err := s.issueKey(c.UserContext(), p.tenant.ID, r)
	if err != nil {
		return err
	}
	out := s.toKeyJSON(k)
	out.Key = secret
	return c.Status(fiber.StatusCreated).JSON(out)
}

// within refuses scopes a key does not have and limits looser than its own
// (0 is no limit): a key grants (creates) and revokes only keys it could
// stand in for.
func within(have *nozzle.APIKey, scopes []nozzle.Scope, limits nozzle.Limits, verb string) error {
	for _, sc := range scopes {
		if !have.Has(sc) {
			return nozzle.Errorf(nozzle.EFORBIDDEN, "A key cannot %s a key with the %q scope it does not have.", verb, sc).WithParam("scopes").WithReason("missing_scope")
		}
	}
	for _, l := range []struct {
		name       string
		want, have int
	}{{"requests_per_minute", limits.RequestsPerMinute, have.Limits.RequestsPerMinute}, {"tokens_per_minute", limits.TokensPerMinute, have.Limits.TokensPerMinute}} {
		if l.have > 0 && (l.want == 0 || l.want > l.have) {
			return nozzle.Errorf(nozzle.EFORBIDDEN, "A key limited to %d %s cannot %s a key allowed more (0 is no limit).", l.have, strings.ReplaceAll(l.name, "_", " "), verb).
				WithParam("limits." + l.name).WithReason("limit_exceeds_own")
		}
	}
	return nil
}

// listTenantKeys answers a page of a tenant's keys, revoked ones included,
// newest first.
func (s *Server) listTenantKeys(c *fiber.Ctx, tenantID string) error {
	q, err := pageQuery(c)
	if err != nil {
		return err
	}
	page, err := s.deps.Keys.KeyPage(c.UserContext(), tenantID, q, nozzle.AllKeys)
	if err != nil {
		return err
	}
	out := make([]keyJSON, 0, len(page.Data))
	for _, k := range page.Data {
		out = append(out, s.toKeyJSON(k))
	}
	return writePage(c, out, func(k keyJSON) string { return k.ID }, page.HasMore)
}

// listKeys handles GET /v1/keys: a page of the caller's tenant's keys.
func (s *Server) listKeys(c *fiber.Ctx) error {
	return s.listTenantKeys(c, principalFrom(c).tenant.ID)
}

func (s *Server) revokeTenantKey(c *fiber.Ctx, tenantID, id string) error {
	if err := s.deps.Keys.RevokeKey(c.UserContext(), tenantID, id); err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nozzle.Errorf(nozzle.ENOTFOUND, "No API key with id %q.", id).WithReason("key_not_found")
		}
		return err
	}
	return c.JSON(fiber.Map{"id": id, "object": "api_key", "deleted": true})
}

// revokeKey handles DELETE /v1/keys/{id}: a key revokes itself, or a key
// with at most its own scopes and limits.
func (s *Server) revokeKey(c *fiber.Ctx) error {
	p := principalFrom(c)
	id := strings.Clone(c.Params("id"))
	if id != p.key.ID {
		keys, err := s.deps.Keys.Keys(c.UserContext(), p.tenant.ID)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.ID == id {
				if err := within(p.key, k.Scopes, k.Limits, "revoke"); err != nil {
					return err
				}
				break
			}
		}
	}
	return s.revokeTenantKey(c, p.tenant.ID, id)
}

// peek returns a key's state if there is one, without creating it.
func (ks *keyStateMap) peek(id string) *keyState {
	sh := &ks.shards[shardOf(id, len(ks.shards))]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[id]
}
