/*
 * cpu_kernels.h — the CPU backend's SIMD kernels, one table per
 * instruction-set path (AVX2+FMA+F16C baseline, AVX-512).
 *
 * Batch invariance: every output element is computed by one fixed
 * sequence of operations that depends only on the element's own inputs and
 * the reduction length — never on how many tokens or rows a call covers,
 * where the element sits in a register block, or which thread runs it. So a
 * sequence's results are bit-identical alone or in any batch. (The two
 * paths differ from each other in the last bits; an engine uses one path
 * for its whole life.)
 */
#ifndef NZ_CPU_KERNELS_H
#define NZ_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "nozzle_engine.h"

/* Y[t·ldy + r] = Σ_k W[r·ldw + k] · X[t·ldx + k]  (+ bias[r] when bias != NULL)
 * for r < rows, t < ntok; W rows hold n elements of the table entry's dtype.
 * Each dot product: lane-wise FMA over the full vectors of k in ascending
 * order, a fixed horizontal sum, then the tail. */
typedef void (*cpu_gemm_fn)(const void *w, int64_t ldw, int64_t rows, int64_t n, const float *x, int64_t ldx,
                            int64_t ntok, float *y, int64_t ldy, const float *bias);

/* The same for int8 weights (NZ_Q8) with one scale per row:
 * Y[t·ldy + r] = scale[r] · Σ_k W[r·ldw + k] · X[t·ldx + k]  (+ bias[r]);
 * the dot product as above over the int8 values converted to f32, then
 * one multiply by the row's scale. */
typedef void (*cpu_gemm_q8_fn)(const int8_t *w, const float *scale, int64_t ldw, int64_t rows, int64_t n,
                               const float *x, int64_t ldx, int64_t ntok, float *y, int64_t ldy, const float *bias);

/* The same with the token rows gathered: Y[t·ldy + r] = W[r] · X[xrow[t]·ldx]
 * (no bias); each element computed exactly as by cpu_gemm_fn. */
typedef void (*cpu_gemm_gather_fn)(const void *w, int64_t ldw, int64_t rows, int64_t n, const float *x,
                                   int64_t ldx, const int32_t *xrow, int64_t ntok, float *y, int64_t ldy);

/* D[t·ldd + o] = Σ_{j<rank} V[t·ldv + j] · Bt[j·ldb + o]  for o < cols, t < ntok
 * (the LoRA expand with B stored transposed, [rank, out]; the caller adds
 * D into the projection's output). Each element: FMA over j ascending
 * from 0. */
typedef void (*cpu_expand_fn)(const void *bt, int64_t ldb, int64_t rank, int64_t cols, const float *v, int64_t ldv,
                              int64_t ntok, float *y, int64_t ldy);

typedef struct cpu_kernels {
	const char *name; /* "avx2", "avx512" */
	cpu_gemm_fn gemm[3];     /* indexed by NZ_F32, NZ_F16, NZ_BF16 */
	cpu_gemm_q8_fn gemm_q8;
	cpu_gemm_gather_fn gemm_gather[3];
	cpu_expand_fn expand[3]; /* indexed by the dtype of Bt */
	/* The scores of nk keys (rows of n elements at k, k + n, ...) for nq
	 * query heads: s[r·lds + j] = scale · (q[r·ldq ..] · k_j) for r < nq,
	 * j < nk. Each score: lane-wise FMA over the full vectors of n in
	 * ascending order, one fixed reduction tree of the lanes (the same for
	 * every key, whatever nk, nq and the key's place in the call), then the
	 * tail, then the scale: a key's score does not depend on which keys
	 * share the call. */
	void (*attn_scores[3])(const float *q, int64_t nq, int64_t ldq, const void *k, int64_t nk, int64_t n, float scale,
	                       float *s, int64_t lds);
	/* o[r·ldo + d] += Σ_j p[r·ldp + j] · v_j[d] for r < nq, d < n, over the
	 * nv value rows at v, v + n, ...: per element one FMA per j ascending
	 * (exactly what fmaf per element gives), each row read once for
	 * the heads. */
	void (*attn_pv[3])(float *o, int64_t nq, int64_t ldo, const float *p, int64_t ldp, const void *v, int64_t nv,
	                   int64_t n);
	uint64_t (*read_sum)(const void *p, int64_t bytes);          /* bandwidth probe: reads every byte */
	/* dst[i] = src[i] for i < n, converted exactly as nz_convert does
	 * (through f32, round to nearest even). */
	void (*convert)(void *dst, int32_t ddt, const void *src, int32_t sdt, int64_t n);
	/* dst[j·ldd + i] = round_ddt(src[i·cols + j] · scale) for i < rows,
	 * j < cols: lora_B [out, rank] to the scaled Bt [rank, out]. */
	void (*transpose_scale)(void *dst, int32_t ddt, int64_t ldd, const void *src, int32_t sdt, int64_t rows,
	                        int64_t cols, float scale);
} cpu_kernels;

extern const cpu_kernels cpu_kernels_avx2;
extern const cpu_kernels cpu_kernels_avx512;

/* Helpers shared by the kernel files. */
static inline size_t dt_size(int dt) { return dt == NZ_F32 ? 4 : dt == NZ_Q8 ? 1 : 2; }

/* Token rows of X: x + t·ldx, or x + xrow[t]·ldx (a gather) when xrow is set. */
static inline void rows_of(const float **xr, const float *x, int64_t ldx, const int32_t *xrow, int64_t t, int n)
{
	for (int i = 0; i < n; i++)
		xr[i] = x + (xrow ? xrow[t + i] : t + i) * ldx;
}

#define CPU_ISA_AUTO 0
#define CPU_ISA_AVX2 1
#define CPU_ISA_AVX512 2

/* 1 when this processor (and OS) runs the path. */
int cpu_isa_supported(int isa);
/* The path engines created from now on use: the best supported one, or the
 * forced one. NULL when not even AVX2+FMA+F16C is available. */
const cpu_kernels *cpu_kernels_select(void);
/* Tests: force a path for engines created from now on (CPU_ISA_AUTO undoes
 * it). Not thread-safe; never called by the library itself. */
void cpu_force_isa(int isa);

#endif /* NZ_CPU_KERNELS_H */
