/*
 * common.c — backend-neutral helpers (see common.h).
 */
#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------- */

static __thread char nz_errbuf[1024];

int32_t nz_error(int32_t code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(nz_errbuf, sizeof nz_errbuf, fmt, ap);
	va_end(ap);
	return code;
}

int32_t nz_oom(const char *what, size_t bytes)
{
	return nz_error(NZ_ERR_OOM, "%s: out of memory allocating %zu bytes", what, bytes);
}

const char *nz_error_message(void) { return nz_errbuf; }

void *nz_alloc(size_t bytes)
{
	void *p = NULL;
	if (bytes == 0)
		bytes = 64;
	if (bytes > SIZE_MAX - 64)
		return NULL;
	bytes = (bytes + 63) & ~(size_t)63;
	if (posix_memalign(&p, 64, bytes) != 0)
		return NULL;
	return p;
}

void *nz_calloc(size_t bytes)
{
	void *p = nz_alloc(bytes);
	if (p)
		memset(p, 0, bytes);
	return p;
}

void nz_free(void *p) { free(p); }

double nz_now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------
 * dtypes
 * ------------------------------------------------------------------------- */

/* (the conversion loops below inline these) */
static inline __attribute__((always_inline)) uint16_t cvt_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep it, force the quiet bit */
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

uint16_t nz_f32_to_bf16(float f) { return cvt_f32_to_bf16(f); }

/* (the conversion loops below inline these) */
static inline __attribute__((always_inline)) float cvt_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;
	uint32_t u;
	float f;
	if (exp == 0) {
		f = (float)mant * 0x1p-24f; /* zero or subnormal: exact */
		memcpy(&u, &f, sizeof u);
		u |= sign;
	} else if (exp == 31) {
		u = sign | 0x7f800000u | (mant << 13);
	} else {
		u = sign | ((exp + 112u) << 23) | (mant << 13);
	}
	memcpy(&f, &u, sizeof f);
	return f;
}

float nz_f16_to_f32(uint16_t h) { return cvt_f16_to_f32(h); }

/* (the conversion loops below inline these) */
static inline __attribute__((always_inline)) uint16_t cvt_f32_to_f16(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;
	if (a > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
	if (a >= 0x47800000u)
		return (uint16_t)(sign | 0x7c00u); /* >= 65536 or inf */
	if (a < 0x38800000u) {                  /* below 2^-14: f16 subnormal or zero */
		if (a <= 0x33000000u)
			return (uint16_t)sign; /* <= 2^-25 rounds to zero (the tie goes to even) */
		uint32_t e = a >> 23;
		uint32_t m = (a & 0x7fffffu) | 0x800000u;
		uint32_t shift = 126u - e; /* value·2^24 = m·2^(e-126) */
		uint32_t q = m >> shift;
		uint32_t rem = m & ((1u << shift) - 1u);
		uint32_t half = 1u << (shift - 1u);
		if (rem > half || (rem == half && (q & 1u)))
			q++;
		return (uint16_t)(sign | q);
	}
	uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
	r -= 112u << 23;
	return (uint16_t)(sign | (r >> 13)); /* a carry into exponent 31 gives inf */
}

uint16_t nz_f32_to_f16(float f) { return cvt_f32_to_f16(f); }

size_t nz_dtype_size(int32_t dtype)
{
	switch (dtype) {
	case NZ_F32:
		return 4;
	case NZ_F16:
	case NZ_BF16:
		return 2;
	default:
		return 0;
	}
}

const char *nz_dtype_name(int32_t dtype)
{
	switch (dtype) {
	case NZ_F32:
		return "f32";
	case NZ_F16:
		return "f16";
	case NZ_BF16:
		return "bf16";
	case NZ_Q8:
		return "int8";
	default:
		return "unknown";
	}
}

float nz_load_f32(const void *src, int32_t dtype, int64_t i)
{
	switch (dtype) {
	case NZ_F16:
		return nz_f16_to_f32(((const uint16_t *)src)[i]);
	case NZ_BF16:
		return nz_bf16_to_f32(((const uint16_t *)src)[i]);
	default:
		return ((const float *)src)[i];
	}
}

/* One loop per dtype pair, the dtype switch outside it, so that the
 * compiler can inline the conversions and vectorise the loop; MUL is
 * `* scale` or nothing. */
#define NZ_CVT_LOOP(DT, ST, LOAD, STORE, MUL)                                                                          \
	do {                                                                                                               \
		DT *d_ = dst;                                                                                                  \
		const ST *s_ = src;                                                                                            \
		for (int64_t i = 0; i < n; i++)                                                                                \
			d_[i] = STORE(LOAD(s_[i]) MUL);                                                                            \
	} while (0)
#define NZ_ID(x) (x)
#define NZ_CVT_SWITCH(MUL)                                                                                             \
	switch (dst_dtype) {                                                                                               \
	case NZ_BF16:                                                                                                      \
		if (src_dtype == NZ_BF16)                                                                                      \
			NZ_CVT_LOOP(uint16_t, uint16_t, nz_bf16_to_f32, cvt_f32_to_bf16, MUL);                                      \
		else if (src_dtype == NZ_F16)                                                                                  \
			NZ_CVT_LOOP(uint16_t, uint16_t, cvt_f16_to_f32, cvt_f32_to_bf16, MUL);                                       \
		else                                                                                                           \
			NZ_CVT_LOOP(uint16_t, float, NZ_ID, cvt_f32_to_bf16, MUL);                                                  \
		break;                                                                                                         \
	case NZ_F16:                                                                                                       \
		if (src_dtype == NZ_BF16)                                                                                      \
			NZ_CVT_LOOP(uint16_t, uint16_t, nz_bf16_to_f32, cvt_f32_to_f16, MUL);                                       \
		else if (src_dtype == NZ_F16)                                                                                  \
			NZ_CVT_LOOP(uint16_t, uint16_t, cvt_f16_to_f32, cvt_f32_to_f16, MUL);                                        \
		else                                                                                                           \
			NZ_CVT_LOOP(uint16_t, float, NZ_ID, cvt_f32_to_f16, MUL);                                                   \
		break;                                                                                                         \
	case NZ_F32:                                                                                                       \
		if (src_dtype == NZ_BF16)                                                                                      \
			NZ_CVT_LOOP(float, uint16_t, nz_bf16_to_f32, NZ_ID, MUL);                                                  \
		else if (src_dtype == NZ_F16)                                                                                  \
			NZ_CVT_LOOP(float, uint16_t, cvt_f16_to_f32, NZ_ID, MUL);                                                   \
		else                                                                                                           \
			NZ_CVT_LOOP(float, float, NZ_ID, NZ_ID, MUL);                                                              \
		break;                                                                                                         \
	default:                                                                                                           \
		break;                                                                                                         \
	}

void nz_convert_scaled(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n, float scale)
{
	NZ_CVT_SWITCH(*scale)
}

void nz_convert(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n)
{
	if (dst_dtype == src_dtype) {
		memcpy(dst, src, (size_t)n * nz_dtype_size(src_dtype));
		return;
	}
	NZ_CVT_SWITCH()
}
#undef NZ_CVT_SWITCH
#undef NZ_CVT_LOOP
#undef NZ_ID

void nz_quantize_q8(int8_t *q, float *scale, const void *src, int32_t src_dtype, int64_t rows, int64_t n)
{
	float row[256];
	for (int64_t r = 0; r < rows; r++) {
		const char *sr = (const char *)src + (size_t)(r * n) * nz_dtype_size(src_dtype);
		float m = 0;
		for (int64_t k0 = 0; k0 < n; k0 += 256) { /* through f32 in chunks: the loops vectorise */
			int64_t c = n - k0 < 256 ? n - k0 : 256;
			nz_convert(row, NZ_F32, sr + (size_t)k0 * nz_dtype_size(src_dtype), src_dtype, c);
			for (int64_t k = 0; k < c; k++)
				m = fabsf(row[k]) > m ? fabsf(row[k]) : m;
		}
		float s = m / 127.0f;
		scale[r] = s;
		int8_t *qr = q + r * n;
		for (int64_t k0 = 0; k0 < n; k0 += 256) {
			int64_t c = n - k0 < 256 ? n - k0 : 256;
			nz_convert(row, NZ_F32, sr + (size_t)k0 * nz_dtype_size(src_dtype), src_dtype, c);
			for (int64_t k = 0; k < c; k++) {
				float v = s > 0 ? nearbyintf(row[k] / s) : 0.0f;
				qr[k0 + k] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
			}
		}
	}
}

void nz_convert_f32_via(float *dst, const void *src, int32_t src_dtype, int32_t via_dtype, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		float v = nz_load_f32(src, src_dtype, i);
		if (via_dtype == NZ_BF16 && src_dtype != NZ_BF16)
			v = nz_bf16_to_f32(nz_f32_to_bf16(v));
		else if (via_dtype == NZ_F16 && src_dtype != NZ_F16)
			v = nz_f16_to_f32(nz_f32_to_f16(v));
		dst[i] = v;
	}
}

/* ---------------------------------------------------------------------------
 * Tensors and modules
 * ------------------------------------------------------------------------- */

static const char *const kind_names[NZ_T_COUNT] = {
    "EMBED", "LM_HEAD", "FINAL_NORM", "ATTN_NORM", "FFN_NORM", "Q",         "K",
    "V",     "O",       "GATE",       "UP",        "DOWN",     "Q_BIAS",    "K_BIAS",
    "V_BIAS", "O_BIAS", "GATE_BIAS",  "UP_BIAS",   "DOWN_BIAS", "Q_NORM",    "K_NORM",
    "POST_ATTN_NORM", "POST_FFN_NORM",
};

static const char *const module_names[NZ_M_COUNT] = {"q", "k", "v", "o", "gate", "up", "down"};

const char *nz_kind_name(int32_t kind)
{
	return kind >= 0 && kind < NZ_T_COUNT ? kind_names[kind] : "unknown";
}

const char *nz_module_name(int32_t module)
{
	return module >= 0 && module < NZ_M_COUNT ? module_names[module] : "unknown";
}

int nz_kind_per_layer(int32_t kind)
{
	return kind >= NZ_T_ATTN_NORM && kind < NZ_T_COUNT;
}

int nz_kind_is_bias(int32_t kind) { return kind >= NZ_T_Q_BIAS && kind <= NZ_T_DOWN_BIAS; }

void nz_module_dims(const nz_config *c, int32_t module, int64_t *in, int64_t *out)
{
	int64_t H = c->hidden_size, I = c->intermediate_size;
	int64_t qd = c->num_heads * c->head_dim, kvd = c->num_kv_heads * c->head_dim;
	switch (module) {
	case NZ_M_Q:
		*in = H, *out = qd;
		break;
	case NZ_M_K:
	case NZ_M_V:
		*in = H, *out = kvd;
		break;
	case NZ_M_O:
		*in = qd, *out = H;
		break;
	case NZ_M_GATE:
	case NZ_M_UP:
		*in = H, *out = I;
		break;
	case NZ_M_DOWN:
		*in = I, *out = H;
		break;
	default:
		*in = 0, *out = 0;
		break;
	}
}

int nz_tensor_shape(const nz_config *c, int32_t kind, int64_t shape[2])
{
	int64_t in, out;
	switch (kind) {
	case NZ_T_EMBED:
	case NZ_T_LM_HEAD:
		shape[0] = c->vocab_size, shape[1] = c->hidden_size;
		return 2;
	case NZ_T_FINAL_NORM:
	case NZ_T_ATTN_NORM:
	case NZ_T_FFN_NORM:
	case NZ_T_POST_ATTN_NORM:
	case NZ_T_POST_FFN_NORM:
		shape[0] = c->hidden_size;
		return 1;
	case NZ_T_Q_NORM:
	case NZ_T_K_NORM:
		shape[0] = c->head_dim;
		return 1;
	default:
		break;
	}
	if (kind >= NZ_T_Q && kind <= NZ_T_DOWN) {
		nz_module_dims(c, kind - NZ_T_Q, &in, &out);
		shape[0] = out, shape[1] = in;
		return 2;
	}
	if (nz_kind_is_bias(kind)) {
		nz_module_dims(c, kind - NZ_T_Q_BIAS, &in, &out);
		shape[0] = out;
		return 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------------
 * RoPE
 * ------------------------------------------------------------------------- */

int64_t nz_rotary_dim(const nz_config *c)
{
	return c->rotary_dim > 0 ? c->rotary_dim : c->head_dim;
}

void nz_rope_inv_freq(const nz_config *c, float *inv)
{
	int64_t dim = nz_rotary_dim(c), half = dim / 2;
	for (int64_t j = 0; j < half; j++) {
		float e = (float)(2 * j) / (float)dim;
		float p = (float)pow(c->rope_theta, (double)e);
		/* longrope (transformers' _compute_longrope_parameters, in f32):
		 * 1 / (factor_j · theta^(2j/dim)) */
		inv[j] = c->rope_type == NZ_ROPE_LONGROPE ? 1.0f / (c->rope_ext_factors[j] * p) : 1.0f / p;
	}
	if (c->rope_type == NZ_ROPE_LINEAR) {
		for (int64_t j = 0; j < half; j++)
			inv[j] = (float)((double)inv[j] / c->rope_factor);
	} else if (c->rope_type == NZ_ROPE_LLAMA3) {
		double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
		double orig = (double)c->rope_original_max_position;
		double low_wl = orig / lo, high_wl = orig / hi;
		for (int64_t j = 0; j < half; j++) {
			double f = inv[j];
			double wl = 2.0 * M_PI / f;
			double out;
			if (wl < high_wl) {
				out = f;
			} else if (wl > low_wl) {
				out = f / factor;
			} else {
				double s = (orig / wl - lo) / (hi - lo);
				out = (1.0 - s) * f / factor + s * f;
			}
			inv[j] = (float)out;
		}
	} else if (c->rope_type == NZ_ROPE_YARN) {
		/* YaRN as transformers' _compute_yarn_parameters: the dimensions
		 * whose wavelength turns fewer than beta_slow times over the
		 * original context are interpolated (f/factor), those turning more
		 * than beta_fast times are kept (extrapolated), and a linear ramp
		 * over the pair index blends the two in between. The bounds come
		 * from the inverse of the rotation count:
		 *   d(r) = dim·ln(orig / (2π·r)) / (2·ln(theta)),
		 * floored/ceiled when truncate, clamped to [0, dim-1]. */
		double dim = (double)nz_rotary_dim(c), orig = (double)c->rope_original_max_position;
		double lo = dim * log(orig / (c->rope_beta_fast * 2.0 * M_PI)) / (2.0 * log(c->rope_theta));
		double hi = dim * log(orig / (c->rope_beta_slow * 2.0 * M_PI)) / (2.0 * log(c->rope_theta));
		if (c->rope_truncate)
			lo = floor(lo), hi = ceil(hi);
		if (lo < 0)
			lo = 0;
		if (hi > dim - 1)
			hi = dim - 1;
		if (lo == hi)
			hi += 0.001; /* as HF: no division by zero */
		for (int64_t j = 0; j < half; j++) {
			double ramp = ((double)j - lo) / (hi - lo);
			ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
			double extra = 1.0 - ramp; /* HF's inv_freq_extrapolation_factor */
			double f = inv[j];
			inv[j] = (float)(f / c->rope_factor * (1.0 - extra) + f * extra);
		}
	}
}

void nz_rope_local_inv_freq(const nz_config *c, float *inv)
{
	nz_config l = *c;
	l.rope_theta = c->rope_local_theta;
	l.rope_type = NZ_ROPE_DEFAULT;
	nz_rope_inv_freq(&l, inv);
}

/* RoPE's cos and sin are multiplied by this (transformers' attention_scaling):
 * YaRN's attention factor, 1 for the other types. Scaling cos and sin where
 * they are made scales the rotated q and k alike, so the attention logits by
 * its square, exactly as transformers does, and the cached keys are the ones
 * transformers caches. Both backends make cos/sin from one formula in one
 * place each (nz_rope_cos_sin here, embed_norm_kernel on CUDA), so this keeps
 * them identical, where folding the square into each backend's softmax scale
 * would change its rounding differently. */
float nz_rope_attention_factor(const nz_config *c)
{
	return c->rope_type == NZ_ROPE_YARN || c->rope_type == NZ_ROPE_LONGROPE ? (float)c->rope_attention_factor : 1.0f;
}

void nz_rope_cos_sin(const float *inv, int64_t half, int64_t pos, float scale, float *cos_out, float *sin_out)
{
	float p = (float)pos;
	for (int64_t j = 0; j < half; j++) {
		float a = p * inv[j];
		cos_out[j] = (float)cos((double)a) * scale;
		sin_out[j] = (float)sin((double)a) * scale;
	}
}

void nz_rope_apply(float *x, int64_t half, const float *cos_v, const float *sin_v)
{
	for (int64_t i = 0; i < half; i++) {
		float x1 = x[i], x2 = x[i + half];
		x[i] = x1 * cos_v[i] - x2 * sin_v[i];
		x[i + half] = x2 * cos_v[i] + x1 * sin_v[i];
	}
}

/* ---------------------------------------------------------------------------
 * Random numbers and sampling
 * ------------------------------------------------------------------------- */

uint64_t nz_splitmix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

double nz_rng_uniform(uint64_t seed, int64_t position)
{
	uint64_t r = nz_splitmix64(nz_splitmix64(seed) ^ (uint64_t)position);
	return (double)(r >> 11) * 0x1p-53;
}

/* A sort key that orders tokens most likely first: the logit's bits made
 * monotonic in the high half, the complemented id in the low half (so a
 * larger key means a larger logit, or the same logit and a lower id). -0
 * keys as +0 and NaN as -inf, so that the first key is greedy's argmax
 * (the lowest id among the logits == max, NaN never wins): a scored row's
 * top token is the token greedy sampling returns there (speculative
 * decoding relies on it). */
static inline uint64_t token_key(float logit, int32_t id)
{
	uint32_t u;
	if (logit != logit)
		logit = -INFINITY;
	else if (logit == 0.0f)
		logit = 0.0f;
	memcpy(&u, &logit, sizeof u);
	u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
	return ((uint64_t)u << 32) | (uint32_t)(0xffffffffu - (uint32_t)id);
}

static inline int32_t key_id(uint64_t key) { return (int32_t)(0xffffffffu - (uint32_t)key); }

static int cmp_key_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp_i32_asc(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return x < y ? -1 : x > y ? 1 : 0;
}

/* Moves the k largest keys of a[0..n) to a[0..k) (any order). */
static void select_top(uint64_t *a, int64_t n, int64_t k)
{
	int64_t lo = 0, hi = n - 1;
	while (lo < hi) {
		/* median of three as pivot */
		int64_t mid = lo + (hi - lo) / 2;
		uint64_t x = a[lo], y = a[mid], z = a[hi];
		uint64_t piv = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
		int64_t i = lo, j = hi;
		while (i <= j) {
			while (a[i] > piv)
				i++;
			while (a[j] < piv)
				j--;
			if (i <= j) {
				uint64_t t = a[i];
				a[i] = a[j];
				a[j] = t;
				i++;
				j--;
			}
		}
		/* a[lo..j] >= piv >= a[i..hi] */
		if (k - 1 <= j)
			hi = j;
		else if (k - 1 >= i)
			lo = i;
		else
			break;
	}
}

size_t nz_sample_scratch_bytes(int64_t vocab)
{
	return (size_t)vocab * (sizeof(uint64_t) + sizeof(int32_t) + sizeof(float)) + 64;
}

/* Σ v[0..n) in double with eight interleaved partial sums, combined in a
 * fixed order (vectorizes; the same result everywhere). */
static double sum_fixed(const float *v, int64_t n)
{
	double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			s[j] += (double)v[i + j];
	for (int j = 0; i < n; i++, j++)
		s[j] += (double)v[i];
	return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Walks ids[0..n) (or 0..n-1 when ids is NULL) accumulating the weights q
 * and returns the first whose running sum exceeds u·(their total). */
static int32_t draw(const float *q, const int32_t *ids, int64_t n, double u)
{
	double total = 0;
	for (int64_t i = 0; i < n; i++)
		total += (double)q[ids ? ids[i] : i];
	double target = u * total, c = 0;
	int32_t last = ids ? ids[0] : 0;
	for (int64_t i = 0; i < n; i++) {
		int32_t id = ids ? ids[i] : (int32_t)i;
		if (q[id] > 0)
			last = id;
		c += (double)q[id];
		if (c > target)
			return id;
	}
	return last;
}

void nz_sample(const float *logits, int64_t V, const nz_sample_params *p, void *scratch, int32_t *out_token,
               float *out_logprob, int32_t *top_tok, float *top_lp)
{
	uint64_t *keys = scratch;
	int32_t *ids = (int32_t *)(keys + V);
	float *q = (float *)(ids + V);

	/* max (eight interleaved partial maxima, so it vectorizes; NaN never
	 * wins), then argmax: the lowest id holding it */
	float pm[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
	int64_t i8 = 0;
	for (; i8 + 8 <= V; i8 += 8)
		for (int j = 0; j < 8; j++)
			pm[j] = nz_select(logits[i8 + j] > pm[j], logits[i8 + j], pm[j]);
	float m = -INFINITY;
	for (int j = 0; j < 8; j++)
		m = pm[j] > m ? pm[j] : m;
	for (; i8 < V; i8++)
		m = logits[i8] > m ? logits[i8] : m;
	int32_t best = 0;
	for (int64_t i = 0; i < V; i++)
		if (logits[i] == m) {
			best = (int32_t)i;
			break;
		}
	for (int64_t i = 0; i < V; i++)
		q[i] = nz_expf(logits[i] - m);
	double lse = (double)m + log(sum_fixed(q, V));

	int32_t tok = best;
	if (p->scored) {
		tok = p->target;
	} else if (p->temperature > 0 && isfinite(m)) {
		/* q = exp((logits - max)/temperature): the softmax up to its sum */
		float invt = 1.0f / p->temperature;
		for (int64_t i = 0; i < V; i++)
			q[i] = nz_expf((logits[i] - m) * invt);
		double u = nz_rng_uniform(p->seed, p->position);
		int64_t k = (p->top_k > 0 && p->top_k < V) ? p->top_k : V;
		if (k == V && p->top_p >= 1.0f) {
			tok = draw(q, NULL, V, u); /* no filter: every token, in id order */
		} else {
			int64_t n;       /* candidates, sorted most likely first */
			double mass = 0; /* the mass top_p is a fraction of */
			if (k < V) {
				for (int64_t i = 0; i < V; i++)
					keys[i] = token_key(logits[i], (int32_t)i);
				select_top(keys, V, k);
				n = k;
				qsort(keys, (size_t)n, sizeof *keys, cmp_key_desc);
				for (int64_t i = 0; i < n; i++)
					mass += (double)q[key_id(keys[i])];
			} else {
				mass = sum_fixed(q, V);
				/* Only tokens at least as likely as thr can be kept when the
				 * ones that likely already reach top_p; lower thr until so. */
				float thr = 0x1p-10f;
				for (;;) {
					n = 0;
					double cm = 0;
					for (int64_t i = 0; i < V; i++) {
						if (q[i] >= thr) {
							keys[n++] = token_key(logits[i], (int32_t)i);
							cm += (double)q[i];
						}
					}
					if (cm >= (double)p->top_p * mass || thr == 0.0f)
						break;
					thr = thr > 0x1p-100f ? thr * 0x1p-10f : 0.0f;
				}
				qsort(keys, (size_t)n, sizeof *keys, cmp_key_desc);
			}
			int64_t keep = n;
			if (p->top_p < 1.0f) {
				double c = 0, need = (double)p->top_p * mass;
				for (int64_t i = 0; i < n; i++) {
					c += (double)q[key_id(keys[i])];
					if (c >= need) {
						keep = i + 1;
						break;
					}
				}
			}
			for (int64_t i = 0; i < keep; i++)
				ids[i] = key_id(keys[i]);
			qsort(ids, (size_t)keep, sizeof *ids, cmp_i32_asc);
			tok = draw(q, ids, keep, u);
		}
	}
	*out_token = tok;
	*out_logprob = (float)((double)logits[tok] - lse);

	int32_t nt = p->n_top;
	if (nt > 0) {
		uint64_t best_keys[NZ_MAX_TOP];
		int32_t have = 0;
		if (nt > V)
			nt = (int32_t)V;
		for (int64_t i = 0; i < V; i++) {
			uint64_t key = token_key(logits[i], (int32_t)i);
			if (have == nt && key <= best_keys[have - 1])
				continue;
			int32_t j = have < nt ? have++ : have - 1;
			while (j > 0 && best_keys[j - 1] < key) {
				best_keys[j] = best_keys[j - 1];
				j--;
			}
			best_keys[j] = key;
		}
		for (int32_t j = 0; j < nt; j++) {
			int32_t id = key_id(best_keys[j]);
			top_tok[j] = id;
			top_lp[j] = (float)((double)logits[id] - lse);
		}
		for (int32_t j = nt; j < p->n_top; j++) {
			top_tok[j] = -1;
			top_lp[j] = -INFINITY;
		}
	}
}
