package gateway

import (
	"errors"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// pageQuery reads a list's page parameters, as OpenAI's list endpoints
// take them: limit (1 to nozzle.MaxPageLimit, default
// nozzle.DefaultPageLimit), after or before (an object's id) and order
// (asc or desc). A limit that is not an integer, or is out of range, is
// refused in OpenAI's words; the list's service checks the cursor.
func pageQuery(c *fiber.Ctx) (nozzle.PageQuery, error) {
	var q nozzle.PageQuery
	args := c.Context().QueryArgs()
	if args.Has("limit") {
		n, err := parseLimit(string(args.Peek("limit")))
		if err != nil {
			return q, err
		}
		q.Limit = n
	}
	q.After = strings.Clone(c.Query("after"))
	q.Before = strings.Clone(c.Query("before"))
	q.Order = nozzle.Order(strings.Clone(c.Query("order")))
	return q, q.Validate()
}

// parseLimit reads a limit as written in the query.
func parseLimit(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		if ne := (*strconv.NumError)(nil); errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return 0, nozzle.LimitOutOfRange(v, !strings.HasPrefix(v, "-"))
		}
		if _, ferr := strconv.ParseFloat(v, 64); ferr == nil && v != "" && !strings.ContainsAny(v, "nNiI") {
			return 0, invalidAs("invalid_type", "limit", "Invalid type for 'limit': expected an integer, but got a decimal number instead.")
		}
		return 0, invalidAs("invalid_type", "limit", "Invalid type for 'limit': expected an integer, but got a string instead.")
	}
	if n < 1 || n > nozzle.MaxPageLimit {
		return 0, nozzle.LimitOutOfRange(v, n > nozzle.MaxPageLimit)
	}
	return n, nil
}

// listPage is a page of a list in OpenAI's shape: the list's objects, the
// ids of the first and last (null when the page is empty), and whether
// the list goes on past the page.
type listPage[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// writePage answers with one page of a list.
func writePage[T any](c *fiber.Ctx, data []T, id func(T) string, hasMore bool) error {
	out := listPage[T]{Object: "list", Data: data, HasMore: hasMore}
	if out.Data == nil {
		out.Data = []T{}
	}
	if n := len(data); n > 0 {
		first, last := id(data[0]), id(data[n-1])
		out.FirstID, out.LastID = &first, &last
	}
	return c.JSON(out)
}
