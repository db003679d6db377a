/*
 * testutil.h — shared by the C engine tests: checks, a seeded generator,
 * random tiny models and adapters, a float64 reference forward pass that
 * follows engine-spec §1 literally, and helpers that drive the public API.
 */
#ifndef NZ_TESTUTIL_H
#define NZ_TESTUTIL_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nozzle_engine.h"

/* ---- checks ---------------------------------------------------------------- */

static int t_failures;
static int t_checks;

#define CHECK(cond, ...)                                                         \
	do {                                                                         \
		t_checks++;                                                              \
		if (!(cond)) {                                                           \
			t_failures++;                                                        \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                        \
			fprintf(stderr, "\n");                                               \
		}                                                                        \
	} while (0)

#define CHECK_OK(expr)                                                                      \
	do {                                                                                    \
		int32_t st_ = (expr);                                                               \
		CHECK(st_ == NZ_OK, "%s returned %d: %s", #expr, st_, nz_last_error());             \
	} while (0)

static inline int t_done(const char *name)
{
	if (t_failures) {
		fprintf(stderr, "%s: %d of %d checks FAILED\n", name, t_failures, t_checks);
		return 1;
	}
	printf("%s: all %d checks passed\n", name, t_checks);
	return 0;
}

/* ---- random numbers ---------------------------------------------------------- */

typedef struct trng {
	uint64_t s;
} trng;

static inline uint64_t trng_next(trng *r)
{
	r->s += 0x9E3779B97F4A7C15ull;
	uint64_t z = r->s;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* uniform in [lo, hi) */
static inline float trng_unif(trng *r, float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(trng_next(r) >> 11) * 0x1p-53);
}

static inline int trng_int(trng *r, int n) { return (int)(trng_next(r) % (uint64_t)n); }

static inline void fill_unif(trng *r, float *p, int64_t n, float lo, float hi)
{
	for (int64_t i = 0; i < n; i++)
		p[i] = trng_unif(r, lo, hi);
}

static inline float round_to(float v, int32_t dt)
{
	if (dt == NZ_BF16)
		return nz_bf16_to_f32(nz_f32_to_bf16(v));
	if (dt == NZ_F16)
		return nz_f16_to_f32(nz_f32_to_f16(v));
	return v;
}

/* ---- models ------------------------------------------------------------------- */

static inline nz_config tiny_config(void)
{
	nz_config c;
	memset(&c, 0, sizeof c);
	c.vocab_size = 97;
	c.hidden_size = 48;
	c.intermediate_size = 72;
	c.num_layers = 2;
	c.num_heads = 4;
	c.num_kv_heads = 2;
	c.head_dim = 12;
	c.max_position = 256;
	c.rms_norm_eps = 1e-5;
	c.rope_theta = 10000;
	c.rope_type = NZ_ROPE_DEFAULT;
	c.weight_dtype = NZ_F32;
	c.max_slots = 4;
	c.max_rank = 16;
	c.kv_block_size = 4;
	c.kv_num_blocks = 256;
	c.max_batch_tokens = 128;
	c.max_batch_seqs = 16;
	c.num_threads = 2;
	return c;
}

typedef struct tmodel {
	nz_config cfg;
	int has_bias[NZ_M_COUNT];
	/* tensors as handed to the engine (f32), indexed [layer+1][kind] (row 0 = global) */
	float **src;
	/* the same values rounded to weight_dtype, as the reference uses them */
	float **ref;
} tmodel;

static inline int64_t tensor_elems(const nz_config *c, int32_t kind)
{
	int64_t s[2];
	int nd = nz_tensor_shape(c, kind, s);
	return nd == 2 ? s[0] * s[1] : s[0];
}

static inline float **tm_slot(const tmodel *m, float **arr, int layer, int32_t kind)
{
	(void)m;
	return &arr[(layer + 1) * NZ_T_COUNT + kind];
}

static inline void tm_gen(tmodel *m, trng *r, int layer, int32_t kind)
{
	const nz_config *c = &m->cfg;
	int64_t n = tensor_elems(c, kind), s[2];
	nz_tensor_shape(c, kind, s);
	float *p = malloc(sizeof(float) * (size_t)n);
	if (kind == NZ_T_EMBED)
		fill_unif(r, p, n, -1, 1);
	else if (kind == NZ_T_FINAL_NORM || kind == NZ_T_ATTN_NORM || kind == NZ_T_FFN_NORM)
		fill_unif(r, p, n, 0.8f, 1.2f);
	else if (nz_kind_is_bias(kind))
		fill_unif(r, p, n, -0.1f, 0.1f);
	else {
		float a = 1.7f / sqrtf((float)s[1]);
		fill_unif(r, p, n, -a, a);
	}
	float *q = malloc(sizeof(float) * (size_t)n);
	if (c->weight_dtype == NZ_Q8) /* bf16 values: a bf16 or an f32 source holds the same */
		for (int64_t i = 0; i < n; i++)
			p[i] = round_to(p[i], NZ_BF16);
	if (c->weight_dtype == NZ_Q8 && nz_tensor_shape(c, kind, s) == 2) {
		/* the reference: the values the engine's int8 rows stand for */
		int8_t *i8 = malloc((size_t)n);
		float *sc = malloc(sizeof(float) * (size_t)s[0]);
		nz_quantize_q8(i8, sc, p, NZ_F32, s[0], s[1]);
		for (int64_t i = 0; i < n; i++)
			q[i] = (float)i8[i] * sc[i / s[1]];
		free(i8), free(sc);
	} else
		for (int64_t i = 0; i < n; i++)
			q[i] = round_to(p[i], (int32_t)c->weight_dtype);
	*tm_slot(m, m->src, layer, kind) = p;
	*tm_slot(m, m->ref, layer, kind) = q;
}

/* bias_mask: bit m set = module m has a bias */
static inline void tm_init(tmodel *m, const nz_config *cfg, uint64_t seed, int bias_mask)
{
	memset(m, 0, sizeof *m);
	m->cfg = *cfg;
	size_t rows = (size_t)(cfg->num_layers + 1) * NZ_T_COUNT;
	m->src = calloc(rows, sizeof(float *));
	m->ref = calloc(rows, sizeof(float *));
	trng r = {seed};
	tm_gen(m, &r, -1, NZ_T_EMBED);
	if (!cfg->tie_word_embeddings)
		tm_gen(m, &r, -1, NZ_T_LM_HEAD);
	tm_gen(m, &r, -1, NZ_T_FINAL_NORM);
	for (int l = 0; l < cfg->num_layers; l++) {
		for (int32_t k = NZ_T_ATTN_NORM; k <= NZ_T_DOWN; k++)
			tm_gen(m, &r, l, k);
		for (int mo = 0; mo < NZ_M_COUNT; mo++)
			if (bias_mask & (1 << mo)) {
				m->has_bias[mo] = 1;
				tm_gen(m, &r, l, NZ_T_Q_BIAS + mo);
			}
	}
}

static inline void tm_free(tmodel *m)
{
	size_t rows = (size_t)(m->cfg.num_layers + 1) * NZ_T_COUNT;
	for (size_t i = 0; i < rows; i++) {
		free(m->src[i]);
		free(m->ref[i]);
	}
	free(m->src);
	free(m->ref);
}

/* ---- adapters ----------------------------------------------------------------- */

typedef struct tadapter {
	int L;
	int rank[64][NZ_M_COUNT]; /* 0 = module absent */
	float scale[64][NZ_M_COUNT];
	float *a[64][NZ_M_COUNT]; /* [rank, in] */
	float *b[64][NZ_M_COUNT]; /* [out, rank] */
} tadapter;

/* ranks[m] per module (0 = absent) for every layer; layer_skip: a layer
 * index whose modules are all absent (-1 = none). */
static inline void ta_init(tadapter *ad, const nz_config *c, uint64_t seed, const int *ranks, int layer_skip)
{
	memset(ad, 0, sizeof *ad);
	ad->L = (int)c->num_layers;
	trng r = {seed};
	for (int l = 0; l < ad->L; l++)
		for (int m = 0; m < NZ_M_COUNT; m++) {
			int rk = l == layer_skip ? 0 : ranks[m];
			if (!rk)
				continue;
			int64_t in, out;
			nz_module_dims(c, m, &in, &out);
			ad->rank[l][m] = rk;
			ad->scale[l][m] = trng_unif(&r, 0.5f, 2.0f);
			ad->a[l][m] = malloc(sizeof(float) * (size_t)(rk * in));
			ad->b[l][m] = malloc(sizeof(float) * (size_t)(out * rk));
			fill_unif(&r, ad->a[l][m], rk * in, -1.0f / sqrtf((float)in), 1.0f / sqrtf((float)in));
			fill_unif(&r, ad->b[l][m], out * rk, -0.7f / sqrtf((float)rk), 0.7f / sqrtf((float)rk));
		}
}

static inline void ta_free(tadapter *ad)
{
	for (int l = 0; l < ad->L; l++)
		for (int m = 0; m < NZ_M_COUNT; m++) {
			free(ad->a[l][m]);
			free(ad->b[l][m]);
		}
}

/* Loads an adapter through the public API (A/B handed over as src_dtype). */
static inline int32_t ta_load(nz_engine *e, int32_t slot, const tadapter *ad, int32_t src_dtype, const nz_config *c)
{
	int32_t layer[64 * NZ_M_COUNT] = {0}, module[64 * NZ_M_COUNT] = {0}, rank[64 * NZ_M_COUNT] = {0},
	        adt[64 * NZ_M_COUNT] = {0}, bdt[64 * NZ_M_COUNT] = {0};
	float scale[64 * NZ_M_COUNT] = {0};
	const void *a[64 * NZ_M_COUNT] = {0}, *b[64 * NZ_M_COUNT] = {0};
	void *conv[2 * 64 * NZ_M_COUNT];
	int n = 0, nconv = 0;
	for (int l = 0; l < ad->L; l++)
		for (int m = 0; m < NZ_M_COUNT; m++) {
			if (!ad->rank[l][m])
				continue;
			int64_t in, out;
			nz_module_dims(c, m, &in, &out);
			layer[n] = l, module[n] = m, rank[n] = ad->rank[l][m], scale[n] = ad->scale[l][m];
			adt[n] = bdt[n] = src_dtype;
			int64_t na = rank[n] * in, nb = out * rank[n];
			if (src_dtype == NZ_F32) {
				a[n] = ad->a[l][m];
				b[n] = ad->b[l][m];
			} else {
				void *ca = malloc((size_t)na * 2), *cb = malloc((size_t)nb * 2);
				nz_convert(ca, src_dtype, ad->a[l][m], NZ_F32, na);
				nz_convert(cb, src_dtype, ad->b[l][m], NZ_F32, nb);
				a[n] = conv[nconv++] = ca;
				b[n] = conv[nconv++] = cb;
			}
			n++;
		}
	int32_t st = nz_adapter_load(e, slot, n, layer, module, rank, scale, adt, a, bdt, b);
	for (int i = 0; i < nconv; i++)
		free(conv[i]);
	return st;
}

/* ---- engine from a model -------------------------------------------------------- */

static inline int32_t tm_set(nz_engine *e, const tmodel *m, int layer, int32_t kind, int32_t src_dtype, const float *data)
{
	int64_t s[2];
	int nd = nz_tensor_shape(&m->cfg, kind, s);
	int64_t n = nd == 2 ? s[0] * s[1] : s[0];
	if (src_dtype == NZ_F32)
		return nz_engine_set_tensor(e, kind, layer, NZ_F32, data, s, nd);
	void *conv = malloc((size_t)n * 2);
	nz_convert(conv, src_dtype, data, NZ_F32, n);
	int32_t st = nz_engine_set_tensor(e, kind, layer, src_dtype, conv, s, nd);
	free(conv);
	return st;
}

/* Creates, fills and finalizes an engine; NULL on failure (reported). */
static inline nz_engine *tm_engine(const tmodel *m, int32_t src_dtype)
{
	nz_engine *e = NULL;
	int32_t st = nz_engine_create(&m->cfg, &e);
	CHECK(st == NZ_OK, "create: %s", nz_last_error());
	if (st != NZ_OK)
		return NULL;
	size_t rows = (size_t)(m->cfg.num_layers + 1) * NZ_T_COUNT;
	for (size_t i = 0; i < rows; i++) {
		if (!m->src[i])
			continue;
		int layer = (int)(i / NZ_T_COUNT) - 1;
		int32_t kind = (int32_t)(i % NZ_T_COUNT);
		CHECK_OK(tm_set(e, m, layer, kind, src_dtype, m->src[i]));
	}
	CHECK_OK(nz_engine_finalize(e));
	return e;
}

/* ---- float64 reference forward pass --------------------------------------------- */

/* logits[p·V ..] for every position p of tok[0..n) (one sequence from 0). */
static inline void ref_forward(const tmodel *m, const tadapter *ad, const int32_t *tok, int n, double *logits)
{
	const nz_config *c = &m->cfg;
	int64_t H = c->hidden_size, I = c->intermediate_size, V = c->vocab_size, L = c->num_layers;
	int64_t nh = c->num_heads, nkv = c->num_kv_heads, hd = c->head_dim, qd = nh * hd, kvd = nkv * hd;
	int64_t half = hd / 2, nrep = nh / nkv;
	double eps = c->rms_norm_eps;
	double *h = calloc((size_t)(n * H), 8), *x = calloc((size_t)H, 8), *q = calloc((size_t)qd, 8);
	double *kc = calloc((size_t)(L * n * kvd), 8), *vc = calloc((size_t)(L * n * kvd), 8);
	double *att = calloc((size_t)qd, 8), *y = calloc((size_t)(I > H ? I : H), 8);
	double *g = calloc((size_t)I, 8), *u = calloc((size_t)I, 8), *sc = calloc((size_t)n, 8);
	double *tmp = calloc(64, 8);
	float *inv = calloc((size_t)half, 4);
	nz_rope_inv_freq(c, inv);
	double af = c->rope_type == NZ_ROPE_YARN ? c->rope_attention_factor : 1.0; /* yarn scales cos and sin */
	float **R = m->ref;
#define W(l, k) R[((l) + 1) * NZ_T_COUNT + (k)]
	for (int p = 0; p < n; p++) {
		double *hp = h + p * H;
		for (int64_t i = 0; i < H; i++)
			hp[i] = W(-1, NZ_T_EMBED)[(int64_t)tok[p] * H + i];
		for (int64_t l = 0; l < L; l++) {
			/* attention norm */
			double ss = 0;
			for (int64_t i = 0; i < H; i++)
				ss += hp[i] * hp[i];
			double rr = 1.0 / sqrt(ss / (double)H + eps);
			for (int64_t i = 0; i < H; i++)
				x[i] = W(l, NZ_T_ATTN_NORM)[i] * (hp[i] * rr);
			/* out = W·in (+ b) (+ scale·B·(A·in)) with A and scale·B in f32, as the engine stores them */
#define PROJ(mod, in_vec, in_n, out_vec, out_n)                                                         \
	do {                                                                                                \
		const float *w_ = W(l, NZ_T_Q + (mod));                                                         \
		const float *b_ = W(l, NZ_T_Q_BIAS + (mod));                                                    \
		for (int64_t o_ = 0; o_ < (out_n); o_++) {                                                      \
			double s_ = 0;                                                                              \
			for (int64_t i_ = 0; i_ < (in_n); i_++)                                                     \
				s_ += (double)w_[o_ * (in_n) + i_] * (in_vec)[i_];                                      \
			(out_vec)[o_] = s_ + (b_ ? b_[o_] : 0.0);                                                   \
		}                                                                                               \
		if (ad && ad->rank[l][mod]) {                                                                   \
			int rk_ = ad->rank[l][mod];                                                                 \
			for (int j_ = 0; j_ < rk_; j_++) {                                                          \
				double s_ = 0;                                                                          \
				for (int64_t i_ = 0; i_ < (in_n); i_++)                                                 \
					s_ += (double)ad->a[l][mod][j_ * (in_n) + i_] * (in_vec)[i_];                       \
				tmp[j_] = s_;                                                                           \
			}                                                                                           \
			for (int64_t o_ = 0; o_ < (out_n); o_++) {                                                  \
				double s_ = 0;                                                                          \
				for (int j_ = 0; j_ < rk_; j_++)                                                        \
					s_ += (double)(float)(ad->b[l][mod][o_ * rk_ + j_] * ad->scale[l][mod]) * tmp[j_];  \
				(out_vec)[o_] += s_;                                                                    \
			}                                                                                           \
		}                                                                                               \
	} while (0)
			double *kp = kc + (l * n + p) * kvd, *vp = vc + (l * n + p) * kvd;
			PROJ(NZ_M_Q, x, H, q, qd);
			PROJ(NZ_M_K, x, H, kp, kvd);
			PROJ(NZ_M_V, x, H, vp, kvd);
			/* rotate-half RoPE with f32 angles */
			for (int64_t hh = 0; hh < nh + nkv; hh++) {
				double *v = hh < nh ? q + hh * hd : kp + (hh - nh) * hd;
				for (int64_t i = 0; i < half; i++) {
					float ang = (float)p * inv[i];
					double cs = cos((double)ang) * af, sn = sin((double)ang) * af;
					double x1 = v[i], x2 = v[i + half];
					v[i] = x1 * cs - x2 * sn;
					v[i + half] = x2 * cs + x1 * sn;
				}
			}
			/* the KV cache holds keys and values in the weight dtype (bf16 for int8, f32 with kv_f32) */
			int32_t kvdt = c->kv_f32 ? NZ_F32 : c->weight_dtype == NZ_Q8 ? NZ_BF16 : (int32_t)c->weight_dtype;
			for (int64_t i = 0; i < kvd; i++) {
				kp[i] = round_to((float)kp[i], kvdt);
				vp[i] = round_to((float)vp[i], kvdt);
			}
			int lo = 0;
			if (c->sliding_window > 0 && l >= c->sliding_window_from_layer && p - c->sliding_window + 1 > 0)
				lo = (int)(p - c->sliding_window + 1);
			for (int64_t hh = 0; hh < nh; hh++) {
				int64_t g_ = hh / nrep;
				double mx = -INFINITY, sum = 0;
				for (int j = lo; j <= p; j++) {
					double s = 0;
					for (int64_t i = 0; i < hd; i++)
						s += q[hh * hd + i] * kc[(l * n + j) * kvd + g_ * hd + i];
					sc[j] = s / sqrt((double)hd);
					if (sc[j] > mx)
						mx = sc[j];
				}
				for (int j = lo; j <= p; j++) {
					sc[j] = exp(sc[j] - mx);
					sum += sc[j];
				}
				for (int64_t i = 0; i < hd; i++) {
					double o = 0;
					for (int j = lo; j <= p; j++)
						o += sc[j] / sum * vc[(l * n + j) * kvd + g_ * hd + i];
					att[hh * hd + i] = o;
				}
			}
			PROJ(NZ_M_O, att, qd, y, H);
			for (int64_t i = 0; i < H; i++)
				hp[i] += y[i];
			ss = 0;
			for (int64_t i = 0; i < H; i++)
				ss += hp[i] * hp[i];
			rr = 1.0 / sqrt(ss / (double)H + eps);
			for (int64_t i = 0; i < H; i++)
				x[i] = W(l, NZ_T_FFN_NORM)[i] * (hp[i] * rr);
			PROJ(NZ_M_GATE, x, H, g, I);
			PROJ(NZ_M_UP, x, H, u, I);
			for (int64_t i = 0; i < I; i++)
				g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
			PROJ(NZ_M_DOWN, g, I, y, H);
			for (int64_t i = 0; i < H; i++)
				hp[i] += y[i];
#undef PROJ
		}
		double ss = 0;
		for (int64_t i = 0; i < H; i++)
			ss += hp[i] * hp[i];
		double rr = 1.0 / sqrt(ss / (double)H + eps);
		for (int64_t i = 0; i < H; i++)
			x[i] = W(-1, NZ_T_FINAL_NORM)[i] * (hp[i] * rr);
		const float *lm = c->tie_word_embeddings ? W(-1, NZ_T_EMBED) : W(-1, NZ_T_LM_HEAD);
		for (int64_t v = 0; v < V; v++) {
			double s = 0;
			for (int64_t i = 0; i < H; i++)
				s += (double)lm[v * H + i] * x[i];
			logits[p * V + v] = s;
		}
	}
#undef W
	free(h), free(x), free(q), free(kc), free(vc), free(att), free(y), free(g), free(u), free(sc), free(tmp), free(inv);
}

/* ---- driving steps ------------------------------------------------------------- */

typedef struct tseq {
	const int32_t *tokens; /* this step's tokens */
	int32_t len, pos, slot, sample;
	const int32_t *blocks; /* the sequence's block table (max_blocks entries) */
	float temperature, top_p;
	int32_t top_k;
	uint64_t seed;
	/* logit adjustments: n_bias tokens and values (nz_batch.bias_off) */
	int32_t n_bias;
	const int32_t *bias_token;
	const float *bias_value;
	/* a token mask (nz_batch.seq_allow): ceil(V/32) words, or NULL */
	const uint32_t *allow;
	/* outputs */
	int32_t token;
	float logprob;
	int32_t top_tok[NZ_MAX_TOP];
	float top_lp[NZ_MAX_TOP];
	float *logits; /* [V] or NULL */
} tseq;

/* Runs one step over seqs (copying their outputs back). */
static inline int32_t run_step(nz_engine *e, const nz_config *c, tseq *seqs, int n, int64_t max_blocks, int64_t n_top)
{
	int64_t T = 0, V = c->vocab_size;
	for (int i = 0; i < n; i++)
		T += seqs[i].len;
	int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(T ? T : 1));
	int32_t *len = malloc(sizeof(int32_t) * (size_t)n), *pos = malloc(sizeof(int32_t) * (size_t)n);
	int32_t *slot = malloc(sizeof(int32_t) * (size_t)n), *smp = malloc(sizeof(int32_t) * (size_t)n);
	int32_t *bt = malloc(sizeof(int32_t) * (size_t)(n * max_blocks));
	float *temp = malloc(sizeof(float) * (size_t)n), *top_p = malloc(sizeof(float) * (size_t)n);
	int32_t *top_k = malloc(sizeof(int32_t) * (size_t)n);
	uint64_t *seed = malloc(sizeof(uint64_t) * (size_t)n);
	int32_t *otok = malloc(sizeof(int32_t) * (size_t)n);
	float *olp = malloc(sizeof(float) * (size_t)n);
	int32_t *ttok = malloc(sizeof(int32_t) * (size_t)(n * (n_top ? n_top : 1)));
	float *tlp = malloc(sizeof(float) * (size_t)(n * (n_top ? n_top : 1)));
	float *lg = malloc(sizeof(float) * (size_t)(n * V));
	int32_t nb = 0, *boff = malloc(sizeof(int32_t) * (size_t)(n + 1));
	for (int i = 0; i < n; i++)
		nb += seqs[i].n_bias;
	int32_t *btok = malloc(sizeof(int32_t) * (size_t)(nb ? nb : 1));
	float *bval = malloc(sizeof(float) * (size_t)(nb ? nb : 1));
	boff[0] = 0;
	for (int i = 0; i < n; i++) {
		if (seqs[i].n_bias) {
			memcpy(btok + boff[i], seqs[i].bias_token, sizeof(int32_t) * (size_t)seqs[i].n_bias);
			memcpy(bval + boff[i], seqs[i].bias_value, sizeof(float) * (size_t)seqs[i].n_bias);
		}
		boff[i + 1] = boff[i] + seqs[i].n_bias;
	}
	int64_t AW = (V + 31) / 32, n_allow = 0;
	int32_t *sallow = malloc(sizeof(int32_t) * (size_t)n);
	uint32_t *allow = malloc(sizeof(uint32_t) * (size_t)(n * AW));
	for (int i = 0; i < n; i++) {
		sallow[i] = -1;
		if (seqs[i].allow) {
			memcpy(allow + n_allow * AW, seqs[i].allow, sizeof(uint32_t) * (size_t)AW);
			sallow[i] = (int32_t)n_allow++;
		}
	}
	int64_t off = 0;
	for (int i = 0; i < n; i++) {
		memcpy(tokens + off, seqs[i].tokens, sizeof(int32_t) * (size_t)seqs[i].len);
		off += seqs[i].len;
		len[i] = seqs[i].len, pos[i] = seqs[i].pos, slot[i] = seqs[i].slot, smp[i] = seqs[i].sample;
		memcpy(bt + i * max_blocks, seqs[i].blocks, sizeof(int32_t) * (size_t)max_blocks);
		temp[i] = seqs[i].temperature;
		top_p[i] = seqs[i].top_p > 0 ? seqs[i].top_p : 1.0f;
		top_k[i] = seqs[i].top_k;
		seed[i] = seqs[i].seed;
	}
	nz_batch b = {
	    .n_seqs = n, .n_tokens = T, .tokens = tokens, .seq_len = len, .seq_pos = pos, .seq_slot = slot,
	    .seq_sample = smp, .block_table = bt, .max_blocks = max_blocks, .temperature = temp, .top_p = top_p,
	    .top_k = top_k, .seed = seed, .n_top = n_top, .out_token = otok, .out_logprob = olp,
	    .out_top_token = n_top ? ttok : NULL, .out_top_logprob = n_top ? tlp : NULL, .out_logits = lg,
	    .bias_off = nb ? boff : NULL, .bias_token = btok, .bias_value = bval,
	    .seq_allow = n_allow ? sallow : NULL, .allow = allow, .n_allow = n_allow,
	};
	int32_t st = nz_step(e, &b);
	if (st == NZ_OK)
		for (int i = 0; i < n; i++) {
			if (!seqs[i].sample)
				continue;
			seqs[i].token = otok[i];
			seqs[i].logprob = olp[i];
			for (int j = 0; j < n_top; j++) {
				seqs[i].top_tok[j] = ttok[i * n_top + j];
				seqs[i].top_lp[j] = tlp[i * n_top + j];
			}
			if (seqs[i].logits)
				memcpy(seqs[i].logits, lg + i * V, sizeof(float) * (size_t)V);
		}
	free(tokens), free(len), free(pos), free(slot), free(smp), free(bt), free(temp), free(top_p), free(top_k);
	free(seed), free(otok), free(olp), free(ttok), free(tlp), free(lg), free(boff), free(btok), free(bval);
	free(sallow), free(allow);
	return st;
}

/* A sequence whose logits are compared: max |engine - ref| relative to the
 * logits' scale. */
static inline double logit_err(const float *got, const double *want, int64_t V)
{
	double scale = 1e-3, err = 0;
	for (int64_t v = 0; v < V; v++)
		scale = fmax(scale, fabs(want[v]));
	for (int64_t v = 0; v < V; v++)
		err = fmax(err, fabs((double)got[v] - want[v]));
	return err / scale;
}

/* Distinct random blocks [0, nb) for k tables of max_blocks entries each. */
static inline void random_tables(trng *r, int32_t *tables, int k, int64_t max_blocks, int64_t nb)
{
	int32_t *perm = malloc(sizeof(int32_t) * (size_t)nb);
	for (int64_t i = 0; i < nb; i++)
		perm[i] = (int32_t)i;
	for (int64_t i = nb - 1; i > 0; i--) {
		int j = trng_int(r, (int)(i + 1));
		int32_t t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int64_t i = 0; i < k * max_blocks; i++)
		tables[i] = perm[i % nb];
	free(perm);
}

#endif /* NZ_TESTUTIL_H */
