//go:build !linux

package gateway

import (
	"context"
	"time"
)

// newTicker returns a time.Ticker where no finer timer is at hand.
func newTicker(ctx context.Context, interval time.Duration) (ticker, error) {
	return &timeTicker{t: time.NewTicker(interval), ctx: ctx}, nil
}

type timeTicker struct {
	t   *time.Ticker
	ctx context.Context
}

func (t *timeTicker) wait() (int, error) {
	select {
	case <-t.ctx.Done():
		return 0, t.ctx.Err()
	case <-t.t.C:
		return 1, nil
	}
}

func (t *timeTicker) close() { t.t.Stop() }
