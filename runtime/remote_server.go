package runtime

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
)

// The remote protocol between a gateway and a runtime on another machine.
// It carries nozzle.Generator and nozzle.OpenCapacitySource with the same
// semantics as a runtime in the same process.
//
// Every request but /healthz and /readyz carries
// "Authorization: Bearer <internal token>" (compared in constant time);
// without it the answer is 401.
//
//	GET  /healthz                          200 "ok" while the process runs
//	GET  /readyz                           200 once the model is loaded, else 503
//	GET  /internal/v1/info                 200 nozzle.ModelInfo as JSON
//	GET  /internal/v1/capacity?after=N     200 {"data": [nozzle.CapacityInterval...]}
//	GET  /internal/v1/capacity/open        200 {"data": nozzle.CapacityInterval or null}: the open interval so far
//	GET  /internal/v1/adapters/{sha}/tier  200 {"tier": "device"|"host"|"disk"}
//	POST /internal/v1/adapters/{sha}/drop  204: the adapter was deleted; drop it once unused (nozzle.AdapterDropper)
//	POST /internal/v1/cancel/{request_id}  204; 404 when no such request runs
//	POST /internal/v1/generate             the request (wireRequest) as JSON
//
// /internal/v1/generate answers an error found before any work (invalid
// parameters, context length, runtime not ready) with a non-200 status and
// {"error": {"code", "message", "param", "reason"}, "result": {...}}, the
// codes those of nozzle.Error. Otherwise it answers 200 with application/x-ndjson, one
// JSON object per line, each flushed as written:
//
//	{"prompt_tokens": P}                             first
//	{"chunk": {"text", "logprobs", "tokens": N}}     per chunk; N = completion tokens so far
//	                                                 ("thoughts_open": true on the first, where ThoughtsOpen)
//	{"result": {...}, "error": {...}}                last; "error" only when the request failed
//
// To cancel, the client sends POST /internal/v1/cancel/{request_id} and
// keeps reading until the last line, which then carries the partial
// account (device seconds included) and the error "canceled". A closed
// connection cancels the request too.
type wireRequest struct {
	RequestID    string               `json:"request_id"`
	TenantID     string               `json:"tenant_id"`
	Adapter      *nozzle.Adapter      `json:"adapter,omitempty"`
	Messages     []nozzle.ChatMessage `json:"messages"`
	Tools        json.RawMessage      `json:"tools,omitempty"`
	Prompt       string               `json:"prompt"`
	PromptTokens []int                `json:"prompt_tokens"`
	MaxTokens    int                  `json:"max_tokens"`
	Temperature  float64              `json:"temperature"`
	TopP         float64              `json:"top_p"`
	TopK         int                  `json:"top_k"`
	Seed         *uint64              `json:"seed,omitempty"`
	Stop         []string             `json:"stop,omitempty"`
	// LogitBias and the penalties: an earlier runtime ignores them, and
	// says so (ModelInfo.LogitBias false).
	LogitBias        map[int]float64 `json:"logit_bias,omitempty"`
	PresencePenalty  float64         `json:"presence_penalty,omitempty"`
	FrequencyPenalty float64         `json:"frequency_penalty,omitempty"`
	// ResponseFormat: an earlier runtime ignores it, and says so
	// (ModelInfo.JSONObject false).
	ResponseFormat string          `json:"response_format,omitempty"`
	ResponseSchema json.RawMessage `json:"response_schema,omitempty"`
	// ToolChoice: an earlier runtime ignores it, and says so
	// (ModelInfo.ToolChoice false).
	ToolChoice string `json:"tool_choice,omitempty"`
	// OneCall: an earlier runtime ignores it and generates every call
	// (the gateway keeps the first); an earlier gateway sends none.
	OneCall bool `json:"one_call,omitempty"`
	// Background: the batch class (absent: interactive, as before it
	// existed); an earlier runtime ignores it and admits the request as
	// an interactive one.
	Background  bool `json:"background,omitempty"`
	Logprobs    bool `json:"logprobs"`
	TopLogprobs int  `json:"top_logprobs"`
	Echo        bool `json:"echo,omitempty"`
	PromptOnly  bool `json:"prompt_only,omitempty"`
	Stream      bool `json:"stream,omitempty"`

	// ChatTemplateKwargs: an earlier runtime ignores them, and says so
	// (ModelInfo.ChatTemplateKwargs false).
	ChatTemplateKwargs json.RawMessage `json:"chat_template_kwargs,omitempty"`
}

func toWire(r *nozzle.GenerateRequest) wireRequest {
	return wireRequest{
		RequestID: r.RequestID, TenantID: r.TenantID, Adapter: r.Adapter,
		Messages: r.Messages, Tools: r.Tools, ChatTemplateKwargs: r.ChatTemplateKwargs, Prompt: r.Prompt, PromptTokens: r.PromptTokens,
		MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, TopK: r.TopK,
		Seed: r.Seed, Stop: r.Stop, Logprobs: r.Logprobs, TopLogprobs: r.TopLogprobs, Echo: r.Echo, PromptOnly: r.PromptOnly, Stream: r.Stream,
		LogitBias: r.LogitBias, PresencePenalty: r.PresencePenalty, FrequencyPenalty: r.FrequencyPenalty,
		ResponseFormat: r.ResponseFormat, ResponseSchema: r.ResponseSchema, ToolChoice: r.ToolChoice, OneCall: r.OneCall,
		Background: r.Background,
	}
}

func (w wireRequest) request() *nozzle.GenerateRequest {
	return &nozzle.GenerateRequest{
		RequestID: w.RequestID, TenantID: w.TenantID, Adapter: w.Adapter,
		Messages: w.Messages, Tools: w.Tools, ChatTemplateKwargs: w.ChatTemplateKwargs, Prompt: w.Prompt, PromptTokens: w.PromptTokens,
		MaxTokens: w.MaxTokens, Temperature: w.Temperature, TopP: w.TopP, TopK: w.TopK,
		Seed: w.Seed, Stop: w.Stop, Logprobs: w.Logprobs, TopLogprobs: w.TopLogprobs, Echo: w.Echo, PromptOnly: w.PromptOnly, Stream: w.Stream,
		LogitBias: w.LogitBias, PresencePenalty: w.PresencePenalty, FrequencyPenalty: w.FrequencyPenalty,
		ResponseFormat: w.ResponseFormat, ResponseSchema: w.ResponseSchema, ToolChoice: w.ToolChoice, OneCall: w.OneCall,
		Background: w.Background,
	}
}

type wireChunk struct {
	Text     string                `json:"text"`
	Logprobs []nozzle.TokenLogprob `json:"logprobs,omitempty"`
	Tokens   int                   `json:"tokens"`
	Prompt   bool                  `json:"prompt,omitempty"`
	// ThoughtsOpen: an earlier runtime never reports a reasoning model
	// (ModelInfo.Reasoning), so no gateway waits for it in vain.
	ThoughtsOpen bool `json:"thoughts_open,omitempty"`
	// The request's account so far (nozzle.Progress) beside Tokens, the
	// runtime's id and rate in the first chunk only; a runtime from
	// before them sends none.
	DeviceSeconds      float64 `json:"device_seconds,omitempty"`
	CachedPromptTokens int     `json:"cached_prompt_tokens,omitempty"`
	RuntimeID          string  `json:"runtime_id,omitempty"`
	RatePerHour        float64 `json:"rate_per_hour,omitempty"`
}

type wireResult struct {
	FinishReason       string  `json:"finish_reason"`
	PromptTokens       int     `json:"prompt_tokens"`
	CompletionTokens   int     `json:"completion_tokens"`
	CachedPromptTokens int     `json:"cached_prompt_tokens,omitempty"`
	ReasoningTokens    int     `json:"reasoning_tokens,omitempty"`
	DeviceSeconds      float64 `json:"device_seconds"`
	QueueSeconds       float64 `json:"queue_seconds"`
	TTFTSeconds        float64 `json:"ttft_seconds"`
	AdapterLoadSeconds float64 `json:"adapter_load_seconds"`
	RuntimeID          string  `json:"runtime_id"`
	RatePerHour        float64 `json:"rate_per_hour"`
}

type wireError struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	Param        string `json:"param,omitempty"`
	Reason       string `json:"reason,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

type wireLine struct {
	PromptTokens *int `json:"prompt_tokens,omitempty"`
	// Accepted says the runtime accepted the request
	// (GenerateRequest.OnAccepted); a streamed answer only, once, after
	// the prompt_tokens line. A runtime of an earlier version never sends
	// it, and a client of an earlier version skips it.
	Accepted bool        `json:"accepted,omitempty"`
	Chunk    *wireChunk  `json:"chunk,omitempty"`
	Result   *wireResult `json:"result,omitempty"`
	Error    *wireError  `json:"error,omitempty"`
}

func resultToWire(r *nozzle.GenerateResult) *wireResult {
	if r == nil {
		return &wireResult{}
	}
	w := wireResult(*r)
	return &w
}

func (w *wireResult) result() *nozzle.GenerateResult {
	r := nozzle.GenerateResult(*w)
	return &r
}

func errorToWire(err error) *wireError {
	if err == nil {
		return nil
	}
	e := nozzle.AsError(err)
	if e == nil || e.Code == nozzle.EINTERNAL {
		return &wireError{Code: nozzle.EINTERNAL, Message: "Internal error."}
	}
	return &wireError{Code: e.Code, Message: e.Message, Param: e.Param, Reason: e.Reason, RetryAfterMS: e.RetryAfter.Milliseconds()}
}

func (w *wireError) err() error {
	if w == nil {
		return nil
	}
	e := nozzle.Errorf(w.Code, "%s", w.Message).WithParam(w.Param).WithReason(w.Reason)
	e.RetryAfter = time.Duration(w.RetryAfterMS) * time.Millisecond
	return e
}

func httpStatus(code string) int {
	switch code {
	case nozzle.EINVALID, nozzle.ECONTEXTLENGTH:
		return http.StatusBadRequest
	case nozzle.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case nozzle.EFORBIDDEN:
		return http.StatusForbidden
	case nozzle.ENOTFOUND:
		return http.StatusNotFound
	case nozzle.ECONFLICT:
		return http.StatusConflict
	case nozzle.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case nozzle.ERATELIMIT, nozzle.EQUOTA:
		return http.StatusTooManyRequests
	case nozzle.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	case nozzle.ECANCELED:
		return 499
	}
	return http.StatusInternalServerError
}

// served is what the remote protocol serves: a Runtime, or any
// nozzle.Generator adapted by NewGeneratorServer.
type served interface {
	Info(ctx context.Context) (nozzle.ModelInfo, error)
	CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error)
	OpenCapacity(ctx context.Context) (nozzle.CapacityInterval, bool, error)
	AdapterTier(ctx context.Context, sha256 string) nozzle.Tier
	DropAdapter(ctx context.Context, sha256 string) error
	Ready() bool
	generate(ctx context.Context, req *nozzle.GenerateRequest, started func(promptTokens int), emit func(nozzle.Chunk, int) error) (*nozzle.GenerateResult, error)
}

// server serves a runtime over the remote protocol.
type server struct {
	rt    served
	token []byte

	mu      sync.Mutex
	running map[string]context.CancelFunc

	// Capacity pulls seen: whether any came, and the highest "after"
	// asked for — what the gateway has stored.
	pulledAny atomic.Bool
	pulled    atomic.Uint64
}

// Server is the runtime's side of the remote protocol.
type Server struct {
	http.Handler
	s *server
}

// NewServer returns the HTTP handler of the remote protocol for rt,
// accepting internalToken as bearer token.
func NewServer(rt *Runtime, internalToken string) *Server {
	h, s := newServer(rt, internalToken)
	return &Server{Handler: h, s: s}
}

// WaitCollected waits, once the runtime has closed, until the gateway that
// collects its capacity has stored every interval, the last one (closed by
// Close, the drain included) too: it asks for the intervals after the last
// one it stored. It returns at once when no gateway ever asked, and ctx's
// error when ctx ends first.
func (s *Server) WaitCollected(ctx context.Context) error {
	if !s.s.pulledAny.Load() {
		return nil
	}
	ivs, err := s.s.rt.CapacityIntervals(ctx, s.s.pulled.Load())
	if err != nil || len(ivs) == 0 {
		return err
	}
	last := ivs[len(ivs)-1].Seq
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.s.pulled.Load() < last {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// NewGeneratorServer serves any nozzle.Generator over the remote protocol:
// a stand-in upstream for gateway benchmarks and tests. It reports no
// capacity, is always ready, and announces the prompt's token count as 0
// until the final account (a Generator tells it only there).
func NewGeneratorServer(g nozzle.Generator, internalToken string) http.Handler {
	h, _ := newServer(generatorServed{g}, internalToken)
	return h
}

type generatorServed struct{ nozzle.Generator }

func (generatorServed) Ready() bool { return true }

// DropAdapter passes the drop on to a Generator that drops adapters; for
// any other there is nothing to drop.
func (g generatorServed) DropAdapter(ctx context.Context, sha256 string) error {
	if d, ok := g.Generator.(nozzle.AdapterDropper); ok {
		return d.DropAdapter(ctx, sha256)
	}
	return nil
}

func (generatorServed) CapacityIntervals(context.Context, uint64) ([]nozzle.CapacityInterval, error) {
	return nil, nil
}

func (generatorServed) OpenCapacity(context.Context) (nozzle.CapacityInterval, bool, error) {
	return nozzle.CapacityInterval{}, false, nil
}

func (g generatorServed) generate(ctx context.Context, req *nozzle.GenerateRequest, started func(int), emit func(nozzle.Chunk, int) error) (*nozzle.GenerateResult, error) {
	begun := false
	if accepted := req.OnAccepted; accepted != nil {
		r := *req
		r.OnAccepted = func() {
			if !begun {
				begun = true
				started(0)
			}
			accepted()
		}
		req = &r
	}
	res, err := g.Generate(ctx, req, func(c nozzle.Chunk) error {
		if !begun {
			begun = true
			started(0)
		}
		return emit(c, 1)
	})
	if !begun && err == nil {
		started(0)
	}
	return res, err
}

// LoadingHandler answers for a runtime still waiting for or loading its
// model: /healthz (the process runs) and, for everything else, 503 "not
// ready", so that a gateway's health check learns it at once rather than
// timing out.
func LoadingHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is loading its model."))
	})
	return mux
}

func newServer(rt served, internalToken string) (http.Handler, *server) {
	s := &server{rt: rt, token: []byte(internalToken), running: map[string]context.CancelFunc{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !rt.Ready() {
			writeError(w, nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is not ready."))
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /internal/v1/info", s.auth(s.info))
	mux.HandleFunc("GET /internal/v1/capacity", s.auth(s.capacity))
	mux.HandleFunc("GET /internal/v1/capacity/open", s.auth(s.openCapacity))
	mux.HandleFunc("GET /internal/v1/adapters/{sha}/tier", s.auth(s.tier))
	mux.HandleFunc("POST /internal/v1/adapters/{sha}/drop", s.auth(s.drop))
	mux.HandleFunc("POST /internal/v1/cancel/{id}", s.auth(s.cancel))
	mux.HandleFunc("POST /internal/v1/generate", s.auth(s.generate))
	return mux, s
}

func (s *server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		got := r.Header.Get("Authorization")
		ok := len(s.token) > 0 && len(got) > len(prefix) && got[:len(prefix)] == prefix &&
			subtle.ConstantTimeCompare([]byte(got[len(prefix):]), s.token) == 1
		if !ok {
			writeError(w, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Invalid internal token."))
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	we := errorToWire(err)
	writeJSON(w, httpStatus(we.Code), map[string]any{"error": we})
}

func (s *server) info(w http.ResponseWriter, r *http.Request) {
	info, err := s.rt.Info(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *server) capacity(w http.ResponseWriter, r *http.Request) {
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, nozzle.Errorf(nozzle.EINVALID, "after must be a non-negative integer.").WithParam("after"))
			return
		}
		after = n
	}
	s.pulledAny.Store(true)
	for {
		if p := s.pulled.Load(); after <= p || s.pulled.CompareAndSwap(p, after) {
			break
		}
	}
	ivs, err := s.rt.CapacityIntervals(r.Context(), after)
	if err != nil {
		writeError(w, err)
		return
	}
	if ivs == nil {
		ivs = []nozzle.CapacityInterval{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": ivs})
}

func (s *server) openCapacity(w http.ResponseWriter, r *http.Request) {
	iv, ok, err := s.rt.OpenCapacity(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	var data *nozzle.CapacityInterval
	if ok {
		data = &iv
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

func (s *server) tier(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"tier": s.rt.AdapterTier(r.Context(), r.PathValue("sha"))})
}

func (s *server) drop(w http.ResponseWriter, r *http.Request) {
	if err := s.rt.DropAdapter(r.Context(), r.PathValue("sha")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	cancel := s.running[r.PathValue("id")]
	s.mu.Unlock()
	if cancel == nil {
		writeError(w, nozzle.Errorf(nozzle.ENOTFOUND, "No such request is running."))
		return
	}
	cancel()
	w.WriteHeader(http.StatusNoContent)
}

const maxRequestBody = 32 << 20

func (s *server) generate(w http.ResponseWriter, r *http.Request) {
	var wr wireRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err := dec.Decode(&wr); err != nil {
		writeError(w, nozzle.Errorf(nozzle.EINVALID, "The request body is not a valid generate request."))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if wr.RequestID != "" {
		s.mu.Lock()
		if s.running[wr.RequestID] != nil {
			s.mu.Unlock()
			writeError(w, nozzle.Errorf(nozzle.ECONFLICT, "A request with this id is already running."))
			return
		}
		s.running[wr.RequestID] = cancel
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.running, wr.RequestID)
			s.mu.Unlock()
		}()
	}

	// A streamed request gets each line as it is made; any other gets the
	// whole answer in one write when the handler returns (the final line
	// never needs a flush of its own: returning sends it with the end of
	// the body).
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	var writeErr error
	send := func(l wireLine, last bool) error {
		if writeErr != nil {
			return writeErr
		}
		if writeErr = enc.Encode(l); writeErr == nil && wr.Stream && !last {
			writeErr = rc.Flush()
		}
		return writeErr
	}
	started, toldRuntime := false, false
	var whole struct {
		text     strings.Builder
		logprobs []nozzle.TokenLogprob
		tokens   int
		any      bool
		open     bool
	}
	req := wr.request()
	if wr.Stream {
		req.OnAccepted = func() {
			if started {
				send(wireLine{Accepted: true}, false)
			}
		}
	}
	res, err := s.rt.generate(ctx, req, func(promptTokens int) {
		started = true
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		send(wireLine{PromptTokens: &promptTokens}, false)
	}, func(c nozzle.Chunk, n int) error {
		if c.Prompt {
			return send(wireLine{Chunk: &wireChunk{Text: c.Text, Logprobs: c.Logprobs, Prompt: true}}, false)
		}
		if !wr.Stream {
			// Held and sent as one chunk before the result: one line to
			// encode and decode instead of one per token.
			whole.text.WriteString(c.Text)
			whole.logprobs = append(whole.logprobs, c.Logprobs...)
			whole.tokens, whole.any = n, true
			whole.open = whole.open || c.ThoughtsOpen
			return nil
		}
		wc := &wireChunk{Text: c.Text, Logprobs: c.Logprobs, Tokens: n, ThoughtsOpen: c.ThoughtsOpen,
			DeviceSeconds: c.Progress.DeviceSeconds, CachedPromptTokens: c.Progress.CachedPromptTokens}
		if !toldRuntime {
			toldRuntime = true
			wc.RuntimeID, wc.RatePerHour = c.Progress.RuntimeID, c.Progress.RatePerHour
		}
		return send(wireLine{Chunk: wc}, false)
	})
	if !started {
		if err == nil {
			err = errors.New("generate ended before it started")
		}
		we := errorToWire(err)
		writeJSON(w, httpStatus(we.Code), map[string]any{"error": we, "result": resultToWire(res)})
		return
	}
	if whole.any {
		send(wireLine{Chunk: &wireChunk{Text: whole.text.String(), Logprobs: whole.logprobs, Tokens: whole.tokens, ThoughtsOpen: whole.open}}, false)
	}
	send(wireLine{Result: resultToWire(res), Error: errorToWire(err)}, true)
}
