package gateway_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// listPage is a page of a list as the API answers it.
type listPage struct {
	Object  string                `json:"object"`
	Data    []struct{ ID string } `json:"data"`
	FirstID *string               `json:"first_id"`
	LastID  *string               `json:"last_id"`
	HasMore *bool                 `json:"has_more"`
}

func (p listPage) ids() []string {
	out := make([]string, len(p.Data))
	for i, d := range p.Data {
		out[i] = d.ID
	}
	return out
}

// getPage asks for a page and checks its shape: the list object, first_id
// and last_id naming the ends of data (null when it is empty), has_more
// given.
func (f *fixture) getPage(t *testing.T, path string, auth header) listPage {
	t.Helper()
	resp := f.do(http.MethodGet, path, "", auth)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, readAll(t, resp))
	}
	body := readAll(t, resp)
	var p listPage
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	if p.Object != "list" || p.HasMore == nil || !strings.Contains(body, `"first_id":`) || !strings.Contains(body, `"last_id":`) {
		t.Fatalf("GET %s: not a page: %s", path, body)
	}
	if n := len(p.Data); n == 0 {
		if p.FirstID != nil || p.LastID != nil || *p.HasMore {
			t.Fatalf("GET %s: empty page with ids or more: %s", path, body)
		}
	} else if p.FirstID == nil || p.LastID == nil || *p.FirstID != p.Data[0].ID || *p.LastID != p.Data[n-1].ID {
		t.Fatalf("GET %s: first_id/last_id do not name the ends of data: %s", path, body)
	}
	return p
}

// withQuery adds query parameters to a path.
func withQuery(path string, kv ...string) string {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	if strings.Contains(path, "?") {
		return path + "&" + v.Encode()
	}
	return path + "?" + v.Encode()
}

// TestListPages: every list endpoint pages as OpenAI's list endpoints do:
// limit (default 100, 1 to 1000), after and before an object's id, order;
// first_id, last_id and has_more; refusals OpenAI-shaped; another
// tenant's ids refused exactly as ids that never existed.
func TestListPages(t *testing.T) {
	f := newFixture(t)
	admin := bearer(adminToken)
	rng := rand.New(rand.NewPCG(7, 7))

	// 250 adapters for acme, created in a shuffled order: the list is by
	// name. globex has a few.
	var names []string
	for _, i := range rng.Perm(250) {
		names = append(names, fmt.Sprintf("ad-%03d", i))
	}
	byName := map[string]string{}
	for _, n := range names {
		byName[n] = f.addAdapter(f.tenantA.ID, n, strings.Repeat("a", 64)).ID
	}
	slices.Sort(names)
	var adapters []string
	for _, n := range names {
		adapters = append(adapters, byName[n])
	}
	theirAdapter := f.addAdapter(f.tenantB.ID, "ad-000", strings.Repeat("b", 64)).ID

	// acme's keys: its first, then 11 more; the list is newest first.
	keys := []string{f.keyIDs(f.tenantA.ID)[0]}
	for i := range 11 {
		var k struct{ ID string }
		decode(t, f.do(http.MethodPost, "/v1/keys", fmt.Sprintf(`{"name":"k%d"}`, i), f.authA()), &k)
		keys = append(keys, k.ID)
	}
	slices.Reverse(keys)
	theirKey := f.keyIDs(f.tenantB.ID)[0]

	// tenants: acme, globex, then 12 more; the list is oldest first.
	tenants := []string{f.tenantA.ID, f.tenantB.ID}
	for i := range 12 {
		tn, _ := f.mustTenant(fmt.Sprint("t", i))
		tenants = append(tenants, tn.ID)
	}

	lists := []struct {
		name, path string
		auth       header
		want       []string // the whole list, in its default order
		foreign    string   // another tenant's object of the kind
	}{
		{"Adapters", "/v1/adapters", f.authA(), adapters, theirAdapter},
		{"Keys", "/v1/keys", f.authA(), keys, theirKey},
		{"AdminTenantKeys", "/admin/tenants/" + f.tenantA.ID + "/keys", admin, keys, theirKey},
		{"Tenants", "/admin/tenants", admin, tenants, ""},
	}
	for _, l := range lists {
		t.Run(l.name, func(t *testing.T) {
			n := len(l.want)
			t.Run("Default", func(t *testing.T) {
				p := f.getPage(t, l.path, l.auth)
				if got := p.ids(); !slices.Equal(got, l.want[:min(n, 100)]) || *p.HasMore != (n > 100) {
					t.Fatalf("default page: %d objects, has_more %v; want the first %d of %d", len(got), *p.HasMore, min(n, 100), n)
				}
			})
			t.Run("AllPages", func(t *testing.T) {
				for _, limit := range []int{1, 7, 100, 1000} {
					var got []string
					path := withQuery(l.path, "limit", fmt.Sprint(limit))
					for pages := 0; ; pages++ {
						p := f.getPage(t, path, l.auth)
						if len(p.Data) > limit || pages > n {
							t.Fatalf("limit %d: page of %d, or too many pages", limit, len(p.Data))
						}
						got = append(got, p.ids()...)
						if !*p.HasMore {
							break
						}
						path = withQuery(l.path, "limit", fmt.Sprint(limit), "after", *p.LastID)
					}
					if !slices.Equal(got, l.want) {
						t.Fatalf("limit %d: paged %d objects, want %d in order", limit, len(got), n)
					}
				}
			})
			t.Run("AfterTheEnd", func(t *testing.T) {
				p := f.getPage(t, withQuery(l.path, "after", l.want[n-1]), l.auth)
				if len(p.Data) != 0 || *p.HasMore {
					t.Fatalf("after the last: %+v", p)
				}
			})
			t.Run("Before", func(t *testing.T) {
				p := f.getPage(t, withQuery(l.path, "limit", "3", "before", l.want[5]), l.auth)
				if !slices.Equal(p.ids(), l.want[2:5]) || !*p.HasMore {
					t.Fatalf("3 before #5: %v, has_more %v", p.ids(), *p.HasMore)
				}
				p = f.getPage(t, withQuery(l.path, "limit", "3", "before", l.want[2]), l.auth)
				if !slices.Equal(p.ids(), l.want[:2]) || *p.HasMore {
					t.Fatalf("3 before #2: %v, has_more %v", p.ids(), *p.HasMore)
				}
			})
			t.Run("Order", func(t *testing.T) {
				rev := slices.Clone(l.want)
				slices.Reverse(rev)
				defOrder, other := "asc", "desc"
				if l.name == "Keys" || l.name == "AdminTenantKeys" {
					defOrder, other = "desc", "asc"
				}
				if p := f.getPage(t, withQuery(l.path, "limit", "4", "order", defOrder), l.auth); !slices.Equal(p.ids(), l.want[:4]) {
					t.Fatalf("order=%s: %v", defOrder, p.ids())
				}
				p := f.getPage(t, withQuery(l.path, "limit", "4", "order", other, "after", rev[3]), l.auth)
				if !slices.Equal(p.ids(), rev[4:8]) || !*p.HasMore {
					t.Fatalf("order=%s after #3: %v", other, p.ids())
				}
			})
			t.Run("BadLimit", func(t *testing.T) {
				for _, c := range []struct{ limit, code string }{
					{"0", "integer_below_min_value"}, {"-1", "integer_below_min_value"},
					{"1001", "integer_above_max_value"}, {"99999999999999999999", "integer_above_max_value"},
					{"-99999999999999999999", "integer_below_min_value"},
					{"abc", "invalid_type"}, {"1.5", "invalid_type"}, {"1e2", "invalid_type"}, {"", "invalid_type"}, {"NaN", "invalid_type"},
				} {
					e := wantError(t, f.do(http.MethodGet, l.path+"?limit="+url.QueryEscape(c.limit), "", l.auth), 400, "invalid_request_error", c.code, "limit")
					if c.limit == "1001" && e.Error.Message != "Invalid 'limit': integer above maximum value. Expected a value <= 1000, but got 1001 instead." {
						t.Errorf("limit=1001: %q", e.Error.Message)
					}
				}
			})
			t.Run("BadOrder", func(t *testing.T) {
				wantError(t, f.do(http.MethodGet, l.path+"?order=newest", "", l.auth), 400, "invalid_request_error", "invalid_value", "order")
			})
			t.Run("BadCursor", func(t *testing.T) {
				for _, param := range []string{"after", "before"} {
					e := wantError(t, f.do(http.MethodGet, withQuery(l.path, param, "nope_123"), "", l.auth), 400, "invalid_request_error", "invalid_value", param)
					if e.Error.Message != nozzle.UnknownCursor(param, "nope_123").Message {
						t.Errorf("%s: %q", param, e.Error.Message)
					}
				}
				wantError(t, f.do(http.MethodGet, withQuery(l.path, "after", l.want[0], "before", l.want[1]), "", l.auth), 400, "invalid_request_error", "invalid_parameter_combination", "before")
			})
			if l.foreign == "" {
				return
			}
			t.Run("Isolation", func(t *testing.T) {
				// Another tenant's object is no cursor here: the answer is
				// the one for an id that never existed, the id aside.
				for _, param := range []string{"after", "before"} {
					theirs := readAll(t, f.do(http.MethodGet, withQuery(l.path, param, l.foreign), "", l.auth))
					nobody := readAll(t, f.do(http.MethodGet, withQuery(l.path, param, "zz_nobody"), "", l.auth))
					if strings.ReplaceAll(theirs, l.foreign, "ID") != strings.ReplaceAll(nobody, "zz_nobody", "ID") {
						t.Fatalf("%s another tenant's id: %s\nan unknown one: %s", param, theirs, nobody)
					}
				}
				for _, id := range f.getPage(t, withQuery(l.path, "limit", "1000"), l.auth).ids() {
					if id == l.foreign {
						t.Fatalf("lists another tenant's %s", id)
					}
				}
			})
		})
	}
	t.Run("Empty", func(t *testing.T) {
		_, key := f.mustTenant("empty")
		body := readAll(t, f.do(http.MethodGet, "/v1/adapters", "", bearer(key)))
		if body != `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}` {
			t.Fatalf("no adapters: %s", body)
		}
	})
}

// keyIDs are a tenant's key ids in the world, oldest first.
func (f *fixture) keyIDs(tenantID string) []string {
	defer f.w.lock()()
	var out []string
	for _, k := range f.w.keys {
		if k.TenantID == tenantID {
			out = append(out, k.ID)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return seqOf(a) - seqOf(b) })
	return out
}
