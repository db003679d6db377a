/*
 * kernels_gemv.cu — y[t][o] = x[t]·W[o] for up to NZ_GEMV_MAX_T tokens:
 * the projections of small decode batches, where a GEMM library's tiles
 * would mostly be empty and the work is one pass over W at memory speed.
 *
 * One warp per output row: the lanes stream the row with 16-byte loads
 * (four in flight per lane), each load used for every token; the tokens'
 * inputs are small and stay in L1. f32 accumulation, a warp reduction,
 * and one f32 store per (token, row): the same [T][out] layout a GEMM
 * writes.
 */
#include "cuda_kernels.h"

namespace {

const int kWarps = 8;

template <class T>
__global__ void __launch_bounds__(256)
    gemv_kernel(const T *__restrict__ W, const T *__restrict__ x, int64_t in, int64_t out, int ntok,
                float *__restrict__ y)
{
	nz_pdl_begin();
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	const int64_t o = (int64_t)blockIdx.x * kWarps + warp;
	if (o >= out) /* the whole warp leaves together */
		return;
	const T *w = W + o * in;
	float acc[NZ_GEMV_MAX_T];
#pragma unroll
	for (int j = 0; j < NZ_GEMV_MAX_T; j++)
		acc[j] = 0.0f;
	if ((in & 7) == 0) {
		const int64_t step = 32 * 8;
		int64_t i = (int64_t)lane * 8;
		for (; i + 3 * step < in; i += 4 * step) {
			float wv[4][8];
#pragma unroll
			for (int c = 0; c < 4; c++)
				nz_load8(w + i + c * step, wv[c]);
#pragma unroll
			for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
				if (j < ntok) {
					const T *xr = x + (int64_t)j * in + i;
#pragma unroll
					for (int c = 0; c < 4; c++) {
						float xv[8];
						nz_load8(xr + c * step, xv);
#pragma unroll
						for (int e = 0; e < 8; e++)
							acc[j] += wv[c][e] * xv[e];
					}
				}
			}
		}
		for (; i < in; i += step) {
			float wv[8];
			nz_load8(w + i, wv);
#pragma unroll
			for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
				if (j < ntok) {
					float xv[8];
					nz_load8(x + (int64_t)j * in + i, xv);
#pragma unroll
					for (int e = 0; e < 8; e++)
						acc[j] += wv[e] * xv[e];
				}
			}
		}
	} else {
		for (int64_t i = lane; i < in; i += 32) {
			float wv = nz_f32(w[i]);
#pragma unroll
			for (int j = 0; j < NZ_GEMV_MAX_T; j++)
				if (j < ntok)
					acc[j] += wv * nz_f32(x[(int64_t)j * in + i]);
		}
	}
#pragma unroll
	for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
		if (j < ntok) { /* ntok is the same in every lane */
			float v = nz_warp_sum(acc[j]);
			if (lane == 0)
				y[(int64_t)j * out + o] = v;
		}
	}
}

} // namespace

cudaError_t nz_k_gemv(int dtype, cudaStream_t s, int64_t T_, const void *x, int64_t in, const void *W, int64_t out,
                      float *y)
{
	dim3 grid((unsigned)((out + kWarps - 1) / kWarps));
	switch (dtype) {
	case NZ_BF16:
		NZ_LAUNCH_PDL(gemv_kernel<__nv_bfloat16>, grid, dim3(32 * kWarps), 0, s, (const __nv_bfloat16 *)W,
		          (const __nv_bfloat16 *)x, in, out, (int)T_, y);
		break;
	case NZ_F16:
		NZ_LAUNCH_PDL(gemv_kernel<__half>, grid, dim3(32 * kWarps), 0, s, (const __half *)W, (const __half *)x, in, out,
		          (int)T_, y);
		break;
	default:
		NZ_LAUNCH_PDL(gemv_kernel<float>, grid, dim3(32 * kWarps), 0, s, (const float *)W, (const float *)x, in, out,
		          (int)T_, y);
		break;
	}
	return cudaGetLastError();
}
