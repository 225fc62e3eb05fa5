// Elementwise kernels: residual add, gradient accumulation, ReLU, bias. Memory-bound, so plain
// C that the compiler vectorises for the baseline ISA; no reductions except bias_backward.
#include "internal.h"

void kn_add(float *y, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) num_threads(kn_team()) if (n > KN_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void kn_accumulate(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static) num_threads(kn_team()) if (n > KN_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void kn_relu_forward(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static) num_threads(kn_team()) if (n > KN_PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void kn_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
#pragma omp parallel for schedule(static) num_threads(kn_team()) if (n > KN_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float d = dy[i]; // loaded unconditionally, so the select vectorises (no branch)
        dx[i] += y[i] > 0.0f ? d : 0.0f;
    }
}

void kn_bias_forward(float *y, const float *bias, int N, int C, int HW) {
    // split over (image, channel) planes
#pragma omp parallel for collapse(2) schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            float *p = y + ((size_t)n * C + c) * HW;
            const float b = bias[c];
            for (int i = 0; i < HW; i++) p[i] += b;
        }
}

void kn_bias_backward(float *dbias, const float *dy, int N, int C, int HW) {
    // split over channels: each thread sums whole channels in (n, i) order
#pragma omp parallel for schedule(static) num_threads(kn_team()) \
    if ((size_t)N * C * HW > KN_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double acc = 0.0;
        for (int n = 0; n < N; n++) {
            const float *p = dy + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) acc += p[i];
        }
        dbias[c] += (float)acc;
    }
}
