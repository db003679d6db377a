package runtime

import (
	"sync"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
)

// capacity keeps the runtime's capacity intervals: its life cut into
// stretches closed every IntervalLength and at every UTC hour boundary,
// each with the time spent in engine steps (active) and the rest (idle).
// Durations are kept in nanoseconds, so ActiveSeconds + IdleSeconds equals
// End − Start up to the conversion to float.
type capacity struct {
	mu        sync.Mutex
	runtimeID string
	rate      float64
	length    time.Duration
	start     time.Time // when the runtime came up
	stopped   bool
	stoppedAt time.Time

	cur       nozzle.CapacityInterval
	curEnd    time.Time // boundary that closes cur
	curActive time.Duration
	closed    []nozzle.CapacityInterval
	maxKept   int

	totalActive time.Duration
	totalIdle   time.Duration // of closed intervals
}

func newCapacity(runtimeID string, rate float64, length time.Duration, start time.Time) *capacity {
	c := &capacity{runtimeID: runtimeID, rate: rate, length: length, start: start, maxKept: 100000}
	c.open(firstSeq(start), start)
	return c
}

// firstSeq numbers a runtime's first interval: its start time in
// microseconds since the epoch. Sequence numbers then keep increasing
// across restarts of a runtime under the same id (a run closes far fewer
// intervals than microseconds pass before the next start), so the
// collector, which asks for intervals after the last one it stored, never
// skips a restarted runtime's. Microseconds stay exact in JSON numbers.
func firstSeq(start time.Time) uint64 { return uint64(max(start.UnixMicro(), 1)) }

// nextBoundary returns the first interval boundary after t: a multiple of
// the interval length since the Unix epoch or a UTC hour, whichever comes
// first.
func (c *capacity) nextBoundary(t time.Time) time.Time {
	t = t.Round(0).UTC()
	hour := t.Truncate(time.Hour).Add(time.Hour)
	if c.length <= 0 || c.length >= time.Hour {
		return hour
	}
	// time.Truncate counts from the zero time; count from the epoch.
	ns := t.UnixNano()
	l := int64(c.length)
	next := time.Unix(0, (ns/l+1)*l).UTC()
	if next.After(hour) {
		return hour
	}
	return next
}

func (c *capacity) open(seq uint64, start time.Time) {
	c.cur = nozzle.CapacityInterval{RuntimeID: c.runtimeID, Seq: seq, Start: start.Round(0).UTC(), RatePerHour: c.rate}
	c.curEnd = c.nextBoundary(start)
	c.curActive = 0
}

// closeCur closes the current interval at end.
func (c *capacity) closeCur(end time.Time) {
	iv := c.cur
	iv.End = end.Round(0).UTC()
	total := iv.End.Sub(iv.Start)
	active := min(c.curActive, total)
	iv.ActiveSeconds = active.Seconds()
	iv.IdleSeconds = (total - active).Seconds()
	c.totalIdle += total - active
	c.closed = append(c.closed, iv)
	if len(c.closed) > c.maxKept {
		c.closed = append(c.closed[:0], c.closed[len(c.closed)-c.maxKept:]...)
	}
}

// advance closes every interval whose boundary is at or before now.
func (c *capacity) advance(now time.Time) {
	for !c.stopped && !now.Before(c.curEnd) {
		end := c.curEnd
		c.closeCur(end)
		c.open(c.cur.Seq+1, end)
	}
}

// addActive records that an engine step ran from t0 to t1, splitting it
// at interval boundaries.
func (c *capacity) addActive(t0, t1 time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.totalActive += t1.Sub(t0)
	for !c.stopped && t0.Before(t1) {
		c.advance(t0)
		end := t1
		if end.After(c.curEnd) {
			end = c.curEnd
		}
		// Wall-clock boundaries and monotonic step times can disagree by
		// a little; the step time itself is what counts.
		d := end.Sub(t0)
		if end.Equal(t1) {
			d = t1.Sub(t0)
		}
		c.curActive += d
		t0 = end
	}
	if !c.stopped {
		c.advance(t1)
	}
}

// intervals returns closed intervals with Seq > after, closing those due
// by now first.
func (c *capacity) intervals(now time.Time, after uint64) []nozzle.CapacityInterval {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.advance(now)
	var out []nozzle.CapacityInterval
	for _, iv := range c.closed {
		if iv.Seq > after {
			out = append(out, iv)
		}
	}
	return out
}

// openInterval returns the open interval as it stands at now, computed as
// closeCur would close it there: from its start to now, with the engine
// steps finished so far as active time and the rest idle. It closes the
// intervals due by now first, so the snapshot never overlaps a closed
// interval. ok is false once the runtime stopped, or when no time has
// passed since the interval opened.
func (c *capacity) openInterval(now time.Time) (iv nozzle.CapacityInterval, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return iv, false
	}
	c.advance(now)
	iv = c.cur
	iv.End = now.Round(0).UTC()
	total := iv.End.Sub(iv.Start)
	if total <= 0 {
		return nozzle.CapacityInterval{}, false
	}
	active := min(c.curActive, total)
	iv.ActiveSeconds = active.Seconds()
	iv.IdleSeconds = (total - active).Seconds()
	return iv, true
}

// stop closes the last interval at now; no interval opens after it.
func (c *capacity) stop(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.advance(now)
	c.closeCur(now)
	c.stopped = true
	c.stoppedAt = now
}

// totals returns the runtime's uptime and the time it spent in steps.
func (c *capacity) totals(now time.Time) (uptime, active time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		now = c.stoppedAt
	}
	return now.Sub(c.start), c.totalActive
}
