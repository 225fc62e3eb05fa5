import Foundation
import Testing
@testable import Remat

/// A training step in float64, written from the layers' definitions with direct loops and
/// none of Remat's kernels: the reference Remat's float32 gradients are measured against.
/// It reads the parameters in arena order (a container's layers in turn, a BasicBlock's main
/// path then its shortcut; weights then bias, BatchNorm's scale then shift) and writes each
/// parameter tensor's gradient at the same offsets.
final class Float64Reference {
    typealias Backward = ([Double]) -> [Double]
    let parameters: [Double]
    private(set) var gradients: [Double]
    /// Each parameter tensor's place in the arena, with the layer it belongs to.
    private(set) var tensors: [(name: String, range: Range<Int>)] = []
    private var next = 0

    init(_ model: Model) {
        parameters = model.parameters.map(Double.init)
        gradients = Array(repeating: 0, count: parameters.count)
    }

    /// The next `count` parameters, named for the reports.
    private func take(_ count: Int, _ name: String) -> Range<Int> {
        defer { next += count }
        tensors.append((name, next..<(next + count)))
        return next..<(next + count)
    }

    /// The mean softmax cross-entropy of the model on (images, labels); fills `gradients`.
    func step(_ model: Model, images: [Double], shape: [Int], labels: [Int32]) throws -> Double {
        var x = images, s = shape, backs: [Backward] = []
        for block in model.blocks {
            let (y, ys, back) = try run(block, x, s)
            (x, s) = (y, ys)
            backs.append(back)
        }
        let (n, k) = (s[0], s[1])
        var loss = 0.0, g = [Double](repeating: 0, count: n * k)
        for i in 0..<n {
            let row = x[(i * k)..<((i + 1) * k)], m = row.max()!
            let e = row.map { Foundation.exp($0 - m) }, z = e.reduce(0, +)
            loss -= Foundation.log(e[Int(labels[i])] / z) / Double(n)
            for j in 0..<k { g[i * k + j] = (e[j] / z - (j == Int(labels[i]) ? 1 : 0)) / Double(n) }
        }
        for back in backs.reversed() { g = back(g) }
        return loss
    }

    /// One layer forward: its output, the output's shape, and its backward pass.
    func run(_ layer: Layer, _ x: [Double], _ s: [Int]) throws -> ([Double], [Int], Backward) {
        switch layer {
        case let l as Sequential:
            var y = x, ys = s, backs: [Backward] = []
            for sub in l.layers {
                let r = try run(sub, y, ys)
                (y, ys) = (r.0, r.1)
                backs.append(r.2)
            }
            return (y, ys, { dy in backs.reversed().reduce(dy) { g, back in back(g) } })
        case let b as BasicBlock:
            let (m, ms, mainBack) = try run(b.main, x, s)
            let (sc, _, shortBack) = try b.shortcut.map { try run($0, x, s) } ?? (x, s, { $0 })
            let y = zip(m, sc).map { max($0 + $1, 0) }
            return (y, ms, { dy in
                let dsum = zip(dy, y).map { $1 > 0 ? $0 : 0 }
                return zip(mainBack(dsum), shortBack(dsum)).map { $0 + $1 }
            })
        case let c as Conv2D: return convolution(c, x, s)
        case let bn as BatchNorm2D: return batchNorm(bn, x, s)
        case is ReLU:
            let y = x.map { max($0, 0) }
            return (y, s, { dy in zip(dy, y).map { $1 > 0 ? $0 : 0 } })
        case let p as Pool2D: return pool(p, x, s)
        case is GlobalAvgPool:
            let (n, c, hw) = (s[0], s[1], s[2] * s[3])
            let y = (0..<(n * c)).map { i in x[(i * hw)..<((i + 1) * hw)].reduce(0, +) / Double(hw) }
            return (y, [n, c], { dy in (0..<(n * c * hw)).map { dy[$0 / hw] / Double(hw) } })
        case is Flatten:
            return (x, [s[0], s.dropFirst().reduce(1, *)], { $0 })
        case let l as Linear:
            let (n, i, o) = (s[0], l.inFeatures, l.outFeatures)
            let w = take(o * i, l.name + " weight"), b = take(o, l.name + " bias")
            var y = [Double](repeating: 0, count: n * o)
            for r in 0..<n {
                for j in 0..<o {
                    var acc = parameters[b.lowerBound + j]
                    for k in 0..<i { acc += x[r * i + k] * parameters[w.lowerBound + j * i + k] }
                    y[r * o + j] = acc
                }
            }
            return (y, [n, o], { [self] dy in
                var dx = [Double](repeating: 0, count: n * i)
                for r in 0..<n {
                    for j in 0..<o {
                        let g = dy[r * o + j]
                        gradients[b.lowerBound + j] += g
                        for k in 0..<i {
                            gradients[w.lowerBound + j * i + k] += g * x[r * i + k]
                            dx[r * i + k] += g * parameters[w.lowerBound + j * i + k]
                        }
                    }
                }
                return dx
            })
        default:
            throw RematError.invalidArgument("the float64 reference has no definition of \(layer.name)")
        }
    }

    private func convolution(_ c: Conv2D, _ x: [Double], _ s: [Int]) -> ([Double], [Int], Backward) {
        let (n, ci, h, w) = (s[0], s[1], s[2], s[3]), co = c.outChannels
        let (kr, ks) = c.kernel, (sh, sw) = c.stride, (ph, pw) = c.padding, (dh, dw) = c.dilation
        let p = (h + 2 * ph - dh * (kr - 1) - 1) / sh + 1, q = (w + 2 * pw - dw * (ks - 1) - 1) / sw + 1
        let wt = take(co * ci * kr * ks, c.name + " weight"), bias = c.hasBias ? take(co, c.name + " bias") : nil
        // every multiply-add y[b,k,i,j] += w[k,c,r,t] * x[b,c,ih,iw] once, its weight index and
        // the input and output offsets of row i (both passes walk the same taps)
        func taps(_ body: (_ wi: Int, _ xRow: Int, _ yRow: Int, _ iw0: Int) -> Void) {
            for b in 0..<n { for k in 0..<co { for c0 in 0..<ci { for r in 0..<kr { for t in 0..<ks {
                for i in 0..<p {
                    let ih = i * sh - ph + r * dh
                    if ih >= 0 && ih < h {
                        body(wt.lowerBound + ((k * ci + c0) * kr + r) * ks + t, ((b * ci + c0) * h + ih) * w,
                             ((b * co + k) * p + i) * q, t * dw - pw)
                    }
                }
            } } } } }
        }
        var y = [Double](repeating: 0, count: n * co * p * q)
        if let bias { for o in 0..<y.count { y[o] = parameters[bias.lowerBound + (o / (p * q)) % co] } }
        y.withUnsafeMutableBufferPointer { yv in
            taps { wi, xRow, yRow, iw0 in
                let wv = parameters[wi]
                for j in 0..<q where j * sw + iw0 >= 0 && j * sw + iw0 < w { yv[yRow + j] += wv * x[xRow + j * sw + iw0] }
            }
        }
        return (y, [n, co, p, q], { [self] dy in
            var dx = [Double](repeating: 0, count: x.count)
            if let bias { for o in 0..<dy.count { gradients[bias.lowerBound + (o / (p * q)) % co] += dy[o] } }
            dx.withUnsafeMutableBufferPointer { dxv in
                taps { wi, xRow, yRow, iw0 in
                    let wv = parameters[wi]
                    var dw = 0.0
                    for j in 0..<q where j * sw + iw0 >= 0 && j * sw + iw0 < w {
                        dw += dy[yRow + j] * x[xRow + j * sw + iw0]
                        dxv[xRow + j * sw + iw0] += dy[yRow + j] * wv
                    }
                    gradients[wi] += dw
                }
            }
            return dx
        })
    }

    private func batchNorm(_ bn: BatchNorm2D, _ x: [Double], _ s: [Int]) -> ([Double], [Int], Backward) {
        let (n, c, hw) = (s[0], s[1], s[2] * s[3]), m = Double(n * hw)
        let gamma = take(c, bn.name + " scale"), beta = take(c, bn.name + " shift")
        func index(_ b: Int, _ ch: Int, _ i: Int) -> Int { (b * c + ch) * hw + i }
        var xhat = [Double](repeating: 0, count: x.count), invstd = [Double](repeating: 0, count: c)
        for ch in 0..<c {
            var mean = 0.0, v = 0.0
            for b in 0..<n { for i in 0..<hw { mean += x[index(b, ch, i)] } }
            mean /= m
            for b in 0..<n { for i in 0..<hw { v += (x[index(b, ch, i)] - mean) * (x[index(b, ch, i)] - mean) } }
            invstd[ch] = 1 / (v / m + Double(bn.eps)).squareRoot()
            for b in 0..<n { for i in 0..<hw { xhat[index(b, ch, i)] = (x[index(b, ch, i)] - mean) * invstd[ch] } }
        }
        let y = xhat.indices.map { parameters[gamma.lowerBound + ($0 / hw) % c] * xhat[$0] + parameters[beta.lowerBound + ($0 / hw) % c] }
        return (y, s, { [self] dy in
            var dx = [Double](repeating: 0, count: x.count)
            for ch in 0..<c {
                var sdy = 0.0, sdyx = 0.0
                for b in 0..<n { for i in 0..<hw { sdy += dy[index(b, ch, i)]; sdyx += dy[index(b, ch, i)] * xhat[index(b, ch, i)] } }
                gradients[beta.lowerBound + ch] += sdy
                gradients[gamma.lowerBound + ch] += sdyx
                let k = parameters[gamma.lowerBound + ch] * invstd[ch]
                for b in 0..<n { for i in 0..<hw {
                    let o = index(b, ch, i)
                    dx[o] = k * (dy[o] - sdy / m - xhat[o] * sdyx / m)
                } }
            }
            return dx
        })
    }

    private func pool(_ l: Pool2D, _ x: [Double], _ s: [Int]) -> ([Double], [Int], Backward) {
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]), (k, st, pd) = (l.kernel, l.stride, l.padding)
        let p = (h + 2 * pd - k) / st + 1, q = (w + 2 * pd - k) / st + 1
        var y = [Double](repeating: 0, count: n * c * p * q), from = [[Int]](repeating: [], count: y.count)
        for plane in 0..<(n * c) { for i in 0..<p { for j in 0..<q {
            let o = (plane * p + i) * q + j
            for r in 0..<k { for t in 0..<k {
                let ih = i * st - pd + r, iw = j * st - pd + t
                if ih >= 0 && ih < h && iw >= 0 && iw < w { from[o].append((plane * h + ih) * w + iw) }
            } }
            if l.kind == .max {
                let winner = from[o].reduce(from[o][0]) { x[$1] > x[$0] ? $1 : $0 } // the first maximum
                (y[o], from[o]) = (x[winner], [winner])
            } else {
                y[o] = from[o].reduce(0) { $0 + x[$1] } / Double(k * k) // padding counts in the divisor
            }
        } } }
        return (y, [n, c, p, q], { dy in
            var dx = [Double](repeating: 0, count: x.count)
            for (o, inputs) in from.enumerated() {
                for i in inputs { dx[i] += l.kind == .max ? dy[o] : dy[o] / Double(k * k) }
            }
            return dx
        })
    }
}

@Suite("Whole models against a float64 reference")
struct Float64ReferenceTests {
    /// Every zoo model's parameter gradients after one training step (batch statistics,
    /// softmax cross-entropy) against the float64 reference: each parameter tensor within a
    /// relative error of 1e-4 (norm-wise). Float32 rounding over these depths stays well below
    /// that; a wrong sum, a dropped term or a misplaced index does not.
    @Test(arguments: ["lenet5", "resnet20", "vgg11", "plain-deep-4", "resnet56"])
    func gradientsMatchFloat64(model name: String) throws {
        let model = try Zoo.model(named: name, seed: 5), batch = 2
        let data = try SyntheticDataset(count: batch, imageShape: model.imageShape, classes: model.classes, seed: 9)
        let (x, y) = try data.batch(Array(0..<batch))
        model.zeroGradients()
        var (logits, saved) = try model.forward(x, ForwardContext(training: true, seed: 1, step: 0))
        let (loss, dlogits) = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: y)
        try model.backward(dlogits, &saved)
        let ours = model.parameterGradients.map(Double.init)

        let reference = Float64Reference(model)
        let referenceLoss = try reference.step(model, images: x.scalars.map(Double.init), shape: x.shape.dims, labels: y)
        #expect(reference.tensors.last?.range.upperBound == ours.count, "\(name): the reference read every parameter")
        #expect(abs(Double(loss) - referenceLoss) <= 1e-5 * referenceLoss, "\(name): loss \(loss) against \(referenceLoss)")
        for (tensor, range) in reference.tensors {
            let want = reference.gradients[range], got = ours[range]
            let norm = want.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let error = zip(got, want).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            #expect(error <= 1e-4 * norm, "\(name) \(tensor): relative error \(error / norm)")
        }
    }
}
