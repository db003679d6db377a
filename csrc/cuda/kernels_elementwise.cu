/*
 * kernels_elementwise.cu — per-token kernels of the forward pass:
 * embedding + first RMSNorm (+ RoPE angles), residual add + RMSNorm,
 * final-norm gather, RoPE + KV-cache write, SiLU-gated MLP activation.
 *
 * RMSNorm follows the CPU backend exactly: the sum of squares in double,
 * r = 1 / sqrtf(mean + eps) in f32, out = w · (x · r).
 */
#include "cuda_kernels.h"

namespace {

const int kNormThreads = 256;

template <class T>
__global__ void __launch_bounds__(256)
    embed_norm_kernel(const T *__restrict__ embed, const int32_t *__restrict__ tokens, const int32_t *__restrict__ tok_pos,
                      const float *__restrict__ inv_freq, int64_t H, int64_t hd, const float *__restrict__ w, float eps,
                      float *__restrict__ h, T *__restrict__ x, float *__restrict__ cs)
{
	nz_pdl_begin();
	__shared__ double red[32];
	const int64_t t = blockIdx.x;
	const T *e = embed + (int64_t)tokens[t] * H;
	float *hr = h + t * H;
	double ss = 0;
	for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
		float v = nz_f32(e[i]);
		hr[i] = v;
		ss += (double)v * (double)v;
	}
	ss = nz_block_sum(ss, red);
	const float r = 1.0f / sqrtf((float)(ss / (double)H) + eps);
	T *xr = x + t * H;
	for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
		xr[i] = nz_cvt<T>(w[i] * (hr[i] * r));
	/* RoPE angles as common.c computes them: the angle in f32, its cosine
	 * and sine in double, rounded to f32. */
	const int64_t half = hd / 2;
	const float p = (float)tok_pos[t];
	float *c = cs + t * hd;
	for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
		float a = p * inv_freq[j];
		c[j] = (float)cos((double)a);
		c[half + j] = (float)sin((double)a);
	}
}

template <class T>
__global__ void __launch_bounds__(256)
    add_norm_kernel(int64_t H, float *__restrict__ h, const float *__restrict__ y, const float *__restrict__ yl,
                    const int32_t *__restrict__ tok_lora, const float *__restrict__ bias, const float *__restrict__ w,
                    float eps, T *__restrict__ x)
{
	nz_pdl_begin();
	__shared__ double red[32];
	const int64_t t = blockIdx.x;
	float *hr = h + t * H;
	const float *yr = y + t * H;
	const float *lr = yl && tok_lora[t] ? yl + t * H : NULL;
	double ss = 0;
	for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
		float d = bias ? yr[i] + bias[i] : yr[i];
		if (lr)
			d += lr[i];
		float v = hr[i] + d;
		hr[i] = v;
		ss += (double)v * (double)v;
	}
	if (!w) /* the last layer: the final norm runs on the sampled tokens only */
		return;
	ss = nz_block_sum(ss, red);
	const float r = 1.0f / sqrtf((float)(ss / (double)H) + eps);
	T *xr = x + t * H;
	for (int64_t i = threadIdx.x; i < H; i += blockDim.x)
		xr[i] = nz_cvt<T>(w[i] * (hr[i] * r));
}

template <class T>
__global__ void __launch_bounds__(256)
    gather_norm_kernel(const nz_sample_in *__restrict__ samples, const float *__restrict__ h, int64_t H,
                       const float *__restrict__ w, float eps, T *__restrict__ x)
{
	nz_pdl_begin();
	__shared__ double red[32];
	const int64_t i = blockIdx.x;
	const float *hr = h + (int64_t)samples[i].token * H;
	double ss = 0;
	for (int64_t j = threadIdx.x; j < H; j += blockDim.x)
		ss += (double)hr[j] * (double)hr[j];
	ss = nz_block_sum(ss, red);
	const float r = 1.0f / sqrtf((float)(ss / (double)H) + eps);
	T *xr = x + i * H;
	for (int64_t j = threadIdx.x; j < H; j += blockDim.x)
		xr[j] = nz_cvt<T>(w[j] * (hr[j] * r));
}

template <class T>
__global__ void __launch_bounds__(128)
    rope_kv_kernel(const float *__restrict__ y, const float *__restrict__ yl, const int32_t *__restrict__ tok_lora,
                   const float *__restrict__ bias, const float *__restrict__ cs,
                   const int32_t *__restrict__ tok_pos, const int32_t *__restrict__ tok_seq,
                   const int32_t *__restrict__ bt, const int32_t *__restrict__ scalars, int nh, int nkv, int hd, int bs,
                   float *__restrict__ q_out, T *__restrict__ kc, T *__restrict__ vc)
{
	nz_pdl_begin();
	const int64_t t = blockIdx.x;
	const int half = hd / 2, qd = nh * hd, kvd = nkv * hd;
	const int64_t ys = (int64_t)qd + 2 * kvd;
	const float *yr = y + t * ys;
	const float *lr = yl && tok_lora[t] ? yl + t * ys : NULL;
	const float *c = cs + t * hd, *sn = c + half;
	const int pos = tok_pos[t];
	const int64_t width = scalars[NZ_SC_BT_WIDTH];
	const int64_t blk = bt[(int64_t)tok_seq[t] * width + pos / bs];
	const int64_t row = pos % bs;
	float *qr = q_out + t * qd;
	for (int i = threadIdx.x; i < nh * half; i += blockDim.x) {
		int hh = i / half, j = i % half, o = hh * hd + j;
		float x1 = yr[o], x2 = yr[o + half];
		if (bias)
			x1 += bias[o], x2 += bias[o + half];
		if (lr)
			x1 += lr[o], x2 += lr[o + half];
		nz_rope(x1, x2, c[j], sn[j], qr[o], qr[o + half]);
	}
	for (int i = threadIdx.x; i < nkv * half; i += blockDim.x) {
		int g = i / half, j = i % half, o = qd + g * hd + j;
		float x1 = yr[o], x2 = yr[o + half];
		if (bias)
			x1 += bias[o], x2 += bias[o + half];
		if (lr)
			x1 += lr[o], x2 += lr[o + half];
		T *dst = kc + ((blk * nkv + g) * bs + row) * hd;
		float a, b;
		nz_rope(x1, x2, c[j], sn[j], a, b);
		dst[j] = nz_cvt<T>(a);
		dst[j + half] = nz_cvt<T>(b);
	}
	for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
		int g = i / hd, d = i % hd, o = qd + kvd + i;
		float v = bias ? yr[o] + bias[o] : yr[o];
		if (lr)
			v += lr[o];
		vc[((blk * nkv + g) * bs + row) * hd + d] = nz_cvt<T>(v);
	}
}

template <class T>
__global__ void __launch_bounds__(256)
    silu_kernel(int64_t n, int64_t I, const float *__restrict__ y, const float *__restrict__ yl,
                const int32_t *__restrict__ tok_lora, const float *__restrict__ bias, T *__restrict__ x)
{
	nz_pdl_begin();
	for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
		int64_t t = k / I, i = k % I;
		float g = y[t * 2 * I + i], u = y[t * 2 * I + I + i];
		if (bias)
			g += bias[i], u += bias[I + i];
		if (yl && tok_lora[t])
			g += yl[t * 2 * I + i], u += yl[t * 2 * I + I + i];
		x[k] = nz_cvt<T>(g / (1.0f + expf(-g)) * u);
	}
}

__global__ void __launch_bounds__(256) read_kernel(const uint4 *__restrict__ p, int64_t n, unsigned *__restrict__ sink)
{
	unsigned acc = 0;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
		uint4 v = p[i];
		acc ^= v.x ^ v.y ^ v.z ^ v.w;
	}
	if (acc == 0x9e3779b9u) /* practically never: keeps the loads alive */
		sink[0] = acc;
}

} // namespace

#define NZ_DISPATCH(dtype, LAUNCH)                                                                                     \
	switch (dtype) {                                                                                                   \
	case NZ_BF16: {                                                                                                    \
		typedef __nv_bfloat16 T;                                                                                       \
		LAUNCH;                                                                                                        \
		break;                                                                                                         \
	}                                                                                                                  \
	case NZ_F16: {                                                                                                     \
		typedef __half T;                                                                                              \
		LAUNCH;                                                                                                        \
		break;                                                                                                         \
	}                                                                                                                  \
	default: {                                                                                                         \
		typedef float T;                                                                                               \
		LAUNCH;                                                                                                        \
		break;                                                                                                         \
	}                                                                                                                  \
	}

cudaError_t nz_k_embed_norm(int dtype, cudaStream_t s, int64_t T_, const void *embed, const int32_t *tokens,
                            const int32_t *tok_pos, const float *inv_freq, int64_t H, int64_t hd,
                            const float *norm_w, float eps, float *h, void *x, float *cs)
{
	NZ_DISPATCH(dtype, NZ_LAUNCH((embed_norm_kernel<T>), dim3((unsigned)T_), dim3(kNormThreads), 0, s,
	                             (const T *)embed, tokens, tok_pos, inv_freq, H, hd, norm_w, eps, h, (T *)x, cs));
	return cudaGetLastError();
}

cudaError_t nz_k_add_norm(int dtype, cudaStream_t s, int64_t T_, int64_t H, float *h, const float *y,
                          const float *yl, const int32_t *tok_lora, const float *bias, const float *norm_w, float eps,
                          void *x)
{
	NZ_DISPATCH(dtype, NZ_LAUNCH_PDL((add_norm_kernel<T>), dim3((unsigned)T_), dim3(kNormThreads), 0, s, H, h, y, yl,
	                             tok_lora, bias, norm_w, eps, (T *)x));
	return cudaGetLastError();
}

cudaError_t nz_k_gather_norm(int dtype, cudaStream_t s, int64_t n, const nz_sample_in *samples, const float *h,
                             int64_t H, const float *norm_w, float eps, void *x)
{
	NZ_DISPATCH(dtype, NZ_LAUNCH_PDL((gather_norm_kernel<T>), dim3((unsigned)n), dim3(kNormThreads), 0, s, samples, h, H,
	                             norm_w, eps, (T *)x));
	return cudaGetLastError();
}

cudaError_t nz_k_rope_kv(int dtype, cudaStream_t s, int64_t T_, const float *y, const float *yl, const int32_t *tok_lora,
                         const float *bias, const float *cs, const int32_t *tok_pos, const int32_t *tok_seq,
                         const int32_t *bt, const int32_t *scalars, int nh, int nkv, int hd, int bs, float *q_out,
                         void *kc, void *vc)
{
	NZ_DISPATCH(dtype, NZ_LAUNCH_PDL((rope_kv_kernel<T>), dim3((unsigned)T_), dim3(128), 0, s, y, yl, tok_lora, bias, cs,
	                             tok_pos, tok_seq, bt, scalars, nh, nkv, hd, bs, q_out, (T *)kc, (T *)vc));
	return cudaGetLastError();
}

cudaError_t nz_k_silu(int dtype, cudaStream_t s, int64_t T_, int64_t I, const float *y, const float *yl,
                      const int32_t *tok_lora, const float *bias, void *x)
{
	int64_t n = T_ * I;
	int64_t blocks = (n + 255) / 256;
	if (blocks > 65536)
		blocks = 65536;
	NZ_DISPATCH(dtype,
	            NZ_LAUNCH_PDL((silu_kernel<T>), dim3((unsigned)blocks), dim3(256), 0, s, n, I, y, yl, tok_lora, bias, (T *)x));
	return cudaGetLastError();
}

cudaError_t nz_k_read(cudaStream_t s, const void *buf, int64_t bytes, unsigned *sink, int blocks)
{
	NZ_LAUNCH(read_kernel, dim3((unsigned)blocks), dim3(256), 0, s, (const uint4 *)buf, bytes / 16, sink);
	return cudaGetLastError();
}
