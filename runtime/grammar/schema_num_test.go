package grammar

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// gridSchemas have bounds of at most 2 fraction digits within ±1000.
var gridSchemas = []string{
	`{"type":"integer","minimum":-15,"maximum":120}`,
	`{"type":"integer","exclusiveMinimum":-1.5,"exclusiveMaximum":99.5}`,
	`{"type":"number","minimum":-2.5,"exclusiveMaximum":0.75}`,
	`{"type":"number","exclusiveMinimum":0,"maximum":10}`,
	`{"type":"number","minimum":0.05,"maximum":0.05}`,
	`{"type":"number","exclusiveMinimum":-100.01,"exclusiveMaximum":-99.99}`,
	`{"type":"integer","maximum":-7}`,
	`{"type":"number","minimum":12.5}`,
	`{"type":["number","null"],"maximum":-0.01}`,
	`{"type":"integer","minimum":0,"exclusiveMinimum":true,"maximum":500,"exclusiveMaximum":true}`,
	`{"type":"number","minimum":-1e2,"maximum":1E+2}`,
	`{"type":"integer","multipleOf":7,"minimum":-50,"maximum":60}`,
	`{"type":"integer","multipleOf":25,"exclusiveMinimum":-100}`,
}

// TestSchemaNum_Grid: every number -130.99 to 130.99 with up to 2
// fraction digits (and some up to ±999.99) is accepted exactly when it is in range (compared as
// rationals by the test's validator) and, for an integer, has no
// fraction.
func TestSchemaNum_Grid(t *testing.T) {
	for _, schema := range gridSchemas {
		start, err := CompileSchema([]byte(schema))
		if err != nil {
			t.Fatalf("%s: %v", schema, err)
		}
		v, _ := decodeNum(schema)
		sc := v.(map[string]any)
		integer := !strings.Contains(schema, `"number"`)
		accepted := 0
		for _, sign := range []string{"", "-"} {
			for i := range 1000 {
				if i > 130 && i%97 != 0 && i != 499 && i != 500 && i != 501 {
					continue
				}
				for f := -1; f < 110; f++ {
					text := sign + fmt.Sprint(i)
					switch {
					case f >= 100:
						text += fmt.Sprintf(".%d", f-100)
					case f >= 0:
						text += fmt.Sprintf(".%02d", f)
					}
					want := inBounds(text, sc) && !(integer && f >= 0)
					fed, done := feedSchema(start, text)
					if fed && done != want || !fed && want {
						t.Fatalf("%s\n  %q: fed %v done %v, want accepted %v", schema, text, fed, done, want)
					}
					if want {
						accepted++
					}
				}
			}
		}
		if accepted == 0 {
			t.Errorf("%s: nothing accepted", schema)
		}
	}
}

// TestSchemaNum_NoDeadEnds: from every prefix of up to 4 bytes a bounded
// number accepts, random walks over the bytes it takes always reach a
// number that may end, in range; and states with one key take the same
// bytes.
func TestSchemaNum_NoDeadEnds(t *testing.T) {
	const alphabet = "-0123456789.eE+,] "
	schemas := append([]string{tightSchema,
		`{"type":"number","exclusiveMinimum":0.999999999999999998,"exclusiveMaximum":1.000000000000000001}`,
		`{"type":"number","exclusiveMaximum":1,"minimum":0.999999999999999999}`,
		`{"type":"number","minimum":-999999999999999999.999999999999999999,"maximum":-999999999999999999.999999999999999998}`,
		`{"type":"integer","minimum":999999999999999998}`,
		`{"type":"number","minimum":100000000000000000.5,"maximum":100000000000000001}`,
		`{"type":"integer","minimum":-1000,"maximum":-999}`,
		`{"type":"integer","multipleOf":999999999999999999}`,
		`{"type":"integer","multipleOf":1000,"minimum":1,"maximum":999999999999999999}`,
		`{"type":"integer","multipleOf":3,"minimum":100000000000000000}`,
		`{"type":"number","exclusiveMinimum":-0.000000000000000001,"exclusiveMaximum":0.000000000000000001}`,
		`{"type":"array","items":{"type":"number","minimum":0.5,"maximum":0.5}}`,
	}, gridSchemas...)
	r := rand.New(rand.NewPCG(5, 6))
	for _, schema := range schemas {
		start, err := CompileSchema([]byte(schema))
		if err != nil {
			t.Fatalf("%s: %v", schema, err)
		}
		seen := map[string]string{}
		behaviour := func(st Schema) (string, string) {
			var took []byte
			for k := 0; k < len(alphabet); k++ {
				p := st
				if p.Feed(alphabet[k]) {
					took = append(took, alphabet[k])
				}
			}
			if st.Done() {
				took = append(took, '$')
			}
			return string(st.Key(nil)), string(took)
		}
		check := func(st Schema, out []byte) string {
			k, b := behaviour(st)
			if prev, ok := seen[k]; ok && prev != b {
				t.Fatalf("%s\n  after %q: a key seen taking %q takes %q", schema, out, prev, b)
			}
			seen[k] = b
			return b
		}
		prefixes := []string{""}
		if strings.HasPrefix(schema, `{"type":"array"`) {
			prefixes = []string{"[", "[0.5,"}
		}
		for len(prefixes) > 0 {
			pre := prefixes[0]
			prefixes = prefixes[1:]
			st := start
			for i := 0; i < len(pre); i++ {
				st.Feed(pre[i])
			}
			took := check(st, []byte(pre))
			if len(pre) < 4 {
				for _, b := range []byte(strings.TrimSuffix(took, "$")) {
					prefixes = append(prefixes, pre+string(b))
				}
			}
			for range 4 {
				w, out := st, []byte(pre)
				for !w.Done() || r.IntN(3) != 0 {
					took := strings.TrimSuffix(check(w, out), "$")
					if len(took) == 0 {
						if w.Done() {
							break
						}
						t.Fatalf("%s\n  dead end after %q", schema, out)
					}
					if len(out) > 120 {
						t.Fatalf("%s\n  no end after %q", schema, out)
					}
					b := took[r.IntN(len(took))]
					if !w.Feed(b) {
						t.Fatalf("%s\n  %q refused after %q", schema, b, out)
					}
					out = append(out, b)
				}
				if w.Done() && !validJSONFor(t, schema, string(out)) {
					t.Fatalf("%s\n  %q: done, yet not valid", schema, out)
				}
			}
		}
	}
}

// TestSchemaNum_Key: a bounded number's digits are in the key; another
// value's key is as it was without bounds.
func TestSchemaNum_Key(t *testing.T) {
	b, _ := CompileSchema([]byte(`{"type":"array","items":{"type":"integer","maximum":50}}`))
	u, _ := CompileSchema([]byte(`{"type":"array","items":{"type":"integer"}}`))
	key := func(s Schema, text string) []byte {
		for i := 0; i < len(text); i++ {
			if !s.Feed(text[i]) {
				t.Fatalf("%q refused", text)
			}
		}
		return s.Key(nil)
	}
	if bytes.Equal(key(b, "[1"), key(b, "[2")) {
		t.Error("[1 and [2 have one key with a bound")
	}
	if k := key(b, "[12,"); !bytes.Equal(k, key(u, "[12,")) || !bytes.Equal(k, key(b, "[3,")) {
		t.Error("after a bounded number the key differs")
	}
	if !bytes.Equal(key(u, "[1"), key(u, "[2")) {
		t.Error("[1 and [2 have two keys without a bound")
	}
}
