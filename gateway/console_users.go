package gateway

import (
	"context"
	"fmt"

	"github.com/nozzle-ai/nozzle"
)

// CreateTenantUser creates a console account for a tenant's member that
// signs in with password (no invite). cmd/nozzle uses it for the demo
// tenant's first user; operators otherwise invite users from the console.
// Returns EINVALID for a bad email or a short password and ECONFLICT when
// the email is taken.
func CreateTenantUser(ctx context.Context, users nozzle.UserService, tenantID, email, password string) error {
	email = normalizeEmail(email)
	if !validEmail(email) {
		return nozzle.Errorf(nozzle.EINVALID, "The email %q is not a valid address.", email).WithParam("email")
	}
	if err := validatePassword(password); err != nil {
		return nozzle.Errorf(nozzle.EINVALID, "The password must be at least %d characters.", MinPasswordLength).WithParam("password")
	}
	h, err := hashPassword(password)
	if err != nil {
		return err
	}
	if err := users.CreateUser(ctx, &nozzle.User{TenantID: tenantID, Email: email, Role: nozzle.RoleTenant, PasswordHash: h}); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	return nil
}
