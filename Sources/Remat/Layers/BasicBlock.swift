import RematKernels

/// He et al.'s CIFAR ResNet BasicBlock: conv3x3, BN, ReLU, conv3x3, BN, plus the shortcut
/// (identity, or conv1x1 + BN when the stride or the channel count changes), then ReLU.
///
/// Its second BatchNorm is differentiated from the sum u = BN(c2) + shortcut that the block
/// keeps (BN's output is u - shortcut), not from its input c2, so the block keeps u in place
/// of c2 and its output: the ReLU's mask is u's sign and the next block's input is relu(u).
/// Every policy uses that backward, so they agree to the bit. A step whose BatchNorm scale
/// is too small to divide by (`BatchNorm2D.invertible`) keeps no more: its backward pass
/// runs conv2 again on conv2's kept input and differentiates BatchNorm from that c2, so a
/// plan's predicted peak holds for any scale.
public final class BasicBlock: Layer, OutputFromStash {
    /// Channels in and out, and the stride of its first convolution (and shortcut).
    public let inChannels: Int, outChannels: Int, stride: Int
    let main: Sequential // conv1, bn1, ReLU, conv2, bn2
    let shortcut: Sequential? // nil: identity
    let relu = ReLU()
    private let conv1: Conv2D, bn1: BatchNorm2D, conv2: Conv2D, bn2: BatchNorm2D

    /// A block from `inChannels` to `outChannels`; a projection shortcut when the stride or the
    /// channel count changes.
    public init(_ inChannels: Int, _ outChannels: Int, stride: Int = 1) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.stride = stride
        conv1 = Conv2D(inChannels, outChannels, kernel: 3, stride: stride, padding: 1, bias: false)
        bn1 = BatchNorm2D(outChannels)
        conv2 = Conv2D(outChannels, outChannels, kernel: 3, padding: 1, bias: false)
        bn2 = BatchNorm2D(outChannels)
        main = Sequential([conv1, bn1, ReLU(), conv2, bn2])
        shortcut = stride != 1 || inChannels != outChannels
            ? Sequential([Conv2D(inChannels, outChannels, kernel: 1, stride: stride, bias: false), BatchNorm2D(outChannels)])
            : nil
    }

    public var name: String {
        "basicblock \(inChannels)->\(outChannels)" + (stride > 1 ? " s\(stride)" : "") + (shortcut != nil ? " proj" : "")
    }
    public var parameterCount: Int { main.parameterCount + (shortcut?.parameterCount ?? 0) }
    public var sublayers: [Layer] { [main] + (shortcut.map { [$0] } ?? []) + [relu] }

    public func bind(_ slot: ParameterSlot) {
        main.bind(slot.slice(0, main.parameterCount))
        shortcut?.bind(slot.slice(main.parameterCount, shortcut!.parameterCount))
    }

    public func initialize(_ rng: inout SeededGenerator) {
        main.initialize(&rng)
        shortcut?.initialize(&rng)
    }

    public func outputShape(for input: Shape) throws -> Shape {
        let out = try main.outputShape(for: input)
        if let sc = shortcut, try sc.outputShape(for: input) != out {
            throw RematError.shape("\(name): shortcut and main path disagree on \(input)")
        }
        return out
    }

    public func forwardFLOPs(for input: Shape) -> Int {
        main.forwardFLOPs(for: input) + (shortcut?.forwardFLOPs(for: input) ?? 0)
    }

    /// relu(main(x) + shortcut(x)), the same (N, C, H, W) or, strided, (N, 2C, H/2, W/2).
    /// Records: the main path's layers (bn2's: its inverse deviation alone when invertible,
    /// else its batch mean too), the shortcut's, and the sum. Keeping the minimum
    /// (`ForwardContext.keepsMinimum`), the stash gets conv1's and the projection's outputs,
    /// bn2's record and the sum, and a rebuild from it skips conv2 and bn2; a lean stash
    /// (`rerunsFirstConvolution`) leaves conv1's output out, and its rebuild runs conv1 again.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        guard context.training else {
            let m = try main.forward(x, context).0, sc = try shortcut?.forward(x, context).0 ?? x
            let y = Tensor(uninitialized: m.shape)
            kn_add_relu(y.pointer, m.pointer, sc.pointer, m.shape.count)
            return (y, Saved()) // evaluation keeps nothing: there is no backward pass
        }
        // bn2's record: its inverse deviation, and its mean where c2 must be rebuilt
        let bn2Kept = bn2.invertible ? 1 : 2, minimal = context.keepsMinimum
        var first = context // a lean stash keeps no output of conv1: its rebuild runs it again
        if minimal && context.rerunsFirstConvolution { first.stash = nil }
        let (c1, conv1Saved) = try conv1.forward(x, first)
        let (r1, bn1Saved, reluSaved) = try bn1.forwardWithReLU(c1, context)
        var inner = context // conv2 and bn2: nothing of theirs in a minimal stash or its statistics
        if minimal { (inner.stash, inner.statistics) = (nil, nil) }
        if minimal, let stash = context.stash, stash.replaying {
            let shortcutSaved = try shortcut?.forward(x, context).1 ?? Saved()
            let bn2Saved = Saved(tensors: (0..<bn2Kept).map { _ in stash.replayed()! }), sum = stash.replayed()!
            let mainSaved = Saved(children: [conv1Saved, bn1Saved, reluSaved, Saved(tensors: [r1]), bn2Saved])
            // a rebuild's output goes unused (the next block has its input, `outputFromStash`):
            // the sum stands in for relu(sum), saving a pass over it
            return (sum, Saved(children: [mainSaved, shortcutSaved, Saved(tensors: [sum])]))
        }
        let (c2, conv2Saved) = try conv2.forward(r1, inner)
        let (sc, shortcutSaved) = try shortcut?.forward(x, context) ?? (x, Saved())
        let (sum, y, bn2Full) = try bn2.forwardAddReLU(c2, shortcut: sc, inner) // bn2's output is never written
        let bn2Saved = Saved(tensors: Array(bn2Full.tensors.suffix(bn2Kept))) // never c2
        if minimal, let stash = context.stash {
            bn2Saved.tensors.forEach(stash.record)
            stash.record(sum)
        }
        let mainSaved = Saved(children: [conv1Saved, bn1Saved, reluSaved, conv2Saved, bn2Saved])
        return (y, Saved(children: [mainSaved, shortcutSaved, Saved(tensors: [sum])]))
    }

    /// Back-propagates through both paths and adds their input gradients.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor { try backward(dy, saved, overwriting: false) }

    /// The same arithmetic with d(sum) written over dy: one activation's bytes fewer at the
    /// backward pass's peak.
    func backward(overwriting dy: Tensor, _ saved: Saved) throws -> Tensor { try backward(dy, saved, overwriting: true) }

    /// The shortcut's input gradient comes first and conv1's is added onto it, so no third
    /// gradient of the input's size is live beside those two.
    private func backward(_ dy: Tensor, _ saved: Saved, overwriting: Bool) throws -> Tensor {
        guard saved.children.count == 3 else {
            throw RematError.invalidArgument("\(name): backward needs a training-mode forward")
        }
        let mainSaved = saved.children[0], shortcutSaved = saved.children[1], sum = saved.children[2].tensors[0]
        let bn2Saved = mainSaved.children[4]
        let dsum: Tensor, dc2: Tensor
        if bn2Saved.tensors.count == 1 { // from the sum: bn2's output is the sum less the shortcut
            let sc = try shortcut.map { try ($0.layers[1] as! BatchNorm2D).output(from: shortcutSaved.children[1]) }
                ?? mainSaved.children[0].tensors[0] // identity: the block's input, conv1's record
            (dsum, dc2) = try bn2.residualBackward(dy, sum: sum, shortcut: sc, invstd: bn2Saved.tensors[0], overwriting: overwriting)
        } else { // a scale too small to divide by: c2 again from conv2's input, the forward's bits
            let c2 = try conv2.forward(mainSaved.children[3].tensors[0], ForwardContext(training: true)).0
            dsum = try relu.backward(dy, Saved(tensors: [sum]), owned: overwriting) // the sum has the output's sign
            dc2 = try bn2.backward(dsum, Saved(tensors: [c2] + bn2Saved.tensors))
        }
        var g = dc2
        for i in (1...3).reversed() { g = try main.layers[i].backward(g, mainSaved.children[i], owned: true) } // dc2 is ours
        let dx = try shortcut?.backward(dsum, shortcutSaved, owned: true) ?? dsum // dsum is ours either way
        return try conv1.backward(g, mainSaved.children[0], addingTo: dx)
    }

    /// Keeping the minimum, its output is relu of the sum its stash ends with.
    func rebuildsOutputFromStash(minimal: Bool) -> Bool { minimal }

    func stashRebuildFLOPs(for input: Shape, _ kind: BlockChoice) -> Int {
        kind == .lean ? conv1.forwardFLOPs(for: input) : 0
    }

    func outputFromStash(_ stash: ActivationStash, _ context: ForwardContext) throws -> Tensor? {
        guard context.keepsMinimum, let sum = stash.tensors.last else { return nil }
        let y = Tensor(uninitialized: sum.shape)
        kn_relu_forward(y.pointer, sum.pointer, sum.shape.count)
        return y
    }
}

extension BasicBlock: BackwardInPlace {}
