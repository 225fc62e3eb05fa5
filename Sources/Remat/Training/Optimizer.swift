import RematKernels

/// Updates a model's parameter arena from its gradient arena: one flat loop.
public protocol Optimizer: AnyObject {
    /// Learning rate of the next step (a schedule may set it every step).
    var learningRate: Float { get set }
    func step(_ model: Model)
    /// Which optimizer it is: what a saved state must match.
    var kind: OptimizerKind { get }
    /// Everything the next steps depend on (buffers and counters), for saving and resuming.
    var state: [String: [Float]] { get set }
}

/// PyTorch's SGD: momentum (dampening 0), optional Nesterov, L2 weight decay.
public final class SGD: Optimizer {
    public var learningRate: Float
    /// Momentum factor, L2 weight decay added to the gradient, Nesterov momentum.
    public let momentum: Float, weightDecay: Float, nesterov: Bool
    private var velocity: [Float] = []

    /// PyTorch's SGD: v = momentum v + g + wd p; p -= lr (Nesterov: g + momentum v). O(parameters) per step.
    public init(learningRate: Float = 0.01, momentum: Float = 0.9, weightDecay: Float = 0, nesterov: Bool = false) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
    }

    public var kind: OptimizerKind { .sgd }
    public var state: [String: [Float]] {
        get { ["velocity": velocity] }
        set { velocity = newValue["velocity"] ?? [] }
    }

    /// One update of every parameter from its gradient. O(parameters).
    public func step(_ model: Model) {
        if velocity.count != model.parameterCount { velocity = [Float](repeating: 0, count: model.parameterCount) }
        kn_sgd_step(model.values.baseAddress!, &velocity, model.gradients.baseAddress!, model.parameterCount,
                    learningRate, momentum, weightDecay, nesterov ? 1 : 0)
    }
}

/// AdamW (decoupled weight decay), as torch.optim.AdamW.
public final class AdamW: Optimizer {
    public var learningRate: Float
    /// Moment decay rates, the denominator's epsilon, decoupled weight decay.
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    private var m: [Float] = [], v: [Float] = []
    private var steps: Int64 = 0

    /// PyTorch's AdamW (decoupled weight decay, bias-corrected moments). O(parameters) per step.
    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
                weightDecay: Float = 0.01) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
    }

    public var kind: OptimizerKind { .adamw }
    public var state: [String: [Float]] {
        // the step count is exact in a float up to 2^24 steps
        get { ["m": m, "v": v, "steps": [Float(steps)]] }
        set {
            m = newValue["m"] ?? []
            v = newValue["v"] ?? []
            steps = Int64(newValue["steps"]?.first ?? 0)
        }
    }

    /// One update of every parameter from its gradient and the moments. O(parameters).
    public func step(_ model: Model) {
        if m.count != model.parameterCount {
            m = [Float](repeating: 0, count: model.parameterCount)
            v = m
        }
        steps += 1
        kn_adamw_step(model.values.baseAddress!, &m, &v, model.gradients.baseAddress!, model.parameterCount,
                      learningRate, beta1, beta2, eps, weightDecay, steps)
    }
}

/// An optimizer's name in saved states ("sgd", "adamw"); an optimizer of one's own adds its own.
public struct OptimizerKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public static let sgd = OptimizerKind(rawValue: "sgd")
    public static let adamw = OptimizerKind(rawValue: "adamw")
    public var description: String { rawValue }
}
