package engine_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nozzle-ai/nozzle/runtime/engine"
)

// fakeLib compiles a stand-in library exporting the ABI's symbols with the
// given C body overriding defaults, for the load-time checks.
func fakeLib(t *testing.T, defines string) string {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found")
	}
	src := `#include <stdint.h>
#include <stddef.h>
` + defines + `
#ifndef ABI
#define ABI ` + strconv.Itoa(engine.ABIVersion) + `
#endif
#ifndef CONFIG_SIZE
#define CONFIG_SIZE 400
#endif
int32_t nz_abi_version(void) { return ABI; }
int64_t nz_struct_size(int32_t w) { return w == 0 ? CONFIG_SIZE : w == 1 ? 232 : -1; }
const char *nz_last_error(void) { return "fake"; }
int32_t nz_backend_name(char *buf, int64_t n) { if (n > 4) { buf[0]='f'; buf[1]='a'; buf[2]='k'; buf[3]='e'; buf[4]=0; } return 0; }
int32_t nz_engine_create(const void *cfg, void **out) { return -3; }
int32_t nz_engine_set_tensor(void *e, int32_t k, int32_t l, int32_t d, const void *p, const int64_t *s, int32_t n) { return -1; }
int32_t nz_engine_finalize(void *e) { return -1; }
int32_t nz_engine_info(void *e, int64_t *o, int32_t n) { return -1; }
void nz_engine_destroy(void *e) {}
int32_t nz_adapter_load(void *e, int32_t s, int32_t n, const int32_t *a, const int32_t *b, const int32_t *c, const float *d, const int32_t *f, const void *const *g, const int32_t *h, const void *const *i) { return -1; }
int32_t nz_adapter_clear(void *e, int32_t s) { return -1; }
#ifndef NO_STEP
int32_t nz_step(void *e, const void *b) { return -1; }
#endif
int32_t nz_bench_read_bandwidth(int64_t b, int32_t i, int32_t t, double *o) { *o = 1; return 0; }
`
	dir := t.TempDir()
	c := filepath.Join(dir, "fake.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	so := filepath.Join(dir, "libfake.so")
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return so
}

func TestOpen_LoadChecks(t *testing.T) {
	tests := []struct {
		name, defines, want string
	}{
		{"OK", "", ""},
		{"WrongABI", "#define ABI 99", "has ABI version 99, but this build of Nozzle needs version " + strconv.Itoa(engine.ABIVersion)},
		{"MissingSymbol", "#define NO_STEP 1", "lacks the symbol nz_step"},
		{"StructSize", "#define CONFIG_SIZE 280", "struct nz_config is 280 bytes, Go expects 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib, err := engine.Open(fakeLib(t, tt.defines))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if lib.Backend() != "fake" {
					t.Errorf("backend %q", lib.Backend())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("Missing", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "libnozzle_cpu.so")
		if _, err := engine.Open(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Fatalf("Open error = %v", err)
		}
		if _, err := engine.Find("libnozzle_none.so"); err == nil || !strings.Contains(err.Error(), "libnozzle_none.so not found") {
			t.Fatalf("Find error = %v", err)
		}
	})
	t.Run("NotALibrary", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "libx.so")
		os.WriteFile(p, []byte("not an ELF file"), 0o644)
		if _, err := engine.Open(p); err == nil || !strings.Contains(err.Error(), "load engine library") {
			t.Fatalf("Open error = %v", err)
		}
	})
}
