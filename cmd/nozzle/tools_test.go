package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestReportQuery_StartOnly checks that `nozzle report --start X` covers
// what the API's ?start=X does: from X to the end of the current month.
func TestReportQuery_StartOnly(t *testing.T) {
	q, err := reportQuery("2026-01-05T00:00:00Z", "", "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	monthEnd := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0)
	if !q.Start.Equal(time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)) || !q.End.Equal(monthEnd) {
		t.Errorf("period %v – %v, want 2026-01-05 – %v", q.Start, q.End, monthEnd)
	}
}

// TestReportQuery_DatesAndUnixSeconds: `nozzle report` takes the period as
// /v1/usage does (one parser): a date as --end means the end of that day,
// and unix seconds are accepted.
func TestReportQuery_DatesAndUnixSeconds(t *testing.T) {
	nov, dec := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range [][2]string{
		{"2026-11-01", "2026-11-30"},
		{"1793491200", "1796083200"},
		{"2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"},
	} {
		q, err := reportQuery(c[0], c[1], "")
		if err != nil || !q.Start.Equal(nov) || !q.End.Equal(dec) {
			t.Errorf("--start %s --end %s: %v – %v, %v; want %v – %v", c[0], c[1], q.Start, q.End, err, nov, dec)
		}
	}
	if _, err := reportQuery("yesterday", "", ""); err == nil || !strings.HasPrefix(err.Error(), "--start: ") || !strings.Contains(err.Error(), "unix seconds") {
		t.Errorf("--start yesterday: err = %v", err)
	}
	if _, err := reportQuery("", "2026-02-30", ""); err == nil || !strings.HasPrefix(err.Error(), "--end: ") {
		t.Errorf("--end 2026-02-30: err = %v", err)
	}
}

// TestReportQuery_EndOnly: an --end before this month, given alone, is
// refused with the start the period took, not with "--end must be after
// --start", which names a flag the user did not give.
func TestReportQuery_EndOnly(t *testing.T) {
	monthStart := time.Date(time.Now().UTC().Year(), time.Now().UTC().Month(), 1, 0, 0, 0, 0, time.UTC)
	_, err := reportQuery("", "2020-01-01", "")
	if err == nil || !strings.Contains(err.Error(), "start of this month ("+monthStart.Format("2006-01-02")+")") ||
		!strings.Contains(err.Error(), "give --start too") {
		t.Errorf("err = %v", err)
	}
	if _, err := reportQuery("2020-02-01", "2020-01-01", ""); err == nil || err.Error() != "--end must be after --start" {
		t.Errorf("both given: err = %v", err)
	}
}

// TestReportQuery_StartOnlyAfterThisMonth: a --start after this month, given alone, is
// refused with the end the period took, not with "--end must be after
// --start", which names a flag the user did not give.
func TestReportQuery_StartOnlyAfterThisMonth(t *testing.T) {
	next := time.Date(time.Now().UTC().Year(), time.Now().UTC().Month()+1, 1, 0, 0, 0, 0, time.UTC)
	_, err := reportQuery(next.AddDate(0, 1, 0).Format("2006-01-02"), "", "")
	if err == nil || !strings.Contains(err.Error(), "end of this month ("+next.Format("2006-01-02")+")") ||
		!strings.Contains(err.Error(), "give --end too") {
		t.Errorf("err = %v", err)
	}
}

// TestReportOffline_ServerSettings: a report read from the ledger file
// splits idle time by the server's policy and compares with its dedicated
// rate (NOZZLE_* variables, as the server reads them).
func TestReportOffline_ServerSettings(t *testing.T) {
	dir := emptyLedger(t)
	t.Setenv("NOZZLE_IDLE_POLICY", nozzle.IdleOperator)
	t.Setenv("NOZZLE_DEDICATED_RATE_PER_HOUR", "3")
	l, err := (&toolFlags{data: dir}).openLedger()
	if err != nil || l == nil {
		t.Fatalf("open: %v", err)
	}
	defer l.Close()
	now := time.Now().UTC()
	rep, err := l.Report(t.Context(), nozzle.ReportQuery{Start: now.Add(-time.Hour), End: now})
	if err != nil || rep.IdlePolicy != nozzle.IdleOperator {
		t.Errorf("idle policy %q (%v), want the server's %q", rep.IdlePolicy, err, nozzle.IdleOperator)
	}
}

// TestReportOffline_SettingsFlags: a server started with --idle-policy or
// --dedicated-rate-per-hour as flags leaves no trace of them the tools can
// read, so `nozzle report` takes them as flags too, over the environment,
// for a report read from the ledger file; while a server holds the ledger
// they are refused rather than ignored (its report has its own settings).
func TestReportOffline_SettingsFlags(t *testing.T) {
	dir := emptyLedger(t)
	t.Setenv("NOZZLE_IDLE_POLICY", nozzle.IdleProrata)
	report := func(args ...string) (*nozzle.Report, error) {
		var out, errb strings.Builder
		err := runReport(t.Context(), append([]string{"--data", dir, "--addr", "127.0.0.1:1", "--format", "json"}, args...), &out, &errb)
		if err != nil {
			return nil, err
		}
		var rep nozzle.Report
		if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		return &rep, nil
	}
	if rep, err := report(); err != nil || rep.IdlePolicy != nozzle.IdleProrata {
		t.Fatalf("without the flag: %v, %v", rep, err)
	}
	if rep, err := report("--idle-policy", "operator", "--dedicated-rate-per-hour", "3"); err != nil || rep.IdlePolicy != nozzle.IdleOperator {
		t.Fatalf("--idle-policy operator: %v, %v", rep, err)
	}
	if _, err := report("--idle-policy", "nobody"); err == nil || !strings.Contains(err.Error(), "want prorata or operator") {
		t.Errorf("--idle-policy nobody: %v", err)
	}
	// A server holds the ledger: the flags cannot change its report.
	held, err := billing.Open(billing.Options{Path: filepath.Join(dir, "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := report("--idle-policy", "operator"); err == nil || !strings.Contains(err.Error(), "are for a report read from the ledger file, and the nozzle at 127.0.0.1:1 holds it") {
		t.Errorf("held by a server: %v", err)
	}
}

// TestTools_HeldLedgerNoServer: while another process holds the ledger
// and nothing answers at --addr (a server started on another address, the
// tool run without it), the tools say how to name the server's address.
func TestTools_HeldLedgerNoServer(t *testing.T) {
	dir := emptyLedger(t)
	held, err := billing.Open(billing.Options{Path: filepath.Join(dir, "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var out, errb strings.Builder
	err = runReport(t.Context(), []string{"--data", dir, "--addr", "127.0.0.1:1", "--admin-token", "x"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "no nozzle answers at 127.0.0.1:1") || !strings.Contains(err.Error(), "--addr or NOZZLE_ADDR") {
		t.Errorf("report: %v", err)
	}
}

// emptyLedger returns a data folder holding a new, closed ledger.
func emptyLedger(t *testing.T) string {
	dir := t.TempDir()
	l, err := billing.Open(billing.Options{Path: filepath.Join(dir, "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestTools_NoLocalLedgerAsksServer: on a machine with no ledger file (no
// data folder at all), the tools ask the server named by --addr or
// NOZZLE_ADDR, as they do when a server holds the local file, rather than
// stopping at "no ledger at data/ledger.db".
func TestTools_NoLocalLedgerAsksServer(t *testing.T) {
	m := MustRunMain(t)
	token, err := os.ReadFile(filepath.Join(m.Config.Data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(t.TempDir(), "none") // no data folder here
	flags := []string{"--data", none, "--admin-token", strings.TrimSpace(string(token))}
	run := func(f func(context.Context, []string, io.Writer, io.Writer) error, args ...string) (string, error) {
		var out, errb strings.Builder
		err := f(t.Context(), args, &out, &errb)
		return out.String(), err
	}

	out, err := run(runReport, append([]string{"--addr", m.Addr, "--format", "json", "--tenant", "demo"}, flags...)...)
	if err != nil {
		t.Fatalf("report --addr: %v", err)
	}
	var rep nozzle.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.IdlePolicy == "" {
		t.Fatalf("report: %v %q", err, out)
	}
	// NOZZLE_ADDR names the server as --addr does.
	t.Setenv("NOZZLE_ADDR", m.Addr)
	if out, err := run(runReport, flags...); err != nil || !strings.Contains(out, "Usage and cost") {
		t.Fatalf("report with NOZZLE_ADDR: %v %q", err, out)
	}
	if _, err := run(runReport, append([]string{"--tenant", "nosuch"}, flags...)...); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("report --tenant nosuch: %v", err)
	}
	if _, err := run(runReport, append([]string{"--idle-policy", "operator"}, flags...)...); err == nil || !strings.Contains(err.Error(), "there is none at") {
		t.Errorf("report --idle-policy without a ledger file: %v", err)
	}
	t.Setenv("NOZZLE_ADDR", "")
	os.Unsetenv("NOZZLE_ADDR")

	dst := filepath.Join(t.TempDir(), "backup.db")
	if out, err := run(runBackup, append([]string{dst, "--addr", m.Addr}, flags...)...); err != nil || !strings.Contains(out, "backup written to "+dst) {
		t.Fatalf("backup --addr: %v %q", err, out)
	}
	if l, err := billing.Open(billing.Options{Path: dst}); err != nil {
		t.Errorf("the backup does not open: %v", err)
	} else {
		l.Close()
	}
	if out, err := run(runLedger, append([]string{"check", "--addr", m.Addr}, flags...)...); err != nil || !strings.Contains(out, "ok: every rollup") {
		t.Fatalf("ledger check --addr: %v %q", err, out)
	}
	if _, err := os.Stat(none); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the tools made the data folder %s: %v", none, err)
	}

	// With no address named, the tools ask the default one when a nozzle
	// answers there, and otherwise say there is no ledger.
	if !(&toolFlags{addr: m.Addr}).nozzleAnswers() {
		t.Errorf("no nozzle answers at %s", m.Addr)
	}
	tf := &toolFlags{data: none, addr: m.Addr}
	if l, err := tf.openLedger(); l != nil || err != nil || !tf.noLedger {
		t.Errorf("no ledger file, a nozzle at the default address: %v, %v", l, err)
	}
	if l, err := (&toolFlags{data: none, addr: "127.0.0.1:1"}).openLedger(); l != nil || err == nil || !strings.Contains(err.Error(), "no ledger at") {
		t.Errorf("no ledger file, no nozzle: %v, %v", l, err)
	}
	// A named address that does not answer: both are said.
	_, err = run(runReport, append([]string{"--addr", "127.0.0.1:1"}, flags...)...)
	if err == nil || !strings.Contains(err.Error(), "no ledger at "+filepath.Join(none, "ledger.db")) || !strings.Contains(err.Error(), "no nozzle answers at 127.0.0.1:1") {
		t.Errorf("no ledger, no server: %v", err)
	}
}
