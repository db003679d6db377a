package tokenizer_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// BenchmarkEncode measures encode throughput (MB/s) on the corpus for each
// tokenizer as configured ("fast") and, as the baseline, with regexp2
// running the same split pattern instead of the hand-written scanner, or,
// for Llama 2 and Gemma (no split pattern), with BPE over whole segments
// instead of space-separated pieces ("baseline"). The same text every
// time: once cached, Gemma's whole lines cost a lookup each, so its
// baseline may be the faster here (BenchmarkEncodeNewText is not).
func BenchmarkEncode(b *testing.B) {
	text := strings.Join(readCorpus(b), "\n")
	for _, name := range append(models, "demo") {
		tj, cj := modelFiles(b, name)
		for _, variant := range []string{"fast", "baseline"} {
			tok := variantTokenizer(b, tj, cj, variant)
			b.Run(name+"/"+variant, func(b *testing.B) {
				var dst []int
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				for b.Loop() {
					dst = tok.AppendEncode(dst[:0], text, tokenizer.EncodeOptions{})
				}
			})
		}
	}
}

// BenchmarkEncodeNewText encodes lines never seen before, made of the
// corpus's words in random order, with the word cache warm: text as a
// server sees it, where BenchmarkEncode's repeated text is all in the
// cache (for tokenizers without a pre-tokenizer, whole lines).
func BenchmarkEncodeNewText(b *testing.B) {
	words := strings.Fields(strings.Join(readCorpus(b), " "))
	for _, name := range models {
		tj, cj := modelFiles(b, name)
		for _, variant := range []string{"fast", "baseline"} {
			tok := variantTokenizer(b, tj, cj, variant)
			b.Run(name+"/"+variant, func(b *testing.B) {
				r := rand.New(rand.NewPCG(1, 2))
				lines := make([]string, 4096)
				newLines := func() {
					for i := range lines {
						var sb strings.Builder
						for range 12 {
							sb.WriteString(words[r.IntN(len(words))])
							sb.WriteByte(' ')
						}
						lines[i] = sb.String()
					}
				}
				for range 4 { // warm the cache with the words
					newLines()
					for _, l := range lines {
						tok.Encode(l, tokenizer.EncodeOptions{})
					}
				}
				var dst []int
				var n, bytes int
				b.ReportAllocs()
				for b.Loop() {
					if n%len(lines) == 0 {
						b.StopTimer()
						newLines()
						b.StartTimer()
					}
					l := lines[n%len(lines)]
					dst = tok.AppendEncode(dst[:0], l, tokenizer.EncodeOptions{})
					n++
					bytes += len(l)
				}
				b.ReportMetric(float64(bytes)/b.Elapsed().Seconds()/1e6, "MB/s")
			})
		}
	}
}

// BenchmarkDecode measures decoding and streaming decoding of the encoded
// corpus.
func BenchmarkDecode(b *testing.B) {
	text := strings.Join(readCorpus(b), "\n")
	for _, name := range models {
		tok := mustModel(b, name)
		ids := tok.Encode(text, tokenizer.EncodeOptions{})
		b.Run(name+"/Decode", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				tok.Decode(ids, false)
			}
		})
		b.Run(name+"/Stream", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				d := tok.NewStreamDecoder(false)
				for _, id := range ids {
					d.Add(id)
				}
				d.Flush()
			}
		})
	}
}

// BenchmarkEncodeParallel encodes from every core at once (the word cache
// is shared).
func BenchmarkEncodeParallel(b *testing.B) {
	text := strings.Join(readCorpus(b), "\n")
	for _, name := range []string{"llama3", "qwen3"} {
		tok := mustModel(b, name)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.RunParallel(func(pb *testing.PB) {
				var dst []int
				for pb.Next() {
					dst = tok.AppendEncode(dst[:0], text, tokenizer.EncodeOptions{})
				}
			})
		})
	}
}

// variantTokenizer loads a tokenizer with the fast paths (scanners, the
// split at spaces) on for variant "fast" and off for "baseline".
func variantTokenizer(b *testing.B, tj, cj []byte, variant string) *tokenizer.Tokenizer {
	b.Helper()
	tokenizer.SetUseScanners(variant == "fast")
	tokenizer.SetSpaceSplit(variant == "fast")
	tok, err := tokenizer.FromJSON(tj, cj)
	tokenizer.SetUseScanners(true)
	tokenizer.SetSpaceSplit(true)
	if err != nil {
		b.Fatal(err)
	}
	return tok
}
