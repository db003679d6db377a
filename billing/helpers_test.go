package billing_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// mustOpen opens a ledger in a temporary folder and closes it at cleanup.
func mustOpen(tb testing.TB, opts billing.Options) *billing.Ledger {
	tb.Helper()
	if opts.Path == "" {
		opts.Path = filepath.Join(tb.TempDir(), "ledger.db")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l, err := billing.Open(opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

func mustTenant(tb testing.TB, l *billing.Ledger, name string) *nozzle.Tenant {
	tb.Helper()
	t := &nozzle.Tenant{Name: name}
	if err := l.CreateTenant(context.Background(), t); err != nil {
		tb.Fatalf("CreateTenant(%s): %v", name, err)
	}
	return t
}

// mustTenants creates n tenants named prefix0, prefix1, … and returns their ids.
func mustTenants(tb testing.TB, l *billing.Ledger, prefix string, n int) []string {
	tb.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = mustTenant(tb, l, fmt.Sprint(prefix, i)).ID
	}
	return ids
}

func mustRecord(tb testing.TB, l *billing.Ledger, ev nozzle.UsageEvent) nozzle.UsageEvent {
	tb.Helper()
	if _, err := l.RecordUsage(context.Background(), &ev); err != nil {
		tb.Fatalf("RecordUsage(%s): %v", ev.RequestID, err)
	}
	return ev
}

func mustReport(tb testing.TB, l *billing.Ledger, q nozzle.ReportQuery) *nozzle.Report {
	tb.Helper()
	r, err := l.Report(context.Background(), q)
	if err != nil {
		tb.Fatalf("Report(%+v): %v", q, err)
	}
	return r
}

func mustCheck(tb testing.TB, l *billing.Ledger) *billing.CheckResult {
	tb.Helper()
	res, err := l.Check(context.Background())
	if err != nil {
		tb.Fatalf("Check: %v", err)
	}
	return res
}

func wantCode(tb testing.TB, err error, code string) {
	tb.Helper()
	if got := nozzle.ErrorCode(err); got != code {
		tb.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}
