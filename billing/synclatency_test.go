package billing

import (
	"os"
	"testing"
)

func TestSyncLatency(t *testing.T) {
	dir := t.TempDir()
	d, err := SyncLatency(dir, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != 20 {
		t.Fatalf("%d times, want 20", len(d))
	}
	for i := range d {
		if d[i] <= 0 || (i > 0 && d[i] < d[i-1]) {
			t.Fatalf("times not positive and ascending: %v", d)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left %d files behind", len(left))
	}
	if _, err := SyncLatency(dir+"/missing", 1); err == nil {
		t.Error("no error for a missing folder")
	}
}
