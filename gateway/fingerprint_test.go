package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
)

// The fingerprints of these bodies are pinned: a change to the canonical
// form makes every stored answer's retry a 409, so it must come with a new
// storedVersion (and a compatibility path, as legacyFingerprints is).
func TestRequestFingerprintGolden(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"model":"base","messages":[{"role":"user","content":"hi"}]}`,
			"ef5890097f06d56b59bc70a28970198430521e18a1d9ff4386af516714d78a2d"},
		{`{"model":"demo-chat","messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Ünïcode \u2028 \"quoted\""}],"temperature":0.7,"top_p":1,"max_completion_tokens":256,"seed":9007199254740993,"stop":["\n"],"n":2}`,
			"81e4183b58752e104e520c4b523ce4cc8b79125ec2169aaf4688d31fae83549f"},
		{`{"model":"base","prompt":[[1,2,3],[4]],"max_tokens":16,"echo":true,"logprobs":0,"metadata":{"k":null,"n":-1.50e-3,"b":[true,false]}}`,
			"29c1ffd53f187cff32e4fb39a5417f9f34c262f28244bb8c736969fc1eed303c"},
	} {
		fp := requestFingerprint([]byte(tc.body))
		if got := hex.EncodeToString(fp[:]); got != tc.want {
			t.Errorf("fingerprint of %s\n= %s, pinned %s", tc.body, got, tc.want)
		}
	}
}

func TestRequestFingerprint(t *testing.T) {
	same := [][]string{
		// numbers by value
		{`{"model":"m","temperature":1}`, `{"model":"m","temperature":1.0}`, `{"model":"m","temperature":1e0}`,
			`{"model":"m","temperature":10e-1}`, `{"model":"m","temperature":0.1E+1}`, `{"model":"m","temperature":100E-2}`},
		{`{"model":"m","seed":0}`, `{"model":"m","seed":-0}`, `{"model":"m","seed":0.000e12}`},
		{`{"model":"m","top_p":0.5}`, `{"model":"m","top_p":5e-1}`, `{"model":"m","top_p":0.50}`},
		{`{"model":"m","max_tokens":1500}`, `{"model":"m","max_tokens":1.5e3}`, `{"model":"m","max_tokens":15e2}`},
		// order, spacing and escapes
		{`{"model":"m","messages":[{"role":"user","content":"A"}]}`, "{ \"messages\" : [ {\"content\":\"\\u0041\", \"role\":\"user\"} ] ,\n\t\"model\":\"m\" }"},
		// streaming, and members set to null
		{`{"model":"m","stop":null}`, `{"model":"m"}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, `{"stream":false,"model":"m"}`},
	}
	for _, group := range same {
		want := requestFingerprint([]byte(group[0]))
		for _, b := range group[1:] {
			if requestFingerprint([]byte(b)) != want {
				t.Errorf("%s and %s differ", group[0], b)
			}
		}
	}
	differ := [][2]string{
		{`{"model":"m","seed":9007199254740993}`, `{"model":"m","seed":9007199254740992}`},
		{`{"model":"m","temperature":1}`, `{"model":"m","temperature":"1"}`},
		{`{"model":"m","temperature":1}`, `{"model":"m","temperature":-1}`},
		{`{"model":"m","max_tokens":15}`, `{"model":"m","max_tokens":150}`},
		{`{"model":"m","top_p":0.5}`, `{"model":"m","top_p":0.05}`},
		{`{"model":"m","stop":["a","b"]}`, `{"model":"m","stop":["b","a"]}`},
		{`{"model":"m","stop":["ab"]}`, `{"model":"m","stop":["a","b"]}`},
		{`{"model":"m","metadata":{"k":null}}`, `{"model":"m","metadata":{}}`},
		{`{"model":"m","messages":[{"role":"user","content":"a"}]}`, `{"model":"m","messages":[{"role":"user","content":"a "}]}`},
		{`{"model":"m","x":1e9223372036854775807}`, `{"model":"m","x":10e9223372036854775806}`}, // past 2^62: as written
	}
	for _, d := range differ {
		if requestFingerprint([]byte(d[0])) == requestFingerprint([]byte(d[1])) {
			t.Errorf("%s and %s are one request", d[0], d[1])
		}
	}
}

func TestCanonicalNumber(t *testing.T) {
	for n, want := range map[string]string{
		"0": "0", "-0": "0", "0.0": "0", "0e5": "0", "1": "1", "1.0": "1", "10": "1e1", "-10": "-1e1",
		"0.5": "5e-1", "-1.50": "-15e-1", "1500": "15e2", "1.5e3": "15e2", "123.456E+2": "123456e-1",
		"9007199254740993": "9007199254740993", "1e-7": "1e-7", "2e4611686018427387904": "2e4611686018427387904",
		"1e4611686018427387905": "x1e4611686018427387905",
	} {
		if got := string(canonicalNumber(nil, n)); got != want {
			t.Errorf("%s: %s, want %s", n, got, want)
		}
	}
}

// oldFingerprint is the fingerprint earlier releases stored, as they
// computed it, numbers read with UseNumber (digits) or as float64s.
func oldFingerprint(body []byte, digits bool) [sha256.Size]byte {
	d := json.NewDecoder(bytes.NewReader(body))
	if digits {
		d.UseNumber()
	}
	var m map[string]any
	if d.Decode(&m) != nil {
		return sha256.Sum256(body)
	}
	delete(m, "stream")
	delete(m, "stream_options")
	canon, err := json.Marshal(m)
	if err != nil {
		return sha256.Sum256(body)
	}
	return sha256.Sum256(canon)
}

func TestStoredByEarlierReleases(t *testing.T) {
	answer := []byte(`{"object":"chat.completion"}`)
	stored := `{"model":"m","temperature":1.0,"seed":9007199254740993,"messages":[{"role":"user","content":"hi"}]}`
	for _, digits := range []bool{true, false} {
		fp := oldFingerprint([]byte(stored), digits)
		b := append(append([]byte{storedLegacy}, fp[:]...), answer...)
		version, was, got := splitStored(b)
		if version != storedLegacy || *was != fp || !bytes.Equal(got, answer) {
			t.Fatalf("split %d %x %s", version, was, got)
		}
		match := func(body string) bool {
			return sameRequest(version, was, requestFingerprint([]byte(body)), []byte(body))
		}
		// the same request: as sent again, reordered and spaced
		if !match(stored) || !match(`{ "seed":9007199254740993, "messages":[{"content":"hi","role":"user"}], "model":"m", "temperature":1.0, "stream":true }`) {
			t.Errorf("digits %v: the same request refused", digits)
		}
		if match(`{"model":"m","temperature":1.0,"seed":9007199254740993,"messages":[{"role":"user","content":"other"}]}`) {
			t.Errorf("digits %v: another request replayed", digits)
		}
	}
	// an answer stored before fingerprints is taken on trust
	if version, was, got := splitStored(answer); version != 0 || was != nil || !bytes.Equal(got, answer) ||
		!sameRequest(version, was, requestFingerprint([]byte(stored)), []byte(stored)) {
		t.Errorf("unversioned answer")
	}
	// and one stored now needs the canonical fingerprint
	fp := requestFingerprint([]byte(stored))
	version, was, got := splitStored(storedResponse(fp, answer))
	if version != storedVersion || !bytes.Equal(got, answer) || !sameRequest(version, was, requestFingerprint([]byte(`{"model":"m","temperature":1,"seed":9007199254740993,"messages":[{"role":"user","content":"hi"}]}`)), nil) {
		t.Errorf("stored now: %d", version)
	}
	legacy := oldFingerprint([]byte(stored), true)
	if sameRequest(version, was, legacy, []byte(stored)) {
		t.Errorf("a canonical fingerprint matched a legacy one")
	}
}

// BenchmarkRequestFingerprint measures the fingerprint of an idempotent
// request (the OpenAI SDKs send an Idempotency-Key with every request),
// beside the legacy one it replaced.
func BenchmarkRequestFingerprint(b *testing.B) {
	for _, bb := range parseBenchBodies {
		body := []byte(bb.body)
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				requestFingerprint(body)
			}
		})
		b.Run(bb.name+"/legacy", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				oldFingerprint(body, true)
			}
		})
	}
}
