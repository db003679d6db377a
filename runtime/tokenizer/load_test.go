package tokenizer_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

func TestLoad_Errors(t *testing.T) {
	tests := []struct {
		name      string
		tj, cj    string
		wantParts []string
	}{
		{"NotJSON", `{`, ``, []string{"tokenizer.json", "not a tokenizer.json"}},
		{"NoModel", `{}`, ``, []string{"tokenizer.json", "model"}},
		{"WordPieceModel", `{"model": {"type": "WordPiece", "vocab": {}}}`, ``, []string{"tokenizer.json", "model", "WordPiece"}},
		{"BadMerge", `{"model": {"vocab": {"a": 0}, "merges": ["a b"]}}`, ``, []string{"tokenizer.json", "merges", "not in the vocabulary"}},
		{"MergeNotTwo", `{"model": {"vocab": {"a": 0}, "merges": ["ab"]}}`, ``, []string{"tokenizer.json", "merges", "two tokens"}},
		{"UnkMissing", `{"model": {"vocab": {"a": 0}, "unk_token": "<unk>"}}`, ``, []string{"unk_token"}},
		{"UnknownPreTokenizer", `{"model": {"vocab": {}}, "pre_tokenizer": {"type": "Magic"}}`, ``, []string{"pre_tokenizer", "Magic"}},
		{"UnknownDecoder", `{"model": {"vocab": {}}, "decoder": {"type": "Sequence", "decoders": [{"type": "CTC"}]}}`, ``, []string{"decoder", "decoders[0]", "CTC"}},
		{"BadRegex", `{"model": {"vocab": {}}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("}, "behavior": "Isolated"}}`, ``, []string{"pre_tokenizer", "pattern"}},
		{"AddedTokenNoID", `{"model": {"vocab": {}}, "added_tokens": [{"content": "x"}]}`, ``, []string{"added_tokens[0]", "id"}},
		{"ConfigNotObject", `{"model": {"vocab": {}}}`, `[]`, []string{"tokenizer_config.json"}},
		{"ConfigBadBOS", `{"model": {"vocab": {}}}`, `{"bos_token": 3}`, []string{"tokenizer_config.json", "bos_token"}},
		{"ConfigBadTemplate", `{"model": {"vocab": {}}}`, `{"chat_template": 3}`, []string{"tokenizer_config.json", "chat_template"}},
		{"ConfigBadBool", `{"model": {"vocab": {}}}`, `{"add_bos_token": "yes"}`, []string{"tokenizer_config.json", "add_bos_token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tokenizer.FromJSON([]byte(tt.tj), []byte(tt.cj))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, p := range tt.wantParts {
				if !strings.Contains(err.Error(), p) {
					t.Fatalf("error %q lacks %q", err, p)
				}
			}
		})
	}
	t.Run("MissingFolder", func(t *testing.T) {
		_, err := tokenizer.Load(filepath.Join(t.TempDir(), "nope"))
		if err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestLoad_Config(t *testing.T) {
	const tj = `{"model": {"vocab": {"<s>": 0, "</s>": 1, "h": 2, "i": 3, "hi": 4}, "merges": [["h", "i"]]},
		"added_tokens": [{"id": 0, "content": "<s>", "special": true}, {"id": 1, "content": "</s>", "special": true}],
		"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
			"special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}}}`
	t.Run("TemplateListAndTokenObjects", func(t *testing.T) {
		tok, err := tokenizer.FromJSON([]byte(tj), []byte(`{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": {"content": "</s>"},
			"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]}`))
		must(t, err)
		got, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "user", Content: "hi"}}, false)
		must(t, err)
		if got != "<s>hi</s>" {
			t.Fatalf("got %q", got)
		}
		if ids := tok.Encode("hi", tokenizer.EncodeOptions{AddSpecialTokens: true}); !slices.Equal(ids, []int{0, 4, 1}) {
			t.Fatalf("ids %v, want [0 4 1]", ids)
		}
		if ids := tok.Encode(got, tokenizer.EncodeOptions{ParseSpecial: true}); !slices.Equal(ids, []int{0, 4, 1}) {
			t.Fatalf("ids %v, want [0 4 1]", ids)
		}
	})
	t.Run("AddBOSAddEOS", func(t *testing.T) {
		tok, err := tokenizer.FromJSON([]byte(tj), []byte(`{"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false, "add_eos_token": true}`))
		must(t, err)
		if ids := tok.Encode("hi", tokenizer.EncodeOptions{AddSpecialTokens: true}); !slices.Equal(ids, []int{4, 1}) {
			t.Fatalf("ids %v, want [4 1]", ids)
		}
	})
	t.Run("TemplateFileWins", func(t *testing.T) {
		dir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), []byte(tj), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerConfigFile), []byte(`{"chat_template": "inline"}`), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, tokenizer.ChatTemplateFile), []byte("file"), 0o644))
		tok, err := tokenizer.Load(dir)
		must(t, err)
		if got, _ := tok.ApplyChatTemplate(nil, false); got != "file" {
			t.Fatalf("got %q, want the file's template", got)
		}
	})
	// A multimodal checkpoint's processor template serves when the
	// tokenizer has none, and only then.
	t.Run("ProcessorTemplate", func(t *testing.T) {
		for _, tc := range []struct{ config, want string }{{`{}`, "processor"}, {`{"chat_template": "inline"}`, "inline"}} {
			dir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), []byte(tj), 0o644))
			must(t, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerConfigFile), []byte(tc.config), 0o644))
			must(t, os.WriteFile(filepath.Join(dir, tokenizer.ProcessorChatTemplateFile), []byte(`{"chat_template": "processor"}`), 0o644))
			tok, err := tokenizer.Load(dir)
			must(t, err)
			if got, _ := tok.ApplyChatTemplate(nil, false); got != tc.want {
				t.Fatalf("config %s: got %q, want %q", tc.config, got, tc.want)
			}
		}
		dir := t.TempDir()
		must(t, os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), []byte(tj), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, tokenizer.ProcessorChatTemplateFile), []byte(`{"chat_template": 3}`), 0o644))
		if _, err := tokenizer.Load(dir); err == nil || !strings.Contains(err.Error(), "chat_template.json") {
			t.Fatalf("a broken chat_template.json: %v", err)
		}
	})
}

func TestEncode_Pipeline(t *testing.T) {
	// Small tokenizers exercising the parts the real models do not use.
	tests := []struct {
		name, tj, text string
		want           []int
	}{
		{"MetaspaceFirst",
			`{"model": {"vocab": {"▁a": 0, "b": 1, "▁": 2, "a": 3, "<x>": 4}, "merges": [["▁", "a"]]}, "added_tokens": [{"id": 4, "content": "<x>", "special": true}],
			"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}}`,
			"a<x>a b", []int{0, 4, 3, 2, 1}},
		{"MetaspaceAlwaysSplit",
			`{"model": {"vocab": {"▁a": 0, "b": 1, "▁": 2, "a": 3, "<x>": 4, "▁b": 5}, "merges": [["▁", "a"], ["▁", "b"]]}, "added_tokens": [{"id": 4, "content": "<x>", "special": true}],
			"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}}`,
			"a<x>a b", []int{0, 4, 0, 5}},
		{"UnkFuse",
			`{"model": {"vocab": {"<unk>": 0, "a": 1}, "merges": [], "unk_token": "<unk>", "fuse_unk": true}}`,
			"axyza", []int{1, 0, 1}},
		{"UnkNoFuse",
			`{"model": {"vocab": {"<unk>": 0, "a": 1}, "merges": [], "unk_token": "<unk>"}}`,
			"axya", []int{1, 0, 0, 1}},
		{"ByteFallback",
			`{"model": {"vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "a": 3}, "merges": [], "unk_token": "<unk>", "byte_fallback": true}}`,
			"aéa", []int{3, 1, 2, 3}},
		{"LStripRStrip",
			`{"model": {"vocab": {"a": 0, " ": 1, "<m>": 2}, "merges": []}, "added_tokens": [{"id": 2, "content": "<m>", "special": true, "lstrip": true, "rstrip": true}]}`,
			"a  <m>  a", []int{0, 2, 0}},
		{"SingleWord",
			`{"model": {"vocab": {"c": 0, "a": 1, "t": 2, " ": 3, "cat": 4, "s": 5}, "merges": []}, "added_tokens": [{"id": 4, "content": "cat", "special": false, "single_word": true}]}`,
			"cat cats", []int{4, 3, 0, 1, 2, 5}},
		{"DigitsAndWhitespace",
			`{"model": {"vocab": {"1": 0, "2": 1, "a": 2, "b": 3, "ab": 4}, "merges": [["a", "b"]]},
			"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": true}]}}`,
			" ab12  ab ", []int{4, 0, 1, 4}},
		{"NormalizedAddedToken",
			`{"model": {"vocab": {"x": 0, "hi": 1}, "merges": []}, "normalizer": {"type": "Lowercase"},
			"added_tokens": [{"id": 1, "content": "HI", "special": false, "normalized": true}]}`,
			"xHIx", []int{0, 1, 0}},
		{"ContinuingSubwordPrefix",
			`{"model": {"vocab": {"a": 0, "##b": 1, "a##b": 2, "ab": 3}, "merges": [["a", "##b"]], "continuing_subword_prefix": "##"}}`,
			"ab", []int{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tokenizer.FromJSON([]byte(tt.tj), nil)
			must(t, err)
			if got := tok.Encode(tt.text, tokenizer.EncodeOptions{ParseSpecial: true}); !slices.Equal(got, tt.want) {
				t.Fatalf("Encode(%q) = %v, want %v", tt.text, got, tt.want)
			}
		})
	}
}

func TestLoad_AddPrefixSpace(t *testing.T) {
	const tj = `{"model": {"vocab": {"Ġ": 0, "a": 1, "Ġa": 2}, "merges": [["Ġ", "a"]]}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}}`
	for _, tt := range []struct {
		cfg  string
		want []int
	}{
		{`{}`, []int{1}},
		{`{"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": true}`, []int{2}},
		{`{"tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": true}`, []int{1}},
	} {
		tok, err := tokenizer.FromJSON([]byte(tj), []byte(tt.cfg))
		must(t, err)
		if got := tok.Encode("a", tokenizer.EncodeOptions{}); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.cfg, got, tt.want)
		}
	}
}

// TestLoad_Gemma3Folder: Gemma 3's folder as the runtime loads it (here
// with its tokenizer_config.json gzip-compressed): <bos> prepended
// (add_bos_token), <end_of_turn> the end of a turn, and the chat template
// from tokenizer_config.json.
func TestLoad_Gemma3Folder(t *testing.T) {
	tok, err := tokenizer.Load(filepath.Join("testdata", "models", "gemma3"))
	must(t, err)
	if id, ok := tok.BOS(); !ok || tok.TokenText(id) != "<bos>" || id != 2 {
		t.Fatalf("BOS = %d %v", id, ok)
	}
	if eos := tok.EOS(); !slices.Equal(eos, []int{106}) || tok.TokenText(106) != "<end_of_turn>" {
		t.Fatalf("EOS = %v", eos)
	}
	for _, s := range []string{"<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>"} {
		if id, ok := tok.TokenID(s); !ok || !tok.IsSpecial(id) {
			t.Errorf("%s: id %d %v, special %v", s, id, ok, tok.IsSpecial(id))
		}
	}
	if ids := tok.Encode("Hi", tokenizer.EncodeOptions{AddSpecialTokens: true}); len(ids) < 2 || ids[0] != 2 {
		t.Fatalf("ids %v: want <bos> first", ids)
	}
	got, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "system", Content: "Be brief."}, {Role: "user", Content: " Hi "}}, true)
	must(t, err)
	if want := "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	ids := tok.Encode(got, tokenizer.EncodeOptions{ParseSpecial: true})
	if ids[0] != 2 || ids[1] != 105 || slices.Index(ids, 106) < 0 {
		t.Fatalf("ids %v: want <bos> <start_of_turn> … <end_of_turn>", ids)
	}
}
