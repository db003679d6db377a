package nozzle

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"math/big"
	"strings"
	"time"
)

// Scope is a permission an API key carries.
type Scope string

// Scopes an API key can carry.
const (
	ScopeInference Scope = "inference" // completions, chat completions, models
	ScopeAdapters  Scope = "adapters"  // upload, list and delete adapters
	ScopeUsage     Scope = "usage"     // usage and cost reports, key management
)

// AllScopes are the scopes of a key created without an explicit list.
var AllScopes = []Scope{ScopeInference, ScopeAdapters, ScopeUsage}

// APIKey is a tenant's API key. Only a digest of the secret is ever stored.
type APIKey struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	// Prefix is the part of the secret safe to display ("nz-AbCd…wxyz").
	Prefix string `json:"prefix"`
	// Digest is KeyDigest of the secret.
	Digest     string    `json:"-"`
	Scopes     []Scope   `json:"scopes"`
	Limits     Limits    `json:"limits"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// Has reports whether the key carries scope s.
func (k *APIKey) Has(s Scope) bool {
	for _, x := range k.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

// Revoked reports whether the key has been revoked.
func (k *APIKey) Revoked() bool { return !k.RevokedAt.IsZero() }

// KeyService stores API keys.
type KeyService interface {
	// CreateKey stores a key whose Digest and Prefix the caller has set,
	// filling ID and CreatedAt.
	CreateKey(ctx context.Context, k *APIKey) error
	// KeyByDigest returns the key with the given digest. Returns
	// EUNAUTHORIZED if there is none or it is revoked.
	KeyByDigest(ctx context.Context, digest string) (*APIKey, error)
	// Keys returns a tenant's keys, revoked ones included, newest first.
	Keys(ctx context.Context, tenantID string) ([]*APIKey, error)
	// KeyPage returns one page of a tenant's keys that pass the filter,
	// ordered by creation (Descending, newest first, unless q says
	// otherwise), or for RevokedKeys by the time they were revoked (the
	// last revoked first). q.After or q.Before naming no key of the
	// tenant is EINVALID (UnknownCursor); a key the filter leaves out is
	// a place in the list all the same (one not revoked, among the
	// revoked ones: before them all).
	KeyPage(ctx context.Context, tenantID string, q PageQuery, f KeyFilter) (*Page[*APIKey], error)
	// RevokeKey revokes a tenant's key. Returns ENOTFOUND if the tenant has
	// no such key.
	RevokeKey(ctx context.Context, tenantID, id string) error
	// TouchKeys records last-use times, batched by the caller.
	TouchKeys(ctx context.Context, lastUsed map[string]time.Time) error
}

// KeyFilter picks the keys a page lists.
type KeyFilter int

// Key filters.
const (
	AllKeys     KeyFilter = iota // revoked ones included
	ActiveKeys                   // keys not revoked
	RevokedKeys                  // revoked keys only, ordered by the time they were revoked
)

// Keep reports whether the filter lists k.
func (f KeyFilter) Keep(k *APIKey) bool {
	switch f {
	case ActiveKeys:
		return !k.Revoked()
	case RevokedKeys:
		return k.Revoked()
	}
	return true
}

// API key format: "nz-" + 43 base62 characters of 32 random bytes + 6 base62
// characters of the CRC32 of everything before them. The checksum lets a
// scanner tell a real key from a random string without a lookup.
const (
	KeyPrefix     = "nz-"
	keyBodyLen    = 43
	keyCheckLen   = 6
	keySecretLen  = len(KeyPrefix) + keyBodyLen + keyCheckLen
	base62Letters = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// NewKeySecret returns a new random API key secret.
func NewKeySecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	body := base62(new(big.Int).SetBytes(b[:]), keyBodyLen)
	s := KeyPrefix + body
	return s + keyChecksum(s), nil
}

// ValidKeyFormat reports whether s has the shape and checksum of an API key,
// without looking it up.
func ValidKeyFormat(s string) bool {
	if len(s) != keySecretLen || !strings.HasPrefix(s, KeyPrefix) {
		return false
	}
	for i := len(KeyPrefix); i < len(s); i++ {
		if strings.IndexByte(base62Letters, s[i]) < 0 {
			return false
		}
	}
	n := len(s) - keyCheckLen
	return keyChecksum(s[:n]) == s[n:]
}

// KeyDigest returns the hex SHA-256 of an API key secret: what is stored.
func KeyDigest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// KeyDisplayPrefix returns the displayable part of a secret.
func KeyDisplayPrefix(secret string) string {
	if len(secret) < 16 {
		return KeyPrefix + "…"
	}
	return secret[:len(KeyPrefix)+4] + "…" + secret[len(secret)-4:]
}

func keyChecksum(s string) string {
	return base62(new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(s)))), keyCheckLen)
}

// base62 encodes n in exactly width characters (most significant first).
func base62(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	m := new(big.Int)
	n = new(big.Int).Set(n)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, m)
		out[i] = base62Letters[m.Int64()]
	}
	return string(out)
}
