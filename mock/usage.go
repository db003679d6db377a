package mock

import (
	"context"
	"io"

	"github.com/nozzle-ai/nozzle"
)

var (
	_ nozzle.Ledger            = (*Ledger)(nil)
	_ nozzle.UsageCheckpointer = (*UsageCheckpointer)(nil)
	_ nozzle.BudgetService     = (*BudgetService)(nil)
	_ nozzle.CapacitySource    = (*CapacitySource)(nil)
	_ nozzle.CapacityLedger    = (*CapacityLedger)(nil)
	_ nozzle.Reporter          = (*Reporter)(nil)
)

// Ledger is a mock of nozzle.Ledger.
type Ledger struct {
	RecordUsageFn func(ctx context.Context, ev *nozzle.UsageEvent) (bool, error)
	UsageFn       func(ctx context.Context, requestID string) (*nozzle.UsageEvent, error)
}

func (l *Ledger) RecordUsage(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
	return l.RecordUsageFn(ctx, ev)
}

func (l *Ledger) Usage(ctx context.Context, requestID string) (*nozzle.UsageEvent, error) {
	return l.UsageFn(ctx, requestID)
}

// UsageCheckpointer is a mock of nozzle.UsageCheckpointer; with a Ledger
// (struct{ *Ledger; *UsageCheckpointer }) it makes a ledger that keeps
// running streams' checkpoints.
type UsageCheckpointer struct {
	CheckpointUsageFn func(ctx context.Context, ev *nozzle.UsageEvent) error
}

func (l *UsageCheckpointer) CheckpointUsage(ctx context.Context, ev *nozzle.UsageEvent) error {
	return l.CheckpointUsageFn(ctx, ev)
}

// BudgetService is a mock of nozzle.BudgetService.
type BudgetService struct {
	ReserveBudgetFn func(ctx context.Context, tenantID string, usd float64) (func(), error)
}

func (s *BudgetService) ReserveBudget(ctx context.Context, tenantID string, usd float64) (func(), error) {
	return s.ReserveBudgetFn(ctx, tenantID, usd)
}

// CapacitySource is a mock of nozzle.CapacitySource.
type CapacitySource struct {
	CapacityIntervalsFn func(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error)
}

func (s *CapacitySource) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	return s.CapacityIntervalsFn(ctx, after)
}

// CapacityLedger is a mock of nozzle.CapacityLedger.
type CapacityLedger struct {
	RecordCapacityFn  func(ctx context.Context, intervals []nozzle.CapacityInterval) error
	LastCapacitySeqFn func(ctx context.Context, runtimeID string) (uint64, error)
}

func (l *CapacityLedger) RecordCapacity(ctx context.Context, intervals []nozzle.CapacityInterval) error {
	return l.RecordCapacityFn(ctx, intervals)
}

func (l *CapacityLedger) LastCapacitySeq(ctx context.Context, runtimeID string) (uint64, error) {
	return l.LastCapacitySeqFn(ctx, runtimeID)
}

// Reporter is a mock of nozzle.Reporter.
type Reporter struct {
	ReportFn func(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error)
}

func (r *Reporter) Report(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
	return r.ReportFn(ctx, q)
}

var _ nozzle.LedgerMaintainer = (*LedgerMaintainer)(nil)

// LedgerMaintainer is a mock of nozzle.LedgerMaintainer.
type LedgerMaintainer struct {
	BackupFn func(ctx context.Context, w io.Writer) error
	CheckFn  func(ctx context.Context) (*nozzle.LedgerCheck, error)
}

func (m *LedgerMaintainer) Backup(ctx context.Context, w io.Writer) error { return m.BackupFn(ctx, w) }

func (m *LedgerMaintainer) Check(ctx context.Context) (*nozzle.LedgerCheck, error) {
	return m.CheckFn(ctx)
}
