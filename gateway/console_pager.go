package gateway

import (
	"context"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// consolePageSize is how many rows a console list shows at a time.
const consolePageSize = 50

// pager is a console list's links to its previous and next pages (empty
// where there is none), server-rendered: the page's address names the
// page by its cursor (after or before an object's id, under the list's
// own prefix where a page shows two lists), so a link, the browser's Back
// and a reload all show the same rows.
type pager struct {
	Label      string // names the list to screen readers
	Prev, Next string
}

// consolePageQuery is the page of a list a console address asks for.
func consolePageQuery(c *fiber.Ctx, prefix string) nozzle.PageQuery {
	return nozzle.PageQuery{Limit: consolePageSize, After: c.Query(prefix + "after"), Before: c.Query(prefix + "before")}
}

// readConsolePage reads the page of a list the address asks for. A cursor
// that names nothing in the list any more (an object deleted since, a
// stale bookmark), or a page left empty by deletions, shows the list's
// first page instead of an error.
func readConsolePage[T any](ctx context.Context, c *fiber.Ctx, prefix string, read func(context.Context, nozzle.PageQuery) (*nozzle.Page[T], error)) (*nozzle.Page[T], nozzle.PageQuery, error) {
	q := consolePageQuery(c, prefix)
	page, err := read(ctx, q)
	cursor := q.After != "" || q.Before != ""
	if cursor && (nozzle.ErrorCode(err) == nozzle.EINVALID || err == nil && len(page.Data) == 0) {
		q = nozzle.PageQuery{Limit: consolePageSize}
		page, err = read(ctx, q)
	}
	return page, q, err
}

// pageLinks returns the links around a page read with q, whose first and
// last rows have the given ids: the current address with the list's
// cursor replaced (the other parameters, another list's cursor included,
// kept).
func pageLinks(c *fiber.Ctx, label, prefix string, q nozzle.PageQuery, n int, firstID, lastID string, hasMore bool) pager {
	p := pager{Label: label}
	if n == 0 {
		return p
	}
	link := func(param, id string) string {
		args := fiber.AcquireArgs()
		defer fiber.ReleaseArgs(args)
		c.Context().QueryArgs().CopyTo(args)
		args.Del(prefix + "after")
		args.Del(prefix + "before")
		args.Set(prefix+param, id)
		return c.Path() + "?" + args.String()
	}
	// Read forwards, the list goes on if hasMore; read backwards (Before),
	// it goes on past the page's end, where the cursor was, and back
	// before it if hasMore.
	if (q.Before == "" && hasMore) || q.Before != "" {
		p.Next = link("after", lastID)
	}
	if q.After != "" || (q.Before != "" && hasMore) {
		p.Prev = link("before", firstID)
	}
	return p
}
