// One plane's max pooling and its gradient routing: the arithmetic pool.c's kernels and the
// fused BatchNorm-ReLU-pool passes (batchnorm.c) share, so both give the same bits.
#pragma once
#include "internal.h"

#include <stdint.h>

#define POOL_OUT(in, k, s, p) (((in) + 2 * (p) - (k)) / (s) + 1)

// A pooling's shape: input and output planes, window, stride, padding; `fast` for the 2x2
// stride-2 unpadded window (the M of the zoo's models), which skips the bounds checks.
typedef struct { int H, W, P, Q, kh, kw, sh, sw, ph, pw, fast; } pool_geom;

static inline int pool_ok(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    if (N < 1 || C < 1 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1) return 0;
    if (ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) return 0;
    return H + 2 * ph >= kh && W + 2 * pw >= kw;
}

static inline pool_geom pool_geometry(int H, int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    return (pool_geom){H, W, POOL_OUT(H, kh, sh, ph), POOL_OUT(W, kw, sw, pw), kh, kw, sh, sw, ph, pw,
                       kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0};
}

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

// y (P x Q) = the maximum of each window of x (H x W); with ap, each winner's row-major
// place in its unclipped window (0..3 for 2x2, as selects)
KN_BODY void maxpool_plane(float *yp, uint8_t *ap, const float *xp, pool_geom g) {
    const int H = g.H, W = g.W, P = g.P, Q = g.Q;
    if (g.fast) {
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
        return;
    }
    for (int p = 0; p < P; p++)
        for (int q = 0; q < Q; q++) {
            const window win = clip(p, q, H, W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
            const int h = p * g.sh - g.ph, w = q * g.sw - g.pw;
            int a = (win.h0 - h) * g.kw + (win.w0 - w);
            float m = xp[win.h0 * W + win.w0];
            for (int ih = win.h0; ih < win.h1; ih++)
                for (int iw = win.w0; iw < win.w1; iw++)
                    if (beats(xp[ih * W + iw], m)) {
                        m = xp[ih * W + iw];
                        a = (ih - h) * g.kw + (iw - w);
                    }
            yp[p * Q + q] = m;
            if (ap) ap[p * Q + q] = (uint8_t)a;
        }
}

// dx (H x W) += each output's gradient at its recorded winner; with mp, 0 where mp is not
// positive (a ReLU right before the pool: max and ReLU commute)
KN_BODY void route_plane(float *dxp, const float *dyp, const uint8_t *ap, const float *mp, pool_geom g) {
    const int W = g.W, P = g.P, Q = g.Q;
    if (g.fast) {
        for (int p = 0; p < P; p++) {
            float *d0 = dxp + (size_t)(2 * p) * W, *d1 = d0 + W;
            for (int q = 0; q < Q; q++) {
                const float g0 = dyp[p * Q + q], gr = mp && !(mp[p * Q + q] > 0.0f) ? 0.0f : g0;
                const int a = ap[p * Q + q];
                d0[2 * q] += a == 0 ? gr : 0.0f;
                d0[2 * q + 1] += a == 1 ? gr : 0.0f;
                d1[2 * q] += a == 2 ? gr : 0.0f;
                d1[2 * q + 1] += a == 3 ? gr : 0.0f;
            }
        }
        return;
    }
    for (int p = 0; p < P; p++)
        for (int q = 0; q < Q; q++) {
            const int a = ap[p * Q + q], ih = p * g.sh - g.ph + a / g.kw, iw = q * g.sw - g.pw + a % g.kw;
            const float gr = dyp[p * Q + q];
            dxp[ih * W + iw] += mp && !(mp[p * Q + q] > 0.0f) ? 0.0f : gr;
        }
}
