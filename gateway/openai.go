package gateway

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nozzle-ai/nozzle"
)

// genKind tells the two completion endpoints apart.
type genKind uint8

const (
	kindChat genKind = iota // /v1/chat/completions, and /v1/responses (its jobs are chats with resp set)
	kindText                // /v1/completions
)

// job is a parsed completion request: what to generate, before the model
// is resolved and the request admitted.
type job struct {
	kind         genKind
	model        string // as named in the request
	stream       bool
	includeUsage bool
	logprobs     bool // answer with logprobs
	n            int

	messages []nozzle.ChatMessage // chat
	prompts  []promptSpec         // completions
	echo     bool

	maxTokens      int    // 0: not given
	maxTokensParam string // the field that gave it
	temperature    float64
	topP           float64
	topK           int // 0: no top-k filter
	seed           *uint64
	// logit_bias (token id → value) and the penalties; nil and 0: none
	logitBias           map[int]float64
	presence, frequency float64
	toolChoice          string          // a call to force: "", nozzle.ToolChoiceRequired or a function's name
	format              string          // response_format: "" or nozzle.ResponseFormat*
	schema              json.RawMessage // with nozzle.ResponseFormatJSONSchema; a regex's pattern as a JSON string
	formatParam         string          // the parameter that gave the format, when not response_format (guided_regex, ...)

	// Sampling parameters the request left out take the model's
	// recommended values (see applySampling), else the API's defaults.
	temperatureSet, topPSet, topKSet bool
	stop                             []string
	topLogprobs                      int
	user                             string

	// Filled when the request is admitted.
	shownModel  string          // model named in the answer
	fingerprint string          // system_fingerprint ("" null)
	promptOnly  bool            // legacy echo with max_tokens 0: nothing generated
	tools       json.RawMessage // offered to the model (chat, tool_choice "auto")
	toolFormat  string          // how the model writes calls, when tools are offered
	// functions: the tools are the legacy functions (functions.go), and
	// a choice's call is answered as function_call
	functions bool
	// oneCall: a choice answers at most one call, its first (legacy
	// functions, parallel_tool_calls false): the runtime ends the
	// completion with it (nozzle.GenerateRequest.OneCall); calls a
	// runtime of an earlier version still wrote after it are dropped
	// (splitCalls)
	oneCall bool
	// reasoning: a reasoning model's chat (nozzle.ModelInfo.Reasoning),
	// whose thoughts, between thinkTags, are given apart from the answer
	// (nozzle.ThoughtSplit), as vLLM's reasoning parsers and DeepSeek's
	// API do: in message.reasoning_content (streamed:
	// delta.reasoning_content), the answer alone in content, and tool
	// calls read from the answer only.
	reasoning bool
	thinkTags nozzle.ThinkTags
	// templateKwargs are the chat template's variables of the request
	// (chat_template_kwargs, compact JSON), nil when none.
	templateKwargs json.RawMessage
	adapter        *nozzle.Adapter // nil for the base model
	id             string          // "chatcmpl-…", "cmpl-…" or "resp_…"
	// resp: a Responses request (/v1/responses), a chat job answered as a
	// Response; nil for the completion endpoints.
	resp    *respRequest
	created int64
}

// promptSpec is one prompt of a legacy completion request.
type promptSpec struct {
	text   string
	tokens []int
	isText bool
}

// choices returns the number of choices the request asks for.
func (j *job) choices() int {
	if j.kind == kindChat {
		return j.n
	}
	return j.n * len(j.prompts)
}

// templateAllowance bounds the tokens a chat template adds around the
// messages once (a default system prompt, a date line, the generation
// prompt), and messageAllowance those it adds to each message (role
// headers, separators, special tokens).
const (
	templateAllowance = 128
	messageAllowance  = 16
)

// promptBound is at least the prompt tokens the request can be charged
// for (each prompt once, as usage counts it): a token of a BPE vocabulary
// covers at least one byte of the text, so a text's bytes bound its
// tokens; the template's tokens are allowed for; token ids are exact.
// The budget reserves on this bound, so that requests admitted together
// cannot spend more than the budget holds. The tools and earlier calls'
// arguments are JSON the template renders again (tojson, indented by some
// templates): up to three tokens a byte of their compact JSON (the
// character, a newline, the indentation after it).
func (j *job) promptBound() int {
	if j.kind == kindChat {
		// Template variables may be printed too (tojson, indented).
		n := templateAllowance + 3*len(j.tools) + 3*len(j.templateKwargs)
		for _, m := range j.messages {
			n += len(m.Content) + len(m.ReasoningContent) + len(m.Name) + len(m.ToolCallID) + messageAllowance
			for _, c := range m.ToolCalls {
				n += len(c.ID) + len(c.Function.Name) + 3*len(c.Function.Arguments) + messageAllowance
			}
		}
		return n
	}
	n := 0
	for _, p := range j.prompts {
		if p.isText {
			n += len(p.text) + 2 // BOS, and EOS where a tokenizer adds it
		} else {
			n += len(p.tokens)
		}
	}
	return n
}

// promptEstimate guesses the prompt tokens of the whole request (all
// choices) before tokenizing: about 4 bytes a token, exact for token ids.
func (j *job) promptEstimate() int {
	per := 0
	if j.kind == kindChat {
		per += len(j.tools)/4 + len(j.templateKwargs)/4
		for _, m := range j.messages {
			per += (len(m.Content)+len(m.ReasoningContent))/4 + 4
			for _, c := range m.ToolCalls {
				per += len(c.Function.Arguments)/4 + 8
			}
		}
		return (per + 3) * j.n
	}
	for _, p := range j.prompts {
		if p.isText {
			per += len(p.text)/4 + 1
		} else {
			per += len(p.tokens)
		}
	}
	return per * j.n
}

// choiceSeed is the seed of the i-th of n choices of one prompt: the
// request's seed for the first, and for the others seeds derived from it,
// so that the n choices are n different samples and the whole request is
// still repeatable. nil (no seed) stays nil.
func choiceSeed(seed *uint64, i int) *uint64 {
	if seed == nil || i == 0 {
		return seed
	}
	// splitmix64's increment and finaliser: nearby seeds and choices map
	// far apart.
	z := *seed + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return &z
}

// requests returns one GenerateRequest per choice: prompts × n, in
// OpenAI's index order (prompt-major).
func (j *job) requests(requestID, tenantID string, maxTokens int) []*nozzle.GenerateRequest {
	out := make([]*nozzle.GenerateRequest, 0, j.choices())
	mk := func(i int) *nozzle.GenerateRequest {
		return &nozzle.GenerateRequest{
			RequestID: requestID, TenantID: tenantID, Adapter: j.adapter,
			MaxTokens: maxTokens, Temperature: j.temperature, TopP: j.topP, TopK: j.topK, Seed: choiceSeed(j.seed, i),
			LogitBias: j.logitBias, PresencePenalty: j.presence, FrequencyPenalty: j.frequency, ResponseFormat: j.format, ResponseSchema: j.schema,
			Stop: j.stop, Logprobs: j.logprobs, TopLogprobs: j.topLogprobs, Stream: j.stream,
			PromptOnly: j.promptOnly,
		}
	}
	if j.kind == kindChat {
		for i := 0; i < j.n; i++ {
			r := mk(i)
			r.Messages = j.messages
			r.Tools, r.ToolChoice, r.OneCall = j.tools, j.toolChoice, j.oneCall && j.tools != nil
			r.ChatTemplateKwargs = j.templateKwargs
			out = append(out, r)
		}
		return out
	}
	for _, p := range j.prompts {
		for i := 0; i < j.n; i++ {
			r := mk(i)
			if p.isText {
				r.Prompt = p.text
			} else {
				r.PromptTokens = p.tokens
			}
			r.Echo = j.runtimeEcho(len(out))
			out = append(out, r)
		}
	}
	return out
}

// echoText is the text a legacy completion choice starts with when echo
// is on: a text prompt as given; a prompt of token ids as the runtime
// decoded it (decoded, "" until its echo came).
func (j *job) echoText(choice int, decoded *nozzle.Chunk) string {
	if j.kind != kindText || !j.echo {
		return ""
	}
	if p := j.prompts[choice/j.n]; p.isText {
		return p.text
	}
	if decoded == nil {
		return ""
	}
	return decoded.Text
}

// runtimeEcho says whether a legacy completion choice's echo comes from
// the runtime: to score the prompt (logprobs), to decode its token ids, or
// because nothing is generated (max_tokens 0), which the runtime answers
// only with an echo.
func (j *job) runtimeEcho(choice int) bool {
	return j.kind == kindText && j.echo && (j.logprobs || j.promptOnly || !j.prompts[choice/j.n].isText)
}

// Wire shapes of the requests. Polymorphic fields stay raw and are decoded
// by hand so that a wrong type names its field.
type streamOptions struct {
	IncludeUsage *bool `json:"include_usage"`
}

// UnmarshalJSON decodes stream_options leniently (its other fields, such as
// include_obfuscation, change nothing here) inside a strict request body.
func (o *streamOptions) UnmarshalJSON(b []byte) error {
	type plain streamOptions
	return json.Unmarshal(b, (*plain)(o))
}

// commonBody holds the parameters both endpoints take alike (applyCommon).
type commonBody struct {
	Model         *string         `json:"model"`
	MaxTokens     *int            `json:"max_tokens"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	TopK          *int            `json:"top_k"`
	Seed          *int64          `json:"seed"`
	N             *int            `json:"n"`
	Stop          json.RawMessage `json:"stop"`
	Stream        *bool           `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	User          *string         `json:"user"`
}

type chatBody struct {
	commonBody
	Messages            chatMessages    `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	Functions           json.RawMessage `json:"functions"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ResponseFormat      json.RawMessage `json:"response_format"`
	FunctionCall        json.RawMessage `json:"function_call"` // the legacy tool_choice
	Modalities          []string        `json:"modalities"`
	Audio               json.RawMessage `json:"audio"`
	WebSearchOptions    json.RawMessage `json:"web_search_options"`
	ReasoningEffort     json.RawMessage `json:"reasoning_effort"`
	Verbosity           json.RawMessage `json:"verbosity"`
	// hints and bookkeeping that do not change the output: accepted, unused
	Metadata          json.RawMessage `json:"metadata"`
	Store             json.RawMessage `json:"store"`
	ServiceTier       json.RawMessage `json:"service_tier"`
	Prediction        json.RawMessage `json:"prediction"`
	ParallelToolCalls json.RawMessage `json:"parallel_tool_calls"`
	PromptCacheKey    json.RawMessage `json:"prompt_cache_key"`
	SafetyIdentifier  json.RawMessage `json:"safety_identifier"`
	// an extension (vLLM's): variables of the chat template
	ChatTemplateKwargs json.RawMessage `json:"chat_template_kwargs"`
	adjustBody
	guidedBody
}

// maxChatMessages caps a chat request's messages. Every message costs the
// chat template a few tokens at least (a role header, an end marker), so
// real conversations that fit a model's context stay well below it; a
// body of tens of thousands of empty messages, which fits in the body
// limit, is refused before any is decoded (decoded, 62,000 of them took
// 57 MB, refused 4 MB: the decoder's copy of the body).
const maxChatMessages = 4096

// maxToolCalls caps the tools of a request and the tool calls of one of
// its messages, as OpenAI's API does.
const maxToolCalls = 128

// arrayTooLong is OpenAI's refusal of an array longer than its maximum.
func arrayTooLong(param string, limit, n int) error {
	return invalidAs("array_above_max_length", param, "Invalid '%s': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", param, limit, n)
}

// chatMessages are a request's messages, counted before they are decoded.
type chatMessages []chatMessageIn

func (m *chatMessages) UnmarshalJSON(b []byte) error {
	if n, _, _, ok := scanArray(b); ok && n > maxChatMessages {
		return arrayTooLong("messages", maxChatMessages, n)
	}
	return json.Unmarshal(b, (*[]chatMessageIn)(m))
}

type chatMessageIn struct {
	Role         *string         `json:"role"`
	Content      json.RawMessage `json:"content"`
	Name         *string         `json:"name"`
	ToolCalls    json.RawMessage `json:"tool_calls"`
	ToolCallID   *string         `json:"tool_call_id"`
	FunctionCall json.RawMessage `json:"function_call"`
	// an assistant's earlier thoughts, as a reasoning model's answer
	// gave them
	ReasoningContent json.RawMessage `json:"reasoning_content"`
}

// UnmarshalJSON decodes a message leniently inside a strict request body:
// fields a message may carry that change nothing here (refusal,
// annotations, an id) are let through, as OpenAI lets them.
func (m *chatMessageIn) UnmarshalJSON(b []byte) error {
	type plain chatMessageIn
	return json.Unmarshal(b, (*plain)(m))
}

type contentPart struct {
	Type    *string `json:"type"`
	Text    *string `json:"text"`
	Refusal *string `json:"refusal"`
}

type completionBody struct {
	commonBody
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     *bool           `json:"echo"`
	Suffix   *string         `json:"suffix"`
	BestOf   *int            `json:"best_of"`
	adjustBody
	guidedBody
}

// guidedBody holds vLLM's structured-output extensions both endpoints
// take: guided_regex, guided_choice and guided_json, and their newer
// form, structured_outputs {"regex" | "choice" | "json"}.
type guidedBody struct {
	GuidedRegex       json.RawMessage `json:"guided_regex"`
	GuidedChoice      json.RawMessage `json:"guided_choice"`
	GuidedJSON        json.RawMessage `json:"guided_json"`
	StructuredOutputs json.RawMessage `json:"structured_outputs"`
}

// Limits of guided_choice.
const (
	maxGuidedChoices     = 256
	maxGuidedChoiceBytes = 4096 // all the choices' bytes
)

// apply reads the guided output (at most one) into j: a regex or choices
// as nozzle.ResponseFormatRegex, a schema as
// nozzle.ResponseFormatJSONSchema; the runtime compiles them.
func (g *guidedBody) apply(j *job) error {
	type guided struct {
		param string
		raw   json.RawMessage
		kind  string // regex, choice, json
	}
	var set []guided
	for _, c := range []guided{{"guided_regex", g.GuidedRegex, "regex"}, {"guided_choice", g.GuidedChoice, "choice"}, {"guided_json", g.GuidedJSON, "json"}} {
		if !isNull(c.raw) {
			set = append(set, c)
		}
	}
	if !isNull(g.StructuredOutputs) {
		var so map[string]json.RawMessage
		if json.Unmarshal(g.StructuredOutputs, &so) != nil {
			return invalidAs("invalid_type", "structured_outputs", "Invalid type for 'structured_outputs': expected an object.")
		}
		for _, k := range slices.Sorted(maps.Keys(so)) {
			switch k {
			case "regex", "choice", "json":
				if !isNull(so[k]) {
					set = append(set, guided{"structured_outputs." + k, so[k], k})
				}
			default:
				return invalidAs("unsupported_value", "structured_outputs."+k, "'structured_outputs.%s' is not supported: give 'regex', 'choice' or 'json'.", k)
			}
		}
	}
	switch {
	case len(set) == 0:
		return nil
	case len(set) > 1:
		return invalidAs("invalid_parameter_combination", set[1].param, "Give one guided output at a time: '%s' and '%s' were both given.", set[0].param, set[1].param)
	}
	c := set[0]
	switch c.kind {
	case "regex":
		var p string
		if json.Unmarshal(c.raw, &p) != nil {
			return invalidAs("invalid_type", c.param, "Invalid type for '%s': expected a string.", c.param)
		}
		j.format, j.schema = nozzle.ResponseFormatRegex, c.raw
	case "choice":
		var opts []string
		if json.Unmarshal(c.raw, &opts) != nil {
			return invalidAs("invalid_type", c.param, "Invalid type for '%s': expected an array of strings.", c.param)
		}
		total := 0
		for _, o := range opts {
			total += len(o)
		}
		switch {
		case len(opts) == 0:
			return invalidAs("empty_array", c.param, "Invalid '%s': empty array. Expected an array with minimum length 1.", c.param)
		case len(opts) > maxGuidedChoices:
			return invalidAs("array_above_max_length", c.param, "Invalid '%s': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", c.param, maxGuidedChoices, len(opts))
		case total > maxGuidedChoiceBytes:
			return invalidAs("invalid_value", c.param, "Invalid '%s': the choices are %d bytes together, more than %d.", c.param, total, maxGuidedChoiceBytes)
		}
		pattern, _ := json.Marshal(nozzle.ChoicePattern(opts))
		j.format, j.schema = nozzle.ResponseFormatRegex, pattern
	case "json":
		if t := bytes.TrimSpace(c.raw); len(t) == 0 || t[0] != '{' {
			return invalidAs("invalid_type", c.param, "Invalid type for '%s': expected an object (a JSON Schema).", c.param)
		}
		j.format, j.schema = nozzle.ResponseFormatJSONSchema, c.raw
	}
	j.formatParam = c.param
	return nil
}

// fromRuntime names, in the runtime's refusal of a guided output's
// pattern or schema, the request's parameter that gave it; in its
// refusal of the tools or tool_choice of a request with legacy
// functions, the legacy parameter.
func (j *job) fromRuntime(err error) error {
	e := nozzle.AsError(err)
	if e == nil || e.Code != nozzle.EINVALID {
		return err
	}
	if j.formatParam != "" && strings.HasPrefix(e.Param, "response_format") {
		c := *e
		c.Param = j.formatParam
		c.Message = strings.ReplaceAll(c.Message, "'response_format.json_schema.schema'", "'"+j.formatParam+"'")
		return &c
	}
	if j.functions && (e.Param == "tools" || e.Param == "tool_choice") {
		c := *e
		legacy := map[string]string{"tools": "functions", "tool_choice": "function_call"}[e.Param]
		c.Param = legacy
		c.Message = strings.ReplaceAll(c.Message, "'"+e.Param+"'", "'"+legacy+"'")
		return &c
	}
	return err
}

// adjustBody holds the parameters of both endpoints that adjust the
// logits a token is drawn from (nozzle.GenerateRequest.LogitBias).
type adjustBody struct {
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	LogitBias        json.RawMessage `json:"logit_bias"`
}

// maxLogitBias caps the tokens one request's logit_bias names, as OpenAI's
// API does: every step of the request hands them to the engine.
const maxLogitBias = 300

// apply checks the adjustments and sets them on j.
func (u *adjustBody) apply(j *job) error {
	for _, p := range []struct {
		name string
		v    *float64
		dst  *float64
	}{{"presence_penalty", u.PresencePenalty, &j.presence}, {"frequency_penalty", u.FrequencyPenalty, &j.frequency}} {
		switch {
		case p.v == nil:
		case *p.v < -2:
			return outOfRange(p.name, *p.v, false, -2)
		case *p.v > 2:
			return outOfRange(p.name, *p.v, false, 2)
		default:
			*p.dst = *p.v
		}
	}
	if isNull(u.LogitBias) {
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(u.LogitBias, &raw); err != nil {
		return invalidAs("invalid_type", "logit_bias", "Invalid type for 'logit_bias': expected an object.")
	}
	if len(raw) > maxLogitBias {
		return invalidAs("invalid_value", "logit_bias", "Invalid 'logit_bias': too many tokens. Expected at most %d, but got %d instead.", maxLogitBias, len(raw))
	}
	for k, v := range raw {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 {
			return invalidAs("invalid_value", "logit_bias", "Invalid key in 'logit_bias': %q is not a token id (a non-negative integer).", k)
		}
		var f float64
		if err := json.Unmarshal(v, &f); err != nil || isNull(v) {
			got := "null"
			if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
				got = article(te.Value)
			}
			return invalidAs("invalid_type", "logit_bias", "Invalid type for 'logit_bias.%s': expected a number, but got %s instead.", k, got)
		}
		if f < -100 || f > 100 {
			return invalidAs("invalid_value", "logit_bias", "Invalid value for 'logit_bias.%s': %s is out of range. Expected a value between -100 and 100.", k, strconv.FormatFloat(f, 'g', -1, 64))
		}
		if _, dup := j.logitBias[id]; dup { // "7" and "07"
			return invalidAs("invalid_value", "logit_bias", "Invalid 'logit_bias': token %d is named twice.", id)
		}
		if j.logitBias == nil {
			j.logitBias = make(map[int]float64, len(raw))
		}
		j.logitBias[id] = f
	}
	return nil
}

// adjusts reports whether j asks for logit adjustments.
func (j *job) adjusts() bool { return len(j.logitBias) > 0 || j.presence != 0 || j.frequency != 0 }

// adjustParam names the first parameter of j that adjusts the logits.
func adjustParam(j *job) string {
	switch {
	case len(j.logitBias) > 0:
		return "logit_bias"
	case j.presence != 0:
		return "presence_penalty"
	}
	return "frequency_penalty"
}

// givenArray reports whether raw, an array parameter, is given: neither
// left out, null nor empty.
func givenArray(raw json.RawMessage) bool {
	n, _, _, ok := scanArray(raw)
	return !isNull(raw) && !(ok && n == 0)
}

// responseFormat is a chat request's response_format.
type responseFormat struct {
	Type       *string `json:"type"`
	JSONSchema *struct {
		Name        *string         `json:"name"`
		Description *string         `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"` // Nozzle's schemas are always enforced in full
	} `json:"json_schema"`
}

// jsonSchemaName is what OpenAI takes as a json_schema's name.
var jsonSchemaName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// chatFormat reads response_format: {"type": "text"} (or none) asks for
// nothing, {"type": "json_object"} for a JSON object
// (nozzle.ResponseFormatJSONObject), {"type": "json_schema",
// "json_schema": {"name", "schema", "strict", "description"}} for a value
// of that schema (nozzle.ResponseFormatJSONSchema; the runtime checks the
// schema itself). It returns the format and the schema.
func chatFormat(raw json.RawMessage) (string, json.RawMessage, error) {
	if isNull(raw) {
		return "", nil, nil
	}
	var f responseFormat
	if json.Unmarshal(raw, &f) != nil || f.Type == nil {
		return "", nil, invalidAs("invalid_value", "response_format", "Invalid 'response_format': expected an object with a 'type'.")
	}
	switch *f.Type {
	case "text":
		return "", nil, nil
	case "json_object":
		return nozzle.ResponseFormatJSONObject, nil, nil
	case "json_schema":
		js := f.JSONSchema
		switch {
		case js == nil:
			return "", nil, invalidAs("missing_required_parameter", "response_format.json_schema", "Missing required parameter: 'response_format.json_schema'.")
		case js.Name == nil:
			return "", nil, invalidAs("missing_required_parameter", "response_format.json_schema.name", "Missing required parameter: 'response_format.json_schema.name'.")
		case !jsonSchemaName.MatchString(*js.Name):
			return "", nil, invalidAs("invalid_value", "response_format.json_schema.name", "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters.")
		case isNull(js.Schema):
			// OpenAI takes a schema-less json_schema as any JSON object
			return nozzle.ResponseFormatJSONObject, nil, nil
		}
		if bytes.TrimSpace(js.Schema)[0] != '{' {
			return "", nil, invalidAs("invalid_type", "response_format.json_schema.schema", "Invalid type for 'response_format.json_schema.schema': expected an object.")
		}
		return nozzle.ResponseFormatJSONSchema, js.Schema, nil
	}
	return "", nil, invalidAs("invalid_value", "response_format.type", "Invalid value: '%s'. Supported values are: 'text', 'json_object' and 'json_schema'.", *f.Type)
}

// checkChatOutputs refuses the chat parameters that ask for output Nozzle
// cannot give: audio or other non-text modalities, web search, and
// reasoning effort and verbosity (no model served takes them; a reasoning
// model's thinking is switched, where its template offers it, with
// chat_template_kwargs).
func checkChatOutputs(b *chatBody) error {
	for _, m := range b.Modalities {
		if m != "text" {
			return invalidAs("unsupported_value", "modalities", "Invalid 'modalities': %q output is not supported by this server; only \"text\" is.", m)
		}
	}
	if !isNull(b.Audio) {
		return invalidAs("unsupported_parameter", "audio", "Audio output is not supported by this server.")
	}
	if !isNull(b.WebSearchOptions) {
		return invalidAs("unsupported_parameter", "web_search_options", "Web search is not supported by this server.")
	}
	if !isNull(b.ReasoningEffort) {
		return invalidAs("unsupported_parameter", "reasoning_effort", "'reasoning_effort' is not supported with this model; where a reasoning model's chat template offers it, 'chat_template_kwargs' switches its thinking (Qwen3's: {\"enable_thinking\": false}).")
	}
	if !isNull(b.Verbosity) {
		return invalidAs("unsupported_parameter", "verbosity", "'verbosity' is not supported with this model.")
	}
	return nil
}

func invalid(param, format string, args ...any) error {
	return nozzle.Errorf(nozzle.EINVALID, format, args...).WithParam(param)
}

// invalidAs is invalid with the error's code, as OpenAI's API gives one
// for a bad parameter (clients branch on it: one that sees
// unsupported_parameter may drop the parameter and try again):
// invalid_type, invalid_value, empty_array, missing_required_parameter,
// unsupported_parameter (the parameter itself) or unsupported_value (the
// parameter is known, the value asked for is not served).
func invalidAs(code, param, format string, args ...any) error {
	return nozzle.Errorf(nozzle.EINVALID, format, args...).WithParam(param).WithReason(code)
}

// outOfRange is OpenAI's refusal of a number past a bound of its
// parameter (a minimum where got is below it, else a maximum): "Invalid
// 'temperature': decimal above maximum value. Expected a value <= 2, but
// got 3 instead.", code decimal_above_max_value (integer_… for an integer
// parameter, …_below_min_value for a minimum).
func outOfRange(param string, got float64, integer bool, bound float64) *nozzle.Error {
	kind := "decimal"
	if integer {
		kind = "integer"
	}
	side, cmp, code := "below minimum", ">=", "_below_min_value"
	if got > bound {
		side, cmp, code = "above maximum", "<=", "_above_max_value"
	}
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	return nozzle.Errorf(nozzle.EINVALID, "Invalid '%s': %s %s value. Expected a value %s %s, but got %s instead.", param, kind, side, cmp, num(bound), num(got)).
		WithParam(param).WithReason(kind + code)
}

// decodeJSON decodes a request body into v, turning decoder errors into
// OpenAI-style 400s that name the offending field.
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nozzle.Errorf(nozzle.EINVALID, "We could not parse the JSON body of your request: the body is empty. The API expects a JSON object.")
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return nozzle.Errorf(nozzle.EINVALID, "The request body must be a JSON object.")
		}
		got, literal, _ := strings.Cut(te.Value, " ")
		field := indexedField(body, v, unembedded(v, te.Field))
		want := describeType(te.Type)
		if want == "an integer" && got == "number" {
			// An integer too large for 64 bits (a seed drawn as an
			// unsigned 64-bit number), or a number with a fraction or an
			// exponent (2.0, as Python writes a float): said as OpenAI
			// says them.
			if strings.ContainsAny(literal, ".eE") {
				return invalidAs("invalid_type", field, "Invalid type for '%s': expected an integer, but got a decimal number instead.", field)
			}
			lo, hi := intBounds(te.Type)
			if strings.HasPrefix(literal, "-") {
				return invalidAs("integer_below_min_value", field, "Invalid '%s': integer below minimum value. Expected a value >= %s, but got %s instead.", field, lo, literal)
			}
			return invalidAs("integer_above_max_value", field, "Invalid '%s': integer above maximum value. Expected a value <= %s, but got %s instead.", field, hi, literal)
		}
		return invalidAs("invalid_type", field, "Invalid type for '%s': expected %s, but got %s instead.", field, want, article(got))
	}
	return nozzle.Errorf(nozzle.EINVALID, "We could not parse the JSON body of your request. The API expects a JSON object; check it is valid JSON.").Wrap(err)
}

// indexedField turns the path of a type error inside an array of the body's
// top-level object ("messages.role", as encoding/json names it) into the
// path OpenAI names, with the element's index ("messages[1].role"), by
// decoding the elements one by one. Other paths come back as they are.
func indexedField(body []byte, v any, path string) string {
	top, rest, ok := strings.Cut(path, ".")
	t := reflect.TypeOf(v)
	for ok && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if !ok || t.Kind() != reflect.Struct {
		return path
	}
	var elem reflect.Type
	for _, f := range reflect.VisibleFields(t) {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == top && f.Type.Kind() == reflect.Slice {
			elem = f.Type.Elem()
		}
	}
	var obj map[string]json.RawMessage
	var items []json.RawMessage
	if elem == nil || json.Unmarshal(body, &obj) != nil || json.Unmarshal(obj[top], &items) != nil {
		return path
	}
	for i, it := range items {
		if json.Unmarshal(it, reflect.New(elem).Interface()) != nil {
			return fmt.Sprintf("%s[%d].%s", top, i, rest)
		}
	}
	return path
}

// unembedded drops from a decoding error's field path the names of the
// structs v embeds (commonBody), which are no members of the body.
func unembedded(v any, path string) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for t != nil && t.Kind() == reflect.Struct {
		head, rest, ok := strings.Cut(path, ".")
		f, found := t.FieldByName(head)
		if !ok || !found || !f.Anonymous {
			break
		}
		path, t = rest, f.Type
	}
	return path
}

// intBounds is the range of the integer type t (through pointers).
func intBounds(t reflect.Type) (lo, hi string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bits := t.Bits()
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "0", strconv.FormatUint(math.MaxUint64>>(64-bits), 10)
	}
	return strconv.FormatInt(math.MinInt64>>(64-bits), 10), strconv.FormatInt(math.MaxInt64>>(64-bits), 10)
}

func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

func article(v string) string {
	switch v {
	case "array", "object", "integer":
		return "an " + v
	case "bool":
		return "a boolean"
	}
	return "a " + v
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// parseStop accepts a string or a list of at most 4 strings.
func parseStop(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	// Counted before decoding: a list of a million stop sequences is
	// refused without building it.
	if n, _, _, ok := scanArray(raw); ok && n > 4 {
		return nil, invalidAs("invalid_value", "stop", "Invalid 'stop': at most 4 stop sequences are allowed, got %d.", n)
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalidAs("invalid_type", "stop", "Invalid type for 'stop': expected a string or an array of strings.")
	}
	if len(list) > 4 {
		return nil, invalidAs("invalid_value", "stop", "Invalid 'stop': at most 4 stop sequences are allowed, got %d.", len(list))
	}
	out := list[:0]
	for _, s := range list {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// applyCommon applies the parameters both endpoints take alike, with
// maxTokens standing for c.MaxTokens (the endpoint's own limit: chat's
// max_completion_tokens, named maxTokensParam).
func (j *job) applyCommon(c *commonBody, maxTokens *int, maxChoicesPerPrompt int, maxTokensParam string) error {
	if c.Model == nil || *c.Model == "" {
		return invalidAs("missing_required_parameter", "model", "You must provide a model parameter.")
	}
	j.model = *c.Model
	if maxTokens != nil {
		if *maxTokens < 1 {
			return outOfRange(maxTokensParam, float64(*maxTokens), true, 1)
		}
		j.maxTokens = *maxTokens
	}
	j.maxTokensParam = maxTokensParam
	j.temperature = 1
	j.temperatureSet = c.Temperature != nil
	if c.Temperature != nil {
		if *c.Temperature < 0 {
			return outOfRange("temperature", *c.Temperature, false, 0)
		}
		if *c.Temperature > 2 {
			return outOfRange("temperature", *c.Temperature, false, 2)
		}
		j.temperature = *c.Temperature
	}
	j.topP = 1
	j.topPSet = c.TopP != nil
	if c.TopP != nil {
		if *c.TopP < 0 {
			return outOfRange("top_p", *c.TopP, false, 0)
		}
		if *c.TopP > 1 {
			return outOfRange("top_p", *c.TopP, false, 1)
		}
		j.topP = *c.TopP
		if j.topP == 0 {
			// OpenAI's top_p 0 keeps only the likeliest token; to the
			// runtime 0 means no filter, so the smallest mass stands in.
			j.topP = math.SmallestNonzeroFloat64
		}
	}
	if c.TopK != nil {
		// An extension (as other OpenAI-compatible servers have it):
		// -1 or 0 turns the filter off.
		if *c.TopK < -1 {
			return invalidAs("invalid_value", "top_k", "Invalid 'top_k': expected -1, 0 (no filter) or a positive integer, but got %d.", *c.TopK)
		}
		j.topK, j.topKSet = max(*c.TopK, 0), true
	}
	if c.Seed != nil {
		u := uint64(*c.Seed)
		j.seed = &u
	}
	j.n = 1
	if c.N != nil {
		// OpenAI takes n up to 128; each choice is a sequence of the
		// runtime's batch, and this server takes up to maxChoices (see
		// docs/API.md), refused as OpenAI refuses a value past its bound.
		if *c.N < 1 {
			return outOfRange("n", float64(*c.N), true, 1)
		}
		if *c.N > maxChoicesPerPrompt {
			e := outOfRange("n", float64(*c.N), true, float64(maxChoicesPerPrompt))
			e.Message += fmt.Sprintf(" This server generates at most %d choices per request.", maxChoicesPerPrompt)
			return e
		}
		j.n = *c.N
	}
	stop, err := parseStop(c.Stop)
	if err != nil {
		return err
	}
	j.stop = stop
	j.stream = c.Stream != nil && *c.Stream
	if c.StreamOptions != nil {
		if !j.stream {
			return invalidAs("invalid_value", "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		j.includeUsage = c.StreamOptions.IncludeUsage != nil && *c.StreamOptions.IncludeUsage
	}
	if c.User != nil {
		j.user = *c.User
	}
	return nil
}

// parseChat parses a /v1/chat/completions body.
func parseChat(body []byte, maxChoices int) (*job, error) {
	var b chatBody
	if err := decodeStrict(body, &b); err != nil {
		return nil, err
	}
	j := &job{kind: kindChat}
	maxTok := b.MaxTokens
	param := "max_tokens"
	if b.MaxCompletionTokens != nil {
		// max_tokens is deprecated in favour of max_completion_tokens;
		// OpenAI refuses both at once, whatever their values.
		if b.MaxTokens != nil {
			return nil, invalidAs("invalid_parameter_combination", "max_tokens", "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.")
		}
		maxTok, param = b.MaxCompletionTokens, "max_completion_tokens"
	}
	if err := j.applyCommon(&b.commonBody, maxTok, maxChoices, param); err != nil {
		return nil, err
	}
	if err := b.adjustBody.apply(j); err != nil {
		return nil, err
	}
	format, schema, err := chatFormat(b.ResponseFormat)
	if err != nil {
		return nil, err
	}
	j.format, j.schema = format, schema
	if err := b.guidedBody.apply(j); err != nil {
		return nil, err
	}
	if j.formatParam != "" && format != "" {
		return nil, invalidAs("invalid_parameter_combination", j.formatParam, "'%s' cannot be given with 'response_format' %q.", j.formatParam, format)
	}
	if !isNull(b.ParallelToolCalls) {
		var parallel bool
		if json.Unmarshal(b.ParallelToolCalls, &parallel) != nil {
			return nil, invalidAs("invalid_type", "parallel_tool_calls", "Invalid type for 'parallel_tool_calls': expected a boolean, but got %s instead.", bytes.TrimSpace(b.ParallelToolCalls))
		}
		j.oneCall = !parallel
	}
	if j.functions = givenArray(b.Functions); j.functions {
		j.oneCall = true
		// the legacy functions, read as tools
		switch {
		case givenArray(b.Tools):
			return nil, invalidAs("invalid_parameter_combination", "functions", "The legacy 'functions' cannot be given with 'tools'; give them all as 'tools'.")
		case !isNull(b.ToolChoice):
			return nil, invalidAs("invalid_parameter_combination", "tool_choice", "'tool_choice' cannot be given with the legacy 'functions'; use 'function_call'.")
		}
		if j.tools, j.toolChoice, err = parseFunctions(b.Functions, b.FunctionCall); err != nil {
			return nil, err
		}
		if j.toolChoice != "" && j.format != "" {
			return nil, invalidAs("invalid_parameter_combination", "function_call", "A forced function call ('function_call' %s) cannot also follow '%s'.", bytes.TrimSpace(b.FunctionCall), cmp.Or(j.formatParam, "response_format"))
		}
	} else {
		if j.tools, j.toolChoice, err = parseTools(b.Tools, b.ToolChoice); err != nil {
			return nil, err
		}
		if j.toolChoice != "" && j.format != "" {
			return nil, invalidAs("invalid_parameter_combination", "tool_choice", "A forced tool call ('tool_choice' %q) cannot also follow '%s'.", b.ToolChoice, cmp.Or(j.formatParam, "response_format"))
		}
		// Without functions, function_call may only say what it would
		// say of none: "none" or "auto".
		if _, _, err := parseFunctions(b.Functions, b.FunctionCall); err != nil {
			return nil, err
		}
	}
	if err := checkChatOutputs(&b); err != nil {
		return nil, err
	}
	if j.templateKwargs, err = parseTemplateKwargs(b.ChatTemplateKwargs); err != nil {
		return nil, err
	}
	if b.Messages == nil {
		// left out or null; an empty array is the next refusal
		return nil, invalidAs("missing_required_parameter", "messages", "Missing required parameter: 'messages'.")
	}
	if len(b.Messages) == 0 {
		return nil, invalidAs("empty_array", "messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.")
	}
	j.messages = make([]nozzle.ChatMessage, len(b.Messages))
	lastCall := "" // the id of the latest legacy function_call
	for i, m := range b.Messages {
		if m.Role == nil {
			return nil, invalidAs("missing_required_parameter", fmt.Sprintf("messages[%d].role", i), "Missing required parameter: 'messages[%d].role'.", i)
		}
		role := *m.Role
		switch role {
		case "system", "user", "assistant", "tool", "function":
		case "developer":
			role = "system"
		default:
			return nil, invalidAs("invalid_value", fmt.Sprintf("messages[%d].role", i), "Invalid value for 'messages[%d].role': %q is not supported; use 'system', 'developer', 'user', 'assistant', 'tool' or the legacy 'function'.", i, role)
		}
		var calls []nozzle.ToolCall
		if !isNull(m.ToolCalls) && string(bytes.TrimSpace(m.ToolCalls)) != "[]" {
			if role != "assistant" {
				return nil, invalidAs("invalid_value", fmt.Sprintf("messages[%d].tool_calls", i), "Invalid 'messages[%d]': only assistant messages carry 'tool_calls'.", i)
			}
			if calls, err = parseToolCallsIn(m.ToolCalls, i); err != nil {
				return nil, err
			}
		}
		var callID string
		if role == "tool" {
			if m.ToolCallID == nil {
				return nil, invalidAs("missing_required_parameter", fmt.Sprintf("messages[%d].tool_call_id", i), "Missing required parameter: 'messages[%d].tool_call_id'.", i)
			}
			callID = *m.ToolCallID
		}
		if !isNull(m.FunctionCall) {
			// the legacy call: the message's one tool call
			p := fmt.Sprintf("messages[%d].function_call", i)
			switch {
			case role != "assistant":
				return nil, invalidAs("invalid_value", p, "Invalid 'messages[%d]': only assistant messages carry 'function_call'.", i)
			case calls != nil:
				return nil, invalidAs("invalid_parameter_combination", p, "Invalid 'messages[%d]': 'function_call' cannot be given with 'tool_calls'.", i)
			}
			call, err := parseFunctionCallIn(m.FunctionCall, i)
			if err != nil {
				return nil, err
			}
			calls, lastCall = []nozzle.ToolCall{call}, call.ID
		}
		if role == "function" {
			// the legacy result of a function: the tool message answering
			// the latest function_call (or, with none before it, a call of
			// its own id, which templates that pair calls and results by
			// id refuse as they refuse such a tool message)
			if m.Name == nil {
				return nil, invalidAs("missing_required_parameter", fmt.Sprintf("messages[%d].name", i), "Missing required parameter: 'messages[%d].name'.", i)
			}
			role, callID = "tool", cmp.Or(lastCall, functionCallID(i))
			if isNull(m.Content) {
				m.Content = json.RawMessage(`""`) // OpenAI takes a function's null result
			}
		}
		if isNull(m.Content) && role != "assistant" {
			return nil, invalidAs("missing_required_parameter", fmt.Sprintf("messages[%d].content", i), "Missing required parameter: 'messages[%d].content'.", i)
		}
		text, err := parseContent(m.Content, i, role == "assistant")
		if err != nil {
			return nil, err
		}
		j.messages[i] = nozzle.ChatMessage{Role: role, Content: text, ToolCalls: calls, ToolCallID: callID}
		if m.Name != nil {
			j.messages[i].Name = *m.Name
		}
		if role == "assistant" && !isNull(m.ReasoningContent) {
			// The template renders it where it renders thoughts (Qwen3's,
			// in the turn after the last question); others leave it out.
			if err := json.Unmarshal(m.ReasoningContent, &j.messages[i].ReasoningContent); err != nil {
				p := fmt.Sprintf("messages[%d].reasoning_content", i)
				return nil, invalidAs("invalid_type", p, "Invalid type for '%s': expected a string.", p)
			}
		}
	}
	j.logprobs = b.Logprobs != nil && *b.Logprobs
	if b.TopLogprobs != nil {
		if *b.TopLogprobs < 0 {
			return nil, outOfRange("top_logprobs", float64(*b.TopLogprobs), true, 0)
		}
		if *b.TopLogprobs > 20 {
			return nil, outOfRange("top_logprobs", float64(*b.TopLogprobs), true, 20)
		}
		if *b.TopLogprobs > 0 && !j.logprobs {
			return nil, invalidAs("invalid_value", "top_logprobs", "Using 'top_logprobs' requires 'logprobs' to be true.")
		}
		j.topLogprobs = *b.TopLogprobs
	}
	return j, nil
}

// parseContent accepts a string, null, or an array of text parts.
func parseContent(raw json.RawMessage, i int, assistant bool) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	// Fast path: a plain string without escapes (the body is already known
	// to be valid JSON).
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return string(raw[1 : n-1]), nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	param := fmt.Sprintf("messages[%d].content", i)
	var parts []contentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", invalidAs("invalid_type", param, "Invalid type for '%s': expected a string or an array of content parts.", param)
	}
	if len(parts) == 0 {
		return "", invalidAs("empty_array", param, "Invalid '%s': empty array. Expected an array with minimum length 1, but got an empty array instead.", param)
	}
	var sb strings.Builder
	for k, p := range parts {
		if assistant && p.Type != nil && *p.Type == "refusal" && p.Refusal != nil {
			// an assistant's earlier refusal, as the SDKs hand it back:
			// what it said
			sb.WriteString(*p.Refusal)
			continue
		}
		if p.Type == nil || *p.Type != "text" {
			t := ""
			if p.Type != nil {
				t = *p.Type
			}
			return "", invalidAs("unsupported_value", fmt.Sprintf("%s[%d].type", param, k), "Invalid content part type %q: only 'text' parts are supported.", t)
		}
		if p.Text == nil {
			return "", invalidAs("missing_required_parameter", fmt.Sprintf("%s[%d].text", param, k), "Missing required parameter: '%s[%d].text'.", param, k)
		}
		sb.WriteString(*p.Text)
	}
	return sb.String(), nil
}

// completionsDefaultMaxTokens is the max_tokens of a legacy completion that
// gives none, as OpenAI's API documents it (a chat completion's is the
// rest of the context).
const completionsDefaultMaxTokens = 16

// parseCompletion parses a /v1/completions body.
func parseCompletion(body []byte, maxChoices int) (*job, error) {
	var b completionBody
	if err := decodeStrict(body, &b); err != nil {
		return nil, err
	}
	j := &job{kind: kindText}
	// max_tokens 0 with echo: the prompt (and its logprobs) only, as
	// OpenAI's legacy completions answer it.
	maxTok := b.MaxTokens
	if maxTok != nil && *maxTok == 0 && b.Echo != nil && *b.Echo {
		maxTok, j.promptOnly = nil, true
	}
	if err := j.applyCommon(&b.commonBody, maxTok, maxChoices, "max_tokens"); err != nil {
		return nil, err
	}
	if b.MaxTokens == nil {
		j.maxTokens = completionsDefaultMaxTokens
	}
	if err := b.adjustBody.apply(j); err != nil {
		return nil, err
	}
	if err := b.guidedBody.apply(j); err != nil {
		return nil, err
	}
	prompts, err := parsePrompt(b.Prompt, j.n, maxChoices)
	if err != nil {
		return nil, err
	}
	j.prompts = prompts
	if j.choices() > maxChoices {
		return nil, tooManyChoices(len(prompts), j.n, maxChoices)
	}
	if b.Logprobs != nil {
		if *b.Logprobs < 0 {
			return nil, outOfRange("logprobs", float64(*b.Logprobs), true, 0)
		}
		if *b.Logprobs > 5 {
			return nil, outOfRange("logprobs", float64(*b.Logprobs), true, 5)
		}
		j.logprobs, j.topLogprobs = true, *b.Logprobs
	}
	if b.Echo != nil && *b.Echo {
		j.echo = true
	}
	if b.Suffix != nil && *b.Suffix != "" {
		return nil, invalidAs("unsupported_parameter", "suffix", "'suffix' is not supported by this server.")
	}
	if b.BestOf != nil && *b.BestOf != 1 && *b.BestOf != j.n {
		return nil, invalidAs("unsupported_value", "best_of", "'best_of' other than n is not supported by this server.")
	}
	return j, nil
}

// parsePrompt accepts a string, a list of strings, a list of token ids or
// a list of token-id lists. A list of more than maxPrompts prompts is
// refused before any of them is decoded, and token ids decode straight
// into integers: a 4 MiB body of ids must not cost the gateway hundreds of
// megabytes of garbage (a json.RawMessage and a *int per id did).
func parsePrompt(raw json.RawMessage, n, maxChoices int) ([]promptSpec, error) {
	if isNull(raw) {
		return nil, invalidAs("missing_required_parameter", "prompt", "You must provide a prompt.")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []promptSpec{{text: s, isText: true}}, nil
	}
	count, first, nullAt, ok := scanArray(raw)
	if !ok {
		return nil, invalidAs("invalid_type", "prompt", "Invalid type for 'prompt': expected a string, an array of strings, an array of token ids or an array of token-id arrays.")
	}
	if count == 0 {
		return nil, invalidAs("empty_array", "prompt", "Invalid 'prompt': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	}
	if nullAt >= 0 {
		return nil, invalidAs("invalid_value", "prompt", "Invalid 'prompt': item %d is null.", nullAt)
	}
	if (first == '"' || first == '[') && count*max(n, 1) > maxChoices {
		return nil, tooManyChoices(count, n, maxChoices)
	}
	switch first {
	case '"':
		list := make([]string, 0, count)
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, invalidAs("invalid_value", "prompt", "Invalid 'prompt': an array of prompts must hold only strings.")
		}
		out := make([]promptSpec, len(list))
		for i, t := range list {
			out[i] = promptSpec{text: t, isText: true}
		}
		return out, nil
	case '[':
		lists := make([][]tokenID, 0, count)
		if err := json.Unmarshal(raw, &lists); err != nil {
			return nil, invalidAs("invalid_value", "prompt", "Invalid 'prompt': an array of token-id arrays must hold only arrays of integers.")
		}
		out := make([]promptSpec, len(lists))
		for i, l := range lists {
			ids, err := tokenIDs(l)
			if err != nil {
				return nil, err
			}
			out[i] = promptSpec{tokens: ids}
		}
		return out, nil
	default:
		list := make([]tokenID, 0, count)
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, invalidAs("invalid_value", "prompt", "Invalid 'prompt': an array of token ids must hold only integers.")
		}
		ids, err := tokenIDs(list)
		if err != nil {
			return nil, err
		}
		return []promptSpec{{tokens: ids}}, nil
	}
}

// tooManyChoices refuses a legacy completion whose prompts × n choices
// pass maxChoices: named by n when n asks for more than one choice a
// prompt, else by the prompt list.
func tooManyChoices(prompts, n, maxChoices int) error {
	param := "n"
	if n <= 1 {
		param = "prompt"
	}
	return invalidAs("integer_above_max_value", param, "Too many choices: %d prompts × n=%d exceeds %d. This server generates at most %d choices (prompts × n) per request.", prompts, max(n, 1), maxChoices, maxChoices)
}

// scanArray looks at raw, valid JSON, without decoding it: whether it is
// an array, how many items it holds, the first byte of its first item and
// the index of its first null item (-1: none).
func scanArray(raw []byte) (count int, first byte, nullAt int, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '[' {
		return 0, 0, -1, false
	}
	nullAt = -1
	depth, start := 0, true
	for c := range jsonStructure(raw[1 : len(raw)-1]) {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case ',':
			if depth == 0 {
				start = true
			}
			continue
		}
		if start && depth == 0 {
			if count == 0 {
				first = c
			}
			if c == 'n' && nullAt < 0 {
				nullAt = count
			}
			count++
			start = false
		}
		switch c {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
		}
	}
	return count, first, nullAt, true
}

// jsonStructure yields the bytes of valid JSON b that lie outside its
// strings, and the opening quote of each string.
func jsonStructure(b []byte) iter.Seq[byte] {
	return func(yield func(byte) bool) {
		inString := false
		for i := 0; i < len(b); i++ {
			c := b[i]
			if inString {
				switch c {
				case '\\':
					i++
				case '"':
					inString = false
				}
				continue
			}
			inString = c == '"'
			if !yield(c) {
				return
			}
		}
	}
}

// tokenID is a prompt's token id as the request gives it: an integer, or
// null (nullToken), decoded without allocating.
type tokenID int

const nullToken = tokenID(math.MinInt)

func (t *tokenID) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = nullToken
		return nil
	}
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return errNotTokenID
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return errNotTokenID
		}
		v = v*10 + int(c-'0')
	}
	if neg {
		v = -v
	}
	*t = tokenID(v)
	return nil
}

var errNotTokenID = errors.New("not a token id")

// tokenIDs checks a prompt's token ids (null is not one) and returns them.
func tokenIDs(list []tokenID) ([]int, error) {
	ids := make([]int, len(list))
	for i, id := range list {
		if id == nullToken {
			return nil, invalidAs("invalid_value", "prompt", "Invalid 'prompt': token %d is null; token ids are integers.", i)
		}
		ids[i] = int(id)
	}
	return ids, checkTokens(ids)
}

func checkTokens(ids []int) error {
	if len(ids) == 0 {
		return invalidAs("empty_array", "prompt", "Invalid 'prompt': empty token list.")
	}
	for _, id := range ids {
		if id < 0 || id > 1<<31-1 {
			return invalidAs("invalid_value", "prompt", "Invalid 'prompt': token id %d is out of range.", id)
		}
	}
	return nil
}

// applySampling gives the sampling parameters the request left out the
// model's recommended values (generation_config.json), as other serving
// systems do; the API's defaults (temperature 1, top_p 1, no top-k) stand
// where the model recommends nothing.
func (j *job) applySampling(d nozzle.SamplingDefaults) {
	if !j.temperatureSet && d.Temperature != nil {
		j.temperature = *d.Temperature
	}
	if !j.topPSet && d.TopP != nil {
		j.topP = *d.TopP
	}
	if !j.topKSet && d.TopK > 0 {
		j.topK = d.TopK
	}
}

// Bounds of a request's chat template variables.
const (
	maxTemplateKwargs      = 64       // variables
	maxTemplateKwargsBytes = 16 << 10 // of compact JSON
	maxTemplateKwargsDepth = 16       // nesting of arrays and objects
)

// reservedTemplateVars are the chat template's variables the server sets
// itself (the runtime refuses them too).
var reservedTemplateVars = map[string]bool{
	"messages": true, "tools": true, "add_generation_prompt": true, "documents": true,
	"bos_token": true, "eos_token": true, "unk_token": true, "pad_token": true,
	"raise_exception": true, "strftime_now": true,
}

// parseTemplateKwargs checks chat_template_kwargs, vLLM's extension: an
// object whose members are more variables of the chat template
// ({"enable_thinking": false} for Qwen3's), each named as a template
// variable is, of any JSON value, within bounds; none may replace a
// variable the server sets. Returns the compact object, nil for none.
func parseTemplateKwargs(raw json.RawMessage) (json.RawMessage, error) {
	const param = "chat_template_kwargs"
	if isNull(raw) {
		return nil, nil
	}
	if bytes.TrimSpace(raw)[0] != '{' {
		return nil, invalidAs("invalid_type", param, "Invalid type for 'chat_template_kwargs': expected an object.")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, invalidAs("invalid_type", param, "Invalid type for 'chat_template_kwargs': expected an object.")
	}
	if compact.Len() > maxTemplateKwargsBytes {
		return nil, invalidAs("invalid_value", param, "Invalid 'chat_template_kwargs': %d bytes of JSON, at most %d are allowed.", compact.Len(), maxTemplateKwargsBytes)
	}
	if d := jsonDepth(compact.Bytes()); d > maxTemplateKwargsDepth {
		return nil, invalidAs("invalid_value", param, "Invalid 'chat_template_kwargs': nested %d deep, at most %d levels are allowed.", d, maxTemplateKwargsDepth)
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(compact.Bytes(), &members); err != nil {
		return nil, invalidAs("invalid_type", param, "Invalid type for 'chat_template_kwargs': expected an object.")
	}
	if len(members) > maxTemplateKwargs {
		return nil, invalidAs("invalid_value", param, "Invalid 'chat_template_kwargs': %d variables, at most %d are allowed.", len(members), maxTemplateKwargs)
	}
	if len(members) == 0 {
		return nil, nil
	}
	for name := range members {
		if reservedTemplateVars[name] {
			return nil, invalidAs("invalid_value", param, "Invalid 'chat_template_kwargs': %q is set by the server (from the request's messages and tools, and the model's tokenizer) and cannot be given.", name)
		}
		if !templateVarName(name) {
			return nil, invalidAs("invalid_value", param, "Invalid 'chat_template_kwargs': %q is not a template variable's name. Expected a string that matches the pattern '^[A-Za-z_][A-Za-z0-9_]{0,63}$'.", name)
		}
	}
	return compact.Bytes(), nil
}

// templateVarName reports whether s is a name a Jinja template can use.
func templateVarName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// jsonDepth returns how deeply arrays and objects nest in valid JSON.
func jsonDepth(b []byte) int {
	depth, most := 0, 0
	for c := range jsonStructure(b) {
		switch c {
		case '[', '{':
			depth++
			most = max(most, depth)
		case ']', '}':
			depth--
		}
	}
	return most
}
