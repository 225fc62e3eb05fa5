// RematKernels: float32 CNN kernels for the CPU (the one public header of the C target).
//
// Conventions (see docs/ARCHITECTURE.md):
// - Activations are NCHW, row-major. Letters: N batch, C input channels, H W input height and
//   width, K output channels, R S kernel height and width, P Q output height and width.
// - Functions take outputs first, then inputs, then sizes (llm.c style); sgemm keeps BLAS order.
// - Forward functions overwrite their outputs. Backward functions ACCUMULATE (+=) into
//   gradients; the caller zeroes them once per step.
// - Every kernel is deterministic: the result is bitwise identical for any team size, because
//   reductions use a partition fixed by the shape, never by the number of threads.
// - Threads: every kernel runs on an OpenMP team whose size is a per-calling-thread setting
//   (kn_set_num_threads). Two OS threads may run kernels concurrently, each with its own team.
#ifndef REMAT_KERNELS_H
#define REMAT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Status

typedef enum {
    KN_OK = 0,
    KN_EINVAL = 1,       // a size or argument that cannot be right (negative, zero stride, ...)
    KN_ESHAPE = 2,       // sizes that do not make an output (kernel larger than padded input)
    KN_ELABEL = 3,       // a class label outside [0, classes)
    KN_EUNSUPPORTED = 4, // an instruction set this CPU (or this build) lacks
} kn_status;

/// A one-line English description of a status code.
const char *kn_status_string(kn_status s);

// MARK: - Runtime: instruction sets and threads

typedef enum {
    KN_ISA_PORTABLE = 0, // plain C, any CPU
    KN_ISA_AVX2 = 1,     // x86-64 AVX2 + FMA
    KN_ISA_AVX512 = 2,   // x86-64 AVX-512F
    KN_ISA_NEON = 3,     // arm64 Advanced SIMD
    KN_ISA_COUNT = 4,
} kn_isa;

/// Name of an instruction set ("avx2", ...).
const char *kn_isa_name(kn_isa isa);
/// 1 when this CPU and this build can run the ISA's kernels.
int kn_isa_supported(kn_isa isa);
/// The ISA whose kernels run on the calling thread. The process-wide choice is made once at
/// first use: the best supported, unless the environment variable REMAT_ISA names another (an
/// unsupported name is reported, not ignored).
kn_isa kn_isa_active(void);
/// Switch the calling thread's kernels to `isa` (the threads of its OpenMP team follow it;
/// other OS threads keep theirs). KN_EUNSUPPORTED if this CPU lacks it.
kn_status kn_isa_select(kn_isa isa);
/// Which kernels run and why, one line each (the `verbose` query). Valid until the next call.
const char *kn_dispatch_report(void);

/// Team size for kernels called from THIS OS thread (>= 1). Other threads are unaffected.
void kn_set_num_threads(int n);
/// Team size kernels called from this thread will use. Defaults to the number of usable cores.
int kn_get_num_threads(void);

/// Memory for `bytes` (64-byte aligned; from 128 KiB on mapped on its own, in whole pages;
/// from 2 MiB on, 2 MiB-aligned and backed by huge pages where the kernel allows). Free it with kn_free and the same `bytes`.
/// NULL when out of memory.
void *kn_alloc(size_t bytes);

/// Resident bytes of the GEMM packing space all threads hold now (each thread that runs a
/// GEMM keeps its own, grown to the largest it needed).
size_t kn_packing_bytes(void);
/// Hands the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing),
/// so the resident bytes measured next are what the process holds.
void kn_trim_heap(void);

/// Frees what kn_alloc(bytes) returned (NULL is ignored); a mapped buffer's pages go back to
/// the system at once.
void kn_free(void *p, size_t bytes);

/// Threads one team lends another while it is idle (opaque). The lender offers a count
/// (0 while it is busy); a thread that set the lease with kn_set_team_lease runs its kernels
/// with its own team plus the threads offered at that moment. Results are the same bits
/// whatever the team sizes.
typedef struct kn_lease kn_lease;
kn_lease *kn_lease_create(void);
void kn_lease_destroy(kn_lease *lease);
/// Lowering the offer returns once no running region of the borrower uses more than `threads`
/// of the lent threads, so the lender's next kernels never share cores with them.
void kn_lease_offer(kn_lease *lease, int threads);
/// How many lent threads the borrower's running regions use now (a diagnostic).
int kn_lease_in_use(kn_lease *lease);
/// The lease the calling thread's kernels may borrow from (NULL: none).
void kn_set_team_lease(kn_lease *lease);
/// Binds the calling thread and the workers of its team of `threads` (thread i of the
/// team) to the i-th next of the CPUs the process could use at its first call, from the
/// `first`-th on (wrapping around); `first` < 0 gives each of them back the CPUs it had
/// before its first binding. Two teams bound to disjoint CPUs (the backward and the
/// recompute team) keep each other's threads off their cores. KN_EUNSUPPORTED if the system
/// refused or has no thread affinity (not Linux); KN_EINVAL if `threads` < 1.
kn_status kn_bind_team(int first, int threads);
/// How many CPUs the calling thread may run on now (0 if unknown), and the lowest of them.
int kn_thread_cpus(int *first);
/// Number of cores this process may run on.
int kn_num_cores(void);
/// Measured FMA throughput (GFLOP/s, a multiply-add counts 2) of the active ISA on this
/// thread's team: the denominator of "fraction of peak". Takes about 0.1 s.
double kn_peak_gflops(void);
/// The round trip of a cache line between two threads of the calling thread's team, in ns
/// (0 with a team of one): about 100 on cores that share a last-level cache, several times
/// more across dies. Benchmarks print it beside 2-thread figures. Takes about 0.01 s.
double kn_core_round_trip_ns(void);

/// The data caches of one core, in bytes (0 where the system does not say): L1d, L2, and the
/// share of the L3 of each CPU that shares it.
typedef struct {
    long l1d, l2, l3;
} kn_caches;
/// This machine's caches, read from the operating system (Linux sysfs, macOS sysctl).
kn_caches kn_machine_caches(void);
/// The caches of the machine the tuning table's rows were measured on (an AMD Zen 5).
kn_caches kn_reference_caches(void);

// MARK: - GEMM

/// Register and cache blocking of the GEMM for one instruction set (BLIS names).
/// MR x NR is the micro-kernel tile (fixed per ISA); MC, KC, NC are the cache blocks.
typedef struct {
    int mr, nr; // micro-tile, fixed by the micro-kernel
    int mc;     // rows of A packed per block (multiple of mr)
    int kc;     // depth per packed panel: an MC x KC block of A and a KC x NR sliver of B share L2
    int nc;     // columns of B packed per block (multiple of nr; a KC x NC panel sits in L3)
} kn_gemm_blocking;

/// The blocking of each micro-kernel of an ISA (most used first); returns how many there are
/// and fills up to `max` of them into `out` (which may be NULL to count).
int kn_gemm_kernels(kn_isa isa, kn_gemm_blocking *out, int max);
/// Replace the cache blocks of the ISA's micro-kernel with b's MR x NR. What `tune` writes.
kn_status kn_gemm_set_blocking(kn_isa isa, kn_gemm_blocking b);
/// Every constant the kernels' speed depends on besides the GEMM blocking, per instruction set:
/// read at each call, rewritten by kn_tuning_set (what `remat tune` may search and save).
/// The bits a kernel computes depend on the shape and this table, never on the team size.
typedef struct {
    int parallel_min;        // elements below which an elementwise kernel runs on one thread
    int gemm_parallel_flops; // GEMM FLOPs below which it runs on one thread
    int gemm_kc_in_place;    // deepest KC when B is read in place (implicit GEMMs)
    int conv_scratch_floats; // a convolution's scratch cap when its description gives none
    int col_width;           // im2col: GEMM columns a chunk of images aims for
    int col_image_plane;     // im2col: planes of this many outputs and more are one GEMM each
    int col_view_plane;      // im2col forward: planes of this many and more read x through a view
    int narrow_plane;        // planes narrower than this take batch innermost (and im2col's taps)
    int implicit_min_rows;   // fewest GEMM rows (output channels) an implicit forward or
                             // backward-weights accepts
    int transposed_min_rows; // fewest GEMM rows (input channels) an implicit backward-data accepts
    int grid_junk_ratio;     // padded grid: junk columns x rows at most this x output columns
    int grid_chunk_floats;   // padded grid: floats of padded input + output per chunk
    int batch_dw_min_width;  // batch innermost backward-weights: output width at least this
    int batch_cols;          // batch innermost: output columns a chunk's row aims for
    int batch_images;        // batch innermost: most images per chunk
    int dw_groups;           // implicit backward-weights: partial sums (also their fixed order)
    int transpose_tile;      // side of the tile that sums and transposes them (1 to 32)
    int winograd_min_channels; // fewest input and output channels Winograd accepts
    int winograd_cols;       // Winograd: tiles (GEMM columns) a chunk of images aims for
    int winograd_dw_min_width; // Winograd backward-weights: output width at least this
} kn_tuning;
/// The table's row of `isa`; KN_EUNSUPPORTED for an ISA this build lacks.
kn_status kn_tuning_get(kn_isa isa, kn_tuning *out);
/// Replaces the row; KN_EINVAL if a field is out of its range (every one >= 1).
kn_status kn_tuning_set(kn_isa isa, const kn_tuning *t);
/// What the tuning table holds for `isa` on a machine with caches `c`: the measured row and
/// GEMM blockings with their L2-sized blocks scaled to c's L2 (an unknown L2 keeps them).
/// Fills `row` and up to `max` blockings (either may be NULL); returns how many blockings the
/// ISA has. At start-up the table is set to this for kn_machine_caches(); `remat tune` may
/// then rewrite it. -1 when this build lacks the ISA.
int kn_tuning_for_caches(kn_isa isa, kn_caches c, kn_tuning *row, kn_gemm_blocking *blockings, int max);
/// Counts the changes of the table: a plan made under an older count may be made again.
unsigned kn_tuning_generation(void);

/// The micro-kernel kn_sgemm uses for an M x N product on the active ISA: the one whose
/// MR x NR tiles pad M x N least.
const char *kn_gemm_kernel_name(int M, int N);

/// C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
/// op(A) is M x K, op(B) is K x N, C is M x N. With beta == 0, C is never read (NaN-safe).
/// lda/ldb/ldc are the row strides of A, B, C as stored.
kn_status kn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
/// Naive triple loop, same contract: the oracle for kn_sgemm.
kn_status kn_sgemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C,
                       int ldc);

// MARK: - Convolution

typedef enum {
    KN_CONV_AUTO = 0,        // let kn_conv2d_create choose, per pass
    KN_CONV_PADDED_GRID = 1, // stride 1: implicit GEMM over the zero-padded input, each output
                             // row computed over the padded width; backward-data as the
                             // transposed (stride-1) conv
    KN_CONV_IM2COL = 2,      // any stride: the column matrix of a chunk of images + one GEMM
    KN_CONV_BATCH_INNER = 3, // stride 1: the implicit GEMM with each chunk's images innermost
                             // (C, H, W, image), so no GEMM column is padding: narrow planes
    KN_CONV_REFERENCE = 4,   // the direct seven-loop convolution: exact, slow, any shape
    KN_CONV_WINOGRAD = 5,    // 3x3, stride 1, no dilation, padding <= 2: Winograd F(2x2, 3x3),
                             // 2.25x fewer multiplies; backward-data as the turned kernel's
} kn_conv_algo;

/// The name of an algorithm: "padded-grid", "im2col", "batch-inner", "reference", "winograd"
/// ("auto").
const char *kn_conv_algo_name(kn_conv_algo algo);

typedef enum { KN_PASS_FORWARD, KN_PASS_BACKWARD_DATA, KN_PASS_BACKWARD_WEIGHTS } kn_conv_pass;

/// What a 2-D convolution computes, and how the caller wants it run.
typedef struct {
    int N, C, H, W;             // input (N, C, H, W)
    int K, R, S;                // weights (K, C, R, S), bias (K)
    int stride_h, stride_w;     // >= 1
    int pad_h, pad_w;           // >= 0, zeros
    int dil_h, dil_w;           // >= 1
    kn_conv_algo algo;          // KN_CONV_AUTO, or one algorithm for every pass
    size_t scratch_limit;       // cap on the scratch (0: the tuning table's); images are processed
                                // in chunks that fit, but one image always gets what it needs
    const kn_tuning *tuning;    // the row to plan with (NULL: the table's row of the active ISA)
} kn_conv2d_desc;

/// A 2-D convolution planned once and run many times (oneDNN style): the output size, the
/// algorithm of each pass and the scratch it needs, chosen from an ordered list of
/// algorithms, each accepting the shape or declining with a reason (kn_conv2d_explain).
typedef struct kn_conv2d kn_conv2d;

/// Validates the description and plans it. KN_EINVAL for a size, stride or dilation out of
/// range, a tuning row kn_tuning_set would refuse, or an algorithm that cannot run the shape;
/// KN_ESHAPE when the kernel does not fit.
kn_status kn_conv2d_create(kn_conv2d **plan, const kn_conv2d_desc *desc);
void kn_conv2d_destroy(kn_conv2d *plan);
/// Output rows and columns (N, K, P, Q).
void kn_conv2d_output(const kn_conv2d *plan, int *P, int *Q);
/// Floats of scratch every pass needs: caller-provided scratch is the only memory the passes
/// use besides the GEMM's per-thread packing buffers, so an accounting allocator sees every
/// large buffer.
size_t kn_conv2d_scratch_floats(const kn_conv2d *plan);
/// The algorithm a pass runs.
kn_conv_algo kn_conv2d_algo(const kn_conv2d *plan, kn_conv_pass pass);
/// One line a pass: the algorithm chosen, and why each one before it in the list declined.
/// Owned by the plan.
const char *kn_conv2d_explain(const kn_conv2d *plan);
/// How the plan splits the batch (fixed by the shape and the tuning table, never by the team
/// size, so sums run in the same order): images per im2col chunk and im2col backward-data
/// chunks in flight; images per implicit-GEMM chunk, backward-weights' partial sums, and
/// implicit chunks in flight; and the same three for Winograd. For tests and reports.
typedef struct {
    int col_images, col_slots, implicit_images, implicit_groups, implicit_slots, wino_images, wino_groups, wino_slots;
} kn_conv2d_chunks;
kn_conv2d_chunks kn_conv2d_chunking(const kn_conv2d *plan);

/// y = conv(x, w) + bias. y (N,K,P,Q), x (N,C,H,W), w (K,C,R,S), bias (K) or NULL.
void kn_conv2d_forward(const kn_conv2d *plan, float *y, const float *x, const float *w,
                       const float *bias, float *scratch);
/// dx += conv_transpose(dy, w). dx (N,C,H,W), dy (N,K,P,Q).
void kn_conv2d_backward_data(const kn_conv2d *plan, float *dx, const float *dy, const float *w,
                             float *scratch);
/// dw += dy (*) x, dbias += sum of dy over N, P, Q (dbias may be NULL).
void kn_conv2d_backward_weights(const kn_conv2d *plan, float *dw, float *dbias, const float *dy,
                                const float *x, float *scratch);

/// Direct seven-loop convolutions: the oracles (no scratch, single thread).
void kn_conv2d_forward_ref(const kn_conv2d *cv, float *y, const float *x, const float *w,
                           const float *bias);
void kn_conv2d_backward_data_ref(const kn_conv2d *cv, float *dx, const float *dy, const float *w);
void kn_conv2d_backward_weights_ref(const kn_conv2d *cv, float *dw, float *dbias,
                                    const float *dy, const float *x);

// MARK: - Linear (fully connected): y = x w^T + b

/// y (N, OUT), x (N, IN), w (OUT, IN), b (OUT) or NULL.
void kn_linear_forward(float *y, const float *x, const float *w, const float *b, int N, int IN,
                       int OUT);
/// dx += dy w, dw += dy^T x, db += sum_n dy. dx, db may be NULL.
void kn_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int N, int IN, int OUT);

// MARK: - Elementwise

/// y[i] = a[i] + b[i] (residual add). y may alias a or b.
void kn_add(float *y, const float *a, const float *b, size_t n);
/// y[i] = max(a[i] + b[i], 0): kn_add then kn_relu_forward in one pass, the same bits.
void kn_add_relu(float *y, const float *a, const float *b, size_t n);
/// y[i] += x[i] (gradient accumulation, residual backward).
void kn_accumulate(float *y, const float *x, size_t n);
/// y = max(x, 0). y may alias x.
void kn_relu_forward(float *y, const float *x, size_t n);
/// dx = dy where y > 0, else 0 (y is the ReLU output, or its input: the sign is the same).
/// dx is written, never read (so the caller need not clear it); dx may be dy.
void kn_relu_backward(float *dx, const float *dy, const float *y, size_t n);
/// y (N,C,HW) += bias (C).
void kn_bias_forward(float *y, const float *bias, int N, int C, int HW);
/// dbias (C) += sum over N and HW of dy (N,C,HW).
void kn_bias_backward(float *dbias, const float *dy, int N, int C, int HW);

// MARK: - Pooling (NCHW planes; output size floor((H + 2p - k) / s) + 1)
// KN_EINVAL unless k >= 1, s >= 1, 0 <= 2p <= k (PyTorch's rule) and the output is non-empty.

/// Max over each window; padding never wins. y (N,C,P,Q), x (N,C,H,W).
kn_status kn_maxpool2d_forward(float *y, const float *x, int N, int C, int H, int W, int kh, int kw,
                          int sh, int sw, int ph, int pw);
/// dx += dy routed to the first maximum of each window, found again from x (no stored indices;
/// the layer uses it for windows of more than 256 positions).
kn_status kn_maxpool2d_backward(float *dx, const float *dy, const float *x, int N, int C, int H, int W,
                           int kh, int kw, int sh, int sw, int ph, int pw);
/// As kn_maxpool2d_forward, also writing each window's winner to argmax (N,C,P,Q bytes): its
/// row-major position in the unclipped kh x kw window, so kh * kw <= 256 (else KN_EINVAL).
kn_status kn_maxpool2d_argmax_forward(float *y, void *argmax, const float *x, int N, int C, int H,
                                 int W, int kh, int kw, int sh, int sw, int ph, int pw);
/// dx += dy routed to the recorded winners; with mask (N,C,P,Q; may be NULL), only where mask > 0:
/// a ReLU right before the pool, whose output is the pool's own (max and ReLU commute). The same
/// bits as kn_maxpool2d_backward (then kn_relu_backward) from the input.
kn_status kn_maxpool2d_argmax_backward(float *dx, const float *dy, const void *argmax,
                                  const float *mask, int N, int C, int H, int W, int kh, int kw,
                                  int sh, int sw, int ph, int pw);
/// Mean over each window, padding counted as zeros in the divisor (PyTorch's default).
kn_status kn_avgpool2d_forward(float *y, const float *x, int N, int C, int H, int W, int kh, int kw,
                          int sh, int sw, int ph, int pw);
kn_status kn_avgpool2d_backward(float *dx, const float *dy, int N, int C, int H, int W, int kh, int kw,
                           int sh, int sw, int ph, int pw);
/// y (N,C) = mean of x (N,C,HW) over HW.
void kn_global_avgpool_forward(float *y, const float *x, int N, int C, int HW);
/// dx (N,C,HW) += dy (N,C) / HW.
void kn_global_avgpool_backward(float *dx, const float *dy, int N, int C, int HW);

// MARK: - BatchNorm2d (x, y: (N,C,HW); per-channel vectors: (C))
// Training = kn_batchnorm_stats, then kn_batchnorm_forward, then kn_batchnorm_update_running.
// A checkpoint recompute calls kn_batchnorm_forward (or _relu) alone, with the mean and invstd
// its forward computed (a second kn_batchnorm_stats would give the same bits).

/// mean and invstd = 1/sqrt(biased var + eps) of each channel over N and HW.
void kn_batchnorm_stats(float *mean, float *invstd, const float *x, int N, int C, int HW,
                        float eps);
/// y = (x - mean) * invstd * gamma + beta.
void kn_batchnorm_forward(float *y, const float *x, const float *mean, const float *invstd,
                          const float *gamma, const float *beta, int N, int C, int HW);
/// kn_batchnorm_forward then kn_relu_forward in one pass, the same bits (BN followed by ReLU
/// in training: the normalised tensor is never written).
void kn_batchnorm_forward_relu(float *y, const float *x, const float *mean, const float *invstd,
                               const float *gamma, const float *beta, int N, int C, int HW);
/// sum = kn_batchnorm_forward(x) + shortcut and y = max(sum, 0) in one pass, the bits of
/// kn_batchnorm_forward then kn_add (for sum) and kn_add_relu (for y); BN's output is never
/// written: the end of a residual block in training.
void kn_batchnorm_forward_add_relu(float *sum, float *y, const float *x, const float *shortcut,
                                   const float *mean, const float *invstd, const float *gamma,
                                   const float *beta, int N, int C, int HW);
/// running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
void kn_batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                                 const float *invstd, int C, int count, float eps, float momentum);
/// Inference: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
void kn_batchnorm_inference(float *y, const float *x, const float *running_mean,
                            const float *running_var, const float *gamma, const float *beta,
                            int N, int C, int HW, float eps);
/// Training-mode backward (batch statistics): dx = ... (written, never read), dgamma += ...,
/// dbeta += .... dx may be dy (each channel's sums are taken before its dx is written).
void kn_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                           const float *x, const float *mean, const float *invstd,
                           const float *gamma, int N, int C, int HW);
/// relu(BN(x)) max-pooled in one pass: y (N,C,P,Q) and each window's winner (argmax, bytes) as
/// kn_maxpool2d_argmax_forward's, the normalised activation never written whole (a plane a
/// thread at a time). The bits of kn_batchnorm_forward_relu then kn_maxpool2d_argmax_forward.
/// KN_EINVAL as kn_maxpool2d_argmax_forward.
kn_status kn_batchnorm_relu_maxpool_forward(float *y, void *argmax, const float *x, const float *mean,
                                            const float *invstd, const float *gamma, const float *beta,
                                            int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                            int ph, int pw);
/// Its backward from the pooled gradient dy, the winners, the pooled output (the ReLU's mask) and
/// BN's input x: dx (N,C,H,W) written (x itself allowed: written over it), dgamma and dbeta
/// accumulated. The bits of kn_maxpool2d_argmax_backward into zeros then kn_batchnorm_backward;
/// the unpooled gradient is never written whole. The same bits for any team size.
kn_status kn_batchnorm_relu_maxpool_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                             const void *argmax, const float *pooled, const float *x,
                                             const float *mean, const float *invstd, const float *gamma,
                                             int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                             int ph, int pw);
/// The backward of relu(BN(x) + shortcut) from the sum it kept (kn_batchnorm_forward_add_relu's) instead of
/// x: dsum = dy where sum > 0 (the shortcut's gradient), BN's output recovered as
/// sum - shortcut and xhat as (that - beta) * (1 / gamma); dx as kn_batchnorm_backward's, dgamma
/// and dbeta accumulated. dsum may be dy itself (written over it); dx is written, never read. Needs
/// kn_batchnorm_invertible(gamma, beta); the same bits for any team size.
void kn_batchnorm_residual_backward(float *dsum, float *dx, float *dgamma, float *dbeta,
                                    const float *dy, const float *sum, const float *shortcut,
                                    const float *gamma, const float *beta, const float *invstd,
                                    int N, int C, int HW);
/// 1 when every channel's gamma is finite and |gamma| >= 2^-6 max(1, |beta|), so that xhat
/// can be recovered from BN's output to float32 rounding; 0 otherwise.
int kn_batchnorm_invertible(const float *gamma, const float *beta, int C);

// MARK: - Loss

/// Mean softmax cross-entropy of logits (N, K) against labels (N). Writes the mean loss to
/// *loss and, when dlogits is not NULL, dlogits (N, K) = d(mean loss)/d(logits) (overwritten).
/// KN_ELABEL, with nothing written, if a label is outside [0, K).
kn_status kn_softmax_xent(float *loss, float *dlogits, const float *logits,
                          const int32_t *labels, int N, int K);

// MARK: - Dropout (counter-based: the mask is a pure function of seed, offset + i)

/// y[i] = keep(i) ? x[i] / (1 - p) : 0, keep(i) = uniform(seed, offset + i) >= p. 0 <= p < 1.
void kn_dropout_forward(float *y, const float *x, float p, uint64_t seed, uint64_t offset,
                        size_t n);
/// dx[i] += keep(i) ? dy[i] / (1 - p) : 0, the same mask regenerated.
void kn_dropout_backward(float *dx, const float *dy, float p, uint64_t seed, uint64_t offset,
                         size_t n);
/// The generator itself: a uniform float in [0, 1) for counter `index` (Philox4x32-10).
float kn_uniform(uint64_t seed, uint64_t index);

// MARK: - Optimizers (one flat loop over the parameter arena)

/// PyTorch's SGD: g += wd * w; v = momentum * v + g; w -= lr * (nesterov ? g + momentum * v : v).
void kn_sgd_step(float *w, float *velocity, const float *grad, size_t n, float lr,
                 float momentum, float weight_decay, int nesterov);
/// AdamW (decoupled weight decay); `step` counts from 1.
void kn_adamw_step(float *w, float *m, float *v, const float *grad, size_t n, float lr,
                   float beta1, float beta2, float eps, float weight_decay, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
