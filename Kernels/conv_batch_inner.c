// Stride-1 convolution as an implicit GEMM with each chunk's images innermost, for narrow
// planes: a chunk of nb images is laid out (C, Hp, Wp, nb). Input (c, h, w) of image n sits at
// ((c * hp + h) * wp + w) * nb + n, so output row p of every image in the chunk, (q, n) for
// q < Q, is one contiguous run of Q * nb columns, and tap (r, s) shifts that run by
// (r * wp + s) * nb: the padded grid's shifted runs with no junk column at all (the grid's
// share of junk grows as planes narrow), and rows long enough for the micro-tiles. Padding
// transposes each chunk in, and the output is transposed back to NCHW. The passes are the
// padded grid's (conv_padded_grid.c) in this layout.
#include "conv_internal.h"

// The shifted rows of a chunk: column (p, t) of row (c, r, s) reads
// xp[c * cstride + p * image + r * rstep + s * sstep + t], a "view image" per output row.
static kn_view inner_view(const float *xp, const kn_conv2d *cv, kn_grid g, int nb) {
    return (kn_view){.kind = KN_VIEW_SHIFT, .data = (float *)xp, .R = cv->R, .S = cv->S,
                     .rstep = cv->dil_h * g.wp * nb, .sstep = cv->dil_w * nb, .T = g.cols * nb,
                     .cstride = (long)kn_grid_plane(g) * nb, .image = (long)g.wp * nb};
}

// One chunk of forward or backward-data: transpose its images in, one GEMM, transpose out.
void kn_batch_inner_chunk(const void *p, int chunk, float *slot) {
    const kn_grid_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const kn_grid g = ps->g;
    int n0, nb;
    kn_chunk_images(cv, chunk, cv->implicit_images, &n0, &nb);
    const int depth = g.ch * cv->R * cv->S;
    float *inp = slot, *outp = slot + (size_t)cv->implicit_images * g.ch * kn_grid_plane(g) + kn_grid_slack(cv);
    const kn_view A = kn_weights_view(cv, ps->w, ps->transposed);
    const size_t pq = (size_t)g.rows * g.cols, ld = kn_chunk_ld((long)pq * nb);
    kn_pad_inner(inp, ps->in, n0, nb, g, ps->in_h, ps->in_w);
    const kn_view view = inner_view(inp, cv, g, nb);
    const kn_view B = ps->transposed ? kn_flipped_taps(view) : view;
    const kn_view C = {.kind = KN_VIEW_DENSE, .data = outp, .ld = (int)ld};
    kn_gemm_views(ps->out_ch, (int)pq * nb, depth, 1.0f, &A, &B, 0.0f, &C);
    kn_unbatch(ps->out, outp, ld, n0, nb, ps->out_ch, pq, ps->bias, ps->transposed);
}

// One group of backward-weights: its run of chunks, in order, into its own partial dw^T.
void kn_batch_inner_dw_group(const void *p, int group, float *slot) {
    const kn_dw_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const kn_grid g = kn_forward_grid(cv);
    const int K = cv->K, CRS = cv->C * cv->R * cv->S;
    float *xp = slot, *dyp = slot + (size_t)cv->implicit_images * cv->C * kn_grid_plane(g) + kn_grid_slack(cv);
    float *dwt = ps->partials + (size_t)group * CRS * K;
    const kn_grid dyb = {K, cv->P, cv->Q, cv->P, 0, 0, cv->Q}; // dy as (K, P, Q, nb), no junk
    size_t lo, hi;
    kn_part((size_t)kn_implicit_chunks(cv), (size_t)cv->implicit_groups, (size_t)group, &lo, &hi);
    for (size_t c = lo; c < hi; c++) {
        int n0, nb;
        kn_chunk_images(cv, (int)c, cv->implicit_images, &n0, &nb);
        const int depth = cv->P * cv->Q * nb;
        kn_pad_inner(xp, ps->x, n0, nb, g, cv->H, cv->W);
        kn_pad_inner(dyp, ps->dy, n0, nb, dyb, cv->P, cv->Q);
        const kn_view A = inner_view(xp, cv, g, nb);
        const kn_view B = {.kind = KN_VIEW_DENSE_T, .data = dyp, .ld = depth};
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = dwt, .ld = K};
        kn_gemm_views(CRS, K, depth, 1.0f, &A, &B, c == lo ? 0.0f : 1.0f, &C);
    }
}
