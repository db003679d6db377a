package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/grammar"
)

// A forced tool call (GenerateRequest.ToolChoice): the answer is one call,
// in the form the model's chat template teaches, of one of the request's
// tools (ToolChoiceRequired) or of the one named, written under the same
// token masks as a response format's.
//
//   - Hermes (Qwen2.5, Qwen3): "<tool_call>\n" {"name": …, "arguments": …}
//     "\n</tool_call>", the form Qwen's templates show the model;
//   - Llama 3 JSON: the whole answer {"name": …, "parameters": …};
//   - Mistral's v3 format: the control token [TOOL_CALLS] (forced alone,
//     where the vocabulary has it), then " [" the calls "]", a JSON array
//     of {"name": …, "arguments": …}, one for a named function or where
//     the request allows one call (GenerateRequest.OneCall).
//
// The arguments follow the called function's parameters where they
// compile (grammar.CompileSchema), otherwise they are any JSON object;
// with several functions ("required") the call is one of them, told apart
// by its name (a union of the calls), whose arguments follow.
//   - Mistral v11 (Mistral Small 3.1 and on, Magistral, Devstral):
//     [TOOL_CALLS] name [ARGS] {arguments}, the two control tokens drawn
//     alone, the name one of the functions', the arguments that
//     function's; offered where the vocabulary has both tokens.

// callForm is how a tool format writes a forced call: the control token
// lead (its text; "" for none), then pre, the call object whose arguments
// are under argsKey (in a JSON array with array), then post.
type callForm struct {
	lead, pre, post, argsKey string
	array                    bool
	// mid, with lead, is the control token between a call's name and its
	// arguments (Mistral v11: [TOOL_CALLS]name[ARGS]{…}; mistralV11Call)
	mid string
}

// toolCallForm is how format writes a forced call; ok false: the
// format's calls cannot be forced (ModelInfo.ToolChoice).
func toolCallForm(format string) (f callForm, ok bool) {
	switch format {
	case nozzle.ToolFormatHermes:
		return callForm{pre: "<tool_call>\n", post: "\n</tool_call>", argsKey: "arguments"}, true
	case nozzle.ToolFormatLlama3JSON:
		return callForm{argsKey: "parameters"}, true
	case nozzle.ToolFormatMistral:
		return callForm{lead: "[TOOL_CALLS]", pre: " ", argsKey: "arguments", array: true}, true
	case nozzle.ToolFormatMistralV11:
		return callForm{lead: "[TOOL_CALLS]", mid: "[ARGS]"}, true
	}
	return callForm{}, false
}

// toolCallConstraint returns the constraint of req's forced call, and the
// control token to force before it (-1 for none).
func (r *Runtime) toolCallConstraint(req *nozzle.GenerateRequest) (constraint, int, error) {
	f, ok := toolCallForm(r.info.ToolFormat)
	if !ok {
		return nil, -1, nozzle.Errorf(nozzle.EINVALID, "This model's tool calls cannot be forced: use 'tool_choice' \"auto\".").WithParam("tool_choice")
	}
	pre, post := f.pre, f.post
	schema, fallback, err := toolCallSchema(req.Tools, req.ToolChoice, f.argsKey, r.enforceable)
	if err != nil {
		return nil, -1, err
	}
	if f.array { // calls in an array: one of a named function, or where one call is allowed
		most := ""
		if req.ToolChoice != nozzle.ToolChoiceRequired || req.OneCall {
			most = `,"maxItems":1`
		}
		schema = fmt.Appendf(nil, `{"type":"array","minItems":1%s,"items":%s}`, most, schema)
		fallback = fmt.Appendf(nil, `{"type":"array","minItems":1%s,"items":%s}`, most, fallback)
	}
	lead := -1
	if f.lead != "" {
		if lead = r.callsToken; lead < 0 {
			pre = "" // a vocabulary without the token: the calls alone
		}
	}
	src := append([]byte(pre+"\x00"+post+"\x00"), schema...)
	e, err := r.toolCalls.get(r.grammarVocab(), src, func() (grammar.Framed, error) {
		inner, err := grammar.CompileSchema(schema)
		if err != nil {
			// parameters it cannot enforce: any object for the arguments
			if inner, err = grammar.CompileSchema(fallback); err != nil {
				return grammar.Framed{}, err
			}
		}
		return grammar.Frame(pre, inner, post), nil
	})
	if err != nil {
		return nil, -1, nozzle.Errorf(nozzle.EINVALID, "The tools cannot be forced: %v.", err).WithParam("tools")
	}
	return e.constraint(), lead, nil
}

// forcedTool is a function a forced call may call: its name and its
// parameters' schema, any object where the masks cannot enforce them.
type forcedTool struct {
	name string
	args json.RawMessage
}

// anyObject is the schema of arguments left free.
var anyObject = json.RawMessage(`{"type":"object"}`)

// enforceable reports whether the masks can hold arguments to schema p:
// it compiles, into the runtime's cache of schemas (an application sends
// the same tools request after request; each compiles once).
func (r *Runtime) enforceable(p json.RawMessage) bool {
	_, err := r.schemas.get(r.grammarVocab(), p, func() (grammar.Schema, error) { return grammar.CompileSchema(p) })
	return err == nil
}

// forcedTools returns the functions of tools (an OpenAI tools array) a
// call forced by choice may call: all of them (ToolChoiceRequired) or the
// one it names, their parameters where enforceable says the masks hold
// them.
func forcedTools(tools json.RawMessage, choice string, enforceable func(json.RawMessage) bool) ([]forcedTool, error) {
	var defs []struct {
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(tools, &defs); err != nil || len(defs) == 0 {
		return nil, nozzle.Errorf(nozzle.EINVALID, "A forced tool call needs tools.").WithParam("tools")
	}
	var out []forcedTool
	for _, d := range defs {
		if choice != nozzle.ToolChoiceRequired && d.Function.Name != choice {
			continue
		}
		args := d.Function.Parameters
		if len(args) == 0 || string(args) == "null" {
			args = anyObject
		} else if !enforceable(args) {
			args = anyObject // parameters the masks cannot enforce
		}
		out = append(out, forcedTool{d.Function.Name, args})
	}
	if len(out) == 0 {
		return nil, nozzle.Errorf(nozzle.EINVALID, "'tool_choice' names %q, which is none of the tools.", choice).WithParam("tool_choice")
	}
	return out, nil
}

// toolCallSchema is the JSON Schema of one call of tools (an OpenAI tools
// array): one of theirs (or choice's, when choice names one), its name
// first, then its arguments under argsKey following the function's
// parameters where the masks can enforce them — a union of the calls
// when several may come —; and fallback, the same with any object for
// every function's arguments, for tools whose union cannot be compiled.
func toolCallSchema(tools json.RawMessage, choice, argsKey string, enforceable func(json.RawMessage) bool) (schema, fallback []byte, err error) {
	fns, err := forcedTools(tools, choice, enforceable)
	if err != nil {
		return nil, nil, err
	}
	k, _ := json.Marshal(argsKey)
	call := func(name any, args json.RawMessage) []byte {
		n, _ := json.Marshal(name)
		return fmt.Appendf(nil, `{"type":"object","properties":{"name":%s,%s:%s},"required":["name",%s],"additionalProperties":false}`, n, k, args, k)
	}
	var names []string
	var calls [][]byte
	for _, f := range fns {
		names = append(names, f.name)
		calls = append(calls, call(map[string]string{"const": f.name}, f.args))
	}
	fallback = call(map[string][]string{"enum": names}, anyObject)
	if len(calls) == 1 {
		return calls[0], fallback, nil
	}
	schema = append([]byte(`{"anyOf":[`), bytes.Join(calls, []byte(","))...)
	return append(schema, "]}"...), fallback, nil
}

// mistralV11Call returns the parts of a forced call in Mistral v11's form,
// [TOOL_CALLS] name [ARGS] {arguments}: the constraint of the name (one
// of the functions'), and the constraint of the arguments the name read
// chooses. The control tokens come from the seqGrammar's lead and mid.
func (r *Runtime) mistralV11Call(req *nozzle.GenerateRequest) (name constraint, args func(name []byte) (constraint, error), err error) {
	fns, err := forcedTools(req.Tools, req.ToolChoice, r.enforceable)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	for _, f := range fns {
		for _, n := range names {
			if strings.HasPrefix(f.name, n) || strings.HasPrefix(n, f.name) {
				return nil, nil, nozzle.Errorf(nozzle.EINVALID, "This model's calls cannot be forced among functions whose names begin alike (%q, %q).", n, f.name).WithParam("tools")
			}
		}
		names = append(names, f.name)
	}
	pattern, _ := json.Marshal(nozzle.ChoicePattern(names))
	e, err := r.regexes.get(r.grammarVocab(), pattern, func() (grammar.Regex, error) {
		return grammar.CompileRegex(nozzle.ChoicePattern(names))
	})
	if err != nil {
		return nil, nil, nozzle.Errorf(nozzle.EINVALID, "The tools cannot be forced: %v.", err).WithParam("tools")
	}
	args = func(name []byte) (constraint, error) {
		for _, f := range fns {
			if f.name == string(name) {
				e, err := r.schemas.get(r.grammarVocab(), f.args, func() (grammar.Schema, error) { return grammar.CompileSchema(f.args) })
				if err != nil {
					return nil, err
				}
				return e.constraint(), nil
			}
		}
		return nil, fmt.Errorf("no function %q", name)
	}
	return e.constraint(), args, nil
}
