package grammar

import (
	"bytes"
	"errors"
	"slices"
)

// Triggered is free text in which tool calls are held to their form: the
// output is any text until it writes Calls.Tag ("<tool_call>"), and from
// there a call, Calls.Pre ("\n"), the object {"name": N, "arguments": A}
// and Calls.Post ("\n</tool_call>"), where N is one of the tools' names
// and A a value of that tool's Args; after the call the text is free
// again (or, with Calls.Only, whitespace and further calls only). Done
// outside calls only. A value type, as Schema is.
//
// The object is read in its parts, so that the name chooses the
// arguments' machine: '{', "name", ':', the name, ',', the arguments' key,
// ':', the value, '}', with runs of at most MaxSpace spaces or newlines
// between them (none before '{', as a Schema's value takes none before
// it), the name as encoding/json writes it and first.
type Triggered struct {
	c      *calls
	phase  uint8  // tFree, tPre, tObj, tPost
	step   uint8  // in tObj: the part being read (oOpen…oClose)
	space  uint8  // the run of whitespace before it
	called bool   // a call has closed
	at     uint16 // tFree: the tag's bytes matched; tPre, tPost, a part: bytes read
	lo, hi uint16 // the names that may yet be written (from oName on: lo is the one)
	inner  Schema // in oValue: the arguments read so far
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
}

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
	names          [][]byte // quoted, sorted
	args           []Schema // args[i]: names[i]'s start state
	only           bool
}

// phases of a Triggered
const (
	tFree uint8 = iota // free text (at: the tag's bytes matched)
	tPre               // in Pre
	tObj               // in the call object (step)
	tPost              // in Post
)

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
	if c.Tag == "" || len(c.Tag) > 1<<15 || len(c.Pre) > 1<<15 || len(c.Post) > 1<<15 {
		return Triggered{}, errors.New("a call's tag must be given, and the texts short")
	}
	cs := &calls{tag: []byte(c.Tag), pre: []byte(c.Pre), post: []byte(c.Post), only: c.Only}
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
	return Triggered{c: cs}, nil
}

// Feed reads one byte (Machine).
func (t *Triggered) Feed(b byte) bool {
	c := t.c
	switch t.phase {
	case tFree:
		if t.called && c.only {
			// whitespace between calls, or the next call's tag
			switch {
			case c.tag[t.at] == b:
				t.at++
				t.space = 0
			case t.at == 0 && isSpace(b) && t.space < MaxSpace:
				t.space++
				return true
			default:
				return false
			}
		} else {
			at := int(t.at)
			for at > 0 && c.tag[at] != b {
				at = int(c.fail[at-1])
			}
			if c.tag[at] == b {
				at++
			}
			t.at = uint16(at)
		}
		if int(t.at) == len(c.tag) {
			t.phase, t.at, t.space = tPre, 0, 0
			if len(c.pre) == 0 {
				t.phase = tObj
				t.step = oOpen
			}
		}
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
		lo, hi, at := int(t.lo), int(t.hi), int(t.at)
		for lo < hi && (len(c.names[lo]) <= at || c.names[lo][at] < b) {
			lo++
		}
		n := lo
		for n < hi && len(c.names[n]) > at && c.names[n][at] == b {
			n++
		}
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
		if t.step == oClose {
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

// free ends a call: free text again.
func (t *Triggered) free() {
	*t = Triggered{c: t.c, called: true}
}

// Done reports whether the output may end here: outside a call, and,
// where only calls may follow one, not in the midst of the next's tag
// (Machine).
func (t *Triggered) Done() bool {
	return t.phase == tFree && (t.at == 0 || !t.called || !t.c.only)
}

// Key identifies the state (Machine); the tools are the Masker's to know.
func (t *Triggered) Key(dst []byte) []byte {
	called := t.called && t.c.only // free text after a call is as before it otherwise
	dst = append(dst, t.phase, t.step, t.space, b2u(called), byte(t.at), byte(t.at>>8),
		byte(t.lo), byte(t.lo>>8), byte(t.hi), byte(t.hi>>8))
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
// it is (Looper).
func (t *Triggered) Loops() (byte, bool) {
	if t.phase != tFree || t.at != 0 || t.called && t.c.only {
		return 0, false
	}
	return t.c.tag[0], true
}

// Plain reports whether the arguments are inside a free string (Machine).
// Free text is not plain: '<' and the tag's other bytes are plain
// characters, and they move the tag's match.
func (t *Triggered) Plain() bool {
	return t.phase == tObj && t.step == oValue && t.at > 0 && t.inner.Plain()
}
