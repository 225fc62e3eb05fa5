// 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016):
// each 2x2 output tile comes from a 4x4 input tile with 16 multiplies per channel pair
// instead of 36, so the GEMMs do 2.25x fewer FLOPs than a direct or implicit convolution.
//
//   forward          V = B^T d B (each 4x4 input tile), U = G g G^T (each 3x3 kernel), then
//                    16 products M[xi] (K, T) = U[xi] (K, C) . V[xi] (C, T), and y = A^T m A;
//                    U and V are written as the micro-kernel's packed panels, so each
//                    product is micro-kernel calls alone
//   backward-data    the same on dy, padded by 2 - pad, with the kernels turned 180 degrees
//                    and (K, C) swapped: the transposed convolution is a 3x3 one too
//   backward-weights the transpose of forward: dU[xi] (K, C) = sum over tiles of
//                    (A e A^T)[xi] (K, T) . V[xi]^T, e each 2x2 tile of dy; dw += G^T dU G
//
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
// A^T = [1 1 1 0; 0 1 -1 -1]. T counts the tiles of a chunk of images (the plane's tiles,
// image after image; a large plane's in groups of tile rows); tiles past the output's edge
// read zeros and their outputs are dropped.
// Chunks are fixed by the shape, every image's tiles are computed alike, and backward-weights
// sums fixed groups of chunks apart and then in order, so the bits never depend on the team.
#include "conv_internal.h"

#include <string.h>

#define XI 16 // transformed positions of a tile (4x4)

// A plane's tiles: rows x columns of 2x2 output tiles.
static inline int tiles_h(int out_h) { return (out_h + 1) / 2; }
static inline int tiles_w(int out_w) { return (out_w + 1) / 2; }

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

// Kernels [lo, hi) of the (rows, cols) grid: (G g G^T)[xi] of kernel (i, j), g = w[i][j] as
// stored, or (transposed, for backward-data) w[j][i] turned 180 degrees, into the
// micro-kernel's packed A panels: row i of matrix xi at u + xi * uxi + (i / mr) * cols * mr +
// i % mr, column j mr floats on.
KN_BODY void weight_transform(float *u, size_t uxi, int mr, const float *w, int rows, int cols, int transposed,
                              size_t lo, size_t hi) {
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
        float *at = u + (i / mr) * (size_t)cols * mr + j * mr + i % mr;
        for (int r = 0; r < 4; r++) {
            float *d = at + (size_t)r * 4 * uxi;
            d[0] = t[r][0];
            d[uxi] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
            d[2 * uxi] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
            d[3 * uxi] = t[r][2];
        }
    }
}
KN_BY_ISA(weight_transform,
          (float *u, size_t uxi, int mr, const float *w, int rows, int cols, int transposed, size_t lo, size_t hi),
          (u, uxi, mr, w, rows, cols, transposed, lo, hi))

// Where the transformed tiles go: tile t of row c of matrix xi at v + xi * xi_stride + c * ld
// + t, or (nr > 0) in the micro-kernel's packed B panels, panel t / nr at (t / nr) * pstride,
// row c nr floats on, lane t % nr.
typedef struct {
    size_t xi_stride, ld, pstride;
    int nr;
} wino_layout;

// The tiles a transform covers: rows [ty0, ty0 + rows) of tw tiles, of each image in the chunk
// (tile t counts them image after image).
typedef struct {
    int tw, ty0, rows;
} wino_rows;

// Planes [lo, hi) (image-major, ch each) of a chunk from image n0, each tile transformed into
// layout L: the input's 4x4 windows (padded by pad_h, pad_w) as B^T d B, or (gradient) dy's
// 2x2 tiles as A e A^T, the transpose of output_transform. Each tile row's input rows go
// through a zero-framed row buffer first, so the tiles' loop has no edge cases; it runs in
// segments that stay within one panel.
KN_BODY void tile_transform(float *v, wino_layout L, const float *in, int n0, int ch, int h, int w, int pad_h,
                            int pad_w, wino_rows g, int gradient, size_t lo, size_t hi) {
    const int tw = g.tw;
    float buf[4][ROW];
    const size_t xs = L.xi_stride;
    for (size_t i = lo; i < hi; i++) {
        const size_t n = i / ch, c = i % ch;
        const float *plane = in + ((size_t)(n0 + n) * ch + c) * h * w;
        for (int ty = g.ty0; ty < g.ty0 + g.rows; ty++) {
            if (gradient) framed_rows(buf, plane, h, w, 2 * ty, 0, 2, 2 * tw);
            else framed_rows(buf, plane, h, w, 2 * ty - pad_h, pad_w, 4, 2 * tw + 2);
            const size_t row_t = (n * g.rows + ty - g.ty0) * (size_t)tw;
            for (int tx0 = 0; tx0 < tw;) {
                const size_t t0 = row_t + tx0;
                int len = tw - tx0;
                float *dst;
                if (L.nr) {
                    const int lane = (int)(t0 % L.nr);
                    if (len > L.nr - lane) len = L.nr - lane;
                    dst = v + t0 / L.nr * L.pstride + c * L.nr + lane - tx0;
                } else {
                    dst = v + c * L.ld + t0 - tx0;
                }
                for (int tx = tx0; tx < tx0 + len; tx++) {
                    float t[4][4], o[4][4];
                    for (int j = 0; j < 4; j++) {
                        const float *col = &buf[0][2 * tx + j];
                        if (gradient) { // A e, A = [1 0; 1 1; 1 -1; 0 -1]
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
                        for (int j = 0; j < 4; j++) dst[(size_t)(4 * r + j) * xs + tx] = o[r][j];
                    }
                }
                tx0 += len;
            }
        }
    }
}
// Each kind its own copy (a constant `gradient`): with the test inside the tiles' loop it
// ran 3x slower.
KN_BODY void input_tiles(float *v, wino_layout L, const float *in, int n0, int ch, int h, int w, int pad_h,
                         int pad_w, wino_rows g, size_t lo, size_t hi) {
    tile_transform(v, L, in, n0, ch, h, w, pad_h, pad_w, g, 0, lo, hi);
}
KN_BODY void gradient_tiles(float *v, wino_layout L, const float *dy, int n0, int ch, int h, int w, wino_rows g,
                            size_t lo, size_t hi) {
    tile_transform(v, L, dy, n0, ch, h, w, 0, 0, g, 1, lo, hi);
}
KN_BY_ISA(input_tiles,
          (float *v, wino_layout L, const float *in, int n0, int ch, int h, int w, int pad_h, int pad_w, wino_rows g,
           size_t lo, size_t hi),
          (v, L, in, n0, ch, h, w, pad_h, pad_w, g, lo, hi))
KN_BY_ISA(gradient_tiles,
          (float *v, wino_layout L, const float *dy, int n0, int ch, int h, int w, wino_rows g, size_t lo,
           size_t hi),
          (v, L, dy, n0, ch, h, w, g, lo, hi))

// Planes [lo, hi) of the chunk's output from image n0: each tile's 2x2 = A^T m A, plus bias,
// written (or added) where it lies inside the plane.
KN_BODY void output_transform(float *out, const float *m, size_t xi_stride, size_t ld, int n0, int ch, int h,
                              int w, wino_rows g, const float *bias, int accumulate, size_t lo, size_t hi) {
    const int tw = g.tw;
    float rows[2][ROW];
    for (size_t i = lo; i < hi; i++) {
        const size_t n = i / ch, k = i % ch;
        float *plane = out + ((size_t)(n0 + n) * ch + k) * h * w;
        const float *mk = m + k * ld + n * (size_t)g.rows * tw;
        const float b = bias ? bias[k] : 0.0f;
        for (int ty = g.ty0; ty < g.ty0 + g.rows; ty++) {
            const float *mt = mk + (size_t)(ty - g.ty0) * tw;
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
          (float *out, const float *m, size_t xi_stride, size_t ld, int n0, int ch, int h, int w, wino_rows g,
           const float *bias, int accumulate, size_t lo, size_t hi),
          (out, m, xi_stride, ld, n0, ch, h, w, g, bias, accumulate, lo, hi))

// Items [lo, hi) of (xi, column panel): every row block's MR x NR tile of m[xi] = u[xi] .
// v[xi], straight from the packed panels (no GEMM driver: the depth is one channel count).
KN_BODY void panel_products(kn_sgemm_ukr ukr, int depth, const float *u, size_t uxi, int blocks, int mr,
                            const float *v, size_t vxi, size_t pstride, int panels, int nr, float *m, size_t mxi,
                            size_t ldm, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        const size_t xi = i / panels, p = i % panels;
        for (int b = 0; b < blocks; b++)
            ukr(depth, u + xi * uxi + (size_t)b * depth * mr, v + xi * vxi + p * pstride,
                m + xi * mxi + (size_t)b * mr * ldm + p * nr, (ptrdiff_t)ldm, 1.0f, 0.0f);
    }
}
KN_BY_ISA(panel_products,
          (kn_sgemm_ukr ukr, int depth, const float *u, size_t uxi, int blocks, int mr, const float *v, size_t vxi,
           size_t pstride, int panels, int nr, float *m, size_t mxi, size_t ldm, size_t lo, size_t hi),
          (ukr, depth, u, uxi, blocks, mr, v, vxi, pstride, panels, nr, m, mxi, ldm, lo, hi))

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

static inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// A forward-shaped pass's matrices for one chunk of T tiles, on micro-kernel impl's tiles:
// U's packed panels (before the chunks), V's packed panels and the products M (in a slot).
typedef struct {
    int mr, nr, blocks, panels;
    size_t uxi, pstride, vxi, ldm, mxi;
} wino_sizes;

static wino_sizes sizes_for(const kn_gemm_impl *impl, int in_ch, int out_ch, long T) {
    wino_sizes z = {.mr = impl->blocking.mr, .nr = impl->blocking.nr};
    z.blocks = (out_ch + z.mr - 1) / z.mr;
    z.panels = (int)((T + z.nr - 1) / z.nr);
    z.uxi = (size_t)z.blocks * z.mr * in_ch;
    z.pstride = round_up((size_t)in_ch * z.nr, 16);
    z.vxi = (size_t)z.panels * z.pstride;
    z.ldm = kn_chunk_ld((long)z.panels * z.nr);
    z.mxi = (size_t)z.blocks * z.mr * z.ldm;
    return z;
}

int kn_winograd_target_images(const kn_conv2d *cv) {
    const long tiles = (long)tiles_h(cv->P) * tiles_w(cv->Q), nb = (cv->tune.winograd_cols + tiles - 1) / tiles;
    return nb < cv->N ? (int)nb : cv->N;
}

// Tile rows a forward-shaped pass takes at a time out of an output plane, in chunks of
// `images` images: whole planes when a chunk holds several, else rows enough for
// winograd_cols tiles, so that its transformed tiles and products stay in L2 between the
// transforms and the products.
static int group_rows(const kn_conv2d *cv, int images, int out_h, int out_w) {
    const int th = tiles_h(out_h), tw = tiles_w(out_w);
    if (images > 1) return th;
    const int rows = (cv->tune.winograd_cols + tw - 1) / tw;
    return rows < th ? rows : th;
}
static long group_tiles(const kn_conv2d *cv, int images, int out_h, int out_w) {
    return (long)images * group_rows(cv, images, out_h, out_w) * tiles_w(out_w);
}

// A slot's V and M, and U, for T tiles on the micro-kernel that needs most: any ISA's (the plan
// is sized once; a pass runs on the ISA active then).
static void forward_floats(int in_ch, int out_ch, long T, size_t *slot, size_t *u) {
    *slot = *u = 0;
    for (int isa = 0; isa < KN_ISA_COUNT; isa++) {
        if (!kn_isa_built((kn_isa)isa)) continue;
        const kn_gemm_impl *table = kn_gemm_table((kn_isa)isa);
        for (int i = 0; i < KN_KERNELS_PER_ISA && table[i].ukr; i++) {
            const wino_sizes z = sizes_for(&table[i], in_ch, out_ch, T);
            if (XI * (z.vxi + z.mxi) > *slot) *slot = XI * (z.vxi + z.mxi);
            if (XI * z.uxi > *u) *u = XI * z.uxi;
        }
    }
}

// backward-weights' plain layout: V (C, T) and dy's transform (K, T), row stride ld
static size_t dw_ld(const kn_conv2d *cv, int images) {
    return kn_chunk_ld((long)tiles_h(cv->P) * tiles_w(cv->Q) * images);
}

// For chunks of `images` images: a slot (the most any pass's matrices need) and the packed
// weights.
static void floats_for(const kn_conv2d *cv, int images, size_t *slot, size_t *packed) {
    size_t fwd, bwd, fwd_u, bwd_u;
    forward_floats(cv->C, cv->K, group_tiles(cv, images, cv->P, cv->Q), &fwd, &fwd_u);
    forward_floats(cv->K, cv->C, group_tiles(cv, images, cv->H, cv->W), &bwd, &bwd_u);
    *slot = (size_t)XI * (cv->C + cv->K) * dw_ld(cv, images);
    if (fwd > *slot) *slot = fwd;
    if (bwd > *slot) *slot = bwd;
    *packed = fwd_u > bwd_u ? fwd_u : bwd_u;
}

size_t kn_winograd_slot_floats(const kn_conv2d *cv) {
    size_t slot, packed;
    floats_for(cv, cv->wino_images, &slot, &packed);
    return slot;
}

size_t kn_winograd_shared_floats(const kn_conv2d *cv) {
    size_t slot, packed;
    floats_for(cv, cv->wino_images, &slot, &packed);
    const size_t partials = cv->algo_backward_weights == KN_CONV_WINOGRAD ? XI * (size_t)cv->K * cv->C * cv->wino_groups : 0;
    return packed > partials ? packed : partials;
}

size_t kn_winograd_least_floats(const kn_conv2d *cv) {
    size_t slot, packed;
    floats_for(cv, kn_winograd_target_images(cv), &slot, &packed);
    return packed + slot;
}

int kn_winograd_chunks(const kn_conv2d *cv) { return (cv->N + cv->wino_images - 1) / cv->wino_images; }

// One forward-shaped pass: a 3x3 convolution of `in` (N, in_ch, in_h, in_w) padded by
// (pad_h, pad_w) into `out` (N, out_ch, out_h, out_w).
typedef struct {
    const kn_conv2d *cv;
    const float *in;
    int in_ch, in_h, in_w, pad_h, pad_w;
    float *out;
    int out_ch, out_h, out_w;
    const float *bias; // out_ch, or NULL
    int accumulate;    // out += rather than =
    const kn_gemm_impl *impl;
    const float *u;    // the transformed weights, packed (wino_sizes)
} wino_pass;

// One group of tile rows of a forward-shaped chunk: transform its tiles into packed panels,
// multiply them by U's panels, transform the products into the output.
static void forward_group(const wino_pass *ps, int n0, int nb, wino_rows g, float *slot) {
    const int T = nb * g.rows * g.tw;
    const wino_sizes z = sizes_for(ps->impl, ps->in_ch, ps->out_ch, T);
    float *v = slot, *m = slot + XI * z.vxi;
    const size_t planes = (size_t)nb * (ps->in_ch > ps->out_ch ? ps->in_ch : ps->out_ch);
    const int parallel = planes * g.rows * g.tw * XI > KN_PAR_MIN;
    const wino_layout L = {.xi_stride = z.vxi, .pstride = z.pstride, .nr = z.nr};
    KN_PARALLEL_RANGES((size_t)nb * ps->in_ch, parallel, input_tiles,
                       (v, L, ps->in, n0, ps->in_ch, ps->in_h, ps->in_w, ps->pad_h, ps->pad_w, g, lo, hi));
    // the last panel's lanes past T: zeros, not a previous group's values
    if (T % z.nr)
        for (int xi = 0; xi < XI; xi++)
            for (int c = 0; c < ps->in_ch; c++) {
                float *lane = v + xi * z.vxi + (size_t)(z.panels - 1) * z.pstride + (size_t)c * z.nr;
                for (int j = T % z.nr; j < z.nr; j++) lane[j] = 0.0f;
            }
    const size_t items = (size_t)XI * z.panels;
    KN_PARALLEL_RANGES(items, 2.0 * XI * ps->out_ch * ps->in_ch * T > kn_tune()->gemm_parallel_flops, panel_products,
                       (ps->impl->ukr, ps->in_ch, ps->u, z.uxi, z.blocks, z.mr, v, z.vxi, z.pstride, z.panels, z.nr,
                        m, z.mxi, z.ldm, lo, hi));
    KN_PARALLEL_RANGES((size_t)nb * ps->out_ch, parallel, output_transform,
                       (ps->out, m, z.mxi, z.ldm, n0, ps->out_ch, ps->out_h, ps->out_w, g, ps->bias, ps->accumulate,
                        lo, hi));
}

static void forward_chunk(const void *p, int chunk, float *slot) {
    const wino_pass *ps = p;
    int n0, nb;
    kn_chunk_images(ps->cv, chunk, ps->cv->wino_images, &n0, &nb);
    const int th = tiles_h(ps->out_h), rows = group_rows(ps->cv, ps->cv->wino_images, ps->out_h, ps->out_w);
    for (int ty0 = 0; ty0 < th; ty0 += rows)
        forward_group(ps, n0, nb, (wino_rows){tiles_w(ps->out_w), ty0, th - ty0 < rows ? th - ty0 : rows}, slot);
}

// The weights transformed into U's packed panels once (the micro-kernel chosen for a whole
// group's tiles), then the chunks across the team.
static void run_forward_shaped(wino_pass *ps, const float *w, int transposed, float *scratch) {
    const kn_conv2d *cv = ps->cv;
    const long T = group_tiles(cv, cv->wino_images, ps->out_h, ps->out_w);
    ps->impl = kn_gemm_choose(ps->out_ch, (int)T);
    const wino_sizes z = sizes_for(ps->impl, ps->in_ch, ps->out_ch, T);
    float *u = scratch;
    memset(u, 0, sizeof(float) * XI * z.uxi); // rows past out_ch in the last block
    const int rows = ps->out_ch, cols = ps->in_ch;
    KN_PARALLEL_RANGES((size_t)rows * cols, (size_t)rows * cols * XI > KN_PAR_MIN, weight_transform,
                       (u, z.uxi, z.mr, w, rows, cols, transposed, lo, hi));
    ps->u = u;
    kn_run_items(kn_winograd_chunks(cv), cv->wino_slots, scratch + kn_winograd_shared_floats(cv),
                 kn_winograd_slot_floats(cv), forward_chunk, ps);
}

void kn_winograd_forward(const kn_conv2d *cv, float *y, const float *x, const float *w, const float *bias,
                         float *scratch) {
    wino_pass ps = {cv, x, cv->C, cv->H, cv->W, cv->pad_h, cv->pad_w, y, cv->K, cv->P, cv->Q, bias, 0, NULL, NULL};
    run_forward_shaped(&ps, w, 0, scratch);
}

void kn_winograd_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w, float *scratch) {
    wino_pass ps = {cv, dy, cv->K, cv->P, cv->Q, 2 - cv->pad_h, 2 - cv->pad_w, dx, cv->C, cv->H, cv->W, NULL, 1, NULL, NULL};
    run_forward_shaped(&ps, w, 1, scratch);
}

// One group of backward-weights: its run of chunks, in order, into its own partial dU.
static void dw_group(const void *p, int group, float *slot) {
    const wino_dw_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const int K = cv->K, C = cv->C, th = tiles_h(cv->P), tw = tiles_w(cv->Q);
    const size_t ld = dw_ld(cv, cv->wino_images), plane = (size_t)K * C;
    float *v = slot, *e = slot + (size_t)XI * C * ld, *du = ps->partials + (size_t)group * XI * plane;
    size_t lo_c, hi_c;
    kn_part((size_t)kn_winograd_chunks(cv), (size_t)cv->wino_groups, (size_t)group, &lo_c, &hi_c);
    for (size_t c = lo_c; c < hi_c; c++) {
        int n0, nb;
        kn_chunk_images(cv, (int)c, cv->wino_images, &n0, &nb);
        const int T = nb * th * tw, parallel = (size_t)nb * (C > K ? C : K) * th * tw * XI > KN_PAR_MIN;
        const wino_layout Lv = {.xi_stride = C * ld, .ld = ld}, Le = {.xi_stride = K * ld, .ld = ld};
        const wino_rows g = {tw, 0, th};
        KN_PARALLEL_RANGES((size_t)nb * C, parallel, input_tiles,
                           (v, Lv, ps->x, n0, C, cv->H, cv->W, cv->pad_h, cv->pad_w, g, lo, hi));
        KN_PARALLEL_RANGES((size_t)nb * K, parallel, gradient_tiles, (e, Le, ps->dy, n0, K, cv->P, cv->Q, g, lo, hi));
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
