/*
 * cuda_kernels.h — the CUDA backend's kernels, as host functions that
 * launch them on a stream (kernels_*.cu). Each returns the launch's
 * cudaError_t (cudaGetLastError after the launch).
 *
 * dtype (NZ_F32, NZ_F16, NZ_BF16) is the engine's weight dtype: weights,
 * GEMM inputs ("act": the normed hidden state, the attention output, the
 * gated MLP activation) and the KV cache are stored in it. The residual
 * stream, GEMM outputs, queries, LoRA intermediates and logits are f32.
 *
 * Per-step values that CUDA graph replays must see (the block table's
 * width, the number of LoRA work items) are read from device memory:
 * `scalars` points at the step metadata's scalar words (NZ_SC_*).
 */
#ifndef NZ_CUDA_KERNELS_H
#define NZ_CUDA_KERNELS_H

#include "cuda_common.cuh"
#include "nozzle_engine.h"

/* Words of the step metadata's scalar block. */
enum {
	NZ_SC_BT_WIDTH = 0,    /* entries per block-table row */
	NZ_SC_LORA_ITEMS = 1,  /* LoRA work items of this step */
	NZ_SC_N_TOP = 2,       /* top logprobs per sampled sequence */
	NZ_SC_N_BIAS = 3,      /* logit adjustments of this step (nz_bias_entry) */
	NZ_SC_BIAS_AT = 4,     /* their byte offset from the scalars */
	NZ_SC_N_MASK = 5,      /* masked rows of logits this step */
	NZ_SC_MASK_ROWS_AT = 6, /* byte offset of their row indices (int32) */
	NZ_SC_MASK_AT = 7,     /* byte offset of their masks (uint32 words, ceil(V/32) a row) */
	NZ_SC_COUNT = 8
};

/* One logit adjustment: value added to logits row `row`, token `token`
 * (nz_batch.bias_off; a row's tokens are distinct). */
typedef struct nz_bias_entry {
	int32_t row;
	int32_t token;
	float value;
} nz_bias_entry;

/* The sampler's result for one sampled sequence (one D2H copy for all). */
#define NZ_CUDA_MAX_TOP 20
typedef struct nz_sample_out {
	int32_t token;
	float logprob;
	int32_t top_token[NZ_CUDA_MAX_TOP];
	float top_logprob[NZ_CUDA_MAX_TOP];
} nz_sample_out;

/* Sampling parameters of one row of logits: a sampled sequence or a
 * scored token (step metadata). */
typedef struct nz_sample_in {
	double u;          /* the uniform draw, nz_rng_uniform(seed, position) */
	float temperature; /* 0 = greedy */
	float top_p;       /* 1 = off */
	int32_t top_k;     /* 0 = off */
	int32_t token;     /* the token row in the logits */
	int32_t target;    /* -1: draw; else the token scored (nothing drawn) */
} nz_sample_in;

/* Up to three LoRA target modules that share their input (q,k,v;
 * gate,up; o; down), for the shrink and expand kernels. Offsets are in
 * elements from the start of a slot's region; each slot holds, per layer
 * and module, A [max_rank][in] then B [out][max_rank]. */
typedef struct nz_lora_group {
	int32_t nmod;
	int32_t module[3];  /* NZ_M_* (index into the rank table) */
	int64_t a_off[3];
	int64_t b_off[3];
	int32_t out[3];     /* out features */
	int32_t col[3];     /* first column of the module's output in y */
} nz_lora_group;

/* LoRA work item: up to NZ_LORA_TM tokens of one adapter segment. */
#define NZ_LORA_TM 8

/* A projection group's LoRA expand, done by the kernel that consumes the
 * group's output (nz_k_rope_kv, nz_k_add_norm, nz_k_silu) rather than by a
 * kernel of its own: for a token t with an adapter (tok_lora[t] = its slot
 * + 1; 0: none) it adds to output column col_m + o of module m
 *   (Σ_split v[m][split][t][0:r]) · B_m[o][0:r]
 * (r from the rank table; nothing where the slot lacks module m), the
 * splits summed in order and the products in order of k, so the result
 * does not depend on scheduling. v is the shrink's output
 * ([nmod][splits][T][R] f32, nz_k_lora_shrink). The consumer stages a
 * token's v rows in dynamic shared memory: nz_lora_out_smem bytes. */
#define NZ_LORA_OUT_MAX_R 2048
typedef struct nz_lora_out {
	nz_lora_group grp;
	const float *v;
	int64_t v_mod_stride, v_split_stride;
	int32_t splits;
	const void *slots;
	int64_t slot_stride;
	const int32_t *rank_tab;
	int32_t layer, L, R;
} nz_lora_out;
size_t nz_lora_out_smem(int R);

/* h[t] = embed[tokens[t]] (f32) · embed_scale (f32; 1: none);
 * x[t] = act(rmsnorm(h[t], norm_w)); cs[t] = cos|sin of
 * tok_pos[t]·inv_freq (hd/2 each: the first rh = rotary_dim/2 rotate,
 * the rest are cos 1, sin 0 — see nz_rope_pair), times rope_scale; with
 * inv_local set, cs_local[t] likewise from inv_local, unscaled (the
 * sliding layers' RoPE when rope_local_theta is set). */
cudaError_t nz_k_embed_norm(int dtype, cudaStream_t s, int64_t T, const void *embed, float embed_scale,
                            const int32_t *tokens, const int32_t *tok_pos, const float *inv_freq, float rope_scale,
                            const float *inv_local, int64_t H, int64_t hd, int64_t rh, const float *norm_w, float eps,
                            float *h, void *x, float *cs, float *cs_local);

/* d = y[t] (+ bias) (+ the LoRA deltas for tokens with an adapter:
 * yl[t] when yl is set (nz_k_lora_expand's output), lo's expand when lo
 * is); with post_w set (Gemma's post-attention or post-MLP norm) d =
 * rmsnorm(d, post_w) (d is left in y[t] first); h[t] += d; then, when
 * norm_w is set, x[t] = act(rmsnorm(h[t])); when ss_out is, ss_out[t] =
 * the sum of squares of h[t] (double), which a fused GEMV's norm prologue
 * reads as its one partial (n_part_in 1). */
cudaError_t nz_k_add_norm(int dtype, cudaStream_t s, int64_t T, int64_t H, float *h, float *y,
                          const float *yl, const nz_lora_out *lo, const int32_t *tok_lora, const float *bias,
                          const float *post_w, const float *norm_w, float eps, void *x, double *ss_out);

/* x[i] = act(rmsnorm(h[sample_tok[i]], norm_w)) for i < n. */
cudaError_t nz_k_gather_norm(int dtype, cudaStream_t s, int64_t n, const nz_sample_in *samples, const float *h,
                             int64_t H, const float *norm_w, float eps, void *x);

/* y is [T][qd + 2·kvd] (q | k | v, f32, + bias when set, + the LoRA
 * deltas of yl or lo as in nz_k_add_norm): RoPE on q and k; q to q_out (f32 [T][qd]);
 * k and v into the layer's cache at each token's position (blocks from
 * the block table). raw (a model with q and k norms): no RoPE, q to q_out
 * and k back into y as they are, for nz_k_qk_norm_rope; v into the cache. */
cudaError_t nz_k_rope_kv(int dtype, cudaStream_t s, int64_t T, float *y, const float *yl, const nz_lora_out *lo, const int32_t *tok_lora,
                         const float *bias, const float *cs, const int32_t *tok_pos, const int32_t *tok_seq,
                         const int32_t *bt, const int32_t *scalars, int nh, int nkv, int hd, int rh, int bs, bool raw, float *q_out,
                         void *kc, void *vc);

/* After nz_k_rope_kv with raw: each head of q (q_out) and of k (y) RMS
 * normed with q_norm or k_norm ([hd]), then RoPE; q back to q_out, k into
 * the layer's cache (Qwen3). */
cudaError_t nz_k_qk_norm_rope(int dtype, cudaStream_t s, int64_t T, const float *y, const float *q_norm,
                              const float *k_norm, float eps, const float *cs, const int32_t *tok_pos,
                              const int32_t *tok_seq, const int32_t *bt, const int32_t *scalars, int nh, int nkv,
                              int hd, int rh, int bs, float *q_out, void *kc);

/* Causal (optionally windowed) attention of items (first token, count:
 * consecutive tokens of one sequence) over the paged cache; out is
 * act [T][nh·hd]. Scores are q·k · scale, then, with softcap > 0,
 * softcap · tanh(score / softcap) (Gemma 2), before the mask. With
 * splits > 1 each (item, KV head) spreads its keys over `splits` blocks
 * whose partial results (part_o: [items][nkv][splits][rows_max][hd],
 * part_ml: [...][rows_max][2]) the last of them merges; part_count
 * ([items][nkv], zero before the first launch) counts them and is left
 * zero. A split takes at least min_tiles key tiles (of 32): fewer
 * blocks, and fewer partial results to merge, for short sequences. */
cudaError_t nz_k_attention(int dtype, cudaStream_t s, int64_t n_items, const int32_t *items, int rows_max,
                           const float *q, const void *kc, const void *vc, const int32_t *tok_pos,
                           const int32_t *tok_seq, const int32_t *bt, const int32_t *scalars, int nh, int nkv,
                           int hd, int bs, int window, float scale, float softcap, void *out, int splits,
                           int min_tiles, float *part_o, float *part_ml, int *part_count);
/* Dynamic shared memory of nz_k_attention, and the one-time setup that
 * allows it (cudaFuncSetAttribute) on the current device. */
size_t nz_attention_smem(int rows_max, int hd);
cudaError_t nz_attention_setup(int dtype, size_t smem);

/* y [T][out] (f32) = x [T][in] · Wᵀ for T <= NZ_GEMV_MAX_T: one pass over W. */
#define NZ_GEMV_MAX_T 8
cudaError_t nz_k_gemv(int dtype, cudaStream_t s, int64_t T, const void *x, int64_t in, const void *W, int64_t out,
                      float *y);

/* The decode GEMV with its neighbours fused in, for steps of at most
 * NZ_GEMV_MAX_T tokens without adapters: the residual add and RMSNorm
 * between two projections, and the SiLU gate, no longer need kernels of
 * their own.
 *
 * Input: x (act [T][in]), or with norm_w set act(rmsnorm(h_in)) built in
 * shared memory from h_in (f32 [T][in]), norm_w and the sums of squares
 * part_in (double [T][n_part_in], the partials of a NZ_GEMV_RESID launch).
 * Output by epi:
 *   NZ_GEMV_RESID  h [T][out] += x·Wᵀ (+ bias), and per block the sum of
 *                  squares of its rows of the new h: part_out [T][grid]
 *                  (grid = nz_gemv_fused_parts(out)); as nz_k_add_norm's
 *                  first half;
 *   NZ_GEMV_SILU   W has 2·out rows (gate | up): x_out [T][out] =
 *                  act(a(g (+ bias)) · (u (+ bias[out:]))), as nz_k_silu
 *                  (a: silu or GELU-tanh as io.act says);
 *   NZ_GEMV_ROPE   W is the q|k|v projection (out = qd + 2·kvd rows): the
 *                  rows (+ bias) go through RoPE into q_out and the KV
 *                  cache as nz_k_rope_kv does (rope_* fields: its
 *                  arguments); each warp takes the rows j and j + hd/2 of
 *                  one head. With k_raw (a model with q and k norms), q
 *                  and k are left as they are: q to q_out, k to k_raw
 *                  ([T][out], at its rows), for nz_k_qk_norm_rope;
 *   NZ_GEMV_OUT    y [T][out] = x·Wᵀ (+ bias) in f32, for nz_k_add_norm
 *                  with a post-norm (Gemma), which needs the whole row.
 * The arithmetic is the unfused kernels', operation for operation. in must
 * be a multiple of 8; with norm_w, T·in·sizeof(act) bytes of shared memory
 * (at most what nz_gemv_fused_setup allowed). The combinations the forward
 * pass uses are built: RESID and OUT from x, SILU from h, ROPE from
 * either; others return cudaErrorInvalidValue. */
enum { NZ_GEMV_RESID = 1, NZ_GEMV_SILU = 2, NZ_GEMV_ROPE = 3, NZ_GEMV_OUT = 4 };
/* The LoRA of a fused GEMV's projection group (nz_gemv_io.lora) in a
 * decode step with adapters: the launch's first `blocks` blocks do the
 * group's shrink (a warp per (work item, module, rank row) of the
 * items_max · nmod · R, over the whole, normalised, input) into v
 * [nmod][T][R] and count themselves done in *sync (0 before the launch);
 * the GEMV blocks, their rows read, wait for that count and add each
 * row's delta (Σ_k v[k] · B[row][k], lane k's product in the warp's
 * reduction of the row) before the epilogue. The shrink
 * blocks come first in the grid, so they are running or done before any
 * GEMV block waits. */
typedef struct nz_gemv_lora {
	nz_lora_group grp;
	const int32_t *scalars, *items, *lora_tok, *tok_lora, *rank_tab;
	const void *slots;
	int64_t slot_stride;
	int32_t layer, L, R;
	float *v;
	int32_t *sync;
	int32_t items_max, blocks;
} nz_gemv_lora;

typedef struct nz_gemv_io {
	const void *x;
	const float *h_in, *norm_w;
	const double *part_in;
	int32_t n_part_in;
	float eps;
	int32_t epi;
	float *h;           /* RESID */
	double *part_out;   /* RESID */
	void *x_out;        /* SILU */
	int32_t act;        /* SILU: NZ_ACT_* */
	float *y;           /* OUT */
	const float *bias;  /* RESID, SILU, ROPE, OUT; NULL: none */
	/* ROPE */
	const float *cs;
	const int32_t *tok_pos, *tok_seq, *bt, *scalars;
	int32_t nh, nkv, hd, rh, bs; /* rh: rotary_dim / 2 */
	float *q_out;
	void *kc, *vc;
	float *k_raw;
	nz_gemv_lora lora; /* lora.v NULL: no adapters */
} nz_gemv_io;
cudaError_t nz_k_gemv_fused(int dtype, cudaStream_t s, int64_t T, int64_t in, const void *W, int64_t out,
                            const nz_gemv_io *io);
/* Blocks (partials per token) of a NZ_GEMV_RESID launch with out rows. */
int64_t nz_gemv_fused_parts(int64_t out);
/* The shrink blocks of a fused GEMV with LoRA: items work items of nmod
 * modules at max rank R. */
int32_t nz_gemv_lora_blocks(int64_t items, int nmod, int R);
/* Allows the fused variants smem bytes of dynamic shared memory. */
cudaError_t nz_gemv_fused_setup(int dtype, size_t smem);

/* x[t] = act(a(g) · u) with g|u = y[t] (+ bias [2I]) (+ the LoRA
 * deltas of yl or lo as in nz_k_add_norm); a is silu or GELU-tanh as
 * hidden_act says (NZ_ACT_*, nz_act_mul). */
cudaError_t nz_k_silu(int dtype, cudaStream_t s, int64_t T, int64_t I, const float *y, const float *yl,
                      const nz_lora_out *lo, const int32_t *tok_lora, const float *bias, int hidden_act, void *x);

/* x[i] = cap · tanh(x[i] / cap) for i < n (cap > 0): Gemma 2's soft-cap
 * of the logits, right after the LM head. */
cudaError_t nz_k_softcap(cudaStream_t s, float *x, int64_t n, float cap);

/* LoRA shrink: v[mi][split][tok][0:r] = the split's chunk of x[tok]·A_mᵀ
 * for every token of every work item (items: [n][3] = first index into
 * lora_tok, count, slot) whose slot has module m (rank from the rank table
 * [slots][L][NZ_M_COUNT]); the input features are cut into `splits`
 * chunks of whole 256-element strides (nz_lora_splits); grid.x is
 * max_items, blocks past scalars[NZ_SC_LORA_ITEMS] exit. */
cudaError_t nz_k_lora_shrink(int dtype, cudaStream_t s, int64_t max_items, const int32_t *scalars,
                             const int32_t *items, const int32_t *lora_tok, const void *x, int64_t in, int splits,
                             const void *slots, int64_t slot_stride, nz_lora_group grp, const int32_t *rank_tab,
                             int layer, int L, int R, float *v, int64_t v_mod_stride, int64_t v_split_stride);

/* How many chunks the shrink cuts `in` input features into for `items`
 * work items of nmod modules at max rank R: enough for about want_blocks
 * blocks, at most max_splits, none empty. */
int nz_lora_splits(int64_t in, int64_t items, int nmod, int R, int64_t want_blocks, int64_t max_splits);

/* LoRA expand into a buffer: y[tok][col_m + o] = (Σ_split v[mi][split]
 * [tok][0:r])·B_m[o][0:r] (0 where the slot lacks module m), for the
 * groups whose consumer does not do it (nz_lora_out). */
cudaError_t nz_k_lora_expand(int dtype, cudaStream_t s, int64_t max_items, const int32_t *scalars,
                             const int32_t *items, const int32_t *lora_tok, const float *v, int64_t v_mod_stride,
                             int64_t v_split_stride, int splits, const void *slots, int64_t slot_stride,
                             nz_lora_group grp, const int32_t *rank_tab, int layer, int L, int R, float *y,
                             int64_t y_stride, int max_out);

/* Samples each of n logits rows [V] (nz_sample in common.h, same
 * semantics): greedy, temperature, top-k, top-p, logprob, top logprobs.
 * With parts (scratch of n·nz_sample_parts(V) entries) a first launch of
 * many blocks per row finds each chunk's argmax and sum of expf, which one
 * block per row then merges; without, that block reads the whole row. */
typedef struct nz_sample_part {
	unsigned long long key; /* the chunk's argmax key */
	double sum;             /* Σ expf(l - m) over the chunk */
	float m;                /* the chunk's largest logit (-inf: none) */
} nz_sample_part;
int64_t nz_sample_parts(int64_t V);
cudaError_t nz_k_sample(cudaStream_t s, int64_t n, const float *logits, int64_t V, const nz_sample_in *in,
                        const int32_t *scalars, nz_sample_out *out, nz_sample_part *parts);

/* Adds the step's logit adjustments to the logits [rows][V]: the
 * scalars[NZ_SC_N_BIAS] entries at scalars[NZ_SC_BIAS_AT] bytes past the
 * scalars, so a graph replay finds each step's own. grid blocks walk them
 * grid-stride. */
cudaError_t nz_k_logit_bias(cudaStream_t s, int grid, const int32_t *scalars, float *logits, int64_t V);

/* Sets to -inf the logits of the tokens the step's masks do not allow:
 * scalars[NZ_SC_N_MASK] rows, their indices and masks found past the
 * scalars as the adjustments are (NZ_SC_MASK_ROWS_AT, NZ_SC_MASK_AT). */
cudaError_t nz_k_logit_mask(cudaStream_t s, int grid, const int32_t *scalars, float *logits, int64_t V);

/* Reads bytes (a multiple of 16) of buf with 16-byte loads; folds into sink. */
cudaError_t nz_k_read(cudaStream_t s, const void *buf, int64_t bytes, unsigned *sink, int blocks);

#endif /* NZ_CUDA_KERNELS_H */
