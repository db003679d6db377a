package tokenizer_test

import (
	"slices"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// TestGolden compares every corpus line with the ids and decodings of
// Hugging Face's tokenizer (testdata/gen/gen.mjs).
func TestGolden(t *testing.T) {
	for _, name := range append(models, "demo") {
		t.Run(name, func(t *testing.T) { checkGolden(t, name, mustModel(t, name)) })
	}
}

// TestGoldenRegexp2 runs the split patterns that have hand-written
// scanners through regexp2 instead: the path the scanners are compared
// with (TestScanners, FuzzScanners) matches Hugging Face too.
func TestGoldenRegexp2(t *testing.T) {
	for _, name := range []string{"llama3", "qwen3", "gpt4o"} {
		t.Run(name, func(t *testing.T) {
			tj, cj := modelFiles(t, name)
			tokenizer.SetUseScanners(false)
			tok, err := tokenizer.FromJSON(tj, cj)
			tokenizer.SetUseScanners(true)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, name, tok)
		})
	}
}

func checkGolden(t *testing.T, name string, tok *tokenizer.Tokenizer) {
	lines := readGolden(t, name)
	if len(lines) != len(readCorpus(t)) {
		t.Fatalf("golden has %d lines, corpus %d: regenerate with testdata/gen", len(lines), len(readCorpus(t)))
	}
	bad := 0
	for i, l := range lines {
		check := func(what string, got, want []int) {
			if !slices.Equal(got, want) {
				bad++
				if bad <= 15 {
					t.Errorf("line %d %q %s:\n got %v\nwant %v", i, trunc(l.Text), what, got, want)
				}
			}
		}
		check("ids", tok.Encode(l.Text, tokenizer.EncodeOptions{AddSpecialTokens: true, ParseSpecial: true}), l.IDs)
		check("ids_no_special", tok.Encode(l.Text, tokenizer.EncodeOptions{ParseSpecial: true}), l.IDsNoSpecial)
		check("ids_no_parse", tok.Encode(l.Text, tokenizer.EncodeOptions{}), l.IDsNoParse)
		if got := tok.Decode(l.IDs, false); got != l.Decode {
			bad++
			t.Errorf("line %d decode:\n got %q\nwant %q", i, got, l.Decode)
		}
		if got := tok.Decode(l.IDs, true); got != l.DecodeSkip {
			bad++
			t.Errorf("line %d decode skip special:\n got %q\nwant %q", i, got, l.DecodeSkip)
		}
	}
	t.Logf("%s: %d lines, %d mismatches", name, len(lines), bad)
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
