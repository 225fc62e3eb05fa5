// Stride-1 convolution as an implicit GEMM over the zero-padded input ("shift" algorithm).
//
// Pad each image once: xp (C, Hp, Wp). Compute the output on the padded grid: position
// t = oh * Wp + ow for oh < P and ALL ow < Wp (columns ow >= Q are junk and are dropped). Then
// input element (c, oh + r*dh, ow + s*dw) sits at xp[c][t + r*dh*Wp + s*dw]: row (c, r, s) of
// the column matrix is the padded image itself, shifted. The GEMM's B panels are plain
// memcpys of those runs (KN_VIEW_SHIFT), no index arithmetic per element, nothing written out
// but the padded copy, and the whole chunk of images is one GEMM (wide, so threads split it).
//
//   forward          yp (K, nb*T)  = w (K, CRS) . shift(xp),        T = P*Wp, then crop into y
//   backward-data    dxp (C, nb*T') = w' (C, KRS) . shift(dyp),      the transposed conv: dy
//                    padded by d(R-1) - pad, w' = w with (K, C) swapped and (R, S) flipped
//   backward-weights dw^T (CRS, K) += shift(xp) . dyp^T,             dyp = dy on the padded
//                    grid with zeros in the junk columns, so they add nothing
// Images go in chunks fixed by the shape (not the team size): dw sums chunks in order.
#include "internal.h"

#include <string.h>


// Geometry of one padded-grid GEMM: input planes (ch, hp, wp), output grid rows x wp.
typedef struct {
    int ch, hp, wp, rows;
    int top, left; // where the unpadded input sits inside the padded plane
} grid;

static grid forward_grid(const kn_conv2d *cv) {
    return (grid){cv->C, cv->H + 2 * cv->pad_h, cv->W + 2 * cv->pad_w, cv->P, cv->pad_h, cv->pad_w};
}
// The transposed conv of backward-data reads dy padded by d(R-1) - pad and yields H rows.
static grid backward_grid(const kn_conv2d *cv) {
    const int ph = cv->dil_h * (cv->R - 1) - cv->pad_h, pw = cv->dil_w * (cv->S - 1) - cv->pad_w;
    return (grid){cv->K, cv->P + 2 * ph, cv->Q + 2 * pw, cv->H, ph, pw};
}
static size_t slack(const kn_conv2d *cv) { return (size_t)cv->dil_w * (cv->S - 1) + 16; }
KN_BODY size_t plane(grid g) { return (size_t)g.hp * g.wp; }

int kn_conv2d_shift_pays(const kn_conv2d *cv, int out_channels) {
    // The padded grid computes Wp - Q junk columns per output row; im2col instead writes and
    // re-reads the column matrix, a cost that each of the GEMM's rows (output channels)
    // shares. Measured on the WORKLOADS layers (Benchmarks/peers): the padded grid wins while
    // junk fraction x rows <= 16, and loses with under 8 rows (a mostly empty micro-tile).
    const int wp = cv->W + 2 * cv->pad_w;
    return out_channels >= 8 && (long)(wp - cv->Q) * out_channels <= 16L * cv->Q;
}

size_t kn_conv2d_plan_shift(kn_conv2d *cv, size_t limit) {
    const grid f = forward_grid(cv);
    size_t per_image = 0; // padded input + padded-grid output of the largest pass
    if (cv->algo_forward == KN_CONV_IMPLICIT || cv->algo_backward_weights == KN_CONV_IMPLICIT)
        per_image = cv->C * plane(f) + (size_t)cv->K * cv->P * f.wp;
    if (cv->algo_backward_data == KN_CONV_IMPLICIT) {
        const grid b = backward_grid(cv);
        const size_t bwd = cv->K * plane(b) + (size_t)cv->C * cv->H * b.wp;
        if (bwd > per_image) per_image = bwd;
    }
    if (per_image == 0) return 0;
    size_t nb = limit / per_image;
    if (nb > (size_t)cv->N) nb = cv->N;
    if (nb < 1) nb = 1;
    cv->shift_images = (int)nb;
    // backward-data's flipped weights, backward-weights' dw^T: K x CRS either way
    const size_t extra = cv->algo_backward_data == KN_CONV_IMPLICIT ||
                                 cv->algo_backward_weights == KN_CONV_IMPLICIT
                             ? (size_t)cv->K * cv->C * cv->R * cv->S : 0;
    return nb * per_image + slack(cv) + extra;
}

// Planes [lo, hi) of dst (nb, ch, g.hp, g.wp) = images [n0, n0+nb) of src (N, ch, h, w)
// placed at (top, left) in zero frames. Loops, not memset/memcpy: rows are 8 to 34 floats.
KN_BODY void pad_planes(float *dst, const float *src, int n0, grid g, int h, int w, size_t lo,
                        size_t hi) {
    const size_t pl = plane(g);
    for (size_t i = lo; i < hi; i++) {
        const size_t n = i / g.ch, c = i % g.ch;
        float *d = dst + i * pl;
        const float *s = src + ((n0 + n) * g.ch + c) * h * w;
        for (size_t j = 0; j < (size_t)g.top * g.wp; j++) d[j] = 0.0f;
        for (int r = 0; r < h; r++) {
            float *row = d + (size_t)(g.top + r) * g.wp;
            const float *in = s + (size_t)r * w;
            for (int j = 0; j < g.left; j++) row[j] = 0.0f;
            for (int j = 0; j < w; j++) row[g.left + j] = in[j];
            for (int j = g.left + w; j < g.wp; j++) row[j] = 0.0f;
        }
        for (size_t j = (size_t)(g.top + h) * g.wp; j < pl; j++) d[j] = 0.0f;
    }
}
KN_BY_ISA(pad_planes,
          (float *dst, const float *src, int n0, grid g, int h, int w, size_t lo, size_t hi),
          (dst, src, n0, g, h, w, lo, hi))

// dst (nb, ch, g.hp, g.wp) = images [n0, n0+nb) of src padded (pad_planes); `extra` floats
// after the chunk are zeroed too (the last shifted run overhangs).
static void pad_chunk(float *dst, const float *src, int n0, int nb, grid g, int h, int w,
                      size_t extra) {
    const size_t planes = (size_t)nb * g.ch;
    KN_PARALLEL_RANGES(planes, planes * plane(g) > KN_PAR_MIN, pad_planes,
                       (dst, src, n0, g, h, w, lo, hi));
    memset(dst + planes * plane(g), 0, sizeof(float) * extra);
}

// Planes [lo, hi) of dst (N, ch, rows, cols) images [n0, ...) = (or +=) the first `cols` of
// every `ld`-long row of src (nb, ch, rows, ld), plus bias (ch) when given.
KN_BODY void crop_planes(float *dst, const float *src, int n0, int ch, int rows, int cols, int ld,
                         const float *bias, int accumulate, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        float *d = dst + ((size_t)n0 * ch + i) * rows * cols;
        const float *s = src + i * rows * ld;
        const float b = bias ? bias[i % ch] : 0.0f;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++)
                d[(size_t)r * cols + j] = (accumulate ? d[(size_t)r * cols + j] : 0.0f) +
                                           s[(size_t)r * ld + j] + b;
    }
}
KN_BY_ISA(crop_planes,
          (float *dst, const float *src, int n0, int ch, int rows, int cols, int ld,
           const float *bias, int accumulate, size_t lo, size_t hi),
          (dst, src, n0, ch, rows, cols, ld, bias, accumulate, lo, hi))

static void crop_chunk(float *dst, const float *src, int n0, int nb, int ch, int rows, int cols,
                       int ld, const float *bias, int accumulate) {
    const size_t planes = (size_t)nb * ch;
    KN_PARALLEL_RANGES(planes, planes * rows * cols > KN_PAR_MIN, crop_planes,
                       (dst, src, n0, ch, rows, cols, ld, bias, accumulate, lo, hi));
}

static kn_view shift_view(kn_view_kind kind, const float *xp, const kn_conv2d *cv, grid g) {
    return (kn_view){.kind = kind, .data = (float *)xp, .R = cv->R, .S = cv->S,
                     .rstep = cv->dil_h * g.wp, .sstep = cv->dil_w, .T = g.rows * g.wp,
                     .cstride = (long)plane(g), .image = (long)(g.ch * plane(g))};
}

void kn_conv2d_forward_shift(const kn_conv2d *cv, float *y, const float *x, const float *w,
                             const float *bias, float *scratch) {
    const grid g = forward_grid(cv);
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, T = cv->P * g.wp, chunk = cv->shift_images;
    float *xp = scratch, *yp = scratch + (size_t)chunk * cv->C * plane(g) + slack(cv);
    for (int n0 = 0; n0 < cv->N; n0 += chunk) {
        const int nb = cv->N - n0 < chunk ? cv->N - n0 : chunk;
        pad_chunk(xp, x, n0, nb, g, cv->H, cv->W, slack(cv));
        const kn_view A = {.kind = KN_VIEW_DENSE, .data = (float *)w, .ld = CRS};
        const kn_view B = shift_view(KN_VIEW_SHIFT, xp, cv, g);
        const kn_view C = {.kind = KN_VIEW_NCHW, .data = yp, .ch = K, .plane = T};
        kn_gemm_views(K, nb * T, CRS, 1.0f, &A, &B, 0.0f, &C);
        crop_chunk(y, yp, n0, nb, K, cv->P, cv->Q, g.wp, bias, 0);
    }
}

void kn_conv2d_backward_data_shift(const kn_conv2d *cv, float *dx, const float *dy,
                                   const float *w, float *scratch) {
    const grid g = backward_grid(cv);
    const int K = cv->K, C = cv->C, R = cv->R, S = cv->S, KRS = K * R * S;
    const int T = cv->H * g.wp, chunk = cv->shift_images;
    float *wt = scratch, *dyp = wt + (size_t)KRS * C;
    float *dxp = dyp + (size_t)chunk * K * plane(g) + slack(cv);
    // w' (C, K, R, S): w with its channel axes swapped and kernel axes flipped
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++)
                    wt[((c * K + k) * R + r) * S + s] = w[((k * C + c) * R + (R - 1 - r)) * S + (S - 1 - s)];
    for (int n0 = 0; n0 < cv->N; n0 += chunk) {
        const int nb = cv->N - n0 < chunk ? cv->N - n0 : chunk;
        pad_chunk(dyp, dy, n0, nb, g, cv->P, cv->Q, slack(cv));
        const kn_view A = {.kind = KN_VIEW_DENSE, .data = wt, .ld = KRS};
        const kn_view B = shift_view(KN_VIEW_SHIFT, dyp, cv, g);
        const kn_view Cv = {.kind = KN_VIEW_NCHW, .data = dxp, .ch = C, .plane = T};
        kn_gemm_views(C, nb * T, KRS, 1.0f, &A, &B, 0.0f, &Cv);
        crop_chunk(dx, dxp, n0, nb, C, cv->H, cv->W, g.wp, NULL, 1);
    }
}

void kn_conv2d_backward_weights_shift(const kn_conv2d *cv, float *dw, float *dbias,
                                      const float *dy, const float *x, float *scratch) {
    const grid g = forward_grid(cv);
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, T = cv->P * g.wp, chunk = cv->shift_images;
    float *xp = scratch, *dyp = scratch + (size_t)chunk * cv->C * plane(g) + slack(cv);
    float *dwt = dyp + (size_t)chunk * K * T; // dw^T (CRS, K), summed over the chunks
    // dy on the padded grid: P rows of Wp, the junk columns zero
    const grid dyg = {K, cv->P, g.wp, cv->P, 0, 0};
    for (int n0 = 0; n0 < cv->N; n0 += chunk) {
        const int nb = cv->N - n0 < chunk ? cv->N - n0 : chunk;
        pad_chunk(xp, x, n0, nb, g, cv->H, cv->W, slack(cv));
        pad_chunk(dyp, dy, n0, nb, dyg, cv->P, cv->Q, 0);
        // dw^T (CRS, K) += shift(xp) . dyp^T: the shifted runs are A's rows, read in place,
        // and only dy (K rows, 1/9 of the column matrix for a 3x3 conv) is packed
        const kn_view A = shift_view(KN_VIEW_SHIFT, xp, cv, g);
        const kn_view B = {.kind = KN_VIEW_NCHW_T, .data = dyp, .ch = K, .plane = T};
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = dwt, .ld = K};
        kn_gemm_views(CRS, K, nb * T, 1.0f, &A, &B, n0 == 0 ? 0.0f : 1.0f, &C);
        if (dbias) kn_bias_backward(dbias, dy + (size_t)n0 * K * cv->P * cv->Q, nb, K, cv->P * cv->Q);
    }
    for (int k = 0; k < K; k++) // dw += dw^T, transposed once at the end
        for (int i = 0; i < CRS; i++) dw[(size_t)k * CRS + i] += dwt[(size_t)i * K + k];
}
