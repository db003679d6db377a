/*
 * nozzle_engine.h — the one public C ABI of the Nozzle engine.
 *
 * The engine computes; Go (runtime/engine, through purego) parses files and
 * decides. Every backend (libnozzle_cpu.so, libnozzle_cuda.so) exports
 * exactly these symbols with exactly these semantics.
 *
 * Rules of the ABI:
 *  - Only scalars and pointers cross it; structs are passed by pointer and
 *    hold only 8-byte fields (int64_t, double, pointers), so there is no
 *    padding and Go mirrors them field for field. nz_struct_size() lets Go
 *    check the sizes at load time.
 *  - Every call that can fail returns an int32_t status (NZ_OK or a negative
 *    NZ_ERR_*); nz_last_error() then says why. The library never exits,
 *    aborts or prints.
 *  - The engine never keeps a caller pointer after a call returns: tensor
 *    data, adapter weights and batch arrays are copied or converted into
 *    the engine's own memory during the call.
 *  - Calls on one engine are not concurrent: the caller serialises them
 *    (one engine goroutine in Go). Different engines are independent.
 *  - Row-major (C order) tensors everywhere; a linear layer's weight is
 *    [out_features, in_features] and computes y = x·Wᵀ (+ b), as in
 *    Hugging Face checkpoints.
 */
#ifndef NOZZLE_ENGINE_H
#define NOZZLE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NZ_ABI_VERSION 8

/* ---- status codes ------------------------------------------------------ */
#define NZ_OK 0
#define NZ_ERR_INVALID (-1)     /* bad argument, shape, dtype or call order */
#define NZ_ERR_OOM (-2)         /* host or device memory exhausted */
#define NZ_ERR_UNSUPPORTED (-3) /* feature, dtype or processor not supported */
#define NZ_ERR_DEVICE (-4)      /* CUDA or device failure */
#define NZ_ERR_INTERNAL (-5)    /* a bug: an invariant did not hold */

/* ---- dtypes -------------------------------------------------------------- */
#define NZ_F32 0
#define NZ_F16 1
#define NZ_BF16 2
/* weight_dtype only, never a tensor's source dtype: the engine quantizes
 * each matrix (the seven projections, EMBED and LM_HEAD) as it is set, to
 * int8 with one f32 scale per output row (symmetric: scale = max|w|/127,
 * q = round(w/scale)); norms and biases stay f32. The CPU backend only. */
#define NZ_Q8 3

/* ---- base-model tensor kinds (nz_engine_set_tensor) ------------------------
 * Shapes (H hidden, I intermediate, V vocab, nh/nkv heads, hd head_dim):
 *   EMBED [V,H]  LM_HEAD [V,H] (absent when tie_word_embeddings)
 *   FINAL_NORM, ATTN_NORM, FFN_NORM [H]
 *   Q [nh*hd,H]  K,V [nkv*hd,H]  O [H,nh*hd]
 *   GATE,UP [I,H]  DOWN [H,I]
 *   *_BIAS [out] (optional; Qwen2 has Q/K/V biases)
 *   Q_NORM, K_NORM [hd] (optional, in every layer or none: Qwen3's and
 *   Gemma 3's RMSNorm of each head of q and k, after the projection and
 *   before RoPE)
 *   POST_ATTN_NORM, POST_FFN_NORM [H] (optional, in every layer or none,
 *   both or neither: Gemma 2/3's "sandwich" norms of the attention output
 *   and of the MLP output, applied before each is added to the residual;
 *   FFN_NORM is then Gemma's pre_feedforward_layernorm)
 * Per-layer kinds take layer in [0, num_layers); the others take layer -1. */
enum {
	NZ_T_EMBED = 0,
	NZ_T_LM_HEAD = 1,
	NZ_T_FINAL_NORM = 2,
	NZ_T_ATTN_NORM = 3,
	NZ_T_FFN_NORM = 4,
	NZ_T_Q = 5,
	NZ_T_K = 6,
	NZ_T_V = 7,
	NZ_T_O = 8,
	NZ_T_GATE = 9,
	NZ_T_UP = 10,
	NZ_T_DOWN = 11,
	NZ_T_Q_BIAS = 12,
	NZ_T_K_BIAS = 13,
	NZ_T_V_BIAS = 14,
	NZ_T_O_BIAS = 15,
	NZ_T_GATE_BIAS = 16,
	NZ_T_UP_BIAS = 17,
	NZ_T_DOWN_BIAS = 18,
	NZ_T_Q_NORM = 19,
	NZ_T_K_NORM = 20,
	NZ_T_POST_ATTN_NORM = 21,
	NZ_T_POST_FFN_NORM = 22,
	NZ_T_COUNT = 23
};

/* ---- LoRA target modules (nz_adapter_load) -------------------------------- */
enum {
	NZ_M_Q = 0,
	NZ_M_K = 1,
	NZ_M_V = 2,
	NZ_M_O = 3,
	NZ_M_GATE = 4,
	NZ_M_UP = 5,
	NZ_M_DOWN = 6,
	NZ_M_COUNT = 7
};

/* ---- rope types ----------------------------------------------------------- */
#define NZ_ROPE_DEFAULT 0
#define NZ_ROPE_LINEAR 1
#define NZ_ROPE_LLAMA3 2
#define NZ_ROPE_YARN 3
#define NZ_ROPE_LONGROPE 4 /* Phi-3's: each frequency divided by its own factor (rope_ext_factors) */

/* ---- activations of the gated MLP: down(act(gate(x)) * up(x)) ------------ */
#define NZ_ACT_SILU 0      /* x·sigmoid(x) (Llama, Mistral, Qwen, Phi-3) */
#define NZ_ACT_GELU_TANH 1 /* 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (Gemma's gelu_pytorch_tanh) */

/* ---- engine configuration --------------------------------------------------
 * Model fields come from config.json (Go resolves defaults and spellings);
 * sizing fields from the runtime's configuration. 0 in a sizing field means
 * "the backend's default". */
typedef struct nz_config {
	/* model */
	int64_t vocab_size;
	int64_t hidden_size;
	int64_t intermediate_size;
	int64_t num_layers;
	int64_t num_heads;
	int64_t num_kv_heads;
	int64_t head_dim;
	int64_t max_position;          /* context length in tokens */
	double rms_norm_eps;
	double rope_theta;
	int64_t rope_type;             /* NZ_ROPE_* */
	double rope_factor;            /* linear, llama3, yarn */
	double rope_low_freq_factor;   /* llama3 */
	double rope_high_freq_factor;  /* llama3 */
	int64_t rope_original_max_position; /* llama3, yarn */
	double rope_beta_fast;         /* yarn: rotations that bound extrapolation (HF default 32) */
	double rope_beta_slow;         /* yarn: rotations that bound interpolation (HF default 1) */
	double rope_attention_factor;  /* yarn: multiplies cos and sin (Go resolves mscale & co.) */
	int64_t rope_truncate;         /* yarn: 1 = floor/ceil the correction range (HF default) */
	int64_t sliding_window;        /* 0 = none; else a query at position p sees keys at p-window+1..p */
	int64_t sliding_window_from_layer; /* layers >= this use the window (Qwen2 max_window_layers) */
	int64_t tie_word_embeddings;   /* 1 = logits use EMBED */
	int64_t weight_dtype;          /* NZ_F32/F16/BF16: the dtype the engine keeps weights in;
	                                  NZ_Q8: int8 with a scale per row (CPU only) */
	/* Gemma 2/3 (0 everywhere gives the Llama computation) */
	double norm_weight_offset;     /* every RMSNorm (q/k head norms and the final one included)
	                                  multiplies by (offset + w) in f32: Gemma's 1 */
	double embed_scale;            /* embeddings are multiplied by this; 0 = 1. Gemma: √hidden_size
	                                  rounded to the checkpoint's dtype (Go resolves it) */
	int64_t hidden_act;            /* NZ_ACT_* */
	double attn_scale;             /* scores = q·k × attn_scale; 0 = 1/√head_dim
	                                  (Gemma: query_pre_attn_scalar^-½) */
	double attn_softcap;           /* 0 = none; else scores = cap·tanh(scores/cap) after the
	                                  scaling, before the causal/window mask (Gemma 2: 50) */
	double final_softcap;          /* 0 = none; else logits = cap·tanh(logits/cap) before
	                                  anything reads them: adjustments, masks, sampling,
	                                  logprobs and out_logits (Gemma 2: 30) */
	double rope_local_theta;       /* 0 = none; else the sliding-window layers use default
	                                  RoPE (no scaling, no attention factor) with this base
	                                  and the others rope_theta with rope_type
	                                  (Gemma 3's rope_local_base_freq) */
	const int32_t *layer_sliding;  /* [num_layers] or NULL: 1 where a layer uses sliding_window;
	                                  when set it replaces sliding_window_from_layer (Gemma's
	                                  alternating layers). Copied by nz_engine_create. */
	const float *rope_ext_factors;  /* longrope: [rotary_dim/2] factors, frequency j is
	                                  theta^(-2j/rotary_dim) / rope_ext_factors[j] (Go picks
	                                  the config's short_factor or long_factor); cos and sin
	                                  are multiplied by rope_attention_factor. Copied by
	                                  nz_engine_create; NULL for the other types. */
	int64_t rotary_dim;            /* the first rotary_dim dims of each q and k head are
	                                  rotated (rotate-half within them), the rest pass
	                                  unchanged; 0 = head_dim (Phi-4-mini: 96 of 128) */
	/* sizing */
	int64_t max_slots;             /* adapter slots */
	int64_t max_rank;              /* every slot is padded to this rank */
	int64_t kv_block_size;         /* tokens per KV block (default 16) */
	int64_t kv_num_blocks;         /* blocks in the pool; 0 = derive from kv_memory_bytes */
	int64_t kv_memory_bytes;       /* budget for the KV pool when kv_num_blocks is 0 */
	int64_t max_batch_tokens;      /* most tokens one step may carry */
	int64_t max_batch_seqs;        /* most sequences one step may carry */
	int64_t num_threads;           /* CPU: worker threads; 0 = every core */
	int64_t device_index;          /* CUDA device ordinal */
	int64_t kv_f32;                /* CPU: 1 keeps the KV cache in f32; 0 (and always on
	                                  CUDA) in the weight dtype, bf16 for NZ_Q8 weights */
	int64_t reserved[7];           /* zero */
} nz_config;

/* ---- one engine step -------------------------------------------------------
 * A step carries n_seqs sequences; sequence i brings seq_len[i] new tokens
 * (a prefill chunk, or 1 when decoding) whose first token sits at absolute
 * position seq_pos[i]. Its tokens are tokens[off_i .. off_i+seq_len[i]) with
 * off_i the sum of the earlier seq_len. Its KV cache lives in the blocks
 * block_table[i*max_blocks .. i*max_blocks+ceil((seq_pos[i]+seq_len[i])/kv_block_size)),
 * the Go scheduler's choice; the step writes the new tokens' keys and values
 * there and attends over positions 0..seq_pos[i]+seq_len[i]-1.
 *
 * seq_slot[i] is the adapter slot (or -1 for none) applied to the sequence.
 *
 * When seq_sample[i] is 1 the engine samples a token from the logits of the
 * sequence's last new token (otherwise the chunk only fills the cache):
 * temperature[i] 0 is greedy (argmax, lowest id on ties); otherwise softmax
 * of logits/temperature, then top_k[i] (0 = off), then top_p[i] (1 = off)
 * over tokens ordered by probability, then a draw from a generator seeded by
 * (seed[i], position of the sampled token) — so a sequence's draws do not
 * depend on what else is in the batch.
 *
 * Outputs, for sequences with seq_sample[i] = 1 (others left untouched):
 *   out_token[i]       the sampled token
 *   out_logprob[i]     its log-probability under log_softmax(logits)
 *                      (temperature 1, before any filter)
 *   out_top_token/out_top_logprob [i*n_top .. i*n_top+n_top)
 *                      the n_top most likely tokens and their
 *                      log-probabilities, most likely first (n_top <= 20)
 *   out_logits [i*vocab_size ..)  the raw logits (f32), when not NULL —
 *                      for tests and tooling, not for serving.
 *
 * Scoring (a prompt's logprobs): when score_target is not NULL, each new
 * token t with score_target[t] >= 0 is scored: the log-probability of the
 * token score_target[t] (the one that follows t) under log_softmax of t's
 * logits, at temperature 1, goes to out_score_logprob[t], and t's n_top
 * most likely tokens to out_score_top_token/out_score_top_logprob
 * [t*n_top ..), as for a sampled token. Tokens with -1 are left untouched.
 * Every sampled sequence and every scored token needs a row of logits: a
 * step holds at most max_batch_seqs of them.
 *
 * Logit adjustments (an API's logit_bias, presence and frequency
 * penalties, which the caller folds into one value per token): when
 * bias_off is not NULL, a sampled sequence i has bias_value[j] added to
 * the logit of token bias_token[j], for j in bias_off[i] .. bias_off[i+1),
 * before anything reads its logits — the draw, greedy's argmax,
 * out_logprob, the top logprobs and out_logits all see the adjusted
 * logits. bias_off[0] is 0 and the offsets never decrease; a sequence
 * names each token at most once; values are finite (-inf is not: a ban is
 * a large negative value). Entries of sequences that do not sample are
 * ignored; scored tokens are never adjusted.
 *
 * Token masks (constrained decoding: a grammar says which tokens may come
 * next): when seq_allow is not NULL, a sampled sequence i with
 * seq_allow[i] = r >= 0 may only draw tokens whose bits are set in row r of
 * allow — bit t%32 of word t/32 of the row's ceil(vocab_size/32) words —
 * every other token's logit becomes -inf after the adjustments, so the
 * logprobs are those of the allowed tokens alone (top logprobs past the
 * allowed tokens are -inf). A row allows at least one token; rows may be
 * shared; -1 masks nothing.
 */
typedef struct nz_batch {
	int64_t n_seqs;
	int64_t n_tokens;              /* sum of seq_len */
	const int32_t *tokens;         /* [n_tokens] */
	const int32_t *seq_len;        /* [n_seqs] */
	const int32_t *seq_pos;        /* [n_seqs] */
	const int32_t *seq_slot;       /* [n_seqs] */
	const int32_t *seq_sample;     /* [n_seqs] */
	const int32_t *block_table;    /* [n_seqs * max_blocks] */
	int64_t max_blocks;
	const float *temperature;      /* [n_seqs] */
	const float *top_p;            /* [n_seqs] */
	const int32_t *top_k;          /* [n_seqs] */
	const uint64_t *seed;          /* [n_seqs] */
	int64_t n_top;
	int32_t *out_token;            /* [n_seqs] */
	float *out_logprob;            /* [n_seqs] */
	int32_t *out_top_token;        /* [n_seqs * n_top] or NULL when n_top is 0 */
	float *out_top_logprob;        /* [n_seqs * n_top] or NULL when n_top is 0 */
	float *out_logits;             /* [n_seqs * vocab_size] or NULL */
	const int32_t *score_target;   /* [n_tokens] or NULL: the token to score after each token, or -1 */
	float *out_score_logprob;      /* [n_tokens]; needed with score_target */
	int32_t *out_score_top_token;  /* [n_tokens * n_top] or NULL when n_top is 0 */
	float *out_score_top_logprob;  /* [n_tokens * n_top] or NULL when n_top is 0 */
	const int32_t *bias_off;       /* [n_seqs + 1] or NULL: no adjustments */
	const int32_t *bias_token;     /* [bias_off[n_seqs]] */
	const float *bias_value;       /* [bias_off[n_seqs]] */
	const int32_t *seq_allow;      /* [n_seqs] or NULL: the row of allow masking sequence i, or -1 */
	const uint32_t *allow;         /* [n_allow * ceil(vocab_size/32)] */
	int64_t n_allow;               /* rows in allow */
} nz_batch;

/* nz_engine_info indices */
#define NZ_INFO_KV_BLOCK_SIZE 0
#define NZ_INFO_KV_NUM_BLOCKS 1
#define NZ_INFO_WEIGHT_BYTES 2   /* base weights held by the engine */
#define NZ_INFO_SLOT_BYTES 3     /* memory of all adapter slots */
#define NZ_INFO_KV_BYTES 4       /* memory of the KV pool */
#define NZ_INFO_MAX_SLOTS 5
#define NZ_INFO_MAX_RANK 6
#define NZ_INFO_THREADS 7        /* CPU worker threads (0 on CUDA) */
#define NZ_INFO_COUNT 8

/* nz_struct_size arguments */
#define NZ_STRUCT_CONFIG 0
#define NZ_STRUCT_BATCH 1

typedef struct nz_engine nz_engine;

/* NZ_ABI_VERSION of the library. Go refuses a library whose value differs. */
int32_t nz_abi_version(void);

/* sizeof the ABI structs (NZ_STRUCT_*), or -1 for an unknown one. */
int64_t nz_struct_size(int32_t which);

/* The message of the last failed call on this thread ("" if none). Owned by
 * the library; valid until the next call on this thread. */
const char *nz_last_error(void);

/* Copies a short description of the backend ("cpu avx512-bf16 2 threads",
 * "cuda NVIDIA H100 sm_90") into buf (NUL-terminated, truncated to n). */
int32_t nz_backend_name(char *buf, int64_t n);

/* Creates an engine for cfg. Weights are set next, then finalized. */
int32_t nz_engine_create(const nz_config *cfg, nz_engine **out);

/* Copies (converting to cfg->weight_dtype) one base-model tensor. shape has
 * ndim entries and must match the kind's shape; dtype is the source dtype.
 * Allowed after nz_engine_finalize too: it then replaces the tensor (the
 * classic merge-and-swap baseline of the benchmarks uses this). */
int32_t nz_engine_set_tensor(nz_engine *e, int32_t kind, int32_t layer, int32_t dtype,
                             const void *data, const int64_t *shape, int32_t ndim);

/* Checks every required tensor is set, allocates adapter slots and the KV
 * pool. Steps are refused until it succeeds. */
int32_t nz_engine_finalize(nz_engine *e);

/* Fills out[0..n) with NZ_INFO_* values (n <= NZ_INFO_COUNT). */
int32_t nz_engine_info(nz_engine *e, int64_t *out, int32_t n);

/* Frees the engine and everything it holds. NULL is allowed. */
void nz_engine_destroy(nz_engine *e);

/* Loads an adapter into slot (0 <= slot < max_slots), replacing what was
 * there: the slot is zeroed, then for each of the n entries j the module
 * module[j] of layer layer[j] gets
 *   A = a[j]: [rank[j], in_features]  (PEFT lora_A, dtype a_dtype[j])
 *   B = b[j]: [out_features, rank[j]] (PEFT lora_B, dtype b_dtype[j])
 * stored rank-padded to max_rank with B scaled by scale[j] (alpha/r or
 * alpha/sqrt(r), resolved by Go). Modules not listed contribute nothing.
 * rank[j] must be in 1..max_rank. The base weights are never modified. On
 * failure the slot is left empty. */
int32_t nz_adapter_load(nz_engine *e, int32_t slot, int32_t n,
                        const int32_t *layer, const int32_t *module, const int32_t *rank,
                        const float *scale,
                        const int32_t *a_dtype, const void *const *a,
                        const int32_t *b_dtype, const void *const *b);

/* Empties a slot. */
int32_t nz_adapter_clear(nz_engine *e, int32_t slot);

/* Runs one step (see nz_batch). */
int32_t nz_step(nz_engine *e, const nz_batch *batch);

/* Tooling: measures the memory read bandwidth the backend's own threads
 * reach over a buffer of `bytes` bytes, read `iters` times (host memory on
 * CPU, device memory on CUDA), and stores it in *out_bytes_per_sec. The
 * benchmarks divide the engine's weight-read rate by this figure. */
int32_t nz_bench_read_bandwidth(int64_t bytes, int32_t iters, int32_t num_threads,
                                double *out_bytes_per_sec);

#ifdef __cplusplus
}
#endif
#endif /* NOZZLE_ENGINE_H */
