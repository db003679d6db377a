/*
 * emu.h — a CPU emulation of the subset of CUDA, the CUDA runtime and
 * cuBLAS that the CUDA backend uses, for testing that backend on machines
 * without a GPU (build/libnozzle_cudaemu.so, `make cuda-emu`).
 *
 * The backend's .cu files compile unchanged with a C++ compiler and
 * -DNZ_EMU: kernels become host functions; a launch runs every block in
 * turn, each thread of a block as a fiber on the calling OS thread, so
 * __syncthreads, __syncwarp and the warp shuffles behave as on a GPU
 * (fibers switch at barriers; the order fibers run in alternates between
 * phases, which exposes missing barriers). __shared__ variables become
 * function-static storage (one block runs at a time, under a process-wide
 * lock). Device memory is host memory with guard bytes around every
 * allocation (checked at each synchronisation), poisoned with 0xff bytes
 * (NaN as f32, f16 and bf16) when allocated, and every copy is checked
 * against the bounds of the allocation it touches. cuBLAS GEMMs are plain
 * loops with the library's column-major semantics. Stream capture records
 * launches and copies and a graph launch replays them.
 *
 * Failures a GPU would report (bad launch sizes, out-of-bounds copies,
 * barrier misuse, deadlocks, guard-byte damage) become a sticky
 * cudaErrorLaunchFailure whose cudaGetErrorString names the problem.
 *
 * This is a test tool, not a product backend: it is slow and runs every
 * kernel on one OS thread.
 */
#ifndef NZ_EMU_H
#define NZ_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

/* ---- language ------------------------------------------------------------ */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
	unsigned x, y, z;
	dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

extern dim3 threadIdx, blockIdx, blockDim, gridDim;
static const int warpSize = 32;

struct alignas(8) uint2 {
	unsigned x, y;
};
struct alignas(16) uint4 {
	unsigned x, y, z, w;
};
struct alignas(8) float2 {
	float x, y;
};
struct alignas(16) float4 {
	float x, y, z, w;
};

/* ---- 16-bit float types -------------------------------------------------- */
struct __nv_bfloat16 {
	uint16_t x;
};
struct __half {
	uint16_t x;
};

namespace emu {
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
} // namespace emu

inline float __bfloat162float(__nv_bfloat16 v) { return emu::bf16_to_f32(v.x); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16{emu::f32_to_bf16(f)}; }
inline float __half2float(__half v) { return emu::f16_to_f32(v.x); }
inline __half __float2half(float f) { return __half{emu::f32_to_f16(f)}; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline float __uint_as_float(unsigned u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}
inline unsigned __float_as_uint(float f)
{
	unsigned u;
	memcpy(&u, &f, 4);
	return u;
}
inline float __int_as_float(int u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}
inline int __float_as_int(float f)
{
	int u;
	memcpy(&u, &f, 4);
	return u;
}

/* ---- device math ---------------------------------------------------------- */
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
/* round-to-nearest arithmetic that a compiler may not contract into FMAs */
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T> inline T __ldg(const T *p) { return *p; }

/* ---- synchronisation and warp exchange ------------------------------------ */
namespace emu {
void syncthreads();
void syncwarp();
int lane();
/* per-warp exchange slots (8 bytes per lane) */
unsigned char *warp_slots();
void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* fails unless p is a multiple of a */
void check_align(const void *p, size_t a);
} // namespace emu

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
	(void)mask;
	emu::syncwarp();
}

namespace emu {
template <class T> T shfl_exchange(unsigned mask, T v, int src, int width)
{
	static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
	if (mask != 0xffffffffu)
		fail("warp shuffle with a partial mask 0x%x", mask);
	if (width <= 0 || width > 32 || (width & (width - 1)))
		fail("warp shuffle width %d", width);
	int ln = lane();
	unsigned char *slots = warp_slots();
	memcpy(slots + 8 * ln, &v, sizeof v);
	syncwarp();
	int base = ln & ~(width - 1);
	int from = (src < base || src >= base + width) ? ln : src;
	T r;
	memcpy(&r, slots + 8 * from, sizeof r);
	syncwarp();
	return r;
}
} // namespace emu

template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
	int ln = emu::lane();
	return emu::shfl_exchange(mask, v, (ln & ~(width - 1)) + (((ln & (width - 1)) ^ lane_mask) & (width - 1)), width);
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32)
{
	int ln = emu::lane();
	return emu::shfl_exchange(mask, v, (ln & ~(width - 1)) + (src_lane & (width - 1)), width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
	int ln = emu::lane();
	int src = (int)((ln & (width - 1)) + delta) < width ? ln + (int)delta : ln;
	return emu::shfl_exchange(mask, v, src, width);
}

/* Fibers never run concurrently, so fences are no-ops and atomics plain
 * read-modify-writes. */
inline void __threadfence() {}
template <class T> inline T atomicAdd(T *p, T v)
{
	T old = *p;
	*p = old + v;
	return old;
}
inline int atomicMax(int *p, int v)
{
	int old = *p;
	*p = old > v ? old : v;
	return old;
}
inline int atomicMin(int *p, int v)
{
	int old = *p;
	*p = old < v ? old : v;
	return old;
}
inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v)
{
	unsigned long long old = *p;
	*p = old > v ? old : v;
	return old;
}

/* ---- runtime API ------------------------------------------------------------ */
typedef enum cudaError {
	cudaSuccess = 0,
	cudaErrorInvalidValue = 1,
	cudaErrorMemoryAllocation = 2,
	cudaErrorInitializationError = 3,
	cudaErrorInvalidConfiguration = 9,
	cudaErrorInvalidDevice = 101,
	cudaErrorNoDevice = 100,
	cudaErrorNotReady = 600,
	cudaErrorLaunchFailure = 719,
	cudaErrorStreamCaptureUnsupported = 900,
	cudaErrorStreamCaptureInvalidated = 901,
} cudaError_t;

typedef enum cudaMemcpyKind {
	cudaMemcpyHostToHost = 0,
	cudaMemcpyHostToDevice = 1,
	cudaMemcpyDeviceToHost = 2,
	cudaMemcpyDeviceToDevice = 3,
	cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef enum cudaFuncAttribute {
	cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
} cudaFuncAttribute;

typedef enum cudaStreamCaptureMode {
	cudaStreamCaptureModeGlobal = 0,
	cudaStreamCaptureModeThreadLocal = 1,
	cudaStreamCaptureModeRelaxed = 2,
} cudaStreamCaptureMode;

#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00

struct cudaDeviceProp {
	char name[256];
	size_t totalGlobalMem;
	size_t sharedMemPerBlock;
	size_t sharedMemPerBlockOptin;
	int warpSize;
	int maxThreadsPerBlock;
	int multiProcessorCount;
	int l2CacheSize;
	int major;
	int minor;
};

namespace emu {
struct stream;
struct event;
struct graph;
} // namespace emu
typedef emu::stream *cudaStream_t;
typedef emu::event *cudaEvent_t;
typedef emu::graph *cudaGraph_t;
typedef emu::graph *cudaGraphExec_t;
typedef struct CUgraphNode_st *cudaGraphNode_t;

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s = 0);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
/* one stream priority (0): the emulation runs launches in stream order */
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned flags, int priority);
cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x);
template <class T> inline cudaError_t cudaFuncSetAttribute(T *entry, cudaFuncAttribute attr, int value)
{
	(void)entry, (void)attr, (void)value;
	return cudaSuccess;
}

namespace emu {
/* Runs (or, while s is being captured, records) a launch. */
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t s, std::function<void()> body);
/* The launch's dynamic shared memory (NZ_DYN_SMEM). */
unsigned char *dyn_smem();
} // namespace emu

/* ---- cuBLAS ------------------------------------------------------------------ */
typedef enum {
	CUBLAS_STATUS_SUCCESS = 0,
	CUBLAS_STATUS_NOT_INITIALIZED = 1,
	CUBLAS_STATUS_ALLOC_FAILED = 3,
	CUBLAS_STATUS_INVALID_VALUE = 7,
	CUBLAS_STATUS_EXECUTION_FAILED = 13,
	CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType;
typedef cudaDataType cudaDataType_t;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;
namespace emu {
struct blas;
}
typedef emu::blas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
cublasStatus_t cublasSetSmCountTarget(cublasHandle_t h, int sms);
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);

#endif /* NZ_EMU_H */
