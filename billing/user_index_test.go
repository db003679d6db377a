package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// scanUsers is how Users found a tenant's users before tenant_users:
// every user decoded, those of the tenant kept, ordered by creation
// (stable over the users bucket's id order).
func scanUsers(t *testing.T, l *Ledger, tenantID string) []string {
	t.Helper()
	var all []*nozzle.User
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bUsers).ForEach(func(_, v []byte) error {
			u, err := decodeUser(v)
			if err == nil && u.TenantID == tenantID {
				all = append(all, u)
			}
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].CreatedAt.Before(all[j].CreatedAt) })
	return userIDs(all)
}

func userIDs(us []*nozzle.User) []string {
	ids := make([]string, len(us))
	for i, u := range us {
		ids[i] = u.ID
	}
	return ids
}

// wantTenantUsers checks that Users(tenant) lists what the full scan did,
// in the same order, for each tenant.
func wantTenantUsers(t *testing.T, l *Ledger, tenants ...string) {
	t.Helper()
	for _, id := range tenants {
		got, err := l.Users(context.Background(), id)
		if err != nil {
			t.Fatalf("Users(%s): %v", id, err)
		}
		if g, w := userIDs(got), scanUsers(t, l, id); strings.Join(g, ",") != strings.Join(w, ",") {
			t.Fatalf("Users(%s) = %v, the full scan gives %v", id, g, w)
		}
		for _, u := range got {
			if u.TenantID != id {
				t.Fatalf("Users(%s) holds %s of tenant %q", id, u.ID, u.TenantID)
			}
		}
	}
}

// stepClock is a clock that moves on by step at each reading, ticks
// readings at a time, so that some users share a creation time.
type stepClock struct {
	mu    sync.Mutex
	t     time.Time
	n     int
	ticks int
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n++; c.n%c.ticks == 0 {
		c.t = c.t.Add(time.Millisecond)
	}
	return c.t
}

func openUsersLedger(t *testing.T, path string, now func() time.Time) *Ledger {
	t.Helper()
	l, err := Open(Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// makeUsers creates tenants and n users spread over them (and two
// operators), returning the tenants' ids.
func makeUsers(t *testing.T, l *Ledger, tenants, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range tenants {
		ten := &nozzle.Tenant{Name: fmt.Sprint("tenant-", i)}
		if err := l.CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ten.ID)
	}
	for i := range n {
		u := &nozzle.User{TenantID: ids[(i*7)%tenants], Email: fmt.Sprintf("u%d@example.com", i), Role: nozzle.RoleTenant, InviteDigest: fmt.Sprint("inv", i)}
		if err := l.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if i == n/2 {
			for j := range 2 {
				if err := l.CreateUser(ctx, &nozzle.User{Email: fmt.Sprintf("op%d@example.com", j), Role: nozzle.RoleOperator}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return ids
}

// TestLedger_TenantUsersIndex: a tenant's users are read from
// tenant_users, which CreateUser fills and UpdateUser keeps, in the order
// (creation, then id) the full scan gave; every user is still listed for
// the empty tenant.
func TestLedger_TenantUsersIndex(t *testing.T) {
	ctx := context.Background()
	clk := &stepClock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), ticks: 12}
	l := openUsersLedger(t, filepath.Join(t.TempDir(), "ledger.db"), clk.Now)
	tenants := makeUsers(t, l, 5, 40)
	wantTenantUsers(t, l, tenants...)
	if us, err := l.Users(ctx, ""); err != nil || len(us) != 42 {
		t.Fatalf("Users(\"\") = %d users, %v", len(us), err)
	}
	if us, err := l.Users(ctx, "t_nobody"); err != nil || len(us) != 0 {
		t.Fatalf("Users of no tenant = %v, %v", us, err)
	}
	if us, err := l.Users(ctx, strings.Repeat("x", 300)); err != nil || len(us) != 0 {
		t.Fatalf("Users of a too long id = %v, %v", us, err)
	}
	// Updates (email, invite, password, disabled) keep every entry.
	us, _ := l.Users(ctx, tenants[2])
	for i, u := range us {
		u.Email = fmt.Sprintf("changed%d@example.com", i)
		u.InviteDigest, u.PasswordHash, u.Disabled = "", []byte("hash"), i%2 == 0
		if err := l.UpdateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	// An update cannot move a user to another tenant.
	moved := us[0]
	moved.TenantID = tenants[0]
	if err := l.UpdateUser(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if u, _ := l.User(ctx, moved.ID); u.TenantID != tenants[2] {
		t.Fatalf("UpdateUser moved the user to %s", u.TenantID)
	}
	wantTenantUsers(t, l, tenants...)
	got, _ := l.Users(ctx, tenants[2])
	if len(got) != len(us) || got[1].Email != "changed1@example.com" || !got[0].Disabled || string(got[1].PasswordHash) != "hash" {
		t.Fatalf("Users(tenant) after updates: %+v", got)
	}
	// A refused creation leaves no entry.
	if err := l.CreateUser(ctx, &nozzle.User{TenantID: tenants[1], Email: "u0@example.com", Role: nozzle.RoleTenant}); nozzle.ErrorCode(err) != nozzle.ECONFLICT {
		t.Fatalf("duplicate email: %v", err)
	}
	if err := l.CreateUser(ctx, &nozzle.User{TenantID: "t_nobody", Email: "new@example.com", Role: nozzle.RoleTenant}); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("user of no tenant: %v", err)
	}
	if n := indexEntries(t, l); n != 42 {
		t.Fatalf("tenant_users holds %d entries for 42 users", n)
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

func indexEntries(t *testing.T, l *Ledger) (n int) {
	t.Helper()
	if err := l.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bTenantUsers).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLedger_TenantUsersMigration: a version 9 file opens at version 10
// with every user indexed under its tenant, lists each tenant's users as
// the full scan did, and new users join the index.
func TestLedger_TenantUsersMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	clk := &stepClock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), ticks: 10}
	l := openUsersLedger(t, path, clk.Now)
	tenants := makeUsers(t, l, 4, 30)
	want := map[string][]string{}
	for _, id := range tenants {
		want[id] = scanUsers(t, l, id)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 9, bTenantUsers)

	l = openUsersLedger(t, path, clk.Now)
	if v, err := FileVersion(l); err != nil || v != SchemaVersion || SchemaVersion < 10 {
		t.Fatalf("version %d, %v after open", v, err)
	}
	if n := indexEntries(t, l); n != 32 {
		t.Fatalf("tenant_users holds %d entries for 32 users", n)
	}
	for _, id := range tenants {
		got, err := l.Users(ctx, id)
		if err != nil || strings.Join(userIDs(got), ",") != strings.Join(want[id], ",") {
			t.Fatalf("Users(%s) = %v, %v; want %v", id, userIDs(got), err, want[id])
		}
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
	clk.mu.Lock()
	clk.t = clk.t.Add(time.Hour) // the newest user, alone in its instant
	clk.mu.Unlock()
	u := &nozzle.User{TenantID: tenants[3], Email: "late@example.com", Role: nozzle.RoleTenant}
	if err := l.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	got, _ := l.Users(ctx, tenants[3])
	if len(got) != len(want[tenants[3]])+1 || got[len(got)-1].ID != u.ID {
		t.Fatalf("Users after a new user: %v", userIDs(got))
	}
	wantTenantUsers(t, l, tenants...)
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCheck_TenantUsers: an entry missing, one naming no user, or a user
// filed under another tenant is reported; Users refuses an entry naming
// no user instead of skipping it.
func TestCheck_TenantUsers(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		spoil func(b *bolt.Bucket, u *nozzle.User, other string) error
		want  string
	}{
		{"Missing", func(b *bolt.Bucket, u *nozzle.User, _ string) error {
			return b.Delete(tenantUserKey(u))
		}, "user index tenant_users misses 1 of 3 users"},
		{"Stray", func(b *bolt.Bucket, u *nozzle.User, _ string) error {
			return b.Put(join(lp(u.TenantID), timeKey(u.CreatedAt), []byte("usr_ghost")), []byte{})
		}, "which names no user"},
		{"OtherTenant", func(b *bolt.Bucket, u *nozzle.User, other string) error {
			if err := b.Delete(tenantUserKey(u)); err != nil {
				return err
			}
			v := *u
			v.TenantID = other
			return b.Put(tenantUserKey(&v), []byte{})
		}, "which names no user"},
		{"Value", func(b *bolt.Bucket, u *nozzle.User, _ string) error {
			return b.Put(tenantUserKey(u), []byte{1})
		}, "user index tenant_users holds"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := openCompat(t, filepath.Join(t.TempDir(), "ledger.db"))
			acme, globex := &nozzle.Tenant{Name: "acme"}, &nozzle.Tenant{Name: "globex"}
			for _, ten := range []*nozzle.Tenant{acme, globex} {
				if err := l.CreateTenant(ctx, ten); err != nil {
					t.Fatal(err)
				}
			}
			u := &nozzle.User{TenantID: acme.ID, Email: "ann@acme.test", Role: nozzle.RoleTenant}
			for _, x := range []*nozzle.User{u, {TenantID: globex.ID, Email: "bob@globex.test", Role: nozzle.RoleTenant}, {Email: "op@example.com", Role: nozzle.RoleOperator}} {
				if err := l.CreateUser(ctx, x); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := l.Check(ctx); err != nil {
				t.Fatal(err)
			}
			if err := l.db.Update(func(tx *bolt.Tx) error { return c.spoil(tx.Bucket(bTenantUsers), u, globex.ID) }); err != nil {
				t.Fatal(err)
			}
			res, err := l.Check(ctx)
			if !errors.Is(err, ErrInconsistent) || len(res.Problems) == 0 || !strings.Contains(strings.Join(res.Problems, "\n"), c.want) {
				t.Fatalf("check: %v, %v; want a problem with %q", res, err, c.want)
			}
		})
	}
	t.Run("UsersRefusesDangling", func(t *testing.T) {
		l := openCompat(t, filepath.Join(t.TempDir(), "ledger.db"))
		ten := &nozzle.Tenant{Name: "acme"}
		if err := l.CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		ghost := &nozzle.User{ID: "usr_ghost", TenantID: ten.ID, CreatedAt: time.Now()}
		if err := l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bTenantUsers).Put(tenantUserKey(ghost), []byte{}) }); err != nil {
			t.Fatal(err)
		}
		if us, err := l.Users(ctx, ten.ID); !errors.Is(err, errCorrupt) {
			t.Fatalf("Users with an entry naming no user: %v, %v", us, err)
		}
	})
}
