package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle/runtime"
)

// transportServer answers POST /echo with its body and GET /stream with
// lines until the client goes away; it counts the connections it accepts.
func transportServer(t testing.TB) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.Write(b)
		case "/chunked":
			for i := 0; i < 3; i++ {
				io.WriteString(w, "line\n")
				w.(http.Flusher).Flush()
			}
		case "/stream":
			for {
				if _, err := io.WriteString(w, "tick\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func post(t testing.TB, c *http.Client, url, body string) string {
	t.Helper()
	resp, err := c.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return string(b)
}

func TestTransport_ReusesConnections(t *testing.T) {
	srv, conns := transportServer(t)
	c := &http.Client{Transport: runtime.NewTransport()}
	for i := 0; i < 50; i++ {
		if got := post(t, c, srv.URL+"/echo", "hello"); got != "hello" {
			t.Fatalf("answer %q", got)
		}
		resp, err := c.Get(srv.URL + "/chunked")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "line\nline\nline\n" {
			t.Fatalf("chunked answer %q", b)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("100 sequential exchanges used %d connections, want 1", n)
	}
}

func TestTransport_Concurrent(t *testing.T) {
	srv, conns := transportServer(t)
	tr := &runtime.Transport{MaxIdlePerHost: 4}
	c := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				want := strings.Repeat("x", i*100)
				if got := post(t, c, srv.URL+"/echo", want); got != want {
					t.Errorf("answer of %d bytes, want %d", len(got), len(want))
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n > 16+16 {
		t.Fatalf("%d connections for 16 concurrent clients", n)
	}
	c.CloseIdleConnections()
}

// A pooled connection the server closed meanwhile is noticed before the
// request runs, and the request goes again on a new connection.
func TestTransport_StaleConnectionRetried(t *testing.T) {
	srv, conns := transportServer(t)
	c := &http.Client{Transport: runtime.NewTransport()}
	post(t, c, srv.URL+"/echo", "one")
	srv.CloseClientConnections() // the runtime restarted, say
	time.Sleep(20 * time.Millisecond)
	if got := post(t, c, srv.URL+"/echo", "two"); got != "two" {
		t.Fatalf("answer %q", got)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

func TestTransport_ConnectionCloseHonoured(t *testing.T) {
	srv, conns := transportServer(t)
	c := &http.Client{Transport: runtime.NewTransport()}
	for i := 0; i < 3; i++ {
		resp, err := c.Get(srv.URL + "/close")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections for 3 answers with Connection: close, want 3", n)
	}
}

// A body closed before its end, or a request canceled while its body is
// read, leaves the connection out of the pool; the next request works.
func TestTransport_CancelAndEarlyClose(t *testing.T) {
	srv, conns := transportServer(t)
	c := &http.Client{Transport: runtime.NewTransport()}

	resp, err := c.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close() // before the end
	if got := post(t, c, srv.URL+"/echo", "after close"); got != "after close" {
		t.Fatalf("answer %q", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/stream", nil)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, buf)
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("reading a canceled stream ended without an error")
	}
	if got := post(t, c, srv.URL+"/echo", "after cancel"); got != "after cancel" {
		t.Fatalf("answer %q", got)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (one per spoiled exchange, plus the first)", n)
	}

	// Canceled before the answer: the call returns the context's error.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/echo", bytes.NewReader([]byte("x")))
	if _, err := c.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled request: %v", err)
	}
}

func TestTransport_Unreachable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c := &http.Client{Transport: runtime.NewTransport()}
	if _, err := c.Get("http://" + addr + "/echo"); err == nil {
		t.Fatal("a request to a closed port succeeded")
	}
}

// BenchmarkTransport compares one small exchange on the runtime's
// Transport with net/http's, over loopback.
func BenchmarkTransport(b *testing.B) {
	srv, _ := transportServer(b)
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"runtime", runtime.NewTransport()},
		{"net-http", &http.Transport{MaxIdleConnsPerHost: 256}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := &http.Client{Transport: tc.rt}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if got := post(b, c, srv.URL+"/echo", "hello"); got != "hello" {
						b.Fatalf("answer %q", got)
					}
				}
			})
		})
	}
}

// Closing a body from another goroutine ends a read under way.
func TestTransport_CloseWhileReading(t *testing.T) {
	srv, _ := transportServer(t)
	c := &http.Client{Transport: runtime.NewTransport()}
	resp, err := c.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		copied <- err
	}()
	time.Sleep(20 * time.Millisecond)
	resp.Body.Close()
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
		t.Fatal("a read of the stream went on after Close")
	}
	if got := post(t, c, srv.URL+"/echo", "after"); got != "after" {
		t.Fatalf("answer %q", got)
	}
}
