package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// The Schema machine is the language of OpenAI's response_format
// {"type": "json_schema", "json_schema": {"schema": ...}} (structured
// outputs): the JSON text of one value valid against a JSON Schema of the
// strict-mode subset. Whitespace and UTF-8 are as for JSON (none before or
// after the value, runs of at most MaxSpace between tokens, nesting at
// most MaxSchemaDepth containers deep).
//
// Supported keywords: "type" (a name or a list of names), "properties",
// "required", "additionalProperties" (true, false or absent), "items" (one
// schema), "prefixItems" (a tuple's first items, "items" after them, or
// none after "items": false), "allOf" of one schema, "minItems" and "maxItems" (at most
// MaxSchemaItems), "format"
// (for strings: "date-time", "date", "time", "uuid", "email", "hostname",
// "ipv4", "ipv6" and "duration"), "pattern" (ECMA-262, as JSON Schema
// has it: lookaround, backreferences, word boundaries and inline flags
// refused), "minLength" and "maxLength" (at most MaxSchemaLength, beside
// "pattern" too, not beside the first four formats), "minimum",
// "maximum", "exclusiveMinimum" and "exclusiveMaximum" (for numbers and
// integers: numbers, or draft 4's true or false beside "minimum" or
// "maximum"), "multipleOf" (a positive integer, on "integer" alone),
// "enum" and "const", "anyOf" and "oneOf" (alike) whose
// alternatives start with different bytes — but for objects, which may be
// several when each begins with a required property and their first keys
// differ or, where they share it, its values are consts or enums that no
// two share (a discriminated union, told apart once that key or value is
// read) —, "$ref" to "#", "#/$defs/NAME" or "#/definitions/NAME"
// (recursion allowed), and the annotations (title, description, default,
// examples, $schema, $id, $comment, deprecated, readOnly, writeOnly,
// discriminator). Any other keyword
// ("allOf", "multipleOf" but on integers, ...) or format ("uri",
// "idn-email", ...) is
// refused at compile time, so that nothing in a schema goes unenforced.
//
// How the output is written:
//   - An object with "properties" has its keys in the order the schema
//     lists them, each at most once; a property not in "required" may be
//     skipped; no other key may come ("additionalProperties" is taken as
//     false whatever it says, as OpenAI's strict mode requires). An object
//     without "properties" is any object, unless "additionalProperties" is
//     false (then only {}).
//   - Keys, and the values of "enum" and "const", are matched byte for
//     byte in their compact encoding (json.Marshal's, without HTML
//     escaping; numbers as the schema writes them, objects' keys in the
//     schema's order, no whitespace inside).
//   - "integer" is a JSON number without fraction or exponent.
//   - A number of a node with bounds is written in plain decimal: no
//     exponent, at most MaxBoundDigits (18) integer digits and 18 fraction
//     digits; the bounds hold exactly (a bound may have an exponent, at
//     most 18 fraction digits once written out; one of 10^18 or more in
//     magnitude lies past every such number). Every byte leaves some
//     number in range to finish; the number ends only in range.
//   - A schema without "type" ({} or annotations only) is any JSON value.
//   - A string with "format" is written without escapes: "date-time" is
//     RFC 3339's date-time, YYYY-MM-DDTHH:MM:SS, then an optional fraction
//     of 1 to 9 digits, then Z or an offset +HH:MM or -HH:MM ('t' and 'z'
//     may be lower case); month 01-12, day 01 to the month's last (29
//     February only in leap years), hour 00-23, minute 00-59, second 00-60
//     (60: a leap second), offset hour 00-23 and minute 00-59. "date" is
//     its YYYY-MM-DD, "time" its HH:MM:SS, optional fraction and Z or
//     offset. "uuid" is 8-4-4-4-12 hex digits, either case.
//   - A string with "pattern" contains a match of it somewhere (anchor it
//     with ^ and $ to match the whole), read by an automaton built at
//     compile time (regex.go; at most MaxPatternStates states with the
//     length limits folded in, else refused). Its characters are written
//     as UTF-8 or with the escapes \" \\ \/ \b \f \n \r \t, never \uXXXX,
//     so a pattern that needs another control character is refused.
//     ECMA-262's \s, \S and . keep their meaning (Unicode spaces; any
//     character but line terminators).
//   - "email", "hostname", "ipv4", "ipv6" and "duration" are patterns of
//     their own (formats.go), each a subset of what the format allows:
//     hostnames of one to four labels of 1 to 62 characters, e-mail
//     domains of two to four such labels, no IPv6 zone, durations in RFC
//     3339's order without gaps (P1Y2M, not P1Y2D).
//   - "minLength" and "maxLength" count a string's characters as JSON
//     Schema does, Unicode code points of the decoded string: a character
//     written in UTF-8 or as an escape (\n, \u00e9) is one, and so is a
//     surrogate pair \ud83d\ude00 (a lone surrogate escape, which decoders
//     take as U+FFFD, is one too).

// MaxSchemaDepth is the deepest nesting of objects and arrays a Schema
// state takes (and a schema may describe without recursion).
const MaxSchemaDepth = 32

// Limits of a schema CompileSchema takes.
const (
	MaxSchemaNodes  = 256      // compiled subschemas
	MaxSchemaEnum   = 256      // values of one "enum"
	MaxSchemaBytes  = 64 << 10 // bytes of the schema's JSON text
	MaxSchemaItems  = 256      // the largest minItems or maxItems
	MaxSchemaLength = 4096     // the largest minLength or maxLength
)

// string formats
const (
	fNone uint8 = iota
	fDateTime
	fDate
	fTime
	fUUID
)

var formatNames = map[string]uint8{"date-time": fDateTime, "date": fDate, "time": fTime, "uuid": fUUID}

// node kinds
const (
	kType  uint8 = iota // values of the types in types
	kAny                // any JSON value
	kEnum               // one of enum's literals
	kAnyOf              // one of alts, told apart by the first byte
	kRef                // the same as node target
	kUnion              // an object of one of alts, told apart by its first key (and that key's value)
)

// type bits
const (
	tObject uint8 = 1 << iota
	tArray
	tString
	tNumber
	tInteger
	tBoolean
	tNull
)

// classes of a value's first byte
const (
	cObj = iota
	cArr
	cStr
	cNum
	cTrue
	cFalse
	cNull
	nClass
)

var classNames = [nClass]string{"an object", "an array", "a string", "a number", "true", "false", "null"}

func classOf(b byte) int {
	switch {
	case b == '{':
		return cObj
	case b == '[':
		return cArr
	case b == '"':
		return cStr
	case b == '-' || isDigit(b):
		return cNum
	case b == 't':
		return cTrue
	case b == 'f':
		return cFalse
	case b == 'n':
		return cNull
	}
	return -1
}

// noFit is a need past MaxSchemaDepth: no such value fits.
const noFit = 255

// anyNode is the index of the node of any JSON value; a frame of an
// unconstrained container has it.
const anyNode = 0

// arrFrame marks a frame's node as an array's (a node whose type is both
// object and array has frames of either kind).
const arrFrame = 0x8000

type sprop struct {
	key      []byte // as written: quoted, escaped
	node     uint16
	required bool
	alt      uint16 // a kUnion's key: the alternative it tells (0: its value tells)
}

type snode struct {
	kind      uint8
	types     uint8 // kType
	props     []sprop
	anyObject bool // an object without "properties": any object
	items     uint16
	prefix    []uint16 // an array's first items' nodes (prefixItems); items follows them
	minItems  int
	maxItems  int      // -1: no limit
	format    uint8    // a string's format (fNone: free)
	minLen    int      // a free string's least length, in code points
	maxLen    int      // a free string's greatest length; -1: no limit
	pat       *dfa     // a string's pattern (or format) automaton, its length limits folded in
	enum      [][]byte // kEnum: compact encodings
	alts      []uint16 // kAnyOf, kUnion
	union     uint16   // kAnyOf: the kUnion of its object alternatives (0: none)
	litAlt    []uint16 // a kUnion's key's values (kEnum): each literal's alternative
	dispatch  [nClass]uint16
	target    uint16 // kRef
	classes   uint8  // the classes its values may start with
	// need[c]: the containers a value starting with class c opens, one
	// inside another, at least (noFit: none fits in MaxSchemaDepth); fit:
	// the least of them
	need [nClass]uint8
	fit  uint8
	path string

	num *numRange // a number's bounds (schema_num.go); nil: none
}

// compiled is a compiled schema, shared read-only by its states.
type compiled struct {
	nodes []snode
	root  uint16
}

// Schema is the state of a schema's machine: a value, copied by
// assignment (it points at the compiled schema, which it never changes).
// The start state is CompileSchema's result.
type Schema struct {
	c      *compiled
	lex    uint8
	aux    uint8
	space  uint8
	lo, hi uint8 // sStrUTF: the range of the next byte
	depth  uint8
	cur    uint16 // the node of the value being read
	li, lk uint16 // sKey, sEnum: the first candidate literal, bytes matched; in a number lk: its part's digits
	// in a number of a node with bounds (cur; aux 2: negative): the
	// integer part and the fraction ·10^18 read
	nI, nF uint64
	stack  [MaxSchemaDepth]sframe
}

// sframe is an open container: its node (arrFrame set for an array) and,
// for an object with properties, the next property that may come; for an
// array, the items read (up to maxItems, or minItems without one).
type sframe struct{ node, pos uint16 }

// lexical states of the Schema machine
const (
	sValue    uint8 = iota // a value of node cur
	sArrFirst              // after '[': an item or ']'
	sObjFirst              // after '{': a key or '}'
	sObjKey                // after ',' in an object: a key
	sKey                   // in a key of an object with properties (li, lk)
	sColon                 // after a key: ':' (cur: the value's node)
	sAfter                 // after a value in a container: ',' or its close
	sDone                  // the value is complete
	sStr                   // in a free string (aux 1: a key of any object)
	sStrEsc                // after a backslash
	sStrHex                // in \uXXXX (aux: hex digits left, +4 for a key)
	sStrUTF                // in a multi-byte character (aux: bytes left, +4 for a key)
	sNumMinus              // after '-' (aux 1: an integer)
	sNumZero               // after a leading 0
	sNumInt                // in the integer part
	sNumDot                // after '.'
	sNumFrac               // in the fraction
	sNumE                  // after 'e'
	sNumESign              // after the exponent's sign
	sNumExp                // in the exponent
	sLit                   // in true, false or null (aux: literal·8 + bytes read)
	sEnum                  // in an enum's literal (cur, li, lk)
	sFmt                   // in a formatted string of node cur (li: position, lk: what it needs)
	sPat                   // in a string of node cur read by its automaton (li: its state)
	sPatEsc                // after a backslash there
)

// Done reports whether the output is a whole value matching the schema.
// A top-level number is done while more digits could still come.
func (s *Schema) Done() bool {
	if s.lex == sDone {
		return true
	}
	if s.depth != 0 {
		return false
	}
	switch s.lex {
	case sNumZero, sNumInt, sNumFrac, sNumExp:
		return s.cur == anyNode || s.numIn()
	case sEnum:
		return s.enumNumberEnds()
	}
	return false
}

// Plain reports whether s is inside a string whose content is free (not
// mid-escape, not mid-character): any whole UTF-8 characters without '"',
// '\\' or controls keep the state as it is.
// A string with a format or a length limit is never plain; one with a
// pattern is where every plain character loops back to its automaton's
// state (a search's match found, say).
func (s *Schema) Plain() bool {
	return s.lex == sStr && s.cur == anyNode || s.lex == sPat && s.c.nodes[s.cur].pat.free[s.li]
}

// PlainUpTo reports, between characters of a string with a length limit,
// how many characters of plain text may come next: what maxLength leaves
// (every character counts one), or any number without a maxLength
// (PlainCounter).
func (s *Schema) PlainUpTo() (int, bool) {
	if s.lex != sStr || s.cur == anyNode {
		return 0, false
	}
	n := &s.c.nodes[s.cur]
	if n.maxLen < 0 {
		return math.MaxInt, true
	}
	return n.maxLen - int(s.li), true
}

// Key appends to dst bytes that identify the state: two states of one
// compiled schema with the same key accept the same continuations.
func (s *Schema) Key(dst []byte) []byte {
	dst = append(dst, s.lex, s.aux, s.space, s.lo, s.hi, s.depth,
		byte(s.cur), byte(s.cur>>8), byte(s.li), byte(s.li>>8), byte(s.lk), byte(s.lk>>8))
	for _, f := range s.stack[:s.depth] {
		dst = append(dst, byte(f.node), byte(f.node>>8), byte(f.pos), byte(f.pos>>8))
	}
	return s.numKey(dst)
}

// Feed reads one byte; it reports false (leaving s unusable) when the
// byte cannot come next.
func (s *Schema) Feed(b byte) bool {
	if s.cur != anyNode && (s.lex == sStr || s.lex == sStrEsc || s.lex == sStrHex) {
		return s.lenByte(b) // in a string with a length limit
	}
	switch s.lex {
	case sFmt:
		return s.fmtByte(b)
	case sPat, sPatEsc:
		return s.patByte(b)
	case sStr, sStrEsc, sStrHex, sStrUTF:
		st := s.lex - sStr
		ok, closed := stringByte(&st, b, &s.aux, &s.lo, &s.hi)
		switch {
		case closed && s.aux == 1: // a key of any object
			s.lex, s.aux, s.cur = sColon, 0, anyNode
		case closed:
			s.afterValue()
		default:
			s.lex = sStr + st
		}
		return ok
	case sLit:
		ok, whole := literalNext(b, &s.aux)
		if whole {
			s.afterValue()
		}
		return ok
	case sKey:
		return s.keyByte(b)
	case sEnum:
		return s.enumByte(b)
	case sNumMinus, sNumZero, sNumInt, sNumDot, sNumFrac, sNumE, sNumESign, sNumExp:
		return s.number(b)
	}
	// between tokens
	if isSpace(b) {
		if s.lex == sDone || s.depth == 0 && s.lex == sValue || s.space >= MaxSpace {
			return false
		}
		s.space++
		return true
	}
	s.space = 0
	switch s.lex {
	case sValue:
		return s.value(b, s.cur)
	case sArrFirst:
		f := &s.stack[s.depth-1]
		if b == ']' {
			return s.canClose(f) && s.pop()
		}
		return s.canAdd(f) && s.value(b, s.itemNode(f))
	case sObjFirst:
		if b == '}' {
			return s.canClose(&s.stack[s.depth-1]) && s.pop()
		}
		fallthrough
	case sObjKey:
		if b != '"' {
			return false
		}
		f := &s.stack[s.depth-1]
		if f.node == anyNode {
			s.lex, s.aux = sStr, 1
			return true
		}
		if !s.keyAhead(f) {
			return false
		}
		s.lex, s.li, s.lk = sKey, f.pos, 1 // every key starts with '"'
		return true
	case sColon:
		if b != ':' {
			return false
		}
		s.lex = sValue
		return true
	case sAfter:
		f := &s.stack[s.depth-1]
		arr := f.node&arrFrame != 0
		switch {
		case b == ',' && arr:
			if !s.canAdd(f) {
				return false
			}
			s.lex, s.cur = sValue, s.itemNode(f)
		case b == ',':
			if f.node != anyNode && !s.keyAhead(f) {
				return false
			}
			s.lex = sObjKey
		case b == ']' && arr, b == '}' && !arr:
			return s.canClose(f) && s.pop()
		default:
			return false
		}
		return true
	}
	return false
}

// itemNode is the node of an array frame's items.
func (s *Schema) itemNode(f *sframe) uint16 {
	if f.node == anyNode|arrFrame {
		return anyNode
	}
	n := &s.c.nodes[f.node&^arrFrame]
	if int(f.pos) < len(n.prefix) {
		return n.prefix[f.pos]
	}
	return n.items
}

// canAdd reports whether an array may take another item.
func (s *Schema) canAdd(f *sframe) bool {
	if f.node == anyNode|arrFrame {
		return true
	}
	n := &s.c.nodes[f.node&^arrFrame]
	return (n.maxItems < 0 || int(f.pos) < n.maxItems) && s.fits(s.itemNode(f))
}

// fits reports whether a value of node n can begin (and end) at the
// current depth.
func (s *Schema) fits(n uint16) bool {
	return int(s.depth)+int(s.c.nodes[n].fit) <= MaxSchemaDepth
}

// keyAhead reports whether an object frame of a node with properties may
// take a key: one from its next property to its first required one whose
// value fits.
func (s *Schema) keyAhead(f *sframe) bool {
	for _, p := range s.c.nodes[f.node].props[f.pos:] {
		if s.fits(p.node) {
			return true
		}
		if p.required {
			break
		}
	}
	return false
}

// canClose reports whether a container may close: an array has its
// minItems, an object its required properties.
func (s *Schema) canClose(f *sframe) bool {
	if f.node&^arrFrame == anyNode {
		return true
	}
	n := &s.c.nodes[f.node&^arrFrame]
	if f.node&arrFrame != 0 {
		return int(f.pos) >= n.minItems
	}
	if n.kind == kUnion {
		return false // each alternative's first property is required
	}
	for _, p := range n.props[f.pos:] {
		if p.required {
			return false
		}
	}
	return true
}

// value begins a value of node n with byte b.
func (s *Schema) value(b byte, n uint16) bool {
	cls := classOf(b)
	if cls < 0 {
		return false
	}
	nd := &s.c.nodes[n]
	if nd.kind == kAnyOf {
		d := nd.dispatch[cls]
		if d == 0 {
			return false
		}
		n = d - 1
		nd = &s.c.nodes[n]
	}
	if nd.classes&(1<<cls) == 0 || int(s.depth)+int(nd.need[cls]) > MaxSchemaDepth {
		return false // a value that could not close within the depth limit
	}
	s.cur, s.li, s.lk = 0, 0, 0
	if nd.kind == kEnum {
		for i, lit := range nd.enum {
			if lit[0] == b {
				s.lex, s.cur, s.li, s.lk = sEnum, n, uint16(i), 1
				s.enumComplete()
				return true
			}
		}
		return false
	}
	switch cls {
	case cObj:
		if nd.kind == kAny || nd.anyObject {
			return s.push(anyNode, sObjFirst)
		}
		return s.push(n, sObjFirst)
	case cArr:
		return s.push(n|arrFrame, sArrFirst)
	case cStr:
		s.lex, s.aux = sStr, 0
		if nd.kind == kType && nd.pat != nil {
			s.lex, s.cur, s.li = sPat, n, nd.pat.start
		} else if nd.kind == kType && nd.format != fNone {
			s.lex, s.cur = sFmt, n
			if nd.format == fTime {
				s.li = fpHour
			}
		} else if nd.kind == kType && (nd.minLen > 0 || nd.maxLen >= 0) {
			s.cur = n
		}
	case cNum:
		s.aux = 0
		if nd.kind == kType && nd.types&tNumber == 0 {
			s.aux = 1 // an integer
		}
		if nd.num != nil {
			return s.boundStart(n, b)
		}
		n, digits := numberStart(b)
		s.lex, s.lk = sNumMinus+n, digits
	case cTrue:
		s.lex, s.aux = sLit, 0*8+1
	case cFalse:
		s.lex, s.aux = sLit, 1*8+1
	case cNull:
		s.lex, s.aux = sLit, 2*8+1
	}
	return true
}

func (s *Schema) push(node uint16, lex uint8) bool {
	if int(s.depth) == MaxSchemaDepth {
		return false
	}
	s.stack[s.depth] = sframe{node, 0}
	s.depth++
	s.lex, s.aux, s.space = lex, 0, 0
	return true
}

func (s *Schema) pop() bool {
	s.depth--
	s.stack[s.depth] = sframe{}
	s.afterValue()
	return true
}

// afterValue: a value has ended; an array counts it.
func (s *Schema) afterValue() {
	if s.lex == sEnum && s.depth > 0 {
		if f := &s.stack[s.depth-1]; f.node&arrFrame == 0 && s.c.nodes[f.node].kind == kUnion {
			// the union's first value tells its alternative
			f.node, f.pos = s.c.nodes[s.cur].litAlt[s.enumMatch()], 1
		}
	}
	s.aux, s.space, s.lo, s.hi, s.cur, s.li, s.lk = 0, 0, 0, 0, 0, 0, 0
	if s.depth == 0 {
		s.lex = sDone
		return
	}
	s.lex = sAfter
	f := &s.stack[s.depth-1]
	if f.node&arrFrame == 0 || f.node == anyNode|arrFrame {
		return
	}
	n := &s.c.nodes[f.node&^arrFrame]
	limit := n.maxItems
	if limit < 0 {
		limit = max(n.minItems, len(n.prefix)) // past both, items alone follow
	}
	if int(f.pos) < limit {
		f.pos++
	}
}

// keyByte reads byte b of a key: the candidates are the properties from
// the frame's next one up to its first required one, those whose key
// begins with the bytes read and whose value fits; li is the first of
// them.
func (s *Schema) keyByte(b byte) bool {
	f := &s.stack[s.depth-1]
	props := s.c.nodes[f.node].props
	pre := props[s.li].key[:s.lk]
	for j := int(s.li); j < len(props); j++ {
		k := props[j].key
		if len(k) > int(s.lk) && k[s.lk] == b && bytes.Equal(k[:s.lk], pre) && s.fits(props[j].node) {
			s.li, s.lk = uint16(j), s.lk+1
			if int(s.lk) == len(k) { // a key's closing quote: it is complete
				f.pos = uint16(j) + 1
				s.lex, s.cur, s.li, s.lk = sColon, props[j].node, 0, 0
				if a := props[j].alt; a != 0 { // a union's key that tells its alternative
					f.node, f.pos = a, 1
				}
			}
			return true
		}
		if props[j].required {
			break
		}
	}
	return false
}

// enumByte reads byte b of an enum's literal.
func (s *Schema) enumByte(b byte) bool {
	lits := s.c.nodes[s.cur].enum
	pre := lits[s.li][:s.lk]
	for j := int(s.li); j < len(lits); j++ {
		l := lits[j]
		if len(l) > int(s.lk) && l[s.lk] == b && bytes.Equal(l[:s.lk], pre) {
			s.li, s.lk = uint16(j), s.lk+1
			s.enumComplete()
			return true
		}
	}
	// a number ends at the byte after it, which its container reads
	if s.enumNumberEnds() {
		s.afterValue()
		return s.Feed(b)
	}
	return false
}

// enumComplete ends the value when a candidate that is not a number is
// complete (such a literal is a prefix of no other JSON value).
func (s *Schema) enumComplete() {
	lits := s.c.nodes[s.cur].enum
	pre := lits[s.li][:s.lk]
	for _, l := range lits[s.li:] {
		if len(l) == int(s.lk) && bytes.Equal(l, pre) && classOf(l[0]) != cNum {
			s.afterValue()
			return
		}
	}
}

// enumMatch is the index of the literal read whole.
func (s *Schema) enumMatch() int {
	lits := s.c.nodes[s.cur].enum
	pre := lits[s.li][:s.lk]
	for j := int(s.li); j < len(lits); j++ {
		if len(lits[j]) == int(s.lk) && bytes.Equal(lits[j], pre) {
			return j
		}
	}
	return int(s.li)
}

// enumNumberEnds reports whether a candidate number is complete.
func (s *Schema) enumNumberEnds() bool {
	lits := s.c.nodes[s.cur].enum
	pre := lits[s.li][:s.lk]
	for _, l := range lits[s.li:] {
		if len(l) == int(s.lk) && bytes.Equal(l, pre) && classOf(l[0]) == cNum {
			return true
		}
	}
	return false
}

// number reads byte b in a number (aux 1: an integer's); a byte that ends
// it is read again after it.
func (s *Schema) number(b byte) bool {
	if s.cur != anyNode {
		return s.boundByte(b)
	}
	next, digits, ok, end := numberByte(s.lex-sNumMinus, s.lk, b, s.aux == 1)
	switch {
	case !ok:
		return false
	case end:
		s.afterValue()
		return s.Feed(b)
	}
	s.lex, s.lk = sNumMinus+next, digits // lk: the part's digits
	return true
}

// utf8Start begins a multi-byte UTF-8 character in a string (aux: 1 in a
// key): only well-formed sequences pass.
func (s *Schema) utf8Start(b byte) bool {
	n, lo, hi, ok := utf8Lead(b)
	if !ok {
		return false
	}
	s.lex, s.aux, s.lo, s.hi = sStrUTF, s.aux*4+n, lo, hi
	return true
}

// flags of a length-limited string's state, in lk
const (
	lPendHigh = 1 // the last character was a high surrogate's escape
	lOpen     = 2 // the escape being read is not counted yet: it may be the low half of a pair
	lD        = 4 // the \u escape's first digit is d
	lHigh     = 8 // the \u escape is a high surrogate's
)

// lenByte reads byte b in a string of node cur, which has a length limit
// (lex sStr, sStrEsc or sStrHex; li: the characters read, up to maxLen,
// or minLen without one). A character counts at its first byte; an escape
// after a high surrogate's counts once it is known not to be the pair's
// low half.
func (s *Schema) lenByte(b byte) bool {
	n := &s.c.nodes[s.cur]
	switch s.lex {
	case sStr:
		switch {
		case b == '"':
			if int(s.li) < n.minLen {
				return false
			}
			s.afterValue()
			return true
		case b == '\\':
			s.lex = sStrEsc
			if s.lk&lPendHigh != 0 {
				s.lk = lOpen
				return true
			}
			s.lk = 0
			return s.countChar(n)
		case b < 0x20:
			return false
		}
		s.lk = 0
		if !s.countChar(n) {
			return false
		}
		if b >= 0x80 {
			return s.utf8Start(b)
		}
		return true
	case sStrEsc:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			s.lex = sStr
			if s.lk&lOpen != 0 {
				s.lk = 0
				return s.countChar(n)
			}
			return true
		case 'u':
			s.lex, s.aux = sStrHex, 4
			return true
		}
		return false
	case sStrHex:
		if !isHex(b) {
			return false
		}
		switch {
		case s.aux == 4 && (b == 'd' || b == 'D'):
			s.lk |= lD
		case s.aux == 4 && s.lk&lOpen != 0:
			s.lk &^= lOpen
			if !s.countChar(n) {
				return false
			}
		case s.aux == 3 && s.lk&lD != 0:
			s.lk &^= lD
			low := b >= 'c' && b <= 'f' || b >= 'C' && b <= 'F'
			if !low && b >= '8' {
				s.lk |= lHigh
			}
			if s.lk&lOpen != 0 {
				s.lk &^= lOpen
				if !low && !s.countChar(n) {
					return false
				}
			}
		}
		if s.aux > 1 {
			s.aux--
			return true
		}
		s.lex, s.aux = sStr, 0
		if s.lk&lHigh != 0 {
			s.lk = lPendHigh
		} else {
			s.lk = 0
		}
		return true
	}
	return false
}

// patByte reads byte b in a string of node cur, which has an automaton:
// the decoded text's bytes go through it, escapes as the byte they stand
// for; the closing quote needs an accepting state.
func (s *Schema) patByte(b byte) bool {
	d := s.c.nodes[s.cur].pat
	if s.lex == sPatEsc {
		c, ok := escaped(b)
		if !ok {
			return false
		}
		b = c
		s.lex = sPat
	} else {
		switch {
		case b == '"':
			if !d.accept[s.li] {
				return false
			}
			s.afterValue()
			return true
		case b == '\\':
			s.lex = sPatEsc
			return d.esc[s.li]
		case b < 0x20:
			return false
		}
	}
	t := d.step(s.li, b)
	s.li = uint16(t)
	return t >= 0
}

// countChar counts a character of a length-limited string of node n.
func (s *Schema) countChar(n *snode) bool {
	switch {
	case n.maxLen >= 0:
		if int(s.li) >= n.maxLen {
			return false
		}
		s.li++
	case int(s.li) < n.minLen:
		s.li++
	}
	return true
}

// positions in a formatted string (li): a date-time's, which a date's
// and a time's share
const (
	fpMonth    = 5  // YYYY-
	fpDay      = 8  // YYYY-MM-
	fpT        = 10 // YYYY-MM-DD
	fpHour     = 11 // ...T
	fpMin      = 14 // ...THH:
	fpSec      = 17 // ...THH:MM:
	fpAfterSec = 19 // ...THH:MM:SS
	fpDot      = 20 // ...THH:MM:SS.
	fpFrac     = 21 // in the fraction (lk: its digits)
	fpEnd      = 22 // the closing quote
	fpOffset   = 23 // ...+
	fpUUIDEnd  = 36
)

// fmtByte reads byte b in a string of node cur, which has a format (li:
// the position; lk: the year mod 400 in it, then 0x100 for a leap year
// with the month's digits, a day's first digit or an hour's, minute's or
// second's first digit, or a fraction's digits).
func (s *Schema) fmtByte(b byte) bool {
	f := s.c.nodes[s.cur].format
	pos, lk := s.li, s.lk
	if pos == fpEnd && f != fUUID || pos == fpUUIDEnd && f == fUUID {
		if b != '"' {
			return false
		}
		s.afterValue()
		return true
	}
	if f == fUUID {
		switch pos {
		case 8, 13, 18, 23:
			if b != '-' {
				return false
			}
		default:
			if !isHex(b) {
				return false
			}
		}
		s.li++
		return true
	}
	d := uint16(b) - '0'
	isDigit := isDigit(b)
	upTo := func(hi uint16) bool { return isDigit && d <= hi }
	next := pos + 1
	ok := true
	switch pos {
	case 0, 1, 2, 3:
		ok = isDigit
		lk = (lk*10 + d) % 400
		if pos == 3 {
			if lk%4 == 0 && (lk%100 != 0 || lk == 0) {
				lk = 0x100
			} else {
				lk = 0
			}
		}
	case 4, 7:
		ok = b == '-'
	case fpMonth:
		ok = upTo(1)
		lk |= d
	case fpMonth + 1:
		d1 := lk & 0xFF
		ok = isDigit && (d1 == 0 && d > 0 || d1 == 1 && d <= 2)
		lk = lk&0x100 | (d1*10 + d)
	case fpDay:
		m := lk & 0xFF
		ok = upTo(3) && (d < 3 || m != 2)
		lk = lk&0x100 | m<<2 | d
	case fpDay + 1:
		d1, m, leap := lk&3, lk>>2&0x3F, lk&0x100 != 0
		switch d1 {
		case 0:
			ok = isDigit && d > 0
		case 1:
			ok = isDigit
		case 2:
			ok = isDigit && (m != 2 || leap || d < 9)
		case 3:
			long := m == 1 || m == 3 || m == 5 || m == 7 || m == 8 || m == 10 || m == 12
			ok = d == 0 || d == 1 && long
		}
		lk = 0
		if f == fDate {
			next = fpEnd
		}
	case fpT:
		ok = b == 'T' || b == 't'
	case fpHour, fpOffset:
		ok = upTo(2)
		lk = d
	case fpHour + 1, fpOffset + 1:
		ok = isDigit && (lk < 2 || d <= 3)
		lk = 0
	case fpMin - 1, fpSec - 1, fpOffset + 2:
		ok = b == ':'
	case fpMin, fpOffset + 3:
		ok = upTo(5)
	case fpMin + 1:
		ok = isDigit
	case fpOffset + 4:
		ok = isDigit
		next = fpEnd
	case fpSec:
		ok = upTo(6)
		lk = d
	case fpSec + 1:
		ok = isDigit && (lk < 6 || d == 0)
		lk = 0
	case fpDot:
		ok = isDigit
		lk, next = 1, fpFrac
	case fpAfterSec, fpFrac:
		switch {
		case b == '.' && pos == fpAfterSec:
			next = fpDot
		case isDigit && pos == fpFrac && lk < 9:
			lk, next = lk+1, fpFrac
		case b == 'Z' || b == 'z':
			lk, next = 0, fpEnd
		case b == '+' || b == '-':
			lk, next = 0, fpOffset
		default:
			ok = false
		}
	default:
		ok = false
	}
	if !ok {
		return false
	}
	s.li, s.lk = next, lk
	return true
}

// ---- compiling ----

// oval is a JSON value parsed with its objects' keys in order.
type oval struct {
	kind byte   // '{', '[', '"', '0' (a number), 't', 'f', 'n'
	text string // a string's value, a number's text
	keys []string
	vals []*oval
}

func parseOrdered(dec *json.Decoder, depth int) (*oval, error) {
	if depth > 2*MaxSchemaDepth+16 {
		return nil, errors.New("schema: nested too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		v := &oval{kind: byte(t)}
		seen := map[string]bool{}
		for dec.More() {
			if t == '{' {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key := k.(string)
				if seen[key] {
					return nil, fmt.Errorf("schema: duplicate key %q", key)
				}
				seen[key] = true
				v.keys = append(v.keys, key)
			}
			e, err := parseOrdered(dec, depth+1)
			if err != nil {
				return nil, err
			}
			v.vals = append(v.vals, e)
		}
		if _, err := dec.Token(); err != nil { // the close
			return nil, err
		}
		return v, nil
	case string:
		return &oval{kind: '"', text: t}, nil
	case json.Number:
		return &oval{kind: '0', text: string(t)}, nil
	case bool:
		if t {
			return &oval{kind: 't'}, nil
		}
		return &oval{kind: 'f'}, nil
	case nil:
		return &oval{kind: 'n'}, nil
	}
	return nil, fmt.Errorf("schema: unexpected token %v", tok)
}

// get returns the value of key k of object v, or nil.
func (v *oval) get(k string) *oval {
	for i, key := range v.keys {
		if key == k {
			return v.vals[i]
		}
	}
	return nil
}

// quote is a string's JSON encoding, as json.Marshal writes it without
// escaping HTML.
func quote(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// encode appends v's compact encoding.
func (v *oval) encode(dst []byte) []byte {
	switch v.kind {
	case '"':
		return append(dst, quote(v.text)...)
	case '0':
		return append(dst, v.text...)
	case 't':
		return append(dst, "true"...)
	case 'f':
		return append(dst, "false"...)
	case 'n':
		return append(dst, "null"...)
	}
	dst = append(dst, v.kind)
	for i, e := range v.vals {
		if i > 0 {
			dst = append(dst, ',')
		}
		if v.kind == '{' {
			dst = append(dst, quote(v.keys[i])...)
			dst = append(dst, ':')
		}
		dst = e.encode(dst)
	}
	if v.kind == '{' {
		return append(dst, '}')
	}
	return append(dst, ']')
}

var annotations = map[string]bool{
	"title": true, "description": true, "default": true, "examples": true,
	"$schema": true, "$id": true, "$comment": true, "deprecated": true,
	"readOnly": true, "writeOnly": true,
	"discriminator": true, // OpenAPI's, as Pydantic writes it: the alternatives' consts hold what it says
}

var typeNames = map[string]uint8{
	"object": tObject, "array": tArray, "string": tString, "number": tNumber,
	"integer": tInteger, "boolean": tBoolean, "null": tNull,
}

type compiler struct {
	nodes []snode
	root  *oval
	defs  map[string]uint16 // "$defs/NAME" or "definitions/NAME": node
}

// SchemaError is a schema CompileSchema refuses: Path is the JSON
// pointer of the part refused ("" for the whole schema).
type SchemaError struct {
	Path string
	Msg  string
}

func (e *SchemaError) Error() string {
	p := e.Path
	if p == "" {
		p = "(root)"
	}
	return "schema: " + p + ": " + e.Msg
}

func errAt(path, format string, args ...any) error {
	return &SchemaError{path, fmt.Sprintf(format, args...)}
}

func pointerEscape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// CompileSchema compiles a JSON Schema (the bytes of the "schema" object
// of a json_schema response_format) into its machine's start state.
func CompileSchema(schema []byte) (Schema, error) {
	if len(schema) > MaxSchemaBytes {
		return Schema{}, fmt.Errorf("schema: longer than %d bytes", MaxSchemaBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(schema))
	dec.UseNumber()
	root, err := parseOrdered(dec, 0)
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Schema{}, fmt.Errorf("schema: not JSON: %v", err)
		}
		return Schema{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Schema{}, errors.New("schema: text after the schema")
	}
	c := &compiler{root: root, defs: map[string]uint16{}}
	c.nodes = append(c.nodes, snode{kind: kAny, path: "(any)"}) // anyNode
	r, err := c.compile(root, "", 0, true)
	if err != nil {
		return Schema{}, err
	}
	cs := &compiled{nodes: c.nodes}
	if err := c.finish(cs); err != nil {
		return Schema{}, err
	}
	cs.root = cs.resolve(r)
	if cs.nodes[cs.root].fit == noFit {
		return Schema{}, fmt.Errorf("schema: no value fits in %d levels of nesting (a required property or item recursing forever?)", MaxSchemaDepth)
	}
	return Schema{c: cs, lex: sValue, cur: cs.root}, nil
}

func (c *compiler) alloc(path string) (uint16, error) {
	if len(c.nodes) >= MaxSchemaNodes {
		return 0, errAt(path, "more than %d subschemas", MaxSchemaNodes)
	}
	c.nodes = append(c.nodes, snode{path: path})
	return uint16(len(c.nodes) - 1), nil
}

// compile compiles v (at path, depth containers deep) into a new node.
func (c *compiler) compile(v *oval, path string, depth int, root bool) (uint16, error) {
	if depth > MaxSchemaDepth {
		return 0, errAt(path, "nested deeper than %d containers", MaxSchemaDepth)
	}
	switch v.kind {
	case 't':
		return anyNode, nil
	case 'f':
		return 0, errAt(path, "the schema false is not supported")
	case '{':
	default:
		return 0, errAt(path, "a schema must be an object")
	}
	idx, err := c.alloc(path)
	if err != nil {
		return 0, err
	}
	n := snode{path: path, maxItems: -1, maxLen: -1}
	var typ, props, req, addl, items, minI, maxI, enum, cnst, anyOf, ref, format, minL, maxL, pattern, num, prefix, allOf *oval
	anyOfKey, numKW := "anyOf", ""
	var nk numKeywords
	for i, k := range v.keys {
		e := v.vals[i]
		switch k {
		case "type":
			typ = e
		case "properties":
			props = e
		case "required":
			req = e
		case "additionalProperties":
			addl = e
		case "items":
			items = e
		case "prefixItems":
			prefix = e
		case "minItems":
			minI = e
		case "maxItems":
			maxI = e
		case "format":
			format = e
		case "minLength":
			minL = e
		case "maxLength":
			maxL = e
		case "pattern":
			pattern = e
		case "enum":
			enum = e
		case "const":
			cnst = e
		case "anyOf", "oneOf":
			if anyOf != nil {
				return 0, errAt(path, "both \"anyOf\" and \"oneOf\" are not supported")
			}
			anyOf, anyOfKey = e, k
		case "$ref":
			ref = e
		case "allOf":
			allOf = e
		case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf":
			if num == nil {
				num, numKW = e, k
			}
			nk.set(k, e)
		case "$defs", "definitions":
			if !root {
				return 0, errAt(path, "%q is supported only at the root", k)
			}
			if e.kind != '{' {
				return 0, errAt(path+"/"+k, "must be an object")
			}
		default:
			if !annotations[k] {
				return 0, errAt(path, "%q is not supported", k)
			}
		}
	}
	others := func(except ...*oval) string {
		for i, o := range []*oval{typ, props, req, addl, items, minI, maxI, enum, cnst, anyOf, ref, format, minL, maxL, pattern, num, prefix, allOf} {
			if o != nil && !containsPtr(except, o) {
				return [...]string{"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum", "const", anyOfKey, "$ref", "format", "minLength", "maxLength", "pattern", numKW, "prefixItems", "allOf"}[i]
			}
		}
		return ""
	}
	switch {
	case allOf != nil:
		// One schema in allOf (Pydantic 1's and OpenAPI generators' way
		// of giving a $ref a description) is that schema; more would need
		// their intersection.
		if o := others(allOf); o != "" {
			return 0, errAt(path, "%q alongside \"allOf\" is not supported", o)
		}
		if allOf.kind != '[' || len(allOf.vals) != 1 {
			return 0, errAt(path+"/allOf", "only a list of one schema is supported")
		}
		t, err := c.compile(allOf.vals[0], path+"/allOf/0", depth, false)
		if err != nil {
			return 0, err
		}
		n.kind, n.target = kRef, t
	case ref != nil:
		if o := others(ref); o != "" {
			return 0, errAt(path, "%q alongside \"$ref\" is not supported", o)
		}
		t, err := c.ref(ref, path+"/$ref")
		if err != nil {
			return 0, err
		}
		n.kind, n.target = kRef, t
	case anyOf != nil:
		if o := others(anyOf); o != "" {
			return 0, errAt(path, "%q alongside %q is not supported", o, anyOfKey)
		}
		if anyOf.kind != '[' || len(anyOf.vals) == 0 {
			return 0, errAt(path+"/"+anyOfKey, "must be a non-empty array of schemas")
		}
		n.kind = kAnyOf
		for i, a := range anyOf.vals {
			t, err := c.compile(a, fmt.Sprintf("%s/%s/%d", path, anyOfKey, i), depth, false)
			if err != nil {
				return 0, err
			}
			n.alts = append(n.alts, t)
		}
	case enum != nil || cnst != nil:
		if enum != nil && cnst != nil {
			return 0, errAt(path, "both \"enum\" and \"const\" are not supported")
		}
		if o := others(typ, enum, cnst); o != "" {
			return 0, errAt(path, "%q alongside \"enum\" or \"const\" is not supported", o)
		}
		var mask uint8 = 0xFF
		if typ != nil {
			if mask, err = typeMask(typ, path); err != nil {
				return 0, err
			}
		}
		vals := []*oval{cnst}
		kw := "const"
		if enum != nil {
			if enum.kind != '[' {
				return 0, errAt(path+"/enum", "must be an array")
			}
			vals, kw = enum.vals, "enum"
		}
		if len(vals) > MaxSchemaEnum {
			return 0, errAt(path+"/"+kw, "more than %d values", MaxSchemaEnum)
		}
		n.kind = kEnum
	vals:
		for _, e := range vals {
			if mask&valueType(e) == 0 {
				continue // not of the type: no output could have it
			}
			lit := e.encode(nil)
			for _, l := range n.enum {
				if bytes.Equal(l, lit) {
					continue vals
				}
			}
			n.enum = append(n.enum, lit)
		}
		if len(n.enum) == 0 {
			return 0, errAt(path+"/"+kw, "no value of the schema's type")
		}
	case typ == nil:
		if o := others(); o != "" {
			return 0, errAt(path, "%q without \"type\" is not supported", o)
		}
		n.kind = kAny
	default:
		n.kind = kType
		if n.types, err = typeMask(typ, path); err != nil {
			return 0, err
		}
		if (props != nil || req != nil || addl != nil) && n.types&tObject == 0 {
			return 0, errAt(path, "object keywords for a type that is not \"object\"")
		}
		if (items != nil || prefix != nil || minI != nil || maxI != nil) && n.types&tArray == 0 {
			return 0, errAt(path, "array keywords for a type that is not \"array\"")
		}
		if err := c.object(&n, props, req, addl, path, depth); err != nil {
			return 0, err
		}
		if err := c.array(&n, items, prefix, minI, maxI, path, depth); err != nil {
			return 0, err
		}
		if (format != nil || minL != nil || maxL != nil || pattern != nil) && n.types&tString == 0 {
			return 0, errAt(path, "string keywords for a type that is not \"string\"")
		}
		if err := str(&n, format, minL, maxL, pattern, path); err != nil {
			return 0, err
		}
		if err := numBounds(&n, &nk, path); err != nil {
			return 0, err
		}
	}
	c.nodes[idx] = n
	return idx, nil
}

func containsPtr(list []*oval, o *oval) bool {
	for _, e := range list {
		if e == o {
			return true
		}
	}
	return false
}

// valueType is the type bits a JSON value has.
func valueType(v *oval) uint8 {
	switch v.kind {
	case '{':
		return tObject
	case '[':
		return tArray
	case '"':
		return tString
	case '0':
		if strings.ContainsAny(v.text, ".eE") {
			return tNumber
		}
		return tNumber | tInteger
	case 't', 'f':
		return tBoolean
	}
	return tNull
}

func typeMask(typ *oval, path string) (uint8, error) {
	names := []*oval{typ}
	if typ.kind == '[' {
		names = typ.vals
		if len(names) == 0 {
			return 0, errAt(path+"/type", "an empty list of types")
		}
	}
	var mask uint8
	for _, e := range names {
		t, ok := typeNames[e.text]
		if e.kind != '"' || !ok {
			return 0, errAt(path+"/type", "unknown type %s", e.encode(nil))
		}
		mask |= t
	}
	return mask, nil
}

func (c *compiler) object(n *snode, props, req, addl *oval, path string, depth int) error {
	if addl != nil && addl.kind != 't' && addl.kind != 'f' {
		return errAt(path+"/additionalProperties", "only true or false is supported")
	}
	if props == nil {
		n.anyObject = addl == nil || addl.kind == 't'
		if req != nil && len(req.vals) > 0 {
			return errAt(path+"/required", "\"required\" without \"properties\"")
		}
		return nil
	}
	if props.kind != '{' {
		return errAt(path+"/properties", "must be an object")
	}
	for i, k := range props.keys {
		t, err := c.compile(props.vals[i], path+"/properties/"+pointerEscape(k), depth+1, false)
		if err != nil {
			return err
		}
		n.props = append(n.props, sprop{key: quote(k), node: t})
	}
	if req != nil {
		if req.kind != '[' {
			return errAt(path+"/required", "must be an array of property names")
		}
	names:
		for _, e := range req.vals {
			if e.kind == '"' {
				for i, k := range props.keys {
					if k == e.text {
						n.props[i].required = true
						continue names
					}
				}
			}
			return errAt(path+"/required", "%s is not a property", e.encode(nil))
		}
	}
	return nil
}

func (c *compiler) array(n *snode, items, prefix, minI, maxI *oval, path string, depth int) error {
	n.items = anyNode
	if prefix != nil {
		// A tuple (Pydantic's tuple[int, str]): each of the first items
		// its own schema.
		if prefix.kind != '[' || len(prefix.vals) == 0 {
			return errAt(path+"/prefixItems", "must be a non-empty array of schemas")
		}
		if len(prefix.vals) > MaxSchemaItems {
			return errAt(path+"/prefixItems", "more than %d schemas", MaxSchemaItems)
		}
		for i, v := range prefix.vals {
			t, err := c.compile(v, fmt.Sprintf("%s/prefixItems/%d", path, i), depth+1, false)
			if err != nil {
				return err
			}
			n.prefix = append(n.prefix, t)
		}
	}
	noMore := false // "items": false after prefixItems: no item past them
	if items != nil {
		switch {
		case items.kind == '[':
			return errAt(path+"/items", "a list of item schemas is not supported (use \"prefixItems\")")
		case items.kind == 'f' && prefix != nil:
			noMore = true
		default:
			t, err := c.compile(items, path+"/items", depth+1, false)
			if err != nil {
				return err
			}
			n.items = t
		}
	}
	if err := bounds(minI, maxI, "minItems", "maxItems", path, MaxSchemaItems, &n.minItems, &n.maxItems); err != nil {
		return err
	}
	if noMore && (n.maxItems < 0 || n.maxItems > len(n.prefix)) {
		n.maxItems = len(n.prefix)
		if n.minItems > n.maxItems {
			return errAt(path, "minItems %d is more than the %d items \"prefixItems\" and \"items\": false allow", n.minItems, n.maxItems)
		}
	}
	return nil
}

// str compiles a string's "format", "minLength", "maxLength" and
// "pattern".
func str(n *snode, format, minL, maxL, pattern *oval, path string) error {
	if err := bounds(minL, maxL, "minLength", "maxLength", path, MaxSchemaLength, &n.minLen, &n.maxLen); err != nil {
		return err
	}
	if pattern != nil {
		if pattern.kind != '"' {
			return errAt(path+"/pattern", "must be a string")
		}
		if len(pattern.text) > MaxPatternBytes {
			return errAt(path+"/pattern", "longer than %d bytes", MaxPatternBytes)
		}
		if format != nil {
			return errAt(path, "\"pattern\" alongside \"format\" is not supported")
		}
		d, err := compilePattern(pattern.text, false, n.minLen, n.maxLen, MaxPatternStates)
		if err != nil {
			return errAt(path+"/pattern", "%s: %v", pattern.encode(nil), err)
		}
		n.pat = d
		return nil
	}
	if format == nil {
		return nil
	}
	if format.kind == '"' {
		if p, ok := formatPatterns[format.text]; ok {
			d, err := formatDFA(format.text, p, n.minLen, n.maxLen)
			if err != nil {
				return errAt(path, "\"format\" %s: %v", format.encode(nil), err)
			}
			n.pat = d
			return nil
		}
	}
	f, ok := formatNames[format.text]
	if format.kind != '"' || !ok {
		return errAt(path, "\"format\" %s is not supported", format.encode(nil))
	}
	if minL != nil || maxL != nil {
		return errAt(path, "\"minLength\" or \"maxLength\" alongside \"format\" %s is not supported", format.encode(nil))
	}
	n.format = f
	return nil
}

// bounds reads a pair of count keywords (minItems and maxItems, minLength
// and maxLength) into lo and hi, each left as it is when its keyword is
// absent: integers from 0 to limit, the maximum not below the minimum.
func bounds(minO, maxO *oval, minKW, maxKW, path string, limit int, lo, hi *int) error {
	count := func(o *oval, kw string) (int, error) {
		var v int
		if _, err := fmt.Sscan(o.text, &v); o.kind != '0' || err != nil || v < 0 || v > limit || fmt.Sprint(v) != o.text {
			return 0, errAt(path+"/"+kw, "must be an integer from 0 to %d", limit)
		}
		return v, nil
	}
	var err error
	if minO != nil {
		if *lo, err = count(minO, minKW); err != nil {
			return err
		}
	}
	if maxO != nil {
		if *hi, err = count(maxO, maxKW); err != nil {
			return err
		}
		if *hi < *lo {
			return errAt(path+"/"+maxKW, "less than %s", minKW)
		}
	}
	return nil
}

// ref compiles a "$ref" (once per definition: a recursive one refers to
// the node being compiled).
func (c *compiler) ref(r *oval, path string) (uint16, error) {
	if r.kind != '"' {
		return 0, errAt(path, "must be a string")
	}
	if r.text == "#" {
		return 1, nil // the root's node
	}
	var name, rest string
	var defs *oval
	for _, kw := range []string{"$defs", "definitions"} {
		var ok bool
		if rest, ok = strings.CutPrefix(r.text, "#/"+kw+"/"); ok && !strings.Contains(rest, "/") {
			name, defs = kw+"/"+rest, c.root.get(kw)
			break
		}
	}
	if name == "" {
		return 0, errAt(path, "only \"#\", \"#/$defs/NAME\" and \"#/definitions/NAME\" are supported, not %q", r.text)
	}
	if t, ok := c.defs[name]; ok {
		return t, nil
	}
	var def *oval
	if defs != nil && defs.kind == '{' {
		def = defs.get(strings.NewReplacer("~1", "/", "~0", "~").Replace(rest))
	}
	if def == nil {
		return 0, errAt(path, "%q is not defined", r.text)
	}
	// The definition's node is allocated before it is compiled, so that
	// a reference inside it finds it.
	t, err := c.alloc("/" + name)
	if err != nil {
		return 0, err
	}
	c.defs[name] = t
	c.nodes[t] = snode{kind: kRef, path: "/" + name}
	body, err := c.compile(def, "/"+name, 0, false)
	if err != nil {
		return 0, err
	}
	c.nodes[t].target = body
	return t, nil
}

// resolve follows references to a node that is not one.
func (cs *compiled) resolve(n uint16) uint16 {
	for i := 0; cs.nodes[n].kind == kRef && i <= len(cs.nodes); i++ {
		n = cs.nodes[n].target
	}
	return n
}

// finish resolves references and computes each node's first-byte classes
// and each anyOf's dispatch by first byte.
func (c *compiler) finish(cs *compiled) error {
	for i := range cs.nodes {
		if cs.nodes[i].kind == kRef && cs.nodes[cs.resolve(uint16(i))].kind == kRef {
			return errAt(cs.nodes[i].path, "a \"$ref\" cycle with no schema in it")
		}
	}
	for i := range cs.nodes {
		n := &cs.nodes[i]
		for j := range n.props {
			n.props[j].node = cs.resolve(n.props[j].node)
		}
		n.items = cs.resolve(n.items)
		for j := range n.prefix {
			n.prefix[j] = cs.resolve(n.prefix[j])
		}
		for j := range n.alts {
			n.alts[j] = cs.resolve(n.alts[j])
		}
	}
	for i := range cs.nodes {
		if cs.nodes[i].kind == kAnyOf {
			if err := cs.union(uint16(i)); err != nil {
				return err
			}
		}
	}
	state := make([]uint8, len(cs.nodes)) // 1: in progress, 2: done
	var classes func(i uint16) error
	classes = func(i uint16) error {
		n := &cs.nodes[i]
		switch state[i] {
		case 1:
			return errAt(n.path, "an \"anyOf\" that contains itself")
		case 2:
			return nil
		}
		state[i] = 1
		switch n.kind {
		case kAny:
			n.classes = 1<<nClass - 1
		case kEnum:
			for _, l := range n.enum {
				n.classes |= 1 << classOf(l[0])
			}
		case kType:
			for cls, t := range [nClass]uint8{tObject, tArray, tString, tNumber | tInteger, tBoolean, tBoolean, tNull} {
				if n.types&t != 0 {
					n.classes |= 1 << cls
				}
			}
		case kUnion:
			n.classes = 1 << cObj
		case kAnyOf:
			if n.union != 0 {
				n.dispatch[cObj], n.classes = n.union+1, 1<<cObj
			}
			for j, a := range n.alts {
				if err := classes(a); err != nil {
					return err
				}
				an := &cs.nodes[a]
				for cls := range nClass {
					if an.classes&(1<<cls) == 0 || cls == cObj && n.union != 0 && slices.Contains(cs.nodes[n.union].alts, a) {
						continue
					}
					if d := n.dispatch[cls]; d != 0 {
						k := 0
						for k = range n.alts[:j] {
							if cs.nodes[n.alts[k]].classes&(1<<cls) != 0 {
								break
							}
						}
						return errAt(n.path, "alternatives %d and %d can both start with %s: they must begin with different bytes", k, j, classNames[cls])
					}
					d := a + 1
					if an.kind == kAnyOf {
						d = an.dispatch[cls]
					}
					n.dispatch[cls] = d
				}
				n.classes |= an.classes
			}
		}
		state[i] = 2
		return nil
	}
	for i := range cs.nodes {
		if cs.nodes[i].kind == kRef {
			continue
		}
		if err := classes(uint16(i)); err != nil {
			return err
		}
	}
	cs.needs()
	return nil
}

// union gives anyOf node i a kUnion when two or more of its alternatives
// are objects: each must begin with a required property; alternatives
// whose first keys differ are told apart by the key, those that share it
// by its value, which must then be an enum or const, no value in two.
func (cs *compiled) union(i uint16) error {
	var objs []uint16
	var index []int // objs' places in alts
	for j, a := range cs.nodes[i].alts {
		if n := &cs.nodes[a]; n.kind == kType && n.types&tObject != 0 {
			objs, index = append(objs, a), append(index, j)
		}
	}
	if len(objs) < 2 {
		return nil
	}
	path := cs.nodes[i].path
	for k, a := range objs {
		if n := &cs.nodes[a]; len(n.props) == 0 || !n.props[0].required {
			return errAt(path, "alternatives %d and %d can both start with an object: objects among alternatives must each begin with a required property, told apart by its name or by its value (\"const\" or \"enum\")",
				index[0], index[max(k, 1)])
		}
	}
	u := snode{kind: kUnion, types: tObject, alts: objs, path: path}
	var added []snode
	for k, a := range objs {
		key := cs.nodes[a].props[0].key
		if slices.ContainsFunc(u.props, func(p sprop) bool { return bytes.Equal(p.key, key) }) {
			continue // its group is made
		}
		var group []int // indexes into objs
		for m := k; m < len(objs); m++ {
			if bytes.Equal(cs.nodes[objs[m]].props[0].key, key) {
				group = append(group, m)
			}
		}
		if len(group) == 1 {
			u.props = append(u.props, sprop{key: key, node: cs.nodes[a].props[0].node, alt: a})
			continue
		}
		merged := snode{kind: kEnum, path: path}
		for _, m := range group {
			v := &cs.nodes[cs.nodes[objs[m]].props[0].node]
			if v.kind != kEnum {
				return errAt(path, "alternatives %d and %d both begin with %s: its value must be a \"const\" or \"enum\" in each, to tell them apart",
					index[group[0]], index[group[1]], key)
			}
			for _, lit := range v.enum {
				for l, prev := range merged.enum {
					if bytes.Equal(prev, lit) {
						first := slices.Index(objs, merged.litAlt[l])
						return errAt(path, "alternatives %d and %d can both have %s %s", index[first], index[m], key, lit)
					}
				}
				merged.enum = append(merged.enum, lit)
				merged.litAlt = append(merged.litAlt, objs[m])
			}
		}
		added = append(added, merged)
		u.props = append(u.props, sprop{key: key, node: uint16(len(cs.nodes) + len(added) - 1)})
	}
	cs.nodes = append(cs.nodes, added...)
	cs.nodes = append(cs.nodes, u)
	cs.nodes[i].union = uint16(len(cs.nodes) - 1)
	return nil
}

// needs computes each node's need and fit: the least fixed point, from
// noFit everywhere down (a recursion that must go on forever keeps noFit).
func (cs *compiled) needs() {
	for i := range cs.nodes {
		n := &cs.nodes[i]
		n.fit = noFit
		for c := range n.need {
			n.need[c] = noFit
		}
	}
	for changed := true; changed; {
		changed = false
		for i := range cs.nodes {
			n := &cs.nodes[i]
			if n.kind == kRef {
				continue
			}
			for c := range nClass {
				if n.classes&(1<<c) == 0 {
					continue
				}
				need := 0
				switch {
				case n.kind == kAnyOf:
					need = int(cs.nodes[n.dispatch[c]-1].need[c])
				case n.kind == kUnion: // every alternative must fit: the output picks one
					for _, a := range n.alts {
						need = max(need, int(cs.nodes[a].need[cObj]))
					}
				case n.kind == kEnum || c != cObj && c != cArr:
				case n.kind == kAny || c == cObj && n.anyObject:
					need = 1
				case c == cObj:
					for _, p := range n.props {
						if p.required {
							need = max(need, int(cs.nodes[p.node].fit))
						}
					}
					need++
				case c == cArr:
					for i := 0; i < n.minItems; i++ { // the items it must have
						it := n.items
						if i < len(n.prefix) {
							it = n.prefix[i]
						} else if i > len(n.prefix) {
							break
						}
						need = max(need, int(cs.nodes[it].fit))
					}
					need++
				}
				if need > MaxSchemaDepth {
					need = noFit
				}
				if uint8(need) < n.need[c] {
					n.need[c], changed = uint8(need), true
					n.fit = min(n.fit, uint8(need))
				}
			}
		}
	}
}
