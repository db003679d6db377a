package nozzle_test

import (
	"testing"

	"github.com/nozzle-ai/nozzle"
)

func TestValidateTenantName(t *testing.T) {
	for _, ok := range []string{"acme", "Acme Corp. (EU)", "Société Générale", "x", "ten-x", "tenant_1"} {
		if err := nozzle.ValidateTenantName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "  ", " acme", "acme ", "ten_7yhvcot2s7fd776q", "a/b", `a\b`, "a?b", "a#b", "50%", "a\tb", "a\nb", "\xff", string(make([]byte, 101))} {
		if err := nozzle.ValidateTenantName(bad); nozzle.ErrorCode(err) != nozzle.EINVALID {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
