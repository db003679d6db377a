package nozzle

import (
	"context"
	"io"
	"regexp"
	"time"
)

// Adapter is a tenant's named LoRA adapter. Its files live in an
// AdapterStore under SHA256; the name is unique within the tenant.
type Adapter struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	AdapterManifest
	CreatedAt time.Time `json:"created_at"`
}

// AdapterManifest is what validation learns about an adapter's files.
type AdapterManifest struct {
	// SHA256 is the content address: hex SHA-256 over the 8-byte
	// little-endian length of adapter_config.json, its bytes, then the bytes
	// of adapter_model.safetensors.
	SHA256 string `json:"sha256"`
	// Rank is the largest rank over the adapter's modules.
	Rank          int      `json:"rank"`
	Alpha         float64  `json:"lora_alpha"`
	UseRSLoRA     bool     `json:"use_rslora,omitempty"`
	TargetModules []string `json:"target_modules"`
	Layers        int      `json:"layers"`
	SizeBytes     int64    `json:"size_bytes"`
	// BaseModel is base_model_name_or_path from the adapter's config.
	BaseModel string `json:"base_model,omitempty"`
	// Warnings are things that did not block the adapter but that its owner
	// should know (a different base_model_name_or_path, say).
	Warnings []string `json:"warnings,omitempty"`
}

// Standard file names inside an adapter folder (PEFT conventions).
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
)

var adapterNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateAdapterName reports whether name is acceptable as an adapter name:
// 1 to 64 characters of letters, digits, '.', '_' and '-', starting with a
// letter or digit. Names never contain path separators or "..".
func ValidateAdapterName(name string) error {
	if name == BaseModelAlias {
		return Errorf(EINVALID, "Adapter name %q is reserved: requests name the base model with it.", name).WithParam("name")
	}
	if !adapterNameRE.MatchString(name) || containsDotDot(name) {
		return Errorf(EINVALID, "Adapter name %q is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.", name).WithParam("name")
	}
	return nil
}

func containsDotDot(s string) bool {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '.' && s[i+1] == '.' {
			return true
		}
	}
	return false
}

// AdapterService stores adapters' metadata.
type AdapterService interface {
	// CreateAdapter stores a new adapter, filling ID and CreatedAt.
	// Returns ECONFLICT if the tenant already has an adapter of that name.
	CreateAdapter(ctx context.Context, a *Adapter) error
	// Adapter returns a tenant's adapter by name. Returns ENOTFOUND if the
	// tenant has none of that name (another tenant's adapter included).
	Adapter(ctx context.Context, tenantID, name string) (*Adapter, error)
	// Adapters returns a tenant's adapters ordered by name.
	Adapters(ctx context.Context, tenantID string) ([]*Adapter, error)
	// AdapterPage returns one page of a tenant's adapters ordered by
	// name (Ascending unless q says otherwise). q.After or q.Before may
	// name an adapter deleted a short while ago (a page's last one,
	// deleted before the next page was asked for); one that names no
	// adapter of the tenant, now or lately, is EINVALID (UnknownCursor).
	AdapterPage(ctx context.Context, tenantID string, q PageQuery) (*Page[*Adapter], error)
	// DeleteAdapter removes a tenant's adapter by name and returns it.
	// Returns ENOTFOUND if there is none.
	DeleteAdapter(ctx context.Context, tenantID, name string) (*Adapter, error)
	// AdapterRefs returns how many adapters (of any tenant) use the files
	// with the given content address.
	AdapterRefs(ctx context.Context, sha256 string) (int, error)
	// AdapterStorageUsed returns the sum of the SizeBytes of a tenant's
	// adapters (what its storage quota counts), 0 for a tenant without
	// any. It is kept as the adapters are created and deleted, and costs
	// the same however many adapters the tenant has.
	AdapterStorageUsed(ctx context.Context, tenantID string) (int64, error)
}

// AdapterStore keeps adapter files content-addressed on disk and validates
// them against the base model before accepting them.
type AdapterStore interface {
	// Import validates the PEFT adapter in dir (adapter_config.json and
	// adapter_model.safetensors) against the base model, then moves it into
	// the store atomically under its SHA256. Importing files already stored
	// is not an error. dir is consumed either way. Returns EINVALID with a
	// message naming the offending field or tensor when validation fails.
	Import(ctx context.Context, dir string) (*AdapterManifest, error)
	// Open opens one stored file (AdapterConfigFile or AdapterWeightsFile)
	// of the adapter with the given content address, and returns its size.
	// Returns ENOTFOUND if it is not stored.
	Open(ctx context.Context, sha256, name string) (io.ReadCloser, int64, error)
	// Remove deletes stored files. Removing unknown files is not an error.
	Remove(ctx context.Context, sha256 string) error
	// Stored lists the content addresses of the stored adapters.
	Stored(ctx context.Context) ([]string, error)
}

// Tier says where an adapter's weights are right now.
type Tier string

// Adapter residency tiers, fastest first.
const (
	TierDevice Tier = "device" // in an engine slot (on the GPU)
	TierHost   Tier = "host"   // in the runtime's host-memory cache
	TierDisk   Tier = "disk"   // only in the store
)
