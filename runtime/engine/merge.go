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
				for j := 0; j < r; j++ {
					axpy(row, scale*m.b[o*r+j], m.a[j*in:(j+1)*in])
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
