// Convolution by im2col (any stride): the column matrix col (C*R*S, N*P*Q) written per chunk
// of images into scratch, then a dense GEMM:
//   forward          y_n (K, PQ)     = w (K, CRS) . col_n
//   backward-data    dcol (CRS, PQ)  = w^T . dy_n, then col2im adds dcol into dx_n
//   backward-weights dw (K, CRS)    += dy_n . col_n^T
// Images with PQ >= col_image_plane are one GEMM each, straight into y (no copy of the
// output). Smaller images are taken in chunks of `col_images`, side by side in one wider col
// (CRS, nb*PQ), so late layers (8x8, 2x2) still make GEMMs wide enough to run fast; the
// chunk size comes from the shape alone, so the dw reduction order never depends on threads.
// A 1x1 stride-1 unpadded conv needs no im2col: x_n already is col_n.
#include "conv_internal.h"

#include <stdlib.h>

// C (M x N) = op(A) (M x K) . B (K x N), B and C with row stride ld, B's rows read in place by the
// micro-kernels: the chunk's col (or dy) was just written, packing it again would be a
// second copy. (A shift view with one plane and no kernel offsets is a dense matrix.)
static void gemm_rows_in_place(int trans_a, int M, int N, int K, const float *A, int lda,
                               const float *B, float *C, size_t ld) {
    const kn_view a = {.kind = trans_a ? KN_VIEW_DENSE_T : KN_VIEW_DENSE, .data = (float *)A, .ld = lda};
    const kn_view b = {.kind = KN_VIEW_SHIFT, .data = (float *)B, .R = 1, .S = 1, .T = N,
                       .cstride = (long)ld, .image = (long)K * (long)ld};
    const kn_view c = {.kind = KN_VIEW_DENSE, .data = C, .ld = (int)ld};
    kn_gemm_views(M, N, K, 1.0f, &a, &b, 0.0f, &c);
}

// The forward pass of planes of col_view_plane outputs and more as one GEMM over the batch: B is
// the im2col view, packed by the GEMM straight from x (no column matrix written and read
// back, the weights packed once per column block instead of once per chunk or image), C the
// NCHW output itself. On 2x2 planes every output tile straddles images and goes through the
// edge tile, which is slower, so those keep chunks. (The stride-1 layers the plan gives the
// implicit GEMM stay there: the view's gathers lose to its shifted runs.)
static int forward_im2col_view(const kn_conv2d *cv, float *y, const float *x, const float *w,
                               const float *bias) {
    int *taps = kn_im2col_taps(cv);
    if (!taps) return 0;
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const kn_view A = {.kind = KN_VIEW_DENSE, .data = (float *)w, .ld = CRS};
    const kn_view B = {.kind = KN_VIEW_IM2COL, .data = (float *)x, .R = cv->R, .S = cv->S,
                       .plane = PQ, .cstride = (long)cv->H * cv->W,
                       .image = (long)cv->C * cv->H * cv->W, .taps = taps};
    const kn_view C = {.kind = KN_VIEW_NCHW, .data = y, .ch = K, .plane = PQ};
    kn_gemm_views(K, cv->N * PQ, CRS, 1.0f, &A, &B, 0.0f, &C);
    if (bias) kn_bias_forward(y, bias, cv->N, K, PQ);
    free(taps);
    return 1;
}

void kn_im2col_forward(const kn_conv2d *cv, float *y, const float *x, const float *w,
                       const float *bias, float *scratch) {
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const int chunk = cv->col_images;
    if (PQ >= cv->tune.col_view_plane && !kn_conv_is_unit_1x1(cv) && forward_im2col_view(cv, y, x, w, bias)) return;
    for (int n0 = 0; n0 < cv->N; n0 += chunk) {
        const int nb = cv->N - n0 < chunk ? cv->N - n0 : chunk;
        if (chunk == 1) {
            float *yn = y + (size_t)n0 * K * PQ;
            const float *col = x + (size_t)n0 * cv->C * cv->H * cv->W;
            if (!kn_conv_is_unit_1x1(cv)) {
                kn_im2col(cv, scratch, PQ, x, n0, 1);
                col = scratch;
            }
            kn_sgemm(0, 0, K, PQ, CRS, 1.0f, w, CRS, col, PQ, 0.0f, yn, PQ);
            if (bias) kn_bias_forward(yn, bias, 1, K, PQ);
        } else {
            const size_t ld = kn_chunk_ld(nb * PQ);
            float *col = scratch, *t = scratch + (size_t)CRS * ld;
            kn_im2col(cv, col, ld, x, n0, nb);
            gemm_rows_in_place(0, K, nb * PQ, CRS, w, CRS, col, t, ld);
            kn_chunk_to_nchw(cv, y, t, ld, bias, n0, nb);
        }
    }
}

typedef struct {
    const kn_conv2d *cv;
    float *dx;
    const float *dy, *w;
} backward_data_pass;

// One chunk of backward-data: dy into the chunk layout, dcol = w^T . dy, col2im into dx.
static void backward_data_chunk(const void *p, int chunk, float *slot) {
    const backward_data_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const int n0 = chunk * cv->col_images;
    const int nb = cv->N - n0 < cv->col_images ? cv->N - n0 : cv->col_images;
    const size_t ld = kn_chunk_ld(nb * PQ);
    float *dcol = slot, *t = slot + (size_t)CRS * ld;
    kn_nchw_to_chunk(cv, t, ld, ps->dy, n0, nb);
    gemm_rows_in_place(1, CRS, nb * PQ, K, ps->w, CRS, t, dcol, ld);
    kn_col2im_add(cv, ps->dx, dcol, ld, n0, nb);
}

// Chunks of several images go across the team, each thread running its own chunks alone
// (kn_run_items): no barrier inside a chunk, and the same packing of the weights in all (each
// chunk's, once); see docs/ARCHITECTURE.md, Placement.
void kn_im2col_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w,
                             float *scratch) {
    const int K = cv->K, C = cv->C, CRS = C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const size_t HW = (size_t)cv->H * cv->W;
    const int chunk = cv->col_images;
    if (chunk > 1) {
        const backward_data_pass pass = {cv, dx, dy, w};
        kn_run_items((cv->N + chunk - 1) / chunk, cv->col_slots, scratch,
                     kn_col_chunk_floats(cv, chunk), backward_data_chunk, &pass);
        return;
    }
    for (int n0 = 0; n0 < cv->N; n0++) {
        const float *dyn = dy + (size_t)n0 * K * PQ;
        if (kn_conv_is_unit_1x1(cv)) {
            kn_sgemm(1, 0, C, PQ, K, 1.0f, w, CRS, dyn, PQ, 1.0f, dx + n0 * HW * C, PQ);
        } else {
            kn_sgemm(1, 0, CRS, PQ, K, 1.0f, w, CRS, dyn, PQ, 0.0f, scratch, PQ);
            kn_col2im_add(cv, dx, scratch, PQ, n0, 1);
        }
    }
}

void kn_im2col_backward_weights(const kn_conv2d *cv, float *dw, float *dbias, const float *dy,
                                const float *x, float *scratch) {
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const int chunk = cv->col_images;
    // images are reduced chunk by chunk in order: the chunk size is fixed by the shape
    for (int n0 = 0; n0 < cv->N; n0 += chunk) {
        const int nb = cv->N - n0 < chunk ? cv->N - n0 : chunk;
        // reduction length of this chunk, and the row stride: col is B^T here, packed by the
        // GEMM, where chunk_ld's padding is slower
        const int L = nb * PQ;
        const float *a, *col;
        if (chunk == 1) {
            a = dy + (size_t)n0 * K * PQ;
            col = x + (size_t)n0 * cv->C * cv->H * cv->W;
            if (!kn_conv_is_unit_1x1(cv)) {
                kn_im2col(cv, scratch, PQ, x, n0, 1);
                col = scratch;
            }
        } else {
            float *t = scratch + (size_t)CRS * L;
            kn_nchw_to_chunk(cv, t, L, dy, n0, nb);
            kn_im2col(cv, scratch, L, x, n0, nb);
            a = t;
            col = scratch;
        }
        kn_sgemm(0, 1, K, CRS, L, 1.0f, a, L, col, L, 1.0f, dw, CRS);
        if (dbias) kn_bias_backward(dbias, a, 1, K, L);
    }
}
