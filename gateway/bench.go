package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/nozzle-ai/nozzle"
)

// Stats are the latencies of a load run. Latency runs from the moment a
// request is sent to its whole answer. The load is open loop (requests
// go out on schedule whatever the answers do), so a server that falls
// behind shows it in the latencies instead of slowing the load down.
// Latency is not counted from the moment a request was due: the load
// generator's own scheduling delays (it shares the machine) are not the
// server's.
type Stats struct {
	Requests int           `json:"requests"` // answered, successfully or not
	Errors   int           `json:"errors"`   // transport errors and non-2xx answers
	P50      time.Duration `json:"p50"`
	P90      time.Duration `json:"p90"`
	P99      time.Duration `json:"p99"`
	Max      time.Duration `json:"max"`
	Mean     time.Duration `json:"mean"`
	Elapsed  time.Duration `json:"elapsed"`
	RPS      float64       `json:"rps"` // answers per second achieved
	// FirstError describes the first error seen, if any.
	FirstError string `json:"first_error,omitempty"`
}

func (s Stats) String() string {
	return fmt.Sprintf("requests=%d errors=%d rps=%.0f p50=%v p90=%v p99=%v max=%v mean=%v",
		s.Requests, s.Errors, s.RPS, s.P50, s.P90, s.P99, s.Max, s.Mean)
}

// BenchLoad sends POST requests with body req to url at a constant rate
// of rps for dur (open loop: requests are sent on schedule whatever the
// answers do), and returns the latency statistics. It sends at most
// rps × dur requests and stops early when ctx ends. Only loopback and
// other local addresses should be targeted.
func BenchLoad(ctx context.Context, target string, rps int, dur time.Duration, req []byte, headers map[string]string) (Stats, error) {
	if rps <= 0 || dur <= 0 {
		return Stats{}, errors.New("bench: rps and duration must be positive")
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return Stats{}, fmt.Errorf("bench: bad url %q", target)
	}
	total := int(float64(rps) * dur.Seconds())
	if total < 1 {
		total = 1
	}
	client := &fasthttp.HostClient{
		Addr:                          hostPort(u),
		IsTLS:                         u.Scheme == "https",
		MaxConns:                      4096,
		MaxIdleConnDuration:           10 * time.Second,
		ReadTimeout:                   30 * time.Second,
		WriteTimeout:                  30 * time.Second,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
	}
	defer client.CloseIdleConnections()

	lat := make([]time.Duration, total)
	var done, errs atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rps)
	start := time.Now()
	uri := target

	one := func(i int) {
		defer wg.Done()
		rq := fasthttp.AcquireRequest()
		rs := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(rq)
		defer fasthttp.ReleaseResponse(rs)
		rq.SetRequestURI(uri)
		rq.Header.SetMethod(fasthttp.MethodPost)
		rq.Header.SetContentType("application/json")
		for k, v := range headers {
			rq.Header.Set(k, v)
		}
		rq.SetBody(req)
		sent := time.Now()
		err := client.Do(rq, rs)
		lat[i] = time.Since(sent)
		done.Add(1)
		if err == nil && (rs.StatusCode() < 200 || rs.StatusCode() > 299) {
			body := rs.Body()
			if len(body) > 200 {
				body = body[:200]
			}
			err = fmt.Errorf("status %d: %s", rs.StatusCode(), body)
		}
		if err != nil {
			errs.Add(1)
			msg := err.Error()
			firstErr.CompareAndSwap(nil, &msg)
			lat[i] = -lat[i] - 1 // marked, still counted in the latencies
		}
	}

	// One request per tick of a precise ticker (see newTicker); a late
	// wake-up sends every request due by then.
	tk, err := newTicker(ctx, interval)
	if err != nil {
		return Stats{}, err
	}
	sent := 0
	for sent < total {
		ticks, err := tk.wait()
		if err != nil {
			break // ctx ended
		}
		for n := min(ticks, total-sent); n > 0; n-- {
			wg.Add(1)
			go one(sent)
			sent++
		}
	}
	tk.close()
	wg.Wait()
	elapsed := time.Since(start)

	got := lat[:sent]
	for i, d := range got {
		if d < 0 {
			got[i] = -d - 1
		}
	}
	slices.Sort(got)
	st := Stats{Requests: int(done.Load()), Errors: int(errs.Load()), Elapsed: elapsed}
	if len(got) > 0 {
		var sum time.Duration
		for _, d := range got {
			sum += d
		}
		pct := func(p float64) time.Duration { return got[min(len(got)-1, int(p*float64(len(got))))] }
		st.P50, st.P90, st.P99, st.Max = pct(0.50), pct(0.90), pct(0.99), got[len(got)-1]
		st.Mean = sum / time.Duration(len(got))
		st.RPS = float64(len(got)) / elapsed.Seconds()
	}
	if p := firstErr.Load(); p != nil {
		st.FirstError = *p
	}
	return st, ctx.Err()
}

// ticker ticks at a steady rate.
type ticker interface {
	wait() (ticks int, err error)
	close()
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return u.Host + ":443"
	}
	return u.Host + ":80"
}

// BenchStubGenerator is a nozzle.Generator that answers at once with a
// fixed short completion: the upstream of gateway benchmarks, so that
// what is measured is the gateway.
type BenchStubGenerator struct {
	// Model is the base model id reported by Info (default "bench-stub").
	Model string
	// Text is the completion (default "Hello from the stub.").
	Text string
	// RuntimeID names the stub in usage events (default "bench").
	RuntimeID string
}

var _ nozzle.Generator = (*BenchStubGenerator)(nil)

func (g *BenchStubGenerator) model() string {
	if g.Model == "" {
		return "bench-stub"
	}
	return g.Model
}

// Info describes a small fictional base model.
func (g *BenchStubGenerator) Info(ctx context.Context) (nozzle.ModelInfo, error) {
	return nozzle.ModelInfo{ID: g.model(), Architecture: "stub", ContextLength: 4096, VocabSize: 256,
		Device: "cpu", CreatedAt: time.Unix(1700000000, 0).UTC()}, nil
}

// Generate emits the fixed text in one chunk.
func (g *BenchStubGenerator) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	if err := ctx.Err(); err != nil {
		return &nozzle.GenerateResult{}, nozzle.Errorf(nozzle.ECANCELED, "Canceled.")
	}
	text := g.Text
	if text == "" {
		text = "Hello from the stub."
	}
	prompt := len(req.PromptTokens) + len(req.Prompt)/4
	for _, m := range req.Messages {
		prompt += len(m.Content)/4 + 4
	}
	rid := g.RuntimeID
	if rid == "" {
		rid = "bench"
	}
	res := &nozzle.GenerateResult{FinishReason: nozzle.FinishStop, PromptTokens: max(1, prompt),
		CompletionTokens: len(strings.Fields(text)), DeviceSeconds: 1e-4, RuntimeID: rid}
	if err := emit(nozzle.Chunk{Text: text}); err != nil {
		return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.")
	}
	return res, nil
}

// AdapterTier says every adapter is resident.
func (g *BenchStubGenerator) AdapterTier(ctx context.Context, sha256 string) nozzle.Tier {
	return nozzle.TierDevice
}

// BenchStubServer serves h, a runtime's remote protocol, on ln for
// gateway benchmarks, with the hot path made cheap: a POST of path with
// the bearer token gets, without running h, the answer h gave once to
// sample (its status, content type and body, recorded when the server
// starts); every other request goes to h. The answer is the real
// server's bytes for the benchmark's one request, so the gateway parses
// what it would parse from a runtime, while the stub spends a few
// microseconds per request instead of the tens that decoding, running
// and encoding take: on a small machine shared by the load generator,
// the stub and the gateway, what the benchmark measures is then the
// gateway. The request body is read but not looked at. Close the
// returned server to stop it.
func BenchStubServer(ln net.Listener, h http.Handler, path, token string, sample []byte) (*fasthttp.Server, error) {
	rq := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(sample))
	rq.Header.Set("Authorization", "Bearer "+token)
	rq.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, rq)
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("bench stub: the upstream answered the sample with %d: %s", rec.Code, rec.Body.Bytes())
	}
	status, ctype, body := rec.Code, rec.Header().Get("Content-Type"), bytes.Clone(rec.Body.Bytes())
	cacheControl := rec.Header().Get("Cache-Control")
	auth := []byte("Bearer " + token)
	other := fasthttpadaptor.NewFastHTTPHandler(h)
	srv := &fasthttp.Server{
		Handler: func(c *fasthttp.RequestCtx) {
			if c.IsPost() && string(c.Path()) == path && bytes.Equal(c.Request.Header.Peek("Authorization"), auth) {
				c.SetStatusCode(status)
				c.SetContentType(ctype)
				if cacheControl != "" {
					c.Response.Header.Set("Cache-Control", cacheControl)
				}
				c.SetBody(body)
				return
			}
			other(c)
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		ReadTimeout:           30 * time.Second,
		IdleTimeout:           time.Minute,
		Concurrency:           1 << 16,
	}
	go srv.Serve(ln)
	return srv, nil
}
