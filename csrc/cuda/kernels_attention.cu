/*
 * kernels_attention.cu — causal attention over the paged KV cache, for
 * prefill chunks and decode tokens in one launch.
 *
 * One block per (work item, KV head g). A work item is up to QT
 * consecutive tokens of one sequence (QT·nrep query rows); all the query
 * heads that share KV head g (GQA) and all the item's tokens read each K/V
 * tile once. Keys are visited in tiles of 32 (one per lane) with an online
 * softmax in f32: per tile, scores into shared memory, per row (one warp)
 * the running max and sum, then the rescaled accumulation of P·V.
 * A key j is visible to a query at position p when j <= p and, with a
 * sliding window w, j > p - w.
 *
 * Cache layout per layer: K and V pools of [block][kv_head][block_size][hd].
 */
#include "cuda_kernels.h"

namespace {

const int kThreads = 128;
const int kTile = 32;

template <class T>
__global__ void __launch_bounds__(128)
    attention_kernel(const int32_t *__restrict__ items, int rows_max, const float *__restrict__ q,
                     const T *__restrict__ kc, const T *__restrict__ vc, const int32_t *__restrict__ tok_pos,
                     const int32_t *__restrict__ tok_seq, const int32_t *__restrict__ bt,
                     const int32_t *__restrict__ scalars, int nh, int nkv, int hd, int bs, int window, float scale,
                     T *__restrict__ out)
{
	NZ_DYN_SMEM(float, sm);
	const int it = blockIdx.x, g = blockIdx.y;
	const int t0 = items[2 * it], nq = items[2 * it + 1];
	const int nrep = nh / nkv, rows = nq * nrep, qd = nh * hd, ldk = hd + 1;
	const int64_t width = scalars[NZ_SC_BT_WIDTH];
	const int32_t *btab = bt + (int64_t)tok_seq[t0] * width;
	const int pos0 = tok_pos[t0], pos_last = pos0 + nq - 1;
	const int lo = window > 0 && pos0 - window + 1 > 0 ? pos0 - window + 1 : 0;

	float *qs = sm;                      /* [rows_max][hd] */
	float *os = qs + rows_max * hd;      /* [rows_max][hd] */
	float *ks = os + rows_max * hd;      /* [kTile][hd+1] */
	float *vs = ks + kTile * ldk;        /* [kTile][hd] */
	float *ps = vs + kTile * hd;         /* [rows_max][kTile] */
	float *m_run = ps + rows_max * kTile; /* [rows_max] */
	float *l_run = m_run + rows_max;     /* [rows_max] */
	float *alpha = l_run + rows_max;     /* [rows_max] */

	/* row r: token t0 + r / nrep, query head g·nrep + r % nrep */
	for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
		int r = i / hd, d = i % hd;
		qs[i] = q[(int64_t)(t0 + r / nrep) * qd + (g * nrep + r % nrep) * hd + d];
		os[i] = 0.0f;
	}
	for (int r = threadIdx.x; r < rows; r += blockDim.x) {
		m_run[r] = -INFINITY;
		l_run[r] = 0.0f;
	}
	__syncthreads();

	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	const bool vec = (hd & 7) == 0;
	for (int j0 = lo; j0 <= pos_last; j0 += kTile) {
		const int nk = pos_last - j0 + 1 < kTile ? pos_last - j0 + 1 : kTile;
		if (vec) {
			const int per = hd >> 3;
			for (int i = threadIdx.x; i < nk * per; i += blockDim.x) {
				int jj = i / per, d0 = (i % per) * 8, j = j0 + jj;
				int64_t off = (((int64_t)btab[j / bs] * nkv + g) * bs + j % bs) * hd + d0;
				float kv8[8];
				nz_load8(kc + off, kv8);
				for (int e = 0; e < 8; e++)
					ks[jj * ldk + d0 + e] = kv8[e];
				nz_load8(vc + off, kv8);
				for (int e = 0; e < 8; e++)
					vs[jj * hd + d0 + e] = kv8[e];
			}
		} else {
			for (int i = threadIdx.x; i < nk * hd; i += blockDim.x) {
				int jj = i / hd, d = i % hd, j = j0 + jj;
				int64_t off = (((int64_t)btab[j / bs] * nkv + g) * bs + j % bs) * hd + d;
				ks[jj * ldk + d] = nz_f32(kc[off]);
				vs[jj * hd + d] = nz_f32(vc[off]);
			}
		}
		__syncthreads();
		/* scores: a warp per row, a lane per key */
		for (int i = threadIdx.x; i < rows * kTile; i += blockDim.x) {
			int r = i / kTile, jj = i % kTile, j = j0 + jj;
			int qpos = pos0 + r / nrep;
			bool visible = jj < nk && j <= qpos && (window <= 0 || j > qpos - window);
			float sc = -INFINITY;
			if (visible) {
				const float *qr = qs + r * hd, *kr = ks + jj * ldk;
				float acc = 0.0f;
				for (int d = 0; d < hd; d++)
					acc += qr[d] * kr[d];
				sc = acc * scale;
			}
			ps[i] = sc;
		}
		__syncthreads();
		/* online softmax: a warp per row */
		for (int r = warp; r < rows; r += nw) {
			float sc = ps[r * kTile + lane];
			float m_old = m_run[r];
			float m_new = fmaxf(m_old, nz_warp_max(sc));
			float p = m_new == -INFINITY ? 0.0f : expf(sc - m_new);
			float a = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
			float psum = nz_warp_sum(p);
			ps[r * kTile + lane] = p;
			if (lane == 0) {
				m_run[r] = m_new;
				l_run[r] = l_run[r] * a + psum;
				alpha[r] = a;
			}
		}
		__syncthreads();
		for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
			int r = i / hd, d = i % hd;
			const float *pr = ps + r * kTile;
			float acc = os[i] * alpha[r];
			for (int jj = 0; jj < nk; jj++)
				acc += pr[jj] * vs[jj * hd + d];
			os[i] = acc;
		}
		__syncthreads();
	}
	for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
		int r = i / hd, d = i % hd;
		float l = l_run[r];
		out[(int64_t)(t0 + r / nrep) * qd + (g * nrep + r % nrep) * hd + d] = nz_cvt<T>(l > 0.0f ? os[i] / l : 0.0f);
	}
}

} // namespace

size_t nz_attention_smem(int rows_max, int hd)
{
	size_t floats = (size_t)2 * rows_max * hd + (size_t)kTile * (hd + 1) + (size_t)kTile * hd +
	                (size_t)rows_max * kTile + 3 * (size_t)rows_max;
	return floats * sizeof(float);
}

cudaError_t nz_attention_setup(int dtype, size_t smem)
{
	cudaError_t err = cudaSuccess;
	switch (dtype) {
	case NZ_BF16:
		err = cudaFuncSetAttribute(attention_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
		                           (int)smem);
		break;
	case NZ_F16:
		err = cudaFuncSetAttribute(attention_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
		break;
	default:
		err = cudaFuncSetAttribute(attention_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
		break;
	}
	return err;
}

cudaError_t nz_k_attention(int dtype, cudaStream_t s, int64_t n_items, const int32_t *items, int rows_max,
                           const float *q, const void *kc, const void *vc, const int32_t *tok_pos,
                           const int32_t *tok_seq, const int32_t *bt, const int32_t *scalars, int nh, int nkv,
                           int hd, int bs, int window, void *out)
{
	size_t smem = nz_attention_smem(rows_max, hd);
	float scale = 1.0f / sqrtf((float)hd);
	dim3 grid((unsigned)n_items, (unsigned)nkv);
	switch (dtype) {
	case NZ_BF16:
		NZ_LAUNCH(attention_kernel<__nv_bfloat16>, grid, dim3(kThreads), smem, s, items, rows_max, q,
		          (const __nv_bfloat16 *)kc, (const __nv_bfloat16 *)vc, tok_pos, tok_seq, bt, scalars, nh, nkv, hd,
		          bs, window, scale, (__nv_bfloat16 *)out);
		break;
	case NZ_F16:
		NZ_LAUNCH(attention_kernel<__half>, grid, dim3(kThreads), smem, s, items, rows_max, q, (const __half *)kc,
		          (const __half *)vc, tok_pos, tok_seq, bt, scalars, nh, nkv, hd, bs, window, scale, (__half *)out);
		break;
	default:
		NZ_LAUNCH(attention_kernel<float>, grid, dim3(kThreads), smem, s, items, rows_max, q, (const float *)kc,
		          (const float *)vc, tok_pos, tok_seq, bt, scalars, nh, nkv, hd, bs, window, scale, (float *)out);
		break;
	}
	return cudaGetLastError();
}
