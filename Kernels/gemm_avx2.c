// x86-64 AVX2 + FMA micro-kernel. Only these functions get the avx2/fma target; the rest of
// the library stays baseline x86-64.
#if defined(__x86_64__)
#include "internal.h"
#include <immintrin.h>

// Contract: see kn_sgemm_ukr in internal.h. MR = 6, NR = 16: 12 ymm accumulators (two FMA
// pipes x 4-cycle latency need at least 8 in flight), 2 for B, 1 broadcast of A.
__attribute__((target("avx2,fma")))
void kn_sgemm_ukr_avx2_6x16(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            float alpha, float beta) {
    __m256 acc[6][2];
    for (int i = 0; i < 6; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    }
    for (int p = 0; p < k; p++, a += 6, b += 16) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + i);
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
#endif
