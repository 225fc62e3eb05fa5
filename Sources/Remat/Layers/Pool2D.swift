import RematKernels

/// Max or average pooling over NCHW planes (average counts padding, as PyTorch's default).
/// Max pooling keeps which position of each window won, a byte an output (a window of more
/// than 256 positions keeps its input and finds its maximum again in the backward pass).
public final class Pool2D: Layer {
    /// Max or average (average divides by the whole window, padding included, as PyTorch's default).
    public enum Kind: Sendable { case max, average }
    /// Max or average.
    public let kind: Kind
    /// Window side, step and zero padding, in pixels.
    public let kernel: Int, stride: Int, padding: Int

    /// A square pooling window of `kernel`, `stride` (default: the kernel) and zero `padding`.
    public init(_ kind: Kind, kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kind = kind
        self.kernel = kernel
        self.stride = stride ?? kernel
        self.padding = padding
    }

    /// Max-pool 2x2 stride 2, the `M` of docs/WORKLOADS.md.
    public static func max2x2() -> Pool2D { Pool2D(.max, kernel: 2) }

    public var name: String { (kind == .max ? "maxpool" : "avgpool") + "\(kernel)x\(kernel) s\(stride)" }

    public func outputShape(for input: Shape) throws -> Shape {
        let (n, c, h, w) = try input.nchw(name)
        guard kernel >= 1, stride >= 1, padding >= 0, 2 * padding <= kernel,
              h + 2 * padding >= kernel, w + 2 * padding >= kernel else {
            throw RematError.shape("\(name) with padding \(padding) cannot pool \(input)")
        }
        return Shape(n, c, (h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1)
    }

    /// (N, C, H, W) -> (N, C, P, Q); max keeps its winners (or its input), average only the shape.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let y = Tensor(uninitialized: try outputShape(for: x.shape))
        let (n, c, h, w) = try x.shape.nchw(name)
        let k = Int32(kernel), s = Int32(stride), p = Int32(padding)
        if recordsWinners {
            let winners = winners(for: y.shape)
            let status = kn_maxpool2d_argmax_forward(y.pointer, UnsafeMutableRawPointer(winners.pointer), x.pointer,
                                                     Int32(n), Int32(c), Int32(h), Int32(w), k, k, s, s, p, p)
            precondition(status == KN_OK, "checked by outputShape")
            return (y, Saved(tensors: [winners], shapes: [x.shape]))
        }
        let status = kind == .max
            ? kn_maxpool2d_forward(y.pointer, x.pointer, Int32(n), Int32(c), Int32(h), Int32(w), k, k, s, s, p, p)
            : kn_avgpool2d_forward(y.pointer, x.pointer, Int32(n), Int32(c), Int32(h), Int32(w), k, k, s, s, p, p)
        precondition(status == KN_OK, "checked by outputShape")
        return (y, kind == .max ? Saved(tensors: [x]) : Saved(shapes: [x.shape]))
    }

    /// Routes dy to each window's maximum, or spreads it evenly (average).
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        if recordsWinners {
            let (n, c, h, w) = try saved.shapes[0].nchw(name)
            let dx = Tensor(zeros: saved.shapes[0]), k = Int32(kernel), s = Int32(stride), p = Int32(padding)
            let mask = saved.tensors.count > 1 ? UnsafePointer(saved.tensors[1].pointer) : nil
            let status = kn_maxpool2d_argmax_backward(dx.pointer, dy.pointer, UnsafeRawPointer(saved.tensors[0].pointer), mask,
                                                      Int32(n), Int32(c), Int32(h), Int32(w), k, k, s, s, p, p)
            precondition(status == KN_OK, "checked by outputShape")
            return dx
        }
        let inShape = kind == .max ? saved.tensors[0].shape : saved.shapes[0]
        let (n, c, h, w) = try inShape.nchw(name)
        let dx = Tensor(zeros: inShape)
        let k = Int32(kernel), s = Int32(stride), p = Int32(padding)
        let status = kind == .max
            ? kn_maxpool2d_backward(dx.pointer, dy.pointer, saved.tensors[0].pointer, Int32(n), Int32(c), Int32(h),
                                    Int32(w), k, k, s, s, p, p)
            : kn_avgpool2d_backward(dx.pointer, dy.pointer, Int32(n), Int32(c), Int32(h), Int32(w), k, k, s, s, p, p)
        precondition(status == KN_OK, "checked by outputShape")
        return dx
    }

    /// Max pooling over windows of at most 256 positions: it records which one won.
    var recordsWinners: Bool { kind == .max && kernel * kernel <= 256 }

    /// Its record after a ReLU whose output it pooled, with its own output added: its backward
    /// pass then passes the gradient only where that output is positive, in the ReLU's place
    /// (max and ReLU commute), so the ReLU keeps nothing.
    func masking(_ saved: Saved, output: Tensor) -> Saved {
        Saved(tensors: saved.tensors + [output], shapes: saved.shapes)
    }

    /// Room for the winners of an output of `shape`: bytes, four a float.
    func winners(for shape: Shape) -> Tensor { Tensor(uninitialized: Shape((shape.count + 3) / 4)) }

    /// The record `masking` makes, from its parts.
    func maskedRecord(winners: Tensor, output: Tensor, input: Shape) -> Saved {
        masking(Saved(tensors: [winners], shapes: [input]), output: output)
    }
}
