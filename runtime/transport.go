package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Transport is the http.RoundTripper of the remote protocol: plain
// HTTP/1.1 over kept-alive TCP connections, each exchange run on the
// caller's goroutine.
//
// net/http's Transport hands every request to a writer goroutine and
// every response to a reader goroutine of its connection; on a loaded
// gateway those wake-ups, not the work, make the tail of the latency
// (see nozzle bench gateway). Here the caller writes the request, reads
// the response and, once the body is read to its end, puts the connection
// back in the pool. Only plain http is spoken (runtimes sit on a private
// network); other schemes go to http.DefaultTransport.
type Transport struct {
	// MaxIdlePerHost caps the idle connections kept per runtime
	// (default 256).
	MaxIdlePerHost int
	// IdleTimeout drops connections idle for longer (default 30 s, under
	// the runtime server's own idle timeout, so the server rarely closes
	// a connection the pool would hand out).
	IdleTimeout time.Duration

	dialer net.Dialer
	mu     sync.Mutex
	idle   map[string][]*tconn // host:port → idle connections, oldest first
}

// NewTransport returns a Transport with the defaults.
func NewTransport() *Transport { return &Transport{} }

type tconn struct {
	net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

// errNoAnswer marks a failure before any byte of the answer was read.
type errNoAnswer struct{ err error }

func (e errNoAnswer) Error() string { return e.err.Error() }
func (e errNoAnswer) Unwrap() error { return e.err }

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return http.DefaultTransport.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for attempt := 0; ; attempt++ {
		// A request canceled already never starts: on a kept-alive
		// connection the exchange could otherwise finish before the
		// cancellation's deadline lands.
		if err := req.Context().Err(); err != nil {
			closeBody(req)
			return nil, err
		}
		c, reused, err := t.get(req.Context(), addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(req, c, addr)
		if err == nil {
			return resp, nil
		}
		c.Close()
		// A kept-alive connection the runtime closed meanwhile fails
		// before any answer: the request never ran, so it goes once more
		// on a new connection.
		var na errNoAnswer
		if reused && attempt == 0 && errors.As(err, &na) && req.GetBody != nil && req.Context().Err() == nil {
			body, gerr := req.GetBody()
			if gerr == nil {
				req = req.Clone(req.Context())
				req.Body = body
				continue
			}
		}
		return nil, err
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// get returns an idle connection to addr, or dials one.
func (t *Transport) get(ctx context.Context, addr string) (*tconn, bool, error) {
	timeout := t.IdleTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	now := time.Now()
	t.mu.Lock()
	for list := t.idle[addr]; len(list) > 0; list = t.idle[addr] {
		// The most recently used connection is the likeliest alive.
		c := list[len(list)-1]
		t.idle[addr] = list[:len(list)-1]
		if now.Sub(c.idleAt) < timeout {
			t.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	t.mu.Unlock()
	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &tconn{Conn: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 8<<10)}, false, nil
}

// put returns a connection whose last answer was read to its end.
func (t *Transport) put(addr string, c *tconn) {
	max := t.MaxIdlePerHost
	if max <= 0 {
		max = 256
	}
	c.idleAt = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[string][]*tconn{}
	}
	if len(t.idle[addr]) < max {
		t.idle[addr] = append(t.idle[addr], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the pooled connections (http.Client calls
// it from its own CloseIdleConnections).
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
}

// exchange writes req on c and reads the answer's head. The body it
// returns gives c back to the pool at its end.
func (t *Transport) exchange(req *http.Request, c *tconn, addr string) (*http.Response, error) {
	// A canceled request unblocks whatever read or write is under way.
	stop := context.AfterFunc(req.Context(), func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		if cerr := req.Context().Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(errNoAnswer{fmt.Errorf("write request: %w", err)})
	}
	if err := c.bw.Flush(); err != nil {
		return fail(errNoAnswer{fmt.Errorf("write request: %w", err)})
	}
	if _, err := c.br.Peek(1); err != nil {
		return fail(errNoAnswer{fmt.Errorf("read answer: %w", err)})
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return fail(fmt.Errorf("read answer: %w", err))
	}
	resp.Body = &tbody{rc: resp.Body, t: t, c: c, addr: addr, stop: stop, reuse: !resp.Close && !req.Close}
	return resp, nil
}

// tbody is an answer's body; read to its end, it gives the connection
// back to the pool, closed before, it closes the connection. Close may
// come from another goroutine while a Read waits: closing the connection
// ends that Read.
type tbody struct {
	rc    io.ReadCloser
	t     *Transport
	c     *tconn
	addr  string
	stop  func() bool
	reuse bool

	done atomic.Bool // finished: the connection is pooled or closed
	once sync.Once
}

func (b *tbody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *tbody) Close() error {
	b.finish(false)
	return nil
}

func (b *tbody) finish(atEnd bool) {
	b.once.Do(func() {
		b.done.Store(true)
		// stop is false when the request's cancellation already fired and
		// spoiled the connection's deadline.
		if b.stop() && atEnd && b.reuse {
			b.t.put(b.addr, b.c)
			return
		}
		b.c.Close()
	})
}
