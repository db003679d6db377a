package gateway

import (
	"net"
	"sync"
	"time"
)

// clientCheckEvery is how often a non-streamed request looks whether its
// client is still connected.
const clientCheckEvery = 100 * time.Millisecond

// watchClient calls gone, once, when the client at the other end of conn
// has closed the connection (or it broke), looking every interval until
// stop is called. A streamed answer learns this from its writes; a
// non-streamed one writes nothing until the generation ends, so without
// a look at the connection a client that gave up (a timeout, a retry)
// would keep the device busy, and be charged, for an answer nobody reads.
// As net/http does, a client that closed its side of the connection is
// taken to be gone. The look is a peek that consumes nothing. stop waits
// for a look in progress, so the connection is the server's alone once it
// returns.
func watchClient(conn net.Conn, interval time.Duration, gone func()) (stop func()) {
	closed := closedCheck(conn)
	if closed == nil {
		return func() {}
	}
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	// t is set under mu, which the first look takes before it reads t.
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(interval, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if closed() {
			stopped = true
			gone()
			return
		}
		t.Reset(interval)
	})
	return func() {
		t.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
}
