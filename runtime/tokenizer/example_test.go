package tokenizer_test

import (
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime/tokenizer"
)

func Example() {
	dir, err := os.MkdirTemp("", "tokenizer")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := tokenizer.WriteDemo(dir, 1024); err != nil {
		log.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		log.Fatal(err)
	}

	// A chat prompt: render the template, then encode it with special
	// tokens parsed and without adding BOS again.
	prompt, err := tok.ApplyChatTemplate([]nozzle.ChatMessage{{Role: "user", Content: "Hello!"}}, true)
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode(prompt, tokenizer.EncodeOptions{ParseSpecial: true})
	fmt.Printf("%q\n", prompt)
	fmt.Println(tok.TokenText(ids[0]), tok.TokenText(ids[1]))

	// Streaming the ids back gives the same text as Decode.
	d := tok.NewStreamDecoder(true)
	var out strings.Builder
	for _, id := range ids {
		out.WriteString(d.Add(id))
	}
	out.WriteString(d.Flush())
	fmt.Printf("%q\n", out.String())
	// Output:
	// "<|begin_of_text|><|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
	// <|begin_of_text|> <|im_start|>
	// "user\nHello!\nassistant\n"
}

// TestConcurrentEncode encodes from many goroutines at once (run with
// -race): the word cache is shared.
func TestConcurrentEncode(t *testing.T) {
	tok := mustModel(t, "llama3")
	corpus := readCorpus(t)
	want := make([][]int, len(corpus))
	for i, s := range corpus {
		want[i] = tok.Encode(s, tokenizer.EncodeOptions{})
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range corpus {
				k := (i + g*17) % len(corpus)
				if got := tok.Encode(corpus[k], tokenizer.EncodeOptions{}); !slices.Equal(got, want[k]) {
					t.Errorf("line %d: concurrent encode differs", k)
					return
				}
			}
		}()
	}
	wg.Wait()
}
