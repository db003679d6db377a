/*
 * kernels_lora.cu — batched multi-adapter LoRA (engine-spec §4): after the
 * base GEMM of a projection group, for every adapter segment
 *   shrink: v[tok][0:r] = x[tok] · Aᵀ       (in -> r, f32 accumulation)
 *   expand: y[tok][col + o] += v[tok] · B[o] (r -> out, scale folded in B)
 * The expand writes the deltas into their own buffer (y_lora), zero for
 * a module the slot lacks, so the LoRA branch does not depend on the base
 * GEMM and runs beside it on another stream; the kernel consuming the
 * projection adds y_lora for the tokens that have an adapter.
 * Tokens are grouped by adapter slot into work items of up to NZ_LORA_TM
 * tokens (one segment's prefill tokens, or the decode tokens of the
 * sequences sharing a slot): each block reads its slot's A or B tile once
 * for all the item's tokens. That is SGMV (segmented gather) for prefill
 * and BGMV (a gathered matrix per token) for decode, in one kernel pair.
 *
 * Slots are padded to max_rank R; each (slot, layer, module) has a rank
 * in the rank table (0 = module absent) and only rows/columns below it
 * are read, so a padded slot costs what its real rank costs.
 */
#include "cuda_kernels.h"

namespace {

const int kShrinkThreads = 512; /* a warp per rank row up to rank 16 */

/* v[i] for i < 3 without indexing the parameter struct at run time (which
 * would copy it to local memory). */
template <class V> __device__ __forceinline__ V pick(const V (&v)[3], int i) { return i == 0 ? v[0] : i == 1 ? v[1] : v[2]; }
const int kExpandThreads = 256;

template <class T>
__global__ void __launch_bounds__(512)
    lora_shrink_kernel(const int32_t *__restrict__ scalars, const int32_t *__restrict__ items,
                       const int32_t *__restrict__ lora_tok, const T *__restrict__ x, int64_t in,
                       const T *__restrict__ slots, int64_t slot_stride, nz_lora_group grp,
                       const int32_t *__restrict__ rank_tab, int layer, int L, int R, float *__restrict__ v,
                       int64_t v_mod_stride)
{
	const int it = blockIdx.x, mi = blockIdx.y;
	if (it >= scalars[NZ_SC_LORA_ITEMS])
		return;
	const int start = items[3 * it], ntok = items[3 * it + 1], slot = items[3 * it + 2];
	const int r = rank_tab[((int64_t)slot * L + layer) * NZ_M_COUNT + pick(grp.module, mi)];
	if (r == 0)
		return;
	const T *A = slots + (int64_t)slot * slot_stride + pick(grp.a_off, mi);
	float *vo = v + mi * v_mod_stride;
	int tok[NZ_LORA_TM];
#pragma unroll
	for (int j = 0; j < NZ_LORA_TM; j++)
		tok[j] = j < ntok ? lora_tok[start + j] : 0;
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	const bool vec = (in & 7) == 0;
	for (int k = warp; k < r; k += nw) {
		float acc[NZ_LORA_TM];
#pragma unroll
		for (int j = 0; j < NZ_LORA_TM; j++)
			acc[j] = 0.0f;
		const T *a = A + (int64_t)k * in;
		if (vec) {
			/* four 16-byte loads of A in flight per lane, then the tokens */
			const int64_t step = 32 * 8;
			int64_t i = (int64_t)lane * 8;
			for (; i + 3 * step < in; i += 4 * step) {
				float av[4][8];
#pragma unroll
				for (int c = 0; c < 4; c++)
					nz_load8(a + i + c * step, av[c]);
#pragma unroll
				for (int j = 0; j < NZ_LORA_TM; j++) {
					if (j < ntok) {
						const T *xr = x + (int64_t)tok[j] * in + i;
#pragma unroll
						for (int c = 0; c < 4; c++) {
							float xv[8];
							nz_load8(xr + c * step, xv);
#pragma unroll
							for (int e = 0; e < 8; e++)
								acc[j] += av[c][e] * xv[e];
						}
					}
				}
			}
			for (; i < in; i += step) {
				float av[8];
				nz_load8(a + i, av);
#pragma unroll
				for (int j = 0; j < NZ_LORA_TM; j++) {
					if (j < ntok) {
						float xv[8];
						nz_load8(x + (int64_t)tok[j] * in + i, xv);
#pragma unroll
						for (int e = 0; e < 8; e++)
							acc[j] += av[e] * xv[e];
					}
				}
			}
		} else {
			for (int64_t i = lane; i < in; i += 32) {
				float av = nz_f32(a[i]);
#pragma unroll
				for (int j = 0; j < NZ_LORA_TM; j++)
					if (j < ntok)
						acc[j] += av * nz_f32(x[(int64_t)tok[j] * in + i]);
			}
		}
#pragma unroll
		for (int j = 0; j < NZ_LORA_TM; j++)
			if (j < ntok) /* ntok is the same in every lane */
				acc[j] = nz_warp_sum(acc[j]);
		if (lane == 0) {
#pragma unroll
			for (int j = 0; j < NZ_LORA_TM; j++)
				if (j < ntok)
					vo[(int64_t)tok[j] * R + k] = acc[j];
		}
	}
}

template <class T>
__global__ void __launch_bounds__(256)
    lora_expand_kernel(const int32_t *__restrict__ scalars, const int32_t *__restrict__ items,
                       const int32_t *__restrict__ lora_tok, const float *__restrict__ v, int64_t v_mod_stride,
                       const T *__restrict__ slots, int64_t slot_stride, nz_lora_group grp,
                       const int32_t *__restrict__ rank_tab, int layer, int L, int R, float *__restrict__ y,
                       int64_t y_stride, int n_oc)
{
	const int it = blockIdx.x / n_oc, oc = blockIdx.x % n_oc, mi = blockIdx.y;
	if (it >= scalars[NZ_SC_LORA_ITEMS])
		return;
	const int start = items[3 * it], ntok = items[3 * it + 1], slot = items[3 * it + 2];
	const int r = rank_tab[((int64_t)slot * L + layer) * NZ_M_COUNT + pick(grp.module, mi)];
	const int o = oc * blockDim.x + threadIdx.x;
	if (o >= pick(grp.out, mi))
		return;
	const T *b = slots + (int64_t)slot * slot_stride + pick(grp.b_off, mi) + (int64_t)o * R;
	const float *vm = v + mi * v_mod_stride;
	int tok[NZ_LORA_TM];
	float acc[NZ_LORA_TM];
#pragma unroll
	for (int j = 0; j < NZ_LORA_TM; j++) {
		tok[j] = j < ntok ? lora_tok[start + j] : 0;
		acc[j] = 0.0f;
	}
	if ((R & 7) == 0) {
		for (int k0 = 0; k0 < r; k0 += 8) {
			float bv[8];
			nz_load8(b + k0, bv);
			const int ke = r - k0 < 8 ? r - k0 : 8;
#pragma unroll
			for (int j = 0; j < NZ_LORA_TM; j++) {
				if (j < ntok) {
					const float *vr = vm + (int64_t)tok[j] * R + k0;
					for (int e = 0; e < ke; e++)
						acc[j] += vr[e] * bv[e];
				}
			}
		}
	} else {
		for (int k = 0; k < r; k++) {
			float bk = nz_f32(b[k]);
#pragma unroll
			for (int j = 0; j < NZ_LORA_TM; j++)
				if (j < ntok)
					acc[j] += vm[(int64_t)tok[j] * R + k] * bk;
		}
	}
#pragma unroll
	for (int j = 0; j < NZ_LORA_TM; j++)
		if (j < ntok)
			y[(int64_t)tok[j] * y_stride + pick(grp.col, mi) + o] = acc[j];
}

} // namespace

cudaError_t nz_k_lora_shrink(int dtype, cudaStream_t s, int64_t max_items, const int32_t *scalars,
                             const int32_t *items, const int32_t *lora_tok, const void *x, int64_t in,
                             const void *slots, int64_t slot_stride, nz_lora_group grp, const int32_t *rank_tab,
                             int layer, int L, int R, float *v, int64_t v_mod_stride)
{
	dim3 grid((unsigned)max_items, (unsigned)grp.nmod);
	switch (dtype) {
	case NZ_BF16:
		NZ_LAUNCH(lora_shrink_kernel<__nv_bfloat16>, grid, dim3(kShrinkThreads), 0, s, scalars, items, lora_tok,
		          (const __nv_bfloat16 *)x, in, (const __nv_bfloat16 *)slots, slot_stride, grp, rank_tab, layer, L, R,
		          v, v_mod_stride);
		break;
	case NZ_F16:
		NZ_LAUNCH(lora_shrink_kernel<__half>, grid, dim3(kShrinkThreads), 0, s, scalars, items, lora_tok,
		          (const __half *)x, in, (const __half *)slots, slot_stride, grp, rank_tab, layer, L, R, v,
		          v_mod_stride);
		break;
	default:
		NZ_LAUNCH(lora_shrink_kernel<float>, grid, dim3(kShrinkThreads), 0, s, scalars, items, lora_tok,
		          (const float *)x, in, (const float *)slots, slot_stride, grp, rank_tab, layer, L, R, v, v_mod_stride);
		break;
	}
	return cudaGetLastError();
}

cudaError_t nz_k_lora_expand(int dtype, cudaStream_t s, int64_t max_items, const int32_t *scalars,
                             const int32_t *items, const int32_t *lora_tok, const float *v, int64_t v_mod_stride,
                             const void *slots, int64_t slot_stride, nz_lora_group grp, const int32_t *rank_tab,
                             int layer, int L, int R, float *y, int64_t y_stride, int max_out)
{
	int n_oc = (max_out + kExpandThreads - 1) / kExpandThreads;
	dim3 grid((unsigned)(max_items * n_oc), (unsigned)grp.nmod);
	switch (dtype) {
	case NZ_BF16:
		NZ_LAUNCH(lora_expand_kernel<__nv_bfloat16>, grid, dim3(kExpandThreads), 0, s, scalars, items, lora_tok, v,
		          v_mod_stride, (const __nv_bfloat16 *)slots, slot_stride, grp, rank_tab, layer, L, R, y, y_stride,
		          n_oc);
		break;
	case NZ_F16:
		NZ_LAUNCH(lora_expand_kernel<__half>, grid, dim3(kExpandThreads), 0, s, scalars, items, lora_tok, v,
		          v_mod_stride, (const __half *)slots, slot_stride, grp, rank_tab, layer, L, R, y, y_stride, n_oc);
		break;
	default:
		NZ_LAUNCH(lora_expand_kernel<float>, grid, dim3(kExpandThreads), 0, s, scalars, items, lora_tok, v,
		          v_mod_stride, (const float *)slots, slot_stride, grp, rank_tab, layer, L, R, y, y_stride, n_oc);
		break;
	}
	return cudaGetLastError();
}
