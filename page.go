package nozzle

import "strconv"

// Page sizes of the list APIs. The default is large enough that a list
// of a usual size (a tenant's keys, most tenants' adapters) comes back
// whole, as every list did before lists had pages.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// Order is the direction in which a list is read.
type Order string

// The two orders of a list: each list says what it is ordered by.
const (
	Ascending  Order = "asc"
	Descending Order = "desc"
)

// PageQuery asks a list for one page, as OpenAI's list endpoints do: at
// most Limit objects, starting after the object After, or ending before
// the object Before (at most one of the two), in Order. A page's position
// is the object's place in the list's order, not an offset: paging while
// objects are added or removed never repeats or skips one that existed
// throughout.
type PageQuery struct {
	// Limit is how many objects at most, 1 to MaxPageLimit; 0 means
	// DefaultPageLimit.
	Limit int
	// After names an object by its id: the page is the objects that
	// follow it, in Order.
	After string
	// Before names an object by its id: the page is the objects that
	// come just before it, in Order (still listed in Order).
	Before string
	// Order is the list's direction; empty means the list's own default.
	Order Order
}

// PageLimit is q's limit, the default when it is unset.
func (q PageQuery) PageLimit() int {
	if q.Limit == 0 {
		return DefaultPageLimit
	}
	return q.Limit
}

// Validate refuses a limit out of range, an unknown order, and After with
// Before, in OpenAI's words (param and code set).
func (q PageQuery) Validate() error {
	switch {
	case q.Limit < 0:
		return LimitOutOfRange(strconv.Itoa(q.Limit), false)
	case q.Limit > MaxPageLimit:
		return LimitOutOfRange(strconv.Itoa(q.Limit), true)
	}
	switch q.Order {
	case "", Ascending, Descending:
	default:
		return Errorf(EINVALID, "Invalid value: '%s'. Supported values are: 'asc' and 'desc'.", q.Order).WithParam("order").WithReason("invalid_value")
	}
	if q.After != "" && q.Before != "" {
		return Errorf(EINVALID, "Give either 'after' or 'before', not both.").WithParam("before").WithReason("invalid_parameter_combination")
	}
	return nil
}

// LimitOutOfRange refuses a page limit (as written) below 1 or, when
// above is set, above MaxPageLimit, as OpenAI refuses an integer past its
// bound.
func LimitOutOfRange(literal string, above bool) *Error {
	if above {
		return Errorf(EINVALID, "Invalid 'limit': integer above maximum value. Expected a value <= %d, but got %s instead.", MaxPageLimit, literal).
			WithParam("limit").WithReason("integer_above_max_value")
	}
	return Errorf(EINVALID, "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got %s instead.", literal).
		WithParam("limit").WithReason("integer_below_min_value")
}

// UnknownCursor refuses an After or Before that names no object of the
// list: one that never existed, another tenant's, or one of another kind.
// The message is the same for all of them, so that a tenant cannot learn
// that another tenant's id exists.
func UnknownCursor(param, id string) *Error {
	return Errorf(EINVALID, "Invalid '%s': no object with id '%s' in this list.", param, id).WithParam(param).WithReason("invalid_value")
}

// Page is one page of a list.
type Page[T any] struct {
	Data []T
	// HasMore says whether the list goes on past the page in the
	// direction it was read: after its last object, or, for a page read
	// with Before, before its first.
	HasMore bool
}
