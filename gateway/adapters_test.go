package gateway_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

var (
	goodConfig  = []byte(`{"r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"],"peft_type":"LORA"}`)
	goodWeights = append([]byte("SAFE"), bytes.Repeat([]byte{7}, 1000)...)
)

type part struct {
	field, filename string
	data            []byte
}

func multipartBody(t testing.TB, parts ...part) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.filename == "" {
			w, err = mw.CreateFormField(p.field)
		} else {
			w, err = mw.CreateFormFile(p.field, p.filename)
		}
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func (f *fixture) upload(key string, parts ...part) *http.Response {
	f.t.Helper()
	ct, body := multipartBody(f.t, parts...)
	req := httptest.NewRequest(http.MethodPost, "/v1/adapters", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+key)
	return f.doReq(req)
}

type entry struct {
	name string
	data []byte
	typ  byte // tar type; 0 regular
	link string
}

func tarGz(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.typ != 0 {
			h.Typeflag, h.Size, h.Linkname = e.typ, 0, e.link
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(e.data)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func zipOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if e.typ == tar.TypeSymlink {
			h.SetMode(os.ModeSymlink | 0o777)
			e.data = []byte(e.link)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	zw.Close()
	return buf.Bytes()
}

func pe(name string) (entry, entry) {
	return entry{name: name + nozzle.AdapterConfigFile, data: goodConfig}, entry{name: name + nozzle.AdapterWeightsFile, data: goodWeights}
}

// assertClean checks that nothing was left in the upload folder.
func (f *fixture) assertClean(t testing.TB) {
	t.Helper()
	ents, err := os.ReadDir(f.uploadDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("upload dir not clean: %v", ents)
	}
}

type adapterOut struct {
	ID            string   `json:"id"`
	Object        string   `json:"object"`
	Name          string   `json:"name"`
	Rank          int      `json:"rank"`
	TargetModules []string `json:"target_modules"`
	SizeBytes     int64    `json:"size_bytes"`
	SHA256        string   `json:"sha256"`
	CreatedAt     int64    `json:"created_at"`
}

func TestAdapters_Upload(t *testing.T) {
	f := newFixture(t)
	c, w := pe("")
	nc, nw := pe("my-adapter/")
	for _, tc := range []struct {
		name  string
		parts []part
	}{
		{"Files", []part{{"name", "", []byte("files")}, {nozzle.AdapterConfigFile, "adapter_config.json", goodConfig}, {nozzle.AdapterWeightsFile, "adapter_model.safetensors", goodWeights}}},
		{"FilesNameLast", []part{{nozzle.AdapterConfigFile, "x.json", goodConfig}, {nozzle.AdapterWeightsFile, "y", goodWeights}, {"name", "", []byte("name-last")}}},
		{"FilesField", []part{{"name", "", []byte("files-field")}, {"files", "adapter_config.json", goodConfig}, {"files", "adapter_model.safetensors", goodWeights}}},
		{"TarGz", []part{{"name", "", []byte("targz")}, {"archive", "a.tar.gz", tarGz(t, c, w)}}},
		// tar czf a.tgz -C folder . names the folder itself "./".
		{"TarGzDotSlash", []part{{"name", "", []byte("targz.dot")}, {"archive", "a.tgz", tarGz(t, entry{name: "./", typ: tar.TypeDir},
			entry{name: "./" + nozzle.AdapterConfigFile, data: goodConfig}, entry{name: "./" + nozzle.AdapterWeightsFile, data: goodWeights})}}},
		{"TarGzNested", []part{{"name", "", []byte("targz.nested")}, {"archive", "a.tgz", tarGz(t, entry{name: "my-adapter/", typ: tar.TypeDir}, nc, nw, entry{name: "my-adapter/README.md", data: []byte("hi")})}}},
		{"Zip", []part{{"name", "", []byte("zip_1")}, {"archive", "a.zip", zipOf(t, c, w)}}},
		{"ZipNested", []part{{"name", "", []byte("zip-nested")}, {"archive", "adapter.zip", zipOf(t, nc, nw, entry{name: "__MACOSX/my-adapter/._adapter_config.json", data: []byte("junk")})}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.upload(f.keyA, tc.parts...)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
			}
			var a adapterOut
			decode(t, resp, &a)
			if a.Object != "adapter" || a.ID == "" || a.Rank != 8 || len(a.TargetModules) != 2 || a.SizeBytes != int64(len(goodConfig)+len(goodWeights)) ||
				a.SHA256 != sha256hex(append(append([]byte{}, goodConfig...), goodWeights...)) || a.CreatedAt == 0 {
				t.Errorf("adapter %+v", a)
			}
			f.assertClean(t)
		})
	}
	t.Run("ListGetUse", func(t *testing.T) {
		var list struct {
			Object string
			Data   []adapterOut
		}
		decode(t, f.do(http.MethodGet, "/v1/adapters", "", f.authA()), &list)
		if list.Object != "list" || len(list.Data) != 8 {
			t.Fatalf("list %+v", list)
		}
		var one adapterOut
		decode(t, f.do(http.MethodGet, "/v1/adapters/targz.nested", "", f.authA()), &one)
		if one.Name != "targz.nested" {
			t.Errorf("get %+v", one)
		}
		wantError(t, f.do(http.MethodGet, "/v1/adapters/targz", "", bearer(f.keyB)), 404, "invalid_request_error", "adapter_not_found", "")
		if r := f.do(http.MethodPost, "/v1/chat/completions", chatBody("zip_1", "hi"), f.authA()); r.StatusCode != 200 {
			t.Errorf("use: %d", r.StatusCode)
		}
		var models struct{ Data []struct{ ID, Parent string } }
		decode(t, f.do(http.MethodGet, "/v1/models", "", f.authA()), &models)
		if len(models.Data) != 9 || models.Data[0].ID != "tiny-llama" {
			t.Errorf("models %+v", models)
		}
		decode(t, f.do(http.MethodGet, "/v1/models", "", bearer(f.keyB)), &models)
		if len(models.Data) != 1 {
			t.Errorf("tenant b sees %+v", models)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		sha := sha256hex(append(append([]byte{}, goodConfig...), goodWeights...))
		names := []string{"files", "name-last", "files-field", "targz", "targz.dot", "targz.nested"}
		for _, n := range names {
			if r := f.do(http.MethodDelete, "/v1/adapters/"+n, "", f.authA()); r.StatusCode != 200 {
				t.Fatalf("delete %s: %d %s", n, r.StatusCode, readAll(t, r))
			}
			if len(f.w.removed) != 0 {
				t.Fatalf("files removed while still referenced")
			}
		}
		// as OpenAI's SDKs delete a fine-tuned model: models.delete(id)
		wantError(t, f.do(http.MethodDelete, "/v1/models/tiny-llama", "", f.authA()), 403, "permission_error", "", "model")
		wantError(t, f.do(http.MethodDelete, "/v1/models/base", "", f.authA()), 403, "permission_error", "", "model")
		wantError(t, f.do(http.MethodDelete, "/v1/models/zip_1", "", bearer(f.keyB)), 404, "invalid_request_error", "model_not_found", "")
		var del struct {
			ID, Object string
			Deleted    bool
		}
		decode(t, f.do(http.MethodDelete, "/v1/models/zip_1", "", f.authA()), &del)
		if del.ID != "zip_1" || del.Object != "model" || !del.Deleted || len(f.w.removed) != 0 {
			t.Fatalf("delete zip_1 as a model: %+v, removed %v", del, f.w.removed)
		}
		wantError(t, f.do(http.MethodDelete, "/v1/models/zip_1", "", f.authA()), 404, "invalid_request_error", "model_not_found", "")
		wantError(t, f.do(http.MethodDelete, "/v1/adapters/files", "", f.authA()), 404, "invalid_request_error", "adapter_not_found", "")
		f.do(http.MethodDelete, "/v1/adapters/zip-nested", "", f.authA())
		if len(f.w.removed) != 1 || f.w.removed[0] != sha {
			t.Errorf("removed %v", f.w.removed)
		}
	})
}

func TestAdapters_BadUpload(t *testing.T) {
	f := newFixture(t, withConfig(func(c *gateway.Config) { c.UploadLimit = 64 << 10 }))
	f.addAdapter(f.tenantA.ID, "taken", strings.Repeat("d", 64))
	c, w := pe("")
	files := func(name string) []part {
		return []part{{"name", "", []byte(name)}, {nozzle.AdapterConfigFile, "c", goodConfig}, {nozzle.AdapterWeightsFile, "w", goodWeights}}
	}
	arch := func(filename string, data []byte) []part {
		return []part{{"name", "", []byte("ok-name")}, {"archive", filename, data}}
	}
	for _, tc := range []struct {
		name        string
		parts       []part
		status      int
		code, param string
	}{
		{"NoName", files("")[1:], 400, "", "name"},
		{"BadName", files("../evil"), 400, "", "name"},
		{"BadNameSlash", files("a/b"), 400, "", "name"},
		{"NameBase", files("base"), 400, "", "name"},
		{"NameOfTheBaseModel", files("tiny-llama"), 400, "", "name"},
		{"Taken", files("taken"), 409, "adapter_exists", "name"},
		{"MissingWeights", files("x")[:2], 400, "", nozzle.AdapterWeightsFile},
		{"EmptyWeights", []part{{"name", "", []byte("x")}, {nozzle.AdapterConfigFile, "c", goodConfig}, {nozzle.AdapterWeightsFile, "w", nil}}, 400, "", nozzle.AdapterWeightsFile},
		{"UnknownField", append(files("x"), part{"extra", "", []byte("1")}), 400, "", "extra"},
		{"Duplicate", append(files("x"), part{nozzle.AdapterConfigFile, "c", goodConfig}), 400, "", nozzle.AdapterConfigFile},
		{"BothForms", append(files("x"), part{"archive", "a.zip", zipOf(t, c, w)}), 400, "", "archive"},
		{"TruncatedSafetensors", []part{{"name", "", []byte("x")}, {nozzle.AdapterConfigFile, "c", goodConfig}, {nozzle.AdapterWeightsFile, "w", []byte("SA")}}, 400, "", nozzle.AdapterWeightsFile},
		{"BadConfig", []part{{"name", "", []byte("x")}, {nozzle.AdapterConfigFile, "c", []byte("{nope")}, {nozzle.AdapterWeightsFile, "w", goodWeights}}, 400, "", nozzle.AdapterConfigFile},
		{"TooLarge", []part{{"name", "", []byte("x")}, {nozzle.AdapterConfigFile, "c", goodConfig}, {nozzle.AdapterWeightsFile, "w", bytes.Repeat([]byte("S"), 70<<10)}}, 413, "", ""},
		{"ZipNamedTarGz", arch("a.tar.gz", zipOf(t, c, w)), 400, "", "archive"},
		{"TarGzNamedZip", arch("a.zip", tarGz(t, c, w)), 400, "", "archive"},
		{"NotAnArchive", arch("a.tar.gz", []byte("plain text, not an archive")), 400, "", "archive"},
		{"TruncatedTarGz", arch("a.tar.gz", tarGz(t, c, w)[:200]), 400, "", "archive"},
		{"TarDotDot", arch("a.tar.gz", tarGz(t, entry{name: "../" + nozzle.AdapterConfigFile, data: goodConfig}, w)), 400, "", "archive"},
		{"TarAbsolute", arch("a.tar.gz", tarGz(t, entry{name: "/etc/" + nozzle.AdapterConfigFile, data: goodConfig}, w)), 400, "", "archive"},
		{"TarSymlink", arch("a.tar.gz", tarGz(t, entry{name: nozzle.AdapterConfigFile, typ: tar.TypeSymlink, link: "/etc/passwd"}, w)), 400, "", "archive"},
		{"TarHardlink", arch("a.tar.gz", tarGz(t, c, entry{name: nozzle.AdapterWeightsFile, typ: tar.TypeLink, link: nozzle.AdapterConfigFile})), 400, "", "archive"},
		{"TarDotDotOther", arch("a.tar.gz", tarGz(t, c, w, entry{name: "x/../../README", data: []byte("x")})), 400, "", "archive"},
		{"TarTwoFolders", arch("a.tar.gz", tarGz(t, entry{name: "a/" + nozzle.AdapterConfigFile, data: goodConfig}, entry{name: "b/" + nozzle.AdapterWeightsFile, data: goodWeights})), 400, "", "archive"},
		{"TarTooDeep", arch("a.tar.gz", tarGz(t, entry{name: "a/b/" + nozzle.AdapterConfigFile, data: goodConfig}, w)), 400, "", "archive"},
		{"TarBombSkipped", arch("a.tar.gz", tarGz(t, entry{name: "junk.bin", data: make([]byte, 200<<10)}, c, w)), 400, "", "archive"},
		{"TarMissingFile", arch("a.tar.gz", tarGz(t, c)), 400, "", "archive"},
		{"TarDuplicate", arch("a.tar.gz", tarGz(t, c, w, c)), 400, "", "archive"},
		{"ZipBackslashDotDot", arch("a.zip", zipOf(t, entry{name: `..\` + nozzle.AdapterConfigFile, data: goodConfig}, w)), 400, "", "archive"},
		{"ZipSymlink", arch("a.zip", zipOf(t, entry{name: nozzle.AdapterConfigFile, typ: tar.TypeSymlink, link: "/etc/passwd"}, w)), 400, "", "archive"},
		{"ZipBomb", arch("a.zip", zipOf(t, c, entry{name: nozzle.AdapterWeightsFile, data: append([]byte("SAFE"), make([]byte, 200<<10)...)})), 400, "", "archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.w.adapters)
			resp := f.upload(f.keyA, tc.parts...)
			typ := "invalid_request_error"
			if tc.status == 409 {
				typ = "conflict_error"
			}
			wantError(t, resp, tc.status, typ, tc.code, tc.param)
			f.w.mu.Lock()
			n := len(f.w.adapters)
			f.w.mu.Unlock()
			if n != before {
				t.Errorf("an adapter was stored")
			}
			f.assertClean(t)
		})
	}
	t.Run("NotMultipart", func(t *testing.T) {
		wantError(t, f.do(http.MethodPost, "/v1/adapters", `{"name":"x"}`, f.authA()), 400, "invalid_request_error", "", "")
	})
	t.Run("Compressed", func(t *testing.T) {
		// a gzipped body is refused as such, not misread as a multipart
		// body without its fields
		ct, body := multipartBody(t, files("gz")...)
		var zbuf bytes.Buffer
		zw := gzip.NewWriter(&zbuf)
		zw.Write(body)
		zw.Close()
		req := httptest.NewRequest(http.MethodPost, "/v1/adapters", &zbuf)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Content-Encoding", "gzip")
		req.Header.Set("Authorization", "Bearer "+f.keyA)
		e := wantError(t, f.doReq(req), 400, "invalid_request_error", "", "")
		if !strings.Contains(e.Error.Message, "Compressed") {
			t.Errorf("message %q", e.Error.Message)
		}
		f.assertClean(t)
	})
	t.Run("Truncated", func(t *testing.T) {
		ct, body := multipartBody(t, files("trunc")...)
		req := httptest.NewRequest(http.MethodPost, "/v1/adapters", bytes.NewReader(body[:len(body)-100]))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+f.keyA)
		wantError(t, f.doReq(req), 400, "invalid_request_error", "", "")
		f.assertClean(t)
	})
	t.Run("MetadataFailsAfterImport", func(t *testing.T) {
		f.adapterS.CreateAdapterFn = func(ctx context.Context, a *nozzle.Adapter) error {
			return nozzle.Errorf(nozzle.ECONFLICT, "Taken meanwhile.")
		}
		wantError(t, f.upload(f.keyA, files("race")...), 409, "conflict_error", "adapter_exists", "name")
		f.w.mu.Lock()
		defer f.w.mu.Unlock()
		if len(f.w.removed) != 1 || len(f.w.stored) != 0 {
			t.Errorf("imported files not removed: removed %v stored %d", f.w.removed, len(f.w.stored))
		}
	})
	t.Run("Scope", func(t *testing.T) {
		var k struct{ Key string }
		decode(t, f.do(http.MethodPost, "/v1/keys", `{"scopes":["inference"]}`, f.authA()), &k)
		wantError(t, f.upload(k.Key, files("x")...), 403, "permission_error", "missing_scope", "")
	})
}

func TestInternalAdapterFiles(t *testing.T) {
	f := newFixture(t)
	resp := f.upload(f.keyA, part{"name", "", []byte("a")}, part{nozzle.AdapterConfigFile, "c", goodConfig}, part{nozzle.AdapterWeightsFile, "w", goodWeights})
	var a adapterOut
	decode(t, resp, &a)
	path := "/internal/adapters/" + a.SHA256 + "/" + nozzle.AdapterWeightsFile
	r := f.do(http.MethodGet, path, "", bearer(internalToken))
	if body := readAll(t, r); r.StatusCode != 200 || body != string(goodWeights) {
		t.Fatalf("status %d, %d bytes", r.StatusCode, len(body))
	}
	wantError(t, f.do(http.MethodGet, path, "", f.authA()), 401, "invalid_request_error", "", "")
	wantError(t, f.do(http.MethodGet, path, ""), 401, "invalid_request_error", "", "")
	wantError(t, f.do(http.MethodGet, "/internal/adapters/"+a.SHA256+"/passwd", "", bearer(internalToken)), 404, "invalid_request_error", "", "")
	wantError(t, f.do(http.MethodGet, "/internal/adapters/..%2F..%2Fetc/"+nozzle.AdapterConfigFile, "", bearer(internalToken)), 404, "invalid_request_error", "", "")
	wantError(t, f.do(http.MethodGet, "/internal/adapters/"+strings.Repeat("e", 64)+"/"+nozzle.AdapterConfigFile, "", bearer(internalToken)), 404, "invalid_request_error", "", "")
}

// TestAdapters_CrashLeftovers: what a crash leaves of adapter uploads and
// deletions does not stay. Staging folders are emptied when the gateway
// starts; stored files no adapter uses (an upload whose record was never
// written, a deletion cut short) are swept then, and after deletions
// that had to leave files alone while another upload was importing.
func TestAdapters_CrashLeftovers(t *testing.T) {
	staged := filepath.Join(t.TempDir(), "uploads")
	os.MkdirAll(filepath.Join(staged, "upload-123"), 0o700)
	os.WriteFile(filepath.Join(staged, "upload-123", nozzle.AdapterWeightsFile), []byte("half"), 0o600)
	orphan, used := strings.Repeat("e", 64), strings.Repeat("d", 64)
	f := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		c.UploadDir = staged
		f.w.stored[orphan] = map[string][]byte{nozzle.AdapterConfigFile: []byte("{}")}
		f.w.stored[used] = map[string][]byte{nozzle.AdapterConfigFile: []byte("{}")}
		f.addAdapter("ten_x", "kept", used)
	})
	if _, err := os.Stat(filepath.Join(staged, "upload-123")); !os.IsNotExist(err) {
		t.Errorf("a staging folder outlived the start: %v", err)
	}
	f.w.mu.Lock()
	_, orphanLeft := f.w.stored[orphan]
	_, usedLeft := f.w.stored[used]
	f.w.mu.Unlock()
	if orphanLeft || !usedLeft {
		t.Errorf("after the start's sweep: orphan stored %v, used stored %v", orphanLeft, usedLeft)
	}
	// An adapter deleted while another upload imports keeps its files
	// until that import ends (its record may not be written yet), then
	// they go.
	f.addAdapter(f.tenantA.ID, "old", orphan)
	f.w.mu.Lock()
	f.w.stored[orphan] = map[string][]byte{nozzle.AdapterConfigFile: []byte("{}")}
	f.w.mu.Unlock()
	hold := &importHold{started: make(chan struct{}, 1), release: make(chan struct{})}
	f.w.importHold.Store(hold)
	done := make(chan int, 1)
	go func() {
		fresh := []part{{"name", "", []byte("fresh")}, {nozzle.AdapterConfigFile, "c", goodConfig}, {nozzle.AdapterWeightsFile, "w", goodWeights}}
		r := f.upload(f.keyA, fresh...)
		readAll(t, r)
		done <- r.StatusCode
	}()
	<-hold.started
	if r := f.do(http.MethodDelete, "/v1/adapters/old", "", f.authA()); r.StatusCode != 200 {
		t.Fatalf("delete: %d", r.StatusCode)
	}
	stored := func() bool {
		f.w.mu.Lock()
		defer f.w.mu.Unlock()
		_, ok := f.w.stored[orphan]
		return ok
	}
	if !stored() {
		t.Fatal("files removed while an import was in flight")
	}
	f.w.importHold.Store(nil)
	close(hold.release)
	if code := <-done; code != 201 {
		t.Fatalf("upload: %d", code)
	}
	if stored() {
		t.Error("the deleted adapter's files outlived the import that held them")
	}
}

// TestAdapters_StorageQuota: a tenant's adapters stay within its storage
// quota; an upload past it is refused up front with what is used, and
// fits again once an adapter is deleted. Another tenant is not affected.
func TestAdapters_StorageQuota(t *testing.T) {
	size := int64(len(goodConfig) + len(goodWeights))
	f := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { c.TenantAdapterBytes = 2*size + size/2 })
	files := func(name string, fill byte) []part {
		w := append([]byte("SAFE"), bytes.Repeat([]byte{fill}, len(goodWeights)-4)...)
		return []part{{"name", "", []byte(name)}, {nozzle.AdapterConfigFile, "adapter_config.json", goodConfig}, {nozzle.AdapterWeightsFile, "adapter_model.safetensors", w}}
	}
	for i, name := range []string{"one", "two"} {
		if r := f.upload(f.keyA, files(name, byte(i+1))...); r.StatusCode != http.StatusCreated {
			t.Fatalf("%s: %d %s", name, r.StatusCode, readAll(t, r))
		}
	}
	r := f.upload(f.keyA, files("three", 3)...)
	body := readAll(t, r)
	if r.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "storage quota") || !strings.Contains(body, "adapter_storage_full") {
		t.Fatalf("past the quota: %d %s", r.StatusCode, body)
	}
	if r := f.upload(f.keyB, files("three", 3)...); r.StatusCode != http.StatusCreated {
		t.Errorf("another tenant: %d %s", r.StatusCode, readAll(t, r))
	}
	if r := f.do(http.MethodDelete, "/v1/adapters/one", "", f.authA()); r.StatusCode != http.StatusOK {
		t.Fatalf("delete: %d %s", r.StatusCode, readAll(t, r))
	}
	if r := f.upload(f.keyA, files("three", 3)...); r.StatusCode != http.StatusCreated {
		t.Errorf("after a delete: %d %s", r.StatusCode, readAll(t, r))
	}
}

// noListing is an adapter service whose whole lists must not be read: the
// quota is checked against the tenant's running total.
type noListing struct {
	nozzle.AdapterService
	t testing.TB
}

func (n noListing) Adapters(ctx context.Context, tenantID string) ([]*nozzle.Adapter, error) {
	n.t.Error("the quota check read every adapter of the tenant")
	return n.AdapterService.Adapters(ctx, tenantID)
}

// TestAdapters_StorageQuotaBoundary: an upload that brings the tenant's
// adapters exactly to the quota is kept, one byte more is refused when it
// is recorded (its body fits the check made before receiving), and a
// tenant at its quota is refused up front. The check reads the tenant's
// running total, never its list of adapters.
func TestAdapters_StorageQuotaBoundary(t *testing.T) {
	size := int64(len(goodConfig) + len(goodWeights))
	files := func(name string, fill byte) []part {
		w := append([]byte("SAFE"), bytes.Repeat([]byte{fill}, len(goodWeights)-4)...)
		return []part{{"name", "", []byte(name)}, {nozzle.AdapterConfigFile, "adapter_config.json", goodConfig}, {nozzle.AdapterWeightsFile, "adapter_model.safetensors", w}}
	}
	for _, c := range []struct {
		name  string
		quota int64
		two   int // the second upload's status
	}{
		{"AtQuota", 2 * size, http.StatusCreated},
		{"OneByteOver", 2*size - 1, http.StatusRequestEntityTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, func(cfg *gateway.Config, d *gateway.Deps, f *fixture) {
				cfg.TenantAdapterBytes = c.quota
				d.Adapters = noListing{d.Adapters, t}
			})
			if r := f.upload(f.keyA, files("one", 1)...); r.StatusCode != http.StatusCreated {
				t.Fatalf("one: %d %s", r.StatusCode, readAll(t, r))
			}
			r := f.upload(f.keyA, files("two", 2)...)
			body := readAll(t, r)
			if r.StatusCode != c.two {
				t.Fatalf("two: %d %s, want %d", r.StatusCode, body, c.two)
			}
			if c.two != http.StatusCreated {
				if !strings.Contains(body, "adapter_storage_full") {
					t.Fatalf("two: %s", body)
				}
				if r := f.do(http.MethodGet, "/v1/adapters/two", "", f.authA()); r.StatusCode != http.StatusNotFound {
					t.Fatalf("the refused adapter was kept: %d %s", r.StatusCode, readAll(t, r))
				}
				return
			}
			// At the quota: refused before the body is received.
			r = f.upload(f.keyA, files("three", 3)...)
			if body := readAll(t, r); r.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "adapter_storage_full") {
				t.Fatalf("three: %d %s", r.StatusCode, body)
			}
		})
	}
}

// heldStore holds the first Import until release is closed: an upload
// in flight for as long as a test needs.
type heldStore struct {
	nozzle.AdapterStore
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

func (h *heldStore) Import(ctx context.Context, dir string) (*nozzle.AdapterManifest, error) {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.started)
		<-h.release
	}
	return h.AdapterStore.Import(ctx, dir)
}

// TestAdapters_UploadsInFlight: a tenant has at most TenantUploads uploads
// in flight; another waits its turn (429), another tenant does not.
func TestAdapters_UploadsInFlight(t *testing.T) {
	held := &heldStore{started: make(chan struct{}), release: make(chan struct{})}
	f := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		c.TenantUploads = 1
		held.AdapterStore = d.Store
		d.Store = held
	})
	files := func(name string) []part {
		return []part{{"name", "", []byte(name)}, {nozzle.AdapterConfigFile, "adapter_config.json", goodConfig},
			{nozzle.AdapterWeightsFile, "adapter_model.safetensors", goodWeights}}
	}
	first := make(chan *http.Response, 1)
	go func() { first <- f.upload(f.keyA, files("first")...) }()
	<-held.started // the first upload is in flight
	r := f.upload(f.keyA, files("second")...)
	if body := readAll(t, r); r.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "too_many_uploads_in_flight") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("a second upload of the tenant: %d %s", r.StatusCode, body)
	}
	if r := f.upload(f.keyB, files("second")...); r.StatusCode != http.StatusCreated {
		t.Errorf("another tenant's upload: %d %s", r.StatusCode, readAll(t, r))
	}
	close(held.release)
	if r := <-first; r.StatusCode != http.StatusCreated {
		t.Fatalf("the first upload: %d %s", r.StatusCode, readAll(t, r))
	}
	if r := f.upload(f.keyA, files("second")...); r.StatusCode != http.StatusCreated {
		t.Errorf("after the first ended: %d %s", r.StatusCode, readAll(t, r))
	}
}

// TestAdapters_StorageQuotaConcurrent: two uploads of a tenant in flight
// at once, each of which fits alone but not both, do not both pass the
// quota: the one recorded second is refused and not kept.
func TestAdapters_StorageQuotaConcurrent(t *testing.T) {
	size := int64(len(goodConfig) + len(goodWeights))
	f := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { c.TenantAdapterBytes = size + size/2 })
	hold := &importHold{started: make(chan struct{}, 2), release: make(chan struct{})}
	f.w.importHold.Store(hold)
	codes := make(chan int, 2)
	for i, name := range []string{"one", "two"} {
		go func() {
			w := append([]byte("SAFE"), bytes.Repeat([]byte{byte(i + 1)}, len(goodWeights)-4)...)
			r := f.upload(f.keyA, part{"name", "", []byte(name)}, part{nozzle.AdapterConfigFile, "adapter_config.json", goodConfig},
				part{nozzle.AdapterWeightsFile, "adapter_model.safetensors", w})
			readAll(t, r)
			codes <- r.StatusCode
		}()
	}
	<-hold.started // both passed the check made before receiving
	<-hold.started
	f.w.importHold.Store(nil)
	close(hold.release)
	got := []int{<-codes, <-codes}
	slices.Sort(got)
	if got[0] != http.StatusCreated || got[1] != http.StatusRequestEntityTooLarge {
		t.Errorf("two uploads that fit only one at a time: %v, want one 201 and one 413", got)
	}
}
