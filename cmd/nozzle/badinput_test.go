package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/billing"
)

// TestRun_BadInput: each problem a newcomer can cause is one clear line on
// stderr naming it, and a non-zero exit — never a stack trace.
func TestRun_BadInput(t *testing.T) {
	dir := t.TempDir()
	noConfig := filepath.Join(dir, "empty-model")
	os.Mkdir(noConfig, 0o755)
	badArch := filepath.Join(dir, "bert")
	os.Mkdir(badArch, 0o755)
	os.WriteFile(filepath.Join(badArch, "config.json"), []byte(`{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8}`), 0o644)
	badToml := filepath.Join(dir, "bad.toml")
	os.WriteFile(badToml, []byte("slots = [\n"), 0o644)
	aFile := filepath.Join(dir, "a-file")
	os.WriteFile(aFile, nil, 0o644)
	readOnly := filepath.Join(dir, "ro")
	os.Mkdir(readOnly, 0o555)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	lib := engineLib(t)
	ledDir := filepath.Join(dir, "led")
	os.Mkdir(ledDir, 0o755)
	led, err := billing.Open(billing.Options{Path: filepath.Join(ledDir, "ledger.db")})
	if err != nil {
		t.Fatal(err)
	}
	led.Close()

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"UnknownCommand", []string{"serv"}, `unknown command "serv"`},
		{"UnknownFlag", []string{"serve", "--modle", "x"}, "flag provided but not defined: -modle"},
		{"ConfigDoesNotParse", []string{"serve", "--config", badToml}, "config file " + badToml},
		{"ModelFolderMissing", []string{"serve", "--data", filepath.Join(dir, "d1"), "--addr", "127.0.0.1:0", "--model", filepath.Join(dir, "nope")}, "model folder " + filepath.Join(dir, "nope")},
		{"ModelFolderMissingFiles", []string{"serve", "--data", filepath.Join(dir, "d2"), "--addr", "127.0.0.1:0", "--model", noConfig}, "config.json"},
		{"UnsupportedArchitecture", []string{"serve", "--data", filepath.Join(dir, "d3"), "--addr", "127.0.0.1:0", "--model", badArch}, "BertModel"},
		{"DataNotWritable", []string{"serve", "--data", filepath.Join(readOnly, "data"), "--addr", "127.0.0.1:0"}, "data folder " + filepath.Join(readOnly, "data")},
		{"DataUnderAFile", []string{"serve", "--data", filepath.Join(aFile, "data"), "--addr", "127.0.0.1:0"}, "data folder " + filepath.Join(aFile, "data")},
		{"PortInUse", []string{"serve", "--data", filepath.Join(dir, "d4"), "--addr", busy.Addr().String(), "--engine-lib", lib}, "already in use"},
		{"GatewayWithoutUpstreams", []string{"gateway", "--data", filepath.Join(dir, "d5")}, "--upstreams names no runtime"},
		{"BackupWithoutFile", []string{"backup", "--data", dir}, "name the file to write"},
		{"BackupOntoTheLedger", []string{"backup", "--data", ledDir, filepath.Join(ledDir, "ledger.db")}, "is the ledger's own file"},
		{"BackupOntoTheJournal", []string{"backup", "--data", ledDir, filepath.Join(ledDir, "ledger.db.journal.1")}, "is the ledger's own file"},
		{"BackupIntoAFolder", []string{"backup", "--data", ledDir, dir}, "is a folder"},
		{"ReportExtraArgument", []string{"report", "--data", ledDir, "acme"}, `unexpected argument "acme"`},
		{"LedgerCheckExtraArgument", []string{"ledger", "check", "now", "--data", ledDir}, `unexpected argument "now"`},
		{"BackupTwoFiles", []string{"backup", "--data", ledDir, filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")}, "one file to write, not 2"},
		{"BoolValueApart", []string{"serve", "--prefix-cache", "false"}, "--prefix-cache=false"},
		{"ReportNoLedger", []string{"report", "--data", filepath.Join(dir, "none")}, "no ledger at"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "DataNotWritable" && os.Geteuid() == 0 {
				t.Skip("root writes into read-only folders")
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			msg := stderr.String()
			if code == 0 {
				t.Fatalf("exit 0, stderr %q", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Fatalf("stderr %q, want it to name %q", msg, tt.want)
			}
			if n := strings.Count(strings.TrimSpace(msg), "\n"); n > 0 || strings.Contains(msg, "goroutine") {
				t.Fatalf("want one line, got %d: %q", n+1, msg)
			}
			if !strings.HasPrefix(msg, "nozzle: ") {
				t.Fatalf("want a line starting with 'nozzle: ', got %q", msg)
			}
		})
	}
}

// Help is asked for, not an error: usage on stdout or stderr, exit 0.
func TestRun_Help(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"bench", "-h"}, {"serve", "-h"}, {"gateway", "--help"}, {"report", "-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
		if !strings.Contains(stdout.String()+stderr.String(), "Usage") || strings.Contains(stderr.String(), "nozzle: ") {
			t.Errorf("%v: stdout %q stderr %q", args, stdout.String(), stderr.String())
		}
	}
}
