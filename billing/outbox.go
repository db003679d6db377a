package billing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Sender delivers metered usage to the billing provider (Stripe: package
// billing/stripe). An error wrapping ErrRejected says the provider refused
// the request and recorded nothing; ErrDuplicate says it holds the event
// already; any other error leaves the outcome unknown.
type Sender interface {
	// CreateCustomer creates the provider's customer for a tenant and
	// returns its id. The same IdempotencyKey returns the same customer.
	CreateCustomer(ctx context.Context, c Customer) (string, error)
	// SendMeterEvent sends one meter event.
	SendMeterEvent(ctx context.Context, ev MeterEvent) error
}

// Customer asks for a billing customer for a tenant.
type Customer struct {
	TenantID       string
	Name           string
	IdempotencyKey string
}

// MeterEvent is one hourly aggregate of a tenant's tokens for one meter.
type MeterEvent struct {
	// Identifier is derived from the ledger (tenant, meter, hour and part)
	// and is also the request's idempotency key: a resend is always the
	// same event.
	Identifier     string
	IdempotencyKey string
	EventName      string
	CustomerID     string
	Value          int64
	Timestamp      time.Time
}

var (
	// ErrRejected marks a definite refusal: nothing was recorded.
	ErrRejected = errors.New("rejected by the billing provider")
	// ErrDuplicate marks an event the provider holds already.
	ErrDuplicate = errors.New("already recorded by the billing provider")
)

// Meters. The prompt and completion meters count the tokens of
// interactive requests; the batch ones those of requests the Batch API
// ran (nozzle.UsageEvent.Batch), which a batch discount prices apart. The
// prompt meters count the prompt tokens the prefix cache did not hold;
// the cached prompt meters (since schema version 17) those it held
// (nozzle.UsageEvent.CachedPromptTokens), which the cached prompt price
// prices apart.
const (
	MeterPrompt            = "prompt"
	MeterCompletion        = "completion"
	MeterBatchPrompt       = "batch_prompt"
	MeterBatchCompletion   = "batch_completion"
	MeterCachedPrompt      = "cached_prompt"
	MeterBatchCachedPrompt = "batch_cached_prompt"
)

// meterBytes are the meters' bytes in outbox keys.
var meterBytes = map[string]byte{MeterPrompt: 1, MeterCompletion: 2, MeterBatchPrompt: 3, MeterBatchCompletion: 4,
	MeterCachedPrompt: 5, MeterBatchCachedPrompt: 6}

// OutboxOptions configure the outbox worker.
type OutboxOptions struct {
	// PromptEventName and CompletionEventName are the Stripe meters' event
	// names. Default nozzle_prompt_tokens and nozzle_completion_tokens.
	PromptEventName     string
	CompletionEventName string
	// BatchPromptEventName and BatchCompletionEventName are the batch
	// meters' event names. Default nozzle_batch_prompt_tokens and
	// nozzle_batch_completion_tokens.
	BatchPromptEventName     string
	BatchCompletionEventName string
	// CachedPromptEventName and BatchCachedPromptEventName are the cached
	// prompt meters' event names. Default nozzle_cached_prompt_tokens and
	// nozzle_batch_cached_prompt_tokens.
	CachedPromptEventName      string
	BatchCachedPromptEventName string
	// CloseDelay is how long after its end an hour is closed and its usage
	// enters the outbox. Default 5 minutes. Events recorded for an hour
	// after it closed go out as a further part of that hour.
	CloseDelay time.Duration
	// PollEvery is the pause between passes when nothing failed. Default
	// 30 seconds.
	PollEvery time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff after a
	// failure. Defaults 1 second and 5 minutes.
	MinBackoff, MaxBackoff time.Duration
	// DedupWindow is how long after an attempt with an unknown outcome a
	// row may still be re-sent: Stripe keeps identifiers and idempotency
	// keys for 24 hours. Default 23 hours.
	DedupWindow time.Duration
	// MaxAge is the oldest event timestamp Stripe accepts. Default 35 days
	// less one hour.
	MaxAge time.Duration
}

func (o *OutboxOptions) defaults() {
	if o.PromptEventName == "" {
		o.PromptEventName = "nozzle_prompt_tokens"
	}
	if o.CompletionEventName == "" {
		o.CompletionEventName = "nozzle_completion_tokens"
	}
	if o.BatchPromptEventName == "" {
		o.BatchPromptEventName = "nozzle_batch_prompt_tokens"
	}
	if o.BatchCompletionEventName == "" {
		o.BatchCompletionEventName = "nozzle_batch_completion_tokens"
	}
	if o.CachedPromptEventName == "" {
		o.CachedPromptEventName = "nozzle_cached_prompt_tokens"
	}
	if o.BatchCachedPromptEventName == "" {
		o.BatchCachedPromptEventName = "nozzle_batch_cached_prompt_tokens"
	}
	if o.CloseDelay <= 0 {
		o.CloseDelay = 5 * time.Minute
	}
	if o.PollEvery <= 0 {
		o.PollEvery = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Minute, o.MinBackoff)
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = 23 * time.Hour
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 35*24*time.Hour - time.Hour
	}
}

// outboxStatus is the worker's in-memory state for reports.
type outboxStatus struct {
	running atomic.Int32
}

func outboxKey(hour int64, tenantID, meter string, part uint32) []byte {
	m := meterBytes[meter]
	var p [4]byte
	p[0], p[1], p[2], p[3] = byte(part>>24), byte(part>>16), byte(part>>8), byte(part)
	return join(hourKey(hour), lp(tenantID), []byte{m}, p[:])
}

func outboxIdentifier(tenantID, meter string, hour int64, part uint32) string {
	id := fmt.Sprintf("nz-%s-%s-%s", tenantID, meter, hourTime(hour).Format("2006010215"))
	if part > 0 {
		id += fmt.Sprintf("-%d", part)
	}
	return id
}

// SweepOutbox puts the usage of every closed hour (one ending at or before
// closedBefore) that is not yet in the outbox into it: per tenant and hour,
// one row per meter with tokens. It runs in one write transaction with the
// usage events, so no event is missed or taken twice. It returns the number
// of rows added.
func (l *Ledger) SweepOutbox(ctx context.Context, closedBefore time.Time, opts OutboxOptions) (int, error) {
	opts.defaults()
	cutoff := hourOf(closedBefore) // hours < cutoff have ended
	now := l.now().UTC()
	var added int
	err := l.write(ctx, func(w *wtx) error {
		added = 0
		dirty := w.tx.Bucket(bDirty)
		var keys [][]byte
		c := dirty.Cursor()
		for k, _ := c.First(); k != nil && len(k) >= 8 && hourFromKey(k[:8]) < cutoff; k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			n, err := w.enqueueHour(hourFromKey(k[:8]), string(k[8:]), now, &opts)
			if err != nil {
				return err
			}
			added += n
			if err := dirty.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	return added, err
}

// enqueueHour adds outbox rows for what a tenant's hour holds beyond what
// the outbox has taken of it.
func (w *wtx) enqueueHour(hour int64, tenantID string, now time.Time, opts *OutboxOptions) (int, error) {
	var sum rollup
	prefix := join(lp(tenantID), hourKey(hour))
	c := w.tx.Bucket(bRollups).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		r, err := decodeRollup(v)
		if err != nil {
			return 0, err
		}
		sum.add(&r)
	}
	bb := w.tx.Bucket(bBilled)
	var b billed
	if v := bb.Get(prefix); v != nil {
		var err error
		if b, err = decodeBilled(v); err != nil {
			return 0, err
		}
	}
	// Failed requests are not billed. A file from before schema version 5
	// billed their tokens too, so what was taken may exceed what is
	// billable: the excess is taken off the hour's later tokens. The
	// interactive meters take the tokens of requests the Batch API did
	// not run, the batch meters the others (an hour billed before schema
	// version 16 had none marked batch, and took none).
	//
	// The prompt meters take the prompt tokens the prefix cache did not
	// hold, the cached prompt meters those it held. An hour billed before
	// schema version 17 took both on its prompt meters: what they took
	// counts as the cached tokens first, the rest as uncached ones, so
	// that no token is taken twice and the rows already queued keep
	// their identifiers.
	bp, bc := sum.billable()
	xp, xc := sum.batchBillable()
	kp, xk := sum.cachedBillable()
	kp -= xk
	bp, bc = bp-xp, bc-xc
	bp, xp = bp-kp, xp-xk // uncached only
	if b.promptHoldsCached {
		c, x := min(max(kp, 0), b.PromptTokens), min(max(xk, 0), b.BatchPromptTokens)
		b.PromptTokens, b.CachedPromptTokens = b.PromptTokens-c, c
		b.BatchPromptTokens, b.BatchCachedPromptTokens = b.BatchPromptTokens-x, x
		b.promptHoldsCached = false
	}
	dp, dc := bp-b.PromptTokens, bc-b.CompletionTokens
	dxp, dxc := xp-b.BatchPromptTokens, xc-b.BatchCompletionTokens
	dk, dxk := kp-b.CachedPromptTokens, xk-b.BatchCachedPromptTokens
	if dp <= 0 && dc <= 0 && dxp <= 0 && dxc <= 0 && dk <= 0 && dxk <= 0 {
		return 0, nil
	}
	part := b.Parts
	n := 0
	for _, m := range []struct {
		meter, event string
		value        int64
	}{
		{MeterPrompt, opts.PromptEventName, dp}, {MeterCompletion, opts.CompletionEventName, dc},
		{MeterBatchPrompt, opts.BatchPromptEventName, dxp}, {MeterBatchCompletion, opts.BatchCompletionEventName, dxc},
		{MeterCachedPrompt, opts.CachedPromptEventName, dk}, {MeterBatchCachedPrompt, opts.BatchCachedPromptEventName, dxk},
	} {
		if m.value <= 0 {
			continue
		}
		row := &outboxRow{
			Identifier: outboxIdentifier(tenantID, m.meter, hour, part),
			TenantID:   tenantID,
			Meter:      m.meter,
			EventName:  m.event,
			Hour:       hour,
			Part:       part,
			Value:      m.value,
			State:      outboxPending,
			CreatedAt:  now,
		}
		k := outboxKey(hour, tenantID, m.meter, part)
		if err := w.tx.Bucket(bOutbox).Put(k, encodeOutboxRow(row)); err != nil {
			return 0, err
		}
		if err := w.tx.Bucket(bOutboxPending).Put(k, nil); err != nil {
			return 0, err
		}
		n++
	}
	b.PromptTokens, b.CompletionTokens, b.Parts = max(b.PromptTokens, bp), max(b.CompletionTokens, bc), part+1
	b.BatchPromptTokens, b.BatchCompletionTokens = max(b.BatchPromptTokens, xp), max(b.BatchCompletionTokens, xc)
	b.CachedPromptTokens, b.BatchCachedPromptTokens = max(b.CachedPromptTokens, kp), max(b.BatchCachedPromptTokens, xk)
	return n, bb.Put(prefix, encodeBilled(&b))
}

// StartOutbox runs the outbox worker in the background until Close.
func (l *Ledger) StartOutbox(s Sender, opts OutboxOptions) {
	l.wwg.Add(1)
	go func() {
		defer l.wwg.Done()
		if err := l.RunOutbox(l.wctx, s, opts); err != nil {
			l.log.Error("outbox worker stopped", "err", err)
		}
	}()
}

// RunOutbox is the outbox worker: it sweeps closed hours into the outbox
// and sends due rows oldest first, one at a time, until ctx ends. Each
// attempt is written to the ledger before the call to the provider, so a
// crash between the call and the result leaves a row that is re-sent with
// the same identifier and idempotency key — or, once Stripe's dedup window
// has passed, parked as needing review instead of being sent blindly. A
// failure whose outcome is unknown backs the whole worker off
// exponentially (the provider is probably unreachable).
func (l *Ledger) RunOutbox(ctx context.Context, s Sender, opts OutboxOptions) error {
	opts.defaults()
	l.outbox.running.Add(1)
	defer l.outbox.running.Add(-1)
	failures := 0
	for {
		if _, err := l.SweepOutbox(ctx, l.now().Add(-opts.CloseDelay), opts); err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return nil
			}
			return fmt.Errorf("sweep outbox: %w", err)
		}
		ok, err := l.sendDue(ctx, s, &opts)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return nil
			}
			return err
		}
		wait := opts.PollEvery
		if !ok {
			failures++
			wait = backoff(failures, &opts)
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the pause after n consecutive failures: exponential from
// MinBackoff to MaxBackoff with ±20% jitter.
func backoff(n int, o *OutboxOptions) time.Duration {
	d := o.MinBackoff
	for i := 1; i < n && d < o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sendDue sends the rows that are due. It returns false when a send failed
// with an unknown outcome (the pass stops there).
func (l *Ledger) sendDue(ctx context.Context, s Sender, opts *OutboxOptions) (bool, error) {
	now := l.now().UTC()
	var due [][]byte
	err := l.viewUsage(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bOutbox)
		c := tx.Bucket(bOutboxPending).Cursor()
		for k, _ := c.First(); k != nil && len(due) < 1000; k, _ = c.Next() {
			v := ob.Get(k)
			if v == nil {
				continue
			}
			row, err := decodeOutboxRow(v)
			if err != nil {
				return err
			}
			if row.NextAttemptAt.After(now) {
				continue
			}
			due = append(due, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	customers := map[string]string{}
	for _, k := range due {
		if ctx.Err() != nil {
			return true, nil
		}
		ok, err := l.sendRow(ctx, s, opts, k, customers)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// updateRow rewrites an outbox row in one write transaction. fn returns
// false to leave the row as it is.
func (l *Ledger) updateRow(ctx context.Context, k []byte, fn func(r *outboxRow, st *outboxStats) bool) (*outboxRow, error) {
	var out *outboxRow
	err := l.write(context.WithoutCancel(ctx), func(w *wtx) error {
		out = nil
		ob := w.tx.Bucket(bOutbox)
		v := ob.Get(k)
		if v == nil {
			return nil
		}
		r, err := decodeOutboxRow(v)
		if err != nil {
			return err
		}
		meta := w.tx.Bucket(bMeta)
		var st outboxStats
		if sv := meta.Get(metaOutbox); sv != nil {
			if st, err = decodeOutboxStats(sv); err != nil {
				return err
			}
		}
		before := r.State
		if !fn(r, &st) {
			return nil
		}
		if err := ob.Put(k, encodeOutboxRow(r)); err != nil {
			return err
		}
		if before != r.State {
			if before == outboxPending {
				if err := w.tx.Bucket(bOutboxPending).Delete(k); err != nil {
					return err
				}
			} else if before == outboxNeedsReview || before == outboxExpired {
				if err := w.tx.Bucket(bOutboxParked).Delete(k); err != nil {
					return err
				}
			}
			switch r.State {
			case outboxPending:
				err = w.tx.Bucket(bOutboxPending).Put(k, nil)
			case outboxNeedsReview, outboxExpired:
				err = w.tx.Bucket(bOutboxParked).Put(k, nil)
			}
			if err != nil {
				return err
			}
		}
		out = r
		return meta.Put(metaOutbox, encodeOutboxStats(&st))
	})
	return out, err
}

// sendRow runs one attempt for the row at key k.
func (l *Ledger) sendRow(ctx context.Context, s Sender, opts *OutboxOptions, k []byte, customers map[string]string) (bool, error) {
	now := l.now().UTC()
	var row *outboxRow
	err := l.viewUsage(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bOutbox).Get(k); v != nil {
			var err error
			row, err = decodeOutboxRow(v)
			return err
		}
		return nil
	})
	if err != nil || row == nil || row.State != outboxPending {
		return true, err
	}
	park := func(state byte, why string) error {
		_, err := l.updateRow(ctx, k, func(r *outboxRow, _ *outboxStats) bool {
			if r.State != outboxPending {
				return false
			}
			r.State, r.LastError = state, why
			return true
		})
		if err == nil {
			l.log.Warn("outbox row parked", "identifier", row.Identifier, "reason", why)
		}
		return err
	}
	if now.Sub(hourTime(row.Hour)) > opts.MaxAge {
		return true, park(outboxExpired, "The hour is older than Stripe accepts for meter events.")
	}
	if !row.UncertainSince.IsZero() && now.Sub(row.UncertainSince) > opts.DedupWindow {
		return true, park(outboxNeedsReview, fmt.Sprintf(
			"An attempt at %s may have reached Stripe, and Stripe no longer deduplicates it: check the meter's events before sending again.",
			row.UncertainSince.Format(time.RFC3339)))
	}

	cust := row.CustomerID
	if cust == "" {
		if cust, err = l.ensureCustomer(ctx, s, row.TenantID, customers); err != nil {
			if errors.Is(err, ErrClosed) {
				return false, err
			}
			l.noteFailure(ctx, k, now, opts, err.Error(), false)
			return false, nil
		}
	}

	// Write the attempt down before the call.
	var prevUncertain time.Time
	row, err = l.updateRow(ctx, k, func(r *outboxRow, _ *outboxStats) bool {
		if r.State != outboxPending {
			return false
		}
		if r.CustomerID == "" {
			r.CustomerID = cust
		}
		prevUncertain = r.UncertainSince
		r.Attempts++
		r.LastAttemptAt = now
		if r.UncertainSince.IsZero() {
			r.UncertainSince = now
		}
		return true
	})
	if err != nil || row == nil {
		return true, err
	}

	serr := s.SendMeterEvent(ctx, MeterEvent{
		Identifier:     row.Identifier,
		IdempotencyKey: row.Identifier,
		EventName:      row.EventName,
		CustomerID:     row.CustomerID,
		Value:          row.Value,
		Timestamp:      hourTime(row.Hour),
	})
	switch {
	case serr == nil || errors.Is(serr, ErrDuplicate):
		done := l.now().UTC()
		_, err := l.updateRow(ctx, k, func(r *outboxRow, st *outboxStats) bool {
			if r.State == outboxSent {
				return false
			}
			r.State, r.SentAt, r.LastError, r.NextAttemptAt = outboxSent, done, "", time.Time{}
			st.Sent++
			st.LastSentAt = done
			return true
		})
		l.met.outboxSent.Inc()
		return true, err
	case errors.Is(serr, ErrRejected):
		// Nothing was recorded by this attempt; earlier ones stay as
		// uncertain as they were.
		l.noteFailure(ctx, k, now, opts, serr.Error(), true, prevUncertain)
		return true, nil
	default:
		if ctx.Err() != nil {
			// Shutting down mid-call: the attempt stays uncertain, as
			// after a crash.
			return true, nil
		}
		l.noteFailure(ctx, k, now, opts, serr.Error(), false)
		return false, nil
	}
}

// noteFailure records a failed attempt and when to try the row again.
func (l *Ledger) noteFailure(ctx context.Context, k []byte, now time.Time, opts *OutboxOptions, msg string, rejected bool, prevUncertain ...time.Time) {
	l.met.outboxFailed.Inc()
	_, err := l.updateRow(ctx, k, func(r *outboxRow, st *outboxStats) bool {
		if r.State != outboxPending {
			return false
		}
		r.LastError = msg
		r.NextAttemptAt = now.Add(backoff(int(max(r.Attempts, 1)), opts))
		if rejected && len(prevUncertain) > 0 {
			r.UncertainSince = prevUncertain[0]
		}
		st.LastError = msg
		return true
	})
	if err != nil {
		l.log.Error("record outbox failure", "err", err)
	}
	l.log.Warn("outbox send failed", "err", msg, "rejected", rejected)
}

// ensureCustomer returns the tenant's Stripe customer, creating it (with
// an idempotency key derived from the tenant) and storing its id on the
// tenant when it has none.
func (l *Ledger) ensureCustomer(ctx context.Context, s Sender, tenantID string, cache map[string]string) (string, error) {
	if id := cache[tenantID]; id != "" {
		return id, nil
	}
	t, err := l.Tenant(ctx, tenantID)
	if err != nil {
		return "", err
	}
	if t.StripeCustomerID == "" {
		id, err := s.CreateCustomer(ctx, Customer{TenantID: t.ID, Name: t.Name, IdempotencyKey: "nz-customer-" + t.ID})
		if err != nil {
			return "", err
		}
		if t, err = l.UpdateTenant(context.WithoutCancel(ctx), tenantID, nozzle.TenantUpdate{StripeCustomerID: &id}); err != nil {
			return "", err
		}
	}
	cache[tenantID] = t.StripeCustomerID
	return t.StripeCustomerID, nil
}

// EnsureCustomer returns the tenant's billing customer id, creating the
// customer through s when the tenant has none yet.
func (l *Ledger) EnsureCustomer(ctx context.Context, s Sender, tenantID string) (string, error) {
	return l.ensureCustomer(ctx, s, tenantID, map[string]string{})
}

func (l *Ledger) outboxState(tx *bolt.Tx) (nozzle.OutboxState, error) {
	st := nozzle.OutboxState{Enabled: l.outbox.running.Load() > 0}
	ob := tx.Bucket(bOutbox)
	c := tx.Bucket(bOutboxPending).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		st.Pending++
		if v := ob.Get(k); v != nil {
			r, err := decodeOutboxRow(v)
			if err != nil {
				return st, err
			}
			if r.LastError != "" {
				st.Failing++
			}
		}
	}
	c = tx.Bucket(bOutboxParked).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if v := ob.Get(k); v != nil {
			r, err := decodeOutboxRow(v)
			if err != nil {
				return st, err
			}
			if r.State == outboxExpired {
				st.Expired++
			} else {
				st.NeedsReview++
			}
		}
	}
	if v := tx.Bucket(bMeta).Get(metaOutbox); v != nil {
		s, err := decodeOutboxStats(v)
		if err != nil {
			return st, err
		}
		st.Sent, st.LastSentAt, st.LastError = int(s.Sent), s.LastSentAt, s.LastError
	}
	if st.Failing == 0 {
		st.LastError = "" // the last error is history once nothing fails
	}
	return st, nil
}

// OutboxState returns the outbox's counters.
func (l *Ledger) OutboxState(ctx context.Context) (nozzle.OutboxState, error) {
	var st nozzle.OutboxState
	err := l.viewUsage(func(tx *bolt.Tx) (err error) { st, err = l.outboxState(tx); return err })
	return st, err
}

// OutboxRow is an outbox row as shown to the operator.
type OutboxRow struct {
	Identifier     string    `json:"identifier"`
	TenantID       string    `json:"tenant_id"`
	Meter          string    `json:"meter"`
	EventName      string    `json:"event_name"`
	Hour           time.Time `json:"hour"`
	Part           int       `json:"part"`
	Value          int64     `json:"value"`
	State          string    `json:"state"`
	CustomerID     string    `json:"customer_id,omitempty"`
	Attempts       int       `json:"attempts"`
	UncertainSince time.Time `json:"uncertain_since,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	NextAttemptAt  time.Time `json:"next_attempt_at,omitzero"`
	SentAt         time.Time `json:"sent_at,omitzero"`
	LastError      string    `json:"last_error,omitempty"`
}

// Outbox row states as shown.
const (
	OutboxPending     = "pending"
	OutboxSent        = "sent"
	OutboxNeedsReview = "needs_review"
	OutboxExpired     = "expired"
)

var stateNames = map[byte]string{outboxPending: OutboxPending, outboxSent: OutboxSent, outboxNeedsReview: OutboxNeedsReview, outboxExpired: OutboxExpired}

func (r *outboxRow) public() OutboxRow {
	return OutboxRow{
		Identifier: r.Identifier, TenantID: r.TenantID, Meter: r.Meter, EventName: r.EventName,
		Hour: hourTime(r.Hour), Part: int(r.Part), Value: r.Value, State: stateNames[r.State],
		CustomerID: r.CustomerID, Attempts: int(r.Attempts), UncertainSince: r.UncertainSince,
		LastAttemptAt: r.LastAttemptAt, NextAttemptAt: r.NextAttemptAt, SentAt: r.SentAt, LastError: r.LastError,
	}
}

// OutboxRows lists outbox rows, oldest hour first; state filters them
// (empty for all).
func (l *Ledger) OutboxRows(ctx context.Context, state string) ([]OutboxRow, error) {
	var out []OutboxRow
	err := l.viewUsage(func(tx *bolt.Tx) error {
		return tx.Bucket(bOutbox).ForEach(func(_, v []byte) error {
			r, err := decodeOutboxRow(v)
			if err != nil {
				return err
			}
			if state == "" || stateNames[r.State] == state {
				out = append(out, r.public())
			}
			return nil
		})
	})
	return out, err
}

// ResolveOutbox settles a row parked for review once the operator has
// checked Stripe: sent=true records that Stripe has the event; sent=false
// puts the row back to be sent as new. Returns ENOTFOUND for an unknown
// identifier and ECONFLICT for a row that is not parked.
func (l *Ledger) ResolveOutbox(ctx context.Context, identifier string, sent bool) error {
	var key []byte
	err := l.viewUsage(func(tx *bolt.Tx) error {
		ob := tx.Bucket(bOutbox)
		c := tx.Bucket(bOutboxParked).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if v := ob.Get(k); v != nil {
				r, err := decodeOutboxRow(v)
				if err != nil {
					return err
				}
				if r.Identifier == identifier {
					key = append([]byte(nil), k...)
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if key == nil {
		return nozzle.Errorf(nozzle.ENOTFOUND, "No parked outbox row %q.", identifier)
	}
	now := l.now().UTC()
	_, err = l.updateRow(ctx, key, func(r *outboxRow, st *outboxStats) bool {
		if sent {
			r.State, r.SentAt = outboxSent, now
			st.Sent++
		} else {
			r.State, r.UncertainSince, r.NextAttemptAt = outboxPending, time.Time{}, time.Time{}
		}
		r.LastError = ""
		return true
	})
	return err
}
