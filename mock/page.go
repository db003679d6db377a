package mock

import (
	"slices"

	"github.com/nozzle-ai/nozzle"
)

// Paginate returns one page of a whole list, as the root package's page
// methods define it: list holds every object in the list's ascending
// order, id names an object, keep (nil: all) picks the objects a page
// shows, and def is the list's default order. A cursor names any object
// of list, kept or not; one that names none is EINVALID
// (nozzle.UnknownCursor). The ledger reads pages from its indexes; this
// is the same answer over a slice, for the mocks behind the gateway's
// tests.
func Paginate[T any](list []T, id func(T) string, keep func(T) bool, def nozzle.Order, q nozzle.PageQuery) (*nozzle.Page[T], error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	order := q.Order
	if order == "" {
		order = def
	}
	list = slices.Clone(list)
	if order == nozzle.Descending {
		slices.Reverse(list)
	}
	start, step := 0, 1 // where the page starts in list, and which way it is read
	param, cursor := "after", q.After
	if q.Before != "" {
		param, cursor = "before", q.Before
	}
	if cursor != "" {
		i := slices.IndexFunc(list, func(x T) bool { return id(x) == cursor })
		if i < 0 {
			return nil, nozzle.UnknownCursor(param, cursor)
		}
		start = i + 1
		if param == "before" {
			start, step = i-1, -1
		}
	}
	page := &nozzle.Page[T]{}
	for i := start; i >= 0 && i < len(list); i += step {
		if keep != nil && !keep(list[i]) {
			continue
		}
		if len(page.Data) == q.PageLimit() {
			page.HasMore = true
			break
		}
		page.Data = append(page.Data, list[i])
	}
	if step < 0 {
		slices.Reverse(page.Data)
	}
	return page, nil
}
