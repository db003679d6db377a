package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// HeaderRequestID carries the request id, in and out.
const HeaderRequestID = "X-Request-Id"

const localsState = "nozzle.request"

// reqState is the gateway's per-request state, kept in the fiber locals.
type reqState struct {
	id       string // request id: sane incoming one or generated
	supplied bool   // id came from the client
	start    time.Time
	method   string
	path     string
	client   string

	principal *principal // set by RequireKey
	// batch: a line of a batch, run by the batch runner (its
	// generations run at the runtime's batch priority)
	batch bool

	// streaming is set by a handler that answers with a stream: the stream
	// writes the access log and metrics when it ends.
	streaming    bool
	bodyConsumed bool
	conn         net.Conn // the connection, busy until finish
	status       int
	errCode      string
	route        *routeMetrics
}

func stateOf(c *fiber.Ctx) *reqState {
	st, _ := c.Locals(localsState).(*reqState)
	return st
}

// requestID returns the request's id ("" outside the gateway's middleware).
func requestID(c *fiber.Ctx) string {
	if st := stateOf(c); st != nil {
		return st.id
	}
	return ""
}

// RequestID returns the id of the request c is serving, as echoed in the
// X-Request-Id response header.
func RequestID(c *fiber.Ctx) string { return requestID(c) }

// saneRequestID reports whether an incoming request id may be used: 1 to
// 128 characters of letters, digits and ._:- , not in the gateway's own
// "idem_" namespace.
func saneRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 || strings.HasPrefix(s, idemPrefix) {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '.', b == '_', b == ':', b == '-':
		default:
			return false
		}
	}
	return true
}

// newRequestID returns "req_" and 24 hex digits: 12 of the time in
// milliseconds, 12 random.
func newRequestID() string {
	// Time first (milliseconds, big-endian), then randomness: ids sort by
	// arrival, so the ledger's request-id index grows at its end instead of
	// touching a random page per event.
	var b [12]byte
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	var out [4 + 24]byte
	copy(out[:], "req_")
	hex.Encode(out[4:], b[:])
	return string(out[:])
}

// front is the first middleware of every request: request id, security
// headers, panic recovery, error rendering, access log and metrics.
func (s *Server) front(c *fiber.Ctx) (err error) {
	st := &reqState{start: time.Now()}
	if in := c.Get(HeaderRequestID); saneRequestID(in) {
		st.id = strings.Clone(in)
		st.supplied = true
	} else {
		st.id = newRequestID()
	}
	c.Locals(localsState, st)
	st.conn = c.Context().Conn()
	s.conns.busy(st.conn, 1)
	h := &c.Response().Header
	h.Set(HeaderRequestID, st.id)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.Set("Cache-Control", "no-store")
	s.met.inflight.Add(1)

	defer func() {
		if r := recover(); r != nil {
			perr := fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			c.Response().ResetBody()
			_ = s.errorHandler(c, perr)
		}
		s.met.inflight.Add(-1)
		if st.streaming {
			return // the stream owns st now, and logs when it ends
		}
		// A body the handler did not read (an upload refused early) is
		// still on the wire. Read what is left of a small one: a client
		// still sending when the connection closed under it would see the
		// reset instead of the answer. Close the connection rather than
		// parse the rest of a large one as the next request.
		if !st.bodyConsumed && c.Context().RequestBodyStream() != nil && c.Request().Header.ContentLength() != 0 && !drainBody(c) {
			c.Response().Header.SetConnectionClose()
		}
		st.route = s.met.route(c.Route().Path, c.Path())
		st.status = c.Response().StatusCode()
		st.method = c.Method()
		st.path = strings.Clone(c.Path())
		st.client = c.IP()
		s.finish(st)
		err = nil
	}()

	if err := c.Next(); err != nil {
		return s.errorHandler(c, err)
	}
	return nil
}

// Bounds on reading the rest of a body the handler left unread.
const (
	drainMaxBytes = 64 << 20
	drainMaxTime  = 5 * time.Second
)

// drainBody reads and discards what is left of the request body, up to
// drainMaxBytes and drainMaxTime, and reports whether it reached the end.
func drainBody(c *fiber.Ctx) bool {
	if conn := c.Context().Conn(); conn != nil {
		_ = conn.SetReadDeadline(time.Now().Add(drainMaxTime))
	}
	n, err := io.Copy(io.Discard, io.LimitReader(c.Context().RequestBodyStream(), drainMaxBytes+1))
	return err == nil && n <= drainMaxBytes
}

// finish writes the access log line and the request metrics.
func (s *Server) finish(st *reqState) {
	s.conns.busy(st.conn, -1)
	lat := time.Since(st.start)
	st.route.observe(st.status, lat)
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	tenant := ""
	if st.principal != nil {
		tenant = st.principal.tenant.ID
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
		slog.String("method", st.method),
		slog.String("path", st.path),
		slog.Int("status", st.status),
		slog.Duration("latency", lat),
		slog.String("request_id", st.id),
		slog.String("tenant_id", tenant),
		slog.String("client", st.client),
	)
}

// streamState copies what a stream needs from the request state before the
// handler returns (the fiber context is reused after that).
func (s *Server) detach(c *fiber.Ctx, st *reqState) {
	st.streaming = true
	st.route = s.met.route(c.Route().Path, c.Path())
	st.method = c.Method()
	st.path = strings.Clone(c.Path())
	st.client = strings.Clone(c.IP())
}

// notFound is returned for unknown adapter names and models: the same
// answer whether the name does not exist or belongs to another tenant.
func modelNotFound(model string) error {
	return nozzle.Errorf(nozzle.ENOTFOUND, "The model `%s` does not exist or you do not have access to it.", model).
		WithParam("model").WithReason("model_not_found")
}
