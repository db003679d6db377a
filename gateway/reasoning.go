package gateway

import "strings"

// Reasoning models (nozzle.ModelInfo.Reasoning: Qwen3, QwQ, DeepSeek-R1
// and its distills) think before they answer, between <think> and
// </think>. A chat completion gives the thoughts apart from the answer,
// as vLLM's reasoning parsers and DeepSeek's API do: in
// message.reasoning_content (streamed: delta.reasoning_content), the
// answer alone in content, and tool calls read from the answer only. The
// thoughts open at the start of the completion — where the prompt opened
// them (nozzle.Chunk.ThoughtsOpen), or where the completion begins, after
// any space, with <think> — and end at the first </think>; a completion
// that does not open with them is all answer. The tags are in neither
// part, nor is the space around the thoughts or before the answer.

const space = " \t\r\n"

// Where a thoughtSplit is.
const (
	splitUndecided = iota // only space and a beginning of <think> so far
	splitThinking         // in the thoughts
	splitAfter            // past </think>: space before the answer is dropped
	splitAnswer           // in the answer
)

// thoughtSplit parts a reasoning model's completion, piece by piece as it
// streams, into thoughts and answer, holding back a tail that may grow
// into a tag (a tag split across pieces never goes out in part) or space
// that may end the thoughts. Split at once, a whole completion gives what
// its pieces give, concatenated.
type thoughtSplit struct {
	state int
	begun bool   // thoughts' text has come (their leading space is dropped)
	held  string // text not yet given out
}

// newThoughtSplit starts a split; open says the prompt opened the thoughts.
func newThoughtSplit(open bool) thoughtSplit {
	if open {
		return thoughtSplit{state: splitThinking}
	}
	return thoughtSplit{}
}

// add takes the next piece of the completion and returns the thoughts and
// the answer that may go out now.
func (s *thoughtSplit) add(text string) (thought, answer string) {
	s.held += text
	for {
		switch s.state {
		case splitUndecided:
			t := strings.TrimLeft(s.held, space)
			if len(t) < len(thinkOpen) && strings.HasPrefix(thinkOpen, t) {
				return thought, answer // may still open the thoughts
			}
			if !strings.HasPrefix(t, thinkOpen) {
				s.state = splitAnswer
				continue
			}
			s.state, s.held = splitThinking, t[len(thinkOpen):]
		case splitThinking:
			if !s.begun {
				if s.held = strings.TrimLeft(s.held, space); s.held == "" {
					return thought, answer
				}
				s.begun = true
			}
			if j := strings.Index(s.held, thinkClose); j >= 0 {
				thought += strings.TrimRight(s.held[:j], space)
				s.state, s.held = splitAfter, s.held[j+len(thinkClose):]
				continue
			}
			// Held: space at the end, with a beginning of </think> after it.
			keep := suffixPrefix(s.held, thinkClose)
			end := len(strings.TrimRight(s.held[:len(s.held)-keep], space))
			thought += s.held[:end]
			s.held = s.held[end:]
			return thought, answer
		case splitAfter:
			if s.held = strings.TrimLeft(s.held, space); s.held == "" {
				return thought, answer
			}
			s.state = splitAnswer
		default: // splitAnswer
			answer += s.held
			s.held = ""
			return thought, answer
		}
	}
}

// end returns what is held at the end of the completion: thoughts that
// never closed end with the text held, space aside; text that never
// decided is answer.
func (s *thoughtSplit) end() (thought, answer string) {
	h := s.held
	s.held = ""
	switch s.state {
	case splitUndecided, splitAnswer:
		return "", h
	case splitThinking:
		return strings.TrimRight(h, space), ""
	}
	return "", ""
}

// splitThoughts parts a whole completion.
func splitThoughts(text string, open bool) (thought, answer string) {
	s := newThoughtSplit(open)
	thought, answer = s.add(text)
	t, a := s.end()
	return thought + t, answer + a
}
