import RematKernels

/// A network as a chain of blocks (docs/WORKLOADS.md: one block per conv or fc layer with its BN,
/// ReLU and pooling; for ResNets the stem, each BasicBlock and the head), with its
/// parameters and their gradients each in one arena, so an optimizer is one flat loop.
///
/// Threading: a model is used by one training loop at a time; its kernels run on the
/// calling thread's team (`KernelRuntime.threads`).
public final class Model {
    /// The model's name (the zoo's, e.g. "resnet56").
    public let name: String
    /// The shape of one input image, (C, H, W).
    public let imageShape: Shape
    /// Number of classes of its logits (N, classes).
    public let classes: Int
    /// The chain: checkpoint plans split it into segments of whole blocks.
    public let blocks: [Layer]
    /// Trainable floats in all (the arena's length).
    public let parameterCount: Int
    let values: UnsafeMutableBufferPointer<Float>
    let gradients: UnsafeMutableBufferPointer<Float>

    /// Builds the chain, checks that every block accepts its input shape, lays out the
    /// arenas and initialises the parameters as PyTorch does, from `seed`.
    public init(name: String, imageShape: Shape, blocks: [Layer], seed: UInt64 = 0) throws {
        self.name = name
        self.imageShape = imageShape
        self.blocks = blocks
        var shape = Shape([1] + imageShape.dims)
        for b in blocks { shape = try b.outputShape(for: shape) }
        guard shape.dims.count == 2 else {
            throw RematError.shape("\(name): the last block must produce (N, classes) logits, got \(shape)")
        }
        classes = shape.dims[1]
        parameterCount = blocks.reduce(0) { $0 + $1.parameterCount }
        values = .allocate(capacity: max(parameterCount, 1))
        gradients = .allocate(capacity: max(parameterCount, 1))
        values.initialize(repeating: 0)
        gradients.initialize(repeating: 0)
        var offset = 0
        let all = ParameterSlot(values: values.baseAddress!, gradients: gradients.baseAddress!, count: parameterCount)
        for b in blocks {
            b.bind(all.slice(offset, b.parameterCount))
            offset += b.parameterCount
        }
        for (i, layer) in blocks.flatMap(Model.leaves(of:)).compactMap({ $0 as? StochasticLayer }).enumerated() {
            layer.stream = UInt64(i + 1) // distinct random numbers per layer
        }
        var rng = SeededGenerator(seed: seed)
        for b in blocks { b.initialize(&rng) }
        blocks.first?.needsInputGradient = false
    }

    /// Whether `backward` computes d(loss)/d(images). Off by default: the first block may then
    /// skip that work (a convolution on the images skips its backward-data pass).
    public var computesImageGradient = false {
        didSet { blocks.first?.needsInputGradient = computesImageGradient }
    }

    deinit {
        values.deallocate()
        gradients.deallocate()
    }

    /// Every leaf layer inside a layer, in order.
    static func leaves(of layer: Layer) -> [Layer] {
        layer.sublayers.isEmpty ? [layer] : layer.sublayers.flatMap(leaves(of:))
    }

    /// Every leaf layer of the model, in order.
    var leaves: [Layer] { blocks.flatMap(Model.leaves(of:)) }

    /// Each buffer name with its values concatenated over the leaves in order, names sorted.
    var buffers: [(name: String, values: [Float])] {
        var out: [String: [Float]] = [:]
        for l in leaves { for (name, v) in l.buffers { out[name, default: []] += v } }
        return out.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Hands each leaf its share of `values` (what `buffers` concatenated), whose counts the
    /// caller has checked against `buffers`.
    func setBuffers(_ values: [String: [Float]]) {
        var at: [String: Int] = [:]
        for l in leaves {
            var mine = l.buffers
            for (name, v) in mine {
                guard let all = values[name] else { continue }
                let start = at[name, default: 0]
                mine[name] = Array(all[start..<(start + v.count)])
                at[name] = start + v.count
            }
            l.buffers = mine
        }
    }

    /// Each block's slice of the parameter (and gradient) arena, in block order.
    var parameterRanges: [Range<Int>] {
        var offset = 0
        return blocks.map { b in
            defer { offset += b.parameterCount }
            return offset..<(offset + b.parameterCount)
        }
    }

    /// Forward FLOPs per image (multiply-add = 2, conv and linear layers only).
    public var forwardFLOPsPerImage: Int {
        var shape = Shape([1] + imageShape.dims), total = 0
        for b in blocks {
            total += b.forwardFLOPs(for: shape)
            shape = (try? b.outputShape(for: shape)) ?? shape
        }
        return total
    }

    /// The parameters, arena order (a copy); setting requires the same count.
    public var parameters: [Float] {
        get { Array(values) }
        set {
            precondition(newValue.count == parameterCount, "expected \(parameterCount) parameters, got \(newValue.count)")
            _ = values.update(from: newValue)
        }
    }

    /// The accumulated gradients, arena order (a copy).
    public var parameterGradients: [Float] { Array(gradients) }

    /// Sets every accumulated gradient to zero (a step does this first). O(parameters).
    public func zeroGradients() { gradients.update(repeating: 0) }

    /// Checks a batch against the model: (N, C, H, W) with the model's image shape.
    func check(_ images: Tensor) throws {
        guard images.shape.dims.count == 4, Array(images.shape.dims.dropFirst()) == imageShape.dims else {
            throw RematError.shape("\(name) takes images of shape \(imageShape), got a batch of \(images.shape)")
        }
    }

    /// Runs every block, keeping what each backward pass needs. Returns the logits (N, classes).
    public func forward(_ images: Tensor, _ context: ForwardContext) throws -> (logits: Tensor, saved: [Saved]) {
        try check(images)
        var saved: [Saved] = []
        saved.reserveCapacity(blocks.count)
        let logits = try forward(blocks.indices, from: images, context, trace: nil, span: "forward", keep: { saved.append($1) })
        return (logits, saved)
    }

    /// Back-propagates d(loss)/d(logits) through the chain, accumulating parameter gradients,
    /// and returns d(loss)/d(images), or nil unless `computesImageGradient` (or the first layer
    /// is not a convolution). Consumes `saved` from the last block backwards, releasing each
    /// as it goes.
    @discardableResult
    public func backward(_ dlogits: Tensor, _ saved: inout [Saved]) throws -> Tensor? {
        var g = dlogits
        for i in blocks.indices.reversed() {
            g = try blocks[i].backward(g, saved[i], owned: g.storageID != dlogits.storageID) // the caller's is not ours
            saved[i] = Saved() // free this block's activations now
        }
        return g.shape.count == 0 ? nil : g
    }

    /// Runs blocks `range` forward from `x` and returns the last output: the loop over blocks
    /// of every forward but the step's own (which its schedule runs block by block).
    /// `before(i)` runs before block i; `keep(i, record)` gets each block's record.
    func forward(_ range: Range<Int>, from x: Tensor, _ context: ForwardContext, trace: TraceRecorder?, span: String,
                 before: (Int) throws -> Void = { _ in }, keep: (Int, Saved) -> Void = { _, _ in }) throws -> Tensor {
        var x = x
        for i in range {
            try before(i)
            let (y, saved) = try trace.span(span, block: i) { try blocks[i].forward(x, context) }
            keep(i, saved)
            x = y
        }
        return x
    }
}
