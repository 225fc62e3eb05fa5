// x86-64 AVX2 + FMA micro-kernel. Only these functions get the avx2/fma target; the rest of
// the library stays baseline x86-64. One body, three entry points (packed, B rows in place,
// A rows in place), as in gemm_avx512.c.
#if defined(__x86_64__)
#include "internal.h"
#include <immintrin.h>

// MR = 6, NR = 16: 12 ymm accumulators (two FMA pipes x 4-cycle latency need at least 8 in
// flight), 2 for B, 1 broadcast of A.
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_6x16(int k, const float *a, const float *const *arows, const float *b,
          const float *const *rows, ptrdiff_t off,
          float *c, ptrdiff_t ldc, float alpha, float beta) {
    __m256 acc[6][2];
    for (int i = 0; i < 6; i++) {
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    }
    for (int p = 0; p < k; p++) {
        const float *bp = rows ? rows[p] + off : b + (ptrdiff_t)p * 16;
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) {
            const __m256 ai = _mm256_set1_ps(arows ? arows[i][p] : a[(ptrdiff_t)p * 6 + i]);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int i = 0; i < 6; i++) {
        float *ci = c + i * ldc;
        __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
        if (beta != 0.0f) {
            r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r0);
            r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), r1);
        }
        _mm256_storeu_ps(ci, r0);
        _mm256_storeu_ps(ci + 8, r1);
    }
}

// Contracts: see kn_sgemm_ukr and kn_sgemm_ukr_rows in internal.h.
__attribute__((target("avx2,fma")))
void kn_sgemm_ukr_avx2_6x16(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            float alpha, float beta) {
    tile_6x16(k, a, NULL, b, NULL, 0, c, ldc, alpha, beta);
}
__attribute__((target("avx2,fma")))
void kn_sgemm_ukr_avx2_6x16_rows(int k, const float *a, const float *const *rows, ptrdiff_t off,
                                 float *c, ptrdiff_t ldc, float alpha, float beta) {
    tile_6x16(k, a, NULL, NULL, rows, off, c, ldc, alpha, beta);
}
__attribute__((target("avx2,fma")))
void kn_sgemm_ukr_avx2_6x16_arows(int k, const float *const *arows, const float *b, float *c,
                                  ptrdiff_t ldc, float alpha, float beta) {
    tile_6x16(k, NULL, arows, b, NULL, 0, c, ldc, alpha, beta);
}
#endif
