# Nozzle — build, run and test.
#
#   make        bin/nozzle and build/libnozzle_cpu.so (+ build/libnozzle_cuda.so where nvcc exists)
#   make run    the demo: gateway + runtime on 127.0.0.1:8080 with the built-in demo model
#   make test   every test: Go (race detector on), C engine tests (with ASan/UBSan), browser tests
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

CUDA_SRC := $(wildcard csrc/cuda/*.cu)
CUDA_ARCHS ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
NVCC_FLAGS ?= -O3 -std=c++17 -Xcompiler -fPIC -Xcompiler -fvisibility=hidden -Icsrc/include -Icsrc/src $(CUDA_ARCHS)

GO_SRC := $(shell find . -name '*.go' -not -path './node_modules/*' -not -path '*/node_modules/*' 2>/dev/null) go.mod go.sum
WEB_SRC := $(shell find web -type f -not -path '*/node_modules/*' -not -path 'web/tests/*' 2>/dev/null)

.PHONY: all engine cuda run test test-go test-c test-browser bench vet fmt clean deps
all: bin/nozzle build/libnozzle_cpu.so $(if $(NVCC),build/libnozzle_cuda.so)

bin/nozzle: $(GO_SRC) $(WEB_SRC)
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/nozzle

engine: build/libnozzle_cpu.so
build/libnozzle_cpu.so: $(ENGINE_SRC) $(ENGINE_HDR)
	@mkdir -p build
	$(CC) $(ENGINE_CFLAGS) -o $@ $(ENGINE_SRC) $(ENGINE_LDFLAGS)

cuda: build/libnozzle_cuda.so
build/libnozzle_cuda.so: $(CUDA_SRC) $(ENGINE_HDR)
	@mkdir -p build
	$(NVCC) $(NVCC_FLAGS) -shared -o $@ $(CUDA_SRC) -lcublas

run: bin/nozzle build/libnozzle_cpu.so
	./bin/nozzle serve

# Every test. scripts/test-deps installs what the tests need when it is
# missing (stripe-mock, the browser-test packages, chromium).
test: all
	./scripts/test-deps
	$(MAKE) test-c
	$(MAKE) test-go
	$(MAKE) test-browser

test-go: build/libnozzle_cpu.so
	NOZZLE_ENGINE_LIB=$(CURDIR)/build/libnozzle_cpu.so $(GO) test -race -count=1 ./...

C_TESTS := $(patsubst csrc/tests/%.c,build/tests/%,$(wildcard csrc/tests/test_*.c))
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1
build/tests/%: csrc/tests/%.c $(ENGINE_SRC) $(ENGINE_HDR)
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
