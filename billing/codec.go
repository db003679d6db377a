package billing

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// errCorrupt is returned by every value decoder for bytes it cannot read.
var errCorrupt = errors.New("corrupt ledger value")

// enc appends the ledger's binary encodings to a byte slice.
type enc struct{ b []byte }

func (e *enc) u8(v byte)        { e.b = append(e.b, v) }
func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) u64(v uint64)     { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) f64(v float64)    { e.b = binary.BigEndian.AppendUint64(e.b, math.Float64bits(v)) }
func (e *enc) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *enc) boolean(v bool)   { e.u8(b2u(v)) }
func (e *enc) time(t time.Time) { e.varint(timeToNanos(t)) }
func (e *enc) bytesOut() []byte { return e.b }
func b2u(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// dec reads what enc wrote. The first failure sticks: later reads return
// zero values and err reports it, so decoders check err once at the end.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

func (d *dec) u8() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) u64() uint64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) f64() float64 {
	v := math.Float64frombits(d.u64())
	if math.IsNaN(v) || math.IsInf(v, 0) {
		d.fail()
		return 0
	}
	return v
}

func (d *dec) raw() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.raw()) }

func (d *dec) bytesCopy() []byte {
	p := d.raw()
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

func (d *dec) boolean() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

func (d *dec) time() time.Time { return nanosToTime(d.varint()) }

// done reports the first failure, or trailing bytes, as errCorrupt.
func (d *dec) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorrupt
	}
	if d.err != nil {
		return fmt.Errorf("decode %s: %w", what, d.err)
	}
	return nil
}

// Times are stored as Unix nanoseconds; the zero time.Time is stored as
// math.MinInt64 so that it round-trips.
func timeToNanos(t time.Time) int64 {
	if t.IsZero() {
		return math.MinInt64
	}
	return t.UnixNano()
}

func nanosToTime(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Keys.

// u64key is an 8-byte big-endian key: byte order equals numeric order.
func u64key(v uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], v)
	return k[:]
}

func bytesU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// hourOf returns the UTC hour holding t as hours since the Unix epoch.
func hourOf(t time.Time) int64 {
	s := t.Unix()
	h := s / 3600
	if s < 0 && s%3600 != 0 {
		h--
	}
	return h
}

// hourTime returns the start of an hour number.
func hourTime(h int64) time.Time { return time.Unix(h*3600, 0).UTC() }

// hourKey encodes an hour number so that byte order equals time order.
func hourKey(h int64) []byte { return u64key(uint64(h) ^ (1 << 63)) }

func hourFromKey(k []byte) int64 { return int64(binary.BigEndian.Uint64(k) ^ (1 << 63)) }

// lp returns s prefixed with its length in one byte: keys made of several
// strings stay unambiguous. Callers keep strings under 256 bytes.
func lp(s string) []byte {
	b := make([]byte, 0, 1+len(s))
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// join concatenates key parts.
func join(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// readLP reads a length-prefixed string from the front of k.
func readLP(k []byte) (string, []byte, bool) {
	if len(k) < 1 || int(k[0]) > len(k)-1 {
		return "", nil, false
	}
	n := int(k[0])
	return string(k[1 : 1+n]), k[1+n:], true
}
