package runtime_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// gemma3Spec is a small random Gemma-3-shaped model with Gemma 3 1B's
// vocabulary (262,144 embeddings), whose tokenizer has one special token
// past it; its own LM head (a tied one makes a random model repeat the
// last token).
func gemma3Spec() model.Spec {
	return model.Spec{Arch: "gemma3_text", VocabSize: 262144, HiddenSize: 32, IntermediateSize: 64, NumLayers: 3, NumHeads: 4, NumKVHeads: 1,
		HeadDim: 16, RopeTheta: 1e6, RMSNormEps: 1e-6, MaxPosition: 4096, SlidingWindow: 8, SlidingWindowPattern: 3,
		Seed: 91, EOSTokenIDs: []int{1, 106}, BOSTokenID: 2, FinalNormScale: 0.5}
}

// TestGemma3_EndToEnd: a Gemma 3 folder (its real tokenizer and chat
// template, the engine's Gemma layer) serves chat completions: the template
// folds the system message into the first user turn, <end_of_turn> ends the
// answer as a stop, and an adapter validated against the model changes the
// greedy answer.
func TestGemma3_EndToEnd(t *testing.T) {
	dir := t.TempDir()
	spec := gemma3Spec()
	if err := model.WriteRandomModel(dir, spec); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string][]byte{"tokenizer.json": tokenizerTestdata(t, "models/gemma3/tokenizer.json.gz"),
		"tokenizer_config.json": tokenizerTestdata(t, "models/gemma3/tokenizer_config.json.gz")})
	adapterDir := filepath.Join(t.TempDir(), "gemma3-lora")
	if err := model.WriteRandomAdapter(adapterDir, model.AdapterSpec{Base: spec.Info(), Rank: 8, Alpha: 16, Seed: 92}); err != nil {
		t.Fatal(err)
	}
	store := demoStore(t, dir)
	m, err := store.Import(context.Background(), adapterDir)
	if err != nil {
		t.Fatalf("a Gemma 3 adapter: %v", err)
	}
	rt := openOnStore(t, runtime.Options{}, dir, store)
	ctx := context.Background()
	info, err := rt.Info(ctx)
	if err != nil || info.Architecture != model.ArchGemma3 || info.VocabSize != 262144 {
		t.Fatalf("info %+v %v", info, err)
	}

	user := []nozzle.ChatMessage{{Role: "user", Content: "Wie spät ist es?"}}
	withSystem := append([]nozzle.ChatMessage{{Role: "system", Content: "Antworte kurz."}}, user...)
	plain := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "a", Messages: user, MaxTokens: 4})
	sys := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "a", Messages: withSystem, MaxTokens: 4})
	if plain.err != nil || sys.err != nil {
		t.Fatal(plain.err, sys.err)
	}
	// <bos><start_of_turn>user\n…<end_of_turn>\n<start_of_turn>model\n;
	// the system text goes into the user turn, followed by "\n\n".
	if plain.res.PromptTokens < 10 || sys.res.PromptTokens <= plain.res.PromptTokens+2 {
		t.Errorf("prompt tokens %d without a system message, %d with", plain.res.PromptTokens, sys.res.PromptTokens)
	}

	// <end_of_turn> (106) made the likeliest token: the answer stops there.
	stop := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "a", Messages: user, MaxTokens: 8, LogitBias: map[int]float64{106: 100}})
	if stop.err != nil || stop.res.FinishReason != "stop" || stop.res.CompletionTokens > 1 || stop.text != "" {
		t.Errorf("forced <end_of_turn>: %v %+v %q", stop.err, stop.res, stop.text)
	}

	// A JSON Schema over Gemma's 262,144 tokens (byte fallback included):
	// the answer is an object the schema accepts.
	js := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "a", Messages: user, MaxTokens: 200, Temperature: 1,
		ResponseFormat: nozzle.ResponseFormatJSONSchema,
		ResponseSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"integer"},"w":{"enum":["ja","nein"]}},"required":["n","w"],"additionalProperties":false}`)})
	var got struct {
		N *int    `json:"n"`
		W *string `json:"w"`
	}
	if js.err != nil || js.res.FinishReason != "stop" || json.Unmarshal([]byte(js.text), &got) != nil || got.N == nil || got.W == nil {
		t.Errorf("json_schema: %v %+v %q", js.err, js.res, js.text)
	}

	ad := &nozzle.Adapter{ID: "gemma3-lora", Name: "gemma3-lora", AdapterManifest: *m}
	greedy := func(a *nozzle.Adapter) string {
		o := run(ctx, rt, &nozzle.GenerateRequest{TenantID: "a", PromptTokens: []int{2, 105, 2364, 107}, MaxTokens: 6, Adapter: a})
		if o.err != nil || o.res.CompletionTokens == 0 {
			t.Fatal(o.err, o.res)
		}
		return o.text
	}
	if base, lora := greedy(nil), greedy(ad); base == lora {
		t.Errorf("the adapter changes nothing: %q", base)
	}
}
