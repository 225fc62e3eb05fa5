// The per-ISA tuning table: the one place block sizes and algorithm thresholds live. `remat
// tune` may rewrite rows of it; kernels read it at every call.
#include "internal.h"

#include <stdatomic.h>
#include <string.h>

// MARK: - GEMM micro-kernels and their blocking
// Cache blocks: an MC x KC block of A and the KC x NR sliver of B its tiles share sit in L2;
// a KC x NC panel of B sits in L3. The rows below were measured on the reference machine
// (kn_reference_caches); at start-up their L2-sized blocks follow this machine's L2 (below).

static kn_gemm_impl gemm_table[KN_ISA_COUNT][KN_KERNELS_PER_ISA] = {
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

const kn_gemm_impl *kn_gemm_table(kn_isa isa) { return gemm_table[isa]; }

int kn_isa_built(kn_isa isa) { return (unsigned)isa < KN_ISA_COUNT && gemm_table[isa][0].ukr != NULL; }

int kn_gemm_kernels(kn_isa isa, kn_gemm_blocking *out, int max) {
    if ((unsigned)isa >= KN_ISA_COUNT) return 0;
    int n = 0;
    for (int i = 0; i < KN_KERNELS_PER_ISA && gemm_table[isa][i].ukr; i++, n++)
        if (out && n < max) out[n] = gemm_table[isa][i].blocking;
    return n;
}

kn_status kn_gemm_set_blocking(kn_isa isa, kn_gemm_blocking b) {
    if (!kn_isa_built(isa)) return KN_EUNSUPPORTED;
    if (b.mc < b.mr || b.mc % b.mr || b.nc < b.nr || b.nc % b.nr || b.kc < 1) return KN_EINVAL;
    if (b.mc > 4096 || b.kc > 4096 || b.nc > 65536) return KN_EINVAL;
    for (int i = 0; i < KN_KERNELS_PER_ISA && gemm_table[isa][i].ukr; i++) {
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
    for (int i = 0; i < KN_KERNELS_PER_ISA && row[i].ukr; i++) {
        const kn_gemm_blocking *b = &row[i].blocking;
        const double area = (double)((M + b->mr - 1) / b->mr * b->mr) * ((N + b->nr - 1) / b->nr * b->nr);
        if (i == 0 || area < best_area) best = &row[i], best_area = area;
    }
    return best;
}

const char *kn_gemm_kernel_name(int M, int N) { return kn_gemm_choose(M, N)->ukr_name; }


// MARK: - Everything else

// The same on every ISA until measured otherwise: each was chosen on the docs/WORKLOADS.md
// layers (kernel-bench), as docs/ARCHITECTURE.md says where each is used.
static const kn_tuning defaults = {
    .parallel_min = 32768,
    .gemm_parallel_flops = 100000,
    .gemm_kc_in_place = 512,
    .conv_scratch_floats = 1 << 22,
    .col_width = 512,
    .col_image_plane = 256,
    .col_view_plane = 16,
    .narrow_plane = 16,
    .implicit_min_rows = 4,
    .transposed_min_rows = 8,
    .grid_junk_ratio = 16,
    .grid_chunk_floats = 1 << 19,
    .batch_dw_min_width = 8,
    .batch_cols = 256,
    .batch_images = 32,
    .dw_groups = 4,
    .transpose_tile = 16,
    .winograd_min_channels = 64,
    .winograd_cols = 96,
    .winograd_dw_min_width = 32,
};
static kn_tuning tuning_table[KN_ISA_COUNT] = {defaults, defaults, defaults, defaults};

// An ISA's row as measured: the defaults, but Winograd from 32 channels on AVX2. Its
// transforms cost the same on either x86 ISA while a direct convolution's products take twice
// as long with half the lanes (resnet56's 32->32 layer on 16x16 planes, 1 thread, AVX2:
// forward 3.2 ms against 5.3-6.3 direct, backward-data 3.0-3.2 against 6.1-6.4; on AVX-512
// 2.3-2.8 against 2.4-2.8).
static kn_tuning measured_row(kn_isa isa) {
    kn_tuning t = defaults;
    if (isa == KN_ISA_AVX2) t.winograd_min_channels = 32;
    return t;
}

// MARK: - Following the machine
// The rows above were measured on an AMD Zen 5 (48 KiB L1d, 1 MiB L2 a core). What was sized
// to sit in L2 follows this machine's L2 by r = L2 / 1 MiB (at most 4): the GEMM's A block and
// B sliver, (MC + NR) x KC floats, keep their share of L2 (a smaller L2 shortens KC first, a
// larger one widens MC: a deep KC amortises each tile's loads and stores of C), the depth of
// in-place GEMMs shortens with KC, and Winograd's tiles per chunk follow L2 in proportion. The
// result depends on the caches alone, so a machine always gets the same table (and bits).

static const kn_caches reference = {48 * 1024, 1024 * 1024, 0};
static kn_gemm_blocking measured[KN_ISA_COUNT][KN_KERNELS_PER_ISA]; // the rows as written above

kn_caches kn_reference_caches(void) { return reference; }

// A depth KC on an L2 r times the reference's: shorter on a smaller one, never below 128.
static int follow_depth(int kc, double r) {
    if (r >= 1 || kc <= 128) return kc;
    const int k = (int)(kc * r) / 64 * 64;
    return k < 128 ? 128 : k;
}

int kn_tuning_for_caches(kn_isa isa, kn_caches c, kn_tuning *row, kn_gemm_blocking *out, int max) {
    if (!kn_isa_built(isa)) return -1;
    const double r = c.l2 <= 0 ? 1.0 : c.l2 > 4 * reference.l2 ? 4.0 : (double)c.l2 / reference.l2;
    int n = 0;
    for (; n < KN_KERNELS_PER_ISA && gemm_table[isa][n].ukr; n++) {
        kn_gemm_blocking b = measured[isa][n];
        const int kc = follow_depth(b.kc, r);
        const int fit = (int)((double)(b.mc + b.nr) * b.kc * r / kc) - b.nr; // rows of A that fit
        b.mc = fit < b.mr ? b.mr : fit > 4096 ? 4096 / b.mr * b.mr : fit / b.mr * b.mr;
        b.kc = kc;
        if (out && n < max) out[n] = b;
    }
    if (row) {
        *row = measured_row(isa);
        row->gemm_kc_in_place = follow_depth(row->gemm_kc_in_place, r);
        const int cols = (int)(row->winograd_cols * r) / 16 * 16;
        row->winograd_cols = cols < 32 ? 32 : cols;
    }
    return n;
}

// At load, before any kernel runs: every built ISA's row for this machine's caches.
__attribute__((constructor)) static void follow_machine(void) {
    const kn_caches here = kn_machine_caches();
    for (int isa = 0; isa < KN_ISA_COUNT; isa++) {
        if (!kn_isa_built((kn_isa)isa)) continue;
        for (int i = 0; i < KN_KERNELS_PER_ISA && gemm_table[isa][i].ukr; i++)
            measured[isa][i] = gemm_table[isa][i].blocking;
        kn_gemm_blocking b[KN_KERNELS_PER_ISA];
        const int n = kn_tuning_for_caches((kn_isa)isa, here, &tuning_table[isa], b, KN_KERNELS_PER_ISA);
        for (int i = 0; i < n; i++) gemm_table[isa][i].blocking = b[i];
    }
}

static _Atomic unsigned generation; // bumped by every change of a row (not by a rewrite of the same)

const kn_tuning *kn_tune(void) { return &tuning_table[kn_isa_active()]; }

unsigned kn_tuning_generation(void) { return atomic_load(&generation); }

kn_status kn_tuning_get(kn_isa isa, kn_tuning *out) {
    if (!kn_isa_built(isa)) return KN_EUNSUPPORTED;
    if (!out) return KN_EINVAL;
    *out = tuning_table[isa];
    return KN_OK;
}

int kn_tuning_valid(const kn_tuning *t) {
    const int *field = (const int *)t;
    for (size_t i = 0; i < sizeof *t / sizeof(int); i++)
        if (field[i] < 1) return 0;
    return t->transpose_tile <= KN_TRANSPOSE_TILE_MAX;
}

kn_status kn_tuning_set(kn_isa isa, const kn_tuning *t) {
    if (!kn_isa_built(isa)) return KN_EUNSUPPORTED;
    if (!t || !kn_tuning_valid(t)) return KN_EINVAL;
    if (memcmp(&tuning_table[isa], t, sizeof *t) == 0) return KN_OK; // plans made under it stay valid
    tuning_table[isa] = *t;
    atomic_fetch_add(&generation, 1);
    return KN_OK;
}
