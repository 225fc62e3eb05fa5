// Dropout with a counter-based generator (Philox4x32-10, Salmon et al. 2011): the mask bit of
// element i is a pure function of (seed, offset + i), so a recompute regenerates the same mask
// without storing it, in any order and on any thread.
#include "internal.h"

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    const uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

float kn_uniform(uint64_t seed, uint64_t index) {
    const uint64_t block = index >> 2; // one Philox call yields 4 words
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        const uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
        const uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    const uint32_t words[4] = {c0, c1, c2, c3};
    return (float)(words[index & 3] >> 8) * (1.0f / 16777216.0f); // 24 bits: exact in float
}

void kn_dropout_forward(float *y, const float *x, float p, uint64_t seed, uint64_t offset,
                        size_t n) {
    const float scale = 1.0f / (1.0f - p);
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) if (n > KN_PAR_MIN / 8)
    for (size_t i = 0; i < n; i++) y[i] = kn_uniform(seed, offset + i) >= p ? x[i] * scale : 0.0f;
}

void kn_dropout_backward(float *dx, const float *dy, float p, uint64_t seed, uint64_t offset,
                         size_t n) {
    const float scale = 1.0f / (1.0f - p);
    KN_WITH_TEAM(team)
#pragma omp parallel for schedule(static) num_threads(team) if (n > KN_PAR_MIN / 8)
    for (size_t i = 0; i < n; i++)
        if (kn_uniform(seed, offset + i) >= p) dx[i] += dy[i] * scale;
}
