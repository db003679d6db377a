package nozzle

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// ModelInfo describes the base model a runtime serves.
type ModelInfo struct {
	ID            string `json:"id"`
	Architecture  string `json:"architecture"`
	ContextLength int    `json:"context_length"`
	VocabSize     int    `json:"vocab_size"`
	// Shapes an adapter must match.
	HiddenSize       int `json:"hidden_size"`
	IntermediateSize int `json:"intermediate_size"`
	NumLayers        int `json:"num_layers"`
	NumHeads         int `json:"num_heads"`
	NumKVHeads       int `json:"num_kv_heads"`
	HeadDim          int `json:"head_dim"`
	MaxLoRARank      int `json:"max_lora_rank"`
	// Device is "cpu" or "cuda".
	Device string `json:"device"`
	// Fingerprint identifies the model's weights (not its folder's name);
	// empty from a runtime that does not report one.
	Fingerprint string `json:"fingerprint,omitempty"`
	// RuntimeID names the runtime in usage and capacity records.
	RuntimeID string    `json:"runtime_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Echo says the runtime echoes and scores prompts
	// (GenerateRequest.Echo, PromptOnly); a runtime of an earlier version
	// ignores them.
	Echo bool `json:"echo,omitempty"`
	// ToolFormat is how the model writes tool calls, as its chat template
	// teaches it: ToolFormatHermes, ToolFormatLlama3JSON,
	// ToolFormatMistral, or "" (the template renders no tools).
	ToolFormat string `json:"tool_format,omitempty"`
	// Reasoning says the model may think before it answers, between
	// ReasoningTags: <think> and </think> (Qwen3, QwQ, DeepSeek-R1 and its
	// distills: its tokenizer has those tokens or its chat template
	// writes them) or [THINK] and [/THINK] (Magistral: its tokenizer has
	// them and its chat template writes them). The runtime then marks a
	// chat completion whose prompt opened the thoughts
	// (Chunk.ThoughtsOpen) and counts the thoughts' tokens
	// (GenerateResult.ReasoningTokens); the gateway parts them from the
	// answer. See reasoning.go.
	Reasoning bool `json:"reasoning,omitempty"`
	// ReasoningTags are the tags of a reasoning model's thoughts; none
	// (a runtime of an earlier version) stand for DefaultThinkTags.
	ReasoningTags ThinkTags `json:"reasoning_tags,omitzero"`
	// ChatTemplateKwargs says the runtime renders
	// GenerateRequest.ChatTemplateKwargs; a runtime of an earlier version
	// ignores them.
	ChatTemplateKwargs bool `json:"chat_template_kwargs,omitempty"`
	// LogitBias says the runtime applies GenerateRequest.LogitBias,
	// PresencePenalty and FrequencyPenalty; a runtime of an earlier
	// version ignores them.
	LogitBias bool `json:"logit_bias,omitempty"`
	// JSONObject says the runtime constrains a completion to a JSON object
	// (GenerateRequest.ResponseFormat); a runtime of an earlier version
	// ignores the request's format.
	JSONObject bool `json:"json_object,omitempty"`
	// JSONSchema says the runtime constrains a completion to a JSON Schema
	// (ResponseFormatJSONSchema); a runtime of an earlier version ignores
	// the request's format.
	JSONSchema bool `json:"json_schema,omitempty"`
	// Regex says the runtime constrains a completion to text a pattern
	// matches (ResponseFormatRegex); a runtime of an earlier version
	// refuses the format.
	Regex bool `json:"regex,omitempty"`
	// ToolChoice says the runtime forces tool calls
	// (GenerateRequest.ToolChoice) for this model: its tool format is
	// Hermes' or Llama 3's JSON. A runtime of an earlier version ignores
	// the request's choice.
	ToolChoice bool `json:"tool_choice,omitempty"`
	// Sampling holds the model's recommended sampling settings
	// (generation_config.json): they apply to the parameters a request
	// leaves out.
	Sampling SamplingDefaults `json:"sampling,omitzero"`
}

// SameModel reports whether two runtimes serve the same base model: the
// same weights (Fingerprint; where either runtime reports none, the same
// id) and the shapes requests and adapters depend on. Devices and the
// LoRA rank limit may differ.
func (m ModelInfo) SameModel(o ModelInfo) bool {
	shape := m.Architecture == o.Architecture && m.ContextLength == o.ContextLength &&
		m.VocabSize == o.VocabSize && m.HiddenSize == o.HiddenSize && m.IntermediateSize == o.IntermediateSize &&
		m.NumLayers == o.NumLayers && m.NumHeads == o.NumHeads && m.NumKVHeads == o.NumKVHeads && m.HeadDim == o.HeadDim
	if m.Fingerprint != "" && o.Fingerprint != "" {
		// the weights decide, not the folders' names: two fine-tunes of
		// one shape in /models/base differ, one model under two names
		// does not
		return shape && m.Fingerprint == o.Fingerprint
	}
	return shape && m.ID == o.ID
}

// SamplingDefaults are a model's recommended sampling settings; a nil or
// zero field is not recommended (the API's own default applies).
type SamplingDefaults struct {
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	TopK        int      `json:"top_k,omitempty"`
}

// Tool call formats (ModelInfo.ToolFormat).
const (
	// ToolFormatHermes: each call a JSON object {"name", "arguments"}
	// between <tool_call> and </tool_call> (Qwen2.5, Qwen3, Hermes).
	ToolFormatHermes = "hermes"
	// ToolFormatLlama3JSON: the whole answer a JSON object {"name",
	// "parameters"} (Llama 3.1 to 3.3; calls separated by ";").
	ToolFormatLlama3JSON = "llama3_json"
	// ToolFormatMistral: [TOOL_CALLS] (a control token, so usually not in
	// the decoded text) and a JSON array of {"name", "arguments"} objects
	// (Mistral-7B-Instruct-v0.3, Mixtral-8x22B-Instruct, Mistral-Nemo). Its
	// templates refuse tool call ids that are not 9 characters long.
	ToolFormatMistral = "mistral"
	// ToolFormatMistralV11: each call [TOOL_CALLS], the function's name,
	// [ARGS] and its arguments as a JSON object (Mistral's tokenizers of
	// version 11 and later, which have an [ARGS] control token: Mistral
	// Small 3.1 and 3.2, Magistral, Devstral). The runtime keeps these
	// control tokens in the text of a request that offers tools. Ids as
	// ToolFormatMistral's.
	ToolFormatMistralV11 = "mistral_v11"
)

// ChatMessage is one message of a chat.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	Name    string `json:"name,omitempty"`
	// ToolCalls are the calls an assistant message made; ToolCallID the
	// call a "tool" message answers.
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	// ReasoningContent is an assistant message's thoughts, as a reasoning
	// model's answer gave them (its reasoning_content), for templates that
	// render them (Qwen3's); "" is none.
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

// ToolCall is one function call of an assistant's message.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"` // "function"
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function and its arguments (a JSON object's text).
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ResponseFormatJSONObject constrains a completion to one JSON object
// (OpenAI's response_format {"type": "json_object"}): at every step the
// runtime lets the model draw only tokens that keep the text a prefix of a
// JSON object, and the completion ends, finish reason "stop", when the
// object closes. A reasoning model whose prompt opened its thoughts
// thinks freely first; the object begins after the thoughts close.
const ResponseFormatJSONObject = "json_object"

// ResponseFormatJSONSchema constrains a completion to a JSON value valid
// against GenerateRequest.ResponseSchema (OpenAI's response_format
// {"type": "json_schema"}, structured outputs), the same way: an object's
// properties in the schema's order, none but those it names. A schema
// the runtime cannot enforce in full is refused (EINVALID, param
// response_format), never enforced in part.
const ResponseFormatJSONSchema = "json_schema"

// ResponseFormatRegex constrains a completion to text that a regular
// expression (ECMA-262 syntax, as JSON Schema's "pattern") matches whole,
// from its first byte to its last: vLLM's guided_regex, and its
// guided_choice as the alternation of the choices. The pattern is
// GenerateRequest.ResponseSchema, as a JSON string. A pattern the runtime
// cannot compile is refused (EINVALID, param response_format).
const ResponseFormatRegex = "regex"

// ChoicePattern is the ResponseFormatRegex pattern of exactly one of
// options, each matched byte for byte.
func ChoicePattern(options []string) string {
	var b strings.Builder
	for i, o := range options {
		if i > 0 {
			b.WriteByte('|')
		}
		for _, r := range o {
			if r < utf8.RuneSelf && strings.ContainsRune(`^$\.*+?()[]{}|/-`, r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}

// ToolChoiceRequired is GenerateRequest.ToolChoice forcing a call of one
// of the request's tools, the model's pick.
const ToolChoiceRequired = "required"

// GenerateRequest asks a runtime for one completion.
type GenerateRequest struct {
	RequestID string
	TenantID  string
	// Background marks a request of the batch class (a Batch API line):
	// the runtime admits a waiting interactive request before any waiting
	// background one. False is the interactive class.
	Background bool
	// Adapter is the adapter to apply, nil for the base model.
	Adapter *Adapter

	// Exactly one of Messages (chat: rendered with the model's chat
	// template), Prompt (text) or PromptTokens (token ids) is set.
	Messages     []ChatMessage
	Prompt       string
	PromptTokens []int
	// Tools, with Messages, is the OpenAI tools array the chat template
	// renders (its tools variable); nil renders none.
	Tools json.RawMessage
	// ChatTemplateKwargs, with Messages, is a JSON object whose members
	// are more variables of the chat template (enable_thinking for
	// Qwen3's, say); nil gives none. They cannot replace the variables the
	// renderer sets (messages, tools, add_generation_prompt, the special
	// tokens, ...): the runtime refuses such a name.
	ChatTemplateKwargs json.RawMessage

	// MaxTokens caps completion tokens; 0 means up to the context length.
	MaxTokens int
	// Temperature 0 is greedy. TopP 0 or 1 and TopK 0 disable those
	// filters. Seed makes sampling reproducible when set.
	Temperature float64
	TopP        float64
	TopK        int
	Seed        *uint64
	// LogitBias adds its value to the logit of each token id (keys) before
	// a token is drawn: OpenAI's logit_bias, -100 to 100 (-100 in effect
	// bans a token, 100 all but forces it). PresencePenalty is subtracted
	// from the logit of every token the completion has produced so far
	// and FrequencyPenalty once for every time it has (OpenAI's
	// definitions, -2 to 2; the prompt's tokens do not count). The
	// logprobs reported are those of the adjusted logits.
	LogitBias        map[int]float64
	PresencePenalty  float64
	FrequencyPenalty float64
	// ResponseFormat constrains the completion: "" (none),
	// ResponseFormatJSONObject, ResponseFormatJSONSchema (with
	// ResponseSchema, the JSON Schema the answer follows) or
	// ResponseFormatRegex (with ResponseSchema, the pattern as a JSON
	// string).
	ResponseFormat string
	ResponseSchema json.RawMessage
	// ToolChoice, with Tools, forces a call: ToolChoiceRequired (one of
	// the tools) or the name of the one to call; "" lets the model choose.
	ToolChoice string
	// OneCall, with Tools, says the answer holds at most one call (OpenAI's
	// parallel_tool_calls false, the legacy functions): the runtime ends
	// the completion once its first call is complete (FirstCall: nothing
	// more is generated, and the text ends with the call), finish reason
	// FinishStop. A forced call of Mistral's v3 format is then an array
	// of one. Without it, or on a runtime of an earlier version, which
	// ignores it, every call the model writes is generated (the gateway
	// keeps the first).
	OneCall bool
	// Stop sequences end the completion; they are not included in it.
	Stop []string
	// Logprobs asks for each token's log-probability, TopLogprobs for that
	// many alternatives per token (at most 20).
	Logprobs    bool
	TopLogprobs int
	// Echo asks for the prompt before the completion: a first Chunk with
	// Prompt set, whose Text is the prompt decoded from its tokens and,
	// with Logprobs, whose Logprobs score every prompt token given the
	// ones before it (with TopLogprobs alternatives). The first prompt
	// token has nothing before it: its entry carries its text only.
	Echo bool
	// PromptOnly, with Echo, generates nothing (OpenAI's max_tokens 0 with
	// echo): the prompt chunk is the whole answer, finished by "length".
	PromptOnly bool

	// Stream says the caller passes chunks on as they come. Without it a
	// generator may deliver them all at the end, even as one chunk (a
	// remote runtime then sends its answer in one piece and one line:
	// fewer writes, wake-ups and lines to encode and decode).
	Stream bool

	// OnAccepted, when not nil, is called at most once, on the goroutine
	// that calls emit and never concurrently with it, once the runtime has
	// accepted the request: past every check that can refuse it (its
	// parameters, the context length, its adapter found and loaded into
	// host memory) and queued. Any error after it is the runtime's
	// (EINTERNAL, EUNAVAILABLE, ECANCELED), never a refusal of the
	// request. It may come after an echoed prompt without logprobs (sent
	// when the request is queued) and comes before any completion text.
	// A generator that does not tell (a remote runtime of an earlier
	// version) never calls it: a caller then learns the request was taken
	// from its first output.
	OnAccepted func() `json:"-"`
}

// TokenLogprob is the log-probability of one generated token.
type TokenLogprob struct {
	Token   string       `json:"token"`
	Logprob float64      `json:"logprob"`
	Bytes   []int        `json:"bytes"`
	Top     []TopLogprob `json:"top_logprobs"`
	// Offset is the byte offset in the completion's text where the
	// token's text begins. A token whose bytes only begin a character has
	// no text of its own and shares the offset of the token that ends it.
	Offset int `json:"offset"`
}

// TopLogprob is one alternative at a token position.
type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// Chunk is a piece of a completion as it streams: text that is complete
// UTF-8, and the logprobs of the tokens that produced it when asked for.
type Chunk struct {
	Text     string
	Logprobs []TokenLogprob
	// Prompt marks the echoed prompt (GenerateRequest.Echo); its Offsets
	// are in the prompt's text.
	Prompt bool
	// ThoughtsOpen, on the first chunk of a chat completion by a reasoning
	// model (ModelInfo.Reasoning), says that the chat template's
	// generation prompt opened the model's thoughts (it ends with the
	// opening tag, ThinkTags.OpenedBy): the completion begins inside them,
	// and its thoughts end at its first closing tag.
	ThoughtsOpen bool
	// Progress is the request's account as the chunk leaves the runtime
	// (zero where a generator does not tell): what a gateway checkpoints
	// while a stream runs.
	Progress Progress
}

// Progress is a request's account so far, as a runtime tells it with each
// chunk of its completion.
type Progress struct {
	PromptTokens       int
	CachedPromptTokens int
	// CompletionTokens are the tokens produced up to and including the
	// chunk's, with the few whose text is held back while it could still
	// begin a stop sequence.
	CompletionTokens int
	// DeviceSeconds is the request's share of the engine steps so far.
	DeviceSeconds float64
	RuntimeID     string
	RatePerHour   float64
}

// Finish reasons.
const (
	FinishStop   = "stop"   // end of sequence or a stop sequence
	FinishLength = "length" // max tokens or the context length reached
)

// GenerateResult is a runtime's account of a request.
type GenerateResult struct {
	FinishReason     string
	PromptTokens     int
	CompletionTokens int
	// CachedPromptTokens is how many of the prompt tokens the runtime's
	// prefix cache held: their keys and values were reused, not computed.
	CachedPromptTokens int
	// ReasoningTokens is how many of the completion tokens were the
	// thoughts of a reasoning model's chat completion (ModelInfo.Reasoning):
	// those up to and including the one that completes the first closing
	// tag after the thoughts open (all of them when they never close), 0
	// when the completion does not begin with thoughts (ThoughtCounter).
	ReasoningTokens int
	// DeviceSeconds is the request's share of the wall time of every engine
	// step it took part in.
	DeviceSeconds      float64
	QueueSeconds       float64
	TTFTSeconds        float64
	AdapterLoadSeconds float64
	RuntimeID          string
	RatePerHour        float64
}

// Generator runs completions. The gateway calls it; an in-process runtime
// and a remote runtime client both implement it.
type Generator interface {
	// Info describes the base model. Returns EUNAVAILABLE until the model
	// is loaded.
	Info(ctx context.Context) (ModelInfo, error)
	// Generate runs req, calling emit with each piece of text as it is
	// produced (never concurrently). If emit returns an error, generation
	// stops. It returns the request's account — also when generation
	// stopped early because ctx was canceled or emit failed, with the
	// tokens produced so far — and an error: ECONTEXTLENGTH (before any
	// work) when the prompt does not fit, EINVALID for bad parameters,
	// ENOTFOUND for an adapter whose files cannot be found, ECANCELED when
	// ctx ended or emit failed, EUNAVAILABLE when the runtime cannot take
	// work, EINTERNAL when the runtime failed.
	Generate(ctx context.Context, req *GenerateRequest, emit func(Chunk) error) (*GenerateResult, error)
	// AdapterTier says where an adapter's weights are right now.
	AdapterTier(ctx context.Context, sha256 string) Tier
}

// AdapterDropper is a Generator that can let go of a deleted adapter's
// weights at once rather than when its caches need the room. The gateway
// calls it on every runtime when a tenant deletes an adapter and no
// adapter left (of any tenant) has the same content.
type AdapterDropper interface {
	// DropAdapter drops the adapter with the given content address from
	// the runtime's caches (host memory, device slots, the prefix cache,
	// files fetched to local disk) as soon as no sequence running or
	// queued uses it; those finish normally. It returns once the runtime
	// has taken note, not once the weights are gone. Returns EUNAVAILABLE
	// when the runtime cannot be reached.
	DropAdapter(ctx context.Context, sha256 string) error
}
