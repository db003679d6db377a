// Package model reads Hugging Face Llama-family model folders (config.json,
// generation_config.json, safetensors weights, sharded or not) and PEFT LoRA
// adapter folders, validating them against the shapes the engine computes
// with, and writes deterministic random models and adapters for demos, tests
// and benchmarks.
package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// Architectures accepted in config.json, by architectures[0].
const (
	ArchLlama   = "LlamaForCausalLM"
	ArchMistral = "MistralForCausalLM"
	ArchQwen2   = "Qwen2ForCausalLM"
	ArchQwen3   = "Qwen3ForCausalLM"
	ArchPhi3    = "Phi3ForCausalLM"
	ArchGemma2  = "Gemma2ForCausalLM"
	ArchGemma3  = "Gemma3ForCausalLM"
	// ArchGemma3Multimodal checkpoints (Gemma 3 4B, 12B, 27B) are served
	// as their language model: its text_config, its weights under
	// language_model.model. (or model.language_model.); the vision tower
	// is not loaded.
	ArchGemma3Multimodal = "Gemma3ForConditionalGeneration"
	// ArchMistral3Multimodal checkpoints (Mistral Small 3.1 and 3.2) are
	// served as their Mistral language model the same way.
	ArchMistral3Multimodal = "Mistral3ForConditionalGeneration"
)

// multimodal are the checkpoints of a language model with a vision tower
// that Nozzle serves as their language model (text in, text out): by
// architecture, or by model_type where architectures is missing; the
// language model's architecture and model_type; and the defaults of its
// config class for the fields a text_config often leaves out.
var multimodal = []struct {
	arch, modelType, textArch, textModelType string
	defaults                                 map[string]any
}{
	{ArchGemma3Multimodal, "gemma3", ArchGemma3, "gemma3_text", gemma3TextDefaults},
	{ArchMistral3Multimodal, "mistral3", ArchMistral, "mistral", mistralDefaults},
}

type archName struct{ modelType, arch string }

// supported are the architectures served, each with its config.json
// model_type, in the order errors list them.
var supported = []archName{
	{"llama", ArchLlama}, {"mistral", ArchMistral}, {"qwen2", ArchQwen2}, {"qwen3", ArchQwen3}, {"phi3", ArchPhi3},
	{"gemma2", ArchGemma2}, {"gemma3_text", ArchGemma3},
}

var archByModelType = func() map[string]string {
	m := map[string]string{}
	for _, s := range supported {
		m[s.modelType] = s.arch
	}
	return m
}()

// supportedList lists one field of every supported architecture as "a, b
// or c".
func supportedList(field func(modelType, arch string) string) string {
	names := make([]string, 0, len(supported)+len(multimodal))
	for _, s := range supported {
		names = append(names, field(s.modelType, s.arch))
	}
	for _, m := range multimodal {
		names = append(names, field(m.modelType, m.arch))
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Fused reports whether the architecture's checkpoints (and PEFT adapters)
// keep q, k and v in one qkv_proj and gate and up in one gate_up_proj
// (Phi-3, Phi-4): see fusedModules.
func Fused(arch string) bool { return arch == ArchPhi3 }

// isQwen reports whether the architecture is Qwen2's or Qwen3's, which
// share their defaults and their sliding window's spelling.
func isQwen(arch string) bool { return arch == ArchQwen2 || arch == ArchQwen3 }

// IsGemma reports whether the architecture is Gemma 2's or Gemma 3's: norms
// of (1 + w), scaled embeddings, GELU, post-attention and post-MLP norms,
// alternating sliding-window layers.
func IsGemma(arch string) bool { return arch == ArchGemma2 || arch == ArchGemma3 }

// Activations of the gated MLP.
const (
	ActSilu     = "silu"
	ActGeluTanh = "gelu_pytorch_tanh"
)

// RoPE scaling types the engine implements.
const (
	RopeDefault = "default"
	RopeLinear  = "linear"
	RopeLlama3  = "llama3"
	RopeYarn    = "yarn"
	// RopeLongrope is Phi-3's (also spelled "su"): each frequency divided
	// by its own factor, short_factor or long_factor.
	RopeLongrope = "longrope"
	// RopeDynamic is dynamic NTK scaling: transformers raises rope_theta
	// with the sequence's length only past max_position_embeddings, the
	// most Nozzle serves, so within it the computation is default RoPE's.
	RopeDynamic = "dynamic"
)

// RopeScaling is config.json's rope_scaling (or rope_parameters) resolved.
type RopeScaling struct {
	// Type is RopeDefault, RopeLinear, RopeLlama3, RopeYarn, RopeLongrope
	// or RopeDynamic.
	Type string
	// Factor divides frequencies (linear, llama3, yarn).
	Factor float64
	// LowFreqFactor and HighFreqFactor are llama3's; OriginalMaxPosition
	// is llama3's, yarn's and longrope's.
	LowFreqFactor       float64
	HighFreqFactor      float64
	OriginalMaxPosition int
	// BetaFast, BetaSlow, AttentionFactor and Truncate are yarn's, with
	// transformers' defaults resolved: beta_fast 32, beta_slow 1, truncate
	// true, and the attention factor (which multiplies RoPE's cos and sin)
	// from attention_factor, else from factor, mscale and mscale_all_dim
	// (YarnMscale).
	BetaFast        float64
	BetaSlow        float64
	AttentionFactor float64
	Truncate        bool
	// ShortFactor and LongFactor are longrope's: RotaryDim/2 divisors of
	// the frequencies, for a context up to OriginalMaxPosition and for a
	// longer one (LongropeFactors picks one). AttentionFactor is
	// longrope's too: attention_factor, else transformers' default
	// √(1 + ln(s)/ln(OriginalMaxPosition)) for s = max_position_embeddings
	// / OriginalMaxPosition above 1, else 1.
	ShortFactor []float64
	LongFactor  []float64
}

// LongropeFactors returns the longrope factors an engine serving a
// context of context tokens uses for every position: LongFactor when
// that context reaches past OriginalMaxPosition, else ShortFactor — one
// table for the engine's whole life, as vLLM does, so that a sequence
// growing past OriginalMaxPosition keeps the keys it cached. (transformers
// instead switches a whole forward pass to the long factors once the
// sequence passes OriginalMaxPosition, so its cached keys are rotated by
// the short ones and its new ones by the long: served past that length,
// Nozzle's numbers are those of the long factors throughout.)
func (rs *RopeScaling) LongropeFactors(context int) []float64 {
	if context > rs.OriginalMaxPosition {
		return rs.LongFactor
	}
	return rs.ShortFactor
}

// YarnMscale is transformers' get_mscale for YaRN: 0.1·mscale·ln(scale) + 1,
// or 1 when scale <= 1. A yarn config without attention_factor gets
// YarnMscale(factor, mscale)/YarnMscale(factor, mscale_all_dim) when both
// mscale and mscale_all_dim are set and non-zero, else YarnMscale(factor, 1).
func YarnMscale(scale, mscale float64) float64 {
	if scale <= 1 {
		return 1
	}
	return 0.1*mscale*math.Log(scale) + 1
}

// Config is a model's config.json with every default and alternative
// spelling resolved.
type Config struct {
	// Architecture is one of ArchLlama, ArchMistral, ArchQwen2, ArchQwen3,
	// ArchPhi3.
	Architecture string
	// ModelType is config.json's model_type (may be empty).
	ModelType string
	// NameOrPath is config.json's _name_or_path (may be empty).
	NameOrPath string
	// LanguageModelOf is the architecture of the checkpoint whose language
	// model this is (ArchGemma3Multimodal, ArchMistral3Multimodal), or ""
	// for a language model's
	// own checkpoint.
	LanguageModelOf string

	VocabSize        int
	HiddenSize       int
	IntermediateSize int
	NumLayers        int
	NumHeads         int
	NumKVHeads       int
	HeadDim          int
	// RotaryDim is how many of a head's dims RoPE rotates (the first
	// ones): HeadDim, or fewer with partial_rotary_factor (Phi-4-mini).
	RotaryDim int
	// MaxPositionEmbeddings is the context length the model was made for.
	MaxPositionEmbeddings int
	RMSNormEps            float64
	RopeTheta             float64
	RopeScaling           RopeScaling
	// SlidingWindow is 0 for full attention; otherwise a query at position
	// p sees keys at positions p-SlidingWindow+1..p in the layers from
	// SlidingWindowFromLayer on.
	SlidingWindow          int
	SlidingWindowFromLayer int
	TieWordEmbeddings      bool
	// QKVBias: q, k and v projections have biases (Qwen2, or Llama with
	// attention_bias). OBias: o_proj has one (Llama with attention_bias).
	QKVBias bool
	OBias   bool
	// MLPBias: gate, up and down projections have biases (Llama mlp_bias).
	MLPBias bool
	// QKNorm: each head of q and of k is RMS-normalised (own weights of
	// head_dim, rms_norm_eps) after the projection and before RoPE (Qwen3,
	// Gemma 3).
	QKNorm bool

	// Gemma 2 and 3; the zero values give the Llama computation.
	//
	// NormWeightOffset: every RMSNorm multiplies by (offset + w) (Gemma: 1).
	NormWeightOffset float64
	// HiddenAct is the gated MLP's activation, ActSilu or ActGeluTanh.
	HiddenAct string
	// EmbedScaled: embeddings are multiplied by √hidden_size rounded to
	// the weights' dtype (EmbedScale).
	EmbedScaled bool
	// QueryPreAttnScalar, when set, scales attention scores by its inverse
	// square root instead of head_dim's.
	QueryPreAttnScalar float64
	// AttnSoftcap and FinalSoftcap, when set, soft-cap attention scores and
	// the logits: cap·tanh(x/cap).
	AttnSoftcap  float64
	FinalSoftcap float64
	// RopeLocalTheta, when set, is the RoPE base of the sliding-window
	// layers (default RoPE); the others use RopeTheta and RopeScaling
	// (Gemma 3's rope_local_base_freq).
	RopeLocalTheta float64
	// PostNorms: the attention's and the MLP's outputs are RMS-normalised
	// before the residual add (Gemma's post_attention_layernorm and
	// post_feedforward_layernorm; the MLP's input norm is then
	// pre_feedforward_layernorm).
	PostNorms bool
	// SlidingLayers, when not nil, says which layers use the window; it
	// replaces SlidingWindowFromLayer (Gemma's alternating layers).
	SlidingLayers []bool
	// DType is torch_dtype/dtype as a safetensors dtype ("" when absent).
	DType safetensors.DType

	BOSTokenID  int // -1 when absent
	PadTokenID  int // -1 when absent
	EOSTokenIDs []int
}

// GenerationConfig is generation_config.json. Absent fields are nil.
type GenerationConfig struct {
	BOSTokenID   *int
	PadTokenID   *int
	EOSTokenIDs  []int
	DoSample     *bool
	Temperature  *float64
	TopP         *float64
	TopK         *int
	MaxNewTokens *int
	MaxLength    *int
}

// rawConfig holds the fields of config.json the engine reads. Pointers
// tell absent from zero; json.RawMessage fields take several shapes.
type rawConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	NameOrPath            string          `json:"_name_or_path"`
	VocabSize             *int            `json:"vocab_size"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
	HiddenAct             *string         `json:"hidden_act"`
	HiddenActivation      *string         `json:"hidden_activation"`
	// Gemma 2 and 3
	QueryPreAttnScalar   *float64        `json:"query_pre_attn_scalar"`
	AttnLogitSoftcapping *float64        `json:"attn_logit_softcapping"`
	FinalLogitSoftcap    *float64        `json:"final_logit_softcapping"`
	RopeLocalBaseFreq    *float64        `json:"rope_local_base_freq"`
	SlidingWindowPattern *int            `json:"sliding_window_pattern"`
	SlidingWindow        json.RawMessage `json:"sliding_window"`
	UseSlidingWindow     *bool           `json:"use_sliding_window"`
	MaxWindowLayers      *int            `json:"max_window_layers"`
	LayerTypes           []string        `json:"layer_types"`
	TorchDType           *string         `json:"torch_dtype"`
	DType                *string         `json:"dtype"`
	BOSTokenID           json.RawMessage `json:"bos_token_id"`
	EOSTokenID           json.RawMessage `json:"eos_token_id"`
	PadTokenID           json.RawMessage `json:"pad_token_id"`
	PartialRotaryFactor  *float64        `json:"partial_rotary_factor"`
	// OriginalMaxPositionEmbeddings outside rope_scaling (Phi-3 puts it
	// there); yarn falls back to it.
	OriginalMaxPositionEmbeddings *float64 `json:"original_max_position_embeddings"`
}

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	c, _, err := loadConfig(dir)
	return c, err
}

// loadConfig reads dir/config.json and returns it parsed and as read.
func loadConfig(dir string) (*Config, []byte, error) {
	b, err := readSmallFile(filepath.Join(dir, "config.json"), 4<<20)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("model folder %s has no config.json", dir)
		}
		return nil, nil, fmt.Errorf("read config.json: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	return c, b, nil
}

// ParseConfig parses the bytes of a config.json.
func ParseConfig(b []byte) (*Config, error) {
	var r rawConfig
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	for _, mm := range multimodal {
		if len(r.Architectures) > 0 && r.Architectures[0] == mm.arch || len(r.Architectures) == 0 && r.ModelType == mm.modelType {
			return parseMultimodal(b, mm.arch, mm.textArch, mm.textModelType, mm.defaults)
		}
	}
	c := &Config{ModelType: r.ModelType, NameOrPath: r.NameOrPath}
	switch {
	case len(r.Architectures) > 0:
		a := r.Architectures[0]
		if !slices.ContainsFunc(supported, func(s archName) bool { return s.arch == a }) {
			return nil, fmt.Errorf("architecture %q is not supported (want %s)", a,
				supportedList(func(_, arch string) string { return arch }))
		}
		c.Architecture = a
	case r.ModelType != "":
		a, ok := archByModelType[r.ModelType]
		if !ok {
			return nil, fmt.Errorf("model_type %q is not supported (want %s)", r.ModelType,
				supportedList(func(modelType, _ string) string { return modelType }))
		}
		c.Architecture = a
	default:
		return nil, errors.New("neither architectures nor model_type is set")
	}

	need := func(name string, v *int) (int, error) {
		if v == nil {
			return 0, fmt.Errorf("%s is missing", name)
		}
		if *v <= 0 {
			return 0, fmt.Errorf("%s is %d, want a positive number", name, *v)
		}
		return *v, nil
	}
	var err error
	if c.HiddenSize, err = need("hidden_size", r.HiddenSize); err != nil {
		return nil, err
	}
	if c.IntermediateSize, err = need("intermediate_size", r.IntermediateSize); err != nil {
		return nil, err
	}
	if c.NumLayers, err = need("num_hidden_layers", r.NumHiddenLayers); err != nil {
		return nil, err
	}
	if c.NumHeads, err = need("num_attention_heads", r.NumAttentionHeads); err != nil {
		return nil, err
	}
	c.VocabSize = 32000
	if isQwen(c.Architecture) {
		c.VocabSize = 151936
	} else if c.Architecture == ArchPhi3 {
		c.VocabSize = 32064
	} else if c.Architecture == ArchGemma2 {
		c.VocabSize = 256000
	} else if c.Architecture == ArchGemma3 {
		c.VocabSize = 262208
	}
	if r.VocabSize != nil {
		if c.VocabSize, err = need("vocab_size", r.VocabSize); err != nil {
			return nil, err
		}
	}
	c.NumKVHeads = c.NumHeads
	if c.Architecture == ArchMistral {
		c.NumKVHeads = 8
	} else if IsGemma(c.Architecture) {
		c.NumKVHeads = 4
	}
	if r.NumKeyValueHeads != nil {
		if c.NumKVHeads, err = need("num_key_value_heads", r.NumKeyValueHeads); err != nil {
			return nil, err
		}
	}
	if c.NumHeads%c.NumKVHeads != 0 {
		return nil, fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumHeads, c.NumKVHeads)
	}
	c.HeadDim = c.HiddenSize / c.NumHeads
	if c.Architecture == ArchQwen3 {
		c.HeadDim = 128 // Qwen3Config's default, whatever hidden_size is
	} else if IsGemma(c.Architecture) {
		c.HeadDim = 256 // Gemma2Config's and Gemma3TextConfig's
	}
	if r.HeadDim != nil {
		if c.HeadDim, err = need("head_dim", r.HeadDim); err != nil {
			return nil, err
		}
	}
	if c.HeadDim <= 0 || c.HeadDim%2 != 0 {
		return nil, fmt.Errorf("head_dim %d must be a positive even number", c.HeadDim)
	}
	switch c.Architecture {
	case ArchMistral:
		c.MaxPositionEmbeddings = 4096 * 32
	case ArchQwen2, ArchQwen3:
		c.MaxPositionEmbeddings = 32768
	case ArchPhi3:
		c.MaxPositionEmbeddings = 4096
	case ArchGemma2:
		c.MaxPositionEmbeddings = 8192
	case ArchGemma3:
		c.MaxPositionEmbeddings = 131072
	default:
		c.MaxPositionEmbeddings = 2048
	}
	if r.MaxPositionEmbeddings != nil {
		if c.MaxPositionEmbeddings, err = need("max_position_embeddings", r.MaxPositionEmbeddings); err != nil {
			return nil, err
		}
	}
	c.RMSNormEps = 1e-6
	if c.Architecture == ArchPhi3 {
		c.RMSNormEps = 1e-5
	}
	if r.RMSNormEps != nil {
		c.RMSNormEps = *r.RMSNormEps
	}
	if !(c.RMSNormEps > 0) || math.IsInf(c.RMSNormEps, 0) {
		return nil, fmt.Errorf("rms_norm_eps %v must be a positive number", c.RMSNormEps)
	}
	c.HiddenAct = ActSilu
	if IsGemma(c.Architecture) {
		// Gemma2Config and Gemma3TextConfig read hidden_activation (their
		// hidden_act is a leftover the models ignore).
		c.HiddenAct = ActGeluTanh
		if r.HiddenActivation != nil {
			if *r.HiddenActivation != ActGeluTanh {
				return nil, fmt.Errorf("hidden_activation %q is not supported (want %s)", *r.HiddenActivation, ActGeluTanh)
			}
		}
	} else if r.HiddenAct != nil && *r.HiddenAct != ActSilu {
		return nil, fmt.Errorf("hidden_act %q is not supported (want silu)", *r.HiddenAct)
	}
	// partial_rotary_factor: Phi3ForCausalLM (Phi-4-mini) rotates the first
	// int(head_dim·factor) dims of each head; the other architectures
	// rotate them all.
	c.RotaryDim = c.HeadDim
	if f := r.PartialRotaryFactor; f != nil && *f != 1 {
		if c.Architecture != ArchPhi3 {
			return nil, fmt.Errorf("partial_rotary_factor %v is not supported for %s (want 1)", *f, c.Architecture)
		}
		rd := int(float64(c.HeadDim) * *f) // Python's int(): toward zero
		if !(*f > 0 && *f <= 1) || rd < 2 || rd%2 != 0 {
			return nil, fmt.Errorf("partial_rotary_factor %v must be in (0, 1] and rotate an even number of head_dim %d's dims (it rotates %d)", *f, c.HeadDim, rd)
		}
		c.RotaryDim = rd
	}

	// RoPE: top-level rope_theta/rope_scaling, or transformers v5
	// rope_parameters carrying both.
	c.RopeTheta = 10000
	if c.Architecture == ArchGemma3 {
		c.RopeTheta = 1e6
	}
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	c.RopeScaling = RopeScaling{Type: RopeDefault, Factor: 1}
	if c.Architecture == ArchGemma3 {
		c.RopeLocalTheta = 10000
		if r.RopeLocalBaseFreq != nil {
			c.RopeLocalTheta = *r.RopeLocalBaseFreq
		}
	}
	if c.Architecture == ArchGemma3 && isSet(r.RopeParameters) && bytes.Contains(r.RopeParameters, []byte(`"sliding_attention"`)) {
		// transformers v5 nests Gemma 3's two RoPEs by layer type.
		if err := c.parseGemma3Rope(r.RopeParameters, r.OriginalMaxPositionEmbeddings); err != nil {
			return nil, err
		}
	} else if isSet(r.RopeParameters) {
		theta, err := c.parseRope(r.RopeParameters, "rope_parameters", r.OriginalMaxPositionEmbeddings)
		if err != nil {
			return nil, err
		}
		if theta != nil {
			c.RopeTheta = *theta
		}
	} else if isSet(r.RopeScaling) {
		if _, err := c.parseRope(r.RopeScaling, "rope_scaling", r.OriginalMaxPositionEmbeddings); err != nil {
			return nil, err
		}
	}
	if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return nil, fmt.Errorf("rope_theta %v must be a positive number", c.RopeTheta)
	}

	// Gemma2Config and Gemma3TextConfig tie by default.
	c.TieWordEmbeddings = IsGemma(c.Architecture) && r.TieWordEmbeddings == nil || r.TieWordEmbeddings != nil && *r.TieWordEmbeddings
	switch c.Architecture {
	case ArchQwen2:
		c.QKVBias = true
	case ArchQwen3:
		c.QKNorm = true
		if r.AttentionBias != nil && *r.AttentionBias {
			c.QKVBias, c.OBias = true, true
		}
	case ArchLlama:
		if r.AttentionBias != nil && *r.AttentionBias {
			c.QKVBias, c.OBias = true, true
		}
		c.MLPBias = r.MLPBias != nil && *r.MLPBias
	case ArchGemma2, ArchGemma3:
		if err := c.parseGemma(&r); err != nil {
			return nil, err
		}
	}

	if err := c.parseSlidingWindow(&r); err != nil {
		return nil, err
	}

	dt := r.TorchDType
	if r.DType != nil {
		dt = r.DType
	}
	if dt != nil {
		switch *dt {
		case "bfloat16":
			c.DType = safetensors.BF16
		case "float16", "half":
			c.DType = safetensors.F16
		case "float32", "float":
			c.DType = safetensors.F32
		default:
			return nil, fmt.Errorf("dtype %q is not supported (want bfloat16, float16 or float32)", *dt)
		}
	}

	if c.BOSTokenID, err = optionalTokenID(r.BOSTokenID, "bos_token_id"); err != nil {
		return nil, err
	}
	if c.PadTokenID, err = optionalTokenID(r.PadTokenID, "pad_token_id"); err != nil {
		return nil, err
	}
	if c.EOSTokenIDs, err = tokenIDs(r.EOSTokenID, "eos_token_id"); err != nil {
		return nil, err
	}
	return c, nil
}

// parseRope resolves rope_scaling or rope_parameters (field) into
// c.RopeScaling and returns its rope_theta, if any. topOrig is config.json's
// top-level original_max_position_embeddings (yarn's fallback).
func (c *Config) parseRope(raw json.RawMessage, field string, topOrig *float64) (*float64, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s is not an object: %w", field, err)
	}
	num := func(key string) (*float64, error) {
		v, ok := m[key]
		if !ok || !isSet(v) {
			return nil, nil
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return nil, fmt.Errorf("%s.%s is not a number", field, key)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%s.%s is not finite", field, key)
		}
		return &f, nil
	}
	typ := ""
	for _, k := range []string{"rope_type", "type"} {
		if v, ok := m[k]; ok && isSet(v) {
			if err := json.Unmarshal(v, &typ); err != nil {
				return nil, fmt.Errorf("%s.%s is not a string", field, k)
			}
			break
		}
	}
	theta, err := num("rope_theta")
	if err != nil {
		return nil, err
	}
	if typ == "" {
		if field == "rope_parameters" {
			typ = RopeDefault
		} else {
			return nil, fmt.Errorf("%s has no rope_type", field)
		}
	}
	require := func(key string) (float64, error) {
		f, err := num(key)
		if err != nil {
			return 0, err
		}
		if f == nil {
			return 0, fmt.Errorf("%s (rope_type %s) needs %s", field, typ, key)
		}
		if !(*f > 0) {
			return 0, fmt.Errorf("%s.%s is %v, want a positive number", field, key, *f)
		}
		return *f, nil
	}
	rs := RopeScaling{Type: typ, Factor: 1}
	switch typ {
	case RopeDefault:
	case RopeLinear:
		if rs.Factor, err = require("factor"); err != nil {
			return nil, err
		}
	case RopeDynamic:
		// transformers' _compute_dynamic_ntk_parameters: theta ·
		// (factor·L/max_position_embeddings − (factor − 1))^(d/(d−2)) for
		// a sequence of L tokens, L taken at least max_position_embeddings:
		// theta itself for every sequence Nozzle serves (the factor is
		// read, and checked, for the config's sake).
		if rs.Factor, err = require("factor"); err != nil {
			return nil, err
		}
	case RopeLlama3:
		if rs.Factor, err = require("factor"); err != nil {
			return nil, err
		}
		if rs.LowFreqFactor, err = require("low_freq_factor"); err != nil {
			return nil, err
		}
		if rs.HighFreqFactor, err = require("high_freq_factor"); err != nil {
			return nil, err
		}
		orig, err := require("original_max_position_embeddings")
		if err != nil {
			return nil, err
		}
		if orig != math.Trunc(orig) {
			return nil, fmt.Errorf("%s.original_max_position_embeddings %v is not an integer", field, orig)
		}
		rs.OriginalMaxPosition = int(orig)
		if rs.HighFreqFactor <= rs.LowFreqFactor {
			return nil, fmt.Errorf("%s: high_freq_factor %v must exceed low_freq_factor %v", field, rs.HighFreqFactor, rs.LowFreqFactor)
		}
	case RopeYarn:
		if err := c.parseYarn(&rs, field, num, m, topOrig); err != nil {
			return nil, err
		}
	case RopeLongrope, "su": // "su": Phi-3's first name for it
		rs.Type = RopeLongrope
		if err := c.parseLongrope(&rs, field, num, m, topOrig); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s rope_type %q is not supported (default, linear, dynamic, llama3, yarn and longrope are)", field, typ)
	}
	c.RopeScaling = rs
	return theta, nil
}

// parseLongrope fills rs for rope_type longrope as transformers'
// _compute_longrope_parameters (and Phi3Config's validation) read it:
// short_factor and long_factor, RotaryDim/2 positive numbers each; the
// original context from the rope dict, else the top-level
// original_max_position_embeddings (Phi-3 keeps it there), else Phi3Config's
// default 4096 for Phi-3 and max_position_embeddings for others; and the
// attention factor from attention_factor, else from the ratio of
// max_position_embeddings to the original context where an original was
// configured (Phi-3: always), else from factor.
func (c *Config) parseLongrope(rs *RopeScaling, field string, num func(string) (*float64, error), m map[string]json.RawMessage, topOrig *float64) error {
	factors := func(key string) ([]float64, error) {
		v, ok := m[key]
		if !ok || !isSet(v) {
			return nil, fmt.Errorf("%s (rope_type longrope) needs %s", field, key)
		}
		var f []float64
		if err := json.Unmarshal(v, &f); err != nil {
			return nil, fmt.Errorf("%s.%s is not a list of numbers", field, key)
		}
		if len(f) != c.RotaryDim/2 {
			return nil, fmt.Errorf("%s.%s has %d factors, want %d (half the %d dims RoPE rotates)", field, key, len(f), c.RotaryDim/2, c.RotaryDim)
		}
		for i, x := range f {
			if !(x > 0) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("%s.%s[%d] is %v, want a positive number", field, key, i, x)
			}
		}
		return f, nil
	}
	var err error
	if rs.ShortFactor, err = factors("short_factor"); err != nil {
		return err
	}
	if rs.LongFactor, err = factors("long_factor"); err != nil {
		return err
	}
	orig, err := num("original_max_position_embeddings")
	if err != nil {
		return err
	}
	if orig == nil {
		orig = topOrig
	}
	if orig == nil && c.Architecture == ArchPhi3 {
		def := 4096.0 // Phi3Config's default
		orig = &def
	}
	factor := 1.0
	if orig != nil {
		if !(*orig >= 1) || *orig != math.Trunc(*orig) || *orig > math.MaxInt32 {
			return fmt.Errorf("original_max_position_embeddings %v is not a positive integer", *orig)
		}
		rs.OriginalMaxPosition = int(*orig)
		factor = float64(c.MaxPositionEmbeddings) / *orig
	} else {
		rs.OriginalMaxPosition = c.MaxPositionEmbeddings
		f, err := num("factor")
		if err != nil {
			return err
		}
		if f != nil {
			factor = *f
		}
	}
	af, err := num("attention_factor")
	if err != nil {
		return err
	}
	switch {
	case af != nil:
		if !(*af > 0) {
			return fmt.Errorf("%s.attention_factor is %v, want a positive number", field, *af)
		}
		rs.AttentionFactor = *af
	case orig != nil:
		rs.AttentionFactor = LongropeAttention(c.MaxPositionEmbeddings, rs.OriginalMaxPosition)
	default:
		rs.AttentionFactor = longropeAttention(factor, rs.OriginalMaxPosition)
	}
	return nil
}

// ContextLength is how many positions a sequence of the model may hold:
// max_position_embeddings, or with yarn the original context times the
// factor where that is longer — what YaRN's scaling is for (Qwen2.5's
// configs keep max_position_embeddings at 32768 and add yarn with factor 4
// for 131072, as vLLM reads them).
func (c *Config) ContextLength() int {
	n := c.MaxPositionEmbeddings
	if rs := c.RopeScaling; rs.Type == RopeYarn {
		if y := float64(rs.OriginalMaxPosition) * rs.Factor; y > float64(n) && y <= math.MaxInt32 {
			n = int(y)
		}
	}
	return n
}

// LongropeAttention is longrope's default attention factor for a model of
// max_position_embeddings maxPos pretrained on orig positions
// (transformers' _compute_longrope_parameters): √(1 + ln(maxPos/orig) /
// ln(orig)), or 1 when maxPos/orig is at most 1.
func LongropeAttention(maxPos, orig int) float64 {
	return longropeAttention(float64(maxPos)/float64(orig), orig)
}

func longropeAttention(factor float64, orig int) float64 {
	if factor <= 1 || orig < 2 {
		return 1
	}
	return math.Sqrt(1 + math.Log(factor)/math.Log(float64(orig)))
}

// parseYarn fills rs for rope_type yarn as transformers' (v5.0 dev,
// rope_parameters; and 4.5x, rope_scaling) _compute_yarn_parameters reads
// its config:
//   - original_max_position_embeddings from the rope dict, else the
//     top-level field (v5's standardize_rope_params moves it in; 4.5x
//     ignores it: when both are set and differ the config is refused as
//     ambiguous), else max_position_embeddings;
//   - factor, which transformers' validation requires; null or absent, the
//     fallback of its compute function (for a null factor),
//     max_position_embeddings/original, is taken when an original length
//     was given;
//   - beta_fast and beta_slow, absent, null or 0 meaning 32 and 1 (HF's
//     `get(...) or 32`);
//   - attention_factor, else mscale/mscale_all_dim (YarnMscale);
//   - truncate, default true.
func (c *Config) parseYarn(rs *RopeScaling, field string, num func(string) (*float64, error), m map[string]json.RawMessage, topOrig *float64) error {
	positive := func(key string, f *float64) error {
		if f != nil && !(*f > 0) {
			return fmt.Errorf("%s.%s is %v, want a positive number", field, key, *f)
		}
		return nil
	}
	integer := func(key string, f float64) error {
		if f != math.Trunc(f) || f > math.MaxInt32 {
			return fmt.Errorf("%s %v is not an integer position", key, f)
		}
		return nil
	}
	orig, err := num("original_max_position_embeddings")
	if err != nil {
		return err
	}
	if err := positive("original_max_position_embeddings", orig); err != nil {
		return err
	}
	if orig != nil {
		if err := integer(field+".original_max_position_embeddings", *orig); err != nil {
			return err
		}
	}
	if topOrig != nil {
		if !(*topOrig > 0) {
			return fmt.Errorf("original_max_position_embeddings is %v, want a positive number", *topOrig)
		}
		if err := integer("original_max_position_embeddings", *topOrig); err != nil {
			return err
		}
		if orig != nil && *orig != *topOrig {
			return fmt.Errorf("%s.original_max_position_embeddings %v and the top-level original_max_position_embeddings %v differ (transformers versions disagree on which counts)", field, *orig, *topOrig)
		}
		if orig == nil {
			orig = topOrig
		}
	}
	rs.OriginalMaxPosition = c.MaxPositionEmbeddings
	if orig != nil {
		rs.OriginalMaxPosition = int(*orig)
	}

	factor, err := num("factor")
	if err != nil {
		return err
	}
	if err := positive("factor", factor); err != nil {
		return err
	}
	switch {
	case factor != nil:
		rs.Factor = *factor
	case orig != nil && c.MaxPositionEmbeddings > rs.OriginalMaxPosition:
		rs.Factor = float64(c.MaxPositionEmbeddings) / float64(rs.OriginalMaxPosition)
	default:
		return fmt.Errorf("%s (rope_type yarn) needs factor (or an original_max_position_embeddings below max_position_embeddings %d to derive it from)", field, c.MaxPositionEmbeddings)
	}

	beta := func(key string, def float64) (float64, error) {
		f, err := num(key)
		if err != nil {
			return 0, err
		}
		if f == nil || *f == 0 {
			return def, nil
		}
		if err := positive(key, f); err != nil {
			return 0, err
		}
		return *f, nil
	}
	if rs.BetaFast, err = beta("beta_fast", 32); err != nil {
		return err
	}
	if rs.BetaSlow, err = beta("beta_slow", 1); err != nil {
		return err
	}
	if rs.BetaFast < rs.BetaSlow {
		return fmt.Errorf("%s: beta_fast %v must be at least beta_slow %v", field, rs.BetaFast, rs.BetaSlow)
	}

	af, err := num("attention_factor")
	if err != nil {
		return err
	}
	if af != nil {
		if err := positive("attention_factor", af); err != nil {
			return err
		}
		rs.AttentionFactor = *af
	} else {
		mscale, err := num("mscale")
		if err != nil {
			return err
		}
		mscaleAll, err := num("mscale_all_dim")
		if err != nil {
			return err
		}
		if mscale != nil && *mscale != 0 && mscaleAll != nil && *mscaleAll != 0 {
			rs.AttentionFactor = YarnMscale(rs.Factor, *mscale) / YarnMscale(rs.Factor, *mscaleAll)
		} else {
			rs.AttentionFactor = YarnMscale(rs.Factor, 1)
		}
		if !(rs.AttentionFactor > 0) || math.IsInf(rs.AttentionFactor, 0) {
			return fmt.Errorf("%s: the attention factor from factor %v, mscale and mscale_all_dim is %v, want a positive number", field, rs.Factor, rs.AttentionFactor)
		}
	}

	rs.Truncate = true
	if v, ok := m["truncate"]; ok && isSet(v) {
		if err := json.Unmarshal(v, &rs.Truncate); err != nil {
			return fmt.Errorf("%s.truncate is not a boolean", field)
		}
	}
	return nil
}

func (c *Config) parseSlidingWindow(r *rawConfig) error {
	window := 0
	if isSet(r.SlidingWindow) {
		if err := json.Unmarshal(r.SlidingWindow, &window); err != nil || window < 0 {
			return fmt.Errorf("sliding_window %s is not a non-negative integer", r.SlidingWindow)
		}
	}
	switch c.Architecture {
	case ArchMistral:
		if r.SlidingWindow == nil {
			window = 4096 // MistralConfig's default when the key is absent
		}
		c.SlidingWindow = window
	case ArchPhi3:
		c.SlidingWindow = window // every layer's, when set
	case ArchQwen2, ArchQwen3:
		if r.UseSlidingWindow == nil || !*r.UseSlidingWindow {
			window = 0
		} else if r.SlidingWindow == nil {
			window = 4096
		}
		c.SlidingWindow = window
		c.SlidingWindowFromLayer = 28
		if r.MaxWindowLayers != nil {
			c.SlidingWindowFromLayer = *r.MaxWindowLayers
		}
	case ArchGemma2, ArchGemma3:
		if r.SlidingWindow == nil {
			window = 4096 // both configs' default
		}
		c.SlidingWindow = window
		// Without layer_types: Gemma 2 alternates sliding and full layers,
		// Gemma 3 has sliding_window_pattern-1 sliding layers, then a full
		// one ((i+1) % pattern != 0 slides).
		pattern := 2
		if c.Architecture == ArchGemma3 {
			pattern = 6
			if r.SlidingWindowPattern != nil {
				pattern = *r.SlidingWindowPattern
			}
		}
		if pattern < 1 {
			return fmt.Errorf("sliding_window_pattern %d must be positive", pattern)
		}
		c.SlidingLayers = make([]bool, c.NumLayers)
		for i := range c.SlidingLayers {
			c.SlidingLayers[i] = (i+1)%pattern != 0
		}
	}
	if len(r.LayerTypes) > 0 && c.SlidingWindow > 0 {
		// Explicit layer types, in any order.
		if len(r.LayerTypes) != c.NumLayers {
			return fmt.Errorf("layer_types has %d entries for %d layers", len(r.LayerTypes), c.NumLayers)
		}
		c.SlidingLayers = make([]bool, c.NumLayers)
		for i, t := range r.LayerTypes {
			switch t {
			case "sliding_attention":
				c.SlidingLayers[i] = true
			case "full_attention":
			default:
				return fmt.Errorf("layer_types: %q is not supported", t)
			}
		}
	}
	if c.SlidingWindowFromLayer < 0 {
		return fmt.Errorf("max_window_layers %d is negative", c.SlidingWindowFromLayer)
	}
	if c.SlidingLayers != nil {
		// Full layers followed by sliding ones need no list.
		from := slices.Index(c.SlidingLayers, true)
		if from < 0 {
			from = c.NumLayers
		}
		if !slices.Contains(c.SlidingLayers[from:], false) {
			c.SlidingLayers, c.SlidingWindowFromLayer = nil, from
		}
	}
	if c.SlidingWindow == 0 || c.SlidingLayers == nil && c.SlidingWindowFromLayer >= c.NumLayers {
		c.SlidingWindow, c.SlidingWindowFromLayer, c.SlidingLayers = 0, 0, nil
	}
	return nil
}

// SlidingLayer reports whether layer uses the sliding window.
func (c *Config) SlidingLayer(layer int) bool {
	if c.SlidingWindow == 0 {
		return false
	}
	if c.SlidingLayers != nil {
		return c.SlidingLayers[layer]
	}
	return layer >= c.SlidingWindowFromLayer
}

// EmbedScale is the factor embeddings are multiplied by when the weights
// are held in dt: 1 for most models; with EmbedScaled (Gemma), √hidden_size
// rounded to dt, as transformers makes it (a tensor of the weights' dtype).
func (c *Config) EmbedScale(dt safetensors.DType) float64 {
	if !c.EmbedScaled {
		return 1
	}
	f := float32(math.Sqrt(float64(c.HiddenSize)))
	switch dt {
	case safetensors.BF16:
		f = safetensors.BF16ToF32(safetensors.F32ToBF16(f))
	case safetensors.F16:
		f = safetensors.F16ToF32(safetensors.F32ToF16(f))
	}
	return float64(f)
}

// gemma3TextDefaults are Gemma3TextConfig's defaults for the fields a
// Gemma3ForConditionalGeneration config's text_config often leaves out.
var gemma3TextDefaults = map[string]any{
	"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
	"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
	"rms_norm_eps": 1e-6, "rope_theta": 1e6, "query_pre_attn_scalar": 256, "sliding_window": 4096,
	"rope_local_base_freq": 10000.0, "sliding_window_pattern": 6,
}

// mistralDefaults are MistralConfig's defaults for the fields a
// Mistral3ForConditionalGeneration config's text_config may leave out.
var mistralDefaults = map[string]any{
	"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
	"num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
	"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096,
}

// parseMultimodal parses a multimodal checkpoint's config (arch) as its
// language model's (textArch, textModelType): text_config over its config
// class's defaults, with the token ids, dtype and name of the outer config
// where text_config has none.
func parseMultimodal(b []byte, arch, textArch, textModelType string, defaults map[string]any) (*Config, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(b, &outer); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	raw, ok := outer["text_config"]
	if !ok || !isSet(raw) {
		return nil, fmt.Errorf("%s config has no text_config", arch)
	}
	var text map[string]json.RawMessage
	if err := json.Unmarshal(raw, &text); err != nil {
		return nil, fmt.Errorf("text_config is not an object: %w", err)
	}
	merged := map[string]json.RawMessage{}
	for k, v := range defaults {
		merged[k], _ = json.Marshal(v)
	}
	for _, k := range []string{"bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype", "_name_or_path", "tie_word_embeddings"} {
		if v, ok := outer[k]; ok {
			merged[k] = v
		}
	}
	for k, v := range text {
		if (k == "eos_token_id" || k == "bos_token_id" || k == "pad_token_id" || k == "torch_dtype" || k == "dtype") && !isSet(v) {
			continue // the outer config's
		}
		merged[k] = v
	}
	merged["architectures"] = json.RawMessage(`["` + textArch + `"]`)
	merged["model_type"] = json.RawMessage(`"` + textModelType + `"`)
	mb, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(mb)
	if err != nil {
		return nil, fmt.Errorf("text_config: %w", err)
	}
	c.LanguageModelOf = arch
	return c, nil
}

// parseGemma resolves Gemma 2's and Gemma 3's own fields.
func (c *Config) parseGemma(r *rawConfig) error {
	c.NormWeightOffset = 1
	c.EmbedScaled = true
	c.PostNorms = true
	c.QKNorm = c.Architecture == ArchGemma3
	if r.AttentionBias != nil && *r.AttentionBias {
		c.QKVBias, c.OBias = true, true
	}
	c.QueryPreAttnScalar = 256 // both configs' default
	if r.QueryPreAttnScalar != nil {
		c.QueryPreAttnScalar = *r.QueryPreAttnScalar
	}
	if !(c.QueryPreAttnScalar > 0) || math.IsInf(c.QueryPreAttnScalar, 0) {
		return fmt.Errorf("query_pre_attn_scalar %v must be a positive number", c.QueryPreAttnScalar)
	}
	// Gemma 2 caps by default (50 and 30); Gemma 3 does not. null is off.
	capOf := func(v *float64, def float64, name string) (float64, error) {
		if v == nil {
			return def, nil
		}
		if *v < 0 || math.IsInf(*v, 0) {
			return 0, fmt.Errorf("%s %v must be a non-negative number", name, *v)
		}
		return *v, nil
	}
	var defAttn, defFinal float64
	if c.Architecture == ArchGemma2 {
		defAttn, defFinal = 50, 30
	}
	var err error
	if c.AttnSoftcap, err = capOf(r.AttnLogitSoftcapping, defAttn, "attn_logit_softcapping"); err != nil {
		return err
	}
	if c.FinalSoftcap, err = capOf(r.FinalLogitSoftcap, defFinal, "final_logit_softcapping"); err != nil {
		return err
	}
	if c.Architecture == ArchGemma3 && !(c.RopeLocalTheta > 0) {
		return fmt.Errorf("rope_local_base_freq %v must be a positive number", c.RopeLocalTheta)
	}
	return nil
}

// parseGemma3Rope reads transformers v5's rope_parameters for Gemma 3:
// {"full_attention": {...}, "sliding_attention": {...}}. The sliding layers'
// RoPE must be the default type (the engine gives them no scaling).
func (c *Config) parseGemma3Rope(raw json.RawMessage, topOrig *float64) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("rope_parameters is not an object: %w", err)
	}
	if full, ok := m["full_attention"]; ok && isSet(full) {
		theta, err := c.parseRope(full, "rope_parameters.full_attention", topOrig)
		if err != nil {
			return err
		}
		if theta != nil {
			c.RopeTheta = *theta
		}
	}
	local := Config{}
	theta, err := local.parseRope(m["sliding_attention"], "rope_parameters.sliding_attention", topOrig)
	if err != nil {
		return err
	}
	if local.RopeScaling.Type != RopeDefault {
		return fmt.Errorf("rope_parameters.sliding_attention: rope_type %q is not supported for sliding layers (want default)", local.RopeScaling.Type)
	}
	if theta != nil {
		c.RopeLocalTheta = *theta
	}
	return nil
}

// LoadGenerationConfig reads dir/generation_config.json; it returns nil and
// no error when the file is absent.
func LoadGenerationConfig(dir string) (*GenerationConfig, error) {
	p := filepath.Join(dir, "generation_config.json")
	b, err := readSmallFile(p, 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read generation_config.json: %w", err)
	}
	g, err := ParseGenerationConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return g, nil
}

// ParseGenerationConfig parses the bytes of a generation_config.json.
func ParseGenerationConfig(b []byte) (*GenerationConfig, error) {
	var r struct {
		BOSTokenID   json.RawMessage `json:"bos_token_id"`
		PadTokenID   json.RawMessage `json:"pad_token_id"`
		EOSTokenID   json.RawMessage `json:"eos_token_id"`
		DoSample     *bool           `json:"do_sample"`
		Temperature  *float64        `json:"temperature"`
		TopP         *float64        `json:"top_p"`
		TopK         *int            `json:"top_k"`
		MaxNewTokens *int            `json:"max_new_tokens"`
		MaxLength    *int            `json:"max_length"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	g := &GenerationConfig{DoSample: r.DoSample, Temperature: r.Temperature, TopP: r.TopP, TopK: r.TopK, MaxNewTokens: r.MaxNewTokens, MaxLength: r.MaxLength}
	ptr := func(raw json.RawMessage, name string) (*int, error) {
		id, err := optionalTokenID(raw, name)
		if err != nil || id < 0 {
			return nil, err
		}
		return &id, nil
	}
	var err error
	if g.BOSTokenID, err = ptr(r.BOSTokenID, "bos_token_id"); err != nil {
		return nil, err
	}
	if g.PadTokenID, err = ptr(r.PadTokenID, "pad_token_id"); err != nil {
		return nil, err
	}
	if g.EOSTokenIDs, err = tokenIDs(r.EOSTokenID, "eos_token_id"); err != nil {
		return nil, err
	}
	if g.Temperature != nil && (*g.Temperature < 0 || math.IsNaN(*g.Temperature)) {
		return nil, fmt.Errorf("temperature %v is negative", *g.Temperature)
	}
	if g.TopP != nil && !(*g.TopP > 0 && *g.TopP <= 1) {
		return nil, fmt.Errorf("top_p %v is not in (0, 1]", *g.TopP)
	}
	if g.TopK != nil && *g.TopK < 0 {
		return nil, fmt.Errorf("top_k %d is negative", *g.TopK)
	}
	return g, nil
}

func isSet(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

func optionalTokenID(raw json.RawMessage, name string) (int, error) {
	if !isSet(raw) {
		return -1, nil
	}
	var id int
	if err := json.Unmarshal(raw, &id); err != nil || id < 0 {
		return 0, fmt.Errorf("%s %s is not a token id", name, raw)
	}
	return id, nil
}

// tokenIDs reads an int or a list of ints.
func tokenIDs(raw json.RawMessage, name string) ([]int, error) {
	if !isSet(raw) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		if one < 0 {
			return nil, fmt.Errorf("%s %d is not a token id", name, one)
		}
		return []int{one}, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s %s is neither a token id nor a list of them", name, raw)
	}
	for _, id := range list {
		if id < 0 {
			return nil, fmt.Errorf("%s %d is not a token id", name, id)
		}
	}
	return list, nil
}

func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a folder", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed", filepath.Base(path), st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return b, nil
}
