package engine

import (
	"fmt"
	goruntime "runtime"
	"sync"
	"unsafe"

	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// Merge returns W + scale·B·A as an F32 tensor: the base weight with one
// LoRA module folded in, the way single-adapter servers apply adapters.
// Nozzle never does this while serving; the merge-and-swap baseline of the
// benchmarks and the equivalence tests do.
func Merge(w safetensors.Tensor, l model.LoRA) (safetensors.Tensor, error) {
	var m merger
	return m.merge(w, l)
}

// merger keeps its buffers between merges.
type merger struct {
	out, a, b []float32
}

func (m *merger) merge(w safetensors.Tensor, l model.LoRA) (safetensors.Tensor, error) {
	if len(w.Shape) != 2 {
		return safetensors.Tensor{}, fmt.Errorf("merge: %s is not a matrix", w.Name)
	}
	out, in := int(w.Shape[0]), int(w.Shape[1])
	r := l.Rank
	if len(l.A.Shape) != 2 || len(l.B.Shape) != 2 || l.A.Shape[0] != int64(r) || l.A.Shape[1] != int64(in) ||
		l.B.Shape[0] != int64(out) || l.B.Shape[1] != int64(r) {
		return safetensors.Tensor{}, fmt.Errorf("merge: LoRA shapes %v %v do not fit %s %v", l.A.Shape, l.B.Shape, w.Name, w.Shape)
	}
	m.out = resize(m.out, out*in)
	m.a = resize(m.a, r*in)
	m.b = resize(m.b, out*r)
	if err := safetensors.DecodeFloat32(m.a, l.A.DType, l.A.Data); err != nil {
		return safetensors.Tensor{}, err
	}
	if err := safetensors.DecodeFloat32(m.b, l.B.DType, l.B.Data); err != nil {
		return safetensors.Tensor{}, err
	}
	scale := float32(l.Scale)
	workers := goruntime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	for k := 0; k < workers; k++ {
		lo, hi := out*k/workers, out*(k+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := m.out[lo*in : hi*in]
			if err := safetensors.DecodeFloat32(dst, w.DType, w.Data[int64(lo*in)*w.DType.Size():int64(hi*in)*w.DType.Size()]); err != nil {
				once.Do(func() { firstErr = err })
				return
			}
			for o := lo; o < hi; o++ {
				row := m.out[o*in : (o+1)*in]
				bs := m.b[o*r : (o+1)*r]
				j := 0
				for ; j+4 <= r; j += 4 {
					axpy4(row, scale*bs[j], scale*bs[j+1], scale*bs[j+2], scale*bs[j+3],
						m.a[j*in:(j+1)*in], m.a[(j+1)*in:(j+2)*in], m.a[(j+2)*in:(j+3)*in], m.a[(j+3)*in:(j+4)*in])
				}
				for ; j < r; j++ {
					axpy(row, scale*bs[j], m.a[j*in:(j+1)*in])
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return safetensors.Tensor{}, firstErr
	}
	data := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(m.out))), 4*len(m.out))
	return safetensors.Tensor{Name: w.Name, DType: safetensors.F32, Shape: []int64{int64(out), int64(in)}, Data: data}, nil
}

func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	i := 0
	for ; i+4 <= len(y); i += 4 {
		y[i] += a * x[i]
		y[i+1] += a * x[i+1]
		y[i+2] += a * x[i+2]
		y[i+3] += a * x[i+3]
	}
	for ; i < len(y); i++ {
		y[i] += a * x[i]
	}
}

// axpy4 is y += c0·x0 + c1·x1 + c2·x2 + c3·x3, one pass over y.
func axpy4(y []float32, c0, c1, c2, c3 float32, x0, x1, x2, x3 []float32) {
	n := len(y)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	for i := range y {
		y[i] += c0*x0[i] + c1*x1[i] + c2*x2[i] + c3*x3[i]
	}
}
