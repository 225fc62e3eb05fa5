/// Which block outputs a training step keeps in memory; the rest are recomputed in the
/// backward pass. See `CheckpointPlan` for the segments a policy makes.
public enum CheckpointPolicy: Sendable, Equatable, CustomStringConvertible {
    /// Keep everything: no recomputation.
    case none
    /// A checkpoint every k blocks (segments of k blocks).
    case every(Int)
    /// Segments of ceil(sqrt(n)) blocks: O(sqrt n) memory for one extra forward.
    case sqrtN

    public var description: String {
        switch self {
        case .none: return "none"
        case .every(let k): return "every-\(k)"
        case .sqrtN: return "sqrt(n)"
        }
    }
}

/// How recomputation runs.
public struct Overlap: Sendable, Equatable {
    /// Kernel team of the backward pass (the calling thread).
    public var backwardThreads: Int
    /// Kernel team of the recompute thread.
    public var recomputeThreads: Int
    /// How many segments the recompute thread may rebuild ahead of the backward pass
    /// (each costs one segment's activations of memory).
    public var lookahead: Int

    public init(backwardThreads: Int, recomputeThreads: Int, lookahead: Int = 1) {
        self.backwardThreads = backwardThreads
        self.recomputeThreads = recomputeThreads
        self.lookahead = lookahead
    }

    /// Splits `cores` between the two teams (the backward team gets the larger half).
    public static func split(cores: Int) -> Overlap {
        Overlap(backwardThreads: max(1, cores - cores / 2), recomputeThreads: max(1, cores / 2))
    }
}
