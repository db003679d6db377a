package billing_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// TestBench runs `nozzle bench billing` at a small size.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark run")
	}
	var out bytes.Buffer
	doc := filepath.Join(t.TempDir(), "ECONOMICS.md")
	err := billing.Bench(context.Background(), billing.BenchOptions{
		Dir: t.TempDir(), ReportEvents: 20_000, Writers: 64, AppendEvents: 3_000,
		BaselineDuration: 100 * time.Millisecond, SimTenants: 50, SimHours: 1, WriteDoc: doc,
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"from rollups", "one event per transaction (baseline)", "Median tenant saving"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q", want)
		}
	}
	b, err := os.ReadFile(doc)
	if err != nil || !strings.Contains(string(b), "## Assumptions") {
		t.Fatalf("ECONOMICS.md: %v", err)
	}
}

// BenchmarkRecordUsage: durable usage events, from one writer (each event
// waits for its own sync) and from 128 (they share syncs); and from 128
// with a stored Responses API response each (a 2 KiB Response object and
// its input items, in the same durable write), against the plain ones of
// the same run.
func BenchmarkRecordUsage(b *testing.B) {
	var withResponse bool
	body := []byte(`{"id":"resp_x","object":"response","status":"completed","output":[{"id":"msg_x","type":"message","role":"assistant","content":[{"type":"output_text","text":"` + strings.Repeat("tokens ", 280) + `","annotations":[]}]}]}`)
	input := []byte(`[{"id":"msg_in","type":"message","role":"user","content":[{"type":"input_text","text":"Summarise the report in three lines."}]}]`)
	record := func(b *testing.B, l *billing.Ledger, tenantID string, i int64) {
		id := fmt.Sprintf("req-%d-%d", i, time.Now().UnixNano())
		ev := nozzle.UsageEvent{RequestID: id, TenantID: tenantID, AdapterID: "ad", Time: time.Now(), PromptTokens: 100, CompletionTokens: 20, DeviceSeconds: 0.05, RatePerHour: 2}
		if withResponse {
			ev.StoredResponse = &nozzle.StoredResponse{ID: "resp_" + id, TenantID: tenantID, Created: ev.Time, Body: body, Input: input}
		}
		if _, err := l.RecordUsage(context.Background(), &ev); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("writers=1", func(b *testing.B) {
		l := mustOpen(b, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1}})
		ten := mustTenant(b, l, "acme")
		var i int64
		for b.Loop() {
			i++
			record(b, l, ten.ID, i)
		}
	})
	many := func(b *testing.B) {
		l := mustOpen(b, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1}})
		ten := mustTenant(b, l, "acme")
		var n atomic.Int64
		b.SetParallelism(64) // × GOMAXPROCS (2)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				record(b, l, ten.ID, n.Add(1))
			}
		})
	}
	b.Run("writers=128", many)
	b.Run("writers=128/stored-response", func(b *testing.B) {
		withResponse = true
		defer func() { withResponse = false }()
		many(b)
	})
}

// BenchmarkCheckpointUsage: durable checkpoints of running streams, each
// stream checkpointing again and again under its own request id, from one
// writer and from 128 (they share syncs with each other, as they do with
// usage events), and filed in the background.
func BenchmarkCheckpointUsage(b *testing.B) {
	checkpoint := func(b *testing.B, l *billing.Ledger, tenantID string, stream, n int64) {
		ev := nozzle.UsageEvent{RequestID: fmt.Sprintf("req-%d", stream), TenantID: tenantID, AdapterID: "ad", Time: time.Now(),
			PromptTokens: 100, CompletionTokens: n, DeviceSeconds: 0.05, RatePerHour: 2}
		if err := l.CheckpointUsage(context.Background(), &ev); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("writers=1", func(b *testing.B) {
		l := mustOpen(b, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1}})
		ten := mustTenant(b, l, "acme")
		var i int64
		for b.Loop() {
			i++
			checkpoint(b, l, ten.ID, i%64, i)
		}
	})
	b.Run("writers=128", func(b *testing.B) {
		l := mustOpen(b, billing.Options{DefaultPrice: nozzle.Price{PromptPerMillionUSD: 1}})
		ten := mustTenant(b, l, "acme")
		var n, streams atomic.Int64
		b.SetParallelism(64) // × GOMAXPROCS (2)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			stream := streams.Add(1)
			for pb.Next() {
				checkpoint(b, l, ten.ID, stream, n.Add(1))
			}
		})
	})
}

func BenchmarkKeyByDigest(b *testing.B) {
	ctx := context.Background()
	l := mustOpen(b, billing.Options{})
	ten := mustTenant(b, l, "acme")
	var digests []string
	for range 1000 {
		s, _ := nozzle.NewKeySecret()
		k := &nozzle.APIKey{TenantID: ten.ID, Digest: nozzle.KeyDigest(s)}
		if err := l.CreateKey(ctx, k); err != nil {
			b.Fatal(err)
		}
		digests = append(digests, k.Digest)
	}
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.KeyByDigest(ctx, digests[n.Add(1)%1000]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkReport(b *testing.B) {
	ctx := context.Background()
	l := mustOpen(b, billing.Options{})
	ten := mustTenant(b, l, "acme")
	start := date("2026-04-01T00:00:00Z")
	var evs []nozzle.UsageEvent
	for i := range 20_000 {
		evs = append(evs, nozzle.UsageEvent{RequestID: fmt.Sprint("r", i), TenantID: ten.ID, AdapterID: fmt.Sprint("ad", i%8), Time: start.Add(time.Duration(i) * 2 * time.Minute), PromptTokens: 100, DeviceSeconds: 0.1, RatePerHour: 2})
	}
	recordAll(b, l, evs)
	q := nozzle.ReportQuery{TenantID: ten.ID, Start: start, End: start.Add(30 * 24 * time.Hour), GroupBy: []string{"day", "adapter"}}
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.Report(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAdapterPage: one page of a tenant's 10,000 adapters read from
// the name index (the first page, and one from the middle, after an
// adapter's id), against reading all 10,000 as the whole-list method
// does, in the same run. Another tenant's 10,000 adapters share the
// index.
func BenchmarkAdapterPage(b *testing.B) {
	ctx := context.Background()
	l := mustOpen(b, billing.Options{})
	acme, globex := mustTenant(b, l, "acme"), mustTenant(b, l, "globex")
	const n = 10_000
	mustAdapters(b, l, n, acme.ID, globex.ID)
	mid, err := l.Adapter(ctx, acme.ID, fmt.Sprintf("adapter-%05d", n/2))
	if err != nil {
		b.Fatal(err)
	}
	page := func(b *testing.B, q nozzle.PageQuery) {
		for b.Loop() {
			p, err := l.AdapterPage(ctx, acme.ID, q)
			if err != nil || len(p.Data) != q.PageLimit() {
				b.Fatalf("%v, %v", p, err)
			}
		}
	}
	b.Run("page=100/first", func(b *testing.B) { page(b, nozzle.PageQuery{Limit: 100}) })
	b.Run("page=100/after", func(b *testing.B) { page(b, nozzle.PageQuery{Limit: 100, After: mid.ID}) })
	b.Run("page=1000/after", func(b *testing.B) { page(b, nozzle.PageQuery{Limit: 1000, After: mid.ID}) })
	b.Run("all=10000", func(b *testing.B) {
		for b.Loop() {
			list, err := l.Adapters(ctx, acme.ID)
			if err != nil || len(list) != n {
				b.Fatalf("%d, %v", len(list), err)
			}
		}
	})
}

// mustAdapters creates n adapters of 1 MiB named adapter-00000 on for
// each of the tenants, interleaved.
func mustAdapters(b *testing.B, l *billing.Ledger, n int, tenants ...string) {
	b.Helper()
	ctx := context.Background()
	creates(b, len(tenants)*n, func(i int) error {
		return l.CreateAdapter(ctx, &nozzle.Adapter{TenantID: tenants[i%len(tenants)], Name: fmt.Sprintf("adapter-%05d", i/len(tenants)),
			AdapterManifest: nozzle.AdapterManifest{SHA256: strings.Repeat("ab", 32), Rank: 16, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, SizeBytes: 1 << 20}})
	})
}

// creates runs create(i) for i < n from 64 goroutines (concurrent
// creations share the group commit's syncs), failing b on the first error.
func creates(b *testing.B, n int, create func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				if err := create(i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAdapterQuotaCheck: the upload's storage quota check for a
// tenant with 10,000 adapters (another tenant's 10,000 beside them): the
// running total (AdapterStorageUsed, one read) against adding up every
// adapter record as the check did before, in the same run.
func BenchmarkAdapterQuotaCheck(b *testing.B) {
	ctx := context.Background()
	l := mustOpen(b, billing.Options{})
	acme, globex := mustTenant(b, l, "acme"), mustTenant(b, l, "globex")
	const n = 10_000
	mustAdapters(b, l, n, acme.ID, globex.ID)
	const quota, want = 20 << 30, n << 20
	check := func(b *testing.B, used func() (int64, error)) {
		for b.Loop() {
			u, err := used()
			if err != nil || u != want {
				b.Fatalf("%d, %v", u, err)
			}
			if u+(1<<20) > quota {
				b.Fatal("refused")
			}
		}
	}
	b.Run("total", func(b *testing.B) {
		check(b, func() (int64, error) { return l.AdapterStorageUsed(ctx, acme.ID) })
	})
	b.Run("scan", func(b *testing.B) {
		check(b, func() (int64, error) {
			list, err := l.Adapters(ctx, acme.ID)
			var sum int64
			for _, a := range list {
				sum += a.SizeBytes
			}
			return sum, err
		})
	})
}

// BenchmarkUsers: one tenant's users among 10,000 users of 1,000 tenants,
// read from tenant_users (Users with the tenant), against the full scan
// Users did before (every user decoded, the tenant's kept), in the same
// run; and the counts of a console page of 50 tenants both ways.
func BenchmarkUsers(b *testing.B) {
	ctx := context.Background()
	l := mustOpen(b, billing.Options{})
	const tenants, users = 1_000, 10_000
	ids := mustTenants(b, l, "t", tenants)
	creates(b, users, func(i int) error {
		return l.CreateUser(ctx, &nozzle.User{TenantID: ids[i%tenants], Email: fmt.Sprintf("u%05d@example.com", i), Role: nozzle.RoleTenant})
	})
	tenant := ids[tenants/2]
	const per = users / tenants
	b.Run("tenant=index", func(b *testing.B) {
		for b.Loop() {
			if us, err := l.Users(ctx, tenant); err != nil || len(us) != per {
				b.Fatalf("%d, %v", len(us), err)
			}
		}
	})
	b.Run("tenant=scan", func(b *testing.B) {
		for b.Loop() {
			all, err := l.Users(ctx, "")
			var us []*nozzle.User
			for _, u := range all {
				if u.TenantID == tenant {
					us = append(us, u)
				}
			}
			if err != nil || len(us) != per {
				b.Fatalf("%d, %v", len(us), err)
			}
		}
	})
	page := ids[100:150]
	b.Run("page=50/index", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, id := range page {
				us, err := l.Users(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				n += len(us)
			}
			if n != 50*per {
				b.Fatal(n)
			}
		}
	})
	b.Run("page=50/scan", func(b *testing.B) {
		for b.Loop() {
			all, err := l.Users(ctx, "")
			if err != nil {
				b.Fatal(err)
			}
			count := map[string]int{}
			for _, u := range all {
				count[u.TenantID]++
			}
			n := 0
			for _, id := range page {
				n += count[id]
			}
			if n != 50*per {
				b.Fatal(n)
			}
		}
	})
}
