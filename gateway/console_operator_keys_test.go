package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle/gateway"
)

// syncBuffer is a log's output that tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// records returns the JSON log records with the message msg.
func (s *syncBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestConsole_OperatorRevokesKey: the operator revokes one of a tenant's
// API keys from the tenant's page, after a confirmation naming the key,
// through the admin API's handler (the service call a tenant's own revoke
// makes): the key is refused by the API from the next request on, the
// tenant's other keys and other tenants' keys work on, and the log says
// which operator revoked which key.
func TestConsole_OperatorRevokesKey(t *testing.T) {
	var logs syncBuffer
	f := newConsoleFixtureGateway(t, func(c *gateway.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	b, first := f.tenantUser("acme")
	_, boltKey := f.tenantUser("bolt")
	resp, body := b.api(http.MethodPost, "/console/api/keys", `{"name": "ci"}`)
	wantConsoleStatus(t, resp, http.StatusCreated, body)
	var ci struct{ ID, Key, Prefix string }
	if err := json.Unmarshal([]byte(body), &ci); err != nil || ci.Key == "" {
		t.Fatalf("new key %s: %v", body, err)
	}
	models := func(key string) int {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := f.srv.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := models(ci.Key); got != http.StatusOK {
		t.Fatalf("the key before it is revoked: %d", got)
	}
	u, _ := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	bolt, _ := f.deps.Users.UserByEmail(t.Context(), "dev@bolt.test")
	op := f.operator()
	path := "/console/api/operator/tenants/" + u.TenantID + "/keys/" + ci.ID
	_, page := op.page("/console/operator/tenants/" + u.TenantID)
	row := regexp.MustCompile(`(?s)<tr data-key="` + ci.ID + `"><th scope="row">ci</th>.*?</tr>`).FindString(page)
	if !strings.Contains(row, `data-confirm="Revoke acme's key “ci” (`+ci.Prefix+`)? Requests using it are refused at once`) ||
		!strings.Contains(row, `data-confirm-label="Revoke key" data-method="DELETE" data-url="`+path+`" aria-label="Revoke ci, `+ci.Prefix+`">Revoke</button>`) {
		t.Errorf("no Revoke button with a confirmation naming the key in the row:\n%s", row)
	}

	t.Run("Refused", func(t *testing.T) {
		resp, body := op.api(http.MethodDelete, "/console/api/operator/tenants/"+u.TenantID+"/keys/nope", "")
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
		keys, _ := f.deps.Keys.Keys(t.Context(), bolt.TenantID) // another tenant's key, named under acme
		resp, body = op.api(http.MethodDelete, "/console/api/operator/tenants/"+u.TenantID+"/keys/"+keys[0].ID, "")
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
		resp, body = op.api(http.MethodDelete, "/console/api/operator/tenants/nope/keys/"+ci.ID, "")
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
		resp, body = b.api(http.MethodDelete, path, "") // a tenant's user is no operator
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		resp = op.do(http.MethodDelete, path, nil) // no CSRF token
		body = readAll(t, resp)
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		if got := models(ci.Key); got != http.StatusOK {
			t.Fatalf("a refused revoke revoked the key: %d", got)
		}
		if n := len(logs.records(t, "API key revoked by an operator")); n != 0 {
			t.Errorf("%d revokes logged for refused requests", n)
		}
	})

	resp, body = op.api(http.MethodDelete, path, "")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	if !strings.Contains(body, `"deleted":true`) {
		t.Errorf("answer %s", body)
	}
	if got := models(ci.Key); got != http.StatusUnauthorized {
		t.Errorf("the revoked key: %d, want 401", got)
	}
	for name, key := range map[string]string{"the tenant's other key": first, "another tenant's key": boltKey} {
		if got := models(key); got != http.StatusOK {
			t.Errorf("%s: %d", name, got)
		}
	}
	// The tenant sees it revoked, on its own list.
	resp, body = b.api(http.MethodGet, "/console/api/keys", "")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	var list struct {
		Data []struct {
			ID        string `json:"id"`
			RevokedAt *int64 `json:"revoked_at"`
		} `json:"data"`
	}
	json.Unmarshal([]byte(body), &list)
	for _, k := range list.Data {
		if (k.RevokedAt != nil) != (k.ID == ci.ID) {
			t.Errorf("key %s revoked at %v", k.ID, k.RevokedAt)
		}
	}
	_, page = op.page("/console/operator/tenants/" + u.TenantID)
	row = regexp.MustCompile(`(?s)<tr data-key="` + ci.ID + `" class="revoked">.*?</tr>`).FindString(page)
	if !strings.Contains(row, `<span class="badge badge-muted">Revoked</span>`) || strings.Contains(row, "<button") {
		t.Errorf("the revoked key's row:\n%s", row)
	}
	// The log: who revoked which key of which tenant.
	recs := logs.records(t, "API key revoked by an operator")
	if len(recs) != 1 {
		t.Fatalf("%d log records of the revoke", len(recs))
	}
	opUser, _ := f.deps.Users.UserByEmail(t.Context(), opEmail)
	for k, want := range map[string]any{"level": "INFO", "operator": opEmail, "operator_id": opUser.ID, "tenant_id": u.TenantID, "tenant": "acme",
		"key_id": ci.ID, "key_name": "ci", "key_prefix": ci.Prefix, "already_revoked": false} {
		if recs[0][k] != want {
			t.Errorf("log %s = %v, want %v (%v)", k, recs[0][k], want, recs[0])
		}
	}
	if id, _ := recs[0]["request_id"].(string); id == "" {
		t.Errorf("no request id in %v", recs[0])
	}
}
