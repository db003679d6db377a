package billing

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nozzle-ai/nozzle"
)

// Every binary value starts with a format byte so that a later schema can
// change a value's layout and still read the old one.
const valueV1 = 1

// valueV2 is the format of usage events and rollups since schema version
// 3: format 1 with the cached prompt tokens after the prompt tokens.
// Format 1 values still decode, with no cached prompt tokens.
const valueV2 = 2

// valueV3 is the format of rollups since schema version 5: format 2 with
// the prompt and completion tokens of the failed requests after the
// completion tokens. Older rollups decode with none, which the version 5
// migration makes true.
const valueV3 = 3

// valueV4 is the format of rollups since schema version 9: format 3 with
// the canceled and the interrupted requests after the failed ones. Older
// rollups decode with none, which the version 9 migration makes true.
const valueV4 = 4

// valueV5 is the format of a usage event with an attempt id
// (nozzle.UsageEvent.AttemptID) since schema version 11: format 2 with the
// attempt id after the stored response. An event without one is still
// written in format 2.
const valueV5 = 5

// valueV6 is the format of a usage event the Batch API ran
// (nozzle.UsageEvent.Batch) since schema version 16: format 5 with its
// attempt id possibly empty, then a flags uvarint (1: batch; a decoder
// refuses others and none, so only batch events are written in it).
// Older events decode as not batch, which they were not marked as.
const valueV6 = 6

// rollupV5 is the format of rollups since schema version 16: format 4
// with the batch requests, their prompt and completion tokens, the tokens
// of the failed ones among them, and their charge, after the charge.
// Older rollups decode with no batch usage, which their events had none
// of.
const rollupV5 = 5

// rollupV6 is the format of rollups since schema version 17: format 5
// with, after the batch charge, the cached prompt tokens of the failed
// requests, the batch requests' cached prompt tokens and those of the
// failed ones among them: what the cached-prompt meters need. The version
// 17 migration fills them in from the events; a rollup without any keeps
// its older format until next written, and decodes with none.
const rollupV6 = 6

// eventFlagBatch is the flag of a format 6 event run by the Batch API.
const eventFlagBatch = 1

// Status codes of stored usage events. Interrupted (4) is new in schema
// version 6.
var statusCodes = map[string]byte{nozzle.UsageOK: 1, nozzle.UsageCanceled: 2, nozzle.UsageFailed: 3, nozzle.UsageInterrupted: 4}
var statusNames = map[byte]string{1: nozzle.UsageOK, 2: nozzle.UsageCanceled, 3: nozzle.UsageFailed, 4: nozzle.UsageInterrupted}

func encodeEvent(buf []byte, ev *nozzle.UsageEvent) []byte {
	return encodeEventAs(buf, ev, eventFormat(ev))
}

// eventFormat is the value format ev is written in: 6 for a batch
// request, else 5 with an attempt id, else 2.
func eventFormat(ev *nozzle.UsageEvent) byte {
	if ev.Batch {
		return valueV6
	}
	if ev.AttemptID != "" {
		return valueV5
	}
	return valueV2
}

// encodeEventAs writes ev in value format 1 (no cached prompt tokens: what
// builds before schema version 3 wrote), 2, 5 (with its attempt id) or 6
// (with its attempt id and flags).
func encodeEventAs(buf []byte, ev *nozzle.UsageEvent, format byte) []byte {
	return appendEventAs(buf[:0], ev, format)
}

// appendEventAs appends ev's encoding in value format 1, 2, 5 or 6 to b.
func appendEventAs(b []byte, ev *nozzle.UsageEvent, format byte) []byte {
	e := enc{b: b}
	e.u8(format)
	e.str(ev.RequestID)
	e.str(ev.TenantID)
	e.str(ev.KeyID)
	e.str(ev.AdapterID)
	e.str(ev.AdapterName)
	e.str(ev.Model)
	e.str(ev.RuntimeID)
	e.u8(statusCodes[ev.Status])
	e.time(ev.Time)
	e.varint(ev.PromptTokens)
	if format >= valueV2 {
		e.varint(ev.CachedPromptTokens)
	}
	e.varint(ev.CompletionTokens)
	e.f64(ev.DeviceSeconds)
	e.f64(ev.QueueSeconds)
	e.f64(ev.TTFTSeconds)
	e.f64(ev.AdapterLoadSeconds)
	e.f64(ev.RatePerHour)
	e.f64(ev.ChargeUSD)
	e.bytes(ev.Response)
	if format >= valueV5 {
		e.str(ev.AttemptID)
	}
	if format >= valueV6 {
		var flags uint64
		if ev.Batch {
			flags |= eventFlagBatch
		}
		e.uvarint(flags)
	}
	return e.b
}

func decodeEvent(b []byte) (*nozzle.UsageEvent, error) {
	d := dec{b: b}
	format := d.u8()
	if format != valueV1 && format != valueV2 && format != valueV5 && format != valueV6 {
		d.fail()
	}
	ev := &nozzle.UsageEvent{
		RequestID:   d.str(),
		TenantID:    d.str(),
		KeyID:       d.str(),
		AdapterID:   d.str(),
		AdapterName: d.str(),
		Model:       d.str(),
		RuntimeID:   d.str(),
	}
	st, ok := statusNames[d.u8()]
	if !ok {
		d.fail()
	}
	ev.Status = st
	ev.Time = d.time()
	ev.PromptTokens = d.varint()
	ev.CachedPromptTokens = d.cached(format, ev.PromptTokens)
	ev.CompletionTokens = d.varint()
	ev.DeviceSeconds = d.f64()
	ev.QueueSeconds = d.f64()
	ev.TTFTSeconds = d.f64()
	ev.AdapterLoadSeconds = d.f64()
	ev.RatePerHour = d.f64()
	ev.ChargeUSD = d.f64()
	ev.Response = d.bytesCopy()
	switch format {
	case valueV5:
		if ev.AttemptID = d.str(); ev.AttemptID == "" {
			d.fail() // format 5 is written for an attempt id only
		}
	case valueV6:
		ev.AttemptID = d.str()
		if d.uvarint() != eventFlagBatch {
			d.fail() // format 6 is written for a batch event only
		}
		ev.Batch = true
	}
	if err := d.done("usage event"); err != nil {
		return nil, err
	}
	return ev, nil
}

// rollup is the sum of usage events in one group: a tenant, an adapter and
// an hour (bucket rollups), every tenant in an hour (bucket hours), or a
// tenant in a month (bucket months).
type rollup struct {
	Requests           int64
	Failed             int64
	Canceled           int64 // of Requests, those whose client went away
	Interrupted        int64 // of Requests, those a crash cut short
	PromptTokens       int64
	CachedPromptTokens int64 // of PromptTokens, those the prefix cache held
	CompletionTokens   int64
	// Of PromptTokens and CompletionTokens, those of failed requests: the
	// tokens nobody is billed for.
	FailedPromptTokens     int64
	FailedCompletionTokens int64
	// Of CachedPromptTokens, those of failed requests (since format 6).
	FailedCachedPromptTokens int64
	DeviceSeconds            float64
	ActiveCostUSD            float64
	ChargedUSD               float64
	// Of the above, those of requests the Batch API ran (since format 5):
	// their count, tokens, the tokens of the failed ones among them, and
	// their charge.
	Batch       batchSums
	AdapterName string
}

// batchSums are the batch requests' part of a rollup.
type batchSums struct {
	Requests               int64
	PromptTokens           int64
	CompletionTokens       int64
	FailedPromptTokens     int64
	FailedCompletionTokens int64
	ChargedUSD             float64
	// Of PromptTokens, those the prefix cache held, and of those, the
	// failed requests' (since format 6).
	CachedPromptTokens       int64
	FailedCachedPromptTokens int64
}

func (b *batchSums) add(o *batchSums) {
	b.Requests += o.Requests
	b.PromptTokens += o.PromptTokens
	b.CompletionTokens += o.CompletionTokens
	b.FailedPromptTokens += o.FailedPromptTokens
	b.FailedCompletionTokens += o.FailedCompletionTokens
	b.ChargedUSD += o.ChargedUSD
	b.CachedPromptTokens += o.CachedPromptTokens
	b.FailedCachedPromptTokens += o.FailedCachedPromptTokens
}

// partOf reports whether a count can be part of a whole (cached prompt
// tokens of the prompt tokens, failed requests' tokens of all): between 0
// and it. Zero always can: the decoders, like format 1's, leave the sign of
// the whole to validateEvent, and every value they accept must re-encode to
// one they accept.
func partOf(part, whole int64) bool { return part == 0 || (part > 0 && part <= whole) }

// billable returns the prompt and completion tokens of the requests that
// did not fail.
func (r *rollup) billable() (prompt, completion int64) {
	return r.PromptTokens - r.FailedPromptTokens, r.CompletionTokens - r.FailedCompletionTokens
}

// batchBillable returns the prompt and completion tokens of the batch
// requests that did not fail: part of billable's.
func (r *rollup) batchBillable() (prompt, completion int64) {
	return r.Batch.PromptTokens - r.Batch.FailedPromptTokens, r.Batch.CompletionTokens - r.Batch.FailedCompletionTokens
}

// cachedBillable returns the cached prompt tokens of the requests that did
// not fail, and of those the batch requests': parts of billable's and
// batchBillable's prompt tokens.
func (r *rollup) cachedBillable() (all, batch int64) {
	return r.CachedPromptTokens - r.FailedCachedPromptTokens, r.Batch.CachedPromptTokens - r.Batch.FailedCachedPromptTokens
}

// cached reads the cached prompt tokens of a format 2 value (format 1 has
// none) and checks them against its prompt tokens.
func (d *dec) cached(format byte, prompt int64) int64 {
	if format < valueV2 {
		return 0
	}
	c := d.varint()
	if !partOf(c, prompt) {
		d.fail()
	}
	return c
}

func (r *rollup) add(o *rollup) {
	r.Requests += o.Requests
	r.Failed += o.Failed
	r.Canceled += o.Canceled
	r.Interrupted += o.Interrupted
	r.PromptTokens += o.PromptTokens
	r.CachedPromptTokens += o.CachedPromptTokens
	r.CompletionTokens += o.CompletionTokens
	r.FailedPromptTokens += o.FailedPromptTokens
	r.FailedCompletionTokens += o.FailedCompletionTokens
	r.FailedCachedPromptTokens += o.FailedCachedPromptTokens
	r.DeviceSeconds += o.DeviceSeconds
	r.ActiveCostUSD += o.ActiveCostUSD
	r.ChargedUSD += o.ChargedUSD
	r.Batch.add(&o.Batch)
	if o.AdapterName != "" {
		r.AdapterName = o.AdapterName
	}
}

// addEvent adds one event to the rollup.
func (r *rollup) addEvent(ev *nozzle.UsageEvent) {
	r.Requests++
	switch ev.Status {
	case nozzle.UsageFailed:
		r.Failed++
		r.FailedPromptTokens += ev.PromptTokens
		r.FailedCompletionTokens += ev.CompletionTokens
		r.FailedCachedPromptTokens += ev.CachedPromptTokens
	case nozzle.UsageCanceled:
		r.Canceled++
	case nozzle.UsageInterrupted:
		r.Interrupted++
	}
	r.PromptTokens += ev.PromptTokens
	r.CachedPromptTokens += ev.CachedPromptTokens
	r.CompletionTokens += ev.CompletionTokens
	r.DeviceSeconds += ev.DeviceSeconds
	r.ActiveCostUSD += activeCost(ev)
	r.ChargedUSD += ev.ChargeUSD
	if ev.Batch {
		b := &r.Batch
		b.Requests++
		b.PromptTokens += ev.PromptTokens
		b.CompletionTokens += ev.CompletionTokens
		if ev.Status == nozzle.UsageFailed {
			b.FailedPromptTokens += ev.PromptTokens
			b.FailedCompletionTokens += ev.CompletionTokens
			b.FailedCachedPromptTokens += ev.CachedPromptTokens
		}
		b.CachedPromptTokens += ev.CachedPromptTokens
		b.ChargedUSD += ev.ChargeUSD
	}
	if ev.AdapterName != "" {
		r.AdapterName = ev.AdapterName
	}
}

// activeCost is the GPU cost of a request's device time.
func activeCost(ev *nozzle.UsageEvent) float64 { return ev.DeviceSeconds * ev.RatePerHour / 3600 }

func encodeRollup(r *rollup) []byte { return encodeRollupAs(r, rollupV6) }

// encodeRollupAs writes r in value format 1, 2 (as encodeEventAs; neither
// has the failed requests' tokens), 3 (no canceled and interrupted
// requests), 4 (no batch usage), 5 (no failed or batch cached prompt
// tokens) or 6.
func encodeRollupAs(r *rollup, format byte) []byte {
	e := enc{b: make([]byte, 0, 96+len(r.AdapterName))}
	e.u8(format)
	e.varint(r.Requests)
	e.varint(r.Failed)
	if format >= valueV4 {
		e.varint(r.Canceled)
		e.varint(r.Interrupted)
	}
	e.varint(r.PromptTokens)
	if format >= valueV2 {
		e.varint(r.CachedPromptTokens)
	}
	e.varint(r.CompletionTokens)
	if format >= valueV3 {
		e.varint(r.FailedPromptTokens)
		e.varint(r.FailedCompletionTokens)
	}
	e.f64(r.DeviceSeconds)
	e.f64(r.ActiveCostUSD)
	e.f64(r.ChargedUSD)
	if format >= rollupV5 {
		b := &r.Batch
		e.varint(b.Requests)
		e.varint(b.PromptTokens)
		e.varint(b.CompletionTokens)
		e.varint(b.FailedPromptTokens)
		e.varint(b.FailedCompletionTokens)
		e.f64(b.ChargedUSD)
	}
	if format >= rollupV6 {
		e.varint(r.FailedCachedPromptTokens)
		e.varint(r.Batch.CachedPromptTokens)
		e.varint(r.Batch.FailedCachedPromptTokens)
	}
	e.str(r.AdapterName)
	return e.b
}

func decodeRollup(b []byte) (rollup, error) {
	d := dec{b: b}
	format := d.u8()
	if format < valueV1 || format > rollupV6 {
		d.fail()
	}
	var r rollup
	r.Requests = d.varint()
	r.Failed = d.varint()
	if format >= valueV4 {
		r.Canceled = d.varint()
		r.Interrupted = d.varint()
		if !partOf(r.Canceled, r.Requests) || !partOf(r.Interrupted, r.Requests) {
			d.fail()
		}
	}
	r.PromptTokens = d.varint()
	r.CachedPromptTokens = d.cached(format, r.PromptTokens)
	r.CompletionTokens = d.varint()
	if format >= valueV3 {
		r.FailedPromptTokens = d.varint()
		r.FailedCompletionTokens = d.varint()
		if !partOf(r.FailedPromptTokens, r.PromptTokens) || !partOf(r.FailedCompletionTokens, r.CompletionTokens) {
			d.fail()
		}
	}
	r.DeviceSeconds = d.f64()
	r.ActiveCostUSD = d.f64()
	r.ChargedUSD = d.f64()
	if format >= rollupV5 {
		b := &r.Batch
		b.Requests = d.varint()
		b.PromptTokens = d.varint()
		b.CompletionTokens = d.varint()
		b.FailedPromptTokens = d.varint()
		b.FailedCompletionTokens = d.varint()
		b.ChargedUSD = d.f64()
		if !partOf(b.Requests, r.Requests) || !partOf(b.PromptTokens, r.PromptTokens) || !partOf(b.CompletionTokens, r.CompletionTokens) ||
			!partOf(b.FailedPromptTokens, b.PromptTokens) || !partOf(b.FailedCompletionTokens, b.CompletionTokens) ||
			!partOf(b.FailedPromptTokens, r.FailedPromptTokens) || !partOf(b.FailedCompletionTokens, r.FailedCompletionTokens) {
			d.fail()
		}
	}
	if format >= rollupV6 {
		r.FailedCachedPromptTokens = d.varint()
		r.Batch.CachedPromptTokens = d.varint()
		r.Batch.FailedCachedPromptTokens = d.varint()
		b := &r.Batch
		if !partOf(r.FailedCachedPromptTokens, r.CachedPromptTokens) || !partOf(r.FailedCachedPromptTokens, r.FailedPromptTokens) ||
			!partOf(b.CachedPromptTokens, r.CachedPromptTokens) || !partOf(b.CachedPromptTokens, b.PromptTokens) ||
			!partOf(b.FailedCachedPromptTokens, b.CachedPromptTokens) || !partOf(b.FailedCachedPromptTokens, b.FailedPromptTokens) ||
			!partOf(b.FailedCachedPromptTokens, r.FailedCachedPromptTokens) {
			d.fail()
		}
	}
	r.AdapterName = d.str()
	return r, d.done("rollup")
}

func encodeInterval(iv *nozzle.CapacityInterval) []byte {
	e := enc{}
	e.u8(valueV1)
	e.str(iv.RuntimeID)
	e.u64(iv.Seq)
	e.time(iv.Start)
	e.time(iv.End)
	e.f64(iv.ActiveSeconds)
	e.f64(iv.IdleSeconds)
	e.f64(iv.RatePerHour)
	return e.b
}

func decodeInterval(b []byte) (*nozzle.CapacityInterval, error) {
	d := dec{b: b}
	if d.u8() != valueV1 {
		d.fail()
	}
	iv := &nozzle.CapacityInterval{
		RuntimeID:     d.str(),
		Seq:           d.u64(),
		Start:         d.time(),
		End:           d.time(),
		ActiveSeconds: d.f64(),
		IdleSeconds:   d.f64(),
		RatePerHour:   d.f64(),
	}
	return iv, d.done("capacity interval")
}

// capHour is a runtime's capacity within one hour (bucket caphours).
type capHour struct {
	UptimeSeconds float64
	ActiveSeconds float64
	IdleSeconds   float64
	CostUSD       float64
	IdleCostUSD   float64
}

func (c *capHour) add(o capHour) {
	c.UptimeSeconds += o.UptimeSeconds
	c.ActiveSeconds += o.ActiveSeconds
	c.IdleSeconds += o.IdleSeconds
	c.CostUSD += o.CostUSD
	c.IdleCostUSD += o.IdleCostUSD
}

func encodeCapHour(c *capHour) []byte {
	e := enc{b: make([]byte, 0, 41)}
	e.u8(valueV1)
	e.f64(c.UptimeSeconds)
	e.f64(c.ActiveSeconds)
	e.f64(c.IdleSeconds)
	e.f64(c.CostUSD)
	e.f64(c.IdleCostUSD)
	return e.b
}

func decodeCapHour(b []byte) (capHour, error) {
	d := dec{b: b}
	if d.u8() != valueV1 {
		d.fail()
	}
	c := capHour{d.f64(), d.f64(), d.f64(), d.f64(), d.f64()}
	return c, d.done("capacity hour")
}

// encodePrice writes a price in format 4 (since schema version 17):
// prompt and completion per million, the batch discount percent, then the
// cached prompt price per million, every field always. Formats 1 (prompt
// and completion; no discount) and 3 (format 1, then a discount above 0)
// are no longer written; they decode with the cached prompt price equal
// to the prompt price, which is what they charged.
func encodePrice(p nozzle.Price) []byte {
	e := enc{b: make([]byte, 0, 33)}
	e.u8(priceV4)
	e.f64(p.PromptPerMillionUSD)
	e.f64(p.CompletionPerMillionUSD)
	e.f64(p.BatchDiscountPercent)
	e.f64(p.CachedPromptPerMillionUSD)
	return e.b
}

// encodePriceAs writes p in an older format (1 or 3), as builds before
// schema version 17 did; tests write old files with it.
func encodePriceAs(p nozzle.Price, format byte) []byte {
	e := enc{b: make([]byte, 0, 25)}
	e.u8(format)
	e.f64(p.PromptPerMillionUSD)
	e.f64(p.CompletionPerMillionUSD)
	if format == priceV3 {
		e.f64(p.BatchDiscountPercent)
	}
	return e.b
}

// priceStandard is the value of a tenant's price version that ends its
// override: the standard prices apply from its time (schema version 4).
const priceStandard = 2

// priceV3 is the format of a price with a batch discount (schema version
// 16): format 1, then the discount in percent, above 0 and at most 100.
const priceV3 = 3

// priceV4 is the format of every price written since schema version 17:
// format 1, then the batch discount in percent (0 to 100) and the cached
// prompt price (0 to the prompt price).
const priceV4 = 4

func encodeStandardPrice() []byte { return []byte{priceStandard} }

// decodePrice decodes a price version's value: a price, or the mark of
// the standard prices (standard true).
func decodePrice(b []byte) (p nozzle.Price, standard bool, err error) {
	if len(b) == 1 && b[0] == priceStandard {
		return nozzle.Price{}, true, nil
	}
	d := dec{b: b}
	format := d.u8()
	if format != valueV1 && format != priceV3 && format != priceV4 {
		d.fail()
	}
	p = nozzle.Price{PromptPerMillionUSD: d.f64(), CompletionPerMillionUSD: d.f64()}
	switch format {
	case priceV3:
		// written for a discount only, so that a price has one encoding
		if p.BatchDiscountPercent = d.f64(); !(p.BatchDiscountPercent > 0 && p.BatchDiscountPercent <= 100) {
			d.fail()
		}
	case priceV4:
		if p.BatchDiscountPercent = d.f64(); !(p.BatchDiscountPercent >= 0 && p.BatchDiscountPercent <= 100) {
			d.fail()
		}
		if p.CachedPromptPerMillionUSD = d.f64(); !(p.CachedPromptPerMillionUSD >= 0 && p.CachedPromptPerMillionUSD <= p.PromptPerMillionUSD) {
			d.fail()
		}
	}
	if format != priceV4 {
		// older prices had no cached price: cached tokens were charged
		// the prompt price, and still are
		p.CachedPromptPerMillionUSD = p.PromptPerMillionUSD
	}
	return p, false, d.done("price")
}

// billed is what the outbox has taken of a tenant's hour so far: the
// interactive meters' tokens (PromptTokens, CompletionTokens: those of
// requests the Batch API did not run), since schema version 16 the batch
// meters' (BatchPromptTokens, BatchCompletionTokens) and since version 17
// the cached prompt meters' (CachedPromptTokens, BatchCachedPromptTokens),
// which the prompt meters' no longer include.
type billed struct {
	PromptTokens            int64
	CompletionTokens        int64
	Parts                   uint32
	BatchPromptTokens       int64
	BatchCompletionTokens   int64
	CachedPromptTokens      int64
	BatchCachedPromptTokens int64
	// promptHoldsCached marks a value of format 1 or 2: its prompt
	// meters took cached prompt tokens too (before version 17 they had no
	// meters of their own). enqueueHour splits them before taking more.
	promptHoldsCached bool
}

// encodeBilled writes format 3: prompt, completion, parts, batch prompt,
// batch completion, cached prompt and batch cached prompt tokens. Formats
// 1 (prompt, completion, parts) and 2 (format 1, then the batch prompt
// and completion tokens, written for some only) are written only for a
// value read in them and not yet split (promptHoldsCached); they decode
// with promptHoldsCached set, and no batch tokens for format 1, which was
// true of every hour before schema version 16.
func encodeBilled(b *billed) []byte {
	if b.promptHoldsCached {
		// an older value not yet split (enqueueHour splits before it
		// writes): kept as it was
		if b.BatchPromptTokens != 0 || b.BatchCompletionTokens != 0 {
			return encodeBilledAs(b, valueV2)
		}
		return encodeBilledAs(b, valueV1)
	}
	e := enc{}
	e.u8(valueV3)
	e.varint(b.PromptTokens)
	e.varint(b.CompletionTokens)
	e.uvarint(uint64(b.Parts))
	e.varint(b.BatchPromptTokens)
	e.varint(b.BatchCompletionTokens)
	e.varint(b.CachedPromptTokens)
	e.varint(b.BatchCachedPromptTokens)
	return e.b
}

// encodeBilledAs writes b in format 1 or 2, as builds before schema
// version 17 did; tests write old files with it.
func encodeBilledAs(b *billed, format byte) []byte {
	e := enc{}
	e.u8(format)
	e.varint(b.PromptTokens)
	e.varint(b.CompletionTokens)
	e.uvarint(uint64(b.Parts))
	if format == valueV2 {
		e.varint(b.BatchPromptTokens)
		e.varint(b.BatchCompletionTokens)
	}
	return e.b
}

func decodeBilled(p []byte) (billed, error) {
	d := dec{b: p}
	format := d.u8()
	if format != valueV1 && format != valueV2 && format != valueV3 {
		d.fail()
	}
	b := billed{PromptTokens: d.varint(), CompletionTokens: d.varint()}
	parts := d.uvarint()
	if parts > 1<<31 {
		d.fail()
	}
	b.Parts = uint32(parts)
	switch format {
	case valueV2:
		b.BatchPromptTokens, b.BatchCompletionTokens = d.varint(), d.varint()
		if b.BatchPromptTokens == 0 && b.BatchCompletionTokens == 0 {
			d.fail() // format 2 is written for batch tokens only
		}
	case valueV3:
		b.BatchPromptTokens, b.BatchCompletionTokens = d.varint(), d.varint()
		b.CachedPromptTokens, b.BatchCachedPromptTokens = d.varint(), d.varint()
	}
	b.promptHoldsCached = format != valueV3
	return b, d.done("billed hour")
}

// Outbox row states.
const (
	outboxPending     = 1 // waiting to be sent, or being retried
	outboxSent        = 2 // Stripe took it; never sent again
	outboxNeedsReview = 3 // outcome unknown past Stripe's dedup window
	outboxExpired     = 4 // older than Stripe accepts
)

// outboxRow is one meter event to send: a tenant's tokens of one meter in
// one hour (or a later part of that hour, for late events).
type outboxRow struct {
	Identifier string
	TenantID   string
	Meter      string // one of the Meter constants
	EventName  string
	Hour       int64
	Part       uint32
	Value      int64
	State      byte
	// CustomerID is fixed at the first attempt so that every attempt
	// sends the same parameters under the same idempotency key.
	CustomerID string
	Attempts   uint32
	// UncertainSince is the time of the earliest attempt whose outcome is
	// unknown (it may have reached Stripe); zero when no such attempt.
	UncertainSince time.Time
	LastAttemptAt  time.Time
	NextAttemptAt  time.Time
	LastError      string
	SentAt         time.Time
	CreatedAt      time.Time
}

func encodeOutboxRow(r *outboxRow) []byte {
	e := enc{}
	e.u8(valueV1)
	e.str(r.Identifier)
	e.str(r.TenantID)
	e.str(r.Meter)
	e.str(r.EventName)
	e.varint(r.Hour)
	e.uvarint(uint64(r.Part))
	e.varint(r.Value)
	e.u8(r.State)
	e.str(r.CustomerID)
	e.uvarint(uint64(r.Attempts))
	e.time(r.UncertainSince)
	e.time(r.LastAttemptAt)
	e.time(r.NextAttemptAt)
	e.str(r.LastError)
	e.time(r.SentAt)
	e.time(r.CreatedAt)
	return e.b
}

func decodeOutboxRow(b []byte) (*outboxRow, error) {
	d := dec{b: b}
	if d.u8() != valueV1 {
		d.fail()
	}
	r := &outboxRow{
		Identifier: d.str(),
		TenantID:   d.str(),
		Meter:      d.str(),
		EventName:  d.str(),
		Hour:       d.varint(),
	}
	part := d.uvarint()
	r.Value = d.varint()
	r.State = d.u8()
	r.CustomerID = d.str()
	att := d.uvarint()
	r.UncertainSince = d.time()
	r.LastAttemptAt = d.time()
	r.NextAttemptAt = d.time()
	r.LastError = d.str()
	r.SentAt = d.time()
	r.CreatedAt = d.time()
	if part > 1<<31 || att > 1<<31 || r.State < outboxPending || r.State > outboxExpired {
		d.fail()
	}
	r.Part, r.Attempts = uint32(part), uint32(att)
	if err := d.done("outbox row"); err != nil {
		return nil, err
	}
	return r, nil
}

// outboxStats are the outbox's running counters (meta key "outbox").
type outboxStats struct {
	Sent       int64
	LastSentAt time.Time
	LastError  string
}

func encodeOutboxStats(s *outboxStats) []byte {
	e := enc{}
	e.u8(valueV1)
	e.varint(s.Sent)
	e.time(s.LastSentAt)
	e.str(s.LastError)
	return e.b
}

func decodeOutboxStats(b []byte) (outboxStats, error) {
	d := dec{b: b}
	if d.u8() != valueV1 {
		d.fail()
	}
	s := outboxStats{Sent: d.varint(), LastSentAt: d.time(), LastError: d.str()}
	return s, d.done("outbox stats")
}

// Metadata (tenants, keys, adapters, users, sessions) is stored as JSON:
// small, rarely written, and easy to extend. The record types carry the
// fields that the domain types keep out of their JSON (digests, hashes).

type tenantRecord struct {
	nozzle.Tenant
}

type keyRecord struct {
	nozzle.APIKey
	Digest string `json:"digest"`
}

type adapterRecord struct {
	nozzle.Adapter
}

type userRecord struct {
	nozzle.User
	PasswordHash  []byte    `json:"password_hash,omitempty"`
	InviteDigest  string    `json:"invite_digest,omitempty"`
	InviteExpires time.Time `json:"invite_expires,omitzero"`
	SessionsFrom  time.Time `json:"sessions_from,omitzero"`
}

type sessionRecord struct {
	nozzle.Session
}

func encodeJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// The record types hold only marshalable fields.
		panic(fmt.Sprintf("billing: marshal %T: %v", v, err))
	}
	return b
}

func decodeTenant(b []byte) (*nozzle.Tenant, error) {
	var r tenantRecord
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return nil, fmt.Errorf("decode tenant: %w", errCorrupt)
	}
	return &r.Tenant, nil
}

func decodeKey(b []byte) (*nozzle.APIKey, error) {
	var r keyRecord
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return nil, fmt.Errorf("decode key: %w", errCorrupt)
	}
	k := r.APIKey
	k.Digest = r.Digest
	return &k, nil
}

func decodeAdapter(b []byte) (*nozzle.Adapter, error) {
	var r adapterRecord
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return nil, fmt.Errorf("decode adapter: %w", errCorrupt)
	}
	return &r.Adapter, nil
}

func decodeUser(b []byte) (*nozzle.User, error) {
	var r userRecord
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return nil, fmt.Errorf("decode user: %w", errCorrupt)
	}
	u := r.User
	u.PasswordHash, u.InviteDigest, u.InviteExpires, u.SessionsFrom = r.PasswordHash, r.InviteDigest, r.InviteExpires, r.SessionsFrom
	return &u, nil
}

func decodeSession(b []byte) (*nozzle.Session, error) {
	var r sessionRecord
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		return nil, fmt.Errorf("decode session: %w", errCorrupt)
	}
	return &r.Session, nil
}

func encodeKey(k *nozzle.APIKey) []byte { return encodeJSON(keyRecord{APIKey: *k, Digest: k.Digest}) }

func encodeUser(u *nozzle.User) []byte {
	return encodeJSON(userRecord{User: *u, PasswordHash: u.PasswordHash, InviteDigest: u.InviteDigest, InviteExpires: u.InviteExpires,
		SessionsFrom: u.SessionsFrom})
}
