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

// Packing by 8 x 8 transposes in registers (contract: kn_pack_rows in internal.h): eight
// source rows give eight 8-float columns, each one contiguous run of the panel. The scalar
// loop stored one float at a time, width apart (a tenth of a 256 x 256 x 256 product, and a
// strided gather down the channel planes of dy in the implicit backward-weights).
__attribute__((target("avx2"))) static inline void
transpose_8x8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) { // rows 0-3 and 4-7
        u[4 * h + 0] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(t[4 * h], t[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(t[4 * h + 1], t[4 * h + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

__attribute__((target("avx2")))
void kn_pack_rows_avx2(float *dst, const float *src, size_t ld, int rows, int kc, int width) {
    for (int r0 = 0; r0 < width; r0 += 8) {
        const int lanes = width - r0 < 8 ? width - r0 : 8;
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        int p = 0;
        for (; p + 8 <= kc; p += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = r0 + i < rows ? _mm256_loadu_ps(src + (size_t)(r0 + i) * ld + p)
                                     : _mm256_setzero_ps();
            transpose_8x8(r);
            for (int j = 0; j < 8; j++) {
                float *d = dst + (size_t)(p + j) * width + r0;
                if (lanes == 8) _mm256_storeu_ps(d, r[j]);
                else _mm256_maskstore_ps(d, keep, r[j]);
            }
        }
        for (; p < kc; p++)
            for (int i = 0; i < lanes; i++)
                dst[(size_t)p * width + r0 + i] = r0 + i < rows ? src[(size_t)(r0 + i) * ld + p] : 0.0f;
    }
}

// Packing A stored transposed (contract: kn_pack_at in internal.h): each depth position is
// already a contiguous run of the panel's rows, copied 8 lanes at a time under a mask.
__attribute__((target("avx2")))
void kn_pack_at_avx2(float *dst, const float *src, size_t ld, int rows, int kc, int mr) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int r0 = 0; r0 < mr; r0 += 8) {
        const int lanes = mr - r0 < 8 ? mr - r0 : 8, real = rows - r0 < lanes ? rows - r0 : lanes;
        const __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32(real > 0 ? real : 0), lane);
        const __m256i out = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), lane);
        for (int p = 0; p < kc; p++) {
            const __m256 v = _mm256_maskload_ps(src + (size_t)p * ld + r0, in);
            float *d = dst + (size_t)p * mr + r0;
            if (lanes == 8) _mm256_storeu_ps(d, v);
            else _mm256_maskstore_ps(d, out, v);
        }
    }
}
#endif
