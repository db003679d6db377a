package gateway_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// batchPart is a usage report row's batch columns and totals.
type batchPart struct {
	Requests              int64   `json:"requests"`
	PromptTokens          int64   `json:"prompt_tokens"`
	CompletionTokens      int64   `json:"completion_tokens"`
	ChargedUSD            float64 `json:"charged_usd"`
	BatchRequests         int64   `json:"batch_requests"`
	BatchPromptTokens     int64   `json:"batch_prompt_tokens"`
	BatchCompletionTokens int64   `json:"batch_completion_tokens"`
	BatchChargeUSD        float64 `json:"batch_charge_usd"`
}

// A batch run through the real gateway and ledger is charged at the
// default price's batch discount, set through the admin API; an
// interactive request of the same tenant is charged in full; the tenant's
// usage report (JSON and CSV) and the operator's show the batch requests
// apart, the totals counting both; the ledger's check holds.
func TestBatch_DiscountedAndShownApart(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, nil))
	url := f.serve(t)
	from := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	r := post(t, url+"/admin/prices", adminToken,
		`{"prompt_per_million_usd":1,"completion_per_million_usd":2,"batch_discount_percent":40,"effective_from":"`+from+`"}`)
	var pv nozzle.PriceVersion
	if body := readAll(t, r); r.StatusCode != 201 || json.Unmarshal([]byte(body), &pv) != nil || pv.Price.BatchDiscountPercent != 40 {
		t.Fatalf("set price: %d %s", r.StatusCode, body)
	}
	var list struct{ Data []nozzle.PriceVersion }
	if code := getJSON(t, url+"/admin/prices", adminToken, &list); code != 200 || len(list.Data) != 1 || list.Data[0].Price.BatchDiscountPercent != 40 {
		t.Fatalf("price list: %d %+v", code, list)
	}

	in := mustUpload(t, url, f.keyA, chatLine("a", "base", "one")+"\n"+chatLine("b", "base", "two two")+"\n")
	b := waitBatch(t, url, f.keyA, createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions").ID, final)
	if b.Status != "completed" || b.RequestCounts.Completed != 2 {
		t.Fatalf("batch %+v", b)
	}
	out := outLines(t, fileContent(t, url, f.keyA, *b.OutputFileID))
	live := post(t, url+"/v1/chat/completions", f.keyA, chatBody("base", "hi"))
	if live.StatusCode != 200 {
		t.Fatalf("live request: %d %s", live.StatusCode, readAll(t, live))
	}
	liveID := live.Header.Get("X-Request-Id")
	readAll(t, live)

	// a request's usage as GET /v1/usage/requests/{id} shows it
	type reqUsage struct {
		PromptTokens     int64   `json:"prompt_tokens"`
		CompletionTokens int64   `json:"completion_tokens"`
		ChargeUSD        float64 `json:"charged_usd"`
		Batch            bool    `json:"batch"`
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 2*nozzle.USDPrecision }
	full := func(ev *reqUsage) float64 {
		return (float64(ev.PromptTokens)*1 + float64(ev.CompletionTokens)*2) / 1e6
	}
	var want batchPart
	for _, id := range []string{out["a"].Response.RequestID, out["b"].Response.RequestID} {
		var ev reqUsage
		if code := getJSON(t, url+"/v1/usage/requests/"+id, f.keyA, &ev); code != 200 {
			t.Fatalf("usage of %s: %d", id, code)
		}
		if !ev.Batch || !near(ev.ChargeUSD, full(&ev)*0.6) || ev.ChargeUSD == 0 {
			t.Errorf("batch line %s: batch %v, charged %v, want %v", id, ev.Batch, ev.ChargeUSD, full(&ev)*0.6)
		}
		want.BatchRequests++
		want.BatchPromptTokens += ev.PromptTokens
		want.BatchCompletionTokens += ev.CompletionTokens
		want.BatchChargeUSD += ev.ChargeUSD
	}
	want.Requests, want.PromptTokens, want.CompletionTokens, want.ChargedUSD = want.BatchRequests, want.BatchPromptTokens, want.BatchCompletionTokens, want.BatchChargeUSD
	var ev reqUsage
	if code := getJSON(t, url+"/v1/usage/requests/"+liveID, f.keyA, &ev); code != 200 || ev.Batch || !near(ev.ChargeUSD, full(&ev)) || ev.ChargeUSD == 0 {
		t.Errorf("interactive request %s: %d, batch %v, charged %v, want %v", liveID, code, ev.Batch, ev.ChargeUSD, full(&ev))
	}
	want.Requests++
	want.PromptTokens += ev.PromptTokens
	want.CompletionTokens += ev.CompletionTokens
	want.ChargedUSD += ev.ChargeUSD

	same := func(what string, got batchPart) {
		t.Helper()
		if got.Requests != want.Requests || got.PromptTokens != want.PromptTokens || got.CompletionTokens != want.CompletionTokens ||
			!near(got.ChargedUSD, want.ChargedUSD) || got.BatchRequests != want.BatchRequests || got.BatchPromptTokens != want.BatchPromptTokens ||
			got.BatchCompletionTokens != want.BatchCompletionTokens || !near(got.BatchChargeUSD, want.BatchChargeUSD) {
			t.Errorf("%s: %+v, want %+v", what, got, want)
		}
	}
	var tenant struct {
		Data  []batchPart `json:"data"`
		Total batchPart   `json:"total"`
	}
	if code := getJSON(t, url+"/v1/usage?group_by=adapter", f.keyA, &tenant); code != 200 || len(tenant.Data) != 1 {
		t.Fatalf("tenant usage: %d %+v", code, tenant)
	}
	same("tenant's total", tenant.Total)
	same("tenant's row", tenant.Data[0])
	var op struct {
		Total batchPart `json:"total"`
	}
	if code := getJSON(t, url+"/admin/report?tenant_id="+f.tenantA.ID, adminToken, &op); code != 200 {
		t.Fatalf("operator report: %d", code)
	}
	same("operator's total", op.Total)

	req, _ := http.NewRequest(http.MethodGet, url+"/v1/usage?format=csv", nil)
	req.Header.Set("Authorization", "Bearer "+f.keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(readAll(t, resp))).ReadAll()
	if err != nil || len(recs) < 2 {
		t.Fatalf("csv: %v %v", recs, err)
	}
	col := slices.Index(recs[0], "batch_requests")
	if col < 0 || slices.Index(recs[0], "batch_charge_usd") < 0 || recs[len(recs)-1][col] != "2" {
		t.Errorf("csv header %v, total %v", recs[0], recs[len(recs)-1])
	}
	if _, err := env.led.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A batch discount that is not a number from 0 to 100 is a 400 naming
// batch_discount_percent, for the default prices and a tenant's alike,
// and sets nothing; leaving it out means no discount.
func TestPrices_BatchDiscountValidation(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, nil))
	admin := bearer(adminToken)
	for _, path := range []string{"/admin/prices", "/admin/tenants/" + f.tenantA.ID + "/prices"} {
		for _, bad := range []string{`-1`, `100.5`, `"50"`, `true`, `null`} {
			body := `{"prompt_per_million_usd":1,"completion_per_million_usd":2,"batch_discount_percent":` + bad + `}`
			r := f.do(http.MethodPost, path, body, admin)
			if bad == `null` { // JSON null: left out
				if r.StatusCode != 201 {
					t.Errorf("%s with a null discount: %d %s", path, r.StatusCode, readAll(t, r))
				}
				continue
			}
			wantError(t, r, 400, "invalid_request_error", "", "batch_discount_percent")
		}
		r := f.do(http.MethodPost, path, `{"prompt_per_million_usd":1,"completion_per_million_usd":2}`, admin)
		var pv nozzle.PriceVersion
		decode(t, r, &pv)
		if r.StatusCode != 201 || pv.Price.BatchDiscountPercent != 0 {
			t.Errorf("%s without a discount: %d %+v", path, r.StatusCode, pv)
		}
		r = f.do(http.MethodPost, path, `{"prompt_per_million_usd":1,"completion_per_million_usd":2,"batch_discount_percent":100}`, admin)
		decode(t, r, &pv)
		if r.StatusCode != 201 || pv.Price.BatchDiscountPercent != 100 {
			t.Errorf("%s at 100%%: %d %+v", path, r.StatusCode, pv)
		}
	}
	hist, err := env.led.Prices(context.Background(), "")
	if err != nil || len(hist) == 0 || hist[len(hist)-1].Price.BatchDiscountPercent != 100 {
		t.Errorf("default prices %+v, %v", hist, err)
	}
	wantError(t, f.do(http.MethodPost, "/admin/tenants/"+f.tenantA.ID+"/prices", `{"standard":true,"batch_discount_percent":10}`, admin),
		400, "invalid_request_error", "", "standard")
}

// The operator's console sets and shows the batch discount with the
// prices, for the standard list and a tenant's override, so that setting
// prices there keeps the discount the form shows.
func TestConsole_BatchDiscount(t *testing.T) {
	consolePriceField(t, "batch_discount_percent", "35", "135", func(p nozzle.Price) bool { return p.BatchDiscountPercent == 35 },
		`name="batch_discount_percent"`, "off for the Batch API")
}

// consolePriceField checks a price list field on the operator's console:
// the standard list and a tenant's override take the value good and refuse
// bad with a 400 naming the field, the stored price is as stored
// says, and both price forms show pageWants. It returns the tenant's
// user's browser.
func consolePriceField(t *testing.T, field, good, bad string, stored func(nozzle.Price) bool, pageWants ...string) *consoleBrowser {
	t.Helper()
	f := newConsoleFixture(t)
	op := f.operator()
	dev, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/console/api/operator/prices", "/console/api/operator/tenants/" + u.TenantID + "/prices"} {
		resp, body := op.api(http.MethodPost, path, `{"prompt_per_million_usd": 1, "completion_per_million_usd": 2, "`+field+`": `+good+`}`)
		wantConsoleStatus(t, resp, http.StatusCreated, body)
		resp, body = op.api(http.MethodPost, path, `{"prompt_per_million_usd": 1, "completion_per_million_usd": 2, "`+field+`": `+bad+`}`)
		if resp.StatusCode != 400 || !strings.Contains(body, field) {
			t.Errorf("%s with %s %s: %d %s", path, field, bad, resp.StatusCode, body)
		}
	}
	for _, tid := range []string{"", u.TenantID} {
		hist, err := f.deps.Tenants.Prices(context.Background(), tid)
		if err != nil || len(hist) == 0 || !stored(hist[len(hist)-1].Price) {
			t.Errorf("prices of %q: %+v, %v", tid, hist, err)
		}
	}
	for _, path := range []string{"/console/operator", "/console/operator/tenants/" + u.TenantID} {
		resp, body := op.page(path)
		wantConsoleStatus(t, resp, 200, body)
		for _, w := range pageWants {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %s", path, w)
			}
		}
	}
	return dev
}
