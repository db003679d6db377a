package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// TensorKind names a base-model tensor the engine takes. The values are
// the engine ABI's NZ_T_* constants.
type TensorKind int32

// Tensor kinds (nozzle_engine.h NZ_T_*).
const (
	KindEmbed     TensorKind = 0
	KindLMHead    TensorKind = 1
	KindFinalNorm TensorKind = 2
	KindAttnNorm  TensorKind = 3
	KindFFNNorm   TensorKind = 4
	KindQ         TensorKind = 5
	KindK         TensorKind = 6
	KindV         TensorKind = 7
	KindO         TensorKind = 8
	KindGate      TensorKind = 9
	KindUp        TensorKind = 10
	KindDown      TensorKind = 11
	KindQBias     TensorKind = 12
	KindKBias     TensorKind = 13
	KindVBias     TensorKind = 14
	KindOBias     TensorKind = 15
	KindGateBias  TensorKind = 16
	KindUpBias    TensorKind = 17
	KindDownBias  TensorKind = 18
	KindQNorm     TensorKind = 19
	KindKNorm     TensorKind = 20
	// KindPostAttnNorm and KindPostFFNNorm are Gemma 2/3's norms of the
	// attention and MLP outputs before the residual add.
	KindPostAttnNorm TensorKind = 21
	KindPostFFNNorm  TensorKind = 22
	NumKinds                    = 23
)

// PerLayer reports whether the kind exists once per decoder layer.
func (k TensorKind) PerLayer() bool { return k >= KindAttnNorm }

// Module is a LoRA target module. The values are the engine ABI's NZ_M_*
// constants.
type Module int32

// LoRA target modules (nozzle_engine.h NZ_M_*).
const (
	ModuleQ    Module = 0
	ModuleK    Module = 1
	ModuleV    Module = 2
	ModuleO    Module = 3
	ModuleGate Module = 4
	ModuleUp   Module = 5
	ModuleDown Module = 6
	NumModules        = 7
)

var moduleNames = [NumModules]string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
var modulePaths = [NumModules]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// fusedModules are the projections checkpoints of a Fused architecture
// (Phi-3) keep as one: one weight, and one PEFT module, whose output rows
// are its parts', in order.
var fusedModules = [...]struct {
	path  string
	parts []Module
}{
	{"self_attn.qkv_proj", []Module{ModuleQ, ModuleK, ModuleV}},
	{"mlp.gate_up_proj", []Module{ModuleGate, ModuleUp}},
}

// rowSlice is rows [r0, r1) of the matrix t: a view of its data.
func rowSlice(t safetensors.Tensor, r0, r1 int64) safetensors.Tensor {
	row := t.Shape[1] * t.DType.Size()
	return safetensors.Tensor{Name: t.Name, DType: t.DType, Shape: []int64{r1 - r0, t.Shape[1]}, Data: t.Data[r0*row : r1*row]}
}

// String returns the PEFT module name ("q_proj", ..., "down_proj").
func (m Module) String() string {
	if m < 0 || m >= NumModules {
		return fmt.Sprintf("Module(%d)", int32(m))
	}
	return moduleNames[m]
}

// Path returns the module's path inside a decoder layer ("self_attn.q_proj").
func (m Module) Path() string { return modulePaths[m] }

// Kind returns the base weight the module adapts.
func (m Module) Kind() TensorKind { return KindQ + TensorKind(m) }

// ParseModule maps a PEFT module name ("q_proj") to a Module.
func ParseModule(name string) (Module, bool) {
	for i, n := range moduleNames {
		if n == name {
			return Module(i), true
		}
	}
	return 0, false
}

// Features returns a module's in and out features for a base model.
func (m Module) Features(info nozzle.ModelInfo) (in, out int) {
	H, I := info.HiddenSize, info.IntermediateSize
	q, kv := info.NumHeads*info.HeadDim, info.NumKVHeads*info.HeadDim
	switch m {
	case ModuleQ:
		return H, q
	case ModuleK, ModuleV:
		return H, kv
	case ModuleO:
		return q, H
	case ModuleGate, ModuleUp:
		return H, I
	case ModuleDown:
		return I, H
	}
	return 0, 0
}

// Weight is one base-model tensor with its engine kind and layer (-1 for
// the tensors that are not per layer).
type Weight struct {
	Kind  TensorKind
	Layer int
	safetensors.Tensor
}

// Model is an opened model folder. Its weights are views into read-only
// mappings of the safetensors files, valid until Close.
type Model struct {
	// Dir is the folder the model was opened from.
	Dir string
	// ID is the model's name: the folder's base name.
	ID string
	// Config is config.json resolved.
	Config Config
	// Generation is generation_config.json, nil when the folder has none.
	Generation *GenerationConfig
	// Tied is true when logits use the embedding matrix (tie_word_embeddings,
	// or no lm_head.weight in the checkpoint).
	Tied bool
	// DType is the storage dtype of the checkpoint's linear weights.
	DType safetensors.DType
	// Fingerprint identifies the checkpoint's content (config.json and a
	// sample of every weights file), whatever the folder's name: two
	// fine-tunes of one architecture differ in it.
	Fingerprint string
	// Modified is config.json's modification time (UTC), the model's
	// "created" in /v1/models: the same on every load of the folder. Zero
	// when it cannot be read.
	Modified time.Time

	files   []*safetensors.File
	weights []Weight
	index   map[[2]int]int // (kind, layer) -> weights index
}

// Weights returns every tensor the engine takes, in load order.
func (m *Model) Weights() []Weight { return m.weights }

// Weight returns the tensor of a kind (layer -1 for the non-layer kinds).
func (m *Model) Weight(kind TensorKind, layer int) (Weight, bool) {
	i, ok := m.index[[2]int{int(kind), layer}]
	if !ok {
		return Weight{}, false
	}
	return m.weights[i], true
}

// WeightBytes returns the bytes of every tensor as stored.
func (m *Model) WeightBytes() int64 {
	var n int64
	for _, w := range m.weights {
		n += int64(len(w.Data))
	}
	return n
}

// Info describes the model for the rest of Nozzle. MaxLoRARank and Device
// are the engine's to fill.
func (m *Model) Info() nozzle.ModelInfo {
	c := &m.Config
	return nozzle.ModelInfo{
		ID:               m.ID,
		Architecture:     c.Architecture,
		ContextLength:    c.ContextLength(),
		VocabSize:        c.VocabSize,
		HiddenSize:       c.HiddenSize,
		IntermediateSize: c.IntermediateSize,
		NumLayers:        c.NumLayers,
		NumHeads:         c.NumHeads,
		NumKVHeads:       c.NumKVHeads,
		HeadDim:          c.HeadDim,
		Fingerprint:      m.Fingerprint,
		Sampling:         m.samplingDefaults(),
		CreatedAt:        m.Modified,
	}
}

// samplingDefaults are generation_config.json's sampling settings, as
// serving systems take them: the values present, whatever do_sample says
// (an API request asks for sampling or not through its temperature).
func (m *Model) samplingDefaults() nozzle.SamplingDefaults {
	g := m.Generation
	if g == nil {
		return nozzle.SamplingDefaults{}
	}
	d := nozzle.SamplingDefaults{Temperature: g.Temperature, TopP: g.TopP}
	if g.TopK != nil && *g.TopK > 0 {
		d.TopK = *g.TopK
	}
	return d
}

// EOSTokenIDs returns the ids that end generation: generation_config.json's
// when it names any, else config.json's.
func (m *Model) EOSTokenIDs() []int {
	if m.Generation != nil && len(m.Generation.EOSTokenIDs) > 0 {
		return m.Generation.EOSTokenIDs
	}
	return m.Config.EOSTokenIDs
}

// Close unmaps the weight files. The weights must not be used afterwards.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	m.files, m.weights, m.index = nil, nil, nil
	return errors.Join(errs...)
}

// Names of the weight files in a model folder.
const (
	WeightsFile = "model.safetensors"
	IndexFile   = "model.safetensors.index.json"
)

// Open opens a Hugging Face model folder: config.json, optional
// generation_config.json, and model.safetensors or the shards named by
// model.safetensors.index.json. Every tensor the engine needs is checked for
// presence, dtype and shape.
func Open(dir string) (*Model, error) {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("model folder %s does not exist", dir)
		}
		return nil, fmt.Errorf("open model: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model path %s is not a folder", dir)
	}
	// Read once: the fingerprint covers the very bytes parsed.
	cfg, raw, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	gen, err := LoadGenerationConfig(dir)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	m := &Model{Dir: dir, ID: filepath.Base(abs), Config: *cfg, Generation: gen}
	if st, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		m.Modified = st.ModTime().UTC().Truncate(time.Second)
	}
	if err := m.openWeights(); err != nil {
		_ = m.Close()
		return nil, err
	}
	h := sha256.New()
	h.Write(raw)
	for _, f := range m.files {
		f.Sample(h)
	}
	m.Fingerprint = hex.EncodeToString(h.Sum(nil)[:16])
	return m, nil
}

// lookup finds a tensor by its checkpoint name.
type lookup func(name string) (safetensors.Tensor, bool, error)

func (m *Model) openWeights() error {
	single := filepath.Join(m.Dir, WeightsFile)
	var find lookup
	if fileExists(single) {
		f, err := safetensors.Open(single)
		if err != nil {
			return fmt.Errorf("open %s: %w", WeightsFile, err)
		}
		m.files = append(m.files, f)
		find = func(name string) (safetensors.Tensor, bool, error) {
			t, ok := f.Tensor(name)
			return t, ok, nil
		}
	} else if fileExists(filepath.Join(m.Dir, IndexFile)) {
		var err error
		if find, err = m.openShards(); err != nil {
			return err
		}
	} else {
		for _, p := range []string{"pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin"} {
			if fileExists(filepath.Join(m.Dir, p)) {
				return fmt.Errorf("model folder %s has only a pickle checkpoint (%s), which is not accepted; convert it to %s", m.Dir, p, WeightsFile)
			}
		}
		return fmt.Errorf("model folder %s has neither %s nor %s", m.Dir, WeightsFile, IndexFile)
	}
	return m.collect(find)
}

func (m *Model) openShards() (lookup, error) {
	b, err := readSmallFile(filepath.Join(m.Dir, IndexFile), 64<<20)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", IndexFile, err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("%s is not valid: %w", IndexFile, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s has no weight_map", IndexFile)
	}
	shards := map[string]*safetensors.File{}
	return func(name string) (safetensors.Tensor, bool, error) {
		shard, ok := idx.WeightMap[name]
		if !ok {
			return safetensors.Tensor{}, false, nil
		}
		if shard == "" || shard != filepath.Base(shard) || strings.HasPrefix(shard, ".") {
			return safetensors.Tensor{}, false, fmt.Errorf("%s names shard %q for %s, which is not a file name in the model folder", IndexFile, shard, name)
		}
		f, ok := shards[shard]
		if !ok {
			p := filepath.Join(m.Dir, shard)
			if !fileExists(p) {
				return safetensors.Tensor{}, false, fmt.Errorf("model folder %s has no %s (the shard %s names for %s)", m.Dir, shard, IndexFile, name)
			}
			var err error
			if f, err = safetensors.Open(p); err != nil {
				return safetensors.Tensor{}, false, fmt.Errorf("open shard %s: %w", shard, err)
			}
			shards[shard] = f
			m.files = append(m.files, f)
		}
		t, ok := f.Tensor(name)
		if !ok {
			return safetensors.Tensor{}, false, fmt.Errorf("shard %s has no tensor %s, though %s says it does", shard, name, IndexFile)
		}
		return t, true, nil
	}, nil
}

// languageModelLayouts are where a multimodal checkpoint keeps its language
// model's "model." and "lm_head." (transformers before 4.52, then from
// 4.52 on); checkpoints and PEFT adapters alike.
var languageModelLayouts = [...]struct{ model, head string }{
	{"language_model.model.", "language_model.lm_head."},
	{"model.language_model.", "lm_head."},
}

// languageModelLookup finds a multimodal checkpoint's language-model
// tensors by their language model's own names (model.layers.0…,
// lm_head.weight): transformers before 4.52 saved them under
// language_model.model. and language_model.lm_head, later versions under
// model.language_model. and lm_head.
func languageModelLookup(find lookup) (lookup, error) {
	for _, pre := range languageModelLayouts {
		_, ok, err := find(pre.model + "embed_tokens.weight")
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		return func(name string) (safetensors.Tensor, bool, error) {
			switch {
			case strings.HasPrefix(name, "model."):
				name = pre.model + strings.TrimPrefix(name, "model.")
			case strings.HasPrefix(name, "lm_head."):
				name = pre.head + strings.TrimPrefix(name, "lm_head.")
			}
			return find(name)
		}, nil
	}
	return nil, errors.New("model checkpoint has no language_model.model.embed_tokens.weight or model.language_model.embed_tokens.weight: not a multimodal checkpoint's layout")
}

func (m *Model) collect(find lookup) error {
	c := &m.Config
	if c.LanguageModelOf != "" {
		var err error
		if find, err = languageModelLookup(find); err != nil {
			return err
		}
	}
	H, I, V := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	q, kv := int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim)
	m.index = map[[2]int]int{}
	get := func(name string, required bool, shape ...int64) (safetensors.Tensor, bool, error) {
		t, ok, err := find(name)
		if err != nil {
			return t, false, err
		}
		if !ok {
			if required {
				return t, false, fmt.Errorf("model checkpoint has no tensor %s", name)
			}
			return t, false, nil
		}
		if !t.DType.IsFloat() {
			return t, false, fmt.Errorf("tensor %s has dtype %s; only F32, F16 and BF16 weights are supported", name, t.DType)
		}
		if !slices.Equal(t.Shape, shape) {
			return t, false, fmt.Errorf("tensor %s has shape %v, want %v for this config.json", name, t.Shape, shape)
		}
		return t, true, nil
	}
	put := func(kind TensorKind, layer int, t safetensors.Tensor) {
		m.index[[2]int{int(kind), layer}] = len(m.weights)
		m.weights = append(m.weights, Weight{Kind: kind, Layer: layer, Tensor: t})
	}
	add := func(kind TensorKind, layer int, name string, required bool, shape ...int64) error {
		t, ok, err := get(name, required, shape...)
		if ok {
			put(kind, layer, t)
		}
		return err
	}
	info := m.Info()
	fused := Fused(c.Architecture)
	if err := add(KindEmbed, -1, "model.embed_tokens.weight", true, V, H); err != nil {
		return err
	}
	m.Tied = c.TieWordEmbeddings
	if !m.Tied {
		if err := add(KindLMHead, -1, "lm_head.weight", false, V, H); err != nil {
			return err
		}
		if _, ok := m.Weight(KindLMHead, -1); !ok {
			m.Tied = true
		}
	}
	if err := add(KindFinalNorm, -1, "model.norm.weight", true, H); err != nil {
		return err
	}
	// Gemma's post_attention_layernorm normalises the attention's output;
	// its MLP input norm is pre_feedforward_layernorm.
	ffnNorm := struct {
		kind TensorKind
		name string
	}{KindFFNNorm, "post_attention_layernorm.weight"}
	if c.PostNorms {
		ffnNorm.name = "pre_feedforward_layernorm.weight"
	}
	for l := 0; l < c.NumLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		list := []struct {
			kind     TensorKind
			name     string
			required bool
			shape    []int64
		}{
			{KindAttnNorm, "input_layernorm.weight", true, []int64{H}},
			{ffnNorm.kind, ffnNorm.name, true, []int64{H}},
			{KindQ, "self_attn.q_proj.weight", true, []int64{q, H}},
			{KindK, "self_attn.k_proj.weight", true, []int64{kv, H}},
			{KindV, "self_attn.v_proj.weight", true, []int64{kv, H}},
			{KindO, "self_attn.o_proj.weight", true, []int64{H, q}},
			{KindGate, "mlp.gate_proj.weight", true, []int64{I, H}},
			{KindUp, "mlp.up_proj.weight", true, []int64{I, H}},
			{KindDown, "mlp.down_proj.weight", true, []int64{H, I}},
		}
		for _, e := range list {
			if fused && e.kind != KindO && e.kind != KindDown && e.kind >= KindQ && e.kind <= KindDown {
				continue // in a fused weight (below)
			}
			if err := add(e.kind, l, p+e.name, e.required, e.shape...); err != nil {
				return err
			}
		}
		if fused {
			for _, f := range fusedModules {
				var out int64
				for _, part := range f.parts {
					_, o := part.Features(info)
					out += int64(o)
				}
				t, _, err := get(p+f.path+".weight", true, out, H)
				if err != nil {
					return err
				}
				var r0 int64
				for _, part := range f.parts {
					_, o := part.Features(info)
					put(part.Kind(), l, rowSlice(t, r0, r0+int64(o)))
					r0 += int64(o)
				}
			}
		}
		if c.QKVBias {
			for _, e := range []struct {
				kind TensorKind
				name string
				n    int64
			}{{KindQBias, "self_attn.q_proj.bias", q}, {KindKBias, "self_attn.k_proj.bias", kv}, {KindVBias, "self_attn.v_proj.bias", kv}} {
				if err := add(e.kind, l, p+e.name, true, e.n); err != nil {
					return err
				}
			}
		}
		if c.OBias {
			if err := add(KindOBias, l, p+"self_attn.o_proj.bias", true, H); err != nil {
				return err
			}
		}
		if c.QKNorm {
			hd := int64(c.HeadDim)
			if err := add(KindQNorm, l, p+"self_attn.q_norm.weight", true, hd); err != nil {
				return err
			}
			if err := add(KindKNorm, l, p+"self_attn.k_norm.weight", true, hd); err != nil {
				return err
			}
		}
		if c.PostNorms {
			if err := add(KindPostAttnNorm, l, p+"post_attention_layernorm.weight", true, H); err != nil {
				return err
			}
			if err := add(KindPostFFNNorm, l, p+"post_feedforward_layernorm.weight", true, H); err != nil {
				return err
			}
		}
		if c.MLPBias {
			for _, e := range []struct {
				kind TensorKind
				name string
				n    int64
			}{{KindGateBias, "mlp.gate_proj.bias", I}, {KindUpBias, "mlp.up_proj.bias", I}, {KindDownBias, "mlp.down_proj.bias", H}} {
				if err := add(e.kind, l, p+e.name, true, e.n); err != nil {
					return err
				}
			}
		}
	}
	if w, ok := m.Weight(KindQ, 0); ok {
		m.DType = w.DType
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
