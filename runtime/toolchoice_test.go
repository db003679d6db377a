package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// TestQwen3_ForcedToolCall: on a Qwen3 model (Hermes tool calls, its real
// tokenizer and template) tool_choice "required" and a named function
// force one call in the template's form, its name one of the tools (the
// named one), its arguments the named function's parameters; the answer
// ends with the call. The random model calls nothing unforced.
func TestQwen3_ForcedToolCall(t *testing.T) {
	dir := qwen3Dir(t)
	rt := openOnStore(t, runtime.Options{}, dir, nil)
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// the random model: no whitespace-only tokens (it would write little
	// else), the quote raised (its strings end sooner)
	bias := map[int]float64{1: 8, 11: 6, 92: 6} // ", "," and "}"
	for id := range tk.VocabSize() {
		if b := tk.TokenBytes(id); len(b) > 0 && len(bytes.TrimSpace(b)) == 0 {
			bias[id] = -100
		}
	}
	ctx := context.Background()
	info, err := rt.Info(ctx)
	if err != nil || info.ToolFormat != nozzle.ToolFormatHermes || !info.ToolChoice {
		t.Fatalf("info %+v %v", info, err)
	}
	tools := json.RawMessage(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",` +
		`"properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city","days"],"additionalProperties":false}}},` +
		`{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"tz":{"type":"string","format":"uri"}}}}}]`)
	for _, choice := range []string{nozzle.ToolChoiceRequired, "get_weather", "get_time"} {
		req := &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather in Bern?"}},
			Tools: tools, ToolChoice: choice, MaxTokens: 2000, ChatTemplateKwargs: json.RawMessage(`{"enable_thinking": false}`),
			LogitBias: bias, Temperature: 1, Seed: new(uint64)}
		o := run(ctx, rt, req)
		if o.err != nil {
			t.Fatalf("%s: %v", choice, o.err)
		}
		body, ok := strings.CutPrefix(o.text, "<tool_call>\n")
		body, ok2 := strings.CutSuffix(body, "\n</tool_call>")
		var call struct {
			Name      string
			Arguments map[string]any
		}
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if !ok || !ok2 || dec.Decode(&call) != nil || o.res.FinishReason != nozzle.FinishStop {
			t.Fatalf("%s: not one call (finish %q): %q", choice, o.res.FinishReason, o.text)
		}
		if choice == nozzle.ToolChoiceRequired { // one of the two, its arguments the called function's
			if call.Name != "get_weather" && call.Name != "get_time" {
				t.Errorf("called %q", call.Name)
			}
			choice = call.Name
		}
		switch choice {
		case "get_weather":
			_, city := call.Arguments["city"].(string)
			days, isNum := call.Arguments["days"].(float64)
			if call.Name != choice || !city || !isNum || days != float64(int64(days)) || len(call.Arguments) != 2 {
				t.Errorf("call %+v does not follow get_weather's parameters", call)
			}
		default: // parameters the masks cannot enforce (format uri): any object
			if call.Name != choice || call.Arguments == nil {
				t.Errorf("call %+v", call)
			}
		}
		t.Logf("%s: %q", choice, o.text)
	}
}

// TestMistral_ForcedToolCall: Mistral's v3 form of a forced call — the
// control token [TOOL_CALLS] drawn alone first, then " [" the calls "]"
// (the decoder leaves the token out of the text) —
// on a Llama-shaped random model with Llama 2's tokenizer (plus that
// token, as Mistral's vocabulary has it) and Mistral's v3 tool template;
// a vocabulary without the token writes the array alone.
func TestMistral_ForcedToolCall(t *testing.T) {
	for _, withToken := range []bool{true, false} {
		dir := mistralDir(t, withToken, false)
		rt := openOnStore(t, runtime.Options{}, dir, nil)
		info, err := rt.Info(context.Background())
		if err != nil || info.ToolFormat != nozzle.ToolFormatMistral || !info.ToolChoice {
			t.Fatalf("info %+v %v", info, err)
		}
		quote, _ := rt.TokenID(`"`)
		closeArr, _ := rt.TokenID(`]`)
		for _, choice := range []string{"get_weather", nozzle.ToolChoiceRequired} {
			o := run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather in Bern?"}},
				Tools: mistralTools, ToolChoice: choice, MaxTokens: 1500, Logprobs: true, LogitBias: map[int]float64{quote: 6, closeArr: 6}, Temperature: 1, Seed: new(uint64)})
			var calls []struct {
				Name      string
				Arguments map[string]any
			}
			dec := json.NewDecoder(strings.NewReader(o.text))
			dec.DisallowUnknownFields()
			if o.err != nil || dec.Decode(&calls) != nil || o.res.FinishReason != nozzle.FinishStop || len(calls) == 0 ||
				choice != nozzle.ToolChoiceRequired && (len(calls) != 1 || calls[0].Name != choice) {
				t.Fatalf("token %v, %s: not the calls (finish %q, %v): %q", withToken, choice, o.res.FinishReason, o.err, o.text)
			}
			for _, c := range calls {
				_, city := c.Arguments["city"].(string)
				_, zone := c.Arguments["zone"].(string)
				if c.Name == "get_weather" && (!city || len(c.Arguments) != 2) || c.Name == "get_time" && (!zone || len(c.Arguments) != 1) {
					t.Errorf("token %v: call %+v does not follow its parameters", withToken, c)
				}
			}
			first := o.chunks[0].Logprobs
			if withToken != (len(first) > 0 && first[0].Token == "[TOOL_CALLS]") {
				t.Errorf("token %v: the answer begins %q, first token %+v", withToken, o.text[:min(len(o.text), 8)], first)
			}
			t.Logf("token %v, %s: %q", withToken, choice, o.text)
		}
	}
}

// mistralTools are two functions for the Mistral-shaped models' calls.
var mistralTools = json.RawMessage(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",` +
	`"properties":{"city":{"type":"string"},"unit":{"enum":["C","F"]}},"required":["city","unit"]}}},` +
	`{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string"}},"required":["zone"]}}}]`)

// mistralDir writes a Llama-shaped random model with Llama 2's tokenizer
// and Mistral's v3 tool template, plus the control tokens [TOOL_CALLS]
// (withCalls) and [ARGS] (withArgs: then the template's calls read as
// v11's, [TOOL_CALLS]name[ARGS]{…}), as Mistral's vocabularies have them.
func mistralDir(t *testing.T, withCalls, withArgs bool) string {
	t.Helper()
	dir := t.TempDir()
	vocab := 32000
	var tj map[string]any
	if err := json.Unmarshal(tokenizerTestdata(t, "models/llama2/tokenizer.json.gz"), &tj); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		text string
		on   bool
	}{{"[TOOL_CALLS]", withCalls}, {"[ARGS]", withArgs}} {
		if c.on {
			tj["added_tokens"] = append(tj["added_tokens"].([]any), map[string]any{"id": vocab, "content": c.text,
				"single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
			vocab++
		}
	}
	spec := model.Spec{VocabSize: vocab, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
		MaxPosition: 4096, Seed: 81, EOSTokenIDs: []int{2}, BOSTokenID: 1}
	if err := model.WriteRandomModel(dir, spec); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(tj)
	writeFiles(t, dir, map[string][]byte{"tokenizer.json": b,
		"tokenizer_config.json": tokenizerTestdata(t, "models/llama2/tokenizer_config.json"),
		"chat_template.jinja":   tokenizerTestdata(t, "templates/mistral-v3-tools.jinja")})
	return dir
}

// TestMistralV11_ForcedToolCall: Mistral v11's form of a forced call —
// [TOOL_CALLS] name [ARGS] {arguments}, the control tokens drawn alone,
// the arguments those of the function the name chose — on the model of
// mistralDir with both tokens; without [TOOL_CALLS] such a model is not
// offered forced calls.
func TestMistralV11_ForcedToolCall(t *testing.T) {
	rt := openOnStore(t, runtime.Options{}, mistralDir(t, true, true), nil)
	info, err := rt.Info(context.Background())
	if err != nil || info.ToolFormat != nozzle.ToolFormatMistralV11 || !info.ToolChoice {
		t.Fatalf("info %+v %v", info, err)
	}
	quote, _ := rt.TokenID(`"`)
	for i, choice := range []string{"get_weather", "get_time", nozzle.ToolChoiceRequired, nozzle.ToolChoiceRequired} {
		seed := uint64(i)
		o := run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather in Bern?"}},
			Tools: mistralTools, ToolChoice: choice, MaxTokens: 1500, LogitBias: map[int]float64{quote: 6}, Temperature: 1, Seed: &seed})
		rest, ok := strings.CutPrefix(o.text, "[TOOL_CALLS]")
		name, args, ok2 := strings.Cut(rest, "[ARGS]")
		var a map[string]any
		dec := json.NewDecoder(strings.NewReader(args))
		dec.DisallowUnknownFields()
		if o.err != nil || !ok || !ok2 || dec.Decode(&a) != nil || o.res.FinishReason != nozzle.FinishStop ||
			choice != nozzle.ToolChoiceRequired && name != choice {
			t.Fatalf("%s: not the call (finish %q, %v): %q", choice, o.res.FinishReason, o.err, o.text)
		}
		_, city := a["city"].(string)
		_, zone := a["zone"].(string)
		if name == "get_weather" && (!city || len(a) != 2) || name == "get_time" && (!zone || len(a) != 1) || name != "get_weather" && name != "get_time" {
			t.Errorf("%s: call %s%v does not follow its parameters", choice, name, a)
		}
		t.Logf("%s: %q", choice, o.text)
	}
	noCalls := openOnStore(t, runtime.Options{}, mistralDir(t, false, true), nil)
	if info, err := noCalls.Info(context.Background()); err != nil || info.ToolFormat != nozzle.ToolFormatMistralV11 || info.ToolChoice {
		t.Errorf("without [TOOL_CALLS]: info %+v %v", info, err)
	}
}

// TestLlama3_ForcedToolCall: Llama 3's form of a forced call — the whole
// answer {"name": …, "parameters": …} — on a Llama-shaped random model
// with Llama 3's real tokenizer and Llama 3.2's chat template (the
// tokenizer tests' copies).
func TestLlama3_ForcedToolCall(t *testing.T) {
	rt := openOnStore(t, runtime.Options{}, llama3Dir(t), nil)
	info, err := rt.Info(context.Background())
	if err != nil || info.ToolFormat != nozzle.ToolFormatLlama3JSON || !info.ToolChoice {
		t.Fatalf("info %+v %v", info, err)
	}
	tools := json.RawMessage(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",` +
		`"properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["C","F"]}},"required":["city","unit"]}}}]`)
	o := run(context.Background(), rt, &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather in Bern?"}},
		Tools: tools, ToolChoice: "get_weather", MaxTokens: 200, LogitBias: map[int]float64{1: 8}})
	var call struct {
		Name       string
		Parameters struct {
			City *string
			Unit *string
		}
	}
	dec := json.NewDecoder(strings.NewReader(o.text))
	dec.DisallowUnknownFields()
	if o.err != nil || dec.Decode(&call) != nil || o.res.FinishReason != nozzle.FinishStop || call.Name != "get_weather" ||
		call.Parameters.City == nil || len([]rune(*call.Parameters.City)) > 12 || call.Parameters.Unit == nil {
		t.Fatalf("not the call (finish %q, %v): %q", o.res.FinishReason, o.err, o.text)
	}
	t.Logf("%q", o.text)
}

// llama3Dir writes a small random Llama-shaped model with Llama 3's real
// tokenizer and Llama 3.2's chat template (the tokenizer tests' copies)
// into a folder.
func llama3Dir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	spec := model.Spec{VocabSize: 128256, HiddenSize: 32, IntermediateSize: 64, NumLayers: 2, NumHeads: 4, NumKVHeads: 2,
		MaxPosition: 4096, Seed: 79, EOSTokenIDs: []int{128001, 128009}, BOSTokenID: 128000}
	if err := model.WriteRandomModel(dir, spec); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string][]byte{"tokenizer.json": tokenizerTestdata(t, "models/llama3/tokenizer.json.gz"),
		"tokenizer_config.json": tokenizerTestdata(t, "models/llama3/tokenizer_config.json"),
		"chat_template.jinja":   tokenizerTestdata(t, "templates/llama3.2-instruct.jinja")})
	return dir
}
