import RematKernels
import Testing

/// A planned convolution (`kn_conv2d`, destroyed with the last copy) with helpers that run
/// each pass on Swift arrays.
struct Conv: CustomStringConvertible {
    let desc: kn_conv2d_desc
    /// The tuning row it was planned with (nil: the table's).
    let tuning: kn_tuning?
    private let handle: Handle
    let P: Int32, Q: Int32

    private final class Handle {
        let plan: OpaquePointer
        init(_ plan: OpaquePointer) { self.plan = plan }
        deinit { kn_conv2d_destroy(plan) }
    }

    init?(desc: kn_conv2d_desc, tuning: kn_tuning? = nil) {
        var d = desc, plan: OpaquePointer?, row = tuning ?? kn_tuning()
        let status = withUnsafePointer(to: &row) { r in
            d.tuning = tuning == nil ? nil : r
            return kn_conv2d_create(&plan, &d)
        }
        guard status == KN_OK, let plan else { return nil }
        d.tuning = nil
        self.desc = d
        self.tuning = tuning
        handle = Handle(plan)
        var p: Int32 = 0, q: Int32 = 0
        kn_conv2d_output(plan, &p, &q)
        (P, Q) = (p, q)
    }

    init?(N: Int, C: Int, H: Int, W: Int, K: Int, R: Int, S: Int, stride: (Int, Int) = (1, 1),
          pad: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), algo: kn_conv_algo = KN_CONV_AUTO,
          tuning: kn_tuning? = nil) {
        var d = kn_conv2d_desc()
        d.algo = algo
        (d.N, d.C, d.H, d.W) = (Int32(N), Int32(C), Int32(H), Int32(W))
        (d.K, d.R, d.S) = (Int32(K), Int32(R), Int32(S))
        (d.stride_h, d.stride_w) = (Int32(stride.0), Int32(stride.1))
        (d.pad_h, d.pad_w) = (Int32(pad.0), Int32(pad.1))
        (d.dil_h, d.dil_w) = (Int32(dilation.0), Int32(dilation.1))
        self.init(desc: d, tuning: tuning)
    }

    /// The same convolution planned with another algorithm or scratch limit (and the same
    /// tuning row).
    func with(algo: kn_conv_algo, scratchLimit: Int = 0) -> Conv? {
        var d = desc
        d.algo = algo
        d.scratch_limit = scratchLimit
        return Conv(desc: d, tuning: tuning)
    }

    var plan: OpaquePointer { handle.plan }
    var N: Int32 { desc.N }
    var C: Int32 { desc.C }
    var H: Int32 { desc.H }
    var W: Int32 { desc.W }
    var K: Int32 { desc.K }
    var R: Int32 { desc.R }
    var S: Int32 { desc.S }
    func algo(_ pass: kn_conv_pass) -> kn_conv_algo { kn_conv2d_algo(plan, pass) }
    var algos: [kn_conv_algo] { [KN_PASS_FORWARD, KN_PASS_BACKWARD_DATA, KN_PASS_BACKWARD_WEIGHTS].map(algo) }
    var chunks: kn_conv2d_chunks { kn_conv2d_chunking(plan) }
    var scratchFloats: Int { kn_conv2d_scratch_floats(plan) }

    var description: String {
        let d = desc
        return "N\(d.N) C\(d.C) \(d.H)x\(d.W) K\(d.K) \(d.R)x\(d.S) s\(d.stride_h),\(d.stride_w) p\(d.pad_h),\(d.pad_w) d\(d.dil_h),\(d.dil_w) algos \(algos.map { String(cString: kn_conv_algo_name($0)) }.joined(separator: "/")) chunks \(chunks.col_images)/\(chunks.implicit_images)"
    }
    var xCount: Int { Int(N * C * H * W) }
    var wCount: Int { Int(K * C * R * S) }
    var yCount: Int { Int(N * K * P * Q) }
    var crs: Int { Int(C * R * S) }

    func forward(_ x: [Float], _ w: [Float], _ b: [Float]?, reference: Bool = false) -> [Float] {
        var y = [Float](repeating: .nan, count: yCount)
        var scratch = [Float](repeating: 0, count: max(1, scratchFloats))
        let bias = b.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: $0.count).initialized($0) }
        defer { bias?.deallocate() }
        if reference { kn_conv2d_forward_ref(plan, &y, x, w, bias?.baseAddress) }
        else { kn_conv2d_forward(plan, &y, x, w, bias?.baseAddress, &scratch) }
        return y
    }
    /// dx accumulated onto `into` (so the accumulate contract is exercised too).
    func backwardData(_ dy: [Float], _ w: [Float], into: [Float], reference: Bool = false) -> [Float] {
        var dx = into
        var scratch = [Float](repeating: 0, count: max(1, scratchFloats))
        if reference { kn_conv2d_backward_data_ref(plan, &dx, dy, w) }
        else { kn_conv2d_backward_data(plan, &dx, dy, w, &scratch) }
        return dx
    }
    func backwardWeights(_ dy: [Float], _ x: [Float], into: [Float], biasInto: [Float],
                         reference: Bool = false) -> ([Float], [Float]) {
        var dw = into, db = biasInto
        var scratch = [Float](repeating: 0, count: max(1, scratchFloats))
        if reference { kn_conv2d_backward_weights_ref(plan, &dw, &db, dy, x) }
        else { kn_conv2d_backward_weights(plan, &dw, &db, dy, x, &scratch) }
        return (dw, db)
    }
}

/// Finite differences of the forward pass (the fast one, or the direct reference) against
/// the fast backward passes: d/dx, d/dw and d/dbias.
func checkConvGradients(_ conv: Conv, seed: UInt64, referenceForward: Bool = false,
                        sourceLocation: SourceLocation = #_sourceLocation) {
    var rng = SplitMix(seed)
    let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.K))
    let g = rng.array(conv.yCount)
    let zeroX = [Float](repeating: 0, count: conv.xCount), zeroW = [Float](repeating: 0, count: conv.wCount)
    let zeroB = [Float](repeating: 0, count: Int(conv.K))
    let ref = referenceForward
    checkGradient("conv dx \(conv)", x: x, outputWeights: g, reduction: conv.crs + 1,
                  forward: { conv.forward($0, w, b, reference: ref) }, gradient: { _ in conv.backwardData(g, w, into: zeroX) },
                  sourceLocation: sourceLocation)
    checkGradient("conv dw \(conv)", x: w, outputWeights: g, reduction: conv.crs + 1,
                  forward: { conv.forward(x, $0, b, reference: ref) },
                  gradient: { _ in conv.backwardWeights(g, x, into: zeroW, biasInto: zeroB).0 }, sourceLocation: sourceLocation)
    checkGradient("conv dbias \(conv)", x: b, outputWeights: g, reduction: conv.crs + 1,
                  forward: { conv.forward(x, w, $0, reference: ref) },
                  gradient: { _ in conv.backwardWeights(g, x, into: zeroW, biasInto: zeroB).1 }, sourceLocation: sourceLocation)
}

extension UnsafeMutableBufferPointer where Element == Float {
    func initialized(_ a: [Float]) -> Self { _ = self.initialize(from: a); return self }
}

/// Shapes that reach every path of the algorithms and the plan's per-pass mix of them:
/// implicit GEMM on the padded grid and batch innermost (with and without the transposed
/// backward-data), explicit im2col with
/// chunked and one-image GEMMs, one image per chunk (a tiny scratch limit), the 1x1 path,
/// stride, padding, dilation, odd sizes, batch 1, a kernel as large as the padded input.
func convShapes() -> [Conv] {
    baseConvShapes().enumerated().flatMap { (i, c) -> [Conv] in
        [KN_CONV_AUTO, KN_CONV_PADDED_GRID, KN_CONV_BATCH_INNER, KN_CONV_IM2COL, KN_CONV_REFERENCE].filter {
            $0 != KN_CONV_PADDED_GRID && $0 != KN_CONV_BATCH_INNER || (c.desc.stride_h == 1 && c.desc.stride_w == 1)
        }.map { algo in
            c.with(algo: algo, scratchLimit: i % 2 == 0 ? 1 : 0)! // every other shape one image per chunk
        }
    }
}

func baseConvShapes() -> [Conv] {
    var shapes: [Conv] = [
        Conv(N: 1, C: 3, H: 7, W: 5, K: 4, R: 3, S: 3, pad: (1, 1))!,
        Conv(N: 2, C: 5, H: 17, W: 16, K: 6, R: 1, S: 1)!,                       // 1x1, PQ >= 256
        Conv(N: 3, C: 4, H: 5, W: 5, K: 7, R: 1, S: 1)!,                         // 1x1, chunked
        Conv(N: 2, C: 3, H: 9, W: 11, K: 5, R: 1, S: 1, stride: (2, 2))!,        // projection shortcut
        Conv(N: 2, C: 2, H: 16, W: 17, K: 3, R: 3, S: 3, stride: (1, 1), pad: (1, 1))!, // PQ >= 256
        Conv(N: 3, C: 2, H: 9, W: 8, K: 3, R: 3, S: 2, stride: (2, 1), pad: (1, 0), dilation: (1, 2))!,
        Conv(N: 2, C: 1, H: 6, W: 6, K: 2, R: 5, S: 5, pad: (2, 2))!,
        Conv(N: 1, C: 2, H: 3, W: 3, K: 2, R: 5, S: 5, pad: (1, 1))!,            // kernel = padded input
        Conv(N: 2, C: 9, H: 12, W: 12, K: 10, R: 3, S: 3, pad: (1, 1))!,         // auto: implicit fwd and bwd
    ]
    var rng = SplitMix(2024)
    while shapes.count < 28 {
        if let c = Conv(N: rng.int(1...3), C: rng.int(1...5), H: rng.int(1...12), W: rng.int(1...12),
                        K: rng.int(1...9), R: rng.int(1...3), S: rng.int(1...3),
                        stride: (rng.int(1...2), rng.int(1...2)), pad: (rng.int(0...2), rng.int(0...2)),
                        dilation: (rng.int(1...2), rng.int(1...2))) { shapes.append(c) }
    }
    return shapes
}

@Suite("Conv2d against the direct reference")
struct ConvTests {
    @Test func forwardMatchesReference() {
        for (i, conv) in convShapes().enumerated() {
            var rng = SplitMix(UInt64(i))
            let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.K))
            let fast = conv.forward(x, w, b), ref = conv.forward(x, w, b, reference: true)
            // both sums are within gamma(CRS + 1) of exact; magnitudes from |x|, |w|, |b|
            let mag = conv.forward(x.map(abs), w.map(abs), b.map(abs), reference: true)
            expectClose(fast, ref, bound: mag.map { 2.1 * gamma(conv.crs + 1) * Double($0) }, "forward \(conv)")
        }
    }

    @Test func backwardDataMatchesReference() {
        for (i, conv) in convShapes().enumerated() {
            var rng = SplitMix(UInt64(100 + i))
            let dy = rng.array(conv.yCount), w = rng.array(conv.wCount), base = rng.array(conv.xCount)
            let fast = conv.backwardData(dy, w, into: base), ref = conv.backwardData(dy, w, into: base, reference: true)
            let mag = conv.backwardData(dy.map(abs), w.map(abs), into: base.map(abs), reference: true)
            let L = Int(conv.K * conv.R * conv.S) + 1
            expectClose(fast, ref, bound: mag.map { 2.1 * gamma(L) * Double($0) }, "backward-data \(conv)")
        }
    }

    @Test func backwardWeightsMatchesReference() {
        for (i, conv) in convShapes().enumerated() {
            var rng = SplitMix(UInt64(200 + i))
            let dy = rng.array(conv.yCount), x = rng.array(conv.xCount)
            let w0 = rng.array(conv.wCount), b0 = rng.array(Int(conv.K))
            let fast = conv.backwardWeights(dy, x, into: w0, biasInto: b0)
            let ref = conv.backwardWeights(dy, x, into: w0, biasInto: b0, reference: true)
            let mag = conv.backwardWeights(dy.map(abs), x.map(abs), into: w0.map(abs), biasInto: b0.map(abs), reference: true)
            let L = Int(conv.N * conv.P * conv.Q) + 1
            expectClose(fast.0, ref.0, bound: mag.0.map { 2.1 * gamma(L) * Double($0) }, "backward-weights \(conv)")
            expectClose(fast.1, ref.1, bound: mag.1.map { 2.1 * gamma(L) * Double($0) }, "backward-bias \(conv)")
        }
    }

    /// Finite differences through the fast kernels: d/dx, d/dw and d/dbias.
    @Test func finiteDifferences() {
        for (i, conv) in convShapes().prefix(20).enumerated() {
            checkConvGradients(conv, seed: UInt64(300 + i))
        }
    }

    /// The implicit passes with a team no larger than the chunks: each thread runs its own run
    /// of chunks alone. Ragged last chunks, and backward-weights groups of one and of two
    /// chunks; against the reference, and bitwise against one thread.
    @Test func implicitChunksAcrossTheTeam() {
        let shapes = [Conv(N: 7, C: 6, H: 10, W: 10, K: 8, R: 3, S: 3, pad: (1, 1))!,  // chunks 2,2,2,1
                      Conv(N: 50, C: 2, H: 64, W: 64, K: 8, R: 3, S: 3, pad: (1, 1))!] // 8 chunks, groups of 2
        for (i, planned) in shapes.enumerated() {
            let conv = planned.with(algo: KN_CONV_PADDED_GRID)!, cv = conv, c = conv.chunks
            #expect(conv.algos == Array(repeating: KN_CONV_PADDED_GRID, count: 3), "\(conv)")
            let chunks = (Int(cv.N) + Int(c.implicit_images) - 1) / Int(c.implicit_images)
            #expect(chunks % 4 == 0 && c.implicit_groups == 4 && chunks >= 4 * (i + 1), "\(conv)")
            #expect(Int(c.implicit_slots) == min(chunks, Int(kn_num_cores())), "\(conv)")
            var rng = SplitMix(UInt64(700 + i))
            let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(cv.K))
            let dy = rng.array(conv.yCount), dx0 = rng.array(conv.xCount)
            let w0 = [Float](repeating: 0, count: conv.wCount), b0 = [Float](repeating: 0, count: Int(cv.K))
            let passes = { () -> ([Float], [Float], [Float], [Float]) in
                let (dw, db) = conv.backwardWeights(dy, x, into: w0, biasInto: b0)
                return (conv.forward(x, w, b), conv.backwardData(dy, w, into: dx0), dw, db)
            }
            let (one, team) = kernelStateLock.withLock { (withThreads(1, passes), withThreads(2, passes)) }
            expectBitwise(one.0 + one.1 + one.2 + one.3, team.0 + team.1 + team.2 + team.3, "team of 2 vs 1, \(conv)")
            let yRef = conv.forward(x, w, b, reference: true)
            let yMag = conv.forward(x.map(abs), w.map(abs), b.map(abs), reference: true)
            expectClose(team.0, yRef, bound: yMag.map { 2.1 * gamma(conv.crs + 1) * Double($0) }, "forward \(conv)")
            let dxRef = conv.backwardData(dy, w, into: dx0, reference: true)
            let dxMag = conv.backwardData(dy.map(abs), w.map(abs), into: dx0.map(abs), reference: true)
            let Ld = Int(cv.K * cv.R * cv.S) + 1
            expectClose(team.1, dxRef, bound: dxMag.map { 2.1 * gamma(Ld) * Double($0) }, "backward-data \(conv)")
            let (dwRef, dbRef) = conv.backwardWeights(dy, x, into: w0, biasInto: b0, reference: true)
            let (dwMag, dbMag) = conv.backwardWeights(dy.map(abs), x.map(abs), into: w0, biasInto: b0, reference: true)
            let Lw = Int(cv.N * cv.P * cv.Q) + 1
            expectClose(team.2, dwRef, bound: dwMag.map { 2.1 * gamma(Lw) * Double($0) }, "backward-weights \(conv)")
            expectClose(team.3, dbRef, bound: dbMag.map { 2.1 * gamma(Lw) * Double($0) }, "backward-bias \(conv)")
        }
    }

    /// The batch-innermost layout with a team no larger than its chunks: chunks of 32 images
    /// (rows of 8 x 32 columns) and a ragged last one, backward-weights in three groups;
    /// against the reference, and bitwise against one thread.
    @Test func batchInnermostChunksAcrossTheTeam() {
        let conv = Conv(N: 70, C: 8, H: 8, W: 8, K: 16, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_BATCH_INNER)!, cv = conv
        #expect(conv.algos == Array(repeating: KN_CONV_BATCH_INNER, count: 3), "\(conv)")
        #expect(conv.chunks.implicit_images == 32 && conv.chunks.implicit_groups == 3, "\(conv)")
        var rng = SplitMix(750)
        let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(cv.K))
        let dy = rng.array(conv.yCount), dx0 = rng.array(conv.xCount)
        let w0 = rng.array(conv.wCount), b0 = rng.array(Int(cv.K))
        let passes = { () -> [Float] in
            let (dw, db) = conv.backwardWeights(dy, x, into: w0, biasInto: b0)
            return conv.forward(x, w, b) + conv.backwardData(dy, w, into: dx0) + dw + db
        }
        let (one, team) = kernelStateLock.withLock { (withThreads(1, passes), withThreads(2, passes)) }
        expectBitwise(one, team, "team of 2 vs 1, \(conv)")
        let y = Array(team[0..<conv.yCount])
        let yMag = conv.forward(x.map(abs), w.map(abs), b.map(abs), reference: true)
        expectClose(y, conv.forward(x, w, b, reference: true), bound: yMag.map { 2.1 * gamma(conv.crs + 1) * Double($0) },
                    "forward \(conv)")
        let dx = Array(team[conv.yCount..<(conv.yCount + conv.xCount)])
        let dxMag = conv.backwardData(dy.map(abs), w.map(abs), into: dx0.map(abs), reference: true)
        expectClose(dx, conv.backwardData(dy, w, into: dx0, reference: true),
                    bound: dxMag.map { 2.1 * gamma(Int(cv.K * cv.R * cv.S) + 1) * Double($0) }, "backward-data \(conv)")
        let dw = Array(team[(conv.yCount + conv.xCount)..<(conv.yCount + conv.xCount + conv.wCount)])
        let (dwRef, _) = conv.backwardWeights(dy, x, into: w0, biasInto: b0, reference: true)
        let (dwMag, _) = conv.backwardWeights(dy.map(abs), x.map(abs), into: w0.map(abs), biasInto: b0.map(abs), reference: true)
        expectClose(dw, dwRef, bound: dwMag.map { 2.1 * gamma(Int(cv.N * cv.P * cv.Q) + 1) * Double($0) },
                    "backward-weights \(conv)")
    }

    /// The plan's choice from its ordered list on narrow planes: batch innermost for forward
    /// and backward-data, and for backward-weights from 8x8 up; im2col below 8 rows; the padded
    /// grid on wider planes (channels too few for Winograd throughout). The explanation names
    /// each algorithm that declined, and why.
    @Test func narrowPlanesTakeTheBatchInnermostLayout() {
        let at8 = Conv(N: 64, C: 32, H: 8, W: 8, K: 32, R: 3, S: 3, pad: (1, 1))!
        #expect(at8.algos == [KN_CONV_BATCH_INNER, KN_CONV_BATCH_INNER, KN_CONV_BATCH_INNER])
        let at2 = Conv(N: 64, C: 32, H: 2, W: 2, K: 32, R: 3, S: 3, pad: (1, 1))!
        #expect(at2.algos == [KN_CONV_BATCH_INNER, KN_CONV_BATCH_INNER, KN_CONV_IM2COL])
        let wide = Conv(N: 64, C: 16, H: 16, W: 16, K: 32, R: 3, S: 3, pad: (1, 1))!
        #expect(wide.algo(KN_PASS_FORWARD) == KN_CONV_PADDED_GRID && wide.algo(KN_PASS_BACKWARD_WEIGHTS) == KN_CONV_PADDED_GRID)
        let fewRows = Conv(N: 8, C: 3, H: 8, W: 8, K: 3, R: 3, S: 3, pad: (1, 1))!
        #expect(fewRows.algo(KN_PASS_FORWARD) == KN_CONV_IM2COL && fewRows.algo(KN_PASS_BACKWARD_DATA) == KN_CONV_IM2COL)
        // lenet5's 1->6 layer: six output channels are rows enough for the padded grid
        // forward and backward-weights, one input channel too few for its backward-data
        let lenet = Conv(N: 64, C: 1, H: 28, W: 28, K: 6, R: 5, S: 5, pad: (2, 2))!
        #expect(lenet.algos == [KN_CONV_PADDED_GRID, KN_CONV_IM2COL, KN_CONV_PADDED_GRID], "\(lenet)")
        let lines = String(cString: kn_conv2d_explain(at2.plan)).split(separator: "\n").map(String.init)
        let winograd = "winograd: 32 -> 32 channels, under 128 on narrow planes"
        #expect(lines == ["forward: batch-inner (declined: \(winograd))", "backward-data: batch-inner (declined: \(winograd))",
                          "backward-weights: im2col (declined: \(winograd); batch-inner: backward-weights on planes under 8 wide; padded-grid: narrow planes are batch-inner's)"])
        let strided = Conv(N: 8, C: 16, H: 8, W: 8, K: 16, R: 3, S: 3, stride: (2, 2), pad: (1, 1))!
        #expect(String(cString: kn_conv2d_explain(strided.plan)).hasPrefix("forward: im2col (declined: winograd: needs a 3x3 kernel, stride 1, no dilation, padding at most 2; batch-inner: stride 2x2, needs 1; padded-grid: stride 2x2, needs 1)"))
    }

    /// im2col backward-data with chunks of several images across the team: a ragged last
    /// chunk; against the reference, and bitwise against one thread.
    @Test func im2colBackwardDataChunksAcrossTheTeam() {
        // chunks of 32 and 24 images, each long enough that the two threads overlap in time
        let conv = Conv(N: 56, C: 64, H: 4, W: 4, K: 64, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_IM2COL)!, cv = conv
        #expect(conv.chunks.col_images == 32 && Int(conv.chunks.col_slots) == min(2, Int(kn_num_cores())), "\(conv)")
        var rng = SplitMix(800)
        let dy = rng.array(conv.yCount), w = rng.array(conv.wCount), dx0 = rng.array(conv.xCount)
        let (one, team) = kernelStateLock.withLock {
            (withThreads(1) { conv.backwardData(dy, w, into: dx0) }, withThreads(2) { conv.backwardData(dy, w, into: dx0) })
        }
        expectBitwise(one, team, "team of 2 vs 1, \(conv)")
        let ref = conv.backwardData(dy, w, into: dx0, reference: true)
        let mag = conv.backwardData(dy.map(abs), w.map(abs), into: dx0.map(abs), reference: true)
        let L = Int(cv.K * cv.R * cv.S) + 1
        expectClose(team, ref, bound: mag.map { 2.1 * gamma(L) * Double($0) }, "backward-data \(conv)")
    }

    /// The tuning table's row steers the plan (a narrower "narrow plane" sends an 8x8 layer from
    /// batch innermost to the padded grid), refuses values out of range, and a plan keeps the
    /// row it was made with; backward-weights' transpose tile changes no bit. The table is
    /// process-wide: the test edits the portable row on a thread that selected the portable
    /// kernels, so the models other suites train meanwhile (on the default ISA) keep their plans.
    @Test func tuningTableSteersThePlan() {
        kernelStateLock.withLock {
            let main = kn_isa_active()
            #expect(kn_isa_select(KN_ISA_PORTABLE) == KN_OK)
            defer { _ = kn_isa_select(main) }
            var t = kn_tuning()
            #expect(kn_tuning_get(KN_ISA_PORTABLE, &t) == KN_OK)
            let saved = t
            defer { var s = saved; _ = kn_tuning_set(KN_ISA_PORTABLE, &s) }
            let shape = { Conv(N: 16, C: 32, H: 8, W: 8, K: 32, R: 3, S: 3, pad: (1, 1))! }
            let before = shape()
            #expect(before.algos == Array(repeating: KN_CONV_BATCH_INNER, count: 3))
            t.narrow_plane = 8
            #expect(kn_tuning_set(KN_ISA_PORTABLE, &t) == KN_OK)
            let after = shape()
            #expect(after.algos == Array(repeating: KN_CONV_PADDED_GRID, count: 3), "\(after)")
            #expect(before.algos == Array(repeating: KN_CONV_BATCH_INNER, count: 3)) // planned before: unchanged
            var bad = t
            bad.transpose_tile = 33
            #expect(kn_tuning_set(KN_ISA_PORTABLE, &bad) == KN_EINVAL)
            bad.transpose_tile = 16; bad.dw_groups = 0
            #expect(kn_tuning_set(KN_ISA_PORTABLE, &bad) == KN_EINVAL)
            var rng = SplitMix(900)
            let grid = Conv(N: 8, C: 16, H: 16, W: 16, K: 24, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_PADDED_GRID)!
            let dy = rng.array(grid.yCount), x = rng.array(grid.xCount)
            let zeroW = [Float](repeating: 0, count: grid.wCount), zeroB = [Float](repeating: 0, count: Int(grid.K))
            let dw16 = grid.backwardWeights(dy, x, into: zeroW, biasInto: zeroB).0
            t.transpose_tile = 5
            #expect(kn_tuning_set(KN_ISA_PORTABLE, &t) == KN_OK)
            let dw5 = grid.with(algo: KN_CONV_PADDED_GRID)!.backwardWeights(dy, x, into: zeroW, biasInto: zeroB).0
            expectBitwise(dw16, dw5, "transpose tile 16 vs 5")
        }
    }

    /// Shapes that cannot make an output, or make no sense, are refused by the plan.
    @Test func impossibleShapesAreRefused() {
        var d = kn_conv2d_desc()
        (d.N, d.C, d.H, d.W, d.K, d.R, d.S) = (1, 1, 3, 3, 1, 5, 5)
        (d.stride_h, d.stride_w, d.dil_h, d.dil_w) = (1, 1, 1, 1)
        func status(_ d: kn_conv2d_desc) -> kn_status {
            var d = d, plan: OpaquePointer?
            let s = kn_conv2d_create(&plan, &d)
            #expect((s == KN_OK) == (plan != nil))
            if let plan { kn_conv2d_destroy(plan) }
            return s
        }
        #expect(status(d) == KN_ESHAPE)          // 5x5 kernel on a 3x3 image
        d.pad_h = 1; d.pad_w = 1
        #expect(status(d) == KN_OK)               // fits once padded
        d.stride_h = 0
        #expect(status(d) == KN_EINVAL)
        d.stride_h = 1; d.C = 0
        #expect(status(d) == KN_EINVAL)
        d.C = 1; d.dil_w = 3
        #expect(status(d) == KN_ESHAPE)           // dilated kernel spans 13 > 5
        d.dil_w = 1; d.N = Int32.max; d.H = 1000; d.W = 1000
        #expect(status(d) == KN_EINVAL)           // tensor beyond int range
        d.N = 1; d.H = 3; d.W = 3; d.algo = kn_conv_algo(rawValue: 9)
        #expect(status(d) == KN_EINVAL)           // no such algorithm
        d.algo = KN_CONV_PADDED_GRID; d.stride_w = 2
        #expect(status(d) == KN_EINVAL)           // the padded grid needs stride 1
        d.algo = KN_CONV_BATCH_INNER
        #expect(status(d) == KN_EINVAL)           // so does batch innermost
        d.algo = KN_CONV_REFERENCE
        #expect(status(d) == KN_OK)               // the reference runs any shape
    }
}
