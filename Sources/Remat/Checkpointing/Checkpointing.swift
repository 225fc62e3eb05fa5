/// A training step's checkpointing: the policy that chooses what to keep, and whether the
/// recomputation runs on its own thread, overlapped with the backward pass.
///
/// Memory/time trade-off: `.keepAll` keeps every block's activations; `.sqrtN` keeps about
/// 2 sqrt(n) blocks' worth and recomputes every block but the last segment's once (about a
/// third more compute). With `overlap`, a recompute thread with its own kernel team rebuilds
/// segment s-1 while the backward pass works on segment s, hiding that compute where cores
/// allow. Results are bitwise identical in every configuration.
///
/// Threading: a trainer with overlap keeps one recompute thread for all its steps (stopped
/// when the trainer goes); a step runs its kernels on the calling thread's team and on that
/// thread's, which together use `backwardThreads + recomputeThreads` cores. Steps of one
/// trainer must not run at once; two trainers may.
public struct Checkpointing: Sendable, Equatable {
    /// What the forward pass keeps.
    public var policy: CheckpointPolicy
    /// Recompute on its own thread with these teams, or nil for the backward thread.
    public var overlap: Overlap?

    /// A policy, with recompute on its own thread when `overlap` is given.
    public init(policy: CheckpointPolicy, overlap: Overlap? = nil) {
        self.policy = policy
        self.overlap = overlap
    }

    /// No checkpointing.
    public static let keepAll = Checkpointing(policy: .keepAll)

    /// The overlap a step runs with: a budget also paces the recompute thread under itself
    /// (or under `Overlap.memoryLimit`, if that is lower), so the budget bounds the
    /// overlapped peak as it bounds the sequential one.
    public var effectiveOverlap: Overlap? {
        guard var o = overlap else { return nil }
        if case .budget(let bytes) = policy { o.memoryLimit = min(o.memoryLimit ?? bytes, bytes) }
        return o
    }
}
