// Teams: the calling thread's team size, leases of idle threads between two teams, binding
// a team to CPUs, and solo regions (a thread of a team running its own work alone).
#define _GNU_SOURCE // sched_getaffinity, pthread_setaffinity_np
#include "internal.h"
#if defined(__linux__)
#include <sched.h>
#endif

#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

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
    const kn_solo saved = {team_size, kn_isa_thread_choice(), borrowed};
    team_size = 1;
    borrowed = NULL;
    kn_isa_set_thread_choice(isa);
    return saved;
}

void kn_solo_end(kn_solo saved) {
    team_size = saved.team;
    kn_isa_restore_thread_choice(saved.isa);
    borrowed = saved.lease;
}

