package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// Store keeps adapter files on disk, content-addressed:
// dir/<sha256>/adapter_config.json and adapter_model.safetensors, where
// the address is nozzle.AdapterManifest's SHA256. Files enter only through
// Import, which validates them first and moves them in atomically, so a
// folder named by an address is always complete. It implements
// nozzle.AdapterStore and AdapterSource.
type Store struct {
	dir      string
	validate func(dir string) (*nozzle.AdapterManifest, error)
}

var (
	_ nozzle.AdapterStore = (*Store)(nil)
	_ AdapterSource       = (*Store)(nil)
)

// NewStore returns the store in dir. validate checks an adapter folder
// against the base model (model.ValidateAdapter bound to the model's info
// and the runtime's max rank) and describes it. Leftovers of imports
// interrupted by a crash are removed.
func NewStore(dir string, validate func(dir string) (*nozzle.AdapterManifest, error)) *Store {
	s := &Store{dir: dir, validate: validate}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".import-") || strings.HasPrefix(e.Name(), ".remove-") || strings.HasPrefix(e.Name(), ".fetch-") {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	return s
}

// Dir returns the store's folder.
func (s *Store) Dir() string { return s.dir }

var adapterFiles = []string{nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile}

// Import validates the PEFT adapter in dir and moves it into the store
// under its content address. Files already stored are not stored twice.
// dir is removed either way.
func (s *Store) Import(ctx context.Context, dir string) (*nozzle.AdapterManifest, error) {
	defer os.RemoveAll(dir)
	for _, name := range adapterFiles {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nozzle.Errorf(nozzle.EINVALID, "The adapter has no %s.", name).WithParam(name)
		} else if err != nil {
			return nil, fmt.Errorf("import adapter: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, nozzle.Errorf(nozzle.EINVALID, "%s is not a regular file.", name).WithParam(name)
		}
	}
	m, err := s.validate(dir)
	if err != nil {
		return nil, invalidAdapter(err, dir)
	}
	sum, size, err := model.ContentAddress(dir)
	if err != nil {
		return nil, fmt.Errorf("import adapter: %w", err)
	}
	if m.SHA256 != "" && m.SHA256 != sum {
		return nil, fmt.Errorf("import adapter: validator's address %s differs from the store's %s", m.SHA256, sum)
	}
	m.SHA256 = sum
	if m.SizeBytes == 0 {
		m.SizeBytes = size
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("import adapter: %w", err)
	}
	final := filepath.Join(s.dir, sum)
	if s.has(sum) {
		return m, nil
	}
	tmp, err := os.MkdirTemp(s.dir, ".import-")
	if err != nil {
		return nil, fmt.Errorf("import adapter: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, name := range adapterFiles {
		if err := moveFile(filepath.Join(dir, name), filepath.Join(tmp, name)); err != nil {
			return nil, fmt.Errorf("import adapter: %w", err)
		}
	}
	if err := syncDir(tmp); err != nil {
		return nil, fmt.Errorf("import adapter: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if s.has(sum) { // a concurrent import of the same files won
			return m, nil
		}
		return nil, fmt.Errorf("import adapter: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return nil, fmt.Errorf("import adapter: %w", err)
	}
	return m, nil
}

func (s *Store) has(sum string) bool {
	for _, name := range adapterFiles {
		if fi, err := os.Stat(filepath.Join(s.dir, sum, name)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// invalidAdapter makes a validation failure an EINVALID error whose
// message names the offending field or tensor but no server path.
func invalidAdapter(err error, dir string) error {
	if e := nozzle.AsError(err); e != nil {
		return err
	}
	msg := err.Error()
	for _, p := range []string{dir + string(filepath.Separator), dir} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	if abs, aerr := filepath.Abs(dir); aerr == nil {
		msg = strings.ReplaceAll(msg, abs+string(filepath.Separator), "")
	}
	return nozzle.Errorf(nozzle.EINVALID, "The adapter is not valid: %s.", strings.TrimSuffix(msg, ".")).Wrap(err)
}

// Open opens one stored file of an adapter and returns its size.
func (s *Store) Open(ctx context.Context, sha string, name string) (io.ReadCloser, int64, error) {
	if !isSHA256(sha) || (name != nozzle.AdapterConfigFile && name != nozzle.AdapterWeightsFile) {
		return nil, 0, nozzle.Errorf(nozzle.ENOTFOUND, "No such adapter file.")
	}
	f, err := os.Open(filepath.Join(s.dir, sha, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", shortSHA(sha))
	} else if err != nil {
		return nil, 0, fmt.Errorf("open adapter file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open adapter file: %w", err)
	}
	return f, fi.Size(), nil
}

// Remove deletes an adapter's files. Removing unknown files is not an
// error.
func (s *Store) Remove(ctx context.Context, sha string) error {
	if !isSHA256(sha) {
		return nil
	}
	tmp, err := os.MkdirTemp(s.dir, ".remove-")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove adapter: %w", err)
	}
	defer os.RemoveAll(tmp)
	// Renaming first makes the removal atomic for readers.
	if err := os.Rename(filepath.Join(s.dir, sha), filepath.Join(tmp, sha)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove adapter: %w", err)
	}
	return syncDir(s.dir)
}

// Stored lists the content addresses of the stored adapters.
func (s *Store) Stored(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list adapters: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && isSHA256(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// AdapterDir returns the folder of a stored adapter.
func (s *Store) AdapterDir(ctx context.Context, sha string) (string, error) {
	if !isSHA256(sha) || !s.has(sha) {
		return "", nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", shortSHA(sha)).WithReason("model_not_found")
	}
	return filepath.Join(s.dir, sha), nil
}

// moveFile moves src to dst, copying when they are on different file
// systems, and syncs dst.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return syncFile(dst)
	} else if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(dir string) error { return syncFile(dir) }
