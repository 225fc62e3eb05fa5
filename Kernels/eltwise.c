// Elementwise kernels: residual add, gradient accumulation, ReLU, bias. Memory-bound plain C,
// compiled once per ISA (KN_BY_ISA); no reductions except bias_backward.
#include "internal.h"

KN_BODY void add_range(float *y, const float *a, const float *b, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) y[i] = a[i] + b[i];
}
KN_BY_ISA(add_range, (float *y, const float *a, const float *b, size_t lo, size_t hi),
          (y, a, b, lo, hi))

void kn_add(float *y, const float *a, const float *b, size_t n) {
    KN_PARALLEL_RANGES(n, n > KN_PAR_MIN, add_range,
                       (y, a, b, lo, hi));
}

// y = max(a + b, 0): a residual add and the ReLU after it, with the bits of kn_add then
// kn_relu_forward and one pass less
KN_BODY void add_relu_range(float *y, const float *a, const float *b, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        const float v = a[i] + b[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}
KN_BY_ISA(add_relu_range, (float *y, const float *a, const float *b, size_t lo, size_t hi),
          (y, a, b, lo, hi))

void kn_add_relu(float *y, const float *a, const float *b, size_t n) {
    KN_PARALLEL_RANGES(n, n > KN_PAR_MIN, add_relu_range, (y, a, b, lo, hi));
}

KN_BODY void accumulate_range(float *y, const float *x, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) y[i] += x[i];
}
KN_BY_ISA(accumulate_range, (float *y, const float *x, size_t lo, size_t hi), (y, x, lo, hi))

void kn_accumulate(float *y, const float *x, size_t n) {
    KN_PARALLEL_RANGES(n, n > KN_PAR_MIN, accumulate_range,
                       (y, x, lo, hi));
}

KN_BODY void relu_forward_range(float *y, const float *x, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
KN_BY_ISA(relu_forward_range, (float *y, const float *x, size_t lo, size_t hi), (y, x, lo, hi))

void kn_relu_forward(float *y, const float *x, size_t n) {
    KN_PARALLEL_RANGES(n, n > KN_PAR_MIN, relu_forward_range,
                       (y, x, lo, hi));
}

KN_BODY void relu_backward_range(float *dx, const float *dy, const float *y, size_t lo,
                                 size_t hi) {
    if (dx == dy) { // in place: one pointer, so the loop vectorises without an overlap check
        for (size_t i = lo; i < hi; i++) dx[i] = y[i] > 0.0f ? dx[i] : 0.0f;
        return;
    }
    for (size_t i = lo; i < hi; i++) {
        const float d = dy[i]; // loaded unconditionally, so the select vectorises (no branch)
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
}
KN_BY_ISA(relu_backward_range,
          (float *dx, const float *dy, const float *y, size_t lo, size_t hi), (dx, dy, y, lo, hi))

void kn_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    KN_PARALLEL_RANGES(n, n > KN_PAR_MIN, relu_backward_range,
                       (dx, dy, y, lo, hi));
}

// planes [lo, hi) of (image, channel)
KN_BODY void bias_forward_planes(float *y, const float *bias, int C, int HW, size_t lo,
                                 size_t hi) {
    for (size_t plane = lo; plane < hi; plane++) {
        float *p = y + plane * HW;
        const float b = bias[plane % C];
        for (int i = 0; i < HW; i++) p[i] += b;
    }
}
KN_BY_ISA(bias_forward_planes, (float *y, const float *bias, int C, int HW, size_t lo, size_t hi),
          (y, bias, C, HW, lo, hi))

void kn_bias_forward(float *y, const float *bias, int N, int C, int HW) {
    KN_PARALLEL_RANGES((size_t)N * C, (size_t)N * C * HW > KN_PAR_MIN, bias_forward_planes,
                       (y, bias, C, HW, lo, hi));
}

// channels [lo, hi), each summed whole by one thread in an order fixed by the shape
KN_BODY void bias_backward_channels(float *dbias, const float *dy, int N, int C, int HW,
                                    size_t lo, size_t hi) {
    for (size_t c = lo; c < hi; c++) {
        lanes acc = {{0}}; // one accumulator serialised on the add latency
        for (int n = 0; n < N; n++) sum_into(&acc, dy + ((size_t)n * C + c) * HW, HW);
        dbias[c] += (float)lanes_total(&acc);
    }
}
KN_BY_ISA(bias_backward_channels,
          (float *dbias, const float *dy, int N, int C, int HW, size_t lo, size_t hi),
          (dbias, dy, N, C, HW, lo, hi))

void kn_bias_backward(float *dbias, const float *dy, int N, int C, int HW) {
    KN_PARALLEL_RANGES((size_t)C, (size_t)N * C * HW > KN_PAR_MIN, bias_backward_channels,
                       (dbias, dy, N, C, HW, lo, hi));
}
