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
 * sliding window w, j > p - w. A score is q·k times the scale, soft-capped
 * (cap · tanh(s / cap)) when the model asks for it (Gemma 2).
 *
 * When the step has few (item, KV head) blocks for the device (decode of a
 * small batch), the key range is split among up to `splits` blocks
 * (split-K, "flash decoding"; blocks left without a tile by a short
 * sequence return at once): each writes its unnormalised accumulator and
 * its running max and sum, and the last of them to finish (a counter per
 * (item, KV head), reset by that block) merges them.
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
                     float softcap, T *__restrict__ out, int splits, int min_tiles, float *__restrict__ part_o,
                     float *__restrict__ part_ml, int *__restrict__ part_count)
{
	nz_pdl_begin();
	NZ_DYN_SMEM(float, sm);
	const int it = blockIdx.x, g = blockIdx.y;
	const int t0 = items[2 * it], nq = items[2 * it + 1];
	const int nrep = nh / nkv, rows = nq * nrep, qd = nh * hd, ldk = hd + 1;
	const int64_t width = scalars[NZ_SC_BT_WIDTH];
	const int32_t *btab = bt + (int64_t)tok_seq[t0] * width;
	const int pos0 = tok_pos[t0], pos_last = pos0 + nq - 1;
	const int lo = window > 0 && pos0 - window + 1 > 0 ? pos0 - window + 1 : 0;
	/* this block's share of the key tiles */
	const int split = blockIdx.z, n_tiles = (pos_last - lo) / kTile + 1;
	const int even = (n_tiles + splits - 1) / splits, per = even > min_tiles ? even : min_tiles;
	/* the splits with tiles: the same in every block of (it, g) */
	const int n_act = (n_tiles + per - 1) / per;
	if (split >= n_act)
		return; /* the whole block, before any barrier */
	const int j_begin = lo + split * per * kTile;
	const int j_end = pos_last < lo + (split + 1) * per * kTile - 1 ? pos_last : lo + (split + 1) * per * kTile - 1;

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
	for (int j0 = j_begin; j0 <= j_end; j0 += kTile) {
		const int nk = j_end - j0 + 1 < kTile ? j_end - j0 + 1 : kTile;
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
				if (softcap > 0.0f) /* uniform */
					sc = nz_softcap_f(sc, softcap);
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
	if (n_act == 1) {
		for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
			int r = i / hd, d = i % hd;
			float l = l_run[r];
			out[(int64_t)(t0 + r / nrep) * qd + (g * nrep + r % nrep) * hd + d] = nz_cvt<T>(l > 0.0f ? os[i] / l : 0.0f);
		}
		return;
	}
	const int64_t ig = (int64_t)it * nkv + g, part = ig * splits + split;
	for (int i = threadIdx.x; i < rows * hd; i += blockDim.x)
		part_o[part * rows_max * hd + i] = os[i];
	for (int r = threadIdx.x; r < rows; r += blockDim.x) {
		part_ml[(part * rows_max + r) * 2] = m_run[r];
		part_ml[(part * rows_max + r) * 2 + 1] = l_run[r];
	}
	/* the last split to finish merges: o = Σ e^(m_s - M) o_s / Σ e^(m_s - M) l_s */
	__shared__ int last;
	__threadfence();
	__syncthreads();
	if (threadIdx.x == 0) {
		last = atomicAdd(&part_count[ig], 1) == n_act - 1;
		if (last)
			part_count[ig] = 0; /* ready for the next launch */
	}
	__syncthreads();
	if (!last)
		return;
	__threadfence();
	/* per row, each split's weight e^(m_s - M) (0 for a split that saw no
	 * key) into ps [row][split] and Σ w_s l_s into l_run; then every
	 * output adds up the splits' accumulators with those weights */
	const int64_t base = ig * splits;
	for (int r = threadIdx.x; r < rows; r += blockDim.x) {
		float M = -INFINITY;
		for (int sp = 0; sp < n_act; sp++)
			M = fmaxf(M, part_ml[((base + sp) * rows_max + r) * 2]);
		float L = 0.0f;
		for (int sp = 0; sp < n_act; sp++) {
			const float m = part_ml[((base + sp) * rows_max + r) * 2];
			const float w = m == -INFINITY ? 0.0f : expf(m - M);
			ps[r * kTile + sp] = w;
			if (w != 0.0f)
				L += w * part_ml[((base + sp) * rows_max + r) * 2 + 1];
		}
		l_run[r] = L;
	}
	__syncthreads();
	for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
		int r = i / hd, d = i % hd;
		const float *w = ps + r * kTile;
		float acc = 0.0f;
		for (int sp = 0; sp < n_act; sp++)
			if (w[sp] != 0.0f)
				acc += w[sp] * part_o[(base + sp) * rows_max * hd + i];
		const float L = l_run[r];
		out[(int64_t)(t0 + r / nrep) * qd + (g * nrep + r % nrep) * hd + d] = nz_cvt<T>(L > 0.0f ? acc / L : 0.0f);
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

template <class T>
cudaError_t launch_attention(cudaStream_t s, int64_t n_items, const int32_t *items, int rows_max, const float *q,
                             const void *kc, const void *vc, const int32_t *tok_pos, const int32_t *tok_seq,
                             const int32_t *bt, const int32_t *scalars, int nh, int nkv, int hd, int bs, int window,
                             float scale, float softcap, void *out, int splits, int min_tiles, float *part_o,
                             float *part_ml, int *part_count)
{
	if (min_tiles < 1)
		return cudaErrorInvalidValue;
	if (splits < 1 || splits > kTile)
		return cudaErrorInvalidValue; /* the merge keeps a row's split weights in a tile's scores */
	size_t smem = nz_attention_smem(rows_max, hd);
	dim3 grid((unsigned)n_items, (unsigned)nkv, (unsigned)splits);
	NZ_LAUNCH_PDL(attention_kernel<T>, grid, dim3(kThreads), smem, s, items, rows_max, q, (const T *)kc, (const T *)vc,
	          tok_pos, tok_seq, bt, scalars, nh, nkv, hd, bs, window, scale, softcap, (T *)out, splits, min_tiles, part_o,
	          part_ml, part_count);
	return cudaGetLastError();
}

cudaError_t nz_k_attention(int dtype, cudaStream_t s, int64_t n_items, const int32_t *items, int rows_max,
                           const float *q, const void *kc, const void *vc, const int32_t *tok_pos,
                           const int32_t *tok_seq, const int32_t *bt, const int32_t *scalars, int nh, int nkv,
                           int hd, int bs, int window, float scale, float softcap, void *out, int splits,
                           int min_tiles, float *part_o, float *part_ml, int *part_count)
{
	switch (dtype) {
	case NZ_BF16:
		return launch_attention<__nv_bfloat16>(s, n_items, items, rows_max, q, kc, vc, tok_pos, tok_seq, bt, scalars,
		                                       nh, nkv, hd, bs, window, scale, softcap, out, splits, min_tiles, part_o,
		                                       part_ml, part_count);
	case NZ_F16:
		return launch_attention<__half>(s, n_items, items, rows_max, q, kc, vc, tok_pos, tok_seq, bt, scalars, nh, nkv,
		                                hd, bs, window, scale, softcap, out, splits, min_tiles, part_o, part_ml, part_count);
	default:
		return launch_attention<float>(s, n_items, items, rows_max, q, kc, vc, tok_pos, tok_seq, bt, scalars, nh, nkv,
		                               hd, bs, window, scale, softcap, out, splits, min_tiles, part_o, part_ml, part_count);
	}
}
