package gateway

import (
	"runtime"
	"syscall"
	"time"
)

// pace returns a sleep that wakes within tens of microseconds: it locks
// the calling goroutine to its thread, asks the kernel for a 1 µs timer
// slack on that thread, and sleeps in nanosleep, which blocks the thread,
// not the scheduler. The goroutine must not unlock the thread: when it
// ends, the thread ends with it.
func pace() func(time.Duration) {
	runtime.LockOSThread()
	const prSetTimerSlack = 29
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0)
	return func(d time.Duration) {
		ts := syscall.NsecToTimespec(int64(d))
		syscall.Nanosleep(&ts, nil)
	}
}
