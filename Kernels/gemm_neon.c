// arm64 Advanced SIMD micro-kernel (every arm64 CPU has it: no run-time check needed).
#if defined(__aarch64__)
#include "internal.h"
#include <arm_neon.h>

// Contract: see kn_sgemm_ukr in internal.h. MR = 8, NR = 12: 24 q-register accumulators,
// 3 for B, 2 for A (29 of 32); each FMA takes its A value from a vector lane.
void kn_sgemm_ukr_neon_8x12(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            float alpha, float beta) {
    float32x4_t acc[8][3];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 3; j++) acc[i][j] = vdupq_n_f32(0.0f);
    for (int p = 0; p < k; p++, a += 8, b += 12) {
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
        const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define KN_ROW(i, av, lane)                                  \
    acc[i][0] = vfmaq_laneq_f32(acc[i][0], b0, av, lane);    \
    acc[i][1] = vfmaq_laneq_f32(acc[i][1], b1, av, lane);    \
    acc[i][2] = vfmaq_laneq_f32(acc[i][2], b2, av, lane);
        KN_ROW(0, a0, 0) KN_ROW(1, a0, 1) KN_ROW(2, a0, 2) KN_ROW(3, a0, 3)
        KN_ROW(4, a1, 0) KN_ROW(5, a1, 1) KN_ROW(6, a1, 2) KN_ROW(7, a1, 3)
#undef KN_ROW
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
#endif
