package engine_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// benchSpec is a small Llama (~14M parameters, bf16) for go test -bench.
func benchSpec() model.Spec {
	return model.Spec{VocabSize: 4096, HiddenSize: 512, IntermediateSize: 1408, NumLayers: 4, NumHeads: 8, NumKVHeads: 2, Seed: 77, DType: safetensors.BF16}
}

// decodeBatch builds a decode step of n sequences at position pos, each
// with its own blocks, the i-th on slot slots[i%len(slots)].
func decodeBatch(b *engine.Batch, n, pos, bs int, slots []int) {
	maxBlocks := pos/bs + 1
	b.Reset(maxBlocks, 0)
	blocks := make([]int32, maxBlocks)
	for i := 0; i < n; i++ {
		for k := range blocks {
			blocks[k] = int32(i*maxBlocks + k)
		}
		b.Add(engine.Seq{Tokens: []int32{int32(i + 5)}, Pos: pos, Slot: slots[i%len(slots)], Blocks: blocks, Sample: true})
	}
}

// TestStep_NoAllocs: a steady-state step allocates nothing in Go.
func TestStep_NoAllocs(t *testing.T) {
	m := openModel(t, tinySpec(21))
	e := newEngine(t, m, testOptions())
	var b engine.Batch
	decodeBatch(&b, 4, 9, 4, []int{-1})
	// Prefill the caches once.
	if err := e.Step(&b); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if err := e.Step(&b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Step allocates %v times per call", allocs)
	}
}

func BenchmarkStep(b *testing.B) {
	m := openModel(b, benchSpec())
	opts := engine.Options{MaxSlots: 8, MaxRank: 16, KVBlockSize: 16, KVBlocks: 512, MaxBatchTokens: 512, MaxBatchSeqs: 64}
	e := newEngine(b, m, opts)
	for slot := 0; slot < 8; slot++ {
		a := openAdapter(b, m, model.AdapterSpec{Rank: 16, Seed: uint64(slot), DType: safetensors.BF16})
		if err := e.LoadAdapter(slot, a); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{1, 8} {
		for _, mix := range []struct {
			name  string
			slots []int
		}{{"base", []int{-1}}, {"1adapter", []int{0}}, {"8adapters", []int{0, 1, 2, 3, 4, 5, 6, 7}}} {
			b.Run(fmt.Sprintf("decode/batch%d/%s", n, mix.name), func(b *testing.B) {
				var batch engine.Batch
				decodeBatch(&batch, n, 64, 16, mix.slots)
				b.ReportAllocs()
				for b.Loop() {
					if err := e.Step(&batch); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
	b.Run("prefill/128", func(b *testing.B) {
		var batch engine.Batch
		batch.Reset(8, 0)
		prompt := randomTokens(rand.New(rand.NewPCG(1, 1)), 128, 4096)
		batch.Add(engine.Seq{Tokens: prompt, Slot: 0, Blocks: []int32{0, 1, 2, 3, 4, 5, 6, 7}, Sample: true})
		b.ReportAllocs()
		for b.Loop() {
			if err := e.Step(&batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(128*b.N)/b.Elapsed().Seconds(), "tokens/s")
	})

	// Scoring a prompt (echo with logprobs): every token's logits through
	// the LM head and log-softmax, beside the same prefill unscored.
	prompt := randomTokens(rand.New(rand.NewPCG(2, 2)), 64, 4096)
	for _, scored := range []bool{false, true} {
		name := "prefill/64"
		var score []int32
		if scored {
			name += "/scored"
			score = append(append([]int32(nil), prompt[1:]...), -1)
		}
		b.Run(name, func(b *testing.B) {
			var batch engine.Batch
			batch.Reset(4, 5)
			batch.Add(engine.Seq{Tokens: prompt, Slot: 0, Blocks: []int32{0, 1, 2, 3}, Sample: true, Score: score})
			for b.Loop() {
				if err := e.Step(&batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(64*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

func BenchmarkLoadAdapter(b *testing.B) {
	m := openModel(b, benchSpec())
	e := newEngine(b, m, engine.Options{MaxSlots: 2, MaxRank: 16, KVBlocks: 16})
	a := openAdapter(b, m, model.AdapterSpec{Rank: 16, Seed: 1, DType: safetensors.BF16})
	var bytes int64
	for _, l := range a.LoRAs {
		bytes += int64(len(l.A.Data) + len(l.B.Data))
	}
	b.SetBytes(bytes)
	for b.Loop() {
		if err := e.LoadAdapter(1, a); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMerge(b *testing.B) {
	m := openModel(b, benchSpec())
	a := openAdapter(b, m, model.AdapterSpec{Rank: 16, Seed: 1, DType: safetensors.BF16, Modules: []model.Module{model.ModuleGate}, Layers: []int{0}})
	w, _ := m.Weight(model.KindGate, 0)
	b.SetBytes(int64(len(w.Data)))
	for b.Loop() {
		if _, err := engine.Merge(w.Tensor, a.LoRAs[0]); err != nil {
			b.Fatal(err)
		}
	}
	// rank·in·out multiply-adds per merge
	b.ReportMetric(float64(16*w.NumElements()*int64(b.N))/b.Elapsed().Seconds()/1e9, "GFMA/s")
}
