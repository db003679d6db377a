package nozzle

import (
	"context"
	"encoding/json"
	"time"
)

// StoredResponse is a Responses API response kept for its tenant, so that
// it can be retrieved, listed, deleted and continued
// (previous_response_id). It is recorded with the request's usage event
// (UsageEvent.StoredResponse).
type StoredResponse struct {
	ID       string `json:"id"` // "resp_…", unique within its tenant
	TenantID string `json:"tenant_id"`
	// PreviousID is the response this one continued (its
	// previous_response_id), or empty.
	PreviousID string    `json:"previous_response_id,omitempty"`
	Created    time.Time `json:"created"`
	// Body is the Response object as it was answered (JSON).
	Body []byte `json:"-"`
	// Input is the request's own input items (a JSON array, each item with
	// its id), without those of the responses it continued.
	Input []byte `json:"-"`
}

// ResponseStore reads and deletes the stored responses of a tenant. A
// response of another tenant, a deleted one and one that expired are all
// ENOTFOUND, exactly like an id that never existed.
type ResponseStore interface {
	// StoredResponse returns the tenant's response id.
	StoredResponse(ctx context.Context, tenantID, id string) (*StoredResponse, error)
	// ResponseItems returns the tenant's response id with the items of
	// the conversation it answered, oldest first — the input and output
	// items of every response it continued, then its own input items —
	// and its output items.
	ResponseItems(ctx context.Context, tenantID, id string) (r *StoredResponse, input, output []json.RawMessage, err error)
	// DeleteResponse deletes the tenant's response id.
	DeleteResponse(ctx context.Context, tenantID, id string) error
	// StoredResponseBytes returns how many bytes of stored responses the
	// tenant holds (Body and Input), for a cap; it may lag the responses
	// stored moments ago.
	StoredResponseBytes(ctx context.Context, tenantID string) (int64, error)
}

// ResponseNotFound is the error for a response id the tenant has no
// readable stored response under (missing, another tenant's, deleted,
// expired), as OpenAI words it; stores and the gateway answer alike.
func ResponseNotFound(id string) error {
	return Errorf(ENOTFOUND, "Response with id '%s' not found.", id).WithParam("response_id")
}
