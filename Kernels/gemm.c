// SGEMM, BLIS style: five loops around a register-blocked micro-kernel.
//   jc (NC columns of B) > pc (KC deep) > pack B > ic (MC rows of A) > pack A > tiles (jr, ir)
// Threads split the MR x NR tiles of each MC x NC block (and the packing); they never split
// the K dimension, so every element of C is reduced in the same order for any team size.
#include "internal.h"

#include <string.h>

// op(A)(i, p) of a row-major A.
static inline float a_at(const float *A, int lda, int trans, int i, int p) {
    return trans ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
}

// Packs rows [i0, i0+mc) x depth [p0, p0+kc) of op(A) into MR-row panels, column p of panel
// ir at dst + ir*MR*kc + p*MR; rows past mc are zero so the micro-kernel needs no edge logic.
static void pack_a_panel(float *dst, const float *A, int lda, int trans, int i0, int rows,
                         int p0, int kc, int mr) {
    for (int p = 0; p < kc; p++) {
        float *d = dst + (size_t)p * mr;
        int r = 0;
        for (; r < rows; r++) d[r] = a_at(A, lda, trans, i0 + r, p0 + p);
        for (; r < mr; r++) d[r] = 0.0f;
    }
}

// Packs depth [p0, p0+kc) x columns [j0, j0+cols) of op(B) into one NR-column panel (row p at
// dst + p*NR), zero-padding columns past cols.
static void pack_b_panel(float *dst, const float *B, int ldb, int trans, int p0, int kc, int j0,
                         int cols, int nr) {
    if (!trans) {
        for (int p = 0; p < kc; p++) {
            const float *src = B + (size_t)(p0 + p) * ldb + j0;
            float *d = dst + (size_t)p * nr;
            memcpy(d, src, sizeof(float) * cols);
            for (int c = cols; c < nr; c++) d[c] = 0.0f;
        }
    } else {
        for (int c = 0; c < nr; c++) {
            if (c < cols) {
                const float *src = B + (size_t)(j0 + c) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[(size_t)p * nr + c] = src[p];
            } else {
                for (int p = 0; p < kc; p++) dst[(size_t)p * nr + c] = 0.0f;
            }
        }
    }
}

// C = beta * C (beta == 0 writes zeros without reading C).
static void scale_c(float *C, int ldc, int M, int N, float beta) {
    for (int i = 0; i < M; i++) {
        float *row = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(row, 0, sizeof(float) * N);
        else if (beta != 1.0f) for (int j = 0; j < N; j++) row[j] *= beta;
    }
}

static int sgemm_args_ok(int ta, int tb, int M, int N, int K, const float *A, int lda,
                         const float *B, int ldb, const float *C, int ldc) {
    if (M < 0 || N < 0 || K < 0) return 0;
    if (ldc < (N > 1 ? N : 1) || (M > 0 && N > 0 && !C)) return 0;
    if (M > 0 && N > 0 && K > 0) {
        if (!A || !B) return 0;
        if (lda < (ta ? M : K) || ldb < (tb ? K : N)) return 0;
    }
    return 1;
}

kn_status kn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (!sgemm_args_ok(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc)) return KN_EINVAL;
    if (M == 0 || N == 0) return KN_OK;
    if (K == 0 || alpha == 0.0f) {
        scale_c(C, ldc, M, N, beta);
        return KN_OK;
    }
    const kn_gemm_impl *impl = kn_gemm_active();
    const kn_gemm_blocking bk = impl->blocking;
    const int MR = bk.mr, NR = bk.nr;
    const size_t kmax = K < bk.kc ? K : bk.kc, mmax = M < bk.mc ? M : bk.mc;
    const size_t nmax = N < bk.nc ? N : bk.nc;
    float *apack = kn_thread_scratch(0, kmax * ((mmax + MR - 1) / MR * MR));
    float *bpack = kn_thread_scratch(1, kmax * ((nmax + NR - 1) / NR * NR));
    // below ~0.1 MFLOP a fork/join costs more than it saves
    int team = ((double)M * N * K < 1e5) ? 1 : kn_team();

    // split over MR x NR tiles of each block and over packing panels: no thread ever owns a
    // partial sum of another's tile, so results do not depend on the team size
#pragma omp parallel num_threads(team)
    {
        float edge[32 * 64] __attribute__((aligned(64))); // MR*NR temporary for ragged tiles
        for (int jc = 0; jc < N; jc += bk.nc) {
            const int nc = N - jc < bk.nc ? N - jc : bk.nc;
            const int n_jr = (nc + NR - 1) / NR;
            for (int pc = 0; pc < K; pc += bk.kc) {
                const int kc = K - pc < bk.kc ? K - pc : bk.kc;
                const float beta_pc = pc == 0 ? beta : 1.0f;
#pragma omp for schedule(static)
                for (int jr = 0; jr < n_jr; jr++) {
                    int cols = nc - jr * NR < NR ? nc - jr * NR : NR;
                    pack_b_panel(bpack + (size_t)jr * NR * kc, B, ldb, trans_b, pc, kc,
                                 jc + jr * NR, cols, NR);
                }
                for (int ic = 0; ic < M; ic += bk.mc) {
                    const int mc = M - ic < bk.mc ? M - ic : bk.mc;
                    const int n_ir = (mc + MR - 1) / MR;
#pragma omp for schedule(static)
                    for (int ir = 0; ir < n_ir; ir++) {
                        int rows = mc - ir * MR < MR ? mc - ir * MR : MR;
                        pack_a_panel(apack + (size_t)ir * MR * kc, A, lda, trans_a,
                                     ic + ir * MR, rows, pc, kc, MR);
                    }
                    // tiles in jr-major order: a thread's B sliver stays in L1 across its ir's
#pragma omp for schedule(static)
                    for (int t = 0; t < n_jr * n_ir; t++) {
                        const int jr = t / n_ir, ir = t % n_ir;
                        const int rows = mc - ir * MR < MR ? mc - ir * MR : MR;
                        const int cols = nc - jr * NR < NR ? nc - jr * NR : NR;
                        const float *ap = apack + (size_t)ir * MR * kc;
                        const float *bp = bpack + (size_t)jr * NR * kc;
                        float *c = C + (size_t)(ic + ir * MR) * ldc + jc + jr * NR;
                        if (rows == MR && cols == NR) {
                            impl->ukr(kc, ap, bp, c, ldc, alpha, beta_pc);
                        } else {
                            impl->ukr(kc, ap, bp, edge, NR, alpha, 0.0f);
                            for (int i = 0; i < rows; i++)
                                for (int j = 0; j < cols; j++) {
                                    float *cij = c + (size_t)i * ldc + j;
                                    *cij = beta_pc == 0.0f ? edge[i * NR + j]
                                                           : edge[i * NR + j] + beta_pc * *cij;
                                }
                        }
                    }
                }
            }
        }
    }
    return KN_OK;
}

kn_status kn_sgemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C,
                       int ldc) {
    if (!sgemm_args_ok(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc)) return KN_EINVAL;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int p = 0; p < K; p++)
                acc += a_at(A, lda, trans_a, i, p) * a_at(B, ldb, !trans_b, j, p);
            float *cij = C + (size_t)i * ldc + j;
            *cij = beta == 0.0f ? alpha * acc : alpha * acc + beta * *cij;
        }
    return KN_OK;
}
