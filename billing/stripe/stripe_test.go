package stripe_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/billing/stripe"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newSender(tb testing.TB, url string) *stripe.Sender {
	tb.Helper()
	s, err := stripe.New(stripe.Config{SecretKey: "sk_test_123", APIURL: url, Timeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestSender_CreateCustomer(t *testing.T) {
	url, _ := startStripeMock(t, "")
	s := newSender(t, url)
	id, err := s.CreateCustomer(context.Background(), billing.Customer{TenantID: "ten_1", Name: "acme", IdempotencyKey: "nz-customer-ten_1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "cus_") {
		t.Fatalf("customer id = %q", id)
	}
}

func TestSender_MeterEvent(t *testing.T) {
	url, _ := startStripeMock(t, "")
	s := newSender(t, url)
	ctx := context.Background()
	ev := billing.MeterEvent{
		Identifier:     "nz-ten_1-prompt-2026030409",
		IdempotencyKey: "nz-ten_1-prompt-2026030409",
		EventName:      "nozzle_prompt_tokens",
		CustomerID:     "cus_123",
		Value:          150,
		Timestamp:      time.Now().Add(-2 * time.Hour).Truncate(time.Hour),
	}
	t.Run("Accepted", func(t *testing.T) {
		if err := s.SendMeterEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Rejected", func(t *testing.T) {
		// A malformed key is refused (401): nothing was recorded.
		bad, err := stripe.New(stripe.Config{SecretKey: "not-a-key", APIURL: url, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		err = bad.SendMeterEvent(ctx, ev)
		if !errors.Is(err, billing.ErrRejected) {
			t.Fatalf("err = %v, want ErrRejected", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		down := newSender(t, "http://"+freeAddr(t))
		err := down.SendMeterEvent(ctx, ev)
		if err == nil || errors.Is(err, billing.ErrRejected) || errors.Is(err, billing.ErrDuplicate) {
			t.Fatalf("err = %v, want an unknown outcome", err)
		}
	})
}

// recorder wraps the real sender and notes when each call was made.
type recorder struct {
	billing.Sender
	mu    sync.Mutex
	times []time.Time
	errs  []error
}

func (r *recorder) note(err error) {
	r.mu.Lock()
	r.times = append(r.times, time.Now())
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *recorder) CreateCustomer(ctx context.Context, c billing.Customer) (string, error) {
	id, err := r.Sender.CreateCustomer(ctx, c)
	r.note(err)
	return id, err
}

func (r *recorder) SendMeterEvent(ctx context.Context, ev billing.MeterEvent) error {
	err := r.Sender.SendMeterEvent(ctx, ev)
	r.note(err)
	return err
}

func (r *recorder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.times)
}

// TestOutbox_StripeOutage runs the outbox against an unreachable Stripe (a
// closed port), checks that it backs off, then starts stripe-mock on that
// port and checks that the rows go out with the same identifiers.
func TestOutbox_StripeOutage(t *testing.T) {
	ctx := context.Background()
	now := time.Now().UTC()
	l, err := billing.Open(billing.Options{Path: filepath.Join(t.TempDir(), "ledger.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ten := &nozzle.Tenant{Name: "acme"}
	if err := l.CreateTenant(ctx, ten); err != nil {
		t.Fatal(err)
	}
	ev := nozzle.UsageEvent{RequestID: "r1", TenantID: ten.ID, Time: now.Add(-2 * time.Hour), PromptTokens: 100, CompletionTokens: 20}
	if _, err := l.RecordUsage(ctx, &ev); err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	rec := &recorder{Sender: newSender(t, "http://"+addr)}
	opts := billing.OutboxOptions{PollEvery: 10 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 160 * time.Millisecond}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.RunOutbox(wctx, rec, opts) }()
	defer func() { cancel(); <-done }()

	waitFor(t, 20*time.Second, func() bool { return rec.calls() >= 5 })
	st, _ := l.OutboxState(ctx)
	if st.Sent != 0 || st.Failing == 0 || st.LastError == "" {
		t.Fatalf("state during the outage = %+v", st)
	}
	// Calls back off exponentially: 20, 40, 80, 160 ms (±20%), then stay
	// at the 160 ms cap. A call is noted after it returns and the next one
	// waits out its pause first, so each gap is at least its pause: checked
	// from below only, which a loaded machine (slower calls, late timers)
	// cannot break, where comparing gaps with each other or with an upper
	// bound failed under load (a first gap stretched to 80 ms by the
	// scheduler reads as no backoff). The pauses' values and their cap are
	// checked without a clock in package billing (TestBackoff).
	rec.mu.Lock()
	times := append([]time.Time(nil), rec.times...)
	rec.mu.Unlock()
	for i, pause := range []time.Duration{20, 40, 80, 160} {
		if gap, least := times[i+1].Sub(times[i]), pause*time.Millisecond*8/10; gap < least {
			t.Fatalf("no backoff: gap %d is %v, under the pause of %v (-20%%); gaps %v", i+1, gap, least, gaps(times))
		}
	}

	startStripeMock(t, addr)
	waitFor(t, 20*time.Second, func() bool {
		st, _ := l.OutboxState(ctx)
		return st.Sent == 2 && st.Pending == 0
	})
	got, _ := l.Tenant(ctx, ten.ID)
	if !strings.HasPrefix(got.StripeCustomerID, "cus_") {
		t.Fatalf("tenant's customer = %q", got.StripeCustomerID)
	}
}

// gaps are the times between consecutive calls.
func gaps(times []time.Time) []time.Duration {
	var g []time.Duration
	for i := 1; i < len(times); i++ {
		g = append(g, times[i].Sub(times[i-1]))
	}
	return g
}

func waitFor(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type meterWant struct {
	event string
	value int64
}

// The outbox's meters against stripe-mock: an hour of interactive and
// batch requests goes through the real sender as one meter event per
// meter, each taken by Stripe — the batch tokens on the batch meters'
// event names and only the others on the interactive meters', cached
// prompt tokens on the cached prompt meters and only the uncached ones on
// the prompt meters; a failed request's on none.
func TestOutbox_MetersStripeMock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		price  nozzle.Price
		cached [3]int64 // the three requests' cached prompt tokens
		opts   billing.OutboxOptions
		want   map[string]meterWant
	}{{
		name:  "batch",
		price: nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2, BatchDiscountPercent: 50},
		want: map[string]meterWant{
			billing.MeterPrompt:          {"nozzle_prompt_tokens", 100},
			billing.MeterCompletion:      {"nozzle_completion_tokens", 20},
			billing.MeterBatchPrompt:     {"nozzle_batch_prompt_tokens", 300},
			billing.MeterBatchCompletion: {"nozzle_batch_completion_tokens", 60},
		},
	}, {
		name:   "cached",
		price:  nozzle.Price{PromptPerMillionUSD: 1, CompletionPerMillionUSD: 2, BatchDiscountPercent: 50, CachedPromptPerMillionUSD: 0.5},
		cached: [3]int64{64, 256, 512},
		opts:   billing.OutboxOptions{BatchCachedPromptEventName: "acme_batch_cached"},
		want: map[string]meterWant{
			billing.MeterPrompt:            {"nozzle_prompt_tokens", 36},
			billing.MeterCachedPrompt:      {"nozzle_cached_prompt_tokens", 64},
			billing.MeterCompletion:        {"nozzle_completion_tokens", 20},
			billing.MeterBatchPrompt:       {"nozzle_batch_prompt_tokens", 44},
			billing.MeterBatchCachedPrompt: {"acme_batch_cached", 256},
			billing.MeterBatchCompletion:   {"nozzle_batch_completion_tokens", 60},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			hour := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Hour)
			l, err := billing.Open(billing.Options{Path: filepath.Join(t.TempDir(), "ledger.db"), Logger: quiet, DefaultPrice: tc.price})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ten := &nozzle.Tenant{Name: "acme"}
			if err := l.CreateTenant(ctx, ten); err != nil {
				t.Fatal(err)
			}
			for _, ev := range []nozzle.UsageEvent{
				{RequestID: "i1", TenantID: ten.ID, Time: hour.Add(time.Minute), PromptTokens: 100, CachedPromptTokens: tc.cached[0], CompletionTokens: 20},
				{RequestID: "b1", TenantID: ten.ID, Time: hour.Add(2 * time.Minute), PromptTokens: 300, CachedPromptTokens: tc.cached[1], CompletionTokens: 60, Batch: true},
				{RequestID: "b2", TenantID: ten.ID, Time: hour.Add(3 * time.Minute), PromptTokens: 900, CachedPromptTokens: tc.cached[2], CompletionTokens: 90, Batch: true, Status: nozzle.UsageFailed},
			} {
				if _, err := l.RecordUsage(ctx, &ev); err != nil {
					t.Fatal(err)
				}
			}
			url, _ := startStripeMock(t, "")
			rec := &recorder{Sender: newSender(t, url)}
			opts := tc.opts
			opts.PollEvery, opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 10*time.Millisecond, 40*time.Millisecond
			wctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- l.RunOutbox(wctx, rec, opts) }()
			defer func() { cancel(); <-done }()
			waitFor(t, 20*time.Second, func() bool {
				st, _ := l.OutboxState(ctx)
				return st.Sent == len(tc.want) && st.Pending == 0
			})
			rows, err := l.OutboxRows(ctx, billing.OutboxSent)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tc.want) {
				t.Fatalf("sent rows %+v", rows)
			}
			for _, r := range rows {
				w := tc.want[r.Meter]
				if r.EventName != w.event || r.Value != w.value || !strings.Contains(r.Identifier, "-"+r.Meter+"-") || !strings.HasPrefix(r.CustomerID, "cus_") {
					t.Errorf("row %+v, want %s = %d", r, w.event, w.value)
				}
			}
			if res, err := l.Check(ctx); err != nil || len(res.Problems) > 0 {
				t.Fatalf("check: %+v, %v", res, err)
			}
		})
	}
}
