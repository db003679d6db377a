package billing

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Files and batches are kept per tenant: another tenant's are not found,
// lists page newest first (files: either order, by purpose), and both
// survive a reopen; OpenBatches lists the ones not final.
func TestBatchStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Unix(1700000000, 0).UTC()
	for i := range 3 {
		f := &nozzle.File{ID: fmt.Sprintf("file-%d", i), TenantID: "ten_a", Filename: "in.jsonl", Purpose: nozzle.FilePurposeBatch, Bytes: 10, Created: t0}
		if i == 2 {
			f.Purpose = nozzle.FilePurposeBatchOutput
		}
		if err := l.CreateFile(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.CreateFile(ctx, &nozzle.File{ID: "file-0", TenantID: "ten_a", Purpose: "batch"}); nozzle.ErrorCode(err) != nozzle.ECONFLICT {
		t.Errorf("duplicate file: %v", err)
	}
	if _, err := l.File(ctx, "ten_b", "file-0"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("another tenant's file: %v", err)
	}
	files, more, err := l.Files(ctx, "ten_a", nozzle.FileQuery{Limit: 1})
	if err != nil || len(files) != 1 || files[0].ID != "file-2" || !more {
		t.Errorf("newest file: %v %v %v", files, more, err)
	}
	files, more, err = l.Files(ctx, "ten_a", nozzle.FileQuery{Limit: 5, After: "file-0", Ascending: true, Purpose: nozzle.FilePurposeBatch})
	if err != nil || len(files) != 1 || files[0].ID != "file-1" || more {
		t.Errorf("after file-0: %v %v %v", files, more, err)
	}
	if _, _, err := l.Files(ctx, "ten_b", nozzle.FileQuery{After: "file-0"}); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Errorf("another tenant's cursor: %v", err)
	}
	if n, err := l.FileBytes(ctx, "ten_a"); n != 30 || err != nil {
		t.Errorf("bytes %d %v", n, err)
	}
	if err := l.DeleteFile(ctx, "ten_b", "file-1"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("another tenant deleted: %v", err)
	}
	if err := l.DeleteFile(ctx, "ten_a", "file-1"); err != nil {
		t.Fatal(err)
	}
	for i, st := range []string{nozzle.BatchCompleted, nozzle.BatchInProgress, nozzle.BatchValidating} {
		b := &nozzle.Batch{ID: fmt.Sprintf("batch_%d", i), TenantID: "ten_a", KeyID: "key_1", Endpoint: "/v1/completions", InputFileID: "file-0",
			CompletionWindow: "24h", Status: st, Created: t0, ExpiresAt: t0.Add(nozzle.BatchWindow), Metadata: map[string]string{"k": "v"}}
		if err := l.CreateBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	b, err := l.Batch(ctx, "ten_a", "batch_1")
	if err != nil || b.Status != nozzle.BatchInProgress || b.Metadata["k"] != "v" || !b.ExpiresAt.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("batch %+v %v", b, err)
	}
	b.Completed, b.Usage.InputTokens = 5, 7
	if err := l.UpdateBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Batch(ctx, "ten_b", "batch_1"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("another tenant's batch: %v", err)
	}
	if err := l.UpdateBatch(ctx, &nozzle.Batch{ID: "batch_1", TenantID: "ten_b"}); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("another tenant's update: %v", err)
	}
	l.Close()

	l, err = Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	list, more, err := l.Batches(ctx, "ten_a", "batch_2", 1)
	if err != nil || len(list) != 1 || list[0].ID != "batch_1" || list[0].Completed != 5 || list[0].Usage.InputTokens != 7 || !more {
		t.Errorf("batches after batch_2: %+v %v %v", list, more, err)
	}
	open, err := l.OpenBatches(ctx)
	if err != nil || len(open) != 2 || open[0].ID != "batch_1" || open[1].ID != "batch_2" {
		t.Errorf("open batches %+v %v", open, err)
	}
	if _, err := l.File(ctx, "ten_a", "file-1"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("deleted file: %v", err)
	}
}

// Check verifies files' and batches' records: a record filed under
// another id is a problem.
func TestBatchStore_Check(t *testing.T) {
	l, err := Open(Options{Path: filepath.Join(t.TempDir(), "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if err := l.CreateFile(ctx, &nozzle.File{ID: "file-1", TenantID: "ten_a", Purpose: "batch", Bytes: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateBatch(ctx, &nozzle.Batch{ID: "batch_1", TenantID: "ten_a", Status: nozzle.BatchInProgress}); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Check(ctx); err != nil || len(res.Problems) != 0 {
		t.Fatalf("check: %v %v", res, err)
	}
	v, _ := encodeJSONRecord(&nozzle.File{ID: "file-2", TenantID: "ten_a"})
	if err := l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bFiles).Put(fileKey("ten_b", "file-2"), v) }); err != nil {
		t.Fatal(err)
	}
	if res, _ := l.Check(ctx); len(res.Problems) != 1 {
		t.Errorf("check of a misfiled file: %v", res.Problems)
	}
}

// A batch record written before batches had a model and saved progress
// (format 1, without "model" and "progress") still reads, with neither,
// and one with them keeps them: the record's format is unchanged.
func TestBatchRecord_ModelAndProgressCompat(t *testing.T) {
	l, err := Open(Options{Path: filepath.Join(t.TempDir(), "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	old := []byte("\x01" + `{"id":"batch_old","tenant_id":"ten_a","key_id":"key_1","endpoint":"/v1/chat/completions","input_file_id":"file-0",` +
		`"completion_window":"24h","status":"in_progress","created":"2026-11-01T10:00:00Z","expires_at":"2026-11-02T10:00:00Z",` +
		`"in_progress_at":"2026-11-01T10:00:01Z","total":3,"completed":1,"failed":0,"usage":{"input_tokens":4,"cached_tokens":0,"output_tokens":5}}`)
	if err := l.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bBatches).Put(fileKey("ten_a", "batch_old"), old) }); err != nil {
		t.Fatal(err)
	}
	b, err := l.Batch(ctx, "ten_a", "batch_old")
	if err != nil || b.Model != "" || b.Progress != nil || b.Status != nozzle.BatchInProgress || b.Total != 3 || b.Completed != 1 || b.Usage.OutputTokens != 5 {
		t.Fatalf("old batch %+v %v", b, err)
	}
	if open, err := l.OpenBatches(ctx); err != nil || len(open) != 1 || open[0].Progress != nil {
		t.Fatalf("open batches %+v %v", open, err)
	}
	b.Model = "base"
	b.Progress = &nozzle.BatchProgress{Line: 2, Offset: 260, OutBytes: 500, ErrBytes: 120}
	if err := l.UpdateBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := l.Batch(ctx, "ten_a", "batch_old")
	if err != nil || got.Model != "base" || got.Progress == nil || *got.Progress != *b.Progress {
		t.Fatalf("batch with progress %+v %v", got, err)
	}
	if res, err := l.Check(ctx); err != nil || len(res.Problems) > 0 {
		t.Errorf("check: %+v %v", res, err)
	}
}

// Each tenant's file bytes (file_storage) follow its files as they are
// recorded and deleted, a version 17 file has them counted on open, and
// Check catches a wrong counter.
func TestFileBytes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	want := func(l *Ledger, tenantID string, n int64, when string) {
		t.Helper()
		if got, err := l.FileBytes(ctx, tenantID); err != nil || got != n {
			t.Errorf("%s: %s's file bytes %d, %v, want %d", when, tenantID, got, err, n)
		}
	}
	t0 := time.Unix(1700000000, 0).UTC()
	for i, f := range []struct {
		tenant string
		bytes  int64
	}{{"ten_a", 10}, {"ten_a", 32}, {"ten_b", 7}, {"ten_a", 0}} {
		if err := l.CreateFile(ctx, &nozzle.File{ID: fmt.Sprintf("file-%d", i), TenantID: f.tenant, Filename: "in.jsonl", Purpose: nozzle.FilePurposeBatch, Bytes: f.bytes, Created: t0}); err != nil {
			t.Fatal(err)
		}
	}
	want(l, "ten_a", 42, "recorded")
	want(l, "ten_b", 7, "recorded")
	want(l, "ten_c", 0, "no files")
	if err := l.DeleteFile(ctx, "ten_a", "file-1"); err != nil {
		t.Fatal(err)
	}
	want(l, "ten_a", 10, "one deleted")
	if err := l.DeleteFile(ctx, "ten_a", "file-1"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("deleted twice: %v", err)
	}
	want(l, "ten_a", 10, "deleted twice")
	if res, err := l.Check(ctx); err != nil || len(res.Problems) > 0 {
		t.Fatalf("check: %+v, %v", res, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	asVersion(t, path, 17, bFileBytes)
	l = openCompat(t, path)
	_ = l.view(func(tx *bolt.Tx) error {
		if v, _ := schemaVersion(tx); v != SchemaVersion || tx.Bucket(bFileBytes) == nil {
			t.Errorf("version %d, bucket missing", v)
		}
		return nil
	})
	want(l, "ten_a", 10, "migrated")
	want(l, "ten_b", 7, "migrated")
	if err := l.db.Update(func(tx *bolt.Tx) error { return addTenantBytes(tx, bFileBytes, "ten_b", 1) }); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Check(ctx); err == nil || !strings.Contains(strings.Join(res.Problems, "\n"), "file_storage") {
		t.Fatalf("check of a wrong counter: %+v, %v", res, err)
	}
}
