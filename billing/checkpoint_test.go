package billing

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// ckPrice prices the checkpoint tests: 1 USD per million prompt tokens, 2
// per million completion tokens.
var ckPrice = nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2, CachedPromptPerMillionUSD: 1}

var ckAt = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

// checkpoint is a running stream's usage so far: 100 prompt tokens and
// completion tokens so far.
func checkpoint(tenantID, id string, completion int64, at time.Time) *nozzle.UsageEvent {
	return &nozzle.UsageEvent{RequestID: id, TenantID: tenantID, KeyID: "key_1", AdapterID: "ad_1", AdapterName: "sql", Model: "sql",
		RuntimeID: "rt0", Time: at, PromptTokens: 100, CachedPromptTokens: 32, CompletionTokens: completion, DeviceSeconds: 0.5, RatePerHour: 2}
}

func mustCheckpoint(t *testing.T, l *Ledger, ev *nozzle.UsageEvent) {
	t.Helper()
	if err := l.CheckpointUsage(context.Background(), ev); err != nil {
		t.Fatalf("CheckpointUsage(%s): %v", ev.RequestID, err)
	}
}

func mustRecord(t *testing.T, l *Ledger, ev *nozzle.UsageEvent) bool {
	t.Helper()
	dup, err := l.RecordUsage(context.Background(), ev)
	if err != nil {
		t.Fatalf("RecordUsage(%s): %v", ev.RequestID, err)
	}
	return dup
}

func charge(prompt, completion int64) float64 { return ckPrice.Charge(prompt, completion) }

// assertCharged checks the ledger's whole state: the events, each request's
// tokens and status, no checkpoint left beside an event, the month's
// charges equal to the events', and a clean check.
func assertCharged(t *testing.T, l *Ledger, tenantID string, want map[string]nozzle.UsageEvent) {
	t.Helper()
	ctx := context.Background()
	res, err := l.Check(ctx)
	if err != nil || len(res.Problems) > 0 {
		t.Fatalf("Check = %+v, %v", res, err)
	}
	if res.Events != len(want) {
		t.Fatalf("%d events stored, want %d", res.Events, len(want))
	}
	total := 0.0
	for id, w := range want {
		ev, err := l.Usage(ctx, id)
		if err != nil {
			t.Fatalf("Usage(%s): %v", id, err)
		}
		if ev.Status != w.Status || ev.PromptTokens != w.PromptTokens || ev.CompletionTokens != w.CompletionTokens {
			t.Fatalf("request %s charged %s %d/%d tokens, want %s %d/%d", id, ev.Status, ev.PromptTokens, ev.CompletionTokens,
				w.Status, w.PromptTokens, w.CompletionTokens)
		}
		if c := charge(w.PromptTokens, w.CompletionTokens); math.Abs(ev.ChargeUSD-c) > 1e-12 {
			t.Fatalf("request %s charged %v USD, want %v", id, ev.ChargeUSD, c)
		}
		total += ev.ChargeUSD
	}
	mtd, err := l.MonthToDate(ctx, tenantID, ckAt)
	if err != nil || math.Abs(mtd-total) > 1e-12 {
		t.Fatalf("month to date %v, %v; want %v", mtd, err, total)
	}
}

// ckpts returns the request ids of the checkpoints filed in the ledger.
func ckpts(t *testing.T, l *Ledger) []string {
	t.Helper()
	var ids []string
	err := l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bCheckpoints).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// reopen crashes l (nothing more is filed) and opens the ledger again,
// held.
func reopen(t *testing.T, l *Ledger, path string) *Ledger {
	t.Helper()
	crash(l)
	return openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
}

func ok(prompt, completion int64) nozzle.UsageEvent {
	return nozzle.UsageEvent{Status: nozzle.UsageOK, PromptTokens: prompt, CompletionTokens: completion}
}

func interrupted(prompt, completion int64) nozzle.UsageEvent {
	return nozzle.UsageEvent{Status: nozzle.UsageInterrupted, PromptTokens: prompt, CompletionTokens: completion}
}

// Where the checkpoints are when the final event comes, or the crash: in
// the journal only, or filed into the bbolt file too.
var ckStages = []struct {
	name string
	file bool
}{{"journaled", false}, {"filed", true}}

// TestCheckpoint_FinalEventSupersedes: checkpoints then the final event
// charge the final event's counts, once — at once, after filing, and after
// a crash at either stage and one reopen or two.
func TestCheckpoint_FinalEventSupersedes(t *testing.T) {
	for _, st := range ckStages {
		t.Run(st.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
			ten := heldTenant(t, l)
			mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 10, ckAt))
			if st.file {
				l.fileJournal()
			}
			mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 20, ckAt.Add(time.Second)))
			if st.file {
				l.fileJournal()
				if got := ckpts(t, l); len(got) != 1 {
					t.Fatalf("checkpoints filed: %v", got)
				}
			}
			final := checkpoint(ten.ID, "req_a", 30, ckAt.Add(2*time.Second))
			final.Status, final.CheckpointID = nozzle.UsageOK, "req_a"
			if mustRecord(t, l, final) {
				t.Fatal("the final event is a duplicate")
			}
			want := map[string]nozzle.UsageEvent{"req_a": ok(100, 30)}
			assertCharged(t, l, ten.ID, want) // files the journal
			if got := ckpts(t, l); len(got) != 0 {
				t.Fatalf("checkpoints left after the final event: %v", got)
			}
			l = reopen(t, l, path)
			assertCharged(t, l, ten.ID, want)
			l = reopen(t, l, path)
			defer l.Close()
			assertCharged(t, l, ten.ID, want)
		})
	}
}

// TestCheckpoint_CrashBeforeFinalEvent: a crash before the final event
// (between the journal's append and its filing, or after the filing)
// charges the last checkpoint's counts once, as an interrupted event, however
// often the ledger is opened again.
func TestCheckpoint_CrashBeforeFinalEvent(t *testing.T) {
	for _, st := range ckStages {
		t.Run(st.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
			ten := heldTenant(t, l)
			for i := range 3 {
				mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", int64(10*(i+1)), ckAt.Add(time.Duration(i)*time.Second)))
			}
			// Another stream that ended normally, and an unrelated event.
			mustCheckpoint(t, l, checkpoint(ten.ID, "req_b", 5, ckAt))
			b := checkpoint(ten.ID, "req_b", 8, ckAt)
			b.Status, b.CheckpointID = nozzle.UsageCanceled, "req_b"
			mustRecord(t, l, b)
			mustRecord(t, l, journalEvent(ten.ID, "req_c", ckAt))
			if st.file {
				l.fileJournal()
				if got := ckpts(t, l); len(got) != 1 || got[0] != "req_a" {
					t.Fatalf("checkpoints filed: %v", got)
				}
			}
			want := map[string]nozzle.UsageEvent{
				"req_a": interrupted(100, 30),
				"req_b": {Status: nozzle.UsageCanceled, PromptTokens: 100, CompletionTokens: 8},
				"req_c": ok(1000, 500),
			}
			for range 3 {
				l = reopen(t, l, path)
				assertCharged(t, l, ten.ID, want)
				if got := ckpts(t, l); len(got) != 0 {
					t.Fatalf("checkpoints left after recovery: %v", got)
				}
				assertEmptyJournal(t, path)
			}
			ev, err := l.Usage(context.Background(), "req_a")
			if err != nil || !ev.Time.Equal(ckAt.Add(2*time.Second)) || ev.AdapterName != "sql" || ev.KeyID != "key_1" ||
				ev.CachedPromptTokens != 32 || ev.DeviceSeconds != 0.5 || ev.RuntimeID != "rt0" {
				t.Fatalf("interrupted event %+v, %v", ev, err)
			}
			// The request's own event, should it come now, is a duplicate.
			late := checkpoint(ten.ID, "req_a", 40, ckAt.Add(3*time.Second))
			late.Status = nozzle.UsageOK
			if !mustRecord(t, l, late) || late.Status != nozzle.UsageInterrupted || late.CompletionTokens != 30 {
				t.Fatalf("late final event: %+v", late)
			}
			l.Close()
		})
	}
}

// TestCheckpoint_RecoveryCrashes: a crash after recovery committed but
// before the journal was emptied (its records come back) charges nothing
// twice.
func TestCheckpoint_RecoveryCrashes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	ten := heldTenant(t, l)
	mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 10, ckAt))
	mustCheckpoint(t, l, checkpoint(ten.ID, "req_i", 7, ckAt))
	final := checkpoint(ten.ID, "idem_k", 12, ckAt)
	final.Status, final.CheckpointID = nozzle.UsageOK, "req_i"
	mustRecord(t, l, final)
	crash(l)
	var saved [2][]byte
	for i, p := range journalPaths(path) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		saved[i] = b
	}
	want := map[string]nozzle.UsageEvent{"req_a": interrupted(100, 10), "idem_k": ok(100, 12)}
	for range 2 {
		l = openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
		assertCharged(t, l, ten.ID, want)
		crash(l)
		// As if the journal's emptying never reached the disk.
		for i, p := range journalPaths(path) {
			if err := os.WriteFile(p, saved[i], 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	l = openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	defer l.Close()
	assertCharged(t, l, ten.ID, want)
}

// TestCheckpoint_IdempotentAttempt: an idempotent stream checkpoints under
// its attempt's id and completes under its key's: charged once, under the
// key; its attempt's checkpoint never becomes an event, at any stage; and a
// second attempt that finds the key recorded (a duplicate) ends its own
// checkpoint too.
func TestCheckpoint_IdempotentAttempt(t *testing.T) {
	for _, st := range ckStages {
		t.Run(st.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
			ten := heldTenant(t, l)
			mustCheckpoint(t, l, checkpoint(ten.ID, "req_1", 10, ckAt))
			mustCheckpoint(t, l, checkpoint(ten.ID, "req_2", 4, ckAt))
			if st.file {
				l.fileJournal()
			}
			final := checkpoint(ten.ID, "idem_k", 20, ckAt.Add(time.Second))
			final.Status, final.CheckpointID = nozzle.UsageOK, "req_1"
			if mustRecord(t, l, final) {
				t.Fatal("first completion is a duplicate")
			}
			// The racing second attempt completes too: the key's event is
			// stored, and its checkpoint ends.
			second := checkpoint(ten.ID, "idem_k", 21, ckAt.Add(time.Second))
			second.Status, second.CheckpointID = nozzle.UsageOK, "req_2"
			if !mustRecord(t, l, second) || second.CompletionTokens != 20 {
				t.Fatalf("second completion: %+v", second)
			}
			want := map[string]nozzle.UsageEvent{"idem_k": ok(100, 20)}
			for range 2 {
				l = reopen(t, l, path)
				assertCharged(t, l, ten.ID, want)
				for _, id := range []string{"req_1", "req_2"} {
					if _, err := l.Usage(context.Background(), id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
						t.Fatalf("attempt %s: %v", id, err)
					}
				}
			}
			l.Close()
		})
	}
}

// TestCheckpoint_SameBatch: checkpoints and events of the same requests in
// one group commit: a checkpoint beside its request's event is dropped,
// whatever their order; one beside another request's event is kept.
func TestCheckpoint_SameBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	ten := heldTenant(t, l)
	ev := func(id string, completion int64) *nozzle.UsageEvent {
		e := checkpoint(ten.ID, id, completion, ckAt)
		e.Status = nozzle.UsageOK
		return e
	}
	ck := func(id string, completion int64) *jop {
		e := checkpoint(ten.ID, id, completion, ckAt)
		e.Status = nozzle.UsageInterrupted
		return &jop{ev: e, ckpt: true, done: make(chan error, 1)}
	}
	rec := func(e *nozzle.UsageEvent) *jop { return &jop{ev: e, done: make(chan error, 1)} }
	batch := []*jop{ck("req_a", 5), rec(ev("req_a", 9)), rec(ev("req_b", 3)), ck("req_b", 2), ck("req_c", 4)}
	l.mu.RLock()
	l.appendUsage(batch)
	l.mu.RUnlock()
	for _, o := range batch {
		if err := <-o.done; err != nil {
			t.Fatal(err)
		}
	}
	if !batch[0].dup || !batch[3].dup || batch[4].dup {
		t.Fatalf("checkpoints dropped: %v %v %v", batch[0].dup, batch[3].dup, batch[4].dup)
	}
	l = reopen(t, l, path)
	defer l.Close()
	assertCharged(t, l, ten.ID, map[string]nozzle.UsageEvent{"req_a": ok(100, 9), "req_b": ok(100, 3), "req_c": interrupted(100, 4)})
}

// TestCheckpoint_AfterEventIsDropped: a checkpoint of a request whose event
// is recorded writes nothing.
func TestCheckpoint_AfterEventIsDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	ten := heldTenant(t, l)
	e := checkpoint(ten.ID, "req_a", 9, ckAt)
	e.Status = nozzle.UsageOK
	mustRecord(t, l, e)
	mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 12, ckAt)) // journaled event
	l.fileJournal()
	mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 13, ckAt)) // filed event
	if n := l.j.nc.Load(); n != 0 {
		t.Fatalf("%d checkpoints pending", n)
	}
	l = reopen(t, l, path)
	defer l.Close()
	assertCharged(t, l, ten.ID, map[string]nozzle.UsageEvent{"req_a": ok(100, 9)})
}

// TestCheckpoint_Invalid: checkpoints are validated like events; an
// interrupted event is the ledger's own.
func TestCheckpoint_Invalid(t *testing.T) {
	l, _, ten := heldLedger(t)
	defer l.Close()
	ctx := context.Background()
	for name, ev := range map[string]*nozzle.UsageEvent{
		"no request id":  {TenantID: ten.ID, Time: ckAt},
		"no time":        {RequestID: "r", TenantID: ten.ID},
		"negative":       {RequestID: "r", TenantID: ten.ID, Time: ckAt, CompletionTokens: -1},
		"unknown tenant": {RequestID: "r", TenantID: "ten_nobody", Time: ckAt},
	} {
		if err := l.CheckpointUsage(ctx, ev); nozzle.ErrorCode(err) != nozzle.EINVALID {
			t.Errorf("%s: %v", name, err)
		}
	}
	ev := checkpoint(ten.ID, "r", 1, ckAt)
	ev.Status = nozzle.UsageInterrupted
	if _, err := l.RecordUsage(ctx, ev); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Errorf("RecordUsage of an interrupted event: %v", err)
	}
}

// TestCheckpoint_CheckFindsOneBesideItsEvent: Check reports a checkpoint
// filed beside its request's event (both would be charged).
func TestCheckpoint_CheckFindsOneBesideItsEvent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	defer l.Close()
	ten := heldTenant(t, l)
	mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 3, ckAt))
	l.fileJournal()
	if res, err := l.Check(context.Background()); err != nil || res.Checkpoints != 1 {
		t.Fatalf("check of a running request's checkpoint: %+v, %v", res, err)
	}
	e := checkpoint(ten.ID, "req_a", 9, ckAt)
	e.Status = nozzle.UsageOK
	err := l.db.Update(func(tx *bolt.Tx) error {
		w := newWtx(l, tx)
		if _, _, err := w.recordEvent(e, false); err != nil {
			return err
		}
		return w.flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Check(context.Background())
	if err == nil || len(res.Problems) != 1 || res.Problems[0] != `usage checkpoint "req_a" is left beside its request's event` {
		t.Fatalf("check: %+v, %v", res, err)
	}
}

// TestCheckpoint_BudgetSeesInterrupted: after a crash, a tenant's month
// holds the interrupted charge, and a reservation past the budget with it
// is refused.
func TestCheckpoint_BudgetSeesInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice, Now: func() time.Time { return ckAt.Add(time.Hour) }})
	ten := heldTenant(t, l)
	budget := 0.01
	if _, err := l.UpdateTenant(context.Background(), ten.ID, nozzle.TenantUpdate{MonthlyBudgetUSD: &budget}); err != nil {
		t.Fatal(err)
	}
	mustCheckpoint(t, l, checkpoint(ten.ID, "req_a", 4_000, ckAt)) // 0.0081 USD
	crash(l)
	l = openHeld(t, Options{Path: path, DefaultPrice: ckPrice, Now: func() time.Time { return ckAt.Add(time.Hour) }})
	defer l.Close()
	mtd, err := l.MonthToDate(context.Background(), ten.ID, ckAt)
	if want := charge(100, 4_000); err != nil || math.Abs(mtd-want) > 1e-12 {
		t.Fatalf("month to date %v, %v; want %v", mtd, err, want)
	}
	if _, err := l.ReserveBudget(context.Background(), ten.ID, 0.002); nozzle.ErrorCode(err) != nozzle.EQUOTA {
		t.Fatalf("reservation past the budget with the interrupted charge: %v", err)
	}
}
