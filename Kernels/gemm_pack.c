// GEMM packing: panels of A (MR rows) and B (NR columns) from any view, zero-padded at the
// edges so the micro-kernel needs no edge logic.
#include "internal.h"

#include <stdlib.h>
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

void kn_gemm_pack_a(float *dst, const kn_view *A, int i0, int rows, int p0, int kc, int mr,
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
        // transposed conv, (K, C, R, S) read as (C, K*R*S) (see conv_padded_grid.c). Packed in runs
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

void kn_gemm_pack_b(float *dst, const kn_view *B, int p0, int kc, int j0, int cols, int nr,
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

