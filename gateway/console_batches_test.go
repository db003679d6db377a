package gateway_test

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/web"
)

// withConsole gives a fixture the console (its users in the fixture's
// ledger: with withBatches, the real one).
func withConsole() option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		d.Extensions = append(d.Extensions, gateway.Console(gateway.ConsoleConfig{Static: web.Static, Templates: web.Templates, Layouts: web.Layouts, SigningKey: consoleKey}))
	}
}

// consoleUser signs a new user of tenant in to the fixture's console.
func (f *fixture) consoleUser(t *testing.T, tenant *nozzle.Tenant, email string) *consoleBrowser {
	t.Helper()
	b, _, _ := f.consoleUserOp(t, tenant, email)
	return b
}

// consoleUserOp is consoleUser that also returns the operator's browser
// and the user's id.
func (f *fixture) consoleUserOp(t *testing.T, tenant *nozzle.Tenant, email string) (user, op *consoleBrowser, userID string) {
	t.Helper()
	cf := &consoleFixture{t: t, srv: f.srv}
	op = cf.browser()
	if resp, body := op.login(opEmail, opPassword); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("operator sign-in: %d %s", resp.StatusCode, body)
	}
	op.page("/console/operator")
	resp, body := op.api(http.MethodPost, "/console/api/operator/tenants/"+tenant.ID+"/users", `{"email": "`+email+`", "password": "tenant-password-1"}`)
	wantConsoleStatus(t, resp, http.StatusCreated, body)
	var u struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &u); err != nil || u.ID == "" {
		t.Fatalf("created user: %s", body)
	}
	user = cf.browser()
	if resp, body := user.login(email, "tenant-password-1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	return user, op, u.ID
}

// The Batches page lists the tenant's batches (never another tenant's)
// with their status and counts, offers Cancel while one runs, and once it
// ends links its output file, which downloads as an attachment under its
// name with the API's bytes; another tenant gets a 404 for it.
func TestConsole_BatchesPage(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.BatchConcurrency = 1 }), withConsole())
	if err := gateway.EnsureOperator(t.Context(), env.led, opEmail, opPassword); err != nil {
		t.Fatal(err)
	}
	url := f.serve(t)
	a := f.consoleUser(t, f.tenantA, "dev@acme.test")
	b := f.consoleUser(t, f.tenantB, "dev@globex.test")

	_, page := a.page("/console/batches")
	if !strings.Contains(page, `href="/console/batches" aria-current="page"`) || !strings.Contains(page, `id="batches-empty"`) {
		t.Fatalf("empty batches page:\n%s", page)
	}

	// A batch that runs slowly: the page shows it running, with Cancel.
	var lines []string
	for i := range 6 {
		lines = append(lines, chatLine(fmt.Sprint("q", i), "base", "x"))
	}
	in := uploadFile(t, url, f.keyA, "batch", "questions.jsonl", []byte(strings.Join(lines, "\n")))
	var inFile fileObj
	json.Unmarshal([]byte(readAll(t, in)), &inFile)
	f.gen.setDelay(20 * time.Millisecond)
	slow := createBatch(t, url, f.keyA, inFile.ID, "/v1/chat/completions")
	waitBatch(t, url, f.keyA, slow.ID, func(b batchObj) bool { return b.Status == nozzle.BatchInProgress })
	_, page = a.page("/console/batches")
	row := batchRow(t, page, slow.ID)
	for _, want := range []string{"questions.jsonl", "In progress", "/console/api/batches/" + slow.ID + "/cancel", "of 6", "/v1/chat/completions"} {
		if !strings.Contains(row, want) {
			t.Errorf("running batch's row lacks %q:\n%s", want, row)
		}
	}
	if !strings.Contains(page, `data-batches-live="/console/api/batches?limit=100"`) {
		t.Error("a page with a running batch does not follow it")
	}
	if _, other := b.page("/console/batches"); strings.Contains(other, slow.ID) || !strings.Contains(other, `id="batches-empty"`) {
		t.Errorf("another tenant's page shows the batch:\n%s", other)
	}
	// What the page's script reads while it runs.
	resp, body := a.api(http.MethodGet, "/console/api/batches?limit=100", "")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	if !strings.Contains(body, `"id":"`+slow.ID+`"`) || !strings.Contains(body, `"request_counts"`) {
		t.Errorf("live list: %s", body)
	}

	// Cancel needs the CSRF token, and works with it.
	resp = a.do(http.MethodPost, "/console/api/batches/"+slow.ID+"/cancel", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cancel without CSRF token: %d", resp.StatusCode)
	}
	if resp, body := b.api(http.MethodPost, "/console/api/batches/"+slow.ID+"/cancel", ""); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another tenant cancels: %d %s", resp.StatusCode, body)
	}
	resp, body = a.api(http.MethodPost, "/console/api/batches/"+slow.ID+"/cancel", "")
	wantConsoleStatus(t, resp, http.StatusOK, body)
	done := waitBatch(t, url, f.keyA, slow.ID, final)
	if done.Status != nozzle.BatchCancelled {
		t.Fatalf("cancelled batch: %+v", done)
	}

	// A batch that completes: its output downloads from the page's link.
	f.gen.setDelay(0)
	quick := createBatch(t, url, f.keyA, inFile.ID, "/v1/chat/completions")
	quick = waitBatch(t, url, f.keyA, quick.ID, final)
	if quick.Status != nozzle.BatchCompleted || quick.OutputFileID == nil {
		t.Fatalf("batch: %+v", quick)
	}
	_, page = a.page("/console/batches")
	row = batchRow(t, page, quick.ID)
	link := "/console/api/files/" + *quick.OutputFileID + "/content"
	for _, want := range []string{"Completed", link, "6 done of 6"} {
		if !strings.Contains(row, want) {
			t.Errorf("completed batch's row lacks %q:\n%s", want, row)
		}
	}
	if strings.Contains(row, "/cancel") {
		t.Errorf("a completed batch offers Cancel:\n%s", row)
	}
	if row := batchRow(t, page, slow.ID); !strings.Contains(row, "Cancelled") {
		t.Errorf("cancelled batch's row:\n%s", row)
	}
	if strings.Contains(page, "data-batches-live") {
		t.Error("a page of ended batches polls")
	}
	resp = a.do(http.MethodGet, link, nil)
	got := readAll(t, resp)
	if resp.StatusCode != http.StatusOK || got != fileContent(t, url, f.keyA, *quick.OutputFileID) || len(outLines(t, got)) != 6 {
		t.Fatalf("download: %d %q", resp.StatusCode, got)
	}
	disp, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
	if err != nil || disp != "attachment" || !strings.HasSuffix(params["filename"], ".jsonl") {
		t.Errorf("Content-Disposition %q", resp.Header.Get("Content-Disposition"))
	}
	if resp := b.do(http.MethodGet, link, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another tenant downloads the output: %d", resp.StatusCode)
	}
	if resp := f.do(http.MethodGet, link, ""); resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Errorf("no session downloads the output: %d", resp.StatusCode)
	}
}

// batchRow is the table row of batch id on a Batches page.
func batchRow(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `<tr data-batch="`+id+`"`)
	if i < 0 {
		t.Fatalf("no row for %s:\n%s", id, page)
	}
	row, _, _ := strings.Cut(page[i:], "</tr>")
	return row
}

// A console without the Batch API (no files folder) neither offers nor
// serves the page.
func TestConsole_NoBatchesPage(t *testing.T) {
	f := newConsoleFixture(t)
	u, _ := f.tenantUser("acme")
	_, page := u.page("/console/keys")
	if strings.Contains(page, `href="/console/batches"`) {
		t.Error("navigation offers Batches without the Batch API")
	}
	if resp, _ := u.page("/console/batches"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("batches page without the Batch API: %d", resp.StatusCode)
	}
}

// A batch made on the console (its file uploaded, then the batch created,
// with the session's CSRF token) runs as the console user under the
// tenant's limits and is listed with the API's; once the operator disables
// the user, its remaining lines fail, each with the reason, and nothing
// more is charged.
func TestConsole_BatchFromConsole(t *testing.T) {
	env := newBatchEnv(t)
	f := newFixture(t, withBatches(t, env, func(c *gateway.Config) { c.BatchConcurrency = 1 }), withConsole())
	if err := gateway.EnsureOperator(t.Context(), env.led, opEmail, opPassword); err != nil {
		t.Fatal(err)
	}
	url := f.serve(t)
	a, op, userID := f.consoleUserOp(t, f.tenantA, "dev@acme.test")
	_, page := a.page("/console/batches")
	for _, want := range []string{`id="batch-form"`, `<option value="/v1/chat/completions">`, `<option value="/v1/responses">`} {
		if !strings.Contains(page, want) {
			t.Fatalf("the page lacks %s", want)
		}
	}
	upload := func(n int) string {
		t.Helper()
		var lines []string
		for i := range n {
			lines = append(lines, chatLine(fmt.Sprint("c", i), "base", "x"))
		}
		body, ctype := consoleMultipart(t, map[string]string{"purpose": "batch"}, map[string][]byte{"file": []byte(strings.Join(lines, "\n"))})
		resp := a.do(http.MethodPost, "/console/api/files", body, "Content-Type", ctype, gateway.HeaderCSRFToken, a.csrf)
		raw := readAll(t, resp)
		var fo fileObj
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(raw), &fo) != nil || fo.Purpose != "batch" {
			t.Fatalf("upload: %d %s", resp.StatusCode, raw)
		}
		return fo.ID
	}
	create := func(fileID string) batchObj {
		t.Helper()
		resp, body := a.api(http.MethodPost, "/console/api/batches", `{"input_file_id":"`+fileID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
		wantConsoleStatus(t, resp, http.StatusOK, body)
		var b batchObj
		json.Unmarshal([]byte(body), &b)
		return b
	}

	b := waitBatch(t, url, f.keyA, create(upload(3)).ID, final)
	if b.Status != nozzle.BatchCompleted || b.RequestCounts.Completed != 3 || b.OutputFileID == nil {
		t.Fatalf("console batch: %+v", b)
	}
	if got := outLines(t, fileContent(t, url, f.keyA, *b.OutputFileID)); len(got) != 3 {
		t.Fatalf("output: %v", got)
	}
	charged := usageRequests(t, url, f.keyA)

	// The file of a batch that is not created can be deleted on the console.
	orphan := upload(1)
	if resp, body := a.api(http.MethodDelete, "/console/api/files/"+orphan, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("delete file: %d %s", resp.StatusCode, body)
	}

	// The user is disabled while a batch of theirs runs.
	f.gen.setDelay(30 * time.Millisecond)
	slow := create(upload(6))
	waitBatch(t, url, f.keyA, slow.ID, func(b batchObj) bool { return b.RequestCounts.Completed >= 1 })
	op.page("/console/operator")
	if resp, body := op.api(http.MethodPatch, "/console/api/operator/users/"+userID, `{"disabled": true}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("disable: %d %s", resp.StatusCode, body)
	}
	slow = waitBatch(t, url, f.keyA, slow.ID, final)
	if slow.RequestCounts.Failed == 0 || slow.RequestCounts.Completed+slow.RequestCounts.Failed != 6 || slow.ErrorFileID == nil {
		t.Fatalf("batch of a disabled user: %+v", slow)
	}
	if errs := fileContent(t, url, f.keyA, *slow.ErrorFileID); !strings.Contains(errs, "has been disabled") {
		t.Errorf("error file: %s", errs)
	}
	if got := usageRequests(t, url, f.keyA); got != charged+slow.RequestCounts.Completed {
		t.Errorf("requests charged %d, want %d", got, charged+slow.RequestCounts.Completed)
	}
}
