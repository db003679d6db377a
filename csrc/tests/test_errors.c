/*
 * test_errors.c — every refused call returns the right status and a message
 * naming the problem, and leaves the engine usable; plus the ABI helpers
 * and the bandwidth probe.
 */
#include "testutil.h"

#define MAXB 16

/* status and a message containing `want` */
#define CHECK_ERR(expr, code, want)                                                                     \
	do {                                                                                                \
		int32_t st_ = (expr);                                                                           \
		CHECK(st_ == (code), "%s returned %d, want %d (%s)", #expr, st_, (code), nz_last_error());       \
		CHECK(strstr(nz_last_error(), (want)) != NULL, "%s: message \"%s\" lacks \"%s\"", #expr,        \
		      nz_last_error(), (want));                                                                 \
	} while (0)

static void test_abi(void)
{
	CHECK(nz_abi_version() == NZ_ABI_VERSION, "abi version");
	CHECK(nz_struct_size(NZ_STRUCT_CONFIG) == (int64_t)sizeof(nz_config), "config size");
	CHECK(nz_struct_size(NZ_STRUCT_BATCH) == (int64_t)sizeof(nz_batch), "batch size");
	CHECK(nz_struct_size(7) == -1, "unknown struct");
	char buf[64];
	CHECK_OK(nz_backend_name(buf, sizeof buf));
	CHECK(strncmp(buf, "cpu ", 4) == 0 && strstr(buf, " cores"), "backend name \"%s\"", buf);
	char tiny[5];
	CHECK_OK(nz_backend_name(tiny, sizeof tiny));
	CHECK(strlen(tiny) == 4, "truncated name \"%s\"", tiny);
	CHECK_ERR(nz_backend_name(NULL, 4), NZ_ERR_INVALID, "buf");
	double bw = 0;
	CHECK_OK(nz_bench_read_bandwidth(1 << 22, 2, 2, &bw));
	CHECK(bw > 1e8, "read bandwidth %g B/s", bw);
	CHECK_ERR(nz_bench_read_bandwidth(100, 1, 1, &bw), NZ_ERR_INVALID, "bytes");
	CHECK_ERR(nz_bench_read_bandwidth(1 << 20, 0, 1, &bw), NZ_ERR_INVALID, "iters");
	CHECK_ERR(nz_bench_read_bandwidth(1 << 20, 1, 1, NULL), NZ_ERR_INVALID, "NULL");
}

static void test_create_errors(void)
{
	nz_engine *e = (nz_engine *)1;
	nz_config c = tiny_config();
	CHECK_ERR(nz_engine_create(NULL, &e), NZ_ERR_INVALID, "NULL");
	c.num_heads = 6; /* not a multiple of 4... of num_kv_heads 4 */
	c.num_kv_heads = 4;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "num_heads 6 is not a multiple of num_kv_heads 4");
	CHECK(e == NULL, "out is NULL after a failure");
	c = tiny_config();
	c.head_dim = 7;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "head_dim");
	c = tiny_config();
	c.weight_dtype = 9;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "weight_dtype is 9");
	c = tiny_config();
	c.rope_type = NZ_ROPE_LLAMA3;
	c.rope_factor = 8;
	c.rope_low_freq_factor = 4;
	c.rope_high_freq_factor = 1;
	c.rope_original_max_position = 8192;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_low_freq_factor");
	c = tiny_config();
	c.rope_type = NZ_ROPE_YARN;
	c.rope_factor = 4;
	c.rope_original_max_position = 64;
	c.rope_beta_fast = 32;
	c.rope_beta_slow = 1;
	c.rope_truncate = 1;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_attention_factor");
	c.rope_attention_factor = 1.1;
	c.rope_beta_slow = 0;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_beta_slow");
	c.rope_beta_slow = 1;
	c.rope_original_max_position = 0;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_original_max_position");
	c.rope_original_max_position = 64;
	c.rope_truncate = 2;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_truncate");
	c.rope_truncate = 1;
	c.rope_type = NZ_ROPE_LONGROPE + 1;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_type");
	/* longrope: its factors, each finite and > 0, and an attention factor */
	c = tiny_config();
	c.rope_type = NZ_ROPE_LONGROPE;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_ext_factors");
	float ext[64];
	for (int j = 0; j < 64; j++)
		ext[j] = 1.0f + (float)j;
	c.rope_ext_factors = ext;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_attention_factor");
	c.rope_attention_factor = 1.2;
	ext[1] = 0;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_ext_factors[1]");
	ext[1] = 2;
	c.rope_type = NZ_ROPE_YARN;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rope_ext_factors is set");
	/* rotary_dim: even, at most head_dim */
	c = tiny_config();
	c.rotary_dim = c.head_dim + 2;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rotary_dim");
	c.rotary_dim = 3;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rotary_dim");
	c = tiny_config();
	c.reserved[3] = 1;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "reserved[3]");
	c.reserved[3] = 0;
	c.kv_f32 = 2;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "kv_f32");
	c = tiny_config();
	c.kv_num_blocks = 0;
	c.kv_memory_bytes = 100;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "kv_memory_bytes");
	c = tiny_config();
	c.rms_norm_eps = NAN;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "rms_norm_eps");
	/* defaults: sizing fields 0 */
	c = tiny_config();
	c.max_slots = c.max_rank = c.kv_block_size = c.kv_num_blocks = c.max_batch_tokens = c.max_batch_seqs = 0;
	c.num_threads = 0;
	CHECK_OK(nz_engine_create(&c, &e));
	int64_t info[NZ_INFO_COUNT];
	CHECK_OK(nz_engine_info(e, info, NZ_INFO_COUNT));
	CHECK(info[NZ_INFO_KV_BLOCK_SIZE] == 16 && info[NZ_INFO_MAX_SLOTS] == 8 && info[NZ_INFO_MAX_RANK] == 16,
	      "defaults: block %lld slots %lld rank %lld", (long long)info[NZ_INFO_KV_BLOCK_SIZE],
	      (long long)info[NZ_INFO_MAX_SLOTS], (long long)info[NZ_INFO_MAX_RANK]);
	CHECK(info[NZ_INFO_KV_NUM_BLOCKS] >= 16 && info[NZ_INFO_THREADS] >= 1, "default kv blocks %lld threads %lld",
	      (long long)info[NZ_INFO_KV_NUM_BLOCKS], (long long)info[NZ_INFO_THREADS]);
	CHECK_ERR(nz_engine_info(e, info, NZ_INFO_COUNT + 1), NZ_ERR_INVALID, "n is");
	nz_engine_destroy(e);
	nz_engine_destroy(NULL);
	/* kv_memory_bytes sizes the pool */
	c = tiny_config();
	c.kv_num_blocks = 0;
	int64_t block_bytes = c.num_layers * 2 * c.num_kv_heads * c.kv_block_size * c.head_dim * 4;
	c.kv_memory_bytes = 10 * block_bytes + 5;
	CHECK_OK(nz_engine_create(&c, &e));
	CHECK_OK(nz_engine_info(e, info, NZ_INFO_COUNT));
	CHECK(info[NZ_INFO_KV_NUM_BLOCKS] == 10, "kv blocks from memory: %lld", (long long)info[NZ_INFO_KV_NUM_BLOCKS]);
	CHECK(info[NZ_INFO_KV_BYTES] == 10 * block_bytes, "kv bytes %lld", (long long)info[NZ_INFO_KV_BYTES]);
	nz_engine_destroy(e);
}

/* A valid one-sequence step; returns its status. */
static int32_t good_step(nz_engine *e, const nz_config *c, const int32_t *bt, int32_t *token)
{
	int32_t tok[3] = {1, 2, 3};
	tseq s = {.tokens = tok, .len = 3, .pos = 0, .slot = -1, .sample = 1, .blocks = bt};
	int32_t st = run_step(e, c, &s, 1, MAXB, 0);
	if (token)
		*token = s.token;
	return st;
}

static void test_engine_errors(void)
{
	nz_config c = tiny_config();
	tmodel m;
	tm_init(&m, &c, 600, 0);
	nz_engine *e = NULL;
	CHECK_OK(nz_engine_create(&c, &e));
	if (!e)
		return;
	int32_t bt[MAXB];
	for (int i = 0; i < MAXB; i++)
		bt[i] = i;

	/* wrong shape, naming the tensor and both shapes */
	int64_t shape[2] = {64, 32};
	float *buf = calloc(100000, 4);
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_Q, 1, NZ_F32, buf, shape, 2), NZ_ERR_INVALID,
	          "Q of layer 1 has shape [64,32], want [48,48]");
	int64_t s1[1] = {48};
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_ATTN_NORM, 2, NZ_F32, buf, s1, 1), NZ_ERR_INVALID, "layer 2");
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_FINAL_NORM, 0, NZ_F32, buf, s1, 1), NZ_ERR_INVALID, "layer -1");
	CHECK_ERR(nz_engine_set_tensor(e, 99, -1, NZ_F32, buf, s1, 1), NZ_ERR_INVALID, "kind 99");
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_FINAL_NORM, -1, 5, buf, s1, 1), NZ_ERR_INVALID, "dtype 5");
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_FINAL_NORM, -1, NZ_F32, NULL, s1, 1), NZ_ERR_INVALID, "NULL");
	int64_t s2[2] = {48, 1};
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_FINAL_NORM, -1, NZ_F32, buf, s2, 2), NZ_ERR_INVALID,
	          "FINAL_NORM has shape [48,1], want [48]");
	free(buf);

	/* step and adapters before finalize */
	CHECK_ERR(good_step(e, &c, bt, NULL), NZ_ERR_INVALID, "not finalized");
	CHECK_ERR(nz_adapter_clear(e, 0), NZ_ERR_INVALID, "not finalized");

	/* missing tensors at finalize */
	size_t rows = (size_t)(c.num_layers + 1) * NZ_T_COUNT;
	for (size_t i = 0; i < rows; i++) {
		int layer = (int)(i / NZ_T_COUNT) - 1;
		int32_t kind = (int32_t)(i % NZ_T_COUNT);
		if (m.src[i] && !(layer == 1 && kind == NZ_T_DOWN))
			CHECK_OK(tm_set(e, &m, layer, kind, NZ_F32, m.src[i]));
	}
	CHECK_ERR(nz_engine_finalize(e), NZ_ERR_INVALID, "missing tensor DOWN of layer 1");
	CHECK_OK(tm_set(e, &m, 1, NZ_T_DOWN, NZ_F32, m.src[2 * NZ_T_COUNT + NZ_T_DOWN]));
	CHECK_OK(nz_engine_finalize(e));
	CHECK_OK(nz_engine_finalize(e)); /* again: nothing to do */
	int32_t want_tok = -1, got = -2;
	CHECK_OK(good_step(e, &c, bt, &want_tok));

	/* adapters */
	tadapter ad;
	int ranks[NZ_M_COUNT] = {4, 4, 4, 4, 4, 4, 4};
	ta_init(&ad, &c, 61, ranks, -1);
	CHECK_ERR(ta_load(e, 4, &ad, NZ_F32, &c), NZ_ERR_INVALID, "slot 4 is out of range 0..3");
	CHECK_ERR(ta_load(e, -1, &ad, NZ_F32, &c), NZ_ERR_INVALID, "slot -1");
	CHECK_ERR(nz_adapter_clear(e, 9), NZ_ERR_INVALID, "slot 9");
	/* a failing load leaves the slot empty: slot 2 first holds the adapter */
	CHECK_OK(ta_load(e, 2, &ad, NZ_F32, &c));
	ad.rank[1][NZ_M_V] = 17; /* > max_rank 16 (the arrays are larger than needed: only rank is checked) */
	float *big_a = calloc(17 * 48, 4), *big_b = calloc(48 * 17, 4);
	float *sa = ad.a[1][NZ_M_V], *sb = ad.b[1][NZ_M_V];
	ad.a[1][NZ_M_V] = big_a, ad.b[1][NZ_M_V] = big_b;
	CHECK_ERR(ta_load(e, 2, &ad, NZ_F32, &c), NZ_ERR_INVALID, "rank 17 is out of range 1..16");
	ad.a[1][NZ_M_V] = sa, ad.b[1][NZ_M_V] = sb, ad.rank[1][NZ_M_V] = 4;
	free(big_a), free(big_b);
	{
		float *l0 = malloc(sizeof(float) * 97), *l2 = malloc(sizeof(float) * 97);
		int32_t tok[3] = {1, 2, 3};
		tseq s = {.tokens = tok, .len = 3, .pos = 0, .slot = -1, .sample = 1, .blocks = bt, .logits = l0};
		CHECK_OK(run_step(e, &c, &s, 1, MAXB, 0));
		s.slot = 2, s.logits = l2;
		CHECK_OK(run_step(e, &c, &s, 1, MAXB, 0));
		CHECK(memcmp(l0, l2, sizeof(float) * 97) == 0, "after a failed load the slot is empty");
		free(l0), free(l2);
	}
	{
		int32_t layer[2] = {0, 0}, module[2] = {NZ_M_Q, NZ_M_Q}, rank[2] = {4, 4}, dt[2] = {NZ_F32, NZ_F32};
		float scale[2] = {1, 1};
		const void *a[2] = {ad.a[0][0], ad.a[0][0]}, *b[2] = {ad.b[0][0], ad.b[0][0]};
		CHECK_ERR(nz_adapter_load(e, 0, 2, layer, module, rank, scale, dt, a, dt, b), NZ_ERR_INVALID,
		          "layer 0 q is listed twice");
		layer[1] = 5;
		CHECK_ERR(nz_adapter_load(e, 0, 2, layer, module, rank, scale, dt, a, dt, b), NZ_ERR_INVALID,
		          "layer 5 is out of range");
		layer[1] = 1, module[1] = 7;
		CHECK_ERR(nz_adapter_load(e, 0, 2, layer, module, rank, scale, dt, a, dt, b), NZ_ERR_INVALID, "module 7");
		module[1] = NZ_M_K, scale[1] = INFINITY;
		CHECK_ERR(nz_adapter_load(e, 0, 2, layer, module, rank, scale, dt, a, dt, b), NZ_ERR_INVALID, "scale");
		scale[1] = 1, dt[1] = 3;
		CHECK_ERR(nz_adapter_load(e, 0, 2, layer, module, rank, scale, dt, a, dt, b), NZ_ERR_INVALID, "dtypes");
		dt[1] = NZ_F32, b[1] = NULL;
		CHECK_ERR(nz_adapter_load(e, 0, 2, layer, module, rank, scale, dt, a, dt, b), NZ_ERR_INVALID, "NULL");
		CHECK_OK(nz_adapter_load(e, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)); /* empty adapter */
	}
	ta_free(&ad);

	/* batches */
	int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, len[2] = {3, 2}, pos[2] = {0, 0}, slot[2] = {-1, 0},
	        smp[2] = {1, 1}, tables[2 * MAXB], top_k[2] = {0, 0}, otok[2], ttok[40];
	float temp[2] = {0, 0}, top_p[2] = {1, 1}, olp[2], tlp[40];
	uint64_t seed[2] = {1, 2};
	for (int i = 0; i < 2 * MAXB; i++)
		tables[i] = i;
	nz_batch good = {.n_seqs = 2, .n_tokens = 5, .tokens = tok, .seq_len = len, .seq_pos = pos, .seq_slot = slot,
	                 .seq_sample = smp, .block_table = tables, .max_blocks = MAXB, .temperature = temp,
	                 .top_p = top_p, .top_k = top_k, .seed = seed, .n_top = 0, .out_token = otok,
	                 .out_logprob = olp};
	CHECK_OK(nz_step(e, &good));
	nz_batch b = good;
	b.n_tokens = 200;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "max_batch_tokens");
	b = good;
	b.n_seqs = 17;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "max_batch_seqs");
	b = good;
	b.n_tokens = 4;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "seq_len sum to");
	b = good;
	tables[MAXB] = 256; /* sequence 1, block 0; the pool has 256 */
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "block_table[1][0] is 256, want 0..255");
	tables[MAXB] = -3;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "block_table[1][0] is -3");
	tables[MAXB] = 0; /* both sequences write block 0 */
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "KV block 0 is written by sequence 0");
	tables[MAXB] = MAXB;
	pos[1] = 4;
	tables[MAXB] = 0; /* sequence 1 reads block 0 while sequence 0 writes it */
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "and read by sequence 1");
	tables[MAXB] = MAXB;
	pos[1] = 0;
	b.max_blocks = 0;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "max_blocks");
	b = good;
	pos[0] = 255; /* 255 + 3 > max_position 256 */
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "max_position");
	pos[0] = 62; /* 65 positions need 17 blocks of 4 > max_blocks 16 */
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "needs 17 KV blocks");
	pos[0] = 0;
	tok[4] = 97;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "tokens[4] is 97, want 0..96");
	tok[4] = 5;
	slot[1] = 4;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "seq_slot[1] is 4");
	slot[1] = 0;
	len[1] = 0;
	b.n_tokens = 3;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "seq_len[1] is 0");
	len[1] = 2;
	b = good;
	smp[0] = 2;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "seq_sample[0] is 2");
	smp[0] = 1;
	temp[1] = -1;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "temperature[1]");
	temp[1] = 0;
	top_p[0] = 0;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "top_p[0]");
	top_p[0] = 1;
	top_k[1] = -2;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "top_k[1]");
	top_k[1] = 0;
	b.n_top = 21;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "n_top is 21");
	b.n_top = 3;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "out_top_token");
	b.out_top_token = ttok, b.out_top_logprob = tlp;
	CHECK_OK(nz_step(e, &b));
	/* logit adjustments: offsets from 0, never decreasing, distinct tokens
	 * in the vocabulary, finite values, arrays given */
	{
		int32_t boff[3] = {0, 2, 3}, btok[3] = {4, 5, 4};
		float bval[3] = {1, -2, 3};
		b = good;
		b.bias_off = boff;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "bias_token or bias_value is NULL");
		b.bias_token = btok, b.bias_value = bval;
		CHECK_OK(nz_step(e, &b));
		boff[0] = 1;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "bias_off[0] is 1");
		boff[0] = 0, boff[2] = 1;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "bias_off[2] is 1, less than");
		boff[2] = 3, btok[1] = 4;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "sequence 0 adjusts token 4 twice");
		btok[1] = 97;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "bias_token[1] is 97, want 0..96");
		btok[1] = 5, bval[2] = -INFINITY;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "bias_value[2] is -inf");
		bval[2] = NAN, smp[1] = 0;
		CHECK_OK(nz_step(e, &b)); /* a sequence that does not sample: its entries are ignored */
		smp[1] = 1;
	}
	/* token masks: rows in range, allow given, each used row allowing a
	 * token of the vocabulary (97 tokens: 4 words, the last one's bits
	 * past token 96 do not count) */
	{
		int32_t sallow[2] = {0, 1};
		uint32_t allow[8] = {0, 0, 0, 0, 1, 0, 0, 0};
		b = good;
		b.seq_allow = sallow;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "seq_allow[0] is 0, want -1..-1");
		b.n_allow = 2;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "allow is NULL");
		b.allow = allow;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "row 0 of allow (sequence 0) allows no token");
		allow[3] = ~1u; /* bits of tokens 97.. only */
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "row 0 of allow");
		allow[3] = 1; /* token 96 */
		CHECK_OK(nz_step(e, &b));
		CHECK(otok[0] == 96 && otok[1] == 0, "masked draws %d %d, want 96 and 0", otok[0], otok[1]);
		sallow[1] = 2;
		CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "seq_allow[1] is 2, want -1..1");
		sallow[1] = -1;
		CHECK_OK(nz_step(e, &b));
	}
	/* scoring: targets need their outputs, in the vocabulary */
	int32_t target[5] = {2, 3, -1, 5, -1};
	float slp[5] = {1, 1, 1, 1, 1};
	b = good;
	b.score_target = target;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "out_score_logprob");
	b.out_score_logprob = slp;
	target[1] = 1 << 30;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "score_target[1]");
	target[1] = 3;
	CHECK_OK(nz_step(e, &b));
	CHECK(slp[0] < 0 && slp[1] < 0 && slp[2] == 1 && slp[3] < 0 && slp[4] == 1, "scored logprobs %g %g %g %g %g",
	      (double)slp[0], (double)slp[1], (double)slp[2], (double)slp[3], (double)slp[4]);
	b = good;
	b.out_token = NULL;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "out_token");
	smp[0] = smp[1] = 0; /* nothing sampled: no sampling arrays needed */
	CHECK_OK(nz_step(e, &b));
	smp[0] = smp[1] = 1;
	b.tokens = NULL;
	CHECK_ERR(nz_step(e, &b), NZ_ERR_INVALID, "NULL");
	CHECK_ERR(nz_step(e, NULL), NZ_ERR_INVALID, "NULL");

	/* the engine still works and gives the same answer */
	CHECK_OK(good_step(e, &c, bt, &got));
	CHECK(got == want_tok, "after the errors: token %d, before %d", got, want_tok);
	nz_engine_destroy(e);
	tm_free(&m);
}

/* An engine for c with every tensor of a random model m (seed) set, not
 * finalized; NULL (m freed) when it cannot be made. */
static nz_engine *loaded_engine(nz_config *c, tmodel *m, uint64_t seed)
{
	tm_init(m, c, seed, 0);
	nz_engine *e = NULL;
	CHECK_OK(nz_engine_create(c, &e));
	if (!e) {
		tm_free(m);
		return NULL;
	}
	size_t rows = (size_t)(c->num_layers + 1) * NZ_T_COUNT;
	for (size_t i = 0; i < rows; i++)
		if (m->src[i])
			CHECK_OK(tm_set(e, m, (int)(i / NZ_T_COUNT) - 1, (int32_t)(i % NZ_T_COUNT), NZ_F32, m->src[i]));
	return e;
}

/* Q_NORM and K_NORM (Qwen3) are in every layer or in none. */
static void test_head_norm_errors(void)
{
	nz_config c = tiny_config();
	tmodel m;
	nz_engine *e = loaded_engine(&c, &m, 610);
	if (!e)
		return;
	float *ones = malloc(sizeof(float) * (size_t)c.head_dim);
	for (int64_t i = 0; i < c.head_dim; i++)
		ones[i] = 1;
	int64_t shape[1] = {c.head_dim}, wrong[1] = {c.hidden_size};
	CHECK_ERR(nz_engine_set_tensor(e, NZ_T_Q_NORM, 0, NZ_F32, ones, wrong, 1), NZ_ERR_INVALID, "Q_NORM of layer 0 has shape");
	CHECK_OK(nz_engine_set_tensor(e, NZ_T_Q_NORM, 0, NZ_F32, ones, shape, 1));
	CHECK_ERR(nz_engine_finalize(e), NZ_ERR_INVALID, "Q_NORM is set in 1 of");
	for (int l = 1; l < c.num_layers; l++)
		CHECK_OK(nz_engine_set_tensor(e, NZ_T_Q_NORM, l, NZ_F32, ones, shape, 1));
	CHECK_ERR(nz_engine_finalize(e), NZ_ERR_INVALID, "Q_NORM and K_NORM come together");
	for (int l = 0; l < c.num_layers; l++)
		CHECK_OK(nz_engine_set_tensor(e, NZ_T_K_NORM, l, NZ_F32, ones, shape, 1));
	CHECK_OK(nz_engine_finalize(e));
	free(ones);
	nz_engine_destroy(e);
	tm_free(&m);
}

/* Gemma's POST_ATTN_NORM and POST_FFN_NORM likewise; the Gemma options of
 * nz_config are checked at create. */
static void test_gemma_errors(void)
{
	nz_config c = tiny_config();
	nz_engine *e = NULL;
	c.hidden_act = 2;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "hidden_act");
	c = tiny_config();
	c.final_softcap = -1;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "final_softcap -1 must be finite and >= 0");
	c = tiny_config();
	c.norm_weight_offset = INFINITY;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "norm_weight_offset inf must be finite");
	c = tiny_config();
	int32_t sliding[64] = {0};
	sliding[1] = 2;
	c.layer_sliding = sliding;
	CHECK_ERR(nz_engine_create(&c, &e), NZ_ERR_INVALID, "layer_sliding[1] is 2");
	c = tiny_config();
	tmodel m;
	if (!(e = loaded_engine(&c, &m, 611)))
		return;
	float *w = calloc((size_t)c.hidden_size, sizeof(float));
	int64_t shape[1] = {c.hidden_size};
	for (int l = 0; l < c.num_layers; l++)
		CHECK_OK(nz_engine_set_tensor(e, NZ_T_POST_ATTN_NORM, l, NZ_F32, w, shape, 1));
	CHECK_ERR(nz_engine_finalize(e), NZ_ERR_INVALID, "POST_ATTN_NORM and POST_FFN_NORM come together");
	CHECK_OK(nz_engine_set_tensor(e, NZ_T_POST_FFN_NORM, 0, NZ_F32, w, shape, 1));
	CHECK_ERR(nz_engine_finalize(e), NZ_ERR_INVALID, "POST_FFN_NORM is set in 1 of");
	for (int l = 1; l < c.num_layers; l++)
		CHECK_OK(nz_engine_set_tensor(e, NZ_T_POST_FFN_NORM, l, NZ_F32, w, shape, 1));
	CHECK_OK(nz_engine_finalize(e));
	free(w);
	nz_engine_destroy(e);
	tm_free(&m);
}

int main(void)
{
	test_abi();
	test_gemma_errors();
	test_create_errors();
	test_engine_errors();
	test_head_norm_errors();
	return t_done("test_errors");
}
