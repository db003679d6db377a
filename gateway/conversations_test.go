package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/gateway"
)

type conversationObj struct {
	ID        string            `json:"id"`
	Object    string            `json:"object"`
	CreatedAt int64             `json:"created_at"`
	Metadata  map[string]string `json:"metadata"`
}

func createConversation(t *testing.T, f *fixture, body string, key header) conversationObj {
	t.Helper()
	resp := f.do(http.MethodPost, "/v1/conversations", body, key)
	raw := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("create conversation: %d %s", resp.StatusCode, raw)
	}
	var keys map[string]json.RawMessage
	json.Unmarshal([]byte(raw), &keys)
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "created_at,id,metadata,object" {
		t.Errorf("conversation members %v", names)
	}
	var c conversationObj
	if err := json.Unmarshal([]byte(raw), &c); err != nil || c.Object != "conversation" || !strings.HasPrefix(c.ID, "conv_") || c.CreatedAt == 0 || c.Metadata == nil {
		t.Fatalf("conversation %s (%v)", raw, err)
	}
	return c
}

func convItems(t *testing.T, f *fixture, id, query string, key header) inputItems {
	t.Helper()
	return getItems(t, f, "/v1/conversations/"+id+"/items"+query, key)
}

func convCount(t *testing.T, l *billing.Ledger) int {
	t.Helper()
	res, err := l.Check(context.Background())
	if err != nil || len(res.Problems) > 0 {
		t.Fatalf("ledger check %+v, %v", res, err)
	}
	return res.Conversations
}

// TestConversations_Routes: create (with items and metadata), retrieve,
// update, list, add, get and delete items, delete; another tenant finds
// nothing of it, exactly as a deleted one or one that never existed.
func TestConversations_Routes(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	c := createConversation(t, f, `{"metadata":{"topic":"demo"},"items":[{"type":"message","role":"user","content":"Hello!"},{"role":"assistant","content":[{"type":"output_text","text":"Hi."}]}]}`, f.authA())
	if c.Metadata["topic"] != "demo" {
		t.Errorf("metadata %v", c.Metadata)
	}
	empty := createConversation(t, f, ``, f.authA())
	if len(empty.Metadata) != 0 || empty.ID == c.ID {
		t.Errorf("empty conversation %+v", empty)
	}
	var got conversationObj
	decode(t, f.do(http.MethodGet, "/v1/conversations/"+c.ID, "", f.authA()), &got)
	if got.ID != c.ID || got.CreatedAt != c.CreatedAt || got.Metadata["topic"] != "demo" {
		t.Errorf("retrieved %+v", got)
	}
	got = conversationObj{}
	decode(t, f.do(http.MethodPost, "/v1/conversations/"+c.ID, `{"metadata":{"k":"v"}}`, f.authA()), &got)
	if got.ID != c.ID || len(got.Metadata) != 1 || got.Metadata["k"] != "v" {
		t.Errorf("updated %+v", got)
	}

	all := convItems(t, f, c.ID, "?order=asc", f.authA())
	if len(all.Data) != 2 || all.HasMore {
		t.Fatalf("items %s", all.ids())
	}
	var first struct {
		ID, Type, Role, Status string
		Content                []struct{ Type, Text string }
	}
	json.Unmarshal(all.Data[0], &first)
	if !strings.HasPrefix(first.ID, "msg_") || first.Type != "message" || first.Role != "user" || first.Status != "completed" ||
		len(first.Content) != 1 || first.Content[0].Type != "input_text" || first.Content[0].Text != "Hello!" {
		t.Errorf("first item %s", all.Data[0])
	}
	// Add: the items added, with their ids.
	resp := f.do(http.MethodPost, "/v1/conversations/"+c.ID+"/items", `{"items":[{"role":"user","content":"Again"},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}]}`, f.authA())
	var added inputItems
	decode(t, resp, &added)
	if resp.StatusCode != 200 || len(added.Data) != 2 || added.Object != "list" || added.HasMore || !strings.HasPrefix(*added.LastID, "fc_") {
		t.Fatalf("added: %d %+v", resp.StatusCode, added)
	}
	ids := strings.Split(all.ids()+","+added.ids(), ",")
	desc := convItems(t, f, c.ID, "", f.authA())
	if desc.ids() != strings.Join([]string{ids[3], ids[2], ids[1], ids[0]}, ",") || *desc.FirstID != ids[3] || *desc.LastID != ids[0] {
		t.Errorf("newest first: %s, want %v", desc.ids(), ids)
	}
	p1 := convItems(t, f, c.ID, "?limit=3&order=asc", f.authA())
	p2 := convItems(t, f, c.ID, "?limit=3&order=asc&after="+*p1.LastID, f.authA())
	if p1.ids() != strings.Join(ids[:3], ",") || !p1.HasMore || p2.ids() != ids[3] || p2.HasMore {
		t.Errorf("pages %s (%v), %s (%v)", p1.ids(), p1.HasMore, p2.ids(), p2.HasMore)
	}
	if got := readAll(t, f.do(http.MethodGet, "/v1/conversations/"+c.ID+"/items/"+ids[1], "", f.authA())); got != string(all.Data[1]) {
		t.Errorf("item %s: %s", ids[1], got)
	}
	// Delete an item: the conversation.
	decode(t, f.do(http.MethodDelete, "/v1/conversations/"+c.ID+"/items/"+ids[1], "", f.authA()), &got)
	if got.ID != c.ID || got.Object != "conversation" {
		t.Errorf("after deleting an item: %+v", got)
	}
	wantError(t, f.do(http.MethodGet, "/v1/conversations/"+c.ID+"/items/"+ids[1], "", f.authA()), 404, "invalid_request_error", "", "item_id")
	wantError(t, f.do(http.MethodDelete, "/v1/conversations/"+c.ID+"/items/"+ids[1], "", f.authA()), 404, "invalid_request_error", "", "item_id")
	wantError(t, f.do(http.MethodGet, "/v1/conversations/"+c.ID+"/items?after="+ids[1], "", f.authA()), 400, "invalid_request_error", "", "after")

	// Another tenant: not found, on every route and in a response.
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/v1/conversations/" + c.ID, ""},
		{http.MethodPost, "/v1/conversations/" + c.ID, `{"metadata":{}}`},
		{http.MethodDelete, "/v1/conversations/" + c.ID, ""},
		{http.MethodGet, "/v1/conversations/" + c.ID + "/items", ""},
		{http.MethodPost, "/v1/conversations/" + c.ID + "/items", `{"items":[{"role":"user","content":"x"}]}`},
		{http.MethodGet, "/v1/conversations/" + c.ID + "/items/" + ids[0], ""},
		{http.MethodDelete, "/v1/conversations/" + c.ID + "/items/" + ids[0], ""},
	}
	notFound := func(key header, id string) {
		t.Helper()
		for _, r := range routes {
			e := wantError(t, f.do(r.method, strings.Replace(r.path, c.ID, id, 1), r.body, key), 404, "invalid_request_error", "", "conversation_id")
			if e.Error.Message != "Conversation with id '"+id+"' not found." {
				t.Errorf("%s %s: %q", r.method, r.path, e.Error.Message)
			}
		}
		wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","conversation":"`+id+`"}`, key), 404, "invalid_request_error", "", "conversation")
	}
	notFound(bearer(f.keyB), c.ID)
	notFound(f.authA(), "conv_never")
	if n := len(convItems(t, f, c.ID, "", f.authA()).Data); n != 3 {
		t.Errorf("%d items after the other tenant's tries", n)
	}
	// Without a key, or with a key without the inference scope: refused
	// as inference is.
	if resp := f.do(http.MethodGet, "/v1/conversations/"+c.ID, ""); resp.StatusCode != 401 {
		t.Errorf("without a key: %d", resp.StatusCode)
	}
	var usageKey struct{ Key string }
	decode(t, f.do(http.MethodPost, "/v1/keys", `{"name":"usage only","scopes":["usage"]}`, f.authA()), &usageKey)
	for _, r := range append(routes, struct{ method, path, body string }{http.MethodPost, "/v1/conversations", `{}`}) {
		wantError(t, f.do(r.method, r.path, r.body, bearer(usageKey.Key)), 403, "permission_error", "missing_scope", "")
	}

	del := f.do(http.MethodDelete, "/v1/conversations/"+c.ID, "", f.authA())
	if b := readAll(t, del); del.StatusCode != 200 || b != `{"id":"`+c.ID+`","object":"conversation.deleted","deleted":true}` {
		t.Fatalf("DELETE: %d %s", del.StatusCode, b)
	}
	notFound(f.authA(), c.ID)
	if n := convCount(t, l); n != 1 {
		t.Errorf("%d conversations kept, want 1", n)
	}
}

// TestConversations_Refused: bad input is refused naming the parameter,
// and nothing is stored.
func TestConversations_Refused(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	c := createConversation(t, f, `{}`, f.authA())
	many := func(n int) string {
		items := make([]string, n)
		for i := range items {
			items[i] = `{"role":"user","content":"x"}`
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	md := func(n int) string {
		var kv []string
		for i := 0; i < n; i++ {
			kv = append(kv, fmt.Sprintf(`"k%d":"v"`, i))
		}
		return "{" + strings.Join(kv, ",") + "}"
	}
	for _, tc := range []struct {
		name, method, path, body, param string
	}{
		{"Unknown", "POST", "/v1/conversations", `{"itemz":[]}`, "itemz"},
		{"ItemsType", "POST", "/v1/conversations", `{"items":"hi"}`, "items"},
		{"TooMany", "POST", "/v1/conversations", `{"items":` + many(21) + `}`, "items"},
		{"ItemType", "POST", "/v1/conversations", `{"items":[{"type":"web_search_call"}]}`, "items[0].type"},
		{"ItemRole", "POST", "/v1/conversations", `{"items":[{"role":"tool","content":"x"}]}`, "items[0].role"},
		{"ItemContent", "POST", "/v1/conversations", `{"items":[{"role":"user"}]}`, "items[0].content"},
		{"ItemPart", "POST", "/v1/conversations", `{"items":[{"role":"user","content":[{"type":"input_image"}]}]}`, "items[0].content[0].type"},
		{"MetadataType", "POST", "/v1/conversations", `{"metadata":[1]}`, "metadata"},
		{"MetadataValue", "POST", "/v1/conversations", `{"metadata":{"a":1}}`, "metadata.a"},
		{"MetadataMany", "POST", "/v1/conversations", `{"metadata":` + md(17) + `}`, "metadata"},
		{"MetadataKey", "POST", "/v1/conversations", `{"metadata":{"` + strings.Repeat("k", 65) + `":"v"}}`, "metadata"},
		{"MetadataLong", "POST", "/v1/conversations", `{"metadata":{"k":"` + strings.Repeat("v", 513) + `"}}`, "metadata.k"},
		{"NotJSON", "POST", "/v1/conversations", `{"items":`, ""},
		{"UpdateNoMetadata", "POST", "/v1/conversations/" + c.ID, `{}`, "metadata"},
		{"UpdateMany", "POST", "/v1/conversations/" + c.ID, `{"metadata":` + md(17) + `}`, "metadata"},
		{"AddNone", "POST", "/v1/conversations/" + c.ID + "/items", `{}`, "items"},
		{"AddEmpty", "POST", "/v1/conversations/" + c.ID + "/items", `{"items":[]}`, "items"},
		{"AddTooMany", "POST", "/v1/conversations/" + c.ID + "/items", `{"items":` + many(21) + `}`, "items"},
		{"AddItemType", "POST", "/v1/conversations/" + c.ID + "/items", `{"items":[{"type":"item_reference","id":"x"}]}`, "items[0].type"},
		{"BadID", "GET", "/v1/conversations/resp_1", ``, "conversation_id"},
		{"PathTrick", "GET", "/v1/conversations/conv_..%2F..%2Fx", ``, "conversation_id"},
		{"DotID", "GET", "/v1/conversations/conv_a.b/items", ``, "conversation_id"},
		{"BadItemID", "GET", "/v1/conversations/" + c.ID + "/items/a.b", ``, "item_id"},
		{"Limit0", "GET", "/v1/conversations/" + c.ID + "/items?limit=0", ``, "limit"},
		{"Limit101", "GET", "/v1/conversations/" + c.ID + "/items?limit=101", ``, "limit"},
		{"Order", "GET", "/v1/conversations/" + c.ID + "/items?order=up", ``, "order"},
		{"After", "GET", "/v1/conversations/" + c.ID + "/items?after=x%2Fy", ``, "after"},
		{"AfterUnknown", "GET", "/v1/conversations/" + c.ID + "/items?after=msg_nope", ``, "after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, f.do(tc.method, tc.path, tc.body, f.authA()), 400, "invalid_request_error", "", tc.param)
		})
	}
	if n := convCount(t, l); n != 1 {
		t.Errorf("%d conversations stored, want 1", n)
	}
	if n := len(convItems(t, f, c.ID, "", f.authA()).Data); n != 0 {
		t.Errorf("%d items stored", n)
	}
	if got := convItems(t, f, c.ID, "", f.authA()); got.FirstID != nil || got.LastID != nil {
		t.Errorf("an empty list's ids %v %v", got.FirstID, got.LastID)
	}
}

// TestConversations_Responses: responses in a conversation see its items
// before their input, and append their input and output items when they
// complete (streamed or not, stored or not); a failed one appends nothing,
// and an idempotent replay appends nothing again.
func TestConversations_Responses(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	c := createConversation(t, f, `{"items":[{"role":"developer","content":"Be terse."}]}`, f.authA())
	answer := "Hello from the fake runtime."

	_, r1 := postResponses(t, f, `{"model":"base","conversation":"`+c.ID+`","input":"My name is Ada."}`)
	var raw map[string]json.RawMessage
	decode(t, f.do(http.MethodGet, "/v1/responses/"+r1.ID, "", f.authA()), &raw)
	if string(raw["conversation"]) != `{"id":"`+c.ID+`"}` {
		t.Errorf("stored response's conversation %s", raw["conversation"])
	}
	_, r2 := postResponses(t, f, `{"model":"base","conversation":{"id":"`+c.ID+`"},"store":false,"input":[{"role":"user","content":"What is my name?"}]}`)
	m := f.gen.lastReq.Load().Messages
	want := []nozzle.ChatMessage{{Role: "system", Content: "Be terse."}, {Role: "user", Content: "My name is Ada."}, {Role: "assistant", Content: answer}, {Role: "user", Content: "What is my name?"}}
	if len(m) != len(want) {
		t.Fatalf("messages %+v", m)
	}
	for i := range want {
		if m[i].Role != want[i].Role || m[i].Content != want[i].Content {
			t.Errorf("message %d: %+v, want %+v", i, m[i], want[i])
		}
	}
	items := convItems(t, f, c.ID, "?order=asc", f.authA())
	in := func(r responseObj, k int) string {
		return "msg_" + strings.TrimPrefix(r.ID, "resp_") + fmt.Sprintf("_in%d", k)
	}
	wantIDs := []string{*items.FirstID, in(r1, 0), r1.Output[0].ID, in(r2, 0), r2.Output[0].ID}
	if items.ids() != strings.Join(wantIDs, ",") {
		t.Fatalf("items %s, want %s", items.ids(), strings.Join(wantIDs, ","))
	}
	// The output item as the response answered it.
	var out, answered map[string]any
	json.Unmarshal(items.Data[2], &out)
	var outputs []map[string]any
	json.Unmarshal(raw["output"], &outputs)
	if len(outputs) == 1 {
		answered = outputs[0]
	}
	if !reflect.DeepEqual(out, answered) || out["type"] != "message" || out["role"] != "assistant" || out["status"] != "completed" {
		t.Errorf("output item %s", items.Data[2])
	}

	// Streamed: appended too, and its events name the conversation.
	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","stream":true,"store":false,"conversation":"`+c.ID+`","input":"Streamed"}`, f.authA())))
	last := evs[len(evs)-1]
	if last.typ != "response.completed" || !strings.Contains(string(last.raw["response"]), `"conversation":{"id":"`+c.ID+`"}`) {
		t.Fatalf("last event %s %s", last.typ, last.raw["response"])
	}
	if n := len(convItems(t, f, c.ID, "?limit=100", f.authA()).Data); n != 7 {
		t.Fatalf("%d items after the stream, want 7", n)
	}
	// A failed response appends nothing.
	if resp := f.do(http.MethodPost, "/v1/responses", `{"model":"base","conversation":"`+c.ID+`","input":"FAIL_AFTER"}`, f.authA()); resp.StatusCode < 500 {
		t.Fatalf("failing request: %d", resp.StatusCode)
	}
	// A refused one neither.
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","conversation":"`+c.ID+`","input":"TOO_LONG"}`, f.authA()), 400, "invalid_request_error", "", "")
	if n := len(convItems(t, f, c.ID, "?limit=100", f.authA()).Data); n != 7 {
		t.Fatalf("%d items after a failed response, want 7", n)
	}
	// An idempotent request appends once; its replay nothing again.
	body := `{"model":"base","conversation":"` + c.ID + `","input":"Once"}`
	b1 := readAll(t, f.do(http.MethodPost, "/v1/responses", body, f.authA(), hdr("Idempotency-Key", "conv-1")))
	r := f.do(http.MethodPost, "/v1/responses", body, f.authA(), hdr("Idempotency-Key", "conv-1"))
	if b2 := readAll(t, r); b2 != b1 || r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay\n%s\n%s", b1, b2)
	}
	if n := len(convItems(t, f, c.ID, "?limit=100", f.authA()).Data); n != 9 {
		t.Fatalf("%d items after an idempotent request and its replay, want 9", n)
	}
	// A deleted item is no longer seen by the model.
	if resp := f.do(http.MethodDelete, "/v1/conversations/"+c.ID+"/items/"+wantIDs[0], "", f.authA()); resp.StatusCode != 200 {
		t.Fatalf("delete item: %d", resp.StatusCode)
	}
	postResponses(t, f, `{"model":"base","conversation":"`+c.ID+`","input":"Last"}`)
	if m := f.gen.lastReq.Load().Messages; len(m) != 9 || m[0].Content != "My name is Ada." || m[8].Content != "Last" {
		t.Errorf("messages after deleting the first item: %+v", m)
	}
	// Deleted: a response naming it is not found, and nothing runs.
	if resp := f.do(http.MethodDelete, "/v1/conversations/"+c.ID, "", f.authA()); resp.StatusCode != 200 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	events := len(f.events())
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","conversation":"`+c.ID+`","input":"hi"}`, f.authA()), 404, "invalid_request_error", "", "conversation")
	if len(f.events()) != events {
		t.Errorf("a response in a deleted conversation was recorded")
	}
	convCount(t, l)
}

// TestConversations_ConcurrentResponses: responses running at once in
// one conversation, on a real port, each append their input and output
// items as one block; none is lost or split.
func TestConversations_ConcurrentResponses(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	url := f.serve(t)
	c := createConversation(t, f, `{}`, f.authA())
	const n = 12
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := post(t, url+"/v1/responses", f.keyA, fmt.Sprintf(`{"model":"base","conversation":"%s","input":"turn %d"}`, c.ID, i))
			if b := readAll(t, resp); resp.StatusCode != 200 {
				t.Errorf("turn %d: %d %s", i, resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	all := convItems(t, f, c.ID, "?order=asc&limit=100", f.authA())
	if len(all.Data) != 2*n {
		t.Fatalf("%d items, want %d", len(all.Data), 2*n)
	}
	ids := strings.Split(all.ids(), ",")
	seen := map[string]bool{}
	for k := 0; k < len(ids); k += 2 {
		rid := strings.TrimSuffix(strings.TrimPrefix(ids[k], "msg_"), "_in0")
		if ids[k+1] != "msg_"+rid || seen[rid] {
			t.Fatalf("items %d and %d: %s, %s: not one response's block", k, k+1, ids[k], ids[k+1])
		}
		seen[rid] = true
	}
	convCount(t, l)
}

// TestConversations_Limits: a conversation longer than a response may
// read, and input items too large to append, are refused before the
// response runs; nothing is appended or charged.
func TestConversations_Limits(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	c := createConversation(t, f, `{}`, f.authA())
	// Input items that encode larger than a conversation takes at once.
	big := f.do(http.MethodPost, "/v1/responses", `{"model":"base","conversation":"`+c.ID+`","input":"`+strings.Repeat("<", 1<<20)+`"}`, f.authA())
	wantError(t, big, 400, "invalid_request_error", "string_above_max_length", "input")
	// 4,096 items: with any input, more than a response may read.
	item := `{"role":"user","content":"x"}`
	batch := "[" + strings.TrimSuffix(strings.Repeat(item+",", nozzle.MaxConversationItemsAdded), ",") + "]"
	for n := 0; n < 4096; n += nozzle.MaxConversationItemsAdded {
		b := batch
		if k := 4096 - n; k < nozzle.MaxConversationItemsAdded {
			b = "[" + strings.TrimSuffix(strings.Repeat(item+",", k), ",") + "]"
		}
		if resp := f.do(http.MethodPost, "/v1/conversations/"+c.ID+"/items", `{"items":`+b+`}`, f.authA()); resp.StatusCode != 200 {
			t.Fatalf("add items: %d %s", resp.StatusCode, readAll(t, resp))
		}
	}
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","conversation":"`+c.ID+`","input":"hi"}`, f.authA()),
		400, "invalid_request_error", "array_above_max_length", "conversation")
	if n := len(f.events()); n != 0 {
		t.Errorf("%d usage events for refused requests", n)
	}
	if res, err := l.Check(context.Background()); err != nil || res.Events != 0 || len(res.Problems) > 0 {
		t.Errorf("ledger check %+v, %v", res, err)
	}
	all := convItems(t, f, c.ID, "?limit=1", f.authA())
	if !all.HasMore {
		t.Errorf("items %+v", all)
	}
}

// sendPort makes one request to a server on a real port.
func sendPort(t *testing.T, method, url, key, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestConversations_StorageCap, on a real port: once a tenant's
// conversation items reach its cap, adding items, creating a conversation
// with items and responses naming a conversation are refused (413
// conversation_storage_full), storing, running and charging nothing;
// deleting items frees room; another tenant is not held back.
func TestConversations_StorageCap(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l), withConfig(func(c *gateway.Config) { c.TenantConversationBytes = 1 }))
	base := f.serve(t)
	ctx := context.Background()
	create := func(key, body string) conversationObj {
		t.Helper()
		resp := sendPort(t, http.MethodPost, base+"/v1/conversations", key, body)
		var c conversationObj
		decode(t, resp, &c)
		if c.ID == "" {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		return c
	}
	// Under the cap (nothing held), a conversation takes its first items.
	c := create(f.keyA, `{"items":[{"role":"user","content":"hello"}]}`)
	used, err := l.ConversationBytes(ctx, f.tenantA.ID)
	if err != nil || used <= 0 {
		t.Fatalf("bytes after create: %d, %v", used, err)
	}
	full := func(resp *http.Response, param string) {
		t.Helper()
		e := wantError(t, resp, 413, "invalid_request_error", "conversation_storage_full", param)
		if !strings.Contains(e.Error.Message, "storage quota of 1 B") || !strings.Contains(e.Error.Message, fmt.Sprintf("(%d B used)", used)) {
			t.Errorf("message %q", e.Error.Message)
		}
	}
	full(sendPort(t, http.MethodPost, base+"/v1/conversations/"+c.ID+"/items", f.keyA, `{"items":[{"role":"user","content":"more"}]}`), "items")
	full(sendPort(t, http.MethodPost, base+"/v1/conversations", f.keyA, `{"items":[{"role":"user","content":"again"}]}`), "items")
	if n := len(convItems(t, f, c.ID, "", f.authA()).Data); n != 1 {
		t.Fatalf("%d items after refused adds, want 1", n)
	}
	if got, _ := l.ConversationBytes(ctx, f.tenantA.ID); got != used {
		t.Fatalf("bytes after refused adds: %d, want %d", got, used)
	}
	// A conversation without items holds no bytes: still created.
	empty := create(f.keyA, `{}`)

	// A response naming a conversation is refused before it runs or is
	// charged, whichever conversation it names.
	calls := f.gen.calls.Load()
	before, err := l.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{c.ID, empty.ID} {
		full(sendPort(t, http.MethodPost, base+"/v1/responses", f.keyA, `{"model":"base","conversation":"`+id+`","input":"hi"}`), "conversation")
		full(sendPort(t, http.MethodPost, base+"/v1/responses", f.keyA, `{"model":"base","stream":true,"conversation":{"id":"`+id+`"},"input":"hi"}`), "conversation")
	}
	after, err := l.Check(ctx)
	if err != nil || f.gen.calls.Load() != calls || after.Events != before.Events || after.Responses != before.Responses {
		t.Fatalf("refused responses ran or were recorded: %d calls, %d events (were %d), %v", f.gen.calls.Load()-calls, after.Events, before.Events, err)
	}
	// A response without a conversation is not held back.
	if resp := sendPort(t, http.MethodPost, base+"/v1/responses", f.keyA, `{"model":"base","input":"hi"}`); resp.StatusCode != 200 {
		t.Fatalf("response without a conversation: %d %s", resp.StatusCode, readAll(t, resp))
	}
	// Nor is another tenant.
	create(f.keyB, `{"items":[{"role":"user","content":"hello"}]}`)

	// Deleting the item frees room: items are taken again.
	items := convItems(t, f, c.ID, "", f.authA())
	if resp := sendPort(t, http.MethodDelete, base+"/v1/conversations/"+c.ID+"/items/"+*items.FirstID, f.keyA, ""); resp.StatusCode != 200 {
		t.Fatalf("delete item: %d %s", resp.StatusCode, readAll(t, resp))
	}
	if got, _ := l.ConversationBytes(ctx, f.tenantA.ID); got != 0 {
		t.Fatalf("bytes after deleting the item: %d", got)
	}
	if resp := sendPort(t, http.MethodPost, base+"/v1/responses", f.keyA, `{"model":"base","conversation":"`+c.ID+`","input":"hi"}`); resp.StatusCode != 200 {
		t.Fatalf("response after freeing room: %d %s", resp.StatusCode, readAll(t, resp))
	}
	// Admitted under the cap, the response appended its items past it.
	if n := len(convItems(t, f, c.ID, "", f.authA()).Data); n != 2 {
		t.Fatalf("%d items after the admitted response, want 2", n)
	}
	if used, err = l.ConversationBytes(ctx, f.tenantA.ID); err != nil || used <= 0 {
		t.Fatalf("bytes after the admitted response: %d, %v", used, err)
	}
	full(sendPort(t, http.MethodPost, base+"/v1/conversations/"+empty.ID+"/items", f.keyA, `{"items":[{"role":"user","content":"more"}]}`), "items")
	// Deleting the conversation frees its room too.
	if resp := sendPort(t, http.MethodDelete, base+"/v1/conversations/"+c.ID, f.keyA, ""); resp.StatusCode != 200 {
		t.Fatalf("delete conversation: %d", resp.StatusCode)
	}
	if resp := sendPort(t, http.MethodPost, base+"/v1/conversations/"+empty.ID+"/items", f.keyA, `{"items":[{"role":"user","content":"more"}]}`); resp.StatusCode != 200 {
		t.Fatalf("add after deleting the conversation: %d %s", resp.StatusCode, readAll(t, resp))
	}
	convCount(t, l)
}

// TestConversations_NoStorageCap: a negative cap (the configuration's 0)
// takes items past any size.
func TestConversations_NoStorageCap(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l), withConfig(func(c *gateway.Config) { c.TenantConversationBytes = -1 }))
	base := f.serve(t)
	c := createConversation(t, f, `{"items":[{"role":"user","content":"hello"}]}`, f.authA())
	for i := 0; i < 3; i++ {
		if resp := sendPort(t, http.MethodPost, base+"/v1/conversations/"+c.ID+"/items", f.keyA, `{"items":[{"role":"user","content":"more"}]}`); resp.StatusCode != 200 {
			t.Fatalf("add %d: %d %s", i, resp.StatusCode, readAll(t, resp))
		}
	}
	postResponses(t, f, `{"model":"base","conversation":"`+c.ID+`","input":"hi"}`)
	if n := len(convItems(t, f, c.ID, "", f.authA()).Data); n != 6 {
		t.Fatalf("%d items, want 6", n)
	}
	convCount(t, l)
}
