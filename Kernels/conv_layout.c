// Data movement the convolution algorithms share: zero-padding and cropping planes (the
// padded grid), the same with the images innermost (batch innermost), im2col and col2im, the
// layout changes between a chunk's GEMM and NCHW, and summing backward-weights' partials.
// Each runs on the calling thread's team, every thread on whole planes or rows, so the bits
// never depend on the team size.
#include "conv_internal.h"

#include <stdlib.h>
#include <string.h>

// MARK: - Padding and cropping (implicit GEMMs)

// Planes [lo, hi) of dst (nb, ch, g.hp, g.wp) = images [n0, n0+nb) of src (N, ch, h, w)
// placed at (top, left) in zero frames. Loops, not memset/memcpy: rows are 8 to 34 floats.
KN_BODY void pad_planes(float *dst, const float *src, int n0, kn_grid g, int h, int w, size_t lo,
                        size_t hi) {
    const size_t pl = kn_grid_plane(g);
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
          (float *dst, const float *src, int n0, kn_grid g, int h, int w, size_t lo, size_t hi),
          (dst, src, n0, g, h, w, lo, hi))

// dst (nb, ch, g.hp, g.wp) = images [n0, n0+nb) of src padded (pad_planes); `extra` floats
// after the chunk are zeroed too (the last shifted run overhangs).
void kn_pad_chunk(float *dst, const float *src, int n0, int nb, kn_grid g, int h, int w, size_t extra) {
    const size_t planes = (size_t)nb * g.ch;
    KN_PARALLEL_RANGES(planes, planes * kn_grid_plane(g) > KN_PAR_MIN, pad_planes,
                       (dst, src, n0, g, h, w, lo, hi));
    memset(dst + planes * kn_grid_plane(g), 0, sizeof(float) * extra);
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

void kn_crop_chunk(float *dst, const float *src, int n0, int nb, int ch, int rows, int cols, int ld,
                   const float *bias, int accumulate) {
    const size_t planes = (size_t)nb * ch;
    KN_PARALLEL_RANGES(planes, planes * rows * cols > KN_PAR_MIN, crop_planes,
                       (dst, src, n0, ch, rows, cols, ld, bias, accumulate, lo, hi));
}

// Channels [lo, hi) of dst (ch, hp, wp, nb) = images [n0, n0+nb) of src (N, ch, h, w), the
// image innermost, at (top, left) in zero frames. (A transpose per channel, in L1: a channel
// of a chunk is 13 KiB on vgg11's 8x8 layers.)
KN_BODY void pad_inner_planes(float *dst, const float *src, int n0, int nb, kn_grid g, int h, int w,
                              size_t lo, size_t hi) {
    const size_t row = (size_t)g.wp * nb, pl = (size_t)g.hp * row, hw = (size_t)h * w;
    for (size_t c = lo; c < hi; c++) {
        float *d = dst + c * pl;
        for (size_t j = 0; j < (size_t)g.top * row; j++) d[j] = 0.0f;
        for (int r = 0; r < h; r++) {
            float *dr = d + (size_t)(g.top + r) * row;
            for (size_t j = 0; j < (size_t)g.left * nb; j++) dr[j] = 0.0f;
            for (size_t j = (size_t)(g.left + w) * nb; j < row; j++) dr[j] = 0.0f;
        }
        for (size_t j = (size_t)(g.top + h) * row; j < pl; j++) d[j] = 0.0f;
        for (int n = 0; n < nb; n++) {
            const float *sn = src + ((size_t)(n0 + n) * g.ch + c) * hw;
            float *dn = d + (size_t)g.top * row + (size_t)g.left * nb + n;
            for (int r = 0; r < h; r++)
                for (int j = 0; j < w; j++) dn[(size_t)r * row + (size_t)j * nb] = sn[(size_t)r * w + j];
        }
    }
}
KN_BY_ISA(pad_inner_planes,
          (float *dst, const float *src, int n0, int nb, kn_grid g, int h, int w, size_t lo, size_t hi),
          (dst, src, n0, nb, g, h, w, lo, hi))

void kn_pad_inner(float *dst, const float *src, int n0, int nb, kn_grid g, int h, int w) {
    KN_PARALLEL_RANGES((size_t)g.ch, (size_t)g.ch * kn_grid_plane(g) * nb > KN_PAR_MIN, pad_inner_planes,
                       (dst, src, n0, nb, g, h, w, lo, hi));
}

// Channels [lo, hi) of dst (N, ch, pq) images [n0, n0+nb) = (or +=) src (ch, pq * nb; row
// stride ld), the image innermost, plus bias (ch) when given.
KN_BODY void unbatch_planes(float *dst, const float *src, size_t ld, int n0, int nb, int ch,
                            size_t pq, const float *bias, int accumulate, size_t lo, size_t hi) {
    for (size_t k = lo; k < hi; k++) {
        const float *sk = src + k * ld;
        const float b = bias ? bias[k] : 0.0f;
        for (int n = 0; n < nb; n++) {
            float *d = dst + ((size_t)(n0 + n) * ch + k) * pq;
            for (size_t i = 0; i < pq; i++) d[i] = (accumulate ? d[i] : 0.0f) + sk[i * nb + n] + b;
        }
    }
}
KN_BY_ISA(unbatch_planes,
          (float *dst, const float *src, size_t ld, int n0, int nb, int ch, size_t pq,
           const float *bias, int accumulate, size_t lo, size_t hi),
          (dst, src, ld, n0, nb, ch, pq, bias, accumulate, lo, hi))

void kn_unbatch(float *dst, const float *src, size_t ld, int n0, int nb, int ch, size_t pq,
                const float *bias, int accumulate) {
    KN_PARALLEL_RANGES((size_t)ch, pq * nb * ch > KN_PAR_MIN, unbatch_planes,
                       (dst, src, ld, n0, nb, ch, pq, bias, accumulate, lo, hi));
}

// MARK: - Summing backward-weights' partials

// dw (K, CRS) += the partials dw^T (CRS, K) of the groups, in group order; blocks [lo, hi) of
// tb rows of dw. Through a tb-square tile in L1: the sums run along the partials' rows and
// the adds along dw's, both contiguous (a loop along either alone missed on every element of
// the other).
KN_BODY void add_partials(float *dw, const float *partials, int groups, int K, int CRS, int tb,
                          size_t lo, size_t hi) {
    float tile[KN_TRANSPOSE_TILE_MAX][KN_TRANSPOSE_TILE_MAX], sum[KN_TRANSPOSE_TILE_MAX];
    const size_t part = (size_t)CRS * K;
    for (size_t b = lo; b < hi; b++) {
        const int k0 = (int)b * tb, kn = K - k0 < tb ? K - k0 : tb;
        for (int i0 = 0; i0 < CRS; i0 += tb) {
            const int in = CRS - i0 < tb ? CRS - i0 : tb;
            for (int i = 0; i < in; i++) {
                const float *p = partials + (size_t)(i0 + i) * K + k0;
                for (int k = 0; k < kn; k++) sum[k] = p[k];
                for (int g = 1; g < groups; g++)
                    for (int k = 0; k < kn; k++) sum[k] += p[g * part + k];
                for (int k = 0; k < kn; k++) tile[k][i] = sum[k];
            }
            for (int k = 0; k < kn; k++) {
                float *d = dw + (size_t)(k0 + k) * CRS + i0;
                for (int i = 0; i < in; i++) d[i] += tile[k][i];
            }
        }
    }
}
KN_BY_ISA(add_partials,
          (float *dw, const float *partials, int groups, int K, int CRS, int tb, size_t lo, size_t hi),
          (dw, partials, groups, K, CRS, tb, lo, hi))

void kn_add_partials(const kn_conv2d *cv, float *dw, const float *partials, int groups) {
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, tb = cv->tune.transpose_tile;
    KN_PARALLEL_RANGES((size_t)(K + tb - 1) / tb, (size_t)K * CRS * groups > KN_PAR_MIN, add_partials,
                       (dw, partials, groups, K, CRS, tb, lo, hi));
}

// MARK: - im2col and col2im, chunk layouts

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

// The taps (conv_internal.h): used by the im2col view, and by im2col / col2im for narrow
// planes (the 8x8 to 2x2 layers), where a loop per output row ran 2 to 8 iterations.
int *kn_im2col_taps(const kn_conv2d *cv) {
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

// The taps for im2col and col2im where planes are narrow, else NULL (row loops).
static int *small_plane_taps(const kn_conv2d *cv) { return cv->Q < cv->tune.narrow_plane ? kn_im2col_taps(cv) : NULL; }

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
void kn_im2col(const kn_conv2d *cv, float *col, size_t ld, const float *x, int n0, int nb) {
    const size_t items = (size_t)cv->C * cv->R * cv->S * nb;
    const int parallel = items * cv->P * cv->Q > KN_PAR_MIN;
    int *at = small_plane_taps(cv);
    if (at)
        KN_PARALLEL_RANGES(items, parallel, im2col_items_small, (cv, at, col, ld, x, n0, nb, lo, hi));
    else
        KN_PARALLEL_RANGES(items, parallel, im2col_items, (cv, col, ld, x, n0, nb, lo, hi));
    free(at);
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

void kn_col2im_add(const kn_conv2d *cv, float *dx, const float *dcol, size_t ld, int n0, int nb) {
    const size_t planes = (size_t)nb * cv->C;
    int *at = small_plane_taps(cv);
    KN_PARALLEL_RANGES(planes, planes * cv->R * cv->S * cv->P * cv->Q > KN_PAR_MIN,
                       col2im_planes, (cv, at, dx, dcol, ld, n0, nb, lo, hi));
    free(at);
}

// t (K, nb*PQ; row stride ld) <-> y (nb images of (K, PQ)): the layout change between a
// chunk GEMM and NCHW.
void kn_chunk_to_nchw(const kn_conv2d *cv, float *y, const float *t, size_t ld, const float *bias,
                      int n0, int nb) {
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

void kn_nchw_to_chunk(const kn_conv2d *cv, float *t, size_t ld, const float *dy, int n0, int nb) {
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

