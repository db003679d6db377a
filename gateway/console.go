package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"runtime"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/compress"

	"github.com/nozzle-ai/nozzle"
)

// Console defaults for zero ConsoleConfig fields.
const (
	DefaultSessionLifetime = 12 * time.Hour
	DefaultInviteLifetime  = 7 * 24 * time.Hour
	DefaultLoginWindow     = 15 * time.Minute
	DefaultLoginPerEmail   = 5
	DefaultLoginPerAddress = 20
	DefaultCookieName      = "nozzle_session"
	// MinPasswordLength is the shortest console password accepted.
	MinPasswordLength = 12
	maxPasswordLength = 256
)

// ConsoleConfig configures the web console. cmd/nozzle fills it.
type ConsoleConfig struct {
	// Static holds the console's static files and Templates its page
	// templates, parsed with Layouts first (package web provides all
	// three; cmd/nozzle passes them). Required.
	Static    fs.FS
	Templates fs.FS
	Layouts   []string
	// SigningKey signs session tokens (HMAC-SHA256); at least 32 random
	// bytes, kept secret and stable across restarts (cmd/nozzle generates
	// one into the data folder). Required.
	SigningKey []byte
	// Issuer is the "iss" of session tokens (default "nozzle").
	Issuer string
	// CookieName names the session cookie (default "nozzle_session").
	CookieName string
	// InsecureCookie drops the Secure attribute of the console's cookies.
	// Leave it false: browsers accept Secure cookies from http://localhost
	// and http://127.0.0.1, and any other address should be HTTPS.
	InsecureCookie bool
	// SessionLifetime is how long a sign-in lasts (default 12 h).
	SessionLifetime time.Duration
	// InviteLifetime is how long an invite link works (default 7 days).
	InviteLifetime time.Duration
	// LoginPerEmail and LoginPerAddress cap failed sign-ins per email and
	// per client address within LoginWindow (defaults 5, 20, 15 min).
	LoginPerEmail   int
	LoginPerAddress int
	LoginWindow     time.Duration
	// PublicURL is the address users reach the gateway at
	// ("https://nozzle.example.com"), used in invite links and code
	// snippets. Empty: taken from each request.
	PublicURL string
	// Clock returns the current time (default time.Now); for tests.
	Clock func() time.Time
}

func (c ConsoleConfig) withDefaults() ConsoleConfig {
	if c.Issuer == "" {
		c.Issuer = "nozzle"
	}
	if c.CookieName == "" {
		c.CookieName = DefaultCookieName
	}
	if c.SessionLifetime <= 0 {
		c.SessionLifetime = DefaultSessionLifetime
	}
	if c.InviteLifetime <= 0 {
		c.InviteLifetime = DefaultInviteLifetime
	}
	if c.LoginPerEmail <= 0 {
		c.LoginPerEmail = DefaultLoginPerEmail
	}
	if c.LoginPerAddress <= 0 {
		c.LoginPerAddress = DefaultLoginPerAddress
	}
	if c.LoginWindow <= 0 {
		c.LoginWindow = DefaultLoginWindow
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	return c
}

// console is the web console mounted on a Server.
type console struct {
	s      *Server
	cfg    ConsoleConfig
	users  nozzle.UserService
	pages  map[string]*template.Template
	assets *assetSet

	csrfKey   []byte // derived from SigningKey: CSRF tokens
	deviceKey []byte // derived from SigningKey: device cookies
	login     *loginLimiter
	forms     *formCache
	limits    *keyStateMap // rate-limit state of playground requests, per tenant

	hashSlots chan struct{} // password hashes computed at once (hashSlot)
}

// Console returns the Extension that mounts the web console at /console:
// sign-in, the tenant pages (overview, adapters, playground, API keys,
// usage, settings), the operator pages (tenants, GPU and revenue) and
// each user's account page (a tenant's user changes the password). It
// needs Deps.Users, and Deps.Reporter for the usage pages.
func Console(cfg ConsoleConfig) Extension {
	return func(s *Server) error {
		if len(cfg.SigningKey) < 32 {
			return errors.New("console: the signing key must be at least 32 bytes")
		}
		if s.deps.Users == nil {
			return errors.New("console: Deps.Users is required")
		}
		if cfg.Static == nil || cfg.Templates == nil {
			return errors.New("console: the static files and templates are required")
		}
		cfg = cfg.withDefaults()
		cs := &console{s: s, cfg: cfg, users: s.deps.Users, limits: newKeyStateMap(),
			hashSlots: make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))}
		mac := hmac.New(sha256.New, cfg.SigningKey)
		mac.Write([]byte("nozzle console csrf"))
		cs.csrfKey = mac.Sum(nil)
		mac = hmac.New(sha256.New, cfg.SigningKey)
		mac.Write([]byte("nozzle console device"))
		cs.deviceKey = mac.Sum(nil)
		cs.login = newLoginLimiter(cfg.LoginPerEmail, cfg.LoginPerAddress, cfg.LoginWindow, cfg.Clock)
		cs.forms = newFormCache(10*time.Minute, cfg.Clock)
		var err error
		if cs.assets, err = newAssetSet(cfg.Static); err != nil {
			return fmt.Errorf("console assets: %w", err)
		}
		if cs.pages, err = cs.parsePages(cfg.Templates); err != nil {
			return fmt.Errorf("console templates: %w", err)
		}
		cs.mount()
		return nil
	}
}

// parsePages parses each page of pages/ with the shared layouts.
func (cs *console) parsePages(fsys fs.FS) (map[string]*template.Template, error) {
	names, err := fs.Glob(fsys, "pages/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		files := append(append([]string{}, cs.cfg.Layouts...), n)
		t, err := template.New("layout.html").Funcs(cs.funcs()).Funcs(batchFuncs).ParseFS(fsys, files...)
		if err != nil {
			return nil, err
		}
		out[strings.TrimSuffix(strings.TrimPrefix(n, "pages/"), ".html")] = t
	}
	return out, nil
}

// mount registers the console's routes.
//
//	GET    /console                          → the user's home page
//	GET    /console/static/{hashed name}     static files, cached for a year
//	GET    /console/login, POST              sign-in (per-email and per-address limits, per-device with a device cookie)
//	POST   /console/logout                   sign-out (revokes the session)
//	GET    /console/invite/{token}, POST     accept an invite: choose a password
//	GET    /console/{overview,adapters,playground,keys,usage,settings}   tenant pages
//	GET    /console/account                  the signed-in user's account (any role): a tenant's user changes the password
//	GET    /console/operator, /console/operator/tenants/{id}, /console/operator/tenants/{id}/usage, /console/operator/gpu
//	/console/api/...                         JSON for the pages' scripts (session + CSRF)
//
// The JSON routes reuse the gateway's tenant and admin handlers behind a
// console session, so the console behaves exactly like the API: the
// playground's chat is the /v1/chat/completions handler, metered the same.
func (cs *console) mount() {
	app := cs.s.app
	g := app.Group("/console", compress.New(compress.Config{
		Level: compress.LevelBestSpeed,
		// A streamed chat answer must not wait in a compressor.
		Next: func(c *fiber.Ctx) bool { return strings.HasSuffix(c.Path(), "/chat/completions") },
	}))
	g.Get("/static/:file", cs.static)
	g.Get("/", cs.home)
	g.Get("/login", cs.loginPage)
	g.Post("/login", cs.loginSubmit)
	g.Post("/logout", cs.logout)
	g.Get("/invite/:token", cs.invitePage)
	g.Post("/invite/:token", cs.inviteSubmit)

	tenant := cs.requireSession(nozzle.RoleTenant, false)
	g.Get("/overview", tenant, cs.pageHandler(cs.overviewPage))
	g.Get("/adapters", tenant, cs.pageHandler(cs.adaptersPage))
	g.Get("/playground", tenant, cs.pageHandler(cs.playgroundPage))
	g.Get("/keys", tenant, cs.pageHandler(cs.keysPage))
	g.Get("/usage", tenant, cs.pageHandler(cs.usagePage))
	g.Get("/settings", tenant, cs.pageHandler(cs.settingsPage))
	if cs.s.storesBatches() {
		g.Get("/batches", tenant, cs.pageHandler(cs.batchesPage))
	}

	g.Get("/account", cs.requireSession("", false), cs.pageHandler(cs.accountPage))

	operator := cs.requireSession(nozzle.RoleOperator, false)
	g.Get("/operator", operator, cs.pageHandler(cs.tenantsPage))
	g.Get("/operator/tenants/:id", operator, cs.pageHandler(cs.tenantPage))
	g.Get("/operator/tenants/:id/usage", operator, cs.pageHandler(cs.tenantUsagePage))
	g.Get("/operator/gpu", operator, cs.pageHandler(cs.gpuPage))

	api := g.Group("/api")
	tapi := cs.requireSession(nozzle.RoleTenant, true)
	s := cs.s
	api.Get("/adapters", tapi, cs.listAdapters)
	api.Post("/adapters", tapi, s.createAdapter)
	api.Delete("/adapters/:name", tapi, s.deleteAdapter)
	api.Get("/keys", tapi, s.listKeys)
	api.Post("/keys", tapi, cs.once(s.createKey))
	api.Delete("/keys/:id", tapi, s.revokeKey)
	api.Get("/usage", tapi, s.usage)
	api.Get("/usage/requests/:id", tapi, s.requestUsage)
	api.Get("/models", tapi, s.listModels)
	api.Post("/chat/completions", tapi, cs.playgroundLimits, s.chatCompletions)
	if s.storesBatches() {
		api.Get("/batches", tapi, s.listBatches)
		api.Post("/batches", tapi, cs.once(s.createBatch))
		api.Post("/files", tapi, s.createFile)
		api.Delete("/files/:id", tapi, s.deleteFile)
		api.Post("/batches/:id/cancel", tapi, s.cancelBatch)
		api.Get("/files/:id/content", tapi, cs.downloadFile)
	}

	api.Post("/account/password", cs.requireSession("", true), cs.changePassword)

	oapi := api.Group("/operator", cs.requireSession(nozzle.RoleOperator, true))
	oapi.Get("/tenants", s.listTenants)
	oapi.Post("/tenants", cs.once(s.createTenant))
	oapi.Patch("/tenants/:id", s.updateTenant)
	oapi.Post("/tenants/:id/prices", s.setTenantPrice)
	oapi.Post("/tenants/:id/users", cs.once(cs.createUser))
	oapi.Delete("/tenants/:id/keys/:key", cs.revokeTenantKey)
	oapi.Post("/users/:id/invite", cs.once(cs.reinvite))
	oapi.Patch("/users/:id", cs.updateUser)
	oapi.Post("/prices", s.setDefaultPrice)
	oapi.Get("/report", s.adminReport)

	// A typed or bookmarked address: signing out is a form's POST, and
	// any other page that does not exist is a page saying so, not JSON
	// (/console/api's callers read JSON, and get the API's 404).
	g.Get("/logout", func(c *fiber.Ctx) error { return c.Redirect("/console/login", fiber.StatusSeeOther) })
	g.Use(func(c *fiber.Ctx) error {
		if strings.HasPrefix(c.Path(), "/console/api/") {
			return c.Next()
		}
		if c.Method() == fiber.MethodPost {
			// A page's form sent by the browser itself: its script, which
			// sends it, has not run (not loaded yet, or blocked). The
			// forms post, so that what they hold (a first password) never
			// lands in an address.
			return cs.renderError(c, nozzle.Errorf(nozzle.EINVALID, "This form is sent by the page's script, which has not run: reload the page and try again."))
		}
		return cs.renderError(c, nozzle.Errorf(nozzle.ENOTFOUND, "There is no such page in the console."))
	})
}

// playgroundLimits applies the tenant's rate limits to playground
// requests (an API key's own limits do not apply: there is none).
func (cs *console) playgroundLimits(c *fiber.Ctx) error {
	if p := principalFrom(c); p != nil {
		p.state = cs.limits.get(p.tenant.ID)
	}
	return c.Next()
}
