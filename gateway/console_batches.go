package gateway

import (
	"context"
	"fmt"
	"html/template"
	"maps"
	"mime"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// The console's Batches page: a tenant's batches (the Batch API's, made
// with an API key) with their progress, their output and error files to
// download, and a cancel button. The page is rendered on the server; while
// a batch on it runs, the page's script reads /console/api/batches every
// few seconds and updates the rows' status and counts, and reloads the
// page once one ends, so that its files' links appear.

type batchesView struct {
	Batches []batchRowView
	// Newest and Older link to the first page and to the next older one
	// (the store pages forwards only); empty where there is none.
	Newest, Older string
	Active        bool   // a batch shown has not ended
	Example       string // a model for the example request line
	// The new batch form's bounds and choices.
	UploadLimit int64
	MaxRequests int
	Endpoints   []string
}

type batchRowView struct {
	*nozzle.Batch
	InputName string // the input file's name; empty when the file is gone
	Done      bool   // nozzle.BatchDone
	Percent   int    // lines answered, of Total
	// Shown are the first of the batch's errors (a failed validation
	// lists up to nozzle.MaxBatchErrors), More how many are left out.
	Shown []nozzle.BatchError
	More  int
}

// batchErrorsShown is how many of a batch's errors its row lists.
const batchErrorsShown = 3

// batchesPage lists the tenant's batches, newest first, a page at a time
// (forward only: the store pages after a batch's id).
func (cs *console) batchesPage(c *fiber.Ctx, sess *consoleSession) error {
	ctx := c.UserContext()
	after := c.Query("after")
	if after != "" && !validObjectID(batchPrefix, after) {
		after = "" // a stale or mistyped link: the first page
	}
	list, more, err := cs.s.deps.Batches.Batches(ctx, sess.tenant.ID, after, consolePageSize)
	if err != nil {
		return err
	}
	v := batchesView{Example: cs.s.baseModel().ID, UploadLimit: cs.s.cfg.FileUploadLimit, MaxRequests: nozzle.MaxBatchRequests,
		Endpoints: slices.Sorted(maps.Keys(batchEndpoints))}
	for _, b := range list {
		if b.TenantID != sess.tenant.ID {
			continue
		}
		if cur := cs.s.runner.current(b.ID); cur != nil {
			b = cur
		}
		v.Batches = append(v.Batches, cs.batchRow(ctx, b))
	}
	if after != "" {
		v.Newest = c.Path()
	}
	if n := len(v.Batches); n > 0 && more {
		v.Older = c.Path() + "?after=" + v.Batches[n-1].ID
	}
	for _, r := range v.Batches {
		v.Active = v.Active || !r.Done
	}
	return cs.page(c, "batches", v)
}

func (cs *console) batchRow(ctx context.Context, b *nozzle.Batch) batchRowView {
	r := batchRowView{Batch: b, Done: nozzle.BatchDone(b.Status)}
	if f, err := cs.s.deps.Batches.File(ctx, b.TenantID, b.InputFileID); err == nil && f.TenantID == b.TenantID {
		r.InputName = f.Filename
	}
	r.Shown = b.Errors[:min(len(b.Errors), batchErrorsShown)]
	r.More = len(b.Errors) - len(r.Shown)
	if b.Total > 0 {
		r.Percent = (b.Completed + b.Failed) * 100 / b.Total
	}
	return r
}

// downloadFile sends one of the tenant's files as the API's file content
// route does, as an attachment under the file's own name.
func (cs *console) downloadFile(c *fiber.Ctx) error {
	p := principalFrom(c)
	f, err := cs.s.lookupFile(c.UserContext(), p.tenant.ID, strings.Clone(c.Params("id")))
	if err != nil {
		return err
	}
	name := f.Filename
	if name == "" {
		name = f.ID + ".jsonl"
	}
	c.Set(fiber.HeaderContentDisposition, mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	return cs.s.sendFile(c, f)
}

// batchFuncs are the Batches page's template functions.
var batchFuncs = template.FuncMap{
	"count":       func(n int) string { return formatInt(int64(n)) },
	"batchStatus": batchStatusLabel,
	"batchBadge":  batchStatusBadge,
}

// batchStatusLabel is a batch status in words, for the page's badge.
func batchStatusLabel(status string) string {
	switch status {
	case nozzle.BatchValidating:
		return "Validating"
	case nozzle.BatchFailed:
		return "Failed"
	case nozzle.BatchInProgress:
		return "In progress"
	case nozzle.BatchFinalizing:
		return "Finalizing"
	case nozzle.BatchCompleted:
		return "Completed"
	case nozzle.BatchExpired:
		return "Expired"
	case nozzle.BatchCancelling:
		return "Cancelling"
	case nozzle.BatchCancelled:
		return "Cancelled"
	}
	return fmt.Sprintf("%q", status)
}

// batchStatusBadge is the badge class of a batch status.
func batchStatusBadge(status string) string {
	switch status {
	case nozzle.BatchCompleted:
		return "badge-ok"
	case nozzle.BatchFailed, nozzle.BatchExpired:
		return "badge-bad"
	case nozzle.BatchCancelled, nozzle.BatchCancelling:
		return "badge-muted"
	}
	return "badge-warn"
}
