package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2/v2"
	"golang.org/x/text/unicode/norm"
)

type normalizer interface {
	normalize(s string) string
}

type normSeq []normalizer

func (n normSeq) normalize(s string) string {
	for _, x := range n {
		s = x.normalize(s)
	}
	return s
}

type normPrepend string

func (p normPrepend) normalize(s string) string {
	if s == "" {
		return s
	}
	return string(p) + s
}

type normReplace struct {
	literal string
	re      *regexp2.Regexp
	content string
}

// replace reads a Replace normalizer or decoder: a String or Regex
// pattern and its content.
func (c component) replace() (*normReplace, error) {
	pat, isRegex, err := c.pattern("pattern")
	if err != nil {
		return nil, err
	}
	content, err := c.str("content", "")
	if err != nil {
		return nil, err
	}
	r := &normReplace{literal: pat, content: content}
	if isRegex {
		if r.re, err = compileRegex(pat); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *normReplace) normalize(s string) string {
	if r.re == nil {
		if r.literal == "" {
			return s
		}
		return strings.ReplaceAll(s, r.literal, r.content)
	}
	idx, err := r.re.FindAllStringIndex(s, -1)
	if err != nil || len(idx) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range idx {
		b.WriteString(s[last:m[0]])
		b.WriteString(r.content)
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

type normUnicode struct{ form norm.Form }

func (u normUnicode) normalize(s string) string { return u.form.String(s) }

type normLowercase struct{}

func (normLowercase) normalize(s string) string { return strings.ToLower(s) }

type normStrip struct{ left, right bool }

func (n normStrip) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, isSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, isSpace)
	}
	return s
}

func parseNormalizer(b json.RawMessage) (normalizer, error) {
	c, typ, err := parseComponent(b)
	if err != nil || c == nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		list, err := c.list("normalizers")
		if err != nil {
			return nil, err
		}
		var seq normSeq
		for i, x := range list {
			n, err := parseNormalizer(x)
			if err != nil {
				return nil, fmt.Errorf("normalizers[%d]: %w", i, err)
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		if len(seq) == 1 {
			return seq[0], nil
		}
		return seq, nil
	case "Prepend":
		p, err := c.str("prepend", "")
		return normPrepend(p), err
	case "Replace":
		return c.replace()
	case "NFC":
		return normUnicode{norm.NFC}, nil
	case "NFD":
		return normUnicode{norm.NFD}, nil
	case "NFKC":
		return normUnicode{norm.NFKC}, nil
	case "NFKD":
		return normUnicode{norm.NFKD}, nil
	case "Lowercase":
		return normLowercase{}, nil
	case "Strip":
		l, err := c.boolean("strip_left", true)
		if err != nil {
			return nil, err
		}
		r, err := c.boolean("strip_right", true)
		return normStrip{l, r}, err
	}
	return nil, fmt.Errorf("unsupported normalizer type %q", typ)
}

// compileRegex compiles a tokenizer.json pattern (Oniguruma syntax) with
// regexp2 in its default mode, where \s, \d and \w are Unicode-aware.
func compileRegex(pat string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(pat, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", truncate(pat), err)
	}
	return re, nil
}
