// Pooling over NCHW planes. Every kernel splits over (image, channel) planes, so each output
// and each gradient plane belongs to one thread.
#include "internal.h"


static int pool_ok(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1) return 0;
    if (ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) return 0;
    return H + 2 * ph >= kh && W + 2 * pw >= kw;
}
#define POOL_OUT(in, k, s, p) (((in) + 2 * (p) - (k)) / (s) + 1)

// The window of output (p, q) clipped to the image: rows [h0, h1), columns [w0, w1). Never
// empty when pool_ok holds (2 * pad <= kernel). Scanning it in row-major order is the order
// every pooling pass uses.
typedef struct { int h0, h1, w0, w1; } window;

static inline window clip(int p, int q, int H, int W, int kh, int kw, int sh, int sw, int ph,
                          int pw) {
    const int h = p * sh - ph, w = q * sw - pw;
    return (window){h < 0 ? 0 : h, h + kh < H ? h + kh : H, w < 0 ? 0 : w, w + kw < W ? w + kw : W};
}

// "First maximum wins, NaN propagates": the rule both passes share, so the backward pass
// finds the forward's choice again.
KN_BODY int beats(float v, float m) { return v > m || v != v; }

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

// 2x2 stride 2 unpadded (the M of the zoo's models), no bounds checks per element: planes
// [lo, hi); the winner as 0..3 (row-major in the window) where arg is given, as selects
KN_BODY void maxpool_2x2_forward(float *y, uint8_t *arg, const float *x, int H, int W, int P,
                                 int Q, size_t lo, size_t hi) {
    for (size_t plane = lo; plane < hi; plane++) {
        const float *xp = x + plane * H * W;
        float *yp = y + plane * P * Q;
        uint8_t *ap = arg ? arg + plane * P * Q : NULL;
        for (int p = 0; p < P; p++) {
            const float *r0 = xp + (size_t)(2 * p) * W, *r1 = r0 + W;
            for (int q = 0; q < Q; q++) {
                const float a = r0[2 * q], b = r0[2 * q + 1], c = r1[2 * q], e = r1[2 * q + 1];
                const int wb = beats(b, a);
                const float m1 = wb ? b : a;
                const int wc = beats(c, m1);
                const float m2 = wc ? c : m1;
                const int we = beats(e, m2);
                yp[p * Q + q] = we ? e : m2;
                if (ap) ap[p * Q + q] = (uint8_t)(we ? 3 : wc ? 2 : wb);
            }
        }
    }
}
KN_BY_ISA(maxpool_2x2_forward,
          (float *y, uint8_t *arg, const float *x, int H, int W, int P, int Q, size_t lo,
           size_t hi),
          (y, arg, x, H, W, P, Q, lo, hi))

// planes [lo, hi): each output's gradient (0 where the mask is not positive) to its winner
KN_BODY void maxpool_2x2_argmax_backward(float *dx, const float *dy, const uint8_t *arg,
                                         const float *mask, int H, int W, int P, int Q,
                                         size_t lo, size_t hi) {
    for (size_t plane = lo; plane < hi; plane++) {
        const float *dyp = dy + plane * P * Q, *mp = mask ? mask + plane * P * Q : NULL;
        const uint8_t *ap = arg + plane * P * Q;
        float *dxp = dx + plane * H * W;
        for (int p = 0; p < P; p++) {
            float *d0 = dxp + (size_t)(2 * p) * W, *d1 = d0 + W;
            for (int q = 0; q < Q; q++) {
                const float g0 = dyp[p * Q + q], g = mp && !(mp[p * Q + q] > 0.0f) ? 0.0f : g0;
                const int a = ap[p * Q + q];
                d0[2 * q] += a == 0 ? g : 0.0f;
                d0[2 * q + 1] += a == 1 ? g : 0.0f;
                d1[2 * q] += a == 2 ? g : 0.0f;
                d1[2 * q + 1] += a == 3 ? g : 0.0f;
            }
        }
    }
}
KN_BY_ISA(maxpool_2x2_argmax_backward,
          (float *dx, const float *dy, const uint8_t *arg, const float *mask, int H, int W, int P,
           int Q, size_t lo, size_t hi),
          (dx, dy, arg, mask, H, W, P, Q, lo, hi))

// The maximum of each window, and with arg its winner's place in the window.
static kn_status maxpool_forward(float *y, uint8_t *arg, const float *x, int N, int C, int H,
                                 int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    if (!pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw) || (arg && kh * kw > 256)) return KN_EINVAL;
    const int P = POOL_OUT(H, kh, sh, ph), Q = POOL_OUT(W, kw, sw, pw);
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0) {
        KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * H * W > KN_PAR_MIN,
                           maxpool_2x2_forward, (y, arg, x, H, W, P, Q, lo, hi));
        return KN_OK;
    }
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * H * W > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        const float *xp = x + plane * H * W;
        float *yp = y + plane * P * Q;
        uint8_t *ap = arg ? arg + plane * P * Q : NULL;
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const window win = clip(p, q, H, W, kh, kw, sh, sw, ph, pw);
                const int h = p * sh - ph, w = q * sw - pw;
                int a = (win.h0 - h) * kw + (win.w0 - w);
                float m = xp[win.h0 * W + win.w0];
                for (int ih = win.h0; ih < win.h1; ih++)
                    for (int iw = win.w0; iw < win.w1; iw++)
                        if (beats(xp[ih * W + iw], m)) {
                            m = xp[ih * W + iw];
                            a = (ih - h) * kw + (iw - w);
                        }
                yp[p * Q + q] = m;
                if (ap) ap[p * Q + q] = (uint8_t)a;
            }
    }
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
    const int P = POOL_OUT(H, kh, sh, ph), Q = POOL_OUT(W, kw, sw, pw);
    const uint8_t *arg = argmax;
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0) {
        KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * H * W > KN_PAR_MIN,
                           maxpool_2x2_argmax_backward, (dx, dy, arg, mask, H, W, P, Q, lo, hi));
        return KN_OK;
    }
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) \
    if ((size_t)N * C * H * W > KN_PAR_MIN)
    for (long plane = 0; plane < (long)N * C; plane++) {
        float *dxp = dx + plane * H * W;
        const float *dyp = dy + plane * P * Q, *mp = mask ? mask + plane * P * Q : NULL;
        const uint8_t *ap = arg + plane * P * Q;
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++) {
                const int a = ap[p * Q + q], ih = p * sh - ph + a / kw, iw = q * sw - pw + a % kw;
                const float g = dyp[p * Q + q];
                dxp[ih * W + iw] += mp && !(mp[p * Q + q] > 0.0f) ? 0.0f : g;
            }
    }
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
