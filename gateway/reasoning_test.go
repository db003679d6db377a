package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

// withReasoning makes the fake runtime a reasoning model saying words; open:
// its chat prompts open the thoughts.
func withReasoning(open bool, words ...string) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		f.gen.reasoning, f.gen.open, f.gen.words = true, open, words
	}
}

type reasoningAnswer struct {
	Choices []struct {
		Message struct {
			Content          *string
			ReasoningContent *string           `json:"reasoning_content"`
			ToolCalls        []nozzle.ToolCall `json:"tool_calls"`
		}
		FinishReason string `json:"finish_reason"`
	}
	Usage struct {
		CompletionTokens        int `json:"completion_tokens"`
		CompletionTokensDetails struct {
			ReasoningTokens int `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	}
}

// streamedAnswer is a streamed chat answer of one choice, put together.
type streamedAnswer struct {
	reasoning, content, finish string
	calls                      []json.RawMessage
	reasoningTokens            int
	deltas                     []string // each event's delta, as sent
}

func readStreamed(t *testing.T, body string) streamedAnswer {
	t.Helper()
	var a streamedAnswer
	for _, e := range sseEvents(t, body) {
		if e == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta        json.RawMessage
				FinishReason *string `json:"finish_reason"`
			}
			Usage *struct {
				CompletionTokensDetails struct {
					ReasoningTokens int `json:"reasoning_tokens"`
				} `json:"completion_tokens_details"`
			}
		}
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("%v: %s", err, e)
		}
		if c.Usage != nil {
			a.reasoningTokens = c.Usage.CompletionTokensDetails.ReasoningTokens
		}
		for _, ch := range c.Choices {
			var d struct {
				Content          *string
				ReasoningContent *string           `json:"reasoning_content"`
				ToolCalls        []json.RawMessage `json:"tool_calls"`
			}
			if err := json.Unmarshal(ch.Delta, &d); err != nil {
				t.Fatal(err)
			}
			a.deltas = append(a.deltas, string(ch.Delta))
			if d.Content != nil {
				a.content += *d.Content
			}
			if d.ReasoningContent != nil {
				if *d.ReasoningContent == "" {
					t.Errorf("an empty reasoning delta: %s", e)
				}
				a.reasoning += *d.ReasoningContent
			}
			a.calls = append(a.calls, d.ToolCalls...)
			if ch.FinishReason != nil {
				a.finish = *ch.FinishReason
			}
		}
	}
	return a
}

func str(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// TestReasoning_Split: a reasoning model's thoughts come back as
// reasoning_content and its answer alone as content, streamed or not: tags
// split across chunks never go out in part, thoughts the prompt opened end
// at </think>, thoughts that never close (max_tokens) are all the answer
// has (content null), an answer without thoughts is all content; usage
// counts the thoughts' tokens.
func TestReasoning_Split(t *testing.T) {
	null := "<null>"
	for _, tc := range []struct {
		name      string
		open      bool
		words     []string
		maxTokens int
		reasoning string // "<null>": none
		content   string
		tokens    int
		finish    string
	}{
		{"Tagged", false, []string{"<think>", "\nI should", " greet.\n", "</think>", "\n\nHello", "!"}, 0, "I should greet.", "Hello!", 4, "stop"},
		{"TagsSplit", false, []string{" <thi", "nk>\npl", "an\n</th", "ink>\n", "\nHi", " there"}, 0, "plan", "Hi there", 4, "stop"},
		{"CloseSplitEveryByte", false, []string{"<think>", "a ", "<", "/", "t", "h", "i", "n", "k", ">", "b"}, 0, "a", "b", 10, "stop"},
		{"OpenedByPrompt", true, []string{"plan", " more\n", "</think>\n\n", "Answer"}, 0, "plan more", "Answer", 3, "stop"},
		{"OpenedUnclosed", true, []string{"a", " b", " c"}, 2, "a b", null, 2, "length"},
		{"TaggedUnclosed", false, []string{"<think>\n", "a", " b", " c"}, 3, "a b", null, 3, "length"},
		{"UnclosedEndsInPartialTag", true, []string{"hm ", "</th"}, 0, "hm </th", null, 2, "stop"},
		{"EmptyThoughts", false, []string{"<think>\n\n</think>\n\n", "Hi"}, 0, null, "Hi", 1, "stop"},
		{"NoThoughts", false, []string{"Hello", " <think>", "there"}, 0, null, "Hello <think>there", 0, "stop"},
		{"NotATag", false, []string{"<thinking", "> is fine"}, 0, null, "<thinking> is fine", 0, "stop"},
		{"LessThanAtStart", false, []string{"<", "3 you"}, 0, null, "<3 you", 0, "stop"},
		{"SecondCloseIsAnswer", true, []string{"x", "</think>", "a </think> b"}, 0, "x", "a </think> b", 2, "stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, withReasoning(tc.open, tc.words...))
			body := `{"model":"base","messages":[{"role":"user","content":"hi"}]`
			if tc.maxTokens > 0 {
				body += `,"max_tokens":` + itoa(tc.maxTokens)
			}
			body += `}`
			var out reasoningAnswer
			decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
			c := out.Choices[0]
			if got := str(c.Message.ReasoningContent); got != tc.reasoning {
				t.Errorf("reasoning_content %q, want %q", got, tc.reasoning)
			}
			if got := str(c.Message.Content); got != tc.content {
				t.Errorf("content %q, want %q", got, tc.content)
			}
			if c.FinishReason != tc.finish || out.Usage.CompletionTokensDetails.ReasoningTokens != tc.tokens {
				t.Errorf("finish %q, reasoning tokens %d; want %q, %d", c.FinishReason, out.Usage.CompletionTokensDetails.ReasoningTokens, tc.finish, tc.tokens)
			}

			stream := strings.Replace(body, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1)
			s := readStreamed(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA())))
			wantR, wantC := strings.ReplaceAll(tc.reasoning, null, ""), strings.ReplaceAll(tc.content, null, "")
			if s.reasoning != wantR || s.content != wantC || s.finish != tc.finish || s.reasoningTokens != tc.tokens {
				t.Errorf("streamed %q %q %q %d, want %q %q %q %d", s.reasoning, s.content, s.finish, s.reasoningTokens, wantR, wantC, tc.finish, tc.tokens)
			}
			// Thoughts' tags, or parts of them, never go out: the pieces
			// put together are exactly the parts, and no delta has a tag
			// the parts do not.
			for _, d := range s.deltas {
				for _, tag := range []string{"<think>", "</think>"} {
					if strings.Contains(d, tag) && !strings.Contains(tc.content, tag) && !strings.Contains(tc.reasoning, tag) {
						t.Errorf("delta %s holds %s", d, tag)
					}
				}
			}
		})
	}
}

// TestReasoning_ToolCallsAfterThoughts: a reasoning model that calls a
// tool after its thoughts: the thoughts (a <tool_call> written in them
// included) are reasoning_content, the call is the call, content is null;
// streamed alike, and a stored answer replays them.
func TestReasoning_ToolCallsAfterThoughts(t *testing.T) {
	f := newFixture(t, withToolFormat(nozzle.ToolFormatHermes,
		"<thi", "nk>plan: <tool_", "call> maybe</th", "ink>\n\n", "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}</tool_call>"),
		func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gen.reasoning = true })
	body := `{"model":"base",` + weatherTools + `,"messages":[{"role":"user","content":"Bern?"}]}`
	const thoughts = "plan: <tool_call> maybe"
	var out reasoningAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "think-1")), &out)
	c := out.Choices[0]
	if c.Message.Content != nil || str(c.Message.ReasoningContent) != thoughts || len(c.Message.ToolCalls) != 1 ||
		c.Message.ToolCalls[0].Function.Arguments != `{"city":"Bern"}` || c.FinishReason != "tool_calls" || out.Usage.CompletionTokensDetails.ReasoningTokens != 4 {
		t.Fatalf("answer %+v", out)
	}
	stream := strings.Replace(body, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1)
	for _, key := range []string{"think-2", "think-1"} { // live, then a replay of the stored answer
		s := readStreamed(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA(), hdr("Idempotency-Key", key))))
		if s.reasoning != thoughts || s.content != "" || len(s.calls) != 1 || s.finish != "tool_calls" || s.reasoningTokens != 4 {
			t.Errorf("%s: streamed %+v", key, s)
		}
	}
	var again reasoningAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr("Idempotency-Key", "think-2")), &again)
	if c := again.Choices[0]; str(c.Message.ReasoningContent) != thoughts || c.Message.Content != nil || len(c.Message.ToolCalls) != 1 {
		t.Errorf("stored stream replayed %+v", again)
	}
}

// TestReasoning_Replay: a reasoning answer stored under an
// Idempotency-Key replays with its thoughts and their token count,
// whole or streamed.
func TestReasoning_Replay(t *testing.T) {
	f := newFixture(t, withReasoning(true, "plan", "</think>", "Hi"))
	body := `{"model":"base","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`
	live := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA(), hdr("Idempotency-Key", "r-1")))
	replayed := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `{"model"`, `{"stream":true,"model"`, 1), f.authA(), hdr("Idempotency-Key", "r-1")))
	a, b := readStreamed(t, live), readStreamed(t, replayed)
	if a.reasoning != "plan" || a.content != "Hi" || a.reasoningTokens != 2 ||
		b.reasoning != a.reasoning || b.content != a.content || b.reasoningTokens != a.reasoningTokens || b.finish != a.finish {
		t.Errorf("live %+v, replayed %+v", a, b)
	}
	var out reasoningAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(body, `,"stream_options":{"include_usage":true}`, "", 1), f.authA(), hdr("Idempotency-Key", "r-2")), &out)
	if c := out.Choices[0]; str(c.Message.ReasoningContent) != "plan" || str(c.Message.Content) != "Hi" || out.Usage.CompletionTokensDetails.ReasoningTokens != 2 {
		t.Errorf("answer %+v", out)
	}
}

// TestReasoning_Choices: each of n choices has its own thoughts.
func TestReasoning_Choices(t *testing.T) {
	f := newFixture(t, withReasoning(false, "<think>", "x", "</think>", "y"))
	var out reasoningAnswer
	decode(t, f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","n":2,"messages":[{"role":"user","content":"hi"}]}`, f.authA()), &out)
	if len(out.Choices) != 2 || out.Usage.CompletionTokensDetails.ReasoningTokens != 6 {
		t.Fatalf("answer %+v", out)
	}
	for _, c := range out.Choices {
		if str(c.Message.ReasoningContent) != "x" || str(c.Message.Content) != "y" {
			t.Errorf("choice %+v", c)
		}
	}
}

// TestReasoning_NotAReasoningModel: a model that does not reason keeps
// its answer as it was, thoughts and all, without reasoning_content, and
// the legacy completions of a reasoning model are text as before.
func TestReasoning_NotAReasoningModel(t *testing.T) {
	f := newFixture(t, withToolFormat("", "<think>x</think>", "y"))
	raw := readAll(t, f.do(http.MethodPost, "/v1/chat/completions", chatBody("base", "hi"), f.authA()))
	if strings.Contains(raw, "reasoning_content") || !strings.Contains(raw, `"content":"<think>x</think>y"`) || !strings.Contains(raw, `"reasoning_tokens":0`) {
		t.Errorf("answer %s", raw)
	}
	raw = readAll(t, f.do(http.MethodPost, "/v1/chat/completions", strings.Replace(chatBody("base", "hi"), `{`, `{"stream":true,`, 1), f.authA()))
	if strings.Contains(raw, "reasoning_content") || !strings.Contains(raw, `"content":"<think>x</think>"`) {
		t.Errorf("streamed %s", raw)
	}

	r := newFixture(t, withReasoning(false, "<think>x</think>", "y"))
	raw = readAll(t, r.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"hi"}`, r.authA()))
	if !strings.Contains(raw, `"text":"<think>x</think>y"`) || !strings.Contains(raw, `"reasoning_tokens":0`) {
		t.Errorf("legacy completion %s", raw)
	}
}

// TestReasoning_MagistralTags: a model that thinks between [THINK] and
// [/THINK] (Magistral, nozzle.ModelInfo.ReasoningTags) has those parted
// from its answer, streamed or not, tags split across chunks included;
// for it, <think> is text of the answer.
func TestReasoning_MagistralTags(t *testing.T) {
	for _, tc := range []struct {
		name               string
		open               bool
		words              []string
		reasoning, content string
		tokens             int
	}{
		{"Tagged", false, []string{"[THINK]", "Bern is", " the capital.", "[/THINK]", "Bern", "."}, "Bern is the capital.", "Bern.", 4},
		{"TagsSplit", false, []string{" [TH", "INK]\nhm\n[/TH", "INK]\n", "Bern"}, "hm", "Bern", 3},
		{"OpenedByPrompt", true, []string{"hm", "[/THINK]", "Bern"}, "hm", "Bern", 2},
		{"OtherTags", false, []string{"<think>", "x", "</think>", "y"}, "<null>", "<think>x</think>y", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, withReasoning(tc.open, tc.words...), func(c *gateway.Config, d *gateway.Deps, f *fixture) {
				f.gen.thinkTags = nozzle.MistralThinkTags
			})
			body := `{"model":"base","messages":[{"role":"user","content":"Capital?"}]}`
			var out reasoningAnswer
			decode(t, f.do(http.MethodPost, "/v1/chat/completions", body, f.authA()), &out)
			c := out.Choices[0]
			if str(c.Message.ReasoningContent) != tc.reasoning || str(c.Message.Content) != tc.content || out.Usage.CompletionTokensDetails.ReasoningTokens != tc.tokens {
				t.Errorf("answer %q %q %d, want %q %q %d", str(c.Message.ReasoningContent), str(c.Message.Content),
					out.Usage.CompletionTokensDetails.ReasoningTokens, tc.reasoning, tc.content, tc.tokens)
			}
			stream := strings.Replace(body, `{"model"`, `{"stream":true,"stream_options":{"include_usage":true},"model"`, 1)
			s := readStreamed(t, readAll(t, f.do(http.MethodPost, "/v1/chat/completions", stream, f.authA())))
			if wantR := strings.ReplaceAll(tc.reasoning, "<null>", ""); s.reasoning != wantR || s.content != tc.content || s.reasoningTokens != tc.tokens {
				t.Errorf("streamed %q %q %d, want %q %q %d", s.reasoning, s.content, s.reasoningTokens, wantR, tc.content, tc.tokens)
			}
			for _, d := range s.deltas {
				if strings.Contains(d, "THINK") {
					t.Errorf("delta %s holds a tag", d)
				}
			}
		})
	}
}
