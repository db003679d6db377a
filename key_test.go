package nozzle_test

import (
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle"
)

func TestNewKeySecret(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		s, err := nozzle.NewKeySecret()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, "nz-") || len(s) != 3+43+6 {
			t.Fatalf("bad shape %q (%d)", s, len(s))
		}
		if !nozzle.ValidKeyFormat(s) {
			t.Fatalf("ValidKeyFormat(%q) = false", s)
		}
		if seen[s] {
			t.Fatalf("duplicate key %q", s)
		}
		seen[s] = true
		if d := nozzle.KeyDigest(s); len(d) != 64 {
			t.Fatalf("digest %q", d)
		}
	}
}

func TestValidKeyFormat_Rejects(t *testing.T) {
	s, _ := nozzle.NewKeySecret()
	flip := []byte(s)
	if flip[10] == 'a' {
		flip[10] = 'b'
	} else {
		flip[10] = 'a'
	}
	for _, tt := range []struct{ name, key string }{
		{"Empty", ""},
		{"NoPrefix", "sk-" + s[3:]},
		{"Short", s[:len(s)-1]},
		{"Long", s + "0"},
		{"BadChecksum", string(flip)},
		{"BadChar", s[:20] + "_" + s[21:]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if nozzle.ValidKeyFormat(tt.key) {
				t.Fatalf("ValidKeyFormat(%q) = true", tt.key)
			}
		})
	}
}

func TestKeyDisplayPrefix(t *testing.T) {
	s, _ := nozzle.NewKeySecret()
	p := nozzle.KeyDisplayPrefix(s)
	if !strings.HasPrefix(p, s[:7]) || !strings.HasSuffix(p, s[len(s)-4:]) || strings.Contains(p, s[7:len(s)-4]) {
		t.Fatalf("prefix %q of %q reveals too much or too little", p, s)
	}
}

func FuzzValidKeyFormat(f *testing.F) {
	s, _ := nozzle.NewKeySecret()
	f.Add(s)
	f.Add("nz-")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		nozzle.ValidKeyFormat(in) // must not panic
	})
}
