package nozzle_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

func TestErrorCode(t *testing.T) {
	e := nozzle.Errorf(nozzle.ENOTFOUND, "The model %q does not exist.", "x").WithReason("model_not_found")
	wrapped := fmt.Errorf("resolve: %w", e)
	if got, want := nozzle.ErrorCode(wrapped), nozzle.ENOTFOUND; got != want {
		t.Fatalf("ErrorCode=%q, want %q", got, want)
	}
	if got, want := nozzle.ErrorMessage(wrapped), `The model "x" does not exist.`; got != want {
		t.Fatalf("ErrorMessage=%q, want %q", got, want)
	}
	plain := errors.New("disk on fire")
	if got := nozzle.ErrorCode(plain); got != nozzle.EINTERNAL {
		t.Fatalf("ErrorCode(plain)=%q", got)
	}
	if got := nozzle.ErrorMessage(plain); got != "Internal error." {
		t.Fatalf("ErrorMessage(plain)=%q", got)
	}
	internal := nozzle.Errorf(nozzle.EINTERNAL, "secret path /etc/x")
	if got := nozzle.ErrorMessage(internal); got != "Internal error." {
		t.Fatalf("internal message leaked: %q", got)
	}
	if nozzle.ErrorCode(nil) != "" {
		t.Fatal("nil error has a code")
	}
}

func TestValidateAdapterName(t *testing.T) {
	for _, ok := range []string{"sql", "sql-v2", "a.b_c", "X1"} {
		if err := nozzle.ValidateAdapterName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../etc", "a/b", "a\\b", ".hidden", "a..b", "base", "-x", string(make([]byte, 65))} {
		if err := nozzle.ValidateAdapterName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
