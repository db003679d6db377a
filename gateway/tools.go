package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nozzle-ai/nozzle"
)

// Tool calling. The chat template renders the request's tools (and the
// conversation's earlier calls and results) the way the model was taught;
// the model answers with calls in the template's format
// (nozzle.ToolFormatHermes: JSON objects between <tool_call> tags,
// ToolFormatLlama3JSON: the whole answer a JSON object, ToolFormatMistral:
// the whole answer a JSON array, after a [TOOL_CALLS] the decoder usually
// leaves out, ToolFormatMistralV11: [TOOL_CALLS]name[ARGS]{...} per call,
// control tokens the runtime keeps in the text of a request with tools),
// which the gateway turns into OpenAI's tool_calls, with ids of the form
// the format's templates accept back. With "auto" the model may call or
// not; "required" and a named function force one call
// (nozzle.GenerateRequest.ToolChoice): the runtime masks every token that
// would not continue the call, in the formats whose calls are text
// (Hermes', Llama 3's JSON).

const (
	hermesOpen  = "<tool_call>"
	hermesClose = "</tool_call>"
	// mistralCalls is Mistral's control token before its calls. Nozzle's
	// stream decoder skips special tokens, so the text seldom holds it,
	// except in the v11 format, where the runtime keeps it and the
	// control tokens after the function's name: [ARGS] before the
	// arguments, [CALL_ID] before an id the model may write.
	mistralCalls  = "[TOOL_CALLS]"
	mistralArgs   = "[ARGS]"
	mistralCallID = "[CALL_ID]"
)

// toolDef is one entry of a request's tools.
type toolDef struct {
	Type     *string      `json:"type"`
	Function *functionDef `json:"function"`
}

// functionDef is a function a request offers the model: a tool's
// function, or one of the legacy functions (functions.go).
type functionDef struct {
	Name        *string         `json:"name"`
	Description json.RawMessage `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      json.RawMessage `json:"strict"`
}

// check refuses a function whose name (missing, malformed, or one of
// seen, which it joins) or whose parameters or description are not what
// OpenAI takes. at names the function in the request ("tools[0].function",
// "functions[0]"), list the array that holds it.
func (f *functionDef) check(at, list string, seen map[string]bool) error {
	if f.Name == nil {
		return invalidAs("missing_required_parameter", at+".name", "Missing required parameter: '%s.name'.", at)
	}
	if name := *f.Name; !validFunctionName(name) {
		return invalidAs("invalid_value", at+".name", "Invalid '%s.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.", at)
	} else if seen[name] {
		return invalidAs("invalid_value", at+".name", "Invalid '%s': function name %q is given twice.", list, name)
	} else {
		seen[name] = true
	}
	if p := f.Parameters; !isNull(p) && bytes.TrimSpace(p)[0] != '{' {
		return invalidAs("invalid_type", at+".parameters", "Invalid type for '%s.parameters': expected an object (a JSON Schema).", at)
	}
	if d := f.Description; !isNull(d) && bytes.TrimSpace(d)[0] != '"' {
		return invalidAs("invalid_type", at+".description", "Invalid type for '%s.description': expected a string.", at)
	}
	return nil
}

// parseTools checks a request's tools and tool_choice and returns the
// tools to render (nil when none are to be offered to the model) and the
// call to force: "" (none), nozzle.ToolChoiceRequired or a function's
// name.
func parseTools(raw, choice json.RawMessage) (json.RawMessage, string, error) {
	mode, force := "auto", ""
	if !isNull(choice) {
		var s string
		var named struct {
			Type     *string `json:"type"`
			Function *struct {
				Name *string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(choice, &s) == nil:
			switch s {
			case "none", "auto":
				mode = s
			case nozzle.ToolChoiceRequired:
				force = s
			default:
				return nil, "", invalidAs("invalid_value", "tool_choice", "Invalid value for 'tool_choice': %q; use \"none\", \"auto\" or \"required\".", s)
			}
		case json.Unmarshal(choice, &named) == nil && named.Type != nil && *named.Type == "function" && named.Function != nil && named.Function.Name != nil:
			force = *named.Function.Name
		default:
			return nil, "", invalidAs("invalid_value", "tool_choice", "Invalid 'tool_choice': expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}.")
		}
	}
	if isNull(raw) {
		if force != "" {
			return nil, "", invalidAs("invalid_value", "tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
		}
		return nil, "", nil
	}
	// Counted before decoding, as messages are.
	if n, _, _, ok := scanArray(raw); ok && n > maxToolCalls {
		return nil, "", arrayTooLong("tools", maxToolCalls, n)
	}
	var tools []toolDef
	if err := json.Unmarshal(raw, &tools); err != nil {
		return nil, "", invalidAs("invalid_type", "tools", "Invalid type for 'tools': expected an array of objects.")
	}
	if len(tools) == 0 {
		if force != "" {
			return nil, "", invalidAs("invalid_value", "tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
		}
		return nil, "", nil
	}
	seen := map[string]bool{}
	for i, t := range tools {
		at := fmt.Sprintf("tools[%d]", i)
		if t.Type == nil || *t.Type != "function" {
			return nil, "", invalidAs("invalid_value", at+".type", "Invalid value for '%s.type': only \"function\" tools are supported.", at)
		}
		f := t.Function
		if f == nil {
			f = &functionDef{}
		}
		if err := f.check(at+".function", "tools", seen); err != nil {
			return nil, "", err
		}
	}
	if force != "" && force != nozzle.ToolChoiceRequired && !seen[force] {
		return nil, "", invalidAs("invalid_value", "tool_choice.function.name", "Invalid 'tool_choice': no function named %q in 'tools'.", force)
	}
	if mode == "none" {
		return nil, "", nil // the model answers without them
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, "", invalidAs("invalid_type", "tools", "Invalid type for 'tools': expected an array of objects.")
	}
	return compact.Bytes(), force, nil
}

func validFunctionName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

// nameByte reports whether c may be in a function's name.
func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// toolCallIn is a tool call of an assistant message in the request.
type toolCallIn struct {
	ID       *string `json:"id"`
	Type     *string `json:"type"`
	Function *struct {
		Name      *string         `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

// parseToolCallsIn reads messages[i].tool_calls.
func parseToolCallsIn(raw json.RawMessage, i int) ([]nozzle.ToolCall, error) {
	at := fmt.Sprintf("messages[%d].tool_calls", i)
	if n, _, _, ok := scanArray(raw); ok && n > maxToolCalls {
		return nil, arrayTooLong(at, maxToolCalls, n)
	}
	var in []toolCallIn
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, invalidAs("invalid_type", at, "Invalid type for '%s': expected an array of tool calls.", at)
	}
	out := make([]nozzle.ToolCall, len(in))
	for k, c := range in {
		p := fmt.Sprintf("%s[%d]", at, k)
		switch {
		case c.ID == nil:
			return nil, invalidAs("missing_required_parameter", p+".id", "Missing required parameter: '%s.id'.", p)
		case c.Type == nil || *c.Type != "function":
			return nil, invalidAs("invalid_value", p+".type", "Invalid value for '%s.type': only \"function\" calls are supported.", p)
		case c.Function == nil || c.Function.Name == nil:
			return nil, invalidAs("missing_required_parameter", p+".function.name", "Missing required parameter: '%s.function.name'.", p)
		case isNull(c.Function.Arguments):
			return nil, invalidAs("missing_required_parameter", p+".function.arguments", "Missing required parameter: '%s.function.arguments'.", p)
		}
		var args string
		if json.Unmarshal(c.Function.Arguments, &args) != nil {
			return nil, invalidAs("invalid_type", p+".function.arguments", "Invalid type for '%s.function.arguments': expected a string (the arguments as JSON).", p)
		}
		out[k] = nozzle.ToolCall{ID: *c.ID, Type: "function", Function: nozzle.FunctionCall{Name: *c.Function.Name, Arguments: args}}
	}
	return out, nil
}

// toolCallID names call k of a choice in the id form of the model's tool
// call format. Derived from the answer's id, so a stored answer and the
// stream that sent it agree. Mistral's templates refuse, when the client
// sends the calls back, any id that is not 9 alphanumeric characters;
// the others take OpenAI's "call_" form.
func toolCallID(format, answerID string, choice, k int) string {
	h := sha256.Sum256([]byte(answerID + "/" + strconv.Itoa(choice) + "/" + strconv.Itoa(k)))
	if format == nozzle.ToolFormatMistral || format == nozzle.ToolFormatMistralV11 {
		const digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		n := binary.BigEndian.Uint64(h[:8]) // 62^9 < 2^64: 9 digits in base 62
		id := make([]byte, 9)
		for i := range id {
			id[i] = digits[n%62]
			n /= 62
		}
		return string(id)
	}
	return "call_" + hex.EncodeToString(h[:12])
}

// splitCalls is splitToolCalls for choice i of j's answer, keeping only
// the first call where the request allows one (oneCall): the runtime
// ended the answer with it, a Mistral array then maybe open.
func (j *job) splitCalls(text string, i int) (string, []nozzle.ToolCall) {
	rest, calls := splitToolCallsOf(j.toolFormat, text, j.id, i, j.oneCall)
	if j.oneCall && len(calls) > 1 {
		calls = calls[:1]
	}
	return rest, calls
}

// splitToolCalls finds the tool calls in a model's answer written in
// format: the text around them (trimmed) and the calls, with ids from
// answerID and choice. An answer without a well-formed call is all text.
func splitToolCalls(format, text, answerID string, choice int) (string, []nozzle.ToolCall) {
	return splitToolCallsOf(format, text, answerID, choice, false)
}

// splitToolCallsOf is splitToolCalls; with first, the answer may end with
// its first call (nozzle.FirstCall, where the runtime ends an answer that
// allows one call), which leaves Mistral's array of calls without its ']'.
func splitToolCallsOf(format, text, answerID string, choice int, first bool) (string, []nozzle.ToolCall) {
	var calls []nozzle.ToolCall
	add := func(name string, args json.RawMessage) {
		if isNull(args) {
			args = json.RawMessage("{}")
		}
		var compact bytes.Buffer
		if json.Compact(&compact, args) != nil {
			compact.Reset()
			compact.Write(args)
		}
		calls = append(calls, nozzle.ToolCall{ID: toolCallID(format, answerID, choice, len(calls)), Type: "function",
			Function: nozzle.FunctionCall{Name: name, Arguments: compact.String()}})
	}
	switch format {
	case nozzle.ToolFormatHermes:
		from := thoughtEnd(text)
		if from < 0 {
			return text, nil // still thinking
		}
		i := strings.Index(text[from:], hermesOpen)
		if i < 0 {
			return text, nil
		}
		i += from
		rest := text[i:]
		for strings.HasPrefix(rest, hermesOpen) {
			body := rest[len(hermesOpen):]
			end := strings.Index(body, hermesClose)
			if end < 0 {
				end = len(body) // the last call may lack its closing tag
			}
			name, args, ok := callObject(body[:end], false, "arguments")
			if !ok {
				return text, nil
			}
			add(name, args)
			rest = strings.TrimLeft(body[min(end+len(hermesClose), len(body)):], " \t\r\n")
		}
		if strings.TrimSpace(rest) != "" {
			return text, nil // text after the calls: not a well-formed answer
		}
		pre := text[:i]
		if strings.TrimSpace(pre) == "" {
			pre = ""
		}
		return pre, calls
	case nozzle.ToolFormatLlama3JSON:
		body := strings.TrimSpace(text)
		if !strings.HasPrefix(body, "{") {
			return text, nil
		}
		parts, ok := splitCalls(body)
		if !ok {
			return text, nil
		}
		for _, part := range parts {
			// The arguments are required: without them a JSON answer
			// with a "name" (a person's, say) is no call.
			name, args, ok := callObject(part, true, "parameters", "arguments")
			if !ok {
				return text, nil
			}
			add(name, args)
		}
		return "", calls
	case nozzle.ToolFormatMistral:
		// [TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...], the
		// marker mostly left out by the decoder; with it, text may come
		// before the calls.
		pre, body, marked := "", text, false
		if i := strings.Index(text, mistralCalls); i >= 0 {
			pre, body, marked = text[:i], text[i+len(mistralCalls):], true
		}
		body = strings.TrimSpace(body)
		var parts []json.RawMessage
		switch {
		case strings.HasPrefix(body, "["):
			dec := json.NewDecoder(strings.NewReader(body))
			if dec.Decode(&parts) != nil || strings.TrimSpace(body[dec.InputOffset():]) != "" {
				var ok bool
				if parts, ok = openArray(body); !first || !ok {
					return text, nil
				}
			}
		case marked && strings.HasPrefix(body, "{"):
			// one call without its array, after the marker
			var one json.RawMessage
			if json.Unmarshal([]byte(body), &one) != nil {
				return text, nil
			}
			parts = []json.RawMessage{one}
		}
		if len(parts) == 0 {
			return text, nil
		}
		for _, part := range parts {
			name, args, ok := callObject(string(part), !marked, "arguments", "parameters")
			if !ok {
				return text, nil
			}
			add(name, args)
		}
		if strings.TrimSpace(pre) == "" {
			pre = ""
		}
		return pre, calls
	case nozzle.ToolFormatMistralV11:
		// [TOOL_CALLS]name[ARGS]{...} per call, text maybe before them;
		// [CALL_ID]id may come before [ARGS] (the model's id, which the
		// answer's replace), a later call may leave out [TOOL_CALLS], and
		// without [ARGS] (where a decoder dropped it) the arguments follow
		// the name at once.
		i := strings.Index(text, mistralCalls)
		if i < 0 {
			return text, nil
		}
		if after := strings.TrimLeft(text[i+len(mistralCalls):], " \t\r\n"); strings.HasPrefix(after, "[") {
			// the earlier format's JSON array, which such a model may
			// still write
			return splitToolCallsOf(nozzle.ToolFormatMistral, text, answerID, choice, first)
		}
		rest := text[i:]
		for {
			rest = strings.TrimLeft(rest, " \t\r\n")
			if rest == "" {
				break
			}
			rest = strings.TrimLeft(strings.TrimPrefix(rest, mistralCalls), " \t\r\n")
			n := 0
			for n < len(rest) && nameByte(rest[n]) {
				n++
			}
			name := rest[:n]
			if !validFunctionName(name) {
				return text, nil
			}
			rest = rest[n:]
			if strings.HasPrefix(rest, mistralCallID) {
				rest = rest[len(mistralCallID):]
				k := 0
				for k < len(rest) && nameByte(rest[k]) {
					k++
				}
				rest = rest[k:]
			}
			rest = strings.TrimLeft(strings.TrimPrefix(rest, mistralArgs), " \t\r\n")
			if !strings.HasPrefix(rest, "{") {
				return text, nil
			}
			dec := json.NewDecoder(strings.NewReader(rest))
			var args json.RawMessage
			if dec.Decode(&args) != nil {
				return text, nil
			}
			add(name, args)
			rest = rest[dec.InputOffset():]
		}
		pre := text[:i]
		if strings.TrimSpace(pre) == "" {
			pre = ""
		}
		return pre, calls
	}
	return text, nil
}

// hermesThoughts are the tags of the thoughts a Hermes answer may open
// with (Qwen3's, where the gateway does not part them from the answer:
// a model not reported as reasoning): a <tool_call> written there is
// thought, not a call.
var hermesThoughts = nozzle.DefaultThinkTags

// thoughtEnd returns where the answer's opening thoughts (<think> …
// </think>) end, 0 where it has none, -1 where they never close.
func thoughtEnd(text string) int {
	from := hermesThoughts.OpenEnd(text)
	if from <= 0 {
		return 0
	}
	j := strings.Index(text[from:], hermesThoughts.Close)
	if j < 0 {
		return -1
	}
	return from + j + len(hermesThoughts.Close)
}

// openArray reads a JSON array whose ']' is cut off after an element:
// '[', then values separated by ',' (and JSON space), to the end of s.
func openArray(s string) ([]json.RawMessage, bool) {
	var parts []json.RawMessage
	s = s[1:] // '['
	for {
		dec := json.NewDecoder(strings.NewReader(s))
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, false
		}
		parts = append(parts, v)
		s = strings.TrimLeft(s[dec.InputOffset():], " \t\r\n")
		if s == "" {
			return parts, true
		}
		if s[0] != ',' {
			return nil, false
		}
		s = s[1:]
	}
}

// splitCalls splits "{...}; {...}" into its objects (Llama 3 separates
// parallel calls with semicolons); false when s is not such a list.
func splitCalls(s string) ([]string, bool) {
	var parts []string
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		dec := json.NewDecoder(strings.NewReader(s))
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return nil, false
		}
		parts = append(parts, string(raw))
		s = strings.TrimLeft(s[dec.InputOffset():], " \t\r\n")
		if s == "" {
			return parts, true
		}
		if s[0] != ';' {
			return nil, false
		}
		s = s[1:]
	}
}

// callObject reads {"name": ..., <argument key>: {...}}; the arguments
// may be left out unless required.
func callObject(s string, required bool, argKeys ...string) (string, json.RawMessage, bool) {
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(strings.TrimSpace(s)), &obj) != nil {
		return "", nil, false
	}
	var name string
	if json.Unmarshal(obj["name"], &name) != nil || name == "" {
		return "", nil, false
	}
	for _, k := range argKeys {
		if a, ok := obj[k]; ok {
			if t := bytes.TrimSpace(a); len(t) > 0 && t[0] == '"' {
				// arguments given as JSON text
				var inner string
				if json.Unmarshal(t, &inner) == nil && json.Valid([]byte(inner)) {
					return name, json.RawMessage(inner), true
				}
				return "", nil, false
			}
			if t := bytes.TrimSpace(a); len(t) == 0 || t[0] != '{' {
				return "", nil, false
			}
			return name, a, true
		}
	}
	return name, nil, !required
}

// toolStream holds back, while a choice streams, the text that may be a
// tool call, so that a call goes out as tool_calls rather than as text.
type toolStream struct {
	format  string
	held    strings.Builder // text not yet sent
	calling bool            // a call has begun: everything from here is held
	started bool            // some non-space text has been seen (Llama 3 JSON, Mistral)
	think   int             // Hermes: 0 not known yet, 1 in the opening thoughts, 2 past them or none
}

// add takes the next piece of text and returns what may be sent now.
func (t *toolStream) add(text string) string {
	if t.calling {
		t.held.WriteString(text)
		return ""
	}
	t.held.WriteString(text)
	h := t.held.String()
	switch t.format {
	case nozzle.ToolFormatHermes:
		if t.think == 0 {
			switch hermesThoughts.OpenEnd(h) {
			case -1:
				return "" // undecided: it may open thoughts
			case 0:
				t.think = 2
			default:
				t.think, t.started = 1, true
			}
		}
		if t.think == 1 {
			// Thoughts go out as they come; a tail that may grow into
			// their end is held.
			if j := strings.Index(h, hermesThoughts.Close); j >= 0 {
				t.think = 2
				out := h[:j+len(hermesThoughts.Close)]
				rest := h[j+len(hermesThoughts.Close):]
				t.held.Reset()
				t.held.WriteString(rest)
				return out + t.holdFrom(rest, hermesOpen)
			}
			keep := nozzle.PartialTag(h, hermesThoughts.Close)
			t.held.Reset()
			t.held.WriteString(h[len(h)-keep:])
			return h[:len(h)-keep]
		}
		return t.holdFrom(h, hermesOpen)
	case nozzle.ToolFormatMistral:
		if !t.started {
			trimmed := strings.TrimLeft(h, " \t\r\n")
			if trimmed == "" {
				return "" // undecided: leading space is held
			}
			t.started = true
			if trimmed[0] == '[' { // the calls' array, or [TOOL_CALLS] itself
				t.calling = true
				return ""
			}
		}
		return t.holdFrom(h, mistralCalls) // the marker, where the decoder kept it
	case nozzle.ToolFormatMistralV11:
		return t.holdFrom(h, mistralCalls) // the runtime keeps the marker
	case nozzle.ToolFormatLlama3JSON:
		// the space splitToolCalls trims (strings.TrimSpace's), as the
		// runtime's masks of strict functions' calls read it
		trimmed := strings.TrimLeftFunc(h, unicode.IsSpace)
		if trimmed == "" || !t.started && !utf8.FullRuneInString(trimmed) {
			return "" // undecided: leading space (or a character begun) is held
		}
		if !t.started {
			t.started = true
			if trimmed[0] == '{' {
				t.calling = true
				return ""
			}
		}
		t.held.Reset()
		return h
	}
	t.held.Reset()
	return h
}

// holdFrom returns what of h (all the text not yet sent) may be sent now
// when a call begins with open: the text before open, which starts the
// holding of everything after; else all but a tail that may grow into it.
func (t *toolStream) holdFrom(h, open string) string {
	// Space alone before the calls is no content (as splitToolCalls has
	// it): held until text or a call follows.
	if i := strings.Index(h, open); i >= 0 {
		t.calling = true
		if !t.started && strings.TrimSpace(h[:i]) == "" {
			return "" // all held, the space with the calls
		}
		t.held.Reset()
		t.held.WriteString(h[i:])
		return h[:i]
	}
	keep := nozzle.PartialTag(h, open) // a tail that may grow into the opening tag
	out := h[:len(h)-keep]
	if !t.started {
		if strings.TrimSpace(out) == "" {
			return ""
		}
		t.started = true
	}
	t.held.Reset()
	t.held.WriteString(h[len(h)-keep:])
	return out
}

// rest returns the text held at the end of the answer.
func (t *toolStream) rest() string {
	s := t.held.String()
	t.held.Reset()
	return s
}

// appendToolCalls appends a message's "tool_calls" array; with index, as
// a stream's delta (each call whole in one delta).
func appendToolCalls(dst []byte, calls []nozzle.ToolCall, index bool) []byte {
	dst = append(dst, '[')
	for k, c := range calls {
		if k > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		if index {
			dst = append(dst, `"index":`...)
			dst = appendInt(dst, int64(k))
			dst = append(dst, ',')
		}
		dst = append(dst, `"id":`...)
		dst = appendString(dst, c.ID)
		dst = append(dst, `,"type":"function","function":{"name":`...)
		dst = appendString(dst, c.Function.Name)
		dst = append(dst, `,"arguments":`...)
		dst = appendString(dst, c.Function.Arguments)
		dst = append(dst, "}}"...)
	}
	return append(dst, ']')
}
