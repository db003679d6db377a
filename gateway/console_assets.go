package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// asset is a static file served under a content-hashed name
// ("console.3f2a9c01b4.css"), so it can be cached for a year and a new
// build is never served stale.
type asset struct {
	hashed string
	ctype  string
	etag   string
	data   []byte
}

type assetSet struct {
	byName   map[string]*asset // "vendor/uplot.min.js" → asset
	byHashed map[string]*asset // "uplot.min.5d1e0a77c2.js" → asset
}

func newAssetSet(fsys fs.FS) (*assetSet, error) {
	set := &assetSet{byName: map[string]*asset{}, byHashed: map[string]*asset{}}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ext := path.Ext(p)
		ctype := mime.TypeByExtension(ext)
		if ctype == "" {
			return nil // licences and other files not served
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:5])
		base := path.Base(p)
		a := &asset{hashed: strings.TrimSuffix(base, ext) + "." + h + ext, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, data: b}
		if _, dup := set.byHashed[a.hashed]; dup {
			return fs.ErrExist
		}
		set.byName[p] = a
		set.byHashed[a.hashed] = a
		return nil
	})
	return set, err
}

// url returns the served address of a static file; it panics for a file
// that does not exist, so a template naming one fails its first render in
// tests rather than in a browser.
func (set *assetSet) url(name string) string {
	a := set.byName[name]
	if a == nil {
		panic("console: no static file " + name)
	}
	return "/console/static/" + a.hashed
}

// static serves a static file by hashed name, with a year of caching and
// an ETag.
func (cs *console) static(c *fiber.Ctx) error {
	a := cs.assets.byHashed[c.Params("file")]
	if a == nil {
		return nozzle.Errorf(nozzle.ENOTFOUND, "No such file.")
	}
	c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	c.Set(fiber.HeaderETag, a.etag)
	c.Set(fiber.HeaderContentType, a.ctype)
	if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" && strings.Contains(inm, a.etag) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	return c.Send(a.data)
}
