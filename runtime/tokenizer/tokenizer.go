// Package tokenizer reads Hugging Face tokenizer.json and
// tokenizer_config.json files and encodes, decodes and renders chat
// templates the way Hugging Face's tokenizers and transformers libraries do,
// token for token, in pure Go.
//
// Supported: added tokens (special or not, with lstrip, rstrip, single_word
// and normalized), the normalizers Prepend, Replace, NFC, NFD, NFKC, NFKD,
// Lowercase, Strip and Sequence, the pre-tokenizers Split, ByteLevel,
// Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer
// and Sequence, the BPE model (byte fallback, unknown-token fusing,
// ignore_merges, subword prefix and word suffix), the post-processors
// TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel and
// Sequence, and the decoders ByteLevel, Replace, ByteFallback, Fuse, Strip,
// Metaspace, BPEDecoder and Sequence. That covers the Llama 2, Mistral,
// TinyLlama, Llama 3, Qwen2/Qwen3, Gemma 2/Gemma 3 and SmolLM families. From
// tokenizer_config.json it reads the special tokens, add_bos_token and
// add_eos_token (Llama and Gemma classes), add_prefix_space (GPT-2 family
// classes) and the chat template.
//
// Decode does not apply clean_up_tokenization_spaces (which would change
// the model's text), so decoding is exact and streaming matches it.
//
// The split patterns of GPT-2, Llama 3 and Qwen2 are matched by hand-written
// scanners; any other pattern runs on a backtracking regular-expression
// engine with lookaround.
//
// A Tokenizer is safe for concurrent use.
package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ardanlabs/jinja"
)

// File names read by Load.
const (
	TokenizerFile       = "tokenizer.json"
	TokenizerConfigFile = "tokenizer_config.json"
	ChatTemplateFile    = "chat_template.jinja"
	// ProcessorChatTemplateFile is a multimodal model's processor template
	// ({"chat_template": "…"}), read when the tokenizer has none.
	ProcessorChatTemplateFile = "chat_template.json"
)

// Tokenizer encodes text to token ids and back.
type Tokenizer struct {
	vocab   map[string]int // model vocabulary and added tokens
	idToTok []string       // id -> token string ("" for holes)
	added   addedVocab
	special []bool // id -> is a special added token

	normalizer normalizer
	pre        []preTokenizer // applied in order (a Sequence is flattened)
	model      *bpe
	post       postProcessor
	decoder    []decoder // applied in order (a Sequence is flattened)

	cfg          config
	bos          int // -1 when none
	eos          []int
	chatTemplate string
	templateOnce sync.Once
	template     *jinja.Template
	templateErr  error
}

// EncodeOptions controls Encode.
type EncodeOptions struct {
	// AddSpecialTokens applies the post-processor (for example the BOS
	// token Llama prepends).
	AddSpecialTokens bool
	// ParseSpecial makes special-token text in the input ("<s>",
	// "<|im_start|>") become the special token's id. When false, such text
	// is tokenized as ordinary text; added tokens that are not special are
	// still recognised. Pass true for rendered chat templates and false for
	// text a user typed.
	ParseSpecial bool
}

// Load reads tokenizer.json, tokenizer_config.json (optional) and
// chat_template.jinja (optional; it wins over a chat_template in
// tokenizer_config.json) from dir; without either template, the processor's
// chat_template.json (a multimodal checkpoint's) where there is one. Either
// JSON file of the tokenizer may instead be gzip-compressed, with ".gz"
// added to its name.
func Load(dir string) (*Tokenizer, error) {
	tj, err := readMaybeGzip(filepath.Join(dir, TokenizerFile))
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	cj, err := readMaybeGzip(filepath.Join(dir, TokenizerConfigFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := FromJSON(tj, cj)
	if err != nil {
		return nil, err
	}
	tmpl, err := os.ReadFile(filepath.Join(dir, ChatTemplateFile))
	switch {
	case err == nil:
		t.setChatTemplate(string(tmpl))
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	if t.chatTemplate == "" {
		b, err := os.ReadFile(filepath.Join(dir, ProcessorChatTemplateFile))
		switch {
		case err == nil:
			var pt struct {
				ChatTemplate string `json:"chat_template"`
			}
			if err := json.Unmarshal(b, &pt); err != nil {
				return nil, fmt.Errorf("load tokenizer: %s: %w", ProcessorChatTemplateFile, err)
			}
			if pt.ChatTemplate != "" {
				t.setChatTemplate(pt.ChatTemplate)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("load tokenizer: %w", err)
		}
	}
	return t, nil
}

// setChatTemplate replaces the template tokenizer_config.json gave, and the
// end-of-turn ids read from it.
func (t *Tokenizer) setChatTemplate(src string) {
	t.chatTemplate = src
	t.eos = nil
	t.resolveSpecialIDs()
}

// readMaybeGzip reads path, or path+".gz" decompressed when path is absent.
func readMaybeGzip(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return b, err
	}
	gz, gerr := os.ReadFile(path + ".gz")
	if gerr != nil {
		return nil, err
	}
	zr, gerr := gzip.NewReader(bytes.NewReader(gz))
	if gerr != nil {
		return nil, fmt.Errorf("%s.gz: %w", path, gerr)
	}
	b, gerr = io.ReadAll(zr)
	if gerr != nil {
		return nil, fmt.Errorf("%s.gz: %w", path, gerr)
	}
	return b, nil
}

// FromJSON builds a Tokenizer from the contents of tokenizer.json and
// tokenizer_config.json (configJSON may be empty).
func FromJSON(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	var cfg config
	if len(bytes.TrimSpace(configJSON)) > 0 {
		var err error
		if cfg, err = parseConfig(configJSON); err != nil {
			return nil, fmt.Errorf("%s: %w", TokenizerConfigFile, err)
		}
	}
	t, err := build(tokenizerJSON, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TokenizerFile, err)
	}
	return t, nil
}

// Encode turns text into token ids.
func (t *Tokenizer) Encode(text string, opts EncodeOptions) []int {
	return t.AppendEncode(nil, text, opts)
}

// AppendEncode is Encode appending to dst.
func (t *Tokenizer) AppendEncode(dst []int, text string, opts EncodeOptions) []int {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	if opts.AddSpecialTokens && t.post != nil {
		return t.post.process(dst, func(dst []int) []int { return t.encodeText(dst, text, opts.ParseSpecial) })
	}
	return t.encodeText(dst, text, opts.ParseSpecial)
}

// encodeText runs added-token splitting, normalization, pre-tokenization
// and the model.
func (t *Tokenizer) encodeText(dst []int, text string, parseSpecial bool) []int {
	st := getState()
	defer putState(st)
	// 1. Added tokens matched on the raw text.
	t.added.split(text, parseSpecial, false, func(seg string, id int, atStart bool) {
		if id >= 0 {
			dst = append(dst, id)
			return
		}
		// 2. Normalize, then added tokens matched on normalized text.
		norm := seg
		if t.normalizer != nil {
			norm = t.normalizer.normalize(seg)
		}
		if norm == "" {
			return
		}
		t.added.split(norm, parseSpecial, true, func(seg2 string, id2 int, atStart2 bool) {
			if id2 >= 0 {
				dst = append(dst, id2)
				return
			}
			dst = t.encodeSegment(st, dst, seg2, atStart && atStart2)
		})
	})
	return dst
}

// encodeSegment pre-tokenizes one normalized segment and runs the model on
// every word.
func (t *Tokenizer) encodeSegment(st *encodeState, dst []int, seg string, atStart bool) []int {
	st.a = append(st.a[:0], piece{s: seg, first: atStart})
	for _, p := range t.pre {
		st.b = p.split(st.b[:0], st.a)
		st.a, st.b = st.b, st.a
	}
	for _, p := range st.a {
		dst = t.model.encodeWord(dst, p.s, p.byteLevel, &st.bpe)
	}
	return dst
}

// piece is one word of pre-tokenization.
type piece struct {
	s string
	// first is true when the piece starts at offset 0 of the input.
	first bool
	// byteLevel is true when s still has to be mapped through the
	// byte-to-unicode table (done lazily by the model).
	byteLevel bool
}

type encodeState struct {
	a, b []piece
	bpe  bpeScratch
}

var statePool = sync.Pool{New: func() any { return new(encodeState) }}

func getState() *encodeState  { return statePool.Get().(*encodeState) }
func putState(s *encodeState) { s.a, s.b = s.a[:0], s.b[:0]; statePool.Put(s) }

// VocabSize is the number of token ids (the largest id plus one, added
// tokens included).
func (t *Tokenizer) VocabSize() int { return len(t.idToTok) }

// TokenText returns the token's string as stored in the vocabulary (for
// byte-level vocabularies in the byte-to-unicode alphabet, e.g. "Ġhello"),
// or "" for an unknown id.
func (t *Tokenizer) TokenText(id int) string {
	if id < 0 || id >= len(t.idToTok) {
		return ""
	}
	return t.idToTok[id]
}

// TokenID returns the id of a token string (vocabulary or added token).
func (t *Tokenizer) TokenID(token string) (int, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// BOS returns the beginning-of-sequence token id from tokenizer_config.json
// (bos_token), if there is one.
func (t *Tokenizer) BOS() (int, bool) { return t.bos, t.bos >= 0 }

// EOS returns the end-of-sequence token ids: tokenizer_config.json's
// eos_token, plus the end-of-turn tokens of the chat template that are
// special added tokens (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>,
// <|eom_id|>, <|endoftext|>, </s>, <|end_of_text|>).
func (t *Tokenizer) EOS() []int { return append([]int(nil), t.eos...) }

// SpecialIDs returns the ids of all special added tokens, ascending.
func (t *Tokenizer) SpecialIDs() []int {
	var ids []int
	for id, s := range t.special {
		if s {
			ids = append(ids, id)
		}
	}
	return ids
}

// IsSpecial reports whether id is a special added token.
func (t *Tokenizer) IsSpecial(id int) bool {
	return id >= 0 && id < len(t.special) && t.special[id]
}

// ChatTemplate returns the chat template source, or "" when there is none.
func (t *Tokenizer) ChatTemplate() string { return t.chatTemplate }

// endOfTurnTokens are special tokens that end an assistant turn in common
// chat templates.
var endOfTurnTokens = []string{"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "</s>"}

func (t *Tokenizer) resolveSpecialIDs() {
	t.bos = -1
	if id, ok := t.vocab[t.cfg.bosToken]; ok && t.cfg.bosToken != "" {
		t.bos = id
	}
	seen := map[int]bool{}
	add := func(id int) {
		if !seen[id] {
			seen[id] = true
			t.eos = append(t.eos, id)
		}
	}
	if id, ok := t.vocab[t.cfg.eosToken]; ok && t.cfg.eosToken != "" {
		add(id)
	}
	if t.chatTemplate != "" {
		for _, s := range endOfTurnTokens {
			if id, ok := t.vocab[s]; ok && t.IsSpecial(id) && strings.Contains(t.chatTemplate, s) && id != t.bos {
				add(id)
			}
		}
	}
	sort.Ints(t.eos[min(1, len(t.eos)):])
}
