package grammar

// What the JSON and Schema machines read alike: numbers and the bytes of
// multi-byte UTF-8 characters.

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

// numberByte reads byte b in number state n (integer: no fraction or
// exponent may come). It returns the next state, or ok false when b
// cannot come, or end true when b ends the number (the machine reads it
// again after the number).
func numberByte(n uint8, b byte, integer bool) (next uint8, ok, end bool) {
	switch n {
	case nMinus:
		switch {
		case b == '0':
			return nZero, true, false
		case isDigit(b):
			return nInt, true, false
		}
		return n, false, false
	case nDot, nESign:
		if !isDigit(b) {
			return n, false, false
		}
		if n == nDot {
			return nFrac, true, false
		}
		return nExp, true, false
	case nE:
		switch {
		case b == '+' || b == '-':
			return nESign, true, false
		case isDigit(b):
			return nExp, true, false
		}
		return n, false, false
	}
	// nZero, nInt, nFrac, nExp: the number could end here
	switch {
	case isDigit(b) && n != nZero:
		return n, true, false
	case b == '.' && !integer && (n == nZero || n == nInt):
		return nDot, true, false
	case (b == 'e' || b == 'E') && !integer && n != nExp:
		return nE, true, false
	}
	return n, true, true
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
