package billing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
)

// openHeld opens a ledger whose background filing is stopped, so that
// recorded events stay in the journal until something files them.
func openHeld(t *testing.T, opts Options) *Ledger {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	l.wcancel()
	l.wwg.Wait()
	return l
}

// crash drops the ledger as a killed process would: nothing is filed.
func crash(l *Ledger) {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.j.close()
	l.db.Close()
}

// heldLedger opens a held ledger without prices in a fresh folder, with
// tenant "acme".
func heldLedger(t *testing.T) (*Ledger, string, *nozzle.Tenant) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path})
	return l, path, heldTenant(t, l)
}

// heldTenant creates tenant "acme".
func heldTenant(t *testing.T, l *Ledger) *nozzle.Tenant {
	t.Helper()
	ten := &nozzle.Tenant{Name: "acme"}
	if err := l.CreateTenant(context.Background(), ten); err != nil {
		t.Fatal(err)
	}
	return ten
}

func journalEvent(tenantID, id string, at time.Time) *nozzle.UsageEvent {
	return &nozzle.UsageEvent{RequestID: id, TenantID: tenantID, Time: at, PromptTokens: 1000, CompletionTokens: 500, DeviceSeconds: 0.01, RatePerHour: 2}
}

func TestJournal_CrashBeforeFiling(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	price := nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2}
	l := openHeld(t, Options{Path: path, DefaultPrice: price})
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	const n = 300
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := journalEvent(ten.ID, fmt.Sprintf("r-%d", i), at.Add(time.Duration(i)*time.Second))
			if _, err := l.RecordUsage(ctx, ev); err != nil {
				t.Error(err)
			}
			if ev.ChargeUSD != 0.002 {
				t.Errorf("charge %v, want 0.002", ev.ChargeUSD)
			}
		}()
	}
	wg.Wait()
	if got := l.j.n.Load(); got != n {
		t.Fatalf("%d events journaled, want %d", got, n)
	}
	// An acknowledged event is visible before it is filed.
	if ev, err := l.Usage(ctx, "r-7"); err != nil || ev.PromptTokens != 1000 {
		t.Fatalf("Usage of a journaled event = %+v, %v", ev, err)
	}
	crash(l)

	// A torn record at the end (a crash mid-append) is cut off.
	f, err := os.OpenFile(journalPaths(path)[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.j.size[0] = 0 // (the test wrote the file itself below)
	b, _ := os.ReadFile(journalPaths(path)[0])
	evs, good, gen := decodeJournal(b)
	if len(evs) != n {
		t.Fatalf("journal holds %d events, want %d", len(evs), n)
	}
	rec, _ := appendRecord(nil, nil, gen, journalEvent(ten.ID, "torn", at))
	f.WriteAt(rec[:len(rec)-3], int64(good))
	f.Close()

	l = openHeld(t, Options{Path: path, DefaultPrice: price})
	defer l.Close()
	assertEmptyJournal(t, path)
	res, err := l.Check(ctx)
	if err != nil || len(res.Problems) > 0 {
		t.Fatalf("Check = %+v, %v", res, err)
	}
	if res.Events != n {
		t.Fatalf("%d events after replay, want %d", res.Events, n)
	}
	if _, err := l.Usage(ctx, "torn"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("torn record filed: %v", err)
	}
	mtd, err := l.MonthToDate(ctx, ten.ID, at)
	if err != nil || mtd < n*0.002-1e-9 || mtd > n*0.002+1e-9 {
		t.Fatalf("month to date %v, %v; want %v", mtd, err, n*0.002)
	}
}

// The largest event (a stored response at the limit) is journaled and
// replayed like any other, and so are the events after it.
func TestJournal_LargestEventReplays(t *testing.T) {
	ctx := context.Background()
	l, path, ten := heldLedger(t)
	big := journalEvent(ten.ID, "big", time.Now())
	big.Response = make([]byte, maxResponseLen)
	for i := range big.Response {
		big.Response[i] = byte('a' + i%26)
	}
	for _, ev := range []*nozzle.UsageEvent{big, journalEvent(ten.ID, "after", time.Now())} {
		if _, err := l.RecordUsage(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	crash(l)
	l = openHeld(t, Options{Path: path})
	defer l.Close()
	got, err := l.Usage(ctx, "big")
	if err != nil || len(got.Response) != maxResponseLen || got.Response[maxResponseLen-1] != big.Response[maxResponseLen-1] {
		t.Fatalf("largest event after replay: %v", err)
	}
	if _, err := l.Usage(ctx, "after"); err != nil {
		t.Fatalf("event after the largest: %v", err)
	}
}

func TestJournal_ReplayIsIdempotent(t *testing.T) {
	ctx := context.Background()
	l, path, ten := heldLedger(t)
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	for i := range 10 {
		if _, err := l.RecordUsage(ctx, journalEvent(ten.ID, fmt.Sprintf("r-%d", i), at)); err != nil {
			t.Fatal(err)
		}
	}
	// Filed, but the files not emptied (a crash right after the commit).
	b0, _ := os.ReadFile(journalPaths(path)[0])
	b1, _ := os.ReadFile(journalPaths(path)[1])
	if err := l.fileJournalNow(); err != nil {
		t.Fatal(err)
	}
	crash(l)
	os.WriteFile(journalPaths(path)[0], b0, 0o600)
	os.WriteFile(journalPaths(path)[1], b1, 0o600)

	l = openHeld(t, Options{Path: path})
	defer l.Close()
	if res, err := l.Check(ctx); err != nil || res.Events != 10 || len(res.Problems) > 0 {
		t.Fatalf("Check after a second replay = %+v, %v; want 10 events", res, err)
	}
}

func TestJournal_Duplicates(t *testing.T) {
	ctx := context.Background()
	l := openHeld(t, Options{Path: filepath.Join(t.TempDir(), "ledger.db"), DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1}})
	defer l.Close()
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	record := func(id string, tokens int64) (*nozzle.UsageEvent, bool) {
		t.Helper()
		ev := journalEvent(ten.ID, id, at)
		ev.PromptTokens = tokens
		dup, err := l.RecordUsage(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return ev, dup
	}
	if _, dup := record("a", 1000); dup {
		t.Fatal("first record is a duplicate")
	}
	// Journaled, not filed: a retry gets the stored event back.
	if ev, dup := record("a", 5); !dup || ev.PromptTokens != 1000 {
		t.Fatalf("retry while journaled: dup=%v tokens=%d", dup, ev.PromptTokens)
	}
	if err := l.fileJournalNow(); err != nil {
		t.Fatal(err)
	}
	if ev, dup := record("a", 5); !dup || ev.PromptTokens != 1000 {
		t.Fatalf("retry once filed: dup=%v tokens=%d", dup, ev.PromptTokens)
	}
	// Concurrent retries of one new request: one is stored.
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, dup := record("b", 1000); !dup {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if fresh != 1 {
		t.Fatalf("%d concurrent records of one request stored, want 1", fresh)
	}
	if res, err := l.Check(ctx); err != nil || res.Events != 2 {
		t.Fatalf("Check = %+v, %v; want 2 events", res, err)
	}
	// An unknown tenant is refused before anything is journaled.
	ev := journalEvent("nobody", "c", at)
	_, err := l.RecordUsage(ctx, ev)
	if nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("unknown tenant: %v", err)
	}
	if l.j.n.Load() != 0 {
		t.Fatal("a refused event was journaled")
	}
}

func TestJournal_BudgetCountsJournaledCharges(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	l := openHeld(t, Options{Path: filepath.Join(t.TempDir(), "ledger.db"), DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1000},
		Now: func() time.Time { return now }})
	defer l.Close()
	ten := heldTenant(t, l)
	budget := 2.0
	if _, err := l.UpdateTenant(ctx, ten.ID, nozzle.TenantUpdate{MonthlyBudgetUSD: &budget}); err != nil {
		t.Fatal(err)
	}
	// $1.50 charged and journaled, not filed.
	ev := journalEvent(ten.ID, "big", now)
	ev.PromptTokens, ev.CompletionTokens = 1500, 0
	if _, err := l.RecordUsage(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if l.j.n.Load() != 1 {
		t.Fatal("event not held in the journal")
	}
	if _, err := l.ReserveBudget(ctx, ten.ID, 0.6); nozzle.ErrorCode(err) != nozzle.EQUOTA {
		t.Fatalf("reserving past the budget with journaled charges: %v", err)
	}
	if _, err := l.ReserveBudget(ctx, ten.ID, 0.4); err != nil {
		t.Fatalf("reserving within the budget: %v", err)
	}
}

func TestJournal_PendingMetric(t *testing.T) {
	reg := metrics.NewRegistry()
	l := openHeld(t, Options{Path: filepath.Join(t.TempDir(), "ledger.db"), Metrics: reg})
	defer l.Close()
	ten := heldTenant(t, l)
	for _, id := range []string{"a", "b"} {
		if _, err := l.RecordUsage(context.Background(), journalEvent(ten.ID, id, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	reg.WriteTo(&b)
	if !strings.Contains(b.String(), "nozzle_ledger_journal_pending_events 2\n") {
		t.Fatalf("metrics lack 2 pending events:\n%s", b.String())
	}
}

func TestJournal_CloseFiles(t *testing.T) {
	ctx := context.Background()
	l, path, ten := heldLedger(t)
	if _, err := l.RecordUsage(ctx, journalEvent(ten.ID, "a", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordUsage(ctx, journalEvent(ten.ID, "b", time.Now())); err != ErrClosed {
		t.Fatalf("RecordUsage after Close: %v", err)
	}
	assertEmptyJournal(t, path)
	l = openHeld(t, Options{Path: path})
	defer l.Close()
	if _, err := l.Usage(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}

// assertEmptyJournal checks that the journal files hold no record.
func assertEmptyJournal(t *testing.T, path string) {
	t.Helper()
	for _, p := range journalPaths(path) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if evs, _, _ := decodeJournal(b); len(evs) > 0 {
			t.Fatalf("journal %s holds %d events", p, len(evs))
		}
		if len(b) < journalPrealloc {
			t.Fatalf("journal %s is %d bytes, want %d preallocated", p, len(b), journalPrealloc)
		}
	}
}

// TestJournal_StaleRecordsAreNotReplayed: after a file is emptied, the
// records of its earlier generation that follow the new ones are not read.
func TestJournal_StaleRecordsAreNotReplayed(t *testing.T) {
	ev := journalEvent("t", "old-1", time.Unix(1e9, 0))
	ev.Status = nozzle.UsageOK
	var b, scratch []byte
	for i := range 5 {
		ev.RequestID = fmt.Sprintf("old-%d", i)
		b, scratch = appendRecord(b, scratch, 7, ev)
	}
	var fresh []byte
	ev.RequestID = "new-0"
	fresh, _ = appendRecord(nil, nil, 8, ev)
	// A new record of the same length as an old one, so that the old
	// records after it start on a record boundary.
	copy(b, fresh)
	evs, good, gen := decodeJournal(b)
	if len(evs) != 1 || evs[0].ev.RequestID != "new-0" || good != len(fresh) || gen != 8 {
		t.Fatalf("decoded %d events (%v), %d bytes, generation %d; want the new one alone", len(evs), evs, good, gen)
	}
}

// TestJournal_Concurrent records from many goroutines while reports, price
// changes and budget checks run and the background filing goes on; after
// Close and a reopen, every acknowledged event is stored once, the rollups
// add up, and the month's charges equal the acknowledged ones.
func TestJournal_Concurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(Options{Path: path, DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ten := heldTenant(t, l)
	budget := 1e9
	if _, err := l.UpdateTenant(ctx, ten.ID, nozzle.TenantUpdate{MonthlyBudgetUSD: &budget}); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		charged float64
		acked   int
	)
	stop := make(chan struct{})
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				ev := journalEvent(ten.ID, fmt.Sprintf("w%d-%d", w, i%150), at) // some retried
				dup, err := l.RecordUsage(ctx, ev)
				if err != nil {
					t.Error(err)
					return
				}
				if !dup {
					mu.Lock()
					charged += ev.ChargeUSD
					acked++
					mu.Unlock()
				}
			}
		}()
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := l.Report(ctx, nozzle.ReportQuery{TenantID: ten.ID, Start: at.Add(-time.Hour), End: at.Add(time.Hour)}); err != nil {
				t.Error(err)
				return
			}
			release, err := l.ReserveBudget(ctx, ten.ID, 0.01)
			if err != nil {
				t.Error(err)
				return
			}
			release()
			// A new price for the events recorded from now on.
			p := nozzle.Price{PromptPerMillionUSD: float64(1 + time.Now().Nanosecond()%5), CompletionPerMillionUSD: 2}
			if err := l.SetPrice(ctx, ten.ID, p, at.Add(-time.Hour)); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openHeld(t, Options{Path: path})
	defer l.Close()
	res, err := l.Check(ctx)
	if err != nil || len(res.Problems) > 0 {
		t.Fatalf("Check = %+v, %v", res, err)
	}
	if res.Events != acked || acked != 16*150 {
		t.Fatalf("%d events stored, %d acknowledged as new, want %d", res.Events, acked, 16*150)
	}
	mtd, err := l.MonthToDate(ctx, ten.ID, at)
	if err != nil || mtd < charged*(1-1e-9) || mtd > charged*(1+1e-9) {
		t.Fatalf("month to date %v (%v), acknowledged charges %v", mtd, err, charged)
	}
}

// TestJournal_CloseWithABatchPending: a ledger closed while a whole batch
// of journaled events waits to be filed closes (the background filer
// stops, and Close files the batch) instead of the filer spinning on a
// write that its ended context refuses.
func TestJournal_CloseWithABatchPending(t *testing.T) {
	l, path, ten := heldLedger(t) // its filer has stopped, its context ended
	at := time.Now().UTC()
	for i := range journalFileBatch + 10 {
		if _, err := l.RecordUsage(context.Background(), journalEvent(ten.ID, fmt.Sprintf("req-%d", i), at)); err != nil {
			t.Fatal(err)
		}
	}
	l.wwg.Add(1)
	stopped := make(chan struct{})
	go func() { l.fileLoop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the filer did not stop after the ledger's context ended, with a batch pending")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openHeld(t, Options{Path: path})
	defer l.Close()
	if res, err := l.Check(context.Background()); err != nil || res.Events != journalFileBatch+10 || len(res.Problems) > 0 {
		t.Errorf("Check after reopening = %+v, %v; want %d events", res, err, journalFileBatch+10)
	}
}
