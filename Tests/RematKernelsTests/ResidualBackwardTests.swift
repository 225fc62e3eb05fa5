import Testing
import RematKernels

/// The backward of relu(BN(x) + shortcut) from the kept sum (kn_batchnorm_residual_backward)
/// against the same gradient in double from x, and against kn_batchnorm_backward's own error.
@Suite("BatchNorm's backward from a residual sum")
struct ResidualBackwardTests {
    /// Random shapes, ragged planes (1, 7, 33 elements: short of a vector, across one), random
    /// scales of either sign and shortcuts of both signs: the errors of the gradients computed
    /// from the sum stay at float32 rounding (at most 1e-4 of the largest, or 10x those of the
    /// float32 backward from x) and the same bits come out for 1, 2 and 3 threads.
    @Test(arguments: [(2, 3, 1), (3, 4, 7), (4, 5, 33), (2, 16, 64)])
    func matchesDoubleFromTheInput(shape: (Int, Int, Int)) throws {
        let (N, C, HW) = shape, count = N * C * HW
        var rng = SplitMix(UInt64(11 * N + C + HW))
        let x = rng.array(count, -2, 3), sc = rng.array(count, -1, 2), dy = rng.array(count)
        let gamma = (0..<C).map { c in (c % 2 == 0 ? 1 : -1) * rng.uniform(0.3, 2) }, beta = rng.array(C, -0.5, 0.5)
        var mean = [Float](repeating: 0, count: C), invstd = mean
        kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
        var sum = [Float](repeating: .nan, count: count), y = sum
        kn_batchnorm_forward_add_relu(&sum, &y, x, sc, mean, invstd, gamma, beta, Int32(N), Int32(C), Int32(HW))
        #expect(sum.contains { $0 > 0 } && sum.contains { $0 <= 0 }, "both sides of the ReLU exercised")
        #expect(kn_batchnorm_invertible(gamma, beta, Int32(C)) == 1)

        // the oracle: the textbook backward in double from x, with the float32 forward's mask
        var want = (dx: [Double](repeating: 0, count: count), dg: [Double](repeating: 0, count: C), db: [Double](repeating: 0, count: C))
        for c in 0..<C {
            let idx = (0..<N).flatMap { n in (0..<HW).map { (n * C + c) * HW + $0 } }
            let m = Double(idx.count), mu = idx.reduce(0.0) { $0 + Double(x[$1]) } / m
            let istd = 1 / (idx.reduce(0.0) { $0 + (Double(x[$1]) - mu) * (Double(x[$1]) - mu) } / m + 1e-5).squareRoot()
            let dz = idx.map { sum[$0] > 0 ? Double(dy[$0]) : 0 }, xhat = idx.map { (Double(x[$0]) - mu) * istd }
            let sdz = dz.reduce(0, +), sdzx = zip(dz, xhat).reduce(0.0) { $0 + $1.0 * $1.1 }
            (want.db[c], want.dg[c]) = (sdz, sdzx)
            for (k, i) in idx.enumerated() { want.dx[i] = Double(gamma[c]) * istd * (dz[k] - sdz / m - xhat[k] * sdzx / m) }
        }
        func fromSum() -> ([Float], [Float], [Float], [Float]) {
            var dsum = [Float](repeating: .nan, count: count), dx = dsum // written, never read
            var dg = [Float](repeating: 0, count: C), db = dg
            kn_batchnorm_residual_backward(&dsum, &dx, &dg, &db, dy, sum, sc, gamma, beta, invstd, Int32(N), Int32(C), Int32(HW))
            return (dsum, dx, dg, db)
        }
        let (dsum, dx, dg, db) = withThreads(1) { fromSum() }
        var reluGrad = [Float](repeating: 0, count: count)
        kn_relu_backward(&reluGrad, dy, y, count)
        expectBitwise(dsum, reluGrad, "d(sum) is ReLU's gradient")
        // the float32 backward from x: the error the new one is held to
        var rx = [Float](repeating: 0, count: count), rg = [Float](repeating: 0, count: C), rb = rg
        kn_batchnorm_backward(&rx, &rg, &rb, reluGrad, x, mean, invstd, gamma, Int32(N), Int32(C), Int32(HW))
        func check(_ got: [Float], _ reference: [Float], _ want: [Double], _ what: String) {
            let scale = want.map(abs).max()!
            let own = zip(reference, want).map { abs(Double($0) - $1) }.max()!
            let err = zip(got, want).map { abs(Double($0) - $1) }.max()!
            #expect(err <= max(1e-4 * scale, 10 * own), "\(what) \(shape): error \(err), float32 from x \(own), scale \(scale)")
        }
        check(dx, rx, want.dx, "dx")
        check(dg, rg, want.dg, "dgamma")
        check(db, rb, want.db, "dbeta")
        for team in [2, 3] {
            let other = withThreads(team) { fromSum() }
            expectBitwise(other.0 + other.1 + other.2 + other.3, dsum + dx + dg + db, "\(team) threads")
        }
        // d(sum) written over dy itself: the same bits
        for team in [1, 2] {
            var over = dy, inDx = [Float](repeating: .nan, count: count), inDg = [Float](repeating: 0, count: C), inDb = inDg
            withThreads(team) {
                over.withUnsafeMutableBufferPointer { d in
                    kn_batchnorm_residual_backward(d.baseAddress, &inDx, &inDg, &inDb, d.baseAddress, sum, sc, gamma, beta, invstd,
                                                   Int32(N), Int32(C), Int32(HW))
                }
            }
            expectBitwise(over + inDx + inDg + inDb, dsum + dx + dg + db, "d(sum) over dy, \(team) threads")
        }
    }

    /// BatchNorm, the shortcut added and ReLU in one pass: the bits of the three passes, for
    /// 1 and 2 threads, a ragged plane included.
    @Test(arguments: [(3, 4, 7), (2, 8, 1024)])
    func forwardAddReluIsTheThreePasses(shape: (Int, Int, Int)) {
        let (N, C, HW) = shape, n = N * C * HW
        var rng = SplitMix(3)
        let x = rng.array(n, -2, 3), sc = rng.array(n), gamma = rng.array(C, 0.5, 1.5), beta = rng.array(C)
        var mean = [Float](repeating: 0, count: C), invstd = mean
        kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
        var z = [Float](repeating: 0, count: n), sum = z, y = z
        kn_batchnorm_forward(&z, x, mean, invstd, gamma, beta, Int32(N), Int32(C), Int32(HW))
        kn_add(&sum, z, sc, n)
        kn_add_relu(&y, z, sc, n)
        for team in [1, 2] {
            var fusedSum = [Float](repeating: .nan, count: n), fusedY = fusedSum
            withThreads(team) {
                kn_batchnorm_forward_add_relu(&fusedSum, &fusedY, x, sc, mean, invstd, gamma, beta, Int32(N), Int32(C), Int32(HW))
            }
            expectBitwise(fusedSum, sum, "sum, \(team) threads")
            expectBitwise(fusedY, y, "output, \(team) threads")
        }
    }

    /// A scale of 0, 1e-30, NaN or one far below its shift cannot be divided by; 1 can.
    @Test func invertibleScales() {
        func ok(_ g: Float, _ b: Float) -> Bool { kn_batchnorm_invertible([1, g], [0, b], 2) == 1 }
        #expect(ok(1, 0) && ok(-0.5, 3) && ok(0.02, 0.5))
        #expect(!ok(0, 0) && !ok(1e-30, 0) && !ok(-1e-30, 0) && !ok(.nan, 0) && !ok(.infinity, 0) && !ok(1, .nan))
        #expect(!ok(0.01, 1) && !ok(1, 100))
    }
}
