package runtime

import (
	"strings"
	"testing"
)

// TestThoughtCounter: the tokens of a completion's thoughts are those up
// to and including the one that completes the first </think>, where the
// thoughts open at the start (opened by the prompt, or by the completion
// after any space); a tag split across tokens counts at the token that
// completes it; a completion without thoughts has none.
func TestThoughtCounter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		open   bool
		tokens []string
		want   int
	}{
		{"OpenClosed", true, []string{"a", "b", "</th", "ink>", "\n\nAnswer"}, 4},
		{"OpenClosedAtOnce", true, []string{"a", "</think>", "x"}, 2},
		{"OpenUnclosed", true, []string{"a", "b", "c"}, 3},
		{"OpenEmptyTokenText", true, []string{"", "a", "</think>"}, 3},
		{"OpenCloseInFirstToken", true, []string{"</think>", "Hi"}, 1},
		{"Tagged", false, []string{"<think>", "\n", "plan", "</think>", "\n\nHi"}, 4},
		{"TaggedAfterSpace", false, []string{" ", "\n<th", "ink>a", "</", "think", ">", "b"}, 6},
		{"TaggedInOneToken", false, []string{"<think>a</think>b", "c"}, 1},
		{"TaggedEmpty", false, []string{"<think>", "\n\n", "</think>", "\n\nHi"}, 3},
		{"TaggedUnclosed", false, []string{"<think>", "a", "b"}, 3},
		{"SecondCloseIsAnswer", false, []string{"<think>", "a", "</think>", "b", "</think>"}, 3},
		{"NoThoughts", false, []string{"Hi", " <think>", "a", "</think>"}, 0},
		{"NotATag", false, []string{"<thi", "s is", " it"}, 0},
		{"UndecidedAtEnd", false, []string{"  ", "<th"}, 0},
		{"Nothing", false, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newThoughtCounter(tc.open)
			for _, s := range tc.tokens {
				c.add(s)
			}
			if got := c.tokens(); got != tc.want {
				t.Errorf("%q: %d thought tokens, want %d", strings.Join(tc.tokens, "|"), got, tc.want)
			}
		})
	}
}

func TestOpensThoughts(t *testing.T) {
	for prompt, want := range map[string]bool{
		"<｜User｜>hi<｜Assistant｜><think>\n":                             true,
		"<|im_start|>assistant\n<think>\n":                             true,
		"<|im_start|>assistant\n<think>":                               true,
		"<|im_start|>assistant\n":                                      false,
		"<|im_start|>assistant\n<think>\n\n</think>\n\n":               false,
		"<|im_start|>user\n<think><|im_end|>\n<|im_start|>assistant\n": false,
		"": false,
	} {
		if got := opensThoughts(prompt); got != want {
			t.Errorf("opensThoughts(%q) = %v, want %v", prompt, got, want)
		}
	}
}
