/*
 * lora_out.cuh — the LoRA expand as the kernels consuming a projection's
 * output run it (nz_lora_out, cuda_kernels.h): a block working for one
 * token stages that token's v rows (the shrink's splits summed in order)
 * in shared memory, then each output feature adds its rank-r product with
 * its row of B. Folding the expand into the consumers saves a kernel, a
 * write and a read of the deltas per projection group.
 */
#ifndef NZ_LORA_OUT_CUH
#define NZ_LORA_OUT_CUH

#include "cuda_kernels.h"

/* v[i] for i < 3 without indexing a parameter struct at run time (which
 * would copy it to local memory). */
template <class V> __device__ __forceinline__ V nz_pick3(const V (&v)[3], int i)
{
	return i == 0 ? v[0] : i == 1 ? v[1] : v[2];
}

/* The rank of module mi of the group in slot's adapter (0: absent). Lo
 * is nz_lora_out or nz_gemv_lora: the LoRA of a group's consumer or of a
 * fused GEMV. */
template <class Lo> __device__ __forceinline__ int nz_lora_rank(const Lo &lo, int slot, int mi)
{
	return lo.rank_tab[((int64_t)slot * lo.L + lo.layer) * NZ_M_COUNT + nz_pick3(lo.grp.module, mi)];
}

/* Row o of module mi's B [out][R] in slot (T: the slots' dtype). */
template <class T, class Lo> __device__ __forceinline__ const T *nz_lora_b(const Lo &lo, int slot, int mi, int64_t o)
{
	return (const T *)lo.slots + (int64_t)slot * lo.slot_stride + nz_pick3(lo.grp.b_off, mi) + o * lo.R;
}

/* Called by every thread of a block that works for token t alone: returns
 * t's adapter slot, or -1 when the step has no LoRA or t no adapter; with
 * a slot, vs [nmod][R] (dynamic shared memory) holds t's v rows and the
 * block has passed a barrier. The result is the same in every thread. */
__device__ __forceinline__ int nz_lora_stage(const nz_lora_out &lo, const int32_t *tok_lora, int64_t t, float *vs)
{
	if (!lo.v)
		return -1;
	const int slot = tok_lora[t] - 1;
	if (slot < 0)
		return -1;
	for (int mi = 0; mi < lo.grp.nmod; mi++) {
		const int r = nz_lora_rank(lo, slot, mi);
		const float *src = lo.v + mi * lo.v_mod_stride + t * lo.R;
		for (int k = threadIdx.x; k < r; k += blockDim.x) {
			float s = 0.0f;
			for (int sp = 0; sp < lo.splits; sp++)
				s += src[sp * lo.v_split_stride + k];
			vs[mi * lo.R + k] = s;
		}
	}
	__syncthreads();
	return slot;
}

/* The delta of output feature o of module mi (r = nz_lora_rank) for the
 * token whose v rows nz_lora_stage put in vs. T is the slots' dtype (the
 * weights'). */
template <class T>
__device__ __forceinline__ float nz_lora_delta(const nz_lora_out &lo, int slot, const float *vs, int mi, int r, int64_t o)
{
	const T *b = nz_lora_b<T>(lo, slot, mi, o);
	const float *vr = vs + mi * lo.R;
	float acc = 0.0f;
	if ((lo.R & 7) == 0) {
		/* two 16-byte loads in flight, then their products in order of k */
		for (int k0 = 0; k0 < r; k0 += 16) {
			float b0[8], b1[8];
			const bool two = k0 + 8 < r;
			nz_load8(b + k0, b0);
			if (two)
				nz_load8(b + k0 + 8, b1);
			if (r - k0 >= 8) {
#pragma unroll
				for (int e = 0; e < 8; e++)
					acc += vr[k0 + e] * b0[e];
			} else {
				for (int e = 0; e < r - k0; e++)
					acc += vr[k0 + e] * b0[e];
			}
			if (two) {
				if (r - k0 >= 16) {
#pragma unroll
					for (int e = 0; e < 8; e++)
						acc += vr[k0 + 8 + e] * b1[e];
				} else {
					for (int e = 0; e < r - k0 - 8; e++)
						acc += vr[k0 + 8 + e] * b1[e];
				}
			}
		}
	} else {
		for (int k = 0; k < r; k++)
			acc += vr[k] * nz_f32(b[k]);
	}
	return acc;
}

#endif /* NZ_LORA_OUT_CUH */
