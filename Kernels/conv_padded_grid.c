// Stride-1 convolution as an implicit GEMM over the zero-padded input: the padded grid.
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
// Chunks of images, their slots and how they go across the team: conv.c and conv_plan.c.
#include "conv_internal.h"

static kn_view shift_view(const float *xp, const kn_conv2d *cv, kn_grid g) {
    return (kn_view){.kind = KN_VIEW_SHIFT, .data = (float *)xp, .R = cv->R, .S = cv->S,
                     .rstep = cv->dil_h * g.wp, .sstep = cv->dil_w, .T = g.rows * g.wp,
                     .cstride = (long)kn_grid_plane(g), .image = (long)(g.ch * kn_grid_plane(g))};
}

// One chunk of forward or backward-data: pad its images, one GEMM over the padded grid, crop
// into out.
void kn_padded_grid_chunk(const void *p, int chunk, float *slot) {
    const kn_grid_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const kn_grid g = ps->g;
    int n0, nb;
    kn_chunk_images(cv, chunk, cv->implicit_images, &n0, &nb);
    const int T = g.rows * g.wp, depth = g.ch * cv->R * cv->S;
    float *inp = slot, *outp = slot + (size_t)cv->implicit_images * g.ch * kn_grid_plane(g) + kn_grid_slack(cv);
    const kn_view A = kn_weights_view(cv, ps->w, ps->transposed);
    kn_pad_chunk(inp, ps->in, n0, nb, g, ps->in_h, ps->in_w, kn_grid_slack(cv));
    const kn_view view = shift_view(inp, cv, g);
    const kn_view B = ps->transposed ? kn_flipped_taps(view) : view;
    const kn_view C = {.kind = KN_VIEW_NCHW, .data = outp, .ch = ps->out_ch, .plane = T};
    kn_gemm_views(ps->out_ch, nb * T, depth, 1.0f, &A, &B, 0.0f, &C);
    kn_crop_chunk(ps->out, outp, n0, nb, ps->out_ch, g.rows, ps->out_w, g.wp, ps->bias, ps->transposed);
}

// One group of backward-weights: its run of chunks, in order, into its own partial dw^T.
void kn_padded_grid_dw_group(const void *p, int group, float *slot) {
    const kn_dw_pass *ps = p;
    const kn_conv2d *cv = ps->cv;
    const kn_grid g = kn_forward_grid(cv);
    const int K = cv->K, CRS = cv->C * cv->R * cv->S, T = cv->P * g.wp;
    float *xp = slot, *dyp = slot + (size_t)cv->implicit_images * cv->C * kn_grid_plane(g) + kn_grid_slack(cv);
    float *dwt = ps->partials + (size_t)group * CRS * K;
    // dy on the padded grid: P rows of Wp, the junk columns zero
    const kn_grid dyg = {K, cv->P, g.wp, cv->P, 0, 0, cv->Q};
    size_t lo, hi;
    kn_part((size_t)kn_implicit_chunks(cv), (size_t)cv->implicit_groups, (size_t)group, &lo, &hi);
    for (size_t c = lo; c < hi; c++) {
        int n0, nb;
        kn_chunk_images(cv, (int)c, cv->implicit_images, &n0, &nb);
        const kn_view C = {.kind = KN_VIEW_DENSE, .data = dwt, .ld = K};
        kn_pad_chunk(xp, ps->x, n0, nb, g, cv->H, cv->W, kn_grid_slack(cv));
        kn_pad_chunk(dyp, ps->dy, n0, nb, dyg, cv->P, cv->Q, 0);
        // dw^T (CRS, K) += shift(xp) . dyp^T: the shifted runs are A's rows, read in place,
        // and only dy (K rows, 1/9 of the column matrix for a 3x3 conv) is packed
        const kn_view A = shift_view(xp, cv, g);
        const kn_view B = {.kind = KN_VIEW_NCHW_T, .data = dyp, .ch = K, .plane = T};
        kn_gemm_views(CRS, K, nb * T, 1.0f, &A, &B, c == lo ? 0.0f : 1.0f, &C);
    }
}
