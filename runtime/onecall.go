package runtime

import (
	"slices"

	nozzle "github.com/nozzle-ai/nozzle"
)

// One call (GenerateRequest.OneCall): a chat completion that offers tools
// and allows one call ends once its first call is complete. Two
// nozzle.FirstCall matchers read the completion: the engine goroutine's
// (callEnd) reads every token drawn, as the stream decoder spells it, and
// finishes the sequence with the token that completes the call, as an
// end token would ("stop"; no more tokens are drawn, its KV blocks are
// freed); the request's goroutine's (textStream.call) reads the decoded
// text and cuts it after the call, as a stop sequence's match, so that
// the text ends with the call even where that token's text goes on (a
// "};" or "}]" token) and a stream sends what the whole answer holds.
// The forced calls' constraints need nothing of it, but for Mistral's v3
// array, which is then one call long (toolCallConstraint); strict
// functions' calls end with the first as any call does.

// callEnd finds the end of a sequence's first call in its tokens.
type callEnd struct {
	m *nozzle.FirstCall
	// text is a token's text as the stream decoder gives it (nil for a
	// special token it skips)
	text func(id int) []byte
}

// feed reads a token drawn; it reports whether the first call is
// complete.
func (c *callEnd) feed(tok int32) bool {
	if c == nil {
		return false
	}
	return c.m.AddBytes(c.text(int(tok)))
}

// firstCall returns the matcher of req's first call, nil where req does
// not allow one call only, offers no tools or its model writes no calls.
// reasoning and open are the sequence's (a reasoning model's chat, its
// prompt opening the thoughts).
func (r *Runtime) firstCall(req *nozzle.GenerateRequest, reasoning, open bool) *nozzle.FirstCall {
	if !req.OneCall || len(req.Tools) == 0 || req.Messages == nil {
		return nil
	}
	var thoughts *nozzle.ThinkTags
	switch {
	case reasoning:
		thoughts = &r.info.ReasoningTags
	case r.info.ToolFormat == nozzle.ToolFormatHermes:
		// the gateway reads no call in thoughts that open a Hermes answer
		thoughts = &nozzle.DefaultThinkTags
	}
	return nozzle.NewFirstCall(r.info.ToolFormat, thoughts, open)
}

// keptTokens are the special tokens the stream decoder keeps in the text
// of req's completion: a reasoning model's thought tags, the tool
// formats' control tokens where req offers tools.
func (r *Runtime) keptTokens(req *nozzle.GenerateRequest, reasoning bool) []int {
	var keep []int
	if reasoning {
		keep = append(keep, r.keepThoughts...)
	}
	if len(req.Tools) > 0 {
		keep = append(keep, r.keepTools...)
	}
	return keep
}

// newCallEnd returns the engine goroutine's matcher of req's first call,
// nil where it has none (firstCall).
func (r *Runtime) newCallEnd(req *nozzle.GenerateRequest, reasoning, open bool) *callEnd {
	m := r.firstCall(req, reasoning, open)
	if m == nil {
		return nil
	}
	keep := r.keptTokens(req, reasoning)
	return &callEnd{m: m, text: func(id int) []byte {
		if r.codec.IsSpecial(id) && !slices.Contains(keep, id) {
			return nil
		}
		return r.codec.TokenBytes(id)
	}}
}
