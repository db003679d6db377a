/*
 * cuda_common.cuh — what every file of the CUDA backend shares: the CUDA
 * headers (or, with -DNZ_EMU, the CPU emulation in emu/emu.h), the launch
 * macro, dtype conversion and vector loads, warp and block reductions.
 *
 * Kernels are launched with NZ_LAUNCH(kernel, grid, block, smem, stream,
 * args...) rather than <<<...>>>, so the same source compiles for the GPU
 * with nvcc and for the emulator with a C++ compiler.
 */
#ifndef NZ_CUDA_COMMON_CUH
#define NZ_CUDA_COMMON_CUH

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nozzle_engine.h" /* NZ_ACT_* */

#ifdef NZ_EMU
#include "emu/emu.h"
#define NZ_LAUNCH(kern, grid, block, smem, stream, ...)                                   \
	::emu::launch((grid), (block), (smem), (stream), [=]() { (kern)(__VA_ARGS__); })
#define NZ_DYN_SMEM(type, name) type *name = reinterpret_cast<type *>(::emu::dyn_smem())
#define NZ_CHECK_ALIGN(p, a) ::emu::check_align((p), (a))
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define NZ_LAUNCH(kern, grid, block, smem, stream, ...)                                   \
	do {                                                                                  \
		auto nz_kern_ = (kern);                                                           \
		nz_kern_<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);                     \
	} while (0)
#define NZ_DYN_SMEM(type, name)                                                           \
	extern __shared__ __align__(16) unsigned char nz_dyn_smem_[];                         \
	type *name = reinterpret_cast<type *>(nz_dyn_smem_)
#define NZ_CHECK_ALIGN(p, a) ((void)0)
#endif

/* Programmatic dependent launch (Hopper): NZ_LAUNCH_PDL launches a kernel
 * that may be scheduled while the kernel before it on the stream is still
 * running, so that launch latency hides behind work. Every such kernel
 * calls nz_pdl_begin() first: it waits until the kernels before it have
 * finished and their writes are visible (so the kernel may read and write
 * anything), then lets the next kernel be scheduled. Elsewhere (before
 * sm_90, with nz_cuda_pdl 0, in the emulator) it is a plain launch and
 * nz_pdl_begin() does nothing. */
__device__ __forceinline__ void nz_pdl_begin()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
	asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
#ifdef NZ_EMU
#define NZ_LAUNCH_PDL NZ_LAUNCH
#else
/* Whether NZ_LAUNCH_PDL asks for programmatic serialization (set when an
 * engine is created: sm_90 or later with NOZZLE_CUDA_PDL=1). Off by
 * default: on an H200 with CUDA 13 it made batch-1 decode 6% faster, but
 * one parity test (F16) hung with it, cause not yet found. */
extern int nz_cuda_pdl;
#define NZ_LAUNCH_PDL(kern, grid_, block_, smem_, stream_, ...)                          \
	do {                                                                                  \
		auto nz_kern_ = (kern);                                                           \
		cudaLaunchConfig_t nz_cfg_ = {};                                                  \
		cudaLaunchAttribute nz_attr_[1] = {};                                             \
		nz_attr_[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;              \
		nz_attr_[0].val.programmaticStreamSerializationAllowed = nz_cuda_pdl;             \
		nz_cfg_.gridDim = (grid_);                                                        \
		nz_cfg_.blockDim = (block_);                                                      \
		nz_cfg_.dynamicSmemBytes = (smem_);                                               \
		nz_cfg_.stream = (stream_);                                                       \
		nz_cfg_.attrs = nz_attr_;                                                         \
		nz_cfg_.numAttrs = 1;                                                             \
		cudaLaunchKernelEx(&nz_cfg_, nz_kern_, __VA_ARGS__);                              \
	} while (0)
#endif

typedef __nv_bfloat16 nz_bf16_t;
typedef __half nz_f16_t;

/* ---- conversion ------------------------------------------------------------- */
__device__ __forceinline__ float nz_f32(float v) { return v; }
__device__ __forceinline__ float nz_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float nz_f32(__half v) { return __half2float(v); }

template <class T> __device__ __forceinline__ T nz_cvt(float v);
template <> __device__ __forceinline__ float nz_cvt<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 nz_cvt<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half nz_cvt<__half>(float v) { return __float2half(v); }

/* RoPE of the pair (x1, x2) with cosine c and sine sn. Every kernel that
 * rotates uses this, with each product rounded before the sum: a compiler
 * contracts a·b − c·d into an FMA one way or the other depending on the
 * code around it, and kernels that must agree bit for bit (the fused and
 * the separate RoPE) would not. */
__device__ __forceinline__ void nz_rope(float x1, float x2, float c, float sn, float &a, float &b)
{
	a = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, sn));
	b = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, sn));
}

/* The dims of pair j (j < hd/2) of a head that RoPE turns together, with
 * rh = rotary_dim/2: the first rh pairs are the rotated dims' rotate-half
 * pairs (j, j + rh); the others pair the dims after rotary_dim the same
 * way, (rd + k, rd + k + (hd - rd)/2) for k = j - rh, and their cos/sin
 * table entries are 1 and 0, so nz_rope leaves them as they are. With rh =
 * hd/2 (every dim rotated) it is (j, j + hd/2). */
__device__ __forceinline__ void nz_rope_pair(int j, int rh, int hd, int &lo, int &hi)
{
	if (j < rh) {
		lo = j, hi = j + rh;
	} else {
		lo = 2 * rh + (j - rh);
		hi = lo + (hd - 2 * rh) / 2;
	}
}

/* The gated MLP activation act(g) · u (act: NZ_ACT_*, uniform across a
 * launch), as every kernel that applies it computes it (the fused GEMV and
 * the separate activation kernel must agree bit for bit): silu, or
 * PyTorch's gelu(approximate="tanh") 0.5·g·(1 + tanh(√(2/π)·(g +
 * 0.044715·g³))) in the CPU backend's form (nz_gelu_tanh, common.h):
 * g·sigmoid(2·√(2/π)·(g + 0.044715·g³)), the same function. */
__device__ __forceinline__ float nz_act_mul(int act, float g, float u)
{
	if (act == NZ_ACT_GELU_TANH)
		return g / (1.0f + expf(-1.5957691216057308f * (g + 0.044715f * g * g * g))) * u;
	return g / (1.0f + expf(-g)) * u;
}

/* Gemma's soft-capping cap · tanh(x / cap), for cap > 0 (nz_softcap on the CPU). */
__device__ __forceinline__ float nz_softcap_f(float x, float cap) { return cap * tanhf(x / cap); }

/* ---- 8-element vector loads --------------------------------------------------
 * nz_load8(p, v) reads p[0..8) as f32; p must be 16-byte aligned (32 for
 * float is not needed: two 16-byte loads). */
__device__ __forceinline__ void nz_unpack_bf16x2(unsigned w, float &lo, float &hi)
{
	lo = __uint_as_float(w << 16);
	hi = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void nz_unpack_f16x2(unsigned w, float &lo, float &hi)
{
	lo = __half2float(__ushort_as_half((unsigned short)(w & 0xffffu)));
	hi = __half2float(__ushort_as_half((unsigned short)(w >> 16)));
}
__device__ __forceinline__ void nz_load8(const __nv_bfloat16 *p, float v[8])
{
	NZ_CHECK_ALIGN(p, 16);
	uint4 u = *reinterpret_cast<const uint4 *>(p);
	nz_unpack_bf16x2(u.x, v[0], v[1]);
	nz_unpack_bf16x2(u.y, v[2], v[3]);
	nz_unpack_bf16x2(u.z, v[4], v[5]);
	nz_unpack_bf16x2(u.w, v[6], v[7]);
}
__device__ __forceinline__ void nz_load8(const __half *p, float v[8])
{
	NZ_CHECK_ALIGN(p, 16);
	uint4 u = *reinterpret_cast<const uint4 *>(p);
	nz_unpack_f16x2(u.x, v[0], v[1]);
	nz_unpack_f16x2(u.y, v[2], v[3]);
	nz_unpack_f16x2(u.z, v[4], v[5]);
	nz_unpack_f16x2(u.w, v[6], v[7]);
}
__device__ __forceinline__ void nz_load8(const float *p, float v[8])
{
	NZ_CHECK_ALIGN(p, 16);
	float4 a = *reinterpret_cast<const float4 *>(p);
	float4 b = *reinterpret_cast<const float4 *>(p + 4);
	v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
	v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

/* ---- reductions ---------------------------------------------------------------
 * Warp reductions leave the result in every lane. Block reductions need
 * blockDim.x to be a multiple of 32 (at most 1024), are called by every
 * thread of the block, and return the same value everywhere, summed in a
 * fixed order (deterministic). red holds 32 values of the type. */
__device__ __forceinline__ float nz_warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ double nz_warp_sum(double v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}
__device__ __forceinline__ float nz_warp_max(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
__device__ __forceinline__ unsigned long long nz_warp_max_u64(unsigned long long v)
{
	for (int o = 16; o > 0; o >>= 1) {
		unsigned long long w = __shfl_xor_sync(0xffffffffu, v, o);
		v = w > v ? w : v;
	}
	return v;
}
__device__ __forceinline__ unsigned long long nz_warp_min_u64(unsigned long long v)
{
	for (int o = 16; o > 0; o >>= 1) {
		unsigned long long w = __shfl_xor_sync(0xffffffffu, v, o);
		v = w < v ? w : v;
	}
	return v;
}

template <class V> __device__ __forceinline__ V nz_block_sum(V v, V *red)
{
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = nz_warp_sum(v);
	__syncthreads(); /* red may still be read by an earlier reduction */
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	V r = 0;
	for (int i = 0; i < nw; i++)
		r += red[i];
	return r;
}

__device__ __forceinline__ unsigned long long nz_block_max_u64(unsigned long long v, unsigned long long *red)
{
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = nz_warp_max_u64(v);
	__syncthreads();
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	unsigned long long r = 0;
	for (int i = 0; i < nw; i++)
		r = red[i] > r ? red[i] : r;
	return r;
}

__device__ __forceinline__ unsigned long long nz_block_min_u64(unsigned long long v, unsigned long long *red)
{
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	v = nz_warp_min_u64(v);
	__syncthreads();
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	unsigned long long r = ~0ull;
	for (int i = 0; i < nw; i++)
		r = red[i] < r ? red[i] : r;
	return r;
}

#endif /* NZ_CUDA_COMMON_CUH */
