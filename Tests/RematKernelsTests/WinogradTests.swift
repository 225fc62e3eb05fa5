import RematKernels
import Testing

/// Winograd F(2x2, 3x3) against the direct reference. Its error bound differs from a direct
/// sum's: each output is a sum over its tile's whole 4x4 input window (the transforms' terms
/// cancel only in exact arithmetic), every weight and window pixel counted at most 4 times
/// (2 per dimension, from B, G and A), through C + 15 roundings (the GEMM's C terms, 6 in
/// the weight transform, 2 in the input's, 4 in the output's, the product and the bias).
/// The bounds below are that, from |x|, |w| and |dy|, twice (both sides' errors) with slack.
@Suite("Winograd convolution against the direct reference")
struct WinogradTests {
    /// Ragged planes (odd outputs), every padding it runs (0 to 2), single rows and columns,
    /// one image per chunk (a tiny scratch limit) and several chunks of several images.
    static func shapes() -> [Conv] {
        var shapes: [Conv] = [
            Conv(N: 2, C: 3, H: 7, W: 9, K: 4, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD)!,
            Conv(N: 3, C: 5, H: 6, W: 5, K: 2, R: 3, S: 3, pad: (0, 2), algo: KN_CONV_WINOGRAD)!,
            Conv(N: 1, C: 2, H: 3, W: 3, K: 3, R: 3, S: 3, pad: (0, 0), algo: KN_CONV_WINOGRAD)!, // one output
            Conv(N: 2, C: 4, H: 1, W: 8, K: 5, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD)!, // one row
            Conv(N: 5, C: 6, H: 33, W: 32, K: 7, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD)!, // chunks of 1
            Conv(N: 70, C: 3, H: 4, W: 4, K: 3, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD)!, // chunks of 64, 6
        ]
        var rng = SplitMix(77)
        while shapes.count < 14 {
            let pad = (rng.int(0...2), rng.int(0...2))
            if let c = Conv(N: rng.int(1...3), C: rng.int(1...9), H: rng.int(1...13), W: rng.int(1...13),
                            K: rng.int(1...9), R: 3, S: 3, pad: pad, algo: KN_CONV_WINOGRAD) {
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
        let box = Conv(N: Int(N), C: Int(C), H: Int(H), W: Int(W), K: Int(K), R: 5, S: 5,
                       pad: (Int(pad.0) + 1, Int(pad.1) + 1), algo: KN_CONV_REFERENCE)!
        var w5 = [Float](repeating: 0, count: Int(K * C * 25))
        for k in 0..<Int(K) { for c in 0..<Int(C) { for t in 0..<25 { w5[(k * Int(C) + c) * 25 + t] = wAbsKC(k, c) } } }
        return box.forward(x.map(abs), w5, nil, reference: true)
    }

    func kernelAbs(_ w: [Float], _ k: Int, _ c: Int, _ C: Int) -> Float {
        (0..<9).reduce(0) { $0 + abs(w[(k * C + c) * 9 + $1]) }
    }

    @Test func forwardMatchesReference() {
        for (i, conv) in Self.shapes().enumerated() {
            #expect(conv.algos == Array(repeating: KN_CONV_WINOGRAD, count: 3), "\(conv)")
            var rng = SplitMix(UInt64(400 + i))
            let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.K))
            let fast = conv.forward(x, w, b), ref = conv.forward(x, w, b, reference: true)
            let mag = windowMagnitude(N: conv.N, C: conv.C, H: conv.H, W: conv.W, K: conv.K,
                                      pad: (conv.desc.pad_h, conv.desc.pad_w), x: x) { kernelAbs(w, $0, $1, Int(conv.C)) }
            let bound = mag.indices.map { j in
                2.1 * gamma(conv.crs + 15) * (4 * Double(mag[j]) + Double(abs(b[j / Int(conv.P * conv.Q) % Int(conv.K)])))
            }
            expectClose(fast, ref, bound: bound, "forward \(conv)")
        }
    }

    @Test func backwardDataMatchesReference() {
        for (i, conv) in Self.shapes().enumerated() {
            var rng = SplitMix(UInt64(500 + i))
            let dy = rng.array(conv.yCount), w = rng.array(conv.wCount), base = rng.array(conv.xCount)
            let fast = conv.backwardData(dy, w, into: base), ref = conv.backwardData(dy, w, into: base, reference: true)
            // the transposed conv: dy (K channels, P x Q) padded by 2 - pad, weights (C, K)
            let mag = windowMagnitude(N: conv.N, C: conv.K, H: conv.P, W: conv.Q, K: conv.C,
                                      pad: (2 - conv.desc.pad_h, 2 - conv.desc.pad_w), x: dy) { c, k in
                kernelAbs(w, k, c, Int(conv.C))
            }
            let L = Int(conv.K) * 9 + 16
            let bound = mag.indices.map { j in 2.1 * gamma(L) * (4 * Double(mag[j]) + Double(abs(base[j]))) }
            expectClose(fast, ref, bound: bound, "backward-data \(conv)")
        }
    }

    @Test func backwardWeightsMatchesReference() {
        for (i, conv) in Self.shapes().enumerated() {
            var rng = SplitMix(UInt64(600 + i))
            let dy = rng.array(conv.yCount), x = rng.array(conv.xCount)
            let w0 = rng.array(conv.wCount), b0 = rng.array(Int(conv.K))
            let fast = conv.backwardWeights(dy, x, into: w0, biasInto: b0)
            let ref = conv.backwardWeights(dy, x, into: w0, biasInto: b0, reference: true)
            // per (k, c): sum over images and tiles of (sum of |dy_k| on the 2x2 tile) x (sum
            // of |x_c| on its 4x4 window)
            let (N, C, H, W, K, P, Q) = (Int(conv.N), Int(conv.C), Int(conv.H), Int(conv.W), Int(conv.K), Int(conv.P), Int(conv.Q))
            let (ph, pw) = (Int(conv.desc.pad_h), Int(conv.desc.pad_w))
            let th = (P + 1) / 2, tw = (Q + 1) / 2
            var mag = [Double](repeating: 0, count: K * C)
            for n in 0..<N {
                for ty in 0..<th {
                    for tx in 0..<tw {
                        let e = (0..<K).map { k in
                            (0..<2).reduce(0.0) { s, r in (0..<2).reduce(s) { s, q in
                                let (yy, xx) = (2 * ty + r, 2 * tx + q)
                                return yy < P && xx < Q ? s + Double(abs(dy[((n * K + k) * P + yy) * Q + xx])) : s
                            } }
                        }
                        let d = (0..<C).map { c in
                            (0..<4).reduce(0.0) { s, r in (0..<4).reduce(s) { s, q in
                                let (yy, xx) = (2 * ty - ph + r, 2 * tx - pw + q)
                                return yy >= 0 && yy < H && xx >= 0 && xx < W ? s + Double(abs(x[((n * C + c) * H + yy) * W + xx])) : s
                            } }
                        }
                        for k in 0..<K { for c in 0..<C { mag[k * C + c] += e[k] * d[c] } }
                    }
                }
            }
            let L = N * th * tw + 20
            let bound = w0.indices.map { j in 2.1 * gamma(L) * (4 * mag[j / 9] + Double(abs(w0[j]))) }
            expectClose(fast.0, ref.0, bound: bound, "backward-weights \(conv)")
            let biasMag = conv.backwardWeights(dy.map(abs), x.map(abs), into: w0.map(abs), biasInto: b0.map(abs), reference: true).1
            expectClose(fast.1, ref.1, bound: biasMag.map { 2.1 * gamma(N * P * Q + 1) * Double($0) }, "backward-bias \(conv)")
        }
    }

    /// Finite differences through the Winograd passes: d/dx, d/dw and d/dbias. The rounding
    /// allowance scales by 16 (4 for the counted terms, 4 for window sums against taps); the
    /// conv is linear in each argument, so a step of 1 has no truncation error and keeps the
    /// allowance tight.
    @Test func finiteDifferences() {
        for (i, conv) in Self.shapes().prefix(8).enumerated() {
            var rng = SplitMix(UInt64(700 + i))
            let x = rng.array(conv.xCount), w = rng.array(conv.wCount), b = rng.array(Int(conv.K))
            let g = rng.array(conv.yCount)
            let zeroX = [Float](repeating: 0, count: conv.xCount), zeroW = [Float](repeating: 0, count: conv.wCount)
            let zeroB = [Float](repeating: 0, count: Int(conv.K))
            let reduction = 16 * (conv.crs + 15)
            checkGradient("winograd dx \(conv)", x: x, outputWeights: g, reduction: reduction, h: 1,
                          forward: { conv.forward($0, w, b) }, gradient: { _ in conv.backwardData(g, w, into: zeroX) })
            checkGradient("winograd dw \(conv)", x: w, outputWeights: g, reduction: reduction, h: 1,
                          forward: { conv.forward(x, $0, b) },
                          gradient: { _ in conv.backwardWeights(g, x, into: zeroW, biasInto: zeroB).0 })
            checkGradient("winograd dbias \(conv)", x: b, outputWeights: g, reduction: reduction, h: 1,
                          forward: { conv.forward(x, w, $0) },
                          gradient: { _ in conv.backwardWeights(g, x, into: zeroW, biasInto: zeroB).1 })
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
        let saved = kn_get_num_threads()
        defer { kn_set_num_threads(saved) }
        kn_set_num_threads(1)
        let one = run()
        kn_set_num_threads(2)
        #expect(run() == one, "\(conv)")
    }

    /// The plan takes Winograd for wide layers with channels enough, and declines it where it
    /// cannot run or does not pay, saying why.
    @Test func planChoosesWinogradWhereItPays() {
        let wide = Conv(N: 8, C: 64, H: 32, W: 32, K: 64, R: 3, S: 3, pad: (1, 1))!
        #expect(wide.algos == Array(repeating: KN_CONV_WINOGRAD, count: 3), "\(wide)")
        let few = Conv(N: 8, C: 16, H: 32, W: 32, K: 16, R: 3, S: 3, pad: (1, 1))!
        #expect(!few.algos.contains(KN_CONV_WINOGRAD), "\(few)")
        #expect(String(cString: kn_conv2d_explain(few.plan)).contains("winograd: 16 -> 16 channels"))
        let strided = Conv(N: 8, C: 64, H: 32, W: 32, K: 64, R: 3, S: 3, stride: (2, 2), pad: (1, 1))!
        #expect(!strided.algos.contains(KN_CONV_WINOGRAD))
        #expect(String(cString: kn_conv2d_explain(strided.plan)).contains("winograd: needs a 3x3 kernel, stride 1"))
        // 512 -> 512 channels: the transformed weights alone fill the default scratch cap
        let big = Conv(N: 8, C: 512, H: 4, W: 4, K: 512, R: 3, S: 3, pad: (1, 1))!
        #expect(!big.algos.contains(KN_CONV_WINOGRAD), "\(big)")
        #expect(String(cString: kn_conv2d_explain(big.plan)).contains("floats of scratch"))
        // on narrow planes it needs twice the channels
        #expect(!Conv(N: 64, C: 64, H: 8, W: 8, K: 64, R: 3, S: 3, pad: (1, 1))!.algos.contains(KN_CONV_WINOGRAD))
        #expect(Conv(N: 64, C: 128, H: 8, W: 8, K: 128, R: 3, S: 3, pad: (1, 1))!.algos == Array(repeating: KN_CONV_WINOGRAD, count: 3))
        // requested for a shape it cannot run at all: refused
        #expect(Conv(N: 1, C: 2, H: 5, W: 5, K: 2, R: 5, S: 5, algo: KN_CONV_WINOGRAD) == nil)
    }
}
