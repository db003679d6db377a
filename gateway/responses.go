package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strings"

	"github.com/nozzle-ai/nozzle"
)

// POST /v1/responses: OpenAI's Responses API, a subset. A request is
// translated into the job a chat completion builds (its input items into
// chat messages, instructions into a system message first, its flat
// function tools into chat tools, text.format into response_format) and
// runs through the same machinery (Server.complete): auth, scopes, limits,
// the budget, metering, idempotency and request ids apply as they do to a
// chat completion. Only the answer's shape differs: a Response object
// (appendResponse), or its stream of named events (respStream).
//
// Stored responses (responses_store.go): a completed response is kept for
// its tenant unless store is false — recorded with its usage event, in
// the same durable write (nozzle.UsageEvent.StoredResponse) — and can be
// retrieved, listed (its input items), deleted and continued with
// previous_response_id. conversation names a conversation of the
// Conversations API (conversations.go) whose items come before the input,
// and which the completed response's items are appended to. background,
// include, prompt and built-in tools are refused.

// respRequest is what a Responses request asks for that its answer echoes.
type respRequest struct {
	instructions    *string
	maxOutputTokens *int
	tools           json.RawMessage // as given (flat function tools), compact; nil: []
	toolChoice      json.RawMessage // as given, compact; nil: "auto"
	text            json.RawMessage // as given, compact; nil: {"format":{"type":"text"}}
	parallel        bool
	metadata        json.RawMessage // nil: {}
	user            *string
	store           bool // asked for; cleared where the response will not be kept (unstore)

	previousID   string                    // previous_response_id
	conversation string                    // the conversation's id, or empty
	idsAssigned  bool                      // the input items have their ids (assignItemIDs)
	convInput    []nozzle.ConversationItem // the input items to append to the conversation (prepareConversation)
	head         int                       // the messages before the input's (instructions)
	items        []respInputItem           // the input's items, decoded
	stored       []respStoredItem          // the input's items as stored (ids added when stored)
	storedInput  []byte                    // stored, encoded (prepareStore)
}

// respStoredItem is an input item as it is stored and listed: what the
// conversation reads of it (decoded as respInputItem decodes it, so that
// it reads back the same), its id and status.
type respStoredItem struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Status    *string         `json:"status,omitempty"`
	Role      *string         `json:"role,omitempty"`
	Content   json.RawMessage `json:"content,omitempty"`
	CallID    *string         `json:"call_id,omitempty"`
	Name      *string         `json:"name,omitempty"`
	Arguments *string         `json:"arguments,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
}

type responsesBody struct {
	Model             *string         `json:"model"`
	Input             json.RawMessage `json:"input"`
	Instructions      json.RawMessage `json:"instructions"`
	MaxOutputTokens   *int            `json:"max_output_tokens"`
	Temperature       *float64        `json:"temperature"`
	TopP              *float64        `json:"top_p"`
	Stream            *bool           `json:"stream"`
	StreamOptions     json.RawMessage `json:"stream_options"` // include_obfuscation: nothing to obfuscate
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	Text              json.RawMessage `json:"text"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	Metadata          json.RawMessage `json:"metadata"`
	User              *string         `json:"user"`
	Store             *bool           `json:"store"`
	Reasoning         json.RawMessage `json:"reasoning"`
	Truncation        json.RawMessage `json:"truncation"`
	// refused unless null (or false, or empty)
	PreviousResponseID json.RawMessage `json:"previous_response_id"`
	Conversation       json.RawMessage `json:"conversation"`
	Background         *bool           `json:"background"`
	Include            json.RawMessage `json:"include"`
	Prompt             json.RawMessage `json:"prompt"`
	ContextManagement  json.RawMessage `json:"context_management"`
	// hints that do not change the output: accepted, unused
	ServiceTier          json.RawMessage `json:"service_tier"`
	PromptCacheKey       json.RawMessage `json:"prompt_cache_key"`
	PromptCacheRetention json.RawMessage `json:"prompt_cache_retention"`
	SafetyIdentifier     json.RawMessage `json:"safety_identifier"`
}

// respInputItem is one item of a request's input, decoded leniently (the
// items of an earlier response's output, handed back, carry ids, statuses
// and annotations).
type respInputItem struct {
	Type      *string         `json:"type"`
	Role      *string         `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    *string         `json:"call_id"`
	Name      *string         `json:"name"`
	Arguments *string         `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

func (m *respInputItem) UnmarshalJSON(b []byte) error {
	type plain respInputItem
	return json.Unmarshal(b, (*plain)(m))
}

// respContentPart is a part of an input message's content.
type respContentPart struct {
	Type    *string `json:"type"`
	Text    *string `json:"text"`
	Refusal *string `json:"refusal"`
}

// parseResponses parses a /v1/responses body into a chat job.
func parseResponses(body []byte, _ int) (*job, error) {
	var b responsesBody
	if err := decodeStrict(body, &b); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		param string
		raw   json.RawMessage
		why   string
	}{
		{"prompt", b.Prompt, "this server stores no prompt templates."},
		{"context_management", b.ContextManagement, "this server does not compact conversations."},
	} {
		if !isNull(r.raw) {
			return nil, invalidAs("unsupported_parameter", r.param, "'%s' is not supported: %s", r.param, r.why)
		}
	}
	if b.Background != nil && *b.Background {
		return nil, invalidAs("unsupported_value", "background", "'background' responses are not supported by this server: a response is stored once it is complete, never polled while it runs.")
	}
	if !isNull(b.Include) && string(bytes.TrimSpace(b.Include)) != "[]" {
		return nil, invalidAs("unsupported_parameter", "include", "'include' is not supported by this server: it has no additional output data to include.")
	}
	if !isNull(b.Reasoning) {
		var r map[string]json.RawMessage
		if json.Unmarshal(b.Reasoning, &r) != nil {
			return nil, invalidAs("invalid_type", "reasoning", "Invalid type for 'reasoning': expected an object.")
		}
		for k, v := range r {
			if !isNull(v) {
				return nil, invalidAs("unsupported_parameter", "reasoning."+k, "'reasoning.%s' is not supported with this model; where a reasoning model's chat template offers it, the chat completions endpoint's 'chat_template_kwargs' switches its thinking.", k)
			}
		}
	}
	if !isNull(b.Truncation) {
		var t string
		if json.Unmarshal(b.Truncation, &t) != nil || t != "disabled" {
			return nil, invalidAs("unsupported_value", "truncation", "Invalid 'truncation': only \"disabled\" is supported; an input longer than the model's context is refused.")
		}
	}

	j := &job{kind: kindChat}
	rq := &respRequest{parallel: true, maxOutputTokens: b.MaxOutputTokens, user: b.User, store: b.Store == nil || *b.Store}
	j.resp = rq
	common := commonBody{Model: b.Model, Temperature: b.Temperature, TopP: b.TopP, Stream: b.Stream, User: b.User}
	if err := j.applyCommon(&common, b.MaxOutputTokens, 1, "max_output_tokens"); err != nil {
		return nil, err
	}
	if b.ParallelToolCalls != nil {
		rq.parallel = *b.ParallelToolCalls
		j.oneCall = !rq.parallel
	}
	if !isNull(b.PreviousResponseID) {
		var id string
		if json.Unmarshal(b.PreviousResponseID, &id) != nil {
			return nil, invalidAs("invalid_type", "previous_response_id", "Invalid type for 'previous_response_id': expected a string.")
		}
		if id == "" || len(id) > maxResponseIDLen {
			return nil, invalidAs("invalid_value", "previous_response_id", "Invalid 'previous_response_id': expected the id of a stored response ('resp_…').")
		}
		rq.previousID = id
	}
	if !isNull(b.Conversation) {
		if rq.previousID != "" {
			return nil, invalidAs("invalid_parameter_combination", "conversation", "Mutually exclusive parameters: give either 'previous_response_id' or 'conversation', not both.")
		}
		id, err := parseConversationParam(b.Conversation)
		if err != nil {
			return nil, err
		}
		rq.conversation = id
	}
	if !isNull(b.Metadata) {
		if bytes.TrimSpace(b.Metadata)[0] != '{' {
			return nil, invalidAs("invalid_type", "metadata", "Invalid type for 'metadata': expected an object.")
		}
		rq.metadata = compactJSON(b.Metadata)
	}

	// text.format → response_format
	if !isNull(b.Text) {
		var t struct {
			Format    json.RawMessage `json:"format"`
			Verbosity json.RawMessage `json:"verbosity"`
		}
		if bytes.TrimSpace(b.Text)[0] != '{' || json.Unmarshal(b.Text, &t) != nil {
			return nil, invalidAs("invalid_type", "text", "Invalid type for 'text': expected an object.")
		}
		if !isNull(t.Verbosity) {
			return nil, invalidAs("unsupported_parameter", "text.verbosity", "'text.verbosity' is not supported with this model.")
		}
		if !isNull(t.Format) {
			var f map[string]json.RawMessage
			if json.Unmarshal(t.Format, &f) != nil {
				return nil, invalidAs("invalid_value", "text.format", "Invalid 'text.format': expected an object with a 'type'.")
			}
			// The chat form: json_schema's members nested under "json_schema".
			chat := map[string]json.RawMessage{"type": f["type"]}
			nested := map[string]json.RawMessage{}
			for k, v := range f {
				if k != "type" {
					nested[k] = v
				}
			}
			if string(f["type"]) == `"json_schema"` {
				chat["json_schema"], _ = json.Marshal(nested)
			}
			raw, _ := json.Marshal(chat)
			format, schema, err := chatFormat(raw)
			if err != nil {
				return nil, renameParam(err, map[string]string{"response_format.json_schema": "text.format", "response_format": "text.format"})
			}
			j.format, j.schema = format, schema
			if format == nozzle.ResponseFormatJSONSchema {
				j.formatParam = "text.format.schema"
			} else if format != "" {
				j.formatParam = "text.format"
			}
		}
		rq.text = compactJSON(b.Text)
	}

	// tools and tool_choice, in the chat form
	chatTools, err := respTools(b.Tools)
	if err != nil {
		return nil, err
	}
	chatChoice, err := respToolChoice(b.ToolChoice)
	if err != nil {
		return nil, err
	}
	if j.tools, j.toolChoice, err = parseTools(chatTools, chatChoice); err != nil {
		return nil, renameToolParams(err)
	}
	if j.toolChoice != "" && j.format != "" {
		return nil, invalidAs("invalid_parameter_combination", "tool_choice", "A forced tool call ('tool_choice' %s) cannot also follow 'text.format'.", compactJSON(b.ToolChoice))
	}
	if !isNull(b.Tools) {
		rq.tools = compactJSON(b.Tools)
	}
	if !isNull(b.ToolChoice) {
		rq.toolChoice = compactJSON(b.ToolChoice)
	}

	// instructions and input → messages
	if !isNull(b.Instructions) {
		var s string
		if json.Unmarshal(b.Instructions, &s) != nil {
			return nil, invalidAs("invalid_type", "instructions", "Invalid type for 'instructions': expected a string.")
		}
		rq.instructions = &s
		j.messages = append(j.messages, nozzle.ChatMessage{Role: "system", Content: s})
	}
	rq.head = len(j.messages)
	if err := j.respInput(b.Input); err != nil {
		return nil, err
	}
	return j, nil
}

// respInput reads the request's input (a string, or an array of items)
// into j's messages, and keeps its items for storing.
func (j *job) respInput(raw json.RawMessage) error {
	rq := j.resp
	if isNull(raw) {
		return invalidAs("missing_required_parameter", "input", "Missing required parameter: 'input'.")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		j.messages = append(j.messages, nozzle.ChatMessage{Role: "user", Content: s})
		text, _ := json.Marshal(s)
		role, typ, status := "user", "message", "completed"
		rq.items = []respInputItem{{Type: &typ, Role: &role, Content: text}}
		rq.stored = []respStoredItem{{Type: typ, Status: &status, Role: &role, Content: textParts("input_text", text)}}
		return nil
	}
	n, _, _, ok := scanArray(raw)
	if !ok {
		return invalidAs("invalid_type", "input", "Invalid type for 'input': expected a string or an array of input items.")
	}
	if n == 0 {
		return invalidAs("empty_array", "input", "Invalid 'input': empty array. Expected an array with minimum length 1.")
	}
	if n > maxChatMessages {
		return arrayTooLong("input", maxChatMessages, n)
	}
	var items []respInputItem
	var stored []respStoredItem
	if json.Unmarshal(raw, &items) != nil || json.Unmarshal(raw, &stored) != nil || len(stored) != len(items) {
		return invalidAs("invalid_type", "input", "Invalid type for 'input': expected a string or an array of input items.")
	}
	msgs, err := respMessages(j.messages, items, 0)
	if err != nil {
		return err
	}
	j.messages = msgs
	rq.items = items
	rq.stored = stored
	listForm(items, stored)
	return nil
}

// listForm puts items decoded as stored in the form OpenAI lists them: a
// type, a message's content as parts, a status.
func listForm(items []respInputItem, stored []respStoredItem) {
	for k := range stored {
		// As OpenAI lists them: a type, a message's content as parts.
		o := &stored[k]
		if items[k].Type == nil {
			o.Type = "message"
		}
		if o.Type != "message" {
			continue
		}
		if c := bytes.TrimSpace(o.Content); len(c) > 0 && c[0] == '"' {
			part := "input_text"
			if o.Role != nil && *o.Role == "assistant" {
				part = "output_text"
			}
			o.Content = textParts(part, c)
		}
		if o.Status == nil {
			completed := "completed"
			o.Status = &completed
		}
	}
}

// textParts is content of one text part of type typ, text a JSON string.
func textParts(typ string, text json.RawMessage) json.RawMessage {
	b := append([]byte(`[{"type":"`), typ...)
	b = append(b, `","text":`...)
	b = append(b, text...)
	if typ == "output_text" {
		b = append(b, `,"annotations":[]`...)
	}
	return append(b, "}]"...)
}

// respMessages appends the chat messages of items to msgs; the k-th item is
// named input[from+k] in a refusal.
func respMessages(msgs []nozzle.ChatMessage, items []respInputItem, from int) ([]nozzle.ChatMessage, error) {
	j := &job{messages: msgs}
	// A reasoning item's thoughts go with the assistant turn after it, as
	// a chat message's reasoning_content (the template renders them where
	// it renders thoughts).
	thought := ""
	for i, it := range items {
		at := fmt.Sprintf("input[%d]", from+i)
		typ := "message"
		if it.Type != nil {
			typ = *it.Type
		}
		switch typ {
		case "reasoning":
			var parts []respContentPart
			if !isNull(it.Content) && json.Unmarshal(it.Content, &parts) != nil {
				return nil, invalidAs("invalid_type", at+".content", "Invalid type for '%s.content': expected an array of reasoning_text parts.", at)
			}
			for _, p := range parts {
				if p.Text != nil {
					thought += *p.Text
				}
			}
			continue
		case "message":
			if it.Role == nil {
				return nil, invalidAs("missing_required_parameter", at+".role", "Missing required parameter: '%s.role'.", at)
			}
			role := *it.Role
			switch role {
			case "user", "system", "assistant":
			case "developer":
				role = "system"
			default:
				return nil, invalidAs("invalid_value", at+".role", "Invalid value for '%s.role': %q is not supported; use 'user', 'system', 'developer' or 'assistant'.", at, role)
			}
			if isNull(it.Content) {
				return nil, invalidAs("missing_required_parameter", at+".content", "Missing required parameter: '%s.content'.", at)
			}
			text, err := respContent(it.Content, at+".content", role == "assistant")
			if err != nil {
				return nil, err
			}
			j.messages = append(j.messages, nozzle.ChatMessage{Role: role, Content: text})
			if role == "assistant" {
				j.messages[len(j.messages)-1].ReasoningContent = thought
			}
		case "function_call":
			switch {
			case it.CallID == nil:
				return nil, invalidAs("missing_required_parameter", at+".call_id", "Missing required parameter: '%s.call_id'.", at)
			case it.Name == nil:
				return nil, invalidAs("missing_required_parameter", at+".name", "Missing required parameter: '%s.name'.", at)
			case it.Arguments == nil:
				return nil, invalidAs("missing_required_parameter", at+".arguments", "Missing required parameter: '%s.arguments'.", at)
			}
			call := nozzle.ToolCall{ID: *it.CallID, Type: "function", Function: nozzle.FunctionCall{Name: *it.Name, Arguments: *it.Arguments}}
			// Calls of one turn (and the text before them) are one
			// assistant message, as a chat answer gives them.
			if k := len(j.messages) - 1; k >= 0 && j.messages[k].Role == "assistant" {
				if len(j.messages[k].ToolCalls) >= maxToolCalls {
					return nil, arrayTooLong(at, maxToolCalls, len(j.messages[k].ToolCalls)+1)
				}
				j.messages[k].ToolCalls = append(j.messages[k].ToolCalls, call)
			} else {
				j.messages = append(j.messages, nozzle.ChatMessage{Role: "assistant", ToolCalls: []nozzle.ToolCall{call}, ReasoningContent: thought})
			}
		case "function_call_output":
			if it.CallID == nil {
				return nil, invalidAs("missing_required_parameter", at+".call_id", "Missing required parameter: '%s.call_id'.", at)
			}
			if isNull(it.Output) {
				return nil, invalidAs("missing_required_parameter", at+".output", "Missing required parameter: '%s.output'.", at)
			}
			out, err := respContent(it.Output, at+".output", false)
			if err != nil {
				return nil, err
			}
			j.messages = append(j.messages, nozzle.ChatMessage{Role: "tool", Content: out, ToolCallID: *it.CallID})
		default:
			return nil, invalidAs("unsupported_value", at+".type", "Invalid value for '%s.type': %q items are not supported by this server; use 'message', 'function_call', 'function_call_output' or 'reasoning'.", at, typ)
		}
		thought = "" // only for the item right after it
	}
	return j.messages, nil
}

// respContent reads a message's content (or a call's output): a string or
// an array of text parts (input_text; an assistant's output_text and
// refusal, as an earlier response gave them).
func respContent(raw json.RawMessage, param string, assistant bool) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []respContentPart
	if json.Unmarshal(raw, &parts) != nil {
		return "", invalidAs("invalid_type", param, "Invalid type for '%s': expected a string or an array of content parts.", param)
	}
	var sb strings.Builder
	for k, p := range parts {
		t := ""
		if p.Type != nil {
			t = *p.Type
		}
		switch {
		case t == "input_text" || t == "output_text" && assistant:
			if p.Text == nil {
				return "", invalidAs("missing_required_parameter", fmt.Sprintf("%s[%d].text", param, k), "Missing required parameter: '%s[%d].text'.", param, k)
			}
			sb.WriteString(*p.Text)
		case t == "refusal" && assistant && p.Refusal != nil:
			sb.WriteString(*p.Refusal)
		default:
			return "", invalidAs("unsupported_value", fmt.Sprintf("%s[%d].type", param, k), "Invalid content part type %q: only text parts ('input_text'; an assistant's 'output_text') are supported by this server.", t)
		}
	}
	return sb.String(), nil
}

// respTools turns the Responses API's flat function tools ({"type":
// "function", "name", "description", "parameters", "strict"}) into chat
// tools; built-in tools are refused.
func respTools(raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	if n, _, _, ok := scanArray(raw); ok && n > maxToolCalls {
		return nil, arrayTooLong("tools", maxToolCalls, n)
	}
	var tools []map[string]json.RawMessage
	if json.Unmarshal(raw, &tools) != nil {
		return nil, invalidAs("invalid_type", "tools", "Invalid type for 'tools': expected an array of objects.")
	}
	out := make([]map[string]any, len(tools))
	for i, t := range tools {
		var typ string
		if json.Unmarshal(t["type"], &typ) != nil || typ != "function" {
			return nil, invalidAs("unsupported_value", fmt.Sprintf("tools[%d].type", i), "Invalid value for 'tools[%d].type': %s tools are not supported by this server; only \"function\" tools are (built-in tools such as web_search, file_search and computer_use are not).", i, compactJSON(t["type"]))
		}
		fn := map[string]json.RawMessage{}
		for k, v := range t {
			switch k {
			case "type":
			case "name", "description", "parameters", "strict":
				fn[k] = v
			default:
				return nil, invalidAs("unknown_parameter", fmt.Sprintf("tools[%d].%s", i, k), "Unknown parameter: 'tools[%d].%s'.", i, k)
			}
		}
		out[i] = map[string]any{"type": "function", "function": fn}
	}
	return json.Marshal(out)
}

// respToolChoice turns a Responses tool_choice into the chat form: the
// modes as they are, {"type": "function", "name"} as {"type": "function",
// "function": {"name"}}.
func respToolChoice(raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) || bytes.TrimSpace(raw)[0] == '"' {
		return raw, nil
	}
	var c struct {
		Type *string         `json:"type"`
		Name json.RawMessage `json:"name"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Type == nil {
		return nil, invalidAs("invalid_value", "tool_choice", "Invalid 'tool_choice': expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": …}.")
	}
	if *c.Type != "function" {
		return nil, invalidAs("unsupported_value", "tool_choice.type", "Invalid value for 'tool_choice.type': %q is not supported by this server; only \"function\" is.", *c.Type)
	}
	if isNull(c.Name) {
		return nil, invalidAs("missing_required_parameter", "tool_choice.name", "Missing required parameter: 'tool_choice.name'.")
	}
	return json.Marshal(map[string]any{"type": "function", "function": map[string]json.RawMessage{"name": c.Name}})
}

// renameParam names, in a refusal of the chat form of a parameter, the
// Responses API's own: the first prefix of from that the error's param
// has becomes its value.
func renameParam(err error, from map[string]string) error {
	e := nozzle.AsError(err)
	if e == nil {
		return err
	}
	c := *e
	best := ""
	for k := range from {
		if (c.Param == k || strings.HasPrefix(c.Param, k+".") || strings.HasPrefix(c.Param, k+"[")) && len(k) > len(best) {
			best = k
		}
	}
	if best == "" {
		return err
	}
	to := from[best]
	c.Param = to + strings.TrimPrefix(c.Param, best)
	c.Message = strings.ReplaceAll(c.Message, "'"+best, "'"+to)
	return &c
}

// renameToolParams renames "tools[i].function.x" as "tools[i].x" and
// "tool_choice.function.name" as "tool_choice.name" in a refusal.
func renameToolParams(err error) error {
	e := nozzle.AsError(err)
	if e == nil {
		return err
	}
	c := *e
	c.Param = strings.Replace(c.Param, ".function.", ".", 1)
	c.Message = strings.ReplaceAll(c.Message, ".function.", ".")
	c.Message = strings.ReplaceAll(c.Message, `{"type": "function", "function": {"name": …}}`, `{"type": "function", "name": …}`)
	return &c
}

func compactJSON(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// respOutput is what a response's output holds: a reasoning model's
// thoughts, the answer's text and its calls.
type respOutput struct {
	thought, text string
	calls         []nozzle.ToolCall
	incomplete    bool // stopped by the length limit
}

// respIDs are the ids of a response's output items.
func (j *job) respItemID(prefix string, k int) string {
	id := prefix + strings.TrimPrefix(j.id, "resp_")
	if k >= 0 {
		id += "_" + fmt.Sprint(k)
	}
	return id
}

// appendResponse appends the Response object: status "in_progress" (its
// output and usage not yet known: o and u are nil), "completed" or
// "incomplete".
func (j *job) appendResponse(dst []byte, o *respOutput, u *usage) []byte {
	rq := j.resp
	status := "in_progress"
	if o != nil {
		status = "completed"
		if o.incomplete {
			status = "incomplete"
		}
	}
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, j.id)
	dst = append(dst, `,"object":"response","created_at":`...)
	dst = appendInt(dst, j.created)
	dst = append(dst, `,"status":"`...)
	dst = append(dst, status...)
	dst = append(dst, `","background":false,"error":null,"incomplete_details":`...)
	if o != nil && o.incomplete {
		dst = append(dst, `{"reason":"max_output_tokens"}`...)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"instructions":`...)
	if rq.instructions != nil {
		dst = appendString(dst, *rq.instructions)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"max_output_tokens":`...)
	if rq.maxOutputTokens != nil {
		dst = appendInt(dst, int64(*rq.maxOutputTokens))
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, j.shownModel)
	dst = append(dst, `,"output":[`...)
	if o != nil {
		dst = j.appendOutputItems(dst, o)
	}
	dst = append(dst, `],"parallel_tool_calls":`...)
	dst = appendBool(dst, rq.parallel)
	dst = append(dst, `,"previous_response_id":`...)
	dst = appendNullableString(dst, rq.previousID)
	if rq.conversation != "" {
		dst = append(dst, `,"conversation":{"id":`...)
		dst = appendString(dst, rq.conversation)
		dst = append(dst, '}')
	}
	dst = append(dst, `,"reasoning":{"effort":null,"summary":null},"store":`...)
	dst = appendBool(dst, rq.store)
	dst = append(dst, `,"temperature":`...)
	dst = appendFloat(dst, j.temperature)
	dst = append(dst, `,"text":`...)
	dst = appendRaw(dst, rq.text, `{"format":{"type":"text"}}`)
	dst = append(dst, `,"tool_choice":`...)
	dst = appendRaw(dst, rq.toolChoice, `"auto"`)
	dst = append(dst, `,"tools":`...)
	dst = appendRaw(dst, rq.tools, `[]`)
	dst = append(dst, `,"top_p":`...)
	topP := j.topP
	if topP == math.SmallestNonzeroFloat64 {
		topP = 0
	}
	dst = appendFloat(dst, topP)
	dst = append(dst, `,"truncation":"disabled","usage":`...)
	if u != nil {
		dst = append(dst, `{"input_tokens":`...)
		dst = appendInt(dst, u.prompt)
		dst = append(dst, `,"input_tokens_details":{"cached_tokens":`...)
		dst = appendInt(dst, u.cached)
		dst = append(dst, `},"output_tokens":`...)
		dst = appendInt(dst, u.completion)
		dst = append(dst, `,"output_tokens_details":{"reasoning_tokens":`...)
		dst = appendInt(dst, u.reasoning)
		dst = append(dst, `},"total_tokens":`...)
		dst = appendInt(dst, u.prompt+u.completion)
		dst = append(dst, '}')
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"user":`...)
	if rq.user != nil {
		dst = appendString(dst, *rq.user)
	} else {
		dst = append(dst, "null"...)
	}
	dst = append(dst, `,"metadata":`...)
	dst = appendRaw(dst, rq.metadata, `{}`)
	return append(dst, '}')
}

// appendOutputItems appends the output items, comma-separated: the
// reasoning (when the model thought), the message (when it said something
// or called nothing) and the function calls.
func (j *job) appendOutputItems(dst []byte, o *respOutput) []byte {
	n := 0
	sep := func() {
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
	}
	if o.thought != "" {
		sep()
		dst = j.appendReasoningItem(dst, o.thought)
	}
	if o.text != "" || len(o.calls) == 0 {
		sep()
		dst = j.appendMessageItem(dst, o.text, itemStatus(o.incomplete), true)
	}
	for k, c := range o.calls {
		sep()
		dst = j.appendCallItem(dst, k, c, "completed", true)
	}
	return dst
}

func itemStatus(incomplete bool) string {
	if incomplete {
		return "incomplete"
	}
	return "completed"
}

func (j *job) appendReasoningItem(dst []byte, thought string) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, j.respItemID("rs_", -1))
	dst = append(dst, `,"type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":`...)
	dst = appendString(dst, thought)
	return append(dst, `}]}`...)
}

// appendMessageItem appends the answer's message item; without its
// content (full false) as it is added to a stream.
func (j *job) appendMessageItem(dst []byte, text, status string, full bool) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, j.respItemID("msg_", -1))
	dst = append(dst, `,"type":"message","status":"`...)
	dst = append(dst, status...)
	dst = append(dst, `","role":"assistant","content":[`...)
	if full {
		dst = appendTextPart(dst, text)
	}
	return append(dst, "]}"...)
}

func appendTextPart(dst []byte, text string) []byte {
	dst = append(dst, `{"type":"output_text","text":`...)
	dst = appendString(dst, text)
	return append(dst, `,"annotations":[],"logprobs":[]}`...)
}

// appendCallItem appends the k-th function call item; without its
// arguments (full false) as it is added to a stream.
func (j *job) appendCallItem(dst []byte, k int, c nozzle.ToolCall, status string, full bool) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, j.respItemID("fc_", k))
	dst = append(dst, `,"type":"function_call","status":"`...)
	dst = append(dst, status...)
	dst = append(dst, `","call_id":`...)
	dst = appendString(dst, c.ID)
	dst = append(dst, `,"name":`...)
	dst = appendString(dst, c.Function.Name)
	dst = append(dst, `,"arguments":`...)
	if full {
		dst = appendString(dst, c.Function.Arguments)
	} else {
		dst = append(dst, `""`...)
	}
	return append(dst, '}')
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

func appendRaw(dst []byte, raw json.RawMessage, dflt string) []byte {
	if len(raw) == 0 {
		return append(dst, dflt...)
	}
	return append(dst, raw...)
}

// responseBody is the non-streamed answer to a Responses request: its one
// choice as a Response.
func (cp *completion) responseBody(dst []byte) []byte {
	j, r := cp.j, &cp.results[0]
	o := &respOutput{text: string(r.text)}
	if j.reasoning {
		o.thought, o.text = nozzle.SplitThoughts(o.text, r.open, j.thinkTags)
	}
	if j.toolFormat != "" {
		o.text, o.calls = j.splitCalls(o.text, 0)
	}
	o.incomplete = finishReason(r.res) == nozzle.FinishLength
	u := cp.usage()
	start := len(dst)
	dst = j.appendResponse(dst, o, &u)
	if rq := j.resp; rq.store && len(dst)-start > cp.s.storedPartLimit() {
		// More than the ledger keeps: answered, not kept, and the answer
		// says so.
		cp.s.log.LogAttrs(context.Background(), slog.LevelWarn, "response too large to store",
			slog.String("request_id", cp.st.id), slog.Int("bytes", len(dst)-start))
		rq.unstore()
		dst = j.appendResponse(dst[:start], o, &u)
	}
	return dst
}

// respStream writes a Responses stream's events: each an SSE event named
// by its type, its data carrying the type and a sequence number. The
// answer's text is streamed as it comes; a reasoning model's thoughts and
// the function calls, which the chat path reads whole, are sent whole.
// The same events replay a stored Response (storedEvents).
type respStream struct {
	j       *job
	seq     int64
	skip    int64 // events numbered below it are counted, not written (a replay's starting_after+1)
	out     int64 // the next output item's index
	thought strings.Builder
	thinks  bool // the reasoning item was sent
	msg     int64
	msgOpen bool
	text    strings.Builder
}

func (rs *respStream) event(dst []byte, typ string, fields func([]byte) []byte) []byte {
	if rs.seq < rs.skip {
		rs.seq++
		return dst
	}
	dst = append(dst, "event: "...)
	dst = append(dst, typ...)
	dst = append(dst, "\ndata: {\"type\":\""...)
	dst = append(dst, typ...)
	dst = append(dst, `","sequence_number":`...)
	dst = appendInt(dst, rs.seq)
	rs.seq++
	dst = fields(dst)
	return append(dst, "}\n\n"...)
}

// start appends response.created and response.in_progress.
func (rs *respStream) start(dst []byte) []byte {
	for _, typ := range []string{"response.created", "response.in_progress"} {
		dst = rs.event(dst, typ, func(d []byte) []byte {
			d = append(d, `,"response":`...)
			return rs.j.appendResponse(d, nil, nil)
		})
	}
	return dst
}

// add appends the events of a piece of thoughts and text.
func (rs *respStream) add(dst []byte, thought, text string) []byte {
	rs.thought.WriteString(thought)
	if text == "" {
		return dst
	}
	dst = rs.endThoughts(dst)
	dst = rs.openMessage(dst)
	rs.text.WriteString(text)
	return rs.event(dst, "response.output_text.delta", func(d []byte) []byte {
		d = rs.itemRef(d, rs.msg, "msg_", -1)
		d = append(d, `,"content_index":0,"delta":`...)
		d = appendString(d, text)
		return append(d, `,"logprobs":[]`...)
	})
}

func (rs *respStream) itemRef(d []byte, index int64, prefix string, k int) []byte {
	d = append(d, `,"item_id":`...)
	d = appendString(d, rs.j.respItemID(prefix, k))
	d = append(d, `,"output_index":`...)
	return appendInt(d, index)
}

// item appends an output_item event (added or done).
func (rs *respStream) item(dst []byte, typ string, index int64, item func([]byte) []byte) []byte {
	return rs.event(dst, typ, func(d []byte) []byte {
		d = append(d, `,"output_index":`...)
		d = appendInt(d, index)
		d = append(d, `,"item":`...)
		return item(d)
	})
}

// endThoughts sends the reasoning item, once, when there were thoughts.
func (rs *respStream) endThoughts(dst []byte) []byte {
	if rs.thinks || rs.thought.Len() == 0 {
		return dst
	}
	rs.thinks = true
	idx := rs.out
	rs.out++
	thought := rs.thought.String()
	dst = rs.item(dst, "response.output_item.added", idx, func(d []byte) []byte {
		d = append(d, `{"id":`...)
		d = appendString(d, rs.j.respItemID("rs_", -1))
		return append(d, `,"type":"reasoning","summary":[],"content":[]}`...)
	})
	return rs.item(dst, "response.output_item.done", idx, func(d []byte) []byte { return rs.j.appendReasoningItem(d, thought) })
}

func (rs *respStream) openMessage(dst []byte) []byte {
	if rs.msgOpen {
		return dst
	}
	rs.msgOpen = true
	rs.msg = rs.out
	rs.out++
	dst = rs.item(dst, "response.output_item.added", rs.msg, func(d []byte) []byte {
		return rs.j.appendMessageItem(d, "", "in_progress", false)
	})
	return rs.event(dst, "response.content_part.added", func(d []byte) []byte {
		d = rs.itemRef(d, rs.msg, "msg_", -1)
		d = append(d, `,"content_index":0,"part":`...)
		return appendTextPart(d, "")
	})
}

// finish appends the last events: the message's end, the calls, then
// response.completed (or response.incomplete) with the whole Response.
func (rs *respStream) finish(dst []byte, calls []nozzle.ToolCall, incomplete bool, u usage) []byte {
	j := rs.j
	dst = rs.endThoughts(dst)
	if !rs.msgOpen && len(calls) == 0 {
		dst = rs.openMessage(dst)
	}
	text := rs.text.String()
	if rs.msgOpen {
		dst = rs.event(dst, "response.output_text.done", func(d []byte) []byte {
			d = rs.itemRef(d, rs.msg, "msg_", -1)
			d = append(d, `,"content_index":0,"text":`...)
			d = appendString(d, text)
			return append(d, `,"logprobs":[]`...)
		})
		dst = rs.event(dst, "response.content_part.done", func(d []byte) []byte {
			d = rs.itemRef(d, rs.msg, "msg_", -1)
			d = append(d, `,"content_index":0,"part":`...)
			return appendTextPart(d, text)
		})
		dst = rs.item(dst, "response.output_item.done", rs.msg, func(d []byte) []byte {
			return j.appendMessageItem(d, text, itemStatus(incomplete), true)
		})
	}
	for k, c := range calls {
		idx := rs.out
		rs.out++
		dst = rs.item(dst, "response.output_item.added", idx, func(d []byte) []byte { return j.appendCallItem(d, k, c, "in_progress", false) })
		dst = rs.event(dst, "response.function_call_arguments.delta", func(d []byte) []byte {
			d = rs.itemRef(d, idx, "fc_", k)
			d = append(d, `,"delta":`...)
			return appendString(d, c.Function.Arguments)
		})
		dst = rs.event(dst, "response.function_call_arguments.done", func(d []byte) []byte {
			d = rs.itemRef(d, idx, "fc_", k)
			d = append(d, `,"name":`...)
			d = appendString(d, c.Function.Name)
			d = append(d, `,"arguments":`...)
			return appendString(d, c.Function.Arguments)
		})
		dst = rs.item(dst, "response.output_item.done", idx, func(d []byte) []byte { return j.appendCallItem(d, k, c, "completed", true) })
	}
	typ := "response.completed"
	if incomplete {
		typ = "response.incomplete"
	}
	o := &respOutput{thought: rs.thought.String(), text: text, calls: calls, incomplete: incomplete}
	return rs.event(dst, typ, func(d []byte) []byte {
		d = append(d, `,"response":`...)
		return j.appendResponse(d, o, &u)
	})
}

// fail appends the error event that ends a stream which failed.
func (rs *respStream) fail(dst []byte, msg, code, param string) []byte {
	return rs.event(dst, "error", func(d []byte) []byte {
		d = append(d, `,"code":`...)
		d = appendNullableString(d, code)
		d = append(d, `,"message":`...)
		d = appendString(d, msg)
		d = append(d, `,"param":`...)
		return appendNullableString(d, param)
	})
}

// storedResponseObj is what storedEvents reads back of a stored Response
// object: every member appendResponse writes that is not derived from
// another.
type storedResponseObj struct {
	ID                 string       `json:"id"`
	CreatedAt          int64        `json:"created_at"`
	Status             string       `json:"status"`
	Instructions       *string      `json:"instructions"`
	MaxOutputTokens    *int         `json:"max_output_tokens"`
	Model              string       `json:"model"`
	Output             []storedItem `json:"output"`
	ParallelToolCalls  bool         `json:"parallel_tool_calls"`
	PreviousResponseID *string      `json:"previous_response_id"`
	Conversation       *struct {
		ID string `json:"id"`
	} `json:"conversation"`
	Store       bool            `json:"store"`
	Temperature float64         `json:"temperature"`
	Text        json.RawMessage `json:"text"`
	ToolChoice  json.RawMessage `json:"tool_choice"`
	Tools       json.RawMessage `json:"tools"`
	TopP        float64         `json:"top_p"`
	Usage       *struct {
		InputTokens        int64 `json:"input_tokens"`
		OutputTokens       int64 `json:"output_tokens"`
		InputTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"input_tokens_details"`
		OutputTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"output_tokens_details"`
	} `json:"usage"`
	User     *string         `json:"user"`
	Metadata json.RawMessage `json:"metadata"`
}

// storedItem is an output item of a stored Response.
type storedItem struct {
	Type    string `json:"type"`
	Content []struct {
		Text string `json:"text"`
	} `json:"content"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// storedEvents appends the events of a stream answering the stored
// Response body, as the live stream sends them for that output (respStream
// writes both): response.created and response.in_progress, the reasoning
// item, the message with its text in one delta, the calls, and
// response.completed or response.incomplete carrying the Response
// re-encoded from what body says (the same object). The events numbered
// up to after are left out (-1: none).
func storedEvents(dst, body []byte, after int64) ([]byte, error) {
	var a storedResponseObj
	if err := json.Unmarshal(body, &a); err != nil {
		return dst, fmt.Errorf("stored response: %w", err)
	}
	var incomplete bool
	switch a.Status {
	case "completed":
	case "incomplete":
		incomplete = true
	default:
		return dst, fmt.Errorf("stored response %s: status %q", a.ID, a.Status)
	}
	if a.Usage == nil {
		return dst, fmt.Errorf("stored response %s: no usage", a.ID)
	}
	rq := &respRequest{instructions: a.Instructions, maxOutputTokens: a.MaxOutputTokens, parallel: a.ParallelToolCalls,
		user: a.User, store: a.Store, text: a.Text, toolChoice: a.ToolChoice, tools: a.Tools, metadata: a.Metadata}
	if a.PreviousResponseID != nil {
		rq.previousID = *a.PreviousResponseID
	}
	if a.Conversation != nil {
		rq.conversation = a.Conversation.ID
	}
	j := &job{kind: kindChat, resp: rq, id: a.ID, created: a.CreatedAt, shownModel: a.Model, temperature: a.Temperature, topP: a.TopP}
	var thought, text strings.Builder
	var calls []nozzle.ToolCall
	for _, it := range a.Output {
		switch it.Type {
		case "reasoning":
			for _, p := range it.Content {
				thought.WriteString(p.Text)
			}
		case "message":
			for _, p := range it.Content {
				text.WriteString(p.Text)
			}
		case "function_call":
			calls = append(calls, nozzle.ToolCall{ID: it.CallID, Type: "function", Function: nozzle.FunctionCall{Name: it.Name, Arguments: it.Arguments}})
		default:
			return dst, fmt.Errorf("stored response %s: output item of type %q", a.ID, it.Type)
		}
	}
	rs := &respStream{j: j, skip: after + 1}
	dst = rs.start(dst)
	dst = rs.add(dst, thought.String(), "")
	dst = rs.add(dst, "", text.String())
	u := usage{a.Usage.InputTokens, a.Usage.OutputTokens, a.Usage.InputTokensDetails.CachedTokens, a.Usage.OutputTokensDetails.ReasoningTokens}
	return rs.finish(dst, calls, incomplete, u), nil
}
