package tokenizer_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

// models are the real tokenizers under testdata/models.
var models = []string{"llama2", "llama3", "qwen3", "gemma2", "gemma3", "gpt4o"}

var (
	loadMu sync.Mutex
	loaded = map[string]*tokenizer.Tokenizer{}
)

// readGzip reads a gzip-compressed file.
func readGzip(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// modelFiles returns the tokenizer.json and tokenizer_config.json of a test
// model.
func modelFiles(tb testing.TB, name string) (tj, cj []byte) {
	tb.Helper()
	dir := filepath.Join("testdata", "models", name)
	if name == "demo" {
		dir = filepath.Join("testdata", "demo")
		var err error
		if tj, err = os.ReadFile(filepath.Join(dir, "tokenizer.json")); err != nil {
			tb.Fatal(err)
		}
	} else {
		tj = readGzip(tb, filepath.Join(dir, "tokenizer.json.gz"))
	}
	cfg := filepath.Join(dir, "tokenizer_config.json")
	if _, err := os.Stat(cfg + ".gz"); err == nil {
		// Gemma 3's lists its 6,415 added tokens again (1.1 MB).
		return tj, readGzip(tb, cfg+".gz")
	}
	cj, err := os.ReadFile(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return tj, cj
}

// mustModel loads a test model once per test binary.
func mustModel(tb testing.TB, name string) *tokenizer.Tokenizer {
	tb.Helper()
	loadMu.Lock()
	defer loadMu.Unlock()
	if t, ok := loaded[name]; ok {
		return t
	}
	tj, cj := modelFiles(tb, name)
	t, err := tokenizer.FromJSON(tj, cj)
	if err != nil {
		tb.Fatalf("load %s: %v", name, err)
	}
	loaded[name] = t
	return t
}

type goldenLine struct {
	Text         string `json:"text"`
	IDs          []int  `json:"ids"`
	IDsNoSpecial []int  `json:"ids_no_special"`
	IDsNoParse   []int  `json:"ids_no_parse"`
	Decode       string `json:"decode"`
	DecodeSkip   string `json:"decode_skip"`
}

func readGolden(tb testing.TB, name string) []goldenLine {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	var g struct {
		Lines []goldenLine `json:"lines"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		tb.Fatal(err)
	}
	return g.Lines
}

func readCorpus(tb testing.TB) []string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "corpus.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var c []string
	if err := json.Unmarshal(b, &c); err != nil {
		tb.Fatal(err)
	}
	return c
}
