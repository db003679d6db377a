package gateway

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// endSessionsBefore ends every session of u started before t (once u is
// stored): authenticate refuses a session created before u.SessionsFrom.
// It never moves SessionsFrom back, which would bring ended sessions
// back.
func endSessionsBefore(u *nozzle.User, t time.Time) {
	if t = t.UTC(); t.After(u.SessionsFrom) {
		u.SessionsFrom = t
	}
}

// flashCookie carries a one-time confirmation to the next page (the
// account page after a password change): a reload shows it no more, and
// a link cannot fake it.
const (
	flashCookie          = "nozzle_flash"
	flashPasswordChanged = "password_changed"
)

type accountView struct {
	// PasswordChanged: the password was changed just now (the flash).
	PasswordChanged bool
	// Configured: the operator's password comes from the server's
	// configuration, and is not changed here.
	Configured bool
}

// accountPage shows the signed-in user's account: who they are and, for
// a tenant's user, the form to change the password.
func (cs *console) accountPage(c *fiber.Ctx, sess *consoleSession) error {
	v := accountView{Configured: sess.user.Role == nozzle.RoleOperator}
	if c.Cookies(flashCookie) == flashPasswordChanged {
		v.PasswordChanged = true
		ck := cs.cookie(flashCookie, "", time.Unix(1, 0))
		ck.Path, ck.MaxAge = "/console/account", -1
		c.Cookie(ck)
	}
	return cs.page(c, "account", v)
}

type passwordChange struct {
	Current string `json:"current_password"`
	New     string `json:"new_password"`
	Confirm string `json:"confirm_password"`
}

var errOperatorPassword = nozzle.Errorf(nozzle.EFORBIDDEN,
	"The operator's password is set in the server's configuration (operator_password, or the file operator-password in the data folder) "+
		"and set again at every start: change it there and restart Nozzle.").WithReason("operator_password_configured")

// changePassword handles POST /console/api/account/password
// {"current_password", "new_password", "confirm_password"}: a signed-in
// user of a tenant changes their own password. The new one follows the
// invite's rules and is hashed the same way (argon2id, in a hash slot).
// The current password is checked through the sign-in limiter: each try
// counts as a failed sign-in for the user's email and the client's
// address until it succeeds, and once those are used up the form is
// refused without a check, so it guesses no more than the sign-in form
// does. On success every other session of the user ends (as disabling
// the user ends them all), and this browser goes on under a session
// issued anew.
func (cs *console) changePassword(c *fiber.Ctx) error {
	sess := sessionFrom(c)
	if sess.user.Role == nozzle.RoleOperator {
		return errOperatorPassword
	}
	var r passwordChange
	if err := cs.s.readJSON(c, &r, false); err != nil {
		return err
	}
	if r.Current == "" {
		return invalid("current_password", "Enter your current password.")
	}
	if err := validatePassword(r.New); err != nil {
		return invalid("new_password", "%s", nozzle.ErrorMessage(err))
	}
	if r.New != r.Confirm {
		return invalid("confirm_password", "The two new passwords differ.")
	}
	if r.New == r.Current {
		return invalid("new_password", "The new password is the current one: choose another.")
	}
	if !cs.hashSlot() {
		c.Set(fiber.HeaderRetryAfter, "1")
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "The server is busy. Please try again in a moment.")
	}
	defer cs.releaseHashSlot()
	email, addr := sess.user.Email, c.IP()
	if wait := cs.login.attempt(email, addr); wait > 0 {
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(int(wait.Seconds()+0.999)))
		return nozzle.Errorf(nozzle.ERATELIMIT, "Too many wrong passwords for this account, here or at sign-in. For your security, try again in %s.",
			humanWait(wait)).WithReason("too_many_attempts")
	}
	if len(r.Current) > maxPasswordLength || len(sess.user.PasswordHash) == 0 || !checkPassword(sess.user.PasswordHash, r.Current) {
		return nozzle.Errorf(nozzle.EINVALID, "Your current password is not correct.").WithParam("current_password").WithReason("wrong_password")
	}
	cs.login.succeed(email, addr)
	h, err := hashPassword(r.New)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	// The user as stored now: an operator may have disabled them while
	// the passwords were hashed.
	u, err := cs.users.User(ctx, sess.user.ID)
	if err != nil {
		return err
	}
	if u.Disabled {
		return nozzle.Errorf(nozzle.EFORBIDDEN, "This account is disabled. Contact the operator.").WithReason("user_disabled")
	}
	// This browser's next session first: every session started before it
	// ends.
	next, tok, err := cs.newSession(c, u)
	if err != nil {
		return err
	}
	endSessionsBefore(u, next.CreatedAt)
	// A password link the operator sent is void: the user knows their
	// password, and may be changing it because someone else does too.
	u.PasswordHash, u.InviteDigest, u.InviteExpires = h, "", time.Time{}
	if err := cs.users.UpdateUser(ctx, u); err != nil {
		_ = cs.users.RevokeSession(ctx, next.ID)
		return err
	}
	cs.setSessionCookie(c, next, tok)
	if err := cs.users.RevokeSession(ctx, sess.sess.ID); err != nil { // ended already by SessionsFrom
		cs.s.log.LogAttrs(ctx, slog.LevelWarn, "revoke the console session a password change replaced",
			slog.String("request_id", requestID(c)), slog.String("error", err.Error()))
	}
	cs.s.log.LogAttrs(ctx, slog.LevelInfo, "console password changed, the user's other sessions ended",
		slog.String("request_id", requestID(c)), slog.String("user_id", u.ID), slog.String("email", u.Email), slog.String("tenant_id", u.TenantID))
	ck := cs.cookie(flashCookie, flashPasswordChanged, cs.cfg.Clock().Add(2*time.Minute))
	ck.Path = "/console/account"
	c.Cookie(ck)
	return c.JSON(userJSON{Object: "user", User: u})
}
