#!/usr/bin/env bash
# scripts/gpu-check.sh — the CUDA backend's prepared GPU run: build the
# engine libraries for this machine's GPU, run the CUDA-vs-CPU parity tests
# (and a short compute-sanitizer memcheck of them), benchmark the engine on
# a Llama-shaped 1.24B-parameter model with 32 rank-16 adapters, and the same
# model and adapters in Hugging Face transformers + peft, within a hard time
# budget. Everything lands in $OUT (log.txt, summary.txt, results.json,
# bench.txt, nozzle.json, hf.json, and with a base revision or a profile
# base.json and profile.txt: at most the device tool's eight files; the
# memcheck's output is in log.txt); the summary is printed last.
#
# The GPU machine has no Go: run scripts/gpu-prepare.sh first where Go is,
# and send its .gpu/ folder along (device tool: carry [".gpu"]); see
# DEVELOPERS.md for the exact call. Without a GPU the script says so and
# stops cleanly (a dry run).
#
# With .gpu/base (GPU_BASE=<revision> scripts/gpu-prepare.sh) it also
# builds that revision's CUDA library and benchmarks it beside this tree's
# (base.json, and ratios in the summary). Where Nsight Compute (ncu) is
# found it times every kernel of a few decode steps (profile.txt).
#
# Environment: OUT (default .gpu/out), GPU_CHECK_BUDGET (seconds, default
# 480), NVCC (default: found on PATH or under /usr/local/cuda),
# GPU_CHECK_HF=0 skips the Hugging Face reference, GPU_CHECK_VARIANTS
# (environment settings: the parity tests and the benchmark run once more
# under each, the figures in log.txt; default "NOZZLE_CUDA_FUSE_LORA=0
# NOZZLE_CUDA_LORA_SMS=16 NOZZLE_CUDA_LORA_SMS=32
# NOZZLE_CUDA_ATTN_MIN_TILES=4", the experiments
# DEVELOPERS.md leaves open; empty: none), GPU_CHECK_PROFILE (the
# batch:adapters points to profile, default "1:none 1:distinct 32:none
# 32:distinct"; empty: none).
# GPU_CHECK_EMULATE=1 dry-runs every phase without a GPU: the CPU emulation
# of CUDA (make cuda-emu) stands in for the GPU library, with a tiny
# benchmark model; the figures mean nothing, the plumbing is checked.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
OUT=${OUT:-$root/.gpu/out}
mkdir -p "$OUT"
budget=${GPU_CHECK_BUDGET:-480}
work=$(mktemp -d "${TMPDIR:-/tmp}/nozzle-gpu-check.XXXXXX")
export NOZZLE_GPU_WORK=$work
exec > >(tee -a "$OUT/log.txt") 2>&1
tee_pid=$!
start=$SECONDS

left() { echo $((budget - (SECONDS - start))); }

# phase_timeout WANT RESERVE: WANT seconds, or less so that RESERVE seconds
# of the budget stay for what follows; with a budget too small for that,
# half of what is left (a small budget starves the later phases, not this
# one).
phase_timeout() {
	local want=$1 reserve=${2:-30} l half
	l=$(($(left) - reserve))
	half=$(($(left) / 2))
	((l < half)) && l=$half
	((l < want)) && want=$l
	((want < 5)) && want=5
	echo "$want"
}

record() {
	printf '%s\t%s\n' "$1" "$2" >>"$work/status.tsv"
	echo "== $1: $2 ($(($(left)))s of the budget left)"
}

finish() {
	echo
	echo "== summary"
	python3 "$root/scripts/gpu/summarize.py" --out "$OUT" --work "$work" || echo "summarize.py failed"
	exec >/dev/null 2>&1
	wait "$tee_pid" 2>/dev/null || sleep 1
	exit 0
}

echo "== nozzle gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${budget}s"
cat "$root/.gpu/BUILD" 2>/dev/null || echo "(no .gpu/BUILD: was scripts/gpu-prepare.sh run and .gpu carried?)"
for py in scripts/gpu/hf_bench.py scripts/gpu/summarize.py; do
	python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$root/$py" ||
		record python "$py does not parse"
done

emulate=${GPU_CHECK_EMULATE:-0}
cudalib=$root/build/libnozzle_cuda.so
bench_model=1b
if [[ $emulate == 1 ]]; then
	record gpu "emulated: the CPU emulation of CUDA stands in for a GPU (a dry run; figures mean nothing)"
	cudalib=$root/build/libnozzle_cudaemu.so
	bench_model=tiny
	if make -j"$(nproc)" build/libnozzle_cpu.so build/libnozzle_cudaemu.so; then
		record build "ok: build/libnozzle_cudaemu.so"
	else
		record build "failed (see log.txt)"
		finish
	fi
fi

# ---- the GPU ---------------------------------------------------------------
if [[ $emulate == 1 ]]; then
	: # no GPU, no toolkit: straight to the tests
elif ! command -v nvidia-smi >/dev/null 2>&1; then
	record gpu "none (nvidia-smi not found): nothing to check on this machine"
	finish
elif ! nvidia-smi >"$work/nvidia-smi.txt" 2>&1; then
	record gpu "none (nvidia-smi failed: $(head -1 "$work/nvidia-smi.txt"))"
	finish
fi

# build_for_gpu: finds the toolkit and builds the libraries for this GPU.
build_for_gpu() {
	cat "$work/nvidia-smi.txt"
	cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
	gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
	record gpu "$gpu (sm_${cc:-?})"
	[[ $cc =~ ^[0-9]+$ ]] || cc=90

	# ---- the CUDA toolkit --------------------------------------------------------
	nvcc=${NVCC:-}
	if [[ -z $nvcc ]]; then
		for c in "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc /opt/cuda/bin/nvcc; do
			if [[ -n $c && -x $c ]]; then
				nvcc=$c
				break
			fi
		done
	fi
	if [[ -z $nvcc ]]; then
		record build "failed: no nvcc found (set NVCC)"
		finish
	fi
	cuda_home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
	"$nvcc" --version | tail -2
	pysite=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
	# cuBLAS: the toolkit's, else the one PyTorch's wheels bring.
	inc="" libdir=""
	for d in "$cuda_home/include" "$cuda_home/targets/x86_64-linux/include" /usr/include; do
		[[ -f $d/cublas_v2.h ]] && inc=$d && break
	done
	for d in "$cuda_home/lib64" "$cuda_home/targets/x86_64-linux/lib" "$cuda_home/lib" /usr/lib/x86_64-linux-gnu; do
		compgen -G "$d/libcublas.so*" >/dev/null && libdir=$d && break
	done
	if [[ (-z $inc || -z $libdir) && -n $pysite ]]; then
		h=$(find "$pysite/nvidia" -name cublas_v2.h 2>/dev/null | head -1)
		l=$(find "$pysite/nvidia" -name 'libcublas.so*' 2>/dev/null | head -1)
		[[ -z $inc && -n $h ]] && inc=$(dirname "$h")
		[[ -z $libdir && -n $l ]] && libdir=$(dirname "$l")
	fi
	echo "nvcc $nvcc; cuBLAS headers ${inc:-?}, libraries ${libdir:-?}"
	cflags="" ldflags="" ldlibs="-cudart shared -lcublas"
	[[ -n $inc ]] && cflags="-I$inc"
	# the libraries' folders go into the library's run path and LD_LIBRARY_PATH
	for d in "$libdir" "$cuda_home/lib64" "$cuda_home/targets/x86_64-linux/lib"; do
		if [[ -n $d && -d $d ]]; then
			ldflags="$ldflags -L$d -Xlinker -rpath=$d"
			LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
		fi
	done
	export LD_LIBRARY_PATH
	if [[ -n $libdir && ! -e $libdir/libcublas.so ]]; then
		so=$(basename "$(compgen -G "$libdir/libcublas.so.*" | sort | head -1)")
		ldlibs="-cudart shared -l:$so"
	fi
	archs="-gencode arch=compute_${cc},code=sm_${cc} -gencode arch=compute_${cc},code=compute_${cc}"

	# ---- build ---------------------------------------------------------------------
	t=$(phase_timeout 240 200)
	echo "== build (timeout ${t}s)"
	rm -f build/libnozzle_cuda.so build/libnozzle_cpu.so
	if timeout -k 10 "$t" make -j"$(nproc)" NVCC="$nvcc" CUDA_ARCHS="$archs" CUDA_CFLAGS="$cflags" \
		CUDA_LDFLAGS="$ldflags" CUDA_LDLIBS="$ldlibs" build/libnozzle_cpu.so build/libnozzle_cuda.so; then
		record build "ok: build/libnozzle_cuda.so for sm_${cc} with $("$nvcc" --version | grep -o 'release [0-9.]*')"
	else
		record build "failed (see log.txt)"
		finish
	fi
	if [[ -d $root/.gpu/base ]]; then
		t=$(phase_timeout 150 200)
		echo "== build the base revision $(cat "$root/.gpu/base/REVISION" 2>/dev/null) (timeout ${t}s)"
		rm -rf "$root/.gpu/base/build"
		if timeout -k 10 "$t" make -C "$root/.gpu/base" -j"$(nproc)" NVCC="$nvcc" CUDA_ARCHS="$archs" \
			CUDA_CFLAGS="$cflags" CUDA_LDFLAGS="$ldflags" CUDA_LDLIBS="$ldlibs" build/libnozzle_cuda.so; then
			record build-base "ok: .gpu/base/build/libnozzle_cuda.so"
		else
			record build-base "failed (see log.txt)"
		fi
	fi
}
[[ $emulate == 1 ]] || build_for_gpu
if [[ ! -x $root/.gpu/engine.test ]]; then
	record tests "skipped: .gpu/engine.test is missing (run scripts/gpu-prepare.sh and carry .gpu)"
	finish
fi
cd "$root/runtime/engine" || finish

# ---- parity tests ------------------------------------------------------------------
t=$(phase_timeout 150 240)
echo "== CUDA parity tests (timeout ${t}s)"
timeout -k 10 "$t" "$root/.gpu/engine.test" -test.run '^TestCUDA_' -test.v -test.count=1 -cuda.lib="$cudalib" 2>&1 |
	tee "$work/tests.txt"
rc=${PIPESTATUS[0]}
if ((rc != 0)); then
	record tests "failed (exit $rc)"
elif ! grep -q -- '--- PASS' "$work/tests.txt"; then
	record tests "none ran: $(grep -m1 -o 'no CUDA device.*' "$work/tests.txt" || echo 'all skipped')"
else
	record tests "ok"
fi

# ---- compute-sanitizer memcheck (short) ----------------------------------------------
sanitizer=""
if [[ $emulate != 1 ]]; then
	sanitizer=$(command -v compute-sanitizer 2>/dev/null || true)
	[[ -z $sanitizer && -x $cuda_home/bin/compute-sanitizer ]] && sanitizer=$cuda_home/bin/compute-sanitizer
fi
if [[ -z $sanitizer ]]; then
	record memcheck "skipped: compute-sanitizer not found"
else
	t=$(phase_timeout 120 230)
	echo "== compute-sanitizer memcheck (timeout ${t}s)"
	timeout -k 10 "$t" "$sanitizer" --tool memcheck --error-exitcode 42 --print-limit 20 \
		"$root/.gpu/engine.test" -test.count=1 -test.v -cuda.lib="$cudalib" \
		-test.run '^TestCUDA_(Parity|ParityBase|LongContext|SlotReuse|Sampling)$/^(LlamaGQA|OddSizes|BF16|BF16WideMLP|Llama)$' 2>&1 |
		tee "$work/memcheck.txt"
	rc=${PIPESTATUS[0]}
	summary=$(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$work/memcheck.txt" | tail -1)
	case $rc in
	0) record memcheck "ok: ${summary:-no summary line}" ;;
	124 | 137) record memcheck "timed out (${summary:-no summary line})" ;;
	*) record memcheck "failed (exit $rc): ${summary:-see log.txt}" ;;
	esac
fi

# ---- Nozzle engine benchmark ---------------------------------------------------------
# bench TIMEOUT LIB OUTDIR: TestCUDABench on LIB, its results into OUTDIR
# (the environment passes through, for the variants below).
bench() {
	mkdir -p "$3"
	timeout -k 10 "$1" "$root/.gpu/engine.test" -test.run '^TestCUDABench$' -test.v -test.count=1 -test.timeout 30m \
		-cuda.lib="$2" -cuda.bench="$3" -cuda.bench-model="$bench_model" \
		-cuda.bench-cache="${TMPDIR:-/tmp}/nozzle-cuda-bench" 2>&1
}
t=$(phase_timeout 220 120)
echo "== nozzle engine benchmark (timeout ${t}s)"
bench "$t" "$cudalib" "$OUT" | tee "$work/bench.txt"
rc=${PIPESTATUS[0]}
if ((rc != 0)); then
	record bench "failed (exit $rc)"
elif [[ ! -f $OUT/nozzle.json ]]; then
	record bench "did not run: $(grep -m1 -o 'no CUDA device.*' "$work/bench.txt" || echo 'skipped')"
else
	record bench "ok"
fi

# ---- the base revision's benchmark, beside this tree's ---------------------------------------
baselib=$root/.gpu/base/build/libnozzle_cuda.so
if [[ -f $OUT/nozzle.json && -f $baselib ]]; then
	t=$(phase_timeout 120 100)
	echo "== the base revision's engine benchmark (timeout ${t}s)"
	bench "$t" "$baselib" "$work/base" | grep -v '^ *round' | tail -25
	rc=${PIPESTATUS[0]}
	if [[ -f $work/base/nozzle.json ]]; then
		cp "$work/base/nozzle.json" "$OUT/base.json"
		record bench-base "ok (exit $rc)"
	else
		record bench-base "failed (exit $rc)"
	fi
fi

# ---- this tree's benchmark under other settings (informational) -----------------------------
for v in ${GPU_CHECK_VARIANTS-NOZZLE_CUDA_FUSE_LORA=0 NOZZLE_CUDA_LORA_SMS=16 NOZZLE_CUDA_LORA_SMS=32 NOZZLE_CUDA_ATTN_MIN_TILES=4}; do
	[[ -f $OUT/nozzle.json ]] || break
	t=$(phase_timeout 90 150)
	echo "== the CUDA parity tests with $v (timeout 45s)"
	env "$v" timeout -k 5 45 "$root/.gpu/engine.test" -test.run '^TestCUDA_' -test.v -test.count=1 \
		-cuda.lib="$cudalib" 2>&1 | grep -E '^\s*(--- |=== RUN|ok|FAIL|PASS)' | tail -30
	record variant-tests "$v: exit ${PIPESTATUS[0]}"
	echo "== the engine benchmark with $v (timeout ${t}s)"
	(export "${v?}" && bench "$t" "$cudalib" "$work/variant") | grep -E 'decode batch|efficiency|^(--- |ok|FAIL)'
	record variant "$v: exit ${PIPESTATUS[0]} (its figures are in log.txt)"
done

# ---- per-kernel times of a few decode steps (Nsight Compute) -------------------------------
ncu=""
if [[ $emulate != 1 && -f $OUT/nozzle.json ]]; then
	ncu=$(command -v ncu 2>/dev/null || true)
	[[ -z $ncu && -x $cuda_home/bin/ncu ]] && ncu=$cuda_home/bin/ncu
	[[ -z $ncu ]] && ncu=$(compgen -G "/opt/nvidia/nsight-compute/*/ncu" | sort | tail -1)
fi
points=${GPU_CHECK_PROFILE-1:none 1:distinct 32:none 32:distinct}
if [[ -n $ncu && -n $points ]]; then
	echo "== per-kernel times with $ncu"
	for pt in $points; do
		if (($(left) < 150)); then
			echo "(no time left to profile $pt)"
			break
		fi
		csv=$work/profile-${pt/:/-}.csv
		# the GPU's own clocks and warm caches, as in the benchmark (ncu's
		# defaults lock the base clock and flush the caches before every
		# kernel, which inflates short kernels several times over)
		timeout -k 5 45 "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
			--print-units base --log-file "$csv" \
			"$root/.gpu/engine.test" -test.run '^TestCUDAProfile$' -test.count=1 -cuda.lib="$cudalib" \
			-cuda.profile="$pt" -cuda.bench-model="$bench_model" -cuda.bench-cache="${TMPDIR:-/tmp}/nozzle-cuda-bench" \
			>"$work/profile-run.txt" 2>&1 || tail -5 "$work/profile-run.txt"
	done
	python3 "$root/scripts/gpu/kernel_profile.py" --steps 3 "$work"/profile-*.csv | tee "$OUT/profile.txt"
	record profile "$(grep -c '^== ' "$OUT/profile.txt") points (profile.txt)"
fi

# ---- Hugging Face transformers + peft reference ------------------------------------------
if [[ ${GPU_CHECK_HF:-1} == 0 ]]; then
	record hf "skipped (GPU_CHECK_HF=0)"
elif [[ -f $OUT/nozzle.json ]]; then
	t=$(phase_timeout 200 25)
	echo "== Hugging Face transformers + peft reference (timeout ${t}s)"
	PYTHONUNBUFFERED=1 timeout -k 10 "$t" python3 "$root/scripts/gpu/hf_bench.py" --nozzle "$OUT/nozzle.json" \
		--out "$OUT/hf.json" --batches 32,128 --deadline $((t - 15))
	rc=$?
	if ((rc == 0)); then record hf "ok"; else record hf "failed (exit $rc)"; fi
else
	record hf "skipped: the Nozzle benchmark wrote no nozzle.json (its model and adapters are the reference's input)"
fi

# ---- the other engine tests on the CUDA backend (informational) -----------------------------
if (($(left) > 60)); then
	t=$(phase_timeout 45 15)
	echo "== runtime/engine's engine tests on the CUDA library (informational, timeout ${t}s)"
	timeout -k 5 "$t" "$root/.gpu/engine.test" -test.count=1 -engine-lib="$cudalib" \
		-test.run '^TestEngine_(MatchesReference|ChunkedPrefill|LongSequence|Sampling|Errors|SlotReuse|MergeEquivalence)$' \
		>"$work/engine-tests.txt" 2>&1
	rc=$?
	grep -E '^(---|ok|FAIL|PASS)' "$work/engine-tests.txt" | head -40
	((rc != 0)) && grep -B2 -A12 -m3 -E '^\s+\S+_test\.go:[0-9]+:' "$work/engine-tests.txt" | head -60
	record engine-tests "exit $rc (informational: these tests were written for the CPU backend's bit-exact results)"
fi
# ---- `nozzle bench engine` on its default model (informational, if time is left) ----------
if [[ $emulate != 1 && -x $root/.gpu/nozzle ]] && (($(left) > 100)); then
	t=$(phase_timeout 90 10)
	echo "== nozzle bench engine --device cuda (informational, timeout ${t}s)"
	timeout -k 5 "$t" "$root/.gpu/nozzle" bench engine --device cuda --engine-lib "$cudalib" --batches 1,32,128 \
		--rounds 1 --cache "${TMPDIR:-/tmp}/nozzle-cuda-bench" 2>&1 | tail -30
	record nozzle-bench "exit ${PIPESTATUS[0]} (informational; its figures are in log.txt)"
fi
# ---- the same shapes with Qwen3's q and k head norms (informational, if time is left) -------
if [[ $emulate != 1 && -x $root/.gpu/nozzle ]] && (($(left) > 80)); then
	t=$(phase_timeout 70 10)
	echo "== nozzle bench engine --device cuda --arch qwen3 (informational, timeout ${t}s)"
	timeout -k 5 "$t" "$root/.gpu/nozzle" bench engine --device cuda --engine-lib "$cudalib" --arch qwen3 --batches 1,32 \
		--rounds 1 --cache "${TMPDIR:-/tmp}/nozzle-cuda-bench" 2>&1 | grep -E 'model:|^ +(1|32) |efficiency'
	record nozzle-bench-qwen3 "exit ${PIPESTATUS[0]} (informational: the head norms' cost against the Llama shapes above)"
fi
finish
