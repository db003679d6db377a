package gateway_test

import (
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/web"
)

var consoleServe = flag.String("console.serve", "", "serve the console with an in-memory pool on a real port, write its address "+
	"as JSON to this file, and run until interrupted (web/tests/run.mjs --server=mock)")

// TestConsoleServe runs the gateway and its console over an in-memory pool
// on 127.0.0.1, for the browser tests to drive while no full binary is at
// hand. It is skipped unless -console.serve names the file to write the
// address to.
func TestConsoleServe(t *testing.T) {
	if *consoleServe == "" {
		t.Skip("set -console.serve=FILE to serve the console for the browser tests")
	}
	w := newWorld(consolePrice)
	w.delay = 40 * time.Millisecond
	// a reasoning model, so the playground's Thoughts can be seen: it
	// thinks when asked to (thinkPrompt), else answers as before
	w.reasoning = true
	deps := w.deps()
	deps.Extensions = []gateway.Extension{gateway.Console(gateway.ConsoleConfig{Static: web.Static, Templates: web.Templates, Layouts: web.Layouts, SigningKey: []byte("browser-test signing key, 32 bytes or more")})}
	dir := t.TempDir()
	adapter := filepath.Join(dir, "demo-adapters", "support-bot")
	if err := writeTestAdapter(adapter, 8); err != nil {
		t.Fatal(err)
	}
	// A tenant's adapter storage holds the test adapter once, not twice.
	var size int64
	for _, name := range []string{nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile} {
		fi, err := os.Stat(filepath.Join(adapter, name))
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	quota := size * 3 / 2
	srv, err := gateway.New(gateway.Config{AdminToken: "admin-token-for-browser-tests", UploadLimit: 4 << 20, UploadDir: filepath.Join(dir, "uploads"),
		TenantAdapterBytes: quota, Logger: quietLogger()}, deps)
	if err != nil {
		t.Fatal(err)
	}
	const email, password = "operator@example.com", "operator-password-1"
	if err := gateway.EnsureOperator(t.Context(), deps.Users, email, password); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	info, _ := json.Marshal(map[string]any{"url": "http://" + ln.Addr().String(), "operator_email": email, "operator_password": password,
		"adapter_dir": adapter, "upload_limit": 4 << 20, "storage_quota": quota})
	if err := os.WriteFile(*consoleServe, info, 0o644); err != nil {
		t.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-sig:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(20 * time.Minute):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
