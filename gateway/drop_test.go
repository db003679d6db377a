package gateway_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

// dropRecorder is the runtimes' side of adapter drops: what each upstream
// was told to drop, and upstreams made unreachable (answering
// EUNAVAILABLE) or hanging (until the call's deadline).
type dropRecorder struct {
	mu      sync.Mutex
	dropped map[string][]string // upstream id → addresses, in order
	down    map[string]bool
	hang    map[string]bool
}

func newDropRecorder() *dropRecorder {
	return &dropRecorder{dropped: map[string][]string{}, down: map[string]bool{}, hang: map[string]bool{}}
}

func (r *dropRecorder) set(m map[string]bool, id string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m[id] = on
}

func (r *dropRecorder) got(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.dropped[id])
}

// withDrops makes every upstream a runtime that drops deleted adapters,
// into rec. Give it after withUpstreams.
func withDrops(rec *dropRecorder) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		for i, u := range d.Upstreams {
			id := u.ID
			d.Upstreams[i].Generator = struct {
				nozzle.Generator
				nozzle.AdapterDropper
			}{u.Generator, &mock.AdapterDropper{DropAdapterFn: func(ctx context.Context, sha string) error {
				rec.mu.Lock()
				hang, down := rec.hang[id], rec.down[id]
				rec.mu.Unlock()
				if hang {
					<-ctx.Done()
					return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime cannot be reached.").Wrap(ctx.Err())
				}
				if down {
					return nozzle.Errorf(nozzle.EUNAVAILABLE, "The runtime cannot be reached.")
				}
				rec.mu.Lock()
				defer rec.mu.Unlock()
				rec.dropped[id] = append(rec.dropped[id], sha)
				return nil
			}}}
		}
	}
}

func (f *fixture) deleteAdapter(t *testing.T, path string, h header) {
	t.Helper()
	resp := f.do(http.MethodDelete, path, "", h)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE %s: %d %s", path, resp.StatusCode, readAll(t, resp))
	}
	resp.Body.Close()
}

func (f *fixture) pendingDrops(t *testing.T) map[string]int {
	t.Helper()
	var ups struct{ Data []gateway.UpstreamStatus }
	decode(t, f.do(http.MethodGet, "/admin/upstreams", "", bearer(adminToken)), &ups)
	out := map[string]int{}
	for _, u := range ups.Data {
		out[u.ID] = u.PendingDrops
	}
	return out
}

func wantDropped(t *testing.T, rec *dropRecorder, id string, want ...string) {
	t.Helper()
	if got := rec.got(id); !slices.Equal(got, want) {
		t.Errorf("%s was told to drop %q, want %q", id, got, want)
	}
}

// TestDeleteAdapter_RuntimesDropIt: deleting an adapter (DELETE
// /v1/adapters/{name}, or /v1/models/{name} as the SDKs do) tells every
// runtime to drop its weights, not only the one its requests go to.
func TestDeleteAdapter_RuntimesDropIt(t *testing.T) {
	rec := newDropRecorder()
	f := newFixture(t, withUpstreams(2), withDrops(rec))
	x, y := sha256hex([]byte("x")), sha256hex([]byte("y"))
	f.addAdapter(f.tenantA.ID, "x", x)
	f.addAdapter(f.tenantA.ID, "y", y)
	f.deleteAdapter(t, "/v1/adapters/x", f.authA())
	f.deleteAdapter(t, "/v1/models/y", f.authA())
	for _, id := range []string{"rt0", "rt1"} {
		wantDropped(t, rec, id, x, y)
	}
	if p := f.pendingDrops(t); p["rt0"] != 0 || p["rt1"] != 0 {
		t.Errorf("pending drops %v", p)
	}
}

// TestDeleteAdapter_SharedContentStays: content is stored once for every
// adapter that has it, whichever tenant's: the runtimes drop it only when
// the last adapter with it is deleted.
func TestDeleteAdapter_SharedContentStays(t *testing.T) {
	rec := newDropRecorder()
	f := newFixture(t, withDrops(rec))
	s := sha256hex([]byte("shared"))
	f.addAdapter(f.tenantA.ID, "a1", s)
	f.addAdapter(f.tenantA.ID, "a2", s)
	f.addAdapter(f.tenantB.ID, "b1", s)
	f.deleteAdapter(t, "/v1/adapters/a1", f.authA()) // a2 and b1 have it
	f.deleteAdapter(t, "/v1/adapters/b1", bearer(f.keyB))
	wantDropped(t, rec, "rt0")
	f.deleteAdapter(t, "/v1/adapters/a2", f.authA()) // the last one
	wantDropped(t, rec, "rt0", s)
}

// TestDeleteAdapter_UnreachableRuntime: a runtime that cannot be told, or
// that hangs, fails no delete and holds it up at most the health check's
// timeout; once a health check finds it healthy it is told, except of
// content an adapter has again meanwhile.
func TestDeleteAdapter_UnreachableRuntime(t *testing.T) {
	rec := newDropRecorder()
	f := newFixture(t, withUpstreams(3), withDrops(rec), withConfig(func(c *gateway.Config) { c.HealthTimeout = 300 * time.Millisecond }))
	ctx := context.Background()
	f.srv.CheckUpstreams(ctx)
	rec.set(rec.down, "rt1", true)
	f.gens[1].down.Store(true)
	rec.set(rec.hang, "rt2", true)
	x, z := sha256hex([]byte("x")), sha256hex([]byte("z"))
	f.addAdapter(f.tenantA.ID, "x", x)
	f.addAdapter(f.tenantA.ID, "z", z)
	start := time.Now()
	f.deleteAdapter(t, "/v1/adapters/x", f.authA())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the delete took %v with a runtime hanging", d)
	}
	f.deleteAdapter(t, "/v1/adapters/z", f.authA())
	wantDropped(t, rec, "rt0", x, z)
	wantDropped(t, rec, "rt1")
	wantDropped(t, rec, "rt2")
	if p := f.pendingDrops(t); p["rt0"] != 0 || p["rt1"] != 2 || p["rt2"] != 2 {
		t.Errorf("pending drops %v, want rt1 and rt2 at 2", p)
	}
	// z's content is uploaded again (by another tenant) before they are back.
	f.addAdapter(f.tenantB.ID, "z-again", z)

	// rt2 answers again; rt1 is still down: its check fails, nothing is sent.
	rec.set(rec.hang, "rt2", false)
	f.srv.CheckUpstreams(ctx)
	wantDropped(t, rec, "rt2", x)
	wantDropped(t, rec, "rt1")

	rec.set(rec.down, "rt1", false)
	f.gens[1].down.Store(false)
	f.srv.CheckUpstreams(ctx)
	wantDropped(t, rec, "rt1", x)
	if p := f.pendingDrops(t); p["rt1"] != 0 || p["rt2"] != 0 {
		t.Errorf("pending drops %v after the runtimes came back", p)
	}
	f.srv.CheckUpstreams(ctx)
	wantDropped(t, rec, "rt1", x) // told once
}
