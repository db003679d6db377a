package stripe_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle/billing"
)

// TestSender_Outcomes checks how Stripe's answers map onto the outbox's
// outcomes, through the real client against an HTTP server answering as
// Stripe does (stripe-mock cannot produce these errors).
func TestSender_Outcomes(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
		body   string
		want   string // "ok", "rejected", "duplicate" or "unknown"
	}{
		{"OK", 200, `{"object":"billing.meter_event","identifier":"x"}`, "ok"},
		{"BadRequest", 400, `{"error":{"type":"invalid_request_error","message":"No such customer: 'cus_x'","param":"payload"}}`, "rejected"},
		{"Unauthorized", 401, `{"error":{"type":"invalid_request_error","message":"Invalid API Key provided"}}`, "rejected"},
		{"IdentifierExists", 400, `{"error":{"type":"invalid_request_error","code":"resource_already_exists","message":"An event with identifier x already exists."}}`, "duplicate"},
		{"Conflict", 409, `{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}`, "unknown"},
		{"RateLimited", 429, `{"error":{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}}`, "unknown"},
		{"ServerError", 500, `{"error":{"type":"api_error","message":"Something went wrong"}}`, "unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var gotKey, gotIdentifier string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.ParseForm()
				gotKey, gotIdentifier = r.Header.Get("Idempotency-Key"), r.PostForm.Get("identifier")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				fmt.Fprint(w, c.body)
			}))
			defer srv.Close()
			err := newSender(t, srv.URL).SendMeterEvent(context.Background(), billing.MeterEvent{
				Identifier: "x", IdempotencyKey: "x", EventName: "e", CustomerID: "cus_x", Value: 1, Timestamp: time.Now(),
			})
			var got string
			switch {
			case err == nil:
				got = "ok"
			case errors.Is(err, billing.ErrDuplicate):
				got = "duplicate"
			case errors.Is(err, billing.ErrRejected):
				got = "rejected"
			default:
				got = "unknown"
			}
			if got != c.want {
				t.Fatalf("outcome %s (%v), want %s", got, err, c.want)
			}
			if gotKey != "x" || gotIdentifier != "x" {
				t.Fatalf("sent Idempotency-Key %q, identifier %q", gotKey, gotIdentifier)
			}
		})
	}
}
