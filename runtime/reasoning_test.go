package runtime_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// startReasoning is a fake runtime serving a reasoning model; the fake
// chat template opens the thoughts when its variable think is true.
func startReasoning(t *testing.T) *testRT {
	info := fakeModel
	info.Reasoning = true
	return startFakeModel(t, runtime.Options{}, 64, time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), info)
}

func chatReq(kwargs string) *nozzle.GenerateRequest {
	return &nozzle.GenerateRequest{Messages: []nozzle.ChatMessage{{Role: "user", Content: "hi"}}, MaxTokens: 12,
		ChatTemplateKwargs: json.RawMessage(kwargs)}
}

// TestReasoning_Thoughts: a reasoning model's chat completion whose prompt
// opened its thoughts says so on its first chunk (only there), and counts
// the thoughts' tokens — all of them, as these never close; one whose
// prompt did not, or a model that does not reason, counts none.
func TestReasoning_Thoughts(t *testing.T) {
	ctx := context.Background()
	rt := startReasoning(t)
	defer closeRT(t, rt)
	if info, _ := rt.Info(ctx); !info.Reasoning || !info.ChatTemplateKwargs {
		t.Fatalf("info %+v", info)
	}

	o := run(ctx, rt, chatReq(`{"think": true}`))
	if o.err != nil || len(o.chunks) == 0 {
		t.Fatalf("%v, %d chunks", o.err, len(o.chunks))
	}
	for i, c := range o.chunks {
		if c.ThoughtsOpen != (i == 0) {
			t.Errorf("chunk %d: ThoughtsOpen %v", i, c.ThoughtsOpen)
		}
	}
	// The thoughts never close: every token but an end of sequence is
	// one of them.
	if n, r := o.res.CompletionTokens, o.res.ReasoningTokens; r == 0 || r > n || r < n-1 {
		t.Errorf("%d reasoning tokens of %d (%q)", r, n, o.text)
	}

	for name, req := range map[string]*nozzle.GenerateRequest{
		"NotOpened":  chatReq(`{"think": false}`),
		"NoKwargs":   chatReq(""),
		"NullKwargs": chatReq("null"),
		"Text":       {Prompt: "hello <think>\n", MaxTokens: 8},
	} {
		o := run(ctx, rt, req)
		if o.err != nil || o.res.ReasoningTokens != 0 || len(o.chunks) == 0 || o.chunks[0].ThoughtsOpen {
			t.Errorf("%s: %v, %+v, chunks %+v", name, o.err, o.res, o.chunks)
		}
	}

	plain := startFake(t, runtime.Options{}, 64)
	defer closeRT(t, plain)
	if o := run(ctx, plain, chatReq(`{"think": true}`)); o.err != nil || o.res.ReasoningTokens != 0 || o.chunks[0].ThoughtsOpen {
		t.Errorf("a model that does not reason: %v, %+v, chunks %+v", o.err, o.res, o.chunks)
	}
}

// TestReasoning_MagistralTags: a model that thinks between [THINK] and
// [/THINK] says so in its info, in process and remote; a prompt that
// ends with [THINK] opens its thoughts, one that ends with <think> does
// not.
func TestReasoning_MagistralTags(t *testing.T) {
	ctx := context.Background()
	info := fakeModel
	info.Reasoning, info.ReasoningTags = true, nozzle.MistralThinkTags
	rt := startFakeModel(t, runtime.Options{}, 64, time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), info)
	defer closeRT(t, rt)
	if got, err := rt.Info(ctx); err != nil || got.ReasoningTags != nozzle.MistralThinkTags {
		t.Errorf("info %+v %v", got, err)
	}
	if got, err := serve(t, rt.Runtime).Info(ctx); err != nil || !got.Reasoning || got.ReasoningTags != nozzle.MistralThinkTags {
		t.Errorf("remote info %+v %v", got, err)
	}
	o := run(ctx, rt, chatReq(`{"open": "[THINK]"}`))
	if o.err != nil || len(o.chunks) == 0 || !o.chunks[0].ThoughtsOpen || o.res.ReasoningTokens == 0 {
		t.Errorf("[THINK]: %v, %+v, chunks %+v", o.err, o.res, o.chunks)
	}
	o = run(ctx, rt, chatReq(`{"think": true}`))
	if o.err != nil || len(o.chunks) == 0 || o.chunks[0].ThoughtsOpen || o.res.ReasoningTokens != 0 {
		t.Errorf("<think>: %v, %+v, chunks %+v", o.err, o.res, o.chunks)
	}
}

// TestReasoning_TemplateKwargsRefused: chat template variables are a JSON
// object that goes with messages and sets none of the renderer's own.
func TestReasoning_TemplateKwargsRefused(t *testing.T) {
	ctx := context.Background()
	rt := startReasoning(t)
	defer closeRT(t, rt)
	for name, req := range map[string]*nozzle.GenerateRequest{
		"Messages":    chatReq(`{"messages": []}`),
		"GenPrompt":   chatReq(`{"think": true, "add_generation_prompt": false}`),
		"Tools":       chatReq(`{"tools": [{"type": "function"}]}`),
		"BOS":         chatReq(`{"bos_token": "<s>"}`),
		"EOS":         chatReq(`{"eos_token": "</s>"}`),
		"RaiseExc":    chatReq(`{"raise_exception": 1}`),
		"NotAnObject": chatReq(`[1, 2]`),
		"AString":     chatReq(`"think"`),
		"WithoutChat": {Prompt: "hi", MaxTokens: 4, ChatTemplateKwargs: json.RawMessage(`{"think": true}`)},
	} {
		o := run(ctx, rt, req)
		if e := nozzle.AsError(o.err); e == nil || e.Code != nozzle.EINVALID || e.Param != "chat_template_kwargs" {
			t.Errorf("%s: %v", name, o.err)
		}
	}
}

// TestRemote_Reasoning: the thoughts' mark and count come through the
// remote protocol as in process, streamed or not, and so do the template
// variables.
func TestRemote_Reasoning(t *testing.T) {
	rt := startReasoning(t)
	defer closeRT(t, rt)
	if info, err := serve(t, rt.Runtime).Info(context.Background()); err != nil || !info.Reasoning || !info.ChatTemplateKwargs {
		t.Errorf("remote info %+v %v", info, err)
	}
	adapted := chatReq(`{"think": true}`)
	adapted.Adapter = adapterFor(2)
	testParity(t, rt.Runtime, map[string]*nozzle.GenerateRequest{
		"Opened":    chatReq(`{"think": true}`),
		"NotOpened": chatReq(`{"think": false}`),
		"Refused":   chatReq(`{"tools": null}`),
		"Adapter":   adapted,
	}, fakeSHA(2))
}
