import Foundation
import RematKernels
import Testing

/// Pooling geometry used by the pooling tests.
struct Pool: CustomStringConvertible {
    var N, C, H, W, kh, kw, sh, sw, ph, pw: Int
    var P: Int { (H + 2 * ph - kh) / sh + 1 }
    var Q: Int { (W + 2 * pw - kw) / sw + 1 }
    var description: String { "N\(N) C\(C) \(H)x\(W) k\(kh)x\(kw) s\(sh),\(sw) p\(ph),\(pw)" }
    var args: (Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32, Int32) {
        (Int32(N), Int32(C), Int32(H), Int32(W), Int32(kh), Int32(kw), Int32(sh), Int32(sw), Int32(ph), Int32(pw))
    }
    func maxForward(_ x: [Float]) -> [Float] {
        var y = [Float](repeating: .nan, count: N * C * P * Q)
        let a = args
        #expect(kn_maxpool2d_forward(&y, x, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
        return y
    }
    func maxBackward(_ dy: [Float], _ x: [Float]) -> [Float] {
        var dx = [Float](repeating: 0, count: x.count)
        let a = args
        #expect(kn_maxpool2d_backward(&dx, dy, x, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
        return dx
    }
    func avgForward(_ x: [Float]) -> [Float] {
        var y = [Float](repeating: .nan, count: N * C * P * Q)
        let a = args
        #expect(kn_avgpool2d_forward(&y, x, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
        return y
    }
    func avgBackward(_ dy: [Float]) -> [Float] {
        var dx = [Float](repeating: 0, count: N * C * H * W)
        let a = args
        #expect(kn_avgpool2d_backward(&dx, dy, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
        return dx
    }
    func argmaxForward(_ x: [Float]) -> ([Float], [UInt8]) {
        var y = [Float](repeating: .nan, count: N * C * P * Q), arg = [UInt8](repeating: 255, count: y.count)
        let a = args
        #expect(kn_maxpool2d_argmax_forward(&y, &arg, x, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
        return (y, arg)
    }
    func argmaxBackward(_ dy: [Float], _ arg: [UInt8], mask: [Float]?) -> [Float] {
        var dx = [Float](repeating: 0, count: N * C * H * W)
        let a = args
        #expect(kn_maxpool2d_argmax_backward(&dx, dy, arg, mask, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
        return dx
    }
    /// The naive oracle: every window scanned in Swift.
    func naive(_ x: [Float], max isMax: Bool) -> [Float] {
        var y: [Float] = []
        for plane in 0..<(N * C) {
            for p in 0..<P {
                for q in 0..<Q {
                    var vals: [Float] = []
                    for r in 0..<kh { for s in 0..<kw {
                        let ih = p * sh - ph + r, iw = q * sw - pw + s
                        if ih >= 0, ih < H, iw >= 0, iw < W { vals.append(x[plane * H * W + ih * W + iw]) }
                    } }
                    y.append(isMax ? vals.max()! : vals.reduce(0, +) / Float(kh * kw))
                }
            }
        }
        return y
    }
}

let poolShapes = [
    Pool(N: 2, C: 3, H: 8, W: 8, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0),
    Pool(N: 1, C: 2, H: 7, W: 9, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1),
    Pool(N: 2, C: 1, H: 5, W: 6, kh: 3, kw: 2, sh: 1, sw: 3, ph: 1, pw: 0),
    Pool(N: 1, C: 1, H: 1, W: 1, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0),
    Pool(N: 1, C: 2, H: 7, W: 5, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0), // the 2x2 fast path, odd sizes
]

/// Values on a grid spaced 1/16 apart, all distinct per plane: no ties and no kink within the
/// finite-difference step of 1/64.
func distinctValues(_ n: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix(seed)
    var v = (0..<n).map { Float($0 - n / 2) / 16 }
    for i in stride(from: n - 1, to: 0, by: -1) { v.swapAt(i, rng.int(0...i)) }
    return v
}

@Suite("Pooling, elementwise, BatchNorm, loss, dropout and optimizers")
struct OpsTests {
    @Test func poolingMatchesNaiveAndFiniteDifferences() {
        for (i, p) in poolShapes.enumerated() {
            let x = distinctValues(p.N * p.C * p.H * p.W, seed: UInt64(i))
            let g = SplitMix(UInt64(50 + i)).arrayCopy(p.N * p.C * p.P * p.Q)
            #expect(p.maxForward(x) == p.naive(x, max: true), "maxpool \(p)")
            let avg = p.avgForward(x), want = p.naive(x, max: false)
            expectClose(avg, want, bound: want.map { _ in gamma(p.kh * p.kw + 1) * 16 }, "avgpool \(p)")
            checkGradient("maxpool \(p)", x: x, outputWeights: g, reduction: 1,
                          forward: { p.maxForward($0) }, gradient: { _ in p.maxBackward(g, x) })
            checkGradient("avgpool \(p)", x: x, outputWeights: g, reduction: p.kh * p.kw + 1,
                          forward: { p.avgForward($0) }, gradient: { _ in p.avgBackward(g) })
        }
        // impossible windows are refused
        var y = [Float](repeating: 0, count: 4)
        let x = [Float](repeating: 0, count: 4)
        #expect(kn_maxpool2d_forward(&y, x, 1, 1, 2, 2, 3, 3, 1, 1, 0, 0) == KN_EINVAL) // window > input
        #expect(kn_avgpool2d_forward(&y, x, 1, 1, 2, 2, 2, 2, 0, 1, 0, 0) == KN_EINVAL) // stride 0
        #expect(kn_maxpool2d_forward(&y, x, 1, 1, 2, 2, 2, 2, 1, 1, 2, 0) == KN_EINVAL) // pad > k/2
    }

    /// Max pooling that records its winners gives the bits of the scan from the input, ties
    /// (first wins) and ragged edges included; masked by its output, those of the scan
    /// followed by ReLU's backward (a ReLU before the pool).
    @Test func argmaxPoolingMatchesTheScan() {
        var rng = SplitMix(7)
        let shapes = poolShapes + (0..<12).map { _ in
            let k = rng.int(1...3), s = rng.int(1...3)
            return Pool(N: rng.int(1...2), C: rng.int(1...3), H: rng.int(k...13), W: rng.int(k...13), kh: k, kw: rng.int(1...3),
                        sh: s, sw: rng.int(1...3), ph: rng.int(0...k / 2), pw: 0)
        }.filter { $0.W >= $0.kw } + [Pool(N: 1, C: 1, H: 16, W: 16, kh: 16, kw: 16, sh: 1, sw: 1, ph: 0, pw: 0)]
        for p in shapes {
            // few distinct values, half negative: many ties, and windows of zeros after ReLU
            let z = (0..<(p.N * p.C * p.H * p.W)).map { _ in Float(rng.int(-3...3)) }, x = z.map { max($0, 0) }
            let dy = rng.array(p.N * p.C * p.P * p.Q)
            let (y, arg) = p.argmaxForward(x)
            #expect(y == p.maxForward(x), "\(p)")
            #expect(arg.allSatisfy { Int($0) < p.kh * p.kw }, "\(p)")
            #expect(p.argmaxBackward(dy, arg, mask: nil) == p.maxBackward(dy, x), "\(p)")
            var relu = [Float](repeating: .nan, count: x.count)
            kn_relu_backward(&relu, p.maxBackward(dy, x), x, x.count)
            #expect(p.argmaxBackward(dy, arg, mask: y) == relu, "\(p) masked")
        }
        var y = [Float](repeating: 0, count: 1), arg = [UInt8](repeating: 0, count: 1)
        let x = [Float](repeating: 0, count: 17 * 17)
        #expect(kn_maxpool2d_argmax_forward(&y, &arg, x, 1, 1, 17, 17, 17, 16, 1, 1, 0, 0) == KN_EINVAL) // 272 positions
    }

    /// BatchNorm, ReLU and max pooling fused each way give the bits of the separate passes:
    /// forward (output and winners), and backward from the pooled gradient (input, scale and
    /// shift gradients) into a new tensor or over the BatchNorm input, for 1 to 3 threads.
    /// The 2x2 window, odd planes, strides, padding and overlapping windows.
    @Test func batchNormReluMaxPoolIsTheThreePasses() {
        var rng = SplitMix(21)
        let shapes = poolShapes + [Pool(N: 3, C: 4, H: 8, W: 8, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0),
                                   Pool(N: 2, C: 3, H: 9, W: 7, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0),
                                   Pool(N: 2, C: 2, H: 9, W: 9, kh: 3, kw: 3, sh: 2, sw: 2, ph: 1, pw: 1),
                                   Pool(N: 2, C: 3, H: 6, W: 11, kh: 3, kw: 2, sh: 1, sw: 1, ph: 0, pw: 1)]
        for p in shapes {
            let (N, C, HW) = (p.N, p.C, p.H * p.W), a = p.args
            let x = rng.array(N * C * HW, -2, 2), dy = rng.array(N * C * p.P * p.Q)
            let gamma = (0..<C).map { c in (c % 2 == 0 ? 1 : -1) * rng.uniform(0.5, 1.5) }, beta = rng.array(C, -0.5, 0.5)
            var mean = [Float](repeating: 0, count: C), invstd = mean
            kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
            // the three passes
            var z = [Float](repeating: .nan, count: x.count)
            kn_batchnorm_forward_relu(&z, x, mean, invstd, gamma, beta, Int32(N), Int32(C), Int32(HW))
            let (y, arg) = p.argmaxForward(z)
            let dz = p.argmaxBackward(dy, arg, mask: y)
            var dx = [Float](repeating: .nan, count: x.count), dg = [Float](repeating: 0, count: C), db = dg
            kn_batchnorm_backward(&dx, &dg, &db, dz, x, mean, invstd, gamma, Int32(N), Int32(C), Int32(HW))
            #expect(N * HW < 4 || dg.contains { $0 != 0 }, "\(p): some gradient reaches the scale")
            for team in [1, 2, 3] {
                var fy = [Float](repeating: .nan, count: y.count), farg = [UInt8](repeating: 255, count: y.count)
                var fdx = [Float](repeating: .nan, count: x.count), fdg = [Float](repeating: 0, count: C), fdb = fdg
                var over = x, odg = fdg, odb = fdg
                withThreads(team) {
                    #expect(kn_batchnorm_relu_maxpool_forward(&fy, &farg, x, mean, invstd, gamma, beta,
                                                              a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
                    #expect(kn_batchnorm_relu_maxpool_backward(&fdx, &fdg, &fdb, dy, farg, fy, x, mean, invstd, gamma,
                                                               a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
                    over.withUnsafeMutableBufferPointer { o in
                        #expect(kn_batchnorm_relu_maxpool_backward(o.baseAddress, &odg, &odb, dy, farg, fy, o.baseAddress, mean, invstd,
                                                                   gamma, a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7, a.8, a.9) == KN_OK)
                    }
                }
                expectBitwise(fy, y, "\(p) forward, \(team) threads")
                #expect(farg == arg, "\(p) winners, \(team) threads")
                expectBitwise(fdx + fdg + fdb, dx + dg + db, "\(p) backward, \(team) threads")
                expectBitwise(over + odg + odb, dx + dg + db, "\(p) backward over x, \(team) threads")
            }
        }
        var y = [Float](repeating: 0, count: 1), arg = [UInt8](repeating: 0, count: 1), one: [Float] = [1]
        let x = [Float](repeating: 0, count: 17 * 17)
        #expect(kn_batchnorm_relu_maxpool_forward(&y, &arg, x, one, one, one, one, 1, 1, 17, 17, 17, 16, 1, 1, 0, 0) == KN_EINVAL)
        #expect(kn_batchnorm_relu_maxpool_forward(&y, &arg, x, one, one, one, one, 1, 1, 2, 2, 2, 2, 1, 1, 2, 0) == KN_EINVAL)
    }

    @Test func globalAveragePool() {
        let (N, C, HW) = (2, 3, 10)
        var rng = SplitMix(1)
        let x = rng.array(N * C * HW), g = rng.array(N * C)
        func fwd(_ x: [Float]) -> [Float] { var y = [Float](repeating: 0, count: N * C); kn_global_avgpool_forward(&y, x, 2, 3, 10); return y }
        let want = (0..<(N * C)).map { pl in x[(pl * HW)..<(pl * HW + HW)].reduce(0, +) / Float(HW) }
        expectClose(fwd(x), want, bound: want.map { _ in gamma(HW + 1) * Double(HW) }, "gap forward")
        checkGradient("gap", x: x, outputWeights: g, reduction: HW + 1, forward: fwd, gradient: { _ in
            var dx = [Float](repeating: 0, count: x.count); kn_global_avgpool_backward(&dx, g, 2, 3, 10); return dx })
    }

    @Test func reluBiasAddAndAccumulate() {
        let n = 1000
        let x = distinctValues(n, seed: 3).map { $0 + 1.0 / 32 }  // never within the 1/64 step of 0
        var rng = SplitMix(4)
        let g = rng.array(n)
        func relu(_ x: [Float]) -> [Float] { var y = [Float](repeating: 0, count: n); kn_relu_forward(&y, x, n); return y }
        #expect(relu(x) == x.map { max($0, 0) })
        checkGradient("relu", x: x, outputWeights: g, reduction: 1, forward: relu, gradient: { xs in
            var dx = [Float](repeating: 0, count: n); kn_relu_backward(&dx, g, relu(xs), n); return dx })
        // backward writes dx without reading it: garbage in it changes nothing
        var garbage = [Float](repeating: .nan, count: n), clean = [Float](repeating: 0, count: n)
        kn_relu_backward(&garbage, g, relu(x), n)
        kn_relu_backward(&clean, g, relu(x), n)
        expectBitwise(garbage, clean, "relu backward over NaN")
        var y = x
        kn_accumulate(&y, g, n)
        #expect(y == zip(x, g).map { $0 + $1 })
        var s = [Float](repeating: 0, count: n)
        kn_add(&s, x, g, n)
        #expect(s == y)
        // the fused residual add + ReLU: the bits of the two passes, NaN and -0 included
        var a = x, addRelu = [Float](repeating: .nan, count: n)
        a[0] = .nan; a[1] = -0.0; a[2] = -g[2]
        kn_add(&s, a, g, n)
        kn_add_relu(&addRelu, a, g, n)
        expectBitwise(addRelu, relu(s), "add + relu fused")
        // bias over (N, C, HW) = (4, 5, 50)
        let bias = rng.array(5)
        func addBias(_ b: [Float]) -> [Float] { var out = x; kn_bias_forward(&out, b, 4, 5, 50); return out }
        #expect(addBias(bias) == x.enumerated().map { $0.element + bias[($0.offset / 50) % 5] })
        checkGradient("bias", x: bias, outputWeights: g, reduction: 1, forward: addBias, gradient: { _ in
            var db = [Float](repeating: 0, count: 5); kn_bias_backward(&db, g, 4, 5, 50); return db })
    }

    @Test func batchNorm() {
        let (N, C, HW) = (3, 4, 7)
        var rng = SplitMix(5)
        let x = rng.array(N * C * HW, -2, 3), gamma0 = rng.array(C, 0.5, 1.5), beta0 = rng.array(C)
        let g = rng.array(N * C * HW)
        func train(_ x: [Float], _ gm: [Float], _ bt: [Float]) -> [Float] {
            var mean = [Float](repeating: 0, count: C), invstd = mean, y = x
            kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
            kn_batchnorm_forward(&y, x, mean, invstd, gm, bt, Int32(N), Int32(C), Int32(HW))
            return y
        }
        // oracle: the textbook formula in double
        let y = train(x, gamma0, beta0)
        do { // fused with the ReLU after it: the bits of the two passes
            var mean = [Float](repeating: 0, count: C), invstd = mean
            var fused = [Float](repeating: .nan, count: x.count), relu = fused
            kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
            kn_batchnorm_forward_relu(&fused, x, mean, invstd, gamma0, beta0, Int32(N), Int32(C), Int32(HW))
            kn_relu_forward(&relu, y, x.count)
            expectBitwise(fused, relu, "batchnorm + relu fused")
            #expect(relu.contains(0) && relu.contains { $0 > 0 }, "both sides of the ReLU exercised")
        }
        for c in 0..<C {
            let vals = (0..<N).flatMap { n in (0..<HW).map { Double(x[(n * C + c) * HW + $0]) } }
            let mu = vals.reduce(0, +) / Double(vals.count)
            let v = vals.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(vals.count)
            for n in 0..<N { for i in 0..<HW {
                let idx = (n * C + c) * HW + i
                let want = (Double(x[idx]) - mu) / (v + 1e-5).squareRoot() * Double(gamma0[c]) + Double(beta0[c])
                #expect(abs(Double(y[idx]) - want) <= 8 * unitRoundoff * (abs(want) + 4), "bn forward [\(idx)]")
            } }
        }
        func backward() -> ([Float], [Float], [Float]) {
            var mean = [Float](repeating: 0, count: C), invstd = mean
            kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
            var dx = [Float](repeating: 0, count: x.count), dg = [Float](repeating: 0, count: C), db = dg
            kn_batchnorm_backward(&dx, &dg, &db, g, x, mean, invstd, gamma0, Int32(N), Int32(C), Int32(HW))
            return (dx, dg, db)
        }
        let grads = backward()
        do { // dx is written, not read
            var mean = [Float](repeating: 0, count: C), invstd = mean
            kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
            var dx = [Float](repeating: .nan, count: x.count), dg = [Float](repeating: 0, count: C), db = dg
            kn_batchnorm_backward(&dx, &dg, &db, g, x, mean, invstd, gamma0, Int32(N), Int32(C), Int32(HW))
            expectBitwise(dx + dg + db, grads.0 + grads.1 + grads.2, "bn backward over NaN")
        }
        checkGradient("bn dx", x: x, outputWeights: g, reduction: N * HW, smooth: true,
                      forward: { train($0, gamma0, beta0) }, gradient: { _ in grads.0 })
        checkGradient("bn dgamma", x: gamma0, outputWeights: g, reduction: N * HW, smooth: true,
                      forward: { train(x, $0, beta0) }, gradient: { _ in grads.1 })
        checkGradient("bn dbeta", x: beta0, outputWeights: g, reduction: N * HW,
                      forward: { train(x, gamma0, $0) }, gradient: { _ in grads.2 })
        // running statistics: PyTorch's update with the unbiased variance
        var mean = [Float](repeating: 0, count: C), invstd = mean
        kn_batchnorm_stats(&mean, &invstd, x, Int32(N), Int32(C), Int32(HW), 1e-5)
        var rm = [Float](repeating: 0, count: C), rv = [Float](repeating: 1, count: C)
        kn_batchnorm_update_running(&rm, &rv, mean, invstd, Int32(C), Int32(N * HW), 1e-5, 0.1)
        for c in 0..<C {
            let vals = (0..<N).flatMap { n in (0..<HW).map { Double(x[(n * C + c) * HW + $0]) } }
            let mu = vals.reduce(0, +) / Double(vals.count)
            let unbiased = vals.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(vals.count - 1)
            #expect(abs(Double(rm[c]) - 0.1 * mu) < 1e-6)
            #expect(abs(Double(rv[c]) - (0.9 + 0.1 * unbiased)) < 1e-5 * (1 + unbiased))
        }
        // inference with the running statistics
        var yi = x
        kn_batchnorm_inference(&yi, x, rm, rv, gamma0, beta0, Int32(N), Int32(C), Int32(HW), 1e-5)
        let c1 = 1, idx = (1 * C + c1) * HW + 2
        let want = (Double(x[idx]) - Double(rm[c1])) / (Double(rv[c1]) + 1e-5).squareRoot() * Double(gamma0[c1]) + Double(beta0[c1])
        #expect(abs(Double(yi[idx]) - want) < 1e-5 * (1 + abs(want)))
    }

    @Test func softmaxCrossEntropy() {
        let (N, K) = (5, 7)
        var rng = SplitMix(6)
        let logits = rng.array(N * K, -3, 3)
        let labels: [Int32] = [0, 6, 3, 3, 1]
        func loss(_ z: [Float]) -> [Float] { var l: Float = 0; #expect(kn_softmax_xent(&l, nil, z, labels, Int32(N), Int32(K)) == KN_OK); return [l] }
        var want = 0.0
        for n in 0..<N {
            let row = logits[(n * K)..<(n * K + K)].map(Double.init)
            want += log(row.map { exp($0) }.reduce(0, +)) - row[Int(labels[n])]
        }
        #expect(abs(Double(loss(logits)[0]) - want / Double(N)) < 1e-6 * (1 + want))
        checkGradient("softmax xent", x: logits, outputWeights: [1], reduction: K, smooth: true, forward: loss, gradient: { z in
            var l: Float = 0, d = [Float](repeating: 0, count: N * K)
            _ = kn_softmax_xent(&l, &d, z, labels, Int32(N), Int32(K)); return d })
        var l: Float = 0
        #expect(kn_softmax_xent(&l, nil, logits, [0, 7, 0, 0, 0], Int32(N), Int32(K)) == KN_ELABEL)
        #expect(kn_softmax_xent(&l, nil, logits, [0, -1, 0, 0, 0], Int32(N), Int32(K)) == KN_ELABEL)
        // large logits stay finite
        #expect(kn_softmax_xent(&l, nil, [Float](repeating: 1e30, count: N * K), labels, Int32(N), Int32(K)) == KN_OK && l.isFinite)
    }

    @Test func dropoutIsAPureFunctionOfSeedAndOffset() {
        let n = 20_000, p: Float = 0.3
        let x = [Float](repeating: 1, count: n)
        var y = [Float](repeating: 0, count: n)
        kn_dropout_forward(&y, x, p, 42, 1000, n)
        // the fraction dropped is within 5 binomial standard deviations of p
        let dropped = Double(y.filter { $0 == 0 }.count) / Double(n)
        #expect(abs(dropped - Double(p)) < 5 * (Double(p * (1 - p)) / Double(n)).squareRoot())
        #expect(y.allSatisfy { $0 == 0 || $0 == 1 / (1 - p) })
        // the second half regenerated alone, from its offset, is the same
        var half = [Float](repeating: 0, count: n / 2)
        kn_dropout_forward(&half, x, p, 42, 1000 + UInt64(n / 2), n / 2)
        #expect(half == Array(y[(n / 2)...]))
        // another seed gives another mask
        var other = [Float](repeating: 0, count: n)
        kn_dropout_forward(&other, x, p, 43, 1000, n)
        #expect(other != y)
        // backward: linear in x, so the finite difference is exact but for rounding
        var rng = SplitMix(8)
        let xs = rng.array(500), g = rng.array(500)
        checkGradient("dropout", x: xs, outputWeights: g, reduction: 1, forward: { v in
            var out = [Float](repeating: 0, count: 500); kn_dropout_forward(&out, v, p, 7, 0, 500); return out
        }, gradient: { _ in var dx = [Float](repeating: 0, count: 500); kn_dropout_backward(&dx, g, p, 7, 0, 500); return dx })
    }

    @Test func optimizersFollowPyTorchsFormulas() {
        var rng = SplitMix(9)
        let n = 300
        let w0 = rng.array(n), g = rng.array(n)
        for nesterov in [Int32(0), 1] {
            var w = w0, v = [Float](repeating: 0, count: n)
            var ww = w0.map(Double.init), vv = [Double](repeating: 0, count: n)
            for _ in 0..<3 {
                kn_sgd_step(&w, &v, g, n, 0.1, 0.9, 0.01, nesterov)
                for i in 0..<n {
                    let d = Double(g[i]) + 0.01 * ww[i]
                    vv[i] = 0.9 * vv[i] + d
                    ww[i] -= 0.1 * (nesterov != 0 ? d + 0.9 * vv[i] : vv[i])
                }
            }
            expectClose(w, ww.map(Float.init), bound: ww.map { _ in 1e-5 }, "sgd nesterov=\(nesterov)")
        }
        var w = w0, m = [Float](repeating: 0, count: n), v = m
        var ww = w0.map(Double.init), mm = [Double](repeating: 0, count: n), vv = mm
        for t in 1...3 {
            kn_adamw_step(&w, &m, &v, g, n, 0.01, 0.9, 0.999, 1e-8, 0.1, Int64(t))
            for i in 0..<n {
                ww[i] *= 1 - 0.01 * 0.1
                mm[i] = 0.9 * mm[i] + 0.1 * Double(g[i])
                vv[i] = 0.999 * vv[i] + 0.001 * Double(g[i]) * Double(g[i])
                let bc1 = 1 - pow(0.9, Double(t)), bc2 = 1 - pow(0.999, Double(t))
                ww[i] -= 0.01 / bc1 * mm[i] / (vv[i].squareRoot() / bc2.squareRoot() + 1e-8)
            }
        }
        expectClose(w, ww.map(Float.init), bound: ww.map { _ in 1e-5 }, "adamw")
    }

    @Test func linearLayer() {
        let (N, IN, OUT) = (3, 11, 5)
        var rng = SplitMix(10)
        let x = rng.array(N * IN), w = rng.array(OUT * IN), b = rng.array(OUT), g = rng.array(N * OUT)
        func fwd(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: N * OUT); kn_linear_forward(&y, x, w, b, Int32(N), Int32(IN), Int32(OUT)); return y
        }
        let want = (0..<(N * OUT)).map { i in (0..<IN).reduce(b[i % OUT]) { $0 + x[(i / OUT) * IN + $1] * w[(i % OUT) * IN + $1] } }
        expectClose(fwd(x, w, b), want, bound: want.map { _ in 2 * gamma(IN + 1) * Double(IN + 1) }, "linear forward")
        func grads() -> ([Float], [Float], [Float]) {
            var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: OUT)
            kn_linear_backward(&dx, &dw, &db, g, x, w, Int32(N), Int32(IN), Int32(OUT)); return (dx, dw, db)
        }
        let gr = grads()
        checkGradient("linear dx", x: x, outputWeights: g, reduction: IN + 1, forward: { fwd($0, w, b) }, gradient: { _ in gr.0 })
        checkGradient("linear dw", x: w, outputWeights: g, reduction: IN + 1, forward: { fwd(x, $0, b) }, gradient: { _ in gr.1 })
        checkGradient("linear db", x: b, outputWeights: g, reduction: IN + 1, forward: { fwd(x, w, $0) }, gradient: { _ in gr.2 })
    }
}

extension SplitMix {
    /// A fresh array from a generator value (for one-off draws in expressions).
    func arrayCopy(_ n: Int) -> [Float] { var r = self; return r.array(n) }
}
