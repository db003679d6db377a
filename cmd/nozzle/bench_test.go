package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchGateway runs `nozzle bench gateway` briefly over either stub
// upstream: both paths answer without errors, the ledger's sync floor and
// every rate come out as JSON lines.
func TestBenchGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs load for a few seconds")
	}
	for _, stub := range []string{"replay", "runtime"} {
		t.Run(stub, func(t *testing.T) { testBenchGateway(t, stub) })
	}
}

func testBenchGateway(t *testing.T, stub string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "gateway", "--rps", "200", "--duration", "300ms", "--stub", stub, "--ledger-dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	var sync, results int
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		switch {
		case m["metric"] == "ledger_sync":
			if m["p99_us"].(float64) <= 0 || m["p99_us"].(float64) < m["p50_us"].(float64) {
				t.Errorf("sync figures %v", m)
			}
			sync++
		case m["result"] != nil:
			r := m["result"].(map[string]any)
			// the figures are the benchmark's business, not the test's: a
			// loaded machine may fall short of the rate asked for
			if r["gateway_errors"].(float64) != 0 || r["gateway_achieved_rps"].(float64) <= 0 {
				t.Errorf("result %v", r)
			}
			results++
		}
	}
	if sync != 1 || results != 1 {
		t.Errorf("%d sync lines, %d results:\n%s", sync, results, out.String())
	}
}
