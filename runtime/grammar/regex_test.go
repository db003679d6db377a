package grammar

import (
	"bytes"
	"encoding/json"
	nozzle "github.com/nozzle-ai/nozzle"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// dfaAccepts runs d over the bytes of s.
func dfaAccepts(d *dfa, s string) bool {
	st := d.start
	for i := 0; i < len(s); i++ {
		t := d.step(st, s[i])
		if t < 0 {
			return false
		}
		st = uint16(t)
	}
	return d.accept[st]
}

// patternAlphabet: pieces random texts are made of (no controls a JSON
// string cannot carry).
var patternAlphabet = []string{"a", "b", "c", "x", "0", "1", "9", "-", "_", ".", " ", "\n", "\t", "A", "Z", "é", "中", "😀", "\"", "\\", "@", ":"}

// TestPattern_AgainstRegexp: the automaton accepts a text exactly when
// Go's regexp finds the pattern in it and its length is within the
// limits, on random texts and the pattern's own generated matches.
func TestPattern_AgainstRegexp(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		pattern        string
		minLen, maxLen int
	}{
		{`abc`, 0, -1}, {`^abc`, 0, -1}, {`abc$`, 0, -1}, {`^abc$`, 0, -1}, {`a|^b|c$`, 0, -1},
		{`^[a-c]+$`, 0, -1}, {`^[a-c]*$`, 2, 4}, {`[0-9]{2}`, 0, 5}, {`^[^a]*$`, 0, -1}, {`x`, 3, -1},
		{`^(a|ab)(c|bcd)$`, 0, -1}, {`^(?:é|😀)+b?$`, 0, -1}, {`^[\p{Han}\p{L}]{1,3}$`, 0, -1},
		{`^\d+(\.\d+)?$`, 0, -1}, {`^\w+@\w+\.\w{2,}$`, 0, -1}, {`a.c`, 0, -1}, {`^$`, 0, -1}, {``, 1, 2},
		{`"\\`, 0, -1}, {`^[\n\t ]+$`, 0, -1}, {`(?:ab)*c`, 0, 6}, {`^(a?){3}a{3}$`, 0, -1},
	} {
		d, err := compilePattern(tc.pattern, false, tc.minLen, tc.maxLen, MaxPatternStates)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		goPat, _ := ecmaToGo(tc.pattern)
		re := regexp.MustCompile(goPat)
		want := func(s string) bool {
			n := utf8.RuneCountInString(s)
			return re.MatchString(s) && n >= tc.minLen && (tc.maxLen < 0 || n <= tc.maxLen)
		}
		texts := []string{""}
		for range 3000 {
			var b strings.Builder
			for range r.IntN(8) {
				b.WriteString(patternAlphabet[r.IntN(len(patternAlphabet))])
			}
			texts = append(texts, b.String())
		}
		g := &gen{r: r}
		for range 300 {
			g.buf.Reset()
			g.patterned(d)
			var s string
			if err := json.Unmarshal(g.buf.Bytes(), &s); err != nil {
				t.Fatalf("%q: generated %q: %v", tc.pattern, g.buf.Bytes(), err)
			}
			texts = append(texts, s)
		}
		for _, s := range texts {
			if got := dfaAccepts(d, s); got != want(s) {
				t.Errorf("%q (length %d to %d) on %q: automaton %v, regexp %v", tc.pattern, tc.minLen, tc.maxLen, s, got, !got)
			}
		}
	}
}

// TestEcmaToGo: ECMA-262 syntax becomes Go's with the same meaning.
func TestEcmaToGo(t *testing.T) {
	for _, tc := range []struct{ in, match, miss string }{
		{`^\s$`, "\u00a0", "x"},
		{`^\S$`, "x", "\u3000"},
		{`^.$`, "é", "\r"},
		{`^\u00e9$`, "é", "e"},
		{`^\uD83D\uDE00$`, "😀", "\U0001F601"},
		{`^a[]b$`, "", "ab"},
		{`^a[^]b$`, "a\nb", "ab"},
		{`^[[]$`, "[", "]"},
		{`^\cJ$`, "\n", "J"},
		{`^\0$`, "\x00", "0"},
		{`^(?<name>x)\/$`, "x/", "x"},
		{`^[\b]$`, "\b", "b"},
		{`^\x41$`, "A", "x41"},
		{`^[\s\d]+$`, "1\u2028", "a"},
	} {
		g, err := ecmaToGo(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		re := regexp.MustCompile(g)
		if tc.match != "" && !re.MatchString(tc.match) {
			t.Errorf("%q (%q) does not match %q", tc.in, g, tc.match)
		}
		if re.MatchString(tc.miss) {
			t.Errorf("%q (%q) matches %q", tc.in, g, tc.miss)
		}
	}
}

// FuzzPattern: any pattern text compiles or is refused with an error —
// never a panic — and one that compiles accepts what Go's regexp of its
// translation finds, on the fuzzer's text.
func FuzzPattern(f *testing.F) {
	for _, p := range []string{`^[a-z]+$`, `a|b`, `(?:x{2,3})?y`, `\d\s\S\w.`, `[^\u00e9]`, `\uD83D\uDE00`, `(?<n>a)`, `[]`, `[^]`, `\p{Greek}`, `(?=a)`, `\1`} {
		f.Add(p, "abc")
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		if len(pattern) > 64 || len(text) > 256 || !utf8.ValidString(text) {
			return
		}
		t0 := time.Now()
		d, err := compilePattern(pattern, false, 0, -1, 512)
		if el := time.Since(t0); el > time.Second {
			t.Fatalf("%q took %v", pattern, el)
		}
		if err != nil {
			return
		}
		g, err := ecmaToGo(pattern)
		if err != nil {
			t.Fatalf("%q compiled, yet its translation failed: %v", pattern, err)
		}
		for i := 0; i < len(text); i++ {
			if !writable(text[i]) {
				return
			}
		}
		re := regexp.MustCompile(g)
		if got, want := dfaAccepts(d, text), re.MatchString(text); got != want {
			t.Fatalf("%q on %q: automaton %v, regexp %v", pattern, text, got, want)
		}
	})
}

// BenchmarkCompilePattern: compiling the automata of a short pattern and
// of the largest format, as a new schema does.
func BenchmarkCompilePattern(b *testing.B) {
	for _, tc := range []struct{ name, pattern string }{{"phone", `^[0-9]{3}-[0-9]{4}$`}, {"ipv6", formatPatterns["ipv6"]}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := compilePattern(tc.pattern, true, 0, -1, MaxPatternStates); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRegex_Whole: a Regex takes text its pattern matches whole, nothing
// else, choices byte for byte; along random walks every state takes a
// byte or is done (no dead ends); a state that loops on every plain
// character is Plain and keeps its key through plain text.
func TestRegex_Whole(t *testing.T) {
	for _, tc := range []struct {
		pattern        string
		accept, refuse []string
	}{
		{`[0-9]{3}-[a-z]+`, []string{"123-ab", "000-z"}, []string{"123-", "a123-ab", "123-ab!", "12-ab", ""}},
		{nozzle.ChoicePattern([]string{"yes", "no", "a.b", "x|y", "ünï", ""}), []string{"yes", "no", "a.b", "x|y", "ünï", ""}, []string{"ye", "a-b", "x", "yess", "nono", "y"}},
		{`Answer: (.*)\n?`, []string{"Answer: 42", "Answer: \"quoted\" \\ 😀\n"}, []string{"answer: 1", "Answer: a\nb", "Answer:"}},
		{`\s*\{"a": (true|false)\}\s*`, []string{`{"a": true}`, "\n {\"a\": false}\u00a0"}, []string{`{"a":true}`, `{"a": null}`}},
	} {
		start, err := CompileRegex(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		feed := func(s string) bool {
			r := start
			for i := 0; i < len(s); i++ {
				if !r.Feed(s[i]) {
					return false
				}
			}
			return r.Done()
		}
		for _, s := range tc.accept {
			if !feed(s) {
				t.Errorf("%q: %q refused", tc.pattern, s)
			}
		}
		for _, s := range tc.refuse {
			if feed(s) {
				t.Errorf("%q: %q accepted", tc.pattern, s)
			}
		}
		rnd := rand.New(rand.NewPCG(7, 8))
		for range 200 {
			r := start
			for step := 0; step < 300 && !(r.Done() && rnd.IntN(8) == 0); step++ {
				var took []byte
				for b := range 256 {
					if p := r; p.Feed(byte(b)) {
						took = append(took, byte(b))
					}
				}
				if len(took) == 0 {
					if !r.Done() {
						t.Fatalf("%q: a dead end", tc.pattern)
					}
					break
				}
				if r.Plain() {
					p := r
					for _, c := range []byte("plain é中😀 \"text\"") {
						if c != '"' && !p.Feed(c) {
							t.Fatalf("%q: plain text refused", tc.pattern)
						}
					}
					if !bytes.Equal(p.Key(nil), r.Key(nil)) {
						t.Fatalf("%q: plain text changed the state", tc.pattern)
					}
				}
				r.Feed(took[rnd.IntN(len(took))])
			}
		}
	}
	if _, err := CompileRegex(`(?=a)`); err == nil || !strings.Contains(err.Error(), "pattern: lookahead") {
		t.Errorf("lookahead: %v", err)
	}
}

// TestPattern_ECMA: a pattern's automaton finds the pattern in exactly the
// texts ECMA-262's RegExp with the u flag does (JSON Schema's "pattern"
// as validators run it): testdata/ecma/ecma.json, written by gen.mjs with
// Node's RegExp, an oracle apart from Go's regexp and from ecmaToGo.
func TestPattern_ECMA(t *testing.T) {
	b, err := os.ReadFile("testdata/ecma/ecma.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Texts    []string
		Patterns []struct {
			Pattern string
			Matches []string
		}
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	for _, p := range ref.Patterns {
		d, err := compilePattern(p.Pattern, false, 0, -1, MaxPatternStates)
		if err != nil {
			// a pattern nothing matches is refused
			if len(p.Matches) > 0 || !strings.Contains(err.Error(), "no string") {
				t.Errorf("%q: %v", p.Pattern, err)
			}
			continue
		}
		for _, s := range ref.Texts {
			if got, want := dfaAccepts(d, s), slices.Contains(p.Matches, s); got != want {
				t.Errorf("%q on %q: automaton %v, ECMA-262 %v", p.Pattern, s, got, want)
			}
		}
	}
}
