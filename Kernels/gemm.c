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

// MARK: - Transposing packs (contract: kn_pack_rows in internal.h)

// The ISA's packing when `impl` lends one, else a scalar transpose 16 depth positions at a
// time: the 16 x width block it writes stays in L1 while each source row gives 16 contiguous
// floats (column by column over the whole depth, every store missed L1: a sixth of a LeNet-5
// step).
static void pack_rows(const kn_gemm_impl *impl, float *dst, const float *src, size_t ld,
                      int rows, int kc, int width) {
    if (impl->pack_rows) {
        impl->pack_rows(dst, src, ld, rows, kc, width);
        return;
    }
    for (int pb = 0; pb < kc; pb += 16) {
        const int len = kc - pb < 16 ? kc - pb : 16;
        float *d = dst + (size_t)pb * width;
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < len; p++) d[(size_t)p * width + r] = src[(size_t)r * ld + pb + p];
        for (int p = 0; p < len; p++)
            for (int r = rows; r < width; r++) d[(size_t)p * width + r] = 0.0f;
    }
}

// MARK: - Packing A: rows [i0, i0+rows) x depth [p0, p0+kc) into one MR-row panel
// (column p at dst + p*MR); rows past `rows` are zero, so the micro-kernel needs no edge logic.
// `impl` lends its ISA's packing helpers (their absence: the scalar loops).

static void pack_a(float *dst, const kn_view *A, int i0, int rows, int p0, int kc, int mr,
                   const kn_gemm_impl *impl) {
    if (A->kind == KN_VIEW_DENSE) {
        pack_rows(impl, dst, A->data + (size_t)i0 * A->ld + p0, (size_t)A->ld, rows, kc, mr);
        return;
    }
    if (A->kind == KN_VIEW_DENSE_T && impl->pack_at) {
        impl->pack_at(dst, A->data + (size_t)p0 * A->ld + i0, (size_t)A->ld, rows, kc, mr);
        return;
    }
    if (A->kind == KN_VIEW_NCHW) {
        // (i, j) at data[(j / plane) * ch * plane + i * plane + j % plane]: the weights of a
        // transposed conv, (K, C, R, S) read as (C, K*R*S) (see conv_shift.c). Packed in runs
        // of one plane: its rows i0.. sit `plane` apart, their depth contiguous.
        for (int p = 0; p < kc;) {
            const int j = p0 + p, t = j % A->plane;
            const int run = A->plane - t < kc - p ? A->plane - t : kc - p;
            const float *src = A->data + ((size_t)(j / A->plane) * A->ch + i0) * A->plane + t;
            pack_rows(impl, dst + (size_t)p * mr, src, (size_t)A->plane, rows, run, mr);
            p += run;
        }
        return;
    }
    if (A->kind != KN_VIEW_DENSE_T) abort(); // shift views as A are read in place, never packed
    for (int p = 0; p < kc; p++) {
        const float *src = A->data + (size_t)(p0 + p) * A->ld + i0;
        float *d = dst + (size_t)p * mr;
        for (int r = 0; r < mr; r++) d[r] = r < rows ? src[r] : 0.0f;
    }
}

// MARK: - Packing B: depth [p0, p0+kc) x columns [j0, j0+cols) into one NR-column panel
// (row p at dst + p*NR), zero-padding columns past `cols`.

// Shift view, rows (c, r, s) of depth [p0, p0+kc), columns [j0, j0+cols): each row is a
// contiguous run of a padded image, split where the columns cross into the next image.
static void pack_b_shift(float *dst, const kn_view *B, int p0, int kc, int j0, int cols, int nr) {
    const int RS = B->R * B->S;
    for (int p = 0; p < kc; p++) {
        const int row = p0 + p, r = row / B->S % B->R, s = row % B->S;
        const float *src = B->data + (long)(row / RS) * B->cstride + (long)r * B->rstep +
                           (long)s * B->sstep;
        float *d = dst + (size_t)p * nr;
        for (int c = 0; c < cols;) {
            const int j = j0 + c, n = j / B->T, t = j % B->T;
            const int run = B->T - t < cols - c ? B->T - t : cols - c;
            memcpy(d + c, src + n * B->image + t, sizeof(float) * run);
            c += run;
        }
        for (int c = cols; c < nr; c++) d[c] = 0.0f;
    }
}

// Transposed NCHW view: depth rows are positions (n, t) of the planes, panel columns are
// channels; filled row by row from `cols` channel streams, so stores stay contiguous.
static void pack_b_nchw_t(float *dst, const kn_view *B, int p0, int kc, int j0, int cols,
                          int nr, const kn_gemm_impl *impl) {
    for (int p = 0; p < kc;) {
        const int j = p0 + p, n = j / B->plane, t = j % B->plane;
        const int run = B->plane - t < kc - p ? B->plane - t : kc - p;
        const float *img = B->data + ((size_t)n * B->ch + j0) * B->plane + t;
        pack_rows(impl, dst + (size_t)p * nr, img, (size_t)B->plane, cols, run, nr);
        p += run;
    }
}

// Im2col view, rows (c, r, s) of depth [p0, p0+kc), columns [j0, j0+cols): each row gathers
// one tap's input offsets from the image planes, image by image.
static void pack_b_im2col(float *dst, const kn_view *B, int p0, int kc, int j0, int cols,
                          int nr) {
    const int RS = B->R * B->S;
    for (int p = 0; p < kc; p++) {
        const int row = p0 + p;
        const int *taps = B->taps + (size_t)(row % RS) * B->plane;
        const float *plane = B->data + (long)(row / RS) * B->cstride;
        float *d = dst + (size_t)p * nr;
        for (int c = 0; c < cols;) {
            const int j = j0 + c, n = j / B->plane, t = j % B->plane;
            const int run = B->plane - t < cols - c ? B->plane - t : cols - c;
            const float *img = plane + n * B->image;
            for (int i = 0; i < run; i++) d[c + i] = taps[t + i] >= 0 ? img[taps[t + i]] : 0.0f;
            c += run;
        }
        for (int c = cols; c < nr; c++) d[c] = 0.0f;
    }
}

static void pack_b(float *dst, const kn_view *B, int p0, int kc, int j0, int cols, int nr,
                   const kn_gemm_impl *impl) {
    switch (B->kind) {
    case KN_VIEW_DENSE:
        for (int p = 0; p < kc; p++) {
            float *d = dst + (size_t)p * nr;
            memcpy(d, B->data + (size_t)(p0 + p) * B->ld + j0, sizeof(float) * cols);
            for (int c = cols; c < nr; c++) d[c] = 0.0f;
        }
        return;
    case KN_VIEW_DENSE_T:
        pack_rows(impl, dst, B->data + (size_t)j0 * B->ld + p0, (size_t)B->ld, cols, kc, nr);
        return;
    case KN_VIEW_SHIFT: pack_b_shift(dst, B, p0, kc, j0, cols, nr); return;
    case KN_VIEW_NCHW_T: pack_b_nchw_t(dst, B, p0, kc, j0, cols, nr, impl); return;
    case KN_VIEW_IM2COL: pack_b_im2col(dst, B, p0, kc, j0, cols, nr); return;
    default: abort(); // not a B operand anywhere in the library
    }
}

// MARK: - Writing C tiles

// Where the tile at (i0, j0), `cols` wide, starts in C and its row stride, when it is one
// strided block in memory (dense C; an NCHW view when the tile stays in one image); else NULL.
static float *c_block(const kn_view *C, int i0, int j0, int cols, ptrdiff_t *ldc) {
    if (C->kind == KN_VIEW_DENSE) {
        *ldc = C->ld;
        return C->data + (size_t)i0 * C->ld + j0;
    }
    const int n = j0 / C->plane, q = j0 % C->plane;
    if (q + cols > C->plane) return NULL;
    *ldc = C->plane;
    return C->data + ((size_t)n * C->ch + i0) * C->plane + q;
}

static inline float *c_at(const kn_view *C, int i, int j) {
    if (C->kind == KN_VIEW_DENSE) return C->data + (size_t)i * C->ld + j;
    return C->data + ((size_t)(j / C->plane) * C->ch + i) * C->plane + j % C->plane;
}

// C = beta * C over the whole view (beta == 0 writes zeros without reading C).
static void scale_c(const kn_view *C, int M, int N, float beta) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = c_at(C, i, j);
            *c = beta == 0.0f ? 0.0f : beta * *c;
        }
}

// C tile (rows x cols at i0, j0) = tile + beta * C, from a temporary MR x NR tile (row stride
// nr), in runs that are contiguous in C (an NCHW tile can straddle two images).
static void write_back(const kn_view *C, const float *tile, int nr, int i0, int j0, int rows,
                       int cols, float beta) {
    for (int j = 0; j < cols;) {
        int run = cols - j;
        if (C->kind == KN_VIEW_NCHW && run > C->plane - (j0 + j) % C->plane)
            run = C->plane - (j0 + j) % C->plane;
        ptrdiff_t ld;
        float *cj = c_block(C, i0, j0 + j, run, &ld);
        for (int i = 0; i < rows; i++) {
            float *ci = cj + i * ld;
            const float *ti = tile + i * nr + j;
            if (beta == 0.0f)
                for (int t = 0; t < run; t++) ci[t] = ti[t];
            else
                for (int t = 0; t < run; t++) ci[t] = ti[t] + beta * ci[t];
        }
        j += run;
    }
}

// MARK: - The driver

#ifndef KN_KC_IN_PLACE
#define KN_KC_IN_PLACE 512
#endif

// Start of row `row` of a shift view (a channel plane shifted by the kernel offset).
static const float *shift_row(const kn_view *v, int row) {
    const int RS = v->R * v->S;
    return v->data + (long)(row / RS) * v->cstride + (long)(row / v->S % v->R) * v->rstep +
           (long)(row % v->S) * v->sstep;
}

void kn_gemm_views(int M, int N, int K, float alpha, const kn_view *A, const kn_view *B,
                   float beta, const kn_view *C) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {
        if (beta != 1.0f) scale_c(C, M, N, beta);
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
    if (in_place_b && bk.kc > KN_KC_IN_PLACE) bk.kc = KN_KC_IN_PLACE;
    // equal blocks instead of full ones and a sliver (N = 4096 with NC = 4032 would pack all
    // of A again for 64 columns): the same number of blocks, each rounded up to the tile
    bk.nc = ((N + (N + bk.nc - 1) / bk.nc - 1) / ((N + bk.nc - 1) / bk.nc) + NR - 1) / NR * NR;
    bk.mc = ((M + (M + bk.mc - 1) / bk.mc - 1) / ((M + bk.mc - 1) / bk.mc) + MR - 1) / MR * MR;
    bk.kc = (K + (K + bk.kc - 1) / bk.kc - 1) / ((K + bk.kc - 1) / bk.kc);
    const size_t kmax = K < bk.kc ? K : bk.kc, mmax = M < bk.mc ? M : bk.mc;
    const size_t nmax = N < bk.nc ? N : bk.nc;
    // below ~0.1 MFLOP a fork/join costs more than it saves
    const int small = (double)M * N * K < 1e5;
    const int team = small ? 1 : kn_team_enter();
    float *apack = in_place_a ? NULL : kn_thread_scratch(0, kmax * ((mmax + MR - 1) / MR * MR));
    float *bpack = kn_thread_scratch(1, in_place_b ? kmax * (2 + (size_t)team * NR)
                                                   : kmax * ((nmax + NR - 1) / NR * NR));
    const float **brows = (const float **)bpack;

    // split over MR x NR tiles of each block and over packing panels: no thread ever owns a
    // partial sum of another's tile, so results do not depend on the team size
#pragma omp parallel num_threads(team)
    {
        float edge[64 * 64] __attribute__((aligned(64))); // an MR x NR tile for ragged edges
        const float *arows[64];
        for (int jc = 0; jc < N; jc += bk.nc) {
            const int nc = N - jc < bk.nc ? N - jc : bk.nc;
            const int n_jr = (nc + NR - 1) / NR;
            for (int pc = 0; pc < K; pc += bk.kc) {
                const int kc = K - pc < bk.kc ? K - pc : bk.kc;
                const float beta_pc = pc == 0 ? beta : 1.0f;
                if (in_place_b) {
                    KN_FOR_SHARE(kc, p) brows[p] = shift_row(B, pc + p);
#pragma omp barrier
                } else {
                    // split over (panel, 128-row slab): a few wide panels still share out
                    const int slabs = (kc + 127) / 128;
                    KN_FOR_SHARE(n_jr * slabs, item) {
                        const int jr = item / slabs, p_lo = item % slabs * 128;
                        const int len = kc - p_lo < 128 ? kc - p_lo : 128;
                        const int cols = nc - jr * NR < NR ? nc - jr * NR : NR;
                        pack_b(bpack + (size_t)jr * NR * kc + (size_t)p_lo * NR, B, pc + p_lo, len,
                               jc + jr * NR, cols, NR, impl);
                    }
#pragma omp barrier
                }
                float *own_panel = bpack + 2 * (size_t)kc + (size_t)omp_get_thread_num() * kc * NR;
                int own_jr = -1; // the straddling panel this thread packed last
                for (int ic = 0; ic < M; ic += bk.mc) {
                    const int mc = M - ic < bk.mc ? M - ic : bk.mc;
                    const int n_ir = (mc + MR - 1) / MR;
                    if (!in_place_a) {
                        KN_FOR_SHARE(n_ir, ir) {
                            const int rows = mc - ir * MR < MR ? mc - ir * MR : MR;
                            pack_a(apack + (size_t)ir * MR * kc, A, ic + ir * MR, rows, pc, kc, MR,
                                   impl);
                        }
#pragma omp barrier
                    }
                    // tiles in jr-major order: a thread's B sliver stays in cache across its ir's
                    KN_FOR_SHARE(n_jr * n_ir, t) {
                        const int jr = t / n_ir, ir = t % n_ir;
                        const int i0 = ic + ir * MR, j0 = jc + jr * NR;
                        const int rows = mc - ir * MR < MR ? mc - ir * MR : MR;
                        const int cols = nc - jr * NR < NR ? nc - jr * NR : NR;
                        const float *ap = in_place_a ? NULL : apack + (size_t)ir * MR * kc;
                        const float *bp = bpack + (size_t)jr * NR * kc;
                        ptrdiff_t ldc, off = -1;
                        if (in_place_b) {
                            const int tb = j0 % B->T;
                            if (tb + NR <= B->T) {
                                off = (ptrdiff_t)(j0 / B->T) * B->image + tb;
                            } else {
                                if (own_jr != jr) pack_b(own_panel, B, pc, kc, j0, cols, NR, impl);
                                own_jr = jr;
                                bp = own_panel;
                            }
                        }
                        float *c = c_block(C, i0, j0, cols, &ldc);
                        float *out = c && rows == MR && cols == NR ? c : edge;
                        const ptrdiff_t ldo = out == c ? ldc : NR;
                        const float beta_o = out == c ? beta_pc : 0.0f;
                        if (in_place_a) {
                            // A's rows jump where the depth crosses into the next image: one
                            // call per image segment, the later ones accumulating
                            for (int p = 0; p < kc;) {
                                const int j = pc + p, tj = j % A->T;
                                const int seg = A->T - tj < kc - p ? A->T - tj : kc - p;
                                for (int i = 0; i < MR; i++) // rows past the matrix: dropped
                                    arows[i] = shift_row(A, i0 + (i < rows ? i : 0)) +
                                               (long)(j / A->T) * A->image + tj;
                                impl->ukr_arows(seg, arows, bp + (size_t)p * NR, out, ldo, alpha,
                                                p == 0 ? beta_o : 1.0f);
                                p += seg;
                            }
                        } else if (off >= 0) {
                            impl->ukr_rows(kc, ap, brows, off, out, ldo, alpha, beta_o);
                        } else {
                            impl->ukr(kc, ap, bp, out, ldo, alpha, beta_o);
                        }
                        if (out != c) write_back(C, edge, NR, i0, j0, rows, cols, beta_pc);
                    }
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
