package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"

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

// storedVersion marks a stored answer that begins with the fingerprint of
// its request; an answer stored without one begins with '{'.
const storedVersion = 1

// requestFingerprint identifies what an idempotent request asks for: its
// parameters, whatever their order and spacing, except whether the answer
// is streamed (a streamed retry may replay a non-streamed answer).
func requestFingerprint(body []byte) [sha256.Size]byte {
	// Numbers keep their digits: as float64s, two seeds past 2^53 (or any
	// two integers that round to the same double) would be one request.
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return sha256.Sum256(body)
	}
	delete(m, "stream")
	delete(m, "stream_options")
	canon, err := json.Marshal(m) // object keys sorted
	if err != nil {
		return sha256.Sum256(body)
	}
	return sha256.Sum256(canon)
}

// storedResponse is what the ledger keeps of an idempotent answer: its
// request's fingerprint, then the answer.
func storedResponse(fp [sha256.Size]byte, answer []byte) []byte {
	out := make([]byte, 0, 1+len(fp)+len(answer))
	out = append(out, storedVersion)
	out = append(out, fp[:]...)
	return append(out, answer...)
}

// splitStored returns a stored answer's request fingerprint (nil for an
// answer stored before fingerprints) and the answer.
func splitStored(b []byte) (*[sha256.Size]byte, []byte) {
	if len(b) > sha256.Size && b[0] == storedVersion {
		fp := [sha256.Size]byte(b[1 : 1+sha256.Size])
		return &fp, b[1+sha256.Size:]
	}
	return nil, b
}

// replay answers a request whose Idempotency-Key the ledger already holds,
// without running or charging it again. The stored answer is the complete
// non-streamed body; a streamed retry gets it back as a short stream (one
// content chunk per choice), so streaming clients can retry too.
func (s *Server) replay(c *fiber.Ctx, j *job, ev *nozzle.UsageEvent, fp [sha256.Size]byte) error {
	if len(ev.Response) == 0 {
		return nozzle.Errorf(nozzle.ECONFLICT, "This Idempotency-Key was already used and its answer is not stored; use a new key.").WithReason("idempotency_key_reused")
	}
	was, answer := splitStored(ev.Response)
	if was != nil && *was != fp {
		return nozzle.Errorf(nozzle.ECONFLICT, "This Idempotency-Key was already used with other parameters; a retry must send the same request, a new request a new key.").WithReason("idempotency_key_reused")
	}
	var a storedAnswer
	if err := json.Unmarshal(answer, &a); err != nil {
		return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: err}
	}
	want := "chat.completion"
	if j.kind == kindText {
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
			calls := ch.Message != nil && len(ch.Message.ToolCalls) > 0
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
			if calls {
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
	c.Set(fiber.HeaderContentType, "text/event-stream; charset=utf-8")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	return c.Send(buf)
}
