package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/mock"
)

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeFingerprint is the weights' fingerprint the fake runtimes report.
// notStoredSHA is the content address of an adapter the fake runtime
// cannot load.
var notStoredSHA = strings.Repeat("dead", 16)

const fakeFingerprint = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// defaultWords is what the fake runtime says, one token a word.
var defaultWords = []string{"Hello", " from", " the", " fake", " runtime", "."}

// fakeGen is a deterministic runtime behind a mock.Generator. The prompt
// steers it: "TOO_LONG" → ECONTEXTLENGTH, "FAIL_BEFORE" → EINTERNAL before
// any token, "FAIL_AFTER" → EINTERNAL after two tokens, "REFUSE_AFTER" →
// ECONTEXTLENGTH after two tokens, "REFUSE_LATE" → ECONTEXTLENGTH before
// any output, found after 50 ms, "SLOW_START" → its first token 300 ms
// after it was accepted. It tells req.OnAccepted once it passed those
// checks and its adapter's (unless noAccept: a runtime of an earlier
// version). An adapter of content address notStoredSHA fails as one whose
// files are gone: ENOTFOUND once the echo (sent at once, as the runtime
// sends it) went out.
type fakeGen struct {
	w          *world
	runtimeID  string
	words      []string
	delay      atomic.Int64 // per token, nanoseconds
	down       atomic.Bool  // Info and Generate answer EUNAVAILABLE
	calls      atomic.Int64
	hold       atomic.Pointer[chan struct{}] // Generate waits for it to close before the first token
	abandoned  atomic.Int64                  // generations canceled while held
	started    chan string                   // receives the request id when Generate starts (if set)
	lastReq    atomic.Pointer[nozzle.GenerateRequest]
	sampling   nozzle.SamplingDefaults // the model's recommended sampling, reported by Info
	toolFormat string                  // how the model calls tools, reported by Info
	reasoning  bool                    // Info reports a reasoning model
	open       bool                    // a reasoning model's chat prompt opens its thoughts
	thinkTags  nozzle.ThinkTags        // a reasoning model's tags, reported by Info (none: <think>)
	noEcho     bool                    // Info reports a runtime that cannot echo
	noKwargs   bool                    // Info reports a runtime that cannot render chat_template_kwargs
	noBias     bool                    // Info reports a runtime that cannot apply logit_bias and penalties
	noJSON     bool                    // Info reports a runtime that cannot constrain output to a JSON object
	noAccept   atomic.Bool             // never tells GenerateRequest.OnAccepted
	model      atomic.Pointer[string]  // the model id Info reports, when not tiny-llama
	created    atomic.Int64            // the created_at Info reports, in unix seconds, when not 1700000000
}

func newFakeGen(w *world) *fakeGen {
	return &fakeGen{w: w, runtimeID: "rt0", words: defaultWords}
}

func (g *fakeGen) setDelay(d time.Duration) { g.delay.Store(int64(d)) }

// holdAll makes every generation wait before its first token until the
// returned channel is closed, and tells started each one that begins.
func (g *fakeGen) holdAll() chan struct{} {
	hold := make(chan struct{})
	g.hold.Store(&hold)
	g.started = make(chan string, 4)
	return hold
}

func promptText(req *nozzle.GenerateRequest) string {
	var sb strings.Builder
	sb.WriteString(req.Prompt)
	for _, m := range req.Messages {
		sb.WriteString(m.Role + ": " + m.Content + "\n")
	}
	for _, t := range req.PromptTokens {
		sb.WriteString(strconv.Itoa(t) + " ")
	}
	return sb.String()
}

func (g *fakeGen) mock() *mock.Generator {
	return &mock.Generator{
		InfoFn: func(ctx context.Context) (nozzle.ModelInfo, error) {
			if g.down.Load() {
				return nozzle.ModelInfo{}, nozzle.Errorf(nozzle.EUNAVAILABLE, "Down.")
			}
			id := "tiny-llama"
			if m := g.model.Load(); m != nil {
				id = *m
			}
			created := time.Unix(1700000000, 0).UTC()
			if c := g.created.Load(); c != 0 {
				created = time.Unix(c, 0).UTC()
			}
			fp := fakeFingerprint
			if id != "tiny-llama" {
				fp = sha256hex([]byte(id))
			}
			return nozzle.ModelInfo{ID: id, Architecture: "llama", ContextLength: 2048, VocabSize: 32000,
				Device: "cpu", CreatedAt: created, Sampling: g.sampling, Fingerprint: fp, ToolFormat: g.toolFormat, Echo: !g.noEcho,
				Reasoning: g.reasoning, ReasoningTags: g.thinkTags, ChatTemplateKwargs: !g.noKwargs, LogitBias: !g.noBias, JSONObject: !g.noJSON, JSONSchema: !g.noJSON, Regex: !g.noJSON,
				ToolChoice: g.toolFormat == nozzle.ToolFormatHermes || g.toolFormat == nozzle.ToolFormatLlama3JSON || g.toolFormat == nozzle.ToolFormatMistral}, nil
		},
		GenerateFn:    g.generate,
		AdapterTierFn: func(ctx context.Context, sha string) nozzle.Tier { return nozzle.TierDisk },
	}
}

// oneCallWords are words as a runtime generates them for a request that
// allows one call (nozzle.GenerateRequest.OneCall): up to the one that
// completes the first call, cut after the call (nozzle.FirstCall, which
// the runtime's tests check on the engine).
func (g *fakeGen) oneCallWords(words []string) []string {
	var thoughts *nozzle.ThinkTags
	open := false
	switch {
	case g.reasoning:
		thoughts, open = &g.thinkTags, g.open
	case g.toolFormat == nozzle.ToolFormatHermes:
		thoughts = &nozzle.DefaultThinkTags
	}
	m := nozzle.NewFirstCall(g.toolFormat, thoughts, open)
	off := 0
	for i, w := range words {
		if m.Add(w) {
			return append(slices.Clone(words[:i]), w[:m.End()-off])
		}
		off += len(w)
	}
	return words
}

func (g *fakeGen) generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	g.calls.Add(1)
	g.w.generations.Add(1)
	r := *req
	g.lastReq.Store(&r)
	if g.started != nil {
		g.started <- req.RequestID
	}
	if g.down.Load() {
		return nil, nozzle.Errorf(nozzle.EUNAVAILABLE, "Runtime is down.")
	}
	prompt := promptText(req)
	res := &nozzle.GenerateResult{PromptTokens: len(prompt)/4 + 1, RuntimeID: g.runtimeID, RatePerHour: 2.5, QueueSeconds: 0.001}
	if strings.Contains(prompt, "CACHED") { // as if the prefix cache held all but the last token
		res.CachedPromptTokens = res.PromptTokens - 1
	}
	switch {
	case req.PromptOnly && (!req.Echo || req.MaxTokens != 0): // as the runtime refuses it
		return res, nozzle.Errorf(nozzle.EINVALID, "Generating nothing (max_tokens 0) needs echo.").WithParam("max_tokens")
	case strings.Contains(prompt, "TOO_LONG"):
		return res, nozzle.Errorf(nozzle.ECONTEXTLENGTH, "This model's maximum context length is 2048 tokens. However, your messages resulted in 5000 tokens.").WithParam("messages")
	case strings.Contains(prompt, "FAIL_BEFORE"):
		return res, nozzle.Errorf(nozzle.EINTERNAL, "engine exploded")
	case strings.Contains(prompt, "REFUSE_LATE"):
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
		return res, nozzle.Errorf(nozzle.ECONTEXTLENGTH, "This model's maximum context length is 2048 tokens.").WithParam("prompt").WithReason("context_length_exceeded")
	}
	if h := g.hold.Load(); h != nil {
		select {
		case <-*h:
		case <-ctx.Done():
			g.abandoned.Add(1)
			return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.")
		}
	}
	if req.Echo {
		// The prompt's tokens: a text prompt's characters, token k as "tk ".
		var pieces []string
		for _, r := range req.Prompt {
			pieces = append(pieces, string(r))
		}
		for _, t := range req.PromptTokens {
			pieces = append(pieces, "t"+strconv.Itoa(t)+" ")
		}
		echo := nozzle.Chunk{Text: strings.Join(pieces, ""), Prompt: true}
		if req.Logprobs {
			off := 0
			for i, p := range pieces {
				lp := nozzle.TokenLogprob{Token: p, Offset: off}
				if i > 0 {
					lp.Logprob = -0.5 * float64(i)
					for k := 0; k < req.TopLogprobs; k++ {
						lp.Top = append(lp.Top, nozzle.TopLogprob{Token: "alt" + strconv.Itoa(k), Logprob: -1 - float64(k)})
					}
				}
				echo.Logprobs = append(echo.Logprobs, lp)
				off += len(p)
			}
		}
		if err := emit(echo); err != nil {
			return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.").Wrap(err)
		}
	}
	if req.Adapter != nil && req.Adapter.SHA256 == notStoredSHA {
		return res, nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", notStoredSHA[:12]).WithReason("model_not_found")
	}
	if req.OnAccepted != nil && !g.noAccept.Load() {
		req.OnAccepted()
	}
	if req.PromptOnly {
		res.FinishReason = nozzle.FinishLength
		return res, nil
	}
	if strings.Contains(prompt, "SLOW_START") {
		select {
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	words := g.words
	if strings.Contains(prompt, "CALL_TOOL") && len(req.Tools) > 0 {
		// a call as a Qwen-style template teaches it
		words = []string{"<tool_call>\n", `{"name": "get_weather", `, `"arguments": {"city": "Bern"}}`, "\n</tool_call>"}
	}
	if req.OneCall && len(req.Tools) > 0 {
		words = g.oneCallWords(words)
	}
	n := len(words)
	if req.MaxTokens > 0 && req.MaxTokens < n {
		n = req.MaxTokens
	}
	res.DeviceSeconds = 0.001
	off := 0 // the byte offset of word i in the completion
	for i := 0; i < n; i++ {
		if d := time.Duration(g.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.")
		}
		if i == 2 && strings.Contains(prompt, "FAIL_AFTER") {
			return res, nozzle.Errorf(nozzle.EINTERNAL, "engine exploded mid-way")
		}
		if i == 2 && strings.Contains(prompt, "REFUSE_AFTER") { // a refusal that takes time to find
			return res, nozzle.Errorf(nozzle.ECONTEXTLENGTH, "This model's maximum context length is 2048 tokens.")
		}
		ch := nozzle.Chunk{Text: words[i], ThoughtsOpen: i == 0 && g.open && g.reasoning && req.Messages != nil}
		if req.Logprobs {
			lp := nozzle.TokenLogprob{Token: words[i], Logprob: -0.25, Offset: off}
			for k := 0; k < req.TopLogprobs; k++ {
				lp.Top = append(lp.Top, nozzle.TopLogprob{Token: "alt" + strconv.Itoa(k), Logprob: -1 - float64(k)})
			}
			ch.Logprobs = []nozzle.TokenLogprob{lp}
		}
		off += len(words[i])
		res.CompletionTokens++
		res.DeviceSeconds += 0.001
		ch.Progress = nozzle.Progress{PromptTokens: res.PromptTokens, CachedPromptTokens: res.CachedPromptTokens, CompletionTokens: res.CompletionTokens,
			DeviceSeconds: res.DeviceSeconds, RuntimeID: g.runtimeID, RatePerHour: res.RatePerHour}
		if err := emit(ch); err != nil {
			return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.").Wrap(err)
		}
	}
	if g.reasoning && req.Messages != nil {
		// One token a word, counted as the runtime counts them.
		c := nozzle.NewThoughtCounter(g.open, g.thinkTags)
		for _, w := range words[:n] {
			c.Add(w)
		}
		res.ReasoningTokens = c.Tokens()
	}
	res.TTFTSeconds = 0.002
	res.FinishReason = nozzle.FinishStop
	if n < len(words) {
		res.FinishReason = nozzle.FinishLength
	}
	return res, nil
}
