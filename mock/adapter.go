package mock

import (
	"context"
	"io"

	"github.com/nozzle-ai/nozzle"
)

var (
	_ nozzle.AdapterService = (*AdapterService)(nil)
	_ nozzle.AdapterStore   = (*AdapterStore)(nil)
)

// AdapterService is a mock of nozzle.AdapterService.
type AdapterService struct {
	CreateAdapterFn      func(ctx context.Context, a *nozzle.Adapter) error
	AdapterFn            func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error)
	AdaptersFn           func(ctx context.Context, tenantID string) ([]*nozzle.Adapter, error)
	AdapterPageFn        func(ctx context.Context, tenantID string, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Adapter], error)
	DeleteAdapterFn      func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error)
	AdapterRefsFn        func(ctx context.Context, sha256 string) (int, error)
	AdapterStorageUsedFn func(ctx context.Context, tenantID string) (int64, error)
}

func (s *AdapterService) CreateAdapter(ctx context.Context, a *nozzle.Adapter) error {
	return s.CreateAdapterFn(ctx, a)
}

func (s *AdapterService) Adapter(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
	return s.AdapterFn(ctx, tenantID, name)
}

func (s *AdapterService) Adapters(ctx context.Context, tenantID string) ([]*nozzle.Adapter, error) {
	return s.AdaptersFn(ctx, tenantID)
}

func (s *AdapterService) AdapterPage(ctx context.Context, tenantID string, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Adapter], error) {
	return s.AdapterPageFn(ctx, tenantID, q)
}

func (s *AdapterService) DeleteAdapter(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
	return s.DeleteAdapterFn(ctx, tenantID, name)
}

func (s *AdapterService) AdapterRefs(ctx context.Context, sha256 string) (int, error) {
	return s.AdapterRefsFn(ctx, sha256)
}

func (s *AdapterService) AdapterStorageUsed(ctx context.Context, tenantID string) (int64, error) {
	return s.AdapterStorageUsedFn(ctx, tenantID)
}

// AdapterStore is a mock of nozzle.AdapterStore.
type AdapterStore struct {
	ImportFn func(ctx context.Context, dir string) (*nozzle.AdapterManifest, error)
	OpenFn   func(ctx context.Context, sha256, name string) (io.ReadCloser, int64, error)
	RemoveFn func(ctx context.Context, sha256 string) error
	StoredFn func(ctx context.Context) ([]string, error)
}

func (s *AdapterStore) Import(ctx context.Context, dir string) (*nozzle.AdapterManifest, error) {
	return s.ImportFn(ctx, dir)
}

func (s *AdapterStore) Open(ctx context.Context, sha256, name string) (io.ReadCloser, int64, error) {
	return s.OpenFn(ctx, sha256, name)
}

func (s *AdapterStore) Remove(ctx context.Context, sha256 string) error {
	return s.RemoveFn(ctx, sha256)
}

func (s *AdapterStore) Stored(ctx context.Context) ([]string, error) {
	return s.StoredFn(ctx)
}
