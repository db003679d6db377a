package nozzle

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// FirstCall finds, as a completion streams, where its first tool call
// ends: a runtime ends a completion there when the request allows one
// call (GenerateRequest.OneCall), and its text ends with the call. It
// reads the calls as the gateway reads them (gateway/tools.go,
// splitToolCalls), in the model's tool format:
//
//   - ToolFormatHermes: past the thoughts that may open the answer, the
//     first <tool_call>, space, and the call object {"name", "arguments"}:
//     the call ends with the object's '}' (its closing tag, which the
//     gateway does not need for the last call, never comes);
//   - ToolFormatLlama3JSON: an answer whose first character past space is
//     '{' is calls; the first ends with its object, before any ';' and
//     the calls after it;
//   - ToolFormatMistral: after the first [TOOL_CALLS] where the text holds
//     it, else at the answer's start, a JSON array of call objects (or,
//     after the marker, one object): the call ends with the array's first
//     object, the array left open (the gateway reads such an answer's one
//     call);
//   - ToolFormatMistralV11: after the first [TOOL_CALLS], the function's
//     name, [CALL_ID] and an id maybe, [ARGS] maybe, space and the
//     arguments' JSON object, which ends the call; an array after the
//     marker is read as ToolFormatMistral's.
//
// An object is followed by its depth, its strings and their escapes, and
// is a call only where the gateway reads it as one (a name, and
// arguments of the form it takes); a first call that is none makes the
// whole answer text, and FirstCall then never ends (except Mistral's
// array at the start: a marker may still come later).
type FirstCall struct {
	format string
	n      int // bytes read
	end    int // where the first call ends, -1 while it has not
	dead   bool

	// the thoughts that may open the answer (thNone: none to look for,
	// or past them)
	think  ThinkTags
	tstate uint8
	head   []byte // thUndecided: the text so far
	tclose tagMatch

	st     uint8    // the format's state
	tag    tagMatch // <tool_call> or [TOOL_CALLS]
	marked bool     // Mistral: the marker was read
	want   string   // sLead: the bytes the call may begin with
	rb     []byte   // sLead: a character begun
	lits   uint8    // sLit: the control tokens it may be (litID, litArgs)
	litAt  int      // sLit: their bytes read
	name   int      // sName: the name's bytes
	hadID  bool     // v11: [CALL_ID] was read

	obj        []byte // the call object so far
	depth      int
	inStr, esc bool
	hclose     tagMatch // Hermes: </tool_call> inside the object
}

const (
	thNone = iota
	thUndecided
	thIn
)

// states of the format's machine
const (
	sSearch    = iota // before the marker or tag (Hermes, Mistral's formats)
	sLead             // space before the call (want: what may begin it)
	sArray            // Mistral: after '[', JSON space before the first object's '{'
	sName             // v11: the function's name
	sLit              // v11: a control token after the name
	sID               // v11: the call id after [CALL_ID]
	sArgsSpace        // v11: space before the arguments
	sMarked           // v11: after [TOOL_CALLS], space before the name (or an array)
	sObj              // in the call object
	sIdle             // Mistral: the answer did not begin with calls; a marker may yet come
)

const (
	litID   = 1 << iota // [CALL_ID]
	litArgs             // [ARGS]
)

const (
	hermesOpenTag  = "<tool_call>"
	hermesCloseTag = "</tool_call>"
	mistralMarker  = "[TOOL_CALLS]"
	mistralCallID  = "[CALL_ID]"
	mistralArgs    = "[ARGS]"
)

// NewFirstCall returns the matcher of the first call of a completion in
// format, nil for a format it does not know. thoughts, where not nil,
// are the tags of thoughts that may open the completion (those of a
// reasoning model's chat, or <think> for Hermes' format), which hold no
// call; open says the prompt opened them.
func NewFirstCall(format string, thoughts *ThinkTags, open bool) *FirstCall {
	switch format {
	case ToolFormatHermes, ToolFormatLlama3JSON, ToolFormatMistral, ToolFormatMistralV11:
	default:
		return nil
	}
	f := &FirstCall{format: format, end: -1}
	if thoughts != nil {
		f.think = thoughts.orDefault()
		f.tstate = thUndecided
		if open {
			f.tstate = thIn
		}
	}
	switch format {
	case ToolFormatLlama3JSON:
		f.st, f.want = sLead, "{"
	case ToolFormatMistral:
		f.st, f.want = sLead, "["
	}
	return f
}

// Add reads the next piece of the completion's text; it reports whether
// the first call is complete (in this piece or before).
func (f *FirstCall) Add(p string) bool {
	if f == nil {
		return false
	}
	for i := 0; i < len(p) && f.end < 0 && !f.dead; i++ {
		f.n++
		f.feed(p[i])
	}
	return f.end >= 0
}

// AddBytes is Add for a piece in bytes.
func (f *FirstCall) AddBytes(p []byte) bool {
	if f == nil {
		return false
	}
	for i := 0; i < len(p) && f.end < 0 && !f.dead; i++ {
		f.n++
		f.feed(p[i])
	}
	return f.end >= 0
}

// End returns the length in bytes of the completion's text up to and
// including its first call, -1 while no call is complete.
func (f *FirstCall) End() int {
	if f == nil {
		return -1
	}
	return f.end
}

// feed reads byte b, the completion's f.n-th.
func (f *FirstCall) feed(b byte) {
	switch f.tstate {
	case thUndecided:
		f.head = append(f.head, b)
		k := f.think.OpenEnd(string(f.head))
		if k < 0 {
			return
		}
		head := f.head
		f.head = nil
		if k > 0 {
			f.tstate = thIn
			for _, c := range head[k:] {
				f.thought(c)
			}
			return
		}
		// no thoughts: the text so far is the answer's
		f.tstate = thNone
		n := f.n
		for i, c := range head {
			f.n = n - len(head) + i + 1
			if f.step(c); f.end >= 0 || f.dead {
				return
			}
		}
		f.n = n
	case thIn:
		f.thought(b)
	default:
		f.step(b)
	}
}

// thought reads b in the thoughts: the answer begins after their
// closing tag.
func (f *FirstCall) thought(b byte) {
	if f.tclose.step(f.think.Close, b) {
		f.tstate = thNone
	}
}

// step reads b in the answer.
func (f *FirstCall) step(b byte) {
	if f.format == ToolFormatMistral && !f.marked && f.tag.step(mistralMarker, b) {
		// the first marker: the calls are after it, whatever came before
		f.marked, f.st, f.want, f.rb, f.obj = true, sLead, "[{", nil, nil
		return
	}
	switch f.st {
	case sSearch:
		switch f.format {
		case ToolFormatHermes:
			if f.tag.step(hermesOpenTag, b) {
				f.st, f.want = sLead, "{"
			}
		case ToolFormatMistralV11:
			if f.tag.step(mistralMarker, b) {
				f.marked, f.st = true, sMarked
			}
		}
	case sLead:
		f.lead(b)
	case sArray:
		switch {
		case jsonSpace(b):
		case b == '{':
			f.begin(b)
		default:
			f.fail()
		}
	case sName:
		if nameChar(b) {
			f.name++
			return
		}
		if f.name == 0 || f.name > 64 {
			f.fail()
			return
		}
		f.afterName(b)
	case sLit:
		f.lit(b)
	case sID:
		if !nameChar(b) {
			f.afterName(b)
		}
	case sMarked:
		switch {
		case b == ' ' || b == '\t' || b == '\r' || b == '\n':
		case b == '[':
			f.st = sArray // [TOOL_CALLS] [ …: the earlier format's array
		case nameChar(b):
			f.st, f.name = sName, 1
		default:
			f.fail()
		}
	case sArgsSpace:
		switch {
		case b == ' ' || b == '\t' || b == '\r' || b == '\n':
		case b == '{':
			f.begin(b)
		default:
			f.fail()
		}
	case sObj:
		f.object(b)
	}
}

// lead reads b in the space before a call, which strings.TrimSpace
// trims: more of it, or the call's first byte, one of f.want.
func (f *FirstCall) lead(b byte) {
	if len(f.rb) == 0 && b < utf8.RuneSelf {
		switch {
		case b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r':
		case b == '[' && strings.IndexByte(f.want, b) >= 0:
			f.st = sArray
		case b == '{' && strings.IndexByte(f.want, b) >= 0:
			f.begin(b)
		default:
			f.fail()
		}
		return
	}
	f.rb = append(f.rb, b)
	if !utf8.FullRune(f.rb) {
		return
	}
	r, size := utf8.DecodeRune(f.rb)
	f.rb = f.rb[:0]
	if r == utf8.RuneError && size <= 1 || !unicode.IsSpace(r) {
		f.fail() // (an invalid byte: no space, as TrimSpace reads it)
	}
}

// afterName reads b after a v11 call's name (or its id): a control
// token, space before the arguments, or their '{'.
func (f *FirstCall) afterName(b byte) {
	switch {
	case b == '[':
		f.st, f.litAt, f.lits = sLit, 1, litArgs
		if !f.hadID {
			f.lits |= litID
		}
	case b == ' ' || b == '\t' || b == '\r' || b == '\n':
		f.st = sArgsSpace
	case b == '{':
		f.begin(b)
	default:
		f.fail()
	}
}

// lit reads b in a control token after a v11 call's name.
func (f *FirstCall) lit(b byte) {
	if f.lits&litID != 0 && (f.litAt >= len(mistralCallID) || mistralCallID[f.litAt] != b) {
		f.lits &^= litID
	}
	if f.lits&litArgs != 0 && (f.litAt >= len(mistralArgs) || mistralArgs[f.litAt] != b) {
		f.lits &^= litArgs
	}
	f.litAt++
	switch {
	case f.lits == 0:
		f.fail()
	case f.lits == litID && f.litAt == len(mistralCallID):
		f.st, f.hadID = sID, true
	case f.lits == litArgs && f.litAt == len(mistralArgs):
		f.st = sArgsSpace
	}
}

// begin begins the call object with its '{'.
func (f *FirstCall) begin(b byte) {
	f.st, f.obj, f.depth, f.inStr, f.esc = sObj, append(f.obj[:0], b), 1, false, false
	f.hclose = tagMatch{}
}

// object reads b in the call object.
func (f *FirstCall) object(b byte) {
	f.obj = append(f.obj, b)
	if f.format == ToolFormatHermes && f.hclose.step(hermesCloseTag, b) {
		// the gateway reads the call up to this tag: a broken object
		f.fail()
		return
	}
	switch {
	case f.inStr && f.esc:
		f.esc = false
	case f.inStr && b == '\\':
		f.esc = true
	case f.inStr:
		f.inStr = b != '"'
	case b == '"':
		f.inStr = true
	case b == '{' || b == '[':
		f.depth++
	case b == '}' || b == ']':
		if f.depth--; f.depth > 0 {
			return
		}
		if f.isCall() {
			f.end = f.n
		} else {
			f.fail()
		}
	}
}

// isCall reports whether the object read is a call as the gateway reads
// one in f's format.
func (f *FirstCall) isCall() bool {
	switch f.format {
	case ToolFormatHermes:
		return CallObject(f.obj, false, "arguments")
	case ToolFormatLlama3JSON:
		return CallObject(f.obj, true, "parameters", "arguments")
	case ToolFormatMistralV11:
		if f.name > 0 { // a bare call's arguments
			return json.Valid(f.obj)
		}
	}
	return CallObject(f.obj, !f.marked, "arguments", "parameters")
}

// fail gives up: the first call is none. Mistral's array at the start
// was no call, but a marker may still come.
func (f *FirstCall) fail() {
	if f.format == ToolFormatMistral && !f.marked {
		f.st, f.obj = sIdle, nil
		return
	}
	f.dead, f.obj = true, nil
}

// CallObject reports whether s is a call object as the gateway reads
// one: a JSON object with a "name" that is a string other than "", and
// its arguments under the first of argKeys it has, an object or a string
// of JSON text; they may be left out unless required.
func CallObject(s []byte, required bool, argKeys ...string) bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(s, &obj) != nil {
		return false
	}
	var name string
	if json.Unmarshal(obj["name"], &name) != nil || name == "" {
		return false
	}
	for _, k := range argKeys {
		if a, ok := obj[k]; ok {
			t := bytes.TrimSpace(a)
			if len(t) > 0 && t[0] == '"' {
				var inner string
				return json.Unmarshal(t, &inner) == nil && json.Valid([]byte(inner))
			}
			return len(t) > 0 && t[0] == '{'
		}
	}
	return !required
}

// tagMatch follows how much of a tag the text read ends with.
type tagMatch struct{ at int }

// step reads b; it reports whether it completes tag.
func (m *tagMatch) step(tag string, b byte) bool {
	k := min(m.at+1, len(tag))
	for ; k > 0; k-- {
		// tag[:k] ends the text: its last byte is b, the rest ends what
		// was matched
		if tag[k-1] == b && tag[:k-1] == tag[m.at-k+1:m.at] {
			break
		}
	}
	if m.at = k; k == len(tag) {
		m.at = 0
		return true
	}
	return false
}

func jsonSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }

// nameChar reports whether c may be in a function's name.
func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}
