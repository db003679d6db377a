package gateway

// SplitToolCalls is splitToolCalls, for the external tests.
var SplitToolCalls = splitToolCalls

// SplitThoughts is splitThoughts, for the external tests.
var SplitThoughts = splitThoughts

// StreamThoughts parts a completion given in pieces as a stream does:
// the thoughts and the answer put together, and each piece given out.
func StreamThoughts(pieces []string, open bool) (thought, answer string, out [][2]string) {
	s := newThoughtSplit(open)
	for _, p := range pieces {
		t, a := s.add(p)
		thought, answer = thought+t, answer+a
		out = append(out, [2]string{t, a})
	}
	t, a := s.end()
	out = append(out, [2]string{t, a})
	return thought + t, answer + a, out
}

// FormatUSD is formatUSD (how the console shows amounts), for the
// external tests.
var FormatUSD = formatUSD

// FormatSeconds is formatSeconds, for the external tests.
var FormatSeconds = formatSeconds

// OldFingerprint is the request fingerprint of earlier releases.
var OldFingerprint = oldFingerprint

// FormatInt is formatInt (how the console shows counts), for the
// external tests.
var FormatInt = formatInt
