import RematKernels
import Testing

/// One random GEMM problem with leading dimensions larger than needed.
struct GemmCase: CustomStringConvertible {
    var transA: Int32, transB: Int32, M: Int, N: Int, K: Int, alpha: Float, beta: Float
    var lda: Int { (transA != 0 ? M : K) + 3 }
    var ldb: Int { (transB != 0 ? K : N) + 1 }
    var ldc: Int { N + 2 }
    var description: String { "t\(transA)\(transB) \(M)x\(N)x\(K) a=\(alpha) b=\(beta)" }

    /// Runs `gemm` on seeded data; returns C.
    func run(_ seed: UInt64, absolute: Bool = false,
             _ gemm: (Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>, Int32,
                      UnsafePointer<Float>, Int32, Float, UnsafeMutablePointer<Float>, Int32) -> kn_status)
        -> [Float]
    {
        var rng = SplitMix(seed)
        let rowsA = transA != 0 ? K : M, rowsB = transB != 0 ? N : K
        var a = rng.array(max(1, rowsA * lda)), b = rng.array(max(1, rowsB * ldb)), c = rng.array(max(1, M * ldc))
        if absolute { a = a.map(abs); b = b.map(abs); c = c.map(abs) }
        let (al, be) = absolute ? (abs(alpha), abs(beta)) : (alpha, beta)
        let status = gemm(transA, transB, Int32(M), Int32(N), Int32(K), al, a, Int32(lda), b, Int32(ldb), be, &c, Int32(ldc))
        precondition(status == KN_OK, "sgemm refused \(self)")
        return c
    }

    /// |fast - ref| <= 2 gamma(K+2) (|alpha| sum|a||b| + |beta c|): both results are within
    /// gamma(K+2) of the exact one; the magnitudes come from the reference run on |a|, |b|, |c|.
    func check(seed: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        let fast = run(seed, kn_sgemm), ref = run(seed, kn_sgemm_ref)
        let magnitude = run(seed, absolute: true, kn_sgemm_ref)
        let bound = magnitude.map { 2 * gamma(K + 2) * (1 + gamma(K + 2)) * Double($0) + 1e-30 }
        expectClose(fast, ref, bound: bound, "sgemm \(self) isa \(String(cString: kn_isa_name(kn_isa_active())))",
                    sourceLocation: sourceLocation)
    }
}

@Suite("SGEMM against the reference")
struct GemmTests {
    /// Random shapes for every micro-kernel of every instruction set this CPU runs, ragged
    /// edges included: sizes around each kernel's micro-tile and cache blocks. Records which
    /// micro-kernel ran each case and expects every one of the ISA to have run.
    @Test func randomShapesEveryKernel() {
        kernelStateLock.withLock {
            let saved = kn_isa_active()
            defer { _ = kn_isa_select(saved) }
            for raw in 0..<KN_ISA_COUNT.rawValue {
                let isa = kn_isa(raw)
                guard kn_isa_supported(isa) != 0 else { continue }
                #expect(kn_isa_select(isa) == KN_OK)
                var table = [kn_gemm_blocking](repeating: kn_gemm_blocking(), count: 4)
                let count = Int(kn_gemm_kernels(isa, &table, 4))
                let kernels = Array(table.prefix(count))
                #expect(count >= 1)
                var used = Set<String>()
                var rng = SplitMix(UInt64(raw) + 1)
                for bk in kernels {
                    let (mr, nr) = (Int(bk.mr), Int(bk.nr))
                    // shapes that are whole tiles of this kernel, so the dispatcher picks it
                    let rows = [mr, 2 * mr, mr * 5, Int(bk.mc) + mr], cols = [nr, 2 * nr, 3 * nr]
                    for trial in 0..<12 {
                        let M = rows[trial % rows.count] - (trial % 3 == 2 ? 1 : 0)  // ragged too
                        let N = cols[trial % cols.count] + (trial % 4 == 3 ? 5 : 0)
                        let K = trial % 5 == 0 ? Int(bk.kc) + rng.int(1...40) : rng.int(1...130)
                        let betas: [Float] = [0, 1, -0.5]
                        used.insert(String(cString: kn_gemm_kernel_name(Int32(M), Int32(N))))
                        GemmCase(transA: Int32(trial & 1), transB: Int32((trial >> 1) & 1), M: M, N: N, K: K,
                                 alpha: trial % 4 == 0 ? 1 : rng.uniform(-2, 2), beta: betas[trial % 3])
                            .check(seed: UInt64(trial))
                    }
                    // one block-crossing problem in every dimension
                    GemmCase(transA: 0, transB: 0, M: Int(bk.mc) * 2 + 1, N: nr * 3 + 5, K: Int(bk.kc) * 2 + 3,
                             alpha: 1, beta: 0.5).check(seed: 99)
                }
                // and fully random shapes, whichever kernel they land on
                for trial in 0..<16 {
                    let c = GemmCase(transA: Int32(trial & 1), transB: Int32((trial >> 1) & 1),
                                     M: rng.int(1...97), N: rng.int(1...97), K: rng.int(1...130),
                                     alpha: rng.uniform(-2, 2), beta: [0, 1, -0.5][trial % 3])
                    used.insert(String(cString: kn_gemm_kernel_name(Int32(c.M), Int32(c.N))))
                    c.check(seed: UInt64(100 + trial))
                }
                #expect(used.count == kernels.count,
                        "\(String(cString: kn_isa_name(isa))): ran \(used.sorted()) of \(kernels.count) micro-kernels")
            }
        }
    }

    /// With beta == 0, C is never read: NaN in C must not leak into the result.
    @Test func betaZeroIgnoresC() {
        var rng = SplitMix(3)
        let (M, N, K) = (37, 53, 29)
        let a = rng.array(M * K), b = rng.array(K * N)
        var c = [Float](repeating: .nan, count: M * N)
        #expect(kn_sgemm(0, 0, Int32(M), Int32(N), Int32(K), 1, a, Int32(K), b, Int32(N), 0, &c, Int32(N)) == KN_OK)
        #expect(c.allSatisfy { $0.isFinite })
    }

    /// Impossible arguments are refused, not run.
    @Test func badArgumentsAreRefused() {
        var c = [Float](repeating: 0, count: 4)
        let a: [Float] = [1, 2, 3, 4]
        #expect(kn_sgemm(0, 0, -1, 2, 2, 1, a, 2, a, 2, 0, &c, 2) == KN_EINVAL)
        #expect(kn_sgemm(0, 0, 2, 2, 2, 1, a, 1, a, 2, 0, &c, 2) == KN_EINVAL) // lda < K
        #expect(kn_sgemm(0, 0, 2, 2, 2, 1, a, 2, a, 2, 0, &c, 1) == KN_EINVAL) // ldc < N
        #expect(kn_sgemm(0, 0, 0, 2, 2, 1, a, 2, a, 2, 0, &c, 2) == KN_OK)     // empty is fine
    }

    /// K == 0 leaves beta * C, as BLAS does.
    @Test func emptyReductionScalesC() {
        var c: [Float] = [1, 2, 3, 4]
        let a: [Float] = [0]
        #expect(kn_sgemm(0, 0, 2, 2, 0, 1, a, 1, a, 2, 0.5, &c, 2) == KN_OK)
        #expect(c == [0.5, 1, 1.5, 2])
    }

    /// A blocking table that breaks the micro-kernel contract is refused; a valid one is
    /// taken (and restored). The table is process-wide, so the test edits the portable row,
    /// which no other test's default kernels use on a machine with SIMD kernels.
    @Test func blockingValidation() {
        kernelStateLock.withLock {
            let isa = KN_ISA_PORTABLE
            var first = kn_gemm_blocking()
            #expect(kn_gemm_kernels(isa, &first, 1) >= 1)
            var b = first
            b.mc = b.mr + 1
            #expect(kn_gemm_set_blocking(isa, b) == KN_EINVAL)   // MC not a multiple of MR
            b = first
            b.nr += 1
            #expect(kn_gemm_set_blocking(isa, b) == KN_EINVAL)   // no such micro-kernel
            b = first
            b.kc = 0
            #expect(kn_gemm_set_blocking(isa, b) == KN_EINVAL)
            b = first
            b.kc += 1
            #expect(kn_gemm_set_blocking(isa, b) == KN_OK)
            var now = kn_gemm_blocking()
            _ = kn_gemm_kernels(isa, &now, 1)
            #expect(now.kc == first.kc + 1)
            #expect(kn_gemm_set_blocking(isa, first) == KN_OK)
        }
    }
}
