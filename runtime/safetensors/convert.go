package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// BF16ToF32 widens a bfloat16 to float32 (exact).
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds a float32 to the nearest bfloat16, ties to even. NaN
// stays NaN (quiet).
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN
		return uint16(u>>16) | 0x0040
	}
	r := (u>>16)&1 + 0x7fff
	return uint16((u + r) >> 16)
}

// F16ToF32 widens an IEEE-754 binary16 to float32 (exact, subnormals
// included).
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = man · 2^-24.
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		if man == 0 {
			return math.Float32frombits(sign | 0x7f800000)
		}
		return math.Float32frombits(sign | 0x7fc00000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// F32ToF16 rounds a float32 to the nearest binary16, ties to even;
// overflow gives ±Inf, tiny values become subnormals or ±0.
func F32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23) & 0xff
	man := u & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		// Subnormal: shift the full mantissa (with its hidden bit).
		m := man | 0x800000
		shift := uint32(14 - e)
		half := uint32(1) << (shift - 1)
		rem := m & (1<<shift - 1)
		res := m >> shift
		if rem > half || (rem == half && res&1 == 1) {
			res++
		}
		return sign | uint16(res)
	}
	res := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && res&1 == 1) {
		res++ // may carry into the exponent, which is the right result (up to Inf)
	}
	return sign | uint16(res)
}

// DecodeFloat32 converts n = len(dst) elements of src (F32, F16 or BF16,
// little-endian) into dst.
func DecodeFloat32(dst []float32, dt DType, src []byte) error {
	if int64(len(src)) != int64(len(dst))*dt.Size() || !dt.IsFloat() {
		return fmt.Errorf("safetensors: cannot decode %d bytes of %s into %d floats", len(src), dt, len(dst))
	}
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	}
	return nil
}

// EncodeFloat32 converts src into dst as dtype dt (F32, F16 or BF16,
// little-endian); dst must hold len(src)·dt.Size() bytes.
func EncodeFloat32(dst []byte, dt DType, src []float32) error {
	if int64(len(dst)) != int64(len(src))*dt.Size() || !dt.IsFloat() {
		return fmt.Errorf("safetensors: cannot encode %d floats as %d bytes of %s", len(src), len(dst), dt)
	}
	switch dt {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	}
	return nil
}

// Float32s decodes a floating-point tensor (F32, F16 or BF16) into a new
// slice.
func (t Tensor) Float32s() ([]float32, error) {
	if !t.DType.IsFloat() {
		return nil, fmt.Errorf("safetensors: tensor %q has dtype %s, want F32, F16 or BF16", t.Name, t.DType)
	}
	dst := make([]float32, t.NumElements())
	if err := DecodeFloat32(dst, t.DType, t.Data); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return dst, nil
}
