package runtime_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestRuntime_NoAdapterSource: a runtime without an adapter source warns
// at start that it serves the base model only, serves it, and refuses a
// request naming an adapter as unavailable (the gateway then tries another
// runtime), in process and through the remote protocol alike.
func TestRuntime_NoAdapterSource(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	clock := newFakeClock(time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC))
	rt, err := runtime.OpenParts(runtime.Options{Logger: log, Clock: clock.Now}, runtime.TestParts{
		Info: fakeModel, Backend: newFakeEngine(clock, 64, 8), Codec: fakeCodec{}, EOS: []int{fakeEOS},
		Load: func(dir string) (runtime.HostAdapter, error) {
			t.Errorf("adapter loaded from %q without a source", dir)
			return nil, fmt.Errorf("no source")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rt.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "no adapter source") || !strings.Contains(out, "base model only") {
		t.Errorf("no start-up warning: %q", out)
	}
	cl, _ := serveOn(t, rt, listenTestPort(t))
	ctx := context.Background()
	for name, g := range map[string]nozzle.Generator{"InProcess": rt, "Remote": cl} {
		t.Run(name, func(t *testing.T) {
			if o := run(ctx, g, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 4}); o.err != nil {
				t.Errorf("base model: %v", o.err)
			}
			o := run(ctx, g, &nozzle.GenerateRequest{Prompt: "hello", MaxTokens: 4, Adapter: adapterFor(1)})
			e := nozzle.AsError(o.err)
			if e == nil || e.Code != nozzle.EUNAVAILABLE || e.Reason != "no_adapter_source" {
				t.Errorf("adapter request: %#v", o.err)
			}
			if o.text != "" {
				t.Errorf("adapter request produced %q", o.text)
			}
		})
	}
}
