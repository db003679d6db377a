/*
 * api.c — the exported nz_* functions (nozzle_engine.h).
 *
 * Backend-neutral: validates every argument the same way for all backends,
 * keeps the thread's last error, resolves sizing defaults, tracks which
 * tensors were set, derives the step plan and dispatches through the
 * backend's nz_backend_ops (backend.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"

struct nz_engine {
	const nz_backend_ops *ops;
	void *impl;
	nz_config cfg; /* sizing defaults resolved */
	int finalized;
	/* have[kind] for global kinds, have[(layer+1)·NZ_T_COUNT + kind] per layer */
	uint8_t *have;
	/* step plan storage (nz_step_plan) */
	int32_t *seq_off, *tok_seq, *tok_pos;
	int32_t *seg_slot, *seg_start, *seg_seqs, *slot_count;
	int32_t *sample_seq, *sample_tok, *row_force;
	/* block-table checks: blocks written in this step are stamped */
	uint64_t *blk_stamp;
	int64_t *blk_owner; /* seq·max_blocks + table index of the writer */
	uint64_t stamp;
	/* logit-adjustment checks: a sequence's tokens are stamped */
	uint64_t *tok_stamp;
	uint64_t tstamp;
	int32_t *layer_sliding; /* [num_layers]: cfg.layer_sliding of the backends */
	float *rope_ext_factors; /* [rotary_dim/2] or NULL: cfg.rope_ext_factors of the backends */
};

/* Upper bounds that keep every size product far from overflow. */
#define DIM_MAX (1LL << 24)
#define SMALL_MAX 4096

int32_t NZ_API nz_abi_version(void) { return NZ_ABI_VERSION; }

int64_t NZ_API nz_struct_size(int32_t which)
{
	switch (which) {
	case NZ_STRUCT_CONFIG:
		return (int64_t)sizeof(nz_config);
	case NZ_STRUCT_BATCH:
		return (int64_t)sizeof(nz_batch);
	default:
		return -1;
	}
}

const char NZ_API *nz_last_error(void) { return nz_error_message(); }

int32_t NZ_API nz_backend_name(char *buf, int64_t n)
{
	if (!buf || n < 1)
		return nz_error(NZ_ERR_INVALID, "nz_backend_name: buf is NULL or n %lld < 1", (long long)n);
	nz_default_backend()->describe(buf, (size_t)n);
	buf[n - 1] = 0;
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Create
 * ------------------------------------------------------------------------- */

#define FN_CREATE "nz_engine_create"

static int32_t check_range(const char *fn, const char *name, int64_t v, int64_t lo, int64_t hi)
{
	if (v < lo || v > hi)
		return nz_error(NZ_ERR_INVALID, "%s: %s is %lld, want %lld..%lld", fn, name, (long long)v,
		                (long long)lo, (long long)hi);
	return NZ_OK;
}

static int32_t check_config(nz_config *c)
{
	int32_t st;
#define RANGE(field, lo, hi)                                                   \
	if ((st = check_range(FN_CREATE, #field, c->field, lo, hi)) != NZ_OK) \
	return st
	RANGE(vocab_size, 1, DIM_MAX);
	RANGE(hidden_size, 1, DIM_MAX);
	RANGE(intermediate_size, 1, DIM_MAX);
	RANGE(num_layers, 1, SMALL_MAX);
	RANGE(num_heads, 1, SMALL_MAX);
	RANGE(num_kv_heads, 1, SMALL_MAX);
	RANGE(head_dim, 2, SMALL_MAX);
	RANGE(max_position, 1, INT32_MAX);
	RANGE(rope_type, NZ_ROPE_DEFAULT, NZ_ROPE_LONGROPE);
	RANGE(rotary_dim, 0, SMALL_MAX);
	RANGE(sliding_window, 0, INT32_MAX);
	RANGE(sliding_window_from_layer, 0, INT32_MAX);
	RANGE(tie_word_embeddings, 0, 1);
	RANGE(weight_dtype, NZ_F32, NZ_Q8);
	RANGE(max_slots, 0, SMALL_MAX);
	RANGE(max_rank, 0, SMALL_MAX);
	RANGE(kv_block_size, 0, SMALL_MAX);
	RANGE(kv_num_blocks, 0, INT32_MAX);
	RANGE(kv_memory_bytes, 0, INT64_MAX);
	RANGE(max_batch_tokens, 0, 1 << 20);
	RANGE(max_batch_seqs, 0, 1 << 20);
	RANGE(num_threads, 0, SMALL_MAX);
	RANGE(device_index, 0, SMALL_MAX);
	RANGE(kv_f32, 0, 1);
#undef RANGE
	if (c->head_dim % 2)
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": head_dim %lld is odd (RoPE needs pairs)",
		                (long long)c->head_dim);
	if (c->num_heads % c->num_kv_heads)
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": num_heads %lld is not a multiple of num_kv_heads %lld",
		                (long long)c->num_heads, (long long)c->num_kv_heads);
	if (c->num_heads * c->head_dim > DIM_MAX)
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": num_heads·head_dim %lld is too large",
		                (long long)(c->num_heads * c->head_dim));
	if (!(c->rms_norm_eps >= 0) || !isfinite(c->rms_norm_eps))
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": rms_norm_eps %g must be finite and >= 0", c->rms_norm_eps);
	if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": rope_theta %g must be finite and > 0", c->rope_theta);
	if (!c->rotary_dim)
		c->rotary_dim = c->head_dim;
	if (c->rotary_dim % 2 || c->rotary_dim < 2 || c->rotary_dim > c->head_dim)
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": rotary_dim %lld must be even and in 2..head_dim (%lld)",
		                (long long)c->rotary_dim, (long long)c->head_dim);
	if (c->rope_type == NZ_ROPE_LONGROPE) {
		if (!c->rope_ext_factors)
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": longrope needs rope_ext_factors");
		for (int64_t j = 0; j < c->rotary_dim / 2; j++)
			if (!(c->rope_ext_factors[j] > 0) || !isfinite(c->rope_ext_factors[j]))
				return nz_error(NZ_ERR_INVALID, FN_CREATE ": rope_ext_factors[%lld] %g must be finite and > 0",
				                (long long)j, (double)c->rope_ext_factors[j]);
		if (!(c->rope_attention_factor > 0) || !isfinite(c->rope_attention_factor))
			return nz_error(NZ_ERR_INVALID,
			                FN_CREATE ": longrope needs a finite rope_attention_factor > 0, got %g",
			                c->rope_attention_factor);
	} else if (c->rope_ext_factors) {
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": rope_ext_factors is set for a rope_type other than longrope");
	}
	if (c->rope_type != NZ_ROPE_DEFAULT && c->rope_type != NZ_ROPE_LONGROPE &&
	    (!(c->rope_factor > 0) || !isfinite(c->rope_factor)))
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": rope_factor %g must be finite and > 0", c->rope_factor);
	if (c->rope_type == NZ_ROPE_LLAMA3) {
		if (!(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
		    !isfinite(c->rope_high_freq_factor))
			return nz_error(NZ_ERR_INVALID,
			                FN_CREATE ": llama3 rope needs 0 < rope_low_freq_factor (%g) < "
			                          "rope_high_freq_factor (%g)",
			                c->rope_low_freq_factor, c->rope_high_freq_factor);
		if (c->rope_original_max_position < 1)
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": llama3 rope needs rope_original_max_position >= 1, got %lld",
			                (long long)c->rope_original_max_position);
	}
	if (c->rope_type == NZ_ROPE_YARN) {
		if (!(c->rope_beta_fast > 0) || !isfinite(c->rope_beta_fast) || !(c->rope_beta_slow > 0) ||
		    !isfinite(c->rope_beta_slow))
			return nz_error(NZ_ERR_INVALID,
			                FN_CREATE ": yarn rope needs finite rope_beta_fast (%g) and rope_beta_slow (%g) > 0",
			                c->rope_beta_fast, c->rope_beta_slow);
		if (!(c->rope_attention_factor > 0) || !isfinite(c->rope_attention_factor))
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": yarn rope needs a finite rope_attention_factor > 0, got %g",
			                c->rope_attention_factor);
		if (c->rope_original_max_position < 1)
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": yarn rope needs rope_original_max_position >= 1, got %lld",
			                (long long)c->rope_original_max_position);
		if (c->rope_truncate != 0 && c->rope_truncate != 1)
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": rope_truncate %lld must be 0 or 1",
			                (long long)c->rope_truncate);
		if (c->rope_theta == 1)
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": yarn rope needs rope_theta != 1 (ln theta divides)");
	}
	if ((st = check_range(FN_CREATE, "hidden_act", c->hidden_act, NZ_ACT_SILU, NZ_ACT_GELU_TANH)) != NZ_OK)
		return st;
	{
		const struct {
			const char *name;
			double v;
		} nn[] = {{"norm_weight_offset", c->norm_weight_offset}, {"embed_scale", c->embed_scale},
		          {"attn_scale", c->attn_scale},                 {"attn_softcap", c->attn_softcap},
		          {"final_softcap", c->final_softcap},           {"rope_local_theta", c->rope_local_theta}};
		for (size_t i = 0; i < sizeof nn / sizeof nn[0]; i++)
			if (!isfinite(nn[i].v) || (i > 0 && nn[i].v < 0))
				return nz_error(NZ_ERR_INVALID, FN_CREATE ": %s %g must be finite%s", nn[i].name, nn[i].v,
				                i > 0 ? " and >= 0" : "");
	}
	if (c->layer_sliding)
		for (int64_t l = 0; l < c->num_layers; l++)
			if (c->layer_sliding[l] != 0 && c->layer_sliding[l] != 1)
				return nz_error(NZ_ERR_INVALID, FN_CREATE ": layer_sliding[%lld] is %d, want 0 or 1",
				                (long long)l, c->layer_sliding[l]);
	for (int i = 0; i < 7; i++)
		if (c->reserved[i])
			return nz_error(NZ_ERR_INVALID, FN_CREATE ": reserved[%d] is %lld, want 0", i,
			                (long long)c->reserved[i]);
	/* sizing defaults */
	if (!c->max_slots)
		c->max_slots = NZ_DEFAULT_MAX_SLOTS;
	if (!c->max_rank)
		c->max_rank = NZ_DEFAULT_MAX_RANK;
	if (!c->kv_block_size)
		c->kv_block_size = NZ_DEFAULT_KV_BLOCK_SIZE;
	if (!c->max_batch_tokens)
		c->max_batch_tokens = NZ_DEFAULT_MAX_BATCH_TOKENS;
	if (!c->max_batch_seqs)
		c->max_batch_seqs = NZ_DEFAULT_MAX_BATCH_SEQS;
	if (c->max_batch_seqs > c->max_batch_tokens)
		c->max_batch_seqs = c->max_batch_tokens; /* every sequence brings a token */
	return NZ_OK;
}

static void engine_free(nz_engine *e)
{
	if (!e)
		return;
	if (e->impl)
		e->ops->destroy(e->impl);
	nz_free(e->have);
	nz_free(e->seq_off);
	nz_free(e->tok_seq);
	nz_free(e->tok_pos);
	nz_free(e->seg_slot);
	nz_free(e->seg_start);
	nz_free(e->seg_seqs);
	nz_free(e->slot_count);
	nz_free(e->sample_seq);
	nz_free(e->sample_tok);
	nz_free(e->row_force);
	nz_free(e->blk_stamp);
	nz_free(e->blk_owner);
	nz_free(e->tok_stamp);
	nz_free(e->layer_sliding);
	nz_free(e->rope_ext_factors);
	nz_free(e);
}

int32_t NZ_API nz_engine_create(const nz_config *cfg, nz_engine **out)
{
	if (!cfg || !out)
		return nz_error(NZ_ERR_INVALID, FN_CREATE ": cfg or out is NULL");
	*out = NULL;
	nz_config c = *cfg;
	int32_t st = check_config(&c);
	if (st != NZ_OK)
		return st;
	nz_engine *e = nz_calloc(sizeof *e);
	if (!e)
		return nz_oom(FN_CREATE, sizeof *e);
	/* The engine's own copy of the layers' sliding flags, resolved from
	 * sliding_window_from_layer when the caller gives none: the backends
	 * read it for as long as the engine lives. */
	e->layer_sliding = nz_alloc((size_t)c.num_layers * sizeof(int32_t));
	if (!e->layer_sliding) {
		engine_free(e);
		return nz_oom(FN_CREATE, (size_t)c.num_layers * sizeof(int32_t));
	}
	for (int64_t l = 0; l < c.num_layers; l++)
		e->layer_sliding[l] = c.sliding_window > 0 &&
		                      (c.layer_sliding ? c.layer_sliding[l] : l >= c.sliding_window_from_layer);
	c.layer_sliding = e->layer_sliding;
	if (c.rope_ext_factors) { /* the same for longrope's factors */
		size_t n = (size_t)(c.rotary_dim / 2) * sizeof(float);
		e->rope_ext_factors = nz_alloc(n);
		if (!e->rope_ext_factors) {
			engine_free(e);
			return nz_oom(FN_CREATE, n);
		}
		memcpy(e->rope_ext_factors, c.rope_ext_factors, n);
		c.rope_ext_factors = e->rope_ext_factors;
	}
	e->ops = nz_default_backend();
	st = e->ops->create(&c, &e->impl);
	if (st != NZ_OK) {
		e->impl = NULL;
		engine_free(e);
		return st;
	}
	e->cfg = c;
	int64_t T = c.max_batch_tokens, S = c.max_batch_seqs, NB = c.kv_num_blocks;
	size_t have_n = (size_t)(c.num_layers + 1) * NZ_T_COUNT;
	e->have = nz_calloc(have_n);
	e->seq_off = nz_alloc((size_t)(S + 1) * 4);
	e->tok_seq = nz_alloc((size_t)T * 4);
	e->tok_pos = nz_alloc((size_t)T * 4);
	e->seg_slot = nz_alloc((size_t)(c.max_slots + 1) * 4);
	e->seg_start = nz_alloc((size_t)(c.max_slots + 2) * 4);
	e->seg_seqs = nz_alloc((size_t)S * 4);
	e->slot_count = nz_alloc((size_t)(c.max_slots + 1) * 4);
	e->sample_seq = nz_alloc((size_t)S * 4);
	e->sample_tok = nz_alloc((size_t)S * 4);
	e->row_force = nz_alloc((size_t)S * 4);
	e->blk_stamp = nz_calloc((size_t)NB * 8);
	e->blk_owner = nz_alloc((size_t)NB * 8);
	e->tok_stamp = nz_calloc((size_t)c.vocab_size * 8);
	if (!e->have || !e->seq_off || !e->tok_seq || !e->tok_pos || !e->seg_slot || !e->seg_start ||
	    !e->seg_seqs || !e->slot_count || !e->sample_seq || !e->sample_tok || !e->row_force || !e->blk_stamp ||
	    !e->blk_owner || !e->tok_stamp) {
		engine_free(e);
		return nz_oom(FN_CREATE " (step plan)",
		              (size_t)T * 8 + (size_t)S * 20 + (size_t)NB * 16 + (size_t)c.vocab_size * 8);
	}
	*out = e;
	return NZ_OK;
}

void NZ_API nz_engine_destroy(nz_engine *e) { engine_free(e); }

/* ---------------------------------------------------------------------------
 * Tensors, finalize, info
 * ------------------------------------------------------------------------- */

#define FN_SET "nz_engine_set_tensor"

static void format_shape(char *buf, size_t n, const int64_t *shape, int32_t ndim)
{
	size_t o = 0;
	o += (size_t)snprintf(buf + o, n - o, "[");
	for (int32_t i = 0; i < ndim && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)shape[i]);
	if (o < n)
		snprintf(buf + o, n - o, "]");
}

static void format_what(char *buf, size_t n, int32_t kind, int32_t layer)
{
	if (nz_kind_per_layer(kind))
		snprintf(buf, n, "%s of layer %d", nz_kind_name(kind), layer);
	else
		snprintf(buf, n, "%s", nz_kind_name(kind));
}

int32_t NZ_API nz_engine_set_tensor(nz_engine *e, int32_t kind, int32_t layer, int32_t dtype, const void *data,
                                    const int64_t *shape, int32_t ndim)
{
	if (!e)
		return nz_error(NZ_ERR_INVALID, FN_SET ": engine is NULL");
	if (kind < 0 || kind >= NZ_T_COUNT)
		return nz_error(NZ_ERR_INVALID, FN_SET ": kind %d is not an NZ_T_* value", kind);
	if (nz_kind_per_layer(kind)) {
		if (layer < 0 || layer >= e->cfg.num_layers)
			return nz_error(NZ_ERR_INVALID, FN_SET ": layer %d of %s is out of range 0..%lld", layer,
			                nz_kind_name(kind), (long long)e->cfg.num_layers - 1);
	} else if (layer != -1) {
		return nz_error(NZ_ERR_INVALID, FN_SET ": %s takes layer -1, got %d", nz_kind_name(kind), layer);
	}
	char what[64];
	format_what(what, sizeof what, kind, layer);
	if (nz_dtype_size(dtype) == 0)
		return nz_error(NZ_ERR_INVALID, FN_SET ": %s has dtype %d, want NZ_F32, NZ_F16 or NZ_BF16", what, dtype);
	if (!data || !shape)
		return nz_error(NZ_ERR_INVALID, FN_SET ": %s: data or shape is NULL", what);
	int64_t want[2];
	int wn = nz_tensor_shape(&e->cfg, kind, want);
	int ok = ndim == wn;
	for (int i = 0; ok && i < wn; i++)
		ok = shape[i] == want[i];
	if (!ok) {
		char got_s[96], want_s[64];
		if (ndim < 0 || ndim > 8)
			snprintf(got_s, sizeof got_s, "%d dimensions", ndim);
		else
			format_shape(got_s, sizeof got_s, shape, ndim);
		format_shape(want_s, sizeof want_s, want, wn);
		return nz_error(NZ_ERR_INVALID, FN_SET ": %s has shape %s, want %s", what, got_s, want_s);
	}
	if (kind == NZ_T_LM_HEAD && e->cfg.tie_word_embeddings)
		return NZ_OK; /* tied: logits use EMBED (as Hugging Face ties them) */
	int64_t n = wn == 2 ? want[0] * want[1] : want[0];
	int32_t st = e->ops->set_tensor(e->impl, kind, layer, dtype, data, n);
	if (st == NZ_OK)
		e->have[(nz_kind_per_layer(kind) ? (size_t)(layer + 1) * NZ_T_COUNT : 0) + (size_t)kind] = 1;
	return st;
}

int32_t NZ_API nz_engine_finalize(nz_engine *e)
{
	if (!e)
		return nz_error(NZ_ERR_INVALID, "nz_engine_finalize: engine is NULL");
	if (e->finalized)
		return NZ_OK;
	static const int32_t global[] = {NZ_T_EMBED, NZ_T_FINAL_NORM, NZ_T_LM_HEAD};
	for (size_t i = 0; i < sizeof global / sizeof global[0]; i++) {
		int32_t k = global[i];
		if (k == NZ_T_LM_HEAD && e->cfg.tie_word_embeddings)
			continue;
		if (!e->have[k])
			return nz_error(NZ_ERR_INVALID, "nz_engine_finalize: missing tensor %s", nz_kind_name(k));
	}
	for (int64_t l = 0; l < e->cfg.num_layers; l++)
		for (int32_t k = NZ_T_ATTN_NORM; k <= NZ_T_DOWN; k++)
			if (!e->have[(size_t)(l + 1) * NZ_T_COUNT + (size_t)k])
				return nz_error(NZ_ERR_INVALID, "nz_engine_finalize: missing tensor %s of layer %lld",
				                nz_kind_name(k), (long long)l);
	/* optional pairs, each kind in every layer or in none, the two
	 * together: Qwen3's and Gemma 3's q and k head norms, Gemma's post norms */
	static const int32_t pairs[][2] = {{NZ_T_Q_NORM, NZ_T_K_NORM}, {NZ_T_POST_ATTN_NORM, NZ_T_POST_FFN_NORM}};
	for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
		int64_t with[2] = {0, 0};
		for (int j = 0; j < 2; j++) {
			int32_t k = pairs[i][j];
			for (int64_t l = 0; l < e->cfg.num_layers; l++)
				with[j] += e->have[(size_t)(l + 1) * NZ_T_COUNT + (size_t)k];
			if (with[j] != 0 && with[j] != e->cfg.num_layers)
				return nz_error(NZ_ERR_INVALID, "nz_engine_finalize: %s is set in %lld of %lld layers, want all or none",
				                nz_kind_name(k), (long long)with[j], (long long)e->cfg.num_layers);
		}
		if (with[0] != with[1])
			return nz_error(NZ_ERR_INVALID, "nz_engine_finalize: %s and %s come together", nz_kind_name(pairs[i][0]),
			                nz_kind_name(pairs[i][1]));
	}
	int32_t st = e->ops->finalize(e->impl);
	if (st == NZ_OK)
		e->finalized = 1;
	return st;
}

int32_t NZ_API nz_engine_info(nz_engine *e, int64_t *out, int32_t n)
{
	if (!e || !out)
		return nz_error(NZ_ERR_INVALID, "nz_engine_info: engine or out is NULL");
	if (n < 0 || n > NZ_INFO_COUNT)
		return nz_error(NZ_ERR_INVALID, "nz_engine_info: n is %d, want 0..%d", n, NZ_INFO_COUNT);
	int64_t all[NZ_INFO_COUNT] = {0};
	e->ops->info(e->impl, all);
	memcpy(out, all, (size_t)n * sizeof *out);
	return NZ_OK;
}

/* ---------------------------------------------------------------------------
 * Adapters
 * ------------------------------------------------------------------------- */

#define FN_LOAD "nz_adapter_load"

static int32_t check_slot(const nz_engine *e, const char *fn, int32_t slot)
{
	if (!e->finalized)
		return nz_error(NZ_ERR_INVALID, "%s: the engine is not finalized (call nz_engine_finalize first)", fn);
	if (slot < 0 || slot >= e->cfg.max_slots)
		return nz_error(NZ_ERR_INVALID, "%s: slot %d is out of range 0..%lld", fn, slot,
		                (long long)e->cfg.max_slots - 1);
	return NZ_OK;
}

/* Validates the entries of nz_adapter_load into ent[0..n). */
static int32_t check_entries(const nz_engine *e, int32_t n, const int32_t *layer, const int32_t *module,
                             const int32_t *rank, const float *scale, const int32_t *a_dtype, const void *const *a,
                             const int32_t *b_dtype, const void *const *b, nz_lora_entry *ent, uint8_t *seen)
{
	int64_t L = e->cfg.num_layers;
	for (int32_t j = 0; j < n; j++) {
		if (layer[j] < 0 || layer[j] >= L)
			return nz_error(NZ_ERR_INVALID, FN_LOAD ": entry %d: layer %d is out of range 0..%lld", j, layer[j],
			                (long long)L - 1);
		if (module[j] < 0 || module[j] >= NZ_M_COUNT)
			return nz_error(NZ_ERR_INVALID, FN_LOAD ": entry %d: module %d is not an NZ_M_* value", j, module[j]);
		const char *mn = nz_module_name(module[j]);
		if (rank[j] < 1 || rank[j] > e->cfg.max_rank)
			return nz_error(NZ_ERR_INVALID, FN_LOAD ": entry %d (layer %d %s): rank %d is out of range 1..%lld", j,
			                layer[j], mn, rank[j], (long long)e->cfg.max_rank);
		if (nz_dtype_size(a_dtype[j]) == 0 || nz_dtype_size(b_dtype[j]) == 0)
			return nz_error(NZ_ERR_INVALID,
			                FN_LOAD ": entry %d (layer %d %s): dtypes %d/%d, want NZ_F32, NZ_F16 or NZ_BF16", j,
			                layer[j], mn, a_dtype[j], b_dtype[j]);
		if (!a[j] || !b[j])
			return nz_error(NZ_ERR_INVALID, FN_LOAD ": entry %d (layer %d %s): A or B is NULL", j, layer[j], mn);
		if (!isfinite(scale[j]))
			return nz_error(NZ_ERR_INVALID, FN_LOAD ": entry %d (layer %d %s): scale %g is not finite", j, layer[j],
			                mn, (double)scale[j]);
		if (seen[layer[j] * NZ_M_COUNT + module[j]]++)
			return nz_error(NZ_ERR_INVALID, FN_LOAD ": entry %d: layer %d %s is listed twice", j, layer[j], mn);
		ent[j] = (nz_lora_entry){.layer = layer[j], .module = module[j], .rank = rank[j], .a_dtype = a_dtype[j],
		                         .b_dtype = b_dtype[j], .scale = scale[j], .a = a[j], .b = b[j]};
	}
	return NZ_OK;
}

int32_t NZ_API nz_adapter_load(nz_engine *e, int32_t slot, int32_t n, const int32_t *layer, const int32_t *module,
                               const int32_t *rank, const float *scale, const int32_t *a_dtype,
                               const void *const *a, const int32_t *b_dtype, const void *const *b)
{
	if (!e)
		return nz_error(NZ_ERR_INVALID, FN_LOAD ": engine is NULL");
	int32_t st = check_slot(e, FN_LOAD, slot);
	if (st != NZ_OK)
		return st;
	int64_t L = e->cfg.num_layers;
	nz_lora_entry *ent = NULL;
	uint8_t *seen = NULL;
	if (n < 0 || n > L * NZ_M_COUNT) {
		st = nz_error(NZ_ERR_INVALID, FN_LOAD ": n is %d, want 0..%lld (layers × modules)", n,
		              (long long)(L * NZ_M_COUNT));
	} else if (n > 0 && (!layer || !module || !rank || !scale || !a_dtype || !a || !b_dtype || !b)) {
		st = nz_error(NZ_ERR_INVALID, FN_LOAD ": an argument array is NULL");
	} else {
		ent = nz_alloc((size_t)(n ? n : 1) * sizeof *ent);
		seen = nz_calloc((size_t)(L * NZ_M_COUNT));
		if (!ent || !seen)
			st = nz_oom(FN_LOAD, (size_t)n * sizeof *ent);
		else
			st = check_entries(e, n, layer, module, rank, scale, a_dtype, a, b_dtype, b, ent, seen);
		if (st == NZ_OK)
			st = e->ops->adapter_load(e->impl, slot, n, ent);
	}
	nz_free(ent);
	nz_free(seen);
	if (st != NZ_OK)
		e->ops->adapter_clear(e->impl, slot); /* on failure the slot is left empty */
	return st;
}

int32_t NZ_API nz_adapter_clear(nz_engine *e, int32_t slot)
{
	if (!e)
		return nz_error(NZ_ERR_INVALID, "nz_adapter_clear: engine is NULL");
	int32_t st = check_slot(e, "nz_adapter_clear", slot);
	if (st != NZ_OK)
		return st;
	return e->ops->adapter_clear(e->impl, slot);
}

/* ---------------------------------------------------------------------------
 * Step
 * ------------------------------------------------------------------------- */

#define FN_STEP "nz_step"

/* The logit adjustments (nz_batch.bias_off): offsets that start at 0 and
 * never decrease, and per sampled sequence distinct tokens in range with
 * finite values. */
static int32_t check_bias(nz_engine *e, const nz_batch *b)
{
	const int64_t V = e->cfg.vocab_size;
	if (b->bias_off[0] != 0)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": bias_off[0] is %d, want 0", b->bias_off[0]);
	for (int64_t i = 0; i < b->n_seqs; i++)
		if (b->bias_off[i + 1] < b->bias_off[i])
			return nz_error(NZ_ERR_INVALID, FN_STEP ": bias_off[%lld] is %d, less than bias_off[%lld] %d",
			                (long long)i + 1, b->bias_off[i + 1], (long long)i, b->bias_off[i]);
	if (b->bias_off[b->n_seqs] > 0 && (!b->bias_token || !b->bias_value))
		return nz_error(NZ_ERR_INVALID, FN_STEP ": bias_off gives %d adjustments but bias_token or bias_value is NULL",
		                b->bias_off[b->n_seqs]);
	for (int64_t i = 0; i < b->n_seqs; i++) {
		if (!b->seq_sample[i])
			continue;
		uint64_t stamp = ++e->tstamp;
		for (int32_t j = b->bias_off[i]; j < b->bias_off[i + 1]; j++) {
			int32_t t = b->bias_token[j];
			if (t < 0 || t >= V)
				return nz_error(NZ_ERR_INVALID, FN_STEP ": bias_token[%d] is %d, want 0..%lld", j, t,
				                (long long)V - 1);
			if (!isfinite(b->bias_value[j]))
				return nz_error(NZ_ERR_INVALID, FN_STEP ": bias_value[%d] is %g, want a finite value", j,
				                (double)b->bias_value[j]);
			if (e->tok_stamp[t] == stamp)
				return nz_error(NZ_ERR_INVALID, FN_STEP ": sequence %lld adjusts token %d twice", (long long)i, t);
			e->tok_stamp[t] = stamp;
		}
	}
	return NZ_OK;
}

/* The token masks (nz_batch.seq_allow): rows in range, each used row
 * allowing a token of the vocabulary. */
static int32_t check_allow(nz_engine *e, const nz_batch *b)
{
	const int64_t V = e->cfg.vocab_size, W = (V + 31) / 32;
	if (b->n_allow < 0 || b->n_allow > b->n_seqs)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": n_allow is %lld, want 0..%lld (n_seqs)", (long long)b->n_allow,
		                (long long)b->n_seqs);
	if (b->n_allow > 0 && !b->allow)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": n_allow is %lld but allow is NULL", (long long)b->n_allow);
	for (int64_t i = 0; i < b->n_seqs; i++) {
		int32_t r = b->seq_allow[i];
		if (r < -1 || r >= b->n_allow)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": seq_allow[%lld] is %d, want -1..%lld", (long long)i, r,
			                (long long)b->n_allow - 1);
		if (r < 0 || !b->seq_sample[i])
			continue;
		const uint32_t *row = b->allow + (int64_t)r * W;
		int any = 0;
		for (int64_t w = 0; w < W && !any; w++) {
			uint32_t bits = row[w];
			if (w == W - 1 && V % 32)
				bits &= (1u << (V % 32)) - 1;
			any = bits != 0;
		}
		if (!any)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": row %d of allow (sequence %lld) allows no token", r,
			                (long long)i);
	}
	return NZ_OK;
}

static int32_t check_batch(nz_engine *e, const nz_batch *b)
{
	const nz_config *c = &e->cfg;
	if (b->n_seqs < 1 || b->n_seqs > c->max_batch_seqs)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": n_seqs is %lld, want 1..%lld (max_batch_seqs)",
		                (long long)b->n_seqs, (long long)c->max_batch_seqs);
	if (b->n_tokens < b->n_seqs || b->n_tokens > c->max_batch_tokens)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": n_tokens is %lld, want %lld..%lld (max_batch_tokens)",
		                (long long)b->n_tokens, (long long)b->n_seqs, (long long)c->max_batch_tokens);
	if (!b->tokens || !b->seq_len || !b->seq_pos || !b->seq_slot || !b->seq_sample || !b->block_table)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": tokens, seq_len, seq_pos, seq_slot, seq_sample and "
		                                "block_table must not be NULL");
	if (b->max_blocks < 1 || b->max_blocks > INT32_MAX / 2)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": max_blocks is %lld, want >= 1", (long long)b->max_blocks);
	if (b->n_top < 0 || b->n_top > NZ_MAX_TOP)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": n_top is %lld, want 0..%d", (long long)b->n_top, NZ_MAX_TOP);

	int64_t bs = c->kv_block_size, nb = c->kv_num_blocks, total = 0, n_sample = 0;
	for (int64_t i = 0; i < b->n_seqs; i++) {
		int64_t len = b->seq_len[i], pos = b->seq_pos[i];
		if (len < 1 || len > b->n_tokens)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": seq_len[%lld] is %lld, want >= 1", (long long)i, (long long)len);
		if (pos < 0 || pos + len > c->max_position)
			return nz_error(NZ_ERR_INVALID,
			                FN_STEP ": sequence %lld covers positions %lld..%lld, want 0..%lld (max_position)",
			                (long long)i, (long long)pos, (long long)(pos + len - 1), (long long)c->max_position - 1);
		total += len;
		if (total > b->n_tokens)
			break;
		int32_t slot = b->seq_slot[i];
		if (slot < -1 || slot >= c->max_slots)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": seq_slot[%lld] is %d, want -1..%lld", (long long)i, slot,
			                (long long)c->max_slots - 1);
		int32_t smp = b->seq_sample[i];
		if (smp != 0 && smp != 1)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": seq_sample[%lld] is %d, want 0 or 1", (long long)i, smp);
		n_sample += smp;
		int64_t need = nz_ceil_div(pos + len, bs);
		if (need > b->max_blocks)
			return nz_error(NZ_ERR_INVALID,
			                FN_STEP ": sequence %lld needs %lld KV blocks for %lld positions, max_blocks is %lld",
			                (long long)i, (long long)need, (long long)(pos + len), (long long)b->max_blocks);
		const int32_t *bt = b->block_table + i * b->max_blocks;
		for (int64_t j = 0; j < need; j++)
			if (bt[j] < 0 || bt[j] >= nb)
				return nz_error(NZ_ERR_INVALID, FN_STEP ": block_table[%lld][%lld] is %d, want 0..%lld",
				                (long long)i, (long long)j, bt[j], (long long)nb - 1);
	}
	if (total != b->n_tokens)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": the seq_len sum to %s%lld, n_tokens is %lld",
		                total > b->n_tokens ? "more than " : "", (long long)total, (long long)b->n_tokens);
	for (int64_t t = 0; t < b->n_tokens; t++)
		if (b->tokens[t] < 0 || b->tokens[t] >= c->vocab_size)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": tokens[%lld] is %d, want 0..%lld", (long long)t, b->tokens[t],
			                (long long)c->vocab_size - 1);
	int64_t n_score = 0;
	if (b->score_target) {
		if (!b->out_score_logprob)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": score_target is set but out_score_logprob is NULL");
		if (b->n_top > 0 && (!b->out_score_top_token || !b->out_score_top_logprob))
			return nz_error(NZ_ERR_INVALID,
			                FN_STEP ": score_target is set and n_top is %lld but out_score_top_token or "
			                        "out_score_top_logprob is NULL",
			                (long long)b->n_top);
		for (int64_t t = 0; t < b->n_tokens; t++) {
			int32_t g = b->score_target[t];
			if (g < -1 || g >= c->vocab_size)
				return nz_error(NZ_ERR_INVALID, FN_STEP ": score_target[%lld] is %d, want -1..%lld", (long long)t, g,
				                (long long)c->vocab_size - 1);
			n_score += g >= 0;
		}
	}
	if (n_sample + n_score > c->max_batch_seqs)
		return nz_error(NZ_ERR_INVALID,
		                FN_STEP ": %lld sampled sequences and %lld scored tokens need %lld rows of logits, "
		                        "max_batch_seqs is %lld",
		                (long long)n_sample, (long long)n_score, (long long)(n_sample + n_score),
		                (long long)c->max_batch_seqs);
	if (n_sample > 0) {
		if (!b->temperature || !b->top_p || !b->top_k || !b->seed || !b->out_token || !b->out_logprob)
			return nz_error(NZ_ERR_INVALID, FN_STEP ": a sequence samples but temperature, top_p, top_k, seed, "
			                                "out_token or out_logprob is NULL");
		if (b->n_top > 0 && (!b->out_top_token || !b->out_top_logprob))
			return nz_error(NZ_ERR_INVALID, FN_STEP ": n_top is %lld but out_top_token or out_top_logprob is NULL",
			                (long long)b->n_top);
		for (int64_t i = 0; i < b->n_seqs; i++) {
			if (!b->seq_sample[i])
				continue;
			float t = b->temperature[i], p = b->top_p[i];
			if (!(t >= 0) || !isfinite(t))
				return nz_error(NZ_ERR_INVALID, FN_STEP ": temperature[%lld] is %g, want a finite value >= 0",
				                (long long)i, (double)t);
			if (!(p > 0 && p <= 1))
				return nz_error(NZ_ERR_INVALID, FN_STEP ": top_p[%lld] is %g, want (0, 1]", (long long)i, (double)p);
			if (b->top_k[i] < 0)
				return nz_error(NZ_ERR_INVALID, FN_STEP ": top_k[%lld] is %d, want >= 0", (long long)i, b->top_k[i]);
		}
	}
	if (b->bias_off) {
		int32_t st = check_bias(e, b);
		if (st != NZ_OK)
			return st;
	}
	if (b->seq_allow) {
		int32_t st = check_allow(e, b);
		if (st != NZ_OK)
			return st;
	}

	/* A block written in this step (it receives new positions) must belong
	 * to that one place only: no other table entry of this batch may name it. */
	uint64_t stamp = ++e->stamp;
	for (int64_t i = 0; i < b->n_seqs; i++) {
		int64_t pos = b->seq_pos[i], len = b->seq_len[i];
		const int32_t *bt = b->block_table + i * b->max_blocks;
		for (int64_t j = pos / bs; j <= (pos + len - 1) / bs; j++) {
			int32_t blk = bt[j];
			if (e->blk_stamp[blk] == stamp) {
				int64_t o = e->blk_owner[blk];
				return nz_error(NZ_ERR_INVALID,
				                FN_STEP ": KV block %d is written by sequence %lld (table index %lld) and by "
				                        "sequence %lld (table index %lld) in one step",
				                blk, (long long)(o / b->max_blocks), (long long)(o % b->max_blocks), (long long)i,
				                (long long)j);
			}
			e->blk_stamp[blk] = stamp;
			e->blk_owner[blk] = i * b->max_blocks + j;
		}
	}
	for (int64_t i = 0; i < b->n_seqs; i++) {
		const int32_t *bt = b->block_table + i * b->max_blocks;
		for (int64_t j = 0; j < b->seq_pos[i] / bs; j++) {
			int32_t blk = bt[j];
			if (e->blk_stamp[blk] == stamp) {
				int64_t o = e->blk_owner[blk];
				return nz_error(NZ_ERR_INVALID,
				                FN_STEP ": KV block %d is written by sequence %lld (table index %lld) and read by "
				                        "sequence %lld (table index %lld) in one step",
				                blk, (long long)(o / b->max_blocks), (long long)(o % b->max_blocks), (long long)i,
				                (long long)j);
			}
		}
	}
	return NZ_OK;
}

static void build_plan(nz_engine *e, const nz_batch *b, nz_step_plan *p)
{
	int64_t S = b->n_seqs, slots = e->cfg.max_slots;
	int32_t off = 0, n_sample = 0;
	for (int64_t i = 0; i < S; i++) {
		e->seq_off[i] = off;
		for (int32_t k = 0; k < b->seq_len[i]; k++) {
			e->tok_seq[off + k] = (int32_t)i;
			e->tok_pos[off + k] = b->seq_pos[i] + k;
		}
		off += b->seq_len[i];
		if (b->seq_sample[i]) {
			e->sample_seq[n_sample] = (int32_t)i;
			e->sample_tok[n_sample] = off - 1;
			e->row_force[n_sample] = -1;
			n_sample++;
		}
	}
	e->seq_off[S] = off;
	int32_t n_rows = n_sample;
	if (b->score_target)
		for (int32_t t = 0; t < off; t++)
			if (b->score_target[t] >= 0) {
				e->sample_seq[n_rows] = e->tok_seq[t];
				e->sample_tok[n_rows] = t;
				e->row_force[n_rows] = b->score_target[t];
				n_rows++;
			}
	/* counting sort of the sequences with a slot, by slot */
	memset(e->slot_count, 0, (size_t)slots * sizeof *e->slot_count);
	for (int64_t i = 0; i < S; i++)
		if (b->seq_slot[i] >= 0)
			e->slot_count[b->seq_slot[i]]++;
	int32_t n_segs = 0, at = 0;
	for (int64_t s = 0; s < slots; s++) {
		if (!e->slot_count[s])
			continue;
		e->seg_slot[n_segs] = (int32_t)s;
		e->seg_start[n_segs] = at;
		int32_t cnt = e->slot_count[s];
		e->slot_count[s] = at; /* now: next free place of this slot */
		at += cnt;
		n_segs++;
	}
	e->seg_start[n_segs] = at;
	for (int64_t i = 0; i < S; i++)
		if (b->seq_slot[i] >= 0)
			e->seg_seqs[e->slot_count[b->seq_slot[i]]++] = (int32_t)i;
	*p = (nz_step_plan){
	    .n_tokens = b->n_tokens,
	    .n_seqs = S,
	    .seq_off = e->seq_off,
	    .tok_seq = e->tok_seq,
	    .tok_pos = e->tok_pos,
	    .n_segs = n_segs,
	    .seg_slot = e->seg_slot,
	    .seg_start = e->seg_start,
	    .seg_seqs = e->seg_seqs,
	    .n_sample = n_sample,
	    .n_rows = n_rows,
	    .sample_seq = e->sample_seq,
	    .sample_tok = e->sample_tok,
	    .row_force = e->row_force,
	};
}

int32_t NZ_API nz_step(nz_engine *e, const nz_batch *b)
{
	if (!e || !b)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": engine or batch is NULL");
	if (!e->finalized)
		return nz_error(NZ_ERR_INVALID, FN_STEP ": the engine is not finalized (call nz_engine_finalize first)");
	int32_t st = check_batch(e, b);
	if (st != NZ_OK)
		return st;
	nz_step_plan plan;
	build_plan(e, b, &plan);
	return e->ops->step(e->impl, b, &plan);
}

/* ---------------------------------------------------------------------------
 * Tooling
 * ------------------------------------------------------------------------- */

int32_t NZ_API nz_bench_read_bandwidth(int64_t bytes, int32_t iters, int32_t num_threads, double *out_bytes_per_sec)
{
	if (!out_bytes_per_sec)
		return nz_error(NZ_ERR_INVALID, "nz_bench_read_bandwidth: out_bytes_per_sec is NULL");
	if (bytes < 4096)
		return nz_error(NZ_ERR_INVALID, "nz_bench_read_bandwidth: bytes is %lld, want >= 4096", (long long)bytes);
	if (iters < 1)
		return nz_error(NZ_ERR_INVALID, "nz_bench_read_bandwidth: iters is %d, want >= 1", iters);
	if (num_threads < 0 || num_threads > SMALL_MAX)
		return nz_error(NZ_ERR_INVALID, "nz_bench_read_bandwidth: num_threads is %d, want 0..%d", num_threads,
		                SMALL_MAX);
	return nz_default_backend()->bench_read_bandwidth(bytes, iters, num_threads, out_bytes_per_sec);
}
