package nozzle

import (
	"context"
	"io"
	"time"
)

// Usage event statuses.
const (
	UsageOK       = "ok"       // finished normally
	UsageCanceled = "canceled" // the client went away; tokens produced are charged
	UsageFailed   = "failed"   // the runtime failed; nothing is charged
	// UsageInterrupted marks the event the ledger makes from a running
	// request's last checkpoint (UsageCheckpointer) when the process that
	// ran it died before recording its usage: charged for the usage that
	// checkpoint recorded.
	UsageInterrupted = "interrupted"
)

// UsageEvent is the ledger's record of one request. Exactly one event exists
// per RequestID.
type UsageEvent struct {
	RequestID   string    `json:"request_id"`
	TenantID    string    `json:"tenant_id"`
	KeyID       string    `json:"key_id,omitempty"`
	AdapterID   string    `json:"adapter_id,omitempty"` // empty for the base model
	AdapterName string    `json:"adapter,omitempty"`
	Model       string    `json:"model"`
	RuntimeID   string    `json:"runtime_id,omitempty"`
	Status      string    `json:"status"`
	Time        time.Time `json:"time"` // when the request finished

	PromptTokens int64 `json:"prompt_tokens"`
	// CachedPromptTokens is how many of PromptTokens the runtime's prefix
	// cache held (OpenAI's usage.prompt_tokens_details.cached_tokens): a
	// part of PromptTokens, never more.
	CachedPromptTokens int64 `json:"cached_prompt_tokens"`
	CompletionTokens   int64 `json:"completion_tokens"`

	// DeviceSeconds is the request's share of every engine step it took
	// part in; QueueSeconds, TTFTSeconds and AdapterLoadSeconds are
	// latencies for the operator.
	DeviceSeconds      float64 `json:"device_seconds"`
	QueueSeconds       float64 `json:"queue_seconds"`
	TTFTSeconds        float64 `json:"ttft_seconds"`
	AdapterLoadSeconds float64 `json:"adapter_load_seconds"`
	// RatePerHour is the runtime's cost rate (the operator's GPU price) when
	// the request ran.
	RatePerHour float64 `json:"rate_per_hour"`

	// ChargeUSD is what the tenant is charged, set by the ledger from the
	// price in force at Time (zero for failed requests; Price.ChargeEvent).
	ChargeUSD float64 `json:"charge_usd"`

	// Batch marks a request the Batch API ran (a line of a batch's input
	// file): charged at the price's batch discount, and counted apart in
	// reports and Stripe's meters.
	Batch bool `json:"batch,omitempty"`

	// Response, when set, is stored with the event so that a retried
	// request with the same idempotency key is answered from the ledger.
	Response []byte `json:"-"`

	// AttemptID, when set, is a second id the ledger finds the event
	// under (Ledger.Usage), for a request recorded under another id than
	// the one its client saw: an idempotent request, recorded under its
	// key's id once it completed, is found also under the id of the
	// attempt that completed it (the gateway gives the digest of the
	// tenant and the X-Request-Id that attempt answered with). It names
	// the event for lookups only: a request recorded under it is another
	// request, not a duplicate. Stored with the event; left out when
	// another event holds it already as its request id or second id.
	AttemptID string `json:"-"`

	// StoredResponse, when set, is a Responses API response to keep for
	// its tenant (ResponseStore): the ledger stores it in the same durable
	// write as the event, so that a response is never kept uncharged nor
	// charged unkept; a duplicate event stores nothing. Not part of the
	// event's own record.
	StoredResponse *StoredResponse `json:"-"`

	// ConversationAppend, when set, is a Responses API response's items
	// to append to a conversation of its tenant (ConversationStore): the
	// ledger appends them in the same durable write as the event, so that
	// they are appended if and only if the event is recorded; a duplicate
	// event appends nothing. Only an ok event carries it. Not part of the
	// event's own record.
	ConversationAppend *ConversationAppend `json:"-"`

	// CheckpointID, when set, is the request id the request's usage was
	// checkpointed under while it ran (UsageCheckpointer.CheckpointUsage);
	// recording the event ends that checkpoint in the same durable write,
	// also when it differs from RequestID (an idempotent request's attempt)
	// and when the event is a duplicate. Not stored.
	CheckpointID string `json:"-"`
}

// Ledger is the durable usage ledger.
type Ledger interface {
	// RecordUsage durably stores ev (fsynced when it returns); reads of
	// usage made after it returns see it in the rollups. A RequestID already stored is
	// not stored again: RecordUsage then returns duplicate=true and fills
	// ev from the stored event.
	RecordUsage(ctx context.Context, ev *UsageEvent) (duplicate bool, err error)
	// Usage returns the event stored for a request: the one recorded
	// under requestID or, failing that, the one whose AttemptID it is.
	// Returns ENOTFOUND if there is none.
	Usage(ctx context.Context, requestID string) (*UsageEvent, error)
}

// UsageCheckpointer is a Ledger that keeps the usage so far of a request
// still running (a streamed completion), so that the tokens it delivered
// are charged even if the process running it dies before it ends.
type UsageCheckpointer interface {
	// CheckpointUsage durably records ev as the usage so far of the running
	// request ev.RequestID (fsynced when it returns), in place of the
	// request's earlier checkpoint; ev.Status and ev.ChargeUSD are ignored.
	// The request's final event — RecordUsage of an event with that
	// RequestID, or whose CheckpointID names it — ends the checkpoint in
	// the same durable write, so the two are never both charged. A
	// checkpoint no final event ended when the ledger is next opened (the
	// process died) becomes the request's usage event, status
	// UsageInterrupted, priced at ev.Time. A checkpoint of a request whose
	// event is recorded already is dropped.
	CheckpointUsage(ctx context.Context, ev *UsageEvent) error
}

// BudgetService reserves budget at admission so that concurrent requests
// cannot overspend a tenant's monthly budget.
type BudgetService interface {
	// ReserveBudget reserves usd against the tenant's budget for the
	// current month. Returns EQUOTA (with RetryAfter set to the start of
	// next month) if the reservation would exceed the budget. The returned
	// release function must be called once the request's usage has been
	// recorded (or the request abandoned); it is safe to call twice.
	ReserveBudget(ctx context.Context, tenantID string, usd float64) (release func(), err error)
}

// CapacityInterval is a stretch of a runtime's life: how long it was up,
// how much of that it spent running engine steps, and its cost rate.
// ActiveSeconds + IdleSeconds equals End − Start.
type CapacityInterval struct {
	RuntimeID     string    `json:"runtime_id"`
	Seq           uint64    `json:"seq"` // increasing per runtime, across its restarts too; (RuntimeID, Seq) is unique
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	ActiveSeconds float64   `json:"active_seconds"`
	IdleSeconds   float64   `json:"idle_seconds"`
	RatePerHour   float64   `json:"rate_per_hour"`
}

// CapacitySource reports a runtime's closed capacity intervals.
type CapacitySource interface {
	// CapacityIntervals returns closed intervals with Seq > after, oldest
	// first.
	CapacityIntervals(ctx context.Context, after uint64) ([]CapacityInterval, error)
}

// IdentifiedCapacitySource is a CapacitySource that can say which
// runtime it reports for: a runtime reached over the network is known by
// its address until asked.
type IdentifiedCapacitySource interface {
	CapacitySource
	// CapacityRuntimeID returns the id the runtime records its intervals
	// under.
	CapacityRuntimeID(ctx context.Context) (string, error)
}

// OpenCapacitySource is a CapacitySource that also reports the interval it
// has open, so that reports can show a runtime's uptime before the interval
// closes.
type OpenCapacitySource interface {
	CapacitySource
	// OpenCapacity returns the runtime's open interval so far: from its
	// Start to now (End), with the active and idle seconds so far, under
	// the Seq it will have once closed. ok is false when no interval is
	// open (the runtime is not up yet, or stopped).
	OpenCapacity(ctx context.Context) (iv CapacityInterval, ok bool, err error)
}

// CapacityLedger stores runtimes' capacity intervals.
type CapacityLedger interface {
	// RecordCapacity stores intervals; an interval already stored (same
	// RuntimeID and Seq) is skipped.
	RecordCapacity(ctx context.Context, intervals []CapacityInterval) error
	// LastCapacitySeq returns the highest Seq stored for a runtime.
	LastCapacitySeq(ctx context.Context, runtimeID string) (uint64, error)
}

// LedgerCheck is what a consistency check of the ledger looked at and found.
type LedgerCheck struct {
	Events     int `json:"events"`
	Rollups    int `json:"rollups"`
	Intervals  int `json:"capacity_intervals"`
	OutboxRows int `json:"outbox_rows"`
	// Checkpoints are running requests' usage checkpoints (see
	// UsageCheckpointer), not part of the sums.
	Checkpoints int `json:"checkpoints"`
	// Responses are the Responses API's stored responses (ResponseStore),
	// deleted ones that later stored responses continue included.
	Responses int `json:"responses"`
	// Conversations are the Conversations API's conversations
	// (ConversationStore).
	Conversations int      `json:"conversations"`
	Problems      []string `json:"problems,omitempty"`
}

// LedgerMaintainer backs up and checks the ledger while it serves.
type LedgerMaintainer interface {
	// Backup writes a consistent copy of the ledger file to w.
	Backup(ctx context.Context, w io.Writer) error
	// Check verifies that every rollup equals the sum of its events.
	Check(ctx context.Context) (*LedgerCheck, error)
}
