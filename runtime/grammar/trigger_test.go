package grammar

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// triggerSchemas: a strict function's parameters and any object (a
// non-strict function's arguments).
const (
	weatherParams = `{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"},` +
		`"unit":{"enum":["C","F"]}},"required":["city","days"],"additionalProperties":false}`
	anyObject = `{"type":"object"}`
)

// hermesCalls is the runtime's Hermes form with get_weather strict and
// get_time and get_time_zone not (names that share a prefix).
func hermesCalls(t testing.TB, only bool) Triggered {
	t.Helper()
	strict, err := CompileSchema([]byte(weatherParams))
	if err != nil {
		t.Fatal(err)
	}
	free, err := CompileSchema([]byte(anyObject))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Trigger(Calls{Tag: "<tool_call>", Pre: "\n", Post: "\n</tool_call>", ArgsKey: "arguments", Only: only,
		Tools: []Tool{{"get_weather", strict}, {"get_time_zone", free}, {"get_time", free}, {"get_time", strict}}})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func feedAll(st Triggered, s string) (Triggered, bool) {
	for i := 0; i < len(s); i++ {
		if !st.Feed(s[i]) {
			return st, false
		}
	}
	return st, true
}

const (
	callW = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\", \"days\": 3}}\n</tool_call>"
	callT = "<tool_call>\n{\"name\":\"get_time\",\"arguments\":{\"tz\":[1,{}]}}\n</tool_call>"
)

func TestTriggered(t *testing.T) {
	for _, tc := range []struct {
		text      string
		fed, done bool
		only      bool // Calls.Only
	}{
		{"", true, true, false},
		{"Hello, world.\n", true, true, false},
		{"a < b, <tool and <tool_cal then text", true, true, false}, // partial tags are text
		{"<<tool_call>\n{", true, false, false},                     // overlapping prefixes
		{"<tool_call<tool_call>\n{\"name\"", true, false, false},
		{"<tool_call>", true, false, false},
		{"<tool_call>x", false, false, false}, // the tag is a call's
		{"<tool_call>\n", true, false, false},
		{"<tool_call>\n {", false, false, false}, // no space before the object, as a Schema's value
		{"Let me check.\n" + callW, true, true, false},
		{callW + "\n" + callT, true, true, false},
		{callW + "\nIt is sunny.", true, true, false},
		{callW + "\n" + callT + "\n", true, true, true}, // whitespace after calls
		{callW + "\nIt is sunny.", false, false, true},  // text after a call: refused with Only
		{callW + "\n<tool", true, false, true},          // a tag begun: only a call may follow
		{callW + "\n<tool", true, true, false},
		{"<tool_call>\n{\n  \"name\" :\"get_time_zone\" ,\n\"arguments\":  {} \n}\n</tool_call>", true, true, false},
		{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}", false, false, false}, // days required
		{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\", \"days\": 1.5", false, false, false},
		{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\", \"days\": 2, \"unit\": \"K\"", false, false, false},
		{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\", \"days\": 2, \"x\"", false, false, false},
		{"<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"x\": 1}}", true, false, false}, // the first get_time: any object
		{"<tool_call>\n{\"name\": \"get_times\"", false, false, false},
		{"<tool_call>\n{\"name\": \"other\"", false, false, false},
		{"<tool_call>\n{\"arguments\": {}, \"name\": \"get_time\"}", false, false, false}, // the name first
		{"<tool_call>\n{\"name\": \"get_time\", \"arguments\": []}", false, false, false},
		{"<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}, \"x\": 1}", false, false, false},
		{"<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>x</tool_call>", true, true, false},
		{"<tool_call>\n{\"name\":" + strings.Repeat(" ", MaxSpace) + "\"get_time\"", true, false, false},
		{"<tool_call>\n{\"name\":" + strings.Repeat(" ", MaxSpace+1), false, false, false},
		{callW + strings.Repeat(" ", MaxSpace+1), false, false, true},
	} {
		st, fed := feedAll(hermesCalls(t, tc.only), tc.text)
		if fed != tc.fed || fed && st.Done() != tc.done {
			t.Errorf("%q (only %v): fed %v done %v, want %v %v", tc.text, tc.only, fed, fed && st.Done(), tc.fed, tc.done)
		}
	}
}

// callsIn checks text, a done output of hermesCalls, as the gateway's
// parser reads it: every call's object decodes, its name is a tool's and
// get_weather's arguments follow its parameters.
func callsIn(t *testing.T, text string) int {
	n := 0
	for _, part := range strings.Split(text, "<tool_call>\n")[1:] {
		body, _, ok := strings.Cut(part, "\n</tool_call>")
		if !ok {
			t.Fatalf("%q: a call not closed", text)
		}
		var call struct {
			Name      string
			Arguments json.RawMessage
		}
		if err := json.Unmarshal([]byte(body), &call); err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		switch call.Name {
		case "get_weather":
			if !validJSONFor(t, weatherParams, string(call.Arguments)) {
				t.Fatalf("%q: arguments not get_weather's", body)
			}
		case "get_time", "get_time_zone":
			if !validJSONFor(t, anyObject, string(call.Arguments)) {
				t.Fatalf("%q: arguments not an object", body)
			}
		default:
			t.Fatalf("%q: called %q", body, call.Name)
		}
		n++
	}
	return n
}

// TestTriggered_NoDeadEnds: along random byte walks (the tag's bytes in
// whole now and then, the JSON's structure favoured), every state takes some byte or is done,
// and every done output's calls are well formed.
func TestTriggered_NoDeadEnds(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	calls := 0
	for _, only := range []bool{false, true} {
		start := hermesCalls(t, only)
		for range 100 {
			st, out := start, []byte{}
			for step := 0; step < 3000 && !(st.Done() && step > 300); step++ {
				if st.phase == tFree && r.IntN(20) == 0 { // the rest of the tag, now and then
					for st.phase == tFree {
						b := st.c.tag[st.at]
						if !st.Feed(b) {
							t.Fatalf("the tag refused after %q", out)
						}
						out = append(out, b)
					}
					continue
				}
				b, ok := pickByte[Triggered](r, &st, func(b byte) int { return triggerWeight(b, step) })
				if !ok {
					if st.Done() {
						break
					}
					t.Fatalf("dead end after %q", out)
				}
				out = append(out, b)
			}
			if st.Done() {
				calls += callsIn(t, string(out))
			}
		}
	}
	if calls < 50 {
		t.Errorf("only %d calls made along the walks", calls)
	}
	t.Logf("%d calls checked", calls)
}

func triggerWeight(b byte, step int) int {
	if strings.IndexByte("<tool_call>\n", b) >= 0 {
		return 150
	}
	return byteWeight(b, step)
}

// FuzzTriggered: states with one key take the same bytes (the masks of
// one are the other's), and a done output's calls are well formed.
func FuzzTriggered(f *testing.F) {
	f.Add(false, "Hi <tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>")
	f.Add(true, callW+"\n"+callT)
	f.Add(false, "<<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"a\",\"days\":-0}}\n</tool_call>ok")
	starts := map[bool]Triggered{false: hermesCalls(f, false), true: hermesCalls(f, true)}
	const probes = probes + "<_l>/\n"
	f.Fuzz(func(t *testing.T, only bool, s string) {
		st, fed := feedKeyed[Triggered](t, starts[only], s, probes)
		if fed && st.Done() {
			callsIn(t, s)
		}
	})
}
