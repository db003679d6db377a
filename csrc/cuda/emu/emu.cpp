/*
 * emu.cpp — the CPU emulation of CUDA, its runtime and cuBLAS (see emu.h).
 */
#include "emu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

extern "C" {
#include "common.h"
}

#if !defined(__x86_64__)
#error "the CUDA emulator's fibers are written for x86-64"
#endif

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

float bf16_to_f32(uint16_t b) { return nz_bf16_to_f32(b); }
uint16_t f32_to_bf16(float f) { return nz_f32_to_bf16(f); }
float f16_to_f32(uint16_t h) { return nz_f16_to_f32(h); }
uint16_t f32_to_f16(float f) { return nz_f32_to_f16(f); }

/* ---------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------- */

static std::mutex g_err_mu;
static cudaError_t g_sticky = cudaSuccess; /* a failed kernel: every later call fails */
static cudaError_t g_last = cudaSuccess;   /* cudaGetLastError */
static std::string g_msg;

static cudaError_t set_last(cudaError_t e)
{
	if (e != cudaSuccess) {
		std::lock_guard<std::mutex> lk(g_err_mu);
		g_last = e;
	}
	return e;
}

static cudaError_t sticky()
{
	std::lock_guard<std::mutex> lk(g_err_mu);
	return g_sticky;
}

/* ---------------------------------------------------------------------------
 * Fibers: the threads of one block
 * ------------------------------------------------------------------------- */

extern "C" void emu_ctx_switch(void **save, void *load);
__asm__(".text\n"
        ".globl emu_ctx_switch\n"
        ".hidden emu_ctx_switch\n"
        ".type emu_ctx_switch,@function\n"
        "emu_ctx_switch:\n"
        "\tpushq %rbp\n"
        "\tpushq %rbx\n"
        "\tpushq %r12\n"
        "\tpushq %r13\n"
        "\tpushq %r14\n"
        "\tpushq %r15\n"
        "\tmovq %rsp, (%rdi)\n"
        "\tmovq %rsi, %rsp\n"
        "\tpopq %r15\n"
        "\tpopq %r14\n"
        "\tpopq %r13\n"
        "\tpopq %r12\n"
        "\tpopq %rbx\n"
        "\tpopq %rbp\n"
        "\tret\n"
        ".size emu_ctx_switch,.-emu_ctx_switch\n");

enum { F_READY, F_WARP, F_BLOCK, F_DONE };
struct fiber {
	void *sp;
	int state;
};

static const size_t kStack = 256 << 10;
static const int kMaxThreads = 1024;
static char *g_stacks[kMaxThreads];
static fiber g_fib[kMaxThreads];
static void *g_sched_sp;
static int g_cur = -1, g_nthreads;
static const std::function<void()> *g_body;
static bool g_abort;
static uint64_t g_phase;
static unsigned char g_warp_slots[kMaxThreads / 32][32 * 8];
static unsigned char *g_dyn;

void fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	{
		std::lock_guard<std::mutex> lk(g_err_mu);
		if (g_sticky == cudaSuccess) {
			g_sticky = cudaErrorLaunchFailure;
			char where[160] = "";
			if (g_cur >= 0)
				snprintf(where, sizeof where, " (block %u,%u,%u thread %u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z,
				         threadIdx.x, threadIdx.y, threadIdx.z);
			g_msg = std::string("emulated CUDA failure: ") + buf + where;
			fprintf(stderr, "%s\n", g_msg.c_str());
		}
		g_last = cudaErrorLaunchFailure;
	}
	if (g_cur >= 0) {
		g_abort = true;
		emu_ctx_switch(&g_fib[g_cur].sp, g_sched_sp); /* never resumed */
	}
}

static void fiber_main()
{
	(*g_body)();
	g_fib[g_cur].state = F_DONE;
	emu_ctx_switch(&g_fib[g_cur].sp, g_sched_sp);
	__builtin_unreachable();
}

static void init_fiber(int i)
{
	if (!g_stacks[i]) {
		size_t page = 4096;
		void *p = mmap(NULL, kStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			fprintf(stderr, "emulated CUDA: cannot map a fiber stack\n");
			abort();
		}
		mprotect(p, page, PROT_NONE); /* guard page below the stack */
		g_stacks[i] = (char *)p + page;
	}
	uintptr_t top = ((uintptr_t)(g_stacks[i] + kStack)) & ~(uintptr_t)15;
	void **sp = (void **)top;
	*--sp = NULL;                 /* the entry function's return address */
	*--sp = (void *)&fiber_main;  /* popped by ret */
	for (int r = 0; r < 6; r++)   /* rbp rbx r12 r13 r14 r15 */
		*--sp = NULL;
	g_fib[i].sp = sp;
	g_fib[i].state = F_READY;
}

static void set_tid(int i)
{
	unsigned bx = blockDim.x, by = blockDim.y;
	threadIdx.x = (unsigned)i % bx;
	threadIdx.y = ((unsigned)i / bx) % by;
	threadIdx.z = (unsigned)i / (bx * by);
}

void syncthreads()
{
	if (g_cur < 0) {
		fail("__syncthreads outside a kernel");
		return;
	}
	g_fib[g_cur].state = F_BLOCK;
	emu_ctx_switch(&g_fib[g_cur].sp, g_sched_sp);
}

void syncwarp()
{
	if (g_cur < 0) {
		fail("__syncwarp outside a kernel");
		return;
	}
	g_fib[g_cur].state = F_WARP;
	emu_ctx_switch(&g_fib[g_cur].sp, g_sched_sp);
}

int lane() { return g_cur & 31; }
unsigned char *warp_slots() { return g_warp_slots[g_cur >> 5]; }
unsigned char *dyn_smem() { return g_dyn; }

static void run_block()
{
	int n = g_nthreads;
	for (int i = 0; i < n; i++)
		init_fiber(i);
	for (;;) {
		bool rev = (g_phase++ & 1) != 0;
		for (int k = 0; k < n; k++) {
			int i = rev ? n - 1 - k : k;
			if (g_fib[i].state != F_READY)
				continue;
			g_cur = i;
			set_tid(i);
			emu_ctx_switch(&g_sched_sp, g_fib[i].sp);
			g_cur = -1;
			if (g_abort)
				return;
		}
		bool released = false;
		for (int lo = 0; lo < n; lo += 32) {
			int hi = lo + 32 < n ? lo + 32 : n, waiting = 0, other = 0;
			for (int i = lo; i < hi; i++) {
				if (g_fib[i].state == F_WARP)
					waiting++;
				else
					other++;
			}
			if (!waiting)
				continue;
			if (other) {
				fail("block %u,%u,%u warp %d: __syncwarp or a shuffle while %d lanes returned or wait at "
				     "__syncthreads",
				     blockIdx.x, blockIdx.y, blockIdx.z, lo / 32, other);
				return;
			}
			for (int i = lo; i < hi; i++)
				g_fib[i].state = F_READY;
			released = true;
		}
		if (released)
			continue;
		int blocked = 0, done = 0;
		for (int i = 0; i < n; i++) {
			blocked += g_fib[i].state == F_BLOCK;
			done += g_fib[i].state == F_DONE;
		}
		if (done == n)
			return;
		if (blocked + done == n) {
			if (done) {
				fail("__syncthreads reached by %d threads after %d threads of the block returned", blocked, done);
				return;
			}
			for (int i = 0; i < n; i++)
				g_fib[i].state = F_READY;
			continue;
		}
		fail("deadlock: threads wait at different barriers");
		return;
	}
}

/* ---------------------------------------------------------------------------
 * Memory
 *
 * Device memory and pinned host memory each live in one reserved mapping
 * (an arena). The device arena is accessible only while device work runs
 * (a kernel, a copy, a GEMM), so host code that dereferences a device
 * pointer faults at once; the pinned arena is inaccessible while a kernel
 * runs, so a kernel reading host memory faults too. Every device
 * allocation has guard bytes before and after it, checked after each
 * launch, copy and synchronisation.
 * ------------------------------------------------------------------------- */

static const size_t kGuard = 256;
static const unsigned char kGuardByte = 0xa5;
static const size_t kTotalMem = 16ull << 30;
static const size_t kPinnedMem = 8ull << 30;

struct arena {
	unsigned char *base = NULL;
	size_t size = 0;
	std::map<size_t, size_t> free_; /* offset -> length, coalesced */
	void init(size_t sz, int prot)
	{
		void *p = mmap(NULL, sz, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			fprintf(stderr, "emulated CUDA: cannot reserve %zu bytes of address space\n", sz);
			abort();
		}
		base = (unsigned char *)p;
		size = sz;
		free_[0] = sz;
	}
	unsigned char *alloc(size_t n)
	{
		n = (n + 4095) & ~(size_t)4095;
		for (auto it = free_.begin(); it != free_.end(); ++it) {
			if (it->second < n)
				continue;
			size_t off = it->first, len = it->second;
			free_.erase(it);
			if (len > n)
				free_[off + n] = len - n;
			return base + off;
		}
		return NULL;
	}
	void release(unsigned char *p, size_t n)
	{
		n = (n + 4095) & ~(size_t)4095;
		madvise(p, n, MADV_DONTNEED);
		size_t off = (size_t)(p - base);
		auto next = free_.lower_bound(off);
		if (next != free_.end() && off + n == next->first) {
			n += next->second;
			next = free_.erase(next);
		}
		if (next != free_.begin()) {
			auto prev = std::prev(next);
			if (prev->first + prev->second == off) {
				prev->second += n;
				return;
			}
		}
		free_[off] = n;
	}
};

static std::recursive_mutex g_dev_mu; /* device work runs one at a time */
static int g_dev_depth;
static arena g_dev_arena, g_pin_arena;
static std::once_flag g_arena_once;

static void init_arenas()
{
	std::call_once(g_arena_once, []() {
		g_dev_arena.init(kTotalMem, PROT_NONE);
		g_pin_arena.init(kPinnedMem, PROT_READ | PROT_WRITE);
	});
}

/* Held while device work runs: the device arena is accessible (and, for a
 * kernel, the pinned arena is not). */
struct dev_access {
	bool kernel;
	explicit dev_access(bool k = false) : kernel(k)
	{
		init_arenas();
		g_dev_mu.lock();
		if (g_dev_depth++ == 0)
			mprotect(g_dev_arena.base, g_dev_arena.size, PROT_READ | PROT_WRITE);
		if (kernel)
			mprotect(g_pin_arena.base, g_pin_arena.size, PROT_NONE);
	}
	~dev_access()
	{
		if (kernel)
			mprotect(g_pin_arena.base, g_pin_arena.size, PROT_READ | PROT_WRITE);
		if (--g_dev_depth == 0)
			mprotect(g_dev_arena.base, g_dev_arena.size, PROT_NONE);
		g_dev_mu.unlock();
	}
};

struct alloc {
	size_t size;
	unsigned char *base;
};
static std::mutex g_mem_mu;
static std::map<uintptr_t, alloc> g_dev; /* user pointer -> allocation */
static std::map<uintptr_t, size_t> g_pinned; /* pinned host allocations */
static size_t g_dev_bytes;

/* Needs dev_access. */
static void check_guards_locked()
{
	for (auto &kv : g_dev) {
		const alloc &a = kv.second;
		const unsigned char *u = (const unsigned char *)kv.first;
		for (size_t i = 0; i < kGuard; i++) {
			if (a.base[i] != kGuardByte) {
				fail("device memory written before the start of the allocation at %p (%zu bytes)", (void *)u, a.size);
				return;
			}
			if (u[a.size + i] != kGuardByte) {
				fail("device memory written past the end of the allocation at %p (%zu bytes), at byte %zu", (void *)u,
				     a.size, a.size + i);
				return;
			}
		}
	}
}

static void check_guards()
{
	dev_access da;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	check_guards_locked();
}

/* The device allocation holding p, or NULL. */
static const alloc *find_dev_locked(const void *p, uintptr_t *start)
{
	uintptr_t a = (uintptr_t)p;
	auto it = g_dev.upper_bound(a);
	if (it == g_dev.begin())
		return NULL;
	--it;
	if (a < it->first || a >= it->first + (it->second.size ? it->second.size : 1))
		return NULL;
	*start = it->first;
	return &it->second;
}

/* Checks that [p, p+n) lies in one device allocation. */
static bool dev_range(const void *p, size_t n, const char *what)
{
	std::lock_guard<std::mutex> lk(g_mem_mu);
	uintptr_t start;
	const alloc *a = find_dev_locked(p, &start);
	if (!a) {
		fail("%s: %p is not device memory", what, p);
		return false;
	}
	if ((uintptr_t)p + n > start + a->size) {
		fail("%s: %zu bytes at offset %zu overrun the allocation of %zu bytes", what, n, (size_t)((uintptr_t)p - start),
		     a->size);
		return false;
	}
	return true;
}

static bool pinned_range(const void *p, size_t n)
{
	std::lock_guard<std::mutex> lk(g_mem_mu);
	uintptr_t a = (uintptr_t)p;
	auto it = g_pinned.upper_bound(a);
	if (it == g_pinned.begin())
		return false;
	--it;
	return a >= it->first && a + n <= it->first + it->second;
}

static bool host_range(const void *p, size_t n, const char *what)
{
	std::lock_guard<std::mutex> lk(g_mem_mu);
	uintptr_t start;
	(void)n;
	if (find_dev_locked(p, &start)) {
		fail("%s: %p is device memory, want host memory", what, p);
		return false;
	}
	return true;
}

void check_align(const void *p, size_t a)
{
	if ((uintptr_t)p % a)
		fail("misaligned address %p for a %zu-byte access", p, a);
}

/* ---------------------------------------------------------------------------
 * Streams, events, graphs
 *
 * Streams are lazy: work queued on a stream runs only when something needs
 * it to have run (a synchronisation, an event another stream waits on or
 * the host synchronises with, a device-wide synchronisation), so work
 * whose ordering the program did not ask for happens as late as allowed.
 * A missing event between two streams, or a host write to pinned memory
 * before the copy reading it has run, then shows up as wrong data. The
 * legacy default stream (NULL) is synchronous. While a stream is captured
 * its work is recorded instead; a stream that waits on an event recorded
 * in the capture joins it, and a graph launch replays the recorded work
 * in the order it was issued.
 * ------------------------------------------------------------------------- */

struct stream;
struct graph {
	std::vector<std::function<void()>> ops;
	std::vector<stream *> joined;
};
struct op {
	uint64_t seq;
	std::function<void()> fn; /* empty: wait for wait_s up to wait_seq */
	stream *wait_s;
	uint64_t wait_seq;
};
struct stream {
	bool capturing = false;
	graph *g = NULL;
	std::deque<op> q;
	uint64_t issued = 0;
	/* while captured: work recorded, and how much of it the capture's
	 * other streams have waited for (all of it must be, at the end) */
	uint64_t cap_ops = 0, cap_joined = 0;
};
struct event {
	stream *s = NULL; /* where it was last recorded (NULL: complete) */
	uint64_t seq = 0;
	graph *g = NULL; /* recorded into this capture */
	stream *cap_s = NULL; /* ... by this stream, after cap_n of its operations */
	uint64_t cap_n = 0;
	std::chrono::steady_clock::time_point t;
};
struct blas {
	cudaStream_t s;
};

static std::recursive_mutex g_q_mu; /* the queues; taken before g_dev_mu */
static std::set<stream *> g_streams;

/* Runs s's queued work up to and including sequence number upto. */
static void flush(stream *s, uint64_t upto)
{
	while (!s->q.empty() && s->q.front().seq <= upto) {
		op o = std::move(s->q.front());
		s->q.pop_front();
		if (o.fn)
			o.fn();
		else if (o.wait_s)
			flush(o.wait_s, o.wait_seq);
	}
}

static void flush_all()
{
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	for (stream *s : g_streams)
		flush(s, s->issued);
}

/* Queues op on s, records it when s is being captured, runs it now on the
 * legacy stream. */
static void enqueue(cudaStream_t s, std::function<void()> fn)
{
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	if (!s) {
		fn();
		return;
	}
	if (s->capturing) {
		s->g->ops.push_back(std::move(fn));
		s->cap_ops++;
		return;
	}
	s->q.push_back(op{++s->issued, std::move(fn), NULL, 0});
}

/* Checks a launch's configuration at issue time, as the runtime does. */
static bool launch_ok(dim3 grid, dim3 block, size_t smem)
{
	uint64_t threads = (uint64_t)block.x * block.y * block.z;
	if (threads == 0 || threads > kMaxThreads || block.z > 64) {
		set_last(cudaErrorInvalidConfiguration);
		fail("launch with a block of %u×%u×%u threads", block.x, block.y, block.z);
		return false;
	}
	if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
		set_last(cudaErrorInvalidConfiguration);
		fail("launch with a grid of %u×%u×%u blocks", grid.x, grid.y, grid.z);
		return false;
	}
	if (smem > 227 * 1024) {
		set_last(cudaErrorInvalidValue);
		fail("launch with %zu bytes of dynamic shared memory", smem);
		return false;
	}
	return true;
}

static void launch_now(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body)
{
	if (sticky() != cudaSuccess)
		return;
	dev_access da(true);
	unsigned char *dyn = (unsigned char *)malloc(smem + 2 * kGuard);
	memset(dyn, kGuardByte, smem + 2 * kGuard);
	g_dyn = dyn + kGuard;
	g_body = &body;
	g_nthreads = (int)((uint64_t)block.x * block.y * block.z);
	g_abort = false;
	blockDim = block;
	gridDim = grid;
	for (unsigned z = 0; z < grid.z && !g_abort; z++)
		for (unsigned y = 0; y < grid.y && !g_abort; y++)
			for (unsigned x = 0; x < grid.x && !g_abort; x++) {
				blockIdx = dim3(x, y, z);
				memset(g_dyn, 0xff, smem); /* NaN in every float format */
				run_block();
				for (size_t i = 0; i < kGuard && !g_abort; i++)
					if (dyn[i] != kGuardByte || g_dyn[smem + i] != kGuardByte)
						fail("dynamic shared memory (%zu bytes) written out of bounds", smem);
			}
	free(dyn);
	g_dyn = NULL;
	g_body = NULL;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	check_guards_locked();
}

void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, std::function<void()> body)
{
	if (sticky() != cudaSuccess || !launch_ok(grid, block, smem))
		return;
	enqueue(s, [=]() { launch_now(grid, block, smem, body); });
}

} // namespace emu

using namespace emu;

/* ---------------------------------------------------------------------------
 * Runtime API
 * ------------------------------------------------------------------------- */

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess:
		return "no error";
	case cudaErrorInvalidValue:
		return "invalid argument";
	case cudaErrorMemoryAllocation:
		return "out of memory";
	case cudaErrorInitializationError:
		return "initialization error";
	case cudaErrorInvalidConfiguration:
		return "invalid configuration argument";
	case cudaErrorInvalidDevice:
		return "invalid device ordinal";
	case cudaErrorNoDevice:
		return "no CUDA-capable device is detected";
	case cudaErrorNotReady:
		return "device not ready";
	case cudaErrorStreamCaptureUnsupported:
		return "operation not permitted when stream is capturing";
	case cudaErrorStreamCaptureInvalidated:
		return "operation failed due to a previous error during capture";
	case cudaErrorLaunchFailure: {
		std::lock_guard<std::mutex> lk(g_err_mu);
		return g_msg.empty() ? "unspecified launch failure" : g_msg.c_str();
	}
	}
	return "unknown error";
}

const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaGetLastError(void)
{
	std::lock_guard<std::mutex> lk(g_err_mu);
	cudaError_t e = g_last;
	g_last = g_sticky;
	return e;
}

cudaError_t cudaPeekAtLastError(void)
{
	std::lock_guard<std::mutex> lk(g_err_mu);
	return g_last;
}

cudaError_t cudaGetDeviceCount(int *n)
{
	*n = 1;
	return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) { return d == 0 ? sticky() : set_last(cudaErrorInvalidDevice); }

cudaError_t cudaGetDevice(int *d)
{
	*d = 0;
	return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
	if (d != 0)
		return set_last(cudaErrorInvalidDevice);
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "Emulated GPU");
	p->totalGlobalMem = kTotalMem;
	p->sharedMemPerBlock = 48 << 10;
	p->sharedMemPerBlockOptin = 227 << 10;
	p->warpSize = 32;
	p->maxThreadsPerBlock = 1024;
	p->multiProcessorCount = 132; /* an H100's: the backend sizes its grids (attention and LoRA splits) as on one */
	p->l2CacheSize = 1 << 20;
	p->major = 9;
	p->minor = 0;
	return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
	flush_all();
	check_guards();
	return sticky();
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
	std::lock_guard<std::mutex> lk(g_mem_mu);
	*total_bytes = kTotalMem;
	*free_bytes = kTotalMem - g_dev_bytes;
	return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
	*p = NULL;
	if (sticky() != cudaSuccess)
		return sticky();
	dev_access da;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	if (n > kTotalMem - g_dev_bytes)
		return set_last(cudaErrorMemoryAllocation);
	unsigned char *base = g_dev_arena.alloc(n + 2 * kGuard);
	if (!base)
		return set_last(cudaErrorMemoryAllocation);
	memset(base, kGuardByte, kGuard);
	memset(base + kGuard, 0xff, n); /* NaN in every float format */
	memset(base + kGuard + n, kGuardByte, kGuard);
	g_dev[(uintptr_t)(base + kGuard)] = alloc{n, base};
	g_dev_bytes += n;
	*p = base + kGuard;
	return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
	if (!p)
		return cudaSuccess;
	flush_all(); /* cudaFree synchronises the device */
	dev_access da;
	std::lock_guard<std::mutex> lk(g_mem_mu);
	auto it = g_dev.find((uintptr_t)p);
	if (it == g_dev.end()) {
		fail("cudaFree(%p): not a device allocation", p);
		return cudaErrorInvalidValue;
	}
	check_guards_locked();
	g_dev_bytes -= it->second.size;
	g_dev_arena.release(it->second.base, it->second.size + 2 * kGuard);
	g_dev.erase(it);
	return sticky();
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
	init_arenas();
	std::lock_guard<std::mutex> lk(g_mem_mu);
	*p = g_pin_arena.alloc(n ? n : 1);
	if (!*p)
		return set_last(cudaErrorMemoryAllocation);
	g_pinned[(uintptr_t)*p] = n;
	return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
	if (!p)
		return cudaSuccess;
	flush_all();
	std::lock_guard<std::mutex> lk(g_mem_mu);
	auto it = g_pinned.find((uintptr_t)p);
	if (it == g_pinned.end()) {
		fail("cudaFreeHost(%p): not a pinned allocation", p);
		return cudaErrorInvalidValue;
	}
	g_pin_arena.release((unsigned char *)p, it->second ? it->second : 1);
	g_pinned.erase(it);
	return cudaSuccess;
}

static bool copy_ok(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
	switch (kind) {
	case cudaMemcpyHostToDevice:
		return dev_range(dst, n, "cudaMemcpy host to device (destination)") &&
		       host_range(src, n, "cudaMemcpy host to device (source)");
	case cudaMemcpyDeviceToHost:
		return dev_range(src, n, "cudaMemcpy device to host (source)") &&
		       host_range(dst, n, "cudaMemcpy device to host (destination)");
	case cudaMemcpyDeviceToDevice:
		return dev_range(src, n, "cudaMemcpy device to device (source)") &&
		       dev_range(dst, n, "cudaMemcpy device to device (destination)");
	default:
		return true;
	}
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
	if (sticky() != cudaSuccess)
		return sticky();
	if (n && !copy_ok(dst, src, n, kind))
		return sticky();
	if (n) {
		dev_access da;
		memmove(dst, src, n);
	}
	check_guards();
	return sticky();
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
	if (sticky() != cudaSuccess)
		return sticky();
	if (n && !copy_ok(dst, src, n, kind))
		return sticky();
	if (s && s->capturing && (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToHost) &&
	    !pinned_range(kind == cudaMemcpyHostToDevice ? src : dst, n)) {
		fail("cudaMemcpyAsync of pageable host memory while the stream is captured");
		return sticky();
	}
	if (n && kind == cudaMemcpyDeviceToHost && !pinned_range(dst, n)) {
		/* to pageable memory: returns once the copy is done */
		if (s) {
			std::lock_guard<std::recursive_mutex> lk(g_q_mu);
			flush(s, s->issued);
		}
		dev_access da;
		memmove(dst, src, n);
		return sticky();
	}
	if (n && kind == cudaMemcpyHostToDevice && !pinned_range(src, n)) {
		/* from pageable memory: the data is staged during the call */
		std::shared_ptr<std::vector<unsigned char>> copy =
		    std::make_shared<std::vector<unsigned char>>((const unsigned char *)src, (const unsigned char *)src + n);
		enqueue(s, [=]() {
			if (sticky() == cudaSuccess) {
				dev_access da;
				memmove(dst, copy->data(), n);
			}
		});
		return sticky();
	}
	enqueue(s, [=]() {
		if (n && sticky() == cudaSuccess) {
			dev_access da;
			memmove(dst, src, n);
		}
	});
	return sticky();
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
	if (n && !dev_range(p, n, "cudaMemset"))
		return sticky();
	dev_access da;
	memset(p, v, n);
	return sticky();
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
	if (n && !dev_range(p, n, "cudaMemsetAsync"))
		return sticky();
	enqueue(s, [=]() {
		if (sticky() == cudaSuccess) {
			dev_access da;
			memset(p, v, n);
		}
	});
	return sticky();
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
	(void)flags;
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	*s = new stream();
	g_streams.insert(*s);
	return sticky();
}

cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned flags, int priority)
{
	(void)priority;
	return cudaStreamCreateWithFlags(s, flags);
}

cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest)
{
	*least = 0, *greatest = 0;
	return sticky();
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	if (!s)
		return cudaSuccess;
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	flush(s, s->issued);
	g_streams.erase(s);
	if (s->capturing && s->g && s->g->joined.empty())
		delete s->g;
	delete s;
	return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
	if (s && s->capturing)
		return set_last(cudaErrorStreamCaptureUnsupported);
	if (s) {
		std::lock_guard<std::recursive_mutex> lk(g_q_mu);
		flush(s, s->issued);
	}
	check_guards();
	return sticky();
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
	(void)flags;
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	if (e->g) { /* recorded in a capture: s joins it */
		if (s && !s->capturing) {
			s->capturing = true;
			s->g = e->g;
			s->cap_ops = s->cap_joined = 0;
			e->g->joined.push_back(s);
		}
		if (e->cap_s && e->cap_s != s && e->cap_n > e->cap_s->cap_joined)
			e->cap_s->cap_joined = e->cap_n;
		return sticky();
	}
	if (!e->s)
		return sticky(); /* never recorded, or complete */
	if (!s || s->capturing) {
		flush(e->s, e->seq);
		return sticky();
	}
	s->q.push_back(op{++s->issued, std::function<void()>(), e->s, e->seq});
	return sticky();
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
	(void)flags;
	*e = new event();
	(*e)->t = std::chrono::steady_clock::now();
	return sticky();
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	if (!e)
		return cudaSuccess;
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	if (e->s && g_streams.count(e->s))
		flush(e->s, e->seq); /* its queued record refers to it */
	delete e;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	if (s && s->capturing) {
		e->g = s->g;
		e->s = NULL;
		e->cap_s = s;
		e->cap_n = s->cap_ops;
		return sticky();
	}
	e->g = NULL;
	e->cap_s = NULL;
	if (!s) {
		flush_all();
		e->s = NULL;
		e->t = std::chrono::steady_clock::now();
		return sticky();
	}
	e->s = s;
	e->seq = ++s->issued;
	s->q.push_back(op{e->seq, [e]() { e->t = std::chrono::steady_clock::now(); }, NULL, 0});
	return sticky();
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
	{
		std::lock_guard<std::recursive_mutex> lk(g_q_mu);
		if (e->s)
			flush(e->s, e->seq);
	}
	check_guards();
	return sticky();
}

cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	*ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
	return sticky();
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
	(void)mode;
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	if (!s || s->capturing)
		return set_last(cudaErrorInvalidValue);
	s->capturing = true;
	s->g = new graph;
	return sticky();
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
	std::lock_guard<std::recursive_mutex> lk(g_q_mu);
	if (!s || !s->capturing)
		return set_last(cudaErrorInvalidValue);
	s->capturing = false;
	*g = s->g;
	bool unjoined = false;
	for (stream *j : s->g->joined) {
		unjoined |= j->cap_ops > j->cap_joined;
		j->capturing = false;
		j->g = NULL;
	}
	if (unjoined) {
		s->g->joined.clear();
		delete s->g;
		*g = NULL;
		s->g = NULL;
		return set_last(cudaErrorStreamCaptureInvalidated); /* CUDA: cudaErrorStreamCaptureUnjoined */
	}
	s->g->joined.clear();
	s->g = NULL;
	return sticky();
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
	(void)flags;
	*x = new graph(*g);
	return sticky();
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
	if (s && s->capturing)
		return set_last(cudaErrorStreamCaptureUnsupported);
	enqueue(s, [x]() {
		for (auto &f : x->ops)
			f();
	});
	return sticky();
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
	delete g;
	return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x)
{
	flush_all(); /* queued launches of it */
	delete x;
	return cudaSuccess;
}

/* ---------------------------------------------------------------------------
 * cuBLAS
 * ------------------------------------------------------------------------- */

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
	*h = new blas{NULL};
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
	h->s = s;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes)
{
	(void)h;
	if (bytes && !dev_range(ws, bytes, "cublasSetWorkspace"))
		return CUBLAS_STATUS_INVALID_VALUE;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
	(void)h, (void)mode;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetSmCountTarget(cublasHandle_t h, int sms)
{
	(void)h;
	return sms < 0 ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_SUCCESS:
		return "CUBLAS_STATUS_SUCCESS";
	case CUBLAS_STATUS_INVALID_VALUE:
		return "CUBLAS_STATUS_INVALID_VALUE";
	case CUBLAS_STATUS_NOT_SUPPORTED:
		return "CUBLAS_STATUS_NOT_SUPPORTED";
	case CUBLAS_STATUS_EXECUTION_FAILED:
		return "CUBLAS_STATUS_EXECUTION_FAILED";
	default:
		return "CUBLAS_STATUS_UNKNOWN";
	}
}

static size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

static float load_elem(const void *p, cudaDataType t, size_t i)
{
	switch (t) {
	case CUDA_R_32F:
		return ((const float *)p)[i];
	case CUDA_R_16F:
		return nz_f16_to_f32(((const uint16_t *)p)[i]);
	default:
		return nz_bf16_to_f32(((const uint16_t *)p)[i]);
	}
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
	(void)algo;
	if (!h || m < 0 || n < 0 || k < 0 || compute != CUBLAS_COMPUTE_32F || Ctype != CUDA_R_32F || Atype != Btype)
		return CUBLAS_STATUS_INVALID_VALUE;
	int arows = transa == CUBLAS_OP_N ? m : k, acols = transa == CUBLAS_OP_N ? k : m;
	int brows = transb == CUBLAS_OP_N ? k : n, bcols = transb == CUBLAS_OP_N ? n : k;
	if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
		return CUBLAS_STATUS_INVALID_VALUE;
	if (m == 0 || n == 0)
		return CUBLAS_STATUS_SUCCESS;
	size_t a_ext = (size_t)lda * (size_t)(acols - 1) + (size_t)arows;
	size_t b_ext = (size_t)ldb * (size_t)(bcols - 1) + (size_t)brows;
	size_t c_ext = (size_t)ldc * (size_t)(n - 1) + (size_t)m;
	if ((k > 0 && (!dev_range(A, a_ext * type_size(Atype), "cublasGemmEx A") ||
	               !dev_range(B, b_ext * type_size(Btype), "cublasGemmEx B"))) ||
	    !dev_range(C, c_ext * 4, "cublasGemmEx C"))
		return CUBLAS_STATUS_EXECUTION_FAILED;
	float al = *(const float *)alpha, be = *(const float *)beta;
	enqueue(h->s, [=]() {
		if (sticky() != cudaSuccess)
			return;
		dev_access da;
		float *c = (float *)C;
		for (int j = 0; j < n; j++)
			for (int i = 0; i < m; i++) {
				float acc = 0;
				for (int p = 0; p < k; p++) {
					size_t ai = transa == CUBLAS_OP_N ? (size_t)i + (size_t)p * lda : (size_t)p + (size_t)i * lda;
					size_t bi = transb == CUBLAS_OP_N ? (size_t)p + (size_t)j * ldb : (size_t)j + (size_t)p * ldb;
					acc += load_elem(A, Atype, ai) * load_elem(B, Btype, bi);
				}
				float *cij = c + (size_t)i + (size_t)j * ldc;
				*cij = be == 0.0f ? al * acc : al * acc + be * *cij;
			}
		check_guards();
	});
	return CUBLAS_STATUS_SUCCESS;
}
