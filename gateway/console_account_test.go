package gateway_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/gateway"
)

// passwordBody is the JSON the account page's form sends.
func passwordBody(current, next, confirm string) string {
	b, _ := json.Marshal(map[string]string{"current_password": current, "new_password": next, "confirm_password": confirm})
	return string(b)
}

// TestConsole_ChangePassword: a signed-in user changes their own
// password with the current one; the new one follows the invite's rules
// and is hashed with argon2id; every other session of theirs ends, this
// one goes on under a session issued anew, with a confirmation shown
// once.
func TestConsole_ChangePassword(t *testing.T) {
	f := newConsoleFixture(t)
	b, _ := f.tenantUser("acme")
	other := f.browser() // the same user on another device
	resp, body := other.login("dev@acme.test", "tenant-password-1")
	wantConsoleStatus(t, resp, http.StatusSeeOther, body)
	resp, body = b.page("/console/account")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	for _, w := range []string{`<h1>Your account</h1>`, `data-api="/console/api/account/password"`, `autocomplete="current-password"`,
		`<label for="new-password">New password</label>`, `minlength="12"`, `<a href="/console/account" aria-current="page">Account</a>`} {
		if !strings.Contains(body, w) {
			t.Errorf("the account page lacks %q", w)
		}
	}
	const api = "/console/api/account/password"
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"WrongCurrent", passwordBody("not-my-password", "a-new-password-2", "a-new-password-2"), http.StatusBadRequest, "Your current password is not correct."},
		{"NoCurrent", passwordBody("", "a-new-password-2", "a-new-password-2"), http.StatusBadRequest, "Enter your current password."},
		{"Short", passwordBody("tenant-password-1", "short", "short"), http.StatusBadRequest, "at least 12 characters"},
		{"Long", passwordBody("tenant-password-1", strings.Repeat("x", 257), strings.Repeat("x", 257)), http.StatusBadRequest, "at most 256 bytes"},
		{"Mismatch", passwordBody("tenant-password-1", "a-new-password-2", "a-new-password-3"), http.StatusBadRequest, "The two new passwords differ."},
		{"Same", passwordBody("tenant-password-1", "tenant-password-1", "tenant-password-1"), http.StatusBadRequest, "is the current one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.api(http.MethodPost, api, tc.body)
			wantConsoleStatus(t, resp, tc.status, body)
			if !strings.Contains(body, tc.want) {
				t.Errorf("no %q in %s", tc.want, body)
			}
		})
	}
	t.Run("CSRF", func(t *testing.T) {
		resp := b.do(http.MethodPost, api, strings.NewReader(passwordBody("tenant-password-1", "a-new-password-2", "a-new-password-2")), "Content-Type", "application/json")
		body := readAll(t, resp)
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
	})
	t.Run("SignedOut", func(t *testing.T) {
		resp, body := f.browser().api(http.MethodPost, api, passwordBody("tenant-password-1", "a-new-password-2", "a-new-password-2"))
		wantConsoleStatus(t, resp, http.StatusUnauthorized, body)
	})
	// Nothing refused changed anything: the password and both sessions.
	if resp, body := f.browser().login("dev@acme.test", "tenant-password-1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the password changed on a refused form: %d %s", resp.StatusCode, body)
	}
	if resp, _ := other.page("/console/overview"); resp.StatusCode != http.StatusOK {
		t.Fatalf("a refused form ended another session: %d", resp.StatusCode)
	}

	before := *b // this browser's cookie from before the change
	before.cookies = maps.Clone(b.cookies)
	resp, body = b.api(http.MethodPost, api, passwordBody("tenant-password-1", " a new password, 2 ", " a new password, 2 "))
	wantConsoleStatus(t, resp, http.StatusOK, body)
	if strings.Contains(body, "argon2") || strings.Contains(body, "password_hash") {
		t.Errorf("the answer shows the hash: %s", body)
	}
	if before.cookies["nozzle_session"] == b.cookies["nozzle_session"] {
		t.Error("the session cookie was not issued anew")
	}
	u, err := f.deps.Users.UserByEmail(t.Context(), "dev@acme.test")
	if err != nil {
		t.Fatal(err)
	}
	if h := string(u.PasswordHash); !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h, "new password") {
		t.Errorf("stored hash %q", h)
	}
	// This browser: still signed in, with a confirmation shown once.
	resp, body = b.page("/console/account")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	if !strings.Contains(body, `role="status" tabindex="-1" data-flash id="password-changed">Your password is changed. Every other session of yours has been signed out; you stay signed in here.</p>`) {
		t.Errorf("no confirmation:\n%s", body)
	}
	if _, body := b.page("/console/account"); strings.Contains(body, "Your password is changed") {
		t.Error("the confirmation shows again on a reload")
	}
	if resp, body := b.api(http.MethodGet, "/console/api/keys", ""); resp.StatusCode != http.StatusOK { // the new session's CSRF token
		t.Errorf("this browser after the change: %d %s", resp.StatusCode, body)
	}
	// Every other session: ended, this browser's old cookie too.
	for name, s := range map[string]*consoleBrowser{"other": other, "old cookie": &before} {
		resp := s.do(http.MethodGet, "/console/overview", nil)
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/login?") {
			t.Errorf("%s session after the change: %d %q", name, resp.StatusCode, loc)
		}
	}
	// The password, taken as typed (spaces and all).
	if resp, _ := f.browser().login("dev@acme.test", "tenant-password-1"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the old password: %d", resp.StatusCode)
	}
	if resp, body := f.browser().login("dev@acme.test", " a new password, 2 "); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the new password: %d %s", resp.StatusCode, body)
	}

	t.Run("VoidsPasswordLink", func(t *testing.T) {
		op := f.operator()
		resp, body := op.api(http.MethodPost, "/console/api/operator/users/"+u.ID+"/invite", "")
		wantConsoleStatus(t, resp, http.StatusOK, body)
		link := inviteLink.FindString(body)
		resp, body = b.api(http.MethodPost, api, passwordBody(" a new password, 2 ", "a-third-password-3", "a-third-password-3"))
		wantConsoleStatus(t, resp, http.StatusOK, body)
		if resp, _ := f.browser().page(link); resp.StatusCode != http.StatusNotFound {
			t.Errorf("a password link sent before the change still works: %d", resp.StatusCode)
		}
	})
	t.Run("Operator", func(t *testing.T) {
		// the operator's password is the configured one, set again at
		// every start: the page says where, and the form is refused
		op := f.operator()
		resp, body := op.page("/console/account")
		wantConsoleStatus(t, resp, http.StatusOK, body)
		if !strings.Contains(body, `id="password-configured"`) || strings.Contains(body, `id="password-form"`) {
			t.Errorf("the operator's account page:\n%s", body)
		}
		resp, body = op.api(http.MethodPost, api, passwordBody(opPassword, "another-op-password", "another-op-password"))
		wantConsoleStatus(t, resp, http.StatusForbidden, body)
		if !strings.Contains(body, "operator_password") {
			t.Errorf("no reason: %s", body)
		}
	})
}

// TestConsole_ChangePasswordLimited: a wrong current password counts as
// a failed sign-in for the email and the address, so the form cannot be
// used to guess: once they are used up, the form is refused without a
// check (the right password too), and so is signing in.
func TestConsole_ChangePasswordLimited(t *testing.T) {
	f := newConsoleFixture(t, func(c *gateway.ConsoleConfig) { c.LoginPerEmail = 3 })
	b, _ := f.tenantUser("acme")
	const api = "/console/api/account/password"
	resp, body := f.browser().login("dev@acme.test", "wrong-password-1") // one failure at sign-in
	wantConsoleStatus(t, resp, http.StatusUnauthorized, body)
	for range 2 {
		resp, body := b.api(http.MethodPost, api, passwordBody("wrong-password-2", "a-new-password-2", "a-new-password-2"))
		wantConsoleStatus(t, resp, http.StatusBadRequest, body)
	}
	resp, body = b.api(http.MethodPost, api, passwordBody("tenant-password-1", "a-new-password-2", "a-new-password-2"))
	wantConsoleStatus(t, resp, http.StatusTooManyRequests, body)
	if !strings.Contains(body, "Too many wrong passwords") || resp.Header.Get("Retry-After") == "" {
		t.Errorf("no message or Retry-After: %s", body)
	}
	resp, body = f.browser().login("dev@acme.test", "tenant-password-1")
	wantConsoleStatus(t, resp, http.StatusTooManyRequests, body)
	if resp, _ := b.page("/console/overview"); resp.StatusCode != http.StatusOK {
		t.Errorf("the session ended: %d", resp.StatusCode)
	}
	f.skew.Store(int64(16 * 60e9))
	resp, body = b.api(http.MethodPost, api, passwordBody("tenant-password-1", "a-new-password-2", "a-new-password-2"))
	wantConsoleStatus(t, resp, http.StatusOK, body)
	if resp, body := f.browser().login("dev@acme.test", "a-new-password-2"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the new password after the wait: %d %s", resp.StatusCode, body)
	}
}
