/*
 * bench_engine.c — the CPU engine's speed figures, on a random bf16
 * Llama-shaped model built in memory.
 *
 * Presets: tiny (29M params), 0.5b (Qwen2.5-0.5B-shaped), 1b (Llama-3.2-1B-
 * shaped), go (the model of `nozzle bench engine`: H 2048, I 5632, 16
 * layers, V 32000, untied embeddings).
 *
 * Build and run (not part of `make test-c`):
 *   gcc -std=c11 -O3 -D_GNU_SOURCE -pthread -mavx2 -mfma -mf16c -Icsrc/include -Icsrc/src \
 *       -o build/bench_engine csrc/tests/bench_engine.c csrc/src/[a-z]*.c -lm
 *   ./build/bench_engine [--preset tiny|0.5b|1b|go] [--threads N] [--steps N] [--isa avx2|avx512]
 *                        [--adapters N] [--rank R] [--only lora|bw|load|prefill|merge]
 *                        [--prompt N]
 *
 * Figures (each a ratio against a baseline measured alternately with it in
 * the same run):
 *   lora:  decode throughput at batch B with B distinct adapters on all seven
 *          modules / the same batch without adapters (target >= 0.85);
 *   bw:    batch-1 decode weight-read rate (bytes of the weights a decode
 *          step reads — all but the embedding table when it is untied — per
 *          second) / nz_bench_read_bandwidth (target >= 0.70);
 *   load:  nz_adapter_load time / memcpy of the adapter's bytes (target <= 2);
 *   prefill: prompt tokens/s of a 256-token prefill (--prompt N: N tokens,
 *          at most 2048, in steps of 256) without and with an adapter (no
 *          target; a sanity check of the long-prompt path);
 *   merge: batched multi-adapter decode throughput / merge-and-swap
 *          (merge the request's adapter into the weights, run the request,
 *          unmerge) at 16 adapters and batch 16 (target >= 10).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "cpu_kernels.h"
#include "nozzle_engine.h"

static void die(const char *what, int32_t st)
{
	fprintf(stderr, "%s failed (%d): %s\n", what, st, nz_last_error());
	exit(1);
}
#define OK(expr)                          \
	do {                                  \
		int32_t st_ = (expr);             \
		if (st_ != NZ_OK)                 \
			die(#expr, st_);              \
	} while (0)

/* ---- random bf16 source data (one pool, reused by every tensor) ---------- */

#define POOL_ELEMS (1 << 24)
static uint16_t *pool;

static void make_pool(void)
{
	pool = malloc(sizeof(uint16_t) * POOL_ELEMS);
	uint64_t s = 12345;
	for (int64_t i = 0; i < POOL_ELEMS; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		float f = ((float)(s >> 40) * 0x1p-24f - 0.5f) * 0.08f;
		pool[i] = nz_f32_to_bf16(f);
	}
}

/* a tensor of n bf16 elements: a window of the pool (copied when larger) */
static const uint16_t *src_bf16(int64_t n, int64_t salt, uint16_t **owned)
{
	*owned = NULL;
	if (n <= POOL_ELEMS / 2)
		return pool + (salt * 7919) % (POOL_ELEMS / 2);
	uint16_t *p = malloc(sizeof(uint16_t) * (size_t)n);
	for (int64_t i = 0; i < n; i += POOL_ELEMS / 2) {
		int64_t w = n - i < POOL_ELEMS / 2 ? n - i : POOL_ELEMS / 2;
		memcpy(p + i, pool + (i + salt) % (POOL_ELEMS / 2), sizeof(uint16_t) * (size_t)w);
	}
	*owned = p;
	return p;
}

static void set_bf16(nz_engine *e, const nz_config *c, int32_t kind, int32_t layer, int64_t salt)
{
	int64_t s[2];
	int nd = nz_tensor_shape(c, kind, s);
	int64_t n = nd == 2 ? s[0] * s[1] : s[0];
	uint16_t *owned;
	const uint16_t *p = src_bf16(n, salt, &owned);
	if (kind == NZ_T_FINAL_NORM || kind == NZ_T_ATTN_NORM || kind == NZ_T_FFN_NORM) {
		owned = malloc(sizeof(uint16_t) * (size_t)n);
		for (int64_t i = 0; i < n; i++)
			owned[i] = nz_f32_to_bf16(1.0f);
		p = owned;
	}
	OK(nz_engine_set_tensor(e, kind, layer, NZ_BF16, p, s, nd));
	free(owned);
}

/* ---- model --------------------------------------------------------------- */

static nz_config preset(const char *name)
{
	nz_config c;
	memset(&c, 0, sizeof c);
	c.rms_norm_eps = 1e-5;
	c.rope_theta = 500000;
	c.tie_word_embeddings = 1;
	c.weight_dtype = NZ_BF16;
	c.max_position = 4096;
	c.head_dim = 64;
	if (!strcmp(name, "tiny")) {
		c.vocab_size = 8000, c.hidden_size = 512, c.intermediate_size = 1536, c.num_layers = 8;
		c.num_heads = 8, c.num_kv_heads = 4;
	} else if (!strcmp(name, "0.5b")) { /* Qwen2.5-0.5B-shaped */
		c.vocab_size = 151936, c.hidden_size = 896, c.intermediate_size = 4864, c.num_layers = 24;
		c.num_heads = 14, c.num_kv_heads = 2;
	} else if (!strcmp(name, "1b")) { /* Llama-3.2-1B-shaped */
		c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_layers = 16;
		c.num_heads = 32, c.num_kv_heads = 8;
	} else if (!strcmp(name, "go")) { /* DefaultBenchModel of runtime/engine */
		c.vocab_size = 32000, c.hidden_size = 2048, c.intermediate_size = 5632, c.num_layers = 16;
		c.num_heads = 32, c.num_kv_heads = 8, c.tie_word_embeddings = 0;
	} else {
		fprintf(stderr, "unknown preset %s\n", name);
		exit(2);
	}
	return c;
}

static int64_t param_count(const nz_config *c)
{
	int64_t n = c->vocab_size * c->hidden_size * (c->tie_word_embeddings ? 1 : 2) + c->hidden_size;
	for (int m = 0; m < NZ_M_COUNT; m++) {
		int64_t in, out;
		nz_module_dims(c, m, &in, &out);
		n += c->num_layers * in * out;
	}
	return n + c->num_layers * 2 * c->hidden_size;
}

static nz_engine *build(nz_config *c)
{
	nz_engine *e;
	OK(nz_engine_create(c, &e));
	set_bf16(e, c, NZ_T_EMBED, -1, 1);
	if (!c->tie_word_embeddings)
		set_bf16(e, c, NZ_T_LM_HEAD, -1, 3);
	set_bf16(e, c, NZ_T_FINAL_NORM, -1, 2);
	for (int l = 0; l < c->num_layers; l++)
		for (int32_t k = NZ_T_ATTN_NORM; k <= NZ_T_DOWN; k++)
			set_bf16(e, c, k, l, 100 + l * 19 + k);
	OK(nz_engine_finalize(e));
	return e;
}

/* ---- adapters -------------------------------------------------------------- */

typedef struct adapter {
	int n;
	int32_t layer[64 * NZ_M_COUNT], module[64 * NZ_M_COUNT], rank[64 * NZ_M_COUNT], dt[64 * NZ_M_COUNT];
	float scale[64 * NZ_M_COUNT];
	const void *a[64 * NZ_M_COUNT], *b[64 * NZ_M_COUNT];
	int64_t bytes;
} adapter;

/* All seven modules of every layer, rank r, data from src (dtype dt). */
static void make_adapter(adapter *ad, const nz_config *c, int r, int32_t dt, const void *src, int64_t salt)
{
	memset(ad, 0, sizeof *ad);
	size_t es = nz_dtype_size(dt);
	for (int l = 0; l < c->num_layers; l++)
		for (int m = 0; m < NZ_M_COUNT; m++) {
			int64_t in, out;
			nz_module_dims(c, m, &in, &out);
			int i = ad->n++;
			ad->layer[i] = l, ad->module[i] = m, ad->rank[i] = r, ad->dt[i] = dt;
			ad->scale[i] = 2.0f;
			int64_t off = ((salt + i) * 104729) % (POOL_ELEMS / 4);
			ad->a[i] = (const char *)src + (size_t)off * es;
			ad->b[i] = (const char *)src + (size_t)(off + 7) * es;
			ad->bytes += (int64_t)((size_t)(r * (in + out)) * es);
		}
}

static void load(nz_engine *e, int slot, const adapter *ad)
{
	OK(nz_adapter_load(e, slot, ad->n, ad->layer, ad->module, ad->rank, ad->scale, ad->dt, ad->a, ad->dt, ad->b));
}

/* ---- steps -------------------------------------------------------------- */

typedef struct batch {
	int n;
	int32_t tok[1024], len[1024], pos[1024], slot[1024], smp[1024], bt[1024 * 8], top_k[1024], otok[1024];
	float temp[1024], top_p[1024], olp[1024];
	uint64_t seed[1024];
} batch;

static batch B;

/* One decode token per sequence at position pos; slot_of(i). */
static double decode_step(nz_engine *e, int n, int pos, const int *slots)
{
	B.n = n;
	for (int i = 0; i < n; i++) {
		B.tok[i] = (i * 31 + pos * 7) % 1000;
		B.len[i] = 1, B.pos[i] = pos, B.slot[i] = slots ? slots[i] : -1, B.smp[i] = 1;
		B.temp[i] = 0, B.top_p[i] = 1, B.top_k[i] = 0, B.seed[i] = (uint64_t)i;
		for (int j = 0; j < 8; j++)
			B.bt[i * 8 + j] = i * 8 + j;
	}
	nz_batch b = {.n_seqs = n, .n_tokens = n, .tokens = B.tok, .seq_len = B.len, .seq_pos = B.pos,
	              .seq_slot = B.slot, .seq_sample = B.smp, .block_table = B.bt, .max_blocks = 8,
	              .temperature = B.temp, .top_p = B.top_p, .top_k = B.top_k, .seed = B.seed,
	              .out_token = B.otok, .out_logprob = B.olp};
	double t0 = nz_now_seconds();
	OK(nz_step(e, &b));
	return nz_now_seconds() - t0;
}

static double cpu_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
			double x = v[j];
			v[j] = v[j - 1];
			v[j - 1] = x;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A measurement and its baseline, taken alternately `reps` times so that
 * drift in a shared machine's speed hits both alike; medians of each, of
 * the per-pair ratios, and of process CPU seconds per call. */
typedef struct paired {
	double base, meas, ratio, base_cpu, meas_cpu;
} paired;

typedef double (*timed_fn)(void *arg);

static paired pair_run(int reps, timed_fn base, void *base_arg, timed_fn meas, void *meas_arg)
{
	double b[64], m[64], r[64], bc[64], mc[64];
	base(base_arg); /* warm up */
	meas(meas_arg);
	for (int i = 0; i < reps; i++) {
		double c0 = cpu_seconds();
		b[i] = base(base_arg);
		double c1 = cpu_seconds();
		m[i] = meas(meas_arg);
		double c2 = cpu_seconds();
		bc[i] = c1 - c0, mc[i] = c2 - c1;
		r[i] = m[i] / b[i];
	}
	return (paired){median(b, reps), median(m, reps), median(r, reps), median(bc, reps), median(mc, reps)};
}

/* One prefill of n tokens (one sequence from position 0, slot), in steps
 * of at most 256 tokens (max_batch_tokens). */
static double prefill(nz_engine *e, int n, int slot)
{
	int32_t len = 0, pos = 0, sl = slot, smp = 0, bt[128], top_k = 0, otok;
	float temp = 0, top_p = 1, olp;
	uint64_t seed = 1;
	for (int j = 0; j < 128; j++)
		bt[j] = 100 + j;
	double t0 = nz_now_seconds();
	for (int p0 = 0; p0 < n; p0 += 256) {
		len = n - p0 < 256 ? n - p0 : 256, pos = p0, smp = p0 + len == n;
		for (int i = 0; i < len; i++)
			B.tok[i] = ((p0 + i) * 131) % 1000;
		nz_batch b = {.n_seqs = 1, .n_tokens = len, .tokens = B.tok, .seq_len = &len, .seq_pos = &pos,
		              .seq_slot = &sl, .seq_sample = &smp, .block_table = bt, .max_blocks = 128,
		              .temperature = &temp, .top_p = &top_p, .top_k = &top_k, .seed = &seed, .out_token = &otok,
		              .out_logprob = &olp};
		OK(nz_step(e, &b));
	}
	return nz_now_seconds() - t0;
}

typedef struct dec_arg {
	nz_engine *e;
	int n, pos;
	const int *slots;
} dec_arg;

static double dec_fn(void *arg)
{
	dec_arg *d = arg;
	d->pos = d->pos % 100 + 1;
	return decode_step(d->e, d->n, d->pos, d->slots);
}

typedef struct bw_arg {
	int threads;
	double seconds_per_byte;
} bw_arg;

static double bw_fn(void *arg)
{
	bw_arg *a = arg;
	double bw;
	OK(nz_bench_read_bandwidth(256 << 20, 1, a->threads, &bw));
	return 1.0 / bw; /* seconds per byte */
}

/* ---- merge-and-swap baseline ---------------------------------------------- */

typedef struct base_w {
	uint16_t *w[64][NZ_M_COUNT]; /* the engine's base weights, as the bench set them */
} base_w;

/* W' = W + B'·A (bf16 weights, f32 math), set into the engine; or W back. */
static void merge(nz_engine *e, const nz_config *c, const base_w *bw, const adapter *ad, int unmerge, float *row)
{
	for (int i = 0; i < ad->n; i++) {
		int l = ad->layer[i], m = ad->module[i], r = ad->rank[i];
		int64_t in, out, s[2] = {0, 0};
		nz_module_dims(c, m, &in, &out);
		s[0] = out, s[1] = in;
		if (unmerge) {
			OK(nz_engine_set_tensor(e, NZ_T_Q + m, l, NZ_BF16, bw->w[l][m], s, 2));
			continue;
		}
		uint16_t *w2 = malloc(sizeof(uint16_t) * (size_t)(in * out));
		const uint16_t *A = ad->a[i], *Bm = ad->b[i], *W = bw->w[l][m];
		for (int64_t o = 0; o < out; o++) {
			for (int64_t k = 0; k < in; k++)
				row[k] = nz_bf16_to_f32(W[o * in + k]);
			for (int j = 0; j < r; j++) {
				float bj = nz_bf16_to_f32(Bm[o * r + j]) * ad->scale[i];
				const uint16_t *aj = A + j * in;
				for (int64_t k = 0; k < in; k++)
					row[k] += bj * nz_bf16_to_f32(aj[k]);
			}
			for (int64_t k = 0; k < in; k++)
				w2[o * in + k] = nz_f32_to_bf16(row[k]);
		}
		OK(nz_engine_set_tensor(e, NZ_T_Q + m, l, NZ_BF16, w2, s, 2));
		free(w2);
	}
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	const char *pre = "tiny", *only = NULL;
	int threads = 0, steps = 5, n_adapters = 32, rank = 16, prompt = 256;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--preset"))
			pre = argv[i + 1];
		else if (!strcmp(argv[i], "--threads"))
			threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--steps"))
			steps = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--adapters"))
			n_adapters = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--rank"))
			rank = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--prompt"))
			prompt = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--only"))
			only = argv[i + 1];
		else if (!strcmp(argv[i], "--isa"))
			cpu_force_isa(!strcmp(argv[i + 1], "avx2") ? CPU_ISA_AVX2 : CPU_ISA_AVX512);
	}
	if (prompt < 1 || prompt > 2048)
		prompt = prompt < 1 ? 1 : 2048;
	if (steps > 60)
		steps = 60;
	if (steps < 1)
		steps = 1;
	make_pool();
	nz_config c = preset(pre);
	c.num_threads = threads;
	c.max_slots = n_adapters > 16 ? n_adapters : 16;
	c.max_rank = rank;
	c.max_batch_seqs = 64;
	c.max_batch_tokens = 256;
	c.kv_num_blocks = 64 * 8;
	c.kv_block_size = 16;
	double t_build = nz_now_seconds();
	nz_engine *e = build(&c);
	int64_t info[NZ_INFO_COUNT];
	OK(nz_engine_info(e, info, NZ_INFO_COUNT));
	char name[64];
	nz_backend_name(name, sizeof name);
	printf("model %s: %.0fM params, weights %.1f MiB bf16 (%s embeddings), %lld threads, %s, built in %.1fs\n", pre,
	       (double)param_count(&c) / 1e6, (double)info[NZ_INFO_WEIGHT_BYTES] / 1048576.0,
	       c.tie_word_embeddings ? "tied" : "untied",
	       (long long)info[NZ_INFO_THREADS], name, nz_now_seconds() - t_build);
	int nthreads = (int)info[NZ_INFO_THREADS];

	/* adapters: bf16 A/B straight from the pool, rank `rank`, all modules */
	adapter *ads = malloc(sizeof(adapter) * (size_t)n_adapters);
	for (int i = 0; i < n_adapters; i++)
		make_adapter(&ads[i], &c, rank, NZ_BF16, pool, 1000 + i);
	printf("adapter: rank %d on all 7 modules of %lld layers, %.1f MiB bf16\n", rank, (long long)c.num_layers,
	       (double)ads[0].bytes / 1048576.0);

	if (!only || !strcmp(only, "bw")) {
		bw_arg ba = {nthreads, 0};
		dec_arg da = {e, 1, 0, NULL};
		paired p = pair_run(steps, bw_fn, &ba, dec_fn, &da);
		double wb = (double)info[NZ_INFO_WEIGHT_BYTES]; /* minus the untied embedding: one row is read */
		if (!c.tie_word_embeddings)
			wb -= (double)(c.vocab_size * c.hidden_size) * 2;
		printf("bw:    batch-1 decode %.2f ms/step = weight-read %.2f GB/s; nz_bench_read_bandwidth %.2f GB/s; "
		       "ratio %.2f (target >= 0.70)\n",
		       p.meas * 1e3, wb / p.meas / 1e9, 1 / p.base / 1e9, wb / p.ratio);
	}
	if (!only || !strcmp(only, "lora")) {
		int n = n_adapters;
		int *slots = calloc((size_t)n + 1, sizeof(int));
		for (int i = 0; i < n; i++) {
			load(e, i, &ads[i]);
			slots[i] = i;
		}
		dec_arg base = {e, n, 0, NULL}, with = {e, n, 0, slots};
		paired p = pair_run(steps, dec_fn, &base, dec_fn, &with);
		printf("lora:  batch %d decode: base %.1f ms/step (%.1f tok/s), %d distinct adapters %.1f ms/step "
		       "(%.1f tok/s); throughput ratio %.3f (target >= 0.85); cpu time per step %.1f / %.1f ms, ratio %.3f\n",
		       n, p.base * 1e3, n / p.base, n, p.meas * 1e3, n / p.meas, 1 / p.ratio, p.base_cpu * 1e3,
		       p.meas_cpu * 1e3, p.base_cpu / p.meas_cpu);
		free(slots);
	}
	if (!only || !strcmp(only, "load")) {
		int64_t bytes = ads[0].bytes;
		char *dst = malloc((size_t)bytes);
		memset(dst, 0, (size_t)bytes);
		double tm = 1e9, tl = 1e9;
		for (int rep = 0; rep < 5; rep++) {
			double t0 = nz_now_seconds();
			int64_t off = 0;
			for (int i = 0; i < ads[0].n; i++) {
				int64_t in, out;
				nz_module_dims(&c, ads[0].module[i], &in, &out);
				size_t na = (size_t)(ads[0].rank[i] * in) * 2, nb = (size_t)(ads[0].rank[i] * out) * 2;
				memcpy(dst + off, ads[0].a[i], na);
				memcpy(dst + off + na, ads[0].b[i], nb);
				off += (int64_t)(na + nb);
			}
			double t1 = nz_now_seconds();
			load(e, 0, &ads[rep % n_adapters]);
			double t2 = nz_now_seconds();
			tm = t1 - t0 < tm ? t1 - t0 : tm;
			tl = t2 - t1 < tl ? t2 - t1 : tl;
		}
		printf("load:  nz_adapter_load %.2f ms, memcpy of the same %.1f MiB %.2f ms; ratio %.2f (target <= 2)\n",
		       tl * 1e3, (double)bytes / 1048576.0, tm * 1e3, tl / tm);
		free(dst);
	}
	if (!only || !strcmp(only, "prefill")) {
		load(e, 0, &ads[0]);
		double tb = 1e9, tl = 1e9;
		for (int rep = 0; rep < 3; rep++) {
			double b1 = prefill(e, prompt, -1), l1 = prefill(e, prompt, 0);
			tb = b1 < tb ? b1 : tb;
			tl = l1 < tl ? l1 : tl;
		}
		printf("prefill: %d tokens %.0f ms (%.0f tok/s) without an adapter, %.0f ms (%.0f tok/s) with one\n", prompt,
		       tb * 1e3, tb > 0 ? prompt / tb : 0, tl * 1e3, tl > 0 ? prompt / tl : 0);
	}
	if (!only || !strcmp(only, "merge")) {
		int n = 16 < n_adapters ? 16 : n_adapters;
		int *slots = calloc((size_t)n + 1, sizeof(int));
		for (int i = 0; i < n; i++) {
			load(e, i, &ads[i]);
			slots[i] = i;
		}
		dec_arg da = {e, n, 0, slots};
		double tv[64];
		for (int i = 0; i < steps; i++)
			tv[i] = dec_fn(&da);
		double tb = median(tv, steps);
		/* merge-and-swap: per request merge, a batch-1 step, unmerge; timed
		 * over 2 requests (each costs the same) */
		base_w *bw = calloc(1, sizeof *bw);
		for (int l = 0; l < c.num_layers; l++)
			for (int m = 0; m < NZ_M_COUNT; m++) {
				int64_t in, out;
				nz_module_dims(&c, m, &in, &out);
				uint16_t *owned;
				const uint16_t *p = src_bf16(in * out, 100 + l * 19 + NZ_T_Q + m, &owned);
				bw->w[l][m] = malloc(sizeof(uint16_t) * (size_t)(in * out));
				memcpy(bw->w[l][m], p, sizeof(uint16_t) * (size_t)(in * out));
				free(owned);
			}
		float *row = malloc(sizeof(float) * (size_t)(c.intermediate_size > c.hidden_size ? c.intermediate_size
		                                                                                 : c.num_heads * c.head_dim) +
		                    sizeof(float) * (size_t)c.hidden_size);
		int reqs = 2;
		double t0 = nz_now_seconds();
		for (int q = 0; q < reqs; q++) {
			merge(e, &c, bw, &ads[q], 0, row);
			decode_step(e, 1, 1, NULL);
			merge(e, &c, bw, &ads[q], 1, row);
		}
		double tm = (nz_now_seconds() - t0) / reqs;
		printf("merge: batched %d adapters %.1f ms/step (%.1f tok/s); merge-and-swap %.1f ms/request "
		       "(%.2f tok/s); ratio %.1f (target >= 10)\n",
		       n, tb * 1e3, n / tb, tm * 1e3, 1 / tm, (n / tb) / (1 / tm));
		for (int l = 0; l < c.num_layers; l++)
			for (int m = 0; m < NZ_M_COUNT; m++)
				free(bw->w[l][m]);
		free(bw);
		free(row);
		free(slots);
	}
	free(ads);
	nz_engine_destroy(e);
	free(pool);
	return 0;
}
