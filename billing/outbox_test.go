package billing_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
)

// fakeStripe is a billing.Sender standing in for Stripe at the seam; the
// real sender is tested against stripe-mock in billing/stripe.
type fakeStripe struct {
	mu        sync.Mutex
	customers int
	calls     []billing.MeterEvent          // every attempt
	taken     map[string]billing.MeterEvent // identifier → event Stripe holds
	onSend    func(ev billing.MeterEvent) error
}

func (f *fakeStripe) CreateCustomer(ctx context.Context, c billing.Customer) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.customers++
	return "cus_" + c.TenantID, nil
}

func (f *fakeStripe) SendMeterEvent(ctx context.Context, ev billing.MeterEvent) error {
	f.mu.Lock()
	f.calls = append(f.calls, ev)
	hook := f.onSend
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ev); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.taken == nil {
		f.taken = map[string]billing.MeterEvent{}
	}
	if prev, ok := f.taken[ev.Identifier]; ok {
		if prev != ev {
			return fmt.Errorf("%w: identifier %s reused with other parameters", billing.ErrRejected, ev.Identifier)
		}
		return nil // the idempotency key replays the first answer
	}
	f.taken[ev.Identifier] = ev
	return nil
}

func (f *fakeStripe) snapshot() ([]billing.MeterEvent, map[string]billing.MeterEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	taken := map[string]billing.MeterEvent{}
	for k, v := range f.taken {
		taken[k] = v
	}
	return append([]billing.MeterEvent(nil), f.calls...), taken
}

// meterWant is a meter event Stripe is to have taken: its event name and
// value.
type meterWant struct {
	event string
	value int64
}

// wantTaken checks that f's Stripe took exactly the events of want, by
// identifier.
func (f *fakeStripe) wantTaken(t *testing.T, want map[string]meterWant) {
	t.Helper()
	_, taken := f.snapshot()
	if len(taken) != len(want) {
		t.Fatalf("Stripe took %d events, want %d: %+v", len(taken), len(want), taken)
	}
	for id, w := range want {
		got, ok := taken[id]
		if !ok || got.EventName != w.event || got.Value != w.value {
			t.Errorf("%s: %+v (taken %v), want %s = %d", id, got, ok, w.event, w.value)
		}
	}
}

var fastOutbox = billing.OutboxOptions{PollEvery: 5 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

// runOutbox runs the worker until cond holds (or fails the test after 10s).
func runOutbox(t *testing.T, l *billing.Ledger, s billing.Sender, opts billing.OutboxOptions, cond func(st nozzle.OutboxState) bool) nozzle.OutboxState {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.RunOutbox(ctx, s, opts) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunOutbox: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := l.OutboxState(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox never reached the wanted state; last %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestOutbox_SendsClosedHoursOnce(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	a, b := mustTenant(t, l, "a"), mustTenant(t, l, "b")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: a.ID, AdapterID: "x", Time: date("2026-03-04T09:10:00Z"), PromptTokens: 100, CompletionTokens: 10})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "2", TenantID: a.ID, AdapterID: "y", Time: date("2026-03-04T09:59:59.999Z"), PromptTokens: 50, CompletionTokens: 5})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "3", TenantID: b.ID, Time: date("2026-03-04T09:20:00Z"), PromptTokens: 7})
	// The current hour is open: not sent.
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "4", TenantID: a.ID, Time: date("2026-03-04T10:10:00Z"), PromptTokens: 1000, CompletionTokens: 1000})

	f := &fakeStripe{}
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 3 && st.Pending == 0 })
	calls, taken := f.snapshot()
	if len(calls) != 3 || len(taken) != 3 {
		t.Fatalf("calls = %+v", calls)
	}
	want := map[string]int64{
		"nz-" + a.ID + "-prompt-2026030409":     150,
		"nz-" + a.ID + "-completion-2026030409": 15,
		"nz-" + b.ID + "-prompt-2026030409":     7,
	}
	for id, v := range want {
		ev, ok := taken[id]
		if !ok || ev.Value != v || ev.IdempotencyKey != id || !ev.Timestamp.Equal(date("2026-03-04T09:00:00Z")) {
			t.Fatalf("event %s = %+v, want value %d", id, ev, v)
		}
	}
	if taken["nz-"+a.ID+"-prompt-2026030409"].EventName != "nozzle_prompt_tokens" || taken["nz-"+a.ID+"-prompt-2026030409"].CustomerID != "cus_"+a.ID {
		t.Fatalf("event shape: %+v", taken["nz-"+a.ID+"-prompt-2026030409"])
	}
	if ten, _ := l.Tenant(ctx, a.ID); ten.StripeCustomerID != "cus_"+a.ID {
		t.Fatalf("customer id not stored on the tenant: %+v", ten)
	}

	// A late event for the sent hour goes out as part 1, with the delta
	// only; the next hour closes and goes out; nothing is sent twice.
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "late", TenantID: a.ID, Time: date("2026-03-04T09:30:00Z"), PromptTokens: 3})
	clk.Set(date("2026-03-04T11:06:00Z"))
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 6 && st.Pending == 0 })
	calls, taken = f.snapshot()
	if len(calls) != 6 {
		t.Fatalf("%d calls, want 6: %+v", len(calls), calls)
	}
	if ev := taken["nz-"+a.ID+"-prompt-2026030409-1"]; ev.Value != 3 {
		t.Fatalf("late part = %+v", ev)
	}
	if ev := taken["nz-"+a.ID+"-completion-2026030410"]; ev.Value != 1000 {
		t.Fatalf("10:00 completion = %+v", ev)
	}
	if f.customers != 2 {
		t.Fatalf("%d customers created, want 2", f.customers)
	}
	// Sweeping again adds nothing.
	if n, err := l.SweepOutbox(ctx, clk.Now(), billing.OutboxOptions{}); err != nil || n != 0 {
		t.Fatalf("SweepOutbox = %d, %v", n, err)
	}
	mustCheck(t, l)
}

// TestOutbox_FailedRequestsAreNotMetered: the tokens of requests the
// runtime failed, which the ledger charges nothing, are not sent to
// Stripe either; those of requests whose client went away are.
func TestOutbox_FailedRequestsAreNotMetered(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	a, b := mustTenant(t, l, "a"), mustTenant(t, l, "b")
	at := date("2026-03-04T09:10:00Z")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "ok", TenantID: a.ID, AdapterID: "x", Time: at, PromptTokens: 100, CompletionTokens: 10})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "failed", TenantID: a.ID, AdapterID: "x", Status: nozzle.UsageFailed, Time: at, PromptTokens: 40, CompletionTokens: 4})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "gone", TenantID: a.ID, AdapterID: "y", Status: nozzle.UsageCanceled, Time: at, PromptTokens: 20, CompletionTokens: 2})
	// b's only request failed: b has nothing to meter.
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "b-failed", TenantID: b.ID, Status: nozzle.UsageFailed, Time: at, PromptTokens: 500, CompletionTokens: 50})

	f := &fakeStripe{}
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 2 && st.Pending == 0 })
	_, taken := f.snapshot()
	if len(taken) != 2 || taken["nz-"+a.ID+"-prompt-2026030409"].Value != 120 || taken["nz-"+a.ID+"-completion-2026030409"].Value != 12 {
		t.Fatalf("meter events %+v; want a's 120 prompt and 12 completion tokens only", taken)
	}
	// A late failed request in the sent hour adds nothing to send.
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "late-failed", TenantID: a.ID, Status: nozzle.UsageFailed, Time: at, PromptTokens: 9, CompletionTokens: 1})
	if n, err := l.SweepOutbox(ctx, clk.Now(), billing.OutboxOptions{}); err != nil || n != 0 {
		t.Fatalf("SweepOutbox after a late failed request = %d, %v", n, err)
	}
	// The usage report still counts every token the device processed.
	rep, err := l.Report(ctx, nozzle.ReportQuery{TenantID: a.ID, Start: date("2026-03-04T09:00:00Z"), End: date("2026-03-04T10:00:00Z")})
	if err != nil || rep.Total.PromptTokens != 169 || rep.Total.Requests != 4 {
		t.Fatalf("report %+v, %v", rep.Total, err)
	}
	// and says which were failed requests', so that its tokens less those
	// are Stripe's counts
	if tt := rep.Total; tt.FailedRequests != 2 || tt.PromptTokens-tt.FailedPromptTokens != 120 || tt.CompletionTokens-tt.FailedCompletionTokens != 12 {
		t.Fatalf("failed in the report: %+v", tt)
	}
	mustCheck(t, l)
}

// TestOutbox_CrashAfterStripeCall kills the worker between the Stripe call
// and the outbox update, reopens the ledger and checks that the same
// identifier and idempotency key are sent again, and nothing new.
func TestOutbox_CrashAfterStripeCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l, err := billing.Open(billing.Options{Path: path, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ten := mustTenant(t, l, "a")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: ten.ID, Time: date("2026-03-04T09:10:00Z"), PromptTokens: 100})

	stripe := &fakeStripe{} // Stripe's side survives the crash
	ctx, crash := context.WithCancel(context.Background())
	stripe.onSend = func(ev billing.MeterEvent) error {
		// Stripe takes the event; the process dies before it hears back.
		stripe.mu.Lock()
		stripe.taken = map[string]billing.MeterEvent{ev.Identifier: ev}
		stripe.mu.Unlock()
		crash()
		return ctx.Err()
	}
	if err := l.RunOutbox(ctx, stripe, fastOutbox); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l, err = billing.Open(billing.Options{Path: path, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rows, _ := l.OutboxRows(context.Background(), billing.OutboxPending)
	if len(rows) != 1 || rows[0].Attempts != 1 || rows[0].UncertainSince.IsZero() {
		t.Fatalf("after the crash the row is %+v", rows)
	}
	stripe.onSend = nil
	runOutbox(t, l, stripe, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 1 })
	calls, taken := stripe.snapshot()
	if len(calls) != 2 || calls[0] != calls[1] {
		t.Fatalf("resend differs from the first attempt: %+v", calls)
	}
	if len(taken) != 1 {
		t.Fatalf("Stripe holds %d events, want 1", len(taken))
	}
	// Taken rows are never sent again.
	clk.Add(48 * time.Hour)
	runOutbox(t, l, stripe, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 1 && st.Pending == 0 })
	if calls, _ := stripe.snapshot(); len(calls) != 2 {
		t.Fatalf("a sent row was sent again: %+v", calls)
	}
}

func TestOutbox_ParksUncertainRowsPastDedupWindow(t *testing.T) {
	ctx := context.Background()
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	ten := mustTenant(t, l, "a")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: ten.ID, Time: date("2026-03-04T09:10:00Z"), PromptTokens: 100})
	down := errors.New("connection refused")
	f := &fakeStripe{onSend: func(billing.MeterEvent) error { return down }}
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Failing == 1 && st.LastError != "" })

	// A day later the outcome of those attempts is still unknown and
	// Stripe no longer deduplicates them: the row is parked, not sent.
	clk.Add(24 * time.Hour)
	f.onSend = nil
	st := runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.NeedsReview == 1 })
	if st.Pending != 0 || st.Sent != 0 {
		t.Fatalf("state = %+v", st)
	}
	calls, _ := f.snapshot()
	for _, c := range calls {
		if c.Identifier != calls[0].Identifier {
			t.Fatalf("a retry used a new identifier: %+v", calls)
		}
	}
	n := len(calls)
	time.Sleep(20 * time.Millisecond)
	if calls, _ := f.snapshot(); len(calls) != n {
		t.Fatal("a parked row was sent")
	}
	rows, _ := l.OutboxRows(ctx, billing.OutboxNeedsReview)
	if len(rows) != 1 {
		t.Fatalf("needs-review rows = %+v", rows)
	}
	// The operator checked Stripe: the event is not there; send it.
	if err := l.ResolveOutbox(ctx, rows[0].Identifier, false); err != nil {
		t.Fatal(err)
	}
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 1 && st.NeedsReview == 0 })
	wantCode(t, l.ResolveOutbox(ctx, rows[0].Identifier, true), nozzle.ENOTFOUND)
}

func TestOutbox_ParksHoursStripeNoLongerAccepts(t *testing.T) {
	clk := newClock(date("2026-05-01T00:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	ten := mustTenant(t, l, "a")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "old", TenantID: ten.ID, Time: date("2026-03-20T09:10:00Z"), PromptTokens: 1})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "new", TenantID: ten.ID, Time: date("2026-04-30T09:10:00Z"), PromptTokens: 1})
	f := &fakeStripe{}
	st := runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Expired == 1 && st.Sent == 1 })
	if st.Pending != 0 {
		t.Fatalf("state = %+v", st)
	}
	if calls, _ := f.snapshot(); len(calls) != 1 || calls[0].Timestamp.Before(date("2026-04-01T00:00:00Z")) {
		t.Fatalf("calls = %+v", calls)
	}
}

func TestOutbox_RejectedRowsRetryWithoutBlockingOthers(t *testing.T) {
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	a, b := mustTenant(t, l, "a"), mustTenant(t, l, "b")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: a.ID, Time: date("2026-03-04T08:10:00Z"), PromptTokens: 1})
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "2", TenantID: b.ID, Time: date("2026-03-04T09:10:00Z"), PromptTokens: 1})
	var mu sync.Mutex
	refuse := true
	f := &fakeStripe{}
	f.onSend = func(ev billing.MeterEvent) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse && ev.CustomerID == "cus_"+a.ID {
			return fmt.Errorf("%w: no such customer", billing.ErrRejected)
		}
		return nil
	}
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 1 && st.Failing == 1 })
	mu.Lock()
	refuse = false
	mu.Unlock()
	clk.Add(time.Minute) // past the row's backoff
	runOutbox(t, l, f, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 2 && st.Failing == 0 })
	// Later refusals never reach the 24-hour review rule: a refusal
	// recorded nothing.
}

func TestOutbox_OperatorReportShowsState(t *testing.T) {
	clk := newClock(date("2026-03-04T10:30:00Z"))
	l := mustOpen(t, billing.Options{Now: clk.Now})
	ten := mustTenant(t, l, "a")
	mustRecord(t, l, nozzle.UsageEvent{RequestID: "1", TenantID: ten.ID, Time: date("2026-03-04T09:10:00Z"), PromptTokens: 1, CompletionTokens: 1})
	runOutbox(t, l, &fakeStripe{}, fastOutbox, func(st nozzle.OutboxState) bool { return st.Sent == 2 })
	rep := mustReport(t, l, nozzle.ReportQuery{})
	if rep.Outbox == nil || rep.Outbox.Sent != 2 || rep.Outbox.LastSentAt.IsZero() || rep.Outbox.Enabled {
		t.Fatalf("outbox in report = %+v", rep.Outbox)
	}
}
