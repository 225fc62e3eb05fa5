// Fused softmax cross-entropy. One row per image; the mean is summed in image order.
#include "internal.h"

#include <math.h>

kn_status kn_softmax_xent(float *loss, float *dlogits, const float *logits,
                          const int32_t *labels, int N, int K) {
    if (N < 1 || K < 1) return KN_EINVAL;
    for (int n = 0; n < N; n++)
        if (labels[n] < 0 || labels[n] >= K) return KN_ELABEL;
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * K;
        float m = z[0];
        for (int k = 1; k < K; k++) m = z[k] > m ? z[k] : m;
        double se = 0.0;
        for (int k = 0; k < K; k++) se += exp((double)z[k] - m);
        const double lse = log(se) + m; // log-sum-exp, shifted by the max for stability
        total += lse - z[labels[n]];
        if (dlogits) {
            float *d = dlogits + (size_t)n * K;
            for (int k = 0; k < K; k++)
                d[k] = (float)((exp((double)z[k] - lse) - (k == labels[n])) / N);
        }
    }
    *loss = (float)(total / N);
    return KN_OK;
}
