import RematKernels
import Testing

/// A planned convolution with helpers that run each pass on Swift arrays.
struct Conv: CustomStringConvertible {
    var cv: kn_conv2d

    init?(N: Int, C: Int, H: Int, W: Int, K: Int, R: Int, S: Int, stride: (Int, Int) = (1, 1),
          pad: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), algo: kn_conv_algo = KN_CONV_AUTO) {
        cv = kn_conv2d()
        cv.algo = algo
        (cv.N, cv.C, cv.H, cv.W) = (Int32(N), Int32(C), Int32(H), Int32(W))
        (cv.K, cv.R, cv.S) = (Int32(K), Int32(R), Int32(S))
        (cv.stride_h, cv.stride_w) = (Int32(stride.0), Int32(stride.1))
        (cv.pad_h, cv.pad_w) = (Int32(pad.0), Int32(pad.1))
        (cv.dil_h, cv.dil_w) = (Int32(dilation.0), Int32(dilation.1))
        guard kn_conv2d_plan(&cv) == KN_OK else { return nil }
    }
    var description: String {
        "N\(cv.N) C\(cv.C) \(cv.H)x\(cv.W) K\(cv.K) \(cv.R)x\(cv.S) s\(cv.stride_h),\(cv.stride_w) p\(cv.pad_h),\(cv.pad_w) d\(cv.dil_h),\(cv.dil_w) algos \(name(cv.algo_forward))/\(name(cv.algo_backward_data))/\(name(cv.algo_backward_weights)) chunks \(cv.col_images)/\(cv.shift_images)"
    }
    private func name(_ a: kn_conv_algo) -> String {
        a == KN_CONV_IMPLICIT ? "implicit" : a == KN_CONV_IMPLICIT_BATCH ? "implicit-batch" : "im2col"
    }
    var xCount: Int { Int(cv.N * cv.C * cv.H * cv.W) }
    var wCount: Int { Int(cv.K * cv.C * cv.R * cv.S) }
    var yCount: Int { Int(cv.N * cv.K * cv.P * cv.Q) }
    var crs: Int { Int(cv.C * cv.R * cv.S) }

    func forward(_ x: [Float], _ w: [Float], _ b: [Float]?, reference: Bool = false) -> [Float] {
        var y = [Float](repeating: .nan, count: yCount)
        var scratch = [Float](repeating: 0, count: max(1, cv.scratch_floats))
        withUnsafePointer(to: cv) { p in
            let bias = b.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: $0.count).initialized($0) }
            defer { bias?.deallocate() }
            if reference { kn_conv2d_forward_ref(p, &y, x, w, bias?.baseAddress) }
            else { kn_conv2d_forward(p, &y, x, w, bias?.baseAddress, &scratch) }
        }
        return y
    }
    /// dx accumulated onto `into` (so the accumulate contract is exercised too).
    func backwardData(_ dy: [Float], _ w: [Float], into: [Float], reference: Bool = false) -> [Float] {
        var dx = into
        var scratch = [Float](repeating: 0, count: max(1, cv.scratch_floats))
        withUnsafePointer(to: cv) { p in
            if reference { kn_conv2d_backward_data_ref(p, &dx, dy, w) }
            else { kn_conv2d_backward_data(p, &dx, dy, w, &scratch) }
        }
        return dx
    }
    func backwardWeights(_ dy: [Float], _ x: [Float], into: [Float], biasInto: [Float],
                         reference: Bool = false) -> ([Float], [Float]) {
        var dw = into, db = biasInto
        var scratch = [Float](repeating: 0, count: max(1, cv.scratch_floats))
        withUnsafePointer(to: cv) { p in
            if reference { kn_conv2d_backward_weights_ref(p, &dw, &db, dy, x) }
            else { kn_conv2d_backward_weights(p, &dw, &db, dy, x, &scratch) }
        }
        return (dw, db)
    }
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
        [KN_CONV_AUTO, KN_CONV_IMPLICIT, KN_CONV_IMPLICIT_BATCH, KN_CONV_IM2COL].filter {
            $0 == KN_CONV_AUTO || $0 == KN_CONV_IM2COL || (c.cv.stride_h == 1 && c.cv.stride_w == 1)
        }.map { algo in
            var v = c
            v.cv.algo = algo
            v.cv.scratch_limit = i % 2 == 0 ? 1 : 0 // every other shape one image per chunk
            precondition(kn_conv2d_plan(&v.cv) == KN_OK)
            return v
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
            let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.cv.K))
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
            let L = Int(conv.cv.K * conv.cv.R * conv.cv.S) + 1
            expectClose(fast, ref, bound: mag.map { 2.1 * gamma(L) * Double($0) }, "backward-data \(conv)")
        }
    }

    @Test func backwardWeightsMatchesReference() {
        for (i, conv) in convShapes().enumerated() {
            var rng = SplitMix(UInt64(200 + i))
            let dy = rng.array(conv.yCount), x = rng.array(conv.xCount)
            let w0 = rng.array(conv.wCount), b0 = rng.array(Int(conv.cv.K))
            let fast = conv.backwardWeights(dy, x, into: w0, biasInto: b0)
            let ref = conv.backwardWeights(dy, x, into: w0, biasInto: b0, reference: true)
            let mag = conv.backwardWeights(dy.map(abs), x.map(abs), into: w0.map(abs), biasInto: b0.map(abs), reference: true)
            let L = Int(conv.cv.N * conv.cv.P * conv.cv.Q) + 1
            expectClose(fast.0, ref.0, bound: mag.0.map { 2.1 * gamma(L) * Double($0) }, "backward-weights \(conv)")
            expectClose(fast.1, ref.1, bound: mag.1.map { 2.1 * gamma(L) * Double($0) }, "backward-bias \(conv)")
        }
    }

    /// Finite differences through the fast kernels: d/dx, d/dw and d/dbias.
    @Test func finiteDifferences() {
        for (i, conv) in convShapes().prefix(20).enumerated() {
            var rng = SplitMix(UInt64(300 + i))
            let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.cv.K))
            let g = rng.array(conv.yCount)
            let zeroX = [Float](repeating: 0, count: conv.xCount), zeroW = [Float](repeating: 0, count: conv.wCount)
            let zeroB = [Float](repeating: 0, count: Int(conv.cv.K))
            checkGradient("conv dx \(conv)", x: x, outputWeights: g, reduction: conv.crs + 1,
                          forward: { conv.forward($0, w, b) }, gradient: { _ in conv.backwardData(g, w, into: zeroX) })
            checkGradient("conv dw \(conv)", x: w, outputWeights: g, reduction: conv.crs + 1,
                          forward: { conv.forward(x, $0, b) },
                          gradient: { _ in conv.backwardWeights(g, x, into: zeroW, biasInto: zeroB).0 })
            checkGradient("conv dbias \(conv)", x: b, outputWeights: g, reduction: conv.crs + 1,
                          forward: { conv.forward(x, w, $0) },
                          gradient: { _ in conv.backwardWeights(g, x, into: zeroW, biasInto: zeroB).1 })
        }
    }

    /// The implicit passes with a team no larger than the chunks: each thread runs its own run
    /// of chunks alone. Ragged last chunks, and backward-weights groups of one and of two
    /// chunks; against the reference, and bitwise against one thread.
    @Test func implicitChunksAcrossTheTeam() {
        let shapes = [Conv(N: 7, C: 6, H: 10, W: 10, K: 8, R: 3, S: 3, pad: (1, 1))!,  // chunks 2,2,2,1
                      Conv(N: 50, C: 2, H: 64, W: 64, K: 8, R: 3, S: 3, pad: (1, 1))!] // 8 chunks, groups of 2
        for (i, var conv) in shapes.enumerated() {
            conv.cv.algo = KN_CONV_IMPLICIT
            #expect(kn_conv2d_plan(&conv.cv) == KN_OK)
            let cv = conv.cv
            #expect(cv.algo_forward == KN_CONV_IMPLICIT && cv.algo_backward_data == KN_CONV_IMPLICIT &&
                    cv.algo_backward_weights == KN_CONV_IMPLICIT, "\(conv)")
            let chunks = (Int(cv.N) + Int(cv.shift_images) - 1) / Int(cv.shift_images)
            #expect(chunks % 4 == 0 && cv.shift_groups == 4 && chunks >= 4 * (i + 1), "\(conv)")
            #expect(Int(cv.shift_slots) == min(chunks, Int(kn_num_cores())), "\(conv)")
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
        var conv = Conv(N: 70, C: 8, H: 8, W: 8, K: 16, R: 3, S: 3, pad: (1, 1))!
        conv.cv.algo = KN_CONV_IMPLICIT_BATCH
        #expect(kn_conv2d_plan(&conv.cv) == KN_OK)
        let cv = conv.cv
        #expect(cv.algo_forward == KN_CONV_IMPLICIT_BATCH && cv.algo_backward_data == KN_CONV_IMPLICIT_BATCH &&
                cv.algo_backward_weights == KN_CONV_IMPLICIT_BATCH, "\(conv)")
        #expect(cv.shift_images == 32 && cv.shift_groups == 3, "\(conv)")
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

    /// The plan's choice on narrow planes (kn_conv2d_choose_implicit): batch innermost for
    /// forward and backward-data, and for backward-weights from 8x8 up; im2col below 8 rows.
    @Test func narrowPlanesTakeTheBatchInnermostLayout() {
        let at8 = Conv(N: 64, C: 256, H: 8, W: 8, K: 256, R: 3, S: 3, pad: (1, 1))!.cv
        #expect(at8.algo_forward == KN_CONV_IMPLICIT_BATCH && at8.algo_backward_data == KN_CONV_IMPLICIT_BATCH &&
                at8.algo_backward_weights == KN_CONV_IMPLICIT_BATCH)
        let at2 = Conv(N: 64, C: 512, H: 2, W: 2, K: 512, R: 3, S: 3, pad: (1, 1))!.cv
        #expect(at2.algo_forward == KN_CONV_IMPLICIT_BATCH && at2.algo_backward_data == KN_CONV_IMPLICIT_BATCH &&
                at2.algo_backward_weights == KN_CONV_IM2COL)
        let wide = Conv(N: 64, C: 64, H: 16, W: 16, K: 128, R: 3, S: 3, pad: (1, 1))!.cv
        #expect(wide.algo_forward == KN_CONV_IMPLICIT && wide.algo_backward_weights == KN_CONV_IMPLICIT)
        let fewRows = Conv(N: 8, C: 3, H: 8, W: 8, K: 4, R: 3, S: 3, pad: (1, 1))!.cv
        #expect(fewRows.algo_forward == KN_CONV_IM2COL && fewRows.algo_backward_data == KN_CONV_IM2COL)
    }

    /// im2col backward-data with chunks of several images across the team: a ragged last
    /// chunk; against the reference, and bitwise against one thread.
    @Test func im2colBackwardDataChunksAcrossTheTeam() {
        // chunks of 32 and 24 images, each long enough that the two threads overlap in time
        var conv = Conv(N: 56, C: 64, H: 4, W: 4, K: 64, R: 3, S: 3, pad: (1, 1))!
        conv.cv.algo = KN_CONV_IM2COL
        #expect(kn_conv2d_plan(&conv.cv) == KN_OK)
        let cv = conv.cv
        #expect(cv.col_images == 32 && Int(cv.col_slots) == min(2, Int(kn_num_cores())), "\(conv)")
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

    /// Shapes that cannot make an output, or make no sense, are refused by the plan.
    @Test func impossibleShapesAreRefused() {
        var cv = kn_conv2d()
        (cv.N, cv.C, cv.H, cv.W, cv.K, cv.R, cv.S) = (1, 1, 3, 3, 1, 5, 5)
        (cv.stride_h, cv.stride_w, cv.dil_h, cv.dil_w) = (1, 1, 1, 1)
        #expect(kn_conv2d_plan(&cv) == KN_ESHAPE)          // 5x5 kernel on a 3x3 image
        cv.pad_h = 1; cv.pad_w = 1
        #expect(kn_conv2d_plan(&cv) == KN_OK)               // fits once padded
        cv.stride_h = 0
        #expect(kn_conv2d_plan(&cv) == KN_EINVAL)
        cv.stride_h = 1; cv.C = 0
        #expect(kn_conv2d_plan(&cv) == KN_EINVAL)
        cv.C = 1; cv.dil_w = 3
        #expect(kn_conv2d_plan(&cv) == KN_ESHAPE)           // dilated kernel spans 13 > 5
        cv.dil_w = 1; cv.N = Int32.max; cv.H = 1000; cv.W = 1000
        #expect(kn_conv2d_plan(&cv) == KN_EINVAL)           // tensor beyond int range
        cv.N = 1; cv.H = 3; cv.W = 3; cv.algo = kn_conv_algo(rawValue: 9)
        #expect(kn_conv2d_plan(&cv) == KN_EINVAL)           // no such algorithm
        cv.algo = KN_CONV_IMPLICIT; cv.stride_w = 2
        #expect(kn_conv2d_plan(&cv) == KN_EINVAL)           // implicit needs stride 1
        cv.algo = KN_CONV_IMPLICIT_BATCH
        #expect(kn_conv2d_plan(&cv) == KN_EINVAL)           // so does its batch-innermost layout
    }
}
