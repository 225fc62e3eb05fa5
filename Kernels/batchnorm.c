// BatchNorm2d. Statistics and parameter gradients are per-channel sums in double, each channel
// summed by one thread in a fixed order: the same bits for any team size.
#include "internal.h"
#include "pool_plane.h"

#include <math.h>
#include <stdlib.h>

// acc += sum of (p - mu)^2
KN_BODY void sq_dev_into(lanes *acc, const float *p, int n, double mu) {
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc->v[k] += (p[i + k] - mu) * (p[i + k] - mu);
    for (; i < n; i++) acc->v[i % LANES] += (p[i] - mu) * (p[i] - mu);
}

// a += sum dy, b += sum dy * (x - mu) * is
KN_BODY void grad_sums_into(lanes *a, lanes *b, const float *dy, const float *x, int n, float mu,
                                  float is) {
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            a->v[k] += dy[i + k];
            b->v[k] += (double)dy[i + k] * ((x[i + k] - mu) * is);
        }
    for (; i < n; i++) {
        a->v[i % LANES] += dy[i];
        b->v[i % LANES] += (double)dy[i] * ((x[i] - mu) * is);
    }
}

// channels [lo, hi)
KN_BODY void stats_channels(float *mean, float *invstd, const float *x, int N, int C, int HW,
                            float eps, size_t lo, size_t hi) {
    const double count = (double)N * HW;
    for (size_t c = lo; c < hi; c++) {
        lanes s = {{0}};
        for (int n = 0; n < N; n++) sum_into(&s, x + ((size_t)n * C + c) * HW, HW);
        const double mu = lanes_total(&s) / count;
        lanes ss = {{0}}; // two passes: no cancellation
        for (int n = 0; n < N; n++) sq_dev_into(&ss, x + ((size_t)n * C + c) * HW, HW, mu);
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(lanes_total(&ss) / count + eps));
    }
}
KN_BY_ISA(stats_channels,
          (float *mean, float *invstd, const float *x, int N, int C, int HW, float eps, size_t lo,
           size_t hi),
          (mean, invstd, x, N, C, HW, eps, lo, hi))

void kn_batchnorm_stats(float *mean, float *invstd, const float *x, int N, int C, int HW,
                        float eps) {
    KN_PARALLEL_RANGES((size_t)C, (size_t)N * C * HW > KN_PAR_MIN, stats_channels,
                       (mean, invstd, x, N, C, HW, eps, lo, hi));
}

// y = x * scale[c] + shift[c] over (image, channel) planes [lo, hi), then with `relu`
// ReLU's select (kn_relu_forward's): the bits of the two passes, in one
KN_BODY void affine_plane(float *yp, const float *xp, float a, float b, int HW, int relu) {
    if (relu)
        for (int i = 0; i < HW; i++) {
            const float v = xp[i] * a + b;
            yp[i] = v > 0.0f ? v : 0.0f;
        }
    else
        for (int i = 0; i < HW; i++) yp[i] = xp[i] * a + b;
}
KN_BODY void affine_planes(float *y, const float *x, const float *scale, const float *shift,
                           int C, int HW, int relu, size_t lo, size_t hi) {
    for (size_t plane = lo; plane < hi; plane++)
        affine_plane(y + plane * HW, x + plane * HW, scale[plane % C], shift[plane % C], HW, relu);
}
KN_BY_ISA(affine_planes,
          (float *y, const float *x, const float *scale, const float *shift, int C, int HW,
           int relu, size_t lo, size_t hi),
          (y, x, scale, shift, C, HW, relu, lo, hi))

// y = x * scale[c] + shift[c] (then ReLU): the forward pass in training and in inference
static void affine(float *y, const float *x, const float *scale, const float *shift, int N,
                   int C, int HW, int relu) {
    KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * HW > KN_PAR_MIN, affine_planes,
                       (y, x, scale, shift, C, HW, relu, lo, hi));
}

// The training forward as y = x * scale + shift: scale (C) then shift (C) in one buffer
// (malloc'd; the caller frees it)
static float *fold_affine(const float *mean, const float *invstd, const float *gamma,
                          const float *beta, int C) {
    float *scale = malloc(sizeof(float) * 2 * (size_t)C), *shift = scale + C;
    if (!scale) abort();
    for (int c = 0; c < C; c++) {
        scale[c] = invstd[c] * gamma[c];
        shift[c] = beta[c] - mean[c] * scale[c];
    }
    return scale;
}

static void normalize(float *y, const float *x, const float *mean, const float *invstd,
                      const float *gamma, const float *beta, int N, int C, int HW, int relu) {
    float *scale = fold_affine(mean, invstd, gamma, beta, C);
    affine(y, x, scale, scale + C, N, C, HW, relu);
    free(scale);
}

void kn_batchnorm_forward(float *y, const float *x, const float *mean, const float *invstd,
                          const float *gamma, const float *beta, int N, int C, int HW) {
    normalize(y, x, mean, invstd, gamma, beta, N, C, HW, 0);
}

void kn_batchnorm_forward_relu(float *y, const float *x, const float *mean, const float *invstd,
                               const float *gamma, const float *beta, int N, int C, int HW) {
    normalize(y, x, mean, invstd, gamma, beta, N, C, HW, 1);
}

// sum = x * scale[c] + shift[c] + shortcut and y = max(sum, 0) over planes [lo, hi): the bits
// of kn_batchnorm_forward then kn_add and kn_add_relu, without writing BN's output
KN_BODY void affine_add_relu_planes(float *sum, float *y, const float *x, const float *shortcut,
                                    const float *scale, const float *shift, int C, int HW,
                                    size_t lo, size_t hi) {
    for (size_t plane = lo; plane < hi; plane++) {
        const float a = scale[plane % C], b = shift[plane % C];
        const size_t o = plane * HW;
        for (int i = 0; i < HW; i++) {
            const float z = x[o + i] * a + b, v = z + shortcut[o + i];
            sum[o + i] = v;
            y[o + i] = v > 0.0f ? v : 0.0f;
        }
    }
}
KN_BY_ISA(affine_add_relu_planes,
          (float *sum, float *y, const float *x, const float *shortcut, const float *scale,
           const float *shift, int C, int HW, size_t lo, size_t hi),
          (sum, y, x, shortcut, scale, shift, C, HW, lo, hi))

void kn_batchnorm_forward_add_relu(float *sum, float *y, const float *x, const float *shortcut,
                                   const float *mean, const float *invstd, const float *gamma,
                                   const float *beta, int N, int C, int HW) {
    float *scale = fold_affine(mean, invstd, gamma, beta, C), *shift = scale + C;
    KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * HW > KN_PAR_MIN, affine_add_relu_planes,
                       (sum, y, x, shortcut, scale, shift, C, HW, lo, hi));
    free(scale);
}

void kn_batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                                 const float *invstd, int C, int count, float eps,
                                 float momentum) {
    for (int c = 0; c < C; c++) {
        const double var = 1.0 / ((double)invstd[c] * invstd[c]) - eps; // biased batch var
        const double unbiased = count > 1 ? var * count / (count - 1) : var;
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean[c]);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
}

void kn_batchnorm_inference(float *y, const float *x, const float *running_mean,
                            const float *running_var, const float *gamma, const float *beta,
                            int N, int C, int HW, float eps) {
    float *scale = malloc(sizeof(float) * 2 * (size_t)C), *shift = scale + C;
    if (!scale) abort();
    for (int c = 0; c < C; c++) {
        scale[c] = gamma[c] / sqrtf(running_var[c] + eps);
        shift[c] = beta[c] - running_mean[c] * scale[c];
    }
    affine(y, x, scale, shift, N, C, HW, 0);
    free(scale);
}

// dx = k * (dy - mdy - xhat * mdyx) over one plane; dx may be dy or x itself (a loop over
// one pointer each way, so it vectorises without an overlap check)
KN_BODY void dx_plane(float *dx, const float *dy, const float *x, int HW, float mu, float is, float k,
                      float mdy, float mdyx) {
    if (dx == dy)
        for (int i = 0; i < HW; i++) {
            const float xhat = (x[i] - mu) * is;
            dx[i] = k * (dx[i] - mdy - xhat * mdyx);
        }
    else if (dx == x)
        for (int i = 0; i < HW; i++) {
            const float xhat = (dx[i] - mu) * is;
            dx[i] = k * (dy[i] - mdy - xhat * mdyx);
        }
    else
        for (int i = 0; i < HW; i++) {
            const float xhat = (x[i] - mu) * is;
            dx[i] = k * (dy[i] - mdy - xhat * mdyx);
        }
}

// channels [lo, hi): a channel's sums and its dx planes belong to one thread
KN_BODY void backward_channels(float *dx, float *dgamma, float *dbeta, const float *dy,
                               const float *x, const float *mean, const float *invstd,
                               const float *gamma, int N, int C, int HW, size_t lo, size_t hi) {
    const double count = (double)N * HW;
    for (size_t c = lo; c < hi; c++) {
        const float mu = mean[c], is = invstd[c];
        lanes a = {{0}}, b = {{0}}; // sum dy, sum dy * xhat
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            grad_sums_into(&a, &b, dy + o, x + o, HW, mu, is);
        }
        const double sdy = lanes_total(&a), sdyx = lanes_total(&b);
        dbeta[c] += (float)sdy;
        dgamma[c] += (float)sdyx;
        const float k = gamma[c] * is, mdy = (float)(sdy / count), mdyx = (float)(sdyx / count);
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            dx_plane(dx + o, dy + o, x + o, HW, mu, is, k, mdy, mdyx);
        }
    }
}
KN_BY_ISA(backward_channels,
          (float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
           const float *mean, const float *invstd, const float *gamma, int N, int C, int HW,
           size_t lo, size_t hi),
          (dx, dgamma, dbeta, dy, x, mean, invstd, gamma, N, C, HW, lo, hi))

void kn_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *invstd,
                           const float *gamma, int N, int C, int HW) {
    KN_PARALLEL_RANGES((size_t)C, (size_t)N * C * HW > KN_PAR_MIN, backward_channels,
                       (dx, dgamma, dbeta, dy, x, mean, invstd, gamma, N, C, HW, lo, hi));
}

// MARK: BatchNorm, ReLU and max pooling in one pass each way

// planes [lo, hi) of relu(x * scale + shift) max-pooled: each normalised plane lives in a
// buffer of this thread's, never in a whole activation
KN_BODY void affine_relu_pool_planes(float *y, uint8_t *arg, const float *x, const float *scale,
                                     const float *shift, int C, pool_geom g, size_t lo, size_t hi) {
    const size_t hw = (size_t)g.H * g.W, pq = (size_t)g.P * g.Q;
    float *z = malloc(sizeof(float) * hw);
    if (!z) abort();
    for (size_t plane = lo; plane < hi; plane++) {
        affine_plane(z, x + plane * hw, scale[plane % C], shift[plane % C], (int)hw, 1);
        maxpool_plane(y + plane * pq, arg + plane * pq, z, g);
    }
    free(z);
}
KN_BY_ISA(affine_relu_pool_planes,
          (float *y, uint8_t *arg, const float *x, const float *scale, const float *shift, int C,
           pool_geom g, size_t lo, size_t hi),
          (y, arg, x, scale, shift, C, g, lo, hi))

kn_status kn_batchnorm_relu_maxpool_forward(float *y, void *argmax, const float *x, const float *mean,
                                            const float *invstd, const float *gamma, const float *beta,
                                            int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                            int ph, int pw) {
    if (!argmax || !pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw) || kh * kw > 256) return KN_EINVAL;
    const pool_geom g = pool_geometry(H, W, kh, kw, sh, sw, ph, pw);
    float *scale = fold_affine(mean, invstd, gamma, beta, C), *shift = scale + C;
    KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * H * W > KN_PAR_MIN, affine_relu_pool_planes,
                       (y, argmax, x, scale, shift, C, g, lo, hi));
    free(scale);
    return KN_OK;
}

// channels [lo, hi): each image's unpooled gradient plane is routed into this thread's buffer
// twice, for the sums and for dx, as kn_maxpool2d_argmax_backward routes it into zeros
KN_BODY void relu_pool_backward_channels(float *dx, float *dgamma, float *dbeta, const float *dy,
                                         const uint8_t *arg, const float *pooled, const float *x,
                                         const float *mean, const float *invstd, const float *gamma,
                                         int N, int C, pool_geom g, size_t lo, size_t hi) {
    const int HW = g.H * g.W;
    const size_t pq = (size_t)g.P * g.Q;
    const double count = (double)N * HW;
    float *dz = malloc(sizeof(float) * (size_t)HW);
    if (!dz) abort();
    for (size_t c = lo; c < hi; c++) {
        const float mu = mean[c], is = invstd[c];
        lanes a = {{0}}, b = {{0}}; // sum dz, sum dz * xhat
        for (int pass = 0; pass < 2; pass++) {
            const float k = gamma[c] * is, mdy = (float)(lanes_total(&a) / count), mdyx = (float)(lanes_total(&b) / count);
            for (int n = 0; n < N; n++) {
                const size_t plane = (size_t)n * C + c;
                for (int i = 0; i < HW; i++) dz[i] = 0.0f;
                route_plane(dz, dy + plane * pq, arg + plane * pq, pooled + plane * pq, g);
                if (pass == 0) grad_sums_into(&a, &b, dz, x + plane * HW, HW, mu, is);
                else dx_plane(dx + plane * HW, dz, x + plane * HW, HW, mu, is, k, mdy, mdyx);
            }
            if (pass == 0) {
                dbeta[c] += (float)lanes_total(&a);
                dgamma[c] += (float)lanes_total(&b);
            }
        }
    }
    free(dz);
}
KN_BY_ISA(relu_pool_backward_channels,
          (float *dx, float *dgamma, float *dbeta, const float *dy, const uint8_t *arg,
           const float *pooled, const float *x, const float *mean, const float *invstd,
           const float *gamma, int N, int C, pool_geom g, size_t lo, size_t hi),
          (dx, dgamma, dbeta, dy, arg, pooled, x, mean, invstd, gamma, N, C, g, lo, hi))

kn_status kn_batchnorm_relu_maxpool_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                             const void *argmax, const float *pooled, const float *x,
                                             const float *mean, const float *invstd, const float *gamma,
                                             int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                             int ph, int pw) {
    if (!argmax || !pool_ok(N, C, H, W, kh, kw, sh, sw, ph, pw) || kh * kw > 256) return KN_EINVAL;
    const pool_geom g = pool_geometry(H, W, kh, kw, sh, sw, ph, pw);
    KN_PARALLEL_RANGES((size_t)C, (size_t)N * C * H * W > KN_PAR_MIN, relu_pool_backward_channels,
                       (dx, dgamma, dbeta, dy, argmax, pooled, x, mean, invstd, gamma, N, C, g, lo, hi));
    return KN_OK;
}

// dz = dy where sum > 0, dz either dy itself or apart from it (each case its own loop, so both
// vectorise)
KN_BODY void residual_mask(float *dz, const float *dy, const float *restrict sum, int n) {
    if (dz == dy) {
        for (int i = 0; i < n; i++) dz[i] = sum[i] > 0.0f ? dz[i] : 0.0f;
    } else {
        float *restrict out = dz;
        const float *restrict in = dy;
        for (int i = 0; i < n; i++) out[i] = sum[i] > 0.0f ? in[i] : 0.0f;
    }
}

// dz as residual_mask; then a += sum dz, b += sum dz * xhat, as grad_sums_into (the mask in
// a loop of its own: beside the sums it kept them scalar, 8x slower)
KN_BODY void residual_sums_into(lanes *a, lanes *b, float *dz, const float *dy,
                                const float *restrict sum, const float *restrict shortcut, int n,
                                float rg, float bt) {
    residual_mask(dz, dy, sum, n);
    const float *restrict z = dz;
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) {
            a->v[k] += z[i + k];
            b->v[k] += (double)z[i + k] * (((sum[i + k] - shortcut[i + k]) - bt) * rg);
        }
    for (; i < n; i++) {
        a->v[i % LANES] += z[i];
        b->v[i % LANES] += (double)z[i] * (((sum[i] - shortcut[i]) - bt) * rg);
    }
}

// dx = k * (dz - mdz - xhat * mdzx) over one plane
KN_BODY void residual_dx(float *restrict dx, const float *restrict dz, const float *restrict sum,
                         const float *restrict shortcut, int n, float rg, float bt, float k,
                         float mdz, float mdzx) {
    for (int i = 0; i < n; i++) {
        const float xhat = ((sum[i] - shortcut[i]) - bt) * rg;
        dx[i] = k * (dz[i] - mdz - xhat * mdzx);
    }
}

// Backward from the kept sum u = BN(x) + shortcut of a residual block ending in ReLU: ReLU's
// mask from u, BN's output z = u - shortcut, and xhat = (z - beta) * (1 / gamma) where the
// forward would have kept x. Channels [lo, hi), each one thread's, sums in double: any team,
// the same bits.
KN_BODY void residual_channels(float *dsum, float *dx, float *dgamma, float *dbeta,
                               const float *dy, const float *sum, const float *shortcut,
                               const float *gamma, const float *beta, const float *invstd,
                               int N, int C, int HW, size_t lo, size_t hi) {
    const double count = (double)N * HW;
    for (size_t c = lo; c < hi; c++) {
        const float g = gamma[c], bt = beta[c], rg = 1.0f / g; // a multiply a value, not a divide
        lanes a = {{0}}, b = {{0}}; // sum dz, sum dz * xhat
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            residual_sums_into(&a, &b, dsum + o, dy + o, sum + o, shortcut + o, HW, rg, bt);
        }
        const double sdz = lanes_total(&a), sdzx = lanes_total(&b);
        dbeta[c] += (float)sdz;
        dgamma[c] += (float)sdzx;
        const float k = g * invstd[c], mdz = (float)(sdz / count), mdzx = (float)(sdzx / count);
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            residual_dx(dx + o, dsum + o, sum + o, shortcut + o, HW, rg, bt, k, mdz, mdzx);
        }
    }
}
KN_BY_ISA(residual_channels,
          (float *dsum, float *dx, float *dgamma, float *dbeta, const float *dy, const float *sum,
           const float *shortcut, const float *gamma, const float *beta, const float *invstd,
           int N, int C, int HW, size_t lo, size_t hi),
          (dsum, dx, dgamma, dbeta, dy, sum, shortcut, gamma, beta, invstd, N, C, HW, lo, hi))

void kn_batchnorm_residual_backward(float *dsum, float *dx, float *dgamma, float *dbeta,
                                    const float *dy, const float *sum, const float *shortcut,
                                    const float *gamma, const float *beta, const float *invstd,
                                    int N, int C, int HW) {
    KN_PARALLEL_RANGES((size_t)C, (size_t)N * C * HW > KN_PAR_MIN, residual_channels,
                       (dsum, dx, dgamma, dbeta, dy, sum, shortcut, gamma, beta, invstd, N, C, HW,
                        lo, hi));
}

// xhat's error from z = gamma * xhat + beta is about eps * (|xhat| + |beta / gamma|) plus the
// shortcut's rounding over |gamma|: below 2^-6 of max(1, |beta|) the recovery is not trusted.
int kn_batchnorm_invertible(const float *gamma, const float *beta, int C) {
    for (int c = 0; c < C; c++) {
        const float g = fabsf(gamma[c]), b = fabsf(beta[c]);
        if (!(g >= 0x1p-6f * (b > 1.0f ? b : 1.0f)) || !isfinite(g) || !isfinite(b)) return 0;
    }
    return 1;
}
