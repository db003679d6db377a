package billing

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// fdatasyncHoldingP is fdatasync that keeps the calling goroutine's P (Go's
// scheduler slot) while the disk works, instead of handing it off: the
// goroutine runs on the moment the disk answers, rather than queueing for
// a P behind the busy ones. The P does nothing meanwhile, so this is for a
// process with a P to spare (Options.SyncHoldsP).
func fdatasyncHoldingP(f *os.File) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_FDATASYNC, f.Fd(), 0, 0); e != 0 {
		return &os.SyscallError{Syscall: "fdatasync", Err: e}
	}
	return nil
}
