package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

// serve runs the fixture's server on a loopback port and returns its URL.
func (f *fixture) serve(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func post(t testing.TB, url, key, body string, hs ...header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	for _, h := range hs {
		req.Header.Set(h[0], h[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// lines reads SSE data lines of resp into a channel as they arrive.
func lines(resp *http.Response) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data: ") {
				ch <- strings.TrimPrefix(l, "data: ")
			}
		}
	}()
	return ch
}

func manyWords(n int) []string {
	w := make([]string, n)
	for i := range w {
		w[i] = " tok"
	}
	return w
}

const streamBody = `{"model":"base","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`

func TestRealPort_StreamIsIncremental(t *testing.T) {
	f := newFixture(t)
	f.gen.setDelay(40 * time.Millisecond)
	url := f.serve(t)
	start := time.Now()
	resp := post(t, url+"/v1/chat/completions", f.keyA, streamBody)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := lines(resp)
	<-ch // role
	first := <-ch
	if !strings.Contains(first, `"content":"Hello"`) {
		t.Fatalf("first content chunk %q", first)
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Errorf("first token after %v: not streamed", el)
	}
	var all []string
	for l := range ch {
		all = append(all, l)
	}
	if all[len(all)-1] != "[DONE]" || !strings.Contains(all[len(all)-2], `"usage":{"prompt_tokens"`) {
		t.Errorf("tail %q", all[len(all)-3:])
	}
}

func TestRealPort_MeteredBeforeFinalChunk(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	recorded := make(chan struct{})
	inner := f.ledger.RecordUsageFn
	f.ledger.RecordUsageFn = func(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
		<-release
		dup, err := inner(ctx, ev)
		close(recorded)
		return dup, err
	}
	url := f.serve(t)
	resp := post(t, url+"/v1/chat/completions", f.keyA, streamBody)
	defer resp.Body.Close()
	ch := lines(resp)
	var got []string
	for len(got) < 7 { // role + 6 tokens
		got = append(got, <-ch)
	}
	select {
	case l := <-ch:
		t.Fatalf("%q arrived before the usage was recorded", l)
	case <-time.After(150 * time.Millisecond):
	}
	close(release)
	<-recorded
	var rest []string
	for l := range ch {
		rest = append(rest, l)
	}
	if len(rest) != 3 || !strings.Contains(rest[0], `"finish_reason":"stop"`) || rest[2] != "[DONE]" {
		t.Errorf("after recording: %q", rest)
	}
}

// rawPost sends a POST over a connection of its own, which it returns for
// the test to close as a client that gives up would.
func rawPost(t *testing.T, url, key, body string, headers ...string) net.Conn {
	t.Helper()
	hostPath := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(hostPath, "/")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	req := "POST /" + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key + "\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n" + body)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// soleEvent waits for the fixture's first usage event and returns it; it
// must be the only one.
func (f *fixture) soleEvent(t *testing.T) *nozzle.UsageEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	evs := f.events()
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	return evs[0]
}

// A non-streamed answer that takes longer than the server's read timeout
// is not mistaken for a client gone (the connection's read deadline has
// passed by then).
func TestRealPort_NonStreamedPastReadTimeout(t *testing.T) {
	f := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { c.ReadTimeout = 150 * time.Millisecond })
	f.gen.words = manyWords(60)
	f.gen.setDelay(10 * time.Millisecond) // 0.6 s
	url := f.serve(t)
	resp := post(t, url+"/v1/chat/completions", f.keyA, `{"model":"base","messages":[{"role":"user","content":"hi"}]}`)
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, `"completion_tokens":60`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if ev := f.soleEvent(t); ev.Status != nozzle.UsageOK {
		t.Errorf("event %+v", ev)
	}
}

// A stream whose client leaves while it waits for its first token (in the
// queue, say) ends there: not run, not charged, its Idempotency-Key free.
func TestRealPort_StreamClientGoneBeforeFirstToken(t *testing.T) {
	f := newFixture(t)
	hold := f.gen.holdAll()
	url := f.serve(t)
	conn := rawPost(t, url+"/v1/chat/completions", f.keyA, streamBody, "Idempotency-Key: k-early")
	<-f.gen.started
	conn.Close()
	// Canceled within a look or two at the connection.
	for deadline := time.Now().Add(3 * time.Second); f.gen.abandoned.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(hold)
			t.Fatal("the abandoned stream still waits for its first token")
		}
	}
	close(hold)
	// Not recorded; its key is free for the retry, which runs.
	r := post(t, url+"/v1/chat/completions", f.keyA, `{"model":"base","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`, hdr("Idempotency-Key", "k-early"))
	if body := readAll(t, r); r.StatusCode != 200 || r.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry: %d %s", r.StatusCode, body)
	}
	if evs := f.events(); len(evs) != 1 || evs[0].Status != nozzle.UsageOK {
		t.Errorf("events %+v: want the retry's only", evs)
	}
}

func TestRealPort_ClientDisconnectIsCharged(t *testing.T) {
	f := newFixture(t)
	f.gen.words = manyWords(500)
	f.gen.setDelay(5 * time.Millisecond)
	url := f.serve(t)
	resp := post(t, url+"/v1/chat/completions", f.keyA, streamBody)
	ch := lines(resp)
	for i := 0; i < 6; i++ { // role + 5 tokens
		<-ch
	}
	resp.Body.Close() // the client goes away mid-stream
	ev := f.soleEvent(t)
	if ev.Status != nozzle.UsageCanceled || ev.CompletionTokens < 5 || ev.CompletionTokens >= 500 || ev.ChargeUSD <= 0 {
		t.Errorf("event %+v", ev)
	}
	f.w.mu.Lock()
	defer f.w.mu.Unlock()
	if f.w.reserved != 0 {
		t.Errorf("budget reservation kept")
	}
}

// A client that gives up on a non-streamed answer (a timeout, a retry)
// stops its generation: charged for the tokens produced until then, not
// for the whole answer nobody reads. A client that waits is not taken
// for gone however long the answer takes.
func TestRealPort_NonStreamedClientGoneStopsGeneration(t *testing.T) {
	f := newFixture(t)
	f.gen.words = manyWords(500)
	f.gen.setDelay(5 * time.Millisecond)
	url := f.serve(t)

	body := `{"model":"base","messages":[{"role":"user","content":"hi"}]}`
	conn := rawPost(t, url+"/v1/chat/completions", f.keyA, body)
	time.Sleep(300 * time.Millisecond) // about 60 of the 500 tokens
	conn.Close()
	if ev := f.soleEvent(t); ev.Status != nozzle.UsageCanceled || ev.CompletionTokens == 0 || ev.CompletionTokens > 200 || ev.ChargeUSD <= 0 {
		t.Errorf("event %+v: want a canceled request charged for the tokens before the client left", ev)
	}
	f.w.mu.Lock()
	if f.w.reserved != 0 {
		t.Errorf("budget reservation kept")
	}
	f.w.mu.Unlock()

	// Patient clients: answers of 0.4 s, several on one connection.
	f.gen.words = manyWords(80)
	for i := 0; i < 2; i++ {
		resp := post(t, url+"/v1/chat/completions", f.keyA, body)
		var out struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			}
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		resp.Body.Close()
		if out.Usage.CompletionTokens != 80 || out.Choices[0].FinishReason != "stop" {
			t.Errorf("answer %+v", out)
		}
	}
	if evs := f.events(); len(evs) != 3 || evs[1].Status != nozzle.UsageOK || evs[2].Status != nozzle.UsageOK {
		t.Errorf("events %+v", evs)
	}
}

func TestRealPort_ConcurrentIdempotencyKey(t *testing.T) {
	f := newFixture(t)
	hold := f.gen.holdAll()
	url := f.serve(t)
	var wg sync.WaitGroup
	var first *http.Response
	wg.Add(1)
	go func() {
		defer wg.Done()
		first = post(t, url+"/v1/chat/completions", f.keyA, streamBody, hdr("Idempotency-Key", "k1"))
	}()
	<-f.gen.started
	resp := post(t, url+"/v1/chat/completions", f.keyA, streamBody, hdr("Idempotency-Key", "k1"))
	wantError(t, resp, 409, "conflict_error", "idempotency_key_in_use", "")
	close(hold)
	wg.Wait()
	body := readAll(t, first)
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("first stream %q", body)
	}
	resp = post(t, url+"/v1/chat/completions", f.keyA, streamBody, hdr("Idempotency-Key", "k1"))
	if resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("not replayed")
	}
	readAll(t, resp)
	if n := len(f.events()); n != 1 {
		t.Errorf("%d events", n)
	}
}

func TestRealPort_ShutdownDrainsStreams(t *testing.T) {
	f := newFixture(t)
	f.gen.setDelay(30 * time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ln) }()
	resp := post(t, "http://"+ln.Addr().String()+"/v1/chat/completions", f.keyA, streamBody)
	ch := lines(resp)
	<-ch
	<-ch
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- f.srv.Shutdown(ctx) }()
	var last string
	for l := range ch {
		last = l
	}
	if last != "[DONE]" {
		t.Errorf("stream cut by shutdown: last %q", last)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if evs := f.events(); len(evs) != 1 || evs[0].Status != nozzle.UsageOK {
		t.Errorf("events %+v", evs)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Errorf("still accepting after shutdown")
	}
}

func TestRealPort_OversizedChunkedBody(t *testing.T) {
	f := newFixture(t)
	url := f.serve(t)
	// Chunked (no Content-Length): the limit is enforced while reading.
	pr := strings.NewReader(`{"model":"base","messages":[{"role":"user","content":"` + strings.Repeat("x", 5<<20) + `"}]}`)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", struct{ *strings.Reader }{pr})
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+f.keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp, 413, "invalid_request_error", "", "")
	if n := len(f.events()); n != 0 {
		t.Errorf("%d events", n)
	}
}

func TestRealPort_LargeUploadStreamed(t *testing.T) {
	f := newFixture(t)
	url := f.serve(t)
	weights := append([]byte("SAFE"), bytes.Repeat([]byte{1, 2, 3, 4}, 2<<20)...) // 8 MiB
	ct, body := multipartBody(t, part{"name", "", []byte("big")}, part{nozzle.AdapterConfigFile, "c", goodConfig}, part{nozzle.AdapterWeightsFile, "w", weights})
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/adapters", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+f.keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	var a adapterOut
	decode(t, resp, &a)
	if a.SizeBytes != int64(len(goodConfig)+len(weights)) {
		t.Errorf("size %d", a.SizeBytes)
	}
	f.assertClean(t)
	// The same connection serves the next request.
	if r := post(t, url+"/v1/chat/completions", f.keyA, chatBody("big", "hi")); r.StatusCode != 200 {
		t.Errorf("use: %d", r.StatusCode)
	}
}

// TestRealPort_UploadIsStreamedToDisk shows the handler writes the upload
// to its staging folder while the body is still arriving: the client holds
// back the end of the body until the file shows up on disk.
func TestRealPort_UploadIsStreamedToDisk(t *testing.T) {
	f := newFixture(t)
	url := f.serve(t)
	weights := append([]byte("SAFE"), bytes.Repeat([]byte{9}, 4<<20)...)
	ct, body := multipartBody(t, part{"name", "", []byte("streamed")}, part{nozzle.AdapterConfigFile, "c", goodConfig}, part{nozzle.AdapterWeightsFile, "w", weights})
	cut := len(body) - (1 << 20)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(body[:cut])
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			m, _ := filepath.Glob(filepath.Join(f.uploadDir, "upload-*", nozzle.AdapterWeightsFile))
			if len(m) == 1 {
				if fi, err := os.Stat(m[0]); err == nil && fi.Size() > 1<<20 {
					pw.Write(body[cut:])
					pw.Close()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/adapters", pr)
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+f.keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	f.assertClean(t)
}

// TestRealPort_EarlyRefusalReachesClient: an upload refused at its first
// field (a bad name) while the client is still sending a few megabytes
// gets its 400, every time, rather than a connection reset.
func TestRealPort_EarlyRefusalReachesClient(t *testing.T) {
	f := newFixture(t)
	url := f.serve(t)
	ct, body := multipartBody(t, part{"name", "", []byte(".")}, part{nozzle.AdapterWeightsFile, "w", bytes.Repeat([]byte("S"), 4<<20)})
	for i := range 10 {
		req, err := http.NewRequest(http.MethodPost, url+"/v1/adapters", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+f.keyA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		wantError(t, resp, 400, "invalid_request_error", "", "name")
	}
}

// TestRealPort_ShutdownWithSilentConnection: a connection a client opened
// and sent nothing on (an HTTP client's spare dial) does not hold the
// shutdown; a request in flight still finishes.
func TestRealPort_ShutdownWithSilentConnection(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ln) }()
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A request in flight across the shutdown.
	f.gen.setDelay(20 * time.Millisecond)
	got := make(chan int, 1)
	go func() {
		r := post(t, "http://"+ln.Addr().String()+"/v1/chat/completions", f.keyA, chatBody("base", "hi"))
		readAll(t, r)
		got <- r.StatusCode
	}()
	time.Sleep(30 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if code := <-got; code != 200 {
		t.Errorf("the request in flight got %d", code)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestRealPort_StreamStartsOnAcceptance: a streamed completion of several
// prompts starts (status line and headers) once the runtime accepted every
// prompt, not at the first token of the last one; from a runtime that
// does not say (older), at that first token, as before.
func TestRealPort_StreamStartsOnAcceptance(t *testing.T) {
	f := newFixture(t)
	url := f.serve(t)
	body := `{"model":"base","prompt":["SLOW_START a","SLOW_START b"],"max_tokens":2,"stream":true}`
	for _, older := range []bool{false, true} {
		t.Run(fmt.Sprintf("older=%v", older), func(t *testing.T) {
			f.gen.noAccept.Store(older)
			defer f.gen.noAccept.Store(false)
			start := time.Now()
			resp := post(t, url+"/v1/completions", f.keyA, body)
			defer resp.Body.Close()
			headers := time.Since(start)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if older && headers < 300*time.Millisecond {
				t.Errorf("headers after %v, before any prompt's first token", headers)
			}
			if !older && headers > 200*time.Millisecond {
				t.Errorf("headers after %v: not at acceptance", headers)
			}
			texts := [2]string{}
			for l := range lines(resp) {
				if l == "[DONE]" {
					continue
				}
				var c struct {
					Choices []struct {
						Index int
						Text  string
					}
				}
				if err := json.Unmarshal([]byte(l), &c); err != nil {
					t.Fatal(err)
				}
				for _, ch := range c.Choices {
					texts[ch.Index] += ch.Text
				}
			}
			if texts != [2]string{"Hello from", "Hello from"} {
				t.Errorf("texts %q", texts)
			}
		})
	}
}

// TestRealPort_ShutdownDrainsStreamTail: a stream whose events are all
// written, but not yet all on the wire to a client reading slowly when the
// shutdown begins, still reaches the client whole: the server holds the
// connection open until it has written the last bytes, instead of closing
// it as idle once the stream's writer is done.
func TestRealPort_ShutdownDrainsStreamTail(t *testing.T) {
	f := newFixture(t)
	big := make([]string, 100) // events larger than the sockets' buffers
	for i := range big {
		big[i] = strings.Repeat("y", 64<<10)
	}
	f.gen.words = big
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := smallSendBuffers{tcp}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(ln) }()
	// Small socket buffers: the server, soon blocked on its writes, runs
	// only a little ahead of what the client reads.
	dialer := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	client := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/v1/chat/completions", strings.NewReader(streamBody))
	req.Header.Set("Authorization", "Bearer "+f.keyA)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Read slowly until the stream's writer is done (its usage recorded):
	// the server is ahead of the client, its last events still in its
	// buffers.
	var got bytes.Buffer
	buf := make([]byte, 16<<10)
	deadline := time.Now().Add(30 * time.Second)
	for f.srv.InFlight() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream did not end")
		}
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("after %d bytes, before the stream's writer was done: %v", got.Len(), err)
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- f.srv.Shutdown(ctx) }()
	time.Sleep(300 * time.Millisecond) // the shutdown closes idle connections meanwhile
	before := got.Len()
	rest, err := io.ReadAll(resp.Body)
	got.Write(rest)
	t.Logf("read %d bytes before the shutdown, %d after", before, len(rest))
	if err != nil || !strings.HasSuffix(strings.TrimSpace(got.String()), "data: [DONE]") {
		t.Errorf("the stream's tail was cut by the shutdown: %v, %d bytes, ends %q", err, got.Len(), got.String()[max(0, got.Len()-80):])
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// smallSendBuffers accepts connections with a small send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}
