package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// scannerPatterns are the patterns with hand-written scanners.
var scannerPatterns = []struct {
	name, pattern string
}{
	{"gpt2", patternGPT2},
	{"llama3", patternLlama3},
	{"qwen2", patternQwen2},
	{"o200k", patternO200k},
}

// checkScanners compares the scanners' matches with regexp2's on s.
func checkScanners(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) || strings.ContainsAny(s, "ſK") {
		// Case folding of ſ (U+017F) and K (U+212A) differs between
		// Oniguruma and .NET; the scanners fold ASCII only.
		return
	}
	for _, p := range scannerPatterns {
		re, err := compileRegex(p.pattern)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := re.FindAllStringIndex(s, -1)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprint(idx)
		var got [][]int
		scan := knownScanner(p.pattern)
		for i := 0; i < len(s); {
			j := scan(s, i)
			if j <= i {
				t.Fatalf("%s: empty match at %d in %q", p.name, i, s)
			}
			got = append(got, []int{i, j})
			i = j
		}
		if g := fmt.Sprint(got); g != want && !(len(got) == 0 && len(idx) == 0) {
			t.Fatalf("%s on %q:\n scanner %v\n regexp2 %v", p.name, s, g, want)
		}
	}
}

func TestScanners(t *testing.T) {
	b, err := os.ReadFile("testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var corpus []string
	if err := json.Unmarshal(b, &corpus); err != nil {
		t.Fatal(err)
	}
	for _, s := range corpus {
		checkScanners(t, s)
	}
	// Random strings over an alphabet of the characters the patterns care
	// about.
	// For o200k: upper and lower case outside ASCII (É ω), title case (ǅ),
	// modifier letters (ʰ ー), marks of the three kinds (U+0301 U+0903
	// U+20DD), "/".
	alphabet := []rune("aZé中ß1٣½ \t\n\r\u00a0\u2028\u3000'sStTrReEvVmMlLdD.,!?-_()😀\u0301\u200d\u0085\x0b\x0cÉωǅʰー\u0903\u20dd/")
	r := rand.New(rand.NewPCG(7, 11))
	for n := 0; n < 4000; n++ {
		rs := make([]rune, 1+r.IntN(12))
		for i := range rs {
			rs[i] = alphabet[r.IntN(len(alphabet))]
		}
		checkScanners(t, string(rs))
	}
}

func FuzzScanners(f *testing.F) {
	for _, s := range []string{"", "  a", "'Re  \n\n x", "12345 ١٢٣", "a\r\n\r\nb", " !!\n\n", "\u3000\u3000x",
		"HTTPServer's ǅa'LL", "x.\n/y //\r\n/", "\u0301'S !\u0301\u0301a ʰʰA", "getHTTPResponseCode ÉCOLEnormale"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkScanners(t, s) })
}

func TestLossy(t *testing.T) {
	tests := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe4\xb8", "\uFFFD"},                 // truncated 3-byte sequence: one replacement
		{"\xe4\xb8A", "\uFFFDA"},               // same, followed by ASCII
		{"\xff\xfe", "\uFFFD\uFFFD"},           // invalid bytes: one each
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: not a valid prefix
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf0\x9f\x98\x80", "😀"},
		{"\xc0\xaf", "\uFFFD\uFFFD"},
	}
	for _, tt := range tests {
		if got := string(appendLossy(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("lossy(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// BenchmarkSplit measures the split patterns alone on the corpus: the
// hand-written scanners against regexp2 running the same pattern.
func BenchmarkSplit(b *testing.B) {
	raw, err := os.ReadFile("testdata/corpus.json")
	if err != nil {
		b.Fatal(err)
	}
	var corpus []string
	if err := json.Unmarshal(raw, &corpus); err != nil {
		b.Fatal(err)
	}
	text := strings.Join(corpus, "\n")
	for _, p := range scannerPatterns {
		re, err := compileRegex(p.pattern)
		if err != nil {
			b.Fatal(err)
		}
		variants := []struct {
			name string
			sp   *splitPre
		}{
			{"scanner", &splitPre{scan: knownScanner(p.pattern), behavior: behIsolated}},
			{"regexp2", &splitPre{re: re, behavior: behIsolated}},
		}
		for _, v := range variants {
			b.Run(p.name+"/"+v.name, func(b *testing.B) {
				src := []piece{{s: text, first: true}}
				var dst []piece
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				for b.Loop() {
					dst = v.sp.split(dst[:0], src)
				}
			})
		}
	}
}

// TestSpaceSplit checks that cutting SentencePiece-style words before "▁"
// gives the same ids as running BPE on the whole word: for Llama 2, and for
// Gemma 3, whose vocabulary has one token with a "▁" inside (">▁</").
func TestSpaceSplit(t *testing.T) {
	raw, _ := os.ReadFile("testdata/corpus.json")
	var corpus []string
	_ = json.Unmarshal(raw, &corpus)
	for _, tc := range []struct {
		model      string
		innerSpace int
	}{{"llama2", 0}, {"gemma3", 1}} {
		t.Run(tc.model, func(t *testing.T) {
			tj, err := readMaybeGzip("testdata/models/" + tc.model + "/tokenizer.json")
			if err != nil {
				t.Fatal(err)
			}
			split, err := FromJSON(tj, nil)
			if err != nil {
				t.Fatal(err)
			}
			whole, _ := FromJSON(tj, nil)
			if !split.model.spaceSplit || len(split.model.innerSpace) != tc.innerSpace {
				t.Fatalf("spaceSplit %v with %d inner-space tokens, want true with %d", split.model.spaceSplit, len(split.model.innerSpace), tc.innerSpace)
			}
			whole.model.spaceSplit = false
			alphabet := []rune("ab▁▁▁ 中😀\u0301xyz.,></>▁</")
			r := rand.New(rand.NewPCG(3, 5))
			var texts []string
			for n := 0; n < 3000; n++ {
				rs := make([]rune, 1+r.IntN(80))
				for i := range rs {
					rs[i] = alphabet[r.IntN(len(alphabet))]
				}
				texts = append(texts, string(rs))
			}
			texts = append(texts, strings.Join(corpus, "\n"), "a>▁</b x> </y", "<b>x</b> <i>y</i>")
			for _, s := range texts {
				got := fmt.Sprint(split.Encode(s, EncodeOptions{}))
				want := fmt.Sprint(whole.Encode(s, EncodeOptions{}))
				if got != want {
					t.Fatalf("%q:\nsplit %s\nwhole %s", s, got, want)
				}
			}
		})
	}
}
