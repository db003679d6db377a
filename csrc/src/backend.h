/*
 * backend.h — the internal interface every engine backend implements.
 *
 * api.c owns the public nz_* functions. It validates every argument the
 * same way for all backends (config, tensor shapes, call order, adapter
 * entries, batches and their block tables), resolves the sizing defaults,
 * keeps track of which tensors were set, derives a step plan (tokens'
 * sequences and positions, adapter segments, the sampled sequences) and
 * then calls the backend through nz_backend_ops. A backend therefore
 * receives only valid arguments; it reports its own failures (memory,
 * device) with nz_error() and a status.
 *
 * Each backend library defines nz_default_backend() once: the CPU library
 * in cpu_engine.c, the CUDA library in its .cu file. The non-cpu_ files of
 * csrc/src (api.c, common.c) are shared by both.
 */
#ifndef NZ_BACKEND_H
#define NZ_BACKEND_H

#include "common.h"
#include "nozzle_engine.h"

/* One validated entry of nz_adapter_load. */
typedef struct nz_lora_entry {
	int32_t layer;
	int32_t module;  /* NZ_M_* */
	int32_t rank;    /* 1..max_rank */
	int32_t a_dtype; /* NZ_F32/F16/BF16 */
	int32_t b_dtype;
	float scale;     /* folded into B */
	const void *a;   /* [rank, in]  (PEFT lora_A) */
	const void *b;   /* [out, rank] (PEFT lora_B) */
} nz_lora_entry;

/* What api.c derives from a validated batch, for the backend's step.
 * Arrays live in api.c's engine and stay valid during the step call. */
typedef struct nz_step_plan {
	int64_t n_tokens;
	int64_t n_seqs;
	const int32_t *seq_off;   /* [n_seqs+1] first token of each sequence */
	const int32_t *tok_seq;   /* [n_tokens] sequence of each token */
	const int32_t *tok_pos;   /* [n_tokens] absolute position of each token */
	/* Adapter segments: the sequences with a slot >= 0 grouped by slot
	 * (ascending slot, then batch order). Segment g has slot seg_slot[g]
	 * and the sequences seg_seqs[seg_start[g] .. seg_start[g+1]). When
	 * n_segs is 0 the step needs no LoRA work at all. */
	int32_t n_segs;
	const int32_t *seg_slot;  /* [n_segs] */
	const int32_t *seg_start; /* [n_segs+1] */
	const int32_t *seg_seqs;  /* [seg_start[n_segs]] */
	/* The rows of logits the step computes: first the n_sample sequences
	 * to sample (seq_sample = 1), in batch order, then the tokens to score
	 * (score_target >= 0), in token order; n_rows <= max_batch_seqs. Row i
	 * takes the logits of token sample_tok[i] of sequence sample_seq[i];
	 * a sampled row draws its token (row_force[i] is -1), a scored row
	 * takes row_force[i] as its token. Results go where nz_row_dst says. */
	int32_t n_sample;
	int32_t n_rows;
	const int32_t *sample_seq; /* [n_rows] */
	const int32_t *sample_tok; /* [n_rows] */
	const int32_t *row_force;  /* [n_rows] */
} nz_step_plan;

/* Where row i's results go: a sampled row's to its sequence's out_token,
 * out_logprob and top entries; a scored row's to its token's score
 * outputs (the token itself to a scratch place, *tok_scratch). */
static inline void nz_row_dst(const nz_batch *b, const nz_step_plan *p, int64_t i, int32_t *tok_scratch,
                              int32_t **tok, float **lp, int32_t **top_tok, float **top_lp)
{
	int64_t n_top = b->n_top;
	if (i < p->n_sample) {
		int64_t s = p->sample_seq[i];
		*tok = b->out_token + s;
		*lp = b->out_logprob + s;
		*top_tok = n_top ? b->out_top_token + s * n_top : NULL;
		*top_lp = n_top ? b->out_top_logprob + s * n_top : NULL;
	} else {
		int64_t t = p->sample_tok[i];
		*tok = tok_scratch;
		*lp = b->out_score_logprob + t;
		*top_tok = n_top ? b->out_score_top_token + t * n_top : NULL;
		*top_lp = n_top ? b->out_score_top_logprob + t * n_top : NULL;
	}
}

typedef struct nz_backend_ops {
	/* Short description for nz_backend_name ("cpu avx512 2 threads"). */
	void (*describe)(char *buf, size_t n);
	/* cfg's model fields are valid and its sizing defaults resolved, except
	 * kv_num_blocks (0 means: derive from kv_memory_bytes, or when that is 0
	 * too, the backend's default) and num_threads (0 means: the backend's
	 * default); the backend resolves both in place. */
	int32_t (*create)(nz_config *cfg, void **impl);
	/* Copies a tensor whose kind, layer and shape api.c checked; n is its
	 * element count. Called before and after finalize (then it replaces). */
	int32_t (*set_tensor)(void *impl, int32_t kind, int32_t layer, int32_t dtype, const void *data,
	                      int64_t n);
	/* Every required tensor is set: allocate slots, KV pool and scratch. */
	int32_t (*finalize)(void *impl);
	/* Fills out[0 .. NZ_INFO_COUNT). */
	void (*info)(void *impl, int64_t *out);
	/* slot is valid, entries validated (ranks, layers, distinct modules).
	 * On failure the slot must be left empty. */
	int32_t (*adapter_load)(void *impl, int32_t slot, int32_t n, const nz_lora_entry *entries);
	int32_t (*adapter_clear)(void *impl, int32_t slot);
	/* The batch was validated (ranges, block tables, sampling parameters);
	 * plan is derived from it. */
	int32_t (*step)(void *impl, const nz_batch *batch, const nz_step_plan *plan);
	void (*destroy)(void *impl);
	/* bytes >= 4096, iters >= 1, num_threads >= 0 (0 = backend default). */
	int32_t (*bench_read_bandwidth)(int64_t bytes, int32_t iters, int32_t num_threads, double *out);
} nz_backend_ops;

const nz_backend_ops *nz_default_backend(void);

/* Sizing defaults api.c applies before create (0 in nz_config). */
#define NZ_DEFAULT_MAX_SLOTS 8
#define NZ_DEFAULT_MAX_RANK 16
#define NZ_DEFAULT_KV_BLOCK_SIZE 16
#define NZ_DEFAULT_MAX_BATCH_TOKENS 2048
#define NZ_DEFAULT_MAX_BATCH_SEQS 256
/* A backend's KV budget when kv_num_blocks and kv_memory_bytes are both 0:
 * enough for max_batch_seqs full contexts, at most this many bytes. */
#define NZ_DEFAULT_KV_MEMORY_CAP (1LL << 30)

#endif /* NZ_BACKEND_H */
