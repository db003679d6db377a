package nozzle

import "strings"

// Reasoning models (ModelInfo.Reasoning) think before they answer,
// between two tags (ModelInfo.ReasoningTags): <think> and </think> (Qwen3,
// QwQ, DeepSeek-R1 and its distills), or [THINK] and [/THINK] (Mistral's
// Magistral). The thoughts open at the start of the completion — where
// the prompt opened them (Chunk.ThoughtsOpen, ThinkTags.OpenedBy), or
// where the completion begins, after any space, with the opening tag —
// and end at the first closing tag; a completion that does not open with
// them is all answer. The runtime counts the thoughts' tokens
// (ThoughtCounter, GenerateResult.ReasoningTokens); the gateway gives the
// thoughts apart from the answer (ThoughtSplit, reasoning_content). Both
// read the text with the one ThoughtSplit below.

// ThinkTags are the tags between which a reasoning model thinks. The zero
// value stands for DefaultThinkTags (a runtime of an earlier version
// reports no tags: its models think between <think> and </think>).
type ThinkTags struct {
	Open  string `json:"open"`
	Close string `json:"close"`
}

var (
	// DefaultThinkTags are Qwen3's, QwQ's and DeepSeek-R1's.
	DefaultThinkTags = ThinkTags{Open: "<think>", Close: "</think>"}
	// MistralThinkTags are Magistral's, special tokens of its vocabulary.
	MistralThinkTags = ThinkTags{Open: "[THINK]", Close: "[/THINK]"}
)

// thinkSpace is the space dropped around the thoughts and before the
// answer.
const thinkSpace = " \t\r\n"

// orDefault returns the tags, DefaultThinkTags for tags with one missing.
func (t ThinkTags) orDefault() ThinkTags {
	if t.Open == "" || t.Close == "" {
		return DefaultThinkTags
	}
	return t
}

// OpenedBy reports whether a rendered chat prompt leaves the model inside
// its thoughts: the generation prompt ends with the opening tag
// (DeepSeek-R1 and its distills, Qwen3's thinking-only models), so the
// completion begins with thoughts and no tag of its own.
func (t ThinkTags) OpenedBy(prompt string) bool {
	return strings.HasSuffix(strings.TrimRight(prompt, thinkSpace), t.orDefault().Open)
}

// OpenEnd looks at the beginning of a completion: it returns where the
// opening tag ends in text (after any space before it) where the
// completion opens with thoughts, 0 where it does not, and -1 where text
// cannot tell yet (it is space and a beginning of the tag, all of it).
func (t ThinkTags) OpenEnd(text string) int {
	open := t.orDefault().Open
	rest := strings.TrimLeft(text, thinkSpace)
	switch {
	case len(rest) < len(open) && strings.HasPrefix(open, rest):
		return -1
	case strings.HasPrefix(rest, open):
		return len(text) - len(rest) + len(open)
	}
	return 0
}

// PartialTag returns the length of the longest end of h that begins tag
// (shorter than tag): a tail that may grow into the tag, which a stream
// holds back.
func PartialTag(h, tag string) int {
	for n := min(len(tag)-1, len(h)); n > 0; n-- {
		if strings.HasSuffix(h, tag[:n]) {
			return n
		}
	}
	return 0
}

// Where a ThoughtSplit is.
const (
	splitUndecided = iota // only space and a beginning of the opening tag so far
	splitThinking         // in the thoughts
	splitAfter            // past the closing tag: space before the answer is dropped
	splitAnswer           // in the answer after the thoughts
	splitNone             // the completion has no thoughts: all answer
)

// ThoughtSplit parts a reasoning model's completion, piece by piece as
// it streams, into thoughts and answer, holding back a tail that may grow
// into a tag (a tag split across pieces never goes out in part) or space
// that may end the thoughts. Split at once, a whole completion gives what
// its pieces give, concatenated. The tags are in neither part, nor is the
// space around the thoughts or before the answer. The zero value is a
// split of a completion whose prompt did not open the thoughts, with
// DefaultThinkTags.
type ThoughtSplit struct {
	tags  ThinkTags
	state int
	begun bool   // thoughts' text has come (their leading space is dropped)
	held  string // text not yet given out
}

// NewThoughtSplit starts a split; open says the prompt opened the
// thoughts.
func NewThoughtSplit(open bool, tags ThinkTags) ThoughtSplit {
	s := ThoughtSplit{tags: tags.orDefault()}
	if open {
		s.state = splitThinking
	}
	return s
}

// Add takes the next piece of the completion and returns the thoughts
// and the answer that may go out now.
func (s *ThoughtSplit) Add(text string) (thought, answer string) {
	tags := s.tags.orDefault()
	s.held += text
	for {
		switch s.state {
		case splitUndecided:
			n := tags.OpenEnd(s.held)
			if n < 0 {
				return thought, answer // may still open the thoughts
			}
			if n == 0 {
				s.state = splitNone
				continue
			}
			s.state, s.held = splitThinking, s.held[n:]
		case splitThinking:
			if !s.begun {
				if s.held = strings.TrimLeft(s.held, thinkSpace); s.held == "" {
					return thought, answer
				}
				s.begun = true
			}
			if j := strings.Index(s.held, tags.Close); j >= 0 {
				thought += strings.TrimRight(s.held[:j], thinkSpace)
				s.state, s.held = splitAfter, s.held[j+len(tags.Close):]
				continue
			}
			// Held: space at the end, with a beginning of the closing
			// tag after it.
			keep := PartialTag(s.held, tags.Close)
			end := len(strings.TrimRight(s.held[:len(s.held)-keep], thinkSpace))
			thought += s.held[:end]
			s.held = s.held[end:]
			return thought, answer
		case splitAfter:
			if s.held = strings.TrimLeft(s.held, thinkSpace); s.held == "" {
				return thought, answer
			}
			s.state = splitAnswer
		default: // splitAnswer, splitNone
			answer += s.held
			s.held = ""
			return thought, answer
		}
	}
}

// End returns what is held at the end of the completion: thoughts that
// never closed end with the text held, space aside; text that never
// decided is answer.
func (s *ThoughtSplit) End() (thought, answer string) {
	h := s.held
	s.held = ""
	switch s.state {
	case splitUndecided, splitAnswer, splitNone:
		return "", h
	case splitThinking:
		return strings.TrimRight(h, thinkSpace), ""
	}
	return "", ""
}

// Opened reports whether the completion has opened its thoughts so far
// (they may have ended since).
func (s *ThoughtSplit) Opened() bool {
	return s.state != splitUndecided && s.state != splitNone
}

// Ended reports whether no more of the completion is thought: the
// thoughts have ended, or the completion has none.
func (s *ThoughtSplit) Ended() bool {
	return s.state != splitUndecided && s.state != splitThinking
}

// SplitThoughts parts a whole completion.
func SplitThoughts(text string, open bool, tags ThinkTags) (thought, answer string) {
	s := NewThoughtSplit(open, tags)
	thought, answer = s.Add(text)
	t, a := s.End()
	return thought + t, answer + a
}

// ThoughtCounter counts the tokens of a completion's thoughts as the
// tokens come: those added while the thoughts had not ended, up to and
// including the one whose text completes the closing tag, where the
// thoughts open (a tag split across tokens counts at the token that
// completes it); none where the completion has no thoughts, or has not
// told yet. It reads the text as ThoughtSplit does.
type ThoughtCounter struct {
	split ThoughtSplit
	n     int // tokens added before the thoughts ended
}

// NewThoughtCounter starts a count; open says the prompt opened the
// thoughts.
func NewThoughtCounter(open bool, tags ThinkTags) *ThoughtCounter {
	return &ThoughtCounter{split: NewThoughtSplit(open, tags)}
}

// Add counts one token, whose text (as the stream decoder gave it, maybe
// "") is text.
func (c *ThoughtCounter) Add(text string) {
	if c.split.Ended() {
		return
	}
	c.n++
	c.split.Add(text)
}

// Tokens returns the thoughts' tokens so far: all the tokens counted
// when the thoughts opened, none when they did not (or not yet).
func (c *ThoughtCounter) Tokens() int {
	if !c.split.Opened() {
		return 0
	}
	return c.n
}
