package billing

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// wantUsage checks that Usage(id) finds the event recorded under want.
func wantUsage(t *testing.T, l *Ledger, id, want string) *nozzle.UsageEvent {
	t.Helper()
	ev, err := l.Usage(context.Background(), id)
	if err != nil || ev.RequestID != want {
		t.Fatalf("Usage(%s) = %+v, %v; want the event of %s", id, ev, err, want)
	}
	return ev
}

func wantNoUsage(t *testing.T, l *Ledger, id string) {
	t.Helper()
	if ev, err := l.Usage(context.Background(), id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("Usage(%s) = %+v, %v; want none", id, ev, err)
	}
}

func wantCheck(t *testing.T, l *Ledger, events int) {
	t.Helper()
	res, err := l.Check(context.Background())
	if err != nil || res.Events != events {
		t.Fatalf("check: %+v, %v; want %d events", res, err, events)
	}
}

// TestLedger_AttemptID: an event recorded under one id (an idempotent
// request's key's) is found under its attempt id too, journaled, filed
// and after a reopen; the attempt id names it for lookups only (an event
// recorded under it is another request, found first), an attempt id
// another event holds is left out, and a duplicate stays one event.
func TestLedger_AttemptID(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	ev := func(id, attempt string) *nozzle.UsageEvent {
		return &nozzle.UsageEvent{RequestID: id, AttemptID: attempt, TenantID: ten.ID, Time: at, PromptTokens: 10, CompletionTokens: 5, Response: []byte(`{"id":"x"}`)}
	}
	if mustRecord(t, l, ev("idem_1", "cid_a")) {
		t.Fatal("a first event is a duplicate")
	}
	// Journaled, not filed yet.
	if got := wantUsage(t, l, "cid_a", "idem_1"); got.ChargeUSD != charge(10, 5) || got.AttemptID != "cid_a" {
		t.Fatalf("by attempt id: %+v", got)
	}
	wantUsage(t, l, "idem_1", "idem_1")
	// The same request again (a retry's race) under another attempt: one
	// event, found under the first attempt's id alone.
	if !mustRecord(t, l, ev("idem_1", "cid_b")) {
		t.Fatal("the second event of idem_1 is not a duplicate")
	}
	wantNoUsage(t, l, "cid_b")
	// An attempt id another event holds, as its attempt id or as its
	// request id, is left out.
	mustRecord(t, l, ev("idem_2", "cid_a"))
	mustRecord(t, l, ev("idem_3", "idem_1"))
	wantUsage(t, l, "cid_a", "idem_1")
	wantUsage(t, l, "idem_1", "idem_1")
	l.fileJournal()
	for _, id := range []string{"idem_2", "idem_3"} {
		if got := wantUsage(t, l, id, id); got.AttemptID != "" {
			t.Errorf("%s keeps attempt id %q, which another event holds", id, got.AttemptID)
		}
	}
	wantUsage(t, l, "cid_a", "idem_1")
	// Filed in the same batch as another with the same attempt id.
	mustRecord(t, l, ev("idem_4", "cid_c"))
	mustRecord(t, l, ev("idem_5", "cid_c"))
	l.fileJournal()
	wantUsage(t, l, "cid_c", "idem_4")
	// An event recorded under an attempt id is another request (not a
	// duplicate), and is found first under it; the event whose attempt id
	// it is stays found under its own id.
	if mustRecord(t, l, &nozzle.UsageEvent{RequestID: "cid_a", TenantID: ten.ID, Time: at, PromptTokens: 1, Status: nozzle.UsageFailed}) {
		t.Fatal("an event under an attempt id is a duplicate")
	}
	wantUsage(t, l, "cid_a", "cid_a")
	wantUsage(t, l, "idem_1", "idem_1")
	wantCheck(t, l, 6)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openCompat(t, path)
	wantUsage(t, l, "cid_c", "idem_4")
	wantUsage(t, l, "cid_a", "cid_a")
	wantCheck(t, l, 6)
	// An attempt id over the ids' length limit is refused; one equal to
	// the request id is none.
	if _, err := l.RecordUsage(ctx, ev("idem_6", strings.Repeat("x", maxIDLen+1))); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("a long attempt id: %v", err)
	}
	mustRecord(t, l, ev("idem_7", "idem_7"))
	// This ledger's filer runs (openCompat does not hold it, as openHeld
	// does): filed through a write, which takes turns with the filer's.
	// fileJournal called here ran beside the filer's own when its 20 ms
	// timer fired meanwhile (a loaded machine): both snapshots shared the
	// pending slice, and the second filed an entry the first had cleared
	// (a nil event, a panic in the filer).
	if err := l.fileJournalNow(); err != nil {
		t.Fatal(err)
	}
	if got := wantUsage(t, l, "idem_7", "idem_7"); got.AttemptID != "" {
		t.Errorf("attempt id %q beside the same request id", got.AttemptID)
	}
	wantCheck(t, l, 7)
}

// TestLedger_AttemptIDCrash: an event with an attempt id that a crash
// leaves in the journal is filed with it on the next open, and the
// checkpoint of the attempt it ends is not charged beside it.
func TestLedger_AttemptIDCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	ten := heldTenant(t, l)
	mustCheckpoint(t, l, checkpoint(ten.ID, "cid_a", 5, ckAt))
	l.fileJournal()
	final := checkpoint(ten.ID, "idem_1", 9, ckAt.Add(time.Second))
	final.AttemptID, final.CheckpointID, final.Response = "cid_a", "cid_a", []byte(`{}`)
	mustRecord(t, l, final)
	crash(l)

	l = openCompat(t, path)
	got := wantUsage(t, l, "cid_a", "idem_1")
	if got.Status != nozzle.UsageOK || got.CompletionTokens != 9 {
		t.Fatalf("after the crash: %+v", got)
	}
	wantCheck(t, l, 1)
}

// TestLedger_AttemptIDMigration: a version 10 file opens at the current version
// with attempt_ids built from the stored events, and its events found as
// before.
func TestLedger_AttemptIDMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path, DefaultPrice: ckPrice})
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	mustRecord(t, l, &nozzle.UsageEvent{RequestID: "plain", TenantID: ten.ID, Time: at, PromptTokens: 3})
	mustRecord(t, l, &nozzle.UsageEvent{RequestID: "idem_1", AttemptID: "cid_a", TenantID: ten.ID, Time: at, PromptTokens: 3})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 10, bAttemptIDs)

	l = openCompat(t, path)
	if v, err := FileVersion(l); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v after open", v, err)
	}
	wantUsage(t, l, "cid_a", "idem_1")
	wantUsage(t, l, "plain", "plain")
	wantCheck(t, l, 2)
}

// TestCheck_AttemptIDs: an attempt id not indexed to its event, or an
// index entry no event's attempt id, is reported.
func TestCheck_AttemptIDs(t *testing.T) {
	for _, c := range []struct {
		name  string
		spoil func(b *bolt.Bucket) error
		want  string
	}{
		{"Missing", func(b *bolt.Bucket) error { return b.Delete([]byte("cid_a")) }, `attempt id "cid_a" is not indexed to its event`},
		{"Stray", func(b *bolt.Bucket) error { return b.Put([]byte("cid_ghost"), u64key(1)) }, "2 attempt ids index 1 events with one"},
		{"Elsewhere", func(b *bolt.Bucket) error { return b.Put([]byte("cid_a"), u64key(1)) }, `attempt id "cid_a" is not indexed to its event`},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := openHeld(t, Options{Path: filepath.Join(t.TempDir(), "ledger.db")})
			ten := heldTenant(t, l)
			at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
			mustRecord(t, l, &nozzle.UsageEvent{RequestID: "plain", TenantID: ten.ID, Time: at, PromptTokens: 3})
			mustRecord(t, l, &nozzle.UsageEvent{RequestID: "idem_1", AttemptID: "cid_a", TenantID: ten.ID, Time: at, PromptTokens: 3})
			l.fileJournal()
			wantCheck(t, l, 2)
			if err := l.db.Update(func(tx *bolt.Tx) error { return c.spoil(tx.Bucket(bAttemptIDs)) }); err != nil {
				t.Fatal(err)
			}
			res, err := l.Check(context.Background())
			if !errors.Is(err, ErrInconsistent) || !strings.Contains(strings.Join(res.Problems, "\n"), c.want) {
				t.Fatalf("check: %+v, %v; want a problem with %q", res, err, c.want)
			}
		})
	}
}

// TestEventFormat5: an event with an attempt id is written in value format
// 5 and reads back with it; one without keeps format 2; format 5 without
// an attempt id does not decode.
func TestEventFormat5(t *testing.T) {
	ev := &nozzle.UsageEvent{RequestID: "idem_1", AttemptID: "cid_a", TenantID: "t", Status: nozzle.UsageOK, Time: time.Unix(1, 0).UTC(), PromptTokens: 4, Response: []byte("r")}
	b := encodeEvent(nil, ev)
	if b[0] != valueV5 {
		t.Fatalf("format %d", b[0])
	}
	got, err := decodeEvent(b)
	if err != nil || got.AttemptID != "cid_a" || got.RequestID != "idem_1" || !bytes.Equal(got.Response, []byte("r")) {
		t.Fatalf("decode: %+v, %v", got, err)
	}
	ev.AttemptID = ""
	if b := encodeEvent(nil, ev); b[0] != valueV2 {
		t.Fatalf("without an attempt id: format %d", b[0])
	}
	if _, err := decodeEvent(encodeEventAs(nil, ev, valueV5)); !errors.Is(err, errCorrupt) {
		t.Fatalf("format 5 without an attempt id: %v", err)
	}
}
