package runtime

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/internal/metrics"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// RemoteSource is the AdapterSource of a runtime that runs apart from the
// gateway: it fetches an adapter's two files from the gateway's store
// (GET {gateway}/internal/adapters/{sha256}/{file} with the internal
// bearer token) into a local cache folder, checks their content address,
// and serves them from there afterwards. The cache keeps to a byte
// budget: when a fetch takes it over, the adapters used least recently
// are deleted, except those a runtime holds (loading, in host memory or
// an engine slot, or wanted by queued requests); an adapter deleted is
// fetched again when next asked for. Adapters found in the folder at
// start count toward the budget, their folder's modification time being
// their last use.
type RemoteSource struct {
	base  string
	token string
	hc    *http.Client
	cache *Store
	disk  *diskCache

	fetches   metrics.Counter
	fetchSecs metrics.Histogram

	mu       sync.Mutex
	inflight map[string]*fetch
}

type fetch struct {
	done chan struct{}
	dir  string
	err  error
}

var (
	_ AdapterSource = (*RemoteSource)(nil)
	_ useTracker    = (*RemoteSource)(nil)
)

// RemoteSourceOptions configure a RemoteSource. Zero values take the
// defaults named.
type RemoteSourceOptions struct {
	// CacheDir is the local cache folder.
	CacheDir string
	// CacheBytes is the disk budget of the cache; 0 means unlimited.
	CacheBytes int64
	// HTTPClient fetches the files (default http.DefaultClient).
	HTTPClient *http.Client
	Logger     *slog.Logger
	Metrics    *metrics.Registry
}

// NewRemoteSource returns a source that fetches from the gateway at
// gatewayURL into opts.CacheDir, indexing the adapters already there.
func NewRemoteSource(gatewayURL, internalToken string, opts RemoteSourceOptions) *RemoteSource {
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default().With("component", "runtime")
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewRegistry()
	}
	store := NewStore(opts.CacheDir, func(string) (*nozzle.AdapterManifest, error) { return &nozzle.AdapterManifest{}, nil })
	return &RemoteSource{
		base: strings.TrimRight(gatewayURL, "/"), token: internalToken, hc: opts.HTTPClient,
		cache:     store,
		disk:      newDiskCache(opts.CacheDir, opts.CacheBytes, opts.Logger, opts.Metrics),
		fetches:   opts.Metrics.CounterVec("nozzle_runtime_adapter_loads_total", "Adapters brought into a tier.", "tier").With(string(nozzle.TierDisk)),
		fetchSecs: opts.Metrics.HistogramVec("nozzle_runtime_adapter_load_seconds", "Time to bring an adapter into a tier.", metrics.LatencyBuckets, "tier").With(string(nozzle.TierDisk)),
		inflight:  map[string]*fetch{},
	}
}

// CacheBytes returns the disk space the cached adapters take.
func (s *RemoteSource) CacheBytes() int64 { return s.disk.usedBytes() }

func (s *RemoteSource) track(inUse func(string) bool) func() { return s.disk.track(inUse) }
func (s *RemoteSource) used(sha string)                      { s.disk.used(sha) }
func (s *RemoteSource) drop(sha string)                      { s.disk.drop(sha) }

// AdapterDir returns the local folder of an adapter, fetching it first.
func (s *RemoteSource) AdapterDir(ctx context.Context, sha string) (string, error) {
	if !isSHA256(sha) {
		return "", nozzle.Errorf(nozzle.ENOTFOUND, "No such adapter.")
	}
	if e := s.disk.hit(sha); e != nil {
		if s.cache.has(sha) {
			return filepath.Join(s.cache.dir, sha), nil
		}
		s.disk.forget(e) // deleted from under the cache: fetch it again
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

// fetch brings an adapter into the cache and returns its folder. It is
// entered for one sha at a time: AdapterDir dedupes concurrent fetches.
func (s *RemoteSource) fetch(ctx context.Context, sha string) (string, error) {
	t0 := time.Now()
	if err := os.MkdirAll(s.cache.dir, 0o755); err != nil {
		return "", fmt.Errorf("fetch adapter: %w", err)
	}
	tmp, err := os.MkdirTemp(s.cache.dir, ".fetch-")
	if err != nil {
		return "", fmt.Errorf("fetch adapter: %w", err)
	}
	defer os.RemoveAll(tmp)
	var size int64
	for _, name := range adapterFiles {
		n, err := s.get(ctx, sha, name, filepath.Join(tmp, name))
		if err != nil {
			return "", err
		}
		size += n
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
	s.disk.add(sha, size)
	s.fetches.Inc()
	s.fetchSecs.Observe(time.Since(t0).Seconds())
	return filepath.Join(s.cache.dir, sha), nil
}

// AskPull asks the gateway to collect capacity now (POST
// /internal/capacity/pull), best effort: a runtime that is stopping wants
// its last interval stored before it goes; failing that, the gateway's
// next regular pull stores it.
func (s *RemoteSource) AskPull(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/internal/capacity/pull", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// get stores one file of an adapter at dst and returns its size.
func (s *RemoteSource) get(ctx context.Context, sha, name, dst string) (int64, error) {
	u := s.base + "/internal/adapters/" + url.PathEscape(sha) + "/" + url.PathEscape(name)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("fetch adapter: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, nozzle.Errorf(nozzle.EUNAVAILABLE, "The gateway cannot be reached for the adapter's files.").Wrap(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return 0, nozzle.Errorf(nozzle.ENOTFOUND, "Adapter %s is not stored.", shortSHA(sha)).WithReason("model_not_found")
	case resp.StatusCode != http.StatusOK:
		return 0, nozzle.Errorf(nozzle.EUNAVAILABLE, "The gateway refused the adapter's files.").Wrap(fmt.Errorf("GET %s: %s", name, resp.Status))
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("fetch adapter: %w", err)
	}
	n, err := io.Copy(f, resp.Body)
	if err != nil {
		f.Close()
		return 0, nozzle.Errorf(nozzle.EUNAVAILABLE, "Fetching the adapter's files failed.").Wrap(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, fmt.Errorf("fetch adapter: %w", err)
	}
	return n, f.Close()
}
