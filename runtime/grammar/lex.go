package grammar

// What the JSON and Schema machines read alike: numbers, the literals
// true, false and null, and in strings \uXXXX escapes and multi-byte UTF-8
// characters. The string readers keep in aux what is left (hex digits,
// continuation bytes) plus 4 for a key's string; done, aux is 1 for a
// key's string and 0 otherwise.

// string states, in the order both machines' lexical states keep them
// (jStr… and sStr…)
const (
	strIn  uint8 = iota // between characters
	strEsc              // after a backslash
	strHex              // in \uXXXX
	strUTF              // in a multi-byte character
)

// stringByte reads byte b inside a string in string state st (aux, lo and
// hi as the readers below keep them; aux 1 between characters of a key's
// string); closed: b is the closing quote, what follows is the caller's.
func stringByte(st *uint8, b byte, aux, lo, hi *uint8) (ok, closed bool) {
	switch *st {
	case strIn:
		switch {
		case b == '"':
			return true, true
		case b == '\\':
			*st = strEsc
		case b < 0x20:
			return false, false
		case b >= 0x80:
			n, l, h, ok := utf8Lead(b)
			if !ok {
				return false, false
			}
			*st, *aux, *lo, *hi = strUTF, *aux*4+n, l, h
		}
		return true, false
	case strEsc:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			*st = strIn
		case 'u':
			*st, *aux = strHex, 4+4**aux
		default:
			return false, false
		}
		return true, false
	}
	var whole bool
	if *st == strHex {
		ok, whole = hexNext(b, aux)
	} else {
		ok, whole = utf8Next(b, aux, lo, hi)
	}
	if whole {
		*st = strIn
	}
	return ok, false
}

// hexNext reads byte b of a \uXXXX escape; whole: the escape is.
func hexNext(b byte, aux *uint8) (ok, whole bool) {
	if !isHex(b) {
		return false, false
	}
	if (*aux-1)%4 == 0 { // the last digit
		*aux = (*aux - 1) / 4
		return true, true
	}
	*aux--
	return true, false
}

// utf8Next reads a continuation byte of a multi-byte character, which must
// be in [lo, hi] (utf8Lead's range for the first, 0x80..0xBF after);
// whole: the character is (lo and hi are then 0).
func utf8Next(b byte, aux, lo, hi *uint8) (ok, whole bool) {
	if b < *lo || b > *hi {
		return false, false
	}
	*lo, *hi = 0x80, 0xBF
	if *aux%4 == 1 {
		*aux, *lo, *hi = *aux/4, 0, 0
		return true, true
	}
	*aux--
	return true, false
}

// literals are the JSON literals a value may be; their readers keep
// literal·8 + bytes read in aux.
var literals = [3]string{"true", "false", "null"}

// literalNext reads byte b of a literal; whole: the literal is.
func literalNext(b byte, aux *uint8) (ok, whole bool) {
	lit, at := literals[*aux/8], *aux%8
	if b != lit[at] {
		return false, false
	}
	if int(at)+1 == len(lit) {
		return true, true
	}
	*aux++
	return true, false
}

// number states, in the order both machines' lexical states keep them
// (jNumMinus… and sNumMinus…)
const (
	nMinus uint8 = iota // after '-': a digit
	nZero               // after a leading 0: '.', 'e' or the end
	nInt                // in the integer part
	nDot                // after '.': a digit
	nFrac               // in the fraction
	nE                  // after 'e': a sign or a digit
	nESign              // after the exponent's sign: a digit
	nExp                // in the exponent
)

// The most digits a number's integer part, fraction and exponent take. A
// float64 keeps 17 significant digits and an int64 has 19: digits past
// these limits carry nothing a reader keeps, and a model that writes them
// is looping (0.3333…, 4444…).
const (
	MaxIntDigits  = 20
	MaxFracDigits = 20
	MaxExpDigits  = 3
)

// numberByte reads byte b in number state n, whose current part (integer,
// fraction or exponent) has digits digits (integer: no fraction or
// exponent may come). It returns the next state and its part's digits,
// or ok false when b cannot come, or end true when b ends the number (the
// machine reads it again after the number).
func numberByte(n uint8, digits uint16, b byte, integer bool) (next uint8, nd uint16, ok, end bool) {
	switch n {
	case nMinus:
		switch {
		case b == '0':
			return nZero, 1, true, false
		case isDigit(b):
			return nInt, 1, true, false
		}
		return n, digits, false, false
	case nDot, nESign:
		if !isDigit(b) {
			return n, digits, false, false
		}
		if n == nDot {
			return nFrac, 1, true, false
		}
		return nExp, 1, true, false
	case nE:
		switch {
		case b == '+' || b == '-':
			return nESign, 0, true, false
		case isDigit(b):
			return nExp, 1, true, false
		}
		return n, digits, false, false
	}
	// nZero, nInt, nFrac, nExp: the number could end here
	switch {
	case isDigit(b) && n != nZero:
		limit := uint16(MaxIntDigits)
		switch n {
		case nFrac:
			limit = MaxFracDigits
		case nExp:
			limit = MaxExpDigits
		}
		return n, digits + 1, digits < limit, false
	case b == '.' && !integer && (n == nZero || n == nInt):
		return nDot, 0, true, false
	case (b == 'e' || b == 'E') && !integer && n != nExp:
		return nE, 0, true, false
	}
	return n, digits, true, true
}

// numberStart is the number state and digits after a number's first
// byte (c: '-' or a digit).
func numberStart(c byte) (n uint8, digits uint16) {
	switch c {
	case '-':
		return nMinus, 0
	case '0':
		return nZero, 1
	}
	return nInt, 1
}

// utf8Lead reads the first byte of a multi-byte UTF-8 character: the
// continuation bytes it needs and the range of the first of them (the
// others are 0x80 to 0xBF); ok false for a byte no well-formed character
// begins with (so the output is valid UTF-8: no overlong forms, no
// surrogates, nothing past U+10FFFF).
func utf8Lead(b byte) (n, lo, hi uint8, ok bool) {
	switch {
	case b >= 0xC2 && b <= 0xDF:
		return 1, 0x80, 0xBF, true
	case b == 0xE0:
		return 2, 0xA0, 0xBF, true
	case b >= 0xE1 && b <= 0xEC, b == 0xEE, b == 0xEF:
		return 2, 0x80, 0xBF, true
	case b == 0xED:
		return 2, 0x80, 0x9F, true
	case b == 0xF0:
		return 3, 0x90, 0xBF, true
	case b >= 0xF1 && b <= 0xF3:
		return 3, 0x80, 0xBF, true
	case b == 0xF4:
		return 3, 0x80, 0x8F, true
	}
	return 0, 0, 0, false
}
