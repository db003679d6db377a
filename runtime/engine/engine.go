package engine

import (
	"errors"
	"fmt"
	"math"
	goruntime "runtime"
	"unsafe"

	"github.com/ebitengine/purego"
	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
)

// Options size an engine. Zero fields take the backend's defaults.
type Options struct {
	// WeightDType is the dtype the engine keeps base weights in; "" keeps
	// the checkpoint's. Int8 (the CPU backend only) quantizes every matrix
	// as it is copied in: int8 with one scale per output row.
	WeightDType safetensors.DType
	// MaxSlots is the number of adapter slots.
	MaxSlots int
	// MaxRank is the rank every slot is padded to; larger adapters are
	// refused.
	MaxRank int
	// KVBlockSize is tokens per KV block.
	KVBlockSize int
	// KVBlocks is the KV pool's size in blocks; 0 derives it from
	// KVMemoryBytes.
	KVBlocks      int
	KVMemoryBytes int64
	// MaxBatchTokens and MaxBatchSeqs bound one step.
	MaxBatchTokens int
	MaxBatchSeqs   int
	// Threads is the CPU backend's worker count (0 = every core).
	Threads int
	// MaxPosition is the context length in tokens (0 = the model's
	// max_position_embeddings).
	MaxPosition int
	// DeviceIndex is the CUDA device ordinal.
	DeviceIndex int
	// KVF32 keeps the KV cache in f32 (the CPU backend only); otherwise
	// it is in the weight dtype (bf16 for Int8), as transformers keeps a
	// 16-bit model's keys and values: half the memory per token.
	KVF32 bool
}

// Info describes a finalized engine.
type Info struct {
	Backend     string
	KVBlockSize int
	KVNumBlocks int
	// WeightBytes is the memory of the base weights the engine holds.
	WeightBytes int64
	// SlotBytes is the memory of all adapter slots; KVBytes of the KV pool.
	SlotBytes int64
	KVBytes   int64
	MaxSlots  int
	MaxRank   int
	// Threads is the CPU worker count (0 on CUDA).
	Threads int
}

// Engine is one model instance inside a Library. It is not safe for
// concurrent use: the runtime owns it from one goroutine.
type Engine struct {
	lib    *Library
	handle uintptr
	info   Info
	vocab  int
	model  nozzle.ModelInfo

	// Reused per call so steady-state steps allocate nothing.
	cbatch nzBatch
	// A Pinner keeps 5 pointers without allocating; a step pins up to 22,
	// so it spreads them over several.
	pins  [5]goruntime.Pinner
	npins int
	args  [2]uintptr
	pin   goruntime.Pinner // adapter loads
	shape [2]int64
	load  struct {
		layer, module, rank, aDtype, bDtype []int32
		scale                               []float32
		a, b                                []unsafe.Pointer
	}
}

// Int8 as Options.WeightDType keeps the base model's matrices (the seven
// projections, the embedding and the LM head) in int8 with one f32 scale
// per output row, quantized from the checkpoint when the engine is made:
// half the memory and the bytes a decode step reads of a 16-bit
// checkpoint, at a small loss of accuracy. Norms and biases keep their
// values. The CPU backend only.
const Int8 = safetensors.I8

func dtypeCode(dt safetensors.DType) (int32, error) {
	switch dt {
	case safetensors.F32:
		return nzF32, nil
	case safetensors.F16:
		return nzF16, nil
	case safetensors.BF16:
		return nzBF16, nil
	}
	return 0, fmt.Errorf("dtype %q is not F32, F16 or BF16", dt)
}

// NewEngine creates an engine for m, copies every base tensor into it from
// the model's mapping, and finalizes it. The model may be closed afterwards.
func (l *Library) NewEngine(m *model.Model, opts Options) (*Engine, error) {
	c := &m.Config
	wdt := opts.WeightDType
	if wdt == "" {
		wdt = m.DType
	}
	wcode, err := dtypeCode(wdt)
	if wdt == Int8 {
		wcode, err = nzQ8, nil
	}
	if err != nil {
		return nil, fmt.Errorf("engine weight dtype: %w", err)
	}
	rope := int64(nzRopeDefault)
	switch c.RopeScaling.Type {
	case model.RopeLinear:
		rope = nzRopeLinear
	case model.RopeLlama3:
		rope = nzRopeLlama3
	case model.RopeYarn:
		rope = nzRopeYarn
	case model.RopeLongrope:
		rope = nzRopeLongrope
	case model.RopeDefault, "":
	case model.RopeDynamic: // default RoPE up to max_position_embeddings (below)
	default:
		return nil, fmt.Errorf("engine: rope_type %q is not supported", c.RopeScaling.Type)
	}
	maxPos := c.ContextLength()
	if opts.MaxPosition > 0 {
		maxPos = opts.MaxPosition
	}
	if c.RopeScaling.Type == model.RopeDynamic && maxPos > c.MaxPositionEmbeddings {
		return nil, fmt.Errorf("dynamic NTK RoPE past max_position_embeddings (%d positions served) is not supported", maxPos)
	}
	cfg := nzConfig{
		VocabSize:               int64(c.VocabSize),
		HiddenSize:              int64(c.HiddenSize),
		IntermediateSize:        int64(c.IntermediateSize),
		NumLayers:               int64(c.NumLayers),
		NumHeads:                int64(c.NumHeads),
		NumKvHeads:              int64(c.NumKVHeads),
		HeadDim:                 int64(c.HeadDim),
		MaxPosition:             int64(maxPos),
		RmsNormEps:              c.RMSNormEps,
		RopeTheta:               c.RopeTheta,
		RopeType:                rope,
		RopeFactor:              c.RopeScaling.Factor,
		RopeLowFreqFactor:       c.RopeScaling.LowFreqFactor,
		RopeHighFreqFactor:      c.RopeScaling.HighFreqFactor,
		RopeOriginalMaxPosition: int64(c.RopeScaling.OriginalMaxPosition),
		RopeBetaFast:            c.RopeScaling.BetaFast,
		RopeBetaSlow:            c.RopeScaling.BetaSlow,
		RopeAttentionFactor:     c.RopeScaling.AttentionFactor,
		SlidingWindow:           int64(c.SlidingWindow),
		SlidingWindowFromLayer:  int64(c.SlidingWindowFromLayer),
		WeightDtype:             int64(wcode),
		MaxSlots:                int64(opts.MaxSlots),
		MaxRank:                 int64(opts.MaxRank),
		KvBlockSize:             int64(opts.KVBlockSize),
		KvNumBlocks:             int64(opts.KVBlocks),
		KvMemoryBytes:           opts.KVMemoryBytes,
		MaxBatchTokens:          int64(opts.MaxBatchTokens),
		MaxBatchSeqs:            int64(opts.MaxBatchSeqs),
		NumThreads:              int64(opts.Threads),
		DeviceIndex:             int64(opts.DeviceIndex),
	}
	if m.Tied {
		cfg.TieWordEmbeddings = 1
	}
	if opts.KVF32 {
		cfg.KvF32 = 1
	}
	if c.HiddenAct == model.ActGeluTanh {
		cfg.HiddenAct = nzActGeluTanh
	}
	cfg.NormWeightOffset = c.NormWeightOffset
	if c.EmbedScaled {
		cfg.EmbedScale = c.EmbedScale(m.DType) // as the checkpoint runs in transformers
	}
	if c.QueryPreAttnScalar > 0 {
		cfg.AttnScale = 1 / math.Sqrt(c.QueryPreAttnScalar)
	}
	cfg.AttnSoftcap, cfg.FinalSoftcap = c.AttnSoftcap, c.FinalSoftcap
	cfg.RopeLocalTheta = c.RopeLocalTheta
	var pin goruntime.Pinner
	defer pin.Unpin()
	if c.SlidingLayers != nil {
		sliding := make([]int32, c.NumLayers)
		for l := range sliding {
			if c.SlidingLayer(l) {
				sliding[l] = 1
			}
		}
		pin.Pin(&sliding[0])
		cfg.LayerSliding = unsafe.Pointer(&sliding[0])
	}
	if c.RopeScaling.Truncate {
		cfg.RopeTruncate = 1
	}
	cfg.RotaryDim = int64(c.RotaryDim)
	if rope == nzRopeLongrope {
		// one table for every position: the context served picks it
		f := c.RopeScaling.LongropeFactors(maxPos)
		ext := make([]float32, len(f))
		for j, v := range f {
			ext[j] = float32(v) // as transformers' torch.tensor(..., dtype=float32)
		}
		pin.Pin(&ext[0])
		cfg.RopeExtFactors = unsafe.Pointer(&ext[0])
	}
	e := &Engine{lib: l, vocab: c.VocabSize, model: m.Info()}
	if err := l.check("nz_engine_create", func() int32 { return l.engineCreate(&cfg, &e.handle) }); err != nil {
		return nil, err
	}
	for _, w := range m.Weights() {
		if err := e.setTensor(w.Kind, w.Layer, w.Tensor); err != nil {
			e.Close()
			return nil, fmt.Errorf("set %s: %w", w.Name, err)
		}
	}
	if err := l.check("nz_engine_finalize", func() int32 { return l.engineFinalize(e.handle) }); err != nil {
		e.Close()
		return nil, err
	}
	var vals [nzInfoCount]int64
	if err := l.check("nz_engine_info", func() int32 { return l.engineInfo(e.handle, &vals[0], nzInfoCount) }); err != nil {
		e.Close()
		return nil, err
	}
	e.info = Info{
		Backend:     l.backend,
		KVBlockSize: int(vals[nzInfoKVBlockSize]),
		KVNumBlocks: int(vals[nzInfoKVNumBlocks]),
		WeightBytes: vals[nzInfoWeightBytes],
		SlotBytes:   vals[nzInfoSlotBytes],
		KVBytes:     vals[nzInfoKVBytes],
		MaxSlots:    int(vals[nzInfoMaxSlots]),
		MaxRank:     int(vals[nzInfoMaxRank]),
		Threads:     int(vals[nzInfoThreads]),
	}
	return e, nil
}

// Info describes the engine.
func (e *Engine) Info() Info { return e.info }

// VocabSize is the number of logits per token.
func (e *Engine) VocabSize() int { return e.vocab }

// Close frees the engine. It may be called more than once.
func (e *Engine) Close() error {
	if e == nil || e.handle == 0 {
		return nil
	}
	e.lib.engineDestroy(e.handle)
	e.handle = 0
	return nil
}

var errClosed = errors.New("engine is closed")

// SetTensor replaces one base tensor (layer -1 for the non-layer kinds),
// converting it to the engine's weight dtype. The merge-and-swap baseline of
// the benchmarks uses it; serving never does.
func (e *Engine) SetTensor(kind model.TensorKind, layer int, t safetensors.Tensor) error {
	if e.handle == 0 {
		return errClosed
	}
	return e.setTensor(kind, layer, t)
}

func (e *Engine) setTensor(kind model.TensorKind, layer int, t safetensors.Tensor) error {
	code, err := dtypeCode(t.DType)
	if err != nil {
		return fmt.Errorf("nz_engine_set_tensor: %w: %v", ErrInvalid, err)
	}
	if len(t.Shape) < 1 || len(t.Shape) > 2 {
		return fmt.Errorf("nz_engine_set_tensor: %w: tensor %q has %d dimensions", ErrInvalid, t.Name, len(t.Shape))
	}
	n := int64(1)
	for i, d := range t.Shape {
		e.shape[i] = d
		n *= d
	}
	if n <= 0 || int64(len(t.Data)) != n*t.DType.Size() {
		return fmt.Errorf("nz_engine_set_tensor: %w: tensor %q has %d bytes for shape %v", ErrInvalid, t.Name, len(t.Data), t.Shape)
	}
	return e.lib.check("nz_engine_set_tensor", func() int32 {
		return e.lib.engineSetTensor(e.handle, int32(kind), int32(layer), code, unsafe.Pointer(&t.Data[0]), &e.shape[0], int32(len(t.Shape)))
	})
}

// LoadAdapter copies an adapter into slot with ONE nz_adapter_load call,
// replacing what the slot held. The adapter's tensors are read during the
// call only; it may be closed afterwards.
func (e *Engine) LoadAdapter(slot int, a *model.Adapter) error {
	if e.handle == 0 {
		return errClosed
	}
	n := len(a.LoRAs)
	if n == 0 {
		return fmt.Errorf("nz_adapter_load: %w: adapter has no modules", ErrInvalid)
	}
	ld := &e.load
	ld.layer, ld.module, ld.rank = ld.layer[:0], ld.module[:0], ld.rank[:0]
	ld.aDtype, ld.bDtype, ld.scale = ld.aDtype[:0], ld.bDtype[:0], ld.scale[:0]
	ld.a, ld.b = ld.a[:0], ld.b[:0]
	defer e.pin.Unpin()
	for _, l := range a.LoRAs {
		ac, err := dtypeCode(l.A.DType)
		if err != nil {
			return fmt.Errorf("nz_adapter_load: %w: %v", ErrInvalid, err)
		}
		bc, err := dtypeCode(l.B.DType)
		if err != nil {
			return fmt.Errorf("nz_adapter_load: %w: %v", ErrInvalid, err)
		}
		// The ABI passes no shapes: the library derives them from the
		// module, so Go checks them here, where a mismatch would otherwise
		// read past the tensors.
		if l.Module < 0 || l.Module >= model.NumModules || l.Layer < 0 || l.Layer >= e.model.NumLayers {
			return fmt.Errorf("nz_adapter_load: %w: layer %d module %d is out of range", ErrInvalid, l.Layer, l.Module)
		}
		in, out := l.Module.Features(e.model)
		if l.Rank <= 0 || len(l.A.Shape) != 2 || len(l.B.Shape) != 2 ||
			l.A.Shape[0] != int64(l.Rank) || l.A.Shape[1] != int64(in) || l.B.Shape[0] != int64(out) || l.B.Shape[1] != int64(l.Rank) ||
			int64(len(l.A.Data)) != l.A.NumElements()*l.A.DType.Size() || int64(len(l.B.Data)) != l.B.NumElements()*l.B.DType.Size() {
			return fmt.Errorf("nz_adapter_load: %w: layer %d %s: A %v and B %v do not fit rank %d, in %d, out %d", ErrInvalid, l.Layer, l.Module, l.A.Shape, l.B.Shape, l.Rank, in, out)
		}
		pa, pb := unsafe.Pointer(&l.A.Data[0]), unsafe.Pointer(&l.B.Data[0])
		// Mapped adapter files are not Go memory (Pin is then a no-op);
		// adapters built in memory are, and C reads them through the
		// pointer arrays below.
		e.pin.Pin(pa)
		e.pin.Pin(pb)
		ld.layer = append(ld.layer, int32(l.Layer))
		ld.module = append(ld.module, int32(l.Module))
		ld.rank = append(ld.rank, int32(l.Rank))
		ld.scale = append(ld.scale, float32(l.Scale))
		ld.aDtype = append(ld.aDtype, ac)
		ld.bDtype = append(ld.bDtype, bc)
		ld.a = append(ld.a, pa)
		ld.b = append(ld.b, pb)
	}
	return e.lib.check("nz_adapter_load", func() int32 {
		return e.lib.adapterLoad(e.handle, int32(slot), int32(n), &ld.layer[0], &ld.module[0], &ld.rank[0], &ld.scale[0],
			&ld.aDtype[0], &ld.a[0], &ld.bDtype[0], &ld.b[0])
	})
}

// ClearAdapter empties a slot.
func (e *Engine) ClearAdapter(slot int) error {
	if e.handle == 0 {
		return errClosed
	}
	return e.lib.check("nz_adapter_clear", func() int32 { return e.lib.adapterClear(e.handle, int32(slot)) })
}

// Step runs one batch with ONE nz_step call and fills b's outputs (sized
// here, reusing their capacity). The Go slices the C struct refers to are
// pinned for the call. In steady state a step allocates nothing.
func (e *Engine) Step(b *Batch) error {
	if e.handle == 0 {
		return errClosed
	}
	if err := b.check(e.vocab); err != nil {
		return fmt.Errorf("nz_step: %w: %v", ErrInvalid, err)
	}
	n := len(b.SeqLen)
	b.SizeOutputs(e.vocab)
	c := &e.cbatch
	*c = nzBatch{
		NSeqs:     int64(n),
		NTokens:   int64(len(b.Tokens)),
		MaxBlocks: int64(b.MaxBlocks),
		NTop:      int64(b.NTop),
	}
	c.Tokens = e.pinned(unsafe.Pointer(unsafe.SliceData(b.Tokens)), len(b.Tokens))
	c.SeqLen = e.pinned(unsafe.Pointer(unsafe.SliceData(b.SeqLen)), n)
	c.SeqPos = e.pinned(unsafe.Pointer(unsafe.SliceData(b.SeqPos)), n)
	c.SeqSlot = e.pinned(unsafe.Pointer(unsafe.SliceData(b.SeqSlot)), n)
	c.SeqSample = e.pinned(unsafe.Pointer(unsafe.SliceData(b.SeqSample)), n)
	c.BlockTable = e.pinned(unsafe.Pointer(unsafe.SliceData(b.BlockTable)), len(b.BlockTable))
	c.Temperature = e.pinned(unsafe.Pointer(unsafe.SliceData(b.Temperature)), n)
	c.TopP = e.pinned(unsafe.Pointer(unsafe.SliceData(b.TopP)), n)
	c.TopK = e.pinned(unsafe.Pointer(unsafe.SliceData(b.TopK)), n)
	c.Seed = e.pinned(unsafe.Pointer(unsafe.SliceData(b.Seed)), n)
	c.OutToken = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutToken)), n)
	c.OutLogprob = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutLogprob)), n)
	c.OutTopToken = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutTopToken)), n*b.NTop)
	c.OutTopLogprob = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutTopLogprob)), n*b.NTop)
	if b.Logits {
		c.OutLogits = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutLogits)), n*e.vocab)
	}
	if nt := len(b.ScoreTarget); nt > 0 {
		c.ScoreTarget = e.pinned(unsafe.Pointer(unsafe.SliceData(b.ScoreTarget)), nt)
		c.OutScoreLogprob = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutScoreLogprob)), nt)
		c.OutScoreTopToken = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutScoreTopToken)), nt*b.NTop)
		c.OutScoreTopLogprob = e.pinned(unsafe.Pointer(unsafe.SliceData(b.OutScoreTopLogprob)), nt*b.NTop)
	}
	if len(b.BiasToken) > 0 {
		c.BiasOff = e.pinned(unsafe.Pointer(unsafe.SliceData(b.BiasOff)), len(b.BiasOff))
		c.BiasToken = e.pinned(unsafe.Pointer(unsafe.SliceData(b.BiasToken)), len(b.BiasToken))
		c.BiasValue = e.pinned(unsafe.Pointer(unsafe.SliceData(b.BiasValue)), len(b.BiasValue))
	}
	if len(b.SeqAllow) > 0 {
		c.SeqAllow = e.pinned(unsafe.Pointer(unsafe.SliceData(b.SeqAllow)), n)
		c.Allow = e.pinned(unsafe.Pointer(unsafe.SliceData(b.Allow)), len(b.Allow))
		c.NAllow = int64(len(b.Allow) / ((e.vocab + 31) / 32))
	}
	// The C struct itself lives in the Engine (heap) and is pinned too, so
	// its address may sit in the argument array.
	e.pinned(unsafe.Pointer(c), 1)
	e.args[0], e.args[1] = e.handle, uintptr(unsafe.Pointer(c))
	goruntime.LockOSThread()
	r1, _, _ := purego.SyscallN(e.lib.stepFn, e.args[:]...)
	st := int32(r1)
	var err error
	if st != nzOK {
		err = &Error{Call: "nz_step", Status: st, Message: e.lib.lastError()}
	}
	goruntime.UnlockOSThread()
	for i := range e.pins {
		e.pins[i].Unpin()
	}
	e.npins = 0
	e.args = [2]uintptr{}
	*c = nzBatch{}
	return err
}

// pinned pins a slice's backing array and returns its address, or nil for
// an empty slice.
func (e *Engine) pinned(p unsafe.Pointer, n int) unsafe.Pointer {
	if n == 0 || p == nil {
		return nil
	}
	e.pins[e.npins%len(e.pins)].Pin(p)
	e.npins++
	return p
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
