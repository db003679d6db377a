package nozzle

import (
	"context"
	"encoding/json"
	"time"
)

// Conversation is a Conversations API conversation kept for its tenant: a
// list of items (messages, function calls and their outputs, reasoning)
// that responses read before their input and append their input and
// output items to.
type Conversation struct {
	ID       string // "conv_…", unique within its tenant
	TenantID string
	Created  time.Time
	// Metadata is at most 16 pairs; never nil once read from a store.
	Metadata map[string]string
}

// ConversationItem is one item of a conversation: its id, unique within
// the conversation, and the item as the API lists it (a JSON object that
// carries the same id).
type ConversationItem struct {
	ID   string
	Item json.RawMessage
}

// ConversationAppend is a completed response's items (its input items,
// then its output items) to append to a conversation of the response's
// tenant. It is recorded with the response's usage event
// (UsageEvent.ConversationAppend), in the same durable write.
type ConversationAppend struct {
	ConversationID string
	Items          []ConversationItem
}

// Bounds of the Conversations API, as OpenAI's.
const (
	MaxConversationItemsAdded  = 20  // items one create or add call may carry
	MaxConversationMetadata    = 16  // metadata pairs
	MaxConversationMetadataKey = 64  // characters of a metadata key
	MaxConversationMetadataVal = 512 // characters of a metadata value
)

// ConversationPage asks for a page of a conversation's items: Limit items
// (1 or more) after the item After (empty: from the start), oldest first
// or, with Desc, newest first.
type ConversationPage struct {
	After string
	Limit int
	Desc  bool
}

// ConversationStore keeps the tenants' conversations. Another tenant's
// conversation and a deleted one are ENOTFOUND, exactly like an id that
// never existed (ConversationNotFound); so is an item the conversation
// does not hold (ConversationItemNotFound).
//
// Items are kept in the order they were appended. A response's items are
// appended when its usage event is recorded (UsageEvent.ConversationAppend)
// and as one block: the responses of one conversation that run at once
// append their blocks in the order their events are recorded. An item
// whose id the conversation holds already is not appended again.
type ConversationStore interface {
	// CreateConversation stores c (ID, TenantID, Created and Metadata
	// set) with its first items.
	CreateConversation(ctx context.Context, c *Conversation, items []ConversationItem) error
	// Conversation returns the tenant's conversation id.
	Conversation(ctx context.Context, tenantID, id string) (*Conversation, error)
	// UpdateConversation replaces the metadata of the tenant's
	// conversation id and returns it.
	UpdateConversation(ctx context.Context, tenantID, id string, metadata map[string]string) (*Conversation, error)
	// DeleteConversation deletes the tenant's conversation id and its items.
	DeleteConversation(ctx context.Context, tenantID, id string) error
	// AddConversationItems appends items to the tenant's conversation id.
	AddConversationItems(ctx context.Context, tenantID, id string, items []ConversationItem) error
	// ConversationItems returns a page of the items of the tenant's
	// conversation id and whether more follow it. An After the
	// conversation does not hold is EINVALID (param "after").
	ConversationItems(ctx context.Context, tenantID, id string, page ConversationPage) (items []ConversationItem, more bool, err error)
	// AllConversationItems returns every item of the tenant's
	// conversation id, oldest first, up to max (more: EINVALID, param
	// "conversation").
	AllConversationItems(ctx context.Context, tenantID, id string, max int) ([]ConversationItem, error)
	// ConversationItem returns the item itemID of the tenant's
	// conversation id.
	ConversationItem(ctx context.Context, tenantID, id, itemID string) (*ConversationItem, error)
	// DeleteConversationItem deletes the item itemID of the tenant's
	// conversation id and returns the conversation.
	DeleteConversationItem(ctx context.Context, tenantID, id, itemID string) (*Conversation, error)
	// ConversationBytes returns how many bytes of conversation items the
	// tenant holds, for its cap: items a response appends count once
	// its usage event is recorded.
	ConversationBytes(ctx context.Context, tenantID string) (int64, error)
}

// ConversationNotFound is the error for a conversation id the tenant has
// none under (missing, another tenant's, deleted), as OpenAI words it.
func ConversationNotFound(id string) error {
	return Errorf(ENOTFOUND, "Conversation with id '%s' not found.", id).WithParam("conversation_id")
}

// ConversationItemNotFound is the error for an item id the conversation
// does not hold.
func ConversationItemNotFound(convID, itemID string) error {
	return Errorf(ENOTFOUND, "Item with id '%s' not found in conversation '%s'.", itemID, convID).WithParam("item_id")
}
