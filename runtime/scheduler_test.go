package runtime_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// collect runs req and gathers its chunks.
type outcome struct {
	text   string
	chunks []nozzle.Chunk
	res    *nozzle.GenerateResult
	err    error
}

func run(ctx context.Context, g nozzle.Generator, req *nozzle.GenerateRequest) outcome {
	var o outcome
	var b strings.Builder
	o.res, o.err = g.Generate(ctx, req, func(c nozzle.Chunk) error {
		o.chunks = append(o.chunks, c)
		b.WriteString(c.Text)
		return nil
	})
	o.text = b.String()
	return o
}

func closeRT(t testing.TB, rt *testRT) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestGenerate_Greedy(t *testing.T) {
	rt := startFake(t, runtime.Options{}, 256)
	defer closeRT(t, rt)
	req := &nozzle.GenerateRequest{RequestID: "r1", TenantID: "t1", Prompt: "hello world", MaxTokens: 20}
	a := run(context.Background(), rt, req)
	if a.err != nil {
		t.Fatal(a.err)
	}
	b := run(context.Background(), rt, req)
	if a.text != b.text {
		t.Fatalf("greedy text differs: %q vs %q", a.text, b.text)
	}
	if a.res.PromptTokens != 1+2 { // BOS, "hello", " world"
		t.Errorf("prompt tokens = %d, want 3", a.res.PromptTokens)
	}
	if a.res.CompletionTokens == 0 || a.res.CompletionTokens > 20 {
		t.Errorf("completion tokens = %d", a.res.CompletionTokens)
	}
	if a.res.FinishReason != nozzle.FinishLength && a.res.FinishReason != nozzle.FinishStop {
		t.Errorf("finish reason %q", a.res.FinishReason)
	}
	if a.res.DeviceSeconds <= 0 || a.res.TTFTSeconds <= 0 {
		t.Errorf("account %+v", a.res)
	}
	for _, c := range a.chunks {
		if !utf8.ValidString(c.Text) {
			t.Errorf("chunk %q is not valid UTF-8", c.Text)
		}
	}
	t.Logf("text %q, %+v", a.text, *a.res)
}

var _ = sync.Mutex{}
