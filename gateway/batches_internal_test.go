package gateway

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecodeBatchLine: a batch input line either decodes to a frame whose
// every field holds (a custom_id of 1 to 512 bytes, POST, the batch's
// endpoint, an object body that is valid JSON) or is refused with a code
// and a message; it never panics. scanLines hands the same line back
// whether it ends in a newline or the file.
func FuzzDecodeBatchLine(f *testing.F) {
	for _, s := range []string{
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"base","messages":[]}}`,
		`{"custom_id":"","method":"POST","url":"/v1/chat/completions","body":{}}`,
		`{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/completions","body":{}}`,
		`{"custom_id":1,"method":"POST","url":"/v1/chat/completions","body":{}}`,
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":[1]}`,
		`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":null}`,
		`{"custom_id":"a","custom_id":"b","method":"POST","url":"/v1/chat/completions","body":{}}`,
		`{"custom_id":"a"`, `[]`, `null`, "\xff", ` {"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}} `,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, e := decodeBatchLine(raw, "/v1/chat/completions")
		if (l == nil) == (e == nil) {
			t.Fatalf("line %v, error %v", l, e)
		}
		if e != nil {
			if e.Code == "" || e.Message == "" {
				t.Fatalf("error without code or message: %+v", e)
			}
			return
		}
		if l.CustomID == "" || len(l.CustomID) > maxCustomID || l.Method != "POST" || l.URL != "/v1/chat/completions" ||
			len(l.Body) == 0 || l.Body[0] != '{' || !json.Valid(l.Body) {
			t.Fatalf("accepted %q as %+v", raw, l)
		}
		if strings.ContainsAny(string(raw), "\n\r") {
			return
		}
		path := filepath.Join(dir, "in.jsonl")
		for _, content := range [][]byte{raw, append(append([]byte{}, raw...), '\n')} {
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			if err := scanLines(path, 1<<20, func(n int, line []byte) bool {
				got = append(got, append([]byte(nil), line...))
				return true
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("%d lines scanned from %q", len(got), content)
			}
			l2, e2 := decodeBatchLine(got[0], "/v1/chat/completions")
			if e2 != nil || l2.CustomID != l.CustomID {
				t.Fatalf("scanned line decodes to %+v, %+v", l2, e2)
			}
		}
	})
}

// scanLines reports a line longer than its bound as nil, and goes on with
// the next.
func TestScanLinesLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in.jsonl")
	os.WriteFile(path, []byte("a\n"+strings.Repeat("x", 200<<10)+"\n\nb"), 0o600)
	var got []string
	scanLines(path, 100<<10, func(n int, line []byte) bool {
		if line == nil {
			got = append(got, "long")
		} else {
			got = append(got, strings.TrimSpace(string(line)))
		}
		return true
	})
	if strings.Join(got, ",") != "a,long,b" {
		t.Errorf("lines %v", got)
	}
}
