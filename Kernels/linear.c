// Fully connected layer, y = x w^T + b, on the SGEMM.
#include "internal.h"

void kn_linear_forward(float *y, const float *x, const float *w, const float *b, int N, int IN,
                       int OUT) {
    kn_sgemm(0, 1, N, OUT, IN, 1.0f, x, IN, w, IN, 0.0f, y, OUT);
    if (b)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) y[(size_t)n * OUT + o] += b[o];
}

void kn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int IN, int OUT) {
    if (dx) kn_sgemm(0, 0, N, IN, OUT, 1.0f, dy, OUT, w, IN, 1.0f, dx, IN);
    kn_sgemm(1, 0, OUT, IN, N, 1.0f, dy, OUT, x, IN, 1.0f, dw, IN);
    if (db)
        for (int o = 0; o < OUT; o++) { // images summed in order
            float acc = 0.0f;
            for (int n = 0; n < N; n++) acc += dy[(size_t)n * OUT + o];
            db[o] += acc;
        }
}
