package billing

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// budgets holds the open reservations: what admitted requests may still
// charge. Month-to-date charges come from the ledger (bucket months).
type budgets struct {
	mu   sync.Mutex
	open map[string]float64 // tenant → reserved USD
}

func (b *budgets) init() { b.open = map[string]float64{} }

// ReserveBudget reserves usd against the tenant's budget for the current
// calendar month (UTC): month-to-date charges plus open reservations plus
// usd must stay within Tenant.MonthlyBudgetUSD. Returns EQUOTA, with
// RetryAfter set to the start of next month, when it would not. The check
// and the reservation are one step under a lock, so concurrent requests
// can never reserve past the budget. A tenant without a budget reserves
// nothing.
//
// release must be called once the request's usage is recorded (its charge
// is then in the month-to-date total) or the request is abandoned; it is
// safe to call twice.
func (l *Ledger) ReserveBudget(ctx context.Context, tenantID string, usd float64) (func(), error) {
	if !nonNegative(usd) {
		return nil, nozzle.Errorf(nozzle.EINVALID, "A budget reservation must be a non-negative amount.")
	}
	t, err := l.Tenant(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	if t.MonthlyBudgetUSD == 0 {
		return func() {}, nil
	}
	now := l.now().UTC()
	b := &l.budget
	b.mu.Lock()
	defer b.mu.Unlock()
	// Read the month-to-date charges under the lock: a release (which
	// takes the lock) always follows the journaling of its usage, so the
	// sum below never misses both the reservation and its charge. The
	// journaled charges are read before the filed ones: an event filed in
	// between is counted twice, never missed.
	mk := monthKey(tenantID, monthOf(now))
	mtd := l.j.monthCharges(mk)
	err = l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bMonths).Get(mk)
		if v == nil {
			return nil
		}
		r, err := decodeRollup(v)
		mtd += r.ChargedUSD
		return err
	})
	if err != nil {
		return nil, err
	}
	if mtd+b.open[tenantID]+usd > t.MonthlyBudgetUSD*(1+1e-12) {
		next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		renews := next.Format("2006-01-02")
		if mtd >= t.MonthlyBudgetUSD {
			return nil, nozzle.Errorf(nozzle.EQUOTA, "You have used your monthly budget of %s; it renews on %s.",
				nozzle.FormatUSD(t.MonthlyBudgetUSD), renews).WithReason("insufficient_quota").WithRetryAfter(next.Sub(now))
		}
		// What is left does not cover this request at its most (every
		// token it may generate): a smaller one may still fit.
		left := max(0, t.MonthlyBudgetUSD-mtd-b.open[tenantID])
		inFlight := ""
		if b.open[tenantID] > 0 {
			inFlight = fmt.Sprintf(" (%s more is held by requests still running)", nozzle.FormatUSD(b.open[tenantID]))
		}
		return nil, nozzle.Errorf(nozzle.EQUOTA, "This request could cost up to %s, more than the %s left of your monthly budget of %s%s; lower max_tokens, or raise the budget. It renews on %s.",
			nozzle.FormatUSD(usd), nozzle.FormatUSD(left), nozzle.FormatUSD(t.MonthlyBudgetUSD), inFlight, renews).WithReason("insufficient_quota").WithRetryAfter(next.Sub(now))
	}
	b.open[tenantID] += usd
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			left := b.open[tenantID] - usd
			if left <= 1e-12 {
				delete(b.open, tenantID)
			} else {
				b.open[tenantID] = left
			}
		})
	}, nil
}

// MonthToDate returns a tenant's charges in the calendar month (UTC)
// holding at.
func (l *Ledger) MonthToDate(ctx context.Context, tenantID string, at time.Time) (float64, error) {
	var mtd float64
	err := l.viewUsage(func(tx *bolt.Tx) error {
		v := tx.Bucket(bMonths).Get(monthKey(tenantID, monthOf(at)))
		if v == nil {
			return nil
		}
		r, err := decodeRollup(v)
		mtd = r.ChargedUSD
		return err
	})
	return mtd, err
}
