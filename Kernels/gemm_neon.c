// arm64 Advanced SIMD micro-kernel (every arm64 CPU has it: no run-time check needed).
// One body, three entry points (packed, B rows in place, A rows in place), as in gemm_avx512.c.
#if defined(__aarch64__)
#include "internal.h"
#include <arm_neon.h>

// MR = 8, NR = 12: 24 q-register accumulators, 3 for B; each FMA multiplies B by one A
// value (the compiler keeps A in vector lanes and emits by-element FMAs).
__attribute__((always_inline)) static inline void
tile_8x12(int k, const float *a, const float *const *arows, const float *b,
          const float *const *rows, ptrdiff_t off,
          float *c, ptrdiff_t ldc, float alpha, float beta) {
    float32x4_t acc[8][3];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 3; j++) acc[i][j] = vdupq_n_f32(0.0f);
    for (int p = 0; p < k; p++) {
        const float *bp = rows ? rows[p] + off : b + (ptrdiff_t)p * 12;
        const float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4), b2 = vld1q_f32(bp + 8);
        for (int i = 0; i < 8; i++) {
            const float ai = arows ? arows[i][p] : a[(ptrdiff_t)p * 8 + i];
            acc[i][0] = vfmaq_n_f32(acc[i][0], b0, ai);
            acc[i][1] = vfmaq_n_f32(acc[i][1], b1, ai);
            acc[i][2] = vfmaq_n_f32(acc[i][2], b2, ai);
        }
    }
    for (int i = 0; i < 8; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < 3; j++) {
            float32x4_t r = vmulq_n_f32(acc[i][j], alpha);
            if (beta != 0.0f) r = vfmaq_n_f32(r, vld1q_f32(ci + 4 * j), beta);
            vst1q_f32(ci + 4 * j, r);
        }
    }
}

// Contracts: see kn_sgemm_ukr and kn_sgemm_ukr_rows in internal.h.
void kn_sgemm_ukr_neon_8x12(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            float alpha, float beta) {
    tile_8x12(k, a, NULL, b, NULL, 0, c, ldc, alpha, beta);
}
void kn_sgemm_ukr_neon_8x12_rows(int k, const float *a, const float *const *rows, ptrdiff_t off,
                                 float *c, ptrdiff_t ldc, float alpha, float beta) {
    tile_8x12(k, a, NULL, NULL, rows, off, c, ldc, alpha, beta);
}
void kn_sgemm_ukr_neon_8x12_arows(int k, const float *const *arows, const float *b, float *c,
                                  ptrdiff_t ldc, float alpha, float beta) {
    tile_8x12(k, NULL, arows, b, NULL, 0, c, ldc, alpha, beta);
}
#endif
