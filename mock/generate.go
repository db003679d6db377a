package mock

import (
	"context"

	"github.com/nozzle-ai/nozzle"
)

var _ nozzle.Generator = (*Generator)(nil)

// Generator is a mock of nozzle.Generator.
type Generator struct {
	InfoFn        func(ctx context.Context) (nozzle.ModelInfo, error)
	GenerateFn    func(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error)
	AdapterTierFn func(ctx context.Context, sha256 string) nozzle.Tier
}

func (g *Generator) Info(ctx context.Context) (nozzle.ModelInfo, error) {
	return g.InfoFn(ctx)
}

func (g *Generator) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	return g.GenerateFn(ctx, req, emit)
}

func (g *Generator) AdapterTier(ctx context.Context, sha256 string) nozzle.Tier {
	return g.AdapterTierFn(ctx, sha256)
}

var _ nozzle.AdapterDropper = (*AdapterDropper)(nil)

// AdapterDropper is a mock of nozzle.AdapterDropper. Embed it beside a
// Generator for a runtime that drops deleted adapters.
type AdapterDropper struct {
	DropAdapterFn func(ctx context.Context, sha256 string) error
}

func (d *AdapterDropper) DropAdapter(ctx context.Context, sha256 string) error {
	return d.DropAdapterFn(ctx, sha256)
}
