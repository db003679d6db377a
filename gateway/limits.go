package gateway

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// bucket is a token bucket refilled continuously at capacity per minute.
type bucket struct {
	capacity float64
	tokens   float64
	last     time.Time
}

// refill brings the bucket to time now under a (possibly changed) limit.
func (b *bucket) refill(limit int, now time.Time) {
	c := float64(limit)
	if b.capacity != c {
		if b.last.IsZero() || b.tokens > c {
			b.tokens = c
		}
		b.capacity = c
	}
	if !b.last.IsZero() {
		b.tokens = math.Min(c, b.tokens+now.Sub(b.last).Seconds()*c/60)
	}
	b.last = now
}

// wait returns how long until the bucket holds n tokens.
func (b *bucket) wait(n float64) time.Duration {
	if b.tokens >= n {
		return 0
	}
	return time.Duration((n - b.tokens) / (b.capacity / 60) * float64(time.Second))
}

// effectiveLimit is the tighter of a key's limit and its tenant's (zero
// means none): a key can narrow its tenant's limits, never widen them.
func effectiveLimit(key, tenant int) int {
	switch {
	case key <= 0:
		return tenant
	case tenant <= 0:
		return key
	}
	return min(key, tenant)
}

// full returns how long until the bucket is full again.
func (b *bucket) full() time.Duration { return b.wait(b.capacity) }

// rateHeaders sets OpenAI's x-ratelimit-* headers for the limits in force:
// each limit, what is left of it and how long until it is whole again.
func rateHeaders(set func(k, v string), rpm, tpm int, st *keyState) {
	for _, l := range []struct {
		name  string
		limit int
		b     *bucket
	}{{"requests", rpm, &st.requests}, {"tokens", tpm, &st.tokens}} {
		if l.limit <= 0 {
			continue
		}
		set("X-Ratelimit-Limit-"+l.name, strconv.Itoa(l.limit))
		set("X-Ratelimit-Remaining-"+l.name, strconv.Itoa(max(0, int(l.b.tokens))))
		set("X-Ratelimit-Reset-"+l.name, l.b.full().Round(time.Millisecond).String())
	}
}

// admitRate takes one request and estTokens tokens from the key's buckets,
// or refuses with ERATELIMIT and the time after which it would succeed. A
// request whose estimate is bounded (it names its max_tokens) and larger
// than the whole per-minute token limit is refused outright, as no wait
// would let it in. It returns the tokens taken, to be reconciled with the
// real count. Either way it sets the x-ratelimit-* headers through set.
func (s *Server) admitRate(p *principal, estTokens int, bounded bool, set func(k, v string)) (int, error) {
	if p.state == nil {
		return 0, nil
	}
	rpm := effectiveLimit(p.key.Limits.RequestsPerMinute, p.tenant.Limits.RequestsPerMinute)
	tpm := effectiveLimit(p.key.Limits.TokensPerMinute, p.tenant.Limits.TokensPerMinute)
	if rpm <= 0 && tpm <= 0 {
		return 0, nil
	}
	now := time.Now()
	st := p.state
	st.mu.Lock()
	defer st.mu.Unlock()
	defer rateHeaders(set, rpm, tpm, st)
	if rpm > 0 {
		st.requests.refill(rpm, now)
	}
	if tpm > 0 {
		st.tokens.refill(tpm, now)
	}
	if rpm > 0 {
		if w := st.requests.wait(1); w > 0 {
			s.met.rejected.With("requests").Inc()
			return 0, nozzle.Errorf(nozzle.ERATELIMIT, "Rate limit reached for requests per minute (limit %d). Try again in %s.", rpm, roundUp(w)).
				WithReason("rate_limit_exceeded").WithRetryAfter(w)
		}
	}
	take := 0
	if tpm > 0 {
		if bounded && estTokens > tpm {
			s.met.rejected.With("tokens").Inc()
			return 0, nozzle.Errorf(nozzle.ERATELIMIT, "Request too large for tokens per minute: limit %d, requested about %d (the prompt and max_tokens for each choice). Reduce max_tokens, n or the prompt.", tpm, estTokens).
				WithReason("request_too_large")
		}
		// A request of unbounded length bigger than the whole bucket waits
		// for a full bucket; what it really used is owed afterwards.
		take = min(estTokens, tpm)
		if w := st.tokens.wait(float64(take)); w > 0 {
			s.met.rejected.With("tokens").Inc()
			return 0, nozzle.Errorf(nozzle.ERATELIMIT, "Rate limit reached for tokens per minute (limit %d, requested about %d). Try again in %s.", tpm, take, roundUp(w)).
				WithReason("rate_limit_exceeded").WithRetryAfter(w)
		}
		st.tokens.tokens -= float64(take)
	}
	if rpm > 0 {
		st.requests.tokens--
	}
	return take, nil
}

// reconcileTokens replaces a request's token estimate by its real count.
// Tokens used beyond the estimate are owed in full (the bucket goes as far
// below zero as they take it), so the limit holds on average whatever one
// request used.
func (s *Server) reconcileTokens(p *principal, taken, actual int) {
	if p.state == nil || taken == 0 && actual == 0 {
		return
	}
	st := p.state
	st.mu.Lock()
	if st.tokens.capacity > 0 {
		st.tokens.tokens = math.Min(st.tokens.capacity, st.tokens.tokens+float64(taken-actual))
	}
	st.mu.Unlock()
}

func roundUp(d time.Duration) string {
	return fmt.Sprintf("%ds", int64(math.Ceil(d.Seconds())))
}

// inflightSet holds the ledger request ids being served, so that a
// concurrent duplicate (same Idempotency-Key or X-Request-Id) is refused.
type inflightSet struct {
	shards [32]struct {
		mu sync.Mutex
		m  map[string]struct{}
	}
}

func newInflightSet() *inflightSet {
	s := &inflightSet{}
	for i := range s.shards {
		s.shards[i].m = map[string]struct{}{}
	}
	return s
}

// add claims id; it reports false if id is already claimed.
func (s *inflightSet) add(id string) bool {
	sh := &s.shards[shardOf(id, len(s.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[id]; ok {
		return false
	}
	sh.m[id] = struct{}{}
	return true
}

func (s *inflightSet) remove(id string) {
	sh := &s.shards[shardOf(id, len(s.shards))]
	sh.mu.Lock()
	delete(sh.m, id)
	sh.mu.Unlock()
}

// tenantSeqs counts each tenant's sequences running or queued
// (Config.TenantSequences).
type tenantSeqs struct {
	mu sync.Mutex
	n  map[string]int
}

// take claims n sequences for tenantID under limit (negative: none), or
// refuses with ERATELIMIT. Without a limit the sequences are counted all
// the same, so that release gives back what take took either way.
func (t *tenantSeqs) take(tenantID string, n, limit int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	if cur := t.n[tenantID]; limit >= 0 && cur+n > limit {
		return nozzle.Errorf(nozzle.ERATELIMIT, "Too many requests in progress: this organization has %d sequences running or queued (prompts × n of each request) and may have at most %d. Try again when some have finished.", cur, limit).
			WithReason("too_many_requests_in_flight").WithRetryAfter(time.Second)
	}
	t.n[tenantID] += n
	return nil
}

// takeOne claims one for tenantID under limit; false when it has limit.
func (t *tenantSeqs) takeOne(tenantID string, limit int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	if t.n[tenantID] >= limit {
		return false
	}
	t.n[tenantID]++
	return true
}

// release gives back n sequences of tenantID.
func (t *tenantSeqs) release(tenantID string, n int) {
	if n == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n[tenantID] <= n {
		delete(t.n, tenantID) // (a no-op on a nil map)
		return
	}
	t.n[tenantID] -= n
}
