// Runtime: instruction-set dispatch, the per-thread team size, thread-owned scratch.
#define _GNU_SOURCE // sched_getaffinity, pthread_setaffinity_np
#include "internal.h"
#if defined(__linux__)
#include <sched.h>
#endif

#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

// MARK: - Blocking table (the one place block sizes live; `tune` rewrites rows of it)
// Cache blocks: KC*NR*4 bytes of B (a sliver) stay in L1 while a KC*MR sliver of A streams;
// MC*KC*4 bytes of A stay in L2; KC*NC*4 bytes of B sit in L3.

#define KERNELS_PER_ISA 3
static kn_gemm_impl gemm_table[KN_ISA_COUNT][KERNELS_PER_ISA] = {
    [KN_ISA_PORTABLE] = {{kn_sgemm_ukr_portable_4x8, kn_sgemm_ukr_portable_4x8_rows, kn_sgemm_ukr_portable_4x8_arows, "kn_sgemm_ukr_portable_4x8",
                          {.mr = 4, .nr = 8, .mc = 128, .kc = 256, .nc = 4096}}},
#if defined(__x86_64__)
    [KN_ISA_AVX2] = {{kn_sgemm_ukr_avx2_6x16, kn_sgemm_ukr_avx2_6x16_rows, kn_sgemm_ukr_avx2_6x16_arows, "kn_sgemm_ukr_avx2_6x16",
                      {.mr = 6, .nr = 16, .mc = 144, .kc = 512, .nc = 4096}, kn_pack_rows_avx2, kn_pack_at_avx2}},
    [KN_ISA_AVX512] = {{kn_sgemm_ukr_avx512_8x48, kn_sgemm_ukr_avx512_8x48_rows, kn_sgemm_ukr_avx512_8x48_arows, "kn_sgemm_ukr_avx512_8x48",
                        {.mr = 8, .nr = 48, .mc = 96, .kc = 1024, .nc = 4032}, kn_pack_rows_avx2, kn_pack_at_avx2},
                       {kn_sgemm_ukr_avx512_12x32, kn_sgemm_ukr_avx512_12x32_rows, kn_sgemm_ukr_avx512_12x32_arows, "kn_sgemm_ukr_avx512_12x32",
                        {.mr = 12, .nr = 32, .mc = 96, .kc = 1024, .nc = 4096}, kn_pack_rows_avx2, kn_pack_at_avx2},
                       {kn_sgemm_ukr_avx512_12x16, kn_sgemm_ukr_avx512_12x16_rows, kn_sgemm_ukr_avx512_12x16_arows, "kn_sgemm_ukr_avx512_12x16",
                        {.mr = 12, .nr = 16, .mc = 96, .kc = 1024, .nc = 4096}, kn_pack_rows_avx2, kn_pack_at_avx2}},
#endif
#if defined(__aarch64__)
    [KN_ISA_NEON] = {{kn_sgemm_ukr_neon_8x12, kn_sgemm_ukr_neon_8x12_rows, kn_sgemm_ukr_neon_8x12_arows, "kn_sgemm_ukr_neon_8x12",
                      {.mr = 8, .nr = 12, .mc = 128, .kc = 256, .nc = 4080}}},
#endif
};

int kn_gemm_kernels(kn_isa isa, kn_gemm_blocking *out, int max) {
    if ((unsigned)isa >= KN_ISA_COUNT) return 0;
    int n = 0;
    for (int i = 0; i < KERNELS_PER_ISA && gemm_table[isa][i].ukr; i++, n++)
        if (out && n < max) out[n] = gemm_table[isa][i].blocking;
    return n;
}

kn_status kn_gemm_set_blocking(kn_isa isa, kn_gemm_blocking b) {
    if ((unsigned)isa >= KN_ISA_COUNT || gemm_table[isa][0].ukr == NULL) return KN_EUNSUPPORTED;
    if (b.mc < b.mr || b.mc % b.mr || b.nc < b.nr || b.nc % b.nr || b.kc < 1) return KN_EINVAL;
    if (b.mc > 4096 || b.kc > 4096 || b.nc > 65536) return KN_EINVAL;
    for (int i = 0; i < KERNELS_PER_ISA && gemm_table[isa][i].ukr; i++) {
        kn_gemm_blocking *cur = &gemm_table[isa][i].blocking;
        if (cur->mr == b.mr && cur->nr == b.nr) {
            *cur = b;
            return KN_OK;
        }
    }
    return KN_EINVAL; // no micro-kernel of this ISA has that MR x NR
}

// Least padding wins: the micro-kernels of an ISA run at about the same speed per useful
// FLOP (measured), so the one whose tiles cover M x N with the fewest wasted rows and
// columns is the fastest; ties go to the first listed.
const kn_gemm_impl *kn_gemm_choose(int M, int N) {
    const kn_gemm_impl *row = gemm_table[kn_isa_active()], *best = &row[0];
    double best_area = 0;
    for (int i = 0; i < KERNELS_PER_ISA && row[i].ukr; i++) {
        const kn_gemm_blocking *b = &row[i].blocking;
        const double area = (double)((M + b->mr - 1) / b->mr * b->mr) * ((N + b->nr - 1) / b->nr * b->nr);
        if (i == 0 || area < best_area) best = &row[i], best_area = area;
    }
    return best;
}

const char *kn_gemm_kernel_name(int M, int N) { return kn_gemm_choose(M, N)->ukr_name; }

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
    if ((unsigned)isa >= KN_ISA_COUNT || gemm_table[isa][0].ukr == NULL) return 0;
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
    for (int i = 0; i < KERNELS_PER_ISA && gemm_table[isa][i].ukr && n < (int)sizeof report; i++) {
        const kn_gemm_impl *g = &gemm_table[isa][i];
        n += snprintf(report + n, sizeof report - n,
                      "sgemm: %s, blocking MR=%d NR=%d MC=%d KC=%d NC=%d%s\n", g->ukr_name,
                      g->blocking.mr, g->blocking.nr, g->blocking.mc, g->blocking.kc,
                      g->blocking.nc, i ? " (where it pads an M x N product less)" : "");
    }
    for (int i = 0; i < KN_ISA_COUNT && n < (int)sizeof report; i++)
        n += snprintf(report + n, sizeof report - n, "  %s: %s, %s\n", kn_isa_name((kn_isa)i),
                      kn_isa_supported((kn_isa)i) ? "available" : "unavailable",
                      isa_reason((kn_isa)i));
    if (n < (int)sizeof report)
        snprintf(report + n, sizeof report - n,
                 "conv2d: implicit GEMM (stride 1, where it pays) or im2col + GEMM, chosen "
                 "per pass by kn_conv2d_plan; other ops: plain C compiled -O3\n"
                 "threads: %d for this thread, %d cores\n",
                 kn_get_num_threads(), kn_num_cores());
    return report;
}

// MARK: - Threads
// The team size is a thread-local setting passed to every parallel region as num_threads(...),
// so two OS threads (backward and recompute) each drive a team of their own size.

static _Thread_local int team_size; // 0: not set on this thread yet

int kn_num_cores(void) { return omp_get_num_procs(); }

void kn_set_num_threads(int n) { team_size = n < 1 ? 1 : n; }

int kn_get_num_threads(void) { return team_size > 0 ? team_size : kn_num_cores(); }

// A lease lends one team's idle threads to another: the recompute thread lends its team to
// the backward pass while it has nothing to rebuild, and the backward pass lends its team to
// the recompute thread while it waits for a segment, so no core idles while the other side
// has work. Read at every parallel region; results do not depend on team sizes.
//
// Taking threads back waits for the borrower's region that still runs on them: otherwise the
// lender starts work on its own cores while the borrowed workers are still busy there, and a
// third thread on two cores stalls the borrower's barrier for a scheduler slice. A borrower registers
// what it uses (in_use) and re-reads the offer; the lender lowers the offer and then reads
// in_use. Both sequentially consistent, so either the borrower sees the lowered offer or the
// lender sees its registration.
struct kn_lease { _Atomic int offered, in_use; };

kn_lease *kn_lease_create(void) {
    kn_lease *l = calloc(1, sizeof *l);
    if (!l) abort();
    return l;
}

void kn_lease_destroy(kn_lease *l) { free(l); }

void kn_lease_offer(kn_lease *l, int threads) {
    if (threads < 0) threads = 0;
    atomic_store(&l->offered, threads);
    // sleep rather than spin: the borrowed workers need these cores to finish
    const struct timespec nap = {0, 20000};
    while (atomic_load(&l->in_use) > threads) nanosleep(&nap, NULL);
}

int kn_lease_in_use(kn_lease *l) { return atomic_load(&l->in_use); }

static _Thread_local kn_lease *borrowed; // the lease this thread's team may draw on, if any

void kn_set_team_lease(kn_lease *l) { borrowed = l; }

// libomp's idle workers spin for 200 ms after a parallel region before they sleep. With two
// teams on the same cores (backward and recompute), one team's spinning workers steal the
// cores the other needs. 1 ms keeps back-to-back kernels warm and lets idle workers yield. An explicit
// KMP_BLOCKTIME wins.
static _Thread_local int blocktime_set;

int kn_team(void) {
    const int own = kn_get_num_threads();
    return borrowed ? own + atomic_load(&borrowed->offered) : own;
}

// Regions nest only through kn_solo (team 1, no lease): the outermost one registers.
static _Thread_local int team_depth, team_held;
static _Thread_local kn_lease *team_lease;

int kn_team_enter(void) {
    if (!blocktime_set) {
        blocktime_set = 1;
        if (!getenv("KMP_BLOCKTIME")) kmp_set_blocktime(1);
    }
    const int own = kn_get_num_threads();
    if (team_depth++ > 0 || !borrowed) return own;
    for (;;) {
        const int offered = atomic_load(&borrowed->offered);
        if (offered == 0) return own;
        atomic_fetch_add(&borrowed->in_use, offered);
        if (atomic_load(&borrowed->offered) == offered) {
            team_held = offered;
            team_lease = borrowed;
            return own + offered;
        }
        atomic_fetch_sub(&borrowed->in_use, offered); // taken back meanwhile: read again
    }
}

void kn_team_exit(void) {
    if (--team_depth > 0 || !team_held) return;
    atomic_fetch_sub(&team_lease->in_use, team_held);
    team_held = 0;
    team_lease = NULL;
}

#if defined(__linux__)
// The CPUs the process could run on before any binding (read once, on first use).
static cpu_set_t usable_set;
static int usable[CPU_SETSIZE], usable_count;
static pthread_once_t usable_once = PTHREAD_ONCE_INIT;

static void read_usable(void) {
    if (sched_getaffinity(0, sizeof usable_set, &usable_set)) return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &usable_set)) usable[usable_count++] = c;
}

// Each thread's own mask from before its first binding, put back when it is unbound.
static _Thread_local cpu_set_t own_set;
static _Thread_local int own_saved;

kn_status kn_bind_team(int first, int threads) {
    pthread_once(&usable_once, read_usable);
    if (usable_count == 0 || threads < 1) return KN_EINVAL;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|: failed)
    {
        cpu_set_t one;
        CPU_ZERO(&one);
        if (first < 0) {
            if (own_saved) {
                failed |= pthread_setaffinity_np(pthread_self(), sizeof own_set, &own_set) != 0;
                own_saved = 0;
            }
        } else {
            if (!own_saved) own_saved = sched_getaffinity(0, sizeof own_set, &own_set) == 0;
            CPU_SET(usable[(first + omp_get_thread_num()) % usable_count], &one);
            failed |= pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0;
        }
    }
    return failed ? KN_EUNSUPPORTED : KN_OK;
}

int kn_thread_cpus(int *first) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set)) return 0;
    if (first) {
        *first = -1;
        for (int c = 0; c < CPU_SETSIZE && *first < 0; c++)
            if (CPU_ISSET(c, &set)) *first = c;
    }
    return CPU_COUNT(&set);
}
#else // no thread affinity here: teams run where the system puts them
kn_status kn_bind_team(int first, int threads) {
    (void)first;
    return threads < 1 ? KN_EINVAL : KN_EUNSUPPORTED;
}

int kn_thread_cpus(int *first) {
    if (first) *first = -1;
    return 0;
}
#endif

kn_solo kn_solo_begin(kn_isa isa) {
    const kn_solo saved = {team_size, thread_isa, borrowed};
    team_size = 1;
    borrowed = NULL;
    thread_isa = isa == active_isa ? -1 : (int)isa;
    return saved;
}

void kn_solo_end(kn_solo saved) {
    team_size = saved.team;
    thread_isa = saved.isa;
    borrowed = saved.lease;
}

// MARK: - Large buffers

// Buffers of 2 MiB and more are mapped on their own, 2 MiB-aligned, and asked to be backed by
// transparent huge pages (Debian's default is "madvise": only asked-for memory gets them):
// with 4 KiB pages some processes ran every step far slower (docs/ARCHITECTURE.md, Threads).
// Mapped rather than malloc'd so that freeing one hands its pages back to the system at once:
// the process's resident memory then follows what is live (a heap keeps freed blocks).
// Buffers from 128 KiB up to 2 MiB are mapped too, in whole 4 KiB pages, for the same reason.
#define KN_HUGE ((size_t)2 << 20)
#define KN_MAPPED ((size_t)128 << 10)
#define KN_PAGE ((size_t)4096)
static size_t huge_size(size_t bytes) { return (bytes + KN_HUGE - 1) & ~(KN_HUGE - 1); }
static size_t page_size(size_t bytes) { return (bytes + KN_PAGE - 1) & ~(KN_PAGE - 1); }

void *kn_alloc(size_t bytes) {
    if (bytes < KN_MAPPED) return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (bytes < KN_HUGE) {
        void *p = mmap(NULL, page_size(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    const size_t size = huge_size(bytes);
    char *raw = mmap(NULL, size + KN_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    // keep the 2 MiB-aligned window of `size` bytes, unmap the rest
    char *p = (char *)(((uintptr_t)raw + KN_HUGE - 1) & ~(uintptr_t)(KN_HUGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + size + KN_HUGE > p + size) munmap(p + size, (size_t)(raw + size + KN_HUGE - (p + size)));
#if defined(MADV_HUGEPAGE)
    madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

void kn_free(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < KN_MAPPED) free(p);
    else munmap(p, bytes < KN_HUGE ? page_size(bytes) : huge_size(bytes));
}

// MARK: - Thread-owned scratch

typedef struct { float *p[2]; size_t cap[2]; } scratch_set;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static size_t scratch_bytes(size_t floats) { return (floats * sizeof(float) + 63) & ~(size_t)63; }

// resident bytes of every thread's packing space, as mapped (for memory predictions)
static _Atomic size_t packing_total;
static size_t mapped(size_t bytes) {
    return bytes < KN_MAPPED ? bytes : bytes < KN_HUGE ? page_size(bytes) : huge_size(bytes);
}
size_t kn_packing_bytes(void) { return packing_total; }

void kn_trim_heap(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

#if defined(__GLIBC__)
// glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), after
// which blocks of that size (a batch of images) come from the heap and stay resident when
// freed; a fixed threshold maps them on their own, as kn_alloc does, so freed means returned.
__attribute__((constructor)) static void fixed_mmap_threshold(void) { mallopt(M_MMAP_THRESHOLD, (int)KN_MAPPED); }
#endif

static void scratch_free(void *v) {
    scratch_set *s = v;
    for (int slot = 0; slot < 2; slot++) {
        if (s->p[slot]) packing_total -= mapped(scratch_bytes(s->cap[slot]));
        kn_free(s->p[slot], scratch_bytes(s->cap[slot]));
    }
    free(s);
}
static void scratch_key_init(void) { pthread_key_create(&scratch_key, scratch_free); }

float *kn_thread_scratch(int slot, size_t floats) {
    pthread_once(&scratch_once, scratch_key_init);
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) abort();
        pthread_setspecific(scratch_key, s);
    }
    if (s->cap[slot] < floats) {
        if (s->p[slot]) packing_total -= mapped(scratch_bytes(s->cap[slot]));
        kn_free(s->p[slot], scratch_bytes(s->cap[slot]));
        size_t bytes = scratch_bytes(floats);
        packing_total += mapped(bytes);
        s->p[slot] = kn_alloc(bytes);
        if (!s->p[slot]) {
            fprintf(stderr, "remat: out of memory for %zu bytes of GEMM packing space\n", bytes);
            abort();
        }
        s->cap[slot] = floats;
    }
    return s->p[slot];
}

