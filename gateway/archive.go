package gateway

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nozzle-ai/nozzle"
)

// Caps on what an archive may hold.
const (
	maxConfigBytes    = 1 << 20 // adapter_config.json
	maxArchiveEntries = 10000
)

func archiveError(format string, args ...any) *nozzle.Error {
	return nozzle.Errorf(nozzle.EINVALID, format, args...).WithParam("archive")
}

type archiveFormat int

const (
	formatUnknown archiveFormat = iota
	formatTarGz
	formatZip
)

func (f archiveFormat) String() string {
	switch f {
	case formatTarGz:
		return ".tar.gz"
	case formatZip:
		return ".zip"
	}
	return "unknown"
}

// formatByName says what an archive's file name claims it is.
func formatByName(name string) archiveFormat {
	n := strings.ToLower(name)
	switch {
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return formatTarGz
	case strings.HasSuffix(n, ".zip"):
		return formatZip
	}
	return formatUnknown
}

// formatByContent says what an archive's first bytes show it is.
func formatByContent(head []byte) archiveFormat {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return formatTarGz
	case len(head) >= 4 && bytes.Equal(head[:4], []byte("PK\x03\x04")), len(head) >= 4 && bytes.Equal(head[:4], []byte("PK\x05\x06")):
		return formatZip
	}
	return formatUnknown
}

// entryPath splits an archive entry's name into clean components, refusing
// absolute paths, drive letters, ".." and NUL. The archive's own folder
// ("./", as tar -C dir . writes it) has none.
func entryPath(name string) ([]string, error) {
	n := strings.ReplaceAll(name, `\`, "/")
	if n == "" || strings.HasPrefix(n, "/") || strings.ContainsRune(n, 0) || (len(n) >= 2 && n[1] == ':') {
		return nil, archiveError("The archive entry %q has an absolute or invalid path.", name)
	}
	var out []string
	for _, p := range strings.Split(n, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, archiveError("The archive entry %q leaves the archive's folder.", name)
		}
		out = append(out, p)
	}
	return out, nil
}

// extractor writes the two PEFT files of an archive into dir. Other
// regular files are skipped (but their paths must be safe); links and
// special files are refused.
type extractor struct {
	dir    string
	limit  int64 // total bytes written
	total  int64
	folder *string // the one folder holding the adapter files ("" = top level)
	found  map[string]bool
}

func (x *extractor) entry(name string, isDir, isReg bool, size int64, open func() (io.ReadCloser, error)) error {
	parts, err := entryPath(name)
	if err != nil {
		return err
	}
	if isDir {
		return nil
	}
	if len(parts) == 0 {
		return archiveError("The archive entry %q has an empty path.", name)
	}
	if !isReg {
		return archiveError("The archive entry %q is a link or a special file; only regular files are allowed.", name)
	}
	base := parts[len(parts)-1]
	if base != nozzle.AdapterConfigFile && base != nozzle.AdapterWeightsFile {
		return nil
	}
	if len(parts) > 2 {
		return archiveError("The archive entry %q is nested too deeply: put the adapter files at the top or in one folder.", name)
	}
	folder := ""
	if len(parts) == 2 {
		folder = parts[0]
	}
	if x.folder != nil && *x.folder != folder {
		return archiveError("The archive holds adapter files in more than one folder.")
	}
	x.folder = &folder
	if x.found[base] {
		return archiveError("The archive holds %s more than once.", base)
	}
	x.found[base] = true
	limit := x.limit - x.total
	if base == nozzle.AdapterConfigFile {
		limit = min(limit, maxConfigBytes)
	}
	if size > limit {
		return archiveError("%s in the archive is too large.", base)
	}
	rc, err := open()
	if err != nil {
		return archiveError("Could not read %s from the archive.", base).Wrap(err)
	}
	defer rc.Close()
	f, err := os.OpenFile(filepath.Join(x.dir, base), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", base, err)
	}
	n, err := io.Copy(f, io.LimitReader(rc, limit+1))
	if cerr := f.Close(); err == nil && cerr != nil {
		return fmt.Errorf("write %s: %w", base, cerr)
	}
	if err != nil {
		return archiveError("The archive is damaged or truncated: could not read %s.", base).Wrap(err)
	}
	if n > limit {
		return archiveError("%s in the archive is too large.", base)
	}
	x.total += n
	return nil
}

// extractArchive extracts the PEFT files of the archive at path, uploaded
// under filename, into dir. The content must match what the name claims.
func extractArchive(path, filename, dir string, limit int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	content := formatByContent(head[:n])
	claimed := formatByName(filename)
	switch {
	case content == formatUnknown:
		return archiveError("The archive is neither a .tar.gz nor a .zip file.")
	case claimed != formatUnknown && claimed != content:
		return archiveError("The archive is named %q but its content is a %s file.", filename, content)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("seek archive: %w", err)
	}
	x := &extractor{dir: dir, limit: limit, found: map[string]bool{}}
	if content == formatTarGz {
		err = extractTarGz(f, x)
	} else {
		fi, serr := f.Stat()
		if serr != nil {
			return fmt.Errorf("stat archive: %w", serr)
		}
		err = extractZip(f, fi.Size(), x)
	}
	if err != nil {
		return err
	}
	for _, want := range []string{nozzle.AdapterConfigFile, nozzle.AdapterWeightsFile} {
		if !x.found[want] {
			return archiveError("The archive holds no %s.", want)
		}
	}
	return nil
}

func extractTarGz(r io.Reader, x *extractor) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return archiveError("The archive is not a valid gzip file.").Wrap(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	// Every entry is decompressed, those skipped too: without a bound on
	// their sizes a few megabytes of gzip (a ratio of 1000 to 1) keep a
	// core busy for minutes. An archive may unpack to at most the upload
	// limit in all.
	var unpacked int64
	for count := 0; ; count++ {
		if count > maxArchiveEntries {
			return archiveError("The archive has too many entries.")
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return archiveError("The archive is damaged or truncated.").Wrap(err)
		}
		switch h.Typeflag {
		case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			continue
		}
		if unpacked += max(h.Size, 0); unpacked > x.limit {
			return archiveError("The archive unpacks to more than %d bytes, the upload limit.", x.limit)
		}
		isReg := h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA //nolint:staticcheck // old tars
		err = x.entry(h.Name, h.Typeflag == tar.TypeDir, isReg, h.Size, func() (io.ReadCloser, error) {
			return io.NopCloser(tr), nil
		})
		if err != nil {
			return err
		}
	}
}

func extractZip(r io.ReaderAt, size int64, x *extractor) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return archiveError("The archive is not a valid zip file.").Wrap(err)
	}
	if len(zr.File) > maxArchiveEntries {
		return archiveError("The archive has too many entries.")
	}
	for _, f := range zr.File {
		mode := f.Mode()
		isDir := mode.IsDir() || strings.HasSuffix(f.Name, "/")
		if err := x.entry(f.Name, isDir, mode.IsRegular() && !isDir, int64(f.UncompressedSize64), f.Open); err != nil {
			return err
		}
	}
	return nil
}
