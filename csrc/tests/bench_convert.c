/*
 * bench_convert.c — the host side of a CUDA adapter upload: converting an
 * adapter's B matrices into the engine's dtype with the LoRA scale folded
 * in (stage_entry in csrc/cuda/cuda_engine.cu), on one thread.
 *
 * Compares nz_convert_scaled with the element-by-element way it replaced
 * (nz_load_f32, a multiply, nz_convert from f32 through a 64-wide row), on
 * the B matrices of a rank-16 adapter on all seven modules of a
 * Llama-3.2-1B-shaped model (6.0 M elements), from bf16 and from f32 into
 * bf16; the two run alternately and the best of several rounds counts.
 *
 * Build and run (not part of `make test-c`):
 *   gcc -std=c11 -O3 -D_GNU_SOURCE -pthread -mavx2 -mfma -mf16c -Icsrc/include -Icsrc/src \
 *       -o build/bench_convert csrc/tests/bench_convert.c csrc/src/common.c -lm
 *   ./build/bench_convert
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { R = 16, LAYERS = 16 };
static const int64_t outs[7] = {2048, 512, 512, 2048, 8192, 8192, 2048}; /* q k v o gate up down */

/* The way before nz_convert_scaled: element by element through a row. */
static void old_way(unsigned char *dst, const void *b, int32_t bdt, int64_t out, int64_t r, float scale)
{
	float row[64];
	for (int64_t o = 0; o < out; o++) {
		unsigned char *d = dst + (size_t)(o * R) * 2;
		for (int64_t j0 = 0; j0 < R; j0 += 64) {
			int64_t w = R - j0 < 64 ? R - j0 : 64;
			for (int64_t j = 0; j < w; j++)
				row[j] = j0 + j < r ? nz_load_f32(b, bdt, o * r + j0 + j) * scale : 0.0f;
			nz_convert(d + (size_t)j0 * 2, NZ_BF16, row, NZ_F32, w);
		}
	}
}

static double run(int which, unsigned char *dst, const void *src, int32_t sdt)
{
	const size_t ssz = nz_dtype_size(sdt);
	double t0 = now();
	size_t so = 0, dof = 0;
	for (int l = 0; l < LAYERS; l++)
		for (int m = 0; m < 7; m++) {
			const void *b = (const unsigned char *)src + so;
			if (which == 0)
				old_way(dst + dof, b, sdt, outs[m], R, 0.5f);
			else
				nz_convert_scaled(dst + dof, NZ_BF16, b, sdt, outs[m] * R, 0.5f);
			so += (size_t)(outs[m] * R) * ssz;
			dof += (size_t)(outs[m] * R) * 2;
		}
	return now() - t0;
}

int main(void)
{
	int64_t n = 0;
	for (int m = 0; m < 7; m++)
		n += outs[m] * R;
	n *= LAYERS;
	float *f = malloc((size_t)n * 4);
	uint16_t *h = malloc((size_t)n * 2);
	unsigned char *a = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);
	if (!f || !h || !a || !b)
		return 1;
	uint64_t s = 42;
	for (int64_t i = 0; i < n; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		f[i] = (float)((int64_t)(s >> 33) % 2001 - 1000) * 1e-4f;
		h[i] = nz_f32_to_bf16(f[i]);
	}
	printf("adapter B matrices: %lld elements (rank %d, 7 modules, %d layers) into bf16, one thread\n",
	       (long long)n, R, LAYERS);
	const struct {
		const char *name;
		const void *src;
		int32_t dt;
	} cases[2] = {{"bf16", h, NZ_BF16}, {"f32", f, NZ_F32}};
	for (int c = 0; c < 2; c++) {
		double best[2] = {1e9, 1e9};
		for (int round = 0; round < 7; round++)
			for (int w = 0; w < 2; w++) {
				double t = run(w, w ? b : a, cases[c].src, cases[c].dt);
				best[w] = t < best[w] ? t : best[w];
			}
		const int same = memcmp(a, b, (size_t)n * 2) == 0;
		printf("  from %-4s  element by element %7.2f ms   nz_convert_scaled %6.2f ms   %.1fx   %s\n", cases[c].name,
		       best[0] * 1e3, best[1] * 1e3, best[0] / best[1], same ? "same bytes" : "DIFFERENT BYTES");
		if (!same)
			return 1;
	}
	free(f);
	free(h);
	free(a);
	free(b);
	return 0;
}
