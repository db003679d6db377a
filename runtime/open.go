package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/safetensors"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// Engine library file names.
const (
	cpuLibrary  = "libnozzle_cpu.so"
	cudaLibrary = "libnozzle_cuda.so"
)

// Open loads the model in opts.ModelDir (its weights memory-mapped, copied
// once into the engine), its tokenizer and generation config, starts the
// engine on the chosen device and returns a runtime ready for requests.
func Open(ctx context.Context, opts Options) (*Runtime, error) {
	sized := opts // batch limits as given, before the device is known
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if opts.ModelDir == "" {
		return nil, errors.New("open runtime: no model folder")
	}
	m, err := model.Open(opts.ModelDir)
	if err != nil {
		return nil, fmt.Errorf("open runtime: %w", err)
	}
	defer m.Close() // the engine holds its own copy of the weights
	tk, err := tokenizer.Load(opts.ModelDir)
	if err != nil {
		return nil, fmt.Errorf("open runtime: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	info := m.Info()
	if err := checkVocab(tk, info.VocabSize); err != nil {
		return nil, fmt.Errorf("open runtime: %w", err)
	}
	eng, device, err := startEngine(m, opts, sized)
	if err != nil {
		return nil, fmt.Errorf("open runtime: %w", err)
	}
	ei := eng.Info()
	sized.sizeFor(device, ei.WeightBytes)
	opts.SpeculativeTokens = specTokensFor(opts.SpeculativeTokens, device, ei.WeightBytes, cpuCacheBytes())
	opts.MaxBatchSeqs, opts.MaxBatchTokens = sized.MaxBatchSeqs, sized.MaxBatchTokens
	info.Device = device
	info.ToolFormat = tk.ToolFormat()
	info.ReasoningTags, info.Reasoning = tk.ThinkTags()
	weights := string(m.DType)
	if opts.Weights == "int8" {
		weights = "int8"
	}
	opts.Logger.Info("engine up", "backend", ei.Backend, "threads", opts.Threads, "model", info.ID, "layers", info.NumLayers,
		"hidden", info.HiddenSize, "kv_blocks", ei.KVNumBlocks, "kv_block_size", ei.KVBlockSize,
		"slots", ei.MaxSlots, "max_rank", ei.MaxRank, "weights", weights, "weight_bytes", ei.WeightBytes)

	maxRank := opts.MaxRank
	p := parts{
		info:  info,
		be:    &engineBackend{e: eng, info: ei, device: device},
		codec: &tokenizerCodec{tk: tk, vocab: info.VocabSize},
		load: func(dir string) (hostAdapter, error) {
			a, err := model.LoadAdapter(dir, info, maxRank)
			if err != nil {
				return nil, err
			}
			return modelAdapter{a}, nil
		},
		eos:          stopTokens(m.EOSTokenIDs(), tk.EOS()),
		keepTools:    tk.ToolCallTokens(),
		keepThoughts: tk.ThoughtTokens(),
		callsToken:   -1,
		argsToken:    -1,
	}
	if f, ok := toolCallForm(info.ToolFormat); ok {
		for _, c := range []struct {
			text string
			id   *int
		}{{f.lead, &p.callsToken}, {f.mid, &p.argsToken}} {
			if id, ok := tk.TokenID(c.text); c.text != "" && ok && tk.IsSpecial(id) {
				*c.id = id
			}
		}
	}
	return newRuntime(opts, p)
}

// ValidateAdapter returns the validator a Store needs for the model in
// modelDir: model.ValidateAdapter bound to the model's shapes and maxRank.
func ValidateAdapter(modelDir string, maxRank int) (func(dir string) (*nozzle.AdapterManifest, error), error) {
	m, err := model.Open(modelDir)
	if err != nil {
		return nil, err
	}
	info := m.Info()
	m.Close()
	if maxRank <= 0 {
		maxRank = 64
	}
	return func(dir string) (*nozzle.AdapterManifest, error) {
		return model.ValidateAdapter(dir, info, maxRank)
	}, nil
}

// libraryPaths returns where the CPU and CUDA libraries are for the
// EngineLib option: a folder holding them, or one of the files (the other
// is looked for beside it), or "" to search the usual places.
func libraryPaths(lib string) (cpu, cuda string) {
	if lib == "" {
		cpu, _ = engine.Find(cpuLibrary)
		cuda, _ = engine.Find(cudaLibrary)
		return cpu, cuda
	}
	if st, err := os.Stat(lib); err == nil && st.IsDir() {
		return filepath.Join(lib, cpuLibrary), filepath.Join(lib, cudaLibrary)
	}
	dir := filepath.Dir(lib)
	if strings.Contains(filepath.Base(lib), "cuda") {
		return filepath.Join(dir, cpuLibrary), lib
	}
	return lib, filepath.Join(dir, cudaLibrary)
}

// startEngine loads the engine library for opts.Device and creates the
// engine: "auto" takes the CUDA library when it loads and finds a GPU,
// else the CPU one.
func startEngine(m *model.Model, opts, sized Options) (*engine.Engine, string, error) {
	weightBytes, wdt := m.WeightBytes(), safetensors.DType("")
	if opts.Weights == "int8" {
		weightBytes, wdt = 0, engine.Int8
		for _, w := range m.Weights() {
			weightBytes += w.NumElements() // a byte each; the scales are noise
		}
	}
	engineOptions := func(device string) engine.Options {
		s := sized
		s.sizeFor(device, weightBytes)
		return engine.Options{
			WeightDType: wdt, MaxSlots: opts.Slots, MaxRank: opts.MaxRank, KVBlockSize: opts.KVBlockSize,
			KVBlocks: opts.KVBlocks, KVMemoryBytes: opts.KVMemoryBytes,
			MaxBatchTokens: s.MaxBatchTokens, MaxBatchSeqs: s.MaxBatchSeqs, Threads: opts.Threads,
		}
	}
	cpuPath, cudaPath := libraryPaths(opts.EngineLib)
	var cudaErr error
	if opts.Device == "cuda" || opts.Device == "auto" {
		if cudaPath == "" {
			cudaErr = errors.New("no CUDA engine library found")
		} else if lib, err := engine.Open(cudaPath); err != nil {
			cudaErr = err
		} else if e, err := lib.NewEngine(m, engineOptions("cuda")); err != nil {
			cudaErr = err
		} else {
			return e, "cuda", nil
		}
		if opts.Device == "cuda" {
			return nil, "", fmt.Errorf("cuda engine: %w", cudaErr)
		}
		opts.Logger.Info("using the CPU engine", "cuda", cudaErr.Error())
	}
	lib, err := engine.Open(cpuPath)
	if err != nil {
		return nil, "", err
	}
	e, err := lib.NewEngine(m, engineOptions("cpu"))
	if err != nil {
		return nil, "", err
	}
	return e, "cpu", nil
}

// engineBackend is the real engine behind the scheduler.
type engineBackend struct {
	e      *engine.Engine
	info   engine.Info
	device string
}

func (eb *engineBackend) Step(b *engine.Batch) error { return eb.e.Step(b) }

func (eb *engineBackend) LoadAdapter(slot int, a hostAdapter) error {
	ma, ok := a.(modelAdapter)
	if !ok {
		return fmt.Errorf("load adapter: %T is not a parsed adapter", a)
	}
	return eb.e.LoadAdapter(slot, ma.a)
}

func (eb *engineBackend) ClearAdapter(slot int) error { return eb.e.ClearAdapter(slot) }
func (eb *engineBackend) KVBlockSize() int            { return eb.info.KVBlockSize }
func (eb *engineBackend) KVNumBlocks() int            { return eb.info.KVNumBlocks }
func (eb *engineBackend) Device() string              { return eb.device }
func (eb *engineBackend) Close() error                { return eb.e.Close() }

// modelAdapter is a parsed adapter in host memory: its tensors are views
// into a read-only mapping of its safetensors file (page-cached).
type modelAdapter struct{ a *model.Adapter }

func (m modelAdapter) SizeBytes() int64 { return m.a.Manifest.SizeBytes }
func (m modelAdapter) Rank() int        { return m.a.Manifest.Rank }
func (m modelAdapter) Close() error     { return m.a.Close() }

// checkVocab checks that every token the tokenizer can make is in the
// model's vocabulary of vocab tokens, but for special added tokens past it
// (Gemma 3 1B's <image_soft_token>, 262144, beside its 262,144 embeddings,
// a token of the vision models), which the codec refuses in text.
func checkVocab(tk *tokenizer.Tokenizer, vocab int) error {
	for id := vocab; id < tk.VocabSize(); id++ {
		if tk.TokenText(id) != "" && !tk.IsSpecial(id) {
			return fmt.Errorf("the tokenizer has %d tokens, the model's vocabulary only %d", tk.VocabSize(), vocab)
		}
	}
	return nil
}

// stopTokens are the ids that end generation: generation_config.json's (or
// config.json's) end-of-sequence ids and the tokenizer's (its eos_token
// and the chat template's end-of-turn token), ascending. Gemma 3: <eos> (1)
// and <end_of_turn> (106).
func stopTokens(model, tok []int) []int {
	ids := slices.Concat(model, tok)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// tokenizerCodec is the Hugging Face tokenizer behind Generate.
type tokenizerCodec struct {
	tk *tokenizer.Tokenizer
	// vocab is the model's vocabulary size: ids past it (special tokens,
	// see checkVocab) are refused (0: not checked).
	vocab int
}

func (c *tokenizerCodec) Encode(text string, addSpecial bool) ([]int, error) {
	// Special-token text is parsed, as transformers' tokenizers do by
	// default and as a rendered chat template needs.
	ids := c.tk.Encode(text, tokenizer.EncodeOptions{AddSpecialTokens: addSpecial, ParseSpecial: true})
	if c.vocab > 0 && c.vocab < c.tk.VocabSize() {
		for _, id := range ids {
			if id >= c.vocab {
				return nil, nozzle.Errorf(nozzle.EINVALID, "The text holds %s, a token the model cannot read: its vocabulary has %d tokens.", c.tk.TokenText(id), c.vocab)
			}
		}
	}
	return ids, nil
}

func (c *tokenizerCodec) ChatPrompt(msgs []nozzle.ChatMessage, tools, kwargs json.RawMessage) (string, error) {
	var vars map[string]any
	if len(kwargs) > 0 {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(kwargs, &members); err != nil {
			return "", nozzle.Errorf(nozzle.EINVALID, "chat_template_kwargs must be a JSON object.").WithParam("chat_template_kwargs")
		}
		vars = make(map[string]any, len(members)+1)
		for k, v := range members {
			vars[k] = v // json.RawMessage: an object's keys keep their order
		}
	}
	if len(tools) > 0 {
		if vars == nil {
			vars = map[string]any{}
		}
		vars["tools"] = tools
	}
	s, err := c.tk.ApplyChatTemplateVars(msgs, true, vars)
	if errors.Is(err, tokenizer.ErrNoChatTemplate) {
		return "", nozzle.Errorf(nozzle.EINVALID, "This model has no chat template: use the completions endpoint.").WithParam("messages")
	}
	var te *tokenizer.TemplateError
	if errors.As(err, &te) {
		return "", nozzle.Errorf(nozzle.EINVALID, "The chat template refused the messages: %s", te.Message).WithParam("messages")
	}
	return s, err
}

func (c *tokenizerCodec) NewStreamDecoder(keep []int) streamDecoder {
	return c.tk.NewStreamDecoderKeeping(true, keep)
}
func (c *tokenizerCodec) TokenBytes(id int) []byte { return c.tk.TokenBytes(id) }
func (c *tokenizerCodec) IsSpecial(id int) bool    { return c.tk.IsSpecial(id) }

// TokenText is a token's text as OpenAI's logprobs show it: its bytes when
// they are UTF-8, else "bytes:" and the bytes escaped.
func (c *tokenizerCodec) TokenText(id int) string {
	b := c.tk.TokenBytes(id)
	if utf8.Valid(b) {
		return string(b)
	}
	var s strings.Builder
	s.WriteString("bytes:")
	for _, x := range b {
		fmt.Fprintf(&s, "\\x%02x", x)
	}
	return s.String()
}

func (c *tokenizerCodec) EOS() int {
	if ids := c.tk.EOS(); len(ids) > 0 {
		return ids[0]
	}
	return -1
}
