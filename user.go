package nozzle

import (
	"context"
	"time"
)

// Console user roles.
const (
	RoleTenant   = "tenant"   // a member of a tenant
	RoleOperator = "operator" // runs the pool
)

// User is a console account: a member of a tenant, or an operator.
type User struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id,omitempty"` // empty for operators
	Email    string `json:"email"`
	Role     string `json:"role"`
	// PasswordHash is set by the gateway (argon2id or bcrypt); never shown.
	PasswordHash []byte    `json:"-"`
	Disabled     bool      `json:"disabled"`
	CreatedAt    time.Time `json:"created_at"`
	// InviteDigest is the SHA-256 of a pending invite token, and
	// InviteExpires its expiry; empty once the user has set a password.
	InviteDigest  string    `json:"-"`
	InviteExpires time.Time `json:"-"`
	// SessionsFrom ends the user's sessions started before it: set when
	// the user is disabled, so that enabling the user again brings back
	// no session from before.
	SessionsFrom time.Time `json:"-"`
}

// Session is a console sign-in; revoking it signs the user out.
type Session struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// UserService stores console users and sessions.
type UserService interface {
	// CreateUser stores a new user, filling ID and CreatedAt. Returns
	// ECONFLICT if the email is taken.
	CreateUser(ctx context.Context, u *User) error
	// User returns a user by ID; UserByEmail by email (case-insensitive);
	// UserByInvite by invite digest. Each returns ENOTFOUND if none.
	User(ctx context.Context, id string) (*User, error)
	UserByEmail(ctx context.Context, email string) (*User, error)
	UserByInvite(ctx context.Context, digest string) (*User, error)
	// Users returns a tenant's users (every user when tenantID is empty).
	Users(ctx context.Context, tenantID string) ([]*User, error)
	// UpdateUser stores changed fields of u (password hash, invite,
	// disabled, sessions from).
	UpdateUser(ctx context.Context, u *User) error

	// CreateSession stores a session, filling CreatedAt.
	CreateSession(ctx context.Context, s *Session) error
	// Session returns a session by ID. Returns EUNAUTHORIZED if there is
	// none, or it is revoked or expired.
	Session(ctx context.Context, id string) (*Session, error)
	// RevokeSession revokes a session. Revoking twice is not an error.
	RevokeSession(ctx context.Context, id string) error
}
