package tokenizer_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

type chatGolden struct {
	Template            string         `json:"template"`
	Model               string         `json:"model"`
	Vars                map[string]any `json:"vars"`
	Case                string         `json:"case"`
	AddGenerationPrompt bool           `json:"add_generation_prompt"`
	Prompt              *string        `json:"prompt"`
	IDs                 []int          `json:"ids"`
	Error               *string        `json:"error"`
}

type chatCase struct {
	Name     string                     `json:"name"`
	Messages []nozzle.ChatMessage       `json:"messages"`
	Vars     map[string]json.RawMessage `json:"vars"`
}

// loadWithTemplate writes a model's files to a temporary folder, with
// templateFile (under testdata/templates) as chat_template.jinja when set,
// and loads it with Load.
func loadWithTemplate(tb testing.TB, model, templateFile string) *tokenizer.Tokenizer {
	tb.Helper()
	dir := tb.TempDir()
	tj, cj := modelFiles(tb, model)
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), tj, 0o644))
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerConfigFile), cj, 0o644))
	if templateFile != "" {
		src, err := os.ReadFile(filepath.Join("testdata", "templates", templateFile))
		must(tb, err)
		must(tb, os.WriteFile(filepath.Join(dir, tokenizer.ChatTemplateFile), src, 0o644))
	}
	tok, err := tokenizer.Load(dir)
	must(tb, err)
	return tok
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// TestChatTemplate renders the real chat templates of Llama 2, Llama 3,
// Llama 3.2 and Qwen3, and one in Mistral's v3 tool-calling format, and
// compares with @huggingface/jinja.
func TestChatTemplate(t *testing.T) {
	var golden []chatGolden
	b, err := os.ReadFile(filepath.Join("testdata", "golden", "chat.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &golden))
	var cases []chatCase
	b, err = os.ReadFile(filepath.Join("testdata", "chat_cases.json"))
	must(t, err)
	must(t, json.Unmarshal(b, &cases))
	byName := map[string]chatCase{}
	for _, c := range cases {
		byName[c.Name] = c
	}
	files := map[string]string{"llama2-chat": "llama2-chat.jinja", "llama3.2-instruct": "llama3.2-instruct.jinja", "mistral-v3-tools": "mistral-v3-tools.jinja", "gemma2-it": "gemma2-it.jinja"}
	toks := map[string]*tokenizer.Tokenizer{}
	for _, g := range golden {
		tok := toks[g.Template]
		if tok == nil {
			tok = loadWithTemplate(t, g.Model, files[g.Template])
			toks[g.Template] = tok
		}
		name := g.Template + "/" + g.Case
		if g.AddGenerationPrompt {
			name += "/gen"
		}
		t.Run(name, func(t *testing.T) {
			c := byName[g.Case]
			vars := map[string]any{}
			for k, v := range c.Vars {
				vars[k] = v // json.RawMessage: key order kept
			}
			for k, v := range g.Vars {
				vars[k] = v
			}
			got, err := tok.ApplyChatTemplateVars(c.Messages, g.AddGenerationPrompt, vars)
			if g.Error != nil {
				var te *tokenizer.TemplateError
				if !errors.As(err, &te) {
					t.Fatalf("err = %v, want a TemplateError %q", err, *g.Error)
				}
				if te.Message != *g.Error || err.Error() != *g.Error {
					t.Fatalf("message = %q, want %q", te.Message, *g.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != *g.Prompt {
				t.Fatalf("render:\n got %q\nwant %q", got, *g.Prompt)
			}
			if ids := tok.Encode(got, tokenizer.EncodeOptions{ParseSpecial: true}); !slices.Equal(ids, g.IDs) {
				t.Fatalf("ids:\n got %v\nwant %v", ids, g.IDs)
			}
		})
	}
}

func TestChatTemplate_Errors(t *testing.T) {
	t.Run("NoTemplate", func(t *testing.T) {
		tok := loadWithTemplate(t, "llama2", "")
		_, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "user", Content: "hi"}}, true)
		if !errors.Is(err, tokenizer.ErrNoChatTemplate) {
			t.Fatalf("err = %v, want ErrNoChatTemplate", err)
		}
	})
	t.Run("BadSyntax", func(t *testing.T) {
		tok := chatTokenizer(t, "{% for m in messages %}{{ m.content }")
		if _, err := tok.ApplyChatTemplate(nil, false); err == nil || !strings.Contains(err.Error(), "chat template") {
			t.Fatalf("err = %v, want a compile error", err)
		}
	})
	t.Run("RaiseException", func(t *testing.T) {
		tok := chatTokenizer(t, "{% if messages|length == 0 %}{{ raise_exception('No messages given.') }}{% endif %}ok")
		_, err := tok.ApplyChatTemplate(nil, false)
		var te *tokenizer.TemplateError
		if !errors.As(err, &te) || err.Error() != "No messages given." {
			t.Fatalf("err = %v, want TemplateError %q", err, "No messages given.")
		}
		got, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "user", Content: "x"}}, false)
		if err != nil || got != "ok" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("TrimIsPythons", func(t *testing.T) {
		// As Python's Jinja 3.1.6 renders it (transformers): str.strip
		// strips U+001C to U+001F and U+0085, not U+FEFF or U+200B; "|"
		// binds before "+" (Gemma's '\n' + message['content'] | trim).
		tok := chatTokenizer(t, `[{{ x | trim }}][{{ "abxba" | trim("ab") }}][{{ "<" + x | trim + ">" }}][{{ 5 | trim }}]`)
		got, err := tok.ApplyChatTemplateVars(nil, false, map[string]any{"x": "\x1c\u0085 \u3000a\ufeff\u200b \t\n"})
		must(t, err)
		if want := "[a\ufeff\u200b][x][<a\ufeff\u200b>][5]"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("StrftimeNow", func(t *testing.T) {
		tok := chatTokenizer(t, `{{ strftime_now("%Y-%m-%d|%d %b %Y|%B %A %H") }}`)
		before := time.Now()
		got, err := tok.ApplyChatTemplate(nil, false)
		must(t, err)
		after := time.Now()
		want1 := before.Format("2006-01-02|02 Jan 2006|January Monday 15")
		want2 := after.Format("2006-01-02|02 Jan 2006|January Monday 15")
		if got != want1 && got != want2 {
			t.Fatalf("got %q, want %q", got, want1)
		}
	})
	t.Run("LoopControlsNamespaceToJSON", func(t *testing.T) {
		tok := chatTokenizer(t, `{%- set ns = namespace(n=0) -%}
{%- for m in messages -%}
  {%- if m.role == 'system' %}{% continue %}{% endif -%}
  {%- if ns.n == 2 %}{% break %}{% endif -%}
  {%- set ns.n = ns.n + 1 -%}
  {{ m | tojson }}
{% endfor -%}
{{ {'a': 'x'}.get('a') }}{{ {'b': 1}.get('c', 'd') }}{% for k, v in {'k': 'v'}.items() %}{{ k }}={{ v }}{% endfor %}`)
		got, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{
			{Role: "system", Content: "s"},
			{Role: "user", Content: "<b>&é\"\n"},
			{Role: "assistant", Content: "a"},
			{Role: "user", Content: "dropped"},
		}, false)
		must(t, err)
		want := `{"role": "user", "content": "<b>&é\"\n"}` + "\n" + `{"role": "assistant", "content": "a"}` + "\nxdk=v"
		if got != want {
			t.Fatalf("got  %q\nwant %q", got, want)
		}
	})
}

// chatTokenizer is the demo-free llama3 tokenizer with src as its template.
func chatTokenizer(tb testing.TB, src string) *tokenizer.Tokenizer {
	tb.Helper()
	dir := tb.TempDir()
	tj, cj := modelFiles(tb, "llama2")
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), tj, 0o644))
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerConfigFile), cj, 0o644))
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.ChatTemplateFile), []byte(src), 0o644))
	tok, err := tokenizer.Load(dir)
	must(tb, err)
	return tok
}

// TestToolFormat: the way each real template teaches its model to call
// tools.
func TestToolFormat(t *testing.T) {
	t.Run("MistralArgs", func(t *testing.T) {
		// Mistral Small 3.2's [TOOL_CALLS]name[ARGS]{...}: not the v3
		// format, and known from the template where the tokenizer has no
		// [ARGS] token (TestToolFormat_MistralV11: from the token)
		tok := chatTokenizer(t, `{% for t in tools %}[AVAILABLE_TOOLS]{{ t|tojson }}[/AVAILABLE_TOOLS]{% endfor %}`+
			`{% for m in messages %}{% for c in m.tool_calls %}[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments|tojson }}{% endfor %}{% endfor %}`)
		if got := tok.ToolFormat(); got != nozzle.ToolFormatMistralV11 {
			t.Errorf("got %q, want %q", got, nozzle.ToolFormatMistralV11)
		}
	})
	for _, tc := range []struct{ model, file, want string }{
		{"qwen3", "", nozzle.ToolFormatHermes},
		{"llama3", "llama3.2-instruct.jinja", nozzle.ToolFormatLlama3JSON},
		{"llama2", "mistral-v3-tools.jinja", nozzle.ToolFormatMistral},
		{"llama3", "", ""}, // Llama 3.0: no tools
		{"llama2", "llama2-chat.jinja", ""},
		{"gemma3", "", ""}, // Gemma 3's template renders no tools
		{"gemma2", "gemma2-it.jinja", ""},
	} {
		if got := loadWithTemplate(t, tc.model, tc.file).ToolFormat(); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.model, tc.file, got, tc.want)
		}
	}
}

// TestGemma2_TemplateEOS: with Gemma 2's chat template, its <end_of_turn>
// (107) ends generation beside eos_token <eos> (1), as
// generation_config.json's [1, 107] does.
func TestGemma2_TemplateEOS(t *testing.T) {
	tok := loadWithTemplate(t, "gemma2", "gemma2-it.jinja")
	if got := tok.EOS(); !slices.Equal(got, []int{1, 107}) || tok.TokenText(107) != "<end_of_turn>" {
		t.Fatalf("EOS = %v, want [1 107]", got)
	}
	if tags, ok := tok.ThinkTags(); ok {
		t.Fatalf("think tags %v: Gemma 2 does not reason", tags)
	}
}
