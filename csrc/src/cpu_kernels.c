/*
 * cpu_kernels.c — the AVX2+FMA+F16C baseline kernels (the library is built
 * with -mavx2 -mfma -mf16c) and the run-time choice of a kernel path.
 */
#include "cpu_kernels.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "common.h"

#define TARGET
#define INLINE static inline __attribute__((always_inline))

/* Rows × tokens of one register block. */
#define MR 4
#define MT 3
/* Prefetch distance in rows (see cpu_kernels_avx512.c). */
#define PF_ROWS MR
/* Tokens whose X rows are reused while W rows stay in L1. */
#define TOK_TILE 64

INLINE __m256 ld8(const void *w, int64_t k, int dt)
{
	if (dt == NZ_F32)
		return _mm256_loadu_ps((const float *)w + k);
	if (dt == NZ_Q8)
		return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)w + k))));
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
	if (dt == NZ_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float ld1(const void *w, int64_t k, int dt)
{
	if (dt == NZ_F32)
		return ((const float *)w)[k];
	if (dt == NZ_Q8)
		return (float)((const int8_t *)w)[k];
	uint16_t h = ((const uint16_t *)w)[k];
	if (dt == NZ_F16)
		return _cvtsh_ss(h);
	return nz_bf16_to_f32(h);
}

INLINE float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
	return _mm_cvtss_f32(s);
}

/* One R×TB block: Y[t][r] for r < R, t < TB (scaled by scale[r] when
 * scale is set: int8 rows). */
INLINE void mk(int dt, int R, int TB, const char *w, int64_t ldw, int64_t n, const float *const *xr, float *y,
               int64_t ldy, const float *bias, const float *scale)
{
	const size_t rs = (size_t)ldw * dt_size(dt);
	__m256 acc[MR][MT];
	for (int r = 0; r < R; r++)
		for (int t = 0; t < TB; t++)
			acc[r][t] = _mm256_setzero_ps();
	int64_t k = 0;
	for (; k + 8 <= n; k += 8) {
		__m256 wv[MR];
		if (((k * (int64_t)dt_size(dt)) & 63) == 0)
			for (int r = 0; r < R; r++)
				_mm_prefetch(w + (r + PF_ROWS) * rs + k * dt_size(dt), _MM_HINT_T0);
		for (int r = 0; r < R; r++)
			wv[r] = ld8(w + r * rs, k, dt);
		for (int t = 0; t < TB; t++) {
			__m256 xv = _mm256_loadu_ps(xr[t] + k);
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
	for (int r = 0; r < R; r++)
		for (int t = 0; t < TB; t++) {
			float s = hsum8(acc[r][t]);
			for (int64_t kk = k; kk < n; kk++)
				s = fmaf(ld1(w + r * rs, kk, dt), xr[t][kk], s);
			if (scale)
				s *= scale[r];
			y[t * ldy + r] = bias ? s + bias[r] : s;
		}
}

/* Expand: 4 vectors (32 columns) of one token at a time, Bt rows reused
 * across the tokens of the call. */
INLINE void expand(int dt, const void *bt, int64_t ldb, int64_t rank, int64_t cols, const float *v, int64_t ldv,
                   int64_t ntok, float *y, int64_t ldy)
{
	const size_t rs = (size_t)ldb * dt_size(dt);
	const char *b = bt;
	int64_t o = 0;
	for (; o + 32 <= cols; o += 32) {
		for (int64_t t = 0; t < ntok; t++) {
			__m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
			const float *vt = v + t * ldv;
			for (int64_t j = 0; j < rank; j++) {
				__m256 vj = _mm256_broadcast_ss(vt + j);
				for (int c = 0; c < 4; c++)
					acc[c] = _mm256_fmadd_ps(vj, ld8(b + j * rs, o + 8 * c, dt), acc[c]);
			}
			float *yt = y + t * ldy + o;
			for (int c = 0; c < 4; c++)
				_mm256_storeu_ps(yt + 8 * c, acc[c]);
		}
	}
	for (; o + 8 <= cols; o += 8) {
		for (int64_t t = 0; t < ntok; t++) {
			__m256 acc = _mm256_setzero_ps();
			const float *vt = v + t * ldv;
			for (int64_t j = 0; j < rank; j++)
				acc = _mm256_fmadd_ps(_mm256_broadcast_ss(vt + j), ld8(b + j * rs, o, dt), acc);
			_mm256_storeu_ps(y + t * ldy + o, acc);
		}
	}
	for (; o < cols; o++) {
		for (int64_t t = 0; t < ntok; t++) {
			float acc = 0;
			for (int64_t j = 0; j < rank; j++)
				acc = fmaf(v[t * ldv + j], ld1(b + j * rs, o, dt), acc);
			y[t * ldy + o] = acc;
		}
	}
}

/* Attention scores: SK keys × up to 2 query heads per register block, each
 * key row read and widened once for the heads. The SK keys' accumulators
 * reduce together (a transpose by hadds), each key's lanes always by the
 * tree ((0+1)+(2+3)) + ((4+5)+(6+7)), whichever keys share the block. */
#define SK 4

INLINE __m128 hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3)
{
	__m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
	return _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
}

INLINE void sk(int dt, int RH, const float *q, int64_t ldq, const char *const *kr, int nk, int64_t n, float scale,
               float *s, int64_t lds)
{
	__m256 acc[2][SK];
	for (int r = 0; r < RH; r++)
		for (int j = 0; j < SK; j++)
			acc[r][j] = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 qv[2];
		for (int r = 0; r < RH; r++)
			qv[r] = _mm256_loadu_ps(q + r * ldq + i);
		for (int j = 0; j < SK; j++) {
			__m256 kv = ld8(kr[j], i, dt);
			for (int r = 0; r < RH; r++)
				acc[r][j] = _mm256_fmadd_ps(qv[r], kv, acc[r][j]);
		}
	}
	for (int r = 0; r < RH; r++) {
		__m128 sum = hsum4x8(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
		if (i == n && nk == SK) {
			_mm_storeu_ps(s + r * lds, _mm_mul_ps(sum, _mm_set1_ps(scale)));
			continue;
		}
		float v[SK];
		_mm_storeu_ps(v, sum);
		for (int j = 0; j < nk; j++) {
			for (int64_t t = i; t < n; t++)
				v[j] = fmaf(q[r * ldq + t], ld1(kr[j], t, dt), v[j]);
			s[r * lds + j] = v[j] * scale;
		}
	}
}

/* P·V: up to PH heads × 16 columns per register block; each value row's
 * columns read and widened once for the heads. */
#define PH 4

INLINE void pvk(int dt, int RH, float *o, int64_t ldo, const float *p, int64_t ldp, const char *v, int64_t nv, int64_t n)
{
	const size_t rs = (size_t)n * dt_size(dt);
	int64_t d = 0;
	for (; d + 16 <= n; d += 16) {
		__m256 acc[PH][2];
		for (int r = 0; r < RH; r++) {
			acc[r][0] = _mm256_loadu_ps(o + r * ldo + d);
			acc[r][1] = _mm256_loadu_ps(o + r * ldo + d + 8);
		}
		for (int64_t j = 0; j < nv; j++) {
			const char *vr = v + (size_t)j * rs;
			__m256 x0 = ld8(vr, d, dt), x1 = ld8(vr, d + 8, dt);
			for (int r = 0; r < RH; r++) {
				__m256 pb = _mm256_broadcast_ss(p + r * ldp + j);
				acc[r][0] = _mm256_fmadd_ps(pb, x0, acc[r][0]);
				acc[r][1] = _mm256_fmadd_ps(pb, x1, acc[r][1]);
			}
		}
		for (int r = 0; r < RH; r++) {
			_mm256_storeu_ps(o + r * ldo + d, acc[r][0]);
			_mm256_storeu_ps(o + r * ldo + d + 8, acc[r][1]);
		}
	}
	for (; d + 8 <= n; d += 8) {
		__m256 acc[PH];
		for (int r = 0; r < RH; r++)
			acc[r] = _mm256_loadu_ps(o + r * ldo + d);
		for (int64_t j = 0; j < nv; j++) {
			__m256 x0 = ld8(v + (size_t)j * rs, d, dt);
			for (int r = 0; r < RH; r++)
				acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + r * ldp + j), x0, acc[r]);
		}
		for (int r = 0; r < RH; r++)
			_mm256_storeu_ps(o + r * ldo + d, acc[r]);
	}
	for (; d < n; d++)
		for (int r = 0; r < RH; r++) {
			float a = o[r * ldo + d];
			for (int64_t j = 0; j < nv; j++)
				a = fmaf(p[r * ldp + j], ld1(v + (size_t)j * rs, d, dt), a);
			o[r * ldo + d] = a;
		}
}

#include "cpu_kernels_drivers.h"

static uint64_t read_sum_avx2(const void *p, int64_t bytes)
{
	const char *c = p;
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	int64_t i = 0;
	for (; i + 128 <= bytes; i += 128) {
		a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(c + i)));
		a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(c + i + 32)));
		a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(c + i + 64)));
		a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(c + i + 96)));
	}
	__m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
	uint64_t lanes[4];
	_mm256_storeu_si256((__m256i *)lanes, s);
	uint64_t r = lanes[0] + lanes[1] + lanes[2] + lanes[3];
	for (; i < bytes; i++)
		r += (unsigned char)c[i];
	return r;
}

/* 8 elements of dtype dt as f32 / from f32 (round to nearest even) */
INLINE __m256 cv_load8(const void *src, int dt, int64_t k) { return ld8(src, k, dt); }

INLINE void cv_store8(void *dst, int dt, int64_t k, __m256 v)
{
	if (dt == NZ_F32) {
		_mm256_storeu_ps((float *)dst + k, v);
		return;
	}
	__m128i h;
	if (dt == NZ_F16) {
		h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	} else {
		__m256i u = _mm256_castps_si256(v);
		__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
		__m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
		__m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
		__m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
		__m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
		r = _mm256_blendv_epi8(r, q, nan);
		__m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
		h = _mm256_castsi256_si128(packed);
	}
	_mm_storeu_si128((__m128i *)((uint16_t *)dst + k), h);
}

static void convert_avx2(void *dst, int32_t ddt, const void *src, int32_t sdt, int64_t n)
{
	if (ddt == sdt) {
		memcpy(dst, src, (size_t)n * dt_size(sdt));
		return;
	}
	int64_t k = 0;
	for (; k + 8 <= n; k += 8)
		cv_store8(dst, ddt, k, cv_load8(src, sdt, k));
	nz_convert((char *)dst + k * (int64_t)dt_size(ddt), ddt, (const char *)src + k * (int64_t)dt_size(sdt), sdt,
	           n - k);
}

static void transpose_scale_avx2(void *dst, int32_t ddt, int64_t ldd, const void *src, int32_t sdt, int64_t rows,
                                 int64_t cols, float scale)
{
	const size_t ds = dt_size(ddt), ss = dt_size(sdt);
	const __m256i idx = _mm256_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56);
	const __m256 sc = _mm256_set1_ps(scale);
	float tile[64];
	for (int64_t i0 = 0; i0 < rows; i0 += 8) {
		int64_t h = nz_min64(8, rows - i0);
		for (int64_t j0 = 0; j0 < cols; j0 += 8) {
			int64_t w = nz_min64(8, cols - j0);
			for (int64_t ii = 0; ii < h; ii++) {
				const char *row = (const char *)src + (size_t)((i0 + ii) * cols + j0) * ss;
				if (w == 8) {
					_mm256_storeu_ps(tile + ii * 8, _mm256_mul_ps(ld8(row, 0, sdt), sc));
				} else {
					for (int64_t jj = 0; jj < w; jj++)
						tile[ii * 8 + jj] = ld1(row, jj, sdt) * scale;
				}
			}
			for (int64_t jj = 0; jj < w; jj++) {
				char *out = (char *)dst + (size_t)((j0 + jj) * ldd + i0) * ds;
				if (h == 8) {
					cv_store8(out, ddt, 0, _mm256_i32gather_ps(tile + jj, idx, 4));
				} else {
					for (int64_t ii = 0; ii < h; ii++)
						nz_convert(out + (size_t)ii * ds, ddt, &tile[ii * 8 + jj], NZ_F32, 1);
				}
			}
		}
	}
}

const cpu_kernels cpu_kernels_avx2 = {
    .name = "avx2",
    NZ_KERNEL_TABLE,
    .read_sum = read_sum_avx2,
    .convert = convert_avx2,
    .transpose_scale = transpose_scale_avx2,
};

/* ---------------------------------------------------------------------------
 * Path selection
 * ------------------------------------------------------------------------- */

static int forced_isa = CPU_ISA_AUTO;

void cpu_force_isa(int isa) { forced_isa = isa; }

int cpu_isa_supported(int isa)
{
	unsigned a, b, c, d;
	__builtin_cpu_init();
	int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
	           (c & bit_F16C);
	switch (isa) {
	case CPU_ISA_AVX2:
		return avx2;
	case CPU_ISA_AVX512:
		return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vl");
	default:
		return 0;
	}
}

const cpu_kernels *cpu_kernels_select(void)
{
	if (forced_isa == CPU_ISA_AVX2)
		return cpu_isa_supported(CPU_ISA_AVX2) ? &cpu_kernels_avx2 : NULL;
	if (forced_isa == CPU_ISA_AVX512)
		return cpu_isa_supported(CPU_ISA_AVX512) ? &cpu_kernels_avx512 : NULL;
	if (cpu_isa_supported(CPU_ISA_AVX512))
		return &cpu_kernels_avx512;
	if (cpu_isa_supported(CPU_ISA_AVX2))
		return &cpu_kernels_avx2;
	return NULL;
}
