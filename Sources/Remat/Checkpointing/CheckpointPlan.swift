/// What one block keeps for its backward pass.
public enum BlockChoice: String, Sendable, Equatable, CustomStringConvertible {
    /// Everything its backward pass needs.
    case keep
    /// The least its backward pass needs (as `CheckpointPolicy.minimal`); its cheap layers are
    /// rebuilt from that just before its backward pass.
    case minimal
    /// Less than `minimal` where a block can rerun its first convolution from its input (a
    /// ResNet block keeps its sum alone): that convolution runs again, with the cheap layers,
    /// just before its backward pass. Elsewhere as `minimal`.
    case lean
    /// Its expensive layers' outputs (as `CheckpointPolicy.selective`); its cheap layers are
    /// rebuilt from them just before its backward pass.
    case selective
    /// Nothing but its input (a checkpoint) and BatchNorm statistics: the first block of a
    /// segment rebuilt from that checkpoint just before the segment's backward pass.
    case checkpoint
    /// As `checkpoint`, but the segment's rebuild keeps only minimal stashes, and each
    /// block's cheap layers are rebuilt from its stash just before its backward pass (a
    /// rebuilt segment then holds what `minimal` keeps, not everything).
    case checkpointMinimal = "checkpoint-minimal"
    /// Nothing: rebuilt with the segment of the block before it (a checkpoint or `recompute`).
    case recompute

    /// Whether the block keeps a stash and rebuilds its cheap layers from it (minimal, selective).
    var stashes: Bool { self == .minimal || self == .lean || self == .selective }
    /// Whether its stash keeps the least (`ForwardContext.keepsMinimum`): minimal or lean.
    var keepsMinimum: Bool { self == .minimal || self == .lean }
    /// Whether a checkpointed segment rebuilds the block.
    var recomputes: Bool { self == .checkpoint || self == .checkpointMinimal || self == .recompute }
    /// Whether the block starts a checkpointed segment.
    var startsSegment: Bool { self == .checkpoint || self == .checkpointMinimal }

    public var description: String { rawValue }
}

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
    /// Each block's own choice, as the budget program makes them: any mix of kept blocks,
    /// stashes and checkpointed segments (`CheckpointPlan(choices:)` checks and names it).
    case perBlock([BlockChoice])

    /// The plan that makes these choices, by its simplest name (segments, selective or
    /// minimal where it is one of them). The last block must keep everything (nothing runs
    /// between its forward and backward passes), and a `recompute` must follow a
    /// `checkpoint` or another `recompute`.
    public init(choices: [BlockChoice]) throws {
        guard let last = choices.last else { throw RematError.invalidArgument("a plan needs at least one block") }
        guard last == .keep else { throw RematError.invalidArgument("the last block must keep everything, not \(last)") }
        for (i, c) in choices.enumerated() where c == .recompute && (i == 0 || !choices[i - 1].recomputes) {
            throw RematError.invalidArgument("block \(i) is recomputed with a segment, but no checkpointed segment reaches it: make it a checkpoint")
        }
        let n = choices.count, body = choices.dropLast()
        if body.allSatisfy({ $0 == .selective }) && n > 1 { self = .selective(blocks: n); return }
        if body.allSatisfy({ $0 == .minimal }) && n > 1 { self = .minimal(blocks: n); return }
        let plan = CheckpointPlan.perBlock(choices)
        self = plan.isSegmented ? .segmented(plan.segments) : plan
    }

    /// Every block's choice under the plan.
    public var choices: [BlockChoice] {
        switch self {
        case .segmented(let ranges):
            return ranges.enumerated().flatMap { s, r in
                s == ranges.count - 1 ? r.map { _ in BlockChoice.keep } : r.map { $0 == r.lowerBound ? .checkpoint : .recompute }
            }
        case .selective(let n): return Array(repeating: .selective, count: n - 1) + [.keep]
        case .minimal(let n): return Array(repeating: .minimal, count: n - 1) + [.keep]
        case .perBlock(let c): return c
        }
    }

    /// Whether the plan is checkpointed segments and a last kept one (the only plans a
    /// recompute thread can run ahead of the backward pass).
    public var isSegmented: Bool {
        let c = choices
        guard let tail = c.firstIndex(of: .keep) else { return false }
        return c[..<tail].allSatisfy { $0 == .checkpoint || $0 == .recompute } && c[tail...].allSatisfy { $0 == .keep }
    }

    /// The stash each block keeps, if any: its own choice's, or, in a segment rebuilt into
    /// minimal stashes, `minimal` (nil: none).
    var stashKinds: [BlockChoice?] {
        var minimalSegment = false
        return choices.map { c in
            if c.startsSegment { minimalSegment = c == .checkpointMinimal }
            if c.stashes { return c }
            return c.recomputes && minimalSegment ? .minimal : nil
        }
    }

    /// A plan from the policy and the chain's profile (bytes balance sqrt(n)'s segments; a
    /// budget is solved on the profile's times and bytes). `overlapped`: the step will rebuild
    /// on a recompute thread, so a budget chooses among segmentations only (what that thread
    /// runs), and the step paces the thread under the budget (`Checkpointing.effectiveOverlap`).
    public init(policy: CheckpointPolicy, profile: ChainProfile, overlapped: Bool = false) throws {
        let b = profile.blocks
        if case .budget(let bytes) = policy {
            guard let best = CheckpointPlan.cheapest(within: bytes, profile, perBlock: !overlapped) else {
                let smallest = CheckpointPlan.smallestBudget(profile, perBlock: !overlapped)
                throw RematError.invalidArgument(
                    "a budget of \(bytes) bytes (\(CheckpointPolicy.mebibytes(bytes)) MiB) cannot hold this chain at batch \(profile.batch)"
                    + (overlapped ? " with overlap" : "") + ": "
                    + "the smallest feasible budget is \(smallest) bytes (\(CheckpointPolicy.mebibytes(smallest)) MiB); "
                    + "raise the budget or lower the batch")
            }
            self = best
            return
        }
        try self.init(policy: policy, blocks: b.count, blockBytes: b.map(\.keptBytes))
        // the least: a block whose records hold no more than its stash would keeps them (a
        // max pool keeps its winners, and the ReLU before it nothing)
        if policy == .minimal || policy == .lean {
            self = try CheckpointPlan(choices: zip(choices, b).map { c, cost in
                c.stashes && cost.heldBytes <= cost.stash(c).heldBytes(cost) ? .keep : c
            })
        }
        // sqrt(n) sets the memory; at that peak, the program finds the segments with the
        // least recompute (often fewer than the balanced split)
        if policy == .sqrtN {
            let balanced = predict(profile)
            if let better = CheckpointPlan.cheapest(within: balanced.peakBytes, profile, perBlock: false),
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
        case .lean:
            self = try CheckpointPlan(choices: Array(repeating: .lean, count: n - 1) + [.keep])
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

    /// The chain split where its handling changes: each checkpointed segment, and each run
    /// of blocks with one other choice (a plan of segments: its segments; none: one).
    public var segments: [Range<Int>] {
        var out: [Range<Int>] = [], c = choices
        for (i, choice) in c.enumerated() {
            if i > 0 && (choice == .recompute || (choice == c[i - 1] && !choice.startsSegment)) {
                out[out.count - 1] = out[out.count - 1].lowerBound..<(i + 1)
            } else {
                out.append(i..<(i + 1))
            }
        }
        return out
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

    /// Blocks whose forward runs twice in a step (rebuilt from a checkpoint).
    public var recomputedBlocks: Int { choices.filter(\.recomputes).count }

    public var description: String {
        switch self {
        case .selective(let n): return "selective (cheap layers of blocks 0-\(max(0, n - 2)) rebuilt)"
        case .minimal(let n): return "minimal (cheap layers of blocks 0-\(max(0, n - 2)) rebuilt from the least kept)"
        case .segmented, .perBlock: break
        }
        func span(_ r: Range<Int>) -> String { r.count == 1 ? "[\(r.lowerBound)]" : "[\(r.lowerBound)-\(r.upperBound - 1)]" }
        guard case .perBlock(let c) = self else { return segments.map(span).joined(separator: " ") }
        func name(_ first: BlockChoice) -> String {
            first == .checkpointMinimal ? "rebuilt minimal " : first.recomputes ? "rebuilt " : "\(first) "
        }
        return segments.map { name(c[$0.lowerBound]) + span($0) }.joined(separator: " ")
    }
}

// MARK: - Budget: the least rebuild time within a peak

extension CheckpointPlan {
    /// The plan with the least rebuild seconds whose predicted peak fits in `budget`, or nil
    /// if none does. `perBlock`: each block may keep everything, keep a minimal, lean or
    /// selective stash, or be rebuilt in a checkpointed segment (into records, or into minimal stashes);
    /// otherwise segmentations only.
    ///
    /// A step runs the chain as stages (a checkpointed segment, a kept block, a stashed
    /// block): forward in order, backward in reverse, each holding what it keeps until its own
    /// backward pass. So the peak is max over stages t of (H_t + local_t): H_t, the bytes the
    /// stages before t keep; local_t, what t adds while its forward, or its rebuild and
    /// backward, run. local_t depends on t and, through the activation between them, on the
    /// stage before: whether that one keeps t's input, and whether it can rebuild it from its
    /// stash. A dynamic program over block boundaries keeps, for each such entry, the Pareto
    /// front of (H, rebuild seconds): a chain with several options a stage (Beaumont et al.,
    /// "Optimal checkpointing for heterogeneous chains", and its follow-ups), with one level
    /// of checkpoints as this engine runs them.
    public static func cheapest(within budget: Int, _ profile: ChainProfile, perBlock: Bool = true) -> CheckpointPlan? {
        StageCosts(profile, perBlock: perBlock).cheapest(within: budget)
    }

    /// The smallest budget any plan fits in (binary search over `cheapest`).
    public static func smallestBudget(_ profile: ChainProfile, perBlock: Bool = true) -> Int {
        let costs = StageCosts(profile, perBlock: perBlock)
        var hi = try! CheckpointPlan(policy: .keepAll, blocks: profile.blocks.count).predict(profile).peakBytes
        var lo = 0
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if costs.cheapest(within: mid) != nil { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}

/// What each stage a plan can run costs, for each way the stage before can leave its input,
/// computed once per profile by replaying the stage's operations (`ChainProfile.stageCost`).
private struct StageCosts {
    /// How the stage before leaves a stage's input: held by its records (then shared, not
    /// charged again), and the stash kind it can rebuild the input from (nil: none).
    struct Entry: Hashable { var inputHeld: Bool; var rebuiltBy: BlockChoice? }
    struct Option { let end: Int; let choice: BlockChoice; let costs: [Entry: StageCost] }

    let profile: ChainProfile
    let options: [[Option]] // by first block
    let entries: [Entry] // in a fixed order, so that ties go the same way in every process

    init(_ profile: ChainProfile, perBlock: Bool) {
        self.profile = profile
        let b = profile.blocks, n = b.count
        let kinds: [BlockChoice?] = perBlock ? [nil, .selective, .minimal, .lean] : [nil]
        let entries = [false, true].flatMap { held in kinds.map { Entry(inputHeld: held, rebuiltBy: $0) } }
        self.entries = entries
        options = (0..<n).map { i in
            var stages: [(Int, BlockChoice)] = (i + 1..<n).map { ($0, .checkpoint) }
            if perBlock {
                stages += (i + 1..<n).map { ($0, .checkpointMinimal) }
                stages.append((i + 1, .keep))
                if i < n - 1 {
                    stages.append((i + 1, .selective))
                    if b[i].minimal != b[i].selective { stages.append((i + 1, .minimal)) }
                    if b[i].lean.bytes < b[i].minimal.bytes { stages.append((i + 1, .lean)) }
                }
            } else {
                stages.append((n, .keep))
            }
            return stages.map { end, choice in
                Option(end: end, choice: choice, costs: Dictionary(uniqueKeysWithValues: entries.compactMap { e in
                    if e.rebuiltBy != nil && (!choice.stashes || i == 0) { return nil } // as `cheapest` looks them up
                    return (e, profile.stageCost(i..<end, choice, inputHeld: e.inputHeld, rebuiltBy: e.rebuiltBy))
                }))
            }
        }
    }

    /// The entry a stage leaves the next one.
    func exit(_ i: Int, _ choice: BlockChoice, _ cost: StageCost) -> Entry {
        let rebuilds = choice.stashes && profile.blocks[i].stash(choice).outputRebuildPeak != nil
        return Entry(inputHeld: cost.keepsOutput, rebuiltBy: rebuilds ? choice : nil)
    }

    func cheapest(within budget: Int) -> CheckpointPlan? {
        let n = profile.blocks.count
        struct State { var bytes: Int; var seconds: Double; var parent: Int; var start: Int; var choice: BlockChoice }
        var states: [State] = [State(bytes: 0, seconds: 0, parent: -1, start: 0, choice: .keep)]
        var fronts: [[Entry: [Int]]] = Array(repeating: [:], count: n + 1) // states whose next stage starts at i
        fronts[0][Entry(inputHeld: false, rebuiltBy: nil)] = [0]
        var best: Int?
        for i in 0..<n {
            for entry in entries {
                guard let candidates = fronts[i][entry] else { continue }
                // keep the states no other beats on both bytes and seconds
                let sorted = candidates.sorted { (states[$0].bytes, states[$0].seconds) < (states[$1].bytes, states[$1].seconds) }
                var kept: [Int] = [], least = Double.infinity
                for s in sorted where states[s].seconds < least { kept.append(s); least = states[s].seconds }
                for option in options[i] {
                    // only a stash rebuilds its input from the stash before it
                    let rebuilt = option.choice.stashes ? entry : Entry(inputHeld: entry.inputHeld, rebuiltBy: nil)
                    guard let cost = option.costs[rebuilt] else { continue }
                    let next = exit(i, option.choice, cost)
                    for s in kept where states[s].bytes + max(cost.forwardPeak, cost.backwardPeak) <= budget {
                        let st = states[s]
                        let state = State(bytes: st.bytes + cost.keeps, seconds: st.seconds + cost.seconds, parent: s,
                                          start: i, choice: option.choice)
                        if option.end == n {
                            if best == nil || state.seconds < states[best!].seconds { states.append(state); best = states.count - 1 }
                        } else {
                            states.append(state)
                            fronts[option.end][next, default: []].append(states.count - 1)
                        }
                    }
                }
            }
        }
        guard var s = best else { return nil }
        var choices = [BlockChoice](repeating: .keep, count: n), end = n
        while states[s].parent >= 0 {
            let st = states[s]
            for k in st.start..<end { choices[k] = st.choice.startsSegment && k > st.start ? .recompute : st.choice }
            (end, s) = (st.start, st.parent)
        }
        return try! CheckpointPlan(choices: choices)
    }
}

extension BlockCost {
    /// Bytes the block's record keeps (what sqrt(n) balances).
    var keptBytes: Int { savedBytes + (keepsInput ? inputBytes : 0) + (keepsOutput ? outputBytes : 0) }
    /// Bytes its record keeps besides its input (which the block before holds anyway).
    var heldBytes: Int { savedBytes + (keepsOutput ? outputBytes : 0) }
}

extension StashCost {
    /// Bytes the stash keeps, its block's output included where it holds that.
    func heldBytes(_ block: BlockCost) -> Int { bytes + (keepsOutput ? block.outputBytes : 0) }
}

// MARK: - The trade-off curve

extension CheckpointPlan {
    /// Policies along the trade-off between activation memory and recompute, for one chain:
    /// none, minimal, lean, selective, sqrt(n), and `budgets` budget plans spread evenly from the smallest
    /// feasible budget to no checkpointing's peak (each budget the peak of the plan it gives,
    /// distinct plans only).
    public static func frontier(_ profile: ChainProfile, budgets: Int = 8) throws -> [CheckpointPolicy] {
        let n = profile.blocks.count
        let none = try CheckpointPlan(policy: .keepAll, profile: profile).predict(profile).peakBytes
        let smallest = smallestBudget(profile)
        var policies: [CheckpointPolicy] = [.keepAll, .minimal, .lean, .selective, .sqrtN]
        var seen: [CheckpointPlan] = try [.segmented([0..<n]), .minimal(blocks: n), CheckpointPlan(policy: .lean, blocks: n), .selective(blocks: n)]
        for k in 0..<max(budgets, 0) {
            let bound = smallest + (none - smallest) * k / max(1, budgets - 1)
            guard let plan = cheapest(within: bound, profile), !seen.contains(plan) else { continue }
            seen.append(plan)
            policies.append(.budget(bytes: plan.predict(profile).peakBytes))
        }
        return policies
    }
}
