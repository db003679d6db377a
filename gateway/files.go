package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// The Files API (files of purpose "batch", the batch runner's output files
// of purpose "batch_output"). A file's record is in the BatchStore, its
// contents in Config.FilesDir under its id: an upload is streamed to a
// temporary file in UploadDir within FileUploadLimit, moved into FilesDir,
// then recorded (a crash between the two leaves contents no record names,
// never a record without contents).

// fileJSON is a file as the API shows it (the SDK's FileObject).
type fileJSON struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

func toFileJSON(f *nozzle.File) fileJSON {
	return fileJSON{ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.Created.Unix(), Filename: f.Filename, Purpose: f.Purpose, Status: "processed"}
}

// newObjectID returns prefix, 12 hex digits of the time in milliseconds
// and 16 random ones: a tenant's ids sort by creation.
func newObjectID(prefix string, now time.Time) string {
	var b [14]byte
	ms := uint64(now.UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	_, _ = rand.Read(b[6:])
	return prefix + hex.EncodeToString(b[:])
}

// validObjectID reports whether id is one newObjectID could have made with
// prefix: ids name files on disk, so nothing else is ever looked up.
func validObjectID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || len(rest) != 28 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if !(rest[i] >= '0' && rest[i] <= '9' || rest[i] >= 'a' && rest[i] <= 'f') {
			return false
		}
	}
	return true
}

const filePrefix, batchPrefix = "file-", "batch_"

func (s *Server) storesBatches() bool { return s.deps.Batches != nil && s.cfg.FilesDir != "" }

// filePath is where file id's contents are kept.
func (s *Server) filePath(id string) string { return filepath.Join(s.cfg.FilesDir, id) }

// lookupFile returns the caller's file id; an id of the wrong shape is
// not found, like one of another tenant's.
func (s *Server) lookupFile(ctx context.Context, tenantID, id string) (*nozzle.File, error) {
	if !validObjectID(filePrefix, id) {
		return nil, nozzle.FileNotFound(id)
	}
	f, err := s.deps.Batches.File(ctx, tenantID, id)
	if err != nil {
		return nil, err
	}
	if f.TenantID != tenantID { // never trust a store to filter
		return nil, nozzle.FileNotFound(id)
	}
	return f, nil
}

// createFile handles POST /v1/files: a multipart upload with the fields
// file and purpose ("batch"), streamed to disk within FileUploadLimit and
// the tenant's file storage quota.
func (s *Server) createFile(c *fiber.Ctx) (retErr error) {
	p := principalFrom(c)
	limit := s.cfg.FileUploadLimit + multipartSlack
	boundary, err := multipartUpload(c, "file and purpose", limit, fileTooLarge(s.cfg.FileUploadLimit))
	if err != nil {
		return err
	}
	if err := s.takeUploadSlot(p.tenant.ID, "files"); err != nil {
		return err
	}
	defer s.uploading.release(p.tenant.ID, 1)
	quota := s.cfg.TenantFileBytes
	var used int64
	if quota > 0 {
		if used, err = s.filesUsed(c.UserContext(), p.tenant.ID); err != nil {
			return err
		}
		if cl := c.Request().Header.ContentLength(); used >= quota || int64(cl) > quota-used+multipartSlack {
			return fileStorageFull(used, quota)
		}
	}
	body := s.uploadStream(c)
	tmp, err := os.CreateTemp(s.cfg.UploadDir, "upload-file-*")
	if err != nil {
		return fmt.Errorf("create upload file: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	lr := &limitReader{r: body, n: limit}
	mr := multipart.NewReader(lr, boundary)
	var purpose, filename string
	var size int64
	havePurpose, haveFile := false, false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, errUploadTooLarge) {
			return fileTooLarge(s.cfg.FileUploadLimit)
		}
		if err != nil {
			return nozzle.Errorf(nozzle.EINVALID, "Could not read the multipart body.").Wrap(err)
		}
		switch part.FormName() {
		case "purpose":
			b, err := io.ReadAll(io.LimitReader(part, 65))
			if errors.Is(err, errUploadTooLarge) {
				return fileTooLarge(s.cfg.FileUploadLimit)
			}
			if err != nil {
				return nozzle.Errorf(nozzle.EINVALID, "Could not read the multipart body.").Wrap(err)
			}
			purpose, havePurpose = string(b), true
		case "file":
			if haveFile {
				return uploadError("file", "Send one file.")
			}
			haveFile = true
			filename = filepath.Base(strings.ReplaceAll(part.FileName(), "\\", "/"))
			if filename == "." || filename == "/" || !utf8.ValidString(filename) || len(filename) > 255 {
				filename = "upload.jsonl"
			}
			n, err := io.Copy(tmp, io.LimitReader(part, s.cfg.FileUploadLimit+1))
			if errors.Is(err, errUploadTooLarge) || n > s.cfg.FileUploadLimit {
				return fileTooLarge(s.cfg.FileUploadLimit)
			}
			if err != nil {
				return nozzle.Errorf(nozzle.EINVALID, "Could not read the uploaded file.").Wrap(err)
			}
			size = n
		default:
			// expires_after[...] and other fields are read and ignored
			if _, err := io.Copy(io.Discard, io.LimitReader(part, 1<<10)); err != nil {
				return nozzle.Errorf(nozzle.EINVALID, "Could not read the multipart body.").Wrap(err)
			}
		}
		part.Close()
	}
	if _, err := io.Copy(io.Discard, lr); err == nil {
		stateOf(c).bodyConsumed = true
	}
	if !havePurpose {
		return uploadError("purpose", "Missing required parameter: 'purpose'.")
	}
	if purpose != nozzle.FilePurposeBatch {
		return invalidAs("invalid_value", "purpose", "Invalid value for 'purpose': %q is not supported here; the only supported purpose is 'batch'.", purpose)
	}
	if !haveFile {
		return uploadError("file", "Missing required parameter: 'file'.")
	}
	if size == 0 {
		return uploadError("file", "The uploaded file is empty.")
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync upload: %w", err)
	}
	now := s.now()
	f := &nozzle.File{ID: newObjectID(filePrefix, now), TenantID: p.tenant.ID, Filename: filename, Purpose: purpose, Bytes: size, Created: now}
	ctx := c.UserContext()
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	if quota > 0 {
		if used, err = s.filesUsed(ctx, p.tenant.ID); err != nil {
			return err
		}
		if used+size > quota {
			return fileStorageFull(used, quota)
		}
	}
	if err := s.storeFile(ctx, f, tmp.Name()); err != nil {
		return err
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "file created", slog.String("tenant_id", p.tenant.ID), slog.String("file_id", f.ID), slog.Int64("bytes", size))
	return c.JSON(toFileJSON(f))
}

// filesUsed is the tenant's bytes of files for its storage quota: its
// files' and its running batches' partial output and error files'.
func (s *Server) filesUsed(ctx context.Context, tenantID string) (int64, error) {
	used, err := s.deps.Batches.FileBytes(ctx, tenantID)
	if err != nil {
		return 0, fmt.Errorf("sum the tenant's files: %w", err)
	}
	return used + s.runner.partialBytes(tenantID), nil
}

// storeFile moves the file at path into FilesDir as f.ID and records f;
// on failure nothing is left.
func (s *Server) storeFile(ctx context.Context, f *nozzle.File, path string) error {
	dst := s.filePath(f.ID)
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	syncDir(s.cfg.FilesDir)
	if err := s.deps.Batches.CreateFile(context.WithoutCancel(ctx), f); err != nil {
		os.Remove(dst)
		return err
	}
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

func fileTooLarge(limit int64) error {
	return nozzle.Errorf(nozzle.ETOOLARGE, "The file is too large: the limit is %s.", formatBytes(limit)).WithParam("file").WithReason("file_too_large")
}

func fileStorageFull(used, quota int64) error {
	return nozzle.Errorf(nozzle.ETOOLARGE, "This upload would take this organization's files past their storage quota of %s (%s used). Delete files it no longer needs.",
		formatBytes(quota), formatBytes(used)).WithParam("file").WithReason("file_storage_full")
}

// getFile handles GET /v1/files/{id}.
func (s *Server) getFile(c *fiber.Ctx) error {
	f, err := s.lookupFile(c.UserContext(), principalFrom(c).tenant.ID, strings.Clone(c.Params("id")))
	if err != nil {
		return err
	}
	return c.JSON(toFileJSON(f))
}

// fileContent handles GET /v1/files/{id}/content: the file, streamed.
func (s *Server) fileContent(c *fiber.Ctx) error {
	f, err := s.lookupFile(c.UserContext(), principalFrom(c).tenant.ID, strings.Clone(c.Params("id")))
	if err != nil {
		return err
	}
	return s.sendFile(c, f)
}

// sendFile answers with f's contents, streamed from the files folder.
func (s *Server) sendFile(c *fiber.Ctx, f *nozzle.File) error {
	fh, err := os.Open(s.filePath(f.ID))
	if err != nil {
		return fmt.Errorf("open file %s: %w", f.ID, err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return fmt.Errorf("stat file %s: %w", f.ID, err)
	}
	c.Set(fiber.HeaderContentType, "application/jsonl")
	// fasthttp closes a body stream that is an io.Closer once the
	// response is written.
	c.Response().SetBodyStream(&closingReader{Reader: bufio.NewReader(fh), c: fh}, int(st.Size()))
	return nil
}

type closingReader struct {
	io.Reader
	c io.Closer
}

func (r *closingReader) Close() error { return r.c.Close() }

// listFiles handles GET /v1/files: purpose, limit (default 10000 as
// OpenAI's), after, order (default desc).
func (s *Server) listFiles(c *fiber.Ctx) error {
	q := nozzle.FileQuery{Limit: 10000, Purpose: strings.Clone(c.Query("purpose")), After: strings.Clone(c.Query("after"))}
	if v := c.Query("limit"); c.Context().QueryArgs().Has("limit") {
		n, err := parseFileLimit(v)
		if err != nil {
			return err
		}
		q.Limit = n
	}
	switch o := c.Query("order"); o {
	case "", "desc":
	case "asc":
		q.Ascending = true
	default:
		return invalidAs("invalid_value", "order", "Invalid value for 'order': expected 'asc' or 'desc', got %q.", o)
	}
	p := principalFrom(c)
	files, more, err := s.deps.Batches.Files(c.UserContext(), p.tenant.ID, q)
	if err != nil {
		return err
	}
	out := make([]fileJSON, 0, len(files))
	for _, f := range files {
		if f.TenantID == p.tenant.ID {
			out = append(out, toFileJSON(f))
		}
	}
	return writePage(c, out, func(f fileJSON) string { return f.ID }, more)
}

func parseFileLimit(v string) (int, error) {
	n := 0
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' || n > 1e6 {
			return 0, invalidAs("invalid_value", "limit", "Invalid value for 'limit': expected an integer from 1 to 10000.")
		}
		n = n*10 + int(v[i]-'0')
	}
	if n < 1 || n > 10000 {
		return 0, invalidAs("invalid_value", "limit", "Invalid value for 'limit': expected an integer from 1 to 10000.")
	}
	return n, nil
}

// deleteFile handles DELETE /v1/files/{id}: the record, then the contents.
func (s *Server) deleteFile(c *fiber.Ctx) error {
	ctx := c.UserContext()
	f, err := s.lookupFile(ctx, principalFrom(c).tenant.ID, strings.Clone(c.Params("id")))
	if err != nil {
		return err
	}
	if err := s.deps.Batches.DeleteFile(ctx, f.TenantID, f.ID); err != nil {
		return err
	}
	if err := os.Remove(s.filePath(f.ID)); err != nil && !os.IsNotExist(err) {
		s.log.LogAttrs(ctx, slog.LevelWarn, "remove file", slog.String("file_id", f.ID), slog.String("error", err.Error()))
	}
	return c.JSON(fiber.Map{"id": f.ID, "object": "file", "deleted": true})
}
