// Package billing is Nozzle's ledger and cost accounting: one bbolt file
// holding tenants, API keys (digests only), adapters' metadata, console
// users, usage events with their hourly rollups, runtimes' capacity
// intervals and the Stripe outbox; the cost model that splits the GPU's
// bill across tenants; usage and cost reports; and the worker that sends
// metered usage to Stripe.
//
// Writes queue up and one of their goroutines at a time commits whatever
// is queued in one transaction (group commit): a caller returns once its
// write is fsynced. Usage events are acknowledged once fsynced in the
// usage journal and filed into the file in the background (journal.go).
// Reads use their own read transactions; reads of usage file the journal
// first. docs/LEDGER.md describes the file's layout.
package billing

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	bolt "go.etcd.io/bbolt"
)

// ErrLocked is returned by Open when another process holds the ledger.
var ErrLocked = errors.New("ledger is locked by another process")

// ErrClosed is returned for writes after Close.
var ErrClosed = errors.New("ledger is closed")

// Options configure a Ledger. Only Path is required.
type Options struct {
	// Path is the ledger file; it is created if missing.
	Path string
	// IdlePolicy is nozzle.IdleProrata (default) or nozzle.IdleOperator.
	IdlePolicy string
	// DefaultPrice applies to a tenant when neither a price of its own nor
	// a default price set with SetPrice is in force.
	DefaultPrice nozzle.Price
	// DedicatedRatePerHour is the hourly price of the dedicated GPU that
	// reports compare with. Zero means the same GPU at the same rate as the
	// runtimes that served the usage.
	DedicatedRatePerHour float64
	// Logger defaults to slog.Default() with component=billing.
	Logger *slog.Logger
	// Now is the clock; tests set it. Defaults to time.Now.
	Now func() time.Time
	// LockTimeout bounds the wait for the file lock. Defaults to 1s.
	LockTimeout time.Duration
	// SyncHoldsP makes the usage journal's fdatasync keep its goroutine's
	// P while the disk works (see fdatasyncHoldingP): on a busy machine the
	// acknowledgement then follows the disk at once instead of waiting
	// for a P. Set it only where GOMAXPROCS leaves a P to spare for it, as
	// cmd/nozzle's servers do (they run one P more than the cores).
	SyncHoldsP bool
	// MaxBatch caps the writes committed in one transaction. Defaults to
	// 4096.
	MaxBatch int
	// Metrics, when set, receives the ledger's metrics (commit latency and
	// batch size, usage events, outbox sends).
	Metrics *metrics.Registry
	// InitialMmapSize is the size of the initial memory map. A larger map
	// makes it rarer for a growing file to remap, the one moment when a
	// long reader (a backup, a check) can hold up the writer. Defaults to
	// 1 GiB (address space, not memory).
	InitialMmapSize int
	// ResponseRetention is how long stored responses (the Responses
	// API's) are kept: older ones are unreadable and are purged hourly.
	// Zero keeps them until deleted.
	ResponseRetention time.Duration
}

// Ledger is the bbolt-backed implementation of the root package's storage
// interfaces.
type Ledger struct {
	db         *bolt.DB
	path       string
	log        *slog.Logger
	now        func() time.Time
	idlePolicy string
	defPrice   nozzle.Price
	dedicated  float64
	retention  time.Duration // of stored responses; 0: forever

	// mu guards closed; every write holds it for reading until it is
	// committed, so Close (which takes it for writing) waits for them.
	mu     sync.RWMutex
	closed bool

	// Group commit: writes queue up while one of their goroutines, the
	// leader, commits; see write.
	writes group[*op]

	// j is the usage journal: RecordUsage's durable append, filed into
	// db in the background (journal.go).
	j *journal

	budget budgets
	auth   authCache

	// workers are background loops (the outbox) that Close stops.
	wctx    context.Context
	wcancel context.CancelFunc
	wwg     sync.WaitGroup
	outbox  outboxStatus
	met     ledgerMetrics
}

type ledgerMetrics struct {
	commitSeconds metrics.Histogram
	batchWrites   metrics.Histogram
	events        metrics.Counter
	duplicates    metrics.Counter
	outboxSent    metrics.Counter
	outboxFailed  metrics.Counter

	journalSeconds metrics.Histogram
	journalBatch   metrics.Histogram
	checkpoints    metrics.Counter
}

func newLedgerMetrics(r *metrics.Registry) ledgerMetrics {
	if r == nil {
		r = metrics.NewRegistry() // kept, never served
	}
	return ledgerMetrics{
		commitSeconds: r.Histogram("nozzle_ledger_commit_seconds", "Time to commit and fsync one ledger transaction.", metrics.LatencyBuckets),
		batchWrites:   r.Histogram("nozzle_ledger_batch_writes", "Writes committed together in one ledger transaction.", []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}),
		events:        r.Counter("nozzle_ledger_usage_events_total", "Usage events recorded."),
		duplicates:    r.Counter("nozzle_ledger_usage_duplicates_total", "Usage events not recorded again because their request id was stored already."),
		outboxSent:    r.Counter("nozzle_billing_outbox_sent_total", "Meter events Stripe took."),
		outboxFailed:  r.Counter("nozzle_billing_outbox_failures_total", "Failed meter event or customer calls."),

		journalSeconds: r.Histogram("nozzle_ledger_journal_append_seconds", "Time to append and fdatasync one group of usage events to the usage journal.", metrics.LatencyBuckets),
		journalBatch:   r.Histogram("nozzle_ledger_journal_batch_events", "Usage events appended together to the usage journal.", []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}),
		checkpoints:    r.Counter("nozzle_ledger_usage_checkpoints_total", "Usage checkpoints of running requests recorded."),
	}
}

var (
	_ nozzle.TenantService     = (*Ledger)(nil)
	_ nozzle.KeyService        = (*Ledger)(nil)
	_ nozzle.AdapterService    = (*Ledger)(nil)
	_ nozzle.UserService       = (*Ledger)(nil)
	_ nozzle.Ledger            = (*Ledger)(nil)
	_ nozzle.UsageCheckpointer = (*Ledger)(nil)
	_ nozzle.BudgetService     = (*Ledger)(nil)
	_ nozzle.CapacityLedger    = (*Ledger)(nil)
	_ nozzle.Reporter          = (*Ledger)(nil)
)

// Open opens (creating if needed) the ledger at opts.Path, migrating an
// older file to the current schema. A file held by another process makes
// Open fail with ErrLocked after opts.LockTimeout.
func Open(opts Options) (*Ledger, error) {
	if opts.Path == "" {
		return nil, nozzle.Errorf(nozzle.EINVALID, "Ledger path is required.")
	}
	switch opts.IdlePolicy {
	case "":
		opts.IdlePolicy = nozzle.IdleProrata
	case nozzle.IdleProrata, nozzle.IdleOperator:
	default:
		return nil, nozzle.Errorf(nozzle.EINVALID, "Idle policy %q is not one of %q or %q.", opts.IdlePolicy, nozzle.IdleProrata, nozzle.IdleOperator)
	}
	if err := validPrice(opts.DefaultPrice); err != nil {
		return nil, err
	}
	if opts.DedicatedRatePerHour < 0 || !finite(opts.DedicatedRatePerHour) {
		return nil, nozzle.Errorf(nozzle.EINVALID, "Dedicated GPU rate must be a non-negative number.")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default().With("component", "billing")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	if opts.ResponseRetention < 0 {
		return nil, nozzle.Errorf(nozzle.EINVALID, "Response retention must not be negative.")
	}
	if opts.InitialMmapSize <= 0 {
		opts.InitialMmapSize = 1 << 30
	}
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{
		Timeout:         opts.LockTimeout,
		InitialMmapSize: opts.InitialMmapSize,
		// The freelist is rebuilt from the pages on open instead of being
		// written at every commit: smaller commits, same durability.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open ledger %s: %w", opts.Path, ErrLocked)
	} else if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", opts.Path, err)
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", opts.Path, err)
	}
	j, journaled, err := openJournal(opts.Path, opts.MaxBatch)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", opts.Path, err)
	}
	if opts.SyncHoldsP {
		j.sync = fdatasyncHoldingP
	}
	l := &Ledger{
		j:          j,
		db:         db,
		path:       opts.Path,
		log:        opts.Logger,
		now:        opts.Now,
		idlePolicy: opts.IdlePolicy,
		defPrice:   opts.DefaultPrice,
		dedicated:  opts.DedicatedRatePerHour,
		retention:  opts.ResponseRetention,
		writes:     group[*op]{max: opts.MaxBatch},
		met:        newLedgerMetrics(opts.Metrics),
	}
	if err := l.replayJournal(journaled); err != nil {
		j.close()
		db.Close()
		return nil, fmt.Errorf("open ledger %s: %w", opts.Path, err)
	}
	if opts.Metrics != nil {
		opts.Metrics.GaugeFunc("nozzle_ledger_journal_pending_events", "Usage events acknowledged from the usage journal and not yet filed into the ledger file.",
			func() float64 { return float64(l.j.n.Load()) })
	}
	l.budget.init()
	l.wctx, l.wcancel = context.WithCancel(context.Background())
	l.wwg.Add(1)
	go l.fileLoop()
	if l.retention > 0 {
		l.wwg.Add(1)
		go l.responseRetentionLoop()
	}
	return l, nil
}

// Path returns the ledger's file name.
func (l *Ledger) Path() string { return l.path }

// Close stops background workers, commits every write already queued and
// closes the file. Writes after Close fail with ErrClosed.
func (l *Ledger) Close() error {
	l.wcancel()
	l.wwg.Wait()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true // every write has returned: nothing is queued
	l.mu.Unlock()
	l.fileJournal() // the only writer left
	if l.j.pendingWork() == 0 {
		if err := l.j.empty(); err != nil {
			l.log.Error("usage journal", "err", err)
		}
	}
	l.j.close()
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("close ledger: %w", err)
	}
	return nil
}

// op is one write. fn may run more than once (when a batch fails it is
// retried alone) so it sets its results afresh each time. An application
// error (*nozzle.Error) from fn means fn wrote nothing, and the rest of the
// batch commits; any other error aborts the transaction.
type op struct {
	fn   func(w *wtx) error
	err  error
	done chan error
}

func (o *op) doneCh() chan error { return o.done }

// write queues fn and waits until it is committed and fsynced, in a group
// commit (see group) with the writes queued meanwhile. Usage events go
// through the journal instead (see RecordUsage); a transaction first files
// the events journaled so far, so that writes see every acknowledged one.
// A nil fn only files the journal.
func (l *Ledger) write(ctx context.Context, fn func(w *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{fn: fn, done: make(chan error, 1)}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	// The write is waited for even when ctx ends: the caller must learn
	// whether it was committed.
	return l.writes.do(o, l.commit)
}

// commit runs a batch in one transaction. If the transaction fails, each
// op is retried in a transaction of its own so that one bad write cannot
// fail the others.
func (l *Ledger) commit(batch []*op) {
	if l.j.pendingWork() > 0 {
		l.fileJournal()
	}
	if !slices.ContainsFunc(batch, func(o *op) bool { return o.fn != nil }) {
		for _, o := range batch {
			o.done <- nil
		}
		return
	}
	t0 := time.Now()
	defer func() {
		l.met.commitSeconds.Observe(time.Since(t0).Seconds())
		l.met.batchWrites.Observe(float64(len(batch)))
	}()
	cacheChanged := false
	err := l.db.Update(func(tx *bolt.Tx) error {
		w := newWtx(l, tx)
		defer func() { cacheChanged = cacheChanged || w.cacheChanged }()
		for _, o := range batch {
			if o.fn == nil {
				continue
			}
			o.err = o.fn(w)
			if o.err != nil && nozzle.AsError(o.err) == nil {
				return o.err
			}
		}
		return w.flush()
	})
	if err != nil && len(batch) > 1 {
		l.log.Warn("ledger batch failed; retrying its writes one by one", "writes", len(batch), "err", err)
		for _, o := range batch {
			l.commit([]*op{o})
		}
		return
	}
	if cacheChanged {
		// Before any writer hears back: the change is seen from now on.
		l.auth.invalidate()
	}
	for _, o := range batch {
		if err != nil {
			o.done <- fmt.Errorf("ledger commit: %w", err)
		} else {
			o.done <- o.err
		}
	}
}

// view runs a read transaction of what usage does not touch: tenants,
// keys, adapters, users, prices, capacity.
func (l *Ledger) view(fn func(tx *bolt.Tx) error) error { return l.db.View(fn) }

// viewUsage runs a read transaction that sees every acknowledged usage
// event: the journal is filed first.
func (l *Ledger) viewUsage(fn func(tx *bolt.Tx) error) error {
	if err := l.fileJournalNow(); err != nil {
		return err
	}
	return l.db.View(fn)
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix followed by 16 random base32 characters.
func newID(prefix string) string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + idEncoding.EncodeToString(b[:])
}

func lower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// BackupToFile writes a consistent copy of the ledger to path, through a
// temporary file that is fsynced and renamed into place.
func (l *Ledger) BackupToFile(path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("backup ledger: %w", err)
	}
	if err := l.Backup(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("backup ledger: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("backup ledger: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("backup ledger: %w", err)
	}
	return nil
}

// Backup writes a consistent copy of the ledger file to w while writes go
// on (a read transaction; the copy opens as a ledger of its own).
func (l *Ledger) Backup(w io.Writer) error {
	err := l.viewUsage(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(w)
		return err
	})
	if err != nil {
		return fmt.Errorf("backup ledger: %w", err)
	}
	return nil
}
