package billing

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

func validateUser(u *nozzle.User) error {
	email := strings.TrimSpace(u.Email)
	if email == "" || len(email) > 254 || !strings.Contains(email, "@") {
		return nozzle.Errorf(nozzle.EINVALID, "A valid email address is required.").WithParam("email")
	}
	switch u.Role {
	case nozzle.RoleTenant:
		if u.TenantID == "" {
			return nozzle.Errorf(nozzle.EINVALID, "A tenant user needs a tenant.").WithParam("tenant_id")
		}
	case nozzle.RoleOperator:
		if u.TenantID != "" {
			return nozzle.Errorf(nozzle.EINVALID, "An operator belongs to no tenant.").WithParam("tenant_id")
		}
	default:
		return nozzle.Errorf(nozzle.EINVALID, "Role %q is not one of %q or %q.", u.Role, nozzle.RoleTenant, nozzle.RoleOperator).WithParam("role")
	}
	return nil
}

// CreateUser stores a new user, filling ID and CreatedAt. Returns ECONFLICT
// if the email is taken.
func (l *Ledger) CreateUser(ctx context.Context, u *nozzle.User) error {
	if err := validateUser(u); err != nil {
		return err
	}
	rec := *u
	rec.Email = strings.TrimSpace(rec.Email)
	rec.ID = newID("usr_")
	rec.CreatedAt = l.now().UTC()
	err := l.write(ctx, func(w *wtx) error {
		if rec.TenantID != "" {
			if _, err := getTenant(w.tx, rec.TenantID); err != nil {
				return err
			}
		}
		emails := w.tx.Bucket(bUserEmails)
		if emails.Get([]byte(lower(rec.Email))) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "A user with this email exists already.").WithParam("email")
		}
		invites := w.tx.Bucket(bUserInvites)
		if rec.InviteDigest != "" && invites.Get([]byte(rec.InviteDigest)) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "This invite is in use already.")
		}
		if err := emails.Put([]byte(lower(rec.Email)), []byte(rec.ID)); err != nil {
			return err
		}
		if rec.InviteDigest != "" {
			if err := invites.Put([]byte(rec.InviteDigest), []byte(rec.ID)); err != nil {
				return err
			}
		}
		if err := w.tx.Bucket(bTenantUsers).Put(tenantUserKey(&rec), []byte{}); err != nil {
			return err
		}
		return w.tx.Bucket(bUsers).Put([]byte(rec.ID), encodeUser(&rec))
	})
	if err != nil {
		return err
	}
	*u = rec
	return nil
}

// User returns a user by ID. Returns ENOTFOUND if none.
func (l *Ledger) User(ctx context.Context, id string) (*nozzle.User, error) {
	var u *nozzle.User
	err := l.view(func(tx *bolt.Tx) (err error) { u, err = getUser(tx, []byte(id)); return err })
	return u, err
}

func getUser(tx *bolt.Tx, id []byte) (*nozzle.User, error) {
	v := tx.Bucket(bUsers).Get(id)
	if v == nil {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No such user.")
	}
	return decodeUser(v)
}

func (l *Ledger) userByIndex(bucket []byte, key string) (*nozzle.User, error) {
	var u *nozzle.User
	err := l.view(func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bucket).Get([]byte(key))
		if id == nil {
			return nozzle.Errorf(nozzle.ENOTFOUND, "No such user.")
		}
		u, err = getUser(tx, id)
		return err
	})
	return u, err
}

// UserByEmail returns a user by email, case-insensitively. Returns
// ENOTFOUND if none.
func (l *Ledger) UserByEmail(ctx context.Context, email string) (*nozzle.User, error) {
	return l.userByIndex(bUserEmails, lower(email))
}

// UserByInvite returns the user with a pending invite of the given digest.
// Returns ENOTFOUND if none.
func (l *Ledger) UserByInvite(ctx context.Context, digest string) (*nozzle.User, error) {
	if digest == "" {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No such user.")
	}
	return l.userByIndex(bUserInvites, digest)
}

// tenantUserKey is a user's entry in tenant_users: its tenant (empty for
// an operator), its creation time, then its id. Neither changes in a
// user's life, so UpdateUser leaves the entry as it is.
func tenantUserKey(u *nozzle.User) []byte {
	return join(lp(u.TenantID), timeKey(u.CreatedAt), []byte(u.ID))
}

// Users returns a tenant's users (every user when tenantID is empty),
// ordered by creation (users created in the same instant by id). A
// tenant's users are read from tenant_users, in that order already;
// every user takes the whole users bucket.
func (l *Ledger) Users(ctx context.Context, tenantID string) ([]*nozzle.User, error) {
	if tenantID != "" {
		return l.tenantUsers(tenantID)
	}
	var out []*nozzle.User
	err := l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).ForEach(func(_, v []byte) error {
			u, err := decodeUser(v)
			if err != nil {
				return err
			}
			out = append(out, u)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// tenantUsers returns a tenant's users from its prefix of tenant_users.
func (l *Ledger) tenantUsers(tenantID string) ([]*nozzle.User, error) {
	if len(tenantID) > maxIDLen {
		return nil, nil // no such tenant, so no users
	}
	var out []*nozzle.User
	err := l.view(func(tx *bolt.Tx) error {
		prefix := lp(tenantID)
		c := tx.Bucket(bTenantUsers).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			id := k[len(prefix):]
			if len(id) < 8 {
				return fmt.Errorf("tenant_users entry %q: %w", k, errCorrupt)
			}
			v := tx.Bucket(bUsers).Get(id[8:])
			if v == nil {
				return fmt.Errorf("tenant_users entry %q names no user: %w", k, errCorrupt)
			}
			u, err := decodeUser(v)
			if err != nil {
				return err
			}
			out = append(out, u)
		}
		return nil
	})
	return out, err
}

// UpdateUser stores the changed fields of u: email, password hash, invite,
// disabled and sessions from. Returns ENOTFOUND if there is no such user, ECONFLICT if
// the new email is taken.
func (l *Ledger) UpdateUser(ctx context.Context, u *nozzle.User) error {
	if err := validateUser(u); err != nil {
		return err
	}
	return l.write(ctx, func(w *wtx) error {
		old, err := getUser(w.tx, []byte(u.ID))
		if err != nil {
			return err
		}
		emails, invites := w.tx.Bucket(bUserEmails), w.tx.Bucket(bUserInvites)
		newEmail := strings.TrimSpace(u.Email)
		if lower(newEmail) != lower(old.Email) && emails.Get([]byte(lower(newEmail))) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "A user with this email exists already.").WithParam("email")
		}
		if u.InviteDigest != "" && u.InviteDigest != old.InviteDigest {
			if id := invites.Get([]byte(u.InviteDigest)); id != nil && string(id) != u.ID {
				return nozzle.Errorf(nozzle.ECONFLICT, "This invite is in use already.")
			}
		}
		rec := *old
		rec.Email = newEmail
		rec.PasswordHash = u.PasswordHash
		rec.InviteDigest = u.InviteDigest
		rec.InviteExpires = u.InviteExpires
		rec.Disabled = u.Disabled
		rec.SessionsFrom = u.SessionsFrom
		if lower(rec.Email) != lower(old.Email) {
			if err := emails.Delete([]byte(lower(old.Email))); err != nil {
				return err
			}
			if err := emails.Put([]byte(lower(rec.Email)), []byte(rec.ID)); err != nil {
				return err
			}
		}
		if old.InviteDigest != rec.InviteDigest {
			if old.InviteDigest != "" {
				if err := invites.Delete([]byte(old.InviteDigest)); err != nil {
					return err
				}
			}
			if rec.InviteDigest != "" {
				if err := invites.Put([]byte(rec.InviteDigest), []byte(rec.ID)); err != nil {
					return err
				}
			}
		}
		return w.tx.Bucket(bUsers).Put([]byte(rec.ID), encodeUser(&rec))
	})
}

// CreateSession stores a session, filling CreatedAt (and ID when empty).
func (l *Ledger) CreateSession(ctx context.Context, s *nozzle.Session) error {
	if s.UserID == "" {
		return nozzle.Errorf(nozzle.EINVALID, "A session needs a user.")
	}
	if s.ExpiresAt.IsZero() {
		return nozzle.Errorf(nozzle.EINVALID, "A session needs an expiry.")
	}
	if len(s.ID) > maxIDLen {
		return nozzle.Errorf(nozzle.EINVALID, "Session id is too long.")
	}
	rec := *s
	if rec.ID == "" {
		rec.ID = newID("ses_")
	}
	rec.CreatedAt = l.now().UTC()
	err := l.write(ctx, func(w *wtx) error {
		if _, err := getUser(w.tx, []byte(rec.UserID)); err != nil {
			return err
		}
		b := w.tx.Bucket(bSessions)
		if b.Get([]byte(rec.ID)) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "Session exists already.")
		}
		return b.Put([]byte(rec.ID), encodeJSON(sessionRecord{rec}))
	})
	if err != nil {
		return err
	}
	*s = rec
	return nil
}

// Session returns a session by ID. Returns EUNAUTHORIZED if there is none,
// or it is revoked or expired.
func (l *Ledger) Session(ctx context.Context, id string) (*nozzle.Session, error) {
	var s *nozzle.Session
	err := l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bSessions).Get([]byte(id))
		if v == nil {
			return nozzle.Errorf(nozzle.EUNAUTHORIZED, "Please sign in.")
		}
		var err error
		s, err = decodeSession(v)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !s.RevokedAt.IsZero() || !l.now().Before(s.ExpiresAt) {
		return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Your session has ended; please sign in again.")
	}
	return s, nil
}

// RevokeSession revokes a session. Revoking twice, or an unknown session,
// is not an error.
func (l *Ledger) RevokeSession(ctx context.Context, id string) error {
	now := l.now().UTC()
	return l.write(ctx, func(w *wtx) error {
		b := w.tx.Bucket(bSessions)
		v := b.Get([]byte(id))
		if v == nil {
			return nil
		}
		s, err := decodeSession(v)
		if err != nil {
			return err
		}
		if !s.RevokedAt.IsZero() {
			return nil
		}
		s.RevokedAt = now
		return b.Put([]byte(id), encodeJSON(sessionRecord{*s}))
	})
}
