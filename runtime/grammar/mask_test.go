package grammar_test

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nozzle-ai/nozzle/runtime/grammar"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// vocabulary returns a real tokenizer's tokens as the Masker takes them
// (special tokens empty) and its EOS ids, from the tokenizer tests' files.
func vocabulary(t testing.TB, name string) ([][]byte, []int) {
	t.Helper()
	src := filepath.Join("..", "tokenizer", "testdata", "models", name)
	dir := t.TempDir()
	for _, f := range []string{"tokenizer.json.gz", "tokenizer_config.json"} {
		in, err := os.Open(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = in
		out := filepath.Join(dir, f)
		if filepath.Ext(f) == ".gz" {
			zr, err := gzip.NewReader(in)
			if err != nil {
				t.Fatal(err)
			}
			r, out = zr, out[:len(out)-3]
		}
		b, err := io.ReadAll(r)
		in.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	toks := make([][]byte, tk.VocabSize())
	for id := range toks {
		if !tk.IsSpecial(id) {
			toks[id] = tk.TokenBytes(id)
		}
	}
	return toks, tk.EOS()
}

// brute is the mask by definition: every token fed to a copy of s.
func brute(toks [][]byte, ends []int, s *grammar.JSON) []uint32 {
	mask := make([]uint32, (len(toks)+31)/32)
	if s.Done() {
		for _, id := range ends {
			mask[id/32] |= 1 << (id % 32)
		}
		return mask
	}
	for id, b := range toks {
		if len(b) == 0 {
			continue
		}
		st, ok := *s, true
		for _, c := range b {
			if ok = st.Feed(c); !ok {
				break
			}
		}
		if ok && !isEnd(ends, id) {
			mask[id/32] |= 1 << (id % 32)
		}
	}
	return mask
}

func isEnd(ends []int, id int) bool {
	for _, e := range ends {
		if e == id {
			return true
		}
	}
	return false
}

// walk drives a state through a generation: at each step a random token
// the mask allows (preferring ones that close things, so the object ends).
func walk(t *testing.T, m *grammar.Masker[grammar.JSON, *grammar.JSON], toks [][]byte, ends []int, seed uint64, check func(*grammar.JSON, []uint32)) string {
	r := rand.New(rand.NewPCG(seed, 1))
	var s grammar.JSON
	var out []byte
	for step := 0; step < 400 && !s.Done(); step++ {
		mask, ok := m.Mask(&s)
		if !ok {
			t.Fatalf("no token allowed after %q", out)
		}
		check(&s, mask)
		var allowed []int
		for id := range toks {
			if grammar.Allowed(mask, id) {
				allowed = append(allowed, id)
			}
		}
		if len(allowed) == 0 {
			t.Fatalf("no token allowed after %q", out)
		}
		id := allowed[r.IntN(len(allowed))]
		if step > 40 { // steer towards the end
			for _, a := range allowed {
				if b := toks[a]; len(b) > 0 && (b[len(b)-1] == '}' || b[len(b)-1] == ']' || b[len(b)-1] == '"') {
					id = a
					break
				}
			}
		}
		for _, c := range toks[id] {
			if !s.Feed(c) {
				t.Fatalf("token %d (%q) allowed but refused after %q", id, toks[id], out)
			}
		}
		out = append(out, toks[id]...)
	}
	return string(out)
}

// TestMasker_MatchesDefinition: on real vocabularies, along random
// constrained generations, the masks are the brute-force ones, the
// generations are JSON objects, and a done object allows only EOS.
func TestMasker_MatchesDefinition(t *testing.T) {
	for _, name := range []string{"llama2", "llama3", "qwen3"} {
		t.Run(name, func(t *testing.T) {
			toks, ends := vocabulary(t, name)
			m := grammar.NewMasker[grammar.JSON](grammar.NewVocab(toks, ends), 0)
			checked := 0
			for seed := uint64(0); seed < 3; seed++ {
				out := walk(t, m, toks, ends, seed, func(s *grammar.JSON, mask []uint32) {
					if checked%7 == 0 { // brute force is slow on 150k tokens
						want := brute(toks, ends, s)
						for w := range want {
							if want[w] != mask[w] {
								t.Fatalf("mask word %d: %032b, want %032b", w, mask[w], want[w])
							}
						}
					}
					checked++
				})
				var s grammar.JSON
				for i := 0; i < len(out); i++ {
					s.Feed(out[i])
				}
				if !s.Done() {
					t.Logf("seed %d: generation not finished in 400 tokens: %.200q", seed, out)
					continue
				}
				if mask, _ := m.Mask(&s); !onlyEnds(mask, ends) {
					t.Errorf("a done object allows more than EOS")
				}
				t.Logf("seed %d: %d masks checked, %.120q", seed, checked, out)
			}
		})
	}
}

func onlyEnds(mask []uint32, ends []int) bool {
	n := 0
	for w, v := range mask {
		for b := 0; b < 32; b++ {
			if v&(1<<b) != 0 {
				if !isEnd(ends, w*32+b) {
					return false
				}
				n++
			}
		}
	}
	return n == len(ends)
}

// BenchmarkMaskerSchema: BenchmarkMasker's two states for a schema's
// machine (a name string, an integer age) on Llama 3's vocabulary.
func BenchmarkMaskerSchema(b *testing.B) {
	toks, ends := vocabulary(b, "llama3")
	start, err := grammar.CompileSchema([]byte(`{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},` +
		`"tags":{"type":"array","items":{"enum":["a","b"]}}},"required":["name","age","tags"],"additionalProperties":false}`))
	if err != nil {
		b.Fatal(err)
	}
	benchMasks(b, grammar.NewVocab(toks, ends), start, `{"name": "Ada`, `{"name": "Ada", "age": 3`)
}

// BenchmarkMasker: a mask made from the trie (cache cleared) and one
// found in the cache, in a string (nearly every token allowed) and after
// a value (few), on Llama 3's 128k vocabulary.
func BenchmarkMasker(b *testing.B) {
	toks, ends := vocabulary(b, "llama3")
	benchMasks(b, grammar.NewVocab(toks, ends), grammar.JSON{}, `{"name": "Ada`, `{"a": [1, 2`)
}

// benchMasks times the masks of the states start reaches after inString
// (inside a string) and after (after a value): made by a walk of the
// trie (the cache cleared), by a walk of every token (the baseline of the
// plain-text mask) and found in the cache.
func benchMasks[S any, P interface {
	*S
	grammar.Machine
}](b *testing.B, v *grammar.Vocab, start S, inString, after string) {
	for _, tc := range []struct{ name, prefix string }{{"string", inString}, {"after", after}} {
		s := start
		for i := 0; i < len(tc.prefix); i++ {
			if !P(&s).Feed(tc.prefix[i]) {
				b.Fatalf("%q refused at %d", tc.prefix, i)
			}
		}
		b.Run(tc.name+"/walk", func(b *testing.B) {
			m := grammar.NewMasker[S, P](v, 0)
			for b.Loop() {
				m.ClearCache()
				m.Mask(&s)
			}
		})
		b.Run(tc.name+"/full-walk", func(b *testing.B) { // every token walked, plain text too
			m := grammar.NewMasker[S, P](v, 0)
			for b.Loop() {
				m.MaskFullWalk(&s)
			}
		})
		b.Run(tc.name+"/cached", func(b *testing.B) {
			m := grammar.NewMasker[S, P](v, 0)
			m.Mask(&s)
			for b.Loop() {
				m.Mask(&s)
			}
		})
	}
}

// BenchmarkMaskerSchemaBounds: a mask made from the trie (cache cleared)
// for a number's states, without bounds and with (minimum and
// exclusiveMaximum: every digit checked against the range), on Llama 3's
// vocabulary: before the number, in its integer part and in its fraction.
func BenchmarkMaskerSchemaBounds(b *testing.B) {
	toks, ends := vocabulary(b, "llama3")
	v := grammar.NewVocab(toks, ends)
	for _, sc := range []struct{ name, bounds string }{{"unbounded", ""}, {"bounded", `,"minimum":-273.15,"exclusiveMaximum":1000`}} {
		start, err := grammar.CompileSchema([]byte(`{"type":"object","properties":{"t":{"type":"number"` + sc.bounds + `}},"required":["t"]}`))
		if err != nil {
			b.Fatal(err)
		}
		for _, tc := range []struct{ name, prefix string }{{"before", `{"t": `}, {"int", `{"t": 12`}, {"frac", `{"t": -12.5`}} {
			s := start
			for i := 0; i < len(tc.prefix); i++ {
				if !s.Feed(tc.prefix[i]) {
					b.Fatalf("%q refused at %d", tc.prefix, i)
				}
			}
			b.Run(tc.name+"/"+sc.name, func(b *testing.B) {
				m := grammar.NewMasker[grammar.Schema](v, 0)
				for b.Loop() {
					m.ClearCache()
					m.Mask(&s)
				}
			})
		}
	}
}

// BenchmarkMaskerSchemaPattern: masks made (cache cleared) inside a string
// with a pattern or a format read by an automaton (a walk of the tokens it
// lets through), beside the same string free (the plain-text shortcut)
// and with only a length limit (the plain tokens short enough at once),
// on Llama 3's vocabulary; "found" is a search pattern's string after its
// match (plain text again).
func BenchmarkMaskerSchemaPattern(b *testing.B) {
	toks, ends := vocabulary(b, "llama3")
	v := grammar.NewVocab(toks, ends)
	for _, sc := range []struct{ name, kw, in string }{
		{"free", ``, "ab"}, {"maxLength", `,"maxLength":64`, "ab"}, {"pattern", `,"pattern":"^[A-Za-z ]+( [0-9]{1,3})?$"`, "ab"},
		{"search", `,"pattern":"cat|dog"`, "ab"}, {"found", `,"pattern":"cat|dog"`, "a cat"}, {"email", `,"format":"email"`, "ab"},
	} {
		start, err := grammar.CompileSchema([]byte(`{"type":"object","properties":{"s":{"type":"string"` + sc.kw + `}},"required":["s"]}`))
		if err != nil {
			b.Fatal(err)
		}
		s := start
		for _, c := range []byte(`{"s": "` + sc.in) {
			if !s.Feed(c) {
				b.Fatalf("%s: refused", sc.name)
			}
		}
		b.Run(sc.name, func(b *testing.B) {
			m := grammar.NewMasker[grammar.Schema](v, 0)
			for b.Loop() {
				m.ClearCache()
				m.Mask(&s)
			}
		})
		if sc.name == "maxLength" { // the baseline: a walk of every token
			b.Run(sc.name+"-full-walk", func(b *testing.B) {
				m := grammar.NewMasker[grammar.Schema](v, 0)
				for b.Loop() {
					m.MaskFullWalk(&s)
				}
			})
		}
	}
}

// benchParams: get_weather's parameters in the Triggered benchmarks.
const benchParams = `{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},` +
	`"required":["city","days"],"additionalProperties":false}`

// BenchmarkMaskerTriggered: masks made (cache cleared) in the states of a
// strict function's calls on Llama 3's and Qwen3's vocabularies: free text
// (no plain-text shortcut: '<' and the tag's other bytes move the tag's
// match, so every token is walked), free text with a tag begun ("<tool"),
// the call's name, a string of the arguments (plain text: the shortcut)
// and after an argument's value, Llama 3's leading calls' states; beside
// them JSON's string made both ways
// (its walk with the shortcut, its full walk without) and the free-text
// mask found in the cache.
func BenchmarkMaskerTriggered(b *testing.B) {
	for _, vocab := range []string{"llama3", "qwen3"} {
		toks, ends := vocabulary(b, vocab)
		v := grammar.NewVocab(toks, ends)
		tools := weatherTools(b, benchParams, "get_time")
		start := triggerOf(b, grammar.Calls{Tag: "<tool_call>", Pre: "\n", Post: "\n</tool_call>", ArgsKey: "arguments", Tools: tools})
		call := "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern"
		for _, tc := range []struct{ name, prefix string }{
			{"free", "Let me check."}, {"tag", "Let me check. <tool"}, {"name", "<tool_call>\n{\"name\": \"get_"},
			{"string", call}, {"after", call + "\", \"days\": 3"},
		} {
			s := fedTriggered(b, start, tc.prefix)
			benchFresh(b, v, vocab+"/"+tc.name, s)
			if tc.name == "free" {
				b.Run(vocab+"/free-full-walk", func(b *testing.B) { // the baseline: a walk of every token
					m := grammar.NewMasker[grammar.Triggered](v, 0)
					for b.Loop() {
						m.MaskFullWalk(&s)
					}
				})
				b.Run(vocab+"/free-cached", func(b *testing.B) {
					m := grammar.NewMasker[grammar.Triggered](v, 0)
					m.Mask(&s)
					for b.Loop() {
						m.Mask(&s)
					}
				})
			}
		}
		// Llama 3's leading calls: the start (whitespace so far: every
		// token walked), the text begun otherwise (a Looper any token
		// leaves as it is), the name
		lead := triggerOf(b, grammar.Calls{ArgsKey: "parameters", Lead: true, Only: true, Sep: ";", Tools: tools})
		for _, tc := range []struct{ name, prefix string }{{"lead-start", ""}, {"lead-text", "Sure"}, {"lead-name", `{"name": "get_`}} {
			benchFresh(b, v, vocab+"/"+tc.name, fedTriggered(b, lead, tc.prefix))
		}
		var js grammar.JSON
		for _, c := range []byte(`{"name": "Ada`) {
			js.Feed(c)
		}
		b.Run(vocab+"/json-string", func(b *testing.B) {
			m := grammar.NewMasker[grammar.JSON](v, 0)
			for b.Loop() {
				m.ClearCache()
				m.Mask(&js)
			}
		})
		b.Run(vocab+"/json-string-full-walk", func(b *testing.B) {
			m := grammar.NewMasker[grammar.JSON](v, 0)
			for b.Loop() {
				m.MaskFullWalk(&js)
			}
		})
	}
}

// TestMasker_LooperMatchesWalk: in free text watching for a call's tag
// the masker takes the tokens without the tag's first byte at once
// (Looper); its masks are those of a walk of every token, in free text,
// after a call and with a tag begun, on Llama 3's and Qwen3's
// vocabularies.
func TestMasker_LooperMatchesWalk(t *testing.T) {
	for _, vocab := range []string{"llama3", "qwen3"} {
		toks, ends := vocabulary(t, vocab)
		v := grammar.NewVocab(toks, ends)
		anyObj, err := grammar.CompileSchema([]byte(`{"type":"object"}`))
		if err != nil {
			t.Fatal(err)
		}
		start, err := grammar.Trigger(grammar.Calls{Tag: "<tool_call>", Pre: "\n", Post: "\n</tool_call>", ArgsKey: "arguments",
			Tools: []grammar.Tool{{Name: "f", Args: anyObj}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, prefix := range []string{"", "Let me see. ", "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", "a <tool"} {
			s := start
			for i := 0; i < len(prefix); i++ {
				if !s.Feed(prefix[i]) {
					t.Fatalf("%q refused at %d", prefix, i)
				}
			}
			m := grammar.NewMasker[grammar.Triggered](v, 0)
			got, _ := m.Mask(&s)
			want := m.MaskFullWalk(&s)
			if s.Done() { // the end tokens, which no walk takes
				for _, id := range ends {
					want[id/32] |= 1 << (id % 32)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s, after %q: the masks differ", vocab, prefix)
			}
		}
	}
}

// TestMasker_PlainCounterMatchesWalk: in a string with a length limit the
// masker takes the plain-text tokens of at most the characters left at
// once (PlainCounter); its masks are those of a walk of every token, on
// Llama 3's and Qwen3's vocabularies.
func TestMasker_PlainCounterMatchesWalk(t *testing.T) {
	start, err := grammar.CompileSchema([]byte(`{"type":"object","properties":{"s":{"type":"string","maxLength":6},` +
		`"t":{"type":"string","minLength":3},"u":{"type":"string","minLength":2,"maxLength":40}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, vocab := range []string{"llama3", "qwen3"} {
		toks, ends := vocabulary(t, vocab)
		v := grammar.NewVocab(toks, ends)
		for _, prefix := range []string{`{"s": "`, `{"s": "ab`, `{"s": "abcde`, `{"s": "abcdef`, `{"s": "é😀\n`, `{"s": "\ud83d`,
			`{"t": "`, `{"t": "abcdef`, `{"u": "x`, `{"u": "` + strings.Repeat("y", 33)} {
			s := start
			for i := 0; i < len(prefix); i++ {
				if !s.Feed(prefix[i]) {
					t.Fatalf("%q refused at %d", prefix, i)
				}
			}
			if _, ok := s.PlainUpTo(); !ok {
				t.Fatalf("%q: not a counted string", prefix)
			}
			m := grammar.NewMasker[grammar.Schema](v, 0)
			got, _ := m.Mask(&s)
			if want := m.MaskFullWalk(&s); !slices.Equal(got, want) {
				t.Errorf("%s, after %q: the masks differ", vocab, prefix)
			}
		}
	}
}

// bruteFor is brute's mask for any machine: every token fed to a copy of
// s, the end tokens where s is done.
func bruteFor[S any, P interface {
	*S
	grammar.Machine
}](toks [][]byte, ends []int, s *S) []uint32 {
	mask := make([]uint32, (len(toks)+31)/32)
	if P(s).Done() {
		for _, id := range ends {
			mask[id/32] |= 1 << (id % 32)
		}
	}
	for id, b := range toks {
		if len(b) == 0 || isEnd(ends, id) {
			continue
		}
		st, ok := *s, true
		for _, c := range b {
			if ok = P(&st).Feed(c); !ok {
				break
			}
		}
		if ok {
			mask[id/32] |= 1 << (id % 32)
		}
	}
	return mask
}

// cityParams: get_weather's parameters in the brute-force walks, a
// city's length bounded (the Triggered's strings end soon).
const cityParams = `{"type":"object","properties":{"city":{"type":"string","maxLength":8},"unit":{"enum":["C","F"]}},` +
	`"required":["city","unit"],"additionalProperties":false}`

// weatherTools are get_weather, its parameters params, and other, any
// object.
func weatherTools(tb testing.TB, params, other string) []grammar.Tool {
	tb.Helper()
	strict, err := grammar.CompileSchema([]byte(params))
	if err != nil {
		tb.Fatal(err)
	}
	anyObj, err := grammar.CompileSchema([]byte(`{"type":"object"}`))
	if err != nil {
		tb.Fatal(err)
	}
	return []grammar.Tool{{Name: "get_weather", Args: strict}, {Name: other, Args: anyObj}}
}

// triggerOf is c's machine.
func triggerOf(tb testing.TB, c grammar.Calls) grammar.Triggered {
	tb.Helper()
	st, err := grammar.Trigger(c)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// fedTriggered is start after text, its bytes 1 and 2 read as the marks
// (Mark(MarkCall), Mark(MarkArgs)).
func fedTriggered(tb testing.TB, start grammar.Triggered, text string) grammar.Triggered {
	tb.Helper()
	s := start
	for i := 0; i < len(text); i++ {
		var ok bool
		switch text[i] {
		case 1:
			ok = s.Mark(grammar.MarkCall)
		case 2:
			ok = s.Mark(grammar.MarkArgs)
		default:
			ok = s.Feed(text[i])
		}
		if !ok {
			tb.Fatalf("%q refused at %d", text, i)
		}
	}
	return s
}

// benchFresh times a new state's mask of s (the cache cleared).
func benchFresh(b *testing.B, v *grammar.Vocab, name string, s grammar.Triggered) {
	b.Run(name, func(b *testing.B) {
		m := grammar.NewMasker[grammar.Triggered](v, 0)
		for b.Loop() {
			m.ClearCache()
			m.Mask(&s)
		}
	})
}

// bruteWalk is random generations of a Triggered machine under the
// masker's masks, every mask checked against brute force's (the marks'
// tokens where the state takes them); the parts its tests do not share
// are its fields.
type bruteWalk struct {
	toks   [][]byte
	ends   []int
	marks  []int // the vocabulary's marks' ids: marks[k] is Mark(k), written as byte k+1
	m      *grammar.Masker[grammar.Triggered, *grammar.Triggered]
	stream uint64 // the random source's second seed
	steps  int    // a generation's tokens at the most
	// draw: whether an allowed token is drawn from (nil: every one)
	draw func(r *rand.Rand, tok []byte) bool
	// stop: whether a done generation ends at step
	stop func(r *rand.Rand, step int) bool
	// past closeAfter steps a token that closer takes is preferred
	closeAfter int
	closer     func(r *rand.Rand, tok []byte) bool
	// checked: the masks checked; called: the MarkCall marks taken
	checked, called int
}

// run is a generation from start with the seed; its first tokens are
// forced (each must be allowed). The marks, where allowed, are taken two
// times in three (from the start on even seeds, past step 3 on odd ones).
func (w *bruteWalk) run(t *testing.T, seed int, start grammar.Triggered, forced ...string) (grammar.Triggered, []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(seed), w.stream))
	s, out := start, []byte{}
	for step := 0; step < w.steps; step++ {
		mask, ok := w.m.Mask(&s)
		if !ok {
			t.Fatalf("seed %d: no token allowed after %q", seed, out)
		}
		want := bruteFor[grammar.Triggered](w.toks, w.ends, &s)
		for k, id := range w.marks {
			if p := s; p.Mark(k) {
				want[id/32] |= 1 << (id % 32)
			}
		}
		if !slices.Equal(mask, want) {
			t.Fatalf("seed %d, after %q: the mask is not brute force's", seed, out)
		}
		w.checked++
		var allowed []int
		for i := range w.toks {
			if grammar.Allowed(mask, i) && !isEnd(w.ends, i) && (w.draw == nil || w.draw(r, w.toks[i])) {
				allowed = append(allowed, i)
			}
		}
		if s.Done() && w.stop(r, step) || len(allowed) == 0 {
			break
		}
		next := allowed[r.IntN(len(allowed))]
		for _, id := range w.marks {
			if grammar.Allowed(mask, id) && (step > 3 || seed%2 == 0) && r.IntN(3) > 0 {
				next = id
			}
		}
		switch {
		case step < len(forced):
			if next = tokenID(t, w.toks, forced[step]); !grammar.Allowed(mask, next) {
				t.Fatalf("seed %d: %q not allowed at the start", seed, forced[step])
			}
		case step > w.closeAfter && !slices.Contains(w.marks, next):
			off := r.IntN(len(allowed))
			for k := range allowed {
				if a := allowed[(off+k)%len(allowed)]; w.closer(r, w.toks[a]) {
					next = a
					break
				}
			}
		}
		if k := slices.Index(w.marks, next); k >= 0 {
			if !s.Mark(k) {
				t.Fatalf("seed %d: mark %d allowed but refused after %q", seed, k, out)
			}
			if out = append(out, byte(k+1)); k == grammar.MarkCall {
				w.called++
			}
			continue
		}
		for _, c := range w.toks[next] {
			if !s.Feed(c) {
				t.Fatalf("seed %d: token %q allowed but refused after %q", seed, w.toks[next], out)
			}
		}
		out = append(out, w.toks[next]...)
	}
	return s, out
}

// tokenID is the id of the token whose bytes are s.
func tokenID(t *testing.T, toks [][]byte, s string) int {
	t.Helper()
	for i, b := range toks {
		if string(b) == s {
			return i
		}
	}
	t.Fatalf("no token %q", s)
	return 0
}

// TestMasker_TriggeredLeadMatchesBrute: Llama 3's JSON calls in auto mode
// (grammar.Calls Lead, ";" between calls) on Llama 3's vocabulary: along
// random generations under the masks — most opening with a token that
// begins the call, some with text, whitespace or part of a character —
// every mask is the brute-force one (the Looper's free text and the
// start's walk alike), and a done answer that begins with '{' is calls
// separated by ';' whose parameters follow the strict function's.
func TestMasker_TriggeredLeadMatchesBrute(t *testing.T) {
	toks, ends := vocabulary(t, "llama3")
	start := triggerOf(t, grammar.Calls{ArgsKey: "parameters", Only: true, Sep: ";", Lead: true, Tools: weatherTools(t, cityParams, "get_time")})
	w := &bruteWalk{toks: toks, ends: ends, m: grammar.NewMasker[grammar.Triggered](grammar.NewVocab(toks, ends), 0), stream: 2, steps: 120,
		draw: func(r *rand.Rand, tok []byte) bool { // whitespace allowed, seldom taken
			return len(strings.TrimSpace(string(tok))) > 0 || r.IntN(50) == 0
		},
		stop:       func(r *rand.Rand, step int) bool { return step > 1 && (step > 60 || r.IntN(4) == 0) },
		closeAfter: 30,
		closer: func(r *rand.Rand, b []byte) bool { // tokens that end strings, objects and calls
			return len(b) > 0 && strings.IndexByte(`"}`, b[len(b)-1]) >= 0 && !strings.ContainsAny(string(b), " \n") || b[0] == ';' && r.IntN(2) == 0
		},
	}
	calls := 0
	for seed, first := range []string{`{"`, ` {"`, "{\n", "\n\n", "\xe2\x80", "Sure", `{"`, `{"`} {
		forced := []string{first}
		if first[0] == '\n' {
			forced = append(forced, `{"`)
		}
		s, out := w.run(t, seed, start, forced...)
		if s.Done() {
			calls += leadCalls(t, string(out), cityParams)
		}
		t.Logf("seed %d: %.160q", seed, out)
	}
	if calls < 3 {
		t.Errorf("only %d calls along the walks", calls)
	}
	t.Logf("%d masks checked, %d calls", w.checked, calls)
}

// leadCalls reads text as the gateway's splitToolCalls reads Llama 3's
// calls (its trimmed answer beginning with '{': objects separated by
// ';'), get_weather's parameters following params; 0 for free text.
func leadCalls(t *testing.T, text, params string) int {
	s := strings.TrimSpace(text)
	if !strings.HasPrefix(s, "{") {
		return 0
	}
	for n := 1; ; n++ {
		dec := json.NewDecoder(strings.NewReader(s))
		var call struct {
			Name       string
			Parameters json.RawMessage
		}
		dec.DisallowUnknownFields()
		if err := dec.Decode(&call); err != nil || call.Name != "get_weather" && call.Name != "get_time" || call.Parameters == nil {
			t.Fatalf("%q: not calls (%v)", text, err)
		}
		if call.Name == "get_weather" {
			var args struct {
				City *string
				Unit *string
			}
			d := json.NewDecoder(strings.NewReader(string(call.Parameters)))
			d.DisallowUnknownFields()
			if d.Decode(&args) != nil || args.City == nil || utf8.RuneCountInString(*args.City) > 8 || args.Unit == nil || *args.Unit != "C" && *args.Unit != "F" {
				t.Fatalf("%q: not get_weather's parameters", call.Parameters)
			}
		}
		if s = strings.TrimLeft(s[dec.InputOffset():], " \t\r\n"); s == "" {
			return n
		}
		if s[0] != ';' {
			t.Fatalf("%q: calls not separated by ';'", text)
		}
		s = strings.TrimLeft(s[1:], " \t\r\n")
	}
}

// markedVocab is Llama 2's vocabulary (Mistral's, but for its control
// tokens) with [TOOL_CALLS] and [ARGS] added as its last two tokens,
// without bytes: the vocabulary's marks.
func markedVocab(tb testing.TB) ([][]byte, []int, *grammar.Vocab) {
	toks, ends := vocabulary(tb, "llama2")
	toks = append(toks, nil, nil)
	return toks, ends, grammar.NewVocab(toks, ends, len(toks)-2, len(toks)-1)
}

// TestMasker_MarksMatchBrute: Mistral's calls in auto mode — v11's
// (grammar.Calls Mark, Bare) and v3's (Mark, Lead, Array) — on Llama 2's
// vocabulary (Mistral's, but for its control tokens) with [TOOL_CALLS]
// and [ARGS] added as tokens without bytes, the vocabulary's marks: along
// random generations under the masks, every mask is the brute-force one,
// the marks' tokens allowed where the state takes them (Triggered.Mark),
// and the control token's text never written where a parser would read
// it as the token.
func TestMasker_MarksMatchBrute(t *testing.T) {
	toks, ends, v := markedVocab(t)
	calls, args := len(toks)-2, len(toks)-1
	tools := weatherTools(t, cityParams, "get")
	for _, form := range []grammar.Calls{
		{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true, Tools: tools},
		{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Only: true, ArgsKey: "arguments", Tools: tools},
	} {
		start := triggerOf(t, form)
		w := &bruteWalk{toks: toks, ends: ends, marks: []int{calls, args}, m: grammar.NewMasker[grammar.Triggered](v, 0), stream: 3, steps: 80,
			stop:       func(r *rand.Rand, step int) bool { return step > 10 && r.IntN(6) == 0 },
			closeAfter: 40, // closers late
			closer: func(_ *rand.Rand, b []byte) bool {
				return len(b) > 0 && strings.IndexByte(`"}]`, b[len(b)-1]) >= 0
			},
		}
		for seed := range 8 {
			_, out := w.run(t, seed, start)
			text := string(out)
			if form.Bare {
				text, _, _ = strings.Cut(text, "\x01") // (the arguments' strings may hold it)
			}
			if strings.Contains(text, "[TOOL_CALLS]") {
				t.Fatalf("seed %d: the control token's text written: %q", seed, out)
			}
			t.Logf("seed %d: %.160q", seed, out)
		}
		if w.called < 3 {
			t.Errorf("only %d calls begun along the walks", w.called)
		}
		t.Logf("%d masks checked, %d calls begun", w.checked, w.called)
	}
}

// BenchmarkMaskerTriggeredMistral: a new state's mask of Mistral's calls
// in auto mode on Llama 2's vocabulary (Mistral's, but for its control
// tokens, added as the marks): v11's free text (a Looper that never
// writes the control token's text), name and argument's string (plain:
// the shortcut applies); v3's start (only whitespace so far), text begun
// otherwise (a Looper again) and argument's string, which has no shortcut
// (it may not write the control token's text either: every token walked).
func BenchmarkMaskerTriggeredMistral(b *testing.B) {
	_, _, v := markedVocab(b)
	tools := weatherTools(b, benchParams, "get_time")
	v11 := triggerOf(b, grammar.Calls{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true, Tools: tools})
	v3 := triggerOf(b, grammar.Calls{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Only: true, ArgsKey: "arguments", Tools: tools})
	// "\x01" and "\x02": the marks
	for _, tc := range []struct {
		name  string
		start grammar.Triggered
		text  string
	}{
		{"v11-free", v11, "Let me check."}, {"v11-name", v11, "\x01get_"}, {"v11-string", v11, "\x01get_weather\x02{\"city\": \"Bern"},
		{"v3-start", v3, ""}, {"v3-text", v3, "Sure"}, {"v3-string", v3, "\x01[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern"},
	} {
		benchFresh(b, v, tc.name, fedTriggered(b, tc.start, tc.text))
	}
}

// TestMasker_PlainLooperMatchesBrute: inside the strings of Mistral's v3
// calls, which may not write [TOOL_CALLS] as text, the masks made with
// the plain tokens without '[' taken at once (PlainLooper) are brute
// force's, in a string, a key, after a '[' and more of the tag, and after
// an escape, on Llama 2's vocabulary with the marks.
func TestMasker_PlainLooperMatchesBrute(t *testing.T) {
	toks, ends, v := markedVocab(t)
	anyObj, err := grammar.CompileSchema([]byte(`{"type":"object"}`))
	if err != nil {
		t.Fatal(err)
	}
	start := triggerOf(t, grammar.Calls{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Only: true, ArgsKey: "arguments",
		Tools: []grammar.Tool{{Name: "f", Args: anyObj}}})
	m := grammar.NewMasker[grammar.Triggered](v, 0)
	call := `[{"name": "f", "arguments": {"k": "`
	for _, text := range []string{call, call + "ab", call + "x[", call + "[TOOL", call + "[TOOL_CALLS", call + `\`, call + `a", "[TOO`,
		`[{"name": "f", "arguments": {"[TOOL_`, `[{"name": "f", "arguments": {"k": ["`} {
		s := fedTriggered(t, start, "\x01"+text) // the mark, then text
		_, loops := s.PlainLoops()
		mask, _ := m.Mask(&s)
		if want := bruteFor[grammar.Triggered](toks, ends, &s); !slices.Equal(mask, want) {
			t.Errorf("%q (plain loops %v): the mask is not brute force's", text, loops)
		}
	}
}
