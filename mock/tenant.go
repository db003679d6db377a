package mock

import (
	"context"
	"time"

	"github.com/nozzle-ai/nozzle"
)

var _ nozzle.TenantService = (*TenantService)(nil)

// TenantService is a mock of nozzle.TenantService.
type TenantService struct {
	CreateTenantFn     func(ctx context.Context, t *nozzle.Tenant) error
	TenantFn           func(ctx context.Context, id string) (*nozzle.Tenant, error)
	TenantsFn          func(ctx context.Context) ([]*nozzle.Tenant, error)
	TenantPageFn       func(ctx context.Context, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Tenant], error)
	UpdateTenantFn     func(ctx context.Context, id string, upd nozzle.TenantUpdate) (*nozzle.Tenant, error)
	SetPriceFn         func(ctx context.Context, tenantID string, p nozzle.Price, from time.Time) error
	UseStandardPriceFn func(ctx context.Context, tenantID string, from time.Time) error
	PriceAtFn          func(ctx context.Context, tenantID string, at time.Time) (nozzle.Price, error)
	PricesFn           func(ctx context.Context, tenantID string) ([]nozzle.PriceVersion, error)
}

func (s *TenantService) CreateTenant(ctx context.Context, t *nozzle.Tenant) error {
	return s.CreateTenantFn(ctx, t)
}

func (s *TenantService) Tenant(ctx context.Context, id string) (*nozzle.Tenant, error) {
	return s.TenantFn(ctx, id)
}

func (s *TenantService) Tenants(ctx context.Context) ([]*nozzle.Tenant, error) {
	return s.TenantsFn(ctx)
}

func (s *TenantService) TenantPage(ctx context.Context, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Tenant], error) {
	return s.TenantPageFn(ctx, q)
}

func (s *TenantService) UpdateTenant(ctx context.Context, id string, upd nozzle.TenantUpdate) (*nozzle.Tenant, error) {
	return s.UpdateTenantFn(ctx, id, upd)
}

func (s *TenantService) SetPrice(ctx context.Context, tenantID string, p nozzle.Price, from time.Time) error {
	return s.SetPriceFn(ctx, tenantID, p, from)
}

func (s *TenantService) UseStandardPrice(ctx context.Context, tenantID string, from time.Time) error {
	return s.UseStandardPriceFn(ctx, tenantID, from)
}

func (s *TenantService) PriceAt(ctx context.Context, tenantID string, at time.Time) (nozzle.Price, error) {
	return s.PriceAtFn(ctx, tenantID, at)
}

func (s *TenantService) Prices(ctx context.Context, tenantID string) ([]nozzle.PriceVersion, error) {
	return s.PricesFn(ctx, tenantID)
}
