package gateway_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/web"
)

var consoleKey = []byte("console test signing key, at least 32 bytes long")

const opEmail, opPassword = "operator@example.com", "operator-password-1"

// consolePrice is the default price of the console's world.
var consolePrice = nozzle.Price{PromptPerMillionUSD: 0.1, CompletionPerMillionUSD: 0.3, CachedPromptPerMillionUSD: 0.1}

// consoleFixture is a gateway with the console over an in-memory pool, an
// operator account, and a clock tests can move.
type consoleFixture struct {
	t     *testing.T
	w     *world
	srv   *gateway.Server
	deps  gateway.Deps
	skew  atomic.Int64 // added to the console's clock
	users map[string]string
}

func newConsoleFixture(t *testing.T, cfg ...func(*gateway.ConsoleConfig)) *consoleFixture {
	t.Helper()
	return newConsoleFixtureGateway(t, nil, cfg...)
}

// newConsoleFixtureGateway is newConsoleFixture with gw changing the
// gateway's configuration.
func newConsoleFixtureGateway(t *testing.T, gw func(*gateway.Config), cfg ...func(*gateway.ConsoleConfig)) *consoleFixture {
	t.Helper()
	f := &consoleFixture{t: t, w: newWorld(consolePrice)}
	cc := gateway.ConsoleConfig{Static: web.Static, Templates: web.Templates, Layouts: web.Layouts, SigningKey: consoleKey, Clock: func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }}
	for _, fn := range cfg {
		fn(&cc)
	}
	f.w.now = cc.Clock
	f.deps = f.w.deps()
	f.deps.Extensions = []gateway.Extension{gateway.Console(cc)}
	gc := gateway.Config{AdminToken: "admin", UploadLimit: 1 << 20, UploadDir: t.TempDir(), Logger: quietLogger()}
	if gw != nil {
		gw(&gc)
	}
	srv, err := gateway.New(gc, f.deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	f.srv = srv
	if err := gateway.EnsureOperator(t.Context(), f.deps.Users, opEmail, opPassword); err != nil {
		t.Fatal(err)
	}
	return f
}

// consoleBrowser is a cookie-keeping client of the console.
type consoleBrowser struct {
	f       *consoleFixture
	cookies map[string]string
	csrf    string
	addr    string // the client address, sent as X-Forwarded-For (a fixture trusting the proxy reads it)
}

func (f *consoleFixture) browser() *consoleBrowser {
	return &consoleBrowser{f: f, cookies: map[string]string{}}
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([^"]*)">`)

func (b *consoleBrowser) do(method, path string, body io.Reader, hdr ...string) *http.Response {
	b.f.t.Helper()
	host := "127.0.0.1:8080" // where browsers keep Secure cookies over HTTP
	if u, err := url.Parse(path); err == nil && u.Host != "" {
		host, path = u.Host, u.RequestURI()
	}
	req := httptest.NewRequest(method, path, body)
	req.Host = host
	if b.addr != "" {
		req.Header.Set("X-Forwarded-For", b.addr)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	for k, v := range b.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	resp, err := b.f.srv.App().Test(req, -1)
	if err != nil {
		b.f.t.Fatal(err)
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	return resp
}

// page GETs a page and remembers its CSRF token.
func (b *consoleBrowser) page(path string) (*http.Response, string) {
	b.f.t.Helper()
	resp := b.do(http.MethodGet, path, nil)
	body := readAll(b.f.t, resp)
	if m := csrfMeta.FindStringSubmatch(body); m != nil {
		b.csrf = m[1]
	}
	return resp, body
}

func (b *consoleBrowser) form(path string, vals url.Values) (*http.Response, string) {
	b.f.t.Helper()
	resp := b.do(http.MethodPost, path, strings.NewReader(vals.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	return resp, readAll(b.f.t, resp)
}

func (b *consoleBrowser) login(email, password string) (*http.Response, string) {
	b.f.t.Helper()
	b.page("/console/login")
	return b.form("/console/login", url.Values{"_csrf": {b.csrf}, "email": {email}, "password": {password}})
}

// api calls a console JSON route with the session's CSRF token.
func (b *consoleBrowser) api(method, path, body string, hdr ...string) (*http.Response, string) {
	b.f.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	h := append([]string{"Content-Type", "application/json", gateway.HeaderCSRFToken, b.csrf}, hdr...)
	resp := b.do(method, path, r, h...)
	return resp, readAll(b.f.t, resp)
}

func wantConsoleStatus(t *testing.T, resp *http.Response, want int, body string) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, body)
	}
}

// operator returns a browser signed in as the operator.
func (f *consoleFixture) operator() *consoleBrowser {
	f.t.Helper()
	b := f.browser()
	resp, body := b.login(opEmail, opPassword)
	wantConsoleStatus(f.t, resp, http.StatusSeeOther, body)
	b.page("/console/operator")
	return b
}

// tenantUser creates a tenant with a user who signs in; it returns the
// user's browser and the tenant's first API key.
func (f *consoleFixture) tenantUser(name string) (*consoleBrowser, string) {
	f.t.Helper()
	op := f.operator()
	resp, body := op.api(http.MethodPost, "/console/api/operator/tenants", `{"name": "`+name+`"}`)
	wantConsoleStatus(f.t, resp, http.StatusCreated, body)
	var tn struct{ ID, APIKey string }
	json.Unmarshal([]byte(body), &struct {
		ID     *string `json:"id"`
		APIKey *string `json:"api_key"`
	}{&tn.ID, &tn.APIKey})
	email := "dev@" + name + ".test"
	resp, body = op.api(http.MethodPost, "/console/api/operator/tenants/"+tn.ID+"/users", `{"email": "`+email+`", "password": "tenant-password-1"}`)
	wantConsoleStatus(f.t, resp, http.StatusCreated, body)
	b := f.browser()
	resp, body = b.login(email, "tenant-password-1")
	wantConsoleStatus(f.t, resp, http.StatusSeeOther, body)
	b.page("/console/keys")
	return b, tn.APIKey
}

func TestConsole_SignIn(t *testing.T) {
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.LoginPerEmail, c.LoginPerAddress = 3, 5 })
	t.Run("WrongPassword", func(t *testing.T) {
		b := f.browser()
		resp, body := b.login(opEmail, "wrong-password-123")
		wantConsoleStatus(t, resp, http.StatusUnauthorized, body)
		if !strings.Contains(body, "Incorrect email or password.") {
			t.Errorf("no message: %s", body)
		}
		if _, ok := b.cookies["nozzle_session"]; ok {
			t.Error("a session cookie was set")
		}
	})
	t.Run("UnknownEmailSameAnswer", func(t *testing.T) {
		resp, body := f.browser().login("nobody@example.com", "whatever-password")
		wantConsoleStatus(t, resp, http.StatusUnauthorized, body)
		if !strings.Contains(body, "Incorrect email or password.") {
			t.Errorf("no message: %s", body)
		}
	})
	t.Run("FormTokenMissing", func(t *testing.T) {
		b := f.browser()
		resp, body := b.form("/console/login", url.Values{"email": {opEmail}, "password": {opPassword}})
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		if !strings.Contains(body, "expired") {
			t.Errorf("no message: %s", body)
		}
	})
	t.Run("OK", func(t *testing.T) {
		b := f.browser()
		resp, body := b.login(opEmail, opPassword)
		wantConsoleStatus(t, resp, http.StatusSeeOther, body)
		if got := resp.Header.Get("Location"); got != "/console/operator" {
			t.Errorf("Location %q", got)
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "nozzle_session" {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console" {
			t.Fatalf("session cookie %+v", ck)
		}
		if resp, body := b.page("/console/operator"); resp.StatusCode != 200 || !strings.Contains(body, "Tenants") {
			t.Fatalf("operator page: %d", resp.StatusCode)
		}
	})
	t.Run("NextStaysInConsole", func(t *testing.T) {
		b := f.browser()
		b.page("/console/login")
		resp, _ := b.form("/console/login", url.Values{"_csrf": {b.csrf}, "email": {opEmail}, "password": {opPassword}, "next": {"//evil.example/x"}})
		if got := resp.Header.Get("Location"); got != "/console/operator" {
			t.Errorf("Location %q", got)
		}
	})
	t.Run("RateLimitedPerEmail", func(t *testing.T) {
		g := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.LoginPerEmail = 3 })
		for i := 0; i < 3; i++ {
			g.browser().login(opEmail, "wrong-password-123")
		}
		resp, body := g.browser().login(opEmail, opPassword)
		wantConsoleStatus(t, resp, http.StatusTooManyRequests, body)
		if !strings.Contains(body, "Too many sign-in attempts") || resp.Header.Get("Retry-After") == "" {
			t.Errorf("no message or Retry-After: %s", body)
		}
		g.skew.Store(int64(16 * time.Minute))
		resp, body = g.browser().login(opEmail, opPassword)
		wantConsoleStatus(t, resp, http.StatusSeeOther, body)
	})
	t.Run("RateLimitedWhileInFlight", func(t *testing.T) {
		// Attempts sent at once each count before their password is
		// checked: the limiter holds however many are in flight.
		g := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.LoginPerEmail = 3 })
		codes := make(chan int, 20)
		var wg sync.WaitGroup
		for range 20 {
			b := g.browser()
			b.page("/console/login")
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, _ := b.form("/console/login", url.Values{"_csrf": {b.csrf}, "email": {opEmail}, "password": {"wrong-password-123"}})
				codes <- resp.StatusCode
			}()
		}
		wg.Wait()
		close(codes)
		n := map[int]int{}
		for c := range codes {
			n[c]++
		}
		if n[http.StatusUnauthorized] != 3 || n[http.StatusTooManyRequests] != 17 {
			t.Errorf("answers %v, want 3 × 401 and 17 × 429", n)
		}
	})
	t.Run("RateLimitedPerAddress", func(t *testing.T) {
		g := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.LoginPerAddress = 4 })
		for i := 0; i < 4; i++ {
			g.browser().login("someone"+string(rune('a'+i))+"@example.com", "wrong-password-123")
		}
		resp, body := g.browser().login(opEmail, opPassword)
		wantConsoleStatus(t, resp, http.StatusTooManyRequests, body)
	})
}

// TestConsole_SignInDeviceCookie: failures from elsewhere cannot lock a
// user out of the browser they signed in on. A sign-in with a valid
// device cookie for its email is limited by that cookie's own count; one
// without (or with a forged, expired or another email's cookie) by the
// email's and the address's.
func TestConsole_SignInDeviceCookie(t *testing.T) {
	const attacker, home, elsewhere = "198.51.100.7", "203.0.113.20", "192.0.2.33"
	trustProxy := func(c *gateway.Config) { c.TrustedProxies = []string{"0.0.0.0/0"} }
	f := newConsoleFixtureGateway(t, trustProxy, func(c *gateway.ConsoleConfig) { c.LoginPerEmail, c.LoginPerAddress = 3, 100 })
	from := func(addr string, device string) *consoleBrowser {
		b := f.browser()
		b.addr = addr
		if device != "" {
			b.cookies["nozzle_device"] = device
		}
		return b
	}
	signIn := func(t *testing.T, b *consoleBrowser, password string, want int) string {
		t.Helper()
		resp, body := b.login(opEmail, password)
		wantConsoleStatus(t, resp, want, body)
		if want == http.StatusTooManyRequests && (!strings.Contains(body, "Too many sign-in attempts") || resp.Header.Get("Retry-After") == "") {
			t.Errorf("no message or Retry-After: %s", body)
		}
		return b.cookies["nozzle_device"]
	}
	lockOut := func(t *testing.T) {
		t.Helper()
		for range 3 {
			signIn(t, from(attacker, ""), "wrong-password-123", http.StatusUnauthorized)
		}
		signIn(t, from(attacker, ""), opPassword, http.StatusTooManyRequests)
	}

	// Another user's device cookie, and the operator's, from earlier sign-ins.
	other, _ := f.tenantUser("acme")
	otherDevice := other.cookies["nozzle_device"]
	user := from(home, "")
	resp, body := user.login(opEmail, opPassword)
	wantConsoleStatus(t, resp, http.StatusSeeOther, body)
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "nozzle_device" {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/console/login" ||
		ck.Expires.Before(time.Now().Add(30*24*time.Hour)) {
		t.Fatalf("device cookie %+v", ck)
	}
	device := ck.Value
	if otherDevice == "" || otherDevice == device {
		t.Fatalf("device cookies %q and %q", otherDevice, device)
	}

	lockOut(t)
	t.Run("WithoutCookieBlocked", func(t *testing.T) {
		signIn(t, from(home, ""), opPassword, http.StatusTooManyRequests)
	})
	var device2 string
	t.Run("WithCookieSignsIn", func(t *testing.T) {
		device2 = signIn(t, from(home, device), opPassword, http.StatusSeeOther)
		if device2 == "" || device2 == device {
			t.Errorf("no fresh device cookie after signing in: %q", device2)
		}
		// and from another address, the same browser on the move
		signIn(t, from(elsewhere, device), opPassword, http.StatusSeeOther)
		// The user's sign-ins gave the attacker no fresh guesses.
		signIn(t, from(attacker, ""), opPassword, http.StatusTooManyRequests)
	})
	t.Run("ForgedCookie", func(t *testing.T) {
		parts := strings.Split(device, ".")
		if len(parts) != 4 {
			t.Fatalf("device cookie %q", device)
		}
		mac := []byte(parts[3])
		mac[0] ^= 1
		tampered := strings.Join([]string{parts[0], parts[1], parts[2], string(mac)}, ".")
		later := strings.Join([]string{parts[0], "99999999999", parts[2], parts[3]}, ".")
		otherParts := strings.Split(otherDevice, ".")
		swapped := strings.Join([]string{otherParts[0], otherParts[1], parts[2], otherParts[3]}, ".")
		g := newConsoleFixture(t, func(c *gateway.ConsoleConfig) {
			c.SigningKey = []byte("another console's signing key, 32 bytes or more")
		})
		gb := g.browser()
		signIn(t, gb, opPassword, http.StatusSeeOther)
		foreign := gb.cookies["nozzle_device"]
		for name, v := range map[string]string{"tampered": tampered, "expiry moved": later, "email swapped": swapped,
			"another console's": foreign, "garbage": "x.y.z.w"} {
			t.Run(name, func(t *testing.T) {
				if v == "" {
					t.Fatal("no cookie")
				}
				signIn(t, from(home, v), opPassword, http.StatusTooManyRequests)
			})
		}
	})
	t.Run("OtherEmailsCookie", func(t *testing.T) {
		signIn(t, from(home, otherDevice), opPassword, http.StatusTooManyRequests)
	})
	t.Run("DeviceLimit", func(t *testing.T) {
		// A stolen cookie buys as many guesses as an email: then it is
		// blocked, while the user's other browser still signs in.
		for range 3 {
			signIn(t, from(attacker, device), "wrong-password-123", http.StatusUnauthorized)
		}
		signIn(t, from(elsewhere, device), opPassword, http.StatusTooManyRequests)
		signIn(t, from(home, device2), opPassword, http.StatusSeeOther)
	})
	t.Run("ExpiredCookie", func(t *testing.T) {
		f.skew.Store(int64(91 * 24 * time.Hour))
		lockOut(t)
		signIn(t, from(home, device2), opPassword, http.StatusTooManyRequests)
	})
}

// Over plain HTTP at an address other than localhost, browsers drop the
// console's Secure cookies: the sign-in page says so and how to fix it,
// instead of answering every sign-in with an expired form.
func TestConsole_PlainHTTPElsewhere(t *testing.T) {
	const hint = "Signing in needs HTTPS at this address"
	f := newConsoleFixture(t)
	for _, tc := range []struct {
		url  string
		hdr  []string
		want bool
	}{
		{"http://nozzle.test/console/login", nil, true},
		{"http://10.1.2.3:8080/console/login", nil, true},
		{"http://127.0.0.1:8080/console/login", nil, false},
		{"http://[::1]:8080/console/login", nil, false},
		{"http://localhost:8080/console/login", nil, false},
		{"http://nozzle.test/console/login", []string{"X-Forwarded-Proto", "https"}, false}, // behind a TLS proxy
	} {
		resp := f.browser().do(http.MethodGet, tc.url, nil, tc.hdr...)
		if got := strings.Contains(readAll(t, resp), hint); got != tc.want || resp.StatusCode != 200 {
			t.Errorf("%s %v: status %d, hint shown %v, want %v", tc.url, tc.hdr, resp.StatusCode, got, tc.want)
		}
	}
	// A sign-in there fails (the form's cookie never came back) with the
	// same explanation.
	b := f.browser()
	_, page := b.page("http://nozzle.test/console/login")
	tok := regexp.MustCompile(`name="_csrf" value="([^"]*)"`).FindStringSubmatch(page)
	if tok == nil {
		t.Fatal("no form token on the sign-in page")
	}
	b.cookies = map[string]string{} // dropped by the browser
	vals := url.Values{"email": {opEmail}, "password": {opPassword}, "_csrf": {tok[1]}}
	resp := b.do(http.MethodPost, "http://nozzle.test/console/login", strings.NewReader(vals.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	if body := readAll(t, resp); resp.StatusCode != 403 || !strings.Contains(body, hint) {
		t.Errorf("sign-in: %d, hint shown %v", resp.StatusCode, strings.Contains(body, hint))
	}
	// With console_insecure_cookies, no hint: the cookies are not Secure.
	f2 := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.InsecureCookie = true })
	resp = f2.browser().do(http.MethodGet, "http://nozzle.test/console/login", nil)
	if strings.Contains(readAll(t, resp), hint) {
		t.Errorf("hint shown with insecure cookies")
	}
}

func TestConsole_SessionCookie(t *testing.T) {
	f := newConsoleFixture(t)
	b := f.operator()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		c := jwt.MapClaims{"iss": "nozzle", "aud": []string{"nozzle-console"}, "sub": "usr_1", "jti": "ses_forged",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		// Reuse the real session's ids, so only the token is at fault.
		real, _, _ := jwt.NewParser().ParseUnverified(b.cookies["nozzle_session"], jwt.MapClaims{})
		rc := real.Claims.(jwt.MapClaims)
		c["sub"], c["jti"] = rc["sub"], rc["jti"]
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := sign(jwt.SigningMethodHS256, consoleKey, claims(nil))
	tampered := []byte(valid)
	tampered[len(tampered)-3] ^= 1
	cases := []struct{ name, token string }{
		{"Garbage", "not-a-jwt"},
		{"TamperedSignature", string(tampered)},
		{"OtherKey", sign(jwt.SigningMethodHS256, []byte("another key of at least thirty-two bytes"), claims(nil))},
		{"AlgNone", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))},
		{"AlgHS512", sign(jwt.SigningMethodHS512, consoleKey, claims(nil))},
		{"NoExpiry", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { delete(c, "exp") }))},
		{"Expired", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() }))},
		{"IssuedInFuture", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }))},
		{"WrongIssuer", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { c["iss"] = "someone-else" }))},
		{"WrongAudience", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { c["aud"] = []string{"api"} }))},
		{"UnknownSession", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { c["jti"] = "ses_unknown" }))},
		{"OtherUsersSession", sign(jwt.SigningMethodHS256, consoleKey, claims(func(c jwt.MapClaims) { c["sub"] = "usr_999" }))},
	}
	t.Run("ValidControl", func(t *testing.T) {
		c := f.browser()
		c.cookies["nozzle_session"] = valid
		if resp, _ := c.page("/console/operator"); resp.StatusCode != 200 {
			t.Fatalf("a valid token was refused: %d", resp.StatusCode)
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := f.browser()
			c.cookies["nozzle_session"] = tc.token
			resp := c.do(http.MethodGet, "/console/operator", nil)
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login") {
				t.Fatalf("page: status %d Location %q", resp.StatusCode, loc)
			}
			// the sign-in page says why it is shown
			if _, body := c.page(loc); !strings.Contains(body, "Your session has ended") {
				t.Errorf("sign-in page after %s without the notice", loc)
			}
			c.cookies["nozzle_session"] = tc.token
			resp = c.do(http.MethodGet, "/console/api/operator/tenants", nil)
			wantError(t, resp, 401, "invalid_request_error", "", "")
		})
	}
	t.Run("RevokedBySignOut", func(t *testing.T) {
		c := f.operator()
		cookie := c.cookies["nozzle_session"]
		resp, body := c.form("/console/logout", url.Values{"_csrf": {c.csrf}})
		wantConsoleStatus(t, resp, http.StatusSeeOther, body)
		if _, ok := c.cookies["nozzle_session"]; ok {
			t.Error("the cookie was not cleared")
		}
		c.cookies["nozzle_session"] = cookie
		resp = c.do(http.MethodGet, "/console/api/operator/tenants", nil)
		wantError(t, resp, 401, "invalid_request_error", "session_ended", "")
	})
	t.Run("SessionExpires", func(t *testing.T) {
		g := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.SessionLifetime = time.Hour })
		c := g.operator()
		g.skew.Store(int64(2 * time.Hour))
		resp := c.do(http.MethodGet, "/console/api/operator/tenants", nil)
		wantError(t, resp, 401, "invalid_request_error", "", "")
	})
}

func TestConsole_CSRF(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	for _, tc := range []struct{ name, token string }{{"Missing", ""}, {"Wrong", "bm90LXRoZS10b2tlbg"}} {
		t.Run(tc.name, func(t *testing.T) {
			resp := b.do(http.MethodPost, "/console/api/keys", strings.NewReader(`{"name": "x"}`), "Content-Type", "application/json", gateway.HeaderCSRFToken, tc.token)
			wantError(t, resp, 403, "permission_error", "csrf_failed", "")
		})
	}
	t.Run("OtherSessionsToken", func(t *testing.T) {
		other := f.operator()
		resp := b.do(http.MethodPost, "/console/api/keys", strings.NewReader(`{}`), "Content-Type", "application/json", gateway.HeaderCSRFToken, other.csrf)
		wantError(t, resp, 403, "permission_error", "csrf_failed", "")
	})
	t.Run("LogoutNeedsToken", func(t *testing.T) {
		resp, _ := b.form("/console/logout", url.Values{})
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if resp, _ := b.page("/console/keys"); resp.StatusCode != 200 {
			t.Fatal("the session ended without a CSRF token")
		}
	})
	t.Run("NothingCreated", func(t *testing.T) {
		f.w.mu.Lock()
		n := len(f.w.keys)
		f.w.mu.Unlock()
		if n != 1 {
			t.Errorf("%d keys, want only the tenant's first", n)
		}
	})
}

func TestConsole_KeysIdempotentPerFormToken(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	var wg sync.WaitGroup
	bodies := make([]string, 4)
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := b.api(http.MethodPost, "/console/api/keys", `{"name": "ci"}`, gateway.HeaderFormToken, "form-1")
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("status %d: %s", resp.StatusCode, body)
			}
			bodies[i] = body
		}()
	}
	wg.Wait()
	for _, x := range bodies[1:] {
		if x != bodies[0] {
			t.Fatalf("answers differ:\n%s\n%s", bodies[0], x)
		}
	}
	var k struct{ Key string }
	json.Unmarshal([]byte(bodies[0]), &k)
	if !nozzle.ValidKeyFormat(k.Key) {
		t.Fatalf("key %q", k.Key)
	}
	resp, _ := b.api(http.MethodPost, "/console/api/keys", `{"name": "ci"}`, gateway.HeaderFormToken, "form-2")
	wantConsoleStatus(t, resp, http.StatusCreated, "")
	f.w.mu.Lock()
	n := len(f.w.keys)
	f.w.mu.Unlock()
	if n != 3 { // the tenant's first key, form-1's, form-2's
		t.Errorf("%d keys, want 3", n)
	}
	t.Run("FailureNotCached", func(t *testing.T) {
		resp, body := b.api(http.MethodPost, "/console/api/keys", `{"scopes": ["root"]}`, gateway.HeaderFormToken, "form-3")
		wantConsoleStatus(t, resp, http.StatusBadRequest, body)
		resp, body = b.api(http.MethodPost, "/console/api/keys", `{"scopes": ["usage"]}`, gateway.HeaderFormToken, "form-3")
		wantConsoleStatus(t, resp, http.StatusCreated, body)
	})
	t.Run("KeyWorksThenRevoked", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		resp, _ := f.srv.App().Test(req, -1)
		wantConsoleStatus(t, resp, 200, "")
		var id struct{ ID string }
		json.Unmarshal([]byte(bodies[0]), &id)
		resp, body := b.api(http.MethodDelete, "/console/api/keys/"+id.ID, "")
		wantConsoleStatus(t, resp, 200, body)
		req = httptest.NewRequest(http.MethodGet, "/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		resp, _ = f.srv.App().Test(req, -1)
		wantConsoleStatus(t, resp, 401, "")
	})
}

// TestConsole_KeysPage: the keys page lists the active keys, and the
// revoked ones apart, folded, with when each was revoked: a tenant that
// rotates keys finds its working keys at once.
func TestConsole_KeysPage(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	ids := map[string]string{}
	for _, name := range []string{"ci", "batch", "old"} {
		resp, body := b.api(http.MethodPost, "/console/api/keys", `{"name": "`+name+`"}`)
		wantConsoleStatus(t, resp, http.StatusCreated, body)
		var k struct{ ID string }
		json.Unmarshal([]byte(body), &k)
		ids[name] = k.ID
	}
	for _, name := range []string{"old", "batch"} {
		resp, body := b.api(http.MethodDelete, "/console/api/keys/"+ids[name], "")
		wantConsoleStatus(t, resp, 200, body)
		f.skew.Add(int64(2 * time.Second)) // revoked seconds apart
	}
	section := func(body, id string) string {
		return regexp.MustCompile(`(?s)<table class="data" id="` + id + `">.*?</table>`).FindString(body)
	}
	rows := func(table string) []string {
		var out []string
		for _, m := range regexp.MustCompile(`<tr data-key="([^"]+)"`).FindAllStringSubmatch(table, -1) {
			out = append(out, m[1])
		}
		return out
	}
	resp, body := b.page("/console/keys")
	wantConsoleStatus(t, resp, 200, body)
	active, revoked := section(body, "keys-table"), section(body, "revoked-table")
	if got := rows(active); len(got) != 2 || got[0] != ids["ci"] { // ci, then the tenant's first key
		t.Errorf("active rows %v, want ci's %s first of 2", got, ids["ci"])
	}
	if got := rows(revoked); len(got) != 2 || got[0] != ids["batch"] || got[1] != ids["old"] { // the last revoked first
		t.Errorf("revoked rows %v, want batch's %s then old's %s", got, ids["batch"], ids["old"])
	}
	if strings.Contains(active, "Revoked") || strings.Count(revoked, " UTC</td>") != 4 { // created and revoked, twice
		t.Errorf("active:\n%s\nrevoked:\n%s", active, revoked)
	}
	for _, w := range []string{`<details class="revoked-keys" id="revoked-keys">`, "<summary>Revoked keys (2)</summary>",
		`data-confirm="Revoke the key “ci” (`, `data-confirm-label="Revoke key"`} {
		if !strings.Contains(body, w) {
			t.Errorf("no %q", w)
		}
	}
	// Every key revoked: no active key, the revoked ones still listed.
	var all []struct{ ID string }
	_, list := b.api(http.MethodGet, "/console/api/keys", "")
	json.Unmarshal([]byte(list), &struct{ Data any }{&all})
	for _, k := range all {
		b.api(http.MethodDelete, "/console/api/keys/"+k.ID, "")
	}
	_, body = b.page("/console/keys")
	if !strings.Contains(body, "No active keys</strong>") || !strings.Contains(body, "Revoked keys (4)") || strings.Contains(body, `id="keys-table"`) {
		t.Errorf("every key revoked:\n%s", body)
	}
}

// TestConsole_AdapterTiers: the adapters page asks the runtimes where
// the adapters are all at once, not one round trip after the other, and a
// runtime that does not answer holds it for a bounded time.
func TestConsole_AdapterTiers(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	f.w.mu.Lock()
	for i := range n {
		name := fmt.Sprintf("ad-%02d", i)
		sha := fmt.Sprintf("%064x", i+1)
		f.w.adapters[u.TenantID+"/"+name] = &nozzle.Adapter{ID: fmt.Sprint("ad_", i), TenantID: u.TenantID, Name: name, CreatedAt: time.Now(),
			AdapterManifest: nozzle.AdapterManifest{SHA256: sha, Rank: 8, TargetModules: []string{"q_proj"}, SizeBytes: 1000}}
		if i%3 == 0 {
			f.w.tiers[sha] = nozzle.TierDevice
		}
	}
	f.w.tierDelay = 150 * time.Millisecond
	f.w.mu.Unlock()
	start := time.Now()
	resp, body := b.page("/console/adapters")
	took := time.Since(start)
	wantConsoleStatus(t, resp, 200, body)
	if took > n*150*time.Millisecond/2 {
		t.Errorf("the page took %v for %d adapters at 150 ms a question: asked one after the other", took, n)
	}
	if got := strings.Count(body, ">On the GPU</span>"); got != n/3 {
		t.Errorf("%d adapters on the GPU, want %d", got, n/3)
	}

	// A runtime that hangs: the page comes within its bound, every adapter
	// on disk as far as it knows.
	f.w.mu.Lock()
	f.w.tierDelay = time.Hour
	f.w.mu.Unlock()
	start = time.Now()
	resp, body = b.api(http.MethodGet, "/console/api/adapters", "")
	took = time.Since(start)
	wantConsoleStatus(t, resp, 200, body)
	if took > 5*time.Second {
		t.Errorf("the list took %v with a runtime that hangs", took)
	}
	if got := strings.Count(body, `"tier":"disk"`); got != n {
		t.Errorf("%d adapters on disk, want %d: %s", got, n, body)
	}
}

var inviteLink = regexp.MustCompile(`/console/invite/[A-Za-z0-9_-]+`)

func TestConsole_Invite(t *testing.T) {
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.InviteLifetime = 24 * time.Hour })
	op := f.operator()
	resp, body := op.api(http.MethodPost, "/console/api/operator/tenants", `{"name": "acme"}`)
	wantConsoleStatus(t, resp, http.StatusCreated, body)
	var tn struct{ ID string }
	json.Unmarshal([]byte(body), &tn)
	invite := func(email string) string {
		t.Helper()
		resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+tn.ID+"/users", `{"email": "`+email+`"}`)
		wantConsoleStatus(t, resp, http.StatusCreated, body)
		link := inviteLink.FindString(body)
		if link == "" {
			t.Fatalf("no invite link: %s", body)
		}
		return link
	}
	link := invite("dev@acme.test")
	t.Run("OnlyDigestStored", func(t *testing.T) {
		u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
		if err != nil {
			t.Fatal(err)
		}
		tok := strings.TrimPrefix(link, "/console/invite/")
		if u.InviteDigest == "" || strings.Contains(u.InviteDigest, tok) || len(u.PasswordHash) != 0 {
			t.Fatalf("user %+v", u)
		}
	})
	t.Run("DuplicateEmail", func(t *testing.T) {
		resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+tn.ID+"/users", `{"email": "dev@acme.test"}`)
		wantConsoleStatus(t, resp, http.StatusConflict, body)
	})
	t.Run("BadEmail", func(t *testing.T) {
		resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+tn.ID+"/users", `{"email": "not an email"}`)
		wantConsoleStatus(t, resp, http.StatusBadRequest, body)
	})
	b := f.browser()
	resp, body = b.page(link)
	wantConsoleStatus(t, resp, 200, body)
	if !strings.Contains(body, "dev@acme.test") {
		t.Fatal("the invite page does not name the user")
	}
	for _, tc := range []struct{ name, pw, confirm, want string }{
		{"Short", "short", "short", "at least 12 characters"},
		{"Mismatch", "a-long-password-1", "a-long-password-2", "differ"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.form(link, url.Values{"_csrf": {b.csrf}, "password": {tc.pw}, "confirm": {tc.confirm}})
			wantConsoleStatus(t, resp, http.StatusBadRequest, body)
			if !strings.Contains(body, tc.want) {
				t.Errorf("no %q in %s", tc.want, body)
			}
		})
	}
	resp, body = b.form(link, url.Values{"_csrf": {b.csrf}, "password": {"a-long-password-1"}, "confirm": {"a-long-password-1"}})
	wantConsoleStatus(t, resp, http.StatusSeeOther, body)
	if got := resp.Header.Get("Location"); got != "/console/overview" {
		t.Fatalf("Location %q", got)
	}
	if resp, _ := b.page("/console/overview"); resp.StatusCode != 200 {
		t.Fatalf("overview %d", resp.StatusCode)
	}
	t.Run("UsedOnce", func(t *testing.T) {
		resp, body := f.browser().page(link)
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
		if !strings.Contains(body, "not valid") {
			t.Errorf("body %s", body)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		link := invite("late@acme.test")
		f.skew.Store(int64(25 * time.Hour))
		defer f.skew.Store(0)
		resp, body := f.browser().page(link)
		wantConsoleStatus(t, resp, http.StatusNotFound, body)
		if !strings.Contains(body, "expired") {
			t.Errorf("body %s", body)
		}
	})
	t.Run("PasswordReset", func(t *testing.T) {
		// dev@acme.test has a password, and forgot it: the operator sends a
		// link to choose a new one; the old one works until it is used.
		u, _ := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
		_, page := op.page("/console/operator/tenants/" + tn.ID)
		if !regexp.MustCompile(`(?s)<li data-user="dev@acme.test">.*?data-url="/console/api/operator/users/` + u.ID + `/invite".*?>Password link</button>`).MatchString(page) {
			t.Errorf("no password link for a user with a password:\n%s", page)
		}
		resp, body := op.api(http.MethodPost, "/console/api/operator/users/"+u.ID+"/invite", "")
		wantConsoleStatus(t, resp, 200, body)
		link := inviteLink.FindString(body)
		if resp, body := f.browser().login("dev@acme.test", "a-long-password-1"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("the password in force no longer works: %d %s", resp.StatusCode, body)
		}
		b := f.browser()
		resp, body = b.page(link)
		wantConsoleStatus(t, resp, 200, body)
		if !strings.Contains(body, "<h1>Choose a new password</h1>") || strings.Contains(body, "Welcome") {
			t.Errorf("the link's page:\n%s", body)
		}
		resp, body = b.form(link, url.Values{"_csrf": {b.csrf}, "password": {"a-new-password-2"}, "confirm": {"a-new-password-2"}})
		wantConsoleStatus(t, resp, http.StatusSeeOther, body)
		if resp, _ := f.browser().login("dev@acme.test", "a-long-password-1"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the old password still works: %d", resp.StatusCode)
		}
		if resp, body := f.browser().login("dev@acme.test", "a-new-password-2"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("the new password does not work: %d %s", resp.StatusCode, body)
		}
		if resp, _ := f.browser().page(link); resp.StatusCode != http.StatusNotFound {
			t.Errorf("the link works twice: %d", resp.StatusCode)
		}
	})
	t.Run("NewLinkReplacesOld", func(t *testing.T) {
		old := invite("new@acme.test")
		u, _ := f.deps.Users.UserByEmail(t.Context(), "new@acme.test")
		resp, body := op.api(http.MethodPost, "/console/api/operator/users/"+u.ID+"/invite", "")
		wantConsoleStatus(t, resp, 200, body)
		if resp, _ := f.browser().page(old); resp.StatusCode != http.StatusNotFound {
			t.Errorf("old link: %d", resp.StatusCode)
		}
		if resp, _ := f.browser().page(inviteLink.FindString(body)); resp.StatusCode != 200 {
			t.Errorf("new link: %d", resp.StatusCode)
		}
	})
}

func consoleMultipart(t *testing.T, fields map[string]string, files map[string][]byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	for name, b := range files {
		w, _ := mw.CreateFormFile(name, name)
		w.Write(b)
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func TestConsole_AdapterUpload(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	dir := t.TempDir()
	if err := writeTestAdapter(dir, 8); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, nozzle.AdapterConfigFile))
	weights, _ := os.ReadFile(filepath.Join(dir, nozzle.AdapterWeightsFile))
	upload := func(fields map[string]string, files map[string][]byte, hdr ...string) *http.Response {
		body, ct := consoleMultipart(t, fields, files)
		return b.do(http.MethodPost, "/console/api/adapters", body, append([]string{"Content-Type", ct, gateway.HeaderCSRFToken, b.csrf}, hdr...)...)
	}
	cases := []struct {
		name   string
		fields map[string]string
		files  map[string][]byte
		status int
		msg    string
	}{
		{"OneFileMissing", map[string]string{"name": "a"}, map[string][]byte{nozzle.AdapterConfigFile: cfg}, 400, "Missing required file: adapter_model.safetensors"},
		{"WrongFile", map[string]string{"name": "a"}, map[string][]byte{"notes.txt": []byte("hi")}, 400, "Unexpected field"},
		{"NotLoRA", map[string]string{"name": "a"}, map[string][]byte{nozzle.AdapterConfigFile: []byte(`{"peft_type": "IA3"}`), nozzle.AdapterWeightsFile: weights}, 400, "only LORA adapters"},
		{"TooLarge", map[string]string{"name": "a"}, map[string][]byte{nozzle.AdapterConfigFile: cfg, nozzle.AdapterWeightsFile: make([]byte, 2<<20)}, 413, "too large"},
		{"BadName", map[string]string{"name": "../etc"}, map[string][]byte{nozzle.AdapterConfigFile: cfg, nozzle.AdapterWeightsFile: weights}, 400, "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := upload(tc.fields, tc.files)
			body := readAll(t, resp)
			wantConsoleStatus(t, resp, tc.status, body)
			if !strings.Contains(body, tc.msg) {
				t.Errorf("no %q in %s", tc.msg, body)
			}
		})
	}
	t.Run("NoCSRF", func(t *testing.T) {
		body, ct := consoleMultipart(t, map[string]string{"name": "a"}, map[string][]byte{nozzle.AdapterConfigFile: cfg, nozzle.AdapterWeightsFile: weights})
		resp := b.do(http.MethodPost, "/console/api/adapters", body, "Content-Type", ct)
		wantError(t, resp, 403, "permission_error", "csrf_failed", "")
	})
	f.w.mu.Lock()
	stored := len(f.w.adapters)
	f.w.mu.Unlock()
	if stored != 0 {
		t.Fatalf("%d adapters stored after refused uploads", stored)
	}
	resp := upload(map[string]string{"name": "support-bot"}, map[string][]byte{nozzle.AdapterConfigFile: cfg, nozzle.AdapterWeightsFile: weights})
	wantConsoleStatus(t, resp, http.StatusCreated, readAll(t, resp))
	t.Run("ListedWithTier", func(t *testing.T) {
		resp, body := b.api(http.MethodGet, "/console/api/adapters", "")
		wantConsoleStatus(t, resp, 200, body)
		if !strings.Contains(body, `"name":"support-bot"`) || !strings.Contains(body, `"tier":"disk"`) {
			t.Fatalf("list %s", body)
		}
		_, page := b.page("/console/adapters")
		if !strings.Contains(page, "On disk") || !strings.Contains(page, "q_proj, v_proj") {
			t.Fatal("the adapters page lacks the adapter's tier or targets")
		}
	})
	t.Run("Delete", func(t *testing.T) {
		f.w.mu.Lock()
		var sha string
		for _, a := range f.w.adapters {
			sha = a.SHA256
		}
		f.w.mu.Unlock()
		resp, body := b.api(http.MethodDelete, "/console/api/adapters/support-bot", "")
		wantConsoleStatus(t, resp, 200, body)
		f.w.mu.Lock()
		dropped := slices.Clone(f.w.dropped)
		f.w.mu.Unlock()
		if len(dropped) != 1 || dropped[0] != sha {
			t.Errorf("the runtime was told to drop %q, want the deleted adapter's %.12s", dropped, sha)
		}
		_, page := b.page("/console/adapters")
		if !strings.Contains(page, "No adapters yet") {
			t.Fatal("no empty state after delete")
		}
	})
}

// TestConsole_AdapterStorage: the adapters page shows what the tenant's
// adapters take of its storage quota, with a meter, and hands the upload
// form the figures to refuse files that would not fit; the operator's
// tenants and tenant pages show each tenant's. Without a quota the pages
// say "no limit" and the form refuses nothing for storage.
func TestConsole_AdapterStorage(t *testing.T) {
	dir := t.TempDir()
	if err := writeTestAdapter(dir, 8); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, nozzle.AdapterConfigFile))
	weights, _ := os.ReadFile(filepath.Join(dir, nozzle.AdapterWeightsFile))
	size := int64(len(cfg) + len(weights))
	if size >= 1<<10 {
		t.Fatalf("the test adapter is %d bytes: the wanted texts below assume under 1 KiB", size)
	}
	used := fmt.Sprintf("%d B", size)
	for _, tc := range []struct {
		name   string
		quota  int64
		before []string // the adapters page with no adapter
		after  []string // with one
		op     []string // the operator's tenants page, with one
		tenant string   // the operator's tenant page, with one
		absent []string // on the adapters page, with one
	}{
		{
			name:  "Capped",
			quota: 1 << 20,
			before: []string{`<strong>0 B</strong> of 1.0 MiB adapter storage used · 1.0 MiB free`, `data-storage-used="0" data-storage-quota="1048576"`,
				`<meter id="storage-meter" min="0" max="100" low="80" high="95" optimum="0" value="0" aria-label="Adapter storage used" aria-describedby="storage-text">`},
			after:  []string{`<strong>` + used + `</strong> of 1.0 MiB adapter storage used · `, fmt.Sprintf(`data-storage-used="%d" data-storage-quota="1048576"`, size)},
			op:     []string{used + ` <span class="muted">of 1.0 MiB</span></td>`},
			tenant: `<span id="tenant-storage">` + used + ` of 1.0 MiB</span>`,
			absent: []string{`<strong>full</strong>`, `id="storage-full"`, `class="badge badge-warn">Full`},
		},
		{
			name:   "Full",
			quota:  size,
			before: []string{`<strong>0 B</strong> of ` + used + ` adapter storage used · ` + used + ` free`},
			after: []string{`<strong>` + used + `</strong> of ` + used + ` adapter storage used — <strong>full</strong>`, `value="100"`,
				`id="storage-full"`, "delete one you no longer need to upload another"},
			op:     []string{used + ` <span class="muted">of ` + used + `</span> <span class="badge badge-warn">Full</span>`},
			tenant: `<span id="tenant-storage">` + used + ` of ` + used + ` (full)</span>`,
		},
		{
			name:   "NoLimit",
			quota:  -1,
			before: []string{`<strong>0 B</strong> adapter storage used · no limit`},
			after:  []string{`<strong>` + used + `</strong> adapter storage used · no limit`},
			op:     []string{used + ` <span class="muted">· no limit</span></td>`},
			tenant: `<span id="tenant-storage">` + used + ` (no limit)</span>`,
			absent: []string{"<meter", "data-storage-quota", "data-storage-used", `<strong>full</strong>`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newConsoleFixtureGateway(t, func(c *gateway.Config) { c.TenantAdapterBytes = tc.quota })
			b, _ := f.tenantUser("acme")
			check := func(b *consoleBrowser, path string, wants, absent []string) {
				t.Helper()
				resp, page := b.page(path)
				wantConsoleStatus(t, resp, 200, page)
				for _, w := range wants {
					if !strings.Contains(page, w) {
						t.Errorf("%s lacks %q", path, w)
					}
				}
				for _, a := range absent {
					if strings.Contains(page, a) {
						t.Errorf("%s has %q", path, a)
					}
				}
			}
			check(b, "/console/adapters", tc.before, nil)
			body, ct := consoleMultipart(t, map[string]string{"name": "support-bot"}, map[string][]byte{nozzle.AdapterConfigFile: cfg, nozzle.AdapterWeightsFile: weights})
			resp := b.do(http.MethodPost, "/console/api/adapters", body, "Content-Type", ct, gateway.HeaderCSRFToken, b.csrf)
			wantConsoleStatus(t, resp, http.StatusCreated, readAll(t, resp))
			check(b, "/console/adapters", tc.after, tc.absent)
			op := f.operator()
			check(op, "/console/operator", append([]string{"<th scope=\"col\">Adapter storage</th>"}, tc.op...), nil)
			u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
			if err != nil {
				t.Fatal(err)
			}
			check(op, "/console/operator/tenants/"+u.TenantID, []string{tc.tenant}, nil)
		})
	}
}

func TestConsole_Playground(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	resp, body := b.api(http.MethodPost, "/console/api/chat/completions",
		`{"model": "base", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hi there"}]}`)
	wantConsoleStatus(t, resp, 200, body)
	if !strings.Contains(body, `"content":" pooled"`) || !strings.Contains(body, `"usage":{`) || !strings.HasSuffix(strings.TrimSpace(body), "data: [DONE]") {
		t.Fatalf("stream:\n%s", body)
	}
	u, _ := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if len(f.w.events) != 1 {
		t.Fatalf("%d usage events", len(f.w.events))
	}
	ev := f.w.events[0]
	if ev.TenantID != u.TenantID || ev.KeyID != "console:"+u.ID || ev.CompletionTokens != 6 || ev.ChargeUSD <= 0 {
		t.Fatalf("event %+v", ev)
	}
}

func TestConsole_Pages(t *testing.T) {
	f := newConsoleFixture(t)
	b, key := f.tenantUser("acme")
	// One metered request so that charts and tables have data.
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model": "base", "messages": [{"role": "user", "content": "Hello"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if resp, _ := f.srv.App().Test(req, -1); resp.StatusCode != 200 {
		t.Fatalf("chat %d", resp.StatusCode)
	}
	op := f.operator()
	for _, tc := range []struct {
		b     *consoleBrowser
		path  string
		wants []string
	}{
		{b, "/console/overview", []string{"Saving against a dedicated GPU", "Tokens by day", "/v1/chat/completions", `"unit":"tokens"`, " · times in UTC</p>",
			`aria-label="Tokens by day chart; the Usage page has the same figures in a table, day by day."`, `href="/console/usage">The same figures, day by day`}},
		{b, "/console/adapters", []string{"No adapters yet", "drag a PEFT folder"}},
		{b, "/console/playground", []string{"nozzle-demo (base model)", `data-prompt-price="0.1"`}},
		{b, "/console/keys", []string{"Create a key", "default", "OpenAI SDK"}},
		{b, "/console/usage", []string{"Download CSV", "format=csv", `id="usage-table"`, `>Batch API<span class="visually-hidden"> charged</span></th>`, `aria-label="Tokens chart; the table below has the same figures."`, `>Cached<span class="visually-hidden"> prompt tokens</span></th>`}},
		{b, "/console/usage?period=custom&start=2020-01-01&end=2020-01-31", []string{"No usage in this period"}},
		{b, "/console/usage?adapter=gone-since", []string{`<option value="gone-since" selected>gone-since</option>`}}, // the filter shows what was asked
		{b, "/console/usage?period=custom&start=2020-02-01&end=2020-01-01", []string{"The end date must not be before the start date.",
			`value="2020-02-01"`, `value="2020-01-01"`, `<option value="custom" selected>`}}, // the dates stay to be corrected
		{b, "/console/usage?period=custom&start=2026-01-01&end=2026-03-01&group=hour", []string{"hourly figures are offered for periods of up to 31 days"}},
		{b, "/console/settings", []string{"Prices in force", "$0.10 per million", "Not connected to Stripe"}},
		{op, "/console/operator", []string{"acme", "Add a tenant", "Standard prices", " · times in UTC · "}},
		{op, "/console/operator/gpu", []string{"GPU utilisation", "Cost split by tenant", "Stripe outbox", `data-tenant="acme"`}},
		{op, "/console/operator/gpu?period=30d", []string{`"step":"day"`}},
		{op, "/console/operator/gpu?period=custom&start=2020-02-01&end=2020-01-01", []string{"The end date must not be before the start date. Showing the last 7 days meanwhile.",
			`value="2020-02-01"`, `value="2020-01-01"`, `<option value="custom" selected>`, "Last 7 days ·"}}, // the dates stay to be corrected
	} {
		t.Run(strings.TrimPrefix(tc.path, "/console/"), func(t *testing.T) {
			resp, body := tc.b.page(tc.path)
			wantConsoleStatus(t, resp, 200, body)
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
				t.Errorf("CSP %q", csp)
			}
			for _, w := range tc.wants {
				if !strings.Contains(body, w) {
					t.Errorf("no %q", w)
				}
			}
		})
	}
	t.Run("OperatorKeepsIdle", func(t *testing.T) {
		// under the operator policy the tenants' total leaves the idle
		// time out; the GPU line's margin is after all of the GPU's cost,
		// as the headline's
		f.w.mu.Lock()
		f.w.operatorIdle = true
		f.w.mu.Unlock()
		defer func() { f.w.mu.Lock(); f.w.operatorIdle = false; f.w.mu.Unlock() }()
		resp, body := op.page("/console/operator/gpu")
		wantConsoleStatus(t, resp, 200, body)
		for _, w := range []string{`data-testid="operator-idle"`, "Idle kept by the operator", `<th scope="row">Tenants</th>`, `<th scope="row">GPU</th>`} {
			if !strings.Contains(body, w) {
				t.Errorf("no %q", w)
			}
		}
	})
	t.Run("BudgetSpent", func(t *testing.T) {
		// the month's charges have reached the budget: the overview says
		// why requests are refused
		f.w.mu.Lock()
		for _, tn := range f.w.tenants {
			if tn.Name == "acme" {
				tn.MonthlyBudgetUSD = 1e-9
			}
		}
		f.w.mu.Unlock()
		resp, body := b.page("/console/overview")
		wantConsoleStatus(t, resp, 200, body)
		// and until when: the month is UTC's, whatever the reader's
		now := time.Now().UTC()
		next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC).Format("2 Jan 2006 15:04 UTC")
		if !strings.Contains(body, "monthly budget is used up: requests are refused until the month ends, "+next+",") {
			t.Errorf("no budget alert until %s:\n%s", next, body)
		}
		resp, body = b.page("/console/settings")
		wantConsoleStatus(t, resp, 200, body)
		if !strings.Contains(body, "The month runs in UTC: the next starts "+next+".") {
			t.Errorf("settings do not say when the budget starts afresh (%s):\n%s", next, body)
		}
	})
	t.Run("WrongRole", func(t *testing.T) {
		resp := b.do(http.MethodGet, "/console/operator", nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/overview" {
			t.Fatalf("tenant user on operator page: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		resp, body := b.api(http.MethodGet, "/console/api/operator/tenants", "")
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		resp = op.do(http.MethodGet, "/console/overview", nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/operator" {
			t.Fatalf("operator on tenant page: %d", resp.StatusCode)
		}
	})
	t.Run("SignedOut", func(t *testing.T) {
		page := "/console/usage?period=custom&start=2026-11-20&end=2026-11-27"
		resp := f.browser().do(http.MethodGet, page, nil)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login?") {
			t.Fatalf("%d %q", resp.StatusCode, loc)
		}
		// the whole page, filters and all, comes back after signing in
		if u, err := url.Parse(loc); err != nil || u.Query().Get("next") != page || len(u.Query()) != 1 {
			t.Fatalf("next lost its query: %q", loc)
		}
	})
	t.Run("CSV", func(t *testing.T) {
		resp := b.do(http.MethodGet, "/console/api/usage?group_by=day&format=csv", nil)
		body := readAll(t, resp)
		wantConsoleStatus(t, resp, 200, body)
		if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") || !strings.Contains(body, "\ntotal,") {
			t.Fatalf("CSV %q:\n%s", resp.Header.Get("Content-Type"), body)
		}
	})
	t.Run("Suspended", func(t *testing.T) {
		u, _ := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
		resp, body := op.api(http.MethodPatch, "/console/api/operator/tenants/"+u.TenantID, `{"suspended": true}`)
		wantConsoleStatus(t, resp, 200, body)
		resp, body = b.page("/console/overview")
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		// Every page would say the same: the way out is signing out.
		if !strings.Contains(body, "suspended") || !strings.Contains(body, `action="/console/logout"`) || strings.Contains(body, "Back to the console") {
			t.Errorf("page %s", body)
		}
		resp, body = b.api(http.MethodGet, "/console/api/keys", "")
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		op.api(http.MethodPatch, "/console/api/operator/tenants/"+u.TenantID, `{"suspended": false}`)
	})
}

func TestConsole_StaticAssets(t *testing.T) {
	f := newConsoleFixture(t)
	_, body := f.browser().page("/console/login")
	css := regexp.MustCompile(`/console/static/console\.[0-9a-f]{10}\.css`).FindString(body)
	if css == "" {
		t.Fatalf("no hashed style sheet in %s", body)
	}
	b := f.browser()
	resp := b.do(http.MethodGet, css, nil, "Accept-Encoding", "gzip")
	if got := resp.Header.Get("Cache-Control"); !strings.Contains(got, "immutable") {
		t.Errorf("Cache-Control %q", got)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Contains(plain, []byte("--accent")) {
		t.Fatal("the style sheet did not decompress")
	}
	resp = b.do(http.MethodGet, css, nil, "If-None-Match", resp.Header.Get("ETag"))
	wantConsoleStatus(t, resp, http.StatusNotModified, "")
	resp = b.do(http.MethodGet, "/console/static/console.0000000000.css", nil)
	wantConsoleStatus(t, resp, http.StatusNotFound, "")
	// Compression stays on the console: the API answers as before.
	resp = b.do(http.MethodGet, "/healthz", nil, "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("/healthz compressed")
	}
}

func TestEnsureOperator(t *testing.T) {
	f := newConsoleFixture(t)
	ctx := t.Context()
	users := f.deps.Users
	t.Run("Idempotent", func(t *testing.T) {
		u1, _ := users.UserByEmail(ctx, opEmail)
		if err := gateway.EnsureOperator(ctx, users, opEmail, opPassword); err != nil {
			t.Fatal(err)
		}
		u2, _ := users.UserByEmail(ctx, opEmail)
		if u1.ID != u2.ID || !bytes.Equal(u1.PasswordHash, u2.PasswordHash) || u2.Role != nozzle.RoleOperator {
			t.Fatal("the operator changed")
		}
		if !bytes.HasPrefix(u2.PasswordHash, []byte("$argon2id$v=19$")) {
			t.Errorf("hash %q", u2.PasswordHash)
		}
	})
	t.Run("NewPasswordInForce", func(t *testing.T) {
		if err := gateway.EnsureOperator(ctx, users, opEmail, "a-new-operator-password"); err != nil {
			t.Fatal(err)
		}
		if resp, _ := f.browser().login(opEmail, opPassword); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("old password: %d", resp.StatusCode)
		}
		if resp, _ := f.browser().login(opEmail, "a-new-operator-password"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("new password: %d", resp.StatusCode)
		}
		if err := gateway.EnsureOperator(ctx, users, opEmail, opPassword); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		for _, tc := range [][2]string{{"not-an-email", "long-enough-password"}, {"ops@example.com", "short"}} {
			if err := gateway.EnsureOperator(ctx, users, tc[0], tc[1]); nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Errorf("%v: %v", tc, err)
			}
		}
	})
	t.Run("TenantUsersEmail", func(t *testing.T) {
		f.tenantUser("acme")
		if err := gateway.EnsureOperator(ctx, users, "dev@acme.test", "long-enough-password"); nozzle.ErrorCode(err) != nozzle.ECONFLICT {
			t.Errorf("err %v", err)
		}
	})
}

func TestConsole_Config(t *testing.T) {
	w := newWorld(consolePrice)
	for _, tc := range []struct {
		name string
		cfg  gateway.ConsoleConfig
		deps func(*gateway.Deps)
	}{
		{"ShortKey", gateway.ConsoleConfig{Static: web.Static, Templates: web.Templates, Layouts: web.Layouts, SigningKey: []byte("short")}, nil},
		{"NoUsers", gateway.ConsoleConfig{Static: web.Static, Templates: web.Templates, Layouts: web.Layouts, SigningKey: consoleKey}, func(d *gateway.Deps) { d.Users = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := w.deps()
			if tc.deps != nil {
				tc.deps(&d)
			}
			d.Extensions = []gateway.Extension{gateway.Console(tc.cfg)}
			if _, err := gateway.New(gateway.Config{UploadDir: t.TempDir(), Logger: quietLogger()}, d); err == nil {
				t.Fatal("New accepted a console without what it needs")
			}
		})
	}
}

func TestCreateTenantUser(t *testing.T) {
	f := newConsoleFixture(t)
	ctx := t.Context()
	users := f.deps.Users
	tn := &nozzle.Tenant{Name: "demo-co"}
	if err := f.deps.Tenants.CreateTenant(ctx, tn); err != nil {
		t.Fatal(err)
	}
	if err := gateway.CreateTenantUser(ctx, users, tn.ID, "Demo@Example.test", "a-long-demo-password"); err != nil {
		t.Fatal(err)
	}
	u, err := users.UserByEmail(ctx, "demo@example.test")
	if err != nil || u.TenantID != tn.ID || u.Role != nozzle.RoleTenant || u.InviteDigest != "" {
		t.Fatalf("user %+v, %v", u, err)
	}
	if resp, _ := f.browser().login("demo@example.test", "a-long-demo-password"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in: %d", resp.StatusCode)
	}
	if err := gateway.CreateTenantUser(ctx, users, tn.ID, "demo@example.test", "another-long-password"); nozzle.ErrorCode(err) != nozzle.ECONFLICT {
		t.Errorf("taken email: %v", err)
	}
	for _, tc := range [][2]string{{"nope", "long-enough-password"}, {"x@example.test", "short"}} {
		if err := gateway.CreateTenantUser(ctx, users, tn.ID, tc[0], tc[1]); nozzle.ErrorCode(err) != nozzle.EINVALID {
			t.Errorf("%v: %v", tc, err)
		}
	}
}

// TestConsole_UnknownPage checks that a mistyped console address answers
// an HTML page, not the API's JSON, and that a typed /console/logout
// leads to the sign-in page.
// TestConsole_ServerErrorRequestID: a page that fails on the server says
// so without its details, and names the request for the user to quote;
// the log has what went wrong under that id.
func TestConsole_ServerErrorRequestID(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	f.w.mu.Lock()
	f.w.reportErr = errors.New("ledger: disk on fire")
	f.w.mu.Unlock()
	resp, body := b.page("/console/usage")
	wantConsoleStatus(t, resp, http.StatusInternalServerError, body)
	id := resp.Header.Get("X-Request-Id")
	if id == "" || !strings.Contains(body, "this request id: <code>"+id+"</code>") || !strings.Contains(body, "your operator") {
		t.Errorf("request id %q not on the page:\n%s", id, body)
	}
	if strings.Contains(body, "disk on fire") {
		t.Errorf("the page shows the internal error:\n%s", body)
	}
	// a client's error names no request id: there is nothing to look up
	f.w.mu.Lock()
	f.w.reportErr = nil
	f.w.mu.Unlock()
	resp, body = b.page("/console/nope")
	wantConsoleStatus(t, resp, http.StatusNotFound, body)
	if strings.Contains(body, "request id") {
		t.Errorf("a 404 page names its request:\n%s", body)
	}
}

func TestConsole_UnknownPage(t *testing.T) {
	f := newConsoleFixture(t)
	resp := f.browser().do(http.MethodGet, "/console/nope", nil)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "Not found") || strings.Contains(body, `"error"`) {
		t.Errorf("/console/nope: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp = f.browser().do(http.MethodGet, "/console/logout", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Errorf("GET /console/logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// the console's API keeps answering JSON
	resp = f.browser().do(http.MethodGet, "/console/api/nope", nil)
	if body := readAll(t, resp); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("/console/api/nope: %d %s", resp.StatusCode, body)
	}
}

// TestConsole_OverviewSaving: the overview's headline tells the saving
// against a dedicated GPU when there is one, and when the tenant's share
// of the shared GPU came to more (its share of a month's idle time, where
// a dedicated GPU counts from the first request) it says so, never a
// negative saving with "$0.00 less".
func TestConsole_OverviewSaving(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	record := func(id string, deviceSeconds float64) {
		f.w.mu.Lock()
		defer f.w.mu.Unlock()
		f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: id, TenantID: u.TenantID, Time: time.Now(), Status: nozzle.UsageOK,
			PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: deviceSeconds, RatePerHour: f.w.rate, ChargeUSD: 0.01})
	}
	headline := regexp.MustCompile(`(?s)<section class="headline".*?</section>`)
	show := func() string {
		t.Helper()
		resp, body := b.page("/console/overview")
		wantConsoleStatus(t, resp, 200, body)
		return headline.FindString(body)
	}

	record("light", 2)
	h := show()
	for _, w := range []string{"Saving against a dedicated GPU this month", "less."} {
		if !strings.Contains(h, w) {
			t.Errorf("light use: no %q in\n%s", w, h)
		}
	}

	// More device time than the month has hours: the shared GPU's cost
	// passes a dedicated one's.
	record("heavy", 40*24*3600)
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	rep, err := f.deps.Reporter.Report(t.Context(), nozzle.ReportQuery{TenantID: u.TenantID, Start: month, End: month.AddDate(0, 1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total.CostUSD <= rep.Total.DedicatedUSD {
		t.Fatalf("the fixture's cost %v is not above the dedicated %v", rep.Total.CostUSD, rep.Total.DedicatedUSD)
	}
	h = show()
	for _, w := range []string{"Against a dedicated GPU this month", `data-testid="saving">No saving yet<`, "more: it carries a share of the GPU's idle time"} {
		if !strings.Contains(h, w) {
			t.Errorf("heavy use: no %q in\n%s", w, h)
		}
	}
	for _, w := range []string{"$0.00</strong> less", ">-", ">−"} {
		if strings.Contains(h, w) {
			t.Errorf("heavy use: %q in\n%s", w, h)
		}
	}
}

// TestConsole_OverviewSavingOperatorIdle: under the operator idle policy
// the tenant's share of the shared GPU is its active time alone, and the
// overview's headline says so rather than "its idle time included".
func TestConsole_OverviewSavingOperatorIdle(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	f.w.mu.Lock()
	f.w.operatorIdle = true
	f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: "light", TenantID: u.TenantID, Time: time.Now(), Status: nozzle.UsageOK,
		PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 2, RatePerHour: f.w.rate, ChargeUSD: 0.01})
	f.w.mu.Unlock()
	resp, body := b.page("/console/overview")
	wantConsoleStatus(t, resp, 200, body)
	h := regexp.MustCompile(`(?s)<section class="headline".*?</section>`).FindString(body)
	for _, w := range []string{"Saving against a dedicated GPU this month", "less. That is the GPU time your requests took: the operator carries the GPU's idle time;"} {
		if !strings.Contains(h, w) {
			t.Errorf("no %q in\n%s", w, h)
		}
	}
	if strings.Contains(h, "idle time included") {
		t.Errorf("the operator's idle time counted as the tenant's in\n%s", h)
	}
}

// TestConsole_FormsPost: every form of the console posts, or is a filter
// (GET); a form the page's script sends, sent by the browser itself (the
// script not run yet), gets a page saying so: never what it holds (an
// invited person's first password) in the address.
func TestConsole_FormsPost(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	op := f.operator()
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+u.TenantID+"/prices", `{"prompt_per_million_usd": 1, "completion_per_million_usd": 2}`)
	wantConsoleStatus(t, resp, http.StatusCreated, body)
	formTag := regexp.MustCompile(`<form\b[^>]*>`)
	forms := 0
	for _, tc := range []struct {
		b    *consoleBrowser
		path string
	}{
		{op, "/console/operator"}, {op, "/console/operator/tenants/" + u.TenantID}, {op, "/console/operator/gpu"},
		{b, "/console/overview"}, {b, "/console/adapters"}, {b, "/console/playground"}, {b, "/console/keys"}, {b, "/console/usage"}, {b, "/console/settings"},
	} {
		resp, body := tc.b.page(tc.path)
		wantConsoleStatus(t, resp, 200, body)
		for _, tag := range formTag.FindAllString(body, -1) {
			forms++
			if !strings.Contains(tag, ` method="post"`) && !strings.Contains(tag, ` method="dialog"`) &&
				!(strings.Contains(tag, ` method="get"`) && strings.Contains(tag, `class="card filters"`)) {
				t.Errorf("%s: %s", tc.path, tag)
			}
		}
	}
	if forms < 12 {
		t.Errorf("%d forms seen", forms)
	}
	resp = op.do(http.MethodPost, "/console/operator/tenants/"+u.TenantID, strings.NewReader("email=x%40acme.test&password=first-password-1"),
		"Content-Type", "application/x-www-form-urlencoded")
	body = readAll(t, resp)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "the page&#39;s script, which has not run: reload the page") {
		t.Errorf("a form sent without its script: %d\n%s", resp.StatusCode, body)
	}
}

// TestConsole_UsageHourChartStopsNow: the usage page's hourly charts run
// up to the current hour, as the GPU page's do and as reports measure a
// period still running, rather than drawing the rest of the day as zeros.
func TestConsole_UsageHourChartStopsNow(t *testing.T) {
	now := time.Now().UTC().Truncate(24 * time.Hour).Add(5*time.Hour + 40*time.Minute)
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.Clock = func() time.Time { return now } })
	b, _ := f.tenantUser("acme")
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	f.w.mu.Lock()
	f.w.events = append(f.w.events, &nozzle.UsageEvent{RequestID: "r1", TenantID: u.TenantID, Time: now.Add(-time.Hour), Status: nozzle.UsageOK,
		PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 2, RatePerHour: 2, ChargeUSD: 0.01})
	f.w.mu.Unlock()
	for _, tc := range []struct {
		path string
		n    int
	}{
		{"/console/usage?period=today&group=hour", 6},
		{"/console/usage?period=7d&group=hour", 6*24 + 6},
		{"/console/usage?period=7d", 7},
	} {
		resp, body := b.page(tc.path)
		wantConsoleStatus(t, resp, 200, body)
		charts := chartJSON.FindAllStringSubmatch(body, -1)
		if len(charts) != 2 {
			t.Fatalf("%s: %d charts, want the tokens and the charges", tc.path, len(charts))
		}
		for _, m := range charts {
			var c pageChart
			if err := json.Unmarshal([]byte(m[1]), &c); err != nil {
				t.Fatalf("chart %s: %v", m[1], err)
			}
			if len(c.X) != tc.n || c.X[len(c.X)-1] > now.Unix() {
				t.Errorf("%s: chart %q has %d buckets up to %v, want %d up to the current one", tc.path, c.Title, len(c.X), time.Unix(c.X[len(c.X)-1], 0).UTC(), tc.n)
			}
		}
	}
}
