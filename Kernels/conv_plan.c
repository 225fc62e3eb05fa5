// Planning a convolution: validate the description, choose each pass's algorithm from an
// ordered list (the oneDNN way: each entry accepts the shape or declines with a reason, the
// reference last), and size the chunks of images and the scratch. Every constant comes from
// the tuning table's row, copied into the plan.
#include "conv_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *kn_conv_algo_name(kn_conv_algo algo) {
    switch (algo) {
    case KN_CONV_AUTO: return "auto";
    case KN_CONV_PADDED_GRID: return "padded-grid";
    case KN_CONV_IM2COL: return "im2col";
    case KN_CONV_BATCH_INNER: return "batch-inner";
    case KN_CONV_REFERENCE: return "reference";
    case KN_CONV_WINOGRAD: return "winograd";
    }
    return "unknown";
}

static const char *pass_name(kn_conv_pass pass) {
    return pass == KN_PASS_FORWARD ? "forward" : pass == KN_PASS_BACKWARD_DATA ? "backward-data" : "backward-weights";
}

// MARK: - The ordered list

typedef enum { ACCEPTS, DOES_NOT_PAY, CANNOT } verdict;

// What the implicit GEMMs need: stride 1, and for backward-data the transposed conv's
// padding d(R-1) - pad >= 0.
static verdict implicit_can_run(const kn_conv2d *cv, kn_conv_pass pass, char *why, size_t n) {
    if (cv->stride_h != 1 || cv->stride_w != 1) {
        snprintf(why, n, "stride %dx%d, needs 1", cv->stride_h, cv->stride_w);
        return CANNOT;
    }
    if (pass == KN_PASS_BACKWARD_DATA && (cv->pad_h > cv->dil_h * (cv->R - 1) || cv->pad_w > cv->dil_w * (cv->S - 1))) {
        snprintf(why, n, "padding above dilation x (kernel - 1): no transposed conv");
        return CANNOT;
    }
    // few rows fill little of a micro-tile; the transposed conv, whose rows are the input
    // channels and whose B is the padded dy, needs more of them to beat im2col than the
    // forward pass, whose alternative gathers every element of B (lenet5's 1->6 layer:
    // padded grid 2.5-4x faster forward, 1-3x backward-weights; kernel-bench --algo)
    const int transposed = pass == KN_PASS_BACKWARD_DATA, rows = transposed ? cv->C : cv->K;
    const int least = transposed ? cv->tune.transposed_min_rows : cv->tune.implicit_min_rows;
    if (rows < least) {
        snprintf(why, n, "%d GEMM rows fill too little of a micro-tile (under %d)", rows, least);
        return DOES_NOT_PAY;
    }
    return ACCEPTS;
}

static int narrow(const kn_conv2d *cv) { return cv->Q < cv->tune.narrow_plane && cv->W < cv->tune.narrow_plane; }

// Narrow planes (the 8x8 to 2x2 layers): no junk column, faster than im2col or as fast
// (kernel-bench --algo batch-inner and --algo im2col), backward-weights from
// batch_dw_min_width up (at 2x2 its one-chunk GEMM and transposed partial lose).
static verdict batch_inner_verdict(const kn_conv2d *cv, kn_conv_pass pass, char *why, size_t n) {
    const verdict v = implicit_can_run(cv, pass, why, n);
    if (v != ACCEPTS) return v;
    if (!narrow(cv)) {
        snprintf(why, n, "planes %d and %d wide, not under %d", cv->W, cv->Q, cv->tune.narrow_plane);
        return DOES_NOT_PAY;
    }
    if (pass == KN_PASS_BACKWARD_WEIGHTS && cv->Q < cv->tune.batch_dw_min_width) {
        snprintf(why, n, "backward-weights on planes under %d wide", cv->tune.batch_dw_min_width);
        return DOES_NOT_PAY;
    }
    return ACCEPTS;
}

// The padded grid computes Wp - Q junk columns per output row; im2col instead writes and
// re-reads the column matrix, a cost that each of the GEMM's rows (output channels) shares.
// On the docs/WORKLOADS.md layers (kernel-bench --algo) the padded grid wins while junk
// fraction x rows <= grid_junk_ratio.
static verdict padded_grid_verdict(const kn_conv2d *cv, kn_conv_pass pass, char *why, size_t n) {
    const verdict v = implicit_can_run(cv, pass, why, n);
    if (v != ACCEPTS) return v;
    if (narrow(cv)) {
        snprintf(why, n, "narrow planes are batch-inner's");
        return DOES_NOT_PAY;
    }
    const int rows = pass == KN_PASS_BACKWARD_DATA ? cv->C : cv->K, wp = cv->W + 2 * cv->pad_w;
    if ((long)(wp - cv->Q) * rows > (long)cv->tune.grid_junk_ratio * cv->Q) {
        snprintf(why, n, "%d junk columns x %d rows > %d x %d columns", wp - cv->Q, rows, cv->tune.grid_junk_ratio, cv->Q);
        return DOES_NOT_PAY;
    }
    return ACCEPTS;
}

// Winograd F(2x2, 3x3) runs 3x3 stride-1 kernels, undilated, padded by at most 2 (so the
// transposed conv of backward-data has padding >= 0). Its GEMMs' depth is a channel count:
// below winograd_min_channels the transforms outweigh the multiplies saved.
static verdict winograd_verdict(const kn_conv2d *cv, kn_conv_pass pass, char *why, size_t n) {
    if (cv->R != 3 || cv->S != 3 || cv->stride_h != 1 || cv->stride_w != 1 || cv->dil_h != 1 || cv->dil_w != 1 ||
        cv->pad_h > 2 || cv->pad_w > 2) {
        snprintf(why, n, "needs a 3x3 kernel, stride 1, no dilation, padding at most 2");
        return CANNOT;
    }
    if (cv->W + 2 * cv->pad_w > KN_WINOGRAD_MAX_WIDTH || cv->Q + 4 > KN_WINOGRAD_MAX_WIDTH) {
        snprintf(why, n, "planes over %d wide", KN_WINOGRAD_MAX_WIDTH - 4);
        return CANNOT;
    }
    // narrow planes: twice the channels, as the gain there is small (resnet56's 64->64 8x8
    // layer: forward 1.1x) and its scratch is not, against activations this small
    const int least = cv->tune.winograd_min_channels * (narrow(cv) ? 2 : 1);
    if (cv->C < least || cv->K < least) {
        snprintf(why, n, "%d -> %d channels, under %d%s", cv->C, cv->K, least, narrow(cv) ? " on narrow planes" : "");
        return DOES_NOT_PAY;
    }
    // a tile row of 2 or 3 tiles: the transforms' per-row cost outweighs the products saved
    // (vgg11's 4x4 layers); backward-weights, whose products go through the GEMM driver,
    // pays only on wide planes (plain-deep-32's 32x32: 1.19x; vgg11's 16x16: 0.7x)
    const int width = pass == KN_PASS_BACKWARD_WEIGHTS ? cv->tune.winograd_dw_min_width : cv->tune.batch_dw_min_width;
    if (cv->Q < width) {
        snprintf(why, n, "%splanes under %d wide", pass == KN_PASS_BACKWARD_WEIGHTS ? "backward-weights on " : "", width);
        return DOES_NOT_PAY;
    }
    // the transformed weights and a chunk of winograd_cols tiles (or the batch) must fit the
    // scratch cap, or the GEMMs get too few columns (vgg11's 512-channel layers: 4x slower)
    const size_t need = kn_winograd_least_floats(cv);
    if (need > cv->scratch_cap) {
        snprintf(why, n, "its weights and a chunk need %zu floats of scratch, over %zu", need, cv->scratch_cap);
        return DOES_NOT_PAY;
    }
    return ACCEPTS;
}

static verdict accepts(const kn_conv2d *cv, kn_conv_pass pass, char *why, size_t n) {
    (void)cv, (void)pass, (void)why, (void)n;
    return ACCEPTS;
}

static const struct {
    kn_conv_algo algo;
    verdict (*judge)(const kn_conv2d *, kn_conv_pass, char *, size_t);
} candidates[] = {
    {KN_CONV_WINOGRAD, winograd_verdict},
    {KN_CONV_BATCH_INNER, batch_inner_verdict},
    {KN_CONV_PADDED_GRID, padded_grid_verdict},
    {KN_CONV_IM2COL, accepts}, // any shape
    {KN_CONV_REFERENCE, accepts},
};
#define CANDIDATES (sizeof candidates / sizeof candidates[0])

// One pass: the first candidate that accepts, or (requested) the requested one unless it
// cannot run the pass, then im2col, the one that never mixes the two implicit layouts.
// Appends the pass's line to the plan's explanation. Returns -1 if a requested algorithm
// cannot run it.
static kn_conv_algo choose(kn_conv2d *cv, kn_conv_pass pass, int *cannot) {
    char why[160], line[512];
    int n = snprintf(line, sizeof line, "%s: ", pass_name(pass));
    kn_conv_algo chosen = KN_CONV_IM2COL;
    if (cv->algo != KN_CONV_AUTO) {
        verdict v = ACCEPTS;
        for (size_t i = 0; i < CANDIDATES; i++)
            if (candidates[i].algo == cv->algo) v = candidates[i].judge(cv, pass, why, sizeof why);
        if (v == CANNOT) {
            ++*cannot;
            n += snprintf(line + n, sizeof line - n, "im2col (%s requested, but %s)", kn_conv_algo_name(cv->algo), why);
        } else {
            chosen = cv->algo;
            n += snprintf(line + n, sizeof line - n, "%s (requested)", kn_conv_algo_name(chosen));
        }
    } else {
        char declined[400] = "";
        int d = 0;
        for (size_t i = 0; i < CANDIDATES; i++) {
            if (candidates[i].judge(cv, pass, why, sizeof why) == ACCEPTS) {
                chosen = candidates[i].algo;
                break;
            }
            d += snprintf(declined + d, sizeof declined - (size_t)d, "%s%s: %s", d ? "; " : "",
                          kn_conv_algo_name(candidates[i].algo), why);
            if (d >= (int)sizeof declined) d = (int)sizeof declined - 1;
        }
        n += snprintf(line + n, sizeof line - n, "%s%s%s%s", kn_conv_algo_name(chosen), d ? " (declined: " : "",
                      declined, d ? ")" : "");
    }
    strncat(cv->explain, line, sizeof cv->explain - strlen(cv->explain) - 2);
    strcat(cv->explain, "\n");
    return chosen;
}

// MARK: - Chunks and scratch

// Floats of one image in an implicit chunk slot: its padded input and padded-grid output, in
// the largest implicit pass. (Batch innermost: the output's columns, no junk.)
static size_t implicit_image_floats(const kn_conv2d *cv) {
    const int inner = kn_conv_batch_inner(cv);
    const kn_grid f = kn_forward_grid(cv);
    size_t per_image = 0;
    if (kn_conv_is_implicit(cv->algo_forward) || kn_conv_is_implicit(cv->algo_backward_weights))
        per_image = cv->C * kn_grid_plane(f) + (size_t)cv->K * cv->P * (inner ? f.cols : f.wp);
    if (kn_conv_is_implicit(cv->algo_backward_data)) {
        const kn_grid b = kn_backward_grid(cv);
        const size_t bwd = cv->K * kn_grid_plane(b) + (size_t)cv->C * cv->H * (inner ? b.cols : b.wp);
        if (bwd > per_image) per_image = bwd;
    }
    return per_image;
}

// (batch innermost: each output row's stride rounded by kn_chunk_ld, up to 31 floats more)
size_t kn_implicit_slot_floats(const kn_conv2d *cv) {
    const size_t ld_pad = kn_conv_batch_inner(cv) ? 32 * (size_t)(cv->K > cv->C ? cv->K : cv->C) : 0;
    return cv->implicit_images * implicit_image_floats(cv) + kn_grid_slack(cv) + ld_pad;
}
int kn_implicit_chunks(const kn_conv2d *cv) { return (cv->N + cv->implicit_images - 1) / cv->implicit_images; }
size_t kn_implicit_shared_floats(const kn_conv2d *cv) {
    const size_t kcrs = (size_t)cv->K * cv->C * cv->R * cv->S;
    return kn_conv_is_implicit(cv->algo_backward_weights) ? cv->implicit_groups * kcrs : 0;
}

// Chunks of the implicit passes: at most `chunk_limit` floats each, `total_limit` in all.
// Images go in chunks fixed by the shape (not the team size), a multiple of dw_groups of
// them where the batch allows, so a team of 2 or 4 gets equal shares.
static size_t plan_implicit(kn_conv2d *cv, size_t chunk_limit, size_t total_limit) {
    const size_t per_image = implicit_image_floats(cv), kcrs = (size_t)cv->K * cv->C * cv->R * cv->S;
    if (per_image == 0) return 0;
    const size_t groups_wanted = (size_t)cv->tune.dw_groups;
    size_t nb = chunk_limit / per_image;
    if (kn_conv_batch_inner(cv)) {
        // long output rows rather than a cache-sized chunk, within the limit with one slot
        nb = (cv->tune.batch_cols + cv->Q - 1) / cv->Q;
        if (nb > (size_t)cv->tune.batch_images) nb = cv->tune.batch_images;
        cv->implicit_images = (int)nb; // the slot size reads it
        while (nb > 1 && kcrs + kn_implicit_slot_floats(cv) > total_limit) cv->implicit_images = (int)(nb /= 2);
    }
    if (nb > (size_t)cv->N) nb = cv->N;
    if (nb < 1) nb = 1;
    // round the chunk count up to a multiple of the groups (smaller chunks), so a team of 2
    // or 4 gets equal shares (the batch-innermost chunks keep their long rows instead)
    const size_t chunks = (cv->N + nb - 1) / nb;
    const size_t even = (chunks + groups_wanted - 1) / groups_wanted * groups_wanted;
    if (!kn_conv_batch_inner(cv) && even <= (size_t)cv->N) nb = (cv->N + even - 1) / even;
    cv->implicit_images = (int)nb;
    const int n_chunks = kn_implicit_chunks(cv);
    int groups = n_chunks < (int)groups_wanted ? n_chunks : (int)groups_wanted;
    while (groups > 1 && groups * kcrs > total_limit) groups--;
    cv->implicit_groups = groups;
    int slots = n_chunks < kn_num_cores() ? n_chunks : kn_num_cores();
    while (slots > 1 && kn_implicit_shared_floats(cv) + slots * kn_implicit_slot_floats(cv) > total_limit) slots--;
    cv->implicit_slots = slots;
    return kn_implicit_shared_floats(cv) + cv->implicit_slots * kn_implicit_slot_floats(cv);
}

// Winograd's chunks: images enough for winograd_cols tiles, fewer while the scratch would pass
// `limit`; dw_groups partial sums at most, and a slot per core the limit allows.
static size_t plan_winograd(kn_conv2d *cv, size_t limit) {
    const int uses = cv->algo_forward == KN_CONV_WINOGRAD || cv->algo_backward_data == KN_CONV_WINOGRAD ||
                     cv->algo_backward_weights == KN_CONV_WINOGRAD;
    cv->wino_images = cv->wino_groups = cv->wino_slots = 1;
    if (!uses) return 0;
    long nb = kn_winograd_target_images(cv);
    cv->wino_images = (int)nb;
    while (cv->wino_images > 1 && kn_winograd_shared_floats(cv) + kn_winograd_slot_floats(cv) > limit)
        cv->wino_images /= 2;
    nb = cv->wino_images;
    // down to half as many images a chunk, the first count whose chunks come in a multiple of
    // dw_groups with a last chunk at least half full, so a team of 2 or 4 gets near-equal
    // shares (vgg11's 8x8 layers: 11 chunks of 6 images left one thread 36 and the other 28)
    for (long k = nb; 2 * k >= nb; k--) {
        const long chunks = (cv->N + k - 1) / k, last = cv->N - (chunks - 1) * k;
        if (chunks % cv->tune.dw_groups == 0 && 2 * last >= k) {
            cv->wino_images = (int)k;
            break;
        }
    }
    const int chunks = kn_winograd_chunks(cv);
    cv->wino_groups = chunks < cv->tune.dw_groups ? chunks : cv->tune.dw_groups;
    while (cv->wino_groups > 1 && kn_winograd_shared_floats(cv) + kn_winograd_slot_floats(cv) > limit) cv->wino_groups--;
    cv->wino_slots = chunks < kn_num_cores() ? chunks : kn_num_cores();
    while (cv->wino_slots > 1 && kn_winograd_shared_floats(cv) + cv->wino_slots * kn_winograd_slot_floats(cv) > limit)
        cv->wino_slots--;
    return kn_winograd_shared_floats(cv) + cv->wino_slots * kn_winograd_slot_floats(cv);
}

// MARK: - The plan

kn_status kn_conv2d_create(kn_conv2d **plan, const kn_conv2d_desc *d) {
    if (!plan || !d) return KN_EINVAL;
    *plan = NULL;
    if (d->N < 1 || d->C < 1 || d->H < 1 || d->W < 1 || d->K < 1 || d->R < 1 || d->S < 1 ||
        d->stride_h < 1 || d->stride_w < 1 || d->pad_h < 0 || d->pad_w < 0 || d->dil_h < 1 || d->dil_w < 1)
        return KN_EINVAL;
    if ((unsigned)d->algo > KN_CONV_WINOGRAD || (d->tuning && !kn_tuning_valid(d->tuning))) return KN_EINVAL;
    const long eff_r = (long)d->dil_h * (d->R - 1) + 1, eff_s = (long)d->dil_w * (d->S - 1) + 1;
    const long span_h = (long)d->H + 2L * d->pad_h, span_w = (long)d->W + 2L * d->pad_w;
    if (eff_r > span_h || eff_s > span_w) return KN_ESHAPE;
    const long P = (span_h - eff_r) / d->stride_h + 1, Q = (span_w - eff_s) / d->stride_w + 1;
    // every tensor and GEMM dimension must stay within int range
    const double lim = (double)INT_MAX, crs = (double)d->C * d->R * d->S;
    if ((double)d->N * d->C * d->H * d->W > lim || (double)d->N * d->K * P * Q > lim || (double)d->K * crs > lim ||
        crs * P * Q > lim)
        return KN_EINVAL;
    kn_conv2d *cv = calloc(1, sizeof *cv);
    if (!cv) return KN_EINVAL;
    *cv = (kn_conv2d){.N = d->N, .C = d->C, .H = d->H, .W = d->W, .K = d->K, .R = d->R, .S = d->S,
                      .stride_h = d->stride_h, .stride_w = d->stride_w, .pad_h = d->pad_h, .pad_w = d->pad_w,
                      .dil_h = d->dil_h, .dil_w = d->dil_w, .algo = d->algo, .P = (int)P, .Q = (int)Q,
                      .tune = d->tuning ? *d->tuning : *kn_tune()};
    cv->scratch_cap = d->scratch_limit ? d->scratch_limit : (size_t)cv->tune.conv_scratch_floats;
    int cannot = 0;
    cv->algo_forward = choose(cv, KN_PASS_FORWARD, &cannot);
    cv->algo_backward_data = choose(cv, KN_PASS_BACKWARD_DATA, &cannot);
    cv->algo_backward_weights = choose(cv, KN_PASS_BACKWARD_WEIGHTS, &cannot);
    if (cannot == 3) { // a requested algorithm that can run no pass of this shape
        free(cv);
        return KN_EINVAL;
    }

    const size_t limit = cv->scratch_cap;
    const long PQ = P * Q, CRS = (long)crs;
    long nb = PQ >= cv->tune.col_image_plane ? 1 : (cv->tune.col_width + PQ - 1) / PQ;
    const long fit = (long)limit / ((CRS + d->K) * PQ);
    if (nb > fit) nb = fit;
    if (nb > d->N) nb = d->N;
    if (nb < 1) nb = 1;
    cv->col_images = (int)nb;
    cv->implicit_images = cv->implicit_groups = cv->implicit_slots = cv->col_slots = 1;
    const int uses_col = cv->algo_forward == KN_CONV_IM2COL || cv->algo_backward_data == KN_CONV_IM2COL ||
                         cv->algo_backward_weights == KN_CONV_IM2COL;
    const size_t col_chunk = !uses_col ? 0 : nb > 1 ? kn_col_chunk_floats(cv, nb) : kn_conv_is_unit_1x1(cv) ? 0 : (size_t)(CRS * PQ);
    // backward-data's chunks go across the team (kn_im2col_backward_data): a slot per core,
    // as many as the chunks and the limit allow
    if (cv->algo_backward_data == KN_CONV_IM2COL && nb > 1) {
        const long chunks = (d->N + nb - 1) / nb;
        cv->col_slots = (int)(chunks < kn_num_cores() ? chunks : kn_num_cores());
        while (cv->col_slots > 1 && cv->col_slots * col_chunk > limit) cv->col_slots--;
    }
    const size_t col_scratch = cv->col_slots * col_chunk;
    const size_t chunk_limit = (size_t)cv->tune.grid_chunk_floats;
    const size_t implicit_scratch = plan_implicit(cv, d->scratch_limit && d->scratch_limit < chunk_limit ? d->scratch_limit : chunk_limit, limit);
    const size_t wino_scratch = plan_winograd(cv, limit);
    cv->scratch_floats = col_scratch > implicit_scratch ? col_scratch : implicit_scratch;
    if (wino_scratch > cv->scratch_floats) cv->scratch_floats = wino_scratch;
    *plan = cv;
    return KN_OK;
}

void kn_conv2d_destroy(kn_conv2d *plan) { free(plan); }

void kn_conv2d_output(const kn_conv2d *plan, int *P, int *Q) {
    if (P) *P = plan->P;
    if (Q) *Q = plan->Q;
}

size_t kn_conv2d_scratch_floats(const kn_conv2d *plan) { return plan->scratch_floats; }

kn_conv_algo kn_conv2d_algo(const kn_conv2d *plan, kn_conv_pass pass) {
    return pass == KN_PASS_FORWARD ? plan->algo_forward
           : pass == KN_PASS_BACKWARD_DATA ? plan->algo_backward_data : plan->algo_backward_weights;
}

const char *kn_conv2d_explain(const kn_conv2d *plan) { return plan->explain; }

kn_conv2d_chunks kn_conv2d_chunking(const kn_conv2d *plan) {
    return (kn_conv2d_chunks){plan->col_images,      plan->col_slots,   plan->implicit_images,
                              plan->implicit_groups, plan->implicit_slots, plan->wino_images,
                              plan->wino_groups,     plan->wino_slots};
}
