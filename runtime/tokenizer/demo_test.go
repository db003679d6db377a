package tokenizer_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

var update = flag.Bool("update", false, "rewrite testdata/demo (then run testdata/gen/gen.mjs for its golden ids)")

// demoVocab is the vocabulary size asked of the committed demo fixture.
const demoVocab = 1024

func TestWriteDemo(t *testing.T) {
	dir := t.TempDir()
	n, err := tokenizer.WriteDemo(dir, demoVocab)
	must(t, err)
	if n != demoVocab {
		t.Fatalf("vocab size %d, want %d", n, demoVocab)
	}
	tok, err := tokenizer.Load(dir)
	must(t, err)
	if tok.VocabSize() != n {
		t.Fatalf("VocabSize() = %d, WriteDemo said %d", tok.VocabSize(), n)
	}
	if id, ok := tok.BOS(); !ok || tok.TokenText(id) != "<|begin_of_text|>" {
		t.Fatalf("BOS = %d %v", id, ok)
	}
	if eos := tok.EOS(); len(eos) != 1 || tok.TokenText(eos[0]) != "<|im_end|>" {
		t.Fatalf("EOS = %v", eos)
	}
	if got := len(tok.SpecialIDs()); got != 4 {
		t.Fatalf("%d special ids, want 4", got)
	}
	prompt, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "user", Content: "Hello!"}}, true)
	must(t, err)
	if want := "<|begin_of_text|><|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"; prompt != want {
		t.Fatalf("prompt %q, want %q", prompt, want)
	}
	ids := tok.Encode(prompt, tokenizer.EncodeOptions{ParseSpecial: true})
	if tok.TokenText(ids[0]) != "<|begin_of_text|>" || tok.TokenText(ids[1]) != "<|im_start|>" {
		t.Fatalf("ids %v do not start with BOS, <|im_start|>", ids)
	}
	if got := tok.Decode(ids, false); got != prompt {
		t.Fatalf("decode %q, want %q", got, prompt)
	}
	// Deterministic: the same bytes as the committed fixture.
	for _, f := range []string{tokenizer.TokenizerFile, tokenizer.TokenizerConfigFile} {
		got, err := os.ReadFile(filepath.Join(dir, f))
		must(t, err)
		fixture := filepath.Join("testdata", "demo", f)
		if *update {
			must(t, os.MkdirAll(filepath.Dir(fixture), 0o755))
			must(t, os.WriteFile(fixture, got, 0o644))
			continue
		}
		want, err := os.ReadFile(fixture)
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (run go test -run TestWriteDemo -update, then testdata/gen/gen.mjs)", f, fixture)
		}
	}
	t.Run("ErrTooSmall", func(t *testing.T) {
		if _, err := tokenizer.WriteDemo(t.TempDir(), 100); err == nil {
			t.Fatal("want an error")
		}
	})
}

func TestWriteDemo_Sizes(t *testing.T) {
	for _, size := range []int{260, 300, 2048, 100000} {
		n, err := tokenizer.WriteDemo(t.TempDir(), size)
		must(t, err)
		if n > size || (size <= 2048 && n != size) {
			t.Errorf("WriteDemo(%d) = %d", size, n)
		}
		t.Logf("WriteDemo(%d) = %d", size, n)
	}
}
