package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestServe_StoredResponses: the server stores a Responses answer in its
// ledger, retrieves it, continues it with previous_response_id, lists the
// conversation and deletes it.
func TestServe_StoredResponses(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)

	resp, b := post(t, base+"/v1/responses", key, `{"model":"demo-chat","input":"Hello!","max_output_tokens":8,"temperature":0}`)
	var r1 struct {
		ID    string `json:"id"`
		Store bool   `json:"store"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &r1) != nil || !r1.Store {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	if resp, got := get(t, base+"/v1/responses/"+r1.ID, key); resp.StatusCode != 200 || string(got) != string(b) {
		t.Fatalf("retrieve: %d %s\nanswered %s", resp.StatusCode, got, b)
	}
	resp, b = post(t, base+"/v1/responses", key, `{"model":"demo-chat","previous_response_id":"`+r1.ID+`","input":"Again.","max_output_tokens":8}`)
	var r2 struct {
		ID   string `json:"id"`
		Prev string `json:"previous_response_id"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &r2) != nil || r2.Prev != r1.ID {
		t.Fatalf("continue: %d %s", resp.StatusCode, b)
	}
	resp, b = get(t, base+"/v1/responses/"+r2.ID+"/input_items?order=asc", key)
	var items struct {
		Object string
		Data   []struct{ Type, Role string }
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &items) != nil || items.Object != "list" || len(items.Data) != 3 ||
		items.Data[0].Role != "user" || items.Data[1].Role != "assistant" || items.Data[2].Role != "user" {
		t.Fatalf("input items: %d %s", resp.StatusCode, b)
	}
	if res := ledgerCheck(t, base, m.Config.Data); res.Responses != 2 || len(res.Problems) > 0 {
		t.Fatalf("ledger check %+v", res)
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"/v1/responses/"+r2.ID, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	dr, err := http.DefaultClient.Do(req)
	if err != nil || dr.StatusCode != 200 {
		t.Fatalf("delete: %v %v", dr, err)
	}
	dr.Body.Close()
	if resp, b := get(t, base+"/v1/responses/"+r2.ID, key); resp.StatusCode != 404 || !strings.Contains(string(b), "not found") {
		t.Fatalf("after delete: %d %s", resp.StatusCode, b)
	}
}

// TestServe_Conversations: the server keeps conversations in its ledger:
// a response in one appends its items, which the next response's
// conversation and the items list hold.
func TestServe_Conversations(t *testing.T) {
	m := MustRunMain(t)
	base := "http://" + m.Addr
	key := m.demoKey(t)

	resp, b := post(t, base+"/v1/conversations", key, `{"metadata":{"k":"v"}}`)
	var conv struct{ ID, Object string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &conv) != nil || conv.Object != "conversation" || !strings.HasPrefix(conv.ID, "conv_") {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	for _, in := range []string{"Hello!", "Again."} {
		resp, b = post(t, base+"/v1/responses", key, `{"model":"demo-chat","conversation":"`+conv.ID+`","input":"`+in+`","max_output_tokens":8,"temperature":0}`)
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"conversation":{"id":"`+conv.ID+`"}`) {
			t.Fatalf("response: %d %s", resp.StatusCode, b)
		}
	}
	resp, b = get(t, base+"/v1/conversations/"+conv.ID+"/items?order=asc", key)
	var items struct {
		Object string
		Data   []struct{ Type, Role string }
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &items) != nil || items.Object != "list" || len(items.Data) != 4 ||
		items.Data[0].Role != "user" || items.Data[1].Role != "assistant" || items.Data[2].Role != "user" || items.Data[3].Role != "assistant" {
		t.Fatalf("items: %d %s", resp.StatusCode, b)
	}
	if res := ledgerCheck(t, base, m.Config.Data); res.Conversations != 1 || len(res.Problems) > 0 {
		t.Fatalf("ledger check %+v", res)
	}
}
