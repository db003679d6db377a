package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

func TestAdmin(t *testing.T) {
	f := newFixture(t)
	admin := bearer(adminToken)
	t.Run("CreateTenant", func(t *testing.T) {
		r := f.do(http.MethodPost, "/admin/tenants", `{"name":"initech","monthly_budget_usd":50,"limits":{"requests_per_minute":10}}`, admin)
		if r.StatusCode != 201 {
			t.Fatalf("status %d: %s", r.StatusCode, readAll(t, r))
		}
		var out struct {
			ID, Name, Object string
			APIKey           string  `json:"api_key"`
			Budget           float64 `json:"monthly_budget_usd"`
		}
		decode(t, r, &out)
		if out.Object != "tenant" || out.Name != "initech" || out.Budget != 50 || out.ID == "" {
			t.Errorf("%+v", out)
		}
		if r := f.do(http.MethodGet, "/v1/models", "", bearer(out.APIKey)); r.StatusCode != 200 {
			t.Errorf("first key: %d", r.StatusCode)
		}
		wantError(t, f.do(http.MethodPost, "/admin/tenants", `{"name":"initech"}`, admin), 409, "conflict_error", "", "")
		wantError(t, f.do(http.MethodPost, "/admin/tenants", `{"name":""}`, admin), 400, "invalid_request_error", "", "name")
		// A name must not pass for an id, nor break the paths that name it.
		for _, name := range []string{"ten_abc", "a/b", "50%", `tab\u0009name`} {
			wantError(t, f.do(http.MethodPost, "/admin/tenants", `{"name":"`+name+`"}`, admin), 400, "invalid_request_error", "", "name")
		}
		wantError(t, f.do(http.MethodPatch, "/admin/tenants/"+f.tenantA.ID, `{"name":"ten_`+f.tenantB.ID+`"}`, admin), 400, "invalid_request_error", "", "name")
		wantError(t, f.do(http.MethodPost, "/admin/tenants", `{"name":"x","monthly_budget_usd":-1}`, admin), 400, "invalid_request_error", "", "monthly_budget_usd")
	})
	t.Run("ListGet", func(t *testing.T) {
		var list struct {
			Object string
			Data   []struct{ ID, Name string }
		}
		decode(t, f.do(http.MethodGet, "/admin/tenants", "", admin), &list)
		if list.Object != "list" || len(list.Data) != 3 {
			t.Errorf("%+v", list)
		}
		for _, d := range list.Data {
			if strings.Contains(d.ID, "api_key") {
				t.Errorf("list shows keys")
			}
		}
		var one struct{ Name string }
		decode(t, f.do(http.MethodGet, "/admin/tenants/"+f.tenantA.ID, "", admin), &one)
		if one.Name != "acme" {
			t.Errorf("%+v", one)
		}
		wantError(t, f.do(http.MethodGet, "/admin/tenants/nope", "", admin), 404, "invalid_request_error", "tenant_not_found", "")
	})
	t.Run("ReportUnknownTenant", func(t *testing.T) {
		// An unknown tenant is a 404 as /admin/tenants/{id}'s, not a bad
		// parameter; a known one, by id or by name, is reported.
		e := wantError(t, f.do(http.MethodGet, "/admin/report?tenant_id=nosuch", "", admin), 404, "invalid_request_error", "tenant_not_found", "tenant_id")
		if !strings.Contains(e.Error.Message, `"nosuch"`) {
			t.Errorf("message %q does not name the tenant", e.Error.Message)
		}
		wantError(t, f.do(http.MethodGet, "/admin/report?format=csv&tenant_id=nosuch", "", admin), 404, "invalid_request_error", "tenant_not_found", "tenant_id")
		for _, id := range []string{f.tenantA.ID, f.tenantA.Name} {
			if r := f.do(http.MethodGet, "/admin/report?tenant_id="+id, "", admin); r.StatusCode != 200 {
				t.Errorf("tenant_id=%s: %d %s", id, r.StatusCode, readAll(t, r))
			}
		}
	})
	t.Run("SuspendAndResume", func(t *testing.T) {
		if r := f.do(http.MethodPatch, "/admin/tenants/"+f.tenantA.ID, `{"suspended":true}`, admin); r.StatusCode != 200 {
			t.Fatalf("%d %s", r.StatusCode, readAll(t, r))
		}
		wantError(t, f.do(http.MethodGet, "/v1/models", "", f.authA()), 403, "permission_error", "tenant_suspended", "")
		// By name as well as by id.
		if r := f.do(http.MethodPatch, "/admin/tenants/"+f.tenantA.Name, `{"suspended":false}`, admin); r.StatusCode != 200 {
			t.Fatalf("by name: %d %s", r.StatusCode, readAll(t, r))
		}
		if r := f.do(http.MethodGet, "/v1/models", "", f.authA()); r.StatusCode != 200 {
			t.Errorf("resumed: %d", r.StatusCode)
		}
		wantError(t, f.do(http.MethodPatch, "/admin/tenants/"+f.tenantA.ID, `{"suspended":"yes"}`, admin), 400, "invalid_request_error", "", "suspended")
	})
	t.Run("Limits", func(t *testing.T) {
		r := f.do(http.MethodPut, "/admin/tenants/"+f.tenantB.ID+"/limits", `{"requests_per_minute":1}`, admin)
		if r.StatusCode != 200 {
			t.Fatalf("%d %s", r.StatusCode, readAll(t, r))
		}
		f.do(http.MethodGet, "/v1/models", "", bearer(f.keyB))
		f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(f.keyB))
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(f.keyB)), 429, "rate_limit_error", "rate_limit_exceeded", "")
		wantError(t, f.do(http.MethodPut, "/admin/tenants/"+f.tenantB.ID+"/limits", `{"requests_per_minute":-1}`, admin), 400, "invalid_request_error", "", "limits")
	})
	t.Run("Keys", func(t *testing.T) {
		r := f.do(http.MethodPost, "/admin/tenants/"+f.tenantA.ID+"/keys", `{"name":"ops"}`, admin)
		var k struct{ ID, Key string }
		decode(t, r, &k)
		if k.Key == "" {
			t.Fatal("no key")
		}
		var list struct{ Data []struct{ ID string } }
		decode(t, f.do(http.MethodGet, "/admin/tenants/"+f.tenantA.ID+"/keys", "", admin), &list)
		if len(list.Data) != 2 {
			t.Errorf("%+v", list)
		}
		f.do(http.MethodDelete, "/admin/tenants/"+f.tenantA.ID+"/keys/"+k.ID, "", admin)
		wantError(t, f.do(http.MethodGet, "/v1/models", "", bearer(k.Key)), 401, "invalid_request_error", "", "")
	})
	t.Run("Prices", func(t *testing.T) {
		type call struct {
			tenant string
			p      nozzle.Price
			from   time.Time
		}
		var calls []call
		f.tenants.SetPriceFn = func(ctx context.Context, tenantID string, p nozzle.Price, from time.Time) error {
			calls = append(calls, call{tenantID, p, from})
			return nil
		}
		r := f.do(http.MethodPost, "/admin/prices", `{"prompt_per_million_usd":0.5,"completion_per_million_usd":1.5}`, admin)
		if r.StatusCode != 201 {
			t.Fatalf("%d %s", r.StatusCode, readAll(t, r))
		}
		r = f.do(http.MethodPost, "/admin/tenants/"+f.tenantA.ID+"/prices",
			`{"prompt_per_million_usd":0.25,"completion_per_million_usd":1,"effective_from":"2030-01-01T00:00:00Z"}`, admin)
		if r.StatusCode != 201 {
			t.Fatalf("%d %s", r.StatusCode, readAll(t, r))
		}
		if len(calls) != 2 || calls[0].tenant != "" || calls[0].p.CompletionPerMillionUSD != 1.5 || time.Since(calls[0].from) > time.Minute ||
			calls[1].tenant != f.tenantA.ID || !calls[1].from.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("calls %+v", calls)
		}
		wantError(t, f.do(http.MethodPost, "/admin/prices", `{"prompt_per_million_usd":-1,"completion_per_million_usd":1}`, admin), 400, "invalid_request_error", "", "prompt_per_million_usd")
		wantError(t, f.do(http.MethodPost, "/admin/prices", `{"prompt_per_million_usd":1}`, admin), 400, "invalid_request_error", "", "completion_per_million_usd")
		var list struct {
			Object string
			Data   []nozzle.PriceVersion
		}
		decode(t, f.do(http.MethodGet, "/admin/tenants/"+f.tenantA.ID+"/prices", "", admin), &list)
		if list.Object != "list" || len(list.Data) != 1 || list.Data[0].TenantID != f.tenantA.ID {
			t.Errorf("%+v", list)
		}
		// A tenant's name does as well as its id.
		decode(t, f.do(http.MethodGet, "/admin/tenants/"+f.tenantA.Name+"/prices", "", admin), &list)
		if len(list.Data) != 1 || list.Data[0].TenantID != f.tenantA.ID {
			t.Errorf("by name: %+v", list)
		}
		// The override ends: back to the standard prices.
		var std []string
		f.tenants.UseStandardPriceFn = func(ctx context.Context, tenantID string, from time.Time) error {
			std = append(std, tenantID)
			return nil
		}
		r = f.do(http.MethodPost, "/admin/tenants/"+f.tenantA.ID+"/prices", `{"standard":true}`, admin)
		if body := readAll(t, r); r.StatusCode != 201 || len(std) != 1 || std[0] != f.tenantA.ID || !strings.Contains(body, `"standard":true`) {
			t.Errorf("standard: %d %s, calls %v", r.StatusCode, body, std)
		}
		wantError(t, f.do(http.MethodPost, "/admin/prices", `{"standard":true}`, admin), 400, "invalid_request_error", "", "standard")
		wantError(t, f.do(http.MethodPost, "/admin/tenants/"+f.tenantA.ID+"/prices", `{"standard":true,"prompt_per_million_usd":1,"completion_per_million_usd":1}`, admin),
			400, "invalid_request_error", "", "standard")
	})
	t.Run("Upstreams", func(t *testing.T) {
		body := readAll(t, f.do(http.MethodGet, "/admin/upstreams", "", admin))
		if !strings.Contains(body, `"id":"rt0","healthy":true,"model":"tiny-llama"`) {
			t.Errorf("%s", body)
		}
	})
}
