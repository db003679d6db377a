package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/billing"
	"github.com/nozzle-ai/nozzle/gateway"
)

// withLedger puts a real ledger (a bbolt file in a temporary folder)
// behind the gateway in place of the mocks: tenants, keys, usage and
// stored responses. *l is set to it.
func withLedger(t *testing.T, l **billing.Ledger) option {
	return func(c *gateway.Config, d *gateway.Deps, f *fixture) {
		led, err := billing.Open(billing.Options{Path: filepath.Join(t.TempDir(), "ledger.db"), Logger: quietLogger(), DefaultPrice: fixturePrice})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { led.Close() }) // after the server's shutdown, registered later
		d.Tenants, d.Keys, d.Adapters, d.Ledger, d.Budget, d.Reporter, d.Users, d.Responses, d.Conversations = led, led, led, led, led, led, led, led, led
		d.Batches = led // the Files and Batch APIs, with Config.FilesDir
		*l = led
	}
}

type inputItems struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	FirstID *string           `json:"first_id"`
	LastID  *string           `json:"last_id"`
	HasMore bool              `json:"has_more"`
}

func (li inputItems) ids() string {
	var ids []string
	for _, it := range li.Data {
		var x struct{ ID string }
		json.Unmarshal(it, &x)
		ids = append(ids, x.ID)
	}
	return strings.Join(ids, ",")
}

// listItems reads a page of a response's input items.
func listItems(t *testing.T, f *fixture, id, query string, key header) inputItems {
	t.Helper()
	return getItems(t, f, "/v1/responses/"+id+"/input_items"+query, key)
}

// getItems reads a page of items at path (a list object).
func getItems(t *testing.T, f *fixture, path string, key header) inputItems {
	t.Helper()
	resp := f.do(http.MethodGet, path, "", key)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, readAll(t, resp))
	}
	var li inputItems
	decode(t, resp, &li)
	if li.Object != "list" {
		t.Fatalf("object %q", li.Object)
	}
	return li
}

// TestResponses_Stored: a response is stored unless store is false; GET
// answers it as it was answered; DELETE removes it; another tenant finds
// nothing of it; store:false, failed and refused requests store nothing.
func TestResponses_Stored(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	resp, r := postResponses(t, f, `{"model":"base","input":"Say hello","metadata":{"k":"v"}}`)
	rid := resp.Header.Get("X-Request-Id")
	if r.ID != "resp_"+rid {
		t.Fatalf("id %s", r.ID)
	}
	var raw map[string]json.RawMessage
	got := f.do(http.MethodGet, "/v1/responses/"+r.ID, "", f.authA())
	body := readAll(t, got)
	if got.StatusCode != 200 || json.Unmarshal([]byte(body), &raw) != nil || string(raw["store"]) != "true" || string(raw["id"]) != `"`+r.ID+`"` {
		t.Fatalf("GET: %d %s", got.StatusCode, body)
	}
	// The same object as answered.
	again := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"Again"}`, f.authA())
	answered := readAll(t, again)
	var a struct{ ID string }
	json.Unmarshal([]byte(answered), &a)
	if stored := readAll(t, f.do(http.MethodGet, "/v1/responses/"+a.ID, "", f.authA())); stored != answered {
		t.Errorf("stored\n%s\nanswered\n%s", stored, answered)
	}
	if ev, err := l.Usage(context.Background(), rid); err != nil || ev.Status != nozzle.UsageOK {
		t.Fatalf("usage event %+v, %v", ev, err)
	}

	// Another tenant: not found, on every route and as a previous response.
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/responses/" + r.ID}, {http.MethodDelete, "/v1/responses/" + r.ID}, {http.MethodGet, "/v1/responses/" + r.ID + "/input_items"},
	} {
		wantError(t, f.do(tc.method, tc.path, "", bearer(f.keyB)), 404, "invalid_request_error", "", "response_id")
	}
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","previous_response_id":"`+r.ID+`"}`, bearer(f.keyB)),
		404, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	wantError(t, f.do(http.MethodGet, "/v1/responses/resp_nope", "", f.authA()), 404, "invalid_request_error", "", "response_id")

	// store:false: answered false, not stored.
	_, nr := postResponses(t, f, `{"model":"base","input":"hi","store":false}`)
	wantError(t, f.do(http.MethodGet, "/v1/responses/"+nr.ID, "", f.authA()), 404, "invalid_request_error", "", "response_id")
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","previous_response_id":"`+nr.ID+`"}`, f.authA()),
		404, "invalid_request_error", "previous_response_not_found", "previous_response_id")

	// A failed request stores nothing (its attempt is recorded, failed).
	fail := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"FAIL_AFTER"}`, f.authA())
	fid := fail.Header.Get("X-Request-Id")
	if fail.StatusCode < 500 {
		t.Fatalf("failing request: %d", fail.StatusCode)
	}
	wantError(t, f.do(http.MethodGet, "/v1/responses/resp_"+fid, "", f.authA()), 404, "invalid_request_error", "", "response_id")
	// A refused one neither.
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"TOO_LONG"}`, f.authA()), 400, "invalid_request_error", "", "")

	// DELETE, then GET: not found; DELETE again: not found.
	del := f.do(http.MethodDelete, "/v1/responses/"+r.ID, "", f.authA())
	if b := readAll(t, del); del.StatusCode != 200 || b != `{"id":"`+r.ID+`","object":"response","deleted":true}` {
		t.Fatalf("DELETE: %d %s", del.StatusCode, b)
	}
	wantError(t, f.do(http.MethodGet, "/v1/responses/"+r.ID, "", f.authA()), 404, "invalid_request_error", "", "response_id")
	wantError(t, f.do(http.MethodDelete, "/v1/responses/"+r.ID, "", f.authA()), 404, "invalid_request_error", "", "response_id")
	// The usage stays: deleting a response is no refund.
	if _, err := l.Usage(context.Background(), rid); err != nil {
		t.Errorf("usage after delete: %v", err)
	}
	// Kept: "Again" alone (not the deleted one, the store:false one, the
	// failed one, the refused one).
	if res, err := l.Check(context.Background()); err != nil || res.Responses != 1 || len(res.Problems) > 0 {
		t.Errorf("ledger check %+v, %v", res, err)
	}
}

// TestResponses_Conversation: three turns through previous_response_id;
// the model sees every earlier turn (not the earlier instructions);
// input_items lists the conversation, paged.
func TestResponses_Conversation(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	_, r1 := postResponses(t, f, `{"model":"base","instructions":"Be terse.","input":"My name is Ada."}`)
	_, r2 := postResponses(t, f, `{"model":"base","previous_response_id":"`+r1.ID+`","input":[{"role":"user","content":"What is my name?"}]}`)
	_, r3 := postResponses(t, f, `{"model":"base","instructions":"Be kind.","previous_response_id":"`+r2.ID+`","input":"And again?"}`)
	var rr map[string]json.RawMessage
	decode(t, f.do(http.MethodGet, "/v1/responses/"+r3.ID, "", f.authA()), &rr)
	if string(rr["previous_response_id"]) != `"`+r2.ID+`"` {
		t.Errorf("previous_response_id %s", rr["previous_response_id"])
	}
	m := f.gen.lastReq.Load().Messages
	answer := "Hello from the fake runtime."
	want := []nozzle.ChatMessage{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "My name is Ada."}, {Role: "assistant", Content: answer},
		{Role: "user", Content: "What is my name?"}, {Role: "assistant", Content: answer}, {Role: "user", Content: "And again?"}}
	if len(m) != len(want) {
		t.Fatalf("messages %+v", m)
	}
	for i := range want {
		if m[i].Role != want[i].Role || m[i].Content != want[i].Content {
			t.Errorf("message %d: %+v, want %+v", i, m[i], want[i])
		}
	}

	all := listItems(t, f, r3.ID, "?order=asc", f.authA())
	in := func(r responseObj, k int) string {
		return "msg_" + strings.TrimPrefix(r.ID, "resp_") + fmt.Sprintf("_in%d", k)
	}
	wantIDs := []string{in(r1, 0), r1.Output[0].ID, in(r2, 0), r2.Output[0].ID, in(r3, 0)}
	if all.ids() != strings.Join(wantIDs, ",") || all.HasMore || *all.FirstID != wantIDs[0] || *all.LastID != wantIDs[4] {
		t.Fatalf("input items %s (first %v last %v more %v), want %s", all.ids(), *all.FirstID, *all.LastID, all.HasMore, strings.Join(wantIDs, ","))
	}
	var first struct {
		Type, Role, Status string
		Content            []struct{ Type, Text string }
	}
	json.Unmarshal(all.Data[0], &first)
	if first.Type != "message" || first.Role != "user" || first.Status != "completed" || len(first.Content) != 1 || first.Content[0].Type != "input_text" || first.Content[0].Text != "My name is Ada." {
		t.Errorf("first item %s", all.Data[0])
	}
	// Newest first by default, a page at a time.
	p1 := listItems(t, f, r3.ID, "?limit=2", f.authA())
	if p1.ids() != wantIDs[4]+","+wantIDs[3] || !p1.HasMore || *p1.LastID != wantIDs[3] {
		t.Errorf("page 1 %s more %v", p1.ids(), p1.HasMore)
	}
	p2 := listItems(t, f, r3.ID, "?limit=2&after="+*p1.LastID, f.authA())
	if p2.ids() != wantIDs[2]+","+wantIDs[1] || !p2.HasMore {
		t.Errorf("page 2 %s more %v", p2.ids(), p2.HasMore)
	}
	p3 := listItems(t, f, r3.ID, "?limit=2&after="+*p2.LastID, f.authA())
	if p3.ids() != wantIDs[0] || p3.HasMore {
		t.Errorf("page 3 %s more %v", p3.ids(), p3.HasMore)
	}
	asc := listItems(t, f, r3.ID, "?order=asc&limit=1&after="+wantIDs[3], f.authA())
	if asc.ids() != wantIDs[4] || asc.HasMore {
		t.Errorf("asc after %s: %s", wantIDs[3], asc.ids())
	}
	back := listItems(t, f, r3.ID, "?limit=2&before="+wantIDs[1], f.authA()) // desc: before the item after it
	if back.ids() != wantIDs[3]+","+wantIDs[2] || !back.HasMore {
		t.Errorf("before %s: %s more %v", wantIDs[1], back.ids(), back.HasMore)
	}
	for _, q := range []string{"?limit=0", "?limit=101", "?limit=x", "?order=up", "?after=nope", "?before=nope", "?after=" + wantIDs[0] + "&before=" + wantIDs[1]} {
		wantError(t, f.do(http.MethodGet, "/v1/responses/"+r3.ID+"/input_items"+q, "", f.authA()), 400, "invalid_request_error", "", "")
	}

	// Deleting a turn the next one continued: it is gone, but the later
	// turns' conversation keeps it.
	if resp := f.do(http.MethodDelete, "/v1/responses/"+r2.ID, "", f.authA()); resp.StatusCode != 200 {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	wantError(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","previous_response_id":"`+r2.ID+`"}`, f.authA()),
		404, "invalid_request_error", "previous_response_not_found", "previous_response_id")
	if got := listItems(t, f, r3.ID, "?order=asc", f.authA()); got.ids() != strings.Join(wantIDs, ",") {
		t.Errorf("after deleting turn 2: %s", got.ids())
	}
}

// TestResponses_ToolLoop: a function call, answered with a
// function_call_output through previous_response_id: the model sees its
// call and the output.
func TestResponses_ToolLoop(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l), withToolFormat(nozzle.ToolFormatHermes,
		"\n<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>"))
	_, r1 := postResponses(t, f, `{"model":"base",`+respWeatherTools+`,"input":"Weather in Zürich?"}`)
	var fc = r1.Output[len(r1.Output)-1]
	if fc.Type != "function_call" {
		t.Fatalf("output %+v", r1.Output)
	}
	_, r2 := postResponses(t, f, `{"model":"base",`+respWeatherTools+`,"previous_response_id":"`+r1.ID+`",
		"input":[{"type":"function_call_output","call_id":"`+fc.CallID+`","output":"{\"temp\":19}"}]}`)
	m := f.gen.lastReq.Load().Messages
	if len(m) != 3 || m[0].Role != "user" || m[0].Content != "Weather in Zürich?" || m[1].Role != "assistant" || len(m[1].ToolCalls) != 1 ||
		m[1].ToolCalls[0].ID != fc.CallID || m[1].ToolCalls[0].Function.Arguments != `{"city":"Zürich"}` ||
		m[2].Role != "tool" || m[2].ToolCallID != fc.CallID || m[2].Content != `{"temp":19}` {
		t.Fatalf("messages %+v", m)
	}
	items := listItems(t, f, r2.ID, "?order=asc", f.authA())
	var types []string
	for _, it := range items.Data {
		var x struct{ Type, ID string }
		json.Unmarshal(it, &x)
		if x.ID == "" {
			t.Errorf("item without id: %s", it)
		}
		types = append(types, x.Type)
	}
	if strings.Join(types, ",") != "message,function_call,function_call_output" {
		t.Errorf("item types %v", types)
	}
}

// TestResponses_StoredStreamAndReplay: a streamed response is stored as
// its final object; an idempotent replay stores nothing again.
func TestResponses_StoredStreamAndReplay(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","stream":true,"input":"hi"}`, f.authA())))
	last := evs[len(evs)-1]
	if last.typ != "response.completed" {
		t.Fatalf("last event %s", last.typ)
	}
	var final map[string]json.RawMessage
	json.Unmarshal(last.raw["response"], &final)
	var stored map[string]json.RawMessage
	decode(t, f.do(http.MethodGet, "/v1/responses/"+last.response.ID, "", f.authA()), &stored)
	for k, v := range final {
		if string(stored[k]) != string(v) {
			t.Errorf("stored %s = %s, streamed %s", k, stored[k], v)
		}
	}
	if string(stored["store"]) != "true" {
		t.Errorf("store %s", stored["store"])
	}

	body := `{"model":"base","input":"hi"}`
	r1 := f.do(http.MethodPost, "/v1/responses", body, f.authA(), hdr("Idempotency-Key", "k-1"))
	b1 := readAll(t, r1)
	r2 := f.do(http.MethodPost, "/v1/responses", body, f.authA(), hdr("Idempotency-Key", "k-1"))
	if b2 := readAll(t, r2); b2 != b1 || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay\n%s\n%s", b1, b2)
	}
	var a struct{ ID string }
	json.Unmarshal([]byte(b1), &a)
	if got := readAll(t, f.do(http.MethodGet, "/v1/responses/"+a.ID, "", f.authA())); got != b1 {
		t.Errorf("stored %s", got)
	}
	// One response stored for the key, none for the replay's request id.
	wantError(t, f.do(http.MethodGet, "/v1/responses/resp_"+r2.Header.Get("X-Request-Id"), "", f.authA()), 404, "invalid_request_error", "", "response_id")
	// Two events, the stream's and the key's, and their two responses.
	if res, err := l.Check(context.Background()); err != nil || res.Events != 2 || res.Responses != 2 || len(res.Problems) > 0 {
		t.Errorf("ledger check %+v, %v", res, err)
	}
}

// TestResponses_ReasoningContinued: a reasoning model's thoughts, stored
// as a reasoning item, go back with the assistant's turn when the
// response is continued.
func TestResponses_ReasoningContinued(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l), withReasoning(false, "<think>", "\nThe user", " greets me.\n", "</think>", "\n\n", "Hello!"))
	_, r1 := postResponses(t, f, `{"model":"base","input":"hi"}`)
	if len(r1.Output) != 2 || r1.Output[0].Type != "reasoning" {
		t.Fatalf("output %+v", r1.Output)
	}
	_, r2 := postResponses(t, f, `{"model":"base","previous_response_id":"`+r1.ID+`","input":"Again"}`)
	if m := f.gen.lastReq.Load().Messages; len(m) != 3 || m[1].Role != "assistant" || m[1].ReasoningContent != "The user greets me." || m[1].Content != "Hello!" || m[2].Content != "Again" {
		t.Errorf("messages %+v", m)
	}
	items := listItems(t, f, r2.ID, "?order=asc", f.authA())
	var types []string
	for _, it := range items.Data {
		var x struct{ Type string }
		json.Unmarshal(it, &x)
		types = append(types, x.Type)
	}
	if strings.Join(types, ",") != "message,reasoning,message,message" {
		t.Errorf("item types %v", types)
	}
}

// TestResponses_TenantCap: once a tenant's stored responses reach its cap,
// its new responses are answered store false and not kept; another
// tenant's are.
func TestResponses_TenantCap(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l), withConfig(func(c *gateway.Config) { c.TenantResponseBytes = 1 }))
	var first, second, other map[string]json.RawMessage
	decode(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`, f.authA()), &first)
	var id string
	json.Unmarshal(first["id"], &id)
	if resp := f.do(http.MethodGet, "/v1/responses/"+id, "", f.authA()); resp.StatusCode != 200 || string(first["store"]) != "true" {
		t.Fatalf("first response: store %s, GET %d", first["store"], resp.StatusCode)
	}
	decode(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`, f.authA()), &second)
	json.Unmarshal(second["id"], &id)
	if string(second["store"]) != "false" {
		t.Errorf("at the cap: store %s", second["store"])
	}
	wantError(t, f.do(http.MethodGet, "/v1/responses/"+id, "", f.authA()), 404, "invalid_request_error", "", "response_id")
	decode(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`, bearer(f.keyB)), &other)
	if string(other["store"]) != "true" {
		t.Errorf("another tenant: store %s", other["store"])
	}
}

// nonDelta is a stream's events but its text deltas.
func nonDelta(evs []respEvent) []respEvent {
	var out []respEvent
	for _, e := range evs {
		if e.typ != "response.output_text.delta" {
			out = append(out, e)
		}
	}
	return out
}

// deltaText is the text of a stream's deltas, and how many there were.
func deltaText(evs []respEvent) (string, int) {
	text, n := "", 0
	for _, e := range evs {
		if e.typ == "response.output_text.delta" {
			var d string
			json.Unmarshal(e.raw["delta"], &d)
			text += d
			n++
		}
	}
	return text, n
}

// checkReplay streams body live (its response stored), then retrieves the
// response with stream=true: the replay is the live stream with the text
// in one delta, its events numbered from 0, every other event's payload
// the live one's (ids, text, usage, the whole Response), the last one's
// Response the stored object; starting_after cuts it after that event.
// It returns the replay's events.
func checkReplay(t *testing.T, f *fixture, body string) []respEvent {
	t.Helper()
	live := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", body, f.authA())))
	last := live[len(live)-1]
	if last.response == nil || (last.typ != "response.completed" && last.typ != "response.incomplete") {
		t.Fatalf("live stream's last event %s", last.typ)
	}
	id := last.response.ID
	resp := f.do(http.MethodGet, "/v1/responses/"+id+"?stream=true", "", f.authA())
	raw := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET ?stream=true: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	if strings.Contains(raw, "[DONE]") {
		t.Errorf("a [DONE] line")
	}
	replay := respEvents(t, raw) // numbered from 0, in order

	lt, _ := deltaText(live)
	rt, n := deltaText(replay)
	if want := min(len(lt), 1); rt != lt || n != want {
		t.Errorf("replayed text %q in %d deltas, live %q", rt, n, lt)
	}
	a, b := nonDelta(live), nonDelta(replay)
	if len(a) != len(b) {
		t.Fatalf("replay's events %v, live %v", types(b), types(a))
	}
	for i := range a {
		if a[i].typ != b[i].typ || len(a[i].raw) != len(b[i].raw) {
			t.Fatalf("event %d: replayed %s %v, live %s %v", i, b[i].typ, b[i].raw, a[i].typ, a[i].raw)
		}
		for k, v := range a[i].raw {
			if k != "sequence_number" && string(b[i].raw[k]) != string(v) {
				t.Errorf("%s.%s: replayed %s, live %s", a[i].typ, k, b[i].raw[k], v)
			}
		}
	}
	// The first delta's place in the item, as the live stream's.
	for i, e := range replay {
		if e.typ != "response.output_text.delta" {
			continue
		}
		for _, le := range live {
			if le.typ == e.typ {
				for _, k := range []string{"item_id", "output_index", "content_index", "logprobs"} {
					if string(le.raw[k]) != string(e.raw[k]) {
						t.Errorf("delta %d: %s %s, live %s", i, k, e.raw[k], le.raw[k])
					}
				}
				break
			}
		}
	}
	// The last event's Response is the stored object.
	stored := readAll(t, f.do(http.MethodGet, "/v1/responses/"+id, "", f.authA()))
	if got := string(replay[len(replay)-1].raw["response"]); got != stored {
		t.Errorf("replay's last Response\n%s\nstored\n%s", got, stored)
	}

	// starting_after: the events after it, numbered as before.
	blocks := strings.SplitAfter(raw, "\n\n")
	blocks = blocks[:len(blocks)-1] // after the last "\n\n"
	if len(blocks) != len(replay) {
		t.Fatalf("%d blocks, %d events", len(blocks), len(replay))
	}
	for _, after := range []int{0, 1, 2, len(replay) / 2, len(replay) - 2, len(replay) - 1, len(replay), 1 << 40} {
		q := fmt.Sprintf("?stream=true&starting_after=%d", after)
		got := readAll(t, f.do(http.MethodGet, "/v1/responses/"+id+q, "", f.authA()))
		if want := strings.Join(blocks[min(after+1, len(blocks)):], ""); got != want {
			t.Errorf("%s:\n%s\nwant\n%s", q, got, want)
		}
	}
	// include and include_obfuscation change nothing.
	q := "?stream=true&include_obfuscation=false&include[]=message.output_text.logprobs"
	if got := readAll(t, f.do(http.MethodGet, "/v1/responses/"+id+q, "", f.authA())); got != raw {
		t.Errorf("%s:\n%s", q, got)
	}
	return replay
}

func types(evs []respEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.typ)
	}
	return out
}

// TestResponses_RetrieveStream: GET /v1/responses/{id}?stream=true
// replays a stored response as the events its live stream sent — a
// message, a reasoning model's thoughts, a function call, an incomplete
// answer — runs and charges nothing; an Idempotency-Key's streamed replay
// is the same events; bad parameters are refused naming them; another
// tenant's id is not found.
func TestResponses_RetrieveStream(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l))
	replay := checkReplay(t, f, `{"model":"base","stream":true,"input":"hi","metadata":{"k":"v"},"instructions":"Be brief.","temperature":0.5}`)
	want := "response.created response.in_progress response.output_item.added response.content_part.added response.output_text.delta+ " +
		"response.output_text.done response.content_part.done response.output_item.done response.completed"
	if got := collapse(types(replay)); got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}
	last := replay[len(replay)-1].response
	if last.outputText() != "Hello from the fake runtime." || last.Usage == nil || last.Usage.OutputTokens != 6 || last.Status != "completed" {
		t.Errorf("last %+v", last)
	}
	inc := checkReplay(t, f, `{"model":"base","stream":true,"input":"hi","max_output_tokens":3}`)
	if l := inc[len(inc)-1]; l.typ != "response.incomplete" || l.response.IncompleteDetails == nil || l.response.Output[0].Status != "incomplete" {
		t.Errorf("incomplete: last event %s %+v", l.typ, l.response)
	}
	// A non-streamed answer replays as the stream it would have been.
	_, r := postResponses(t, f, `{"model":"base","input":"hi"}`)
	evs := respEvents(t, readAll(t, f.do(http.MethodGet, "/v1/responses/"+r.ID+"?stream=true", "", f.authA())))
	if got := collapse(types(evs)); got != want || evs[len(evs)-1].response.ID != r.ID {
		t.Errorf("events of a non-streamed response\n%s", got)
	}

	// An Idempotency-Key's streamed retry replays the same events.
	idem := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"again"}`, f.authA(), hdr("Idempotency-Key", "rs-1"))
	var ir responseObj
	decode(t, idem, &ir)
	retry := readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"again","stream":true}`, f.authA(), hdr("Idempotency-Key", "rs-1")))
	if got := readAll(t, f.do(http.MethodGet, "/v1/responses/"+ir.ID+"?stream=true", "", f.authA())); got != retry {
		t.Errorf("retrieved\n%s\nidempotent retry\n%s", got, retry)
	}

	// Nothing ran or was charged for the retrievals: one event per POST
	// (the retry replayed).
	if res, err := l.Check(context.Background()); err != nil || res.Events != 4 || res.Responses != 4 || len(res.Problems) > 0 {
		t.Errorf("ledger check %+v, %v", res, err)
	}

	for _, tc := range []struct{ query, code, param string }{
		{"?stream=true&starting_after=-1", "integer_below_min_value", "starting_after"},
		{"?stream=true&starting_after=x", "invalid_type", "starting_after"},
		{"?stream=true&starting_after=1.5", "invalid_type", "starting_after"},
		{"?stream=true&starting_after=", "invalid_type", "starting_after"},
		{"?stream=yes", "invalid_type", "stream"},
	} {
		wantError(t, f.do(http.MethodGet, "/v1/responses/"+r.ID+tc.query, "", f.authA()), 400, "invalid_request_error", tc.code, tc.param)
	}
	// Another tenant's, or none: the non-streamed retrieve's 404.
	for _, path := range []string{"/v1/responses/" + r.ID + "?stream=true", "/v1/responses/resp_nope?stream=true&starting_after=2"} {
		wantError(t, f.do(http.MethodGet, path, "", bearer(f.keyB)), 404, "invalid_request_error", "", "response_id")
		got, plain := f.do(http.MethodGet, path, "", bearer(f.keyB)), f.do(http.MethodGet, strings.Split(path, "?")[0], "", bearer(f.keyB))
		if a, b := readAll(t, got), readAll(t, plain); got.StatusCode != plain.StatusCode || a != b {
			t.Errorf("%s: %d %s, without stream %d %s", path, got.StatusCode, a, plain.StatusCode, b)
		}
	}
}

// TestResponses_RetrieveStreamItems: the replay of a reasoning model's
// answer with a function call has its reasoning item, message and call
// as the live stream had them.
func TestResponses_RetrieveStreamItems(t *testing.T) {
	var l *billing.Ledger
	f := newFixture(t, withLedger(t, &l), withReasoning(false), withToolFormat(nozzle.ToolFormatHermes,
		"<think>", "\nThe user", " wants weather.\n", "</think>", "\n\n", "Let me check.", "\n<tool", "_call>\n{\"name\": \"get_weather\", ",
		"\"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>"))
	replay := checkReplay(t, f, `{"model":"base","stream":true,`+respWeatherTools+`,"input":"Weather in Zürich?"}`)
	want := "response.created response.in_progress response.output_item.added response.output_item.done " +
		"response.output_item.added response.content_part.added response.output_text.delta+ response.output_text.done response.content_part.done response.output_item.done " +
		"response.output_item.added response.function_call_arguments.delta response.function_call_arguments.done response.output_item.done response.completed"
	if got := collapse(types(replay)); got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}
	last := replay[len(replay)-1].response
	if len(last.Output) != 3 || last.Output[0].Type != "reasoning" || last.Output[0].Content[0].Text != "The user wants weather." ||
		last.outputText() != "Let me check.\n" || last.Output[2].Type != "function_call" || last.Output[2].Arguments != `{"city":"Zürich"}` {
		t.Errorf("output %+v", last.Output)
	}
	// Calls alone: no message.
	g := newFixture(t, withLedger(t, &l), withToolFormat(nozzle.ToolFormatHermes,
		"\n<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Bern\"}}\n</tool_call>"))
	replay = checkReplay(t, g, `{"model":"base","stream":true,`+respWeatherTools+`,"input":"Weather in Bern?"}`)
	want = "response.created response.in_progress response.output_item.added response.function_call_arguments.delta " +
		"response.function_call_arguments.done response.output_item.done response.completed"
	if got := collapse(types(replay)); got != want {
		t.Errorf("events\n%s\nwant\n%s", got, want)
	}
}

// TestResponses_TooLargeToStore: a response whose answer or input items
// are larger than a stored response's part may be is answered, charged
// and not kept, and its answer says "store": false — non-streamed, with
// an Idempotency-Key (and its replay), and streamed, where
// response.created (sent before the answer's size is known) said true and
// response.completed says false; input items too large say false from
// response.created on.
func TestResponses_TooLargeToStore(t *testing.T) {
	var l *billing.Ledger
	const limit = 400 // a Response object is larger; the input items of "hi" are not
	f := newFixture(t, withLedger(t, &l), withConfig(func(c *gateway.Config) { gateway.SetStoredPartLimit(c, limit) }))
	var raw map[string]json.RawMessage
	resp := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`, f.authA())
	body := readAll(t, resp)
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &raw) != nil || len(body) <= limit {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var id string
	json.Unmarshal(raw["id"], &id)
	if string(raw["store"]) != "false" {
		t.Errorf("answer too large: store %s", raw["store"])
	}
	wantError(t, f.do(http.MethodGet, "/v1/responses/"+id, "", f.authA()), 404, "invalid_request_error", "", "response_id")

	first := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`, f.authA(), hdr("Idempotency-Key", "big-1"))
	b1 := readAll(t, first)
	again := f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi"}`, f.authA(), hdr("Idempotency-Key", "big-1"))
	if b2 := readAll(t, again); b2 != b1 || !strings.Contains(b1, `"store":false`) {
		t.Errorf("idempotent\n%s\nreplayed\n%s", b1, b2)
	}

	evs := respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"hi","stream":true}`, f.authA())))
	created, last := evs[0], evs[len(evs)-1]
	if string(created.raw["response"]) == "" || !strings.Contains(string(created.raw["response"]), `"store":true`) {
		t.Errorf("response.created %s", created.raw["response"])
	}
	var final map[string]json.RawMessage
	json.Unmarshal(last.raw["response"], &final)
	if last.typ != "response.completed" || string(final["store"]) != "false" {
		t.Errorf("%s: store %s", last.typ, final["store"])
	}
	wantError(t, f.do(http.MethodGet, "/v1/responses/"+last.response.ID, "", f.authA()), 404, "invalid_request_error", "", "response_id")

	// Input items too large: false from the first event on.
	big := strings.Repeat("x", limit)
	evs = respEvents(t, readAll(t, f.do(http.MethodPost, "/v1/responses", `{"model":"base","input":"`+big+`","stream":true}`, f.authA())))
	for _, e := range []respEvent{evs[0], evs[len(evs)-1]} {
		if !strings.Contains(string(e.raw["response"]), `"store":false`) {
			t.Errorf("input too large: %s %s", e.typ, e.raw["response"])
		}
	}

	// Each answered and charged; none kept.
	if res, err := l.Check(context.Background()); err != nil || res.Events != 4 || res.Responses != 0 || len(res.Problems) > 0 {
		t.Errorf("ledger check %+v, %v", res, err)
	}
}
