// Internal declarations shared by the kernel files; not part of the public header.
#ifndef REMAT_KERNELS_INTERNAL_H
#define REMAT_KERNELS_INTERNAL_H

#include "RematKernels.h"
#include <omp.h>
#include <stddef.h>

// This thread's own ISA choice (-1: the process-wide one), for solo regions (isa.c).
int kn_isa_thread_choice(void);
void kn_isa_set_thread_choice(kn_isa isa);
void kn_isa_restore_thread_choice(int choice);

// Team size for the calling OS thread now: its own threads and those lent to it (teams.c).
int kn_team(void);
// Every parallel region runs between these: enter gives its team size and registers the lent
// threads it uses; exit releases them, so a lender taking them back waits for the region.
// Calls nest (a kn_solo region's kernels): only the outermost registers.
int kn_team_enter(void);
void kn_team_exit(void);
// Runs the statement after it (an `omp parallel for` with num_threads(team)) once between
// kn_team_enter and kn_team_exit.
#define KN_WITH_TEAM(team)                                                                  \
    for (int team = kn_team_enter(), team##_once_ = 1; team##_once_; team##_once_ = 0, kn_team_exit())
// The active ISA's row of the tuning table (tuning.c).
const kn_tuning *kn_tune(void);
// Every field at least 1 and the transpose tile at most KN_TRANSPOSE_TILE_MAX (tuning.c).
int kn_tuning_valid(const kn_tuning *t);
#define KN_TRANSPOSE_TILE_MAX 32
// True when `work` elements are worth a parallel region (below this the fork costs more).
#define KN_PAR_MIN ((size_t)kn_tune()->parallel_min)

// Inside a parallel region whose threads each run a whole piece of work (the implicit
// convolution's chunks): the calling thread's kernels then run alone (team 1, no lease) in
// the caller's ISA `isa`, until kn_solo_end restores its own settings.
typedef struct { int team, isa; kn_lease *lease; } kn_solo;
kn_solo kn_solo_begin(kn_isa isa);
void kn_solo_end(kn_solo saved);
// MARK: - Elementwise kernels per instruction set
// The non-GEMM kernels are plain C that the compiler vectorises. Built for the baseline ISA
// (SSE2 on x86-64) their selects became branches and their vectors 4 wide, so a kernel's
// per-thread work is a KN_BODY function over a range, always inlined into one copy per ISA:
// KN_BY_ISA(body, (parameters), (arguments)) defines them and body_by_isa(), the calling
// thread's copy. The parallel region splits the range by hand (kn_split): OpenMP's outlined
// regions do not inherit a target attribute, and Debian's libomp formats debug strings on
// every `omp for` (0.2 us a loop). Package.swift sets -ffp-contract=off, so every ISA's copy
// gives the same bits.
#define KN_BODY static inline __attribute__((always_inline))
// Loops stay loops: turned into memset / memcpy calls, the short rows of padding and im2col
// paid a library call per 1 to 32 floats.
#define KN_NO_LIBC no_builtin("memset", "memcpy")
#if defined(__x86_64__)
#define KN_BY_ISA(body, params, args)                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"), KN_NO_LIBC)) static void  \
        body##_avx512 params { body args; }                                                \
    __attribute__((target("avx2,fma"), KN_NO_LIBC)) static void body##_avx2 params {        \
        body args;                                                                         \
    }                                                                                      \
    __attribute__((KN_NO_LIBC)) static void body##_portable params { body args; }          \
    static __typeof__(&body##_portable) body##_by_isa(void) {                              \
        const kn_isa isa = kn_isa_active();                                                \
        return isa == KN_ISA_AVX512 ? body##_avx512                                        \
               : isa == KN_ISA_AVX2 ? body##_avx2                                          \
                                    : body##_portable;                                     \
    }
#else
#define KN_BY_ISA(body, params, args)                                                      \
    __attribute__((KN_NO_LIBC)) static void body##_portable params { body args; }          \
    static __typeof__(&body##_portable) body##_by_isa(void) { return body##_portable; }
#endif

// Part t of T of [0, n): contiguous, in order. kn_split: this thread's part inside a parallel
// region (the work of each index never depends on who runs it).
static inline void kn_part(size_t n, size_t T, size_t t, size_t *lo, size_t *hi) {
    const size_t q = n / T, r = n % T;
    *lo = t * q + (t < r ? t : r);
    *hi = *lo + q + (t < r);
}
static inline void kn_split(size_t n, size_t *lo, size_t *hi) {
    kn_part(n, (size_t)omp_get_num_threads(), (size_t)omp_get_thread_num(), lo, hi);
}

// Inside a parallel region: for (i = this thread's share of [0, n)) -- the `omp for` with a
// static schedule, without its libomp call (see above) and without its barrier.
static inline int kn_share_lo(int n) {
    size_t lo, hi;
    kn_split((size_t)n, &lo, &hi);
    return (int)lo;
}
static inline int kn_share_hi(int n) {
    size_t lo, hi;
    kn_split((size_t)n, &lo, &hi);
    return (int)hi;
}
#define KN_FOR_SHARE(n, i) for (int i##_hi_ = kn_share_hi(n), i = kn_share_lo(n); i < i##_hi_; i++)

// Runs the calling thread's ISA copy of `body` on its team (alone unless `parallel`) as
// body(args), each thread with its share [lo, hi) of [0, n) in scope for `args`. The copy is
// chosen before the region: the team's threads follow the caller's ISA, not their own.
#define KN_PARALLEL_RANGES(n, parallel, body, args)                                        \
    do {                                                                                   \
        const size_t kn_n_ = (n);                                                          \
        const int kn_parallel_ = (parallel);                                               \
        __typeof__(&body##_portable) const kn_body_ = body##_by_isa();                     \
        const int kn_team_ = kn_team_enter();                                              \
        _Pragma("omp parallel num_threads(kn_team_) if (kn_parallel_)") {                  \
            size_t lo, hi;                                                                 \
            kn_split(kn_n_, &lo, &hi);                                                     \
            kn_body_ args;                                                                 \
        }                                                                                  \
        kn_team_exit();                                                                    \
    } while (0)

// MARK: - Fixed-order sums (BatchNorm statistics, bias gradients)
// Sums of a plane in LANES interleaved double accumulators (element i goes to lane i % LANES),
// combined in lane order at the end: independent chains the compiler vectorises, in an order
// fixed by the shape alone. One accumulator would serialise on the add latency.
#define LANES 8
typedef struct { double v[LANES]; } lanes;

KN_BODY double lanes_total(const lanes *l) {
    double t = 0.0;
    for (int k = 0; k < LANES; k++) t += l->v[k];
    return t;
}

// acc += sum of p[0..n)
KN_BODY void sum_into(lanes *acc, const float *p, int n) {
    int i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc->v[k] += p[i + k];
    for (; i < n; i++) acc->v[i % LANES] += p[i];
}

// MARK: - GEMM micro-kernels
// Contract (BLIS): a is a packed MR x k panel (column p at a + p*MR), b a packed k x NR panel
// (row p at b + p*NR, 64-byte aligned). The micro-kernel computes the full MR x NR tile
//     C = alpha * a.b + beta * C      (row stride ldc)
// with no loops over MR or NR left to the caller, and with beta == 0 it never reads C.
// Ragged edges are handled by the caller (zero-padded packing and a temporary tile).
typedef void (*kn_sgemm_ukr)(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
                             float alpha, float beta);
// The same contract with B read in place: row p of the k x NR panel is the NR floats at
// rows[p] + off (any alignment, all readable). The implicit convolution passes its shifted
// runs of a padded image this way, so those panels are never packed.
typedef void (*kn_sgemm_ukr_rows)(int k, const float *a, const float *const *rows,
                                  ptrdiff_t off, float *c, ptrdiff_t ldc, float alpha,
                                  float beta);
// The same contract with A read in place: row i of the MR x k panel is arows[i][0..k) (all MR
// pointers readable; rows past the matrix may repeat a real row, their results are dropped).
typedef void (*kn_sgemm_ukr_arows)(int k, const float *const *arows, const float *b, float *c,
                                   ptrdiff_t ldc, float alpha, float beta);

#define KN_UKR(name)                                                                       \
    void name(int k, const float *a, const float *b, float *c, ptrdiff_t ldc, float alpha,     \
              float beta);                                                                     \
    void name##_rows(int k, const float *a, const float *const *rows, ptrdiff_t off, float *c, \
                     ptrdiff_t ldc, float alpha, float beta);                                  \
    void name##_arows(int k, const float *const *arows, const float *b, float *c,              \
                      ptrdiff_t ldc, float alpha, float beta);
KN_UKR(kn_sgemm_ukr_portable_4x8)
#if defined(__x86_64__)
KN_UKR(kn_sgemm_ukr_avx2_6x16)
KN_UKR(kn_sgemm_ukr_avx512_8x48)
KN_UKR(kn_sgemm_ukr_avx512_12x32)
KN_UKR(kn_sgemm_ukr_avx512_12x16)
#endif
#if defined(__aarch64__)
KN_UKR(kn_sgemm_ukr_neon_8x12)
#endif
#undef KN_UKR

// Transposes `rows` source rows of kc floats (row r at src + r*ld) into a panel `width` wide
// (dst[p*width + r]), zero in columns [rows, width): a dense A into its MR-row panel, and a B
// stored transposed (dense-transposed or NCHW-transposed) into its NR-column panel.
typedef void (*kn_pack_rows)(float *dst, const float *src, size_t ld, int rows, int kc,
                             int width);
// Packs an A stored transposed (row i of A at a + i, depth p at a + p*lda) into its MR-row
// panel: each depth position is already a contiguous run of the panel.
typedef void (*kn_pack_at)(float *dst, const float *a, size_t lda, int rows, int kc, int mr);
#if defined(__x86_64__)
void kn_pack_rows_avx2(float *dst, const float *src, size_t ld, int rows, int kc, int width);
void kn_pack_at_avx2(float *dst, const float *a, size_t lda, int rows, int kc, int mr);
#endif

typedef struct {
    kn_sgemm_ukr ukr;
    kn_sgemm_ukr_rows ukr_rows;
    kn_sgemm_ukr_arows ukr_arows;
    const char *ukr_name;
    kn_gemm_blocking blocking;
    kn_pack_rows pack_rows; // NULL: the scalar packing in gemm.c
    kn_pack_at pack_at;     // NULL: likewise
} kn_gemm_impl;

// The micro-kernels of an ISA with their blocking, NULL-terminated (tuning.c).
#define KN_KERNELS_PER_ISA 3
const kn_gemm_impl *kn_gemm_table(kn_isa isa);
// Whether this build has micro-kernels for `isa` (whether the CPU runs them: kn_isa_supported).
int kn_isa_built(kn_isa isa);
// The micro-kernel (with its blocking) of the active ISA that pads an M x N product least.
const kn_gemm_impl *kn_gemm_choose(int M, int N);

// MARK: - Matrix views: what the GEMM driver multiplies
// A dense row-major array, or a view of a conv tensor that the packing routines read
// directly, so no im2col matrix is ever written out (see conv_padded_grid.c).
typedef enum {
    KN_VIEW_DENSE,   // (i, j) -> data[i*ld + j]
    KN_VIEW_DENSE_T, // (i, j) -> data[j*ld + i]
    KN_VIEW_NCHW,    // (ch x N*plane) over a (N, ch, plane) tensor:
                     //   (i, j) -> data[(j / plane) * ch * plane + i * plane + j % plane]
    KN_VIEW_NCHW_T,  // its transpose (N*plane x ch)
    KN_VIEW_SHIFT,   // (C*R*S x N*T) over padded images: row (c, r, s), column (n, t) ->
                     //   data[n*image + c*cstride + r*rstep + s*sstep + t]
                     // so every row is a contiguous run of an image, shifted by (r, s)
    KN_VIEW_IM2COL,  // (C*R*S x N*plane), the column matrix of unpadded images, never written:
                     //   row (c, r, s), column (n, i) -> at = taps[(r*S + s)*plane + i],
                     //   data[n*image + c*cstride + at], or 0 where at < 0 (padding)
} kn_view_kind;

typedef struct {
    kn_view_kind kind;
    float *data;          // read-only when the view is an operand
    int ld;               // dense
    int ch, plane;        // NCHW
    int R, S, rstep, sstep, T; // shift (R, S: im2col too)
    long cstride, image;  // shift, im2col
    const int *taps;      // im2col: input offset of each tap and output position, -1 padding
} kn_view;

// The driver's parts (gemm_pack.c, gemm_macro.c): packing one panel of A or B from a view,
// the start of a shift view's row, C = beta * C, and the macro-kernel over one block's tiles.
void kn_gemm_pack_a(float *dst, const kn_view *A, int i0, int rows, int p0, int kc, int mr,
                    const kn_gemm_impl *impl);
void kn_gemm_pack_b(float *dst, const kn_view *B, int p0, int kc, int j0, int cols, int nr,
                    const kn_gemm_impl *impl);
const float *kn_shift_row(const kn_view *v, int row);
void kn_gemm_scale_c(const kn_view *C, int M, int N, float beta);
typedef struct {
    const kn_gemm_impl *impl;
    const kn_view *A, *B, *C;
    float alpha;
    int in_place_a, in_place_b; // shift views read in place rather than packed
} kn_gemm_block;
typedef struct {
    float edge[64 * 64] __attribute__((aligned(64))); // an MR x NR tile for ragged edges
    const float *arows[64];                           // A's rows, read in place
    float *own_panel;                                 // B's panel of tiles straddling two images
    int own_jr;                                       // the one packed last (-1: none)
} kn_gemm_workspace;
void kn_gemm_macro(const kn_gemm_block *m, int ic, int mc, int jc, int nc, int pc, int kc, float beta_pc,
                   const float *apack, const float *bpack, kn_gemm_workspace *ws);

// C = alpha * A.B + beta * C over views; A is M x K, B is K x N, C (dense or NCHW) is M x N.
// Same blocking, threading and determinism as kn_sgemm (which is this on dense views).
void kn_gemm_views(int M, int N, int K, float alpha, const kn_view *A, const kn_view *B,
                   float beta, const kn_view *C);

// MARK: - Work in chunks of images (the convolutions; conv.c)
// Runs fn(pass, i, slot) for i in [0, items): across the team, a contiguous run of items per
// thread, each thread alone (kn_solo) in a slot of its own (slot t at first_slot +
// t * slot_floats), when 2 <= team <= items and team <= slots; else one item after another on
// the whole team, in the first slot. Items must not depend on who runs them.
typedef void (*kn_item_fn)(const void *pass, int item, float *slot);
void kn_run_items(int items, int slots, float *first_slot, size_t slot_floats, kn_item_fn fn,
                  const void *pass);
// Row stride of a chunk's matrices (`columns` wide): whole cache lines, and off multiples of
// 1 KiB, where the micro-kernel's reads of one column block down the rows fell into a few L1
// sets (a 2 KiB stride: 2 of 64 per line read) and missed.
static inline size_t kn_chunk_ld(long columns) {
    size_t ld = ((size_t)columns + 15) / 16 * 16;
    return ld % 256 == 0 ? ld + 16 : ld;
}

// Grow-only 64-byte-aligned scratch owned by the calling OS thread (freed at thread exit).
// slot 0: packed A, slot 1: packed B.
float *kn_thread_scratch(int slot, size_t floats);

#endif
