package runtime

import "strings"

// A reasoning model (ModelInfo.Reasoning) thinks before it answers,
// between <think> and </think>. The runtime does not split the thoughts
// from the answer (the gateway does, from the text); it tells where they
// begin (a prompt that opened them, Chunk.ThoughtsOpen) and counts their
// tokens (GenerateResult.ReasoningTokens), which only it sees.

const (
	thinkOpen  = "<think>"
	thinkClose = "</think>"
	space      = " \t\r\n"
)

// opensThoughts reports whether a rendered chat prompt leaves the model
// inside its thoughts: the generation prompt ends with <think> (DeepSeek-R1
// and its distills, Qwen3's thinking-only models), so the completion
// begins with thoughts and no <think> of its own.
func opensThoughts(prompt string) bool {
	return strings.HasSuffix(strings.TrimRight(prompt, space), thinkOpen)
}

// Where a thoughtCounter is.
const (
	thoughtsUndecided = iota // only space and a beginning of <think> so far
	thoughtsIn               // inside the thoughts
	thoughtsDone             // past them, or the completion has none
)

// thoughtCounter counts the tokens of a completion's thoughts as the
// tokens come: those up to and including the one whose text completes
// the first </think> after the thoughts open, where they open at the
// start of the completion (the prompt opened them, or the completion
// begins, after any space, with <think>). The gateway reads the same
// text the same way.
type thoughtCounter struct {
	state int
	// text held: while undecided, all so far; inside the thoughts, an end
	// that may begin </think>
	held string
	n    int // tokens of the thoughts
}

func newThoughtCounter(open bool) *thoughtCounter {
	c := &thoughtCounter{}
	if open {
		c.state = thoughtsIn
	}
	return c
}

// add counts one token, whose text (as the stream decoder gave it, maybe
// "") is text.
func (c *thoughtCounter) add(text string) {
	switch c.state {
	case thoughtsUndecided:
		c.n++
		c.held += text
		t := strings.TrimLeft(c.held, space)
		if len(t) < len(thinkOpen) && strings.HasPrefix(thinkOpen, t) {
			return // may still open them
		}
		if !strings.HasPrefix(t, thinkOpen) {
			c.state, c.held, c.n = thoughtsDone, "", 0
			return
		}
		c.state, c.held = thoughtsIn, ""
		c.scan(t[len(thinkOpen):])
	case thoughtsIn:
		c.n++
		c.scan(text)
	}
}

// scan looks for the end of the thoughts in the next text inside them.
func (c *thoughtCounter) scan(text string) {
	s := c.held + text
	if strings.Contains(s, thinkClose) {
		c.state, c.held = thoughtsDone, ""
		return
	}
	keep := 0 // the longest end of s that begins </think>
	for k := min(len(thinkClose)-1, len(s)); k > 0; k-- {
		if strings.HasSuffix(s, thinkClose[:k]) {
			keep = k
			break
		}
	}
	c.held = s[len(s)-keep:]
}

// tokens returns the thoughts' tokens so far: all the tokens counted
// when the thoughts opened, none when they did not (or not yet).
func (c *thoughtCounter) tokens() int {
	if c.state == thoughtsUndecided {
		return 0
	}
	return c.n
}
