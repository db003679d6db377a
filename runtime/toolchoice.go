package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"

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
//     of {"name": …, "arguments": …}, one for a named function.
//
// The arguments follow the called function's parameters where they
// compile (grammar.CompileSchema), otherwise they are any JSON object;
// with several functions ("required") the call is one of them, told apart
// by its name (a union of the calls), whose arguments follow. Mistral
// v11's form ([TOOL_CALLS]name[ARGS]{…}) puts control tokens between a
// call's parts: its models are not offered forced calls
// (ModelInfo.ToolChoice false).

// callForm is how a tool format writes a forced call: the control token
// lead (its text; "" for none), then pre, the call object whose arguments
// are under argsKey (in a JSON array with array), then post.
type callForm struct {
	lead, pre, post, argsKey string
	array                    bool
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
	schema, fallback, err := toolCallSchema(req.Tools, req.ToolChoice, f.argsKey)
	if err != nil {
		return nil, -1, err
	}
	if f.array { // calls in an array: one of a named function
		most := ""
		if req.ToolChoice != nozzle.ToolChoiceRequired {
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

// toolCallSchema is the JSON Schema of one call of tools (an OpenAI tools
// array): one of theirs (or choice's, when choice names one), its name
// first, then its arguments under argsKey following the function's
// parameters where the masks can enforce them — a union of the calls
// when several may come —; and fallback, the same with any object for
// every function's arguments, for tools whose union cannot be compiled.
func toolCallSchema(tools json.RawMessage, choice, argsKey string) (schema, fallback []byte, err error) {
	var defs []struct {
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(tools, &defs); err != nil || len(defs) == 0 {
		return nil, nil, nozzle.Errorf(nozzle.EINVALID, "A forced tool call needs tools.").WithParam("tools")
	}
	anyObject := json.RawMessage(`{"type":"object"}`)
	k, _ := json.Marshal(argsKey)
	call := func(name any, args json.RawMessage) []byte {
		n, _ := json.Marshal(name)
		return fmt.Appendf(nil, `{"type":"object","properties":{"name":%s,%s:%s},"required":["name",%s],"additionalProperties":false}`, n, k, args, k)
	}
	var names []string
	var calls [][]byte
	for _, d := range defs {
		if choice != nozzle.ToolChoiceRequired && d.Function.Name != choice {
			continue
		}
		args := d.Function.Parameters
		if len(args) == 0 || string(args) == "null" {
			args = anyObject
		} else if _, err := grammar.CompileSchema(args); err != nil {
			args = anyObject // parameters the masks cannot enforce
		}
		names = append(names, d.Function.Name)
		calls = append(calls, call(map[string]string{"const": d.Function.Name}, args))
	}
	if len(names) == 0 {
		return nil, nil, nozzle.Errorf(nozzle.EINVALID, "'tool_choice' names %q, which is none of the tools.", choice).WithParam("tool_choice")
	}
	fallback = call(map[string][]string{"enum": names}, anyObject)
	if len(calls) == 1 {
		return calls[0], fallback, nil
	}
	schema = append([]byte(`{"anyOf":[`), bytes.Join(calls, []byte(","))...)
	return append(schema, "]}"...), fallback, nil
}
