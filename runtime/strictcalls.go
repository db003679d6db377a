package runtime

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/grammar"
)

// Strict functions with tool_choice "auto" (OpenAI's "strict": true): the
// model writes what it likes, but a call it begins is held to its form.
// On a Hermes model (Qwen2.5, Qwen3), once the answer writes <tool_call>,
// what follows is "\n" {"name": N, "arguments": A} "\n</tool_call>", N one
// of the tools' names, A the function's parameters where it is strict
// (any JSON object where it is not); after a call only whitespace and
// further calls may come, so that the answer reads as calls
// (gateway/tools.go takes text after the calls for content, calls and
// all). On a Llama 3.1–3.3 model (ToolFormatLlama3JSON), whose calls are
// the whole answer, an answer whose first byte past whitespace (what
// strings.TrimSpace trims, as the gateway trims the answer) is '{' is
// calls, {"name": N, "parameters": A} each, separated by ';' and
// whitespace; one that begins otherwise is free text to its end. Mistral's
// calls begin with the control token [TOOL_CALLS], which has no bytes in
// the masks' vocabulary: it is a mark (grammar.Marker, the vocabulary's
// marks [TOOL_CALLS] and [ARGS]), allowed by the masks where the calls
// may begin and fed to the machine as a mark when drawn (seqGrammar.marks),
// and its text is never written as text. On a v11 model
// (ToolFormatMistralV11: Mistral Small 3.1 and on, Magistral, Devstral)
// the text is free until [TOOL_CALLS]; then a function's name, [ARGS]
// where the bytes so far are a whole name (names that begin alike are
// told apart where it comes), its arguments, and after them whitespace,
// the end or the next [TOOL_CALLS] call. On a v3 model (ToolFormatMistral:
// Mistral 7B v0.3, Mistral-Nemo), whose decoder leaves the token out of
// the text, [TOOL_CALLS] may only come first (after ' ', '\t', '\r' or
// '\n', which the gateway trims and its stream passes over), then
// [{"name": N, "arguments": A}, …] and whitespace to the end; an answer
// that begins otherwise is free text to its end. A vocabulary without the
// control tokens leaves the calls unconstrained. A reasoning model's
// thoughts are free, those its prompt opened and those it opens itself
// (seqGrammar.think): its calls are the answer's. Other formats, and
// tools none of them strict, are unconstrained.

// strictCallsConstraint returns the constraint of the calls req's model
// may make, nil where none of req's tools is strict or its tool format is
// none of Hermes', Llama 3's JSON and Mistral's (or the vocabulary lacks
// Mistral's control tokens). A strict function whose parameters the masks
// cannot enforce is an EINVALID error naming tools, as OpenAI refuses
// them.
func (r *Runtime) strictCallsConstraint(req *nozzle.GenerateRequest) (constraint, error) {
	var calls grammar.Calls
	switch r.info.ToolFormat {
	case nozzle.ToolFormatHermes:
		hermes, _ := toolCallForm(nozzle.ToolFormatHermes)
		tag := strings.TrimRight(hermes.pre, " \n") // "<tool_call>": the "\n" after it is the call's
		calls = grammar.Calls{Tag: tag, Pre: hermes.pre[len(tag):], Post: hermes.post, ArgsKey: hermes.argsKey, Only: true}
	case nozzle.ToolFormatLlama3JSON:
		llama, _ := toolCallForm(nozzle.ToolFormatLlama3JSON)
		calls = grammar.Calls{ArgsKey: llama.argsKey, Lead: true, Only: true, Sep: ";"}
	case nozzle.ToolFormatMistral:
		if r.callsToken < 0 {
			return nil, nil // a vocabulary without the control token: no calls to hold
		}
		v3, _ := toolCallForm(nozzle.ToolFormatMistral)
		calls = grammar.Calls{Tag: v3.lead, ArgsKey: v3.argsKey, Mark: true, Lead: true, Array: true, Only: true}
	case nozzle.ToolFormatMistralV11:
		if r.callsToken < 0 || r.argsToken < 0 {
			return nil, nil // a vocabulary without the control tokens: no calls to hold
		}
		v11, _ := toolCallForm(nozzle.ToolFormatMistralV11)
		calls = grammar.Calls{Tag: v11.lead, Mark: true, Bare: true, Only: true}
	default:
		return nil, nil
	}
	var defs []struct {
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
			Strict     json.RawMessage `json:"strict"`
		} `json:"function"`
	}
	if json.Unmarshal(req.Tools, &defs) != nil {
		return nil, nil // the template's to refuse
	}
	strict := false
	for _, d := range defs {
		strict = strict || isTrue(d.Function.Strict)
	}
	if !strict {
		return nil, nil
	}
	// (one runtime, one format: the tools tell the languages apart)
	e, err := r.strictCalls.get(r.grammarVocab(), req.Tools, func() (grammar.Triggered, error) {
		anyObject, err := grammar.CompileSchema([]byte(`{"type":"object"}`))
		if err != nil {
			return grammar.Triggered{}, err
		}
		for _, d := range defs {
			f := d.Function
			args := anyObject
			if p := f.Parameters; isTrue(f.Strict) && len(p) > 0 && string(p) != "null" {
				// arguments are an object (the gateway reads no other)
				var top struct{ Type json.RawMessage }
				if json.Unmarshal(p, &top) != nil || string(top.Type) != `"object"` {
					return grammar.Triggered{}, nozzle.Errorf(nozzle.EINVALID,
						"Invalid 'tools': function %q is strict, and its parameters are not a schema of type \"object\".", f.Name).WithParam("tools")
				}
				if args, err = grammar.CompileSchema(p); err != nil {
					return grammar.Triggered{}, nozzle.Errorf(nozzle.EINVALID,
						"Invalid 'tools': function %q is strict, and its parameters cannot be enforced: %v.", f.Name, err).WithParam("tools")
				}
			}
			calls.Tools = append(calls.Tools, grammar.Tool{Name: f.Name, Args: args})
		}
		return grammar.Trigger(calls)
	})
	if err != nil {
		if ne := (*nozzle.Error)(nil); errors.As(err, &ne) {
			return nil, err
		}
		return nil, nozzle.Errorf(nozzle.EINVALID, "Invalid 'tools': %v.", err).WithParam("tools")
	}
	return e.constraint(), nil
}

// isTrue reports whether a JSON value is true.
func isTrue(v json.RawMessage) bool { return strings.TrimSpace(string(v)) == "true" }
