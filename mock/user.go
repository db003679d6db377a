package mock

import (
	"context"

	"github.com/nozzle-ai/nozzle"
)

var _ nozzle.UserService = (*UserService)(nil)

// UserService is a mock of nozzle.UserService.
type UserService struct {
	CreateUserFn    func(ctx context.Context, u *nozzle.User) error
	UserFn          func(ctx context.Context, id string) (*nozzle.User, error)
	UserByEmailFn   func(ctx context.Context, email string) (*nozzle.User, error)
	UserByInviteFn  func(ctx context.Context, digest string) (*nozzle.User, error)
	UsersFn         func(ctx context.Context, tenantID string) ([]*nozzle.User, error)
	UpdateUserFn    func(ctx context.Context, u *nozzle.User) error
	CreateSessionFn func(ctx context.Context, s *nozzle.Session) error
	SessionFn       func(ctx context.Context, id string) (*nozzle.Session, error)
	RevokeSessionFn func(ctx context.Context, id string) error
}

func (s *UserService) CreateUser(ctx context.Context, u *nozzle.User) error {
	return s.CreateUserFn(ctx, u)
}

func (s *UserService) User(ctx context.Context, id string) (*nozzle.User, error) {
	return s.UserFn(ctx, id)
}

func (s *UserService) UserByEmail(ctx context.Context, email string) (*nozzle.User, error) {
	return s.UserByEmailFn(ctx, email)
}

func (s *UserService) UserByInvite(ctx context.Context, digest string) (*nozzle.User, error) {
	return s.UserByInviteFn(ctx, digest)
}

func (s *UserService) Users(ctx context.Context, tenantID string) ([]*nozzle.User, error) {
	return s.UsersFn(ctx, tenantID)
}

func (s *UserService) UpdateUser(ctx context.Context, u *nozzle.User) error {
	return s.UpdateUserFn(ctx, u)
}

func (s *UserService) CreateSession(ctx context.Context, sess *nozzle.Session) error {
	return s.CreateSessionFn(ctx, sess)
}

func (s *UserService) Session(ctx context.Context, id string) (*nozzle.Session, error) {
	return s.SessionFn(ctx, id)
}

func (s *UserService) RevokeSession(ctx context.Context, id string) error {
	return s.RevokeSessionFn(ctx, id)
}
