package engine

import (
	"fmt"
	"math"
	"slices"
)

// Batch is one engine step, field for field the ABI's nz_batch (see
// csrc/include/nozzle_engine.h). Sequence i brings SeqLen[i] new tokens
// (a prefill chunk, or 1 when decoding) starting at position SeqPos[i];
// its KV cache lives in the blocks BlockTable[i*MaxBlocks:...]; SeqSlot[i]
// is its adapter slot (-1 for none); when SeqSample[i] is 1 the engine
// samples a token from its last new token's logits and fills the outputs
// for it. Reset and Add reuse the slices' capacity.
type Batch struct {
	Tokens      []int32
	SeqLen      []int32
	SeqPos      []int32
	SeqSlot     []int32
	SeqSample   []int32
	BlockTable  []int32 // len(SeqLen) rows of MaxBlocks entries
	MaxBlocks   int
	Temperature []float32
	TopP        []float32
	TopK        []int32
	Seed        []uint64
	// NTop is how many most likely tokens to report per sampled sequence
	// (at most MaxTop).
	NTop int
	// Logits asks for each sampled sequence's raw logits in OutLogits
	// (tests and tooling; serving leaves it false).
	Logits bool
	// ScoreTarget, empty or one entry per token, asks for the
	// log-probability of ScoreTarget[t] (the token that follows token t)
	// under token t's logits, and t's NTop most likely tokens; -1 scores
	// nothing. Every sampled sequence and every scored token takes a row
	// of logits: a step holds at most the engine's MaxBatchSeqs.
	ScoreTarget []int32
	// BiasOff, BiasToken and BiasValue are the logit adjustments:
	// sampled sequence i has BiasValue[j] added to the logit of token
	// BiasToken[j] for j in BiasOff[i]:BiasOff[i+1] before anything reads
	// its logits (the draw, logprobs, OutLogits). Add keeps them; with no
	// adjustment in the batch the engine is given none.
	BiasOff   []int32
	BiasToken []int32
	BiasValue []float32
	// SeqAllow, empty or one entry per sequence, is the row of Allow that
	// masks sequence i (-1: none); a sampled sequence with a row draws only
	// the tokens whose bits are set in it (bit t%32 of word t/32 of the
	// row's (vocab+31)/32 words), every other token's logit -inf. Add
	// keeps them, one row per distinct mask.
	SeqAllow []int32
	Allow    []uint32
	allowSrc []*uint32 // the first word of each row's mask as given to Add

	// Outputs, sized by Step; entries of sequences not sampled are left as
	// they were.
	OutToken      []int32
	OutLogprob    []float32
	OutTopToken   []int32   // [i*NTop:(i+1)*NTop]
	OutTopLogprob []float32 // [i*NTop:(i+1)*NTop]
	OutLogits     []float32 // [i*VocabSize:(i+1)*VocabSize]
	// Per token, for the tokens scored (others left as they were).
	OutScoreLogprob    []float32
	OutScoreTopToken   []int32   // [t*NTop:(t+1)*NTop]
	OutScoreTopLogprob []float32 // [t*NTop:(t+1)*NTop]
}

// Seq is one sequence's part of a step, for Batch.Add.
type Seq struct {
	// Tokens are the new tokens; Pos is the position of the first.
	Tokens []int32
	Pos    int
	// Slot is the adapter slot, -1 for the base model.
	Slot int
	// Blocks is the sequence's block table (at least
	// ceil((Pos+len(Tokens))/KVBlockSize) entries, at most MaxBlocks).
	Blocks []int32
	// Sample asks for a sampled token. Temperature 0 is greedy; TopK 0
	// and TopP 1 (or 0) disable those filters; Seed seeds the draw.
	Sample      bool
	Temperature float32
	TopP        float32
	TopK        int
	Seed        uint64
	// Score, nil or one entry per token, is the token to score after each
	// of Tokens, -1 for none (see Batch.ScoreTarget).
	Score []int32
	// BiasTokens and BiasValues, of one length, adjust the logits a
	// sampled token is drawn from (Batch.BiasOff): distinct tokens,
	// finite values.
	BiasTokens []int32
	BiasValues []float32
	// Allow, when not nil, masks the tokens a sampled token is drawn from
	// (Batch.SeqAllow): (vocab+31)/32 words, at least one allowed token.
	// Sequences given the same slice share a row.
	Allow []uint32
}

// Reset empties the batch for a new step.
func (b *Batch) Reset(maxBlocks, nTop int) {
	b.Tokens = b.Tokens[:0]
	b.SeqLen = b.SeqLen[:0]
	b.SeqPos = b.SeqPos[:0]
	b.SeqSlot = b.SeqSlot[:0]
	b.SeqSample = b.SeqSample[:0]
	b.BlockTable = b.BlockTable[:0]
	b.Temperature = b.Temperature[:0]
	b.TopP = b.TopP[:0]
	b.TopK = b.TopK[:0]
	b.Seed = b.Seed[:0]
	b.ScoreTarget = b.ScoreTarget[:0]
	b.BiasOff = append(b.BiasOff[:0], 0)
	b.BiasToken = b.BiasToken[:0]
	b.BiasValue = b.BiasValue[:0]
	b.SeqAllow = b.SeqAllow[:0]
	b.Allow = b.Allow[:0]
	clear(b.allowSrc)
	b.allowSrc = b.allowSrc[:0]
	b.MaxBlocks = maxBlocks
	b.NTop = nTop
}

// Add appends a sequence; its block table row is padded with zeros to
// MaxBlocks entries.
func (b *Batch) Add(s Seq) {
	if s.Score != nil || len(b.ScoreTarget) > 0 {
		for len(b.ScoreTarget) < len(b.Tokens) {
			b.ScoreTarget = append(b.ScoreTarget, -1)
		}
		if s.Score != nil {
			b.ScoreTarget = append(b.ScoreTarget, s.Score[:len(s.Tokens)]...)
		} else {
			for range s.Tokens {
				b.ScoreTarget = append(b.ScoreTarget, -1)
			}
		}
	}
	b.Tokens = append(b.Tokens, s.Tokens...)
	b.SeqLen = append(b.SeqLen, int32(len(s.Tokens)))
	b.SeqPos = append(b.SeqPos, int32(s.Pos))
	b.SeqSlot = append(b.SeqSlot, int32(s.Slot))
	sample := int32(0)
	if s.Sample {
		sample = 1
	}
	b.SeqSample = append(b.SeqSample, sample)
	row := len(b.BlockTable)
	b.BlockTable = append(b.BlockTable, s.Blocks[:min(len(s.Blocks), b.MaxBlocks)]...)
	for len(b.BlockTable) < row+b.MaxBlocks {
		b.BlockTable = append(b.BlockTable, 0)
	}
	topP := s.TopP
	if topP == 0 {
		topP = 1
	}
	b.Temperature = append(b.Temperature, s.Temperature)
	b.TopP = append(b.TopP, topP)
	b.TopK = append(b.TopK, int32(s.TopK))
	b.Seed = append(b.Seed, s.Seed)
	if len(b.BiasOff) == 0 { // a batch never Reset
		b.BiasOff = append(b.BiasOff, 0)
	}
	b.BiasToken = append(b.BiasToken, s.BiasTokens...)
	b.BiasValue = append(b.BiasValue, s.BiasValues...)
	b.BiasOff = append(b.BiasOff, int32(len(b.BiasToken)))
	if s.Allow != nil || len(b.SeqAllow) > 0 {
		for len(b.SeqAllow) < len(b.SeqLen)-1 {
			b.SeqAllow = append(b.SeqAllow, -1)
		}
		row := int32(-1)
		if len(s.Allow) > 0 {
			row = int32(slices.Index(b.allowSrc, &s.Allow[0]))
			if row < 0 {
				row = int32(len(b.allowSrc))
				b.allowSrc = append(b.allowSrc, &s.Allow[0])
				b.Allow = append(b.Allow, s.Allow...)
			}
		}
		b.SeqAllow = append(b.SeqAllow, row)
	}
}

// Len returns the number of sequences.
func (b *Batch) Len() int { return len(b.SeqLen) }

// SizeOutputs sizes the output slices for the sequences added, reusing
// their capacity (OutLogits only when Logits is set, vocab entries per
// sequence). Step calls it; a stand-in engine in tests does too.
func (b *Batch) SizeOutputs(vocab int) {
	n := len(b.SeqLen)
	b.OutToken = resize(b.OutToken, n)
	b.OutLogprob = resize(b.OutLogprob, n)
	b.OutTopToken = resize(b.OutTopToken, n*b.NTop)
	b.OutTopLogprob = resize(b.OutTopLogprob, n*b.NTop)
	if b.Logits {
		b.OutLogits = resize(b.OutLogits, n*vocab)
	}
	if len(b.ScoreTarget) > 0 {
		t := len(b.Tokens)
		b.OutScoreLogprob = resize(b.OutScoreLogprob, t)
		b.OutScoreTopToken = resize(b.OutScoreTopToken, t*b.NTop)
		b.OutScoreTopLogprob = resize(b.OutScoreTopLogprob, t*b.NTop)
	}
}

// check verifies what the C side cannot: that every array is as long as
// the counts say, so the library never reads or writes past a slice.
// Semantic checks (token ids, positions, slots, blocks) are the engine's.
func (b *Batch) check(vocab int) error {
	n := len(b.SeqLen)
	if n == 0 {
		return fmt.Errorf("batch has no sequences")
	}
	lens := [...]struct {
		name string
		n    int
	}{{"SeqPos", len(b.SeqPos)}, {"SeqSlot", len(b.SeqSlot)}, {"SeqSample", len(b.SeqSample)},
		{"Temperature", len(b.Temperature)}, {"TopP", len(b.TopP)}, {"TopK", len(b.TopK)}, {"Seed", len(b.Seed)}}
	for _, l := range lens {
		if l.n != n {
			return fmt.Errorf("batch has %d sequences but %d %s entries", n, l.n, l.name)
		}
	}
	if len(b.SeqAllow) > 0 {
		if len(b.SeqAllow) != n {
			return fmt.Errorf("batch has %d sequences but %d SeqAllow entries", n, len(b.SeqAllow))
		}
		if words := (vocab + 31) / 32; len(b.Allow)%words != 0 {
			return fmt.Errorf("Allow has %d words, not a whole number of %d-word rows", len(b.Allow), words)
		}
	}
	if nb := len(b.BiasToken); nb > 0 {
		if len(b.BiasOff) != n+1 || len(b.BiasValue) != nb || b.BiasOff[n] != int32(nb) {
			return fmt.Errorf("batch has %d sequences and %d logit adjustments (%d values) but %d BiasOff entries ending at %d",
				n, nb, len(b.BiasValue), len(b.BiasOff), b.BiasOff[len(b.BiasOff)-1])
		}
	}
	var total int64
	for _, l := range b.SeqLen {
		total += int64(l)
	}
	if total != int64(len(b.Tokens)) {
		return fmt.Errorf("sequence lengths sum to %d, but the batch has %d tokens", total, len(b.Tokens))
	}
	if b.MaxBlocks < 0 || int64(b.MaxBlocks)*int64(n) > math.MaxInt32 || len(b.BlockTable) != n*b.MaxBlocks {
		return fmt.Errorf("block table has %d entries, want %d sequences × %d", len(b.BlockTable), n, b.MaxBlocks)
	}
	if len(b.ScoreTarget) != 0 && len(b.ScoreTarget) != len(b.Tokens) {
		return fmt.Errorf("batch has %d tokens but %d ScoreTarget entries", len(b.Tokens), len(b.ScoreTarget))
	}
	if b.NTop < 0 || b.NTop > MaxTop {
		return fmt.Errorf("n_top %d is not in 0..%d", b.NTop, MaxTop)
	}
	return nil
}
