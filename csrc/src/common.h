/*
 * common.h — backend-neutral helpers shared by every engine backend:
 * error reporting, dtype conversion, tensor shapes, RoPE, the sampler and
 * its random generator. Nothing here is CPU-specific; the CUDA library
 * compiles common.c and api.c as they are.
 */
#ifndef NZ_COMMON_H
#define NZ_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nozzle_engine.h"

/* Marks the functions of the public ABI (the library builds with
 * -fvisibility=hidden). */
#define NZ_API __attribute__((visibility("default")))

/* Largest n_top the sampler reports (nozzle_engine.h: n_top <= 20). */
#define NZ_MAX_TOP 20

/* ---- errors ---------------------------------------------------------------
 * nz_error formats a message into the calling thread's last-error buffer
 * and returns code, so a failing path reads `return nz_error(NZ_ERR_INVALID,
 * "...")`. nz_oom is the allocation-failure form ("<what>: out of memory
 * allocating N bytes"). */
int32_t nz_error(int32_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int32_t nz_oom(const char *what, size_t bytes);
const char *nz_error_message(void);

/* 64-byte aligned allocation (NULL on failure or overflow); nz_free takes NULL. */
void *nz_alloc(size_t bytes);
void *nz_calloc(size_t bytes);
void nz_free(void *p);

/* ---- dtypes (engine-spec §1.3) --------------------------------------------- */
static inline float nz_bf16_to_f32(uint16_t b)
{
	uint32_t u = (uint32_t)b << 16;
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}
uint16_t nz_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float nz_f16_to_f32(uint16_t h);  /* exact, subnormals included */
uint16_t nz_f32_to_f16(float f);  /* round to nearest even; overflow -> inf */

/* Bytes per element of an NZ_* dtype, 0 for an unknown one. */
size_t nz_dtype_size(int32_t dtype);
const char *nz_dtype_name(int32_t dtype);
/* Element i of src (of dtype) as f32. */
float nz_load_f32(const void *src, int32_t dtype, int64_t i);
/* Converts n elements; dst and src must not overlap. */
void nz_convert(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n);
/* dst[i] = scale · src[i], the product in f32 rounded once to dst_dtype
 * (what nz_load_f32, a multiply and nz_convert from f32 give, faster). */
void nz_convert_scaled(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n, float scale);
/* Converts n elements to f32 after rounding each through via_dtype (the
 * value an engine keeping via_dtype would hold). */
void nz_convert_f32_via(float *dst, const void *src, int32_t src_dtype, int32_t via_dtype, int64_t n);

/* Quantizes rows × n elements of src (row-major, of src_dtype) to int8 with
 * one scale per row (NZ_Q8): scale[r] = max_k |w[r][k]| / 127 (0 for a row
 * of zeros), q[r][k] = round_half_even(w[r][k] / scale[r]), in [-127, 127]. */
void nz_quantize_q8(int8_t *q, float *scale, const void *src, int32_t src_dtype, int64_t rows, int64_t n);

/* ---- tensors and modules ---------------------------------------------------- */
/* The shape a base tensor kind must have under cfg; returns ndim (1 or 2),
 * 0 for an unknown kind. */
int nz_tensor_shape(const nz_config *cfg, int32_t kind, int64_t shape[2]);
/* 1 when the kind takes a layer index, 0 when it takes -1. */
int nz_kind_per_layer(int32_t kind);
/* 1 when the kind is a bias (optional). */
int nz_kind_is_bias(int32_t kind);
const char *nz_kind_name(int32_t kind);
/* in/out features of a LoRA target module (NZ_M_*). Module m's base weight
 * kind is NZ_T_Q + m and its bias kind NZ_T_Q_BIAS + m. */
void nz_module_dims(const nz_config *cfg, int32_t module, int64_t *in, int64_t *out);
const char *nz_module_name(int32_t module);

/* ---- RoPE (engine-spec §1.4.3, §1.5) --------------------------------------- */
/* The dims of a head RoPE rotates: cfg->rotary_dim, or head_dim where 0
 * (nz_engine_create resolves it for the backends). */
int64_t nz_rotary_dim(const nz_config *cfg);
/* inv[0 .. rotary_dim/2) for cfg's rope_theta, rotary_dim and rope_type
 * (default, linear, llama3, yarn, longrope), in f32 as Hugging Face
 * computes them. */
void nz_rope_inv_freq(const nz_config *cfg, float *inv);
/* inv for the sliding layers when rope_local_theta > 0: default RoPE with
 * base rope_local_theta (Gemma 3's local layers). */
void nz_rope_local_inv_freq(const nz_config *cfg, float *inv);
/* 1 when layer uses the sliding window. nz_engine_create resolves
 * cfg->layer_sliding for the backends: never NULL there, all 0 without a
 * window. */
static inline int nz_layer_sliding(const nz_config *c, int64_t layer)
{
	return c->sliding_window > 0 && c->layer_sliding[layer];
}
/* The factor cos and sin are multiplied by: yarn's and longrope's
 * rope_attention_factor, else 1. */
float nz_rope_attention_factor(const nz_config *cfg);
/* cos/sin[0 .. half) of pos·inv[j] (angle in f32, as HF), each times scale
 * (nz_rope_attention_factor) in f32. */
void nz_rope_cos_sin(const float *inv, int64_t half, int64_t pos, float scale, float *cos_out, float *sin_out);
/* Rotate-half RoPE of x[0 .. 2·half) in place: the rotated dims of one
 * head (half = rotary_dim/2; the head's dims after them are left as they
 * are). */
void nz_rope_apply(float *x, int64_t half, const float *cos_v, const float *sin_v);

/* ---- random numbers and sampling -------------------------------------------- */
uint64_t nz_splitmix64(uint64_t x);
/* The uniform draw in [0,1) for a sequence's token at `position`:
 * r = splitmix64(splitmix64(seed) ^ position), u = (r >> 11) · 2^-53.
 * It depends on (seed, position) only, never on the batch. */
double nz_rng_uniform(uint64_t seed, int64_t position);

typedef struct nz_sample_params {
	float temperature; /* 0 = greedy */
	float top_p;       /* 1 = off */
	int32_t top_k;     /* 0 = off */
	uint64_t seed;
	int64_t position;  /* position of the token being sampled */
	int32_t n_top;     /* 0..NZ_MAX_TOP */
	int32_t scored;    /* 1: nothing is drawn, the token is target (scoring) */
	int32_t target;
} nz_sample_params;

/* Scratch the sampler needs for a vocabulary of V tokens. */
size_t nz_sample_scratch_bytes(int64_t vocab);

/* Samples one token from logits[0..V) (see nz_batch in nozzle_engine.h):
 *  - greedy: argmax, lowest id on ties;
 *  - otherwise p = softmax(logits/temperature); keep the top_k most likely
 *    (ties: lower id first), renormalise; keep the shortest most-likely-first
 *    prefix whose mass reaches top_p; draw u = nz_rng_uniform(seed,
 *    position) and walk the kept tokens in ascending id, returning the
 *    first whose cumulative probability exceeds u·(kept mass).
 * When p->scored is set, nothing is drawn: the token is p->target.
 * out_logprob is the token's log_softmax at temperature 1; top_tok/top_lp
 * (n_top entries, may be NULL when n_top is 0) the most likely tokens, most
 * likely first (ties: lower id). scratch holds nz_sample_scratch_bytes(V). */
void nz_sample(const float *logits, int64_t vocab, const nz_sample_params *p, void *scratch,
               int32_t *out_token, float *out_logprob, int32_t *top_tok, float *top_lp);

/* Adds sequence s's logit adjustments (nz_batch.bias_off) to its row of
 * logits [V]; nothing when the batch has none. */
static inline void nz_apply_bias(float *logits, const nz_batch *b, int64_t s)
{
	if (!b->bias_off)
		return;
	for (int32_t j = b->bias_off[s]; j < b->bias_off[s + 1]; j++)
		logits[b->bias_token[j]] += b->bias_value[j];
}

/* Sets the logits of the tokens sequence s's mask (nz_batch.seq_allow)
 * does not allow to -inf; nothing when it has none. */
static inline void nz_apply_allow(float *logits, int64_t V, const nz_batch *b, int64_t s)
{
	if (!b->seq_allow || b->seq_allow[s] < 0)
		return;
	int64_t W = (V + 31) / 32;
	const uint32_t *row = b->allow + (int64_t)b->seq_allow[s] * W;
	for (int64_t t = 0; t < V; t++)
		if (!((row[t >> 5] >> (t & 31)) & 1u))
			logits[t] = -__builtin_inff();
}

/* ---- math ------------------------------------------------------------------- */
/* c ? a : b through bit masks: unlike a conditional on a float compare, GCC
 * vectorizes it under the default -ftrapping-math. */
static inline float nz_select(int c, float a, float b)
{
	uint32_t ua, ub, m = (uint32_t)0 - (uint32_t)(c != 0), r;
	float f;
	memcpy(&ua, &a, sizeof ua);
	memcpy(&ub, &b, sizeof ub);
	r = (ua & m) | (ub & ~m);
	memcpy(&f, &r, sizeof f);
	return f;
}

/* exp(x) in f32 without branches or calls, so loops over it vectorize:
 * relative error below 3e-7 for x in [-87.3, 88.7], 0 below (and for
 * -inf), +inf above; NaN in, NaN out. The same operations in the same order
 * everywhere, so results are deterministic. */
static inline float nz_expf(float x)
{
	const float lo = -87.33654f, hi = 88.72283f;
	float xc = nz_select(x < lo, lo, x);
	xc = nz_select(xc > hi, hi, xc);
	xc = nz_select(x != x, 0.0f, xc); /* NaN: computed on 0, replaced below */
	/* n = round(xc·log2 e): adding and removing 1.5·2^23 rounds to an integer */
	float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	float r = xc - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * (r * r) + r + 1.0f;
	/* 2^n as two normal factors (n is in [-126, 128]) */
	int32_t ni = (int32_t)n, n1 = ni >> 1;
	uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(ni - n1 + 127) << 23;
	float s1, s2;
	memcpy(&s1, &b1, sizeof s1);
	memcpy(&s2, &b2, sizeof s2);
	float y = p * s1 * s2;
	y = nz_select(x < lo, 0.0f, y);
	y = nz_select(x > hi, __builtin_inff(), y);
	return nz_select(x != x, x, y);
}

/* GELU with PyTorch's tanh approximation, 0.5·x·(1 + tanh(√(2/π)·(x +
 * 0.044715·x³))), written as x·sigmoid(2·√(2/π)·(x + 0.044715·x³)) — the
 * same function (1 + tanh(u) = 2·sigmoid(2u)) through nz_expf, which
 * vectorizes where tanhf does not. */
static inline float nz_gelu_tanh(float x)
{
	return x / (1.0f + nz_expf(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
}

/* Gemma's soft-capping of n values in place: cap·tanh(x/cap) (cap > 0),
 * tanh(u) written as 1 − 2/(1 + e^2u) through nz_expf so the loop
 * vectorizes (tanhf does not; Gemma 2's cap of every logit of a 256,000-
 * token vocabulary cost a quarter of a decode step). Its error is absolute,
 * a few f32 ulps of cap, where tanhf's is relative: a logit near 0 moves
 * by ~1e-6 at cap 30, nothing a softmax can tell. */
static inline void nz_softcap(float *x, int64_t n, float cap)
{
	const float inv2 = 2.0f / cap;
	for (int64_t i = 0; i < n; i++)
		x[i] = cap - 2.0f * cap / (1.0f + nz_expf(x[i] * inv2));
}

/* ---- misc ------------------------------------------------------------------- */
double nz_now_seconds(void); /* CLOCK_MONOTONIC */
static inline int64_t nz_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t nz_max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t nz_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#endif /* NZ_COMMON_H */
