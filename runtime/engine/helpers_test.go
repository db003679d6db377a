package engine_test

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

var (
	libOnce sync.Once
	libVal  *engine.Library
	libErr  error
)

// engineLib runs the engine tests against another backend library, e.g.
// go test ./runtime/engine -args -engine-lib $PWD/build/libnozzle_cuda.so
var engineLib = flag.String("engine-lib", "", "engine library to test (default: build/libnozzle_cpu.so)")

// openLib loads build/libnozzle_cpu.so (found from the package folder up)
// or -engine-lib. Tests skip when the CPU library has not been built; a
// library that exists but fails to load is a failure.
func openLib(t testing.TB) *engine.Library {
	t.Helper()
	if *engineLib == "" {
		if _, err := engine.Find(engine.DefaultLibrary); err != nil {
			t.Skipf("engine library not built (make build/libnozzle_cpu.so): %v", err)
		}
	}
	libOnce.Do(func() { libVal, libErr = engine.Open(*engineLib) })
	if libErr != nil {
		t.Fatal(libErr)
	}
	return libVal
}

// tinySpec is the base shape of the test models: GQA 4:2, head_dim 8.
func tinySpec(seed uint64) model.Spec {
	return model.Spec{VocabSize: 96, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, Seed: seed, DType: "F32"}
}

func openModel(t testing.TB, spec model.Spec) *model.Model {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if err := model.WriteRandomModel(dir, spec); err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func openAdapter(t testing.TB, m *model.Model, spec model.AdapterSpec) *model.Adapter {
	t.Helper()
	spec.Base = m.Info()
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := model.WriteRandomAdapter(dir, spec); err != nil {
		t.Fatal(err)
	}
	a, err := model.LoadAdapter(dir, m.Info(), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func testOptions() engine.Options {
	return engine.Options{MaxSlots: 4, MaxRank: 16, KVBlockSize: 4, KVBlocks: 128, Threads: 1, MaxBatchTokens: 256, MaxBatchSeqs: 16}
}

func newEngine(t testing.TB, m *model.Model, opts engine.Options) *engine.Engine {
	t.Helper()
	e, err := openLib(t).NewEngine(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// seq is a sequence as the tests drive it: its tokens, how many are in the
// KV cache, its blocks and adapter slot.
type seq struct {
	tokens []int32
	done   int
	blocks []int32
	slot   int
	seed   uint64
	temp   float32
	topK   int
	topP   float32
}

// harness runs steps on an engine with block tables drawn from a shuffled
// free list, so consecutive positions land in scattered blocks.
type harness struct {
	t         testing.TB
	e         *engine.Engine
	bs        int
	maxBlocks int
	free      []int32
	b         engine.Batch
}

func newHarness(t testing.TB, e *engine.Engine, seed uint64) *harness {
	info := e.Info()
	h := &harness{t: t, e: e, bs: info.KVBlockSize, maxBlocks: 64}
	for i := 0; i < info.KVNumBlocks; i++ {
		h.free = append(h.free, int32(i))
	}
	r := rand.New(rand.NewPCG(seed, 1))
	r.Shuffle(len(h.free), func(i, j int) { h.free[i], h.free[j] = h.free[j], h.free[i] })
	return h
}

func (h *harness) release(s *seq) {
	h.free = append(h.free, s.blocks...)
	s.blocks, s.done = nil, 0
}

// part is one sequence's share of a step: its next n tokens.
type part struct {
	s *seq
	n int
}

// step feeds each part's next tokens, samples every part, and returns each
// part's logits (copied) and sampled token.
func (h *harness) step(parts ...part) ([][]float32, []int32, error) {
	h.b.Reset(h.maxBlocks, 0)
	h.b.Logits = true
	for _, p := range parts {
		s := p.s
		end := s.done + p.n
		for len(s.blocks)*h.bs < end {
			if len(h.free) == 0 {
				h.t.Fatal("KV pool exhausted")
			}
			s.blocks = append(s.blocks, h.free[len(h.free)-1])
			h.free = h.free[:len(h.free)-1]
		}
		h.b.Add(engine.Seq{Tokens: s.tokens[s.done:end], Pos: s.done, Slot: s.slot, Blocks: s.blocks, Sample: true,
			Temperature: s.temp, TopK: s.topK, TopP: s.topP, Seed: s.seed})
	}
	if err := h.e.Step(&h.b); err != nil {
		return nil, nil, err
	}
	V := h.e.VocabSize()
	logits := make([][]float32, len(parts))
	for i, p := range parts {
		logits[i] = append([]float32(nil), h.b.OutLogits[i*V:(i+1)*V]...)
		p.s.done += p.n
	}
	return logits, append([]int32(nil), h.b.OutToken...), nil
}

func (h *harness) mustStep(parts ...part) ([][]float32, []int32) {
	h.t.Helper()
	l, tok, err := h.step(parts...)
	if err != nil {
		h.t.Fatal(err)
	}
	return l, tok
}

func randomTokens(r *rand.Rand, n, vocab int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.IntN(vocab))
	}
	return out
}

// logitsErr returns the largest |got-want| relative to max(1, max|want|).
func logitsErr(got []float32, want []float64) (float64, int) {
	scale := 1.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		if math.IsNaN(d) {
			return math.Inf(1), i
		}
		if d > worst {
			worst, at = d, i
		}
	}
	return worst / scale, at
}

func checkLogits(t testing.TB, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(want))
	}
	if e, at := logitsErr(got, want); e > tol {
		t.Errorf("%s: relative error %.3g > %.3g at token %d (engine %v, reference %v)", what, e, tol, at, got[at], want[at])
	}
}

func argmax64(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func firstDiff(a, b []float32) string {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return fmt.Sprintf("token %d: %v vs %v", i, a[i], b[i])
		}
	}
	return "none"
}
