package main

import (
	"context"
	"errors"
	"io"
)

var errNotWired = errors.New("this command is not wired yet")

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errNotWired
}
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errNotWired
}
func runLedger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errNotWired
}
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error { return errNotWired }
