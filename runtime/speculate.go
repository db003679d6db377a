package runtime

// Speculative decoding by prompt lookup (n-gram drafts): a greedy
// sequence's next tokens are guessed by finding its last few tokens
// earlier in its own context (prompt and generated tokens) and proposing
// what followed them there. The engine verifies the guesses in the
// sequence's step without any change to its ABI: the step carries the
// last accepted token and the k drafts, scores each of them (the top
// token of a scored row is the greedy choice after it) and samples the
// last one (the bonus token when every draft holds). See the
// "Speculative decoding" section of docs/ARCHITECTURE.md.

// specMaxNgram is the longest n-gram looked up; shorter ones are tried
// down to one token when it is not found.
const specMaxNgram = 3

// specMaxBackoff bounds, in steps, how long a sequence whose drafts keep
// failing goes without drafting before it tries again.
const specMaxBackoff = 32

// draftTokens appends to dst up to k tokens proposed to follow tokens: the
// tokens that followed the most recent earlier occurrence of its last n
// tokens, for the largest n in maxN..1 that occurs. It appends nothing
// when no suffix recurs.
func draftTokens(dst, tokens []int32, maxN, k int) []int32 {
	if k <= 0 {
		return dst
	}
	L := len(tokens)
	for n := min(maxN, L-1); n >= 1; n-- {
		suffix := tokens[L-n:]
		// the most recent occurrence that starts before the suffix itself
	search:
		for i := L - n - 1; i >= 0; i-- {
			for j := range n {
				if tokens[i+j] != suffix[j] {
					continue search
				}
			}
			end := min(i+n+k, L)
			return append(dst, tokens[i+n:end]...)
		}
	}
	return dst
}

// specEligible reports whether q may decode speculatively: greedy, with
// nothing that reads or changes its logits in ways a scored row does not
// (scored rows are never adjusted nor masked) and no matcher fed token by
// token.
func specEligible(q *sequence) bool {
	return q.temperature == 0 && q.bias == nil && q.gram == nil && q.call == nil && !q.promptOnly
}

// specState is a sequence's speculation history.
type specState struct {
	fails int    // drafting steps in a row with no draft accepted
	until uint64 // no drafting before this scheduler tick
}

// record notes a drafting step's outcome and sets the backoff: after f
// failed steps in a row the sequence waits 2^(f-1) steps (at most
// specMaxBackoff) before drafting again.
func (sp *specState) record(accepted int, tick uint64) {
	if accepted > 0 {
		sp.fails, sp.until = 0, 0
		return
	}
	sp.fails++
	sp.until = tick + uint64(min(1<<min(sp.fails-1, 10), specMaxBackoff))
}
