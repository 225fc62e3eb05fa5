// Memory: large buffers mapped on their own (so freeing returns them), the GEMM's per-thread
// packing space, and the heap's settings.
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

