package engine

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/nozzle-ai/nozzle/runtime/model"
)

// readHeader returns csrc/include/nozzle_engine.h, found from this
// package's folder.
func readHeader(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "csrc", "include", "nozzle_engine.h"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestABI_Constants checks every NZ_* constant of the header against the Go
// mirrors, and that the header has no constant the Go side does not know.
func TestABI_Constants(t *testing.T) {
	hdr := readHeader(t)
	goValues := map[string]int64{
		"NZ_ABI_VERSION": ABIVersion,
		"NZ_OK":          nzOK, "NZ_ERR_INVALID": nzErrInvalid, "NZ_ERR_OOM": nzErrOOM,
		"NZ_ERR_UNSUPPORTED": nzErrUnsupported, "NZ_ERR_DEVICE": nzErrDevice, "NZ_ERR_INTERNAL": nzErrInternal,
		"NZ_F32": nzF32, "NZ_F16": nzF16, "NZ_BF16": nzBF16, "NZ_Q8": nzQ8,
		"NZ_ROPE_DEFAULT": nzRopeDefault, "NZ_ROPE_LINEAR": nzRopeLinear, "NZ_ROPE_LLAMA3": nzRopeLlama3, "NZ_ROPE_YARN": nzRopeYarn, "NZ_ROPE_LONGROPE": nzRopeLongrope,
		"NZ_INFO_KV_BLOCK_SIZE": nzInfoKVBlockSize, "NZ_INFO_KV_NUM_BLOCKS": nzInfoKVNumBlocks,
		"NZ_INFO_WEIGHT_BYTES": nzInfoWeightBytes, "NZ_INFO_SLOT_BYTES": nzInfoSlotBytes, "NZ_INFO_KV_BYTES": nzInfoKVBytes,
		"NZ_INFO_MAX_SLOTS": nzInfoMaxSlots, "NZ_INFO_MAX_RANK": nzInfoMaxRank, "NZ_INFO_THREADS": nzInfoThreads,
		"NZ_INFO_COUNT":    nzInfoCount,
		"NZ_STRUCT_CONFIG": nzStructConfig, "NZ_STRUCT_BATCH": nzStructBatch,
		"NZ_T_EMBED": int64(model.KindEmbed), "NZ_T_LM_HEAD": int64(model.KindLMHead), "NZ_T_FINAL_NORM": int64(model.KindFinalNorm),
		"NZ_T_ATTN_NORM": int64(model.KindAttnNorm), "NZ_T_FFN_NORM": int64(model.KindFFNNorm),
		"NZ_T_Q": int64(model.KindQ), "NZ_T_K": int64(model.KindK), "NZ_T_V": int64(model.KindV), "NZ_T_O": int64(model.KindO),
		"NZ_T_GATE": int64(model.KindGate), "NZ_T_UP": int64(model.KindUp), "NZ_T_DOWN": int64(model.KindDown),
		"NZ_T_Q_BIAS": int64(model.KindQBias), "NZ_T_K_BIAS": int64(model.KindKBias), "NZ_T_V_BIAS": int64(model.KindVBias),
		"NZ_T_O_BIAS": int64(model.KindOBias), "NZ_T_GATE_BIAS": int64(model.KindGateBias), "NZ_T_UP_BIAS": int64(model.KindUpBias),
		"NZ_T_DOWN_BIAS": int64(model.KindDownBias), "NZ_T_Q_NORM": int64(model.KindQNorm), "NZ_T_K_NORM": int64(model.KindKNorm),
		"NZ_T_POST_ATTN_NORM": int64(model.KindPostAttnNorm), "NZ_T_POST_FFN_NORM": int64(model.KindPostFFNNorm),
		"NZ_ACT_SILU": nzActSilu, "NZ_ACT_GELU_TANH": nzActGeluTanh,
		"NZ_T_COUNT": model.NumKinds,
		"NZ_M_Q":     int64(model.ModuleQ), "NZ_M_K": int64(model.ModuleK), "NZ_M_V": int64(model.ModuleV), "NZ_M_O": int64(model.ModuleO),
		"NZ_M_GATE": int64(model.ModuleGate), "NZ_M_UP": int64(model.ModuleUp), "NZ_M_DOWN": int64(model.ModuleDown),
		"NZ_M_COUNT": model.NumModules,
	}
	if nzTensorCount != model.NumKinds || nzModuleCount != model.NumModules {
		t.Errorf("counts: %d/%d vs model %d/%d", nzTensorCount, nzModuleCount, model.NumKinds, model.NumModules)
	}
	defineRE := regexp.MustCompile(`(?m)^#define\s+(NZ_[A-Z0-9_]+)\s+\(?(-?[0-9]+)\)?`)
	enumRE := regexp.MustCompile(`(?m)^\s*(NZ_[A-Z0-9_]+)\s*=\s*(-?[0-9]+)\s*,?`)
	seen := map[string]bool{}
	for _, re := range []*regexp.Regexp{defineRE, enumRE} {
		for _, m := range re.FindAllStringSubmatch(hdr, -1) {
			name := m[1]
			v, _ := strconv.ParseInt(m[2], 10, 64)
			seen[name] = true
			want, ok := goValues[name]
			if !ok {
				t.Errorf("header constant %s = %d has no Go mirror", name, v)
				continue
			}
			if want != v {
				t.Errorf("%s: header %d, Go %d", name, v, want)
			}
		}
	}
	for name := range goValues {
		if !seen[name] {
			t.Errorf("Go mirrors %s, which the header lacks", name)
		}
	}
}

// TestABI_Structs checks nz_config and nz_batch field by field (name, type,
// offset) against nzConfig and nzBatch.
func TestABI_Structs(t *testing.T) {
	hdr := readHeader(t)
	for _, s := range []struct {
		name string
		typ  reflect.Type
	}{{"nz_config", reflect.TypeOf(nzConfig{})}, {"nz_batch", reflect.TypeOf(nzBatch{})}} {
		t.Run(s.name, func(t *testing.T) {
			re := regexp.MustCompile(`(?s)typedef struct ` + s.name + ` \{(.*?)\} ` + s.name + `;`)
			m := re.FindStringSubmatch(hdr)
			if m == nil {
				t.Fatalf("struct %s not found in the header", s.name)
			}
			body := regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(m[1], "")
			fieldRE := regexp.MustCompile(`^\s*(const\s+)?([a-z0-9_]+)\s*(\*?)\s*([a-z0-9_]+)(\[(\d+)\])?\s*;`)
			var fields []string
			for _, line := range strings.Split(body, "\n") {
				if strings.TrimSpace(line) == "" {
					continue
				}
				f := fieldRE.FindStringSubmatch(line)
				if f == nil {
					t.Fatalf("cannot parse field line %q", line)
				}
				fields = append(fields, line)
				i := len(fields) - 1
				if i >= s.typ.NumField() {
					t.Fatalf("header field %q has no Go mirror", f[4])
				}
				gf := s.typ.Field(i)
				if want := camel(f[4]); gf.Name != want {
					t.Errorf("field %d: header %s, Go %s (want %s)", i, f[4], gf.Name, want)
				}
				var wantType reflect.Type
				switch {
				case f[3] == "*":
					wantType = reflect.TypeOf(unsafe.Pointer(nil))
				case f[2] == "int64_t":
					wantType = reflect.TypeOf(int64(0))
				case f[2] == "double":
					wantType = reflect.TypeOf(float64(0))
				default:
					t.Fatalf("field %s: type %s is not one of int64_t, double or a pointer", f[4], f[2])
				}
				if f[6] != "" {
					n, _ := strconv.Atoi(f[6])
					wantType = reflect.ArrayOf(n, wantType)
				}
				if gf.Type != wantType {
					t.Errorf("field %s: Go type %v, want %v", f[4], gf.Type, wantType)
				}
				if gf.Offset != uintptr(8*i) && f[6] == "" {
					t.Errorf("field %s: Go offset %d, want %d", f[4], gf.Offset, 8*i)
				}
			}
			if len(fields) != s.typ.NumField() {
				t.Errorf("header has %d fields, Go %d", len(fields), s.typ.NumField())
			}
		})
	}
}

func camel(snake string) string {
	var b strings.Builder
	for _, p := range strings.Split(snake, "_") {
		if p == "" {
			continue
		}
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String()
}
