/*
 * kernels_sample.cu — the sampler on the device, one block per sampled
 * sequence, with the semantics of nz_sample (common.c):
 *  - greedy: argmax, lowest id on ties, NaN never wins;
 *  - logprob of the chosen token and the n_top most likely tokens under
 *    log_softmax at temperature 1 (max, then a double sum of expf);
 *  - temperature: q_i = expf((l_i - max)·(1/T)); top_k keeps the k most
 *    likely (ties: lower id first), top_p the shortest most-likely-first
 *    prefix whose mass reaches p·(kept mass); then, with u drawn on the
 *    host from (seed, position), the first kept id in ascending order whose
 *    cumulative q exceeds u·(kept mass).
 * The log-sum-exp is merged from chunks: Σ_c e^(m_c − m) · Σ_{i∈c} expf(l_i
 * − m_c), each chunk's sum from its own maximum m_c (within an f32 rounding
 * of the single sum; one block per chunk, so that a row is read by many
 * SMs at once rather than one).
 * Tokens are ordered by a 64-bit key (the logit's bits made monotonic, then
 * the complemented id), so "the k most likely" and "the prefix reaching p"
 * are thresholds on the key, found by an 8-bit radix select over it.
 */
#include "cuda_kernels.h"

namespace {

const int kThreads = 512;
const int kUnroll = 8;
const int kPartThreads = 256;
const int kChunk = 4096; /* logits per block of the partial pass */
typedef unsigned long long u64;

/* -0 keys as +0 and NaN as -inf (as the CPU backend's token_key): the
 * largest key is greedy's argmax, the lowest id among the logits == max,
 * so a scored row's top token is what greedy sampling returns there. */
__device__ __forceinline__ u64 token_key(float logit, int id)
{
	if (logit != logit)
		logit = -INFINITY;
	else if (logit == 0.0f)
		logit = 0.0f;
	unsigned u = __float_as_uint(logit);
	u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
	return ((u64)u << 32) | (u64)(0xffffffffu - (unsigned)id);
}

__device__ __forceinline__ int key_id(u64 key) { return (int)(0xffffffffu - (unsigned)key); }

struct sample_smem {
	u64 red_u64[32];
	double red_f64[32];
	int hist_cnt[256];
	double hist_mass[256];
	double part[kThreads];
	double excl[kThreads];
	u64 prefix;
	double above;
	int remaining;
};

/* Radix select over the keys of logits[0..V) that are >= floor: with
 * by_mass 0, the key of rank `k` (1 = largest); with by_mass 1, the largest
 * key tau such that the q-mass of keys in [tau, max] reaches need (or the
 * smallest candidate key when none does). q = expf((l - m)·invt). */
__device__ u64 radix_select(const float *__restrict__ lg, int V, u64 floor, bool by_mass, int k, double need, float m,
                            float invt, sample_smem &sm)
{
	u64 prefix = 0, mask = 0;
	if (threadIdx.x == 0) {
		sm.remaining = k;
		sm.above = 0.0;
	}
	for (int pass = 0; pass < 8; pass++) {
		const int shift = 56 - 8 * pass;
		for (int d = threadIdx.x; d < 256; d += blockDim.x) {
			sm.hist_cnt[d] = 0;
			sm.hist_mass[d] = 0.0;
		}
		__syncthreads();
		for (int i = threadIdx.x; i < V; i += blockDim.x) {
			u64 key = token_key(lg[i], i);
			if (key < floor || (key & mask) != prefix)
				continue;
			int d = (int)((key >> shift) & 255u);
			atomicAdd(&sm.hist_cnt[d], 1);
			if (by_mass)
				atomicAdd(&sm.hist_mass[d], (double)expf((lg[i] - m) * invt));
		}
		__syncthreads();
		if (threadIdx.x == 0) {
			int chosen = -1, last = -1;
			if (!by_mass) {
				int acc = 0, rem = sm.remaining;
				for (int d = 255; d >= 0; d--) {
					int c = sm.hist_cnt[d];
					if (c == 0)
						continue;
					last = d;
					if (acc + c >= rem) {
						chosen = d;
						sm.remaining = rem - acc;
						break;
					}
					acc += c;
				}
				if (chosen < 0) { /* fewer candidates than k: cannot happen (k < V) */
					chosen = last < 0 ? 0 : last;
					sm.remaining = 1;
				}
			} else {
				double acc = sm.above, before_last = sm.above;
				for (int d = 255; d >= 0; d--) {
					if (sm.hist_cnt[d] == 0)
						continue;
					if (acc + sm.hist_mass[d] >= need) {
						chosen = d;
						break;
					}
					before_last = acc;
					acc += sm.hist_mass[d];
					last = d;
				}
				if (chosen >= 0) {
					sm.above = acc;
				} else { /* rounding: nothing reaches need; keep every candidate */
					chosen = last < 0 ? 0 : last;
					sm.above = before_last;
				}
			}
			sm.prefix = prefix | ((u64)chosen << shift);
		}
		__syncthreads();
		prefix = sm.prefix;
		mask |= (u64)255 << shift;
	}
	return prefix;
}

/* One chunk of kChunk logits of row blockIdx.y: its argmax key, largest
 * logit and Σ expf(l - m_c) (a NaN logit makes the sum NaN, as in one
 * pass; a chunk of -inf logits sums to 0). */
__global__ void __launch_bounds__(256) sample_part_kernel(const float *__restrict__ logits, int V,
                                                          nz_sample_part *__restrict__ parts)
{
	nz_pdl_begin();
	__shared__ u64 red_u64[32];
	__shared__ double red_f64[32];
	const int row = blockIdx.y, c = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
	const float *lg = logits + (int64_t)row * V;
	const int i0 = c * kChunk, i1 = i0 + kChunk < V ? i0 + kChunk : V;
	const int per = kChunk / kPartThreads;
	float l[per];
#pragma unroll
	for (int u = 0; u < per; u++) {
		const int i = i0 + tid + u * nt;
		l[u] = i < i1 ? lg[i] : -INFINITY;
	}
	u64 best = 0;
#pragma unroll
	for (int u = 0; u < per; u++) {
		const int i = i0 + tid + u * nt;
		if (i < i1) {
			u64 k = token_key(l[u], i);
			best = k > best ? k : best;
		}
	}
	best = nz_block_max_u64(best, red_u64);
	const int id = key_id(best);
	const float m = lg[id] != lg[id] ? -INFINITY : lg[id];
	double sum = 0.0;
#pragma unroll
	for (int u = 0; u < per; u++) {
		const int i = i0 + tid + u * nt;
		if (i < i1)
			sum += m == -INFINITY ? (l[u] != l[u] ? (double)NAN : 0.0) : (double)expf(l[u] - m);
	}
	sum = nz_block_sum(sum, red_f64);
	if (tid == 0) {
		nz_sample_part &o = parts[(int64_t)row * gridDim.x + c];
		o.key = best;
		o.sum = sum;
		o.m = m;
	}
}

__global__ void __launch_bounds__(512) sample_kernel(const float *__restrict__ logits, int V,
                                                     const nz_sample_in *__restrict__ params,
                                                     const int32_t *__restrict__ scalars,
                                                     nz_sample_out *__restrict__ out,
                                                     const nz_sample_part *__restrict__ parts, int n_parts)
{
	nz_pdl_begin();
	__shared__ sample_smem sm;
	const int row = blockIdx.x;
	const float *lg = logits + (int64_t)row * V;
	const nz_sample_in p = params[row];
	const int tid = threadIdx.x, nt = blockDim.x;
	const nz_sample_part *pr = parts ? parts + (int64_t)row * n_parts : NULL;

	/* max and argmax; kUnroll loads in flight per thread (one SM streams the
	 * whole row: latency, not bandwidth, bounds these two passes) */
	u64 best = 0;
	int i = tid;
	if (pr) {
		for (int c = tid; c < n_parts; c += nt)
			best = pr[c].key > best ? pr[c].key : best;
		i = V; /* no pass over the row */
	}
	for (; i + (kUnroll - 1) * nt < V; i += kUnroll * nt) {
		float l[kUnroll];
#pragma unroll
		for (int u = 0; u < kUnroll; u++)
			l[u] = lg[i + u * nt];
#pragma unroll
		for (int u = 0; u < kUnroll; u++) {
			u64 k = token_key(l[u], i + u * nt);
			best = k > best ? k : best;
		}
	}
	for (; i < V; i += nt) {
		u64 k = token_key(lg[i], i);
		best = k > best ? k : best;
	}
	best = nz_block_max_u64(best, sm.red_u64);
	const int best_id = key_id(best);
	const float m = lg[best_id] != lg[best_id] ? -INFINITY : lg[best_id];
	double sum = 0.0; /* each thread adds its elements in ascending order */
	i = tid;
	if (pr && isfinite(m)) {
		for (int c = tid; c < n_parts; c += nt)
			if (pr[c].m != -INFINITY || pr[c].sum != 0.0)
				sum += pr[c].sum * exp((double)pr[c].m - (double)m);
		i = V;
	}
	for (; i + (kUnroll - 1) * nt < V; i += kUnroll * nt) {
		float l[kUnroll];
#pragma unroll
		for (int u = 0; u < kUnroll; u++)
			l[u] = lg[i + u * nt];
#pragma unroll
		for (int u = 0; u < kUnroll; u++)
			sum += (double)expf(l[u] - m);
	}
	for (; i < V; i += nt)
		sum += (double)expf(lg[i] - m);
	sum = nz_block_sum(sum, sm.red_f64);
	const double lse = (double)m + log(sum);

	int tok = p.target >= 0 ? p.target : best_id;
	if (p.target < 0 && p.temperature > 0.0f && isfinite(m)) {
		const float invt = 1.0f / p.temperature;
		const int k = p.top_k > 0 && p.top_k < V ? p.top_k : V;
		u64 floor = 0;
		if (k < V || p.top_p < 1.0f) {
			if (k < V)
				floor = radix_select(lg, V, 0, false, k, 0.0, m, invt, sm);
			if (p.top_p < 1.0f) {
				double mass = 0.0;
				for (int i = tid; i < V; i += nt)
					if (token_key(lg[i], i) >= floor)
						mass += (double)expf((lg[i] - m) * invt);
				mass = nz_block_sum(mass, sm.red_f64);
				floor = radix_select(lg, V, floor, true, 0, (double)p.top_p * mass, m, invt, sm);
			}
		}
		/* draw: ascending ids, each thread a contiguous chunk */
		const int chunk = (V + nt - 1) / nt;
		const int i0 = tid * chunk, i1 = i0 + chunk < V ? i0 + chunk : V;
		double local = 0.0;
		int last_pos = -1;
		for (int i = i0; i < i1; i++) {
			if (token_key(lg[i], i) < floor)
				continue;
			float q = expf((lg[i] - m) * invt);
			local += (double)q;
			if (q > 0.0f)
				last_pos = i;
		}
		sm.part[tid] = local;
		__syncthreads();
		if (tid == 0) {
			double c = 0.0;
			for (int t = 0; t < nt; t++) {
				sm.excl[t] = c;
				c += sm.part[t];
			}
			sm.above = c;
		}
		__syncthreads();
		const double target = p.u * sm.above;
		u64 found = ~0ull;
		if (sm.excl[tid] + local > target) {
			double c = sm.excl[tid];
			for (int i = i0; i < i1; i++) {
				if (token_key(lg[i], i) < floor)
					continue;
				c += (double)expf((lg[i] - m) * invt);
				if (c > target) {
					found = (u64)i;
					break;
				}
			}
		}
		found = nz_block_min_u64(found, sm.red_u64);
		if (found != ~0ull) {
			tok = (int)found;
		} else {
			u64 lp = nz_block_max_u64(last_pos < 0 ? 0ull : (u64)last_pos + 1, sm.red_u64);
			if (lp > 0)
				tok = (int)(lp - 1);
		}
	}

	/* top logprobs: n_top rounds of "the largest key below the last one" */
	const int n_top = scalars[NZ_SC_N_TOP];
	const int have = n_top < V ? n_top : V;
	u64 prev = 0;
	for (int j = 0; j < have; j++) {
		u64 b = 0;
		bool any = false;
		for (int i = tid; i < V; i += nt) {
			u64 key = token_key(lg[i], i);
			if (j > 0 && key >= prev)
				continue;
			if (!any || key > b) {
				b = key;
				any = true;
			}
		}
		b = nz_block_max_u64(b, sm.red_u64);
		prev = b;
		if (tid == 0) {
			int id = key_id(b);
			out[row].top_token[j] = id;
			out[row].top_logprob[j] = (float)((double)lg[id] - lse);
		}
	}
	if (tid == 0) {
		for (int j = have; j < n_top; j++) {
			out[row].top_token[j] = -1;
			out[row].top_logprob[j] = -INFINITY;
		}
		out[row].token = tok;
		out[row].logprob = (float)((double)lg[tok] - lse);
	}
}

__global__ void __launch_bounds__(256) logit_bias_kernel(const int32_t *__restrict__ scalars, float *logits, int V)
{
	nz_pdl_begin();
	const int n = scalars[NZ_SC_N_BIAS];
	const nz_bias_entry *b =
	    reinterpret_cast<const nz_bias_entry *>(reinterpret_cast<const unsigned char *>(scalars) + scalars[NZ_SC_BIAS_AT]);
	for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
		const nz_bias_entry x = b[j];
		logits[(int64_t)x.row * V + x.token] += x.value;
	}
}

__global__ void __launch_bounds__(256) logit_mask_kernel(const int32_t *__restrict__ scalars, float *logits, int V)
{
	nz_pdl_begin();
	const int W = (V + 31) / 32, n = scalars[NZ_SC_N_MASK] * W;
	const unsigned char *base = reinterpret_cast<const unsigned char *>(scalars);
	const int32_t *rows = reinterpret_cast<const int32_t *>(base + scalars[NZ_SC_MASK_ROWS_AT]);
	const uint32_t *words = reinterpret_cast<const uint32_t *>(base + scalars[NZ_SC_MASK_AT]);
	for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < n; j += gridDim.x * blockDim.x) {
		const uint32_t bits = words[j];
		if (bits == 0xffffffffu)
			continue;
		const int w = j % W;
		float *lg = logits + (int64_t)rows[j / W] * V + (int64_t)w * 32;
		const int top = V - w * 32 < 32 ? V - w * 32 : 32;
		for (int b = 0; b < top; b++)
			if (!((bits >> b) & 1u))
				lg[b] = -INFINITY;
	}
}

} // namespace

cudaError_t nz_k_logit_mask(cudaStream_t s, int grid, const int32_t *scalars, float *logits, int64_t V)
{
	NZ_LAUNCH_PDL(logit_mask_kernel, dim3((unsigned)grid), dim3(256), 0, s, scalars, logits, (int)V);
	return cudaGetLastError();
}

cudaError_t nz_k_logit_bias(cudaStream_t s, int grid, const int32_t *scalars, float *logits, int64_t V)
{
	NZ_LAUNCH_PDL(logit_bias_kernel, dim3((unsigned)grid), dim3(256), 0, s, scalars, logits, (int)V);
	return cudaGetLastError();
}

int64_t nz_sample_parts(int64_t V) { return (V + kChunk - 1) / kChunk; }

cudaError_t nz_k_sample(cudaStream_t s, int64_t n, const float *logits, int64_t V, const nz_sample_in *in,
                        const int32_t *scalars, nz_sample_out *out, nz_sample_part *parts)
{
	const int n_parts = (int)nz_sample_parts(V);
	if (parts) {
		NZ_LAUNCH_PDL(sample_part_kernel, dim3((unsigned)n_parts, (unsigned)n), dim3(kPartThreads), 0, s, logits,
		              (int)V, parts);
		cudaError_t err = cudaGetLastError();
		if (err != cudaSuccess)
			return err;
	}
	NZ_LAUNCH_PDL(sample_kernel, dim3((unsigned)n), dim3(kThreads), 0, s, logits, (int)V, in, scalars, out, parts,
	              n_parts);
	return cudaGetLastError();
}
