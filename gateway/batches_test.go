package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/gateway"
)

// batchEnv is where a batch test's server keeps its ledger and files, so
// that a second server can open them again.
type batchEnv struct {
	ledgerPath, filesDir string
	led                  *billing.Ledger
	clock                atomic.Int64 // added to the real time, nanoseconds
}

func newBatchEnv(t *testing.T) *batchEnv {
	dir := t.TempDir()
	return &batchEnv{ledgerPath: filepath.Join(dir, "ledger.db"), filesDir: filepath.Join(dir, "files")}
}

func (e *batchEnv) now() time.Time { return time.Now().Add(time.Duration(e.clock.Load())) }

func (e *batchEnv) open(t *testing.T) *billing.Ledger {
	led, err := billing.Open(billing.Options{Path: e.ledgerPath, Logger: quietLogger(), DefaultPrice: fixturePrice})
	if err != nil {
		t.Fatal(err)
	}
	e.led = led
	return led
}

// withBatches gives the fixture a real ledger at the env's path and the
// Files and Batch APIs.
func withBatches(t *testing.T, e *batchEnv, cfgFn func(*gateway.Config)) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		led := e.open(t)
		t.Cleanup(func() { led.Close() })
		d.Tenants, d.Keys, d.Adapters, d.Ledger, d.Budget, d.Reporter, d.Users, d.Responses, d.Conversations = led, led, led, led, led, led, led, led, led
		d.Batches = led
		c.FilesDir = e.filesDir
		c.Now = e.now
		if cfgFn != nil {
			cfgFn(c)
		}
	}
}

func uploadFile(t *testing.T, url, key, purpose, name string, content []byte) *http.Response {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if purpose != "" {
		mw.WriteField("purpose", purpose)
	}
	if content != nil {
		fw, _ := mw.CreateFormFile("file", name)
		fw.Write(content)
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

type fileObj struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

type batchObj struct {
	ID            string `json:"id"`
	Object        string `json:"object"`
	Status        string `json:"status"`
	Endpoint      string `json:"endpoint"`
	Model         string `json:"model"`
	InputFileID   string `json:"input_file_id"`
	OutputFileID  *string
	ErrorFileID   *string
	CreatedAt     int64  `json:"created_at"`
	InProgressAt  *int64 `json:"in_progress_at"`
	ExpiresAt     *int64 `json:"expires_at"`
	CompletedAt   *int64 `json:"completed_at"`
	FailedAt      *int64 `json:"failed_at"`
	ExpiredAt     *int64 `json:"expired_at"`
	CancelledAt   *int64 `json:"cancelled_at"`
	FinalizingAt  *int64 `json:"finalizing_at"`
	RequestCounts struct {
		Total, Completed, Failed int
	} `json:"request_counts"`
	Errors *struct {
		Object string `json:"object"`
		Data   []struct {
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Param   *string `json:"param"`
			Line    *int    `json:"line"`
		} `json:"data"`
	} `json:"errors"`
	Usage struct {
		InputTokens  int64 `json:"input_tokens"`
		OutputTokens int64 `json:"output_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	} `json:"usage"`
	Metadata map[string]string `json:"metadata"`
}

func (b *batchObj) UnmarshalJSON(raw []byte) error {
	type plain batchObj
	var x struct {
		plain
		Out *string `json:"output_file_id"`
		Err *string `json:"error_file_id"`
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		return err
	}
	*b = batchObj(x.plain)
	b.OutputFileID, b.ErrorFileID = x.Out, x.Err
	return nil
}

func mustUpload(t *testing.T, url, key string, content string) fileObj {
	t.Helper()
	resp := uploadFile(t, url, key, "batch", "in.jsonl", []byte(content))
	raw := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %s", resp.StatusCode, raw)
	}
	var f fileObj
	if err := json.Unmarshal([]byte(raw), &f); err != nil || f.Object != "file" || !strings.HasPrefix(f.ID, "file-") || f.Purpose != "batch" || f.Bytes != int64(len(content)) || f.Status != "processed" {
		t.Fatalf("file %s", raw)
	}
	return f
}

func getJSON(t *testing.T, url, key string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw := readAll(t, resp)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal([]byte(raw), v); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
	}
	return resp.StatusCode
}

func createBatch(t *testing.T, url, key, fileID, endpoint string) batchObj {
	t.Helper()
	resp := post(t, url+"/v1/batches", key, fmt.Sprintf(`{"input_file_id":%q,"endpoint":%q,"completion_window":"24h","metadata":{"job":"nightly"}}`, fileID, endpoint))
	raw := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("create batch: %d %s", resp.StatusCode, raw)
	}
	var b batchObj
	if err := json.Unmarshal([]byte(raw), &b); err != nil || b.Object != "batch" || b.Status != "validating" || b.Metadata["job"] != "nightly" || b.ExpiresAt == nil || *b.ExpiresAt != b.CreatedAt+86400 {
		t.Fatalf("batch %s", raw)
	}
	return b
}

func waitBatch(t *testing.T, url, key, id string, done func(b batchObj) bool) batchObj {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var b batchObj
		if code := getJSON(t, url+"/v1/batches/"+id, key, &b); code != 200 {
			t.Fatalf("get batch: %d", code)
		}
		if done(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch stuck: %+v", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func final(b batchObj) bool { return nozzle.BatchDone(b.Status) }

func fileContent(t *testing.T, url, key, id string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/files/"+id+"/content", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("content: %d %s", resp.StatusCode, raw)
	}
	return raw
}

type outLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct{ Code, Message string } `json:"error"`
}

// outList is an output or error file's lines, in order.
func outList(t *testing.T, raw string) []outLine {
	t.Helper()
	var out []outLine
	for _, l := range strings.Split(strings.TrimSpace(raw), "\n") {
		if l == "" {
			continue
		}
		var o outLine
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		out = append(out, o)
	}
	return out
}

// outLines is an output or error file's lines by custom_id.
func outLines(t *testing.T, raw string) map[string]outLine {
	t.Helper()
	out := map[string]outLine{}
	for _, o := range outList(t, raw) {
		out[o.CustomID] = o
	}
	return out
}

// runningBatch starts a batch of n chat lines (custom ids prefix0, prefix1,
// ...; prompts "prompt 0", ... where numbered, else "x") on a server that
// runs one line at a time, each taking delay a token, and returns once
// started lines have completed.
func runningBatch(t *testing.T, n int, prefix string, numbered bool, delay time.Duration, started int) (*batchEnv, *fixture, string, batchObj) {
	t.Helper()
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.BatchConcurrency = 1 }))
	url := f.serve(t)
	var input []string
	for i := range n {
		prompt := "x"
		if numbered {
			prompt = fmt.Sprint("prompt ", i)
		}
		input = append(input, chatLine(fmt.Sprint(prefix, i), "base", prompt))
	}
	in := mustUpload(t, url, f.keyA, strings.Join(input, "\n"))
	f.gen.setDelay(delay)
	b := createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions")
	waitBatch(t, url, f.keyA, b.ID, func(b batchObj) bool { return b.RequestCounts.Completed >= started })
	return env, f, url, b
}
func chatLine(id, model, content string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":%s}`, id, chatBody(model, content))
}

func usageRequests(t *testing.T, url, key string) int {
	var u struct {
		Total struct {
			Requests int `json:"requests"`
		} `json:"total"`
	}
	if code := getJSON(t, url+"/v1/usage", key, &u); code != 200 {
		t.Fatalf("usage: %d", code)
	}
	return u.Total.Requests
}

// A batch of chat lines runs to completed: its output file has a line per
// request, OpenAI-shaped, each request metered once, at the batch
// priority; an error line (a refused request) goes to the error file.
func TestBatch_RunsToCompletion(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, nil))
	url := f.serve(t)
	input := chatLine("a", "base", "one") + "\n" + chatLine("b", "base", "two") + "\n\n" +
		`{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"model":"base","messages":[{"role":"user","content":"three"}],"max_tokens":100000}}` + "\n"
	in := mustUpload(t, url, f.keyA, input)
	b := createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions")
	if b.Model != "base" {
		t.Errorf("created batch's model %q, want the first line's", b.Model)
	}
	b = waitBatch(t, url, f.keyA, b.ID, final)
	if b.Model != "base" {
		t.Errorf("batch's model %q, want the first line's", b.Model)
	}
	if b.Status != "completed" || b.RequestCounts.Total != 3 || b.RequestCounts.Completed != 2 || b.RequestCounts.Failed != 1 ||
		b.OutputFileID == nil || b.ErrorFileID == nil || b.CompletedAt == nil || b.InProgressAt == nil || b.FinalizingAt == nil {
		t.Fatalf("batch %+v", b)
	}
	if b.Usage.InputTokens == 0 || b.Usage.OutputTokens == 0 || b.Usage.TotalTokens != b.Usage.InputTokens+b.Usage.OutputTokens {
		t.Errorf("usage %+v", b.Usage)
	}
	out := outLines(t, fileContent(t, url, f.keyA, *b.OutputFileID))
	if len(out) != 2 {
		t.Fatalf("output %v", out)
	}
	for _, id := range []string{"a", "b"} {
		o := out[id]
		var chat chatResponse
		if o.Response == nil || o.Response.StatusCode != 200 || o.Error != nil || !strings.HasPrefix(o.ID, "batch_req_") || o.Response.RequestID == "" ||
			json.Unmarshal(o.Response.Body, &chat) != nil || len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" {
			t.Errorf("line %s: %+v", id, o)
		}
	}
	errs := outLines(t, fileContent(t, url, f.keyA, *b.ErrorFileID))
	if e := errs["c"]; e.Response == nil || e.Response.StatusCode != 400 || !strings.Contains(string(e.Response.Body), "max_tokens") {
		t.Errorf("error line %+v", e)
	}
	if !f.gen.lastReq.Load().Background {
		t.Errorf("a batch line ran at the interactive priority")
	}
	if n := usageRequests(t, url, f.keyA); n != 2 {
		t.Errorf("%d requests metered, want 2", n)
	}
	// a line's usage, by its request id and by its Idempotency-Key
	for _, id := range []string{out["a"].Response.RequestID, "batch:" + b.ID + ":1"} {
		var u struct{ Status string }
		if code := getJSON(t, url+"/v1/usage/requests/"+id, f.keyA, &u); code != 200 || u.Status != "ok" {
			t.Errorf("usage of %s: %d %+v", id, code, u)
		}
		if code := getJSON(t, url+"/v1/usage/requests/"+id, f.keyB, nil); code != 404 {
			t.Errorf("another tenant's usage of %s: %d", id, code)
		}
	}
	// the output file is listed, with purpose batch_output
	var list struct {
		Data    []fileObj `json:"data"`
		HasMore bool      `json:"has_more"`
	}
	getJSON(t, url+"/v1/files?purpose=batch_output", f.keyA, &list)
	if len(list.Data) != 2 || list.Data[0].Purpose != "batch_output" {
		t.Errorf("batch_output files %+v", list.Data)
	}
	// ascending: oldest first (ids begin with their millisecond, so the
	// input, uploaded first, leads unless the batch's outputs share its
	// millisecond), and a page of one says more follow
	getJSON(t, url+"/v1/files?order=asc", f.keyA, &list)
	if len(list.Data) != 3 || !slices.IsSortedFunc(list.Data, func(a, b fileObj) int { return strings.Compare(a.ID, b.ID) }) ||
		list.Data[0].ID[:len("file-")+12] != in.ID[:len("file-")+12] {
		t.Errorf("files, oldest first: %+v", list.Data)
	}
	first := list.Data[0].ID
	getJSON(t, url+"/v1/files?order=asc&limit=1", f.keyA, &list)
	if len(list.Data) != 1 || list.Data[0].ID != first || !list.HasMore {
		t.Errorf("first file %+v", list)
	}
	var bl struct {
		Data []batchObj `json:"data"`
	}
	getJSON(t, url+"/v1/batches", f.keyA, &bl)
	if len(bl.Data) != 1 || bl.Data[0].ID != b.ID {
		t.Errorf("batches %+v", bl)
	}
	// An interactive request meanwhile is interactive.
	if r := post(t, url+"/v1/chat/completions", f.keyA, chatBody("base", "hi")); r.StatusCode != 200 || f.gen.lastReq.Load().Background {
		t.Errorf("live request: %d background=%v", r.StatusCode, f.gen.lastReq.Load().Background)
	}
}

// Bad input: each a clear 4xx (or, for a line of the file, a failed batch
// naming the line), and nothing run or charged.
func TestBatch_BadInput(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.FileUploadLimit = 1 << 10 }))
	url := f.serve(t)
	countFiles := func() int {
		var l struct{ Data []fileObj }
		getJSON(t, url+"/v1/files", f.keyA, &l)
		return len(l.Data)
	}
	for _, tc := range []struct {
		name, purpose string
		content       []byte
		status        int
		param         string
	}{
		{"wrong purpose", "fine-tune", []byte("{}\n"), 400, "purpose"},
		{"no purpose", "", []byte("{}\n"), 400, "purpose"},
		{"no file", "batch", nil, 400, "file"},
		{"too large", "batch", bytes.Repeat([]byte("x"), 2<<10), 413, "file"},
	} {
		resp := uploadFile(t, url, f.keyA, tc.purpose, "x.jsonl", tc.content)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		wantParam(t, resp, tc.param)
	}
	if n := countFiles(); n != 0 {
		t.Errorf("%d files stored after refused uploads", n)
	}
	if ents, _ := os.ReadDir(env.filesDir); len(ents) != 0 {
		t.Errorf("files left on disk: %v", ents)
	}
	good := mustUpload(t, url, f.keyA, chatLine("a", "base", "x")+"\n")
	// another tenant's file and batch are absent
	if code := getJSON(t, url+"/v1/files/"+good.ID, f.keyB, nil); code != 404 {
		t.Errorf("other tenant's file: %d", code)
	}
	wantStatusParam(t, post(t, url+"/v1/batches", f.keyB, fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, good.ID)), 404, "input_file_id")
	for _, path := range []string{"/v1/files/..%2f..%2fledger.db", "/v1/files/file-../../x/content", "/v1/files/%2e%2e", "/v1/batches/batch_..%2f"} {
		if code := getJSON(t, url+path, f.keyA, nil); code != 404 {
			t.Errorf("%s: %d", path, code)
		}
	}
	for _, body := range []struct{ body, param string }{
		{`{"input_file_id":"file-000000000000000000000000000a","endpoint":"/v1/chat/completions","completion_window":"24h"}`, "input_file_id"},
		{fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/embeddings","completion_window":"24h"}`, good.ID), "endpoint"},
		{fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"1h"}`, good.ID), "completion_window"},
		{fmt.Sprintf(`{"endpoint":"/v1/chat/completions","completion_window":"24h","x":%q}`, good.ID), "input_file_id"},
	} {
		resp := post(t, url+"/v1/batches", f.keyA, body.body)
		if resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Errorf("%s: %d", body.body, resp.StatusCode)
		}
		wantParam(t, resp, body.param)
	}
	var bl struct{ Data []batchObj }
	getJSON(t, url+"/v1/batches", f.keyA, &bl)
	if len(bl.Data) != 0 {
		t.Errorf("batches stored after refusals: %+v", bl.Data)
	}
	// lines that fail validation: the batch fails, naming them
	bad := strings.Join([]string{
		chatLine("a", "base", "ok"),
		`{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{"model":"base","messages":[`, // malformed
		chatLine("a", "base", "again"), // duplicate custom_id
		`{"custom_id":"c","method":"POST","url":"/v1/completions","body":{"model":"base","prompt":"x"}}`,
		`{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{"model":"base","stream":true,"messages":[{"role":"user","content":"x"}]}}`,
		chatLine("e", "no-such-adapter", "x"),
		`{"custom_id":"f","method":"GET","url":"/v1/chat/completions","body":{}}`,
	}, "\n")
	in := mustUpload(t, url, f.keyA, bad)
	b := waitBatch(t, url, f.keyA, createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions").ID, final)
	if b.Status != "failed" || b.FailedAt == nil || b.Errors == nil || b.OutputFileID != nil {
		t.Fatalf("batch %+v", b)
	}
	got := map[int]string{}
	for _, e := range b.Errors.Data {
		if e.Line != nil {
			got[*e.Line] = e.Code
		}
	}
	want := map[int]string{2: "invalid_json_line", 3: "duplicate_custom_id", 4: "mismatched_url", 5: "invalid_value", 6: "model_not_found", 7: "invalid_value"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("errors by line %v, want %v", got, want)
	}
	if n := f.gen.calls.Load(); n != 0 {
		t.Errorf("%d generations for batches that failed validation", n)
	}
	// another tenant's batch is absent, for reading and cancelling
	if code := getJSON(t, url+"/v1/batches/"+b.ID, f.keyB, nil); code != 404 {
		t.Errorf("other tenant's batch: %d", code)
	}
	wantStatusParam(t, post(t, url+"/v1/batches/"+b.ID+"/cancel", f.keyB, ""), 404, "batch_id")
	wantStatusParam(t, post(t, url+"/v1/batches/"+b.ID+"/cancel", f.keyA, ""), 409, "")
	// delete: gone for good
	req, _ := http.NewRequest(http.MethodDelete, url+"/v1/files/"+good.ID, nil)
	req.Header.Set("Authorization", "Bearer "+f.keyB)
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 404 {
		t.Errorf("other tenant deleted a file: %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+f.keyA)
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 200 {
		t.Errorf("delete: %d", resp.StatusCode)
	}
	if code := getJSON(t, url+"/v1/files/"+good.ID+"/content", f.keyA, nil); code != 404 {
		t.Errorf("deleted file's content: %d", code)
	}
}

func wantStatusParam(t *testing.T, resp *http.Response, status int, param string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d", resp.StatusCode, status)
	}
	if param != "" {
		wantParam(t, resp, param)
	}
}

func wantParam(t *testing.T, resp *http.Response, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Param *string `json:"param"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	json.Unmarshal(raw, &e)
	if e.Error.Param == nil || *e.Error.Param != param {
		t.Errorf("param of %s: want %q", raw, param)
	}
}

// A batch in progress resumes after the server restarts on the same
// ledger and files, and no line that completed before is run or charged
// again.
func TestBatch_ResumesAfterRestart(t *testing.T) {
	env, f, _, b := runningBatch(t, 6, "line", true, 40*time.Millisecond, 2) // a line takes about 240 ms
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ranBefore := f.gen.calls.Load()
	if ranBefore >= 6 {
		t.Fatalf("every line ran before the shutdown (%d)", ranBefore)
	}
	env.led.Close()

	url2, gen := restartBatches(t, f, env)
	done := waitBatch(t, url2, f.keyA, b.ID, final)
	if done.Status != "completed" || done.RequestCounts.Completed != 6 || done.RequestCounts.Failed != 0 {
		t.Fatalf("resumed batch %+v", done)
	}
	if total := ranBefore + gen.calls.Load(); total != 6 {
		t.Errorf("%d generations for 6 lines (%d before the restart)", total, ranBefore)
	}
	if n := usageRequests(t, url2, f.keyA); n != 6 {
		t.Errorf("%d requests metered, want 6", n)
	}
	out := outLines(t, fileContent(t, url2, f.keyA, *done.OutputFileID))
	ids := make([]string, 0, len(out))
	for id := range out {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) != 6 {
		t.Errorf("output lines %v", ids)
	}
}

// Cancel stops new lines and ends cancelled with the partial output.
func TestBatch_Cancel(t *testing.T) {
	_, f, url, b := runningBatch(t, 20, "l", false, 20*time.Millisecond, 1)
	resp := post(t, url+"/v1/batches/"+b.ID+"/cancel", f.keyA, "")
	var c batchObj
	decode(t, resp, &c)
	if c.Status != "cancelling" && c.Status != "cancelled" {
		t.Fatalf("cancel: %+v", c)
	}
	done := waitBatch(t, url, f.keyA, b.ID, final)
	if done.Status != "cancelled" || done.CancelledAt == nil || done.RequestCounts.Completed == 0 || done.RequestCounts.Completed >= 20 || done.OutputFileID == nil {
		t.Fatalf("cancelled batch %+v", done)
	}
	if n := len(outLines(t, fileContent(t, url, f.keyA, *done.OutputFileID))); n != done.RequestCounts.Completed {
		t.Errorf("%d output lines for %d completed", n, done.RequestCounts.Completed)
	}
	if n := usageRequests(t, url, f.keyA); n != done.RequestCounts.Completed {
		t.Errorf("%d metered for %d completed", n, done.RequestCounts.Completed)
	}
}

// A batch past its 24 hours expires: the lines it did not run go to the
// error file as batch_expired.
func TestBatch_Expires(t *testing.T) {
	env, f, url, b := runningBatch(t, 10, "l", false, 20*time.Millisecond, 1)
	env.clock.Store(int64(25 * time.Hour))
	done := waitBatch(t, url, f.keyA, b.ID, final)
	if done.Status != "expired" || done.ExpiredAt == nil || done.ErrorFileID == nil {
		t.Fatalf("batch %+v", done)
	}
	errs := outLines(t, fileContent(t, url, f.keyA, *done.ErrorFileID))
	if len(errs)+done.RequestCounts.Completed != 10 {
		t.Errorf("%d expired lines, %d completed", len(errs), done.RequestCounts.Completed)
	}
	for _, e := range errs {
		if e.Error == nil || e.Error.Code != "batch_expired" || e.Response != nil {
			t.Errorf("expired line %+v", e)
		}
	}
}

// A rate limit makes the runner wait, not fail lines (here the tenant's
// cap of sequences in flight, which three lines at once pass); a budget
// refusal is an error line.
func TestBatch_LimitsAndBudget(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.BatchConcurrency, c.TenantSequences = 3, 1 }))
	url := f.serve(t)
	f.gen.setDelay(10 * time.Millisecond)
	var limited struct{ Key string }
	decode(t, f.do(http.MethodPost, "/v1/keys", `{"name":"slow","limits":{"requests_per_minute":120}}`, f.authA()), &limited)
	var input []string
	for i := range 4 {
		input = append(input, chatLine(fmt.Sprint("l", i), "base", "x"))
	}
	in := mustUpload(t, url, limited.Key, strings.Join(input, "\n"))
	b := createBatch(t, url, limited.Key, in.ID, "/v1/chat/completions")
	done := waitBatch(t, url, limited.Key, b.ID, final)
	if done.Status != "completed" || done.RequestCounts.Completed != 4 || done.RequestCounts.Failed != 0 {
		t.Fatalf("rate-limited batch %+v", done)
	}

	resp := f.do(http.MethodPatch, "/admin/tenants/"+f.tenantB.ID, `{"monthly_budget_usd":0.0000001}`, hdr("Authorization", "Bearer "+adminToken))
	if resp.StatusCode != 200 {
		t.Skipf("budget: %d %s", resp.StatusCode, readAll(t, resp))
	}
	in = mustUpload(t, url, f.keyB, chatLine("x", "base", "x"))
	done = waitBatch(t, url, f.keyB, createBatch(t, url, f.keyB, in.ID, "/v1/chat/completions").ID, final)
	if done.Status != "completed" || done.RequestCounts.Failed != 1 || done.ErrorFileID == nil {
		t.Fatalf("budget batch %+v", done)
	}
	e := outLines(t, fileContent(t, url, f.keyB, *done.ErrorFileID))["x"]
	if e.Response == nil || e.Response.StatusCode != 429 && e.Response.StatusCode != 402 {
		t.Errorf("budget line %+v", e)
	}
}

// restartBatches starts a second server on the env's ledger and files
// folder (the first one shut down and its ledger closed) and returns its
// URL and runtime.
func restartBatches(t *testing.T, f *fixture, env *batchEnv) (string, *fakeGen) {
	t.Helper()
	led := env.open(t)
	t.Cleanup(func() { led.Close() })
	gen := newFakeGen(f.w)
	srv, err := gateway.New(gateway.Config{UploadDir: t.TempDir(), Logger: quietLogger(), HealthInterval: time.Hour, KeyTouchInterval: time.Hour,
		FilesDir: env.filesDir, Now: env.now, BatchConcurrency: 1},
		gateway.Deps{Tenants: led, Keys: led, Adapters: led, Store: f.store, Ledger: led, Budget: led, Reporter: led, Responses: led, Conversations: led, Batches: led,
			Upstreams: []gateway.Upstream{{ID: "rt0", Generator: gen.mock()}}})
	if err != nil {
		t.Fatal(err)
	}
	f2 := &fixture{t: t, w: f.w, srv: srv, gen: gen}
	return f2.serve(t), gen
}

// A batch whose 24 hours passed while the server was down expires when it
// starts again: the lines that completed before are in its output (not
// run again), the others in its error file as batch_expired.
func TestBatch_ExpiresWhileDown(t *testing.T) {
	env, f, _, b := runningBatch(t, 6, "line", true, 40*time.Millisecond, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	env.led.Close()
	env.clock.Store(int64(25 * time.Hour))
	url2, gen := restartBatches(t, f, env)
	done := waitBatch(t, url2, f.keyA, b.ID, final)
	if done.Status != "expired" || done.ExpiredAt == nil || done.RequestCounts.Completed < 2 || done.OutputFileID == nil || done.ErrorFileID == nil {
		t.Fatalf("batch %+v", done)
	}
	if n := gen.calls.Load(); n != 0 {
		t.Errorf("%d lines ran after the batch expired", n)
	}
	out := outLines(t, fileContent(t, url2, f.keyA, *done.OutputFileID))
	errs := outLines(t, fileContent(t, url2, f.keyA, *done.ErrorFileID))
	if len(out) != done.RequestCounts.Completed || len(out)+len(errs) != 6 {
		t.Errorf("%d output lines, %d expired, counts %+v", len(out), len(errs), done.RequestCounts)
	}
	for _, e := range errs {
		if e.Error == nil || e.Error.Code != "batch_expired" {
			t.Errorf("expired line %+v", e)
		}
	}
}

// A tenant's files stay within its storage quota: an upload past it is
// 413 file_storage_full and stores nothing; another tenant is not held
// back by it.
func TestBatch_FileQuota(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.TenantFileBytes = 200 }))
	url := f.serve(t)
	line := []byte(chatLine("a", "base", "x") + "\n") // 130 bytes: one fits, two do not
	mustUpload(t, url, f.keyA, string(line))
	resp := uploadFile(t, url, f.keyA, "batch", "b.jsonl", line)
	if resp.StatusCode != 413 || !strings.Contains(readAll(t, resp), "file_storage_full") {
		t.Errorf("upload past the quota: %d", resp.StatusCode)
	}
	var l struct{ Data []fileObj }
	getJSON(t, url+"/v1/files", f.keyA, &l)
	if len(l.Data) != 1 {
		t.Errorf("%d files after a refused upload", len(l.Data))
	}
	mustUpload(t, url, f.keyB, string(line))
}

// A batch whose input file was deleted while the server was down fails
// when it starts again, naming the input file, instead of completing
// empty.
func TestBatch_InputDeletedWhileDown(t *testing.T) {
	env, f, _, b := runningBatch(t, 6, "line", false, 40*time.Millisecond, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.led.DeleteFile(ctx, f.tenantA.ID, b.InputFileID); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(env.filesDir, b.InputFileID))
	env.led.Close()
	url2, _ := restartBatches(t, f, env)
	done := waitBatch(t, url2, f.keyA, b.ID, final)
	if done.Status != "failed" || done.Errors == nil || len(done.Errors.Data) != 1 || done.Errors.Data[0].Code != "invalid_file" {
		t.Fatalf("batch %+v", done)
	}
}

// outIDs is the custom_ids of an output or error file's lines, in order.
func outIDs(t *testing.T, raw string) []string {
	t.Helper()
	var ids []string
	for _, o := range outList(t, raw) {
		ids = append(ids, o.CustomID)
	}
	return ids
}

// metric reads a counter of the server at url.
func metric(t *testing.T, url, name string) int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(readAll(t, resp), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// A batch resumed after a restart goes on from the line after its saved
// progress: the lines answered before are neither run nor replayed from
// the ledger again, and the output holds every line once, in input order.
func TestBatch_ResumesFromProgress(t *testing.T) {
	const n = 8
	env, f, _, b := runningBatch(t, n, "line", true, 30*time.Millisecond, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ranBefore := int(f.gen.calls.Load())
	if ranBefore >= n {
		t.Fatalf("every line ran before the shutdown (%d)", ranBefore)
	}
	env.led.Close()

	url2, gen := restartBatches(t, f, env)
	done := waitBatch(t, url2, f.keyA, b.ID, final)
	if done.Status != "completed" || done.RequestCounts.Completed != n || done.RequestCounts.Failed != 0 {
		t.Fatalf("resumed batch %+v", done)
	}
	// the lines that went through the request path after the restart:
	// run by the runtime or answered from the ledger
	ran, replayed := int(gen.calls.Load()), metric(t, url2, "nozzle_gateway_idempotent_replays_total")
	if ran+replayed >= n || ran+ranBefore != n || replayed != 0 {
		t.Errorf("after the restart %d lines ran and %d were replayed, %d ran before, of %d", ran, replayed, ranBefore, n)
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprint("line", i)
	}
	if got := outIDs(t, fileContent(t, url2, f.keyA, *done.OutputFileID)); !slices.Equal(got, want) {
		t.Errorf("output lines %v, want %v", got, want)
	}
	if got := usageRequests(t, url2, f.keyA); got != n {
		t.Errorf("%d requests metered, want %d", got, n)
	}
}

// A batch the gateway stops while it is cancelling keeps, when it starts
// again, the error lines written before: its error file holds the error
// of every line that ran, once, and its output every answer, once.
func TestBatch_CancellingRestartKeepsErrors(t *testing.T) {
	const n = 12
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.BatchConcurrency = 1 }))
	url := f.serve(t)
	var input []string
	for i := range n {
		id := fmt.Sprint("l", i)
		if i%2 == 1 { // refused when it runs: an error line
			input = append(input, fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":"base","messages":[{"role":"user","content":"x"}],"max_tokens":100000}}`, id))
		} else {
			input = append(input, chatLine(id, "base", "x"))
		}
	}
	in := mustUpload(t, url, f.keyA, strings.Join(input, "\n"))
	f.gen.setDelay(10 * time.Millisecond)
	b := createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions")
	waitBatch(t, url, f.keyA, b.ID, func(b batchObj) bool { return b.RequestCounts.Completed+b.RequestCounts.Failed >= 4 })
	// a line held in the runtime while the batch is cancelled and the
	// gateway stops: the batch is still cancelling when it stops
	hold := make(chan struct{})
	f.gen.hold.Store(&hold)
	for c := f.gen.calls.Load(); f.gen.calls.Load() == c; { // a generation begun after the hold: held
		time.Sleep(5 * time.Millisecond)
	}
	resp := post(t, url+"/v1/batches/"+b.ID+"/cancel", f.keyA, "")
	if resp.StatusCode != 200 {
		t.Fatalf("cancel: %d %s", resp.StatusCode, readAll(t, resp))
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- f.srv.Shutdown(ctx) }()
	time.Sleep(500 * time.Millisecond)
	close(hold)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	stored, err := env.led.Batch(ctx, f.tenantA.ID, b.ID)
	if err != nil || stored.Status != nozzle.BatchCancelling {
		t.Fatalf("stopped batch %+v %v", stored, err)
	}
	ran := stored.Completed + stored.Failed // the first lines, one at a time
	if ran < 5 || ran >= n {
		t.Fatalf("%d lines ran before the stop", ran)
	}
	env.led.Close()

	url2, gen := restartBatches(t, f, env)
	done := waitBatch(t, url2, f.keyA, b.ID, final)
	var wantOut, wantErr []string
	for i := range ran {
		if i%2 == 1 {
			wantErr = append(wantErr, fmt.Sprint("l", i))
		} else {
			wantOut = append(wantOut, fmt.Sprint("l", i))
		}
	}
	if done.Status != "cancelled" || done.RequestCounts.Completed != len(wantOut) || done.RequestCounts.Failed != len(wantErr) ||
		done.OutputFileID == nil || done.ErrorFileID == nil {
		t.Fatalf("batch %+v, want %d completed and %d failed", done, len(wantOut), len(wantErr))
	}
	if got := outIDs(t, fileContent(t, url2, f.keyA, *done.ErrorFileID)); !slices.Equal(got, wantErr) {
		t.Errorf("error lines %v, want %v", got, wantErr)
	}
	if got := outIDs(t, fileContent(t, url2, f.keyA, *done.OutputFileID)); !slices.Equal(got, wantOut) {
		t.Errorf("output lines %v, want %v", got, wantOut)
	}
	if c := gen.calls.Load(); c != 0 {
		t.Errorf("%d lines ran after the restart of a cancelled batch", c)
	}
}

// A batch's output and error files count against the tenant's file
// storage quota: a batch whose answers would pass it stops and fails with
// file_storage_full, its output holding the whole lines that fit; the
// tenant's files, listed, stay within the quota, the ledger's sum of them
// is what is on disk, and no partial file is left.
func TestBatch_OutputPastFileQuota(t *testing.T) {
	// an answer's size, on a server without a quota
	env0 := newBatchEnv(t)
	f0 := newFixture(t, withBatches(t, env0, nil))
	url0 := f0.serve(t)
	in0 := mustUpload(t, url0, f0.keyA, chatLine("line0", "base", "x"))
	b0 := waitBatch(t, url0, f0.keyA, createBatch(t, url0, f0.keyA, in0.ID, "/v1/chat/completions").ID, final)
	if b0.OutputFileID == nil {
		t.Fatalf("batch %+v", b0)
	}
	answer := int64(len(fileContent(t, url0, f0.keyA, *b0.OutputFileID)))

	const n = 6
	var lines []string
	for i := range n {
		lines = append(lines, chatLine(fmt.Sprint("line", i), "base", "x"))
	}
	input := strings.Join(lines, "\n")
	quota := int64(len(input)) + 2*answer + answer/2 // two answers fit, not three
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.TenantFileBytes, c.BatchConcurrency = quota, 1 }))
	url := f.serve(t)
	in := mustUpload(t, url, f.keyA, input)
	done := waitBatch(t, url, f.keyA, createBatch(t, url, f.keyA, in.ID, "/v1/chat/completions").ID, final)
	if done.Status != "failed" || done.FailedAt == nil || done.Errors == nil || len(done.Errors.Data) != 1 ||
		done.Errors.Data[0].Code != "file_storage_full" || !strings.Contains(done.Errors.Data[0].Message, "quota") ||
		done.OutputFileID == nil || done.RequestCounts.Completed != 2 {
		t.Fatalf("batch %+v", done)
	}
	if got := outIDs(t, fileContent(t, url, f.keyA, *done.OutputFileID)); !slices.Equal(got, []string{"line0", "line1"}) {
		t.Errorf("output lines %v", got)
	}
	var l struct{ Data []fileObj }
	getJSON(t, url+"/v1/files", f.keyA, &l)
	var sum int64
	listed := map[string]bool{}
	for _, fo := range l.Data {
		st, err := os.Stat(filepath.Join(env.filesDir, fo.ID))
		if err != nil || st.Size() != fo.Bytes {
			t.Errorf("file %+v on disk: %v %v", fo, st, err)
		}
		sum += fo.Bytes
		listed[fo.ID] = true
	}
	if len(l.Data) != 2 || sum > quota {
		t.Errorf("%d files of %d bytes, quota %d", len(l.Data), sum, quota)
	}
	ctx := context.Background()
	if got, err := env.led.FileBytes(ctx, f.tenantA.ID); err != nil || got != sum {
		t.Errorf("ledger's file bytes %d (%v), listed %d", got, err, sum)
	}
	ents, _ := os.ReadDir(env.filesDir)
	for _, e := range ents {
		if !listed[e.Name()] {
			t.Errorf("file %s on disk, not listed", e.Name())
		}
	}
	if res, err := env.led.Check(ctx); err != nil || len(res.Problems) > 0 {
		t.Errorf("ledger check: %v %v", res, err)
	}
	// the quota still holds uploads
	resp := uploadFile(t, url, f.keyA, "batch", "b.jsonl", bytes.Repeat([]byte("x"), int(quota-sum+1)))
	if resp.StatusCode != 413 || !strings.Contains(readAll(t, resp), "file_storage_full") {
		t.Errorf("upload past the quota: %d", resp.StatusCode)
	}
}

// A batch resumed after a crash: answers its partial files hold past the
// saved progress (written after the last save) are cut and written again
// once; partial files that are gone make it run its lines again from the
// first, each answered once (those that completed from the ledger); a
// partial file of a batch not open is removed.
func TestBatch_ResumeAfterCrash(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, part string)
	}{
		{"unsaved answers", func(t *testing.T, part string) {
			fh, err := os.OpenFile(part, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			fmt.Fprintf(fh, `{"id":"batch_req_x","custom_id":"line7","response":{"status_code":200,"request_id":"req_x","body":{}},"error":null}`+"\n{\"partial")
		}},
		{"files lost", func(t *testing.T, part string) {
			if err := os.Remove(part); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 8
			env, f, _, b := runningBatch(t, n, "line", true, 30*time.Millisecond, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := f.srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			ranBefore := f.gen.calls.Load()
			env.led.Close()
			tc.crash(t, filepath.Join(env.filesDir, b.ID+".out.part"))
			// a done batch's partial file a crash left: removed on start
			if err := os.WriteFile(filepath.Join(env.filesDir, "batch_"+strings.Repeat("0", 28)+".err.part"), []byte("x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			url2, gen := restartBatches(t, f, env)
			done := waitBatch(t, url2, f.keyA, b.ID, final)
			if done.Status != "completed" || done.RequestCounts.Completed != n || done.RequestCounts.Failed != 0 {
				t.Fatalf("resumed batch %+v", done)
			}
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprint("line", i)
			}
			if got := outIDs(t, fileContent(t, url2, f.keyA, *done.OutputFileID)); !slices.Equal(got, want) {
				t.Errorf("output lines %v, want %v", got, want)
			}
			if total := ranBefore + gen.calls.Load(); total != n {
				t.Errorf("%d generations for %d lines", total, n)
			}
			if got := usageRequests(t, url2, f.keyA); got != n {
				t.Errorf("%d requests metered, want %d", got, n)
			}
			if ents, _ := os.ReadDir(env.filesDir); len(ents) != 2 { // the input and the output
				t.Errorf("files left: %v", ents)
			}
		})
	}
}
