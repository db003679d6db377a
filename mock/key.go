package mock

import (
	"context"
	"time"

	"github.com/nozzle-ai/nozzle"
)

var _ nozzle.KeyService = (*KeyService)(nil)

// KeyService is a mock of nozzle.KeyService.
type KeyService struct {
	CreateKeyFn   func(ctx context.Context, k *nozzle.APIKey) error
	KeyByDigestFn func(ctx context.Context, digest string) (*nozzle.APIKey, error)
	KeysFn        func(ctx context.Context, tenantID string) ([]*nozzle.APIKey, error)
	KeyPageFn     func(ctx context.Context, tenantID string, q nozzle.PageQuery, f nozzle.KeyFilter) (*nozzle.Page[*nozzle.APIKey], error)
	RevokeKeyFn   func(ctx context.Context, tenantID, id string) error
	TouchKeysFn   func(ctx context.Context, lastUsed map[string]time.Time) error
}

func (s *KeyService) CreateKey(ctx context.Context, k *nozzle.APIKey) error {
	return s.CreateKeyFn(ctx, k)
}

func (s *KeyService) KeyByDigest(ctx context.Context, digest string) (*nozzle.APIKey, error) {
	return s.KeyByDigestFn(ctx, digest)
}

func (s *KeyService) Keys(ctx context.Context, tenantID string) ([]*nozzle.APIKey, error) {
	return s.KeysFn(ctx, tenantID)
}

func (s *KeyService) KeyPage(ctx context.Context, tenantID string, q nozzle.PageQuery, f nozzle.KeyFilter) (*nozzle.Page[*nozzle.APIKey], error) {
	return s.KeyPageFn(ctx, tenantID, q, f)
}

func (s *KeyService) RevokeKey(ctx context.Context, tenantID, id string) error {
	return s.RevokeKeyFn(ctx, tenantID, id)
}

func (s *KeyService) TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	return s.TouchKeysFn(ctx, lastUsed)
}
