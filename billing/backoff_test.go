package billing

import (
	"testing"
	"time"
)

// The outbox's pause after n failures doubles from MinBackoff and stays
// at MaxBackoff, within ±20% jitter: checked here without a clock, so
// that the outage test against stripe-mock (billing/stripe) need not time
// the pauses of a loaded machine from above.
func TestBackoff(t *testing.T) {
	o := OutboxOptions{MinBackoff: 20 * time.Millisecond, MaxBackoff: 160 * time.Millisecond}
	want := []time.Duration{20, 40, 80, 160, 160, 160, 160}
	for range 200 {
		for i, w := range want {
			w *= time.Millisecond
			if d := backoff(i+1, &o); d < w*8/10 || d > w*12/10 {
				t.Fatalf("backoff after %d failures = %v, want %v ±20%%", i+1, d, w)
			}
		}
		if d := backoff(1000, &o); d > o.MaxBackoff*12/10 {
			t.Fatalf("backoff after 1000 failures = %v, past the cap", d)
		}
	}
}
