package runtime

import nozzle "github.com/nozzle-ai/nozzle"

// Names the external tests use to run the runtime on a deterministic
// stand-in for the engine and tokenizer (the seam whose real side
// runtime/engine and runtime/tokenizer test).
type (
	Backend       = backend
	Codec         = codec
	HostAdapter   = hostAdapter
	StreamDecoder = streamDecoder
)

// TestParts are the parts of a runtime built by a test.
type TestParts struct {
	Info    nozzle.ModelInfo
	Backend Backend
	Codec   Codec
	Load    func(dir string) (HostAdapter, error)
	EOS     []int
}

// OpenParts starts a runtime on parts that are up.
func OpenParts(opts Options, p TestParts) (*Runtime, error) {
	return newRuntime(opts, parts{info: p.Info, be: p.Backend, codec: p.Codec, load: p.Load, eos: p.EOS})
}

// Resources reports what the scheduler holds. Call it after Close, when
// the engine goroutine has stopped.
type Resources struct {
	FreeBlocks, TotalBlocks int
	PinnedSlots, UsedSlots  int
	Waiting, Running        int
	Tenants                 int
	Steps                   uint64
}

func (r *Runtime) Resources() Resources {
	s := r.sched
	return Resources{
		FreeBlocks: s.pool.available(), TotalBlocks: s.pool.n,
		PinnedSlots: s.slots.pinned(), UsedSlots: s.slots.used(),
		Waiting: s.waiting, Running: len(s.running), Tenants: len(s.tenants), Steps: s.steps,
	}
}

// TokenID finds the id of the token whose text is text.
func (r *Runtime) TokenID(text string) (int, bool) {
	for id := range r.info.VocabSize {
		if r.codec.TokenText(id) == text {
			return id, true
		}
	}
	return 0, false
}
