// x86-64 AVX-512F micro-kernels. Only these functions get the avx512f target.
//
// Each tile shape has one body and three entry points: A and B from packed panels; B rows read
// in place (row p at rows[p] + off, any alignment: the implicit convolution's shifted runs of
// a padded image, which then need no packing); or A rows read in place (row i at arows[i]),
// for the implicit convolution's backward-weights, where the shifted runs are A's rows.
#if defined(__x86_64__)
#include "internal.h"
#include <immintrin.h>

// MR = 8, NR = 48: 24 zmm accumulators, 3 for B, 1 broadcast of A. MR = 8 divides the channel
// counts of CNN layers (the M of a conv GEMM); NR = 48 divides 9*C for C a multiple of 16.
__attribute__((target("avx512f"), always_inline)) static inline void
tile_8x48(int k, const float *a, const float *const *arows, const float *b,
          const float *const *rows, ptrdiff_t off,
          float *c, ptrdiff_t ldc, float alpha, float beta) {
    __m512 acc[8][3];
#pragma clang loop unroll(full)
    for (int i = 0; i < 8; i++) {
        acc[i][0] = acc[i][1] = acc[i][2] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 32), _MM_HINT_T0);
    }
#pragma clang loop unroll_count(4)
    for (int p = 0; p < k; p++) {
        const float *bp = rows ? rows[p] + off : b + (ptrdiff_t)p * 48;
        if (!rows) _mm_prefetch((const char *)(bp + 8 * 48), _MM_HINT_T0); // B streams from L2
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16),
                     b2 = _mm512_loadu_ps(bp + 32);
#pragma clang loop unroll(full)
        for (int i = 0; i < 8; i++) {
            const __m512 ai = _mm512_set1_ps(arows ? arows[i][p] : a[(ptrdiff_t)p * 8 + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(ai, b2, acc[i][2]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma clang loop unroll(full)
    for (int i = 0; i < 8; i++) {
        float *ci = c + i * ldc;
#pragma clang loop unroll(full)
        for (int j = 0; j < 3; j++) {
            __m512 r = _mm512_mul_ps(va, acc[i][j]);
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16 * j), r);
            _mm512_storeu_ps(ci + 16 * j, r);
        }
    }
}

// MR = 12, NR = 16 * NV (NV = 1 or 2, a constant once inlined): 12 * NV zmm accumulators, NV
// for B, 1 broadcast of A. The dispatcher takes NR = 32 over 8x48 where it pads less: N a
// multiple of 32 (square powers of two, batched 4x4 and 2x2 conv layers) with M large; and
// NR = 16 where N is 16 or so: the backward-weights of 16-channel conv layers (N = output
// channels), which NR = 32 computed half in zero padding.
__attribute__((target("avx512f"), always_inline)) static inline void
tile_12(const int nv, int k, const float *a, const float *const *arows, const float *b,
        const float *const *rows, ptrdiff_t off, float *c, ptrdiff_t ldc, float alpha, float beta) {
    const int nr = 16 * nv;
    __m512 acc[12][2];
#pragma clang loop unroll(full)
    for (int i = 0; i < 12; i++) {
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        if (nv == 2) _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
    }
#pragma clang loop unroll_count(4)
    for (int p = 0; p < k; p++) {
        const float *bp = rows ? rows[p] + off : b + (ptrdiff_t)p * nr;
        if (!rows) _mm_prefetch((const char *)(bp + 8 * nr), _MM_HINT_T0);
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = nv == 2 ? _mm512_loadu_ps(bp + 16) : b0;
#pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) {
            const __m512 ai = _mm512_set1_ps(arows ? arows[i][p] : a[(ptrdiff_t)p * 12 + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            if (nv == 2) acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma clang loop unroll(full)
    for (int i = 0; i < 12; i++) {
        float *ci = c + i * ldc;
#pragma clang loop unroll(full)
        for (int j = 0; j < nv; j++) {
            __m512 r = _mm512_mul_ps(va, acc[i][j]);
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16 * j), r);
            _mm512_storeu_ps(ci + 16 * j, r);
        }
    }
}

__attribute__((target("avx512f"), always_inline)) static inline void
tile_12x32(int k, const float *a, const float *const *arows, const float *b,
           const float *const *rows, ptrdiff_t off, float *c, ptrdiff_t ldc, float alpha, float beta) {
    tile_12(2, k, a, arows, b, rows, off, c, ldc, alpha, beta);
}
__attribute__((target("avx512f"), always_inline)) static inline void
tile_12x16(int k, const float *a, const float *const *arows, const float *b,
           const float *const *rows, ptrdiff_t off, float *c, ptrdiff_t ldc, float alpha, float beta) {
    tile_12(1, k, a, arows, b, rows, off, c, ldc, alpha, beta);
}

// A tile body's three entry points: packed A and B, B rows in place, A rows in place
// (contracts: kn_sgemm_ukr, kn_sgemm_ukr_rows and kn_sgemm_ukr_arows in internal.h).
#define UKR_ENTRIES(name, tile)                                                            \
    __attribute__((target("avx512f"))) void name(int k, const float *a, const float *b,    \
                                                 float *c, ptrdiff_t ldc, float alpha,     \
                                                 float beta) {                             \
        tile(k, a, NULL, b, NULL, 0, c, ldc, alpha, beta);                                 \
    }                                                                                      \
    __attribute__((target("avx512f"))) void name##_rows(                                   \
        int k, const float *a, const float *const *rows, ptrdiff_t off, float *c,          \
        ptrdiff_t ldc, float alpha, float beta) {                                          \
        tile(k, a, NULL, NULL, rows, off, c, ldc, alpha, beta);                            \
    }                                                                                      \
    __attribute__((target("avx512f"))) void name##_arows(int k, const float *const *arows, \
                                                         const float *b, float *c,         \
                                                         ptrdiff_t ldc, float alpha,       \
                                                         float beta) {                     \
        tile(k, NULL, arows, b, NULL, 0, c, ldc, alpha, beta);                             \
    }

UKR_ENTRIES(kn_sgemm_ukr_avx512_8x48, tile_8x48)
UKR_ENTRIES(kn_sgemm_ukr_avx512_12x32, tile_12x32)
UKR_ENTRIES(kn_sgemm_ukr_avx512_12x16, tile_12x16)
#endif
