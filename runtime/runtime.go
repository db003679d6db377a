// Package runtime is Nozzle's shared runtime: one base model kept warm on
// one device, many tenants' LoRA adapters applied per request.
//
// A Runtime loads the model once (memory-mapped), owns the engine through
// one goroutine that runs steps back to back while there is work, and
// batches requests for different adapters into each step (continuous
// batching with chunked prefill). Adapters move through three tiers: the
// content-addressed Store on disk, a host-memory LRU of parsed adapters,
// and the engine's adapter slots. Admission is fair across tenants
// (S-LoRA's virtual token counter). Every step's wall time is split across
// the sequences in it by their share of the step's work, so each request
// reports the device seconds it used; the runtime's capacity intervals
// report its active and idle time for the cost split.
//
// NewServer and NewClient carry the same nozzle.Generator over HTTP for
// deployments where the gateway and the runtime run on different machines.
package runtime

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime/grammar"
)

// Options configure a Runtime. Zero values take the defaults named.
type Options struct {
	// ModelDir is a Hugging Face model folder (config.json, safetensors,
	// tokenizer.json, generation_config.json).
	ModelDir string
	// EngineLib is the engine library: the path of libnozzle_cpu.so or
	// libnozzle_cuda.so, or a folder holding them.
	EngineLib string
	// Device is "cpu", "cuda" or "auto" (default): auto picks the CUDA
	// library when it loads and finds a GPU, else the CPU one.
	Device string
	// Weights is how the engine keeps the base model's weights: "" (or
	// "checkpoint") in the checkpoint's dtype, "int8" as int8 rows with a
	// scale each, quantized at load (the CPU engine only: half a 16-bit
	// checkpoint's memory and of the bytes every decode step reads).
	Weights string
	// Slots is the number of engine adapter slots (default 8).
	Slots int
	// MaxRank is the largest adapter rank accepted; slots are padded to it
	// (default 64, at most 256).
	MaxRank int
	// KVMemoryBytes is the memory budget of the KV cache (default: the
	// engine's default); KVBlocks, when set, fixes the number of blocks.
	KVMemoryBytes int64
	KVBlocks      int
	// KVBlockSize is the number of tokens per KV block (default 16).
	KVBlockSize int
	// MaxBatchTokens is the token budget of one step, MaxBatchSeqs the
	// most sequences running at once, and PrefillChunk the most prompt
	// tokens of one sequence per step (default 256). The batch limits
	// default to what the device and model make worthwhile (see
	// batchLimits): 512 tokens and 64 sequences on CUDA; on a CPU, 64 and
	// 8 for a model that streams its weights from memory, 16 and 3 for
	// one small enough to stay in the CPU's cache.
	MaxBatchTokens int
	MaxBatchSeqs   int
	PrefillChunk   int
	// SpeculativeTokens is the most tokens drafted by prompt lookup for
	// a greedy sequence's decode step, verified in that step (0: off;
	// SpeculativeAuto: 4 on a CPU with a model bigger than its cache,
	// where steps are bound by reading the weights, else off); drafts
	// only take the step's spare tokens and logit rows, and only while
	// the step decodes at most SpeculativeMaxSeqs sequences (default 2).
	SpeculativeTokens  int
	SpeculativeMaxSeqs int
	// Threads is the CPU engine's worker threads (0: every core).
	Threads int
	// HostCacheBytes is the budget of the host-memory adapter cache
	// (default 1 GiB).
	HostCacheBytes int64
	// RuntimeID names this runtime in usage and capacity records
	// (default: a random id).
	RuntimeID string
	// RatePerHour is the operator's price of the device per hour.
	RatePerHour float64
	// PrefillWeight and DecodeWeight weigh prompt and completion tokens in
	// the split of a step's time and in the fair-share counters (default 1
	// and 2).
	PrefillWeight float64
	DecodeWeight  float64
	// IntervalLength is the length of a capacity interval (default one
	// minute); intervals are also closed at every UTC hour.
	IntervalLength time.Duration
	// AdapterSource is where adapter files come from: a Store, or a
	// RemoteSource in remote mode. Nil: only the base model is served.
	AdapterSource AdapterSource
	// DisablePrefixCache turns off the prefix cache: by default the KV
	// blocks of a prompt's leading whole blocks are kept and shared with
	// later sequences that begin with the same tokens under the same
	// adapter (a shared system prompt, the n choices of one request, the
	// earlier turns of a conversation), which then skip their prefill.
	DisablePrefixCache bool
	// AdapterLoaders is how many adapters load into host memory at once
	// (default 2).
	AdapterLoaders int
	Logger         *slog.Logger
	Metrics        *metrics.Registry
	// Clock tells the time (default time.Now).
	Clock func() time.Time
}

// sizeFor fills the batch limits left zero with the defaults of device
// for a model of weightBytes (0: unknown).
func (o *Options) sizeFor(device string, weightBytes int64) {
	seqs, tokens := batchLimits(device, weightBytes, cpuCacheBytes())
	if o.MaxBatchSeqs <= 0 {
		o.MaxBatchSeqs = seqs
	}
	if o.MaxBatchTokens <= 0 {
		o.MaxBatchTokens = tokens
	}
	if o.MaxBatchTokens < o.MaxBatchSeqs {
		o.MaxBatchTokens = o.MaxBatchSeqs
	}
}

// SpeculativeAuto for Options.SpeculativeTokens drafts where that was
// measured not to cost throughput (see specTokensFor).
const SpeculativeAuto = -1

// specTokensFor resolves SpeculativeAuto: 4 on a CPU with a model bigger
// than its cache (steps bound by reading the weights: a step of a few
// tokens costs about one, and copy-heavy output decoded 1.9× faster on the
// 0.85B bench model, text that rarely repeats no slower); off for a model
// in the CPU's cache (steps bound by arithmetic: every drafted token
// lengthens the step, and text that rarely repeats lost 9% on the demo
// model) and on CUDA (not measured). See DEVELOPERS.md, "Speculative
// decoding by prompt lookup".
func specTokensFor(n int, device string, weightBytes, cacheBytes int64) int {
	if n != SpeculativeAuto {
		return n
	}
	if seqs, _ := batchLimits(device, weightBytes, cacheBytes); device == "cpu" && seqs == 8 {
		return 4
	}
	return 0
}

// batchLimits are the default batch limits. A batch pays off when a step
// is bound by reading the weights: every sequence in it shares one pass
// over them, so a bigger batch adds throughput and little time per step.
// That is a GPU's case, and a CPU's for a model bigger than its cache.
// A model whose weights stay in the CPU's cache (cacheBytes; half of it,
// to leave room for activations and the KV cache) makes steps bound by
// arithmetic instead: their time grows with every token in them, a bigger
// batch hardly adds throughput, and everyone's time per token grows with
// it — a light tenant's too, next to a heavy one's. There small batches
// and short steps keep latency, and fairness in it, at a few percent of
// throughput (see nozzle bench serve).
func batchLimits(device string, weightBytes, cacheBytes int64) (seqs, tokens int) {
	switch {
	case device != "cpu":
		return 64, 512
	case weightBytes > 0 && weightBytes <= cacheBytes/2:
		return 3, 16
	}
	return 8, 64
}

// cpuCacheBytes is the size of the largest CPU cache (Linux sysfs), or
// 32 MiB where it cannot be read.
var cpuCacheBytes = sync.OnceValue(func() int64 {
	var largest int64
	dirs, _ := filepath.Glob("/sys/devices/system/cpu/cpu0/cache/index*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "size"))
		if err != nil {
			continue
		}
		if n := parseCacheSize(strings.TrimSpace(string(b))); n > largest {
			largest = n
		}
	}
	if largest == 0 {
		largest = 32 << 20
	}
	return largest
})

// parseCacheSize reads sysfs cache sizes such as "2048K" or "32M".
func parseCacheSize(s string) int64 {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n * mult
}

func (o *Options) setDefaults() error {
	if o.Device == "" {
		o.Device = "auto"
	}
	switch o.Device {
	case "auto", "cpu", "cuda":
	default:
		return fmt.Errorf("device %q: want auto, cpu or cuda", o.Device)
	}
	switch o.Weights {
	case "", "checkpoint", "int8":
	default:
		return fmt.Errorf("weights %q: want checkpoint or int8", o.Weights)
	}
	if o.Slots <= 0 {
		o.Slots = 8
	}
	if o.MaxRank <= 0 {
		o.MaxRank = 64
	}
	if o.MaxRank > 256 {
		return fmt.Errorf("max rank %d: at most 256", o.MaxRank)
	}
	o.sizeFor("cuda", 0)
	if o.PrefillChunk <= 0 {
		o.PrefillChunk = 256
	}
	if o.SpeculativeTokens < SpeculativeAuto {
		return fmt.Errorf("speculative tokens %d: want %d (auto), 0 (off) or more", o.SpeculativeTokens, SpeculativeAuto)
	}
	if o.SpeculativeMaxSeqs <= 0 {
		o.SpeculativeMaxSeqs = 2
	}
	if o.HostCacheBytes <= 0 {
		o.HostCacheBytes = 1 << 30
	}
	if o.RuntimeID == "" {
		var b [6]byte
		rand.Read(b[:])
		o.RuntimeID = "rt-" + hex.EncodeToString(b[:])
	}
	if o.PrefillWeight <= 0 {
		o.PrefillWeight = 1
	}
	if o.DecodeWeight <= 0 {
		o.DecodeWeight = 2
	}
	if o.IntervalLength <= 0 {
		o.IntervalLength = time.Minute
	}
	if o.AdapterLoaders <= 0 {
		o.AdapterLoaders = 2
	}
	if o.Logger == nil {
		o.Logger = slog.Default().With("component", "runtime")
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewRegistry()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return nil
}

// parts are what a runtime is made of once the model, tokenizer and
// engine are up.
type parts struct {
	info    nozzle.ModelInfo
	be      backend
	codec   codec
	load    adapterLoader
	eos     []int
	closers []func() error // run after the engine is closed
	// Special tokens decoded as text all the same: those of the
	// model's tool calls in a request that offers tools, and its
	// thoughts' tags in a chat completion (tokenizer.ToolCallTokens,
	// ThoughtTokens).
	keepTools, keepThoughts []int
	// callsToken is the control token a forced call begins with
	// (Mistral's [TOOL_CALLS]), argsToken the one between its name and
	// its arguments (Mistral v11's [ARGS]); -1 for none
	callsToken, argsToken int
}

// Runtime is one warm base model serving requests for many adapters. It
// implements nozzle.Generator and nozzle.OpenCapacitySource.
type Runtime struct {
	opts  Options
	info  nozzle.ModelInfo
	codec codec
	log   *slog.Logger
	m     *runtimeMetrics
	clock func() time.Time
	start time.Time

	sched   *scheduler
	cache   *hostCache
	cap     *capacity
	be      backend
	closers []func() error
	// special tokens decoded as text all the same (see parts)
	keepTools, keepThoughts []int
	callsToken, argsToken   int // see parts

	ctx    context.Context // ended at Close: stops adapter loads
	cancel context.CancelFunc

	// the vocabulary prepared for token masks, and the masks of JSON
	// objects, made on the first request for them (jsonmode.go)
	vocabOnce sync.Once
	vocab     *grammar.Vocab
	jsonMask  *grammar.Masker[grammar.JSON, *grammar.JSON]
	schemas   compiledCache[grammar.Schema, *grammar.Schema]
	regexes   compiledCache[grammar.Regex, *grammar.Regex]
	toolCalls compiledCache[grammar.Framed, *grammar.Framed]
	// the calls of tools with strict functions, tool_choice "auto"
	strictCalls compiledCache[grammar.Triggered, *grammar.Triggered]

	mu       sync.Mutex
	closing  bool
	inflight sync.WaitGroup
	ready    atomic.Bool
	nextID   atomic.Uint64
	closed   chan struct{}
}

var (
	_ nozzle.Generator          = (*Runtime)(nil)
	_ nozzle.OpenCapacitySource = (*Runtime)(nil)
	_ nozzle.AdapterDropper     = (*Runtime)(nil)
)

// newRuntime starts a runtime on parts that are up.
func newRuntime(opts Options, p parts) (*Runtime, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{
		opts: opts, info: p.info, codec: p.codec, log: opts.Logger, clock: opts.Clock,
		be: p.be, closers: p.closers, ctx: ctx, cancel: cancel, closed: make(chan struct{}),
		keepTools: p.keepTools, keepThoughts: p.keepThoughts, callsToken: p.callsToken, argsToken: p.argsToken,
	}
	r.info.Device = p.be.Device()
	r.info.MaxLoRARank = opts.MaxRank
	r.info.RuntimeID = opts.RuntimeID
	r.info.Echo = true
	r.info.ChatTemplateKwargs = true
	r.info.LogitBias = true
	r.info.JSONObject = true
	r.info.JSONSchema = true
	r.info.Regex = true
	f, ok := toolCallForm(r.info.ToolFormat)
	r.info.ToolChoice = ok && (f.mid == "" || r.callsToken >= 0 && r.argsToken >= 0)
	r.start = r.clock()
	if r.info.CreatedAt.IsZero() {
		// /v1/models' "created" is the model folder's config.json's
		// modification time (model.Model.Modified), the same on every
		// restart; when that could not be read, when the model was loaded.
		r.info.CreatedAt = r.start.UTC()
	}
	r.cap = newCapacity(opts.RuntimeID, opts.RatePerHour, opts.IntervalLength, r.start)
	r.m = newRuntimeMetrics(opts.Metrics, r.utilisation)

	s := &scheduler{
		be: p.be, clock: r.clock, log: r.log, m: r.m, cap: r.cap,
		pool:           newBlockPool(p.be.KVNumBlocks(), p.be.KVBlockSize(), !opts.DisablePrefixCache),
		slots:          newSlotTable(opts.Slots),
		eos:            map[int32]bool{},
		ctxLen:         p.info.ContextLength,
		maxBatchTokens: opts.MaxBatchTokens,
		maxBatchSeqs:   opts.MaxBatchSeqs,
		prefillChunk:   opts.PrefillChunk,
		prefillWeight:  opts.PrefillWeight,
		decodeWeight:   opts.DecodeWeight,
		lookahead:      16,
		specTokens:     max(opts.SpeculativeTokens, 0),
		specMaxSeqs:    opts.SpeculativeMaxSeqs,
		maxDrains:      max(1, opts.Slots/4),
		wake:           make(chan struct{}, 1),
		quit:           make(chan struct{}),
		done:           make(chan struct{}),
		tenants:        map[string]*tenant{},
		drainFor:       map[string]int{},
		drops:          map[string]bool{},
	}
	for _, id := range p.eos {
		s.eos[int32(id)] = true
	}
	r.sched = s
	if opts.AdapterSource == nil {
		r.log.Warn("no adapter source (a split runtime without gateway_url): this runtime serves the base model only; " +
			"requests naming an adapter fail as unavailable, so that a gateway sends them to another runtime")
	}
	r.cache = newHostCache(ctx, opts.AdapterSource, p.load, opts.HostCacheBytes, opts.AdapterLoaders, s.notify, r.log, r.m)
	s.cache = r.cache
	go s.run()
	r.ready.Store(true)
	return r, nil
}

// Ready reports whether the model and engine are up and requests can run.
func (r *Runtime) Ready() bool { return r.ready.Load() }

// Info describes the base model.
func (r *Runtime) Info(ctx context.Context) (nozzle.ModelInfo, error) {
	if !r.Ready() {
		return nozzle.ModelInfo{}, nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is not ready.")
	}
	return r.info, nil
}

// AdapterTier says where an adapter's weights are right now.
func (r *Runtime) AdapterTier(ctx context.Context, sha256 string) nozzle.Tier {
	return r.cache.tier(sha256)
}

// DropAdapter drops a deleted adapter from the runtime's caches (engine
// slot, prefix cache, host memory, and the files a RemoteSource fetched)
// as soon as no sequence running or queued uses it; those finish normally.
// It returns at once. See nozzle.AdapterDropper.
func (r *Runtime) DropAdapter(ctx context.Context, sha256 string) error {
	if !isSHA256(sha256) {
		return nozzle.Errorf(nozzle.EINVALID, "%q is not a content address.", sha256).WithParam("sha256")
	}
	r.sched.drop(sha256)
	return nil
}

// CapacityIntervals returns the closed capacity intervals with Seq > after,
// oldest first.
func (r *Runtime) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	return r.cap.intervals(r.clock(), after), nil
}

// OpenCapacity returns the capacity interval open now, as it stands: from
// its start to now, with the engine steps finished so far as active time.
// ok is false once the runtime has stopped.
func (r *Runtime) OpenCapacity(ctx context.Context) (nozzle.CapacityInterval, bool, error) {
	iv, ok := r.cap.openInterval(r.clock())
	return iv, ok, nil
}

// Stats is a snapshot of the runtime's time accounting.
type Stats struct {
	UptimeSeconds float64
	// ActiveSeconds is the time spent in engine steps, IdleSeconds the
	// rest of the uptime.
	ActiveSeconds float64
	IdleSeconds   float64
	// HostLoads adapters were read into host memory, taking
	// HostLoadSeconds in all; SlotLoads were copied into engine slots,
	// taking SlotLoadSeconds of the engine goroutine's time.
	HostLoads       uint64
	HostLoadSeconds float64
	SlotLoads       uint64
	SlotLoadSeconds float64
}

// Stats returns the runtime's time accounting so far.
func (r *Runtime) Stats() Stats {
	up, active := r.cap.totals(r.clock())
	return Stats{
		UptimeSeconds:   up.Seconds(),
		ActiveSeconds:   active.Seconds(),
		IdleSeconds:     (up - active).Seconds(),
		HostLoads:       r.cache.loads.Load(),
		HostLoadSeconds: time.Duration(r.cache.loadNs.Load()).Seconds(),
		SlotLoads:       r.sched.slotLoads.Load(),
		SlotLoadSeconds: time.Duration(r.sched.slotLoadNs.Load()).Seconds(),
	}
}

func (r *Runtime) utilisation() float64 {
	up, active := r.cap.totals(r.clock())
	if up <= 0 {
		return 0
	}
	return float64(active) / float64(up)
}

// Close stops taking requests, lets those in flight finish (or cancels
// them when ctx ends first), then stops the engine and frees the model.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		<-r.closed
		return nil
	}
	r.closing = true
	r.mu.Unlock()
	// Not ready from now on: health checks move new requests elsewhere
	// while those in flight drain.
	r.ready.Store(false)

	drained := make(chan struct{})
	go func() { r.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		r.sched.cancelAll()
		<-drained
	}
	close(r.sched.quit)
	<-r.sched.done
	r.cancel()
	r.cache.close()
	err := r.be.Close()
	for _, c := range r.closers {
		if cerr := c(); err == nil {
			err = cerr
		}
	}
	r.cap.stop(r.clock())
	close(r.closed)
	return err
}

// enter registers a request in flight, or refuses it while closing.
func (r *Runtime) enter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing || !r.Ready() {
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime is not taking requests.")
	}
	r.inflight.Add(1)
	return nil
}

func randomSeed() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func finiteIn(v, lo, hi float64) bool { return !math.IsNaN(v) && v >= lo && v <= hi }
