package model_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

func tinyInfo() nozzle.ModelInfo {
	info := tinySpec().Info()
	info.ID = "tiny-model"
	return info
}

func writeAdapter(t testing.TB, spec model.AdapterSpec) string {
	t.Helper()
	if spec.Base.NumLayers == 0 {
		spec.Base = tinyInfo()
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := model.WriteRandomAdapter(dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadAdapter(t *testing.T) {
	dir := writeAdapter(t, model.AdapterSpec{Rank: 4, Alpha: 8, Seed: 1})
	a, err := model.LoadAdapter(dir, tinyInfo(), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.LoRAs) != 2*7 {
		t.Fatalf("loras = %d", len(a.LoRAs))
	}
	for i, l := range a.LoRAs {
		if l.Layer != i/7 || l.Module != model.Module(i%7) || l.Rank != 4 || l.Scale != 2 || l.Alpha != 8 {
			t.Errorf("lora %d = %+v", i, l)
		}
		in, out := l.Module.Features(tinyInfo())
		if !reflect.DeepEqual(l.A.Shape, []int64{4, int64(in)}) || !reflect.DeepEqual(l.B.Shape, []int64{int64(out), 4}) {
			t.Errorf("lora %d shapes %v %v", i, l.A.Shape, l.B.Shape)
		}
	}
	m := a.Manifest
	if m.Rank != 4 || m.Alpha != 8 || m.Layers != 2 || len(m.Warnings) != 0 || m.BaseModel != "tiny-model" ||
		!reflect.DeepEqual(m.TargetModules, []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
		t.Errorf("manifest = %+v", m)
	}
	// The content address, computed independently.
	cfg, _ := os.ReadFile(filepath.Join(dir, nozzle.AdapterConfigFile))
	w, _ := os.ReadFile(filepath.Join(dir, nozzle.AdapterWeightsFile))
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, uint64(len(cfg)))
	h.Write(cfg)
	h.Write(w)
	if want := hex.EncodeToString(h.Sum(nil)); m.SHA256 != want {
		t.Errorf("sha256 = %s, want %s", m.SHA256, want)
	}
	if m.SizeBytes != int64(len(cfg)+len(w)) {
		t.Errorf("size = %d", m.SizeBytes)
	}
	vm, err := model.ValidateAdapter(dir, tinyInfo(), 16)
	if err != nil || !reflect.DeepEqual(*vm, m) {
		t.Errorf("ValidateAdapter = %+v, %v", vm, err)
	}
	sum, size, err := model.ContentAddress(dir)
	if err != nil || sum != m.SHA256 || size != m.SizeBytes {
		t.Errorf("ContentAddress = %s %d %v", sum, size, err)
	}
}

// TestLoadAdapter_Fused: a Phi-3 adapter's qkv_proj and gate_up_proj
// adapt q, k and v, gate and up: each part shares the module's lora_A and
// takes its rows of lora_B, in order.
func TestLoadAdapter_Fused(t *testing.T) {
	info := tinyInfo()
	info.Architecture = model.ArchPhi3
	dir := writeAdapter(t, model.AdapterSpec{Base: info, Rank: 4, Seed: 3})
	a, err := model.LoadAdapter(dir, info, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.LoRAs) != info.NumLayers*int(model.NumModules) ||
		!reflect.DeepEqual(a.Manifest.TargetModules, []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
		t.Fatalf("%d LoRAs, targets %v", len(a.LoRAs), a.Manifest.TargetModules)
	}
	byMod := map[model.Module]model.LoRA{}
	for _, l := range a.LoRAs {
		if l.Layer == 1 {
			byMod[l.Module] = l
		}
	}
	for _, f := range []struct{ parts []model.Module }{
		{[]model.Module{model.ModuleQ, model.ModuleK, model.ModuleV}}, {[]model.Module{model.ModuleGate, model.ModuleUp}},
	} {
		first := byMod[f.parts[0]]
		var off int
		for _, m := range f.parts {
			l := byMod[m]
			_, out := m.Features(info)
			if &l.A.Data[0] != &first.A.Data[0] || l.B.Shape[0] != int64(out) || l.B.Shape[1] != 4 || l.Scale != first.Scale {
				t.Errorf("%s: A shared %v, B %v", m, &l.A.Data[0] == &first.A.Data[0], l.B.Shape)
			}
			// B's rows follow on from the previous part's in the fused tensor.
			rowBytes := 4 * int(l.B.DType.Size())
			if want := unsafe.Add(unsafe.Pointer(&first.B.Data[0]), off*rowBytes); unsafe.Pointer(&l.B.Data[0]) != want {
				t.Errorf("%s: B does not start at row %d of the fused lora_B", m, off)
			}
			off += out
		}
	}
}

func TestLoadAdapter_Scaling(t *testing.T) {
	spec := model.AdapterSpec{
		Rank: 8, Alpha: 16, RSLoRA: true, Seed: 2,
		Modules: []model.Module{model.ModuleQ, model.ModuleV, model.ModuleDown},
		Layers:  []int{1},
		// PEFT takes the first matching key in file order.
		RankPattern:  []model.Pattern{{Key: "v_proj", Value: 2}, {Key: `layers\.1\.mlp\.down_proj`, Value: 5}},
		AlphaPattern: []model.Pattern{{Key: "model.layers.1.self_attn.q_proj", Value: 4}, {Key: "q_proj", Value: 100}, {Key: ".*_proj", Value: 9}, {Key: "proj", Value: 1000}},
		DType:        safetensors.BF16,
	}
	a, err := model.LoadAdapter(writeAdapter(t, spec), tinyInfo(), 8)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	want := []struct {
		mod   model.Module
		rank  int
		alpha float64
	}{{model.ModuleQ, 8, 4}, {model.ModuleV, 2, 9}, {model.ModuleDown, 5, 9}}
	if len(a.LoRAs) != len(want) {
		t.Fatalf("loras = %+v", a.LoRAs)
	}
	for i, w := range want {
		l := a.LoRAs[i]
		if l.Layer != 1 || l.Module != w.mod || l.Rank != w.rank || l.Alpha != w.alpha || math.Abs(l.Scale-w.alpha/math.Sqrt(float64(w.rank))) > 1e-12 {
			t.Errorf("lora %d = layer %d %v rank %d alpha %v scale %v", i, l.Layer, l.Module, l.Rank, l.Alpha, l.Scale)
		}
		if l.A.DType != safetensors.BF16 {
			t.Errorf("dtype %s", l.A.DType)
		}
	}
	if a.Manifest.Rank != 8 || a.Manifest.Layers != 1 || !reflect.DeepEqual(a.Manifest.TargetModules, []string{"q_proj", "v_proj", "down_proj"}) {
		t.Errorf("manifest %+v", a.Manifest)
	}
}

func TestMatchPattern(t *testing.T) {
	ps := []model.Pattern{{Key: "q_proj", Value: 1}, {Key: `layers\.0\..*`, Value: 2}, {Key: "k", Value: 3}}
	tests := []struct {
		path string
		want float64
		ok   bool
	}{
		{"model.layers.3.self_attn.q_proj", 1, true},
		{"model.layers.0.self_attn.v_proj", 2, true},
		{"model.layers.1.self_attn.k_proj", 0, false}, // "k" must match a whole dotted suffix
		{"model.layers.1.mlp.up_proj", 0, false},
	}
	for _, tt := range tests {
		v, ok, err := model.MatchPattern(ps, tt.path)
		if err != nil || ok != tt.ok || v != tt.want {
			t.Errorf("%s: %v %v %v", tt.path, v, ok, err)
		}
	}
	if _, _, err := model.MatchPattern([]model.Pattern{{Key: "(?<=x)q", Value: 1}}, "a.q"); err == nil {
		t.Error("bad regex accepted")
	}
}

func TestLoadAdapter_Warnings(t *testing.T) {
	spec := model.AdapterSpec{Rank: 4, Seed: 3, Extra: map[string]any{"base_model_name_or_path": "meta-llama/Other-Model", "task_type": "SEQ_CLS", "r": 16}}
	a, err := model.LoadAdapter(writeAdapter(t, spec), tinyInfo(), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	all := strings.Join(a.Manifest.Warnings, "|")
	for _, want := range []string{`trained on "meta-llama/Other-Model"`, "task_type", "rank 4 in their tensors but 16"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings %q lack %q", all, want)
		}
	}
	// One warning for all the modules with the same mismatch.
	if n := strings.Count(all, "in the config"); n != 1 {
		t.Errorf("%d rank warnings: %q", n, all)
	}
	spec.Extra = map[string]any{"base_model_name_or_path": "someone/tiny-model"}
	b, err := model.LoadAdapter(writeAdapter(t, spec), tinyInfo(), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Manifest.Warnings) != 0 {
		t.Errorf("same base name warned: %v", b.Manifest.Warnings)
	}
}

// TestLoadAdapter_Selection: tensors for modules the config does not
// select are left out, as PEFT leaves them out, with a warning.
func TestLoadAdapter_Selection(t *testing.T) {
	info := tinyInfo()
	for _, tc := range []struct {
		name  string
		extra map[string]any
		want  func(layer int, module string) bool
	}{
		{"List", map[string]any{"target_modules": []string{"q_proj", "v_proj"}}, func(l int, m string) bool { return m == "q_proj" || m == "v_proj" }},
		{"FullPath", map[string]any{"target_modules": []string{"model.layers.0.mlp.down_proj"}}, func(l int, m string) bool { return l == 0 && m == "down_proj" }},
		{"Regex", map[string]any{"target_modules": `.*\.(q|o)_proj`}, func(l int, m string) bool { return m == "q_proj" || m == "o_proj" }},
		{"AllLinear", map[string]any{"target_modules": "all-linear"}, func(l int, m string) bool { return true }},
		{"EmptyList", map[string]any{"target_modules": []string{}}, func(l int, m string) bool { return true }}, // names none: the tensors'
		{"Exclude", map[string]any{"exclude_modules": []string{"k_proj"}}, func(l int, m string) bool { return m != "k_proj" }},
		{"ExcludeRegex", map[string]any{"exclude_modules": `.*mlp.*`}, func(l int, m string) bool { return !slices.Contains([]string{"gate_proj", "up_proj", "down_proj"}, m) }},
		{"Layers", map[string]any{"layers_to_transform": []int{1}}, func(l int, m string) bool { return l == 1 }},
		{"LayerOne", map[string]any{"layers_to_transform": 0, "layers_pattern": "layers"}, func(l int, m string) bool { return l == 0 }},
		{"LayersOtherPattern", map[string]any{"layers_to_transform": 0, "layers_pattern": []string{"h", "layers"}}, func(l int, m string) bool { return l == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := model.LoadAdapter(writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 2, Extra: tc.extra}), info, 16)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			got, want := 0, 0
			for l := range info.NumLayers {
				for m := range int(model.NumModules) {
					if tc.want(l, model.Module(m).String()) {
						want++
					}
				}
			}
			for _, lo := range a.LoRAs {
				if !tc.want(lo.Layer, lo.Module.String()) {
					t.Errorf("layer %d %s applied", lo.Layer, lo.Module)
				}
				got++
			}
			if got != want {
				t.Errorf("%d modules applied, want %d", got, want)
			}
			left := strings.Contains(strings.Join(a.Manifest.Warnings, "|"), "are not selected")
			if left != (want < info.NumLayers*int(model.NumModules)) {
				t.Errorf("warnings %q", a.Manifest.Warnings)
			}
		})
	}
}

func TestLoadAdapter_Refusals(t *testing.T) {
	info := tinyInfo()
	cfgRefusals := []struct {
		name  string
		extra map[string]any
		want  string
	}{
		{"PeftType", map[string]any{"peft_type": "IA3"}, `peft_type is "IA3"`},
		{"DoRA", map[string]any{"use_dora": true}, "use_dora is true"},
		{"ModulesToSave", map[string]any{"modules_to_save": []string{"lm_head"}}, "modules_to_save"},
		{"Bias", map[string]any{"bias": "all"}, `bias is "all"`},
		{"LoraBias", map[string]any{"lora_bias": true}, "lora_bias is true"},
		{"LayerReplication", map[string]any{"layer_replication": [][]int{{0, 1}}}, "layer_replication is set"},
		{"TargetParameters", map[string]any{"target_parameters": []string{"x"}}, "target_parameters is set"},
		{"QALoRA", map[string]any{"use_qalora": true}, "use_qalora is set"},
		{"InitVariant", map[string]any{"init_lora_weights": "mica"}, `init_lora_weights "mica"`},
		{"InitPiSSA", map[string]any{"init_lora_weights": "pissa_niter_4"}, "trained against base weights its initialisation changed"},
		{"InitLoftQ", map[string]any{"init_lora_weights": "loftq"}, "trained against base weights its initialisation changed"},
		{"TargetRegexBad", map[string]any{"target_modules": ".*(?!x)"}, "target_modules"},
		{"NothingSelected", map[string]any{"target_modules": []string{"c_attn"}}, "selects none of the modules"},
		{"AlphaNaN", map[string]any{"lora_alpha": "NaN"}, "lora_alpha is not a number"},
		{"AlphaZero", map[string]any{"lora_alpha": 0}, "lora_alpha is 0"},
		{"AlphaNegative", map[string]any{"lora_alpha": -4}, "lora_alpha is -4"},
		{"AlphaPatternZero", map[string]any{"alpha_pattern": map[string]any{"q_proj": 0}}, `alpha_pattern "q_proj" is 0`},
		{"RankPatternFraction", map[string]any{"rank_pattern": map[string]any{"q_proj": 1.5}}, `rank_pattern "q_proj" is 1.5`},
		{"BadR", map[string]any{"r": 0}, "r is 0"},
		{"BadPatternRegex", map[string]any{"alpha_pattern": map[string]any{"(?!x)": 2}}, "alpha_pattern"},
	}
	for _, tt := range cfgRefusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := model.LoadAdapter(writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1, Extra: tt.extra}), info, 16)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}

	tensorRefusals := []struct {
		name string
		edit func([]safetensors.Tensor) []safetensors.Tensor
		want string
	}{
		{"MissingB", func(ts []safetensors.Tensor) []safetensors.Tensor {
			return drop(ts, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
		}, `"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" has no lora_B partner`},
		{"MissingA", func(ts []safetensors.Tensor) []safetensors.Tensor {
			return drop(ts, "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight")
		}, "has no lora_A partner"},
		{"DoRAVector", add("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", []int64{32}), "DoRA"},
		{"Embedding", add("base_model.model.model.embed_tokens.lora_embedding_A", []int64{4, 64}), "embeddings"},
		{"LMHead", add("base_model.model.lm_head.lora_A.weight", []int64{4, 32}), "lm_head"},
		{"LoraBBias", add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias", []int64{32}), "bias"},
		{"BaseBias", add("base_model.model.model.layers.0.self_attn.q_proj.bias", []int64{32}), "bias"},
		{"FullWeight", add("base_model.model.lm_head.weight", []int64{64, 32}), "not a LoRA weight"},
		{"UnknownModule", add("base_model.model.model.layers.0.self_attn.rotary.lora_A.weight", []int64{4, 32}), "not a LoRA weight of an attention or MLP projection"},
		{"LayerOutOfRange", func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts = add("base_model.model.model.layers.2.mlp.up_proj.lora_A.weight", []int64{4, 32})(ts)
			return add("base_model.model.model.layers.2.mlp.up_proj.lora_B.weight", []int64{48, 4})(ts)
		}, "layer 2 is out of range"},
		{"RankMismatch", func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts = drop(ts, "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight")
			return add("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", []int64{48, 3})(ts)
		}, "disagree on the rank: lora_A has 4, lora_B has 3"},
		{"InFeatures", func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts = drop(ts, "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight")
			return add("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", []int64{4, 32})(ts)
		}, "want [4 48]"},
		{"OutFeatures", func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts = drop(ts, "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight")
			return add("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", []int64{32, 4})(ts)
		}, "want [16 4]"},
		{"NaNWeight", func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if strings.HasSuffix(ts[i].Name, "layers.1.self_attn.o_proj.lora_B.weight") {
					d := append([]byte{}, ts[i].Data...)
					binary.LittleEndian.PutUint32(d[8:], math.Float32bits(float32(math.NaN())))
					ts[i].Data = d
				}
			}
			return ts
		}, "non-finite value at element 2"},
		{"IntDType", func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if strings.HasSuffix(ts[i].Name, "layers.0.self_attn.q_proj.lora_A.weight") {
					ts[i].DType = safetensors.I32
				}
			}
			return ts
		}, "dtype I32"},
		{"Empty", func(ts []safetensors.Tensor) []safetensors.Tensor { return nil }, "no LoRA weights"},
	}
	for _, tt := range tensorRefusals {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1})
			editAdapter(t, dir, tt.edit)
			_, err := model.LoadAdapter(dir, info, 16)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}

	t.Run("RankTooLarge", func(t *testing.T) {
		_, err := model.LoadAdapter(writeAdapter(t, model.AdapterSpec{Rank: 32, Seed: 1}), info, 16)
		if err == nil || !strings.Contains(err.Error(), "LoRA rank 32 of model.layers.0.self_attn.q_proj is greater than the largest rank this runtime serves, 16") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("Pickle", func(t *testing.T) {
		dir := writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1})
		os.Rename(filepath.Join(dir, nozzle.AdapterWeightsFile), filepath.Join(dir, "adapter_model.bin"))
		_, err := model.LoadAdapter(dir, info, 16)
		if err == nil || !strings.Contains(err.Error(), "pickle files are not accepted") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("NoConfig", func(t *testing.T) {
		dir := writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1})
		os.Remove(filepath.Join(dir, nozzle.AdapterConfigFile))
		_, err := model.LoadAdapter(dir, info, 16)
		if err == nil || !strings.Contains(err.Error(), "adapter has no adapter_config.json") {
			t.Fatalf("error = %v", err)
		}
	})
	// Fused and separate projections do not mix: a Phi-3 adapter (qkv_proj,
	// gate_up_proj) on a Llama, a Llama adapter on a Phi-3.
	t.Run("FusedOnSeparate", func(t *testing.T) {
		phi3 := info
		phi3.Architecture = model.ArchPhi3
		_, err := model.LoadAdapter(writeAdapter(t, model.AdapterSpec{Base: phi3, Rank: 4, Seed: 1}), info, 16)
		if err == nil || !strings.Contains(err.Error(), "self_attn.qkv_proj is a fused projection, which the base model (LlamaForCausalLM) does not have: it has q_proj, k_proj, v_proj") {
			t.Fatalf("error = %v", err)
		}
		_, err = model.LoadAdapter(writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1}), phi3, 16)
		if err == nil || !strings.Contains(err.Error(), "the base model (Phi3ForCausalLM) has no self_attn.q_proj: it keeps q_proj, k_proj, v_proj in self_attn.qkv_proj") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("OtherBase", func(t *testing.T) {
		other := info
		other.HiddenSize = 64
		_, err := model.LoadAdapter(writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1}), other, 16)
		if err == nil || !strings.Contains(err.Error(), "q_proj of the base model takes 64 features") {
			t.Fatalf("error = %v", err)
		}
	})
}

func TestLoadAdapter_AdapterNameSegment(t *testing.T) {
	dir := writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1, Modules: []model.Module{model.ModuleQ}, Layers: []int{0}})
	editAdapter(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i := range ts {
			ts[i].Name = strings.Replace(ts[i].Name, ".weight", ".default.weight", 1)
		}
		return ts
	})
	a, err := model.LoadAdapter(dir, tinyInfo(), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.LoRAs) != 1 || a.LoRAs[0].Module != model.ModuleQ {
		t.Errorf("loras %+v", a.LoRAs)
	}
}

func add(name string, shape []int64) func([]safetensors.Tensor) []safetensors.Tensor {
	return func(ts []safetensors.Tensor) []safetensors.Tensor {
		n := int64(4)
		for _, d := range shape {
			n *= d
		}
		return append(ts, safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: shape, Data: make([]byte, n)})
	}
}

func editAdapter(t *testing.T, dir string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	editSafetensors(t, filepath.Join(dir, nozzle.AdapterWeightsFile), edit)
}

func FuzzParseAdapterConfig(f *testing.F) {
	f.Add([]byte(`{"peft_type":"LORA","r":8,"lora_alpha":16,"rank_pattern":{"q_proj":4},"alpha_pattern":{"v":2}}`))
	f.Add([]byte(`{"peft_type":"LORA","lora_alpha":NaN}`))
	f.Add([]byte(`{"peft_type":"LORA","r":1e300,"use_rslora":true}`))
	f.Add([]byte(`{"peft_type":"LORA","modules_to_save":[],"layer_replication":null,"init_lora_weights":"pissa_niter_4"}`))
	f.Add([]byte(`{"peft_type":"LORA","target_modules":".*\\.q_proj","exclude_modules":["k_proj"],"layers_to_transform":[0,2],"layers_pattern":"layers"}`))
	f.Add([]byte(`{"peft_type":"LORA","target_modules":[],"layers_to_transform":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, _, err := model.ParseAdapterConfig(b)
		if err != nil {
			return
		}
		if c.PeftType != "LORA" || c.R < 1 || !(c.LoraAlpha > 0) || math.IsInf(c.LoraAlpha, 0) {
			t.Fatalf("accepted %+v", c)
		}
		for _, p := range c.AlphaPattern {
			if !(p.Value > 0) || math.IsInf(p.Value, 0) {
				t.Fatalf("accepted alpha pattern %+v", p)
			}
		}
	})
}

// FuzzLoadAdapter mutates a valid adapter's files: whatever loads must be
// self-consistent.
func FuzzLoadAdapter(f *testing.F) {
	base := f.TempDir()
	info := tinyInfo()
	if err := model.WriteRandomAdapter(base, model.AdapterSpec{Base: info, Rank: 2, Seed: 5, Modules: []model.Module{model.ModuleQ, model.ModuleDown}, Layers: []int{1}}); err != nil {
		f.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(base, nozzle.AdapterConfigFile))
	w, _ := os.ReadFile(filepath.Join(base, nozzle.AdapterWeightsFile))
	f.Add(cfg, w)
	f.Add(cfg, w[:len(w)/2])
	f.Add([]byte(`{"peft_type":"LORA","lora_alpha":1e308,"r":1}`), w)
	f.Add([]byte(`{"peft_type":"LORA","r":2,"target_modules":"model\\.layers\\.1\\..*","layers_to_transform":[1],"exclude_modules":"x"}`), w)
	var hdr map[string]json.RawMessage
	n := binary.LittleEndian.Uint64(w)
	json.Unmarshal(w[8:8+n], &hdr)
	f.Fuzz(func(t *testing.T, cfg, weights []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, nozzle.AdapterConfigFile), cfg, 0o644)
		os.WriteFile(filepath.Join(dir, nozzle.AdapterWeightsFile), weights, 0o644)
		a, err := model.LoadAdapter(dir, info, 8)
		if err != nil {
			return
		}
		defer a.Close()
		for _, l := range a.LoRAs {
			in, out := l.Module.Features(info)
			if l.Rank < 1 || l.Rank > 8 || l.A.Shape[0] != int64(l.Rank) || l.A.Shape[1] != int64(in) || l.B.Shape[0] != int64(out) || l.B.Shape[1] != int64(l.Rank) {
				t.Fatalf("inconsistent lora %+v", l)
			}
			if !(l.Scale > 0) || math.IsInf(l.Scale, 0) || l.Layer < 0 || l.Layer >= info.NumLayers {
				t.Fatalf("bad lora %+v", l)
			}
		}
	})
}

func TestModel_LoadAdapter_NameOrPath(t *testing.T) {
	spec := tinySpec()
	spec.NameOrPath = "org/Llama-Tiny"
	m, err := model.Open(writeModel(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := writeAdapter(t, model.AdapterSpec{Rank: 4, Seed: 1, Extra: map[string]any{"base_model_name_or_path": "org/Llama-Tiny"}})
	a, err := m.LoadAdapter(dir, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if len(a.Manifest.Warnings) != 0 {
		t.Errorf("warnings %v", a.Manifest.Warnings)
	}
	if a.Rank() != 4 || a.SizeBytes() != a.Manifest.SizeBytes {
		t.Errorf("Rank %d SizeBytes %d", a.Rank(), a.SizeBytes())
	}
	b, err := model.LoadAdapter(dir, m.Info(), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Manifest.Warnings) != 1 {
		t.Errorf("by folder name only: warnings %v", b.Manifest.Warnings)
	}
}
