// Measured FMA peak of the active instruction set on the calling thread's team: independent
// FMA chains, no memory traffic. Benchmarks divide by it to report the fraction of peak
// (the clock a CPU boosts to is not readable, so the peak is measured, not computed).
#include "internal.h"

#include <omp.h>

#define CHAINS 12 // > 2 pipes x 4-cycle latency, so the pipes never wait

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static float chains_avx512(long iters) {
    __m512 acc[CHAINS];
    const __m512 m = _mm512_set1_ps(0.9999999f), a = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
#pragma clang loop unroll(full)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm512_fmadd_ps(acc[j], m, a);
    float s = 0;
    for (int j = 0; j < CHAINS; j++) s += _mm512_reduce_add_ps(acc[j]);
    return s;
}
__attribute__((target("avx2,fma"))) static float chains_avx2(long iters) {
    __m256 acc[CHAINS];
    const __m256 m = _mm256_set1_ps(0.9999999f), a = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < iters; i++)
#pragma clang loop unroll(full)
        for (int j = 0; j < CHAINS; j++) acc[j] = _mm256_fmadd_ps(acc[j], m, a);
    float out[8], s = 0;
    for (int j = 0; j < CHAINS; j++) {
        _mm256_storeu_ps(out, acc[j]);
        for (int k = 0; k < 8; k++) s += out[k];
    }
    return s;
}
#endif

// The portable kernel's chains: whatever the compiler makes of plain C (4 lanes a chain).
static float chains_portable(long iters) {
    float acc[CHAINS][4];
    for (int j = 0; j < CHAINS; j++)
        for (int k = 0; k < 4; k++) acc[j][k] = (float)(j + k);
    for (long i = 0; i < iters; i++)
        for (int j = 0; j < CHAINS; j++)
            for (int k = 0; k < 4; k++) acc[j][k] = acc[j][k] * 0.9999999f + 1e-7f;
    float s = 0;
    for (int j = 0; j < CHAINS; j++)
        for (int k = 0; k < 4; k++) s += acc[j][k];
    return s;
}

double kn_peak_gflops(void) {
    const kn_isa isa = kn_isa_active();
    const long iters = 4000000;
    int lanes = 4;
    volatile float sink = 0;
    const double t0 = omp_get_wtime();
    int team = kn_team();
#pragma omp parallel num_threads(team) reduction(+ : sink)
    {
        switch (isa) {
#if defined(__x86_64__)
        case KN_ISA_AVX512: sink += chains_avx512(iters); break;
        case KN_ISA_AVX2: sink += chains_avx2(iters); break;
#endif
        default: sink += chains_portable(iters); break;
        }
    }
    const double seconds = omp_get_wtime() - t0;
    if (isa == KN_ISA_AVX512) lanes = 16;
    else if (isa == KN_ISA_AVX2) lanes = 8;
    return 2.0 * CHAINS * lanes * (double)iters * team / seconds / 1e9;
}
