package stripe_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// stripe-mock is the pinned version the tests run against.
const stripeMockModule = "github.com/stripe/stripe-mock@v0.203.0"

var (
	mockOnce sync.Once
	mockBin  string
	mockErr  error
)

// stripeMockBinary finds stripe-mock on PATH or in the Go bin folder, and
// installs it with `go install` when it is in neither, so that the tests
// never skip silently.
func stripeMockBinary(tb testing.TB) string {
	tb.Helper()
	mockOnce.Do(func() {
		if p, err := exec.LookPath("stripe-mock"); err == nil {
			mockBin = p
			return
		}
		bin := goBin()
		if p := filepath.Join(bin, "stripe-mock"); fileExists(p) {
			mockBin = p
			return
		}
		cmd := exec.Command("go", "install", stripeMockModule)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			mockErr = fmt.Errorf("go install %s: %v\n%s", stripeMockModule, err, out.String())
			return
		}
		mockBin = filepath.Join(bin, "stripe-mock")
		if !fileExists(mockBin) {
			mockErr = fmt.Errorf("stripe-mock not found in %s after go install", bin)
		}
	})
	if mockErr != nil {
		tb.Fatal(mockErr)
	}
	return mockBin
}

func goBin() string {
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return filepath.Join(os.Getenv("HOME"), "go", "bin")
	}
	// Two lines, GOBIN's empty when unset: not trimmed away before the split.
	lines := strings.Split(string(out), "\n")
	if gobin := strings.TrimSpace(lines[0]); gobin != "" {
		return gobin
	}
	if len(lines) < 2 {
		return filepath.Join(os.Getenv("HOME"), "go", "bin")
	}
	gopath := strings.TrimSpace(lines[1])
	return filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "bin")
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// freeAddr returns a local address nothing listens on.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startStripeMock runs stripe-mock on addr (a free port when empty) until
// stop or the end of the test, and returns its base URL. A free port can be
// taken by another process between the probe and stripe-mock's bind: when
// stripe-mock exits before it answers, it is started again on another port.
func startStripeMock(tb testing.TB, addr string) (url string, stop func()) {
	tb.Helper()
	bin := stripeMockBinary(tb)
	pick := addr == ""
	for attempt := 1; ; attempt++ {
		if pick {
			addr = freeAddr(tb)
		}
		cmd := exec.Command(bin, "-http-addr", addr)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			close(exited)
		}()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cmd.Process.Kill()
				<-exited
			})
		}
		tb.Cleanup(stop)
		if up(tb, addr, exited, &logs, stop) {
			return "http://" + addr, stop
		}
		// It exited before answering: it could not listen (the port was
		// taken). Another port, when the test let it pick one.
		if !pick || attempt == 5 {
			tb.Fatalf("stripe-mock exited before listening on %s: %s", addr, logs.String())
		}
	}
}

// up waits until the stripe-mock that exits by closing exited answers on
// addr (true), or exits first (false).
func up(tb testing.TB, addr string, exited chan struct{}, logs *bytes.Buffer, stop func()) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !isClosed(exited) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			// An answer from another process that holds the port while
			// ours exits is no answer.
			time.Sleep(20 * time.Millisecond)
			return !isClosed(exited)
		}
		if time.Now().After(deadline) {
			stop()
			tb.Fatalf("stripe-mock did not start on %s: %s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
