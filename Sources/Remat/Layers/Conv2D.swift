import Foundation
import RematKernels

/// 2-D convolution, NCHW, with stride, zero padding, dilation and an optional bias.
/// Weights (K, C, R, S) then bias (K) in the parameter arena.
public final class Conv2D: ExpensiveLayer {
    /// Input and output channels.
    public let inChannels: Int, outChannels: Int
    /// (height, width) of the kernel, stride, zero padding and dilation.
    public let kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)
    /// Whether it adds a bias per output channel.
    public let hasBias: Bool
    /// False for a model's first layer unless the image gradient is wanted: its input is the
    /// data, and its backward-data pass would be pure cost.
    public var needsInputGradient = true
    private var slot: ParameterSlot?
    private var plans: [Shape: ConvPlan] = [:]
    private let plansLock = NSLock() // the recompute thread plans too

    /// A 2-D convolution (N, inChannels, H, W) -> (N, outChannels, P, Q) with a square kernel,
    /// stride, zero padding, dilation and optional bias, weights (outChannels, inChannels, k, k).
    /// Forward and backward passes cost 2 x N x P x Q x outChannels x inChannels x k x k FLOPs each.
    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, bias: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = (kernel, kernel)
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        hasBias = bias
    }

    public var name: String {
        "conv\(kernel.0)x\(kernel.1) \(inChannels)->\(outChannels)" + (stride.0 > 1 ? " s\(stride.0)" : "")
            + (padding.0 > 0 ? " p\(padding.0)" : "") + (hasBias ? "" : " nobias")
    }
    var weightCount: Int { outChannels * inChannels * kernel.0 * kernel.1 }
    public var parameterCount: Int { weightCount + (hasBias ? outChannels : 0) }
    public func bind(_ slot: ParameterSlot) { self.slot = slot }

    public func initialize(_ rng: inout SeededGenerator) {
        // PyTorch: kaiming_uniform(a = sqrt(5)) and uniform bias, both +-1/sqrt(fan_in)
        let bound = 1 / Float(inChannels * kernel.0 * kernel.1).squareRoot()
        for i in 0..<parameterCount { slot!.values[i] = rng.uniform(-bound, bound) }
    }

    /// The kernel plan for this input shape (cached until the tuning table changes).
    func plan(_ input: Shape) throws -> ConvPlan {
        if let p = plansLock.withLock({ plans[input] }), p.generation == kn_tuning_generation() { return p }
        let (n, c, h, w) = try input.nchw(name)
        guard c == inChannels else {
            throw RematError.shape("\(name) expects \(inChannels) input channels, got \(c) in \(input)")
        }
        var d = kn_conv2d_desc()
        (d.N, d.C, d.H, d.W) = (Int32(n), Int32(c), Int32(h), Int32(w))
        (d.K, d.R, d.S) = (Int32(outChannels), Int32(kernel.0), Int32(kernel.1))
        (d.stride_h, d.stride_w) = (Int32(stride.0), Int32(stride.1))
        (d.pad_h, d.pad_w) = (Int32(padding.0), Int32(padding.1))
        (d.dil_h, d.dil_w) = (Int32(dilation.0), Int32(dilation.1))
        let plan = try ConvPlan(d, name: name, input: input)
        plansLock.withLock { plans[input] = plan }
        return plan
    }

    /// The plans made so far, by input shape.
    var plannedShapes: [(Shape, ConvPlan)] { plansLock.withLock { plans.map { ($0.key, $0.value) } } }

    public func outputShape(for input: Shape) throws -> Shape {
        let (p, q) = try plan(input).output
        return Shape(input.dims[0], outChannels, p, q)
    }

    public func forwardFLOPs(for input: Shape) -> Int {
        guard let out = try? outputShape(for: input) else { return 0 }
        return 2 * out.count / out.batch * inChannels * kernel.0 * kernel.1
    }

    /// (N, inChannels, H, W) -> (N, outChannels, P, Q); keeps its input (a selective rebuild replays the recorded output).
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let plan = try self.plan(x.shape)
        if let y = context.stash?.replayed() { return (y, Saved(tensors: [x])) }
        let y = Tensor(uninitialized: try outputShape(for: x.shape))
        let scratch = Tensor(uninitialized: Shape(plan.scratchFloats))
        let s = slot!
        kn_conv2d_forward(plan.handle, y.pointer, x.pointer, s.values, hasBias ? s.values + weightCount : nil, scratch.pointer)
        context.stash?.record(y)
        return (y, Saved(tensors: [x]))
    }

    /// Accumulates the weight (and bias) gradients; returns d(loss)/d(input), or an empty tensor for the first
    /// convolution of a model that needs no image gradient.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        try backward(dy, saved, addingTo: needsInputGradient ? Tensor(zeros: saved.tensors[0].shape) : Tensor(uninitialized: Shape(0)))
    }

    /// The backward pass with the input gradient added onto `dx` (of the input's shape), which it returns.
    func backward(_ dy: Tensor, _ saved: Saved, addingTo dx: Tensor) throws -> Tensor {
        let x = saved.tensors[0]
        let plan = try self.plan(x.shape)
        precondition(!needsInputGradient || dx.shape == x.shape, "\(name): input gradient of \(dx.shape), not \(x.shape)")
        let scratch = Tensor(uninitialized: Shape(plan.scratchFloats))
        let s = slot!
        if needsInputGradient { kn_conv2d_backward_data(plan.handle, dx.pointer, dy.pointer, s.values, scratch.pointer) }
        kn_conv2d_backward_weights(plan.handle, s.gradients, hasBias ? s.gradients + weightCount : nil, dy.pointer,
                                   x.pointer, scratch.pointer)
        return dx
    }
}

/// A convolution's kernel plan (`kn_conv2d`), destroyed with its last reference.
final class ConvPlan: @unchecked Sendable { // immutable once made
    let handle: OpaquePointer
    let output: (Int, Int)
    let scratchFloats: Int
    /// The tuning table's change count it was made under.
    let generation = kn_tuning_generation()

    init(_ desc: kn_conv2d_desc, name: String, input: Shape) throws {
        var d = desc, plan: OpaquePointer?
        let status = kn_conv2d_create(&plan, &d)
        guard status == KN_OK, let plan else {
            throw RematError.shape("\(name) cannot run on \(input): \(String(cString: kn_status_string(status)))")
        }
        handle = plan
        var p: Int32 = 0, q: Int32 = 0
        kn_conv2d_output(plan, &p, &q)
        output = (Int(p), Int(q))
        scratchFloats = kn_conv2d_scratch_floats(plan)
    }

    /// One line a pass: the algorithm and why each before it in the list declined.
    var explanation: String { String(cString: kn_conv2d_explain(handle)) }

    deinit { kn_conv2d_destroy(handle) }
}
