// Direct convolutions: the oracles the im2col + GEMM kernels are tested against.
// Single thread, no scratch, the textbook loops.
#include "conv_internal.h"

static inline int in_range(int v, int hi) { return v >= 0 && v < hi; }

void kn_conv2d_forward_ref(const kn_conv2d *cv, float *y, const float *x, const float *w,
                           const float *bias) {
    const int C = cv->C, H = cv->H, W = cv->W, K = cv->K, R = cv->R, S = cv->S;
    for (int n = 0; n < cv->N; n++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < cv->P; p++)
                for (int q = 0; q < cv->Q; q++) {
                    float acc = 0.0f;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int s = 0; s < S; s++) {
                                int ih = p * cv->stride_h - cv->pad_h + r * cv->dil_h;
                                int iw = q * cv->stride_w - cv->pad_w + s * cv->dil_w;
                                if (in_range(ih, H) && in_range(iw, W))
                                    acc += w[((k * C + c) * R + r) * S + s] *
                                           x[(((size_t)n * C + c) * H + ih) * W + iw];
                            }
                    y[(((size_t)n * K + k) * cv->P + p) * cv->Q + q] = acc + (bias ? bias[k] : 0);
                }
}

void kn_conv2d_backward_data_ref(const kn_conv2d *cv, float *dx, const float *dy, const float *w) {
    const int C = cv->C, H = cv->H, W = cv->W, K = cv->K, R = cv->R, S = cv->S;
    for (int n = 0; n < cv->N; n++)
        for (int c = 0; c < C; c++)
            for (int ih = 0; ih < H; ih++)
                for (int iw = 0; iw < W; iw++) {
                    float acc = 0.0f;
                    for (int k = 0; k < K; k++)
                        for (int r = 0; r < R; r++)
                            for (int s = 0; s < S; s++) {
                                int ph = ih + cv->pad_h - r * cv->dil_h;
                                int pw = iw + cv->pad_w - s * cv->dil_w;
                                if (ph % cv->stride_h || pw % cv->stride_w) continue;
                                int p = ph / cv->stride_h, q = pw / cv->stride_w;
                                if (ph < 0 || pw < 0 || p >= cv->P || q >= cv->Q) continue;
                                acc += w[((k * C + c) * R + r) * S + s] *
                                       dy[(((size_t)n * K + k) * cv->P + p) * cv->Q + q];
                            }
                    dx[(((size_t)n * C + c) * H + ih) * W + iw] += acc;
                }
}

void kn_conv2d_backward_weights_ref(const kn_conv2d *cv, float *dw, float *dbias,
                                    const float *dy, const float *x) {
    const int C = cv->C, H = cv->H, W = cv->W, K = cv->K, R = cv->R, S = cv->S;
    for (int k = 0; k < K; k++) {
        for (int c = 0; c < C; c++)
            for (int r = 0; r < R; r++)
                for (int s = 0; s < S; s++) {
                    float acc = 0.0f;
                    for (int n = 0; n < cv->N; n++)
                        for (int p = 0; p < cv->P; p++)
                            for (int q = 0; q < cv->Q; q++) {
                                int ih = p * cv->stride_h - cv->pad_h + r * cv->dil_h;
                                int iw = q * cv->stride_w - cv->pad_w + s * cv->dil_w;
                                if (in_range(ih, H) && in_range(iw, W))
                                    acc += dy[(((size_t)n * K + k) * cv->P + p) * cv->Q + q] *
                                           x[(((size_t)n * C + c) * H + ih) * W + iw];
                            }
                    dw[((k * C + c) * R + r) * S + s] += acc;
                }
        if (dbias) {
            float acc = 0.0f;
            for (int n = 0; n < cv->N; n++)
                for (int pq = 0; pq < cv->P * cv->Q; pq++)
                    acc += dy[((size_t)n * K + k) * cv->P * cv->Q + pq];
            dbias[k] += acc;
        }
    }
}
