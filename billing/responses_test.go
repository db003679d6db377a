package billing

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// respEvent is a completed request's usage event carrying a stored
// response id that continues prev.
func respEvent(tenantID, reqID, id, prev string, at time.Time) *nozzle.UsageEvent {
	body := `{"id":"` + id + `","object":"response","output":[{"id":"msg_` + id + `","type":"message","role":"assistant","content":[{"type":"output_text","text":"answer ` + id + `"}]}]}`
	input := `[{"id":"in_` + id + `","type":"message","role":"user","content":[{"type":"input_text","text":"question ` + id + `"}]}]`
	return &nozzle.UsageEvent{RequestID: reqID, TenantID: tenantID, Time: at, PromptTokens: 10, CompletionTokens: 2,
		StoredResponse: &nozzle.StoredResponse{ID: id, TenantID: tenantID, PreviousID: prev, Created: at, Body: []byte(body), Input: []byte(input)}}
}

func itemIDs(items []json.RawMessage) string {
	var ids []string
	for _, it := range items {
		var x struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(it, &x)
		ids = append(ids, x.ID)
	}
	return strings.Join(ids, ",")
}

// TestResponses_StoredWithEvent: a stored response is journaled in the
// event's record and filed in its transaction: after a crash before
// filing both come back, and an event whose response is invalid records
// neither. A duplicate event stores nothing again.
func TestResponses_StoredWithEvent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openHeld(t, Options{Path: path})
	ten := heldTenant(t, l)
	at := time.Now().UTC()
	if _, err := l.RecordUsage(ctx, respEvent(ten.ID, "req1", "resp_1", "", at)); err != nil {
		t.Fatal(err)
	}
	bad := respEvent(ten.ID, "req2", "resp_2", "", at)
	bad.StoredResponse.Body = []byte(`["not an object"]`)
	if _, err := l.RecordUsage(ctx, bad); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("invalid stored response: %v", err)
	}
	other := respEvent(ten.ID, "req3", "resp_3", "", at)
	other.StoredResponse.TenantID = "t_other"
	if _, err := l.RecordUsage(ctx, other); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Fatalf("another tenant's stored response: %v", err)
	}
	crash(l) // nothing filed: the journal holds the record

	l = openHeld(t, Options{Path: path})
	if _, err := l.Usage(ctx, "req1"); err != nil {
		t.Fatalf("event after the crash: %v", err)
	}
	sr, err := l.StoredResponse(ctx, ten.ID, "resp_1")
	if err != nil || !strings.Contains(string(sr.Body), "answer resp_1") || sr.Created.UnixNano() != at.UnixNano() {
		t.Fatalf("response after the crash: %+v, %v", sr, err)
	}
	for _, id := range []string{"req2", "req3"} {
		if _, err := l.Usage(ctx, id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("event %s: %v", id, err)
		}
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_2"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("resp_2: %v", err)
	}
	// The same request again: a duplicate, its (other) response not stored.
	again := respEvent(ten.ID, "req1", "resp_1b", "", at)
	if dup, err := l.RecordUsage(ctx, again); err != nil || !dup {
		t.Fatalf("duplicate: %v, %v", dup, err)
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_1b"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("a duplicate's response was stored: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openHeld(t, Options{Path: path})
	defer l.Close()
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_1"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
	n := 0
	_ = l.view(func(tx *bolt.Tx) error { n = tx.Bucket(bResponses).Stats().KeyN; return nil })
	if n != 1 {
		t.Errorf("%d responses stored, want 1", n)
	}
}

// TestResponses_ChainAndTenants: a conversation is read back through the
// responses it continued; another tenant finds none of them; deleting a
// continued response hides it but keeps the conversation of those that
// continue it, and removing the last of those removes it.
func TestResponses_ChainAndTenants(t *testing.T) {
	ctx := context.Background()
	l := openHeld(t, Options{Path: filepath.Join(t.TempDir(), "ledger.db")})
	defer l.Close()
	ten := heldTenant(t, l)
	other := &nozzle.Tenant{Name: "globex"}
	if err := l.CreateTenant(ctx, other); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	for i, prev := range []string{"", "resp_a", "resp_b"} {
		id := "resp_" + string(rune('a'+i))
		if _, err := l.RecordUsage(ctx, respEvent(ten.ID, "req_"+id, id, prev, at.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	sr, in, out, err := l.ResponseItems(ctx, ten.ID, "resp_c")
	if err != nil || sr.PreviousID != "resp_b" {
		t.Fatal(sr, err)
	}
	if got, want := itemIDs(in), "in_resp_a,msg_resp_a,in_resp_b,msg_resp_b,in_resp_c"; got != want {
		t.Errorf("input items %s, want %s", got, want)
	}
	if itemIDs(out) != "msg_resp_c" {
		t.Errorf("output items %s", itemIDs(out))
	}
	for _, id := range []string{"resp_a", "resp_c", "nope"} {
		if _, err := l.StoredResponse(ctx, other.ID, id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("other tenant reads %s: %v", id, err)
		}
		if _, _, _, err := l.ResponseItems(ctx, other.ID, id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("other tenant lists %s: %v", id, err)
		}
		if err := l.DeleteResponse(ctx, other.ID, id); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("other tenant deletes %s: %v", id, err)
		}
	}
	if res, err := l.Check(ctx); err != nil || res.Responses != 3 || len(res.Problems) > 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
	size := func(id string) int64 {
		ev := respEvent(ten.ID, "", id, "", at)
		return int64(len(ev.StoredResponse.Body) + len(ev.StoredResponse.Input))
	}
	all := size("resp_a") + size("resp_b") + size("resp_c")
	if n, err := l.StoredResponseBytes(ctx, ten.ID); err != nil || n != all {
		t.Errorf("stored bytes %d, %v; want %d", n, err, all)
	}
	if n, err := l.StoredResponseBytes(ctx, other.ID); err != nil || n != 0 {
		t.Errorf("other tenant's stored bytes %d, %v", n, err)
	}
	// resp_b is continued by resp_c: hidden, its items kept for resp_c.
	if err := l.DeleteResponse(ctx, ten.ID, "resp_b"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_b"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("deleted resp_b: %v", err)
	}
	if err := l.DeleteResponse(ctx, ten.ID, "resp_b"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("deleted twice: %v", err)
	}
	if _, in, _, err := l.ResponseItems(ctx, ten.ID, "resp_c"); err != nil || itemIDs(in) != "in_resp_a,msg_resp_a,in_resp_b,msg_resp_b,in_resp_c" {
		t.Errorf("resp_c after deleting resp_b: %s, %v", itemIDs(in), err)
	}
	// resp_c goes, and with it the deleted resp_b; resp_a stays.
	if err := l.DeleteResponse(ctx, ten.ID, "resp_c"); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	_ = l.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bResponses).ForEach(func(k, _ []byte) error { keys[string(k[1+k[0]:])] = true; return nil })
	})
	if len(keys) != 1 || !keys["resp_a"] {
		t.Errorf("left %v, want resp_a", keys)
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_a"); err != nil {
		t.Errorf("resp_a: %v", err)
	}
	if res, err := l.Check(ctx); err != nil || res.Responses != 1 || len(res.Problems) > 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
	if n, err := l.StoredResponseBytes(ctx, ten.ID); err != nil || n != size("resp_a") {
		t.Errorf("stored bytes after deletes %d, %v; want %d", n, err, size("resp_a"))
	}
}

// TestResponses_Retention: responses past the retention are unreadable at
// once and purged (a continued one with the last response continuing it).
func TestResponses_Retention(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	clk := now
	l := openHeld(t, Options{Path: filepath.Join(t.TempDir(), "ledger.db"), Now: func() time.Time { return clk }})
	defer l.Close()
	l.retention = 30 * 24 * time.Hour // as Options.ResponseRetention, without its background purge
	ten := heldTenant(t, l)
	day := 24 * time.Hour
	evs := []*nozzle.UsageEvent{
		respEvent(ten.ID, "r1", "resp_old", "", now.Add(-40*day)),
		respEvent(ten.ID, "r2", "resp_mid", "resp_old", now.Add(-35*day)),
		respEvent(ten.ID, "r3", "resp_new", "resp_mid", now.Add(-2*day)),
		respEvent(ten.ID, "r4", "resp_alone", "", now.Add(-31*day)),
	}
	for _, ev := range evs {
		if _, err := l.RecordUsage(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_alone"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("expired response read: %v", err)
	}
	n, err := l.PurgeResponses(ctx, now.Add(-30*day))
	if err != nil || n != 1 {
		t.Fatalf("purged %d, %v; want resp_alone only", n, err)
	}
	if _, in, _, err := l.ResponseItems(ctx, ten.ID, "resp_new"); err != nil || itemIDs(in) != "in_resp_old,msg_resp_old,in_resp_mid,msg_resp_mid,in_resp_new" {
		t.Errorf("resp_new's conversation: %s, %v", itemIDs(in), err)
	}
	if res, err := l.Check(ctx); err != nil || res.Responses != 3 || len(res.Problems) > 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
	// Once resp_new expires too, the whole conversation goes.
	clk = now.Add(29 * day)
	if n, err := l.PurgeResponses(ctx, clk.Add(-30*day)); err != nil || n != 1 {
		t.Fatalf("purged %d, %v", n, err)
	}
	var left, times int
	_ = l.view(func(tx *bolt.Tx) error {
		left, times = tx.Bucket(bResponses).Stats().KeyN, tx.Bucket(bResponseTimes).Stats().KeyN
		return nil
	})
	if left != 0 || times != 0 {
		t.Errorf("left %d responses, %d times", left, times)
	}
	if n, err := l.StoredResponseBytes(ctx, ten.ID); err != nil || n != 0 {
		t.Errorf("stored bytes after the purge %d, %v", n, err)
	}
}

// TestLedger_Version11File: a version 11 file (no stored responses) opens
// at version 12 with the buckets, and stores responses.
func TestLedger_Version11File(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	if _, err := l.RecordUsage(ctx, &nozzle.UsageEvent{RequestID: "old", TenantID: ten.ID, Time: at, PromptTokens: 10}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 11, bResponses, bResponseTimes, bResponseBytes)

	l = openCompat(t, path)
	defer l.Close()
	_ = l.view(func(tx *bolt.Tx) error {
		if v, _ := schemaVersion(tx); v != SchemaVersion || tx.Bucket(bResponses) == nil || tx.Bucket(bResponseTimes) == nil || tx.Bucket(bResponseBytes) == nil {
			t.Errorf("version %d, buckets %v %v %v", v, tx.Bucket(bResponses) != nil, tx.Bucket(bResponseTimes) != nil, tx.Bucket(bResponseBytes) != nil)
		}
		return nil
	})
	if _, err := l.RecordUsage(ctx, respEvent(ten.ID, "new", "resp_x", "", at)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StoredResponse(ctx, ten.ID, "resp_x"); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Check(ctx); err != nil || res.Events != 2 || res.Responses != 1 || len(res.Problems) > 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
}
