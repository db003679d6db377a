package grammar

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
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
	return triggerCalls(t, Calls{Tag: "<tool_call>", Pre: "\n", Post: "\n</tool_call>", ArgsKey: "arguments", Only: only}, "get_time")
}

// triggerCalls is c's machine with the tests' tools: get_weather strict
// (weatherParams), get_time_zone and get_time any object, and last strict
// too (a second get_time, or get, whose name begins the others').
func triggerCalls(t testing.TB, c Calls, last string) Triggered {
	t.Helper()
	strict, err := CompileSchema([]byte(weatherParams))
	if err != nil {
		t.Fatal(err)
	}
	free, err := CompileSchema([]byte(anyObject))
	if err != nil {
		t.Fatal(err)
	}
	c.Tools = []Tool{{"get_weather", strict}, {"get_time_zone", free}, {"get_time", free}, {last, strict}}
	st, err := Trigger(c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// checkArgs reads a call of name with args, in text, as the gateway
// does: name must be a tool's (get only where get is among them), and
// get_weather's (and get's) arguments follow weatherParams, the others'
// are an object.
func checkArgs(t *testing.T, text, name string, args []byte, get bool) {
	t.Helper()
	switch {
	case name == "get_weather" || get && name == "get":
		if !validJSONFor(t, weatherParams, string(args)) {
			t.Fatalf("%q: arguments not %s's", text, name)
		}
	case name == "get_time" || name == "get_time_zone":
		if !validJSONFor(t, anyObject, string(args)) {
			t.Fatalf("%q: arguments not an object", text)
		}
	default:
		t.Fatalf("%q: called %q", text, name)
	}
}

// feedCase is a text, whether a machine takes it (fed) and whether it is
// done after it.
type feedCase struct {
	text      string
	fed, done bool
}

// checkFeeds feeds each case's text to start (markCall and markArgs
// through Mark) and checks it is taken and done as the case says; a done
// text's calls are read by callsIn.
func checkFeeds(t *testing.T, start Triggered, cases []feedCase, callsIn func(*testing.T, string) int) {
	t.Helper()
	for _, tc := range cases {
		st, fed := feedMarked(start, tc.text)
		if fed != tc.fed || fed && st.Done() != tc.done {
			t.Errorf("%q: fed %v done %v, want %v %v", tc.text, fed, fed && st.Done(), tc.fed, tc.done)
		}
		if fed && st.Done() {
			callsIn(t, tc.text)
		}
	}
}

// checkRefused checks that Trigger refuses each form, its tools and
// arguments' key filled in by fill.
func checkRefused(t *testing.T, forms []Calls, fill func(*Calls)) {
	t.Helper()
	for _, c := range forms {
		fill(&c)
		if _, err := Trigger(c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
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
		checkArgs(t, body, call.Name, call.Arguments, false)
		n++
	}
	return n
}

// TestTriggered_NoDeadEnds: along random byte walks (the tag's bytes in
// whole now and then, the JSON's structure favoured), every state takes some byte or is done,
// and every done output's calls are well formed.
func TestTriggered_NoDeadEnds(t *testing.T) {
	walker{
		starts: []Triggered{hermesCalls(t, false), hermesCalls(t, true)}, walks: 100, steps: 3000, settle: 300,
		move: func(r *rand.Rand, st Triggered) string {
			if st.phase == tFree && r.IntN(20) == 0 { // the rest of the tag, now and then
				return string(st.c.tag[st.at:])
			}
			return ""
		},
		weight:  func(_ *Triggered, b byte, step int) int { return triggerWeight(b, step) },
		callsIn: callsIn, minCalls: 50,
	}.run(t, 5, 6)
}

// walker is a random walk of a Triggered machine's answers, the parts
// the formats' walks do not share its fields: along its walks every
// state takes some byte (or a mark) or is done, and every done output
// reads as calls (or free text).
type walker struct {
	starts []Triggered // walks from each
	walks  int         // from each start
	steps  int         // a walk's steps at the most
	settle int         // steps before a done walk may end
	// stopOdds: a done walk past settle ends one step in stopOdds (0:
	// at once)
	stopOdds int
	// leads: four walks in five begin with one of them (marks as bytes),
	// after which the state is in phase leadTo
	leads  []string
	leadTo uint8
	// move: a step's text taken whole (marks as bytes) instead of a
	// byte, or ""
	move func(r *rand.Rand, st Triggered) string
	// weight: a byte's weight in the draw
	weight func(st *Triggered, b byte, step int) int
	// stuck: where no byte is taken and the state is not done, the marks
	// to take, or end (the walk ends there); nil, or neither: a dead end
	stuck func(st Triggered) (marks string, end bool)
	// callsIn: a done output's calls, read as the gateway does
	callsIn func(t *testing.T, text string) int
	// the calls, and the answers of several, the walks must make at the
	// least
	minCalls, minSeveral int
}

// run walks with the random source seeded (seed1, seed2).
func (w walker) run(t *testing.T, seed1, seed2 uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed1, seed2))
	calls, several := 0, 0
	for _, start := range w.starts {
		for range w.walks {
			st, out := start, []byte{}
			take := func(s string) {
				var ok bool
				if st, ok = feedMarked(st, s); !ok {
					t.Fatalf("%q refused after %q", s, out)
				}
				out = append(out, s...)
			}
			if w.leads != nil && r.IntN(5) > 0 {
				lead := w.leads[r.IntN(len(w.leads))]
				if take(lead); st.phase != w.leadTo {
					t.Fatalf("%q: no call", lead)
				}
			}
			for step := 0; step < w.steps && !(st.Done() && step > w.settle && (w.stopOdds == 0 || r.IntN(w.stopOdds) == 0)); step++ {
				if w.move != nil {
					if s := w.move(r, st); s != "" {
						take(s)
						continue
					}
				}
				b, ok := pickByte[Triggered](r, &st, func(b byte) int { return w.weight(&st, b, step) })
				if !ok {
					if st.Done() {
						break
					}
					if w.stuck != nil {
						if marks, end := w.stuck(st); end {
							break
						} else if marks != "" {
							take(marks)
							continue
						}
					}
					t.Fatalf("dead end after %q", out)
				}
				out = append(out, b)
			}
			if st.Done() {
				n := w.callsIn(t, string(out))
				calls += n
				if n > 1 {
					several++
				}
			}
		}
	}
	if calls < w.minCalls || several < w.minSeveral {
		t.Errorf("only %d calls (%d answers of several) made along the walks", calls, several)
	}
	t.Logf("%d calls checked, %d answers of several", calls, several)
}

func triggerWeight(b byte, step int) int {
	if strings.IndexByte("<tool_call>\n", b) >= 0 {
		return 150
	}
	return byteWeight(b, step)
}

// FuzzTriggered: states with one key take the same bytes (the masks of
// one are the other's), and a done output's calls are well formed. mode:
// 0 Hermes' calls in free text, 1 with only calls after one, 2 Llama 3's
// leading calls (llamaCalls), 3 Mistral v11's (v11Calls: markCall and
// markArgs in s are the marks, which the keys' probes take too), 4
// Mistral's v3 (v3Calls, the same marks).
func FuzzTriggered(f *testing.F) {
	f.Add(uint8(0), "Hi <tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>")
	f.Add(uint8(1), callW+"\n"+callT)
	f.Add(uint8(0), "<<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"a\",\"days\":-0}}\n</tool_call>ok")
	f.Add(uint8(2), " \n"+leadW+" ;\n"+leadT)
	f.Add(uint8(2), "\u00a0\u2003"+leadT+";"+leadW)
	f.Add(uint8(2), "Sure: "+leadW)
	f.Add(uint8(2), "\xe2\x80{")
	f.Add(uint8(3), "Hi "+v11W+"\n"+v11T)
	f.Add(uint8(3), "[TOOL_CALL\x01get\x02{\"city\":\"\\u0041\",\"days\":0}\x01get_time_zone\x02{}")
	f.Add(uint8(3), "\x01get_time\x02{}\x02")
	f.Add(uint8(4), " \x01 ["+v3W+",\n"+v3T+"]\n")
	f.Add(uint8(4), "\x01[{\"name\":\"get_time\",\"arguments\":{\"[TOOL_CALLS\":\"[[TOOL_CALLS\"}}]")
	f.Add(uint8(4), "Hi [TOOL_CALLS [1]")
	starts := []Triggered{hermesCalls(f, false), hermesCalls(f, true), llamaCalls(f), v11Calls(f), v3Calls(f)}
	const probes = probes + "<_l>/\n;\t\xc2\xa0\xe2\x80"
	f.Fuzz(func(t *testing.T, mode uint8, s string) {
		mode %= uint8(len(starts))
		if mode >= 3 {
			st, fed := feedKeyedMarked(t, starts[mode], s, probes+"[TOOLCAS]_gemwhz")
			if fed && st.Done() && mode == 3 {
				v11CallsIn(t, s)
			} else if fed && st.Done() {
				v3CallsIn(t, s)
			}
			return
		}
		st, fed := feedKeyed[Triggered](t, starts[mode], s, probes)
		if fed && st.Done() {
			if mode == 2 {
				llamaCallsIn(t, s)
			} else {
				callsIn(t, s)
			}
		}
	})
}

// feedKeyedMarked is feedKeyed for a machine of marks: markCall and
// markArgs in s are read through Mark, and the states with one key must
// take the same probes and the same marks.
func feedKeyedMarked(t *testing.T, start Triggered, s, probes string) (Triggered, bool) {
	t.Helper()
	return feedKeyedBy[Triggered](t, start, s, probes, feedMark, func(st Triggered) (took uint64) {
		for k := range 2 {
			if st := st; st.Mark(k) {
				took |= 1 << (61 + k)
			}
		}
		return took
	})
}

// llamaCalls is the runtime's form of Llama 3's JSON calls (Calls.Lead,
// ";" between calls) with hermesCalls' tools.
func llamaCalls(t testing.TB) Triggered {
	return triggerCalls(t, Calls{ArgsKey: "parameters", Only: true, Sep: ";", Lead: true}, "get_time")
}

const (
	leadW = `{"name": "get_weather", "parameters": {"city": "Bern", "days": 3}}`
	leadT = `{"name":"get_time","parameters":{"tz":[1,{}]}}`
)

// llamaCallsIn checks text, a done output of llamaCalls, as the gateway's
// splitToolCalls reads Llama 3's answers: where the text, trimmed
// (strings.TrimSpace), begins with '{', it must be calls — objects
// separated by ';' and " \t\r\n" — each a tool's name and, under
// "parameters", its arguments (get_weather's following its parameters);
// it returns how many, 0 for free text.
func llamaCallsIn(t *testing.T, text string) int {
	s := strings.TrimSpace(text)
	if !strings.HasPrefix(s, "{") {
		return 0
	}
	n := 0
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		dec := json.NewDecoder(strings.NewReader(s))
		var call map[string]json.RawMessage
		if err := dec.Decode(&call); err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		var name string
		args, ok := call["parameters"]
		if json.Unmarshal(call["name"], &name) != nil || !ok || len(call) != 2 {
			t.Fatalf("%q: not a call", text)
		}
		checkArgs(t, text, name, args, false)
		n++
		if s = strings.TrimLeft(s[dec.InputOffset():], " \t\r\n"); s == "" {
			return n
		}
		if s[0] != ';' {
			t.Fatalf("%q: calls not separated by ';'", text)
		}
		s = s[1:]
	}
}

// TestTriggered_Lead: Llama 3's JSON calls (Calls.Lead, Sep ";"): an
// answer whose first byte past whitespace is '{' is calls, separated by
// ';', whitespace around them; any other is free text to its end.
func TestTriggered_Lead(t *testing.T) {
	checkFeeds(t, llamaCalls(t), []feedCase{
		{"", true, true},
		{" \n\t\r\v\f", true, true},
		{"Hello, world. {\"name\": 1}", true, true}, // '{' later in free text: text
		{"Sure: {", true, true},
		{"x{{{;}", true, true},
		{"<tool_call>\n{", true, true},
		{"{", true, false},
		{" \n{", true, false},
		{leadW, true, true},
		{" \n\t" + leadW + " \n", true, true},
		{"\u00a0\u3000\u2028\u0085\v\f\r" + leadT, true, true}, // all strings.TrimSpace trims
		{"\u00a0x{", true, true},                               // text
		{"\xc2{", true, true},                                  // not a character: text
		{"\xe2\x80{", true, true},
		{"\xe2\x80\x8b{", true, true}, // U+200B is no space
		{"{x", false, false},
		{"{ \"name\"", true, false},
		{"{\n  \"name\" : \"get_time_zone\" ,\n\"parameters\":  {} \n}", true, true},
		{`{"name": "other"`, false, false},
		{`{"name": "get_times"`, false, false},
		{`{"parameters": {}, "name": "get_time"}`, false, false}, // the name first
		{`{"name": "get_time", "arguments": {}}`, false, false},  // Llama's key
		{`{"name": "get_time", "parameters": []}`, false, false},
		{`{"name": "get_time", "parameters": {}, "x": 1}`, false, false},
		{`{"name": "get_weather", "parameters": {"city": "Bern"}}`, false, false}, // days required
		{`{"name": "get_time", "parameters": {"x": {"y": [1, "}"]}}}`, true, true},
		{leadW + ";", true, false}, // a call must follow
		{leadW + " \n;", true, false},
		{leadW + ";" + leadT, true, true},
		{leadW + " ;\n" + leadT + "\n ; " + leadW + "\n", true, true},
		{leadW + leadT, false, false}, // ';' between calls
		{leadW + "\n" + leadT, false, false},
		{leadW + ";;", false, false},
		{leadW + "; ;", false, false},
		{leadW + " text", false, false},
		{leadW + "; text", false, false},
		{leadW + "\t", false, false}, // between calls ' ' and '\n' only
		{leadW + strings.Repeat(" ", MaxSpace), true, true},
		{leadW + strings.Repeat(" ", MaxSpace+1), false, false},
		{leadW + ";" + strings.Repeat("\n", MaxSpace) + leadT, true, true},
		{leadW + ";" + strings.Repeat("\n", MaxSpace+1), false, false},
		{strings.Repeat(" ", 3*MaxSpace) + leadW, true, true}, // leading whitespace is not counted
	}, llamaCallsIn)
	checkRefused(t, []Calls{
		{Tag: "<tool_call>", Lead: true, Only: true},
		{Pre: "\n", Lead: true, Only: true},
		{Lead: true},
		{Tag: "<tool_call>", Sep: ";"},
		{Tag: "<tool_call>", Sep: " ;", Only: true},
		{},
	}, func(c *Calls) {
		c.ArgsKey, c.Tools = "parameters", []Tool{{"f", llamaCalls(t).c.args[0]}}
	})
}

// TestTriggered_LeadSpaces: every character, then '{': a call begins
// where strings.TrimSpace trims the character (so that the gateway, which
// trims the answer, reads no call the masks did not hold), free text
// where it does not.
func TestTriggered_LeadSpaces(t *testing.T) {
	start := llamaCalls(t)
	n := 0
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if r == '{' || !utf8.ValidRune(r) {
			continue
		}
		s := string(r) + "{"
		st, fed := feedAll(start, s)
		if !fed {
			t.Fatalf("%q refused", s)
		}
		call, want := st.phase == tObj, strings.TrimSpace(s) == "{"
		if call != want {
			t.Errorf("%U then '{': a call %v, want %v", r, call, want)
		}
		if call {
			n++
		}
	}
	if n < 8 { // 6 in ASCII, NEL, NBSP and more (unicode.White_Space)
		t.Errorf("only %d characters lead to a call", n)
	}
	t.Logf("%d characters lead to a call", n)
}

// TestTriggered_LeadNoDeadEnds: TestTriggered_NoDeadEnds for Llama 3's
// leading calls: along random walks (most begin with whitespace and '{'),
// every state takes some byte or is done, and every done output reads as
// calls (or free text).
func TestTriggered_LeadNoDeadEnds(t *testing.T) {
	walker{
		starts: []Triggered{llamaCalls(t)}, walks: 100, steps: 3000, settle: 300,
		leads: []string{"{", " {", "\n\n{", "\u00a0{", "\t\u3000{"}, leadTo: tObj,
		weight: func(_ *Triggered, b byte, step int) int {
			if b == ';' {
				return 300
			}
			return byteWeight(b, step)
		},
		callsIn: llamaCallsIn, minCalls: 50, minSeveral: 5,
	}.run(t, 7, 8)
}

// The marks of Mistral's calls in the tests' texts: the control tokens,
// which have no bytes, written as bytes the tests read through Mark.
const (
	markCall = '\x01' // [TOOL_CALLS]
	markArgs = '\x02' // [ARGS]
)

// v11Calls is the runtime's form of Mistral v11's calls (Calls.Mark,
// Calls.Bare: [TOOL_CALLS]name[ARGS]{…}) with hermesCalls' tools and get,
// strict too, whose name begins the others'.
func v11Calls(t testing.TB) Triggered {
	return triggerCalls(t, Calls{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true}, "get")
}

// feedMarked feeds s, markCall and markArgs through Mark.
func feedMarked(st Triggered, s string) (Triggered, bool) {
	for i := 0; i < len(s); i++ {
		if !feedMark(&st, s[i]) {
			return st, false
		}
	}
	return st, true
}

// feedMark feeds c to st, markCall and markArgs through Mark.
func feedMark(st *Triggered, c byte) bool {
	switch c {
	case markCall:
		return st.Mark(MarkCall)
	case markArgs:
		return st.Mark(MarkArgs)
	}
	return st.Feed(c)
}

// v11Text is a test's text as the runtime writes it: its marks as the
// control tokens' text.
func v11Text(s string) string {
	return strings.NewReplacer(string(rune(markCall)), "[TOOL_CALLS]", string(rune(markArgs)), "[ARGS]").Replace(s)
}

// v11CallsIn checks text, a done output of v11Calls (marks as bytes), as
// the gateway's splitToolCalls reads Mistral v11's answers: from the first
// [TOOL_CALLS], calls of a function's name, [ARGS] and its arguments
// (get_weather's and get's following weatherParams), whitespace between
// them, nothing after them; it returns how many, 0 for free text.
func v11CallsIn(t *testing.T, text string) int {
	s := v11Text(text)
	i := strings.Index(s, "[TOOL_CALLS]")
	if i < 0 {
		return 0
	}
	if i != strings.IndexByte(text, markCall) {
		t.Fatalf("%q: the free text wrote the control token's text", text)
	}
	rest, n := s[i:], 0
	for {
		rest = strings.TrimLeft(rest, " \t\r\n")
		if rest == "" {
			return n
		}
		rest = strings.TrimLeft(strings.TrimPrefix(rest, "[TOOL_CALLS]"), " \t\r\n")
		k := 0
		for k < len(rest) && nameByte(rest[k]) {
			k++
		}
		name := rest[:k]
		rest, _ = strings.CutPrefix(rest[k:], "[ARGS]")
		rest = strings.TrimLeft(rest, " \t\r\n")
		dec := json.NewDecoder(strings.NewReader(rest))
		var args json.RawMessage
		if !strings.HasPrefix(rest, "{") || dec.Decode(&args) != nil {
			t.Fatalf("%q: not calls after the marker", text)
		}
		checkArgs(t, text, name, args, true)
		n++
		rest = rest[dec.InputOffset():]
	}
}

const (
	v11W = "\x01get_weather\x02{\"city\": \"Bern\", \"days\": 3}"
	v11T = "\x01get_time\x02 {\"tz\":[1,{}]}"
)

// TestTriggered_Mistral: Mistral v11's calls (Calls.Mark, Calls.Bare):
// free text, never the control token's text, until [TOOL_CALLS]; then a
// name, [ARGS] where the bytes are a whole name, the arguments, and
// after them whitespace, the end or the next call.
func TestTriggered_Mistral(t *testing.T) {
	checkFeeds(t, v11Calls(t), []feedCase{
		{"", true, true},
		{"Hello, [TOOL_CALL] [TOOL_CALLS", true, true}, // partial texts of the tag are text
		{"[TOOL_CALLS]", false, false},                 // its whole text is not
		{"[[TOOL_CALLS]", false, false},
		{"x[TOOL_CALLS\x01get\x02{\"city\":\"a\",\"days\":1}", true, true},
		{v11W, true, true},
		{"Let me see.\n" + v11W, true, true},
		{v11W + v11T, true, true},
		{v11W + " \n" + v11T + "\n", true, true},
		{"\x01get_time_zone\x02{}\x01get\x02\n{\"city\":\"a\",\"days\":-2,\"unit\":\"F\"}", true, true},
		{"\x01", true, false},
		{"\x01\x02", false, false}, // a name first
		{"\x01 get", false, false},
		{"\x01get", true, false},
		{"\x01get\x02", true, false},
		{"\x01get\x02{}", false, false}, // get is strict: city and days
		{"\x01get_\x02", false, false},  // no whole name
		{"\x01get_t\x02", false, false},
		{"\x01get_time\x02{\"x\": 1}", true, true},
		{"\x01get_times", false, false},
		{"\x01other", false, false},
		{"\x01\"get\"", false, false},
		{"\x01get_time{}", false, false}, // [ARGS] before the arguments
		{"\x01get_time\x02[]", false, false},
		{"\x01get_time\x02{}x", false, false}, // nothing but calls after one
		{"\x01get_time\x02{} [TOOL_CALLS]", false, false},
		{"\x01get_time\x02{}\x02", false, false},
		{"\x01get_time\x02{}\x01", true, false},
		{"\x01get_time\x02{}\x01\x01", false, false},
		{"\x01get\x01", false, false},
		{"\x01get_time\x02" + strings.Repeat(" ", MaxSpace) + "{}", true, true},
		{"\x01get_time\x02" + strings.Repeat(" ", MaxSpace+1), false, false},
		{"\x01get_time\x02{}" + strings.Repeat("\n", MaxSpace), true, true},
		{"\x01get_time\x02{}" + strings.Repeat("\n", MaxSpace+1), false, false},
		{"\x01get_time\x02{}\t", false, false},
		{"\x02", false, false},
		{"x\x02", false, false},
	}, v11CallsIn)
	free, _ := CompileSchema([]byte(anyObject))
	checkRefused(t, []Calls{
		{Tag: "[TOOL_CALLS]", Mark: true, Bare: true}, // Only
		{Mark: true, Bare: true, Only: true},          // the tag's text
		{Tag: "[TOOL_CALLS]", Bare: true, Only: true}, // Mark
		{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true, Sep: ";"},
		{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true, Pre: " "},
		{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true, Tools: []Tool{{"get time", free}}},
		{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true, Tools: []Tool{{"héllo", free}}},
	}, func(c *Calls) {
		if c.Tools == nil {
			c.Tools = []Tool{{"f", free}}
		}
	})
	// a machine without marks reads none
	if st := hermesCalls(t, true); st.Mark(MarkCall) {
		t.Error("Hermes' calls took a mark")
	}
}

// TestTriggered_MistralNoDeadEnds: along random walks of Mistral v11's
// calls (the marks taken now and then where they may come), every state
// takes some byte or mark or is done, and every done output reads as
// calls (or free text).
func TestTriggered_MistralNoDeadEnds(t *testing.T) {
	walker{
		starts: []Triggered{v11Calls(t)}, walks: 100, steps: 2000, settle: 200, stopOdds: 3,
		move: func(r *rand.Rand, st Triggered) string {
			if r.IntN(10) == 0 {
				if k := r.IntN(2); st.Mark(k) {
					return string(rune(markCall + k))
				}
			}
			return ""
		},
		weight: markWeight,
		stuck: func(st Triggered) (string, bool) {
			if p := st; p.Mark(MarkCall) {
				return "", true
			}
			if st.Mark(MarkArgs) {
				return string(rune(markArgs)), false
			}
			return "", false
		},
		callsIn: v11CallsIn, minCalls: 50, minSeveral: 5,
	}.run(t, 9, 10)
}

// markWeight is triggerWeight but for the marks' stand-ins, which are no
// text here.
func markWeight(_ *Triggered, b byte, step int) int {
	if b == markCall || b == markArgs {
		return 0
	}
	return triggerWeight(b, step)
}

// v3Calls is the runtime's form of Mistral's v3 calls (Calls.Mark,
// Calls.Lead, Calls.Array: [TOOL_CALLS] [{"name": N, "arguments": A}, …]
// where only whitespace has come) with hermesCalls' tools.
func v3Calls(t testing.TB) Triggered {
	return triggerCalls(t, Calls{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Only: true, ArgsKey: "arguments"}, "get_time")
}

// v3CallsIn checks text, a done output of v3Calls (markCall for the
// control token), as the gateway's splitToolCalls reads Mistral's v3
// answers, whose control token the decoder leaves out: the text must
// never hold the token's text; where the token came, the text trimmed is
// a JSON array of call objects, each a tool's name and its arguments
// (get_weather's following its parameters), and nothing after it; it
// returns how many, 0 for free text.
func v3CallsIn(t *testing.T, text string) int {
	s := strings.ReplaceAll(text, string(rune(markCall)), "")
	if strings.Contains(s, "[TOOL_CALLS]") {
		t.Fatalf("%q: the control token's text written", text)
	}
	if !strings.Contains(text, string(rune(markCall))) {
		return 0
	}
	body := strings.TrimSpace(s)
	var parts []map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(body))
	if !strings.HasPrefix(body, "[") || dec.Decode(&parts) != nil || strings.TrimSpace(body[dec.InputOffset():]) != "" || len(parts) == 0 {
		t.Fatalf("%q: not an array of calls", text)
	}
	for _, call := range parts {
		var name string
		args, ok := call["arguments"]
		if json.Unmarshal(call["name"], &name) != nil || !ok || len(call) != 2 || !strings.HasPrefix(string(args), "{") {
			t.Fatalf("%q: not a call", text)
		}
		checkArgs(t, text, name, args, false)
	}
	return len(parts)
}

const (
	v3W = `{"name": "get_weather", "arguments": {"city": "Bern", "days": 3}}`
	v3T = `{"name":"get_time","arguments":{"tz":[1,{}]}}`
)

// TestTriggered_MistralV3: Mistral's v3 calls (Calls.Mark, Lead, Array):
// [TOOL_CALLS] only where ASCII whitespace alone has come, then the array
// of calls and whitespace to the end; the tag's text never written, as
// free text or in the calls' strings; text that begins otherwise free to
// its end.
func TestTriggered_MistralV3(t *testing.T) {
	checkFeeds(t, v3Calls(t), []feedCase{
		{"", true, true},
		{" \n\t\r", true, true},
		{"Hello [1] {\"name\"", true, true},
		{"[{\"name\": 1}]", true, true}, // an array written as text: free (no token)
		{"\x01", true, false},
		{" \n\t\r\x01", true, false},
		{"\x01 [" + v3W + "]", true, true},
		{"\n\x01[" + v3W + " ,\n" + v3T + "]\n", true, true},
		{"\x01[\n" + v3W + "\n]", true, true},
		{"\x01[" + v3W + "," + v3T + "," + v3W + "]", true, true},
		{"x\x01", false, false},      // only at the start
		{"\u00a0\x01", false, false}, // ASCII whitespace only (the stream's)
		{"\v\x01", false, false},
		{"\x01\x01", false, false},
		{"\x01[" + v3W + "]\x01", false, false},
		{"\x01" + v3W, false, false}, // the array
		{"\x01[]", false, false},     // of calls
		{"\x01[" + v3W, true, false}, // closed
		{"\x01[" + v3W + ",]", false, false},
		{"\x01[" + v3W + "] x", false, false},
		{"\x01[" + v3W + "]" + strings.Repeat(" ", MaxSpace), true, true},
		{"\x01[" + v3W + "]" + strings.Repeat(" ", MaxSpace+1), false, false},
		{"\x01" + strings.Repeat(" ", MaxSpace+1), false, false},
		{`` + "\x01[{\"name\": \"get_time\", \"arguments\": {\"k\": \"[TOOL_CALLS\"}}]", true, true},
		{`` + "\x01[{\"name\": \"get_time\", \"arguments\": {\"k\": \"[TOOL_CALLS]", false, false}, // not in a string
		{`` + "\x01[{\"name\": \"get_time\", \"arguments\": {\"[TOOL_CALLS]", false, false},
		{`` + "\x01[{\"name\": \"get_time\", \"arguments\": {\"k\": \"\\u005bTOOL_CALLS]\"}}]", true, true},
		{"\x01[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Bern\"}}]", false, false}, // days required
		{"\x01[{\"name\": \"other\"", false, false},
		{"\x01[{\"arguments\": {}", false, false},
		{"\x01[{\"name\": \"get_time\", \"parameters\": {}", false, false},
		{"Hi [TOOL_CALLS", true, true},
		{"Hi [TOOL_CALLS]", false, false}, // the tag's text: not in free text either
		{" [TOOL_CALLS]", false, false},
		{"\x02", false, false},
	}, v3CallsIn)
	free, _ := CompileSchema([]byte(anyObject))
	checkRefused(t, []Calls{
		{Tag: "[TOOL_CALLS]", Mark: true, Array: true, Only: true}, // Lead
		{Tag: "[TOOL_CALLS]", Lead: true, Array: true, Only: true}, // Mark
		{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true}, // Only
		{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Only: true},  // Array
		{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Bare: true, Only: true},
		{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Only: true, Sep: ","},
		{Tag: "[TOOL_CALLS]", Mark: true, Lead: true, Array: true, Only: true, Pre: " "},
		{Mark: true, Lead: true, Array: true, Only: true},
	}, func(c *Calls) {
		c.ArgsKey, c.Tools = "arguments", []Tool{{"f", free}}
	})
}

// TestTriggered_MistralV3NoDeadEnds: along random walks of Mistral's v3
// calls (most taking the token first), every state takes some byte or
// is done, and every done output reads as calls (or free text).
func TestTriggered_MistralV3NoDeadEnds(t *testing.T) {
	walker{
		starts: []Triggered{v3Calls(t)}, walks: 60, steps: 3000, settle: 300,
		leads: []string{"\x01", " \x01", "\n\n\x01", "\t\r\x01"}, leadTo: tOpen,
		weight: func(st *Triggered, b byte, step int) int {
			if (b == ',' || b == ']') && st.phase == tNext { // after a call: another, as often as not
				return 300
			}
			return markWeight(st, b, step)
		},
		callsIn: v3CallsIn, minCalls: 40, minSeveral: 5,
	}.run(t, 11, 12)
}
