package grammar

import (
	"encoding/binary"
	"math/big"
	"strconv"
	"strings"
)

// Bounded numbers: "minimum", "maximum", "exclusiveMinimum" and
// "exclusiveMaximum" on a node of type "number" or "integer".
//
// Such a node's numbers are written in plain decimal: no exponent, at most
// MaxBoundDigits integer digits and MaxBoundDigits fraction digits. Every
// such number is a multiple of 10^-18 below 10^18 in magnitude, so a
// number read so far fits in two uint64s (Schema's nI and nF) and the
// bounds compile, exactly, to the least and the greatest magnitude in
// range for either sign (numRange). After each byte the machine checks
// that some completion of the number read lands in range; a number ends
// (the byte after it, or Done at the top) only in range. Per byte that is
// a few integer comparisons.

// MaxBoundDigits is the most integer digits, and the most fraction
// digits, a number of a node with bounds takes.
const MaxBoundDigits = 18

// fracOne is 10^18: a fraction's scale.
const fracOne = 1_000_000_000_000_000_000

// pow10 are the powers of 10 up to 10^18.
var pow10 = func() (p [MaxBoundDigits + 1]uint64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return
}()

// fx is a number's magnitude: the integer part and the fraction ·10^18.
type fx struct{ i, f uint64 }

func (a fx) le(b fx) bool { return a.i < b.i || a.i == b.i && a.f <= b.f }

// numRange is a bounded node's range: for either sign (0: +, 1: −) the
// least and the greatest magnitude in it (lo ≤ hi), or none. For an
// integer's node (no fraction may come) they are integers.
type numRange struct {
	lo, hi [2]fx
	none   [2]bool
	mult   uint64 // an integer's "multipleOf" (0: none)
}

// numKeywords are a schema's bound keywords, as written.
type numKeywords struct {
	min, max, xmin, xmax, mult *oval
}

func (nk *numKeywords) set(k string, e *oval) {
	switch k {
	case "minimum":
		nk.min = e
	case "maximum":
		nk.max = e
	case "exclusiveMinimum":
		nk.xmin = e
	case "exclusiveMaximum":
		nk.xmax = e
	case "multipleOf":
		nk.mult = e
	}
}

// inBound reports whether the machine is in a number of a node with
// bounds.
func (s *Schema) inBound() bool {
	return s.cur != anyNode && s.lex >= sNumMinus && s.lex <= sNumExp
}

// numKey appends the number read to a key, in a number of a bounded node.
func (s *Schema) numKey(dst []byte) []byte {
	if !s.inBound() {
		return dst
	}
	return binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(dst, s.nI), s.nF)
}

// boundStart begins a number of bounded node n with byte b (aux set: 1
// for an integer's).
func (s *Schema) boundStart(n uint16, b byte) bool {
	st, digits := numberStart(b)
	s.lex, s.lk, s.cur, s.nI, s.nF = sNumMinus+st, digits, n, 0, 0
	if b == '-' {
		s.aux |= 2
	} else {
		s.nI = uint64(b - '0')
	}
	return s.numFits()
}

// boundByte reads byte b in a number of a bounded node; a byte that ends
// it is read again after it.
func (s *Schema) boundByte(b byte) bool {
	next, digits, ok, end := numberByte(s.lex-sNumMinus, s.lk, b, s.aux&1 != 0)
	switch {
	case !ok:
		return false
	case end:
		if !s.numIn() {
			return false
		}
		s.afterValue()
		return s.Feed(b)
	}
	switch next {
	case nE:
		return false // plain decimal
	case nInt:
		if digits > MaxBoundDigits {
			return false
		}
		s.nI = s.nI*10 + uint64(b-'0')
	case nFrac:
		if digits > MaxBoundDigits {
			return false
		}
		s.nF += uint64(b-'0') * pow10[MaxBoundDigits-digits]
	}
	s.lex, s.lk = sNumMinus+next, digits
	return s.numFits()
}

// numFits reports whether some completion of the number read (more
// digits, a fraction, or the end where it may end) is in range.
func (s *Schema) numFits() bool {
	r := s.c.nodes[s.cur].num
	sign := s.aux >> 1 & 1
	if r.none[sign] {
		return false
	}
	lo, hi := r.lo[sign], r.hi[sign]
	switch s.lex - sNumMinus {
	case nMinus:
		return true // any magnitude may come
	case nZero, nInt:
		// with j more integer digits the magnitude is in
		// [I·10^j, (I+1)·10^j) (an integer's: its integers): the least j
		// whose interval reaches lo is the one to check against hi
		more := uint16(0)
		if s.lex == sNumInt {
			more = MaxBoundDigits - s.lk
		}
		p, q := s.nI+1, s.nI
		if k := r.mult; k != 0 {
			// each j's integers [q, p) in range must hold a multiple of k
			for j := uint16(0); j <= more && q <= hi.i; j++ {
				a, b := max(q, lo.i), min(p-1, hi.i)
				if a <= b && (a+k-1)/k*k <= b {
					return true
				}
				p, q = p*10, q*10
			}
			return false
		}
		for j := uint16(0); p <= lo.i && j < more; j++ {
			p, q = p*10, q*10
		}
		return p > lo.i && q <= hi.i
	case nDot: // [I, I+1)
		return s.nI >= lo.i && s.nI <= hi.i
	case nFrac: // [I.F, I.F + 10^-digits)
		return fx{s.nI, s.nF}.le(hi) && lo.le(fx{s.nI, s.nF + pow10[MaxBoundDigits-s.lk] - 1})
	}
	return false
}

// numIn reports whether the number read, ending here, is in range.
func (s *Schema) numIn() bool {
	r := s.c.nodes[s.cur].num
	sign := s.aux >> 1 & 1
	v := fx{s.nI, s.nF}
	return !r.none[sign] && r.lo[sign].le(v) && v.le(r.hi[sign]) && (r.mult == 0 || s.nI%r.mult == 0)
}

// ---- compiling ----

// numBounds compiles node n's bound keywords.
func numBounds(n *snode, nk *numKeywords, path string) error {
	if nk.min == nil && nk.max == nil && nk.xmin == nil && nk.xmax == nil && nk.mult == nil {
		return nil
	}
	if n.types&(tNumber|tInteger) == 0 {
		return errAt(path, "number keywords for a type that is not \"number\" or \"integer\"")
	}
	integer := n.types&tNumber == 0
	what := "number"
	if integer {
		what = "integer"
	}
	one := big.NewInt(fracOne)
	// the writable range: magnitudes below 10^18 (integers then)
	w := new(big.Int).Mul(one, one)
	w.Sub(w, big.NewInt(1))
	if integer {
		w.Sub(w, big.NewInt(fracOne-1))
	}
	lo, hi := new(big.Int).Neg(w), new(big.Int).Set(w)
	var loKW, hiKW string
	// bound folds one bound (·10^18) into lo or hi: the least or the
	// greatest writable value in range, an integer for an integer's node
	bound := func(o *oval, kw string, upper, excl bool) error {
		v, err := fixedOf(o, path+"/"+kw)
		if err != nil {
			return err
		}
		if integer {
			q, m := new(big.Int).DivMod(v, one, new(big.Int)) // floor
			switch {
			case !upper && (excl || m.Sign() != 0):
				q.Add(q, big.NewInt(1))
			case upper && excl && m.Sign() == 0:
				q.Sub(q, big.NewInt(1))
			}
			v = q.Mul(q, one)
		} else if excl && upper {
			v.Sub(v, big.NewInt(1))
		} else if excl {
			v.Add(v, big.NewInt(1))
		}
		if upper && v.Cmp(hi) < 0 {
			hi, hiKW = v, kw
		} else if !upper && v.Cmp(lo) > 0 {
			lo, loKW = v, kw
		}
		return nil
	}
	// exclusive is a draft-4 boolean exclusiveMinimum or exclusiveMaximum
	// (true: its minimum or maximum is exclusive); nil for a number
	exclusive := func(x, base *oval, kw, baseKW string) (*bool, error) {
		if x == nil || x.kind != 't' && x.kind != 'f' {
			return nil, nil
		}
		if base == nil {
			return nil, errAt(path+"/"+kw, "true or false only alongside %q", baseKW)
		}
		t := x.kind == 't'
		return &t, nil
	}
	for _, b := range []struct {
		base, x     *oval
		baseKW, xKW string
		upper       bool
	}{{nk.min, nk.xmin, "minimum", "exclusiveMinimum", false}, {nk.max, nk.xmax, "maximum", "exclusiveMaximum", true}} {
		ex, err := exclusive(b.x, b.base, b.xKW, b.baseKW)
		if err != nil {
			return err
		}
		if b.base != nil {
			if err := bound(b.base, b.baseKW, b.upper, ex != nil && *ex); err != nil {
				return err
			}
		}
		if b.x != nil && ex == nil {
			if err := bound(b.x, b.xKW, b.upper, true); err != nil {
				return err
			}
		}
	}
	var mult uint64
	if nk.mult != nil {
		k, ok := new(big.Int).SetString(nk.mult.text, 10)
		if nk.mult.kind != '0' || !ok || k.Sign() <= 0 || k.Cmp(w) > 0 {
			return errAt(path+"/multipleOf", "must be a positive integer below 10^%d", MaxBoundDigits)
		}
		if !integer {
			return errAt(path+"/multipleOf", "is supported on \"integer\" alone")
		}
		// the range's ends move in to multiples
		kf := new(big.Int).Mul(k, one)
		m := new(big.Int)
		if m.Mod(lo, kf); m.Sign() != 0 {
			lo.Add(lo, kf.Sub(kf, m))
			kf.Mul(k, one)
		}
		if m.Mod(hi, kf); m.Sign() != 0 {
			hi.Sub(hi, m)
		}
		if lo.Cmp(hi) > 0 {
			return errAt(path+"/multipleOf", "no multiple lies in range")
		}
		mult = k.Uint64()
	}
	if lo.Cmp(hi) > 0 {
		switch {
		case loKW != "" && hiKW != "":
			return errAt(path+"/"+hiKW, "no %s lies within %q and %q", what, loKW, hiKW)
		case loKW != "":
			return errAt(path+"/"+loKW, "no %s of at most %d integer digits lies in range", what, MaxBoundDigits)
		default:
			return errAt(path+"/"+hiKW, "no %s of at most %d integer digits lies in range", what, MaxBoundDigits)
		}
	}
	// the magnitudes in range, by sign
	r := &numRange{}
	toFx := func(v *big.Int) fx {
		q, m := new(big.Int).DivMod(v, one, new(big.Int))
		return fx{q.Uint64(), m.Uint64()}
	}
	zero := new(big.Int)
	if hi.Sign() >= 0 {
		r.lo[0], r.hi[0] = toFx(maxInt(lo, zero)), toFx(hi)
	} else {
		r.none[0] = true
	}
	if lo.Sign() <= 0 {
		r.lo[1], r.hi[1] = toFx(maxInt(new(big.Int).Neg(hi), zero)), toFx(new(big.Int).Neg(lo))
	} else {
		r.none[1] = true
	}
	r.mult = mult
	n.num = r
	return nil
}

func maxInt(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}

// fixedOf is a bound's value ·10^18, exactly; ±10^36 for a magnitude of
// 10^18 or more (past every number written). A bound with more than 18
// fraction digits is refused.
func fixedOf(o *oval, path string) (*big.Int, error) {
	if o.kind != '0' {
		return nil, errAt(path, "must be a number")
	}
	text, neg := strings.CutPrefix(o.text, "-")
	mant, exp, _ := strings.Cut(strings.ToLower(text), "e")
	ip, fp, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(ip+fp, "0")
	if digits == "" {
		return new(big.Int), nil
	}
	e, err := strconv.Atoi(exp)
	if exp == "" {
		e = 0
	} else if err != nil { // past int's range: saturate
		e = 1 << 40
		if strings.HasPrefix(exp, "-") {
			e = -e
		}
	}
	x := e - len(fp) // the value is digits·10^x
	for digits[len(digits)-1] == '0' {
		digits, x = digits[:len(digits)-1], x+1
	}
	var v *big.Int
	switch {
	case len(digits)+x > MaxBoundDigits:
		v = new(big.Int).Exp(big.NewInt(10), big.NewInt(2*MaxBoundDigits), nil)
	case -x > MaxBoundDigits:
		return nil, errAt(path, "more than %d digits after the decimal point are not supported", MaxBoundDigits)
	default:
		v, _ = new(big.Int).SetString(digits+strings.Repeat("0", x+MaxBoundDigits), 10)
	}
	if neg {
		v.Neg(v)
	}
	return v, nil
}
