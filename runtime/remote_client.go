package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
)

// Client is a runtime on another machine, reached over the remote protocol
// (see NewServer). It implements nozzle.Generator and
// nozzle.OpenCapacitySource with the same semantics as an in-process
// Runtime.
type Client struct {
	base  string
	token string
	hc    *http.Client
	rid   atomic.Pointer[string] // the runtime id Info last reported
	// CancelGrace is how long Generate keeps reading after it asked the
	// runtime to cancel, for the partial account (default 30 s).
	CancelGrace time.Duration

	// silent counts the Info calls in a row the runtime did not answer in
	// the time they had; at silentInfos the exchanges in flight are cut.
	silent   atomic.Int32
	mu       sync.Mutex
	inflight map[*remoteCancel]struct{}
}

// silentInfos unanswered Info calls in a row (the gateway's health checks,
// every 5 s) make a runtime lost: it hangs rather than fails (a frozen
// process or device), and its requests in flight would otherwise wait for
// the request timeout.
const silentInfos = 2

// errLost ends the exchanges with a runtime that stopped answering. Those
// that emitted nothing move to another runtime (EUNAVAILABLE).
func errLost() error {
	return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime stopped answering.").WithReason("upstream_lost")
}

var (
	_ nozzle.Generator                = (*Client)(nil)
	_ nozzle.OpenCapacitySource       = (*Client)(nil)
	_ nozzle.IdentifiedCapacitySource = (*Client)(nil)
	_ nozzle.AdapterDropper           = (*Client)(nil)
)

// NewClient returns a client of the runtime at baseURL. hc nil means a
// client of its own on a Transport, without an overall timeout
// (completions stream for long).
func NewClient(baseURL, internalToken string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: NewTransport()}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: internalToken, hc: hc, CancelGrace: 30 * time.Second,
		inflight: map[*remoteCancel]struct{}{}}
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func unavailable(err error) error {
	return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime cannot be reached.").Wrap(err)
}

// getJSON GETs path into v, mapping error answers to *nozzle.Error.
func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return unavailable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return unavailable(fmt.Errorf("decode %s: %w", path, err))
	}
	return nil
}

// errWrongToken is the runtime's 401: the gateway's internal token is not
// the runtime's, a deployment fault its clients must not read as theirs.
func errWrongToken() error {
	return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime refused the internal token: give gateway and runtime the same --internal-token.").
		WithReason("internal_token_mismatch")
}

func readError(resp *http.Response) error {
	if resp.StatusCode == http.StatusUnauthorized {
		return errWrongToken()
	}
	var body struct {
		Error *wireError `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) == nil && body.Error != nil && body.Error.Code != "" {
		return body.Error.err()
	}
	if resp.StatusCode == http.StatusNotFound {
		// A path this runtime does not serve (an older version).
		return nozzle.Errorf(nozzle.ENOTFOUND, "The runtime does not serve %s.", resp.Request.URL.Path)
	}
	return unavailable(fmt.Errorf("runtime answered %s", resp.Status))
}

// readGenerateError reads an error answered before any work, with the
// account the runtime sent along.
func readGenerateError(resp *http.Response, res *nozzle.GenerateResult) (*nozzle.GenerateResult, error) {
	if resp.StatusCode == http.StatusUnauthorized {
		return res, errWrongToken()
	}
	var body struct {
		Error  *wireError  `json:"error"`
		Result *wireResult `json:"result"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) != nil || body.Error == nil || body.Error.Code == "" {
		return res, unavailable(fmt.Errorf("runtime answered %s", resp.Status))
	}
	if body.Result != nil {
		res = body.Result.result()
	}
	return res, body.Error.err()
}

// Info describes the base model. A runtime that leaves silentInfos calls
// in a row unanswered until their deadline is lost: the exchanges in flight
// with it end at once with EUNAVAILABLE.
func (c *Client) Info(ctx context.Context) (nozzle.ModelInfo, error) {
	var info nozzle.ModelInfo
	err := c.getJSON(ctx, "/internal/v1/info", &info)
	switch {
	case err == nil:
		c.silent.Store(0)
	case ctx.Err() == context.DeadlineExceeded:
		if c.silent.Add(1) >= silentInfos {
			c.abandon()
		}
	}
	return info, err
}

// abandon cuts every exchange in flight: the runtime stopped answering.
func (c *Client) abandon() {
	c.mu.Lock()
	lost := make([]*remoteCancel, 0, len(c.inflight))
	for r := range c.inflight {
		lost = append(lost, r)
	}
	c.mu.Unlock()
	for _, r := range lost {
		r.lose()
	}
}

// AdapterTier says where an adapter's weights are on the runtime; disk when
// the runtime cannot be asked.
func (c *Client) AdapterTier(ctx context.Context, sha256 string) nozzle.Tier {
	var body struct {
		Tier nozzle.Tier `json:"tier"`
	}
	if err := c.getJSON(ctx, "/internal/v1/adapters/"+url.PathEscape(sha256)+"/tier", &body); err != nil {
		return nozzle.TierDisk
	}
	return body.Tier
}

// DropAdapter asks the runtime to drop a deleted adapter from its caches
// once no sequence uses it. EUNAVAILABLE: the runtime cannot be reached
// (or is not ready); ENOTFOUND: it is of a version without drops.
func (c *Client) DropAdapter(ctx context.Context, sha256 string) error {
	req, err := c.newRequest(ctx, http.MethodPost, "/internal/v1/adapters/"+url.PathEscape(sha256)+"/drop", nil)
	if err != nil {
		return nozzle.Errorf(nozzle.EINTERNAL, "Internal error.").Wrap(fmt.Errorf("drop adapter: %w", err))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return unavailable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return readError(resp)
	}
	return nil
}

// CapacityIntervals returns the runtime's closed capacity intervals with
// Seq > after.
func (c *Client) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	var body struct {
		Data []nozzle.CapacityInterval `json:"data"`
	}
	err := c.getJSON(ctx, "/internal/v1/capacity?after="+strconv.FormatUint(after, 10), &body)
	return body.Data, err
}

// CapacityRuntimeID returns the id the runtime records its capacity
// under, from its info.
func (c *Client) CapacityRuntimeID(ctx context.Context) (string, error) {
	info, err := c.Info(ctx)
	if err == nil {
		c.rid.Store(&info.RuntimeID)
		return info.RuntimeID, nil
	}
	// A runtime that closed answers no Info, but its last intervals are
	// still to be collected, under the id it had.
	if id := c.rid.Load(); id != nil && nozzle.ErrorCode(err) == nozzle.EUNAVAILABLE {
		return *id, nil
	}
	return "", err
}

// OpenCapacity returns the runtime's open capacity interval so far; ok is
// false when none is open.
func (c *Client) OpenCapacity(ctx context.Context) (nozzle.CapacityInterval, bool, error) {
	var body struct {
		Data *nozzle.CapacityInterval `json:"data"`
	}
	err := c.getJSON(ctx, "/internal/v1/capacity/open", &body)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
		err = nil // a runtime from before open intervals: it reports closed ones only
	}
	if err != nil || body.Data == nil {
		return nozzle.CapacityInterval{}, false, err
	}
	return *body.Data, true, nil
}

// Ready reports whether the runtime answers /readyz with 200.
func (c *Client) Ready(ctx context.Context) bool {
	req, err := c.newRequest(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Generate runs req on the runtime. When ctx ends, it asks the runtime to
// cancel and keeps reading until the runtime's final account arrives, so
// that the device seconds used are reported; if the connection breaks, it
// returns what it counted with ECANCELED (ctx ended) or EUNAVAILABLE.
//
// The answer is read on the caller's goroutine; only a canceled ctx starts
// another one (to ask the runtime to stop).
func (c *Client) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	res := &nozzle.GenerateResult{}
	// The exchange's id on the runtime (what a cancel names) is its own:
	// the choices of one request share its RequestID, and the runtime
	// refuses an id it is already running.
	wr := toWire(req)
	var b [8]byte
	rand.Read(b[:])
	if wr.RequestID == "" {
		wr.RequestID = "rq"
	}
	wr.RequestID += "~" + hex.EncodeToString(b[:])
	body, err := json.Marshal(wr)
	if err != nil {
		return res, nozzle.Errorf(nozzle.EINVALID, "The request cannot be encoded.").Wrap(err)
	}
	if err := ctx.Err(); err != nil {
		return res, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
	}
	// The exchange outlives ctx by up to CancelGrace, for the final account.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	cn := &remoteCancel{c: c, id: wr.RequestID, stop: stop}
	defer cn.close()
	c.mu.Lock()
	c.inflight[cn] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, cn)
		c.mu.Unlock()
	}()
	defer context.AfterFunc(ctx, func() {
		cn.cancel(nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(ctx.Err()))
	})()

	hreq, err := c.newRequest(sctx, http.MethodPost, "/internal/v1/generate", bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	hreq.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.hc.Do(hreq)
	if err != nil {
		if why := cn.reason(); why != nil {
			return res, why
		}
		return res, unavailable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readGenerateError(resp, res)
	}

	var prog nozzle.Progress // the account so far, told with each chunk
	sc := bufio.NewScanner(resp.Body)
	buf := lineBufs.Get().(*[]byte)
	defer lineBufs.Put(buf)
	sc.Buffer((*buf)[:0], 16<<20)
	for sc.Scan() {
		var l wireLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return res, unavailable(fmt.Errorf("decode stream line: %w", err))
		}
		switch {
		case l.Result != nil:
			final := l.Result.result()
			// The final line ends the body: read its end, so that the
			// connection goes back to the pool instead of being closed
			// (a new connection per request would cost a handshake and a
			// socket in TIME_WAIT).
			t := time.AfterFunc(c.CancelGrace, stop)
			io.Copy(io.Discard, resp.Body)
			t.Stop()
			if why := cn.reason(); why != nil {
				// The runtime's account, our reason.
				final.FinishReason = ""
				return final, why
			}
			return final, l.Error.err()
		case l.PromptTokens != nil:
			res.PromptTokens = *l.PromptTokens
			prog.PromptTokens = *l.PromptTokens
		case l.Accepted:
			if req.OnAccepted != nil && cn.reason() == nil {
				req.OnAccepted()
			}
		case l.Chunk != nil:
			ch := nozzle.Chunk{Text: l.Chunk.Text, Logprobs: l.Chunk.Logprobs, Prompt: l.Chunk.Prompt, ThoughtsOpen: l.Chunk.ThoughtsOpen}
			if !l.Chunk.Prompt {
				res.CompletionTokens = l.Chunk.Tokens
				if l.Chunk.RuntimeID != "" {
					prog.RuntimeID, prog.RatePerHour = l.Chunk.RuntimeID, l.Chunk.RatePerHour
				}
				prog.CompletionTokens, prog.DeviceSeconds, prog.CachedPromptTokens = l.Chunk.Tokens, l.Chunk.DeviceSeconds, l.Chunk.CachedPromptTokens
				ch.Progress = prog
			}
			if cn.reason() != nil {
				continue
			}
			if err := emit(ch); err != nil {
				cn.cancel(nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err))
			}
		}
	}
	if why := cn.reason(); why != nil {
		return res, why
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return res, unavailable(fmt.Errorf("generate stream: %w", err))
}

// lineBufs are the first buffers of the answer's line scanners (a long
// line gets a larger one of its own).
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// remoteCancel is the cancellation of one remote generation: the first
// cancel records why, asks the runtime to stop, and gives it CancelGrace
// to send its final account before the exchange is cut (stop).
type remoteCancel struct {
	c    *Client
	id   string
	stop context.CancelFunc

	mu    sync.Mutex
	why   error
	grace *time.Timer
	done  bool // Generate returned: no more timers
}

func (r *remoteCancel) cancel(why error) {
	r.mu.Lock()
	if r.why != nil || r.done {
		r.mu.Unlock()
		return
	}
	r.why = why
	r.mu.Unlock()
	r.c.cancelRemote(r.id)
	r.mu.Lock()
	if !r.done {
		r.grace = time.AfterFunc(r.c.CancelGrace, r.stop)
	}
	r.mu.Unlock()
}

// lose ends the exchange now, without asking the runtime (it does not
// answer) or waiting for its account.
func (r *remoteCancel) lose() {
	r.mu.Lock()
	if r.why == nil {
		r.why = errLost()
	}
	r.mu.Unlock()
	r.stop()
}

func (r *remoteCancel) reason() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.why
}

func (r *remoteCancel) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	if r.grace != nil {
		r.grace.Stop()
	}
}

// cancelRemote asks the runtime to cancel a request, best effort.
func (c *Client) cancelRemote(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodPost, "/internal/v1/cancel/"+url.PathEscape(id), nil)
	if err != nil {
		return
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
