// The per-ISA tuning table: the one place block sizes and algorithm thresholds live. `remat
// tune` may rewrite rows of it; kernels read it at every call.
#include "internal.h"

#include <stdatomic.h>
#include <string.h>

// MARK: - GEMM micro-kernels and their blocking
// Cache blocks: KC*NR*4 bytes of B (a sliver) stay in L1 while a KC*MR sliver of A streams;
// MC*KC*4 bytes of A stay in L2; KC*NC*4 bytes of B sit in L3.

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

static _Atomic unsigned generation; // bumped by every change of a row (not by a rewrite of the same)

const kn_tuning *kn_tune(void) { return &tuning_table[kn_isa_active()]; }

unsigned kn_tuning_generation(void) { return atomic_load(&generation); }

kn_status kn_tuning_get(kn_isa isa, kn_tuning *out) {
    if (!kn_isa_built(isa)) return KN_EUNSUPPORTED;
    if (!out) return KN_EINVAL;
    *out = tuning_table[isa];
    return KN_OK;
}

kn_status kn_tuning_set(kn_isa isa, const kn_tuning *t) {
    if (!kn_isa_built(isa)) return KN_EUNSUPPORTED;
    if (!t) return KN_EINVAL;
    const int *field = (const int *)t;
    for (size_t i = 0; i < sizeof *t / sizeof(int); i++)
        if (field[i] < 1) return KN_EINVAL;
    if (t->transpose_tile > KN_TRANSPOSE_TILE_MAX) return KN_EINVAL;
    if (memcmp(&tuning_table[isa], t, sizeof *t) == 0) return KN_OK; // plans made under it stay valid
    tuning_table[isa] = *t;
    atomic_fetch_add(&generation, 1);
    return KN_OK;
}
