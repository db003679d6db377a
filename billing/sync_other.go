//go:build !linux

package billing

import "os"

// fdatasync flushes f; without fdatasync(2), with fsync.
func fdatasync(f *os.File) error { return f.Sync() }

// fdatasyncHoldingP is fdatasync: only Linux has the P-holding variant.
func fdatasyncHoldingP(f *os.File) error { return f.Sync() }
