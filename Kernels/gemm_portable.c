// Portable micro-kernel: plain C that any compiler vectorises for the baseline ISA.
// One body, three entry points (packed, B rows in place, A rows in place), as in gemm_avx512.c.
#include "internal.h"

// MR = 4, NR = 8.
static inline void tile_4x8(int k, const float *a, const float *const *arows,
                            const float *b, const float *const *rows, ptrdiff_t off, float *c, ptrdiff_t ldc, float alpha, float beta) {
    float acc[4][8] = {{0}};
    for (int p = 0; p < k; p++) {
        const float *bp = rows ? rows[p] + off : b + (ptrdiff_t)p * 8;
        for (int i = 0; i < 4; i++) {
            const float ai = arows ? arows[i][p] : a[(ptrdiff_t)p * 4 + i];
            for (int j = 0; j < 8; j++) acc[i][j] += ai * bp[j];
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) {
            float *cij = c + i * ldc + j;
            *cij = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *cij;
        }
}

// Contracts: see kn_sgemm_ukr and kn_sgemm_ukr_rows in internal.h.
void kn_sgemm_ukr_portable_4x8(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               float alpha, float beta) {
    tile_4x8(k, a, NULL, b, NULL, 0, c, ldc, alpha, beta);
}
void kn_sgemm_ukr_portable_4x8_rows(int k, const float *a, const float *const *rows,
                                    ptrdiff_t off, float *c, ptrdiff_t ldc, float alpha,
                                    float beta) {
    tile_4x8(k, a, NULL, NULL, rows, off, c, ldc, alpha, beta);
}
void kn_sgemm_ukr_portable_4x8_arows(int k, const float *const *arows, const float *b, float *c,
                                     ptrdiff_t ldc, float alpha, float beta) {
    tile_4x8(k, NULL, arows, b, NULL, 0, c, ldc, alpha, beta);
}
