package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// config is what tokenizer_config.json contributes.
type config struct {
	bosToken, eosToken, unkToken, padToken string
	addBOS, addEOS                         *bool
	legacy                                 *bool
	addPrefixSpace                         *bool
	tokenizerClass                         string
	chatTemplate                           string
	chatTemplates                          map[string]string
}

func parseConfig(b []byte) (config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return config{}, fmt.Errorf("not a JSON object: %w", err)
	}
	var c config
	var err error
	tokenField := func(name string, dst *string) {
		if err != nil {
			return
		}
		if v, ok := raw[name]; ok {
			*dst, err = parseTokenField(v)
			if err != nil {
				err = fmt.Errorf("field %q: %w", name, err)
			}
		}
	}
	tokenField("bos_token", &c.bosToken)
	tokenField("eos_token", &c.eosToken)
	tokenField("unk_token", &c.unkToken)
	tokenField("pad_token", &c.padToken)
	boolField := func(name string, dst **bool) {
		if err != nil {
			return
		}
		if v, ok := raw[name]; ok && string(v) != "null" {
			var x bool
			if e := json.Unmarshal(v, &x); e != nil {
				err = fmt.Errorf("field %q: want true or false, got %s", name, v)
				return
			}
			*dst = &x
		}
	}
	boolField("add_bos_token", &c.addBOS)
	boolField("add_eos_token", &c.addEOS)
	boolField("legacy", &c.legacy)
	boolField("add_prefix_space", &c.addPrefixSpace)
	if err != nil {
		return c, err
	}
	if v, ok := raw["tokenizer_class"]; ok && string(v) != "null" {
		if e := json.Unmarshal(v, &c.tokenizerClass); e != nil {
			return c, fmt.Errorf("field \"tokenizer_class\": want a string, got %s", v)
		}
	}
	if v, ok := raw["chat_template"]; ok && string(v) != "null" {
		if e := json.Unmarshal(v, &c.chatTemplate); e != nil {
			var list []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if e2 := json.Unmarshal(v, &list); e2 != nil {
				return c, fmt.Errorf("field \"chat_template\": want a string or a list of {name, template}")
			}
			c.chatTemplates = map[string]string{}
			for _, t := range list {
				c.chatTemplates[t.Name] = t.Template
			}
			c.chatTemplate = c.chatTemplates["default"]
		}
	}
	return c, nil
}

// parseTokenField reads a special-token field: a string, null or an
// object with "content".
func parseTokenField(v json.RawMessage) (string, error) {
	if string(v) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(v, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("want a string or an object with \"content\", got %s", truncate(string(v)))
	}
	return *obj.Content, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// fileJSON is the top level of tokenizer.json.
type fileJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	Model         json.RawMessage  `json:"model"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
}

type addedTokenJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

// component is the common shape of normalizers, pre-tokenizers,
// post-processors and decoders: a "type" plus fields.
type component map[string]json.RawMessage

func parseComponent(b json.RawMessage) (component, string, error) {
	if len(b) == 0 || string(b) == "null" {
		return nil, "", nil
	}
	var c component
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, "", fmt.Errorf("want an object, got %s", truncate(string(b)))
	}
	var typ string
	if err := json.Unmarshal(c["type"], &typ); err != nil {
		return nil, "", fmt.Errorf("missing or bad \"type\" in %s", truncate(string(b)))
	}
	return c, typ, nil
}

func (c component) str(name, def string) (string, error) {
	v, ok := c[name]
	if !ok || string(v) == "null" {
		return def, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("field %q: want a string, got %s", name, truncate(string(v)))
	}
	return s, nil
}

func (c component) boolean(name string, def bool) (bool, error) {
	v, ok := c[name]
	if !ok || string(v) == "null" {
		return def, nil
	}
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		return false, fmt.Errorf("field %q: want true or false, got %s", name, truncate(string(v)))
	}
	return b, nil
}

func (c component) integer(name string, def int) (int, error) {
	v, ok := c[name]
	if !ok || string(v) == "null" {
		return def, nil
	}
	var n int
	if err := json.Unmarshal(v, &n); err != nil || n < 0 {
		return 0, fmt.Errorf("field %q: want a non-negative integer, got %s", name, truncate(string(v)))
	}
	return n, nil
}

func (c component) list(name string) ([]json.RawMessage, error) {
	v, ok := c[name]
	if !ok || string(v) == "null" {
		return nil, nil
	}
	var l []json.RawMessage
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, fmt.Errorf("field %q: want a list, got %s", name, truncate(string(v)))
	}
	return l, nil
}

// pattern reads {"String": "..."} or {"Regex": "..."}.
func (c component) pattern(name string) (s string, isRegex bool, err error) {
	var p struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	}
	if err := json.Unmarshal(c[name], &p); err != nil {
		return "", false, fmt.Errorf("field %q: want {\"String\": …} or {\"Regex\": …}", name)
	}
	switch {
	case p.Regex != nil:
		return *p.Regex, true, nil
	case p.String != nil:
		return *p.String, false, nil
	}
	return "", false, fmt.Errorf("field %q: want {\"String\": …} or {\"Regex\": …}", name)
}

// build assembles a Tokenizer from tokenizer.json and the parsed config.
func build(b []byte, cfg config) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	t := &Tokenizer{cfg: cfg, chatTemplate: cfg.chatTemplate}
	var err error
	if t.model, err = parseModel(f.Model); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	t.vocab = make(map[string]int, len(t.model.vocab)+len(f.AddedTokens))
	maxID := -1
	for s, id := range t.model.vocab {
		t.vocab[s] = id
		maxID = max(maxID, id)
	}
	for i, a := range f.AddedTokens {
		if a.ID == nil || *a.ID < 0 {
			return nil, fmt.Errorf("added_tokens[%d]: missing or negative \"id\"", i)
		}
		if a.Content == "" {
			return nil, fmt.Errorf("added_tokens[%d]: empty \"content\"", i)
		}
		if *a.ID > 1<<24 {
			return nil, fmt.Errorf("added_tokens[%d]: id %d is too large", i, *a.ID)
		}
		maxID = max(maxID, *a.ID)
	}
	t.idToTok = make([]string, maxID+1)
	t.special = make([]bool, maxID+1)
	for s, id := range t.model.vocab {
		t.idToTok[id] = s
	}
	for _, a := range f.AddedTokens {
		t.idToTok[*a.ID] = a.Content
		t.vocab[a.Content] = *a.ID
		t.special[*a.ID] = a.Special
	}
	if t.normalizer, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	t.added = newAddedVocab(f.AddedTokens, t.normalizer)
	if t.pre, err = parsePreTokenizer(f.PreTokenizer, nil); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if t.post, err = parsePostProcessor(f.PostProcessor, t.vocab); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	t.post = t.configPostProcessor(t.post)
	t.configPrefixSpace()
	if t.decoder, err = parseDecoder(f.Decoder, nil); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	t.resolveSpecialIDs()
	return t, nil
}

// configPrefixSpace applies tokenizer_config.json's add_prefix_space to the
// ByteLevel pre-tokenizers of the GPT-2 family of tokenizer classes, as
// their transformers constructors do. (Llama-style classes would need the
// SentencePiece model to rebuild the pipeline; tokenizer.json is used as
// is for them, as is "legacy".)
func (t *Tokenizer) configPrefixSpace() {
	if t.cfg.addPrefixSpace == nil {
		return
	}
	switch strings.TrimSuffix(t.cfg.tokenizerClass, "Fast") {
	case "GPT2Tokenizer", "RobertaTokenizer", "BartTokenizer", "CodeGenTokenizer", "GPTNeoXTokenizer", "LongformerTokenizer":
	default:
		return
	}
	for _, p := range t.pre {
		if bl, ok := p.(*byteLevelPre); ok {
			bl.addPrefixSpace = *t.cfg.addPrefixSpace
		}
	}
}

// configPostProcessor applies tokenizer_config.json's add_bos_token and
// add_eos_token the way transformers' Llama and Gemma fast tokenizers do:
// they rebuild the post-processor as [BOS] A [EOS]. Other tokenizer classes
// keep tokenizer.json's post-processor.
func (t *Tokenizer) configPostProcessor(p postProcessor) postProcessor {
	switch strings.TrimSuffix(t.cfg.tokenizerClass, "Fast") {
	case "LlamaTokenizer", "CodeLlamaTokenizer", "GemmaTokenizer":
	default:
		return p
	}
	if t.cfg.addBOS == nil && t.cfg.addEOS == nil {
		return p
	}
	var tp templateProcessor
	if t.cfg.addBOS == nil || *t.cfg.addBOS {
		if id, ok := t.vocab[t.cfg.bosToken]; ok && t.cfg.bosToken != "" {
			tp.prefix = []int{id}
		}
	}
	if t.cfg.addEOS != nil && *t.cfg.addEOS {
		if id, ok := t.vocab[t.cfg.eosToken]; ok && t.cfg.eosToken != "" {
			tp.suffix = []int{id}
		}
	}
	return &tp
}
