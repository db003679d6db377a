package billing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// ErrInconsistent is wrapped by Check's error when the ledger's derived
// data does not match its events.
var ErrInconsistent = errors.New("ledger is inconsistent")

// CheckResult says what Check looked at and what it found: the root
// package's account of a check, which the checks add their problems to.
type CheckResult struct{ nozzle.LedgerCheck }

const maxProblems = 50

func (r *CheckResult) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Check verifies the ledger in one read transaction (writes go on): every
// event decodes and is indexed by its request id (and by its attempt id,
// if it has one, attempt_ids holding no other); the hourly rollups, the
// all-tenant hourly totals and the monthly totals equal the sums of the
// events (requests, prompt, cached prompt and completion tokens, device
// time, cost and charges, the batch requests' part of them, and the
// failed and batch requests' cached prompt tokens); the hourly capacity equals the sum of the
// capacity intervals; the outbox never took more of an hour than it
// holds; the indexes the tenants', keys' and adapters' lists are read
// from, and the index of each tenant's users, hold exactly their records; and each tenant's adapter storage
// equals the number and sizes of its adapters. Provisional
// capacity (each runtime's open interval) is not part of these sums: Check
// only verifies that each such record decodes and is filed under its
// runtime. Nor are running requests' usage checkpoints: each must decode,
// be filed under its request id, and have no event stored under that id
// (an event ends its request's checkpoint; both would be charged). Stored
// responses must decode, be indexed by their time, and count the stored
// responses that continue them, and each tenant's response_storage must
// equal their bytes. Conversations must decode, and each one's items
// decode, number fewer than its next sequence number, count as many as
// it says, and be indexed by their ids (conversation_item_ids indexing
// no other), and each tenant's conversation_storage must equal their
// items' bytes. The error wraps ErrInconsistent when something does not match.
func (l *Ledger) Check(ctx context.Context) (*CheckResult, error) {
	res := &CheckResult{}
	err := l.viewUsage(func(tx *bolt.Tx) error {
		rollups := map[string]*rollup{}
		hours := map[string]*rollup{}
		months := map[string]*rollup{}
		reqids, attempts := tx.Bucket(bRequestIDs), tx.Bucket(bAttemptIDs)
		withAttempt := 0 // events with an attempt id
		c := tx.Bucket(bEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if res.Events++; res.Events%65536 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			ev, err := decodeEvent(v)
			if err != nil {
				res.problem("event %x: %v", k, err)
				continue
			}
			if got := reqids.Get([]byte(ev.RequestID)); !bytes.Equal(got, k) {
				res.problem("request id %q is not indexed to its event %x", ev.RequestID, k)
			}
			if ev.AttemptID != "" {
				withAttempt++
				if got := attempts.Get([]byte(ev.AttemptID)); !bytes.Equal(got, k) {
					res.problem("attempt id %q is not indexed to its event %x", ev.AttemptID, k)
				}
			}
			h := hourOf(ev.Time)
			for _, x := range []struct {
				m map[string]*rollup
				k []byte
			}{
				{rollups, rollupKey(ev.TenantID, h, ev.AdapterID)},
				{hours, hourKey(h)},
				{months, monthKey(ev.TenantID, monthOf(ev.Time))},
			} {
				r := x.m[string(x.k)]
				if r == nil {
					r = &rollup{}
					x.m[string(x.k)] = r
				}
				r.addEvent(ev)
			}
		}
		if n := reqids.Stats().KeyN; n != res.Events {
			res.problem("%d request ids index %d events", n, res.Events)
		}
		if n := attempts.Stats().KeyN; n != withAttempt {
			res.problem("%d attempt ids index %d events with one", n, withAttempt)
		}
		res.Rollups = compareRollups(res, "rollup", tx.Bucket(bRollups), rollups)
		compareRollups(res, "hourly total", tx.Bucket(bHours), hours)
		compareRollups(res, "monthly total", tx.Bucket(bMonths), months)

		caps := map[string]*capHour{}
		err := tx.Bucket(bCapacity).ForEach(func(k, v []byte) error {
			res.Intervals++
			iv, err := decodeInterval(v)
			if err != nil {
				res.problem("capacity interval %x: %v", k, err)
				return nil
			}
			splitHours(iv.Start, iv.End, func(h int64, f float64) {
				key := string(capHourKey(h, iv.RuntimeID))
				ch := caps[key]
				if ch == nil {
					ch = &capHour{}
					caps[key] = ch
				}
				ch.add(capHour{
					UptimeSeconds: f * (iv.ActiveSeconds + iv.IdleSeconds),
					ActiveSeconds: f * iv.ActiveSeconds,
					IdleSeconds:   f * iv.IdleSeconds,
					CostUSD:       f * (iv.ActiveSeconds + iv.IdleSeconds) * iv.RatePerHour / 3600,
					IdleCostUSD:   f * iv.IdleSeconds * iv.RatePerHour / 3600,
				})
			})
			return nil
		})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		err = tx.Bucket(bCapHours).ForEach(func(k, v []byte) error {
			seen[string(k)] = true
			got, err := decodeCapHour(v)
			if err != nil {
				res.problem("capacity hour %x: %v", k, err)
				return nil
			}
			want := caps[string(k)]
			if want == nil {
				res.problem("capacity hour %x has no intervals", k)
			} else if !near(got.UptimeSeconds, want.UptimeSeconds) || !near(got.ActiveSeconds, want.ActiveSeconds) ||
				!near(got.CostUSD, want.CostUSD) || !near(got.IdleCostUSD, want.IdleCostUSD) {
				res.problem("capacity hour %x is %+v, its intervals sum to %+v", k, got, *want)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for k := range caps {
			if !seen[k] {
				res.problem("capacity hour %x is missing", k)
			}
		}

		// Provisional capacity: one decodable interval per runtime.
		err = tx.Bucket(bCapOpen).ForEach(func(k, v []byte) error {
			iv, err := decodeInterval(v)
			if err != nil {
				res.problem("provisional capacity %x: %v", k, err)
			} else if iv.RuntimeID != string(k) {
				res.problem("provisional capacity %x holds runtime %q", k, iv.RuntimeID)
			}
			return nil
		})
		if err != nil {
			return err
		}

		// Running requests' checkpoints: none beside its request's event.
		err = tx.Bucket(bCheckpoints).ForEach(func(k, v []byte) error {
			res.Checkpoints++
			ev, err := decodeEvent(v)
			switch {
			case err != nil:
				res.problem("usage checkpoint %q: %v", k, err)
			case ev.RequestID != string(k) || ev.Status != nozzle.UsageInterrupted:
				res.problem("usage checkpoint %q holds request %q, status %s", k, ev.RequestID, ev.Status)
			case reqids.Get(k) != nil:
				res.problem("usage checkpoint %q is left beside its request's event", k)
			}
			return nil
		})
		if err != nil {
			return err
		}

		if err := checkResponses(tx, res); err != nil {
			return err
		}
		if err := checkConversations(tx, res); err != nil {
			return err
		}
		if err := checkBatches(tx, res); err != nil {
			return err
		}
		if err := checkListIndexes(tx, res); err != nil {
			return err
		}
		if err := checkAdapterStorage(tx, res); err != nil {
			return err
		}

		// The outbox never took more of an hour than the hour holds.
		err = tx.Bucket(bBilled).ForEach(func(k, v []byte) error {
			b, err := decodeBilled(v)
			if err != nil {
				res.problem("billed hour %x: %v", k, err)
				return nil
			}
			var sum rollup
			rc := tx.Bucket(bRollups).Cursor()
			for rk, rv := rc.Seek(k); rk != nil && bytes.HasPrefix(rk, k); rk, rv = rc.Next() {
				if r, err := decodeRollup(rv); err == nil {
					sum.add(&r)
				}
			}
			// the prompt meters' tokens and the cached prompt meters' are
			// all prompt tokens (before version 17 the prompt meters' held
			// the cached ones, and the cached meters took none)
			prompt := b.PromptTokens + b.BatchPromptTokens + b.CachedPromptTokens + b.BatchCachedPromptTokens
			batchPrompt := b.BatchPromptTokens + b.BatchCachedPromptTokens
			if prompt > sum.PromptTokens || b.CompletionTokens+b.BatchCompletionTokens > sum.CompletionTokens {
				res.problem("outbox took %d/%d tokens of hour %x holding %d/%d", prompt,
					b.CompletionTokens+b.BatchCompletionTokens, k, sum.PromptTokens, sum.CompletionTokens)
			}
			if batchPrompt > sum.Batch.PromptTokens || b.BatchCompletionTokens > sum.Batch.CompletionTokens {
				res.problem("outbox took %d/%d batch tokens of hour %x holding %d/%d", batchPrompt, b.BatchCompletionTokens, k,
					sum.Batch.PromptTokens, sum.Batch.CompletionTokens)
			}
			if b.CachedPromptTokens+b.BatchCachedPromptTokens > sum.CachedPromptTokens || b.BatchCachedPromptTokens > sum.Batch.CachedPromptTokens {
				res.problem("outbox took %d cached prompt tokens (%d batch) of hour %x holding %d (%d batch)",
					b.CachedPromptTokens+b.BatchCachedPromptTokens, b.BatchCachedPromptTokens, k, sum.CachedPromptTokens, sum.Batch.CachedPromptTokens)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bOutbox).ForEach(func(k, v []byte) error {
			res.OutboxRows++
			if _, err := decodeOutboxRow(v); err != nil {
				res.problem("outbox row %x: %v", k, err)
			}
			return nil
		})
	})
	if err != nil {
		return res, fmt.Errorf("check ledger: %w", err)
	}
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("check ledger: %w: %d problems, first: %s", ErrInconsistent, len(res.Problems), res.Problems[0])
	}
	return res, nil
}

// checkListIndexes verifies the indexes the metadata lists are paged from
// against the records: tenant_order against the tenants, tenant_keys and
// tenant_keys_revoked against the keys, adapter_names against the
// adapters, adapters_deleted against adapters_deleted_at, tenant_users
// against the users.
func checkListIndexes(tx *bolt.Tx, res *CheckResult) error {
	type index struct {
		what, bucket []byte
		want         map[string]string // key → value
	}
	order := index{[]byte("tenant"), bTenantOrder, map[string]string{}}
	keys := index{[]byte("key"), bTenantKeys, map[string]string{}}
	revoked := index{[]byte("revoked key"), bRevokedKeys, map[string]string{}}
	names := index{[]byte("adapter"), bAdapterNames, map[string]string{}}
	gone := index{[]byte("deleted adapter"), bAdapterGoneAt, map[string]string{}}
	users := index{[]byte("user"), bTenantUsers, map[string]string{}}
	err := tx.Bucket(bTenants).ForEach(func(k, v []byte) error {
		if t, err := decodeTenant(v); err != nil {
			res.problem("tenant %q: %v", k, err)
		} else {
			order.want[string(tenantOrderKey(t))] = ""
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bKeys).ForEach(func(k, v []byte) error {
		key, err := decodeKey(v)
		if err != nil {
			res.problem("key %q: %v", k, err)
			return nil
		}
		keys.want[string(tenantKeyKey(key))] = string(tenantKeyValue(key))
		if key.Revoked() {
			revoked.want[string(revokedKeyKey(key))] = ""
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bAdapters).ForEach(func(k, v []byte) error {
		if a, err := decodeAdapter(v); err != nil {
			res.problem("adapter %q: %v", k, err)
		} else {
			names.want[string(join(lp(a.TenantID), []byte(a.Name)))] = a.ID
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bAdapterGone).ForEach(func(k, v []byte) error {
		if g, err := decodeDeletedAdapter(v); err != nil {
			res.problem("deleted adapter %q: %v", k, err)
		} else {
			gone.want[string(join(timeKey(g.DeletedAt), k))] = ""
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = tx.Bucket(bUsers).ForEach(func(k, v []byte) error {
		if u, err := decodeUser(v); err != nil {
			res.problem("user %q: %v", k, err)
		} else if u.ID != string(k) {
			res.problem("user %q holds user %q", k, u.ID)
		} else {
			users.want[string(tenantUserKey(u))] = ""
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, x := range []index{order, keys, revoked, names, gone, users} {
		seen := 0
		err := tx.Bucket(x.bucket).ForEach(func(k, v []byte) error {
			w, ok := x.want[string(k)]
			switch {
			case !ok:
				res.problem("%s index %s holds %q, which names no %s", x.what, x.bucket, k, x.what)
			case w != string(v):
				res.problem("%s index %s holds %q → %q, want %q", x.what, x.bucket, k, v, w)
			default:
				seen++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if seen != len(x.want) {
			res.problem("%s index %s misses %d of %d %ss", x.what, x.bucket, len(x.want)-seen, len(x.want), x.what)
		}
	}
	return nil
}

// checkAdapterStorage verifies each tenant's adapter storage
// (adapter_storage) against its adapters: their number and the sum of
// their sizes.
func checkAdapterStorage(tx *bolt.Tx, res *CheckResult) error {
	want, err := adapterStorageSums(tx, nil) // checkListIndexes reports records that do not decode
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	err = tx.Bucket(bAdapterBytes).ForEach(func(k, v []byte) error {
		seen[string(k)] = true
		got, err := decodeAdapterStorage(v)
		if err != nil {
			res.problem("adapter storage of tenant %q: %v", k, err)
			return nil
		}
		if w := want[string(k)]; got != w {
			res.problem("adapter storage of tenant %q is %d bytes in %d adapters, its adapters hold %d bytes in %d", k, got.Bytes, got.Adapters, w.Bytes, w.Adapters)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for tenantID, w := range want {
		if !seen[tenantID] {
			res.problem("adapter storage of tenant %q is missing, its adapters hold %d bytes in %d", tenantID, w.Bytes, w.Adapters)
		}
	}
	return nil
}

// compareRollups compares a bucket of rollups with the sums computed from
// the events and returns the number of stored rollups.
func compareRollups(res *CheckResult, what string, b *bolt.Bucket, want map[string]*rollup) int {
	n := 0
	seen := make(map[string]bool, len(want))
	_ = b.ForEach(func(k, v []byte) error {
		n++
		seen[string(k)] = true
		got, err := decodeRollup(v)
		if err != nil {
			res.problem("%s %x: %v", what, k, err)
			return nil
		}
		w := want[string(k)]
		if w == nil {
			res.problem("%s %x has no events", what, k)
			return nil
		}
		if got.Requests != w.Requests || got.Failed != w.Failed || got.Canceled != w.Canceled || got.Interrupted != w.Interrupted ||
			got.PromptTokens != w.PromptTokens ||
			got.CachedPromptTokens != w.CachedPromptTokens ||
			got.FailedPromptTokens != w.FailedPromptTokens || got.FailedCompletionTokens != w.FailedCompletionTokens ||
			got.CompletionTokens != w.CompletionTokens || !near(got.DeviceSeconds, w.DeviceSeconds) ||
			!near(got.ActiveCostUSD, w.ActiveCostUSD) || !near(got.ChargedUSD, w.ChargedUSD) ||
			got.Batch.Requests != w.Batch.Requests || got.Batch.PromptTokens != w.Batch.PromptTokens ||
			got.Batch.CompletionTokens != w.Batch.CompletionTokens || got.Batch.FailedPromptTokens != w.Batch.FailedPromptTokens ||
			got.Batch.FailedCompletionTokens != w.Batch.FailedCompletionTokens || !near(got.Batch.ChargedUSD, w.Batch.ChargedUSD) ||
			got.FailedCachedPromptTokens != w.FailedCachedPromptTokens || got.Batch.CachedPromptTokens != w.Batch.CachedPromptTokens ||
			got.Batch.FailedCachedPromptTokens != w.Batch.FailedCachedPromptTokens {
			res.problem("%s %x is %+v, its events sum to %+v", what, k, got, *w)
		}
		return nil
	})
	for k := range want {
		if !seen[k] {
			res.problem("%s %x is missing", what, k)
		}
	}
	return n
}

// near compares sums of the same numbers added in different orders.
func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))+1e-12
}

// checkResponses checks the stored responses: each decodes, is indexed by
// its creation time (response_times, indexing no other), and counts the
// stored responses that continue it.
func checkResponses(tx *bolt.Tx, res *CheckResult) error {
	times := tx.Bucket(bResponseTimes)
	refs := map[string]uint64{}
	counted := map[string]uint64{}
	sizes := map[string]int64{} // by tenant
	err := tx.Bucket(bResponses).ForEach(func(k, v []byte) error {
		res.Responses++
		tenantID, id, ok := readLP(k)
		if !ok {
			res.problem("stored response key %x", k)
			return nil
		}
		r, err := decodeRespRecord(v)
		if err != nil {
			res.problem("stored response %q of tenant %q: %v", id, tenantID, err)
			return nil
		}
		if times.Get(responseTimeKey(r.created, tenantID, string(id))) == nil {
			res.problem("stored response %q of tenant %q is not indexed by its time", id, tenantID)
		}
		refs[string(k)] = r.refs
		sizes[tenantID] += r.size()
		if r.prev != "" {
			counted[string(responseKey(tenantID, r.prev))]++
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, n := range refs {
		if counted[k] != n {
			res.problem("stored response %x counts %d responses continuing it, %d do", k, n, counted[k])
		}
	}
	if n := times.Stats().KeyN; n != res.Responses {
		res.problem("response_times holds %d keys for %d stored responses", n, res.Responses)
	}
	return checkTenantBytes(tx, bResponseBytes, sizes, "its stored responses", res)
}

// checkTenantBytes checks that each tenant's byte count in bucket name
// (addTenantBytes) is sizes' (what holds them), and that it counts no
// tenant sizes does not.
func checkTenantBytes(tx *bolt.Tx, name []byte, sizes map[string]int64, what string, res *CheckResult) error {
	err := tx.Bucket(name).ForEach(func(k, _ []byte) error {
		if _, ok := sizes[string(k)]; !ok {
			sizes[string(k)] = 0
		}
		return nil
	})
	if err != nil {
		return err
	}
	for tenantID, want := range sizes {
		if got, err := tenantBytes(tx, name, tenantID); err != nil || got != want {
			res.problem("%s of tenant %q is %d (%v), %s hold %d bytes", name, tenantID, got, err, what, want)
		}
	}
	return nil
}

// checkConversations checks the conversations: each decodes; its items
// decode, are numbered below its next sequence number, are as many as it
// counts and are indexed by their ids; no item or index entry belongs to
// no conversation.
func checkConversations(tx *bolt.Tx, res *CheckResult) error {
	type conv struct {
		r     *convRecord
		items uint64
	}
	convs := map[string]*conv{} // by convPrefix
	err := tx.Bucket(bConversations).ForEach(func(k, v []byte) error {
		res.Conversations++
		tenantID, id, ok := readLP(k)
		if !ok {
			res.problem("conversation key %x", k)
			return nil
		}
		r, err := decodeConvRecord(v)
		if err != nil {
			res.problem("conversation %q of tenant %q: %v", id, tenantID, err)
			return nil
		}
		convs[string(convPrefix(tenantID, string(id)))] = &conv{r: r}
		return nil
	})
	if err != nil {
		return err
	}
	ids := tx.Bucket(bConvItemIDs)
	indexed := 0
	sizes := map[string]int64{} // by tenant
	err = tx.Bucket(bConvItems).ForEach(func(k, v []byte) error {
		if len(k) < 8 {
			res.problem("conversation item key %x", k)
			return nil
		}
		prefix, seq := k[:len(k)-8], bytesU64(k[len(k)-8:])
		c := convs[string(prefix)]
		if c == nil {
			res.problem("conversation item %x belongs to no conversation", k)
			return nil
		}
		c.items++
		if tenantID, _, ok := readLP(prefix); ok {
			sizes[tenantID] += convItemSize(v)
		}
		if seq >= c.r.next {
			res.problem("conversation item %x is numbered past its conversation's next (%d)", k, c.r.next)
		}
		it, err := decodeConvItem(v)
		if err != nil {
			res.problem("conversation item %x: %v", k, err)
			return nil
		}
		if sk := ids.Get(join(prefix, []byte(it.ID))); len(sk) != 8 || bytesU64(sk) != seq {
			res.problem("conversation item %x (%q) is not indexed by its id", k, it.ID)
		} else {
			indexed++
		}
		return nil
	})
	if err != nil {
		return err
	}
	for p, c := range convs {
		if c.items != c.r.items {
			res.problem("conversation %x counts %d items, holds %d", p, c.r.items, c.items)
		}
	}
	if n := ids.Stats().KeyN; n != indexed {
		res.problem("conversation_item_ids holds %d keys for %d indexed items", n, indexed)
	}
	return checkTenantBytes(tx, bConvBytes, sizes, "its conversation items", res)
}

// checkBatches checks the Files and Batch APIs' records: each decodes and
// is filed under its own tenant and id; and each tenant's file_storage is
// the sum of its files' sizes.
func checkBatches(tx *bolt.Tx, res *CheckResult) error {
	sizes := map[string]int64{}
	for _, b := range []struct {
		name []byte
		what string
		rec  func() (any, func() (string, string))
	}{
		{bFiles, "file", func() (any, func() (string, string)) {
			f := &nozzle.File{}
			return f, func() (string, string) { return f.TenantID, f.ID }
		}},
		{bBatches, "batch", func() (any, func() (string, string)) {
			bt := &nozzle.Batch{}
			return bt, func() (string, string) { return bt.TenantID, bt.ID }
		}},
	} {
		err := tx.Bucket(b.name).ForEach(func(k, v []byte) error {
			tenantID, id, ok := readLP(k)
			if !ok {
				res.problem("%s key %x", b.what, k)
				return nil
			}
			rec, ids := b.rec()
			if err := decodeJSONRecord(v, rec, b.what); err != nil {
				res.problem("%s %q of tenant %q: %v", b.what, id, tenantID, err)
				return nil
			}
			if t, i := ids(); t != tenantID || i != string(id) {
				res.problem("%s %q of tenant %q is filed as %q of tenant %q", b.what, i, t, id, tenantID)
			}
			if f, ok := rec.(*nozzle.File); ok {
				sizes[f.TenantID] += f.Bytes
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return checkTenantBytes(tx, bFileBytes, sizes, "its files", res)
}
