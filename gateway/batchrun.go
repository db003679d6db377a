package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/nozzle-ai/nozzle"
)

// The batch runner runs batches' lines in the gateway, through the same
// path as a live request of the tenant (complete: parse, rate limits and
// budget, generate, meter), a few lines at a time (Config.BatchConcurrency,
// all batches together), each at the runtime's batch priority
// (GenerateRequest.Background) so that interactive requests go first.
//
// Each line is an idempotent request of the key that created the batch:
// its Idempotency-Key is the batch's id and the line's number, so it is
// metered once under a ledger id derived from them (idempotencyID), and a
// line run again — a batch resumed after a restart reruns its lines from
// the first — is answered from the ledger without running or charging it
// again. A line refused by a rate limit waits and is tried again; one
// refused for the budget (or any other error) is a line of the error file.

// batchSaveEvery is how often a running batch's counts are written.
const batchSaveEvery = time.Second

type batchRunner struct {
	s      *Server
	ctx    context.Context
	stop   context.CancelFunc
	slots  chan struct{} // lines running, all batches together
	wg     sync.WaitGroup
	mu     sync.Mutex
	active map[string]*batchRun
}

// batchRun is a batch the runner is running: b is its latest state, which
// only the run (and a cancel, under mu) changes.
type batchRun struct {
	mu        sync.Mutex
	b         *nozzle.Batch
	cancelled chan struct{}
	once      sync.Once
	saved     time.Time
}

func newBatchRunner(s *Server) *batchRunner {
	r := &batchRunner{s: s, slots: make(chan struct{}, s.cfg.BatchConcurrency), active: map[string]*batchRun{}}
	r.ctx, r.stop = context.WithCancel(context.Background())
	return r
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// resume starts the batches a previous process left open.
func (r *batchRunner) resume(ctx context.Context) {
	open, err := r.s.deps.Batches.OpenBatches(ctx)
	if err != nil {
		r.s.log.LogAttrs(ctx, slog.LevelError, "list open batches", slog.String("error", err.Error()))
		return
	}
	for _, b := range open {
		r.s.log.LogAttrs(ctx, slog.LevelInfo, "resuming batch", slog.String("batch_id", b.ID), slog.String("status", b.Status))
		r.start(b)
	}
}

// shutdown stops starting lines and waits for the batches' loops, which
// wait for their running lines (they finish and are metered) and save
// their counts. The batches stay open: the next start resumes them.
func (r *batchRunner) shutdown() {
	if r == nil {
		return
	}
	r.stop()
	r.wg.Wait()
}

// current returns a copy of the running batch id's state, nil if it does
// not run.
func (r *batchRunner) current(id string) *nozzle.Batch {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	run := r.active[id]
	r.mu.Unlock()
	if run == nil {
		return nil
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	cp := *run.b
	return &cp
}

func (r *batchRunner) start(b *nozzle.Batch) {
	run := &batchRun{b: b, cancelled: make(chan struct{})}
	if b.Status == nozzle.BatchCancelling {
		run.once.Do(func() { close(run.cancelled) })
	}
	r.mu.Lock()
	if r.ctx.Err() != nil || r.active[b.ID] != nil {
		r.mu.Unlock()
		return
	}
	r.active[b.ID] = run
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.active, b.ID)
			r.mu.Unlock()
		}()
		r.run(run)
	}()
}

// cancel asks the batch b to stop: it is "cancelling" until its running
// lines finish.
func (r *batchRunner) cancel(ctx context.Context, b *nozzle.Batch) (*nozzle.Batch, error) {
	r.mu.Lock()
	run := r.active[b.ID]
	r.mu.Unlock()
	if run == nil {
		// not running (a shutdown under way): the next start finishes it
		if b.Status != nozzle.BatchCancelling {
			b.Status, b.CancellingAt = nozzle.BatchCancelling, r.s.now()
			if err := r.s.deps.Batches.UpdateBatch(ctx, b); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if nozzle.BatchDone(run.b.Status) {
		return nil, nozzle.Errorf(nozzle.ECONFLICT, "Cannot cancel a batch with status '%s'.", run.b.Status).WithReason("batch_not_cancellable")
	}
	if run.b.Status != nozzle.BatchCancelling {
		run.b.Status, run.b.CancellingAt = nozzle.BatchCancelling, r.s.now()
		if err := r.s.deps.Batches.UpdateBatch(ctx, run.b); err != nil {
			return nil, err
		}
	}
	run.once.Do(func() { close(run.cancelled) })
	cp := *run.b
	return &cp, nil
}

// save writes the run's batch (under run.mu).
func (r *batchRunner) save(run *batchRun) {
	run.saved = time.Now()
	if err := r.s.deps.Batches.UpdateBatch(context.Background(), run.b); err != nil {
		r.s.log.LogAttrs(context.Background(), slog.LevelError, "save batch", slog.String("batch_id", run.b.ID), slog.String("error", err.Error()))
	}
}

// update changes the run's batch with fn and writes it.
func (r *batchRunner) update(run *batchRun, fn func(b *nozzle.Batch)) {
	run.mu.Lock()
	defer run.mu.Unlock()
	fn(run.b)
	r.save(run)
}

// principal is the caller a batch's lines run as: the key that created
// it, as it is now (a revoked key, a suspended tenant or a key without the
// inference scope fail the line as they would fail a live request).
func (r *batchRunner) principal(ctx context.Context, b *nozzle.Batch) (*principal, error) {
	tenant, err := r.s.deps.Tenants.Tenant(ctx, b.TenantID)
	if err != nil {
		return nil, err
	}
	if tenant.Suspended {
		return nil, nozzle.Errorf(nozzle.EFORBIDDEN, "Your organization's access has been suspended. Contact the operator.").WithReason("tenant_suspended")
	}
	keys, err := r.s.deps.Keys.Keys(ctx, b.TenantID)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.ID != b.KeyID {
			continue
		}
		if k.Revoked() {
			return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "The API key that created this batch has been revoked.").WithReason("invalid_api_key")
		}
		if !k.Has(nozzle.ScopeInference) {
			return nil, nozzle.Errorf(nozzle.EFORBIDDEN, "This API key lacks the %q scope needed for this request.", nozzle.ScopeInference).WithReason("missing_scope")
		}
		return &principal{key: k, tenant: tenant, state: r.s.keyStates.get(k.ID)}, nil
	}
	return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "The API key that created this batch no longer exists.").WithReason("invalid_api_key")
}

// run takes a batch from where it is to a final status, unless the
// runner stops first.
func (r *batchRunner) run(run *batchRun) {
	b := run.b
	// A gateway starting resumes its batches before a runtime is ready
	// (the model loading, the demo's set-up): they wait for /readyz.
	for r.s.held.Load() || !r.s.router.ready.Load() {
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if b.Status == nozzle.BatchValidating {
		if !r.validate(run) {
			return
		}
	}
	r.runLines(run)
}

// validate checks every line of the batch's input file; the batch goes
// in_progress, or failed with the errors found. It reports whether the
// batch is to run.
func (r *batchRunner) validate(run *batchRun) bool {
	s := r.s
	b := run.b
	ctx := r.ctx
	var errs []nozzle.BatchError
	fail := func(e nozzle.BatchError) bool {
		errs = append(errs, e)
		return len(errs) < nozzle.MaxBatchErrors
	}
	total := 0
	p, perr := r.principal(ctx, b)
	if perr != nil {
		fail(nozzle.BatchError{Code: "invalid_request", Message: perr.Error()})
	}
	parse := batchEndpoints[b.Endpoint]
	seen := map[string]int{}
	models := map[string]error{}
	err := scanLines(s.filePath(b.InputFileID), s.cfg.BodyLimit, func(n int, raw []byte) bool {
		total++
		if perr != nil {
			return false
		}
		if total > nozzle.MaxBatchRequests {
			fail(nozzle.BatchError{Code: "too_many_requests", Line: n, Message: fmt.Sprintf("A batch may hold at most %d requests.", nozzle.MaxBatchRequests)})
			return false
		}
		if raw == nil {
			return fail(nozzle.BatchError{Code: "line_too_long", Line: n, Message: fmt.Sprintf("This line is longer than the %d bytes a request body may have.", s.cfg.BodyLimit)})
		}
		l, be := decodeBatchLine(raw, b.Endpoint)
		if be != nil {
			be.Line = n
			return fail(*be)
		}
		if first, dup := seen[l.CustomID]; dup {
			return fail(nozzle.BatchError{Code: "duplicate_custom_id", Param: "custom_id", Line: n, Message: fmt.Sprintf("The custom_id %q is used on line %d already; each line needs its own.", l.CustomID, first)})
		}
		seen[l.CustomID] = n
		j, err := parse(l.Body, s.cfg.MaxChoices)
		if err != nil {
			return fail(lineError(n, err, "body."))
		}
		if j.stream {
			return fail(nozzle.BatchError{Code: "invalid_value", Param: "body.stream", Line: n, Message: "Streaming is not supported in a batch: leave 'stream' out or set it to false."})
		}
		merr, ok := models[j.model]
		if !ok {
			merr = s.resolveModel(ctx, p, j)
			if len(models) < 1000 {
				models[j.model] = merr
			}
		}
		if merr != nil {
			return fail(lineError(n, merr, "body."))
		}
		return true
	})
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "validate batch", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		fail(nozzle.BatchError{Code: "invalid_file", Message: "The input file could not be read."})
	}
	if err == nil && perr == nil && total == 0 && len(errs) == 0 {
		fail(nozzle.BatchError{Code: "empty_file", Message: "The input file holds no requests."})
	}
	if r.ctx.Err() != nil {
		return false // stopping: validated again on the next start
	}
	now := s.now()
	r.update(run, func(b *nozzle.Batch) {
		if len(errs) > 0 {
			b.Status, b.FailedAt, b.Errors = nozzle.BatchFailed, now, errs
			return
		}
		if b.Status == nozzle.BatchValidating {
			b.Status = nozzle.BatchInProgress
		}
		b.InProgressAt, b.Total = now, total
	})
	return len(errs) == 0
}

// lineError turns a request's error into a batch error of line n, its
// param under prefix.
func lineError(n int, err error, prefix string) nozzle.BatchError {
	e := nozzle.AsError(err)
	if e == nil {
		return nozzle.BatchError{Code: "invalid_request", Line: n, Message: "The request could not be checked."}
	}
	code := e.Reason
	if code == "" {
		code = "invalid_request"
	}
	param := e.Param
	if param != "" {
		param = prefix + param
	}
	return nozzle.BatchError{Code: code, Message: e.Message, Param: param, Line: n}
}

// lineResult is a line's answer, as an output or error file line.
type lineResult struct {
	ok   bool
	line []byte
}

// runLines runs the batch's lines and finalizes it.
func (r *batchRunner) runLines(run *batchRun) {
	s := r.s
	b := run.b
	if _, err := os.Stat(s.filePath(b.InputFileID)); err != nil {
		// its input file was deleted while it was open
		r.update(run, func(b *nozzle.Batch) {
			b.Status, b.FailedAt = nozzle.BatchFailed, s.now()
			b.Errors = []nozzle.BatchError{{Code: "invalid_file", Message: "The batch's input file was deleted before it ran.", Param: "input_file_id"}}
		})
		return
	}
	outPath := filepath.Join(s.cfg.UploadDir, "batch-"+b.ID+".out")
	errPath := filepath.Join(s.cfg.UploadDir, "batch-"+b.ID+".err")
	outF, err1 := os.Create(outPath)
	errF, err2 := os.Create(errPath)
	if err1 != nil || err2 != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "create batch output", slog.String("batch_id", b.ID))
		return
	}
	defer func() {
		outF.Close()
		errF.Close()
		os.Remove(outPath)
		os.Remove(errPath)
	}()
	outW, errW := bufio.NewWriter(outF), bufio.NewWriter(errF)
	var wmu sync.Mutex // the writers
	// A resumed batch counts again from its first line: lines that ran
	// before are answered from the ledger.
	r.update(run, func(b *nozzle.Batch) {
		b.Completed, b.Failed, b.Usage = 0, 0, nozzle.BatchUsage{}
	})
	// A batch cancelled or expired before this start runs no new line:
	// it collects the answers of the lines that ran (an expired one's
	// others are written as expired). One finalizing runs them all again:
	// every one ran, and those that completed are answered by the ledger.
	run.mu.Lock()
	replayOnly := b.Status == nozzle.BatchCancelling || !s.now().Before(b.ExpiresAt)
	run.mu.Unlock()
	expired := false
	var lines sync.WaitGroup
	err := scanLines(s.filePath(b.InputFileID), s.cfg.BodyLimit, func(n int, raw []byte) bool {
		if raw == nil {
			return true // validated: cannot happen
		}
		l, be := decodeBatchLine(raw, b.Endpoint)
		if be != nil {
			return true
		}
		if expired || !s.now().Before(b.ExpiresAt) {
			// OpenAI writes the lines an expired batch did not run to the
			// error file.
			expired = true
			if !replayOnly {
				wmu.Lock()
				errW.Write(expiredLine(b, l))
				wmu.Unlock()
				return true
			}
		}
		select {
		case <-run.cancelled:
			replayOnly = true
		default:
		}
		if r.ctx.Err() != nil {
			return false
		}
		// wait for a slot, watching for cancel, stop and expiry
		for acquired := false; !acquired; {
			select {
			case r.slots <- struct{}{}:
				acquired = true
			case <-r.ctx.Done():
				return false
			case <-run.cancelled:
				if !replayOnly {
					replayOnly = true
				}
			case <-time.After(200 * time.Millisecond):
				if !s.now().Before(b.ExpiresAt) && !replayOnly {
					expired = true
					wmu.Lock()
					errW.Write(expiredLine(b, l))
					wmu.Unlock()
					return true
				}
			}
		}
		only, exp := replayOnly, expired
		lines.Add(1)
		go func() {
			defer lines.Done()
			defer func() { <-r.slots }()
			res, ran, u := r.runLine(run, n, l, only)
			if !ran {
				if exp && r.ctx.Err() == nil {
					wmu.Lock()
					errW.Write(expiredLine(b, l))
					wmu.Unlock()
				}
				return
			}
			wmu.Lock()
			if res.ok {
				outW.Write(res.line)
			} else {
				errW.Write(res.line)
			}
			wmu.Unlock()
			run.mu.Lock()
			defer run.mu.Unlock()
			if res.ok {
				run.b.Completed++
			} else {
				run.b.Failed++
			}
			run.b.Usage.InputTokens += u.InputTokens
			run.b.Usage.CachedTokens += u.CachedTokens
			run.b.Usage.OutputTokens += u.OutputTokens
			if time.Since(run.saved) >= batchSaveEvery {
				r.save(run)
			}
		}()
		return true
	})
	lines.Wait()
	if err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "read batch input", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
	}
	if r.ctx.Err() != nil {
		// stopping: the counts so far; the next start resumes the batch
		r.update(run, func(*nozzle.Batch) {})
		return
	}
	run.mu.Lock()
	cancelled := b.Status == nozzle.BatchCancelling
	run.mu.Unlock()
	if !cancelled && !expired {
		r.update(run, func(b *nozzle.Batch) {
			if b.Status != nozzle.BatchFinalizing {
				b.Status, b.FinalizingAt = nozzle.BatchFinalizing, s.now()
			}
		})
	}
	if err := outW.Flush(); err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "write batch output", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		return
	}
	if err := errW.Flush(); err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "write batch errors", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		return
	}
	outID, err1 := r.keepOutput(b, outF, outPath, "output")
	errID, err2 := r.keepOutput(b, errF, errPath, "error")
	if err1 != nil || err2 != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "store batch output", slog.String("batch_id", b.ID))
		return // left open: the next start tries again
	}
	now := s.now()
	var status string
	var completed, failed int
	r.update(run, func(b *nozzle.Batch) {
		defer func() { status, completed, failed = b.Status, b.Completed, b.Failed }()
		b.OutputFileID, b.ErrorFileID = outID, errID
		switch {
		case b.Status == nozzle.BatchCancelling:
			b.Status, b.CancelledAt = nozzle.BatchCancelled, now
		case expired:
			b.Status, b.ExpiredAt = nozzle.BatchExpired, now
		default:
			b.Status, b.CompletedAt = nozzle.BatchCompleted, now
		}
	})
	s.log.LogAttrs(r.ctx, slog.LevelInfo, "batch done", slog.String("batch_id", b.ID), slog.String("status", status),
		slog.Int("completed", completed), slog.Int("failed", failed))
}

// keepOutput stores the batch's output or error file (kind), if it holds
// anything, as a file of purpose batch_output and returns its id. Its id
// is derived from the batch's, so that a batch finalized again after a
// crash replaces the file instead of adding one.
func (r *batchRunner) keepOutput(b *nozzle.Batch, fh *os.File, path, kind string) (string, error) {
	st, err := fh.Stat()
	if err != nil {
		return "", err
	}
	if st.Size() == 0 {
		return "", nil
	}
	if err := fh.Sync(); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(b.ID + "/" + kind))
	id := filePrefix + strings.TrimPrefix(b.ID, batchPrefix)[:12] + hex.EncodeToString(sum[:8])
	ctx := context.Background()
	if old, err := r.s.deps.Batches.File(ctx, b.TenantID, id); err == nil && old.TenantID == b.TenantID {
		if err := r.s.deps.Batches.DeleteFile(ctx, b.TenantID, id); err != nil {
			return "", err
		}
	}
	f := &nozzle.File{ID: id, TenantID: b.TenantID, Filename: b.ID + "_" + kind + ".jsonl", Purpose: nozzle.FilePurposeBatchOutput, Bytes: st.Size(), Created: r.s.now()}
	if err := r.s.storeFile(ctx, f, path); err != nil {
		return "", err
	}
	return id, nil
}

// outputLine is a line of an output or error file, as OpenAI writes them.
type outputLine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *outputResponse `json:"response"`
	Error    *outputError    `json:"error"`
}

type outputResponse struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

type outputError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func batchRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "batch_req_" + hex.EncodeToString(b[:])
}

func expiredLine(b *nozzle.Batch, l *batchLine) []byte {
	out, _ := json.Marshal(outputLine{ID: batchRequestID(), CustomID: l.CustomID,
		Error: &outputError{Code: "batch_expired", Message: "This request could not be executed before the completion window expired."}})
	return append(out, '\n')
}

// lineRequestID is the request id of line n of batch b: the attempt's
// ledger id (its completed event is under the Idempotency-Key's).
func lineRequestID(b *nozzle.Batch, n int) string {
	return "req_" + strings.TrimPrefix(b.ID, batchPrefix) + "_" + strconv.Itoa(n)
}

// lineIdempotencyKey is the Idempotency-Key line n of batch b runs with.
func lineIdempotencyKey(b *nozzle.Batch, n int) string {
	return "batch:" + b.ID + ":" + strconv.Itoa(n)
}

// runLine runs line n as a request of the batch's key and returns its
// output line, whether it ran (a replay-only run skips a line with no
// recorded answer, a stopping runner one refused by a rate limit) and its
// usage.
func (r *batchRunner) runLine(run *batchRun, n int, l *batchLine, replayOnly bool) (lineResult, bool, nozzle.BatchUsage) {
	s := r.s
	b := run.b
	ctx := context.Background()
	if replayOnly {
		p, err := r.principal(ctx, b)
		if err != nil {
			return lineResult{}, false, nozzle.BatchUsage{}
		}
		if _, err := s.deps.Ledger.Usage(ctx, idempotencyID(p.tenant.ID, lineIdempotencyKey(b, n))); err != nil {
			return lineResult{}, false, nozzle.BatchUsage{}
		}
	}
	parse := batchEndpoints[b.Endpoint]
	for {
		fctx := &fasthttp.RequestCtx{}
		fctx.Request.Header.SetMethod(fiber.MethodPost)
		fctx.Request.SetRequestURI(b.Endpoint)
		fctx.Request.Header.SetContentType(fiber.MIMEApplicationJSON)
		fctx.Request.Header.Set(HeaderIdempotencyKey, lineIdempotencyKey(b, n))
		fctx.Request.SetBody(l.Body)
		c := s.app.AcquireCtx(fctx)
		st := &reqState{id: lineRequestID(b, n), start: time.Now(), batch: true}
		c.Locals(localsState, st)
		c.Set(HeaderRequestID, st.id)
		p, err := r.principal(ctx, b)
		if err == nil {
			st.principal = p
			err = s.complete(c, parse)
		}
		if e := nozzle.AsError(err); e != nil && (e.Code == nozzle.ERATELIMIT && e.Reason != "request_too_large" || e.Code == nozzle.EUNAVAILABLE) {
			s.app.ReleaseCtx(c)
			// A rate limit, or no runtime to run it now (none ready, one
			// gone mid-answer: not charged): wait as a client would, then
			// try again.
			wait := max(e.RetryAfter, 100*time.Millisecond)
			if e.Code == nozzle.EUNAVAILABLE {
				wait = max(e.RetryAfter, time.Second)
			}
			select {
			case <-time.After(wait):
				continue
			case <-r.ctx.Done():
				return lineResult{}, false, nozzle.BatchUsage{}
			case <-run.cancelled:
				return lineResult{}, false, nozzle.BatchUsage{}
			}
		}
		if err != nil {
			_ = s.errorHandler(c, err)
		}
		status := c.Response().StatusCode()
		body := append([]byte(nil), c.Response().Body()...)
		rid := string(c.Response().Header.Peek(HeaderRequestID))
		s.app.ReleaseCtx(c)
		if !json.Valid(body) {
			body, _ = json.Marshal(map[string]any{"error": map[string]any{"message": "Internal error.", "type": "server_error"}})
		}
		out := outputLine{ID: batchRequestID(), CustomID: l.CustomID, Response: &outputResponse{StatusCode: status, RequestID: rid, Body: body}}
		line, _ := json.Marshal(out)
		ok := status >= 200 && status < 300
		var u nozzle.BatchUsage
		if ok {
			u = bodyUsage(body)
		}
		return lineResult{ok: ok, line: append(line, '\n')}, true, u
	}
}

// bodyUsage reads the usage of a completion's answer (chat and
// completions' prompt_tokens, the Responses API's input_tokens).
func bodyUsage(body []byte) nozzle.BatchUsage {
	var v struct {
		Usage struct {
			PromptTokens        int64 `json:"prompt_tokens"`
			CompletionTokens    int64 `json:"completion_tokens"`
			InputTokens         int64 `json:"input_tokens"`
			OutputTokens        int64 `json:"output_tokens"`
			PromptTokensDetails struct {
				CachedTokens int64 `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
			InputTokensDetails struct {
				CachedTokens int64 `json:"cached_tokens"`
			} `json:"input_tokens_details"`
		} `json:"usage"`
	}
	if json.Unmarshal(body, &v) != nil {
		return nozzle.BatchUsage{}
	}
	u := v.Usage
	return nozzle.BatchUsage{
		InputTokens:  u.PromptTokens + u.InputTokens,
		CachedTokens: u.PromptTokensDetails.CachedTokens + u.InputTokensDetails.CachedTokens,
		OutputTokens: u.CompletionTokens + u.OutputTokens,
	}
}
