package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// useScanners selects the hand-written scanners for the patterns they
// implement (tests and benchmarks turn it off to compare with regexp2).
var useScanners = true

// preTokenizer splits pieces into smaller pieces, appending them to dst.
type preTokenizer interface {
	split(dst, src []piece) []piece
}

// materialize maps byte-level pieces to their unicode form, for the rare
// pre-tokenizer that runs after ByteLevel.
func materialize(p piece) piece {
	if p.byteLevel {
		p.s = byteLevelString(p.s)
		p.byteLevel = false
	}
	return p
}

// Split behaviours.
const (
	behRemoved = iota
	behIsolated
	behMergedWithPrevious
	behMergedWithNext
	behContiguous
)

func parseBehavior(s string) (int, error) {
	switch strings.ToLower(s) {
	case "removed":
		return behRemoved, nil
	case "isolated":
		return behIsolated, nil
	case "mergedwithprevious", "merged_with_previous":
		return behMergedWithPrevious, nil
	case "mergedwithnext", "merged_with_next":
		return behMergedWithNext, nil
	case "contiguous":
		return behContiguous, nil
	}
	return 0, fmt.Errorf("unsupported split behavior %q", s)
}

// span is a part of a piece: a pattern match or the text between matches.
type span struct {
	start, end int
	match      bool
}

// applyBehavior turns matches into pieces the way Hugging Face's
// NormalizedString::split does, appending them to dst.
func applyBehavior(dst []piece, p piece, spans []span, beh int, invert bool) []piece {
	if invert {
		for i := range spans {
			spans[i].match = !spans[i].match
		}
	}
	out := spans[:0:0]
	switch beh {
	case behIsolated:
		out = spans
	case behRemoved:
		for _, s := range spans {
			if !s.match {
				out = append(out, s)
			}
		}
	case behMergedWithPrevious:
		prev := false
		for _, s := range spans {
			if s.match && !prev && len(out) > 0 {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, s)
			}
			prev = s.match
		}
	case behMergedWithNext:
		prev := false
		for k := len(spans) - 1; k >= 0; k-- {
			s := spans[k]
			if s.match && !prev && len(out) > 0 {
				out[len(out)-1].start = s.start
			} else {
				out = append(out, s)
			}
			prev = s.match
		}
		for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
			out[a], out[b] = out[b], out[a]
		}
	case behContiguous:
		prev := false
		for k, s := range spans {
			if k > 0 && s.match == prev {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, s)
			}
			prev = s.match
		}
	}
	for _, s := range out {
		if s.end > s.start {
			dst = append(dst, piece{s: p.s[s.start:s.end], first: p.first && s.start == 0})
		}
	}
	return dst
}

// splitPre is the Split pre-tokenizer.
type splitPre struct {
	scan     scanner         // hand-written matcher, or
	re       *regexp2.Regexp // a regular expression, or
	literal  string          // a literal string
	behavior int
	invert   bool
}

func (sp *splitPre) split(dst, src []piece) []piece {
	for _, p := range src {
		p = materialize(p)
		if sp.scan != nil && (sp.behavior == behIsolated || sp.behavior == behRemoved && sp.invert) {
			// Fast path: the scanner leaves no gaps, so every match is a
			// piece, whether isolated or kept by removing the gaps
			// (GPT-4o's Removed with invert).
			for i := 0; i < len(p.s); {
				j := sp.scan(p.s, i)
				dst = append(dst, piece{s: p.s[i:j], first: p.first && i == 0})
				i = j
			}
			continue
		}
		if sp.literal != "" && !sp.invert && !strings.Contains(p.s, sp.literal) {
			// No match: the piece as it is, whatever the behavior (Gemma's
			// split on " " after its normalizer replaced every space).
			dst = append(dst, p)
			continue
		}
		dst = applyBehavior(dst, p, sp.spans(p.s), sp.behavior, sp.invert)
	}
	return dst
}

// spans returns the matches of the pattern in s and the gaps between them.
func (sp *splitPre) spans(s string) []span {
	var spans []span
	last := 0
	add := func(a, b int) {
		if a > last {
			spans = append(spans, span{last, a, false})
		}
		spans = append(spans, span{a, b, true})
		last = b
	}
	switch {
	case sp.scan != nil:
		for i := 0; i < len(s); {
			j := sp.scan(s, i)
			add(i, j)
			i = j
		}
	case sp.re != nil:
		idx, err := sp.re.FindAllStringIndex(s, -1)
		if err == nil {
			for _, m := range idx {
				add(m[0], m[1])
			}
		}
	case sp.literal != "":
		for i := 0; i < len(s); {
			k := strings.Index(s[i:], sp.literal)
			if k < 0 {
				break
			}
			add(i+k, i+k+len(sp.literal))
			i += k + len(sp.literal)
		}
	}
	if last < len(s) {
		spans = append(spans, span{last, len(s), false})
	}
	return spans
}

// charSplit splits on runes for which pred is true, each such rune a match.
type charSplit struct {
	pred     func(r rune) bool
	behavior int
	invert   bool
}

func (cs *charSplit) split(dst, src []piece) []piece {
	for _, p := range src {
		p = materialize(p)
		var spans []span
		last := 0
		for i, r := range p.s {
			if cs.pred(r) {
				if i > last {
					spans = append(spans, span{last, i, false})
				}
				n := utf8.RuneLen(r)
				if r == utf8.RuneError {
					n = 1
				}
				spans = append(spans, span{i, i + n, true})
				last = i + n
			}
		}
		if last < len(p.s) {
			spans = append(spans, span{last, len(p.s), false})
		}
		dst = applyBehavior(dst, p, spans, cs.behavior, cs.invert)
	}
	return dst
}

// byteLevelPre is the ByteLevel pre-tokenizer: an optional prefix space, the
// GPT-2 split, and the byte-to-unicode mapping (done lazily by the model).
type byteLevelPre struct {
	addPrefixSpace bool
	useRegex       bool
}

func (b *byteLevelPre) split(dst, src []piece) []piece {
	for _, p := range src {
		p = materialize(p)
		if b.addPrefixSpace && !strings.HasPrefix(p.s, " ") {
			p.s = " " + p.s
		}
		if !b.useRegex {
			p.byteLevel = true
			dst = append(dst, p)
			continue
		}
		for i := 0; i < len(p.s); {
			j := scanGPT2(p.s, i)
			dst = append(dst, piece{s: p.s[i:j], first: p.first && i == 0, byteLevel: true})
			i = j
		}
	}
	return dst
}

// metaspacePre replaces spaces with the replacement character, prepends it
// per the prepend scheme, and optionally splits before each replacement.
type metaspacePre struct {
	replacement string
	prepend     string // "always", "first" or "never"
	doSplit     bool
}

func (m *metaspacePre) split(dst, src []piece) []piece {
	for _, p := range src {
		p = materialize(p)
		s := strings.ReplaceAll(p.s, " ", m.replacement)
		if !strings.HasPrefix(s, m.replacement) && (m.prepend == "always" || m.prepend == "first" && p.first) {
			s = m.replacement + s
		}
		if !m.doSplit {
			dst = append(dst, piece{s: s, first: p.first})
			continue
		}
		// MergedWithNext on the replacement character.
		start := 0
		for i := 0; i < len(s); {
			k := strings.Index(s[i:], m.replacement)
			if k < 0 {
				break
			}
			if i+k > start {
				dst = append(dst, piece{s: s[start : i+k], first: p.first && start == 0})
				start = i + k
			}
			i += k + len(m.replacement)
		}
		if start < len(s) {
			dst = append(dst, piece{s: s[start:], first: p.first && start == 0})
		}
	}
	return dst
}

func isPunct(r rune) bool {
	return unicode.IsPunct(r) || (r < 128 && unicode.IsSymbol(r))
}

func parsePreTokenizer(b json.RawMessage, dst []preTokenizer) ([]preTokenizer, error) {
	c, typ, err := parseComponent(b)
	if err != nil || c == nil {
		return dst, err
	}
	switch typ {
	case "Sequence":
		list, err := c.list("pretokenizers")
		if err != nil {
			return nil, err
		}
		for i, x := range list {
			if dst, err = parsePreTokenizer(x, dst); err != nil {
				return nil, fmt.Errorf("pretokenizers[%d]: %w", i, err)
			}
		}
		return dst, nil
	case "Split":
		pat, isRegex, err := c.pattern("pattern")
		if err != nil {
			return nil, err
		}
		behS, err := c.str("behavior", "Isolated")
		if err != nil {
			return nil, err
		}
		sp := &splitPre{}
		if sp.behavior, err = parseBehavior(behS); err != nil {
			return nil, err
		}
		if sp.invert, err = c.boolean("invert", false); err != nil {
			return nil, err
		}
		switch {
		case !isRegex:
			sp.literal = pat
		case useScanners && knownScanner(pat) != nil:
			sp.scan = knownScanner(pat)
		default:
			if sp.re, err = compileRegex(pat); err != nil {
				return nil, err
			}
		}
		return append(dst, sp), nil
	case "ByteLevel":
		bl := &byteLevelPre{}
		if bl.addPrefixSpace, err = c.boolean("add_prefix_space", true); err != nil {
			return nil, err
		}
		if bl.useRegex, err = c.boolean("use_regex", true); err != nil {
			return nil, err
		}
		return append(dst, bl), nil
	case "Metaspace":
		m := &metaspacePre{}
		if m.replacement, err = c.str("replacement", "▁"); err != nil {
			return nil, err
		}
		if m.replacement == "" {
			return nil, fmt.Errorf("field \"replacement\": empty")
		}
		if m.doSplit, err = c.boolean("split", true); err != nil {
			return nil, err
		}
		if m.prepend, err = c.str("prepend_scheme", ""); err != nil {
			return nil, err
		}
		if m.prepend == "" {
			add, err := c.boolean("add_prefix_space", true)
			if err != nil {
				return nil, err
			}
			m.prepend = map[bool]string{true: "always", false: "never"}[add]
		}
		switch m.prepend {
		case "always", "first", "never":
		default:
			return nil, fmt.Errorf("field \"prepend_scheme\": unsupported value %q", m.prepend)
		}
		return append(dst, m), nil
	case "Digits":
		ind, err := c.boolean("individual_digits", false)
		if err != nil {
			return nil, err
		}
		beh := behContiguous
		if ind {
			beh = behIsolated
		}
		return append(dst, &charSplit{pred: func(r rune) bool { return '0' <= r && r <= '9' }, behavior: beh}), nil
	case "WhitespaceSplit":
		return append(dst, &charSplit{pred: unicode.IsSpace, behavior: behRemoved}), nil
	case "Whitespace":
		re, err := compileRegex(`\w+|[^\w\s]+`)
		if err != nil {
			return nil, err
		}
		return append(dst, &splitPre{re: re, behavior: behRemoved, invert: true}), nil
	case "Punctuation":
		behS, err := c.str("behavior", "Isolated")
		if err != nil {
			return nil, err
		}
		beh, err := parseBehavior(behS)
		if err != nil {
			return nil, err
		}
		return append(dst, &charSplit{pred: isPunct, behavior: beh}), nil
	case "BertPreTokenizer":
		return append(dst,
			&charSplit{pred: unicode.IsSpace, behavior: behRemoved},
			&charSplit{pred: isPunct, behavior: behIsolated}), nil
	}
	return nil, fmt.Errorf("unsupported pre-tokenizer type %q", typ)
}
