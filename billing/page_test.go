package billing_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/mock"
)

func mustKey(tb testing.TB, l *billing.Ledger, tenantID, name string) *nozzle.APIKey {
	tb.Helper()
	secret, err := nozzle.NewKeySecret()
	if err != nil {
		tb.Fatal(err)
	}
	k := &nozzle.APIKey{TenantID: tenantID, Name: name, Digest: nozzle.KeyDigest(secret), Prefix: nozzle.KeyDisplayPrefix(secret)}
	if err := l.CreateKey(context.Background(), k); err != nil {
		tb.Fatalf("CreateKey(%s): %v", name, err)
	}
	return k
}

func mustAdapter(tb testing.TB, l *billing.Ledger, tenantID, name string) *nozzle.Adapter {
	tb.Helper()
	a := &nozzle.Adapter{TenantID: tenantID, Name: name, AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32), Rank: 8}}
	if err := l.CreateAdapter(context.Background(), a); err != nil {
		tb.Fatalf("CreateAdapter(%s): %v", name, err)
	}
	return a
}

// pageAll reads a whole list page by page, each after the last one's
// last id, as the SDKs' auto-pagination does.
func pageAll[T any](tb testing.TB, limit int, id func(T) string, read func(q nozzle.PageQuery) (*nozzle.Page[T], error)) []string {
	tb.Helper()
	var out []string
	q := nozzle.PageQuery{Limit: limit}
	for range 10_000 {
		p, err := read(q)
		if err != nil {
			tb.Fatalf("page %+v: %v", q, err)
		}
		if len(p.Data) > limit {
			tb.Fatalf("page %+v has %d objects", q, len(p.Data))
		}
		for _, x := range p.Data {
			out = append(out, id(x))
		}
		if !p.HasMore {
			return out
		}
		if len(p.Data) == 0 {
			tb.Fatalf("page %+v is empty and has more", q)
		}
		q.After = id(p.Data[len(p.Data)-1])
	}
	tb.Fatal("paging does not end")
	return nil
}

func ids[T any](list []T, id func(T) string) []string {
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = id(x)
	}
	return out
}

func tenantID(t *nozzle.Tenant) string   { return t.ID }
func keyID(k *nozzle.APIKey) string      { return k.ID }
func adapterID(a *nozzle.Adapter) string { return a.ID }

// wantCursorRefused checks the refusal of a cursor that names nothing the
// caller may see: 400, its param, and the very message an id that never
// existed gets.
func wantCursorRefused(tb testing.TB, err error, param, id string) {
	tb.Helper()
	e := nozzle.AsError(err)
	want := nozzle.UnknownCursor(param, id)
	if e == nil || e.Code != nozzle.EINVALID || e.Param != param || e.Reason != want.Reason || e.Message != want.Message {
		tb.Fatalf("cursor %s=%s: %v, want %v", param, id, err, want)
	}
}

func TestTenantPage(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	for i := range 11 {
		mustTenant(t, l, fmt.Sprint("t", i))
		if i%3 != 0 { // some created in the same instant: the id breaks the tie
			clk.Add(time.Second)
		}
	}
	all, err := l.Tenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := ids(all, tenantID)
	read := func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.Tenant], error) { return l.TenantPage(ctx, q) }
	t.Run("OldestFirst", func(t *testing.T) {
		for _, limit := range []int{1, 3, 4, 11, 12} {
			if got := pageAll(t, limit, tenantID, read); !slices.Equal(got, want) {
				t.Fatalf("limit %d: %v, want %v", limit, got, want)
			}
		}
		p, err := l.TenantPage(ctx, nozzle.PageQuery{})
		if err != nil || p.HasMore || !slices.Equal(ids(p.Data, tenantID), want) {
			t.Fatalf("default page: %v, %v", p, err)
		}
	})
	t.Run("Descending", func(t *testing.T) {
		p, err := l.TenantPage(ctx, nozzle.PageQuery{Limit: 4, Order: nozzle.Descending})
		rev := slices.Clone(want)
		slices.Reverse(rev)
		if err != nil || !p.HasMore || !slices.Equal(ids(p.Data, tenantID), rev[:4]) {
			t.Fatalf("newest 4: %v, %v", p, err)
		}
	})
	t.Run("HasMore", func(t *testing.T) {
		p, _ := l.TenantPage(ctx, nozzle.PageQuery{Limit: 10})
		if !p.HasMore || len(p.Data) != 10 {
			t.Fatalf("10 of 11: has_more %v, %d", p.HasMore, len(p.Data))
		}
		p, _ = l.TenantPage(ctx, nozzle.PageQuery{Limit: 5, After: want[5]})
		if p.HasMore || !slices.Equal(ids(p.Data, tenantID), want[6:]) {
			t.Fatalf("the last 5 exactly: %v", p)
		}
	})
	t.Run("AfterTheEnd", func(t *testing.T) {
		p, err := l.TenantPage(ctx, nozzle.PageQuery{After: want[len(want)-1]})
		if err != nil || len(p.Data) != 0 || p.HasMore {
			t.Fatalf("after the last: %v, %v", p, err)
		}
		p, err = l.TenantPage(ctx, nozzle.PageQuery{Before: want[0]})
		if err != nil || len(p.Data) != 0 || p.HasMore {
			t.Fatalf("before the first: %v, %v", p, err)
		}
	})
	t.Run("Before", func(t *testing.T) {
		p, err := l.TenantPage(ctx, nozzle.PageQuery{Limit: 3, Before: want[7]})
		if err != nil || !p.HasMore || !slices.Equal(ids(p.Data, tenantID), want[4:7]) {
			t.Fatalf("3 before #7: %v, %v", p, err)
		}
		p, err = l.TenantPage(ctx, nozzle.PageQuery{Limit: 3, Before: want[2]})
		if err != nil || p.HasMore || !slices.Equal(ids(p.Data, tenantID), want[:2]) {
			t.Fatalf("3 before #2: %v, %v", p, err)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		_, err := l.TenantPage(ctx, nozzle.PageQuery{After: "ten_nope"})
		wantCursorRefused(t, err, "after", "ten_nope")
		_, err = l.TenantPage(ctx, nozzle.PageQuery{Before: "ten_nope"})
		wantCursorRefused(t, err, "before", "ten_nope")
		for _, q := range []nozzle.PageQuery{{Limit: -1}, {Limit: nozzle.MaxPageLimit + 1}, {Order: "up"}, {After: want[0], Before: want[1]}} {
			_, err := l.TenantPage(ctx, q)
			wantCode(t, err, nozzle.EINVALID)
		}
	})
}

func TestKeyPage(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	acme, globex := mustTenant(t, l, "acme"), mustTenant(t, l, "globex")
	var made []*nozzle.APIKey
	for i := range 9 {
		made = append(made, mustKey(t, l, acme.ID, fmt.Sprint("k", i)))
		mustKey(t, l, globex.ID, fmt.Sprint("g", i))
		clk.Add(time.Minute)
	}
	foreign := mustKey(t, l, globex.ID, "theirs")
	// Revoked: k4, then k1, then k7.
	for _, i := range []int{4, 1, 7} {
		if err := l.RevokeKey(ctx, acme.ID, made[i].ID); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Minute)
	}
	all, err := l.Keys(ctx, acme.ID)
	if err != nil || len(all) != 9 {
		t.Fatalf("Keys: %d, %v", len(all), err)
	}
	want := ids(all, keyID) // newest first
	t.Run("NewestFirst", func(t *testing.T) {
		got := pageAll(t, 2, keyID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.APIKey], error) {
			return l.KeyPage(ctx, acme.ID, q, nozzle.AllKeys)
		})
		if !slices.Equal(got, want) || got[0] != made[8].ID {
			t.Fatalf("%v, want %v", got, want)
		}
	})
	t.Run("OldestFirst", func(t *testing.T) {
		got := pageAll(t, 4, keyID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.APIKey], error) {
			q.Order = nozzle.Ascending
			return l.KeyPage(ctx, acme.ID, q, nozzle.AllKeys)
		})
		if !slices.Equal(got, ids(made, keyID)) {
			t.Fatalf("%v, want %v", got, ids(made, keyID))
		}
	})
	t.Run("Active", func(t *testing.T) {
		got := pageAll(t, 2, keyID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.APIKey], error) {
			return l.KeyPage(ctx, acme.ID, q, nozzle.ActiveKeys)
		})
		var active []string
		for i := 8; i >= 0; i-- {
			if i != 4 && i != 1 && i != 7 {
				active = append(active, made[i].ID)
			}
		}
		if !slices.Equal(got, active) {
			t.Fatalf("%v, want %v", got, active)
		}
		// A revoked key is a place among the active ones all the same.
		p, err := l.KeyPage(ctx, acme.ID, nozzle.PageQuery{Limit: 2, After: made[7].ID}, nozzle.ActiveKeys)
		if err != nil || !slices.Equal(ids(p.Data, keyID), []string{made[6].ID, made[5].ID}) || !p.HasMore {
			t.Fatalf("after revoked k7: %v, %v", p, err)
		}
	})
	t.Run("RevokedLastFirst", func(t *testing.T) {
		got := pageAll(t, 2, keyID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.APIKey], error) {
			return l.KeyPage(ctx, acme.ID, q, nozzle.RevokedKeys)
		})
		if w := []string{made[7].ID, made[1].ID, made[4].ID}; !slices.Equal(got, w) {
			t.Fatalf("%v, want %v", got, w)
		}
		p, err := l.KeyPage(ctx, acme.ID, nozzle.PageQuery{Before: made[4].ID, Limit: 1}, nozzle.RevokedKeys)
		if err != nil || !slices.Equal(ids(p.Data, keyID), []string{made[1].ID}) || !p.HasMore {
			t.Fatalf("before k4: %v, %v", p, err)
		}
	})
	t.Run("Isolation", func(t *testing.T) {
		// Another tenant's key is no cursor here: refused exactly as an id
		// that never existed.
		for _, f := range []nozzle.KeyFilter{nozzle.AllKeys, nozzle.ActiveKeys, nozzle.RevokedKeys} {
			_, err := l.KeyPage(ctx, acme.ID, nozzle.PageQuery{After: foreign.ID}, f)
			wantCursorRefused(t, err, "after", foreign.ID)
			_, err = l.KeyPage(ctx, acme.ID, nozzle.PageQuery{Before: foreign.ID}, f)
			wantCursorRefused(t, err, "before", foreign.ID)
		}
		// An adapter's id is not a key's.
		a := mustAdapter(t, l, acme.ID, "a")
		_, err := l.KeyPage(ctx, acme.ID, nozzle.PageQuery{After: a.ID}, nozzle.AllKeys)
		wantCursorRefused(t, err, "after", a.ID)
		// The other tenant's list holds its own keys only.
		theirs, err := l.KeyPage(ctx, globex.ID, nozzle.PageQuery{}, nozzle.AllKeys)
		if err != nil || len(theirs.Data) != 10 {
			t.Fatalf("globex: %v, %v", theirs, err)
		}
		for _, k := range theirs.Data {
			if k.TenantID != globex.ID {
				t.Fatalf("globex lists %+v", k)
			}
		}
	})
	mustCheck(t, l)
}

func TestAdapterPage(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	acme, globex := mustTenant(t, l, "acme"), mustTenant(t, l, "globex")
	for _, n := range []string{"m", "c", "x", "a", "q", "f", "b"} {
		mustAdapter(t, l, acme.ID, n)
		mustAdapter(t, l, globex.ID, n)
	}
	names := func(p *nozzle.Page[*nozzle.Adapter]) string {
		var s []string
		for _, a := range p.Data {
			s = append(s, a.Name)
		}
		return strings.Join(s, "")
	}
	page := func(q nozzle.PageQuery) *nozzle.Page[*nozzle.Adapter] {
		t.Helper()
		p, err := l.AdapterPage(ctx, acme.ID, q)
		if err != nil {
			t.Fatalf("AdapterPage(%+v): %v", q, err)
		}
		return p
	}
	byName := func(tenantID, name string) *nozzle.Adapter {
		a, err := l.Adapter(ctx, tenantID, name)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if p := page(nozzle.PageQuery{}); names(p) != "abcfmqx" || p.HasMore {
		t.Fatalf("first page %q, has_more %v", names(p), p.HasMore)
	}
	if p := page(nozzle.PageQuery{Limit: 3}); names(p) != "abc" || !p.HasMore {
		t.Fatalf("3: %q, has_more %v", names(p), p.HasMore)
	}
	if p := page(nozzle.PageQuery{Limit: 3, Order: nozzle.Descending, After: byName(acme.ID, "m").ID}); names(p) != "fcb" || !p.HasMore {
		t.Fatalf("3 after m, descending: %q", names(p))
	}
	if p := page(nozzle.PageQuery{Limit: 3, Before: byName(acme.ID, "q").ID}); names(p) != "cfm" || !p.HasMore {
		t.Fatalf("3 before q: %q", names(p))
	}
	if p := page(nozzle.PageQuery{After: byName(acme.ID, "x").ID}); names(p) != "" || p.HasMore {
		t.Fatalf("after the last: %q", names(p))
	}
	t.Run("DeletedCursor", func(t *testing.T) {
		// A page's adapters deleted, then the next page asked for after
		// the last of them: it starts where they were.
		first := page(nozzle.PageQuery{Limit: 2})
		for _, a := range first.Data {
			if _, err := l.DeleteAdapter(ctx, acme.ID, a.Name); err != nil {
				t.Fatal(err)
			}
		}
		last := first.Data[1].ID
		if p := page(nozzle.PageQuery{Limit: 2, After: last}); names(p) != "cf" || !p.HasMore {
			t.Fatalf("after deleted b: %q", names(p))
		}
		if p := page(nozzle.PageQuery{Before: first.Data[0].ID}); names(p) != "" || p.HasMore {
			t.Fatalf("before deleted a: %q", names(p))
		}
		// A new adapter under a deleted one's name is new: not skipped
		// by a page that starts before it, skipped by one after the
		// deleted one's place.
		again := mustAdapter(t, l, acme.ID, "b")
		if p := page(nozzle.PageQuery{Limit: 2, After: last}); names(p) != "cf" {
			t.Fatalf("after deleted b, with a new b: %q", names(p))
		}
		if p := page(nozzle.PageQuery{Limit: 2, After: first.Data[0].ID}); names(p) != "bc" || p.Data[0].ID != again.ID {
			t.Fatalf("after deleted a, with a new b: %q", names(p))
		}
		// Another tenant cannot page after acme's deleted adapter, nor
		// after acme's live one.
		_, err := l.AdapterPage(ctx, globex.ID, nozzle.PageQuery{After: last})
		wantCursorRefused(t, err, "after", last)
		_, err = l.AdapterPage(ctx, globex.ID, nozzle.PageQuery{Before: again.ID})
		wantCursorRefused(t, err, "before", again.ID)
		_, err = l.AdapterPage(ctx, acme.ID, nozzle.PageQuery{After: "ad_nope"})
		wantCursorRefused(t, err, "after", "ad_nope")
		// A deleted adapter's place is kept for a while, then forgotten.
		clk.Add(7*24*time.Hour - time.Second)
		page(nozzle.PageQuery{After: last})
		clk.Add(time.Second)
		_, err = l.AdapterPage(ctx, acme.ID, nozzle.PageQuery{After: last})
		wantCursorRefused(t, err, "after", last)
		// The next deletion drops the expired places from the file.
		if _, err := l.DeleteAdapter(ctx, acme.ID, "x"); err != nil {
			t.Fatal(err)
		}
		if n := billing.DeletedAdapterPlaces(t, l); n != 1 {
			t.Fatalf("%d deleted adapters' places kept, want 1 (x)", n)
		}
	})
	mustCheck(t, l)
}

// TestPage_AgainstModel compares the ledger's pages with mock.Paginate
// over the whole list, for every kind of query, as random tenants, keys
// and adapters come and go.
func TestPage_AgainstModel(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	rng := rand.New(rand.NewPCG(1, 2))
	ten := []*nozzle.Tenant{mustTenant(t, l, "a"), mustTenant(t, l, "b")}
	nTenants := 2
	var keys []*nozzle.APIKey
	var gone []string // deleted adapters' ids
	for step := range 150 {
		switch r := rng.IntN(10); {
		case r < 3:
			ten = append(ten, mustTenant(t, l, fmt.Sprint("t", nTenants)))
			nTenants++
		case r < 6:
			keys = append(keys, mustKey(t, l, ten[rng.IntN(2)].ID, fmt.Sprint("k", step)))
		case r < 7 && len(keys) > 0:
			k := keys[rng.IntN(len(keys))]
			if err := l.RevokeKey(ctx, k.TenantID, k.ID); err != nil {
				t.Fatal(err)
			}
		case r < 9:
			a := &nozzle.Adapter{TenantID: ten[rng.IntN(2)].ID, Name: fmt.Sprintf("ad-%02d", rng.IntN(60)), AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("cd", 32)}}
			if err := l.CreateAdapter(ctx, a); err != nil && nozzle.ErrorCode(err) != nozzle.ECONFLICT {
				t.Fatal(err)
			}
		default:
			list, _ := l.Adapters(ctx, ten[0].ID)
			if len(list) > 0 {
				a := list[rng.IntN(len(list))]
				if _, err := l.DeleteAdapter(ctx, a.TenantID, a.Name); err != nil {
					t.Fatal(err)
				}
				gone = append(gone, a.ID)
			}
		}
		if rng.IntN(3) == 0 {
			clk.Add(time.Duration(rng.IntN(3)) * time.Second) // ties now and then
		}
	}
	// queries: every limit up to a bit past each list, both orders, from
	// the start, after and before every object.
	queries := func(cursors []string) []nozzle.PageQuery {
		var out []nozzle.PageQuery
		for _, limit := range []int{1, 2, 3, 7, 100} {
			for _, order := range []nozzle.Order{"", nozzle.Ascending, nozzle.Descending} {
				out = append(out, nozzle.PageQuery{Limit: limit, Order: order})
				for _, c := range cursors {
					out = append(out, nozzle.PageQuery{Limit: limit, Order: order, After: c}, nozzle.PageQuery{Limit: limit, Order: order, Before: c})
				}
			}
		}
		return out
	}
	same := func(t *testing.T, what string, q nozzle.PageQuery, got, want []string, gotMore, wantMore bool) {
		t.Helper()
		if !slices.Equal(got, want) || gotMore != wantMore {
			t.Fatalf("%s %+v: %v (has_more %v), want %v (%v)", what, q, got, gotMore, want, wantMore)
		}
	}
	t.Run("Tenants", func(t *testing.T) {
		all, _ := l.Tenants(ctx)
		for _, q := range queries(ids(all, tenantID)) {
			got, err := l.TenantPage(ctx, q)
			want, werr := mock.Paginate(all, tenantID, nil, nozzle.Ascending, q)
			if err != nil || werr != nil {
				t.Fatalf("%+v: %v, %v", q, err, werr)
			}
			same(t, "tenants", q, ids(got.Data, tenantID), ids(want.Data, tenantID), got.HasMore, want.HasMore)
		}
	})
	t.Run("Keys", func(t *testing.T) {
		for _, tn := range ten[:2] {
			all, _ := l.Keys(ctx, tn.ID)
			slices.Reverse(all) // oldest first
			byRevoked := slices.Clone(all)
			slices.SortStableFunc(byRevoked, func(a, b *nozzle.APIKey) int {
				if c := a.RevokedAt.Compare(b.RevokedAt); c != 0 {
					return c
				}
				return strings.Compare(a.ID, b.ID)
			})
			for _, f := range []nozzle.KeyFilter{nozzle.AllKeys, nozzle.ActiveKeys, nozzle.RevokedKeys} {
				model := all
				if f == nozzle.RevokedKeys {
					model = byRevoked
				}
				for _, q := range queries(ids(all, keyID)) {
					got, err := l.KeyPage(ctx, tn.ID, q, f)
					want, werr := mock.Paginate(model, keyID, f.Keep, nozzle.Descending, q)
					if err != nil || werr != nil {
						t.Fatalf("%+v: %v, %v", q, err, werr)
					}
					same(t, fmt.Sprint("keys ", f), q, ids(got.Data, keyID), ids(want.Data, keyID), got.HasMore, want.HasMore)
				}
			}
		}
	})
	t.Run("Adapters", func(t *testing.T) {
		for _, tn := range ten[:2] {
			all, _ := l.Adapters(ctx, tn.ID)
			for _, q := range queries(ids(all, adapterID)) {
				got, err := l.AdapterPage(ctx, tn.ID, q)
				want, werr := mock.Paginate(all, adapterID, nil, nozzle.Ascending, q)
				if err != nil || werr != nil {
					t.Fatalf("%+v: %v, %v", q, err, werr)
				}
				same(t, "adapters", q, ids(got.Data, adapterID), ids(want.Data, adapterID), got.HasMore, want.HasMore)
			}
		}
		if len(gone) == 0 {
			t.Fatal("no adapter was deleted")
		}
	})
	mustCheck(t, l)
}

// TestPage_ConcurrentChanges pages through a tenant's adapters and keys,
// and the tenants, while others are added and removed: every object that
// existed throughout is listed exactly once, in order, and nothing is
// listed twice.
func TestPage_ConcurrentChanges(t *testing.T) {
	ctx := context.Background()
	l := mustOpen(t, billing.Options{})
	acme := mustTenant(t, l, "acme")
	for i := range 30 {
		mustTenant(t, l, fmt.Sprint("t", i))
		mustKey(t, l, acme.ID, fmt.Sprint("k", i))
		mustAdapter(t, l, acme.ID, fmt.Sprintf("ad-%03d", 2*i)) // even names; odd ones come and go
	}
	before := func() (tenants, keys, adapters []string) {
		ts, _ := l.Tenants(ctx)
		ks, _ := l.Keys(ctx, acme.ID)
		as, _ := l.Adapters(ctx, acme.ID)
		return ids(ts, tenantID), ids(ks, keyID), ids(as, adapterID)
	}
	wantTenants, wantKeys, wantAdapters := before()
	// Deleted during the run: the adapters ad-000, ad-010, … ad-050 (they
	// may or may not be listed).
	deleted := map[string]bool{}
	for i := 0; i < 60; i += 10 {
		a, _ := l.Adapter(ctx, acme.ID, fmt.Sprintf("ad-%03d", i))
		deleted[a.ID] = true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("ad-%03d", 2*(i%30)+1)
			var err error
			if _, err = l.Adapter(ctx, acme.ID, name); err == nil {
				_, err = l.DeleteAdapter(ctx, acme.ID, name)
			} else {
				err = l.CreateAdapter(ctx, &nozzle.Adapter{TenantID: acme.ID, Name: name, AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32)}})
			}
			if err == nil && i%5 == 0 {
				if err = l.CreateTenant(ctx, &nozzle.Tenant{Name: fmt.Sprint("new", i)}); err == nil {
					secret, _ := nozzle.NewKeySecret()
					err = l.CreateKey(ctx, &nozzle.APIKey{TenantID: acme.ID, Digest: nozzle.KeyDigest(secret)})
				}
			}
			if err == nil && i < 60 && i%10 == 0 {
				_, err = l.DeleteAdapter(ctx, acme.ID, fmt.Sprintf("ad-%03d", i))
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// A whole pass lists each object there throughout once, in the list's
	// order; one deleted meanwhile (mayMiss) may be missing.
	check := func(what string, got, want []string, mayMiss map[string]bool) {
		t.Helper()
		seen := map[string]bool{}
		var kept []string
		wanted := map[string]bool{}
		for _, id := range want {
			wanted[id] = true
		}
		for _, id := range got {
			if seen[id] {
				t.Fatalf("%s: %s listed twice", what, id)
			}
			seen[id] = true
			if wanted[id] {
				kept = append(kept, id)
			}
		}
		var throughout []string
		for _, id := range want {
			if !mayMiss[id] || seen[id] {
				throughout = append(throughout, id)
			}
		}
		if !slices.Equal(kept, throughout) {
			t.Fatalf("%s: listed %v of the objects there throughout, want %v", what, kept, throughout)
		}
	}
	for range 20 {
		check("adapters", pageAll(t, 4, adapterID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.Adapter], error) {
			return l.AdapterPage(ctx, acme.ID, q)
		}), wantAdapters, deleted)
		check("keys", pageAll(t, 3, keyID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.APIKey], error) {
			return l.KeyPage(ctx, acme.ID, q, nozzle.AllKeys)
		}), wantKeys, nil)
		check("tenants", pageAll(t, 5, tenantID, func(q nozzle.PageQuery) (*nozzle.Page[*nozzle.Tenant], error) {
			return l.TenantPage(ctx, q)
		}), wantTenants, nil)
	}
	close(stop)
	wg.Wait()
	mustCheck(t, l)
}
