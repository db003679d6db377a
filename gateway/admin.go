package gateway

import (
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// tenantJSON is a tenant as the admin API shows it.
type tenantJSON struct {
	Object string `json:"object"`
	*nozzle.Tenant
	// APIKey is the tenant's first key, shown once at creation.
	APIKey string `json:"api_key,omitempty"`
}

type createTenantRequest struct {
	Name             string         `json:"name"`
	MonthlyBudgetUSD float64        `json:"monthly_budget_usd"`
	Limits           *nozzle.Limits `json:"limits"`
}

// createTenant handles POST /admin/tenants: the tenant and its first API
// key (all scopes), shown once. If the key cannot be stored the tenant
// exists without one; POST /admin/tenants/{id}/keys issues it.
func (s *Server) createTenant(c *fiber.Ctx) error {
	var r createTenantRequest
	if err := s.readJSON(c, &r, false); err != nil {
		return err
	}
	t := &nozzle.Tenant{Name: strings.TrimSpace(r.Name), MonthlyBudgetUSD: r.MonthlyBudgetUSD}
	if r.Limits != nil {
		t.Limits = *r.Limits
	}
	if err := nozzle.ValidateTenantName(t.Name); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return err
	}
	ctx := c.UserContext()
	if err := s.deps.Tenants.CreateTenant(ctx, t); err != nil {
		return err
	}
	_, secret, err := s.issueKey(ctx, t.ID, keyRequest{Name: "default"})
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(tenantJSON{Object: "tenant", Tenant: t, APIKey: secret})
}

// listTenants handles GET /admin/tenants: a page of the tenants, oldest
// first.
func (s *Server) listTenants(c *fiber.Ctx) error {
	q, err := pageQuery(c)
	if err != nil {
		return err
	}
	page, err := s.deps.Tenants.TenantPage(c.UserContext(), q)
	if err != nil {
		return err
	}
	out := make([]tenantJSON, 0, len(page.Data))
	for _, t := range page.Data {
		out = append(out, tenantJSON{Object: "tenant", Tenant: t})
	}
	return writePage(c, out, func(t tenantJSON) string { return t.ID }, page.HasMore)
}

// tenantParam is the tenant the path's :id names, by id or by name.
func (s *Server) tenantParam(c *fiber.Ctx) (*nozzle.Tenant, error) {
	id := strings.Clone(c.Params("id"))
	t, err := nozzle.FindTenant(c.UserContext(), s.deps.Tenants, id) // an id or a name
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant with id or name %q.", id).WithReason("tenant_not_found")
		}
		return nil, err
	}
	return t, nil
}

func (s *Server) getTenant(c *fiber.Ctx) error {
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	return c.JSON(tenantJSON{Object: "tenant", Tenant: t})
}

// updateTenant handles PATCH /admin/tenants/{id}: name, suspended,
// monthly_budget_usd, limits, stripe_customer_id.
func (s *Server) updateTenant(c *fiber.Ctx) error {
	var upd nozzle.TenantUpdate
	if err := s.readJSON(c, &upd, false); err != nil {
		return err
	}
	return s.applyTenantUpdate(c, upd)
}

func (s *Server) applyTenantUpdate(c *fiber.Ctx, upd nozzle.TenantUpdate) error {
	if upd.Name != nil {
		if err := nozzle.ValidateTenantName(*upd.Name); err != nil {
			return err
		}
	}
	if upd.MonthlyBudgetUSD != nil && *upd.MonthlyBudgetUSD < 0 {
		return invalid("monthly_budget_usd", "Monthly budget must not be negative.")
	}
	if upd.Limits != nil {
		if err := upd.Limits.Validate(); err != nil {
			return err
		}
	}
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	if t, err = s.deps.Tenants.UpdateTenant(c.UserContext(), t.ID, upd); err != nil {
		return err
	}
	return c.JSON(tenantJSON{Object: "tenant", Tenant: t})
}

// setTenantLimits handles PUT /admin/tenants/{id}/limits.
func (s *Server) setTenantLimits(c *fiber.Ctx) error {
	var l nozzle.Limits
	if err := s.readJSON(c, &l, false); err != nil {
		return err
	}
	return s.applyTenantUpdate(c, nozzle.TenantUpdate{Limits: &l})
}

func (s *Server) adminCreateKey(c *fiber.Ctx) error {
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	var r keyRequest
	if err := s.readJSON(c, &r, true); err != nil {
		return err
	}
	if err := r.validate(); err != nil {
		return err
	}
	k, secret, err := s.issueKey(c.UserContext(), t.ID, r)
	if err != nil {
		return err
	}
	out := s.toKeyJSON(k)
	out.Key = secret
	return c.Status(fiber.StatusCreated).JSON(out)
}

func (s *Server) adminListKeys(c *fiber.Ctx) error {
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	return s.listTenantKeys(c, t.ID)
}

func (s *Server) adminRevokeKey(c *fiber.Ctx) error {
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	return s.revokeTenantKey(c, t.ID, strings.Clone(c.Params("key")))
}

// priceRequest sets a price from a time (default: now), or for a tenant
// (standard: true) returns it to the standard prices.
type priceRequest struct {
	PromptPerMillionUSD     *float64 `json:"prompt_per_million_usd"`
	CompletionPerMillionUSD *float64 `json:"completion_per_million_usd"`
	BatchDiscountPercent    *float64 `json:"batch_discount_percent"`
	// CachedPromptPerMillionUSD left out is the prompt price: no
	// discount for cached prompt tokens (never free by omission).
	CachedPromptPerMillionUSD *float64   `json:"cached_prompt_per_million_usd"`
	EffectiveFrom             *time.Time `json:"effective_from"`
	Standard                  bool       `json:"standard"`
}

func (s *Server) setPrice(c *fiber.Ctx, tenantID string) error {
	var r priceRequest
	if err := s.readJSON(c, &r, false); err != nil {
		return err
	}
	from := time.Now().UTC()
	if r.EffectiveFrom != nil {
		from = r.EffectiveFrom.UTC()
	}
	if r.Standard {
		if tenantID == "" {
			return invalid("standard", "'standard' ends a tenant's override; the standard prices themselves are set with prices.")
		}
		if r.PromptPerMillionUSD != nil || r.CompletionPerMillionUSD != nil || r.BatchDiscountPercent != nil || r.CachedPromptPerMillionUSD != nil {
			return invalid("standard", "Send either prices or 'standard', not both.")
		}
		if err := s.deps.Tenants.UseStandardPrice(c.UserContext(), tenantID, from); err != nil {
			return err
		}
		return c.Status(fiber.StatusCreated).JSON(nozzle.PriceVersion{TenantID: tenantID, EffectiveFrom: from, Standard: true})
	}
	if r.PromptPerMillionUSD == nil || *r.PromptPerMillionUSD < 0 {
		return invalid("prompt_per_million_usd", "prompt_per_million_usd is required and must not be negative.")
	}
	if r.CompletionPerMillionUSD == nil || *r.CompletionPerMillionUSD < 0 {
		return invalid("completion_per_million_usd", "completion_per_million_usd is required and must not be negative.")
	}
	p := nozzle.Price{PromptPerMillionUSD: *r.PromptPerMillionUSD, CompletionPerMillionUSD: *r.CompletionPerMillionUSD}
	if d := r.BatchDiscountPercent; d != nil {
		// absent: no discount
		if !(*d >= 0 && *d <= 100) {
			return invalid("batch_discount_percent", "batch_discount_percent must be a number from 0 to 100.")
		}
		p.BatchDiscountPercent = *d
	}
	p.CachedPromptPerMillionUSD = p.PromptPerMillionUSD // absent: the prompt price
	if v := r.CachedPromptPerMillionUSD; v != nil {
		if !(*v >= 0 && *v <= p.PromptPerMillionUSD) {
			return invalid("cached_prompt_per_million_usd",
				"cached_prompt_per_million_usd must be a number from 0 to prompt_per_million_usd (%g): a prompt token the prefix cache held costs no more than one it did not.",
				p.PromptPerMillionUSD)
		}
		p.CachedPromptPerMillionUSD = *v
	}
	if err := s.deps.Tenants.SetPrice(c.UserContext(), tenantID, p, from); err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(nozzle.PriceVersion{TenantID: tenantID, Price: p, EffectiveFrom: from})
}

func (s *Server) listPrices(c *fiber.Ctx, tenantID string) error {
	list, err := s.deps.Tenants.Prices(c.UserContext(), tenantID)
	if err != nil {
		return err
	}
	return writeList(c, list)
}

func (s *Server) setDefaultPrice(c *fiber.Ctx) error   { return s.setPrice(c, "") }
func (s *Server) listDefaultPrices(c *fiber.Ctx) error { return s.listPrices(c, "") }

func (s *Server) setTenantPrice(c *fiber.Ctx) error {
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	return s.setPrice(c, t.ID)
}

func (s *Server) listTenantPrices(c *fiber.Ctx) error {
	t, err := s.tenantParam(c)
	if err != nil {
		return err
	}
	return s.listPrices(c, t.ID)
}

func (s *Server) listUpstreams(c *fiber.Ctx) error {
	return writeList(c, s.router.status())
}
