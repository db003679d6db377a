package tokenizer

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

//go:embed demodata/corpus.txt
var demoCorpus string

// Demo special tokens, after the byte tokens and the merges.
var demoSpecials = []string{"<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"}

// DemoChatTemplate is the ChatML template of the demo tokenizer.
const DemoChatTemplate = "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// WriteDemo writes the demo model's tokenizer.json and tokenizer_config.json
// into dir: a byte-level BPE (Llama 3 split pattern) trained
// deterministically on a small embedded English and code corpus, with at
// most vocabSize tokens: the 256 byte tokens, the merges, and the special
// tokens <|begin_of_text|> (BOS), <|end_of_text|>, <|im_start|> and
// <|im_end|> (EOS), in that order. The chat template is ChatML. It returns
// the vocabulary size, which is smaller than vocabSize when every word of
// the corpus is already one token (about 2,000 tokens).
func WriteDemo(dir string, vocabSize int) (int, error) {
	if vocabSize < 256+len(demoSpecials) {
		return 0, fmt.Errorf("write demo tokenizer: vocabulary size %d is below the minimum %d", vocabSize, 256+len(demoSpecials))
	}
	tokens, merges := trainDemo(demoCorpus, vocabSize-len(demoSpecials))
	n := len(tokens) + len(demoSpecials)
	tj, cj := demoJSON(tokens, merges)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("write demo tokenizer: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenizerFile), tj, 0o644); err != nil {
		return 0, fmt.Errorf("write demo tokenizer: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, TokenizerConfigFile), cj, 0o644); err != nil {
		return 0, fmt.Errorf("write demo tokenizer: %w", err)
	}
	return n, nil
}

// trainDemo learns byte-level BPE merges on corpus until the vocabulary
// has size tokens or every word is one token. Ties go to the pair whose
// merged token sorts first, so the result is deterministic.
func trainDemo(corpus string, size int) (tokens []string, merges [][2]int) {
	for b := range 256 {
		tokens = append(tokens, byteLevelUTF8[b])
	}
	index := map[string]int{}
	for i, t := range tokens {
		index[t] = i
	}
	// Words and their counts, in first-seen order.
	counts := map[string]int{}
	var order []string
	for i := 0; i < len(corpus); {
		j := scanLlama3(corpus, i)
		w := corpus[i:j]
		if counts[w] == 0 {
			order = append(order, w)
		}
		counts[w]++
		i = j
	}
	words := make([][]int, len(order))
	freq := make([]int, len(order))
	for k, w := range order {
		for i := 0; i < len(w); i++ {
			words[k] = append(words[k], int(w[i]))
		}
		freq[k] = counts[w]
	}
	for len(tokens) < size {
		pairs := map[[2]int]int{}
		for k, w := range words {
			for i := 0; i+1 < len(w); i++ {
				pairs[[2]int{w[i], w[i+1]}] += freq[k]
			}
		}
		// The most frequent pair; ties (and, once no pair occurs twice, the
		// pairs seen once) go to the merged token that sorts first.
		var best [2]int
		bestN, bestS := 0, ""
		for p, n := range pairs {
			s := tokens[p[0]] + tokens[p[1]]
			if n > bestN || n == bestN && (s < bestS || s == bestS && (p[0] < best[0] || p[0] == best[0] && p[1] < best[1])) {
				best, bestN, bestS = p, n, s
			}
		}
		if bestN == 0 {
			break
		}
		id, ok := index[bestS]
		if !ok {
			id = len(tokens)
			tokens = append(tokens, bestS)
			index[bestS] = id
		}
		merges = append(merges, best)
		for k, w := range words {
			out := w[:0]
			for i := 0; i < len(w); i++ {
				if i+1 < len(w) && w[i] == best[0] && w[i+1] == best[1] {
					out = append(out, id)
					i++
				} else {
					out = append(out, w[i])
				}
			}
			words[k] = out
		}
	}
	return tokens, merges
}

// demoJSON renders tokenizer.json and tokenizer_config.json.
func demoJSON(tokens []string, merges [][2]int) (tj, cj []byte) {
	q := func(s string) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		return strings.TrimSuffix(b.String(), "\n")
	}
	bos := len(tokens)
	var b strings.Builder
	b.WriteString("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [")
	for i, s := range demoSpecials {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "\n    {\"id\": %d, \"content\": %s, \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}", len(tokens)+i, q(s))
	}
	b.WriteString("\n  ],\n  \"normalizer\": null,\n")
	fmt.Fprintf(&b, "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": %s}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},\n", q(patternLlama3))
	fmt.Fprintf(&b, "  \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": %[1]s, \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [{\"SpecialToken\": {\"id\": %[1]s, \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": %[1]s, \"type_id\": 1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], \"special_tokens\": {%[1]s: {\"id\": %[1]s, \"ids\": [%[2]d], \"tokens\": [%[1]s]}}},\n", q(demoSpecials[0]), bos)
	b.WriteString("  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, \"use_regex\": true},\n")
	b.WriteString("  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n    \"vocab\": {")
	for i, s := range tokens {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", q(s), i)
	}
	b.WriteString("},\n    \"merges\": [")
	for i, m := range merges {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "[%s, %s]", q(tokens[m[0]]), q(tokens[m[1]]))
	}
	b.WriteString("]\n  }\n}\n")
	tj = []byte(b.String())

	var c strings.Builder
	c.WriteString("{\n  \"added_tokens_decoder\": {")
	for i, s := range demoSpecials {
		if i > 0 {
			c.WriteString(",")
		}
		fmt.Fprintf(&c, "\n    \"%d\": {\"content\": %s, \"lstrip\": false, \"normalized\": false, \"rstrip\": false, \"single_word\": false, \"special\": true}", len(tokens)+i, q(s))
	}
	c.WriteString("\n  },\n")
	fmt.Fprintf(&c, "  \"bos_token\": %s,\n  \"eos_token\": %s,\n  \"pad_token\": %s,\n", q(demoSpecials[0]), q(demoSpecials[3]), q(demoSpecials[1]))
	fmt.Fprintf(&c, "  \"chat_template\": %s,\n", q(DemoChatTemplate))
	c.WriteString("  \"clean_up_tokenization_spaces\": false,\n  \"model_max_length\": 4096,\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n")
	return tj, []byte(c.String())
}
