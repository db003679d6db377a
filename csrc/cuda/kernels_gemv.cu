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
 *
 * The fused variants (nz_k_gemv_fused) are the same loop with the work of
 * the small kernels around a projection folded in: an RMSNorm prologue
 * into shared memory, and epilogues for the residual add, the gated
 * activation, RoPE with the KV-cache write, and a plain f32 output (for a
 * post-norm, Gemma's, that needs the whole row before the residual add).
 */
#include "cuda_kernels.h"
#include "lora_out.cuh"

namespace {

const int kWarps = 8;

/* acc[r][j] += W row r · x[j] over in (a multiple of 8) for NR rows w[r]
 * and ntok tokens: lane `lane` takes 8 elements in every 256, C of them
 * per row in flight at a time. The loop of every GEMV here. */
template <class T, int NR, int C>
__device__ __forceinline__ void gemv_rows(const T *const (&w)[NR], const T *__restrict__ x, int64_t in, int ntok,
                                          int lane, float (&acc)[NR][NZ_GEMV_MAX_T])
{
	const int64_t step = 32 * 8;
	int64_t i = (int64_t)lane * 8;
	for (; i + (C - 1) * step < in; i += C * step) {
		float wv[NR][C][8];
#pragma unroll
		for (int r = 0; r < NR; r++)
#pragma unroll
			for (int c = 0; c < C; c++)
				nz_load8(w[r] + i + c * step, wv[r][c]);
#pragma unroll
		for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
			if (j < ntok) {
#pragma unroll
				for (int c = 0; c < C; c++) {
					float xv[8];
					nz_load8(x + (int64_t)j * in + i + c * step, xv);
#pragma unroll
					for (int r = 0; r < NR; r++)
#pragma unroll
						for (int e = 0; e < 8; e++)
							acc[r][j] += wv[r][c][e] * xv[e];
				}
			}
		}
	}
	for (; i < in; i += step) {
		float wv[NR][8];
#pragma unroll
		for (int r = 0; r < NR; r++)
			nz_load8(w[r] + i, wv[r]);
#pragma unroll
		for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
			if (j < ntok) {
				float xv[8];
				nz_load8(x + (int64_t)j * in + i, xv);
#pragma unroll
				for (int r = 0; r < NR; r++)
#pragma unroll
					for (int e = 0; e < 8; e++)
						acc[r][j] += wv[r][e] * xv[e];
			}
		}
	}
}

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
	const T *w[1] = {W + o * in};
	float acc[1][NZ_GEMV_MAX_T];
#pragma unroll
	for (int j = 0; j < NZ_GEMV_MAX_T; j++)
		acc[0][j] = 0.0f;
	if ((in & 7) == 0) {
		gemv_rows<T, 1, 4>(w, x, in, ntok, lane, acc);
	} else {
		for (int64_t i = lane; i < in; i += 32) {
			float wv = nz_f32(w[0][i]);
#pragma unroll
			for (int j = 0; j < NZ_GEMV_MAX_T; j++)
				if (j < ntok)
					acc[0][j] += wv * nz_f32(x[(int64_t)j * in + i]);
		}
	}
#pragma unroll
	for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
		if (j < ntok) { /* ntok is the same in every lane */
			float v = nz_warp_sum(acc[0][j]);
			if (lane == 0)
				y[(int64_t)j * out + o] = v;
		}
	}
}

/* The offset of token t's row of KV head g in a layer's K or V pool
 * ([block][kv_head][block_size][hd]), as nz_k_rope_kv finds it. */
__device__ __forceinline__ int64_t rope_row(const nz_gemv_io &io, int t, int64_t g)
{
	const int pos = io.tok_pos[t];
	const int64_t width = io.scalars[NZ_SC_BT_WIDTH];
	const int64_t blk = io.bt[(int64_t)io.tok_seq[t] * width + pos / io.bs];
	return ((blk * io.nkv + g) * io.bs + pos % io.bs) * io.hd;
}

/* A shrink warp of a fused GEMV with LoRA: rank row k of module mi of work
 * item it, q = (it · nmod + mi) · R + k, over x [T][in] (normalised, or
 * the input) for each of the item's tokens, into v[mi][tok][k]. */
template <class T>
__device__ __forceinline__ void gemv_lora_shrink(const nz_gemv_lora &lo, const T *x, int64_t in, int ntok, int64_t q,
                                                 int lane)
{
	const int per = lo.grp.nmod * lo.R;
	const int it = (int)(q / per), mi = (int)(q % per) / lo.R, k = (int)(q % per) % lo.R;
	if (it >= lo.items_max || it >= lo.scalars[NZ_SC_LORA_ITEMS])
		return;
	const int start = lo.items[3 * it], n = lo.items[3 * it + 1], slot = lo.items[3 * it + 2];
	if (k >= nz_lora_rank(lo, slot, mi))
		return;
	const T *w[1] = {(const T *)lo.slots + (int64_t)slot * lo.slot_stride + nz_pick3(lo.grp.a_off, mi) + (int64_t)k * in};
	for (int j = 0; j < n; j++) {
		const int64_t tok = lo.lora_tok[start + j];
		float acc[1][NZ_GEMV_MAX_T];
		acc[0][0] = 0.0f;
		gemv_rows<T, 1, 4>(w, x + tok * in, in, 1, lane, acc); /* in is a multiple of 8 (cuda_engine.fuse) */
		const float v = nz_warp_sum(acc[0][0]);
		if (lane == 0) {
			lo.v[(mi * (int64_t)ntok + tok) * lo.R + k] = v;
			__threadfence(); /* before the block counts itself done */
		}
	}
}

/* The fused variants (nz_k_gemv_fused): NR weight rows per warp (2 for
 * SiLU: gate row o and up row out + o), the input normalised into shared
 * memory first when NORM, the epilogue EPI. */
template <class T, int NR, bool NORM, int EPI, bool LORA>
__global__ void __launch_bounds__(256) gemv_fused_kernel(const T *__restrict__ W, nz_gemv_io io, int64_t in,
                                                         int64_t out, int ntok)
{
	nz_pdl_begin();
	NZ_DYN_SMEM(T, xs);
	__shared__ float rs[NZ_GEMV_MAX_T];
	__shared__ double red[NZ_GEMV_MAX_T][kWarps];
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	/* with LORA the first io.lora.blocks blocks do the shrink; the GEMV's
	 * are numbered from 0 after them */
	const int n_sb = LORA ? io.lora.blocks : 0;
	const int gb = (int)blockIdx.x - n_sb, n_gb = (int)gridDim.x - n_sb;
	const int64_t o = (int64_t)gb * kWarps + warp;
	/* ROPE: warp o takes the rows of pair o % (hd/2) (nz_rope_pair) of
	 * head o / (hd/2) */
	const int half = io.hd / 2;
	const int64_t rows = EPI == NZ_GEMV_ROPE ? out / 2 : out;
	int dl = 0, dh = 0;
	if (EPI == NZ_GEMV_ROPE)
		nz_rope_pair((int)(o % half), io.rh, io.hd, dl, dh);
	const int64_t r0 = EPI == NZ_GEMV_ROPE ? o / half * io.hd + dl : o;
	const int64_t r1 = EPI == NZ_GEMV_ROPE ? o / half * io.hd + dh : o + out; /* the second row (NR 2) */
	const bool active = o < rows; /* the same in every lane of a warp */
	const T *x = (const T *)io.x;
	if (NORM) {
		/* warp t: token t's 1 / rms from the producer's partial sums */
		if (warp < ntok) {
			double ss = 0;
			for (int k = lane; k < io.n_part_in; k += 32)
				ss += io.part_in[(int64_t)warp * io.n_part_in + k];
			ss = nz_warp_sum(ss);
			if (lane == 0)
				rs[warp] = 1.0f / sqrtf((float)(ss / (double)in) + io.eps);
		}
		__syncthreads();
		for (int64_t k = (int64_t)threadIdx.x * 8; k < (int64_t)ntok * in; k += (int64_t)blockDim.x * 8) {
			const int64_t t = k / in, i = k % in;
			float hv[8], wv[8];
			nz_load8(io.h_in + k, hv);
			nz_load8(io.norm_w + i, wv);
			const float r = rs[t];
#pragma unroll
			for (int e = 0; e < 8; e++)
				xs[k + e] = nz_cvt<T>(wv[e] * (hv[e] * r));
		}
		__syncthreads();
		x = xs;
	}
	if (LORA && gb < 0) {
		gemv_lora_shrink<T>(io.lora, x, in, ntok, (int64_t)blockIdx.x * kWarps + warp, lane);
		__syncthreads();
		if (threadIdx.x == 0)
			atomicAdd(io.lora.sync, 1);
		return; /* the whole block */
	}
	/* LORA: the tokens' slots (-1: none), loaded before the rows are */
	int sl[NZ_GEMV_MAX_T];
#pragma unroll
	for (int j = 0; j < NZ_GEMV_MAX_T; j++)
		sl[j] = LORA && j < ntok ? io.lora.tok_lora[j] - 1 : -1;
	float acc[NR][NZ_GEMV_MAX_T];
#pragma unroll
	for (int r = 0; r < NR; r++)
#pragma unroll
		for (int j = 0; j < NZ_GEMV_MAX_T; j++)
			acc[r][j] = 0.0f;
	if (active) {
		const T *w[NR];
		w[0] = W + r0 * in;
		if (NR > 1)
			w[NR - 1] = W + r1 * in;
		gemv_rows<T, NR, 4 / NR>(w, x, in, ntok, lane, acc); /* four 16-byte loads in flight per lane */
	}
	/* LORA, in two rounds of loads after the rows: the B values of each
	 * row and token (lane k: B[row][k], the slots' ranks, the shrink
	 * blocks' count), then, the count complete, v (lane k: v[k]); each
	 * delta a warp reduction. Ranks past 32 add their k >= 32 in a loop. */
	float lv[NR][NZ_GEMV_MAX_T];
	if (LORA && active) {
		const nz_gemv_lora &lo = io.lora;
		int mi[NR];
		int64_t ol[NR];
		if (EPI == NZ_GEMV_ROPE) {
			const int64_t qd = (int64_t)io.nh * io.hd, kvd = (int64_t)io.nkv * io.hd;
			const int m = r0 < qd ? 0 : r0 < qd + kvd ? 1 : 2;
			mi[0] = m;
			mi[NR - 1] = m;
			ol[0] = r0 - nz_pick3(lo.grp.col, m);
			ol[NR - 1] = ol[0] + (r1 - r0);
		} else {
			mi[0] = 0, ol[0] = o;
			mi[NR - 1] = NR - 1, ol[NR - 1] = o; /* SILU: gate row o, up row o */
		}
		float bq[NR][NZ_GEMV_MAX_T];
		int rk[NR][NZ_GEMV_MAX_T];
#pragma unroll
		for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
			const int slot = j < ntok ? sl[j] : -1;
#pragma unroll
			for (int r = 0; r < NR; r++) {
				rk[r][j] = 0, bq[r][j] = 0.0f;
				if (slot >= 0) {
					rk[r][j] = nz_lora_rank(lo, slot, mi[r]);
					if (lane < lo.R)
						bq[r][j] = nz_f32(nz_lora_b<T>(lo, slot, mi[r], ol[r])[lane]);
				}
			}
		}
		const volatile int32_t *done = lo.sync;
		while (*done < n_sb) {
		}
		__threadfence();
		const volatile float *vg = lo.v;
#pragma unroll
		for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
#pragma unroll
			for (int r = 0; r < NR; r++) {
				float d = 0.0f;
				if (j < ntok && lane < rk[r][j])
					d = vg[(mi[r] * (int64_t)ntok + j) * lo.R + lane] * bq[r][j];
				for (int k = lane + 32; j < ntok && k < rk[r][j]; k += 32)
					d += vg[(mi[r] * (int64_t)ntok + j) * lo.R + k] * nz_f32(nz_lora_b<T>(lo, sl[j], mi[r], ol[r])[k]);
				lv[r][j] = d;
			}
		}
	}
#pragma unroll
	for (int j = 0; j < NZ_GEMV_MAX_T; j++) {
		if (j >= ntok) /* ntok is the same in every lane */
			continue;
		float v[NR];
#pragma unroll
		for (int r = 0; r < NR; r++)
			v[r] = nz_warp_sum(LORA && active ? acc[r][j] + lv[r][j] : acc[r][j]);
		if (lane != 0)
			continue;
		if (EPI == NZ_GEMV_RESID) {
			double sq = 0;
			if (active) {
				float d = io.bias ? v[0] + io.bias[o] : v[0];
				float *hp = io.h + (int64_t)j * out + o;
				float hv = *hp + d;
				*hp = hv;
				sq = (double)hv * (double)hv;
			}
			red[j][warp] = sq;
		} else if (EPI == NZ_GEMV_ROPE) {
			if (active) {
				float x1 = v[0], x2 = v[NR - 1];
				if (io.bias)
					x1 += io.bias[r0], x2 += io.bias[r1];
				const int qd = io.nh * io.hd, kvd = io.nkv * io.hd;
				const int jj = (int)(o % half);
				if (r0 >= qd + kvd) { /* v: no rotation */
					const int64_t g = (r0 - qd - kvd) / io.hd;
					T *dst = (T *)io.vc + rope_row(io, j, g);
					dst[dl] = nz_cvt<T>(x1);
					dst[dh] = nz_cvt<T>(x2);
				} else if (io.k_raw) { /* the heads' norms and RoPE come next */
					float *dst = r0 < qd ? io.q_out + (int64_t)j * qd + r0 : io.k_raw + (int64_t)j * out + r0;
					dst[0] = x1;
					dst[dh - dl] = x2;
				} else {
					const float *c = io.cs + (int64_t)j * io.hd, *sn = c + half;
					float a, b;
					nz_rope(x1, x2, c[jj], sn[jj], a, b);
					if (r0 < qd) {
						float *q = io.q_out + (int64_t)j * qd + r0;
						q[0] = a;
						q[dh - dl] = b;
					} else {
						T *dst = (T *)io.kc + rope_row(io, j, (r0 - qd) / io.hd);
						dst[dl] = nz_cvt<T>(a);
						dst[dh] = nz_cvt<T>(b);
					}
				}
			}
		} else if (EPI == NZ_GEMV_SILU) {
			if (active) {
				float g = v[0], u = v[NR - 1];
				if (io.bias)
					g += io.bias[o], u += io.bias[out + o];
				((T *)io.x_out)[(int64_t)j * out + o] = nz_cvt<T>(nz_act_mul(io.act, g, u));
			}
		} else if (EPI == NZ_GEMV_OUT) {
			if (active)
				io.y[(int64_t)j * out + o] = io.bias ? v[0] + io.bias[o] : v[0];
		}
	}
	if (EPI == NZ_GEMV_RESID) {
		__syncthreads();
		if ((int)threadIdx.x < ntok) {
			double ss = 0;
			for (int k = 0; k < kWarps; k++)
				ss += red[threadIdx.x][k];
			io.part_out[(int64_t)threadIdx.x * n_gb + gb] = ss;
		}
	}
}

template <class T, bool LORA>
cudaError_t gemv_fused_launch(cudaStream_t s, int64_t T_, int64_t in, const T *W, int64_t out, const nz_gemv_io &io)
{
	const int64_t parts = nz_gemv_fused_parts(io.epi == NZ_GEMV_ROPE ? out / 2 : out);
	dim3 grid((unsigned)(parts + (LORA ? io.lora.blocks : 0))), block(32 * kWarps);
	const bool norm = io.norm_w != NULL;
	const size_t smem = norm ? (size_t)(T_ * in) * sizeof(T) : 0;
	const int ntok = (int)T_;
	/* the combinations the forward pass uses */
	if (io.epi == NZ_GEMV_SILU && norm)
		NZ_LAUNCH_PDL((gemv_fused_kernel<T, 2, true, NZ_GEMV_SILU, LORA>), grid, block, smem, s, W, io, in, out, ntok);
	else if (io.epi == NZ_GEMV_RESID && !norm)
		NZ_LAUNCH_PDL((gemv_fused_kernel<T, 1, false, NZ_GEMV_RESID, LORA>), grid, block, smem, s, W, io, in, out, ntok);
	else if (io.epi == NZ_GEMV_OUT && !norm)
		NZ_LAUNCH_PDL((gemv_fused_kernel<T, 1, false, NZ_GEMV_OUT, LORA>), grid, block, smem, s, W, io, in, out, ntok);
	else if (io.epi == NZ_GEMV_ROPE && norm)
		NZ_LAUNCH_PDL((gemv_fused_kernel<T, 2, true, NZ_GEMV_ROPE, LORA>), grid, block, smem, s, W, io, in, out, ntok);
	else if (io.epi == NZ_GEMV_ROPE)
		NZ_LAUNCH_PDL((gemv_fused_kernel<T, 2, false, NZ_GEMV_ROPE, LORA>), grid, block, smem, s, W, io, in, out, ntok);
	else
		return cudaErrorInvalidValue;
	return cudaGetLastError();
}

template <class T> cudaError_t gemv_fused(cudaStream_t s, int64_t T_, int64_t in, const T *W, int64_t out,
                                          const nz_gemv_io &io)
{
	if (io.lora.v)
		return gemv_fused_launch<T, true>(s, T_, in, W, out, io);
	return gemv_fused_launch<T, false>(s, T_, in, W, out, io);
}

template <class T> cudaError_t gemv_fused_setup(size_t smem)
{
	cudaError_t err = cudaSuccess;
	auto set = [&](auto kern) {
		if (err == cudaSuccess)
			err = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
	};
	set(gemv_fused_kernel<T, 2, true, NZ_GEMV_SILU, false>);
	set(gemv_fused_kernel<T, 2, true, NZ_GEMV_ROPE, false>);
	set(gemv_fused_kernel<T, 2, true, NZ_GEMV_SILU, true>);
	set(gemv_fused_kernel<T, 2, true, NZ_GEMV_ROPE, true>);
	return err;
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

int64_t nz_gemv_fused_parts(int64_t out) { return (out + kWarps - 1) / kWarps; }

int32_t nz_gemv_lora_blocks(int64_t items, int nmod, int R) { return (int32_t)((items * nmod * R + kWarps - 1) / kWarps); }

cudaError_t nz_k_gemv_fused(int dtype, cudaStream_t s, int64_t T_, int64_t in, const void *W, int64_t out,
                            const nz_gemv_io *io)
{
	switch (dtype) {
	case NZ_BF16:
		return gemv_fused(s, T_, in, (const __nv_bfloat16 *)W, out, *io);
	case NZ_F16:
		return gemv_fused(s, T_, in, (const __half *)W, out, *io);
	default:
		return gemv_fused(s, T_, in, (const float *)W, out, *io);
	}
}

cudaError_t nz_gemv_fused_setup(int dtype, size_t smem)
{
	switch (dtype) {
	case NZ_BF16:
		return gemv_fused_setup<__nv_bfloat16>(smem);
	case NZ_F16:
		return gemv_fused_setup<__half>(smem);
	default:
		return gemv_fused_setup<float>(smem);
	}
}
