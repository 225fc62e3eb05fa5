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
//
// Images go in chunks fixed by the shape (not the team size), a multiple of KN_DW_GROUPS of
// them where the batch allows. When the team is no larger than the chunks (and the scratch
// slots), each thread takes a contiguous run of chunks and runs it alone, in a slot of its
// own: no barrier inside a chunk, and each thread reads the images that the elementwise
// kernels (split the same way, contiguous ranges in thread order) wrote on its own core.
// Measured on this 2-core VM when the host places its two vCPUs on cores that share no L3 (a
// cache line's round trip 400 ns instead of 100): a team splitting every chunk paid that on
// each barrier and on every image the other core had written. Otherwise (one thread, or more
// threads than chunks) the chunks go one after another, each on the whole team. Forward and
// backward-data give the same bits either way. Backward-weights sums its chunks in
// `shift_groups` fixed runs, each in order into a partial dw^T of its own, and the partials
// in order at the end, so its bits do not depend on the team either.
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

#define KN_DW_GROUPS 4

// Floats of one image in a chunk slot: its padded input and padded-grid output, in the
// largest implicit pass.
static size_t slot_image(const kn_conv2d *cv) {
    const grid f = forward_grid(cv);
    size_t per_image = 0;
    if (cv->algo_forward == KN_CONV_IMPLICIT || cv->algo_backward_weights == KN_CONV_IMPLICIT)
        per_image = cv->C * plane(f) + (size_t)cv->K * cv->P * f.wp;
    if (cv->algo_backward_data == KN_CONV_IMPLICIT) {
        const grid b = backward_grid(cv);
        const size_t bwd = cv->K * plane(b) + (size_t)cv->C * cv->H * b.wp;
        if (bwd > per_image) per_image = bwd;
    }
    return per_image;
}
static size_t slot_floats(const kn_conv2d *cv) { return cv->shift_images * slot_image(cv) + slack(cv); }
static int chunk_count(const kn_conv2d *cv) { return (cv->N + cv->shift_images - 1) / cv->shift_images; }
// Floats before the slots: backward-data's flipped weights, backward-weights' partials.
static size_t shared_floats(const kn_conv2d *cv) {
    const size_t kcrs = (size_t)cv->K * cv->C * cv->R * cv->S;
    const size_t bwd = cv->algo_backward_data == KN_CONV_IMPLICIT ? kcrs : 0;
    const size_t dw = cv->algo_backward_weights == KN_CONV_IMPLICIT ? cv->shift_groups * kcrs : 0;
    return bwd > dw ? bwd : dw;
}

size_t kn_conv2d_plan_shift(kn_conv2d *cv, size_t chunk_limit, size_t total_limit) {
    const size_t per_image = slot_image(cv);
    if (per_image == 0) return 0;
    size_t nb = chunk_limit / per_image;
    if (nb > (size_t)cv->N) nb = cv->N;
    if (nb < 1) nb = 1;
    // round the chunk count up to a multiple of the groups (smaller chunks), so a team of 2
    // or 4 gets equal shares
    const size_t chunks = (cv->N + nb - 1) / nb;
    const size_t even = (chunks + KN_DW_GROUPS - 1) / KN_DW_GROUPS * KN_DW_GROUPS;
    if (even <= (size_t)cv->N) nb = (cv->N + even - 1) / even;
    cv->shift_images = (int)nb;
    const int n_chunks = chunk_count(cv);
    const size_t kcrs = (size_t)cv->K * cv->C * cv->R * cv->S;
    int groups = n_chunks < KN_DW_GROUPS ? n_chunks : KN_DW_GROUPS;
    while (groups > 1 && groups * kcrs > total_limit) groups--;
    cv->shift_groups = groups;
    int slots = n_chunks < kn_num_cores() ? n_chunks : kn_num_cores();
    while (slots > 1 && shared_floats(cv) + slots * slot_floats(cv) > total_limit) slots--;
    cv->shift_slots = slots;
    return shared_floats(cv) + cv->shift_slots * slot_floats(cv);
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

static void run_items(const kn_conv2d *cv, int items, float *slots, kn_item_fn fn, const void *pass) {
    kn_run_items(items, cv->shift_slots, slots, slot_floats(cv), fn, pass);
}

// Forward and backward-data: out = a . shift(in padded to the grid g), cropped.
typedef struct {
    const kn_conv2d *cv;
    grid g;              // the padded input's planes and the output grid
    int in_h, in_w;      // the unpadded input's planes
    int out_ch, out_w;   // output channels and columns (the grid's rows are its rows)
    const float *a, *in, *bias;
    float *out;
    int accumulate;      // out += instead of =
} grid_pass;

// One chunk: pad its images, one GEMM over the padded grid, crop into out.
static void grid_chunk(const void *p, int chunk, float *slot) {
    const grid_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const grid g = ps->g;
    const int n0 = chunk * cv->shift_images;
    const int nb = cv->N - n0 < cv->shift_images ? cv->N - n0 : cv->shift_images;
    const int T = g.rows * g.wp, depth = g.ch * cv->R * cv->S;
    float *inp = slot, *outp = slot + (size_t)cv->shift_images * g.ch * plane(g) + slack(cv);
    pad_chunk(inp, ps->in, n0, nb, g, ps->in_h, ps->in_w, slack(cv));
    const kn_view A = {.kind = KN_VIEW_DENSE, .data = (float *)ps->a, .ld = depth};
    const kn_view B = shift_view(KN_VIEW_SHIFT, inp, cv, g);
    const kn_view C = {.kind = KN_VIEW_NCHW, .data = outp, .ch = ps->out_ch, .plane = T};
    kn_gemm_views(ps->out_ch, nb * T, depth, 1.0f, &A, &B, 0.0f, &C);
    crop_chunk(ps->out, outp, n0, nb, ps->out_ch, g.rows, ps->out_w, g.wp, ps->bias, ps->accumulate);
}

void kn_conv2d_forward_shift(const kn_conv2d *cv, float *y, const float *x, const float *w,
                             const float *bias, float *scratch) {
    const grid_pass pass = {cv, forward_grid(cv), cv->H, cv->W, cv->K, cv->Q, w, x, bias, y, 0};
    run_items(cv, chunk_count(cv), scratch + shared_floats(cv), grid_chunk, &pass);
}

void kn_conv2d_backward_data_shift(const kn_conv2d *cv, float *dx, const float *dy,
                                   const float *w, float *scratch) {
    const int K = cv->K, C = cv->C, R = cv->R, S = cv->S;
    float *wt = scratch;
    // w' (C, K, R, S): w with its channel axes swapped and kernel axes flipped
    for (int c = 0; c < C; c++)
        for (int k = 0; k < K; k++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++)
                    wt[((c * K + k) * R + r) * S + s] = w[((k * C + c) * R + (R - 1 - r)) * S + (S - 1 - s)];
    const grid_pass pass = {cv, backward_grid(cv), cv->P, cv->Q, C, cv->W, wt, dy, NULL, dx, 1};
    run_items(cv, chunk_count(cv), scratch + shared_floats(cv), grid_chunk, &pass);
}

typedef struct {
    const kn_conv2d *cv;
    const float *dy, *x;
    float *partials; // shift_groups x dw^T (CRS, K)
} dw_pass;

// One group of backward-weights: its run of chunks, in order, into its own partial dw^T.
static void dw_group(const void *p, int group, float *slot) {
    const dw_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const grid g = forward_grid(cv);
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, T = cv->P * g.wp;
    float *xp = slot, *dyp = slot + (size_t)cv->shift_images * cv->C * plane(g) + slack(cv);
    float *dwt = ps->partials + (size_t)group * CRS * K;
    // dy on the padded grid: P rows of Wp, the junk columns zero
    const grid dyg = {K, cv->P, g.wp, cv->P, 0, 0};
    size_t lo, hi;
    kn_part((size_t)chunk_count(cv), (size_t)cv->shift_groups, (size_t)group, &lo, &hi);
    for (size_t c = lo; c < hi; c++) {
        const int n0 = (int)c * cv->shift_images;
        const int nb = cv->N - n0 < cv->shift_images ? cv->N - n0 : cv->shift_images;
        pad_chunk(xp, ps->x, n0, nb, g, cv->H, cv->W, slack(cv));
        pad_chunk(dyp, ps->dy, n0, nb, dyg, cv->P, cv->Q, 0);
        // dw^T (CRS, K) += shift(xp) . dyp^T: the shifted runs are A's rows, read in place,
        // and only dy (K rows, 1/9 of the column matrix for a 3x3 conv) is packed
        const kn_view A = shift_view(KN_VIEW_SHIFT, xp, cv, g);
        const kn_view B = {.kind = KN_VIEW_NCHW_T, .data = dyp, .ch = K, .plane = T};
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = dwt, .ld = K};
        kn_gemm_views(CRS, K, nb * T, 1.0f, &A, &B, c == lo ? 0.0f : 1.0f, &C);
    }
}

// dw (K, CRS) += the partials dw^T (CRS, K) of the groups, in group order; rows [lo, hi) of dw.
KN_BODY void add_partials(float *dw, const float *partials, int groups, int K, int CRS, size_t lo,
                          size_t hi) {
    for (size_t k = lo; k < hi; k++)
        for (int i = 0; i < CRS; i++) {
            float sum = partials[(size_t)i * K + k];
            for (int g = 1; g < groups; g++) sum += partials[((size_t)g * CRS + i) * K + k];
            dw[k * CRS + i] += sum;
        }
}
KN_BY_ISA(add_partials,
          (float *dw, const float *partials, int groups, int K, int CRS, size_t lo, size_t hi),
          (dw, partials, groups, K, CRS, lo, hi))

void kn_conv2d_backward_weights_shift(const kn_conv2d *cv, float *dw, float *dbias,
                                      const float *dy, const float *x, float *scratch) {
    const int K = cv->K, CRS = cv->C * cv->R * cv->S;
    const dw_pass pass = {cv, dy, x, scratch};
    run_items(cv, cv->shift_groups, scratch + shared_floats(cv), dw_group, &pass);
    KN_PARALLEL_RANGES((size_t)K, (size_t)K * CRS * cv->shift_groups > KN_PAR_MIN, add_partials,
                       (dw, scratch, cv->shift_groups, K, CRS, lo, hi));
    if (dbias) kn_bias_backward(dbias, dy, cv->N, K, cv->P * cv->Q);
}
