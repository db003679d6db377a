package gateway_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// Cached prompt tokens (the prefix cache held them) are charged at the
// cached prompt price set through the admin API, through the real
// gateway and ledger: an interactive request and a batch line (then at
// the batch discount) alike. The request's usage and the tenant's report
// say the charge, and the ledger's check holds.
func TestCachedPrice_ChargedThroughGateway(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, nil))
	url := f.serve(t)
	from := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	r := post(t, url+"/admin/prices", adminToken,
		`{"prompt_per_million_usd":1,"completion_per_million_usd":2,"cached_prompt_per_million_usd":0.25,"batch_discount_percent":40,"effective_from":"`+from+`"}`)
	var pv nozzle.PriceVersion
	if body := readAll(t, r); r.StatusCode != 201 || json.Unmarshal([]byte(body), &pv) != nil || pv.Price.CachedPromptPerMillionUSD != 0.25 {
		t.Fatalf("set price: %d %s", r.StatusCode, body)
	}
	var list struct{ Data []nozzle.PriceVersion }
	if code := getJSON(t, url+"/admin/prices", adminToken, &list); code != 200 || len(list.Data) != 1 || list.Data[0].Price.CachedPromptPerMillionUSD != 0.25 {
		t.Fatalf("price list: %d %+v", code, list)
	}

	in := mustUpload(t, url, f.keyA, chatLine("a", "base", "a long shared prefix CACHED")+"\n")
	b := waitBatch(t, url, f.keyA, createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions").ID, final)
	if b.Status != "completed" || b.RequestCounts.Completed != 1 {
		t.Fatalf("batch %+v", b)
	}
	out := outLines(t, fileContent(t, url, f.keyA, *b.OutputFileID))
	live := post(t, url+"/v1/chat/completions", f.keyA, chatBody("base", "a long shared prefix CACHED"))
	if live.StatusCode != 200 {
		t.Fatalf("live request: %d %s", live.StatusCode, readAll(t, live))
	}
	var answer chatResponse
	if err := json.Unmarshal([]byte(readAll(t, live)), &answer); err != nil || answer.Usage.PromptTokensDetails == nil ||
		answer.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Fatalf("live answer's usage %+v, %v", answer.Usage, err)
	}
	liveID := live.Header.Get("X-Request-Id")

	type reqUsage struct {
		PromptTokens     int64   `json:"prompt_tokens"`
		CachedTokens     int64   `json:"cached_prompt_tokens"`
		CompletionTokens int64   `json:"completion_tokens"`
		ChargeUSD        float64 `json:"charged_usd"`
		Batch            bool    `json:"batch"`
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 2*nozzle.USDPrecision }
	priced := func(ev *reqUsage) float64 {
		return (float64(ev.PromptTokens-ev.CachedTokens)*1 + float64(ev.CachedTokens)*0.25 + float64(ev.CompletionTokens)*2) / 1e6
	}
	var total float64
	for _, c := range []struct {
		id    string
		batch bool
	}{{out["a"].Response.RequestID, true}, {liveID, false}} {
		var ev reqUsage
		if code := getJSON(t, url+"/v1/usage/requests/"+c.id, f.keyA, &ev); code != 200 {
			t.Fatalf("usage of %s: %d", c.id, code)
		}
		want := priced(&ev)
		if c.batch {
			want *= 0.6
		}
		if ev.Batch != c.batch || ev.CachedTokens == 0 || ev.CachedTokens >= ev.PromptTokens || !near(ev.ChargeUSD, want) {
			t.Errorf("request %s: %+v, want charged %v (batch %v)", c.id, ev, want, c.batch)
		}
		full := (float64(ev.PromptTokens) + float64(ev.CompletionTokens)*2) / 1e6
		if c.batch {
			full *= 0.6
		}
		if !(ev.ChargeUSD < full) {
			t.Errorf("request %s charged %v, no less than at the full prompt price (%v)", c.id, ev.ChargeUSD, full)
		}
		total += ev.ChargeUSD
	}
	var tenant struct {
		Total batchPart `json:"total"`
	}
	if code := getJSON(t, url+"/v1/usage", f.keyA, &tenant); code != 200 || tenant.Total.Requests != 2 || !near(tenant.Total.ChargedUSD, total) {
		t.Errorf("tenant usage: %d %+v, want charged %v", code, tenant, total)
	}
	if res, err := env.led.Check(context.Background()); err != nil || len(res.Problems) > 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
}

// A cached prompt price that is not a number from 0 to the prompt price
// is a 400 naming cached_prompt_per_million_usd, for the default prices
// and a tenant's alike, and sets nothing; left out (or null), it is the
// prompt price: no discount, never free.
func TestPrices_CachedPromptValidation(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, nil))
	admin := bearer(adminToken)
	for _, path := range []string{"/admin/prices", "/admin/tenants/" + f.tenantA.ID + "/prices"} {
		for _, bad := range []string{`-1`, `1.5`, `"0.5"`, `true`} {
			body := `{"prompt_per_million_usd":1,"completion_per_million_usd":2,"cached_prompt_per_million_usd":` + bad + `}`
			wantError(t, f.do(http.MethodPost, path, body, admin), 400, "invalid_request_error", "", "cached_prompt_per_million_usd")
		}
		for _, body := range []string{`{"prompt_per_million_usd":1.5,"completion_per_million_usd":2}`,
			`{"prompt_per_million_usd":1.5,"completion_per_million_usd":2,"cached_prompt_per_million_usd":null}`} {
			r := f.do(http.MethodPost, path, body, admin)
			var pv nozzle.PriceVersion
			decode(t, r, &pv)
			if r.StatusCode != 201 || pv.Price.CachedPromptPerMillionUSD != 1.5 {
				t.Errorf("%s %s: %d %+v, want the cached price 1.5 (the prompt price)", path, body, r.StatusCode, pv)
			}
		}
		for _, c := range []float64{0, 0.75, 1} {
			body := `{"prompt_per_million_usd":1,"completion_per_million_usd":2,"cached_prompt_per_million_usd":` + strings.TrimSpace(jsonNumber(c)) + `}`
			r := f.do(http.MethodPost, path, body, admin)
			var pv nozzle.PriceVersion
			decode(t, r, &pv)
			if r.StatusCode != 201 || pv.Price.CachedPromptPerMillionUSD != c {
				t.Errorf("%s with a cached price of %v: %d %+v", path, c, r.StatusCode, pv)
			}
		}
	}
	for _, tid := range []string{"", f.tenantA.ID} {
		hist, err := env.led.Prices(context.Background(), tid)
		if err != nil || len(hist) != 5 || hist[len(hist)-1].Price.CachedPromptPerMillionUSD != 1 || hist[1].Price.CachedPromptPerMillionUSD != 1.5 {
			t.Errorf("prices of %q: %+v, %v", tid, hist, err)
		}
	}
	wantError(t, f.do(http.MethodPost, "/admin/tenants/"+f.tenantA.ID+"/prices", `{"standard":true,"cached_prompt_per_million_usd":0.1}`, admin),
		400, "invalid_request_error", "", "standard")
}

func jsonNumber(v float64) string { b, _ := json.Marshal(v); return string(b) }

// The operator's console sets and shows the cached prompt price with the
// prices, for the standard list and a tenant's override; a tenant's
// settings page shows the cached price in force.
func TestConsole_CachedPromptPrice(t *testing.T) {
	dev := consolePriceField(t, "cached_prompt_per_million_usd", "0.125", "3", func(p nozzle.Price) bool { return p.CachedPromptPerMillionUSD == 0.125 },
		`name="cached_prompt_per_million_usd"`, `value="0.125"`, "per million cached prompt tokens")
	resp, body := dev.page("/console/settings")
	wantConsoleStatus(t, resp, 200, body)
	if !strings.Contains(body, `data-testid="cached-prompt-price"`) || !strings.Contains(body, "$0.125") {
		t.Errorf("settings page has no cached prompt price")
	}
	resp, body = dev.page("/console/playground")
	wantConsoleStatus(t, resp, 200, body)
	if !strings.Contains(body, `data-cached-prompt-price="0.125"`) {
		t.Errorf("playground has no cached prompt price for its cost")
	}
}
