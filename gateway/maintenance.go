package gateway

import (
	"io"
	"os"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// Maintenance mounts the operator's ledger maintenance routes, used by
// `nozzle backup` and `nozzle ledger check` while a server holds the
// ledger:
//
//	GET  /admin/backup        a consistent copy of the ledger file
//	POST /admin/ledger/check  rollups against the sum of events
func Maintenance(m nozzle.LedgerMaintainer) Extension {
	return func(s *Server) error {
		s.app.Get("/admin/backup", s.RequireAdmin(), func(c *fiber.Ctx) error {
			// Write to a file first: a backup that fails half-way must be an
			// error status, not a truncated body with a 200.
			f, err := os.CreateTemp(s.cfg.UploadDir, "ledger-backup-*.db")
			if err != nil {
				return err
			}
			// The open file outlives its name: fasthttp streams it and
			// closes it when the response is sent.
			os.Remove(f.Name())
			if err := m.Backup(c.UserContext(), f); err != nil {
				f.Close()
				return err
			}
			size, err := f.Seek(0, io.SeekCurrent)
			if err == nil {
				_, err = f.Seek(0, io.SeekStart)
			}
			if err != nil {
				f.Close()
				return err
			}
			c.Set(fiber.HeaderContentType, "application/octet-stream")
			c.Set(fiber.HeaderContentDisposition, `attachment; filename="ledger.db"`)
			return c.SendStream(f, int(size))
		})
		s.app.Post("/admin/ledger/check", s.RequireAdmin(), func(c *fiber.Ctx) error {
			res, err := m.Check(c.UserContext())
			if err != nil {
				return err
			}
			return c.JSON(res)
		})
		return nil
	}
}
