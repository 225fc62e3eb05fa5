// Pooling over NCHW planes. Every kernel splits over (image, channel) planes, so each output
// and each gradient plane belongs to one thread.
#include "pool_plane.h"


// The scan from the input: windows of more than 256 positions, and the reference the
// recorded winners are tested against.
kn_status kn_maxpool2d_backward(float *dx, const float *dy, const float *x, int N, int C, int H,
                                int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    if (!pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw)) return KN_EINVAL;
    const int P = POOL_OUT(H, kh, sh, ph), Q = POOL_OUT(W, kw, sw, pw);
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * H * W > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        const float *xp = x + plane * H * W;
        float *dxp = dx + plane * H * W;
        const float *dyp = dy + plane * P * Q;
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                // the same scan as the forward: the first maximum wins
                const window win = clip(p, q, H, W, kh, kw, sh, sw, ph, pw);
                int arg = win.h0 * W + win.w0;
                float m = xp[arg];
                for (int ih = win.h0; ih < win.h1; ih++)
                    for (int iw = win.w0; iw < win.w1; iw++)
                        if (beats(xp[ih * W + iw], m)) m = xp[arg = ih * W + iw];
                dxp[arg] += dyp[p * Q + q];
            }
    }
    return KN_OK;
}

// MARK: max pooling, recording each window's winner where asked

// planes [lo, hi) of y from x, with their winners where arg is given
KN_BODY void maxpool_planes(float *y, uint8_t *arg, const float *x, pool_geom g, size_t lo, size_t hi) {
    for (size_t plane = lo; plane < hi; plane++)
        maxpool_plane(y + plane * g.P * g.Q, arg ? arg + plane * g.P * g.Q : NULL, x + plane * g.H * g.W, g);
}
KN_BY_ISA(maxpool_planes, (float *y, uint8_t *arg, const float *x, pool_geom g, size_t lo, size_t hi),
          (y, arg, x, g, lo, hi))

// planes [lo, hi): each output's gradient (0 where the mask is not positive) to its winner
KN_BODY void route_planes(float *dx, const float *dy, const uint8_t *arg, const float *mask, pool_geom g,
                          size_t lo, size_t hi) {
    const size_t pq = (size_t)g.P * g.Q;
    for (size_t plane = lo; plane < hi; plane++)
        route_plane(dx + plane * g.H * g.W, dy + plane * pq, arg + plane * pq, mask ? mask + plane * pq : NULL, g);
}
KN_BY_ISA(route_planes,
          (float *dx, const float *dy, const uint8_t *arg, const float *mask, pool_geom g, size_t lo, size_t hi),
          (dx, dy, arg, mask, g, lo, hi))

// The maximum of each window, and with arg its winner's place in the window.
static kn_status maxpool_forward(float *y, uint8_t *arg, const float *x, int N, int C, int H,
                                 int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    if (!pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw) || (arg && kh * kw > 256)) return KN_EINVAL;
    const pool_geom g = pool_geometry(H, W, kh, kw, sh, sw, ph, pw);
    KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * H * W > KN_PAR_MIN, maxpool_planes, (y, arg, x, g, lo, hi));
    return KN_OK;
}

kn_status kn_maxpool2d_forward(float *y, const float *x, int N, int C, int H, int W, int kh,
                               int kw, int sh, int sw, int ph, int pw) {
    return maxpool_forward(y, NULL, x, N, C, H, W, kh, kw, sh, sw, ph, pw);
}

kn_status kn_maxpool2d_argmax_forward(float *y, void *argmax, const float *x, int N, int C, int H,
                                      int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    if (!argmax) return KN_EINVAL;
    return maxpool_forward(y, argmax, x, N, C, H, W, kh, kw, sh, sw, ph, pw);
}

kn_status kn_maxpool2d_argmax_backward(float *dx, const float *dy, const void *argmax,
                                       const float *mask, int N, int C, int H, int W, int kh,
                                       int kw, int sh, int sw, int ph, int pw) {
    if (!pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw) || kh * kw > 256) return KN_EINVAL;
    const pool_geom g = pool_geometry(H, W, kh, kw, sh, sw, ph, pw);
    KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * H * W > KN_PAR_MIN, route_planes,
                       (dx, dy, (const uint8_t *)argmax, mask, g, lo, hi));
    return KN_OK;
}

kn_status kn_avgpool2d_forward(float *y, const float *x, int N, int C, int H, int W, int kh,
                               int kw, int sh, int sw, int ph, int pw) {
    if (!pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw)) return KN_EINVAL;
    const int P = POOL_OUT(H, kh, sh, ph), Q = POOL_OUT(W, kw, sw, pw);
    const float inv = 1.0f / (float)(kh * kw); // padding counts in the divisor
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * H * W > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        const float *xp = x + plane * H * W;
        float *yp = y + plane * P * Q;
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const window win = clip(p, q, H, W, kh, kw, sh, sw, ph, pw);
                float acc = 0.0f;
                for (int ih = win.h0; ih < win.h1; ih++)
                    for (int iw = win.w0; iw < win.w1; iw++) acc += xp[ih * W + iw];
                yp[p * Q + q] = acc * inv;
            }
    }
    return KN_OK;
}

kn_status kn_avgpool2d_backward(float *dx, const float *dy, int N, int C, int H, int W, int kh,
                                int kw, int sh, int sw, int ph, int pw) {
    if (!pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw)) return KN_EINVAL;
    const int P = POOL_OUT(H, kh, sh, ph), Q = POOL_OUT(W, kw, sw, pw);
    const float inv = 1.0f / (float)(kh * kw);
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * H * W > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        float *dxp = dx + plane * H * W;
        const float *dyp = dy + plane * P * Q;
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const float g = dyp[p * Q + q] * inv;
                const window win = clip(p, q, H, W, kh, kw, sh, sw, ph, pw);
                for (int ih = win.h0; ih < win.h1; ih++)
                    for (int iw = win.w0; iw < win.w1; iw++) dxp[ih * W + iw] += g;
            }
    }
    return KN_OK;
}

void kn_global_avgpool_forward(float *y, const float *x, int N, int C, int HW) {
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        const float *xp = x + plane * HW;
        float acc = 0.0f;
        for (int i = 0; i < HW; i++) acc += xp[i];
        y[plane] = acc / (float)HW;
    }
}

void kn_global_avgpool_backward(float *dx, const float *dy, int N, int C, int HW) {
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        float *dxp = dx + plane * HW;
        const float g = dy[plane] / (float)HW;
        for (int i = 0; i < HW; i++) dxp[i] += g;
    }
}
