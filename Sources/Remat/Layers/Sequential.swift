/// Layers run one after another: the usual block of a chain (conv, BN, ReLU, pool).
public final class Sequential: Layer, OutputFromStash {
    /// The layers, in the order they run.
    public let layers: [Layer]
    /// The name given at creation, if any.
    public let label: String?

    /// Layers run in order; `name` replaces the joined layer names in plans and traces.
    public init(_ layers: [Layer], name: String? = nil) {
        self.layers = layers
        label = name
    }

    public var name: String { label ?? layers.map(\.name).joined(separator: ", ") }
    public var sublayers: [Layer] { layers }
    /// Its first layer's: the only one that sees its input.
    public var needsInputGradient: Bool {
        get { layers.first?.needsInputGradient ?? true }
        set { layers.first?.needsInputGradient = newValue }
    }
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

    public func bind(_ slot: ParameterSlot) {
        var offset = 0
        for l in layers {
            l.bind(slot.slice(offset, l.parameterCount))
            offset += l.parameterCount
        }
    }

    public func initialize(_ rng: inout SeededGenerator) { for l in layers { l.initialize(&rng) } }

    public func outputShape(for input: Shape) throws -> Shape {
        try layers.reduce(input) { try $1.outputShape(for: $0) }
    }

    public func forwardFLOPs(for input: Shape) -> Int {
        var shape = input, total = 0
        for l in layers {
            total += l.forwardFLOPs(for: shape)
            guard let next = try? l.outputShape(for: shape) else { return total }
            shape = next
        }
        return total
    }

    /// Runs the layers in order; keeps each one's record. In training, a BatchNorm followed by
    /// a ReLU runs as one pass, and so does one followed by a ReLU and a max pool (the same
    /// bits and records; the normalised tensor is never written whole).
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        var y = x, saved = Saved(), i = 0
        while i < layers.count {
            if context.training, let bn = layers[i] as? BatchNorm2D, let pool = maxPoolAfterReLU(at: i + 1) {
                let (out, bnSaved, poolSaved) = try bn.forwardWithReLUAndMaxPool(y, pool, context)
                saved.children += [bnSaved, Saved(), poolSaved]
                y = out
                i += 3
                continue
            }
            if context.training, let bn = layers[i] as? BatchNorm2D, i + 1 < layers.count, layers[i + 1] is ReLU {
                let (out, bnSaved, reluSaved) = try bn.forwardWithReLU(y, context)
                saved.children += [bnSaved, reluSaved]
                y = out
                i += 2
                continue
            }
            var (out, s) = try layers[i].forward(y, context)
            // a ReLU right before a max pool keeps nothing: the pool masks by its output instead
            if context.training, i > 0, layers[i - 1] is ReLU, let pool = layers[i] as? Pool2D, pool.recordsWinners {
                s = pool.masking(s, output: out)
                saved.children[saved.children.count - 1] = Saved()
            }
            saved.children.append(s)
            y = out
            i += 1
        }
        return (y, saved)
    }

    /// Back-propagates through the layers in reverse, in place over gradients its own layers
    /// made (never over the caller's dy).
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor { try backward(dy, saved, ownsDy: false) }

    /// The same, in place over dy too.
    func backward(overwriting dy: Tensor, _ saved: Saved) throws -> Tensor { try backward(dy, saved, ownsDy: true) }

    /// A BatchNorm, ReLU and max pool run as one pass backward too; given the record, over the
    /// BatchNorm's input where a convolution made it (nothing else holds that).
    private func backward(_ dy: Tensor, _ saved: Saved, ownsDy: Bool) throws -> Tensor {
        var g = dy, i = layers.count - 1
        while i >= 0 {
            if i >= 2, let pool = maxPoolAfterReLU(at: i - 1), let bn = layers[i - 2] as? BatchNorm2D,
               saved.children[i].tensors.count == 2, saved.children[i - 1].tensors.isEmpty { // masked by its output
                g = try bn.reluMaxPoolBackward(g, saved.children[i - 2], pool: pool, poolSaved: saved.children[i],
                                               overwritingInput: ownsDy && i >= 3 && layers[i - 3] is Conv2D)
                i -= 3
                continue
            }
            g = try layers[i].backward(g, saved.children[i], owned: ownsDy || g.storageID != dy.storageID)
            i -= 1
        }
        return g
    }

    /// The max pool recording its winners at i + 1 when layer i is a ReLU.
    private func maxPoolAfterReLU(at i: Int) -> Pool2D? {
        guard i + 1 < layers.count, layers[i] is ReLU, let pool = layers[i + 1] as? Pool2D, pool.recordsWinners else { return nil }
        return pool
    }

    /// Selective recomputation: the block's output rebuilt from its stash alone (the last
    /// expensive layer's recorded output, through the cheap layers after it), or nil when the
    /// block has no expensive layer of its own to start from (its output must then be kept).
    func outputFromStash(_ stash: ActivationStash, _ context: ForwardContext) throws -> Tensor? {
        guard rebuildsOutputFromStash(minimal: false), let k = layers.lastIndex(where: { $0 is ExpensiveLayer }),
              let last = stash.tensors.last else { return nil }
        var y = last
        for l in layers[(k + 1)...] { y = try l.forward(y, context).0 }
        return y
    }

    /// Whether the output is a function of the last expensive layer's output alone.
    func rebuildsOutputFromStash(minimal: Bool) -> Bool {
        guard let k = layers.lastIndex(where: { $0 is ExpensiveLayer }) else { return false }
        return !layers[(k + 1)...].flatMap(Model.leaves(of:)).contains { $0 is ExpensiveLayer }
    }
}

/// Selective recomputation: a block that can rebuild its output from its stash, so the block
/// after it need not keep its input.
protocol OutputFromStash: Layer {
    /// Whether its stash (a minimal one, or selective's) holds what its output is rebuilt from.
    func rebuildsOutputFromStash(minimal: Bool) -> Bool
    func outputFromStash(_ stash: ActivationStash, _ context: ForwardContext) throws -> Tensor?
    /// Forward FLOPs for one input of this shape that a rebuild from the stash of `kind`
    /// redoes (the layers it runs again besides the cheap ones).
    func stashRebuildFLOPs(for input: Shape, _ kind: BlockChoice) -> Int
}

extension OutputFromStash {
    func stashRebuildFLOPs(for input: Shape, _ kind: BlockChoice) -> Int { 0 }
}

extension Sequential: BackwardInPlace {}
