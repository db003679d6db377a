package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// oneCallPair runs req twice on rt, without OneCall and with it, logprobs
// on (each token's), and checks what the second answer must be against
// the first: its tokens those the first began with, up to the one that
// completes the first call (want: the text up to its end, "" for the
// first answer's first call as FirstCall finds it), its text cut there,
// finish "stop", and its completion tokens those it generated. It
// returns both.
func oneCallPair(t *testing.T, rt *runtime.Runtime, req *nozzle.GenerateRequest, format string, want string) (all, one outcome) {
	t.Helper()
	req.Logprobs = true
	all = seededRun(t, rt, req)
	r := *req
	r.OneCall = true
	one = seededRun(t, rt, &r)
	if want == "" {
		var thoughts *nozzle.ThinkTags
		if format == nozzle.ToolFormatHermes {
			thoughts = &nozzle.DefaultThinkTags
		}
		f := nozzle.NewFirstCall(format, thoughts, false)
		if !f.Add(all.text) {
			t.Fatalf("no call in %q", all.text)
		}
		want = all.text[:f.End()]
	}
	// the tokens up to the one that completes the call: those that begin
	// before its end
	n := 0
	for _, lp := range lpsOf(all) {
		if lp.Offset < len(want) {
			n++
		}
	}
	if one.text != want || one.res.FinishReason != nozzle.FinishStop {
		t.Fatalf("one call: %q (finish %q), want %q", one.text, one.res.FinishReason, want)
	}
	if toks := tokens(one); one.res.CompletionTokens != n || len(toks) != n || !slices.Equal(toks, tokens(all)[:n]) {
		t.Fatalf("one call: %d completion tokens, %d told (%q), want the first %d of %q", one.res.CompletionTokens, len(toks), toks, n, tokens(all))
	}
	if p := one.chunks[len(one.chunks)-1].Progress; p.CompletionTokens != n {
		t.Errorf("the last chunk's progress: %+v", p)
	}
	return all, one
}

// lpsOf are an answer's logprobs, one a token.
func lpsOf(o outcome) []nozzle.TokenLogprob {
	var out []nozzle.TokenLogprob
	for _, c := range o.chunks {
		out = append(out, c.Logprobs...)
	}
	return out
}

// regexOf is the response format that writes text exactly.
func regexOf(text string) json.RawMessage {
	p, _ := json.Marshal(nozzle.ChoicePattern([]string{text}))
	return p
}

// TestOneCall_Free: a model that writes two calls where nothing
// constrains them as calls (a regex response format writes the text: the
// calls themselves are free) — Hermes' on Qwen3's tokenizer (and after
// thoughts that hold a call, which is none), Llama 3's
// JSON, Mistral's v3 array — with OneCall ends with the token that
// completes the first call's object: the same tokens up to it, the text
// cut at its '}' ("};", "}]" and "},"-tokens cut within), finish "stop",
// and only those tokens counted, in process and over the remote protocol;
// without OneCall both calls come.
func TestOneCall_Free(t *testing.T) {
	const weather = `{"name": "get_weather", "arguments": {"city": "Bern \"}{", "unit": "C"}}`
	const clock = `{"name": "get_time", "arguments": {"zone": "UTC"}}`
	const weatherL = `{"name": "get_weather", "parameters": {"city": "Bern", "days": 3}}`
	const clockL = `{"name": "get_time", "parameters": {"zone": "UTC"}}`
	for _, tc := range []struct {
		name, format string
		dir          func(*testing.T) string
		text, want   string
		kwargs       json.RawMessage
	}{
		{"qwen3", nozzle.ToolFormatHermes, qwen3Dir, "Sure.\n<tool_call>\n" + weather + "\n</tool_call>\n<tool_call>\n" + clock + "\n</tool_call>",
			"Sure.\n<tool_call>\n" + weather, noThinking},
		{"qwen3-thinking", nozzle.ToolFormatHermes, qwen3Dir, "<think>\nMaybe <tool_call>\n" + clock + "\n</tool_call>\n</think>\n\n<tool_call>\n" + weather + "\n</tool_call>\n<tool_call>\n" + clock + "\n</tool_call>",
			"<think>\nMaybe <tool_call>\n" + clock + "\n</tool_call>\n</think>\n\n<tool_call>\n" + weather, nil},
		{"llama3", nozzle.ToolFormatLlama3JSON, llama3Dir, weatherL + "; " + clockL, weatherL, nil},
		{"llama3-tight", nozzle.ToolFormatLlama3JSON, llama3Dir, weatherL + ";" + clockL, weatherL, nil},
		{"mistral", nozzle.ToolFormatMistral, func(t *testing.T) string { return mistralDir(t, true, false) }, "[" + weather + ", " + clock + "]", "[" + weather, nil},
		{"mistral-tight", nozzle.ToolFormatMistral, func(t *testing.T) string { return mistralDir(t, true, false) }, "[" + weather + "," + clock + "]", "[" + weather, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := openOnStore(t, runtime.Options{}, tc.dir(t), nil)
			if info, err := rt.Info(context.Background()); err != nil || info.ToolFormat != tc.format {
				t.Fatalf("info %+v %v", info, err)
			}
			req := weatherRequest(strictTools(false), 400, nil, 0)
			req.Temperature, req.ChatTemplateKwargs = 0, tc.kwargs
			req.ResponseFormat, req.ResponseSchema = nozzle.ResponseFormatRegex, regexOf(tc.text)
			all, one := oneCallPair(t, rt, req, tc.format, tc.want)
			if all.text != tc.text || all.res.FinishReason != nozzle.FinishStop || all.res.CompletionTokens <= one.res.CompletionTokens {
				t.Fatalf("both calls: %q (finish %q, %d tokens; one call %d)", all.text, all.res.FinishReason, all.res.CompletionTokens, one.res.CompletionTokens)
			}
			if tc.name == "qwen3" || tc.name == "mistral" {
				// the same over the remote protocol, streamed and not
				c := serve(t, rt)
				for _, stream := range []bool{false, true} {
					r := *req
					r.OneCall, r.Stream = true, stream
					o := run(context.Background(), c, &r)
					if o.err != nil || o.text != one.text || o.res.CompletionTokens != one.res.CompletionTokens || o.res.FinishReason != nozzle.FinishStop {
						t.Fatalf("remote (stream %v): %q, %+v %v; in process %q, %d tokens", stream, o.text, o.res, o.err, one.text, one.res.CompletionTokens)
					}
				}
			}
			t.Logf("%d tokens for both calls, %d for one: %q", all.res.CompletionTokens, one.res.CompletionTokens, tokens(one)[len(tokens(one))-2:])
		})
	}
}

// TestOneCall_Strict: strict functions' calls (tool_choice "auto", the
// calls held to their form) on the random models pushed to call again
// and again — Qwen3's Hermes calls, Llama 3's JSON, Mistral v11's
// [TOOL_CALLS]name[ARGS]{…} — end with the first with OneCall, the
// tokens up to it those of the answer without it.
func TestOneCall_Strict(t *testing.T) {
	t.Run("qwen3", func(t *testing.T) {
		rt, tk := openWithTokenizer(t, qwen3Dir(t))
		bias := strictBias(t, tk, true)
		several := 0
		for seed := uint64(1); seed <= 4; seed++ {
			req := weatherRequest(strictTools(true), 300, bias, seed)
			req.ChatTemplateKwargs = noThinking
			all, one := oneCallPair(t, rt, req, nozzle.ToolFormatHermes, "")
			// (a raw newline is never inside a string: the tag is a call's)
			if strings.Count(one.text, "<tool_call>\n") != 1 {
				t.Fatalf("seed %d: %q", seed, one.text)
			}
			if strings.Count(all.text, "<tool_call>\n") > 1 {
				several++
			}
		}
		if several == 0 {
			t.Error("no answer of several calls: the test does not test")
		}
	})
	t.Run("llama3", func(t *testing.T) {
		rt, tk := openWithTokenizer(t, llama3Dir(t))
		bias := llamaBias(t, tk, true, nil)
		several := 0
		for seed := uint64(1); seed <= 4; seed++ {
			all, one := oneCallPair(t, rt, weatherRequest(strictTools(true), 400, bias, seed), nozzle.ToolFormatLlama3JSON, "")
			var call llamaCall
			if strictDecoder(one.text).Decode(&call) != nil || !strings.HasSuffix(one.text, "}") {
				t.Fatalf("seed %d: not one call: %q", seed, one.text)
			}
			checkCall(t, fmt.Sprintf("seed %d", seed), call.Name, call.Parameters, false)
			if strings.Contains(all.text, ";") {
				several++
			}
		}
		if several == 0 {
			t.Error("no answer of several calls: the test does not test")
		}
	})
	t.Run("mistral-v11", func(t *testing.T) {
		dir := mistralDir(t, true, true)
		rt := openOnStore(t, runtime.Options{}, dir, nil)
		callsTok, _ := rt.TokenID("[TOOL_CALLS]")
		argsTok, _ := rt.TokenID("[ARGS]")
		bias := mistralBias(t, dir, map[int]float64{callsTok: 30, argsTok: 3, 2: 27})
		several := 0
		for seed := uint64(1); seed <= 4; seed++ {
			all, one := oneCallPair(t, rt, weatherRequest(mistralStrictTools(true), 300, bias, seed), nozzle.ToolFormatMistralV11, "")
			if n := v11Calls(t, one.text, false); n != 1 {
				t.Fatalf("seed %d: %d calls: %q", seed, n, one.text)
			}
			if v11Calls(t, all.text, all.res.FinishReason == nozzle.FinishLength) > 1 {
				several++
			}
		}
		if several == 0 {
			t.Error("no answer of several calls: the test does not test")
		}
	})
}

// TestOneCall_ForcedMistralArray: a forced call of any of the tools
// ("required") on Mistral's v3 model, which writes an array of calls, is
// an array of one with OneCall, the answer ending with its object.
func TestOneCall_ForcedMistralArray(t *testing.T) {
	rt := openOnStore(t, runtime.Options{}, mistralDir(t, true, false), nil)
	quote, _ := rt.TokenID(`"`)
	comma, _ := rt.TokenID(`,`)
	for seed := uint64(0); seed < 3; seed++ {
		req := &nozzle.GenerateRequest{TenantID: "a", Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather in Bern?"}},
			Tools: mistralTools, ToolChoice: nozzle.ToolChoiceRequired, OneCall: true, MaxTokens: 1500, Logprobs: true,
			LogitBias: map[int]float64{quote: 6, comma: 8}, Temperature: 1, Seed: &seed}
		o := seededRun(t, rt, req)
		var calls []struct {
			Name      string
			Arguments map[string]any
		}
		body := strings.TrimSpace(o.text)
		if !strings.HasSuffix(body, "}") || json.Unmarshal([]byte(body+"]"), &calls) != nil || len(calls) != 1 || o.res.FinishReason != nozzle.FinishStop {
			t.Fatalf("seed %d: not an array of one call (finish %q): %q", seed, o.res.FinishReason, o.text)
		}
		if n := len(lpsOf(o)); n != o.res.CompletionTokens {
			t.Errorf("seed %d: %d tokens told, %d counted", seed, n, o.res.CompletionTokens)
		}
		t.Logf("seed %d: %q", seed, o.text)
	}
}

// TestOneCall_NoCall: an answer whose first call is none as the gateway
// reads it — text, a call object without Llama 3's required parameters —
// ends nothing with OneCall: the same answer as without it, all of it.
func TestOneCall_NoCall(t *testing.T) {
	rt := openOnStore(t, runtime.Options{}, llama3Dir(t), nil)
	for _, text := range []string{
		`It is sunny. {"name": "get_weather", "parameters": {"city": "Bern"}}`,
		`{"name": "get_weather"}; {"name": "get_time", "parameters": {"zone": "UTC"}}`,
	} {
		req := weatherRequest(strictTools(false), 400, nil, 0)
		req.Temperature, req.Logprobs = 0, true
		req.ResponseFormat, req.ResponseSchema = nozzle.ResponseFormatRegex, regexOf(text)
		all := seededRun(t, rt, req)
		req.OneCall = true
		one := seededRun(t, rt, req)
		if all.text != text || one.text != text || one.res.CompletionTokens != all.res.CompletionTokens || one.res.FinishReason != nozzle.FinishStop {
			t.Errorf("%q: %q (%d tokens), without OneCall %q (%d)", text, one.text, one.res.CompletionTokens, all.text, all.res.CompletionTokens)
		}
	}
}
