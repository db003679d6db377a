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
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
)

// Client is a runtime on another machine, reached over the remote protocol
// (see NewServer). It implements nozzle.Generator and
// nozzle.CapacitySource with the same semantics as an in-process Runtime.
type Client struct {
	base  string
	token string
	hc    *http.Client
	// CancelGrace is how long Generate keeps reading after it asked the
	// runtime to cancel, for the partial account (default 30 s).
	CancelGrace time.Duration
}

var (
	_ nozzle.Generator      = (*Client)(nil)
	_ nozzle.CapacitySource = (*Client)(nil)
)

// NewClient returns a client of the runtime at baseURL. hc nil means a
// client without an overall timeout (completions stream for long).
func NewClient(baseURL, internalToken string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: internalToken, hc: hc, CancelGrace: 30 * time.Second}
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

func readError(resp *http.Response) error {
	var body struct {
		Error *wireError `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) == nil && body.Error != nil && body.Error.Code != "" {
		return body.Error.err()
	}
	return unavailable(fmt.Errorf("runtime answered %s", resp.Status))
}

// readGenerateError reads an error answered before any work, with the
// account the runtime sent along.
func readGenerateError(resp *http.Response, res *nozzle.GenerateResult) (*nozzle.GenerateResult, error) {
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

// Info describes the base model.
func (c *Client) Info(ctx context.Context) (nozzle.ModelInfo, error) {
	var info nozzle.ModelInfo
	err := c.getJSON(ctx, "/internal/v1/info", &info)
	return info, err
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

// CapacityIntervals returns the runtime's closed capacity intervals with
// Seq > after.
func (c *Client) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	var body struct {
		Data []nozzle.CapacityInterval `json:"data"`
	}
	err := c.getJSON(ctx, "/internal/v1/capacity?after="+strconv.FormatUint(after, 10), &body)
	return body.Data, err
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
func (c *Client) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	res := &nozzle.GenerateResult{}
	wr := toWire(req)
	if wr.RequestID == "" {
		var b [12]byte
		rand.Read(b[:])
		wr.RequestID = "rq-" + hex.EncodeToString(b[:])
	}
	body, err := json.Marshal(wr)
	if err != nil {
		return res, nozzle.Errorf(nozzle.EINVALID, "The request cannot be encoded.").Wrap(err)
	}
	if err := ctx.Err(); err != nil {
		return res, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
	}
	// The stream outlives ctx by up to CancelGrace, for the final account.
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	hreq, err := c.newRequest(sctx, http.MethodPost, "/internal/v1/generate", bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	hreq.Header.Set("Accept", "application/x-ndjson")

	type answer struct {
		resp *http.Response
		err  error
	}
	ans := make(chan answer, 1)
	go func() {
		resp, err := c.hc.Do(hreq)
		ans <- answer{resp, err}
	}()
	var resp *http.Response
	select {
	case a := <-ans:
		if a.err != nil {
			return res, unavailable(a.err)
		}
		resp = a.resp
	case <-ctx.Done():
		// Nothing was read yet: ask the runtime to drop it, then wait
		// for its answer (an early error, or the stream with the account).
		c.cancelRemote(wr.RequestID)
		select {
		case a := <-ans:
			if a.err != nil {
				return res, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(ctx.Err())
			}
			resp = a.resp
		case <-time.After(c.CancelGrace):
			stop()
			return res, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(ctx.Err())
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readGenerateError(resp, res)
	}

	lines := make(chan wireLine)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var l wireLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				readErr <- fmt.Errorf("decode stream line: %w", err)
				return
			}
			select {
			case lines <- l:
			case <-sctx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil {
			readErr <- err
		} else {
			readErr <- io.ErrUnexpectedEOF
		}
	}()

	var (
		canceled  error // why we asked the runtime to cancel
		grace     <-chan time.Time
		done      = ctx.Done()
		cancelReq = func(why error) {
			if canceled == nil {
				canceled = why
				c.cancelRemote(wr.RequestID)
				grace = time.After(c.CancelGrace)
			}
		}
	)
	if ctx.Err() != nil {
		cancelReq(nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(ctx.Err()))
	}
	for {
		select {
		case l := <-lines:
			switch {
			case l.Result != nil:
				final := l.Result.result()
				// The final line ends the stream: let the reader see the
				// end of the body, so that the connection goes back to the
				// pool instead of being closed (a new connection per
				// request would cost a handshake and a socket in TIME_WAIT).
				select {
				case <-readErr:
				case <-time.After(c.CancelGrace):
				}
				if canceled != nil {
					// The runtime's account, our reason.
					final.FinishReason = ""
					return final, canceled
				}
				return final, l.Error.err()
			case l.PromptTokens != nil:
				res.PromptTokens = *l.PromptTokens
			case l.Chunk != nil:
				res.CompletionTokens = l.Chunk.Tokens
				if canceled != nil {
					continue
				}
				if err := emit(nozzle.Chunk{Text: l.Chunk.Text, Logprobs: l.Chunk.Logprobs}); err != nil {
					cancelReq(nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err))
				}
			}
		case err := <-readErr:
			if canceled != nil {
				return res, canceled
			}
			return res, unavailable(fmt.Errorf("generate stream: %w", err))
		case <-done:
			done = nil
			cancelReq(nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(ctx.Err()))
		case <-grace:
			stop()
			return res, canceled
		}
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
