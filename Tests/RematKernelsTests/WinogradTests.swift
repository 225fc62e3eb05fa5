import RematKernels
import Testing

/// Winograd F(2x2, 3x3) against the direct reference. Its error bound differs from a direct
/// sum's: each output is a sum over its tile's whole 4x4 input window (the transforms' terms
/// cancel only in exact arithmetic), each weight and window pixel counted with a weight up to
/// `amplification` (the largest coefficient of the transforms' absolute expansion, squared for
/// two dimensions: 4), through the GEMM's C roundings and the transforms' (15 allowed). The
/// bounds below are that, from |x|, |w| and |dy|, twice (both sides' errors) with slack.
enum Winograd {
    static let outputTile = 2, inputTile = 4
    static let bt: [[Double]] = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    static let g: [[Double]] = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
    static let at: [[Double]] = [[1, 1, 1, 0], [0, 1, -1, -1]]
    /// max over output i, tap r, input k of sum over xi of |A^T[i][xi]| |G[xi][r]| |B^T[xi][k]|,
    /// squared.
    static let amplification: Double = {
        var c = 0.0
        for i in 0..<outputTile { for r in 0..<3 { for k in 0..<inputTile {
            c = max(c, (0..<inputTile).reduce(0.0) { $0 + abs(at[i][$1] * g[$1][r] * bt[$1][k]) })
        } } }
        return c * c
    }()
    static let roundings = 15
}

@Suite("Winograd convolution against the direct reference")
struct WinogradTests {
    /// The active ISA's row as measured on the reference machine (96 tiles a chunk), whatever
    /// this machine's caches: the shapes below chunk as their comments say.
    static var referenceRow: kn_tuning {
        var row = kn_tuning()
        _ = kn_tuning_for_caches(kn_isa_active(), kn_reference_caches(), &row, nil, 0)
        return row
    }

    /// Ragged planes (odd outputs), every padding it runs (0 to 2), a single row,
    /// one image per chunk (a tiny scratch limit), several chunks of several images, and an
    /// image in groups of tile rows; planned with the reference row.
    static func shapes() -> [Conv] {
        let row = referenceRow
        func wino(_ N: Int, _ C: Int, _ H: Int, _ W: Int, _ K: Int, pad: (Int, Int)) -> Conv? {
            Conv(N: N, C: C, H: H, W: W, K: K, R: 3, S: 3, pad: pad, algo: KN_CONV_WINOGRAD, tuning: row)
        }
        var shapes: [Conv] = [
            wino(2, 3, 7, 9, 4, pad: (1, 1))!,
            wino(3, 5, 6, 5, 2, pad: (0, 2))!,
            wino(1, 2, 3, 3, 3, pad: (0, 0))!, // one output
            wino(2, 4, 1, 8, 5, pad: (1, 1))!, // one row
            wino(5, 6, 33, 32, 7, pad: (1, 1))!, // tile rows 6+6+5
            wino(3, 4, 23, 21, 5, pad: (1, 1))!, // tile rows 9 + 3
            wino(70, 3, 4, 4, 3, pad: (1, 1))!, // chunks of 20, 20, 20, 10
        ]
        var rng = SplitMix(77)
        while shapes.count < 15 {
            let pad = (rng.int(0...2), rng.int(0...2))
            if let c = wino(rng.int(1...3), rng.int(1...9), rng.int(1...13), rng.int(1...13), rng.int(1...9), pad: pad) {
                shapes.append(shapes.count % 2 == 0 ? c : c.with(algo: KN_CONV_WINOGRAD, scratchLimit: 1)!)
            }
        }
        return shapes
    }

    /// Per output of a 3x3 stride-1 conv: sum over input channels c of (sum of |w[k][c]|) x
    /// (sum of |x[c]| over the 5x5 window that holds each of the output's possible 4x4 tile
    /// windows), i.e. a direct 5x5 conv of |x| (padding pad + 1) with those weights.
    func windowMagnitude(N: Int32, C: Int32, H: Int32, W: Int32, K: Int32, pad: (Int32, Int32),
                         x: [Float], wAbsKC: (Int, Int) -> Float) -> [Float] {
        let side = Winograd.inputTile + Winograd.outputTile - 1, reach = Winograd.outputTile - 1
        let box = Conv(N: Int(N), C: Int(C), H: Int(H), W: Int(W), K: Int(K), R: side, S: side,
                       pad: (Int(pad.0) + reach, Int(pad.1) + reach), algo: KN_CONV_REFERENCE)!
        var wBox = [Float](repeating: 0, count: Int(K * C) * side * side)
        for k in 0..<Int(K) { for c in 0..<Int(C) { for t in 0..<side * side { wBox[(k * Int(C) + c) * side * side + t] = wAbsKC(k, c) } } }
        return box.forward(x.map(abs), wBox, nil, reference: true)
    }

    func kernelAbs(_ w: [Float], _ k: Int, _ c: Int, _ C: Int) -> Float {
        (0..<9).reduce(0) { $0 + abs(w[(k * C + c) * 9 + $1]) }
    }

    /// Images a chunk: enough for 96 tiles, fewer so that the chunks come in fours with a last
    /// one at least half full; one image in groups of tile rows past 96 tiles.
    @Test func chunksAreFixedByTheShape() {
        let shapes = Self.shapes()
        #expect(shapes[4].chunks.wino_images == 1 && shapes[5].chunks.wino_images == 1)
        #expect(shapes[6].chunks.wino_images == 20 && shapes[6].chunks.wino_groups == 4, "\(shapes[6])")
        let vgg8x8 = Conv(N: 64, C: 128, H: 8, W: 8, K: 256, R: 3, S: 3, pad: (1, 1), tuning: Self.referenceRow)!
        #expect(vgg8x8.chunks.wino_images == 4, "16 chunks of 4 rather than 11 of 6")
    }

    @Test func forwardMatchesReference() {
        for (i, conv) in Self.shapes().enumerated() { checkForward(conv, seed: UInt64(400 + i)) }
    }

    @Test func backwardDataMatchesReference() {
        for (i, conv) in Self.shapes().enumerated() { checkBackwardData(conv, seed: UInt64(500 + i)) }
    }

    @Test func backwardWeightsMatchesReference() {
        for (i, conv) in Self.shapes().enumerated() { checkBackwardWeights(conv, seed: UInt64(600 + i)) }
    }

    /// Every instruction set this CPU runs, each planning its own convolutions (its own
    /// tuning row and micro-kernels), and a plan made on the default one run on the portable
    /// kernels (the scratch covers any ISA's panels).
    @Test func everyInstructionSet() {
        let shapes = Array(Self.shapes().prefix(6))
        kernelStateLock.withLock {
            let main = kn_isa_active()
            defer { _ = kn_isa_select(main) }
            let plannedOnMain = shapes[4]
            for isa in [KN_ISA_PORTABLE, KN_ISA_AVX2, KN_ISA_AVX512, KN_ISA_NEON] where kn_isa_supported(isa) != 0 {
                #expect(kn_isa_select(isa) == KN_OK)
                for (i, planned) in shapes.enumerated() {
                    let conv = planned.with(algo: KN_CONV_WINOGRAD)!
                    checkForward(conv, seed: UInt64(900 + i))
                    checkBackwardData(conv, seed: UInt64(920 + i))
                    checkBackwardWeights(conv, seed: UInt64(940 + i))
                }
                checkForward(plannedOnMain, seed: 960)
                checkBackwardData(plannedOnMain, seed: 961)
                checkBackwardWeights(plannedOnMain, seed: 962)
            }
        }
    }

    func checkForward(_ conv: Conv, seed: UInt64) {
        #expect(conv.algos == Array(repeating: KN_CONV_WINOGRAD, count: 3), "\(conv)")
        var rng = SplitMix(seed)
        let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.K))
        let fast = conv.forward(x, w, b), ref = conv.forward(x, w, b, reference: true)
        let mag = windowMagnitude(N: conv.N, C: conv.C, H: conv.H, W: conv.W, K: conv.K,
                                  pad: (conv.desc.pad_h, conv.desc.pad_w), x: x) { kernelAbs(w, $0, $1, Int(conv.C)) }
        let bound = mag.indices.map { j in
            2.1 * gamma(conv.crs + Winograd.roundings)
                * (Winograd.amplification * Double(mag[j]) + Double(abs(b[j / Int(conv.P * conv.Q) % Int(conv.K)])))
        }
        expectClose(fast, ref, bound: bound, "forward \(conv)")
    }

    func checkBackwardData(_ conv: Conv, seed: UInt64) {
        var rng = SplitMix(seed)
        let dy = rng.array(conv.yCount), w = rng.array(conv.wCount), base = rng.array(conv.xCount)
        let fast = conv.backwardData(dy, w, into: base), ref = conv.backwardData(dy, w, into: base, reference: true)
        // the transposed conv: dy (K channels, P x Q) padded by 2 - pad, weights (C, K)
        let mag = windowMagnitude(N: conv.N, C: conv.K, H: conv.P, W: conv.Q, K: conv.C,
                                  pad: (2 - conv.desc.pad_h, 2 - conv.desc.pad_w), x: dy) { c, k in
            kernelAbs(w, k, c, Int(conv.C))
        }
        let L = Int(conv.K) * 9 + Winograd.roundings
        let bound = mag.indices.map { j in 2.1 * gamma(L) * (Winograd.amplification * Double(mag[j]) + Double(abs(base[j]))) }
        expectClose(fast, ref, bound: bound, "backward-data \(conv)")
    }

    func checkBackwardWeights(_ conv: Conv, seed: UInt64) {
        var rng = SplitMix(seed)
        let dy = rng.array(conv.yCount), x = rng.array(conv.xCount)
        let w0 = rng.array(conv.wCount), b0 = rng.array(Int(conv.K))
        let fast = conv.backwardWeights(dy, x, into: w0, biasInto: b0)
        let ref = conv.backwardWeights(dy, x, into: w0, biasInto: b0, reference: true)
        // per (k, c): sum over images and tiles of (sum of |dy_k| on the 2x2 tile) x (sum
        // of |x_c| on its 4x4 window)
        let (N, C, H, W, K, P, Q) = (Int(conv.N), Int(conv.C), Int(conv.H), Int(conv.W), Int(conv.K), Int(conv.P), Int(conv.Q))
        let (ph, pw) = (Int(conv.desc.pad_h), Int(conv.desc.pad_w))
        let (m, a) = (Winograd.outputTile, Winograd.inputTile)
        let th = (P + m - 1) / m, tw = (Q + m - 1) / m
        var mag = [Double](repeating: 0, count: K * C)
        for n in 0..<N {
            for ty in 0..<th {
                for tx in 0..<tw {
                    let e = (0..<K).map { k in
                        (0..<m).reduce(0.0) { s, r in (0..<m).reduce(s) { s, q in
                            let (yy, xx) = (m * ty + r, m * tx + q)
                            return yy < P && xx < Q ? s + Double(abs(dy[((n * K + k) * P + yy) * Q + xx])) : s
                        } }
                    }
                    let d = (0..<C).map { c in
                        (0..<a).reduce(0.0) { s, r in (0..<a).reduce(s) { s, q in
                            let (yy, xx) = (m * ty - ph + r, m * tx - pw + q)
                            return yy >= 0 && yy < H && xx >= 0 && xx < W ? s + Double(abs(x[((n * C + c) * H + yy) * W + xx])) : s
                        } }
                    }
                    for k in 0..<K { for c in 0..<C { mag[k * C + c] += e[k] * d[c] } }
                }
            }
        }
        let L = N * th * tw + Winograd.roundings
        let bound = w0.indices.map { j in 2.1 * gamma(L) * (Winograd.amplification * mag[j / 9] + Double(abs(w0[j]))) }
        expectClose(fast.0, ref.0, bound: bound, "backward-weights \(conv)")
        let biasMag = conv.backwardWeights(dy.map(abs), x.map(abs), into: w0.map(abs), biasInto: b0.map(abs), reference: true).1
        expectClose(fast.1, ref.1, bound: biasMag.map { 2.1 * gamma(N * P * Q + 1) * Double($0) }, "backward-bias \(conv)")
    }

    /// Finite differences of the direct reference's forward against the Winograd backward
    /// passes: d/dx, d/dw and d/dbias. (Winograd's own forward is checked against the
    /// reference above; its rounding, up to `amplification` times a direct sum's, would
    /// swamp a finite difference.)
    @Test func finiteDifferences() {
        for (i, conv) in Self.shapes().filter({ $0.yCount <= 4096 }).enumerated() { // the large planes: bias tolerance too loose
            checkConvGradients(conv, seed: UInt64(700 + i), referenceForward: true)
        }
    }

    /// Chunks across a team of 2 (each thread its own run of chunks) and backward-weights'
    /// partial sums give the bits of a team of 1.
    @Test func sameBitsOnAnyTeam() {
        let conv = Conv(N: 7, C: 6, H: 32, W: 32, K: 5, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD)!
        var rng = SplitMix(800)
        let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.K)), dy = rng.array(conv.yCount)
        let zeroX = [Float](repeating: 0, count: conv.xCount), zeroW = [Float](repeating: 0, count: conv.wCount)
        let zeroB = [Float](repeating: 0, count: Int(conv.K))
        func run() -> [[Float]] {
            let (dw, db) = conv.backwardWeights(dy, x, into: zeroW, biasInto: zeroB)
            return [conv.forward(x, w, b), conv.backwardData(dy, w, into: zeroX), dw, db]
        }
        let (one, team) = kernelStateLock.withLock { (withThreads(1, run), withThreads(2, run)) }
        #expect(team == one, "\(conv)")
    }

    /// The plan takes Winograd for wide layers with channels enough, and declines it where it
    /// cannot run or does not pay, saying why (with the reference row, 64 channels at least).
    @Test func planChoosesWinogradWhereItPays() {
        var row = Self.referenceRow
        row.winograd_min_channels = 64
        func Conv(N: Int, C: Int, H: Int, W: Int, K: Int, R: Int, S: Int, stride: (Int, Int) = (1, 1),
                  pad: (Int, Int) = (0, 0), algo: kn_conv_algo = KN_CONV_AUTO) -> RematKernelsTests.Conv? {
            RematKernelsTests.Conv(N: N, C: C, H: H, W: W, K: K, R: R, S: S, stride: stride, pad: pad, algo: algo, tuning: row)
        }
        let wide = Conv(N: 8, C: 64, H: 32, W: 32, K: 64, R: 3, S: 3, pad: (1, 1))!
        #expect(wide.algos == Array(repeating: KN_CONV_WINOGRAD, count: 3), "\(wide)")
        let few = Conv(N: 8, C: 16, H: 32, W: 32, K: 16, R: 3, S: 3, pad: (1, 1))!
        #expect(!few.algos.contains(KN_CONV_WINOGRAD), "\(few)")
        #expect(String(cString: kn_conv2d_explain(few.plan)).contains("winograd: 16 -> 16 channels"))
        let strided = Conv(N: 8, C: 64, H: 32, W: 32, K: 64, R: 3, S: 3, stride: (2, 2), pad: (1, 1))!
        #expect(!strided.algos.contains(KN_CONV_WINOGRAD))
        #expect(String(cString: kn_conv2d_explain(strided.plan)).contains("winograd: needs a 3x3 kernel, stride 1"))
        // 512 -> 512 channels: the transformed weights alone fill the default scratch cap
        let big = Conv(N: 8, C: 512, H: 8, W: 8, K: 512, R: 3, S: 3, pad: (1, 1))!
        #expect(!big.algos.contains(KN_CONV_WINOGRAD), "\(big)")
        #expect(String(cString: kn_conv2d_explain(big.plan)).contains("floats of scratch"))
        // twice the channels on narrow planes; backward-weights only on planes 32 wide or more,
        // none of it under 8 wide
        #expect(!Conv(N: 64, C: 64, H: 8, W: 8, K: 64, R: 3, S: 3, pad: (1, 1))!.algos.contains(KN_CONV_WINOGRAD))
        let at8 = Conv(N: 64, C: 128, H: 8, W: 8, K: 128, R: 3, S: 3, pad: (1, 1))!
        #expect(at8.algos == [KN_CONV_WINOGRAD, KN_CONV_WINOGRAD, KN_CONV_BATCH_INNER], "\(at8)")
        #expect(String(cString: kn_conv2d_explain(at8.plan)).contains("winograd: backward-weights on planes under 32 wide"))
        let at4 = Conv(N: 64, C: 256, H: 4, W: 4, K: 256, R: 3, S: 3, pad: (1, 1))!
        #expect(!at4.algos.contains(KN_CONV_WINOGRAD), "\(at4)")
        #expect(String(cString: kn_conv2d_explain(at4.plan)).contains("winograd: planes under 8 wide"))
        // requested for a shape it cannot run at all: refused
        #expect(Conv(N: 1, C: 2, H: 5, W: 5, K: 2, R: 5, S: 5, algo: KN_CONV_WINOGRAD) == nil)
        // AVX2's row takes it from 32 channels: resnet56's 32->32 layer on 16x16 planes
        row.winograd_min_channels = 32
        #expect(Array(Conv(N: 64, C: 32, H: 16, W: 16, K: 32, R: 3, S: 3, pad: (1, 1))!.algos.prefix(2))
                == [KN_CONV_WINOGRAD, KN_CONV_WINOGRAD])
    }
}
