import Foundation

/// The learning rate at each step: constant, step decay, cosine, each with an optional
/// linear warm-up.
public struct LearningRateSchedule: Sendable, Equatable {
    /// How the rate moves after the warm-up.
    public enum Shape: Sendable, Equatable {
        case constant
        /// Multiply by `factor` every `every` steps (after the warm-up).
        case step(every: Int, factor: Float)
        /// Cosine from the base rate down to `minimum` over `total` steps (after the warm-up).
        case cosine(total: Int, minimum: Float)
    }

    /// The rate after the warm-up, before any decay.
    public var base: Float
    /// Constant, step decay or cosine.
    public var shape: Shape
    /// Steps of linear ramp from base / warmup to base.
    public var warmup: Int

    /// A schedule from the base rate, its shape after the warm-up, and `warmup` steps of ramp.
    public init(base: Float, shape: Shape = .constant, warmup: Int = 0) {
        self.base = base
        self.shape = shape
        self.warmup = warmup
    }

    /// The rate for step `t` (counting from 0).
    public func rate(at t: Int) -> Float {
        if t < warmup { return base * Float(t + 1) / Float(warmup) }
        let s = t - warmup
        switch shape {
        case .constant: return base
        case .step(let every, let factor): return base * Float(pow(Double(factor), Double(s / max(every, 1))))
        case .cosine(let total, let minimum):
            let p = min(Double(s) / Double(max(total, 1)), 1)
            return minimum + (base - minimum) * Float(0.5 * (1 + cos(Double.pi * p)))
        }
    }
}
