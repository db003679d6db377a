package runtime_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// qwen3Dir writes a small random Qwen3-shaped model with Qwen3's real
// tokenizer and chat template (the tokenizer tests' copy) into a folder.
func qwen3Dir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	spec := model.Spec{Arch: "qwen3", VocabSize: 151936, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
		HeadDim: 16, RopeTheta: 1e6, RMSNormEps: 1e-6, MaxPosition: 4096, Tied: true, Seed: 77, EOSTokenIDs: []int{151645, 151643},
		BOSTokenID: 151643, FinalNormScale: 0.5}
	if err := model.WriteRandomModel(dir, spec); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string][]byte{"tokenizer.json": tokenizerTestdata(t, "models/qwen3/tokenizer.json.gz"),
		"tokenizer_config.json": tokenizerTestdata(t, "models/qwen3/tokenizer_config.json")})
	return dir
}

// tokenizerTestdata is a file of the tokenizer tests' testdata (real
// tokenizers and chat templates), unzipped where it ends in .gz.
func tokenizerTestdata(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("tokenizer", "testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(rel, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// writeFiles writes files (name → contents) into dir.
func writeFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQwen3_EndToEnd: a Qwen3 model folder (head norms, Qwen3's tokenizer
// and chat template) serves chat completions with the real engine, as a
// reasoning model whose thinking the template switches, with and without
// a PEFT adapter validated against it.
func TestQwen3_EndToEnd(t *testing.T) {
	dir := qwen3Dir(t)
	adapterDir := filepath.Join(t.TempDir(), "qwen3-lora")
	info := model.Spec{Arch: "qwen3", VocabSize: 151936, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, HeadDim: 16}.Info()
	if err := model.WriteRandomAdapter(adapterDir, model.AdapterSpec{Base: info, Rank: 8, Seed: 78}); err != nil {
		t.Fatal(err)
	}
	store := demoStore(t, dir)
	m, err := store.Import(context.Background(), adapterDir)
	if err != nil {
		t.Fatalf("a Qwen3 adapter: %v", err)
	}
	rt := openOnStore(t, runtime.Options{}, dir, store)
	ctx := context.Background()
	got, err := rt.Info(ctx)
	if err != nil || got.Architecture != model.ArchQwen3 || !got.Reasoning || got.ReasoningTags != nozzle.DefaultThinkTags || !got.ChatTemplateKwargs {
		t.Fatalf("info %+v %v", got, err)
	}
	ad := &nozzle.Adapter{ID: "qwen3-lora", Name: "qwen3-lora", AdapterManifest: *m}
	prompt := map[string]int{}
	for _, tc := range []struct {
		name    string
		kwargs  string
		adapter *nozzle.Adapter
	}{
		{"Thinking", "", nil},
		{"NoThinking", `{"enable_thinking": false}`, nil},
		{"Adapter", `{"enable_thinking": false}`, ad},
	} {
		req := &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Wie spät ist es?"}},
			MaxTokens: 8, Adapter: tc.adapter, ChatTemplateKwargs: json.RawMessage(tc.kwargs)}
		o := run(ctx, rt, req)
		if o.err != nil || o.res.CompletionTokens == 0 {
			t.Fatalf("%s: %v %+v", tc.name, o.err, o.res)
		}
		prompt[tc.name] = o.res.PromptTokens
	}
	// <|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n, and with
	// thinking off the template's empty thoughts: <think>, \n\n, </think>,
	// \n\n.
	if prompt["NoThinking"] != prompt["Thinking"]+4 || prompt["Adapter"] != prompt["NoThinking"] {
		t.Errorf("prompt tokens %v", prompt)
	}
	// The adapter changes the answer: greedy, with and without it.
	greedy := func(a *nozzle.Adapter) string {
		o := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "a", PromptTokens: []int{9707, 11, 1879}, MaxTokens: 6, Adapter: a})
		if o.err != nil || o.res.CompletionTokens == 0 {
			t.Fatal(o.err, o.res)
		}
		return o.text
	}
	if base, lora := greedy(nil), greedy(ad); base == lora {
		t.Errorf("the adapter changes nothing: %q", base)
	}
}
