// BatchNorm2d. Statistics and parameter gradients are per-channel sums in double, each channel
// summed by one thread in (n, i) order: the same bits for any team size.
#include "internal.h"

#include <math.h>

void kn_batchnorm_stats(float *mean, float *invstd, const float *x, int N, int C, int HW,
                        float eps) {
    const double count = (double)N * HW;
    // split over channels
#pragma omp parallel for schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) s += p[i];
        }
        const double mu = s / count;
        double ss = 0.0; // two passes: no cancellation
        for (int n = 0; n < N; n++) {
            const float *p = x + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) ss += (p[i] - mu) * (p[i] - mu);
        }
        mean[c] = (float)mu;
        invstd[c] = (float)(1.0 / sqrt(ss / count + eps));
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
        double sdy = 0.0, sdyx = 0.0; // sum dy, sum dy * xhat
        for (int n = 0; n < N; n++) {
            const size_t o = ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                sdy += dy[o + i];
                sdyx += (double)dy[o + i] * ((x[o + i] - mu) * is);
            }
        }
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
