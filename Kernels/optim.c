// Optimizer updates: one flat loop over the parameter arena (elementwise, no reductions).
#include "internal.h"

#include <math.h>

KN_BODY void sgd_range(float *w, float *velocity, const float *grad, float lr, float momentum,
                       float weight_decay, int nesterov, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        float d = grad[i] + weight_decay * w[i];
        if (momentum != 0.0f) {
            // PyTorch starts the buffer at the first gradient; from zero this is the same
            velocity[i] = momentum * velocity[i] + d;
            d = nesterov ? d + momentum * velocity[i] : velocity[i];
        }
        w[i] -= lr * d;
    }
}
KN_BY_ISA(sgd_range,
          (float *w, float *velocity, const float *grad, float lr, float momentum,
           float weight_decay, int nesterov, size_t lo, size_t hi),
          (w, velocity, grad, lr, momentum, weight_decay, nesterov, lo, hi))

void kn_sgd_step(float *w, float *velocity, const float *grad, size_t n, float lr,
                 float momentum, float weight_decay, int nesterov) {
    KN_PARALLEL_RANGES(n, n > KN_PAR_MIN, sgd_range,
                       (w, velocity, grad, lr, momentum, weight_decay, nesterov, lo, hi));
}

void kn_adamw_step(float *w, float *m, float *v, const float *grad, size_t n, float lr,
                   float beta1, float beta2, float eps, float weight_decay, int64_t step) {
    const float bc1 = 1.0f - powf(beta1, (float)step), bc2 = 1.0f - powf(beta2, (float)step);
    const float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) if (n > KN_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        w[i] *= 1.0f - lr * weight_decay; // decoupled decay, as torch.optim.AdamW
        m[i] = beta1 * m[i] + (1.0f - beta1) * grad[i];
        v[i] = beta2 * v[i] + (1.0f - beta2) * grad[i] * grad[i];
        w[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}
