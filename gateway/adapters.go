package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// adapterJSON is an adapter as the API shows it.
type adapterJSON struct {
	ID            string   `json:"id"`
	Object        string   `json:"object"`
	Name          string   `json:"name"`
	Rank          int      `json:"rank"`
	Alpha         float64  `json:"lora_alpha"`
	UseRSLoRA     bool     `json:"use_rslora"`
	TargetModules []string `json:"target_modules"`
	Layers        int      `json:"layers"`
	SizeBytes     int64    `json:"size_bytes"`
	SHA256        string   `json:"sha256"`
	BaseModel     string   `json:"base_model,omitempty"`
	Warnings      []string `json:"warnings,omitempty"`
	CreatedAt     int64    `json:"created_at"`
}

func toAdapterJSON(a *nozzle.Adapter) adapterJSON {
	mods := a.TargetModules
	if mods == nil {
		mods = []string{}
	}
	return adapterJSON{
		ID: a.ID, Object: "adapter", Name: a.Name, Rank: a.Rank, Alpha: a.Alpha, UseRSLoRA: a.UseRSLoRA,
		TargetModules: mods, Layers: a.Layers, SizeBytes: a.SizeBytes, SHA256: a.SHA256,
		BaseModel: a.BaseModel, Warnings: a.Warnings, CreatedAt: a.CreatedAt.Unix(),
	}
}

// uploadGuard keeps file removal from racing an import of the same
// content: files are removed only while no import is pending. (A delete
// that skips removal for that reason leaves the files for a later delete.)
type uploadGuard struct {
	mu      sync.Mutex
	pending int
	// sweep: files were left for later while imports were in flight;
	// the last import to finish sweeps the store.
	sweep bool
}

// removeIfUnused removes an adapter's stored files when no adapter uses
// them any more and no other import is in flight (self counts the caller's
// own pending import); otherwise the last import in flight to finish
// sweeps the store (endImport).
func (s *Server) removeIfUnused(ctx context.Context, sha string, self int) {
	s.uploads.mu.Lock()
	defer s.uploads.mu.Unlock()
	if s.uploads.pending > self {
		s.uploads.sweep = true
		return
	}
	refs, err := s.deps.Adapters.AdapterRefs(ctx, sha)
	if err != nil || refs > 0 {
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "count adapter references", slog.String("sha256", sha), slog.String("error", err.Error()))
		}
		return
	}
	if err := s.deps.Store.Remove(ctx, sha); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "remove adapter files", slog.String("sha256", sha), slog.String("error", err.Error()))
	}
}

// limitReader reads at most n bytes, then fails with errUploadTooLarge.
type limitReader struct {
	r io.Reader
	n int64
}

var errUploadTooLarge = errors.New("upload too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		// Probe: is there more?
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, errUploadTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// upload is what a multipart adapter upload carried.
type upload struct {
	name        string
	haveName    bool
	files       map[string]bool // PEFT files written to dir
	archive     string          // path of the saved archive
	archiveName string
}

func uploadError(param, format string, args ...any) error {
	return nozzle.Errorf(nozzle.EINVALID, format, args...).WithParam(param)
}

// multipartUpload checks an upload's headers: a multipart/form-data body
// with a boundary (fields names the fields it should carry), not
// content-encoded, its declared length within limit (else tooLarge). It
// returns the boundary.
func multipartUpload(c *fiber.Ctx, fields string, limit int64, tooLarge error) (string, error) {
	mt, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return "", nozzle.Errorf(nozzle.EINVALID, "Expected a multipart/form-data body with the fields %s.", fields)
	}
	if err := refuseEncoded(&c.Request().Header); err != nil {
		return "", err
	}
	if cl := c.Request().Header.ContentLength(); int64(cl) > limit {
		return "", tooLarge
	}
	return params["boundary"], nil
}

// takeUploadSlot takes one of the tenant's TenantUploads upload slots
// (s.uploading.release gives it back), or refuses the upload of more
// (what: "adapters", "files") with a 429.
func (s *Server) takeUploadSlot(tenantID, what string) error {
	if s.uploading.takeOne(tenantID, s.cfg.TenantUploads) {
		return nil
	}
	return nozzle.Errorf(nozzle.ERATELIMIT, "Too many uploads in progress: this organization may upload %d %s at once. Try again when one has finished.", s.cfg.TenantUploads, what).
		WithReason("too_many_uploads_in_flight").WithRetryAfter(5 * time.Second)
}

// uploadStream is the request's body as it arrives (the whole body where
// the server has read it already), read within UploadTimeout.
func (s *Server) uploadStream(c *fiber.Ctx) io.Reader {
	if conn := c.Context().Conn(); conn != nil {
		_ = conn.SetReadDeadline(time.Now().Add(s.cfg.UploadTimeout))
	}
	if body := c.Context().RequestBodyStream(); body != nil {
		return body
	}
	return bytes.NewReader(c.Request().Body())
}

// createAdapter handles POST /v1/adapters: a multipart upload streamed to
// a staging folder, validated and imported by the AdapterStore, then
// recorded. Nothing is left behind on failure.
func (s *Server) createAdapter(c *fiber.Ctx) (retErr error) {
	p := principalFrom(c)
	limit := s.cfg.UploadLimit
	boundary, err := multipartUpload(c, "name and adapter_config.json + adapter_model.safetensors, or archive", limit, errTooLarge(limit))
	if err != nil {
		return err
	}
	// One tenant's uploads neither fill the disk nor keep it busy: a few
	// at a time, within its storage quota.
	if err := s.takeUploadSlot(p.tenant.ID, "adapters"); err != nil {
		return err
	}
	defer s.uploading.release(p.tenant.ID, 1)
	// A tenant's adapters stay within its storage quota: an upload that
	// cannot fit is refused before it is received, and one that turns out
	// not to fit is not kept.
	quota, used := s.cfg.TenantAdapterBytes, int64(0)
	if quota > 0 {
		if used, err = s.adapterBytes(c.UserContext(), p.tenant.ID); err != nil {
			return err
		}
		// the multipart body is the files and a little framing
		room := quota - used + multipartSlack
		if cl := c.Request().Header.ContentLength(); used >= quota || int64(cl) > room {
			return storageFull(used, quota)
		}
		if room < limit {
			limit = room
			defer func() { // an upload cut at the quota says so
				if e := nozzle.AsError(retErr); e != nil && e.Code == nozzle.ETOOLARGE && e.Reason != storageFullReason {
					retErr = storageFull(used, quota)
				}
			}()
		}
	}
	body := s.uploadStream(c)
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.UploadTimeout)
	defer cancel()

	dir, err := os.MkdirTemp(s.cfg.UploadDir, "upload-*")
	if err != nil {
		return fmt.Errorf("create upload dir: %w", err)
	}
	defer os.RemoveAll(dir)

	lr := &limitReader{r: body, n: limit}
	up, err := s.readUpload(ctx, p, multipart.NewReader(lr, boundary), dir)
	if errors.Is(err, errUploadTooLarge) {
		return errTooLarge(limit)
	}
	if err != nil {
		return err
	}
	// Drain the epilogue so the connection can be reused.
	if _, err := io.Copy(io.Discard, lr); err == nil {
		stateOf(c).bodyConsumed = true
	}

	if !up.haveName {
		return uploadError("name", "Missing required field: name.")
	}
	if up.archive != "" {
		if len(up.files) > 0 {
			return uploadError("archive", "Send either an archive or the files adapter_config.json and adapter_model.safetensors, not both.")
		}
		if err := extractArchive(up.archive, up.archiveName, dir, limit); err != nil {
			return err
		}
		if err := os.Remove(up.archive); err != nil {
			return fmt.Errorf("remove archive: %w", err)
		}
	} else {
		for _, want := range []string{nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile} {
			if !up.files[want] {
				return uploadError(want, "Missing required file: %s (or send one archive).", want)
			}
		}
	}

	s.uploads.mu.Lock()
	s.uploads.pending++
	s.uploads.mu.Unlock()
	defer s.endImport(context.WithoutCancel(ctx))
	// The store consumes dir whatever happens; the deferred RemoveAll covers
	// a store that does not.
	m, err := s.deps.Store.Import(ctx, dir)
	if err != nil {
		return err
	}
	a := &nozzle.Adapter{TenantID: p.tenant.ID, Name: up.name, AdapterManifest: *m}
	if err := s.createWithinQuota(ctx, a, quota); err != nil {
		s.removeIfUnused(context.WithoutCancel(ctx), m.SHA256, 1)
		if nozzle.ErrorCode(err) == nozzle.ECONFLICT {
			return adapterExists(up.name)
		}
		return err
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "adapter created", slog.String("tenant_id", p.tenant.ID),
		slog.String("adapter", a.Name), slog.String("sha256", a.SHA256), slog.Int64("size_bytes", a.SizeBytes))
	return c.Status(fiber.StatusCreated).JSON(toAdapterJSON(a))
}

// createWithinQuota records a, unless the tenant's adapters would then
// pass quota (0: no cap). The check counts the adapters recorded now, not
// when the upload began, and is made with the record under one lock, so
// that uploads in flight together cannot each fit on their own and pass
// the quota together.
func (s *Server) createWithinQuota(ctx context.Context, a *nozzle.Adapter, quota int64) error {
	if quota <= 0 {
		return s.deps.Adapters.CreateAdapter(ctx, a)
	}
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	used, err := s.adapterBytes(ctx, a.TenantID)
	if err != nil {
		return err
	}
	if used+a.SizeBytes > quota {
		return storageFull(used, quota)
	}
	return s.deps.Adapters.CreateAdapter(ctx, a)
}

// adapterBytes is the sum of the sizes of a tenant's adapters, read from
// the running total the adapter service keeps (one read, however many
// adapters the tenant has).
func (s *Server) adapterBytes(ctx context.Context, tenantID string) (int64, error) {
	return s.deps.Adapters.AdapterStorageUsed(ctx, tenantID)
}

// multipartSlack is what an upload's multipart framing may add to its
// files, at most.
const multipartSlack = 64 << 10

// storageFull refuses an upload past the tenant's adapter storage quota.
func storageFull(used, quota int64) error {
	return nozzle.Errorf(nozzle.ETOOLARGE, "This upload would take this organization's adapters past their storage quota of %s (%s used). Delete adapters it no longer needs, or ask the operator for more.",
		formatBytes(quota), formatBytes(used)).WithParam("adapter_model.safetensors").WithReason(storageFullReason)
}

const storageFullReason = "adapter_storage_full"

// endImport ends an import in flight; the last one sweeps the store if a
// removal was left for later meanwhile.
func (s *Server) endImport(ctx context.Context) {
	s.uploads.mu.Lock()
	defer s.uploads.mu.Unlock()
	s.uploads.pending--
	if s.uploads.pending == 0 && s.uploads.sweep {
		s.uploads.sweep = false
		s.sweepStoreLocked(ctx)
	}
}

// SweepStore removes the stored adapter files no adapter uses: those of
// an upload whose record a crash kept from being written, or of an
// adapter whose deletion a crash cut short. It runs when the gateway
// starts, and after removals left for later while uploads were importing.
func (s *Server) SweepStore(ctx context.Context) {
	s.uploads.mu.Lock()
	defer s.uploads.mu.Unlock()
	if s.uploads.pending > 0 {
		s.uploads.sweep = true
		return
	}
	s.sweepStoreLocked(ctx)
}

// sweepStoreLocked sweeps the store; s.uploads.mu is held and no import
// is in flight, so every stored adapter in use has its record.
func (s *Server) sweepStoreLocked(ctx context.Context) {
	shas, err := s.deps.Store.Stored(ctx)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "list stored adapters", slog.String("error", err.Error()))
		return
	}
	for _, sha := range shas {
		refs, err := s.deps.Adapters.AdapterRefs(ctx, sha)
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "count adapter references", slog.String("sha256", sha), slog.String("error", err.Error()))
			return
		}
		if refs > 0 {
			continue
		}
		if err := s.deps.Store.Remove(ctx, sha); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "remove adapter files", slog.String("sha256", sha), slog.String("error", err.Error()))
			continue
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "removed adapter files no adapter uses", slog.String("sha256", sha))
	}
}

func adapterExists(name string) error {
	return nozzle.Errorf(nozzle.ECONFLICT, "An adapter named %q already exists.", name).WithParam("name").WithReason("adapter_exists")
}

// readUpload reads the parts of an upload, writing files into dir.
func (s *Server) readUpload(ctx context.Context, p *principal, mr *multipart.Reader, dir string) (*upload, error) {
	up := &upload{files: map[string]bool{}}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return up, nil
		}
		if err != nil {
			if errors.Is(err, errUploadTooLarge) {
				return nil, err
			}
			return nil, nozzle.Errorf(nozzle.EINVALID, "The multipart body is malformed or truncated.").Wrap(err)
		}
		field := part.FormName()
		file := filepath.Base(part.FileName())
		if (field == "file" || field == "files") && (file == nozzle.AdapterConfigFile || file == nozzle.AdapterWeightsFile) {
			field = file
		}
		switch field {
		case "name":
			b, err := io.ReadAll(io.LimitReader(part, 257))
			if err != nil {
				return nil, readPartError(err)
			}
			if len(b) > 256 || up.haveName {
				return nil, uploadError("name", "Invalid field: name.")
			}
			up.name, up.haveName = strings.TrimSpace(string(b)), true
			if err := nozzle.ValidateAdapterName(up.name); err != nil {
				return nil, err
			}
			if info, ok := s.router.modelInfo(); ok && up.name == info.ID {
				return nil, nozzle.Errorf(nozzle.EINVALID, "Adapter name %q is reserved: it is the base model's id, which requests use to name the base model.", up.name).WithParam("name")
			}
			// Refuse a taken name before receiving the files.
			if _, err := s.deps.Adapters.Adapter(ctx, p.tenant.ID, up.name); err == nil {
				return nil, adapterExists(up.name)
			} else if nozzle.ErrorCode(err) != nozzle.ENOTFOUND {
				return nil, err
			}
		case nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile:
			if up.files[field] {
				return nil, uploadError(field, "The file %s was sent more than once.", field)
			}
			max := s.cfg.UploadLimit
			if field == nozzle.AdapterConfigFile {
				max = maxConfigBytes
			}
			if err := saveFile(filepath.Join(dir, field), part, max, field); err != nil {
				return nil, err
			}
			up.files[field] = true
		case "archive":
			if up.archive != "" {
				return nil, uploadError("archive", "Only one archive may be sent.")
			}
			up.archive = filepath.Join(dir, ".archive")
			up.archiveName = part.FileName()
			if err := saveFile(up.archive, part, s.cfg.UploadLimit, "archive"); err != nil {
				return nil, err
			}
		default:
			return nil, uploadError(part.FormName(), "Unexpected field %q: send name, adapter_config.json and adapter_model.safetensors, or archive.", part.FormName())
		}
	}
}

func readPartError(err error) error {
	if errors.Is(err, errUploadTooLarge) {
		return err
	}
	return nozzle.Errorf(nozzle.EINVALID, "The multipart body is malformed or truncated.").Wrap(err)
}

// saveFile writes a part to path, at most max bytes.
func saveFile(path string, r io.Reader, max int64, param string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create upload file: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if cerr := f.Close(); err == nil && cerr != nil {
		return fmt.Errorf("write upload file: %w", cerr)
	}
	if err != nil {
		return readPartError(err)
	}
	if n > max {
		return nozzle.Errorf(nozzle.ETOOLARGE, "The file %s is too large: the limit is %d bytes.", param, max).WithParam(param)
	}
	if n == 0 {
		return uploadError(param, "The file %s is empty.", param)
	}
	return nil
}

// listAdapters handles GET /v1/adapters: a page of the tenant's adapters,
// by name.
func (s *Server) listAdapters(c *fiber.Ctx) error {
	p := principalFrom(c)
	q, err := pageQuery(c)
	if err != nil {
		return err
	}
	page, err := s.deps.Adapters.AdapterPage(c.UserContext(), p.tenant.ID, q)
	if err != nil {
		return err
	}
	out := make([]adapterJSON, 0, len(page.Data))
	for _, a := range page.Data {
		out = append(out, toAdapterJSON(a))
	}
	return writePage(c, out, func(a adapterJSON) string { return a.ID }, page.HasMore)
}

func adapterNotFound(name string) error {
	return nozzle.Errorf(nozzle.ENOTFOUND, "No adapter named %q.", name).WithParam("name").WithReason("adapter_not_found")
}

// adapterParam returns the :name of the route, or "not found" for a name
// that no adapter can have.
func adapterParam(c *fiber.Ctx) (string, error) {
	name := strings.Clone(c.Params("name"))
	if nozzle.ValidateAdapterName(name) != nil {
		return "", adapterNotFound(name)
	}
	return name, nil
}

func (s *Server) getAdapter(c *fiber.Ctx) error {
	p := principalFrom(c)
	name, err := adapterParam(c)
	if err != nil {
		return err
	}
	a, err := s.deps.Adapters.Adapter(c.UserContext(), p.tenant.ID, name)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return adapterNotFound(name)
		}
		return err
	}
	return c.JSON(toAdapterJSON(a))
}

func (s *Server) deleteAdapter(c *fiber.Ctx) error {
	p := principalFrom(c)
	name, err := adapterParam(c)
	if err != nil {
		return err
	}
	a, err := s.removeAdapter(c.UserContext(), p.tenant.ID, name)
	if err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return adapterNotFound(name)
		}
		return err
	}
	return c.JSON(fiber.Map{"id": a.ID, "object": "adapter", "name": a.Name, "deleted": true})
}

// removeAdapter deletes the tenant's adapter name and, when no adapter
// (of any tenant: content is stored once for all) has its content any
// more, its files, and has every runtime drop its weights once the
// sequences using them are done.
func (s *Server) removeAdapter(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
	a, err := s.deps.Adapters.DeleteAdapter(ctx, tenantID, name)
	if err != nil {
		return nil, err
	}
	s.removeIfUnused(ctx, a.SHA256, 0)
	if s.contentUnused(ctx, a.SHA256) {
		s.router.dropAdapter(ctx, a.SHA256)
	}
	return a, nil
}

// contentUnused reports whether no adapter of any tenant has the content
// sha: the runtimes may then drop it. When that cannot be known, it says
// no: the adapter then leaves the runtimes' caches by their budgets.
func (s *Server) contentUnused(ctx context.Context, sha string) bool {
	refs, err := s.deps.Adapters.AdapterRefs(ctx, sha)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "count adapter references", slog.String("sha256", sha), slog.String("error", err.Error()))
		return false
	}
	return refs == 0
}
