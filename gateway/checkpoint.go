package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// streamCheckpoints keeps a running stream's usage so far in the ledger
// (nozzle.UsageCheckpointer), so that a crash of the gateway mid-stream
// still charges the tokens it sent: at most Config.StreamCheckpointEvery
// of them go uncharged.
//
// The stream's writer tells it each chunk's progress once the chunk is
// written (advance: a lock and a few stores, no write). The first
// checkpoint is taken at once, the next ones at most every `every` while
// there is progress no checkpoint has taken, each by a goroutine of its
// own (a timer's), so the stream never waits for the disk; one checkpoint
// at a time. Before the request's usage event is recorded, stop waits for
// the checkpoint under way: the event then ends the last one (its
// CheckpointID), in the same durable write.
type streamCheckpoints struct {
	cp     *completion
	ledger nozzle.UsageCheckpointer
	every  time.Duration

	mu      sync.Mutex
	idle    *sync.Cond        // signaled when busy becomes false
	prog    []nozzle.Progress // each choice's, up to its last chunk sent
	dirty   bool              // progress no checkpoint has taken
	busy    bool              // a checkpoint is due (timer) or being written
	stopped bool
	tried   bool // a checkpoint was written, or tried
	last    time.Time
	timer   *time.Timer
}

// newStreamCheckpoints returns the checkpoints of cp's stream, or nil when
// the ledger keeps none or they are turned off.
func (s *Server) newStreamCheckpoints(cp *completion) *streamCheckpoints {
	ledger, ok := s.deps.Ledger.(nozzle.UsageCheckpointer)
	if !ok || s.cfg.StreamCheckpointEvery <= 0 {
		return nil
	}
	c := &streamCheckpoints{cp: cp, ledger: ledger, every: s.cfg.StreamCheckpointEvery, prog: make([]nozzle.Progress, len(cp.reqs))}
	c.idle = sync.NewCond(&c.mu)
	return c
}

// advance records the progress of choice i once a chunk of its text has
// gone out. A generator that does not tell its progress counts a token a
// chunk.
func (c *streamCheckpoints) advance(i int, p nozzle.Progress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	old := c.prog[i]
	if p.CompletionTokens == 0 {
		p = old
		p.CompletionTokens++
	}
	p.CompletionTokens = max(p.CompletionTokens, old.CompletionTokens)
	c.prog[i] = p
	c.dirty = true
	c.schedule()
}

// schedule starts the next checkpoint when one is wanted and none is under
// way: at once for the first, else `every` after the last began. c.mu is
// held.
func (c *streamCheckpoints) schedule() {
	if c.busy || c.stopped || !c.dirty {
		return
	}
	c.busy = true
	if wait := c.every - time.Since(c.last); c.last.IsZero() || wait <= 0 {
		c.timer = nil
		go c.write()
	} else {
		c.timer = time.AfterFunc(wait, c.write)
	}
}

// write takes and writes a checkpoint of the progress so far.
func (c *streamCheckpoints) write() {
	c.mu.Lock()
	if c.stopped {
		c.busy = false
		c.idle.Broadcast()
		c.mu.Unlock()
		return
	}
	ev := c.event()
	c.dirty, c.tried, c.last = false, true, time.Now()
	c.mu.Unlock()

	s := c.cp.s
	// Not the request's context: the checkpoint is written whatever the
	// client does meanwhile.
	if err := c.ledger.CheckpointUsage(context.Background(), ev); err != nil {
		s.met.checkpointErrs.Inc()
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "usage checkpoint of a running stream failed; its tokens are charged when it ends",
			slog.String("request_id", ev.RequestID), slog.String("error", err.Error()))
	} else {
		s.met.checkpoints.Inc()
	}

	c.mu.Lock()
	c.busy = false
	c.schedule()
	if !c.busy {
		c.idle.Broadcast()
	}
	c.mu.Unlock()
}

// event is the request's usage so far, as its final event would have it:
// its attempt's id (a crash leaves an idempotent request's key free for a
// retry, as a client that goes away does), each prompt counted once (as
// completion.promptUsage counts it). c.mu is held.
func (c *streamCheckpoints) event() *nozzle.UsageEvent {
	cp, j := c.cp, c.cp.j
	ev := &nozzle.UsageEvent{
		RequestID: cp.attemptID,
		TenantID:  cp.p.tenant.ID,
		KeyID:     cp.p.key.ID,
		Model:     j.shownModel,
		Time:      time.Now().UTC(),
		Batch:     cp.st.batch,
	}
	if j.adapter != nil {
		ev.AdapterID, ev.AdapterName = j.adapter.ID, j.adapter.Name
	}
	n := max(j.n, 1)
	for g := 0; g < len(c.prog); g += n {
		var p, cached int64
		for _, x := range c.prog[g:min(g+n, len(c.prog))] {
			p = max(p, int64(x.PromptTokens))
			cached = max(cached, int64(x.CachedPromptTokens))
		}
		ev.PromptTokens += p
		ev.CachedPromptTokens += min(cached, p)
	}
	for _, x := range c.prog {
		ev.CompletionTokens += int64(x.CompletionTokens)
		ev.DeviceSeconds += x.DeviceSeconds
		if ev.RuntimeID == "" && x.RuntimeID != "" {
			ev.RuntimeID, ev.RatePerHour = x.RuntimeID, x.RatePerHour
		}
	}
	return ev
}

// stop ends the checkpoints once the stream has ended: no more are taken,
// and the one under way has been written when it returns. It reports
// whether any was taken, so that the request's event ends it. Safe to call
// twice.
func (c *streamCheckpoints) stop() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.timer != nil && c.timer.Stop() {
		c.busy = false // its write will not run
	}
	for c.busy {
		c.idle.Wait()
	}
	return c.tried
}
