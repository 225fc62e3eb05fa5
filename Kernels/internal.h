// Internal declarations shared by the kernel files; not part of the public header.
#ifndef REMAT_KERNELS_INTERNAL_H
#define REMAT_KERNELS_INTERNAL_H

#include "RematKernels.h"
#include <stddef.h>

// Team size for the calling OS thread (thread-local; see runtime.c).
int kn_team(void);
// True when `work` elements are worth a parallel region (below this the fork costs more).
#define KN_PAR_MIN 32768

// MARK: - GEMM micro-kernels
// Contract (BLIS): a is a packed MR x k panel (column p at a + p*MR), b a packed k x NR panel
// (row p at b + p*NR, 64-byte aligned). The micro-kernel computes the full MR x NR tile
//     C = alpha * a.b + beta * C      (row stride ldc)
// with no loops over MR or NR left to the caller, and with beta == 0 it never reads C.
// Ragged edges are handled by the caller (zero-padded packing and a temporary tile).
typedef void (*kn_sgemm_ukr)(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                             float alpha, float beta);

void kn_sgemm_ukr_portable_4x8(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               float alpha, float beta);
#if defined(__x86_64__)
void kn_sgemm_ukr_avx2_6x16(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            float alpha, float beta);
void kn_sgemm_ukr_avx512_8x48(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               float alpha, float beta);
#endif
#if defined(__aarch64__)
void kn_sgemm_ukr_neon_8x12(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                            float alpha, float beta);
#endif

typedef struct {
    kn_sgemm_ukr ukr;
    const char *ukr_name;
    kn_gemm_blocking blocking;
} kn_gemm_impl;

// The GEMM implementation of the active ISA.
const kn_gemm_impl *kn_gemm_active(void);
// The blocking table (one row per ISA); runtime.c owns it.
kn_gemm_impl *kn_gemm_table(kn_isa isa);

// Grow-only 64-byte-aligned scratch owned by the calling OS thread (freed at thread exit).
// slot 0: packed A, slot 1: packed B.
float *kn_thread_scratch(int slot, size_t floats);

#endif
