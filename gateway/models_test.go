package gateway_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/gateway"
)

func TestGetModel(t *testing.T) {
	f := newFixture(t)
	f.addAdapter(f.tenantA.ID, "support-bot", strings.Repeat("a", 64))
	f.addAdapter(f.tenantB.ID, "globex-secret", strings.Repeat("b", 64))
	for _, id := range []string{"base", "tiny-llama", "support-bot"} {
		var m struct{ ID, Object string }
		decode(t, f.do(http.MethodGet, "/v1/models/"+id, "", f.authA()), &m)
		if m.Object != "model" || (id != "base" && m.ID != id) {
			t.Errorf("%s: %+v", id, m)
		}
	}
	// SDKs escape the "/" of an org/name id; the answer names the id as
	// given, and another tenant's adapter does not exist.
	r := f.do(http.MethodGet, "/v1/models/org%2Fnope", "", f.authA())
	body := readAll(t, r)
	if r.StatusCode != 404 || !strings.Contains(body, "org/nope") || !strings.Contains(body, "model_not_found") {
		t.Errorf("%d %s", r.StatusCode, body)
	}
	wantError(t, f.do(http.MethodGet, "/v1/models/globex-secret", "", f.authA()), 404, "invalid_request_error", "model_not_found", "")
}

// TestModels_Created: the base model's "created" is the runtime's (its
// model folder's time, the same on every restart), and with several
// runtimes the earliest of theirs, whichever answers first, kept while
// one of them is down.
func TestModels_Created(t *testing.T) {
	created := func(f *fixture) int64 {
		t.Helper()
		var m struct{ Created int64 }
		decode(t, f.do(http.MethodGet, "/v1/models/base", "", f.authA()), &m)
		return m.Created
	}
	if got := created(newFixture(t)); got != 1700000000 {
		t.Errorf("created %d, want the runtime's 1700000000", got)
	}
	f := newFixture(t, withUpstreams(2), func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gens[1].created.Store(1690000000) })
	if got := created(f); got != 1690000000 {
		t.Errorf("created %d, want the earlier runtime's 1690000000", got)
	}
	f.gens[1].down.Store(true)
	f.srv.CheckUpstreams(t.Context())
	if got := created(f); got != 1690000000 {
		t.Errorf("with the earlier runtime down: created %d, want 1690000000 still", got)
	}
}
