/*
 * test_common.c — dtype conversion (engine-spec §1.3), RoPE (§1.5, §9.3),
 * the random generator and the sampler.
 */
#include <immintrin.h>

#include "testutil.h"

static void test_bf16(void)
{
	struct {
		float f;
		uint16_t b;
	} v[] = {
	    {1.0f, 0x3F80}, {-2.5f, 0xC020}, {3.14159265f, 0x4049}, {0.001f, 0x3A83},
	    {65504.0f, 0x4780}, {1.00390625f, 0x3F80}, {1.01171875f, 0x3F82}, {0.0f, 0x0000},
	    {-0.0f, 0x8000}, {INFINITY, 0x7F80}, {-INFINITY, 0xFF80},
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		CHECK(nz_f32_to_bf16(v[i].f) == v[i].b, "f32 %.9g -> bf16 0x%04x, want 0x%04x", (double)v[i].f,
		      nz_f32_to_bf16(v[i].f), v[i].b);
	/* NaN stays NaN, also when only low mantissa bits are set */
	uint32_t nan_bits[] = {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu};
	for (size_t i = 0; i < 4; i++) {
		float f;
		memcpy(&f, &nan_bits[i], 4);
		uint16_t b = nz_f32_to_bf16(f);
		CHECK(isnan(nz_bf16_to_f32(b)), "NaN 0x%08x -> bf16 0x%04x is not NaN", nan_bits[i], b);
	}
	/* bf16 -> f32 is exact and round-trips */
	for (uint32_t b = 0; b < 65536; b++) {
		float f = nz_bf16_to_f32((uint16_t)b);
		uint32_t u;
		memcpy(&u, &f, 4);
		CHECK(u == b << 16, "bf16 0x%04x -> 0x%08x", b, u);
		if (!isnan(f))
			CHECK(nz_f32_to_bf16(f) == b, "bf16 0x%04x does not round-trip", b);
	}
}

static void test_f16(void)
{
	struct {
		float f;
		uint16_t h;
	} v[] = {
	    {1.0f, 0x3C00},       {-2.0f, 0xC000},      {65504.0f, 0x7BFF}, {65520.0f, 0x7C00},
	    {0x1p-24f, 0x0001},   {0x1p-25f, 0x0000},   {0x1.8p-25f, 0x0001}, {0x1p-14f, 0x0400},
	    {0.1f, 0x2E66},       {-0.0f, 0x8000},      {1e10f, 0x7C00},    {0x1.ffcp-15f, 0x0400},
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		CHECK(nz_f32_to_f16(v[i].f) == v[i].h, "f32 %a -> f16 0x%04x, want 0x%04x", (double)v[i].f,
		      nz_f32_to_f16(v[i].f), v[i].h);
	/* every f16 against the F16C instructions, both directions */
	for (uint32_t h = 0; h < 65536; h++) {
		float f = nz_f16_to_f32((uint16_t)h), hw = _cvtsh_ss((unsigned short)h);
		if (isnan(hw)) {
			CHECK(isnan(f), "f16 0x%04x should be NaN", h);
			continue;
		}
		CHECK(memcmp(&f, &hw, 4) == 0, "f16 0x%04x -> %a, hardware %a", h, (double)f, (double)hw);
		CHECK(nz_f32_to_f16(f) == h, "f16 0x%04x does not round-trip", h);
	}
	/* random f32 bit patterns against the hardware's round-to-nearest-even */
	trng r = {7};
	for (int i = 0; i < 2000000; i++) {
		uint32_t u = (uint32_t)trng_next(&r);
		if (i & 1)
			u = (u & 0x80000000u) | (0x30000000u + (u & 0x1FFFFFFFu)); /* concentrate near the f16 range */
		float f;
		memcpy(&f, &u, 4);
		if (isnan(f))
			continue;
		uint16_t want = (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
		uint16_t got = nz_f32_to_f16(f);
		if (got != want) {
			CHECK(got == want, "f32 0x%08x -> f16 0x%04x, hardware 0x%04x", u, got, want);
			break;
		}
	}
	/* nz_convert agrees with the scalar functions */
	float src[5] = {1.5f, -3.25f, 1e-6f, 70000.0f, 0.333f};
	uint16_t h[5], b[5];
	float back[5];
	nz_convert(h, NZ_F16, src, NZ_F32, 5);
	nz_convert(b, NZ_BF16, src, NZ_F32, 5);
	for (int i = 0; i < 5; i++) {
		CHECK(h[i] == nz_f32_to_f16(src[i]), "nz_convert f16 %d", i);
		CHECK(b[i] == nz_f32_to_bf16(src[i]), "nz_convert bf16 %d", i);
	}
	nz_convert(back, NZ_F32, b, NZ_BF16, 5);
	for (int i = 0; i < 5; i++)
		CHECK(back[i] == nz_bf16_to_f32(b[i]), "nz_convert bf16->f32 %d", i);
}

/* nz_convert_scaled against the per-element way (nz_load_f32, a multiply
 * in f32, nz_convert from f32) for every pair of dtypes, on random bit
 * patterns NaN, infinity and subnormals included. */
static void test_convert_scaled(void)
{
	enum { N = 4099 };
	static unsigned char src[N * 4], got[N * 4], want[N * 4];
	const int32_t dts[3] = {NZ_F32, NZ_F16, NZ_BF16};
	const float scales[3] = {1.0f, 0.125f, 1.7f};
	trng r = {11};
	for (int i = 0; i < N * 4; i++)
		src[i] = (unsigned char)trng_next(&r);
	for (int si = 0; si < 3; si++)
		for (int di = 0; di < 3; di++)
			for (int k = 0; k < 3; k++) {
				const int32_t sd = dts[si], dd = dts[di];
				nz_convert_scaled(got, dd, src, sd, N, scales[k]);
				for (int64_t i = 0; i < N; i++) {
					float f = nz_load_f32(src, sd, i) * scales[k];
					nz_convert(want + i * (int64_t)nz_dtype_size(dd), dd, &f, NZ_F32, 1);
				}
				const size_t bytes = (size_t)N * nz_dtype_size(dd);
				int same = memcmp(got, want, bytes) == 0;
				if (!same && dd == NZ_F32) { /* an f32 NaN may come out quieted: compare as NaN */
					same = 1;
					for (int64_t i = 0; i < N; i++) {
						float a, b;
						memcpy(&a, got + 4 * i, 4);
						memcpy(&b, want + 4 * i, 4);
						if (!(memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b))))
							same = 0;
					}
				}
				CHECK(same, "nz_convert_scaled %s -> %s, scale %g", nz_dtype_name(sd), nz_dtype_name(dd),
				      (double)scales[k]);
			}
}

static void check_rel(double got, double want, double tol, const char *what)
{
	CHECK(fabs(got - want) <= tol * fabs(want), "%s: got %.17g want %.17g", what, got, want);
}

static void test_rope(void)
{
	nz_config c = tiny_config();
	c.head_dim = 128;
	c.rope_theta = 10000;
	float inv[64];
	nz_rope_inv_freq(&c, inv);
	check_rel(inv[0], 1.0, 1e-6, "default inv[0]");
	check_rel(inv[1], 0.8659643233600653, 1e-6, "default inv[1]");
	check_rel(inv[32], 0.01, 1e-6, "default inv[32]");
	check_rel(inv[63], 1.1547819846894582e-4, 1e-6, "default inv[63]");

	c.rope_type = NZ_ROPE_LINEAR;
	c.rope_factor = 4;
	float lin[64];
	nz_rope_inv_freq(&c, lin);
	for (int j = 0; j < 64; j++)
		check_rel(lin[j], inv[j] / 4.0, 1e-6, "linear");

	c.rope_type = NZ_ROPE_LLAMA3;
	c.rope_theta = 500000;
	c.rope_factor = 8;
	c.rope_low_freq_factor = 1;
	c.rope_high_freq_factor = 4;
	c.rope_original_max_position = 8192;
	float base[64], l3[64];
	nz_config d = c;
	d.rope_type = NZ_ROPE_DEFAULT;
	nz_rope_inv_freq(&d, base);
	nz_rope_inv_freq(&c, l3);
	check_rel(l3[0], 1.0, 1e-6, "llama3 inv[0]");
	check_rel(base[20], 0.0165604400809944, 1e-6, "llama3 base inv[20]");
	check_rel(l3[20], 0.0165604400809944, 1e-6, "llama3 inv[20]");
	check_rel(base[30], 0.00213111953691197, 1e-6, "llama3 base inv[30]");
	check_rel(l3[30], 0.00137189356776114, 1e-6, "llama3 inv[30]");
	check_rel(base[40], 2.742481756762073e-4, 1e-6, "llama3 base inv[40]");
	check_rel(l3[40], 3.428102195952591e-5, 1e-6, "llama3 inv[40]");
	check_rel(base[63], 2.455140791131609e-6, 1e-6, "llama3 base inv[63]");
	check_rel(l3[63], 3.068925988914511e-7, 1e-6, "llama3 inv[63]");
	int same = 0, scaled = 0, smooth = 0;
	for (int j = 0; j < 64; j++) {
		if (l3[j] == base[j])
			same++;
		else if (fabs((double)l3[j] - base[j] / 8.0) <= 1e-6 * base[j] / 8.0)
			scaled++;
		else
			smooth++;
	}
	CHECK(same == 29 && scaled == 29 && smooth == 6, "llama3 bands: %d unchanged, %d scaled, %d smoothed", same,
	      scaled, smooth);

	/* yarn, Qwen2.5's long-context settings (factor 4 over 32768, theta 1e6,
	 * beta 32/1): the correction range is [23, 40] (floored/ceiled), so
	 * pairs up to 23 keep their frequency, pairs from 40 on are divided by
	 * 4 and the ones between are blended. Expected values from a plain-math
	 * transcription of transformers' _compute_yarn_parameters. */
	nz_config y = tiny_config();
	y.head_dim = 128;
	y.rope_theta = 1e6;
	y.rope_type = NZ_ROPE_YARN;
	y.rope_factor = 4;
	y.rope_original_max_position = 32768;
	y.rope_beta_fast = 32;
	y.rope_beta_slow = 1;
	y.rope_attention_factor = 1.1386294361119891;
	y.rope_truncate = 1;
	float yr[64];
	nz_rope_inv_freq(&y, yr);
	const int yj[7] = {0, 10, 20, 30, 40, 50, 63};
	const double ywant[7] = {1, 0.1154781984689458, 0.013335214321633241, 0.0010643609812470017,
	                         4.4456985250973067e-05, 5.1338125661428656e-06, 3.1023444018792988e-07};
	for (int i = 0; i < 7; i++)
		check_rel(yr[yj[i]], ywant[i], 2e-6, "yarn inv");
	CHECK(nz_rope_attention_factor(&y) == (float)1.1386294361119891, "yarn attention factor %g",
	      (double)nz_rope_attention_factor(&y));
	CHECK(nz_rope_attention_factor(&c) == 1.0f, "llama3 attention factor %g", (double)nz_rope_attention_factor(&c));
	y.rope_truncate = 0; /* range [23.596, 39.651]: only the blended pairs move */
	nz_rope_inv_freq(&y, yr);
	for (int i = 0; i < 7; i++)
		check_rel(yr[yj[i]], yj[i] == 30 ? 0.0010792377416765538 : ywant[i], 2e-6, "yarn inv (no truncate)");
	/* hd 16, theta 1e4, factor 8 over 64, beta 8/2: range [0, 2] */
	y.head_dim = 16;
	y.rope_theta = 10000;
	y.rope_factor = 8;
	y.rope_original_max_position = 64;
	y.rope_beta_fast = 8;
	y.rope_beta_slow = 2;
	y.rope_truncate = 1;
	const double ysmall[8] = {1,       0.17787811838447135, 0.012500000000000001, 0.0039528470752104739,
	                          0.00125, 0.00039528470752104737, 0.000125, 3.9528470752104742e-05};
	nz_rope_inv_freq(&y, yr);
	for (int i = 0; i < 8; i++)
		check_rel(yr[i], ysmall[i], 2e-6, "yarn hd16 inv");
	float ycs[8], ysn[8];
	nz_rope_cos_sin(yr, 8, 3, 1.5f, ycs, ysn);
	for (int i = 0; i < 8; i++)
		CHECK(ycs[i] == (float)cos((double)(3.0f * yr[i])) * 1.5f && ysn[i] == (float)sin((double)(3.0f * yr[i])) * 1.5f,
		      "scaled cos/sin[%d]", i);

	/* §9.3 hand example: hd 4, p 1, theta 10000: f = [1, 0.01] */
	nz_config h = tiny_config();
	h.head_dim = 4;
	h.rope_theta = 10000;
	float f[2], cs[2], sn[2];
	nz_rope_inv_freq(&h, f);
	check_rel(f[0], 1.0, 1e-7, "hand f0");
	check_rel(f[1], 0.01, 1e-6, "hand f1");
	nz_rope_cos_sin(f, 2, 1, 1.0f, cs, sn);
	float x[4] = {1, 2, 3, 4};
	nz_rope_apply(x, 2, cs, sn);
	double want[4] = {cos(1.0) - 3 * sin(1.0), 2 * cos(0.01) - 4 * sin(0.01), 3 * cos(1.0) + sin(1.0),
	                  4 * cos(0.01) + 2 * sin(0.01)};
	for (int i = 0; i < 4; i++)
		CHECK(fabs(x[i] - want[i]) < 1e-6, "hand rope[%d] = %.9g, want %.9g", i, (double)x[i], want[i]);

	/* longrope over a partial rotary_dim (Phi-4-mini's shape: 96 of 128
	 * dims): inv[j] = 1 / (ext[j] · theta^(2j/96)), the attention factor
	 * on cos and sin */
	nz_config p = tiny_config();
	p.head_dim = 128;
	p.rotary_dim = 96;
	p.rope_theta = 10000;
	p.rope_type = NZ_ROPE_LONGROPE;
	p.rope_attention_factor = 1.19;
	float ext[48], pinv[48];
	for (int j = 0; j < 48; j++)
		ext[j] = 1.0f + 0.5f * (float)j;
	p.rope_ext_factors = ext;
	CHECK(nz_rotary_dim(&p) == 96, "rotary_dim");
	nz_rope_inv_freq(&p, pinv);
	for (int j = 0; j < 48; j++)
		check_rel(pinv[j], 1.0 / (ext[j] * pow(10000.0, 2.0 * j / 96.0)), 1e-6, "longrope inv");
	CHECK(nz_rope_attention_factor(&p) == 1.19f, "longrope attention factor");
	/* the dims past rotary_dim are left as they are */
	float hx[8] = {1, 2, 3, 4, 5, 6, 7, 8}, hcs[2] = {0.5f, 0.25f}, hsn[2] = {0.75f, 0.125f};
	nz_rope_apply(hx, 2, hcs, hsn); /* rotary_dim 4 of 8 */
	const float hwant[8] = {1 * 0.5f - 3 * 0.75f, 2 * 0.25f - 4 * 0.125f, 3 * 0.5f + 1 * 0.75f, 4 * 0.25f + 2 * 0.125f,
	                        5, 6, 7, 8};
	for (int i = 0; i < 8; i++)
		CHECK(hx[i] == hwant[i], "partial rope[%d] = %g, want %g", i, (double)hx[i], (double)hwant[i]);
}

static void test_expf(void)
{
	double worst = 0;
	float at = 0;
	for (float x = -87.3f; x < 88.7f; x += 0.000731f) {
		double e = exp((double)x), r = fabs((double)nz_expf(x) - e) / e;
		if (r > worst)
			worst = r, at = x;
	}
	CHECK(worst < 3e-7, "nz_expf relative error %g at %g", worst, (double)at);
	CHECK(nz_expf(0) == 1.0f, "exp(0)");
	CHECK(nz_expf(-INFINITY) == 0.0f && nz_expf(-1000) == 0.0f, "exp(-inf), exp(-1000)");
	CHECK(isinf(nz_expf(INFINITY)) && isinf(nz_expf(89)), "exp(inf), exp(89)");
	CHECK(isnan(nz_expf(NAN)), "exp(nan)");
	CHECK(nz_expf(88.5f) > 2e38f && isfinite(nz_expf(88.5f)), "exp(88.5) is finite");
	CHECK(nz_expf(-87.0f) > 0, "exp(-87) is normal");
}

static void test_rng(void)
{
	double u0 = nz_rng_uniform(42, 0), u0b = nz_rng_uniform(42, 0), u1 = nz_rng_uniform(42, 1);
	CHECK(u0 == u0b, "same (seed, position), same draw");
	CHECK(u0 != u1, "different positions draw differently");
	CHECK(nz_rng_uniform(43, 0) != u0, "different seeds draw differently");
	double mean = 0;
	for (int i = 0; i < 100000; i++) {
		double u = nz_rng_uniform(9, i);
		CHECK(u >= 0 && u < 1, "u %g out of [0,1)", u);
		mean += u;
	}
	mean /= 100000;
	CHECK(fabs(mean - 0.5) < 0.01, "mean of uniform draws %g", mean);
}

static int32_t sample(const float *lg, int64_t V, float temp, float top_p, int32_t top_k, uint64_t seed, int64_t pos,
                      float *lp)
{
	void *scr = malloc(nz_sample_scratch_bytes(V));
	nz_sample_params p = {.temperature = temp, .top_p = top_p, .top_k = top_k, .seed = seed, .position = pos};
	int32_t tok;
	float l;
	nz_sample(lg, V, &p, scr, &tok, &l, NULL, NULL);
	free(scr);
	if (lp)
		*lp = l;
	return tok;
}

static void test_sampling(void)
{
	/* greedy: argmax, lowest id on ties */
	float tie[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 2.0f};
	CHECK(sample(tie, 6, 0, 1, 0, 1, 0, NULL) == 1, "greedy tie picks the lowest id");

	/* logprob = log_softmax, top-N most likely first with ties by id */
	float lg[6] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f, 2.5f};
	double lse = 0;
	for (int i = 0; i < 6; i++)
		lse += exp(lg[i]);
	lse = log(lse);
	void *scr = malloc(nz_sample_scratch_bytes(6));
	nz_sample_params p = {.temperature = 0, .top_p = 1, .top_k = 0, .seed = 5, .position = 3, .n_top = 4};
	int32_t tok, tt[4];
	float lp, tl[4];
	nz_sample(lg, 6, &p, scr, &tok, &lp, tt, tl);
	CHECK(tok == 1, "greedy token %d", tok);
	CHECK(fabs(lp - (3.0 - lse)) < 1e-6, "logprob %g want %g", (double)lp, 3.0 - lse);
	int32_t want_top[4] = {1, 2, 5, 0};
	for (int i = 0; i < 4; i++) {
		CHECK(tt[i] == want_top[i], "top[%d] = %d, want %d", i, tt[i], want_top[i]);
		CHECK(fabs(tl[i] - (lg[want_top[i]] - lse)) < 1e-6, "top logprob %d", i);
	}
	/* more tops than tokens: the rest are -1 */
	p.n_top = 8;
	int32_t tt8[8];
	float tl8[8];
	nz_sample(lg, 6, &p, scr, &tok, &lp, tt8, tl8);
	CHECK(tt8[5] == 3 && tt8[6] == -1 && tt8[7] == -1, "n_top > V pads with -1");
	/* scored: nothing drawn, the target's logprob, the same tops
	 * (even at a temperature, which scoring ignores) */
	p.n_top = 4;
	p.scored = 1;
	p.target = 3;
	p.temperature = 0.7f;
	nz_sample(lg, 6, &p, scr, &tok, &lp, tt, tl);
	CHECK(tok == 3, "scored token %d, want the target 3", tok);
	CHECK(fabs(lp - (-2.0 - lse)) < 1e-6, "scored logprob %g want %g", (double)lp, -2.0 - lse);
	for (int i = 0; i < 4; i++)
		CHECK(tt[i] == want_top[i], "scored top[%d] = %d, want %d", i, tt[i], want_top[i]);

	/* a scored row's top token is greedy's token: ties by lowest id,
	 * -0 ties +0, NaN never first (speculative decoding verifies drafts
	 * with the top token of scored rows) */
	float odd[][6] = {
		{0.0f, -0.0f, 0.0f, -1.0f, -0.0f, -2.0f},
		{-1.0f, -0.0f, 0.0f, -1.0f, -0.0f, -2.0f},
		{NAN, 1.0f, NAN, 1.0f, -3.0f, 0.5f},
		{-INFINITY, -INFINITY, -5.0f, NAN, -5.0f, -INFINITY},
		{2.0f, 2.0f, 2.0f, 2.0f, 2.0f, 2.0f},
	};
	for (int r = 0; r < (int)(sizeof odd / sizeof odd[0]); r++) {
		nz_sample_params g = {.temperature = 0, .top_p = 1, .n_top = 3};
		nz_sample(odd[r], 6, &g, scr, &tok, &lp, tt, tl);
		CHECK(tt[0] == tok, "row %d: greedy %d but top token %d", r, tok, tt[0]);
		int32_t greedy = tok;
		g.scored = 1;
		g.target = 5;
		nz_sample(odd[r], 6, &g, scr, &tok, &lp, tt, tl);
		CHECK(tt[0] == greedy, "row %d: scored top token %d, greedy %d", r, tt[0], greedy);
	}
	free(scr);

	/* seeded draws are deterministic and follow the distribution */
	float pr[4] = {0.4f, 0.3f, 0.2f, 0.1f}, l4[4];
	for (int i = 0; i < 4; i++)
		l4[i] = logf(pr[i]) + 7.0f;
	int cnt[4] = {0};
	for (int i = 0; i < 20000; i++) {
		int32_t t = sample(l4, 4, 1.0f, 1.0f, 0, 1234, i, NULL);
		CHECK(t == sample(l4, 4, 1.0f, 1.0f, 0, 1234, i, NULL), "draw %d is not deterministic", i);
		cnt[t]++;
	}
	for (int i = 0; i < 4; i++)
		CHECK(fabs(cnt[i] / 20000.0 - pr[i]) < 0.015, "token %d drawn %d/20000 times, want p=%g", i, cnt[i],
		      (double)pr[i]);

	/* top_p 0.5 keeps {0, 1} (0.4 < 0.5 <= 0.7), renormalised 4:3 */
	int kept[4] = {0};
	for (int i = 0; i < 20000; i++)
		kept[sample(l4, 4, 1.0f, 0.5f, 0, 99, i, NULL)]++;
	CHECK(kept[2] == 0 && kept[3] == 0, "top_p 0.5 drew tokens 2 (%d) or 3 (%d)", kept[2], kept[3]);
	CHECK(fabs(kept[0] / 20000.0 - 4.0 / 7.0) < 0.015, "top_p renormalisation: %d", kept[0]);
	/* top_p tiny: always the argmax */
	for (int i = 0; i < 100; i++)
		CHECK(sample(l4, 4, 1.0f, 1e-6f, 0, 5, i, NULL) == 0, "top_p tiny");
	/* top_k 1 is greedy; top_k 3 never draws token 3 */
	int k3[4] = {0};
	for (int i = 0; i < 5000; i++) {
		CHECK(sample(l4, 4, 1.5f, 1.0f, 1, 11, i, NULL) == 0, "top_k 1");
		k3[sample(l4, 4, 1.0f, 1.0f, 3, 12, i, NULL)]++;
	}
	CHECK(k3[3] == 0 && k3[2] > 0, "top_k 3 counts %d %d %d %d", k3[0], k3[1], k3[2], k3[3]);
	/* top_k 3 then top_p 0.6: of {0.4,0.3,0.2}/0.9, cumulative 0.444 < 0.6 <= 0.778 keeps {0, 1} */
	int kp[4] = {0};
	for (int i = 0; i < 5000; i++)
		kp[sample(l4, 4, 1.0f, 0.6f, 3, 13, i, NULL)]++;
	CHECK(kp[2] == 0 && kp[3] == 0 && kp[1] > 0, "top_k+top_p counts %d %d %d %d", kp[0], kp[1], kp[2], kp[3]);
	/* a low temperature concentrates on the argmax */
	int hot = 0;
	for (int i = 0; i < 2000; i++)
		hot += sample(l4, 4, 0.05f, 1.0f, 0, 17, i, NULL) == 0;
	CHECK(hot > 1990, "temperature 0.05 picked the argmax %d/2000 times", hot);
	/* logprob is the temperature-1 log_softmax even when sampling hot */
	float lpt;
	int32_t t = sample(l4, 4, 2.0f, 1.0f, 0, 3, 3, &lpt);
	CHECK(fabs(lpt - logf(pr[t])) < 1e-5, "sampled logprob %g want %g", (double)lpt, (double)logf(pr[t]));

	/* a large vocabulary: top_k draws only among the k most likely, top_p
	 * only from the smallest set reaching p */
	int64_t V = 5000;
	float *big = malloc(sizeof(float) * (size_t)V), *sorted = malloc(sizeof(float) * (size_t)V);
	trng r = {77};
	for (int64_t i = 0; i < V; i++)
		big[i] = trng_unif(&r, -4, 4);
	big[17] = big[4000]; /* a tie */
	memcpy(sorted, big, sizeof(float) * (size_t)V);
	for (int64_t i = 1; i < V; i++) /* insertion sort, descending */
		for (int64_t j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
			float tmp = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = tmp;
		}
	for (int i = 0; i < 300; i++) {
		int32_t tk = sample(big, V, 1.0f, 1.0f, 50, 21, i, NULL);
		CHECK(big[tk] >= sorted[49], "top_k 50 drew a token of rank > 50");
	}
	double mx = sorted[0], tot = 0;
	for (int64_t i = 0; i < V; i++)
		tot += exp(big[i] - mx);
	double cum = 0, cut = 0;
	for (int64_t i = 0; i < V; i++) {
		cum += exp(sorted[i] - mx);
		if (cum >= 0.3 * tot) {
			cut = sorted[i];
			break;
		}
	}
	for (int i = 0; i < 300; i++) {
		int32_t tk = sample(big, V, 1.0f, 0.3f, 0, 22, i, NULL);
		CHECK(big[tk] >= cut, "top_p 0.3 drew a token below the cut");
	}
	free(big);
	free(sorted);
}

int main(void)
{
	test_bf16();
	test_f16();
	test_convert_scaled();
	test_rope();
	test_expf();
	test_rng();
	test_sampling();
	return t_done("test_common");
}
