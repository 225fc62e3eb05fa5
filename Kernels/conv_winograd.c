// 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016):
// each 2x2 output tile comes from a 4x4 input tile with 16 multiplies per channel pair
// instead of 36, so the GEMMs do 2.25x fewer FLOPs than a direct or implicit convolution.
//
//   forward          V = B^T d B (each 4x4 input tile), U = G g G^T (each 3x3 kernel), then
//                    16 GEMMs M[xi] (K, T) = U[xi] (K, C) . V[xi] (C, T), and y = A^T m A
//   backward-data    the same on dy, padded by 2 - pad, with the kernels turned 180 degrees
//                    and (K, C) swapped: the transposed convolution is a 3x3 one too
//   backward-weights the transpose of forward: dU[xi] (K, C) = sum over tiles of
//                    (A e A^T)[xi] (K, T) . V[xi]^T, e each 2x2 tile of dy; dw += G^T dU G
//
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
// A^T = [1 1 1 0; 0 1 -1 -1]. T counts the tiles of a chunk of images (the plane's tiles,
// image after image); tiles past the output's edge read zeros and their outputs are dropped.
// Chunks are fixed by the shape, every image's tiles are computed alike, and backward-weights
// sums fixed groups of chunks apart and then in order, so the bits never depend on the team.
#include "conv_internal.h"

#include <string.h>

#define XI 16 // transformed positions of a tile (4x4)

// A plane's tiles: rows x columns of 2x2 output tiles.
static inline int tiles_h(int out_h) { return (out_h + 1) / 2; }
static inline int tiles_w(int out_w) { return (out_w + 1) / 2; }

// One forward-shaped pass: a 3x3 convolution of `in` (N, in_ch, in_h, in_w) padded by
// (pad_h, pad_w) into `out` (N, out_ch, out_h, out_w), with the weights transformed into u.
typedef struct {
    const kn_conv2d *cv;
    const float *in;
    int in_ch, in_h, in_w, pad_h, pad_w;
    float *out;
    int out_ch, out_h, out_w;
    const float *u;    // XI x (out_ch, in_ch)
    const float *bias; // out_ch, or NULL
    int accumulate;    // out += rather than =
} wino_pass;

typedef struct {
    const kn_conv2d *cv;
    const float *dy, *x;
    float *partials; // groups x XI x (K, C)
} wino_dw_pass;

// MARK: - Transforms

#define ROW (KN_WINOGRAD_MAX_WIDTH + 4) // a row buffer's floats

// buf[r][j] = plane[y0 + r][j - x0] for r < rows and j < width, zero outside the h x w plane.
KN_BODY void framed_rows(float buf[][ROW], const float *plane, int h, int w, int y0, int x0, int rows, int width) {
    const int lead = x0 < width ? x0 : width, end = x0 + w < width ? x0 + w : width;
    for (int r = 0; r < rows; r++) {
        float *b = buf[r];
        const int y = y0 + r;
        if (y < 0 || y >= h) {
            for (int j = 0; j < width; j++) b[j] = 0.0f;
            continue;
        }
        const float *src = plane + (size_t)y * w - x0;
        for (int j = 0; j < lead; j++) b[j] = 0.0f;
        for (int j = lead; j < end; j++) b[j] = src[j];
        for (int j = end > lead ? end : lead; j < width; j++) b[j] = 0.0f;
    }
}

// Kernels [lo, hi) of the (rows, cols) grid: u[xi][i][j] = (G g G^T)[xi] of kernel (i, j),
// g = w[i][j] as stored, or (transposed, for backward-data) w[j][i] turned 180 degrees.
KN_BODY void weight_transform(float *u, const float *w, int rows, int cols, int transposed, size_t lo,
                              size_t hi) {
    for (size_t e = lo; e < hi; e++) {
        const size_t i = e / cols, j = e % cols;
        const float *src = transposed ? w + (j * rows + i) * 9 : w + e * 9;
        float g[3][3], t[4][3];
        for (int r = 0; r < 3; r++)
            for (int s = 0; s < 3; s++) g[r][s] = transposed ? src[(2 - r) * 3 + 2 - s] : src[r * 3 + s];
        for (int s = 0; s < 3; s++) {
            t[0][s] = g[0][s];
            t[1][s] = 0.5f * (g[0][s] + g[1][s] + g[2][s]);
            t[2][s] = 0.5f * (g[0][s] - g[1][s] + g[2][s]);
            t[3][s] = g[2][s];
        }
        const size_t plane = (size_t)rows * cols;
        for (int r = 0; r < 4; r++) {
            float *d = u + (size_t)r * 4 * plane + e;
            d[0] = t[r][0];
            d[plane] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
            d[2 * plane] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
            d[3 * plane] = t[r][2];
        }
    }
}
KN_BY_ISA(weight_transform, (float *u, const float *w, int rows, int cols, int transposed, size_t lo, size_t hi),
          (u, w, rows, cols, transposed, lo, hi))

// Planes [lo, hi) (image-major, ch each) of a chunk from image n0, each tile transformed into
// v[xi][c][t]: the input's 4x4 windows (padded by pad_h, pad_w) as B^T d B, or (gradient)
// dy's 2x2 tiles as A e A^T, the transpose of output_transform. Each tile row's input rows
// go through a zero-framed row buffer first, so the tiles' loop has no edge cases.
KN_BODY void tile_transform(float *v, size_t ld, const float *in, int n0, int ch, int h, int w, int pad_h,
                            int pad_w, int th, int tw, int gradient, size_t lo, size_t hi) {
    float buf[4][ROW];
    const size_t xi_stride = (size_t)ch * ld;
    for (size_t i = lo; i < hi; i++) {
        const size_t n = i / ch, c = i % ch;
        const float *plane = in + ((size_t)(n0 + n) * ch + c) * h * w;
        float *vc = v + c * ld + n * (size_t)th * tw;
        for (int ty = 0; ty < th; ty++) {
            if (gradient) framed_rows(buf, plane, h, w, 2 * ty, 0, 2, 2 * tw);
            else framed_rows(buf, plane, h, w, 2 * ty - pad_h, pad_w, 4, 2 * tw + 2);
            float *vt = vc + (size_t)ty * tw;
            for (int tx = 0; tx < tw; tx++) {
                float t[4][4], o[4][4];
                for (int j = 0; j < 4; j++) {
                    const float *col = &buf[0][2 * tx + j];
                    if (gradient) { // rows of A (4x2) times e: e0, e0 + e1, e0 - e1, -e1
                        if (j > 1) break;
                        t[0][j] = col[0];
                        t[1][j] = col[0] + col[ROW];
                        t[2][j] = col[0] - col[ROW];
                        t[3][j] = -col[ROW];
                    } else { // B^T d
                        t[0][j] = col[0] - col[2 * ROW];
                        t[1][j] = col[ROW] + col[2 * ROW];
                        t[2][j] = col[2 * ROW] - col[ROW];
                        t[3][j] = col[ROW] - col[3 * ROW];
                    }
                }
                for (int r = 0; r < 4; r++) {
                    if (gradient) {
                        o[r][0] = t[r][0];
                        o[r][1] = t[r][0] + t[r][1];
                        o[r][2] = t[r][0] - t[r][1];
                        o[r][3] = -t[r][1];
                    } else {
                        o[r][0] = t[r][0] - t[r][2];
                        o[r][1] = t[r][1] + t[r][2];
                        o[r][2] = t[r][2] - t[r][1];
                        o[r][3] = t[r][1] - t[r][3];
                    }
                    for (int j = 0; j < 4; j++) vt[(size_t)(4 * r + j) * xi_stride + tx] = o[r][j];
                }
            }
        }
    }
}
KN_BY_ISA(tile_transform,
          (float *v, size_t ld, const float *in, int n0, int ch, int h, int w, int pad_h, int pad_w, int th, int tw,
           int gradient, size_t lo, size_t hi),
          (v, ld, in, n0, ch, h, w, pad_h, pad_w, th, tw, gradient, lo, hi))

// Planes [lo, hi) of the chunk's output from image n0: each tile's 2x2 = A^T m A, plus bias,
// written (or added) where it lies inside the plane.
KN_BODY void output_transform(float *out, const float *m, size_t ld, int n0, int ch, int h, int w, int th,
                              int tw, const float *bias, int accumulate, size_t lo, size_t hi) {
    float rows[2][ROW];
    const size_t xi_stride = (size_t)ch * ld;
    for (size_t i = lo; i < hi; i++) {
        const size_t n = i / ch, k = i % ch;
        float *plane = out + ((size_t)(n0 + n) * ch + k) * h * w;
        const float *mk = m + k * ld + n * (size_t)th * tw;
        const float b = bias ? bias[k] : 0.0f;
        for (int ty = 0; ty < th; ty++) {
            const float *mt = mk + (size_t)ty * tw;
            for (int tx = 0; tx < tw; tx++) {
                float s[2][4];
                for (int j = 0; j < 4; j++) {
                    const float m0 = mt[(size_t)j * xi_stride + tx], m1 = mt[(size_t)(4 + j) * xi_stride + tx],
                                m2 = mt[(size_t)(8 + j) * xi_stride + tx], m3 = mt[(size_t)(12 + j) * xi_stride + tx];
                    s[0][j] = m0 + m1 + m2;
                    s[1][j] = m1 - m2 - m3;
                }
                for (int r = 0; r < 2; r++) {
                    rows[r][2 * tx] = s[r][0] + s[r][1] + s[r][2];
                    rows[r][2 * tx + 1] = s[r][1] - s[r][2] - s[r][3];
                }
            }
            for (int r = 0; r < 2 && 2 * ty + r < h; r++) {
                float *d = plane + (size_t)(2 * ty + r) * w;
                for (int x = 0; x < w; x++) d[x] = (accumulate ? d[x] : 0.0f) + rows[r][x] + b;
            }
        }
    }
}
KN_BY_ISA(output_transform,
          (float *out, const float *m, size_t ld, int n0, int ch, int h, int w, int th, int tw, const float *bias,
           int accumulate, size_t lo, size_t hi),
          (out, m, ld, n0, ch, h, w, th, tw, bias, accumulate, lo, hi))

// Kernels [lo, hi) of (K, C): dw[k][c] += G^T du G, du = the summed du[xi][k][c].
KN_BODY void weight_gradient_transform(float *dw, const float *du, size_t plane, size_t lo, size_t hi) {
    for (size_t e = lo; e < hi; e++) {
        float t[3][4];
        for (int j = 0; j < 4; j++) {
            const float d0 = du[(size_t)j * plane + e], d1 = du[(size_t)(4 + j) * plane + e],
                        d2 = du[(size_t)(8 + j) * plane + e], d3 = du[(size_t)(12 + j) * plane + e];
            t[0][j] = d0 + 0.5f * (d1 + d2);
            t[1][j] = 0.5f * (d1 - d2);
            t[2][j] = 0.5f * (d1 + d2) + d3;
        }
        float *o = dw + e * 9;
        for (int r = 0; r < 3; r++) {
            o[r * 3] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
            o[r * 3 + 1] += 0.5f * (t[r][1] - t[r][2]);
            o[r * 3 + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
        }
    }
}
KN_BY_ISA(weight_gradient_transform, (float *dw, const float *du, size_t plane, size_t lo, size_t hi),
          (dw, du, plane, lo, hi))

// Elements [lo, hi) of the first partial += each later one, in group order.
KN_BODY void add_groups(float *partials, size_t size, int groups, size_t lo, size_t hi) {
    for (int g = 1; g < groups; g++)
        for (size_t i = lo; i < hi; i++) partials[i] += partials[(size_t)g * size + i];
}
KN_BY_ISA(add_groups, (float *partials, size_t size, int groups, size_t lo, size_t hi),
          (partials, size, groups, lo, hi))

// MARK: - Chunks

// Row stride of a chunk's transformed matrices: the most tiles of either pass's planes.
static size_t chunk_ld(const kn_conv2d *cv) {
    const long fwd = (long)tiles_h(cv->P) * tiles_w(cv->Q), bwd = (long)tiles_h(cv->H) * tiles_w(cv->W);
    return kn_chunk_ld((fwd > bwd ? fwd : bwd) * cv->wino_images);
}

size_t kn_winograd_slot_floats(const kn_conv2d *cv) { return (size_t)XI * (cv->C + cv->K) * chunk_ld(cv); }

size_t kn_winograd_shared_floats(const kn_conv2d *cv) {
    const int groups = cv->algo_backward_weights == KN_CONV_WINOGRAD ? cv->wino_groups : 1;
    return (size_t)XI * cv->K * cv->C * groups;
}

int kn_winograd_chunks(const kn_conv2d *cv) { return (cv->N + cv->wino_images - 1) / cv->wino_images; }

// One chunk of a forward-shaped pass: transform its input, 16 GEMMs, transform the products
// into the output.
static void forward_chunk(const void *p, int chunk, float *slot) {
    const wino_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    int n0, nb;
    kn_chunk_images(cv, chunk, cv->wino_images, &n0, &nb);
    const int th = tiles_h(ps->out_h), tw = tiles_w(ps->out_w), T = nb * th * tw;
    const size_t ld = chunk_ld(cv), planes = (size_t)nb * (ps->in_ch > ps->out_ch ? ps->in_ch : ps->out_ch);
    float *v = slot, *m = slot + (size_t)XI * ps->in_ch * ld;
    const int parallel = planes * th * tw * XI > KN_PAR_MIN;
    KN_PARALLEL_RANGES((size_t)nb * ps->in_ch, parallel, tile_transform,
                       (v, ld, ps->in, n0, ps->in_ch, ps->in_h, ps->in_w, ps->pad_h, ps->pad_w, th, tw, 0, lo, hi));
    for (int xi = 0; xi < XI; xi++) {
        const kn_view A = {.kind = KN_VIEW_DENSE, .data = (float *)ps->u + (size_t)xi * ps->out_ch * ps->in_ch, .ld = ps->in_ch};
        const kn_view B = {.kind = KN_VIEW_DENSE, .data = v + (size_t)xi * ps->in_ch * ld, .ld = (int)ld};
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = m + (size_t)xi * ps->out_ch * ld, .ld = (int)ld};
        kn_gemm_views(ps->out_ch, T, ps->in_ch, 1.0f, &A, &B, 0.0f, &C);
    }
    KN_PARALLEL_RANGES((size_t)nb * ps->out_ch, parallel, output_transform,
                       (ps->out, m, ld, n0, ps->out_ch, ps->out_h, ps->out_w, th, tw, ps->bias, ps->accumulate, lo, hi));
}

static void run_forward_shaped(const wino_pass *ps, const float *w, int transposed, float *scratch) {
    const kn_conv2d *cv = ps->cv;
    float *u = scratch;
    const int rows = ps->out_ch, cols = ps->in_ch;
    KN_PARALLEL_RANGES((size_t)rows * cols, (size_t)rows * cols * XI > KN_PAR_MIN, weight_transform,
                       (u, w, rows, cols, transposed, lo, hi));
    kn_run_items(kn_winograd_chunks(cv), cv->wino_slots, scratch + kn_winograd_shared_floats(cv),
                 kn_winograd_slot_floats(cv), forward_chunk, ps);
}

void kn_winograd_forward(const kn_conv2d *cv, float *y, const float *x, const float *w, const float *bias,
                         float *scratch) {
    float *u = scratch;
    const wino_pass ps = {cv, x, cv->C, cv->H, cv->W, cv->pad_h, cv->pad_w, y, cv->K, cv->P, cv->Q, u, bias, 0};
    run_forward_shaped(&ps, w, 0, scratch);
}

void kn_winograd_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w, float *scratch) {
    float *u = scratch;
    const wino_pass ps = {cv, dy, cv->K, cv->P, cv->Q, 2 - cv->pad_h, 2 - cv->pad_w, dx, cv->C, cv->H, cv->W, u, NULL, 1};
    run_forward_shaped(&ps, w, 1, scratch);
}

// One group of backward-weights: its run of chunks, in order, into its own partial dU.
static void dw_group(const void *p, int group, float *slot) {
    const wino_dw_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const int K = cv->K, C = cv->C, th = tiles_h(cv->P), tw = tiles_w(cv->Q);
    const size_t ld = chunk_ld(cv), plane = (size_t)K * C;
    float *v = slot, *e = slot + (size_t)XI * C * ld, *du = ps->partials + (size_t)group * XI * plane;
    size_t lo_c, hi_c;
    kn_part((size_t)kn_winograd_chunks(cv), (size_t)cv->wino_groups, (size_t)group, &lo_c, &hi_c);
    for (size_t c = lo_c; c < hi_c; c++) {
        int n0, nb;
        kn_chunk_images(cv, (int)c, cv->wino_images, &n0, &nb);
        const int T = nb * th * tw, parallel = (size_t)nb * (C > K ? C : K) * th * tw * XI > KN_PAR_MIN;
        KN_PARALLEL_RANGES((size_t)nb * C, parallel, tile_transform,
                           (v, ld, ps->x, n0, C, cv->H, cv->W, cv->pad_h, cv->pad_w, th, tw, 0, lo, hi));
        KN_PARALLEL_RANGES((size_t)nb * K, parallel, tile_transform,
                           (e, ld, ps->dy, n0, K, cv->P, cv->Q, 0, 0, th, tw, 1, lo, hi));
        for (int xi = 0; xi < XI; xi++) {
            const kn_view A = {.kind = KN_VIEW_DENSE, .data = e + (size_t)xi * K * ld, .ld = (int)ld};
            const kn_view B = {.kind = KN_VIEW_DENSE_T, .data = v + (size_t)xi * C * ld, .ld = (int)ld};
            const kn_view D = {.kind = KN_VIEW_DENSE, .data = du + (size_t)xi * plane, .ld = C};
            kn_gemm_views(K, C, T, 1.0f, &A, &B, c == lo_c ? 0.0f : 1.0f, &D);
        }
    }
}

void kn_winograd_backward_weights(const kn_conv2d *cv, float *dw, float *dbias, const float *dy, const float *x,
                                  float *scratch) {
    const wino_dw_pass ps = {cv, dy, x, scratch};
    kn_run_items(cv->wino_groups, cv->wino_slots, scratch + kn_winograd_shared_floats(cv), kn_winograd_slot_floats(cv),
                 dw_group, &ps);
    const size_t plane = (size_t)cv->K * cv->C, size = XI * plane;
    KN_PARALLEL_RANGES(size, size * cv->wino_groups > KN_PAR_MIN, add_groups, (scratch, size, cv->wino_groups, lo, hi));
    KN_PARALLEL_RANGES(plane, size > KN_PAR_MIN, weight_gradient_transform, (dw, scratch, plane, lo, hi));
    if (dbias) kn_bias_backward(dbias, dy, cv->N, cv->K, cv->P * cv->Q);
}
