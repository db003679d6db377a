package nozzle

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Tenant is a customer of the pool: a company with API keys, adapters and a
// share of the GPU bill.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Suspended tenants are refused on every request (403).
	Suspended bool `json:"suspended"`
	// MonthlyBudgetUSD caps what the tenant can be charged in a calendar
	// month (UTC); 0 means no cap.
	MonthlyBudgetUSD float64 `json:"monthly_budget_usd"`
	// Limits are the default per-key limits for the tenant's keys.
	Limits Limits `json:"limits"`
	// StripeCustomerID is the tenant's Stripe customer, once created.
	StripeCustomerID string `json:"stripe_customer_id,omitempty"`
}

// TenantIDPrefix begins every tenant id.
const TenantIDPrefix = "ten_"

// ValidateTenantName reports whether name can name a new tenant (or a
// tenant's new name): paths and reports name a tenant by id or name, so a
// name must not look like an id, nor hold characters a URL path cannot
// carry as they are.
func ValidateTenantName(name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return Errorf(EINVALID, "Tenant name is required.").WithParam("name")
	case len(name) > 100:
		return Errorf(EINVALID, "Tenant name must be at most 100 characters.").WithParam("name")
	case name != strings.TrimSpace(name):
		return Errorf(EINVALID, "Tenant name %q must not begin or end with spaces.", name).WithParam("name")
	case strings.HasPrefix(name, TenantIDPrefix):
		return Errorf(EINVALID, "Tenant name %q must not begin with %q, which begins tenant ids.", name, TenantIDPrefix).WithParam("name")
	case strings.ContainsAny(name, "/\\?#%") || strings.ContainsFunc(name, unicode.IsControl) || !utf8.ValidString(name):
		return Errorf(EINVALID, "Tenant name %q must not hold / \\ ? # %% or control characters.", name).WithParam("name")
	}
	return nil
}

// Validate reports whether the tenant's fields are acceptable. A name
// stored before ValidateTenantName's rules passes as long as it is there.
func (t *Tenant) Validate() error {
	if t.Name == "" {
		return Errorf(EINVALID, "Tenant name is required.").WithParam("name")
	}
	if len(t.Name) > 100 {
		return Errorf(EINVALID, "Tenant name must be at most 100 characters.").WithParam("name")
	}
	if t.MonthlyBudgetUSD < 0 {
		return Errorf(EINVALID, "Monthly budget must not be negative.").WithParam("monthly_budget_usd")
	}
	return t.Limits.Validate()
}

// Limits are per-key request and token rates. Zero means unlimited.
type Limits struct {
	RequestsPerMinute int `json:"requests_per_minute"`
	TokensPerMinute   int `json:"tokens_per_minute"`
}

// Validate reports whether the limits are acceptable.
func (l Limits) Validate() error {
	if l.RequestsPerMinute < 0 || l.TokensPerMinute < 0 {
		return Errorf(EINVALID, "Limits must not be negative.").WithParam("limits")
	}
	return nil
}

// Price is what a tenant is charged per million tokens.
type Price struct {
	PromptPerMillionUSD     float64 `json:"prompt_per_million_usd"`
	CompletionPerMillionUSD float64 `json:"completion_per_million_usd"`
	// BatchDiscountPercent is the share, 0 to 100, taken off the charge
	// of a request the Batch API ran (UsageEvent.Batch). Prices stored
	// before it existed have none.
	BatchDiscountPercent float64 `json:"batch_discount_percent"`
	// CachedPromptPerMillionUSD is the price of a prompt token the
	// runtime's prefix cache held (UsageEvent.CachedPromptTokens: no
	// prefill ran for it), at most PromptPerMillionUSD. It is a price like
	// the others: zero is free. The API, the console and the config give
	// it the prompt price where it is left out (no discount), and prices
	// stored before it existed read as their prompt price.
	CachedPromptPerMillionUSD float64 `json:"cached_prompt_per_million_usd"`
}

// MaxPricePerMillionUSD is the highest price a price list takes, per
// million tokens of either kind (a dollar a token): far above any real
// price, and low enough that no charge, nor any sum of charges, can
// overflow to infinity, which the ledger could not store.
const MaxPricePerMillionUSD = 1e6

// Charge returns the price of the given token counts, every prompt token
// at the uncached prompt price and without a batch discount: an upper
// bound of any request's charge for them (while CachedPromptPerMillionUSD
// is at most PromptPerMillionUSD, which the price lists hold to).
func (p Price) Charge(promptTokens, completionTokens int64) float64 {
	return (float64(promptTokens)*p.PromptPerMillionUSD + float64(completionTokens)*p.CompletionPerMillionUSD) / 1e6
}

// ChargeEvent returns what a usage event is charged at this price: its
// uncached prompt tokens at PromptPerMillionUSD, its cached ones
// (CachedPromptTokens) at CachedPromptPerMillionUSD and its completion
// tokens at CompletionPerMillionUSD, less BatchDiscountPercent of all of it
// for a request the Batch API ran. It ignores the event's status (a failed
// request is charged nothing, which is the ledger's to decide).
func (p Price) ChargeEvent(ev *UsageEvent) float64 {
	cached := min(max(ev.CachedPromptTokens, 0), ev.PromptTokens)
	c := (float64(ev.PromptTokens-cached)*p.PromptPerMillionUSD + float64(cached)*p.CachedPromptPerMillionUSD +
		float64(ev.CompletionTokens)*p.CompletionPerMillionUSD) / 1e6
	if ev.Batch && p.BatchDiscountPercent > 0 {
		c *= 1 - p.BatchDiscountPercent/100
	}
	return c
}

// PriceVersion is a price in force from a point in time. TenantID is empty
// for the default price list.
type PriceVersion struct {
	TenantID      string    `json:"tenant_id,omitempty"`
	Price         Price     `json:"price"`
	EffectiveFrom time.Time `json:"effective_from"`
	// Standard marks the end of a tenant's override: from EffectiveFrom
	// the tenant pays the standard prices, as they change (Price is zero).
	Standard bool `json:"standard,omitempty"`
}

// MarshalJSON writes a return to the standard prices with "price": null:
// it has no price of its own (the standard ones apply, as they change).
func (v PriceVersion) MarshalJSON() ([]byte, error) {
	type plain PriceVersion
	if !v.Standard {
		return json.Marshal(plain(v))
	}
	return json.Marshal(struct {
		plain
		Price *Price `json:"price"`
	}{plain: plain(v)})
}

// OverrideInForce reports whether a tenant's price history (as Prices
// returns it, oldest first) has an override in force at a time: its latest
// version by then is a price, not a return to the standard prices.
func OverrideInForce(hist []PriceVersion, tenantID string, at time.Time) bool {
	in := false
	for _, pv := range hist {
		if pv.TenantID == tenantID && !pv.EffectiveFrom.After(at) {
			in = !pv.Standard
		}
	}
	return in
}

// TenantUpdate changes some fields of a tenant; nil fields stay as they are.
type TenantUpdate struct {
	Name             *string  `json:"name,omitempty"`
	Suspended        *bool    `json:"suspended,omitempty"`
	MonthlyBudgetUSD *float64 `json:"monthly_budget_usd,omitempty"`
	Limits           *Limits  `json:"limits,omitempty"`
	StripeCustomerID *string  `json:"stripe_customer_id,omitempty"`
}

// TenantLookup finds tenants (a TenantService is one).
type TenantLookup interface {
	Tenant(ctx context.Context, id string) (*Tenant, error)
	Tenants(ctx context.Context) ([]*Tenant, error)
}

// FindTenant returns the tenant whose id, or else whose name, is s.
// Returns ENOTFOUND if there is none.
func FindTenant(ctx context.Context, ts TenantLookup, s string) (*Tenant, error) {
	t, err := ts.Tenant(ctx, s)
	if err == nil || ErrorCode(err) != ENOTFOUND {
		return t, err
	}
	all, err := ts.Tenants(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range all {
		if t.Name == s {
			return t, nil
		}
	}
	return nil, Errorf(ENOTFOUND, "No tenant %q.", s)
}

// TenantService stores tenants and their prices.
type TenantService interface {
	// CreateTenant stores a new tenant, filling ID and CreatedAt.
	// Returns ECONFLICT if the name is taken, EINVALID if it fails Validate.
	CreateTenant(ctx context.Context, t *Tenant) error
	// Tenant returns a tenant by ID. Returns ENOTFOUND if there is none.
	Tenant(ctx context.Context, id string) (*Tenant, error)
	// Tenants returns every tenant, ordered by creation.
	Tenants(ctx context.Context) ([]*Tenant, error)
	// TenantPage returns one page of the tenants ordered by creation
	// (Ascending, oldest first, unless q says otherwise). q.After or
	// q.Before naming no tenant is EINVALID (UnknownCursor).
	TenantPage(ctx context.Context, q PageQuery) (*Page[*Tenant], error)
	// UpdateTenant applies upd. Returns ENOTFOUND if there is no such tenant.
	UpdateTenant(ctx context.Context, id string, upd TenantUpdate) (*Tenant, error)

	// SetPrice puts a price in force from the given time for a tenant, or
	// for everyone when tenantID is empty.
	SetPrice(ctx context.Context, tenantID string, p Price, from time.Time) error
	// UseStandardPrice ends a tenant's price override: from the given
	// time the tenant pays the standard prices, as they change, until an
	// override is set again. Returns ENOTFOUND if there is no such tenant.
	UseStandardPrice(ctx context.Context, tenantID string, from time.Time) error
	// PriceAt returns the price in force for a tenant at a time: the
	// tenant's override if one is in force, else the default.
	PriceAt(ctx context.Context, tenantID string, at time.Time) (Price, error)
	// Prices returns the price history of a tenant (or of the default list
	// when tenantID is empty), oldest first.
	Prices(ctx context.Context, tenantID string) ([]PriceVersion, error)
}
