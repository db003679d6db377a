package gateway

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/nozzle-ai/nozzle"
)

// Hand-written JSON encoding of the hot responses (completions, chunks,
// errors): no reflection, one growing buffer per answer.

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// U+2028 and U+2029 are escaped so the output is also valid JavaScript.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendNullableString(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, s)
}

// appendFloat appends a JSON number; a log-probability of -Inf (or NaN)
// becomes -9999, as OpenAI reports it.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		if math.IsInf(f, 1) {
			return append(dst, "9999"...)
		}
		return append(dst, "-9999"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

func appendBytesList(dst []byte, b []int) []byte {
	if b == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, x := range b {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, int64(x), 10)
	}
	return append(dst, ']')
}

// utf8Bytes returns the bytes of a token's text, as OpenAI's "bytes".
func utf8Bytes(t nozzle.TokenLogprob) []int {
	if t.Bytes != nil {
		return t.Bytes
	}
	b := make([]int, len(t.Token))
	for i := 0; i < len(t.Token); i++ {
		b[i] = int(t.Token[i])
	}
	return b
}

// appendChatLogprobs appends a chat choice's "logprobs" object.
func appendChatLogprobs(dst []byte, lps []nozzle.TokenLogprob) []byte {
	dst = append(dst, `{"content":[`...)
	for i, t := range lps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"token":`...)
		dst = appendString(dst, t.Token)
		dst = append(dst, `,"logprob":`...)
		dst = appendFloat(dst, t.Logprob)
		dst = append(dst, `,"bytes":`...)
		dst = appendBytesList(dst, utf8Bytes(t))
		dst = append(dst, `,"top_logprobs":[`...)
		for j, a := range t.Top {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"token":`...)
			dst = appendString(dst, a.Token)
			dst = append(dst, `,"logprob":`...)
			dst = appendFloat(dst, a.Logprob)
			dst = append(dst, `,"bytes":`...)
			dst = appendBytesList(dst, utf8Bytes(nozzle.TokenLogprob{Token: a.Token, Bytes: a.Bytes}))
			dst = append(dst, '}')
		}
		dst = append(dst, "]}"...)
	}
	return append(dst, `],"refusal":null}`...)
}

// textOffsets turns tokens' byte offsets in a completion's text
// (TokenLogprob.Offset) into a legacy completion's text_offset: characters
// from the start of the choice's text, the echoed prompt (base characters)
// included. It counts on from the last offset asked for.
type textOffsets struct {
	base         int
	bytes, runes int
}

func (o *textOffsets) at(text []byte, off int) int {
	off = min(max(off, 0), len(text))
	if off < o.bytes {
		o.bytes, o.runes = 0, 0
	}
	o.runes += utf8.RuneCount(text[o.bytes:off])
	o.bytes = off
	return o.base + o.runes
}

// lpPart is a run of tokens of a legacy completion choice's logprobs:
// their text (holding every token of lps) and its offsets. A prompt's
// first token (first) has no logprob: null, as OpenAI answers.
type lpPart struct {
	lps   []nozzle.TokenLogprob
	text  []byte
	offs  *textOffsets
	first bool
}

// promptPart is the part of an echoed prompt's tokens.
func promptPart(p *nozzle.Chunk) lpPart {
	return lpPart{lps: p.Logprobs, text: []byte(p.Text), offs: &textOffsets{}, first: true}
}

// appendTextLogprobs appends a legacy completion choice's "logprobs"
// object over its parts (the echoed prompt's, then the completion's).
func appendTextLogprobs(dst []byte, parts ...lpPart) []byte {
	each := func(f func(t nozzle.TokenLogprob, null bool, p *lpPart)) {
		n := 0
		for pi := range parts {
			p := &parts[pi]
			for i, t := range p.lps {
				if n > 0 {
					dst = append(dst, ',')
				}
				n++
				f(t, p.first && i == 0, p)
			}
		}
	}
	dst = append(dst, `{"tokens":[`...)
	each(func(t nozzle.TokenLogprob, _ bool, _ *lpPart) { dst = appendString(dst, t.Token) })
	dst = append(dst, `],"token_logprobs":[`...)
	each(func(t nozzle.TokenLogprob, null bool, _ *lpPart) {
		if null {
			dst = append(dst, "null"...)
		} else {
			dst = appendFloat(dst, t.Logprob)
		}
	})
	dst = append(dst, `],"top_logprobs":[`...)
	each(func(t nozzle.TokenLogprob, null bool, _ *lpPart) {
		if null {
			dst = append(dst, "null"...)
			return
		}
		// The chosen token is always among them (as OpenAI's legacy
		// completions do: up to logprobs + 1 entries).
		dst = append(dst, '{')
		chosen := false
		for j, a := range t.Top {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, a.Token)
			dst = append(dst, ':')
			dst = appendFloat(dst, a.Logprob)
			chosen = chosen || a.Token == t.Token
		}
		if !chosen {
			if len(t.Top) > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, t.Token)
			dst = append(dst, ':')
			dst = appendFloat(dst, t.Logprob)
		}
		dst = append(dst, '}')
	})
	dst = append(dst, `],"text_offset":[`...)
	each(func(t nozzle.TokenLogprob, _ bool, p *lpPart) {
		dst = strconv.AppendInt(dst, int64(p.offs.at(p.text, t.Offset)), 10)
	})
	return append(dst, "]}"...)
}

// usage is the token account of an answer; cached counts the prompt tokens
// the runtime's prefix cache held, reasoning the completion tokens that
// were a reasoning model's thoughts.
type usage struct {
	prompt, completion, cached, reasoning int64
}

func appendUsage(dst []byte, u usage) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = appendInt(dst, u.prompt)
	dst = append(dst, `,"completion_tokens":`...)
	dst = appendInt(dst, u.completion)
	dst = append(dst, `,"total_tokens":`...)
	dst = appendInt(dst, u.prompt+u.completion)
	// The details objects always, as OpenAI sends them (clients read
	// usage.prompt_tokens_details.cached_tokens without a nil check).
	dst = append(dst, `,"prompt_tokens_details":{"cached_tokens":`...)
	dst = appendInt(dst, u.cached)
	dst = append(dst, `,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":`...)
	dst = appendInt(dst, u.reasoning)
	return append(dst, `,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
}

// appendHead appends the fields every completion object starts with.
// fingerprint is the system_fingerprint: the base model's weights, "" when
// unknown (null).
func appendHead(dst []byte, id, object string, created int64, model, fingerprint string) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, id)
	dst = append(dst, `,"object":"`...)
	dst = append(dst, object...)
	dst = append(dst, `","created":`...)
	dst = appendInt(dst, created)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, model)
	dst = append(dst, `,"system_fingerprint":`...)
	return appendNullableString(dst, fingerprint)
}

// systemFingerprint names a model's weights as OpenAI's system_fingerprint
// names a backend configuration: answers with the same one (and seed) are
// reproducible. "" for a runtime that reports no fingerprint.
func systemFingerprint(info nozzle.ModelInfo) string {
	if len(info.Fingerprint) < 12 {
		return ""
	}
	return "fp_" + info.Fingerprint[:12]
}
