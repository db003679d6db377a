package runtime

import (
	"context"
	"encoding/json"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/engine"
)

// backend is the compute engine as the scheduler sees it. Its calls are
// made from the engine goroutine only. The real one is runtime/engine's
// Engine; tests use a deterministic stand-in.
type backend interface {
	// Step runs one batch.
	Step(b *engine.Batch) error
	// LoadAdapter copies a host-resident adapter into slot.
	LoadAdapter(slot int, a hostAdapter) error
	// ClearAdapter empties slot.
	ClearAdapter(slot int) error
	// KVBlockSize and KVNumBlocks describe the engine's KV pool.
	KVBlockSize() int
	KVNumBlocks() int
	// Device names the device, "cpu" or "cuda".
	Device() string
	Close() error
}

// hostAdapter is an adapter parsed into host memory, ready to be copied
// into an engine slot.
type hostAdapter interface {
	// SizeBytes is the host memory it holds.
	SizeBytes() int64
	// Rank is its largest rank.
	Rank() int
	Close() error
}

// adapterLoader parses the adapter files in dir into host memory.
type adapterLoader func(dir string) (hostAdapter, error)

// codec is the tokenizer as the runtime sees it.
type codec interface {
	// Encode turns text into token ids; addSpecial adds the BOS/EOS tokens
	// the tokenizer's post-processor adds, and special tokens written in
	// the text are parsed as such.
	Encode(text string, addSpecial bool) ([]int, error)
	// ChatPrompt renders messages with the chat template, with the
	// generation prompt added, tools (an OpenAI tools array) when not
	// nil, and the members of kwargs (a JSON object whose names are no
	// variables the renderer sets) as more variables when not nil.
	ChatPrompt(msgs []nozzle.ChatMessage, tools, kwargs json.RawMessage) (string, error)
	// NewStreamDecoder returns a decoder that turns ids into complete
	// UTF-8 text, skipping special tokens but those in keep.
	NewStreamDecoder(keep []int) streamDecoder
	TokenText(id int) string
	TokenBytes(id int) []byte
	// IsSpecial reports whether id is a special token (a control token,
	// not text).
	IsSpecial(id int) bool
	// EOS returns the tokenizer's end-of-sequence id, or -1.
	EOS() int
}

// streamDecoder turns a stream of ids into text.
type streamDecoder interface {
	Add(id int) string
	Flush() string
}

// AdapterSource says where an adapter's files are on local disk, fetching
// them first when they live elsewhere.
type AdapterSource interface {
	// AdapterDir returns a local folder holding adapter_config.json and
	// adapter_model.safetensors of the adapter with the given content
	// address. Returns ENOTFOUND when there is no such adapter.
	AdapterDir(ctx context.Context, sha256 string) (string, error)
}
