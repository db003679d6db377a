package runtime

import (
	"testing"

	"github.com/nozzle-ai/nozzle"
)

// panicky is a constraint whose machine fails.
type panicky struct{}

func (panicky) mask() ([]uint32, bool) { panic("mask") }
func (panicky) feed(byte) bool         { panic("feed") }
func (panicky) done() bool             { return false }
func (panicky) more() bool             { return true }

// TestSeqGrammar_Recovers: a machine that panics fails its sequence (an
// internal error) instead of the scheduler's goroutine and every other
// sequence with it.
func TestSeqGrammar_Recovers(t *testing.T) {
	bytes := func(id int) []byte { return []byte{byte(id)} }
	g := &seqGrammar{c: panicky{}, bytes: bytes}
	if g.startable() || nozzle.ErrorCode(g.failed()) != nozzle.EINTERNAL {
		t.Fatalf("startable with a failing machine; failed %v", g.failed())
	}
	g = &seqGrammar{c: panicky{}, bytes: bytes}
	if allow := g.mask(); allow != nil || g.failed() == nil {
		t.Fatalf("mask %v, failed %v", allow, g.failed())
	}
	g = &seqGrammar{c: panicky{}, bytes: bytes}
	g.feed('{')
	if nozzle.ErrorCode(g.failed()) != nozzle.EINTERNAL || !g.feed('x') {
		t.Fatalf("feed: failed %v", g.failed())
	}
}
