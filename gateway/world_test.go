package gateway_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/gateway"
	"github.com/nozzle-ai/nozzle/mock"
)

// world is the in-memory pool behind the mocks of the gateway's tests and
// of the server the browser tests can run against: tenants with prices,
// keys, users and sessions, adapters with a store that checks PEFT files,
// a ledger and a reporter that prices and splits usage, a monthly budget,
// and a runtime that streams a fixed answer.
type world struct {
	mu          sync.Mutex
	now         func() time.Time
	started     time.Time // the runtime has been up since
	seq         int
	tenants     map[string]*nozzle.Tenant
	tenantOrder []string // tenant ids in creation order
	prices      []nozzle.PriceVersion
	keys        map[string]*nozzle.APIKey  // by digest
	touched     map[string]time.Time       // key id → last use written
	adapters    map[string]*nozzle.Adapter // by tenant id "/" name
	stored      map[string]map[string][]byte
	importHold  atomic.Pointer[importHold]
	removed     []string             // what the store removed, in order
	events      []*nozzle.UsageEvent // in record order
	byID        map[string]*nozzle.UsageEvent
	byAttempt   map[string]*nozzle.UsageEvent // by AttemptID, as the ledger finds them
	checkpoints map[string]*nozzle.UsageEvent // running streams' latest, by request id
	ckptLog     []*nozzle.UsageEvent          // every checkpoint taken, in order
	ckptEnds    []string                      // events[i]'s CheckpointID
	reserved    float64                       // budget reserved and not released
	released    int
	users       map[string]*nozzle.User
	sessions    map[string]*nozzle.Session
	tiers       map[string]nozzle.Tier
	dropped     []string // what the runtime was told to drop, in order
	words       []string
	// reasoning makes the runtime a reasoning model's: a chat whose last
	// message asks it to think (thinkPrompt) opens its answer with the
	// thoughts, between <think> and </think>
	reasoning bool
	delay     time.Duration
	tierDelay time.Duration // how long the runtime takes to say where an adapter is
	rate      float64
	// operatorIdle reports as under the operator idle policy
	operatorIdle bool
	reports      int   // reports asked for
	reportErr    error // what reports fail with, when set

	digestLookups atomic.Int64
	generations   atomic.Int64
}

// newWorld returns an empty world whose default price, in force since
// 1970, is base.
func newWorld(base nozzle.Price) *world {
	w := &world{now: time.Now, tenants: map[string]*nozzle.Tenant{}, keys: map[string]*nozzle.APIKey{}, touched: map[string]time.Time{},
		adapters: map[string]*nozzle.Adapter{}, stored: map[string]map[string][]byte{}, byID: map[string]*nozzle.UsageEvent{}, byAttempt: map[string]*nozzle.UsageEvent{},
		checkpoints: map[string]*nozzle.UsageEvent{},
		users:       map[string]*nozzle.User{}, sessions: map[string]*nozzle.Session{}, tiers: map[string]nozzle.Tier{},
		words: []string{"Hello", " from", " the", " pooled", " GPU", "."}, rate: 2}
	w.started = w.now().Add(-2 * time.Hour)
	w.prices = []nozzle.PriceVersion{{Price: base, EffectiveFrom: time.Unix(0, 0).UTC()}}
	return w
}

// lock locks the world and returns its unlock.
func (w *world) lock() func() {
	w.mu.Lock()
	return w.mu.Unlock
}

func (w *world) nextID(prefix string) string {
	w.seq++
	return prefix + strconv.Itoa(w.seq)
}

func clone[T any](v *T) *T { c := *v; return &c }

// seqOf is the number at the end of one of the world's ids: ids count up
// in the order the world made them.
func seqOf(id string) int {
	n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '_')+1:])
	return n
}

// setIf sets *dst to *v when v is not nil.
func setIf[T any](dst, v *T) {
	if v != nil {
		*dst = *v
	}
}

// collect returns copies of the values of m that keep accepts, ordered by
// less.
func collect[T any](m map[string]*T, keep func(*T) bool, less func(a, b *T) bool) []*T {
	var out []*T
	for _, v := range m {
		if keep(v) {
			out = append(out, clone(v))
		}
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i], out[j]) })
	return out
}

// priceAt is the tenant's price in force at a time, else the default one.
// w.mu is held.
func (w *world) priceAt(tenantID string, at time.Time) nozzle.Price {
	// The tenant's latest version if it is an override, else the
	// standard list's latest.
	var own, def *nozzle.PriceVersion
	for i := range w.prices {
		pv := &w.prices[i]
		if pv.EffectiveFrom.After(at) || (pv.TenantID != "" && pv.TenantID != tenantID) {
			continue
		}
		latest := &def
		if pv.TenantID != "" {
			latest = &own
		}
		if *latest == nil || !pv.EffectiveFrom.Before((*latest).EffectiveFrom) {
			*latest = pv
		}
	}
	if own != nil && !own.Standard {
		return own.Price
	}
	return def.Price
}

// mocks are the world's services, each function backed by the world; a
// test may replace one to count calls or inject a failure.
type mocks struct {
	tenants  *mock.TenantService
	keys     *mock.KeyService
	adapterS *mock.AdapterService
	store    *mock.AdapterStore
	ledger   *mock.Ledger
	budget   *mock.BudgetService
	reporter *mock.Reporter
	users    *mock.UserService
}

// deps are the gateway's dependencies over the mocks, without upstreams.
func (m *mocks) deps() gateway.Deps {
	return gateway.Deps{Tenants: m.tenants, Keys: m.keys, Adapters: m.adapterS, Store: m.store, Ledger: m.ledger,
		Budget: m.budget, Reporter: m.reporter, Users: m.users}
}

// deps are the gateway's dependencies over the world, with its runtime as
// the one upstream.
func (w *world) deps() gateway.Deps {
	d := w.mocks().deps()
	d.Upstreams = []gateway.Upstream{{ID: "local", Generator: struct {
		*mock.Generator
		*mock.AdapterDropper
	}{&mock.Generator{
		InfoFn: func(ctx context.Context) (nozzle.ModelInfo, error) {
			return nozzle.ModelInfo{ID: "nozzle-demo", Architecture: "llama", ContextLength: 2048, MaxLoRARank: 64, Device: "cpu",
				CreatedAt: time.Unix(1700000000, 0).UTC(), Reasoning: w.reasoning}, nil
		},
		GenerateFn: w.generate,
		AdapterTierFn: func(ctx context.Context, sha string) nozzle.Tier {
			w.mu.Lock()
			d := w.tierDelay
			w.mu.Unlock()
			if d > 0 { // a remote runtime's round trip, or one that hangs
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nozzle.TierDisk
				}
			}
			defer w.lock()()
			if t, ok := w.tiers[sha]; ok {
				return t
			}
			return nozzle.TierDisk
		},
	}, &mock.AdapterDropper{
		DropAdapterFn: func(ctx context.Context, sha string) error {
			defer w.lock()()
			delete(w.tiers, sha)
			w.dropped = append(w.dropped, sha)
			return nil
		},
	}}}}
	return d
}

func (w *world) mocks() *mocks {
	return &mocks{
		tenants: &mock.TenantService{
			CreateTenantFn: func(ctx context.Context, t *nozzle.Tenant) error {
				defer w.lock()()
				for _, x := range w.tenants {
					if strings.EqualFold(x.Name, t.Name) {
						return nozzle.Errorf(nozzle.ECONFLICT, "A tenant named %q exists already.", t.Name).WithParam("name")
					}
				}
				t.ID, t.CreatedAt = w.nextID("ten_"), w.now().UTC()
				w.tenants[t.ID] = clone(t)
				w.tenantOrder = append(w.tenantOrder, t.ID)
				return nil
			},
			TenantFn: func(ctx context.Context, id string) (*nozzle.Tenant, error) {
				defer w.lock()()
				if t := w.tenants[id]; t != nil {
					return clone(t), nil
				}
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant %q.", id)
			},
			TenantsFn: func(ctx context.Context) ([]*nozzle.Tenant, error) {
				defer w.lock()()
				var out []*nozzle.Tenant
				for _, id := range w.tenantOrder {
					out = append(out, clone(w.tenants[id]))
				}
				return out, nil
			},
			TenantPageFn: func(ctx context.Context, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Tenant], error) {
				defer w.lock()()
				var all []*nozzle.Tenant
				for _, id := range w.tenantOrder {
					all = append(all, clone(w.tenants[id]))
				}
				return mock.Paginate(all, func(t *nozzle.Tenant) string { return t.ID }, nil, nozzle.Ascending, q)
			},
			UpdateTenantFn: func(ctx context.Context, id string, upd nozzle.TenantUpdate) (*nozzle.Tenant, error) {
				defer w.lock()()
				t := w.tenants[id]
				if t == nil {
					return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant %q.", id)
				}
				setIf(&t.Name, upd.Name)
				setIf(&t.Suspended, upd.Suspended)
				setIf(&t.MonthlyBudgetUSD, upd.MonthlyBudgetUSD)
				setIf(&t.Limits, upd.Limits)
				setIf(&t.StripeCustomerID, upd.StripeCustomerID)
				return clone(t), nil
			},
			SetPriceFn: func(ctx context.Context, tenantID string, p nozzle.Price, from time.Time) error {
				defer w.lock()()
				w.prices = append(w.prices, nozzle.PriceVersion{TenantID: tenantID, Price: p, EffectiveFrom: from})
				return nil
			},
			UseStandardPriceFn: func(ctx context.Context, tenantID string, from time.Time) error {
				defer w.lock()()
				w.prices = append(w.prices, nozzle.PriceVersion{TenantID: tenantID, EffectiveFrom: from, Standard: true})
				return nil
			},
			PriceAtFn: func(ctx context.Context, tenantID string, at time.Time) (nozzle.Price, error) {
				defer w.lock()()
				return w.priceAt(tenantID, at), nil
			},
			PricesFn: func(ctx context.Context, tenantID string) ([]nozzle.PriceVersion, error) {
				defer w.lock()()
				var out []nozzle.PriceVersion
				for _, pv := range w.prices {
					if pv.TenantID == tenantID {
						out = append(out, pv)
					}
				}
				return out, nil
			},
		},
		keys: &mock.KeyService{
			CreateKeyFn: func(ctx context.Context, k *nozzle.APIKey) error {
				defer w.lock()()
				k.ID, k.CreatedAt = w.nextID("key_"), w.now().UTC()
				w.keys[k.Digest] = clone(k)
				return nil
			},
			KeyByDigestFn: func(ctx context.Context, digest string) (*nozzle.APIKey, error) {
				w.digestLookups.Add(1)
				defer w.lock()()
				if k := w.keys[digest]; k != nil && !k.Revoked() {
					return clone(k), nil
				}
				return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Invalid key.")
			},
			KeysFn: func(ctx context.Context, tenantID string) ([]*nozzle.APIKey, error) {
				defer w.lock()()
				return collect(w.keys, func(k *nozzle.APIKey) bool { return k.TenantID == tenantID },
					func(a, b *nozzle.APIKey) bool { return a.ID > b.ID }), nil
			},
			KeyPageFn: func(ctx context.Context, tenantID string, q nozzle.PageQuery, f nozzle.KeyFilter) (*nozzle.Page[*nozzle.APIKey], error) {
				defer w.lock()()
				// by creation (the world's ids count up); revoked keys
				// alone by the time they were revoked
				all := collect(w.keys, func(k *nozzle.APIKey) bool { return k.TenantID == tenantID },
					func(a, b *nozzle.APIKey) bool {
						if f == nozzle.RevokedKeys && !a.RevokedAt.Equal(b.RevokedAt) {
							return a.RevokedAt.Before(b.RevokedAt)
						}
						return seqOf(a.ID) < seqOf(b.ID)
					})
				return mock.Paginate(all, func(k *nozzle.APIKey) string { return k.ID }, f.Keep, nozzle.Descending, q)
			},
			RevokeKeyFn: func(ctx context.Context, tenantID, id string) error {
				defer w.lock()()
				for _, k := range w.keys {
					if k.ID == id && k.TenantID == tenantID {
						if !k.Revoked() {
							k.RevokedAt = w.now().UTC()
						}
						return nil
					}
				}
				return nozzle.Errorf(nozzle.ENOTFOUND, "No key %q.", id)
			},
			TouchKeysFn: func(ctx context.Context, last map[string]time.Time) error {
				defer w.lock()()
				for id, at := range last {
					w.touched[id] = at
				}
				for _, k := range w.keys {
					if at, ok := last[k.ID]; ok {
						k.LastUsedAt = at
					}
				}
				return nil
			},
		},
		adapterS: &mock.AdapterService{
			CreateAdapterFn: func(ctx context.Context, a *nozzle.Adapter) error {
				defer w.lock()()
				if w.adapters[a.TenantID+"/"+a.Name] != nil {
					return nozzle.Errorf(nozzle.ECONFLICT, "Taken.")
				}
				a.ID, a.CreatedAt = w.nextID("ad_"), w.now().UTC()
				w.adapters[a.TenantID+"/"+a.Name] = clone(a)
				return nil
			},
			AdapterFn: func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
				defer w.lock()()
				if a := w.adapters[tenantID+"/"+name]; a != nil {
					return clone(a), nil
				}
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No adapter.")
			},
			AdaptersFn: func(ctx context.Context, tenantID string) ([]*nozzle.Adapter, error) {
				defer w.lock()()
				return collect(w.adapters, func(a *nozzle.Adapter) bool { return a.TenantID == tenantID },
					func(a, b *nozzle.Adapter) bool { return a.Name < b.Name }), nil
			},
			AdapterPageFn: func(ctx context.Context, tenantID string, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Adapter], error) {
				defer w.lock()()
				all := collect(w.adapters, func(a *nozzle.Adapter) bool { return a.TenantID == tenantID },
					func(a, b *nozzle.Adapter) bool { return a.Name < b.Name })
				return mock.Paginate(all, func(a *nozzle.Adapter) string { return a.ID }, nil, nozzle.Ascending, q)
			},
			DeleteAdapterFn: func(ctx context.Context, tenantID, name string) (*nozzle.Adapter, error) {
				defer w.lock()()
				a := w.adapters[tenantID+"/"+name]
				if a == nil {
					return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No adapter.")
				}
				delete(w.adapters, tenantID+"/"+name)
				return a, nil
			},
			AdapterStorageUsedFn: func(ctx context.Context, tenantID string) (int64, error) {
				defer w.lock()()
				var n int64
				for _, a := range w.adapters {
					if a.TenantID == tenantID {
						n += a.SizeBytes
					}
				}
				return n, nil
			},
			AdapterRefsFn: func(ctx context.Context, sha string) (int, error) {
				defer w.lock()()
				n := 0
				for _, a := range w.adapters {
					if a.SHA256 == sha {
						n++
					}
				}
				return n, nil
			},
		},
		store: &mock.AdapterStore{
			ImportFn: w.importAdapter,
			OpenFn: func(ctx context.Context, sha, name string) (io.ReadCloser, int64, error) {
				defer w.lock()()
				b, ok := w.stored[sha][name]
				if !ok {
					return nil, 0, nozzle.Errorf(nozzle.ENOTFOUND, "Not stored.")
				}
				return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
			},
			RemoveFn: func(ctx context.Context, sha string) error {
				defer w.lock()()
				delete(w.stored, sha)
				w.removed = append(w.removed, sha)
				return nil
			},
			StoredFn: func(ctx context.Context) ([]string, error) {
				defer w.lock()()
				return slices.Sorted(maps.Keys(w.stored)), nil
			},
		},
		ledger: &mock.Ledger{
			RecordUsageFn: func(ctx context.Context, ev *nozzle.UsageEvent) (bool, error) {
				defer w.lock()()
				// The event ends its request's checkpoint, duplicate or not.
				delete(w.checkpoints, ev.RequestID)
				if ev.CheckpointID != "" {
					delete(w.checkpoints, ev.CheckpointID)
				}
				if old := w.byID[ev.RequestID]; old != nil {
					*ev = *clone(old)
					return true, nil
				}
				if ev.Status != nozzle.UsageFailed {
					ev.ChargeUSD = w.priceAt(ev.TenantID, ev.Time).Charge(ev.PromptTokens, ev.CompletionTokens)
				}
				e := clone(ev)
				e.Response = append([]byte(nil), ev.Response...)
				e.CheckpointID = "" // not stored; ckptEnds keeps it
				w.ckptEnds = append(w.ckptEnds, ev.CheckpointID)
				if a := e.AttemptID; a != "" && w.byID[a] == nil && w.byAttempt[a] == nil {
					w.byAttempt[a] = e
				} else {
					e.AttemptID = "" // another event holds it
				}
				w.events = append(w.events, e)
				w.byID[e.RequestID] = e
				return false, nil
			},
			UsageFn: func(ctx context.Context, id string) (*nozzle.UsageEvent, error) {
				defer w.lock()()
				if e := w.byID[id]; e != nil {
					return clone(e), nil
				}
				if e := w.byAttempt[id]; e != nil {
					return clone(e), nil
				}
				return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No usage.")
			},
		},
		budget: &mock.BudgetService{
			ReserveBudgetFn: func(ctx context.Context, tenantID string, usd float64) (func(), error) {
				defer w.lock()()
				if t := w.tenants[tenantID]; t.MonthlyBudgetUSD > 0 && w.reserved+usd > t.MonthlyBudgetUSD {
					return nil, nozzle.Errorf(nozzle.EQUOTA, "Monthly budget exhausted.").WithRetryAfter(90 * time.Minute)
				}
				w.reserved += usd
				var once sync.Once
				return func() {
					once.Do(func() {
						defer w.lock()()
						w.reserved -= usd
						w.released++
					})
				}, nil
			},
		},
		reporter: &mock.Reporter{ReportFn: w.report},
		users:    w.userService(),
	}
}

func (w *world) userService() *mock.UserService {
	return &mock.UserService{
		CreateUserFn: func(ctx context.Context, u *nozzle.User) error {
			defer w.lock()()
			for _, x := range w.users {
				if strings.EqualFold(x.Email, u.Email) {
					return nozzle.Errorf(nozzle.ECONFLICT, "A user with this email exists already.").WithParam("email")
				}
			}
			if u.TenantID != "" && w.tenants[u.TenantID] == nil {
				return nozzle.Errorf(nozzle.ENOTFOUND, "No tenant.")
			}
			u.ID, u.CreatedAt = w.nextID("usr_"), w.now().UTC()
			w.users[u.ID] = clone(u)
			return nil
		},
		UserFn: func(ctx context.Context, id string) (*nozzle.User, error) {
			defer w.lock()()
			if u := w.users[id]; u != nil {
				return clone(u), nil
			}
			return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No user.")
		},
		UserByEmailFn: func(ctx context.Context, email string) (*nozzle.User, error) {
			defer w.lock()()
			for _, u := range w.users {
				if strings.EqualFold(u.Email, strings.TrimSpace(email)) {
					return clone(u), nil
				}
			}
			return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No user.")
		},
		UserByInviteFn: func(ctx context.Context, digest string) (*nozzle.User, error) {
			defer w.lock()()
			for _, u := range w.users {
				if digest != "" && u.InviteDigest == digest {
					return clone(u), nil
				}
			}
			return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No invite.")
		},
		UsersFn: func(ctx context.Context, tenantID string) ([]*nozzle.User, error) {
			defer w.lock()()
			return collect(w.users, func(u *nozzle.User) bool { return tenantID == "" || u.TenantID == tenantID },
				func(a, b *nozzle.User) bool { return a.ID < b.ID }), nil
		},
		UpdateUserFn: func(ctx context.Context, u *nozzle.User) error {
			defer w.lock()()
			old := w.users[u.ID]
			if old == nil {
				return nozzle.Errorf(nozzle.ENOTFOUND, "No user.")
			}
			old.PasswordHash, old.InviteDigest, old.InviteExpires, old.Disabled, old.SessionsFrom = u.PasswordHash, u.InviteDigest, u.InviteExpires, u.Disabled, u.SessionsFrom
			return nil
		},
		CreateSessionFn: func(ctx context.Context, s *nozzle.Session) error {
			defer w.lock()()
			if w.sessions[s.ID] != nil {
				return nozzle.Errorf(nozzle.ECONFLICT, "Session exists.")
			}
			s.CreatedAt = w.now().UTC()
			w.sessions[s.ID] = clone(s)
			return nil
		},
		SessionFn: func(ctx context.Context, id string) (*nozzle.Session, error) {
			defer w.lock()()
			s := w.sessions[id]
			if s == nil || !s.RevokedAt.IsZero() || !w.now().Before(s.ExpiresAt) {
				return nil, nozzle.Errorf(nozzle.EUNAUTHORIZED, "Please sign in.")
			}
			return clone(s), nil
		},
		RevokeSessionFn: func(ctx context.Context, id string) error {
			defer w.lock()()
			if s := w.sessions[id]; s != nil && s.RevokedAt.IsZero() {
				s.RevokedAt = w.now().UTC()
			}
			return nil
		},
	}
}

// importAdapter checks a PEFT folder the way the runtime's store does, in
// short: a LoRA config with a rank and target modules, and a weights file
// that is a safetensors file whose header parses (or, for the API tests'
// small uploads, starts with "SAFE"). The digest is over both files.
// importHold stops imports until release is closed, telling started of
// each.
type importHold struct{ started, release chan struct{} }

func (w *world) importAdapter(ctx context.Context, dir string) (*nozzle.AdapterManifest, error) {
	defer os.RemoveAll(dir)
	if h := w.importHold.Load(); h != nil { // a test holds imports here
		h.started <- struct{}{}
		<-h.release
	}
	cfgB, err := os.ReadFile(filepath.Join(dir, nozzle.AdapterConfigFile))
	if err != nil {
		return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_config.json is missing.")
	}
	var cfg struct {
		PeftType string   `json:"peft_type"`
		R        int      `json:"r"`
		Alpha    float64  `json:"lora_alpha"`
		Targets  []string `json:"target_modules"`
		Base     string   `json:"base_model_name_or_path"`
	}
	if err := json.Unmarshal(cfgB, &cfg); err != nil {
		return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_config.json is not valid JSON: %v.", err).WithParam("adapter_config.json")
	}
	if cfg.PeftType != "LORA" {
		return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_config.json: peft_type is %q; only LORA adapters are supported.", cfg.PeftType).WithParam("adapter_config.json")
	}
	if cfg.R <= 0 || cfg.R > 64 || len(cfg.Targets) == 0 {
		return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_config.json: r must be 1 to 64 and target_modules must not be empty.").WithParam("adapter_config.json")
	}
	wB, err := os.ReadFile(filepath.Join(dir, nozzle.AdapterWeightsFile))
	if err != nil {
		return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_model.safetensors is missing.")
	}
	if !bytes.HasPrefix(wB, []byte("SAFE")) &&
		(len(wB) < 8 || binary.LittleEndian.Uint64(wB) > uint64(len(wB)-8) || !json.Valid(wB[8:8+binary.LittleEndian.Uint64(wB)])) {
		return nil, nozzle.Errorf(nozzle.EINVALID, "adapter_model.safetensors is not a safetensors file.").WithParam("adapter_model.safetensors")
	}
	sha := sha256hex(append(append([]byte{}, cfgB...), wB...))
	w.mu.Lock()
	w.stored[sha] = map[string][]byte{nozzle.AdapterConfigFile: cfgB, nozzle.AdapterWeightsFile: wB}
	w.mu.Unlock()
	alpha := cfg.Alpha
	if alpha == 0 {
		alpha = float64(cfg.R)
	}
	return &nozzle.AdapterManifest{SHA256: sha, Rank: cfg.R, Alpha: alpha, TargetModules: cfg.Targets, Layers: 2,
		SizeBytes: int64(len(cfgB) + len(wB)), BaseModel: cfg.Base}, nil
}

// writeTestAdapter writes a small PEFT adapter folder.
func writeTestAdapter(dir string, rank int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`{"peft_type": "LORA", "r": %d, "lora_alpha": %d, "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "nozzle-demo"}`, rank, 2*rank)
	if err := os.WriteFile(filepath.Join(dir, nozzle.AdapterConfigFile), []byte(cfg), 0o644); err != nil {
		return err
	}
	header := []byte(fmt.Sprintf(`{"base_model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[%d,4],"data_offsets":[0,%d]}}`, rank, rank*16))
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.Write(header)
	b.Write(make([]byte, rank*16))
	return os.WriteFile(filepath.Join(dir, nozzle.AdapterWeightsFile), b.Bytes(), 0o644)
}

// thinkPrompt, in a chat's last message, has a reasoning world's runtime
// (world.reasoning) think before it answers, in thoughtWords.
const thinkPrompt = "Think first."

var thoughtWords = []string{"<think>", "\n", "The", " user", " asks", " about", " <pools>", " &", " GPUs", ".", "\n", "</think>", "\n\n"}

func (w *world) generate(ctx context.Context, req *nozzle.GenerateRequest, emit func(nozzle.Chunk) error) (*nozzle.GenerateResult, error) {
	prompt := 0
	for _, m := range req.Messages {
		prompt += len(strings.Fields(m.Content)) + 4
	}
	prompt += len(strings.Fields(req.Prompt))
	res := &nozzle.GenerateResult{PromptTokens: prompt, RuntimeID: "local", RatePerHour: w.rate, FinishReason: nozzle.FinishStop}
	words := w.words
	if n := len(req.Messages); w.reasoning && n > 0 && strings.Contains(req.Messages[n-1].Content, thinkPrompt) {
		words = append(append([]string{}, thoughtWords...), words...)
	}
	if req.MaxTokens > 0 && req.MaxTokens < len(words) {
		words = words[:req.MaxTokens]
		res.FinishReason = nozzle.FinishLength
	}
	if len(words) > 0 && words[0] == thoughtWords[0] {
		res.ReasoningTokens = min(len(words), len(thoughtWords))
	}
	for _, word := range words {
		if w.delay > 0 {
			select {
			case <-time.After(w.delay):
			case <-ctx.Done():
				return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.")
			}
		}
		res.CompletionTokens++
		res.DeviceSeconds += 0.02
		if err := emit(nozzle.Chunk{Text: word}); err != nil {
			return res, nozzle.Errorf(nozzle.ECANCELED, "Canceled.").Wrap(err)
		}
	}
	if req.Adapter != nil {
		w.mu.Lock()
		w.tiers[req.Adapter.SHA256] = nozzle.TierDevice
		w.mu.Unlock()
	}
	return res, nil
}

// gpu is the runtime's capacity over [start, end): up since w.started, busy
// for the device time of the requests in the period. It also returns the
// requests' active cost. w.mu is held.
func (w *world) gpu(start, end time.Time) (nozzle.GPUSummary, float64) {
	upEnd, upStart := end, start
	if now := w.now(); now.Before(upEnd) {
		upEnd = now
	}
	if w.started.After(upStart) {
		upStart = w.started
	}
	up := max(0, upEnd.Sub(upStart).Seconds())
	var active, activeCost float64
	for _, e := range w.events {
		if !e.Time.Before(start) && e.Time.Before(end) {
			active += e.DeviceSeconds
			activeCost += e.DeviceSeconds * e.RatePerHour / 3600
		}
	}
	idle := max(0, up-active)
	g := nozzle.GPUSummary{GPUFigures: nozzle.GPUFigures{UptimeSeconds: up, ActiveSeconds: min(active, up), IdleSeconds: idle, CostUSD: up * w.rate / 3600, IdleCostUSD: idle * w.rate / 3600}}
	if up > 0 {
		g.Utilization = g.ActiveSeconds / up
	}
	return g, activeCost
}

// report groups the ledger's events the way billing does, in short: active
// cost from device time, idle time (the runtime up since w.started) shared
// by active cost under the prorata policy, a dedicated GPU per adapter.
func (w *world) report(ctx context.Context, q nozzle.ReportQuery) (*nozzle.Report, error) {
	defer w.lock()()
	w.reports++
	if w.reportErr != nil {
		return nil, w.reportErr
	}
	for _, g := range q.GroupBy {
		if !slices.Contains([]string{nozzle.GroupHour, nozzle.GroupDay, nozzle.GroupAdapter, nozzle.GroupTenant}, g) {
			return nil, nozzle.Errorf(nozzle.EINVALID, "Unknown group %q.", g)
		}
	}
	if q.TenantID != "" && w.tenants[q.TenantID] == nil {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "No tenant.")
	}
	now := w.now().UTC()
	gpu, activeCost := w.gpu(q.Start, q.End)
	idle, idleCost := gpu.IdleSeconds, gpu.IdleCostUSD
	rep := &nozzle.Report{Start: q.Start, End: q.End, GroupBy: q.GroupBy, IdlePolicy: nozzle.IdleProrata}
	if w.operatorIdle { // the operator keeps the idle time: tenants carry none of it
		rep.IdlePolicy = nozzle.IdleOperator
		gpu.OperatorIdleUSD, idle, idleCost = idleCost, 0, 0
	}
	rows := map[string]*nozzle.ReportRow{}
	var keys []string
	add := func(r *nozzle.ReportRow, e *nozzle.UsageEvent) {
		r.Requests++
		switch e.Status {
		case nozzle.UsageFailed:
			r.FailedRequests++
			r.FailedPromptTokens += e.PromptTokens
			r.FailedCompletionTokens += e.CompletionTokens
		case nozzle.UsageCanceled:
			r.CanceledRequests++
		case nozzle.UsageInterrupted:
			r.InterruptedRequests++
		}
		r.PromptTokens += e.PromptTokens
		r.CachedPromptTokens += e.CachedPromptTokens
		r.CompletionTokens += e.CompletionTokens
		r.DeviceSeconds += e.DeviceSeconds
		ac := e.DeviceSeconds * e.RatePerHour / 3600
		r.ActiveCostUSD += ac
		if activeCost > 0 {
			r.IdleCostUSD += idleCost * ac / activeCost
			r.IdleSeconds += idle * ac / activeCost
		}
		r.ChargedUSD += e.ChargeUSD
	}
	for _, e := range w.events {
		if e.Time.Before(q.Start) || !e.Time.Before(q.End) || (q.TenantID != "" && e.TenantID != q.TenantID) ||
			(q.AdapterName != "" && e.AdapterName != q.AdapterName) {
			continue
		}
		var key strings.Builder
		var r nozzle.ReportRow
		for _, g := range q.GroupBy {
			switch g {
			case nozzle.GroupHour:
				r.Time = e.Time.UTC().Truncate(time.Hour)
			case nozzle.GroupDay:
				t := e.Time.UTC()
				r.Time = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
			case nozzle.GroupTenant:
				r.TenantID, r.TenantName = e.TenantID, w.tenants[e.TenantID].Name
			case nozzle.GroupAdapter:
				r.AdapterID, r.AdapterName = e.AdapterID, e.AdapterName
			}
		}
		fmt.Fprintf(&key, "%d|%s|%s", r.Time.Unix(), r.TenantID, r.AdapterID)
		if rows[key.String()] == nil {
			rows[key.String()] = &r
			keys = append(keys, key.String())
		}
		add(rows[key.String()], e)
		add(&rep.Total, e)
	}
	hours := q.End.Sub(q.Start).Hours()
	finish := func(r *nozzle.ReportRow) {
		r.CostUSD = r.ActiveCostUSD + r.IdleCostUSD
		r.MarginUSD = r.ChargedUSD - r.CostUSD
		r.DedicatedUSD = hours * w.rate
		if r.DedicatedUSD > 0 {
			r.SavingPercent = (1 - r.CostUSD/r.DedicatedUSD) * 100
		}
	}
	for _, k := range keys {
		r := rows[k]
		finish(r)
		rep.Rows = append(rep.Rows, *r)
	}
	sort.SliceStable(rep.Rows, func(i, j int) bool { return rep.Rows[i].Time.Before(rep.Rows[j].Time) })
	finish(&rep.Total)
	if q.TenantID == "" {
		rep.GPU = &gpu
		rep.GPU.MarginUSD = rep.Total.ChargedUSD - gpu.CostUSD
		// The GPU series: each hour or day (UTC) up to the current hour as
		// a report over it alone.
		step := q.GPUStep
		for _, g := range q.GroupBy {
			if step == "" && (g == nozzle.GroupHour || g == nozzle.GroupDay) {
				step = g
			}
		}
		if step != "" {
			rep.GPU.Step = step
			for t := q.Start; t.Before(q.End) && t.Before(now.Truncate(time.Hour).Add(time.Hour)); {
				next := t.Add(time.Hour)
				if step == nozzle.GroupDay {
					next = t.Truncate(24*time.Hour).AddDate(0, 0, 1)
				}
				if next.After(q.End) {
					next = q.End
				}
				g, _ := w.gpu(t, next)
				rep.GPU.Series = append(rep.GPU.Series, nozzle.GPUBucket{Time: t, GPUFigures: g.GPUFigures})
				t = next
			}
		}
		rep.Outbox = &nozzle.OutboxState{Enabled: true, Pending: 1, Sent: 12, LastSentAt: now.Add(-40 * time.Minute)}
	}
	return rep, nil
}
