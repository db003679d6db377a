package grammar

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Triggered is free text in which tool calls are held to their form: the
// output is any text until it writes Calls.Tag ("<tool_call>"), and from
// there a call, Calls.Pre ("\n"), the object {"name": N, "arguments": A}
// and Calls.Post ("\n</tool_call>"), where N is one of the tools' names
// and A a value of that tool's Args; after the call the text is free
// again (or, with Calls.Only, whitespace and further calls only, with
// Calls.Sep between them). With Calls.Lead a call may only begin the text
// (Llama 3's JSON calls, which are the whole answer): the object itself,
// after whitespace, and text that begins otherwise is free to its end.
// With Calls.Mark the tag is a control token, read through Mark: with
// Calls.Bare a call is Mistral v11's, name [ARGS] arguments; with
// Calls.Array and Calls.Lead the calls are Mistral's v3 JSON array after
// the tag, which only whitespace may come before. Done outside calls only
// (and, with Calls.Bare, once a call's arguments close; with Calls.Array,
// once the array closes). A value type, as Schema is.
//
// The object is read in its parts, so that the name chooses the
// arguments' machine: '{', "name", ':', the name, ',', the arguments' key,
// ':', the value, '}', with runs of at most MaxSpace spaces or newlines
// between them (none before '{', as a Schema's value takes none before
// it: with Calls.Lead the whitespace before it is the text's, any at the
// start, at most MaxSpace after a separator), the name as encoding/json
// writes it and first.
type Triggered struct {
	c      *calls
	phase  uint8  // tFree, tPre, tObj, tPost; tLead, tText; tName; tOpen, tNext, tEnd
	step   uint8  // in tObj: the part being read (oOpen…oClose); in tFree after a call: sTag or sSep
	space  uint8  // the run of whitespace before it
	called bool   // a call has closed
	at     uint16 // tFree: the tag's bytes matched; tPre, tPost, a part: bytes read
	lo, hi uint16 // the names that may yet be written (from oName on: lo is the one)
	inner  Schema // in oValue: the arguments read so far
	tagAt  uint16 // Array, from the tag on: the tag's text's bytes matched
}

// Calls says what a Triggered's calls are: the text around them, their
// tools and what may come after one.
type Calls struct {
	// Tag begins a call wherever the free text writes it; Pre follows it,
	// before the object; Post closes the call.
	Tag, Pre, Post string
	// ArgsKey is the arguments' key in the object ("arguments").
	ArgsKey string
	// Tools are the functions a call may name, by their names (the first
	// of a name given twice).
	Tools []Tool
	// Only: after a call, only whitespace and further calls may come.
	Only bool
	// Sep, where given, separates calls (Llama 3's ";"): after a call,
	// whitespace, then Sep, whitespace and the next call — or the end,
	// never after Sep. Needs Only; must not begin with whitespace.
	Sep string
	// Lead: a call may only begin the text, and with its object's '{'
	// (Tag and Pre empty): the text's first byte other than whitespace —
	// every character strings.TrimSpace trims, as a parser that trims
	// the answer before it looks for a call reads it — begins a call
	// where it is '{', and free text to the end where it is not. Needs
	// Only (the answer is calls, or text).
	Lead bool
	// Mark: the tag is a control token (Mistral's [TOOL_CALLS]), which has
	// no bytes in the masks' vocabulary: the machine reads it through
	// Mark(MarkCall), and Tag is its text, which the free text may not
	// write as text (a parser that finds the tag in the text would read a
	// call there). Needs Only.
	Mark bool
	// Bare: Mistral v11's calls, [TOOL_CALLS]name[ARGS]{…}: after the tag
	// the function's name as it is, no quotes (its bytes must be those of
	// OpenAI's names, [A-Za-z0-9_-]), then the control token [ARGS]
	// (Mark(MarkArgs)), which may only come where the bytes so far are a
	// whole name, so that names that begin alike ("get", "get_time") are
	// told apart where the name ends, then at most MaxSpace spaces or
	// newlines and the arguments; after them, whitespace, then the end or
	// the next call's tag. Needs Mark; no Pre, Post, Sep or Lead.
	Bare bool
	// Array: Mistral's v3 calls, [TOOL_CALLS] [{"name": N, "arguments":
	// A}, …], after a tag that may only begin the text (with Lead: where
	// only ' ', '\t', '\r' and '\n' have come, what a parser that trims
	// the answer and a stream that decides on its first byte alike pass
	// over, since the decoder leaves the control token out of the text;
	// text that begins otherwise is free to its end, never the tag's
	// text): whitespace, '[', the call objects separated by ',', ']', then
	// whitespace to the end, with runs of at most MaxSpace spaces or
	// newlines between the parts; and from the tag on, the tag's text
	// nowhere, not in a string either (a parser that finds it in the text
	// would read the calls from there). Needs Mark and Lead; no Pre, Post
	// or Sep.
	Array bool
}

// The marks a Triggered reads (Marker): the Vocab's marks must be these
// control tokens in this order.
const (
	MarkCall = 0 // the tag (Mistral's [TOOL_CALLS])
	MarkArgs = 1 // between a bare call's name and its arguments (Mistral v11's [ARGS])
)

// Tool is a function a call may name and the machine of its arguments
// (a compiled schema: its parameters, or {"type":"object"} for any).
type Tool struct {
	Name string
	Args Schema
}

// calls is the read-only part of a Triggered's states.
type calls struct {
	tag, pre, post []byte
	fail           []uint16 // fail[i]: the longest proper border of tag[:i+1]
	parts          [oClose + 1][]byte
	names          [][]byte // quoted (as they are with bare), sorted
	args           []Schema // args[i]: names[i]'s start state
	only, lead     bool
	mark, bare     bool
	array          bool
	sep            []byte
}

// phases of a Triggered
const (
	tFree uint8 = iota // free text (at: the tag's bytes matched)
	tPre               // in Pre
	tObj               // in the call object (step)
	tPost              // in Post
	tLead              // Lead: whitespace so far (at: a character's bytes read, lo..hi the leadSpaces it may be)
	tText              // Lead: the text began otherwise, free to its end
	tName              // Bare: in the name (at: its bytes read, lo..hi the names it may be)
	tOpen              // Array: before '[' (at 0) or a call's '{' (at 1)
	tNext              // Array: after a call, before ',' or ']'
	tEnd               // Array: after ']', whitespace to the end
)

// steps of free text after a call, with Calls.Only
const (
	sTag = 0 // before the next call's tag (at: its bytes read)
	sSep = 1 // before Calls.Sep (at: its bytes read)
)

// leadSpaces are the UTF-8 forms of the characters beyond ASCII that
// strings.TrimSpace trims (unicode.IsSpace: NEL, NBSP, the Zs, U+2028,
// U+2029), sorted; the ASCII ones are asciiSpace.
var leadSpaces = func() [][]byte {
	var out [][]byte
	add := func(r rune) {
		if r >= utf8.RuneSelf && unicode.IsSpace(r) {
			out = append(out, utf8.AppendRune(nil, r))
		}
	}
	for _, g := range unicode.White_Space.R16 {
		for r := rune(g.Lo); r <= rune(g.Hi); r += rune(g.Stride) {
			add(r)
		}
	}
	for _, g := range unicode.White_Space.R32 {
		for r := rune(g.Lo); r <= rune(g.Hi); r += rune(g.Stride) {
			add(r)
		}
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}()

// asciiSpace reports whether strings.TrimSpace trims b, an ASCII byte.
func asciiSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r'
}

// parts of the call object, in order
const (
	oOpen   = iota // '{'
	oNameK         // "name"
	oColon1        // ':'
	oName          // the name (lo, hi)
	oComma         // ','
	oArgsK         // the arguments' key
	oColon2        // ':'
	oValue         // the arguments (inner)
	oClose         // '}'
)

// Trigger returns the start state of the calls' language: free text.
func Trigger(c Calls) (Triggered, error) {
	if c.Tag == "" && !c.Lead || len(c.Tag) > 1<<15 || len(c.Pre) > 1<<15 || len(c.Post) > 1<<15 || len(c.Sep) > 1<<15 {
		return Triggered{}, errors.New("a call's tag must be given, and the texts short")
	}
	if c.Lead && (c.Tag != "" && !c.Mark || c.Pre != "" || !c.Only) {
		return Triggered{}, errors.New("a leading call begins with its object, and only calls follow it")
	}
	if c.Sep != "" && (!c.Only || asciiSpace(c.Sep[0])) {
		return Triggered{}, errors.New("a separator comes between calls only, and not with whitespace")
	}
	if c.Mark && (c.Tag == "" || !c.Only || c.Bare == c.Array || c.Lead != c.Array) || c.Bare && (!c.Mark || c.Pre != "" || c.Post != "" || c.Sep != "" || c.Lead) ||
		c.Array && (!c.Mark || c.Pre != "" || c.Post != "" || c.Sep != "") {
		return Triggered{}, errors.New("a control token's calls need its text and only calls after one; bare calls are name, mark, arguments")
	}
	cs := &calls{tag: []byte(c.Tag), pre: []byte(c.Pre), post: []byte(c.Post), only: c.Only, lead: c.Lead, sep: []byte(c.Sep),
		mark: c.Mark, bare: c.Bare, array: c.Array}
	// the tag's failure function (Knuth–Morris–Pratt)
	cs.fail = make([]uint16, len(cs.tag))
	for i, k := 1, 0; i < len(cs.tag); i++ {
		for k > 0 && cs.tag[i] != cs.tag[k] {
			k = int(cs.fail[k-1])
		}
		if cs.tag[i] == cs.tag[k] {
			k++
		}
		cs.fail[i] = uint16(k)
	}
	key := quote(c.ArgsKey)
	cs.parts = [oClose + 1][]byte{oOpen: []byte("{"), oNameK: []byte(`"name"`), oColon1: []byte(":"),
		oComma: []byte(","), oArgsK: key, oColon2: []byte(":"), oClose: []byte("}")}
	type named struct {
		q    []byte
		args Schema
	}
	var tools []named
	for _, t := range c.Tools {
		q := quote(t.Name)
		if t.Name == "" || t.Args.c == nil {
			return Triggered{}, errors.New("a tool needs a name and its arguments' schema")
		}
		if c.Bare {
			if strings.ContainsFunc(t.Name, func(r rune) bool { return r >= utf8.RuneSelf || !nameByte(byte(r)) }) {
				return Triggered{}, fmt.Errorf("function %q: a name written bare takes only letters, digits, '_' and '-'", t.Name)
			}
			q = []byte(t.Name)
		}
		if !slices.ContainsFunc(tools, func(n named) bool { return bytes.Equal(n.q, q) }) {
			tools = append(tools, named{q, t.Args})
		}
	}
	if len(tools) == 0 || len(tools) > 1<<15 {
		return Triggered{}, errors.New("calls need tools")
	}
	slices.SortFunc(tools, func(a, b named) int { return bytes.Compare(a.q, b.q) })
	for _, t := range tools {
		cs.names = append(cs.names, t.q)
		cs.args = append(cs.args, t.args)
	}
	if cs.lead {
		return Triggered{c: cs, phase: tLead}, nil
	}
	return Triggered{c: cs}, nil
}

// narrow returns, of the sorted list[lo:hi] (entries that agree on their
// first at bytes), the run of those whose next byte is b: list[lo:n].
func narrow(list [][]byte, lo, hi, at int, b byte) (int, int) {
	for lo < hi && (len(list[lo]) <= at || list[lo][at] < b) {
		lo++
	}
	n := lo
	for n < hi && len(list[n]) > at && list[n][at] == b {
		n++
	}
	return lo, n
}

// Feed reads one byte (Machine).
func (t *Triggered) Feed(b byte) bool {
	c := t.c
	if c.array && t.phase != tLead && t.phase != tText {
		// from the tag on: never the tag's text
		if t.tagAt = c.tagStep(t.tagAt, b); int(t.tagAt) == len(c.tag) {
			return false
		}
	}
	switch t.phase {
	case tOpen, tNext, tEnd:
		return t.array(b)
	case tLead:
		return t.lead(b)
	case tText:
		if c.mark {
			return t.text(b)
		}
		return true
	case tFree:
		if t.called && c.only {
			return t.between(b)
		}
		if t.at = c.tagStep(t.at, b); int(t.at) == len(c.tag) {
			if c.mark {
				return false // the control token's text: never written as text
			}
			t.begin()
		}
		return true
	case tName:
		// the names that go on with b (sorted: contiguous); the name ends
		// where MarkArgs comes
		lo, n := narrow(c.names, int(t.lo), int(t.hi), int(t.at), b)
		if n == lo {
			return false
		}
		t.lo, t.hi, t.at = uint16(lo), uint16(n), t.at+1
		return true
	case tPre:
		if b != c.pre[t.at] {
			return false
		}
		if t.at++; int(t.at) == len(c.pre) {
			t.phase, t.step, t.at = tObj, oOpen, 0
		}
		return true
	case tPost:
		if b != c.post[t.at] {
			return false
		}
		if t.at++; int(t.at) == len(c.post) {
			t.free()
		}
		return true
	}
	// in the object
	if t.step == oValue && t.at > 0 {
		// in the value (at 1): a done value may go on (a number's
		// digits) or end here
		if !t.inner.Done() {
			return t.inner.Feed(b)
		}
		if in := t.inner; in.Feed(b) {
			t.inner = in
			return true
		}
		if c.bare { // the call ends with its arguments
			t.free()
			return t.Feed(b)
		}
		t.step, t.at, t.space, t.inner = oClose, 0, 0, Schema{}
	}
	if t.at == 0 && t.step != oOpen && isSpace(b) {
		if t.space >= MaxSpace {
			return false
		}
		t.space++
		return true
	}
	switch t.step {
	case oValue:
		t.inner, t.at, t.space = c.args[t.lo], 1, 0
		return t.inner.Feed(b)
	case oName:
		if t.at == 0 {
			t.lo, t.hi = 0, uint16(len(c.names))
		}
		// the names that go on with b (sorted: contiguous)
		lo, n := narrow(c.names, int(t.lo), int(t.hi), int(t.at), b)
		if n == lo {
			return false
		}
		t.lo, t.hi, t.at, t.space = uint16(lo), uint16(n), t.at+1, 0
		if len(c.names[lo]) == int(t.at) {
			// its closing quote: no other name has a quote here
			t.step, t.at, t.hi = oComma, 0, t.lo+1
		}
		return true
	}
	p := c.parts[t.step]
	if b != p[t.at] {
		return false
	}
	t.at++
	t.space = 0
	if int(t.at) == len(p) {
		t.at = 0
		if t.step == oClose && c.array {
			t.phase, t.space = tNext, 0
		} else if t.step == oClose {
			t.phase = tPost
			if len(c.post) == 0 {
				t.free()
			}
		} else {
			t.step++
		}
	}
	return true
}

// begin begins a call, its tag read: Pre, or the object.
func (t *Triggered) begin() {
	t.phase, t.step, t.at, t.space = tPre, 0, 0, 0
	if t.c.bare {
		t.phase, t.lo, t.hi = tName, 0, uint16(len(t.c.names))
		return
	}
	if t.c.array {
		t.phase, t.tagAt = tOpen, 0
		return
	}
	if len(t.c.pre) == 0 {
		t.phase, t.step = tObj, oOpen
	}
}

// free ends a call: free text again (with Calls.Only, before the
// separator or the next call).
func (t *Triggered) free() {
	*t = Triggered{c: t.c, called: true}
	if len(t.c.sep) > 0 {
		t.step = sSep
	}
}

// lead reads b where only whitespace has come (Calls.Lead): more of it,
// the object's '{' or the free text's first byte.
func (t *Triggered) lead(b byte) bool {
	if t.c.mark {
		// (Array) the tag may yet come after ASCII whitespace; else text
		if b == ' ' || b == '\t' || b == '\r' || b == '\n' {
			return true
		}
		*t = Triggered{c: t.c, phase: tText}
		return t.text(b)
	}
	if t.at > 0 {
		// the next byte of a character beyond ASCII that may be a space
		lo, n := narrow(leadSpaces, int(t.lo), int(t.hi), int(t.at), b)
		switch {
		case n == lo:
			*t = Triggered{c: t.c, phase: tText}
		case len(leadSpaces[lo]) == int(t.at)+1: // (no space's form begins another's)
			t.at, t.lo, t.hi = 0, 0, 0
		default:
			t.at, t.lo, t.hi = t.at+1, uint16(lo), uint16(n)
		}
		return true
	}
	if asciiSpace(b) {
		return true
	}
	if b == '{' {
		t.begin()
		return t.Feed(b)
	}
	if lo, n := narrow(leadSpaces, 0, len(leadSpaces), 0, b); n > lo {
		t.at, t.lo, t.hi = 1, uint16(lo), uint16(n)
		return true
	}
	*t = Triggered{c: t.c, phase: tText}
	return true
}

// text reads b in the free text of Calls.Lead with Calls.Mark, where the
// tag may no longer come: never its text (at: its bytes matched).
func (t *Triggered) text(b byte) bool {
	t.at = t.c.tagStep(t.at, b)
	return int(t.at) != len(t.c.tag)
}

// tagStep is the tag matcher's step (Knuth–Morris–Pratt over fail): the
// length of the tag's longest prefix ending at b, given at, the one
// ending before it; len(tag) when b completes the tag.
func (c *calls) tagStep(at uint16, b byte) uint16 {
	k := int(at)
	for k > 0 && c.tag[k] != b {
		k = int(c.fail[k-1])
	}
	if c.tag[k] == b {
		k++
	}
	return uint16(k)
}

// array reads b around Calls.Array's call objects: whitespace, then '['
// and a call's '{' (tOpen), ',' and the next call's '{' or ']' (tNext),
// whitespace to the end (tEnd).
func (t *Triggered) array(b byte) bool {
	if isSpace(b) {
		if t.space >= MaxSpace {
			return false
		}
		t.space++
		return true
	}
	switch {
	case t.phase == tOpen && t.at == 0 && b == '[':
		t.at, t.space = 1, 0
		return true
	case t.phase == tOpen && t.at == 1 && b == '{':
		// (Feed matches b against the tag again: '{' is none of its bytes)
		t.phase, t.step, t.at, t.space = tObj, oOpen, 0, 0
		return t.Feed(b)
	case t.phase == tNext && b == ',':
		t.phase, t.at, t.space = tOpen, 1, 0
		return true
	case t.phase == tNext && b == ']':
		t.phase, t.space = tEnd, 0
		return true
	}
	return false
}

// between reads b after a call where only calls may follow (Calls.Only):
// whitespace, the separator, whitespace, the next call's tag.
func (t *Triggered) between(b byte) bool {
	c := t.c
	switch {
	case t.step == sSep && c.sep[t.at] == b:
		t.at++
		t.space = 0
		if int(t.at) == len(c.sep) {
			t.step, t.at = sTag, 0
		}
		return true
	case t.step == sTag && len(c.tag) == 0 && !isSpace(b):
		// the tag is the object's own '{' (Calls.Lead)
		t.begin()
		return t.Feed(b)
	case t.step == sTag && len(c.tag) > 0 && !c.mark && c.tag[t.at] == b:
		t.at++
		t.space = 0
		if int(t.at) == len(c.tag) {
			t.begin()
		}
		return true
	case t.at == 0 && isSpace(b) && t.space < MaxSpace:
		t.space++
		return true
	}
	return false
}

// Done reports whether the output may end here: outside a call, and,
// where only calls may follow one, not in the midst of the next's tag or
// after the separator (Machine).
func (t *Triggered) Done() bool {
	switch t.phase {
	case tLead, tText, tEnd:
		return true
	case tFree:
		return !t.called || !t.c.only || t.at == 0 && (t.step == sSep || len(t.c.sep) == 0)
	}
	return t.bareDone()
}

// bareDone reports whether a bare call's arguments are whole (Calls.Bare):
// the call may end here.
func (t *Triggered) bareDone() bool {
	return t.c.bare && t.phase == tObj && t.step == oValue && t.at > 0 && t.inner.Done()
}

// Mark reads control token k (MarkCall, MarkArgs; Marker): with
// Calls.Mark, the tag begins a call in free text (and, with Calls.Only,
// after a call's whitespace, or where a bare call's arguments are whole);
// with Calls.Bare, MarkArgs ends a call's name where its bytes are one.
func (t *Triggered) Mark(k int) bool {
	c := t.c
	if !c.mark {
		return false
	}
	switch {
	case k == MarkCall && t.phase == tFree && (!t.called || !c.only || t.step == sTag && t.at == 0 && len(c.sep) == 0):
		t.begin()
		return true
	case k == MarkCall && t.phase == tLead:
		t.begin()
		return true
	case k == MarkCall && t.bareDone():
		t.free()
		t.begin()
		return true
	case k == MarkArgs && t.phase == tName && t.at > 0 && len(c.names[t.lo]) == int(t.at):
		// (sorted: the whole name comes before those it begins)
		t.phase, t.step, t.at, t.space, t.hi = tObj, oValue, 0, 0, t.lo+1
		return true
	}
	return false
}

// Key identifies the state (Machine); the tools are the Masker's to know.
func (t *Triggered) Key(dst []byte) []byte {
	called := t.called && t.c.only // free text after a call is as before it otherwise
	dst = append(dst, t.phase, t.step, t.space, b2u(called), byte(t.at), byte(t.at>>8),
		byte(t.lo), byte(t.lo>>8), byte(t.hi), byte(t.hi>>8), byte(t.tagAt), byte(t.tagAt>>8))
	if t.phase == tObj && t.step == oValue && t.at > 0 {
		dst = t.inner.Key(dst) // lo, in the key, says whose schema
	}
	return dst
}

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// Loops reports, in free text where no part of the tag is read (and text
// may come), the tag's first byte: a token without it leaves the state as
// it is (Looper); in the free text of Calls.Lead, which every token
// leaves as it is, any byte (with Calls.Mark, where it never writes the
// tag's text, the tag's first byte, where no part of it is read).
func (t *Triggered) Loops() (byte, bool) {
	if t.phase == tText && t.c.mark {
		return t.c.tag[0], t.at == 0 // (never the tag's text)
	}
	if t.phase == tText {
		return 0, true // every token leaves it as it is: any byte will do
	}
	if t.phase != tFree || t.at != 0 || t.called && t.c.only {
		return 0, false
	}
	return t.c.tag[0], true
}

// Plain reports whether the arguments are inside a free string (Machine).
// Free text is not plain: '<' and the tag's other bytes are plain
// characters, and they move the tag's match.
func (t *Triggered) Plain() bool {
	// (with Calls.Array a string may not write the tag's text: its plain
	// tokens without the tag's first byte are taken at once, PlainLoops,
	// the others walked)
	return !t.c.array && t.phase == tObj && t.step == oValue && t.at > 0 && t.inner.Plain()
}

// PlainLoops reports, inside a free string of Calls.Array's calls where no
// part of the tag's text is read, the tag's first byte: plain text
// without it leaves the state as it is (PlainLooper).
func (t *Triggered) PlainLoops() (byte, bool) {
	if !t.c.array || t.tagAt != 0 || t.phase != tObj || t.step != oValue || t.at == 0 || !t.inner.Plain() {
		return 0, false
	}
	return t.c.tag[0], true
}

// nameByte reports whether c may be in an OpenAI function's name.
func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}
