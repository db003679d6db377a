/*
 * kernels_lora.cu — batched multi-adapter LoRA (engine-spec §4): after the
 * base GEMM of a projection group, for every adapter segment
 *   shrink: v[tok][0:r] = x[tok] · Aᵀ       (in -> r, f32 accumulation)
 *   expand: y[tok][col + o] += v[tok] · B[o] (r -> out, scale folded in B)
 * The shrink (here) writes v into a buffer of its own: it does not depend
 * on the base GEMM and runs beside it on another stream. The expand is
 * done by the kernel that consumes the projection's output (RoPE + KV
 * write, residual add + norm, SiLU gate: lora_out.cuh), as it reads y,
 * for the tokens that have an adapter.
 * Tokens are grouped by adapter slot into work items of up to NZ_LORA_TM
 * tokens (one segment's prefill tokens, or the decode tokens of the
 * sequences sharing a slot): each block reads its slot's A tile once for
 * all the item's tokens. That is SGMV (segmented gather) for prefill and
 * BGMV (a gathered matrix per token) for decode, in one kernel.
 *
 * A decode step has few work items, and a shrink that gave each item one
 * block would read a whole A (r rows of up to I elements) through one SM:
 * so a shrink block takes kShrinkWarps rank rows of one item and module,
 * and where that still leaves the GPU idle the input features are split
 * into chunks (of at least kShrinkChunkFew or kShrinkChunkMany elements,
 * one block each) whose partial sums the expand adds up, in a fixed
 * order: the result does not depend on scheduling.
 *
 * Slots are padded to max_rank R; each (slot, layer, module) has a rank
 * in the rank table (0 = module absent) and only rows/columns below it
 * are read, so a padded slot costs what its real rank costs.
 */
#include "cuda_kernels.h"
#include "lora_out.cuh"

namespace {

const int kShrinkWarps = 4;
/* Chunks of the input are at least this long: two 16-byte loads per lane
 * of bf16 where a step has few work items (an adapter shared by many
 * sequences, or few sequences), eight where it has many (splitting those
 * further only makes more, smaller blocks). */
const int64_t kShrinkChunkFew = 512, kShrinkChunkMany = 2048, kManyItems = 8;
const int kExpandThreads = 256, kExpandOuts = 2; /* outputs per expand thread */

/* grid (items, modules, row groups × splits): warp w of a block takes rank
 * row (group · kShrinkWarps + w) over the block's chunk of the input. */
template <class T>
__global__ void __launch_bounds__(32 * kShrinkWarps)
    lora_shrink_kernel(const int32_t *__restrict__ scalars, const int32_t *__restrict__ items,
                       const int32_t *__restrict__ lora_tok, const T *__restrict__ x, int64_t in, int64_t chunk,
                       const T *__restrict__ slots, int64_t slot_stride, nz_lora_group grp,
                       const int32_t *__restrict__ rank_tab, int layer, int L, int R, float *__restrict__ v,
                       int64_t v_mod_stride, int64_t v_split_stride, int groups)
{
	nz_pdl_begin();
	const int it = blockIdx.x, mi = blockIdx.y, sp = blockIdx.z / groups, rg = blockIdx.z % groups;
	const int lane = threadIdx.x & 31, k = rg * kShrinkWarps + (threadIdx.x >> 5);
	if (it >= scalars[NZ_SC_LORA_ITEMS])
		return;
	const int start = items[3 * it], ntok = items[3 * it + 1], slot = items[3 * it + 2];
	const int r = rank_tab[((int64_t)slot * L + layer) * NZ_M_COUNT + nz_pick3(grp.module, mi)];
	if (k >= r) /* a whole warp: no block-wide barrier follows */
		return;
	const int64_t i0 = (int64_t)sp * chunk, i1 = i0 + chunk < in ? i0 + chunk : in;
	const T *A = slots + (int64_t)slot * slot_stride + nz_pick3(grp.a_off, mi);
	float *vo = v + mi * v_mod_stride + sp * v_split_stride;
	int tok[NZ_LORA_TM];
#pragma unroll
	for (int j = 0; j < NZ_LORA_TM; j++)
		tok[j] = j < ntok ? lora_tok[start + j] : 0;
	const bool vec = (in & 7) == 0 && (chunk & 7) == 0;
	float acc[NZ_LORA_TM];
#pragma unroll
	for (int j = 0; j < NZ_LORA_TM; j++)
		acc[j] = 0.0f;
	const T *a = A + (int64_t)k * in;
	if (vec) {
		/* four 16-byte loads of A in flight per lane, then the tokens */
		const int64_t step = 32 * 8;
		int64_t i = i0 + (int64_t)lane * 8;
		for (; i + 3 * step < i1; i += 4 * step) {
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
		for (; i < i1; i += step) {
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
		for (int64_t i = i0 + lane; i < i1; i += 32) {
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

/* grid (items × output chunks, modules); a thread per kExpandOuts output
 * features (blockDim.x apart). The item's v (its splits summed) is gathered
 * into shared memory first. */
template <class T>
__global__ void __launch_bounds__(256)
    lora_expand_kernel(const int32_t *__restrict__ scalars, const int32_t *__restrict__ items,
                       const int32_t *__restrict__ lora_tok, const float *__restrict__ v, int64_t v_mod_stride,
                       int64_t v_split_stride, int splits, const T *__restrict__ slots, int64_t slot_stride,
                       nz_lora_group grp, const int32_t *__restrict__ rank_tab, int layer, int L, int R,
                       float *__restrict__ y, int64_t y_stride, int n_oc)
{
	nz_pdl_begin();
	NZ_DYN_SMEM(float, vs); /* [NZ_LORA_TM][R] */
	const int it = blockIdx.x / n_oc, oc = blockIdx.x % n_oc, mi = blockIdx.y;
	if (it >= scalars[NZ_SC_LORA_ITEMS])
		return;
	const int start = items[3 * it], ntok = items[3 * it + 1], slot = items[3 * it + 2];
	const int r = rank_tab[((int64_t)slot * L + layer) * NZ_M_COUNT + nz_pick3(grp.module, mi)];
	const int out = nz_pick3(grp.out, mi);
	if (oc * kExpandOuts * (int)blockDim.x >= out)
		return; /* the whole block: no thread of it has an output */
	const float *vm = v + mi * v_mod_stride;
	for (int q = threadIdx.x; q < ntok * r; q += blockDim.x) {
		const int j = q / r, k = q - j * r;
		const float *src = vm + (int64_t)lora_tok[start + j] * R + k;
		/* four loads in flight, added in split order */
		float s = 0.0f;
		int sp = 0;
		for (; sp + 4 <= splits; sp += 4) {
			const float a = src[sp * v_split_stride], b = src[(sp + 1) * v_split_stride],
			            c = src[(sp + 2) * v_split_stride], d = src[(sp + 3) * v_split_stride];
			s += a;
			s += b;
			s += c;
			s += d;
		}
		for (; sp < splits; sp++)
			s += src[sp * v_split_stride];
		vs[j * R + k] = s;
	}
	__syncthreads();
	const int o0 = oc * kExpandOuts * blockDim.x + threadIdx.x;
	if (o0 >= out)
		return;
	const T *b0 = slots + (int64_t)slot * slot_stride + nz_pick3(grp.b_off, mi);
	const int col = nz_pick3(grp.col, mi);
#pragma unroll
	for (int u = 0; u < kExpandOuts; u++) {
		const int o = o0 + u * blockDim.x;
		if (o >= out)
			break;
		const T *b = b0 + (int64_t)o * R;
		float acc[NZ_LORA_TM];
#pragma unroll
		for (int j = 0; j < NZ_LORA_TM; j++)
			acc[j] = 0.0f;
		if ((R & 7) == 0) {
			for (int k0 = 0; k0 < r; k0 += 8) {
				float bv[8];
				nz_load8(b + k0, bv);
				const int ke = r - k0 < 8 ? r - k0 : 8;
#pragma unroll
				for (int j = 0; j < NZ_LORA_TM; j++) {
					if (j < ntok) {
						const float *vr = vs + j * R + k0;
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
						acc[j] += vs[j * R + k] * bk;
			}
		}
#pragma unroll
		for (int j = 0; j < NZ_LORA_TM; j++)
			if (j < ntok)
				y[(int64_t)lora_tok[start + j] * y_stride + col + o] = acc[j];
	}
}

} // namespace

cudaError_t nz_k_lora_shrink(int dtype, cudaStream_t s, int64_t max_items, const int32_t *scalars,
                             const int32_t *items, const int32_t *lora_tok, const void *x, int64_t in, int splits,
                             const void *slots, int64_t slot_stride, nz_lora_group grp, const int32_t *rank_tab,
                             int layer, int L, int R, float *v, int64_t v_mod_stride, int64_t v_split_stride)
{
	/* chunks of whole 256-element strides (a warp's 16-byte loads) */
	int64_t chunk = (in + splits - 1) / splits;
	chunk = (chunk + 255) / 256 * 256;
	if ((int64_t)(splits - 1) * chunk >= in)
		return cudaErrorInvalidValue; /* nz_lora_splits chooses splits that leave no chunk empty */
	const int groups = (R + kShrinkWarps - 1) / kShrinkWarps;
	dim3 grid((unsigned)max_items, (unsigned)grp.nmod, (unsigned)(splits * groups)), block(32 * kShrinkWarps);
	switch (dtype) {
	case NZ_BF16:
		NZ_LAUNCH_PDL(lora_shrink_kernel<__nv_bfloat16>, grid, block, 0, s, scalars, items, lora_tok,
		          (const __nv_bfloat16 *)x, in, chunk, (const __nv_bfloat16 *)slots, slot_stride, grp, rank_tab,
		          layer, L, R, v, v_mod_stride, v_split_stride, groups);
		break;
	case NZ_F16:
		NZ_LAUNCH_PDL(lora_shrink_kernel<__half>, grid, block, 0, s, scalars, items, lora_tok, (const __half *)x, in,
		          chunk, (const __half *)slots, slot_stride, grp, rank_tab, layer, L, R, v, v_mod_stride,
		          v_split_stride, groups);
		break;
	default:
		NZ_LAUNCH_PDL(lora_shrink_kernel<float>, grid, block, 0, s, scalars, items, lora_tok, (const float *)x, in,
		          chunk, (const float *)slots, slot_stride, grp, rank_tab, layer, L, R, v, v_mod_stride,
		          v_split_stride, groups);
		break;
	}
	return cudaGetLastError();
}

int nz_lora_splits(int64_t in, int64_t items, int nmod, int R, int64_t want_blocks, int64_t max_splits)
{
	int64_t base = items * nmod * ((R + kShrinkWarps - 1) / kShrinkWarps);
	if (base < 1)
		base = 1;
	int64_t s = (want_blocks + base - 1) / base;
	const int64_t least = items >= kManyItems ? kShrinkChunkMany : kShrinkChunkFew;
	int64_t most = (in + least - 1) / least;
	if (s > most)
		s = most;
	if (s > max_splits)
		s = max_splits;
	if (s < 1)
		s = 1;
	/* the chunk size rounds up to whole strides: drop splits left empty */
	int64_t chunk = ((in + s - 1) / s + 255) / 256 * 256;
	return (int)((in + chunk - 1) / chunk);
}

cudaError_t nz_k_lora_expand(int dtype, cudaStream_t s, int64_t max_items, const int32_t *scalars,
                             const int32_t *items, const int32_t *lora_tok, const float *v, int64_t v_mod_stride,
                             int64_t v_split_stride, int splits, const void *slots, int64_t slot_stride,
                             nz_lora_group grp, const int32_t *rank_tab, int layer, int L, int R, float *y,
                             int64_t y_stride, int max_out)
{
	int n_oc = (max_out + kExpandOuts * kExpandThreads - 1) / (kExpandOuts * kExpandThreads);
	dim3 grid((unsigned)(max_items * n_oc), (unsigned)grp.nmod);
	const size_t smem = sizeof(float) * NZ_LORA_TM * (size_t)R;
	switch (dtype) {
	case NZ_BF16:
		NZ_LAUNCH_PDL(lora_expand_kernel<__nv_bfloat16>, grid, dim3(kExpandThreads), smem, s, scalars, items, lora_tok, v,
		          v_mod_stride, v_split_stride, splits, (const __nv_bfloat16 *)slots, slot_stride, grp, rank_tab,
		          layer, L, R, y, y_stride, n_oc);
		break;
	case NZ_F16:
		NZ_LAUNCH_PDL(lora_expand_kernel<__half>, grid, dim3(kExpandThreads), smem, s, scalars, items, lora_tok, v,
		          v_mod_stride, v_split_stride, splits, (const __half *)slots, slot_stride, grp, rank_tab, layer, L,
		          R, y, y_stride, n_oc);
		break;
	default:
		NZ_LAUNCH_PDL(lora_expand_kernel<float>, grid, dim3(kExpandThreads), smem, s, scalars, items, lora_tok, v,
		          v_mod_stride, v_split_stride, splits, (const float *)slots, slot_stride, grp, rank_tab, layer, L,
		          R, y, y_stride, n_oc);
		break;
	}
	return cudaGetLastError();
}
