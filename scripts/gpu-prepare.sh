#!/usr/bin/env bash
# Builds, on a machine with Go, what scripts/gpu-check.sh needs on the GPU
# machine, which has no Go: the runtime/engine test binary (the CUDA parity
# tests and the benchmark) and bin/nozzle, both CGO_ENABLED=0, into .gpu/.
#
# .gpu/ is ignored by git, so it travels to the GPU machine only when the
# device tool's call names it: carry [".gpu"] (see DEVELOPERS.md).
#
# GPU_BASE=<git revision> also exports that revision's engine sources
# (csrc/ and the Makefile) into .gpu/base: gpu-check.sh then builds its CUDA
# library too and benchmarks it beside this tree's, for side-by-side ratios.
#
#   scripts/gpu-prepare.sh          # then run scripts/gpu-check.sh there
#   GPU_BASE=HEAD~3 scripts/gpu-prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

out=.gpu
mkdir -p "$out"
rm -rf "$out/engine.test" "$out/nozzle" "$out/BUILD" "$out/base"
if [[ -n ${GPU_BASE:-} ]]; then
	echo "gpu-prepare: the engine sources of $GPU_BASE into $out/base"
	mkdir -p "$out/base"
	git archive "$GPU_BASE" csrc Makefile | tar -x -C "$out/base"
	git rev-parse --short "$GPU_BASE" >"$out/base/REVISION"
fi

echo "gpu-prepare: runtime/engine test binary"
CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o "$out/engine.test" ./runtime/engine

# bin/nozzle is optional for the GPU run (the benchmark runs through the
# test binary); a command that does not build yet must not block the rest.
echo "gpu-prepare: bin/nozzle"
if ! CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$out/nozzle" ./cmd/nozzle; then
	echo "gpu-prepare: warning: bin/nozzle did not build; gpu-check.sh runs without it" >&2
	rm -f "$out/nozzle"
fi

{
	echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
	echo "go: $(go version)"
} >"$out/BUILD"
ls -l "$out"
size=$(du -sm "$out" | cut -f1)
echo "gpu-prepare: .gpu is ${size} MiB; the device tool carries at most 64 MiB with the working tree"
