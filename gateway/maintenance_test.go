package gateway_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

func withMaintenance(m nozzle.LedgerMaintainer) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		d.Extensions = append(d.Extensions, gateway.Maintenance(m))
	}
}

func TestMaintenance(t *testing.T) {
	backup := strings.Repeat("bolt", 10000)
	m := &mock.LedgerMaintainer{
		BackupFn: func(ctx context.Context, w io.Writer) error {
			_, err := io.WriteString(w, backup)
			return err
		},
		CheckFn: func(ctx context.Context) (*nozzle.LedgerCheck, error) {
			return &nozzle.LedgerCheck{Events: 3, Rollups: 2, Problems: []string{"rollup x off by 1"}}, nil
		},
	}
	f := newFixture(t, withMaintenance(m))
	admin := hdr("Authorization", "Bearer "+adminToken)

	t.Run("Backup", func(t *testing.T) {
		resp := f.do(http.MethodGet, "/admin/backup", "", admin)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := readAll(t, resp); got != backup {
			t.Fatalf("backup body: %d bytes, want %d", len(got), len(backup))
		}
	})
	t.Run("Check", func(t *testing.T) {
		var res nozzle.LedgerCheck
		decode(t, f.do(http.MethodPost, "/admin/ledger/check", "", admin), &res)
		if res.Events != 3 || len(res.Problems) != 1 {
			t.Fatalf("check result %+v", res)
		}
	})
	t.Run("ErrUnauthorized", func(t *testing.T) {
		wantError(t, f.do(http.MethodGet, "/admin/backup", "", f.authA()), http.StatusUnauthorized, "invalid_request_error", "invalid_admin_token", "")
		wantError(t, f.do(http.MethodPost, "/admin/ledger/check", ""), http.StatusUnauthorized, "invalid_request_error", "invalid_admin_token", "")
	})
	t.Run("BackupFails", func(t *testing.T) {
		m.BackupFn = func(ctx context.Context, w io.Writer) error {
			io.WriteString(w, "half")
			return errors.New("disk full")
		}
		wantError(t, f.do(http.MethodGet, "/admin/backup", "", admin), http.StatusInternalServerError, "server_error", "", "")
	})
}
