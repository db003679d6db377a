package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

// withCheckpoints gives the fixture a ledger that keeps running streams'
// usage checkpoints (in the world, ended by the request's event), taken
// every `every`; fail makes the ledger refuse them.
func withCheckpoints(every time.Duration, fail *atomic.Bool) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		c.StreamCheckpointEvery = every
		d.Ledger = struct {
			*mock.Ledger
			*mock.UsageCheckpointer
		}{f.ledger, &mock.UsageCheckpointer{CheckpointUsageFn: func(ctx context.Context, ev *nozzle.UsageEvent) error {
			if fail != nil && fail.Load() {
				return errors.New("disk full")
			}
			defer f.w.lock()()
			if f.w.byID[ev.RequestID] != nil {
				return nil // ended
			}
			f.w.checkpoints[ev.RequestID] = clone(ev)
			f.w.ckptLog = append(f.w.ckptLog, clone(ev))
			return nil
		}}}
	}
}

func (f *fixture) checkpointsTaken() (log []*nozzle.UsageEvent, live int, ends []string) {
	defer f.w.lock()()
	for _, ev := range f.w.ckptLog {
		log = append(log, clone(ev))
	}
	return log, len(f.w.checkpoints), append([]string(nil), f.w.ckptEnds...)
}

// TestStream_Checkpoints: a running stream's usage so far is checkpointed
// under its request id at once after its first token, then at most every
// interval (not a write a token), each checkpoint with what the final event
// needs and no more tokens than were sent; the final event ends the last
// checkpoint; non-streamed requests take none.
func TestStream_Checkpoints(t *testing.T) {
	const every = 60 * time.Millisecond
	f := newFixture(t, withCheckpoints(every, nil))
	f.gen.words = manyWords(30)
	f.gen.setDelay(10 * time.Millisecond)
	a := f.addAdapter(f.tenantA.ID, "sql", strings.Repeat("ab", 32))
	start := time.Now()
	resp := f.do(http.MethodPost, "/v1/chat/completions",
		`{"model":"sql","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`, f.authA())
	rid := resp.Header.Get("X-Request-Id")
	chunks := parseChunks(t, sseEvents(t, readAll(t, resp)))
	took := time.Since(start)
	if u := chunks[len(chunks)-1].Usage; u == nil || u.CompletionTokens != 30 {
		t.Fatalf("usage %+v", u)
	}
	log, live, ends := f.checkpointsTaken()
	evs := f.events()
	if len(evs) != 1 || evs[0].RequestID != rid || evs[0].Status != nozzle.UsageOK || ends[0] != rid {
		t.Fatalf("events %+v ending checkpoints %q; request %s", evs, ends, rid)
	}
	if live != 0 {
		t.Fatalf("%d checkpoints left after the final event", live)
	}
	// 30 tokens over about 300 ms: the first at once, then one per 60 ms.
	if max := int(took/every) + 2; len(log) < 2 || len(log) > max {
		t.Fatalf("%d checkpoints in %v (at most %d): %+v", len(log), took, max, log)
	}
	if log[0].CompletionTokens > 10 { // taken at once: 1 unless the machine is busy
		t.Errorf("first checkpoint after %d tokens, want it after the first", log[0].CompletionTokens)
	}
	var prev int64
	for i, c := range log {
		if c.RequestID != rid || c.TenantID != f.tenantA.ID || c.KeyID == "" || c.AdapterID != a.ID || c.AdapterName != "sql" ||
			c.Model != "sql" || c.RuntimeID != "rt0" || c.RatePerHour != 2.5 || c.PromptTokens != evs[0].PromptTokens || c.Time.IsZero() {
			t.Errorf("checkpoint %d %+v; event %+v", i, c, evs[0])
		}
		if c.CompletionTokens < prev || c.CompletionTokens > 30 || c.DeviceSeconds <= 0 || c.DeviceSeconds > evs[0].DeviceSeconds {
			t.Errorf("checkpoint %d: %d tokens, %v device seconds (before: %d)", i, c.CompletionTokens, c.DeviceSeconds, prev)
		}
		prev = c.CompletionTokens
	}

	// Not streamed: no checkpoints.
	resp = f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","messages":[{"role":"user","content":"hi"}]}`, f.authA())
	readAll(t, resp)
	if log2, _, _ := f.checkpointsTaken(); len(log2) != len(log) {
		t.Fatalf("a non-streamed request took %d checkpoints", len(log2)-len(log))
	}
}

// TestStream_CheckpointsIdempotent: an idempotent stream checkpoints under
// its attempt's id (a crash leaves its key free for a retry) and completes
// under its key's, ending the checkpoint; its replay takes none.
func TestStream_CheckpointsIdempotent(t *testing.T) {
	f := newFixture(t, withCheckpoints(20*time.Millisecond, nil))
	f.gen.words = manyWords(12)
	f.gen.setDelay(10 * time.Millisecond)
	body := `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	resp := f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr(gateway.HeaderIdempotencyKey, "k-1"))
	rid := resp.Header.Get("X-Request-Id")
	readAll(t, resp)
	log, live, ends := f.checkpointsTaken()
	evs := f.events()
	if len(log) == 0 || live != 0 || len(evs) != 1 || ends[0] != rid || evs[0].RequestID == rid || !strings.HasPrefix(evs[0].RequestID, "idem_") {
		t.Fatalf("checkpoints %d (%d left), events %+v ending %q; attempt %s", len(log), live, evs, ends, rid)
	}
	for _, c := range log {
		if c.RequestID != rid {
			t.Fatalf("checkpoint under %s, want the attempt's id %s", c.RequestID, rid)
		}
	}
	resp = f.do(http.MethodPost, "/v1/chat/completions", body, f.authA(), hdr(gateway.HeaderIdempotencyKey, "k-1"))
	if readAll(t, resp); resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatal("not replayed")
	}
	if log2, _, _ := f.checkpointsTaken(); len(log2) != len(log) || len(f.events()) != 1 {
		t.Fatalf("the replay took %d checkpoints, recorded %d events", len(log2)-len(log), len(f.events())-1)
	}
}

// TestStream_CheckpointsOff: a negative interval, or a ledger without
// checkpoints, takes none; the event names none.
func TestStream_CheckpointsOff(t *testing.T) {
	for name, opts := range map[string][]option{"off": {withCheckpoints(-1, nil)}, "ledger without": nil} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, opts...)
			f.gen.setDelay(5 * time.Millisecond)
			resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
			readAll(t, resp)
			log, _, ends := f.checkpointsTaken()
			if len(log) != 0 || len(ends) != 1 || ends[0] != "" {
				t.Fatalf("checkpoints %+v, events ending %q", log, ends)
			}
		})
	}
}

// TestStream_CheckpointFailure: a ledger that cannot checkpoint does not
// stop the stream, which is charged when it ends as always.
func TestStream_CheckpointFailure(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	f := newFixture(t, withCheckpoints(10*time.Millisecond, &fail))
	f.gen.setDelay(5 * time.Millisecond)
	resp := f.do(http.MethodPost, "/v1/chat/completions", `{"model":"base","stream":true,"messages":[{"role":"user","content":"hi"}]}`, f.authA())
	chunks := parseChunks(t, sseEvents(t, readAll(t, resp)))
	evs := f.events()
	if len(chunks) != 8 || len(evs) != 1 || evs[0].Status != nozzle.UsageOK || evs[0].CompletionTokens != 6 {
		t.Fatalf("%d chunks, events %+v", len(chunks), evs)
	}
	if m := readAll(t, f.do(http.MethodGet, "/metrics", "")); !strings.Contains(m, "nozzle_gateway_stream_checkpoint_errors_total ") || strings.Contains(m, "nozzle_gateway_stream_checkpoint_errors_total 0\n") {
		t.Fatalf("checkpoint errors not counted:\n%s", m)
	}
}
