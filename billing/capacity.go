package billing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

func capacityKey(runtimeID string, seq uint64) []byte { return join(lp(runtimeID), u64key(seq)) }

func capHourKey(hour int64, runtimeID string) []byte { return join(hourKey(hour), []byte(runtimeID)) }

func validateInterval(iv *nozzle.CapacityInterval) error {
	dur := iv.End.Sub(iv.Start).Seconds()
	switch {
	case iv.RuntimeID == "" || len(iv.RuntimeID) > maxIDLen:
		return nozzle.Errorf(nozzle.EINVALID, "Capacity interval needs a runtime id.")
	case iv.Start.IsZero() || !iv.End.After(iv.Start):
		return nozzle.Errorf(nozzle.EINVALID, "Capacity interval %s/%d must end after it starts.", iv.RuntimeID, iv.Seq)
	case !nonNegative(iv.ActiveSeconds, iv.IdleSeconds, iv.RatePerHour):
		return nozzle.Errorf(nozzle.EINVALID, "Capacity interval %s/%d has a negative duration or rate.", iv.RuntimeID, iv.Seq)
	case math.Abs(iv.ActiveSeconds+iv.IdleSeconds-dur) > 1e-3+1e-6*dur:
		return nozzle.Errorf(nozzle.EINVALID, "Capacity interval %s/%d: active plus idle seconds (%g) must equal its length (%g).",
			iv.RuntimeID, iv.Seq, iv.ActiveSeconds+iv.IdleSeconds, dur)
	}
	return nil
}

// splitHours calls fn for each UTC hour the interval overlaps with the
// fraction of the interval inside it.
func splitHours(start, end time.Time, fn func(hour int64, frac float64)) {
	total := end.Sub(start).Seconds()
	for h := hourOf(start); ; h++ {
		hs, he := hourTime(h), hourTime(h+1)
		if !hs.Before(end) {
			return
		}
		from, to := maxTime(start, hs), minTime(end, he)
		if to.After(from) {
			fn(h, to.Sub(from).Seconds()/total)
		}
	}
}

// intervalShare is the capacity of fraction f of an interval.
func intervalShare(iv *nozzle.CapacityInterval, f float64) capHour {
	return capHour{
		UptimeSeconds: f * (iv.ActiveSeconds + iv.IdleSeconds),
		ActiveSeconds: f * iv.ActiveSeconds,
		IdleSeconds:   f * iv.IdleSeconds,
		CostUSD:       f * (iv.ActiveSeconds + iv.IdleSeconds) * iv.RatePerHour / 3600,
		IdleCostUSD:   f * iv.IdleSeconds * iv.RatePerHour / 3600,
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// RecordCapacity stores intervals; an interval already stored (same
// RuntimeID and Seq) is skipped. Each interval is also added to the hourly
// capacity of its runtime, split across hours in proportion to time.
func (l *Ledger) RecordCapacity(ctx context.Context, intervals []nozzle.CapacityInterval) error {
	for i := range intervals {
		if err := validateInterval(&intervals[i]); err != nil {
			return err
		}
	}
	ivs := append([]nozzle.CapacityInterval(nil), intervals...)
	return l.write(ctx, func(w *wtx) error {
		for i := range ivs {
			if err := dropSupersededOpen(w.tx, ivs[i].RuntimeID, ivs[i].Seq); err != nil {
				return err
			}
			if err := storeInterval(w.tx, &ivs[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// storeInterval stores a closed interval unless it is stored already, and
// adds it to its runtime's hourly capacity.
func storeInterval(tx *bolt.Tx, iv *nozzle.CapacityInterval) error {
	caps, hours := tx.Bucket(bCapacity), tx.Bucket(bCapHours)
	k := capacityKey(iv.RuntimeID, iv.Seq)
	if caps.Get(k) != nil {
		return nil
	}
	iv.Start, iv.End = iv.Start.UTC(), iv.End.UTC()
	if err := caps.Put(k, encodeInterval(iv)); err != nil {
		return err
	}
	var err error
	splitHours(iv.Start, iv.End, func(h int64, f float64) {
		if err != nil {
			return
		}
		inc := intervalShare(iv, f)
		hk := capHourKey(h, iv.RuntimeID)
		var c capHour
		if v := hours.Get(hk); v != nil {
			if c, err = decodeCapHour(v); err != nil {
				return
			}
		}
		c.add(inc)
		err = hours.Put(hk, encodeCapHour(&c))
	})
	return err
}

// LastCapacitySeq returns the highest Seq stored for a runtime (0 if none).
func (l *Ledger) LastCapacitySeq(ctx context.Context, runtimeID string) (uint64, error) {
	var seq uint64
	err := l.view(func(tx *bolt.Tx) error {
		seq = lastCapacitySeq(tx, runtimeID)
		return nil
	})
	return seq, err
}

func lastCapacitySeq(tx *bolt.Tx, runtimeID string) uint64 {
	prefix := lp(runtimeID)
	c := tx.Bucket(bCapacity).Cursor()
	k, _ := c.Seek(capacityKey(runtimeID, math.MaxUint64))
	if k == nil || !bytes.Equal(k, capacityKey(runtimeID, math.MaxUint64)) {
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
	}
	if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 {
		return bytesU64(k[len(prefix):])
	}
	return 0
}

// RecordOpenCapacity keeps iv, a runtime's open interval so far, as that
// runtime's provisional capacity: one record per runtime, replaced by each
// newer one and removed once a closed interval with the same or a later
// Seq is stored (RecordCapacity removes it), so that it is never counted
// together with the closed interval it becomes. A provisional interval
// older than the one kept, or one a closed interval already covers, is
// skipped. Reports count the provisional interval of each runtime with the
// closed ones; it is not part of the rollups and hourly capacity, and
// Check does not hold it to them.
func (l *Ledger) RecordOpenCapacity(ctx context.Context, iv nozzle.CapacityInterval) error {
	if err := validateInterval(&iv); err != nil {
		return err
	}
	iv.Start, iv.End = iv.Start.UTC(), iv.End.UTC()
	return l.write(ctx, func(w *wtx) error {
		open := w.tx.Bucket(bCapOpen)
		k := []byte(iv.RuntimeID)
		lastClosed := lastCapacitySeq(w.tx, iv.RuntimeID)
		if iv.Seq <= lastClosed {
			return nil
		}
		if v := open.Get(k); v != nil {
			if old, err := decodeInterval(v); err == nil {
				if old.Seq > iv.Seq || old.Seq == iv.Seq && old.End.After(iv.End) {
					return nil
				}
				if iv.Seq-old.Seq >= newRunSeqGap && old.Seq > lastClosed {
					// The runtime restarted (it numbers its intervals from
					// its start time in microseconds) and the old run's
					// open interval will never close: what its last
					// snapshot measured is kept as a closed interval.
					if err := storeInterval(w.tx, old); err != nil {
						return err
					}
				}
			}
		}
		return open.Put(k, encodeInterval(&iv))
	})
}

// newRunSeqGap is the jump in Seq that marks a new run of a runtime: runs
// number their intervals from their start time in microseconds, so a
// restart jumps by at least a second's worth, while one run closes about
// one interval a minute.
const newRunSeqGap = 1_000_000

// dropSupersededOpen removes a runtime's provisional interval once a
// closed interval with Seq seq or later is stored.
func dropSupersededOpen(tx *bolt.Tx, runtimeID string, seq uint64) error {
	open := tx.Bucket(bCapOpen)
	v := open.Get([]byte(runtimeID))
	if v == nil {
		return nil
	}
	if old, err := decodeInterval(v); err == nil && old.Seq > seq {
		return nil
	}
	return open.Delete([]byte(runtimeID))
}

// openIntervals calls fn with each runtime's provisional interval that no
// closed interval supersedes, in runtime order.
func openIntervals(tx *bolt.Tx, fn func(iv *nozzle.CapacityInterval)) error {
	return tx.Bucket(bCapOpen).ForEach(func(k, v []byte) error {
		iv, err := decodeInterval(v)
		if err != nil {
			return fmt.Errorf("provisional capacity of %q: %w", k, err)
		}
		if iv.Seq > lastCapacitySeq(tx, iv.RuntimeID) {
			fn(iv)
		}
		return nil
	})
}

// OpenCapacityLedger is a nozzle.CapacityLedger that also keeps each
// runtime's open interval as a provisional figure (Ledger is one).
type OpenCapacityLedger interface {
	nozzle.CapacityLedger
	RecordOpenCapacity(ctx context.Context, iv nozzle.CapacityInterval) error
}

var _ OpenCapacityLedger = (*Ledger)(nil)

// CollectCapacity pulls closed capacity intervals from each runtime (keyed
// by runtime id, or by a label such as its address when the source is a
// nozzle.IdentifiedCapacitySource, which names its runtime) every interval,
// recording those after the last one stored, until ctx ends; then it pulls
// once more so that a shutdown loses nothing. Where the source is a
// nozzle.OpenCapacitySource and the ledger an OpenCapacityLedger, each pull
// then also records the runtime's open interval so far as its provisional
// capacity, so that reports show the GPU's uptime and cost before the
// interval closes. Runtimes are asked at once, each with a time limit, so a
// runtime that hangs holds up no other. Two runtimes naming the same
// runtime id cannot both be filed under it: the second (by label) is left
// out and logged. A failing source is logged (to log, or slog's default
// when nil) and retried at the next tick. A receive on pullNow (nil: none)
// pulls at once.
func CollectCapacity(ctx context.Context, ledger nozzle.CapacityLedger, sources map[string]nozzle.CapacitySource, every time.Duration, log *slog.Logger, pullNow <-chan struct{}) error {
	if log == nil {
		log = slog.Default()
	}
	if every <= 0 {
		every = 10 * time.Second
	}
	// Each phase of a pull (runtime ids, then intervals) waits at most half
	// the interval on a runtime that hangs, so a pull asked for now (a
	// runtime stopping) is served within an interval.
	limit := max(every/2, time.Second)
	labels := slices.Sorted(maps.Keys(sources))
	dupLogged := map[string]bool{}
	pull := func(ctx context.Context) {
		ids := make([]string, len(labels))
		var wg sync.WaitGroup
		for i, label := range labels {
			ids[i] = label
			is, ok := sources[label].(nozzle.IdentifiedCapacitySource)
			if !ok {
				continue
			}
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, limit)
				defer cancel()
				rid, err := is.CapacityRuntimeID(cctx)
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("collect capacity", "runtime", label, "err", err)
					}
					ids[i] = ""
				} else if rid != "" {
					ids[i] = rid
				}
			})
		}
		wg.Wait()
		first := map[string]string{}
		for i, id := range ids {
			if id == "" {
				continue
			}
			if other, dup := first[id]; dup {
				if key := other + "\x00" + labels[i]; !dupLogged[key] {
					dupLogged[key] = true
					log.Error("collect capacity: two runtimes report the same runtime id; give each its own --runtime-id (the second's capacity is not filed)",
						"runtime_id", id, "first", other, "second", labels[i])
				}
				ids[i] = ""
				continue
			}
			first[id] = labels[i]
		}
		for i, label := range labels {
			if ids[i] == "" {
				continue
			}
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, limit)
				defer cancel()
				if err := pullCapacity(cctx, ledger, ids[i], sources[label]); err != nil && ctx.Err() == nil {
					log.Warn("collect capacity", "runtime", label, "err", err)
				}
			})
		}
		wg.Wait()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pull(ctx)
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			pull(final)
			cancel()
			return nil
		case <-t.C:
		case <-pullNow:
		}
	}
}

func pullCapacity(ctx context.Context, ledger nozzle.CapacityLedger, runtimeID string, src nozzle.CapacitySource) error {
	for {
		after, err := ledger.LastCapacitySeq(ctx, runtimeID)
		if err != nil {
			return err
		}
		ivs, err := src.CapacityIntervals(ctx, after)
		if err != nil {
			return err
		}
		var keep []nozzle.CapacityInterval
		for _, iv := range ivs {
			if iv.Seq <= after {
				continue
			}
			if iv.RuntimeID == "" {
				iv.RuntimeID = runtimeID
			}
			if iv.RuntimeID != runtimeID {
				return fmt.Errorf("runtime %s reported an interval of runtime %s", runtimeID, iv.RuntimeID)
			}
			keep = append(keep, iv)
		}
		if len(keep) == 0 {
			break
		}
		if err := ledger.RecordCapacity(ctx, keep); err != nil {
			if errors.Is(err, ErrClosed) {
				return err
			}
			return fmt.Errorf("record capacity: %w", err)
		}
	}
	// The open interval is asked for after the closed ones: one that
	// closed in between is superseded by the next pull, never counted
	// twice, since the ledger drops a provisional interval that a closed
	// one with its Seq covers.
	osrc, ok := src.(nozzle.OpenCapacitySource)
	oled, ok2 := ledger.(OpenCapacityLedger)
	if !ok || !ok2 {
		return nil
	}
	iv, open, err := osrc.OpenCapacity(ctx)
	if err != nil || !open {
		return err
	}
	if iv.RuntimeID == "" {
		iv.RuntimeID = runtimeID
	}
	if iv.RuntimeID != runtimeID {
		return fmt.Errorf("runtime %s reported an open interval of runtime %s", runtimeID, iv.RuntimeID)
	}
	if !iv.End.After(iv.Start) {
		return nil // just opened: nothing to count yet
	}
	if err := oled.RecordOpenCapacity(ctx, iv); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("record open capacity: %w", err)
	}
	return nil
}
