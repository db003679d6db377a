package billing_test

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	bolt "go.etcd.io/bbolt"
)

// closedIv is a closed interval of runtime rt from a to b (minutes after
// 10:00 on 2026-03-04) with active seconds busy, at 3.6 $/h (1 ¢ a second).
func closedIv(rt string, seq uint64, a, b int, busy float64) nozzle.CapacityInterval {
	base := date("2026-03-04T10:00:00Z")
	d := float64(b-a) * 60
	return nozzle.CapacityInterval{RuntimeID: rt, Seq: seq, Start: base.Add(time.Duration(a) * time.Minute),
		End: base.Add(time.Duration(b) * time.Minute), ActiveSeconds: busy, IdleSeconds: d - busy, RatePerHour: 3.6}
}

// gpu returns the operator report's GPU figures over [from, to).
func gpu(tb testing.TB, l *billing.Ledger, from, to string) *nozzle.GPUSummary {
	tb.Helper()
	return mustReport(tb, l, nozzle.ReportQuery{Start: date(from), End: date(to), GroupBy: []string{nozzle.GroupTenant}}).GPU
}

func wantGPU(tb testing.TB, g *nozzle.GPUSummary, uptime, active float64) {
	tb.Helper()
	if math.Abs(g.UptimeSeconds-uptime) > 1e-9 || math.Abs(g.ActiveSeconds-active) > 1e-9 ||
		math.Abs(g.CostUSD-uptime*0.001) > 1e-9 || math.Abs(g.IdleSeconds-(uptime-active)) > 1e-9 {
		tb.Fatalf("GPU = %+v, want %v s up, %v s active, $%v", g, uptime, active, uptime*0.001)
	}
	if uptime > 0 && (g.Utilization != nozzle.RoundRatio(g.ActiveSeconds/g.UptimeSeconds) || math.Abs(g.Utilization-active/uptime) > nozzle.RatioPrecision/2+1e-12) {
		tb.Fatalf("utilisation %v, want %v rounded to %v", g.Utilization, active/uptime, nozzle.RatioPrecision)
	}
}

// TestOpenCapacity_ReplaceSupersede: a runtime's provisional interval is
// counted with its closed ones, replaced by newer snapshots, never by
// older ones, and dropped once the closed interval it becomes is stored,
// so nothing is counted twice.
func TestOpenCapacity_ReplaceSupersede(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{Now: newClock(date("2026-03-04T10:30:00Z")).Now})
	const from, to = "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{closedIv("rt", 1, 0, 1, 10), closedIv("rt", 2, 1, 2, 20)}); err != nil {
		t.Fatal(err)
	}
	wantGPU(t, gpu(t, l, from, to), 120, 30)

	steps := []struct {
		name           string
		open           nozzle.CapacityInterval
		uptime, active float64
	}{
		{"First", closedIv("rt", 3, 2, 3, 5), 180, 35},
		{"Newer", closedIv("rt", 3, 2, 4, 50), 240, 80},
		{"OlderSnapshotIgnored", closedIv("rt", 3, 2, 3, 1), 240, 80},
		{"CoveredSeqIgnored", closedIv("rt", 2, 1, 2, 60), 240, 80},
		{"OtherRuntime", closedIv("rt2", 1, 0, 5, 100), 540, 180},
	}
	for _, s := range steps {
		if err := l.RecordOpenCapacity(ctx, s.open); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		wantGPU(t, gpu(t, l, from, to), s.uptime, s.active)
	}
	// Interval 3 closes: the provisional one goes, the closed one counts.
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{closedIv("rt", 3, 2, 5, 70)}); err != nil {
		t.Fatal(err)
	}
	wantGPU(t, gpu(t, l, from, to), 120+180+300, 30+70+100)
	// A late snapshot of interval 3 changes nothing.
	if err := l.RecordOpenCapacity(ctx, closedIv("rt", 3, 2, 4, 50)); err != nil {
		t.Fatal(err)
	}
	wantGPU(t, gpu(t, l, from, to), 120+180+300, 30+70+100)
	// The next open interval counts again.
	if err := l.RecordOpenCapacity(ctx, closedIv("rt", 4, 5, 6, 6)); err != nil {
		t.Fatal(err)
	}
	wantGPU(t, gpu(t, l, from, to), 120+180+300+60, 30+70+100+6)
	// Provisional data is outside the consistency law; Check passes and
	// counts only closed intervals.
	if res := mustCheck(t, l); res.Intervals != 3 {
		t.Fatalf("Check = %+v", res)
	}
	// Bad snapshots are refused, and nothing is stored.
	bad := closedIv("rt", 5, 6, 7, 0)
	bad.IdleSeconds = 1
	wantCode(t, l.RecordOpenCapacity(ctx, bad), nozzle.EINVALID)
	wantCode(t, l.RecordOpenCapacity(ctx, nozzle.CapacityInterval{Seq: 9}), nozzle.EINVALID)
	wantGPU(t, gpu(t, l, from, to), 120+180+300+60, 30+70+100+6)
}

// TestOpenCapacity_Clipped: a provisional interval counts in the reports
// whose period it overlaps, split across hours by time, and in the GPU
// series bucket by bucket.
func TestOpenCapacity_Clipped(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{Now: newClock(date("2026-03-04T12:00:00Z")).Now})
	// 10:40 to 11:10, a third of it active.
	if err := l.RecordOpenCapacity(ctx, closedIv("rt", 1, 40, 70, 600)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to string
		uptime, active float64
	}{
		{"Whole", "2026-03-04T10:00:00Z", "2026-03-04T12:00:00Z", 1800, 600},
		{"FirstHour", "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z", 1200, 400},
		{"SecondHour", "2026-03-04T11:00:00Z", "2026-03-04T12:00:00Z", 600, 200},
		{"Before", "2026-03-04T08:00:00Z", "2026-03-04T10:00:00Z", 0, 0},
		{"After", "2026-03-04T12:00:00Z", "2026-03-04T13:00:00Z", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantGPU(t, gpu(t, l, tc.from, tc.to), tc.uptime, tc.active)
		})
	}
	g := mustReport(t, l, nozzle.ReportQuery{Start: date("2026-03-04T09:00:00Z"), End: date("2026-03-04T12:00:00Z"), GPUStep: nozzle.GroupHour}).GPU
	want := []float64{0, 1200, 600}
	if len(g.Series) != len(want) {
		t.Fatalf("series %+v", g.Series)
	}
	for i, b := range g.Series {
		if math.Abs(b.UptimeSeconds-want[i]) > 1e-9 || math.Abs(b.ActiveSeconds-want[i]/3) > 1e-9 {
			t.Errorf("bucket %v = %+v, want %v s up", b.Time, b, want[i])
		}
	}
}

// TestOpenCapacity_Prorata: tenants' requests in an interval that is still
// open carry its idle time under the prorata policy, and their costs add up
// to the GPU cost; tenant reports agree.
func TestOpenCapacity_Prorata(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{Now: newClock(date("2026-03-04T10:05:00Z")).Now, IdlePolicy: nozzle.IdleProrata})
	a, b := mustTenant(t, l, "a"), mustTenant(t, l, "b")
	at := date("2026-03-04T10:00:30Z")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: a.ID, Time: at, DeviceSeconds: 3, RatePerHour: 3.6})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "2", TenantID: b.ID, Time: at, DeviceSeconds: 1, RatePerHour: 3.6})
	// Before any capacity: tenants have costs, the GPU none.
	if g := gpu(t, l, "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"); g.CostUSD != 0 {
		t.Fatalf("GPU = %+v", g)
	}
	if err := l.RecordOpenCapacity(ctx, closedIv("rt", 1, 0, 1, 4)); err != nil {
		t.Fatal(err)
	}
	rep := mustReport(t, l, nozzle.ReportQuery{Start: date("2026-03-04T10:00:00Z"), End: date("2026-03-04T11:00:00Z"), GroupBy: []string{nozzle.GroupTenant}})
	wantGPU(t, rep.GPU, 60, 4)
	sum := 0.0
	for _, r := range rep.Rows {
		sum += r.CostUSD
	}
	if math.Abs(sum-0.06) > 1e-12 || math.Abs(rep.Rows[0].IdleCostUSD-0.042) > 1e-12 {
		t.Fatalf("rows %+v: costs sum to %v, want the GPU's 0.06", rep.Rows, sum)
	}
	own := mustReport(t, l, nozzle.ReportQuery{TenantID: a.ID, Start: date("2026-03-04T10:00:00Z"), End: date("2026-03-04T11:00:00Z")})
	if math.Abs(own.Total.CostUSD-0.045) > 1e-12 {
		t.Fatalf("tenant a's own report: %+v", own.Total)
	}

	// Requests that finished after the snapshot: the tenants' active time
	// (8 s) runs ahead of the runtime's (4 s) until the next pull. Their
	// costs still add up to the GPU's, the idle scaled down to the pool.
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "3", TenantID: b.ID, Time: at.Add(40 * time.Second), DeviceSeconds: 4, RatePerHour: 3.6})
	rep = mustReport(t, l, nozzle.ReportQuery{Start: date("2026-03-04T10:00:00Z"), End: date("2026-03-04T11:00:00Z"), GroupBy: []string{nozzle.GroupTenant}})
	wantGPU(t, rep.GPU, 60, 4)
	sum, idle := 0.0, 0.0
	for _, r := range rep.Rows {
		sum += r.CostUSD
		idle += r.IdleCostUSD
		if r.IdleCostUSD < 0 || r.IdleSeconds < 0 {
			t.Fatalf("row %+v", r)
		}
	}
	if math.Abs(sum-0.06) > 1e-12 || math.Abs(idle-0.052) > 1e-12 || math.Abs(rep.Rows[0].IdleCostUSD-0.052*3/8) > 1e-12 {
		t.Fatalf("rows %+v: costs sum to %v (idle %v), want the GPU's 0.06 (idle 0.052)", rep.Rows, sum, idle)
	}
}

// openSource is a runtime at the OpenCapacitySource seam: closed intervals
// of a minute and the one open so far.
type openSource struct {
	source // the closed intervals
	open   *nozzle.CapacityInterval
	asked  int
}

func (s *openSource) set(closed []nozzle.CapacityInterval, open *nozzle.CapacityInterval) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ivs, s.open = closed, open
}

func (s *openSource) OpenCapacity(ctx context.Context) (nozzle.CapacityInterval, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked++
	if s.open == nil {
		return nozzle.CapacityInterval{}, false, nil
	}
	iv := *s.open
	iv.RuntimeID = "" // the collector fills in the runtime it asked
	return iv, true, nil
}

func (s *openSource) askedTimes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked
}

// TestCollectCapacity_Open: the collector keeps the open interval of a
// runtime that reports one, replaces it at every pull, and drops it once
// the runtime closes it.
func TestCollectCapacity_Open(t *testing.T) {
	l := mustOpen(t, billing.Options{Now: newClock(date("2026-03-04T10:30:00Z")).Now})
	const from, to = "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"
	src := &openSource{}
	open := closedIv("rt", 1, 0, 1, 5)
	src.set(nil, &open)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- billing.CollectCapacity(ctx, l, map[string]nozzle.CapacitySource{"rt": src}, 5*time.Millisecond, nil, nil)
	}()
	waitFor := func(what string, ok func(g *nozzle.GPUSummary) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second) // only a bound on a broken collector
		for {
			g := gpu(t, l, from, to)
			if ok(g) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GPU = %+v", what, g)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitFor("first snapshot", func(g *nozzle.GPUSummary) bool { return g.UptimeSeconds == 60 && g.ActiveSeconds == 5 })
	open2 := closedIv("rt", 1, 0, 2, 8)
	src.set(nil, &open2)
	waitFor("newer snapshot", func(g *nozzle.GPUSummary) bool { return g.UptimeSeconds == 120 && g.ActiveSeconds == 8 })
	// The interval closes at 3 min and the next one is open for 30 s.
	open3 := closedIv("rt", 2, 3, 3, 0)
	open3.End = open3.Start.Add(30 * time.Second)
	open3.IdleSeconds = 30
	src.set([]nozzle.CapacityInterval{closedIv("rt", 1, 0, 3, 9)}, &open3)
	waitFor("closed", func(g *nozzle.GPUSummary) bool { return g.UptimeSeconds == 210 && g.ActiveSeconds == 9 })
	// The runtime stops: its last interval closes, none is open.
	src.set([]nozzle.CapacityInterval{closedIv("rt", 1, 0, 3, 9), closedIv("rt", 2, 3, 4, 1)}, nil)
	n := src.askedTimes()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if src.askedTimes() <= n {
		t.Fatal("the final pull did not ask for the open interval")
	}
	wantGPU(t, gpu(t, l, from, to), 240, 10)
	mustCheck(t, l)
}

// TestOpenCapacity_Migrate: a version 1 ledger, without the bucket of
// provisional capacity, opens at the current version and keeps provisional
// capacity.
func TestOpenCapacity_Migrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := mustOpen(t, billing.Options{Path: path})
	if err := l.RecordCapacity(context.Background(), []nozzle.CapacityInterval{closedIv("rt", 1, 0, 1, 10)}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Make it a version 1 file.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("capacity_open")); err != nil {
			return err
		}
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], 1)
		return tx.Bucket([]byte("meta")).Put([]byte("version"), v[:])
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	l = mustOpen(t, billing.Options{Path: path, Now: newClock(date("2026-03-04T10:30:00Z")).Now})
	if err := l.RecordOpenCapacity(context.Background(), closedIv("rt", 2, 1, 2, 20)); err != nil {
		t.Fatal(err)
	}
	wantGPU(t, gpu(t, l, "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"), 120, 30)
	mustCheck(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := binary.BigEndian.Uint32(tx.Bucket([]byte("meta")).Get([]byte("version"))); v != billing.SchemaVersion {
			t.Errorf("version %d after migration, want %d", v, billing.SchemaVersion)
		}
		return nil
	})
}

// TestOpenCapacity_CrashedRun: a runtime that crashed never closes its
// open interval; when its next run reports (intervals numbered from the
// new start time, far past the old ones), the old run's last snapshot is
// kept as a closed interval instead of being replaced and lost. Within a
// run, a newer interval replaces the snapshot without keeping it.
func TestOpenCapacity_CrashedRun(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{Now: newClock(date("2026-03-04T10:30:00Z")).Now})
	const from, to = "2026-03-04T10:00:00Z", "2026-03-04T11:00:00Z"
	const run1, run2 = 1_000_000_000, 1_000_000_000 + 600_000_000 // started 10 minutes apart
	record := func(iv nozzle.CapacityInterval) {
		t.Helper()
		if err := l.RecordOpenCapacity(ctx, iv); err != nil {
			t.Fatal(err)
		}
	}
	record(closedIv("rt", run1, 0, 2, 30))
	record(closedIv("rt", run1+1, 2, 3, 6)) // the same run: replaces, keeps nothing
	wantGPU(t, gpu(t, l, from, to), 60, 6)
	if seq, _ := l.LastCapacitySeq(ctx, "rt"); seq != 0 {
		t.Fatalf("a snapshot of the same run was kept as closed interval %d", seq)
	}
	// The runtime crashes; its next run starts at minute 10.
	record(closedIv("rt", run2, 10, 11, 12))
	wantGPU(t, gpu(t, l, from, to), 120, 18)
	if seq, _ := l.LastCapacitySeq(ctx, "rt"); seq != run1+1 {
		t.Fatalf("last closed seq %d, want the crashed run's %d", seq, run1+1)
	}
	if res := mustCheck(t, l); res.Intervals != 1 || len(res.Problems) > 0 {
		t.Fatalf("ledger check: %+v", res)
	}
	// The new run's first closed interval supersedes its own snapshot only.
	if err := l.RecordCapacity(ctx, []nozzle.CapacityInterval{closedIv("rt", run2, 10, 12, 20)}); err != nil {
		t.Fatal(err)
	}
	wantGPU(t, gpu(t, l, from, to), 180, 26)
}
