package engine_test

// Tests of the CUDA backend (build/libnozzle_cuda.so) against the CPU
// backend, and the GPU benchmark. They skip with "no CUDA device: ..." where
// the CUDA library is not built, cannot load (no CUDA runtime) or finds no
// GPU. -cuda.lib selects another build of the backend, e.g. the CPU
// emulation of CUDA (make cuda-emu):
//
//	go test ./runtime/engine -run CUDA -args -cuda.lib=$PWD/build/libnozzle_cudaemu.so
//
// The benchmark runs only when asked (scripts/gpu-check.sh does):
//
//	go test ./runtime/engine -run TestCUDABench -args -cuda.bench=/tmp/out

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

var (
	cudaLibFlag        = flag.String("cuda.lib", "", "CUDA engine library for the CUDA tests (default: build/libnozzle_cuda.so, found like the CPU library)")
	cudaBenchFlag      = flag.String("cuda.bench", "", "run TestCUDABench and write its results (bench.txt, nozzle.json) into this folder")
	cudaBenchModelFlag = flag.String("cuda.bench-model", "1b", `TestCUDABench's model: "1b" (Llama-3.2-1B-shaped, 1.24B parameters), "quick" or "tiny"`)
	cudaBenchCacheFlag = flag.String("cuda.bench-cache", filepath.Join(os.TempDir(), "nozzle-cuda-bench"), "cache folder for TestCUDABench's generated model and adapters")
)

var (
	cudaOnce    sync.Once
	cudaLibVal  *engine.Library
	cudaSkipMsg string
	cudaLibErr  error
	cpuOnce     sync.Once
	cpuLibVal   *engine.Library
	cpuLibErr   error
)

// openCUDA loads the CUDA library, or skips the test with the reason there
// is no CUDA device. A library that loads but is broken is a failure.
func openCUDA(t testing.TB) *engine.Library {
	t.Helper()
	cudaOnce.Do(func() {
		path := *cudaLibFlag
		if path == "" {
			p, err := engine.Find("libnozzle_cuda.so")
			if err != nil {
				cudaSkipMsg = "no CUDA device: the CUDA library is not built (make cuda): " + err.Error()
				return
			}
			path = p
		}
		lib, err := engine.Open(path)
		switch {
		case err != nil && strings.Contains(err.Error(), "load engine library"):
			cudaSkipMsg = "no CUDA device: " + err.Error()
		case err != nil:
			cudaLibErr = err
		case !strings.HasPrefix(lib.Backend(), "cuda "):
			cudaLibErr = fmt.Errorf("%s describes itself as %q, want \"cuda <device> sm_XY\"", path, lib.Backend())
		case strings.Contains(lib.Backend(), "no device"):
			cudaSkipMsg = "no CUDA device: " + lib.Backend()
		default:
			cudaLibVal = lib
		}
	})
	if cudaSkipMsg != "" {
		t.Skip(cudaSkipMsg)
	}
	if cudaLibErr != nil {
		t.Fatal(cudaLibErr)
	}
	return cudaLibVal
}

// openCPU loads build/libnozzle_cpu.so, the reference of the CUDA tests.
func openCPU(t testing.TB) *engine.Library {
	t.Helper()
	if _, err := engine.Find(engine.DefaultLibrary); err != nil {
		t.Skipf("the CPU engine library is not built (make build/libnozzle_cpu.so): %v", err)
	}
	cpuOnce.Do(func() { cpuLibVal, cpuLibErr = engine.Open("") })
	if cpuLibErr != nil {
		t.Fatal(cpuLibErr)
	}
	return cpuLibVal
}

// newCUDAEngine creates an engine on the CUDA library; "no CUDA device"
// from nz_engine_create skips the test.
func newCUDAEngine(t testing.TB, lib *engine.Library, m *model.Model, opts engine.Options) *engine.Engine {
	t.Helper()
	e, err := lib.NewEngine(m, opts)
	if err != nil {
		if errors.Is(err, engine.ErrDevice) && strings.Contains(err.Error(), "no CUDA device") {
			t.Skip(err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// cudaPair is the same model on the CPU and the CUDA backend, driven in
// lockstep with the same batches and block tables.
type cudaPair struct {
	t         testing.TB
	cpu, gpu  *engine.Engine
	bs        int
	maxBlocks int
	free      []int32
	b         engine.Batch
	nTop      int
	vocab     int
}

func cudaOptions() engine.Options {
	return engine.Options{MaxSlots: 4, MaxRank: 16, KVBlockSize: 4, KVBlocks: 256, MaxBatchTokens: 256, MaxBatchSeqs: 16}
}

func newCUDAPair(t testing.TB, m *model.Model, opts engine.Options) *cudaPair {
	t.Helper()
	gpuLib := openCUDA(t)
	cpu, err := openCPU(t).NewEngine(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpu.Close() })
	gpu := newCUDAEngine(t, gpuLib, m, opts)
	if g, c := gpu.Info(), cpu.Info(); g.KVNumBlocks != c.KVNumBlocks || g.KVBlockSize != c.KVBlockSize || g.MaxSlots != c.MaxSlots || g.MaxRank != c.MaxRank {
		t.Fatalf("engines differ: CUDA %+v, CPU %+v", g, c)
	}
	p := &cudaPair{t: t, cpu: cpu, gpu: gpu, bs: cpu.Info().KVBlockSize, maxBlocks: 64, vocab: cpu.VocabSize()}
	for i := 0; i < cpu.Info().KVNumBlocks; i++ {
		p.free = append(p.free, int32(i))
	}
	r := rand.New(rand.NewPCG(uint64(len(p.free)), 7))
	r.Shuffle(len(p.free), func(i, j int) { p.free[i], p.free[j] = p.free[j], p.free[i] })
	return p
}

func (p *cudaPair) load(slot int, a *model.Adapter) {
	p.t.Helper()
	if err := p.cpu.LoadAdapter(slot, a); err != nil {
		p.t.Fatal(err)
	}
	if err := p.gpu.LoadAdapter(slot, a); err != nil {
		p.t.Fatal(err)
	}
}

// cudaSeq is a sequence both engines share: its tokens (prompt, then the
// CPU backend's choices), how many are in the caches, its blocks.
type cudaSeq struct {
	tokens []int32
	prompt int
	done   int
	blocks []int32
	slot   int
	temp   float32
	topK   int
	topP   float32
	seed   uint64
}

type cudaPart struct {
	s      *cudaSeq
	n      int
	sample bool
}

// cudaOut is one sampled sequence's outputs on both backends.
type cudaOut struct {
	cpuLogits, gpuLogits []float32
	cpuTok, gpuTok       int32
	cpuLP, gpuLP         float32
	cpuTop, gpuTop       []int32
	cpuTopLP, gpuTopLP   []float32
}

// step runs one batch on both engines; it returns the outputs of the
// sampled parts (nil for the others).
func (p *cudaPair) step(parts ...cudaPart) []*cudaOut {
	p.t.Helper()
	p.b.Reset(p.maxBlocks, p.nTop)
	p.b.Logits = true
	for _, pt := range parts {
		s := pt.s
		end := s.done + pt.n
		for len(s.blocks)*p.bs < end {
			if len(p.free) == 0 {
				p.t.Fatal("KV pool exhausted")
			}
			s.blocks = append(s.blocks, p.free[len(p.free)-1])
			p.free = p.free[:len(p.free)-1]
		}
		p.b.Add(engine.Seq{Tokens: s.tokens[s.done:end], Pos: s.done, Slot: s.slot, Blocks: s.blocks, Sample: pt.sample,
			Temperature: s.temp, TopK: s.topK, TopP: s.topP, Seed: s.seed})
	}
	outs := make([]*cudaOut, len(parts))
	V, k := p.vocab, p.nTop
	for round, e := range []*engine.Engine{p.cpu, p.gpu} {
		if err := e.Step(&p.b); err != nil {
			p.t.Fatalf("%s step: %v", []string{"CPU", "CUDA"}[round], err)
		}
		for i, pt := range parts {
			if !pt.sample {
				continue
			}
			if outs[i] == nil {
				outs[i] = &cudaOut{}
			}
			o := outs[i]
			logits := append([]float32(nil), p.b.OutLogits[i*V:(i+1)*V]...)
			top := append([]int32(nil), p.b.OutTopToken[i*k:(i+1)*k]...)
			topLP := append([]float32(nil), p.b.OutTopLogprob[i*k:(i+1)*k]...)
			if round == 0 {
				o.cpuLogits, o.cpuTok, o.cpuLP, o.cpuTop, o.cpuTopLP = logits, p.b.OutToken[i], p.b.OutLogprob[i], top, topLP
			} else {
				o.gpuLogits, o.gpuTok, o.gpuLP, o.gpuTop, o.gpuTopLP = logits, p.b.OutToken[i], p.b.OutLogprob[i], top, topLP
			}
		}
	}
	for _, pt := range parts {
		pt.s.done += pt.n
	}
	return outs
}

func (p *cudaPair) release(s *cudaSeq) {
	p.free = append(p.free, s.blocks...)
	s.blocks, s.done = nil, 0
}

// cudaScale is max(1, max|v|): logit errors are relative to it.
func cudaScale(v []float32) float64 {
	s := 1.0
	for _, x := range v {
		s = math.Max(s, math.Abs(float64(x)))
	}
	return s
}

// cudaGap is the gap between the largest and second largest logit.
func cudaGap(v []float32) float64 {
	a, b := math.Inf(-1), math.Inf(-1)
	for _, x := range v {
		f := float64(x)
		if f > a {
			a, b = f, a
		} else if f > b {
			b = f
		}
	}
	return a - b
}

// check compares one sampled sequence's outputs: logits within tol
// (relative to max(1, max|logit|)), logprobs within 4·tol, and, for a greedy
// sequence, the same token unless the CPU's two best logits are within
// twice the largest logit difference measured of each other: only then
// can the backends' choices differ (it reports false: a near tie, not
// compared).
func (o *cudaOut) check(t testing.TB, what string, tol float64, greedy bool) bool {
	t.Helper()
	scale := cudaScale(o.cpuLogits)
	worst, at := 0.0, 0
	for i := range o.cpuLogits {
		d := math.Abs(float64(o.gpuLogits[i]) - float64(o.cpuLogits[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, at = d, i
		}
	}
	if worst/scale > tol {
		t.Errorf("%s: logits differ by %.3g (relative %.3g > %.3g) at token %d: CUDA %v, CPU %v", what, worst, worst/scale, tol, at, o.gpuLogits[at], o.cpuLogits[at])
	}
	if d := math.Abs(float64(o.gpuLP - o.cpuLP)); !(d <= 4*tol*scale+1e-5) {
		t.Errorf("%s: logprob CUDA %v, CPU %v", what, o.gpuLP, o.cpuLP)
	}
	for j := range o.cpuTop {
		if d := math.Abs(float64(o.gpuTopLP[j] - o.cpuTopLP[j])); !(d <= 4*tol*scale+1e-5) {
			t.Errorf("%s: top logprob %d: CUDA %v (token %d), CPU %v (token %d)", what, j, o.gpuTopLP[j], o.gpuTop[j], o.cpuTopLP[j], o.cpuTop[j])
		}
		if o.gpuTop[j] != o.cpuTop[j] {
			// Only a near tie may reorder the most likely tokens.
			if d := math.Abs(float64(o.cpuLogits[o.gpuTop[j]] - o.cpuLogits[o.cpuTop[j]])); d > 2*tol*scale {
				t.Errorf("%s: top token %d: CUDA %d, CPU %d (logits %v vs %v)", what, j, o.gpuTop[j], o.cpuTop[j], o.cpuLogits[o.gpuTop[j]], o.cpuLogits[o.cpuTop[j]])
			}
		}
	}
	if !greedy {
		return true
	}
	if cudaGap(o.cpuLogits) <= 2*worst+1e-6*scale {
		return false
	}
	if o.gpuTok != o.cpuTok {
		t.Errorf("%s: greedy token CUDA %d, CPU %d (logits %v vs %v)", what, o.gpuTok, o.cpuTok, o.cpuLogits[o.gpuTok], o.cpuLogits[o.cpuTok])
	}
	return true
}

func cudaTokens(r *rand.Rand, n, vocab int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.IntN(vocab))
	}
	return out
}

func cudaTiny(seed uint64) model.Spec {
	return model.Spec{VocabSize: 96, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, Seed: seed, DType: safetensors.F32}
}

// TestCUDA_Parity runs the same mixed batches on both backends: six
// sequences on three adapters (different ranks, dtypes and module sets)
// and none, joining one step apart, their prompts prefilled in chunks
// while the others decode, then 32 greedy decode steps each, every step
// teacher-forced with the CPU's tokens. Logits, logprobs and top logprobs
// must agree within the weight dtype's tolerance and greedy tokens must be
// identical wherever the CPU's two best logits are not a near tie.
func TestCUDA_Parity(t *testing.T) {
	openCUDA(t)
	cases := []struct {
		name string
		spec func(*model.Spec)
		rank int
		tol  float64
	}{
		{name: "LlamaGQA", tol: 1e-4},
		{name: "Qwen2Window", spec: func(s *model.Spec) {
			s.Arch, s.Tied, s.SlidingWindow, s.MaxWindowLayers, s.RopeTheta = "qwen2", true, 5, 1, 1e6
		}, tol: 1e-4},
		{name: "MistralWindowMQA", spec: func(s *model.Spec) { s.Arch, s.SlidingWindow, s.NumKVHeads = "mistral", 6, 1 }, tol: 1e-4},
		{name: "Llama3RopeHeadDim16", spec: func(s *model.Spec) {
			s.HeadDim = 16
			s.Rope = &model.RopeScaling{Type: model.RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 256}
		}, tol: 1e-4},
		{name: "LinearRopeTiedBiases", spec: func(s *model.Spec) {
			s.Tied, s.AttentionBias, s.MLPBias = true, true, true
			s.Rope = &model.RopeScaling{Type: model.RopeLinear, Factor: 4}
		}, tol: 1e-4},
		{name: "Wide", spec: func(s *model.Spec) {
			s.VocabSize, s.HiddenSize, s.IntermediateSize, s.NumHeads, s.NumKVHeads = 512, 256, 1056, 4, 2
		}, tol: 1e-4},
		{name: "OddSizes", spec: func(s *model.Spec) {
			s.VocabSize, s.HiddenSize, s.IntermediateSize, s.NumHeads, s.NumKVHeads = 101, 36, 60, 6, 3
		}, rank: 12, tol: 1e-4},
		{name: "BF16", spec: func(s *model.Spec) { s.DType = safetensors.BF16 }, tol: 2e-2},
		{name: "BF16Wide", spec: func(s *model.Spec) {
			s.DType, s.VocabSize, s.HiddenSize, s.IntermediateSize, s.NumHeads, s.NumKVHeads = safetensors.BF16, 512, 256, 1056, 4, 2
		}, tol: 2e-2},
		{name: "F16", spec: func(s *model.Spec) { s.DType = safetensors.F16 }, tol: 4e-3},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := cudaTiny(uint64(300 + ci))
			if tc.spec != nil {
				tc.spec(&spec)
			}
			m := openModel(t, spec)
			opts := cudaOptions()
			if tc.rank > 0 {
				opts.MaxRank = tc.rank
			}
			p := newCUDAPair(t, m, opts)
			p.nTop = 5
			r8, r16 := min(8, opts.MaxRank), opts.MaxRank
			// Adapters of realistic strength (B scaled by 0.3: the outputs
			// change clearly, the model does not turn chaotic).
			p.load(0, openAdapter(t, m, model.AdapterSpec{Rank: r8, Seed: 21, BScale: 0.3}))
			p.load(1, openAdapter(t, m, model.AdapterSpec{Rank: r16, Seed: 22, DType: safetensors.BF16, BScale: 0.3}))
			p.load(2, openAdapter(t, m, model.AdapterSpec{Rank: 3, Seed: 23, DType: safetensors.F16, BScale: 0.3,
				Modules: []model.Module{model.ModuleQ, model.ModuleV, model.ModuleDown}}))
			checked, skipped := cudaScenario(t, p, spec.VocabSize, tc.tol, uint64(ci))
			t.Logf("%d greedy tokens identical, %d near ties not compared", checked, skipped)
			if checked < 150 {
				t.Errorf("only %d of 198 greedy tokens were compared", checked)
			}
		})
	}
}

// cudaScenario drives the mixed batches of TestCUDA_Parity and returns how
// many greedy tokens were compared and how many were near ties.
func cudaScenario(t *testing.T, p *cudaPair, vocab int, tol float64, seed uint64) (checked, skipped int) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 99))
	slots := []int{0, -1, 1, 2, 0, -1}
	const decode, chunk = 32, 4
	seqs := make([]*cudaSeq, len(slots))
	for stepN := 0; ; stepN++ {
		var parts []cudaPart
		for i := range seqs {
			if i == stepN {
				seqs[i] = &cudaSeq{tokens: cudaTokens(r, 5+3*i, vocab), slot: slots[i]}
				seqs[i].prompt = len(seqs[i].tokens)
			}
			s := seqs[i]
			if s == nil || len(s.tokens)-s.prompt >= decode+1 {
				continue
			}
			if s.done < s.prompt {
				n := min(chunk, s.prompt-s.done)
				parts = append(parts, cudaPart{s: s, n: n, sample: s.done+n == s.prompt})
			} else {
				parts = append(parts, cudaPart{s: s, n: 1, sample: true})
			}
		}
		if len(parts) == 0 {
			break
		}
		r.Shuffle(len(parts), func(a, b int) { parts[a], parts[b] = parts[b], parts[a] })
		outs := p.step(parts...)
		for k, pt := range parts {
			o := outs[k]
			if o == nil {
				continue
			}
			what := fmt.Sprintf("step %d, slot %d, position %d", stepN, pt.s.slot, pt.s.done-1)
			if o.check(t, what, tol, true) {
				checked++
			} else {
				skipped++
			}
			pt.s.tokens = append(pt.s.tokens, o.cpuTok)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	return checked, skipped
}

// TestCUDA_LongContext: sequences spanning many scattered KV blocks of 2
// positions, prefilled in chunks of 7 and 3 while interleaved.
func TestCUDA_LongContext(t *testing.T) {
	openCUDA(t)
	spec := cudaTiny(401)
	m := openModel(t, spec)
	opts := cudaOptions()
	opts.KVBlockSize = 2
	p := newCUDAPair(t, m, opts)
	r := rand.New(rand.NewPCG(401, 1))
	a := &cudaSeq{tokens: cudaTokens(r, 61, 96), slot: -1}
	b := &cudaSeq{tokens: cudaTokens(r, 47, 96), slot: -1}
	for a.done < len(a.tokens) || b.done < len(b.tokens) {
		var parts []cudaPart
		if a.done < len(a.tokens) {
			parts = append(parts, cudaPart{s: a, n: min(7, len(a.tokens)-a.done), sample: true})
		}
		if b.done < len(b.tokens) {
			parts = append(parts, cudaPart{s: b, n: min(3, len(b.tokens)-b.done), sample: true})
		}
		for k, o := range p.step(parts...) {
			o.check(t, fmt.Sprintf("sequence %d at %d", k, parts[k].s.done), 1e-4, true)
		}
	}
	if len(a.blocks) != 31 {
		t.Errorf("sequence a used %d blocks", len(a.blocks))
	}
}

// TestCUDA_SlotReuse: Y loaded over X gives exactly Y's results in a fresh
// slot, a cleared slot exactly the base model's, on the CUDA backend; and
// each matches the CPU backend.
func TestCUDA_SlotReuse(t *testing.T) {
	openCUDA(t)
	m := openModel(t, cudaTiny(402))
	p := newCUDAPair(t, m, cudaOptions())
	x := openAdapter(t, m, model.AdapterSpec{Rank: 16, Seed: 31})
	y := openAdapter(t, m, model.AdapterSpec{Rank: 4, Seed: 32, Modules: []model.Module{model.ModuleV, model.ModuleGate}})
	prompt := cudaTokens(rand.New(rand.NewPCG(9, 9)), 9, 96)
	run := func(slot int) *cudaOut {
		s := &cudaSeq{tokens: prompt, slot: slot}
		o := p.step(cudaPart{s: s, n: len(prompt), sample: true})[0]
		p.release(s)
		o.check(t, fmt.Sprintf("slot %d", slot), 1e-4, true)
		return o
	}
	base := run(-1)
	p.load(3, y)
	yFresh := run(3)
	p.load(1, x)
	if xr := run(1); bitsEqual(xr.gpuLogits, base.gpuLogits) {
		t.Fatal("adapter X does not change the CUDA logits")
	}
	p.load(1, y)
	if got := run(1); !bitsEqual(got.gpuLogits, yFresh.gpuLogits) {
		t.Errorf("Y loaded over X differs from Y in a fresh slot (%s)", firstDiff(got.gpuLogits, yFresh.gpuLogits))
	}
	for _, e := range []*engine.Engine{p.cpu, p.gpu} {
		if err := e.ClearAdapter(1); err != nil {
			t.Fatal(err)
		}
	}
	if got := run(1); !bitsEqual(got.gpuLogits, base.gpuLogits) {
		t.Errorf("a cleared slot differs from the base model (%s)", firstDiff(got.gpuLogits, base.gpuLogits))
	}
}

// cudaUniform is common.c's nz_rng_uniform.
func cudaUniform(seed uint64, pos int64) float64 {
	mix := func(x uint64) uint64 {
		x += 0x9E3779B97F4A7C15
		x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
		x = (x ^ (x >> 27)) * 0x94D049BB133111EB
		return x ^ (x >> 31)
	}
	return float64(mix(mix(seed)^uint64(pos))>>11) * 0x1p-53
}

// cudaSampleRef is the sampler's definition (nozzle_engine.h) in float64
// over the CPU's logits: the token it draws, and how far the draw is from
// changing (the smallest relative distance of u·mass to a cumulative
// boundary, of the top_p cut to its threshold, and of the top_k cut to the
// next logit).
func cudaSampleRef(logits []float32, temp, topP float32, topK int, u float64) (int, float64) {
	V := len(logits)
	ids := make([]int, V)
	for i := range ids {
		ids[i] = i
	}
	sort.SliceStable(ids, func(a, b int) bool { return logits[ids[a]] > logits[ids[b]] })
	m := logits[ids[0]]
	invt := 1 / temp
	q := func(i int) float64 { return math.Exp(float64((logits[i] - m) * invt)) }
	margin := math.Inf(1)
	k := V
	if topK > 0 && topK < V {
		k = topK
		margin = math.Min(margin, float64(logits[ids[k-1]]-logits[ids[k]])/cudaScale(logits))
	}
	mass := 0.0
	for _, i := range ids[:k] {
		mass += q(i)
	}
	keep := k
	if topP < 1 {
		need, c := float64(topP)*mass, 0.0
		for j, i := range ids[:k] {
			prev := c
			c += q(i)
			if c >= need {
				keep = j + 1
				margin = math.Min(margin, (c-need)/mass)
				if j > 0 {
					margin = math.Min(margin, (need-prev)/mass)
				}
				break
			}
		}
	}
	kept := append([]int(nil), ids[:keep]...)
	sort.Ints(kept)
	total := 0.0
	for _, i := range kept {
		total += q(i)
	}
	target, c, tok := u*total, 0.0, kept[len(kept)-1]
	found := false
	for _, i := range kept {
		c += q(i)
		margin = math.Min(margin, math.Abs(c-target)/total)
		if !found && c > target {
			tok, found = i, true
		}
	}
	return tok, margin
}

// TestCUDA_Sampling: temperature, top_k and top_p draws pick the same
// token on both backends for the same seed (where the draw is not within
// 1e-4 of a boundary), in a batch of many sequences or alone; each agrees
// with the sampler's definition.
func TestCUDA_Sampling(t *testing.T) {
	openCUDA(t)
	m := openModel(t, cudaTiny(403))
	opts := cudaOptions()
	opts.KVBlocks = 512
	p := newCUDAPair(t, m, opts)
	p.nTop = 3
	prompt := cudaTokens(rand.New(rand.NewPCG(403, 3)), 10, 96)
	type sc struct {
		temp float32
		topK int
		topP float32
	}
	var cases []sc
	for _, temp := range []float32{0.7, 1, 2.5} {
		for _, topK := range []int{0, 1, 5, 40} {
			for _, topP := range []float32{1, 0.9, 0.5, 1e-6} {
				cases = append(cases, sc{temp, topK, topP})
			}
		}
	}
	const seeds, per = 4, 12 // a step carries 12 sequences, each a different case
	compared, drawn := 0, map[int32]bool{}
	alone := map[int]int32{}
	for seed := uint64(0); seed < seeds; seed++ {
		for c0 := 0; c0 < len(cases); c0 += per {
			var parts []cudaPart
			for _, c := range cases[c0:min(len(cases), c0+per)] {
				parts = append(parts, cudaPart{s: &cudaSeq{tokens: prompt, slot: -1, temp: c.temp, topK: c.topK, topP: c.topP, seed: seed}, n: len(prompt), sample: true})
			}
			for k, o := range p.step(parts...) {
				c := cases[c0+k]
				what := fmt.Sprintf("seed %d temperature %v top_k %d top_p %v", seed, c.temp, c.topK, c.topP)
				o.check(t, what, 1e-4, false)
				want, margin := cudaSampleRef(o.cpuLogits, c.temp, c.topP, c.topK, cudaUniform(seed, int64(len(prompt))))
				if margin > 1e-6 && int32(want) != o.cpuTok {
					t.Errorf("%s: the CPU backend drew %d, the sampler's definition %d", what, o.cpuTok, want)
				}
				if margin > 1e-4 {
					compared++
					if o.gpuTok != o.cpuTok {
						t.Errorf("%s: CUDA drew %d, CPU %d", what, o.gpuTok, o.cpuTok)
					}
					if seed == 0 {
						alone[c0+k] = o.gpuTok
					}
				}
				drawn[o.gpuTok] = true
			}
			for _, pt := range parts {
				p.release(pt.s)
			}
		}
	}
	// The same draws one at a time: the batch does not change them.
	for k, tok := range alone {
		if k%5 != 0 {
			continue
		}
		c := cases[k]
		s := &cudaSeq{tokens: prompt, slot: -1, temp: c.temp, topK: c.topK, topP: c.topP, seed: 0}
		if o := p.step(cudaPart{s: s, n: len(prompt), sample: true})[0]; o.gpuTok != tok {
			t.Errorf("case %+v: CUDA drew %d alone, %d in a batch", c, o.gpuTok, tok)
		}
		p.release(s)
	}
	t.Logf("%d of %d draws compared, %d distinct tokens", compared, seeds*len(cases), len(drawn))
	if compared < seeds*len(cases)*3/4 || len(drawn) < 5 {
		t.Errorf("too few draws compared (%d) or distinct tokens (%d)", compared, len(drawn))
	}
}

// TestCUDA_Errors: device memory exhaustion and a bad device are errors,
// not crashes, and an engine keeps working after a bad step.
func TestCUDA_Errors(t *testing.T) {
	lib := openCUDA(t)
	m := openModel(t, cudaTiny(404))
	opts := cudaOptions()
	opts.KVBlockSize, opts.KVBlocks = 4096, 1<<20 // 512 GiB of KV cache
	if e, err := lib.NewEngine(m, opts); !errors.Is(err, engine.ErrOutOfMemory) {
		if e != nil {
			e.Close()
		}
		t.Errorf("a 512 GiB KV pool: %v, want out of memory", err)
	}
	opts = cudaOptions()
	opts.DeviceIndex = 4000
	if e, err := lib.NewEngine(m, opts); !errors.Is(err, engine.ErrInvalid) {
		if e != nil {
			e.Close()
		}
		t.Errorf("device 4000: %v, want invalid", err)
	}
	e := newCUDAEngine(t, lib, m, cudaOptions())
	var b engine.Batch
	b.Reset(1, 0)
	b.Add(engine.Seq{Tokens: []int32{1, 96}, Slot: -1, Blocks: []int32{0}, Sample: true})
	if err := e.Step(&b); !errors.Is(err, engine.ErrInvalid) {
		t.Errorf("token 96: %v", err)
	}
	b.Reset(1, 0)
	b.Add(engine.Seq{Tokens: []int32{1, 2, 3}, Slot: -1, Blocks: []int32{0}, Sample: true})
	if err := e.Step(&b); err != nil {
		t.Fatalf("step after an error: %v", err)
	}
	bw, err := lib.ReadBandwidth(64<<20, 2, 0)
	if err != nil || !(bw > 0) {
		t.Errorf("read bandwidth %v, %v", bw, err)
	}
}

// cudaBenchSpec is the benchmark's model.
func cudaBenchSpec(name string) (model.Spec, error) {
	switch name {
	case "1b": // Llama 3.2 1B's shape: 1.24B parameters, tied embeddings
		return model.Spec{VocabSize: 128256, HiddenSize: 2048, IntermediateSize: 8192, NumLayers: 16, NumHeads: 32, NumKVHeads: 8,
			Tied: true, RopeTheta: 500000, MaxPosition: 4096, DType: safetensors.BF16, Seed: 20250101,
			Rope: &model.RopeScaling{Type: model.RopeLlama3, Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}}, nil
	case "quick":
		return engine.QuickBenchModel(), nil
	case "tiny":
		return model.Spec{VocabSize: 512, HiddenSize: 128, IntermediateSize: 256, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
			RopeTheta: 500000, MaxPosition: 1024, DType: safetensors.BF16, Seed: 20250102}, nil
	}
	return model.Spec{}, fmt.Errorf("-cuda.bench-model %q: want 1b, quick or tiny", name)
}

// cudaBenchResult is what TestCUDABench writes to nozzle.json (besides
// engine.Bench's report in bench.txt).
type cudaBenchResult struct {
	Backend             string             `json:"backend"`
	ModelDir            string             `json:"model_dir"`
	AdapterDirs         []string           `json:"adapter_dirs"`
	Params              int64              `json:"params"`
	WeightBytes         int64              `json:"weight_bytes"`
	ReadBandwidth       float64            `json:"read_bandwidth_bytes_per_s"`
	Prompt              int                `json:"prompt_tokens"`
	DecodeSteps         int                `json:"decode_steps"`
	Decode              []cudaBenchDecode  `json:"decode"`
	Batch1Efficiency    float64            `json:"batch1_bandwidth_efficiency"`
	AdapterBytes        int64              `json:"adapter_bytes"`
	AdapterLoadCall     float64            `json:"adapter_load_call_s"`
	AdapterLoadReady    float64            `json:"adapter_load_until_usable_s"`
	AdapterUploadBps    float64            `json:"adapter_upload_bytes_per_s"`
	DistinctCost        map[string]float64 `json:"distinct_adapter_cost"`
	BenchReportFile     string             `json:"bench_report_file"`
	BenchReportError    string             `json:"bench_report_error,omitempty"`
	TotalSeconds        float64            `json:"total_seconds"`
	DecodeContextLength int                `json:"decode_context_tokens"`
}

type cudaBenchDecode struct {
	Batch        int     `json:"batch"`
	Adapters     string  `json:"adapters"`
	TokensPerSec float64 `json:"tokens_per_s"`
	StepMs       float64 `json:"step_ms_median"`
}

// TestCUDABench measures the CUDA engine on a Llama-shaped model with 32
// rank-16 adapters on all seven modules (generated into -cuda.bench-cache):
// engine.Bench's report (what `nozzle bench engine` prints), then decode
// after a 128-token prompt at batch 1, 32 and 128 with no adapter, one
// adapter and 32 distinct adapters (the figures the Hugging Face PEFT
// reference in scripts/gpu/hf_bench.py is compared with), batch-1
// bandwidth efficiency, and an adapter upload until it is usable.
func TestCUDABench(t *testing.T) {
	if *cudaBenchFlag == "" {
		t.Skip("set -cuda.bench=<folder> to run the CUDA benchmark")
	}
	lib := openCUDA(t)
	start := time.Now()
	spec, err := cudaBenchSpec(*cudaBenchModelFlag)
	if err != nil {
		t.Fatal(err)
	}
	out := *cudaBenchFlag
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	res := cudaBenchResult{Backend: lib.Backend(), BenchReportFile: filepath.Join(out, "bench.txt"), DistinctCost: map[string]float64{}}

	// engine.Bench: the same code `nozzle bench engine` runs.
	f, err := os.Create(res.BenchReportFile)
	if err != nil {
		t.Fatal(err)
	}
	bopts := engine.BenchOptions{CacheDir: *cudaBenchCacheFlag, Model: spec, Adapters: 32, Rank: 16, Batches: []int{1, 32, 128},
		Steps: 16, Warmup: 2, Rounds: 2, MergeRequests: 2, MergeAdapters: 16}
	if *cudaBenchModelFlag == "tiny" {
		bopts.Adapters, bopts.Batches, bopts.Steps, bopts.Rounds, bopts.MergeAdapters, bopts.BandwidthBytes = 4, []int{1, 4}, 2, 1, 4, 1<<20
	}
	if err := engine.Bench(t.Context(), lib, bopts, f); err != nil {
		res.BenchReportError = err.Error()
		t.Errorf("engine.Bench: %v", err)
	}
	f.Close()

	// The generated files (engine.Bench's cache: one bench-* folder per spec).
	dirs, _ := filepath.Glob(filepath.Join(*cudaBenchCacheFlag, "bench-*", "complete"))
	var root string
	for _, d := range dirs {
		cand := filepath.Dir(d)
		if mm, err := model.Open(filepath.Join(cand, "model")); err == nil {
			if mm.Config.HiddenSize == spec.HiddenSize && mm.Config.NumLayers == spec.NumLayers && mm.Config.VocabSize == spec.VocabSize {
				root = cand
			}
			mm.Close()
		}
	}
	if root == "" {
		t.Fatalf("no generated benchmark model under %s", *cudaBenchCacheFlag)
	}
	res.ModelDir = filepath.Join(root, "model")
	res.AdapterDirs, _ = filepath.Glob(filepath.Join(root, "adapter-*"))
	sort.Strings(res.AdapterDirs)
	m, err := model.Open(res.ModelDir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, w := range m.Weights() {
		res.Params += w.NumElements()
	}
	adapters := make([]*model.Adapter, len(res.AdapterDirs))
	for i, d := range res.AdapterDirs {
		if adapters[i], err = model.LoadAdapter(d, m.Info(), 16); err != nil {
			t.Fatal(err)
		}
		defer adapters[i].Close()
	}
	nAd := len(adapters)
	batches := []int{1, 32, 128}
	res.Prompt, res.DecodeSteps = 128, 32
	if *cudaBenchModelFlag == "tiny" {
		batches, res.Prompt, res.DecodeSteps = []int{1, 4}, 16, 4
	}
	maxB := batches[len(batches)-1]
	const bs = 16
	ctxLen := res.Prompt + res.DecodeSteps + 4
	res.DecodeContextLength = ctxLen
	perSeq := (ctxLen + bs - 1) / bs
	e := newCUDAEngine(t, lib, m, engine.Options{MaxSlots: nAd, MaxRank: 16, KVBlockSize: bs, KVBlocks: maxB * perSeq,
		MaxBatchTokens: 4096, MaxBatchSeqs: maxB, MaxPosition: 4096})
	info := e.Info()
	res.WeightBytes = info.WeightBytes
	if res.ReadBandwidth, err = lib.ReadBandwidth(1<<30, 10, 0); err != nil {
		t.Fatal(err)
	}
	if *cudaBenchModelFlag == "tiny" {
		res.ReadBandwidth, _ = lib.ReadBandwidth(1<<20, 1, 0)
	}
	for i, a := range adapters {
		if err := e.LoadAdapter(i, a); err != nil {
			t.Fatal(err)
		}
	}
	var b engine.Batch
	r := rand.New(rand.NewPCG(5, 5))
	// decode runs n sequences (slots[i]) through the prompt in chunks,
	// then times decode steps; it returns the tokens/s and the median step.
	decode := func(slots []int) (float64, float64) {
		n := len(slots)
		seqs := make([][]int32, n)
		for i := range seqs {
			seqs[i] = cudaTokens(r, res.Prompt, spec.VocabSize)
		}
		blocks := func(i int) []int32 {
			bl := make([]int32, perSeq)
			for k := range bl {
				bl[k] = int32(i*perSeq + k)
			}
			return bl
		}
		per := max(1, 4096/res.Prompt)
		for i0 := 0; i0 < n; i0 += per {
			b.Reset(perSeq, 0)
			for i := i0; i < min(n, i0+per); i++ {
				b.Add(engine.Seq{Tokens: seqs[i], Slot: slots[i], Blocks: blocks(i), Sample: true})
			}
			if err := e.Step(&b); err != nil {
				t.Fatal(err)
			}
			for k := range b.OutToken {
				seqs[i0+k] = append(seqs[i0+k], b.OutToken[k])
			}
		}
		var times []float64
		var total time.Duration
		for s := 0; s < res.DecodeSteps+2; s++ {
			b.Reset(perSeq, 0)
			for i := 0; i < n; i++ {
				b.Add(engine.Seq{Tokens: seqs[i][len(seqs[i])-1:], Pos: len(seqs[i]) - 1, Slot: slots[i], Blocks: blocks(i), Sample: true})
			}
			t0 := time.Now()
			if err := e.Step(&b); err != nil {
				t.Fatal(err)
			}
			d := time.Since(t0)
			if s >= 2 { // two warm-up steps (graph capture)
				times = append(times, d.Seconds())
				total += d
			}
			for i := range seqs {
				seqs[i] = append(seqs[i], b.OutToken[i])
			}
		}
		sort.Float64s(times)
		return float64(n*res.DecodeSteps) / total.Seconds(), 1e3 * times[len(times)/2]
	}
	tps := map[string]float64{}
	for _, n := range batches {
		for _, mix := range []string{"none", "one", "distinct"} {
			slots := make([]int, n)
			for i := range slots {
				slots[i] = map[string]int{"none": -1, "one": 0, "distinct": i % nAd}[mix]
			}
			v, med := decode(slots)
			tps[fmt.Sprint(n, mix)] = v
			res.Decode = append(res.Decode, cudaBenchDecode{Batch: n, Adapters: mix, TokensPerSec: v, StepMs: med})
			t.Logf("decode batch %3d adapters %-8s %10.1f tokens/s (median step %.3f ms)", n, mix, v, med)
		}
		res.DistinctCost[fmt.Sprint(n)] = 1 - tps[fmt.Sprint(n, "distinct")]/tps[fmt.Sprint(n, "none")]
	}
	// Bytes a batch-1 decode step reads: the weights (of the embedding one
	// row, unless tied: then it is the LM head) and the KV cache.
	perToken := float64(info.WeightBytes)
	if !m.Tied {
		perToken -= float64(spec.VocabSize * spec.HiddenSize * 2)
	}
	hd := spec.HiddenSize / spec.NumHeads
	perToken += float64(ctxLen * spec.NumLayers * 2 * spec.NumKVHeads * hd * 2)
	res.Batch1Efficiency = perToken * tps["1none"] / res.ReadBandwidth

	// Adapter upload: LoadAdapter (host conversion into pinned memory, an
	// asynchronous copy) and then a step, which waits for the copy, against
	// the same step alone.
	for _, l := range adapters[0].LoRAs {
		in, outF := l.Module.Features(m.Info())
		res.AdapterBytes += int64(16*(in+outF)) * 2
	}
	one := []int{nAd - 1}
	_, stepMs := decode(one)
	var call, ready []float64
	for k := 0; k < 5; k++ {
		b.Reset(perSeq, 0)
		b.Add(engine.Seq{Tokens: []int32{1}, Pos: 0, Slot: nAd - 1, Blocks: []int32{0}, Sample: true})
		t0 := time.Now()
		if err := e.LoadAdapter(nAd-1, adapters[k%nAd]); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := e.Step(&b); err != nil {
			t.Fatal(err)
		}
		call = append(call, t1.Sub(t0).Seconds())
		// (an upload that finished within the call leaves only the step)
		ready = append(ready, max(t1.Sub(t0).Seconds(), time.Since(t0).Seconds()-stepMs/1e3))
	}
	sort.Float64s(call)
	sort.Float64s(ready)
	res.AdapterLoadCall, res.AdapterLoadReady = call[2], ready[2]
	if res.AdapterLoadReady > 0 {
		res.AdapterUploadBps = float64(res.AdapterBytes) / res.AdapterLoadReady
	}
	res.TotalSeconds = time.Since(start).Seconds()
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "nozzle.json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("batch-1 bandwidth efficiency %.0f%% (read bandwidth %.0f GB/s); adapter load %.2f ms (call %.2f ms) for %.1f MB",
		100*res.Batch1Efficiency, res.ReadBandwidth/1e9, 1e3*res.AdapterLoadReady, 1e3*res.AdapterLoadCall, float64(res.AdapterBytes)/1e6)
}
