// Command nozzle is the one binary of Nozzle: the gateway and runtime
// (together or apart), the ledger tools and the benchmarks.
//
//	nozzle serve            gateway + runtime in one process (the demo without --model)
//	nozzle gateway          the gateway alone, in front of remote runtimes
//	nozzle runtime          a runtime alone, serving a gateway over the private network
//	nozzle report           usage and cost report from the ledger
//	nozzle backup FILE      hot backup of the ledger
//	nozzle ledger check     consistency check of the ledger
//	nozzle bench WHAT       benchmarks: engine, serve, gateway, billing
//	nozzle version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nozzle-ai/nozzle"
)

const usage = `Nozzle serves many LoRA adapters on one warm base model and splits the GPU bill.

Usage: nozzle <command> [flags]

Commands:
  serve          gateway and runtime in one process (the demo model unless --model)
  gateway        the gateway alone, in front of remote runtimes (--upstreams)
  runtime        a runtime alone, serving gateways over the private network
  report         usage and cost report from the ledger
  backup FILE    hot backup of the ledger into FILE
  ledger check   check that the ledger's rollups equal the sum of its events
  bench WHAT     benchmarks: engine, serve, gateway or billing
  version        print the version

Run "nozzle <command> --help" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command and returns the process exit status. Every
// failure is one line on stderr: "nozzle: <what went wrong>".
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	var err error
	switch cmd {
	case "serve", "gateway", "runtime":
		err = runServer(ctx, cmd, args, stdout, stderr)
	case "report":
		err = runReport(ctx, args, stdout, stderr)
	case "backup":
		err = runBackup(ctx, args, stdout, stderr)
	case "ledger":
		err = runLedger(ctx, args, stdout, stderr)
	case "bench":
		err = runBench(ctx, args, stdout, stderr)
	case "version", "--version", "-version":
		if nozzle.Commit == "" || strings.HasPrefix(nozzle.Version, nozzle.Commit) {
			fmt.Fprintf(stdout, "nozzle %s\n", nozzle.Version) // untagged: the version is the commit
		} else {
			fmt.Fprintf(stdout, "nozzle %s (commit %s)\n", nozzle.Version, nozzle.Commit)
		}
	case "help", "--help", "-h", "-help":
		fmt.Fprint(stdout, usage)
	default:
		err = fmt.Errorf("unknown command %q (run nozzle help)", cmd)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "nozzle: %s\n", oneLine(err))
	return 1
}

// errUsage marks an error whose usage text was already printed.
var errUsage = errors.New("usage")

// oneLine flattens an error message to a single line.
func oneLine(err error) string {
	msg := err.Error()
	if e := nozzle.AsError(err); e != nil && e.Code != nozzle.EINTERNAL {
		msg = err.Error()
	}
	return strings.Join(strings.Fields(msg), " ")
}

// newLogger builds the process's one slog handler: JSON in production,
// text on a terminal.
func newLogger(cfg Config, w *os.File) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
