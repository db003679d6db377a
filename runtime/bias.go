package runtime

import (
	"slices"

	"github.com/nozzle-ai/nozzle"
)

// seqBias is a sequence's logit adjustments, one value per token as the
// engine takes them (engine.Seq.BiasTokens): its request's logit_bias and,
// for each token its completion has produced, the presence and frequency
// penalties. Values change only when a token comes, so a step copies the
// two slices and computes nothing.
type seqBias struct {
	presence, frequency float32
	tok                 []int32
	val                 []float32
	bias                []float32       // the request's logit_bias of tok[i], 0 where it named none
	count               []int32         // how often the completion produced tok[i]
	at                  map[int32]int32 // token → its index in tok
}

// newSeqBias returns the adjustments of req, or nil when it asks for none.
func newSeqBias(req *nozzle.GenerateRequest) *seqBias {
	if len(req.LogitBias) == 0 && req.PresencePenalty == 0 && req.FrequencyPenalty == 0 {
		return nil
	}
	b := &seqBias{presence: float32(req.PresencePenalty), frequency: float32(req.FrequencyPenalty),
		at: make(map[int32]int32, len(req.LogitBias))}
	ids := make([]int, 0, len(req.LogitBias))
	for id := range req.LogitBias {
		ids = append(ids, id)
	}
	slices.Sort(ids) // the same request gives the engine the same list
	for _, id := range ids {
		b.entry(int32(id), float32(req.LogitBias[id]))
	}
	return b
}

func (b *seqBias) entry(tok int32, bias float32) int32 {
	i := int32(len(b.tok))
	b.at[tok] = i
	b.tok = append(b.tok, tok)
	b.val = append(b.val, bias)
	b.bias = append(b.bias, bias)
	b.count = append(b.count, 0)
	return i
}

// generated counts a token the completion produced.
func (b *seqBias) generated(tok int32) {
	if b == nil || b.presence == 0 && b.frequency == 0 {
		return
	}
	i, ok := b.at[tok]
	if !ok {
		i = b.entry(tok, 0)
	}
	b.count[i]++
	b.val[i] = b.bias[i] - b.presence - b.frequency*float32(b.count[i])
}

// tokens and values are the adjustments for the engine (nil for none).
func (b *seqBias) tokens() []int32 {
	if b == nil {
		return nil
	}
	return b.tok
}

func (b *seqBias) values() []float32 {
	if b == nil {
		return nil
	}
	return b.val
}

// checkBias validates a request's logit_bias and penalties against a
// vocabulary of vocab tokens.
func checkBias(req *nozzle.GenerateRequest, vocab int) error {
	switch {
	case !finiteIn(req.PresencePenalty, -2, 2):
		return nozzle.Errorf(nozzle.EINVALID, "presence_penalty must be between -2 and 2.").WithParam("presence_penalty")
	case !finiteIn(req.FrequencyPenalty, -2, 2):
		return nozzle.Errorf(nozzle.EINVALID, "frequency_penalty must be between -2 and 2.").WithParam("frequency_penalty")
	}
	for id, v := range req.LogitBias {
		if id < 0 || id >= vocab {
			return nozzle.Errorf(nozzle.EINVALID, "Invalid key in 'logit_bias': %d is not a token id of this model (0 to %d).", id, vocab-1).WithParam("logit_bias")
		}
		if !finiteIn(v, -100, 100) {
			return nozzle.Errorf(nozzle.EINVALID, "Invalid value for 'logit_bias' of token %d: %v; values must be between -100 and 100.", id, v).WithParam("logit_bias")
		}
	}
	return nil
}
