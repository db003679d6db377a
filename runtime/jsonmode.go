package runtime

import (
	"bytes"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/grammar"
)

// seqGrammar constrains a sequence's completion to its response format:
// before each draw the scheduler gives the engine the mask of the tokens
// that may come next, and feeds every token drawn to the state.
type seqGrammar struct {
	c     constraint
	bytes func(id int) []byte
	// wait, when not "", is the text that closes a reasoning model's
	// thoughts: the object begins after it; tail keeps the end of the
	// text so far to find it.
	wait string
	tail []byte
}

// newSeqGrammar returns the constraint of req's response format, nil for
// none. open says a reasoning model's prompt opened its thoughts.
func (r *Runtime) newSeqGrammar(req *nozzle.GenerateRequest, open bool) *seqGrammar {
	if req.ResponseFormat != nozzle.ResponseFormatJSONObject {
		return nil
	}
	g := &seqGrammar{c: &machineConstraint[grammar.JSON, *grammar.JSON]{m: r.jsonMasker()}, bytes: r.codec.TokenBytes}
	if open {
		g.wait = r.info.ReasoningTags.Close
		if g.wait == "" {
			g.wait = nozzle.DefaultThinkTags.Close
		}
	}
	return g
}

// constraint is a machine and its masks, as a sequence uses them.
type constraint interface {
	mask() ([]uint32, bool)
	feed(b byte) bool
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

func (c *machineConstraint[S, P]) mask() ([]uint32, bool) { return c.m.Mask(&c.state) }
func (c *machineConstraint[S, P]) feed(b byte) bool       { return P(&c.state).Feed(b) }
func (c *machineConstraint[S, P]) done() bool             { return P(&c.state).Done() }

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
		r.vocab = grammar.NewVocab(toks, ends)
		r.jsonMask = grammar.NewMasker[grammar.JSON](r.vocab, 0)
	})
	return r.vocab
}

// jsonMasker returns the Masker of JSON objects.
func (r *Runtime) jsonMasker() *grammar.Masker[grammar.JSON, *grammar.JSON] {
	r.grammarVocab()
	return r.jsonMask
}

// mask returns the tokens the next draw may take, nil for any (g nil, or
// the thoughts before the object). feed has made sure some token may.
func (g *seqGrammar) mask() []uint32 {
	if g == nil || g.wait != "" {
		return nil
	}
	allow, _ := g.c.mask()
	return allow
}

// startable reports whether the vocabulary can begin the output.
func (g *seqGrammar) startable() bool {
	_, ok := g.c.mask()
	return ok
}

// feed reads a token drawn; it reports whether the completion must end
// there: the object is complete (or, were the vocabulary to lack the
// bytes it needs next, it cannot go on).
func (g *seqGrammar) feed(tok int32) bool {
	if g == nil {
		return false
	}
	b := g.bytes(int(tok))
	if g.wait != "" {
		g.tail = append(g.tail, b...)
		// (what follows the tag in its token, whitespace as a rule, is
		// before the object)
		if bytes.Contains(g.tail, []byte(g.wait)) {
			g.wait, g.tail = "", nil
		} else if n := len(g.tail) - len(g.wait); n > 0 {
			g.tail = g.tail[n:]
		}
		return false
	}
	for _, c := range b {
		if !g.c.feed(c) {
			// The mask allowed only tokens the state takes: an end
			// token (which has no bytes here) ends the sequence anyway.
			return true
		}
	}
	if g.c.done() {
		return true
	}
	_, ok := g.c.mask() // made now, found in the cache for the next draw
	return !ok
}
