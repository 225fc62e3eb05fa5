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
//                    padded by d(R-1) - pad, w' = w read with (K, C) swapped (a view, no
//                    copy) and (R, S) flipped in the shifts of B
//   backward-weights dw^T (CRS, K) += shift(xp) . dyp^T,             dyp = dy on the padded
//                    grid with zeros in the junk columns, so they add nothing
//
// BATCH INNERMOST (KN_CONV_IMPLICIT_BATCH, for narrow planes): a chunk is laid out (C, Hp,
// Wp, nb), the images innermost. Output row p of all nb images, (q, n) for q < Q, is then one
// contiguous run of Q*nb columns, and tap (r, s) shifts it by (r*Wp + s)*nb: the same shifted
// runs with no junk column at all (the padded grid's share of junk grows as planes narrow), and
// rows long enough for the micro-tiles. Padding transposes each chunk in, and the output is
// transposed back to NCHW.
//
// Images go in chunks fixed by the shape (not the team size), a multiple of KN_DW_GROUPS of
// them where the batch allows. When the team is no larger than the chunks (and the scratch
// slots), each thread takes a contiguous run of chunks and runs it alone, in a slot of its
// own: no barrier inside a chunk, and each thread reads the images that the elementwise
// kernels (split the same way, contiguous ranges in thread order) wrote on its own core.
// Where two cores share no L3 (a slow cache-line round trip), a team splitting every chunk
// pays that on each barrier and on every image the other core had written. Otherwise (one thread, or more
// threads than chunks) the chunks go one after another, each on the whole team. Forward and
// backward-data give the same bits either way. Backward-weights sums its chunks in
// `shift_groups` fixed runs, each in order into a partial dw^T of its own, and the partials
// in order at the end, so its bits do not depend on the team either.
#include "internal.h"

#include <string.h>


// Geometry of one padded-grid GEMM: input planes (ch, hp, wp), output grid rows x wp, of
// which the first `cols` columns are the output's.
typedef struct {
    int ch, hp, wp, rows;
    int top, left; // where the unpadded input sits inside the padded plane
    int cols;
} grid;

static grid forward_grid(const kn_conv2d *cv) {
    return (grid){cv->C, cv->H + 2 * cv->pad_h, cv->W + 2 * cv->pad_w, cv->P, cv->pad_h, cv->pad_w, cv->Q};
}
// The transposed conv of backward-data reads dy padded by d(R-1) - pad and yields H rows.
static grid backward_grid(const kn_conv2d *cv) {
    const int ph = cv->dil_h * (cv->R - 1) - cv->pad_h, pw = cv->dil_w * (cv->S - 1) - cv->pad_w;
    return (grid){cv->K, cv->P + 2 * ph, cv->Q + 2 * pw, cv->H, ph, pw, cv->W};
}
static size_t slack(const kn_conv2d *cv) { return (size_t)cv->dil_w * (cv->S - 1) + 16; }
KN_BODY size_t plane(grid g) { return (size_t)g.hp * g.wp; }

// The padded grid computes Wp - Q junk columns per output row; im2col instead writes and
// re-reads the column matrix, a cost that each of the GEMM's rows (output channels) shares.
// On the docs/WORKLOADS.md layers (kernel-bench --algo) the padded grid wins while junk
// fraction x rows <= 16, and loses with under 8 rows (a mostly empty micro-tile).
static int grid_pays(const kn_conv2d *cv, int out_channels) {
    const int wp = cv->W + 2 * cv->pad_w;
    return out_channels >= 8 && (long)(wp - cv->Q) * out_channels <= 16L * cv->Q;
}

kn_conv_algo kn_conv2d_choose_implicit(const kn_conv2d *cv, kn_conv_pass pass) {
    const int rows = pass == KN_PASS_BACKWARD_DATA ? cv->C : cv->K;
    // Planes narrower than 16 (the 8x8 to 2x2 layers) take the batch-innermost layout, whose
    // GEMM has no junk, where it is faster than im2col or as fast (kernel-bench --algo batch
    // and --algo im2col): forward and backward-data everywhere; backward-weights from 8x8 up
    // (at 2x2 its one-chunk GEMM and transposed partial lose).
    if (cv->Q < 16 && cv->W < 16) {
        const int pays = pass != KN_PASS_BACKWARD_WEIGHTS || cv->Q >= 8;
        return pays && rows >= 8 ? KN_CONV_IMPLICIT_BATCH : KN_CONV_IM2COL;
    }
    return grid_pays(cv, rows) ? KN_CONV_IMPLICIT : KN_CONV_IM2COL;
}

static int batch_inner(const kn_conv2d *cv) {
    return cv->algo_forward == KN_CONV_IMPLICIT_BATCH || cv->algo_backward_data == KN_CONV_IMPLICIT_BATCH ||
           cv->algo_backward_weights == KN_CONV_IMPLICIT_BATCH;
}
static int implicit(kn_conv_algo a) { return a == KN_CONV_IMPLICIT || a == KN_CONV_IMPLICIT_BATCH; }
// Columns of the GEMM's output per grid row: the padded width, or (batch innermost) the output's.
static int grid_cols(const kn_conv2d *cv, grid g) { return batch_inner(cv) ? g.cols : g.wp; }

#define KN_DW_GROUPS 4
// The side of the square tile through which add_partials transposes.
#define KN_T_BLOCK 16
// Images per batch-innermost chunk: enough that a row of the output (cols x images) spans
// several micro-tiles (a tile crossing rows is packed instead of read in place), but at most
// 32, so a batch of 64 makes two chunks, one per thread of a team of two (kn_run_items).
#ifndef KN_BATCH_COLS
#define KN_BATCH_COLS 256
#endif
#ifndef KN_BATCH_IMAGES
#define KN_BATCH_IMAGES 32
#endif

// Floats of one image in a chunk slot: its padded input and padded-grid output, in the
// largest implicit pass.
static size_t slot_image(const kn_conv2d *cv) {
    const grid f = forward_grid(cv);
    size_t per_image = 0;
    if (implicit(cv->algo_forward) || implicit(cv->algo_backward_weights))
        per_image = cv->C * plane(f) + (size_t)cv->K * cv->P * grid_cols(cv, f);
    if (implicit(cv->algo_backward_data)) {
        const grid b = backward_grid(cv);
        const size_t bwd = cv->K * plane(b) + (size_t)cv->C * cv->H * grid_cols(cv, b);
        if (bwd > per_image) per_image = bwd;
    }
    return per_image;
}
// (batch innermost: each output row's stride rounded by kn_chunk_ld, up to 31 floats more)
static size_t slot_floats(const kn_conv2d *cv) {
    const size_t ld_pad = batch_inner(cv) ? 32 * (size_t)(cv->K > cv->C ? cv->K : cv->C) : 0;
    return cv->shift_images * slot_image(cv) + slack(cv) + ld_pad;
}
static int chunk_count(const kn_conv2d *cv) { return (cv->N + cv->shift_images - 1) / cv->shift_images; }
// Floats before the slots: backward-weights' partials.
static size_t shared_floats(const kn_conv2d *cv) {
    const size_t kcrs = (size_t)cv->K * cv->C * cv->R * cv->S;
    return implicit(cv->algo_backward_weights) ? cv->shift_groups * kcrs : 0;
}

size_t kn_conv2d_plan_shift(kn_conv2d *cv, size_t chunk_limit, size_t total_limit) {
    const size_t per_image = slot_image(cv), kcrs = (size_t)cv->K * cv->C * cv->R * cv->S;
    if (per_image == 0) return 0;
    size_t nb = chunk_limit / per_image;
    if (batch_inner(cv)) {
        // long output rows rather than a cache-sized chunk, within the limit with one slot
        nb = (KN_BATCH_COLS + cv->Q - 1) / cv->Q;
        if (nb > KN_BATCH_IMAGES) nb = KN_BATCH_IMAGES;
        cv->shift_images = (int)nb; // slot_floats reads it
        while (nb > 1 && kcrs + slot_floats(cv) > total_limit) cv->shift_images = (int)(nb /= 2);
    }
    if (nb > (size_t)cv->N) nb = cv->N;
    if (nb < 1) nb = 1;
    // round the chunk count up to a multiple of the groups (smaller chunks), so a team of 2
    // or 4 gets equal shares (the batch-innermost chunks keep their long rows instead)
    const size_t chunks = (cv->N + nb - 1) / nb;
    const size_t even = (chunks + KN_DW_GROUPS - 1) / KN_DW_GROUPS * KN_DW_GROUPS;
    if (!batch_inner(cv) && even <= (size_t)cv->N) nb = (cv->N + even - 1) / even;
    cv->shift_images = (int)nb;
    const int n_chunks = chunk_count(cv);
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

// MARK: Batch innermost: a chunk of nb images as (ch, hp, wp, nb)
// Input (c, h, w) of image n sits at ((c * hp + h) * wp + w) * nb + n, so the output row p of
// every image in the chunk, (q, n) for q < cols, is one contiguous run of cols * nb columns,
// and tap (r, s) shifts that run by (r * wp + s) * nb: no junk columns at all.

// Channels [lo, hi) of dst (ch, hp, wp, nb) = images [n0, n0+nb) of src (N, ch, h, w), the
// image innermost, at (top, left) in zero frames. (A transpose per channel, in L1: a channel
// of a chunk is 13 KiB on vgg11's 8x8 layers.)
KN_BODY void pad_inner_planes(float *dst, const float *src, int n0, int nb, grid g, int h, int w,
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
          (float *dst, const float *src, int n0, int nb, grid g, int h, int w, size_t lo, size_t hi),
          (dst, src, n0, nb, g, h, w, lo, hi))

static void pad_inner(float *dst, const float *src, int n0, int nb, grid g, int h, int w) {
    KN_PARALLEL_RANGES((size_t)g.ch, (size_t)g.ch * plane(g) * nb > KN_PAR_MIN, pad_inner_planes,
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

static kn_view shift_view(const float *xp, const kn_conv2d *cv, grid g) {
    return (kn_view){.kind = KN_VIEW_SHIFT, .data = (float *)xp, .R = cv->R, .S = cv->S,
                     .rstep = cv->dil_h * g.wp, .sstep = cv->dil_w, .T = g.rows * g.wp,
                     .cstride = (long)plane(g), .image = (long)(g.ch * plane(g))};
}

// The shifted rows of a batch-innermost chunk: column (p, t) of row (c, r, s) reads
// xp[c * cstride + p * image + r * rstep + s * sstep + t], a "view image" per output row.
static kn_view inner_view(const float *xp, const kn_conv2d *cv, grid g, int nb) {
    return (kn_view){.kind = KN_VIEW_SHIFT, .data = (float *)xp, .R = cv->R, .S = cv->S,
                     .rstep = cv->dil_h * g.wp * nb, .sstep = cv->dil_w * nb, .T = g.cols * nb,
                     .cstride = (long)plane(g) * nb, .image = (long)g.wp * nb};
}

static void run_items(const kn_conv2d *cv, int items, float *slots, kn_item_fn fn, const void *pass) {
    kn_run_items(items, cv->shift_slots, slots, slot_floats(cv), fn, pass);
}

// Forward and backward-data: out = w . shift(in padded to the grid g), cropped.
typedef struct {
    const kn_conv2d *cv;
    grid g;              // the padded input's planes and the output grid
    int in_h, in_w;      // the unpadded input's planes
    int out_ch, out_w;   // output channels and columns (the grid's rows are its rows)
    const float *w, *in, *bias;
    float *out;
    int transposed;      // backward-data: the transposed conv, added into out
} grid_pass;

// The GEMM's A: the weights (K, C*R*S); for the transposed conv the same memory read as
// (C, K*R*S), row c, depth (k, r, s) at w[k][c][r][s] (an NCHW view with planes of R*S), and
// the kernel's flip goes into B's shifts (flipped_taps): nothing is copied.
static kn_view weights_view(const grid_pass *ps, int depth) {
    if (!ps->transposed) return (kn_view){.kind = KN_VIEW_DENSE, .data = (float *)ps->w, .ld = depth};
    return (kn_view){.kind = KN_VIEW_NCHW, .data = (float *)ps->w, .ch = ps->out_ch,
                     .plane = ps->cv->R * ps->cv->S};
}

// Row (k, r, s) of a shift view reading tap (R-1-r, S-1-s): the transposed conv's flip.
static kn_view flipped_taps(kn_view v) {
    v.data += (long)(v.R - 1) * v.rstep + (long)(v.S - 1) * v.sstep;
    v.rstep = -v.rstep;
    v.sstep = -v.sstep;
    return v;
}

// One chunk: pad its images, one GEMM over the padded grid, crop into out.
static void grid_chunk(const void *p, int chunk, float *slot) {
    const grid_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const grid g = ps->g;
    const int n0 = chunk * cv->shift_images;
    const int nb = cv->N - n0 < cv->shift_images ? cv->N - n0 : cv->shift_images;
    const int T = g.rows * g.wp, depth = g.ch * cv->R * cv->S;
    float *inp = slot, *outp = slot + (size_t)cv->shift_images * g.ch * plane(g) + slack(cv);
    const kn_view A = weights_view(ps, depth);
    if (batch_inner(cv)) {
        const size_t pq = (size_t)g.rows * g.cols, ld = kn_chunk_ld((long)pq * nb);
        pad_inner(inp, ps->in, n0, nb, g, ps->in_h, ps->in_w);
        const kn_view view = inner_view(inp, cv, g, nb);
        const kn_view B = ps->transposed ? flipped_taps(view) : view;
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = outp, .ld = (int)ld};
        kn_gemm_views(ps->out_ch, (int)pq * nb, depth, 1.0f, &A, &B, 0.0f, &C);
        KN_PARALLEL_RANGES((size_t)ps->out_ch, pq * nb * ps->out_ch > KN_PAR_MIN, unbatch_planes,
                           (ps->out, outp, ld, n0, nb, ps->out_ch, pq, ps->bias, ps->transposed, lo, hi));
        return;
    }
    pad_chunk(inp, ps->in, n0, nb, g, ps->in_h, ps->in_w, slack(cv));
    const kn_view view = shift_view(inp, cv, g);
    const kn_view B = ps->transposed ? flipped_taps(view) : view;
    const kn_view C = {.kind = KN_VIEW_NCHW, .data = outp, .ch = ps->out_ch, .plane = T};
    kn_gemm_views(ps->out_ch, nb * T, depth, 1.0f, &A, &B, 0.0f, &C);
    crop_chunk(ps->out, outp, n0, nb, ps->out_ch, g.rows, ps->out_w, g.wp, ps->bias, ps->transposed);
}

void kn_conv2d_forward_shift(const kn_conv2d *cv, float *y, const float *x, const float *w,
                             const float *bias, float *scratch) {
    const grid_pass pass = {cv, forward_grid(cv), cv->H, cv->W, cv->K, cv->Q, w, x, bias, y, 0};
    run_items(cv, chunk_count(cv), scratch + shared_floats(cv), grid_chunk, &pass);
}

void kn_conv2d_backward_data_shift(const kn_conv2d *cv, float *dx, const float *dy,
                                   const float *w, float *scratch) {
    const grid_pass pass = {cv, backward_grid(cv), cv->P, cv->Q, cv->C, cv->W, w, dy, NULL, dx, 1};
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
    const grid dyg = {K, cv->P, g.wp, cv->P, 0, 0, cv->Q};
    // batch innermost: dy as (K, P, Q, nb), no junk
    const grid dyb = {K, cv->P, cv->Q, cv->P, 0, 0, cv->Q};
    size_t lo, hi;
    kn_part((size_t)chunk_count(cv), (size_t)cv->shift_groups, (size_t)group, &lo, &hi);
    for (size_t c = lo; c < hi; c++) {
        const int n0 = (int)c * cv->shift_images;
        const int nb = cv->N - n0 < cv->shift_images ? cv->N - n0 : cv->shift_images;
        const float beta = c == lo ? 0.0f : 1.0f;
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = dwt, .ld = K};
        if (batch_inner(cv)) {
            const int depth = cv->P * cv->Q * nb;
            pad_inner(xp, ps->x, n0, nb, g, cv->H, cv->W);
            pad_inner(dyp, ps->dy, n0, nb, dyb, cv->P, cv->Q);
            const kn_view A = inner_view(xp, cv, g, nb);
            const kn_view B = {.kind = KN_VIEW_DENSE_T, .data = dyp, .ld = depth};
            kn_gemm_views(CRS, K, depth, 1.0f, &A, &B, beta, &C);
            continue;
        }
        pad_chunk(xp, ps->x, n0, nb, g, cv->H, cv->W, slack(cv));
        pad_chunk(dyp, ps->dy, n0, nb, dyg, cv->P, cv->Q, 0);
        // dw^T (CRS, K) += shift(xp) . dyp^T: the shifted runs are A's rows, read in place,
        // and only dy (K rows, 1/9 of the column matrix for a 3x3 conv) is packed
        const kn_view A = shift_view(xp, cv, g);
        const kn_view B = {.kind = KN_VIEW_NCHW_T, .data = dyp, .ch = K, .plane = T};
        kn_gemm_views(CRS, K, nb * T, 1.0f, &A, &B, beta, &C);
    }
}

// dw (K, CRS) += the partials dw^T (CRS, K) of the groups, in group order; blocks [lo, hi) of
// KN_T_BLOCK rows of dw. Through a KN_T_BLOCK-square tile in L1: the sums run along the
// partials' rows and the adds along dw's, both contiguous (a loop along either alone missed
// on every element of the other).
KN_BODY void add_partials(float *dw, const float *partials, int groups, int K, int CRS, size_t lo,
                          size_t hi) {
    float tile[KN_T_BLOCK][KN_T_BLOCK], sum[KN_T_BLOCK];
    const size_t part = (size_t)CRS * K;
    for (size_t b = lo; b < hi; b++) {
        const int k0 = (int)b * KN_T_BLOCK, kn = K - k0 < KN_T_BLOCK ? K - k0 : KN_T_BLOCK;
        for (int i0 = 0; i0 < CRS; i0 += KN_T_BLOCK) {
            const int in = CRS - i0 < KN_T_BLOCK ? CRS - i0 : KN_T_BLOCK;
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
          (float *dw, const float *partials, int groups, int K, int CRS, size_t lo, size_t hi),
          (dw, partials, groups, K, CRS, lo, hi))

void kn_conv2d_backward_weights_shift(const kn_conv2d *cv, float *dw, float *dbias,
                                      const float *dy, const float *x, float *scratch) {
    const int K = cv->K, CRS = cv->C * cv->R * cv->S;
    const dw_pass pass = {cv, dy, x, scratch};
    run_items(cv, cv->shift_groups, scratch + shared_floats(cv), dw_group, &pass);
    KN_PARALLEL_RANGES((size_t)(K + KN_T_BLOCK - 1) / KN_T_BLOCK, (size_t)K * CRS * cv->shift_groups > KN_PAR_MIN, add_partials,
                       (dw, scratch, cv->shift_groups, K, CRS, lo, hi));
    if (dbias) kn_bias_backward(dbias, dy, cv->N, K, cv->P * cv->Q);
}
