package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// MaxAdapterConfigSize bounds adapter_config.json.
const MaxAdapterConfigSize = 1 << 20

// LoRA is one adapted module of one layer.
type LoRA struct {
	Layer  int
	Module Module
	// Rank is r, from the tensors' shapes.
	Rank int
	// Alpha is the module's lora_alpha (alpha_pattern applied).
	Alpha float64
	// Scale is Alpha/Rank, or Alpha/sqrt(Rank) with use_rslora.
	Scale float64
	// A is lora_A [Rank, in_features]; B is lora_B [out_features, Rank].
	// Both are views into the adapter file's mapping.
	A, B safetensors.Tensor
}

// Pattern is one entry of rank_pattern or alpha_pattern, in file order.
type Pattern struct {
	Key   string
	Value float64
}

// AdapterConfig is the part of adapter_config.json the engine reads.
type AdapterConfig struct {
	PeftType      string
	R             int
	LoraAlpha     float64
	UseRSLoRA     bool
	RankPattern   []Pattern
	AlphaPattern  []Pattern
	TargetModules []string // a list, or one regex / "all-linear" as a single entry
	// TargetRegex: target_modules was one string (a regex PEFT matches
	// against whole module names, or "all-linear"), not a list.
	TargetRegex bool
	// ExcludeModules, ExcludeRegex: exclude_modules, a list or one regex.
	ExcludeModules []string
	ExcludeRegex   bool
	// LayersToTransform (nil: every layer) and LayersPattern select layers
	// as PEFT does.
	LayersToTransform []int
	LayersPattern     []string
	BaseModel         string
	// The selection's regular expressions, compiled once by
	// ParseAdapterConfig: target_modules and exclude_modules when given as
	// one regex (nil for a list and for "all-linear"), and the layer-number
	// patterns of layers_to_transform.
	targetRE, excludeRE *regexp.Regexp
	layerREs            []*regexp.Regexp
	TaskType            string
	FanInFanOut         bool
}

// Adapter is an opened PEFT LoRA adapter, validated against a base model.
// Its tensors are views into a read-only mapping, valid until Close.
type Adapter struct {
	Dir      string
	Config   AdapterConfig
	Manifest nozzle.AdapterManifest
	// LoRAs are the adapted modules, ordered by layer then module.
	LoRAs []LoRA

	file *safetensors.File
}

// Rank returns the largest rank over the adapter's modules.
func (a *Adapter) Rank() int { return a.Manifest.Rank }

// SizeBytes returns the size of the adapter's files, which its mapping
// holds in host memory once read.
func (a *Adapter) SizeBytes() int64 { return a.Manifest.SizeBytes }

// Close unmaps the adapter's weights.
func (a *Adapter) Close() error {
	if a == nil || a.file == nil {
		return nil
	}
	f := a.file
	a.file, a.LoRAs = nil, nil
	return f.Close()
}

// LoadAdapter opens and validates the PEFT adapter in dir for the base
// model described by info. maxRank > 0 refuses larger ranks. The returned
// adapter keeps its weights mapped until Close.
func LoadAdapter(dir string, info nozzle.ModelInfo, maxRank int) (*Adapter, error) {
	return loadAdapter(dir, info, maxRank, []string{info.ID})
}

// LoadAdapter opens and validates the PEFT adapter in dir for this model.
// base_model_name_or_path is compared with the model's folder name and its
// config's _name_or_path.
func (m *Model) LoadAdapter(dir string, maxRank int) (*Adapter, error) {
	return loadAdapter(dir, m.Info(), maxRank, []string{m.ID, m.Config.NameOrPath})
}

func loadAdapter(dir string, info nozzle.ModelInfo, maxRank int, names []string) (*Adapter, error) {
	cfgBytes, err := readAdapterConfig(dir)
	if err != nil {
		return nil, err
	}
	cfg, warnings, err := ParseAdapterConfig(cfgBytes)
	if err != nil {
		return nil, err
	}
	wpath := filepath.Join(dir, nozzle.AdapterWeightsFile)
	if !fileExists(wpath) {
		for _, p := range []string{"adapter_model.bin", "adapter_model.pt", "adapter_model.pth"} {
			if fileExists(filepath.Join(dir, p)) {
				return nil, fmt.Errorf("adapter has %s but no %s: pickle files are not accepted; save the adapter with safetensors", p, nozzle.AdapterWeightsFile)
			}
		}
		return nil, fmt.Errorf("adapter has no %s", nozzle.AdapterWeightsFile)
	}
	f, err := safetensors.Open(wpath)
	if err != nil {
		return nil, fmt.Errorf("adapter weights: %w", err)
	}
	a := &Adapter{Dir: dir, Config: *cfg, file: f}
	more, err := a.collect(f, info, maxRank)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	warnings = append(warnings, more...)
	if cfg.BaseModel != "" && !sameBase(cfg.BaseModel, names) {
		warnings = append(warnings, fmt.Sprintf("The adapter was trained on %q, but the base model is %q.", cfg.BaseModel, info.ID))
	}
	sum, size, err := contentAddress(cfgBytes, wpath)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	a.Manifest = a.manifest(sum, size, warnings)
	return a, nil
}

// ValidateAdapter validates the PEFT adapter in dir for the base model and
// returns its manifest, keeping nothing open.
func ValidateAdapter(dir string, info nozzle.ModelInfo, maxRank int) (*nozzle.AdapterManifest, error) {
	a, err := LoadAdapter(dir, info, maxRank)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	m := a.Manifest
	return &m, nil
}

// ContentAddress returns the content address of the adapter in dir (see
// nozzle.AdapterManifest.SHA256) and the total size of its two files.
func ContentAddress(dir string) (string, int64, error) {
	cfg, err := readAdapterConfig(dir)
	if err != nil {
		return "", 0, err
	}
	return contentAddress(cfg, filepath.Join(dir, nozzle.AdapterWeightsFile))
}

func readAdapterConfig(dir string) ([]byte, error) {
	b, err := readSmallFile(filepath.Join(dir, nozzle.AdapterConfigFile), MaxAdapterConfigSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("adapter has no %s", nozzle.AdapterConfigFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", nozzle.AdapterConfigFile, err)
	}
	return b, nil
}

// contentAddress hashes len(config) as 8 little-endian bytes, the config's
// bytes, then the weights file, streaming it.
func contentAddress(cfg []byte, weights string) (string, int64, error) {
	h := sha256.New()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(cfg)))
	h.Write(n[:])
	h.Write(cfg)
	f, err := os.Open(weights)
	if err != nil {
		return "", 0, fmt.Errorf("adapter weights: %w", err)
	}
	defer f.Close()
	wn, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash adapter weights: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), int64(len(cfg)) + wn, nil
}

func (a *Adapter) manifest(sum string, size int64, warnings []string) nozzle.AdapterManifest {
	m := nozzle.AdapterManifest{
		SHA256:    sum,
		Alpha:     a.Config.LoraAlpha,
		UseRSLoRA: a.Config.UseRSLoRA,
		SizeBytes: size,
		BaseModel: a.Config.BaseModel,
		Warnings:  warnings,
	}
	var mods [NumModules]bool
	layers := map[int]bool{}
	for _, l := range a.LoRAs {
		m.Rank = max(m.Rank, l.Rank)
		mods[l.Module] = true
		layers[l.Layer] = true
	}
	m.TargetModules = []string{}
	for i, ok := range mods {
		if ok {
			m.TargetModules = append(m.TargetModules, Module(i).String())
		}
	}
	m.Layers = len(layers)
	return m
}

// sameBase compares base_model_name_or_path with the base model's names
// (folder name, _name_or_path): equal, or equal last path element,
// ignoring case. No known name means nothing to compare.
func sameBase(adapterBase string, names []string) bool {
	last := func(s string) string {
		s = strings.TrimRight(s, "/")
		if i := strings.LastIndexAny(s, `/\`); i >= 0 {
			s = s[i+1:]
		}
		return strings.ToLower(s)
	}
	known := false
	for _, id := range names {
		if id == "" {
			continue
		}
		known = true
		if strings.EqualFold(adapterBase, id) || last(adapterBase) == last(id) {
			return true
		}
	}
	return !known
}

// advanced PEFT options that change the math; refused when set.
var refusedOptions = []string{
	"layer_replication", "target_parameters", "trainable_token_indices", "alora_invocation_tokens",
	"use_qalora", "megatron_config", "velora_config", "use_bdlora", "arrow_config",
	"loftq_config_inference", "lora_ga_config", "use_mora", "trainable_tokens",
}

// acceptedInit are init_lora_weights values that leave the base model as it
// is. PiSSA, OLoRA, CorDA and LoftQ change the base weights when they
// initialise (PEFT's saved adapter says "true" once converted to plain
// LoRA): an adapter still marked with one expects a base Nozzle does not
// serve.
var acceptedInit = map[string]bool{"gaussian": true, "eva": true, "orthogonal": true}

// ParseAdapterConfig parses adapter_config.json, refusing what the engine
// cannot compute exactly. It returns warnings for what it accepts but the
// adapter's owner should know.
func ParseAdapterConfig(b []byte) (*AdapterConfig, []string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("%s is not a valid JSON object: %w", nozzle.AdapterConfigFile, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: "+format, append([]any{nozzle.AdapterConfigFile}, args...)...)
	}
	str := func(key string) (string, error) {
		v, ok := raw[key]
		if !ok || !isSet(v) {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", bad("%s is not a string", key)
		}
		return s, nil
	}
	boolean := func(key string) (bool, error) {
		v, ok := raw[key]
		if !ok || !isSet(v) {
			return false, nil
		}
		var x bool
		if err := json.Unmarshal(v, &x); err != nil {
			return false, bad("%s is not true or false", key)
		}
		return x, nil
	}
	number := func(key string, def float64) (float64, error) {
		v, ok := raw[key]
		if !ok || !isSet(v) {
			return def, nil
		}
		var x float64
		if err := json.Unmarshal(v, &x); err != nil {
			return 0, bad("%s is not a number", key)
		}
		return x, nil
	}
	var warnings []string
	c := &AdapterConfig{}
	var err error
	if c.PeftType, err = str("peft_type"); err != nil {
		return nil, nil, err
	}
	if c.PeftType != "LORA" {
		return nil, nil, bad("peft_type is %q; only LORA adapters are supported", c.PeftType)
	}
	if dora, err := boolean("use_dora"); err != nil {
		return nil, nil, err
	} else if dora {
		return nil, nil, bad("use_dora is true; DoRA adapters are not supported")
	}
	if v, ok := raw["modules_to_save"]; ok && isSet(v) && !isEmptyJSON(v) {
		return nil, nil, bad("modules_to_save is %s; adapters that save full modules are not supported", compact(v))
	}
	if bias, err := str("bias"); err != nil {
		return nil, nil, err
	} else if bias != "" && bias != "none" {
		return nil, nil, bad("bias is %q; adapters with trained biases are not supported (want \"none\")", bias)
	}
	if lb, err := boolean("lora_bias"); err != nil {
		return nil, nil, err
	} else if lb {
		return nil, nil, bad("lora_bias is true; LoRA biases are not supported")
	}
	for _, k := range refusedOptions {
		if v, ok := raw[k]; ok && isSet(v) && !isEmptyJSON(v) && !bytes.Equal(bytes.TrimSpace(v), []byte("false")) {
			return nil, nil, bad("%s is set (%s); this LoRA variant is not supported", k, compact(v))
		}
	}
	if v, ok := raw["init_lora_weights"]; ok && isSet(v) {
		var s string
		if json.Unmarshal(v, &s) == nil {
			switch {
			case strings.HasPrefix(s, "pissa") || s == "olora" || s == "corda" || s == "loftq":
				return nil, nil, bad("init_lora_weights is %q: the adapter was trained against base weights its initialisation changed; "+
					"convert it to plain LoRA with PEFT (save_pretrained with path_initial_model_for_weight_conversion) and upload that", s)
			case !acceptedInit[s]:
				return nil, nil, bad("init_lora_weights %q marks a LoRA variant that is not supported", s)
			}
		} else if !bytes.Equal(bytes.TrimSpace(v), []byte("true")) && !bytes.Equal(bytes.TrimSpace(v), []byte("false")) {
			return nil, nil, bad("init_lora_weights is %s, not a known value", compact(v))
		}
	}
	r, err := number("r", 8)
	if err != nil {
		return nil, nil, err
	}
	if r != math.Trunc(r) || r < 1 || r > 1<<20 {
		return nil, nil, bad("r is %v, want a positive integer", r)
	}
	c.R = int(r)
	if c.LoraAlpha, err = number("lora_alpha", 8); err != nil {
		return nil, nil, err
	}
	if !(c.LoraAlpha > 0) || math.IsInf(c.LoraAlpha, 0) {
		return nil, nil, bad("lora_alpha is %v, want a positive finite number", c.LoraAlpha)
	}
	if c.UseRSLoRA, err = boolean("use_rslora"); err != nil {
		return nil, nil, err
	}
	if c.RankPattern, err = parsePatterns(raw["rank_pattern"]); err != nil {
		return nil, nil, bad("rank_pattern: %v", err)
	}
	for _, p := range c.RankPattern {
		if p.Value != math.Trunc(p.Value) || p.Value < 1 {
			return nil, nil, bad("rank_pattern %q is %v, want a positive integer", p.Key, p.Value)
		}
	}
	if c.AlphaPattern, err = parsePatterns(raw["alpha_pattern"]); err != nil {
		return nil, nil, bad("alpha_pattern: %v", err)
	}
	for _, p := range c.AlphaPattern {
		if !(p.Value > 0) || math.IsInf(p.Value, 0) {
			return nil, nil, bad("alpha_pattern %q is %v, want a positive finite number", p.Key, p.Value)
		}
	}
	for _, m := range []struct {
		key   string
		list  *[]string
		regex *bool
		re    **regexp.Regexp
	}{{"target_modules", &c.TargetModules, &c.TargetRegex, &c.targetRE}, {"exclude_modules", &c.ExcludeModules, &c.ExcludeRegex, &c.excludeRE}} {
		v, ok := raw[m.key]
		if !ok || !isSet(v) {
			continue
		}
		if *m.list, *m.regex, ok = oneOrList[string](v); !ok {
			return nil, nil, bad("%s is neither a list nor a string", m.key)
		}
		if *m.regex && (*m.list)[0] != "all-linear" {
			if *m.re, err = regexp.Compile(`^(?:` + (*m.list)[0] + `)$`); err != nil {
				return nil, nil, bad("%s %q is not a regular expression this server can read: %v", m.key, (*m.list)[0], err)
			}
		}
	}
	if v, ok := raw["layers_to_transform"]; ok && isSet(v) {
		if c.LayersToTransform, _, ok = oneOrList[int](v); !ok {
			return nil, nil, bad("layers_to_transform is neither a whole number nor a list of them")
		}
	}
	if v, ok := raw["layers_pattern"]; ok && isSet(v) {
		if c.LayersPattern, _, ok = oneOrList[string](v); !ok {
			return nil, nil, bad("layers_pattern is neither a string nor a list")
		}
	}
	patterns := c.LayersPattern
	if len(patterns) == 0 {
		patterns = []string{`[^.]*`} // the layer number after any part
	}
	for _, p := range patterns {
		if re, err := regexp.Compile(`.*\.` + p + `\.(\d+)\.`); err == nil { // one that does not compile matches nothing
			c.layerREs = append(c.layerREs, re)
		}
	}
	if c.BaseModel, err = str("base_model_name_or_path"); err != nil {
		return nil, nil, err
	}
	if c.TaskType, err = str("task_type"); err != nil {
		return nil, nil, err
	}
	if c.TaskType != "" && c.TaskType != "CAUSAL_LM" {
		warnings = append(warnings, fmt.Sprintf("task_type is %q; the adapter is used for causal language modelling.", c.TaskType))
	}
	if c.FanInFanOut, err = boolean("fan_in_fan_out"); err != nil {
		return nil, nil, err
	}
	if c.FanInFanOut {
		warnings = append(warnings, "fan_in_fan_out is true, which PEFT ignores for linear layers; the weights are read as [out, in].")
	}
	return c, warnings, nil
}

// oneOrList decodes a config field PEFT takes as one value or a list of
// them: the values (never nil), whether it was one value, and whether it
// was either.
func oneOrList[T any](v json.RawMessage) (list []T, one bool, ok bool) {
	if json.Unmarshal(v, &list) == nil {
		if list == nil {
			list = []T{}
		}
		return list, false, true
	}
	var x T
	if json.Unmarshal(v, &x) == nil {
		return []T{x}, true, true
	}
	return nil, false, false
}

// selects reports whether PEFT would attach LoRA to the module at path
// (model.layers.N.self_attn.q_proj and the like) under this config: not
// excluded by exclude_modules, named by target_modules (a list entry equal
// to the path or to its last parts; a regex matching the whole path;
// "all-linear"), and in layers_to_transform (the layer number after
// layers_pattern, or after any part when there is no pattern). A config
// that names no target modules selects what the tensors hold.
func (c *AdapterConfig) selects(path string) bool {
	named := func(list []string, regex bool, re *regexp.Regexp) bool {
		if regex {
			return re == nil || re.MatchString(path) // nil: "all-linear"
		}
		for _, t := range list {
			if path == t || strings.HasSuffix(path, "."+t) {
				return true
			}
		}
		return false
	}
	if len(c.ExcludeModules) > 0 && named(c.ExcludeModules, c.ExcludeRegex, c.excludeRE) {
		return false
	}
	if len(c.TargetModules) > 0 && !named(c.TargetModules, c.TargetRegex, c.targetRE) {
		return false
	}
	if c.LayersToTransform == nil {
		return true
	}
	for _, re := range c.layerREs {
		if m := re.FindStringSubmatch(path + "."); m != nil {
			n, _ := strconv.Atoi(m[1])
			return slices.Contains(c.LayersToTransform, n)
		}
	}
	return false
}

// parsePatterns reads a JSON object keeping its key order.
func parsePatterns(raw json.RawMessage) ([]Pattern, error) {
	if !isSet(raw) {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	var out []Pattern
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k := tok.(string)
		if seen[k] {
			return nil, fmt.Errorf("duplicate key %q", k)
		}
		seen[k] = true
		tok, err = dec.Token()
		if err != nil {
			return nil, err
		}
		n, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%q is not a number", k)
		}
		v, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("%q: %v", k, err)
		}
		out = append(out, Pattern{Key: k, Value: v})
	}
	return out, nil
}

func isEmptyJSON(v json.RawMessage) bool {
	s := string(bytes.TrimSpace(v))
	return s == "[]" || s == "{}" || s == `""`
}

func compact(v json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return string(v)
	}
	s := b.String()
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// MatchPattern returns the value of the first pattern whose key matches the
// module path (PEFT get_pattern_key: the regex (.*\.)?(KEY)$ must match
// from the path's start). The module path has no base_model.model. prefix,
// e.g. model.layers.0.self_attn.q_proj.
func MatchPattern(patterns []Pattern, module string) (float64, bool, error) {
	for _, p := range patterns {
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + p.Key + `)$`)
		if err != nil {
			return 0, false, fmt.Errorf("pattern %q is not a regular expression the engine accepts: %v", p.Key, err)
		}
		if re.MatchString(module) {
			return p.Value, true, nil
		}
	}
	return 0, false, nil
}

var loraKeyRE = regexp.MustCompile(`^model\.layers\.([0-9]+)\.(self_attn\.(?:q|k|v|o|qkv)_proj|mlp\.(?:gate|up|down|gate_up)_proj)$`)

// moduleParts resolves an adapter's module path (self_attn.q_proj, or a
// fused one such as self_attn.qkv_proj) to the modules it adapts in the
// base model, with the features it takes and gives: a fused module's
// output rows are its parts', in order (fusedModules).
func moduleParts(path string, info nozzle.ModelInfo) (parts []Module, in, out int, err error) {
	fused := Fused(info.Architecture)
	for _, f := range fusedModules {
		if f.path == path {
			if !fused {
				return nil, 0, 0, fmt.Errorf("%s is a fused projection, which the base model (%s) does not have: it has %s", path, info.Architecture, partNames(f.parts))
			}
			in, _ = f.parts[0].Features(info)
			for _, p := range f.parts {
				_, o := p.Features(info)
				out += o
			}
			return f.parts, in, out, nil
		}
		if fused && slices.ContainsFunc(f.parts, func(m Module) bool { return m.Path() == path }) {
			return nil, 0, 0, fmt.Errorf("the base model (%s) has no %s: it keeps %s in %s", info.Architecture, path, partNames(f.parts), f.path)
		}
	}
	for i, mp := range modulePaths {
		if mp == path {
			in, out = Module(i).Features(info)
			return []Module{Module(i)}, in, out, nil
		}
	}
	return nil, 0, 0, fmt.Errorf("%s is not a projection the engine knows", path)
}

func partNames(parts []Module) string {
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}

// languageModelPath is a module path of a multimodal model's language model
// (Gemma 3 4B+: language_model.model.layers.N…, or model.language_model.
// layers.N… after transformers 4.52) as the language model's own
// (model.layers.N…); other paths are returned as they are.
func languageModelPath(path string) string {
	for _, pre := range languageModelLayouts {
		if strings.HasPrefix(path, pre.model) {
			return "model." + strings.TrimPrefix(path, pre.model)
		}
	}
	return path
}

// visionPath reports whether a module path is in a multimodal model's
// vision tower or projector, which text requests never reach.
func visionPath(path string) bool {
	for _, pre := range []string{"vision_tower.", "model.vision_tower.", "multi_modal_projector.", "model.multi_modal_projector."} {
		if strings.HasPrefix(path, pre) {
			return true
		}
	}
	return false
}

type loraPair struct {
	a, b       safetensors.Tensor
	hasA, hasB bool
	aKey, bKey string
	sub        []string // loraKeyRE's match of the module's language-model path: layer, projection
}

func (a *Adapter) collect(f *safetensors.File, info nozzle.ModelInfo, maxRank int) ([]string, error) {
	var warnings []string
	pairs := map[string]*loraPair{}
	var vision []string // modules of the vision tower or projector, left out
	for _, t := range f.Tensors() {
		key := t.Name
		path := strings.TrimPrefix(key, "base_model.model.")
		unsupported := func(why string) error {
			return fmt.Errorf("adapter tensor %q: %s", key, why)
		}
		switch {
		case strings.Contains(path, "lora_magnitude_vector"):
			return nil, unsupported("DoRA magnitude vectors are not supported")
		case strings.Contains(path, "lora_embedding_"):
			return nil, unsupported("LoRA on embeddings is not supported")
		case strings.HasSuffix(path, ".bias"):
			return nil, unsupported("bias tensors are not supported")
		}
		var isA bool
		mod := ""
		for _, side := range []string{"lora_A", "lora_B"} {
			i := strings.LastIndex(path, "."+side+".")
			if i < 0 || !strings.HasSuffix(path, ".weight") {
				continue
			}
			rest := path[i+len(side)+2:]
			// rest is "weight" or "<adapter name>.weight".
			if rest != "weight" && (strings.Count(rest, ".") != 1 || strings.HasPrefix(rest, ".")) {
				continue
			}
			mod, isA = path[:i], side == "lora_A"
		}
		if mod == "" {
			return nil, unsupported("not a LoRA weight the engine knows")
		}
		if mod == "lm_head" || strings.HasSuffix(mod, ".lm_head") {
			return nil, unsupported("LoRA on lm_head is not supported")
		}
		if visionPath(mod) {
			if !slices.Contains(vision, mod) {
				vision = append(vision, mod)
			}
			continue
		}
		p := pairs[mod]
		if p == nil {
			sub := loraKeyRE.FindStringSubmatch(languageModelPath(mod))
			if sub == nil {
				return nil, unsupported("not a LoRA weight of an attention or MLP projection")
			}
			p = &loraPair{sub: sub}
			pairs[mod] = p
		}
		if isA {
			if p.hasA {
				return nil, unsupported("a second lora_A for the same module")
			}
			p.a, p.hasA, p.aKey = t, true, key
		} else {
			if p.hasB {
				return nil, unsupported("a second lora_B for the same module")
			}
			p.b, p.hasB, p.bKey = t, true, key
		}
	}
	if len(pairs) == 0 {
		if len(vision) > 0 {
			return nil, fmt.Errorf("%s has LoRA weights for the vision tower only (%s, …); Nozzle serves the language model", nozzle.AdapterWeightsFile, vision[0])
		}
		return nil, fmt.Errorf("%s has no LoRA weights", nozzle.AdapterWeightsFile)
	}
	if n := len(vision); n > 0 {
		sort.Strings(vision)
		warnings = append(warnings, fmt.Sprintf("%d module(s) of the vision tower or projector (%s%s) have LoRA weights; Nozzle serves the language model, so they are left out.",
			n, vision[0], map[bool]string{true: " and more", false: ""}[n > 1]))
	}
	mods := make([]string, 0, len(pairs))
	for m := range pairs {
		mods = append(mods, m)
	}
	// Validate in (layer, module) order so errors name the first module.
	order := func(path string) (int, int) {
		sub := pairs[path].sub
		l, _ := strconv.Atoi(sub[1])
		for i, mp := range modulePaths {
			if mp == sub[2] {
				return l, i
			}
		}
		for _, f := range fusedModules {
			if f.path == sub[2] {
				return l, int(f.parts[0])
			}
		}
		return l, 0
	}
	sort.Slice(mods, func(i, j int) bool {
		li, mi := order(mods[i])
		lj, mj := order(mods[j])
		if li != lj {
			return li < lj
		}
		return mi < mj
	})
	// Modules whose tensors' rank differs from the config's, by the two
	// ranks: one warning for each pair, not one for each module.
	type rankPair struct {
		tensors int64
		config  float64
	}
	var mismatched []rankPair
	mismatch := map[rankPair][]string{}
	var unselected []string
	for _, path := range mods {
		if !a.Config.selects(path) {
			// PEFT attaches no LoRA there, so leaves these tensors unused.
			unselected = append(unselected, path)
			continue
		}
		p := pairs[path]
		sub := p.sub
		if !p.hasA {
			return nil, fmt.Errorf("adapter tensor %q has no lora_A partner", p.bKey)
		}
		if !p.hasB {
			return nil, fmt.Errorf("adapter tensor %q has no lora_B partner", p.aKey)
		}
		layer, err := strconv.Atoi(sub[1])
		if err != nil || strconv.Itoa(layer) != sub[1] {
			return nil, fmt.Errorf("adapter tensor %q: bad layer index %s", p.aKey, sub[1])
		}
		if layer >= info.NumLayers {
			return nil, fmt.Errorf("adapter tensor %q: layer %d is out of range; the base model has %d layers", p.aKey, layer, info.NumLayers)
		}
		parts, in, out, err := moduleParts(sub[2], info)
		if err != nil {
			return nil, fmt.Errorf("adapter tensor %q: %w", p.aKey, err)
		}
		module := strings.TrimPrefix(strings.TrimPrefix(sub[2], "self_attn."), "mlp.")
		for _, t := range []safetensors.Tensor{p.a, p.b} {
			if !t.DType.IsFloat() {
				return nil, fmt.Errorf("adapter tensor %q has dtype %s; only F32, F16 and BF16 are supported", t.Name, t.DType)
			}
			if len(t.Shape) != 2 {
				return nil, fmt.Errorf("adapter tensor %q has shape %v, want a matrix", t.Name, t.Shape)
			}
		}
		r := p.a.Shape[0]
		if r < 1 {
			return nil, fmt.Errorf("adapter tensor %q has rank 0", p.aKey)
		}
		if p.b.Shape[1] != r {
			return nil, fmt.Errorf("adapter tensors of %s disagree on the rank: lora_A has %d, lora_B has %d", path, r, p.b.Shape[1])
		}
		if p.a.Shape[1] != int64(in) {
			return nil, fmt.Errorf("adapter tensor %q has shape %v, want [%d %d]: %s of the base model takes %d features", p.aKey, p.a.Shape, r, in, module, in)
		}
		if p.b.Shape[0] != int64(out) {
			return nil, fmt.Errorf("adapter tensor %q has shape %v, want [%d %d]: %s of the base model gives %d features", p.bKey, p.b.Shape, out, r, module, out)
		}
		if maxRank > 0 && r > int64(maxRank) {
			return nil, fmt.Errorf("LoRA rank %d of %s is greater than the largest rank this runtime serves, %d", r, path, maxRank)
		}
		for _, t := range []safetensors.Tensor{p.a, p.b} {
			if i := firstNonFinite(t); i >= 0 {
				return nil, fmt.Errorf("adapter tensor %q has a non-finite value at element %d", t.Name, i)
			}
		}
		alpha := a.Config.LoraAlpha
		if v, ok, err := MatchPattern(a.Config.AlphaPattern, path); err != nil {
			return nil, fmt.Errorf("%s: alpha_pattern: %w", nozzle.AdapterConfigFile, err)
		} else if ok {
			alpha = v
		}
		want := float64(a.Config.R)
		if v, ok, err := MatchPattern(a.Config.RankPattern, path); err != nil {
			return nil, fmt.Errorf("%s: rank_pattern: %w", nozzle.AdapterConfigFile, err)
		} else if ok {
			want = v
		}
		if want != float64(r) {
			k := rankPair{r, want}
			if mismatch[k] == nil {
				mismatched = append(mismatched, k)
			}
			mismatch[k] = append(mismatch[k], path)
		}
		scale := alpha / float64(r)
		if a.Config.UseRSLoRA {
			scale = alpha / math.Sqrt(float64(r))
		}
		if !(scale > 0) || math.IsInf(scale, 0) || scale > math.MaxFloat32 {
			return nil, fmt.Errorf("adapter scale of %s is %v, want a positive finite number", path, scale)
		}
		var r0 int64
		for _, part := range parts {
			_, o := part.Features(info)
			// A fused module's parts share its A and take their rows of B.
			a.LoRAs = append(a.LoRAs, LoRA{Layer: layer, Module: part, Rank: int(r), Alpha: alpha, Scale: scale, A: p.a, B: rowSlice(p.b, r0, r0+int64(o))})
			r0 += int64(o)
		}
	}
	if len(unselected) == len(mods) {
		return nil, fmt.Errorf("%s selects none of the modules %s holds LoRA weights for (%s, …): check target_modules, exclude_modules and layers_to_transform",
			nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile, unselected[0])
	}
	if n := len(unselected); n > 0 {
		warnings = append(warnings, fmt.Sprintf("%d module(s) with LoRA weights in %s (%s%s) are not selected by %s's target_modules, exclude_modules or layers_to_transform; as PEFT does, they are left out.",
			n, nozzle.AdapterWeightsFile, unselected[0], map[bool]string{true: " and more", false: ""}[n > 1], nozzle.AdapterConfigFile))
	}
	for _, k := range mismatched {
		paths := mismatch[k]
		if len(paths) == 1 {
			warnings = append(warnings, fmt.Sprintf("%s has rank %d in its tensors but %v in the config; the tensors' rank is used.", paths[0], k.tensors, k.config))
			continue
		}
		warnings = append(warnings, fmt.Sprintf("%d modules (%s and %d more) have rank %d in their tensors but %v in the config; the tensors' rank is used.",
			len(paths), paths[0], len(paths)-1, k.tensors, k.config))
	}
	sort.Slice(a.LoRAs, func(i, j int) bool {
		if a.LoRAs[i].Layer != a.LoRAs[j].Layer {
			return a.LoRAs[i].Layer < a.LoRAs[j].Layer
		}
		return a.LoRAs[i].Module < a.LoRAs[j].Module
	})
	return warnings, nil
}

// firstNonFinite returns the index of the first NaN or infinite element of a
// float tensor, or -1.
func firstNonFinite(t safetensors.Tensor) int {
	d := t.Data
	switch t.DType {
	case safetensors.F32:
		for i := 0; i+4 <= len(d); i += 4 {
			if binary.LittleEndian.Uint32(d[i:])&0x7f800000 == 0x7f800000 {
				return i / 4
			}
		}
	case safetensors.BF16:
		for i := 0; i+2 <= len(d); i += 2 {
			if binary.LittleEndian.Uint16(d[i:])&0x7f80 == 0x7f80 {
				return i / 2
			}
		}
	case safetensors.F16:
		for i := 0; i+2 <= len(d); i += 2 {
			if binary.LittleEndian.Uint16(d[i:])&0x7c00 == 0x7c00 {
				return i / 2
			}
		}
	}
	return -1
}
