/// (N, C, H, W) -> (N, C*H*W), sharing storage.
public final class Flatten: Layer {
    /// (N, C, H, W) -> (N, C*H*W), sharing storage; keeps nothing for its backward pass.
    public init() {}
    public var name: String { "flatten" }
    public func outputShape(for input: Shape) throws -> Shape { Shape(input.batch, input.perImage) }

    /// (N, C, H, W) -> (N, C*H*W), sharing storage; keeps the input shape.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        (try x.reshaped(try outputShape(for: x.shape)), Saved(shapes: [x.shape]))
    }

    /// Reshapes dy back.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor { try dy.reshaped(saved.shapes[0]) }
}
