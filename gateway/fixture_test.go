package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

const adminToken = "admin-secret-token"
const internalToken = "internal-secret-token"

// world is the in-memory state behind the mocks of a test server.
type world struct {
	mu       sync.Mutex
	tenants  map[string]*nozzle.Tenant
	keys     map[string]*nozzle.APIKey // by digest
	adapters map[string]*nozzle.Adapter
	events   map[string]*nozzle.UsageEvent
	order    []string // event ids in record order
	reserved float64
	released int
	removed  []string
	stored   map[string]map[string][]byte // sha → file → bytes
	touched  map[string]time.Time
	seq      int

	digestLookups atomic.Int64
	generations   atomic.Int64
}

func newWorld() *world {
	return &world{tenants: map[string]*nozzle.Tenant{}, keys: map[string]*nozzle.APIKey{}, adapters: map[string]*nozzle.Adapter{},
		events: map[string]*nozzle.UsageEvent{}, stored: map[string]map[string][]byte{}, touched: map[string]time.Time{}}
}

func (w *world) nextID(prefix string) string {
	w.seq++
	return prefix + strconv.Itoa(w.seq)
}

func clone[T any](v *T) *T { c := *v; return &c }

// fixture is a gateway over mocks, with two tenants (a and b), each with a
// full-scope key.
type fixture struct {
	t         testing.TB
	w         *world
	srv       *gateway.Server
	tenants   *mock.TenantService
	keys      *mock.KeyService
	adapterS  *mock.AdapterService
	store     *mock.AdapterStore
	ledger    *mock.Ledger
	budget    *mock.BudgetService
	reporter  *mock.Reporter
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
	w := newWorld()
	f := &fixture{t: t, w: w, uploadDir: t.TempDir()}
	f.tenants = &mock.TenantService{
		CreateTenantFn: func(ctx context.Context, tn *nozzle.Tenant) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, x := range w.tenants {
				if x.Name == tn.Name {
					return nozzle.Errorf(nozzle.ECONFLICT, "Tenant name %q is taken.", tn.Name)
				}
			}
			tn.ID = w.nextID("ten_")
			tn.CreatedAt = time.Now().UTC()
			w.tenants[tn.ID] = clone(tn)
			return nil
		},
		TenantFn: func(ctx context.Context, id string) (*nozzle.Tenant, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			tn, ok := w.tenants[id]
			if !ok {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant.")
			}
			return clone(tn), nil
		},
		TenantsFn: func(ctx context.Context) ([]*nozzle.Tenant, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			var out []*nozzle.Tenant
			for _, tn := range w.tenants {
				out = append(out, clone(tn))
			}
			return out, nil
		},
		UpdateTenantFn: func(ctx context.Context, id string, upd nozzle.TenantUpdate) (*nozzle.Tenant, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			tn, ok := w.tenants[id]
			if !ok {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant.")
			}
			if upd.Suspended != nil {
				tn.Suspended = *upd.Suspended
			}
			if upd.MonthlyBudgetUSD != nil {
				tn.MonthlyBudgetUSD = *upd.MonthlyBudgetUSD
			}
			if upd.Limits != nil {
				tn.Limits = *upd.Limits
			}
			if upd.Name != nil {
				tn.Name = *upd.Name
			}
			return clone(tn), nil
		},
		SetPriceFn: func(ctx context.Context, tenantID string, p nozzle.Price, from time.Time) error { return nil },
		PriceAtFn: func(ctx context.Context, tenantID string, at time.Time) (nozzle.Price, error) {
			return nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}, nil
		},
		PricesFn: func(ctx context.Context, tenantID string) ([]nozzle.PriceVersion, error) {
			return []nozzle.PriceVersion{{TenantID: tenantID, Price: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}, EffectiveFrom: time.Unix(0, 0).UTC()}}, nil
		},
	}
	f.keys = &mock.KeyService{
		CreateKeyFn: func(ctx context.Context, k *nozzle.APIKey) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			k.ID = w.nextID("key_")
			k.CreatedAt = time.Now().UTC()
			w.keys[k.Digest] = clone(k)
			return nil
		},
		KeyByDigestFn: func(ctx context.Context, digest string) (*nozzle.APIKey, error) {
			w.digestLookups.Add(1)
			w.mu.Lock()
			defer w.mu.Unlock()
			k, ok := w.keys[digest]
			if !ok || k.Revoked() {
				return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Invalid key.")
			}
			return clone(k), nil
		},
		KeysFn: func(ctx context.Context, tenantID string) ([]*nozzle.APIKey, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			var out []*nozzle.APIKey
			for _, k := range w.keys {
				if k.TenantID == tenantID {
					out = append(out, clone(k))
				}
			}
			return out, nil
		},
		RevokeKeyFn: func(ctx context.Context, tenantID, id string) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, k := range w.keys {
				if k.ID == id && k.TenantID == tenantID {
					k.RevokedAt = time.Now()
					return nil
				}
			}
			return nozzle.Errorf(nozzle.ENOTFOUND, "No key.")
		},
		TouchKeysFn: func(ctx context.Context, lastUsed map[string]time.Time) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			for id, at := range lastUsed {
				w.touched[id] = at
			}
			return nil
		},
	}
	f.adapterS = &mock.AdapterService{
		CreateAdapterFn: func(ctx context.Context, a *nozzle.Adapter) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			k := a.TenantID + "/" + a.Name
			if _, ok := w.adapters[k]; ok {
				return nozzle.Errorf(nozzle.ECONFLICT, "Taken.")
			}
			a.ID = w.nextID("ad_")
			a.CreatedAt = time.Now().UTC()
			w.adapters[k] = clone(a)
			return nil
		},
		AdapterFn: func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			a, ok := w.adapters[tenantID+"/"+name]
			if !ok {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No adapter.")
			}
			return clone(a), nil
		},
		AdaptersFn: func(ctx context.Context, tenantID string) ([]*nozzle.Adapter, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			var out []*nozzle.Adapter
			for _, a := range w.adapters {
				if a.TenantID == tenantID {
					out = append(out, clone(a))
				}
			}
			return out, nil
		},
		DeleteAdapterFn: func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			k := tenantID + "/" + name
			a, ok := w.adapters[k]
			if !ok {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No adapter.")
			}
			delete(w.adapters, k)
			return a, nil
		},
		AdapterRefsFn: func(ctx context.Context, sha string) (int, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			n := 0
			for _, a := range w.adapters {
				if a.SHA256 == sha {
					n++
				}
			}
			return n, nil
		},
	}
	f.store = &mock.AdapterStore{
		ImportFn: func(ctx context.Context, dir string) (*nozzle.AdapterManifest, error) {
			defer os.RemoveAll(dir)
			cfg, err := os.ReadFile(filepath.Join(dir, nozzle.AdapterConfigFile))
			if err != nil {
				return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_config.json is missing.")
			}
			weights, err := os.ReadFile(filepath.Join(dir, nozzle.AdapterWeightsFile))
			if err != nil {
				return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_model.safetensors is missing.")
			}
			if !json.Valid(cfg) {
				return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_config.json: not valid JSON.").WithParam("adapter_config.json")
			}
			if !bytes.HasPrefix(weights, []byte("SAFE")) {
				return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_model.safetensors: truncated header.").WithParam("adapter_model.safetensors")
			}
			sha := sha256hex(append(append([]byte{}, cfg...), weights...))
			w.mu.Lock()
			w.stored[sha] = map[string][]byte{nozzle.AdapterConfigFile: cfg, nozzle.AdapterWeightsFile: weights}
			w.mu.Unlock()
			return &nozzle.AdapterManifest{SHA256: sha, Rank: 8, Alpha: 16, TargetModules: []string{"q_proj", "v_proj"}, Layers: 2,
				SizeBytes: int64(len(cfg) + len(weights))}, nil
		},
		OpenFn: func(ctx context.Context, sha, name string) (io.ReadCloser, int64, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			b, ok := w.stored[sha][name]
			if !ok {
				return nil, 0, nozzle.Errorf(nozzle.ENOTFOUND, "Not stored.")
			}
			return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
		},
		RemoveFn: func(ctx context.Context, sha string) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			delete(w.stored, sha)
			w.removed = append(w.removed, sha)
			return nil
		},
	}
	f.ledger = &mock.Ledger{
		RecordUsageFn: func(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if old, ok := w.events[ev.RequestID]; ok {
				*ev = *clone(old)
				return true, nil
			}
			c := clone(ev)
			if c.Status != nozzle.UsageFailed {
				c.ChargeUSD = nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}.Charge(c.PromptTokens, c.CompletionTokens)
			}
			c.Response = append([]byte(nil), ev.Response...)
			w.events[ev.RequestID] = c
			w.order = append(w.order, ev.RequestID)
			return false, nil
		},
		UsageFn: func(ctx context.Context, id string) (*nozzle.UsageEvent, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			ev, ok := w.events[id]
			if !ok {
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No event.")
			}
			return clone(ev), nil
		},
	}
	f.budget = &mock.BudgetService{
		ReserveBudgetFn: func(ctx context.Context, tenantID string, usd float64) (func(), error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			tn := w.tenants[tenantID]
			if tn.MonthlyBudgetUSD > 0 && w.reserved+usd > tn.MonthlyBudgetUSD {
				return nil, nozzle.Errorf(nozzle.EQUOTA, "Monthly budget exhausted.").WithRetryAfter(90 * time.Minute)
			}
			w.reserved += usd
			var once sync.Once
			return func() {
				once.Do(func() {
					w.mu.Lock()
					w.reserved -= usd
					w.released++
					w.mu.Unlock()
				})
			}, nil
		},
	}
	f.reporter = &mock.Reporter{
		ReportFn: func(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			r := &nozzle.Report{Start: q.Start, End: q.End, GroupBy: q.GroupBy, IdlePolicy: nozzle.IdleProrata}
			for _, ev := range w.events {
				if q.TenantID != "" && ev.TenantID != q.TenantID {
					continue
				}
				r.Total.Requests++
				r.Total.PromptTokens += ev.PromptTokens
				r.Total.CompletionTokens += ev.CompletionTokens
				r.Total.ChargedUSD += ev.ChargeUSD
				r.Total.MarginUSD += ev.ChargeUSD / 2
			}
			r.Rows = []nozzle.ReportRow{r.Total}
			r.Rows[0].AdapterName = "all"
			return r, nil
		},
	}
	f.gen = newFakeGen(w)
	f.gens = []*fakeGen{f.gen}
	cfg := gateway.Config{
		AdminToken: adminToken, InternalToken: internalToken, UploadDir: f.uploadDir,
		Logger: quietLogger(), HealthInterval: time.Hour, KeyTouchInterval: time.Hour,
	}
	deps := gateway.Deps{
		Tenants: f.tenants, Keys: f.keys, Adapters: f.adapterS, Store: f.store, Ledger: f.ledger,
		Budget: f.budget, Reporter: f.reporter,
		Upstreams: []gateway.Upstream{{ID: "rt0", Generator: f.gen.mock()}},
	}
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
	return tn, out.APIKey
}

// addAdapter stores an adapter for a tenant directly in the world.
func (f *fixture) addAdapter(tenantID, name, sha string) *nozzle.Adapter {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	a := &nozzle.Adapter{ID: f.w.nextID("ad_"), TenantID: tenantID, Name: name, CreatedAt: time.Now().UTC(),
		AdapterManifest: nozzle.AdapterManifest{SHA256: sha, Rank: 8, TargetModules: []string{"q_proj"}}}
	f.w.adapters[tenantID+"/"+name] = a
	return clone(a)
}

func (f *fixture) updateTenant(id string, fn func(*nozzle.Tenant)) {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	fn(f.w.tenants[id])
}

func (f *fixture) events() []*nozzle.UsageEvent {
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	var out []*nozzle.UsageEvent
	for _, id := range f.w.order {
		out = append(out, clone(f.w.events[id]))
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
