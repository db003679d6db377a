package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// line run again is answered from the ledger without running or charging
// it again. A line refused by a rate limit waits and is tried again; one
// refused for the budget (or any other error) is a line of the error file.
//
// The answers go to partial output and error files in the files folder
// (batchOutput), in the order of the input's lines, and the batch's saved
// progress (nozzle.BatchProgress) says how far they hold: a batch resumed
// after a restart keeps them and goes on from the line after, so only the
// lines running at a crash are run again (answered from the ledger if they
// completed). The partial files count against the tenant's file storage
// quota while they grow; an answer that would pass it stops the batch,
// which fails with file_storage_full.

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

	bytesMu sync.Mutex
	partial map[string]int64 // bytes of each tenant's running batches' partial files
}

// batchRun is a batch the runner is running: b is its latest state, which
// only the run (and a cancel, under mu) changes.
type batchRun struct {
	mu        sync.Mutex
	b         *nozzle.Batch
	cancelled chan struct{}
	once      sync.Once
	// live counts the answers written so far, while the lines run; b's
	// counts are those of b.Progress, what the saved files hold.
	live *batchCounts
}

type batchCounts struct {
	completed, failed int
	usage             nozzle.BatchUsage
}

func newBatchRunner(s *Server) *batchRunner {
	r := &batchRunner{s: s, slots: make(chan struct{}, s.cfg.BatchConcurrency), active: map[string]*batchRun{}, partial: map[string]int64{}}
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
	resumed := map[string]bool{}
	for _, b := range open {
		resumed[b.ID] = true
	}
	// partial files of batches done (a crash between a batch's last save
	// and their removal)
	parts, _ := filepath.Glob(filepath.Join(r.s.cfg.FilesDir, batchPrefix+"*.part"))
	for _, p := range parts {
		id, _, _ := strings.Cut(filepath.Base(p), ".")
		if !resumed[id] {
			if err := os.Remove(p); err != nil {
				r.s.log.LogAttrs(ctx, slog.LevelWarn, "remove batch partial file", slog.String("path", p), slog.String("error", err.Error()))
			}
		}
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
	return run.snapshot()
}

// snapshot is a copy of the run's batch with its live counts (under mu).
func (run *batchRun) snapshot() *nozzle.Batch {
	cp := *run.b
	if l := run.live; l != nil {
		cp.Completed, cp.Failed, cp.Usage = l.completed, l.failed, l.usage
	}
	return &cp
}

// partialBytes is the size of the tenant's running batches' partial
// output and error files.
func (r *batchRunner) partialBytes(tenantID string) int64 {
	if r == nil {
		return 0
	}
	r.bytesMu.Lock()
	defer r.bytesMu.Unlock()
	return r.partial[tenantID]
}

// reserve counts n more bytes of the tenant's partial files if its files
// stay within its storage quota with them; else it reports false and the
// bytes the tenant uses. Uploads check the quota under the same lock.
func (r *batchRunner) reserve(tenantID string, n int64) (bool, int64) {
	quota := r.s.cfg.TenantFileBytes
	r.s.quotaMu.Lock()
	defer r.s.quotaMu.Unlock()
	if quota > 0 {
		used, err := r.s.filesUsed(context.Background(), tenantID)
		if err != nil {
			// the ledger could not be read: the answer is kept
			r.s.log.LogAttrs(context.Background(), slog.LevelError, "batch file quota", slog.String("tenant_id", tenantID), slog.String("error", err.Error()))
		} else if used+n > quota {
			return false, used
		}
	}
	r.addPartial(tenantID, n)
	return true, 0
}

// addPartial adds n (negative: takes) to the tenant's partial bytes.
func (r *batchRunner) addPartial(tenantID string, n int64) {
	r.bytesMu.Lock()
	defer r.bytesMu.Unlock()
	if r.partial[tenantID] += n; r.partial[tenantID] <= 0 {
		delete(r.partial, tenantID)
	}
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
	return run.snapshot(), nil
}

// save writes the run's batch (under run.mu).
func (r *batchRunner) save(run *batchRun) {
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
// inference scope fail the line as they would fail a live request), or
// for a batch created on the console, its user (disabled: the lines fail)
// under the tenant's limits.
func (r *batchRunner) principal(ctx context.Context, b *nozzle.Batch) (*principal, error) {
	tenant, err := r.s.deps.Tenants.Tenant(ctx, b.TenantID)
	if err != nil {
		return nil, err
	}
	if tenant.Suspended {
		return nil, nozzle.Errorf(nozzle.EFORBIDDEN, "Your organization's access has been suspended. Contact the operator.").WithReason("tenant_suspended")
	}
	if userID, ok := strings.CutPrefix(b.KeyID, sessionKeyPrefix); ok {
		var u *nozzle.User
		if r.s.deps.Users != nil {
			u, err = r.s.deps.Users.User(ctx, userID)
		}
		switch {
		case u == nil && (err == nil || nozzle.ErrorCode(err) == nozzle.ENOTFOUND), u != nil && u.TenantID != b.TenantID:
			return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "The console user who created this batch no longer exists.").WithReason("invalid_api_key")
		case err != nil:
			return nil, err
		case u.Disabled:
			return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "The console user who created this batch has been disabled.").WithReason("invalid_api_key")
		}
		return &principal{key: sessionKey(u.ID, tenant.ID), tenant: tenant, state: r.s.keyStates.get(b.KeyID)}, nil
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
	model := "" // the first line's
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
		if model == "" {
			model = j.model
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
		if b.Model == "" {
			b.Model = model
		}
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

// batchWindow bounds the lines of a batch started and not yet written
// (those finished wait for the ones before them): at least this many.
const batchWindow = 256

// lineOutcome is what a finished line adds to the batch's files.
type lineOutcome struct {
	n       int    // the input line
	end     int64  // the input's offset after it
	line    []byte // the output or error file's line; nil: none
	ok      bool   // line goes to the output file
	counted bool   // a request that ran: counted completed or failed
	usage   nozzle.BatchUsage
}

// batchOutput writes a running batch's answers to its partial output and
// error files (<files>/<batch id>.out.part, .err.part) in the order of the
// input's lines, whatever order they finish in, and saves the batch's
// progress with the files synced: a resumed batch keeps what they hold.
type batchOutput struct {
	r                *batchRunner
	run              *batchRun
	tenantID         string
	outPath, errPath string
	out, errs        *os.File
	outW, errW       *bufio.Writer

	window   chan struct{} // a place per line started and not yet written
	full     chan struct{} // closed once an answer did not fit the quota
	fullOnce sync.Once

	mu       sync.Mutex
	pending  map[int]lineOutcome // finished lines, by sequence, waiting for those before
	next     int                 // the sequence of the next line to write
	at       nozzle.BatchProgress
	counts   batchCounts
	reserved int64 // bytes of the partial files counted in the runner's partial
	fullUsed int64 // the tenant's bytes when an answer did not fit
	saved    time.Time
}

func (r *batchRunner) partPath(b *nozzle.Batch, kind string) string {
	return filepath.Join(r.s.cfg.FilesDir, b.ID+"."+kind+".part")
}

// removeParts removes the batch's partial files.
func (r *batchRunner) removeParts(b *nozzle.Batch) {
	for _, kind := range []string{"out", "err"} {
		if err := os.Remove(r.partPath(b, kind)); err != nil && !os.IsNotExist(err) {
			r.s.log.LogAttrs(context.Background(), slog.LevelWarn, "remove batch partial file", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		}
	}
}

// openPart opens the partial file at path cut to its first size bytes, at
// their end.
func openPart(path string, size int64) (*os.File, error) {
	fh, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err == nil && st.Size() < size {
		err = fmt.Errorf("%s holds %d bytes, its batch's progress %d", path, st.Size(), size)
	}
	if err == nil {
		err = fh.Truncate(size)
	}
	if err == nil {
		_, err = fh.Seek(size, io.SeekStart)
	}
	if err != nil {
		fh.Close()
		return nil, err
	}
	return fh, nil
}

// openOutput opens the run's partial files: those its saved progress
// names, cut to what it says they hold (what was written after it is
// written again), or new ones, the batch counting again from its first
// line (a batch without progress, or whose files were lost: the lines
// that ran before are answered from the ledger).
func (r *batchRunner) openOutput(run *batchRun) (*batchOutput, error) {
	run.mu.Lock()
	b := run.b
	o := &batchOutput{r: r, run: run, tenantID: b.TenantID, outPath: r.partPath(b, "out"), errPath: r.partPath(b, "err"),
		window: make(chan struct{}, max(batchWindow, 2*r.s.cfg.BatchConcurrency)), full: make(chan struct{}),
		pending: map[int]lineOutcome{}, saved: time.Now()}
	var p *nozzle.BatchProgress
	if b.Progress != nil {
		cp := *b.Progress
		p = &cp
	}
	counts := batchCounts{completed: b.Completed, failed: b.Failed, usage: b.Usage}
	run.mu.Unlock()
	if p != nil {
		var err error
		st, serr := os.Stat(r.s.filePath(b.InputFileID))
		switch {
		case serr != nil:
			err = serr
		case p.Offset < 0 || p.Offset > st.Size():
			err = fmt.Errorf("offset %d past the input's %d bytes", p.Offset, st.Size())
		default:
			if o.out, err = openPart(o.outPath, p.OutBytes); err == nil {
				if o.errs, err = openPart(o.errPath, p.ErrBytes); err != nil {
					o.out.Close()
				}
			}
		}
		if err != nil {
			r.s.log.LogAttrs(r.ctx, slog.LevelWarn, "batch progress lost: its lines run again from the first", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
			p = nil
		}
	}
	if p == nil {
		p, counts = &nozzle.BatchProgress{}, batchCounts{}
		var err1, err2 error
		o.out, err1 = os.OpenFile(o.outPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		o.errs, err2 = os.OpenFile(o.errPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err := errors.Join(err1, err2); err != nil {
			if o.out != nil {
				o.out.Close()
			}
			if o.errs != nil {
				o.errs.Close()
			}
			return nil, fmt.Errorf("create batch partial files: %w", err)
		}
		syncDir(r.s.cfg.FilesDir)
	}
	o.at, o.counts = *p, counts
	o.outW, o.errW = bufio.NewWriter(o.out), bufio.NewWriter(o.errs)
	o.reserved = p.OutBytes + p.ErrBytes
	r.addPartial(o.tenantID, o.reserved)
	r.update(run, func(b *nozzle.Batch) {
		at := *p
		b.Progress = &at
		b.Completed, b.Failed, b.Usage = counts.completed, counts.failed, counts.usage
		run.live = &batchCounts{completed: counts.completed, failed: counts.failed, usage: counts.usage}
	})
	return o, nil
}

// close closes the partial files and gives back the bytes they counted.
func (o *batchOutput) close() {
	o.out.Close()
	o.errs.Close()
	o.release()
}

// release gives back the bytes the partial files counted: they are the
// batch's output and error files' now, or nobody's.
func (o *batchOutput) release() {
	o.mu.Lock()
	n := o.reserved
	o.reserved = 0
	o.mu.Unlock()
	o.r.addPartial(o.tenantID, -n)
}

// fill stops the batch: an answer would take the tenant's files (used
// bytes) past the quota.
func (o *batchOutput) fill(used int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fillLocked(used)
}

// fillLocked is fill under mu.
func (o *batchOutput) fillLocked(used int64) {
	o.fullOnce.Do(func() {
		o.fullUsed = used
		close(o.full)
	})
}

func (o *batchOutput) isFull() bool {
	select {
	case <-o.full:
		return true
	default:
		return false
	}
}

// finish takes line seq's outcome: written once those before it are, if
// it fits the tenant's quota (once one does not, no other answer is
// written).
func (o *batchOutput) finish(seq int, oc lineOutcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending[seq] = oc
	for {
		oc, ok := o.pending[o.next]
		if !ok {
			break
		}
		delete(o.pending, o.next)
		o.next++
		o.write(o.fit(oc))
		<-o.window
	}
	if time.Since(o.saved) >= batchSaveEvery {
		if err := o.sync(); err != nil {
			o.r.s.log.LogAttrs(context.Background(), slog.LevelError, "save batch progress", slog.String("batch_id", o.run.b.ID), slog.String("error", err.Error()))
		}
	}
}

// fit is oc as it is written (under mu, in the input's order, so that the
// answers written are the first ones that fit, whatever order the lines
// finished in): its line counted in the tenant's quota, or, once an answer
// has not fit, without it and not counted.
func (o *batchOutput) fit(oc lineOutcome) lineOutcome {
	if oc.line == nil {
		return oc
	}
	if !o.isFull() {
		fits, used := o.r.reserve(o.tenantID, int64(len(oc.line)))
		if fits {
			o.reserved += int64(len(oc.line))
			return oc
		}
		o.fillLocked(used)
	}
	oc.line, oc.counted = nil, false
	return oc
}

// write writes oc (under mu).
func (o *batchOutput) write(oc lineOutcome) {
	if oc.line != nil {
		// a write error stays in the writer: sync reports it
		if oc.ok {
			o.outW.Write(oc.line)
			o.at.OutBytes += int64(len(oc.line))
		} else {
			o.errW.Write(oc.line)
			o.at.ErrBytes += int64(len(oc.line))
		}
	}
	o.at.Line, o.at.Offset = oc.n, oc.end
	if oc.counted {
		if oc.ok {
			o.counts.completed++
		} else {
			o.counts.failed++
		}
		o.counts.usage.InputTokens += oc.usage.InputTokens
		o.counts.usage.CachedTokens += oc.usage.CachedTokens
		o.counts.usage.OutputTokens += oc.usage.OutputTokens
	}
	c := o.counts
	o.run.mu.Lock()
	o.run.live = &c
	o.run.mu.Unlock()
}

// sync writes the files out to disk, then saves the batch's progress and
// counts to match (under mu).
func (o *batchOutput) sync() error {
	o.saved = time.Now()
	if err := o.outW.Flush(); err != nil {
		return fmt.Errorf("write batch output: %w", err)
	}
	if err := o.errW.Flush(); err != nil {
		return fmt.Errorf("write batch errors: %w", err)
	}
	if err := o.out.Sync(); err != nil {
		return fmt.Errorf("sync batch output: %w", err)
	}
	if err := o.errs.Sync(); err != nil {
		return fmt.Errorf("sync batch errors: %w", err)
	}
	at, c := o.at, o.counts
	o.r.update(o.run, func(b *nozzle.Batch) {
		b.Progress = &at
		b.Completed, b.Failed, b.Usage = c.completed, c.failed, c.usage
	})
	return nil
}

// runLines runs the batch's lines, from the line after its saved
// progress, and finalizes it.
func (r *batchRunner) runLines(run *batchRun) {
	s := r.s
	b := run.b
	if _, err := os.Stat(s.filePath(b.InputFileID)); err != nil {
		// its input file was deleted while it was open
		r.removeParts(b)
		r.update(run, func(b *nozzle.Batch) {
			b.Status, b.FailedAt, b.Progress = nozzle.BatchFailed, s.now(), nil
			b.Errors = []nozzle.BatchError{{Code: "invalid_file", Message: "The batch's input file was deleted before it ran.", Param: "input_file_id"}}
		})
		return
	}
	o, err := r.openOutput(run)
	if err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "open batch output", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		return // left open: the next start tries again
	}
	defer o.close()
	if quota := s.cfg.TenantFileBytes; quota > 0 {
		// no room for a line: none runs
		if used, err := s.filesUsed(r.ctx, b.TenantID); err == nil && used >= quota {
			o.fill(used)
		}
	}
	// A batch cancelled or expired before this start runs no new line:
	// it collects the answers of the lines that ran (an expired one's
	// others are written as expired). One finalizing goes over the lines
	// after its progress (those running when it stopped) again: each one
	// ran, and those that completed are answered by the ledger.
	run.mu.Lock()
	replayOnly := b.Status == nozzle.BatchCancelling || !s.now().Before(b.ExpiresAt)
	run.mu.Unlock()
	from := o.at
	cancelled := run.cancelled // nil once seen
	expired := false
	seq := 0 // the sequence of the lines taken, in input order
	var lines sync.WaitGroup
	err = scanLinesFrom(s.filePath(b.InputFileID), s.cfg.BodyLimit, from.Offset, from.Line+1, func(n int, end int64, raw []byte) bool {
		if raw == nil {
			return true // validated: cannot happen
		}
		l, be := decodeBatchLine(raw, b.Endpoint)
		if be != nil {
			return true
		}
		if o.isFull() || r.ctx.Err() != nil {
			return false
		}
		select {
		case o.window <- struct{}{}:
		case <-r.ctx.Done():
			return false
		case <-o.full:
			return false
		}
		k := seq
		seq++
		if expired || !s.now().Before(b.ExpiresAt) {
			// OpenAI writes the lines an expired batch did not run to the
			// error file.
			expired = true
			if !replayOnly {
				o.finish(k, lineOutcome{n: n, end: end, line: expiredLine(b, l)})
				return true
			}
		}
		select {
		case <-cancelled:
			replayOnly, cancelled = true, nil
		default:
		}
		if r.ctx.Err() != nil {
			return false
		}
		// wait for a slot, watching for cancel, stop, quota and expiry
		for acquired := false; !acquired; {
			select {
			case r.slots <- struct{}{}:
				acquired = true
			case <-r.ctx.Done():
				return false
			case <-o.full:
				return false
			case <-cancelled:
				replayOnly, cancelled = true, nil
			case <-time.After(200 * time.Millisecond):
				if !s.now().Before(b.ExpiresAt) && !replayOnly {
					expired = true
					o.finish(k, lineOutcome{n: n, end: end, line: expiredLine(b, l)})
					return true
				}
			}
		}
		only, exp := replayOnly, expired
		lines.Add(1)
		go func() {
			defer lines.Done()
			res, ran, u := r.runLine(run, n, l, only)
			<-r.slots
			switch {
			case ran:
				o.finish(k, lineOutcome{n: n, end: end, line: res.line, ok: res.ok, counted: true, usage: u})
			case r.ctx.Err() != nil:
				// stopping: not written, so the next start takes it again
			case exp:
				o.finish(k, lineOutcome{n: n, end: end, line: expiredLine(b, l)})
			default:
				o.finish(k, lineOutcome{n: n, end: end}) // not run: cancelled
			}
		}()
		return true
	})
	lines.Wait()
	if err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "read batch input", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
	}
	o.mu.Lock()
	err = o.sync()
	used := o.fullUsed
	o.mu.Unlock()
	if err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "save batch progress", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		return // left open: the next start goes on from the progress saved before
	}
	if r.ctx.Err() != nil {
		return // stopping: the next start goes on after the progress saved
	}
	full := o.isFull()
	run.mu.Lock()
	cancelling := b.Status == nozzle.BatchCancelling
	run.mu.Unlock()
	if !cancelling && !expired && !full {
		r.update(run, func(b *nozzle.Batch) {
			if b.Status != nozzle.BatchFinalizing {
				b.Status, b.FinalizingAt = nozzle.BatchFinalizing, s.now()
			}
		})
	}
	outID, err1 := r.keepOutput(b, o.outPath, "output")
	errID, err2 := r.keepOutput(b, o.errPath, "error")
	if err := errors.Join(err1, err2); err != nil {
		s.log.LogAttrs(r.ctx, slog.LevelError, "store batch output", slog.String("batch_id", b.ID), slog.String("error", err.Error()))
		return // left open: the next start tries again
	}
	o.release() // counted as the files' now (the partial files are links to them)
	now := s.now()
	var status string
	var completed, failed int
	r.update(run, func(b *nozzle.Batch) {
		defer func() { status, completed, failed = b.Status, b.Completed, b.Failed }()
		b.OutputFileID, b.ErrorFileID, b.Progress = outID, errID, nil
		switch {
		case full:
			b.Status, b.FailedAt = nozzle.BatchFailed, now
			b.Errors = []nozzle.BatchError{{Code: "file_storage_full", Message: fmt.Sprintf(
				"The batch's output would take this organization's files past their storage quota of %s (%s used), so it stopped: "+
					"its output and error files hold the answers that fit; the requests it had not started did not run. Delete files it no longer needs and run the rest in a new batch.",
				formatBytes(s.cfg.TenantFileBytes), formatBytes(used))}}
		case b.Status == nozzle.BatchCancelling:
			b.Status, b.CancelledAt = nozzle.BatchCancelled, now
		case expired:
			b.Status, b.ExpiredAt = nozzle.BatchExpired, now
		default:
			b.Status, b.CompletedAt = nozzle.BatchCompleted, now
		}
	})
	r.removeParts(b)
	s.log.LogAttrs(r.ctx, slog.LevelInfo, "batch done", slog.String("batch_id", b.ID), slog.String("status", status),
		slog.Int("completed", completed), slog.Int("failed", failed))
}

// keepOutput stores the batch's partial output or error file (kind) at
// path, if it holds anything, as a file of purpose batch_output and
// returns its id. Its id is derived from the batch's, so that a batch
// finalized again after a crash replaces the file instead of adding one;
// the partial file stays (a hard link) until the batch is saved done.
func (r *batchRunner) keepOutput(b *nozzle.Batch, path, kind string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("stat batch %s file: %w", kind, err)
	}
	if st.Size() == 0 {
		return "", nil
	}
	sum := sha256.Sum256([]byte(b.ID + "/" + kind))
	id := filePrefix + strings.TrimPrefix(b.ID, batchPrefix)[:12] + hex.EncodeToString(sum[:8])
	ctx := context.Background()
	if old, err := r.s.deps.Batches.File(ctx, b.TenantID, id); err == nil && old.TenantID == b.TenantID {
		if err := r.s.deps.Batches.DeleteFile(ctx, b.TenantID, id); err != nil {
			return "", fmt.Errorf("replace batch %s file: %w", kind, err)
		}
	}
	dst := r.s.filePath(id)
	if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("replace batch %s file: %w", kind, err)
	}
	if err := os.Link(path, dst); err != nil {
		// no hard links here: moved (a crash before the batch is saved
		// runs its lines again from the first, answered by the ledger)
		if err := os.Rename(path, dst); err != nil {
			return "", fmt.Errorf("store batch %s file: %w", kind, err)
		}
	}
	syncDir(r.s.cfg.FilesDir)
	f := &nozzle.File{ID: id, TenantID: b.TenantID, Filename: b.ID + "_" + kind + ".jsonl", Purpose: nozzle.FilePurposeBatchOutput, Bytes: st.Size(), Created: r.s.now()}
	if err := r.s.deps.Batches.CreateFile(ctx, f); err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("record batch %s file: %w", kind, err)
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
