package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// TestTokenizerCodec_TemplateKwargs: a request's chat template variables
// reach the real Qwen3 template as @huggingface/jinja renders it with
// them (enable_thinking false closes the thoughts in the generation
// prompt), tools still apply beside them, and a prompt that leaves the
// thoughts open is told from one that closes them.
func TestTokenizerCodec_TemplateKwargs(t *testing.T) {
	tk, err := tokenizer.Load(filepath.Join("tokenizer", "testdata", "models", "qwen3"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("tokenizer", "testdata", "golden", "chat.json"))
	if err != nil {
		t.Fatal(err)
	}
	var golden []struct {
		Template            string `json:"template"`
		Case                string `json:"case"`
		AddGenerationPrompt bool   `json:"add_generation_prompt"`
		Prompt              string `json:"prompt"`
	}
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	want := func(template, c string) string {
		for _, g := range golden {
			if g.Template == template && g.Case == c && g.AddGenerationPrompt {
				return g.Prompt
			}
		}
		t.Fatalf("no golden %s %s", template, c)
		return ""
	}
	codec := &tokenizerCodec{tk: tk}
	msgs := []nozzle.ChatMessage{{Role: "user", Content: "Hello! What is the capital of France?"}}
	for _, tc := range []struct {
		kwargs, template string
	}{
		{`{"enable_thinking": false}`, "qwen3-no-thinking"},
		{`{"enable_thinking": true, "unused": {"b": [1, null], "a": "x"}}`, "qwen3"},
		{``, "qwen3"},
	} {
		got, err := codec.ChatPrompt(msgs, nil, json.RawMessage(tc.kwargs))
		if err != nil {
			t.Fatal(err)
		}
		if w := want(tc.template, "user_only"); got != w {
			t.Errorf("kwargs %s: got %q, want %q", tc.kwargs, got, w)
		}
		if nozzle.DefaultThinkTags.OpenedBy(got) {
			t.Errorf("kwargs %s: %q opens the thoughts", tc.kwargs, got)
		}
	}
	// Tools and variables together.
	tools := json.RawMessage(`[{"type":"function","function":{"name":"f","parameters":{}}}]`)
	got, err := codec.ChatPrompt(msgs, tools, json.RawMessage(`{"enable_thinking": false}`))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := codec.ChatPrompt(msgs, tools, nil)
	if got != plain+"<think>\n\n</think>\n\n" {
		t.Errorf("with tools: %q", got)
	}
}

// TestGemma3_VocabAndStops: Gemma 3's tokenizer has 262,145 tokens, one
// more than the 1B model's vocabulary: the extra one, <image_soft_token>
// (262144, special), is allowed but refused in text the model would read;
// non-special tokens past the model's vocabulary are not. The stop tokens
// are <eos> (1) and <end_of_turn> (106), as generation_config.json lists
// them and the tokenizer's eos_token names the latter.
func TestGemma3_VocabAndStops(t *testing.T) {
	tk, err := tokenizer.Load(filepath.Join("tokenizer", "testdata", "models", "gemma3"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vocab int
		ok    bool
	}{{262144, true}, {262208, true}, {262145, true}, {262143, false}, {256000, false}} {
		if err := checkVocab(tk, tc.vocab); (err == nil) != tc.ok {
			t.Errorf("checkVocab(%d) = %v, want ok %v", tc.vocab, err, tc.ok)
		}
	}
	prompt, err := tk.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "user", Content: "What is in <image_soft_token>?"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	small := &tokenizerCodec{tk: tk, vocab: 262144}
	if _, err := small.Encode(prompt, false); nozzle.AsError(err) == nil || nozzle.AsError(err).Code != nozzle.EINVALID || !strings.Contains(err.Error(), "<image_soft_token>") {
		t.Fatalf("1B: err = %v, want EINVALID naming <image_soft_token>", err)
	}
	ids, err := small.Encode("<start_of_turn>user\nHi<end_of_turn>\n", true)
	if err != nil || ids[0] != 2 || ids[1] != 105 {
		t.Fatalf("1B: ids %v, %v", ids, err)
	}
	large := &tokenizerCodec{tk: tk, vocab: 262208}
	if ids, err := large.Encode(prompt, false); err != nil || !slices.Contains(ids, 262144) {
		t.Fatalf("4B: ids %v, %v", ids, err)
	}
	// Through promptTokens, the refusal is the request's error, on the
	// parameter that held the token.
	r := &Runtime{codec: small, info: nozzle.ModelInfo{VocabSize: 262144}}
	for _, req := range []*nozzle.GenerateRequest{
		{Messages: []nozzle.ChatMessage{{Role: "user", Content: "What is in <image_soft_token>?"}}},
		{Prompt: "<image_soft_token>"},
	} {
		_, param, _, err := r.promptTokens(req)
		if e := nozzle.AsError(err); e == nil || e.Code != nozzle.EINVALID || e.Param != param || !strings.Contains(e.Message, "<image_soft_token>") {
			t.Errorf("promptTokens: %v (param %q), want EINVALID naming the token", err, param)
		}
	}
	if ids, _, _, err := r.promptTokens(&nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "user", Content: "Hi"}}}); err != nil || ids[0] != 2 {
		t.Errorf("promptTokens: %v %v", ids, err)
	}
	gen, err := model.ParseGenerationConfig([]byte(`{"bos_token_id": 2, "cache_implementation": "hybrid", "do_sample": true, "eos_token_id": [1, 106], "pad_token_id": 0, "top_k": 64, "top_p": 0.95}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := stopTokens(gen.EOSTokenIDs, tk.EOS()); !slices.Equal(got, []int{1, 106}) {
		t.Fatalf("stop tokens %v, want [1 106]", got)
	}
	if got := stopTokens(nil, tk.EOS()); !slices.Equal(got, []int{106}) {
		t.Fatalf("stop tokens without generation_config.json %v, want [106]", got)
	}
}
