package grammar

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A string with "pattern" (or one of the formats written as a pattern) is
// read by a dfa: a deterministic automaton over the bytes of the string's
// decoded UTF-8 text, built when the schema is compiled. Its states fold in
// what the string must also satisfy — a search for the pattern anywhere in
// the text, as JSON Schema's "pattern" means, and "minLength" and
// "maxLength" counted in code points — and it keeps only the states from
// which an accepted end can still be reached over characters a JSON string
// can carry, so that a machine reading through it never meets a dead end.

// MaxPatternStates is the most states a pattern's automaton may have
// (with its length limits folded in); a larger one is refused.
const MaxPatternStates = 4096

// MaxPatternBytes is the longest "pattern" a schema may give.
const MaxPatternBytes = 1024

// MaxRegexBytes is the longest pattern CompileRegex takes (a choice's
// options are one pattern).
const MaxRegexBytes = 16 << 10

// maxPatternWork bounds the work of building one automaton (NFA nodes
// visited), so that a schema's compile stays within milliseconds.
const maxPatternWork = 8 << 20

// maxPatternSeqs bounds the byte sequences of a pattern's characters
// (\p{L} alone has about 1,500).
const maxPatternSeqs = 1 << 16

// dfa is a compiled pattern. State numbers are uint16; -1 is no state.
type dfa struct {
	class  [256]uint8 // a byte's class
	nclass int
	next   []int16 // state·nclass + class → state or -1
	accept []bool  // the text read so far is a whole match
	esc    []bool  // some escape (\" \\ \/ \b \f \n \r \t) may come next
	free   []bool  // any plain character keeps the state (mask.go's plainText)
	start  uint16
}

func (d *dfa) step(st uint16, b byte) int16 {
	return d.next[int(st)*d.nclass+int(d.class[b])]
}

// multiByte are the byte-range sequences of every character past ASCII.
var multiByte = func() (seqs [][][2]byte) {
	utf8Ranges(utf8.RuneSelf, utf8.MaxRune, func(seq [][2]byte) { seqs = append(seqs, seq) })
	return seqs
}()

// loops reports whether every plain character (a whole UTF-8 character,
// not a quote, a backslash or a control) takes state st back to itself.
func (d *dfa) loops(st uint16) bool {
	for b := byte(0x20); b < utf8.RuneSelf; b++ {
		if b != '"' && b != '\\' && d.step(st, b) != int16(st) {
			return false
		}
	}
	for _, seq := range multiByte {
		at := []uint16{st}
		for _, r := range seq {
			var next []uint16
			for _, s := range at {
				for c := d.class[r[0]]; c <= d.class[r[1]]; c++ {
					t := d.next[int(s)*d.nclass+int(c)]
					if t < 0 {
						return false
					}
					if !slices.Contains(next, uint16(t)) {
						next = append(next, uint16(t))
					}
				}
			}
			at = next
		}
		if len(at) != 1 || at[0] != st {
			return false
		}
	}
	return true
}

// escaped maps the letter after a backslash in a JSON string to the byte
// it stands for (\u escapes are not taken in a pattern's string).
func escaped(b byte) (byte, bool) {
	switch b {
	case '"', '\\', '/':
		return b, true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	}
	return 0, false
}

// writable reports whether a byte of the decoded text can be written in a
// JSON string without a \u escape.
func writable(b byte) bool {
	return b >= 0x20 || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t'
}

// ecmaSpace is ECMA-262's \s.
const ecmaSpace = `\t\n\v\f\r \x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}\x{feff}`

// ecmaToGo rewrites an ECMA-262 regular expression (the dialect of JSON
// Schema's "pattern") into Go's syntax with the same meaning, refusing
// what either has and the other lacks: lookaround, backreferences, word
// boundaries, inline flags.
func ecmaToGo(p string) (string, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\':
			if i+1 == len(p) {
				return "", errors.New("a trailing backslash")
			}
			i++
			e := p[i]
			switch {
			case strings.IndexByte(`dDwWtnrfv`, e) >= 0:
				b.WriteByte('\\')
				b.WriteByte(e)
			case e == 's':
				if inClass {
					b.WriteString(ecmaSpace)
				} else {
					b.WriteString("[" + ecmaSpace + "]")
				}
			case e == 'S':
				if inClass {
					return "", errors.New(`\S inside a class is not supported`)
				}
				b.WriteString("[^" + ecmaSpace + "]")
			case e == 'b' && inClass:
				b.WriteString(`\x08`)
			case e == 'b' || e == 'B':
				return "", errors.New(`word boundaries (\b, \B) are not supported`)
			case e == '0' && (i+1 == len(p) || !isDigit(p[i+1])):
				b.WriteString(`\x00`)
			case e >= '1' && e <= '9', e == 'k':
				return "", errors.New("backreferences are not supported")
			case e == 'x':
				if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
					return "", errors.New(`\x needs two hex digits`)
				}
				b.WriteString(`\x` + p[i+1:i+3])
				i += 2
			case e == 'u':
				r, n, err := ecmaUnicodeEscape(p[i-1:])
				if err != nil {
					return "", err
				}
				fmt.Fprintf(&b, `\x{%x}`, r)
				i += n - 2
			case e == 'c':
				if i+1 == len(p) || !(p[i+1]|0x20 >= 'a' && p[i+1]|0x20 <= 'z') {
					return "", errors.New(`\c needs a letter`)
				}
				fmt.Fprintf(&b, `\x%02x`, p[i+1]%32)
				i++
			case e == 'p' || e == 'P':
				b.WriteByte('\\')
				b.WriteByte(e) // Go reads \p{Name} and refuses what it lacks
			case e < utf8.RuneSelf && strings.IndexByte(`^$\.*+?()[]{}|/-`, e) >= 0:
				b.WriteByte('\\')
				b.WriteByte(e)
			default:
				return "", fmt.Errorf("the escape \\%c is not supported", e)
			}
		case inClass:
			switch c {
			case ']':
				inClass = false
				b.WriteByte(c)
			case '[':
				b.WriteString(`\[`)
			default:
				b.WriteByte(c)
			}
		case c == '[':
			switch {
			case strings.HasPrefix(p[i:], "[]"):
				b.WriteString(`[^\x00-\x{10ffff}]`) // matches nothing
				i++
			case strings.HasPrefix(p[i:], "[^]"):
				b.WriteString(`[\x00-\x{10ffff}]`) // any character
				i += 2
			default:
				inClass = true
				b.WriteByte(c)
				if i+1 < len(p) && p[i+1] == '^' {
					b.WriteByte('^')
					i++
				}
			}
		case c == '.':
			b.WriteString(`[^\n\r\x{2028}\x{2029}]`)
		case c == '(' && i+1 < len(p) && p[i+1] == '?':
			rest := p[i+2:]
			switch {
			case strings.HasPrefix(rest, ":"):
				b.WriteString("(?:")
				i += 2
			case strings.HasPrefix(rest, "<=") || strings.HasPrefix(rest, "<!") ||
				strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, "!"):
				return "", errors.New("lookahead and lookbehind are not supported")
			case strings.HasPrefix(rest, "<"):
				b.WriteString("(?P<") // a named group
				i += 2
			default:
				return "", errors.New("inline flags are not supported")
			}
		default:
			b.WriteByte(c)
		}
	}
	if inClass {
		return "", errors.New("a class without its closing ]")
	}
	return b.String(), nil
}

// ecmaUnicodeEscape reads \uXXXX at the start of s (a surrogate pair's two
// escapes as one character); n is the bytes read.
func ecmaUnicodeEscape(s string) (r rune, n int, err error) {
	hex4 := func(s string) (rune, bool) {
		if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(s[2:6], 16, 16)
		return rune(v), err == nil
	}
	r, ok := hex4(s)
	if !ok {
		return 0, 0, errors.New(`\u needs four hex digits`)
	}
	if r < 0xD800 || r > 0xDFFF {
		return r, 6, nil
	}
	if lo, ok := hex4(s[6:]); ok && r < 0xDC00 && lo >= 0xDC00 && lo <= 0xDFFF {
		return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), 12, nil
	}
	return 0, 0, errors.New("a lone surrogate escape")
}

// patternRegexp parses an ECMA-262 pattern into Go's syntax tree.
func patternRegexp(p string) (*syntax.Regexp, error) {
	g, err := ecmaToGo(p)
	if err != nil {
		return nil, err
	}
	re, err := syntax.Parse(g, syntax.Perl)
	if err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s", se.Code)
		}
		return nil, err
	}
	return re, nil
}

// nfa node kinds
const (
	nEps   uint8 = iota // epsilon edges to out
	nBegin              // the text's beginning, then out[0]
	nEnd                // the text's end, then out[0]
	nMatch
	nByte // byte edges
)

type nfaNode struct {
	kind  uint8
	out   []int32
	edges []bedge
}

type bedge struct {
	lo, hi byte
	to     int32
}

// byteNFA turns a program over runes into an automaton over UTF-8 bytes.
func byteNFA(prog *syntax.Prog) ([]nfaNode, error) {
	nodes := make([]nfaNode, len(prog.Inst))
	suffixes := map[suffixKey]int32{}
	seqs := 0                             // byte sequences added, bounded
	classSeqs := map[string][][][2]byte{} // a class's sequences
	for pc, in := range prog.Inst {
		n := &nodes[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			n.kind, n.out = nEps, []int32{int32(in.Out), int32(in.Arg)}
		case syntax.InstCapture, syntax.InstNop:
			n.kind, n.out = nEps, []int32{int32(in.Out)}
		case syntax.InstFail:
			n.kind = nEps
		case syntax.InstMatch:
			n.kind = nMatch
		case syntax.InstEmptyWidth:
			switch syntax.EmptyOp(in.Arg) {
			case syntax.EmptyBeginText:
				n.kind = nBegin
			case syntax.EmptyEndText:
				n.kind = nEnd
			default:
				return nil, errors.New("only ^ and $ at the text's ends are supported")
			}
			n.out = []int32{int32(in.Out)}
		default:
			var ranges []rune
			switch in.Op {
			case syntax.InstRune1:
				ranges = []rune{in.Rune[0], in.Rune[0]}
			case syntax.InstRuneAny:
				ranges = []rune{0, utf8.MaxRune}
			case syntax.InstRuneAnyNotNL:
				ranges = []rune{0, '\n' - 1, '\n' + 1, utf8.MaxRune}
			default:
				if syntax.Flags(in.Arg)&syntax.FoldCase != 0 {
					return nil, errors.New("case folding is not supported")
				}
				ranges = in.Rune
				if len(ranges) == 1 {
					ranges = []rune{ranges[0], ranges[0]}
				}
			}
			n.kind = nByte
			key := fmt.Sprint(ranges)
			list, ok := classSeqs[key]
			if !ok {
				for i := 0; i+1 < len(ranges); i += 2 {
					utf8Ranges(ranges[i], ranges[i+1], func(seq [][2]byte) { list = append(list, seq) })
				}
				classSeqs[key] = list
			}
			if seqs += len(list); seqs > maxPatternSeqs {
				return nil, errors.New("too complex to compile")
			}
			for _, seq := range list {
				addSeq(&nodes, suffixes, int32(pc), seq, int32(in.Out))
			}
		}
	}
	return nodes, nil
}

// suffixKey names the node that reads a byte range and goes on to a node.
type suffixKey struct {
	lo, hi byte
	to     int32
}

// addSeq adds edges from node from over a sequence of byte ranges to node
// to; the nodes inside a character are shared by every sequence with the
// same rest, so that equal continuations are one set of states.
func addSeq(nodes *[]nfaNode, suffixes map[suffixKey]int32, from int32, seq [][2]byte, to int32) {
	for j := len(seq) - 1; j > 0; j-- {
		k := suffixKey{seq[j][0], seq[j][1], to}
		n, ok := suffixes[k]
		if !ok {
			*nodes = append(*nodes, nfaNode{kind: nByte, edges: []bedge{{k.lo, k.hi, to}}})
			n = int32(len(*nodes) - 1)
			suffixes[k] = n
		}
		to = n
	}
	(*nodes)[from].edges = append((*nodes)[from].edges, bedge{seq[0][0], seq[0][1], to})
}

// utf8Ranges calls emit with byte-range sequences whose UTF-8 strings are
// exactly the encodings of the code points lo to hi (surrogates left out).
func utf8Ranges(lo, hi rune, emit func([][2]byte)) {
	if hi > utf8.MaxRune {
		hi = utf8.MaxRune
	}
	if lo > hi {
		return
	}
	if lo <= 0xDFFF && hi >= 0xD800 { // surrogates have no encoding
		if lo < 0xD800 {
			utf8Ranges(lo, 0xD7FF, emit)
		}
		if hi > 0xDFFF {
			utf8Ranges(0xE000, hi, emit)
		}
		return
	}
	for _, max := range []rune{0x7F, 0x7FF, 0xFFFF} { // one encoded length at a time
		if lo <= max && hi > max {
			utf8Ranges(lo, max, emit)
			utf8Ranges(max+1, hi, emit)
			return
		}
	}
	if hi < utf8.RuneSelf {
		emit([][2]byte{{byte(lo), byte(hi)}})
		return
	}
	n := utf8.RuneLen(lo)
	for i := 1; i < n; i++ { // split until every byte position is one range
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				utf8Ranges(lo, lo|m, emit)
				utf8Ranges((lo|m)+1, hi, emit)
				return
			}
			if hi&m != m {
				utf8Ranges(lo, hi&^m-1, emit)
				utf8Ranges(hi&^m, hi, emit)
				return
			}
		}
	}
	var a, b [4]byte
	utf8.EncodeRune(a[:], lo)
	utf8.EncodeRune(b[:], hi)
	seq := make([][2]byte, n)
	for i := range seq {
		seq[i] = [2]byte{a[i], b[i]}
	}
	emit(seq)
}

// compilePattern builds the automaton of strings that contain a match of
// pattern (or, anchored, are one) with minLen to maxLen code points
// (maxLen -1: no limit); maxStates bounds its size.
func compilePattern(pattern string, anchored bool, minLen, maxLen, maxStates int) (*dfa, error) {
	re, err := patternRegexp(pattern)
	if err != nil {
		return nil, err
	}
	if !anchored { // a search: anything before the match (and after it: determinize)
		any := &syntax.Regexp{Op: syntax.OpStar, Sub: []*syntax.Regexp{{Op: syntax.OpAnyChar}}}
		re = &syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{any, re}}
	} else {
		re = &syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{{Op: syntax.OpBeginText}, re, {Op: syntax.OpEndText}}}
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, err
	}
	nodes, err := byteNFA(prog)
	if err != nil {
		return nil, err
	}
	done := int32(-1)
	if !anchored {
		done = anyLoop(&nodes)
	}
	return determinize(nodes, int32(prog.Start), done, minLen, maxLen, maxStates)
}

// anyLoop adds a node that reads any character and comes back to itself:
// once a search has found its match, the rest of the text is free.
func anyLoop(nodes *[]nfaNode) int32 {
	*nodes = append(*nodes, nfaNode{kind: nByte})
	loop := int32(len(*nodes) - 1)
	suffixes := map[suffixKey]int32{}
	utf8Ranges(0, utf8.MaxRune, func(seq [][2]byte) { addSeq(nodes, suffixes, loop, seq, loop) })
	return loop
}

// determinize is the subset construction over byte classes, with a count
// of code points read folded into each state: up to maxLen, or minLen
// without a limit. With done (a search's free rest, or -1), a set that
// holds a match becomes done's.
func determinize(nodes []nfaNode, start, done int32, minLen, maxLen, maxStates int) (*dfa, error) {
	d := &dfa{}
	// byte classes: bytes no edge tells apart share one
	var cut [257]bool
	cut[0], cut[256] = true, true
	for _, b := range []int{0x20, 0x80, 0xC0} { // controls; UTF-8 leads
		cut[b] = true
	}
	for _, b := range []int{'\b', '\t', '\n', '\f', '\r'} {
		cut[b], cut[b+1] = true, true
	}
	for _, n := range nodes {
		for _, e := range n.edges {
			cut[e.lo], cut[int(e.hi)+1] = true, true
		}
	}
	var rep []byte // a byte of each class
	for b := 0; b < 256; b++ {
		if cut[b] {
			rep = append(rep, byte(b))
		}
		d.class[b] = uint8(len(rep) - 1)
	}
	d.nclass = len(rep)

	type dstate struct {
		set   []int32
		count int
	}
	var states []dstate
	index := map[string]int{}
	var key []byte
	seen := make([]uint32, len(nodes))
	epoch := uint32(0)
	work := 0 // nodes visited, bounded
	// reach walks the epsilon edges from the nodes of from (the text's
	// beginning too with atStart, its end with atEnd), calling visit with
	// each node that reads or tests something; visit true stops the walk.
	reach := func(from []int32, atStart, atEnd bool, visit func(int32) bool) bool {
		epoch++
		stack := append([]int32(nil), from...)
		work += len(from)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[i] == epoch {
				continue
			}
			seen[i] = epoch
			n := &nodes[i]
			switch {
			case n.kind == nEps, n.kind == nBegin && atStart, n.kind == nEnd && atEnd:
				stack = append(stack, n.out...)
			case n.kind == nBegin:
			default:
				if visit(i) {
					return true
				}
			}
		}
		return false
	}
	// closure keeps the nodes that read or test something, in order
	closure := func(from []int32, atStart bool) []int32 {
		var out []int32
		reach(from, atStart, false, func(i int32) bool { out = append(out, i); return false })
		slices.Sort(out)
		if done >= 0 && slices.ContainsFunc(out, func(i int32) bool { return nodes[i].kind == nMatch }) {
			return []int32{done}
		}
		return out
	}
	// matchAtEnd: the text may end here
	matchAtEnd := func(set []int32, atStart bool) bool {
		return reach(set, atStart, true, func(i int32) bool { return nodes[i].kind == nMatch })
	}
	add := func(set []int32, count int, first bool) (int, error) {
		found := len(set) == 1 && set[0] == done
		first = first && !found // the text's start matters no more
		key = key[:0]
		if first {
			key = append(key, 1)
		}
		key = strconv.AppendInt(key, int64(count), 10)
		for _, i := range set {
			key = append(key, ',')
			key = strconv.AppendInt(key, int64(i), 10)
		}
		if id, ok := index[string(key)]; ok {
			return id, nil
		}
		if len(states) >= maxStates {
			return 0, fmt.Errorf("more than %d states (with its length limits)", maxStates)
		}
		states = append(states, dstate{set, count})
		index[string(key)] = len(states) - 1
		d.accept = append(d.accept, count >= minLen && (found || matchAtEnd(set, first)))
		return len(states) - 1, nil
	}
	if _, err := add(closure([]int32{start}, true), 0, true); err != nil {
		return nil, err
	}
	buckets := make([][]int32, d.nclass) // each class's targets from a state
	for s := 0; s < len(states); s++ {
		for c := range buckets {
			buckets[c] = buckets[c][:0]
		}
		for _, i := range states[s].set {
			for _, e := range nodes[i].edges {
				for c := d.class[e.lo]; c <= d.class[e.hi]; c++ {
					buckets[c] = append(buckets[c], e.to)
				}
			}
		}
		for c, b := range rep {
			d.next = append(d.next, -1)
			targets := buckets[c]
			if !writable(b) || len(targets) == 0 {
				continue
			}
			count := states[s].count
			if b < 0x80 || b >= 0xC0 { // a character's first byte
				count++
				if maxLen >= 0 && count > maxLen {
					continue
				}
				if maxLen < 0 && count > minLen {
					count = minLen
				}
			}
			t, err := add(closure(targets, false), count, false)
			if err != nil {
				return nil, err
			}
			if work > maxPatternWork {
				return nil, errors.New("too complex to compile")
			}
			d.next[s*d.nclass+c] = int16(t)
		}
	}
	// keep the states from which an accepted end is reachable
	from := make([][]int32, len(states)) // reverse edges
	for i, t := range d.next {
		if t >= 0 {
			from[t] = append(from[t], int32(i/d.nclass))
		}
	}
	live := make([]bool, len(states))
	var queue []int32
	for s, a := range d.accept {
		if a {
			live[s] = true
			queue = append(queue, int32(s))
		}
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		for _, s := range from[t] {
			if !live[s] {
				live[s] = true
				queue = append(queue, s)
			}
		}
	}
	if !live[0] {
		return nil, errors.New("no string a JSON string can carry matches it within the length limits")
	}
	for i, t := range d.next {
		if t >= 0 && !live[t] {
			d.next[i] = -1
		}
	}
	d.free = make([]bool, len(states))
	for s := range states {
		d.free[s] = d.loops(uint16(s))
	}
	d.esc = make([]bool, len(states))
	for s := range states {
		for _, e := range []byte{'"', '\\', '/', 'b', 'f', 'n', 'r', 't'} {
			b, _ := escaped(e)
			if d.step(uint16(s), b) >= 0 {
				d.esc[s] = true
			}
		}
	}
	return d, nil
}

// Regex is the state of a machine for text that a regular expression
// matches whole (vLLM's guided_regex and guided_choice): the output's
// bytes read by the pattern's automaton, anchored at both ends, in the
// ECMA-262 syntax "pattern" takes (ecmaToGo). A value, as Schema is;
// CompileRegex gives the start state.
type Regex struct {
	d  *dfa
	st uint16
}

// CompileRegex compiles pattern for text it must match whole.
func CompileRegex(pattern string) (Regex, error) {
	if len(pattern) > MaxRegexBytes {
		return Regex{}, fmt.Errorf("pattern: longer than %d bytes", MaxRegexBytes)
	}
	d, err := compilePattern(pattern, true, 0, -1, MaxPatternStates)
	if err != nil {
		return Regex{}, fmt.Errorf("pattern: %w", err)
	}
	return Regex{d: d, st: d.start}, nil
}

// Feed reads one byte (Machine).
func (r *Regex) Feed(b byte) bool {
	t := r.d.step(r.st, b)
	r.st = uint16(t)
	return t >= 0
}

// Done reports whether the text is a whole match (Machine).
func (r *Regex) Done() bool { return r.d.accept[r.st] }

// Key appends the automaton's state (Machine).
func (r *Regex) Key(dst []byte) []byte { return append(dst, byte(r.st), byte(r.st>>8)) }

// Plain reports whether any plain character keeps the state (Machine).
func (r *Regex) Plain() bool { return r.d.free[r.st] }
