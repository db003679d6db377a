package model_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/nozzle-ai/nozzle"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// raceEnabled is set by race_test.go under -race.
var raceEnabled bool

func tinySpec() model.Spec {
	return model.Spec{VocabSize: 64, HiddenSize: 32, IntermediateSize: 48, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, Seed: 1}
}

func writeModel(t testing.TB, spec model.Spec) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny-model")
	if err := model.WriteRandomModel(dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpen_Generated(t *testing.T) {
	tests := []struct {
		name string
		spec func(*model.Spec)
		n    int // expected weight count
	}{
		{"Llama", func(s *model.Spec) {}, 3 + 2*9},
		{"Tied", func(s *model.Spec) { s.Tied = true }, 2 + 2*9},
		{"Qwen2", func(s *model.Spec) { s.Arch = "qwen2"; s.Tied = true; s.SlidingWindow = 8; s.MaxWindowLayers = 1 }, 2 + 2*12},
		{"LlamaBiases", func(s *model.Spec) { s.AttentionBias = true; s.MLPBias = true }, 3 + 2*16},
		{"Mistral", func(s *model.Spec) { s.Arch = "mistral"; s.SlidingWindow = 16; s.DType = safetensors.F16 }, 3 + 2*9},
		{"Sharded", func(s *model.Spec) { s.Shards = 3; s.DType = safetensors.F32 }, 3 + 2*9},
		{"HeadDim", func(s *model.Spec) {
			s.HeadDim = 16
			s.Rope = &model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 64}
		}, 3 + 2*9},
		{"RopeParameters", func(s *model.Spec) {
			s.RopeParameters = true
			s.RopeTheta = 500000
			s.Rope = &model.RopeScaling{Type: "linear", Factor: 2}
		}, 3 + 2*9},
		{"Yarn", func(s *model.Spec) {
			s.Arch = "qwen2"
			s.Rope = &model.RopeScaling{Type: "yarn", Factor: 4, OriginalMaxPosition: 64, BetaFast: 32, BetaSlow: 1,
				AttentionFactor: model.YarnMscale(4, 1), Truncate: true}
		}, 3 + 2*12},
		{"YarnParameters", func(s *model.Spec) {
			s.RopeParameters = true
			s.RopeTheta = 1e6
			s.Rope = &model.RopeScaling{Type: "yarn", Factor: 2, OriginalMaxPosition: 32, BetaFast: 8, BetaSlow: 0.5,
				AttentionFactor: 1.25, Truncate: false}
		}, 3 + 2*9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := tinySpec()
			tt.spec(&spec)
			dir := writeModel(t, spec)
			m, err := model.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if got := len(m.Weights()); got != tt.n {
				t.Errorf("weights = %d, want %d", got, tt.n)
			}
			if m.Tied != spec.Tied {
				t.Errorf("tied = %v", m.Tied)
			}
			info := m.Info()
			if info.ID != "tiny-model" || info.VocabSize != 64 || info.NumKVHeads != 2 || info.HeadDim != max(spec.HeadDim, 8) {
				t.Errorf("info = %+v", info)
			}
			if spec.Rope != nil && !reflect.DeepEqual(m.Config.RopeScaling, *spec.Rope) {
				t.Errorf("rope = %+v", m.Config.RopeScaling)
			}
			if spec.RopeParameters && m.Config.RopeTheta != spec.RopeTheta {
				t.Errorf("rope_theta = %v", m.Config.RopeTheta)
			}
			if spec.SlidingWindow > 0 && m.Config.SlidingWindow != spec.SlidingWindow {
				t.Errorf("window = %d", m.Config.SlidingWindow)
			}
			if ids := m.EOSTokenIDs(); len(ids) != 1 || ids[0] != 2 {
				t.Errorf("eos = %v", ids)
			}
			// generation_config.json's sampling settings (the generator
			// writes temperature 0.7, top_p 0.9 and no top_k).
			if s := info.Sampling; s.Temperature == nil || *s.Temperature != 0.7 || s.TopP == nil || *s.TopP != 0.9 || s.TopK != 0 {
				t.Errorf("sampling = %+v", s)
			}
			w, ok := m.Weight(model.KindDown, 1)
			if !ok || w.Shape[0] != 32 || w.Shape[1] != 48 || w.Name != "model.layers.1.mlp.down_proj.weight" {
				t.Errorf("down = %+v", w)
			}
			if w.DType != spec.DType && !(spec.DType == "" && w.DType == safetensors.BF16) {
				t.Errorf("dtype = %s", w.DType)
			}
			vals, err := w.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			var ss float64
			for _, v := range vals {
				ss += float64(v) * float64(v)
			}
			// Linear weights have std 1/sqrt(in).
			if std := ss / float64(len(vals)) * 48; std < 0.7 || std > 1.3 {
				t.Errorf("down_proj variance·in = %v, want ~1", std)
			}
		})
	}
}

func TestWriteRandomModel_Deterministic(t *testing.T) {
	spec := tinySpec()
	a, b := writeModel(t, spec), writeModel(t, spec)
	x, _ := os.ReadFile(filepath.Join(a, "model.safetensors"))
	y, _ := os.ReadFile(filepath.Join(b, "model.safetensors"))
	if !bytes.Equal(x, y) {
		t.Error("same seed gave different files")
	}
	spec.Seed = 2
	c := writeModel(t, spec)
	z, _ := os.ReadFile(filepath.Join(c, "model.safetensors"))
	if bytes.Equal(x, z) {
		t.Error("different seeds gave the same file")
	}
}

func TestOpen_Errors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   string
	}{
		{"NoConfig", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "config.json")) }, "has no config.json"},
		{"NoWeights", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "model.safetensors")) }, "has neither model.safetensors nor model.safetensors.index.json"},
		{"Pickle", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "model.safetensors"))
			os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("x"), 0o644)
		}, "pickle checkpoint (pytorch_model.bin)"},
		{"MissingTensor", func(t *testing.T, dir string) {
			rewrite(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return drop(ts, "model.layers.1.mlp.up_proj.weight")
			})
		}, "no tensor model.layers.1.mlp.up_proj.weight"},
		{"WrongShape", func(t *testing.T, dir string) {
			rewrite(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == "model.norm.weight" {
						ts[i].Shape = []int64{16, 2}
					}
				}
				return ts
			})
		}, "tensor model.norm.weight has shape [16 2], want [32]"},
		{"IntDType", func(t *testing.T, dir string) {
			rewrite(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == "model.norm.weight" {
						ts[i].DType = safetensors.I16
					}
				}
				return ts
			})
		}, "tensor model.norm.weight has dtype I16"},
		{"BadArch", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"architectures":["PhiForCausalLM"]}`), 0o644)
		}, `architecture "PhiForCausalLM" is not supported`},
		{"Truncated", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-3], 0o644)
		}, "model.safetensors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeModel(t, tinySpec())
			tt.mutate(t, dir)
			m, err := model.Open(dir)
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error = %q, want one line containing %q", err, tt.want)
			}
		})
	}
	if _, err := model.Open(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing folder: %v", err)
	}
}

func TestOpen_ShardErrors(t *testing.T) {
	spec := tinySpec()
	spec.Shards = 2
	t.Run("MissingShard", func(t *testing.T) {
		dir := writeModel(t, spec)
		os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors"))
		_, err := model.Open(dir)
		if err == nil || !strings.Contains(err.Error(), "has no model-00002-of-00002.safetensors") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("EscapingShardName", func(t *testing.T) {
		dir := writeModel(t, spec)
		idx := map[string]any{"weight_map": map[string]string{"model.embed_tokens.weight": "../x.safetensors"}}
		b, _ := json.Marshal(idx)
		os.WriteFile(filepath.Join(dir, model.IndexFile), b, 0o644)
		_, err := model.Open(dir)
		if err == nil || !strings.Contains(err.Error(), "not a file name") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("LMHeadInSecondShard", func(t *testing.T) {
		dir := writeModel(t, spec)
		b, _ := os.ReadFile(filepath.Join(dir, model.IndexFile))
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		json.Unmarshal(b, &idx)
		if idx.WeightMap["lm_head.weight"] != "model-00002-of-00002.safetensors" || idx.WeightMap["model.embed_tokens.weight"] != "model-00001-of-00002.safetensors" {
			t.Fatalf("weight map %v", idx.WeightMap)
		}
		m, err := model.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if _, ok := m.Weight(model.KindLMHead, -1); !ok {
			t.Error("no lm_head")
		}
	})
}

func TestOpen_ExtraAndMissingLMHead(t *testing.T) {
	dir := writeModel(t, tinySpec())
	rewrite(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
		ts = drop(ts, "lm_head.weight")
		return append(ts, safetensors.Tensor{Name: "model.layers.0.self_attn.rotary_emb.inv_freq", DType: safetensors.F32, Shape: []int64{4}, Data: make([]byte, 16)})
	})
	m, err := model.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !m.Tied {
		t.Error("no lm_head.weight should mean tied embeddings")
	}
}

// rewrite replaces model.safetensors with edited tensors.
func rewrite(t *testing.T, dir string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	editSafetensors(t, filepath.Join(dir, "model.safetensors"), edit)
}

// editSafetensors rewrites the safetensors file p with edited tensors.
// Shapes may have been edited; the raw data is written as announced.
func editSafetensors(t *testing.T, p string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	ts := edit(f.Tensors())
	var buf bytes.Buffer
	sw, err := safetensors.NewWriter(&buf, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range ts {
		sw.Write(tn.Data)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func drop(ts []safetensors.Tensor, name string) []safetensors.Tensor {
	out := ts[:0]
	for _, t := range ts {
		if t.Name != name {
			out = append(out, t)
		}
	}
	return out
}

func TestWriteRandomModel_Speed(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("writes 100 MB; timing needs a build without -race")
	}
	// ~50M parameters in bf16.
	spec := model.Spec{VocabSize: 8000, HiddenSize: 1024, IntermediateSize: 2816, NumLayers: 4, NumHeads: 16, NumKVHeads: 4, Seed: 3}
	start := time.Now()
	dir := writeModel(t, spec)
	el := time.Since(start)
	st, _ := os.Stat(filepath.Join(dir, "model.safetensors"))
	rate := float64(st.Size()) / el.Seconds() / 1e6
	t.Logf("wrote %d MB in %v (%.0f MB/s)", st.Size()>>20, el, rate)
	// A 1B-parameter bf16 model is 2 GB: it must take well under a minute.
	if rate < 40 {
		t.Errorf("generator writes %.0f MB/s; too slow for a 2 GB model", rate)
	}
}

func ExampleWriteRandomModel() {
	dir, _ := os.MkdirTemp("", "model")
	defer os.RemoveAll(dir)
	spec := model.Spec{Arch: "qwen2", VocabSize: 256, HiddenSize: 64, IntermediateSize: 128, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, Tied: true, Seed: 7}
	if err := model.WriteRandomModel(dir, spec); err != nil {
		panic(err)
	}
	m, err := model.Open(dir)
	if err != nil {
		panic(err)
	}
	defer m.Close()
	fmt.Println(m.Config.Architecture, len(m.Weights()), m.Tied, m.DType)
	// Output: Qwen2ForCausalLM 26 true BF16
}

// TestOpen_Fingerprint: the fingerprint follows the weights, not the
// folder's name: other weights of the same shape differ, a copy under
// another name does not.
func TestOpen_Fingerprint(t *testing.T) {
	open := func(dir string) nozzle.ModelInfo {
		t.Helper()
		m, err := model.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return m.Info()
	}
	a := open(writeModel(t, tinySpec()))
	other := tinySpec()
	other.Seed = 2
	b := open(writeModel(t, other))
	copyDir := filepath.Join(t.TempDir(), "base")
	if err := model.WriteRandomModel(copyDir, tinySpec()); err != nil {
		t.Fatal(err)
	}
	c := open(copyDir)
	if a.Fingerprint == "" || a.Fingerprint == b.Fingerprint || a.SameModel(b) {
		t.Errorf("other weights of the same shape: %q vs %q, same model %v", a.Fingerprint, b.Fingerprint, a.SameModel(b))
	}
	if a.ID == c.ID || a.Fingerprint != c.Fingerprint || !a.SameModel(c) {
		t.Errorf("the same weights as %q and %q: %q vs %q, same model %v", a.ID, c.ID, a.Fingerprint, c.Fingerprint, a.SameModel(c))
	}
}

// TestOpen_CreatedAt: a model's "created" is its config.json's modification
// time, so two loads of one folder (a restart) report the same one.
func TestOpen_CreatedAt(t *testing.T) {
	dir := writeModel(t, tinySpec())
	when := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "config.json"), when, when); err != nil {
		t.Fatal(err)
	}
	var got []time.Time
	for range 2 {
		m, err := model.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Info().CreatedAt)
		m.Close()
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range got {
		if !c.Equal(when) || c.Location() != time.UTC {
			t.Errorf("created %v, want config.json's modification time %v", c, when)
		}
	}
}
