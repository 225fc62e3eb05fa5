// Instruction sets: which one the kernels use (detected once, REMAT_ISA, or per thread by
// kn_isa_select), status strings, and the dispatch report.
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// MARK: - Status

const char *kn_status_string(kn_status s) {
    switch (s) {
    case KN_OK: return "ok";
    case KN_EINVAL: return "invalid argument (a size, stride or dilation out of range)";
    case KN_ESHAPE: return "the kernel does not fit the padded input: no output";
    case KN_ELABEL: return "a class label is outside [0, classes)";
    case KN_EUNSUPPORTED: return "this CPU or build lacks that instruction set";
    }
    return "unknown status";
}

// MARK: - Instruction sets

const char *kn_isa_name(kn_isa isa) {
    static const char *names[KN_ISA_COUNT] = {"portable", "avx2", "avx512", "neon"};
    return (unsigned)isa < KN_ISA_COUNT ? names[isa] : "unknown";
}

// Why an ISA is or is not available, for the report.
static const char *isa_reason(kn_isa isa) {
    switch (isa) {
    case KN_ISA_PORTABLE: return "plain C, runs anywhere";
#if defined(__x86_64__)
    case KN_ISA_AVX2:
        return (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
                   ? "cpu has avx2 and fma" : "cpu lacks avx2 or fma";
    case KN_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") ? "cpu has avx512f" : "cpu lacks avx512f";
    case KN_ISA_NEON: return "not an arm64 build";
#elif defined(__aarch64__)
    case KN_ISA_AVX2:
    case KN_ISA_AVX512: return "not an x86-64 build";
    case KN_ISA_NEON: return "arm64 always has Advanced SIMD";
#else
    case KN_ISA_AVX2:
    case KN_ISA_AVX512:
    case KN_ISA_NEON: return "no SIMD kernels for this architecture";
#endif
    default: return "unknown instruction set";
    }
}

int kn_isa_supported(kn_isa isa) {
    if (!kn_isa_built(isa)) return 0;
#if defined(__x86_64__)
    if (isa == KN_ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == KN_ISA_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 1;
}

static kn_isa active_isa;
static char choice_reason[160];
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

static void choose_isa(void) {
    kn_isa best = KN_ISA_PORTABLE;
    // most specialised first; the portable kernel is the last resort
    static const kn_isa order[] = {KN_ISA_AVX512, KN_ISA_AVX2, KN_ISA_NEON, KN_ISA_PORTABLE};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (kn_isa_supported(order[i])) { best = order[i]; break; }
    active_isa = best;
    snprintf(choice_reason, sizeof choice_reason, "best supported (%s)", isa_reason(best));
    const char *want = getenv("REMAT_ISA");
    if (want && *want) {
        kn_isa asked = KN_ISA_COUNT;
        for (int i = 0; i < KN_ISA_COUNT; i++)
            if (strcmp(want, kn_isa_name((kn_isa)i)) == 0) asked = (kn_isa)i;
        if (asked == KN_ISA_COUNT) {
            fprintf(stderr, "remat: REMAT_ISA=%s is not an instruction set (portable, avx2, "
                            "avx512, neon); using %s\n", want, kn_isa_name(best));
            snprintf(choice_reason, sizeof choice_reason,
                     "REMAT_ISA=%s unknown, so best supported (%s)", want, isa_reason(best));
        } else if (!kn_isa_supported(asked)) {
            fprintf(stderr, "remat: REMAT_ISA=%s is not usable here (%s); using %s\n", want,
                    isa_reason(asked), kn_isa_name(best));
            snprintf(choice_reason, sizeof choice_reason, "REMAT_ISA=%s unusable (%s), so %s",
                     want, isa_reason(asked), kn_isa_name(best));
        } else {
            active_isa = asked;
            snprintf(choice_reason, sizeof choice_reason, "REMAT_ISA=%s", want);
        }
    }
}

// A selection is per calling thread, like the team size: one thread (a test, a tuner) can
// run another ISA's kernels without changing the bits every other thread computes.
static _Thread_local int thread_isa = -1; // -1: the process-wide choice

int kn_isa_thread_choice(void) { return thread_isa; }
void kn_isa_set_thread_choice(kn_isa isa) {
    pthread_once(&isa_once, choose_isa);
    thread_isa = isa == active_isa ? -1 : (int)isa;
}
void kn_isa_restore_thread_choice(int choice) { thread_isa = choice; }

kn_isa kn_isa_active(void) {
    pthread_once(&isa_once, choose_isa);
    return thread_isa >= 0 ? (kn_isa)thread_isa : active_isa;
}

kn_status kn_isa_select(kn_isa isa) {
    pthread_once(&isa_once, choose_isa);
    if (!kn_isa_supported(isa)) return KN_EUNSUPPORTED;
    thread_isa = isa == active_isa ? -1 : (int)isa;
    return KN_OK;
}

const char *kn_dispatch_report(void) {
    static _Thread_local char report[1024];
    kn_isa isa = kn_isa_active();
    int n = snprintf(report, sizeof report, "isa: %s (%s)\n", kn_isa_name(isa),
                     thread_isa >= 0 ? "selected on this thread by kn_isa_select" : choice_reason);
    for (int i = 0; i < KN_KERNELS_PER_ISA && kn_gemm_table(isa)[i].ukr && n < (int)sizeof report; i++) {
        const kn_gemm_impl *g = &kn_gemm_table(isa)[i];
        n += snprintf(report + n, sizeof report - n,
                      "sgemm: %s, blocking MR=%d NR=%d MC=%d KC=%d NC=%d%s\n", g->ukr_name,
                      g->blocking.mr, g->blocking.nr, g->blocking.mc, g->blocking.kc,
                      g->blocking.nc, i ? " (where it pads an M x N product less)" : "");
    }
    const kn_caches here = kn_machine_caches(), ref = kn_reference_caches();
    if (n < (int)sizeof report)
        n += snprintf(report + n, sizeof report - n,
                      "caches a core: L1d %ld KiB, L2 %ld KiB, L3 %ld KiB; blocks sized for L2 "
                      "follow it (measured with %ld KiB)\n",
                      here.l1d >> 10, here.l2 >> 10, here.l3 >> 10, ref.l2 >> 10);
    for (int i = 0; i < KN_ISA_COUNT && n < (int)sizeof report; i++)
        n += snprintf(report + n, sizeof report - n, "  %s: %s, %s\n", kn_isa_name((kn_isa)i),
                      kn_isa_supported((kn_isa)i) ? "available" : "unavailable",
                      isa_reason((kn_isa)i));
    if (n < (int)sizeof report)
        snprintf(report + n, sizeof report - n,
                 "conv2d: per pass the first of batch-inner, padded-grid, im2col, reference that "
                 "accepts the shape (kn_conv2d_explain); other ops: plain C compiled -O3\n"
                 "threads: %d for this thread, %d cores\n",
                 kn_get_num_threads(), kn_num_cores());
    return report;
}

