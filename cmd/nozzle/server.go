package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/billing/stripe"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// shutdownGrace bounds the drain of in-flight requests on SIGINT/SIGTERM.
const shutdownGrace = 30 * time.Second

// Main is one run of a server command. Its fields are the parts it wired;
// Close releases them in reverse order.
type Main struct {
	// holdReady: the gateway's /readyz waits for ReleaseReady (serve: the
	// demo's set-up).
	holdReady bool

	Config  Config
	Log     *slog.Logger
	Metrics *metrics.Registry
	Stdout  io.Writer

	Ledger  *billing.Ledger
	Runtime *runtime.Runtime
	Gateway *gateway.Server

	// Addr is the address the server listens on, once it does.
	Addr string
	// Ready is closed once the server accepts requests.
	Ready chan struct{}

	// operator is the console operator's email; operatorPasswordFile holds
	// its generated password (empty when the password was configured).
	operator, operatorPasswordFile string

	closers []func(context.Context) error

	// pullNow asks the capacity collector to pull at once (a runtime that
	// is stopping, through the gateway's internal API).
	pullNow chan struct{}
}

// NewMain returns a Main for cfg.
func NewMain(cfg Config, log *slog.Logger, stdout io.Writer) *Main {
	return &Main{Config: cfg, Log: log, Metrics: metrics.NewRegistry(), Stdout: stdout, Ready: make(chan struct{}), pullNow: make(chan struct{}, 1)}
}

func runServer(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	cfg, rest, err := Load(cmd, args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		if b := rest[0]; (b == "true" || b == "false") && len(args) > len(rest) {
			if prev := args[len(args)-len(rest)-1]; strings.HasPrefix(prev, "-") && !strings.Contains(prev, "=") {
				return fmt.Errorf("%s: unexpected argument %q: a true/false setting takes its value joined to it, as %s=%s", cmd, b, prev, b)
			}
		}
		return fmt.Errorf("%s: unexpected argument %q", cmd, rest[0])
	}
	tuneGC(uint64(cfg.HeapFloorMB) << 20)
	m := NewMain(cfg, newLogger(cfg, os.Stderr), stdout)
	switch cmd {
	case "serve":
		return m.Serve(ctx)
	case "gateway":
		return m.RunGateway(ctx)
	default:
		return m.RunRuntime(ctx)
	}
}

// onClose registers a release function run by Close, last first.
func (m *Main) onClose(f func(context.Context) error) { m.closers = append(m.closers, f) }

// Close releases everything Main opened, last first, within shutdownGrace.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		if err := m.closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	m.closers = nil
	return errors.Join(errs...)
}

// prepareData makes sure the data folder exists and is writable.
func (m *Main) prepareData() error {
	dir := m.Config.Data
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data folder %s: %w", dir, unwrapPath(err))
	}
	probe, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("data folder %s is not writable: %w", dir, unwrapPath(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// unwrapPath drops the *PathError wrapper, whose path the message already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// listen opens the listening socket first, so a port in use is one clear
// line before any slow start-up work.
func (m *Main) listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", m.Config.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("cannot listen on %s: the address is already in use (is another nozzle running? choose another with --addr)", m.Config.Addr)
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", m.Config.Addr, err)
	}
	m.Addr = ln.Addr().String()
	return &onceCloseListener{Listener: ln}, nil
}

// onceCloseListener may be closed by both the server that serves it and
// the command that opened it; the second close is a no-op.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// secret returns a configured secret, or the one kept in DATA/name,
// generating it on first use.
func (m *Main) secret(configured Secret, name string) (string, error) {
	if configured != "" {
		return string(configured), nil
	}
	path := filepath.Join(m.Config.Data, name)
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw[:])
	if err := writeFileAtomic(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save %s: %w", name, err)
	}
	return s, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// openLedger opens the bbolt ledger in the data folder.
func (m *Main) openLedger() error {
	l, err := billing.Open(billing.Options{
		Path:       filepath.Join(m.Config.Data, "ledger.db"),
		IdlePolicy: m.Config.IdlePolicy,
		DefaultPrice: nozzle.Price{
			PromptPerMillionUSD:       m.Config.PricePrompt,
			CompletionPerMillionUSD:   m.Config.PriceCompletion,
			BatchDiscountPercent:      m.Config.PriceBatchDiscount,
			CachedPromptPerMillionUSD: m.Config.PriceCachedPrompt,
		},
		DedicatedRatePerHour: m.Config.DedicatedRatePerHour,
		ResponseRetention:    time.Duration(m.Config.ResponseRetention) * 24 * time.Hour,
		Logger:               m.Log.With("component", "billing"),
		Metrics:              m.Metrics,
		SyncHoldsP:           spareP(),
	})
	if err != nil {
		if errors.Is(err, billing.ErrLocked) {
			return fmt.Errorf("the ledger %s is in use by another nozzle process", filepath.Join(m.Config.Data, "ledger.db"))
		}
		return fmt.Errorf("open ledger: %w", err)
	}
	m.Ledger = l
	m.onClose(func(context.Context) error { return l.Close() })
	return nil
}

// startStripe starts the outbox worker when a Stripe key is configured.
func (m *Main) startStripe(ctx context.Context) error {
	if m.Config.StripeKey == "" {
		return nil
	}
	sender, err := stripe.New(stripe.Config{SecretKey: string(m.Config.StripeKey), APIURL: m.Config.StripeAPIURL, Logger: m.Log.With("component", "stripe")})
	if err != nil {
		return fmt.Errorf("stripe: %w", err)
	}
	m.Ledger.StartOutbox(sender, billing.OutboxOptions{
		PromptEventName:            m.Config.StripeMeterPrompt,
		CompletionEventName:        m.Config.StripeMeterComp,
		BatchPromptEventName:       m.Config.StripeMeterBatchP,
		BatchCompletionEventName:   m.Config.StripeMeterBatchC,
		CachedPromptEventName:      m.Config.StripeMeterCachedP,
		BatchCachedPromptEventName: m.Config.StripeMeterBatchK,
	})
	return nil
}

// runtimeOptions are the runtime's options from the configuration.
func (m *Main) runtimeOptions(modelDir string, source runtime.AdapterSource) runtime.Options {
	c := m.Config
	return runtime.Options{
		ModelDir:           modelDir,
		EngineLib:          c.EngineLib,
		Device:             c.Device,
		Weights:            c.Weights,
		Slots:              c.Slots,
		MaxRank:            c.MaxRank,
		KVMemoryBytes:      int64(c.KVMemoryMB) << 20,
		MaxBatchTokens:     c.MaxBatchTokens,
		MaxBatchSeqs:       c.MaxBatchSeqs,
		SpeculativeTokens:  c.SpecTokens,
		SpeculativeMaxSeqs: c.SpecMaxSeqs,
		Threads:            c.Threads,
		HostCacheBytes:     int64(c.HostCacheMB) << 20,
		DisablePrefixCache: !c.PrefixCache,
		RuntimeID:          c.RuntimeID,
		RatePerHour:        c.RatePerHour,
		PrefillWeight:      c.PrefillWeight,
		DecodeWeight:       c.DecodeWeight,
		AdapterSource:      source,
		Logger:             m.Log.With("component", "runtime"),
		Metrics:            m.Metrics,
	}
}

// lazyRuntime is the runtime while it loads: the gateway serves (health,
// readiness, admin) before the model is ready, and requests that need the
// model get EUNAVAILABLE until it is.
type lazyRuntime struct {
	mu    sync.RWMutex
	rt    *runtime.Runtime
	err   error
	ready chan struct{}
}

func newLazyRuntime() *lazyRuntime { return &lazyRuntime{ready: make(chan struct{})} }

// The gateway tells the in-process runtime of deleted adapters through it.
var _ nozzle.AdapterDropper = (*lazyRuntime)(nil)

func (l *lazyRuntime) set(rt *runtime.Runtime, err error) {
	l.mu.Lock()
	l.rt, l.err = rt, err
	l.mu.Unlock()
	close(l.ready)
}

func (l *lazyRuntime) get() (*runtime.Runtime, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.rt != nil {
		return l.rt, nil
	}
	if l.err != nil {
		return nil, nozzle.Errorf(nozzle.EUNAVAILABLE, "The model failed to load.").Wrap(l.err)
	}
	return nil, nozzle.Errorf(nozzle.EUNAVAILABLE, "The model is still loading; try again shortly.").WithRetryAfter(5 * time.Second)
}

func (l *lazyRuntime) Info(ctx context.Context) (nozzle.ModelInfo, error) {
	rt, err := l.get()
	if err != nil {
		return nozzle.ModelInfo{}, err
	}
	return rt.Info(ctx)
}

func (l *lazyRuntime) Generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	rt, err := l.get()
	if err != nil {
		return nil, err
	}
	return rt.Generate(ctx, req, emit)
}

func (l *lazyRuntime) AdapterTier(ctx context.Context, sha string) nozzle.Tier {
	rt, err := l.get()
	if err != nil {
		return nozzle.TierDisk
	}
	return rt.AdapterTier(ctx, sha)
}

// DropAdapter drops a deleted adapter from the runtime's caches; a
// runtime still loading holds none.
func (l *lazyRuntime) DropAdapter(ctx context.Context, sha string) error {
	rt, err := l.get()
	if err != nil {
		return nil
	}
	return rt.DropAdapter(ctx, sha)
}

func (l *lazyRuntime) CapacityIntervals(ctx context.Context, after uint64) ([]nozzle.CapacityInterval, error) {
	rt, err := l.get()
	if err != nil {
		return nil, nil // nothing closed yet
	}
	return rt.CapacityIntervals(ctx, after)
}

func (l *lazyRuntime) OpenCapacity(ctx context.Context) (nozzle.CapacityInterval, bool, error) {
	rt, err := l.get()
	if err != nil {
		return nozzle.CapacityInterval{}, false, nil // not up yet
	}
	return rt.OpenCapacity(ctx)
}

// storeValidator validates adapters against the base model that info
// describes, once it is known.
func storeValidator(info func(context.Context) (nozzle.ModelInfo, error), maxRank int) func(dir string) (*nozzle.AdapterManifest, error) {
	return func(dir string) (*nozzle.AdapterManifest, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		mi, err := info(ctx)
		if err != nil {
			return nil, err
		}
		return model.ValidateAdapter(dir, mi, maxRank)
	}
}

// anyInfo asks the upstreams in turn for the base model, each for a few
// seconds: the first that answers describes it (the gateway's health
// checks keep upstreams of another model out of service).
func anyInfo(ups []gateway.Upstream) func(context.Context) (nozzle.ModelInfo, error) {
	return func(ctx context.Context) (nozzle.ModelInfo, error) {
		var err error
		for _, u := range ups {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			var info nozzle.ModelInfo
			info, err = u.Generator.Info(cctx)
			cancel()
			if err == nil {
				return info, nil
			}
		}
		return nozzle.ModelInfo{}, err
	}
}

// serve runs one server command: it prepares the data folder, opens the
// listening socket first (a port in use is one clear line), calls start to
// wire and start the command's parts, and serves until ctx ends or the
// server fails. Close then drains and releases everything, last first.
func (m *Main) serve(ctx context.Context, start func(ctx context.Context, ln net.Listener) (served <-chan error, err error)) (err error) {
	var ln net.Listener
	var stopping time.Time // when a stop (SIGINT, SIGTERM) began the drain
	drained := 0           // the completions in flight then
	defer func() {
		// Close drains first: a split runtime keeps taking connections
		// (for capacity pulls) while it drains; the socket closes after.
		cerr := m.Close()
		if err == nil {
			err = cerr
		}
		if ln != nil {
			ln.Close()
		}
		if !stopping.IsZero() && cerr == nil {
			// The operator's sign that the stop was clean: requests
			// drained, their usage recorded, the ledger closed.
			attrs := []any{"drain_seconds", math.Round(time.Since(stopping).Seconds()*1000) / 1000}
			if m.Gateway != nil {
				attrs = append([]any{"drained_requests", drained}, attrs...)
			}
			m.Log.Info("stopped", attrs...)
		}
	}()
	if err := m.prepareData(); err != nil {
		return err
	}
	ln, err = m.listen()
	if err != nil {
		return err
	}
	served, err := start(ctx, ln)
	if err != nil || served == nil {
		return err
	}
	close(m.Ready)
	select {
	case <-ctx.Done():
		stopping = time.Now()
		if m.Gateway != nil {
			drained = m.Gateway.InFlight()
		}
		m.Log.Info("shutting down: draining in-flight requests")
		return nil
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// startGateway opens the ledger and starts the gateway on ln in front of
// the given upstreams, with the console and the operator's account. On the
// way out the gateway drains in-flight requests (their usage is recorded),
// then afterDrain runs (the in-process runtime stops, the last capacity
// intervals are collected); the ledger closes after all of that.
func (m *Main) startGateway(ctx context.Context, ln net.Listener, internalToken string, store nozzle.AdapterStore, ups []gateway.Upstream, afterDrain func(context.Context) error) (<-chan error, error) {
	if err := m.openLedger(); err != nil {
		return nil, err
	}
	adminToken, err := m.secret(m.Config.AdminToken, "admin-token")
	if err != nil {
		return nil, err
	}
	exts, err := m.consoleExtensions()
	if err != nil {
		return nil, err
	}
	if m.operator, m.operatorPasswordFile, err = m.ensureOperator(ctx); err != nil {
		return nil, err
	}
	gw, err := gateway.New(m.gatewayConfig(adminToken, internalToken), gateway.Deps{
		Tenants: m.Ledger, Keys: m.Ledger, Adapters: m.Ledger, Store: store,
		Ledger: m.Ledger, Budget: m.Ledger, Reporter: m.Ledger, Users: m.Ledger, Responses: m.Ledger, Conversations: m.Ledger, Batches: m.Ledger,
		Upstreams: ups, Extensions: exts,
		PullCapacity: func() {
			select {
			case m.pullNow <- struct{}{}:
			default: // a pull is asked for already
			}
		},
	})
	if err != nil {
		return nil, err
	}
	m.Gateway = gw
	m.onClose(func(ctx context.Context) error { return errors.Join(gw.Shutdown(ctx), afterDrain(ctx)) })
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ln) }()
	return served, m.startStripe(ctx)
}

// Serve runs gateway and runtime in one process until ctx ends, then
// drains in-flight requests and flushes the ledger.
func (m *Main) Serve(ctx context.Context) error {
	m.holdReady = true
	return m.serve(ctx, func(ctx context.Context, ln net.Listener) (<-chan error, error) {
		// Resolve the model folder before anything slow, so a bad --model
		// is one clear line.
		modelDir, demoAdapters, err := m.modelDir()
		if err != nil {
			return nil, err
		}
		lazy := newLazyRuntime()
		store := runtime.NewStore(filepath.Join(m.Config.Data, "adapters"), storeValidator(lazy.Info, m.Config.MaxRank))
		stopCollect := func() {}
		served, err := m.startGateway(ctx, ln, "", store, []gateway.Upstream{{ID: m.Config.RuntimeID, Generator: lazy}},
			func(ctx context.Context) error {
				var err error
				if m.Runtime != nil {
					err = m.Runtime.Close(ctx)
				}
				stopCollect()
				return err
			})
		if err != nil {
			return nil, err
		}

		// Load the model while the gateway already answers health checks.
		go func() {
			rt, err := runtime.Open(ctx, m.runtimeOptions(modelDir, store))
			lazy.set(rt, err)
		}()
		select {
		case <-lazy.ready:
		case <-ctx.Done():
			return nil, nil
		case err := <-served:
			return nil, err
		}
		rt, err := lazy.get()
		if err != nil {
			return nil, fmt.Errorf("load model %s: %w", modelDir, nozzle.AsError(err).Err)
		}
		m.Runtime = rt
		// The gateway's first health check ran before the model was
		// loaded: check now, so that /v1/models names the model at once.
		m.Gateway.CheckUpstreams(ctx)
		stopCollect = m.collectCapacity(map[string]nozzle.CapacitySource{m.Config.RuntimeID: rt})
		// Ready once the demo's tenant, key and adapters exist too: a
		// script that waits for /readyz may use them at once.
		err = m.bootstrap(ctx, store, demoAdapters)
		m.Gateway.ReleaseReady()
		return served, err
	})
}

// collectCapacity pulls runtimes' capacity intervals into the ledger until
// the returned stop function is called; stop waits for the final pull.
func (m *Main) collectCapacity(sources map[string]nozzle.CapacitySource) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := billing.CollectCapacity(ctx, m.Ledger, sources, 10*time.Second, m.Log.With("component", "billing"), m.pullNow); err != nil && !errors.Is(err, context.Canceled) {
			m.Log.Error("capacity collection stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }
}

// modelDir is the configured model folder, or the demo model generated
// into the data folder.
func (m *Main) modelDir() (string, map[string]string, error) {
	if m.Config.Model != "" {
		fi, err := os.Stat(m.Config.Model)
		if err != nil {
			return "", nil, fmt.Errorf("model folder %s: %w", m.Config.Model, unwrapPath(err))
		}
		if !fi.IsDir() {
			return "", nil, fmt.Errorf("model %s is not a folder", m.Config.Model)
		}
		// Parse config.json now: a missing file or an unsupported
		// architecture is one clear line before anything starts.
		if _, err := model.LoadConfig(m.Config.Model); err != nil {
			return "", nil, err
		}
		return m.Config.Model, nil, nil
	}
	dir, adapters, err := runtime.EnsureDemo(m.Config.Data)
	if err != nil {
		return "", nil, fmt.Errorf("demo model: %w", err)
	}
	return dir, adapters, nil
}

// waitForModel waits, when wait_for_model asks for it, until the model
// folder holds a config.json; it returns ctx's error if ctx ends first.
func (m *Main) waitForModel(ctx context.Context, every time.Duration) error {
	if !m.Config.WaitForModel || m.Config.Model == "" {
		return nil
	}
	cfg := filepath.Join(m.Config.Model, "config.json")
	for logged := false; ; logged = true {
		if _, err := os.Stat(cfg); err == nil {
			return nil
		}
		if !logged {
			m.Log.Warn("waiting for the model: put a complete Hugging Face model folder at --model (download elsewhere, then move it into place)", "model", m.Config.Model)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// gatewayConfig is the gateway's configuration.
func (m *Main) gatewayConfig(adminToken, internalToken string) gateway.Config {
	return gateway.Config{
		AdminToken:    adminToken,
		InternalToken: internalToken,
		UploadLimit:   int64(m.Config.UploadLimitMB) << 20,
		HoldReady:     m.holdReady,
		// 0 in the configuration is no cap; in gateway.Config, the default
		TenantAdapterBytes: cmp.Or(int64(m.Config.TenantStoreMB)<<20, -1),
		UploadDir:          filepath.Join(m.Config.Data, "uploads"),
		RequestTimeout:     m.Config.RequestTimeout,
		// 0 in the configuration is no cap; in gateway.Config, the default
		TenantSequences: cmp.Or(m.Config.TenantSeqs, -1),
		// 0 in the configuration is no cap; in gateway.Config, the default
		TenantResponseBytes: cmp.Or(int64(m.Config.TenantResponseMB)<<20, -1),
		// 0 in the configuration is no cap; in gateway.Config, the default
		TenantConversationBytes: cmp.Or(int64(m.Config.TenantConvMB)<<20, -1),
		FilesDir:                filepath.Join(m.Config.Data, "files"),
		FileUploadLimit:         int64(m.Config.FileLimitMB) << 20,
		// 0 in the configuration is no cap; in gateway.Config, the default
		TenantFileBytes:  cmp.Or(int64(m.Config.TenantFilesMB)<<20, -1),
		BatchConcurrency: m.Config.BatchLines,
		// 0 in the configuration is never; in gateway.Config, the default
		StreamCheckpointEvery: cmp.Or(m.Config.StreamCkpt, -1),
		Logger:                m.Log.With("component", "gateway"),
		Metrics:               m.Metrics,
	}
}

// RunGateway runs the gateway alone in front of remote runtimes.
func (m *Main) RunGateway(ctx context.Context) error {
	if len(m.Config.Upstreams) == 0 {
		return errors.New("gateway: --upstreams names no runtime")
	}
	return m.serve(ctx, func(ctx context.Context, ln net.Listener) (<-chan error, error) {
		internalToken, err := m.secret(m.Config.InternalToken, "internal-token")
		if err != nil {
			return nil, err
		}
		hc := &http.Client{Transport: runtime.NewTransport()}
		var ups []gateway.Upstream
		sources := map[string]nozzle.CapacitySource{}
		for _, u := range m.Config.Upstreams {
			c := runtime.NewClient(u, internalToken, hc)
			ups = append(ups, gateway.Upstream{ID: u, Generator: c})
			sources[u] = c
		}
		// Adapters are validated against the first runtime's base model.
		store := runtime.NewStore(filepath.Join(m.Config.Data, "adapters"), storeValidator(anyInfo(ups), m.Config.MaxRank))
		stopCollect := func() {}
		served, err := m.startGateway(ctx, ln, internalToken, store, ups, func(context.Context) error { stopCollect(); return nil })
		if err != nil {
			return nil, err
		}
		stopCollect = m.collectCapacity(sources)
		m.Log.Info("gateway listening", "addr", m.Addr, "upstreams", m.Config.Upstreams)
		return served, m.bootstrap(ctx, store, nil)
	})
}

// RunRuntime runs a runtime alone, serving gateways over the internal API.
func (m *Main) RunRuntime(ctx context.Context) error {
	return m.serve(ctx, func(ctx context.Context, ln net.Listener) (<-chan error, error) {
		// The server answers from the start, while the model is awaited
		// and loaded (/healthz: up; the rest: not ready), and serves the
		// runtime once it is loaded. Idle connections close after two
		// minutes: gateways keep theirs for 30 s (runtime.Transport), so
		// this only reaps those of gateways that went away.
		var handler atomic.Pointer[http.Handler]
		loading := runtime.LoadingHandler()
		handler.Store(&loading)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }),
			ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		if err := m.waitForModel(ctx, 5*time.Second); err != nil {
			return nil, nil // ctx ended
		}
		modelDir, _, err := m.modelDir()
		if err != nil {
			return nil, err
		}
		internalToken, err := m.secret(m.Config.InternalToken, "internal-token")
		if err != nil {
			return nil, err
		}
		var source runtime.AdapterSource
		var gw *runtime.RemoteSource
		if m.Config.GatewayURL != "" {
			gw = runtime.NewRemoteSource(m.Config.GatewayURL, internalToken, runtime.RemoteSourceOptions{
				CacheDir:   filepath.Join(m.Config.Data, "adapter-cache"),
				CacheBytes: int64(m.Config.AdapterCacheMB) << 20,
				HTTPClient: &http.Client{Timeout: 10 * time.Minute},
				Logger:     m.Log.With("component", "runtime"),
				Metrics:    m.Metrics,
			})
			source = gw
		} // else the runtime warns that it serves the base model only
		rt, err := runtime.Open(ctx, m.runtimeOptions(modelDir, source))
		if err != nil {
			return nil, fmt.Errorf("load model %s: %w", modelDir, err)
		}
		m.Runtime = rt
		mux := http.NewServeMux()
		rsrv := runtime.NewServer(rt, internalToken)
		mux.Handle("/", rsrv)
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			m.Metrics.WriteTo(w)
		})
		// The runtime drains first while the server still answers: new
		// requests are refused (the gateway moves them to another
		// runtime), those in flight finish, and the gateway can still pull
		// capacity — the last interval, drain included, closes with the
		// runtime and is collected before the server stops (the gateway
		// pulls every 10 s).
		m.onClose(func(ctx context.Context) error {
			err := rt.Close(ctx)
			if gw != nil {
				if perr := gw.AskPull(ctx); perr != nil {
					m.Log.Debug("ask the gateway to collect capacity", "err", perr)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 12*time.Second)
			if werr := rsrv.WaitCollected(wctx); werr != nil {
				m.Log.Warn("the last capacity interval was not collected before the runtime stopped", "err", werr)
			}
			cancel()
			return errors.Join(err, srv.Shutdown(ctx))
		})
		var loaded http.Handler = mux
		handler.Store(&loaded)
		m.Log.Info("runtime listening", "addr", m.Addr, "model", modelDir)
		return served, nil
	})
}
