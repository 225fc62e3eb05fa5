import RematKernels

/// max(x, 0), any shape. Keeps its output for the backward pass.
public final class ReLU: Layer {
    /// max(x, 0) elementwise; keeps its output for the backward pass.
    public init() {}
    public var name: String { "relu" }
    public func outputShape(for input: Shape) throws -> Shape { input }

    /// Same shape out; keeps its output (the mask is output > 0).
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let y = Tensor(uninitialized: x.shape)
        kn_relu_forward(y.pointer, x.pointer, x.shape.count)
        return (y, Saved(tensors: [y]))
    }

    /// Passes dy where the output was positive. An empty record: a max pool right after it
    /// applied the mask already (`Pool2D.masking`).
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        backward(dy, saved, into: Tensor(uninitialized: dy.shape)) // the kernel writes every element
    }

    /// As `backward`, writing over dy (the caller's to give up).
    func backward(overwriting dy: Tensor, _ saved: Saved) throws -> Tensor { backward(dy, saved, into: dy) }

    private func backward(_ dy: Tensor, _ saved: Saved, into dx: @autoclosure () -> Tensor) -> Tensor {
        guard let y = saved.tensors.first else { return dy }
        let dx = dx()
        kn_relu_backward(dx.pointer, dy.pointer, y.pointer, dy.shape.count)
        return dx
    }
}

extension ReLU: BackwardInPlace {}
