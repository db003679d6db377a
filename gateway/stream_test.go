package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
)

// sseEvents splits a server-sent-events body into its data payloads.
func sseEvents(t testing.TB, body string) []string {
	t.Helper()
	var out []string
	for _, ev := range strings.Split(body, "\n\n") {
		if ev == "" {
			continue
		}
		if !strings.HasPrefix(ev, "data: ") {
			t.Fatalf("not a data event: %q", ev)
		}
		out = append(out, strings.TrimPrefix(ev, "data: "))
	}
	return out
}

type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Created int64  `json:"created"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string         `json:"text"`
		Logprobs     json.RawMessage `json:"logprobs"`
		FinishReason *string         `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

func parseChunks(t testing.TB, events []string) []chunk {
	t.Helper()
	if len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]: %q", events)
	}
	var out []chunk
	for _, e := range events[:len(events)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("chunk %q: %v", e, err)
		}
		out = append(out, c)
	}
	return out
}

func TestStream_Chat(t *testing.T) {
	f := newFixture(t)
	resp := f.do(http.MethodPost, "/v1/chat/completions",
		`{"model":"base","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, f.authA())
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rid := resp.Header.Get("X-Request-Id")
	chunks := parseChunks(t, sseEvents(t, readAll(t, resp)))
	// role, 6 tokens, finish, usage
	if len(chunks) != 9 {
		t.Fatalf("%d chunks: %+v", len(chunks), chunks)
	}
	var text strings.Builder
	for i, c := range chunks {
		if c.Object != "chat.completion.chunk" || c.ID != "chatcmpl-"+rid || c.Model != "tiny-llama" {
			t.Errorf("chunk %d head %+v", i, c)
		}
		switch {
		case i == 0:
			if c.Choices[0].Delta.Role == nil || *c.Choices[0].Delta.Role != "assistant" || c.Choices[0].FinishReason != nil {
				t.Errorf("first chunk %+v", c.Choices[0])
			}
		case i < 7:
			text.WriteString(*c.Choices[0].Delta.Content)
			if c.Choices[0].FinishReason != nil || c.Usage != nil {
				t.Errorf("chunk %d %+v", i, c)
			}
		case i == 7:
			if c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" {
				t.Errorf("finish chunk %+v", c.Choices[0])
			}
		case i == 8:
			if len(c.Choices) != 0 || c.Usage == nil || c.Usage.CompletionTokens != 6 || c.Usage.TotalTokens != c.Usage.PromptTokens+6 {
				t.Errorf("usage chunk %+v", c)
			}
		}
	}
	if text.String() != "Hello from the fake runtime." {
		t.Errorf("text %q", text.String())
	}
	evs := f.events()
	if len(evs) != 1 || evs[0].RequestID != rid || evs[0].Status != nozzle.UsageOK || evs[0].CompletionTokens != 6 {
		t.Fatalf("events %+v", evs)
	}
}

func TestStream_NoUsageChunk(t *testing.T) {
	f := newFixture(t)
	resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"n":2,"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
	raw := readAll(t, resp)
	if strings.Contains(raw, `"usage"`) {
		t.Errorf("usage without include_usage: %s", raw)
	}
	chunks := parseChunks(t, sseEvents(t, raw))
	texts := map[int]string{}
	finishes := 0
	for _, c := range chunks {
		ch := c.Choices[0]
		if ch.Delta.Content != nil {
			texts[ch.Index] += *ch.Delta.Content
		}
		if ch.FinishReason != nil {
			finishes++
		}
	}
	if texts[0] != "Hello from" || texts[1] != "Hello from" || finishes != 2 {
		t.Errorf("texts %v finishes %d", texts, finishes)
	}
}

func TestStream_Completions(t *testing.T) {
	f := newFixture(t)
	resp := f.do(http.MethodPost, "/v1/completions",
		`{"model":"base","stream":true,"echo":true,"max_tokens":3,"prompt":"Once","stream_options":{"include_usage":true}}`, f.authA())
	chunks := parseChunks(t, sseEvents(t, readAll(t, resp)))
	var text strings.Builder
	var last chunk
	for _, c := range chunks {
		if c.Object != "text_completion" {
			t.Errorf("object %q", c.Object)
		}
		if len(c.Choices) > 0 && c.Choices[0].Text != nil {
			text.WriteString(*c.Choices[0].Text)
		}
		last = c
	}
	if text.String() != "OnceHello from the" {
		t.Errorf("text %q", text.String())
	}
	if last.Usage == nil || last.Usage.CompletionTokens != 3 {
		t.Errorf("usage %+v", last.Usage)
	}
	resp = f.do(http.MethodPost, "/v1/completions", `{"model":"base","stream":true,"logprobs":1,"max_tokens":3,"prompt":"Once"}`, f.authA())
	chunks = parseChunks(t, sseEvents(t, readAll(t, resp)))
	if lp := chunks[0].Choices[0].Logprobs; !json.Valid(lp) || !strings.Contains(string(lp), `"token_logprobs":[-0.25]`) {
		t.Errorf("logprobs %s", lp)
	}
}

// TestCompletions_TextOffset checks a legacy completion's text_offset:
// characters (not bytes) from the start of the choice's text, the same
// streamed as not.
func TestCompletions_TextOffset(t *testing.T) {
	f := newFixture(t)
	f.gen.words = []string{"héllo", " wörld", "!", " ☃"}
	want := []int{0, 5, 11, 12}
	type lps struct {
		TextOffset []int `json:"text_offset"`
	}
	var out struct {
		Choices []struct {
			Logprobs lps
		}
	}
	decode(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hi","logprobs":1,"max_tokens":4}`, f.authA()), &out)
	if got := out.Choices[0].Logprobs.TextOffset; !slices.Equal(got, want) {
		t.Errorf("text_offset %v, want %v", got, want)
	}
	resp := f.do(http.MethodPost, "/v1/completions", `{"model":"base","stream":true,"prompt":"Hi","logprobs":1,"max_tokens":4}`, f.authA())
	var got []int
	for _, e := range sseEvents(t, readAll(t, resp)) {
		if e == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Logprobs *lps
			}
		}
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Logprobs != nil {
			got = append(got, c.Choices[0].Logprobs.TextOffset...)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("streamed text_offset %v, want %v", got, want)
	}
}

func TestStream_FailureMidway(t *testing.T) {
	f := newFixture(t)
	resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"messages":[{"role":"user","content":"FAIL_AFTER"}]}`, f.authA())
	events := sseEvents(t, readAll(t, resp))
	last := events[len(events)-1]
	if !strings.Contains(last, `"error"`) || !strings.Contains(last, "Internal error.") || strings.Contains(last, "exploded") {
		t.Errorf("last event %q", last)
	}
	for _, e := range events {
		if e == "[DONE]" {
			t.Errorf("[DONE] after a failure")
		}
	}
	evs := f.events()
	if len(evs) != 1 || evs[0].Status != nozzle.UsageFailed || evs[0].CompletionTokens != 2 {
		t.Fatalf("events %+v", evs)
	}
}

// TestStream_RefusedBeforeOutput: a refusal the runtime finds before a
// prompt produced anything (an adapter it cannot load, found after it
// echoed the prompt; one of several prompts refused while another one's
// text comes) is an HTTP error, streamed or not: no byte of a 200 stream,
// no echoed prompt, goes out before it; from a runtime that says when it
// accepted a prompt and from one that does not (older).
func TestStream_RefusedBeforeOutput(t *testing.T) {
	f := newFixture(t)
	f.addAdapter(f.tenantA.ID, "files-gone", notStoredSHA)
	for _, tc := range []struct {
		name, body   string
		status       int
		code, param  string
		generations  int64
		workRecorded bool
	}{
		// the runtime echoes a prompt of token ids at once, then fails to
		// load the adapter
		{"AdapterNotStoredTokens", `{"model":"files-gone","prompt":[1,2,3],"echo":true,"max_tokens":3}`, 404, "model_not_found", "", 1, false},
		{"AdapterNotStoredText", `{"model":"files-gone","prompt":"hello","echo":true,"max_tokens":3}`, 404, "model_not_found", "", 1, false},
		{"AdapterNotStoredChoices", `{"model":"files-gone","prompt":[[1,2],[3]],"echo":true,"n":2,"max_tokens":3}`, 404, "model_not_found", "", 4, false},
		{"AdapterNotStoredPromptOnly", `{"model":"files-gone","prompt":[1,2,3],"echo":true,"max_tokens":0}`, 404, "model_not_found", "", 1, false},
		// the first prompt's text comes at once, the second is refused
		// 50 ms later
		{"OnePromptRefusedLate", `{"model":"base","prompt":["hello","REFUSE_LATE"],"echo":true,"max_tokens":3}`, 400, "context_length_exceeded", "prompt", 2, true},
		{"FirstPromptRefusedLate", `{"model":"base","prompt":["REFUSE_LATE","hello"],"echo":true,"max_tokens":3}`, 400, "context_length_exceeded", "prompt", 2, true},
	} {
		for _, run := range []struct{ stream, older bool }{{false, false}, {true, false}, {true, true}} {
			stream := run.stream
			t.Run(fmt.Sprintf("%s/stream=%v/older=%v", tc.name, stream, run.older), func(t *testing.T) {
				f.gen.noAccept.Store(run.older)
				defer f.gen.noAccept.Store(false)
				body := tc.body
				if stream {
					body = strings.Replace(body, `"echo":true`, `"echo":true,"stream":true,"stream_options":{"include_usage":true}`, 1)
				}
				before, events := f.w.generations.Load(), len(f.events())
				r := f.do(http.MethodPost, "/v1/completions", body, f.authA())
				if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/event-stream") {
					t.Fatalf("a stream began (%s): %s", ct, readAll(t, r))
				}
				wantError(t, r, tc.status, "invalid_request_error", tc.code, tc.param)
				if n := f.w.generations.Load() - before; n != tc.generations {
					t.Errorf("%d generations, want %d", n, tc.generations)
				}
				// work done for another prompt is recorded, uncharged
				evs := f.events()[events:]
				if tc.workRecorded {
					if len(evs) != 1 || evs[0].Status != nozzle.UsageFailed {
						t.Errorf("events %+v", evs)
					}
				} else if len(evs) != 0 {
					t.Errorf("events %+v", evs)
				}
			})
		}
	}
	t.Run("Accepted", func(t *testing.T) {
		// Both prompts accepted: the stream holds the echoes and the text
		// in order, each choice's echo first.
		for body, want := range map[string][2]string{
			`{"model":"base","prompt":["hi","yo"],"echo":true,"max_tokens":2,"stream":true}`: {"hiHello from", "yoHello from"},
			`{"model":"base","prompt":[[7,8],[9]],"echo":true,"max_tokens":2,"stream":true}`: {"t7 t8 Hello from", "t9 Hello from"},
		} {
			r := f.do(http.MethodPost, "/v1/completions", body, f.authA())
			texts := [2]string{}
			for _, c := range parseChunks(t, sseEvents(t, readAll(t, r))) {
				for _, ch := range c.Choices {
					if ch.Text != nil {
						texts[ch.Index] += *ch.Text
					}
				}
			}
			if texts != want {
				t.Errorf("%s: texts %q", body, texts)
			}
		}
	})
}

func TestCompletions(t *testing.T) {
	f := newFixture(t)
	type resp struct {
		Object  string
		Choices []struct {
			Text         string
			Index        int
			FinishReason string `json:"finish_reason"`
			Logprobs     *struct {
				Tokens        []string
				TokenLogprobs []float64        `json:"token_logprobs"`
				TopLogprobs   []map[string]any `json:"top_logprobs"`
				TextOffset    []int            `json:"text_offset"`
			}
		}
		Usage struct {
			PromptTokens     int64 `json:"prompt_tokens"`
			CompletionTokens int64 `json:"completion_tokens"`
		}
	}
	for _, tc := range []struct {
		name, prompt string
		n, choices   int
		promptTokens int64 // each prompt once, however many choices
	}{
		{"String", `"Once upon a time"`, 1, 1, 5},
		{"Strings", `["a","b","c"]`, 1, 3, 3},
		{"StringsN", `["a","bcdefghij"]`, 3, 6, 4},
		{"Tokens", `[1,2,3]`, 1, 1, 2},
		{"TokenLists", `[[1,2],[3]]`, 2, 4, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"model":"base","max_tokens":2,"n":` + itoa(tc.n) + `,"prompt":` + tc.prompt + `}`
			r := f.do(http.MethodPost, "/v1/completions", body, f.authA())
			if r.StatusCode != 200 {
				t.Fatalf("status %d: %s", r.StatusCode, readAll(t, r))
			}
			var out resp
			decode(t, r, &out)
			if out.Object != "text_completion" || len(out.Choices) != tc.choices || out.Usage.CompletionTokens != int64(2*tc.choices) ||
				out.Usage.PromptTokens != tc.promptTokens {
				t.Fatalf("%+v", out)
			}
			for i, c := range out.Choices {
				if c.Index != i || c.Text != "Hello from" || c.FinishReason != "length" {
					t.Errorf("choice %+v", c)
				}
			}
		})
	}
	t.Run("TokenPrompt", func(t *testing.T) {
		f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":[5,6,7]}`, f.authA())
		// Without max_tokens, OpenAI's default for completions: 16.
		if req := f.gen.lastReq.Load(); len(req.PromptTokens) != 3 || req.Prompt != "" || req.MaxTokens != 16 {
			t.Errorf("request %+v", req)
		}
	})
	t.Run("Echo", func(t *testing.T) {
		var out resp
		decode(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hi","echo":true,"max_tokens":2}`, f.authA()), &out)
		if c := out.Choices[0]; c.Text != "HiHello from" || c.Logprobs != nil {
			t.Errorf("choice %+v", c)
		}
	})
	t.Run("EchoTokens", func(t *testing.T) {
		var out resp
		decode(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":[[7,8],[9]],"echo":true,"max_tokens":1}`, f.authA()), &out)
		if len(out.Choices) != 2 || out.Choices[0].Text != "t7 t8 Hello" || out.Choices[1].Text != "t9 Hello" {
			t.Errorf("choices %+v", out.Choices)
		}
	})
	t.Run("EchoOnly", func(t *testing.T) {
		// max_tokens 0 with echo: the prompt and its logprobs, nothing generated.
		var out resp
		decode(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hé!","echo":true,"logprobs":0,"max_tokens":0}`, f.authA()), &out)
		if c := out.Choices[0]; c.Text != "Hé!" || c.Logprobs == nil || len(c.Logprobs.Tokens) != 3 || c.FinishReason != "length" {
			t.Errorf("choice %+v", c)
		}
		if req := f.gen.lastReq.Load(); !req.PromptOnly || !req.Echo || req.MaxTokens != 0 {
			t.Errorf("request %+v", req)
		}
		// Without logprobs: the prompt alone, asked of the runtime too
		// (it counts the prompt's tokens), streamed or not.
		var plain resp
		decode(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hé!","echo":true,"max_tokens":0}`, f.authA()), &plain)
		if c := plain.Choices[0]; len(plain.Choices) != 1 || c.Text != "Hé!" || c.Logprobs != nil || c.FinishReason != "length" {
			t.Errorf("choices %+v", plain.Choices)
		}
		if req := f.gen.lastReq.Load(); !req.PromptOnly || !req.Echo || req.MaxTokens != 0 {
			t.Errorf("request %+v", req)
		}
		events := readAll(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hé!","echo":true,"max_tokens":0,"stream":true}`, f.authA()))
		if strings.Count(events, `"text":"Hé!"`) != 1 || !strings.Contains(events, `"finish_reason":"length"`) || !strings.HasSuffix(events, "data: [DONE]\n\n") {
			t.Errorf("stream:\n%s", events)
		}
		r := f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"x","max_tokens":0}`, f.authA())
		if r.StatusCode != 400 || !strings.Contains(readAll(t, r), `"param":"max_tokens"`) {
			t.Errorf("max_tokens 0 without echo: %d", r.StatusCode)
		}
	})
	t.Run("EchoOldRuntime", func(t *testing.T) {
		// A runtime of an earlier version would ignore echo: refused, not
		// answered without the prompt.
		old := newFixture(t, func(c *gateway.Config, d *gateway.Deps, f *fixture) { f.gen.noEcho = true })
		r := old.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"x","echo":true,"logprobs":1,"max_tokens":1}`, old.authA())
		if body := readAll(t, r); r.StatusCode != 400 || !strings.Contains(body, `"param":"echo"`) {
			t.Errorf("echo with logprobs to an old runtime: %d %s", r.StatusCode, body)
		}
		// echoing a text prompt needs nothing of the runtime
		var out resp
		decode(t, old.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hi","echo":true,"max_tokens":1}`, old.authA()), &out)
		if out.Choices[0].Text != "HiHello" {
			t.Errorf("text echo: %+v", out.Choices)
		}
	})
	t.Run("EchoLogprobs", func(t *testing.T) {
		// The prompt's tokens first, the first with null logprobs, as
		// OpenAI answers; offsets in characters across both.
		const want = `{"tokens":["H","é","!","Hello"," from"],"token_logprobs":[null,-0.5,-1,-0.25,-0.25],` +
			`"top_logprobs":[null,{"alt0":-1,"é":-0.5},{"alt0":-1,"!":-1},{"alt0":-1,"Hello":-0.25},{"alt0":-1," from":-0.25}],` +
			`"text_offset":[0,1,2,3,8]}`
		body := `{"model":"base","prompt":"Hé!","echo":true,"logprobs":1,"max_tokens":2}`
		var out struct {
			Choices []struct {
				Text     string
				Logprobs json.RawMessage
			}
		}
		decode(t, f.do(http.MethodPost, "/v1/completions", body, f.authA()), &out)
		if c := out.Choices[0]; c.Text != "Hé!Hello from" || string(c.Logprobs) != want {
			t.Errorf("text %q, logprobs\n%s\nwant\n%s", c.Text, c.Logprobs, want)
		}
		// Streamed: the prompt's chunk, then the completion's, the same numbers.
		var text string
		var got []map[string]any
		for _, e := range sseEvents(t, readAll(t, f.do(http.MethodPost, "/v1/completions", strings.Replace(body, `"echo"`, `"stream":true,"echo"`, 1), f.authA()))) {
			var c struct {
				Choices []struct {
					Text     string
					Logprobs map[string]any
				}
			}
			if e == "[DONE]" || json.Unmarshal([]byte(e), &c) != nil || len(c.Choices) == 0 {
				continue
			}
			text += c.Choices[0].Text
			if c.Choices[0].Logprobs != nil {
				got = append(got, c.Choices[0].Logprobs)
			}
		}
		if text != "Hé!Hello from" || len(got) != 3 || fmt.Sprint(got[0]["text_offset"]) != "[0 1 2]" ||
			fmt.Sprint(got[0]["token_logprobs"]) != "[<nil> -0.5 -1]" || fmt.Sprint(got[2]["text_offset"]) != "[8]" {
			t.Errorf("streamed %q %v", text, got)
		}
	})
	t.Run("Logprobs", func(t *testing.T) {
		// The sampled token is always among the top logprobs: logprobs + 1
		// entries where it is not among the most likely.
		for n, want := range map[int]int{0: 1, 2: 3} {
			var out resp
			decode(t, f.do(http.MethodPost, "/v1/completions", `{"model":"base","prompt":"Hi","logprobs":`+itoa(n)+`,"max_tokens":2}`, f.authA()), &out)
			c := out.Choices[0]
			if c.Logprobs == nil || len(c.Logprobs.Tokens) != 2 || c.Logprobs.TextOffset[0] != 0 || c.Logprobs.TextOffset[1] != 5 {
				t.Fatalf("logprobs=%d: choice %+v", n, c)
			}
			for i, top := range c.Logprobs.TopLogprobs {
				if len(top) != want || top[c.Logprobs.Tokens[i]] != c.Logprobs.TokenLogprobs[i] {
					t.Errorf("logprobs=%d: top %v of token %q (%v)", n, top, c.Logprobs.Tokens[i], c.Logprobs.TokenLogprobs[i])
				}
			}
		}
	})
	t.Run("BadInput", func(t *testing.T) {
		for _, tc := range []struct{ name, body, param string }{
			{"NoPrompt", `{"model":"base"}`, "prompt"},
			{"EmptyList", `{"model":"base","prompt":[]}`, "prompt"},
			{"MixedList", `{"model":"base","prompt":["a",1]}`, "prompt"},
			{"NegativeToken", `{"model":"base","prompt":[1,-2]}`, "prompt"},
			{"PromptObject", `{"model":"base","prompt":{"a":1}}`, "prompt"},
			{"LogprobsRange", `{"model":"base","prompt":"x","logprobs":6}`, "logprobs"},
			{"LogprobsNegative", `{"model":"base","prompt":"x","logprobs":-1}`, "logprobs"},
			{"Suffix", `{"model":"base","prompt":"x","suffix":"y"}`, "suffix"},
			{"FrequencyPenalty", `{"model":"base","prompt":"x","frequency_penalty":-2.01}`, "frequency_penalty"},
			{"LogitBias", `{"model":"base","prompt":"x","logit_bias":{"1":500}}`, "logit_bias"},
			{"TooManyChoices", `{"model":"base","prompt":["a","b","c","d","e"],"n":4}`, "n"},
			{"NullToken", `{"model":"base","prompt":[1,null]}`, "prompt"},
			{"NullPrompt", `{"model":"base","prompt":[null]}`, "prompt"},
			{"NullTokenList", `{"model":"base","prompt":[[1],null]}`, "prompt"},
			{"NullInTokenList", `{"model":"base","prompt":[[1],[2,null]]}`, "prompt"},
			{"NullString", `{"model":"base","prompt":["a",null]}`, "prompt"},
			{"MaxTokensPastContext", `{"model":"base","prompt":"x","max_tokens":9223372036854775807,"n":2}`, "max_tokens"},
			{"UnknownArgument", `{"model":"base","prompt":"x","repetition_penalty":1.2}`, "repetition_penalty"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := wantError(t, f.do(http.MethodPost, "/v1/completions", tc.body, f.authA()), 400, "invalid_request_error", "", tc.param)
				if tc.name == "UnknownArgument" && e.Error.Message != "Unrecognized request argument supplied: repetition_penalty" {
					t.Errorf("message %q", e.Error.Message)
				}
			})
		}
	})
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestSystemFingerprint: every answer and chunk names the base model's
// weights, as OpenAI's system_fingerprint names its backend.
func TestSystemFingerprint(t *testing.T) {
	f := newFixture(t)
	const want = `"system_fingerprint":"fp_0123456789ab"`
	for _, body := range []string{
		`{"model":"base","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`,
		`{"model":"base","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}`,
		`{"model":"base","prompt":"hi","max_tokens":2,"stream":true}`,
	} {
		path := "/v1/chat/completions"
		if strings.Contains(body, "prompt") {
			path = "/v1/completions"
		}
		got := readAll(t, f.do(http.MethodPost, path, body, f.authA()))
		if !strings.Contains(body, "stream") {
			if !strings.Contains(got, want) {
				t.Errorf("%s: %s", body, got)
			}
			continue
		}
		for _, e := range sseEvents(t, got) {
			if e != "[DONE]" && !strings.Contains(e, want) {
				t.Errorf("%s: event %s", body, e)
			}
		}
	}
}
