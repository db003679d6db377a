package billing_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/internal/metrics"
)

func TestLedger_Tenants(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	a := mustTenant(t, l, "acme")
	b := mustTenant(t, l, "globex")
	if a.ID == "" || a.CreatedAt.IsZero() {
		t.Fatalf("CreateTenant did not fill ID and CreatedAt: %+v", a)
	}
	t.Run("ErrConflict", func(t *testing.T) {
		wantCode(t, l.CreateTenant(ctx, &nozzle.Tenant{Name: "ACME"}), nozzle.ECONFLICT)
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		wantCode(t, l.CreateTenant(ctx, &nozzle.Tenant{}), nozzle.EINVALID)
	})
	t.Run("List", func(t *testing.T) {
		ts, err := l.Tenants(ctx)
		if err != nil || len(ts) != 2 || ts[0].ID != a.ID || ts[1].ID != b.ID {
			t.Fatalf("Tenants = %v, %v", ts, err)
		}
	})
	t.Run("Update", func(t *testing.T) {
		name, budget, cus := "acme2", 12.5, "cus_1"
		got, err := l.UpdateTenant(ctx, a.ID, nozzle.TenantUpdate{Name: &name, MonthlyBudgetUSD: &budget, StripeCustomerID: &cus})
		if err != nil || got.Name != name || got.MonthlyBudgetUSD != budget || got.StripeCustomerID != cus {
			t.Fatalf("UpdateTenant = %+v, %v", got, err)
		}
		// The old name is free again, the new one taken.
		wantCode(t, l.CreateTenant(ctx, &nozzle.Tenant{Name: "acme2"}), nozzle.ECONFLICT)
		other := "globex"
		_, err = l.UpdateTenant(ctx, a.ID, nozzle.TenantUpdate{Name: &other})
		wantCode(t, err, nozzle.ECONFLICT)
		mustTenant(t, l, "acme")
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		_, err := l.Tenant(ctx, "ten_nope")
		wantCode(t, err, nozzle.ENOTFOUND)
		_, err = l.UpdateTenant(ctx, "ten_nope", nozzle.TenantUpdate{})
		wantCode(t, err, nozzle.ENOTFOUND)
	})
}

func TestLedger_Prices(t *testing.T) {
	ctx := context.Background()
	def := nozzle.Price{PromptPerMillionUSD: 0.1, CompletionPerMillionUSD: 0.2}
	l := mustOpen(t, billing.Options{DefaultPrice: def})
	ten := mustTenant(t, l, "acme")
	t0 := date("2026-03-01T00:00:00Z")
	p1 := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}
	p2 := nozzle.Price{PromptPerMillionUSD: 3, CompletionPerMillionUSD: 4}
	own := nozzle.Price{PromptPerMillionUSD: 5, CompletionPerMillionUSD: 6}
	for _, c := range []struct {
		tenant string
		p      nozzle.Price
		from   time.Time
	}{{"", p1, t0}, {"", p2, t0.Add(48 * time.Hour)}, {ten.ID, own, t0.Add(24 * time.Hour)}} {
		if err := l.SetPrice(ctx, c.tenant, c.p, c.from); err != nil {
			t.Fatal(err)
		}
	}
	other := mustTenant(t, l, "globex")
	for _, c := range []struct {
		name   string
		tenant string
		at     time.Time
		want   nozzle.Price
	}{
		{"BeforeAnyPrice", other.ID, t0.Add(-time.Nanosecond), def},
		{"DefaultAtStart", other.ID, t0, p1},
		{"DefaultChanged", other.ID, t0.Add(48 * time.Hour), p2},
		{"TenantBeforeOverride", ten.ID, t0.Add(time.Hour), p1},
		{"TenantOverride", ten.ID, t0.Add(24 * time.Hour), own},
		{"OverrideOutlastsDefaultChange", ten.ID, t0.Add(72 * time.Hour), own},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := l.PriceAt(ctx, c.tenant, c.at)
			if err != nil || got != c.want {
				t.Fatalf("PriceAt = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	hist, err := l.Prices(ctx, "")
	if err != nil || len(hist) != 2 || hist[0].Price != p1 || !hist[1].EffectiveFrom.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("Prices = %+v, %v", hist, err)
	}
	wantCode(t, l.SetPrice(ctx, "", nozzle.Price{PromptPerMillionUSD: -1}, t0), nozzle.EINVALID)
	wantCode(t, l.SetPrice(ctx, "ten_nope", p1, t0), nozzle.ENOTFOUND)
}

// TestLedger_HugePrice: a price so high that a request's charge overflows
// to infinity is refused when it is set. Taken, it made the next request's
// event, rollups and month total unreadable ("corrupt ledger value"): every
// report and the ledger check failed from then on.
func TestLedger_HugePrice(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	ten := mustTenant(t, l, "acme")
	t0 := time.Now().UTC().Add(-time.Hour)
	for _, p := range []nozzle.Price{
		{PromptPerMillionUSD: 1e308, CompletionPerMillionUSD: 1},
		{PromptPerMillionUSD: 1, CompletionPerMillionUSD: math.Inf(1)},
		{PromptPerMillionUSD: math.NaN(), CompletionPerMillionUSD: 1},
		{PromptPerMillionUSD: 1, CompletionPerMillionUSD: nozzle.MaxPricePerMillionUSD * 2},
	} {
		wantCode(t, l.SetPrice(ctx, ten.ID, p, t0), nozzle.EINVALID)
		wantCode(t, l.SetPrice(ctx, "", p, t0), nozzle.EINVALID)
	}
	if _, err := billing.Open(billing.Options{Path: filepath.Join(t.TempDir(), "l.db"), DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1e300}}); err == nil {
		t.Fatal("Open took a default price of 1e300 per million tokens")
	}
	top := nozzle.Price{PromptPerMillionUSD: nozzle.MaxPricePerMillionUSD, CompletionPerMillionUSD: nozzle.MaxPricePerMillionUSD}
	if err := l.SetPrice(ctx, ten.ID, top, t0); err != nil {
		t.Fatalf("SetPrice at the highest price: %v", err)
	}
	ev := nozzle.UsageEvent{RequestID: "req_1", TenantID: ten.ID, Status: nozzle.UsageOK, Time: time.Now().UTC(),
		PromptTokens: 1 << 40, CompletionTokens: 1 << 40}
	if _, err := l.RecordUsage(ctx, &ev); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Report(ctx, nozzle.ReportQuery{TenantID: ten.ID}); err != nil {
		t.Fatalf("Report after a charge at the highest price: %v", err)
	}
	if res, err := l.Check(ctx); err != nil || res.Events != 1 {
		t.Fatalf("Check = %+v, %v", res, err)
	}
}

// TestLedger_StandardPrice: a tenant's override ends; from then it pays
// the standard prices as they change, until another override.
func TestLedger_StandardPrice(t *testing.T) {
	ctx := context.Background()
	def := nozzle.Price{PromptPerMillionUSD: 0.1, CompletionPerMillionUSD: 0.2}
	l := mustOpen(t, billing.Options{DefaultPrice: def})
	ten := mustTenant(t, l, "acme")
	h := func(n int) time.Time { return date("2026-03-01T00:00:00Z").Add(time.Duration(n) * time.Hour) }
	p1 := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}
	p2 := nozzle.Price{PromptPerMillionUSD: 3, CompletionPerMillionUSD: 4}
	own := nozzle.Price{PromptPerMillionUSD: 5, CompletionPerMillionUSD: 6}
	own2 := nozzle.Price{PromptPerMillionUSD: 7, CompletionPerMillionUSD: 8}
	// Standard (built-in) until 1; override 1–2; standard (still built-in)
	// 2–4; the list sets p1 at 3 and p2 at 6; override again 5–7;
	// standard from 7 (p2).
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.SetPrice(ctx, ten.ID, own, h(1)))
	must(l.UseStandardPrice(ctx, ten.ID, h(2)))
	must(l.SetPrice(ctx, "", p1, h(3)))
	must(l.SetPrice(ctx, ten.ID, own2, h(5)))
	must(l.SetPrice(ctx, "", p2, h(6)))
	must(l.UseStandardPrice(ctx, ten.ID, h(7)))
	for at, want := range map[int]nozzle.Price{0: def, 1: own, 2: def, 3: p1, 4: p1, 5: own2, 6: own2, 7: p2, 8: p2} {
		if got, err := l.PriceAt(ctx, ten.ID, h(at)); err != nil || got != want {
			t.Errorf("hour %d: PriceAt = %+v, %v; want %+v", at, got, err, want)
		}
	}
	// Usage is charged at those prices (through the journal's cache).
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "r8", TenantID: ten.ID, Time: h(8), PromptTokens: 1e6})
	if ev, err := l.Usage(ctx, "r8"); err != nil || ev.ChargeUSD != p2.PromptPerMillionUSD {
		t.Errorf("charge at hour 8: %+v, %v; want %v", ev, err, p2.PromptPerMillionUSD)
	}
	hist, err := l.Prices(ctx, ten.ID)
	if err != nil || len(hist) != 4 || !hist[1].Standard || !hist[3].Standard || hist[0].Standard || hist[0].Price != own {
		t.Fatalf("Prices = %+v, %v", hist, err)
	}
	if v, err := billing.FileVersion(l); err != nil || v != billing.SchemaVersion {
		t.Errorf("file version %d, %v after a standard-price mark; want %d", v, err, billing.SchemaVersion)
	}
	wantCode(t, l.UseStandardPrice(ctx, "ten_nope", h(9)), nozzle.ENOTFOUND)
	wantCode(t, l.UseStandardPrice(ctx, "", h(9)), nozzle.EINVALID)
	mustCheck(t, l)
}

func TestLedger_Keys(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	ten := mustTenant(t, l, "acme")
	secret, _ := nozzle.NewKeySecret()
	k := &nozzle.APIKey{TenantID: ten.ID, Name: "ci", Digest: nozzle.KeyDigest(secret), Prefix: nozzle.KeyDisplayPrefix(secret)}
	if err := l.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if len(k.Scopes) != len(nozzle.AllScopes) {
		t.Fatalf("default scopes = %v", k.Scopes)
	}
	clk.Add(time.Minute)
	secret2, _ := nozzle.NewKeySecret()
	k2 := &nozzle.APIKey{TenantID: ten.ID, Digest: nozzle.KeyDigest(secret2), Scopes: []nozzle.Scope{nozzle.ScopeInference}}
	if err := l.CreateKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	t.Run("ByDigest", func(t *testing.T) {
		got, err := l.KeyByDigest(ctx, nozzle.KeyDigest(secret))
		if err != nil || got.ID != k.ID || got.Digest != k.Digest || got.TenantID != ten.ID {
			t.Fatalf("KeyByDigest = %+v, %v", got, err)
		}
		_, err = l.KeyByDigest(ctx, nozzle.KeyDigest("nz-wrong"))
		wantCode(t, err, nozzle.EUNAUTHORIZED)
	})
	t.Run("DuplicateDigest", func(t *testing.T) {
		dup := &nozzle.APIKey{TenantID: ten.ID, Digest: k.Digest}
		wantCode(t, l.CreateKey(ctx, dup), nozzle.ECONFLICT)
	})
	t.Run("UnknownTenant", func(t *testing.T) {
		s, _ := nozzle.NewKeySecret()
		wantCode(t, l.CreateKey(ctx, &nozzle.APIKey{TenantID: "ten_x", Digest: nozzle.KeyDigest(s)}), nozzle.ENOTFOUND)
	})
	t.Run("Touch", func(t *testing.T) {
		at := date("2026-03-02T10:00:00Z")
		if err := l.TouchKeys(ctx, map[string]time.Time{k.ID: at, "key_unknown": at}); err != nil {
			t.Fatal(err)
		}
		// An older time does not move it back.
		if err := l.TouchKeys(ctx, map[string]time.Time{k.ID: at.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		got, _ := l.KeyByDigest(ctx, k.Digest)
		if !got.LastUsedAt.Equal(at) {
			t.Fatalf("LastUsedAt = %v, want %v", got.LastUsedAt, at)
		}
	})
	t.Run("ListNewestFirst", func(t *testing.T) {
		ks, err := l.Keys(ctx, ten.ID)
		if err != nil || len(ks) != 2 || ks[0].ID != k2.ID || ks[1].ID != k.ID {
			t.Fatalf("Keys = %v, %v", ks, err)
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		wantCode(t, l.RevokeKey(ctx, "ten_other", k.ID), nozzle.ENOTFOUND)
		if err := l.RevokeKey(ctx, ten.ID, k.ID); err != nil {
			t.Fatal(err)
		}
		_, err := l.KeyByDigest(ctx, k.Digest)
		wantCode(t, err, nozzle.EUNAUTHORIZED)
		ks, _ := l.Keys(ctx, ten.ID)
		if len(ks) != 2 || !ks[1].Revoked() {
			t.Fatalf("revoked key not listed as revoked: %+v", ks)
		}
	})
}

func TestLedger_Adapters(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	a, b := mustTenant(t, l, "acme"), mustTenant(t, l, "globex")
	sha := strings.Repeat("ab", 32)
	mk := func(tenant, name string) *nozzle.Adapter {
		return &nozzle.Adapter{TenantID: tenant, Name: name, AdapterManifest: nozzle.AdapterManifest{SHA256: sha, Rank: 8, TargetModules: []string{"q_proj"}}}
	}
	for _, ad := range []*nozzle.Adapter{mk(a.ID, "sql"), mk(a.ID, "chat"), mk(b.ID, "sql")} {
		if err := l.CreateAdapter(ctx, ad); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, l.CreateAdapter(ctx, mk(a.ID, "sql")), nozzle.ECONFLICT)
	wantCode(t, l.CreateAdapter(ctx, mk(a.ID, "../x")), nozzle.EINVALID)
	got, err := l.Adapter(ctx, a.ID, "sql")
	if err != nil || got.TenantID != a.ID || got.Rank != 8 || got.TargetModules[0] != "q_proj" {
		t.Fatalf("Adapter = %+v, %v", got, err)
	}
	_, err = l.Adapter(ctx, a.ID, "missing")
	wantCode(t, err, nozzle.ENOTFOUND)
	list, err := l.Adapters(ctx, a.ID)
	if err != nil || len(list) != 2 || list[0].Name != "chat" || list[1].Name != "sql" {
		t.Fatalf("Adapters = %v, %v", list, err)
	}
	if n, _ := l.AdapterRefs(ctx, sha); n != 3 {
		t.Fatalf("AdapterRefs = %d, want 3", n)
	}
	del, err := l.DeleteAdapter(ctx, b.ID, "sql")
	if err != nil || del.TenantID != b.ID {
		t.Fatalf("DeleteAdapter = %+v, %v", del, err)
	}
	if n, _ := l.AdapterRefs(ctx, sha); n != 2 {
		t.Fatalf("AdapterRefs after delete = %d, want 2", n)
	}
	_, err = l.DeleteAdapter(ctx, b.ID, "sql")
	wantCode(t, err, nozzle.ENOTFOUND)
}

func TestLedger_Users(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	ten := mustTenant(t, l, "acme")
	u := &nozzle.User{TenantID: ten.ID, Email: "Ann@Example.com", Role: nozzle.RoleTenant, InviteDigest: "inv1", InviteExpires: clk.Now().Add(time.Hour)}
	if err := l.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	wantCode(t, l.CreateUser(ctx, &nozzle.User{TenantID: ten.ID, Email: "ann@example.COM", Role: nozzle.RoleTenant}), nozzle.ECONFLICT)
	wantCode(t, l.CreateUser(ctx, &nozzle.User{Email: "x@y", Role: "root"}), nozzle.EINVALID)
	op := &nozzle.User{Email: "op@example.com", Role: nozzle.RoleOperator}
	if err := l.CreateUser(ctx, op); err != nil {
		t.Fatal(err)
	}
	got, err := l.UserByEmail(ctx, "ANN@example.com")
	if err != nil || got.ID != u.ID || got.InviteDigest != "inv1" {
		t.Fatalf("UserByEmail = %+v, %v", got, err)
	}
	got, err = l.UserByInvite(ctx, "inv1")
	if err != nil || got.ID != u.ID {
		t.Fatalf("UserByInvite = %+v, %v", got, err)
	}
	// Accepting the invite: password set, invite cleared.
	got.PasswordHash = []byte("hash")
	got.InviteDigest = ""
	got.InviteExpires = time.Time{}
	if err := l.UpdateUser(ctx, got); err != nil {
		t.Fatal(err)
	}
	_, err = l.UserByInvite(ctx, "inv1")
	wantCode(t, err, nozzle.ENOTFOUND)
	got, _ = l.User(ctx, u.ID)
	if string(got.PasswordHash) != "hash" {
		t.Fatalf("PasswordHash = %q", got.PasswordHash)
	}
	// Disabled: the time before which its sessions are ended is kept,
	// and stays when the user is enabled again.
	got.Disabled, got.SessionsFrom = true, clk.Now().Add(time.Minute)
	if err := l.UpdateUser(ctx, got); err != nil {
		t.Fatal(err)
	}
	got.Disabled = false
	if err := l.UpdateUser(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got, _ = l.User(ctx, u.ID); got.Disabled || !got.SessionsFrom.Equal(clk.Now().Add(time.Minute)) || string(got.PasswordHash) != "hash" {
		t.Fatalf("after disable and enable: %+v", got)
	}
	if us, _ := l.Users(ctx, ten.ID); len(us) != 1 {
		t.Fatalf("Users(tenant) = %v", us)
	}
	if us, _ := l.Users(ctx, ""); len(us) != 2 {
		t.Fatalf("Users() = %v", us)
	}

	s := &nozzle.Session{ID: "sess1", UserID: u.ID, ExpiresAt: clk.Now().Add(time.Hour)}
	if err := l.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Session(ctx, "sess1"); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Hour)
	_, err = l.Session(ctx, "sess1")
	wantCode(t, err, nozzle.EUNAUTHORIZED)
	clk.Add(-2 * time.Hour)
	for range 2 {
		if err := l.RevokeSession(ctx, "sess1"); err != nil {
			t.Fatal(err)
		}
	}
	_, err = l.Session(ctx, "sess1")
	wantCode(t, err, nozzle.EUNAUTHORIZED)
	_, err = l.Session(ctx, "nope")
	wantCode(t, err, nozzle.EUNAUTHORIZED)
}

func TestOpen_Locked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	mustOpen(t, billing.Options{Path: path})
	// bbolt's lock is per file descriptor (flock), so a second open in this
	// process stands in for a second process.
	_, err := billing.Open(billing.Options{Path: path, LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, billing.ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestOpen_NewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	if err := billing.SetSchemaVersionForTest(path, billing.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err := billing.Open(billing.Options{Path: path})
	if err == nil || !strings.Contains(err.Error(), "newer than this build") {
		t.Fatalf("Open of a newer file = %v", err)
	}
}

func TestLedger_BackupAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, billing.Options{Path: filepath.Join(dir, "a.db")})
	ten := mustTenant(t, l, "acme")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "r1", TenantID: ten.ID, Time: date("2026-03-01T10:00:00Z"), PromptTokens: 10})
	backup := filepath.Join(dir, "b.db")
	if err := l.BackupToFile(backup); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Size() == 0 {
		t.Fatalf("backup file: %v", err)
	}
	b := mustOpen(t, billing.Options{Path: backup})
	ev, err := b.Usage(ctx, "r1")
	if err != nil || ev.PromptTokens != 10 {
		t.Fatalf("Usage from backup = %+v, %v", ev, err)
	}
	mustCheck(t, b)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = l.RecordUsage(ctx, &nozzle.UsageEvent{RequestID: "r2", TenantID: ten.ID, Time: time.Now()})
	if !errors.Is(err, billing.ErrClosed) {
		t.Fatalf("RecordUsage after Close = %v, want ErrClosed", err)
	}
}

func TestLedger_HotBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := mustOpen(t, billing.Options{Path: filepath.Join(dir, "a.db")})
	ten := mustTenant(t, l, "acme")
	stop := make(chan struct{})
	done := make(chan int)
	// The backup is taken once the writer has recorded a few events, while
	// it goes on writing: not after a fixed sleep, in which a loaded
	// machine may not have run the writer at all (a backup of no events).
	started := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			ev := nozzle.UsageEvent{RequestID: "hot-" + strconv.Itoa(n), TenantID: ten.ID, Time: time.Now(), PromptTokens: 1}
			if _, err := l.RecordUsage(ctx, &ev); err != nil {
				t.Error(err)
			}
			n++
			if n == 10 {
				close(started)
			}
		}
	}()
	<-started
	backup := filepath.Join(dir, "b.db")
	if err := l.BackupToFile(backup); err != nil {
		t.Fatal(err)
	}
	close(stop)
	written := <-done
	b := mustOpen(t, billing.Options{Path: backup})
	res := mustCheck(t, b)
	if res.Events == 0 || res.Events > written {
		t.Fatalf("backup holds %d events of %d written", res.Events, written)
	}
}

func ExampleLedger_RecordUsage() {
	dir, _ := os.MkdirTemp("", "ledger")
	defer os.RemoveAll(dir)
	l, err := billing.Open(billing.Options{
		Path:         filepath.Join(dir, "ledger.db"),
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: 0.20, CompletionPerMillionUSD: 0.60},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	ctx := context.Background()
	ten := &nozzle.Tenant{Name: "acme"}
	l.CreateTenant(ctx, ten)
	ev := &nozzle.UsageEvent{RequestID: "req_1", TenantID: ten.ID, Time: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC), PromptTokens: 1_000_000, CompletionTokens: 500_000}
	dup, _ := l.RecordUsage(ctx, ev)
	fmt.Printf("charged $%.2f, duplicate %v\n", ev.ChargeUSD, dup)
	dup, _ = l.RecordUsage(ctx, ev) // a retry
	fmt.Printf("retry: duplicate %v\n", dup)
	rep, _ := l.Report(ctx, nozzle.ReportQuery{TenantID: ten.ID, Start: ev.Time, End: ev.Time.Add(time.Hour)})
	fmt.Printf("requests %d, charged $%.2f\n", rep.Total.Requests, rep.Total.ChargedUSD)
	// Output:
	// charged $0.50, duplicate false
	// retry: duplicate true
	// requests 1, charged $0.50
}

func TestLedger_Metrics(t *testing.T) {
	reg := metrics.NewRegistry()
	l := mustOpen(t, billing.Options{Metrics: reg})
	ten := mustTenant(t, l, "acme")
	for range 2 {
		mustRecord(t, l, nozzle.UsageEvent{RequestID: "m1", TenantID: ten.ID, Time: time.Now()})
	}
	var buf strings.Builder
	if _, err := reg.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nozzle_ledger_usage_events_total 1", "nozzle_ledger_usage_duplicates_total 1", "nozzle_ledger_commit_seconds_count"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("metrics lack %q:\n%s", want, buf.String())
		}
	}
}
