/*
 * cpu_kernels_avx512.c — AVX-512 (F, BW, VL) kernels, compiled per function
 * with target attributes and chosen at run time (cpu_kernels_select).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "common.h"
#include "cpu_kernels.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define INLINE static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512dq")))

#define MR 4
#define MT 6
/* Prefetch distance in rows: the next register block's rows. Without it a
 * batch-1 GEMV of short rows reaches ~65% of the read bandwidth, with it ~90%. */
#define PF_ROWS MR
#define TOK_TILE 64

INLINE __m512 ld16(const void *w, int64_t k, int dt)
{
	if (dt == NZ_F32)
		return _mm512_loadu_ps((const float *)w + k);
	if (dt == NZ_Q8)
		return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)w + k))));
	__m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
	if (dt == NZ_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE __m512 ld16m(const void *w, int64_t k, __mmask16 m, int dt)
{
	if (dt == NZ_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)w + k);
	if (dt == NZ_Q8)
		return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, (const int8_t *)w + k)));
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k);
	if (dt == NZ_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void mk(int dt, int R, int TB, const char *w, int64_t ldw, int64_t n, const float *const *xr, float *y,
               int64_t ldy, const float *bias, const float *scale)
{
	const size_t rs = (size_t)ldw * dt_size(dt);
	__m512 acc[MR][MT];
	for (int r = 0; r < R; r++)
		for (int t = 0; t < TB; t++)
			acc[r][t] = _mm512_setzero_ps();
	int64_t k = 0;
	for (; k + 16 <= n; k += 16) {
		__m512 wv[MR];
		if (((k * (int64_t)dt_size(dt)) & 63) == 0)
			for (int r = 0; r < R; r++)
				_mm_prefetch(w + (r + PF_ROWS) * rs + k * dt_size(dt), _MM_HINT_T0);
		for (int r = 0; r < R; r++)
			wv[r] = ld16(w + r * rs, k, dt);
		for (int t = 0; t < TB; t++) {
			__m512 xv = _mm512_loadu_ps(xr[t] + k);
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
	if (k < n) {
		__mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
		__m512 wv[MR];
		for (int r = 0; r < R; r++)
			wv[r] = ld16m(w + r * rs, k, m, dt);
		for (int t = 0; t < TB; t++) {
			__m512 xv = _mm512_maskz_loadu_ps(m, xr[t] + k);
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
	for (int r = 0; r < R; r++)
		for (int t = 0; t < TB; t++) {
			float s = _mm512_reduce_add_ps(acc[r][t]);
			if (scale)
				s *= scale[r];
			y[t * ldy + r] = bias ? s + bias[r] : s;
		}
}

INLINE void expand(int dt, const void *bt, int64_t ldb, int64_t rank, int64_t cols, const float *v, int64_t ldv,
                   int64_t ntok, float *y, int64_t ldy)
{
	const size_t rs = (size_t)ldb * dt_size(dt);
	const char *b = bt;
	int64_t o = 0;
	for (; o + 64 <= cols; o += 64) {
		for (int64_t t = 0; t < ntok; t++) {
			__m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
			const float *vt = v + t * ldv;
			for (int64_t j = 0; j < rank; j++) {
				__m512 vj = _mm512_set1_ps(vt[j]);
				for (int c = 0; c < 4; c++)
					acc[c] = _mm512_fmadd_ps(vj, ld16(b + j * rs, o + 16 * c, dt), acc[c]);
			}
			float *yt = y + t * ldy + o;
			for (int c = 0; c < 4; c++)
				_mm512_storeu_ps(yt + 16 * c, acc[c]);
		}
	}
	for (; o < cols; o += 16) {
		int64_t w = nz_min64(16, cols - o);
		__mmask16 m = (__mmask16)((1u << w) - 1u);
		for (int64_t t = 0; t < ntok; t++) {
			__m512 acc = _mm512_setzero_ps();
			const float *vt = v + t * ldv;
			for (int64_t j = 0; j < rank; j++)
				acc = _mm512_fmadd_ps(_mm512_set1_ps(vt[j]), ld16m(b + j * rs, o, m, dt), acc);
			_mm512_mask_storeu_ps(y + t * ldy + o, m, acc);
		}
	}
}

/* Attention scores: SK keys × up to 2 query heads per register block, each
 * key row read and widened once for the heads (a masked last vector for
 * the tail). The SK keys' accumulators reduce together: each folds its
 * halves (lane i + lane i+8), then a transpose by hadds sums the eight
 * lanes by the tree ((0+1)+(2+3)) + ((4+5)+(6+7)), the same for every key
 * whichever keys share the block. */
#define SK 8

INLINE __m256 hsum8x16(const __m512 *a)
{
	__m256 b[SK];
	for (int j = 0; j < SK; j++)
		b[j] = _mm256_add_ps(_mm512_castps512_ps256(a[j]), _mm512_extractf32x8_ps(a[j], 1));
	__m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(b[0], b[1]), _mm256_hadd_ps(b[2], b[3]));
	__m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(b[4], b[5]), _mm256_hadd_ps(b[6], b[7]));
	return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

INLINE void sk(int dt, int RH, const float *q, int64_t ldq, const char *const *kr, int nk, int64_t n, float scale,
               float *s, int64_t lds)
{
	__m512 acc[2][SK];
	for (int r = 0; r < RH; r++)
		for (int j = 0; j < SK; j++)
			acc[r][j] = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 qv[2];
		for (int r = 0; r < RH; r++)
			qv[r] = _mm512_loadu_ps(q + r * ldq + i);
		for (int j = 0; j < SK; j++) {
			__m512 kv = ld16(kr[j], i, dt);
			for (int r = 0; r < RH; r++)
				acc[r][j] = _mm512_fmadd_ps(qv[r], kv, acc[r][j]);
		}
	}
	if (i < n) {
		__mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
		__m512 qv[2];
		for (int r = 0; r < RH; r++)
			qv[r] = _mm512_maskz_loadu_ps(m, q + r * ldq + i);
		for (int j = 0; j < SK; j++) {
			__m512 kv = ld16m(kr[j], i, m, dt);
			for (int r = 0; r < RH; r++)
				acc[r][j] = _mm512_fmadd_ps(qv[r], kv, acc[r][j]);
		}
	}
	__m256 sv = _mm256_set1_ps(scale);
	__mmask8 km = (__mmask8)((1u << nk) - 1u);
	for (int r = 0; r < RH; r++)
		_mm256_mask_storeu_ps(s + r * lds, km, _mm256_mul_ps(hsum8x16(acc[r]), sv));
}

/* P·V: up to PH heads × 32 columns per register block; each value row's
 * columns read and widened once for the heads. */
#define PH 8

INLINE void pvk(int dt, int RH, float *o, int64_t ldo, const float *p, int64_t ldp, const char *v, int64_t nv, int64_t n)
{
	const size_t rs = (size_t)n * dt_size(dt);
	int64_t d = 0;
	for (; d + 32 <= n; d += 32) {
		__m512 acc[PH][2];
		for (int r = 0; r < RH; r++) {
			acc[r][0] = _mm512_loadu_ps(o + r * ldo + d);
			acc[r][1] = _mm512_loadu_ps(o + r * ldo + d + 16);
		}
		for (int64_t j = 0; j < nv; j++) {
			const char *vr = v + (size_t)j * rs;
			__m512 x0 = ld16(vr, d, dt), x1 = ld16(vr, d + 16, dt);
			for (int r = 0; r < RH; r++) {
				__m512 pb = _mm512_set1_ps(p[r * ldp + j]);
				acc[r][0] = _mm512_fmadd_ps(pb, x0, acc[r][0]);
				acc[r][1] = _mm512_fmadd_ps(pb, x1, acc[r][1]);
			}
		}
		for (int r = 0; r < RH; r++) {
			_mm512_storeu_ps(o + r * ldo + d, acc[r][0]);
			_mm512_storeu_ps(o + r * ldo + d + 16, acc[r][1]);
		}
	}
	for (; d < n; d += 16) {
		__mmask16 m = n - d >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - d)) - 1u);
		__m512 acc[PH];
		for (int r = 0; r < RH; r++)
			acc[r] = _mm512_maskz_loadu_ps(m, o + r * ldo + d);
		for (int64_t j = 0; j < nv; j++) {
			__m512 x0 = ld16m(v + (size_t)j * rs, d, m, dt);
			for (int r = 0; r < RH; r++)
				acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(p[r * ldp + j]), x0, acc[r]);
		}
		for (int r = 0; r < RH; r++)
			_mm512_mask_storeu_ps(o + r * ldo + d, m, acc[r]);
	}
}

#include "cpu_kernels_drivers.h"

TARGET static uint64_t read_sum_avx512(const void *p, int64_t bytes)
{
	const char *c = p;
	__m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 256 <= bytes; i += 256) {
		a0 = _mm512_add_epi64(a0, _mm512_loadu_si512((const void *)(c + i)));
		a1 = _mm512_add_epi64(a1, _mm512_loadu_si512((const void *)(c + i + 64)));
		a2 = _mm512_add_epi64(a2, _mm512_loadu_si512((const void *)(c + i + 128)));
		a3 = _mm512_add_epi64(a3, _mm512_loadu_si512((const void *)(c + i + 192)));
	}
	uint64_t lanes[8], r = 0;
	_mm512_storeu_si512((void *)lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
	for (int l = 0; l < 8; l++)
		r += lanes[l];
	for (; i < bytes; i++)
		r += (unsigned char)c[i];
	return r;
}

INLINE void cv_store16(void *dst, int dt, int64_t k, __m512 v, __mmask16 m)
{
	if (dt == NZ_F32) {
		_mm512_mask_storeu_ps((float *)dst + k, m, v);
		return;
	}
	__m256i h;
	if (dt == NZ_F16) {
		h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	} else {
		__m512i u = _mm512_castps_si512(v);
		__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
		__m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
		__m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
		__mmask16 nan = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7f800000));
		r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
		h = _mm512_cvtepi32_epi16(r);
	}
	_mm256_mask_storeu_epi16((uint16_t *)dst + k, m, h);
}

TARGET static void convert_avx512(void *dst, int32_t ddt, const void *src, int32_t sdt, int64_t n)
{
	if (ddt == sdt) {
		memcpy(dst, src, (size_t)n * dt_size(sdt));
		return;
	}
	int64_t k = 0;
	for (; k + 16 <= n; k += 16)
		cv_store16(dst, ddt, k, ld16(src, k, sdt), 0xffff);
	if (k < n) {
		__mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
		cv_store16(dst, ddt, k, ld16m(src, k, m, sdt), m);
	}
}

TARGET static void transpose_scale_avx512(void *dst, int32_t ddt, int64_t ldd, const void *src, int32_t sdt,
                                          int64_t rows, int64_t cols, float scale)
{
	const size_t ds = dt_size(ddt), ss = dt_size(sdt);
	const __m512i idx = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
	const __m512 sc = _mm512_set1_ps(scale);
	float tile[256];
	for (int64_t i0 = 0; i0 < rows; i0 += 16) {
		int64_t h = nz_min64(16, rows - i0);
		__mmask16 hm = (__mmask16)((1u << h) - 1u);
		for (int64_t j0 = 0; j0 < cols; j0 += 16) {
			int64_t w = nz_min64(16, cols - j0);
			__mmask16 wm = (__mmask16)((1u << w) - 1u);
			for (int64_t ii = 0; ii < h; ii++) {
				const char *row = (const char *)src + (size_t)((i0 + ii) * cols + j0) * ss;
				_mm512_storeu_ps(tile + ii * 16, _mm512_mul_ps(ld16m(row, 0, wm, sdt), sc));
			}
			for (int64_t jj = 0; jj < w; jj++) {
				char *out = (char *)dst + (size_t)((j0 + jj) * ldd + i0) * ds;
				__m512 col = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), hm, idx, tile + jj, 4);
				cv_store16(out, ddt, 0, col, hm);
			}
		}
	}
}

const cpu_kernels cpu_kernels_avx512 = {
    .name = "avx512",
    NZ_KERNEL_TABLE,
    .read_sum = read_sum_avx512,
    .convert = convert_avx512,
    .transpose_scale = transpose_scale_avx512,
};
