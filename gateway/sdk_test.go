package gateway_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/gateway"
)

// TestOpenAISDK runs the official openai npm SDK (pinned in
// testdata/sdk/package.json) against the gateway on a real loopback port.
// scripts/test-deps installs the SDK; without node the test is skipped.
func TestOpenAISDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "sdk"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Skip("npm is not installed")
		}
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes, defaultWords...))
	f.addAdapter(f.tenantA.ID, "support-bot", strings.Repeat("5", 64))
	f.addAdapter(f.tenantA.ID, "old-bot", strings.Repeat("6", 64))
	url := f.serve(t)

	var limited struct{ Key string }
	decode(t, f.do(http.MethodPost, "/v1/keys", `{"name":"limited","limits":{"requests_per_minute":1}}`, f.authA()), &limited)
	if r := post(t, url+"/v1/chat/completions", limited.Key, chatBody("base", "hi")); r.StatusCode != 200 {
		t.Fatalf("limited key's first request: %d", r.StatusCode)
	}

	thinker := newFixture(t, withReasoning(false, "<think>", "\nThe user", " greets me.\n", "</think>", "\n\n", "Hello!"))
	thinkerURL := thinker.serve(t)

	// Stored responses: a gateway over a real ledger.
	var led *billing.Ledger
	stored := newFixture(t, withLedger(t, &led), withToolFormat(nozzle.ToolFormatHermes, defaultWords...),
		withConfig(func(c *gateway.Config) { c.FilesDir = filepath.Join(t.TempDir(), "files") }))
	storedURL := stored.serve(t)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "run.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NOZZLE_URL="+url, "NOZZLE_KEY="+f.keyA, "NOZZLE_LIMITED_KEY="+limited.Key,
		"NOZZLE_REASONING_URL="+thinkerURL, "NOZZLE_REASONING_KEY="+thinker.keyA,
		"NOZZLE_STORE_URL="+storedURL, "NOZZLE_STORE_KEY="+stored.keyA, "NOZZLE_STORE_OTHER_KEY="+stored.keyB)
	out, err := cmd.CombinedOutput()
	t.Logf("node run.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("SDK checks failed: %v", err)
	}
	if !strings.Contains(string(out), "all ok") {
		t.Fatalf("SDK script did not finish")
	}
	// The last stored turn (a tool's output, through previous_response_id)
	// saw the turn before it.
	if m := stored.gen.lastReq.Load().Messages; len(m) != 3 || m[0].Content != "Weather in Bern?" || m[1].Role != "assistant" ||
		m[2].Role != "tool" || m[2].ToolCallID != "call_1" || m[2].Content != `{"temp":19}` {
		t.Errorf("the stored conversation's messages the runtime got: %+v", m)
	}
	// The answer the SDK sent back carried its thoughts to the template.
	if m := thinker.gen.lastReq.Load().Messages; len(m) != 3 || m[1].Role != "assistant" || m[1].ReasoningContent != "The user greets me." || m[1].Content != "Hello!" {
		t.Errorf("the multi-turn messages the runtime got: %+v", m)
	}
}
