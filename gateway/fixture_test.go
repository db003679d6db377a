package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

const adminToken = "admin-secret-token"
const internalToken = "internal-secret-token"

// fixturePrice is the price of the fixture's tenants: the default one and
// a version of each tenant's own.
var fixturePrice = nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2, CachedPromptPerMillionUSD: 1}

// fixture is a gateway over mocks, with two tenants (a and b), each with a
// full-scope key.
type fixture struct {
	*mocks
	t         testing.TB
	w         *world
	srv       *gateway.Server
	gen       *fakeGen
	gens      []*fakeGen
	uploadDir string

	tenantA, tenantB *nozzle.Tenant
	keyA, keyB       string
}

type option func(*gateway.Config, *gateway.Deps, *fixture)

func withUpstreams(n int) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		d.Upstreams = nil
		f.gens = nil
		for i := 0; i < n; i++ {
			g := newFakeGen(f.w)
			g.runtimeID = "rt" + strconv.Itoa(i)
			f.gens = append(f.gens, g)
			d.Upstreams = append(d.Upstreams, gateway.Upstream{ID: g.runtimeID, Generator: g.mock()})
		}
		f.gen = f.gens[0]
	}
}

func withConfig(fn func(*gateway.Config)) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) { fn(c) }
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newFixture(t testing.TB, opts ...option) *fixture {
	t.Helper()
	w := newWorld(fixturePrice)
	f := &fixture{t: t, w: w, uploadDir: t.TempDir()}
	f.mocks = w.mocks()
	f.gen = newFakeGen(w)
	f.gens = []*fakeGen{f.gen}
	cfg := gateway.Config{
		AdminToken: adminToken, InternalToken: internalToken, UploadDir: f.uploadDir,
		Logger: quietLogger(), HealthInterval: time.Hour, KeyTouchInterval: time.Hour,
	}
	deps := f.mocks.deps()
	deps.Upstreams = []gateway.Upstream{{ID: "rt0", Generator: f.gen.mock()}}
	for _, o := range opts {
		o(&cfg, &deps, f)
	}
	srv, err := gateway.New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	f.tenantA, f.keyA = f.mustTenant("acme")
	f.tenantB, f.keyB = f.mustTenant("globex")
	for _, tn := range []*nozzle.Tenant{f.tenantA, f.tenantB} {
		_ = f.tenants.SetPrice(context.Background(), tn.ID, fixturePrice, time.Unix(0, 0).UTC())
	}
	return f
}

// mustTenant creates a tenant through the admin API and returns it with
// its first key.
func (f *fixture) mustTenant(name string) (*nozzle.Tenant, string) {
	f.t.Helper()
	resp := f.do(http.MethodPost, "/admin/tenants", `{"name":"`+name+`"}`, hdr("Authorization", "Bearer "+adminToken))
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("create tenant: status %d: %s", resp.StatusCode, readAll(f.t, resp))
	}
	var out struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		APIKey string `json:"api_key"`
	}
	decode(f.t, resp, &out)
	if !nozzle.ValidKeyFormat(out.APIKey) {
		f.t.Fatalf("api_key %q is not a valid key", out.APIKey)
	}
	f.w.mu.Lock()
	tn := f.w.tenants[out.ID]
	f.w.mu.Unlock()
	if tn == nil { // kept elsewhere than in the world (withLedger)
		tn = &nozzle.Tenant{ID: out.ID, Name: out.Name}
	}
	return tn, out.APIKey
}

// addAdapter stores an adapter for a tenant directly in the world.
func (f *fixture) addAdapter(tenantID, name, sha string) *nozzle.Adapter {
	defer f.w.lock()()
	a := &nozzle.Adapter{ID: f.w.nextID("ad_"), TenantID: tenantID, Name: name, CreatedAt: time.Now().UTC(),
		AdapterManifest: nozzle.AdapterManifest{SHA256: sha, Rank: 8, TargetModules: []string{"q_proj"}}}
	f.w.adapters[tenantID+"/"+name] = a
	return clone(a)
}

func (f *fixture) updateTenant(id string, fn func(*nozzle.Tenant)) {
	defer f.w.lock()()
	fn(f.w.tenants[id])
}

func (f *fixture) events() []*nozzle.UsageEvent {
	defer f.w.lock()()
	var out []*nozzle.UsageEvent
	for _, ev := range f.w.events {
		out = append(out, clone(ev))
	}
	return out
}

type header [2]string

func hdr(k, v string) header     { return header{k, v} }
func bearer(key string) header   { return hdr("Authorization", "Bearer "+key) }
func (f *fixture) authA() header { return bearer(f.keyA) }

// do sends a request through app.Test (no network).
func (f *fixture) do(method, path, body string, hs ...header) *http.Response {
	f.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range hs {
		req.Header.Set(h[0], h[1])
	}
	return f.doReq(req)
}

func (f *fixture) doReq(req *http.Request) *http.Response {
	f.t.Helper()
	resp, err := f.srv.App().Test(req, -1)
	if err != nil {
		f.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return resp
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func decode(t testing.TB, resp *http.Response, v any) {
	t.Helper()
	b := readAll(t, resp)
	if err := json.Unmarshal([]byte(b), v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
}

// apiError is the OpenAI error shape.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantError checks an error answer's status, type and code (and param when
// not empty).
func wantError(t testing.TB, resp *http.Response, status int, typ, code, param string) apiError {
	t.Helper()
	var e apiError
	body := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if e.Error.Type != typ {
		t.Errorf("type %q, want %q (%s)", e.Error.Type, typ, body)
	}
	if code != "" && (e.Error.Code == nil || *e.Error.Code != code) {
		t.Errorf("code %v, want %q (%s)", e.Error.Code, code, body)
	}
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		t.Errorf("param %v, want %q (%s)", e.Error.Param, param, body)
	}
	if e.Error.Message == "" {
		t.Errorf("empty message: %s", body)
	}
	return e
}
