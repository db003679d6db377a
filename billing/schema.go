package billing

import (
	"encoding/binary"
	"fmt"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the newest ledger layout this package reads and writes.
// docs/LEDGER.md describes it; migrations below bring older files up to it
// on open. Version 4 has no migration of its own: the builds that knew it
// but not 5 stamped it on a file when it first held a standard-price mark.
const SchemaVersion = 18

// Bucket names. docs/LEDGER.md gives each bucket's keys and values.
var (
	bMeta          = []byte("meta")
	bTenants       = []byte("tenants")
	bTenantNames   = []byte("tenant_names")
	bTenantOrder   = []byte("tenant_order")
	bPrices        = []byte("prices")
	bKeys          = []byte("keys")
	bKeyDigests    = []byte("key_digests")
	bTenantKeys    = []byte("tenant_keys")
	bRevokedKeys   = []byte("tenant_keys_revoked")
	bAdapters      = []byte("adapters")
	bAdapterNames  = []byte("adapter_names")
	bAdapterSHA    = []byte("adapter_sha256")
	bAdapterGone   = []byte("adapters_deleted")
	bAdapterGoneAt = []byte("adapters_deleted_at")
	bAdapterBytes  = []byte("adapter_storage")
	bUsers         = []byte("users")
	bUserEmails    = []byte("user_emails")
	bUserInvites   = []byte("user_invites")
	bTenantUsers   = []byte("tenant_users")
	bSessions      = []byte("sessions")
	bEvents        = []byte("events")
	bRequestIDs    = []byte("request_ids")
	bAttemptIDs    = []byte("attempt_ids")
	bRollups       = []byte("rollups")
	bHours         = []byte("hours")
	bMonths        = []byte("months")
	bCapacity      = []byte("capacity")
	bCapHours      = []byte("capacity_hours")
	bCapOpen       = []byte("capacity_open")
	bDirty         = []byte("dirty_hours")
	bBilled        = []byte("billed_hours")
	bOutbox        = []byte("outbox")
	bOutboxPending = []byte("outbox_pending")
	bOutboxParked  = []byte("outbox_parked")
	bCheckpoints   = []byte("checkpoints")
	bResponses     = []byte("responses")
	bResponseTimes = []byte("response_times")
	bResponseBytes = []byte("response_storage")
	bConversations = []byte("conversations")
	bConvItems     = []byte("conversation_items")
	bConvItemIDs   = []byte("conversation_item_ids")
	bConvBytes     = []byte("conversation_storage")
	bFiles         = []byte("files")
	bBatches       = []byte("batches")
	bFileBytes     = []byte("file_storage")
)

var allBuckets = [][]byte{
	bMeta, bTenants, bTenantNames, bTenantOrder, bPrices, bKeys, bKeyDigests, bTenantKeys,
	bRevokedKeys, bAdapters, bAdapterNames, bAdapterSHA, bAdapterGone, bAdapterGoneAt, bUsers, bUserEmails, bUserInvites,
	bSessions, bEvents, bRequestIDs, bRollups, bHours, bMonths, bCapacity,
	bCapHours, bCapOpen, bDirty, bBilled, bOutbox, bOutboxPending, bOutboxParked,
	bCheckpoints, bAdapterBytes, bTenantUsers, bAttemptIDs, bResponses, bResponseTimes, bResponseBytes,
	bConversations, bConvItems, bConvItemIDs, bFiles, bBatches, bConvBytes, bFileBytes,
}

var (
	metaVersion = []byte("version")
	metaOutbox  = []byte("outbox")
)

// migration brings a ledger from version To-1 to To inside one transaction.
type migration struct {
	To int
	Fn func(tx *bolt.Tx) error
}

// migrations run in order on open; each runs in the same transaction that
// stamps its version, so a crash leaves the file at the older version.
var migrations = []migration{
	{To: 1, Fn: func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	}},
	// Version 2: each runtime's provisional (open) capacity interval.
	{To: 2, Fn: func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bCapOpen); err != nil {
			return fmt.Errorf("create bucket %s: %w", bCapOpen, err)
		}
		return nil
	}},
	// Version 3: usage events and rollups are written in value format 2,
	// which adds the cached prompt tokens. Format 1 values stay as they
	// are and still decode (with no cached prompt tokens); a rollup moves
	// to format 2 when it is next written. The version keeps a build that
	// cannot read format 2 from opening the file.
	{To: 3, Fn: func(tx *bolt.Tx) error { return nil }},
	// Version 5: rollups are written in value format 3, which adds the
	// tokens of failed requests (kept out of Stripe's meters). The
	// migration adds the failed events' tokens to the rollups that hold
	// them; rollups without any keep their format until next written.
	{To: 5, Fn: backfillFailedTokens},
	// Version 6: running requests' usage checkpoints (bucket checkpoints)
	// and the usage event status interrupted (4) that a checkpoint left by
	// a crash becomes, which older builds cannot read.
	{To: 6, Fn: func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bCheckpoints); err != nil {
			return fmt.Errorf("create bucket %s: %w", bCheckpoints, err)
		}
		return nil
	}},
	// Version 7: the metadata lists are read a page at a time. Tenants
	// get an index in creation order (tenant_order); a tenant's keys are
	// indexed by creation time (tenant_keys, whose keys were the tenant
	// and the key's id) with their revoked mark, and its revoked keys by
	// the time they were revoked (tenant_keys_revoked); a deleted adapter leaves
	// its place in its tenant's list for a while (adapters_deleted and
	// adapters_deleted_at), so that a page may start after it.
	{To: 7, Fn: indexListOrder},
	// Version 8: each tenant's adapter storage in use (the sum of its
	// adapters' sizes) is kept in adapter_storage, written with the
	// adapters, so that the upload's quota check and the console read it
	// instead of every adapter. The migration adds up the adapters.
	{To: 8, Fn: sumAdapterStorage},
	// Version 9: rollups are written in value format 4, which adds the
	// canceled and the interrupted requests. The migration counts them
	// from the events into the rollups that hold any; the others keep
	// their format until next written.
	{To: 9, Fn: backfillRequestOutcomes},
	// Version 10: each tenant's users are indexed in creation order
	// (tenant_users), written with the users, so that a tenant's users
	// are read without every other tenant's. The migration indexes the
	// stored users.
	{To: 10, Fn: indexTenantUsers},
	// Version 11: a usage event may carry an attempt id (value format 5),
	// a second id it is found under, indexed in attempt_ids: an
	// idempotent request, recorded under its key's id, is found under the
	// request id its client saw too. The migration indexes the stored
	// events' attempt ids (a file older than version 11 has none).
	{To: 11, Fn: indexAttemptIDs},
	// Version 12: the Responses API's stored responses (bucket responses,
	// by tenant and id), their creation times (response_times), for
	// retention, and each tenant's bytes of them (response_storage), for
	// its cap. A file older than version 12 has none.
	{To: 12, Fn: func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bResponses, bResponseTimes, bResponseBytes} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	}},
	// Version 13: the Conversations API's conversations (bucket
	// conversations, by tenant and id) and their items
	// (conversation_items, in order; conversation_item_ids, by id), and
	// the journal records that append a response's items to one (0x84).
	// A file older than version 13 has none.
	{To: 13, Fn: func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bConversations, bConvItems, bConvItemIDs} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	}},
	// Version 14: the Files and Batch APIs' files (bucket files) and
	// batches (bucket batches), by tenant and id. A file older than
	// version 14 has none.
	{To: 14, Fn: func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bFiles, bBatches} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	}},
	// Version 15: each tenant's bytes of conversation items
	// (conversation_storage), for its cap, computed from the items the
	// file holds.
	{To: 15, Fn: countConversationBytes},
	// Version 16: batch pricing. A usage event the Batch API ran is
	// written in value format 6 (its batch flag), rollups in format 5
	// (the batch requests' part of them), a price with a batch discount
	// in format 3, a billed hour with batch meters' tokens in format 2,
	// and the outbox has two more meters (batch_prompt, batch_completion).
	// None of these can an older build read. The migration rewrites
	// nothing: older values still decode, with no batch usage, no batch
	// discount and no batch tokens billed, which is what they held.
	{To: 16, Fn: func(tx *bolt.Tx) error { return nil }},
	// Version 17: a price for cached prompt tokens. Prices are written in
	// format 4 (the batch discount and the cached prompt price always;
	// older prices read with the cached price equal to the prompt price),
	// rollups in format 6 (the failed and the batch requests' cached
	// prompt tokens), billed hours in format 3 (the cached prompt meters'
	// tokens), and the outbox has two more meters (cached_prompt,
	// batch_cached_prompt). None of these can an older build read. The
	// migration adds the stored events' failed and batch cached prompt
	// tokens to the rollups that hold them; the others keep their format
	// until next written.
	{To: 17, Fn: backfillCachedSplit},
	// Version 18: each tenant's bytes of files (file_storage), for its
	// quota, so that checking it is one read instead of a scan of its
	// files; computed from the files the file holds.
	{To: 18, Fn: countFileBytes},
}

// countFileBytes builds version 18's file_storage from the file records.
// A record that does not decode is left out (Check reports it).
func countFileBytes(tx *bolt.Tx) error {
	if _, err := rebuildBucket(tx, bFileBytes); err != nil {
		return err
	}
	sizes := map[string]int64{}
	err := tx.Bucket(bFiles).ForEach(func(k, v []byte) error {
		var f nozzle.File
		if decodeJSONRecord(v, &f, "file") == nil {
			sizes[f.TenantID] += f.Bytes
		}
		return nil
	})
	if err != nil {
		return err
	}
	for tenantID, n := range sizes {
		if err := addTenantBytes(tx, bFileBytes, tenantID, n); err != nil {
			return err
		}
	}
	return nil
}

// backfillCachedSplit adds the cached prompt tokens of every stored failed
// or batch event to its rollup, hourly and monthly total, whose older
// formats have no such split.
func backfillCachedSplit(tx *bolt.Tx) error {
	return backfillRollups(tx, func(ev *nozzle.UsageEvent) *rollup {
		if ev.CachedPromptTokens <= 0 || (ev.Status != nozzle.UsageFailed && !ev.Batch) {
			return nil
		}
		r := &rollup{}
		if ev.Status == nozzle.UsageFailed {
			r.FailedCachedPromptTokens = ev.CachedPromptTokens
		}
		if ev.Batch {
			r.Batch.CachedPromptTokens = ev.CachedPromptTokens
			if ev.Status == nozzle.UsageFailed {
				r.Batch.FailedCachedPromptTokens = ev.CachedPromptTokens
			}
		}
		return r
	})
}

// countConversationBytes builds version 15's conversation_storage from the
// conversation items. A key that does not name a tenant is left out
// (Check reports it).
func countConversationBytes(tx *bolt.Tx) error {
	if _, err := rebuildBucket(tx, bConvBytes); err != nil {
		return err
	}
	sizes := map[string]int64{}
	err := tx.Bucket(bConvItems).ForEach(func(k, v []byte) error {
		if tenantID, _, ok := readLP(k); ok {
			sizes[tenantID] += convItemSize(v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for tenantID, n := range sizes {
		if err := addTenantBytes(tx, bConvBytes, tenantID, n); err != nil {
			return err
		}
	}
	return nil
}

// rebuildBucket replaces bucket name, if there is one, with an empty one:
// a migration's index built anew from the records it indexes.
func rebuildBucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	if tx.Bucket(name) != nil {
		if err := tx.DeleteBucket(name); err != nil {
			return nil, fmt.Errorf("delete bucket %s: %w", name, err)
		}
	}
	b, err := tx.CreateBucket(name)
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return b, nil
}

// indexAttemptIDs builds version 11's attempt_ids from the events' attempt
// ids. A record that does not decode is left out (Check reports it).
func indexAttemptIDs(tx *bolt.Tx) error {
	b, err := rebuildBucket(tx, bAttemptIDs)
	if err != nil {
		return err
	}
	return tx.Bucket(bEvents).ForEach(func(k, v []byte) error {
		ev, err := decodeEvent(v)
		if err != nil || ev.AttemptID == "" || b.Get([]byte(ev.AttemptID)) != nil {
			return nil
		}
		return b.Put([]byte(ev.AttemptID), k)
	})
}

// indexTenantUsers builds version 10's tenant_users from the users. A
// record that does not decode is left out (Check reports it).
func indexTenantUsers(tx *bolt.Tx) error {
	b, err := rebuildBucket(tx, bTenantUsers)
	if err != nil {
		return err
	}
	return tx.Bucket(bUsers).ForEach(func(_, v []byte) error {
		u, err := decodeUser(v)
		if err != nil {
			return nil
		}
		return b.Put(tenantUserKey(u), []byte{})
	})
}

// sumAdapterStorage builds version 8's adapter_storage from the adapters.
// A record that does not decode is left out (Check reports it).
func sumAdapterStorage(tx *bolt.Tx) error {
	b, err := rebuildBucket(tx, bAdapterBytes)
	if err != nil {
		return err
	}
	sums, err := adapterStorageSums(tx, nil)
	if err != nil {
		return err
	}
	for tenantID, n := range sums {
		if err := putAdapterStorage(b, tenantID, n); err != nil {
			return err
		}
	}
	return nil
}

// indexListOrder builds version 7's indexes from the tenants and keys. A
// record that does not decode is left out (the file is damaged there, and
// the lists fail on it as before).
func indexListOrder(tx *bolt.Tx) error {
	for _, name := range [][]byte{bTenantOrder, bRevokedKeys, bAdapterGone, bAdapterGoneAt} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	order := tx.Bucket(bTenantOrder)
	err := tx.Bucket(bTenants).ForEach(func(_, v []byte) error {
		t, err := decodeTenant(v)
		if err != nil {
			return nil
		}
		return order.Put(tenantOrderKey(t), []byte{})
	})
	if err != nil {
		return err
	}
	tk, err := rebuildBucket(tx, bTenantKeys)
	if err != nil {
		return err
	}
	revoked := tx.Bucket(bRevokedKeys)
	return tx.Bucket(bKeys).ForEach(func(_, v []byte) error {
		k, err := decodeKey(v)
		if err != nil {
			return nil
		}
		if k.Revoked() {
			if err := revoked.Put(revokedKeyKey(k), []byte{}); err != nil {
				return err
			}
		}
		return tk.Put(tenantKeyKey(k), tenantKeyValue(k))
	})
}

// backfillFailedTokens adds the tokens of every stored failed event to its
// rollup, hourly and monthly total, whose older formats have none.
func backfillFailedTokens(tx *bolt.Tx) error {
	return backfillRollups(tx, func(ev *nozzle.UsageEvent) *rollup {
		if ev.Status == nozzle.UsageFailed && (ev.PromptTokens > 0 || ev.CompletionTokens > 0) {
			return &rollup{FailedPromptTokens: ev.PromptTokens, FailedCompletionTokens: ev.CompletionTokens}
		}
		return nil
	})
}

// backfillRequestOutcomes counts every stored canceled and interrupted
// event in its rollup, hourly and monthly total, whose older formats have
// no such counts.
func backfillRequestOutcomes(tx *bolt.Tx) error {
	return backfillRollups(tx, func(ev *nozzle.UsageEvent) *rollup {
		switch ev.Status {
		case nozzle.UsageCanceled:
			return &rollup{Canceled: 1}
		case nozzle.UsageInterrupted:
			return &rollup{Interrupted: 1}
		}
		return nil
	})
}

// backfillRollups adds part(ev) of every stored event, where it is not
// nil, to the event's rollup, hourly and monthly total: how a migration
// fills in what an older rollup format lacked. It rewrites only the
// rollups that part adds to.
func backfillRollups(tx *bolt.Tx, part func(ev *nozzle.UsageEvent) *rollup) error {
	w := &wtx{tx: tx, rollups: map[string]*rollup{}, hours: map[int64]*rollup{}, months: map[string]*rollup{}, dirty: map[string]struct{}{}}
	err := tx.Bucket(bEvents).ForEach(func(_, v []byte) error {
		ev, err := decodeEvent(v)
		if err != nil {
			return nil // the file is damaged there; Check reports it
		}
		if inc := part(ev); inc != nil {
			w.addToRollups(ev, inc)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The hours the outbox swept already need no second look: the tokens
	// it took of them stay taken (and it meters no request counts).
	clear(w.dirty)
	return w.flush()
}

// schemaVersion returns the version stamped in the file (0 for a new file).
func schemaVersion(tx *bolt.Tx) (int, error) {
	b := tx.Bucket(bMeta)
	if b == nil {
		return 0, nil
	}
	v := b.Get(metaVersion)
	if len(v) != 4 {
		return 0, fmt.Errorf("ledger schema version: %w", errCorrupt)
	}
	return int(binary.BigEndian.Uint32(v)), nil
}

// migrate runs the migrations the file needs.
func migrate(db *bolt.DB) error {
	var have int
	if err := db.View(func(tx *bolt.Tx) (err error) { have, err = schemaVersion(tx); return err }); err != nil {
		return err
	}
	if have > SchemaVersion {
		return fmt.Errorf("ledger schema version %d is newer than this build supports (%d)", have, SchemaVersion)
	}
	for _, m := range migrations {
		if m.To <= have {
			continue
		}
		err := db.Update(func(tx *bolt.Tx) error {
			if err := m.Fn(tx); err != nil {
				return err
			}
			b, err := tx.CreateBucketIfNotExists(bMeta)
			if err != nil {
				return err
			}
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], uint32(m.To))
			return b.Put(metaVersion, v[:])
		})
		if err != nil {
			return fmt.Errorf("migrate ledger to version %d: %w", m.To, err)
		}
	}
	return nil
}
