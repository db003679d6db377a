package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
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
