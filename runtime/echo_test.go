package runtime_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// collect runs req and returns its chunks.
func collect(t *testing.T, rt *runtime.Runtime, req *nozzle.GenerateRequest) ([]nozzle.Chunk, *nozzle.GenerateResult) {
	t.Helper()
	var chunks []nozzle.Chunk
	res, err := rt.Generate(context.Background(), req, func(c nozzle.Chunk) error {
		chunks = append(chunks, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return chunks, res
}

// TestDemo_EchoScoresPrompt generates greedily, then echoes the prompt
// plus that completion with logprobs: every scored token is the model's
// own greedy choice, so its score is the logprob it was generated with
// and the most likely alternative. Scored alone, beside other requests,
// in small prefill chunks and with an adapter, the numbers agree.
func TestDemo_EchoScoresPrompt(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts runtime.Options
	}{
		{"default", runtime.Options{}},
		// 8 rows of logits and 5-token chunks: a prompt is scored over
		// several steps, a few rows at a time
		{"chunked", runtime.Options{MaxBatchSeqs: 8, MaxBatchTokens: 16, PrefillChunk: 5}},
		// one row of logits: a token scored a step, the sample after
		{"one row", runtime.Options{MaxBatchSeqs: 1}},
		// two rows, one of them a decode's
		{"two rows", runtime.Options{MaxBatchSeqs: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, adapters := openDemo(t, tc.opts)
			for _, ad := range []*nozzle.Adapter{nil, adapters["demo-sql"]} {
				head := []int{1, 450, 1996}
				gen, res := collect(t, rt, &nozzle.GenerateRequest{PromptTokens: head, MaxTokens: 20, Logprobs: true, TopLogprobs: 2, Adapter: ad})
				var genLPs []nozzle.TokenLogprob
				for _, c := range gen {
					genLPs = append(genLPs, c.Logprobs...)
				}
				if res.CompletionTokens != len(genLPs) || len(genLPs) < 5 {
					t.Fatalf("generated %d tokens, %d logprobs", res.CompletionTokens, len(genLPs))
				}
				prompt := append(append([]int(nil), head...), tokenIDs(t, rt, genLPs)...)

				var wg sync.WaitGroup
				for range 3 { // beside other requests
					wg.Add(1)
					go func() {
						defer wg.Done()
						rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "SELECT name FROM users WHERE", MaxTokens: 12}, func(nozzle.Chunk) error { return nil })
					}()
				}
				chunks, res2 := collect(t, rt, &nozzle.GenerateRequest{PromptTokens: prompt, MaxTokens: 1, Logprobs: true, TopLogprobs: 2, Echo: true, Adapter: ad})
				wg.Wait()
				if len(chunks) < 2 || !chunks[0].Prompt || chunks[1].Prompt {
					t.Fatalf("chunks %+v: want the prompt first", chunks)
				}
				p := chunks[0]
				if len(p.Logprobs) != len(prompt) || res2.PromptTokens != len(prompt) || res2.CompletionTokens != 1 {
					t.Fatalf("%d prompt logprobs for %d tokens; result %+v", len(p.Logprobs), len(prompt), res2)
				}
				if p.Logprobs[0].Top != nil || p.Logprobs[0].Logprob != 0 {
					t.Errorf("the first prompt token has a score: %+v", p.Logprobs[0])
				}
				for i, g := range genLPs {
					s := p.Logprobs[len(head)+i]
					if s.Token != g.Token || math.Abs(s.Logprob-g.Logprob) > 1e-4 || len(s.Top) != 2 || s.Top[0].Token != g.Token ||
						math.Abs(s.Top[0].Logprob-s.Logprob) > 1e-6 || s.Top[1].Token != g.Top[1].Token {
						t.Errorf("adapter %v, token %d: scored %+v, generated %+v", ad != nil, i, s, g)
					}
				}
				if p.Text != decodeIDs(t, rt, prompt) {
					t.Errorf("prompt text %q", p.Text)
				}
				if s := p.Logprobs[len(head)]; s.Offset != len(decodeIDs(t, rt, head)) {
					t.Errorf("offset of the first completion token in the prompt: %d", s.Offset)
				}
				// Nothing generated (max_tokens 0): the same scores, the
				// prompt alone.
				only, res3 := collect(t, rt, &nozzle.GenerateRequest{PromptTokens: prompt, Logprobs: true, TopLogprobs: 2, Echo: true, PromptOnly: true, Adapter: ad})
				if len(only) != 1 || !only[0].Prompt || !reflect.DeepEqual(only[0], p) || res3.CompletionTokens != 0 || res3.FinishReason != nozzle.FinishLength || res3.DeviceSeconds <= 0 {
					t.Errorf("prompt only: %d chunks, result %+v", len(only), res3)
				}
			}
		})
	}
}

// tokenIDs maps logprob entries back to token ids through the runtime's
// tokenizer (each entry's token text is unique in the demo vocabulary).
func tokenIDs(t *testing.T, rt *runtime.Runtime, lps []nozzle.TokenLogprob) []int {
	t.Helper()
	ids := make([]int, len(lps))
	for i, lp := range lps {
		id, ok := rt.TokenID(lp.Token)
		if !ok {
			t.Fatalf("no token %q", lp.Token)
		}
		ids[i] = id
	}
	return ids
}

func decodeIDs(t *testing.T, rt *runtime.Runtime, ids []int) string {
	t.Helper()
	chunks, _ := collect(t, rt, &nozzle.GenerateRequest{PromptTokens: ids, MaxTokens: 1, Echo: true})
	return chunks[0].Text
}

// TestDemo_EchoNothingToCompute: a prompt echoed without logprobs, or of
// one token, with nothing generated, is answered without the engine.
func TestDemo_EchoNothingToCompute(t *testing.T) {
	rt, _ := openDemo(t, runtime.Options{})
	for _, req := range []*nozzle.GenerateRequest{
		{Prompt: "The quick brown fox", Echo: true, PromptOnly: true},
		{PromptTokens: []int{450}, Echo: true, PromptOnly: true, Logprobs: true, TopLogprobs: 3},
	} {
		chunks, res := collect(t, rt, req)
		if len(chunks) != 1 || !chunks[0].Prompt || res.CompletionTokens != 0 || res.FinishReason != nozzle.FinishLength || res.DeviceSeconds != 0 {
			t.Errorf("%+v: chunks %+v, result %+v", req, chunks, res)
		}
		if req.Logprobs && (len(chunks[0].Logprobs) != 1 || chunks[0].Logprobs[0].Top != nil) {
			t.Errorf("one token's logprobs: %+v", chunks[0].Logprobs)
		}
	}
	if _, err := rt.Generate(context.Background(), &nozzle.GenerateRequest{Prompt: "x", PromptOnly: true}, func(nozzle.Chunk) error { return nil }); nozzle.ErrorCode(err) != nozzle.EINVALID {
		t.Errorf("prompt only without echo: %v", err)
	}
}

// hermesTemplate renders tools, tool calls and results the way Qwen's
// templates do, in brief.
const hermesTemplate = `{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>
{% endif %}{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}` +
	`{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}{% endif %}` +
	`{%- if m.tool_call_id %} [{{ m.tool_call_id }}]{% endif %}
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}`

// TestDemo_ChatTools: a model whose template teaches <tool_call> reports
// the hermes format, and the prompt it is given (echoed) holds the tools,
// the earlier call with its arguments as an object, and the result.
func TestDemo_ChatTools(t *testing.T) {
	modelDir, _ := demo(t)
	dir := filepath.Join(t.TempDir(), "model")
	if err := os.CopyFS(dir, os.DirFS(modelDir)); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["chat_template"] = hermesTemplate
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := openOnStore(t, runtime.Options{}, dir, demoStore(t, dir))
	info, err := rt.Info(context.Background())
	if err != nil || info.ToolFormat != nozzle.ToolFormatHermes {
		t.Fatalf("tool format %q (%v)", info.ToolFormat, err)
	}
	chunks, _ := collect(t, rt, &nozzle.GenerateRequest{
		Messages: []nozzle.ChatMessage{{Role: "user", Content: "Weather?"},
			{Role: "assistant", ToolCalls: []nozzle.ToolCall{{ID: "call_1", Type: "function", Function: nozzle.FunctionCall{Name: "get_weather", Arguments: `{"city": "Bern", "days": 2}`}}}},
			{Role: "tool", Content: "19 degrees", ToolCallID: "call_1"}},
		Tools: json.RawMessage(`[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`),
		Echo:  true, PromptOnly: true,
	})
	// (trim_blocks takes the newline after each block tag, as transformers does)
	want := `<tools>{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}</tools>` +
		`<|user|>Weather?<|assistant|><tool_call>{"name": "get_weather", "arguments": {"city": "Bern", "days": 2}}</tool_call>` +
		`<|tool|>19 degrees [call_1]<|assistant|>`
	if len(chunks) != 1 || chunks[0].Text != want {
		t.Errorf("prompt:\n%s\nwant\n%s", chunks[0].Text, want)
	}
}

// TestDemo_EchoSpecialTokenText: a text prompt that writes a special
// token is echoed as given, and its tokens' offsets are into that text
// (decoding skips the special token's text).
func TestDemo_EchoSpecialTokenText(t *testing.T) {
	rt, _ := openDemo(t, runtime.Options{})
	const prompt = "ab<|im_start|>cd ef"
	for _, only := range []bool{true, false} {
		maxTokens := 0
		if !only {
			maxTokens = 1
		}
		chunks, _ := collect(t, rt, &nozzle.GenerateRequest{Prompt: prompt, Echo: true, Logprobs: true, PromptOnly: only, MaxTokens: maxTokens})
		p := chunks[0]
		if !p.Prompt || p.Text != prompt || len(p.Logprobs) < 4 {
			t.Fatalf("prompt only %v: echo %+v", only, p)
		}
		// each token at its offset spells the text (BOS: nothing, at 0)
		at := 0
		for i, lp := range p.Logprobs {
			tok := lp.Token
			if i == 0 {
				tok = ""
			}
			if lp.Offset != at || !strings.HasPrefix(prompt[at:], tok) {
				t.Fatalf("prompt only %v: token %d %q at %d, want %d in %q", only, i, lp.Token, lp.Offset, at, prompt)
			}
			at += len(tok)
		}
		if at != len(prompt) {
			t.Errorf("prompt only %v: the tokens spell %d of %d bytes", only, at, len(prompt))
		}
	}
}
