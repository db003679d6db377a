// Package stripe sends Nozzle's metered usage to Stripe: a customer per
// tenant and Billing Meter events (stripe-go v76, billing/meterevent). It
// implements billing.Sender; the outbox in package billing decides what to
// send and when, and keeps the exactly-once bookkeeping.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/nozzle-ai/nozzle/billing"
)

// DefaultAPIURL is Stripe's API.
const DefaultAPIURL = "https://api.stripe.com"

// Config configures a Sender. SecretKey is required.
type Config struct {
	// SecretKey is the Stripe secret (or restricted) key. Never logged.
	SecretKey string
	// APIURL is the API's base URL: DefaultAPIURL, or stripe-mock's in
	// tests.
	APIURL string
	// CustomerPayloadKey and ValuePayloadKey are the meters' payload keys
	// (Stripe's defaults: stripe_customer_id and value).
	CustomerPayloadKey string
	ValuePayloadKey    string
	// Timeout bounds each request. Default 30 seconds.
	Timeout time.Duration
	// HTTPClient, when set, replaces the default client (Timeout is then
	// the client's business).
	HTTPClient *http.Client
	// Logger defaults to slog.Default() with component=stripe.
	Logger *slog.Logger
}

// Sender is a billing.Sender that talks to Stripe.
type Sender struct {
	api *client.API
	cfg Config
}

var _ billing.Sender = (*Sender)(nil)

// New returns a Sender. The client does not retry on its own: the outbox
// worker retries, with backoff, under the same idempotency key.
func New(cfg Config) (*Sender, error) {
	if cfg.SecretKey == "" {
		return nil, errors.New("stripe: a secret key is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	if cfg.CustomerPayloadKey == "" {
		cfg.CustomerPayloadKey = "stripe_customer_id"
	}
	if cfg.ValuePayloadKey == "" {
		cfg.ValuePayloadKey = "value"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.Timeout}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default().With("component", "stripe")
	}
	backend := stripego.GetBackendWithConfig(stripego.APIBackend, &stripego.BackendConfig{
		URL:               stripego.String(strings.TrimRight(cfg.APIURL, "/")),
		HTTPClient:        cfg.HTTPClient,
		MaxNetworkRetries: stripego.Int64(0),
		LeveledLogger:     slogLogger{cfg.Logger},
	})
	return &Sender{api: client.New(cfg.SecretKey, &stripego.Backends{API: backend, Connect: backend, Uploads: backend}), cfg: cfg}, nil
}

// CreateCustomer creates a Stripe customer for a tenant, named after it,
// with the tenant's id in its metadata.
func (s *Sender) CreateCustomer(ctx context.Context, c billing.Customer) (string, error) {
	p := &stripego.CustomerParams{Name: stripego.String(c.Name)}
	p.Context = ctx
	p.AddMetadata("nozzle_tenant_id", c.TenantID)
	if c.IdempotencyKey != "" {
		p.SetIdempotencyKey(c.IdempotencyKey)
	}
	cus, err := s.api.Customers.New(p)
	if err != nil {
		return "", classify("create customer", err)
	}
	return cus.ID, nil
}

// SendMeterEvent creates one Billing Meter event.
func (s *Sender) SendMeterEvent(ctx context.Context, ev billing.MeterEvent) error {
	p := &stripego.BillingMeterEventParams{
		EventName:  stripego.String(ev.EventName),
		Identifier: stripego.String(ev.Identifier),
		Timestamp:  stripego.Int64(ev.Timestamp.Unix()),
		Payload: map[string]string{
			s.cfg.CustomerPayloadKey: ev.CustomerID,
			s.cfg.ValuePayloadKey:    strconv.FormatInt(ev.Value, 10),
		},
	}
	p.Context = ctx
	p.SetIdempotencyKey(ev.IdempotencyKey)
	if _, err := s.api.BillingMeterEvents.New(p); err != nil {
		return classify("send meter event "+ev.Identifier, err)
	}
	return nil
}

// classify maps a Stripe error onto the outbox's outcomes: a 4xx answer
// (other than 409, 429 and 408) is a definite refusal; a refusal that says
// the identifier exists means Stripe holds the event; anything else (no
// answer, a 5xx, a timeout) leaves the outcome unknown.
func classify(op string, err error) error {
	var se *stripego.Error
	if !errors.As(err, &se) || se.HTTPStatusCode == 0 {
		return fmt.Errorf("%s: %w", op, err)
	}
	code := se.HTTPStatusCode
	msg := fmt.Sprintf("%s: stripe %d %s: %s", op, code, se.Code, se.Msg)
	switch {
	case code >= 500 || code == http.StatusConflict || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
		return errors.New(msg)
	case se.Code == stripego.ErrorCodeResourceAlreadyExists ||
		(strings.Contains(se.Msg, "identifier") && strings.Contains(se.Msg, "already")):
		return fmt.Errorf("%s: %w", msg, billing.ErrDuplicate)
	default:
		return fmt.Errorf("%s: %w", msg, billing.ErrRejected)
	}
}

// slogLogger passes stripe-go's messages to slog at debug level: errors
// reach the caller as values and are logged where handled.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Debugf(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s slogLogger) Infof(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s slogLogger) Warnf(f string, v ...any)  { s.l.Debug(fmt.Sprintf(f, v...)) }
func (s slogLogger) Errorf(f string, v ...any) { s.l.Debug(fmt.Sprintf(f, v...)) }
