package gateway

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// errorKind is how one application error code is shown over HTTP.
type errorKind struct {
	status int
	typ    string // OpenAI's error "type"
}

// errorKinds maps every nozzle error code to its HTTP status and OpenAI
// error type. It is the only place where codes meet HTTP.
var errorKinds = map[string]errorKind{
	nozzle.EINVALID:       {http.StatusBadRequest, "invalid_request_error"},
	nozzle.ECONTEXTLENGTH: {http.StatusBadRequest, "invalid_request_error"},
	nozzle.EUNAUTHORIZED:  {http.StatusUnauthorized, "invalid_request_error"},
	nozzle.EFORBIDDEN:     {http.StatusForbidden, "permission_error"},
	nozzle.ENOTFOUND:      {http.StatusNotFound, "invalid_request_error"},
	nozzle.EMETHOD:        {http.StatusMethodNotAllowed, "invalid_request_error"},
	nozzle.ECONFLICT:      {http.StatusConflict, "conflict_error"},
	nozzle.ETOOLARGE:      {http.StatusRequestEntityTooLarge, "invalid_request_error"},
	nozzle.ERATELIMIT:     {http.StatusTooManyRequests, "rate_limit_error"},
	nozzle.EQUOTA:         {http.StatusTooManyRequests, "insufficient_quota"},
	nozzle.EUNAVAILABLE:   {http.StatusServiceUnavailable, "server_error"},
	nozzle.ECANCELED:      {499, "invalid_request_error"},
	nozzle.EINTERNAL:      {http.StatusInternalServerError, "server_error"},
}

// defaultReasons fill OpenAI's "code" when an error carries no reason.
var defaultReasons = map[string]string{
	nozzle.ECONTEXTLENGTH: "context_length_exceeded",
	nozzle.EUNAUTHORIZED:  "invalid_api_key",
	nozzle.ERATELIMIT:     "rate_limit_exceeded",
	nozzle.EQUOTA:         "insufficient_quota",
}

// toAppError turns any error a handler returned into an application error:
// fiber's own errors (unknown route, wrong method, ...) get the code of
// their status.
func toAppError(err error) *nozzle.Error {
	if e := nozzle.AsError(err); e != nil {
		return e
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case http.StatusNotFound:
			return nozzle.Errorf(nozzle.ENOTFOUND, "Unknown request URL. Please check the URL and method.").WithReason("unknown_url")
		case http.StatusMethodNotAllowed:
			return nozzle.Errorf(nozzle.EMETHOD, "Method not allowed for this URL.").WithReason("method_not_allowed")
		case http.StatusRequestEntityTooLarge:
			return nozzle.Errorf(nozzle.ETOOLARGE, "The request body is too large.")
		case http.StatusRequestTimeout:
			return nozzle.Errorf(nozzle.EINVALID, "The request took too long to arrive.").WithReason("request_timeout")
		case http.StatusRequestHeaderFieldsTooLarge:
			return nozzle.Errorf(nozzle.EINVALID, "The request headers are too large.")
		}
		if fe.Code >= 400 && fe.Code < 500 {
			return nozzle.Errorf(nozzle.EINVALID, "Bad request.")
		}
	}
	return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: err}
}

// noRetry holds the error codes of answers with a status that clients
// retry by default (409, 429, 5xx) where a retry of the same request
// cannot succeed or would only cost: a reused idempotency key, an
// exhausted budget, a request larger than the whole per-minute token
// limit, a generation that ran past the request timeout (a retry runs it
// all again, unbilled, for as long).
var noRetry = map[string]bool{"idempotency_key_reused": true, "insufficient_quota": true, "request_too_large": true,
	"timeout": true}

// errorHandler renders err OpenAI-shaped: {"error": {"message", "type",
// "param", "code"}} with the status of its code. Internal errors are logged
// here, with the request id, and shown only as "Internal error.".
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	e := toAppError(err)
	kind, ok := errorKinds[e.Code]
	if !ok {
		kind = errorKinds[nozzle.EINTERNAL]
	}
	msg := e.Message
	switch e.Reason {
	case "unknown_url", "method_not_allowed":
		// Name what was asked for, as OpenAI's "Unknown request URL: POST
		// /v1/embeddings." does: a typo or a wrong base URL shows at once.
		var allow []string
		if e.Reason == "method_not_allowed" {
			// and, as a 405 must (RFC 9110), the methods the URL takes
			if allow = allowedMethods(c); len(allow) > 0 {
				c.Set(fiber.HeaderAllow, strings.Join(allow, ", "))
			}
		}
		msg = routeErrorMessage(e.Reason, c.Method(), c.Path(), allow)
	}
	if e.Code == nozzle.EINTERNAL {
		msg = "Internal error."
		s.log.LogAttrs(c.UserContext(), slog.LevelError, "internal error",
			slog.String("request_id", requestID(c)),
			slog.String("method", c.Method()),
			slog.String("path", c.Path()),
			slog.String("error", err.Error()))
	}
	reason := e.Reason
	if reason == "" {
		reason = defaultReasons[e.Code]
	}
	if e.RetryAfter > 0 {
		// Whole seconds in Retry-After; the OpenAI SDKs read the exact
		// wait from Retry-After-Ms first.
		c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(int64(math.Ceil(e.RetryAfter.Seconds())), 10))
		c.Set("Retry-After-Ms", strconv.FormatInt((e.RetryAfter+time.Millisecond-1).Milliseconds(), 10))
	}
	if noRetry[reason] {
		// The OpenAI SDKs retry a 409 or 429 by default, unless told not to.
		c.Set("X-Should-Retry", "false")
	}
	if kind.status == http.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="nozzle"`)
	}
	if st := stateOf(c); st != nil && st.status == 0 {
		st.errCode = e.Code
	}
	buf := make([]byte, 0, 128+len(msg))
	buf = appendErrorBody(buf, msg, kind.typ, e.Param, reason)
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(kind.status).Send(buf)
}

// routeErrorMessage is the message of a request no route takes: an unknown
// URL, or a known one asked with another method. The path is cut to 200
// bytes (on a character boundary).
func routeErrorMessage(reason, method, path string, allow []string) string {
	if len(path) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(path[cut]) {
			cut--
		}
		path = path[:cut] + "…"
	}
	if reason == "method_not_allowed" {
		if len(allow) > 0 {
			return "Method not allowed: " + method + " " + path + ". This URL takes " + strings.Join(allow, ", ") + "."
		}
		return "Method not allowed: " + method + " " + path + ". Please check the method."
	}
	msg := "Unknown request URL: " + method + " " + path + ". Please check the URL for typos"
	if !strings.HasPrefix(path, "/v1/") && !strings.HasPrefix(path, "/admin/") && !strings.HasPrefix(path, "/console") {
		// most likely a base URL without /v1
		msg += " (the OpenAI-compatible endpoints are under /v1)"
	}
	return msg + "."
}

// allowedMethods lists the methods for which a route of c's app matches
// c's path (HEAD with GET, as fiber serves it), in fiber's order of methods.
// Middleware mounted on a prefix does not count: its pattern is the prefix
// alone, which a path past it does not match.
func allowedMethods(c *fiber.Ctx) []string {
	path, cfg := c.Path(), c.App().Config()
	var out []string
	for _, routes := range c.App().Stack() {
		for _, r := range routes {
			if r.Path != "/" && fiber.RoutePatternMatch(path, r.Path, cfg) {
				out = append(out, r.Method)
				break
			}
		}
	}
	return out
}

// appendErrorBody appends an OpenAI error object.
func appendErrorBody(dst []byte, msg, typ, param, code string) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = appendString(dst, msg)
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, typ)
	dst = append(dst, `,"param":`...)
	dst = appendNullableString(dst, param)
	dst = append(dst, `,"code":`...)
	dst = appendNullableString(dst, code)
	return append(dst, "}}"...)
}

// statusOf returns the HTTP status of an error's code.
func statusOf(err error) int {
	if k, ok := errorKinds[nozzle.ErrorCode(err)]; ok {
		return k.status
	}
	return http.StatusInternalServerError
}
