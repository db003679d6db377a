/*
 * cpu_engine.c — the CPU backend: weights, adapter slots, the paged KV
 * cache and the forward pass of a step (engine-spec §1, §4).
 *
 * Storage:
 *  - base weights in cfg.weight_dtype, row-major [out, in]; norm weights and
 *    biases in f32 (rounded through weight_dtype first, so an engine holds
 *    the values a weight_dtype checkpoint would). NZ_Q8 matrices hold their
 *    int8 rows and, after them (at the next 64-byte boundary), one f32 scale
 *    per row (q8_scale); their norms and biases are the checkpoint's values;
 *  - adapter slots per (layer, module): A = [max_slots][max_rank][in] and
 *    Bt = [max_slots][max_rank][out] (lora_B transposed), each holding the
 *    adapter's own values exactly: in bf16 or f16 where the adapter's
 *    tensor is, else in f32 (room for f32 whatever the weight dtype). PEFT
 *    computes the LoRA branch in f32 (it upcasts bf16 and f16 adapters),
 *    so an f32 adapter on a bf16 model loses nothing to rounding, and a
 *    bf16 adapter is read at half the bytes. The scale multiplies the
 *    shrink's f32 output before the expand. Rows at and past the real rank
 *    are zero and skipped (each slot/module remembers its rank, 0 = absent,
 *    its two dtypes and its scale);
 *  - KV cache in the weight dtype (bf16 for int8 weights; f32 with kv_f32):
 *    [layer][K|V][block][kv_head][block_size][head_dim], as the CUDA backend
 *    and a 16-bit checkpoint in transformers keep it; keys after RoPE and
 *    values are rounded to it once, as they are written.
 *
 * Activations and accumulation are f32. Every parallel region splits work
 * into tasks whose results do not depend on the batch (cpu_kernels.h), so
 * a sequence's logits are bit-identical alone or in any batch.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "cpu_kernels.h"
#include "cpu_pool.h"

typedef struct cpu_layer {
	void *w[NZ_M_COUNT];  /* [out, in] in weight dtype (NZ_Q8: then the row scales) */
	float *b[NZ_M_COUNT]; /* [out] or NULL */
	float *attn_norm, *ffn_norm;
	float *q_norm, *k_norm; /* [hd] or NULL (Qwen3's norms of each q and k head) */
	float *post_attn_norm, *post_ffn_norm; /* [H] or NULL (Gemma's norms of the attention and MLP outputs) */
} cpu_layer;

typedef struct cpu_lora {
	void *a;  /* [max_slots][max_rank][in], room for f32 */
	void *bt; /* [max_slots][max_rank][out], room for f32 */
} cpu_lora;

/* What a slot holds for a (layer, module). */
typedef struct cpu_slot_mod {
	int32_t rank;     /* 0: the adapter lacks the module */
	int32_t adt, bdt; /* dtypes of its A and Bt rows */
	float scale;      /* applied to the shrink's output */
} cpu_slot_mod;

/* One task of a projection group (modules sharing their input x): rows
 * [r0, r1) of module mi's base GEMM (seg -1), or the LoRA shrink + expand
 * of adapter segment seg for module mi over LoRA rows [r0, r1) (at most
 * LORA_ROWS of them) into its delta buffer. Both kinds run in one parallel
 * region (cpu_pool_run_mixed), the memory-bound adapter reads next to the
 * compute-bound base GEMM. */
typedef struct gtask {
	int32_t mi;
	int32_t seg;  /* -1 for a base task */
	int32_t rank; /* LoRA tasks */
	int64_t r0, r1;
} gtask;

/* Tokens per LoRA task: segments of many tokens (a prefill chunk, many
 * sequences on one adapter) split into blocks that threads share. */
#define LORA_ROWS 24

typedef struct cpu_engine {
	nz_config cfg;
	const cpu_kernels *k;
	cpu_pool *pool;
	int nthreads;
	int32_t wdt;
	size_t wsz;
	size_t lsz; /* bytes of a slot's element, at most (f32) */
	int64_t H, I, V, L, nh, nkv, hd, qd, kvd, nrep, bs, nb, R, S;
	int64_t rh; /* rotary_dim / 2: the pairs RoPE rotates in a head */
	int64_t mod_in[NZ_M_COUNT], mod_out[NZ_M_COUNT];

	void *embed, *lm_head;
	float *final_norm;
	cpu_layer *layers;
	float *inv_freq; /* [hd/2] */
	float *inv_freq_local; /* [hd/2] for the sliding layers, or NULL (rope_local_theta) */
	float rope_scale; /* nz_rope_attention_factor */
	int64_t weight_bytes, slot_bytes, kv_bytes;

	cpu_lora *lora; /* [L][NZ_M_COUNT] */
	cpu_slot_mod *slot_mod; /* [max_slots][L][NZ_M_COUNT] */

	void *kv; /* [L][2][nb][nkv][bs][hd] in kvdt */
	int32_t kvdt;
	size_t kvsz;
	int64_t kv_block_elems, kv_layer_elems;

	/* step scratch, for max_batch_tokens tokens T and max_batch_seqs S */
	float *h, *x;      /* [T, H] residual stream, normed input */
	float *q, *att;    /* [T, qd] */
	float *kk, *vv;    /* [T, kvd] */
	float *y;          /* [T, H] projection output before the residual add */
	float *g, *u;      /* [T, I] */
	/* LoRA rows: the tokens with an adapter, in segment order */
	int32_t *lrow;     /* [T] LoRA row of each token, -1 for none */
	int32_t *lrow_tok; /* [T] token of each LoRA row */
	int32_t *seg_row;  /* [max_slots+1] first LoRA row of each segment */
	float *lv[3];      /* [T, R] LoRA shrink outputs of a group's modules, by LoRA row */
	float *dl[3];      /* [T, out] LoRA deltas of a group's modules by LoRA row (added by the next pass) */
	float *cs;         /* [T, hd] cos at [0, rh) | sin at [hd/2, hd/2 + rh) of each token's position */
	float *cs_local;   /* [T, hd] the same for the sliding layers' RoPE, or NULL */
	float *xs;         /* [S, H] final-normed hidden of the sampled tokens */
	float *logits;     /* [S, V] */
	float **att_buf;   /* [threads][nrep · max_position] */
	void **samp_buf;   /* [threads] sampler scratch */
	gtask *tasks;
	int64_t task_cap;
} cpu_engine;

/* ---------------------------------------------------------------------------
 * Create, tensors, finalize
 * ------------------------------------------------------------------------- */

static void cpu_describe(char *buf, size_t n)
{
	const cpu_kernels *k = cpu_kernels_select();
	snprintf(buf, n, "cpu %s, %d cores", k ? k->name : "unsupported", cpu_online_cores());
}

static void cpu_destroy(void *impl)
{
	cpu_engine *e = impl;
	if (!e)
		return;
	cpu_pool_destroy(e->pool);
	nz_free(e->embed);
	nz_free(e->lm_head);
	nz_free(e->final_norm);
	if (e->layers) {
		for (int64_t l = 0; l < e->L; l++) {
			cpu_layer *ly = &e->layers[l];
			for (int m = 0; m < NZ_M_COUNT; m++) {
				nz_free(ly->w[m]);
				nz_free(ly->b[m]);
			}
			nz_free(ly->attn_norm);
			nz_free(ly->ffn_norm);
			nz_free(ly->q_norm);
			nz_free(ly->k_norm);
			nz_free(ly->post_attn_norm);
			nz_free(ly->post_ffn_norm);
		}
	}
	nz_free(e->layers);
	nz_free(e->inv_freq);
	nz_free(e->inv_freq_local);
	nz_free(e->cs_local);
	if (e->lora)
		for (int64_t i = 0; i < e->L * NZ_M_COUNT; i++) {
			nz_free(e->lora[i].a);
			nz_free(e->lora[i].bt);
		}
	nz_free(e->lora);
	nz_free(e->slot_mod);
	nz_free(e->kv);
	float **bufs[] = {&e->h,     &e->x,     &e->q,     &e->att,   &e->kk,    &e->vv, &e->y,  &e->g,     &e->u,
	                  &e->lv[0], &e->lv[1], &e->lv[2], &e->dl[0], &e->dl[1], &e->dl[2], &e->cs, &e->xs, &e->logits};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		nz_free(*bufs[i]);
	nz_free(e->lrow);
	nz_free(e->lrow_tok);
	nz_free(e->seg_row);
	if (e->att_buf)
		for (int t = 0; t < e->nthreads; t++)
			nz_free(e->att_buf[t]);
	nz_free(e->att_buf);
	if (e->samp_buf)
		for (int t = 0; t < e->nthreads; t++)
			nz_free(e->samp_buf[t]);
	nz_free(e->samp_buf);
	nz_free(e->tasks);
	nz_free(e);
}

static int32_t cpu_create(nz_config *c, void **out)
{
	const cpu_kernels *k = cpu_kernels_select();
	if (!k)
		return nz_error(NZ_ERR_UNSUPPORTED, "nz_engine_create: this processor lacks AVX2, FMA or F16C");
	cpu_engine *e = nz_calloc(sizeof *e);
	if (!e)
		return nz_oom("nz_engine_create", sizeof *e);
	e->k = k;
	e->wdt = (int32_t)c->weight_dtype;
	e->wsz = e->wdt == NZ_Q8 ? 1 : nz_dtype_size(e->wdt);
	e->kvdt = c->kv_f32 ? NZ_F32 : e->wdt == NZ_Q8 ? NZ_BF16 : e->wdt;
	e->kvsz = nz_dtype_size(e->kvdt);
	e->lsz = nz_dtype_size(NZ_F32);
	e->H = c->hidden_size, e->I = c->intermediate_size, e->V = c->vocab_size, e->L = c->num_layers;
	e->nh = c->num_heads, e->nkv = c->num_kv_heads, e->hd = c->head_dim;
	e->rh = nz_rotary_dim(c) / 2;
	e->qd = e->nh * e->hd, e->kvd = e->nkv * e->hd, e->nrep = e->nh / e->nkv;
	e->bs = c->kv_block_size, e->R = c->max_rank, e->S = c->max_batch_seqs;
	for (int m = 0; m < NZ_M_COUNT; m++)
		nz_module_dims(c, m, &e->mod_in[m], &e->mod_out[m]);

	/* KV pool size */
	e->kv_block_elems = e->nkv * e->bs * e->hd;
	int64_t block_bytes = e->L * 2 * e->kv_block_elems * (int64_t)e->kvsz;
	if (c->kv_num_blocks == 0) {
		if (c->kv_memory_bytes > 0) {
			c->kv_num_blocks = c->kv_memory_bytes / block_bytes;
			if (c->kv_num_blocks < 1) {
				nz_free(e);
				return nz_error(NZ_ERR_INVALID,
				                "nz_engine_create: kv_memory_bytes %lld holds no KV block (%lld bytes each)",
				                (long long)c->kv_memory_bytes, (long long)block_bytes);
			}
		} else {
			int64_t want = nz_ceil_div(c->max_position, e->bs) * c->max_batch_seqs;
			c->kv_num_blocks = nz_max64(1, nz_min64(want, NZ_DEFAULT_KV_MEMORY_CAP / block_bytes));
		}
		c->kv_num_blocks = nz_min64(c->kv_num_blocks, INT32_MAX);
	}
	double kv_total = (double)c->kv_num_blocks * (double)block_bytes, slot_total = 0;
	for (int m = 0; m < NZ_M_COUNT; m++)
		slot_total += (double)e->L * (double)c->max_slots * (double)e->R * (double)(e->mod_in[m] + e->mod_out[m]) *
		              (double)e->lsz;
	if (kv_total > 0x1p50 || slot_total > 0x1p50) {
		nz_free(e);
		return nz_error(NZ_ERR_OOM, "nz_engine_create: the KV pool (%.0f bytes) or the adapter slots (%.0f bytes) are too large",
		                kv_total, slot_total);
	}
	e->nb = c->kv_num_blocks;
	e->kv_layer_elems = 2 * e->nb * e->kv_block_elems;
	e->kv_bytes = e->nb * block_bytes;
	for (int m = 0; m < NZ_M_COUNT; m++)
		e->slot_bytes += e->L * c->max_slots * e->R * (e->mod_in[m] + e->mod_out[m]) * (int64_t)e->lsz;

	if (c->num_threads == 0)
		c->num_threads = cpu_online_cores();
	e->nthreads = (int)c->num_threads;
	e->cfg = *c;

	e->layers = nz_calloc(sizeof(cpu_layer) * (size_t)e->L);
	e->inv_freq = nz_alloc(sizeof(float) * (size_t)(e->hd / 2));
	if (!e->layers || !e->inv_freq) {
		cpu_destroy(e);
		return nz_oom("nz_engine_create", sizeof(cpu_layer) * (size_t)e->L);
	}
	nz_rope_inv_freq(c, e->inv_freq);
	if (c->rope_local_theta > 0) {
		e->inv_freq_local = nz_alloc(sizeof(float) * (size_t)(e->hd / 2));
		if (!e->inv_freq_local) {
			cpu_destroy(e);
			return nz_oom("nz_engine_create", sizeof(float) * (size_t)(e->hd / 2));
		}
		nz_rope_local_inv_freq(c, e->inv_freq_local);
	}
	e->rope_scale = nz_rope_attention_factor(c);
	int32_t st = cpu_pool_create(e->nthreads, &e->pool);
	if (st != NZ_OK) {
		cpu_destroy(e);
		return st;
	}
	*out = e;
	return NZ_OK;
}

/* Parallel dtype conversion of large tensors. */
typedef struct conv_ctx {
	const cpu_kernels *k;
	void *dst;
	int32_t ddt;
	const void *src;
	int32_t sdt;
	int64_t n, chunk;
} conv_ctx;

static void conv_task(void *ctx, int64_t i, int tid)
{
	conv_ctx *c = ctx;
	int64_t a = i * c->chunk, n = nz_min64(c->chunk, c->n - a);
	c->k->convert((char *)c->dst + a * (int64_t)nz_dtype_size(c->ddt), c->ddt,
	              (const char *)c->src + a * (int64_t)nz_dtype_size(c->sdt), c->sdt, n);
}

static void convert_par(cpu_engine *e, void *dst, int32_t ddt, const void *src, int32_t sdt, int64_t n)
{
	conv_ctx c = {e->k, dst, ddt, src, sdt, n, 1 << 16};
	cpu_pool_run(e->pool, nz_ceil_div(n, c.chunk), conv_task, &c);
}

/* Allocates *slot (bytes) on first use; returns 0 on failure. */
static int ensure(void **slot, size_t bytes, int64_t *account)
{
	if (*slot)
		return 1;
	*slot = nz_alloc(bytes);
	if (*slot && account)
		*account += (int64_t)bytes;
	return *slot != NULL;
}

/* Bytes of an NZ_Q8 matrix's int8 rows, up to where its scales begin. */
static inline size_t q8_data_bytes(int64_t n) { return ((size_t)n + 63) & ~(size_t)63; }

/* The row scales of an NZ_Q8 matrix of rows × in elements. */
static inline const float *q8_scale(const void *w, int64_t rows, int64_t in)
{
	return (const float *)((const char *)w + q8_data_bytes(rows * in));
}

typedef struct quant_ctx {
	int8_t *q;
	float *scale;
	const void *src;
	int32_t sdt;
	int64_t cols, rows, chunk;
} quant_ctx;

static void quant_task(void *ctx, int64_t i, int tid)
{
	quant_ctx *c = ctx;
	int64_t r0 = i * c->chunk, n = nz_min64(c->chunk, c->rows - r0);
	nz_quantize_q8(c->q + r0 * c->cols, c->scale + r0, (const char *)c->src + (size_t)(r0 * c->cols) * nz_dtype_size(c->sdt),
	               c->sdt, n, c->cols);
}

static int32_t cpu_set_tensor(void *impl, int32_t kind, int32_t layer, int32_t dtype, const void *data, int64_t n)
{
	cpu_engine *e = impl;
	void **dst;
	int as_f32 = 0;
	cpu_layer *ly = layer >= 0 ? &e->layers[layer] : NULL;
	switch (kind) {
	case NZ_T_EMBED:
		dst = &e->embed;
		break;
	case NZ_T_LM_HEAD:
		dst = &e->lm_head;
		break;
	case NZ_T_FINAL_NORM:
		dst = (void **)&e->final_norm, as_f32 = 1;
		break;
	case NZ_T_ATTN_NORM:
		dst = (void **)&ly->attn_norm, as_f32 = 1;
		break;
	case NZ_T_FFN_NORM:
		dst = (void **)&ly->ffn_norm, as_f32 = 1;
		break;
	case NZ_T_Q_NORM:
		dst = (void **)&ly->q_norm, as_f32 = 1;
		break;
	case NZ_T_K_NORM:
		dst = (void **)&ly->k_norm, as_f32 = 1;
		break;
	case NZ_T_POST_ATTN_NORM:
		dst = (void **)&ly->post_attn_norm, as_f32 = 1;
		break;
	case NZ_T_POST_FFN_NORM:
		dst = (void **)&ly->post_ffn_norm, as_f32 = 1;
		break;
	default:
		if (kind >= NZ_T_Q && kind <= NZ_T_DOWN) {
			dst = &ly->w[kind - NZ_T_Q];
		} else {
			dst = (void **)&ly->b[kind - NZ_T_Q_BIAS];
			as_f32 = 1;
		}
		break;
	}
	int64_t shape[2] = {n, 1};
	nz_tensor_shape(&e->cfg, kind, shape);
	int q8 = !as_f32 && e->wdt == NZ_Q8;
	size_t bytes = (size_t)n * (as_f32 ? sizeof(float) : e->wsz);
	if (q8) /* int8 rows, then a scale per row */
		bytes = q8_data_bytes(n) + sizeof(float) * (size_t)shape[0];
	if (!ensure(dst, bytes, &e->weight_bytes))
		return nz_oom("nz_engine_set_tensor", bytes);
	if (q8) {
		quant_ctx qc = {*dst, (float *)q8_scale(*dst, shape[0], shape[1]), data, dtype, shape[1], shape[0], 64};
		cpu_pool_run(e->pool, nz_ceil_div(shape[0], qc.chunk), quant_task, &qc);
		return NZ_OK;
	}
	if (as_f32) {
		nz_convert_f32_via(*dst, data, dtype, e->wdt, n);
		if (!nz_kind_is_bias(kind) && e->cfg.norm_weight_offset != 0) /* a norm: (offset + w) in f32 */
			for (int64_t i = 0; i < n; i++)
				((float *)*dst)[i] += (float)e->cfg.norm_weight_offset;
	} else
		convert_par(e, *dst, e->wdt, data, dtype, n);
	return NZ_OK;
}

static int32_t cpu_finalize(void *impl)
{
	cpu_engine *e = impl;
	const nz_config *c = &e->cfg;
	int64_t T = c->max_batch_tokens, S = e->S, L = e->L, slots = c->max_slots;
#define ALLOC(ptr, bytes)                                   \
	do {                                                    \
		size_t b_ = (size_t)(bytes);                        \
		if (!(ptr) && !((ptr) = nz_alloc(b_)))              \
			return nz_oom("nz_engine_finalize", b_);        \
	} while (0)
	/* (every allocation is kept when a later one fails, so a retry resumes) */
	if (!e->lora)
		e->lora = nz_calloc(sizeof(cpu_lora) * (size_t)(L * NZ_M_COUNT));
	if (!e->slot_mod)
		e->slot_mod = nz_calloc(sizeof(cpu_slot_mod) * (size_t)(slots * L * NZ_M_COUNT));
	if (!e->lora || !e->slot_mod)
		return nz_oom("nz_engine_finalize", sizeof(cpu_lora) * (size_t)(L * NZ_M_COUNT));
	for (int64_t l = 0; l < L; l++)
		for (int m = 0; m < NZ_M_COUNT; m++) {
			cpu_lora *lo = &e->lora[l * NZ_M_COUNT + m];
			ALLOC(lo->a, (size_t)(slots * e->R * e->mod_in[m]) * e->lsz);
			ALLOC(lo->bt, (size_t)(slots * e->R * e->mod_out[m]) * e->lsz);
		}
	ALLOC(e->kv, (size_t)e->kv_bytes);
	/* written once here, so the pool's pages are resident before the first
	 * step instead of faulting in under the first long requests */
	memset(e->kv, 0, (size_t)e->kv_bytes);
	ALLOC(e->h, sizeof(float) * (size_t)(T * e->H));
	ALLOC(e->x, sizeof(float) * (size_t)(T * e->H));
	ALLOC(e->q, sizeof(float) * (size_t)(T * e->qd));
	ALLOC(e->att, sizeof(float) * (size_t)(T * e->qd));
	ALLOC(e->kk, sizeof(float) * (size_t)(T * e->kvd));
	ALLOC(e->vv, sizeof(float) * (size_t)(T * e->kvd));
	ALLOC(e->y, sizeof(float) * (size_t)(T * e->H));
	ALLOC(e->g, sizeof(float) * (size_t)(T * e->I));
	ALLOC(e->u, sizeof(float) * (size_t)(T * e->I));
	int64_t max_out = 0;
	for (int m = 0; m < NZ_M_COUNT; m++)
		max_out = nz_max64(max_out, e->mod_out[m]);
	for (int i = 0; i < 3; i++) {
		ALLOC(e->lv[i], sizeof(float) * (size_t)(T * e->R));
		ALLOC(e->dl[i], sizeof(float) * (size_t)(T * max_out));
	}
	ALLOC(e->lrow, sizeof(int32_t) * (size_t)T);
	ALLOC(e->lrow_tok, sizeof(int32_t) * (size_t)T);
	ALLOC(e->seg_row, sizeof(int32_t) * (size_t)(slots + 1));
	ALLOC(e->cs, sizeof(float) * (size_t)(T * e->hd));
	if (e->inv_freq_local)
		ALLOC(e->cs_local, sizeof(float) * (size_t)(T * e->hd));
	ALLOC(e->xs, sizeof(float) * (size_t)(S * e->H));
	ALLOC(e->logits, sizeof(float) * (size_t)(S * e->V));
	e->att_buf = nz_calloc(sizeof(float *) * (size_t)e->nthreads);
	e->samp_buf = nz_calloc(sizeof(void *) * (size_t)e->nthreads);
	if (!e->att_buf || !e->samp_buf)
		return nz_oom("nz_engine_finalize", sizeof(void *) * (size_t)e->nthreads);
	for (int t = 0; t < e->nthreads; t++) {
		ALLOC(e->att_buf[t], sizeof(float) * (size_t)(e->nrep * c->max_position));
		ALLOC(e->samp_buf[t], nz_sample_scratch_bytes(e->V));
	}
	/* tasks of a group: base row chunks (at least 16 rows each) of up to
	 * three modules (or the LM head), and a LoRA task per segment and module */
	e->task_cap = 3 * (nz_max64(max_out, e->V) / 16 + 2) + 3 * (slots + T / LORA_ROWS + 1);
	ALLOC(e->tasks, sizeof(gtask) * (size_t)e->task_cap);
#undef ALLOC
	return NZ_OK;
}

static void cpu_info(void *impl, int64_t *out)
{
	cpu_engine *e = impl;
	out[NZ_INFO_KV_BLOCK_SIZE] = e->bs;
	out[NZ_INFO_KV_NUM_BLOCKS] = e->nb;
	out[NZ_INFO_WEIGHT_BYTES] = e->weight_bytes;
	out[NZ_INFO_SLOT_BYTES] = e->slot_bytes;
	out[NZ_INFO_KV_BYTES] = e->kv_bytes;
	out[NZ_INFO_MAX_SLOTS] = e->cfg.max_slots;
	out[NZ_INFO_MAX_RANK] = e->R;
	out[NZ_INFO_THREADS] = e->nthreads;
}

/* ---------------------------------------------------------------------------
 * Adapters
 * ------------------------------------------------------------------------- */

static cpu_slot_mod *slot_mod(const cpu_engine *e, int64_t slot, int64_t layer, int m)
{
	return &e->slot_mod[(slot * e->L + layer) * NZ_M_COUNT + m];
}

typedef struct load_ctx {
	cpu_engine *e;
	int32_t slot;
	const nz_lora_entry *ent;
} load_ctx;

/* The dtype a slot keeps an adapter tensor of dtype dt in: its own where
 * it is 16-bit, else f32 (exact either way). */
static int32_t slot_dtype(int32_t dt) { return dt == NZ_BF16 || dt == NZ_F16 ? dt : NZ_F32; }

static void load_task(void *ctx, int64_t j, int tid)
{
	load_ctx *c = ctx;
	cpu_engine *e = c->e;
	const nz_lora_entry *en = &c->ent[j];
	int m = en->module;
	int64_t in = e->mod_in[m], out = e->mod_out[m], r = en->rank, R = e->R;
	cpu_lora *lo = &e->lora[en->layer * NZ_M_COUNT + m];
	cpu_slot_mod *sm = slot_mod(e, c->slot, en->layer, m);
	sm->rank = (int32_t)r, sm->adt = slot_dtype(en->a_dtype), sm->bdt = slot_dtype(en->b_dtype), sm->scale = en->scale;
	size_t as = nz_dtype_size(sm->adt), bs = nz_dtype_size(sm->bdt);
	char *a = (char *)lo->a + (size_t)(c->slot * R * in) * e->lsz;
	char *bt = (char *)lo->bt + (size_t)(c->slot * R * out) * e->lsz;
	e->k->convert(a, sm->adt, en->a, en->a_dtype, r * in);
	memset(a + (size_t)(r * in) * as, 0, (size_t)((R - r) * in) * as);
	/* Bt[j][o] = B[o][j] */
	e->k->transpose_scale(bt, sm->bdt, out, en->b, en->b_dtype, out, r, 1.0f);
	memset(bt + (size_t)(r * out) * bs, 0, (size_t)((R - r) * out) * bs);
}

static int32_t cpu_adapter_clear(void *impl, int32_t slot)
{
	cpu_engine *e = impl;
	memset(slot_mod(e, slot, 0, 0), 0, sizeof(cpu_slot_mod) * (size_t)(e->L * NZ_M_COUNT));
	return NZ_OK;
}

static int32_t cpu_adapter_load(void *impl, int32_t slot, int32_t n, const nz_lora_entry *ent)
{
	cpu_engine *e = impl;
	cpu_adapter_clear(e, slot);
	load_ctx c = {e, slot, ent};
	cpu_pool_run(e->pool, n, load_task, &c);
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Step
 * ------------------------------------------------------------------------- */

typedef struct step_ctx {
	cpu_engine *e;
	const nz_batch *b;
	const nz_step_plan *p;
	int64_t layer;
	int local_rope; /* the layer's RoPE is cs_local's */
	int64_t tchunk; /* tokens per task of the per-token regions */
	/* per-token regions */
	const float *norm_w;
	float *add;          /* residual add source or NULL */
	const float *post_w; /* norm of add before the residual add (Gemma), or NULL */
	/* projection group */
	int nmod;
	int mods[3];
	const float *gx;
	int64_t gin;
	float *gy[3];
	const void *gw[3]; /* base weights (LM head: one module, gw[0]) */
	const float *gb[3];
	int64_t gout[3];
	int64_t gtok; /* tokens of the group's X */
} step_ctx;

static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
	double ss = 0;
	for (int64_t i = 0; i < n; i++)
		ss += (double)x[i] * (double)x[i];
	float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
	for (int64_t i = 0; i < n; i++)
		out[i] = w[i] * (x[i] * r);
}

static void embed_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	int64_t t0 = i * c->tchunk, t1 = nz_min64(c->p->n_tokens, t0 + c->tchunk);
	for (int64_t t = t0; t < t1; t++) {
		int64_t tok = c->b->tokens[t];
		float *h = e->h + t * e->H;
		if (e->wdt == NZ_Q8) {
			const int8_t *q = (const int8_t *)e->embed + tok * e->H;
			float sc = q8_scale(e->embed, e->V, e->H)[tok];
			for (int64_t j = 0; j < e->H; j++)
				h[j] = (float)q[j] * sc;
		} else
			nz_convert(h, NZ_F32, (const char *)e->embed + (size_t)(tok * e->H) * e->wsz, e->wdt, e->H);
		if (e->cfg.embed_scale > 0) {
			float sc = (float)e->cfg.embed_scale;
			for (int64_t j = 0; j < e->H; j++)
				h[j] *= sc;
		}
		nz_rope_cos_sin(e->inv_freq, e->rh, c->p->tok_pos[t], e->rope_scale, e->cs + t * e->hd,
		                e->cs + t * e->hd + e->hd / 2);
		if (e->cs_local)
			nz_rope_cos_sin(e->inv_freq_local, e->rh, c->p->tok_pos[t], 1.0f, e->cs_local + t * e->hd,
			                e->cs_local + t * e->hd + e->hd / 2);
	}
}

static inline const float *group_delta(const step_ctx *c, int mi, int64_t t);
static inline void add_row(float *y, const float *d, int64_t n);

/* h += add (+ the group's LoRA delta, normed by post_w when set) when add
 * is set; x = rmsnorm(h, norm_w) when norm_w is set */
static void resnorm_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	int64_t t0 = i * c->tchunk, t1 = nz_min64(c->p->n_tokens, t0 + c->tchunk);
	for (int64_t t = t0; t < t1; t++) {
		float *h = e->h + t * e->H;
		if (c->add) {
			float *a = c->add + t * e->H;
			add_row(a, group_delta(c, 0, t), e->H);
			if (c->post_w)
				rmsnorm(a, a, c->post_w, e->H, (float)e->cfg.rms_norm_eps);
			for (int64_t j = 0; j < e->H; j++)
				h[j] += a[j];
		}
		if (c->norm_w)
			rmsnorm(e->x + t * e->H, h, c->norm_w, e->H, (float)e->cfg.rms_norm_eps);
	}
}

static void silu_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	int64_t t0 = i * c->tchunk, t1 = nz_min64(c->p->n_tokens, t0 + c->tchunk);
	for (int64_t t = t0; t < t1; t++) {
		float *g = e->g + t * e->I, *u = e->u + t * e->I;
		add_row(g, group_delta(c, 0, t), e->I);
		add_row(u, group_delta(c, 1, t), e->I);
		if (e->cfg.hidden_act == NZ_ACT_GELU_TANH)
			for (int64_t j = 0; j < e->I; j++)
				g[j] = nz_gelu_tanh(g[j]) * u[j];
		else
			for (int64_t j = 0; j < e->I; j++)
				g[j] = g[j] / (1.0f + nz_expf(-g[j])) * u[j];
	}
}

/* The norms of each q and k head where the model has them, RoPE on q and
 * k, then k and v into the cache. */
static void rope_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	const nz_step_plan *p = c->p;
	const cpu_layer *ly = &e->layers[c->layer];
	const float eps = (float)e->cfg.rms_norm_eps;
	int64_t t0 = i * c->tchunk, t1 = nz_min64(p->n_tokens, t0 + c->tchunk), half = e->hd / 2;
	char *kvl = (char *)e->kv + (size_t)(c->layer * e->kv_layer_elems) * e->kvsz;
	for (int64_t t = t0; t < t1; t++) {
		add_row(e->q + t * e->qd, group_delta(c, 0, t), e->qd);
		add_row(e->kk + t * e->kvd, group_delta(c, 1, t), e->kvd);
		add_row(e->vv + t * e->kvd, group_delta(c, 2, t), e->kvd);
		if (ly->q_norm) {
			for (int64_t h = 0; h < e->nh; h++)
				rmsnorm(e->q + t * e->qd + h * e->hd, e->q + t * e->qd + h * e->hd, ly->q_norm, e->hd, eps);
			for (int64_t g = 0; g < e->nkv; g++)
				rmsnorm(e->kk + t * e->kvd + g * e->hd, e->kk + t * e->kvd + g * e->hd, ly->k_norm, e->hd, eps);
		}
		const float *cs = (c->local_rope ? e->cs_local : e->cs) + t * e->hd;
		for (int64_t h = 0; h < e->nh; h++)
			nz_rope_apply(e->q + t * e->qd + h * e->hd, e->rh, cs, cs + half);
		int64_t s = p->tok_seq[t], pos = p->tok_pos[t];
		int64_t blk = c->b->block_table[s * c->b->max_blocks + pos / e->bs];
		for (int64_t g = 0; g < e->nkv; g++) {
			float *kr = e->kk + t * e->kvd + g * e->hd;
			nz_rope_apply(kr, e->rh, cs, cs + half);
			int64_t off = (blk * e->nkv + g) * e->bs * e->hd + (pos % e->bs) * e->hd;
			nz_convert(kvl + (size_t)off * e->kvsz, e->kvdt, kr, NZ_F32, e->hd);
			nz_convert(kvl + (size_t)(e->nb * e->kv_block_elems + off) * e->kvsz, e->kvdt, e->vv + t * e->kvd + g * e->hd,
			           NZ_F32, e->hd);
		}
	}
}

/* s = softmax(s) over n scores. The maximum and the sum run in 8 lanes
 * (score j in lane j % 8, each lane ascending), folded by a fixed tree,
 * rather than one chain of dependent adds bound by the add's latency. The
 * order depends only on n, the token's own window. */
static void softmax_row(float *s, int64_t n)
{
	float m8[8], z8[8];
	for (int l = 0; l < 8; l++)
		m8[l] = -INFINITY, z8[l] = 0;
	int64_t j = 0;
	for (; j + 8 <= n; j += 8)
		for (int l = 0; l < 8; l++)
			m8[l] = s[j + l] > m8[l] ? s[j + l] : m8[l];
	for (int l = 0; j < n; j++, l++)
		m8[l] = s[j] > m8[l] ? s[j] : m8[l];
	float m = m8[0];
	for (int l = 1; l < 8; l++)
		m = m8[l] > m ? m8[l] : m;
	for (j = 0; j < n; j++)
		s[j] = nz_expf(s[j] - m);
	for (j = 0; j + 8 <= n; j += 8)
		for (int l = 0; l < 8; l++)
			z8[l] += s[j + l];
	for (int l = 0; j < n; j++, l++)
		z8[l] += s[j];
	float sum = ((z8[0] + z8[1]) + (z8[2] + z8[3])) + ((z8[4] + z8[5]) + (z8[6] + z8[7]));
	for (j = 0; j < n; j++)
		s[j] /= sum;
}

/* Attention of one token and one KV head (its nrep query heads), a KV
 * block's run of positions at a time: the scores of its keys for all the
 * heads, then (after the softmax) its value rows into all the heads'
 * outputs. Each score and output element is computed as the kernels
 * promise whatever the run's bounds, so the result does not depend on
 * lo's alignment or on the chunking of a prefill. */
static void attn_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	const nz_step_plan *p = c->p;
	const cpu_kernels *k = e->k;
	int64_t t = i / e->nkv, g = i % e->nkv, hd = e->hd, bs = e->bs, nrep = e->nrep;
	int64_t pos = p->tok_pos[t], lo = 0;
	if (nz_layer_sliding(&e->cfg, c->layer))
		lo = nz_max64(0, pos - e->cfg.sliding_window + 1);
	int64_t n = pos - lo + 1;
	const int32_t *bt = c->b->block_table + p->tok_seq[t] * c->b->max_blocks;
	const char *kl = (const char *)e->kv + (size_t)(c->layer * e->kv_layer_elems) * e->kvsz;
	const char *vl = kl + (size_t)(e->nb * e->kv_block_elems) * e->kvsz;
	const size_t ksz = e->kvsz;
	float *sc = e->att_buf[tid];
	const float *q = e->q + t * e->qd + g * nrep * hd;
	float *o = e->att + t * e->qd + g * nrep * hd;
	float scale = e->cfg.attn_scale > 0 ? (float)e->cfg.attn_scale : 1.0f / sqrtf((float)hd);
	for (int64_t j0 = lo; j0 <= pos;) {
		int64_t j1 = nz_min64(pos + 1, (j0 / bs + 1) * bs);
		const char *kr = kl + (size_t)(((int64_t)bt[j0 / bs] * e->nkv + g) * bs * hd + (j0 % bs) * hd) * ksz;
		k->attn_scores[e->kvdt](q, nrep, hd, kr, j1 - j0, hd, scale, sc + (j0 - lo), n);
		j0 = j1;
	}
	if (e->cfg.attn_softcap > 0)
		nz_softcap(sc, nrep * n, (float)e->cfg.attn_softcap);
	for (int64_t r = 0; r < nrep; r++) {
		softmax_row(sc + r * n, n);
		memset(o + r * hd, 0, sizeof(float) * (size_t)hd);
	}
	for (int64_t j0 = lo; j0 <= pos;) {
		int64_t j1 = nz_min64(pos + 1, (j0 / bs + 1) * bs);
		const char *vr = vl + (size_t)(((int64_t)bt[j0 / bs] * e->nkv + g) * bs * hd + (j0 % bs) * hd) * ksz;
		k->attn_pv[e->kvdt](o, nrep, hd, sc + (j0 - lo), n, vr, j1 - j0, hd);
		j0 = j1;
	}
}

static void group_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	const gtask *tk = &e->tasks[i];
	int mi = tk->mi;
	int64_t in = c->gin, out = c->gout[mi];
	if (tk->seg < 0) {
		const float *bias = c->gb[mi] ? c->gb[mi] + tk->r0 : NULL;
		if (e->wdt == NZ_Q8)
			e->k->gemm_q8((const int8_t *)c->gw[mi] + tk->r0 * in, q8_scale(c->gw[mi], out, in) + tk->r0, in,
			              tk->r1 - tk->r0, in, c->gx, in, c->gtok, c->gy[mi] + tk->r0, out, bias);
		else
			e->k->gemm[e->wdt]((const char *)c->gw[mi] + (size_t)(tk->r0 * in) * e->wsz, in, tk->r1 - tk->r0, in,
			                   c->gx, in, c->gtok, c->gy[mi] + tk->r0, out, bias);
		return;
	}
	/* LoRA: shrink v = x·Aᵀ [rows, rank] (token rows gathered), scaled,
	 * then expand d = v·Bt [rows, out] */
	int64_t slot = c->p->seg_slot[tk->seg], R = e->R, r0 = tk->r0, nr = tk->r1 - tk->r0;
	const cpu_lora *lo = &e->lora[c->layer * NZ_M_COUNT + c->mods[mi]];
	const cpu_slot_mod *sm = slot_mod(e, slot, c->layer, c->mods[mi]);
	const char *a = (const char *)lo->a + (size_t)(slot * R * in) * e->lsz;
	const char *bt = (const char *)lo->bt + (size_t)(slot * R * out) * e->lsz;
	float *v = e->lv[mi] + r0 * R;
	e->k->gemm_gather[sm->adt](a, in, tk->rank, in, c->gx, in, e->lrow_tok + r0, nr, v, R);
	for (int64_t i = 0; i < nr; i++)
		for (int32_t j = 0; j < tk->rank; j++)
			v[i * R + j] *= sm->scale;
	e->k->expand[sm->bdt](bt, out, tk->rank, out, v, R, nr, e->dl[mi] + r0 * out, out);
}

/* Runs y_m = x·W_mᵀ (+b_m) for the group's modules and, when use_lora,
 * the LoRA deltas d_m of the tokens with an adapter (group_delta). */
static void run_group(step_ctx *c, int use_lora)
{
	cpu_engine *e = c->e;
	const nz_step_plan *p = c->p;
	int64_t total = 0;
	for (int mi = 0; mi < c->nmod; mi++)
		total += c->gout[mi];
	int64_t chunk = nz_max64(16, (total / (8 * e->nthreads) + 3) & ~(int64_t)3);
	/* LoRA tasks (memory-bound: they stream adapter weights) first, then
	 * the base row chunks (compute-bound at larger batches); the pool
	 * overlaps the two kinds */
	int64_t n = 0;
	if (use_lora)
		for (int32_t g = 0; g < p->n_segs; g++)
			for (int mi = 0; mi < c->nmod; mi++) {
				int32_t r = slot_mod(e, p->seg_slot[g], c->layer, c->mods[mi])->rank;
				for (int64_t r0 = e->seg_row[g]; r && r0 < e->seg_row[g + 1]; r0 += LORA_ROWS)
					e->tasks[n++] = (gtask){mi, g, r, r0, nz_min64(e->seg_row[g + 1], r0 + LORA_ROWS)};
			}
	int64_t n_mem = n;
	for (int mi = 0; mi < c->nmod; mi++)
		for (int64_t r0 = 0; r0 < c->gout[mi]; r0 += chunk)
			e->tasks[n++] = (gtask){mi, -1, 0, r0, nz_min64(c->gout[mi], r0 + chunk)};
	cpu_pool_run_mixed(e->pool, n_mem, n, group_task, c);
}

/* The LoRA delta row of token t for the group's module mi, or NULL when the
 * token's adapter has none for it. */
static inline const float *group_delta(const step_ctx *c, int mi, int64_t t)
{
	const cpu_engine *e = c->e;
	int32_t row = c->p->n_segs ? e->lrow[t] : -1;
	if (row < 0 || !slot_mod(e, c->b->seq_slot[c->p->tok_seq[t]], c->layer, c->mods[mi])->rank)
		return NULL;
	return e->dl[mi] + (int64_t)row * c->gout[mi];
}

static inline void add_row(float *y, const float *d, int64_t n)
{
	if (d)
		for (int64_t j = 0; j < n; j++)
			y[j] += d[j];
}

static void setup_group(step_ctx *c, int nmod, const int *mods, const float *x, float *const *y)
{
	cpu_engine *e = c->e;
	const cpu_layer *ly = &e->layers[c->layer];
	c->nmod = nmod;
	c->gx = x;
	c->gin = e->mod_in[mods[0]];
	c->gtok = c->p->n_tokens;
	for (int i = 0; i < nmod; i++) {
		c->mods[i] = mods[i];
		c->gy[i] = y[i];
		c->gw[i] = ly->w[mods[i]];
		c->gb[i] = ly->b[mods[i]];
		c->gout[i] = e->mod_out[mods[i]];
	}
}

static void sample_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	const nz_batch *b = c->b;
	const nz_step_plan *p = c->p;
	int64_t s = p->sample_seq[i];
	float *lg = e->logits + i * e->V;
	if (e->cfg.final_softcap > 0)
		nz_softcap(lg, e->V, (float)e->cfg.final_softcap);
	nz_sample_params sp = {.n_top = (int32_t)b->n_top};
	if (i < p->n_sample) {
		nz_apply_bias(lg, b, s);
		nz_apply_allow(lg, e->V, b, s);
		sp.temperature = b->temperature[s];
		sp.top_p = b->top_p[s];
		sp.top_k = b->top_k[s];
		sp.seed = b->seed[s];
		sp.position = (int64_t)b->seq_pos[s] + b->seq_len[s];
	} else {
		sp.scored = 1;
		sp.target = p->row_force[i];
	}
	int32_t scratch, *tok, *top_tok;
	float *lp, *top_lp;
	nz_row_dst(b, p, i, &scratch, &tok, &lp, &top_tok, &top_lp);
	nz_sample(lg, e->V, &sp, e->samp_buf[tid], tok, lp, top_tok, top_lp);
	if (b->out_logits && i < p->n_sample)
		memcpy(b->out_logits + s * e->V, lg, sizeof(float) * (size_t)e->V);
}

static void final_norm_task(void *ctx, int64_t i, int tid)
{
	step_ctx *c = ctx;
	cpu_engine *e = c->e;
	rmsnorm(e->xs + i * e->H, e->h + (int64_t)c->p->sample_tok[i] * e->H, e->final_norm, e->H,
	        (float)e->cfg.rms_norm_eps);
}

static int32_t cpu_step(void *impl, const nz_batch *b, const nz_step_plan *p)
{
	cpu_engine *e = impl;
	int64_t T = p->n_tokens;
	step_ctx c = {.e = e, .b = b, .p = p};
	c.tchunk = nz_max64(1, nz_ceil_div(T, 4 * e->nthreads));
	int64_t ttasks = nz_ceil_div(T, c.tchunk);
	int use_lora = p->n_segs > 0;
	if (use_lora) { /* LoRA rows in segment order */
		for (int64_t t = 0; t < T; t++)
			e->lrow[t] = -1;
		int32_t row = 0;
		for (int32_t g = 0; g < p->n_segs; g++) {
			e->seg_row[g] = row;
			for (int32_t si = p->seg_start[g]; si < p->seg_start[g + 1]; si++)
				for (int32_t t = p->seq_off[p->seg_seqs[si]]; t < p->seq_off[p->seg_seqs[si] + 1]; t++) {
					e->lrow[t] = row;
					e->lrow_tok[row++] = t;
				}
		}
		e->seg_row[p->n_segs] = row;
	}

	cpu_pool_run(e->pool, ttasks, embed_task, &c);
	static const int qkv[3] = {NZ_M_Q, NZ_M_K, NZ_M_V}, o_m[1] = {NZ_M_O}, gu[2] = {NZ_M_GATE, NZ_M_UP},
	                 down[1] = {NZ_M_DOWN};
	for (int64_t l = 0; l < e->L; l++) {
		const cpu_layer *ly = &e->layers[l];
		c.layer = l;
		c.local_rope = e->cs_local && nz_layer_sliding(&e->cfg, l);
		/* x = norm(h) (for layer 0; later layers get it fused with the residual) */
		if (l == 0) {
			c.add = NULL;
			c.post_w = NULL;
			c.norm_w = ly->attn_norm;
			cpu_pool_run(e->pool, ttasks, resnorm_task, &c);
		}
		float *yq[3] = {e->q, e->kk, e->vv};
		setup_group(&c, 3, qkv, e->x, yq);
		run_group(&c, use_lora);
		cpu_pool_run(e->pool, ttasks, rope_task, &c);
		cpu_pool_run(e->pool, T * e->nkv, attn_task, &c);
		float *yo[1] = {e->y};
		setup_group(&c, 1, o_m, e->att, yo);
		run_group(&c, use_lora);
		c.add = e->y;
		c.post_w = ly->post_attn_norm;
		c.norm_w = ly->ffn_norm;
		cpu_pool_run(e->pool, ttasks, resnorm_task, &c);
		float *ygu[2] = {e->g, e->u};
		setup_group(&c, 2, gu, e->x, ygu);
		run_group(&c, use_lora);
		cpu_pool_run(e->pool, ttasks, silu_task, &c);
		float *yd[1] = {e->y};
		setup_group(&c, 1, down, e->g, yd);
		run_group(&c, use_lora);
		c.add = e->y;
		c.post_w = ly->post_ffn_norm;
		c.norm_w = l + 1 < e->L ? e->layers[l + 1].attn_norm : NULL;
		cpu_pool_run(e->pool, ttasks, resnorm_task, &c);
	}
	if (p->n_rows == 0)
		return NZ_OK;
	cpu_pool_run(e->pool, p->n_rows, final_norm_task, &c);
	/* LM head over the rows only (sampled sequences, scored tokens) */
	c.nmod = 1;
	c.gx = e->xs;
	c.gin = e->H;
	c.gtok = p->n_rows;
	c.gy[0] = e->logits;
	c.gw[0] = e->cfg.tie_word_embeddings ? e->embed : e->lm_head;
	c.gb[0] = NULL;
	c.gout[0] = e->V;
	c.mods[0] = 0;
	run_group(&c, 0);
	cpu_pool_run(e->pool, p->n_rows, sample_task, &c);
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Read bandwidth probe
 * ------------------------------------------------------------------------- */

typedef struct bw_ctx {
	const cpu_kernels *k;
	const char *buf;
	int64_t bytes, chunk;
	uint64_t sums[64];
} bw_ctx;

static void bw_task(void *ctx, int64_t i, int tid)
{
	bw_ctx *c = ctx;
	int64_t a = i * c->chunk;
	c->sums[tid & 63] += c->k->read_sum(c->buf + a, nz_min64(c->chunk, c->bytes - a));
}

static int32_t cpu_bench_read_bandwidth(int64_t bytes, int32_t iters, int32_t num_threads, double *out)
{
	const cpu_kernels *k = cpu_kernels_select();
	if (!k)
		return nz_error(NZ_ERR_UNSUPPORTED, "nz_bench_read_bandwidth: this processor lacks AVX2, FMA or F16C");
	cpu_pool *pool;
	int32_t st = cpu_pool_create(num_threads ? num_threads : cpu_online_cores(), &pool);
	if (st != NZ_OK)
		return st;
	char *buf = nz_alloc((size_t)bytes);
	if (!buf) {
		cpu_pool_destroy(pool);
		return nz_oom("nz_bench_read_bandwidth", (size_t)bytes);
	}
	memset(buf, 1, (size_t)bytes);
	bw_ctx c = {.k = k, .buf = buf, .bytes = bytes, .chunk = 1 << 20};
	int64_t ntasks = nz_ceil_div(bytes, c.chunk);
	cpu_pool_run(pool, ntasks, bw_task, &c); /* warm up */
	double t0 = nz_now_seconds();
	for (int32_t i = 0; i < iters; i++)
		cpu_pool_run(pool, ntasks, bw_task, &c);
	double dt = nz_now_seconds() - t0;
	volatile uint64_t sink = 0;
	for (int i = 0; i < 64; i++)
		sink += c.sums[i];
	(void)sink;
	nz_free(buf);
	cpu_pool_destroy(pool);
	*out = dt > 0 ? (double)bytes * (double)iters / dt : 0;
	return NZ_OK;
}

static const nz_backend_ops cpu_ops = {
    .describe = cpu_describe,
    .create = cpu_create,
    .set_tensor = cpu_set_tensor,
    .finalize = cpu_finalize,
    .info = cpu_info,
    .adapter_load = cpu_adapter_load,
    .adapter_clear = cpu_adapter_clear,
    .step = cpu_step,
    .destroy = cpu_destroy,
    .bench_read_bandwidth = cpu_bench_read_bandwidth,
};

const nz_backend_ops *nz_default_backend(void) { return &cpu_ops; }
