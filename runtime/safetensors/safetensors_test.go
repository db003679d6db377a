package safetensors_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// rawFile builds a file from a literal header and data, with the header
// length as given.
func rawFile(header string, data []byte) []byte {
	var b bytes.Buffer
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	b.Write(n[:])
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestOpen_HandBuilt(t *testing.T) {
	// Two tensors, F32 [2] and BF16 [3], plus metadata; BF16 data sits at
	// an odd file offset when the header length is odd.
	data := append(f32bytes(1.5, -2), 0x80, 0x3f, 0x20, 0xc0, 0x49, 0x40)
	for _, pad := range []string{"", " ", "   ", "       "} {
		hdr := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]}}` + pad
		f, err := safetensors.Open(writeTemp(t, rawFile(hdr, data)))
		if err != nil {
			t.Fatalf("pad %d: %v", len(pad), err)
		}
		if got := f.Metadata["format"]; got != "pt" {
			t.Errorf("metadata format = %q", got)
		}
		if got := f.Names(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("names = %v", got)
		}
		a, _ := f.Tensor("a")
		av, err := a.Float32s()
		if err != nil || av[0] != 1.5 || av[1] != -2 {
			t.Errorf("a = %v %v", av, err)
		}
		b, ok := f.Tensor("b")
		if !ok || b.DType != safetensors.BF16 || len(b.Shape) != 1 || b.Shape[0] != 3 {
			t.Fatalf("b = %+v", b)
		}
		bv, _ := b.Float32s()
		if bv[0] != 1 || bv[1] != -2.5 || bv[2] != 3.140625 {
			t.Errorf("b = %v", bv)
		}
		if _, ok := f.Tensor("c"); ok {
			t.Error("tensor c found")
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpen_Errors(t *testing.T) {
	f8 := f32bytes(1, 2)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"Hole", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[5,9]}}`, append(f8, 0)), `invalid offset for tensor "b"`},
		{"Overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f8), `invalid offset for tensor "b"`},
		{"NotFromZero", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f8), `invalid offset for tensor "a"`},
		{"SizeMismatch", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, f8), `tensor "a": data_offsets span 8 bytes`},
		{"NotCovered", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f8), "not fully covered"},
		{"PastEOF", rawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, f8), `tensor "a": data_offsets end 16 is past the end`},
		{"HeaderPastEOF", append([]byte{200, 0, 0, 0, 0, 0, 0, 0}, []byte(`{}`)...), "runs past the end"},
		{"HeaderTooLarge", append([]byte{0, 0, 0, 0, 1, 0, 0, 0}, []byte(`{}`)...), "runs past the end"},
		{"TextFile", []byte("Hello, this is not a tensor file.\n"), "not a safetensors file"},
		{"NotObject", rawFile(`["a"]`, nil), "does not start with '{'"},
		{"Short", []byte{1, 2, 3}, "too short"},
		{"BadJSON", rawFile(`{"a":`, nil), "header"},
		{"Trailing", rawFile(`{} x`, nil), "after the JSON object"},
		{"DuplicateKey", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f8), `duplicate key "a"`},
		{"DuplicateField", rawFile(`{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}`, f8[:4]), `duplicate field "dtype"`},
		{"UnknownDType", rawFile(`{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}}`, f8[:4]), `tensor "a": unknown dtype "Q4"`},
		{"NegativeOffset", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, f8[:4]), `tensor "a": data_offsets`},
		{"NegativeDim", rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, f8[:4]), `tensor "a": shape`},
		{"FloatDim", rawFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, f8[:4]), `tensor "a": shape`},
		{"HugeShape", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}`, f8[:4]), `tensor "a": shape`},
		{"MissingField", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, f8[:4]), `missing field "data_offsets"`},
		{"MetadataNotString", rawFile(`{"__metadata__":{"n":1}}`, nil), "__metadata__"},
		{"InvalidUTF8", rawFile("{\"\xff\":{}}", nil), "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := safetensors.Parse(tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.want)
			}
			_, err = safetensors.Open(writeTemp(t, tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestOpen_EmptyAndScalar(t *testing.T) {
	hdr := `{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`
	f, err := safetensors.Parse(rawFile(hdr, f32bytes(7)))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := f.Tensor("s")
	if s.NumElements() != 1 || len(s.Data) != 4 {
		t.Errorf("scalar = %+v", s)
	}
	e, _ := f.Tensor("e")
	if e.NumElements() != 0 || len(e.Data) != 0 {
		t.Errorf("empty = %+v", e)
	}
}

func TestWrite_RoundTrip(t *testing.T) {
	in := []safetensors.Tensor{
		{Name: "w", DType: safetensors.F32, Shape: []int64{2, 2}, Data: f32bytes(1, 2, 3, 4)},
		{Name: "b", DType: safetensors.BF16, Shape: []int64{1}, Data: []byte{0x80, 0x3f}},
		{Name: "h", DType: safetensors.F16, Shape: []int64{3}, Data: []byte{0, 0x3c, 0, 0xc0, 0xff, 0x7b}},
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, in, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(buf.Bytes())
	if n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	f, err := safetensors.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); strings.Join(got, ",") != "w,b,h" {
		t.Errorf("order = %v", got)
	}
	for _, want := range in {
		got, ok := f.Tensor(want.Name)
		if !ok || got.DType != want.DType || !bytes.Equal(got.Data, want.Data) || len(got.Shape) != len(want.Shape) {
			t.Errorf("tensor %s = %+v, want %+v", want.Name, got, want)
		}
	}
	h, _ := f.Tensor("h")
	hv, _ := h.Float32s()
	if hv[0] != 1 || hv[1] != -2 || hv[2] != 65504 {
		t.Errorf("f16 values = %v", hv)
	}
}

func TestWriter_Errors(t *testing.T) {
	var buf bytes.Buffer
	ts := []safetensors.Tensor{{Name: "a", DType: safetensors.F32, Shape: []int64{2}}}
	w, err := safetensors.NewWriter(&buf, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != safetensors.ErrShortWrite {
		t.Errorf("Close = %v, want ErrShortWrite", err)
	}
	if _, err := w.Write(make([]byte, 8)); err == nil {
		t.Error("overlong write accepted")
	}
	dup := []safetensors.Tensor{{Name: "a", DType: safetensors.F32}, {Name: "a", DType: safetensors.F32}}
	if _, err := safetensors.NewWriter(&buf, dup, nil); err == nil {
		t.Error("duplicate names accepted")
	}
	if err := safetensors.Write(&buf, []safetensors.Tensor{{Name: "a", DType: safetensors.F32, Shape: []int64{2}, Data: make([]byte, 3)}}, nil); err == nil {
		t.Error("short data accepted")
	}
}

func TestBF16Vectors(t *testing.T) {
	tests := []struct {
		f    float32
		want uint16
	}{
		{1.0, 0x3F80}, {-2.5, 0xC020}, {3.14159265, 0x4049}, {0.001, 0x3A83},
		{65504.0, 0x4780}, {1.00390625, 0x3F80}, {1.01171875, 0x3F82},
	}
	for _, tt := range tests {
		if got := safetensors.F32ToBF16(tt.f); got != tt.want {
			t.Errorf("F32ToBF16(%v) = %#04x, want %#04x", tt.f, got, tt.want)
		}
	}
	if got := safetensors.F32ToBF16(float32(math.NaN())); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("NaN -> %#04x, not a NaN", got)
	}
	if got := safetensors.BF16ToF32(0xC020); got != -2.5 {
		t.Errorf("BF16ToF32(0xC020) = %v", got)
	}
}

func TestF16RoundTrip(t *testing.T) {
	// Every binary16 value survives widening and narrowing.
	for h := 0; h < 1<<16; h++ {
		f := safetensors.F16ToF32(uint16(h))
		back := safetensors.F32ToF16(f)
		if f != f { // NaN
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x -> %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	tests := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e-8, 0},
		{5.960464477539063e-08, 0x0001}, {2.98e-08, 0x0000}, {2.99e-08, 0x0001},
		{1.0009765625, 0x3c01}, {1.00048828125, 0x3c00}, {1.00146484375, 0x3c02},
	}
	for _, tt := range tests {
		if got := safetensors.F32ToF16(tt.f); got != tt.want {
			t.Errorf("F32ToF16(%v) = %#04x, want %#04x", tt.f, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	var ok bytes.Buffer
	_ = safetensors.Write(&ok, []safetensors.Tensor{
		{Name: "a", DType: safetensors.F32, Shape: []int64{2}, Data: f32bytes(1, 2)},
		{Name: "b", DType: safetensors.BF16, Shape: []int64{1, 1}, Data: []byte{1, 2}},
	}, map[string]string{"k": "v"})
	f.Add(ok.Bytes())
	f.Add(ok.Bytes()[:ok.Len()-1])
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`, make([]byte, 8)))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[9223372036854775807],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'})
	f.Add(rawFile(`{"__metadata__":null}`, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := safetensors.Parse(data)
		if err != nil {
			return
		}
		// A file that parses is self-consistent and survives a rewrite.
		var total int64
		for _, tn := range file.Tensors() {
			if int64(len(tn.Data)) != tn.NumElements()*tn.DType.Bits()/8 {
				t.Fatalf("tensor %q: %d bytes for shape %v", tn.Name, len(tn.Data), tn.Shape)
			}
			total += int64(len(tn.Data))
		}
		if total != int64(len(data))-8-file.HeaderSize {
			t.Fatalf("tensors cover %d bytes of %d", total, int64(len(data))-8-file.HeaderSize)
		}
		var buf bytes.Buffer
		if err := safetensors.Write(&buf, file.Tensors(), file.Metadata); err != nil {
			t.Fatalf("rewrite: %v", err)
		}
		again, err := safetensors.Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		if len(again.Names()) != len(file.Names()) {
			t.Fatalf("rewrite changed the tensor count")
		}
	})
}
