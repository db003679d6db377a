package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServe_SIGTERMLogsStopped: SIGTERM while a stream runs lets it finish
// (the drain), and once the drain is done and the ledger closed the server
// logs one "stopped" line with the completions it drained and how long
// that took, so that an operator sees the stop was clean.
func TestServe_SIGTERMLogsStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	data := t.TempDir()
	var logs bytes.Buffer
	// One engine thread: the stream of 600 tokens (the demo model ends it
	// no earlier) is still running when the signal comes.
	cmd, base := startProcessLog(t, &logs, data, "--log-level", "info", "--threads", "1")
	key, err := os.ReadFile(filepath.Join(data, "demo-api-key"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"demo-chat","stream":true,"max_tokens":600,"temperature":0,"messages":[{"role":"user","content":"tell me a long story"}]}`
	resp := openStream(t, http.DefaultClient, base+"/v1/chat/completions", strings.TrimSpace(string(key)), body)
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if _, err := rd.ReadString('\n'); err != nil { // the stream is under way
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || !strings.Contains(string(rest), "data: [DONE]") {
		t.Errorf("the stream did not finish in the drain: %v, %d bytes, ends %q", err, len(rest), rest[max(0, len(rest)-100):])
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the server did not stop within a minute of SIGTERM")
	}
	var stopped []map[string]any
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, line := range lines {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "stopped" {
			stopped = append(stopped, rec)
		}
	}
	if len(stopped) != 1 {
		t.Fatalf("%d \"stopped\" lines, want 1:\n%s", len(stopped), logs.String())
	}
	rec := stopped[0]
	if rec["level"] != "INFO" || rec["drained_requests"] != float64(1) {
		t.Errorf("stopped line %v: want level INFO and drained_requests 1", rec)
	}
	if d, ok := rec["drain_seconds"].(float64); !ok || d <= 0 || d > float64(shutdownGrace/time.Second) {
		t.Errorf("stopped line %v: drain_seconds not in (0, %v]", rec, shutdownGrace)
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, `"msg":"stopped"`) {
		t.Errorf("the last line is not the stopped one: %s", last)
	}
}
