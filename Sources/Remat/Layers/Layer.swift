/// One operation of a network with an explicit forward and backward pass.
///
/// A forward pass returns its output and what its backward pass will need (`Saved`); a
/// checkpointing engine can drop that and recompute it. Backward passes accumulate into the
/// parameter gradients (the model zeroes them once per step) and return the input gradient.
/// Shapes are batch first: (N, C, H, W) or (N, F).
public protocol Layer: AnyObject {
    /// A short description, e.g. "conv3x3 16->32 s2 p1".
    var name: String { get }
    /// The output shape for an input shape; throws with a clear message if the input cannot fit.
    func outputShape(for input: Shape) throws -> Shape
    /// Floats of trainable parameters.
    var parameterCount: Int { get }
    /// Gives the layer its views into the model's parameter and gradient arenas.
    func bind(_ slot: ParameterSlot)
    /// PyTorch's default initialisation, from the model's seeded generator.
    func initialize(_ rng: inout SeededGenerator)
    func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved)
    func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor
    /// Forward FLOPs for one input of this shape (multiply-add = 2; conv and linear only).
    func forwardFLOPs(for input: Shape) -> Int
    /// A container's layers, in order (the model finds dropouts and buffers through them);
    /// empty for a leaf.
    var sublayers: [Layer] { get }
    /// State kept across steps besides the parameters, saved and restored with them and
    /// broadcast between ranks (BatchNorm's running statistics), by name; each name's values
    /// are stored concatenated over the model's layers in order.
    var buffers: [String: [Float]] { get set }
    /// Whether the backward pass must return the input gradient. The model sets it to false
    /// on its first block when the images need no gradient; a layer may then skip that work.
    var needsInputGradient: Bool { get set }
}

extension Layer {
    public var parameterCount: Int { 0 }
    public func bind(_ slot: ParameterSlot) {}
    public func initialize(_ rng: inout SeededGenerator) {}
    public func forwardFLOPs(for input: Shape) -> Int { 0 }
    public var sublayers: [Layer] { [] }
    public var buffers: [String: [Float]] {
        get { [:] }
        set {}
    }
    public var needsInputGradient: Bool {
        get { true }
        set {}
    }
}

/// A layer whose output selective recomputation keeps (convolutions, linear): recomputing
/// it would cost real work, unlike BatchNorm, ReLU or pooling. It records its output in the
/// context's stash and hands it back when rebuilt; layers written outside the library are
/// rebuilt like cheap ones, which is exact.
protocol ExpensiveLayer: Layer {}

/// A layer whose backward pass can write over the output gradient when the caller gives it
/// up (with the input gradient where the shapes agree, else with its own intermediates),
/// saving an allocation. The arithmetic is the same either way, so are the bits.
protocol BackwardInPlace: Layer {
    func backward(overwriting dy: Tensor, _ saved: Saved) throws -> Tensor
}

extension Layer {
    /// The backward pass, in place where the layer can and `owned` says the caller gives dy up.
    func backward(_ dy: Tensor, _ saved: Saved, owned: Bool) throws -> Tensor {
        if owned, let l = self as? BackwardInPlace { return try l.backward(overwriting: dy, saved) }
        return try backward(dy, saved)
    }
}

/// A layer whose output depends on random numbers (dropout): the model gives each one its own
/// stream, and its forward pass derives them from (the context's seed and step, the stream),
/// so that a recompute draws the same ones.
public protocol StochasticLayer: Layer {
    var stream: UInt64 { get set }
}

/// A layer's views into the model's two arenas: its parameters and their gradients.
public struct ParameterSlot {
    /// The layer's parameters; its backward pass adds to `gradients` (zeroed once a step).
    public let values: UnsafeMutablePointer<Float>
    public let gradients: UnsafeMutablePointer<Float>
    public let count: Int

    /// The sub-slot [offset, offset + count): a container's share for each of its layers.
    public func slice(_ offset: Int, _ count: Int) -> ParameterSlot {
        precondition(offset + count <= self.count, "parameter slot overflow")
        return ParameterSlot(values: values + offset, gradients: gradients + offset, count: count)
    }
}

/// What a forward pass kept for its backward pass. Dropping it frees that memory.
public struct Saved {
    /// Tensors the backward pass reads.
    public var tensors: [Tensor]
    /// Shapes it needs without their values.
    public var shapes: [Shape]
    /// A container's: one record per layer it ran.
    public var children: [Saved]
    /// A random stream's seed (dropout regenerates its mask from it).
    public var seed: UInt64

    public init(tensors: [Tensor] = [], shapes: [Shape] = [], children: [Saved] = [], seed: UInt64 = 0) {
        (self.tensors, self.shapes, self.children, self.seed) = (tensors, shapes, children, seed)
    }

    /// Bytes of tensor storage this record keeps alive (shared storage counted once per record).
    public var bytes: Int { storages.values.reduce(0, +) }

    /// The storages this record keeps alive, each with its bytes.
    var storages: [ObjectIdentifier: Int] {
        var out: [ObjectIdentifier: Int] = [:]
        collect(&out)
        return out
    }
    private func collect(_ out: inout [ObjectIdentifier: Int]) {
        for t in tensors { out[t.storageID] = t.accountBytes }
        for c in children { c.collect(&out) }
    }
}

/// Tensors a forward pass computed, in the order it computed them, handed back in that order
/// when the pass runs again. Two uses: selective recomputation's record of a block (the
/// outputs of its expensive layers, convolutions and linear, so only the cheap ones run
/// twice), and a checkpointed segment's BatchNorm batch statistics (so its recompute skips
/// their reduction).
final class ActivationStash: @unchecked Sendable { // used by one thread at a time
    private(set) var tensors: [Tensor] = []
    private var cursor: Int?

    /// Expensive layers call this with the output they would compute; it returns the
    /// recorded output when replaying, nil when recording (the layer then computes and
    /// records it).
    func replayed() -> Tensor? {
        guard let c = cursor else { return nil }
        cursor = c + 1
        return tensors[c]
    }

    func record(_ t: Tensor) { if cursor == nil { tensors.append(t) } }

    /// Whether it hands back recorded tensors (a rebuild) rather than recording.
    var replaying: Bool { cursor != nil }

    /// Switches from recording to replaying, from the first recorded output.
    func rewind() { cursor = 0 }
}

/// How a forward pass runs.
public struct ForwardContext: Sendable {
    /// Training (batch statistics, dropout) or evaluation (running statistics, no dropout).
    public var training: Bool
    /// BatchNorm updates its running statistics (false for a checkpoint recompute).
    public var updateRunningStatistics: Bool
    /// Dropout masks are a pure function of (seed, step, layer): a recompute gets the same.
    public var seed: UInt64
    /// The training step (part of the dropout masks' seed).
    public var step: Int
    /// Selective recomputation: expensive layers record or replay their outputs here.
    var stash: ActivationStash?
    /// A checkpointed segment, or a block with a stash: BatchNorm records its batch statistics
    /// here in the forward pass and takes them back in the recompute (the same bits a second reduction gives).
    var statistics: ActivationStash?
    /// With `stash`: blocks keep the least their backward passes need (a block that can
    /// differentiate from a kept sum stashes it instead of the convolution output before it).
    var keepsMinimum = false
    /// With `keepsMinimum`: a block that can run its first convolution again from its input
    /// keeps not even that convolution's output (`BlockChoice.lean`).
    var rerunsFirstConvolution = false

    /// Blocks keep the stash of `kind` (selective, minimal or lean).
    mutating func keepStash(_ kind: BlockChoice?) {
        keepsMinimum = kind?.keepsMinimum == true
        rerunsFirstConvolution = kind == .lean
    }

    /// A context for training (batch statistics, dropout, running-statistics updates) or evaluation.
    public init(training: Bool, seed: UInt64 = 0, step: Int = 0) {
        self.training = training
        updateRunningStatistics = training
        self.seed = seed
        self.step = step
    }
}
