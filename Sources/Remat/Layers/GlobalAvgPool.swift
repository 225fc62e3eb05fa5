import RematKernels

/// Mean over each channel plane: (N, C, H, W) -> (N, C).
public final class GlobalAvgPool: Layer {
    /// (N, C, H, W) -> (N, C): the mean over each channel plane.
    public init() {}
    public var name: String { "gap" }

    public func outputShape(for input: Shape) throws -> Shape {
        let (n, c, _, _) = try input.nchw(name)
        return Shape(n, c)
    }

    /// (N, C, H, W) -> (N, C); keeps only the shape.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let (n, c, h, w) = try x.shape.nchw(name)
        let y = Tensor(uninitialized: Shape(n, c))
        kn_global_avgpool_forward(y.pointer, x.pointer, Int32(n), Int32(c), Int32(h * w))
        return (y, Saved(shapes: [x.shape]))
    }

    /// Spreads each dy evenly over its plane.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        let (n, c, h, w) = try saved.shapes[0].nchw(name)
        let dx = Tensor(zeros: saved.shapes[0])
        kn_global_avgpool_backward(dx.pointer, dy.pointer, Int32(n), Int32(c), Int32(h * w))
        return dx
    }
}
