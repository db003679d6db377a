package billing

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

func convItem(id, text string) nozzle.ConversationItem {
	return nozzle.ConversationItem{ID: id, Item: []byte(`{"id":"` + id + `","type":"message","role":"user","content":[{"type":"input_text","text":"` + text + `"}]}`)}
}

func convIDs(items []nozzle.ConversationItem) string {
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return strings.Join(ids, ",")
}

func convEvent(tenantID, reqID, convID string, at time.Time, ids ...string) *nozzle.UsageEvent {
	ca := &nozzle.ConversationAppend{ConversationID: convID}
	for _, id := range ids {
		ca.Items = append(ca.Items, convItem(id, "text of "+id))
	}
	return &nozzle.UsageEvent{RequestID: reqID, TenantID: tenantID, Time: at, PromptTokens: 10, CompletionTokens: 2, ConversationAppend: ca}
}

func wantConvCheck(t *testing.T, l *Ledger, convs int) {
	t.Helper()
	res, err := l.Check(context.Background())
	if err != nil || len(res.Problems) > 0 || res.Conversations != convs {
		t.Fatalf("check: %+v, %v", res, err)
	}
}

// TestConversations_Store: create, read, update, page through, add to
// and delete items of a conversation; another tenant finds nothing of it,
// and a deleted one is gone with its items.
func TestConversations_Store(t *testing.T) {
	ctx := context.Background()
	l, _, ten := heldLedger(t)
	defer l.Close()
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	c := &nozzle.Conversation{ID: "conv_1", TenantID: ten.ID, Created: at, Metadata: map[string]string{"topic": "demo"}}
	if err := l.CreateConversation(ctx, c, []nozzle.ConversationItem{convItem("a", "1"), convItem("b", "2")}); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateConversation(ctx, c, nil); nozzle.ErrorCode(err) != nozzle.ECONFLICT {
		t.Fatalf("create twice: %v", err)
	}
	got, err := l.Conversation(ctx, ten.ID, "conv_1")
	if err != nil || !got.Created.Equal(at) || got.Metadata["topic"] != "demo" || got.TenantID != ten.ID {
		t.Fatalf("read: %+v, %v", got, err)
	}
	for _, tc := range []struct{ tenant, id string }{{"t_other", "conv_1"}, {ten.ID, "conv_2"}, {"", "conv_1"}, {ten.ID, ""}} {
		if _, err := l.Conversation(ctx, tc.tenant, tc.id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("read %q of %q: %v", tc.id, tc.tenant, err)
		}
		if err := l.AddConversationItems(ctx, tc.tenant, tc.id, []nozzle.ConversationItem{convItem("x", "x")}); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("add to %q of %q: %v", tc.id, tc.tenant, err)
		}
		if err := l.DeleteConversation(ctx, tc.tenant, tc.id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("delete %q of %q: %v", tc.id, tc.tenant, err)
		}
	}
	if up, err := l.UpdateConversation(ctx, ten.ID, "conv_1", map[string]string{"k": "v"}); err != nil || len(up.Metadata) != 1 || up.Metadata["k"] != "v" {
		t.Fatalf("update: %+v, %v", up, err)
	}
	too := map[string]string{}
	for i := 0; i <= nozzle.MaxConversationMetadata; i++ {
		too[fmt.Sprint(i)] = "v"
	}
	if _, err := l.UpdateConversation(ctx, ten.ID, "conv_1", too); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("17 pairs: %v", err)
	}
	// An id held already is not appended again.
	if err := l.AddConversationItems(ctx, ten.ID, "conv_1", []nozzle.ConversationItem{convItem("c", "3"), convItem("a", "again"), convItem("d", "4")}); err != nil {
		t.Fatal(err)
	}
	all, err := l.AllConversationItems(ctx, ten.ID, "conv_1", 100)
	if err != nil || convIDs(all) != "a,b,c,d" || !strings.Contains(string(all[0].Item), `"text":"1"`) {
		t.Fatalf("all: %s, %v", convIDs(all), err)
	}
	if _, err := l.AllConversationItems(ctx, ten.ID, "conv_1", 3); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("more than max: %v", err)
	}
	for _, tc := range []struct {
		page nozzle.ConversationPage
		want string
		more bool
	}{
		{nozzle.ConversationPage{Limit: 2}, "a,b", true},
		{nozzle.ConversationPage{Limit: 2, After: "b"}, "c,d", false},
		{nozzle.ConversationPage{Limit: 10}, "a,b,c,d", false},
		{nozzle.ConversationPage{Limit: 3, Desc: true}, "d,c,b", true},
		{nozzle.ConversationPage{Limit: 3, Desc: true, After: "b"}, "a", false},
		{nozzle.ConversationPage{Limit: 1, Desc: true, After: "a"}, "", false},
	} {
		items, more, err := l.ConversationItems(ctx, ten.ID, "conv_1", tc.page)
		if err != nil || convIDs(items) != tc.want || more != tc.more {
			t.Errorf("page %+v: %s %v, %v; want %s %v", tc.page, convIDs(items), more, err, tc.want, tc.more)
		}
	}
	if _, _, err := l.ConversationItems(ctx, ten.ID, "conv_1", nozzle.ConversationPage{Limit: 2, After: "zz"}); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Errorf("after an unknown item: %v", err)
	}
	if it, err := l.ConversationItem(ctx, ten.ID, "conv_1", "c"); err != nil || it.ID != "c" {
		t.Fatalf("item c: %+v, %v", it, err)
	}
	if _, err := l.ConversationItem(ctx, "t_other", "conv_1", "c"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("another tenant's item: %v", err)
	}
	if _, err := l.DeleteConversationItem(ctx, ten.ID, "conv_1", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.DeleteConversationItem(ctx, ten.ID, "conv_1", "b"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("delete twice: %v", err)
	}
	if _, err := l.ConversationItem(ctx, ten.ID, "conv_1", "b"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("deleted item: %v", err)
	}
	if items, _, _ := l.ConversationItems(ctx, ten.ID, "conv_1", nozzle.ConversationPage{Limit: 10, Desc: true}); convIDs(items) != "d,c,a" {
		t.Errorf("after deleting b: %s", convIDs(items))
	}
	// A second conversation whose prefix extends the first's id.
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_10", TenantID: ten.ID, Created: at}, []nozzle.ConversationItem{convItem("z", "z")}); err != nil {
		t.Fatal(err)
	}
	if items, _, _ := l.ConversationItems(ctx, ten.ID, "conv_1", nozzle.ConversationPage{Limit: 10, Desc: true}); convIDs(items) != "d,c,a" {
		t.Errorf("conv_1 beside conv_10: %s", convIDs(items))
	}
	wantConvCheck(t, l, 2)
	if err := l.DeleteConversation(ctx, ten.ID, "conv_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Conversation(ctx, ten.ID, "conv_1"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("deleted: %v", err)
	}
	if _, err := l.ConversationItem(ctx, ten.ID, "conv_1", "c"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("item of a deleted conversation: %v", err)
	}
	if items, err := l.AllConversationItems(ctx, ten.ID, "conv_10", 10); err != nil || convIDs(items) != "z" {
		t.Errorf("conv_10 after deleting conv_1: %s, %v", convIDs(items), err)
	}
	wantConvCheck(t, l, 1)
}

// TestConversations_AppendWithEvent: a response's items are journaled in
// its event's record and appended in the transaction that files it: after
// a crash before filing they come back with the event; a duplicate event
// appends nothing again; an invalid append records neither; a failed
// event carries none; a conversation deleted before filing takes none.
func TestConversations_AppendWithEvent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path})
	ten := heldTenant(t, l)
	at := time.Now().UTC()
	for _, id := range []string{"conv_a", "conv_gone"} {
		if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: id, TenantID: ten.ID, Created: at}, []nozzle.ConversationItem{convItem("first", "hi")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.RecordUsage(ctx, convEvent(ten.ID, "req1", "conv_a", at, "in1", "out1")); err != nil {
		t.Fatal(err)
	}
	// Both with a stored response, in one record.
	ev := convEvent(ten.ID, "req2", "conv_a", at, "in2", "out2")
	ev.StoredResponse = respEvent(ten.ID, "req2", "resp_2", "", at).StoredResponse
	if _, err := l.RecordUsage(ctx, ev); err != nil {
		t.Fatal(err)
	}
	bad := convEvent(ten.ID, "req3", "conv_a", at, "in3")
	bad.ConversationAppend.Items[0].Item = []byte(`["no"]`)
	if _, err := l.RecordUsage(ctx, bad); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("invalid item: %v", err)
	}
	failed := convEvent(ten.ID, "req4", "conv_a", at, "in4")
	failed.Status = nozzle.UsageFailed
	if _, err := l.RecordUsage(ctx, failed); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("failed event with items: %v", err)
	}
	if _, err := l.RecordUsage(ctx, convEvent(ten.ID, "req5", "conv_gone", at, "in5")); err != nil {
		t.Fatal(err)
	}
	crash(l) // nothing filed: the journal holds the records

	l = openHeld(t, Options{Path: path})
	items, err := l.AllConversationItems(ctx, ten.ID, "conv_a", 100)
	if err != nil || convIDs(items) != "first,in1,out1,in2,out2" {
		t.Fatalf("after the crash: %s, %v", convIDs(items), err)
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_2"); err != nil {
		t.Fatalf("response with the append: %v", err)
	}
	if _, err := l.Usage(ctx, "req3"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("invalid append's event: %v", err)
	}
	// Duplicate: appends nothing again, even with other items.
	if dup, err := l.RecordUsage(ctx, convEvent(ten.ID, "req1", "conv_a", at, "in1b", "out1b")); err != nil || !dup {
		t.Fatalf("duplicate: %v, %v", dup, err)
	}
	// Deleted before its response's event is filed: the event is charged,
	// nothing appended anywhere.
	if _, err := l.RecordUsage(ctx, convEvent(ten.ID, "req6", "conv_gone", at, "in6")); err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteConversation(ctx, ten.ID, "conv_gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordUsage(ctx, convEvent(ten.ID, "req7", "conv_gone", at, "in7")); err != nil {
		t.Fatal(err)
	}
	// Another tenant's event cannot append to it.
	other := &nozzle.Tenant{Name: "other"}
	if err := l.CreateTenant(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := l.RecordUsage(ctx, convEvent(other.ID, "req8", "conv_a", at, "in8")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openHeld(t, Options{Path: path})
	defer l.Close()
	if items, err := l.AllConversationItems(ctx, ten.ID, "conv_a", 100); err != nil || convIDs(items) != "first,in1,out1,in2,out2" {
		t.Fatalf("after reopen: %s, %v", convIDs(items), err)
	}
	if _, err := l.Usage(ctx, "req7"); err != nil {
		t.Errorf("event of a deleted conversation: %v", err)
	}
	n := 0
	_ = l.view(func(tx *bolt.Tx) error { n = tx.Bucket(bConvItems).Stats().KeyN; return nil })
	if n != 5 {
		t.Errorf("%d items stored, want 5", n)
	}
	wantConvCheck(t, l, 1)
}

// TestConversations_Concurrent: responses of one conversation recorded at
// once each append their items as one block, in the order their events
// were journaled.
func TestConversations_Concurrent(t *testing.T) {
	ctx := context.Background()
	l, _, ten := heldLedger(t)
	defer l.Close()
	at := time.Now().UTC()
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_c", TenantID: ten.ID, Created: at}, nil); err != nil {
		t.Fatal(err)
	}
	const n = 40
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := l.RecordUsage(ctx, convEvent(ten.ID, fmt.Sprintf("r%d", i), "conv_c", at, fmt.Sprintf("in%d", i), fmt.Sprintf("out%d", i)))
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	items, err := l.AllConversationItems(ctx, ten.ID, "conv_c", 1000)
	if err != nil || len(items) != 2*n {
		t.Fatalf("%d items, %v", len(items), err)
	}
	for k := 0; k < len(items); k += 2 {
		in, out := strings.TrimPrefix(items[k].ID, "in"), strings.TrimPrefix(items[k+1].ID, "out")
		if in != out || !strings.HasPrefix(items[k].ID, "in") {
			t.Fatalf("items %d, %d: %s, %s: a response's block was split", k, k+1, items[k].ID, items[k+1].ID)
		}
	}
	wantConvCheck(t, l, 1)
}

// TestLedger_Version12File: a version 12 file gains the conversations'
// buckets.
func TestLedger_Version12File(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 12, bConversations, bConvItems, bConvItemIDs)
	l = openCompat(t, path)
	defer l.Close()
	_ = l.view(func(tx *bolt.Tx) error {
		if v, _ := schemaVersion(tx); v != SchemaVersion || tx.Bucket(bConversations) == nil || tx.Bucket(bConvItems) == nil || tx.Bucket(bConvItemIDs) == nil {
			t.Errorf("version %d, buckets missing", v)
		}
		return nil
	})
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_x", TenantID: ten.ID, Created: time.Now()}, []nozzle.ConversationItem{convItem("a", "b")}); err != nil {
		t.Fatal(err)
	}
	wantConvCheck(t, l, 1)
}

func convBytesOf(items ...nozzle.ConversationItem) int64 {
	var n int64
	for _, it := range items {
		n += convItemSize(encodeConvItem(it))
	}
	return n
}

func wantConvBytes(t *testing.T, l *Ledger, tenantID string, want int64, when string) {
	t.Helper()
	if got, err := l.ConversationBytes(context.Background(), tenantID); err != nil || got != want {
		t.Fatalf("%s: conversation bytes %d, %v; want %d", when, got, err, want)
	}
}

// TestConversations_Bytes: a tenant's bytes of conversation items follow
// its creates, adds, responses' appends (once filed) and deletions, and
// outlast a reopen; another tenant's are its own.
func TestConversations_Bytes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path})
	ten := heldTenant(t, l)
	other := &nozzle.Tenant{Name: "other"}
	if err := l.CreateTenant(ctx, other); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	wantConvBytes(t, l, ten.ID, 0, "new")
	a, b, c := convItem("a", "one"), convItem("b", "two two"), convItem("c", "three three three")
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_1", TenantID: ten.ID, Created: at}, []nozzle.ConversationItem{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_2", TenantID: ten.ID, Created: at}, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_o", TenantID: other.ID, Created: at}, []nozzle.ConversationItem{c}); err != nil {
		t.Fatal(err)
	}
	wantConvBytes(t, l, ten.ID, convBytesOf(a, b), "created")
	wantConvBytes(t, l, other.ID, convBytesOf(c), "other tenant")
	// An item the conversation holds already adds nothing.
	if err := l.AddConversationItems(ctx, ten.ID, "conv_2", []nozzle.ConversationItem{c, a}); err != nil {
		t.Fatal(err)
	}
	if err := l.AddConversationItems(ctx, ten.ID, "conv_2", []nozzle.ConversationItem{c}); err != nil {
		t.Fatal(err)
	}
	wantConvBytes(t, l, ten.ID, convBytesOf(a, b, c, a), "added")
	ev := convEvent(ten.ID, "req1", "conv_1", at, "in1", "out1")
	if _, err := l.RecordUsage(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := l.fileJournalNow(); err != nil {
		t.Fatal(err)
	}
	appended := convBytesOf(ev.ConversationAppend.Items...)
	wantConvBytes(t, l, ten.ID, convBytesOf(a, b, c, a)+appended, "appended by a response")
	wantConvCheck(t, l, 3)

	// Journaled, not filed, at a crash: filed on open, counted once.
	ev2 := convEvent(ten.ID, "req2", "conv_2", at, "in2")
	if _, err := l.RecordUsage(ctx, ev2); err != nil {
		t.Fatal(err)
	}
	crash(l)
	l = openHeld(t, Options{Path: path})
	total := convBytesOf(a, b, c, a) + appended + convBytesOf(ev2.ConversationAppend.Items...)
	wantConvBytes(t, l, ten.ID, total, "after a crash")

	if _, err := l.DeleteConversationItem(ctx, ten.ID, "conv_1", "b"); err != nil {
		t.Fatal(err)
	}
	total -= convBytesOf(b)
	wantConvBytes(t, l, ten.ID, total, "item deleted")
	if err := l.DeleteConversation(ctx, ten.ID, "conv_2"); err != nil {
		t.Fatal(err)
	}
	total -= convBytesOf(c, a) + convBytesOf(ev2.ConversationAppend.Items...)
	wantConvBytes(t, l, ten.ID, total, "conversation deleted")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openHeld(t, Options{Path: path})
	wantConvBytes(t, l, ten.ID, total, "reopened")
	wantConvCheck(t, l, 2)
	if err := l.DeleteConversation(ctx, ten.ID, "conv_1"); err != nil {
		t.Fatal(err)
	}
	wantConvBytes(t, l, ten.ID, 0, "all deleted")
	_ = l.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bConvBytes).Get([]byte(ten.ID)); v != nil {
			t.Errorf("conversation_storage keeps %x for a tenant with no items", v)
		}
		return nil
	})
	wantConvBytes(t, l, other.ID, convBytesOf(c), "other tenant at the end")
	wantConvCheck(t, l, 1)

	// Check catches a wrong counter.
	if err := l.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bConvBytes).Put([]byte(other.ID), binary.AppendUvarint(nil, 7))
	}); err != nil {
		t.Fatal(err)
	}
	res, err := l.Check(ctx)
	if err == nil || len(res.Problems) == 0 || !strings.Contains(strings.Join(res.Problems, "\n"), "conversation_storage") {
		t.Fatalf("check of a wrong counter: %+v, %v", res, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLedger_Version14File: a version 14 file's conversation items are
// counted into conversation_storage on open.
func TestLedger_Version14File(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	at := time.Now().UTC()
	items := []nozzle.ConversationItem{convItem("a", "1"), convItem("b", "22")}
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_x", TenantID: ten.ID, Created: at}, items); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateConversation(ctx, &nozzle.Conversation{ID: "conv_y", TenantID: ten.ID, Created: at}, items[1:]); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 14, bConvBytes)
	l = openCompat(t, path)
	defer l.Close()
	_ = l.view(func(tx *bolt.Tx) error {
		if v, _ := schemaVersion(tx); v != SchemaVersion || tx.Bucket(bConvBytes) == nil {
			t.Errorf("version %d, bucket missing", v)
		}
		return nil
	})
	wantConvBytes(t, l, ten.ID, convBytesOf(items[0], items[1], items[1]), "migrated")
	wantConvCheck(t, l, 2)
}
