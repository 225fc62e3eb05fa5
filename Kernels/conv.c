// Convolution entry points: each pass runs the algorithm its plan chose (conv_plan.c), and the
// runner that sends chunks of images across the team.
//
// The implicit GEMMs (padded grid, batch innermost) take images in chunks fixed by the shape.
// When the team is no larger than the chunks (and the scratch slots), each thread takes a
// contiguous run of chunks and runs it alone, in a slot of its own: no barrier inside a
// chunk, and each thread reads the images that the elementwise kernels (split the same way,
// contiguous ranges in thread order) wrote on its own core. Where two cores share no L3 (a
// slow cache-line round trip), a team splitting every chunk pays that on each barrier and on
// every image the other core had written. Otherwise (one thread, or more threads than
// chunks) the chunks go one after another, each on the whole team. Forward and backward-data
// give the same bits either way. Backward-weights sums its chunks in `implicit_groups` fixed
// runs, each in order into a partial dw^T of its own, and the partials in order at the end,
// so its bits do not depend on the team either.
#include "conv_internal.h"

// Chunks across the team (contract in internal.h): each thread runs its own run of chunks
// alone, in the caller's ISA, so no barrier falls inside a chunk.
void kn_run_items(int items, int slots, float *first_slot, size_t slot_floats, kn_item_fn fn,
                  const void *pass) {
    const int team = kn_team_enter();
    if (team < 2 || team > items || team > slots) {
        kn_team_exit();
        for (int i = 0; i < items; i++) fn(pass, i, first_slot);
        return;
    }
    const kn_isa isa = kn_isa_active();
#pragma omp parallel num_threads(team)
    {
        const kn_solo saved = kn_solo_begin(isa);
        float *slot = first_slot + (size_t)omp_get_thread_num() * slot_floats;
        KN_FOR_SHARE(items, i) fn(pass, i, slot);
        kn_solo_end(saved);
    }
    kn_team_exit();
}

void kn_implicit_run(const kn_conv2d *cv, int items, float *scratch, kn_item_fn fn, const void *pass) {
    kn_run_items(items, cv->implicit_slots, scratch + kn_implicit_shared_floats(cv), kn_implicit_slot_floats(cv),
                 fn, pass);
}

void kn_conv2d_forward(const kn_conv2d *cv, float *y, const float *x, const float *w,
                       const float *bias, float *scratch) {
    switch (cv->algo_forward) {
    case KN_CONV_REFERENCE: kn_conv2d_forward_ref(cv, y, x, w, bias); return;
    case KN_CONV_WINOGRAD: kn_winograd_forward(cv, y, x, w, bias, scratch); return;
    case KN_CONV_PADDED_GRID:
    case KN_CONV_BATCH_INNER: {
        const kn_grid_pass pass = {cv, kn_forward_grid(cv), cv->H, cv->W, cv->K, cv->Q, w, x, bias, y, 0};
        kn_implicit_run(cv, kn_implicit_chunks(cv), scratch,
                        cv->algo_forward == KN_CONV_BATCH_INNER ? kn_batch_inner_chunk : kn_padded_grid_chunk, &pass);
        return;
    }
    default: kn_im2col_forward(cv, y, x, w, bias, scratch);
    }
}

void kn_conv2d_backward_data(const kn_conv2d *cv, float *dx, const float *dy, const float *w,
                             float *scratch) {
    switch (cv->algo_backward_data) {
    case KN_CONV_REFERENCE: kn_conv2d_backward_data_ref(cv, dx, dy, w); return;
    case KN_CONV_WINOGRAD: kn_winograd_backward_data(cv, dx, dy, w, scratch); return;
    case KN_CONV_PADDED_GRID:
    case KN_CONV_BATCH_INNER: {
        const kn_grid_pass pass = {cv, kn_backward_grid(cv), cv->P, cv->Q, cv->C, cv->W, w, dy, NULL, dx, 1};
        kn_implicit_run(cv, kn_implicit_chunks(cv), scratch,
                        cv->algo_backward_data == KN_CONV_BATCH_INNER ? kn_batch_inner_chunk : kn_padded_grid_chunk,
                        &pass);
        return;
    }
    default: kn_im2col_backward_data(cv, dx, dy, w, scratch);
    }
}

void kn_conv2d_backward_weights(const kn_conv2d *cv, float *dw, float *dbias, const float *dy,
                                const float *x, float *scratch) {
    switch (cv->algo_backward_weights) {
    case KN_CONV_REFERENCE: kn_conv2d_backward_weights_ref(cv, dw, dbias, dy, x); return;
    case KN_CONV_WINOGRAD: kn_winograd_backward_weights(cv, dw, dbias, dy, x, scratch); return;
    case KN_CONV_PADDED_GRID:
    case KN_CONV_BATCH_INNER: {
        const kn_dw_pass pass = {cv, dy, x, scratch};
        kn_implicit_run(cv, cv->implicit_groups, scratch,
                        cv->algo_backward_weights == KN_CONV_BATCH_INNER ? kn_batch_inner_dw_group : kn_padded_grid_dw_group,
                        &pass);
        kn_add_partials(cv, dw, scratch, cv->implicit_groups);
        if (dbias) kn_bias_backward(dbias, dy, cv->N, cv->K, cv->P * cv->Q);
        return;
    }
    default: kn_im2col_backward_weights(cv, dw, dbias, dy, x, scratch);
    }
}
