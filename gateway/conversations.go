package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// The Conversations API (Deps.Conversations, the ledger): a tenant's
// conversations, each a list of items that the responses naming it
// (POST /v1/responses with "conversation") read before their input and
// append their input and output items to. Routes, all in the inference
// scope:
//
//	POST   /v1/conversations                         create {items?, metadata?}
//	GET    /v1/conversations/{id}                    the conversation
//	POST   /v1/conversations/{id}                    update its metadata
//	DELETE /v1/conversations/{id}                    delete it and its items
//	GET    /v1/conversations/{id}/items              a page of its items
//	POST   /v1/conversations/{id}/items              add items {items}
//	GET    /v1/conversations/{id}/items/{item_id}    one item
//	DELETE /v1/conversations/{id}/items/{item_id}    delete one item
//
// Items take the shapes of a response's input items (message,
// function_call, function_call_output, reasoning) and are listed as
// stored input items are (a type, a message's content as parts, a
// status); the server gives every item its id. A response's items are
// appended once it completes, with its usage event, in one durable write:
// a failed response appends nothing, and an idempotent replay appends
// nothing again. Responses that run at once in one conversation each read
// the items as they were when it started, and append their own as one
// block, in the order their usage events are recorded. Another tenant's
// conversation and a deleted one are not found, exactly like an id that
// never existed.

// maxConversationIDLen bounds a conversation or item id given in a path
// or a body (the ledger's ids are at most 200 bytes).
const maxConversationIDLen = 200

// storesConversations reports whether the gateway has a conversation store.
func (s *Server) storesConversations() bool { return s.deps.Conversations != nil }

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return hex.EncodeToString(b)
}

// validID reports whether id is 1 to maxConversationIDLen letters, digits,
// '_' and '-' (no path tricks, no spaces).
func validID(id string) bool {
	if id == "" || len(id) > maxConversationIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validConversationID reports whether id can name a conversation.
func validConversationID(id string) bool { return strings.HasPrefix(id, "conv_") && validID(id) }

// badConversationID is OpenAI's refusal of a malformed conversation id.
func badConversationID(param, id string) error {
	return invalidAs("invalid_value", param, "Invalid '%s': '%s'. Expected an ID that begins with 'conv_' followed by letters, digits, '_' or '-' (at most %d characters).", param, id, maxConversationIDLen)
}

// parseConversationParam reads /v1/responses' conversation: an id, or
// {"id": id}.
func parseConversationParam(raw json.RawMessage) (string, error) {
	var id string
	if json.Unmarshal(raw, &id) != nil {
		var o map[string]json.RawMessage
		if bytes.TrimSpace(raw)[0] != '{' || json.Unmarshal(raw, &o) != nil {
			return "", invalidAs("invalid_type", "conversation", "Invalid type for 'conversation': expected a string or an object with an 'id'.")
		}
		for k := range o {
			if k != "id" {
				return "", invalidAs("unknown_parameter", "conversation."+k, "Unknown parameter: 'conversation.%s'.", k)
			}
		}
		if isNull(o["id"]) {
			return "", invalidAs("missing_required_parameter", "conversation.id", "Missing required parameter: 'conversation.id'.")
		}
		if json.Unmarshal(o["id"], &id) != nil {
			return "", invalidAs("invalid_type", "conversation.id", "Invalid type for 'conversation.id': expected a string.")
		}
		if !validConversationID(id) {
			return "", badConversationID("conversation.id", id)
		}
		return id, nil
	}
	if !validConversationID(id) {
		return "", badConversationID("conversation", id)
	}
	return id, nil
}

// conversationNotFound is the refusal of a conversation the tenant has
// none under, naming param.
func conversationNotFound(id, param string) error {
	return nozzle.Errorf(nozzle.ENOTFOUND, "Conversation with id '%s' not found.", id).WithParam(param)
}

// parseMetadata reads metadata: an object of at most 16 string pairs, keys
// of at most 64 characters, values of at most 512. null is none.
func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	md := map[string]string{}
	if isNull(raw) {
		return md, nil
	}
	var o map[string]json.RawMessage
	if bytes.TrimSpace(raw)[0] != '{' || json.Unmarshal(raw, &o) != nil {
		return nil, invalidAs("invalid_type", "metadata", "Invalid type for 'metadata': expected an object.")
	}
	if len(o) > nozzle.MaxConversationMetadata {
		return nil, invalidAs("object_above_max_properties", "metadata", "Invalid 'metadata': too many properties. Expected an object with at most %d properties, but got an object with %d properties instead.", nozzle.MaxConversationMetadata, len(o))
	}
	for k, v := range o {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil, invalidAs("invalid_type", "metadata."+k, "Invalid type for 'metadata.%s': expected a string.", k)
		}
		if n := utf8.RuneCountInString(k); n > nozzle.MaxConversationMetadataKey {
			return nil, invalidAs("string_above_max_length", "metadata", "Invalid 'metadata': a key is %d characters long; keys have at most %d.", n, nozzle.MaxConversationMetadataKey)
		}
		if n := utf8.RuneCountInString(s); n > nozzle.MaxConversationMetadataVal {
			return nil, invalidAs("string_above_max_length", "metadata."+k, "Invalid 'metadata.%s': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", k, nozzle.MaxConversationMetadataVal, n)
		}
		md[k] = s
	}
	return md, nil
}

// parseConversationItems reads items to add (create, add): 1 to 20 input
// items as a response's input takes them (param names the array), each
// given a new id, in the form they are listed. required: absent or empty
// is refused.
func parseConversationItems(raw json.RawMessage, param string, required bool) ([]nozzle.ConversationItem, error) {
	if isNull(raw) {
		if required {
			return nil, invalidAs("missing_required_parameter", param, "Missing required parameter: '%s'.", param)
		}
		return nil, nil
	}
	n, _, _, ok := scanArray(raw)
	if !ok {
		return nil, invalidAs("invalid_type", param, "Invalid type for '%s': expected an array of input items.", param)
	}
	if n == 0 && required {
		return nil, invalidAs("empty_array", param, "Invalid '%s': empty array. Expected an array with minimum length 1.", param)
	}
	if n > nozzle.MaxConversationItemsAdded {
		return nil, arrayTooLong(param, nozzle.MaxConversationItemsAdded, n)
	}
	var items []respInputItem
	var stored []respStoredItem
	if json.Unmarshal(raw, &items) != nil || json.Unmarshal(raw, &stored) != nil || len(stored) != len(items) {
		return nil, invalidAs("invalid_type", param, "Invalid type for '%s': expected an array of input items.", param)
	}
	if _, err := respMessages(nil, items, 0); err != nil {
		return nil, renameParam(err, map[string]string{"input": param})
	}
	listForm(items, stored)
	out := make([]nozzle.ConversationItem, len(stored))
	for k := range stored {
		o := &stored[k]
		o.ID = itemPrefix(o.Type) + randomHex(24)
		b, err := json.Marshal(o)
		if err != nil { // decoded from JSON: cannot fail
			return nil, fmt.Errorf("encode conversation item: %w", err)
		}
		out[k] = nozzle.ConversationItem{ID: o.ID, Item: b}
	}
	return out, nil
}

// itemPrefix is the id prefix of an input item of type typ, as OpenAI's.
func itemPrefix(typ string) string {
	switch typ {
	case "function_call":
		return "fc_"
	case "function_call_output":
		return "fco_"
	case "reasoning":
		return "rs_"
	}
	return "msg_"
}

// appendConversation appends the Conversation object.
func appendConversation(dst []byte, c *nozzle.Conversation) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, c.ID)
	dst = append(dst, `,"object":"conversation","created_at":`...)
	dst = appendInt(dst, c.Created.Unix())
	dst = append(dst, `,"metadata":`...)
	md := c.Metadata
	if md == nil {
		md = map[string]string{}
	}
	b, _ := json.Marshal(md) // strings only: cannot fail
	dst = append(dst, b...)
	return append(dst, '}')
}

func sendJSON(c *fiber.Ctx, b []byte) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(b)
}

// appendItemList appends a list of items.
func appendItemList(dst []byte, items []nozzle.ConversationItem, more bool) []byte {
	dst = append(dst, `{"object":"list","data":[`...)
	for i, it := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, it.Item...)
	}
	dst = append(dst, `],"first_id":`...)
	if len(items) > 0 {
		dst = appendString(dst, items[0].ID)
		dst = append(dst, `,"last_id":`...)
		dst = appendString(dst, items[len(items)-1].ID)
	} else {
		dst = append(dst, `null,"last_id":null`...)
	}
	dst = append(dst, `,"has_more":`...)
	dst = appendBool(dst, more)
	return append(dst, '}')
}

// createConversation answers POST /v1/conversations.
func (s *Server) createConversation(c *fiber.Ctx) error {
	var b struct {
		Items    json.RawMessage `json:"items"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := s.readJSON(c, &b, true); err != nil {
		return err
	}
	md, err := parseMetadata(b.Metadata)
	if err != nil {
		return err
	}
	items, err := parseConversationItems(b.Items, "items", false)
	if err != nil {
		return err
	}
	p := principalFrom(c)
	if len(items) > 0 {
		if err := s.admitConversationItems(c.UserContext(), p.tenant.ID, "items"); err != nil {
			return err
		}
	}
	conv := &nozzle.Conversation{ID: "conv_" + randomHex(24), TenantID: p.tenant.ID, Created: time.Unix(time.Now().Unix(), 0).UTC(), Metadata: md}
	if err := s.deps.Conversations.CreateConversation(c.UserContext(), conv, items); err != nil {
		return fmt.Errorf("create conversation: %w", err)
	}
	return sendJSON(c, appendConversation(nil, conv))
}

// convParam returns the path's conversation id, refusing a malformed one.
func convParam(c *fiber.Ctx) (string, error) {
	id := c.Params("id")
	if !validConversationID(id) {
		return "", badConversationID("conversation_id", id)
	}
	return id, nil
}

// itemParam returns the path's item id, refusing a malformed one.
func itemParam(c *fiber.Ctx) (string, error) {
	id := c.Params("item")
	if !validID(id) {
		return "", invalidAs("invalid_value", "item_id", "Invalid 'item_id': '%s'. Expected an item id of letters, digits, '_' or '-' (at most %d characters).", id, maxConversationIDLen)
	}
	return id, nil
}

// ownConversation returns the tenant's conversation named by the path.
func (s *Server) ownConversation(c *fiber.Ctx) (*nozzle.Conversation, error) {
	id, err := convParam(c)
	if err != nil {
		return nil, err
	}
	p := principalFrom(c)
	conv, err := s.deps.Conversations.Conversation(c.UserContext(), p.tenant.ID, id)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND || err == nil && conv.TenantID != p.tenant.ID { // never trust a store to filter
		return nil, nozzle.ConversationNotFound(id)
	}
	return conv, err
}

// ownItem returns the tenant's conversation and the item id named by the
// path, both ids checked before the conversation is looked up.
func (s *Server) ownItem(c *fiber.Ctx) (*nozzle.Conversation, string, error) {
	if _, err := convParam(c); err != nil {
		return nil, "", err
	}
	itemID, err := itemParam(c)
	if err != nil {
		return nil, "", err
	}
	conv, err := s.ownConversation(c)
	return conv, itemID, err
}

// storeErr maps a store's refusal of the tenant's conversation id: not
// found (deleted meanwhile) as it was never there.
func storeErr(err error, id string) error {
	if e := nozzle.AsError(err); e != nil && e.Code == nozzle.ENOTFOUND && e.Param == "conversation_id" {
		return nozzle.ConversationNotFound(id)
	}
	return err
}

// getConversation answers GET /v1/conversations/{id}.
func (s *Server) getConversation(c *fiber.Ctx) error {
	conv, err := s.ownConversation(c)
	if err != nil {
		return err
	}
	return sendJSON(c, appendConversation(nil, conv))
}

// updateConversation answers POST /v1/conversations/{id} {metadata}.
func (s *Server) updateConversation(c *fiber.Ctx) error {
	id, err := convParam(c)
	if err != nil {
		return err
	}
	var b struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := s.readJSON(c, &b, false); err != nil {
		return err
	}
	if b.Metadata == nil {
		return invalidAs("missing_required_parameter", "metadata", "Missing required parameter: 'metadata'.")
	}
	md, err := parseMetadata(b.Metadata)
	if err != nil {
		return err
	}
	if _, err := s.ownConversation(c); err != nil {
		return err
	}
	p := principalFrom(c)
	conv, err := s.deps.Conversations.UpdateConversation(c.UserContext(), p.tenant.ID, id, md)
	if err != nil {
		return storeErr(err, id)
	}
	return sendJSON(c, appendConversation(nil, conv))
}

// deleteConversation answers DELETE /v1/conversations/{id}.
func (s *Server) deleteConversation(c *fiber.Ctx) error {
	conv, err := s.ownConversation(c)
	if err != nil {
		return err
	}
	if err := s.deps.Conversations.DeleteConversation(c.UserContext(), conv.TenantID, conv.ID); err != nil {
		return storeErr(err, conv.ID)
	}
	b := appendString([]byte(`{"id":`), conv.ID)
	return sendJSON(c, append(b, `,"object":"conversation.deleted","deleted":true}`...))
}

// listConversationItems answers GET /v1/conversations/{id}/items: a page
// of its items (after: an item id; limit 1 to 100, default 20; order asc
// or desc, default desc). include changes nothing: there is nothing more
// to include.
func (s *Server) listConversationItems(c *fiber.Ctx) error {
	id, err := convParam(c)
	if err != nil {
		return err
	}
	var page nozzle.ConversationPage
	if page.Limit, page.Desc, err = itemsPage(c); err != nil {
		return err
	}
	if q := c.Context().QueryArgs(); q.Has("after") {
		page.After = string(q.Peek("after"))
		if !validID(page.After) {
			return invalidAs("invalid_value", "after", "Invalid 'after': expected an item id.")
		}
	}
	if _, err := s.ownConversation(c); err != nil {
		return err
	}
	p := principalFrom(c)
	items, more, err := s.deps.Conversations.ConversationItems(c.UserContext(), p.tenant.ID, id, page)
	if err != nil {
		return storeErr(err, id)
	}
	return sendJSON(c, appendItemList(nil, items, more))
}

// addConversationItems answers POST /v1/conversations/{id}/items {items}:
// the items added, as a list.
func (s *Server) addConversationItems(c *fiber.Ctx) error {
	id, err := convParam(c)
	if err != nil {
		return err
	}
	var b struct {
		Items json.RawMessage `json:"items"`
	}
	if err := s.readJSON(c, &b, false); err != nil {
		return err
	}
	items, err := parseConversationItems(b.Items, "items", true)
	if err != nil {
		return err
	}
	if _, err := s.ownConversation(c); err != nil {
		return err
	}
	p := principalFrom(c)
	if err := s.admitConversationItems(c.UserContext(), p.tenant.ID, "items"); err != nil {
		return err
	}
	if err := s.deps.Conversations.AddConversationItems(c.UserContext(), p.tenant.ID, id, items); err != nil {
		return storeErr(err, id)
	}
	return sendJSON(c, appendItemList(nil, items, false))
}

// getConversationItem answers GET /v1/conversations/{id}/items/{item_id}.
func (s *Server) getConversationItem(c *fiber.Ctx) error {
	conv, itemID, err := s.ownItem(c)
	if err != nil {
		return err
	}
	it, err := s.deps.Conversations.ConversationItem(c.UserContext(), conv.TenantID, conv.ID, itemID)
	if err != nil {
		return storeErr(err, conv.ID)
	}
	return sendJSON(c, it.Item)
}

// deleteConversationItem answers DELETE /v1/conversations/{id}/items/{item_id}:
// the conversation.
func (s *Server) deleteConversationItem(c *fiber.Ctx) error {
	conv, itemID, err := s.ownItem(c)
	if err != nil {
		return err
	}
	conv, err = s.deps.Conversations.DeleteConversationItem(c.UserContext(), conv.TenantID, conv.ID, itemID)
	if err != nil {
		return storeErr(err, c.Params("id"))
	}
	return sendJSON(c, appendConversation(nil, conv))
}

// conversationHistory reads the items of the conversation a Responses
// request names, as the items before its input.
func (s *Server) conversationHistory(ctx context.Context, p *principal, j *job) ([]respInputItem, error) {
	rq := j.resp
	if !s.storesConversations() {
		return nil, conversationNotFound(rq.conversation, "conversation")
	}
	conv, err := s.deps.Conversations.Conversation(ctx, p.tenant.ID, rq.conversation)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND || err == nil && conv.TenantID != p.tenant.ID {
		return nil, conversationNotFound(rq.conversation, "conversation")
	} else if err != nil {
		return nil, fmt.Errorf("read conversation %s: %w", rq.conversation, err)
	}
	if err := s.admitConversationItems(ctx, p.tenant.ID, "conversation"); err != nil {
		return nil, err
	}
	room := maxChatMessages - len(rq.items)
	items, err := s.deps.Conversations.AllConversationItems(ctx, p.tenant.ID, rq.conversation, max(room, 0))
	switch e := nozzle.AsError(err); {
	case e != nil && e.Code == nozzle.ENOTFOUND:
		return nil, conversationNotFound(rq.conversation, "conversation") // deleted meanwhile
	case e != nil && e.Code == nozzle.EINVALID:
		return nil, invalidAs("array_above_max_length", "conversation", "The conversation is too long: its items and 'input' are more than %d items.", maxChatMessages)
	case err != nil:
		return nil, fmt.Errorf("read conversation %s: %w", rq.conversation, err)
	}
	out := make([]respInputItem, 0, len(items))
	for _, it := range items {
		var x respInputItem
		if err := json.Unmarshal(it.Item, &x); err != nil {
			return nil, fmt.Errorf("conversation %s: item %s: %w", rq.conversation, it.ID, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// maxConversationInput bounds the encoded input items a response may
// append to a conversation (the ledger takes 8 MiB with the output items).
const maxConversationInput = 4 << 20

// maxConversationAppend is the most a response appends, input and output
// items together: the ledger's bound.
const maxConversationAppend = 8 << 20

// prepareConversation encodes the request's input items for its
// conversation, once the response's id is known, and refuses a request
// whose input items are larger than limit before it runs.
func (j *job) prepareConversation(limit int) error {
	rq := j.resp
	if rq == nil || rq.conversation == "" {
		return nil
	}
	j.assignItemIDs()
	n := 0
	rq.convInput = make([]nozzle.ConversationItem, 0, len(rq.stored))
	for k := range rq.stored {
		b, err := json.Marshal(&rq.stored[k])
		if err != nil { // decoded from JSON: cannot fail
			return fmt.Errorf("encode input item: %w", err)
		}
		n += len(b) + len(rq.stored[k].ID)
		rq.convInput = append(rq.convInput, nozzle.ConversationItem{ID: rq.stored[k].ID, Item: b})
	}
	if n > limit {
		return invalidAs("string_above_max_length", "input", "Invalid 'input': its items are %d bytes, more than a conversation takes at once (%d).", n, limit)
	}
	return nil
}

// conversationAppend is what a completed response whose request named a
// conversation appends to it: its input items (with the ids they are
// stored under), then the output items of its answer body.
func (cp *completion) conversationAppend(body []byte) *nozzle.ConversationAppend {
	j := cp.j
	rq := j.resp
	if rq == nil || rq.conversation == "" {
		return nil
	}
	ca := &nozzle.ConversationAppend{ConversationID: rq.conversation}
	ca.Items = append(ca.Items, rq.convInput...)
	n := 0
	for _, it := range ca.Items {
		n += len(it.ID) + len(it.Item)
	}
	var resp struct {
		Output []json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		cp.s.log.Error("conversation: answer unreadable; its output items are not appended", "request_id", cp.st.id, "err", err)
	}
	for _, o := range resp.Output {
		var x struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(o, &x) == nil && x.ID != "" {
			it := nozzle.ConversationItem{ID: x.ID, Item: compactJSON(o)}
			n += len(it.ID) + len(it.Item)
			ca.Items = append(ca.Items, it)
		}
	}
	if n > maxConversationAppend {
		// Never part of it: the answer is charged, the conversation left
		// as it was (an answer this large outgrows any model's context).
		cp.s.log.Error("conversation: a response's items are too large to append; none are", "request_id", cp.st.id,
			"conversation", rq.conversation, "bytes", n)
		return nil
	}
	if len(ca.Items) == 0 {
		return nil
	}
	return ca
}

// admitConversationItems refuses, before anything is stored or run, what
// would add items to the tenant's conversations once their items reach
// its cap (TenantConversationBytes). What was admitted under the cap
// still appends its items: the cap is checked at admission only.
func (s *Server) admitConversationItems(ctx context.Context, tenantID, param string) error {
	quota := s.cfg.TenantConversationBytes
	if quota <= 0 {
		return nil
	}
	used, err := s.deps.Conversations.ConversationBytes(ctx, tenantID)
	if err != nil {
		return fmt.Errorf("read conversation storage: %w", err)
	}
	if used >= quota {
		return conversationStorageFull(used, quota, param)
	}
	return nil
}

// conversationStorageFull refuses items past the tenant's conversation
// storage quota.
func conversationStorageFull(used, quota int64, param string) error {
	return nozzle.Errorf(nozzle.ETOOLARGE, "This organization's conversations are at their storage quota of %s (%s used). Delete conversations or items it no longer needs.",
		formatBytes(quota), formatBytes(used)).WithParam(param).WithReason("conversation_storage_full")
}
