package nozzle_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// magistral writes a text of <think> tags with Magistral's.
var magistral = strings.NewReplacer("<think>", "[THINK]", "</think>", "[/THINK]", "<th", "[TH", "</th", "[/TH", "</", "[/", "ink>", "INK]")

// streamThoughts parts a completion given in pieces as a stream does: the
// thoughts and the answer put together, and each piece given out.
func streamThoughts(pieces []string, open bool, tags nozzle.ThinkTags) (thought, answer string, out []string) {
	s := nozzle.NewThoughtSplit(open, tags)
	for _, p := range pieces {
		t, a := s.Add(p)
		thought, answer = thought+t, answer+a
		out = append(out, t, a)
	}
	t, a := s.End()
	out = append(out, t, a)
	return thought + t, answer + a, out
}

// TestThoughtSplit: the thoughts and the answer of a completion, whole or
// in pieces: the tags and the space around the thoughts are in neither,
// a tag split across pieces never goes out in part, thoughts the prompt
// opened end at the closing tag, thoughts that never close are all there
// is, and a completion that does not open with them is all answer; with
// either model's tags.
func TestThoughtSplit(t *testing.T) {
	for _, tc := range []struct {
		name              string
		open              bool
		pieces            []string
		thought, answer   string
		opened, ended     bool // at the end
		noMagistralPieces bool // the pieces cut <think> where [THINK] has no such cut
	}{
		{"Tagged", false, []string{"<think>", "\nI should", " greet.\n", "</think>", "\n\nHello", "!"}, "I should greet.", "Hello!", true, true, false},
		{"TagsSplit", false, []string{" <thi", "nk>\npl", "an\n</th", "ink>\n", "\nHi", " there"}, "plan", "Hi there", true, true, true},
		{"CloseSplitEveryByte", false, []string{"<think>", "a ", "<", "/", "t", "h", "i", "n", "k", ">", "b"}, "a", "b", true, true, true},
		{"OpenedByPrompt", true, []string{"plan", " more\n", "</think>\n\n", "Answer"}, "plan more", "Answer", true, true, false},
		{"OpenedUnclosed", true, []string{"a", " b", " c "}, "a b c", "", true, false, false},
		{"UnclosedEndsInPartialTag", true, []string{"hm ", "</th"}, "hm </th", "", true, false, false},
		{"EmptyThoughts", false, []string{"<think>\n\n</think>\n\n", "Hi"}, "", "Hi", true, true, false},
		{"NoThoughts", false, []string{"Hello", " <think>", "there"}, "", "Hello <think>there", false, true, false},
		{"NotATag", false, []string{"<thinking", "> is fine"}, "", "<thinking> is fine", false, true, true},
		{"LessThanAtStart", false, []string{"<", "3 you"}, "", "<3 you", false, true, true},
		{"UndecidedAtEnd", false, []string{" ", "<th"}, "", " <th", false, false, false},
		{"SecondCloseIsAnswer", true, []string{"x", "</think>", "a </think> b"}, "x", "a </think> b", true, true, false},
	} {
		for _, tags := range []nozzle.ThinkTags{nozzle.DefaultThinkTags, nozzle.MistralThinkTags} {
			pieces, thought, answer := tc.pieces, tc.thought, tc.answer
			if tags == nozzle.MistralThinkTags {
				if tc.noMagistralPieces {
					continue
				}
				pieces = make([]string, len(tc.pieces))
				for i, p := range tc.pieces {
					pieces[i] = magistral.Replace(p)
				}
				thought, answer = magistral.Replace(thought), magistral.Replace(answer)
			}
			t.Run(tc.name+"/"+tags.Open, func(t *testing.T) {
				s := nozzle.NewThoughtSplit(tc.open, tags)
				var gotT, gotA string
				for _, p := range pieces {
					th, a := s.Add(p)
					gotT, gotA = gotT+th, gotA+a
					for _, part := range []string{th, a} {
						for _, tag := range []string{tags.Open, tags.Close} {
							if strings.Contains(part, tag) && !strings.Contains(thought+answer, tag) {
								t.Errorf("piece %q gives out %q", p, part)
							}
						}
					}
				}
				if s.Opened() != tc.opened || s.Ended() != tc.ended {
					t.Errorf("opened %v, ended %v; want %v, %v", s.Opened(), s.Ended(), tc.opened, tc.ended)
				}
				th, a := s.End()
				if gotT, gotA = gotT+th, gotA+a; gotT != thought || gotA != answer {
					t.Errorf("%q: %q %q, want %q %q", pieces, gotT, gotA, thought, answer)
				}
				if wT, wA := nozzle.SplitThoughts(strings.Join(pieces, ""), tc.open, tags); wT != thought || wA != answer {
					t.Errorf("whole: %q %q, want %q %q", wT, wA, thought, answer)
				}
			})
		}
	}
}

// TestThinkTags_Default: no tags (a runtime of an earlier version reports
// none) are <think> and </think>; a model's tags travel as JSON.
func TestThinkTags_Default(t *testing.T) {
	for _, tags := range []nozzle.ThinkTags{{}, {Open: "[THINK]"}} {
		if th, a := nozzle.SplitThoughts("<think>a</think>b", false, tags); th != "a" || a != "b" {
			t.Errorf("%+v: %q %q", tags, th, a)
		}
		if !tags.OpenedBy("x<think>\n") {
			t.Errorf("%+v: not opened by <think>", tags)
		}
	}
	var zero nozzle.ThoughtSplit
	if th, a := zero.Add("<think>a</think>b"); th != "a" || a != "b" {
		t.Errorf("zero split: %q %q", th, a)
	}

	b, err := json.Marshal(nozzle.ModelInfo{Reasoning: true, ReasoningTags: nozzle.MistralThinkTags})
	if err != nil || !strings.Contains(string(b), `"reasoning_tags":{"open":"[THINK]","close":"[/THINK]"}`) {
		t.Fatalf("%s %v", b, err)
	}
	var info nozzle.ModelInfo
	if err := json.Unmarshal(b, &info); err != nil || info.ReasoningTags != nozzle.MistralThinkTags {
		t.Errorf("%+v %v", info, err)
	}
	b, _ = json.Marshal(nozzle.ModelInfo{})
	if strings.Contains(string(b), "reasoning_tags") {
		t.Errorf("no tags: %s", b)
	}
}

// TestThoughtCounter: the tokens of a completion's thoughts are those up
// to and including the one that completes the first closing tag, where
// the thoughts open at the start (opened by the prompt, or by the
// completion after any space); a tag split across tokens counts at the
// token that completes it; a completion without thoughts has none.
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
			c := nozzle.NewThoughtCounter(tc.open, nozzle.DefaultThinkTags)
			for _, s := range tc.tokens {
				c.Add(s)
			}
			if got := c.Tokens(); got != tc.want {
				t.Errorf("%q: %d thought tokens, want %d", strings.Join(tc.tokens, "|"), got, tc.want)
			}
			// Magistral's tags, where the tokens cut them alike.
			if tc.name == "TaggedAfterSpace" || tc.name == "NotATag" {
				return
			}
			m := nozzle.NewThoughtCounter(tc.open, nozzle.MistralThinkTags)
			for _, s := range tc.tokens {
				m.Add(magistral.Replace(s))
			}
			if got := m.Tokens(); got != tc.want {
				t.Errorf("[THINK]: %q: %d thought tokens, want %d", magistral.Replace(strings.Join(tc.tokens, "|")), got, tc.want)
			}
		})
	}
}

func TestThinkTags_OpenedBy(t *testing.T) {
	for prompt, want := range map[string]bool{
		"<｜User｜>hi<｜Assistant｜><think>\n":                             true,
		"<|im_start|>assistant\n<think>\n":                             true,
		"<|im_start|>assistant\n<think>":                               true,
		"<|im_start|>assistant\n":                                      false,
		"<|im_start|>assistant\n<think>\n\n</think>\n\n":               false,
		"<|im_start|>user\n<think><|im_end|>\n<|im_start|>assistant\n": false,
		"": false,
	} {
		if got := nozzle.DefaultThinkTags.OpenedBy(prompt); got != want {
			t.Errorf("OpenedBy(%q) = %v, want %v", prompt, got, want)
		}
		m := magistral.Replace(prompt)
		if got := nozzle.MistralThinkTags.OpenedBy(m); got != want {
			t.Errorf("[THINK]: OpenedBy(%q) = %v, want %v", m, got, want)
		}
	}
	if nozzle.MistralThinkTags.OpenedBy("[INST]hi[/INST]<think>") {
		t.Error("Magistral's thoughts opened by <think>")
	}
}

func TestThinkTags_OpenEnd(t *testing.T) {
	for text, want := range map[string]int{
		"":                 -1,
		" \n":              -1,
		" <thi":            -1,
		"<think>":          7,
		"\n<think>a":       8,
		"<thinking>":       0,
		"a<think>":         0,
		"<3":               0,
		"<think></think>x": 7,
	} {
		if got := nozzle.DefaultThinkTags.OpenEnd(text); got != want {
			t.Errorf("OpenEnd(%q) = %d, want %d", text, got, want)
		}
	}
}

// FuzzThoughtSplit: a completion parted as it streams, in any pieces,
// gives what it gives parted whole; no piece given out holds a part of a
// tag that the whole's parts do not hold; the thoughts and answer come
// from the text in order, the tags and the space around the thoughts
// aside; a counter of one token a piece counts the pieces up to the one
// that ends the thoughts.
func FuzzThoughtSplit(f *testing.F) {
	f.Add("<think>\nplan\n</think>\n\nHi", false, false, uint64(3))
	f.Add(" <think>a </think> b", false, false, uint64(0x1234))
	f.Add("x</think>y", true, false, uint64(7))
	f.Add("<thi", false, false, uint64(1))
	f.Add("a\n</th", true, false, uint64(99))
	f.Add("[THINK]plan[/THINK]Hi", false, true, uint64(5))
	f.Add(" [THI", false, true, uint64(2))
	f.Fuzz(func(t *testing.T, text string, open, mistral bool, cuts uint64) {
		tags := nozzle.DefaultThinkTags
		if mistral {
			tags = nozzle.MistralThinkTags
		}
		var pieces []string
		rest := text
		for rest != "" {
			n := 1 + int(cuts%5)
			cuts = cuts/5 + cuts%7
			n = min(n, len(rest))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		wantT, wantA := nozzle.SplitThoughts(text, open, tags)
		gotT, gotA, out := streamThoughts(pieces, open, tags)
		if gotT != wantT || gotA != wantA {
			t.Fatalf("%q in %q: streamed %q %q, whole %q %q", text, pieces, gotT, gotA, wantT, wantA)
		}
		for _, part := range out {
			if strings.Contains(part, tags.Open) && !strings.Contains(wantT+wantA, tags.Open) ||
				strings.Contains(part, tags.Close) && !strings.Contains(wantT+wantA, tags.Close) {
				t.Fatalf("%q in %q: a piece %q holds a tag", text, pieces, part)
			}
		}
		// The parts are the text's, in order, tags and space aside.
		strip := func(s string) string {
			s = strings.NewReplacer(tags.Open, "", tags.Close, "").Replace(s)
			return strings.Join(strings.Fields(s), "")
		}
		if strip(wantT)+strip(wantA) != strip(text) && !strings.Contains(wantA, tags.Close) && !strings.Contains(wantT, tags.Open) {
			t.Fatalf("%q: parts %q %q", text, wantT, wantA)
		}
		// The counter, one token a piece: the pieces up to the one that
		// completes the closing tag where the thoughts open, none where
		// they do not.
		start, opened := 0, open
		if n := tags.OpenEnd(text); !open && n > 0 {
			start, opened = n, true
		}
		want := 0
		if opened {
			want = len(pieces)
			if j := strings.Index(text[start:], tags.Close); j >= 0 {
				want = 0
				for at := 0; at < start+j+len(tags.Close); want++ {
					at += len(pieces[want])
				}
			}
		}
		c := nozzle.NewThoughtCounter(open, tags)
		for _, p := range pieces {
			c.Add(p)
		}
		if got := c.Tokens(); got != want {
			t.Fatalf("%q in %q: %d thought tokens, want %d", text, pieces, got, want)
		}
	})
}
