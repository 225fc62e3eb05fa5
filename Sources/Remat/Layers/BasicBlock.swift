import RematKernels

/// He et al.'s CIFAR ResNet BasicBlock: conv3x3, BN, ReLU, conv3x3, BN, plus the shortcut
/// (identity, or conv1x1 + BN when the stride or the channel count changes), then ReLU.
public final class BasicBlock: Layer {
    /// Channels in and out, and the stride of its first convolution (and shortcut).
    public let inChannels: Int, outChannels: Int, stride: Int
    let main: Sequential
    let shortcut: Sequential? // nil: identity
    let relu = ReLU()

    /// A block from `inChannels` to `outChannels`; a projection shortcut when the stride or the
    /// channel count changes.
    public init(_ inChannels: Int, _ outChannels: Int, stride: Int = 1) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.stride = stride
        main = Sequential([
            Conv2D(inChannels, outChannels, kernel: 3, stride: stride, padding: 1, bias: false),
            BatchNorm2D(outChannels), ReLU(),
            Conv2D(outChannels, outChannels, kernel: 3, padding: 1, bias: false), BatchNorm2D(outChannels),
        ])
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

    /// relu(main(x) + shortcut(x)), the same (N, C, H, W) or, strided, (N, 2C, H/2, W/2); keeps every
    /// layer's record.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let (m, ms) = try main.forward(x, context)
        let (sc, ss) = try shortcut?.forward(x, context) ?? (x, Saved())
        let y = Tensor(uninitialized: m.shape) // the add and the ReLU in one pass
        kn_add_relu(y.pointer, m.pointer, sc.pointer, m.shape.count)
        return (y, Saved(children: [ms, ss, Saved(tensors: [y])])) // the ReLU's record: its output
    }

    /// Back-propagates through both paths and adds their input gradients.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        let dsum = try relu.backward(dy, saved.children[2])
        let dx = try main.backward(dsum, saved.children[0])
        let dshort = try shortcut?.backward(dsum, saved.children[1]) ?? dsum
        kn_accumulate(dx.pointer, dshort.pointer, dx.shape.count) // dx is ours: the main path made it
        return dx
    }
}
