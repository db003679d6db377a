package model

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// Spec describes a random model for WriteRandomModel. Zero fields take the
// defaults noted.
type Spec struct {
	// Arch is "llama" (default), "mistral", "qwen2", "qwen3", "phi3"
	// (q/k/v and gate/up fused in the checkpoint), "gemma2" or
	// "gemma3_text": the config.json model_type.
	Arch             string
	VocabSize        int
	HiddenSize       int
	IntermediateSize int
	NumLayers        int
	NumHeads         int
	// NumKVHeads defaults to NumHeads.
	NumKVHeads int
	// HeadDim, when set, is written to config.json (it may differ from
	// HiddenSize/NumHeads).
	HeadDim int
	// MaxPosition defaults to 4096.
	MaxPosition int
	// RMSNormEps defaults to 1e-5, RopeTheta to 10000.
	RMSNormEps float64
	RopeTheta  float64
	// Rope is written as rope_scaling (or, with RopeParameters, inside
	// transformers-v5 rope_parameters); nil for none.
	Rope           *RopeScaling
	RopeParameters bool
	// SlidingWindow > 0 writes a window: Mistral's sliding_window, or
	// Qwen2's and Qwen3's use_sliding_window with max_window_layers =
	// MaxWindowLayers.
	SlidingWindow   int
	MaxWindowLayers int
	Tied            bool
	// AttentionBias sets Llama's and Qwen3's attention_bias, MLPBias
	// Llama's mlp_bias (Qwen2 always has q/k/v biases).
	AttentionBias bool
	MLPBias       bool
	// DType of the weights: BF16 (default), F16 or F32.
	DType safetensors.DType
	// Shards > 1 splits the weights into that many files with an index.
	Shards int
	// Seed makes the weights; the same spec and seed give the same files.
	Seed uint64
	// EOSTokenIDs default to [2]; BOSTokenID to 1.
	EOSTokenIDs []int
	BOSTokenID  int
	// NameOrPath is written as _name_or_path when set.
	NameOrPath string
	// FinalNormScale scales the final norm's weights (default 1). With
	// embeddings of unit variance the logits' spread grows with the square
	// root of HiddenSize; a scale near 3/sqrt(HiddenSize) keeps a random
	// model's next-token distribution from collapsing onto one token.
	FinalNormScale float64
	// Gemma: QueryPreAttnScalar (default head_dim), the soft-caps (0
	// writes null: off), RopeLocalTheta (Gemma 3's rope_local_base_freq,
	// default 10000) and SlidingWindowPattern (Gemma 3's, default 6).
	QueryPreAttnScalar   float64
	AttnSoftcap          float64
	FinalSoftcap         float64
	RopeLocalTheta       float64
	SlidingWindowPattern int
	// PartialRotaryFactor, Phi-3's (Phi-4-mini), is written when set: RoPE
	// rotates int(head_dim·factor) dims of each head.
	PartialRotaryFactor float64
}

func (s *Spec) gemma() bool { return s.Arch == "gemma2" || s.Arch == "gemma3_text" }

func (s *Spec) defaults() error {
	if s.Arch == "" {
		s.Arch = "llama"
	}
	if _, ok := archByModelType[s.Arch]; !ok {
		return fmt.Errorf("generate model: arch %q is not llama, mistral, qwen2, qwen3, phi3, gemma2 or gemma3_text", s.Arch)
	}
	if s.VocabSize <= 0 || s.HiddenSize <= 0 || s.IntermediateSize <= 0 || s.NumLayers <= 0 || s.NumHeads <= 0 {
		return errors.New("generate model: vocab, hidden, intermediate, layers and heads must be positive")
	}
	if s.NumKVHeads == 0 {
		s.NumKVHeads = s.NumHeads
	}
	if s.MaxPosition == 0 {
		s.MaxPosition = 4096
	}
	if s.RMSNormEps == 0 {
		s.RMSNormEps = 1e-5
	}
	if s.RopeTheta == 0 {
		s.RopeTheta = 10000
	}
	if s.DType == "" {
		s.DType = safetensors.BF16
	}
	if !s.DType.IsFloat() {
		return fmt.Errorf("generate model: dtype %s is not F32, F16 or BF16", s.DType)
	}
	if s.EOSTokenIDs == nil {
		s.EOSTokenIDs = []int{2}
	}
	if s.BOSTokenID == 0 {
		s.BOSTokenID = 1
	}
	if s.gemma() {
		if s.QueryPreAttnScalar == 0 {
			s.QueryPreAttnScalar = float64(s.headDim())
		}
		if s.Arch == "gemma3_text" {
			if s.RopeLocalTheta == 0 {
				s.RopeLocalTheta = 10000
			}
			if s.SlidingWindowPattern == 0 {
				s.SlidingWindowPattern = 6
			}
		}
	}
	return nil
}

func (s *Spec) headDim() int {
	if s.HeadDim > 0 {
		return s.HeadDim
	}
	return s.HiddenSize / s.NumHeads
}

// Info returns the shapes of the model the spec describes.
func (s Spec) Info() nozzle.ModelInfo {
	_ = s.defaults()
	ctx := s.MaxPosition
	if s.Rope != nil {
		c := Config{MaxPositionEmbeddings: s.MaxPosition, RopeScaling: *s.Rope}
		ctx = c.ContextLength()
	}
	return nozzle.ModelInfo{
		Architecture: archByModelType[s.Arch], ContextLength: ctx, VocabSize: s.VocabSize,
		HiddenSize: s.HiddenSize, IntermediateSize: s.IntermediateSize, NumLayers: s.NumLayers,
		NumHeads: s.NumHeads, NumKVHeads: s.NumKVHeads, HeadDim: s.headDim(),
	}
}

// init kinds of generated tensors.
const (
	initLinear     = iota // uniform with std 1/sqrt(in)
	initEmbed             // uniform with std 1
	initNorm              // 1 ± 0.1
	initBias              // uniform with std 0.1
	initNormOffset        // 0 ± 0.1: Gemma's norms multiply by 1 + w
)

type genTensor struct {
	name  string
	shape []int64
	init  int
}

func (s *Spec) tensors() []genTensor {
	H, I, V := int64(s.HiddenSize), int64(s.IntermediateSize), int64(s.VocabSize)
	q, kv := int64(s.NumHeads*s.headDim()), int64(s.NumKVHeads*s.headDim())
	ts := []genTensor{{"model.embed_tokens.weight", []int64{V, H}, initEmbed}}
	norm := initNorm
	if s.gemma() {
		norm = initNormOffset
	}
	for l := 0; l < s.NumLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts, genTensor{p + "input_layernorm.weight", []int64{H}, norm})
		if s.Arch == "phi3" {
			ts = append(ts, genTensor{p + "self_attn.qkv_proj.weight", []int64{q + 2*kv, H}, initLinear})
		} else {
			ts = append(ts,
				genTensor{p + "self_attn.q_proj.weight", []int64{q, H}, initLinear},
				genTensor{p + "self_attn.k_proj.weight", []int64{kv, H}, initLinear},
				genTensor{p + "self_attn.v_proj.weight", []int64{kv, H}, initLinear},
			)
		}
		ts = append(ts, genTensor{p + "self_attn.o_proj.weight", []int64{H, q}, initLinear})
		attnBias := (s.Arch == "llama" || s.Arch == "qwen3" || s.gemma()) && s.AttentionBias
		if s.Arch == "qwen2" || attnBias {
			ts = append(ts,
				genTensor{p + "self_attn.q_proj.bias", []int64{q}, initBias},
				genTensor{p + "self_attn.k_proj.bias", []int64{kv}, initBias},
				genTensor{p + "self_attn.v_proj.bias", []int64{kv}, initBias},
			)
		}
		if attnBias {
			ts = append(ts, genTensor{p + "self_attn.o_proj.bias", []int64{H}, initBias})
		}
		if s.Arch == "qwen3" || s.Arch == "gemma3_text" {
			hd := int64(s.headDim())
			ts = append(ts,
				genTensor{p + "self_attn.q_norm.weight", []int64{hd}, norm},
				genTensor{p + "self_attn.k_norm.weight", []int64{hd}, norm},
			)
		}
		ts = append(ts, genTensor{p + "post_attention_layernorm.weight", []int64{H}, norm})
		if s.gemma() {
			ts = append(ts, genTensor{p + "pre_feedforward_layernorm.weight", []int64{H}, norm})
		}
		if s.Arch == "phi3" {
			ts = append(ts, genTensor{p + "mlp.gate_up_proj.weight", []int64{2 * I, H}, initLinear})
		} else {
			ts = append(ts,
				genTensor{p + "mlp.gate_proj.weight", []int64{I, H}, initLinear},
				genTensor{p + "mlp.up_proj.weight", []int64{I, H}, initLinear},
			)
		}
		ts = append(ts, genTensor{p + "mlp.down_proj.weight", []int64{H, I}, initLinear})
		if s.gemma() {
			ts = append(ts, genTensor{p + "post_feedforward_layernorm.weight", []int64{H}, norm})
		}
		if s.Arch == "llama" && s.MLPBias {
			ts = append(ts,
				genTensor{p + "mlp.gate_proj.bias", []int64{I}, initBias},
				genTensor{p + "mlp.up_proj.bias", []int64{I}, initBias},
				genTensor{p + "mlp.down_proj.bias", []int64{H}, initBias},
			)
		}
	}
	ts = append(ts, genTensor{"model.norm.weight", []int64{H}, norm})
	if !s.Tied {
		ts = append(ts, genTensor{"lm_head.weight", []int64{V, H}, initLinear})
	}
	return ts
}

// WriteRandomModel writes config.json, generation_config.json and the
// weights (model.safetensors, or shards with an index) of a random model
// into dir, creating it. Weights are deterministic in spec.Seed and scaled
// so activations stay near unit size: linear weights uniform with standard
// deviation 1/sqrt(in_features), embeddings with 1, norm weights 1 ± 0.1.
func WriteRandomModel(dir string, spec Spec) error {
	if err := spec.defaults(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "config.json"), spec.config()); err != nil {
		return err
	}
	gen := map[string]any{"bos_token_id": spec.BOSTokenID, "eos_token_id": eosJSON(spec.EOSTokenIDs), "do_sample": true, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256}
	if err := writeJSON(filepath.Join(dir, "generation_config.json"), gen); err != nil {
		return err
	}
	ts := spec.tensors()
	shards := max(spec.Shards, 1)
	if shards > len(ts) {
		shards = len(ts)
	}
	// Split the tensor list into contiguous groups of similar byte size.
	var total int64
	for _, t := range ts {
		total += numel(t.shape) * spec.DType.Size()
	}
	groups := make([][]genTensor, 0, shards)
	var acc int64
	start := 0
	for i, t := range ts {
		acc += numel(t.shape) * spec.DType.Size()
		left := len(ts) - i - 1
		if len(groups) < shards-1 && (acc*int64(shards) >= total*int64(len(groups)+1) || left == shards-1-len(groups)) {
			groups = append(groups, ts[start:i+1])
			start = i + 1
		}
	}
	groups = append(groups, ts[start:])
	g := newFiller(spec.Seed)
	g.finalNormScale = spec.FinalNormScale
	if shards == 1 {
		return g.writeFile(filepath.Join(dir, WeightsFile), groups[0], spec.DType)
	}
	weightMap := map[string]string{}
	for i, grp := range groups {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, shards)
		if err := g.writeFile(filepath.Join(dir, name), grp, spec.DType); err != nil {
			return err
		}
		for _, t := range grp {
			weightMap[t.name] = name
		}
	}
	return writeJSON(filepath.Join(dir, IndexFile), map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap})
}

func (s *Spec) config() map[string]any {
	c := map[string]any{
		"architectures":           []string{archByModelType[s.Arch]},
		"model_type":              s.Arch,
		"vocab_size":              s.VocabSize,
		"hidden_size":             s.HiddenSize,
		"intermediate_size":       s.IntermediateSize,
		"num_hidden_layers":       s.NumLayers,
		"num_attention_heads":     s.NumHeads,
		"num_key_value_heads":     s.NumKVHeads,
		"max_position_embeddings": s.MaxPosition,
		"rms_norm_eps":            s.RMSNormEps,
		"hidden_act":              "silu",
		"tie_word_embeddings":     s.Tied,
		"torch_dtype":             map[safetensors.DType]string{safetensors.BF16: "bfloat16", safetensors.F16: "float16", safetensors.F32: "float32"}[s.DType],
		"bos_token_id":            s.BOSTokenID,
		"eos_token_id":            eosJSON(s.EOSTokenIDs),
		"initializer_range":       0.02,
		"transformers_version":    "4.45.0",
	}
	if s.NameOrPath != "" {
		c["_name_or_path"] = s.NameOrPath
	}
	if s.HeadDim > 0 {
		c["head_dim"] = s.HeadDim
	}
	var rope map[string]any
	if s.Rope != nil && s.Rope.Type != "" {
		rope = map[string]any{"rope_type": s.Rope.Type}
		if s.Rope.Type != RopeDefault {
			rope["factor"] = s.Rope.Factor
		}
		if s.Rope.Type == RopeLlama3 {
			rope["low_freq_factor"] = s.Rope.LowFreqFactor
			rope["high_freq_factor"] = s.Rope.HighFreqFactor
			rope["original_max_position_embeddings"] = s.Rope.OriginalMaxPosition
		}
		if s.Rope.Type == RopeLongrope {
			// As Phi-3's configs have it: the factors in rope_scaling,
			// the original context at the top level, no factor; an
			// attention factor equal to the default one is left for the
			// parser to derive.
			delete(rope, "factor")
			rope["short_factor"] = s.Rope.ShortFactor
			rope["long_factor"] = s.Rope.LongFactor
			if s.Rope.AttentionFactor != LongropeAttention(s.MaxPosition, s.Rope.OriginalMaxPosition) {
				rope["attention_factor"] = s.Rope.AttentionFactor
			}
		}
		if s.Rope.Type == RopeYarn {
			// As resolved by ParseConfig; an attention factor equal to
			// the default one is left for the parser to derive.
			rope["original_max_position_embeddings"] = s.Rope.OriginalMaxPosition
			rope["beta_fast"] = s.Rope.BetaFast
			rope["beta_slow"] = s.Rope.BetaSlow
			rope["truncate"] = s.Rope.Truncate
			if s.Rope.AttentionFactor != YarnMscale(s.Rope.Factor, 1) {
				rope["attention_factor"] = s.Rope.AttentionFactor
			}
		}
	}
	if s.RopeParameters {
		if rope == nil {
			rope = map[string]any{"rope_type": RopeDefault}
		}
		rope["rope_theta"] = s.RopeTheta
		c["rope_parameters"] = rope
	} else {
		c["rope_theta"] = s.RopeTheta
		if rope != nil {
			c["rope_scaling"] = rope
		} else {
			c["rope_scaling"] = nil
		}
	}
	switch s.Arch {
	case "llama":
		c["attention_bias"] = s.AttentionBias
		c["mlp_bias"] = s.MLPBias
		c["pretraining_tp"] = 1
	case "mistral", "phi3":
		if s.Arch == "phi3" && s.PartialRotaryFactor != 0 {
			c["partial_rotary_factor"] = s.PartialRotaryFactor
		}
		if s.Arch == "phi3" && s.Rope != nil && s.Rope.Type == RopeLongrope {
			c["original_max_position_embeddings"] = s.Rope.OriginalMaxPosition
		}
		if s.SlidingWindow > 0 {
			c["sliding_window"] = s.SlidingWindow
		} else {
			c["sliding_window"] = nil
		}
	case "qwen2", "qwen3":
		if s.Arch == "qwen3" {
			c["attention_bias"] = s.AttentionBias
			c["head_dim"] = s.headDim() // Qwen3Config's default is 128, not hidden/heads
		}
		c["use_sliding_window"] = s.SlidingWindow > 0
		c["sliding_window"] = 4096
		if s.SlidingWindow > 0 {
			c["sliding_window"] = s.SlidingWindow
		}
		c["max_window_layers"] = s.MaxWindowLayers
	case "gemma2", "gemma3_text":
		c["hidden_activation"] = ActGeluTanh
		c["hidden_act"] = ActGeluTanh
		c["attention_bias"] = s.AttentionBias
		c["head_dim"] = s.headDim()
		c["query_pre_attn_scalar"] = s.QueryPreAttnScalar
		orNull := func(v float64) any {
			if v == 0 {
				return nil
			}
			return v
		}
		c["attn_logit_softcapping"] = orNull(s.AttnSoftcap)
		c["final_logit_softcapping"] = orNull(s.FinalSoftcap)
		c["sliding_window"] = 4096
		if s.SlidingWindow > 0 {
			c["sliding_window"] = s.SlidingWindow
		}
		if s.Arch == "gemma3_text" {
			c["rope_local_base_freq"] = s.RopeLocalTheta
			c["sliding_window_pattern"] = s.SlidingWindowPattern
		}
	}
	return c
}

func eosJSON(ids []int) any {
	if len(ids) == 1 {
		return ids[0]
	}
	return ids
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// filler produces deterministic random tensor data, in parallel chunks
// seeded by (seed, tensor name, chunk index).
type filler struct {
	seed uint64
	buf  []byte
	// finalNormScale scales model.norm.weight (Spec.FinalNormScale).
	finalNormScale float64
}

func newFiller(seed uint64) *filler { return &filler{seed: seed} }

const fillChunk = 1 << 18 // elements per independently seeded chunk

func (g *filler) writeFile(path string, ts []genTensor, dt safetensors.DType) error {
	hdr := make([]safetensors.Tensor, len(ts))
	for i, t := range ts {
		hdr[i] = safetensors.Tensor{Name: t.name, DType: dt, Shape: t.shape}
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	bw := bufio.NewWriterSize(f, 1<<20)
	sw, err := safetensors.NewWriter(bw, hdr, map[string]string{"format": "pt"})
	if err != nil {
		f.Close()
		return err
	}
	for _, t := range ts {
		if _, err := sw.Write(g.fill(t, dt)); err != nil {
			f.Close()
			return err
		}
	}
	if err := sw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// fill returns the tensor's bytes in a buffer reused across calls.
func (g *filler) fill(t genTensor, dt safetensors.DType) []byte {
	n := numel(t.shape)
	size := n * dt.Size()
	if int64(cap(g.buf)) < size {
		g.buf = make([]byte, size)
	}
	buf := g.buf[:size]
	h := fnv.New64a()
	h.Write([]byte(t.name))
	tseed := g.seed ^ h.Sum64()
	var center, halfWidth float32
	switch t.init {
	case initLinear:
		in := t.shape[len(t.shape)-1]
		halfWidth = float32(math.Sqrt(3 / float64(in)))
	case initEmbed:
		halfWidth = float32(math.Sqrt(3))
	case initNorm:
		center, halfWidth = 1, 0.1
	case initBias:
		halfWidth = float32(0.1 * math.Sqrt(3))
	case initNormOffset:
		halfWidth = 0.1
	}
	if t.name == "model.norm.weight" && g.finalNormScale != 0 {
		if t.init == initNormOffset { // scale 1 + w
			center, halfWidth = float32(g.finalNormScale)-1, halfWidth*float32(g.finalNormScale)
		} else {
			center, halfWidth = center*float32(g.finalNormScale), halfWidth*float32(g.finalNormScale)
		}
	}
	chunks := (n + fillChunk - 1) / fillChunk
	workers := min(int64(goruntime.GOMAXPROCS(0)), chunks)
	var wg sync.WaitGroup
	for w := int64(0); w < workers; w++ {
		wg.Add(1)
		go func(w int64) {
			defer wg.Done()
			for c := w; c < chunks; c += workers {
				lo, hi := c*fillChunk, min((c+1)*fillChunk, n)
				fillUniform(buf[lo*dt.Size():hi*dt.Size()], dt, tseed+uint64(c)*0x9E3779B97F4A7C15, center, halfWidth)
			}
		}(w)
	}
	wg.Wait()
	return buf
}

// fillUniform writes values uniform in [center-halfWidth, center+halfWidth).
func fillUniform(dst []byte, dt safetensors.DType, seed uint64, center, halfWidth float32) {
	r := rng{s: seed}
	const inv24 = 1.0 / (1 << 24)
	switch dt {
	case safetensors.BF16:
		for i := 0; i+2 <= len(dst); i += 2 {
			v := center + halfWidth*(float32(r.next()>>40)*inv24*2-1)
			binary.LittleEndian.PutUint16(dst[i:], safetensors.F32ToBF16(v))
		}
	case safetensors.F16:
		for i := 0; i+2 <= len(dst); i += 2 {
			v := center + halfWidth*(float32(r.next()>>40)*inv24*2-1)
			binary.LittleEndian.PutUint16(dst[i:], safetensors.F32ToF16(v))
		}
	case safetensors.F32:
		for i := 0; i+4 <= len(dst); i += 4 {
			v := center + halfWidth*(float32(r.next()>>40)*inv24*2-1)
			binary.LittleEndian.PutUint32(dst[i:], math.Float32bits(v))
		}
	}
}

// rng is wyrand: fast, statistically good enough for test weights.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(r.s, r.s^0xe7037ed1a0b428db)
	return hi ^ lo
}

// AdapterSpec describes a random PEFT LoRA adapter for WriteRandomAdapter.
type AdapterSpec struct {
	// Base gives the shapes (and, as ID, base_model_name_or_path).
	Base nozzle.ModelInfo
	// Rank is r (default 8); Alpha is lora_alpha (default 2·Rank).
	Rank  int
	Alpha float64
	// RSLoRA sets use_rslora.
	RSLoRA bool
	// Modules are the target modules (default all seven).
	Modules []Module
	// Layers are the layers adapted (default all).
	Layers []int
	// RankPattern and AlphaPattern are written in order and applied to the
	// tensors' shapes and the scaling.
	RankPattern  []Pattern
	AlphaPattern []Pattern
	// DType of the tensors: F32 (default), F16 or BF16.
	DType safetensors.DType
	Seed  uint64
	// BScale scales lora_B (default 1: B uniform with std 1/sqrt(rank), so
	// the adapter visibly changes outputs; PEFT's own init is B = 0).
	BScale float64
	// Extra entries merged into adapter_config.json (to test refusals).
	Extra map[string]any
}

// WriteRandomAdapter writes adapter_config.json and adapter_model.safetensors
// of a random PEFT LoRA adapter into dir, creating it.
func WriteRandomAdapter(dir string, spec AdapterSpec) error {
	if spec.Rank == 0 {
		spec.Rank = 8
	}
	if spec.Alpha == 0 {
		spec.Alpha = 2 * float64(spec.Rank)
	}
	if spec.DType == "" {
		spec.DType = safetensors.F32
	}
	if spec.BScale == 0 {
		spec.BScale = 1
	}
	if spec.Modules == nil {
		spec.Modules = []Module{ModuleQ, ModuleK, ModuleV, ModuleO, ModuleGate, ModuleUp, ModuleDown}
	}
	if spec.Layers == nil {
		for l := 0; l < spec.Base.NumLayers; l++ {
			spec.Layers = append(spec.Layers, l)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var targets []string
	for _, m := range adapterModules(spec.Modules, spec.Base) {
		targets = append(targets, m.path[strings.LastIndexByte(m.path, '.')+1:])
	}
	// Patterns keep their order: PEFT takes the first matching key.
	patterns := func(ps []Pattern) json.RawMessage {
		obj := []byte{'{'}
		for i, p := range ps {
			if i > 0 {
				obj = append(obj, ',')
			}
			k, _ := json.Marshal(p.Key)
			v, _ := json.Marshal(p.Value)
			obj = append(append(append(obj, k...), ':'), v...)
		}
		return append(obj, '}')
	}
	cfg := map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": spec.Rank, "lora_alpha": spec.Alpha,
		"use_rslora": spec.RSLoRA, "target_modules": targets, "lora_dropout": 0.0, "bias": "none",
		"fan_in_fan_out": false, "inference_mode": true, "modules_to_save": nil, "use_dora": false,
		"init_lora_weights": true, "base_model_name_or_path": spec.Base.ID,
		"rank_pattern": patterns(spec.RankPattern), "alpha_pattern": patterns(spec.AlphaPattern),
	}
	for k, v := range spec.Extra {
		cfg[k] = v
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, nozzle.AdapterConfigFile), b, 0o644); err != nil {
		return err
	}
	var ts []safetensors.Tensor
	r := rng{s: spec.Seed ^ 0x5eed}
	for _, l := range spec.Layers {
		for _, mod := range adapterModules(spec.Modules, spec.Base) {
			path := fmt.Sprintf("model.layers.%d.%s", l, mod.path)
			rank := spec.Rank
			if v, ok, err := MatchPattern(spec.RankPattern, path); err != nil {
				return err
			} else if ok {
				rank = int(v)
			}
			in, out := mod.parts[0].Features(spec.Base)
			for _, part := range mod.parts[1:] {
				_, o := part.Features(spec.Base)
				out += o
			}
			a := randomTensor(&r, []int64{int64(rank), int64(in)}, float32(math.Sqrt(3/float64(in))), spec.DType)
			a.Name = "base_model.model." + path + ".lora_A.weight"
			bt := randomTensor(&r, []int64{int64(out), int64(rank)}, float32(spec.BScale*math.Sqrt(3/float64(rank))), spec.DType)
			bt.Name = "base_model.model." + path + ".lora_B.weight"
			ts = append(ts, a, bt)
		}
	}
	f, err := os.Create(filepath.Join(dir, nozzle.AdapterWeightsFile))
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := safetensors.Write(bw, ts, map[string]string{"format": "pt"}); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type adapterModule struct {
	path  string
	parts []Module // the modules it adapts: its output rows are theirs, in order
}

// adapterModules are the PEFT modules adapting mods in a base model: a
// Fused architecture's q/k/v and gate/up are one module each, adapted
// where any of their parts is asked for.
func adapterModules(mods []Module, base nozzle.ModelInfo) []adapterModule {
	var out []adapterModule
	done := map[string]bool{}
	for _, m := range mods {
		am := adapterModule{m.Path(), []Module{m}}
		if Fused(base.Architecture) {
			for _, f := range fusedModules {
				if slices.Contains(f.parts, m) {
					am = adapterModule{f.path, f.parts}
				}
			}
		}
		if !done[am.path] {
			done[am.path] = true
			out = append(out, am)
		}
	}
	return out
}

func randomTensor(r *rng, shape []int64, halfWidth float32, dt safetensors.DType) safetensors.Tensor {
	n := numel(shape)
	data := make([]byte, n*dt.Size())
	fillUniform(data, dt, r.next(), 0, halfWidth)
	return safetensors.Tensor{DType: dt, Shape: shape, Data: data}
}
