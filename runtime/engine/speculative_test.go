package engine_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// specPoint is one token of a greedy decode checked by speculative
// verification: the token and its logprob as one-token decode steps gave
// them, the margin between that step's two best logprobs, and what the
// verifying step's row gave (its top token and the scored logprob, or for
// the bonus token its sampled token and logprob).
type specPoint struct {
	tok, verTok int32
	lp, verLP   float32
	margin      float64
}

// specVerify decodes n greedy tokens after prompt one token a step on e,
// then verifies them the way the runtime's speculative decoding does on a
// second sequence: after the prompt's prefill, steps carry [last accepted
// token, the next k tokens as drafts], scored with n_top 2, the last one
// sampled greedily; one chunk in three has its last draft wrong, so the
// next chunk starts at the rejection and overwrites the keys and values
// written for it.
func specVerify(t *testing.T, e *engine.Engine, prompt []int32, n, k int) []specPoint {
	t.Helper()
	bs := e.Info().KVBlockSize
	total := len(prompt) + n + k + 1
	nb := (total + bs - 1) / bs
	blocksA, blocksB := make([]int32, nb), make([]int32, nb)
	for i := range nb {
		blocksA[i], blocksB[i] = int32(i), int32(nb+i)
	}
	var b engine.Batch
	ctx := append([]int32(nil), prompt...)
	var pts []specPoint
	for pos := 0; len(ctx) < len(prompt)+n; {
		b.Reset(nb, 2)
		b.Add(engine.Seq{Tokens: ctx[pos:], Pos: pos, Slot: -1, Blocks: blocksA, Sample: true})
		if err := e.Step(&b); err != nil {
			t.Fatal(err)
		}
		pos = len(ctx)
		ctx = append(ctx, b.OutToken[0])
		pts = append(pts, specPoint{tok: b.OutToken[0], lp: b.OutLogprob[0], margin: float64(b.OutTopLogprob[0] - b.OutTopLogprob[1]), verTok: -1})
	}
	// B: the prompt but its last token, then verification chunks
	b.Reset(nb, 2)
	b.Add(engine.Seq{Tokens: prompt[:len(prompt)-1], Pos: 0, Slot: -1, Blocks: blocksB})
	if err := e.Step(&b); err != nil {
		t.Fatal(err)
	}
	computed := len(prompt) - 1
	for round := 0; computed < len(ctx)-1; round++ {
		d := min(k, len(ctx)-1-computed-1)
		drafts := append([]int32(nil), ctx[computed+1:computed+1+d]...)
		wrong := round%3 == 1 && d > 0
		if wrong {
			drafts[d-1] = (drafts[d-1] + 1) % int32(e.VocabSize())
		}
		chunk := append([]int32{ctx[computed]}, drafts...)
		score := append(append([]int32(nil), drafts...), -1)
		b.Reset(nb, 2)
		b.Add(engine.Seq{Tokens: chunk, Pos: computed, Slot: -1, Blocks: blocksB, Sample: true, Score: score})
		if err := e.Step(&b); err != nil {
			t.Fatal(err)
		}
		accepted := 0
		for j := range d {
			p := &pts[computed+1+j-len(prompt)]
			if p.verTok >= 0 {
				continue // verified before, its draft rejected then
			}
			if j == d-1 && wrong {
				// the rejected draft's row still scores the next token:
				// its top token is the decode's
				p.verTok, p.verLP = b.OutScoreTopToken[j*2], b.OutScoreTopLogprob[j*2]
				break
			}
			p.verTok, p.verLP = b.OutScoreTopToken[j*2], b.OutScoreLogprob[j]
			accepted++
		}
		if !wrong {
			if i := computed + 1 + d - len(prompt); i < len(pts) {
				pts[i].verTok, pts[i].verLP = b.OutToken[0], b.OutLogprob[0]
			}
			accepted = d
		}
		computed += 1 + accepted
	}
	return pts
}

// TestEngine_SpeculativeVerify: on the CPU backend, verifying greedy
// decode's tokens as drafts in multi-token steps (scored rows' top tokens,
// the last row sampled; rejected drafts' keys and values overwritten by
// the next chunk) gives exactly the tokens and logprobs one-token decode
// steps give: a position's logits do not depend on how many tokens share
// its step, which is what makes speculative decoding's output identical
// to greedy decoding's.
func TestEngine_SpeculativeVerify(t *testing.T) {
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		spec := tinySpec(91)
		spec.DType = dt
		m := openModel(t, spec)
		e := newEngine(t, m, testOptions())
		r := rand.New(rand.NewPCG(5, 6))
		for _, k := range []int{1, 3, 7} {
			prompt := make([]int32, 5+r.IntN(9))
			for i := range prompt {
				prompt[i] = int32(r.IntN(e.VocabSize()))
			}
			for i, p := range specVerify(t, e, prompt, 30, k) {
				if p.verTok < 0 {
					t.Fatalf("%s, k %d, token %d was not verified", dt, k, i)
				}
				if p.verTok != p.tok || p.verLP != p.lp {
					t.Errorf("%s, k %d, token %d: decode gave %d (logprob %v), verification %d (%v)", dt, k, i, p.tok, p.lp, p.verTok, p.verLP)
				}
			}
		}
	}
}

// TestCUDA_SpeculativeVerify is TestEngine_SpeculativeVerify on the CUDA
// backend, with the CUDA tests' rule: its steps are not batch-invariant
// (cuBLAS picks kernels by shape, the decode path runs as a graph), so a
// verified token must equal the decoded one where the decode's two best
// logprobs are not a near tie, and logprobs agree within 1e-4.
func TestCUDA_SpeculativeVerify(t *testing.T) {
	const tol = 1e-4
	lib := openCUDA(t)
	m := openModel(t, cudaTiny(92))
	e := newCUDAEngine(t, lib, m, cudaOptions())
	r := rand.New(rand.NewPCG(7, 8))
	checked, ties := 0, 0
	for _, k := range []int{1, 3, 7} {
		prompt := make([]int32, 5+r.IntN(9))
		for i := range prompt {
			prompt[i] = int32(r.IntN(e.VocabSize()))
		}
		for i, p := range specVerify(t, e, prompt, 30, k) {
			if p.margin < 1e-3 {
				ties++
				if p.verTok != p.tok {
					break // the rest follows another text
				}
				continue
			}
			checked++
			if p.verTok != p.tok || math.Abs(float64(p.verLP-p.lp)) > tol {
				t.Errorf("k %d, token %d: decode gave %d (logprob %v, margin %.2g), verification %d (%v)", k, i, p.tok, p.lp, p.margin, p.verTok, p.verLP)
			}
		}
	}
	t.Logf("%d tokens compared, %d near ties", checked, ties)
}
