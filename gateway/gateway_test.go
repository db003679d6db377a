package gateway_test

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

func TestHealth(t *testing.T) {
	f := newFixture(t)
	t.Run("Healthz", func(t *testing.T) {
		resp := f.do(http.MethodGet, "/healthz", "")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := resp.Header.Get("X-Request-Id"); !strings.HasPrefix(got, "req_") {
			t.Errorf("X-Request-Id %q", got)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("X-Content-Type-Options %q", got)
		}
	})
	t.Run("ReadyzHeld", func(t *testing.T) {
		// HoldReady: not ready, the upstream healthy or not, until released.
		held := newFixture(t, withConfig(func(c *gateway.Config) { c.HoldReady = true }))
		if resp := held.do(http.MethodGet, "/readyz", ""); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("held: status %d", resp.StatusCode)
		}
		held.srv.ReleaseReady()
		if resp := held.do(http.MethodGet, "/readyz", ""); resp.StatusCode != 200 {
			t.Fatalf("released: status %d", resp.StatusCode)
		}
	})
	t.Run("Readyz", func(t *testing.T) {
		if resp := f.do(http.MethodGet, "/readyz", ""); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
		}
		f.gen.down.Store(true)
		f.srv.CheckUpstreams(t.Context())
		wantError(t, f.do(http.MethodGet, "/readyz", ""), 503, "server_error", "not_ready", "")
		f.gen.down.Store(false)
		f.srv.CheckUpstreams(t.Context())
		if resp := f.do(http.MethodGet, "/readyz", ""); resp.StatusCode != 200 {
			t.Fatalf("status %d after recovery", resp.StatusCode)
		}
	})
	t.Run("Metrics", func(t *testing.T) {
		f.do(http.MethodGet, "/v1/models", "", f.authA())
		body := readAll(t, f.do(http.MethodGet, "/metrics", ""))
		for _, want := range []string{
			`nozzle_gateway_requests_total{route="/v1/models",code="200"} 1`,
			`nozzle_gateway_upstream_healthy{upstream="rt0"} 1`,
			`nozzle_gateway_request_duration_seconds_bucket{route="/v1/models",le="+Inf"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q:\n%s", want, body)
			}
		}
	})
	t.Run("RequestIDHonoured", func(t *testing.T) {
		resp := f.do(http.MethodGet, "/healthz", "", hdr("X-Request-Id", "trace-abc.123"))
		if got := resp.Header.Get("X-Request-Id"); got != "trace-abc.123" {
			t.Errorf("X-Request-Id %q", got)
		}
		resp = f.do(http.MethodGet, "/healthz", "", hdr("X-Request-Id", "bad id with spaces"))
		if got := resp.Header.Get("X-Request-Id"); !strings.HasPrefix(got, "req_") {
			t.Errorf("insane id not replaced: %q", got)
		}
	})
	t.Run("UnknownRoute", func(t *testing.T) {
		wantError(t, f.do(http.MethodGet, "/v2/nothing", ""), 404, "invalid_request_error", "unknown_url", "")
		// under /v1 too: an endpoint Nozzle does not serve is not there,
		// whatever the method (OpenAI's SDKs call it with POST)
		e := wantError(t, f.do(http.MethodPost, "/v1/embeddings", `{}`, f.authA()), 404, "invalid_request_error", "unknown_url", "")
		// the message names what was asked for, as OpenAI's does
		if want := "Unknown request URL: POST /v1/embeddings. Please check the URL for typos."; e.Error.Message != want {
			t.Errorf("message %q", e.Error.Message)
		}
		wantError(t, f.do(http.MethodGet, "/v1/nothing", "", f.authA()), 404, "invalid_request_error", "unknown_url", "")
		// a base URL without /v1
		e = wantError(t, f.do(http.MethodPost, "/chat/completions", `{}`, f.authA()), 404, "invalid_request_error", "unknown_url", "")
		if !strings.Contains(e.Error.Message, "POST /chat/completions") || !strings.Contains(e.Error.Message, "/v1") {
			t.Errorf("message %q", e.Error.Message)
		}
		// a long path is cut short
		e = wantError(t, f.do(http.MethodGet, "/v1/"+strings.Repeat("é", 300), "", f.authA()), 404, "invalid_request_error", "unknown_url", "")
		if len(e.Error.Message) > 400 || !utf8.ValidString(e.Error.Message) || !strings.Contains(e.Error.Message, "…") {
			t.Errorf("message %q", e.Error.Message)
		}
	})
	t.Run("WrongMethod", func(t *testing.T) {
		e := wantError(t, f.do(http.MethodGet, "/v1/chat/completions", "", f.authA()), 405, "invalid_request_error", "method_not_allowed", "")
		if want := "Method not allowed: GET /v1/chat/completions. This URL takes POST."; e.Error.Message != want {
			t.Errorf("message %q, want %q", e.Error.Message, want)
		}
		// the Allow header a 405 must carry, for a route with a parameter too
		r := f.do(http.MethodGet, "/v1/keys/key_1", "", f.authA())
		e = wantError(t, r, 405, "invalid_request_error", "method_not_allowed", "")
		if got := r.Header.Get("Allow"); got != "DELETE" || !strings.HasSuffix(e.Error.Message, "This URL takes DELETE.") {
			t.Errorf("Allow %q, message %q", got, e.Error.Message)
		}
		r = f.do(http.MethodPut, "/v1/models/base", "", f.authA())
		wantError(t, r, 405, "invalid_request_error", "method_not_allowed", "")
		if got := r.Header.Get("Allow"); got != "GET, HEAD, DELETE" {
			t.Errorf("Allow %q", got)
		}
	})
}

func TestExtension(t *testing.T) {
	ext := func(s *gateway.Server) error {
		s.App().Get("/ext/whoami", s.RequireKey(nozzle.ScopeUsage), func(c *fiber.Ctx) error {
			return c.JSON(fiber.Map{"request_id": gateway.RequestID(c)})
		})
		s.App().Get("/ext/boom", func(c *fiber.Ctx) error { panic("kaboom") })
		s.App().Get("/ext/fail", func(c *fiber.Ctx) error {
			return nozzle.Errorf(nozzle.ECONFLICT, "Already there.").WithParam("thing")
		})
		return nil
	}
	f := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { d.Extensions = append(d.Extensions, ext) })
	// Extension routes get the gateway's auth, middleware and error handler.
	wantError(t, f.do(http.MethodGet, "/ext/whoami", ""), 401, "invalid_request_error", "invalid_api_key", "")
	r := f.do(http.MethodGet, "/ext/whoami", "", f.authA())
	var out struct {
		RequestID string `json:"request_id"`
	}
	decode(t, r, &out)
	if out.RequestID == "" || out.RequestID != r.Header.Get("X-Request-Id") {
		t.Errorf("request id %q vs header %q", out.RequestID, r.Header.Get("X-Request-Id"))
	}
	e := wantError(t, f.do(http.MethodGet, "/ext/boom", ""), 500, "server_error", "", "")
	if e.Error.Message != "Internal error." {
		t.Errorf("panic message %q", e.Error.Message)
	}
	wantError(t, f.do(http.MethodGet, "/ext/fail", ""), 409, "conflict_error", "", "thing")
	// The server still serves after a panic.
	if r := f.do(http.MethodGet, "/healthz", ""); r.StatusCode != 200 {
		t.Errorf("after panic: %d", r.StatusCode)
	}
}

// TestCORS checks that pages of any origin may call the API with a key,
// never with credentials, and that the console's routes stay same-origin.
func TestCORS(t *testing.T) {
	f := newFixture(t)
	origin := header{"Origin", "https://app.example"}
	r := f.do(http.MethodOptions, "/v1/chat/completions", "", origin,
		header{"Access-Control-Request-Method", "POST"},
		header{"Access-Control-Request-Headers", "authorization, content-type, x-stainless-os"})
	h := r.Header
	if r.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
		h.Get("Access-Control-Allow-Headers") != "authorization, content-type, x-stainless-os" ||
		!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight: %d %v", r.StatusCode, h)
	}
	r = f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA(), origin)
	h = r.Header
	if r.StatusCode != 200 || h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" ||
		!strings.Contains(h.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
		t.Errorf("call: %d %v", r.StatusCode, h)
	}
	// an error answer is readable by the page too (the SDK shows its message)
	r = f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), origin)
	if r.StatusCode != 401 || r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("401: %d %v", r.StatusCode, r.Header)
	}
	// no Origin, no CORS headers; the console is not the API
	if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA()); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("without Origin: %v", r.Header)
	}
	if r := f.do(http.MethodGet, "/console/login", "", origin); r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("console: %v", r.Header)
	}
}
