package grammar

import (
	"fmt"
	"strings"
	"sync"
)

// formatPatterns are the string formats a Schema reads through an
// automaton: anchored ECMA-262 patterns that accept a subset of what the
// format allows (every string they accept is valid, not every valid
// string is accepted):
//   - "email": a dot-atom local part, '@', then a domain of two to four
//     labels (as "hostname" has them);
//   - "hostname": one to four labels of letters, digits and inner hyphens,
//     each of 1 to 62 characters (so that the name stays within 253);
//   - "ipv4": a dotted quad without leading zeros;
//   - "ipv6": RFC 4291's text forms (with "::" and a dotted-quad tail), no
//     zone;
//   - "duration": RFC 3339's ISO 8601 duration (P1Y2M3DT4H5M6S, PT1M,
//     P2W, ...).
var formatPatterns = map[string]string{
	"email":    "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@" + hostLabel + "(?:\\." + hostLabel + "){1,3}",
	"hostname": hostLabel + "(?:\\." + hostLabel + "){0,3}",
	"ipv4":     ipv4Pattern,
	"ipv6":     ipv6Pattern(),
	"duration": "P(?:" + durDate + "(?:" + durTime + ")?|" + durTime + "|[0-9]+W)",
}

const (
	hostLabel   = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,60}[A-Za-z0-9])?"
	octet       = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
	ipv4Pattern = octet + "(?:\\." + octet + "){3}"
	durDate     = "[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?"
	durTime     = "T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
)

// ipv6Pattern is RFC 3986's IPv6address.
func ipv6Pattern() string {
	const h16 = "[0-9A-Fa-f]{1,4}"
	ls32 := "(?:" + h16 + ":" + h16 + "|" + ipv4Pattern + ")"
	groups := func(n int) string { // n × (h16 ":")
		return strings.Repeat(h16+":", n)
	}
	before := func(n int) string { // [ *n( h16 ":" ) h16 ]
		if n < 0 {
			return ""
		}
		return fmt.Sprintf("(?:(?:%s:){0,%d}%s)?", h16, n, h16)
	}
	alts := []string{
		groups(6) + ls32,
		"::" + groups(5) + ls32,
		before(0) + "::" + groups(4) + ls32,
		before(1) + "::" + groups(3) + ls32,
		before(2) + "::" + groups(2) + ls32,
		before(3) + "::" + groups(1) + ls32,
		before(4) + "::" + ls32,
		before(5) + "::" + h16,
		before(6) + "::",
	}
	return "(?:" + strings.Join(alts, "|") + ")"
}

// formatDFAs caches the automata of formats without length limits.
var formatDFAs sync.Map // name → *dfa

// formatDFA is the automaton of a format's pattern with the length limits.
func formatDFA(name, pattern string, minLen, maxLen int) (*dfa, error) {
	plain := minLen == 0 && maxLen < 0
	if plain {
		if d, ok := formatDFAs.Load(name); ok {
			return d.(*dfa), nil
		}
	}
	d, err := compilePattern(pattern, true, minLen, maxLen, MaxPatternStates)
	if err != nil {
		return nil, err
	}
	if plain {
		formatDFAs.Store(name, d)
	}
	return d, nil
}
