package gateway_test

import (
	"net/http"
	"strings"
	"testing"
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
