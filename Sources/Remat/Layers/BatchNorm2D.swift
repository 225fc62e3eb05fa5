import RematKernels

/// BatchNorm2d (PyTorch semantics: eps 1e-5, momentum 0.1, affine, unbiased running
/// variance). Weight (C) then bias (C) in the arena; running statistics are buffers.
/// Training uses batch statistics and updates the running ones (unless the context says
/// it is a recompute); evaluation uses the running ones.
public final class BatchNorm2D: Layer {
    /// Channels normalised (C of the input).
    public let channels: Int
    /// Added to the variance; weight of the new batch in the running statistics.
    public let eps: Float, momentum: Float
    /// Running mean per channel (evaluation uses it; a recompute never updates it).
    public internal(set) var runningMean: [Float]
    /// Running unbiased variance per channel.
    public internal(set) var runningVariance: [Float]
    private var slot: ParameterSlot?

    /// Per-channel normalisation of (N, C, H, W) with scale and shift (initialised 1 and 0) and
    /// running statistics updated with `momentum`, as PyTorch's BatchNorm2d.
    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        runningMean = [Float](repeating: 0, count: channels)
        runningVariance = [Float](repeating: 1, count: channels)
    }

    public var name: String { "bn \(channels)" }
    /// The running statistics, under the names a saved state has always used.
    public var buffers: [String: [Float]] {
        get { ["bn.running_mean": runningMean, "bn.running_var": runningVariance] }
        set {
            if let m = newValue["bn.running_mean"] { runningMean = m }
            if let v = newValue["bn.running_var"] { runningVariance = v }
        }
    }
    public var parameterCount: Int { 2 * channels }
    public func bind(_ slot: ParameterSlot) { self.slot = slot }

    public func initialize(_ rng: inout SeededGenerator) {
        for c in 0..<channels {
            slot!.values[c] = 1
            slot!.values[channels + c] = 0
        }
        runningMean = [Float](repeating: 0, count: channels)
        runningVariance = [Float](repeating: 1, count: channels)
    }

    public func outputShape(for input: Shape) throws -> Shape {
        let (_, c, _, _) = try input.nchw(name)
        guard c == channels else { throw RematError.shape("\(name) expects \(channels) channels, got \(input)") }
        return input
    }

    /// Training: batch statistics (and, unless a recompute, a running-statistics update); evaluation: running
    /// statistics. Keeps its input and the batch mean and inverse deviation.
    public func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let (n, c, h, w) = try x.shape.nchw(name)
        _ = try outputShape(for: x.shape)
        let y = Tensor(uninitialized: x.shape)
        guard context.training else {
            let s = slot!
            kn_batchnorm_inference(y.pointer, x.pointer, runningMean, runningVariance, s.values, s.values + c,
                                   Int32(n), Int32(c), Int32(h * w), eps)
            return (y, Saved(tensors: [x]))
        }
        return (y, try train(x, into: y, context, then: .nothing))
    }

    /// Training forward then ReLU in one pass: the ReLU's output, and the records of both
    /// layers (this one's, and the ReLU's: its output), as the two layers one after another.
    func forwardWithReLU(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved, Saved) {
        _ = try outputShape(for: x.shape)
        let y = Tensor(uninitialized: x.shape)
        return (y, try train(x, into: y, context, then: .relu), Saved(tensors: [y]))
    }

    /// Training forward, ReLU and a max pool that records its winners, in one pass: the pooled
    /// output and the records of this layer and the pool (the ReLU's is empty: the pool masks
    /// by its output), the bits of the three layers one after another. The normalised tensor is
    /// never written whole.
    func forwardWithReLUAndMaxPool(_ x: Tensor, _ pool: Pool2D, _ context: ForwardContext) throws -> (Tensor, Saved, Saved) {
        _ = try outputShape(for: x.shape)
        let y = Tensor(uninitialized: try pool.outputShape(for: x.shape)), winners = pool.winners(for: y.shape)
        let saved = try train(x, into: y, context, then: .reluMaxPool(pool, winners: winners))
        return (y, saved, pool.maskedRecord(winners: winners, output: y, input: x.shape))
    }

    /// The backward pass of the three layers `forwardWithReLUAndMaxPool` runs, from the pooled
    /// gradient: one pass, the unpooled gradient never written whole. With `overwritingInput`
    /// d(loss)/d(input) goes over this layer's recorded input (the caller gives the record up).
    func reluMaxPoolBackward(_ dy: Tensor, _ saved: Saved, pool: Pool2D, poolSaved: Saved, overwritingInput: Bool) throws -> Tensor {
        guard saved.tensors.count == 3 else {
            throw RematError.invalidArgument("\(name): backward needs a training-mode forward (batch statistics)")
        }
        let x = saved.tensors[0], mean = saved.tensors[1], invstd = saved.tensors[2], s = slot!
        let (n, c, h, w) = try x.shape.nchw(name)
        let dx = overwritingInput ? x : Tensor(uninitialized: x.shape)
        let k = Int32(pool.kernel), st = Int32(pool.stride), p = Int32(pool.padding)
        let status = kn_batchnorm_relu_maxpool_backward(dx.pointer, s.gradients, s.gradients + c, dy.pointer,
                                                        UnsafeRawPointer(poolSaved.tensors[0].pointer), poolSaved.tensors[1].pointer,
                                                        x.pointer, mean.pointer, invstd.pointer, s.values,
                                                        Int32(n), Int32(c), Int32(h), Int32(w), k, k, st, st, p, p)
        precondition(status == KN_OK, "checked by the pool's outputShape")
        return dx
    }

    /// Training forward, then the shortcut added and ReLU, in one pass (the end of a residual
    /// block): the sum, relu(sum) and this layer's record.
    func forwardAddReLU(_ x: Tensor, shortcut: Tensor, _ context: ForwardContext) throws -> (sum: Tensor, y: Tensor, Saved) {
        _ = try outputShape(for: x.shape)
        guard shortcut.shape == x.shape else {
            throw RematError.shape("\(name): shortcut \(shortcut.shape) does not match \(x.shape)")
        }
        let sum = Tensor(uninitialized: x.shape), y = Tensor(uninitialized: x.shape)
        return (sum, y, try train(x, into: y, context, then: .addReLU(shortcut: shortcut, sum: sum)))
    }

    /// What the normalising pass does after the affine map.
    private enum Epilogue {
        case nothing, relu
        /// Adds `shortcut`, writes the result to `sum` and its ReLU to the output.
        case addReLU(shortcut: Tensor, sum: Tensor)
        /// ReLU, then max pooling (the output is the pooled one; `winners` gets the pool's record).
        case reluMaxPool(Pool2D, winners: Tensor)
    }

    /// Batch statistics (recorded in, or in a recompute taken back from,
    /// `context.statistics`), y = normalised x (then the epilogue), the running update unless a
    /// recompute; returns the record.
    private func train(_ x: Tensor, into y: Tensor, _ context: ForwardContext, then epilogue: Epilogue) throws -> Saved {
        let (n, c, h, w) = try x.shape.nchw(name)
        let s = slot!
        let mean: Tensor, invstd: Tensor
        if let recorded = context.statistics, let m = recorded.replayed(), let v = recorded.replayed() {
            (mean, invstd) = (m, v)
        } else {
            (mean, invstd) = (Tensor(uninitialized: Shape(c)), Tensor(uninitialized: Shape(c)))
            kn_batchnorm_stats(mean.pointer, invstd.pointer, x.pointer, Int32(n), Int32(c), Int32(h * w), eps)
            context.statistics?.record(mean)
            context.statistics?.record(invstd)
        }
        let (gamma, beta, nn, cc, hw) = (s.values, s.values + c, Int32(n), Int32(c), Int32(h * w))
        switch epilogue {
        case .nothing: kn_batchnorm_forward(y.pointer, x.pointer, mean.pointer, invstd.pointer, gamma, beta, nn, cc, hw)
        case .relu: kn_batchnorm_forward_relu(y.pointer, x.pointer, mean.pointer, invstd.pointer, gamma, beta, nn, cc, hw)
        case .addReLU(let shortcut, let sum):
            kn_batchnorm_forward_add_relu(sum.pointer, y.pointer, x.pointer, shortcut.pointer, mean.pointer, invstd.pointer,
                                          gamma, beta, nn, cc, hw)
        case .reluMaxPool(let pool, let winners):
            let k = Int32(pool.kernel), st = Int32(pool.stride), p = Int32(pool.padding)
            let status = kn_batchnorm_relu_maxpool_forward(y.pointer, UnsafeMutableRawPointer(winners.pointer), x.pointer,
                                                           mean.pointer, invstd.pointer, gamma, beta, nn, cc, Int32(h), Int32(w),
                                                           k, k, st, st, p, p)
            precondition(status == KN_OK, "checked by the pool's outputShape")
        }
        if context.updateRunningStatistics {
            kn_batchnorm_update_running(&runningMean, &runningVariance, mean.pointer, invstd.pointer, Int32(c),
                                        Int32(n * h * w), eps, momentum)
        }
        return Saved(tensors: [x, mean, invstd])
    }

    /// Accumulates the scale and shift gradients; returns d(loss)/d(input), the same shape.
    public func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        try backward(dy, saved, into: Tensor(uninitialized: dy.shape)) // the kernel writes every element
    }

    /// As `backward`, writing over dy (the caller's to give up): each channel's sums are
    /// taken before its gradient is written.
    func backward(overwriting dy: Tensor, _ saved: Saved) throws -> Tensor { try backward(dy, saved, into: dy) }

    private func backward(_ dy: Tensor, _ saved: Saved, into dx: Tensor) throws -> Tensor {
        guard saved.tensors.count == 3 else {
            throw RematError.invalidArgument("\(name): backward needs a training-mode forward (batch statistics)")
        }
        let x = saved.tensors[0], mean = saved.tensors[1], invstd = saved.tensors[2]
        let (n, c, h, w) = try x.shape.nchw(name)
        let s = slot!
        kn_batchnorm_backward(dx.pointer, s.gradients, s.gradients + c, dy.pointer, x.pointer, mean.pointer,
                              invstd.pointer, s.values, Int32(n), Int32(c), Int32(h * w))
        return dx
    }

    /// Whether its output can stand in for its input in the backward pass this step: every
    /// channel's scale large enough to divide by (`kn_batchnorm_invertible`).
    var invertible: Bool { kn_batchnorm_invertible(slot!.values, slot!.values + channels, Int32(channels)) != 0 }

    /// Its training output again from a record of `train` (the same bits as the forward's).
    func output(from saved: Saved) throws -> Tensor {
        let x = saved.tensors[0], mean = saved.tensors[1], invstd = saved.tensors[2], s = slot!
        let (n, c, h, w) = try x.shape.nchw(name)
        let y = Tensor(uninitialized: x.shape)
        kn_batchnorm_forward(y.pointer, x.pointer, mean.pointer, invstd.pointer, s.values, s.values + c, Int32(n), Int32(c), Int32(h * w))
        return y
    }

    /// The backward pass of relu(this + shortcut) from the sum the forward kept instead of this
    /// layer's input (`invertible` must have held): d(loss)/d(sum), which the shortcut
    /// receives (over dy with `overwriting`), and d(loss)/d(input); accumulates the scale and
    /// shift gradients.
    func residualBackward(_ dy: Tensor, sum: Tensor, shortcut: Tensor, invstd: Tensor, overwriting: Bool) throws -> (dsum: Tensor, dx: Tensor) {
        let (n, c, h, w) = try sum.shape.nchw(name)
        let dsum = overwriting ? dy : Tensor(uninitialized: sum.shape), dx = Tensor(uninitialized: sum.shape), s = slot!
        kn_batchnorm_residual_backward(dsum.pointer, dx.pointer, s.gradients, s.gradients + c, dy.pointer, sum.pointer,
                                       shortcut.pointer, s.values, s.values + c, invstd.pointer, Int32(n), Int32(c), Int32(h * w))
        return (dsum, dx)
    }
}

extension BatchNorm2D: BackwardInPlace {}
