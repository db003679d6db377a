/*
 * test_engine.c — tiny models through the public API against the float64
 * reference (engine-spec §1): plain Llama, Qwen2-style biases with tied
 * embeddings and an explicit head_dim, llama3 rope with a sliding window
 * and bf16 weights, yarn rope (attention factor 1.25) with head_dim 16,
 * f16 weights with linear rope, int8 weights (from f32 and from bf16,
 * against the reference over the values the int8 rows stand for); prefill chunks and decode
 * against one prefill; multi-adapter LoRA against the reference (mixed
 * slots incl. -1, unsorted, ranks 1/8/13/max, missing modules); merged
 * weights; slot reuse; batch invariance (bit-exact, every thread count);
 * sampling through a step. Each test runs on each SIMD path.
 */
#include "cpu_kernels.h"
#include "testutil.h"

#define MAXB 32 /* block-table entries per sequence */

static const char *isa_name(int isa) { return isa == CPU_ISA_AVX2 ? "avx2" : "avx512"; }

typedef struct variant {
	const char *name;
	nz_config cfg;
	int bias_mask;
	int32_t src_dtype;
	double tol;
} variant;

#define NVARIANTS 7

static variant make_variant(int i)
{
	variant v = {0};
	v.cfg = tiny_config();
	v.src_dtype = NZ_F32;
	v.tol = 2e-5;
	switch (i) {
	case 0:
		v.name = "llama";
		break;
	case 1:
		v.name = "qwen2-bias-tied-headdim";
		v.cfg.tie_word_embeddings = 1;
		v.cfg.head_dim = 16; /* != hidden/heads = 12 */
		v.cfg.num_kv_heads = 1;
		v.cfg.rope_theta = 1e6;
		v.bias_mask = (1 << NZ_M_Q) | (1 << NZ_M_K) | (1 << NZ_M_V);
		break;
	case 2:
		v.name = "llama3-window-bf16";
		v.cfg.weight_dtype = NZ_BF16;
		v.cfg.rope_type = NZ_ROPE_LLAMA3;
		v.cfg.rope_theta = 500000;
		v.cfg.rope_factor = 8;
		v.cfg.rope_low_freq_factor = 1;
		v.cfg.rope_high_freq_factor = 4;
		v.cfg.rope_original_max_position = 32;
		v.cfg.sliding_window = 5;
		v.cfg.sliding_window_from_layer = 1;
		v.bias_mask = 0x7f;
		v.src_dtype = NZ_BF16;
		v.cfg.kv_f32 = 1; /* the others with 16-bit weights keep a 16-bit KV cache */
		break;
	case 3:
		v.name = "yarn-headdim16";
		v.cfg.head_dim = 16;
		v.cfg.rope_type = NZ_ROPE_YARN;
		v.cfg.rope_factor = 4;
		v.cfg.rope_original_max_position = 16;
		v.cfg.rope_beta_fast = 2; /* correction range [0, 3] of 8 pairs */
		v.cfg.rope_beta_slow = 0.25;
		v.cfg.rope_attention_factor = 1.25;
		v.cfg.rope_truncate = 1;
		break;
	case 5:
		v.name = "llama-int8";
		v.cfg.weight_dtype = NZ_Q8;
		break;
	case 6:
		v.name = "qwen2-bias-tied-int8-from-bf16";
		v.cfg.weight_dtype = NZ_Q8;
		v.cfg.tie_word_embeddings = 1;
		v.cfg.head_dim = 16;
		v.cfg.num_kv_heads = 1;
		v.bias_mask = (1 << NZ_M_Q) | (1 << NZ_M_K) | (1 << NZ_M_V);
		v.src_dtype = NZ_BF16;
		break;
	default:
		v.name = "mha-f16-linear";
		v.cfg.weight_dtype = NZ_F16;
		v.cfg.num_kv_heads = 4;
		v.cfg.rope_type = NZ_ROPE_LINEAR;
		v.cfg.rope_factor = 2;
		v.cfg.kv_block_size = 16;
		v.cfg.num_layers = 3;
		break;
	}
	/* A 16-bit KV cache: the reference rounds its float64 keys and values
	 * where the engine rounds float32 ones, and the two now and then land
	 * on the two sides of a rounding boundary: one 16-bit step apart. */
	if (v.cfg.weight_dtype != NZ_F32 && !v.cfg.kv_f32)
		v.tol = 3e-4;
	return v;
}

static void make_tokens(trng *r, int32_t *tok, int n, int64_t V)
{
	for (int i = 0; i < n; i++)
		tok[i] = trng_int(r, (int)V);
}

/* Prefill in chunks and decode against the reference, and chunked prefill
 * against one prefill. */
static void test_forward(int vi, int isa)
{
	variant v = make_variant(vi);
	tmodel m;
	tm_init(&m, &v.cfg, 100 + (uint64_t)vi, v.bias_mask);
	cpu_force_isa(isa);
	nz_engine *e = tm_engine(&m, v.src_dtype);
	if (!e)
		goto out;
	int64_t V = v.cfg.vocab_size;
	trng r = {5};
	enum { N = 23 };
	int32_t tok[N], bt[MAXB];
	make_tokens(&r, tok, N, V);
	random_tables(&r, bt, 1, MAXB, v.cfg.kv_num_blocks);
	double *ref = malloc(sizeof(double) * (size_t)(N * V));
	ref_forward(&m, NULL, tok, N, ref);

	/* chunks of 7, 1 (decode), 9, then decodes to N */
	float *lg = malloc(sizeof(float) * (size_t)V), *full = malloc(sizeof(float) * (size_t)V);
	int chunks[] = {7, 1, 9, 1, 1, 1, 1, 1, 1};
	int pos = 0;
	for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
		tseq s = {.tokens = tok + pos, .len = chunks[c], .pos = pos, .slot = -1, .sample = 1, .blocks = bt,
		          .logits = lg};
		CHECK_OK(run_step(e, &v.cfg, &s, 1, MAXB, 0));
		pos += chunks[c];
		double err = logit_err(lg, ref + (pos - 1) * V, V);
		CHECK(err < v.tol, "%s/%s: position %d logits error %g", v.name, isa_name(isa), pos - 1, err);
	}
	CHECK(pos == N, "chunks cover the prompt");
	/* prefill(N) in one step into other blocks == prefill + decodes above */
	int32_t bt2[MAXB];
	for (int i = 0; i < MAXB; i++)
		bt2[i] = (int32_t)((bt[i] + v.cfg.kv_num_blocks / 2) % v.cfg.kv_num_blocks);
	tseq s = {.tokens = tok, .len = N, .pos = 0, .slot = -1, .sample = 1, .blocks = bt2, .logits = full};
	CHECK_OK(run_step(e, &v.cfg, &s, 1, MAXB, 0));
	double d = 0;
	for (int64_t i = 0; i < V; i++)
		d = fmax(d, fabs((double)full[i] - lg[i]));
	CHECK(d <= 1e-5, "%s/%s: prefill(n)+decode vs prefill(n+1) differ by %g", v.name, isa_name(isa), d);
	free(lg), free(full), free(ref);
	nz_engine_destroy(e);
out:
	tm_free(&m);
	cpu_force_isa(CPU_ISA_AUTO);
}

/* Adapters used by the LoRA tests: ranks per module (q k v o gate up down). */
static const int ranks_a[NZ_M_COUNT] = {1, 8, 13, 16, 4, 0, 16}; /* up missing */
static const int ranks_b[NZ_M_COUNT] = {16, 16, 16, 16, 16, 16, 16};
static const int ranks_c[NZ_M_COUNT] = {0, 0, 5, 0, 0, 9, 0};

static void test_lora(int vi, int isa)
{
	variant v = make_variant(vi);
	v.cfg.max_slots = 3;
	tmodel m;
	tm_init(&m, &v.cfg, 200 + (uint64_t)vi, v.bias_mask);
	tadapter ad[3];
	ta_init(&ad[0], &v.cfg, 31, ranks_a, -1);
	ta_init(&ad[1], &v.cfg, 32, ranks_b, 1); /* layer 1 untouched */
	ta_init(&ad[2], &v.cfg, 33, ranks_c, -1);
	cpu_force_isa(isa);
	nz_engine *e = tm_engine(&m, v.src_dtype);
	if (!e)
		goto out;
	for (int sl = 0; sl < 3; sl++)
		CHECK_OK(ta_load(e, sl, &ad[sl], sl == 1 ? NZ_BF16 : NZ_F32, &v.cfg));
	/* bf16 hand-over of adapter 1: the reference must see the same values */
	for (int l = 0; l < ad[1].L; l++)
		for (int mo = 0; mo < NZ_M_COUNT; mo++) {
			if (!ad[1].rank[l][mo])
				continue;
			int64_t in, out;
			nz_module_dims(&v.cfg, mo, &in, &out);
			for (int64_t i = 0; i < ad[1].rank[l][mo] * in; i++)
				ad[1].a[l][mo][i] = round_to(ad[1].a[l][mo][i], NZ_BF16);
			for (int64_t i = 0; i < ad[1].rank[l][mo] * out; i++)
				ad[1].b[l][mo][i] = round_to(ad[1].b[l][mo][i], NZ_BF16);
		}
	int64_t V = v.cfg.vocab_size;
	trng r = {6};
	enum { NS = 6, N = 31 };
	int slots[NS] = {2, -1, 0, 2, 1, 0}; /* unsorted, repeated, none */
	int lens[NS] = {13, 6, 31, 1, 11, 26}; /* slot 0: 57 tokens, more than one LoRA block */
	int32_t tok[NS][N + 2], bt[NS * MAXB];
	random_tables(&r, bt, NS, MAXB, v.cfg.kv_num_blocks);
	float *lg[NS];
	tseq s[NS];
	for (int i = 0; i < NS; i++) {
		make_tokens(&r, tok[i], N + 2, V);
		lg[i] = malloc(sizeof(float) * (size_t)V);
		s[i] = (tseq){.tokens = tok[i], .len = lens[i], .pos = 0, .slot = slots[i], .sample = 1,
		              .blocks = bt + i * MAXB, .logits = lg[i]};
	}
	double *ref = malloc(sizeof(double) * (size_t)((N + 2) * V));
	for (int step = 0; step < 3; step++) {
		CHECK_OK(run_step(e, &v.cfg, s, NS, MAXB, 0));
		for (int i = 0; i < NS; i++) {
			int n = s[i].pos + s[i].len;
			ref_forward(&m, slots[i] >= 0 ? &ad[slots[i]] : NULL, tok[i], n, ref);
			double err = logit_err(lg[i], ref + (n - 1) * V, V);
			CHECK(err < v.tol, "%s/%s lora: seq %d (slot %d) step %d error %g", v.name, isa_name(isa), i, slots[i],
			      step, err);
			s[i].tokens += s[i].len;
			s[i].pos = n;
			s[i].len = 1;
		}
	}
	free(ref);
	for (int i = 0; i < NS; i++)
		free(lg[i]);
	nz_engine_destroy(e);
out:
	for (int i = 0; i < 3; i++)
		ta_free(&ad[i]);
	tm_free(&m);
	cpu_force_isa(CPU_ISA_AUTO);
}

/* Runs sequence 0 (tokens, slot) through `steps` steps, alone or with
 * neighbours; returns its logits after every step in out[steps·V]. */
typedef struct inv_run {
	int with_neighbours;
	int threads;
} inv_run;

static void invariance_run(const tmodel *m, const tadapter *ad, int isa, inv_run how, float *out)
{
	nz_config c = m->cfg;
	c.num_threads = how.threads;
	tmodel mm = *m;
	mm.cfg = c;
	cpu_force_isa(isa);
	nz_engine *e = tm_engine(&mm, NZ_F32);
	cpu_force_isa(CPU_ISA_AUTO);
	if (!e)
		return;
	CHECK_OK(ta_load(e, 0, &ad[0], NZ_F32, &c));
	CHECK_OK(ta_load(e, 1, &ad[1], NZ_F32, &c));
	int64_t V = c.vocab_size;
	trng r = {8};
	int32_t tok[4][40], bt[4 * MAXB];
	for (int i = 0; i < 4; i++)
		make_tokens(&r, tok[i], 40, V);
	random_tables(&r, bt, 4, MAXB, c.kv_num_blocks);
	float *scratch = malloc(sizeof(float) * (size_t)V);
	/* sequence 0: prefill 9, then decodes; neighbours: prefill chunks and
	 * decodes with other adapters and none */
	tseq me = {.tokens = tok[0], .len = 9, .pos = 0, .slot = 0, .sample = 1, .blocks = bt, .temperature = 0.9f,
	           .seed = 77};
	tseq nb[3] = {
	    {.tokens = tok[1], .len = 5, .pos = 0, .slot = 1, .sample = 0, .blocks = bt + MAXB},
	    {.tokens = tok[2], .len = 12, .pos = 0, .slot = -1, .sample = 1, .blocks = bt + 2 * MAXB,
	     .temperature = 0.7f, .seed = 3, .logits = scratch},
	    {.tokens = tok[3], .len = 2, .pos = 0, .slot = 0, .sample = 1, .blocks = bt + 3 * MAXB, .logits = scratch},
	};
	for (int step = 0; step < 4; step++) {
		tseq batch[4];
		int n = 0;
		if (how.with_neighbours) {
			batch[n++] = nb[0];
			batch[n++] = nb[1];
		}
		me.logits = out + step * V;
		batch[n++] = me;
		if (how.with_neighbours)
			batch[n++] = nb[2];
		CHECK_OK(run_step(e, &c, batch, n, MAXB, 3));
		/* sampled token feeds the next step */
		int32_t next = batch[how.with_neighbours ? 2 : 0].token;
		me.pos += me.len;
		tok[0][me.pos] = next;
		me.tokens = tok[0] + me.pos;
		me.len = 1;
		for (int i = 0; i < 3; i++) {
			nb[i].pos += nb[i].len;
			nb[i].tokens = tok[i + 1] + nb[i].pos;
			nb[i].len = i == 0 ? 3 : 1; /* neighbour 0 keeps prefilling in chunks */
		}
	}
	free(scratch);
	nz_engine_destroy(e);
}

static void test_invariance(int isa)
{
	variant v = make_variant(0);
	tmodel m;
	tm_init(&m, &v.cfg, 300, 0);
	tadapter ad[2];
	ta_init(&ad[0], &v.cfg, 41, ranks_a, -1);
	ta_init(&ad[1], &v.cfg, 42, ranks_b, -1);
	int64_t V = v.cfg.vocab_size;
	float *alone = malloc(sizeof(float) * (size_t)(4 * V)), *other = malloc(sizeof(float) * (size_t)(4 * V));
	invariance_run(&m, ad, isa, (inv_run){0, 1}, alone);
	inv_run runs[] = {{1, 1}, {1, 2}, {1, 3}, {0, 3}};
	for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
		invariance_run(&m, ad, isa, runs[i], other);
		for (int step = 0; step < 4; step++)
			CHECK(memcmp(alone + step * V, other + step * V, sizeof(float) * (size_t)V) == 0,
			      "%s: step %d logits differ %s with %d threads", isa_name(isa), step,
			      runs[i].with_neighbours ? "in a mixed batch" : "alone", runs[i].threads);
	}
	free(alone), free(other);
	ta_free(&ad[0]);
	ta_free(&ad[1]);
	tm_free(&m);
}

/* Logits of one sequence (prefill of tok[0..n)) in slot. */
static void run_one(nz_engine *e, const nz_config *c, const int32_t *tok, int n, int slot, const int32_t *bt,
                    float *lg)
{
	tseq s = {.tokens = tok, .len = n, .pos = 0, .slot = slot, .sample = 1, .blocks = bt, .logits = lg};
	CHECK_OK(run_step(e, c, &s, 1, MAXB, 0));
}

static void test_slots_and_merge(void)
{
	variant v = make_variant(0);
	tmodel m;
	tm_init(&m, &v.cfg, 400, 0);
	tadapter x, y;
	ta_init(&x, &v.cfg, 51, ranks_b, -1);
	ta_init(&y, &v.cfg, 52, ranks_c, 0);
	int64_t V = v.cfg.vocab_size;
	trng r = {9};
	int32_t tok[10], bt[MAXB];
	make_tokens(&r, tok, 10, V);
	random_tables(&r, bt, 1, MAXB, v.cfg.kv_num_blocks);
	float *base = malloc(sizeof(float) * (size_t)V), *ly = malloc(sizeof(float) * (size_t)V);
	float *fresh = malloc(sizeof(float) * (size_t)V), *tmp = malloc(sizeof(float) * (size_t)V);

	nz_engine *e = tm_engine(&m, NZ_F32), *f = tm_engine(&m, NZ_F32);
	if (!e || !f)
		goto out;
	run_one(e, &v.cfg, tok, 10, -1, bt, base);
	/* load X, use it, clear; the cleared slot is the base model */
	CHECK_OK(ta_load(e, 1, &x, NZ_F32, &v.cfg));
	run_one(e, &v.cfg, tok, 10, 1, bt, tmp);
	CHECK(memcmp(tmp, base, sizeof(float) * (size_t)V) != 0, "adapter X changes the logits");
	CHECK_OK(nz_adapter_clear(e, 1));
	run_one(e, &v.cfg, tok, 10, 1, bt, tmp);
	CHECK(memcmp(tmp, base, sizeof(float) * (size_t)V) == 0, "a cleared slot equals no adapter");
	/* load Y (smaller ranks, missing modules) into the same slot == fresh engine with only Y */
	CHECK_OK(ta_load(e, 1, &x, NZ_F32, &v.cfg));
	CHECK_OK(ta_load(e, 1, &y, NZ_F32, &v.cfg)); /* replaces X directly too */
	run_one(e, &v.cfg, tok, 10, 1, bt, ly);
	CHECK_OK(ta_load(f, 1, &y, NZ_F32, &v.cfg));
	run_one(f, &v.cfg, tok, 10, 1, bt, fresh);
	CHECK(memcmp(ly, fresh, sizeof(float) * (size_t)V) == 0, "slot reuse: Y after X differs from a fresh Y");

	/* merge-and-swap: W' = W + scale·B·A via set_tensor after finalize,
	 * slot -1, equals the adapter within f32 tolerance; restoring W
	 * restores the base logits bit for bit */
	CHECK_OK(ta_load(f, 0, &x, NZ_F32, &v.cfg));
	float *with_x = malloc(sizeof(float) * (size_t)V), *merged = malloc(sizeof(float) * (size_t)V);
	run_one(f, &v.cfg, tok, 10, 0, bt, with_x);
	for (int l = 0; l < (int)v.cfg.num_layers; l++)
		for (int mo = 0; mo < NZ_M_COUNT; mo++) {
			int64_t in, out;
			nz_module_dims(&v.cfg, mo, &in, &out);
			const float *w = m.src[(l + 1) * NZ_T_COUNT + NZ_T_Q + mo];
			float *w2 = malloc(sizeof(float) * (size_t)(in * out));
			int rk = x.rank[l][mo];
			for (int64_t o = 0; o < out; o++)
				for (int64_t i = 0; i < in; i++) {
					double s = w[o * in + i];
					for (int j = 0; j < rk; j++)
						s += (double)x.scale[l][mo] * x.b[l][mo][o * rk + j] * x.a[l][mo][j * in + i];
					w2[o * in + i] = (float)s;
				}
			CHECK_OK(tm_set(f, &m, l, NZ_T_Q + mo, NZ_F32, w2));
			free(w2);
		}
	run_one(f, &v.cfg, tok, 10, -1, bt, merged);
	double scale = 0, err = 0;
	for (int64_t i = 0; i < V; i++) {
		scale = fmax(scale, fabs(with_x[i]));
		err = fmax(err, fabs(with_x[i] - merged[i]));
	}
	CHECK(err < 1e-4 * scale, "merged weights vs adapter: error %g (scale %g)", err, scale);
	for (int l = 0; l < (int)v.cfg.num_layers; l++)
		for (int mo = 0; mo < NZ_M_COUNT; mo++)
			CHECK_OK(tm_set(f, &m, l, NZ_T_Q + mo, NZ_F32, m.src[(l + 1) * NZ_T_COUNT + NZ_T_Q + mo]));
	run_one(f, &v.cfg, tok, 10, -1, bt, tmp);
	CHECK(memcmp(tmp, base, sizeof(float) * (size_t)V) == 0, "restored weights give the base logits");
	free(with_x), free(merged);
out:
	nz_engine_destroy(e);
	nz_engine_destroy(f);
	free(base), free(ly), free(fresh), free(tmp);
	ta_free(&x);
	ta_free(&y);
	tm_free(&m);
}

static void test_sampling_step(void)
{
	variant v = make_variant(1);
	tmodel m;
	tm_init(&m, &v.cfg, 500, v.bias_mask);
	nz_engine *e = tm_engine(&m, NZ_F32), *f = tm_engine(&m, NZ_F32);
	int64_t V = v.cfg.vocab_size;
	trng r = {10};
	int32_t tok[2][32], bt[2 * MAXB];
	make_tokens(&r, tok[0], 32, V);
	make_tokens(&r, tok[1], 32, V);
	random_tables(&r, bt, 2, MAXB, v.cfg.kv_num_blocks);
	float *lg = malloc(sizeof(float) * (size_t)V);
	if (!e || !f)
		goto out;
	/* greedy with tops: token = argmax, logprob = log_softmax, tops sorted */
	tseq s = {.tokens = tok[0], .len = 6, .pos = 0, .slot = -1, .sample = 1, .blocks = bt, .logits = lg};
	CHECK_OK(run_step(e, &v.cfg, &s, 1, MAXB, 5));
	int32_t best = 0;
	double lse = 0;
	for (int64_t i = 0; i < V; i++) {
		if (lg[i] > lg[best])
			best = (int32_t)i;
		lse += exp(lg[i]);
	}
	lse = log(lse);
	CHECK(s.token == best, "greedy token %d, argmax %d", s.token, best);
	CHECK(fabs(s.logprob - (lg[best] - lse)) < 1e-4, "logprob %g want %g", (double)s.logprob, lg[best] - lse);
	CHECK(s.top_tok[0] == best, "top[0] is the argmax");
	for (int j = 1; j < 5; j++)
		CHECK(s.top_lp[j] <= s.top_lp[j - 1], "tops most likely first");
	/* seeded sampling: the same in two engines and with a neighbour */
	int32_t gen[2][8];
	for (int run = 0; run < 2; run++) {
		nz_engine *x = run ? f : e;
		tseq a = {.tokens = tok[1], .len = 7, .pos = 0, .slot = -1, .sample = 1, .blocks = bt + MAXB,
		          .temperature = 0.9f, .top_p = 0.95f, .top_k = 40, .seed = 1234};
		tseq nbr = {.tokens = tok[0] + 6, .len = 3, .pos = 6, .slot = -1, .sample = 1, .blocks = bt,
		            .temperature = 1.0f, .seed = 9};
		for (int step = 0; step < 8; step++) {
			tseq batch[2];
			int n = 0;
			if (run)
				batch[n++] = nbr;
			batch[n++] = a;
			CHECK_OK(run_step(x, &v.cfg, batch, n, MAXB, 0));
			gen[run][step] = batch[n - 1].token;
			a.pos += a.len;
			tok[1][a.pos] = batch[n - 1].token;
			a.tokens = tok[1] + a.pos;
			a.len = 1;
			nbr.pos += nbr.len;
			nbr.tokens = tok[0] + nbr.pos;
			nbr.len = 1;
		}
	}
	CHECK(memcmp(gen[0], gen[1], sizeof gen[0]) == 0, "seeded sampling depends on the batch");

	/* logit adjustments: the same prefill as the greedy step above, with
	 * the least likely token raised past the argmax and the argmax
	 * lowered; every output sees the adjusted logits, a neighbour without
	 * adjustments does not */
	{
		float *adj = malloc(sizeof(float) * (size_t)V), *raw = malloc(sizeof(float) * (size_t)V);
		int32_t worst = 0;
		for (int64_t i = 0; i < V; i++)
			if (lg[i] < lg[worst])
				worst = (int32_t)i;
		int32_t btok[2] = {worst, best};
		float bval[2] = {lg[best] - lg[worst] + 5, -3};
		tseq pair[2] = {
		    {.tokens = tok[0], .len = 6, .pos = 0, .slot = -1, .sample = 1, .blocks = bt, .logits = adj,
		     .n_bias = 2, .bias_token = btok, .bias_value = bval},
		    {.tokens = tok[0], .len = 6, .pos = 0, .slot = -1, .sample = 1, .blocks = bt + MAXB, .logits = raw},
		};
		CHECK_OK(run_step(f, &v.cfg, pair, 2, MAXB, 5));
		double alse = 0, err = 0;
		for (int64_t i = 0; i < V; i++) {
			float want = lg[i] + (i == worst ? bval[0] : i == best ? bval[1] : 0);
			err = fmax(err, fabs((double)adj[i] - want) + fabs((double)raw[i] - lg[i]));
			alse += exp(want);
		}
		alse = log(alse);
		CHECK(err < 1e-4, "adjusted logits off by %g", err);
		CHECK(pair[0].token == worst, "adjusted greedy token %d, want %d", pair[0].token, worst);
		CHECK(fabs(pair[0].logprob - (adj[worst] - alse)) < 1e-4, "adjusted logprob %g want %g",
		      (double)pair[0].logprob, adj[worst] - alse);
		CHECK(pair[0].top_tok[0] == worst && pair[1].top_tok[0] == best, "adjusted tops %d %d", pair[0].top_tok[0],
		      pair[1].top_tok[0]);
		CHECK(pair[1].token == best, "a neighbour's greedy token %d, want %d", pair[1].token, best);
		free(adj);
		free(raw);
	}

	/* token masks: three tokens allowed, then the same without the
	 * argmax: the draw, the logprob (over the allowed tokens alone) and
	 * the logits (-inf elsewhere) follow the mask; a neighbour without one
	 * is untouched */
	{
		int64_t W = (V + 31) / 32;
		uint32_t *mask = calloc((size_t)W, sizeof(uint32_t));
		float *got = malloc(sizeof(float) * (size_t)V), *raw = malloc(sizeof(float) * (size_t)V);
		int32_t worst = 0, mid = best == 1 ? 2 : 1;
		for (int64_t i = 0; i < V; i++)
			if (lg[i] < lg[worst])
				worst = (int32_t)i;
		int32_t allowed[3] = {worst, mid, best};
		for (int round = 0; round < 2; round++) {
			memset(mask, 0, sizeof(uint32_t) * (size_t)W);
			for (int k = 0; k < 3 - round; k++)
				mask[allowed[k] / 32] |= 1u << (allowed[k] % 32);
			tseq pair[2] = {
			    {.tokens = tok[0], .len = 6, .pos = 0, .slot = -1, .sample = 1, .blocks = bt, .logits = got,
			     .allow = mask},
			    {.tokens = tok[0], .len = 6, .pos = 0, .slot = -1, .sample = 1, .blocks = bt + MAXB, .logits = raw},
			};
			CHECK_OK(run_step(f, &v.cfg, pair, 2, MAXB, 2));
			int32_t want = round == 0 ? best : lg[mid] > lg[worst] ? mid : worst;
			double lse = 0;
			for (int k = 0; k < 3 - round; k++)
				lse += exp(lg[allowed[k]]);
			lse = log(lse);
			int bad = 0;
			for (int64_t i = 0; i < V; i++) {
				int in = (mask[i / 32] >> (i % 32)) & 1;
				bad += in ? fabsf(got[i] - lg[i]) > 1e-4f : !(isinf(got[i]) && got[i] < 0);
				bad += fabsf(raw[i] - lg[i]) > 1e-4f;
			}
			CHECK(bad == 0, "round %d: %d masked logits wrong", round, bad);
			CHECK(pair[0].token == want, "round %d: masked greedy token %d, want %d", round, pair[0].token, want);
			CHECK(fabs(pair[0].logprob - (lg[want] - lse)) < 1e-4, "round %d: masked logprob %g want %g", round,
			      (double)pair[0].logprob, lg[want] - lse);
			CHECK(pair[0].top_tok[0] == want && (pair[0].top_tok[1] != best || round == 0), "round %d: tops %d %d",
			      round, pair[0].top_tok[0], pair[0].top_tok[1]);
			CHECK(pair[1].token == best, "round %d: the neighbour drew %d, want %d", round, pair[1].token, best);
		}
		/* a masked sequence sampled at a temperature only draws allowed tokens */
		for (uint64_t seed = 0; seed < 16; seed++) {
			tseq one = {.tokens = tok[0], .len = 6, .pos = 0, .slot = -1, .sample = 1, .blocks = bt,
			            .temperature = 2.0f, .seed = seed, .allow = mask};
			CHECK_OK(run_step(f, &v.cfg, &one, 1, MAXB, 0));
			CHECK(one.token == worst || one.token == mid, "seed %llu drew masked-out token %d",
			      (unsigned long long)seed, one.token);
		}
		free(mask);
		free(got);
		free(raw);
	}
out:
	free(lg);
	nz_engine_destroy(e);
	nz_engine_destroy(f);
	tm_free(&m);
}

int main(void)
{
	int isas[2] = {CPU_ISA_AVX2, CPU_ISA_AVX512};
	for (int i = 0; i < 2; i++) {
		if (!cpu_isa_supported(isas[i]))
			continue;
		for (int vi = 0; vi < NVARIANTS; vi++) {
			test_forward(vi, isas[i]);
			test_lora(vi, isas[i]);
		}
		test_invariance(isas[i]);
	}
	test_slots_and_merge();
	test_sampling_step();
	return t_done("test_engine");
}
