// Portable micro-kernel: plain C that any compiler vectorises for the baseline ISA.
#include "internal.h"

// Contract: see kn_sgemm_ukr in internal.h. MR = 4, NR = 8.
void kn_sgemm_ukr_portable_4x8(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               float alpha, float beta) {
    float acc[4][8] = {{0}};
    for (int p = 0; p < k; p++, a += 4, b += 8)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 8; j++) acc[i][j] += a[i] * b[j];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) {
            float *cij = c + i * ldc + j;
            *cij = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *cij;
        }
}
