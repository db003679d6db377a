package tokenizer_test

import (
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// BenchmarkEncode measures encode throughput (MB/s) on the corpus for each
// tokenizer as configured ("fast") and, as the baseline, with regexp2
// running the same split pattern instead of the hand-written scanner, or,
// for Llama 2 (no split pattern), with BPE over whole segments instead of
// space-separated pieces ("baseline").
func BenchmarkEncode(b *testing.B) {
	text := strings.Join(readCorpus(b), "\n")
	for _, name := range append(models, "demo") {
		tj, cj := modelFiles(b, name)
		for _, variant := range []string{"fast", "baseline"} {
			tokenizer.SetUseScanners(variant == "fast")
			tokenizer.SetSpaceSplit(variant == "fast")
			tok, err := tokenizer.FromJSON(tj, cj)
			tokenizer.SetUseScanners(true)
			tokenizer.SetSpaceSplit(true)
			if err != nil {
				b.Fatal(err)
			}
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
