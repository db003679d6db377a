package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// strictTools: two strict functions whose arguments the random model can
// finish (bounded strings and numbers, enums) and, unless nonStrict, their
// strict flags set.
func strictTools(strict bool) json.RawMessage {
	s := `,"strict":true`
	if !strict {
		s = ``
	}
	return json.RawMessage(`[{"type":"function","function":{"name":"get_weather"` + s + `,"parameters":{"type":"object",` +
		`"properties":{"city":{"type":"string","maxLength":12},"days":{"type":"integer","minimum":1,"maximum":14},"unit":{"enum":["C","F"]}},` +
		`"required":["city","days","unit"],"additionalProperties":false}}},` +
		`{"type":"function","function":{"name":"get_time"` + s + `,"parameters":{"type":"object","properties":{"zone":{"enum":["UTC","CET"]}},` +
		`"required":["zone"],"additionalProperties":false}}}]`)
}

// strictBias is TestQwen3_ForcedToolCall's bias with <tool_call> raised
// (the random model calls) and, with end, the end token nearly as much
// (it stops between calls).
func strictBias(t *testing.T, tk *tokenizer.Tokenizer, end bool) map[int]float64 {
	bias := blanksOut(tk, map[int]float64{1: 8, 11: 6, 92: 6}) // ", "," and "}"
	open, ok := tk.TokenID("<tool_call>")
	if !ok || tk.IsSpecial(open) {
		t.Fatalf("<tool_call> is no text token of Qwen3's: %d %v", open, ok)
	}
	bias[open] = 30
	if end {
		bias[151645] = 29 // <|im_end|>
	}
	return bias
}

// blanksOut lowers tk's whitespace-only tokens in bias (the random model
// would write little else) and returns it.
func blanksOut(tk *tokenizer.Tokenizer, bias map[int]float64) map[int]float64 {
	for id := range tk.VocabSize() {
		if b := tk.TokenBytes(id); len(b) > 0 && len(bytes.TrimSpace(b)) == 0 {
			bias[id] = -100
		}
	}
	return bias
}

// openWithTokenizer opens dir's model and loads its tokenizer.
func openWithTokenizer(t *testing.T, dir string) (*runtime.Runtime, *tokenizer.Tokenizer) {
	t.Helper()
	rt := openOnStore(t, runtime.Options{}, dir, nil)
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return rt, tk
}

// weatherRequest asks "Weather in Bern?" with tools, at temperature 1,
// with the seed.
func weatherRequest(tools json.RawMessage, maxTokens int, bias map[int]float64, seed uint64) *nozzle.GenerateRequest {
	return &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather in Bern?"}},
		Tools: tools, MaxTokens: maxTokens, LogitBias: bias, Temperature: 1, Seed: &seed}
}

// noThinking is Qwen3's template's switch for an answer without thoughts.
var noThinking = json.RawMessage(`{"enable_thinking": false}`)

// seededRun runs req on rt; an error fails t, naming the seed.
func seededRun(t *testing.T, rt *runtime.Runtime, req *nozzle.GenerateRequest) outcome {
	t.Helper()
	o := run(context.Background(), rt, req)
	if o.err != nil {
		t.Fatalf("seed %d: %v", *req.Seed, o.err)
	}
	return o
}

// strictDecoder reads s as the tests read a call: no fields but the
// parameters', numbers as written.
func strictDecoder(s string) *json.Decoder {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	return dec
}

// callArgs is a call's arguments, those of strictTools' functions and
// mistralStrictTools' get.
type callArgs struct {
	City *string
	Days *json.Number
	Unit *string
	Zone *string
	What *string
}

// checkCall fails t where name is none of strictTools' functions (nor
// get, with get) or a does not follow its parameters (required
// properties, integer in range, enums); what names the call in the
// messages.
func checkCall(t *testing.T, what, name string, a callArgs, get bool) {
	t.Helper()
	switch {
	case name == "get_weather":
		days, err := a.Days.Int64()
		if a.City == nil || len([]rune(*a.City)) > 12 || err != nil || days < 1 || days > 14 ||
			a.Unit == nil || *a.Unit != "C" && *a.Unit != "F" || a.Zone != nil || a.What != nil {
			t.Errorf("%s does not follow get_weather's parameters", what)
		}
	case name == "get_time":
		if a.Zone == nil || *a.Zone != "UTC" && *a.Zone != "CET" || a.City != nil || a.Days != nil || a.Unit != nil || a.What != nil {
			t.Errorf("%s does not follow get_time's parameters", what)
		}
	case get && name == "get":
		if a.What == nil || *a.What != "x" && *a.What != "y" || a.City != nil || a.Days != nil || a.Unit != nil || a.Zone != nil {
			t.Errorf("%s does not follow get's parameters", what)
		}
	default:
		t.Errorf("%s: called %q", what, name)
	}
}

// checkStrictRefused: req with a strict function whose parameters the
// masks cannot enforce (a format), or are not an object's, is refused,
// naming tools (and the function).
func checkStrictRefused(t *testing.T, rt *runtime.Runtime, req *nozzle.GenerateRequest) {
	t.Helper()
	ctx := context.Background()
	req.Tools = json.RawMessage(`[{"type":"function","function":{"name":"f","strict":true,"parameters":{"type":"object",` +
		`"properties":{"u":{"type":"string","format":"uri"}}}}}]`)
	o := run(ctx, rt, req)
	var ne *nozzle.Error
	if !errors.As(o.err, &ne) || ne.Code != nozzle.EINVALID || ne.Param != "tools" || !strings.Contains(ne.Message, `"f"`) {
		t.Fatalf("an unenforceable strict function: %v", o.err)
	}
	t.Logf("%v", ne)
	req.Tools = json.RawMessage(`[{"type":"function","function":{"name":"f","strict":true,"parameters":{"type":"string"}}}]`)
	if o = run(ctx, rt, req); !errors.As(o.err, &ne) || ne.Code != nozzle.EINVALID || ne.Param != "tools" {
		t.Fatalf("strict parameters not an object: %v", o.err)
	}
}

// TestQwen3_StrictToolCalls: with tool_choice "auto" and strict functions,
// on the Qwen3-shaped random model pushed to call (<tool_call> raised),
// every call it makes is a call object of one of the tools, its arguments
// the function's parameters (required properties, integer in range,
// enums), one call after another, and the answer reads as calls.
func TestQwen3_StrictToolCalls(t *testing.T) {
	rt, tk := openWithTokenizer(t, qwen3Dir(t))
	bias := strictBias(t, tk, true)
	calls := 0
	for seed := uint64(1); seed <= 5; seed++ {
		req := weatherRequest(strictTools(true), 300, bias, seed)
		req.ChatTemplateKwargs = noThinking
		o := seededRun(t, rt, req)
		// (a raw newline is never inside a string: the tag is a call's)
		parts := strings.Split(o.text, "<tool_call>\n")
		if strings.TrimSpace(parts[0]) != "" {
			t.Logf("seed %d: text before the calls: %.80q", seed, parts[0])
		}
		for i, part := range parts[1:] {
			body, rest, closed := strings.Cut(part, "\n</tool_call>")
			if !closed {
				if i != len(parts)-2 || o.res.FinishReason != nozzle.FinishLength {
					t.Fatalf("seed %d: a call not closed (finish %q): %q", seed, o.res.FinishReason, o.text)
				}
				break // cut off by max_tokens
			}
			if strings.TrimSpace(rest) != "" {
				t.Fatalf("seed %d: text after a call: %q", seed, o.text)
			}
			var call struct {
				Name      string
				Arguments callArgs
			}
			if strictDecoder(body).Decode(&call) != nil {
				t.Fatalf("seed %d: not a call object: %q", seed, body)
			}
			checkCall(t, fmt.Sprintf("seed %d: %q", seed, body), call.Name, call.Arguments, false)
			calls++
		}
		t.Logf("seed %d (finish %s): %q", seed, o.res.FinishReason, o.text)
	}
	if calls < 3 {
		t.Errorf("%d calls in five answers: the test does not test", calls)
	}
}

// TestQwen3_NonStrictToolsUnconstrained: the same tools without strict,
// the same push: the model writes what it likes after <tool_call> (the
// random model, more <tool_call>s) — no constraint; and a strict function
// whose parameters the masks cannot enforce, or are not an object's, is
// refused, naming tools.
func TestQwen3_NonStrictToolsUnconstrained(t *testing.T) {
	rt, tk := openWithTokenizer(t, qwen3Dir(t))
	req := weatherRequest(strictTools(false), 20, strictBias(t, tk, false), 0)
	req.ChatTemplateKwargs = noThinking
	if o := seededRun(t, rt, req); !strings.Contains(o.text, "<tool_call><tool_call>") {
		t.Errorf("non-strict tools constrained the answer? %q", o.text)
	}
	checkStrictRefused(t, rt, req)
}

// llamaBias pushes the Llama-shaped random model to call: `{"` raised (it
// begins a call, and then its arguments' strings end soon), the quote
// too, no whitespace-only tokens; with end, ';' and <|eot_id|> a little
// less (it ends or calls again after a call); more are added to it.
func llamaBias(t *testing.T, tk *tokenizer.Tokenizer, end bool, more map[int]float64) map[int]float64 {
	bias := blanksOut(tk, map[int]float64{1: 8})
	for id, s := range map[int]string{1: `"`, llamaOpen: `{"`, 26: ";"} {
		if string(tk.TokenBytes(id)) != s {
			t.Fatalf("token %d is %q, not %q", id, tk.TokenBytes(id), s)
		}
	}
	bias[llamaOpen] = 32
	if end {
		bias[26], bias[128009] = 28.5, 29
	}
	maps.Copy(bias, more)
	return bias
}

// llamaOpen is Llama 3's token `{"`.
const llamaOpen = 5018

// llamaCall is a call as the gateway reads Llama 3's (splitToolCalls:
// "parameters" or "arguments"), the arguments of strictTools' functions.
type llamaCall struct {
	Name       string
	Parameters callArgs
}

// TestLlama3_StrictToolCalls: with tool_choice "auto" and strict
// functions, on the Llama-shaped random model pushed to call (`{"`
// raised), the answer, which begins with '{', reads as the gateway reads
// Llama 3's calls — the whole answer trimmed, objects separated by ';' —
// and every call is one of the tools with arguments that follow its
// parameters (required properties, integer in range, enums).
func TestLlama3_StrictToolCalls(t *testing.T) {
	rt, tk := openWithTokenizer(t, llama3Dir(t))
	bias := llamaBias(t, tk, true, nil)
	calls, several := 0, 0
	for seed := uint64(1); seed <= 5; seed++ {
		o := seededRun(t, rt, weatherRequest(strictTools(true), 400, bias, seed))
		// the gateway's reading (gateway/tools.go splitToolCalls)
		s := strings.TrimSpace(o.text)
		if !strings.HasPrefix(s, "{") {
			t.Logf("seed %d: free text: %q", seed, o.text)
			continue
		}
		n := 0
		for {
			dec := strictDecoder(s)
			var call llamaCall
			if err := dec.Decode(&call); err != nil {
				if o.res.FinishReason == nozzle.FinishLength {
					break // cut off by max_tokens (the gateway's text)
				}
				t.Fatalf("seed %d: not a call object (%v): %q", seed, err, o.text)
			}
			checkCall(t, fmt.Sprintf("seed %d: %q", seed, o.text), call.Name, call.Parameters, false)
			n++
			if s = strings.TrimLeft(s[dec.InputOffset():], " \t\r\n"); s == "" {
				break
			}
			if s[0] != ';' {
				t.Fatalf("seed %d: text after a call: %q", seed, o.text)
			}
			s = strings.TrimLeft(s[1:], " \t\r\n")
		}
		if calls += n; n > 1 && o.res.FinishReason == nozzle.FinishStop {
			several++ // (';' between them)
		}
		t.Logf("seed %d (finish %s): %q", seed, o.res.FinishReason, o.text)
	}
	if calls < 3 || several < 1 {
		t.Errorf("%d calls in five answers, %d of several: the test does not test", calls, several)
	}
	t.Logf("%d calls, %d answers of several", calls, several)
}

// TestLlama3_StrictToolCallsFree: what does not hold a Llama 3 model's
// answer to calls — an answer that begins with other text (`({"` raised
// above `{"`: the `{"` after it are text), tools none of them strict (the
// model writes `{"{"…`) — and a strict function whose parameters the masks
// cannot enforce, or are not an object's, refused naming tools.
func TestLlama3_StrictToolCallsFree(t *testing.T) {
	rt, tk := openWithTokenizer(t, llama3Dir(t))
	ctx := context.Background()
	const paren = 17289 // `({"`
	if string(tk.TokenBytes(paren)) != `({"` {
		t.Fatalf("token %d is %q", paren, tk.TokenBytes(paren))
	}
	req := weatherRequest(strictTools(true), 20, llamaBias(t, tk, false, map[int]float64{paren: 33}), 0)
	if o := run(ctx, rt, req); o.err != nil || !strings.HasPrefix(o.text, `({"({"`) {
		t.Errorf("text after a first token that begins no call is held? %q %v", o.text, o.err)
	}
	req.Tools, req.LogitBias = strictTools(false), llamaBias(t, tk, false, nil)
	if o := run(ctx, rt, req); o.err != nil || !strings.HasPrefix(o.text, `{"{"`) {
		t.Errorf("non-strict tools constrained the answer? %q %v", o.text, o.err)
	}
	checkStrictRefused(t, rt, req)
}

// mistralStrictTools are strictTools' functions and get, strict too,
// whose name begins the others' (Mistral v11's names are told apart where
// [ARGS] comes).
func mistralStrictTools(strict bool) json.RawMessage {
	s := `,"strict":true`
	if !strict {
		s = ``
	}
	tools := strictTools(strict)
	return append(tools[:len(tools)-1:len(tools)-1], `,{"type":"function","function":{"name":"get"`+s+`,"parameters":{"type":"object",`+
		`"properties":{"what":{"enum":["x","y"]}},"required":["what"],"additionalProperties":false}}}]`...)
}

// mistralBias pushes mistralDir's random model (Llama 2's vocabulary and
// the control tokens) as strictBias does Qwen's: the quote and '}'
// raised, no whitespace-only tokens, more added to it.
func mistralBias(t *testing.T, dir string, more map[int]float64) map[int]float64 {
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	bias := blanksOut(tk, map[int]float64{})
	for _, s := range []string{`"`, `}`} {
		id, ok := tk.TokenID(s)
		if !ok {
			t.Fatalf("no token %q", s)
		}
		bias[id] = 6
	}
	maps.Copy(bias, more)
	return bias
}

// v11Calls reads text as the gateway's splitToolCalls reads Mistral v11's
// answers: from its first [TOOL_CALLS], calls of a function's name,
// [ARGS] and its arguments, whitespace between them and nothing after
// them; the strict functions' arguments must follow their parameters.
// It returns how many; cut says a last call may be cut off (max_tokens).
func v11Calls(t *testing.T, text string, cut bool) int {
	t.Helper()
	i := strings.Index(text, "[TOOL_CALLS]")
	if i < 0 {
		return 0
	}
	rest, n := text[i:], 0
	for {
		rest = strings.TrimLeft(rest, " \t\r\n")
		if rest == "" {
			return n
		}
		rest = strings.TrimLeft(strings.TrimPrefix(rest, "[TOOL_CALLS]"), " \t\r\n")
		name, args, ok := strings.Cut(rest, "[ARGS]")
		if !ok && cut {
			return n
		}
		args = strings.TrimLeft(args, " \t\r\n")
		dec := strictDecoder(args)
		var a callArgs
		if !ok || !strings.HasPrefix(args, "{") {
			t.Fatalf("not a call after [TOOL_CALLS]: %q", text)
		}
		if err := dec.Decode(&a); err != nil {
			if cut {
				return n
			}
			t.Fatalf("not a call's arguments (%v): %q", err, text)
		}
		checkCall(t, fmt.Sprintf("%q", text), name, a, true)
		n++
		rest = args[dec.InputOffset():]
	}
}

// TestMistralV11_StrictToolCalls: with tool_choice "auto" and strict
// functions, on mistralDir's v11 model pushed to call ([TOOL_CALLS]
// raised, [ARGS] too: it comes where the name's bytes are a whole name,
// get's or another's), the answer reads as the gateway reads Mistral v11's
// calls — [TOOL_CALLS]name[ARGS]{…}, one after another — and every call
// is one of the tools with arguments that follow its parameters.
func TestMistralV11_StrictToolCalls(t *testing.T) {
	dir := mistralDir(t, true, true)
	rt := openOnStore(t, runtime.Options{}, dir, nil)
	callsTok, ok1 := rt.TokenID("[TOOL_CALLS]")
	argsTok, ok2 := rt.TokenID("[ARGS]")
	if !ok1 || !ok2 {
		t.Fatal("no control tokens")
	}
	bias := mistralBias(t, dir, map[int]float64{callsTok: 30, argsTok: 3, 2: 27})
	calls, several, names := 0, 0, map[string]bool{}
	for seed := uint64(1); seed <= 6; seed++ {
		o := seededRun(t, rt, weatherRequest(mistralStrictTools(true), 300, bias, seed))
		n := v11Calls(t, o.text, o.res.FinishReason == nozzle.FinishLength)
		if calls += n; n > 1 {
			several++
		}
		for _, part := range strings.Split(o.text, "[TOOL_CALLS]")[1:] {
			name, _, _ := strings.Cut(part, "[ARGS]")
			names[name] = true
		}
		t.Logf("seed %d (finish %s): %q", seed, o.res.FinishReason, o.text)
	}
	if calls < 4 || several < 1 || !names["get"] || len(names) < 2 {
		t.Errorf("%d calls in six answers, %d of several, names %v: the test does not test", calls, several, names)
	}
	t.Logf("%d calls, %d answers of several, names %v", calls, several, names)
}

// TestMistralV11_StrictToolCallsFree: what does not hold a Mistral v11
// model's answer — free text before [TOOL_CALLS] (the random model's
// text, [TOOL_CALLS] lowered), tools none of them strict (the model
// writes [TOOL_CALLS][TOOL_CALLS]…, no name) — and a strict function
// whose parameters the masks cannot enforce refused, naming tools.
func TestMistralV11_StrictToolCallsFree(t *testing.T) {
	dir := mistralDir(t, true, true)
	rt := openOnStore(t, runtime.Options{}, dir, nil)
	callsTok, _ := rt.TokenID("[TOOL_CALLS]")
	hello, ok := rt.TokenID("Hello")
	if !ok {
		t.Fatal("no token Hello")
	}
	ctx := context.Background()
	req := weatherRequest(mistralStrictTools(true), 20, map[int]float64{hello: 30, callsTok: -100}, 0)
	if o := run(ctx, rt, req); o.err != nil || !strings.HasPrefix(o.text, "HelloHello") || strings.Contains(o.text, "[TOOL_CALLS]") {
		t.Errorf("free text held? %q %v", o.text, o.err)
	}
	req.Tools, req.LogitBias = mistralStrictTools(false), map[int]float64{callsTok: 30}
	if o := run(ctx, rt, req); o.err != nil || !strings.HasPrefix(o.text, "[TOOL_CALLS][TOOL_CALLS]") {
		t.Errorf("non-strict tools constrained the answer? %q %v", o.text, o.err)
	}
	checkStrictRefused(t, rt, req)
}

// tokens are the answer's tokens (its logprobs').
func tokens(o outcome) []string {
	var out []string
	for _, c := range o.chunks {
		for _, l := range c.Logprobs {
			out = append(out, l.Token)
		}
	}
	return out
}

// TestMistral_StrictToolCalls: with tool_choice "auto" and strict
// functions, on mistralDir's v3 model pushed to call ([TOOL_CALLS] raised,
// "Hello" nearly as much), an answer whose first token is [TOOL_CALLS]
// reads as the gateway reads Mistral's v3 calls — the token left out, the
// text trimmed a JSON array of {"name", "arguments"} objects — every call
// one of the tools with arguments that follow its parameters; one that
// begins with text is free text, [TOOL_CALLS] never drawn in it.
func TestMistral_StrictToolCalls(t *testing.T) {
	dir := mistralDir(t, true, false)
	rt := openOnStore(t, runtime.Options{}, dir, nil)
	if info, err := rt.Info(context.Background()); err != nil || info.ToolFormat != nozzle.ToolFormatMistral {
		t.Fatalf("info %+v %v", info, err)
	}
	callsTok, _ := rt.TokenID("[TOOL_CALLS]")
	hello, _ := rt.TokenID("Hello")
	closeArr, _ := rt.TokenID("]")
	comma, _ := rt.TokenID(",")
	bias := mistralBias(t, dir, map[int]float64{callsTok: 30, hello: 29, closeArr: 6, comma: 8})
	calls, several, free := 0, 0, 0
	for seed := uint64(1); seed <= 8; seed++ {
		req := weatherRequest(strictTools(true), 300, bias, seed)
		req.Logprobs = true
		o := seededRun(t, rt, req)
		toks := tokens(o)
		t.Logf("seed %d (finish %s): %.200q", seed, o.res.FinishReason, o.text)
		if len(toks) == 0 || toks[0] != "[TOOL_CALLS]" {
			if slices.Contains(toks, "[TOOL_CALLS]") || strings.Contains(o.text, "[TOOL_CALLS]") {
				t.Fatalf("seed %d: [TOOL_CALLS] after text: %q", seed, toks)
			}
			free++
			continue
		}
		// the gateway's reading (gateway/tools.go splitToolCalls)
		body := strings.TrimSpace(o.text)
		var got []struct {
			Name      string
			Arguments callArgs
		}
		dec := strictDecoder(body)
		if !strings.HasPrefix(body, "[") || dec.Decode(&got) != nil || strings.TrimSpace(body[dec.InputOffset():]) != "" || len(got) == 0 {
			if o.res.FinishReason == nozzle.FinishLength {
				continue // cut off by max_tokens
			}
			t.Fatalf("seed %d: not an array of calls: %q", seed, o.text)
		}
		for _, c := range got {
			checkCall(t, fmt.Sprintf("seed %d: %q", seed, o.text), c.Name, c.Arguments, false)
		}
		if calls += len(got); len(got) > 1 {
			several++
		}
	}
	if calls < 3 || several < 1 || free < 1 {
		t.Errorf("%d calls (%d answers of several), %d free answers in eight: the test does not test", calls, several, free)
	}
	t.Logf("%d calls, %d answers of several, %d free", calls, several, free)
}

// TestMistral_StrictToolCallsFree: on the v3 model, tools none of them
// strict leave the answer free (the model draws [TOOL_CALLS] again and
// again), and a strict function whose parameters the masks cannot enforce
// is refused, naming tools.
func TestMistral_StrictToolCallsFree(t *testing.T) {
	dir := mistralDir(t, true, false)
	rt := openOnStore(t, runtime.Options{}, dir, nil)
	callsTok, _ := rt.TokenID("[TOOL_CALLS]")
	req := weatherRequest(strictTools(false), 5, map[int]float64{callsTok: 30}, 0)
	req.Logprobs = true
	if o := seededRun(t, rt, req); !slices.Equal(tokens(o)[:2], []string{"[TOOL_CALLS]", "[TOOL_CALLS]"}) {
		t.Errorf("non-strict tools constrained the answer? %q", tokens(o))
	}
	checkStrictRefused(t, rt, req)
}
