package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// The demo model is a Llama-architecture model with random weights and a
// small byte-level BPE tokenizer, generated deterministically on first
// use. It exists so that Nozzle runs end to end anywhere — serving,
// batching, adapters, metering — with no download: its text is
// meaningless. It is sized so that a 16-token completion answers well
// under a second on two CPU cores.
var demoSpec = model.Spec{
	Arch:             "llama",
	HiddenSize:       512,
	IntermediateSize: 1408,
	NumLayers:        4,
	NumHeads:         8,
	NumKVHeads:       2,
	MaxPosition:      2048,
	RopeTheta:        10000,
	Tied:             false,
	DType:            safetensors.BF16,
	Seed:             20250301,
	NameOrPath:       "nozzle-demo",
	// An untied head and logits with a spread of a few nats: a random model
	// with tied embeddings only ever repeats its input token (the residual
	// stream keeps the token's own embedding), and a unit-norm head makes
	// one token take all the probability.
	FinalNormScale: 2.5,
}

// demoVocab is the largest vocabulary asked of the demo tokenizer.
const demoVocab = 2048

// demoVersion changes whenever the demo's files would change.
const demoVersion = "nozzle-demo-2"

// demoAdapters are the demo's PEFT adapters: different ranks and targets.
var demoAdapters = []struct {
	name    string
	rank    int
	modules []model.Module
	seed    uint64
}{
	{"demo-sql", 8, []model.Module{model.ModuleQ, model.ModuleV}, 101},
	{"demo-chat", 16, nil, 102}, // all seven modules
	{"demo-code", 32, []model.Module{model.ModuleQ, model.ModuleK, model.ModuleV, model.ModuleO}, 103},
	{"demo-poet", 64, []model.Module{model.ModuleGate, model.ModuleUp, model.ModuleDown}, 104},
}

const demoMarker = ".nozzle-demo.json"

// EnsureDemo makes sure dataDir holds the demo model (dataDir/demo-model)
// and its adapters (dataDir/demo-adapters/<name>), generating them the
// first time, and returns their folders. Later calls check the files
// against the digests recorded when they were made and regenerate them if
// anything is missing or damaged.
func EnsureDemo(dataDir string) (modelDir string, adapterDirs map[string]string, err error) {
	modelDir = filepath.Join(dataDir, "demo-model")
	adaptersDir := filepath.Join(dataDir, "demo-adapters")
	adapterDirs = map[string]string{}
	for _, a := range demoAdapters {
		adapterDirs[a.name] = filepath.Join(adaptersDir, a.name)
	}
	if demoIntact(dataDir) {
		return modelDir, adapterDirs, nil
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", nil, fmt.Errorf("demo model: %w", err)
	}
	// A generation a crash cut short left its folder: the demo is made
	// anew, so nothing in it is needed.
	if stale, err := filepath.Glob(filepath.Join(dataDir, ".demo-*")); err == nil {
		for _, d := range stale {
			os.RemoveAll(d)
		}
	}
	tmp, err := os.MkdirTemp(dataDir, ".demo-")
	if err != nil {
		return "", nil, fmt.Errorf("demo model: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := writeDemo(tmp); err != nil {
		return "", nil, fmt.Errorf("demo model: %w", err)
	}
	for _, name := range []string{"demo-model", "demo-adapters"} {
		if err := os.RemoveAll(filepath.Join(dataDir, name)); err != nil {
			return "", nil, fmt.Errorf("demo model: %w", err)
		}
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dataDir, name)); err != nil {
			return "", nil, fmt.Errorf("demo model: %w", err)
		}
	}
	// The marker goes last: its presence says the files are complete.
	if err := os.Rename(filepath.Join(tmp, demoMarker), filepath.Join(dataDir, demoMarker)); err != nil {
		return "", nil, fmt.Errorf("demo model: %w", err)
	}
	syncDir(dataDir)
	return modelDir, adapterDirs, nil
}

type demoManifest struct {
	Version string            `json:"version"`
	Files   map[string]string `json:"files"` // path relative to the data folder → hex SHA-256
}

func writeDemo(root string) error {
	modelDir := filepath.Join(root, "demo-model")
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return err
	}
	vocab, err := tokenizer.WriteDemo(modelDir, demoVocab)
	if err != nil {
		return err
	}
	tk, err := tokenizer.Load(modelDir)
	if err != nil {
		return err
	}
	spec := demoSpec
	spec.VocabSize = vocab
	bos, ok := tk.BOS()
	if !ok {
		return errors.New("demo tokenizer has no BOS token")
	}
	spec.BOSTokenID = bos
	spec.EOSTokenIDs = tk.EOS()
	if len(spec.EOSTokenIDs) == 0 {
		return errors.New("demo tokenizer has no EOS token")
	}
	if err := model.WriteRandomModel(modelDir, spec); err != nil {
		return err
	}
	info := spec.Info()
	info.ID = "demo-model"
	for _, a := range demoAdapters {
		err := model.WriteRandomAdapter(filepath.Join(root, "demo-adapters", a.name), model.AdapterSpec{
			Base: info, Rank: a.rank, Modules: a.modules, Seed: a.seed, DType: safetensors.BF16,
		})
		if err != nil {
			return err
		}
	}
	m := demoManifest{Version: demoVersion, Files: map[string]string{}}
	for _, dir := range []string{"demo-model", "demo-adapters"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			sum, err := fileSHA256(p)
			m.Files[filepath.ToSlash(rel)] = sum
			return err
		})
		if err != nil {
			return err
		}
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return os.WriteFile(filepath.Join(root, demoMarker), b, 0o644)
}

// demoIntact reports whether the demo's files are all there, as made.
func demoIntact(dataDir string) bool {
	b, err := os.ReadFile(filepath.Join(dataDir, demoMarker))
	if err != nil {
		return false
	}
	var m demoManifest
	if json.Unmarshal(b, &m) != nil || m.Version != demoVersion || len(m.Files) == 0 {
		return false
	}
	names := make([]string, 0, len(m.Files))
	for n := range m.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sum, err := fileSHA256(filepath.Join(dataDir, filepath.FromSlash(n)))
		if err != nil || sum != m.Files[n] {
			return false
		}
	}
	return true
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// DemoAdapter describes one demo adapter for registering it: its files'
// content address and manifest, read from its folder.
func DemoAdapter(dir string, info nozzle.ModelInfo) (*nozzle.AdapterManifest, error) {
	return model.ValidateAdapter(dir, info, 256)
}
