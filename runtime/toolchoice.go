package runtime

import (
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
//   - Llama 3 JSON: the whole answer {"name": …, "parameters": …}.
//
// The arguments follow the function's parameters where a single function
// is forced and its schema compiles (grammar.CompileSchema); otherwise
// they are any JSON object. Mistral's formats begin with a control token
// the masks cannot force: their models are not offered it
// (ModelInfo.ToolChoice false).

// toolCallForm is how a tool format writes one call as text: pre, the
// call object whose arguments are under argsKey, post. ok false: the
// format's calls cannot be forced (ModelInfo.ToolChoice).
func toolCallForm(format string) (pre, post, argsKey string, ok bool) {
	switch format {
	case nozzle.ToolFormatHermes:
		return "<tool_call>\n", "\n</tool_call>", "arguments", true
	case nozzle.ToolFormatLlama3JSON:
		return "", "", "parameters", true
	}
	return "", "", "", false
}

// toolCallConstraint returns the constraint of req's forced call.
func (r *Runtime) toolCallConstraint(req *nozzle.GenerateRequest) (constraint, error) {
	pre, post, argsKey, ok := toolCallForm(r.info.ToolFormat)
	if !ok {
		return nil, nozzle.Errorf(nozzle.EINVALID, "This model's tool calls cannot be forced: use 'tool_choice' \"auto\".").WithParam("tool_choice")
	}
	schema, fallback, err := toolCallSchema(req.Tools, req.ToolChoice, argsKey)
	if err != nil {
		return nil, err
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
		return nil, nozzle.Errorf(nozzle.EINVALID, "The tools cannot be forced: %v.", err).WithParam("tools")
	}
	return e.constraint(), nil
}

// toolCallSchema is the JSON Schema of one call of tools (an OpenAI tools
// array): its name one of theirs (or choice's, when choice names one) and
// its arguments under argsKey — the function's parameters when one
// function is forced and it has them — and the same with any object for
// the arguments, for parameters the masks cannot enforce.
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
	var names []string
	args := json.RawMessage(`{"type":"object"}`)
	for _, d := range defs {
		switch {
		case choice == nozzle.ToolChoiceRequired:
			names = append(names, d.Function.Name)
		case d.Function.Name == choice:
			names = append(names, choice)
			if p := d.Function.Parameters; len(p) > 0 && string(p) != "null" {
				args = p
			}
		}
	}
	if len(names) == 0 {
		return nil, nil, nozzle.Errorf(nozzle.EINVALID, "'tool_choice' names %q, which is none of the tools.", choice).WithParam("tool_choice")
	}
	enc := func(args json.RawMessage) []byte {
		n, _ := json.Marshal(names)
		k, _ := json.Marshal(argsKey)
		return fmt.Appendf(nil, `{"type":"object","properties":{"name":{"enum":%s},%s:%s},"required":["name",%s],"additionalProperties":false}`, n, k, args, k)
	}
	return enc(args), enc(json.RawMessage(`{"type":"object"}`)), nil
}
