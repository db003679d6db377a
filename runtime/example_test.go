package runtime_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	nozzle "github.com/nozzle-ai/nozzle"
	"github.com/nozzle-ai/nozzle/runtime"
)

// Serve the demo model with one of its adapters.
func ExampleOpen() {
	ctx := context.Background()
	data, _ := os.MkdirTemp("", "nozzle-example-")
	defer os.RemoveAll(data)
	modelDir, adapterDirs, err := runtime.EnsureDemo(data)
	if err != nil {
		log.Fatal(err)
	}
	validate, err := runtime.ValidateAdapter(modelDir, 64)
	if err != nil {
		log.Fatal(err)
	}
	store := runtime.NewStore(filepath.Join(data, "adapters"), validate)
	m, err := store.Import(ctx, adapterDirs["demo-sql"]) // moves the folder into the store
	if err != nil {
		log.Fatal(err)
	}
	rt, err := runtime.Open(ctx, runtime.Options{ModelDir: modelDir, Device: "cpu", AdapterSource: store})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)
	res, err := rt.Generate(ctx, &nozzle.GenerateRequest{
		TenantID:  "acme",
		Adapter:   &nozzle.Adapter{Name: "demo-sql", AdapterManifest: *m},
		Prompt:    "SELECT",
		MaxTokens: 16,
	}, func(c nozzle.Chunk) error {
		fmt.Print(c.Text) // the demo model's text is meaningless
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.CompletionTokens, res.DeviceSeconds > 0)
}
