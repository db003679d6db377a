package billing

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// outcomeLedger makes a ledger whose tenant acme has, in the hour of ckAt
// under adapter sql, one request of each status (two canceled; the
// interrupted one a stream that the crash before the last open cut short),
// a canceled request to the base model in the next hour and an ok one two
// hours on; tenant globex has one canceled request. It returns the closed
// ledger's path and the two tenants.
func outcomeLedger(t *testing.T) (path string, acme, globex *nozzle.Tenant) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	acme = heldTenant(t, l)
	globex = &nozzle.Tenant{Name: "globex"}
	if err := l.CreateTenant(context.Background(), globex); err != nil {
		t.Fatal(err)
	}
	mustCheckpoint(t, l, checkpoint(acme.ID, "streaming", 7, ckAt))
	for i, st := range []string{nozzle.UsageOK, nozzle.UsageCanceled, nozzle.UsageCanceled, nozzle.UsageFailed} {
		ev := checkpoint(acme.ID, fmt.Sprint("r", i), 10, ckAt.Add(time.Minute))
		ev.Status = st
		mustRecord(t, l, ev)
	}
	base := journalEvent(acme.ID, "base", ckAt.Add(time.Hour))
	base.Status = nozzle.UsageCanceled
	mustRecord(t, l, base)
	mustRecord(t, l, journalEvent(acme.ID, "later", ckAt.Add(2*time.Hour)))
	other := journalEvent(globex.ID, "globex", ckAt)
	other.Status = nozzle.UsageCanceled
	mustRecord(t, l, other)
	l = reopen(t, l, path)
	if ev, err := l.Usage(context.Background(), "streaming"); err != nil || ev.Status != nozzle.UsageInterrupted {
		t.Fatalf("the cut-short stream: %+v, %v", ev, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, acme, globex
}

// outcomes is a report row's counts of requests by how they ended.
type outcomes struct{ requests, failed, canceled, interrupted int64 }

func outcomesOf(r *nozzle.ReportRow) outcomes {
	return outcomes{r.Requests, r.FailedRequests, r.CanceledRequests, r.InterruptedRequests}
}

// assertOutcomes checks the canceled and interrupted requests of acme's
// report by hour and adapter, read from the rollups and from the events,
// and of the operator's report by tenant.
func assertOutcomes(t *testing.T, l *Ledger, acme, globex *nozzle.Tenant) {
	t.Helper()
	ctx := context.Background()
	start, end := ckAt, ckAt.Add(3*time.Hour)
	for _, scan := range []bool{false, true} {
		rep, err := l.report(ctx, nozzle.ReportQuery{TenantID: acme.ID, Start: start, End: end,
			GroupBy: []string{nozzle.GroupHour, nozzle.GroupAdapter}}, scan)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]outcomes{
			"10:00 sql": {5, 1, 2, 1},
			"11:00 ":    {1, 0, 1, 0},
			"12:00 ":    {1, 0, 0, 0},
		}
		if len(rep.Rows) != len(want) {
			t.Fatalf("scan %v: %d rows, want %d: %+v", scan, len(rep.Rows), len(want), rep.Rows)
		}
		for i := range rep.Rows {
			r := &rep.Rows[i]
			k := r.Time.UTC().Format("15:04") + " " + r.AdapterName
			if got := outcomesOf(r); got != want[k] {
				t.Errorf("scan %v: row %q counts %+v, want %+v", scan, k, got, want[k])
			}
		}
		if got, want := outcomesOf(&rep.Total), (outcomes{7, 1, 3, 1}); got != want {
			t.Errorf("scan %v: total counts %+v, want %+v", scan, got, want)
		}
	}
	rep, err := l.Report(ctx, nozzle.ReportQuery{Start: start, End: end, GroupBy: []string{nozzle.GroupTenant}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]outcomes{acme.ID: {7, 1, 3, 1}, globex.ID: {1, 0, 1, 0}}
	for i := range rep.Rows {
		if r := &rep.Rows[i]; outcomesOf(r) != want[r.TenantID] {
			t.Errorf("operator row of %s counts %+v, want %+v", r.TenantName, outcomesOf(r), want[r.TenantID])
		}
	}
	if got, want := outcomesOf(&rep.Total), (outcomes{8, 1, 4, 1}); len(rep.Rows) != 2 || got != want {
		t.Errorf("operator report: %d rows, total counts %+v, want 2 rows, %+v", len(rep.Rows), got, want)
	}
	if res, err := l.Check(ctx); err != nil {
		t.Fatalf("check: %+v, %v", res, err)
	}
}

// TestReport_CanceledAndInterrupted: reports count the canceled and the
// interrupted requests of each row and of the total, as the rollups filed
// with the events hold them.
func TestReport_CanceledAndInterrupted(t *testing.T) {
	path, acme, globex := outcomeLedger(t)
	assertOutcomes(t, openCompat(t, path), acme, globex)
}

// TestLedger_BackfillRequestOutcomes: a version 8 file, whose rollups (in
// format 3) do not count canceled and interrupted requests, opens at the
// current version with the counts made from the events, in the rollups
// that hold such requests alone.
func TestLedger_BackfillRequestOutcomes(t *testing.T) {
	path, acme, globex := outcomeLedger(t)
	rollupsAs(t, path, valueV3, 8)
	l := openCompat(t, path)
	if v, err := FileVersion(l); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v after open", v, err)
	}
	assertOutcomes(t, l, acme, globex)
	// Acme's hour of 12:00 (ok requests alone) kept its rollups' format:
	// that rollup and the hour's total; acme's month has canceled requests.
	err := l.view(func(tx *bolt.Tx) error {
		later := hourOf(ckAt.Add(2 * time.Hour))
		for _, c := range []struct {
			b      []byte
			k      []byte
			format byte
		}{
			{bRollups, rollupKey(acme.ID, later, ""), valueV3},
			{bHours, hourKey(later), valueV3},
			// rewritten by the migration, in the current format
			{bRollups, rollupKey(acme.ID, hourOf(ckAt), "ad_1"), rollupV6},
			{bHours, hourKey(hourOf(ckAt)), rollupV6},
			{bMonths, monthKey(acme.ID, monthOf(ckAt)), rollupV6},
		} {
			if v := tx.Bucket(c.b).Get(c.k); len(v) == 0 || v[0] != c.format {
				t.Errorf("%s %x: format %v, want %d", c.b, c.k, v[:min(len(v), 1)], c.format)
			}
		}
		m, err := decodeRollup(tx.Bucket(bMonths).Get(monthKey(acme.ID, monthOf(ckAt))))
		if err != nil || m.Canceled != 3 || m.Interrupted != 1 || m.Failed != 1 || m.Requests != 7 {
			t.Errorf("acme's month: %+v, %v", m, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheck_RequestOutcomes: a rollup, hourly or monthly total whose
// canceled or interrupted requests differ from its events' is reported.
func TestCheck_RequestOutcomes(t *testing.T) {
	for _, bucket := range []string{"rollups", "hours", "months"} {
		for _, field := range []string{"Canceled", "Interrupted"} {
			t.Run(bucket+"/"+field, func(t *testing.T) {
				path, acme, _ := outcomeLedger(t)
				var want string
				changeRollups(t, path, bucket, func(r *rollup) {
					// Acme's 10:00 under sql, the 10:00 total, acme's month.
					if r.Requests != 5 && r.Requests != 6 && r.Requests != 7 {
						return
					}
					if field == "Canceled" {
						r.Canceled--
						want = fmt.Sprintf("Canceled:%d ", r.Canceled)
					} else {
						r.Interrupted++
						want = fmt.Sprintf("Interrupted:%d ", r.Interrupted)
					}
				})
				l := openCompat(t, path)
				res, err := l.Check(context.Background())
				if !errors.Is(err, ErrInconsistent) || len(res.Problems) != 1 || !strings.Contains(res.Problems[0], want) {
					t.Fatalf("check after changing the %s requests of %s (tenant %s): %+v, %v", field, bucket, acme.ID, res, err)
				}
			})
		}
	}
}
