package runtime_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/mock"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestNewGeneratorServer serves a plain Generator over the remote protocol:
// the client sees its text, its account and its errors.
func TestNewGeneratorServer(t *testing.T) {
	gen := &mock.Generator{
		InfoFn: func(ctx context.Context) (nozzle.ModelInfo, error) {
			return nozzle.ModelInfo{ID: "stub", ContextLength: 128}, nil
		},
		GenerateFn: func(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
			if req.Prompt == "refuse" {
				return nil, nozzle.Errorf(nozzle.ECONTEXTLENGTH, "Too long.").WithParam("prompt")
			}
			for _, w := range []string{"Hello", " from", " the stub."} {
				if err := emit(nozzle.Chunk{Text: w}); err != nil {
					return nil, err
				}
			}
			return &nozzle.GenerateResult{FinishReason: nozzle.FinishStop, PromptTokens: 3, CompletionTokens: 3, RuntimeID: "stub"}, nil
		},
		AdapterTierFn: func(ctx context.Context, sha string) nozzle.Tier { return nozzle.TierHost },
	}
	srv := httptest.NewServer(runtime.NewGeneratorServer(gen, "tok"))
	defer srv.Close()
	c := runtime.NewClient(srv.URL, "tok", srv.Client())

	info, err := c.Info(context.Background())
	if err != nil || info.ID != "stub" {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	var text strings.Builder
	res, err := c.Generate(context.Background(), &nozzle.GenerateRequest{RequestID: "r1", Prompt: "hi"}, func(ch nozzle.Chunk) error {
		text.WriteString(ch.Text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if text.String() != "Hello from the stub." || res.CompletionTokens != 3 || res.PromptTokens != 3 || res.FinishReason != nozzle.FinishStop {
		t.Fatalf("text %q, result %+v", text.String(), res)
	}
	_, err = c.Generate(context.Background(), &nozzle.GenerateRequest{RequestID: "r2", Prompt: "refuse"}, func(nozzle.Chunk) error { return nil })
	if e := nozzle.AsError(err); e == nil || e.Code != nozzle.ECONTEXTLENGTH || e.Param != "prompt" {
		t.Fatalf("error %v, want context length on prompt", err)
	}
	if tier := c.AdapterTier(context.Background(), "abc"); tier != nozzle.TierHost {
		t.Fatalf("tier %q", tier)
	}
}

// BenchmarkRemoteGenerate is a 64-token completion over the remote
// protocol (client, loopback HTTP, server), streamed or answered in one
// piece.
func BenchmarkRemoteGenerate(b *testing.B) {
	const tokens = 64
	gen := &mock.Generator{
		GenerateFn: func(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
			for range tokens {
				if err := emit(nozzle.Chunk{Text: " word"}); err != nil {
					return nil, err
				}
			}
			return &nozzle.GenerateResult{FinishReason: nozzle.FinishLength, PromptTokens: 3, CompletionTokens: tokens, RuntimeID: "stub"}, nil
		},
	}
	srv := httptest.NewServer(runtime.NewGeneratorServer(gen, "tok"))
	defer srv.Close()
	c := runtime.NewClient(srv.URL, "tok", nil)
	for _, stream := range []bool{false, true} {
		name := "whole"
		if stream {
			name = "streamed"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				n := 0
				_, err := c.Generate(context.Background(), &nozzle.GenerateRequest{TenantID: "t", Prompt: "hi", MaxTokens: tokens, Stream: stream},
					func(ch nozzle.Chunk) error { n += len(ch.Text); return nil })
				if err != nil || n != 5*tokens {
					b.Fatalf("%d bytes of text, %v", n, err)
				}
			}
		})
	}
}

// A runtime that predates open capacity intervals answers 404 for them:
// the client reports none open, not an outage.
func TestClient_OpenCapacityOlderRuntime(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	c := runtime.NewClient(srv.URL, "tok", nil)
	iv, ok, err := c.OpenCapacity(context.Background())
	if err != nil || ok {
		t.Fatalf("OpenCapacity = %+v, %v, %v; want none open, no error", iv, ok, err)
	}
	if _, err := c.CapacityIntervals(context.Background(), 0); nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
		t.Fatalf("CapacityIntervals on a server without them: %v", err)
	}
}
