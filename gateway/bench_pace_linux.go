package gateway

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// newTicker returns a ticker that fires every interval from now: a Linux
// timerfd read through Go's network poller. Go's own timers wake up to a
// millisecond late on an idle machine, which turns a steady request rate
// into bursts; a timer file descriptor wakes the poller on time, and the
// waiting goroutine holds no thread and no processor meanwhile (a sleep
// in a system call would keep one of the machine's two processors from
// the server being measured).
func newTicker(ctx context.Context, interval time.Duration) (ticker, error) {
	const (
		clockMonotonic = 1
		tfdNonblock    = syscall.O_NONBLOCK
		tfdCloexec     = syscall.O_CLOEXEC
	)
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, tfdNonblock|tfdCloexec, 0)
	if errno != 0 {
		return nil, fmt.Errorf("timerfd_create: %w", errno)
	}
	// struct itimerspec { it_interval, it_value }: every interval, first
	// after one interval.
	ts := syscall.NsecToTimespec(int64(interval))
	spec := [2]syscall.Timespec{ts, ts}
	if _, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		syscall.Close(int(fd))
		return nil, fmt.Errorf("timerfd_settime: %w", errno)
	}
	f := os.NewFile(fd, "timerfd") // non-blocking: reads park on the poller
	stop := context.AfterFunc(ctx, func() { f.Close() })
	return &fdTicker{f: f, stop: stop}, nil
}

type fdTicker struct {
	f    *os.File
	stop func() bool
	buf  [8]byte
}

// wait blocks until the next tick and returns the ticks since the last
// wait (more than one when the caller fell behind).
func (t *fdTicker) wait() (int, error) {
	if _, err := t.f.Read(t.buf[:]); err != nil {
		return 0, err
	}
	return int(binary.NativeEndian.Uint64(t.buf[:])), nil
}

func (t *fdTicker) close() {
	t.stop()
	t.f.Close()
}
