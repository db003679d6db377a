package grammar

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// accepts feeds s to a fresh machine: it reports whether every byte was
// taken and whether the object is then complete.
func accepts(s string) (fed, done bool) {
	var st JSON
	for i := 0; i < len(s); i++ {
		if !st.Feed(s[i]) {
			return false, false
		}
	}
	return true, st.Done()
}

// wantJSON is the language the machine should accept: one JSON object,
// valid UTF-8, no whitespace before or after it, whitespace of spaces and
// newlines in runs of at most MaxSpace bytes, nesting at most MaxDepth
// deep, and numbers of at most MaxIntDigits digits before their point,
// MaxFracDigits after it and MaxExpDigits in their exponent.
func wantJSON(s string) bool {
	if !json.Valid([]byte(s)) || !utf8.ValidString(s) {
		return false
	}
	if s == "" || s[0] != '{' || strings.TrimRight(s, " \t\r\n") != s {
		return false
	}
	run, depth, maxDepth := 0, 0, 0
	inStr, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inStr && esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case inStr && c == '"':
			inStr = false
		case inStr:
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
			maxDepth = max(maxDepth, depth)
		case c == '}' || c == ']':
			depth--
		case c == '-' || isDigit(c):
			limit, part := MaxIntDigits, 0
			for ; i < len(s) && strings.IndexByte("-+.eE0123456789", s[i]) >= 0; i++ {
				switch c := s[i]; {
				case c == '.':
					limit, part = MaxFracDigits, 0
				case c == 'e' || c == 'E':
					limit, part = MaxExpDigits, 0
				case isDigit(c):
					if part++; part > limit {
						return false
					}
				}
			}
			i, run = i-1, 0
			continue
		}
		if !inStr && (c == '\t' || c == '\r') {
			return false // whitespace is spaces and newlines
		}
		if !inStr && (c == ' ' || c == '\n') {
			run++
			if run > MaxSpace {
				return false
			}
		} else {
			run = 0
		}
	}
	return maxDepth <= MaxDepth
}

var jsonCases = []string{
	`{}`, ` {}`, "{\n  \"a\": 1\n}", `{"a":[1,2,{"b":null}],"c":true,"d":false}`,
	`{"n":-0.5e+10}`, `{"n":0}`, `{"n":-0}`, `{"n":10.25E-3}`, `{"n":1e5}`,
	`{"s":"\u00e9\n\t\"\\\/"}`, `{"s":"é中😀"}`, `{"k\u0041":"v"}`, `{"a":[]}`, `{"a":{}}`,
	`{"a":[[[[]]]]}`,
	`{"n":12345678901234567890}`, `{"n":-0.12345678901234567890e-123}`,
	`{"n":123456789012345678901}`, `{"n":0.123456789012345678901}`, `{"n":1e1234}`,
	// refused
	`[]`, `1`, `"s"`, `{} `, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":-}`, `{"a":1e}`,
	`{"a":tru}`, `{"a":True}`, `{a:1}`, `{"a" 1}`, `{"a":1,}`, `{"a":[1,]}`, `{,}`,
	`{"a":"\x"}`, `{"a":"\u12G4"}`, "{\"a\":\"\x01\"}", "{\"a\":\"\xff\"}", "{\"a\":\"\xc0\x80\"}",
	"{\"a\":\"\xed\xa0\x80\"}", `{"a":1}}`, `{"a":[1}`, `{"a":{1:2}}`,
	"{" + strings.Repeat(" ", MaxSpace) + "}", "{" + strings.Repeat(" ", MaxSpace+1) + "}",
	`{"a":` + strings.Repeat("[", MaxDepth-1) + strings.Repeat("]", MaxDepth-1) + `}`,
	`{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`,
}

func TestJSON_Language(t *testing.T) {
	for _, s := range jsonCases {
		fed, done := accepts(s)
		if want := wantJSON(s); (fed && done) != want {
			t.Errorf("%q: fed %v done %v, want accepted %v", s, fed, done, want)
		}
	}
}

// TestJSON_Prefixes: every prefix of an accepted object is taken byte by
// byte (a constrained generation can reach it), and is not done before
// its end.
func TestJSON_Prefixes(t *testing.T) {
	for _, s := range jsonCases {
		if !wantJSON(s) {
			continue
		}
		var st JSON
		for i := 0; i < len(s); i++ {
			if st.Done() {
				t.Errorf("%q: done after %d bytes", s, i)
			}
			if !st.Feed(s[i]) {
				t.Fatalf("%q: byte %d refused", s, i)
			}
		}
	}
}

func FuzzJSON(f *testing.F) {
	for _, s := range jsonCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fed, done := accepts(s)
		if want := wantJSON(s); (fed && done) != want {
			t.Fatalf("%q: fed %v done %v, want accepted %v", s, fed, done, want)
		}
		// a refused byte is one no valid object continues with there
		if !fed {
			var st JSON
			for i := 0; i < len(s); i++ {
				if !st.Feed(s[i]) {
					for _, tail := range []string{`}`, `"}`, `]}`, `1}`, `":1}`} {
						if c := s[:i+1] + tail; wantJSON(c) && !bytes.Contains([]byte(s[:i+1]), []byte("\\u")) {
							t.Fatalf("%q: byte %d refused, yet %q is an object", s, i, c)
						}
					}
					break
				}
			}
		}
	})
}
