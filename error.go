package nozzle

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Application error codes. The gateway maps each code to one HTTP status and
// one OpenAI error type, in one place; no other package knows about HTTP.
const (
	EINVALID       = "invalid"                 // 400 invalid_request_error
	ECONTEXTLENGTH = "context_length_exceeded" // 400 invalid_request_error
	EUNAUTHORIZED  = "unauthorized"            // 401 invalid_request_error (as OpenAI)
	EFORBIDDEN     = "forbidden"               // 403 permission_error
	ENOTFOUND      = "not_found"               // 404 invalid_request_error (as OpenAI)
	EMETHOD        = "method_not_allowed"      // 405 invalid_request_error
	ECONFLICT      = "conflict"                // 409 conflict_error
	ETOOLARGE      = "too_large"               // 413 invalid_request_error
	ERATELIMIT     = "rate_limited"            // 429 rate_limit_error
	EQUOTA         = "quota_exceeded"          // 429 insufficient_quota
	EUNAVAILABLE   = "unavailable"             // 503 server_error
	ECANCELED      = "canceled"                // 499 (client went away)
	EINTERNAL      = "internal"                // 500 server_error
)

// Error is an application error: a code from the list above, a message safe
// to show to the caller, and optional detail.
//
// Internal details (file paths, engine messages, stack traces) never go into
// Message of an EINTERNAL error; they stay in the wrapped Err, which is logged
// and never sent to a client.
type Error struct {
	Code    string
	Message string
	// Param names the request field at fault, when there is one
	// (OpenAI's "param").
	Param string
	// Reason is a machine-readable reason (OpenAI's "code"), for example
	// "model_not_found", "invalid_api_key" or "rate_limit_exceeded".
	Reason string
	// RetryAfter, when positive, tells the caller when to try again.
	RetryAfter time.Duration
	// Err is the underlying cause, if any. It is never shown to a client.
	Err error
}

// Error implements the error interface.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	if e.Err != nil {
		// "The runtime cannot be reached: dial tcp …", not "reached.: dial"
		return strings.TrimSuffix(msg, ".") + ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an application error with the given code and a formatted
// message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithParam sets the offending request field and returns e.
func (e *Error) WithParam(param string) *Error { e.Param = param; return e }

// WithReason sets the machine-readable reason and returns e.
func (e *Error) WithReason(reason string) *Error { e.Reason = reason; return e }

// WithRetryAfter sets the retry delay and returns e.
func (e *Error) WithRetryAfter(d time.Duration) *Error { e.RetryAfter = d; return e }

// Wrap sets the underlying cause and returns e.
func (e *Error) Wrap(err error) *Error { e.Err = err; return e }

// ErrorCode returns the code of the application error in err's chain, or
// EINTERNAL when there is none. A nil error has no code.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of the application error in
// err's chain, or "Internal error." when there is none or it is internal.
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) && e.Code != EINTERNAL {
		return e.Message
	}
	return "Internal error."
}

// AsError returns the application error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
