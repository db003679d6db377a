# Nozzle — build, run and test.
#
#   make        bin/nozzle and build/libnozzle_cpu.so (+ build/libnozzle_cuda.so where nvcc exists)
#   make run    the demo: gateway + runtime on 127.0.0.1:8080 with the built-in demo model
#   make test   every test: Go (race detector on), C engine tests (with ASan/UBSan), the CUDA
#               backend's parity tests on its CPU emulation, browser tests
#
# The Go binary never needs cgo (CGO_ENABLED=0); it loads the engine library
# at run time with purego.

SHELL := /bin/bash
GO ?= go
CC ?= gcc
NVCC ?= $(shell command -v nvcc 2>/dev/null)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS := -s -w -X github.com/nozzle-ai/nozzle.Version=$(VERSION) -X github.com/nozzle-ai/nozzle.Commit=$(COMMIT)

ENGINE_SRC := $(wildcard csrc/src/*.c)
ENGINE_HDR := $(wildcard csrc/include/*.h csrc/src/*.h)
# Portable baseline: any x86-64 with AVX2+FMA. Faster paths (AVX-512, bf16)
# are compiled per function with target attributes and chosen at run time.
ENGINE_CFLAGS := -std=c11 -O3 -fPIC -Wall -Wextra -Wno-unused-parameter -pthread \
	-fvisibility=hidden -D_GNU_SOURCE -Icsrc/include -Icsrc/src
ifeq ($(shell uname -m),x86_64)
ENGINE_CFLAGS += -mavx2 -mfma -mf16c
endif
ENGINE_LDFLAGS := -shared -pthread -lm

# CUDA backend (csrc/cuda): its .cu files with nvcc, and the backend-neutral
# api.c and common.c with the C compiler. `make` builds it where nvcc is
# found; a failing CUDA build only warns there (the CPU library, bin/nozzle
# and the Go tests never depend on it), `make cuda` fails loudly.
# CUDA_ARCHS, CUDA_CFLAGS (-I), CUDA_LDFLAGS (-L, -rpath) and CUDA_LDLIBS are
# overridable for other toolkits (scripts/gpu-check.sh builds for the GPU it
# runs on).
CUDA_SRC := $(wildcard csrc/cuda/*.cu)
CUDA_HDR := $(wildcard csrc/cuda/*.cuh csrc/cuda/*.h)
CUDA_C_SRC := $(filter-out csrc/src/cpu_%,$(ENGINE_SRC)) csrc/src/cpu_pool.c
CUDA_OBJ := $(patsubst csrc/cuda/%.cu,build/cuda/%.o,$(CUDA_SRC)) $(patsubst csrc/src/%.c,build/cuda/%.o,$(CUDA_C_SRC))
CUDA_ARCHS ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCC_FLAGS ?= -O3 -std=c++17 -Xcompiler -fPIC -Xcompiler -fvisibility=hidden -Xcompiler -Wall -Icsrc/include -Icsrc/src $(CUDA_ARCHS)
CUDA_CFLAGS ?=
CUDA_LDFLAGS ?=
CUDA_LDLIBS ?= -cudart shared -lcublas
# The CUDA backend on a CPU emulation of CUDA (csrc/cuda/emu), for testing
# it without a GPU: `make cuda-emu`, then runtime/engine's CUDA tests with
# -cuda.lib=build/libnozzle_cudaemu.so.
EMU_CXXFLAGS := -std=c++17 -O2 -g -fPIC -fno-strict-aliasing -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter \
	-Wno-unknown-pragmas -DNZ_EMU -Icsrc/include -Icsrc/src -Icsrc/cuda
EMU_OBJ := $(patsubst csrc/cuda/%.cu,build/cudaemu/%.o,$(CUDA_SRC)) build/cudaemu/emu.o \
	$(patsubst csrc/src/%.c,build/cudaemu/%.o,$(CUDA_C_SRC))

GO_SRC := $(shell find . -name '*.go' -not -path './node_modules/*' -not -path '*/node_modules/*' 2>/dev/null) go.mod go.sum
WEB_SRC := $(shell find web -type f -not -path '*/node_modules/*' -not -path 'web/tests/*' 2>/dev/null)

.PHONY: all engine cuda cuda-optional cuda-emu run test test-go test-c test-cuda-emu test-browser vet fmt clean
all: bin/nozzle build/libnozzle_cpu.so $(if $(NVCC),cuda-optional)

bin/nozzle: $(GO_SRC) $(WEB_SRC)
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/nozzle

engine: build/libnozzle_cpu.so
build/libnozzle_cpu.so: $(ENGINE_SRC) $(ENGINE_HDR)
	@mkdir -p build
	$(CC) $(ENGINE_CFLAGS) -o $@ $(ENGINE_SRC) $(ENGINE_LDFLAGS)

cuda: build/libnozzle_cuda.so
cuda-optional:
	@$(MAKE) --no-print-directory build/libnozzle_cuda.so || \
		echo "warning: build/libnozzle_cuda.so did not build (the CPU backend and bin/nozzle are unaffected); 'make cuda' shows why" >&2
build/libnozzle_cuda.so: $(CUDA_OBJ) csrc/cuda/exports.map
	$(NVCC) $(CUDA_ARCHS) -shared -Xlinker --no-undefined -Xlinker --version-script=csrc/cuda/exports.map \
		$(CUDA_LDFLAGS) -o $@ $(CUDA_OBJ) $(CUDA_LDLIBS)
build/cuda/%.o: csrc/cuda/%.cu $(CUDA_HDR) $(ENGINE_HDR)
	@mkdir -p build/cuda
	$(NVCC) $(NVCC_FLAGS) $(CUDA_CFLAGS) -c -o $@ $<
build/cuda/%.o: csrc/src/%.c $(ENGINE_HDR)
	@mkdir -p build/cuda
	$(CC) $(ENGINE_CFLAGS) -c -o $@ $<

cuda-emu: build/libnozzle_cudaemu.so
build/libnozzle_cudaemu.so: $(EMU_OBJ) csrc/cuda/exports.map
	$(CXX) -shared -Wl,--no-undefined -Wl,--version-script=csrc/cuda/exports.map -o $@ $(EMU_OBJ) -pthread -lm
build/cudaemu/%.o: csrc/cuda/%.cu $(CUDA_HDR) $(ENGINE_HDR) csrc/cuda/emu/emu.h
	@mkdir -p build/cudaemu
	$(CXX) $(EMU_CXXFLAGS) -x c++ -c -o $@ $<
build/cudaemu/emu.o: csrc/cuda/emu/emu.cpp csrc/cuda/emu/emu.h $(ENGINE_HDR)
	@mkdir -p build/cudaemu
	$(CXX) $(EMU_CXXFLAGS) -c -o $@ $<
build/cudaemu/%.o: csrc/src/%.c $(ENGINE_HDR)
	@mkdir -p build/cudaemu
	$(CC) $(ENGINE_CFLAGS) -c -o $@ $<

run: bin/nozzle build/libnozzle_cpu.so
	./bin/nozzle serve

# Every test. scripts/test-deps installs what the tests need when it is
# missing (stripe-mock, the browser-test packages, chromium).
test: all
	./scripts/test-deps
	$(MAKE) test-c
	$(MAKE) test-go
	$(MAKE) test-cuda-emu
	$(MAKE) test-browser

# The CUDA backend's parity tests on the CPU emulation of CUDA (no GPU
# needed); on a GPU machine scripts/gpu-check.sh runs them on the device.
test-cuda-emu: build/libnozzle_cpu.so build/libnozzle_cudaemu.so
	$(GO) test -count=1 -timeout 30m ./runtime/engine -run CUDA -args -cuda.lib=$(CURDIR)/build/libnozzle_cudaemu.so

test-go: build/libnozzle_cpu.so
	NOZZLE_ENGINE_LIB=$(CURDIR)/build/libnozzle_cpu.so $(GO) test -race -count=1 ./...

C_TESTS := $(patsubst csrc/tests/%.c,build/tests/%,$(wildcard csrc/tests/test_*.c))
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1
build/tests/%: csrc/tests/%.c csrc/tests/testutil.h $(ENGINE_SRC) $(ENGINE_HDR)
	@mkdir -p build/tests
	$(CC) $(filter-out -O3 -fvisibility=hidden,$(ENGINE_CFLAGS)) $(SAN_FLAGS) -o $@ $< $(ENGINE_SRC) -lm
test-c: $(C_TESTS)
	@set -e; for t in $(C_TESTS); do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 ./$$t; done

test-browser: bin/nozzle build/libnozzle_cpu.so
	@if [ -f web/tests/package.json ]; then cd web/tests && node run.mjs; fi

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | grep -v node_modules)" || (gofmt -l . | grep -v node_modules; exit 1)

fmt:
	gofmt -w $$(find . -name '*.go' -not -path '*/node_modules/*')

clean:
	rm -rf bin build
