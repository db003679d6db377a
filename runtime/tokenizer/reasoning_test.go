package tokenizer_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// withTokens loads a test model whose tokenizer.json has the special
// tokens add appended to its added tokens, and those named in special
// (added tokens already) marked special; template replaces its chat
// template when not "".
func withTokens(tb testing.TB, model string, add, special []string, template string) *tokenizer.Tokenizer {
	tb.Helper()
	tj, cj := modelFiles(tb, model)
	var doc map[string]json.RawMessage
	must(tb, json.Unmarshal(tj, &doc))
	var added []map[string]any
	must(tb, json.Unmarshal(doc["added_tokens"], &added))
	next := 0.0
	for _, a := range added {
		next = max(next, a["id"].(float64)+1)
		if slices.Contains(special, a["content"].(string)) {
			a["special"] = true
		}
	}
	for _, s := range add {
		added = append(added, map[string]any{"id": next, "content": s, "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true})
		next++
	}
	b, err := json.Marshal(added)
	must(tb, err)
	doc["added_tokens"] = b
	tj, err = json.Marshal(doc)
	must(tb, err)
	dir := tb.TempDir()
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), tj, 0o644))
	must(tb, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerConfigFile), cj, 0o644))
	if template != "" {
		must(tb, os.WriteFile(filepath.Join(dir, tokenizer.ChatTemplateFile), []byte(template), 0o644))
	}
	tok, err := tokenizer.Load(dir)
	must(tb, err)
	return tok
}

// TestToolFormat_MistralV11: a tokenizer with Mistral's [ARGS] control
// token (version 11 and later) calls tools as [TOOL_CALLS]name[ARGS]{...},
// whatever its template writes; a request that offers tools decodes those
// control tokens as text, which decoding otherwise leaves out.
func TestToolFormat_MistralV11(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "templates", "mistral-v3-tools.jinja"))
	must(t, err)
	tok := withTokens(t, "qwen3", []string{"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"}, nil, string(src))
	if got := tok.ToolFormat(); got != nozzle.ToolFormatMistralV11 {
		t.Fatalf("format %q, want %q", got, nozzle.ToolFormatMistralV11)
	}
	keep := tok.ToolCallTokens()
	if len(keep) != 3 {
		t.Fatalf("tool call tokens %v", keep)
	}
	text := `Sure.[TOOL_CALLS]get_weather[ARGS]{"city": "Bern"}[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}`
	ids := tok.Encode(text, tokenizer.EncodeOptions{ParseSpecial: true})
	for _, id := range keep {
		if !slices.Contains(ids, id) {
			t.Fatalf("%q encodes without token %d: %v", text, id, ids)
		}
	}
	decode := func(d *tokenizer.StreamDecoder) string {
		var s string
		for _, id := range ids {
			s += d.Add(id)
		}
		return s + d.Flush()
	}
	if got := decode(tok.NewStreamDecoderKeeping(true, keep)); got != text {
		t.Errorf("kept: %q, want %q", got, text)
	}
	if got, want := decode(tok.NewStreamDecoder(true)), `Sure.get_weather{"city": "Bern"}get_timea1b2c3d4e{}`; got != want {
		t.Errorf("skipped: %q, want %q", got, want)
	}
	if got := tok.Decode(ids, true); got != decode(tok.NewStreamDecoder(true)) {
		t.Errorf("Decode: %q", got)
	}

	// The v3 format without the token; other formats keep nothing.
	if got := loadWithTemplate(t, "llama2", "mistral-v3-tools.jinja"); got.ToolFormat() != nozzle.ToolFormatMistral || got.ToolCallTokens() != nil {
		t.Errorf("v3: %q %v", got.ToolFormat(), got.ToolCallTokens())
	}
	if got := mustModel(t, "qwen3").ToolCallTokens(); got != nil {
		t.Errorf("qwen3: %v", got)
	}
}

// TestReasoning: a model reasons where its vocabulary has <think> and
// </think> or its template writes both; their ids are kept in decoding
// where they are special tokens.
func TestReasoning(t *testing.T) {
	for _, tc := range []struct {
		name string
		tok  *tokenizer.Tokenizer
		want bool
	}{
		{"Qwen3", mustModel(t, "qwen3"), true},
		{"Llama3", mustModel(t, "llama3"), false},
		{"Llama2", mustModel(t, "llama2"), false},
		{"Demo", mustModel(t, "demo"), false},
		{"TemplateWritesThem", chatTokenizer(t, `{% for m in messages %}{{ m.content }}{% endfor %}<think>`+"\n"+`{% if not thinking %}</think>{% endif %}`), true},
		{"TemplateOpensOnly", chatTokenizer(t, `{% for m in messages %}{{ m.content }}{% endfor %}<think>`), false},
	} {
		if got := tc.tok.Reasoning(); got != tc.want {
			t.Errorf("%s: Reasoning() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Qwen3's tags are not special: decoding keeps them anyway.
	if got := mustModel(t, "qwen3").ThoughtTokens(); got != nil {
		t.Errorf("qwen3's thought tokens to keep: %v", got)
	}
	tok := withTokens(t, "qwen3", nil, []string{"<think>", "</think>"}, "")
	keep := tok.ThoughtTokens()
	openID, _ := tok.TokenID("<think>")
	closeID, _ := tok.TokenID("</think>")
	if !slices.Equal(keep, []int{openID, closeID}) {
		t.Fatalf("thought tokens %v, want [%d %d]", keep, openID, closeID)
	}
	ids := tok.Encode("<think>\nhm\n</think>\n\nHi", tokenizer.EncodeOptions{ParseSpecial: true})
	d := tok.NewStreamDecoderKeeping(true, keep)
	var got string
	for _, id := range ids {
		got += d.Add(id)
	}
	if got += d.Flush(); got != "<think>\nhm\n</think>\n\nHi" {
		t.Errorf("kept: %q", got)
	}
	if got := tok.Decode(ids, true); got != "\nhm\n\n\nHi" {
		t.Errorf("skipped: %q", got)
	}
}

// magistralTemplate is a chat template of Magistral's kind: an
// assistant's earlier thoughts between [THINK] and [/THINK].
const magistralTemplate = `{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]` +
	`{% elif m.role == 'assistant' %}{% if m.reasoning_content %}[THINK]{{ m.reasoning_content }}[/THINK]{% endif %}` +
	`{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}`

// TestReasoning_Magistral: a model whose vocabulary has [THINK] and
// [/THINK] as tokens and whose template writes them thinks between them
// (Magistral), even where it has <think> and </think> too (Qwen3's
// vocabulary here); they are kept in decoding. Either alone does not make
// it think between them.
func TestReasoning_Magistral(t *testing.T) {
	tok := withTokens(t, "qwen3", []string{"[THINK]", "[/THINK]"}, nil, magistralTemplate)
	if tags, ok := tok.ThinkTags(); !ok || tags != nozzle.MistralThinkTags || !tok.Reasoning() {
		t.Fatalf("tags %+v %v", tags, ok)
	}
	keep := tok.ThoughtTokens()
	openID, _ := tok.TokenID("[THINK]")
	closeID, _ := tok.TokenID("[/THINK]")
	if !slices.Equal(keep, []int{openID, closeID}) {
		t.Fatalf("thought tokens %v, want [%d %d]", keep, openID, closeID)
	}
	const text = "[THINK]hm, Bern.[/THINK]Bern."
	ids := tok.Encode(text, tokenizer.EncodeOptions{ParseSpecial: true})
	d := tok.NewStreamDecoderKeeping(true, keep)
	var got string
	for _, id := range ids {
		got += d.Add(id)
	}
	if got += d.Flush(); got != text {
		t.Errorf("kept: %q", got)
	}
	if th, a := nozzle.SplitThoughts(got, false, nozzle.MistralThinkTags); th != "hm, Bern." || a != "Bern." {
		t.Errorf("split %q %q", th, a)
	}

	for name, tok := range map[string]*tokenizer.Tokenizer{
		"TemplateOnly": chatTokenizer(t, magistralTemplate),
		"VocabOnly":    withTokens(t, "llama2", []string{"[THINK]", "[/THINK]"}, nil, "{% for m in messages %}{{ m.content }}{% endfor %}"),
	} {
		if tags, ok := tok.ThinkTags(); ok || tok.ThoughtTokens() != nil {
			t.Errorf("%s: tags %+v %v", name, tags, ok)
		}
	}
	// Qwen3's tags are <think> and </think>.
	if tags, ok := mustModel(t, "qwen3").ThinkTags(); !ok || tags != nozzle.DefaultThinkTags {
		t.Errorf("qwen3: tags %+v %v", tags, ok)
	}
}

// TestReservedVar: the variables a request's chat_template_kwargs cannot
// set.
func TestReservedVar(t *testing.T) {
	for _, name := range []string{"messages", "tools", "add_generation_prompt", "bos_token", "eos_token", "documents", "raise_exception"} {
		if !tokenizer.ReservedVar(name) {
			t.Errorf("%s is not reserved", name)
		}
	}
	for _, name := range []string{"enable_thinking", "date_string", "tools_in_user_message", "custom"} {
		if tokenizer.ReservedVar(name) {
			t.Errorf("%s is reserved", name)
		}
	}
}
