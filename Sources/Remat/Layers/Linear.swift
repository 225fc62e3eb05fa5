import RematKernels

/// Fully connected layer y = x W^T + b on (N, in) inputs. Weights (out, in) then bias (out).
public final class Linear: ExpensiveLayer {
    /// Input and output features.
    public let inFeatures: Int, outFeatures: Int
    private var slot: ParameterSlot?

    /// A fully connected layer (N, inFeatures) -> (N, outFeatures) with bias: y = x W^T + b.
    public init(_ inFeatures: Int, _ outFeatures: Int) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
    }

    public var name: String { "fc \(inFeatures)->\(outFeatures)" }
    public var parameterCount: Int { outFeatures * inFeatures + outFeatures }
    public func bind(_ slot: ParameterSlot) { self.slot = slot }

    public func initialize(_ rng: inout SeededGenerator) {
        let bound = 1 / Float(inFeatures).squareRoot()
        for i in 0..<parameterCount { slot!.values[i] = rng.uniform(-bound, bound) }
    }

    public func outputShape(for input: Shape) throws -> Shape {
        guard input.dims.count == 2, input.dims[1] == inFeatures else {
            throw RematError.shape("\(name) expects (N, \(inFeatures)) input, got \(input)")
        }
        return Shape(input.batch, outFeatures)
    }

    public func forwardFLOPs(for input: Shape) -> Int { 2 * inFeatures * outFeatures }

    /// (N, inFeatures) -> (N, outFeatures); keeps its input.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        if let y = context.stash?.replayed() { return (y, Saved(tensors: [x])) }
        let y = Tensor(uninitialized: try outputShape(for: x.shape))
        let s = slot!
        kn_linear_forward(y.pointer, x.pointer, s.values, s.values + inFeatures * outFeatures,
                          Int32(x.shape.batch), Int32(inFeatures), Int32(outFeatures))
        context.stash?.record(y)
        return (y, Saved(tensors: [x]))
    }

    /// Accumulates the weight and bias gradients; returns (N, inFeatures).
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        let x = saved.tensors[0]
        let dx = Tensor(zeros: x.shape)
        let s = slot!
        kn_linear_backward(dx.pointer, s.gradients, s.gradients + inFeatures * outFeatures, dy.pointer,
                           x.pointer, s.values, Int32(x.shape.batch), Int32(inFeatures), Int32(outFeatures))
        return dx
    }
}
