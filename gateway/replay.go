package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// storedAnswer is the part of a stored non-streamed answer that a replay
// needs.
type storedAnswer struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	// SystemFingerprint is null in answers stored before it was given.
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index   int `json:"index"`
		Message *struct {
			Content          string            `json:"content"`
			ReasoningContent string            `json:"reasoning_content"`
			ToolCalls        []nozzle.ToolCall `json:"tool_calls"`
			// a request's with legacy functions
			FunctionCall *nozzle.FunctionCall `json:"function_call"`
		} `json:"message"`
		Text         *string         `json:"text"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason string          `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		PromptTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
}

// Stored answers begin with a version byte and their request's
// fingerprint (an answer stored before fingerprints begins with '{'):
// storedVersion, the canonical fingerprint (requestFingerprint); or
// storedLegacy, a fingerprint of one of the two schemes of earlier
// releases (legacyFingerprints).
const (
	storedLegacy  = 1
	storedVersion = 2
)

// fingerprintDomain is hashed ahead of the canonical form: a new form gets
// a new domain (and a new storedVersion).
const fingerprintDomain = "nozzle request fingerprint v2\n"

// requestFingerprint identifies what an idempotent request asks for: the
// SHA-256 of a canonical form of its parameters, in which neither the
// order of members nor spacing count, strings count by their value
// (escapes decoded), numbers by their exact decimal value (1, 1.0, 1e0
// and 10e-1 are one number; two integers past 2^53 that round to one
// double are two), and a top-level member set to null counts as left
// out (it is, for every parameter). Whether the answer is streamed
// (stream, stream_options) does not count: a streamed retry may replay a
// non-streamed answer. The form is Nozzle's own (canonicalJSON), so it
// does not change with encoding/json's output; a golden test pins it.
func requestFingerprint(body []byte) [sha256.Size]byte {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return sha256.Sum256(append([]byte(fingerprintDomain+"raw\n"), body...))
	}
	for k, v := range m {
		if v == nil || k == "stream" || k == "stream_options" {
			delete(m, k)
		}
	}
	// The canonical form is about as long as the body: one allocation.
	buf := append(make([]byte, 0, len(fingerprintDomain)+len(body)+len(body)/2), fingerprintDomain...)
	return sha256.Sum256(canonicalJSON(buf, m))
}

// canonicalJSON appends a canonical, prefix-free form of a value decoded
// with UseNumber: null "n", true "t", false "f", a number "d" and its
// canonical decimal then ";", a string "s", its length in bytes, ":" and
// its bytes, an array "[" items "]", an object "{" its members sorted by
// name (each a string, then its value) "}".
func canonicalJSON(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, 'n')
	case bool:
		if v {
			return append(dst, 't')
		}
		return append(dst, 'f')
	case json.Number:
		dst = append(dst, 'd')
		return append(canonicalNumber(dst, string(v)), ';')
	case string:
		return canonicalString(dst, v)
	case []any:
		dst = append(dst, '[')
		for _, x := range v {
			dst = canonicalJSON(dst, x)
		}
		return append(dst, ']')
	case map[string]any:
		dst = append(dst, '{')
		for _, k := range slices.Sorted(maps.Keys(v)) {
			dst = canonicalString(dst, k)
			dst = canonicalJSON(dst, v[k])
		}
		return append(dst, '}')
	}
	panic(fmt.Sprintf("canonicalJSON: %T", v))
}

func canonicalString(dst []byte, s string) []byte {
	dst = append(dst, 's')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

// canonicalNumber appends the exact value of the JSON number n as its
// significant digits (no leading or trailing zeros) and a power of ten:
// "-15e-1" for -1.50, "0" for 0, -0 and 0.0e7. A number whose exponent is
// past ±2^62 stays as written, after "x".
func canonicalNumber(dst []byte, n string) []byte {
	neg := strings.HasPrefix(n, "-")
	mant, exp, hasExp := strings.Cut(strings.ToLower(strings.TrimPrefix(n, "-")), "e")
	whole, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(whole+frac, "0")
	if digits == "" {
		return append(dst, '0')
	}
	var e int64
	if hasExp {
		var err error
		if e, err = strconv.ParseInt(exp, 10, 64); err != nil || e > 1<<62 || e < -1<<62 {
			return append(append(dst, 'x'), n...)
		}
	}
	trimmed := strings.TrimRight(digits, "0")
	// The power of ten: the exponent, less the fraction's digits, plus the
	// trailing zeros taken off.
	e += int64(len(digits) - len(trimmed) - len(frac))
	if neg {
		dst = append(dst, '-')
	}
	dst = append(dst, trimmed...)
	if e != 0 {
		dst = append(dst, 'e')
		dst = strconv.AppendInt(dst, e, 10)
	}
	return dst
}

// legacyFingerprints are the fingerprints earlier releases stored (as
// storedLegacy) for body: the compact JSON of the body's object as
// encoding/json re-encodes it, stream and stream_options left out, with
// numbers kept as written (digits) or, before that, read as float64s
// (float). A retry of a request answered by such a release is replayed
// when either matches: it is the request that release would have
// replayed.
func legacyFingerprints(body []byte) (digits, float [sha256.Size]byte) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		raw := sha256.Sum256(body)
		return raw, raw
	}
	legacy := func(m map[string]any) [sha256.Size]byte {
		delete(m, "stream")
		delete(m, "stream_options")
		canon, err := json.Marshal(m) // object keys sorted
		if err != nil {
			return sha256.Sum256(body)
		}
		return sha256.Sum256(canon)
	}
	digits = legacy(m)
	var f map[string]any
	if json.Unmarshal(body, &f) != nil {
		return digits, sha256.Sum256(body)
	}
	return digits, legacy(f)
}

// storedResponse is what the ledger keeps of an idempotent answer: its
// request's fingerprint, then the answer.
func storedResponse(fp [sha256.Size]byte, answer []byte) []byte {
	out := make([]byte, 0, 1+len(fp)+len(answer))
	out = append(out, storedVersion)
	out = append(out, fp[:]...)
	return append(out, answer...)
}

// splitStored returns a stored answer's version (0 for an answer stored
// before fingerprints), its request's fingerprint (nil for version 0) and
// the answer.
func splitStored(b []byte) (version byte, fp *[sha256.Size]byte, answer []byte) {
	if len(b) > sha256.Size && (b[0] == storedVersion || b[0] == storedLegacy) {
		f := [sha256.Size]byte(b[1 : 1+sha256.Size])
		return b[0], &f, b[1+sha256.Size:]
	}
	return 0, nil, b
}

// sameRequest reports whether a stored answer was for the request of
// fingerprint fp and body: the answers stored before fingerprints are
// taken on trust, those of earlier releases by their fingerprints.
func sameRequest(version byte, stored *[sha256.Size]byte, fp [sha256.Size]byte, body []byte) bool {
	switch version {
	case 0:
		return true
	case storedLegacy:
		digits, float := legacyFingerprints(body)
		return *stored == digits || *stored == float
	}
	return *stored == fp
}

// replay answers a request whose Idempotency-Key the ledger already holds,
// without running or charging it again. The stored answer is the complete
// non-streamed body; a streamed retry gets it back as a short stream (one
// content chunk per choice), so streaming clients can retry too.
func (s *Server) replay(c *fiber.Ctx, j *job, ev *nozzle.UsageEvent, fp [sha256.Size]byte, body []byte) error {
	if len(ev.Response) == 0 {
		return nozzle.Errorf(nozzle.ECONFLICT, "This Idempotency-Key was already used and its answer is not stored; use a new key.").WithReason("idempotency_key_reused")
	}
	version, was, answer := splitStored(ev.Response)
	if !sameRequest(version, was, fp, body) {
		return nozzle.Errorf(nozzle.ECONFLICT, "This Idempotency-Key was already used with other parameters; a retry must send the same request, a new request a new key.").WithReason("idempotency_key_reused")
	}
	var a storedAnswer
	if err := json.Unmarshal(answer, &a); err != nil {
		return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: err}
	}
	want := "chat.completion"
	switch {
	case j.resp != nil:
		want = "response"
	case j.kind == kindText:
		want = "text_completion"
	}
	if a.Object != want {
		return nozzle.Errorf(nozzle.ECONFLICT, "This Idempotency-Key was already used for a request to another endpoint.").WithReason("idempotency_key_reused")
	}
	s.met.replays.Inc()
	c.Set("Idempotent-Replayed", "true")
	if !j.stream {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(answer)
	}
	if j.resp != nil {
		// The stored Response's events, as GET /v1/responses/{id}?stream=true
		// replays them.
		buf, err := storedEvents(make([]byte, 0, 2*len(answer)), answer, -1)
		if err != nil {
			return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: err}
		}
		setEventStream(c)
		return c.Send(buf)
	}
	chunkObj := "chat.completion.chunk"
	if j.kind == kindText {
		chunkObj = "text_completion"
	}
	head := func(dst []byte) []byte {
		dst = append(dst, "data: "...)
		return appendHead(dst, a.ID, chunkObj, a.Created, a.Model, a.SystemFingerprint)
	}
	tail := func(dst []byte) []byte {
		if j.includeUsage {
			dst = append(dst, `,"usage":null`...)
		}
		return append(dst, "}\n\n"...)
	}
	logprobs := func(dst []byte, raw json.RawMessage) []byte {
		if isNull(raw) {
			return append(dst, "null"...)
		}
		return append(dst, raw...)
	}
	buf := make([]byte, 0, len(answer)*2)
	for _, ch := range a.Choices {
		if j.kind == kindChat {
			buf = head(buf)
			buf = append(buf, `,"choices":[{"index":`...)
			buf = appendInt(buf, int64(ch.Index))
			buf = append(buf, `,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]`...)
			buf = tail(buf)
			content, thought := "", ""
			if ch.Message != nil {
				content, thought = ch.Message.Content, ch.Message.ReasoningContent
			}
			calls := ch.Message != nil && (len(ch.Message.ToolCalls) > 0 || ch.Message.FunctionCall != nil)
			lps := ch.Logprobs
			if thought != "" {
				// A reasoning model's thoughts first, with the logprobs.
				buf = head(buf)
				buf = append(buf, `,"choices":[{"index":`...)
				buf = appendInt(buf, int64(ch.Index))
				buf = append(buf, `,"delta":{"reasoning_content":`...)
				buf = appendString(buf, thought)
				buf = append(buf, `},"logprobs":`...)
				buf = logprobs(buf, lps)
				buf = append(buf, `,"finish_reason":null}]`...)
				buf = tail(buf)
				lps = nil
			}
			// A call, or thoughts, without content have no empty content
			// delta, as a live stream sends none.
			if !calls && thought == "" || content != "" || !isNull(lps) {
				buf = head(buf)
				buf = append(buf, `,"choices":[{"index":`...)
				buf = appendInt(buf, int64(ch.Index))
				buf = append(buf, `,"delta":{"content":`...)
				buf = appendString(buf, content)
				buf = append(buf, `},"logprobs":`...)
				buf = logprobs(buf, lps)
				buf = append(buf, `,"finish_reason":null}]`...)
				buf = tail(buf)
			}
			if calls && ch.Message.FunctionCall != nil {
				// the legacy call: its name, then its arguments
				fc := ch.Message.FunctionCall
				for _, part := range [...]string{`{"name":` + string(appendString(nil, fc.Name)) + `,"arguments":""}`,
					`{"arguments":` + string(appendString(nil, fc.Arguments)) + `}`} {
					buf = head(buf)
					buf = append(buf, `,"choices":[{"index":`...)
					buf = appendInt(buf, int64(ch.Index))
					buf = append(buf, `,"delta":{"function_call":`...)
					buf = append(buf, part...)
					buf = append(buf, `},"logprobs":null,"finish_reason":null}]`...)
					buf = tail(buf)
				}
			} else if calls {
				buf = head(buf)
				buf = append(buf, `,"choices":[{"index":`...)
				buf = appendInt(buf, int64(ch.Index))
				buf = append(buf, `,"delta":{"tool_calls":`...)
				buf = appendToolCalls(buf, ch.Message.ToolCalls, true)
				buf = append(buf, `},"logprobs":null,"finish_reason":null}]`...)
				buf = tail(buf)
			}
		} else {
			text := ""
			if ch.Text != nil {
				text = *ch.Text
			}
			buf = head(buf)
			buf = append(buf, `,"choices":[{"text":`...)
			buf = appendString(buf, text)
			buf = append(buf, `,"index":`...)
			buf = appendInt(buf, int64(ch.Index))
			buf = append(buf, `,"logprobs":`...)
			buf = logprobs(buf, ch.Logprobs)
			buf = append(buf, `,"finish_reason":null}]`...)
			buf = tail(buf)
		}
	}
	for _, ch := range a.Choices {
		buf = head(buf)
		if j.kind == kindChat {
			buf = append(buf, `,"choices":[{"index":`...)
			buf = appendInt(buf, int64(ch.Index))
			buf = append(buf, `,"delta":{},"logprobs":null,"finish_reason":`...)
		} else {
			buf = append(buf, `,"choices":[{"text":"","index":`...)
			buf = appendInt(buf, int64(ch.Index))
			buf = append(buf, `,"logprobs":null,"finish_reason":`...)
		}
		buf = appendString(buf, ch.FinishReason)
		buf = append(buf, "}]"...)
		buf = tail(buf)
	}
	if j.includeUsage {
		buf = head(buf)
		buf = append(buf, `,"choices":[],"usage":`...)
		buf = appendUsage(buf, usage{a.Usage.PromptTokens, a.Usage.CompletionTokens, a.Usage.PromptTokensDetails.CachedTokens,
			a.Usage.CompletionTokensDetails.ReasoningTokens})
		buf = append(buf, "}\n\n"...)
	}
	buf = append(buf, "data: [DONE]\n\n"...)
	setEventStream(c)
	return c.Send(buf)
}
