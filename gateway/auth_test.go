package gateway_test

import (
	"net/http"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

func TestAuth(t *testing.T) {
	f := newFixture(t)
	t.Run("OK", func(t *testing.T) {
		if resp := f.do(http.MethodGet, "/v1/models", "", f.authA()); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
		}
	})
	t.Run("Missing", func(t *testing.T) {
		resp := f.do(http.MethodGet, "/v1/models", "")
		if got := resp.Header.Get("WWW-Authenticate"); got == "" {
			t.Error("no WWW-Authenticate header")
		}
		wantError(t, resp, 401, "invalid_request_error", "invalid_api_key", "")
	})
	t.Run("MalformedNoLookup", func(t *testing.T) {
		before := f.w.digestLookups.Load()
		last := "x" // a checksum character changed: the key no longer checks out
		if f.keyA[len(f.keyA)-1] == 'x' {
			last = "y"
		}
		for _, k := range []string{"sk-not-ours", "nz-short", f.keyA[:len(f.keyA)-1] + last, f.keyA + "0"} {
			wantError(t, f.do(http.MethodGet, "/v1/models", "", bearer(k)), 401, "invalid_request_error", "invalid_api_key", "")
		}
		if n := f.w.digestLookups.Load() - before; n != 0 {
			t.Errorf("%d key lookups for malformed keys, want 0", n)
		}
	})
	t.Run("Unknown", func(t *testing.T) {
		secret, _ := nozzle.NewKeySecret()
		wantError(t, f.do(http.MethodGet, "/v1/models", "", bearer(secret)), 401, "invalid_request_error", "invalid_api_key", "")
	})
	t.Run("RevokedOnNextRequest", func(t *testing.T) {
		resp := f.do(http.MethodPost, "/v1/keys", `{"name":"temp"}`, f.authA())
		var k struct{ ID, Key string }
		decode(t, resp, &k)
		if r := f.do(http.MethodGet, "/v1/models", "", bearer(k.Key)); r.StatusCode != 200 {
			t.Fatalf("new key: status %d", r.StatusCode)
		}
		if r := f.do(http.MethodDelete, "/v1/keys/"+k.ID, "", f.authA()); r.StatusCode != 200 {
			t.Fatalf("revoke: status %d: %s", r.StatusCode, readAll(t, r))
		}
		wantError(t, f.do(http.MethodGet, "/v1/models", "", bearer(k.Key)), 401, "invalid_request_error", "invalid_api_key", "")
	})
	t.Run("Suspended", func(t *testing.T) {
		f.updateTenant(f.tenantB.ID, func(tn *nozzle.Tenant) { tn.Suspended = true })
		defer f.updateTenant(f.tenantB.ID, func(tn *nozzle.Tenant) { tn.Suspended = false })
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(f.keyB)), 403, "permission_error", "tenant_suspended", "")
		if n := len(f.events()); n != 0 {
			t.Errorf("%d usage events, want 0", n)
		}
	})
	t.Run("MissingScope", func(t *testing.T) {
		resp := f.do(http.MethodPost, "/v1/keys", `{"name":"usage only","scopes":["usage"]}`, f.authA())
		var k struct{ Key string }
		decode(t, resp, &k)
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(k.Key)), 403, "permission_error", "missing_scope", "")
		wantError(t, f.do(http.MethodGet, "/v1/adapters", "", bearer(k.Key)), 403, "permission_error", "missing_scope", "")
		if r := f.do(http.MethodGet, "/v1/usage", "", bearer(k.Key)); r.StatusCode != 200 {
			t.Errorf("usage with usage scope: %d", r.StatusCode)
		}
		wantError(t, f.do(http.MethodPost, "/v1/keys", `{"scopes":[]}`, f.authA()), 400, "invalid_request_error", "", "scopes")
		// A key cannot mint a key with more scopes than it has.
		wantError(t, f.do(http.MethodPost, "/v1/keys", `{"scopes":["inference"]}`, bearer(k.Key)), 403, "permission_error", "missing_scope", "scopes")
		// Nor revoke one: a usage key cannot take the full key away; the
		// full key revokes it, and a key revokes itself.
		var full, self struct{ ID, Key string }
		decode(t, f.do(http.MethodPost, "/v1/keys", `{"name":"full"}`, f.authA()), &full)
		decode(t, f.do(http.MethodPost, "/v1/keys", `{"name":"usage 2","scopes":["usage"]}`, f.authA()), &self)
		wantError(t, f.do(http.MethodDelete, "/v1/keys/"+full.ID, "", bearer(k.Key)), 403, "permission_error", "missing_scope", "scopes")
		if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(full.Key)); r.StatusCode != 200 {
			t.Errorf("the full key after a refused revocation: %d", r.StatusCode)
		}
		if r := f.do(http.MethodDelete, "/v1/keys/"+self.ID, "", bearer(k.Key)); r.StatusCode != 200 {
			t.Errorf("a usage key revoking a usage key: %d %s", r.StatusCode, readAll(t, r))
		}
		if r := f.do(http.MethodDelete, "/v1/keys/"+self.ID, "", bearer(self.Key)); r.StatusCode != 401 {
			t.Errorf("a revoked key: %d", r.StatusCode)
		}
	})
	t.Run("LimitsNotWidened", func(t *testing.T) {
		resp := f.do(http.MethodPost, "/v1/keys", `{"name":"limited","limits":{"requests_per_minute":2,"tokens_per_minute":1000}}`, f.authA())
		var k struct{ Key string }
		decode(t, resp, &k)
		for _, body := range []string{
			`{"limits":{"requests_per_minute":0,"tokens_per_minute":1000}}`, // 0: no limit
			`{"limits":{"requests_per_minute":3,"tokens_per_minute":1000}}`,
			`{"limits":{"requests_per_minute":2}}`,
		} {
			wantError(t, f.do(http.MethodPost, "/v1/keys", body, bearer(k.Key)), 403, "permission_error", "limit_exceeds_own", "")
		}
		// Narrower limits are granted; none asked for: the creator's.
		for body, want := range map[string]nozzle.Limits{
			`{"limits":{"requests_per_minute":1,"tokens_per_minute":500}}`: {RequestsPerMinute: 1, TokensPerMinute: 500},
			`{"name":"same"}`: {RequestsPerMinute: 2, TokensPerMinute: 1000},
		} {
			resp := f.do(http.MethodPost, "/v1/keys", body, bearer(k.Key))
			var got struct{ Limits nozzle.Limits }
			decode(t, resp, &got)
			if got.Limits != want {
				t.Errorf("%s: limits %+v, want %+v", body, got.Limits, want)
			}
		}
	})
	t.Run("Admin", func(t *testing.T) {
		wantError(t, f.do(http.MethodGet, "/admin/tenants", ""), 401, "invalid_request_error", "", "")
		wantError(t, f.do(http.MethodGet, "/admin/tenants", "", bearer("wrong")), 401, "invalid_request_error", "", "")
		wantError(t, f.do(http.MethodGet, "/admin/tenants", "", f.authA()), 401, "invalid_request_error", "", "")
	})
}

func TestKeys(t *testing.T) {
	f := newFixture(t)
	resp := f.do(http.MethodPost, "/v1/keys", `{"name":"ci","scopes":["inference"],"limits":{"requests_per_minute":5}}`, f.authA())
	if resp.StatusCode != 201 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	var created struct {
		ID, Object, Name, Key, Prefix string
		Scopes                        []string
	}
	decode(t, resp, &created)
	if !nozzle.ValidKeyFormat(created.Key) || created.Prefix != nozzle.KeyDisplayPrefix(created.Key) || created.Object != "api_key" {
		t.Fatalf("created %+v", created)
	}
	// Only the digest is stored.
	f.w.mu.Lock()
	stored := f.w.keys[nozzle.KeyDigest(created.Key)]
	f.w.mu.Unlock()
	if stored == nil || stored.Name != "ci" || len(stored.Scopes) != 1 || stored.Limits.RequestsPerMinute != 5 {
		t.Fatalf("stored %+v", stored)
	}
	f.do(http.MethodGet, "/v1/models", "", bearer(created.Key))

	var list struct {
		Object string
		Data   []map[string]any
	}
	decode(t, f.do(http.MethodGet, "/v1/keys", "", f.authA()), &list)
	if list.Object != "list" || len(list.Data) != 2 {
		t.Fatalf("list %+v", list)
	}
	for _, k := range list.Data {
		if _, ok := k["key"]; ok {
			t.Errorf("list shows a secret: %v", k)
		}
		if k["id"] == created.ID && k["last_used_at"] == nil {
			t.Errorf("last_used_at not shown for a used key: %v", k)
		}
	}
	t.Run("TouchBatched", func(t *testing.T) {
		ctx := t.Context()
		if err := f.srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		f.w.mu.Lock()
		defer f.w.mu.Unlock()
		if _, ok := f.w.touched[created.ID]; !ok {
			t.Errorf("last use of %s not written on shutdown: %v", created.ID, f.w.touched)
		}
	})
}

func TestKeys_BadInput(t *testing.T) {
	f := newFixture(t)
	wantError(t, f.do(http.MethodPost, "/v1/keys", `{"scopes":["root"]}`, f.authA()), 400, "invalid_request_error", "", "scopes")
	wantError(t, f.do(http.MethodPost, "/v1/keys", `{"nmae":"typo"}`, f.authA()), 400, "invalid_request_error", "", "nmae")
	wantError(t, f.do(http.MethodPost, "/v1/keys", `{"name":5}`, f.authA()), 400, "invalid_request_error", "", "name")
	wantError(t, f.do(http.MethodPost, "/v1/keys", `{"name":"ci\u0000\nkey"}`, f.authA()), 400, "invalid_request_error", "", "name")
	// A scope named twice is held once.
	var dup struct{ Scopes []string }
	decode(t, f.do(http.MethodPost, "/v1/keys", `{"scopes":["inference","inference","usage"]}`, f.authA()), &dup)
	if len(dup.Scopes) != 2 || dup.Scopes[0] != "inference" || dup.Scopes[1] != "usage" {
		t.Errorf("scopes %v", dup.Scopes)
	}
	wantError(t, f.do(http.MethodDelete, "/v1/keys/key_999", "", f.authA()), 404, "invalid_request_error", "key_not_found", "")
	// Another tenant's key id is not found either.
	var list struct{ Data []struct{ ID string } }
	decode(t, f.do(http.MethodGet, "/v1/keys", "", bearer(f.keyB)), &list)
	wantError(t, f.do(http.MethodDelete, "/v1/keys/"+list.Data[0].ID, "", f.authA()), 404, "invalid_request_error", "key_not_found", "")
}
