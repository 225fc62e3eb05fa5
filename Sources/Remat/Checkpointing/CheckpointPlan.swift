/// What a training step keeps and rebuilds.
public enum CheckpointPlan: Sendable, Equatable, CustomStringConvertible {
    /// Contiguous segments of blocks, in order, covering the chain once. The forward pass
    /// keeps the input of every segment (its checkpoint) and, for the last segment only,
    /// everything its backward pass needs; the backward pass rebuilds each other segment from
    /// its checkpoint just before it needs it. One segment: nothing is rebuilt.
    case segmented([Range<Int>])
    /// Selective recomputation over a chain of this many blocks: every block but the last
    /// keeps its expensive layers' outputs and rebuilds its cheap layers before its backward
    /// pass (see `CheckpointPolicy.selective`).
    case selective(blocks: Int)
    /// Selective recomputation keeping the least: as `selective`, but a block that can
    /// differentiate from a sum it keeps (a ResNet block) stashes that sum instead of the
    /// convolution output before it and rebuilds its output from it (see `CheckpointPolicy.minimal`).
    case minimal(blocks: Int)

    /// A plan from the policy and the chain's profile (bytes balance sqrt(n)'s segments; a
    /// budget is solved on the profile's times and bytes). A budget's plan is the same with
    /// overlap: the step then paces the recompute thread under the budget
    /// (`Checkpointing.effectiveOverlap`), which bounds the overlapped peak by it.
    public init(policy: CheckpointPolicy, profile: ChainProfile) throws {
        let b = profile.blocks
        if case .budget(let bytes) = policy {
            guard let best = CheckpointPlan.cheapest(within: bytes, profile) else {
                let smallest = CheckpointPlan.smallestBudget(profile)
                throw RematError.invalidArgument(
                    "a budget of \(bytes) bytes (\(CheckpointPolicy.mebibytes(bytes)) MiB) cannot hold this chain at batch \(profile.batch): "
                    + "the smallest feasible budget is \(smallest) bytes (\(CheckpointPolicy.mebibytes(smallest)) MiB); "
                    + "raise the budget or lower the batch")
            }
            self = best
            return
        }
        try self.init(policy: policy, blocks: b.count, blockBytes: b.map(\.keptBytes))
        // sqrt(n) sets the memory; at that peak, the program finds the least recompute (often
        // fewer segments than the balanced split)
        if policy == .sqrtN {
            let balanced = predict(profile)
            if let better = CheckpointPlan.cheapest(within: balanced.peakBytes, profile),
               better.predict(profile).extraForwardSeconds < balanced.extraForwardSeconds {
                self = better
            }
        }
    }

    /// A plan from the policy alone (sqrt(n) by block count unless `blockBytes` are given).
    /// A budget needs a profile: use `init(policy:profile:)`.
    public init(policy: CheckpointPolicy, blocks n: Int, blockBytes: [Int]? = nil) throws {
        guard n >= 1 else { throw RematError.invalidArgument("a plan needs at least one block") }
        switch policy {
        case .keepAll:
            self = .segmented([0..<n])
        case .selective:
            self = .selective(blocks: n)
        case .minimal:
            self = .minimal(blocks: n)
        case .every(let k):
            guard k >= 1 else { throw RematError.invalidArgument("checkpoint every k blocks needs k >= 1, got \(k)") }
            self = .segmented(stride(from: 0, to: n, by: k).map { $0..<min($0 + k, n) })
        case .sqrtN:
            let m = Int((Double(n).squareRoot()).rounded(.up))
            if let bytes = blockBytes, bytes.count == n {
                self = .segmented(CheckpointPlan.balanced(bytes, into: m))
            } else {
                self = .segmented(stride(from: 0, to: n, by: m).map { $0..<min($0 + m, n) })
            }
        case .budget:
            throw RematError.invalidArgument("a budget plan needs the chain's profile: use CheckpointPlan(policy:profile:)")
        }
    }

    /// The segments of the plan (selective: the whole chain as one).
    public var segments: [Range<Int>] {
        switch self {
        case .segmented(let ranges): return ranges
        case .selective(let n), .minimal(let n): return [0..<n]
        }
    }

    /// Whether it is `minimal`: blocks keep the least their backward passes need.
    var keepsMinimum: Bool {
        if case .minimal = self { return true }
        return false
    }

    /// Whether it is `selective` or `minimal`: every block but the last keeps a stash and
    /// rebuilds its cheap layers before its backward pass.
    var stashes: Bool {
        switch self {
        case .segmented: return false
        case .selective, .minimal: return true
        }
    }

    /// At most m contiguous segments whose largest byte total is as small as it can be (the
    /// linear partition problem: binary search on the bound, greedy check). Activations of
    /// early CNN blocks are several times those of late ones, so equal block counts would
    /// leave the first segment, and the peak, far larger than the rest.
    static func balanced(_ bytes: [Int], into m: Int) -> [Range<Int>] {
        func split(_ bound: Int) -> [Range<Int>]? {
            var out: [Range<Int>] = [], start = 0, sum = 0
            for (i, b) in bytes.enumerated() {
                if b > bound { return nil }
                if sum + b > bound {
                    out.append(start..<i)
                    start = i
                    sum = 0
                }
                sum += b
            }
            out.append(start..<bytes.count)
            return out.count <= m ? out : nil
        }
        var lo = bytes.max() ?? 0, hi = bytes.reduce(0, +)
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if split(mid) != nil { hi = mid } else { lo = mid + 1 }
        }
        return split(lo)!
    }

    /// Blocks whose forward runs twice in a step.
    public var recomputedBlocks: Int {
        guard case .segmented(let ranges) = self else { return 0 }
        return ranges.dropLast().reduce(0) { $0 + $1.count }
    }

    public var description: String {
        switch self {
        case .selective(let n): return "selective (cheap layers of blocks 0-\(max(0, n - 2)) rebuilt)"
        case .minimal(let n): return "minimal (cheap layers of blocks 0-\(max(0, n - 2)) rebuilt from the least kept)"
        case .segmented: break
        }
        return segments.map { $0.count == 1 ? "[\($0.lowerBound)]" : "[\($0.lowerBound)-\($0.upperBound - 1)]" }
            .joined(separator: " ")
    }
}

// MARK: - Budget: the least recompute time within a peak

extension CheckpointPlan {
    /// The segmentation with the least recomputed forward seconds whose predicted peak fits
    /// in `budget`, or nil if none does.
    ///
    /// A plan's peak is max over segments s of (P_s + local_s): P_s, the bytes of earlier
    /// segments' checkpoints (their inputs and BatchNorm statistics), plus what segment s
    /// holds while it runs (its forward, and its
    /// rebuild and backward), which depends on s alone. So a dynamic program over the chain
    /// (Beaumont et al., "Optimal checkpointing for heterogeneous chains", restricted to
    /// one level of checkpoints as this engine runs them) keeps, at each block where a
    /// segment may start, the Pareto front of (checkpoint bytes so far, recompute seconds).
    public static func cheapest(within budget: Int, _ profile: ChainProfile) -> CheckpointPlan? {
        cheapest(within: budget, profile, SegmentPeaks(profile))
    }

    /// The smallest budget any segmentation fits in (binary search over `cheapest`).
    public static func smallestBudget(_ profile: ChainProfile) -> Int {
        var hi = try! CheckpointPlan(policy: .keepAll, blocks: profile.blocks.count).predict(profile).peakBytes
        var lo = 0
        let peaks = SegmentPeaks(profile)
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if cheapest(within: mid, profile, peaks) != nil { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    private static func cheapest(within budget: Int, _ profile: ChainProfile, _ peaks: SegmentPeaks) -> CheckpointPlan? {
        let b = profile.blocks, n = b.count
        guard n >= 1 else { return nil }
        struct State { var bytes: Int; var seconds: Double; var parent: Int; var start: Int }
        var states = [State(bytes: 0, seconds: 0, parent: -1, start: 0)]
        var fronts: [[Int]] = Array(repeating: [], count: n + 1) // states whose next segment starts at i
        fronts[0] = [0]
        var best: (seconds: Double, state: Int, start: Int)?
        for i in 0..<n {
            // prune: keep states no other beats on both bytes and seconds
            let sorted = fronts[i].sorted { (states[$0].bytes, states[$0].seconds) < (states[$1].bytes, states[$1].seconds) }
            var kept: [Int] = [], cheapest = Double.infinity
            for s in sorted where states[s].seconds < cheapest { kept.append(s); cheapest = states[s].seconds }
            var recompute = 0.0
            for j in (i + 1)...n {
                recompute += b[j - 1].recomputeSeconds
                let checkpoint = profile.checkpointBytes(i..<j) // stays for the segments after it
                for s in kept where states[s].bytes + peaks.own[i][j] <= budget {
                    let st = states[s]
                    if j == n {
                        if best == nil || st.seconds < best!.seconds { best = (st.seconds, s, i) }
                    } else {
                        states.append(State(bytes: st.bytes + checkpoint, seconds: st.seconds + recompute,
                                            parent: s, start: i))
                        fronts[j].append(states.count - 1)
                    }
                }
            }
        }
        guard let best else { return nil }
        var segments = [best.start..<n], s = best.state, end = best.start
        while states[s].parent >= 0 {
            segments.insert(states[s].start..<end, at: 0)
            end = states[s].start
            s = states[s].parent
        }
        return .segmented(segments)
    }
}

/// What a segment adds to the checkpoints before it, for each (start, end), computed once:
/// its forward, or its rebuild and backward (the last segment: its forward, loss and
/// backward).
private struct SegmentPeaks {
    let own: [[Int]] // [start][end]

    init(_ profile: ChainProfile) {
        let n = profile.blocks.count
        own = (0..<n).map { i in
            (0...n).map { j in
                if j <= i { return 0 }
                let peaks = profile.segmentPeaks(i..<j, last: j == n)
                return max(peaks.forward, peaks.backward)
            }
        }
    }
}

extension BlockCost {
    /// Bytes the block's record keeps (what sqrt(n) balances).
    var keptBytes: Int { savedBytes + (keepsInput ? inputBytes : 0) + (keepsOutput ? outputBytes : 0) }
}

// MARK: - The trade-off curve

extension CheckpointPlan {
    /// Policies along the trade-off between activation memory and recompute, for one chain:
    /// none, minimal, selective, sqrt(n), and `budgets` budget plans spread evenly from the smallest
    /// feasible budget to no checkpointing's peak (each budget the peak of the plan it gives,
    /// distinct plans only).
    public static func frontier(_ profile: ChainProfile, budgets: Int = 8) throws -> [CheckpointPolicy] {
        let none = try CheckpointPlan(policy: .keepAll, profile: profile).predict(profile).peakBytes
        let smallest = smallestBudget(profile)
        var policies: [CheckpointPolicy] = [.keepAll, .minimal, .selective, .sqrtN], seen: [[Range<Int>]] = []
        for k in 0..<max(budgets, 0) {
            let bound = smallest + (none - smallest) * k / max(1, budgets - 1)
            guard let plan = cheapest(within: bound, profile), plan.segments.count > 1, !seen.contains(plan.segments) else { continue }
            seen.append(plan.segments)
            policies.append(.budget(bytes: plan.predict(profile).peakBytes))
        }
        return policies
    }
}
