// BatchNorm2d. Statistics and parameter gradients are per-channel sums in double, each channel
// summed by one thread in a fixed order: the same bits for any team size.
#include "internal.h"

#include <math.h>

// Sums of a plane in LANES interleaved double accumulators (element i goes to lane i % LANES),
// combined in lane order at the end: independent chains the compiler vectorises, in an order
// fixed by the shape alone. One accumulator would serialise on the add latency.
#define LANES 8
typedef struct { double v[LANES]; } lanes;

static inline double lanes_total(const lanes *l) {
    double t = 0.0;
    for (int k = 0; k < LANES; k++) t += l->v[k];
    return t;
}

// acc += sum of p[0..n)
static inline void sum_into(lanes *acc, const float *p, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc->v[k] += p[i + k];
    for (; i < n; i++) acc->v[i % LANES] += p[i];
}

// acc += sum of (p - mu)^2
static inline void sq_dev_into(lanes *acc, const float *p, int n, double mu) {
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc->v[k] += (p[i + k] - mu) * (p[i + k] - mu);
    for (; i < n; i++) acc->v[i % LANES] += (p[i] - mu) * (p[i] - mu);
}

// a += sum dy, b += sum dy * (x - mu) * is
static inline void grad_sums_into(lanes *a, lanes *b, const float *dy, const float *x, int n, float mu,
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

void kn_batchnorm_stats(float *mean, float *invstd, const float *x, int N, int C, int HW,
                        float eps) {
    const double count = (double)N * HW;
    // split over channels
#pragma omp parallel for schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int c = 0; c < C; c++) {
        lanes s = {{0}};
        for (int n = 0; n < N; n++) sum_into(&s, x + ((size_t)n * C + c) * HW, HW);
        const double mu = lanes_total(&s) / count;
        lanes ss = {{0}}; // two passes: no cancellation
        for (int n = 0; n < N; n++) sq_dev_into(&ss, x + ((size_t)n * C + c) * HW, HW, mu);
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(lanes_total(&ss) / count + eps));
    }
}

void kn_batchnorm_forward(float *y, const float *x, const float *mean, const float *invstd,
                          const float *gamma, const float *beta, int N, int C, int HW) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float scale = invstd[c] * gamma[c], shift = beta[c] - mean[c] * scale;
            const float *xp = x + ((size_t)n * C + c) * HW;
            float *yp = y + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) yp[i] = xp[i] * scale + shift;
        }
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
#pragma omp parallel for collapse(2) schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float scale = gamma[c] / sqrtf(running_var[c] + eps);
            const float shift = beta[c] - running_mean[c] * scale;
            const float *xp = x + ((size_t)n * C + c) * HW;
            float *yp = y + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) yp[i] = xp[i] * scale + shift;
        }
}

void kn_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *invstd,
                           const float *gamma, int N, int C, int HW) {
    const double count = (double)N * HW;
    // split over channels: a channel's sums and its dx planes belong to one thread
#pragma omp parallel for schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int c = 0; c < C; c++) {
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
            for (int i = 0; i < HW; i++) {
                const float xhat = (x[o + i] - mu) * is;
                dx[o + i] += k * (dy[o + i] - mdy - xhat * mdyx);
            }
        }
    }
}
