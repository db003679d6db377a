package engine_test

// A plain float64 forward pass of the Llama family (Gemma 2 and 3 included),
// written from the Hugging Face conventions (engine spec §1) and PEFT's
// LoRA math (§3.5). It is slow and simple on purpose: the engine's logits
// are checked against it.

import (
	"math"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

type refLinear struct {
	w       []float64 // [out, in]
	b       []float64 // [out] or nil
	in, out int
}

func (l *refLinear) apply(x []float64) []float64 {
	y := make([]float64, l.out)
	for o := 0; o < l.out; o++ {
		row := l.w[o*l.in : (o+1)*l.in]
		var s float64
		for i, v := range row {
			s += v * x[i]
		}
		if l.b != nil {
			s += l.b[o]
		}
		y[o] = s
	}
	return y
}

type refLayer struct {
	attnNorm, ffnNorm []float64
	qNorm, kNorm      []float64                   // [hd] or nil (Qwen3, Gemma 3)
	postAttn, postFFN []float64                   // [H] or nil (Gemma)
	proj              [model.NumModules]refLinear // q k v o gate up down
}

type refModel struct {
	cfg       model.Config
	embed     refLinear // [V, H]
	lmHead    refLinear
	finalNorm []float64
	layers    []refLayer
	invFreq   []float64
	ropeScale float64   // refRopeScale
	localInv  []float64 // Gemma 3's sliding layers' inv_freq, or nil
	dtype     safetensors.DType
}

type refLoRA struct {
	a     []float64 // [r, in]
	b     []float64 // [out, r]
	r     int
	scale float64
}

// refAdapter maps (layer, module) to its LoRA.
type refAdapter map[[2]int]*refLoRA

func f64s(t testing.TB, w model.Weight) []float64 {
	t.Helper()
	v, err := w.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func newRefModel(t testing.TB, m *model.Model) *refModel {
	t.Helper()
	c := m.Config
	r := &refModel{cfg: c, dtype: m.DType}
	get := func(kind model.TensorKind, layer int) []float64 {
		w, ok := m.Weight(kind, layer)
		if !ok {
			return nil
		}
		return f64s(t, w)
	}
	// Gemma's norms multiply by (1 + w).
	norm := func(kind model.TensorKind, layer int) []float64 {
		w := get(kind, layer)
		for i := range w {
			w[i] += c.NormWeightOffset
		}
		return w
	}
	r.embed = refLinear{w: get(model.KindEmbed, -1), in: c.HiddenSize, out: c.VocabSize}
	r.lmHead = r.embed
	if !m.Tied {
		r.lmHead = refLinear{w: get(model.KindLMHead, -1), in: c.HiddenSize, out: c.VocabSize}
	}
	r.finalNorm = norm(model.KindFinalNorm, -1)
	info := m.Info()
	for l := 0; l < c.NumLayers; l++ {
		var L refLayer
		L.attnNorm = norm(model.KindAttnNorm, l)
		L.ffnNorm = norm(model.KindFFNNorm, l)
		L.postAttn = norm(model.KindPostAttnNorm, l)
		L.postFFN = norm(model.KindPostFFNNorm, l)
		for mod := model.Module(0); mod < model.NumModules; mod++ {
			in, out := mod.Features(info)
			L.proj[mod] = refLinear{w: get(mod.Kind(), l), in: in, out: out}
		}
		L.proj[model.ModuleQ].b = get(model.KindQBias, l)
		L.proj[model.ModuleK].b = get(model.KindKBias, l)
		L.proj[model.ModuleV].b = get(model.KindVBias, l)
		L.proj[model.ModuleO].b = get(model.KindOBias, l)
		L.proj[model.ModuleGate].b = get(model.KindGateBias, l)
		L.proj[model.ModuleUp].b = get(model.KindUpBias, l)
		L.proj[model.ModuleDown].b = get(model.KindDownBias, l)
		L.qNorm = norm(model.KindQNorm, l)
		L.kNorm = norm(model.KindKNorm, l)
		r.layers = append(r.layers, L)
	}
	r.invFreq = refInvFreq(c)
	r.ropeScale = refRopeScale(c)
	if c.RopeLocalTheta > 0 {
		lc := c
		lc.RopeTheta, lc.RopeScaling = c.RopeLocalTheta, model.RopeScaling{Type: model.RopeDefault, Factor: 1}
		r.localInv = refInvFreq(lc)
	}
	return r
}

// refRotaryDim is how many dims of a head RoPE rotates.
func refRotaryDim(c model.Config) int {
	if c.RotaryDim > 0 {
		return c.RotaryDim
	}
	return c.HeadDim
}

// refInvFreq is HF's inv_freq with the configured rope scaling (§1.5),
// over the rotated dims.
func refInvFreq(c model.Config) []float64 {
	hd := refRotaryDim(c)
	inv := make([]float64, hd/2)
	for j := range inv {
		inv[j] = 1 / math.Pow(c.RopeTheta, float64(2*j)/float64(hd))
	}
	rs := c.RopeScaling
	switch rs.Type {
	case model.RopeLongrope:
		// _compute_longrope_parameters: each frequency over its own
		// factor, the list the context served picks
		ext := rs.LongropeFactors(c.MaxPositionEmbeddings)
		for j := range inv {
			inv[j] /= ext[j]
		}
	case model.RopeLinear:
		for j := range inv {
			inv[j] /= rs.Factor
		}
	case model.RopeLlama3:
		orig := float64(rs.OriginalMaxPosition)
		lowWL, highWL := orig/rs.LowFreqFactor, orig/rs.HighFreqFactor
		for j, f := range inv {
			wl := 2 * math.Pi / f
			switch {
			case wl < highWL:
			case wl > lowWL:
				inv[j] = f / rs.Factor
			default:
				s := (orig/wl - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				inv[j] = (1-s)*f/rs.Factor + s*f
			}
		}
	case model.RopeYarn:
		// transformers' _compute_yarn_parameters: the dimension at which
		// a frequency turns r times over the original context is
		// dim·ln(orig/(2πr))/(2·ln θ); between those of beta_fast and
		// beta_slow turns, a linear ramp over the pair index moves from
		// the unscaled frequency (extrapolation) to f/factor.
		dim, orig := float64(hd), float64(rs.OriginalMaxPosition)
		corr := func(rot float64) float64 {
			return dim * math.Log(orig/(rot*2*math.Pi)) / (2 * math.Log(c.RopeTheta))
		}
		low, high := corr(rs.BetaFast), corr(rs.BetaSlow)
		if rs.Truncate {
			low, high = math.Floor(low), math.Ceil(high)
		}
		low, high = math.Max(low, 0), math.Min(high, dim-1)
		if low == high {
			high += 0.001
		}
		for j, f := range inv {
			ramp := math.Min(math.Max((float64(j)-low)/(high-low), 0), 1)
			inv[j] = f*(1-ramp) + f/rs.Factor*ramp
		}
	}
	return inv
}

// refRopeScale is the factor transformers multiplies RoPE's cos and sin by
// (attention_scaling): yarn's and longrope's attention factor, else 1.
func refRopeScale(c model.Config) float64 {
	if t := c.RopeScaling.Type; t == model.RopeYarn || t == model.RopeLongrope {
		return c.RopeScaling.AttentionFactor
	}
	return 1
}

func rmsNorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = w[i] * v * r
	}
	return y
}

// headNorm RMS-normalises each head of x (heads × len(w)) in place with
// w (Qwen3's q_norm and k_norm).
func headNorm(x, w []float64, eps float64) {
	for h := 0; h < len(x); h += len(w) {
		copy(x[h:h+len(w)], rmsNorm(x[h:h+len(w)], w, eps))
	}
}

// rope rotates each head of x (heads × hd) in place, rotate-half style
// over its first rotary dims (the rest as they are), with layer l's
// frequencies.
func (r *refModel) rope(x []float64, heads, pos, l int) {
	hd := r.cfg.HeadDim
	half := refRotaryDim(r.cfg) / 2
	inv, scale := r.invFreq, r.ropeScale
	if r.localInv != nil && r.cfg.SlidingLayer(l) {
		inv, scale = r.localInv, 1
	}
	for h := 0; h < heads; h++ {
		v := x[h*hd : (h+1)*hd]
		for i := 0; i < half; i++ {
			a := float64(pos) * inv[i]
			c, s := math.Cos(a)*scale, math.Sin(a)*scale
			x1, x2 := v[i], v[i+half]
			v[i] = x1*c - x2*s
			v[i+half] = x2*c + x1*s
		}
	}
}

func (r *refModel) proj(l int, mod model.Module, x []float64, ad refAdapter) []float64 {
	y := r.layers[l].proj[mod].apply(x)
	if lo := ad[[2]int{l, int(mod)}]; lo != nil {
		in := len(x)
		v := make([]float64, lo.r)
		for k := 0; k < lo.r; k++ {
			var s float64
			for i := 0; i < in; i++ {
				s += lo.a[k*in+i] * x[i]
			}
			v[k] = s
		}
		for o := range y {
			var s float64
			for k := 0; k < lo.r; k++ {
				s += lo.b[o*lo.r+k] * v[k]
			}
			y[o] += lo.scale * s
		}
	}
	return y
}

// forward returns the logits of every position of one sequence that starts
// at position 0.
func (r *refModel) forward(tokens []int32, ad refAdapter) [][]float64 {
	c := r.cfg
	T, H, hd := len(tokens), c.HiddenSize, c.HeadDim
	nh, nkv := c.NumHeads, c.NumKVHeads
	h := make([][]float64, T)
	embedScale := c.EmbedScale(r.dtype)
	for t, id := range tokens {
		h[t] = append([]float64(nil), r.embed.w[int(id)*H:(int(id)+1)*H]...)
		for i := range h[t] {
			h[t][i] *= embedScale
		}
	}
	softcap := func(x, c float64) float64 {
		if c == 0 {
			return x
		}
		return c * math.Tanh(x/c)
	}
	// residual adds a module's output to h, through Gemma's post norm.
	residual := func(h, a, post []float64) {
		if post != nil {
			a = rmsNorm(a, post, c.RMSNormEps)
		}
		for i := range a {
			h[i] += a[i]
		}
	}
	for l := range r.layers {
		L := &r.layers[l]
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := 0; t < T; t++ {
			x := rmsNorm(h[t], L.attnNorm, c.RMSNormEps)
			q[t] = r.proj(l, model.ModuleQ, x, ad)
			k[t] = r.proj(l, model.ModuleK, x, ad)
			v[t] = r.proj(l, model.ModuleV, x, ad)
			if L.qNorm != nil {
				headNorm(q[t], L.qNorm, c.RMSNormEps)
				headNorm(k[t], L.kNorm, c.RMSNormEps)
			}
			r.rope(q[t], nh, t, l)
			r.rope(k[t], nkv, t, l)
		}
		window := 0
		if c.SlidingLayer(l) {
			window = c.SlidingWindow
		}
		scale := 1 / math.Sqrt(float64(hd))
		if c.QueryPreAttnScalar > 0 {
			scale = 1 / math.Sqrt(c.QueryPreAttnScalar)
		}
		for t := 0; t < T; t++ {
			o := make([]float64, nh*hd)
			for head := 0; head < nh; head++ {
				kh := head / (nh / nkv)
				qv := q[t][head*hd : (head+1)*hd]
				lo := 0
				if window > 0 {
					lo = max(0, t-window+1)
				}
				scores := make([]float64, t+1-lo)
				mx := math.Inf(-1)
				for j := lo; j <= t; j++ {
					var s float64
					for d := 0; d < hd; d++ {
						s += qv[d] * k[j][kh*hd+d]
					}
					scores[j-lo] = softcap(s*scale, c.AttnSoftcap)
					mx = math.Max(mx, scores[j-lo])
				}
				var sum float64
				for i := range scores {
					scores[i] = math.Exp(scores[i] - mx)
					sum += scores[i]
				}
				for j := lo; j <= t; j++ {
					p := scores[j-lo] / sum
					for d := 0; d < hd; d++ {
						o[head*hd+d] += p * v[j][kh*hd+d]
					}
				}
			}
			residual(h[t], r.proj(l, model.ModuleO, o, ad), L.postAttn)
		}
		for t := 0; t < T; t++ {
			x := rmsNorm(h[t], L.ffnNorm, c.RMSNormEps)
			g := r.proj(l, model.ModuleGate, x, ad)
			u := r.proj(l, model.ModuleUp, x, ad)
			for i := range g {
				if c.HiddenAct == model.ActGeluTanh {
					x := g[i]
					g[i] = 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))) * u[i]
				} else {
					g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
				}
			}
			residual(h[t], r.proj(l, model.ModuleDown, g, ad), L.postFFN)
		}
	}
	logits := make([][]float64, T)
	for t := 0; t < T; t++ {
		logits[t] = r.lmHead.apply(rmsNorm(h[t], r.finalNorm, c.RMSNormEps))
		for i := range logits[t] {
			logits[t][i] = softcap(logits[t][i], c.FinalSoftcap)
		}
	}
	return logits
}

func newRefAdapter(t testing.TB, a *model.Adapter) refAdapter {
	t.Helper()
	ad := refAdapter{}
	for _, l := range a.LoRAs {
		av, err := l.A.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		bv, err := l.B.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		lo := &refLoRA{r: l.Rank, scale: l.Scale, a: make([]float64, len(av)), b: make([]float64, len(bv))}
		for i, x := range av {
			lo.a[i] = float64(x)
		}
		for i, x := range bv {
			lo.b[i] = float64(x)
		}
		ad[[2]int{l.Layer, int(l.Module)}] = lo
	}
	return ad
}

// TestReference_RoPEVectors checks the reference's inv_freq against the
// spec's vectors (§1.5) and its rotation against the hand example (§9.3).
func TestReference_RoPEVectors(t *testing.T) {
	c := model.Config{HeadDim: 128, RopeTheta: 10000}
	inv := refInvFreq(c)
	for j, want := range map[int]float64{1: 0.8659643233600653, 32: 0.01, 63: 1.1547819846894582e-4} {
		if math.Abs(inv[j]-want) > 1e-12*want {
			t.Errorf("default inv[%d] = %v, want %v", j, inv[j], want)
		}
	}
	c = model.Config{HeadDim: 128, RopeTheta: 500000, RopeScaling: model.RopeScaling{Type: model.RopeLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}}
	inv = refInvFreq(c)
	for j, want := range map[int]float64{0: 1, 20: 0.0165604400809944, 30: 0.00137189356776114, 40: 3.428102195952591e-5, 63: 3.068925988914511e-7} {
		if math.Abs(inv[j]-want) > 1e-9*want {
			t.Errorf("llama3 inv[%d] = %v, want %v", j, inv[j], want)
		}
	}
	// yarn, Qwen2.5's long-context settings; the vectors are from a plain
	// transcription of transformers' _compute_yarn_parameters (Python
	// floats), with and without truncation of the correction range.
	yarn := model.RopeScaling{Type: model.RopeYarn, Factor: 4, OriginalMaxPosition: 32768, BetaFast: 32, BetaSlow: 1, AttentionFactor: 1.1386294361119891, Truncate: true}
	c = model.Config{HeadDim: 128, RopeTheta: 1e6, RopeScaling: yarn}
	yarnWant := map[int]float64{0: 1, 10: 0.1154781984689458, 20: 0.013335214321633241, 30: 0.0010643609812470017,
		40: 4.4456985250973067e-05, 50: 5.1338125661428656e-06, 63: 3.1023444018792988e-07}
	for _, truncate := range []bool{true, false} {
		c.RopeScaling.Truncate = truncate
		inv = refInvFreq(c)
		for j, want := range yarnWant {
			if j == 30 && !truncate {
				want = 0.0010792377416765538
			}
			if math.Abs(inv[j]-want) > 1e-12*want {
				t.Errorf("yarn (truncate %v) inv[%d] = %.17g, want %.17g", truncate, j, inv[j], want)
			}
		}
	}
	if s := refRopeScale(c); s != 1.1386294361119891 {
		t.Errorf("yarn rope scale %v", s)
	}
	r := &refModel{cfg: model.Config{HeadDim: 4}, invFreq: refInvFreq(model.Config{HeadDim: 4, RopeTheta: 10000}), ropeScale: 1}
	x := []float64{1, 2, 3, 4}
	r.rope(x, 1, 1, 0)
	want := []float64{math.Cos(1) - 3*math.Sin(1), 2*math.Cos(0.01) - 4*math.Sin(0.01), 3*math.Cos(1) + math.Sin(1), 4*math.Cos(0.01) + 2*math.Sin(0.01)}
	for i := range x {
		if math.Abs(x[i]-want[i]) > 1e-12 {
			t.Errorf("rope x[%d] = %v, want %v", i, x[i], want[i])
		}
	}
}
