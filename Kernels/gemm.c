// SGEMM, BLIS style: five loops around a register-blocked micro-kernel.
//   jc (NC columns of B) > pc (KC deep) > pack B > ic (MC rows of A) > pack A > tiles (jr, ir)
// Threads split the MR x NR tiles of each MC x NC block (and the packing); they never split
// the K dimension, so every element of C is reduced in the same order for any team size.
// Operands are views (internal.h): packing reads straight from a padded conv tensor when the
// convolution kernels ask for it, so the same driver runs dense GEMMs and implicit-GEMM convs.
#include "internal.h"

#include <stdlib.h>
#include <omp.h>
#include <string.h>

// MARK: - The driver

void kn_gemm_views(int M, int N, int K, float alpha, const kn_view *A, const kn_view *B,
                   float beta, const kn_view *C) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        if (beta != 1.0f) kn_gemm_scale_c(C, M, N, beta);
        return;
    }
    const kn_gemm_impl *impl = kn_gemm_choose(M, N);
    kn_gemm_blocking bk = impl->blocking;
    const int MR = bk.mr, NR = bk.nr;
    // Shift views are read in place (their rows are contiguous runs of a padded image). As B,
    // bpack then holds the KC row pointers and, per thread, one packed panel for the tiles
    // that straddle two images; as A, each tile gets MR row pointers and nothing is packed.
    const int in_place_b = B->kind == KN_VIEW_SHIFT && impl->ukr_rows;
    const int in_place_a = A->kind == KN_VIEW_SHIFT && impl->ukr_arows;
    // B read in place streams KC rows through the cache per tile: a shallower KC is faster
    // on deep narrow layers and the same elsewhere
    if (in_place_b && bk.kc > kn_tune()->gemm_kc_in_place) bk.kc = kn_tune()->gemm_kc_in_place;
    // equal blocks instead of full ones and a sliver (N = 4096 with NC = 4032 would pack all
    // of A again for 64 columns): the same number of blocks, each rounded up to the tile
    bk.nc = ((N + (N + bk.nc - 1) / bk.nc - 1) / ((N + bk.nc - 1) / bk.nc) + NR - 1) / NR * NR;
    bk.mc = ((M + (M + bk.mc - 1) / bk.mc - 1) / ((M + bk.mc - 1) / bk.mc) + MR - 1) / MR * MR;
    bk.kc = (K + (K + bk.kc - 1) / bk.kc - 1) / ((K + bk.kc - 1) / bk.kc);
    const size_t kmax = K < bk.kc ? K : bk.kc, mmax = M < bk.mc ? M : bk.mc;
    const size_t nmax = N < bk.nc ? N : bk.nc;
    // below ~0.1 MFLOP a fork/join costs more than it saves
    const int small = (double)M * N * K < kn_tune()->gemm_parallel_flops;
    const int team = small ? 1 : kn_team_enter();
    float *apack = in_place_a ? NULL : kn_thread_scratch(0, kmax * ((mmax + MR - 1) / MR * MR));
    float *bpack = kn_thread_scratch(1, in_place_b ? kmax * (2 + (size_t)team * NR)
                                                   : kmax * ((nmax + NR - 1) / NR * NR));
    const float **brows = (const float **)bpack;
    const kn_gemm_block m = {impl, A, B, C, alpha, in_place_a, in_place_b};

    // split over MR x NR tiles of each block and over packing panels: no thread ever owns a
    // partial sum of another's tile, so results do not depend on the team size
#pragma omp parallel num_threads(team)
    {
        kn_gemm_workspace ws; // this thread's edge tile, A's row pointers, its straddling panel
        for (int jc = 0; jc < N; jc += bk.nc) {
            const int nc = N - jc < bk.nc ? N - jc : bk.nc;
            const int n_jr = (nc + NR - 1) / NR;
            for (int pc = 0; pc < K; pc += bk.kc) {
                const int kc = K - pc < bk.kc ? K - pc : bk.kc;
                const float beta_pc = pc == 0 ? beta : 1.0f;
                if (in_place_b) {
                    KN_FOR_SHARE(kc, p) brows[p] = kn_shift_row(B, pc + p);
#pragma omp barrier
                } else {
                    // split over (panel, 128-row slab): a few wide panels still share out
                    const int slabs = (kc + 127) / 128;
                    KN_FOR_SHARE(n_jr * slabs, item) {
                        const int jr = item / slabs, p_lo = item % slabs * 128;
                        const int len = kc - p_lo < 128 ? kc - p_lo : 128;
                        const int cols = nc - jr * NR < NR ? nc - jr * NR : NR;
                        kn_gemm_pack_b(bpack + (size_t)jr * NR * kc + (size_t)p_lo * NR, B, pc + p_lo, len,
                               jc + jr * NR, cols, NR, impl);
                    }
#pragma omp barrier
                }
                ws.own_panel = bpack + 2 * (size_t)kc + (size_t)omp_get_thread_num() * kc * NR;
                ws.own_jr = -1;
                for (int ic = 0; ic < M; ic += bk.mc) {
                    const int mc = M - ic < bk.mc ? M - ic : bk.mc;
                    const int n_ir = (mc + MR - 1) / MR;
                    if (!in_place_a) {
                        KN_FOR_SHARE(n_ir, ir) {
                            const int rows = mc - ir * MR < MR ? mc - ir * MR : MR;
                            kn_gemm_pack_a(apack + (size_t)ir * MR * kc, A, ic + ir * MR, rows, pc, kc, MR,
                                   impl);
                        }
#pragma omp barrier
                    }
                    kn_gemm_macro(&m, ic, mc, jc, nc, pc, kc, beta_pc, apack, bpack, &ws);
#pragma omp barrier // the next block repacks A (and B) under the other threads' tiles
                }
            }
        }
    }
    if (!small) kn_team_exit();
}

// MARK: - Dense SGEMM

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
    const kn_view a = {.kind = trans_a ? KN_VIEW_DENSE_T : KN_VIEW_DENSE, .data = (float *)A, .ld = lda};
    const kn_view b = {.kind = trans_b ? KN_VIEW_DENSE_T : KN_VIEW_DENSE, .data = (float *)B, .ld = ldb};
    const kn_view c = {.kind = KN_VIEW_DENSE, .data = C, .ld = ldc};
    kn_gemm_views(M, N, K, alpha, &a, &b, beta, &c);
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
                acc += (trans_a ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                       (trans_b ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]);
            float *cij = C + (size_t)i * ldc + j;
            *cij = beta == 0.0f ? alpha * acc : alpha * acc + beta * *cij;
        }
    return KN_OK;
}
