import RematKernels

/// Zeroes each element with probability p in training and scales the rest by 1/(1-p).
/// The mask is a pure function of (context seed, step, this layer's index, element), so it
/// is never stored: the backward pass and any recompute regenerate it.
public final class Dropout: StochasticLayer {
    /// Chance that an element is zeroed in training.
    public let probability: Float
    /// Its random stream, set by the model: distinct masks per layer.
    public var stream: UInt64 = 0

    /// Zeroes each element with `probability` in training and scales the rest by 1 / (1 - p);
    /// the mask is a pure function of (seed, step, layer, index), so a recompute reproduces it.
    public init(_ probability: Float) { self.probability = probability }
    public var name: String { "dropout \(probability)" }

    public func outputShape(for input: Shape) throws -> Shape {
        guard probability >= 0, probability < 1 else {
            throw RematError.invalidArgument("dropout probability must be in [0, 1), got \(probability)")
        }
        return input
    }

    func maskSeed(_ context: ForwardContext) -> UInt64 {
        var g = SeededGenerator(seed: context.seed ^ (UInt64(context.step) &* 0x9E37_79B9_7F4A_7C15) ^ (stream << 48))
        return g.next()
    }

    /// Training: zeroes and scales by the counter-based mask; keeps only the seed. Evaluation: identity.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        _ = try outputShape(for: x.shape)
        guard context.training, probability > 0 else { return (x, Saved(seed: 0)) }
        let y = Tensor(uninitialized: x.shape), seed = maskSeed(context)
        kn_dropout_forward(y.pointer, x.pointer, probability, seed, 0, x.shape.count)
        return (y, Saved(shapes: [x.shape], seed: seed))
    }

    /// Applies the same mask to dy.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        guard !saved.shapes.isEmpty else { return dy } // evaluation or p = 0: identity
        let dx = Tensor(zeros: dy.shape)
        kn_dropout_backward(dx.pointer, dy.pointer, probability, saved.seed, 0, dy.shape.count)
        return dx
    }
}
