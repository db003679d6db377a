package gateway

import (
	"bytes"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// routes registers the gateway's routes.
//
//	GET    /healthz                         alive
//	GET    /readyz                          200 once an upstream is healthy
//	GET    /metrics                         Prometheus text format
//	OPTIONS /v1/*                           CORS preflight (any origin, no credentials; the group's middleware)
//	GET    /v1/models                       inference scope
//	GET    /v1/models/{model}               inference scope
//	DELETE /v1/models/{model}               adapters scope (the adapter)
//	POST   /v1/completions                  inference scope
//	POST   /v1/chat/completions             inference scope
//	POST   /v1/responses                    inference scope
//	GET    /v1/responses/{id}               inference scope (a stored response)
//	DELETE /v1/responses/{id}               inference scope
//	GET    /v1/responses/{id}/input_items   inference scope
//	POST   /v1/conversations                inference scope (where Deps.Conversations is set)
//	GET    /v1/conversations/{id}           inference scope
//	POST   /v1/conversations/{id}           inference scope (its metadata)
//	DELETE /v1/conversations/{id}           inference scope
//	GET    /v1/conversations/{id}/items     inference scope
//	POST   /v1/conversations/{id}/items     inference scope
//	GET    /v1/conversations/{id}/items/{item_id}  inference scope
//	DELETE /v1/conversations/{id}/items/{item_id}  inference scope
//	POST   /v1/files                        inference scope (multipart upload; where Deps.Batches is set)
//	GET    /v1/files                        inference scope
//	GET    /v1/files/{id}                   inference scope
//	GET    /v1/files/{id}/content           inference scope
//	DELETE /v1/files/{id}                   inference scope
//	POST   /v1/batches                      inference scope
//	GET    /v1/batches                      inference scope
//	GET    /v1/batches/{id}                 inference scope
//	POST   /v1/batches/{id}/cancel          inference scope
//	POST   /v1/adapters                     adapters scope (multipart upload)
//	GET    /v1/adapters                     adapters scope
//	GET    /v1/adapters/{name}              adapters scope
//	DELETE /v1/adapters/{name}              adapters scope
//	GET    /v1/usage                        usage scope
//	GET    /v1/usage/requests/{id}          usage scope
//	POST   /v1/keys                         usage scope
//	GET    /v1/keys                         usage scope
//	DELETE /v1/keys/{id}                    usage scope
//	POST   /admin/tenants                   admin token
//	GET    /admin/tenants                   admin token
//	GET    /admin/tenants/{id}              admin token
//	PATCH  /admin/tenants/{id}              admin token
//	PUT    /admin/tenants/{id}/limits       admin token
//	POST   /admin/tenants/{id}/keys         admin token
//	GET    /admin/tenants/{id}/keys         admin token
//	DELETE /admin/tenants/{id}/keys/{key}   admin token
//	GET    /admin/tenants/{id}/prices       admin token
//	POST   /admin/tenants/{id}/prices       admin token
//	GET    /admin/prices                    admin token
//	POST   /admin/prices                    admin token
//	GET    /admin/report                    admin token
//	GET    /admin/upstreams                 admin token
//	GET    /internal/adapters/{sha256}/{file}  internal token
//	POST   /internal/capacity/pull              internal token
//
// Registered elsewhere: GET /admin/backup and POST /admin/ledger/check
// (maintenance.go, where the ledger offers them); the console under
// /console (console.go); adapter drops on runtimes go out, not in.
func (s *Server) routes() {
	app := s.app
	app.Use(s.front)

	app.Get("/healthz", s.healthz)
	app.Get("/readyz", s.readyz)
	app.Get("/metrics", s.metricsText)

	// The preflight is answered by the group's middleware rather than by
	// an OPTIONS route on every path: such a route would make fiber answer
	// an unknown /v1 URL (an endpoint Nozzle lacks, such as /v1/embeddings)
	// with 405 instead of 404.
	v1 := app.Group("/v1", cors)
	inference := s.RequireKey(nozzle.ScopeInference)
	v1.Get("/models", inference, s.listModels)
	v1.Get("/models/*", inference, s.getModel)
	v1.Post("/completions", inference, s.textCompletions)
	v1.Post("/chat/completions", inference, s.chatCompletions)
	v1.Post("/responses", inference, s.responses)
	v1.Get("/responses/:id", inference, s.getResponse)
	v1.Delete("/responses/:id", inference, s.deleteResponse)
	v1.Get("/responses/:id/input_items", inference, s.responseInputItems)
	if s.storesConversations() {
		v1.Post("/conversations", inference, s.createConversation)
		v1.Get("/conversations/:id", inference, s.getConversation)
		v1.Post("/conversations/:id", inference, s.updateConversation)
		v1.Delete("/conversations/:id", inference, s.deleteConversation)
		v1.Get("/conversations/:id/items", inference, s.listConversationItems)
		v1.Post("/conversations/:id/items", inference, s.addConversationItems)
		v1.Get("/conversations/:id/items/:item", inference, s.getConversationItem)
		v1.Delete("/conversations/:id/items/:item", inference, s.deleteConversationItem)
	}
	if s.storesBatches() {
		v1.Post("/files", inference, s.createFile)
		v1.Get("/files", inference, s.listFiles)
		v1.Get("/files/:id", inference, s.getFile)
		v1.Get("/files/:id/content", inference, s.fileContent)
		v1.Delete("/files/:id", inference, s.deleteFile)
		v1.Post("/batches", inference, s.createBatch)
		v1.Get("/batches", inference, s.listBatches)
		v1.Get("/batches/:id", inference, s.getBatch)
		v1.Post("/batches/:id/cancel", inference, s.cancelBatch)
	}

	adapters := s.RequireKey(nozzle.ScopeAdapters)
	v1.Delete("/models/*", adapters, s.deleteModel)
	v1.Post("/adapters", adapters, s.createAdapter)
	v1.Get("/adapters", adapters, s.listAdapters)
	v1.Get("/adapters/:name", adapters, s.getAdapter)
	v1.Delete("/adapters/:name", adapters, s.deleteAdapter)

	usageScope := s.RequireKey(nozzle.ScopeUsage)
	v1.Get("/usage", usageScope, s.usage)
	v1.Get("/usage/requests/:id", usageScope, s.requestUsage)
	v1.Post("/keys", usageScope, s.createKey)
	v1.Get("/keys", usageScope, s.listKeys)
	v1.Delete("/keys/:id", usageScope, s.revokeKey)

	admin := app.Group("/admin", s.RequireAdmin())
	admin.Post("/tenants", s.createTenant)
	admin.Get("/tenants", s.listTenants)
	admin.Get("/tenants/:id", s.getTenant)
	admin.Patch("/tenants/:id", s.updateTenant)
	admin.Put("/tenants/:id/limits", s.setTenantLimits)
	admin.Post("/tenants/:id/keys", s.adminCreateKey)
	admin.Get("/tenants/:id/keys", s.adminListKeys)
	admin.Delete("/tenants/:id/keys/:key", s.adminRevokeKey)
	admin.Get("/tenants/:id/prices", s.listTenantPrices)
	admin.Post("/tenants/:id/prices", s.setTenantPrice)
	admin.Get("/prices", s.listDefaultPrices)
	admin.Post("/prices", s.setDefaultPrice)
	admin.Get("/report", s.adminReport)
	admin.Get("/upstreams", s.listUpstreams)

	app.Get("/internal/adapters/:sha256/:file", s.requireInternal, s.adapterFile)
	app.Post("/internal/capacity/pull", s.requireInternal, s.pullCapacity)
}

// The API answers pages of any origin, as OpenAI's does (the SDKs'
// dangerouslyAllowBrowser): keys travel in the Authorization header, never
// in a cookie, and no answer allows credentials, so a page can do no more
// than the key it already holds allows. The console's cookie routes are
// not under /v1 and stay same-origin.
const (
	corsExpose  = "X-Request-Id, Retry-After, Retry-After-Ms, X-Should-Retry, X-Ratelimit-Limit-Requests, X-Ratelimit-Remaining-Requests, X-Ratelimit-Reset-Requests, X-Ratelimit-Limit-Tokens, X-Ratelimit-Remaining-Tokens, X-Ratelimit-Reset-Tokens"
	corsMethods = "GET, POST, DELETE"
	corsHeaders = "Authorization, Content-Type, Idempotency-Key, X-Request-Id, OpenAI-Organization, OpenAI-Project"
)

func cors(c *fiber.Ctx) error {
	if c.Get(fiber.HeaderOrigin) != "" {
		h := &c.Response().Header
		h.Set(fiber.HeaderAccessControlAllowOrigin, "*")
		h.Set(fiber.HeaderAccessControlExposeHeaders, corsExpose)
		h.Set(fiber.HeaderVary, fiber.HeaderOrigin)
	}
	if c.Method() == fiber.MethodOptions {
		return preflight(c)
	}
	return c.Next()
}

// preflight answers a browser's CORS preflight of an API call: the
// headers it asks to send (the SDKs add their own X-Stainless-* ones) and
// the API's methods.
func preflight(c *fiber.Ctx) error {
	h := &c.Response().Header
	h.Set(fiber.HeaderAccessControlAllowMethods, corsMethods)
	if req := c.Get(fiber.HeaderAccessControlRequestHeaders); req != "" && len(req) <= 2048 {
		h.Set(fiber.HeaderAccessControlAllowHeaders, req)
	} else {
		h.Set(fiber.HeaderAccessControlAllowHeaders, corsHeaders)
	}
	h.Set(fiber.HeaderAccessControlMaxAge, "600")
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

// ReleaseReady lets /readyz answer by the upstreams again
// (Config.HoldReady).
func (s *Server) ReleaseReady() { s.held.Store(false) }

// readyz answers 200 while at least one upstream's last health check
// succeeded.
func (s *Server) readyz(c *fiber.Ctx) error {
	if s.held.Load() {
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "The server is still starting.").WithReason("not_ready")
	}
	if !s.router.ready.Load() {
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "No runtime is ready yet.").WithReason("not_ready")
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

func (s *Server) metricsText(c *fiber.Ctx) error {
	var buf bytes.Buffer
	if _, err := s.cfg.Metrics.WriteTo(&buf); err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "text/plain; version=0.0.4; charset=utf-8")
	return c.Send(buf.Bytes())
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// pullCapacity handles POST /internal/capacity/pull: a runtime that is
// stopping asks for its last capacity interval to be collected now.
func (s *Server) pullCapacity(c *fiber.Ctx) error {
	if s.deps.PullCapacity == nil {
		return nozzle.Errorf(nozzle.ENOTFOUND, "This gateway collects no capacity.")
	}
	s.deps.PullCapacity()
	return c.SendStatus(fiber.StatusAccepted)
}

// adapterFile handles GET /internal/adapters/{sha256}/{file}: a remote
// runtime fetching a stored adapter file, streamed.
func (s *Server) adapterFile(c *fiber.Ctx) error {
	sha := strings.Clone(c.Params("sha256"))
	file := strings.Clone(c.Params("file"))
	if !validSHA256(sha) || (file != nozzle.AdapterConfigFile && file != nozzle.AdapterWeightsFile) {
		return nozzle.Errorf(nozzle.ENOTFOUND, "No such adapter file.")
	}
	rc, size, err := s.deps.Store.Open(c.UserContext(), sha, file)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEOctetStream)
	c.Response().SetBodyStream(rc, int(size))
	return nil
}
