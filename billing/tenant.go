package billing

import (
	"bytes"
	"context"
	"math"
	"sort"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// CreateTenant stores a new tenant, filling ID and CreatedAt. Returns
// ECONFLICT if the name is taken, EINVALID if it fails Validate.
func (l *Ledger) CreateTenant(ctx context.Context, t *nozzle.Tenant) error {
	if err := nozzle.ValidateTenantName(t.Name); err != nil {
		return err
	}
	if err := t.Validate(); err != nil {
		return err
	}
	rec := *t
	rec.ID = newID(nozzle.TenantIDPrefix)
	rec.CreatedAt = l.now().UTC()
	err := l.write(ctx, func(w *wtx) error {
		names := w.tx.Bucket(bTenantNames)
		if names.Get([]byte(lower(rec.Name))) != nil {
			return nozzle.Errorf(nozzle.ECONFLICT, "A tenant named %q exists already.", rec.Name).WithParam("name")
		}
		if err := names.Put([]byte(lower(rec.Name)), []byte(rec.ID)); err != nil {
			return err
		}
		if err := w.tx.Bucket(bTenantOrder).Put(tenantOrderKey(&rec), []byte{}); err != nil {
			return err
		}
		w.cacheChanged = true
		return w.tx.Bucket(bTenants).Put([]byte(rec.ID), encodeJSON(tenantRecord{rec}))
	})
	if err != nil {
		return err
	}
	*t = rec
	return nil
}

// Tenant returns a tenant by ID. Returns ENOTFOUND if there is none.
func (l *Ledger) Tenant(ctx context.Context, id string) (*nozzle.Tenant, error) {
	t, gen, ok := l.auth.tenant(id)
	if ok {
		return t, nil
	}
	err := l.view(func(tx *bolt.Tx) (err error) { t, err = getTenant(tx, id); return err })
	if err != nil {
		return nil, err
	}
	l.auth.putTenant(gen, t)
	return t, nil
}

func getTenant(tx *bolt.Tx, id string) (*nozzle.Tenant, error) {
	v := tx.Bucket(bTenants).Get([]byte(id))
	if v == nil {
		return nil, nozzle.Errorf(nozzle.ENOTFOUND, "Tenant %q does not exist.", id)
	}
	return decodeTenant(v)
}

// Tenants returns every tenant, ordered by creation.
func (l *Ledger) Tenants(ctx context.Context) ([]*nozzle.Tenant, error) {
	var out []*nozzle.Tenant
	err := l.view(func(tx *bolt.Tx) (err error) { out, err = allTenants(tx); return err })
	return out, err
}

func allTenants(tx *bolt.Tx) ([]*nozzle.Tenant, error) {
	var out []*nozzle.Tenant
	err := tx.Bucket(bTenants).ForEach(func(_, v []byte) error {
		t, err := decodeTenant(v)
		if err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}

// TenantPage returns one page of the tenants ordered by creation (oldest
// first unless q asks for descending), read from tenant_order.
func (l *Ledger) TenantPage(ctx context.Context, q nozzle.PageQuery) (*nozzle.Page[*nozzle.Tenant], error) {
	p, param, id, err := pageSpec(q, nozzle.Ascending)
	if err != nil {
		return nil, err
	}
	out := &nozzle.Page[*nozzle.Tenant]{}
	err = l.view(func(tx *bolt.Tx) error {
		tenants := tx.Bucket(bTenants)
		if id != "" {
			v := tenants.Get([]byte(id))
			if v == nil {
				return nozzle.UnknownCursor(param, id)
			}
			t, err := decodeTenant(v)
			if err != nil {
				return err
			}
			p.from = tenantOrderKey(t)
		}
		var err error
		out.Data, out.HasMore, err = readIndexPage(tx.Bucket(bTenantOrder).Cursor(), p, func(k, _ []byte) (*nozzle.Tenant, bool, error) {
			if len(k) <= 8 {
				return nil, false, nil
			}
			v := tenants.Get(k[8:])
			if v == nil {
				return nil, false, nil
			}
			t, err := decodeTenant(v)
			return t, err == nil, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpdateTenant applies upd. Returns ENOTFOUND if there is no such tenant.
func (l *Ledger) UpdateTenant(ctx context.Context, id string, upd nozzle.TenantUpdate) (*nozzle.Tenant, error) {
	var out *nozzle.Tenant
	err := l.write(ctx, func(w *wtx) error {
		t, err := getTenant(w.tx, id)
		if err != nil {
			return err
		}
		old := t.Name
		if upd.Name != nil {
			t.Name = *upd.Name
		}
		if upd.Suspended != nil {
			t.Suspended = *upd.Suspended
		}
		if upd.MonthlyBudgetUSD != nil {
			t.MonthlyBudgetUSD = *upd.MonthlyBudgetUSD
		}
		if upd.Limits != nil {
			t.Limits = *upd.Limits
		}
		if upd.StripeCustomerID != nil {
			t.StripeCustomerID = *upd.StripeCustomerID
		}
		if err := t.Validate(); err != nil {
			return err
		}
		names := w.tx.Bucket(bTenantNames)
		if t.Name != old {
			if err := nozzle.ValidateTenantName(t.Name); err != nil {
				return err
			}
		}
		if lower(old) != lower(t.Name) {
			if names.Get([]byte(lower(t.Name))) != nil {
				return nozzle.Errorf(nozzle.ECONFLICT, "A tenant named %q exists already.", t.Name).WithParam("name")
			}
			if err := names.Delete([]byte(lower(old))); err != nil {
				return err
			}
			if err := names.Put([]byte(lower(t.Name)), []byte(t.ID)); err != nil {
				return err
			}
		}
		out = t
		w.cacheChanged = true
		return w.tx.Bucket(bTenants).Put([]byte(id), encodeJSON(tenantRecord{*t}))
	})
	return out, err
}

// priceVersion is one stored price with the time it takes effect.
type priceVersion struct {
	from  int64 // Unix nanoseconds
	price nozzle.Price
	// fallback: the ledger's built-in default price applies (a tenant's
	// return to the standard prices when no default version was in force).
	fallback bool
	standard bool // a tenant's mark: the standard prices from here
}

func priceKey(tenantID string, from time.Time) []byte {
	return join(lp(tenantID), u64key(uint64(from.UnixNano())^(1<<63)))
}

func validPrice(p nozzle.Price) error {
	if !nonNegative(p.PromptPerMillionUSD, p.CompletionPerMillionUSD) ||
		p.PromptPerMillionUSD > nozzle.MaxPricePerMillionUSD || p.CompletionPerMillionUSD > nozzle.MaxPricePerMillionUSD {
		return nozzle.Errorf(nozzle.EINVALID, "Prices must be numbers from 0 to %.0f USD per million tokens.", float64(nozzle.MaxPricePerMillionUSD)).WithParam("price")
	}
	if d := p.BatchDiscountPercent; !(d >= 0 && d <= 100) {
		return nozzle.Errorf(nozzle.EINVALID, "batch_discount_percent must be a number from 0 to 100.").WithParam("batch_discount_percent")
	}
	if c := p.CachedPromptPerMillionUSD; !(c >= 0 && c <= p.PromptPerMillionUSD) {
		return nozzle.Errorf(nozzle.EINVALID, "cached_prompt_per_million_usd must be a number from 0 to prompt_per_million_usd (%g): a prompt token the prefix cache held costs no more than one it did not.",
			p.PromptPerMillionUSD).WithParam("cached_prompt_per_million_usd")
	}
	return nil
}

// SetPrice puts a price in force from the given time for a tenant, or for
// everyone when tenantID is empty. A price set for a time already in force
// replaces it. Events already recorded keep the charge they were given.
func (l *Ledger) SetPrice(ctx context.Context, tenantID string, p nozzle.Price, from time.Time) error {
	if err := validPrice(p); err != nil {
		return err
	}
	if from.IsZero() {
		return nozzle.Errorf(nozzle.EINVALID, "A price needs the time it takes effect.").WithParam("effective_from")
	}
	return l.write(ctx, func(w *wtx) error {
		if tenantID != "" {
			if _, err := getTenant(w.tx, tenantID); err != nil {
				return err
			}
		}
		w.cacheChanged = true
		if w.prices != nil {
			delete(w.prices, tenantID) // later events in this batch re-read it
			if tenantID == "" {
				clear(w.prices)
			}
		}
		return w.tx.Bucket(bPrices).Put(priceKey(tenantID, from), encodePrice(p))
	})
}

// UseStandardPrice ends a tenant's price override from the given time: the
// tenant pays the standard prices, as they change, until an override is
// set again. Events already recorded keep the charge they were given.
func (l *Ledger) UseStandardPrice(ctx context.Context, tenantID string, from time.Time) error {
	if tenantID == "" {
		return nozzle.Errorf(nozzle.EINVALID, "Only a tenant's prices can return to the standard ones.").WithParam("tenant_id")
	}
	if from.IsZero() {
		return nozzle.Errorf(nozzle.EINVALID, "A price needs the time it takes effect.").WithParam("effective_from")
	}
	return l.write(ctx, func(w *wtx) error {
		if _, err := getTenant(w.tx, tenantID); err != nil {
			return err
		}
		w.cacheChanged = true
		if w.prices != nil {
			delete(w.prices, tenantID)
		}
		return w.tx.Bucket(bPrices).Put(priceKey(tenantID, from), encodeStandardPrice())
	})
}

// priceHistory reads the default price list and, when tenantID is set, the
// tenant's own, merged: a tenant's version overrides the default from its
// time on.
func priceHistory(tx *bolt.Tx, tenantID string) ([]priceVersion, error) {
	b := tx.Bucket(bPrices)
	read := func(id string) ([]priceVersion, error) {
		var out []priceVersion
		prefix := lp(id)
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
			p, standard, err := decodePrice(v)
			if err != nil {
				return nil, err
			}
			out = append(out, priceVersion{from: int64(bytesU64(k[len(prefix):]) ^ (1 << 63)), price: p, standard: standard})
		}
		return out, nil
	}
	def, err := read("")
	if err != nil || tenantID == "" {
		return def, err
	}
	own, err := read(tenantID)
	if err != nil {
		return nil, err
	}
	if len(own) == 0 {
		return def, nil
	}
	return mergePrices(def, own), nil
}

// mergePrices returns the effective price history: the default list until
// the tenant's first version; then each override of the tenant's until its
// next version, and from each of its standard marks the default list again
// (the version in force at the mark, and those after it).
func mergePrices(def, own []priceVersion) []priceVersion {
	var out []priceVersion
	between := func(from, to int64) {
		for _, v := range def {
			if v.from > from && v.from < to {
				out = append(out, v)
			}
		}
	}
	between(math.MinInt64, own[0].from)
	for i, o := range own {
		if !o.standard {
			out = append(out, o)
			continue
		}
		at := priceVersion{from: o.from, fallback: true}
		for _, v := range def {
			if v.from <= o.from {
				at = priceVersion{from: o.from, price: v.price}
			}
		}
		out = append(out, at)
		to := int64(math.MaxInt64)
		if i+1 < len(own) {
			to = own[i+1].from
		}
		between(o.from, to)
	}
	return out
}

// priceAt returns the price in force at t: the last version from at or
// before t, else fallback.
func priceAt(hist []priceVersion, fallback nozzle.Price, t time.Time) nozzle.Price {
	n := t.UnixNano()
	i := sort.Search(len(hist), func(i int) bool { return hist[i].from > n })
	if i == 0 || hist[i-1].fallback {
		return fallback
	}
	return hist[i-1].price
}

// PriceAt returns the price in force for a tenant at a time: the tenant's
// override if one is in force, else the default.
func (l *Ledger) PriceAt(ctx context.Context, tenantID string, at time.Time) (nozzle.Price, error) {
	var p nozzle.Price
	err := l.view(func(tx *bolt.Tx) error {
		hist, err := priceHistory(tx, tenantID)
		p = priceAt(hist, l.defPrice, at)
		return err
	})
	return p, err
}

// Prices returns the price history of a tenant (or of the default list
// when tenantID is empty), oldest first.
func (l *Ledger) Prices(ctx context.Context, tenantID string) ([]nozzle.PriceVersion, error) {
	var out []nozzle.PriceVersion
	err := l.view(func(tx *bolt.Tx) error {
		prefix := lp(tenantID)
		c := tx.Bucket(bPrices).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
			p, standard, err := decodePrice(v)
			if err != nil {
				return err
			}
			from := time.Unix(0, int64(bytesU64(k[len(prefix):])^(1<<63))).UTC()
			out = append(out, nozzle.PriceVersion{TenantID: tenantID, Price: p, EffectiveFrom: from, Standard: standard})
		}
		return nil
	})
	return out, err
}
