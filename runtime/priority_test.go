package runtime_test

import (
	"context"
	"sync"
	"testing"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// TestScheduler_BackgroundYields: batch-class requests (Background) fill
// a one-place batch and queue behind it; interactive requests sent then —
// of the same tenant and of another — are admitted before any waiting
// batch request (the running one gives back its place), in process and
// over the remote protocol, which carries the class. The batch requests'
// answers are the same as alone.
func TestScheduler_BackgroundYields(t *testing.T) {
	rt := startFake(t, runtime.Options{MaxBatchSeqs: 1}, 256)
	defer closeRT(t, rt)
	rt.eng.eosBias = -100
	for name, g := range map[string]nozzle.Generator{"local": rt, "remote": serve(t, rt.Runtime)} {
		t.Run(name, func(t *testing.T) {
			batch := make([]*nozzle.GenerateRequest, 5)
			alone := make([]outcome, len(batch))
			for i := range batch {
				batch[i] = &nozzle.GenerateRequest{TenantID: "acme", Background: true, PromptTokens: randomPrompt(newRNG(uint64(70+i)), 20), MaxTokens: 40}
				alone[i] = run(context.Background(), g, batch[i])
			}
			var mu sync.Mutex
			var order []string // request names in the order they finished
			done := func(name string) {
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
			}
			started := make(chan struct{})
			var once sync.Once
			steps := rt.eng.steps
			rt.eng.onStep = func(n int) {
				// steps slow enough that a request sent now arrives
				// while the batch requests still run (40 steps each)
				time.Sleep(300 * time.Microsecond)
				if n >= steps+10 { // the first batch request runs, the others wait
					once.Do(func() { close(started) })
				}
			}
			defer func() { rt.eng.onStep = nil }()
			got := make([]outcome, len(batch))
			var wg sync.WaitGroup
			for i, req := range batch {
				wg.Add(1)
				go func() {
					defer wg.Done()
					got[i] = run(context.Background(), g, req)
					done("batch")
				}()
			}
			<-started
			var live sync.WaitGroup
			for _, tenant := range []string{"acme", "globex"} {
				live.Add(1)
				go func() {
					defer live.Done()
					o := run(context.Background(), g, &nozzle.GenerateRequest{TenantID: tenant, PromptTokens: randomPrompt(newRNG(9), 20), MaxTokens: 5})
					if o.err != nil {
						t.Error(o.err)
					}
					done("live")
				}()
			}
			live.Wait()
			wg.Wait()
			// Both interactive requests end before all but at most the
			// one batch request that was running (it gives back its place
			// and may be readmitted only after them).
			last := 0
			for i, name := range order {
				if name == "live" {
					last = i
				}
			}
			if before := last - 1; before > 1 {
				t.Errorf("finish order %v: %d batch requests ended before the interactive ones", order, before)
			}
			for i, o := range got {
				if o.err != nil || o.text != alone[i].text {
					t.Errorf("batch %d: %q (%v), alone %q", i, o.text, o.err, alone[i].text)
				}
			}
		})
	}
}
