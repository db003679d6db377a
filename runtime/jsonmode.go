package runtime

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/grammar"
)

// seqGrammar constrains a sequence's completion to its response format:
// before each draw the scheduler gives the engine the mask of the tokens
// that may come next, and feeds every token drawn to the state.
type seqGrammar struct {
	c     constraint
	bytes func(id int) []byte
	// allow is the mask of the next draw, looked up once the state it
	// follows is reached (at the start, after each token fed)
	allow []uint32
	// lead are control tokens drawn, one at a time, before the constraint
	// reads any (a forced call's [TOOL_CALLS]); leadMask allows lead[0]
	lead     []int32
	leadMask []uint32
	// next, when set, makes the constraint that follows the current one
	// once it is done, from the text it read (a call's arguments from its
	// name), after the control token mid
	next func(text []byte) (constraint, error)
	mid  int32
	text []byte
	// marks are the control tokens the constraint reads as marks
	// (grammar.Marker; strict functions' calls in Mistral's formats),
	// marks[k] mark k: drawn, they are fed to it as marks, not text
	marks []int32
	// wait, when not "", is the text that closes a reasoning model's
	// thoughts: the object begins after it; tail keeps the end of the
	// text so far to find it.
	wait string
	tail []byte
	// think, when set, is a reasoning model's tags where its prompt did
	// not open its thoughts and the output is free text (strict
	// functions' calls): the model may open them itself. head is the
	// output while it may yet be the open tag, not fed to the machine;
	// once it is, the machine waits for the thoughts to close (calls
	// are the answer's), once it is not, it reads head.
	think *nozzle.ThinkTags
	head  []byte
	// openTag, with think, is the open tag where it is a control token
	// (Magistral's [THINK]), which the masks' vocabulary lacks: allowed
	// besides the mask while the thoughts may yet open (thinkMask)
	openTag   []int32
	thinkMask []uint32
	// err: the machine failed (a fault of its own, recovered so the
	// scheduler and every other sequence go on); the sequence ends with it
	err error
}

// recover turns a panic of the machine into g.err; deferred itself (the
// builtin recover works only there).
func (g *seqGrammar) recover() {
	if p := recover(); p != nil {
		g.err = nozzle.Errorf(nozzle.EINTERNAL, "The response format's constraint failed.").Wrap(fmt.Errorf("grammar: %v", p))
	}
}

// failed returns the machine's failure, if any.
func (g *seqGrammar) failed() error {
	if g == nil {
		return nil
	}
	return g.err
}

// newSeqGrammar returns the constraint of req's response format, forced
// tool call or strict functions' calls, nil for none. open says a reasoning model's prompt
// opened its thoughts. A schema it cannot enforce is an EINVALID error.
func (r *Runtime) newSeqGrammar(req *nozzle.GenerateRequest, open bool) (*seqGrammar, error) {
	g := &seqGrammar{bytes: r.codec.TokenBytes}
	switch {
	case req.ToolChoice != "" && r.info.ToolFormat == nozzle.ToolFormatMistralV11:
		if !r.info.ToolChoice {
			return nil, nozzle.Errorf(nozzle.EINVALID, "This model's tool calls cannot be forced: use 'tool_choice' \"auto\".").WithParam("tool_choice")
		}
		name, args, err := r.mistralV11Call(req)
		if err != nil {
			return nil, err
		}
		g.c, g.next, g.mid = name, args, int32(r.argsToken)
		g.lead = []int32{int32(r.callsToken)}
	case req.ToolChoice != "":
		c, lead, err := r.toolCallConstraint(req)
		if err != nil {
			return nil, err
		}
		g.c = c
		if lead >= 0 {
			g.lead = []int32{int32(lead)}
		}
	case req.ResponseFormat == "" && len(req.Tools) > 0:
		// calls the model may make: a strict function's held to its form
		c, err := r.strictCallsConstraint(req)
		if c == nil || err != nil {
			return nil, err
		}
		g.c = c
		if r.info.ToolFormat == nozzle.ToolFormatMistral || r.info.ToolFormat == nozzle.ToolFormatMistralV11 {
			g.marks = r.marks()
		}
		if r.info.Reasoning && req.Messages != nil && !open {
			g.think = &r.info.ReasoningTags
			for _, id := range r.keepThoughts {
				if string(r.codec.TokenBytes(id)) == g.think.Open {
					g.openTag = append(g.openTag, int32(id))
				}
			}
		}
	case req.ResponseFormat == "":
		return nil, nil
	case req.ResponseFormat == nozzle.ResponseFormatJSONObject:
		g.c = &machineConstraint[grammar.JSON, *grammar.JSON]{m: r.jsonMasker()}
	case req.ResponseFormat == nozzle.ResponseFormatJSONSchema:
		e, err := r.schemas.get(r.grammarVocab(), req.ResponseSchema, func() (grammar.Schema, error) {
			return grammar.CompileSchema(req.ResponseSchema)
		})
		if err != nil {
			return nil, nozzle.Errorf(nozzle.EINVALID, "Invalid 'response_format.json_schema.schema': %v.", err).WithParam("response_format.json_schema.schema")
		}
		g.c = e.constraint()
	case req.ResponseFormat == nozzle.ResponseFormatRegex:
		var pattern string
		if err := json.Unmarshal(req.ResponseSchema, &pattern); err != nil {
			return nil, nozzle.Errorf(nozzle.EINVALID, "A regex response format needs its pattern as a JSON string.").WithParam("response_format")
		}
		e, err := r.regexes.get(r.grammarVocab(), req.ResponseSchema, func() (grammar.Regex, error) {
			return grammar.CompileRegex(pattern)
		})
		if err != nil {
			return nil, nozzle.Errorf(nozzle.EINVALID, "Invalid regular expression: %v.", err).WithParam("response_format")
		}
		g.c = e.constraint()
	default:
		return nil, nozzle.Errorf(nozzle.EINVALID, "Unknown response format %q.", req.ResponseFormat).WithParam("response_format")
	}
	if open {
		g.wait = r.info.ReasoningTags.Close
		if g.wait == "" {
			g.wait = nozzle.DefaultThinkTags.Close
		}
	}
	if g.wait == "" && !g.startable() {
		return nil, nozzle.Errorf(nozzle.EINVALID, "This model's vocabulary cannot begin an answer in this format.").WithParam("response_format")
	}
	return g, nil
}

// compiledMaskBytes bounds the masks kept for one compiled language.
const compiledMaskBytes = 4 << 20

// compiledCache keeps the languages compiled lately (schemas, forced tool
// calls), by the digest of what they were compiled from, each with the
// Masker of its language: an application sends the same schema or tools
// with request after request, and the masks serve them all.
type compiledCache[S any, P interface {
	*S
	grammar.Machine
}] struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*compiled[S, P]
}

// maxCompiled is how many compiled languages of a kind a runtime keeps.
const maxCompiled = 32

type compiled[S any, P interface {
	*S
	grammar.Machine
}] struct {
	start S
	m     *grammar.Masker[S, P]
}

// constraint is a new sequence's state of the language.
func (c *compiled[S, P]) constraint() constraint {
	return &machineConstraint[S, P]{m: c.m, state: c.start}
}

// get returns the language compiled from src, from the cache or by
// compile now.
func (c *compiledCache[S, P]) get(v *grammar.Vocab, src []byte, compile func() (S, error)) (*compiled[S, P], error) {
	key := sha256.Sum256(src)
	c.mu.Lock()
	e := c.m[key]
	c.mu.Unlock()
	if e != nil {
		return e, nil
	}
	start, err := compile()
	if err != nil {
		return nil, err
	}
	e = &compiled[S, P]{start: start, m: grammar.NewMasker[S, P](v, compiledMaskBytes)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCompiled {
		c.m = make(map[[sha256.Size]byte]*compiled[S, P]) // the ones in use come back
	}
	if old := c.m[key]; old != nil { // compiled meanwhile by another request
		return old, nil
	}
	c.m[key] = e
	return e, nil
}

// constraint is a machine and its masks, as a sequence uses them.
type constraint interface {
	// next is the state's mask (grammar.Masker.Lookup): the tokens that
	// may come, whether any may, and whether any but an end token may
	next() (allow []uint32, any, more bool)
	feed(b byte) bool
	// mark reads control token k of the vocabulary's marks (false where
	// it cannot come, or the machine reads none)
	mark(k int) bool
	done() bool
}

// machineConstraint is the state of a machine S and the Masker of its
// language.
type machineConstraint[S any, P interface {
	*S
	grammar.Machine
}] struct {
	m     *grammar.Masker[S, P]
	state S
}

func (c *machineConstraint[S, P]) next() ([]uint32, bool, bool) { return c.m.Lookup(&c.state) }
func (c *machineConstraint[S, P]) feed(b byte) bool             { return P(&c.state).Feed(b) }
func (c *machineConstraint[S, P]) done() bool                   { return P(&c.state).Done() }
func (c *machineConstraint[S, P]) mark(k int) bool {
	m, ok := any(P(&c.state)).(grammar.Marker)
	return ok && m.Mark(k)
}

// grammarVocab returns the model's vocabulary prepared for masks, made on
// first use: every token's bytes but the special tokens', which never
// come in the output, and the end-of-sequence tokens, which come only
// after it.
func (r *Runtime) grammarVocab() *grammar.Vocab {
	r.vocabOnce.Do(func() {
		toks := make([][]byte, r.info.VocabSize)
		for id := range toks {
			if !r.codec.IsSpecial(id) {
				toks[id] = r.codec.TokenBytes(id)
			}
		}
		var ends []int
		for id := range r.sched.eos {
			ends = append(ends, int(id))
		}
		m := r.marks()
		r.vocab = grammar.NewVocab(toks, ends, int(m[grammar.MarkCall]), int(m[grammar.MarkArgs]))
		r.jsonMask = grammar.NewMasker[grammar.JSON](r.vocab, 0)
	})
	return r.vocab
}

// marks are the control tokens a strict functions' constraint reads as
// marks (grammar.MarkCall, MarkArgs): Mistral's [TOOL_CALLS] and [ARGS],
// -1 where the model has none.
func (r *Runtime) marks() []int32 {
	return []int32{grammar.MarkCall: int32(r.callsToken), grammar.MarkArgs: int32(r.argsToken)}
}

// jsonMasker returns the Masker of JSON objects.
func (r *Runtime) jsonMasker() *grammar.Masker[grammar.JSON, *grammar.JSON] {
	r.grammarVocab()
	return r.jsonMask
}

// mask returns the tokens the next draw may take, nil for any (g nil, or
// the thoughts before the output). startable or feed has made sure some
// token may.
func (g *seqGrammar) mask() []uint32 {
	if g == nil || g.wait != "" || g.err != nil {
		return nil
	}
	if len(g.lead) > 0 {
		if g.leadMask == nil {
			g.leadMask = make([]uint32, len(g.allow))
		}
		clear(g.leadMask)
		g.leadMask[g.lead[0]/32] |= 1 << (g.lead[0] % 32)
		return g.leadMask
	}
	if g.think != nil && len(g.openTag) > 0 && g.allow != nil {
		if g.thinkMask == nil {
			g.thinkMask = make([]uint32, len(g.allow))
		}
		copy(g.thinkMask, g.allow)
		for _, id := range g.openTag {
			g.thinkMask[id/32] |= 1 << (id % 32)
		}
		return g.thinkMask
	}
	return g.allow
}

// startable looks up the first draw's mask; it reports whether the
// vocabulary can begin the output.
func (g *seqGrammar) startable() (ok bool) {
	defer g.recover()
	g.allow, ok, _ = g.c.next()
	return ok && g.err == nil
}

// feed reads a token drawn; it reports whether the completion must end
// there: the object is complete (or, were the vocabulary to lack the
// bytes it needs next, it cannot go on).
func (g *seqGrammar) feed(tok int32) (end bool) {
	if g == nil {
		return false
	}
	if g.err != nil {
		return true
	}
	defer g.recover() // the scheduler ends a failed sequence, whatever end says
	if k := slices.Index(g.marks, tok); k >= 0 && g.wait == "" {
		return g.feedMark(k)
	}
	b := g.bytes(int(tok))
	if g.think != nil {
		g.head = append(g.head, b...)
		n := g.think.OpenEnd(string(g.head))
		if n < 0 {
			return false // maybe the open tag: the start state's mask again
		}
		if b = g.head; n > 0 {
			g.wait = g.think.Close
			if g.wait == "" {
				g.wait = nozzle.DefaultThinkTags.Close
			}
			b = g.head[n:]
		}
		g.think, g.head = nil, nil
	}
	if g.wait != "" {
		g.tail = append(g.tail, b...)
		// (what follows the tag in its token, whitespace as a rule, is
		// before the object)
		if bytes.Contains(g.tail, []byte(g.wait)) {
			g.wait, g.tail = "", nil
			return !g.startable()
		}
		if n := len(g.tail) - len(g.wait); n > 0 {
			g.tail = g.tail[n:]
		}
		return false
	}
	if len(g.lead) > 0 { // the mask allowed the lead token alone
		g.lead = g.lead[1:]
		return false
	}
	for _, c := range b {
		if !g.c.feed(c) {
			// The mask allowed only tokens the state takes: an end
			// token (which has no bytes here) ends the sequence anyway.
			return true
		}
	}
	if g.next != nil {
		g.text = append(g.text, b...)
	}
	return g.advance()
}

// advance takes the constraint's next mask after what it read; it
// reports whether the completion must end there (the machine done, or
// moved on to the forced call's arguments that cannot start), as feed.
func (g *seqGrammar) advance() (end bool) {
	allow, any, more := g.c.next()
	if g.c.done() && !more {
		if g.next == nil {
			return true
		}
		c, err := g.next(g.text)
		if err != nil {
			g.err = nozzle.Errorf(nozzle.EINTERNAL, "The forced call's arguments cannot be constrained.").Wrap(err)
			return true
		}
		g.c, g.next, g.text = c, nil, nil
		g.lead = []int32{g.mid}
		return !g.startable()
	}
	g.allow = allow
	return !any
}

// feedMark reads mark k drawn (a control token, seqGrammar.marks); it
// reports whether the completion must end there, as feed.
func (g *seqGrammar) feedMark(k int) (end bool) {
	if g.think != nil {
		// the thoughts were not opened: what might have been their tag
		// is the answer's text
		head := g.head
		g.think, g.head = nil, nil
		for _, c := range head {
			if !g.c.feed(c) {
				return true
			}
		}
	}
	if !g.c.mark(k) {
		return true // (the mask allowed it only where the state takes it)
	}
	return g.advance()
}
