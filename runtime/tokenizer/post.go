package tokenizer

import (
	"encoding/json"
	"fmt"
)

// postProcessor adds special tokens around an encoded sequence.
type postProcessor interface {
	process(dst []int, encode func(dst []int) []int) []int
}

// templateProcessor surrounds the sequence with fixed ids (the single
// sequence form of TemplateProcessing, RobertaProcessing and
// BertProcessing).
type templateProcessor struct {
	prefix, suffix []int
}

func (t *templateProcessor) process(dst []int, encode func([]int) []int) []int {
	dst = append(dst, t.prefix...)
	dst = encode(dst)
	return append(dst, t.suffix...)
}

// parsePostProcessor returns nil for processors that add no ids.
func parsePostProcessor(b json.RawMessage, vocab map[string]int) (postProcessor, error) {
	tp, err := parseTemplate(b, vocab)
	if err != nil || tp == nil || len(tp.prefix)+len(tp.suffix) == 0 {
		return nil, err
	}
	return tp, nil
}

func parseTemplate(b json.RawMessage, vocab map[string]int) (*templateProcessor, error) {
	c, typ, err := parseComponent(b)
	if err != nil || c == nil {
		return nil, err
	}
	switch typ {
	case "ByteLevel":
		return nil, nil
	case "Sequence":
		list, err := c.list("processors")
		if err != nil {
			return nil, err
		}
		out := &templateProcessor{}
		for i, x := range list {
			tp, err := parseTemplate(x, vocab)
			if err != nil {
				return nil, fmt.Errorf("processors[%d]: %w", i, err)
			}
			if tp != nil {
				out.prefix = append(append([]int(nil), tp.prefix...), out.prefix...)
				out.suffix = append(out.suffix, tp.suffix...)
			}
		}
		return out, nil
	case "RobertaProcessing", "BertProcessing":
		var f struct {
			Sep [2]json.RawMessage `json:"sep"`
			Cls [2]json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("fields \"cls\"/\"sep\": want [token, id]")
		}
		var cls, sep int
		if err := json.Unmarshal(f.Cls[1], &cls); err != nil {
			return nil, fmt.Errorf("field \"cls\": want [token, id]")
		}
		if err := json.Unmarshal(f.Sep[1], &sep); err != nil {
			return nil, fmt.Errorf("field \"sep\": want [token, id]")
		}
		return &templateProcessor{prefix: []int{cls}, suffix: []int{sep}}, nil
	case "TemplateProcessing":
		var f struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("bad TemplateProcessing: %w", err)
		}
		out := &templateProcessor{}
		seenA := false
		for i, item := range f.Single {
			switch {
			case item.Sequence != nil:
				if item.Sequence.ID == "A" {
					seenA = true
				}
			case item.SpecialToken != nil:
				st, ok := f.SpecialTokens[item.SpecialToken.ID]
				if !ok {
					return nil, fmt.Errorf("single[%d]: special token %q missing from \"special_tokens\"", i, item.SpecialToken.ID)
				}
				if seenA {
					out.suffix = append(out.suffix, st.IDs...)
				} else {
					out.prefix = append(out.prefix, st.IDs...)
				}
			default:
				return nil, fmt.Errorf("single[%d]: want SpecialToken or Sequence", i)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported post-processor type %q", typ)
}
