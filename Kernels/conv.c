// Conv2d forward, backward-data and backward-weights as GEMMs over the "column" matrix
// col (C*R*S, N*P*Q) of the batch. Three algorithms, chosen per pass by kn_conv2d_plan:
//
// IMPLICIT and IMPLICIT_BATCH (stride 1; conv_shift.c): col is never written; the GEMM reads
// shifted runs of the zero-padded input, laid out as padded images or (narrow planes) with the
// batch innermost. kn_conv2d_plan picks, per pass, an implicit GEMM where it pays
// (kn_conv2d_choose_implicit) and im2col elsewhere; a caller may force one for all passes.
//
// IM2COL (any stride; this file): col written per chunk of images into scratch, then a dense GEMM:
//   forward          y_n (K, PQ)     = w (K, CRS) . col_n
//   backward-data    dcol (CRS, PQ)  = w^T . dy_n, then col2im adds dcol into dx_n
//   backward-weights dw (K, CRS)    += dy_n . col_n^T
// Images with PQ >= 256 are one GEMM each, straight into y (no copy of the output). Smaller
// images are taken in chunks of `col_images`, side by side in one wider col
// (CRS, nb*PQ), so late layers (8x8, 2x2) still make GEMMs wide enough to run fast; the
// chunk size comes from the shape alone, so the dw reduction order never depends on threads.
// A 1x1 stride-1 unpadded conv needs no im2col: x_n already is col_n.
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define KN_COL_BUDGET (1u << 22) // floats of col per chunk (16 MiB)
#ifndef KN_COL_WIDTH
#define KN_COL_WIDTH 512 // GEMM columns an im2col chunk aims for
#endif
#ifndef KN_SHIFT_CHUNK
// floats of padded input + padded output per implicit chunk: small enough that a chunk stays
// in cache between padding, the GEMM and cropping (docs/ARCHITECTURE.md, Convolution)
#define KN_SHIFT_CHUNK (1u << 19)
#endif

// Chunks across the team, for both algorithms (contract in internal.h): each thread runs its
// own run of chunks alone, in the caller's ISA, so no barrier falls inside a chunk.
void kn_run_items(int items, int slots, float *first_slot, size_t slot_floats, kn_item_fn fn,
                  const void *pass) {
    const int team = kn_team_enter();
    if (team < 2 || team > items || team > slots) {
        kn_team_exit();
        for (int i = 0; i < items; i++) fn(pass, i, first_slot);
        return;
    }
    const kn_isa isa = kn_isa_active();
#pragma omp parallel num_threads(team)
    {
        const kn_solo saved = kn_solo_begin(isa);
        float *slot = first_slot + (size_t)omp_get_thread_num() * slot_floats;
        KN_FOR_SHARE(items, i) fn(pass, i, slot);
        kn_solo_end(saved);
    }
    kn_team_exit();
}

// Floats of one chunk of several images: its col matrix and its y/dy matrix (K rows).
static size_t col_chunk_floats(const kn_conv2d *cv, long nb) {
    return ((size_t)cv->C * cv->R * cv->S + cv->K) * kn_chunk_ld(nb * cv->P * cv->Q);
}

static int is_unit_1x1(const kn_conv2d *cv) {
    return cv->R == 1 && cv->S == 1 && cv->stride_h == 1 && cv->stride_w == 1 &&
           cv->pad_h == 0 && cv->pad_w == 0;
}

kn_status kn_conv2d_plan(kn_conv2d *cv) {
    if (!cv) return KN_EINVAL;
    if (cv->N < 1 || cv->C < 1 || cv->H < 1 || cv->W < 1 || cv->K < 1 || cv->R < 1 ||
        cv->S < 1 || cv->stride_h < 1 || cv->stride_w < 1 || cv->pad_h < 0 || cv->pad_w < 0 ||
        cv->dil_h < 1 || cv->dil_w < 1)
        return KN_EINVAL;
    const long eff_r = (long)cv->dil_h * (cv->R - 1) + 1, eff_s = (long)cv->dil_w * (cv->S - 1) + 1;
    const long span_h = (long)cv->H + 2L * cv->pad_h, span_w = (long)cv->W + 2L * cv->pad_w;
    if (eff_r > span_h || eff_s > span_w) return KN_ESHAPE;
    const long P = (span_h - eff_r) / cv->stride_h + 1, Q = (span_w - eff_s) / cv->stride_w + 1;
    // every tensor and GEMM dimension must stay within int range
    const double lim = (double)INT_MAX;
    const double crs = (double)cv->C * cv->R * cv->S;
    if ((double)cv->N * cv->C * cv->H * cv->W > lim || (double)cv->N * cv->K * P * Q > lim ||
        (double)cv->K * crs > lim || crs * P * Q > lim)
        return KN_EINVAL;
    if (cv->algo != KN_CONV_AUTO && cv->algo != KN_CONV_IMPLICIT && cv->algo != KN_CONV_IM2COL &&
        cv->algo != KN_CONV_IMPLICIT_BATCH)
        return KN_EINVAL;
    const int unit_stride = cv->stride_h == 1 && cv->stride_w == 1;
    if ((cv->algo == KN_CONV_IMPLICIT || cv->algo == KN_CONV_IMPLICIT_BATCH) && !unit_stride)
        return KN_EINVAL; // needs stride 1
    cv->P = (int)P;
    cv->Q = (int)Q;
    // per pass: a requested algorithm wins; AUTO takes the implicit GEMM where it pays
    const int auto_ = cv->algo == KN_CONV_AUTO;
    const kn_conv_algo fixed = auto_ ? KN_CONV_IM2COL : cv->algo;
    cv->algo_forward = cv->algo_backward_weights = cv->algo_backward_data = fixed;
    if (auto_ && unit_stride) {
        cv->algo_forward = kn_conv2d_choose_implicit(cv, KN_PASS_FORWARD);
        cv->algo_backward_data = kn_conv2d_choose_implicit(cv, KN_PASS_BACKWARD_DATA);
        cv->algo_backward_weights = kn_conv2d_choose_implicit(cv, KN_PASS_BACKWARD_WEIGHTS);
    }
    // the transposed conv needs its padding d(R-1) - pad >= 0
    if (cv->pad_h > cv->dil_h * (cv->R - 1) || cv->pad_w > cv->dil_w * (cv->S - 1))
        cv->algo_backward_data = KN_CONV_IM2COL;

    const size_t limit = cv->scratch_limit ? cv->scratch_limit : KN_COL_BUDGET;
    const long PQ = P * Q, CRS = (long)crs;
    long nb = PQ >= 256 ? 1 : (KN_COL_WIDTH + PQ - 1) / PQ;
    const long fit = (long)limit / ((CRS + cv->K) * PQ);
    if (nb > fit) nb = fit;
    if (nb > cv->N) nb = cv->N;
    if (nb < 1) nb = 1;
    cv->col_images = (int)nb;
    cv->shift_images = cv->shift_groups = cv->shift_slots = cv->col_slots = 1;
    const int uses_col = cv->algo_forward == KN_CONV_IM2COL ||
                         cv->algo_backward_data == KN_CONV_IM2COL ||
                         cv->algo_backward_weights == KN_CONV_IM2COL;
    const size_t col_chunk = !uses_col ? 0
                             : nb > 1  ? col_chunk_floats(cv, nb)
                             : is_unit_1x1(cv) ? 0 : (size_t)(CRS * PQ);
    // backward-data's chunks go across the team (see backward_data_im2col): a slot per core,
    // as many as the chunks and the limit allow
    if (cv->algo_backward_data == KN_CONV_IM2COL && nb > 1) {
        const long chunks = (cv->N + nb - 1) / nb;
        cv->col_slots = (int)(chunks < kn_num_cores() ? chunks : kn_num_cores());
        while (cv->col_slots > 1 && cv->col_slots * col_chunk > limit) cv->col_slots--;
    }
    const size_t col_scratch = cv->col_slots * col_chunk;
    const size_t shift_scratch = kn_conv2d_plan_shift(
        cv, cv->scratch_limit && cv->scratch_limit < KN_SHIFT_CHUNK ? cv->scratch_limit : KN_SHIFT_CHUNK, limit);
    cv->scratch_floats = col_scratch > shift_scratch ? col_scratch : shift_scratch;
    return KN_OK;
}

// The output columns [lo, hi) whose input column q * stride + dw lies inside the image (the
// rest read padding), so the copy loops need no bounds check per element.
KN_BODY void valid_columns(const kn_conv2d *cv, int dw, int *lo, int *hi) {
    const int sw = cv->stride_w;
    int l = dw >= 0 ? 0 : (-dw + sw - 1) / sw;
    int h = cv->W - dw <= 0 ? 0 : (cv->W - dw + sw - 1) / sw;
    if (h > cv->Q) h = cv->Q;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// The input offset in the plane of each kernel tap (r, s) and output position (p, q), -1
// where it reads padding; the caller frees it (NULL without memory: callers fall back). Used
// by the im2col view, and by im2col / col2im for planes narrower than 16 (the 8x8 to 2x2
// layers), where a loop per output row ran 2 to 8 iterations.
static int *im2col_taps(const kn_conv2d *cv) {
    const size_t PQ = (size_t)cv->P * cv->Q;
    int *at = malloc(sizeof(int) * cv->R * cv->S * PQ);
    if (!at) return NULL;
    for (int r = 0; r < cv->R; r++)
        for (int s = 0; s < cv->S; s++)
            for (int p = 0; p < cv->P; p++)
                for (int q = 0; q < cv->Q; q++) {
                    const int ih = p * cv->stride_h + r * cv->dil_h - cv->pad_h;
                    const int iw = q * cv->stride_w + s * cv->dil_w - cv->pad_w;
                    const int inside = ih >= 0 && ih < cv->H && iw >= 0 && iw < cv->W;
                    at[((size_t)r * cv->S + s) * PQ + (size_t)p * cv->Q + q] =
                        inside ? ih * cv->W + iw : -1;
                }
    return at;
}

// The taps for im2col and col2im where planes are narrower than 16, else NULL (row loops).
static int *small_plane_taps(const kn_conv2d *cv) { return cv->Q < 16 ? im2col_taps(cv) : NULL; }

// (row, image) items [lo, hi) of col (CRS, nb*PQ) for images [n0, n0+nb). Row (c, r, s),
// column (image, p, q).
KN_BODY void im2col_items(const kn_conv2d *cv, float *col, size_t ld, const float *x, int n0,
                          int nb, size_t lo, size_t hi) {
    const int C = cv->C, H = cv->H, W = cv->W, R = cv->R, S = cv->S, P = cv->P, Q = cv->Q;
    const int sw = cv->stride_w;
    const size_t PQ = (size_t)P * Q;
    for (size_t item = lo; item < hi; item++) {
        const int row = (int)(item / nb), nn = (int)(item % nb);
        const int c = row / (R * S), r = row / S % R, s = row % S;
        const float *xc = x + ((size_t)(n0 + nn) * C + c) * H * W;
        float *dst = col + (size_t)row * ld + (size_t)nn * PQ;
        const int dw = s * cv->dil_w - cv->pad_w, dh = r * cv->dil_h - cv->pad_h;
        int q0, q1;
        valid_columns(cv, dw, &q0, &q1);
        for (int p = 0; p < P; p++) {
            const int ih = p * cv->stride_h + dh;
            float *d = dst + (size_t)p * Q;
            if (ih < 0 || ih >= H) {
                for (int q = 0; q < Q; q++) d[q] = 0.0f;
                continue;
            }
            const float *xr = xc + (size_t)ih * W;
            for (int q = 0; q < q0; q++) d[q] = 0.0f;
            for (int q = q0; q < q1; q++) d[q] = xr[q * sw + dw];
            for (int q = q1; q < Q; q++) d[q] = 0.0f;
        }
    }
}
KN_BY_ISA(im2col_items,
          (const kn_conv2d *cv, float *col, size_t ld, const float *x, int n0, int nb, size_t lo,
           size_t hi),
          (cv, col, ld, x, n0, nb, lo, hi))

// The same items for small planes: each is one gather over PQ through the taps `at`.
KN_BODY void im2col_items_small(const kn_conv2d *cv, const int *at, float *col, size_t ld,
                                const float *x, int n0, int nb, size_t lo, size_t hi) {
    const int C = cv->C, RS = cv->R * cv->S;
    const size_t PQ = (size_t)cv->P * cv->Q, HW = (size_t)cv->H * cv->W;
    for (size_t item = lo; item < hi; item++) {
        const int row = (int)(item / nb), nn = (int)(item % nb);
        const float *xc = x + ((size_t)(n0 + nn) * C + row / RS) * HW;
        const int *tap = at + (size_t)(row % RS) * PQ;
        float *d = col + (size_t)row * ld + (size_t)nn * PQ;
        for (size_t i = 0; i < PQ; i++) d[i] = tap[i] >= 0 ? xc[tap[i]] : 0.0f;
    }
}
KN_BY_ISA(im2col_items_small,
          (const kn_conv2d *cv, const int *at, float *col, size_t ld, const float *x, int n0,
           int nb, size_t lo, size_t hi),
          (cv, at, col, ld, x, n0, nb, lo, hi))

// col (CRS, nb*PQ; row stride ld) of images [n0, n0+nb), split over (row, image) items: each
// thread writes whole runs of col
static void im2col(const kn_conv2d *cv, float *col, size_t ld, const float *x, int n0, int nb) {
    const size_t items = (size_t)cv->C * cv->R * cv->S * nb;
    const int parallel = items * cv->P * cv->Q > KN_PAR_MIN;
    int *at = small_plane_taps(cv);
    if (at)
        KN_PARALLEL_RANGES(items, parallel, im2col_items_small, (cv, at, col, ld, x, n0, nb, lo, hi));
    else
        KN_PARALLEL_RANGES(items, parallel, im2col_items, (cv, col, ld, x, n0, nb, lo, hi));
    free(at);
}

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

// dx += col2im(dcol) over (image, channel) planes [lo, hi) of images [n0, n0+nb): a thread
// owns whole planes and adds into each in the same (r, s, p, q) order whatever the team size.
// With `at` (small planes; see im2col_taps) each tap is one scatter over PQ.
KN_BODY void col2im_planes(const kn_conv2d *cv, const int *at, float *dx, const float *dcol,
                           size_t ld, int n0, int nb, size_t lo, size_t hi) {
    const int C = cv->C, H = cv->H, W = cv->W, R = cv->R, S = cv->S, P = cv->P, Q = cv->Q;
    const int sw = cv->stride_w;
    const size_t PQ = (size_t)P * Q;
    for (size_t plane = lo; plane < hi; plane++) {
        const int nn = (int)(plane / C), c = (int)(plane % C);
        float *dxc = dx + ((size_t)(n0 + nn) * C + c) * H * W;
        for (int r = 0; r < R; r++)
            for (int s = 0; s < S; s++) {
                const float *src = dcol + ((size_t)(c * R + r) * S + s) * ld + nn * PQ;
                if (at) {
                    const int *tap = at + ((size_t)r * S + s) * PQ;
                    for (size_t i = 0; i < PQ; i++)
                        if (tap[i] >= 0) dxc[tap[i]] += src[i];
                    continue;
                }
                const int dh = r * cv->dil_h - cv->pad_h, dw = s * cv->dil_w - cv->pad_w;
                int q0, q1;
                valid_columns(cv, dw, &q0, &q1);
                for (int p = 0; p < P; p++) {
                    const int ih = p * cv->stride_h + dh;
                    if (ih < 0 || ih >= H) continue;
                    float *row = dxc + (size_t)ih * W;
                    const float *sr = src + (size_t)p * Q;
                    for (int q = q0; q < q1; q++) row[q * sw + dw] += sr[q];
                }
            }
    }
}
KN_BY_ISA(col2im_planes,
          (const kn_conv2d *cv, const int *at, float *dx, const float *dcol, size_t ld, int n0,
           int nb, size_t lo, size_t hi),
          (cv, at, dx, dcol, ld, n0, nb, lo, hi))

static void col2im_add(const kn_conv2d *cv, float *dx, const float *dcol, size_t ld, int n0,
                       int nb) {
    const size_t planes = (size_t)nb * cv->C;
    int *at = small_plane_taps(cv);
    KN_PARALLEL_RANGES(planes, planes * cv->R * cv->S * cv->P * cv->Q > KN_PAR_MIN,
                       col2im_planes, (cv, at, dx, dcol, ld, n0, nb, lo, hi));
    free(at);
}

// t (K, nb*PQ; row stride ld) <-> y (nb images of (K, PQ)): the layout change between a
// chunk GEMM and NCHW.
static void chunk_to_nchw(const kn_conv2d *cv, float *y, const float *t, size_t ld,
                          const float *bias, int n0, int nb) {
    const int K = cv->K;
    const size_t PQ = (size_t)cv->P * cv->Q;
    KN_WITH_TEAM(team)
#pragma omp parallel for collapse(2) schedule(static) num_threads(team) \
    if ((size_t)K * nb * PQ > KN_PAR_MIN)
    for (int nn = 0; nn < nb; nn++)
        for (int k = 0; k < K; k++) {
            float *dst = y + ((size_t)(n0 + nn) * K + k) * PQ;
            const float *src = t + (size_t)k * ld + nn * PQ;
            const float b = bias ? bias[k] : 0.0f;
            for (size_t i = 0; i < PQ; i++) dst[i] = src[i] + b;
        }
}

static void nchw_to_chunk(const kn_conv2d *cv, float *t, size_t ld, const float *dy, int n0,
                          int nb) {
    const int K = cv->K;
    const size_t PQ = (size_t)cv->P * cv->Q;
    KN_WITH_TEAM(team)
#pragma omp parallel for collapse(2) schedule(static) num_threads(team) \
    if ((size_t)K * nb * PQ > KN_PAR_MIN)
    for (int k = 0; k < K; k++)
        for (int nn = 0; nn < nb; nn++)
            memcpy(t + (size_t)k * ld + nn * PQ, dy + ((size_t)(n0 + nn) * K + k) * PQ,
                   sizeof(float) * PQ);
}

// The im2col forward pass of planes of 16 outputs and more as one GEMM over the batch: B is
// the im2col view, packed by the GEMM straight from x (no column matrix written and read
// back, the weights packed once per column block instead of once per chunk or image), C the
// NCHW output itself. On 2x2 planes every output tile straddles images and goes through the
// edge tile, which is slower, so those keep chunks. (The stride-1 layers the plan gives the
// implicit GEMM stay there: the view's gathers lose to its shifted runs.)
static int forward_im2col_view(const kn_conv2d *cv, float *y, const float *x, const float *w,
                               const float *bias) {
    int *taps = im2col_taps(cv);
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

static void forward_im2col(const kn_conv2d *cv, float *y, const float *x, const float *w,
                           const float *bias, float *scratch) {
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const int chunk = cv->col_images;
    if (PQ >= 16 && !is_unit_1x1(cv) && forward_im2col_view(cv, y, x, w, bias)) return;
    for (int n0 = 0; n0 < cv->N; n0 += chunk) {
        const int nb = cv->N - n0 < chunk ? cv->N - n0 : chunk;
        if (chunk == 1) {
            float *yn = y + (size_t)n0 * K * PQ;
            const float *col = x + (size_t)n0 * cv->C * cv->H * cv->W;
            if (!is_unit_1x1(cv)) {
                im2col(cv, scratch, PQ, x, n0, 1);
                col = scratch;
            }
            kn_sgemm(0, 0, K, PQ, CRS, 1.0f, w, CRS, col, PQ, 0.0f, yn, PQ);
            if (bias) kn_bias_forward(yn, bias, 1, K, PQ);
        } else {
            const size_t ld = kn_chunk_ld(nb * PQ);
            float *col = scratch, *t = scratch + (size_t)CRS * ld;
            im2col(cv, col, ld, x, n0, nb);
            gemm_rows_in_place(0, K, nb * PQ, CRS, w, CRS, col, t, ld);
            chunk_to_nchw(cv, y, t, ld, bias, n0, nb);
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
    nchw_to_chunk(cv, t, ld, ps->dy, n0, nb);
    gemm_rows_in_place(1, CRS, nb * PQ, K, ps->w, CRS, t, dcol, ld);
    col2im_add(cv, ps->dx, dcol, ld, n0, nb);
}

// Chunks of several images go across the team, each thread running its own chunks alone
// (kn_run_items): no barrier inside a chunk, and the same packing of the weights in all (each
// chunk's, once); see docs/ARCHITECTURE.md, Placement.
static void backward_data_im2col(const kn_conv2d *cv, float *dx, const float *dy, const float *w,
                                 float *scratch) {
    const int K = cv->K, C = cv->C, CRS = C * cv->R * cv->S, PQ = cv->P * cv->Q;
    const size_t HW = (size_t)cv->H * cv->W;
    const int chunk = cv->col_images;
    if (chunk > 1) {
        const backward_data_pass pass = {cv, dx, dy, w};
        kn_run_items((cv->N + chunk - 1) / chunk, cv->col_slots, scratch,
                     col_chunk_floats(cv, chunk), backward_data_chunk, &pass);
        return;
    }
    for (int n0 = 0; n0 < cv->N; n0++) {
        const float *dyn = dy + (size_t)n0 * K * PQ;
        if (is_unit_1x1(cv)) {
            kn_sgemm(1, 0, C, PQ, K, 1.0f, w, CRS, dyn, PQ, 1.0f, dx + n0 * HW * C, PQ);
        } else {
            kn_sgemm(1, 0, CRS, PQ, K, 1.0f, w, CRS, dyn, PQ, 0.0f, scratch, PQ);
            col2im_add(cv, dx, scratch, PQ, n0, 1);
        }
    }
}

static void backward_weights_im2col(const kn_conv2d *cv, float *dw, float *dbias,
                                    const float *dy, const float *x, float *scratch) {
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
            if (!is_unit_1x1(cv)) {
                im2col(cv, scratch, PQ, x, n0, 1);
                col = scratch;
            }
        } else {
            float *t = scratch + (size_t)CRS * L;
            nchw_to_chunk(cv, t, L, dy, n0, nb);
            im2col(cv, scratch, L, x, n0, nb);
            a = t;
            col = scratch;
        }
        kn_sgemm(0, 1, K, CRS, L, 1.0f, a, L, col, L, 1.0f, dw, CRS);
        if (dbias) kn_bias_backward(dbias, a, 1, K, L);
    }
}

// MARK: - Entry points

void kn_conv2d_forward(const kn_conv2d *cv, float *y, const float *x, const float *w,
                       const float *bias, float *scratch) {
    if (cv->algo_forward != KN_CONV_IM2COL) kn_conv2d_forward_shift(cv, y, x, w, bias, scratch);
    else forward_im2col(cv, y, x, w, bias, scratch);
}

void kn_conv2d_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w,
                             float *scratch) {
    if (cv->algo_backward_data != KN_CONV_IM2COL) kn_conv2d_backward_data_shift(cv, dx, dy, w, scratch);
    else backward_data_im2col(cv, dx, dy, w, scratch);
}

void kn_conv2d_backward_weights(const kn_conv2d *cv, float *dw, float *dbias, const float *dy,
                                const float *x, float *scratch) {
    if (cv->algo_backward_weights != KN_CONV_IM2COL)
        kn_conv2d_backward_weights_shift(cv, dw, dbias, dy, x, scratch);
    else backward_weights_im2col(cv, dw, dbias, dy, x, scratch);
}
