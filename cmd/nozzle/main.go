// Command nozzle is the one binary of Nozzle: gateway, runtime, ledger
// tools and benchmarks.
package main

import (
	"fmt"
	"os"

	"github.com/nozzle-ai/nozzle"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("nozzle", nozzle.Version, nozzle.Commit)
		return
	}
	fmt.Fprintln(os.Stderr, "nozzle: under construction")
	os.Exit(2)
}
