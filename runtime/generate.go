package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// Generate runs one completion: it tokenizes the request (the chat
// template for messages), checks it against the context length and the
// KV cache before any work, queues it, and streams its text to emit as
// the engine samples tokens. See nozzle.Generator for the contract.
func (r *Runtime) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	return r.generate(ctx, req, nil, func(c nozzle.Chunk, _ int) error { return emit(c) })
}

// generate is Generate with two more things for the remote server:
// started is called, when not nil, once the request passed every check and
// is about to be queued, with its prompt tokens; emit also gets the number
// of completion tokens produced so far.
func (r *Runtime) generate(ctx context.Context, req *nozzle.GenerateRequest, started func(promptTokens int), emit func(nozzle.Chunk, int) error) (*nozzle.GenerateResult, error) {
	res := &nozzle.GenerateResult{RuntimeID: r.opts.RuntimeID, RatePerHour: r.opts.RatePerHour}
	if err := r.enter(); err != nil {
		return res, err
	}
	defer r.inflight.Done()

	q, err := r.prepare(req)
	if q != nil {
		res.PromptTokens = q.nPrompt
	}
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
	}
	if req.PromptOnly && (!q.score || q.nPrompt < 2) {
		// Nothing to compute: the prompt's text, its first token (no
		// logprob) at most.
		if started != nil {
			started(q.nPrompt)
		}
		if req.OnAccepted != nil {
			req.OnAccepted()
		}
		res.FinishReason = nozzle.FinishLength
		if err := emit(r.promptChunk(q.tokens, nil, q.score, req.Prompt), 0); err != nil {
			res.FinishReason = ""
			return res, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
		}
		return res, nil
	}
	if q.sha != "" {
		r.countLookup(q.sha)
		q.host = r.cache.prefetch(q.sha)
		q.waitsHost = true
		q.hostWaited = !q.host.loaded()
	}
	if started != nil {
		started(q.nPrompt)
	}
	q.arrived = r.clock()
	// The prompt, read here while the engine goroutine appends to tokens;
	// the adapter's host entry, read here while the engine goroutine may
	// replace it.
	prompt := q.tokens[:q.nPrompt:q.nPrompt]
	host := q.host
	r.sched.submit(q)
	return r.stream(ctx, q, req, prompt, host, res, emit)
}

func (r *Runtime) countLookup(sha string) {
	switch r.cache.tier(sha) {
	case nozzle.TierDevice:
		r.m.adapterHits.With(string(nozzle.TierDevice)).Inc()
	case nozzle.TierHost:
		r.m.adapterMisses.With(string(nozzle.TierDevice)).Inc()
		r.m.adapterHits.With(string(nozzle.TierHost)).Inc()
	default:
		r.m.adapterMisses.With(string(nozzle.TierDevice)).Inc()
		r.m.adapterMisses.With(string(nozzle.TierHost)).Inc()
	}
}

// prepare validates req and turns it into a sequence. Every error it
// returns comes before any work.
func (r *Runtime) prepare(req *nozzle.GenerateRequest) (*sequence, error) {
	if err := r.validate(req); err != nil {
		return nil, err
	}
	prompt, param, open, err := r.promptTokens(req)
	if err != nil {
		return nil, err
	}
	q := &sequence{
		id:          r.nextID.Add(1),
		tenantID:    req.TenantID,
		background:  req.Background,
		nPrompt:     len(prompt),
		slot:        -1,
		temperature: float32(req.Temperature),
		topP:        1,
		// A top_k past the vocabulary filters nothing.
		topK: int32(min(req.TopK, r.info.VocabSize)),
		out:  newMailbox(),
		bias: newSeqBias(req),
	}
	if q.gram, err = r.newSeqGrammar(req, r.info.Reasoning && req.Messages != nil && open); err != nil {
		return nil, err
	}
	if q.gram != nil {
		kind := req.ResponseFormat
		switch {
		case req.ToolChoice != "":
			kind = "tool_call"
		case kind == "":
			kind = "strict_tool_calls" // tool_choice auto, a strict function among the tools
		}
		r.m.constrained.With(kind).Inc()
	}
	if req.TopP > 0 && req.TopP < 1 {
		// A mass too small for float32 still keeps the likeliest token
		// (the smallest normal float32: no denormal reaches the engine).
		q.topP = max(float32(req.TopP), 0x1p-126)
	}
	if req.Seed != nil {
		q.seed = *req.Seed
	} else {
		q.seed = randomSeed()
	}
	if req.Logprobs || req.TopLogprobs > 0 {
		q.nTop = req.TopLogprobs
		q.score, q.scored = req.Echo, 1
	}
	q.promptOnly = req.PromptOnly
	q.reasoning, q.thoughtsOpen = r.info.Reasoning && req.Messages != nil, open
	q.call = r.newCallEnd(req, q.reasoning, open)
	if req.Adapter != nil {
		q.sha = req.Adapter.SHA256
	}
	// The prefix cache is the tenant's own: shared between tenants, how
	// many prompt tokens it held (cached_tokens, or the time to the first
	// token) would tell one tenant what another's prompts begin with.
	q.space = req.TenantID + "\x00" + q.sha

	n := r.info.ContextLength
	what := "in the messages"
	if param == "prompt" {
		what = "in your prompt"
	}
	if req.MaxTokens > 0 && req.MaxTokens > n-len(prompt) {
		return q, contextError(n, len(prompt), req.MaxTokens, what, param)
	}
	if len(prompt) >= n {
		return q, contextError(n, len(prompt), 1, what, param)
	}
	q.maxTokens = req.MaxTokens
	// What one request can hold in the KV cache.
	poolTokens := r.sched.pool.n * r.sched.pool.size
	if q.maxTokens == 0 {
		q.maxTokens = min(n, poolTokens) - len(prompt)
	}
	if len(prompt)+max(q.maxTokens, 1) > poolTokens {
		return q, nozzle.Errorf(nozzle.ECONTEXTLENGTH,
			"This runtime can hold at most %d tokens for one request. However, you requested %d tokens (%d %s, %d in the completion). Please reduce the length of the %s or completion.",
			poolTokens, len(prompt)+max(q.maxTokens, 1), len(prompt), what, max(q.maxTokens, 1), paramNoun(param)).
			WithParam(param).WithReason("context_length_exceeded")
	}
	q.tokens = make([]int32, len(prompt), len(prompt)+min(q.maxTokens, 256))
	for i, id := range prompt {
		q.tokens[i] = int32(id)
	}
	return q, nil
}

func contextError(n, prompt, completion int, what, param string) error {
	total := prompt + completion
	if total < completion { // overflowed: the completion is absurd anyway
		total = math.MaxInt
	}
	return nozzle.Errorf(nozzle.ECONTEXTLENGTH,
		"This model's maximum context length is %d tokens. However, you requested %d tokens (%d %s, %d in the completion). Please reduce the length of the %s or completion.",
		n, total, prompt, what, completion, paramNoun(param)).
		WithParam(param).WithReason("context_length_exceeded")
}

func paramNoun(param string) string {
	if param == "messages" {
		return "messages"
	}
	return "prompt"
}

func (r *Runtime) validate(req *nozzle.GenerateRequest) error {
	given := 0
	if req.Messages != nil {
		given++
	}
	if req.Prompt != "" {
		given++
	}
	if req.PromptTokens != nil {
		given++
	}
	if given > 1 {
		return nozzle.Errorf(nozzle.EINVALID, "Give exactly one of messages, prompt or prompt tokens.").WithParam("prompt")
	}
	switch {
	case !finiteIn(req.Temperature, 0, 2):
		return nozzle.Errorf(nozzle.EINVALID, "temperature must be between 0 and 2.").WithParam("temperature")
	case !finiteIn(req.TopP, 0, 1):
		return nozzle.Errorf(nozzle.EINVALID, "top_p must be between 0 and 1.").WithParam("top_p")
	case req.TopK < 0:
		return nozzle.Errorf(nozzle.EINVALID, "top_k must not be negative.").WithParam("top_k")
	case req.MaxTokens < 0:
		return nozzle.Errorf(nozzle.EINVALID, "max_tokens must not be negative.").WithParam("max_tokens")
	case req.PromptOnly && (!req.Echo || req.MaxTokens != 0):
		return nozzle.Errorf(nozzle.EINVALID, "Generating nothing (max_tokens 0) needs echo.").WithParam("max_tokens")
	case req.TopLogprobs < 0 || req.TopLogprobs > 20:
		return nozzle.Errorf(nozzle.EINVALID, "top_logprobs must be between 0 and 20.").WithParam("top_logprobs")
	case len(req.Stop) > 16:
		return nozzle.Errorf(nozzle.EINVALID, "At most 16 stop sequences are allowed.").WithParam("stop")
	}
	for _, s := range req.Stop {
		if s == "" {
			return nozzle.Errorf(nozzle.EINVALID, "Stop sequences must not be empty.").WithParam("stop")
		}
	}
	if err := checkTemplateKwargs(req); err != nil {
		return err
	}
	if err := checkBias(req, r.info.VocabSize); err != nil {
		return err
	}
	if a := req.Adapter; a != nil {
		if !isSHA256(a.SHA256) {
			return nozzle.Errorf(nozzle.EINVALID, "The adapter has no valid content address.").WithParam("model")
		}
		if a.Rank > r.opts.MaxRank {
			return nozzle.Errorf(nozzle.EINVALID, "Adapter %q has rank %d; this runtime serves ranks up to %d.", a.Name, a.Rank, r.opts.MaxRank).WithParam("model")
		}
	}
	return nil
}

// checkTemplateKwargs checks a request's chat template variables: a JSON
// object, with messages, whose names are none the renderer sets itself.
func checkTemplateKwargs(req *nozzle.GenerateRequest) error {
	kw := bytes.TrimSpace(req.ChatTemplateKwargs)
	if len(kw) == 0 || string(kw) == "null" {
		return nil
	}
	if req.Messages == nil {
		return nozzle.Errorf(nozzle.EINVALID, "chat_template_kwargs are variables of the chat template: they go with messages.").WithParam("chat_template_kwargs")
	}
	var members map[string]json.RawMessage
	if kw[0] != '{' || json.Unmarshal(kw, &members) != nil {
		return nozzle.Errorf(nozzle.EINVALID, "chat_template_kwargs must be a JSON object.").WithParam("chat_template_kwargs")
	}
	for k := range members {
		if tokenizer.ReservedVar(k) {
			return nozzle.Errorf(nozzle.EINVALID, "chat_template_kwargs must not set %q: the server sets it.", k).WithParam("chat_template_kwargs")
		}
	}
	return nil
}

// promptTokens tokenizes the request as Hugging Face does: a chat is
// rendered with the chat template (generation prompt added) and encoded
// without adding special tokens again; a text prompt is encoded with them
// (BOS); token ids are used as given. open says a reasoning model's chat
// prompt opened its thoughts.
func (r *Runtime) promptTokens(req *nozzle.GenerateRequest) (ids []int, param string, open bool, err error) {
	switch {
	case req.Messages != nil:
		if len(req.Messages) == 0 {
			return nil, "messages", false, nozzle.Errorf(nozzle.EINVALID, "messages must not be empty.").WithParam("messages")
		}
		var kwargs json.RawMessage
		if kw := bytes.TrimSpace(req.ChatTemplateKwargs); len(kw) > 0 && string(kw) != "null" {
			kwargs = kw
		}
		text, err := r.codec.ChatPrompt(req.Messages, req.Tools, kwargs)
		if err != nil {
			if e := nozzle.AsError(err); e != nil {
				return nil, "messages", false, err
			}
			return nil, "messages", false, nozzle.Errorf(nozzle.EINVALID, "The messages cannot be rendered with the model's chat template: %s.", strings.TrimSuffix(err.Error(), ".")).WithParam("messages").Wrap(err)
		}
		ids, err := r.codec.Encode(text, false)
		if err != nil {
			if e := nozzle.AsError(err); e != nil {
				return nil, "messages", false, e.WithParam("messages")
			}
			return nil, "messages", false, nozzle.Errorf(nozzle.EINVALID, "The messages cannot be tokenized.").WithParam("messages").Wrap(err)
		}
		if len(ids) == 0 {
			return nil, "messages", false, nozzle.Errorf(nozzle.EINVALID, "The messages are empty.").WithParam("messages")
		}
		return ids, "messages", r.info.Reasoning && r.info.ReasoningTags.OpenedBy(text), nil
	case req.PromptTokens != nil:
		if len(req.PromptTokens) == 0 {
			return nil, "prompt", false, nozzle.Errorf(nozzle.EINVALID, "The prompt is empty.").WithParam("prompt")
		}
		for _, id := range req.PromptTokens {
			if id < 0 || id >= r.info.VocabSize {
				return nil, "prompt", false, nozzle.Errorf(nozzle.EINVALID, "Invalid 'prompt': token id %d is out of range: the vocabulary has %d tokens.", id, r.info.VocabSize).
					WithParam("prompt").WithReason("invalid_value")
			}
		}
		return req.PromptTokens, "prompt", false, nil
	default:
		ids, err := r.codec.Encode(req.Prompt, true)
		if err != nil {
			if e := nozzle.AsError(err); e != nil {
				return nil, "prompt", false, e.WithParam("prompt")
			}
			return nil, "prompt", false, nozzle.Errorf(nozzle.EINVALID, "The prompt cannot be tokenized.").WithParam("prompt").Wrap(err)
		}
		if len(ids) == 0 {
			return nil, "prompt", false, nozzle.Errorf(nozzle.EINVALID, "The prompt is empty.").WithParam("prompt")
		}
		return ids, "prompt", false, nil
	}
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// stream follows q's events: it turns tokens into text, holds back text
// that could still start a stop sequence, emits complete UTF-8 chunks, and
// returns q's account once the engine goroutine has freed everything.
//
// It tells req.OnAccepted once q can no longer be refused: at once for the
// base model or an adapter in host memory, else once its adapter loaded
// into host memory (a load that fails finishes q with the refusal, and
// nothing is told). The engine waits for that load before q's first
// token, so the call comes before any completion text.
func (r *Runtime) stream(ctx context.Context, q *sequence, req *nozzle.GenerateRequest, prompt []int32, host *hostEntry, res *nozzle.GenerateResult, emit func(nozzle.Chunk, int) error) (*nozzle.GenerateResult, error) {
	ts := &textStream{dec: r.codec.NewStreamDecoder(r.keptTokens(req, q.reasoning)), stops: req.Stop, logprobs: req.Logprobs || req.TopLogprobs > 0,
		call: r.firstCall(req, q.reasoning, q.thoughtsOpen)}
	if q.reasoning {
		ts.thoughts, ts.open = nozzle.NewThoughtCounter(q.thoughtsOpen, r.info.ReasoningTags), q.thoughtsOpen
	}
	var (
		stopped   bool  // no more text goes out
		stopAt    = -1  // completion tokens when a stop sequence matched
		cancelErr error // why the request ended early
		consumed  int
		evs       []seqEvent
		echoed    = !req.Echo
		scores    []nozzle.TokenLogprob // the prompt's, as they come
		// The account so far, told with each chunk.
		prog = nozzle.Progress{PromptTokens: q.nPrompt, RuntimeID: res.RuntimeID, RatePerHour: res.RatePerHour}
	)
	// hostReady, while not nil, is the adapter load that q's acceptance
	// waits for.
	var hostReady <-chan struct{}
	loaded := func() {
		hostReady = nil
		if host.err == nil && !stopped {
			req.OnAccepted()
		}
	}
	if req.OnAccepted != nil {
		if host == nil || host.loaded() {
			req.OnAccepted()
		} else {
			hostReady = host.ready
		}
	}
	// echo emits the prompt first, once its scores are in when asked for.
	echo := func() error {
		echoed = true
		return emit(r.promptChunk(prompt, scores, q.score, req.Prompt), 0)
	}
	if !echoed && !q.score {
		if err := echo(); err != nil {
			stopped = true
			cancelErr = nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
			r.sched.cancel(q, cancelClient)
		}
	}
	done := ctx.Done()
	for {
		select {
		case <-q.out.signal:
		case <-hostReady:
			loaded()
		case <-done:
			done = nil
			if !stopped {
				stopped = true
				cancelErr = nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(ctx.Err())
				r.sched.cancel(q, cancelClient)
			}
		}
		evs = q.out.take(evs)
		if hostReady != nil && len(evs) > 0 {
			// The engine posts a token only after the load ended.
			select {
			case <-hostReady:
				loaded()
			default:
			}
		}
		for i := range evs {
			ev := &evs[i]
			if ev.prompt {
				scores = append(scores, tokenLogprob(r.codec, ev))
				continue
			}
			if !echoed && !stopped && (!ev.final || ev.err == nil) {
				if err := echo(); err != nil {
					stopped = true
					cancelErr = nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
					r.sched.cancel(q, cancelClient)
				}
			}
			if ev.final {
				return r.settle(ts, ev, res, stopAt, cancelErr, prog, emit)
			}
			if stopped {
				continue
			}
			consumed++
			prog.CompletionTokens, prog.DeviceSeconds, prog.CachedPromptTokens = consumed, ev.dev, ev.cached
			if ev.eos {
				continue
			}
			chunk, matched := ts.add(r.codec, ev)
			if chunk.Text != "" || len(chunk.Logprobs) > 0 {
				ts.mark(&chunk)
				chunk.Progress = prog
				err := emit(chunk, consumed)
				if err == nil && ctx.Err() != nil {
					err = ctx.Err()
				}
				if err != nil {
					stopped = true
					cancelErr = nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
					r.sched.cancel(q, cancelClient)
					continue
				}
			}
			if matched {
				stopped = true
				stopAt = consumed
				r.sched.cancel(q, cancelStop)
			}
		}
	}
}

// settle turns the final event into the request's result.
func (r *Runtime) settle(ts *textStream, ev *seqEvent, res *nozzle.GenerateResult, stopAt int, cancelErr error, prog nozzle.Progress, emit func(nozzle.Chunk, int) error) (*nozzle.GenerateResult, error) {
	acct, err := r.settleText(ts, ev, res, stopAt, cancelErr, prog, emit)
	if ts.thoughts != nil {
		acct.ReasoningTokens = min(ts.thoughts.Tokens(), acct.CompletionTokens)
	}
	return acct, err
}

func (r *Runtime) settleText(ts *textStream, ev *seqEvent, res *nozzle.GenerateResult, stopAt int, cancelErr error, prog nozzle.Progress, emit func(nozzle.Chunk, int) error) (*nozzle.GenerateResult, error) {
	acct := ev.res
	acct.RuntimeID, acct.RatePerHour = res.RuntimeID, res.RatePerHour
	switch {
	case cancelErr != nil:
		acct.FinishReason = ""
		return &acct, cancelErr
	case stopAt >= 0:
		acct.FinishReason = nozzle.FinishStop
		acct.CompletionTokens = stopAt
		return &acct, nil
	case ev.err != nil:
		return &acct, ev.err
	}
	chunk, matched := ts.flush(r.codec)
	if matched {
		acct.FinishReason = nozzle.FinishStop
	}
	if chunk.Text != "" || len(chunk.Logprobs) > 0 {
		ts.mark(&chunk)
		chunk.Progress = prog
		if err := emit(chunk, prog.CompletionTokens); err != nil {
			acct.FinishReason = ""
			return &acct, nozzle.Errorf(nozzle.ECANCELED, "The request was canceled.").Wrap(err)
		}
	}
	return &acct, nil
}

// textStream turns sampled tokens into chunks of text, holding back text
// that could be the start of a stop sequence, and cutting it after the
// first tool call where the request allows one.
type textStream struct {
	dec      streamDecoder
	stops    []string
	logprobs bool
	// call finds the end of the first tool call (GenerateRequest.OneCall;
	// nil for none): once found, its offset in the whole completion text
	// (call.End), where the text ends as at a stop sequence
	call *nozzle.FirstCall
	held string // produced, not yet emitted
	base int    // offset of held in the whole completion text
	lps  []heldLogprob
	done bool
	// A reasoning model's chat completion: its thoughts' tokens, and
	// whether its prompt opened them (told with the first chunk, marked).
	thoughts     *nozzle.ThoughtCounter
	open, marked bool
}

// mark sets ThoughtsOpen on the first chunk of a completion whose prompt
// opened the thoughts.
func (t *textStream) mark(c *nozzle.Chunk) {
	if t.open && !t.marked {
		c.ThoughtsOpen, t.marked = true, true
	}
}

type heldLogprob struct {
	lp         nozzle.TokenLogprob
	start, end int // the token's text in the whole completion text
}

func (t *textStream) add(c codec, ev *seqEvent) (nozzle.Chunk, bool) {
	text := t.dec.Add(int(ev.token))
	if t.thoughts != nil {
		t.thoughts.Add(text)
	}
	start := t.base + len(t.held)
	t.held += text
	t.findCall(text)
	if t.logprobs {
		lp := tokenLogprob(c, ev)
		lp.Offset = start
		t.lps = append(t.lps, heldLogprob{lp: lp, start: start, end: start + len(text)})
	}
	return t.cut(false)
}

func (t *textStream) flush(c codec) (nozzle.Chunk, bool) {
	text := t.dec.Flush()
	t.held += text
	t.findCall(text)
	return t.cut(true)
}

// findCall reads the next text for the end of the first tool call.
func (t *textStream) findCall(text string) {
	if t.call.End() < 0 {
		t.call.Add(text)
	}
}

// cut emits what can go out: everything before a matched stop sequence
// or up to the end of the first tool call (and reports the match), or
// everything except a tail that could still grow into a stop sequence;
// at the end, everything.
func (t *textStream) cut(final bool) (nozzle.Chunk, bool) {
	if t.done {
		return nozzle.Chunk{}, false
	}
	m := firstStop(t.held, t.stops)
	if end := t.call.End(); end >= 0 && (m < 0 || end-t.base < m) {
		m = end - t.base
	}
	if m >= 0 {
		t.done = true
		end := t.base + m
		var lps []nozzle.TokenLogprob
		for _, h := range t.lps {
			if h.start < end || h.start == h.end && h.start <= end {
				lps = append(lps, h.lp)
			}
		}
		t.lps = nil
		return nozzle.Chunk{Text: t.held[:m], Logprobs: lps}, true
	}
	safe := len(t.held)
	if !final {
		safe -= stopPrefixTail(t.held, t.stops)
		if t.logprobs {
			// Cut at the end of a token, so that each chunk carries the
			// logprobs of exactly the tokens whose text it holds.
			b := t.base
			for _, h := range t.lps {
				if h.end > t.base+safe {
					break
				}
				b = h.end
			}
			safe = b - t.base
		}
	}
	end := t.base + safe
	var lps []nozzle.TokenLogprob
	k := 0
	for _, h := range t.lps {
		if h.end <= end {
			lps = append(lps, h.lp)
			k++
		} else {
			break
		}
	}
	t.lps = t.lps[k:]
	chunk := nozzle.Chunk{Text: t.held[:safe], Logprobs: lps}
	t.held = t.held[safe:]
	t.base = end
	return chunk, false
}

// firstStop returns the index of the earliest stop sequence in s, or -1.
func firstStop(s string, stops []string) int {
	best := -1
	for _, st := range stops {
		if i := strings.Index(s, st); i >= 0 && (best < 0 || i < best) {
			best = i
		}
	}
	return best
}

// stopPrefixTail returns the length of the longest suffix of s that is a
// proper prefix of a stop sequence.
func stopPrefixTail(s string, stops []string) int {
	best := 0
	for _, st := range stops {
		for n := min(len(st)-1, len(s)); n > best; n-- {
			if strings.HasSuffix(s, st[:n]) {
				best = n
				break
			}
		}
	}
	return best
}

// promptChunk is the echoed prompt: its text decoded from its tokens and,
// when scored, each token's logprob (scores: the tokens after the first)
// with its byte offset in that text. A text prompt (text, "" for token
// ids) is echoed as given, so its offsets are into that text where its
// tokens spell it (see alignPrompt); decoding skips special tokens, which
// a text may hold ("<|im_start|>" is one token).
func (r *Runtime) promptChunk(prompt []int32, scores []nozzle.TokenLogprob, scored bool, text string) nozzle.Chunk {
	c := r.decodedPromptChunk(prompt, scores, scored)
	if scored && text != "" && c.Text != text && r.alignPrompt(prompt, c.Logprobs, text) {
		c.Text = text
	}
	return c
}

// alignPrompt sets the offsets of a text prompt's tokens into the text:
// each token spells the text's next bytes or, added to it (BOS), none. It
// reports false, changing nothing, when the tokens do not spell the text
// (a tokenizer that normalizes it).
func (r *Runtime) alignPrompt(prompt []int32, lps []nozzle.TokenLogprob, text string) bool {
	offs := make([]int, len(prompt))
	pos := 0
	for i, id := range prompt {
		offs[i] = pos
		if b := r.codec.TokenBytes(int(id)); len(b) > 0 && strings.HasPrefix(text[pos:], string(b)) {
			pos += len(b)
		}
	}
	if pos != len(text) {
		return false
	}
	for i := range lps {
		lps[i].Offset = offs[i]
	}
	return true
}

func (r *Runtime) decodedPromptChunk(prompt []int32, scores []nozzle.TokenLogprob, scored bool) nozzle.Chunk {
	dec := r.codec.NewStreamDecoder(nil)
	var text strings.Builder
	var lps []nozzle.TokenLogprob
	if scored {
		lps = make([]nozzle.TokenLogprob, 0, len(prompt))
	}
	for i, id := range prompt {
		start := text.Len()
		text.WriteString(dec.Add(int(id)))
		if !scored {
			continue
		}
		lp := nozzle.TokenLogprob{Token: r.codec.TokenText(int(id)), Bytes: bytesInts(r.codec.TokenBytes(int(id)))}
		if i > 0 && i-1 < len(scores) {
			lp = scores[i-1]
		}
		lp.Offset = start
		lps = append(lps, lp)
	}
	text.WriteString(dec.Flush())
	return nozzle.Chunk{Text: text.String(), Logprobs: lps, Prompt: true}
}

func tokenLogprob(c codec, ev *seqEvent) nozzle.TokenLogprob {
	lp := nozzle.TokenLogprob{
		Token:   c.TokenText(int(ev.token)),
		Logprob: float64(ev.logprob),
		Bytes:   bytesInts(c.TokenBytes(int(ev.token))),
		Top:     []nozzle.TopLogprob{},
	}
	for i, id := range ev.topTok {
		if id < 0 || math.IsInf(float64(ev.topLP[i]), -1) {
			// past the vocabulary, or a token the step's mask
			// excluded: no alternative at all
			continue
		}
		lp.Top = append(lp.Top, nozzle.TopLogprob{
			Token:   c.TokenText(int(id)),
			Logprob: float64(ev.topLP[i]),
			Bytes:   bytesInts(c.TokenBytes(int(id))),
		})
	}
	return lp
}

func bytesInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}
