package gateway_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

func TestUsage(t *testing.T) {
	f := newFixture(t)
	var got nozzle.ReportQuery
	inner := f.reporter.ReportFn
	f.reporter.ReportFn = func(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
		got = q
		return inner(ctx, q)
	}
	f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA())
	f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(f.keyB))

	t.Run("DefaultMonth", func(t *testing.T) {
		r := f.do(http.MethodGet, "/v1/usage", "", f.authA())
		body := readAll(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("%d %s", r.StatusCode, body)
		}
		now := time.Now().UTC()
		start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		if got.TenantID != f.tenantA.ID || !got.Start.Equal(start) || !got.End.Equal(start.AddDate(0, 1, 0)) || len(got.GroupBy) != 0 {
			t.Errorf("query %+v", got)
		}
		for _, want := range []string{`"object":"list"`, `"data":[`, `"total":{`, `"requests":1`, `"prompt_tokens":`, `"device_seconds":`, `"cost_usd":`} {
			if !strings.Contains(body, want) {
				t.Errorf("body lacks %s: %s", want, body)
			}
		}
		if strings.Contains(body, "margin") {
			t.Errorf("tenant sees the margin: %s", body)
		}
	})
	t.Run("Params", func(t *testing.T) {
		r := f.do(http.MethodGet, "/v1/usage?start=2025-01-01T00:00:00Z&end=2025-02-01T00:00:00%2B01:00&group_by=adapter,day&adapter=x", "", f.authA())
		if r.StatusCode != 200 {
			t.Fatalf("%d %s", r.StatusCode, readAll(t, r))
		}
		if !got.Start.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) || !got.End.Equal(time.Date(2025, 1, 31, 23, 0, 0, 0, time.UTC)) ||
			strings.Join(got.GroupBy, ",") != "adapter,day" || got.AdapterName != "x" {
			t.Errorf("query %+v", got)
		}
		// a list as HTTP clients send an array: the parameter repeated
		r = f.do(http.MethodGet, "/v1/usage?group_by=adapter&group_by=day", "", f.authA())
		if r.Body.Close(); r.StatusCode != 200 || strings.Join(got.GroupBy, ",") != "adapter,day" {
			t.Errorf("repeated group_by: %d, query %+v", r.StatusCode, got)
		}
		wantError(t, f.do(http.MethodGet, "/v1/usage?group_by=adapter&group_by=tenant", "", f.authA()), 400, "invalid_request_error", "", "group_by")
	})
	t.Run("DatesAndUnixSeconds", func(t *testing.T) {
		// A date is 00:00 UTC that day, and as the end the end of that
		// day: November's 30 days. Unix seconds as OpenAI's usage API
		// takes them.
		nov, dec := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for _, path := range []string{
			"/v1/usage?start=2026-11-01&end=2026-11-30",
			"/v1/usage?start=" + strconv.FormatInt(nov.Unix(), 10) + "&end=" + strconv.FormatInt(dec.Unix(), 10),
			"/v1/usage?start=2026-11-01&end=" + strconv.FormatInt(dec.Unix(), 10),
			"/admin/report?start=2026-11-01&end=2026-11-30",
		} {
			auth := f.authA()
			if strings.HasPrefix(path, "/admin/") {
				auth = bearer(adminToken)
			}
			got = nozzle.ReportQuery{}
			r := f.do(http.MethodGet, path, "", auth)
			if body := readAll(t, r); r.StatusCode != 200 {
				t.Fatalf("%s: %d %s", path, r.StatusCode, body)
			}
			if !got.Start.Equal(nov) || !got.End.Equal(dec) {
				t.Errorf("%s: period %v – %v, want %v – %v", path, got.Start, got.End, nov, dec)
			}
		}
		// one day
		r := f.do(http.MethodGet, "/v1/usage?start=2026-11-05&end=2026-11-05", "", f.authA())
		if r.Body.Close(); r.StatusCode != 200 || !got.Start.Equal(nov.AddDate(0, 0, 4)) || !got.End.Equal(nov.AddDate(0, 0, 5)) {
			t.Errorf("one day: %d, query %+v", r.StatusCode, got)
		}
	})
	t.Run("BadParams", func(t *testing.T) {
		for _, path := range []string{"/v1/usage?start=yesterday", "/admin/report?end=2026-11-31"} {
			auth, param := f.authA(), "start"
			if strings.HasPrefix(path, "/admin/") {
				auth, param = bearer(adminToken), "end"
			}
			e := wantError(t, f.do(http.MethodGet, path, "", auth), 400, "invalid_request_error", "", param)
			for _, want := range []string{"Invalid '" + param + "'", "RFC 3339", "2026-11-01", "unix seconds"} {
				if !strings.Contains(e.Error.Message, want) {
					t.Errorf("%s: %q lacks %q", path, e.Error.Message, want)
				}
			}
		}
		wantError(t, f.do(http.MethodGet, "/v1/usage?start=1793491200000", "", f.authA()), 400, "invalid_request_error", "", "start") // milliseconds
		wantError(t, f.do(http.MethodGet, "/v1/usage?start=0001-01-01T00:00:00Z&end=9999-12-31T23:59:59Z", "", f.authA()), 400, "invalid_request_error", "", "start")
		wantError(t, f.do(http.MethodGet, "/v1/usage?start=2025-02-01T00:00:00Z&end=2025-01-01T00:00:00Z", "", f.authA()), 400, "invalid_request_error", "", "end")
		wantError(t, f.do(http.MethodGet, "/v1/usage?group_by=tenant", "", f.authA()), 400, "invalid_request_error", "invalid_value", "group_by")
		wantError(t, f.do(http.MethodGet, "/v1/usage?format=xml", "", f.authA()), 400, "invalid_request_error", "", "format")
		// The refusal names what is allowed, and a bound the caller left
		// out is named with the value the period took for it.
		if e := wantError(t, f.do(http.MethodGet, "/v1/usage?group_by=week", "", f.authA()), 400, "invalid_request_error", "", "group_by"); e.Error.Message != `Invalid 'group_by' "week": use adapter, day or hour, or a list of them (adapter,day).` {
			t.Errorf("group_by=week: %q", e.Error.Message)
		}
		if e := wantError(t, f.do(http.MethodGet, "/admin/report?group_by=week", "", bearer(adminToken)), 400, "invalid_request_error", "", "group_by"); !strings.Contains(e.Error.Message, "use tenant, adapter, day or hour") {
			t.Errorf("admin group_by=week: %q", e.Error.Message)
		}
		now := time.Now().UTC()
		month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		later := month.AddDate(0, 2, 0).Format(time.RFC3339)
		if e := wantError(t, f.do(http.MethodGet, "/v1/usage?start="+later, "", f.authA()), 400, "invalid_request_error", "", "end"); !strings.Contains(e.Error.Message, "("+month.AddDate(0, 1, 0).Format(time.RFC3339)+"), where the period ends without 'end': give 'end' too") {
			t.Errorf("start alone after this month: %q", e.Error.Message)
		}
		if e := wantError(t, f.do(http.MethodGet, "/v1/usage?end=2020-01-01T00:00:00Z", "", f.authA()), 400, "invalid_request_error", "", "start"); !strings.Contains(e.Error.Message, "("+month.Format(time.RFC3339)+"), where the period starts without 'start': give 'start' too") {
			t.Errorf("end alone before this month: %q", e.Error.Message)
		}
	})
	t.Run("CSV", func(t *testing.T) {
		r := f.do(http.MethodGet, "/v1/usage?format=csv", "", f.authA())
		body := readAll(t, r)
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") || !strings.Contains(body, "requests") || strings.Count(body, "\n") < 2 {
			t.Errorf("csv %q %s", r.Header.Get("Content-Type"), body)
		}
	})
	t.Run("CSVFormulas", func(t *testing.T) {
		// Names a spreadsheet would run as formulas are text in every CSV
		// download; negative amounts stay numbers.
		wrapped := f.reporter.ReportFn
		defer func() { f.reporter.ReportFn = wrapped }()
		f.reporter.ReportFn = func(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
			row := nozzle.ReportRow{TenantID: "t_1", TenantName: `=HYPERLINK("x","y")`, AdapterID: "ad_1", AdapterName: "-2+3",
				Requests: 1, MarginUSD: -0.5}
			return &nozzle.Report{Start: q.Start, End: q.End, GroupBy: q.GroupBy, Rows: []nozzle.ReportRow{row}, Total: row}, nil
		}
		for _, c := range []struct {
			path     string
			auth     header
			want     string
			operator bool
		}{
			{"/v1/usage?format=csv&group_by=adapter", f.authA(), "\nad_1,'-2+3,1,", false},
			{"/admin/report?format=csv", bearer(adminToken), "\nt_1,\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\",ad_1,'-2+3,1,", true},
		} {
			body := readAll(t, f.do(http.MethodGet, c.path, "", c.auth))
			if !strings.Contains(body, c.want) {
				t.Errorf("%s: CSV lacks %q:\n%s", c.path, c.want, body)
			}
			if c.operator && !strings.Contains(body, ",-0.5,") {
				t.Errorf("%s: negative margin not a plain number:\n%s", c.path, body)
			}
		}
	})
	t.Run("FailedRequests", func(t *testing.T) {
		// The tenant's JSON says, as its CSV does, how much of the tokens
		// came from requests the runtime failed (charged nothing, not sent
		// to Stripe), so that its usage reconciles with its Stripe bill,
		// and how many requests its clients canceled or a crash cut short.
		wrapped := f.reporter.ReportFn
		defer func() { f.reporter.ReportFn = wrapped }()
		f.reporter.ReportFn = func(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
			row := nozzle.ReportRow{Requests: 3, PromptTokens: 30, CompletionTokens: 12,
				FailedRequests: 1, FailedPromptTokens: 10, FailedCompletionTokens: 4,
				CanceledRequests: 1, InterruptedRequests: 1,
				TenantID: "t_1", TenantName: "acme", MarginUSD: 0.5}
			return &nozzle.Report{Start: q.Start, End: q.End, Rows: []nozzle.ReportRow{row}, Total: row}, nil
		}
		r := f.do(http.MethodGet, "/v1/usage", "", f.authA())
		body := readAll(t, r)
		for _, want := range []string{`"failed_requests":1`, `"failed_prompt_tokens":10`, `"failed_completion_tokens":4`,
			`"canceled_requests":1`, `"interrupted_requests":1`} {
			if strings.Count(body, want) != 2 { // the row and the total
				t.Errorf("body lacks %s in the row and the total: %s", want, body)
			}
		}
		// nor the operator's fields
		for _, hidden := range []string{`"tenant_id"`, `"tenant"`, `"margin_usd"`} {
			if strings.Contains(body, hidden) {
				t.Errorf("the tenant sees %s: %s", hidden, body)
			}
		}
	})
	t.Run("AdminReport", func(t *testing.T) {
		r := f.do(http.MethodGet, "/admin/report?group_by=tenant", "", bearer(adminToken))
		body := readAll(t, r)
		if r.StatusCode != 200 || got.TenantID != "" || !strings.Contains(body, `"requests":2`) || !strings.Contains(body, "margin_usd") {
			t.Errorf("%d %+v %s", r.StatusCode, got, body)
		}
		r = f.do(http.MethodGet, "/admin/report?group_by=tenant&gpu_step=day", "", bearer(adminToken))
		if r.Body.Close(); r.StatusCode != 200 || got.GPUStep != nozzle.GroupDay {
			t.Errorf("gpu_step: %d, query %+v", r.StatusCode, got)
		}
		r = f.do(http.MethodGet, "/admin/report", "", bearer(adminToken))
		if r.Body.Close(); r.StatusCode != 200 || !slices.Equal(got.GroupBy, []string{nozzle.GroupTenant, nozzle.GroupAdapter}) {
			t.Errorf("default grouping: %d, query %+v", r.StatusCode, got)
		}
		r = f.do(http.MethodGet, "/admin/report?group_by=", "", bearer(adminToken))
		if r.Body.Close(); r.StatusCode != 200 || len(got.GroupBy) != 0 {
			t.Errorf("totals only: %d, query %+v", r.StatusCode, got)
		}
		r = f.do(http.MethodGet, "/admin/report?format=csv", "", bearer(adminToken))
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/csv") {
			t.Errorf("csv type %q", r.Header.Get("Content-Type"))
		}
		wantError(t, f.do(http.MethodGet, "/admin/report", "", f.authA()), 401, "invalid_request_error", "", "")
	})
}

// TestRequestUsage: a tenant looks up one request's tokens and charge by
// its X-Request-Id or its Idempotency-Key; another tenant's does not exist.
func TestRequestUsage(t *testing.T) {
	f := newFixture(t)
	r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA())
	readAll(t, r)
	id := r.Header.Get("X-Request-Id")
	readAll(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("Idempotency-Key", "order-9")))
	evs := f.events()
	for _, name := range []string{id, "order-9"} {
		var got struct {
			Object           string
			ID               string
			Status           string
			Adapter          string
			PromptTokens     int64   `json:"prompt_tokens"`
			CompletionTokens int64   `json:"completion_tokens"`
			ChargedUSD       float64 `json:"charged_usd"`
		}
		decode(t, f.do(http.MethodGet, "/v1/usage/requests/"+name, "", f.authA()), &got)
		ev := evs[0]
		if name == "order-9" {
			ev = evs[1]
		}
		wantID := ev.RequestID
		if name == "order-9" {
			wantID = "order-9" // the key, not the digest the ledger keeps it under
		}
		if got.Object != "request.usage" || got.ID != wantID || got.Status != "ok" || got.Adapter != "base" || got.PromptTokens != ev.PromptTokens ||
			got.CompletionTokens != ev.CompletionTokens || got.ChargedUSD != nozzle.RoundUSD(ev.ChargeUSD) || got.ChargedUSD <= 0 {
			t.Errorf("%s: %+v, event %+v", name, got, ev)
		}
	}
	wantError(t, f.do(http.MethodGet, "/v1/usage/requests/"+id, "", bearer(f.keyB)), 404, "invalid_request_error", "request_not_found", "")
	wantError(t, f.do(http.MethodGet, "/v1/usage/requests/nope", "", f.authA()), 404, "invalid_request_error", "request_not_found", "")
}

// TestRequestUsage_IdempotentByRequestID: a completed request sent with an
// Idempotency-Key, which the ledger keeps under its key, is found by the
// X-Request-Id its client saw (the gateway's or one it chose, streamed or
// not) as well as by its key, and only by its own tenant; a later request
// cannot take that id.
func TestRequestUsage_IdempotentByRequestID(t *testing.T) {
	f := newFixture(t)
	type usage struct {
		Object     string
		ID         string
		Status     string
		ChargedUSD float64 `json:"charged_usd"`
	}
	for _, tc := range []struct {
		name, key, chosen, body string
	}{
		{"GatewayID", "order-10", "", chatBody("base", "hi")},
		{"ChosenID", "order-11", "invoice-42", chatBody("base", "hello")},
		{"Stream", "order-12", "", `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"Legacy", "order-13", "", `{"model":"base","prompt":"hi"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := []header{f.authA(), hdr("Idempotency-Key", tc.key)}
			if tc.chosen != "" {
				hs = append(hs, hdr("X-Request-Id", tc.chosen))
			}
			path := "/v1/chat/completions"
			if strings.Contains(tc.body, `"prompt"`) {
				path = "/v1/completions"
			}
			r := f.do(http.MethodPost, path, tc.body, hs...)
			answer := readAll(t, r)
			rid := r.Header.Get("X-Request-Id")
			if r.StatusCode != 200 || rid == "" || (tc.chosen != "" && rid != tc.chosen) || !strings.Contains(answer, "-"+rid+`"`) {
				t.Fatalf("%d, X-Request-Id %q: %s", r.StatusCode, rid, answer)
			}
			var byID, byKey usage
			decode(t, f.do(http.MethodGet, "/v1/usage/requests/"+rid, "", f.authA()), &byID)
			decode(t, f.do(http.MethodGet, "/v1/usage/requests/"+tc.key, "", f.authA()), &byKey)
			if byID.Object != "request.usage" || byID.ID != rid || byID.Status != "ok" || byID.ChargedUSD <= 0 || byKey.ID != tc.key || byKey.ChargedUSD != byID.ChargedUSD {
				t.Errorf("by X-Request-Id %+v, by key %+v", byID, byKey)
			}
			wantError(t, f.do(http.MethodGet, "/v1/usage/requests/"+rid, "", bearer(f.keyB)), 404, "invalid_request_error", "request_not_found", "")
			// A retry is replayed, and still one request.
			n := len(f.events())
			r = f.do(http.MethodPost, path, tc.body, hs...)
			readAll(t, r)
			if r.Header.Get("Idempotent-Replayed") != "true" || len(f.events()) != n {
				t.Errorf("the retry: replayed %q, %d events after %d", r.Header.Get("Idempotent-Replayed"), len(f.events()), n)
			}
		})
	}
	// A new request under the id an idempotent one was answered with gets
	// an id of its own, and the id keeps naming the first.
	r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "other"), f.authA(), hdr("X-Request-Id", "invoice-42"))
	readAll(t, r)
	if id := r.Header.Get("X-Request-Id"); id == "invoice-42" || !strings.HasPrefix(id, "req_") {
		t.Errorf("a reused id kept: %q", id)
	}
	var got usage
	decode(t, f.do(http.MethodGet, "/v1/usage/requests/invoice-42", "", f.authA()), &got)
	var first usage
	decode(t, f.do(http.MethodGet, "/v1/usage/requests/order-11", "", f.authA()), &first)
	if got.ID != "invoice-42" || got.ChargedUSD != first.ChargedUSD {
		t.Errorf("invoice-42 after its reuse: %+v, the idempotent request's %+v", got, first)
	}
}

// TestRequestUsage_WithoutFloatNoise: a request's charge of 1.5e-6 USD
// and device seconds of 0.01 that the ledger holds with float noise read
// 0.0000015 and 0.01.
func TestRequestUsage_WithoutFloatNoise(t *testing.T) {
	f := newFixture(t)
	r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA())
	readAll(t, r)
	var charge, secs float64
	for range 15 {
		charge += 1e-7 // 1.4999999999999996e-06
	}
	for range 10 {
		secs += 0.001 // 0.010000000000000002
	}
	func() {
		defer f.w.lock()()
		f.w.events[0].ChargeUSD, f.w.events[0].DeviceSeconds = charge, secs
	}()
	body := readAll(t, f.do(http.MethodGet, "/v1/usage/requests/"+r.Header.Get("X-Request-Id"), "", f.authA()))
	if !strings.Contains(body, `"charged_usd":0.0000015`) || strings.Contains(body, "0.0000014999") {
		t.Errorf("request usage %s, want charged_usd 0.0000015", body)
	}
	if !strings.Contains(body, `"device_seconds":0.01,`) || strings.Contains(body, "0.010000000000000002") {
		t.Errorf("request usage %s, want device_seconds 0.01", body)
	}
}
