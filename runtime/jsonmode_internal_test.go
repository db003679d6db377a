package runtime

import (
	"slices"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/grammar"
)

// panicky is a constraint whose machine fails.
type panicky struct{}

func (panicky) next() ([]uint32, bool, bool) { panic("mask") }
func (panicky) feed(byte) bool               { panic("feed") }
func (panicky) done() bool                   { return false }
func (panicky) mark(int) bool                { panic("mark") }

// TestSeqGrammar_Recovers: a machine that panics fails its sequence (an
// internal error) instead of the scheduler's goroutine and every other
// sequence with it.
func TestSeqGrammar_Recovers(t *testing.T) {
	bytes := func(id int) []byte { return []byte{byte(id)} }
	g := &seqGrammar{c: panicky{}, bytes: bytes}
	if g.startable() || nozzle.ErrorCode(g.failed()) != nozzle.EINTERNAL {
		t.Fatalf("startable with a failing machine; failed %v", g.failed())
	}
	// the mask of a failed machine allows anything: the sequence ends
	// at its next token (the mask itself runs no machine code: startable
	// and feed look it up)
	if allow := g.mask(); allow != nil || g.failed() == nil {
		t.Fatalf("mask %v, failed %v", allow, g.failed())
	}
	g = &seqGrammar{c: panicky{}, bytes: bytes}
	g.feed('{')
	if nozzle.ErrorCode(g.failed()) != nozzle.EINTERNAL || !g.feed('x') {
		t.Fatalf("feed: failed %v", g.failed())
	}
}

// TestSeqGrammar_AfterThoughts: a reasoning model's thoughts are drawn
// freely; once their closing tag has been fed, the next draw's mask is
// the output's first (only "{" here) and the object's close ends it.
func TestSeqGrammar_AfterThoughts(t *testing.T) {
	vocab := [][]byte{[]byte("{"), []byte("}"), []byte("</th"), []byte("ink>"), []byte("x")}
	v := grammar.NewVocab(vocab, nil)
	g := &seqGrammar{c: &machineConstraint[grammar.JSON, *grammar.JSON]{m: grammar.NewMasker[grammar.JSON](v, 0)},
		bytes: func(id int) []byte { return vocab[id] }, wait: "</think>"}
	for _, tok := range []int32{4, 2} {
		if g.feed(tok) || g.mask() != nil {
			t.Fatalf("token %d: ended, or masked, in the thoughts", tok)
		}
	}
	if g.feed(3) { // the tag's end, split across tokens
		t.Fatal("ended at the thoughts' close")
	}
	if m := g.mask(); len(m) != 1 || m[0] != 1 {
		t.Fatalf("first mask after the thoughts %b, want only {", m)
	}
	if g.feed(0) || !g.feed(1) {
		t.Fatal("the object {} did not end the output")
	}
}

// TestSeqGrammar_OwnThoughts: free text with strict functions' calls on a
// reasoning model whose prompt left its thoughts to it: thoughts it opens
// are drawn freely, a call in them unconstrained (it may close them after
// one), and the calls after them are held to their form; an answer that
// does not open with thoughts is constrained from its first byte.
func TestSeqGrammar_OwnThoughts(t *testing.T) {
	vocab := [][]byte{[]byte("\n"), []byte("<th"), []byte("ink>"), []byte("<tool_call>"), []byte("</think>"), []byte("x"),
		[]byte("\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"), nil}
	v := grammar.NewVocab(vocab, []int{7}) // 7: the end
	obj, err := grammar.CompileSchema([]byte(`{"type":"object"}`))
	if err != nil {
		t.Fatal(err)
	}
	start, err := grammar.Trigger(grammar.Calls{Tag: "<tool_call>", Pre: "\n", Post: "\n</tool_call>", ArgsKey: "arguments", Only: true,
		Tools: []grammar.Tool{{Name: "f", Args: obj}}})
	if err != nil {
		t.Fatal(err)
	}
	m := grammar.NewMasker[grammar.Triggered](v, 0)
	newG := func() *seqGrammar {
		g := &seqGrammar{c: &machineConstraint[grammar.Triggered, *grammar.Triggered]{m: m, state: start},
			bytes: func(id int) []byte { return vocab[id] }, think: &nozzle.DefaultThinkTags}
		if !g.startable() {
			t.Fatal("not startable")
		}
		return g
	}
	g := newG()
	// "\n<think>x<tool_call>x</think>": the thoughts, then a call and the end
	for _, tok := range []int32{0, 1, 2, 5, 3, 5, 4} {
		if g.feed(tok) {
			t.Fatalf("token %d ended the thoughts", tok)
		}
	}
	if mk := g.mask(); mk == nil || !grammar.Allowed(mk, 0) || !grammar.Allowed(mk, 3) {
		t.Fatalf("after the thoughts: mask %b", mk)
	}
	if g.feed(3) || grammar.Allowed(g.mask(), 5) || !grammar.Allowed(g.mask(), 6) || g.feed(6) {
		t.Fatal("the call after the thoughts is not held to its form")
	}
	if mk := g.mask(); grammar.Allowed(mk, 5) || !grammar.Allowed(mk, 3) || !grammar.Allowed(mk, 7) {
		t.Fatalf("after the call: mask %b", mk)
	}
	// no thoughts: "<tool_call>" then only the call
	g = newG()
	if g.feed(3) || g.think != nil || grammar.Allowed(g.mask(), 5) || !grammar.Allowed(g.mask(), 6) {
		t.Fatalf("a call without thoughts: mask %b", g.mask())
	}
}

// TestSeqGrammar_Marks: strict functions' calls in Mistral v11's form,
// whose control tokens have no bytes in the masks' vocabulary: the marks
// ([TOOL_CALLS], [ARGS]) are allowed where the calls take them and fed as
// marks when drawn — in thoughts they are thought —; a reasoning model's
// open tag that is a control token ([THINK]) is allowed while its
// thoughts may yet open.
func TestSeqGrammar_Marks(t *testing.T) {
	const (
		get, obj, think, calls, args, x, unthink, end = 0, 1, 2, 3, 4, 5, 6, 7
	)
	text := [][]byte{[]byte("get"), []byte("{}"), []byte("[THINK]"), []byte("[TOOL_CALLS]"), []byte("[ARGS]"), []byte("x"), []byte("[/THINK]"), nil}
	vocab := [][]byte{text[0], text[1], nil, nil, nil, text[5], nil, nil} // the control tokens: no bytes
	v := grammar.NewVocab(vocab, []int{end}, calls, args)
	anyObj, err := grammar.CompileSchema([]byte(`{"type":"object"}`))
	if err != nil {
		t.Fatal(err)
	}
	start, err := grammar.Trigger(grammar.Calls{Tag: "[TOOL_CALLS]", Mark: true, Bare: true, Only: true,
		Tools: []grammar.Tool{{Name: "get", Args: anyObj}}})
	if err != nil {
		t.Fatal(err)
	}
	m := grammar.NewMasker[grammar.Triggered](v, 0)
	tags := nozzle.MistralThinkTags
	newG := func(reasoning bool) *seqGrammar {
		g := &seqGrammar{c: &machineConstraint[grammar.Triggered, *grammar.Triggered]{m: m, state: start},
			bytes: func(id int) []byte { return text[id] }, marks: []int32{calls, args}}
		if reasoning {
			g.think, g.openTag = &tags, []int32{think}
		}
		if !g.startable() {
			t.Fatal("not startable")
		}
		return g
	}
	allows := func(g *seqGrammar, want ...int) {
		t.Helper()
		mk := g.mask()
		for id := range vocab {
			if grammar.Allowed(mk, id) != slices.Contains(want, id) {
				t.Fatalf("mask %b, want %v", mk, want)
			}
		}
	}
	g := newG(true)
	allows(g, get, obj, think, calls, x, end)
	// [THINK] x [TOOL_CALLS] [/THINK]: thoughts, the mark in them thought
	for _, tok := range []int32{think, x, calls} {
		if g.feed(tok) || g.mask() != nil {
			t.Fatalf("token %d: ended, or masked, in the thoughts", tok)
		}
	}
	if g.feed(unthink) {
		t.Fatal("ended at the thoughts' close")
	}
	allows(g, get, obj, calls, x, end)
	// x [TOOL_CALLS] get [ARGS] {} [TOOL_CALLS] get [ARGS] {}
	for _, step := range []struct {
		tok  int32
		next []int
	}{{x, []int{get, obj, calls, x, end}}, {calls, []int{get}}, {get, []int{args}}, {args, []int{obj}},
		{obj, []int{calls, end}}, {calls, []int{get}}, {get, []int{args}}, {args, []int{obj}}, {obj, []int{calls, end}}} {
		if g.feed(step.tok) {
			t.Fatalf("token %d ended the answer", step.tok)
		}
		allows(g, step.next...)
	}
	// a mark drawn first, where the thoughts may yet open: the call
	g = newG(true)
	if g.feed(calls) || g.think != nil {
		t.Fatal("[TOOL_CALLS] first")
	}
	allows(g, get)
	// no reasoning: no open tag
	allows(newG(false), get, obj, calls, x, end)
}
