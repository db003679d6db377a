package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

func TestIdempotency(t *testing.T) {
	f := newFixture(t)
	body := chatBody("base", "hi")
	t.Run("Replay", func(t *testing.T) {
		r1 := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-1"))
		b1 := readAll(t, r1)
		calls := f.gen.calls.Load()
		r2 := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-1"))
		b2 := readAll(t, r2)
		if r2.StatusCode != 200 || b1 != b2 || r2.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay: status %d, replayed %q\n%s\n%s", r2.StatusCode, r2.Header.Get("Idempotent-Replayed"), b1, b2)
		}
		if f.gen.calls.Load() != calls {
			t.Errorf("the retry ran again")
		}
		evs := f.events()
		if len(evs) != 1 || !strings.HasPrefix(evs[0].RequestID, "idem_") || !strings.HasSuffix(string(evs[0].Response), b1) {
			t.Fatalf("events %+v", evs)
		}
	})
	t.Run("StreamedRetry", func(t *testing.T) {
		r := f.do(http.MethodPost, "/v1/chat/completions",
			`{"model":"base","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			f.authA(), hdr("Idempotency-Key", "order-1"))
		if r.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("not replayed")
		}
		chunks := parseChunks(t, sseEvents(t, readAll(t, r)))
		var text string
		for _, c := range chunks {
			if len(c.Choices) > 0 && c.Choices[0].Delta.Content != nil {
				text += *c.Choices[0].Delta.Content
			}
		}
		if text != "Hello from the fake runtime." || chunks[len(chunks)-1].Usage == nil {
			t.Errorf("replayed stream %q %+v", text, chunks)
		}
		if len(f.events()) != 1 {
			t.Errorf("charged again")
		}
	})
	t.Run("StreamedFirst", func(t *testing.T) {
		r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`, f.authA(), hdr("Idempotency-Key", "order-2"))
		readAll(t, r)
		r2 := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-2"))
		var out chatResponse
		decode(t, r2, &out)
		if r2.Header.Get("Idempotent-Replayed") != "true" || out.Choices[0].Message.Content != "Hello from the fake runtime." {
			t.Errorf("replay of a streamed request: %+v", out)
		}
	})
	t.Run("SameParametersOtherwiseWritten", func(t *testing.T) {
		// Keys reordered, spaces added: the same request.
		var m map[string]any
		json.Unmarshal([]byte(body), &m)
		again, _ := json.MarshalIndent(m, "", "  ")
		r := f.do(http.MethodPost, "/v1/chat/completions", string(again), f.authA(), hdr("Idempotency-Key", "order-1"))
		readAll(t, r)
		if r.StatusCode != 200 || r.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("status %d, replayed %q", r.StatusCode, r.Header.Get("Idempotent-Replayed"))
		}
	})
	t.Run("OtherParameters", func(t *testing.T) {
		// A key reused for another request is a mistake: refused, never
		// answered with the first request's answer.
		before, calls := len(f.events()), f.gen.calls.Load()
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "something else"), f.authA(), hdr("Idempotency-Key", "order-1")),
			409, "conflict_error", "idempotency_key_reused", "")
		if len(f.events()) != before || f.gen.calls.Load() != calls {
			t.Errorf("the refused request ran or was charged")
		}
	})
	t.Run("SeedsPast2To53", func(t *testing.T) {
		// Two seeds that are one double apart are two requests.
		seeded := func(seed string) string {
			return `{"model":"base","seed":` + seed + `,"messages":[{"role":"user","content":"hi"}]}`
		}
		r := f.do(http.MethodPost, "/v1/chat/completions", seeded("9007199254740993"), f.authA(), hdr("Idempotency-Key", "order-5"))
		readAll(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", seeded("9007199254740992"), f.authA(), hdr("Idempotency-Key", "order-5")),
			409, "conflict_error", "idempotency_key_reused", "")
	})
	t.Run("PerTenant", func(t *testing.T) {
		before := len(f.events())
		r := f.do(http.MethodPost, "/v1/chat/completions", body, bearer(f.keyB), hdr("Idempotency-Key", "order-1"))
		if r.Header.Get("Idempotent-Replayed") != "" || len(f.events()) != before+1 {
			t.Errorf("another tenant's key replayed")
		}
	})
	t.Run("OtherEndpoint", func(t *testing.T) {
		r := f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"x"}`, f.authA(), hdr("Idempotency-Key", "order-1"))
		// the SDKs retry a 409 unless told that a retry cannot help
		if r.Header.Get("X-Should-Retry") != "false" {
			t.Errorf("X-Should-Retry %q", r.Header.Get("X-Should-Retry"))
		}
		wantError(t, r, 409, "conflict_error", "idempotency_key_reused", "")
	})
	t.Run("BadKey", func(t *testing.T) {
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", strings.Repeat("k", 300))),
			400, "invalid_request_error", "", "Idempotency-Key")
	})
	t.Run("FailedAttemptLeavesKeyFree", func(t *testing.T) {
		fail := chatBody("base", "FAIL_AFTER")
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", fail, f.authA(), hdr("Idempotency-Key", "order-3")), 500, "server_error", "", "")
		evs := f.events()
		last := evs[len(evs)-1]
		if last.Status != nozzle.UsageFailed || strings.HasPrefix(last.RequestID, "idem_") {
			t.Fatalf("failed attempt recorded as %+v", last)
		}
		r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-3"))
		if r.StatusCode != 200 || r.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("retry after failure: %d %s", r.StatusCode, readAll(t, r))
		}
	})
}

// TestIdempotency_StoredByEarlierRelease: an answer stored by an earlier
// release, under its fingerprint of the request, is replayed for a retry
// of the same request after an upgrade; a retry of another one is still
// refused. And the fingerprint now counts numbers by value.
func TestIdempotency_StoredByEarlierRelease(t *testing.T) {
	f := newFixture(t)
	body := `{"model":"base","temperature":1.0,"seed":12,"messages":[{"role":"user","content":"hi"}]}`
	for _, digits := range []bool{true, false} {
		key := "order-old-" + strconv.FormatBool(digits)
		r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", key))
		first := readAll(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("status %d: %s", r.StatusCode, first)
		}
		// as the earlier release stored it: version 1, its fingerprint
		func() {
			defer f.w.lock()()
			ev := f.w.events[len(f.w.events)-1]
			fp := gateway.OldFingerprint([]byte(body), digits)
			ev.Response = append(append([]byte{1}, fp[:]...), ev.Response[1+len(fp):]...)
		}()
		calls, events := f.gen.calls.Load(), len(f.events())
		for _, retry := range []string{body, "{\n  \"messages\": [{\"content\": \"hi\", \"role\": \"user\"}],\n  \"model\": \"base\", \"seed\": 12, \"temperature\": 1.0, \"stream\": false\n}"} {
			r := f.do(http.MethodPost, "/v1/chat/completions", retry, f.authA(), hdr("Idempotency-Key", key))
			if got := readAll(t, r); r.StatusCode != 200 || got != first || r.Header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("digits %v: retry %s: status %d, replayed %q: %s", digits, retry, r.StatusCode, r.Header.Get("Idempotent-Replayed"), got)
			}
		}
		other := strings.Replace(body, `"hi"`, `"ho"`, 1)
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", other, f.authA(), hdr("Idempotency-Key", key)),
			409, "conflict_error", "idempotency_key_reused", "")
		if f.gen.calls.Load() != calls || len(f.events()) != events {
			t.Errorf("a retry ran or was charged")
		}
	}
	// Stored now: numbers count by value.
	r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-new"))
	first := readAll(t, r)
	for _, retry := range []string{strings.Replace(body, "1.0", "1", 1), strings.Replace(body, "1.0", "10e-1", 1)} {
		r = f.do(http.MethodPost, "/v1/chat/completions", retry, f.authA(), hdr("Idempotency-Key", "order-new"))
		if got := readAll(t, r); r.StatusCode != 200 || got != first {
			t.Errorf("retry %s: status %d: %s", retry, r.StatusCode, got)
		}
	}
}

// TestIdempotency_ReplayAfterAdapterDeleted: a completed request is
// replayed by its Idempotency-Key after its adapter was deleted (a client
// whose answer was lost, to a crash say, retries when it can): the answer
// it was charged for, not a 404, and no second charge.
func TestIdempotency_ReplayAfterAdapterDeleted(t *testing.T) {
	f := newFixture(t)
	f.addAdapter(f.tenantA.ID, "short-lived", strings.Repeat("e", 64))
	body := chatBody("short-lived", "hi")
	r1 := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-9"))
	b1 := readAll(t, r1)
	if r1.StatusCode != 200 {
		t.Fatalf("first attempt: %d %s", r1.StatusCode, b1)
	}
	f.deleteAdapter(t, "/v1/adapters/short-lived", f.authA())
	calls, events := f.gen.calls.Load(), len(f.events())
	r2 := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-9"))
	b2 := readAll(t, r2)
	if r2.StatusCode != 200 || b2 != b1 || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry after the delete: status %d, replayed %q\n%s\n%s", r2.StatusCode, r2.Header.Get("Idempotent-Replayed"), b1, b2)
	}
	if f.gen.calls.Load() != calls || len(f.events()) != events {
		t.Errorf("the retry ran or was charged again")
	}
	// A new request to the deleted adapter is still refused, with a key
	// or without.
	wantError(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-10")),
		404, "invalid_request_error", "model_not_found", "model")
	// and the refused key stays free: nothing holds it in flight
	f.addAdapter(f.tenantA.ID, "short-lived", strings.Repeat("f", 64))
	if r := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "order-10")); r.StatusCode != 200 {
		t.Errorf("the key of a refused request: %d %s", r.StatusCode, readAll(t, r))
	}
}

func TestIdempotency_ConcurrentDuplicate(t *testing.T) {
	f := newFixture(t)
	hold := f.gen.holdAll()
	var wg sync.WaitGroup
	var first *http.Response
	wg.Add(1)
	go func() {
		defer wg.Done()
		first = f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("Idempotency-Key", "dup"))
	}()
	<-f.gen.started
	wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("Idempotency-Key", "dup")),
		409, "conflict_error", "idempotency_key_in_use", "")
	close(hold)
	wg.Wait()
	if first.StatusCode != 200 {
		t.Fatalf("first: %d", first.StatusCode)
	}
	if n := len(f.events()); n != 1 {
		t.Errorf("%d events", n)
	}
}

func TestRequestID_ReuseIsNotFree(t *testing.T) {
	f := newFixture(t)
	r1 := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("X-Request-Id", "client-id-1"))
	r2 := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("X-Request-Id", "client-id-1"))
	if r1.Header.Get("X-Request-Id") != "client-id-1" {
		t.Errorf("first id %q", r1.Header.Get("X-Request-Id"))
	}
	if id := r2.Header.Get("X-Request-Id"); id == "client-id-1" || !strings.HasPrefix(id, "req_") {
		t.Errorf("reused id kept: %q", id)
	}
	evs := f.events()
	// the client's id is recorded within its tenant's namespace
	if len(evs) != 2 || !strings.HasPrefix(evs[0].RequestID, "cid_") || evs[1].RequestID != r2.Header.Get("X-Request-Id") {
		t.Errorf("events %+v", evs)
	}
	// With an Idempotency-Key too: the attempt's own id must be fresh, or
	// a failed or abandoned attempt recorded under it would be dropped as a
	// duplicate, and free.
	r3 := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("X-Request-Id", "client-id-1"), hdr("Idempotency-Key", "k-1"))
	if id := r3.Header.Get("X-Request-Id"); id == "client-id-1" || !strings.HasPrefix(id, "req_") {
		t.Errorf("reused id kept with an Idempotency-Key: %q", id)
	}
}

// TestRequestID_PerTenant: a client-chosen request id is its tenant's own:
// another tenant using the same id neither takes it, nor learns that it
// was used, nor is refused.
func TestRequestID_PerTenant(t *testing.T) {
	f := newFixture(t)
	ra := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), hdr("X-Request-Id", "invoice-7781"))
	rb := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hello there"), bearer(f.keyB), hdr("X-Request-Id", "invoice-7781"))
	readAll(t, ra)
	readAll(t, rb)
	if ra.Header.Get("X-Request-Id") != "invoice-7781" || rb.Header.Get("X-Request-Id") != "invoice-7781" {
		t.Errorf("ids %q and %q: each tenant keeps its own", ra.Header.Get("X-Request-Id"), rb.Header.Get("X-Request-Id"))
	}
	// each tenant finds its own request under the id it chose
	for _, k := range []string{f.keyA, f.keyB} {
		var got struct {
			ID           string
			PromptTokens int64 `json:"prompt_tokens"`
		}
		decode(t, f.do(http.MethodGet, "/v1/usage/requests/invoice-7781", "", bearer(k)), &got)
		if got.ID != "invoice-7781" || got.PromptTokens == 0 {
			t.Errorf("lookup: %+v", got)
		}
	}
	if evs := f.events(); len(evs) != 2 || evs[0].RequestID == evs[1].RequestID || evs[0].PromptTokens == evs[1].PromptTokens {
		t.Errorf("events %+v", evs)
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t)
	t.Run("Requests", func(t *testing.T) {
		f.updateTenant(f.tenantA.ID, func(tn *nozzle.Tenant) { tn.Limits = nozzle.Limits{RequestsPerMinute: 2} })
		for i := 0; i < 2; i++ {
			r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA())
			if r.StatusCode != 200 {
				t.Fatalf("request %d: %d", i, r.StatusCode)
			}
			// OpenAI's headers: the limit, what is left, when it is whole.
			if h := r.Header; h.Get("X-Ratelimit-Limit-Requests") != "2" || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(1-i) ||
				h.Get("X-Ratelimit-Reset-Requests") == "" || h.Get("X-Ratelimit-Limit-Tokens") != "" {
				t.Errorf("request %d: headers %v", i, h)
			}
			r.Body.Close()
		}
		r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA())
		if d, err := time.ParseDuration(r.Header.Get("X-Ratelimit-Reset-Requests")); err != nil || d < 30*time.Second || d > 60*time.Second {
			t.Errorf("429: x-ratelimit-reset-requests %q", r.Header.Get("X-Ratelimit-Reset-Requests"))
		}
		ra, _ := strconv.Atoi(r.Header.Get("Retry-After"))
		if ra < 1 || ra > 31 || r.Header.Get("X-Should-Retry") != "" {
			t.Errorf("Retry-After %q, X-Should-Retry %q (a retry after the wait succeeds)", r.Header.Get("Retry-After"), r.Header.Get("X-Should-Retry"))
		}
		// the exact wait for the OpenAI SDKs, within the whole second above
		if ms, err := strconv.Atoi(r.Header.Get("Retry-After-Ms")); err != nil || ms < 1 || ms > ra*1000 || ms <= (ra-1)*1000 {
			t.Errorf("Retry-After-Ms %q with Retry-After %d", r.Header.Get("Retry-After-Ms"), ra)
		}
		wantError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
		// Another key of the same tenant has its own bucket; another
		// tenant is not affected.
		if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), bearer(f.keyB)); r.StatusCode != 200 {
			t.Errorf("tenant b: %d", r.StatusCode)
		}
		if n := len(f.events()); n != 3 {
			t.Errorf("%d events, want 3", n)
		}
	})
	t.Run("Tokens", func(t *testing.T) {
		f.updateTenant(f.tenantB.ID, func(tn *nozzle.Tenant) { tn.Limits = nozzle.Limits{TokensPerMinute: 100} })
		body := `{"model":"base","max_tokens":60,"messages":[{"role":"user","content":"hi"}]}`
		r := f.do(http.MethodPost, "/v1/chat/completions", body, bearer(f.keyB))
		if r.StatusCode != 200 {
			t.Fatalf("first: %d", r.StatusCode)
		}
		if rem, _ := strconv.Atoi(r.Header.Get("X-Ratelimit-Remaining-Tokens")); r.Header.Get("X-Ratelimit-Limit-Tokens") != "100" || rem <= 0 || rem >= 100 {
			t.Errorf("headers %v", r.Header)
		}
		r.Body.Close()
		// The first request used far fewer tokens than its estimate: the
		// difference came back, so a second one fits.
		if r := f.do(http.MethodPost, "/v1/chat/completions", body, bearer(f.keyB)); r.StatusCode != 200 {
			t.Fatalf("second: %d %s", r.StatusCode, readAll(t, r))
		}
		big := `{"model":"base","max_tokens":85,"messages":[{"role":"user","content":"hi"}]}`
		r = f.do(http.MethodPost, "/v1/chat/completions", big, bearer(f.keyB))
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("no Retry-After")
		}
		wantError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
		// A request larger than the whole limit would never fit: refused
		// outright, not let through when the bucket is full (n = 16 choices
		// of 60 tokens ask for about 960).
		huge := `{"model":"base","max_tokens":60,"n":16,"messages":[{"role":"user","content":"hi"}]}`
		r = f.do(http.MethodPost, "/v1/chat/completions", huge, bearer(f.keyB))
		if r.Header.Get("Retry-After") != "" || r.Header.Get("X-Should-Retry") != "false" {
			t.Errorf("Retry-After %q, X-Should-Retry %q", r.Header.Get("Retry-After"), r.Header.Get("X-Should-Retry"))
		}
		wantError(t, r, 429, "rate_limit_error", "request_too_large", "")
	})
	t.Run("TokensOwed", func(t *testing.T) {
		// A request of unbounded length (no max_tokens) takes at most the
		// whole bucket at admission, and owes whatever it used beyond it.
		f.updateTenant(f.tenantA.ID, func(tn *nozzle.Tenant) { tn.Limits = nozzle.Limits{TokensPerMinute: 20} })
		long := `{"model":"base","messages":[{"role":"user","content":"` + strings.Repeat("word ", 40) + `"}]}`
		if r := f.do(http.MethodPost, "/v1/chat/completions", long, f.authA()); r.StatusCode != 200 {
			t.Fatalf("first: %d %s", r.StatusCode, readAll(t, r))
		}
		// it used about 60 tokens (its prompt and six words): at 20 a
		// minute the key now waits for more than a full bucket's minute
		r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`, f.authA())
		if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 90 {
			t.Errorf("Retry-After %q after a request that used far more than the limit", r.Header.Get("Retry-After"))
		}
		wantError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	})
}

func TestBudget(t *testing.T) {
	f := newFixture(t)
	f.updateTenant(f.tenantA.ID, func(tn *nozzle.Tenant) { tn.MonthlyBudgetUSD = 0.00001 })
	r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
	if r.Header.Get("Retry-After") != "5400" || r.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("Retry-After %q, X-Should-Retry %q", r.Header.Get("Retry-After"), r.Header.Get("X-Should-Retry"))
	}
	wantError(t, r, 429, "insufficient_quota", "insufficient_quota", "")
	if n := len(f.events()); n != 0 {
		t.Errorf("%d events", n)
	}
	// Within budget: reserved at admission, released after recording.
	f.updateTenant(f.tenantA.ID, func(tn *nozzle.Tenant) { tn.MonthlyBudgetUSD = 10 })
	if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA()); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if f.w.reserved != 0 || f.w.released != 1 {
		t.Errorf("reserved %v released %d", f.w.reserved, f.w.released)
	}
}

// TestBudget_Tools: the tools a chat offers are prompt tokens too: a
// budget with room for the completion and the messages, not for the
// tools' definitions, refuses the request.
func TestBudget_Tools(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes, "ok"))
	// 1000 completion tokens at $2/M = $0.002; the tools' 2,000 bytes of
	// JSON at $1/M about as much again.
	f.updateTenant(f.tenantA.ID, func(tn *nozzle.Tenant) { tn.MonthlyBudgetUSD = 0.003 })
	desc := strings.Repeat("x", 2000)
	tools := `"tools":[{"type":"function","function":{"name":"f","description":"` + desc + `","parameters":{"type":"object"}}}]`
	r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":1000,`+tools+`,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
	wantError(t, r, 429, "insufficient_quota", "insufficient_quota", "")
	// So are an earlier call's arguments.
	args := strings.ReplaceAll(`{"a":"`+desc+`"}`, `"`, `\"`)
	msgs := `"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"` + args + `"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}]`
	r = f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":1000,`+msgs+`}`, f.authA())
	wantError(t, r, 429, "insufficient_quota", "insufficient_quota", "")
	// Without them it fits.
	if r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`, f.authA()); r.StatusCode != 200 {
		t.Errorf("status %d", r.StatusCode)
	}
}

func TestBudget_Concurrent(t *testing.T) {
	f := newFixture(t)
	// Room for about one request's estimate: 1000 completion tokens at
	// $2/M = $0.002.
	f.updateTenant(f.tenantA.ID, func(tn *nozzle.Tenant) { tn.MonthlyBudgetUSD = 0.003 })
	hold := make(chan struct{})
	f.gen.hold.Store(&hold)
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
			codes[i] = r.StatusCode
			readAll(t, r)
		}(i)
	}
	time.Sleep(100 * time.Millisecond)
	close(hold)
	wg.Wait()
	ok := 0
	for _, c := range codes {
		if c == 200 {
			ok++
		} else if c != 429 {
			t.Errorf("status %d", c)
		}
	}
	if ok != 1 {
		t.Errorf("%d admitted, want 1: %v", ok, codes)
	}
}

func TestFailures(t *testing.T) {
	t.Run("InternalAfterWork", func(t *testing.T) {
		f := newFixture(t)
		e := wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "FAIL_AFTER"), f.authA()), 500, "server_error", "", "")
		if e.Error.Message != "Internal error." {
			t.Errorf("message %q", e.Error.Message)
		}
		evs := f.events()
		if len(evs) != 1 || evs[0].Status != nozzle.UsageFailed || evs[0].ChargeUSD != 0 || evs[0].DeviceSeconds <= 0 {
			t.Fatalf("events %+v", evs)
		}
	})
	t.Run("InternalBeforeWork", func(t *testing.T) {
		f := newFixture(t)
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "FAIL_BEFORE"), f.authA()), 500, "server_error", "", "")
		if n := len(f.events()); n != 0 {
			t.Errorf("%d events for a request with no work", n)
		}
	})
	t.Run("OnePromptRefused", func(t *testing.T) {
		// One of a legacy request's prompts is refused before any work: the
		// request fails, and the other prompt stops rather than running to
		// its end.
		f := newFixture(t)
		f.gen.delay.Store(int64(20 * time.Millisecond))
		start := time.Now()
		wantError(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":["fine","TOO_LONG"],"max_tokens":50}`, f.authA()),
			400, "invalid_request_error", "context_length_exceeded", "")
		if d := time.Since(start); d > time.Second {
			t.Errorf("the refused request took %v: the other prompt ran on", d)
		}
		for _, ev := range f.events() {
			if ev.Status != nozzle.UsageFailed || ev.ChargeUSD != 0 || ev.CompletionTokens > 1 {
				t.Errorf("event %+v", ev)
			}
		}
	})
	t.Run("StreamedThenOnePromptRefused", func(t *testing.T) {
		// A refusal found late, after the other prompt's text went out in
		// the stream: that text is charged (status canceled), and the other
		// prompt stops.
		f := newFixture(t)
		f.gen.delay.Store(int64(20 * time.Millisecond))
		body := readAll(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":["fine","x REFUSE_AFTER"],"max_tokens":50,"stream":true}`, f.authA()))
		if !strings.Contains(body, "Hello") || !strings.Contains(body, "context_length_exceeded") {
			t.Fatalf("stream %s", body)
		}
		evs := f.events()
		if len(evs) != 1 || evs[0].Status != nozzle.UsageCanceled || evs[0].ChargeUSD <= 0 || evs[0].CompletionTokens > 5 {
			t.Errorf("events %+v", evs)
		}
	})
	t.Run("StreamOutOfTime", func(t *testing.T) {
		// A stream that has sent text and runs out of time (a slow reader
		// can hold one up until it does) is charged for what was produced;
		// a non-streamed answer that times out sends nothing and is not.
		f := newFixture(t, withConfig(func(c *gateway.Config) { c.RequestTimeout = 150 * time.Millisecond }))
		f.gen.delay.Store(int64(50 * time.Millisecond))
		body := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`, f.authA()))
		if !strings.Contains(body, "Hello") || !strings.Contains(body, "timeout") {
			t.Fatalf("stream %s", body)
		}
		r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA())
		if r.Header.Get("X-Should-Retry") != "false" { // a retry would run it all again
			t.Errorf("X-Should-Retry %q", r.Header.Get("X-Should-Retry"))
		}
		wantError(t, r, 503, "server_error", "timeout", "")
		evs := f.events()
		if len(evs) != 2 || evs[0].Status != nozzle.UsageCanceled || evs[0].ChargeUSD <= 0 ||
			evs[1].Status != nozzle.UsageFailed || evs[1].ChargeUSD != 0 || evs[1].CompletionTokens == 0 {
			t.Errorf("events %+v", evs)
		}
	})
	t.Run("UpstreamWithAnotherModel", func(t *testing.T) {
		// An upstream that serves another base model takes no requests:
		// they and their adapters are checked against the first one's.
		f := newFixture(t, withUpstreams(3))
		other := "other-model"
		f.gens[1].model.Store(&other)
		f.srv.CheckUpstreams(t.Context())
		for i := 0; i < 12; i++ {
			f.addAdapter(f.tenantA.ID, fmt.Sprint("m", i), strings.Repeat(fmt.Sprint(i%10), 64))
			if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody(fmt.Sprint("m", i), "hi"), f.authA()); r.StatusCode != 200 {
				t.Fatalf("status %d", r.StatusCode)
			}
		}
		if n := f.gens[1].calls.Load(); n != 0 {
			t.Errorf("the upstream with another model ran %d requests", n)
		}
		var ups struct{ Data []gateway.UpstreamStatus }
		decode(t, f.do(http.MethodGet, "/admin/upstreams", "", bearer(adminToken)), &ups)
		if len(ups.Data) != 3 || !ups.Data[0].Healthy || ups.Data[1].Healthy || ups.Data[1].Model != other || !ups.Data[2].Healthy {
			t.Errorf("upstreams %+v", ups.Data)
		}
		// The first upstream going down does not make the other model the
		// reference: the third still serves the model served so far.
		f.gens[0].down.Store(true)
		f.srv.CheckUpstreams(t.Context())
		decode(t, f.do(http.MethodGet, "/admin/upstreams", "", bearer(adminToken)), &ups)
		if ups.Data[0].Healthy || ups.Data[1].Healthy || !ups.Data[2].Healthy {
			t.Errorf("upstreams with the first one down %+v", ups.Data)
		}
		var models struct{ Data []struct{ ID string } }
		decode(t, f.do(http.MethodGet, "/v1/models", "", f.authA()), &models)
		if len(models.Data) == 0 || models.Data[0].ID != "tiny-llama" {
			t.Errorf("models with the first upstream down: %+v", models.Data)
		}
		// Nor do all of its upstreams going down: the other model's
		// upstream stays out, and the model's requests wait for theirs.
		f.gens[2].down.Store(true)
		f.srv.CheckUpstreams(t.Context())
		decode(t, f.do(http.MethodGet, "/admin/upstreams", "", bearer(adminToken)), &ups)
		if ups.Data[1].Healthy {
			t.Errorf("the other model's upstream took over: %+v", ups.Data)
		}
		if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA()); r.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("with the model's upstreams down: status %d, want 503", r.StatusCode)
		}
		f.gens[2].down.Store(false)
		f.gens[0].down.Store(false)
		// Once it serves the same model, it takes requests again.
		f.gens[1].model.Store(nil)
		f.srv.CheckUpstreams(t.Context())
		decode(t, f.do(http.MethodGet, "/admin/upstreams", "", bearer(adminToken)), &ups)
		if !ups.Data[1].Healthy {
			t.Errorf("upstreams after the fix %+v", ups.Data)
		}
	})
	t.Run("Failover", func(t *testing.T) {
		f := newFixture(t, withUpstreams(3))
		f.srv.CheckUpstreams(t.Context())
		sha := strings.Repeat("c", 64)
		f.addAdapter(f.tenantA.ID, "x", sha)
		// Affinity: the same adapter lands on the same upstream.
		for i := 0; i < 3; i++ {
			f.do(http.MethodPost, "/v1/chat/completions", chatBody("x", "hi"), f.authA())
		}
		var owner *fakeGen
		for _, g := range f.gens {
			if g.calls.Load() == 3 {
				owner = g
			} else if g.calls.Load() != 0 {
				t.Fatalf("adapter spread over upstreams")
			}
		}
		if owner == nil {
			t.Fatal("no upstream took all requests")
		}
		owner.down.Store(true)
		r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("x", "hi"), f.authA())
		if r.StatusCode != 200 {
			t.Fatalf("failover: %d %s", r.StatusCode, readAll(t, r))
		}
		evs := f.events()
		if evs[len(evs)-1].RuntimeID == owner.runtimeID {
			t.Errorf("recorded on the failed upstream")
		}
		for _, g := range f.gens {
			g.down.Store(true)
		}
		r = f.do(http.MethodPost, "/v1/chat/completions", chatBody("x", "hi"), f.authA())
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("no Retry-After on 503")
		}
		wantError(t, r, 503, "server_error", "upstream_unavailable", "")
		if n := len(f.events()); n != 4 {
			t.Errorf("%d events, want 4", n)
		}
	})
	t.Run("LedgerDown", func(t *testing.T) {
		f := newFixture(t)
		f.ledger.RecordUsageFn = func(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
			return false, context.DeadlineExceeded
		}
		// Work that cannot be recorded is not delivered.
		e := wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA()), 500, "server_error", "", "")
		if strings.Contains(e.Error.Message, "deadline") {
			t.Errorf("internal detail leaked: %q", e.Error.Message)
		}
		r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
		body := readAll(t, r)
		if strings.Contains(body, "[DONE]") || strings.Contains(body, `"finish_reason":"stop"`) || !strings.Contains(body, "Internal error.") {
			t.Errorf("stream without a recorded event: %s", body)
		}
	})
}

func TestRendezvousSpread(t *testing.T) {
	// Adapters spread over upstreams, and removing one upstream moves only
	// its adapters.
	f := newFixture(t, withUpstreams(4))
	f.srv.CheckUpstreams(t.Context())
	owners := map[string]string{}
	for i := 0; i < 40; i++ {
		name := "a" + strconv.Itoa(i)
		f.addAdapter(f.tenantA.ID, name, sha256hex([]byte(name)))
		f.do(http.MethodPost, "/v1/chat/completions", chatBody(name, "hi"), f.authA())
		owners[name] = f.events()[len(f.events())-1].RuntimeID
	}
	per := map[string]int{}
	for _, o := range owners {
		per[o]++
	}
	if len(per) != 4 {
		t.Errorf("spread %v", per)
	}
	f.gens[1].down.Store(true)
	f.srv.CheckUpstreams(t.Context())
	for i := 0; i < 40; i++ {
		name := "a" + strconv.Itoa(i)
		f.do(http.MethodPost, "/v1/chat/completions", chatBody(name, "hi"), f.authA())
		now := f.events()[len(f.events())-1].RuntimeID
		if owners[name] != "rt1" && now != owners[name] {
			t.Errorf("%s moved from %s to %s", name, owners[name], now)
		}
		if now == "rt1" {
			t.Errorf("%s still on the down upstream", name)
		}
	}
}

var _ = gateway.Upstream{}

// TestTenantSequences: one tenant's sequences running or queued at once
// are capped (Config.TenantSequences), so that its flood cannot fill
// every batch; another tenant is not affected, and what finishes frees
// its place.
func TestTenantSequences(t *testing.T) {
	f := newFixture(t, withConfig(func(c *gateway.Config) { c.TenantSequences = 4 }))
	hold := f.gen.holdAll()
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	run := func(body string, auth header) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := f.do(http.MethodPost, "/v1/chat/completions", body, auth)
			readAll(t, r)
			codes <- r.StatusCode
		}()
	}
	three := `{"model":"base","n":3,"messages":[{"role":"user","content":"hi"}]}`
	two := `{"model":"base","n":2,"messages":[{"role":"user","content":"hi"}]}`
	run(three, f.authA())
	for i := 0; i < 3; i++ {
		<-f.gen.started
	}
	r := f.do(http.MethodPost, "/v1/chat/completions", two, f.authA())
	if r.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	wantError(t, r, 429, "rate_limit_error", "too_many_requests_in_flight", "")
	run(chatBody("base", "hi"), bearer(f.keyB))
	<-f.gen.started
	close(hold)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("status %d", c)
		}
	}
	if r := f.do(http.MethodPost, "/v1/chat/completions", two, f.authA()); r.StatusCode != 200 {
		t.Errorf("after the first finished: %d %s", r.StatusCode, readAll(t, r))
	}
}

// TestTenantSequences_NoCap: without a cap (tenant_sequences 0 in the
// configuration) a tenant's sequences are not limited, and request after
// request is served: giving back what a request held never trips on a
// count that was not kept.
func TestTenantSequences_NoCap(t *testing.T) {
	f := newFixture(t, withConfig(func(c *gateway.Config) { c.TenantSequences = -1 }))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 3 {
			r := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","n":16,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
			if body := readAll(t, r); r.StatusCode != 200 {
				t.Errorf("request %d: status %d: %s", i, r.StatusCode, body)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("requests without a cap on sequences hang")
	}
}

// TestChoicesLimit: a request generates at most 16 choices (n, times the
// prompts of a legacy completion), where OpenAI's n goes up to 128; past
// that, OpenAI's refusal of a value above its bound, naming n. A request
// of more choices than its tenant may ever have at once is refused the
// same way, not with a 429 that no retry can get past.
func TestChoicesLimit(t *testing.T) {
	f := newFixture(t)
	chat := func(n int) string {
		return `{"model":"base","n":` + strconv.Itoa(n) + `,"max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`
	}
	for _, n := range []int{1, 16} {
		var out chatResponse
		r := f.do(http.MethodPost, "/v1/chat/completions", chat(n), f.authA())
		if r.StatusCode != 200 {
			t.Fatalf("n=%d: status %d: %s", n, r.StatusCode, readAll(t, r))
		}
		if decode(t, r, &out); len(out.Choices) != n {
			t.Errorf("n=%d: %d choices", n, len(out.Choices))
		}
	}
	for _, n := range []int{17, 128, 129} {
		e := wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chat(n), f.authA()), 400, "invalid_request_error", "integer_above_max_value", "n")
		if want := "Invalid 'n': integer above maximum value. Expected a value <= 16, but got " + strconv.Itoa(n) + " instead."; !strings.HasPrefix(e.Error.Message, want) {
			t.Errorf("message %q", e.Error.Message)
		}
	}
	for _, n := range []int{0, -1} {
		wantError(t, f.do(http.MethodPost, "/v1/chat/completions", chat(n), f.authA()), 400, "invalid_request_error", "integer_below_min_value", "n")
	}
	prompts := func(k int) string { return `["` + strings.Repeat(`a","`, k-1) + `a"]` }
	for _, tc := range []struct {
		prompts, n int
		param      string
	}{{4, 4, ""}, {16, 1, ""}, {4, 5, "n"}, {17, 1, "prompt"}, {2, 9, "n"}} {
		r := f.do(http.MethodPost, "/v1/completions", `{"model":"base","max_tokens":1,"n":`+strconv.Itoa(tc.n)+`,"prompt":`+prompts(tc.prompts)+`}`, f.authA())
		if tc.param == "" {
			if r.StatusCode != 200 {
				t.Errorf("%d prompts × n=%d: status %d: %s", tc.prompts, tc.n, r.StatusCode, readAll(t, r))
			}
			readAll(t, r)
			continue
		}
		wantError(t, r, 400, "invalid_request_error", "integer_above_max_value", tc.param)
	}

	small := newFixture(t, withConfig(func(c *gateway.Config) { c.TenantSequences = 8 }))
	if r := small.do(http.MethodPost, "/v1/chat/completions", chat(8), small.authA()); r.StatusCode != 200 {
		t.Errorf("n=8 of 8: status %d: %s", r.StatusCode, readAll(t, r))
	}
	e := wantError(t, small.do(http.MethodPost, "/v1/chat/completions", chat(9), small.authA()), 400, "invalid_request_error", "integer_above_max_value", "n")
	if !strings.Contains(e.Error.Message, "at most 8 sequences") {
		t.Errorf("message %q", e.Error.Message)
	}
	if len(small.events()) != 1 {
		t.Errorf("events %+v", small.events())
	}
}
