// Package gateway is Nozzle's HTTP front door: an OpenAI-compatible API
// (/v1/completions, /v1/chat/completions, /v1/responses, /v1/models), the adapter, key and
// usage APIs for tenants, the operator's admin API, health and metrics, on
// github.com/gofiber/fiber/v2.
//
// A request goes: request id → API key (only its digest is looked up) →
// tenant → scope → rate limits and budget reservation → adapter resolution
// within the tenant → an upstream Generator chosen by adapter affinity →
// one usage event written durably to the Ledger before the final bytes of
// the answer leave → the answer, with usage.
//
// # Metering
//
// Every completion request that did work is one UsageEvent, written with
// Ledger.RecordUsage before the final response body, or the final chunk
// and [DONE] of a stream, is sent; an answer whose event cannot be written
// is not delivered (500, or an error event closing the stream).
//
//   - Completed: status ok, charged, under the request id (X-Request-Id).
//   - Client gone mid-stream, or a stream that has sent text and then ran
//     out of time (a slow reader can hold one up until it does) or had one
//     of its choices refused: status canceled, charged for the tokens the
//     runtime produced before it stopped.
//   - Runtime failure after work (EINTERNAL, EUNAVAILABLE), or a failure
//     with nothing sent: status failed, never charged, recorded so the
//     cost model still counts its device time. Refused before any work
//     (context length, bad parameters, no runtime, EINTERNAL before a
//     token): not recorded, not charged.
//
// A client-chosen X-Request-Id is its tenant's own: the request is
// recorded (and run) under a digest of the tenant and the id, so tenants'
// ids never meet, and the client sees and looks it up by its own id. It
// is used only while no event of the tenant has it; a reused one is
// replaced by a fresh id (echoed back), so reusing an id never makes a
// request free, with or without an Idempotency-Key.
//
// # Idempotency-Key
//
// With an Idempotency-Key header (1–255 printable ASCII characters) a
// completed request is recorded under "idem_" + a digest of (tenant, key),
// with its complete non-streamed answer stored in the event. A retry with
// the same key is neither run nor charged: it gets the stored answer back
// with Idempotent-Replayed: true, even once the adapter it named is
// deleted — as JSON, or, when the retry asks for a
// stream, as a short SSE stream (one content chunk per choice, then the
// finish chunks, the usage chunk if asked, [DONE]). A duplicate arriving
// while the first is in flight gets 409 idempotency_key_in_use; a key used
// on the other completion endpoint gets 409 idempotency_key_reused. Failed
// and abandoned attempts are recorded under their own request id, leaving
// the key free for a retry. The in-flight check is per gateway process.
//
// The package reads no environment variables or flags: cmd/nozzle copies
// its configuration into Config and wires the services into Deps.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
)

// Defaults for zero Config fields.
const (
	DefaultBodyLimit           = 4 << 20 // JSON request bodies
	DefaultUploadLimit         = 2 << 30 // adapter uploads
	DefaultRequestTimeout      = 10 * time.Minute
	DefaultReadTimeout         = 60 * time.Second
	DefaultWriteTimeout        = 60 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultUploadTimeout       = 30 * time.Minute
	DefaultHealthInterval      = 5 * time.Second
	DefaultHealthTimeout       = 3 * time.Second
	DefaultKeyTouchInterval    = 10 * time.Second
	DefaultMaxChoices          = 16
	DefaultTenantSequences     = 64
	DefaultTenantResponseBytes = 1 << 30
	DefaultTenantConvBytes     = 1 << 30
	DefaultTenantAdapterBytes  = 20 << 30
	DefaultTenantUploads       = 2
	DefaultFileUploadLimit     = 200 << 20 // a Files API upload
	DefaultTenantFileBytes     = 10 << 30
	DefaultBatchConcurrency    = 4
	// DefaultStreamCheckpointEvery bounds what a crash of the gateway
	// leaves uncharged of a running stream to a second of its tokens
	// (tens of tokens at a GPU's decode speed per sequence) for one
	// journal record per stream a second, which shares the journal's
	// fdatasync with the usage events (group commit).
	DefaultStreamCheckpointEvery = time.Second
)

// Config is the gateway's configuration. Zero fields take the defaults
// above; cmd/nozzle fills it from its own configuration.
type Config struct {
	// AdminToken is the bearer token of the /admin API. Empty disables the
	// admin API (every admin request is refused).
	AdminToken string
	// InternalToken is the bearer token remote runtimes present to fetch
	// adapter files from /internal/adapters. Empty disables that route.
	InternalToken string

	// BodyLimit caps JSON request bodies, in bytes (default 4 MiB).
	BodyLimit int
	// UploadLimit caps an adapter upload (the whole multipart body), in
	// bytes (default 2 GiB).
	UploadLimit int64
	// UploadDir is where uploads are staged before the AdapterStore imports
	// them; it should be on the same file system as the store. Default: the
	// system's temporary directory.
	UploadDir string
	// UploadTimeout bounds the time to receive one upload (default 30 min).
	UploadTimeout time.Duration
	// HoldReady keeps /readyz at 503 until ReleaseReady, whatever the
	// upstreams say: for a start-up that has more to do once a runtime is
	// up (the demo's tenant and adapters).
	HoldReady bool
	// TenantAdapterBytes caps the adapter files one tenant keeps (the sum
	// of its adapters' sizes): an upload that could pass it is refused
	// before it is received (default 20 GiB; negative: no cap). A tenant
	// has at most TenantUploads uploads in flight at once (default 2).
	TenantAdapterBytes int64
	TenantUploads      int

	// FilesDir is where the Files API keeps files' contents (batch input
	// and output files), on the same file system as UploadDir (files are
	// moved from there); empty, or Deps.Batches nil, leaves the Files and
	// Batch APIs out. FileUploadLimit caps one uploaded file (default
	// 200 MiB); TenantFileBytes caps the files one tenant keeps, outputs
	// included (default 10 GiB; negative: no cap).
	FilesDir        string
	FileUploadLimit int64
	TenantFileBytes int64
	// BatchConcurrency is how many lines of batches the batch runner runs
	// at once, all batches together (default 4). They run at the
	// runtime's batch priority, behind interactive requests.
	BatchConcurrency int
	// Now is the batch runner's clock (batches' times and their 24-hour
	// expiry); default time.Now. For tests.
	Now func() time.Time

	// RequestTimeout bounds one completion request, generation included
	// (default 10 min).
	RequestTimeout time.Duration
	// ReadTimeout bounds reading a request's header and JSON body;
	// WriteTimeout bounds writing a response, renewed for every chunk of a
	// stream; IdleTimeout bounds a keep-alive connection's wait for its
	// next request.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration

	// StreamCheckpointEvery is how often a running stream's usage so far
	// is checkpointed in the ledger, when the ledger is a
	// nozzle.UsageCheckpointer: first as soon as its first token has gone
	// out, then at most this often while it sends more. A crash of the
	// gateway mid-stream then leaves at most this long of the stream's
	// tokens uncharged (default 1 s; negative: no checkpoints, and a crash
	// leaves the whole stream uncharged).
	StreamCheckpointEvery time.Duration

	// DefaultMaxTokens is the completion cap of a request that names none;
	// 0 means up to the model's context length (OpenAI's behaviour).
	DefaultMaxTokens int
	// MaxChoices caps prompts × n of one request (default 16).
	MaxChoices int
	// TenantSequences caps the sequences (prompts × n of each request) one
	// tenant has running or queued at once, across its requests and keys,
	// so that one tenant's flood cannot fill every batch; a request that
	// would pass it is refused with a 429 (default 64; negative: no cap).
	TenantSequences int
	// TenantResponseBytes caps the bytes of stored responses (the
	// Responses API's) one tenant may hold: once its stored responses
	// reach it, new ones are answered "store": false and not stored until
	// some are deleted or expire (default 1 GiB; negative: no cap).
	TenantResponseBytes int64
	// TenantConversationBytes caps the bytes of conversation items (the
	// Conversations API's) one tenant may hold: once its conversations
	// reach it, adding items and responses that name a conversation are
	// refused until some items or conversations are deleted (default
	// 1 GiB; negative: no cap). A response admitted under the cap still
	// appends its items.
	TenantConversationBytes int64

	// HealthInterval is the period of upstream health checks (default 5 s);
	// HealthTimeout bounds one check (default 3 s).
	HealthInterval, HealthTimeout time.Duration
	// KeyTouchInterval is how often keys' last-use times are written
	// (default 10 s); they are also written on Shutdown.
	KeyTouchInterval time.Duration

	// TrustedProxies lists the addresses or CIDR ranges of reverse proxies
	// whose X-Forwarded-For header gives the client address in access
	// logs. Empty: the peer address is the client.
	TrustedProxies []string

	// Logger receives access logs and errors (default
	// slog.Default().With("component", "gateway")).
	Logger *slog.Logger
	// Metrics is the registry the gateway registers its metrics in and
	// serves at /metrics (default: a new registry).
	Metrics *metrics.Registry

	// storedPart, when positive, is the most a stored response's object
	// and input items may each be in place of maxStoredPart (tests).
	storedPart int
}

func (c Config) withDefaults() Config {
	if c.BodyLimit <= 0 {
		c.BodyLimit = DefaultBodyLimit
	}
	if c.UploadLimit <= 0 {
		c.UploadLimit = DefaultUploadLimit
	}
	if c.UploadDir == "" {
		c.UploadDir = os.TempDir()
	}
	if c.UploadTimeout <= 0 {
		c.UploadTimeout = DefaultUploadTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxChoices <= 0 {
		c.MaxChoices = DefaultMaxChoices
	}
	if c.StreamCheckpointEvery == 0 {
		c.StreamCheckpointEvery = DefaultStreamCheckpointEvery
	}
	if c.TenantSequences == 0 {
		c.TenantSequences = DefaultTenantSequences
	}
	if c.TenantResponseBytes == 0 {
		c.TenantResponseBytes = DefaultTenantResponseBytes
	}
	if c.TenantConversationBytes == 0 {
		c.TenantConversationBytes = DefaultTenantConvBytes
	}
	if c.TenantAdapterBytes == 0 {
		c.TenantAdapterBytes = DefaultTenantAdapterBytes
	}
	if c.TenantUploads <= 0 {
		c.TenantUploads = DefaultTenantUploads
	}
	if c.FileUploadLimit <= 0 {
		c.FileUploadLimit = DefaultFileUploadLimit
	}
	if c.TenantFileBytes == 0 {
		c.TenantFileBytes = DefaultTenantFileBytes
	}
	if c.BatchConcurrency <= 0 {
		c.BatchConcurrency = DefaultBatchConcurrency
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = DefaultHealthTimeout
	}
	if c.KeyTouchInterval <= 0 {
		c.KeyTouchInterval = DefaultKeyTouchInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default().With("component", "gateway")
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewRegistry()
	}
	return c
}

// Upstream is one runtime the gateway can send completions to.
type Upstream struct {
	// ID names the upstream in logs, metrics and rendezvous hashing; it
	// must be unique and stable across restarts.
	ID        string
	Generator nozzle.Generator
}

// Extension adds routes to a Server. New calls each extension once, after
// the gateway's own routes are registered. See Server.App.
type Extension func(s *Server) error

// Deps are the services the gateway works with. Tenants, Keys, Adapters,
// Store, Ledger and Upstreams are required; Budget, Reporter and Users may
// be nil (budgets then are not enforced, the report routes answer 501, and
// the console has no users).
type Deps struct {
	Tenants  nozzle.TenantService
	Keys     nozzle.KeyService
	Adapters nozzle.AdapterService
	Store    nozzle.AdapterStore
	Ledger   nozzle.Ledger
	Budget   nozzle.BudgetService
	Reporter nozzle.Reporter
	// Responses keeps the Responses API's stored responses (recorded with
	// their usage events by Ledger); nil stores none (store is answered
	// false, and previous_response_id finds nothing).
	Responses nozzle.ResponseStore
	// Conversations keeps the Conversations API's conversations (a
	// completed response's items are appended with its usage event by
	// Ledger); nil keeps none (the /v1/conversations routes answer 404,
	// and a response naming a conversation finds none).
	Conversations nozzle.ConversationStore
	// Batches keeps the Files and Batch APIs' files and batches (with
	// Config.FilesDir for the files' contents); nil keeps none (the
	// /v1/files and /v1/batches routes answer 404).
	Batches nozzle.BatchStore
	// Users is for console code mounted through Extensions.
	Users nozzle.UserService

	Upstreams []Upstream
	// PullCapacity, when set, asks the capacity collector to pull the
	// runtimes now: a runtime that is stopping calls it through
	// POST /internal/capacity/pull so that its last interval is collected
	// before it goes.
	PullCapacity func()
	// Extensions mount more routes (the web console) on the Server.
	Extensions []Extension
}

// Server is the gateway. Create it with New, run it with Listen or Serve,
// stop it with Shutdown.
//
// # Mounting more routes (the console seam)
//
// Code in other files of this package (gateway/console*.go) mounts its
// routes through an Extension in Deps.Extensions, or directly on App()
// before Serve. It reuses, rather than re-implements:
//
//   - the global middleware, already in front of every route: request ids
//     (RequestID), panic recovery, security headers, access logs, metrics;
//   - the error handler: a handler returns an error (a *nozzle.Error, or any
//     error for a 500) and the gateway renders it OpenAI-shaped with the
//     right status — handlers never write errors themselves;
//   - authentication: s.RequireKey(scope) and s.RequireAdmin() are fiber
//     handlers; a console session middleware that resolves a tenant can
//     call s.setPrincipal(c, key, tenant) and then reuse the tenant
//     handlers (s.listKeys, s.createKey, s.listAdapters, s.usage, ...),
//     which read the caller from principalFrom(c);
//   - readJSON(c, &v) for bodies within Config.BodyLimit, and writeList for
//     OpenAI list answers.
//
// Handlers registered by extensions should set their own
// Content-Security-Policy when they serve HTML (the default is
// "default-src 'none'").
type Server struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	app  *fiber.App

	router    *upstreamRouter
	keyStates *keyStateMap
	inflight  *inflightSet
	seqs      tenantSeqs
	uploading tenantSeqs  // uploads in flight per tenant
	held      atomic.Bool // /readyz held at 503 (Config.HoldReady)
	met       *gatewayMetrics
	uploads   uploadGuard
	quotaMu   sync.Mutex   // an upload's quota check and its record, one at a time
	runner    *batchRunner // nil without Deps.Batches

	baseCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // background loops
	genWG   sync.WaitGroup // generations, until their usage is recorded
	gens    atomic.Int64   // genWG's count, for InFlight
	conns   connSet

	mu       sync.Mutex
	serving  bool
	shutdown bool
}

// New returns a Server with its routes registered. It runs a first round
// of upstream health checks (bounded by HealthTimeout), then starts the
// periodic checks and the key last-use writer; Shutdown stops them.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.withDefaults()
	switch {
	case deps.Tenants == nil:
		return nil, errors.New("gateway: Deps.Tenants is required")
	case deps.Keys == nil:
		return nil, errors.New("gateway: Deps.Keys is required")
	case deps.Adapters == nil:
		return nil, errors.New("gateway: Deps.Adapters is required")
	case deps.Store == nil:
		return nil, errors.New("gateway: Deps.Store is required")
	case deps.Ledger == nil:
		return nil, errors.New("gateway: Deps.Ledger is required")
	case len(deps.Upstreams) == 0:
		return nil, errors.New("gateway: at least one upstream is required")
	}
	seen := map[string]bool{}
	for _, u := range deps.Upstreams {
		if u.ID == "" || u.Generator == nil {
			return nil, errors.New("gateway: an upstream needs an ID and a Generator")
		}
		if seen[u.ID] {
			return nil, fmt.Errorf("gateway: upstream %q listed twice", u.ID)
		}
		seen[u.ID] = true
	}
	if cfg.FilesDir != "" {
		if err := os.MkdirAll(cfg.FilesDir, 0o700); err != nil {
			return nil, fmt.Errorf("gateway: create files dir: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.UploadDir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: create upload dir: %w", err)
	}
	// Uploads a crash cut short left their staging folders.
	if stale, err := filepath.Glob(filepath.Join(cfg.UploadDir, "upload-*")); err == nil {
		for _, d := range stale {
			os.RemoveAll(d)
		}
	}

	s := &Server{cfg: cfg, deps: deps, log: cfg.Logger}
	s.held.Store(cfg.HoldReady)
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.met = newGatewayMetrics(cfg.Metrics)
	s.router = newUpstreamRouter(deps.Upstreams, cfg.HealthTimeout, s.met, s.log)
	s.router.dropWanted = s.contentUnused
	s.keyStates = newKeyStateMap()
	s.inflight = newInflightSet()

	bodyLimit := cfg.UploadLimit
	if bodyLimit > math.MaxInt32 && math.MaxInt == math.MaxInt32 {
		bodyLimit = math.MaxInt32
	}
	s.app = fiber.New(fiber.Config{
		AppName:               "nozzle",
		DisableStartupMessage: true,
		ErrorHandler:          s.errorHandler,
		// Bodies are read from the connection by the handlers, each within
		// its route's limit (Config.BodyLimit for JSON, UploadLimit for
		// uploads): fasthttp streams any body larger than its 8 KiB
		// prefetch, and never parses multipart forms itself.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		BodyLimit:                    int(bodyLimit),
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		EnableTrustedProxyCheck:      len(cfg.TrustedProxies) > 0,
		TrustedProxies:               cfg.TrustedProxies,
		ProxyHeader:                  proxyHeader(cfg.TrustedProxies),
		DisableDefaultContentType:    false,
	})
	s.conns.m = map[net.Conn]connUse{}
	s.app.Server().ConnState = s.conns.state
	s.routes()
	for _, ext := range deps.Extensions {
		if err := ext(s); err != nil {
			s.cancel()
			return nil, fmt.Errorf("gateway: extension: %w", err)
		}
	}

	s.SweepStore(s.baseCtx)
	// Background loops: health checks and key last-use writes.
	s.router.checkAll(s.baseCtx)
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.router.loop(s.baseCtx, cfg.HealthInterval) }()
	go func() { defer s.wg.Done(); s.touchLoop(s.baseCtx) }()
	if s.storesBatches() {
		s.runner = newBatchRunner(s)
		s.runner.resume(s.baseCtx)
	}
	return s, nil
}

func proxyHeader(trusted []string) string {
	if len(trusted) == 0 {
		return ""
	}
	return fiber.HeaderXForwardedFor
}

// App returns the fiber app, for mounting more routes before Serve (see
// the Server doc) and for tests (App().Test).
func (s *Server) App() *fiber.App { return s.app }

// Logger returns the gateway's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// Listen serves on addr until Shutdown.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ln)
}

// Serve serves on ln until Shutdown. It returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return errors.New("gateway: server is shut down")
	}
	s.serving = true
	s.mu.Unlock()
	err := s.app.Listener(ln)
	s.mu.Lock()
	down := s.shutdown
	s.mu.Unlock()
	if down {
		return nil
	}
	return err
}

// InFlight is the number of completions running now, streamed or not,
// counted until their usage is recorded: those a Shutdown begun now would
// wait for.
func (s *Server) InFlight() int { return int(s.gens.Load()) }

// Shutdown stops accepting connections, waits for in-flight requests —
// streams included, which finish and are metered — then stops the
// background loops and writes the keys' last-use times. If ctx ends first
// it returns ctx's error; requests still running then go on until they end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	serving := s.serving
	s.mu.Unlock()
	var err error
	if serving {
		// The server waits for its connections to go idle, but misses
		// those a client opened and sent nothing on yet: they would hold
		// the shutdown until ctx ends. Every connection no request is
		// using is closed instead, as soon as it is so.
		shut := make(chan error, 1)
		go func() { shut <- s.app.ShutdownWithContext(ctx) }()
		t := time.NewTicker(50 * time.Millisecond)
	wait:
		for {
			s.conns.closeIdle()
			select {
			case err = <-shut:
				break wait
			case <-t.C:
			}
		}
		t.Stop()
	}
	// The batch runner starts no more lines and waits for its running
	// ones, which finish and are metered; then no generation starts.
	runnerDone := make(chan struct{})
	go func() { s.runner.shutdown(); close(runnerDone) }()
	select {
	case <-runnerDone:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	// Generations that outlive their connection (a client gone mid-stream)
	// are still recording their usage: wait for them.
	done := make(chan struct{})
	go func() {
		s.genWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	s.cancel()
	s.wg.Wait()
	s.flushTouches(context.WithoutCancel(ctx))
	return err
}

// connSet tracks the server's connections, how many requests each is
// serving (a stream counts until it ends) and whether the server is still
// writing a response on it.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]connUse
}

type connUse struct {
	busy int
	// responding: a request came in on the connection and the server
	// has not yet marked it idle (fasthttp's StateIdle), which it does
	// once the whole response is written. A stream's last bytes go out
	// after its writer returned: fasthttp copies them from the stream's
	// pipe, then ends the chunked body.
	responding bool
}

// state is the server's connection-state hook.
func (cs *connSet) state(c net.Conn, st fasthttp.ConnState) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch st {
	case fasthttp.StateNew:
		cs.m[c] = connUse{}
	case fasthttp.StateIdle:
		if u, ok := cs.m[c]; ok {
			u.responding = false
			cs.m[c] = u
		}
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		delete(cs.m, c)
	}
}

// busy adds d to the requests c serves.
func (cs *connSet) busy(c net.Conn, d int) {
	if c == nil {
		return
	}
	cs.mu.Lock()
	if u, ok := cs.m[c]; ok {
		u.busy += d
		if d > 0 {
			u.responding = true
		}
		cs.m[c] = u
	}
	cs.mu.Unlock()
}

// closeIdle closes the connections no request is using, and none is
// still being answered on.
func (cs *connSet) closeIdle() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c, u := range cs.m {
		if u.busy <= 0 && !u.responding {
			c.Close()
			delete(cs.m, c)
		}
	}
}
