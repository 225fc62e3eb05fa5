// What the convolution files share: the plan's fields, the geometry of the implicit GEMMs,
// and the data movement every algorithm uses (conv_layout.c).
//
// Files: conv_plan.c (validation, the ordered list of algorithms, chunk and scratch sizes),
// conv_padded_grid.c, conv_batch_inner.c and conv_im2col.c (one algorithm each),
// conv_layout.c (padding, cropping, im2col and col2im, transposes), conv.c (the entry points
// and the chunks-across-the-team runner), conv_ref.c (the oracles).
#ifndef REMAT_KERNELS_CONV_INTERNAL_H
#define REMAT_KERNELS_CONV_INTERNAL_H

#include "internal.h"

struct kn_conv2d {
    // described
    int N, C, H, W, K, R, S, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    kn_conv_algo algo;
    // planned
    int P, Q;
    kn_conv_algo algo_forward, algo_backward_data, algo_backward_weights;
    int col_images;      // images per im2col chunk      } fixed by the shape and the tuning
    int implicit_images; // images per implicit chunk    } table, never by the team size:
    int implicit_groups; // implicit dw: runs of chunks summed apart, then in order
    int implicit_slots;  // implicit chunks in flight at once (one per thread)
    int col_slots;       // im2col backward-data chunks in flight at once
    int wino_images;     // images per Winograd chunk
    int wino_groups;     // Winograd dw: runs of chunks summed apart, then in order
    int wino_slots;      // Winograd chunks in flight at once (one per thread)
    size_t scratch_floats;
    size_t scratch_cap;  // the description's scratch limit, or the tuning table's
    kn_tuning tune;      // the tuning table's row it was planned with
    char explain[768];
};

// 1x1, stride 1, no padding: x itself is the column matrix.
static inline int kn_conv_is_unit_1x1(const kn_conv2d *cv) {
    return cv->R == 1 && cv->S == 1 && cv->stride_h == 1 && cv->stride_w == 1 && cv->pad_h == 0 &&
           cv->pad_w == 0;
}
static inline int kn_conv_is_implicit(kn_conv_algo a) {
    return a == KN_CONV_PADDED_GRID || a == KN_CONV_BATCH_INNER;
}
// Whether the plan's implicit passes are batch innermost (a plan never mixes the two layouts).
static inline int kn_conv_batch_inner(const kn_conv2d *cv) {
    return cv->algo_forward == KN_CONV_BATCH_INNER || cv->algo_backward_data == KN_CONV_BATCH_INNER ||
           cv->algo_backward_weights == KN_CONV_BATCH_INNER;
}

// MARK: - The implicit GEMMs' geometry

// One padded-grid GEMM: input planes (ch, hp, wp), output grid rows x wp, of which the first
// `cols` columns are the output's.
typedef struct {
    int ch, hp, wp, rows;
    int top, left; // where the unpadded input sits inside the padded plane
    int cols;
} kn_grid;

static inline kn_grid kn_forward_grid(const kn_conv2d *cv) {
    return (kn_grid){cv->C, cv->H + 2 * cv->pad_h, cv->W + 2 * cv->pad_w, cv->P, cv->pad_h, cv->pad_w, cv->Q};
}
// The transposed conv of backward-data reads dy padded by d(R-1) - pad and yields H rows.
static inline kn_grid kn_backward_grid(const kn_conv2d *cv) {
    const int ph = cv->dil_h * (cv->R - 1) - cv->pad_h, pw = cv->dil_w * (cv->S - 1) - cv->pad_w;
    return (kn_grid){cv->K, cv->P + 2 * ph, cv->Q + 2 * pw, cv->H, ph, pw, cv->W};
}
static inline size_t kn_grid_plane(kn_grid g) { return (size_t)g.hp * g.wp; }
// Floats past a padded chunk that the last shifted run reads.
static inline size_t kn_grid_slack(const kn_conv2d *cv) { return (size_t)cv->dil_w * (cv->S - 1) + 16; }

// Sizes of the implicit GEMMs' scratch (conv_plan.c): one chunk slot, backward-weights'
// partials before the slots, and the number of chunks.
size_t kn_implicit_slot_floats(const kn_conv2d *cv);
size_t kn_implicit_shared_floats(const kn_conv2d *cv);
int kn_implicit_chunks(const kn_conv2d *cv);
// Runs fn over `items` in the implicit slots after the partials (kn_run_items).
void kn_implicit_run(const kn_conv2d *cv, int items, float *scratch, kn_item_fn fn, const void *pass);

// The weights as the GEMM's A: (K, C*R*S), or for the transposed conv the same memory read
// as (C, K*R*S), row c, depth (k, r, s) at w[k][c][r][s] (an NCHW view with planes of R*S);
// the kernel's flip goes into B's shifts (kn_flipped_taps): nothing is copied.
static inline kn_view kn_weights_view(const kn_conv2d *cv, const float *w, int transposed) {
    if (!transposed)
        return (kn_view){.kind = KN_VIEW_DENSE, .data = (float *)w, .ld = cv->C * cv->R * cv->S};
    return (kn_view){.kind = KN_VIEW_NCHW, .data = (float *)w, .ch = cv->C, .plane = cv->R * cv->S};
}
// Row (k, r, s) of a shift view reading tap (R-1-r, S-1-s): the transposed conv's flip.
static inline kn_view kn_flipped_taps(kn_view v) {
    v.data += (long)(v.R - 1) * v.rstep + (long)(v.S - 1) * v.sstep;
    v.rstep = -v.rstep;
    v.sstep = -v.sstep;
    return v;
}

// The implicit GEMMs' passes: forward and backward-data (out = w . shift(in padded to g),
// the transposed conv added into out), and backward-weights' partial sums.
typedef struct {
    const kn_conv2d *cv;
    kn_grid g;           // the padded input's planes and the output grid
    int in_h, in_w;      // the unpadded input's planes
    int out_ch, out_w;   // output channels and columns (the grid's rows are its rows)
    const float *w, *in, *bias;
    float *out;
    int transposed;      // backward-data: the transposed conv, added into out
} kn_grid_pass;
typedef struct {
    const kn_conv2d *cv;
    const float *dy, *x;
    float *partials;     // implicit_groups x dw^T (CRS, K)
} kn_dw_pass;
// The chunk's images [n0, n0 + nb).
static inline void kn_chunk_images(const kn_conv2d *cv, int chunk, int per, int *n0, int *nb) {
    *n0 = chunk * per;
    *nb = cv->N - *n0 < per ? cv->N - *n0 : per;
}

void kn_padded_grid_chunk(const void *pass, int chunk, float *slot);
void kn_padded_grid_dw_group(const void *pass, int group, float *slot);
void kn_batch_inner_chunk(const void *pass, int chunk, float *slot);
void kn_batch_inner_dw_group(const void *pass, int group, float *slot);

// Winograd F(2x2, 3x3) (conv_winograd.c): planes at most KN_WINOGRAD_MAX_WIDTH wide (its row
// buffers live on the stack). Scratch: the transformed weights (or backward-weights' partial
// sums) first, then a slot per chunk in flight.
#define KN_WINOGRAD_MAX_WIDTH 1024
// Images a chunk aims for (winograd_cols tiles, at most the batch), and the scratch the packed
// weights and one such chunk need: what the plan's verdict checks against the cap.
int kn_winograd_target_images(const kn_conv2d *cv);
size_t kn_winograd_least_floats(const kn_conv2d *cv);
size_t kn_winograd_slot_floats(const kn_conv2d *cv);
size_t kn_winograd_shared_floats(const kn_conv2d *cv);
int kn_winograd_chunks(const kn_conv2d *cv);
void kn_winograd_forward(const kn_conv2d *cv, float *y, const float *x, const float *w, const float *bias,
                         float *scratch);
void kn_winograd_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w, float *scratch);
void kn_winograd_backward_weights(const kn_conv2d *cv, float *dw, float *dbias, const float *dy, const float *x,
                                  float *scratch);

void kn_im2col_forward(const kn_conv2d *cv, float *y, const float *x, const float *w,
                       const float *bias, float *scratch);
void kn_im2col_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w,
                             float *scratch);
void kn_im2col_backward_weights(const kn_conv2d *cv, float *dw, float *dbias, const float *dy,
                                const float *x, float *scratch);
// Floats of one im2col chunk of nb images: its column matrix and its y/dy matrix (K rows).
static inline size_t kn_col_chunk_floats(const kn_conv2d *cv, long nb) {
    return ((size_t)cv->C * cv->R * cv->S + cv->K) * kn_chunk_ld(nb * cv->P * cv->Q);
}

// MARK: - Data movement (conv_layout.c), each across the calling thread's team

// dst (nb, ch, g.hp, g.wp) = images [n0, n0+nb) of src (N, ch, h, w) at (top, left) in zero
// frames; `extra` floats after the chunk are zeroed too (the last shifted run overhangs).
void kn_pad_chunk(float *dst, const float *src, int n0, int nb, kn_grid g, int h, int w, size_t extra);
// dst (N, ch, rows, cols) images [n0, ...) = (or +=) the first `cols` of every `ld`-long row
// of src (nb, ch, rows, ld), plus bias (ch) when given.
void kn_crop_chunk(float *dst, const float *src, int n0, int nb, int ch, int rows, int cols, int ld,
                   const float *bias, int accumulate);
// dst (ch, hp, wp, nb) = images [n0, n0+nb) of src (N, ch, h, w), the image innermost, at
// (top, left) in zero frames.
void kn_pad_inner(float *dst, const float *src, int n0, int nb, kn_grid g, int h, int w);
// dst (N, ch, pq) images [n0, n0+nb) = (or +=) src (ch, pq * nb; row stride ld), the image
// innermost, plus bias (ch) when given.
void kn_unbatch(float *dst, const float *src, size_t ld, int n0, int nb, int ch, size_t pq,
                const float *bias, int accumulate);
// dw (K, CRS) += the partials dw^T (CRS, K) of `groups` groups, in group order.
void kn_add_partials(const kn_conv2d *cv, float *dw, const float *partials, int groups);
// The input offset in the plane of each tap (r, s) and output position (p, q), -1 where it
// reads padding; the caller frees it (NULL without memory).
int *kn_im2col_taps(const kn_conv2d *cv);
// col (CRS, nb*PQ; row stride ld) of images [n0, n0+nb), and dx += col2im of dcol.
void kn_im2col(const kn_conv2d *cv, float *col, size_t ld, const float *x, int n0, int nb);
void kn_col2im_add(const kn_conv2d *cv, float *dx, const float *dcol, size_t ld, int n0, int nb);
// t (K, nb*PQ; row stride ld) <-> y (nb images of (K, PQ)): between a chunk GEMM and NCHW.
void kn_chunk_to_nchw(const kn_conv2d *cv, float *y, const float *t, size_t ld, const float *bias,
                      int n0, int nb);
void kn_nchw_to_chunk(const kn_conv2d *cv, float *t, size_t ld, const float *dy, int n0, int nb);

#endif
