/*
 * cuda_engine.cu — the CUDA backend: nz_backend_ops on one GPU.
 *
 * Memory (all on the device unless said):
 *  - base weights in cfg.weight_dtype (bf16 or f16 as the checkpoint; f32
 *    models stay f32 and their GEMMs run in plain f32, no TF32), row-major
 *    [out, in] as in the checkpoint, with q|k|v packed into one
 *    [qd+2·kvd, H] matrix and gate|up into one [2I, H] matrix, so a layer
 *    runs four GEMMs; norm weights and biases in f32 (rounded through the
 *    weight dtype first, as the CPU backend holds them; a norm weight w
 *    is kept as norm_weight_offset + w, added in f32: Gemma's 1 + w);
 *  - adapter slots: one region of max_slots × slot_stride elements; a slot
 *    holds per layer and module A [R][in] (PEFT lora_A) and B [out][R]
 *    (PEFT lora_B · scale, folded in f32 and rounded once), R = max_rank,
 *    every block 16-byte aligned; a rank table [slot][layer][module] says
 *    which rows and columns are real (0 = module absent);
 *  - KV cache in the weight dtype: per layer a K and a V pool of
 *    [kv_num_blocks][kv_heads][block_size][head_dim];
 *  - scratch for max_batch_tokens tokens: residual stream h (f32), GEMM
 *    outputs y (f32), queries (f32), GEMM inputs (weight dtype), LoRA
 *    intermediates (f32), logits of max_batch_seqs rows (f32).
 *
 * Streams: steps run on the engine's stream. In a step with adapters, the
 * LoRA shrink of each projection group (into a buffer of its own) runs on
 * a second stream beside the base GEMM, forked after the group's input is
 * written and joined before the kernel that consumes the GEMM's output,
 * which does the expand as it reads it (lora_out.cuh), so the small,
 * latency-bound shrink overlaps the bandwidth-bound GEMM and the expand
 * needs no kernel of its own. Adapter uploads run on a third stream from pinned
 * staging buffers (the caller's data is converted into
 * them during nz_adapter_load), and the next step waits on the upload's
 * event, so an upload overlaps whatever the host does before that step.
 * Per-step metadata (tokens, positions, block tables, LoRA work items,
 * sampling parameters) is laid out in one pinned buffer and sent with one
 * copy; only the sampled tokens, logprobs and top logprobs come back
 * (and the logits when the caller asks for them).
 *
 * Decode-only steps (every sequence brings one token) run as CUDA graphs,
 * captured once per (sequences, sampled sequences, LoRA or not) and
 * replayed: every value that changes between such steps is read by the
 * kernels from the metadata buffer, whose layout depends only on the key.
 *
 * Every entry point selects the engine's device first (Go may call from
 * any OS thread). CUDA and cuBLAS failures become NZ_ERR_DEVICE with the
 * CUDA error string; a failed device allocation is NZ_ERR_OOM.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <new>
#include <thread>
#include <vector>

extern "C" {
#include "backend.h"
#include "common.h"
#include "cpu_pool.h"
}

#include "cuda_kernels.h"

int nz_cuda_pdl = 0; /* see NZ_LAUNCH_PDL (cuda_common.cuh) */

namespace {

/* ---------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------- */

int32_t cuda_fail(cudaError_t err, const char *what)
{
	cudaGetLastError(); /* clear a non-sticky error */
	if (err == cudaErrorMemoryAllocation)
		return nz_error(NZ_ERR_OOM, "%s: out of device memory (%s)", what, cudaGetErrorString(err));
	return nz_error(NZ_ERR_DEVICE, "%s: CUDA error %d: %s", what, (int)err, cudaGetErrorString(err));
}

int32_t blas_fail(cublasStatus_t st, const char *what)
{
	cudaGetLastError();
	return nz_error(NZ_ERR_DEVICE, "%s: cuBLAS error %d: %s", what, (int)st, cublasGetStatusString(st));
}

#define CUDA_TRY(call, what)                                                                                           \
	do {                                                                                                               \
		cudaError_t nz_err_ = (call);                                                                                  \
		if (nz_err_ != cudaSuccess)                                                                                    \
			return cuda_fail(nz_err_, what);                                                                           \
	} while (0)

#define NZ_TRY(call)                                                                                                   \
	do {                                                                                                               \
		int32_t nz_st_ = (call);                                                                                       \
		if (nz_st_ != NZ_OK)                                                                                           \
			return nz_st_;                                                                                             \
	} while (0)

int32_t dev_alloc(void **p, size_t bytes, const char *what)
{
	*p = NULL;
	cudaError_t err = cudaMalloc(p, bytes ? bytes : 16);
	if (err == cudaSuccess)
		return NZ_OK;
	*p = NULL;
	cudaGetLastError();
	if (err == cudaErrorMemoryAllocation) {
		size_t fr = 0, tot = 0;
		cudaMemGetInfo(&fr, &tot);
		return nz_error(NZ_ERR_OOM, "%s: out of device memory allocating %zu bytes (%zu of %zu bytes free)", what,
		                bytes, fr, tot);
	}
	return cuda_fail(err, what);
}

int32_t host_alloc(void **p, size_t bytes, const char *what)
{
	*p = NULL;
	cudaError_t err = cudaMallocHost(p, bytes ? bytes : 16);
	if (err == cudaSuccess)
		return NZ_OK;
	*p = NULL;
	cudaGetLastError();
	return nz_error(NZ_ERR_OOM, "%s: cannot allocate %zu bytes of pinned host memory (%s)", what, bytes,
	                cudaGetErrorString(err));
}

/* Runs f(i) for i in [0, n) on the engine's host worker pool (the CPU
 * backend's: threads made once, asleep between jobs), or on this thread
 * alone when n is 1 or the pool is NULL. */
template <class F> void parallel_for(cpu_pool *pool, int64_t n, F f)
{
	if (!pool || n <= 1) {
		for (int64_t i = 0; i < n; i++)
			f(i);
		return;
	}
	cpu_pool_run(
	    pool, n, [](void *ctx, int64_t i, int) { (*static_cast<F *>(ctx))(i); }, &f);
}

int host_threads()
{
	unsigned hc = std::thread::hardware_concurrency();
	return hc == 0 ? 1 : (int)std::min(hc, 16u);
}

int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

/* ---------------------------------------------------------------------------
 * The engine
 * ------------------------------------------------------------------------- */

struct layer_w {
	void *wqkv, *wo, *wgu, *wdown; /* weight dtype */
	float *bqkv, *bo, *bgu, *bdown; /* f32, NULL when the model has none */
	float *attn_norm, *ffn_norm;
	float *q_norm, *k_norm; /* f32 [hd], NULL when the model has none (Qwen3 has them) */
	float *post_attn_norm, *post_ffn_norm; /* f32 [H], NULL when the model has none (Gemma 2/3 have them) */
};

/* Device pointers into the step metadata (see meta_layout). */
struct meta_ptrs {
	int32_t *scalars, *tokens, *tok_pos, *tok_seq, *tok_lora, *attn_items, *lora_items, *lora_tok, *bt;
	nz_sample_in *samples;
};

struct meta_layout {
	size_t scalars, tokens, tok_pos, tok_seq, tok_lora, attn_items, lora_items, lora_tok, samples, bt, bias, mask_rows,
	    mask, end;
};

struct graph_entry {
	int64_t seqs, samples;
	int lora; /* 0: no adapters; 1: fewer LoRA work items than half the tokens; 2: more (lora_few) */
	int adjust; /* 1: logit adjustments; 2: token masks */
	cudaGraphExec_t exec; /* NULL: capture failed, run eagerly */
	uint64_t used;
};

const int kMaxGraphs = 48;
const int64_t kAttnParts = 4096; /* (item, KV head, split) partials of split-K attention */
const int kBiasGrid = 32;         /* blocks of the logit adjustments in a graph (they walk them grid-stride) */
const int kMaskGrid = 256;        /* blocks of the token masks in a graph (likewise) */
const size_t kTensorStage = 32u << 20; /* bytes per half of the weight staging buffer */
const size_t kBlasWorkspace = 32u << 20;
/* The LoRA shrink's partial sums: lv holds 3 modules × lv_rows × max_rank
 * f32, lv_rows = max(max_batch_tokens, kLoraSplitRows) (tokens × splits). */
const int64_t kLoraSplitRows = 2048;
const int64_t kLoraMaxSplits = 16;
const int kLoraFoldDefault = 1 | 2 | 8; /* cuda_engine.lora_fold */

struct cuda_engine {
	nz_config cfg;
	int dev;
	cudaDeviceProp prop;
	cudaStream_t stream, side, lstream;
	cudaEvent_t ev_fork, ev_join; /* the LoRA branch's fork and join */
	cublasHandle_t blas;
	void *blas_ws;
	int32_t wdt;
	size_t wsz;
	cudaDataType wtype;
	int64_t H, I, V, L, nh, nkv, hd, qd, kvd, qkvd, bs, nb, R, slots, T, S, lv_rows;
	int64_t rh; /* rotary_dim / 2: the pairs RoPE rotates in a head */
	int64_t mod_in[NZ_M_COUNT], mod_out[NZ_M_COUNT];
	float eps;

	void *embed, *lm_head;
	float *final_norm, *inv_freq;
	float rope_scale; /* nz_rope_attention_factor: multiplies cos and sin */
	/* Gemma's options (nz_config), resolved: 1 for no embedding scale, the
	 * attention scale (1/√hd by default), 0 for no soft-cap; inv_local the
	 * sliding layers' RoPE frequencies (NULL: rope_local_theta unset), whose
	 * cos|sin go to cs_local */
	float norm_offset, embed_scale, attn_scale, attn_softcap, final_softcap;
	int hidden_act;
	int inv_local_on;
	float *inv_local;
	std::vector<layer_w> layers;
	int64_t weight_bytes;

	/* adapters */
	void *slot_mem;
	int64_t slot_stride; /* elements per slot */
	std::vector<int64_t> a_off, b_off; /* [L][NZ_M_COUNT] */
	int32_t *rank_dev;
	std::vector<int32_t> rank_host; /* [slots][L][NZ_M_COUNT] */
	void *stage[2];
	cudaEvent_t stage_ev[2];
	int stage_next;
	cudaEvent_t upload_ev;
	int upload_pending;
	int64_t slot_bytes;

	/* weight upload staging (two halves) */
	void *tstage;
	cudaEvent_t tstage_ev[2];

	/* KV cache */
	void *kv;
	int64_t kv_bytes, kv_pool_elems; /* one K (or V) pool of one layer */

	/* scratch */
	float *h, *y, *yl, *q, *cs, *cs_local, *lv, *logits, *attn_o, *attn_ml;
	int *attn_count;
	void *xin, *xs;
	int64_t ymax, xmax;
	nz_sample_out *d_out, *h_out;

	/* step metadata */
	unsigned char *h_meta, *d_meta;
	size_t meta_cap;
	int qt, rows_max;

	std::vector<graph_entry> graphs;
	uint64_t graph_clock;
	int use_graphs;
	int finalized;

	/* decode steps without adapters: the fused GEMVs (nz_k_gemv_fused) */
	int fuse;          /* NOZZLE_CUDA_FUSE=0 turns them off */
	/* and with adapters: the fused GEMVs do the LoRA too (nz_gemv_lora;
	 * NOZZLE_CUDA_FUSE_LORA=0: such steps take the unfused kernels) */
	int fuse_lora;
	int32_t *lora_sync; /* their shrink blocks' counters [L][4], zeroed by each step */
	/* projection groups (bits: 1 q/k/v, 2 o, 4 gate/up, 8 down) whose LoRA
	 * expand the consuming kernel does (lora_out.cuh); the others run the
	 * expand kernel into yl. NOZZLE_CUDA_LORA_FOLD sets it; the default,
	 * all but gate/up, was the fastest on an H200: the SiLU kernel reading
	 * B for 2·I features per token took longer than the expand kernel
	 * beside the gate/up GEMM (DEVELOPERS.md). It is also the fastest
	 * at batch 1, where a consumer has few blocks. */
	int lora_fold;
	/* where the LoRA shrinks (and expand kernels) run: 1 (default) on
	 * lstream beside the base GEMM, 2 the same with lstream at the
	 * device's highest priority (its blocks go first where both wait for
	 * SMs), 0 on the engine's stream after the GEMM's input
	 * (NOZZLE_CUDA_LORA_FORK; 0 and 2 are for measuring the overlap). */
	int lora_fork_mode;
	/* SMs the cuBLAS GEMMs of a step with adapters leave to the LoRA
	 * kernels forked beside them (NOZZLE_CUDA_LORA_SMS; 0, the default:
	 * none), and the SM count target set on the handle now (0: all) */
	int lora_sms, blas_sms;
	/* key tiles a split of decode attention takes at least
	 * (NOZZLE_CUDA_ATTN_MIN_TILES, default 1) */
	int attn_min_tiles;
	size_t gemv_smem;  /* dynamic shared memory they may use */
	double *part;      /* sums of squares [NZ_GEMV_MAX_T][nz_gemv_fused_parts(H)] */
	nz_sample_part *spart; /* the sampler's chunks [S][nz_sample_parts(V)] */
	cpu_pool *pool;        /* host threads for weight and adapter conversions */
};

/* The integer in environment variable name (strtol, any base), or def
 * when it is unset or empty: the NOZZLE_CUDA_* settings. */
long env_long(const char *name, long def)
{
	const char *v = getenv(name);
	return v && *v ? strtol(v, NULL, 0) : def;
}

/* Whether environment variable name is set to exactly value. */
bool env_is(const char *name, const char *value)
{
	const char *v = getenv(name);
	return v && strcmp(v, value) == 0;
}

int32_t select_device(cuda_engine *e, const char *what)
{
	CUDA_TRY(cudaSetDevice(e->dev), what);
	return NZ_OK;
}

/* Scratch bytes for max_batch_tokens T and max_batch_seqs S. */
int64_t scratch_bytes(const cuda_engine *e)
{
	int64_t T = e->T, S = e->S;
	return 4 * T * (e->H + 2 * e->ymax + e->qd + (e->inv_local_on ? 2 : 1) * e->hd) + 4 * 3 * e->lv_rows * e->R +
	       (int64_t)e->wsz * (T * e->xmax + S * e->H) +
	       4 * S * e->V + 2 * S * (int64_t)sizeof(nz_sample_out) + (int64_t)kBlasWorkspace +
	       4 * kAttnParts * e->rows_max * (e->hd + 2) + 8 * NZ_GEMV_MAX_T * nz_gemv_fused_parts(e->H) + 4 * 4 * e->L +
	       (int64_t)sizeof(nz_sample_part) * S * nz_sample_parts(e->V);
}

/* The weights' device bytes at most, before they are set: every optional
 * f32 vector counted (biases, Qwen3's and Gemma 3's head norms, Gemma's
 * post norms). */
int64_t weight_bytes_estimate(const cuda_engine *e)
{
	int64_t per_layer = e->qkvd * e->H + e->H * e->qd + 2 * e->I * e->H + e->H * e->I;
	int64_t mats = e->V * e->H * (e->cfg.tie_word_embeddings ? 1 : 2) + e->L * per_layer;
	int64_t vecs = e->H + e->L * (2 * e->H + e->qkvd + e->H + 2 * e->I + e->H + 2 * e->hd + 2 * e->H);
	return mats * (int64_t)e->wsz + 4 * vecs;
}

/* ---------------------------------------------------------------------------
 * Describe, create, destroy
 * ------------------------------------------------------------------------- */

void cuda_describe(char *buf, size_t n)
{
	int count = 0;
	cudaError_t err = cudaGetDeviceCount(&count);
	if (err != cudaSuccess || count == 0) {
		cudaGetLastError();
		snprintf(buf, n, "cuda (no device: %s)", err != cudaSuccess ? cudaGetErrorString(err) : "none found");
		return;
	}
	cudaDeviceProp p;
	if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
		cudaGetLastError();
		snprintf(buf, n, "cuda (device 0 unreadable)");
		return;
	}
	snprintf(buf, n, "cuda %s sm_%d%d", p.name, p.major, p.minor);
}

void cuda_destroy(void *impl)
{
	cuda_engine *e = (cuda_engine *)impl;
	if (!e)
		return;
	cudaSetDevice(e->dev);
	if (e->stream)
		cudaStreamSynchronize(e->stream);
	if (e->side)
		cudaStreamSynchronize(e->side);
	if (e->lstream)
		cudaStreamSynchronize(e->lstream);
	for (auto &g : e->graphs)
		if (g.exec)
			cudaGraphExecDestroy(g.exec);
	cudaFree(e->embed);
	cudaFree(e->lm_head);
	cudaFree(e->final_norm);
	cudaFree(e->inv_freq);
	cudaFree(e->inv_local);
	for (auto &ly : e->layers) {
		void *ps[] = {ly.wqkv,   ly.wo,        ly.wgu,      ly.wdown,  ly.bqkv,   ly.bo,          ly.bgu,
		              ly.bdown,  ly.attn_norm, ly.ffn_norm, ly.q_norm, ly.k_norm, ly.post_attn_norm, ly.post_ffn_norm};
		for (void *p : ps)
			cudaFree(p);
	}
	cudaFree(e->slot_mem);
	cudaFree(e->rank_dev);
	cudaFree(e->kv);
	void *scratch[] = {e->h,       e->y,       e->yl,      e->q,       e->cs,      e->cs_local,   e->lv,      e->logits,
	                   e->xin,     e->xs,      e->d_out,   e->d_meta,  e->blas_ws,    e->attn_o,
	                   e->attn_ml, e->attn_count, e->part, e->spart, e->lora_sync};
	for (void *p : scratch)
		cudaFree(p);
	cudaFreeHost(e->stage[0]);
	cudaFreeHost(e->stage[1]);
	cudaFreeHost(e->tstage);
	cudaFreeHost(e->h_out);
	cudaFreeHost(e->h_meta);
	if (e->pool)
		cpu_pool_destroy(e->pool);
	cudaEvent_t evs[] = {e->stage_ev[0],  e->stage_ev[1], e->upload_ev, e->tstage_ev[0],
	                     e->tstage_ev[1], e->ev_fork,     e->ev_join};
	for (cudaEvent_t ev : evs)
		if (ev)
			cudaEventDestroy(ev);
	if (e->blas)
		cublasDestroy(e->blas);
	if (e->stream)
		cudaStreamDestroy(e->stream);
	if (e->side)
		cudaStreamDestroy(e->side);
	if (e->lstream)
		cudaStreamDestroy(e->lstream);
	cudaGetLastError();
	delete e;
}

int32_t cuda_create(nz_config *c, void **out)
{
	if (c->weight_dtype == NZ_Q8)
		return nz_error(NZ_ERR_UNSUPPORTED, "nz_engine_create: int8 weights (weight_dtype NZ_Q8) are served by the CPU "
		                                    "backend only; the CUDA backend keeps weights in bf16, f16 or f32");
	if (c->kv_f32)
		return nz_error(NZ_ERR_UNSUPPORTED, "nz_engine_create: kv_f32 is the CPU backend's; the CUDA backend keeps the "
		                                    "KV cache in the weight dtype");
	int count = 0;
	cudaError_t err = cudaGetDeviceCount(&count);
	if (err != cudaSuccess || count == 0) {
		cudaGetLastError();
		return nz_error(NZ_ERR_DEVICE, "no CUDA device: %s",
		                err != cudaSuccess ? cudaGetErrorString(err) : "the driver reports no device");
	}
	if (c->device_index >= count)
		return nz_error(NZ_ERR_INVALID, "nz_engine_create: device_index %lld is out of range 0..%d",
		                (long long)c->device_index, count - 1);
	cuda_engine *e = new (std::nothrow) cuda_engine();
	if (!e)
		return nz_oom("nz_engine_create", sizeof(cuda_engine));
	e->dev = (int)c->device_index;
	int32_t st = NZ_OK;
#define FAIL(x)                                                                                                        \
	do {                                                                                                               \
		st = (x);                                                                                                      \
		if (st != NZ_OK) {                                                                                             \
			cuda_destroy(e);                                                                                           \
			return st;                                                                                                 \
		}                                                                                                              \
	} while (0)
#define FAIL_CUDA(call, what) FAIL(((err = (call)) != cudaSuccess) ? cuda_fail(err, what) : NZ_OK)
	FAIL_CUDA(cudaSetDevice(e->dev), "nz_engine_create: cudaSetDevice");
	FAIL_CUDA(cudaGetDeviceProperties(&e->prop, e->dev), "nz_engine_create: cudaGetDeviceProperties");
	if (e->prop.major < 8)
		FAIL(nz_error(NZ_ERR_UNSUPPORTED, "nz_engine_create: %s is sm_%d%d; the CUDA backend needs sm_80 or newer",
		              e->prop.name, e->prop.major, e->prop.minor));
	nz_cuda_pdl = e->prop.major >= 9 && env_is("NOZZLE_CUDA_PDL", "1"); /* opt-in: see NZ_LAUNCH_PDL */
	FAIL_CUDA(cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking), "nz_engine_create: stream");
	FAIL_CUDA(cudaStreamCreateWithFlags(&e->side, cudaStreamNonBlocking), "nz_engine_create: stream");
	{
		e->lora_fork_mode = (int)env_long("NOZZLE_CUDA_LORA_FORK", 1);
		e->lora_sms = std::max(0, (int)env_long("NOZZLE_CUDA_LORA_SMS", 0));
		e->attn_min_tiles = std::max(1, (int)env_long("NOZZLE_CUDA_ATTN_MIN_TILES", 1));
		int least = 0, greatest = 0;
		if (e->lora_fork_mode == 2)
			FAIL_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest), "nz_engine_create: stream priorities");
		FAIL_CUDA(cudaStreamCreateWithPriority(&e->lstream, cudaStreamNonBlocking, e->lora_fork_mode == 2 ? greatest : 0),
		          "nz_engine_create: stream");
	}
	FAIL_CUDA(cudaEventCreateWithFlags(&e->ev_fork, cudaEventDisableTiming), "nz_engine_create: event");
	FAIL_CUDA(cudaEventCreateWithFlags(&e->ev_join, cudaEventDisableTiming), "nz_engine_create: event");
	for (int i = 0; i < 2; i++) {
		FAIL_CUDA(cudaEventCreateWithFlags(&e->stage_ev[i], cudaEventDisableTiming), "nz_engine_create: event");
		FAIL_CUDA(cudaEventCreateWithFlags(&e->tstage_ev[i], cudaEventDisableTiming), "nz_engine_create: event");
	}
	FAIL_CUDA(cudaEventCreateWithFlags(&e->upload_ev, cudaEventDisableTiming), "nz_engine_create: event");
	cublasStatus_t bst = cublasCreate(&e->blas);
	if (bst != CUBLAS_STATUS_SUCCESS) {
		e->blas = NULL;
		FAIL(blas_fail(bst, "nz_engine_create: cublasCreate"));
	}
	FAIL(dev_alloc(&e->blas_ws, kBlasWorkspace, "nz_engine_create: cuBLAS workspace"));
	if ((bst = cublasSetStream(e->blas, e->stream)) != CUBLAS_STATUS_SUCCESS ||
	    (bst = cublasSetWorkspace(e->blas, e->blas_ws, kBlasWorkspace)) != CUBLAS_STATUS_SUCCESS ||
	    (bst = cublasSetMathMode(e->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS)
		FAIL(blas_fail(bst, "nz_engine_create: cuBLAS setup"));

	e->wdt = (int32_t)c->weight_dtype;
	e->wsz = nz_dtype_size(e->wdt);
	e->wtype = e->wdt == NZ_BF16 ? CUDA_R_16BF : e->wdt == NZ_F16 ? CUDA_R_16F : CUDA_R_32F;
	e->H = c->hidden_size, e->I = c->intermediate_size, e->V = c->vocab_size, e->L = c->num_layers;
	e->nh = c->num_heads, e->nkv = c->num_kv_heads, e->hd = c->head_dim;
	e->rh = nz_rotary_dim(c) / 2;
	e->qd = e->nh * e->hd, e->kvd = e->nkv * e->hd, e->qkvd = e->qd + 2 * e->kvd;
	e->bs = c->kv_block_size, e->R = c->max_rank, e->slots = c->max_slots;
	if (e->R > NZ_LORA_OUT_MAX_R)
		FAIL(nz_error(NZ_ERR_UNSUPPORTED, "nz_engine_create: max_rank %lld: the CUDA backend serves ranks up to %d",
		              (long long)e->R, NZ_LORA_OUT_MAX_R));
	e->T = c->max_batch_tokens, e->S = c->max_batch_seqs;
	e->lv_rows = std::max<int64_t>(e->T, kLoraSplitRows);
	e->eps = (float)c->rms_norm_eps;
	e->norm_offset = (float)c->norm_weight_offset;
	e->embed_scale = c->embed_scale != 0 ? (float)c->embed_scale : 1.0f;
	e->hidden_act = (int)c->hidden_act;
	e->attn_scale = c->attn_scale != 0 ? (float)c->attn_scale : 1.0f / sqrtf((float)e->hd);
	e->attn_softcap = c->attn_softcap > 0 ? (float)c->attn_softcap : 0.0f;
	e->final_softcap = c->final_softcap > 0 ? (float)c->final_softcap : 0.0f;
	e->inv_local_on = c->rope_local_theta > 0;
	e->ymax = std::max(std::max(e->qkvd, 2 * e->I), e->H);
	e->xmax = std::max(std::max(e->H, e->qd), e->I);
	for (int m = 0; m < NZ_M_COUNT; m++)
		nz_module_dims(c, m, &e->mod_in[m], &e->mod_out[m]);
	if (e->qkvd > INT32_MAX / 2 || 2 * e->I > INT32_MAX / 2 || e->V > INT32_MAX / 2)
		FAIL(nz_error(NZ_ERR_UNSUPPORTED, "nz_engine_create: a projection is too large for the CUDA backend"));

	/* adapter slot layout: per layer and module, A [R][in] then B [out][R] */
	e->a_off.resize((size_t)(e->L * NZ_M_COUNT));
	e->b_off.resize((size_t)(e->L * NZ_M_COUNT));
	int64_t off = 0;
	for (int64_t l = 0; l < e->L; l++)
		for (int m = 0; m < NZ_M_COUNT; m++) {
			e->a_off[(size_t)(l * NZ_M_COUNT + m)] = off;
			off = align_up(off + e->R * e->mod_in[m], 16);
			e->b_off[(size_t)(l * NZ_M_COUNT + m)] = off;
			off = align_up(off + e->mod_out[m] * e->R, 16);
		}
	e->slot_stride = align_up(off, 64);
	if ((double)e->slots * (double)e->slot_stride * (double)e->wsz > 0x1p50)
		FAIL(nz_error(NZ_ERR_OOM, "nz_engine_create: %lld adapter slots of rank %lld need %.0f bytes", (long long)e->slots,
		              (long long)e->R, (double)e->slots * (double)e->slot_stride * (double)e->wsz));
	e->slot_bytes = e->slots * e->slot_stride * (int64_t)e->wsz;

	/* attention work items: QT tokens of a sequence share each K/V tile */
	int64_t nrep = e->nh / e->nkv;
	e->qt = (int)std::max<int64_t>(1, std::min<int64_t>(16, 16 / nrep));
	e->rows_max = (int)(e->qt * nrep);
	size_t optin = e->prop.sharedMemPerBlockOptin ? e->prop.sharedMemPerBlockOptin : e->prop.sharedMemPerBlock;
	while (e->qt > 1 && nz_attention_smem(e->rows_max, (int)e->hd) > optin) {
		e->qt = 1;
		e->rows_max = (int)nrep;
	}
	size_t smem = nz_attention_smem(e->rows_max, (int)e->hd);
	if (smem > optin)
		FAIL(nz_error(NZ_ERR_UNSUPPORTED,
		              "nz_engine_create: attention with head_dim %lld and %lld query heads per KV head needs %zu bytes "
		              "of shared memory; %s allows %zu",
		              (long long)e->hd, (long long)nrep, smem, e->prop.name, optin));
	FAIL_CUDA(nz_attention_setup(e->wdt, smem), "nz_engine_create: attention setup");
	{
		e->fuse = !env_is("NOZZLE_CUDA_FUSE", "0") && e->H % 8 == 0 && e->qd % 8 == 0 && e->I % 8 == 0;
		e->gemv_smem = std::min<size_t>(optin, (size_t)(NZ_GEMV_MAX_T * e->H) * e->wsz);
		e->fuse_lora = !env_is("NOZZLE_CUDA_FUSE_LORA", "0");
		if (e->fuse)
			FAIL_CUDA(nz_gemv_fused_setup(e->wdt, e->gemv_smem), "nz_engine_create: GEMV setup");
		e->lora_fold = (int)env_long("NOZZLE_CUDA_LORA_FOLD", kLoraFoldDefault) & 15;
	}

	/* KV pool */
	e->kv_pool_elems = 0;
	int64_t block_bytes = e->L * 2 * e->nkv * e->bs * e->hd * (int64_t)e->wsz;
	if ((double)c->kv_num_blocks * (double)block_bytes > 0x1p50)
		FAIL(nz_error(NZ_ERR_OOM, "nz_engine_create: a KV pool of %lld blocks needs %.0f bytes", (long long)c->kv_num_blocks,
		              (double)c->kv_num_blocks * (double)block_bytes));
	if (c->kv_num_blocks == 0) {
		if (c->kv_memory_bytes > 0) {
			c->kv_num_blocks = c->kv_memory_bytes / block_bytes;
			if (c->kv_num_blocks < 1)
				FAIL(nz_error(NZ_ERR_INVALID, "nz_engine_create: kv_memory_bytes %lld holds no KV block (%lld bytes each)",
				              (long long)c->kv_memory_bytes, (long long)block_bytes));
		} else {
			size_t fr = 0, tot = 0;
			FAIL_CUDA(cudaMemGetInfo(&fr, &tot), "nz_engine_create: cudaMemGetInfo");
			int64_t margin = (int64_t)(512ll << 20) + (int64_t)tot / 50;
			int64_t budget = (int64_t)fr - weight_bytes_estimate(e) - e->slot_bytes - scratch_bytes(e) - margin;
			int64_t want = nz_ceil_div(c->max_position, e->bs) * e->S;
			if (budget < block_bytes)
				FAIL(nz_error(NZ_ERR_OOM,
				              "nz_engine_create: no device memory left for the KV cache: %zu bytes free, the weights "
				              "need about %lld, the adapter slots %lld, scratch %lld, a margin %lld",
				              fr, (long long)weight_bytes_estimate(e), (long long)e->slot_bytes,
				              (long long)scratch_bytes(e), (long long)margin));
			c->kv_num_blocks = std::max<int64_t>(1, std::min(want, budget / block_bytes));
		}
		c->kv_num_blocks = std::min<int64_t>(c->kv_num_blocks, INT32_MAX);
	}
	e->nb = c->kv_num_blocks;
	if ((double)e->nb * (double)block_bytes > 0x1p50 || (double)e->slot_bytes > 0x1p50)
		FAIL(nz_error(NZ_ERR_OOM, "nz_engine_create: the KV pool (%.0f bytes) or the adapter slots (%lld bytes) are too large",
		              (double)e->nb * (double)block_bytes, (long long)e->slot_bytes));
	e->kv_pool_elems = e->nb * e->nkv * e->bs * e->hd;
	e->kv_bytes = e->nb * block_bytes;
	e->cfg = *c;

	/* RoPE inverse frequencies, computed as the CPU backend does */
	std::vector<float> inv((size_t)(e->hd / 2));
	nz_rope_inv_freq(c, inv.data());
	e->rope_scale = nz_rope_attention_factor(c);
	FAIL(dev_alloc((void **)&e->inv_freq, inv.size() * sizeof(float), "nz_engine_create: RoPE table"));
	FAIL_CUDA(cudaMemcpy(e->inv_freq, inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice),
	          "nz_engine_create: RoPE table");
	if (e->inv_local_on) { /* the sliding layers' (Gemma 3's rope_local_base_freq) */
		nz_rope_local_inv_freq(c, inv.data());
		FAIL(dev_alloc((void **)&e->inv_local, inv.size() * sizeof(float), "nz_engine_create: RoPE table"));
		FAIL_CUDA(cudaMemcpy(e->inv_local, inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice),
		          "nz_engine_create: RoPE table");
	}
	e->layers.assign((size_t)e->L, layer_w());
	FAIL(host_alloc(&e->tstage, 2 * kTensorStage, "nz_engine_create: weight staging"));
	e->use_graphs = 1;
	FAIL(cpu_pool_create(host_threads(), &e->pool)); /* host-side conversions of uploads */
#undef FAIL_CUDA
#undef FAIL
	*out = e;
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------- */

/* Copies n elements of src (dtype) into dst on the device, converted to
 * dst_dtype (f32 for norms and biases: rounded through the weight dtype
 * first, then add added in f32 when it is not 0: the norm weight offset),
 * through the pinned staging halves. */
int32_t upload_converted(cuda_engine *e, void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n,
                         int via_weight_dtype, float add = 0.0f)
{
	const size_t dsz = nz_dtype_size(dst_dtype), ssz = nz_dtype_size(src_dtype);
	const int64_t chunk = (int64_t)(kTensorStage / dsz);
	int half = 0;
	for (int64_t i0 = 0; i0 < n; i0 += chunk, half ^= 1) {
		int64_t cnt = std::min(chunk, n - i0);
		CUDA_TRY(cudaEventSynchronize(e->tstage_ev[half]), "nz_engine_set_tensor: staging");
		unsigned char *stg = (unsigned char *)e->tstage + (size_t)half * kTensorStage;
		const unsigned char *s = (const unsigned char *)src + (size_t)i0 * ssz;
		const int64_t sub = 1 << 18;
		int64_t parts = nz_ceil_div(cnt, sub);
		parallel_for(cnt >= (1 << 20) ? e->pool : NULL, parts, [&](int64_t k) {
			int64_t a = k * sub, m = std::min(sub, cnt - a);
			if (via_weight_dtype) {
				float *f = (float *)(stg + (size_t)a * dsz);
				nz_convert_f32_via(f, s + (size_t)a * ssz, src_dtype, e->wdt, m);
				if (add != 0.0f)
					for (int64_t i = 0; i < m; i++)
						f[i] = add + f[i];
			} else {
				nz_convert(stg + (size_t)a * dsz, dst_dtype, s + (size_t)a * ssz, src_dtype, m);
			}
		});
		CUDA_TRY(cudaMemcpyAsync((unsigned char *)dst + (size_t)i0 * dsz, stg, (size_t)cnt * dsz, cudaMemcpyHostToDevice,
		                         e->stream),
		         "nz_engine_set_tensor: copy");
		CUDA_TRY(cudaEventRecord(e->tstage_ev[half], e->stream), "nz_engine_set_tensor: event");
	}
	return NZ_OK;
}

/* Allocates *p (bytes) on first use, zeroed when zero is set. */
int32_t ensure_dev(cuda_engine *e, void **p, size_t bytes, int zero, const char *what)
{
	if (*p)
		return NZ_OK;
	NZ_TRY(dev_alloc(p, bytes, what));
	e->weight_bytes += (int64_t)bytes;
	if (zero)
		CUDA_TRY(cudaMemsetAsync(*p, 0, bytes, e->stream), what);
	return NZ_OK;
}

int32_t cuda_set_tensor(void *impl, int32_t kind, int32_t layer, int32_t dtype, const void *data, int64_t n)
{
	cuda_engine *e = (cuda_engine *)impl;
	NZ_TRY(select_device(e, "nz_engine_set_tensor"));
	const char *what = "nz_engine_set_tensor";
	const size_t ws = e->wsz;
	layer_w *ly = layer >= 0 ? &e->layers[(size_t)layer] : NULL;
	void **dst = NULL;
	size_t total = 0, offset = 0; /* bytes of the (packed) buffer, byte offset of this tensor */
	int as_f32 = 0, zero = 0, norm = 0;
	switch (kind) {
	case NZ_T_EMBED:
		dst = &e->embed, total = (size_t)n * ws;
		break;
	case NZ_T_LM_HEAD:
		dst = &e->lm_head, total = (size_t)n * ws;
		break;
	case NZ_T_FINAL_NORM:
		dst = (void **)&e->final_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_ATTN_NORM:
		dst = (void **)&ly->attn_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_FFN_NORM:
		dst = (void **)&ly->ffn_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_Q_NORM:
		dst = (void **)&ly->q_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_K_NORM:
		dst = (void **)&ly->k_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_POST_ATTN_NORM:
		dst = (void **)&ly->post_attn_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_POST_FFN_NORM:
		dst = (void **)&ly->post_ffn_norm, total = (size_t)n * 4, as_f32 = 1, norm = 1;
		break;
	case NZ_T_Q:
	case NZ_T_K:
	case NZ_T_V:
		dst = &ly->wqkv, total = (size_t)(e->qkvd * e->H) * ws;
		offset = (size_t)((kind == NZ_T_Q ? 0 : kind == NZ_T_K ? e->qd : e->qd + e->kvd) * e->H) * ws;
		break;
	case NZ_T_O:
		dst = &ly->wo, total = (size_t)n * ws;
		break;
	case NZ_T_GATE:
	case NZ_T_UP:
		dst = &ly->wgu, total = (size_t)(2 * e->I * e->H) * ws;
		offset = kind == NZ_T_GATE ? 0 : (size_t)(e->I * e->H) * ws;
		break;
	case NZ_T_DOWN:
		dst = &ly->wdown, total = (size_t)n * ws;
		break;
	case NZ_T_Q_BIAS:
	case NZ_T_K_BIAS:
	case NZ_T_V_BIAS:
		dst = (void **)&ly->bqkv, total = (size_t)e->qkvd * 4, as_f32 = 1, zero = 1;
		offset = (size_t)(kind == NZ_T_Q_BIAS ? 0 : kind == NZ_T_K_BIAS ? e->qd : e->qd + e->kvd) * 4;
		break;
	case NZ_T_O_BIAS:
		dst = (void **)&ly->bo, total = (size_t)n * 4, as_f32 = 1;
		break;
	case NZ_T_GATE_BIAS:
	case NZ_T_UP_BIAS:
		dst = (void **)&ly->bgu, total = (size_t)(2 * e->I) * 4, as_f32 = 1, zero = 1;
		offset = kind == NZ_T_GATE_BIAS ? 0 : (size_t)e->I * 4;
		break;
	case NZ_T_DOWN_BIAS:
		dst = (void **)&ly->bdown, total = (size_t)n * 4, as_f32 = 1;
		break;
	default:
		return nz_error(NZ_ERR_INTERNAL, "%s: unexpected tensor kind %d", what, kind);
	}
	NZ_TRY(ensure_dev(e, dst, total, zero, what));
	return upload_converted(e, (unsigned char *)*dst + offset, as_f32 ? NZ_F32 : e->wdt, data, dtype, n, as_f32,
	                        norm ? e->norm_offset : 0.0f);
}

/* ---------------------------------------------------------------------------
 * Finalize, info
 * ------------------------------------------------------------------------- */

int32_t cuda_finalize(void *impl)
{
	cuda_engine *e = (cuda_engine *)impl;
	const char *what = "nz_engine_finalize";
	NZ_TRY(select_device(e, what));
	const int64_t T = e->T, S = e->S;
	/* (allocations are kept when a later one fails, so a retry resumes) */
#define ALLOC(ptr, bytes)                                                                                              \
	do {                                                                                                               \
		if (!(ptr))                                                                                                    \
			NZ_TRY(dev_alloc((void **)&(ptr), (size_t)(bytes), what));                                                 \
	} while (0)
	ALLOC(e->slot_mem, e->slot_bytes);
	const size_t rank_bytes = (size_t)(e->slots * e->L * NZ_M_COUNT) * sizeof(int32_t);
	if (!e->rank_dev) {
		NZ_TRY(dev_alloc((void **)&e->rank_dev, rank_bytes, what));
		CUDA_TRY(cudaMemsetAsync(e->rank_dev, 0, rank_bytes, e->stream), what);
		e->rank_host.assign((size_t)(e->slots * e->L * NZ_M_COUNT), 0);
	}
	const size_t stage_bytes = (size_t)e->slot_stride * e->wsz + (size_t)(e->L * NZ_M_COUNT) * sizeof(int32_t);
	for (int i = 0; i < 2; i++)
		if (!e->stage[i]) {
			NZ_TRY(host_alloc(&e->stage[i], stage_bytes, what));
			memset(e->stage[i], 0, stage_bytes);
		}
	ALLOC(e->kv, e->kv_bytes);
	ALLOC(e->h, 4 * T * e->H);
	ALLOC(e->y, 4 * T * e->ymax);
	ALLOC(e->yl, 4 * T * e->ymax);
	ALLOC(e->q, 4 * T * e->qd);
	ALLOC(e->cs, 4 * T * e->hd);
	if (e->inv_local_on)
		ALLOC(e->cs_local, 4 * T * e->hd);
	ALLOC(e->lv, 4 * 3 * e->lv_rows * e->R);
	ALLOC(e->xin, (int64_t)e->wsz * T * e->xmax);
	ALLOC(e->xs, (int64_t)e->wsz * S * e->H);
	ALLOC(e->logits, 4 * S * e->V);
	ALLOC(e->d_out, (int64_t)sizeof(nz_sample_out) * S);
	ALLOC(e->attn_o, 4 * kAttnParts * e->rows_max * e->hd);
	ALLOC(e->attn_ml, 4 * kAttnParts * e->rows_max * 2);
	ALLOC(e->part, 8 * NZ_GEMV_MAX_T * nz_gemv_fused_parts(e->H));
	ALLOC(e->lora_sync, 4 * 4 * e->L);
	ALLOC(e->spart, (int64_t)sizeof(nz_sample_part) * S * nz_sample_parts(e->V));
	if (!e->attn_count) {
		NZ_TRY(dev_alloc((void **)&e->attn_count, 4 * kAttnParts, what));
		CUDA_TRY(cudaMemsetAsync(e->attn_count, 0, 4 * kAttnParts, e->stream), what);
	}
#undef ALLOC
	if (!e->h_out)
		NZ_TRY(host_alloc((void **)&e->h_out, sizeof(nz_sample_out) * (size_t)S, what));
	CUDA_TRY(cudaStreamSynchronize(e->stream), what);
	e->finalized = 1;
	return NZ_OK;
}

void cuda_info(void *impl, int64_t *out)
{
	cuda_engine *e = (cuda_engine *)impl;
	out[NZ_INFO_KV_BLOCK_SIZE] = e->bs;
	out[NZ_INFO_KV_NUM_BLOCKS] = e->nb;
	out[NZ_INFO_WEIGHT_BYTES] = e->weight_bytes;
	out[NZ_INFO_SLOT_BYTES] = e->slot_bytes;
	out[NZ_INFO_KV_BYTES] = e->kv_bytes;
	out[NZ_INFO_MAX_SLOTS] = e->slots;
	out[NZ_INFO_MAX_RANK] = e->R;
	out[NZ_INFO_THREADS] = 0;
}

/* ---------------------------------------------------------------------------
 * Adapters
 * ------------------------------------------------------------------------- */

int32_t cuda_adapter_clear(void *impl, int32_t slot)
{
	cuda_engine *e = (cuda_engine *)impl;
	const char *what = "nz_adapter_clear";
	NZ_TRY(select_device(e, what));
	const size_t row = (size_t)(e->L * NZ_M_COUNT);
	std::fill(e->rank_host.begin() + (ptrdiff_t)(slot * row), e->rank_host.begin() + (ptrdiff_t)((slot + 1) * row), 0);
	CUDA_TRY(cudaMemsetAsync(e->rank_dev + (size_t)slot * row, 0, row * sizeof(int32_t), e->side), what);
	CUDA_TRY(cudaEventRecord(e->upload_ev, e->side), what);
	e->upload_pending = 1;
	return NZ_OK;
}

/* Converts one entry into the slot image at stage (elements of the weight dtype). */
void stage_entry(const cuda_engine *e, unsigned char *stage, const nz_lora_entry *en)
{
	const int m = en->module;
	const int64_t in = e->mod_in[m], out = e->mod_out[m], r = en->rank, R = e->R;
	const size_t ws = e->wsz;
	const size_t k = (size_t)(en->layer * NZ_M_COUNT + m);
	unsigned char *a = stage + (size_t)e->a_off[k] * ws;
	unsigned char *b = stage + (size_t)e->b_off[k] * ws;
	if (en->a_dtype == e->wdt)
		memcpy(a, en->a, (size_t)(r * in) * ws);
	else /* ·1 is exact: the same rounding as a plain conversion */
		nz_convert_scaled(a, e->wdt, en->a, en->a_dtype, r * in, 1.0f);
	memset(a + (size_t)(r * in) * ws, 0, (size_t)((R - r) * in) * ws);
	/* B [out][R] = scale · lora_B [out][r], folded in f32 then rounded once */
	const size_t bsz = nz_dtype_size(en->b_dtype);
	if (r == R) {
		nz_convert_scaled(b, e->wdt, en->b, en->b_dtype, out * r, en->scale);
	} else {
		for (int64_t o = 0; o < out; o++) {
			unsigned char *dst = b + (size_t)(o * R) * ws;
			nz_convert_scaled(dst, e->wdt, (const unsigned char *)en->b + (size_t)(o * r) * bsz, en->b_dtype, r,
			                  en->scale);
			memset(dst + (size_t)r * ws, 0, (size_t)(R - r) * ws);
		}
	}
}

int32_t cuda_adapter_load(void *impl, int32_t slot, int32_t n, const nz_lora_entry *ent)
{
	cuda_engine *e = (cuda_engine *)impl;
	const char *what = "nz_adapter_load";
	NZ_TRY(select_device(e, what));
	const int i = e->stage_next;
	e->stage_next ^= 1;
	/* the staging buffer's previous upload must be done before it is rewritten */
	CUDA_TRY(cudaEventSynchronize(e->stage_ev[i]), what);
	unsigned char *stg = (unsigned char *)e->stage[i];
	const size_t data_bytes = (size_t)e->slot_stride * e->wsz, row = (size_t)(e->L * NZ_M_COUNT);
	int32_t *ranks = (int32_t *)(stg + data_bytes);
	memset(ranks, 0, row * sizeof(int32_t));
	parallel_for(e->pool, n, [&](int64_t j) { stage_entry(e, stg, &ent[j]); });
	for (int32_t j = 0; j < n; j++)
		ranks[ent[j].layer * NZ_M_COUNT + ent[j].module] = ent[j].rank;
	CUDA_TRY(cudaMemcpyAsync((unsigned char *)e->slot_mem + (size_t)slot * data_bytes, stg, data_bytes,
	                         cudaMemcpyHostToDevice, e->side),
	         what);
	CUDA_TRY(cudaMemcpyAsync(e->rank_dev + (size_t)slot * row, ranks, row * sizeof(int32_t), cudaMemcpyHostToDevice,
	                         e->side),
	         what);
	CUDA_TRY(cudaEventRecord(e->stage_ev[i], e->side), what);
	CUDA_TRY(cudaEventRecord(e->upload_ev, e->side), what);
	e->upload_pending = 1;
	memcpy(&e->rank_host[(size_t)slot * row], ranks, row * sizeof(int32_t));
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Step
 * ------------------------------------------------------------------------- */

size_t sec(size_t *at, size_t bytes)
{
	size_t o = *at;
	*at = (o + bytes + 15) & ~(size_t)15;
	return o;
}

/* The metadata layout of a step with T tokens, S sequences, NB logit
 * adjustments and NM masked rows; only the block table, the adjustments
 * and the masks (last) depend on the table's width W (the adjustments
 * and masks are found through the scalars). */
meta_layout layout_for(const cuda_engine *e, int64_t T, int64_t S, int64_t W, int64_t NB, int64_t NM)
{
	meta_layout m;
	size_t at = 0;
	m.scalars = sec(&at, 4 * NZ_SC_COUNT);
	m.tokens = sec(&at, 4 * (size_t)T);
	m.tok_pos = sec(&at, 4 * (size_t)T);
	m.tok_seq = sec(&at, 4 * (size_t)T);
	m.tok_lora = sec(&at, 4 * (size_t)T);
	m.attn_items = sec(&at, 8 * (size_t)T);
	m.lora_items = sec(&at, 12 * (size_t)(T + e->slots + 1));
	m.lora_tok = sec(&at, 4 * (size_t)T);
	m.samples = sec(&at, sizeof(nz_sample_in) * (size_t)(S + T)); /* rows: sampled sequences + scored tokens */
	m.bt = sec(&at, 4 * (size_t)(S * W));
	m.bias = sec(&at, sizeof(nz_bias_entry) * (size_t)NB);
	m.mask_rows = sec(&at, 4 * (size_t)NM);
	m.mask = sec(&at, 4 * (size_t)(NM * ((e->V + 31) / 32)));
	m.end = at;
	return m;
}

meta_ptrs ptrs_for(unsigned char *base, const meta_layout &m)
{
	meta_ptrs p;
	p.scalars = (int32_t *)(base + m.scalars);
	p.tokens = (int32_t *)(base + m.tokens);
	p.tok_pos = (int32_t *)(base + m.tok_pos);
	p.tok_seq = (int32_t *)(base + m.tok_seq);
	p.tok_lora = (int32_t *)(base + m.tok_lora);
	p.attn_items = (int32_t *)(base + m.attn_items);
	p.lora_items = (int32_t *)(base + m.lora_items);
	p.lora_tok = (int32_t *)(base + m.lora_tok);
	p.samples = (nz_sample_in *)(base + m.samples);
	p.bt = (int32_t *)(base + m.bt);
	return p;
}

int32_t ensure_meta(cuda_engine *e, size_t bytes)
{
	if (bytes <= e->meta_cap)
		return NZ_OK;
	size_t cap = std::max(bytes + bytes / 2, (size_t)64 << 10);
	CUDA_TRY(cudaStreamSynchronize(e->stream), "nz_step");
	cudaFree(e->d_meta);
	cudaFreeHost(e->h_meta);
	e->d_meta = e->h_meta = NULL;
	e->meta_cap = 0;
	/* device pointers inside captured graphs are now stale */
	for (auto &g : e->graphs)
		if (g.exec)
			cudaGraphExecDestroy(g.exec);
	e->graphs.clear();
	NZ_TRY(dev_alloc((void **)&e->d_meta, cap, "nz_step: metadata"));
	NZ_TRY(host_alloc((void **)&e->h_meta, cap, "nz_step: metadata"));
	e->meta_cap = cap;
	return NZ_OK;
}

/* Y [rows][out] (f32) = X [rows][in] · Wᵀ: a GEMV pass for a few rows,
 * cuBLAS (tensor cores for bf16/f16, plain f32 for f32) otherwise. */
int32_t gemm(cuda_engine *e, const void *X, int64_t rows, int64_t in, const void *W, int64_t out, float *Y,
             const char *what, int sms = 0)
{
	if (rows <= NZ_GEMV_MAX_T) {
		cudaError_t err = nz_k_gemv(e->wdt, e->stream, rows, X, in, W, out, Y);
		return err == cudaSuccess ? NZ_OK : cuda_fail(err, what);
	}
	const float one = 1.0f, zero = 0.0f;
	cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
	if (e->blas_sms != sms && (st = cublasSetSmCountTarget(e->blas, sms)) != CUBLAS_STATUS_SUCCESS)
		return blas_fail(st, what);
	e->blas_sms = sms;
	st = cublasGemmEx(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)rows, (int)in, &one, W, e->wtype,
	                                 (int)in, X, e->wtype, (int)in, &zero, Y, CUDA_R_32F, (int)out, CUBLAS_COMPUTE_32F,
	                                 CUBLAS_GEMM_DEFAULT);
	if (st != CUBLAS_STATUS_SUCCESS)
		return blas_fail(st, what);
	return NZ_OK;
}

#define KTRY(call, what)                                                                                               \
	do {                                                                                                               \
		cudaError_t nz_kerr_ = (call);                                                                                 \
		if (nz_kerr_ != cudaSuccess)                                                                                   \
			return cuda_fail(nz_kerr_, what);                                                                          \
	} while (0)

/* The LoRA kernels' description of projection group mods[0..nmod) of
 * layer l, its outputs at columns cols of y. */
void lora_group(const cuda_engine *e, int64_t l, int nmod, const int *mods, const int *cols, nz_lora_group *g)
{
	g->nmod = nmod;
	for (int i = 0; i < nmod; i++) {
		size_t k = (size_t)(l * NZ_M_COUNT + mods[i]);
		g->module[i] = mods[i];
		g->a_off[i] = e->a_off[k];
		g->b_off[i] = e->b_off[k];
		g->out[i] = (int32_t)e->mod_out[mods[i]];
		g->col[i] = cols[i];
	}
}

/* *gl for group gi (0 q/k/v, 1 o, 2 gate/up, 3 down) of layer l's fused
 * GEMV in a step of T tokens with adapters (items work items at most):
 * its shrink into e->lv, counted in its own lora_sync counter. */
void gemv_lora(const cuda_engine *e, const meta_ptrs &m, int64_t T, int64_t items, int64_t l, int gi, int nmod,
               const int *mods, const int *cols, nz_gemv_lora *gl)
{
	memset(gl, 0, sizeof *gl);
	lora_group(e, l, nmod, mods, cols, &gl->grp);
	gl->scalars = m.scalars, gl->items = m.lora_items, gl->lora_tok = m.lora_tok, gl->tok_lora = m.tok_lora;
	gl->rank_tab = e->rank_dev, gl->slots = e->slot_mem, gl->slot_stride = e->slot_stride;
	gl->layer = (int32_t)l, gl->L = (int32_t)e->L, gl->R = (int32_t)e->R;
	gl->v = e->lv, gl->sync = e->lora_sync + 4 * l + gi;
	gl->items_max = (int32_t)std::min<int64_t>(items, T);
	gl->blocks = nz_gemv_lora_blocks(gl->items_max, nmod, (int)e->R);
}

/* Starts the LoRA shrink of the modules mods[0..nmod) (sharing the input
 * x [T][in] that the engine's stream has just written) on the LoRA stream.
 * With fold, fills *lo for the kernel that consumes the group's output
 * (columns cols of y), which does the expand; else runs the expand kernel
 * after the shrink, into e->yl [T][y_stride]. lora_join makes the
 * engine's stream wait for them. */
int32_t lora_fork(cuda_engine *e, const meta_ptrs &m, int64_t T, int64_t items_grid, int64_t few, int64_t l, int nmod,
                  const int *mods, const int *cols, const void *x, int64_t in, bool fold, int64_t y_stride,
                  nz_lora_out *lo)
{
	cudaStream_t ls = e->lora_fork_mode ? e->lstream : e->stream;
	if (e->lora_fork_mode) {
		CUDA_TRY(cudaEventRecord(e->ev_fork, e->stream), "nz_step: LoRA fork");
		CUDA_TRY(cudaStreamWaitEvent(e->lstream, e->ev_fork, 0), "nz_step: LoRA fork");
	}
	memset(lo, 0, sizeof *lo);
	lora_group(e, l, nmod, mods, cols, &lo->grp);
	const nz_lora_group &g = lo->grp;
	/* Split the shrink's input so that the step's work items (at fewest
	 * `few`: a graph is replayed for a range of adapter mixes) fill the
	 * GPU twice over, as far as the partial sums fit in lv. */
	const int splits = nz_lora_splits(in, few, nmod, (int)e->R, 2 * (int64_t)e->prop.multiProcessorCount,
	                                  std::max<int64_t>(1, std::min<int64_t>(kLoraMaxSplits, e->lv_rows / T)));
	const int64_t vss = T * e->R, vms = splits * vss;
	KTRY(nz_k_lora_shrink(e->wdt, ls, items_grid, m.scalars, m.lora_items, m.lora_tok, x, in, splits,
	                      e->slot_mem, e->slot_stride, g, e->rank_dev, (int)l, (int)e->L, (int)e->R, e->lv, vms, vss),
	     "nz_step: LoRA shrink");
	if (!fold) {
		int max_out = 0;
		for (int i = 0; i < nmod; i++)
			max_out = std::max(max_out, g.out[i]);
		KTRY(nz_k_lora_expand(e->wdt, ls, items_grid, m.scalars, m.lora_items, m.lora_tok, e->lv, vms, vss,
		                      splits, e->slot_mem, e->slot_stride, g, e->rank_dev, (int)l, (int)e->L, (int)e->R, e->yl,
		                      y_stride, max_out),
		     "nz_step: LoRA expand");
		return NZ_OK;
	}
	lo->v = e->lv, lo->v_mod_stride = vms, lo->v_split_stride = vss, lo->splits = splits;
	lo->slots = e->slot_mem, lo->slot_stride = e->slot_stride, lo->rank_tab = e->rank_dev;
	lo->layer = (int32_t)l, lo->L = (int32_t)e->L, lo->R = (int32_t)e->R;
	return NZ_OK;
}

int32_t lora_join(cuda_engine *e)
{
	if (!e->lora_fork_mode)
		return NZ_OK;
	CUDA_TRY(cudaEventRecord(e->ev_join, e->lstream), "nz_step: LoRA join");
	CUDA_TRY(cudaStreamWaitEvent(e->stream, e->ev_join, 0), "nz_step: LoRA join");
	return NZ_OK;
}

/* Every launch of a step's forward pass and sampling, on e->stream (the
 * LoRA shrinks forked to e->lstream and joined back). Grids depend only on
 * (T, n_attn, lora_grid, lora_few, ns): graph replays read the rest from
 * the metadata. lora_grid is the grid's LoRA work items, lora_few the
 * fewest items a run of these launches has. */
int32_t forward(cuda_engine *e, const meta_ptrs &m, int64_t T, int64_t n_attn, int64_t lora_grid, int64_t lora_few,
                int64_t ns, int bias_grid, int mask_grid)
{
	cudaStream_t s = e->stream;
	const int dt = e->wdt;
	const int64_t H = e->H, I = e->I;
	const size_t pool_bytes = (size_t)e->kv_pool_elems * e->wsz;
	static const int qkv_m[3] = {NZ_M_Q, NZ_M_K, NZ_M_V}, o_m[1] = {NZ_M_O}, gu_m[2] = {NZ_M_GATE, NZ_M_UP},
	                 down_m[1] = {NZ_M_DOWN};
	const int qkv_c[3] = {0, (int)e->qd, (int)(e->qd + e->kvd)}, zero_c[1] = {0}, gu_c[2] = {0, (int)I};
	/* small steps without adapters: residual adds, norms and the SiLU gate
	 * ride in the GEMVs (nz_k_gemv_fused) */
	const bool fused = e->fuse && T <= NZ_GEMV_MAX_T && (!lora_grid || e->fuse_lora) &&
	                   (size_t)(T * H) * e->wsz <= e->gemv_smem;
	const int32_t n_part = (int32_t)nz_gemv_fused_parts(H);
	/* the GEMMs' SMs in a step with adapters (NOZZLE_CUDA_LORA_SMS) */
	const int blas_sms = lora_grid && e->lora_sms > 0 ? std::max(1, e->prop.multiProcessorCount - e->lora_sms) : 0;

	/* a group's LoRA expand, when the step has adapters: folded into its
	 * consumer (lo) or run into yl */
	nz_lora_out lo_buf;
	const int fold = lora_grid ? e->lora_fold : 0;
	const nz_lora_out *lo[4] = {};
	const float *yl[4] = {};
	for (int gi = 0; gi < 4; gi++) {
		if (lora_grid && (fold >> gi & 1))
			lo[gi] = &lo_buf;
		else if (lora_grid)
			yl[gi] = e->yl;
	}
	/* split the keys of few (item, KV head) blocks over more blocks */
	int splits = 1;
	const int64_t blocks = n_attn * e->nkv, want = 2 * (int64_t)e->prop.multiProcessorCount;
	if (blocks < want)
		splits = (int)std::min<int64_t>(16, (want + blocks - 1) / blocks);
	while (splits > 1 && blocks * splits > kAttnParts)
		splits--;
	if (fused && lora_grid)
		CUDA_TRY(cudaMemsetAsync(e->lora_sync, 0, 4 * 4 * e->L, s), "nz_step: LoRA counters");
	KTRY(nz_k_embed_norm(dt, s, T, e->embed, e->embed_scale, m.tokens, m.tok_pos, e->inv_freq, e->rope_scale,
	                     e->inv_local, H, e->hd, e->rh, e->layers[0].attn_norm, e->eps, e->h, e->xin, e->cs, e->cs_local),
	     "nz_step: embedding");
	/* Gemma 2/3's post-attention and post-MLP norms (every layer or none):
	 * the fused decode path then ends each module with a GEMV into y and
	 * nz_k_add_norm, which leaves the residual's sum of squares as the one
	 * partial the next fused GEMV's norm prologue reads */
	const bool post = e->layers[0].post_attn_norm != NULL;
	const int32_t n_part_h = post ? 1 : n_part;
	for (int64_t l = 0; l < e->L; l++) {
		const layer_w &ly = e->layers[(size_t)l];
		unsigned char *kc = (unsigned char *)e->kv + (size_t)(2 * l) * pool_bytes, *vc = kc + pool_bytes;
		const bool sliding = nz_layer_sliding(&e->cfg, l);
		int window = sliding ? (int)e->cfg.sliding_window : 0;
		const float *cs = sliding && e->inv_local ? e->cs_local : e->cs; /* rope_local_theta */
		nz_gemv_io io;
		if (fused) {
			memset(&io, 0, sizeof io);
			if (l == 0) {
				io.x = e->xin; /* normed by nz_k_embed_norm */
			} else {
				io.h_in = e->h, io.norm_w = ly.attn_norm, io.eps = e->eps;
				io.part_in = e->part, io.n_part_in = n_part_h;
			}
			/* + bias, RoPE, q to e->q, k and v into the cache */
			io.epi = NZ_GEMV_ROPE, io.bias = ly.bqkv, io.cs = cs, io.tok_pos = m.tok_pos, io.tok_seq = m.tok_seq;
			io.bt = m.bt, io.scalars = m.scalars, io.nh = (int32_t)e->nh, io.nkv = (int32_t)e->nkv;
			io.hd = (int32_t)e->hd, io.rh = (int32_t)e->rh, io.bs = (int32_t)e->bs, io.q_out = e->q, io.kc = kc, io.vc = vc;
			io.k_raw = ly.q_norm ? e->y : NULL; /* the head norms below */
			if (lora_grid)
				gemv_lora(e, m, T, lora_grid, l, 0, 3, qkv_m, qkv_c, &io.lora);
			KTRY(nz_k_gemv_fused(dt, s, T, H, ly.wqkv, e->qkvd, &io), "nz_step: q/k/v projection");
		} else {
			if (lora_grid)
				NZ_TRY(lora_fork(e, m, T, lora_grid, lora_few, l, 3, qkv_m, qkv_c, e->xin, H, lo[0], e->qkvd, &lo_buf));
			NZ_TRY(gemm(e, e->xin, T, H, ly.wqkv, e->qkvd, e->y, "nz_step: q/k/v projection", blas_sms));
			if (lora_grid)
				NZ_TRY(lora_join(e));
			KTRY(nz_k_rope_kv(dt, s, T, e->y, yl[0], lo[0], m.tok_lora, ly.bqkv, cs, m.tok_pos, m.tok_seq, m.bt, m.scalars,
			                  (int)e->nh, (int)e->nkv, (int)e->hd, (int)e->rh, (int)e->bs, ly.q_norm != NULL, e->q, kc, vc),
			     "nz_step: RoPE");
		}
		if (ly.q_norm)
			KTRY(nz_k_qk_norm_rope(dt, s, T, e->y, ly.q_norm, ly.k_norm, e->eps, cs, m.tok_pos, m.tok_seq, m.bt,
			                       m.scalars, (int)e->nh, (int)e->nkv, (int)e->hd, (int)e->rh, (int)e->bs, e->q, kc),
			     "nz_step: q and k norms");
		KTRY(nz_k_attention(dt, s, n_attn, m.attn_items, e->rows_max, e->q, kc, vc, m.tok_pos, m.tok_seq, m.bt,
		                    m.scalars, (int)e->nh, (int)e->nkv, (int)e->hd, (int)e->bs, window, e->attn_scale,
		                    e->attn_softcap, e->xin, splits, e->attn_min_tiles, e->attn_o, e->attn_ml, e->attn_count),
		     "nz_step: attention");
		if (fused) {
			/* o projection + residual; then gate/up from the normed residual
			 * + activation; then down projection + residual (whose sums of
			 * squares the next layer's q/k/v projection normalises with).
			 * With post-norms each projection writes y, which nz_k_add_norm
			 * normalises into the residual. */
			memset(&io, 0, sizeof io);
			io.x = e->xin, io.bias = ly.bo;
			if (post)
				io.epi = NZ_GEMV_OUT, io.y = e->y;
			else
				io.epi = NZ_GEMV_RESID, io.h = e->h, io.part_out = e->part;
			if (lora_grid)
				gemv_lora(e, m, T, lora_grid, l, 1, 1, o_m, zero_c, &io.lora);
			KTRY(nz_k_gemv_fused(dt, s, T, e->qd, ly.wo, H, &io), "nz_step: o projection");
			if (post)
				KTRY(nz_k_add_norm(dt, s, T, H, e->h, e->y, NULL, NULL, m.tok_lora, NULL, ly.post_attn_norm, NULL,
				                   e->eps, NULL, e->part),
				     "nz_step: post-attention norm");
			memset(&io, 0, sizeof io);
			io.h_in = e->h, io.norm_w = ly.ffn_norm, io.eps = e->eps, io.part_in = e->part, io.n_part_in = n_part_h;
			io.epi = NZ_GEMV_SILU, io.x_out = e->xin, io.bias = ly.bgu, io.act = e->hidden_act;
			if (lora_grid)
				gemv_lora(e, m, T, lora_grid, l, 2, 2, gu_m, gu_c, &io.lora);
			KTRY(nz_k_gemv_fused(dt, s, T, H, ly.wgu, I, &io), "nz_step: gate/up projection");
			memset(&io, 0, sizeof io);
			io.x = e->xin, io.bias = ly.bdown;
			if (post)
				io.epi = NZ_GEMV_OUT, io.y = e->y;
			else
				io.epi = NZ_GEMV_RESID, io.h = e->h, io.part_out = e->part;
			if (lora_grid)
				gemv_lora(e, m, T, lora_grid, l, 3, 1, down_m, zero_c, &io.lora);
			KTRY(nz_k_gemv_fused(dt, s, T, I, ly.wdown, H, &io), "nz_step: down projection");
			if (post)
				KTRY(nz_k_add_norm(dt, s, T, H, e->h, e->y, NULL, NULL, m.tok_lora, NULL, ly.post_ffn_norm, NULL,
				                   e->eps, NULL, l + 1 < e->L ? e->part : NULL),
				     "nz_step: post-MLP norm");
			continue;
		}
		if (lora_grid)
			NZ_TRY(lora_fork(e, m, T, lora_grid, lora_few, l, 1, o_m, zero_c, e->xin, e->qd, lo[1], H, &lo_buf));
		NZ_TRY(gemm(e, e->xin, T, e->qd, ly.wo, H, e->y, "nz_step: o projection", blas_sms));
		if (lora_grid)
			NZ_TRY(lora_join(e));
		KTRY(nz_k_add_norm(dt, s, T, H, e->h, e->y, yl[1], lo[1], m.tok_lora, ly.bo, ly.post_attn_norm, ly.ffn_norm,
		                   e->eps, e->xin, NULL),
		     "nz_step: norm");
		if (lora_grid)
			NZ_TRY(lora_fork(e, m, T, lora_grid, lora_few, l, 2, gu_m, gu_c, e->xin, H, lo[2], 2 * I, &lo_buf));
		NZ_TRY(gemm(e, e->xin, T, H, ly.wgu, 2 * I, e->y, "nz_step: gate/up projection", blas_sms));
		if (lora_grid)
			NZ_TRY(lora_join(e));
		KTRY(nz_k_silu(dt, s, T, I, e->y, yl[2], lo[2], m.tok_lora, ly.bgu, e->hidden_act, e->xin),
		     "nz_step: MLP activation");
		if (lora_grid)
			NZ_TRY(lora_fork(e, m, T, lora_grid, lora_few, l, 1, down_m, zero_c, e->xin, I, lo[3], H, &lo_buf));
		NZ_TRY(gemm(e, e->xin, T, I, ly.wdown, H, e->y, "nz_step: down projection", blas_sms));
		if (lora_grid)
			NZ_TRY(lora_join(e));
		const float *next_norm = l + 1 < e->L ? e->layers[(size_t)(l + 1)].attn_norm : NULL;
		KTRY(nz_k_add_norm(dt, s, T, H, e->h, e->y, yl[3], lo[3], m.tok_lora, ly.bdown, ly.post_ffn_norm, next_norm,
		                   e->eps, e->xin, NULL),
		     "nz_step: norm");
	}
	if (ns == 0)
		return NZ_OK;
	KTRY(nz_k_gather_norm(dt, s, ns, m.samples, e->h, H, e->final_norm, e->eps, e->xs), "nz_step: final norm");
	const void *lm = e->cfg.tie_word_embeddings ? e->embed : e->lm_head;
	NZ_TRY(gemm(e, e->xs, ns, H, lm, e->V, e->logits, "nz_step: LM head"));
	if (e->final_softcap > 0) /* Gemma 2: before anything reads the logits */
		KTRY(nz_k_softcap(s, e->logits, ns * e->V, e->final_softcap), "nz_step: logit soft-cap");
	if (bias_grid)
		KTRY(nz_k_logit_bias(s, bias_grid, m.scalars, e->logits, e->V), "nz_step: logit adjustments");
	if (mask_grid)
		KTRY(nz_k_logit_mask(s, mask_grid, m.scalars, e->logits, e->V), "nz_step: token masks");
	KTRY(nz_k_sample(s, ns, e->logits, e->V, m.samples, m.scalars, e->d_out, e->spart), "nz_step: sampling");
	return NZ_OK;
}

/* LoRA work items at fewest in a decode step of T tokens with graph key
 * lora (graph_entry): every token in an item of at most NZ_LORA_TM, or
 * (key 2) at least half as many items as tokens. The shrink sizes its
 * grid for them, so steps with many adapters and steps with few get
 * graphs of their own. */
int64_t graph_lora_few(int64_t T, int lora)
{
	const int64_t few = nz_ceil_div(T, NZ_LORA_TM);
	return lora == 2 ? std::max(few, nz_ceil_div(T, 2)) : few;
}

/* Runs a decode-only step's forward pass through a graph captured for its
 * key; sets *ran when it ran, else the caller must run it eagerly. */
int32_t run_graph(cuda_engine *e, const meta_ptrs &m, int64_t T, int64_t ns, int lora, int adjust, int *ran)
{
	*ran = 0;
	graph_entry *g = NULL;
	for (auto &x : e->graphs)
		if (x.seqs == T && x.samples == ns && x.lora == lora && x.adjust == adjust)
			g = &x;
	if (!g) {
		if ((int)e->graphs.size() >= kMaxGraphs) {
			auto lru = std::min_element(e->graphs.begin(), e->graphs.end(),
			                            [](const graph_entry &a, const graph_entry &b) { return a.used < b.used; });
			if (lru->exec)
				cudaGraphExecDestroy(lru->exec);
			e->graphs.erase(lru);
		}
		graph_entry ne;
		ne.seqs = T, ne.samples = ns, ne.lora = lora, ne.adjust = adjust, ne.exec = NULL, ne.used = 0;
		CUDA_TRY(cudaStreamBeginCapture(e->stream, cudaStreamCaptureModeThreadLocal), "nz_step: graph capture");
		int32_t st = forward(e, m, T, T, lora ? T : 0, graph_lora_few(T, lora), ns, adjust & 1 ? kBiasGrid : 0,
		                     adjust & 2 ? kMaskGrid : 0);
		cudaGraph_t graph = NULL;
		cudaError_t end = cudaStreamEndCapture(e->stream, &graph);
		if (st == NZ_OK && end == cudaSuccess && graph) {
			cudaGraphExec_t exec = NULL;
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12000
			cudaError_t ierr = cudaGraphInstantiate(&exec, graph, 0ULL);
#else
			cudaError_t ierr = cudaGraphInstantiateWithFlags(&exec, graph, 0ULL);
#endif
			if (ierr == cudaSuccess)
				ne.exec = exec;
		}
		if (graph)
			cudaGraphDestroy(graph);
		cudaGetLastError(); /* a failed capture falls back to eager launches */
		e->graphs.push_back(ne);
		g = &e->graphs.back();
	}
	g->used = ++e->graph_clock;
	if (!g->exec)
		return NZ_OK;
	CUDA_TRY(cudaGraphLaunch(g->exec, e->stream), "nz_step: graph launch");
	*ran = 1;
	return NZ_OK;
}

int32_t cuda_step(void *impl, const nz_batch *b, const nz_step_plan *p)
{
	cuda_engine *e = (cuda_engine *)impl;
	const char *what = "nz_step";
	NZ_TRY(select_device(e, what));
	const int64_t T = p->n_tokens, S = p->n_seqs, ns = p->n_rows, bs = e->bs;
	int64_t W = 1;
	int decode_only = 1;
	for (int64_t i = 0; i < S; i++) {
		W = std::max<int64_t>(W, nz_ceil_div((int64_t)b->seq_pos[i] + b->seq_len[i], bs));
		decode_only &= b->seq_len[i] == 1;
	}
	int64_t n_bias = 0, n_mask = 0;
	for (int64_t i = 0; i < p->n_sample; i++) {
		if (b->bias_off)
			n_bias += b->bias_off[p->sample_seq[i] + 1] - b->bias_off[p->sample_seq[i]];
		if (b->seq_allow)
			n_mask += b->seq_allow[p->sample_seq[i]] >= 0;
	}
	const meta_layout lay = layout_for(e, T, S, W, n_bias, n_mask);
	NZ_TRY(ensure_meta(e, lay.end));
	unsigned char *hm = e->h_meta;
	const meta_ptrs hp = ptrs_for(hm, lay), dp = ptrs_for(e->d_meta, lay);

	memcpy(hp.tokens, b->tokens, 4 * (size_t)T);
	memcpy(hp.tok_pos, p->tok_pos, 4 * (size_t)T);
	memcpy(hp.tok_seq, p->tok_seq, 4 * (size_t)T);
	for (int64_t t = 0; t < T; t++)
		hp.tok_lora[t] = b->seq_slot[p->tok_seq[t]] >= 0 ? b->seq_slot[p->tok_seq[t]] + 1 : 0; /* slot + 1 */
	int64_t n_attn = 0;
	for (int64_t i = 0; i < S; i++) {
		int32_t off = p->seq_off[i], len = p->seq_off[i + 1] - off;
		for (int32_t c = 0; c < len; c += e->qt) {
			hp.attn_items[2 * n_attn] = off + c;
			hp.attn_items[2 * n_attn + 1] = std::min<int32_t>(e->qt, len - c);
			n_attn++;
		}
	}
	int64_t n_li = 0, n_lt = 0;
	for (int32_t g = 0; g < p->n_segs; g++) {
		int64_t first = n_lt;
		for (int32_t k = p->seg_start[g]; k < p->seg_start[g + 1]; k++) {
			int32_t s = p->seg_seqs[k];
			for (int32_t t = p->seq_off[s]; t < p->seq_off[s + 1]; t++)
				hp.lora_tok[n_lt++] = t;
		}
		for (int64_t c = first; c < n_lt; c += NZ_LORA_TM) {
			hp.lora_items[3 * n_li] = (int32_t)c;
			hp.lora_items[3 * n_li + 1] = (int32_t)std::min<int64_t>(NZ_LORA_TM, n_lt - c);
			hp.lora_items[3 * n_li + 2] = p->seg_slot[g];
			n_li++;
		}
	}
	for (int64_t i = 0; i < ns; i++) {
		int32_t s = p->sample_seq[i];
		nz_sample_in &si = hp.samples[i];
		si.token = p->sample_tok[i];
		if (i < p->n_sample) {
			si.temperature = b->temperature[s];
			si.top_p = b->top_p[s];
			si.top_k = b->top_k[s];
			si.target = -1;
			si.u = si.temperature > 0 ? nz_rng_uniform(b->seed[s], (int64_t)b->seq_pos[s] + b->seq_len[s]) : 0.0;
		} else { /* a scored token */
			si.temperature = 0;
			si.top_p = 1;
			si.top_k = 0;
			si.target = p->row_force[i];
			si.u = 0;
		}
	}
	for (int64_t i = 0; i < S; i++) {
		int64_t need = nz_ceil_div((int64_t)b->seq_pos[i] + b->seq_len[i], bs);
		memcpy(hp.bt + i * W, b->block_table + i * b->max_blocks, 4 * (size_t)need);
		for (int64_t j = need; j < W; j++)
			hp.bt[i * W + j] = 0;
	}
	hp.scalars[NZ_SC_BT_WIDTH] = (int32_t)W;
	hp.scalars[NZ_SC_LORA_ITEMS] = (int32_t)n_li;
	hp.scalars[NZ_SC_N_TOP] = (int32_t)b->n_top;
	hp.scalars[NZ_SC_N_BIAS] = (int32_t)n_bias;
	hp.scalars[NZ_SC_BIAS_AT] = (int32_t)(lay.bias - lay.scalars);
	hp.scalars[NZ_SC_N_MASK] = (int32_t)n_mask;
	hp.scalars[NZ_SC_MASK_ROWS_AT] = (int32_t)(lay.mask_rows - lay.scalars);
	hp.scalars[NZ_SC_MASK_AT] = (int32_t)(lay.mask - lay.scalars);
	if (n_mask > 0) {
		const int64_t MW = (e->V + 31) / 32;
		int32_t *rows = (int32_t *)(hm + lay.mask_rows);
		uint32_t *words = (uint32_t *)(hm + lay.mask);
		for (int64_t i = 0, k = 0; i < p->n_sample; i++) {
			int32_t r = b->seq_allow[p->sample_seq[i]];
			if (r < 0)
				continue;
			rows[k] = (int32_t)i;
			memcpy(words + k * MW, b->allow + (int64_t)r * MW, 4 * (size_t)MW);
			k++;
		}
	}
	if (n_bias > 0) {
		nz_bias_entry *be = (nz_bias_entry *)(hm + lay.bias);
		for (int64_t i = 0, k = 0; i < p->n_sample; i++) {
			int32_t s = p->sample_seq[i];
			for (int32_t j = b->bias_off[s]; j < b->bias_off[s + 1]; j++, k++) {
				be[k].row = (int32_t)i;
				be[k].token = b->bias_token[j];
				be[k].value = b->bias_value[j];
			}
		}
	}

	if (e->upload_pending) {
		CUDA_TRY(cudaStreamWaitEvent(e->stream, e->upload_ev, 0), what);
		e->upload_pending = 0;
	}
	CUDA_TRY(cudaMemcpyAsync(e->d_meta, hm, lay.end, cudaMemcpyHostToDevice, e->stream), "nz_step: metadata copy");

	int ran = 0;
	if (decode_only && e->use_graphs)
		NZ_TRY(run_graph(e, dp, T, ns, n_li == 0 ? 0 : 2 * n_li >= T ? 2 : 1, (n_bias > 0) | (n_mask > 0) << 1,
		                 &ran));
	if (!ran)
		NZ_TRY(forward(e, dp, T, n_attn, n_li, n_li, ns,
		               n_bias > 0 ? (int)std::min<int64_t>(kBiasGrid, nz_ceil_div(n_bias, 256)) : 0,
		               n_mask > 0 ? (int)std::min<int64_t>(kMaskGrid, nz_ceil_div(n_mask * ((e->V + 31) / 32), 256))
		                          : 0));

	if (ns > 0) {
		CUDA_TRY(cudaMemcpyAsync(e->h_out, e->d_out, sizeof(nz_sample_out) * (size_t)ns, cudaMemcpyDeviceToHost,
		                         e->stream),
		         "nz_step: result copy");
		if (b->out_logits) {
			for (int64_t i = 0; i < p->n_sample; i++) {
				int64_t j = i; /* a run of consecutive sequences goes in one copy */
				while (j + 1 < p->n_sample && p->sample_seq[j + 1] == p->sample_seq[j] + 1)
					j++;
				CUDA_TRY(cudaMemcpyAsync(b->out_logits + (size_t)p->sample_seq[i] * (size_t)e->V,
				                         e->logits + (size_t)i * (size_t)e->V, 4 * (size_t)(e->V * (j - i + 1)),
				                         cudaMemcpyDeviceToHost, e->stream),
				         "nz_step: logits copy");
				i = j;
			}
		}
	}
	CUDA_TRY(cudaStreamSynchronize(e->stream), what);
	for (int64_t i = 0; i < ns; i++) {
		const nz_sample_out &o = e->h_out[i];
		int32_t scratch, *tok, *top_tok;
		float *lp, *top_lp;
		nz_row_dst(b, p, i, &scratch, &tok, &lp, &top_tok, &top_lp);
		*tok = o.token;
		*lp = o.logprob;
		if (b->n_top > 0) {
			memcpy(top_tok, o.top_token, 4 * (size_t)b->n_top);
			memcpy(top_lp, o.top_logprob, 4 * (size_t)b->n_top);
		}
	}
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Read bandwidth probe
 * ------------------------------------------------------------------------- */

int32_t cuda_bench_read_bandwidth(int64_t bytes, int32_t iters, int32_t num_threads, double *out)
{
	const char *what = "nz_bench_read_bandwidth";
	(void)num_threads;
	int count = 0;
	cudaError_t err = cudaGetDeviceCount(&count);
	if (err != cudaSuccess || count == 0) {
		cudaGetLastError();
		return nz_error(NZ_ERR_DEVICE, "no CUDA device: %s",
		                err != cudaSuccess ? cudaGetErrorString(err) : "the driver reports no device");
	}
	int dev = 0;
	CUDA_TRY(cudaGetDevice(&dev), what);
	cudaDeviceProp prop;
	CUDA_TRY(cudaGetDeviceProperties(&prop, dev), what);
	bytes &= ~(int64_t)15;
	void *buf = NULL;
	unsigned *sink = NULL;
	cudaStream_t s = NULL;
	cudaEvent_t t0 = NULL, t1 = NULL;
	int32_t st = dev_alloc(&buf, (size_t)bytes, what);
	if (st == NZ_OK)
		st = dev_alloc((void **)&sink, 16, what);
	if (st == NZ_OK && ((err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) != cudaSuccess ||
	                    (err = cudaEventCreate(&t0)) != cudaSuccess || (err = cudaEventCreate(&t1)) != cudaSuccess ||
	                    (err = cudaMemsetAsync(buf, 1, (size_t)bytes, s)) != cudaSuccess))
		st = cuda_fail(err, what);
	int blocks = prop.multiProcessorCount * 8;
	float ms = 0;
	if (st == NZ_OK) {
		err = nz_k_read(s, buf, bytes, sink, blocks); /* warm up */
		if (err == cudaSuccess)
			err = cudaEventRecord(t0, s);
		for (int32_t i = 0; i < iters && err == cudaSuccess; i++)
			err = nz_k_read(s, buf, bytes, sink, blocks);
		if (err == cudaSuccess)
			err = cudaEventRecord(t1, s);
		if (err == cudaSuccess)
			err = cudaEventSynchronize(t1);
		if (err == cudaSuccess)
			err = cudaEventElapsedTime(&ms, t0, t1);
		if (err != cudaSuccess)
			st = cuda_fail(err, what);
	}
	if (t0)
		cudaEventDestroy(t0);
	if (t1)
		cudaEventDestroy(t1);
	if (s)
		cudaStreamDestroy(s);
	cudaFree(buf);
	cudaFree(sink);
	if (st == NZ_OK)
		*out = ms > 0 ? (double)bytes * (double)iters / ((double)ms * 1e-3) : 0.0;
	return st;
}

const nz_backend_ops cuda_ops = {
    cuda_describe,  cuda_create,       cuda_set_tensor, cuda_finalize, cuda_info,
    cuda_adapter_load, cuda_adapter_clear, cuda_step,    cuda_destroy,  cuda_bench_read_bandwidth,
};

} // namespace

extern "C" const nz_backend_ops *nz_default_backend(void) { return &cuda_ops; }
