package gateway

import (
	"context"
	"log/slog"
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
}

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
}

func newUpstreamRouter(ups []Upstream, timeout time.Duration, m *gatewayMetrics, log *slog.Logger) *upstreamRouter {
	r := &upstreamRouter{timeout: timeout, log: log}
	for _, u := range ups {
		x := &upstream{id: u.ID, gen: u.Generator, idHash: hashString(u.ID),
			gauge: m.healthy.With(u.ID), fails: m.failovers.With(u.ID)}
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
	wrapped := func(c nozzle.Chunk) error {
		emitted = true
		return emit(c)
	}
	var lastErr error
	for _, u := range ups {
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
// to an upstream serving another one (a misconfigured runtime).
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
		r.model.Store(ref)
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
}

func (r *upstreamRouter) status() []UpstreamStatus {
	out := make([]UpstreamStatus, 0, len(r.ups))
	for _, u := range r.ups {
		st := UpstreamStatus{ID: u.id, Healthy: u.healthy.Load()}
		if info := u.info.Load(); info != nil {
			st.Model, st.Device = info.ID, info.Device
		}
		out = append(out, st)
	}
	return out
}

// CheckUpstreams runs the upstream health checks now (they also run every
// Config.HealthInterval).
func (s *Server) CheckUpstreams(ctx context.Context) { s.router.checkAll(ctx) }
