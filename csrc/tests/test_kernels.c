/*
 * test_kernels.c — each SIMD path's GEMM (int8 rows included), LoRA expand, attention
 * and attention kernels against naive float64 loops (odd sizes included), and the batch
 * invariance of their results (any token/row split gives the same bits).
 */
#include "cpu_kernels.h"
#include "testutil.h"

static const int32_t dtypes[3] = {NZ_F32, NZ_F16, NZ_BF16};

/* w (rows of ldw) as the kernels read it (dtype; NZ_Q8: int8 rows, their
 * scales in *scale) and as float64 */
static void *make_w(trng *r, int32_t dt, int64_t rows, int64_t ldw, double *ref, float **scale)
{
	int64_t n = rows * ldw;
	float *f = calloc((size_t)n, sizeof(float));
	fill_unif(r, f, n, -1, 1);
	void *w;
	if (dt == NZ_Q8) {
		w = malloc((size_t)n);
		*scale = malloc(sizeof(float) * (size_t)rows);
		nz_quantize_q8(w, *scale, f, NZ_F32, rows, ldw);
		for (int64_t i = 0; i < n; i++)
			ref[i] = (double)((int8_t *)w)[i] * (*scale)[i / ldw];
	} else {
		w = malloc((size_t)n * nz_dtype_size(dt));
		nz_convert(w, dt, f, NZ_F32, n);
		for (int64_t i = 0; i < n; i++)
			ref[i] = nz_load_f32(w, dt, i);
	}
	free(f);
	return w;
}

/* The table's GEMM for dt over rows r0.. of w (int8 rows: their scales). */
static void gemm_rows(const cpu_kernels *k, int32_t dt, const void *w, const float *scale, int64_t r0, int64_t ldw,
                      int64_t rows, int64_t n, const float *x, int64_t ldx, int64_t nt, float *y, int64_t ldy,
                      const float *bias)
{
	if (dt == NZ_Q8)
		k->gemm_q8((const int8_t *)w + r0 * ldw, scale + r0, ldw, rows, n, x, ldx, nt, y, ldy, bias);
	else
		k->gemm[dt]((const char *)w + r0 * ldw * (int64_t)nz_dtype_size(dt), ldw, rows, n, x, ldx, nt, y, ldy, bias);
}

static void test_gemm(const cpu_kernels *k)
{
	static const int64_t sizes[][3] = {
	    /* rows, n, ntok */
	    {1, 1, 1}, {3, 5, 2}, {4, 16, 4}, {5, 7, 3}, {13, 67, 9}, {8, 64, 1}, {37, 128, 70}, {6, 33, 5}, {9, 200, 13},
	};
	trng r = {1};
	static const int32_t gemm_dtypes[4] = {NZ_F32, NZ_F16, NZ_BF16, NZ_Q8};
	for (int d = 0; d < 4; d++) {
		int32_t dt = gemm_dtypes[d];
		for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
			int64_t rows = sizes[si][0], n = sizes[si][1], nt = sizes[si][2];
			int64_t ldw = n + 3, ldx = n + 5, ldy = rows + 2;
			double *wr = malloc(sizeof(double) * (size_t)(rows * ldw));
			float *sc = NULL;
			void *w = make_w(&r, dt, rows, ldw, wr, &sc);
			float *x = malloc(sizeof(float) * (size_t)(nt * ldx));
			fill_unif(&r, x, nt * ldx, -1, 1);
			float bias[64];
			fill_unif(&r, bias, 64, -1, 1);
			float *y = malloc(sizeof(float) * (size_t)(nt * ldy)), *y1 = malloc(sizeof(float) * (size_t)(nt * ldy));
			for (int use_bias = 0; use_bias < 2; use_bias++) {
				gemm_rows(k, dt, w, sc, 0, ldw, rows, n, x, ldx, nt, y, ldy, use_bias ? bias : NULL);
				double worst = 0;
				for (int64_t t = 0; t < nt; t++)
					for (int64_t o = 0; o < rows; o++) {
						double s = use_bias ? bias[o] : 0, mag = fabs(s);
						for (int64_t i = 0; i < n; i++) {
							s += wr[o * ldw + i] * x[t * ldx + i];
							mag += fabs(wr[o * ldw + i] * x[t * ldx + i]);
						}
						worst = fmax(worst, fabs(y[t * ldy + o] - s) / (mag + 1e-30));
					}
				CHECK(worst < 1e-6, "%s gemm %s %lldx%lldx%lld: relative error %g", k->name, nz_dtype_name(dt),
				      (long long)rows, (long long)n, (long long)nt, worst);
				/* invariance: each token alone, and row subsets, give the same bits */
				for (int64_t t = 0; t < nt; t++)
					gemm_rows(k, dt, w, sc, 0, ldw, rows, n, x + t * ldx, ldx, 1, y1 + t * ldy, ldy, use_bias ? bias : NULL);
				int same = 1;
				for (int64_t t = 0; t < nt; t++)
					same &= memcmp(y + t * ldy, y1 + t * ldy, sizeof(float) * (size_t)rows) == 0;
				CHECK(same, "%s gemm %s %lldx%lldx%lld: one token at a time differs", k->name, nz_dtype_name(dt),
				      (long long)rows, (long long)n, (long long)nt);
				/* gathered rows (reversed order) give each row's same bits */
				if (!use_bias && dt != NZ_Q8) {
					int32_t xrow[128];
					for (int64_t t = 0; t < nt; t++)
						xrow[t] = (int32_t)(nt - 1 - t);
					k->gemm_gather[dt](w, ldw, rows, n, x, ldx, xrow, nt, y1, ldy);
					same = 1;
					for (int64_t t = 0; t < nt; t++)
						same &= memcmp(y + (nt - 1 - t) * ldy, y1 + t * ldy, sizeof(float) * (size_t)rows) == 0;
					CHECK(same, "%s gemm_gather %s %lldx%lldx%lld differs from gemm", k->name, nz_dtype_name(dt),
					      (long long)rows, (long long)n, (long long)nt);
				}
				if (rows > 1 && nt > 2) {
					int64_t r0 = 1, t0 = 2;
					gemm_rows(k, dt, w, sc, r0, ldw, rows - r0, n, x + t0 * ldx, ldx, nt - t0, y1 + t0 * ldy + r0, ldy,
					          use_bias ? bias + r0 : NULL);
					same = 1;
					for (int64_t t = t0; t < nt; t++)
						same &= memcmp(y + t * ldy + r0, y1 + t * ldy + r0, sizeof(float) * (size_t)(rows - r0)) == 0;
					CHECK(same, "%s gemm %s: a row/token sub-block differs", k->name, nz_dtype_name(dt));
				}
			}
			free(wr), free(w), free(sc), free(x), free(y), free(y1);
		}
	}
}

/* nz_quantize_q8: each row's scale is its largest magnitude / 127, and
 * every value is within half a step of its original (the row's largest
 * exactly ±127). */
static void test_quantize(void)
{
	trng r = {9};
	enum { ROWS = 5, N = 300 };
	float w[ROWS * N];
	fill_unif(&r, w, ROWS * N, -2, 2);
	for (int i = 0; i < N; i++)
		w[3 * N + i] = 0; /* a row of zeros */
	uint16_t wb[ROWS * N];
	nz_convert(wb, NZ_BF16, w, NZ_F32, ROWS * N);
	for (int src = 0; src < 2; src++) {
		int8_t q[ROWS * N];
		float sc[ROWS];
		if (src)
			nz_quantize_q8(q, sc, wb, NZ_BF16, ROWS, N);
		else
			nz_quantize_q8(q, sc, w, NZ_F32, ROWS, N);
		for (int row = 0; row < ROWS; row++) {
			float m = 0;
			for (int i = 0; i < N; i++)
				m = fmaxf(m, fabsf(src ? nz_bf16_to_f32(wb[row * N + i]) : w[row * N + i]));
			CHECK(sc[row] == m / 127.0f, "quantize row %d: scale %g for max %g", row, sc[row], m);
			int peak = 0;
			for (int i = 0; i < N; i++) {
				float v = src ? nz_bf16_to_f32(wb[row * N + i]) : w[row * N + i];
				int qi = q[row * N + i];
				peak |= qi == 127 || qi == -127;
				CHECK(qi >= -127 && qi <= 127 && fabsf((float)qi * sc[row] - v) <= 0.5f * sc[row] * (1 + 1e-6f),
				      "quantize row %d col %d: %g -> %d (scale %g)", row, i, v, qi, sc[row]);
			}
			CHECK(row == 3 ? sc[row] == 0 : peak, "quantize row %d: no value at ±127", row);
		}
	}
}

static void test_expand(const cpu_kernels *k)
{
	static const int64_t sizes[][3] = {
	    /* rank, cols, ntok */
	    {1, 1, 1}, {1, 70, 3}, {8, 64, 2}, {13, 100, 5}, {16, 129, 4}, {3, 7, 1}, {16, 512, 3},
	};
	trng r = {2};
	for (int d = 0; d < 3; d++) {
		int32_t dt = dtypes[d];
		for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
			int64_t rank = sizes[si][0], cols = sizes[si][1], nt = sizes[si][2];
			int64_t ldb = cols + 4, ldv = 16, ldy = cols + 1;
			double *br = malloc(sizeof(double) * (size_t)(rank * ldb));
			void *bt = make_w(&r, dt, rank, ldb, br, NULL);
			float *v = malloc(sizeof(float) * (size_t)(nt * ldv));
			fill_unif(&r, v, nt * ldv, -1, 1);
			float *y = malloc(sizeof(float) * (size_t)(nt * ldy)), *y0 = malloc(sizeof(float) * (size_t)(nt * ldy));
			float *y1 = malloc(sizeof(float) * (size_t)(nt * ldy));
			fill_unif(&r, y0, nt * ldy, -1, 1);
			memcpy(y, y0, sizeof(float) * (size_t)(nt * ldy));
			memcpy(y1, y0, sizeof(float) * (size_t)(nt * ldy));
			k->expand[dt](bt, ldb, rank, cols, v, ldv, nt, y, ldy);
			double worst = 0;
			for (int64_t t = 0; t < nt; t++)
				for (int64_t o = 0; o < cols; o++) {
					double s = 0, mag = 0;
					for (int64_t j = 0; j < rank; j++) {
						s += v[t * ldv + j] * br[j * ldb + o];
						mag += fabs(v[t * ldv + j] * br[j * ldb + o]);
					}
					worst = fmax(worst, fabs(y[t * ldy + o] - s) / (mag + 1e-30));
				}
			CHECK(worst < 1e-6, "%s expand %s r%lld c%lld t%lld: relative error %g", k->name, nz_dtype_name(dt),
			      (long long)rank, (long long)cols, (long long)nt, worst);
			/* columns outside [0, cols) are untouched */
			int untouched = 1;
			for (int64_t t = 0; t < nt; t++)
				untouched &= y[t * ldy + cols] == y0[t * ldy + cols];
			CHECK(untouched, "%s expand wrote past cols", k->name);
			/* invariance: per token and per column chunk (y1 starts as garbage: it is stored, not added to) */
			for (int64_t t = 0; t < nt; t++) {
				int64_t c0 = cols > 16 ? 16 : 0;
				if (c0)
					k->expand[dt](bt, ldb, rank, c0, v + t * ldv, ldv, 1, y1 + t * ldy, ldy);
				k->expand[dt]((const char *)bt + c0 * (int64_t)nz_dtype_size(dt), ldb, rank, cols - c0, v + t * ldv,
				              ldv, 1, y1 + t * ldy + c0, ldy);
			}
			CHECK(memcmp(y, y1, sizeof(float) * (size_t)(nt * ldy)) == 0, "%s expand %s: split run differs",
			      k->name, nz_dtype_name(dt));
			free(br), free(bt), free(v), free(y), free(y0), free(y1);
		}
	}
}

static void test_vec(const cpu_kernels *k)
{
	/* read_sum: 64-bit words of the vector blocks, bytes of the tail */
	unsigned char buf[1000];
	for (int i = 0; i < 1000; i++)
		buf[i] = (unsigned char)(i * 7);
	int64_t block = k == &cpu_kernels_avx512 ? 256 : 128, body = 1000 / block * block;
	uint64_t want = 0;
	for (int64_t i = 0; i < body; i += 8) {
		uint64_t w;
		memcpy(&w, buf + i, 8);
		want += w;
	}
	for (int64_t i = body; i < 1000; i++)
		want += buf[i];
	CHECK(k->read_sum(buf, 1000) == want, "%s read_sum", k->name);
}

/* attn_scores and attn_pv against float64 (odd head sizes, key counts and
 * head counts), and their invariance: a key's score and an output
 * element's value do not depend on the keys or rows sharing the call. */
static void test_attn(const cpu_kernels *k)
{
	static const int64_t sizes[][3] = {
	    /* n (head_dim), nk (keys), nq (heads) */
	    {64, 16, 4}, {128, 16, 2}, {128, 13, 7}, {1, 3, 1}, {5, 9, 3}, {24, 17, 5}, {40, 1, 8}, {67, 21, 9}, {96, 33, 2},
	};
	trng r = {5};
	for (int d = 0; d < 3; d++) {
		int32_t dt = dtypes[d];
		for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
			int64_t n = sizes[si][0], nk = sizes[si][1], nq = sizes[si][2];
			int64_t ldq = n + 3, lds = nk + 2, ldo = n + 1, ldp = nk + 5;
			double *kr = malloc(sizeof(double) * (size_t)(nk * n)), *vr = malloc(sizeof(double) * (size_t)(nk * n));
			void *kv = make_w(&r, dt, nk, n, kr, NULL), *vv = make_w(&r, dt, nk, n, vr, NULL);
			float *q = malloc(sizeof(float) * (size_t)(nq * ldq)), *p = malloc(sizeof(float) * (size_t)(nq * ldp));
			fill_unif(&r, q, nq * ldq, -1, 1);
			fill_unif(&r, p, nq * ldp, 0, 1);
			float *s = malloc(sizeof(float) * (size_t)(nq * lds)), *s1 = malloc(sizeof(float) * (size_t)(nq * lds));
			float *o0 = malloc(sizeof(float) * (size_t)(nq * ldo)), *o = malloc(sizeof(float) * (size_t)(nq * ldo));
			float *o1 = malloc(sizeof(float) * (size_t)(nq * ldo));
			const float scale = 0.125f;
			k->attn_scores[dt](q, nq, ldq, kv, nk, n, scale, s, lds);
			double worst = 0;
			for (int64_t h = 0; h < nq; h++)
				for (int64_t j = 0; j < nk; j++) {
					double want = 0, mag = 0;
					for (int64_t i = 0; i < n; i++) {
						want += (double)q[h * ldq + i] * kr[j * n + i];
						mag += fabs((double)q[h * ldq + i] * kr[j * n + i]);
					}
					worst = fmax(worst, fabs(s[h * lds + j] - scale * want) / (scale * mag + 1e-30));
				}
			CHECK(worst < 1e-6, "%s attn_scores %s n=%lld nk=%lld nq=%lld: relative error %g", k->name,
			      nz_dtype_name(dt), (long long)n, (long long)nk, (long long)nq, worst);
			/* invariance: each key alone, each head alone, and a split of the
			 * keys at every offset give the same bits */
			int same = 1;
			for (int64_t j = 0; j < nk; j++)
				for (int64_t h = 0; h < nq; h++) {
					float one;
					k->attn_scores[dt](q + h * ldq, 1, ldq, (const char *)kv + (size_t)(j * n) * nz_dtype_size(dt), 1,
					                   n, scale, &one, 1);
					same &= memcmp(&one, &s[h * lds + j], sizeof one) == 0;
				}
			for (int64_t j0 = 1; j0 < nk; j0++) {
				k->attn_scores[dt](q, nq, ldq, kv, j0, n, scale, s1, lds);
				k->attn_scores[dt](q, nq, ldq, (const char *)kv + (size_t)(j0 * n) * nz_dtype_size(dt), nk - j0, n,
				                   scale, s1 + j0, lds);
				for (int64_t h = 0; h < nq; h++)
					same &= memcmp(s1 + h * lds, s + h * lds, sizeof(float) * (size_t)nk) == 0;
			}
			CHECK(same, "%s attn_scores %s n=%lld nk=%lld nq=%lld: a split of the keys or heads differs", k->name,
			      nz_dtype_name(dt), (long long)n, (long long)nk, (long long)nq);
			/* attn_pv: against float64, and bit-identical to fmaf per position and head */
			fill_unif(&r, o0, nq * ldo, -1, 1);
			memcpy(o, o0, sizeof(float) * (size_t)(nq * ldo));
			k->attn_pv[dt](o, nq, ldo, p, ldp, vv, nk, n);
			worst = 0;
			for (int64_t h = 0; h < nq; h++)
				for (int64_t i = 0; i < n; i++) {
					double want = o0[h * ldo + i], mag = fabs(want);
					for (int64_t j = 0; j < nk; j++) {
						want += (double)p[h * ldp + j] * vr[j * n + i];
						mag += fabs((double)p[h * ldp + j] * vr[j * n + i]);
					}
					worst = fmax(worst, fabs(o[h * ldo + i] - want) / (mag + 1e-30));
				}
			CHECK(worst < 1e-6, "%s attn_pv %s n=%lld nk=%lld nq=%lld: relative error %g", k->name, nz_dtype_name(dt),
			      (long long)n, (long long)nk, (long long)nq, worst);
			/* each element one fused multiply-add per position, ascending: what
			 * fmaf gives, whatever the vector width */
			memcpy(o1, o0, sizeof(float) * (size_t)(nq * ldo));
			for (int64_t j = 0; j < nk; j++)
				for (int64_t h = 0; h < nq; h++)
					for (int64_t i = 0; i < n; i++)
						o1[h * ldo + i] = fmaf(p[h * ldp + j], nz_load_f32(vv, dt, j * n + i), o1[h * ldo + i]);
			same = 1;
			for (int64_t h = 0; h < nq; h++)
				same &= memcmp(o1 + h * ldo, o + h * ldo, sizeof(float) * (size_t)n) == 0;
			CHECK(same, "%s attn_pv %s n=%lld nk=%lld nq=%lld: differs from one fmaf per position", k->name,
			      nz_dtype_name(dt), (long long)n, (long long)nk, (long long)nq);
			/* rows in two calls at every split, heads one at a time: the same bits */
			same = 1;
			for (int64_t j0 = 1; j0 < nk; j0++) {
				memcpy(o1, o0, sizeof(float) * (size_t)(nq * ldo));
				for (int64_t h = 0; h < nq; h++) {
					k->attn_pv[dt](o1 + h * ldo, 1, ldo, p + h * ldp, ldp, vv, j0, n);
					k->attn_pv[dt](o1 + h * ldo, 1, ldo, p + h * ldp + j0, ldp,
					               (const char *)vv + (size_t)(j0 * n) * nz_dtype_size(dt), nk - j0, n);
				}
				for (int64_t h = 0; h < nq; h++)
					same &= memcmp(o1 + h * ldo, o + h * ldo, sizeof(float) * (size_t)n) == 0;
			}
			CHECK(same, "%s attn_pv %s n=%lld nk=%lld nq=%lld: a split of the rows or heads differs", k->name,
			      nz_dtype_name(dt), (long long)n, (long long)nk, (long long)nq);
			free(kr), free(vr), free(kv), free(vv), free(q), free(p), free(s), free(s1), free(o0), free(o), free(o1);
		}
	}
}

/* convert and transpose_scale give exactly what the scalar conversions give */
static void test_convert(const cpu_kernels *k)
{
	trng r = {4};
	float *f = malloc(sizeof(float) * 4000);
	fill_unif(&r, f, 4000, -70000, 70000);
	for (int i = 0; i < 4000; i += 3)
		f[i] *= 1e-9f; /* small values, f16 subnormals */
	f[5] = NAN, f[6] = INFINITY, f[7] = -0.0f;
	for (int s = 0; s < 3; s++)
		for (int d = 0; d < 3; d++) {
			int32_t sdt = dtypes[s], ddt = dtypes[d];
			char src[16000], got[16000], want[16000];
			nz_convert(src, sdt, f, NZ_F32, 4000);
			for (int64_t n = 1; n <= 4000; n = n * 3 + 1) {
				memset(got, 0x5a, sizeof got);
				memset(want, 0x5a, sizeof want);
				k->convert(got, ddt, src, sdt, n);
				nz_convert(want, ddt, src, sdt, n);
				CHECK(memcmp(got, want, sizeof got) == 0, "%s convert %s->%s n=%lld", k->name, nz_dtype_name(sdt),
				      nz_dtype_name(ddt), (long long)n);
			}
			static const int64_t shapes[][2] = {{1, 1}, {5, 3}, {16, 16}, {37, 13}, {70, 16}, {9, 1}, {8, 8}};
			for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
				int64_t rows = shapes[si][0], cols = shapes[si][1], ldd = rows + 3;
				memset(got, 0x5a, sizeof got);
				memset(want, 0x5a, sizeof want);
				k->transpose_scale(got, ddt, ldd, src, sdt, rows, cols, 0.37f);
				size_t ds = nz_dtype_size(ddt);
				for (int64_t i = 0; i < rows; i++)
					for (int64_t j = 0; j < cols; j++) {
						float v = nz_load_f32(src, sdt, i * cols + j) * 0.37f;
						nz_convert(want + (size_t)(j * ldd + i) * ds, ddt, &v, NZ_F32, 1);
					}
				CHECK(memcmp(got, want, sizeof got) == 0, "%s transpose_scale %s->%s %lldx%lld", k->name,
				      nz_dtype_name(sdt), nz_dtype_name(ddt), (long long)rows, (long long)cols);
			}
		}
	free(f);
}

int main(void)
{
	const cpu_kernels *paths[2] = {&cpu_kernels_avx2, &cpu_kernels_avx512};
	int isas[2] = {CPU_ISA_AVX2, CPU_ISA_AVX512};
	int ran = 0;
	for (int i = 0; i < 2; i++) {
		if (!cpu_isa_supported(isas[i])) {
			printf("test_kernels: %s not supported here, skipped\n", paths[i]->name);
			continue;
		}
		test_gemm(paths[i]);
		test_expand(paths[i]);
		test_vec(paths[i]);
		test_attn(paths[i]);
		test_convert(paths[i]);
		ran++;
	}
	CHECK(ran > 0, "no kernel path ran");
	test_quantize();
	/* selection honours the forced path */
	cpu_force_isa(CPU_ISA_AVX2);
	CHECK(cpu_kernels_select() == &cpu_kernels_avx2, "forced avx2");
	cpu_force_isa(CPU_ISA_AUTO);
	if (cpu_isa_supported(CPU_ISA_AVX512))
		CHECK(cpu_kernels_select() == &cpu_kernels_avx512, "auto picks avx512 where supported");
	return t_done("test_kernels");
}
