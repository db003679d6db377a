package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle/runtime"
)

// TestCreated_FromModel: /v1/models' "created" is the model's own time (its
// config.json's, from the model folder), the same for runtimes started at
// different times; only a model without one reports when it was loaded.
func TestCreated_FromModel(t *testing.T) {
	ctx := context.Background()
	made := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	info := fakeModel
	info.CreatedAt = made
	for _, start := range []time.Time{time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC), time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)} {
		rt := startFakeModel(t, runtime.Options{}, 64, start, info)
		got, err := rt.Info(ctx)
		closeRT(t, rt)
		if err != nil || !got.CreatedAt.Equal(made) {
			t.Errorf("started at %v: created %v, %v; want %v", start, got.CreatedAt, err, made)
		}
	}
	start := time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)
	rt := startFakeModel(t, runtime.Options{}, 64, start, fakeModel) // no time of its own
	defer closeRT(t, rt)
	if got, _ := rt.Info(ctx); !got.CreatedAt.Equal(start) {
		t.Errorf("created %v, want the start %v", got.CreatedAt, start)
	}
}

// TestCreated_SameFolder: two runtimes opened on one model folder, one
// after the other as across a restart, report the same created: its
// config.json's modification time.
func TestCreated_SameFolder(t *testing.T) {
	modelDir, _ := demo(t)
	ctx := context.Background()
	st, err := os.Stat(filepath.Join(modelDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := st.ModTime().Truncate(time.Second)
	var got []time.Time
	for range 2 {
		rt := openOnStore(t, runtime.Options{}, modelDir, demoStore(t, modelDir))
		info, err := rt.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, info.CreatedAt)
		if err := rt.Close(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // a start time would differ
	}
	if !got[0].Equal(want) || !got[1].Equal(want) {
		t.Errorf("created %v and %v, want config.json's modification time %v", got[0], got[1], want)
	}
}
