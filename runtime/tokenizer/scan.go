package tokenizer

import (
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// The split patterns of the GPT-2, Llama 3, Qwen2 and GPT-4o (o200k)
// tokenizers use a negative lookahead, which Go's regexp rejects and which a backtracking
// engine runs slowly. These scanners match them by hand: each returns the
// end of the match that starts at i (every position starts a match).

// The patterns, exactly as tokenizer.json spells them.
const (
	patternGPT2   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	patternLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	patternQwen2  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// GPT-4o's, also Phi-4-mini's and Llama 4's: words split where
	// lower case turns to upper case, contractions kept on their word.
	patternO200k = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanner returns the end of the match starting at i in s.
type scanner func(s string, i int) int

// knownScanner returns the hand-written scanner for pattern, or nil.
func knownScanner(pattern string) scanner {
	switch pattern {
	case patternGPT2:
		return scanGPT2
	case patternLlama3:
		return scanLlama3
	case patternQwen2:
		return scanQwen2
	case patternO200k:
		return scanO200k
	}
	return nil
}

// Character classes of ASCII bytes.
const (
	clLetter = 1 << iota
	clNumber
	clSpace
	clNewline // \r or \n
)

var asciiClass = func() (t [128]uint8) {
	for c := 0; c < 128; c++ {
		r := rune(c)
		switch {
		case unicode.IsLetter(r):
			t[c] = clLetter
		case unicode.IsNumber(r):
			t[c] = clNumber
		case isSpace(r):
			t[c] = clSpace
		}
		if c == '\r' || c == '\n' {
			t[c] |= clNewline
		}
	}
	return
}()

// isSpace is \s of Oniguruma and .NET: the Unicode White_Space property.
func isSpace(r rune) bool { return unicode.IsSpace(r) }

// class returns the class of the rune at i and its length.
func class(s string, i int) (uint8, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	switch {
	case unicode.IsLetter(r):
		return clLetter, n
	case unicode.IsNumber(r):
		return clNumber, n
	case isSpace(r):
		return clSpace, n
	}
	return 0, n
}

// run returns the end of the run of runes starting at i whose class has
// any bit of want set.
func run(s string, i int, want uint8) int {
	for i < len(s) {
		c, n := class(s, i)
		if c&want == 0 {
			break
		}
		i += n
	}
	return i
}

// runOther returns the end of the run of runes that are not letters,
// numbers or whitespace ([^\s\p{L}\p{N}]+).
func runOther(s string, i int) int {
	for i < len(s) {
		c, n := class(s, i)
		if c != 0 {
			break
		}
		i += n
	}
	return i
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (s[i] == '\”).
func contraction(s string, i int, fold bool) int {
	if i+1 >= len(s) {
		return 0
	}
	lower := func(b byte) byte {
		if fold && 'A' <= b && b <= 'Z' {
			return b + 'a' - 'A'
		}
		return b
	}
	switch lower(s[i+1]) {
	case 's', 't', 'm', 'd':
		return i + 2
	case 'r', 'v':
		if i+2 < len(s) && lower(s[i+2]) == 'e' {
			return i + 3
		}
	case 'l':
		if i+2 < len(s) && lower(s[i+2]) == 'l' {
			return i + 3
		}
	}
	return 0
}

// whitespace matches \s+(?!\S)|\s+ at i (s[i] is whitespace): the whole run
// when it ends the text or is one rune long, else the run minus its last
// rune.
func whitespace(s string, i int) int {
	j := run(s, i, clSpace)
	if j == len(s) {
		return j
	}
	_, last := utf8.DecodeLastRuneInString(s[i:j])
	if j-last > i {
		return j - last
	}
	return j
}

// scanGPT2 matches patternGPT2.
func scanGPT2(s string, i int) int {
	if s[i] == '\'' {
		if e := contraction(s, i, false); e > 0 {
			return e
		}
	}
	c, n := class(s, i)
	start := i
	if s[i] == ' ' && i+1 < len(s) {
		nc, _ := class(s, i+1)
		if nc&clSpace == 0 {
			c = nc
			start = i + 1
		}
	}
	switch {
	case c&clLetter != 0:
		return run(s, start, clLetter)
	case c&clNumber != 0:
		return run(s, start, clNumber)
	case c&clSpace == 0:
		return runOther(s, start)
	}
	_ = n
	return whitespace(s, i)
}

func scanLlama3(s string, i int) int { return scanLlamaStyle(s, i, 3) }
func scanQwen2(s string, i int) int  { return scanLlamaStyle(s, i, 1) }

// scanLlamaStyle matches patternLlama3 (maxDigits 3) and patternQwen2
// (maxDigits 1).
func scanLlamaStyle(s string, i int, maxDigits int) int {
	if s[i] == '\'' {
		if e := contraction(s, i, true); e > 0 {
			return e
		}
	}
	c, n := class(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c&clLetter != 0 {
		return run(s, i, clLetter)
	}
	if c&(clNumber|clNewline) == 0 && i+n < len(s) {
		if nc, _ := class(s, i+n); nc&clLetter != 0 {
			return run(s, i+n, clLetter)
		}
	}
	// \p{N}{1,maxDigits}
	if c&clNumber != 0 {
		j := i + n
		for k := 1; k < maxDigits && j < len(s); k++ {
			nc, m := class(s, j)
			if nc&clNumber == 0 {
				break
			}
			j += m
		}
		return j
	}
	// ' '?[^\s\p{L}\p{N}]+[\r\n]*
	start := -1
	if c == 0 {
		start = i
	} else if s[i] == ' ' && i+1 < len(s) {
		if nc, _ := class(s, i+1); nc == 0 {
			start = i + 1
		}
	}
	if start >= 0 {
		j := runOther(s, start)
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j
	}
	// \s*[\r\n]+ : up to the last newline of the whitespace run.
	j := i
	lastNL := -1
	for j < len(s) {
		cc, m := class(s, j)
		if cc&clSpace == 0 {
			break
		}
		if cc&clNewline != 0 {
			lastNL = j + m
		}
		j += m
	}
	if lastNL >= 0 {
		return lastNL
	}
	return whitespace(s, i)
}

// Character classes of the o200k pattern. A rune may be in both upper and
// lower: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}] share
// Lm, Lo and the marks.
const (
	oLetter  = 1 << iota // \p{L}
	oNumber              // \p{N}
	oSpace               // \s
	oNewline             // \r or \n
	oUpper               // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
	oLower               // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
)

var asciiO200k = func() (t [128]uint8) {
	for c := 0; c < 128; c++ {
		t[c] = o200kRune(rune(c))
	}
	return
}()

// o200kRune returns the o200k classes of r.
func o200kRune(r rune) uint8 {
	switch {
	case unicode.IsLetter(r):
		switch {
		case unicode.IsLower(r):
			return oLetter | oLower
		case unicode.IsUpper(r), unicode.IsTitle(r):
			return oLetter | oUpper
		}
		return oLetter | oUpper | oLower // Lm, Lo
	case unicode.IsMark(r):
		return oUpper | oLower
	case unicode.IsNumber(r):
		return oNumber
	case isSpace(r):
		if r == '\r' || r == '\n' {
			return oSpace | oNewline
		}
		return oSpace
	}
	return 0
}

// classO200k returns the o200k classes of the rune at i and its length.
func classO200k(s string, i int) (uint8, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiO200k[c], 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	b := o200kBlocks[r>>8].Load()
	if b == nil {
		b = new([256]uint8)
		for k := range b {
			b[k] = o200kRune(r&^0xff + rune(k))
		}
		o200kBlocks[r>>8].Store(b)
	}
	return b[r&0xff], n
}

// o200kBlocks caches the o200k classes of runes 256 at a time, each block
// filled when a rune of it is first seen: the category tables' binary
// searches were half the scanner's time on text outside ASCII.
var o200kBlocks [(unicode.MaxRune + 1) >> 8]atomic.Pointer[[256]uint8]

// runO200k returns the end of the run of runes starting at i whose classes
// include any of want.
func runO200k(s string, i int, want uint8) int {
	for i < len(s) {
		c, n := classO200k(s, i)
		if c&want == 0 {
			break
		}
		i += n
	}
	return i
}

// contractionSuffix matches (?i:'s|'t|'re|'ve|'m|'ll|'d)? at i.
func contractionSuffix(s string, i int) int {
	if i < len(s) && s[i] == '\'' {
		if e := contraction(s, i, true); e > 0 {
			return e
		}
	}
	return i
}

// o200kCamel matches [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+
// and the contraction after it at i, as a backtracking engine does: the
// upper run, then the lower run after it, or else the upper run given back
// to its last rune that is also lower. It returns -1 for no match.
func o200kCamel(s string, i int) int {
	e, lastLower := i, -1
	for e < len(s) {
		c, n := classO200k(s, e)
		if c&oUpper == 0 {
			if c&oLower != 0 {
				return contractionSuffix(s, runO200k(s, e+n, oLower))
			}
			break
		}
		e += n
		if c&oLower != 0 {
			lastLower = e
		}
	}
	if lastLower < 0 {
		return -1
	}
	return contractionSuffix(s, lastLower)
}

// o200kUpper matches [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*
// and the contraction after it at i, or returns -1.
func o200kUpper(s string, i int) int {
	e := runO200k(s, i, oUpper)
	if e == i {
		return -1
	}
	return contractionSuffix(s, runO200k(s, e, oLower))
}

// scanO200k matches patternO200k.
func scanO200k(s string, i int) int {
	c, n := classO200k(s, i)
	if c&(oLetter|oNumber|oNewline) == 0 {
		// [^\r\n\p{L}\p{N}]? before the letters (or a mark, which may
		// itself be the letters).
		if i+n < len(s) {
			if e := o200kCamel(s, i+n); e >= 0 {
				return e
			}
		}
		if e := o200kCamel(s, i); e >= 0 {
			return e
		}
		if i+n < len(s) {
			if e := o200kUpper(s, i+n); e >= 0 {
				return e
			}
		}
	} else if c&oLetter != 0 {
		if e := o200kCamel(s, i); e >= 0 {
			return e
		}
		return o200kUpper(s, i) // a letter that is not lower is upper
	}
	// \p{N}{1,3}
	if c&oNumber != 0 {
		j := i + n
		for k := 1; k < 3 && j < len(s); k++ {
			nc, m := classO200k(s, j)
			if nc&oNumber == 0 {
				break
			}
			j += m
		}
		return j
	}
	// ' '?[^\s\p{L}\p{N}]+[\r\n/]*
	const notOther = oSpace | oLetter | oNumber
	start := -1
	if c&notOther == 0 {
		start = i
	} else if s[i] == ' ' && i+1 < len(s) {
		if nc, _ := classO200k(s, i+1); nc&notOther == 0 {
			start = i + 1
		}
	}
	if start >= 0 {
		j := start
		for j < len(s) {
			cc, m := classO200k(s, j)
			if cc&notOther != 0 {
				break
			}
			j += m
		}
		for j < len(s) && (s[j] == '\r' || s[j] == '\n' || s[j] == '/') {
			j++
		}
		return j
	}
	// \s*[\r\n]+ : up to the last newline of the whitespace run.
	j, lastNL := i, -1
	for j < len(s) {
		cc, m := classO200k(s, j)
		if cc&oSpace == 0 {
			break
		}
		j += m
		if cc&oNewline != 0 {
			lastNL = j
		}
	}
	if lastNL >= 0 {
		return lastNL
	}
	return whitespace(s, i)
}
