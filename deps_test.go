package nozzle_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the layout of docs/ARCHITECTURE.md true:
// the root package imports the standard library only; gateway, billing,
// runtime and web never import each other; each third-party library is
// imported by one part only (stripe-go by billing/stripe alone).
func TestDependencyDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/nozzle-ai/nozzle"
	// The part a package belongs to: its first path element under the
	// module ("" for the root), with mock and internal as shared helpers.
	part := func(pkg string) string {
		rest := strings.TrimPrefix(strings.TrimPrefix(pkg, mod), "/")
		first, _, _ := strings.Cut(rest, "/")
		return first
	}
	// Which part may import each third-party module.
	owner := map[string]string{
		"github.com/gofiber/fiber/v2":  "gateway",
		"github.com/valyala/fasthttp":  "gateway",
		"github.com/golang-jwt/jwt/v5": "gateway",
		"golang.org/x/crypto":          "gateway",
		"go.etcd.io/bbolt":             "billing",
		"github.com/stripe/stripe-go":  "billing",
		"github.com/ebitengine/purego": "runtime",
		"github.com/ardanlabs/jinja":   "runtime",
		"github.com/dlclark/regexp2":   "runtime",
		"golang.org/x/text":            "runtime",
		"github.com/BurntSushi/toml":   "cmd",
	}
	// Libraries only one package of their part may import
	// (docs/LEDGER.md: billing works without Stripe).
	pkgOwner := map[string]string{
		"github.com/stripe/stripe-go": mod + "/billing/stripe",
	}
	siblings := map[string]bool{"gateway": true, "billing": true, "runtime": true, "web": true}

	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Imports    []string
			Standard   bool
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		from := part(p.ImportPath)
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, mod) {
				to := part(imp)
				switch {
				case from == "" && to != "":
					t.Errorf("%s: the root package imports %s", p.ImportPath, imp)
				case siblings[from] && siblings[to] && from != to:
					t.Errorf("%s imports its sibling %s: siblings meet through root interfaces", p.ImportPath, imp)
				case to == "cmd":
					t.Errorf("%s imports %s", p.ImportPath, imp)
				}
				continue
			}
			if !strings.Contains(strings.Split(imp, "/")[0], ".") {
				continue // standard library
			}
			if from == "" {
				t.Errorf("the root package imports %s: it may use the standard library only", imp)
				continue
			}
			matched := false
			for m, o := range owner {
				if imp == m || strings.HasPrefix(imp, m+"/") || strings.HasPrefix(imp, m+"/v") {
					matched = true
					if o != from {
						t.Errorf("%s imports %s, which only %s/ may import", p.ImportPath, imp, o)
					} else if pkg, ok := pkgOwner[m]; ok && p.ImportPath != pkg {
						t.Errorf("%s imports %s, which only %s may import", p.ImportPath, imp, pkg)
					}
				}
			}
			if !matched {
				t.Errorf("%s imports %s, a library no part owns (add it to docs/ARCHITECTURE.md and this test)", p.ImportPath, imp)
			}
		}
	}
}
