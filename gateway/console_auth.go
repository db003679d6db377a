package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"

	"github.com/nozzle-ai/nozzle"
)

// Password hashing: argon2id with OWASP's minimum parameters (19 MiB, two
// passes, one lane), encoded in the PHC string format so that parameters
// can change without invalidating stored hashes.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// hashPassword returns the PHC-encoded argon2id hash of password.
func hashPassword(password string) ([]byte, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	sum := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Appendf(nil, "$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(sum)), nil
}

// checkPassword reports whether password matches a hash made by
// hashPassword. A malformed hash never matches.
func checkPassword(hash []byte, password string) bool {
	parts := strings.Split(string(hash), "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || m > 1<<18 || t == 0 || t > 10 || p == 0 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 128 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is checked against when an email is unknown, so that a wrong
// email and a wrong password take the same time.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := hashPassword("nozzle dummy password for timing")
	return h
})

// validatePassword applies the password policy.
func validatePassword(pw string) error {
	n := utf8.RuneCountInString(pw)
	if n < MinPasswordLength {
		return nozzle.Errorf(nozzle.EINVALID, "Choose a password of at least %d characters.", MinPasswordLength).WithParam("password")
	}
	if len(pw) > maxPasswordLength {
		return nozzle.Errorf(nozzle.EINVALID, "A password can be at most %d bytes long.", maxPasswordLength).WithParam("password")
	}
	return nil
}

func normalizeEmail(s string) string { return strings.TrimSpace(s) }

func validEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	return len(s) <= 254 && at > 0 && at < len(s)-1 && !strings.ContainsAny(s, " \t\r\n<>\"")
}

// EnsureOperator makes sure an operator account with the given email
// exists and signs in with password: it creates it, or sets its password
// when it has another one (the configured password is the one in force).
// cmd/nozzle calls it at start-up with the configured operator
// credentials. Returns EINVALID for a bad email or a short password and
// ECONFLICT when the email belongs to a tenant's user.
func EnsureOperator(ctx context.Context, users nozzle.UserService, email, password string) error {
	email = normalizeEmail(email)
	if !validEmail(email) {
		return nozzle.Errorf(nozzle.EINVALID, "The operator email %q is not a valid address.", email).WithParam("operator_email")
	}
	if err := validatePassword(password); err != nil {
		return nozzle.Errorf(nozzle.EINVALID, "The operator password must be at least %d characters.", MinPasswordLength).WithParam("operator_password")
	}
	u, err := users.UserByEmail(ctx, email)
	switch {
	case err == nil:
		if u.Role != nozzle.RoleOperator {
			return nozzle.Errorf(nozzle.ECONFLICT, "The email %q belongs to a tenant's user, not an operator.", email).WithParam("operator_email")
		}
		if checkPassword(u.PasswordHash, password) && !u.Disabled && u.InviteDigest == "" {
			return nil
		}
		h, err := hashPassword(password)
		if err != nil {
			return err
		}
		u.PasswordHash, u.Disabled, u.InviteDigest, u.InviteExpires = h, false, "", time.Time{}
		if err := users.UpdateUser(ctx, u); err != nil {
			return fmt.Errorf("update operator: %w", err)
		}
		return nil
	case nozzle.ErrorCode(err) == nozzle.ENOTFOUND:
		h, err := hashPassword(password)
		if err != nil {
			return err
		}
		if err := users.CreateUser(ctx, &nozzle.User{Email: email, Role: nozzle.RoleOperator, PasswordHash: h}); err != nil {
			return fmt.Errorf("create operator: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("look up operator: %w", err)
	}
}

// Session tokens: an HS256 JWT naming the user (sub) and the stored
// session (jti), in an HttpOnly, Secure, SameSite=Strict cookie. The
// stored session is what makes sign-out (and revocation) immediate.
const sessionAudience = "nozzle-console"

type sessionClaims struct {
	jwt.RegisteredClaims
}

func (cs *console) signSession(sess *nozzle.Session) (string, error) {
	claims := sessionClaims{jwt.RegisteredClaims{
		Issuer:    cs.cfg.Issuer,
		Subject:   sess.UserID,
		Audience:  jwt.ClaimStrings{sessionAudience},
		ExpiresAt: jwt.NewNumericDate(sess.ExpiresAt),
		IssuedAt:  jwt.NewNumericDate(cs.cfg.Clock()),
		ID:        sess.ID,
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(cs.cfg.SigningKey)
}

// parseSession verifies a session token: HS256 only (no "none", no other
// algorithm), an expiry required, the console's issuer and audience, an
// issue time not in the future, 30 s of leeway for clock skew.
func (cs *console) parseSession(tok string) (*sessionClaims, error) {
	if len(tok) > 4096 {
		return nil, errors.New("token too long")
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(cs.cfg.Issuer),
		jwt.WithAudience(sessionAudience),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(cs.cfg.Clock),
	)
	var cl sessionClaims
	_, err := p.ParseWithClaims(tok, &cl, func(*jwt.Token) (any, error) { return cs.cfg.SigningKey, nil })
	if err != nil {
		return nil, err
	}
	if cl.ID == "" || cl.Subject == "" {
		return nil, errors.New("token lacks a session or a user")
	}
	return &cl, nil
}

// csrfToken is the session's synchronizer token: an HMAC of the session
// id, so it is bound to the session and needs no storage.
func (cs *console) csrfToken(sessionID string) string {
	mac := hmac.New(sha256.New, cs.csrfKey)
	mac.Write([]byte("session\x00"))
	mac.Write([]byte(sessionID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func tokensEqual(a, b string) bool {
	return a != "" && len(a) == len(b) && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// HeaderCSRFToken carries the console's CSRF token on the pages' fetch
// calls; forms carry it in the _csrf field.
const HeaderCSRFToken = "X-CSRF-Token"

// consoleSession is the signed-in user of a console request.
type consoleSession struct {
	sess   *nozzle.Session
	user   *nozzle.User
	tenant *nozzle.Tenant // tenant users only
	csrf   string
}

const localsConsole = "nozzle.console"

func sessionFrom(c *fiber.Ctx) *consoleSession {
	cs, _ := c.Locals(localsConsole).(*consoleSession)
	return cs
}

var errSignIn = nozzle.Errorf(nozzle.EUNAUTHORIZED, "Please sign in to the console.").WithReason("session_required")

// authenticate resolves the session cookie to a signed-in user.
func (cs *console) authenticate(c *fiber.Ctx) (*consoleSession, error) {
	tok := c.Cookies(cs.cfg.CookieName)
	if tok == "" {
		return nil, errSignIn
	}
	cl, err := cs.parseSession(tok)
	if err != nil {
		return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Your session is not valid. Please sign in again.").WithReason("invalid_session").Wrap(err)
	}
	ctx := c.UserContext()
	sess, err := cs.users.Session(ctx, cl.ID)
	if err != nil {
		if code := nozzle.ErrorCode(err); code == nozzle.EUNAUTHORIZED || code == nozzle.ENOTFOUND {
			return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Your session has ended. Please sign in again.").WithReason("session_ended")
		}
		return nil, err
	}
	if sess.UserID != cl.Subject || !sess.RevokedAt.IsZero() || !cs.cfg.Clock().Before(sess.ExpiresAt) {
		return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Your session has ended. Please sign in again.").WithReason("session_ended")
	}
	u, err := cs.users.User(ctx, sess.UserID)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nil, errSignIn
		}
		return nil, err
	}
	if u.Disabled {
		return nil, nozzle.Errorf(nozzle.EFORBIDDEN, "This account is disabled. Contact the operator.").WithReason("user_disabled")
	}
	if sess.CreatedAt.Before(u.SessionsFrom) { // signed in before the user was disabled
		return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Your session has ended. Please sign in again.").WithReason("session_ended")
	}
	out := &consoleSession{sess: sess, user: u, csrf: cs.csrfToken(sess.ID)}
	if u.Role == nozzle.RoleTenant {
		t, err := cs.s.deps.Tenants.Tenant(ctx, u.TenantID)
		if err != nil {
			return nil, err
		}
		out.tenant = t
	}
	return out, nil
}

// requireSession admits a signed-in user of the given role (of any role
// when role is empty). Pages send anyone else to the sign-in page (or
// their own home page); JSON routes answer 401/403. Every request that
// changes state must carry the session's CSRF token (header or _csrf
// form field). For tenant users it sets the principal, so the gateway's
// tenant handlers serve the console.
func (cs *console) requireSession(role string, api bool) fiber.Handler {
	return func(c *fiber.Ctx) error {
		sess, err := cs.authenticate(c)
		if err != nil {
			if api || nozzle.ErrorCode(err) != nozzle.EUNAUTHORIZED {
				if !api {
					return cs.renderError(c, err)
				}
				return err
			}
			// A session cookie that no longer admits (expired, signed out
			// elsewhere) says so on the sign-in page. The next page is
			// escaped: its own query (filters) must come back whole.
			to := "/console/login?next=" + url.QueryEscape(safeNext(c.OriginalURL()))
			if c.Cookies(cs.cfg.CookieName) != "" {
				to += "&expired=1"
			}
			cs.clearCookie(c)
			return c.Redirect(to, fiber.StatusSeeOther)
		}
		if role != "" && sess.user.Role != role {
			if api {
				return nozzle.Errorf(nozzle.EFORBIDDEN, "This page is not available to your account.").WithReason("wrong_role")
			}
			return c.Redirect(homeOf(sess.user), fiber.StatusSeeOther)
		}
		if !isSafeMethod(c.Method()) {
			got := c.Get(HeaderCSRFToken)
			if got == "" && strings.HasPrefix(c.Get(fiber.HeaderContentType), fiber.MIMEApplicationForm) {
				got = c.FormValue("_csrf")
			}
			if !tokensEqual(got, sess.csrf) {
				return nozzle.Errorf(nozzle.EFORBIDDEN, "This request lacks a valid CSRF token. Reload the page and try again.").WithReason("csrf_failed")
			}
		}
		c.Locals(localsConsole, sess)
		if sess.tenant != nil {
			if sess.tenant.Suspended {
				err := nozzle.Errorf(nozzle.EFORBIDDEN, "Your organization's access has been suspended. Contact the operator.").WithReason("tenant_suspended")
				if api {
					return err
				}
				return cs.renderError(c, err)
			}
			cs.s.setPrincipal(c, sessionKey(sess.user.ID, sess.tenant.ID), sess.tenant)
		}
		return c.Next()
	}
}

func isSafeMethod(m string) bool {
	return m == fiber.MethodGet || m == fiber.MethodHead || m == fiber.MethodOptions
}

func homeOf(u *nozzle.User) string {
	if u.Role == nozzle.RoleOperator {
		return "/console/operator"
	}
	return "/console/overview"
}

// safeNext keeps a post-sign-in redirect inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		strings.HasPrefix(next, "/console/api/") || strings.HasPrefix(next, "/console/login") || strings.Contains(next, "..") {
		return ""
	}
	return next
}

func (cs *console) cookie(name, value string, expires time.Time) *fiber.Cookie {
	return &fiber.Cookie{Name: name, Value: value, Path: "/console", Expires: expires, HTTPOnly: true,
		Secure: !cs.cfg.InsecureCookie, SameSite: fiber.CookieSameSiteStrictMode}
}

func (cs *console) clearCookie(c *fiber.Ctx) {
	ck := cs.cookie(cs.cfg.CookieName, "", time.Unix(1, 0))
	ck.MaxAge = -1
	c.Cookie(ck)
}

// startSession stores a new session for u and sets its cookie.
func (cs *console) startSession(c *fiber.Ctx, u *nozzle.User) error {
	sess, tok, err := cs.newSession(c, u)
	if err != nil {
		return err
	}
	cs.setSessionCookie(c, sess, tok)
	return nil
}

// newSession stores a new session for u and returns it as stored (the
// store fills CreatedAt) with its token, for setSessionCookie.
func (cs *console) newSession(c *fiber.Ctx, u *nozzle.User) (*nozzle.Session, string, error) {
	now := cs.cfg.Clock()
	sess := &nozzle.Session{ID: "ses_" + randomToken(18), UserID: u.ID, ExpiresAt: now.Add(cs.cfg.SessionLifetime).UTC()}
	if err := cs.users.CreateSession(c.UserContext(), sess); err != nil {
		return nil, "", err
	}
	tok, err := cs.signSession(sess)
	if err != nil {
		_ = cs.users.RevokeSession(c.UserContext(), sess.ID)
		return nil, "", err
	}
	return sess, tok, nil
}

func (cs *console) setSessionCookie(c *fiber.Ctx, sess *nozzle.Session, tok string) {
	c.Cookie(cs.cookie(cs.cfg.CookieName, tok, sess.ExpiresAt))
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Sign-in and invite forms are posted before there is a session: their
// CSRF protection is a double-submit token, a random value both in a
// SameSite=Strict cookie and in the form.
const formCookie = "nozzle_form"

func (cs *console) formToken(c *fiber.Ctx) string {
	if v := c.Cookies(formCookie); len(v) >= 20 && len(v) <= 64 {
		return strings.Clone(v)
	}
	v := randomToken(24)
	c.Cookie(cs.cookie(formCookie, v, cs.cfg.Clock().Add(12*time.Hour)))
	return v
}

func (cs *console) checkFormToken(c *fiber.Ctx) bool {
	return tokensEqual(c.FormValue("_csrf"), c.Cookies(formCookie))
}

// home sends a visitor to their home page, or to sign in.
func (cs *console) home(c *fiber.Ctx) error {
	if sess, err := cs.authenticate(c); err == nil {
		return c.Redirect(homeOf(sess.user), fiber.StatusSeeOther)
	}
	return c.Redirect("/console/login", fiber.StatusSeeOther)
}

type loginView struct {
	Email, Next, Error, Notice string
}

func (cs *console) loginPage(c *fiber.Ctx) error {
	if sess, err := cs.authenticate(c); err == nil {
		return c.Redirect(homeOf(sess.user), fiber.StatusSeeOther)
	}
	v := loginView{Next: safeNext(c.Query("next"))}
	if c.Query("signed_out") != "" {
		v.Notice = "You have signed out."
	} else if c.Query("expired") != "" {
		v.Notice = "Your session has ended. Please sign in again."
	}
	if cs.cookiesDropped(c) {
		v.Error = errCookiesDropped
	}
	return cs.render(c, fiber.StatusOK, "login", nil, v)
}

const errCookiesDropped = "Signing in needs HTTPS at this address: the console's cookies are Secure, and browsers keep them over plain HTTP only on localhost. " +
	"Serve the console behind HTTPS, or, on a trusted network, start Nozzle with console_insecure_cookies = true."

// cookiesDropped reports whether the browser will drop the console's
// Secure cookies: plain HTTP to an address other than localhost.
func (cs *console) cookiesDropped(c *fiber.Ctx) bool {
	if cs.cfg.InsecureCookie || c.Protocol() == "https" {
		return false
	}
	host := c.Hostname()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// loginSubmit checks an email and password. A wrong email and a wrong
// password get the same answer, in the same time; failures count against
// the email and the client address, or, from a browser with a device
// cookie for the email, against that cookie alone.
func (cs *console) loginSubmit(c *fiber.Ctx) error {
	email := normalizeEmail(c.FormValue("email"))
	password := c.FormValue("password")
	v := loginView{Email: email, Next: safeNext(c.FormValue("next"))}
	fail := func(status int, msg string) error {
		v.Error = msg
		return cs.render(c, status, "login", nil, v)
	}
	if !cs.checkFormToken(c) {
		if cs.cookiesDropped(c) {
			return fail(fiber.StatusForbidden, errCookiesDropped)
		}
		return fail(fiber.StatusForbidden, "Your sign-in form had expired. Please try again.")
	}
	if email == "" || password == "" {
		return fail(fiber.StatusBadRequest, "Enter your email and password.")
	}
	if len(email) > 254 || len(password) > maxPasswordLength {
		return fail(fiber.StatusBadRequest, "Incorrect email or password.")
	}
	addr := c.IP()
	// One argon2 check at a time per slot: each takes 19 MiB, and sign-ins
	// are open to anyone.
	if !cs.hashSlot() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return fail(fiber.StatusTooManyRequests, "Too many sign-in attempts right now. Please try again in a moment.")
	}
	defer cs.releaseHashSlot()
	// A browser that signed in as this email before (a valid device
	// cookie) is limited by its own count of failures, not by the email's
	// or the address's, which anyone can run up. The attempt counts as a
	// failure until the password is checked, so that attempts sent at
	// once cannot all pass the limiter's check.
	device := cs.deviceOf(c, email)
	var wait time.Duration
	if device != "" {
		wait = cs.login.attemptDevice(device)
	} else {
		wait = cs.login.attempt(email, addr)
	}
	if wait > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(wait.Seconds()+0.999)))
		return fail(fiber.StatusTooManyRequests, fmt.Sprintf("Too many sign-in attempts. For your security, try again in %s.", humanWait(wait)))
	}
	ctx := c.UserContext()
	u, err := cs.users.UserByEmail(ctx, email)
	if err != nil && nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		return err
	}
	ok := false
	if u != nil && len(u.PasswordHash) > 0 {
		ok = checkPassword(u.PasswordHash, password)
	} else {
		checkPassword(dummyHash(), password)
	}
	if !ok || u.Disabled {
		return fail(fiber.StatusUnauthorized, "Incorrect email or password.")
	}
	if device != "" {
		cs.login.succeedDevice(device)
	} else {
		cs.login.succeed(email, addr)
	}
	if err := cs.startSession(c, u); err != nil {
		return err
	}
	cs.setDeviceCookie(c, u.Email)
	next := v.Next
	if next == "" || (u.Role == nozzle.RoleOperator) != strings.HasPrefix(next, "/console/operator") {
		next = homeOf(u)
	}
	return c.Redirect(next, fiber.StatusSeeOther)
}

// logout revokes the session server-side and clears the cookie.
func (cs *console) logout(c *fiber.Ctx) error {
	sess, err := cs.authenticate(c)
	if err != nil {
		cs.clearCookie(c)
		return c.Redirect("/console/login", fiber.StatusSeeOther)
	}
	if !tokensEqual(c.FormValue("_csrf"), sess.csrf) && !tokensEqual(c.Get(HeaderCSRFToken), sess.csrf) {
		return cs.renderError(c, nozzle.Errorf(nozzle.EFORBIDDEN, "This request lacks a valid CSRF token. Reload the page and try again.").WithReason("csrf_failed"))
	}
	if err := cs.users.RevokeSession(c.UserContext(), sess.sess.ID); err != nil {
		return err
	}
	cs.clearCookie(c)
	return c.Redirect("/console/login?signed_out=1", fiber.StatusSeeOther)
}

func humanWait(d time.Duration) string {
	if m := int(d.Minutes() + 0.999); m > 1 {
		return strconv.Itoa(m) + " minutes"
	}
	return "a minute"
}

// inviteDigest is what is stored of an invite token.
func inviteDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

type inviteView struct {
	Email, Token, Error string
	Expired             bool
	// Reset: the user has a password already and chooses a new one.
	Reset bool
}

// inviteUser finds the user of a pending, unexpired invite.
func (cs *console) inviteUser(c *fiber.Ctx, token string) (*nozzle.User, error) {
	bad := nozzle.Errorf(nozzle.ENOTFOUND, "This invite link is not valid: it may have been used already. Ask your operator for a new one.").WithReason("invite_invalid")
	if len(token) < 20 || len(token) > 100 {
		return nil, bad
	}
	u, err := cs.users.UserByInvite(c.UserContext(), inviteDigest(token))
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nil, bad
		}
		return nil, err
	}
	if u.Disabled {
		return nil, bad
	}
	if u.InviteDigest == "" || !cs.cfg.Clock().Before(u.InviteExpires) {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "This invite link has expired. Ask your operator for a new one.").WithReason("invite_expired")
	}
	return u, nil
}

func (cs *console) invitePage(c *fiber.Ctx) error {
	token := strings.Clone(c.Params("token"))
	u, err := cs.inviteUser(c, token)
	if err != nil {
		return cs.renderError(c, err)
	}
	return cs.render(c, fiber.StatusOK, "invite", nil, inviteView{Email: u.Email, Token: token, Reset: len(u.PasswordHash) > 0})
}

// inviteSubmit sets the invited user's password, ends the invite and
// signs the user in.
func (cs *console) inviteSubmit(c *fiber.Ctx) error {
	token := strings.Clone(c.Params("token"))
	u, err := cs.inviteUser(c, token)
	if err != nil {
		return cs.renderError(c, err)
	}
	v := inviteView{Email: u.Email, Token: token, Reset: len(u.PasswordHash) > 0}
	fail := func(status int, msg string) error {
		v.Error = msg
		return cs.render(c, status, "invite", nil, v)
	}
	if !cs.checkFormToken(c) {
		return fail(fiber.StatusForbidden, "Your form had expired. Please try again.")
	}
	pw := c.FormValue("password")
	if err := validatePassword(pw); err != nil {
		return fail(fiber.StatusBadRequest, nozzle.ErrorMessage(err))
	}
	if pw != c.FormValue("confirm") {
		return fail(fiber.StatusBadRequest, "The two passwords differ.")
	}
	if !cs.hashSlot() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return fail(fiber.StatusTooManyRequests, "The server is busy. Please try again in a moment.")
	}
	h, err := hashPassword(pw)
	cs.releaseHashSlot()
	if err != nil {
		return err
	}
	u.PasswordHash, u.InviteDigest, u.InviteExpires = h, "", time.Time{}
	if err := cs.users.UpdateUser(c.UserContext(), u); err != nil {
		return err
	}
	if err := cs.startSession(c, u); err != nil {
		return err
	}
	cs.setDeviceCookie(c, u.Email)
	return c.Redirect(homeOf(u), fiber.StatusSeeOther)
}

// loginLimiter counts failed sign-ins per email and per client address in
// fixed windows.
type loginLimiter struct {
	mu                sync.Mutex
	perEmail, perAddr int
	window            time.Duration
	now               func() time.Time
	counts            map[string]*loginCount
}

type loginCount struct {
	n     int
	reset time.Time
}

func newLoginLimiter(perEmail, perAddr int, window time.Duration, now func() time.Time) *loginLimiter {
	return &loginLimiter{perEmail: perEmail, perAddr: perAddr, window: window, now: now, counts: map[string]*loginCount{}}
}

func emailKey(email string) string     { return "e:" + strings.ToLower(email) }
func addrKey(addr string) string       { return "a:" + addr }
func deviceIDKey(device string) string { return "d:" + device }

// blocked returns how long sign-ins for email from addr must wait (0: not
// blocked).
func (l *loginLimiter) blocked(email, addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blockedLocked(email, addr)
}

func (l *loginLimiter) blockedLocked(email, addr string) time.Duration {
	now := l.now()
	var wait time.Duration
	check := func(key string, limit int) {
		if c := l.counts[key]; c != nil && now.Before(c.reset) && c.n >= limit {
			wait = max(wait, c.reset.Sub(now))
		}
	}
	check(emailKey(email), l.perEmail)
	check(addrKey(addr), l.perAddr)
	return wait
}

func (l *loginLimiter) fail(email, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failLocked(email, addr)
}

func (l *loginLimiter) failLocked(email, addr string) {
	l.countLocked(emailKey(email), addrKey(addr))
}

func (l *loginLimiter) countLocked(keys ...string) {
	now := l.now()
	if len(l.counts) > 100000 {
		for k, c := range l.counts {
			if !now.Before(c.reset) {
				delete(l.counts, k)
			}
		}
	}
	for _, key := range keys {
		c := l.counts[key]
		if c == nil || !now.Before(c.reset) {
			c = &loginCount{reset: now.Add(l.window)}
			l.counts[key] = c
		}
		c.n++
	}
}

// attempt starts a sign-in for email from addr: it returns how long the
// sign-in must wait, like blocked, or else counts it as a failure at once
// (succeed takes it back), so that attempts in flight count.
func (l *loginLimiter) attempt(email, addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	wait := l.blockedLocked(email, addr)
	if wait == 0 {
		l.failLocked(email, addr)
	}
	return wait
}

// succeed forgets an email's failures and takes back the address's count
// of this attempt.
func (l *loginLimiter) succeed(email, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.counts, emailKey(email))
	if c := l.counts[addrKey(addr)]; c != nil && c.n > 0 {
		c.n--
	}
}

// attemptDevice starts a sign-in from a browser holding a valid device
// cookie (device is its id): as attempt, but counted against the device
// alone, with the per-email limit, so that failures elsewhere (another
// address running up the email's count) do not block it and a stolen
// cookie buys no more guesses than an email does.
func (l *loginLimiter) attemptDevice(device string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	key, now := deviceIDKey(device), l.now()
	if c := l.counts[key]; c != nil && now.Before(c.reset) && c.n >= l.perEmail {
		return c.reset.Sub(now)
	}
	l.countLocked(key)
	return 0
}

// succeedDevice forgets a device's failures. The email's count, which
// counts sign-ins from browsers without its device cookie, stays: a
// sign-in on the user's own browser gives those no fresh guesses.
func (l *loginLimiter) succeedDevice(device string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.counts, deviceIDKey(device))
}

// Device cookies (OWASP's defence against lockout by anyone): a browser
// that signed in gets a long-lived cookie binding the email (lower case)
// to a random device id, signed with a key derived from SigningKey. A
// sign-in for that email presenting it is limited per device instead of
// per email and address (loginLimiter.attemptDevice).
const (
	deviceCookie         = "nozzle_device"
	deviceCookieLifetime = 90 * 24 * time.Hour
)

// deviceToken returns a device cookie's value for email: the device id,
// its expiry (Unix seconds), the email and an HMAC of the three, joined
// by dots (id, email and HMAC base64url).
func (cs *console) deviceToken(device, email string, expires time.Time) string {
	payload := device + "." + strconv.FormatInt(expires.Unix(), 10) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(strings.ToLower(email)))
	mac := hmac.New(sha256.New, cs.deviceKey)
	mac.Write([]byte(payload))
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// deviceOf returns the device id of the request's device cookie if it is
// valid for email, else "".
func (cs *console) deviceOf(c *fiber.Ctx, email string) string {
	return cs.parseDevice(c.Cookies(deviceCookie), email)
}

// parseDevice returns the device id of a device cookie's value if it is
// valid for email (signed by this console, unexpired, for that email),
// else "".
func (cs *console) parseDevice(v, email string) string {
	if v == "" || len(v) > 512 {
		return ""
	}
	parts := strings.Split(v, ".")
	if len(parts) != 4 || len(parts[0]) < 16 {
		return ""
	}
	sum, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil {
		return ""
	}
	mac := hmac.New(sha256.New, cs.deviceKey)
	mac.Write([]byte(v[:len(v)-len(parts[3])-1]))
	if !hmac.Equal(sum, mac.Sum(nil)) {
		return ""
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || !cs.cfg.Clock().Before(time.Unix(exp, 0)) {
		return ""
	}
	bound, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || string(bound) != strings.ToLower(email) {
		return ""
	}
	return strings.Clone(parts[0])
}

// setDeviceCookie gives the browser a fresh device cookie for email
// after it signed in: HttpOnly, Secure (as the console's other cookies),
// SameSite=Lax, sent only with sign-ins.
func (cs *console) setDeviceCookie(c *fiber.Ctx, email string) {
	expires := cs.cfg.Clock().Add(deviceCookieLifetime)
	ck := cs.cookie(deviceCookie, cs.deviceToken(randomToken(18), normalizeEmail(email), expires), expires)
	ck.Path, ck.SameSite = "/console/login", fiber.CookieSameSiteLaxMode
	c.Cookie(ck)
}

// hashSlot waits, up to hashSlotWait, for one of the slots that bound
// the password hashes computed at once (each takes argonMemory), and
// reports whether it got one; releaseHashSlot gives it back.
func (cs *console) hashSlot() bool {
	select {
	case cs.hashSlots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(hashSlotWait)
	defer t.Stop()
	select {
	case cs.hashSlots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

func (cs *console) releaseHashSlot() { <-cs.hashSlots }

const hashSlotWait = 5 * time.Second

// formCache makes the console's creation requests idempotent per form
// token (X-Form-Token): a double-clicked submit, or a retry, gets the
// answer of the first request instead of creating twice. Answers are kept
// for a while, per session; failures are not kept, so a corrected form can
// be sent again.
type formCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	now     func() time.Time
	entries map[string]*formEntry
}

type formEntry struct {
	done    chan struct{}
	ok      bool
	status  int
	ctype   string
	body    []byte
	expires time.Time
}

// HeaderFormToken names one submission of a console form.
const HeaderFormToken = "X-Form-Token"

func newFormCache(ttl time.Duration, now func() time.Time) *formCache {
	return &formCache{ttl: ttl, now: now, entries: map[string]*formEntry{}}
}

// once wraps a creation handler with the form cache.
func (cs *console) once(h fiber.Handler) fiber.Handler {
	return func(c *fiber.Ctx) error {
		tok := c.Get(HeaderFormToken)
		sess := sessionFrom(c)
		if tok == "" || sess == nil {
			return h(c)
		}
		if len(tok) > 128 {
			return invalid(HeaderFormToken, "Invalid form token.")
		}
		key := sess.sess.ID + "\x00" + c.Method() + " " + c.Path() + "\x00" + tok
		f := cs.forms
		for {
			f.mu.Lock()
			now := f.now()
			for k, e := range f.entries {
				if e.ok && now.After(e.expires) {
					delete(f.entries, k)
				}
			}
			e := f.entries[key]
			if e == nil {
				e = &formEntry{done: make(chan struct{})}
				f.entries[key] = e
				f.mu.Unlock()
				return cs.runOnce(c, h, key, e)
			}
			f.mu.Unlock()
			select {
			case <-e.done:
			case <-c.UserContext().Done():
				return nozzle.Errorf(nozzle.ECANCELED, "Canceled.")
			}
			if e.ok {
				c.Set(fiber.HeaderContentType, e.ctype)
				c.Set("X-Form-Replay", "true")
				return c.Status(e.status).Send(e.body)
			}
			// The first attempt failed: this one runs for real.
		}
	}
}

func (cs *console) runOnce(c *fiber.Ctx, h fiber.Handler, key string, e *formEntry) error {
	f := cs.forms
	err := h(c)
	status := c.Response().StatusCode()
	f.mu.Lock()
	if err == nil && status >= 200 && status < 300 {
		e.ok, e.status = true, status
		e.ctype = string(c.Response().Header.ContentType())
		e.body = append([]byte(nil), c.Response().Body()...)
		e.expires = f.now().Add(f.ttl)
	} else {
		delete(f.entries, key)
	}
	f.mu.Unlock()
	close(e.done)
	return err
}
