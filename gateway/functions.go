package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/nozzle-ai/nozzle"
)

// OpenAI's legacy function calling, which its API still serves and older
// clients still send: a chat request's functions ({name, description,
// parameters}) and function_call ("none", "auto" or {"name": …}), an
// assistant message's function_call ({name, arguments}) and messages of
// role "function" (name, content). They are read into the tools path —
// the functions as function tools, function_call as tool_choice, an
// earlier call as the assistant's one tool call and a function's result
// as the tool message answering it — and a request that offered
// functions is answered in their shape: the first of the choice's calls
// as message.function_call (streamed: delta.function_call, the name,
// then the arguments), finish_reason "function_call".

// parseFunctions checks a request's legacy functions and function_call
// as parseTools checks tools and tool_choice, naming the legacy
// parameters in its refusals, and returns the tools to render (nil when
// none are to be offered) and the call to force ("" or a function's
// name).
func parseFunctions(raw, choice json.RawMessage) (json.RawMessage, string, error) {
	mode, force := "auto", ""
	if !isNull(choice) {
		var s string
		var named struct {
			Name *string `json:"name"`
		}
		switch {
		case json.Unmarshal(choice, &s) == nil:
			if s != "none" && s != "auto" {
				return nil, "", invalidAs("invalid_value", "function_call", "Invalid value for 'function_call': %q; use \"none\", \"auto\" or {\"name\": …}.", s)
			}
			mode = s
		case json.Unmarshal(choice, &named) == nil && named.Name != nil:
			force = *named.Name
		default:
			return nil, "", invalidAs("invalid_value", "function_call", "Invalid 'function_call': expected \"none\", \"auto\" or {\"name\": …}.")
		}
	}
	n, _, _, isArray := scanArray(raw)
	if isNull(raw) || isArray && n == 0 {
		if force != "" {
			return nil, "", invalidAs("invalid_value", "function_call", "Invalid value for 'function_call': 'function_call' is only allowed when 'functions' are specified.")
		}
		return nil, "", nil
	}
	// Counted before decoding, as tools are.
	if n > maxToolCalls {
		return nil, "", arrayTooLong("functions", maxToolCalls, n)
	}
	var items []json.RawMessage
	if !isArray || json.Unmarshal(raw, &items) != nil {
		return nil, "", invalidAs("invalid_type", "functions", "Invalid type for 'functions': expected an array of objects.")
	}
	seen := map[string]bool{}
	tools := []byte{'['}
	for i, item := range items {
		at := fmt.Sprintf("functions[%d]", i)
		var f functionDef
		if t := bytes.TrimSpace(item); len(t) == 0 || t[0] != '{' || json.Unmarshal(item, &f) != nil {
			return nil, "", invalidAs("invalid_type", at, "Invalid type for '%s': expected an object.", at)
		}
		if err := f.check(at, "functions", seen); err != nil {
			return nil, "", err
		}
		if i > 0 {
			tools = append(tools, ',')
		}
		tools = append(tools, `{"type":"function","function":`...)
		var compact bytes.Buffer
		if err := json.Compact(&compact, item); err != nil {
			return nil, "", invalidAs("invalid_type", at, "Invalid type for '%s': expected an object.", at)
		}
		tools = append(tools, compact.Bytes()...)
		tools = append(tools, '}')
	}
	tools = append(tools, ']')
	if force != "" && !seen[force] {
		return nil, "", invalidAs("invalid_value", "function_call.name", "Invalid 'function_call': no function named %q in 'functions'.", force)
	}
	if mode == "none" {
		return nil, "", nil // the model answers without them
	}
	return tools, force, nil
}

// functionCallIn is the legacy function_call of an assistant message in
// the request.
type functionCallIn struct {
	Name      *string         `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
}

// parseFunctionCallIn reads messages[i].function_call as the message's
// one tool call, under the id functionCallID(i).
func parseFunctionCallIn(raw json.RawMessage, i int) (nozzle.ToolCall, error) {
	at := fmt.Sprintf("messages[%d].function_call", i)
	var c functionCallIn
	if t := bytes.TrimSpace(raw); t[0] != '{' || json.Unmarshal(raw, &c) != nil {
		return nozzle.ToolCall{}, invalidAs("invalid_type", at, "Invalid type for '%s': expected an object with a 'name' and 'arguments'.", at)
	}
	switch {
	case c.Name == nil:
		return nozzle.ToolCall{}, invalidAs("missing_required_parameter", at+".name", "Missing required parameter: '%s.name'.", at)
	case isNull(c.Arguments):
		return nozzle.ToolCall{}, invalidAs("missing_required_parameter", at+".arguments", "Missing required parameter: '%s.arguments'.", at)
	}
	var args string
	if json.Unmarshal(c.Arguments, &args) != nil {
		return nozzle.ToolCall{}, invalidAs("invalid_type", at+".arguments", "Invalid type for '%s.arguments': expected a string (the arguments as JSON).", at)
	}
	return nozzle.ToolCall{ID: functionCallID(i), Type: "function", Function: nozzle.FunctionCall{Name: *c.Name, Arguments: args}}, nil
}

// functionCallID is the id given to the legacy function_call of message
// i, and to the function message answering it, which chat templates that
// pair calls and results by id need: 9 letters and digits, the only form
// Mistral's templates take, which the others take as well.
func functionCallID(i int) string { return fmt.Sprintf("call%05d", i) }

// appendFunctionCall appends a legacy message's "function_call" object.
func appendFunctionCall(dst []byte, c nozzle.FunctionCall) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, c.Name)
	dst = append(dst, `,"arguments":`...)
	dst = appendString(dst, c.Arguments)
	return append(dst, '}')
}

// functionCallChunks appends the events of a streamed chat choice's
// legacy function call, as OpenAI streams one: the name (and empty
// arguments) in one delta, the arguments in the next.
func (cp *completion) functionCallChunks(dst []byte, i int, c nozzle.FunctionCall) []byte {
	j := cp.j
	for _, part := range [...]struct{ name, args string }{{c.Name, ""}, {"", c.Arguments}} {
		dst = append(dst, "data: "...)
		dst = appendHead(dst, j.id, "chat.completion.chunk", j.created, j.shownModel, j.fingerprint)
		dst = append(dst, `,"choices":[{"index":`...)
		dst = appendInt(dst, int64(i))
		dst = append(dst, `,"delta":{"function_call":{`...)
		if part.name != "" {
			dst = append(dst, `"name":`...)
			dst = appendString(dst, part.name)
			dst = append(dst, ',')
		}
		dst = append(dst, `"arguments":`...)
		dst = appendString(dst, part.args)
		dst = append(dst, `}},"logprobs":null,"finish_reason":null}]`...)
		if j.includeUsage {
			dst = append(dst, `,"usage":null`...)
		}
		dst = append(dst, "}\n\n"...)
	}
	return dst
}
