import Foundation
import RematKernels
import Testing

/// Every output of one training-style pass over a few layer shapes, as one array: GEMM, conv
/// forward / backward-data / backward-weights (one-image and chunked paths), BatchNorm and
/// bias reductions, pooling. Large enough that every kernel forks a team.
func kernelFingerprint(seed: UInt64) -> [Float] {
    var rng = SplitMix(seed)
    var out: [Float] = []
    let (M, N, K) = (301, 203, 705)
    let a = rng.array(M * K), b = rng.array(K * N)
    var c = [Float](repeating: 0, count: M * N)
    _ = kn_sgemm(0, 1, Int32(M), Int32(N), Int32(K), 1, a, Int32(K), b, Int32(K), 0, &c, Int32(N))
    out += c
    for conv in [Conv(N: 8, C: 16, H: 16, W: 16, K: 16, R: 3, S: 3, pad: (1, 1))!,
                 Conv(N: 8, C: 32, H: 8, W: 8, K: 32, R: 3, S: 3, pad: (1, 1))!,
                 Conv(N: 8, C: 16, H: 16, W: 16, K: 32, R: 1, S: 1, stride: (2, 2))!] {
        let x = rng.array(conv.xCount), w = rng.array(conv.wCount), bias = rng.array(Int(conv.K))
        let dy = rng.array(conv.yCount)
        out += conv.forward(x, w, bias)
        out += conv.backwardData(dy, w, into: [Float](repeating: 0, count: conv.xCount))
        let (dw, db) = conv.backwardWeights(dy, x, into: [Float](repeating: 0, count: conv.wCount),
                                            biasInto: [Float](repeating: 0, count: Int(conv.K)))
        out += dw + db
    }
    let (n, ch, hw) = (16, 32, 256)
    let x = rng.array(n * ch * hw), dy = rng.array(n * ch * hw), gm = rng.array(ch)
    var mean = [Float](repeating: 0, count: ch), invstd = mean, dg = mean, dbt = mean, dbias = mean
    var dx = [Float](repeating: 0, count: x.count)
    kn_batchnorm_stats(&mean, &invstd, x, Int32(n), Int32(ch), Int32(hw), 1e-5)
    kn_batchnorm_backward(&dx, &dg, &dbt, dy, x, mean, invstd, gm, Int32(n), Int32(ch), Int32(hw))
    kn_bias_backward(&dbias, dy, Int32(n), Int32(ch), Int32(hw))
    var pooled = [Float](repeating: 0, count: n * ch * hw / 4)
    _ = kn_maxpool2d_forward(&pooled, x, Int32(n), Int32(ch), 16, 16, 2, 2, 2, 2, 0, 0)
    out += mean + invstd + dx + dg + dbt + dbias + pooled
    return out
}

@Suite("Determinism across team sizes and concurrent teams")
struct DeterminismTests {
    @Test func sameBitsForAnyTeamSize() {
        kernelStateLock.withLock {
            let one = withThreads(1) { kernelFingerprint(seed: 1) }
            for team in [2, 3, max(4, Int(kn_num_cores()))] {
                let other = withThreads(team) { () -> [Float] in
                    #expect(Int(kn_get_num_threads()) == team)
                    return kernelFingerprint(seed: 1)
                }
                expectBitwise(one, other, "team of \(team) vs 1")
            }
        }
    }

    /// Two OS threads, each with its own team size, running kernels at the same time (the
    /// backward thread and the recompute thread) get exactly what each gets alone.
    @Test func concurrentTeamsMatchRunningAlone() {
        kernelStateLock.withLock {
            let alone = withThreads(1) { kernelFingerprint(seed: 2) }
            let results = Mutex<[Int: [Float]]>([:])
            let threads = [(1, 1), (2, 2), (3, 1)].map { (id, team) in
                Thread {
                    kn_set_num_threads(Int32(team))
                    let r = kernelFingerprint(seed: 2)
                    results.withLock { $0[id] = r }
                }
            }
            for t in threads { t.start() }
            // Thread has no join: poll for the results (bounded, so a hang fails instead)
            var waited = 0.0
            while results.withLock({ $0.count }) < threads.count && waited < 120 {
                Thread.sleep(forTimeInterval: 0.01); waited += 0.01
            }
            for id in [1, 2, 3] {
                guard let r = results.withLock({ $0[id] }) else { Issue.record("thread \(id) did not finish"); continue }
                expectBitwise(alone, r, "concurrent thread \(id) vs alone")
            }
        }
    }
}

extension DeterminismTests {
    /// A lender that takes its threads back (offer 0) returns only when the borrower's running
    /// kernel no longer uses them, and the borrower's results stay the bits of a team of one.
    @Test func takingLentThreadsBackWaitsForTheBorrowersKernel() {
        kernelStateLock.withLock {
            let n = 384
            var rng = SplitMix(5)
            let a = rng.array(n * n), b = rng.array(n * n)
            let product: @Sendable () -> [Float] = {
                var c = [Float](repeating: 0, count: n * n)
                _ = kn_sgemm(0, 0, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
                return c
            }
            let alone = withThreads(1) { product() }
            nonisolated(unsafe) let lease = kn_lease_create()!
            defer { kn_lease_destroy(lease) }
            let stop = Mutex(false), mismatches = Mutex(0), finished = DispatchSemaphore(value: 0)
            Thread {
                kn_set_num_threads(1)
                kn_set_team_lease(lease)
                while !stop.withLock({ $0 }) {
                    if product() != alone { mismatches.withLock { $0 += 1 } }
                }
                kn_set_team_lease(nil)
                finished.signal()
            }.start()
            var borrowed = 0, leftInUse = 0
            for _ in 0..<200 {
                kn_lease_offer(lease, 1)
                Thread.sleep(forTimeInterval: 0.0003)
                if kn_lease_in_use(lease) > 0 { borrowed += 1 }
                kn_lease_offer(lease, 0)
                if kn_lease_in_use(lease) != 0 { leftInUse += 1 }
            }
            stop.withLock { $0 = true }
            #expect(finished.wait(timeout: .now() + 60) == .success)
            #expect(leftInUse == 0)
            #expect(borrowed > 0) // the borrower did run on the lent thread
            #expect(mismatches.withLock { $0 } == 0)
        }
    }

    /// Selecting an instruction set changes the calling thread only: a thread that switches
    /// to the portable kernels leaves every other thread on the process-wide choice (so one
    /// test or tuner cannot change the bits another thread computes).
    @Test func isaSelectionIsPerThread() {
        let main = kn_isa_active()
        let seen = Mutex<[kn_isa]>([])
        let done = DispatchSemaphore(value: 0)
        Thread {
            #expect(kn_isa_select(KN_ISA_PORTABLE) == KN_OK)
            seen.withLock { $0.append(kn_isa_active()) }
            done.signal()
        }.start()
        #expect(done.wait(timeout: .now() + 60) == .success)
        #expect(seen.withLock { $0 } == [KN_ISA_PORTABLE])
        #expect(kn_isa_active() == main)
    }

    /// The placement probe benchmarks print: nothing to measure with one thread; with two, a
    /// hand-off takes at least a few ns and, even on one shared core (it yields), finishes.
    @Test func coreRoundTripIsMeasuredOnTwoThreads() {
        #expect(withThreads(1) { kn_core_round_trip_ns() } == 0)
        let ns = withThreads(2) { kn_core_round_trip_ns() }
        #expect(ns > 1 && ns < 1e6, "\(ns) ns")
    }
}

/// A tiny lock-protected box (Synchronization's Mutex needs macOS 15 / Swift 6 runtime APIs;
/// this keeps the tests portable).
final class Mutex<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(&value) }
}

/// The outputs of the kernels compiled once per instruction set (KN_BY_ISA in internal.h),
/// on ragged sizes: odd lengths leave vector tails, 11 x 11 planes leave a pooling edge.
func elementwiseFingerprint(seed: UInt64) -> [Float] {
    var rng = SplitMix(seed)
    let (n, ch, hw) = (3, 5, 121)
    let count = n * ch * hw
    let x = rng.array(count), other = rng.array(count), dy = rng.array(count)
    let gm = rng.array(ch), bt = rng.array(ch), bias = rng.array(ch)
    var out: [Float] = []
    var y = [Float](repeating: 0, count: count)
    kn_add(&y, x, other, count); out += y
    kn_accumulate(&y, dy, count); out += y
    kn_relu_forward(&y, x, count); out += y
    var dx = dy
    kn_relu_backward(&dx, other, y, count); out += dx
    y = x
    kn_bias_forward(&y, bias, Int32(n), Int32(ch), Int32(hw)); out += y
    var dbias = bias
    kn_bias_backward(&dbias, dy, Int32(n), Int32(ch), Int32(hw)); out += dbias
    var mean = [Float](repeating: 0, count: ch), invstd = mean, dg = gm, db = bt
    kn_batchnorm_stats(&mean, &invstd, x, Int32(n), Int32(ch), Int32(hw), 1e-5)
    kn_batchnorm_forward(&y, x, mean, invstd, gm, bt, Int32(n), Int32(ch), Int32(hw)); out += y
    kn_batchnorm_inference(&y, x, mean, invstd.map { $0 * $0 }, gm, bt, Int32(n), Int32(ch), Int32(hw), 1e-5)
    out += y
    dx = other
    kn_batchnorm_backward(&dx, &dg, &db, dy, x, mean, invstd, gm, Int32(n), Int32(ch), Int32(hw))
    out += mean + invstd + dx + dg + db
    var pooled = [Float](repeating: 0, count: n * ch * 25)
    _ = kn_maxpool2d_forward(&pooled, x, Int32(n), Int32(ch), 11, 11, 2, 2, 2, 2, 0, 0)
    dx = other
    _ = kn_maxpool2d_backward(&dx, Array(dy[0..<pooled.count]), x, Int32(n), Int32(ch), 11, 11, 2, 2, 2, 2, 0, 0)
    out += pooled + dx
    var winners = [UInt8](repeating: 0, count: pooled.count)
    _ = kn_maxpool2d_argmax_forward(&pooled, &winners, x, Int32(n), Int32(ch), 11, 11, 2, 2, 2, 2, 0, 0)
    dx = other
    _ = kn_maxpool2d_argmax_backward(&dx, Array(dy[0..<pooled.count]), winners, pooled, Int32(n), Int32(ch), 11, 11, 2, 2, 2, 2, 0, 0)
    out += pooled + winners.map(Float.init) + dx
    var w = x, velocity = other
    kn_sgd_step(&w, &velocity, dy, count, 0.1, 0.9, 1e-4, 1)
    return out + w + velocity
}

extension DeterminismTests {
    /// Every instruction set's copy of the elementwise kernels gives the same bits (they are
    /// compiled from one source without FMA contraction), so REMAT_ISA changes only the GEMM.
    @Test func elementwiseKernelsGiveTheSameBitsOnEveryISA() {
        let main = kn_isa_active()
        defer { _ = kn_isa_select(main) }
        let reference = elementwiseFingerprint(seed: 3)
        for isa in [KN_ISA_PORTABLE, KN_ISA_AVX2, KN_ISA_AVX512, KN_ISA_NEON] where kn_isa_supported(isa) != 0 {
            #expect(kn_isa_select(isa) == KN_OK)
            expectBitwise(reference, elementwiseFingerprint(seed: 3), String(cString: kn_isa_name(isa)))
        }
    }
}
