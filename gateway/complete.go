package gateway

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// HeaderIdempotencyKey makes a completion request idempotent: a retry with
// the same key (and the same tenant) is answered from the ledger.
const HeaderIdempotencyKey = "Idempotency-Key"

const idemPrefix, clientIDPrefix = "idem_", "cid_"

// idempotencyID is the ledger request id of an idempotent request: a
// digest of the tenant and the key, so tenants cannot collide.
func idempotencyID(tenantID, key string) string { return tenantDigest(idemPrefix, tenantID, key) }

// clientRequestID is the ledger (and runtime) id of a request whose client
// chose its X-Request-Id: a digest of the tenant and that id, so that one
// tenant's ids never meet another's — neither taken, nor probed, nor
// refused as already running. The client keeps seeing its own id.
func clientRequestID(tenantID, id string) string { return tenantDigest(clientIDPrefix, tenantID, id) }

func tenantDigest(prefix, tenantID, name string) string {
	h := sha256.New()
	h.Write([]byte(tenantID))
	h.Write([]byte{0})
	h.Write([]byte(name))
	var sum [sha256.Size]byte
	return prefix + hex.EncodeToString(h.Sum(sum[:0])[:20])
}

func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// choiceResult is what one choice produced.
type choiceResult struct {
	text     []byte
	logprobs []nozzle.TokenLogprob
	prompt   *nozzle.Chunk // the runtime's echo of the prompt
	open     bool          // the prompt opened a reasoning model's thoughts
	res      *nozzle.GenerateResult
	err      error
}

// completion is a completion request from admission to the end of its
// answer.
type completion struct {
	s  *Server
	st *reqState
	p  *principal
	j  *job

	reqs      []*nozzle.GenerateRequest
	meterID   string             // ledger id if the request completes
	attemptID string             // ledger id if it fails or is abandoned
	idem      bool               // an Idempotency-Key names this request
	fp        [sha256.Size]byte  // the idempotent request's fingerprint
	claimed   string             // id held in the in-flight set (an idempotent request's)
	claimedID string             // a client-chosen request id held in it
	sent      bool               // a stream has sent generated text
	seqs      int                // sequences taken from the tenant's cap
	ckpt      *streamCheckpoints // a stream's usage checkpoints (nil: none)
	ckptTaken bool               // a checkpoint was taken: the event ends it

	tokensTaken   int
	releaseBudget func()
	ctx           context.Context
	cancel        context.CancelFunc
	results       []choiceResult
}

func (s *Server) chatCompletions(c *fiber.Ctx) error { return s.complete(c, parseChat) }
func (s *Server) textCompletions(c *fiber.Ctx) error { return s.complete(c, parseCompletion) }

// responses answers POST /v1/responses (responses.go): a chat job,
// answered as a Response.
func (s *Server) responses(c *fiber.Ctx) error { return s.complete(c, parseResponses) }

// complete runs a completion request of any endpoint, parse reading its
// body into a job.
func (s *Server) complete(c *fiber.Ctx, parse func(body []byte, maxChoices int) (*job, error)) error {
	st := stateOf(c)
	p := principalFrom(c)
	body, err := s.readBody(c, int64(s.cfg.BodyLimit))
	if err != nil {
		return err
	}
	j, err := parse(body, s.cfg.MaxChoices)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	cp := &completion{s: s, st: st, p: p, j: j, releaseBudget: func() {}}
	// The ledger ids. An idempotent request is recorded under the digest of
	// its key once it completes; a failed or abandoned attempt under its own
	// request id, which leaves the key free for a retry. A completed one is
	// replayed before its model is looked up: the answer it paid for stays
	// its answer after its adapter is deleted (a retry after a lost answer
	// may well come after that).
	if key := c.Get(HeaderIdempotencyKey); key != "" {
		if !validIdempotencyKey(key) {
			return invalid(HeaderIdempotencyKey, "Invalid Idempotency-Key header: use 1 to 255 printable ASCII characters.")
		}
		cp.idem = true
		cp.fp = requestFingerprint(body)
		cp.meterID = idempotencyID(p.tenant.ID, key)
		if !s.inflight.add(cp.meterID) {
			return nozzle.Errorf(nozzle.ECONFLICT, "A request with this Idempotency-Key is already in progress.").WithReason("idempotency_key_in_use")
		}
		cp.claimed = cp.meterID
		ev, err := s.deps.Ledger.Usage(ctx, cp.meterID)
		switch {
		case err == nil:
			s.inflight.remove(cp.meterID)
			return s.replay(c, j, ev, cp.fp, body)
		case nozzle.ErrorCode(err) != nozzle.ENOTFOUND:
			s.inflight.remove(cp.meterID)
			return err
		}
	}
	if j.resp != nil {
		if err := s.admitStore(ctx, p, j); err != nil {
			cp.unclaim()
			return err
		}
		if err := s.respHistory(ctx, p, j); err != nil {
			cp.unclaim()
			return err
		}
	}
	if err := s.resolveModel(ctx, p, j); err != nil {
		cp.unclaim()
		return err
	}
	// A client-chosen request id is the tenant's own (clientRequestID) and
	// becomes a ledger id only while unused, whether or not an
	// Idempotency-Key names the request (its failed or abandoned attempts
	// are recorded under it): reusing one must not make a request free.
	rid := st.id
	if st.supplied {
		rid = clientRequestID(p.tenant.ID, st.id)
		if !s.inflight.add(rid) {
			rid = s.renewRequestID(c, st)
		} else if _, err := s.deps.Ledger.Usage(ctx, rid); err == nil {
			s.inflight.remove(rid)
			rid = s.renewRequestID(c, st)
		} else if nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
			s.inflight.remove(rid)
			cp.unclaim()
			return err
		} else {
			cp.claimedID = rid
		}
	}
	cp.attemptID = rid
	if !cp.idem {
		cp.meterID = rid
	}
	switch {
	case j.resp != nil:
		j.id = "resp_" + st.id
	case j.kind == kindChat:
		j.id = "chatcmpl-" + st.id
	default:
		j.id = "cmpl-" + st.id
	}
	j.created = time.Now().Unix()
	j.prepareStore(s.storedPartLimit())
	if err := j.prepareConversation(maxConversationInput); err != nil {
		cp.unclaim()
		return err
	}

	// Admission: rate limits, then the budget, on estimates.
	maxTokens := j.maxTokens
	if maxTokens == 0 && !j.promptOnly {
		maxTokens = s.cfg.DefaultMaxTokens
	}
	promptEst := j.promptEstimate()
	ctxLen := 4096
	if info, ok := s.router.modelInfo(); ok && info.ContextLength > 0 {
		ctxLen = info.ContextLength
		if j.maxTokens > ctxLen {
			cp.unclaim()
			return nozzle.Errorf(nozzle.ECONTEXTLENGTH, "Invalid '%s': %d is more tokens than this model's maximum context length of %d tokens.",
				j.maxTokensParam, j.maxTokens, ctxLen).WithParam(j.maxTokensParam).WithReason("context_length_exceeded")
		}
	}
	// No completion outgrows the context: the estimates stay in range
	// whatever max_tokens says.
	perChoice := min(maxTokens, ctxLen)
	if perChoice == 0 && !j.promptOnly {
		perChoice = max(16, ctxLen-promptEst/max(1, j.choices()))
	}
	completionEst := perChoice * j.choices()
	if lim := s.cfg.TenantSequences; lim >= 0 && j.choices() > lim {
		// more than the tenant may ever have at once: a retry cannot help
		cp.unclaim()
		return invalidAs("integer_above_max_value", "n", "Too many choices: this request asks for %d (prompts × n) and this organization may have at most %d sequences running or queued at once.", j.choices(), lim)
	}
	if err := s.seqs.take(p.tenant.ID, j.choices(), s.cfg.TenantSequences); err != nil {
		cp.unclaim()
		return err
	}
	cp.seqs = j.choices()
	if cp.tokensTaken, err = s.admitRate(p, promptEst+completionEst, maxTokens > 0 || j.promptOnly, func(k, v string) { c.Set(k, v) }); err != nil {
		cp.unclaim()
		return err
	}
	if cp.releaseBudget, err = s.reserveBudget(ctx, p, j.promptBound(), completionEst); err != nil {
		s.reconcileTokens(p, cp.tokensTaken, 0)
		cp.unclaim()
		return err
	}
	cp.reqs = j.requests(rid, p.tenant.ID, maxTokens)
	if st.batch {
		for _, r := range cp.reqs {
			r.Background = true
		}
	}
	cp.results = make([]choiceResult, len(cp.reqs))
	cp.ctx, cp.cancel = context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	s.genWG.Add(1)
	s.gens.Add(1)
	if j.stream {
		return cp.stream(c)
	}
	defer cp.done()
	return cp.respond(c)
}

// renewRequestID gives the request a fresh id of the gateway's (echoed
// back) in place of a client-chosen one already used, and returns it.
func (s *Server) renewRequestID(c *fiber.Ctx, st *reqState) string {
	st.id = newRequestID()
	st.supplied = false
	c.Set(HeaderRequestID, st.id)
	return st.id
}

func (cp *completion) unclaim() {
	cp.s.seqs.release(cp.p.tenant.ID, cp.seqs)
	cp.seqs = 0
	if cp.claimed != "" {
		cp.s.inflight.remove(cp.claimed)
		cp.claimed = ""
	}
	if cp.claimedID != "" {
		cp.s.inflight.remove(cp.claimedID)
		cp.claimedID = ""
	}
}

// done releases what the request held, once its usage is recorded.
func (cp *completion) done() {
	cp.cancel()
	cp.releaseBudget()
	cp.unclaim()
	cp.s.gens.Add(-1)
	cp.s.genWG.Done()
}

// resolveModel resolves the request's model to the base model or one of
// the tenant's adapters. Another tenant's adapter is "not found", exactly
// like a name that does not exist. The model's recommended sampling
// settings fill the parameters the request left out.
func (s *Server) resolveModel(ctx context.Context, p *principal, j *job) error {
	info, known := s.router.modelInfo()
	if known {
		j.applySampling(info.Sampling)
		j.fingerprint = systemFingerprint(info)
		if len(j.tools) > 0 {
			if info.ToolFormat == "" {
				if j.functions {
					return invalidAs("unsupported_value", "functions", "This model's chat template does not teach it to call functions, so 'functions' cannot be offered to it; leave them out (or set 'function_call' to \"none\").")
				}
				return invalidAs("unsupported_value", "tools", "This model's chat template does not teach it to call tools, so 'tools' cannot be offered to it; leave them out (or set 'tool_choice' to \"none\").")
			}
			j.toolFormat = info.ToolFormat
			if j.toolChoice != "" && !info.ToolChoice {
				if j.functions {
					return invalidAs("unsupported_value", "function_call", "This model's function calls cannot be forced (its tool format, %s, begins with a control token, or its runtime is of an earlier version); use 'function_call' \"auto\".", info.ToolFormat)
				}
				return invalidAs("unsupported_value", "tool_choice", "This model's tool calls cannot be forced (its tool format, %s, begins with a control token, or its runtime is of an earlier version); use 'tool_choice' \"auto\".", info.ToolFormat)
			}
		}
		j.reasoning, j.thinkTags = j.kind == kindChat && info.Reasoning, info.ReasoningTags
		if j.adjusts() {
			if !info.LogitBias {
				return invalidAs("unsupported_value", adjustParam(j), "The runtime serving this model is of an earlier version that cannot apply 'logit_bias', 'presence_penalty' or 'frequency_penalty'; try again once it is upgraded, or leave them out.")
			}
			for id := range j.logitBias {
				if info.VocabSize > 0 && id >= info.VocabSize {
					return invalidAs("invalid_value", "logit_bias", "Invalid key in 'logit_bias': %d is not a token id of this model (0 to %d).", id, info.VocabSize-1)
				}
			}
		}
		if j.format == nozzle.ResponseFormatRegex && !info.Regex {
			return invalidAs("unsupported_value", j.formatParam, "The runtime serving this model is of an earlier version that cannot constrain its output as '%s' asks; try again once it is upgraded, or leave it out.", j.formatParam)
		}
		if j.format == nozzle.ResponseFormatJSONObject && !info.JSONObject || j.format == nozzle.ResponseFormatJSONSchema && !info.JSONSchema {
			return invalidAs("unsupported_value", cmp.Or(j.formatParam, "response_format"), "The runtime serving this model is of an earlier version that cannot constrain its output as 'response_format' %q asks; try again once it is upgraded, or leave 'response_format' out.", j.format)
		}
		if len(j.templateKwargs) > 0 && !info.ChatTemplateKwargs {
			return invalidAs("unsupported_value", "chat_template_kwargs", "The runtime serving this model is of an earlier version that cannot pass 'chat_template_kwargs' to the chat template; try again once it is upgraded, or leave them out.")
		}
		if !info.Echo {
			for i := range j.choices() {
				if j.runtimeEcho(i) {
					return invalidAs("unsupported_value", "echo", "The runtime serving this model is of an earlier version that cannot echo this prompt (a prompt of token ids, or with 'logprobs'); try again once it is upgraded, or leave 'echo' out.")
				}
			}
		}
	}
	if j.model == nozzle.BaseModelAlias || (known && j.model == info.ID) {
		j.shownModel = j.model
		if known {
			j.shownModel = info.ID
		}
		return nil
	}
	if nozzle.ValidateAdapterName(j.model) != nil {
		return modelNotFound(j.model)
	}
	a, err := s.deps.Adapters.Adapter(ctx, p.tenant.ID, j.model)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return modelNotFound(j.model)
		}
		return err
	}
	if a.TenantID != p.tenant.ID { // never trust a store to filter
		return modelNotFound(j.model)
	}
	j.adapter = a
	j.shownModel = a.Name
	return nil
}

// reserveBudget reserves the estimated charge against the tenant's
// monthly budget, when it has one.
func (s *Server) reserveBudget(ctx context.Context, p *principal, promptEst, completionEst int) (func(), error) {
	if s.deps.Budget == nil || p.tenant.MonthlyBudgetUSD <= 0 {
		return func() {}, nil
	}
	price, err := s.deps.Tenants.PriceAt(ctx, p.tenant.ID, time.Now())
	if err != nil {
		return nil, err
	}
	release, err := s.deps.Budget.ReserveBudget(ctx, p.tenant.ID, price.Charge(int64(promptEst), int64(completionEst)))
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.EQUOTA {
			s.met.rejected.With("budget").Inc()
		}
		return nil, err
	}
	if release == nil {
		release = func() {}
	}
	return release, nil
}

// run generates every choice, calling emit for each chunk (under a lock
// when choices run concurrently). A choice that fails fails the request, so
// it stops the others: a prompt refused before any work (one of several
// legacy prompts too long, say) leaves the others little or no work done.
func (cp *completion) run(emit func(i int, ch nozzle.Chunk) error) {
	if len(cp.reqs) == 1 {
		r := &cp.results[0]
		r.res, r.err = cp.s.router.generate(cp.ctx, cp.reqs[0], func(ch nozzle.Chunk) error { return emit(0, ch) })
		r.err = cp.j.fromRuntime(r.err)
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range cp.reqs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := &cp.results[i]
			r.res, r.err = cp.s.router.generate(cp.ctx, cp.reqs[i], func(ch nozzle.Chunk) error {
				mu.Lock()
				defer mu.Unlock()
				return emit(i, ch)
			})
			r.err = cp.j.fromRuntime(r.err)
			if r.err != nil {
				cp.cancel()
			}
		}(i)
	}
	wg.Wait()
}

// respond answers a non-streamed request.
func (cp *completion) respond(c *fiber.Ctx) error {
	// A client that goes away stops the generation, as a stream's does:
	// it is charged for the tokens produced until then.
	stop := watchClient(c.Context().Conn(), clientCheckEvery, cp.cancel)
	cp.run(func(i int, ch nozzle.Chunk) error {
		r := &cp.results[i]
		if ch.Prompt {
			r.prompt = &ch
			return nil
		}
		r.open = r.open || len(r.text) == 0 && ch.ThoughtsOpen
		r.text = append(r.text, ch.Text...)
		if cp.j.logprobs {
			r.logprobs = append(r.logprobs, ch.Logprobs...)
		}
		return nil
	})
	stop()
	var body []byte
	if cp.failure() == nil {
		body = cp.body(make([]byte, 0, 512))
	}
	stored, err := cp.settle(body)
	if err != nil {
		return err
	}
	if stored != nil {
		cp.s.met.replays.Inc()
		c.Set("Idempotent-Replayed", "true")
		body = stored
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

// failure returns the error that fails the request, if any: the first
// choice's error, preferring a real failure over a cancellation.
func (cp *completion) failure() error {
	var first error
	for _, r := range cp.results {
		if r.err == nil {
			continue
		}
		if first == nil || nozzle.ErrorCode(first) == nozzle.ECANCELED && nozzle.ErrorCode(r.err) != nozzle.ECANCELED {
			first = r.err
		}
	}
	return first
}

// settle writes the request's one usage event, durably, and returns the
// error to answer with when the request failed. body is the complete
// non-streamed answer (nil when failed); it is stored with an idempotent
// request's event, and a stored Responses answer (storedResponse) in the
// same write. When the ledger already holds an idempotent request's
// event (a duplicate that raced this one), settle returns the stored
// answer.
//
// Which requests are recorded:
//   - completed: status ok, charged, under meterID;
//   - abandoned by the client (ECANCELED), or a stream that has sent text
//     and then ran out of time or had a choice refused: status canceled,
//     charged for the tokens produced, under attemptID — if any work was
//     done;
//   - failed in the runtime (EINTERNAL, EUNAVAILABLE, after work), or
//     failed with nothing sent (a non-streamed answer that timed out or
//     had a choice refused): status failed, not charged, under attemptID,
//     so the cost model still sees the device time;
//   - refused before any work (context length, invalid parameters, no
//     runtime available): not recorded, not charged.
//
// A stream that took usage checkpoints (streamCheckpoints) is recorded in
// any case: its event ends its last checkpoint (CheckpointID), which would
// otherwise be charged, status interrupted, when the ledger next opens —
// as it is when the gateway dies before this.
func (cp *completion) settle(body []byte) (stored []byte, err error) {
	s, p, j := cp.s, cp.p, cp.j
	ev := &nozzle.UsageEvent{
		TenantID: p.tenant.ID,
		KeyID:    p.key.ID,
		Model:    j.shownModel,
		Time:     time.Now().UTC(),
		Batch:    cp.st.batch, // a line of a batch: the batch price
	}
	if j.adapter != nil {
		ev.AdapterID, ev.AdapterName = j.adapter.ID, j.adapter.Name
	}
	work := false
	for _, r := range cp.results {
		if r.res == nil {
			continue
		}
		x := r.res
		ev.CompletionTokens += int64(x.CompletionTokens)
		ev.DeviceSeconds += x.DeviceSeconds
		ev.AdapterLoadSeconds += x.AdapterLoadSeconds
		ev.QueueSeconds = max(ev.QueueSeconds, x.QueueSeconds)
		ev.TTFTSeconds = max(ev.TTFTSeconds, x.TTFTSeconds)
		if ev.RuntimeID == "" {
			ev.RuntimeID, ev.RatePerHour = x.RuntimeID, x.RatePerHour
		}
		if x.DeviceSeconds > 0 || x.CompletionTokens > 0 {
			work = true
		}
	}
	if cp.ckptTaken {
		// The event ends the stream's checkpoint, whatever it says.
		ev.CheckpointID, work = cp.attemptID, true
	}
	ev.PromptTokens, ev.CachedPromptTokens = cp.promptUsage()
	fail := cp.failure()
	code := nozzle.ErrorCode(fail)
	timedOut := code == nozzle.ECANCELED && cp.ctx.Err() == context.DeadlineExceeded
	switch {
	case fail == nil:
		ev.Status = nozzle.UsageOK
		ev.RequestID = cp.meterID
		if cp.idem {
			ev.Response = storedResponse(cp.fp, body)
			// found by the X-Request-Id its answer went out with too, the
			// id a client-chosen one is kept under (so no later request
			// takes it)
			ev.AttemptID = clientRequestID(ev.TenantID, cp.st.id)
		}
		// A Responses request's answer, kept in the event's write, and its
		// items, appended to its conversation in the same write.
		ev.StoredResponse = cp.storedResponse(body)
		ev.ConversationAppend = cp.conversationAppend(body)
	case code == nozzle.ECANCELED && (!timedOut || cp.sent),
		cp.sent && code != nozzle.EINTERNAL && code != nozzle.EUNAVAILABLE:
		// The client went away, or a stream that has sent text ended
		// otherwise than by the server's fault: out of time (a slow reader
		// holds a stream up until it is), or a choice refused (its prompt
		// too long, say) after the others' text went out. Charged for the
		// tokens produced.
		ev.Status = nozzle.UsageCanceled
		ev.RequestID = cp.attemptID
	default:
		// The runtime's fault, or an answer of which nothing went out.
		ev.Status = nozzle.UsageFailed
		ev.RequestID = cp.attemptID
	}
	if timedOut {
		fail = nozzle.Errorf(nozzle.EUNAVAILABLE, "The request timed out.").WithReason("timeout").Wrap(fail)
	}
	// Tokens count against the key's rate limit when charged.
	charged := 0
	if ev.Status != nozzle.UsageFailed {
		charged = int(ev.PromptTokens + ev.CompletionTokens)
	}
	defer s.reconcileTokens(p, cp.tokensTaken, charged)

	if fail != nil && !work {
		return nil, fail
	}
	// Not the request's context: a client that went away is still charged.
	rctx := context.Background()
	dup, rerr := s.deps.Ledger.RecordUsage(rctx, ev)
	if rerr != nil {
		s.met.usageErrs.Inc()
		if fail != nil {
			s.log.LogAttrs(rctx, slog.LevelError, "record usage of a failed request",
				slog.String("request_id", ev.RequestID), slog.String("error", rerr.Error()))
			return nil, fail
		}
		// Unrecorded work is not delivered: the answer would be free.
		return nil, &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: errors.Join(errors.New("record usage"), rerr)}
	}
	s.met.usageRecs.With(ev.Status).Inc()
	if ev.Status != nozzle.UsageFailed {
		s.met.countTokens(j.adapter != nil, ev.PromptTokens, ev.CompletionTokens)
	}
	if fail != nil {
		return nil, fail
	}
	if dup {
		if cp.idem && len(ev.Response) > 0 {
			_, _, answer := splitStored(ev.Response)
			return answer, nil
		}
		s.log.LogAttrs(rctx, slog.LevelError, "usage event already recorded for a new request",
			slog.String("request_id", ev.RequestID))
	}
	return nil, nil
}

// promptUsage is the prompt side of the request's account, the same in the
// answer's usage and in the ledger: each prompt counted once however many
// choices it has (as OpenAI counts n), and of those the tokens the prefix
// cache held (the most any of its choices had, never more than the prompt).
func (cp *completion) promptUsage() (prompt, cached int64) {
	n := max(cp.j.n, 1)
	for g := 0; g < len(cp.results); g += n {
		var p, c int64
		for _, r := range cp.results[g:min(g+n, len(cp.results))] {
			if r.res != nil {
				p = max(p, int64(r.res.PromptTokens))
				c = max(c, int64(r.res.CachedPromptTokens))
			}
		}
		prompt += p
		cached += min(c, p)
	}
	return prompt, cached
}

// body builds the complete non-streamed answer.
func (cp *completion) body(dst []byte) []byte {
	j := cp.j
	if j.resp != nil {
		return cp.responseBody(dst)
	}
	u := cp.usage()
	if j.kind == kindChat {
		dst = appendHead(dst, j.id, "chat.completion", j.created, j.shownModel, j.fingerprint)
		dst = append(dst, `,"choices":[`...)
		for i, r := range cp.results {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"index":`...)
			dst = appendInt(dst, int64(i))
			content, calls, thought := string(r.text), []nozzle.ToolCall(nil), ""
			if j.reasoning {
				thought, content = nozzle.SplitThoughts(content, r.open, j.thinkTags)
			}
			if j.toolFormat != "" {
				content, calls = j.splitCalls(content, i)
			}
			dst = append(dst, `,"message":{"role":"assistant","content":`...)
			if content == "" && (len(calls) > 0 || thought != "") {
				dst = append(dst, "null"...)
			} else {
				dst = appendString(dst, content)
			}
			if j.reasoning {
				dst = append(dst, `,"reasoning_content":`...)
				dst = appendNullableString(dst, thought)
			}
			dst = append(dst, `,"refusal":null`...)
			switch {
			case len(calls) > 0 && j.functions:
				// the legacy answer: its one call (splitCalls)
				dst = append(dst, `,"function_call":`...)
				dst = appendFunctionCall(dst, calls[0].Function)
			case len(calls) > 0:
				dst = append(dst, `,"tool_calls":`...)
				dst = appendToolCalls(dst, calls, false)
			}
			dst = append(dst, `},"logprobs":`...)
			if j.logprobs {
				dst = appendChatLogprobs(dst, r.logprobs)
			} else {
				dst = append(dst, "null"...)
			}
			dst = append(dst, `,"finish_reason":`...)
			dst = appendString(dst, j.callsFinish(finishReason(r.res), len(calls)))
			dst = append(dst, '}')
		}
	} else {
		dst = appendHead(dst, j.id, "text_completion", j.created, j.shownModel, j.fingerprint)
		dst = append(dst, `,"choices":[`...)
		for i, r := range cp.results {
			if i > 0 {
				dst = append(dst, ',')
			}
			echo := j.echoText(i, r.prompt)
			dst = append(dst, `{"text":`...)
			dst = appendString(dst, echo+string(r.text))
			dst = append(dst, `,"index":`...)
			dst = appendInt(dst, int64(i))
			dst = append(dst, `,"logprobs":`...)
			if j.logprobs {
				completion := lpPart{lps: r.logprobs, text: r.text, offs: &textOffsets{base: utf8.RuneCountInString(echo)}}
				if r.prompt != nil {
					dst = appendTextLogprobs(dst, promptPart(r.prompt), completion)
				} else {
					dst = appendTextLogprobs(dst, completion)
				}
			} else {
				dst = append(dst, "null"...)
			}
			dst = append(dst, `,"finish_reason":`...)
			dst = appendString(dst, finishReason(r.res))
			dst = append(dst, '}')
		}
	}
	dst = append(dst, `],"usage":`...)
	dst = appendUsage(dst, u)
	return append(dst, '}')
}

// usage is the answer's token account.
func (cp *completion) usage() usage {
	var u usage
	u.prompt, u.cached = cp.promptUsage()
	for _, r := range cp.results {
		if r.res != nil {
			u.completion += int64(r.res.CompletionTokens)
			if cp.j.reasoning {
				u.reasoning += int64(min(r.res.ReasoningTokens, r.res.CompletionTokens))
			}
		}
	}
	return u
}

// callsFinish is the finish reason of a chat choice that made calls:
// "tool_calls" where it stopped of its own accord ("function_call" for
// legacy functions).
func (j *job) callsFinish(reason string, calls int) string {
	if calls > 0 && reason == nozzle.FinishStop {
		if j.functions {
			return "function_call"
		}
		return "tool_calls"
	}
	return reason
}

func finishReason(r *nozzle.GenerateResult) string {
	if r == nil || r.FinishReason == "" {
		return nozzle.FinishStop
	}
	return r.FinishReason
}

// streamEvent is a chunk of choice index, (accepted) the runtime's word
// that it accepted the choice, or (done) its end.
type streamEvent struct {
	index    int
	chunk    nozzle.Chunk
	accepted bool
	done     bool
	res      *nozzle.GenerateResult
	err      error
}

// stream answers a streamed request. Generation starts now; the status
// line waits until the runtime has accepted every prompt (awaitAccepted),
// so that an error before any output (context length, an adapter the
// runtime cannot load, no runtime) is still a proper HTTP error, never an
// event after part of the answer (an echoed prompt, another prompt's
// text) went out with a 200.
func (cp *completion) stream(c *fiber.Ctx) error {
	n := len(cp.reqs)
	events := make(chan streamEvent, 64)
	for i := range cp.reqs {
		cp.reqs[i].OnAccepted = func() {
			select {
			case events <- streamEvent{index: i, accepted: true}:
			case <-cp.ctx.Done():
			}
		}
		go func(i int) {
			res, err := cp.s.router.generate(cp.ctx, cp.reqs[i], func(ch nozzle.Chunk) error {
				select {
				case events <- streamEvent{index: i, chunk: ch}:
					return nil
				case <-cp.ctx.Done():
					return nozzle.Errorf(nozzle.ECANCELED, "The client went away.")
				}
			})
			events <- streamEvent{index: i, done: true, res: res, err: err}
		}(i)
	}
	// Until then nothing is written, so a client that leaves while the
	// request waits in the queue is seen only by looking.
	stop := watchClient(c.Context().Conn(), clientCheckEvery, cp.cancel)
	held, failed := cp.awaitAccepted(events)
	stop()
	if failed != nil {
		// Failed before any output: stop the other choices, record any
		// work, answer with the error.
		cp.cancel()
		done := 0
		record := func(ev streamEvent) {
			if ev.done {
				cp.results[ev.index].res, cp.results[ev.index].err = ev.res, ev.err
				done++
			}
		}
		for _, ev := range held {
			record(ev)
		}
		for done < n {
			record(<-events)
		}
		defer cp.done()
		_, err := cp.settle(nil)
		if err == nil {
			err = failed
		}
		return err
	}

	cp.s.detach(c, cp.st)
	cp.ckpt = cp.s.newStreamCheckpoints(cp)
	setEventStream(c)
	// The status line goes out now, not with the first event: the runtime
	// may have accepted every prompt before any of them produced text.
	c.Context().Response.ImmediateHeaderFlush = true
	conn := c.Context().Conn()
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		cp.writeStream(w, conn, events, held)
	})
	return nil
}

// setEventStream sets the headers of an answer of server-sent events: live
// streams and replays alike.
func setEventStream(c *fiber.Ctx) {
	c.Set(fiber.HeaderContentType, "text/event-stream; charset=utf-8")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
}

// awaitAccepted reads the choices' events until the runtime has accepted
// every prompt of the request: it said so (GenerateRequest.OnAccepted:
// the prompt passed its checks and its adapter loaded), or, from a runtime
// that does not say (an earlier version), one of its choices produced
// text, scored the prompt (an echo with logprobs comes once the prompt is
// computed) or ended well. An echo without logprobs proves nothing: a
// runtime may send it before it loads the adapter. The n choices of a
// prompt share its checks, so one of them stands for all. It returns the events read, to
// be sent once the stream starts, or the error of a choice that failed
// before then.
func (cp *completion) awaitAccepted(events <-chan streamEvent) (held []streamEvent, failed error) {
	per := max(cp.j.n, 1)
	accepted := make([]bool, (len(cp.reqs)+per-1)/per)
	left := len(accepted)
	for left > 0 {
		ev := <-events
		held = append(held, ev)
		if ev.done && ev.err != nil {
			return held, ev.err
		}
		if g := ev.index / per; !accepted[g] && (ev.accepted || ev.done || !ev.chunk.Prompt || len(ev.chunk.Logprobs) > 0) {
			accepted[g] = true
			left--
		}
	}
	return held, nil
}

// writeStream writes the server-sent events of a stream. It runs after the
// handler has returned, on fasthttp's stream goroutine, and touches no
// fiber context.
func (cp *completion) writeStream(w *bufio.Writer, conn net.Conn, events chan streamEvent, held []streamEvent) {
	s, j, st := cp.s, cp.j, cp.st
	defer func() {
		if r := recover(); r != nil {
			s.log.LogAttrs(context.Background(), slog.LevelError, "panic in stream", slog.String("request_id", st.id), slog.Any("panic", r))
		}
		// (A checkpoint this stream's event did not end is charged when the
		// ledger is next opened.)
		cp.ckpt.stop()
		cp.done()
		st.status = 200
		s.finish(st)
	}()
	gone := false
	buf := make([]byte, 0, 512)
	send := func(b []byte) {
		if gone {
			return
		}
		if conn != nil {
			_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		}
		if _, err := w.Write(b); err == nil {
			err = w.Flush()
			if err == nil {
				return
			}
		}
		gone = true // the client went away: stop generating, keep metering
		cp.cancel()
	}

	n := len(cp.reqs)
	var rs *respStream // a Responses stream's events
	if j.resp != nil {
		rs = &respStream{j: j}
		buf = rs.start(buf[:0])
		send(buf)
	}
	// First chunk of each choice: the role (chat) or the echoed prompt
	// (the runtime's, when it scores or decodes the prompt).
	for i := 0; i < n && rs == nil; i++ {
		if j.kind == kindChat {
			buf = cp.chunk(buf[:0], i, "", nil, true, "")
			send(buf)
		} else if echo := j.echoText(i, nil); echo != "" && !j.runtimeEcho(i) {
			buf = cp.chunk(buf[:0], i, echo, nil, false, "")
			send(buf)
		}
	}
	firstToken := true
	var thoughts []nozzle.ThoughtSplit // per choice, for a reasoning model
	if j.reasoning {
		thoughts = make([]nozzle.ThoughtSplit, n)
		for i := range thoughts {
			thoughts[i] = nozzle.NewThoughtSplit(false, j.thinkTags)
		}
	}
	var tools []toolStream // per choice, when the model may call tools
	if j.toolFormat != "" {
		tools = make([]toolStream, n)
		for i := range tools {
			tools[i].format = j.toolFormat
		}
	}
	offs := make([]textOffsets, n)
	for i := range offs {
		offs[i].base = utf8.RuneCountInString(j.echoText(i, nil))
	}
	handle := func(ev streamEvent) bool {
		if ev.accepted {
			return false
		}
		r := &cp.results[ev.index]
		if ev.done {
			r.res, r.err = ev.res, ev.err
			if ev.err != nil {
				cp.cancel() // a failed choice fails the request: stop the others
			}
			return true
		}
		if ev.chunk.Prompt {
			r.prompt = &ev.chunk
			echo := j.echoText(ev.index, r.prompt)
			offs[ev.index].base = utf8.RuneCountInString(echo)
			buf = cp.appendChunk(buf[:0], ev.index, "", echo, nil, false, "", promptPart(r.prompt))
			send(buf)
			return false
		}
		cp.sent = true
		if firstToken {
			firstToken = false
			s.met.ttft.Observe(time.Since(st.start).Seconds())
		}
		ch := ev.chunk
		thought := ""
		if thoughts != nil {
			if len(r.text) == 0 && ch.ThoughtsOpen {
				r.open = true
				thoughts[ev.index] = nozzle.NewThoughtSplit(true, j.thinkTags)
			}
			thought, ch.Text = thoughts[ev.index].Add(ch.Text)
		}
		r.text = append(r.text, ev.chunk.Text...)
		if j.logprobs {
			r.logprobs = append(r.logprobs, ev.chunk.Logprobs...)
		}
		if tools != nil {
			ch.Text = tools[ev.index].add(ch.Text)
		}
		if (tools != nil || thoughts != nil) && ch.Text == "" && thought == "" && (!j.logprobs || len(ch.Logprobs) == 0) {
			return false // held: it may be a tool call, or a tag
		}
		if rs != nil {
			if buf = rs.add(buf[:0], thought, ch.Text); len(buf) > 0 {
				send(buf)
			}
			if !gone && cp.ckpt != nil {
				cp.ckpt.advance(ev.index, ch.Progress)
			}
			return false
		}
		buf = cp.appendChunk(buf[:0], ev.index, thought, ch.Text, ch.Logprobs, false, "", lpPart{lps: ch.Logprobs, text: r.text, offs: &offs[ev.index]})
		send(buf)
		if !gone && cp.ckpt != nil {
			cp.ckpt.advance(ev.index, ch.Progress)
		}
		return false
	}
	left := n
	for _, ev := range held {
		if handle(ev) {
			left--
		}
	}
	for left > 0 {
		if handle(<-events) {
			left--
		}
	}

	var body []byte
	if (cp.idem || j.resp != nil && (j.resp.store || j.resp.conversation != "")) && cp.failure() == nil {
		body = cp.body(make([]byte, 0, 512))
	}
	cp.ckptTaken = cp.ckpt.stop()
	stored, err := cp.settle(body)
	if gone {
		return
	}
	if err != nil {
		e := toAppError(err)
		kind := errorKinds[e.Code]
		msg := e.Message
		if e.Code == nozzle.EINTERNAL || kind.typ == "" {
			msg, kind = "Internal error.", errorKinds[nozzle.EINTERNAL]
			s.log.LogAttrs(context.Background(), slog.LevelError, "internal error in stream",
				slog.String("request_id", st.id), slog.String("error", err.Error()))
		}
		reason := e.Reason
		if reason == "" {
			reason = defaultReasons[e.Code]
		}
		if rs != nil {
			buf = rs.fail(buf[:0], msg, reason, e.Param)
		} else {
			buf = append(buf[:0], "data: "...)
			buf = appendErrorBody(buf, msg, kind.typ, e.Param, reason)
			buf = append(buf, "\n\n"...)
		}
		send(buf)
		return
	}
	if stored != nil {
		// A concurrent duplicate completed first: its answer is the one
		// recorded, so this stream ends without a second charge.
		s.met.replays.Inc()
	}
	buf = buf[:0]
	u := cp.usage()
	if rs != nil {
		// What was held: the end of thoughts, the answer's end, the calls.
		thought, answer := "", ""
		if thoughts != nil {
			thought, answer = thoughts[0].End()
		}
		var calls []nozzle.ToolCall
		if tools != nil {
			if answer != "" {
				answer = tools[0].add(answer)
			}
			var held string
			held, calls = j.splitCalls(tools[0].rest(), 0)
			answer += held
		}
		buf = rs.add(buf, thought, answer)
		buf = rs.finish(buf, calls, finishReason(cp.results[0].res) == nozzle.FinishLength, u)
		send(buf)
		return
	}
	for i, r := range cp.results {
		answer := ""
		if thoughts != nil {
			// What was held: the end of thoughts that never closed, or
			// the beginning of an answer.
			var thought string
			if thought, answer = thoughts[i].End(); thought != "" {
				buf = cp.appendChunk(buf, i, thought, "", nil, false, "", lpPart{})
			}
		}
		calls := 0
		if tools != nil {
			if answer != "" {
				answer = tools[i].add(answer)
			}
			if answer != "" {
				buf = cp.chunk(buf, i, answer, nil, false, "")
			}
			// What was held: the calls, or text after all.
			held, tc := j.splitCalls(tools[i].rest(), i)
			if held != "" {
				buf = cp.chunk(buf, i, held, nil, false, "")
			}
			switch calls = len(tc); {
			case calls > 0 && j.functions:
				buf = cp.functionCallChunks(buf, i, tc[0].Function) // the legacy answer's one call
			case calls > 0:
				buf = cp.toolCallsChunk(buf, i, tc)
			}
		} else if answer != "" {
			buf = cp.chunk(buf, i, answer, nil, false, "")
		}
		buf = cp.chunk(buf, i, "", nil, false, j.callsFinish(finishReason(r.res), calls))
	}
	if j.includeUsage {
		buf = cp.usageChunk(buf, u)
	}
	buf = append(buf, "data: [DONE]\n\n"...)
	send(buf)
}

// chunk appends one SSE event with one choice's delta.
func (cp *completion) chunk(dst []byte, i int, text string, lps []nozzle.TokenLogprob, role bool, finish string) []byte {
	return cp.appendChunk(dst, i, "", text, lps, role, finish, lpPart{lps: lps})
}

// appendChunk appends one SSE event: a chat choice's delta (thoughts
// and text, or the role, or the finish) with the logprobs lps, or a
// legacy choice's text with the logprobs of part (its text: the choice's
// completion text up to the piece's end, offs its text offsets).
func (cp *completion) appendChunk(dst []byte, i int, thought, text string, lps []nozzle.TokenLogprob, role bool, finish string,
	part lpPart) []byte {
	j := cp.j
	dst = append(dst, "data: "...)
	if j.kind == kindChat {
		dst = appendHead(dst, j.id, "chat.completion.chunk", j.created, j.shownModel, j.fingerprint)
		dst = append(dst, `,"choices":[{"index":`...)
		dst = appendInt(dst, int64(i))
		switch {
		case role:
			dst = append(dst, `,"delta":{"role":"assistant","content":"","refusal":null}`...)
		case finish != "":
			dst = append(dst, `,"delta":{}`...)
		case thought != "":
			dst = append(dst, `,"delta":{"reasoning_content":`...)
			dst = appendString(dst, thought)
			if text != "" {
				dst = append(dst, `,"content":`...)
				dst = appendString(dst, text)
			}
			dst = append(dst, '}')
		default:
			dst = append(dst, `,"delta":{"content":`...)
			dst = appendString(dst, text)
			dst = append(dst, '}')
		}
		dst = append(dst, `,"logprobs":`...)
		if j.logprobs && len(lps) > 0 {
			dst = appendChatLogprobs(dst, lps)
		} else {
			dst = append(dst, "null"...)
		}
	} else {
		dst = appendHead(dst, j.id, "text_completion", j.created, j.shownModel, j.fingerprint)
		dst = append(dst, `,"choices":[{"text":`...)
		dst = appendString(dst, text)
		dst = append(dst, `,"index":`...)
		dst = appendInt(dst, int64(i))
		dst = append(dst, `,"logprobs":`...)
		if j.logprobs && len(part.lps) > 0 {
			dst = appendTextLogprobs(dst, part)
		} else {
			dst = append(dst, "null"...)
		}
	}
	dst = append(dst, `,"finish_reason":`...)
	dst = appendNullableString(dst, finish)
	dst = append(dst, "}]"...)
	if j.includeUsage {
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, "}\n\n"...)
}

// toolCallsChunk appends the event of a chat choice's tool calls.
func (cp *completion) toolCallsChunk(dst []byte, i int, calls []nozzle.ToolCall) []byte {
	j := cp.j
	dst = append(dst, "data: "...)
	dst = appendHead(dst, j.id, "chat.completion.chunk", j.created, j.shownModel, j.fingerprint)
	dst = append(dst, `,"choices":[{"index":`...)
	dst = appendInt(dst, int64(i))
	dst = append(dst, `,"delta":{"tool_calls":`...)
	dst = appendToolCalls(dst, calls, true)
	dst = append(dst, `},"logprobs":null,"finish_reason":null}]`...)
	if j.includeUsage {
		dst = append(dst, `,"usage":null`...)
	}
	return append(dst, "}\n\n"...)
}

// usageChunk appends the last event of a stream with include_usage: no
// choices, the usage.
func (cp *completion) usageChunk(dst []byte, u usage) []byte {
	j := cp.j
	dst = append(dst, "data: "...)
	obj := "chat.completion.chunk"
	if j.kind == kindText {
		obj = "text_completion"
	}
	dst = appendHead(dst, j.id, obj, j.created, j.shownModel, j.fingerprint)
	dst = append(dst, `,"choices":[],"usage":`...)
	dst = appendUsage(dst, u)
	return append(dst, "}\n\n"...)
}
