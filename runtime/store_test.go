package runtime_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

var storeBase = model.Spec{VocabSize: 64, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2}.Info()

func writeAdapter(t testing.TB, rank int, seed uint64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "upload")
	if err := model.WriteRandomAdapter(dir, model.AdapterSpec{Base: storeBase, Rank: rank, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newStore(t testing.TB) *runtime.Store {
	return runtime.NewStore(filepath.Join(t.TempDir(), "adapters"), func(dir string) (*nozzle.AdapterManifest, error) {
		return model.ValidateAdapter(dir, storeBase, 64)
	})
}

func TestStore_Import(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	src := writeAdapter(t, 8, 1)
	want, _, err := model.ContentAddress(src)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Import(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if m.SHA256 != want || m.Rank != 8 || m.SizeBytes == 0 {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("source folder not consumed: %v", err)
	}
	// The same files again: deduplicated.
	m2, err := s.Import(ctx, writeAdapter(t, 8, 1))
	if err != nil || m2.SHA256 != m.SHA256 {
		t.Fatalf("dedup: %+v %v", m2, err)
	}
	ents, _ := os.ReadDir(s.Dir())
	if len(ents) != 1 {
		t.Errorf("store holds %d entries, want 1", len(ents))
	}
	// Stored lists the addresses, not the store's own temporary folders.
	os.Mkdir(filepath.Join(s.Dir(), ".import-123"), 0o700)
	if got, err := s.Stored(ctx); err != nil || len(got) != 1 || got[0] != m.SHA256 {
		t.Errorf("Stored = %v, %v", got, err)
	}
	os.Remove(filepath.Join(s.Dir(), ".import-123"))
	rc, n, err := s.Open(ctx, m.SHA256, nozzle.AdapterWeightsFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if int64(len(b)) != n || n == 0 {
		t.Errorf("read %d bytes of %d", len(b), n)
	}
	dir, err := s.AdapterDir(ctx, m.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := model.ContentAddress(dir); got != m.SHA256 {
		t.Errorf("stored files hash to %s", got)
	}
	if err := s.Remove(ctx, m.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(ctx, m.SHA256, nozzle.AdapterConfigFile); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("after remove: %v", err)
	}
	if err := s.Remove(ctx, m.SHA256); err != nil {
		t.Errorf("second remove: %v", err)
	}
	ents, _ = os.ReadDir(s.Dir())
	if len(ents) != 0 {
		t.Errorf("store holds %d entries after remove", len(ents))
	}
}

func TestStore_ImportInvalid(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		break_ func(dir string)
	}{
		{"NoConfig", func(dir string) { os.Remove(filepath.Join(dir, nozzle.AdapterConfigFile)) }},
		{"NoWeights", func(dir string) { os.Remove(filepath.Join(dir, nozzle.AdapterWeightsFile)) }},
		{"BadConfig", func(dir string) { os.WriteFile(filepath.Join(dir, nozzle.AdapterConfigFile), []byte("{"), 0o644) }},
		{"TruncatedWeights", func(dir string) { os.Truncate(filepath.Join(dir, nozzle.AdapterWeightsFile), 100) }},
		{"Symlink", func(dir string) {
			p := filepath.Join(dir, nozzle.AdapterWeightsFile)
			os.Rename(p, p+".real")
			os.Symlink(p+".real", p)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			src := writeAdapter(t, 8, 2)
			tt.break_(src)
			_, err := s.Import(ctx, src)
			if nozzle.ErrorCode(err) != nozzle.EINVALID {
				t.Fatalf("got %v, want EINVALID", err)
			}
			if ents, _ := os.ReadDir(s.Dir()); len(ents) != 0 {
				t.Errorf("something was stored: %v", ents)
			}
			if _, err := os.Stat(src); !os.IsNotExist(err) {
				t.Errorf("source not consumed")
			}
		})
	}
	s := newStore(t)
	for _, sha := range []string{"", "../etc", fakeSHA(1)} {
		if _, _, err := s.Open(ctx, sha, nozzle.AdapterConfigFile); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			t.Errorf("open %q: %v", sha, err)
		}
	}
	if _, _, err := s.Open(ctx, fakeSHA(1), "../../passwd"); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Errorf("open bad name: %v", err)
	}
}
