// The GEMM's C side: the macro-kernel (every micro-tile of a block), edge tiles written
// back through a temporary, and scaling C.
#include "internal.h"

#include <omp.h>

// Start of row `row` of a shift view (a channel plane shifted by the kernel offset).
const float *kn_shift_row(const kn_view *v, int row) {
    const int RS = v->R * v->S;
    return v->data + (long)(row / RS) * v->cstride + (long)(row / v->S % v->R) * v->rstep +
           (long)(row % v->S) * v->sstep;
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
void kn_gemm_scale_c(const kn_view *C, int M, int N, float beta) {
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


// MARK: - The macro-kernel

// The tiles of one MC x NC block at depth [pc, pc+kc), this thread's share, in jr-major order:
// a thread's B sliver stays in cache across its ir's. A and B are packed (or read in place).
void kn_gemm_macro(const kn_gemm_block *m, int ic, int mc, int jc, int nc, int pc, int kc, float beta_pc,
                   const float *apack, const float *bpack, kn_gemm_workspace *ws) {
    const kn_view *A = m->A, *B = m->B, *C = m->C;
    const kn_gemm_impl *impl = m->impl;
    const int MR = impl->blocking.mr, NR = impl->blocking.nr, n_ir = (mc + MR - 1) / MR, n_jr = (nc + NR - 1) / NR;
    const int in_place_a = m->in_place_a, in_place_b = m->in_place_b;
    const float alpha = m->alpha;
    const float *const *brows = (const float *const *)bpack;
    float *own_panel = ws->own_panel, *edge = ws->edge;
    const float **arows = ws->arows;
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
                if (ws->own_jr != jr) kn_gemm_pack_b(own_panel, B, pc, kc, j0, cols, NR, impl);
                ws->own_jr = jr;
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
                    arows[i] = kn_shift_row(A, i0 + (i < rows ? i : 0)) +
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
}
