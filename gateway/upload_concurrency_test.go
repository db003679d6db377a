package gateway_test

// Concurrent adapter uploads through the real HTTP server, over the
// runtime's real content-addressed Store (with a light validator for the
// test's small "SAFE" weights files) and the world's adapter records.
// After every burst: no record without complete files, no stored files
// without a record, nothing left in the staging folder, error answers
// OpenAI-shaped with a fitting 4xx, and the server still serving.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
	"github.com/nozzle-ai/nozzle/runtime"
)

// slowValidate accepts what the world's mock store accepts: a LoRA config
// with a rank and targets, and a weights file starting with "SAFE".
func slowValidate(dir string) (*nozzle.AdapterManifest, error) {
	cfgB, err := os.ReadFile(filepath.Join(dir, nozzle.AdapterConfigFile))
	if err != nil {
		return nil, err
	}
	var cfg struct {
		PeftType string   `json:"peft_type"`
		R        int      `json:"r"`
		Alpha    float64  `json:"lora_alpha"`
		Targets  []string `json:"target_modules"`
	}
	if err := json.Unmarshal(cfgB, &cfg); err != nil {
		return nil, fmt.Errorf("adapter_config.json: %v", err)
	}
	if cfg.PeftType != "LORA" || cfg.R <= 0 || len(cfg.Targets) == 0 {
		return nil, fmt.Errorf("adapter_config.json: not a LoRA config")
	}
	f, err := os.Open(filepath.Join(dir, nozzle.AdapterWeightsFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var head [4]byte
	if _, err := io.ReadFull(f, head[:]); err != nil || string(head[:]) != "SAFE" {
		return nil, fmt.Errorf("adapter_model.safetensors: not a safetensors file")
	}
	return &nozzle.AdapterManifest{Rank: cfg.R, Alpha: cfg.Alpha, TargetModules: cfg.Targets, Layers: 2}, nil
}

// storeAddress is the Store's content address of a config and weights.
func storeAddress(cfg, weights []byte) string {
	h := sha256.New()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(cfg)))
	h.Write(n[:])
	h.Write(cfg)
	h.Write(weights)
	return hex.EncodeToString(h.Sum(nil))
}

type racyStore struct {
	*runtime.Store
	dir string
}

// withRealStore puts a runtime.Store behind the gateway, its imports
// delayed by a random few milliseconds to widen the races.
func withRealStore(st *racyStore) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		st.dir = filepath.Join(f.uploadDir+"-store", "adapters")
		st.Store = runtime.NewStore(st.dir, slowValidate)
		var mu sync.Mutex
		rng := rand.New(rand.NewPCG(1, 1))
		jitter := func() time.Duration {
			mu.Lock()
			defer mu.Unlock()
			return time.Duration(rng.IntN(4000)) * time.Microsecond
		}
		d.Store = &mock.AdapterStore{
			ImportFn: func(ctx context.Context, dir string) (*nozzle.AdapterManifest, error) {
				time.Sleep(jitter())
				m, err := st.Store.Import(ctx, dir)
				time.Sleep(jitter())
				return m, err
			},
			OpenFn: st.Store.Open,
			RemoveFn: func(ctx context.Context, sha string) error {
				time.Sleep(jitter())
				return st.Store.Remove(ctx, sha)
			},
			StoredFn: st.Store.Stored,
		}
	}
}

func newUploadFixture(t *testing.T, limit int64) (*fixture, *racyStore, string) {
	st := &racyStore{}
	// many uploads of one tenant at once: the races under test
	opts := []option{withRealStore(st), withConfig(func(c *gateway.Config) { c.TenantUploads = 64 })}
	if limit > 0 {
		opts = append(opts, withConfig(func(c *gateway.Config) { c.UploadLimit = limit }))
	}
	f := newFixture(t, opts...)
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(st.dir)) })
	return f, st, f.serve(t)
}

type upResult struct {
	status int
	body   string
	err    error
}

func httpUpload(t testing.TB, url, key, name string, cfg, weights []byte, chunked bool) upResult {
	ct, body := multipartBody(t, part{"name", "", []byte(name)}, part{nozzle.AdapterConfigFile, "adapter_config.json", cfg},
		part{nozzle.AdapterWeightsFile, "adapter_model.safetensors", weights})
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // hides the length: sent chunked
	}
	req, err := http.NewRequest(http.MethodPost, url+"/v1/adapters", r)
	if err != nil {
		return upResult{err: err}
	}
	req.Header.Set("Content-Type", ct)
	return send(req, key)
}

// send sends req with the bearer key and reads its answer.
func send(req *http.Request, key string) upResult {
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return upResult{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return upResult{status: resp.StatusCode, body: string(b), err: err}
}

func httpDo(url, method, path, key, body string) upResult {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url+path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return send(req, key)
}

// checkOpenAIError checks an error answer: status, OpenAI shape, type and
// code (when not empty).
func checkOpenAIError(t *testing.T, what string, r upResult, status int, typ, code string) {
	t.Helper()
	if r.err != nil {
		t.Errorf("%s: transport error %v, want %d", what, r.err, status)
		return
	}
	if r.status != status {
		t.Errorf("%s: status %d, want %d: %s", what, r.status, status, r.body)
		return
	}
	var e apiError
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error.Message == "" || e.Error.Type != typ {
		t.Errorf("%s: error body %q (%v), want type %q", what, r.body, err, typ)
		return
	}
	if code != "" && (e.Error.Code == nil || *e.Error.Code != code) {
		t.Errorf("%s: code %v, want %q: %s", what, e.Error.Code, code, r.body)
	}
}

func upSHA(t *testing.T, r upResult) string {
	t.Helper()
	var a adapterOut
	if err := json.Unmarshal([]byte(r.body), &a); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return a.SHA256
}

// checkConsistent: every record's files are complete in the store, every
// stored adapter has a record, no staging or temporary leftovers, and the
// server still lists adapters and serves a completion.
func checkConsistent(t *testing.T, f *fixture, st *racyStore, url string) map[string]string {
	t.Helper()
	ctx := context.Background()
	f.w.mu.Lock()
	records := map[string]string{} // tenant/name → sha
	refs := map[string]int{}
	for k, a := range f.w.adapters {
		records[k] = a.SHA256
		refs[a.SHA256]++
	}
	f.w.mu.Unlock()
	for k, sha := range records {
		if _, err := st.AdapterDir(ctx, sha); err != nil {
			t.Errorf("adapter %s (sha %.12s) has a record but no complete files: %v", k, sha, err)
		}
	}
	stored, err := st.Stored(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sha := range stored {
		if refs[sha] == 0 {
			t.Errorf("stored adapter %.12s has no record (orphaned files)", sha)
		}
	}
	ents, _ := os.ReadDir(st.dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("store leftover %s", e.Name())
		}
	}
	f.assertClean(t)
	if r := httpDo(url, http.MethodGet, "/v1/adapters", f.keyA, ""); r.err != nil || r.status != 200 {
		t.Errorf("list after burst: %d %v %s", r.status, r.err, r.body)
	}
	for k := range records {
		if name, ok := strings.CutPrefix(k, f.tenantA.ID+"/"); ok {
			if r := httpDo(url, http.MethodPost, "/v1/chat/completions", f.keyA, chatBody(name, "hi")); r.err != nil || r.status != 200 {
				t.Errorf("completion with %s after burst: %d %v %s", name, r.status, r.err, r.body)
			}
			break
		}
	}
	return records
}

func uploadWeights(seed, n int) []byte {
	w := make([]byte, n)
	copy(w, "SAFE")
	r := rand.New(rand.NewPCG(uint64(seed), 3))
	for i := 4; i < n; i++ {
		w[i] = byte(r.IntN(256))
	}
	return w
}

// TestUploadSameFileManyNames: the same files under eight names at
// once: every upload succeeds with the same address, one copy is stored.
func TestUploadSameFileManyNames(t *testing.T) {
	f, st, url := newUploadFixture(t, 0)
	for round := range 4 {
		w := uploadWeights(round, 3000)
		want := storeAddress(goodConfig, w)
		res := make([]upResult, 8)
		var wg sync.WaitGroup
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = httpUpload(t, url, f.keyA, fmt.Sprintf("same-%d-%d", round, i), goodConfig, w, i%2 == 1)
			}()
		}
		wg.Wait()
		for i, r := range res {
			if r.err != nil || r.status != 201 {
				t.Fatalf("round %d upload %d: %d %v %s", round, i, r.status, r.err, r.body)
			}
			if sha := upSHA(t, r); sha != want {
				t.Errorf("round %d upload %d: sha %s, want %s", round, i, sha, want)
			}
		}
		// Delete all but one, concurrently: the files stay for the last.
		var dwg sync.WaitGroup
		for i := 1; i < len(res); i++ {
			dwg.Add(1)
			go func() {
				defer dwg.Done()
				if r := httpDo(url, http.MethodDelete, fmt.Sprintf("/v1/adapters/same-%d-%d", round, i), f.keyA, ""); r.status != 200 {
					t.Errorf("delete: %d %s", r.status, r.body)
				}
			}()
		}
		dwg.Wait()
		checkConsistent(t, f, st, url)
	}
	stored, _ := st.Stored(context.Background())
	if len(stored) != 4 {
		t.Errorf("%d stored adapters, want 4", len(stored))
	}
}

// TestUploadSameNameDifferentFiles: six different adapters under one
// name at once: exactly one wins, the others get 409 adapter_exists, and
// the losers' files do not stay in the store.
func TestUploadSameNameDifferentFiles(t *testing.T) {
	f, st, url := newUploadFixture(t, 0)
	for round := range 8 {
		name := fmt.Sprintf("contested-%d", round)
		ws := make([][]byte, 6)
		res := make([]upResult, len(ws))
		var wg sync.WaitGroup
		for i := range ws {
			ws[i] = uploadWeights(100*round+i, 2000+i)
			wg.Add(1)
			go func() { defer wg.Done(); res[i] = httpUpload(t, url, f.keyA, name, goodConfig, ws[i], i%2 == 0) }()
		}
		wg.Wait()
		winner := -1
		for i, r := range res {
			if r.status == 201 {
				if winner >= 0 {
					t.Fatalf("round %d: uploads %d and %d both created %s", round, winner, i, name)
				}
				winner = i
				if sha := upSHA(t, r); sha != storeAddress(goodConfig, ws[i]) {
					t.Errorf("round %d: winner's sha %s", round, sha)
				}
				continue
			}
			checkOpenAIError(t, fmt.Sprintf("round %d loser %d", round, i), r, 409, "conflict_error", "adapter_exists")
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won", round)
		}
		recs := checkConsistent(t, f, st, url)
		if got := recs[f.tenantA.ID+"/"+name]; got != storeAddress(goodConfig, ws[winner]) {
			t.Errorf("round %d: record's sha %s, not the winner's", round, got)
		}
	}
}

// TestUploadRacesDelete: an upload of a name races a delete of the
// same name, with and without an adapter of that name before, with the
// same or other files: the answers and the final state are those of one
// of the two serial orders, and the store matches the records.
func TestUploadRacesDelete(t *testing.T) {
	f, st, url := newUploadFixture(t, 0)
	old := uploadWeights(1, 2500)
	outcomes := map[string]int{}
	defer func() { t.Logf("outcomes: %v", outcomes) }()
	for round := range 40 {
		name := fmt.Sprintf("racy-%d", round)
		pre := round%2 == 0
		w := uploadWeights(1000+round, 2600)
		if round%4 == 0 {
			w = old // the same files as the adapter being deleted
		}
		if pre {
			if r := httpUpload(t, url, f.keyA, name, goodConfig, old, false); r.status != 201 {
				t.Fatalf("pre-upload: %d %s", r.status, r.body)
			}
		}
		// Another tenant holds the old files too, sometimes: dedup across
		// tenants must survive the delete.
		if round%8 == 2 {
			if r := httpUpload(t, url, f.keyB, name, goodConfig, old, false); r.status != 201 {
				t.Fatalf("pre-upload b: %d %s", r.status, r.body)
			}
		}
		// Every fourth round with a pre-existing adapter uploads its files
		// under another name while it is deleted: the files must stay.
		twin := pre && round%4 == 2
		upName := name
		if twin {
			upName, w = name+"-twin", old
		}
		var up, del upResult
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); up = httpUpload(t, url, f.keyA, upName, goodConfig, w, round%3 == 0) }()
		go func() {
			defer wg.Done()
			time.Sleep([]time.Duration{0, time.Millisecond, 3 * time.Millisecond, 6 * time.Millisecond, 12 * time.Millisecond}[(round/2)%5])
			del = httpDo(url, http.MethodDelete, "/v1/adapters/"+name, f.keyA, "")
		}()
		wg.Wait()
		recs := checkConsistent(t, f, st, url)
		if twin {
			if up.status != 201 || del.status != 200 || recs[f.tenantA.ID+"/"+upName] != storeAddress(goodConfig, old) {
				t.Errorf("round %d twin: upload %d %s, delete %d %s", round, up.status, up.body, del.status, del.body)
			}
			outcomes["twin"]++
			continue
		}
		final, exists := recs[f.tenantA.ID+"/"+name]
		// Serial orders: upload then delete, or delete then upload.
		var ok bool
		switch {
		case pre:
			ok = (up.status == 409 && del.status == 200 && !exists) || // U (taken) D
				(del.status == 200 && up.status == 201 && exists && final == storeAddress(goodConfig, w)) // D U
		default:
			ok = (up.status == 201 && del.status == 200 && !exists) || // U D
				(del.status == 404 && up.status == 201 && exists && final == storeAddress(goodConfig, w)) // D U
		}
		outcomes[fmt.Sprintf("pre=%v upload=%d delete=%d exists=%v", pre, up.status, del.status, exists)]++
		if !ok {
			t.Errorf("round %d (pre %v): upload %d %s, delete %d %s, record %v %.12s: not a serial outcome",
				round, pre, up.status, up.body, del.status, del.body, exists, final)
		}
		if up.status >= 400 {
			checkOpenAIError(t, "upload", up, 409, "conflict_error", "adapter_exists")
		}
		if del.status >= 400 {
			checkOpenAIError(t, "delete", del, 404, "invalid_request_error", "adapter_not_found")
		}
	}
}

// TestUploadManyNearLimit: sixteen uploads at once around the upload
// limit, sent with a length and chunked: those within the limit are
// stored, those over it get 413 and leave nothing behind.
func TestUploadManyNearLimit(t *testing.T) {
	const limit = 256 << 10
	f, st, url := newUploadFixture(t, limit)
	// weights size that makes the whole multipart body exactly `limit`.
	ct0, b0 := multipartBody(t, part{"name", "", []byte("near-00")}, part{nozzle.AdapterConfigFile, "adapter_config.json", goodConfig},
		part{nozzle.AdapterWeightsFile, "adapter_model.safetensors", make([]byte, 1000)})
	_ = ct0
	exact := 1000 + limit - len(b0)
	type job struct {
		size    int
		chunked bool
		ok      bool
	}
	var jobs []job
	for i := range 16 {
		delta := []int{0, -1, 1, 100}[i%4]
		jobs = append(jobs, job{size: exact + delta, chunked: i%8 >= 4, ok: delta <= 0})
	}
	res := make([]upResult, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = httpUpload(t, url, f.keyA, fmt.Sprintf("near-%02d", i), goodConfig, uploadWeights(500+i, j.size), j.chunked)
		}()
	}
	wg.Wait()
	for i, j := range jobs {
		what := fmt.Sprintf("upload %d (weights %d, body %+d vs limit, chunked %v)", i, j.size, j.size-exact, j.chunked)
		if j.ok {
			if res[i].err != nil || res[i].status != 201 {
				t.Errorf("%s: %d %v %s", what, res[i].status, res[i].err, res[i].body)
			}
			continue
		}
		checkOpenAIError(t, what, res[i], 413, "invalid_request_error", "")
	}
	recs := checkConsistent(t, f, st, url)
	n := 0
	for _, j := range jobs {
		if j.ok {
			n++
		}
	}
	if len(recs) != n {
		t.Errorf("%d records, want %d", len(recs), n)
	}
}
