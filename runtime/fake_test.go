package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/engine"
)

// fakeClock is a clock that only the fake engine moves: each step costs a
// fixed time per token, so timings are exact.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeEngine is a deterministic engine: a sequence's state at a position
// is a hash of its tokens up to there and of the adapter in its slot,
// kept in the KV blocks the scheduler assigns, so a wrong block table, a
// reused block or a wrong slot changes the text. Logits are drawn from
// that hash.
type fakeEngine struct {
	vocab     int
	blockSize int
	numBlocks int
	clock     *fakeClock
	perToken  time.Duration
	perStep   time.Duration
	eosID     int
	eosBias   float64

	mu        sync.Mutex
	kv        []kvCell
	slots     []uint64
	steps     int
	maxSeqs   int
	loads     int
	clears    int
	failSteps int
	closed    bool
	onStep    func(n int) // called after each step with the step count
	rowLimit  int         // rows of logits a step may have (max_batch_seqs); 0: any
	// window, when not 0, makes the logits at a position depend only on
	// the last window tokens up to it and the adapter (the state kept in
	// the KV cells still hashes everything): greedy decoding falls into
	// loops, where prompt lookup's drafts hold.
	window int
	// tokenLimit is the tokens a step may have (max_batch_tokens), and
	// seqLimit the sequences in it (max_batch_seqs); 0: any.
	tokenLimit int
	seqLimit   int
	// invalid holds every error Step returned for a batch it refused (an
	// injected failure excepted): the scheduler finishes the batch's
	// requests with EINTERNAL, which a test may not tell from an
	// injected failure.
	invalid []error
}

type kvCell struct {
	h   uint64
	pos int32
	tok int32
	ok  bool
}

type fakeAdapter struct {
	sha  string
	size int64
	rank int
	mu   sync.Mutex
	open bool
}

func (a *fakeAdapter) SizeBytes() int64 { return a.size }
func (a *fakeAdapter) Rank() int        { return a.rank }
func (a *fakeAdapter) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.open {
		return errors.New("fake adapter closed twice")
	}
	a.open = false
	return nil
}

func newFakeEngine(clock *fakeClock, numBlocks, slots int) *fakeEngine {
	return &fakeEngine{
		vocab: fakeVocab, blockSize: 16, numBlocks: numBlocks, clock: clock,
		perToken: time.Millisecond, perStep: 2 * time.Millisecond,
		eosID: fakeEOS, eosBias: -3,
		kv:    make([]kvCell, numBlocks*16),
		slots: make([]uint64, slots),
	}
}

func mix(h, v uint64) uint64 {
	h ^= v + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func (e *fakeEngine) Step(b *engine.Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failSteps > 0 && !e.closed {
		e.failSteps--
		return errors.New("injected step failure")
	}
	err := e.step(b)
	if err != nil {
		e.invalid = append(e.invalid, err)
	}
	return err
}

// invalidSteps returns the errors of the batches Step refused.
func (e *fakeEngine) invalidSteps() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.invalid)
}

func (e *fakeEngine) step(b *engine.Batch) error {
	if e.closed {
		return errors.New("engine closed")
	}
	n := len(b.SeqLen)
	if e.seqLimit > 0 && n > e.seqLimit {
		return fmt.Errorf("%d sequences in a step, the limit is %d", n, e.seqLimit)
	}
	if e.tokenLimit > 0 && len(b.Tokens) > e.tokenLimit {
		return fmt.Errorf("%d tokens in a step, the limit is %d", len(b.Tokens), e.tokenLimit)
	}
	b.SizeOutputs(e.vocab)
	e.steps++
	e.maxSeqs = max(e.maxSeqs, n)
	// A block may be read by several sequences of a step (a shared
	// prefix) but written by one only, which no other may read.
	writer := map[int32]int{}
	for i := 0; i < n; i++ {
		pos, ln := int(b.SeqPos[i]), int(b.SeqLen[i])
		row := b.BlockTable[i*b.MaxBlocks : (i+1)*b.MaxBlocks]
		need := (pos + ln + e.blockSize - 1) / e.blockSize
		if need > b.MaxBlocks {
			return fmt.Errorf("seq %d needs %d blocks, table has %d", i, need, b.MaxBlocks)
		}
		for _, blk := range row[:need] {
			if blk < 0 || int(blk) >= e.numBlocks {
				return fmt.Errorf("block %d out of range", blk)
			}
		}
		for _, blk := range row[pos/e.blockSize : need] {
			if o, ok := writer[blk]; ok && o != i {
				return fmt.Errorf("block %d written by seqs %d and %d", blk, o, i)
			}
			writer[blk] = i
		}
	}
	// Every sampled sequence and every scored token takes a row of
	// logits, as in the engine: at most rowLimit of them.
	rows := 0
	for i := 0; i < n; i++ {
		rows += int(b.SeqSample[i])
	}
	for _, g := range b.ScoreTarget {
		if g >= 0 {
			rows++
		}
	}
	if e.rowLimit > 0 && rows > e.rowLimit {
		return fmt.Errorf("%d rows of logits, the engine has %d", rows, e.rowLimit)
	}
	off := 0
	for i := 0; i < n; i++ {
		pos, ln := int(b.SeqPos[i]), int(b.SeqLen[i])
		row := b.BlockTable[i*b.MaxBlocks : (i+1)*b.MaxBlocks]
		for _, blk := range row[:(pos+e.blockSize-1)/e.blockSize] {
			if o, ok := writer[blk]; ok && o != i {
				return fmt.Errorf("seq %d reads block %d that seq %d writes", i, blk, o)
			}
		}
		var ad uint64
		if s := b.SeqSlot[i]; s >= 0 {
			if int(s) >= len(e.slots) || e.slots[s] == 0 {
				return fmt.Errorf("seq %d uses empty slot %d", i, s)
			}
			ad = e.slots[s]
		}
		cell := func(p int) *kvCell {
			return &e.kv[int(row[p/e.blockSize])*e.blockSize+p%e.blockSize]
		}
		h := uint64(1469598103934665603)
		if pos > 0 {
			c := cell(pos - 1)
			if !c.ok || int(c.pos) != pos-1 {
				return fmt.Errorf("seq %d reads position %d that is not in its cache", i, pos-1)
			}
			h = c.h
		}
		lh := h // the logits' key
		for j := 0; j < ln; j++ {
			tok := b.Tokens[off+j]
			if tok < 0 || int(tok) >= e.vocab {
				return fmt.Errorf("token %d out of range", tok)
			}
			h = mix(mix(h, uint64(tok)), ad)
			*cell(pos + j) = kvCell{h: h, pos: int32(pos + j), tok: tok, ok: true}
			lh = h
			if e.window > 0 {
				lh = 1469598103934665603
				for p := max(0, pos+j-e.window+1); p <= pos+j; p++ {
					c := cell(p)
					if !c.ok || int(c.pos) != p {
						return fmt.Errorf("seq %d reads position %d that is not in its cache", i, p)
					}
					lh = mix(lh, uint64(c.tok))
				}
				lh = mix(lh, ad)
			}
			if len(b.ScoreTarget) > 0 && b.ScoreTarget[off+j] >= 0 {
				e.score(b, off+j, lh)
			}
		}
		off += ln
		if b.SeqSample[i] == 1 {
			e.sample(b, i, lh, uint64(pos+ln))
		}
	}
	if off != len(b.Tokens) {
		return fmt.Errorf("seq lengths add to %d, batch has %d tokens", off, len(b.Tokens))
	}
	e.clock.Advance(e.perStep + time.Duration(len(b.Tokens))*e.perToken)
	if e.onStep != nil {
		e.onStep(e.steps)
	}
	return nil
}

// score scores token t of the batch (prompt logprobs): the log-probability
// of b.ScoreTarget[t] under the logits after t, and the NTop most likely.
func (e *fakeEngine) score(b *engine.Batch, t int, h uint64) {
	l := e.logits(h)
	lse := logSumExp(l)
	b.OutScoreLogprob[t] = float32(l[b.ScoreTarget[t]] - lse)
	topN(l, lse, b.OutScoreTopToken[t*b.NTop:(t+1)*b.NTop], b.OutScoreTopLogprob[t*b.NTop:(t+1)*b.NTop])
}

// topN fills toks and lps (one entry each per place) with the most likely
// tokens of l and their logprobs, most likely first, ties by id.
func topN(l []float64, lse float64, toks []int32, lps []float32) {
	if len(toks) == 0 {
		return
	}
	idx := make([]int, len(l))
	for v := range idx {
		idx[v] = v
	}
	sort.SliceStable(idx, func(a, c int) bool { return l[idx[a]] > l[idx[c]] })
	for k := range toks {
		toks[k] = int32(idx[k])
		lps[k] = float32(l[idx[k]] - lse)
	}
}

// logSumExp is log Σ exp(l).
func logSumExp(l []float64) float64 {
	maxL := math.Inf(-1)
	for _, x := range l {
		maxL = math.Max(maxL, x)
	}
	var sum float64
	for _, x := range l {
		sum += math.Exp(x - maxL)
	}
	return maxL + math.Log(sum)
}

func (e *fakeEngine) logits(h uint64) []float64 {
	l := make([]float64, e.vocab)
	for v := range l {
		x := mix(h, uint64(v)+1)
		l[v] = float64(x>>11) / float64(1<<53) * 4
		if v < 32 || v > 126 && v < 256 {
			l[v] -= 6 // mostly printable text
		}
	}
	l[fakeBOS] = -30
	l[e.eosID] += e.eosBias
	return l
}

func (e *fakeEngine) sample(b *engine.Batch, i int, h uint64, pos uint64) {
	l := e.logits(h)
	lse := logSumExp(l)
	tok := 0
	if t := float64(b.Temperature[i]); t == 0 {
		for v := range l {
			if l[v] > l[tok] {
				tok = v
			}
		}
	} else {
		r := float64(mix(b.Seed[i], pos)>>11) / float64(1<<53)
		maxL := math.Inf(-1)
		for _, x := range l {
			maxL = math.Max(maxL, x)
		}
		var z float64
		p := make([]float64, len(l))
		for v, x := range l {
			p[v] = math.Exp((x - maxL) / t)
			z += p[v]
		}
		acc := 0.0
		tok = len(l) - 1
		for v := range p {
			acc += p[v] / z
			if r < acc {
				tok = v
				break
			}
		}
	}
	b.OutToken[i] = int32(tok)
	b.OutLogprob[i] = float32(l[tok] - lse)
	topN(l, lse, b.OutTopToken[i*b.NTop:(i+1)*b.NTop], b.OutTopLogprob[i*b.NTop:(i+1)*b.NTop])
}

func (e *fakeEngine) LoadAdapter(slot int, a runtime.HostAdapter) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	fa := a.(*fakeAdapter)
	fa.mu.Lock()
	open := fa.open
	fa.mu.Unlock()
	if !open {
		return errors.New("loading a closed adapter")
	}
	h := fnv.New64a()
	h.Write([]byte(fa.sha))
	e.slots[slot] = h.Sum64() | 1
	e.loads++
	return nil
}

func (e *fakeEngine) ClearAdapter(slot int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.slots[slot] = 0
	e.clears++
	return nil
}

func (e *fakeEngine) KVBlockSize() int { return e.blockSize }
func (e *fakeEngine) KVNumBlocks() int { return e.numBlocks }
func (e *fakeEngine) Device() string   { return "cpu" }
func (e *fakeEngine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// The fake tokenizer: ids 0–255 are bytes, then BOS, EOS and a few words.
const (
	fakeBOS   = 256
	fakeEOS   = 257
	fakeVocab = 272
)

var fakeWords = []string{"hello", " world", " the", "ing", " stop", "é", "€", " and", "ST", "OP", "\n", "...", "ab", "cd"}

type fakeCodec struct{}

func (fakeCodec) Encode(text string, addSpecial bool) ([]int, error) {
	var ids []int
	if addSpecial {
		ids = append(ids, fakeBOS)
	}
	for len(text) > 0 {
		if strings.HasPrefix(text, "<s>") {
			ids, text = append(ids, fakeBOS), text[3:]
			continue
		}
		if strings.HasPrefix(text, "</s>") {
			ids, text = append(ids, fakeEOS), text[4:]
			continue
		}
		matched := false
		for i, w := range fakeWords {
			if strings.HasPrefix(text, w) {
				ids, text, matched = append(ids, 258+i), text[len(w):], true
				break
			}
		}
		if !matched {
			ids, text = append(ids, int(text[0])), text[1:]
		}
	}
	return ids, nil
}

func (fakeCodec) ChatPrompt(msgs []nozzle.ChatMessage, tools, kwargs json.RawMessage) (string, error) {
	var b strings.Builder
	b.WriteString("<s>")
	for _, m := range msgs {
		if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
			return "", fmt.Errorf("unknown role %q", m.Role)
		}
		fmt.Fprintf(&b, "[%s] %s\n", m.Role, m.Content)
	}
	b.WriteString("[assistant] ")
	// A variable think (chat_template_kwargs) opens the model's thoughts
	// in the generation prompt, as DeepSeek-R1's template does; open
	// writes another opening tag there.
	var vars struct {
		Think bool
		Open  string
	}
	if len(kwargs) > 0 {
		if err := json.Unmarshal(kwargs, &vars); err != nil {
			return "", err
		}
	}
	if vars.Think {
		b.WriteString("<think>\n")
	}
	b.WriteString(vars.Open)
	return b.String(), nil
}

func (fakeCodec) IsSpecial(id int) bool { return id == fakeBOS || id == fakeEOS }

func (fakeCodec) TokenBytes(id int) []byte {
	switch {
	case id < 256:
		return []byte{byte(id)}
	case id == fakeBOS:
		return []byte("<s>")
	case id == fakeEOS:
		return []byte("</s>")
	case id-258 < len(fakeWords):
		return []byte(fakeWords[id-258])
	}
	return nil
}

func (c fakeCodec) TokenText(id int) string { return string(c.TokenBytes(id)) }
func (fakeCodec) EOS() int                  { return fakeEOS }

func (fakeCodec) NewStreamDecoder([]int) runtime.StreamDecoder { return &fakeStream{} }

// fakeStream emits the longest complete UTF-8 prefix of what it got,
// skipping special tokens.
type fakeStream struct{ buf []byte }

func (s *fakeStream) Add(id int) string {
	if id == fakeBOS || id == fakeEOS {
		return ""
	}
	s.buf = append(s.buf, fakeCodec{}.TokenBytes(id)...)
	n := 0
	for n < len(s.buf) {
		r, size := utf8.DecodeRune(s.buf[n:])
		if r == utf8.RuneError && size <= 1 {
			if !utf8.FullRune(s.buf[n:]) {
				break // incomplete: wait for more
			}
		}
		n += size
	}
	out := strings.ToValidUTF8(string(s.buf[:n]), "\uFFFD")
	s.buf = s.buf[n:]
	return out
}

func (s *fakeStream) Flush() string {
	out := strings.ToValidUTF8(string(s.buf), "\uFFFD")
	s.buf = nil
	return out
}

// dirSource serves every adapter except those marked missing; the
// "folder" it returns is the content address itself.
type dirSource struct{ lc *loadCounter }

func (s dirSource) AdapterDir(ctx context.Context, sha string) (string, error) {
	s.lc.mu.Lock()
	defer s.lc.mu.Unlock()
	if s.lc.missing[sha] {
		return "", nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", sha[:12])
	}
	return sha, nil
}

func fakeSHA(i int) string { return fmt.Sprintf("%064x", i+1) }

// fakeModel is the model a fake runtime serves.
var fakeModel = nozzle.ModelInfo{
	ID: "fake-llama", Architecture: "LlamaForCausalLM", ContextLength: 512, VocabSize: fakeVocab,
	HiddenSize: 64, IntermediateSize: 128, NumLayers: 2, NumHeads: 4, NumKVHeads: 2, HeadDim: 16,
}

// testRT is a runtime on the fake engine.
type testRT struct {
	*runtime.Runtime
	eng   *fakeEngine
	clock *fakeClock
	loads *loadCounter
}

type loadCounter struct {
	mu      sync.Mutex
	n       int
	opened  []*fakeAdapter
	missing map[string]bool
	gate    func(sha string) // when set, called before each load
}

func startFake(t testing.TB, opts runtime.Options, numBlocks int) *testRT {
	t.Helper()
	return startFakeAt(t, opts, numBlocks, time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
}

func startFakeAt(t testing.TB, opts runtime.Options, numBlocks int, start time.Time) *testRT {
	t.Helper()
	return startFakeModel(t, opts, numBlocks, start, fakeModel)
}

// startFakeModel is startFakeAt serving info's model.
func startFakeModel(t testing.TB, opts runtime.Options, numBlocks int, start time.Time, info nozzle.ModelInfo) *testRT {
	t.Helper()
	clock := newFakeClock(start)
	if opts.Slots == 0 {
		opts.Slots = 4
	}
	eng := newFakeEngine(clock, numBlocks, opts.Slots)
	eng.rowLimit = opts.MaxBatchSeqs
	lc := &loadCounter{missing: map[string]bool{}}
	if opts.Clock == nil {
		opts.Clock = clock.Now
	}
	if opts.AdapterSource == nil {
		opts.AdapterSource = dirSource{lc}
	}
	rt, err := runtime.OpenParts(opts, runtime.TestParts{
		Info: info, Backend: eng, Codec: fakeCodec{}, EOS: []int{fakeEOS},
		Load: func(dir string) (runtime.HostAdapter, error) {
			lc.mu.Lock()
			gate := lc.gate
			lc.mu.Unlock()
			if gate != nil {
				gate(dir)
			}
			lc.mu.Lock()
			defer lc.mu.Unlock()
			lc.n++
			a := &fakeAdapter{sha: dir, size: 1 << 20, rank: 8, open: true}
			lc.opened = append(lc.opened, a)
			return a, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testRT{Runtime: rt, eng: eng, clock: clock, loads: lc}
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x5eed)) }
