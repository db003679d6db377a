package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestTools_AgainstRunningServer runs the operator's ledger tools while
// `nozzle serve` holds the ledger (they go through its admin API), then
// against the file once it has stopped: report for one tenant (by name),
// backup, ledger check.
func TestTools_AgainstRunningServer(t *testing.T) {
	m, stop := startServe(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)
	data := m.Config.Data
	tool := func(args ...string) (string, error) {
		t.Helper()
		var out, errb bytes.Buffer
		args = append(args, "--data", data, "--addr", m.Addr)
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			return out.String(), &toolError{args, errb.String()}
		}
		return out.String(), nil
	}
	// Usage of the demo tenant, and of a second tenant.
	for _, body := range []string{
		`{"model":"demo-chat","messages":[{"role":"user","content":"Hi"}],"max_tokens":3}`,
		`{"model":"base","prompt":"Hi","max_tokens":2}`,
	} {
		path := "/v1/chat/completions"
		if strings.Contains(body, `"prompt"`) {
			path = "/v1/completions"
		}
		if resp, b := post(t, base+path, key, body); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	}
	other := &nozzle.Tenant{Name: "globex"}
	if err := m.Ledger.CreateTenant(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ledger.RecordUsage(context.Background(), &nozzle.UsageEvent{RequestID: "globex-1", TenantID: other.ID,
		Model: "base", Status: nozzle.UsageOK, Time: time.Now(), PromptTokens: 5, CompletionTokens: 5}); err != nil {
		t.Fatal(err)
	}

	check := func(mode string) {
		t.Helper()
		out, err := tool("report", "--tenant", demoTenant, "--format", "json")
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		var rep nozzle.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		if rep.Total.Requests != 2 || len(rep.Rows) != 2 {
			t.Fatalf("%s: the demo tenant's report has %d requests in %d rows:\n%s", mode, rep.Total.Requests, len(rep.Rows), out)
		}
		out, err = tool("report")
		if err != nil || !strings.Contains(out, "demo-chat") || !strings.Contains(out, "(base model)") || !strings.Contains(out, "globex") {
			t.Fatalf("%s: table %v\n%s", mode, err, out)
		}
		if _, err := tool("report", "--tenant", "nobody"); err == nil || !strings.Contains(err.Error(), "nobody") {
			t.Fatalf("%s: report of an unknown tenant: %v", mode, err)
		}
		out, err = tool("ledger", "check")
		if err != nil || !strings.Contains(out, "events 3") || !strings.Contains(out, "ok:") {
			t.Fatalf("%s: ledger check %v\n%s", mode, err, out)
		}
		backup := filepath.Join(t.TempDir(), "backup.db")
		if _, err := tool("backup", backup); err != nil {
			t.Fatalf("%s: backup: %v", mode, err)
		}
		l, err := billing.Open(billing.Options{Path: backup})
		if err != nil {
			t.Fatalf("%s: open backup: %v", mode, err)
		}
		defer l.Close()
		if res, err := l.Check(context.Background()); err != nil || res.Events != 3 || len(res.Problems) != 0 {
			t.Fatalf("%s: backup check %+v %v", mode, res, err)
		}
	}
	check("served")
	stop()
	if _, err := os.Stat(filepath.Join(data, "ledger.db")); err != nil {
		t.Fatal(err)
	}
	check("offline")
}

type toolError struct {
	args   []string
	stderr string
}

func (e *toolError) Error() string { return strings.Join(e.args, " ") + ": " + e.stderr }
