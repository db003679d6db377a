package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// Exact member names. encoding/json matches an object's member to a
// struct field case-insensitively ({"MODEL": …} fills Model, and so does
// "ſtop" fill Stop) and lets the last of two members of the same name win.
// OpenAI's API knows its parameters by their exact names: another
// spelling is an argument it does not define. Before a request body is
// decoded, checkKeys walks it once, comparing the members of every object
// that decodes into a struct with the struct's names:
//
//   - a member named twice is refused (400, naming it);
//   - where unknown members are refused (the body itself, strict), one of
//     another spelling is refused as unknown too;
//   - where they are let through (a chat message, stream_options, a
//     content part, a tool: lenient), one that only differs from a known
//     name in case is unknown as well, and dropped: blanked (spaces in its
//     place) in a copy of the body before decoding, so that the decoder
//     does not take it for the known one, nor a tool's JSON hand it to the
//     chat template as one.

// keyShape is what checkKeys knows of an object: its members' exact names
// and, for those holding objects decoded into structs too (or arrays of
// them), their shapes.
type keyShape struct {
	names  []string
	index  map[string]int
	sub    []*keyShape // by member; nil: not looked into
	strict bool        // unknown members are refused (else ignored)
}

// maxShapeMembers bounds a shape's members (the bit set of those seen).
const maxShapeMembers = 256

// rawShapes gives the shapes of the members that a request struct keeps
// raw (json.RawMessage) and decodes later with json.Unmarshal, so
// leniently: the struct and member, the type they are decoded into.
var rawShapes = map[reflect.Type]map[string]reflect.Type{
	reflect.TypeFor[chatBody](): {
		"tools":           reflect.TypeFor[toolDef](),
		"functions":       reflect.TypeFor[functionDef](),
		"response_format": reflect.TypeFor[responseFormat](),
	},
	reflect.TypeFor[chatMessageIn](): {
		"content":       reflect.TypeFor[contentPart](),
		"tool_calls":    reflect.TypeFor[toolCallIn](),
		"function_call": reflect.TypeFor[functionCallIn](),
	},
}

// lenientTypes are the request types with an UnmarshalJSON of their own
// that decodes their fields leniently (unknown members let through).
var lenientTypes = map[reflect.Type]bool{
	reflect.TypeFor[streamOptions](): true,
	reflect.TypeFor[chatMessageIn](): true,
}

var shapes sync.Map // reflect.Type → *keyShape

// shapeFor is the shape of the struct v points to, decoded strictly (as
// decodeStrict does), or nil when v is not a pointer to a struct.
func shapeFor(v any) *keyShape {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	t = t.Elem()
	if s, ok := shapes.Load(t); ok {
		return s.(*keyShape)
	}
	s, _ := shapes.LoadOrStore(t, buildShape(t, true))
	return s.(*keyShape)
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// buildShape builds the shape of struct type t, decoded strictly or not.
// Members of struct types are decoded as their parent is (a strict
// decoder refuses unknown members at every depth), except those with an
// UnmarshalJSON of their own: lenient where lenientTypes says so, else
// not looked into.
func buildShape(t reflect.Type, strict bool) *keyShape {
	s := &keyShape{index: map[string]int{}, strict: strict}
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous && f.Type.Kind() == reflect.Struct && f.Tag.Get("json") == "" {
			continue // unexported, or an embedded struct whose fields are promoted
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := s.index[name]; dup {
			continue // a promoted field shadowed by a shallower one
		}
		var sub *keyShape
		if raw, ok := rawShapes[t][name]; ok {
			sub = buildShape(raw, false)
		} else if et := elemStruct(f.Type); et != nil {
			switch {
			case lenientTypes[et]:
				sub = buildShape(et, false)
			case !reflect.PointerTo(et).Implements(unmarshalerType):
				sub = buildShape(et, strict)
			}
		}
		s.index[name] = len(s.names)
		s.names = append(s.names, name)
		s.sub = append(s.sub, sub)
	}
	if len(s.names) > maxShapeMembers {
		panic(fmt.Sprintf("gateway: %s has more than %d JSON members", t, maxShapeMembers))
	}
	return s
}

// elemStruct is the struct type a field of type t decodes objects into
// (through pointers and slices), or nil.
func elemStruct(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		if t == reflect.TypeFor[json.RawMessage]() {
			return nil
		}
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

// checkKeys checks the members of body's objects against s (see above)
// and returns the body to decode: body itself, or a copy in which the
// members dropped (see above) are blanked, spaces in their place. A body
// that is not valid JSON passes unchecked: the decoder says what is wrong
// with it.
func checkKeys(body []byte, s *keyShape) ([]byte, error) {
	if s == nil {
		return body, nil
	}
	w := keyWalker{b: body}
	w.space()
	if w.i >= len(body) || body[w.i] != '{' {
		return body, nil // not an object: the decoder says so
	}
	if err := w.value(s); err != nil {
		var ke *keyError
		if !errors.As(err, &ke) || !json.Valid(body) {
			return body, nil
		}
		return nil, ke.refusal()
	}
	if len(w.blank) == 0 || !json.Valid(body) {
		return body, nil
	}
	out := bytes.Clone(body)
	for i := 0; i < len(w.blank); i += 2 {
		for k := w.blank[i]; k < w.blank[i+1]; k++ {
			out[k] = ' '
		}
	}
	return out, nil
}

var errKeySyntax = errors.New("not JSON")

// keySeg is an element of the path to a member: a name, or an index.
type keySeg struct {
	name  string
	index int
}

type keyWalker struct {
	b     []byte
	i     int
	blank []int // start and end of members to blank
}

// keyError is a member refused: given twice, or unknown. Its path is
// filled in as the walk returns from the objects and arrays it is in
// (innermost first), so that a body without one costs no path.
type keyError struct {
	twice bool
	path  []keySeg
}

func (e *keyError) Error() string { return "refused member" }

// at adds the segment of the object or array that err happened in.
func at(err error, seg keySeg) error {
	if e, ok := err.(*keyError); ok {
		e.path = append(e.path, seg)
	}
	return err
}

func (w *keyWalker) space() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// value walks the value at w.i: an object or an array of them by shape s
// (nil: skipped).
func (w *keyWalker) value(s *keyShape) error {
	if w.i >= len(w.b) {
		return errKeySyntax
	}
	switch w.b[w.i] {
	case '{':
		if s != nil {
			return w.object(s)
		}
	case '[':
		if s != nil {
			return w.array(s)
		}
	}
	return w.skip()
}

func (w *keyWalker) object(s *keyShape) error {
	w.i++ // {
	var seen [maxShapeMembers / 64]uint64
	w.space()
	if w.i < len(w.b) && w.b[w.i] == '}' {
		w.i++
		return nil
	}
	kept := -1 // the end of the last member kept, if any
	for {
		w.space()
		member := w.i
		start, end, escaped, err := w.str()
		if err != nil {
			return err
		}
		key := w.b[start:end]
		if escaped {
			var k string
			if json.Unmarshal(w.b[start-1:end+1], &k) != nil {
				return errKeySyntax
			}
			key = []byte(k)
		}
		w.space()
		if w.i >= len(w.b) || w.b[w.i] != ':' {
			return errKeySyntax
		}
		w.i++
		w.space()
		if k, ok := s.index[string(key)]; ok {
			if seen[k/64]&(1<<(k%64)) != 0 {
				return &keyError{twice: true, path: []keySeg{{name: s.names[k]}}}
			}
			seen[k/64] |= 1 << (k % 64)
			if err = w.value(s.sub[k]); err != nil {
				return at(err, keySeg{name: s.names[k]})
			}
			kept = w.i
		} else {
			if s.strict {
				return &keyError{path: []keySeg{{name: string(key)}}}
			}
			if err = w.skip(); err != nil {
				return err
			}
			if s.resembles(key) {
				w.drop(member, kept)
			} else {
				kept = w.i
			}
		}
		if err != nil {
			return err
		}
		w.space()
		if w.i >= len(w.b) {
			return errKeySyntax
		}
		switch w.b[w.i] {
		case ',':
			w.i++
		case '}':
			w.i++
			return nil
		default:
			return errKeySyntax
		}
	}
}

// drop marks the member from member to w.i for blanking, with the comma
// after it or, for the last member, everything after the last member kept
// (kept, -1 for none): the object is as if it had never held the member.
func (w *keyWalker) drop(member, kept int) {
	end := w.i
	w.space()
	switch {
	case w.i < len(w.b) && w.b[w.i] == ',':
		end = w.i + 1
	case kept >= 0:
		member = kept
	}
	w.blank = append(w.blank, member, end)
}

// resembles reports whether key is one of s's names in another spelling,
// one encoding/json would take for it.
func (s *keyShape) resembles(key []byte) bool {
	for _, n := range s.names {
		if bytes.EqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

func (w *keyWalker) array(s *keyShape) error {
	w.i++ // [
	w.space()
	if w.i < len(w.b) && w.b[w.i] == ']' {
		w.i++
		return nil
	}
	for n := 0; ; n++ {
		w.space()
		if err := w.value(s); err != nil {
			return at(err, keySeg{index: n})
		}
		w.space()
		if w.i >= len(w.b) {
			return errKeySyntax
		}
		switch w.b[w.i] {
		case ',':
			w.i++
		case ']':
			w.i++
			return nil
		default:
			return errKeySyntax
		}
	}
}

// str reads the string at w.i: its contents' bounds, and whether it has
// escapes.
func (w *keyWalker) str() (start, end int, escaped bool, err error) {
	if w.i >= len(w.b) || w.b[w.i] != '"' {
		return 0, 0, false, errKeySyntax
	}
	start = w.i + 1
	for k := start; ; {
		q := bytes.IndexByte(w.b[k:], '"')
		if q < 0 {
			return 0, 0, false, errKeySyntax
		}
		q += k
		// The quote ends the string unless an odd run of backslashes
		// escapes it.
		bs := 0
		for p := q - 1; p >= start && w.b[p] == '\\'; p-- {
			bs++
		}
		if bs%2 == 0 {
			w.i = q + 1
			return start, q, bytes.IndexByte(w.b[start:q], '\\') >= 0, nil
		}
		k = q + 1
	}
}

// skip passes over the value at w.i.
func (w *keyWalker) skip() error {
	if w.i >= len(w.b) {
		return errKeySyntax
	}
	switch w.b[w.i] {
	case '"':
		_, _, _, err := w.str()
		return err
	case '{', '[':
		depth := 0
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case '"':
				if _, _, _, err := w.str(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					w.i++
					return nil
				}
			}
			w.i++
		}
		return errKeySyntax
	}
	start := w.i
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if w.i == start {
				return errKeySyntax
			}
			return nil
		}
		w.i++
	}
	if w.i == start {
		return errKeySyntax
	}
	return nil
}

// refusal is the 400 of a member refused, named by its path as OpenAI
// names parameters ("messages[1].role"): one given twice, or one a strict
// object does not define, refused as OpenAI's API refuses an argument it
// does not know.
func (e *keyError) refusal() error {
	var sb strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		switch seg := e.path[i]; {
		case seg.name == "":
			sb.WriteString("[" + strconv.Itoa(seg.index) + "]")
		case sb.Len() > 0:
			sb.WriteString("." + seg.name)
		default:
			sb.WriteString(seg.name)
		}
	}
	p := sb.String()
	if e.twice {
		return invalid(p, "Duplicate key in the request body: '%s' is given more than once; give each parameter once.", p)
	}
	return invalid(p, "Unrecognized request argument supplied: %s", p)
}
