package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/nozzle-ai/nozzle"
)

// Stored responses: what the Responses API keeps of a response (Deps.
// Responses, the ledger). A completed response whose request did not set
// store to false is recorded with its usage event (settle), in the same
// durable write, as the Response object answered and its own input items
// (each given an id); a failed one stores nothing, and an idempotent
// replay stores nothing again. Routes:
//
//	GET    /v1/responses/{id}              the Response object (stream=true: its events)
//	DELETE /v1/responses/{id}              {"id", "object": "response", "deleted": true}
//	GET    /v1/responses/{id}/input_items  the items of the conversation it answered
//
// previous_response_id continues a stored response: the conversation is
// its input items and output items (those of the responses it continued
// first), then the request's input; its instructions are not carried
// over. Another tenant's response, a deleted one and one past the
// retention are not found, exactly like an id that never existed.

// maxResponseIDLen bounds a response id (the ledger's ids are at most 200
// bytes).
const maxResponseIDLen = 200

// maxStoredPart is the most the ledger keeps of a response's object and of
// its input items, each: a response whose input items or answer are
// larger is answered store false and not kept (unstore).
const maxStoredPart = 4 << 20

// Defaults and bounds of an input item list's page, as OpenAI's.
const (
	defaultItemsLimit = 20
	maxItemsLimit     = 100
)

// storesResponses reports whether the gateway has a store for responses.
func (s *Server) storesResponses() bool { return s.deps.Responses != nil }

// storedPartLimit is maxStoredPart, or the smaller limit a test set
// (Config.storedPart).
func (s *Server) storedPartLimit() int {
	if s.cfg.storedPart > 0 {
		return s.cfg.storedPart
	}
	return maxStoredPart
}

// unstore gives up keeping the response a request asked to store: its
// answer says "store": false (appendResponse reads it) and settle keeps
// nothing. Every reason goes through it, each as soon as it is known:
// before the request runs, no store or the tenant at its cap (admitStore);
// once the response's id is known, input items larger than the ledger
// keeps (prepareStore); once the answer is whole, an answer larger than
// that (responseBody) — after a stream's response.created, which said
// true, and before its response.completed, which says false.
func (rq *respRequest) unstore() { rq.store, rq.storedInput = false, nil }

// admitStore decides, before the request runs, whether its response may
// be kept: not where the gateway has no store, nor once the tenant's
// stored responses reach its cap (TenantResponseBytes).
func (s *Server) admitStore(ctx context.Context, p *principal, j *job) error {
	rq := j.resp
	if rq == nil || !rq.store {
		return nil
	}
	if !s.storesResponses() {
		rq.unstore()
		return nil
	}
	if s.cfg.TenantResponseBytes > 0 {
		held, err := s.deps.Responses.StoredResponseBytes(ctx, p.tenant.ID)
		if err != nil {
			return err
		}
		// At its cap the tenant's new responses are answered, not kept.
		if held >= s.cfg.TenantResponseBytes {
			rq.unstore()
		}
	}
	return nil
}

// previousNotFound is OpenAI's refusal of a previous_response_id that
// names no stored response of the tenant.
func previousNotFound(id string) error {
	return nozzle.Errorf(nozzle.ENOTFOUND, "Previous response with id '%s' not found.", id).
		WithParam("previous_response_id").WithReason("previous_response_not_found")
}

// respHistory puts the conversation of the response the request continues
// (previous_response_id) before the request's input in j's messages.
func (s *Server) respHistory(ctx context.Context, p *principal, j *job) error {
	rq := j.resp
	if rq != nil && rq.conversation != "" {
		earlier, err := s.conversationHistory(ctx, p, j)
		if err != nil {
			return err
		}
		msgs, err := respMessages(j.messages[:rq.head:rq.head], append(earlier, rq.items...), -len(earlier))
		if err != nil {
			if e := nozzle.AsError(err); e != nil && strings.HasPrefix(e.Param, "input[-") {
				// A stored item the conversation cannot take: the store's fault.
				return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: fmt.Errorf("conversation %s: %w", rq.conversation, err)}
			}
			return err
		}
		j.messages = msgs
		return nil
	}
	if rq == nil || rq.previousID == "" {
		return nil
	}
	if !s.storesResponses() {
		return previousNotFound(rq.previousID)
	}
	prev, input, output, err := s.deps.Responses.ResponseItems(ctx, p.tenant.ID, rq.previousID)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND || err == nil && prev.TenantID != p.tenant.ID { // never trust a store to filter
		return previousNotFound(rq.previousID)
	} else if err != nil {
		return fmt.Errorf("read previous response %s: %w", rq.previousID, err)
	}
	earlier := make([]respInputItem, 0, len(input)+len(output)+len(rq.items))
	for _, raw := range append(input, output...) {
		var it respInputItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return fmt.Errorf("previous response %s: item: %w", rq.previousID, err)
		}
		earlier = append(earlier, it)
	}
	if n := len(earlier) + len(rq.items); n > maxChatMessages {
		return invalidAs("array_above_max_length", "previous_response_id", "The conversation is too long: the previous responses' items and 'input' are %d items, more than %d.", n, maxChatMessages)
	}
	msgs, err := respMessages(j.messages[:rq.head:rq.head], append(earlier, rq.items...), -len(earlier))
	if err != nil {
		if e := nozzle.AsError(err); e != nil && strings.HasPrefix(e.Param, "input[-") {
			// A stored item the conversation cannot take: the store's fault.
			return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: fmt.Errorf("previous response %s: %w", rq.previousID, err)}
		}
		return err
	}
	j.messages = msgs
	return nil
}

// storedResponse is what the ledger keeps of a completed response whose
// answer is body (responseBody: one the ledger can keep, or one that says
// store false).
func (cp *completion) storedResponse(body []byte) *nozzle.StoredResponse {
	j := cp.j
	rq := j.resp
	if rq == nil || !rq.store || len(body) == 0 {
		return nil
	}
	return &nozzle.StoredResponse{ID: j.id, TenantID: cp.p.tenant.ID, PreviousID: rq.previousID,
		Created: time.Unix(j.created, 0).UTC(), Body: body, Input: rq.storedInput}
}

// prepareStore encodes the request's input items for storing, once the
// response's id is known, or gives up storing the response when they are
// larger than limit (storedPartLimit).
func (j *job) prepareStore(limit int) {
	rq := j.resp
	if rq == nil || !rq.store {
		return
	}
	if rq.storedInput = j.respInputItems(); len(rq.storedInput) > limit {
		rq.unstore()
	}
}

// respInputItems is the request's input items as stored: each with an id
// (its own, or one made from the response's).
func (j *job) respInputItems() []byte {
	j.assignItemIDs()
	b := []byte{'['}
	for k := range j.resp.stored {
		o := &j.resp.stored[k]
		if k > 0 {
			b = append(b, ',')
		}
		item, err := json.Marshal(o)
		if err != nil { // decoded from JSON: cannot fail
			item = []byte("{}")
		}
		b = append(b, item...)
	}
	return append(b, ']')
}

// assignItemIDs gives the request's input items their ids, once: an item
// keeps its own, unless the request names a conversation (whose items'
// ids the server gives, so that they are unique in it); one without gets
// one made from the response's id.
func (j *job) assignItemIDs() {
	rq := j.resp
	if rq.idsAssigned {
		return
	}
	rq.idsAssigned = true
	rid := strings.TrimPrefix(j.id, "resp_")
	for k := range rq.stored {
		if o := &rq.stored[k]; o.ID == "" || rq.conversation != "" {
			o.ID = itemPrefix(o.Type) + rid + "_in" + strconv.Itoa(k)
		}
	}
}

// ownResponse returns the tenant's stored response id.
func (s *Server) ownResponse(c *fiber.Ctx) (*nozzle.StoredResponse, error) {
	id := c.Params("id")
	if !s.storesResponses() || id == "" || len(id) > maxResponseIDLen {
		return nil, nozzle.ResponseNotFound(id)
	}
	p := principalFrom(c)
	r, err := s.deps.Responses.StoredResponse(c.UserContext(), p.tenant.ID, id)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND || err == nil && r.TenantID != p.tenant.ID {
		return nil, nozzle.ResponseNotFound(id)
	}
	return r, err
}

// getResponse answers GET /v1/responses/{id}: the Response object as it
// was answered; with stream=true, the events a stream of it sends
// (storedEvents), those up to sequence number starting_after left out.
// Nothing runs and nothing is charged. include and include_obfuscation
// change nothing: there is no more output to include, and the live stream
// obfuscates nothing either.
func (s *Server) getResponse(c *fiber.Ctx) error {
	stream := false
	switch v := c.Query("stream"); v {
	case "", "false":
	case "true":
		stream = true
	default:
		return invalidAs("invalid_type", "stream", "Invalid type for 'stream': expected a boolean, 'true' or 'false', but got %q instead.", v)
	}
	after := int64(-1)
	if q := c.Context().QueryArgs(); q.Has("starting_after") {
		v := string(q.Peek("starting_after"))
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case errors.Is(err, strconv.ErrRange) && n > 0:
			n = maxEvents // past every event
		case err != nil:
			return invalidAs("invalid_type", "starting_after", "Invalid type for 'starting_after': expected an integer, but got %q instead.", v)
		case n < 0:
			return outOfRange("starting_after", float64(n), true, 0)
		}
		after = min(n, maxEvents)
	}
	r, err := s.ownResponse(c)
	if err != nil {
		return err
	}
	if !stream {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(r.Body)
	}
	buf, err := storedEvents(make([]byte, 0, 2*len(r.Body)), r.Body, after)
	if err != nil {
		return &nozzle.Error{Code: nozzle.EINTERNAL, Message: "Internal error.", Err: err}
	}
	setEventStream(c)
	return c.Send(buf)
}

// itemsPage reads an item list's limit (1 to maxItemsLimit, default
// defaultItemsLimit) and order ("asc" or "desc", the default).
func itemsPage(c *fiber.Ctx) (limit int, desc bool, err error) {
	limit = defaultItemsLimit
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxItemsLimit {
			return 0, false, invalidAs("invalid_value", "limit", "Invalid 'limit': expected an integer from 1 to %d.", maxItemsLimit)
		}
		limit = n
	}
	switch c.Query("order", "desc") {
	case "desc":
		return limit, true, nil
	case "asc":
		return limit, false, nil
	}
	return 0, false, invalidAs("invalid_value", "order", "Invalid 'order': expected 'asc' or 'desc'.")
}

// maxEvents is more events than any stored response's stream has: a
// starting_after at or past it sends none.
const maxEvents = 1 << 40

// deleteResponse answers DELETE /v1/responses/{id}.
func (s *Server) deleteResponse(c *fiber.Ctx) error {
	r, err := s.ownResponse(c)
	if err != nil {
		return err
	}
	if err := s.deps.Responses.DeleteResponse(c.UserContext(), r.TenantID, r.ID); err != nil {
		if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
			return nozzle.ResponseNotFound(r.ID) // deleted meanwhile
		}
		return err
	}
	b := appendString([]byte(`{"id":`), r.ID)
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(append(b, `,"object":"response","deleted":true}`...))
}

// responseInputItems answers GET /v1/responses/{id}/input_items: a page of
// the items of the conversation the response answered (limit, 1 to 100,
// default 20; order asc or desc, default desc; after or before, an item
// id the page starts after or ends before).
func (s *Server) responseInputItems(c *fiber.Ctx) error {
	limit, desc, err := itemsPage(c)
	if err != nil {
		return err
	}
	id := c.Params("id")
	if _, err := s.ownResponse(c); err != nil {
		return err
	}
	p := principalFrom(c)
	_, items, _, err := s.deps.Responses.ResponseItems(c.UserContext(), p.tenant.ID, id)
	if nozzle.ErrorCode(err) == nozzle.ENOTFOUND {
		return nozzle.ResponseNotFound(id)
	} else if err != nil {
		return err
	}
	ids := make([]string, len(items))
	for i, it := range items {
		var x struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(it, &x)
		ids[i] = x.ID
	}
	if desc {
		for a, b := 0, len(items)-1; a < b; a, b = a+1, b-1 {
			items[a], items[b] = items[b], items[a]
			ids[a], ids[b] = ids[b], ids[a]
		}
	}
	find := func(param, id string) (int, error) {
		for i, x := range ids {
			if x == id {
				return i, nil
			}
		}
		return 0, invalidAs("invalid_value", param, "Invalid '%s': no input item of response '%s' has id '%s'.", param, c.Params("id"), id)
	}
	start, end := 0, len(items)
	after, before := c.Query("after"), c.Query("before")
	switch {
	case after != "" && before != "":
		return invalidAs("invalid_parameter_combination", "before", "Give 'after' or 'before', not both.")
	case after != "":
		i, err := find("after", after)
		if err != nil {
			return err
		}
		start, end = i+1, min(i+1+limit, len(items))
	case before != "":
		// the page just before it
		i, err := find("before", before)
		if err != nil {
			return err
		}
		start, end = max(0, i-limit), i
	default:
		end = min(limit, len(items))
	}
	more := end < len(items)
	if before != "" {
		more = start > 0
	}
	page := items[start:end]
	b := append([]byte(nil), `{"object":"list","data":[`...)
	for i, it := range page {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	b = append(b, `],"first_id":`...)
	if len(page) > 0 {
		b = appendString(b, ids[start])
		b = append(b, `,"last_id":`...)
		b = appendString(b, ids[end-1])
	} else {
		b = append(b, `null,"last_id":null`...)
	}
	b = append(b, `,"has_more":`...)
	b = appendBool(b, more)
	b = append(b, '}')
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(b)
}
