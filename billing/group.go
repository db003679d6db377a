package billing

import (
	"errors"
	"sync"
)

// errLead tells a queued write that it leads the next group commit.
var errLead = errors.New("ledger: lead the next commit")

// waiter is one queued write of a group commit: its done channel (one
// slot) receives its result, or errLead when it is to lead.
type waiter interface{ doneCh() chan error }

// group is group commit without a committer goroutine: a write that finds
// no commit running leads one itself, on its own goroutine, for everything
// queued (up to max); writes that arrive meanwhile queue up, and when the
// commit is done the leader hands the lead to the first of them. A lone
// write thus commits without waking another goroutine, and under load each
// commit still carries every write that waited for it.
type group[T waiter] struct {
	max     int
	mu      sync.Mutex
	queue   []T
	leading bool
}

// do queues o, takes part in the group commit and returns o's result:
// commit(batch) must send each of the batch's writes its result.
func (g *group[T]) do(o T, commit func(batch []T)) error {
	g.mu.Lock()
	g.queue = append(g.queue, o)
	if g.leading {
		g.mu.Unlock()
		if err := <-o.doneCh(); err != errLead {
			return err
		}
		g.mu.Lock()
	}
	g.leading = true
	n := min(len(g.queue), g.max)
	batch := g.queue[:n:n]
	g.queue = append([]T(nil), g.queue[n:]...)
	g.mu.Unlock()

	commit(batch)

	g.mu.Lock()
	if len(g.queue) > 0 {
		next := g.queue[0]
		g.mu.Unlock()
		next.doneCh() <- errLead
	} else {
		g.leading = false
		g.mu.Unlock()
	}
	return <-o.doneCh()
}
