// Measured FMA peak of the active instruction set on the calling thread's team: independent
// FMA chains, no memory traffic. Benchmarks divide by it to report the fraction of peak
// (the clock a CPU boosts to is not readable, so the peak is measured, not computed).
#include "internal.h"

#include <omp.h>
#include <sched.h>
#include <stdatomic.h>

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

// Best of several short trials: a peak is the fastest the machine ran, and a noisy, shared
// machine only ever makes a trial slower.
double kn_peak_gflops(void) {
    const kn_isa isa = kn_isa_active();
    const int lanes = isa == KN_ISA_AVX512 ? 16 : isa == KN_ISA_AVX2 ? 8 : 4;
    const long iters = 1000000;
    const int team = kn_team_enter();
    double best = 0;
    volatile float sink = 0;
    for (int trial = 0; trial < 9; trial++) {
        const double t0 = omp_get_wtime();
        float s = 0;
#pragma omp parallel num_threads(team) reduction(+ : s)
        {
            switch (isa) {
#if defined(__x86_64__)
            case KN_ISA_AVX512: s += chains_avx512(iters); break;
            case KN_ISA_AVX2: s += chains_avx2(iters); break;
#endif
            default: s += chains_portable(iters); break;
            }
        }
        sink += s;
        const double gflops = 2.0 * CHAINS * lanes * (double)iters * team / (omp_get_wtime() - t0) / 1e9;
        if (gflops > best) best = gflops;
    }
    kn_team_exit();
    return best;
}

// The round trip of one cache line between two threads of the team, in ns (median of 7
// trials of 5,000 hand-offs; 0 with a team of one). On this 2-vCPU VM it reads about 100 ns
// when the host runs both vCPUs on cores that share an L3 and about 400 ns when they do not,
// a placement that changes over minutes and that every kernel splitting work between the two
// pays for at each hand-off; benchmarks print it next to their figures.
double kn_core_round_trip_ns(void) {
    if (kn_team() < 2) return 0;
    enum { TRIALS = 7, TRIPS = 5000 };
    _Alignas(64) _Atomic long line; // the caller's own: two callers at once cannot mix hand-offs
    double trial[TRIALS];
    for (int t = 0; t < TRIALS; t++) {
        atomic_store(&line, 0);
        const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(2)
        {
            const long me = omp_get_thread_num(); // 0 writes odd values, 1 answers with even
            for (long i = 0; i < TRIPS && omp_get_num_threads() == 2; i++) {
                const long wait_for = 2 * i + me, answer = 2 * i + me + 1;
                for (long spins = 1; atomic_load_explicit(&line, memory_order_acquire) != wait_for; spins++)
                    if (spins % 4096 == 0) sched_yield(); // sharing one CPU: let the other run
                atomic_store_explicit(&line, answer, memory_order_release);
            }
        }
        trial[t] = (omp_get_wtime() - t0) / TRIPS * 1e9;
    }
    for (int i = 1; i < TRIALS; i++) // insertion sort, for the median
        for (int j = i; j > 0 && trial[j] < trial[j - 1]; j--) {
            const double x = trial[j];
            trial[j] = trial[j - 1];
            trial[j - 1] = x;
        }
    return trial[TRIALS / 2];
}
