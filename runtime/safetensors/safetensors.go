// Package safetensors reads and writes the safetensors tensor file format:
// an 8-byte little-endian header length N, N bytes of JSON header, then the
// tensors' bytes back to back.
//
// Open maps a file read-only and validates its header with every rule of the
// reference parser (header size limit, one JSON object without duplicate
// keys, known dtypes, offsets contiguous from 0, sizes matching shapes, the
// file fully covered). Tensor data are views into the mapping: they are valid
// until Close and carry no alignment guarantee.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"unicode/utf8"
)

// MaxHeaderSize is the largest header length accepted, in bytes.
const MaxHeaderSize = 100_000_000

// DType is a tensor element type, spelled as in safetensors headers.
type DType string

// Element types of the format.
const (
	BOOL        DType = "BOOL"
	U8          DType = "U8"
	I8          DType = "I8"
	F8_E5M2     DType = "F8_E5M2"
	F8_E4M3     DType = "F8_E4M3"
	F8_E8M0     DType = "F8_E8M0"
	F8_E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8_E5M2FNUZ DType = "F8_E5M2FNUZ"
	I16         DType = "I16"
	U16         DType = "U16"
	F16         DType = "F16"
	BF16        DType = "BF16"
	I32         DType = "I32"
	U32         DType = "U32"
	F32         DType = "F32"
	F64         DType = "F64"
	I64         DType = "I64"
	U64         DType = "U64"
	C64         DType = "C64"
	F4          DType = "F4"
	F6_E2M3     DType = "F6_E2M3"
	F6_E3M2     DType = "F6_E3M2"
)

// bits per element of every known dtype.
var dtypeBits = map[DType]int64{
	BOOL: 8, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8, F8_E4M3FNUZ: 8, F8_E5M2FNUZ: 8,
	I16: 16, U16: 16, F16: 16, BF16: 16,
	I32: 32, U32: 32, F32: 32,
	F64: 64, I64: 64, U64: 64, C64: 64,
	F4: 4, F6_E2M3: 6, F6_E3M2: 6,
}

// Bits returns the size of one element in bits, or 0 for an unknown dtype.
func (d DType) Bits() int64 { return dtypeBits[d] }

// Size returns the size of one element in bytes (0 for sub-byte and unknown
// dtypes).
func (d DType) Size() int64 { return dtypeBits[d] / 8 }

// IsFloat reports whether d is one of the floating-point dtypes model
// weights may be stored in: F32, F16 or BF16.
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 }

// Tensor is one tensor of a file.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	// Data is the tensor's bytes, little-endian, row-major. In a file
	// returned by Open it is a view into the read-only mapping: never write
	// to it, never use it after Close, never assume it is aligned.
	Data []byte
}

// NumElements returns the product of the shape (1 for a scalar).
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is a parsed safetensors file.
type File struct {
	// Metadata is the header's __metadata__ map (nil when absent).
	Metadata map[string]string
	// HeaderSize is N, the header length in bytes.
	HeaderSize int64

	path    string
	data    []byte // whole file; mapped when mapped is true
	mapped  bool
	tensors map[string]int
	list    []Tensor // ordered by data offset
}

// Open maps the file at path read-only and parses its header. Close the
// file when its tensors are no longer used.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("safetensors %s: file is %d bytes, too short for a header", path, size)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("safetensors %s: file too large", path)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: mmap: %w", path, err)
	}
	sf, err := parse(data)
	if err != nil {
		_ = syscall.Munmap(data)
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	sf.path = path
	sf.mapped = true
	return sf, nil
}

// Parse parses a whole safetensors file held in memory. The returned
// tensors' data are views into data.
func Parse(data []byte) (*File, error) {
	return parse(data)
}

// Sample writes to w what identifies the file's content cheaply: its size
// and sixteen windows of up to 64 KiB spread over it (the first holding
// the header), whatever the file's size.
func (f *File) Sample(w io.Writer) {
	var size [8]byte
	binary.LittleEndian.PutUint64(size[:], uint64(len(f.data)))
	w.Write(size[:])
	const windows, win = 16, 64 << 10
	n := int64(len(f.data))
	for i := int64(0); i < windows; i++ {
		at := (n - win) * i / (windows - 1)
		at = max(0, at)
		w.Write(f.data[at:min(n, at+win)])
	}
}

// Path returns the path the file was opened from ("" for Parse).
func (f *File) Path() string { return f.path }

// Names returns the tensor names in data-offset order.
func (f *File) Names() []string {
	names := make([]string, len(f.list))
	for i, t := range f.list {
		names[i] = t.Name
	}
	return names
}

// Tensors returns every tensor in data-offset order.
func (f *File) Tensors() []Tensor { return slices.Clone(f.list) }

// Tensor returns the named tensor.
func (f *File) Tensor(name string) (Tensor, bool) {
	i, ok := f.tensors[name]
	if !ok {
		return Tensor{}, false
	}
	return f.list[i], true
}

// Size returns the file size in bytes.
func (f *File) Size() int64 { return int64(len(f.data)) }

// Close unmaps the file. Tensor data must not be used afterwards.
func (f *File) Close() error {
	if f == nil || f.data == nil {
		return nil
	}
	data := f.data
	f.data = nil
	f.list = nil
	f.tensors = nil
	if f.mapped {
		return syscall.Munmap(data)
	}
	return nil
}

type tensorInfo struct {
	name       string
	dtype      DType
	shape      []int64
	begin, end int64
}

func parse(data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("file is %d bytes, too short for a header", len(data))
	}
	n := leUint64(data[:8])
	if n > uint64(len(data)-8) {
		// Most often another kind of file: a safetensors file begins with
		// the length of its JSON header.
		return nil, fmt.Errorf("not a safetensors file: the header length in its first 8 bytes (%d) runs past the end of the %d-byte file", n, len(data))
	}
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header too large: %d bytes (limit %d)", n, MaxHeaderSize)
	}
	hdr := data[8 : 8+n]
	if len(hdr) == 0 || hdr[0] != '{' {
		return nil, errors.New("header does not start with '{'")
	}
	if !utf8.Valid(hdr) {
		return nil, errors.New("header is not valid UTF-8")
	}
	meta, infos, err := parseHeader(hdr)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(infos, func(i, j int) bool { return infos[i].begin < infos[j].begin })
	buf := data[8+n:]
	var pos int64
	f := &File{Metadata: meta, HeaderSize: int64(n), data: data, tensors: make(map[string]int, len(infos)), list: make([]Tensor, 0, len(infos))}
	for _, ti := range infos {
		if ti.begin != pos || ti.end < ti.begin {
			return nil, fmt.Errorf("invalid offset for tensor %q: data_offsets [%d, %d], expected to begin at %d", ti.name, ti.begin, ti.end, pos)
		}
		want, ok := byteSize(ti.dtype, ti.shape)
		if !ok {
			return nil, fmt.Errorf("tensor %q: shape %v is too large", ti.name, ti.shape)
		}
		if ti.end-ti.begin != want {
			return nil, fmt.Errorf("tensor %q: data_offsets span %d bytes, but %s%v needs %d", ti.name, ti.end-ti.begin, ti.dtype, ti.shape, want)
		}
		if ti.end > int64(len(buf)) {
			return nil, fmt.Errorf("tensor %q: data_offsets end %d is past the end of the file's %d data bytes", ti.name, ti.end, len(buf))
		}
		f.tensors[ti.name] = len(f.list)
		f.list = append(f.list, Tensor{Name: ti.name, DType: ti.dtype, Shape: ti.shape, Data: buf[ti.begin:ti.end:ti.end]})
		pos = ti.end
	}
	if pos != int64(len(buf)) {
		return nil, fmt.Errorf("incomplete metadata, file not fully covered: tensors end at %d, data is %d bytes", pos, len(buf))
	}
	return f, nil
}

// byteSize returns prod(shape)·bits/8, false on overflow or a size that is
// not a whole number of bytes.
func byteSize(dt DType, shape []int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	bits := dt.Bits()
	if n > math.MaxInt64/bits {
		return 0, false
	}
	if n*bits%8 != 0 {
		return 0, false
	}
	return n * bits / 8, true
}

// parseHeader walks the header JSON token by token so duplicate keys can be
// refused (encoding/json silently keeps the last one).
func parseHeader(hdr []byte) (map[string]string, []tensorInfo, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	seen := map[string]bool{}
	var meta map[string]string
	var infos []tensorInfo
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("header: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("header: unexpected %v", tok)
		}
		if seen[key] {
			return nil, nil, fmt.Errorf("header: duplicate key %q", key)
		}
		seen[key] = true
		if key == "__metadata__" {
			meta, err = parseMetadata(dec)
			if err != nil {
				return nil, nil, fmt.Errorf("header: __metadata__: %w", err)
			}
			continue
		}
		ti, err := parseTensorInfo(dec)
		if err != nil {
			return nil, nil, fmt.Errorf("header: tensor %q: %w", key, err)
		}
		ti.name = key
		infos = append(infos, ti)
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	// Only padding may follow the object.
	rest := hdr[dec.InputOffset():]
	if len(bytes.Trim(rest, " \t\r\n")) != 0 {
		return nil, nil, errors.New("header: unexpected bytes after the JSON object")
	}
	return meta, infos, nil
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return fmt.Errorf("expected %q, found %v", string(d), tok)
	}
	return nil
}

func parseMetadata(dec *json.Decoder) (map[string]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("expected an object of strings, found %v", tok)
	}
	meta := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := tok.(string)
		if _, dup := meta[k]; dup {
			return nil, fmt.Errorf("duplicate key %q", k)
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, err
		}
		v, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("value of %q is not a string", k)
		}
		meta[k] = v
	}
	return meta, expectDelim(dec, '}')
}

func parseTensorInfo(dec *json.Decoder) (tensorInfo, error) {
	var ti tensorInfo
	if err := expectDelim(dec, '{'); err != nil {
		return ti, err
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ti, err
		}
		k, _ := tok.(string)
		if seen[k] {
			return ti, fmt.Errorf("duplicate field %q", k)
		}
		seen[k] = true
		switch k {
		case "dtype":
			tok, err := dec.Token()
			if err != nil {
				return ti, err
			}
			s, ok := tok.(string)
			if !ok {
				return ti, fmt.Errorf("dtype is not a string")
			}
			if DType(s).Bits() == 0 {
				return ti, fmt.Errorf("unknown dtype %q", s)
			}
			ti.dtype = DType(s)
		case "shape":
			ti.shape, err = parseInts(dec, -1)
			if err != nil {
				return ti, fmt.Errorf("shape: %w", err)
			}
			if ti.shape == nil {
				ti.shape = []int64{}
			}
		case "data_offsets":
			offs, err := parseInts(dec, 2)
			if err != nil {
				return ti, fmt.Errorf("data_offsets: %w", err)
			}
			ti.begin, ti.end = offs[0], offs[1]
		default:
			return ti, fmt.Errorf("unknown field %q", k)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return ti, err
	}
	for _, k := range []string{"dtype", "shape", "data_offsets"} {
		if !seen[k] {
			return ti, fmt.Errorf("missing field %q", k)
		}
	}
	return ti, nil
}

// parseInts reads an array of non-negative integers (exactly n of them when
// n >= 0).
func parseInts(dec *json.Decoder, n int) ([]int64, error) {
	if err := expectDelim(dec, '['); err != nil {
		return nil, err
	}
	var out []int64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%v is not an integer", tok)
		}
		v, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%s is not a non-negative integer", num)
		}
		out = append(out, v)
		if len(out) > 64 {
			return nil, errors.New("too many entries")
		}
	}
	if err := expectDelim(dec, ']'); err != nil {
		return nil, err
	}
	if n >= 0 && len(out) != n {
		return nil, fmt.Errorf("has %d entries, want %d", len(out), n)
	}
	return out, nil
}

func leUint64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// ErrShortWrite is returned by Writer.Close when fewer tensor bytes were
// written than the header announced.
var ErrShortWrite = errors.New("safetensors: fewer tensor bytes written than announced")

// Writer streams a safetensors file: NewWriter writes the header for the
// given tensors (in the given order), then the tensors' bytes are written
// with Write in the same order, and Close checks that all of them arrived.
type Writer struct {
	w       io.Writer
	total   int64
	written int64
}

// NewWriter writes the header announcing tensors (their Data is ignored;
// only Name, DType and Shape count) and returns a Writer for their bytes.
// The header is padded with spaces to a multiple of 8 bytes.
func NewWriter(w io.Writer, tensors []Tensor, metadata map[string]string) (*Writer, error) {
	hdr, total, err := encodeHeader(tensors, metadata)
	if err != nil {
		return nil, err
	}
	var n [8]byte
	for i := range 8 {
		n[i] = byte(uint64(len(hdr)) >> (8 * i))
	}
	if _, err := w.Write(n[:]); err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	return &Writer{w: w, total: total}, nil
}

// Write writes tensor bytes; it refuses to write more than announced.
func (sw *Writer) Write(p []byte) (int, error) {
	if sw.written+int64(len(p)) > sw.total {
		return 0, errors.New("safetensors: more tensor bytes written than announced")
	}
	n, err := sw.w.Write(p)
	sw.written += int64(n)
	return n, err
}

// Close reports ErrShortWrite if not every announced byte was written. It
// does not close the underlying writer.
func (sw *Writer) Close() error {
	if sw.written != sw.total {
		return ErrShortWrite
	}
	return nil
}

// Write writes a whole file: the header, then each tensor's Data in order.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	sw, err := NewWriter(w, tensors, metadata)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if want, _ := byteSize(t.DType, t.Shape); int64(len(t.Data)) != want {
			return fmt.Errorf("safetensors: tensor %q has %d bytes, %s%v needs %d", t.Name, len(t.Data), t.DType, t.Shape, want)
		}
		if _, err := sw.Write(t.Data); err != nil {
			return err
		}
	}
	return sw.Close()
}

func encodeHeader(tensors []Tensor, metadata map[string]string) ([]byte, int64, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			b.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		comma()
		mb, err := json.Marshal(metadata)
		if err != nil {
			return nil, 0, err
		}
		b.WriteString(`"__metadata__":`)
		b.Write(mb)
	}
	seen := map[string]bool{}
	var off int64
	for _, t := range tensors {
		if t.Name == "__metadata__" || t.Name == "" {
			return nil, 0, fmt.Errorf("safetensors: invalid tensor name %q", t.Name)
		}
		if seen[t.Name] {
			return nil, 0, fmt.Errorf("safetensors: duplicate tensor %q", t.Name)
		}
		seen[t.Name] = true
		if t.DType.Bits() == 0 {
			return nil, 0, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", t.Name, t.DType)
		}
		size, ok := byteSize(t.DType, t.Shape)
		if !ok {
			return nil, 0, fmt.Errorf("safetensors: tensor %q: bad shape %v", t.Name, t.Shape)
		}
		comma()
		name, _ := json.Marshal(t.Name)
		b.Write(name)
		fmt.Fprintf(&b, `:{"dtype":%q,"shape":[`, string(t.DType))
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, off+size)
		off += size
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes(), off, nil
}
