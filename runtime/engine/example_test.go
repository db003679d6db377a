package engine_test

import (
	"fmt"
	"log"

	"github.com/nozzle-ai/nozzle/runtime/engine"
	"github.com/nozzle-ai/nozzle/runtime/model"
)

// One step with two sequences on different adapters: a prefill chunk
// and a decode token, sampled greedily.
func Example() {
	lib, err := engine.Open("") // finds build/libnozzle_cpu.so
	if err != nil {
		log.Fatal(err)
	}
	m, err := model.Open("path/to/model")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	e, err := lib.NewEngine(m, engine.Options{MaxSlots: 8, MaxRank: 16})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	a, err := m.LoadAdapter("path/to/adapter", e.Info().MaxRank)
	if err != nil {
		log.Fatal(err)
	}
	if err := e.LoadAdapter(0, a); err != nil {
		log.Fatal(err)
	}
	a.Close()

	var b engine.Batch
	b.Reset(4, 0)
	b.Add(engine.Seq{Tokens: []int32{1, 415, 2936}, Pos: 0, Slot: 0, Blocks: []int32{0}, Sample: true})
	b.Add(engine.Seq{Tokens: []int32{9}, Pos: 17, Slot: -1, Blocks: []int32{1, 2}, Sample: true})
	if err := e.Step(&b); err != nil {
		log.Fatal(err)
	}
	fmt.Println(b.OutToken, b.OutLogprob)
}
