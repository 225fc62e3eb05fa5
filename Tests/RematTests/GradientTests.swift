import Testing
@testable import Remat

/// Finite differences of whole models: (1) along the parameter gradient itself, u = g / |g|,
/// the loss's slope must equal |g| (a scale error anywhere in g shows); (2) along a random
/// direction of the head's parameters. Steps move the loss by about 1 %, so float rounding
/// of the loss (~1e-6 relative) stays far below the 2 % tolerance, which covers the curvature
/// over the step and the ReLU and max-pool kinks it may cross. Errors orthogonal to g need
/// random directions, which a float loss cannot resolve over a whole model: each block's
/// input gradient is checked that way below (checkBlockGradients), and each layer's
/// parameter gradient by the kernel tests.
func checkModelGradient(_ model: Model, batch: Int, seed: UInt64 = 3, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let data = try SyntheticDataset(count: batch, imageShape: model.imageShape, classes: model.classes, seed: seed)
    let (x, y) = try data.batch(Array(0..<batch))
    let context = ForwardContext(training: true, seed: 1, step: 0)
    func loss(_ params: [Float]) throws -> Double {
        model.parameters = params
        let (logits, _) = try model.forward(x, context)
        return Double(try SoftmaxCrossEntropy.evaluate(logits: logits, labels: y).loss)
    }
    let p0 = model.parameters
    model.zeroGradients()
    var (logits, saved) = try model.forward(x, context)
    let (l0, dlogits) = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: y)
    try model.backward(dlogits, &saved)
    let g = model.parameterGradients.map(Double.init)
    let norm = g.reduce(0) { $0 + $1 * $1 }.squareRoot()
    #expect(norm > 1e-3, "\(model.name): gradient norm \(norm) too small to test", sourceLocation: sourceLocation)
    // along the gradient
    let h = 0.01 * Double(l0) / norm
    let plus = try loss(zip(p0, g).map { $0 + Float(h * $1 / norm) })
    let minus = try loss(zip(p0, g).map { $0 - Float(h * $1 / norm) })
    let slope = (plus - minus) / (2 * h)
    #expect(abs(slope - norm) <= 0.02 * norm,
            "\(model.name): slope along the gradient \(slope), gradient norm \(norm)", sourceLocation: sourceLocation)
    // along a random direction of the last block's parameters (the head)
    let headCount = model.blocks.last!.parameterCount, start = p0.count - headCount
    var rng = SeededGenerator(seed: seed)
    var v = [Double](repeating: 0, count: p0.count)
    for i in start..<p0.count { v[i] = rng.next() & 1 == 0 ? 1 : -1 }
    let gv = zip(g, v).reduce(0.0) { $0 + $1.0 * $1.1 }
    let hv = 1.0 / 256
    let vplus = try loss(zip(p0, v).map { $0 + Float(hv * $1) }), vminus = try loss(zip(p0, v).map { $0 - Float(hv * $1) })
    model.parameters = p0
    let vslope = (vplus - vminus) / (2 * hv)
    let headNorm = g[start...].reduce(0) { $0 + $1 * $1 }.squareRoot()
    #expect(abs(vslope - gv) <= 0.02 * abs(gv) + 1e-3 * headNorm,
            "\(model.name): slope along a head direction \(vslope) vs \(gv)", sourceLocation: sourceLocation)
}

/// A block's input gradient against finite differences: L(x) = sum_i w_i f(x)_i with random
/// weights w, along a random +-1 direction v (step 2^-7); the slope must equal <dx, v>.
/// Small blocks keep every reduction short, so the rounding bound gamma(reduction) sum|w f| / h
/// stays below the signal; 5 % covers BN's curvature over the step and the ReLU kinks inside
/// it (a dropped shortcut gradient is off by 30 % to 3000 %). This checks a block's wiring: residual adds, shortcut gradients, saved tensors.
func checkBlockInputGradient(_ block: Layer, input: Shape, seed: UInt64 = 17,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
    let slot = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, 2 * block.parameterCount))
    defer { slot.deallocate() }
    slot.initialize(repeating: 0)
    block.bind(ParameterSlot(values: slot.baseAddress!, gradients: slot.baseAddress! + block.parameterCount,
                             count: block.parameterCount))
    var rng = SeededGenerator(seed: seed)
    block.initialize(&rng)
    let context = ForwardContext(training: true, seed: 1, step: 0)
    let xs = (0..<input.count).map { _ in rng.uniform(-1, 1) }
    let x = try Tensor(shape: input, values: xs)
    let (y, saved) = try block.forward(x, context)
    let w = (0..<y.shape.count).map { _ in rng.uniform(-1, 1) }
    let dx = try block.backward(try Tensor(shape: y.shape, values: w), saved).scalars
    let h: Float = 1.0 / 128
    let v: [Float] = xs.map { _ in rng.next() & 1 == 0 ? 1 : -1 }
    func functional(_ sign: Float) throws -> (Double, Double) {
        let f = try block.forward(try Tensor(shape: input, values: zip(xs, v).map { $0 + sign * h * $1 }), context).0.scalars
        var l = 0.0, mag = 0.0
        for i in 0..<f.count { l += Double(w[i]) * Double(f[i]); mag += abs(Double(w[i]) * Double(f[i])) }
        return (l, mag)
    }
    let (lp, mp) = try functional(1), (lm, mm) = try functional(-1)
    let numeric = (lp - lm) / (2 * Double(h))
    let analytic = zip(dx, v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    let reduction = 2 * 9 * input.dims[1] + 4 // two convs deep, plus BN and the add
    let tolerance = 2 * Double(reduction) * 6e-8 * max(mp, mm) / Double(h) + 0.05 * abs(analytic)
    #expect(abs(numeric - analytic) <= tolerance,
            "\(block.name): slope \(numeric) vs backward \(analytic) (tolerance \(tolerance))", sourceLocation: sourceLocation)
    #expect(tolerance < 0.2 * abs(analytic), "\(block.name): tolerance \(tolerance) too loose against \(analytic)",
            sourceLocation: sourceLocation)
}

@Suite("Gradients of layers and models against finite differences")
struct GradientTests {
    /// The residual block with an identity and with a projection shortcut.
    @Test func basicBlockWiring() throws {
        try checkBlockInputGradient(BasicBlock(3, 3), input: Shape(2, 3, 5, 5))
        try checkBlockInputGradient(BasicBlock(2, 4, stride: 2), input: Shape(2, 2, 6, 6))
    }

    /// A backward pass given its output gradient to write over computes the same bits (input
    /// and parameter gradients) as one that must leave it alone, which does; over it, a
    /// residual block's peak is one activation lower, and so is a conv-BN-ReLU-max-pool
    /// block's (its BatchNorm input's size: the gradient goes over that record). Identity and
    /// projection shortcuts, a second BatchNorm scale of 0 (the backward from conv2's input),
    /// and containers.
    @Test(arguments: ["identity", "projection", "zero scale", "sequential", "pooled"])
    func inPlaceBackwardIsTheSameArithmetic(_ kind: String) throws {
        let (block, input): (Layer, Shape) = switch kind {
        case "projection": (BasicBlock(3, 6, stride: 2), Shape(4, 3, 10, 10))
        case "sequential": (Sequential([Conv2D(3, 5, kernel: 3, padding: 1), BatchNorm2D(5), ReLU()]), Shape(4, 3, 9, 9))
        case "pooled": (Sequential([Conv2D(3, 5, kernel: 3, padding: 1), BatchNorm2D(5), ReLU(), Pool2D.max2x2()]), Shape(4, 3, 10, 10))
        default: (BasicBlock(5, 5), Shape(4, 5, 9, 9))
        }
        let slot = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * block.parameterCount)
        defer { slot.deallocate() }
        slot.initialize(repeating: 0)
        block.bind(ParameterSlot(values: slot.baseAddress!, gradients: slot.baseAddress! + block.parameterCount, count: block.parameterCount))
        var rng = SeededGenerator(seed: 5)
        block.initialize(&rng)
        if kind == "zero scale", let b = block as? BasicBlock { // bn2, the main path's last layer: its scale first
            let bn2 = b.main.layers[4] as! BatchNorm2D, start = b.main.parameterCount - bn2.parameterCount
            for c in 0..<bn2.channels { slot[start + c] = 0 }
        }
        let context = ForwardContext(training: true, seed: 1, step: 0)
        let x = try Tensor(shape: input, values: (0..<input.count).map { _ in rng.uniform(-1, 1) })
        let account = MemoryAccount()
        try account.withCurrent {
            let (y, saved) = try block.forward(x, context)
            let dyValues = (0..<y.shape.count).map { _ in rng.uniform(-1, 1) }
            let gradients = { Array(slot[block.parameterCount...]) }
            func run(owned: Bool) throws -> (dx: [Float], dy: [Float], gradients: [Float], peak: Int) {
                let dy = try Tensor(shape: y.shape, values: dyValues)
                account.resetPeak()
                let before = account.liveBytes
                let dx = try block.backward(dy, saved, owned: owned).scalars
                return (dx, dy.scalars, gradients(), account.peakBytes - before)
            }
            let kept = try run(owned: false)
            #expect(kept.dy == dyValues, "\(kind): the caller's gradient left alone")
            let over = try run(owned: true)
            #expect(over.dx.map(\.bitPattern) == kept.dx.map(\.bitPattern), "\(kind): input gradients")
            // the second pass added the same gradients again: exactly twice the first's
            #expect(over.gradients.map(\.bitPattern) == kept.gradients.map { ($0 * 2).bitPattern }, "\(kind): parameter gradients")
            if kind != "sequential" { // what goes over: dy, or in the pooled block the BatchNorm's input
                let spared = kind == "pooled" ? saved.children[1].tensors[0].accountBytes : y.accountBytes
                #expect(over.peak + spared <= kept.peak, "\(kind): peaks \(over.peak) over dy, \(kept.peak) beside it")
            }
        }
    }

    @Test func lenet5() throws {
        try checkModelGradient(try Zoo.lenet5(seed: 1), batch: 3)
    }
    @Test func resnet20() throws {
        try checkModelGradient(try Zoo.resnet(blocksPerStage: 3, seed: 2), batch: 2)
    }
    @Test func vgg11() throws {
        try checkModelGradient(try Zoo.vgg11(seed: 3), batch: 2)
    }
    @Test func plainDeep() throws {
        try checkModelGradient(try Zoo.plainDeep(depth: 4, seed: 4), batch: 2)
    }

    /// Every layer type, including the ones the zoo does not use (average pooling, dropout),
    /// inside a small model: conv with stride and dilation, BN, pools, dropout, linear.
    @Test func everyLayerType() throws {
        let model = try Model(name: "all-layers", imageShape: Shape(2, 9, 9), blocks: [
            Sequential([Conv2D(2, 4, kernel: 3, stride: 1, padding: 2, dilation: 2), BatchNorm2D(4), ReLU()]),
            Sequential([Pool2D(.average, kernel: 3, stride: 2, padding: 1), Conv2D(4, 6, kernel: 1, stride: 2)]),
            Sequential([Pool2D(.max, kernel: 2, stride: 1), Dropout(0.25)]),
            BasicBlock(6, 6),
            Sequential([Flatten(), Linear(6 * 2 * 2, 5)]),
        ], seed: 9)
        try checkModelGradient(model, batch: 3)
    }
}
