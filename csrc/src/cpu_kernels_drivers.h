/*
 * cpu_kernels_drivers.h — the loops around an instruction-set path's
 * register blocks, and its table's entry points, written once for both
 * paths. Included by cpu_kernels.c and cpu_kernels_avx512.c (only), after
 * each has defined:
 *
 *   TARGET               the entry points' attribute (empty for the
 *                        baseline, which the library is compiled for)
 *   INLINE               static inline, always inlined, with the path's target
 *   MR, MT, TOK_TILE     the GEMM's register block (rows × tokens) and the
 *                        tokens whose X rows are reused while W rows stay in L1
 *   mk(dt, R, TB, ...)   one R×TB GEMM block, R ≤ MR, TB ≤ MT (constants)
 *   expand(dt, ...)      the LoRA expand (cpu_expand_fn) of one dtype
 *   SK, sk(dt, RH, ...)  the scores of up to SK keys for RH ≤ 2 query heads
 *   PH, pvk(dt, RH, ...) P·V for RH ≤ PH query heads
 *
 * Every output element is computed by the same operations whichever block
 * it falls in (cpu_kernels.h, batch invariance), so the blocking here
 * decides speed only.
 */
#ifndef NZ_CPU_KERNELS_DRIVERS_H
#define NZ_CPU_KERNELS_DRIVERS_H

/* mk for the last tb < MT tokens of a tile (mk's block sizes are constants). */
INLINE void mk_tail(int dt, int R, int64_t tb, const char *w, int64_t ldw, int64_t n, const float *const *xr,
                    float *y, int64_t ldy, const float *bias, const float *scale)
{
	switch (tb) {
#if MT > 5
	case 5: mk(dt, R, 5, w, ldw, n, xr, y, ldy, bias, scale); break;
#endif
#if MT > 4
	case 4: mk(dt, R, 4, w, ldw, n, xr, y, ldy, bias, scale); break;
#endif
#if MT > 3
	case 3: mk(dt, R, 3, w, ldw, n, xr, y, ldy, bias, scale); break;
#endif
	case 2: mk(dt, R, 2, w, ldw, n, xr, y, ldy, bias, scale); break;
	case 1: mk(dt, R, 1, w, ldw, n, xr, y, ldy, bias, scale); break;
	default: break;
	}
}

/* Y = W·X over tiles of TOK_TILE tokens: MR rows × MT tokens at a time,
 * then the tile's last tokens, then the rows past the last MR block one
 * at a time. X rows gathered through xrow when set; int8 rows scaled. */
INLINE void gemm(int dt, const void *w, int64_t ldw, int64_t rows, int64_t n, const float *x, int64_t ldx,
                 const int32_t *xrow, int64_t ntok, float *y, int64_t ldy, const float *bias, const float *scale)
{
	const size_t rs = (size_t)ldw * dt_size(dt);
	const float *xr[MT];
	for (int64_t t0 = 0; t0 < ntok; t0 += TOK_TILE) {
		int64_t t1 = nz_min64(ntok, t0 + TOK_TILE);
		int64_t r = 0;
		for (; r + MR <= rows; r += MR) {
			const char *wr = (const char *)w + r * rs;
			const float *br = bias ? bias + r : NULL, *sr = scale ? scale + r : NULL;
			int64_t t = t0;
			for (; t + MT <= t1; t += MT) {
				rows_of(xr, x, ldx, xrow, t, MT);
				mk(dt, MR, MT, wr, ldw, n, xr, y + t * ldy + r, ldy, br, sr);
			}
			rows_of(xr, x, ldx, xrow, t, (int)(t1 - t));
			mk_tail(dt, MR, t1 - t, wr, ldw, n, xr, y + t * ldy + r, ldy, br, sr);
		}
		for (; r < rows; r++) {
			const char *w1 = (const char *)w + r * rs;
			const float *b1 = bias ? bias + r : NULL, *s1 = scale ? scale + r : NULL;
			int64_t t = t0;
			for (; t + MT <= t1; t += MT) {
				rows_of(xr, x, ldx, xrow, t, MT);
				mk(dt, 1, MT, w1, ldw, n, xr, y + t * ldy + r, ldy, b1, s1);
			}
			for (; t < t1; t++) {
				rows_of(xr, x, ldx, xrow, t, 1);
				mk(dt, 1, 1, w1, ldw, n, xr, y + t * ldy + r, ldy, b1, s1);
			}
		}
	}
}

/* Attention scores: SK keys at a time (the last block's missing keys point
 * at its first, and their scores are not stored), two query heads at a
 * time, then the odd one. */
INLINE void scores(int dt, const float *q, int64_t nq, int64_t ldq, const void *k, int64_t nk, int64_t n, float scale,
                   float *s, int64_t lds)
{
	const size_t rs = (size_t)n * dt_size(dt);
	for (int64_t j = 0; j < nk; j += SK) {
		int m = (int)nz_min64(SK, nk - j);
		const char *kr[SK];
		for (int jj = 0; jj < SK; jj++)
			kr[jj] = (const char *)k + (size_t)(j + (jj < m ? jj : 0)) * rs;
		int64_t r = 0;
		for (; r + 2 <= nq; r += 2)
			sk(dt, 2, q + r * ldq, ldq, kr, m, n, scale, s + r * lds + j, lds);
		if (r < nq)
			sk(dt, 1, q + r * ldq, ldq, kr, m, n, scale, s + r * lds + j, lds);
	}
}

/* P·V: PH query heads at a time, then 4 (where PH is larger), then the
 * last three or fewer. */
INLINE void pv(int dt, float *o, int64_t nq, int64_t ldo, const float *p, int64_t ldp, const void *v, int64_t nv,
               int64_t n)
{
	int64_t r = 0;
	for (; r + PH <= nq; r += PH)
		pvk(dt, PH, o + r * ldo, ldo, p + r * ldp, ldp, v, nv, n);
#if PH > 4
	for (; r + 4 <= nq; r += 4)
		pvk(dt, 4, o + r * ldo, ldo, p + r * ldp, ldp, v, nv, n);
#endif
	switch (nq - r) {
	case 3: pvk(dt, 3, o + r * ldo, ldo, p + r * ldp, ldp, v, nv, n); break;
	case 2: pvk(dt, 2, o + r * ldo, ldo, p + r * ldp, ldp, v, nv, n); break;
	case 1: pvk(dt, 1, o + r * ldo, ldo, p + r * ldp, ldp, v, nv, n); break;
	}
}

/* The table's entry points of one weight dtype T (DT its NZ_ code). */
#define NZ_KERNEL_FNS(T, DT) \
	TARGET static void gemm_##T(const void *w, int64_t ldw, int64_t rows, int64_t n, const float *x, int64_t ldx, \
	                            int64_t ntok, float *y, int64_t ldy, const float *bias) \
	{ \
		gemm(DT, w, ldw, rows, n, x, ldx, NULL, ntok, y, ldy, bias, NULL); \
	} \
	TARGET static void gemm_gather_##T(const void *w, int64_t ldw, int64_t rows, int64_t n, const float *x, \
	                                   int64_t ldx, const int32_t *xrow, int64_t ntok, float *y, int64_t ldy) \
	{ \
		gemm(DT, w, ldw, rows, n, x, ldx, xrow, ntok, y, ldy, NULL, NULL); \
	} \
	TARGET static void expand_##T(const void *bt, int64_t ldb, int64_t rank, int64_t cols, const float *v, \
	                              int64_t ldv, int64_t ntok, float *y, int64_t ldy) \
	{ \
		expand(DT, bt, ldb, rank, cols, v, ldv, ntok, y, ldy); \
	} \
	TARGET static void attn_scores_##T(const float *q, int64_t nq, int64_t ldq, const void *k, int64_t nk, int64_t n, \
	                                   float scale, float *s, int64_t lds) \
	{ \
		scores(DT, q, nq, ldq, k, nk, n, scale, s, lds); \
	} \
	TARGET static void attn_pv_##T(float *o, int64_t nq, int64_t ldo, const float *p, int64_t ldp, const void *v, \
	                               int64_t nv, int64_t n) \
	{ \
		pv(DT, o, nq, ldo, p, ldp, v, nv, n); \
	}

NZ_KERNEL_FNS(f32, NZ_F32)
NZ_KERNEL_FNS(f16, NZ_F16)
NZ_KERNEL_FNS(bf16, NZ_BF16)

TARGET static void gemm_q8(const int8_t *w, const float *scale, int64_t ldw, int64_t rows, int64_t n, const float *x,
                           int64_t ldx, int64_t ntok, float *y, int64_t ldy, const float *bias)
{
	gemm(NZ_Q8, w, ldw, rows, n, x, ldx, NULL, ntok, y, ldy, bias, scale);
}

/* The dtype-indexed members of a path's table (cpu_kernels). */
#define NZ_KERNEL_TABLE \
	.gemm = {gemm_f32, gemm_f16, gemm_bf16}, .gemm_q8 = gemm_q8, \
	.gemm_gather = {gemm_gather_f32, gemm_gather_f16, gemm_gather_bf16}, \
	.expand = {expand_f32, expand_f16, expand_bf16}, \
	.attn_scores = {attn_scores_f32, attn_scores_f16, attn_scores_bf16}, \
	.attn_pv = {attn_pv_f32, attn_pv_f16, attn_pv_bf16}

#endif /* NZ_CPU_KERNELS_DRIVERS_H */
