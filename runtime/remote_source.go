package runtime

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// RemoteSource is the AdapterSource of a runtime that runs apart from the
// gateway: it fetches an adapter's two files from the gateway's store
// (GET {gateway}/internal/adapters/{sha256}/{file} with the internal
// bearer token) into a local cache folder, checks their content address,
// and serves them from there afterwards.
type RemoteSource struct {
	base  string
	token string
	hc    *http.Client
	cache *Store

	mu       sync.Mutex
	inflight map[string]*fetch
}

type fetch struct {
	done chan struct{}
	dir  string
	err  error
}

var _ AdapterSource = (*RemoteSource)(nil)

// NewRemoteSource returns a source that fetches from the gateway at
// gatewayURL into cacheDir. hc nil means http.DefaultClient.
func NewRemoteSource(gatewayURL, internalToken, cacheDir string, hc *http.Client) *RemoteSource {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &RemoteSource{
		base: strings.TrimRight(gatewayURL, "/"), token: internalToken, hc: hc,
		cache:    NewStore(cacheDir, func(string) (*nozzle.AdapterManifest, error) { return &nozzle.AdapterManifest{}, nil }),
		inflight: map[string]*fetch{},
	}
}

// AdapterDir returns the local folder of an adapter, fetching it first.
func (s *RemoteSource) AdapterDir(ctx context.Context, sha string) (string, error) {
	if !isSHA256(sha) {
		return "", nozzle.Errorf(nozzle.ENOTFOUND, "No such adapter.")
	}
	if dir, err := s.cache.AdapterDir(ctx, sha); err == nil {
		return dir, nil
	}
	s.mu.Lock()
	f := s.inflight[sha]
	if f == nil {
		f = &fetch{done: make(chan struct{})}
		s.inflight[sha] = f
		go func() {
			f.dir, f.err = s.fetch(context.WithoutCancel(ctx), sha)
			s.mu.Lock()
			delete(s.inflight, sha)
			s.mu.Unlock()
			close(f.done)
		}()
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.dir, f.err
	case <-ctx.Done():
		return "", nozzle.Errorf(nozzle.EUNAVAILABLE, "Fetching the adapter was interrupted.").Wrap(ctx.Err())
	}
}

func (s *RemoteSource) fetch(ctx context.Context, sha string) (string, error) {
	if err := os.MkdirAll(s.cache.dir, 0o755); err != nil {
		return "", fmt.Errorf("fetch adapter: %w", err)
	}
	tmp, err := os.MkdirTemp(s.cache.dir, ".fetch-")
	if err != nil {
		return "", fmt.Errorf("fetch adapter: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, name := range adapterFiles {
		if err := s.get(ctx, sha, name, filepath.Join(tmp, name)); err != nil {
			return "", err
		}
	}
	sum, _, err := model.ContentAddress(tmp)
	if err != nil {
		return "", fmt.Errorf("fetch adapter: %w", err)
	}
	if sum != sha {
		return "", nozzle.Errorf(nozzle.EUNAVAILABLE, "The adapter files fetched from the gateway do not match their address.").
			Wrap(fmt.Errorf("fetched %s, got content %s", sha, sum))
	}
	if _, err := s.cache.Import(ctx, tmp); err != nil {
		return "", err
	}
	return s.cache.AdapterDir(ctx, sha)
}

func (s *RemoteSource) get(ctx context.Context, sha, name, dst string) error {
	u := s.base + "/internal/adapters/" + url.PathEscape(sha) + "/" + url.PathEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetch adapter: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.hc.Do(req)
	if err != nil {
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "The gateway cannot be reached for the adapter's files.").Wrap(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", shortSHA(sha)).WithReason("model_not_found")
	case resp.StatusCode != http.StatusOK:
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "The gateway refused the adapter's files.").Wrap(fmt.Errorf("GET %s: %s", name, resp.Status))
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("fetch adapter: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return nozzle.Errorf(nozzle.EUNAVAILABLE, "Fetching the adapter's files failed.").Wrap(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fetch adapter: %w", err)
	}
	return f.Close()
}
