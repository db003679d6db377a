package billing

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
	bolt "go.etcd.io/bbolt"
)

// Format 1 of usage events and rollups, as schema version 2 and earlier
// wrote them (no cached prompt tokens), to make old files in tests and to
// seed the fuzz tests; the hex constants below pin its bytes.
func encodeEventV1(ev *nozzle.UsageEvent) []byte { return encodeEventAs(nil, ev, valueV1) }
func encodeRollupV1(r *rollup) []byte            { return encodeRollupAs(r, valueV1) }

// v1Event is a format 1 event; v1EventHex is how the builds before schema
// version 3 stored it, byte for byte.
var v1Event = &nozzle.UsageEvent{RequestID: "req_1", TenantID: "ten_1", KeyID: "key_1", AdapterID: "ad_1", AdapterName: "sql",
	Model: "sql", RuntimeID: "rt0", Status: nozzle.UsageOK, Time: time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC),
	PromptTokens: 1000, CompletionTokens: 50, DeviceSeconds: 0.5, QueueSeconds: 0.25, TTFTSeconds: 0.125,
	AdapterLoadSeconds: 0, RatePerHour: 2, ChargeUSD: 0.001, Response: []byte(`{}`)}

const v1EventHex = "01057265715f310574656e5f31056b65795f310461645f310373716c0373716c0372743001" +
	"80e0b7fb9bd4cd9931d00f643fe00000000000003fd00000000000003fc0000000000000000000000000000040000000000000003f50624dd2f1a9fc027b7d"

// v1Rollup is a format 1 rollup; v1RollupHex is how the builds before
// schema version 3 stored it, byte for byte.
var v1Rollup = rollup{Requests: 3, Failed: 1, PromptTokens: 2000, CompletionTokens: 70, DeviceSeconds: 1.5,
	ActiveCostUSD: 0.25, ChargedUSD: 0.5, AdapterName: "sql"}

const v1RollupHex = "010602a01f8c013ff80000000000003fd00000000000003fe00000000000000373716c"

// TestFormat1Values: events and rollups that older builds wrote decode, with
// no cached prompt tokens, and are written again in the current formats.
func TestFormat1Values(t *testing.T) {
	b, _ := hex.DecodeString(v1EventHex)
	if got := encodeEventV1(v1Event); !bytes.Equal(got, b) {
		t.Fatalf("format 1 event encodes to %x, want %x", got, b)
	}
	ev, err := decodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if ev.CachedPromptTokens != 0 || ev.RequestID != "req_1" || ev.PromptTokens != 1000 || ev.CompletionTokens != 50 ||
		ev.DeviceSeconds != 0.5 || ev.ChargeUSD != 0.001 || !ev.Time.Equal(v1Event.Time) || string(ev.Response) != "{}" {
		t.Fatalf("format 1 event decodes to %+v", ev)
	}
	again := encodeEvent(nil, ev)
	if again[0] != valueV2 {
		t.Fatalf("events are written in format %d", again[0])
	}
	if ev2, err := decodeEvent(again); err != nil || ev2.PromptTokens != 1000 || ev2.CachedPromptTokens != 0 || ev2.ChargeUSD != 0.001 {
		t.Fatalf("re-encoded event decodes to %+v, %v", ev2, err)
	}

	b, _ = hex.DecodeString(v1RollupHex)
	if got := encodeRollupV1(&v1Rollup); !bytes.Equal(got, b) {
		t.Fatalf("format 1 rollup encodes to %x, want %x", got, b)
	}
	r, err := decodeRollup(b)
	if err != nil || r != v1Rollup {
		t.Fatalf("format 1 rollup decodes to %+v, %v", r, err)
	}
	if again := encodeRollup(&r); again[0] != rollupV6 {
		t.Fatalf("rollups are written in format %d", again[0])
	} else if r2, err := decodeRollup(again); err != nil || r2 != r {
		t.Fatalf("re-encoded rollup decodes to %+v, %v", r2, err)
	}
}

// v4Rollup is a rollup with requests of every outcome; v4RollupHex is how
// schema version 9 stores it (format 4) and v3RollupHex how versions 5 to 8
// stored it (format 3, without the canceled and interrupted requests).
var v4Rollup = rollup{Requests: 6, Failed: 1, Canceled: 2, Interrupted: 1, PromptTokens: 2000, CachedPromptTokens: 512,
	CompletionTokens: 70, FailedPromptTokens: 300, FailedCompletionTokens: 9, DeviceSeconds: 1.5, ActiveCostUSD: 0.25,
	ChargedUSD: 0.5, AdapterName: "sql"}

const (
	v4RollupHex = "040c020402a01f80088c01d804123ff80000000000003fd00000000000003fe00000000000000373716c"
	v3RollupHex = "030c02a01f80088c01d804123ff80000000000003fd00000000000003fe00000000000000373716c"
)

// TestFormat4Rollup pins the bytes of formats 3 and 4; a format 3 rollup
// decodes with no canceled or interrupted requests and the rest as stored.
func TestFormat4Rollup(t *testing.T) {
	if got := hex.EncodeToString(encodeRollupAs(&v4Rollup, valueV4)); got != v4RollupHex {
		t.Fatalf("format 4 rollup encodes to %s, want %s", got, v4RollupHex)
	}
	if got := hex.EncodeToString(encodeRollupAs(&v4Rollup, valueV3)); got != v3RollupHex {
		t.Fatalf("format 3 rollup encodes to %s, want %s", got, v3RollupHex)
	}
	b, _ := hex.DecodeString(v4RollupHex)
	if r, err := decodeRollup(b); err != nil || r != v4Rollup {
		t.Fatalf("format 4 rollup decodes to %+v, %v", r, err)
	}
	want := v4Rollup
	want.Canceled, want.Interrupted = 0, 0
	b, _ = hex.DecodeString(v3RollupHex)
	if r, err := decodeRollup(b); err != nil || r != want {
		t.Fatalf("format 3 rollup decodes to %+v, %v", r, err)
	}
}

// v5Rollup is a rollup with batch requests among its requests (format 5,
// schema version 16); v5RollupHex pins its bytes.
var v5Rollup = rollup{Requests: 6, Failed: 1, Canceled: 2, Interrupted: 1, PromptTokens: 2000, CachedPromptTokens: 512,
	CompletionTokens: 70, FailedPromptTokens: 300, FailedCompletionTokens: 9, DeviceSeconds: 1.5, ActiveCostUSD: 0.25,
	ChargedUSD: 0.5, Batch: batchSums{Requests: 3, PromptTokens: 1200, CompletionTokens: 40, FailedPromptTokens: 100,
		FailedCompletionTokens: 5, ChargedUSD: 0.125}, AdapterName: "sql"}

const v5RollupHex = "050c020402a01f80088c01d804123ff80000000000003fd00000000000003fe000000000000006e01250c8010a3fc00000000000000373716c"

// TestFormat5Rollup pins format 5's bytes; formats 4 and older decode with
// no batch usage (TestFormat4Rollup), and a format 5 rollup whose batch
// part exceeds its whole is refused.
func TestFormat5Rollup(t *testing.T) {
	if got := hex.EncodeToString(encodeRollupAs(&v5Rollup, rollupV5)); got != v5RollupHex {
		t.Fatalf("format 5 rollup encodes to %s, want %s", got, v5RollupHex)
	}
	b, _ := hex.DecodeString(v5RollupHex)
	if r, err := decodeRollup(b); err != nil || r != v5Rollup {
		t.Fatalf("format 5 rollup decodes to %+v, %v", r, err)
	}
	b, _ = hex.DecodeString(v4RollupHex)
	if r, err := decodeRollup(b); err != nil || r.Batch != (batchSums{}) {
		t.Fatalf("format 4 rollup decodes to %+v, %v", r, err)
	}
	for _, bs := range []batchSums{
		{Requests: 7}, {Requests: -1}, {PromptTokens: 2001}, {CompletionTokens: 71},
		{PromptTokens: 10, FailedPromptTokens: 11}, {CompletionTokens: 10, FailedCompletionTokens: 10 + 1},
		{PromptTokens: 1000, FailedPromptTokens: 301}, // more than the rollup's failed tokens
	} {
		r := v5Rollup
		r.Batch = bs
		if _, err := decodeRollup(encodeRollup(&r)); !errors.Is(err, errCorrupt) {
			t.Errorf("rollup with batch usage %+v: %v", bs, err)
		}
	}
}

// v6EventHex is v1Event with 512 cached prompt tokens, run by the Batch
// API: format 6 (schema version 16), byte for byte.
const v6EventHex = "06057265715f310574656e5f31056b65795f310461645f310373716c0373716c037274300180e0b7fb9bd4cd9931d00f8008643fe00000000000003fd00000000000003fc0000000000000000000000000000040000000000000003f50624dd2f1a9fc027b7d0001"

// TestFormat6Event: a batch event is written in format 6 and decodes as
// batch, with or without an attempt id; events of the older formats decode
// as not batch; a format 6 value without the batch flag, or with flags
// unknown, is refused.
func TestFormat6Event(t *testing.T) {
	ev := *v1Event
	ev.Batch, ev.CachedPromptTokens = true, 512
	if got := hex.EncodeToString(encodeEvent(nil, &ev)); got != v6EventHex {
		t.Fatalf("format 6 event encodes to %s, want %s", got, v6EventHex)
	}
	b, _ := hex.DecodeString(v6EventHex)
	got, err := decodeEvent(b)
	if err != nil || !got.Batch || got.AttemptID != "" || got.CachedPromptTokens != 512 || got.ChargeUSD != 0.001 || got.RequestID != "req_1" {
		t.Fatalf("format 6 event decodes to %+v, %v", got, err)
	}
	ev.AttemptID = "att_1"
	if got, err := decodeEvent(encodeEvent(nil, &ev)); err != nil || !got.Batch || got.AttemptID != "att_1" {
		t.Fatalf("batch event with an attempt id decodes to %+v, %v", got, err)
	}
	for _, format := range []byte{valueV1, valueV2, valueV5} {
		if got, err := decodeEvent(encodeEventAs(nil, &ev, format)); err != nil || got.Batch {
			t.Errorf("format %d event decodes to %+v, %v", format, got, err)
		}
	}
	for _, flags := range []byte{0, 2, 3} {
		b := encodeEvent(nil, &ev)
		b[len(b)-1] = flags
		if _, err := decodeEvent(b); !errors.Is(err, errCorrupt) {
			t.Errorf("format 6 event with flags %d: %v", flags, err)
		}
	}
}

// A price stored before schema version 16 (format 1, as p1Hex pins) has
// no batch discount; one with a discount was format 3 (p3Hex). Neither
// has a cached prompt price: they decode with the prompt price for it.
// Since schema version 17 every price is written in format 4 (p4Hex),
// whose discount is 0 to 100 and cached price 0 to the prompt price.
const (
	p1Hex = "013fc999999999999a3fe3333333333333"
	p3Hex = "033fc999999999999a3fe33333333333334049000000000000"
	p4Hex = "043fc999999999999a3fe333333333333340490000000000003fb999999999999a"
)

func TestPriceFormats(t *testing.T) {
	p := nozzle.Price{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6}
	if got := hex.EncodeToString(encodePriceAs(p, valueV1)); got != p1Hex {
		t.Fatalf("format 1 price encodes to %s, want %s", got, p1Hex)
	}
	want := p
	want.CachedPromptPerMillionUSD = 0.2 // what it charged cached tokens
	b, _ := hex.DecodeString(p1Hex)
	if got, std, err := decodePrice(b); err != nil || std || got != want {
		t.Fatalf("format 1 price decodes to %+v, %v, %v", got, std, err)
	}
	p.BatchDiscountPercent, want.BatchDiscountPercent = 50, 50
	if got := hex.EncodeToString(encodePriceAs(p, priceV3)); got != p3Hex {
		t.Fatalf("format 3 price encodes to %s, want %s", got, p3Hex)
	}
	b, _ = hex.DecodeString(p3Hex)
	if got, std, err := decodePrice(b); err != nil || std || got != want {
		t.Fatalf("format 3 price decodes to %+v, %v, %v", got, std, err)
	}
	p.CachedPromptPerMillionUSD = 0.1
	if got := hex.EncodeToString(encodePrice(p)); got != p4Hex {
		t.Fatalf("price encodes to %s, want %s", got, p4Hex)
	}
	b, _ = hex.DecodeString(p4Hex)
	if got, std, err := decodePrice(b); err != nil || std || got != p {
		t.Fatalf("format 4 price decodes to %+v, %v, %v", got, std, err)
	}
	// format 4 keeps a cached price of 0 (free) and no discount as they are
	for _, q := range []nozzle.Price{{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6},
		{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6, CachedPromptPerMillionUSD: 0.2}} {
		if b := encodePrice(q); b[0] != priceV4 {
			t.Errorf("price %+v written in format %d", q, b[0])
		} else if got, _, err := decodePrice(b); err != nil || got != q {
			t.Errorf("price %+v decodes to %+v, %v", q, got, err)
		}
	}
	for _, d := range []float64{0, -1, 100.5} {
		p.BatchDiscountPercent = d
		if _, _, err := decodePrice(encodePriceAs(p, priceV3)); !errors.Is(err, errCorrupt) {
			t.Errorf("format 3 price with a discount of %v: %v", d, err)
		}
	}
	p.BatchDiscountPercent = 50
	for _, c := range []float64{-0.1, 0.2000001, math.NaN()} {
		p.CachedPromptPerMillionUSD = c
		if _, _, err := decodePrice(encodePrice(p)); !errors.Is(err, errCorrupt) {
			t.Errorf("format 4 price with a cached price of %v: %v", c, err)
		}
	}
	p.CachedPromptPerMillionUSD, p.BatchDiscountPercent = 0.1, 101
	if _, _, err := decodePrice(encodePrice(p)); !errors.Is(err, errCorrupt) {
		t.Errorf("format 4 price with a discount of 101: %v", err)
	}
}

// A billed hour was written in format 1 until the outbox took batch
// tokens of it, then in format 2 (b2Hex); format 1 decodes with none.
// Both decode with promptHoldsCached: their prompt meters took cached
// prompt tokens too. Since schema version 17 every billed hour is written
// in format 3 (b3Hex), with the cached prompt meters' tokens.
const (
	b2Hex = "02e8076401d8043c"
	b3Hex = "03e8076401d8043cc8013c"
)

func TestBilledFormats(t *testing.T) {
	b := billed{PromptTokens: 500, CompletionTokens: 50, Parts: 1, promptHoldsCached: true}
	if got := encodeBilledAs(&b, valueV1); got[0] != valueV1 {
		t.Fatalf("format 1: written in format %d", got[0])
	} else if d, err := decodeBilled(got); err != nil || d != b {
		t.Fatalf("format 1 billed hour decodes to %+v, %v", d, err)
	}
	b.BatchPromptTokens, b.BatchCompletionTokens = 300, 30
	if got := hex.EncodeToString(encodeBilledAs(&b, valueV2)); got != b2Hex {
		t.Fatalf("format 2 billed hour encodes to %s, want %s", got, b2Hex)
	}
	raw, _ := hex.DecodeString(b2Hex)
	if d, err := decodeBilled(raw); err != nil || d != b {
		t.Fatalf("format 2 billed hour decodes to %+v, %v", d, err)
	}
	b.promptHoldsCached = false
	b.CachedPromptTokens, b.BatchCachedPromptTokens = 100, 30
	if got := hex.EncodeToString(encodeBilled(&b)); got != b3Hex {
		t.Fatalf("billed hour encodes to %s, want %s", got, b3Hex)
	}
	raw, _ = hex.DecodeString(b3Hex)
	if d, err := decodeBilled(raw); err != nil || d != b {
		t.Fatalf("format 3 billed hour decodes to %+v, %v", d, err)
	}
	if got := encodeBilled(&billed{}); got[0] != valueV3 {
		t.Fatalf("an empty billed hour is written in format %d", got[0])
	}
}

// TestDecodeCachedOutOfRange: cached prompt tokens outside 0..prompt tokens,
// failed requests' tokens outside 0..all, or canceled or interrupted
// requests outside 0..requests, are refused as corrupt.
func TestDecodeCachedOutOfRange(t *testing.T) {
	for _, c := range []struct{ prompt, cached int64 }{{10, 11}, {10, -1}, {0, 1}} {
		ev := &nozzle.UsageEvent{RequestID: "r", TenantID: "t", Status: nozzle.UsageOK, Time: time.Unix(1, 0),
			PromptTokens: c.prompt, CachedPromptTokens: c.cached}
		if _, err := decodeEvent(encodeEvent(nil, ev)); !errors.Is(err, errCorrupt) {
			t.Errorf("event with %d of %d prompt tokens cached: %v", c.cached, c.prompt, err)
		}
		r := &rollup{Requests: 1, PromptTokens: c.prompt, CachedPromptTokens: c.cached}
		if _, err := decodeRollup(encodeRollup(r)); !errors.Is(err, errCorrupt) {
			t.Errorf("rollup with %d of %d prompt tokens cached: %v", c.cached, c.prompt, err)
		}
	}
	for _, r := range []rollup{
		{Requests: 1, Failed: 1, PromptTokens: 10, FailedPromptTokens: 11},
		{Requests: 1, Failed: 1, CompletionTokens: 10, FailedCompletionTokens: 11},
		{Requests: 1, Failed: 1, PromptTokens: 10, FailedPromptTokens: -1},
		{Requests: 1, Canceled: 2},
		{Requests: 1, Interrupted: -1},
	} {
		if _, err := decodeRollup(encodeRollup(&r)); !errors.Is(err, errCorrupt) {
			t.Errorf("rollup %+v: %v", r, err)
		}
	}
	ev := &nozzle.UsageEvent{RequestID: "r", TenantID: "t", Status: nozzle.UsageOK, Time: time.Unix(1, 0), PromptTokens: 10, CachedPromptTokens: 10}
	if got, err := decodeEvent(encodeEvent(nil, ev)); err != nil || got.CachedPromptTokens != 10 {
		t.Errorf("fully cached prompt: %+v, %v", got, err)
	}
}

func openCompat(t *testing.T, path string) *Ledger {
	t.Helper()
	l, err := Open(Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// rewriteUsage rewrites every stored event and rollup of a closed ledger
// with fn.
func rewriteUsage(t *testing.T, path string, fn func(bucket string, v []byte) []byte, version int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bEvents, bRollups, bHours, bMonths} {
			b := tx.Bucket(name)
			type kv struct{ k, v []byte }
			var all []kv
			if err := b.ForEach(func(k, v []byte) error {
				all = append(all, kv{bytes.Clone(k), fn(string(name), v)})
				return nil
			}); err != nil {
				return err
			}
			for _, x := range all {
				if err := b.Put(x.k, x.v); err != nil {
					return err
				}
			}
		}
		if version > 0 {
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], uint32(version))
			return tx.Bucket(bMeta).Put(metaVersion, v[:])
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// rollupsAs rewrites every rollup, hourly and monthly total of a closed
// ledger in the given value format and stamps the file with version, as
// an older build would have left it.
func rollupsAs(t *testing.T, path string, format byte, version int) {
	t.Helper()
	rewriteUsage(t, path, func(bucket string, v []byte) []byte {
		if bucket == string(bEvents) {
			return v
		}
		r, err := decodeRollup(v)
		if err != nil {
			t.Fatal(err)
		}
		return encodeRollupAs(&r, format)
	}, version)
}

// TestLedger_Format1File: a version 2 file, whose events and rollups are
// all format 1, opens at the current version; its usage reads as having no
// cached prompt tokens, new events add theirs to the old rollups, and the
// check holds throughout.
func TestLedger_Format1File(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	for _, id := range []string{"old-1", "old-2"} {
		ev := &nozzle.UsageEvent{RequestID: id, TenantID: ten.ID, Time: at, PromptTokens: 100, CompletionTokens: 10, DeviceSeconds: 1, RatePerHour: 2}
		if _, err := l.RecordUsage(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rewriteUsage(t, path, func(bucket string, v []byte) []byte {
		if bucket == string(bEvents) {
			ev, err := decodeEvent(v)
			if err != nil {
				t.Fatal(err)
			}
			return encodeEventV1(ev)
		}
		r, err := decodeRollup(v)
		if err != nil {
			t.Fatal(err)
		}
		return encodeRollupV1(&r)
	}, 2)

	l = openCompat(t, path)
	q := nozzle.ReportQuery{TenantID: ten.ID, Start: at.Truncate(time.Hour), End: at.Truncate(time.Hour).Add(time.Hour)}
	rep, err := l.Report(ctx, q)
	if err != nil || rep.Total.Requests != 2 || rep.Total.PromptTokens != 200 || rep.Total.CachedPromptTokens != 0 {
		t.Fatalf("report of the old file: %+v, %v", rep, err)
	}
	if res, err := l.Check(ctx); err != nil || res.Events != 2 {
		t.Fatalf("check of the old file: %+v, %v", res, err)
	}
	ev := &nozzle.UsageEvent{RequestID: "new-1", TenantID: ten.ID, Time: at, PromptTokens: 100, CachedPromptTokens: 64, CompletionTokens: 10, DeviceSeconds: 1, RatePerHour: 2}
	if _, err := l.RecordUsage(ctx, ev); err != nil {
		t.Fatal(err)
	}
	rep, err = l.Report(ctx, q)
	if err != nil || rep.Total.Requests != 3 || rep.Total.PromptTokens != 300 || rep.Total.CachedPromptTokens != 64 {
		t.Fatalf("report after a new event: %+v, %v", rep.Total, err)
	}
	if res, err := l.Check(ctx); err != nil || res.Events != 3 {
		t.Fatalf("check after a new event: %+v, %v", res, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The file is at the current version; old events kept their format,
	// the rollups they share with the new one moved to format 4.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v, _ := schemaVersion(tx); v != SchemaVersion {
			t.Errorf("version %d after open, want %d", v, SchemaVersion)
		}
		formats := map[string][]byte{}
		for _, name := range [][]byte{bEvents, bRollups, bHours, bMonths} {
			tx.Bucket(name).ForEach(func(k, v []byte) error {
				formats[string(name)] = append(formats[string(name)], v[0])
				return nil
			})
		}
		if got := formats[string(bEvents)]; !bytes.Equal(got, []byte{valueV1, valueV1, valueV2}) {
			t.Errorf("event formats %v", got)
		}
		for _, name := range []string{"rollups", "hours", "months"} {
			if got := formats[name]; !bytes.Equal(got, []byte{rollupV6}) {
				t.Errorf("%s formats %v", name, got)
			}
		}
		return nil
	})
}

// TestCheck_CachedPromptTokens: a rollup, hourly or monthly total whose
// cached prompt tokens differ from its events' is reported.
func TestCheck_CachedPromptTokens(t *testing.T) {
	for _, bucket := range []string{"rollups", "hours", "months"} {
		t.Run(bucket, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "ledger.db")
			l := openCompat(t, path)
			ten := heldTenant(t, l)
			ev := &nozzle.UsageEvent{RequestID: "r", TenantID: ten.ID, Time: time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC), PromptTokens: 100, CachedPromptTokens: 64}
			if _, err := l.RecordUsage(ctx, ev); err != nil {
				t.Fatal(err)
			}
			if res, err := l.Check(ctx); err != nil || len(res.Problems) != 0 {
				t.Fatalf("check before: %+v, %v", res, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			changeRollups(t, path, bucket, func(r *rollup) { r.CachedPromptTokens-- })
			l = openCompat(t, path)
			res, err := l.Check(ctx)
			if !errors.Is(err, ErrInconsistent) || len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "CachedPromptTokens:63") {
				t.Fatalf("check after changing the cached tokens of %s: %+v, %v", bucket, res, err)
			}
		})
	}
}

// changeRollups rewrites every value of a closed ledger's bucket of rollups
// (rollups, hours or months) as fn changes it.
func changeRollups(t *testing.T, path, bucket string, fn func(r *rollup)) {
	t.Helper()
	rewriteUsage(t, path, func(name string, v []byte) []byte {
		if name != bucket {
			return v
		}
		r, err := decodeRollup(v)
		if err != nil {
			t.Fatal(err)
		}
		fn(&r)
		return encodeRollup(&r)
	}, 0)
}

// appendRecordV1 appends ev's journal record in format 1, as the builds
// before schema version 3 wrote it.
func appendRecordV1(b []byte, gen uint32, ev *nozzle.UsageEvent) []byte {
	payload := encodeEventV1(ev)
	var g [4]byte
	binary.LittleEndian.PutUint32(g[:], gen)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Update(crc32.Checksum(g[:], crc32c), crc32c, payload))
	b = append(b, g[:]...)
	return append(b, payload...)
}

// TestJournal_Format1Replay: the journal an older build left behind when it
// crashed (format 1 events, a version 2 file) is filed on open.
func TestJournal_Format1Replay(t *testing.T) {
	ctx := context.Background()
	l, path, ten := heldLedger(t)
	crash(l)
	rewriteUsage(t, path, func(_ string, v []byte) []byte { return v }, 2)
	at := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	var b []byte
	for i := range 3 {
		ev := journalEvent(ten.ID, fmt.Sprintf("old-%d", i), at)
		ev.Status = nozzle.UsageOK
		b = appendRecordV1(b, 5, ev)
	}
	if err := os.WriteFile(journalPaths(path)[0], b, 0o600); err != nil {
		t.Fatal(err)
	}

	l = openHeld(t, Options{Path: path})
	defer l.Close()
	assertEmptyJournal(t, path)
	if res, err := l.Check(ctx); err != nil || res.Events != 3 {
		t.Fatalf("check after replay: %+v, %v", res, err)
	}
	ev, err := l.Usage(ctx, "old-2")
	if err != nil || ev.PromptTokens != 1000 || ev.CachedPromptTokens != 0 {
		t.Fatalf("replayed event %+v, %v", ev, err)
	}
}

// TestLedger_BackfillFailedTokens: a version 4 file, whose rollups do not
// tell the failed requests' tokens apart, opens at the current version with
// those tokens added from the events; the check holds and the outbox meters
// only the tokens of the requests that did not fail.
func TestLedger_BackfillFailedTokens(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	for i, st := range []string{nozzle.UsageOK, nozzle.UsageFailed, nozzle.UsageFailed, nozzle.UsageCanceled} {
		ev := &nozzle.UsageEvent{RequestID: fmt.Sprint("r", i), TenantID: ten.ID, AdapterID: "ad", Status: st, Time: at,
			PromptTokens: int64(100 * (i + 1)), CompletionTokens: int64(10 * (i + 1))}
		if _, err := l.RecordUsage(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rollupsAs(t, path, valueV2, 4)

	l = openCompat(t, path)
	if res, err := l.Check(ctx); err != nil || res.Events != 4 {
		t.Fatalf("check after the migration: %+v, %v", res, err)
	}
	// Failed: r1 and r2, 200+300 prompt and 20+30 completion tokens.
	err := l.view(func(tx *bolt.Tx) error {
		r, err := decodeRollup(tx.Bucket(bMonths).Get(monthKey(ten.ID, monthOf(at))))
		if err != nil || r.FailedPromptTokens != 500 || r.FailedCompletionTokens != 50 || r.Failed != 2 {
			t.Errorf("month after the migration: %+v, %v", r, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := l.SweepOutbox(ctx, at.Add(2*time.Hour), OutboxOptions{}); err != nil || n != 2 {
		t.Fatalf("SweepOutbox = %d, %v", n, err)
	}
	rows, err := l.OutboxRows(ctx, "")
	if err != nil || len(rows) != 2 {
		t.Fatalf("outbox rows %+v, %v", rows, err)
	}
	for _, r := range rows {
		if want := map[string]int64{MeterPrompt: 500, MeterCompletion: 50}[r.Meter]; r.Value != want {
			t.Errorf("%s meter event of %d tokens, want %d", r.Meter, r.Value, want)
		}
	}
}

// The journal records schema version 6 added, byte for byte, generation 5:
// a running request's checkpoint (status interrupted, code 4), the event of
// an idempotent request that ends its attempt's checkpoint, and a
// checkpoint's end alone (a duplicate's).
const (
	ckptRecordHex = "6500000073a407ae050000008102057265715f310574656e5f31056b65795f310461645f310373716c0373716c037274300480e0b7fb9bd4cd9931d00f8008643fe00000000000000000000000000000000000000000000000000000000000004000000000000000000000000000000000"
	endRecordHex  = "6c0000005068994b0500000082057265715f3102066964656d5f310574656e5f31056b65795f310461645f310373716c0373716c037274300180e0b7fb9bd4cd9931d00f8008643fe000000000000000000000000000000000000000000000000000000000000040000000000000003f50624dd2f1a9fc00"
	endOnlyHex    = "070000008759be1f0500000082057265715f32"
)

// TestJournal_CheckpointRecords pins the bytes of the checkpoint records
// and decodes them.
func TestJournal_CheckpointRecords(t *testing.T) {
	ck := &nozzle.UsageEvent{RequestID: "req_1", TenantID: "ten_1", KeyID: "key_1", AdapterID: "ad_1", AdapterName: "sql",
		Model: "sql", RuntimeID: "rt0", Status: nozzle.UsageInterrupted, Time: time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC),
		PromptTokens: 1000, CachedPromptTokens: 512, CompletionTokens: 50, DeviceSeconds: 0.5, RatePerHour: 2}
	final := *ck
	final.RequestID, final.Status, final.ChargeUSD = "idem_1", nozzle.UsageOK, 0.001
	for _, c := range []struct {
		hex string
		r   jrec
	}{{ckptRecordHex, jrec{ev: ck, ckpt: true}}, {endRecordHex, jrec{ev: &final, ends: "req_1"}}, {endOnlyHex, jrec{ends: "req_2"}}} {
		want, _ := hex.DecodeString(c.hex)
		if got, _ := appendJournalRecord(nil, nil, 5, c.r); !bytes.Equal(got, want) {
			t.Errorf("record %+v encodes to %x, want %s", c.r, got, c.hex)
		}
		recs, good, gen := decodeJournal(want)
		if len(recs) != 1 || good != len(want) || gen != 5 {
			t.Fatalf("%s decodes to %d records, %d bytes, generation %d", c.hex, len(recs), good, gen)
		}
		r := recs[0]
		if r.ckpt != c.r.ckpt || r.ends != c.r.ends || (r.ev == nil) != (c.r.ev == nil) ||
			r.ev != nil && (r.ev.RequestID != c.r.ev.RequestID || r.ev.Status != c.r.ev.Status || r.ev.CompletionTokens != 50 || r.ev.CachedPromptTokens != 512) {
			t.Errorf("%s decodes to %+v (event %+v)", c.hex, r, r.ev)
		}
	}
	// An event record may not say interrupted, nor a checkpoint anything else.
	ok := *ck
	ok.Status = nozzle.UsageOK
	for _, r := range []jrec{{ev: ck}, {ev: &ok, ckpt: true}, {ev: ck, ends: "req_9"}} {
		b, _ := appendJournalRecord(nil, nil, 5, r)
		if recs, _, _ := decodeJournal(b); len(recs) != 0 {
			t.Errorf("record %+v (status %s) decodes", r, r.ev.Status)
		}
	}
}

// TestLedger_Version5File: a version 5 file opens at the current version
// with a checkpoints bucket, and the requests left running when it next
// crashes are charged from their checkpoints; a file of a newer version is
// refused.
func TestLedger_Version5File(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	if _, err := l.RecordUsage(ctx, &nozzle.UsageEvent{RequestID: "old", TenantID: ten.ID, Time: at, PromptTokens: 10}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	asVersion(t, path, 5, bCheckpoints)

	l = openHeld(t, Options{Path: path})
	err := l.view(func(tx *bolt.Tx) error {
		if v, _ := schemaVersion(tx); v != SchemaVersion || tx.Bucket(bCheckpoints) == nil {
			t.Errorf("version %d, checkpoints bucket %v", v, tx.Bucket(bCheckpoints) != nil)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CheckpointUsage(ctx, &nozzle.UsageEvent{RequestID: "running", TenantID: ten.ID, Time: at, PromptTokens: 10, CompletionTokens: 3}); err != nil {
		t.Fatal(err)
	}
	l.fileJournal()
	crash(l)
	l = openCompat(t, path)
	if ev, err := l.Usage(ctx, "running"); err != nil || ev.Status != nozzle.UsageInterrupted || ev.CompletionTokens != 3 {
		t.Fatalf("interrupted event %+v, %v", ev, err)
	}
	if res, err := l.Check(ctx); err != nil || res.Events != 2 {
		t.Fatalf("check: %+v, %v", res, err)
	}
	l.Close()

	asVersion(t, path, SchemaVersion+1)
	if l, err := Open(Options{Path: path}); err == nil || !strings.Contains(err.Error(), "newer than this build supports") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("open of a version %d file: %v", SchemaVersion+1, err)
	}
}

// TestLedger_Version15Prices: a file of schema version 15 — a default
// price and a tenant's override stored in format 1 (p1Hex's bytes), and
// rollups of format 4 — opens at version 16 with both prices read as no
// batch discount, so batch requests priced by them are charged in full
// (their bills do not change), whatever the binary's own default price
// says; a discount set afterwards applies from its time; the check holds
// with old and new rollups of the same hour.
func TestLedger_Version15Prices(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openCompat(t, path)
	ten := heldTenant(t, l)
	at := time.Date(2026, 3, 4, 10, 5, 0, 0, time.UTC)
	if _, err := l.RecordUsage(ctx, &nozzle.UsageEvent{RequestID: "old", TenantID: ten.ID, Time: at, PromptTokens: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rollupsAs(t, path, valueV4, 15)
	old, _ := hex.DecodeString(p1Hex) // $0.2 and $0.6 per million, as version 15 stored it
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bPrices).Put(priceKey("", at.Add(-24*time.Hour)), old); err != nil {
			return err
		}
		return tx.Bucket(bPrices).Put(priceKey(ten.ID, at.Add(time.Hour)), old)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	l, err = Open(Options{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		DefaultPrice: nozzle.Price{PromptPerMillionUSD: 9, CompletionPerMillionUSD: 9, BatchDiscountPercent: 50}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if v, err := FileVersion(l); err != nil || v != SchemaVersion {
		t.Fatalf("version %d, %v after open, want %d", v, err, SchemaVersion)
	}
	for _, tid := range []string{"", ten.ID} {
		hist, err := l.Prices(ctx, tid)
		if err != nil || len(hist) != 1 || hist[0].Price != (nozzle.Price{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6, CachedPromptPerMillionUSD: 0.2}) {
			t.Fatalf("prices of %q: %+v, %v", tid, hist, err)
		}
	}
	for _, c := range []struct {
		id string
		at time.Time
	}{{"under-default", at}, {"under-override", at.Add(2 * time.Hour)}} {
		ev := &nozzle.UsageEvent{RequestID: c.id, TenantID: ten.ID, Time: c.at, PromptTokens: 1_000_000, CompletionTokens: 1_000_000, Batch: true}
		if _, err := l.RecordUsage(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if ev.ChargeUSD != 0.8 {
			t.Errorf("batch request %s under a version 15 price charged %v, want 0.8 (no discount)", c.id, ev.ChargeUSD)
		}
	}
	// A discount set now applies from its time on; the override stored
	// before still has none.
	if err := l.SetPrice(ctx, "", nozzle.Price{PromptPerMillionUSD: 0.2, CompletionPerMillionUSD: 0.6, BatchDiscountPercent: 50}, at.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	ev := &nozzle.UsageEvent{RequestID: "discounted", TenantID: ten.ID, Time: at.Add(40 * time.Minute), PromptTokens: 1_000_000, CompletionTokens: 1_000_000, Batch: true}
	if _, err := l.RecordUsage(ctx, ev); err != nil || math.Abs(ev.ChargeUSD-0.4) > 1e-12 {
		t.Errorf("batch request under the new default price: %v, %v, want 0.4", ev.ChargeUSD, err)
	}
	ev = &nozzle.UsageEvent{RequestID: "override", TenantID: ten.ID, Time: at.Add(3 * time.Hour), PromptTokens: 1_000_000, CompletionTokens: 1_000_000, Batch: true}
	if _, err := l.RecordUsage(ctx, ev); err != nil || ev.ChargeUSD != 0.8 {
		t.Errorf("batch request under the old override: %v, %v, want 0.8", ev.ChargeUSD, err)
	}
	rep, err := l.Report(ctx, nozzle.ReportQuery{TenantID: ten.ID, Start: at.Truncate(time.Hour), End: at.Truncate(time.Hour).Add(time.Hour)})
	if err != nil || rep.Total.Requests != 3 || rep.Total.BatchRequests != 2 || rep.Total.BatchPromptTokens != 2_000_000 ||
		math.Abs(rep.Total.BatchChargeUSD-1.2) > 1e-9 || math.Abs(rep.Total.ChargedUSD-1.2) > 1e-9 { // "old" kept its charge: none
		t.Fatalf("report of the hour with old and new events: %+v, %v", rep.Total, err)
	}
	if _, err := l.Check(ctx); err != nil {
		t.Fatal(err)
	}
}
