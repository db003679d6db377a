// Package grammar constrains generation to a language: a machine that
// reads the output byte by byte says which bytes may come next, and a
// Masker turns that into the tokens that may come next (their bytes keep
// the output a prefix of a sentence of the language).
//
// The language here is JSON as OpenAI's response_format {"type":
// "json_object"} asks for it: one JSON object (RFC 8259), nothing before
// or after it. Two limits keep a model from wandering where a parser would
// not follow: whitespace (spaces and newlines) comes in runs of at most
// MaxSpace bytes, and containers nest at most MaxDepth deep.
package grammar

// MaxDepth is the deepest nesting of objects and arrays a JSON state takes.
const MaxDepth = 48

// MaxSpace is the longest run of whitespace between JSON tokens.
const MaxSpace = 24

// lexical states of the JSON machine
const (
	jTop      uint8 = iota // before the top-level object: '{'
	jValue                 // a value
	jArrFirst              // after '[': a value or ']'
	jObjFirst              // after '{': a key or '}'
	jObjKey                // after ',' in an object: a key
	jColon                 // after a key: ':'
	jAfter                 // after a value in a container: ',' or its close
	jDone                  // the object is complete
	jStr                   // in a string (aux 1: a key)
	jStrEsc                // after a backslash
	jStrHex                // in \uXXXX (aux: hex digits left, +4 for a key)
	jStrUTF                // in a multi-byte character (aux: bytes left, +4 for a key; lo/hi: the next byte's range)
	jNumMinus              // after '-': a digit
	jNumZero               // after a leading 0: '.', 'e' or the end
	jNumInt                // in the integer part
	jNumDot                // after '.': a digit
	jNumFrac               // in the fraction
	jNumE                  // after 'e': a sign or a digit
	jNumESign              // after the exponent's sign: a digit
	jNumExp                // in the exponent
	jLit                   // in true, false or null (aux: literal·8 + bytes read)
)

// JSON is the state of the JSON machine: a small value, copied freely.
// Its zero value is the start (before the top-level object).
type JSON struct {
	lex    uint8
	aux    uint8
	space  uint8 // whitespace bytes in the current run
	lo, hi uint8 // jStrUTF: the range of the next byte
	depth  uint8
	stack  [MaxDepth]byte // '{' or '['
}

// Done reports whether the output is a whole JSON object.
func (s *JSON) Done() bool { return s.lex == jDone }

// Plain reports whether s is inside a string, between characters and
// escapes, where plain text keeps it as it is (Machine).
func (s *JSON) Plain() bool { return s.lex == jStr }

// Key appends to dst bytes that identify the state: two states with the
// same key accept the same continuations.
func (s *JSON) Key(dst []byte) []byte {
	dst = append(dst, s.lex, s.aux, s.space, s.lo, s.hi)
	return append(dst, s.stack[:s.depth]...)
}

// isSpace reports whether b is whitespace a constrained output may write
// between tokens: spaces and newlines. JSON's tabs and carriage returns
// are left out: models indent with spaces, and a model that writes a run
// of tabs or returns under a mask has lost its way.
func isSpace(b byte) bool { return b == ' ' || b == '\n' }

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func isHex(b byte) bool { return isDigit(b) || b|0x20 >= 'a' && b|0x20 <= 'f' }

// Feed reads one byte; it reports false (leaving s unusable) when the
// byte cannot come next.
func (s *JSON) Feed(b byte) bool {
	switch s.lex {
	case jStr, jStrEsc, jStrHex, jStrUTF:
		st := s.lex - jStr
		ok, closed := stringByte(&st, b, &s.aux, &s.lo, &s.hi)
		if closed {
			return s.endString(s.aux == 1)
		}
		s.lex = jStr + st
		return ok
	case jLit:
		ok, whole := literalNext(b, &s.aux)
		if whole {
			s.afterValue()
		}
		return ok
	case jNumMinus, jNumZero, jNumInt, jNumDot, jNumFrac, jNumE, jNumESign, jNumExp:
		return s.number(b)
	}
	// between tokens
	if isSpace(b) {
		if s.lex == jTop || s.lex == jDone || s.space >= MaxSpace {
			return false
		}
		s.space++
		return true
	}
	s.space = 0
	switch s.lex {
	case jTop:
		return b == '{' && s.push(b)
	case jObjFirst:
		if b == '}' {
			return s.pop()
		}
		fallthrough
	case jObjKey:
		if b != '"' {
			return false
		}
		s.lex, s.aux = jStr, 1
		return true
	case jColon:
		if b != ':' {
			return false
		}
		s.lex = jValue
		return true
	case jAfter:
		top := s.stack[s.depth-1]
		switch {
		case b == ',' && top == '{':
			s.lex = jObjKey
		case b == ',':
			s.lex = jValue
		case b == '}' && top == '{', b == ']' && top == '[':
			return s.pop()
		default:
			return false
		}
		return true
	case jArrFirst:
		if b == ']' {
			return s.pop()
		}
		fallthrough
	case jValue:
		return s.value(b)
	}
	return false
}

// value begins a value with byte b.
func (s *JSON) value(b byte) bool {
	switch {
	case b == '{' || b == '[':
		return s.push(b)
	case b == '"':
		s.lex, s.aux = jStr, 0
	case b == '-' || isDigit(b):
		n, digits := numberStart(b)
		s.lex, s.aux = jNumMinus+n, uint8(digits)
	case b == 't':
		s.lex, s.aux = jLit, 0*8+1
	case b == 'f':
		s.lex, s.aux = jLit, 1*8+1
	case b == 'n':
		s.lex, s.aux = jLit, 2*8+1
	default:
		return false
	}
	return true
}

// number reads byte b in a number; a byte that ends it is read again
// after it.
func (s *JSON) number(b byte) bool {
	next, digits, ok, end := numberByte(s.lex-jNumMinus, uint16(s.aux), b, false)
	switch {
	case !ok:
		return false
	case end:
		s.afterValue()
		return s.Feed(b)
	}
	s.lex, s.aux = jNumMinus+next, uint8(digits) // aux: the part's digits
	return true
}

func (s *JSON) push(b byte) bool {
	if int(s.depth) == MaxDepth {
		return false
	}
	s.stack[s.depth] = b
	s.depth++
	if b == '{' {
		s.lex = jObjFirst
	} else {
		s.lex = jArrFirst
	}
	return true
}

func (s *JSON) pop() bool {
	s.depth--
	s.afterValue()
	return true
}

// afterValue: a value has ended.
func (s *JSON) afterValue() {
	s.aux, s.space = 0, 0
	if s.depth == 0 {
		s.lex = jDone
	} else {
		s.lex = jAfter
	}
}

func (s *JSON) endString(key bool) bool {
	if key {
		s.lex, s.aux, s.space = jColon, 0, 0
	} else {
		s.afterValue()
	}
	return true
}
