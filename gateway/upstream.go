package gateway

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
)

// upstream is one runtime and what the health checks learned about it.
type upstream struct {
	id       string
	gen      nozzle.Generator
	idHash   uint64
	healthy  atomic.Bool
	reported atomic.Int32 // the health last logged (reportedNone, …)
	info     atomic.Pointer[nozzle.ModelInfo]
	gauge    metrics.Gauge
	fails    metrics.Counter

	dropMu sync.Mutex
	drops  map[string]bool // deleted adapters' addresses it could not be told of
}

// maxPendingDrops bounds the deleted adapters kept for one upstream that
// could not be told of them; past it, they leave that runtime's caches by
// their budgets, as any adapter unused.
const maxPendingDrops = 4096

// upstreamRouter picks upstreams by adapter affinity: rendezvous (highest
// random weight) hashing of the adapter's SHA-256 (the base model hashes
// "") over the upstream ids, healthy upstreams first. The same adapter
// lands on the same runtime while it is healthy, so its weights stay
// resident there; when that runtime fails, only its adapters move.
type upstreamRouter struct {
	ups     []*upstream
	timeout time.Duration
	log     *slog.Logger
	ready   atomic.Bool
	model   atomic.Pointer[nozzle.ModelInfo] // from the last healthy check
	// dropWanted reports whether the runtimes may still drop a deleted
	// adapter's content: no adapter has it again. Nil: always.
	dropWanted func(ctx context.Context, sha string) bool
}

func newUpstreamRouter(ups []Upstream, timeout time.Duration, m *gatewayMetrics, log *slog.Logger) *upstreamRouter {
	r := &upstreamRouter{timeout: timeout, log: log}
	for _, u := range ups {
		x := &upstream{id: u.ID, gen: u.Generator, idHash: hashString(u.ID),
			gauge: m.healthy.With(u.ID), fails: m.failovers.With(u.ID), drops: map[string]bool{}}
		r.ups = append(r.ups, x)
	}
	return r
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finalizer: a bijection that spreads bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// order returns the upstreams to try for an adapter: healthy ones by
// descending rendezvous score; when none is healthy (before the first
// check, say), all of them in that order but those known to serve another
// model.
func (r *upstreamRouter) order(sha string, buf []*upstream) []*upstream {
	key := hashString(sha)
	out := buf[:0]
	for _, u := range r.ups {
		if u.healthy.Load() {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		for _, u := range r.ups {
			if u.reported.Load() != reportedOtherModel {
				out = append(out, u)
			}
		}
	}
	// Insertion sort by descending score: a handful of upstreams, no
	// allocation.
	for i := 1; i < len(out); i++ {
		u := out[i]
		su := mix64(key ^ u.idHash)
		j := i
		for j > 0 && mix64(key^out[j-1].idHash) < su {
			out[j] = out[j-1]
			j--
		}
		out[j] = u
	}
	return out
}

// generate runs req on the best upstream for its adapter, moving to the
// next one when an upstream answers EUNAVAILABLE before emitting anything.
func (r *upstreamRouter) generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	sha := ""
	if req.Adapter != nil {
		sha = req.Adapter.SHA256
	}
	var buf [8]*upstream
	ups := r.order(sha, buf[:0])
	emitted := false
	var cur *upstream
	wrapped := func(c nozzle.Chunk) error {
		emitted = true
		if c.Progress.RuntimeID == "" {
			c.Progress.RuntimeID = cur.id // as for the result, below
		}
		return emit(c)
	}
	var lastErr error
	for _, u := range ups {
		cur = u
		res, err := u.gen.Generate(ctx, req, wrapped)
		if err != nil && nozzle.ErrorCode(err) == nozzle.EUNAVAILABLE && !emitted && ctx.Err() == nil {
			u.fails.Inc()
			if u.reported.Swap(reportedDown) != reportedDown {
				r.log.LogAttrs(ctx, slog.LevelWarn, "upstream unhealthy; failing over", slog.String("upstream", u.id), slog.String("error", err.Error()))
			}
			r.setHealthy(u, false)
			lastErr = err
			continue
		}
		if res != nil && res.RuntimeID == "" {
			res.RuntimeID = u.id
		}
		return res, err
	}
	e := nozzle.Errorf(nozzle.EUNAVAILABLE, "No runtime can take the request right now. Please retry shortly.").
		WithReason("upstream_unavailable").WithRetryAfter(time.Second)
	if lastErr != nil {
		e.Err = lastErr
	}
	return nil, e
}

func (r *upstreamRouter) setHealthy(u *upstream, ok bool) {
	u.healthy.Store(ok)
	if ok {
		u.gauge.Set(1)
	} else {
		u.gauge.Set(0)
	}
	any := false
	for _, x := range r.ups {
		if x.healthy.Load() {
			any = true
			break
		}
	}
	r.ready.Store(any)
}

// Health last logged for an upstream (upstream.reported).
const (
	reportedNone int32 = iota
	reportedHealthy
	reportedDown
	reportedOtherModel
)

// checkAll asks every upstream for its model info, concurrently, then
// settles their health: an upstream that answers is healthy if it serves
// the reference model — the one served so far, or, at first, the model of
// the first upstream in the configured order that answers; one that
// serves another model is not, and says so in the log. The reference
// never changes while the gateway runs: the base model's upstreams all
// being down for a while must not hand the model's requests and adapters
// to an upstream serving another one (a misconfigured runtime). Then the
// upstreams found healthy are told of the adapters deleted while they
// could not be reached.
func (r *upstreamRouter) checkAll(ctx context.Context) {
	type answer struct {
		info nozzle.ModelInfo
		err  error
	}
	answers := make([]answer, len(r.ups))
	var wg sync.WaitGroup
	for i, u := range r.ups {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			defer cancel()
			answers[i].info, answers[i].err = u.gen.Info(cctx)
		})
	}
	wg.Wait()
	// The reference model is the one served so far while any upstream
	// still serves it (the first upstream being down must not make
	// another model the reference); else the first that answers sets it.
	var ref *nozzle.ModelInfo
	var refID string
	if prev := r.model.Load(); prev != nil {
		ref, refID = prev, "the model served so far"
		for i, u := range r.ups {
			if answers[i].err == nil && prev.SameModel(answers[i].info) {
				refID = u.id
				break
			}
		}
	}
	for i, u := range r.ups {
		a := &answers[i]
		switch {
		case a.err != nil:
			// Logged from the first check on: an upstream that never
			// answers (a wrong internal token, say) says why.
			if was := u.reported.Swap(reportedDown); was != reportedDown {
				level, msg := slog.LevelWarn, "upstream unhealthy"
				if e := nozzle.AsError(a.err); was == reportedNone && e != nil && e.Code == nozzle.EUNAVAILABLE && e.Reason == "" {
					level, msg = slog.LevelInfo, "upstream not ready yet" // a model still loading
				}
				r.log.LogAttrs(ctx, level, msg, slog.String("upstream", u.id), slog.String("error", a.err.Error()))
			}
			r.setHealthy(u, false)
		case ref != nil && !ref.SameModel(a.info):
			u.info.Store(&a.info)
			if u.reported.Swap(reportedOtherModel) != reportedOtherModel {
				r.log.LogAttrs(ctx, slog.LevelError, "upstream serves another model than the first upstream; it takes no requests until they match",
					slog.String("upstream", u.id), slog.String("model", a.info.ID), slog.String("first", refID), slog.String("first_model", ref.ID))
			}
			r.setHealthy(u, false)
		default:
			if ref == nil {
				ref, refID = &a.info, u.id
			}
			u.info.Store(&a.info)
			if u.reported.Swap(reportedHealthy) != reportedHealthy {
				r.log.LogAttrs(ctx, slog.LevelInfo, "upstream healthy", slog.String("upstream", u.id), slog.String("model", a.info.ID))
			}
			r.setHealthy(u, true)
		}
	}
	if ref != nil {
		// "created" in /v1/models is the earliest of the runtimes serving
		// the model (each reports its model folder's time, and copies of
		// one folder may differ): the same whichever answered first.
		m := *ref
		for i := range r.ups {
			if c := answers[i].info.CreatedAt; answers[i].err == nil && !c.IsZero() && c.Before(m.CreatedAt) && m.SameModel(answers[i].info) {
				m.CreatedAt = c
			}
		}
		r.model.Store(&m)
	}
	// Tell upstreams healthy again of the adapters deleted while they
	// could not be reached.
	for _, u := range r.ups {
		u.dropMu.Lock()
		pending := len(u.drops) > 0
		u.dropMu.Unlock()
		if pending && u.healthy.Load() {
			wg.Go(func() { r.retryDrops(ctx, u) })
		}
	}
	wg.Wait()
}

// dropAdapter tells every upstream that drops adapters
// (nozzle.AdapterDropper) that the adapter with content sha was deleted,
// all at once, each within the health checks' timeout. One that cannot be
// reached is told again once a health check finds it healthy; none makes
// the deletion fail, which is committed already.
func (r *upstreamRouter) dropAdapter(ctx context.Context, sha string) {
	ctx = context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for _, u := range r.ups {
		if _, ok := u.gen.(nozzle.AdapterDropper); ok {
			wg.Go(func() { r.tellDrop(ctx, u, sha) })
		}
	}
	wg.Wait()
}

// tellDrop tells u of one deleted adapter. It reports false when u cannot
// be reached, and keeps the adapter pending for u then.
func (r *upstreamRouter) tellDrop(ctx context.Context, u *upstream, sha string) bool {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := u.gen.(nozzle.AdapterDropper).DropAdapter(cctx, sha)
	u.dropMu.Lock()
	unreachable := err != nil && nozzle.ErrorCode(err) == nozzle.EUNAVAILABLE
	kept := false
	if unreachable && (u.drops[sha] || len(u.drops) < maxPendingDrops) {
		u.drops[sha], kept = true, true
	} else {
		delete(u.drops, sha)
	}
	u.dropMu.Unlock()
	switch {
	case kept:
		r.log.LogAttrs(ctx, slog.LevelWarn, "runtime not told of a deleted adapter; told when it is back",
			slog.String("upstream", u.id), slog.String("sha256", sha), slog.String("error", err.Error()))
	case err != nil:
		// An older runtime (no drops), or too many pending: the adapter
		// leaves its caches by their budgets.
		r.log.LogAttrs(ctx, slog.LevelWarn, "runtime not told of a deleted adapter; it leaves the runtime's caches by their budgets",
			slog.String("upstream", u.id), slog.String("sha256", sha), slog.String("error", err.Error()))
	}
	return !unreachable
}

// retryDrops tells u of the deleted adapters it missed, but those whose
// content an adapter has again; it stops at the first it cannot reach.
func (r *upstreamRouter) retryDrops(ctx context.Context, u *upstream) {
	u.dropMu.Lock()
	shas := slices.Sorted(maps.Keys(u.drops))
	u.dropMu.Unlock()
	for _, sha := range shas {
		if r.dropWanted != nil && !r.dropWanted(ctx, sha) {
			u.dropMu.Lock()
			delete(u.drops, sha)
			u.dropMu.Unlock()
			continue
		}
		if !r.tellDrop(ctx, u, sha) {
			return
		}
	}
}

func (r *upstreamRouter) loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.checkAll(ctx)
		}
	}
}

// modelInfo returns the base model's info as last seen by a health check.
func (r *upstreamRouter) modelInfo() (nozzle.ModelInfo, bool) {
	if m := r.model.Load(); m != nil {
		return *m, true
	}
	return nozzle.ModelInfo{}, false
}

// UpstreamStatus is one upstream's state, as GET /admin/upstreams shows it.
type UpstreamStatus struct {
	ID      string `json:"id"`
	Healthy bool   `json:"healthy"`
	Model   string `json:"model,omitempty"`
	Device  string `json:"device,omitempty"`
	// PendingDrops counts the deleted adapters the runtime could not be
	// told of yet (it is told once a health check finds it healthy).
	PendingDrops int `json:"pending_drops,omitempty"`
}

func (r *upstreamRouter) status() []UpstreamStatus {
	out := make([]UpstreamStatus, 0, len(r.ups))
	for _, u := range r.ups {
		st := UpstreamStatus{ID: u.id, Healthy: u.healthy.Load()}
		if info := u.info.Load(); info != nil {
			st.Model, st.Device = info.ID, info.Device
		}
		u.dropMu.Lock()
		st.PendingDrops = len(u.drops)
		u.dropMu.Unlock()
		out = append(out, st)
	}
	return out
}

// CheckUpstreams runs the upstream health checks now (they also run every
// Config.HealthInterval).
func (s *Server) CheckUpstreams(ctx context.Context) { s.router.checkAll(ctx) }
