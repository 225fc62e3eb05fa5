/// What a plan is predicted to cost, from a chain profile: the peak of activation bytes the
/// allocator will see and the forward work done twice.
public struct PlanPrediction: Sendable, Equatable {
    /// The most activation bytes a step can hold: the overlapped bound where there is one,
    /// else the peak.
    public var activationPeak: Int { overlappedPeakBound ?? peakBytes }

    /// The extra forward time as a share of the predicted step without checkpointing.
    public var overhead: Double { extraForwardSeconds / max(stepSeconds, 1e-12) }

    /// Peak activation bytes of a step run sequentially (recompute on the backward thread).
    public var peakBytes: Int
    /// With overlap: an upper bound on the peak, reached when the recompute thread has
    /// rebuilt its full lookahead while the backward pass is at its own peak; with a memory
    /// limit, no more than the larger of the limit and `peakBytes` (what pacing allows).
    public var overlappedPeakBound: Int?
    /// Blocks whose forward runs twice (selective: blocks whose cheap layers do).
    public var recomputedBlocks: Int
    /// Extra forward FLOPs and seconds per step (selective: FLOPs of the expensive layers
    /// are not redone, so they are 0; the seconds are the cheap layers' rebuilds).
    public var extraForwardFLOPs: Int
    public var extraForwardSeconds: Double
    /// Forward plus backward seconds of the step without checkpointing, for scale.
    public var stepSeconds: Double
}

/// Live activation bytes as a plan runs: named activations (block boundaries, shared by
/// the records that hold them) are freed when their last holder lets go; other bytes are
/// charged and freed directly.
struct LiveBytes {
    private(set) var live = 0
    private(set) var peak = 0
    private var holders: [Int: (bytes: Int, count: Int)] = [:]

    /// A moment when `extra` more bytes are live (a kernel's scratch, a layer's transients).
    mutating func transient(_ extra: Int) { peak = max(peak, live + extra) }
    mutating func charge(_ bytes: Int) { live += bytes; peak = max(peak, live) }
    mutating func release(_ bytes: Int) { live -= bytes }
    /// Starts a new peak from what is live now.
    mutating func resetPeak() { peak = live }

    /// Activation `id` (of `bytes`) gains a holder; the first holder charges it.
    mutating func hold(_ id: Int, _ bytes: Int) {
        if let h = holders[id] { holders[id] = (h.bytes, h.count + 1) } else { holders[id] = (bytes, 1); charge(bytes) }
    }
    /// How many holders activation `id` has.
    func holders(of id: Int) -> Int { holders[id]?.count ?? 0 }
    mutating func drop(_ id: Int) {
        guard let h = holders[id] else { preconditionFailure("activation \(id) dropped while not held") }
        if h.count == 1 { holders[id] = nil; release(h.bytes) } else { holders[id] = (h.bytes, h.count - 1) }
    }
}

/// A step's schedule replayed against a profile's byte sizes: each operation allocates and
/// frees what the executor's does. Activation k is block k's input (k = n: the logits); the
/// images cost nothing (the caller owns them).
struct ByteReplay {
    let profile: ChainProfile
    var bytes = LiveBytes()
    /// The stash each block keeps (`CheckpointPlan.stashKinds`).
    var stashKinds: [BlockChoice?]
    /// Seconds and forward FLOPs of the rebuilds replayed so far.
    private(set) var seconds = 0.0, flops = 0
    /// What each block's record holds: bytes of its own and the activations it keeps.
    private var records: [Int: (bytes: Int, holds: [Int])] = [:]

    init(_ profile: ChainProfile, stashKinds: [BlockChoice?]? = nil) {
        self.profile = profile
        self.stashKinds = stashKinds ?? Array(repeating: nil, count: profile.blocks.count)
    }

    private var b: [BlockCost] { profile.blocks }
    private func stash(_ k: Int) -> StashCost { b[k].stash(stashKinds[k]) }

    mutating func apply(_ op: StepOperation) {
        switch op {
        case .checkpoint(let s):
            bytes.hold(s.blocks.lowerBound, b[s.blocks.lowerBound].inputBytes)
        case .forward(let k, let keep):
            forward(k, keep: keep, rebuild: false)
        case .loss:
            bytes.charge(b[b.count - 1].outputBytes) // d(loss)/d(logits); the logits stay held
        case .rebuild(let s):
            let (i, j) = (s.blocks.lowerBound, s.blocks.upperBound)
            bytes.hold(i, b[i].inputBytes) // the rebuild's variable
            for k in s.blocks {
                forward(k, keep: .records, rebuild: true)
                (seconds, flops) = (seconds + b[k].recomputeSeconds, flops + b[k].forwardFLOPs * profile.batch)
            }
            bytes.drop(j) // the rebuild returns its records, not its output
            bytes.drop(i) // and lets the checkpoint go
        case .rebuildIntoStashes(let s, let keepsInput):
            let (i, j) = (s.blocks.lowerBound, s.blocks.upperBound)
            for k in s.blocks { bytes.release(records.removeValue(forKey: k)!.bytes) } // the statistics: each stash reduces again
            bytes.hold(i, b[i].inputBytes) // the rebuild's variable
            for (k, keeps) in zip(s.blocks, keepsInput) {
                forward(k, keep: .stash(keepsInput: keeps), rebuild: false)
                (seconds, flops) = (seconds + b[k].forwardSeconds, flops + b[k].forwardFLOPs * profile.batch)
            }
            bytes.drop(j) // its output goes unused
            bytes.drop(i) // and lets the checkpoint go
        case .rebuildFromStash(let k):
            var r = records[k]!
            let s = stash(k)
            if !r.holds.contains(k) { // the input, rebuilt from the previous block's stash
                let previous = stash(k - 1)
                bytes.transient(previous.outputRebuildPeak ?? 0)
                bytes.charge(previous.outputRebuildBytes)
                r.bytes += previous.outputRebuildBytes
                seconds += previous.outputRebuildSeconds
            }
            bytes.transient(s.rebuildPeak)
            bytes.charge(s.rebuildBytes)
            r.bytes += s.rebuildBytes
            seconds += s.rebuildSeconds
            flops += s.rebuildFLOPs * profile.batch
            records[k] = r
        case .backward(let k):
            let c = b[k], r = records.removeValue(forKey: k)!
            bytes.transient(c.backwardPeak)
            bytes.charge(c.inputGradientBytes)
            bytes.release(k == b.count - 1 ? c.outputBytes : b[k + 1].inputGradientBytes) // the gradient it consumed
            bytes.release(r.bytes)
            for id in r.holds { bytes.drop(id) }
        case .release:
            break
        }
    }

    /// Block k's forward pass from the current activation (held as activation k), or with
    /// `rebuild` its recompute (its BatchNorm statistics, recorded by the forward, taken back).
    private mutating func forward(_ k: Int, keep: StepOperation.Keep, rebuild: Bool) {
        let c = b[k]
        bytes.transient(rebuild ? c.recomputePeak : c.forwardPeak)
        bytes.hold(k + 1, c.outputBytes) // the output, held by the loop's variable
        var r = (bytes: 0, holds: [Int]())
        switch keep {
        case .records where rebuild:
            r.bytes = records[k]!.bytes + c.savedBytes - c.statisticsBytes // the statistics join the records
            bytes.charge(c.savedBytes - c.statisticsBytes)
        case .records:
            r.bytes = c.savedBytes
            bytes.charge(c.savedBytes)
        case .statistics:
            r.bytes = c.statisticsBytes
            bytes.charge(c.statisticsBytes)
        case .stash(let keepsInput):
            let s = stash(k)
            r.bytes = s.bytes
            bytes.charge(s.bytes)
            if keepsInput { r.holds.append(k) }
            if s.keepsOutput { r.holds.append(k + 1) }
        }
        if keep == .records {
            if c.keepsInput { r.holds.append(k) }
            if c.keepsOutput { r.holds.append(k + 1) }
        }
        for id in r.holds { bytes.hold(id, id == k ? c.inputBytes : c.outputBytes) }
        records[k] = r
        bytes.drop(k) // the loop moves on to the output
    }

    /// Sets up a segment's checkpoint and recorded statistics, as its forward left them.
    mutating func checkpointed(_ range: Range<Int>) {
        apply(.checkpoint(Segment(index: 0, blocks: range)))
        for k in range {
            records[k] = (b[k].statisticsBytes, [])
            bytes.charge(b[k].statisticsBytes)
        }
    }

    /// Sets up what the backward pass holds when it reaches the end of `range` from above:
    /// the logits and the incoming gradient.
    mutating func backwardEntered(at j: Int) {
        let n = b.count
        bytes.charge(b[n - 1].outputBytes + (j == n ? b[n - 1].outputBytes : b[j].inputGradientBytes))
        if j == n { bytes.hold(n, 0) } // the logits, charged above, are the last record's output
    }
}

extension ChainProfile {
    /// What stage `range` (one block for a stash) costs under `choice`, above the bytes the
    /// stages before it keep: `inputHeld`, the stage before keeps its input (then not
    /// charged again); `rebuiltBy`, the stash kind of the block before when that block can
    /// rebuild this one's input (a stash then keeps no input). Replays the stage's operations.
    func stageCost(_ range: Range<Int>, _ choice: BlockChoice, inputHeld: Bool, rebuiltBy: BlockChoice?) -> StageCost {
        let (i, j) = (range.lowerBound, range.upperBound)
        // the stage in a plan whose other blocks each start a segment of their own, so that
        // the schedule's rules make it
        var choices = [BlockChoice](repeating: .checkpoint, count: blocks.count)
        if let before = rebuiltBy { choices[i - 1] = before }
        for k in range { choices[k] = choice.startsSegment && k > i ? .recompute : choice }
        let plan = CheckpointPlan.perBlock(choices)
        let stage = StepSchedule.stages(of: plan, rebuildsOutput: rebuildsOutput(plan)).stages.first { $0.firstBlock == i }!
        var r = ByteReplay(self, stashKinds: plan.stashKinds)
        r.bytes.hold(i, blocks[i].inputBytes) // the step's current activation
        if inputHeld { r.bytes.hold(i, blocks[i].inputBytes) } // and the stage before's records
        for op in StepSchedule.forwardPhase(of: stage) { r.apply(op) }
        if j == blocks.count {
            r.apply(.loss)
            for op in StepSchedule.backwardPhase(of: stage) { r.apply(op) }
            return StageCost(forwardPeak: r.bytes.peak, backwardPeak: r.bytes.peak, keeps: 0, keepsOutput: false, seconds: r.seconds)
        }
        let forward = r.bytes.peak, keepsOutput = r.bytes.holders(of: j) > 1
        r.bytes.drop(j) // the output goes on as the next stage's input
        let keeps = r.bytes.live - (keepsOutput ? blocks[j].inputBytes : 0) // the next stage counts the output
        r.bytes.resetPeak()
        r.backwardEntered(at: j)
        for op in StepSchedule.backwardPhase(of: stage) { r.apply(op) }
        return StageCost(forwardPeak: forward, backwardPeak: r.bytes.peak, keeps: keeps, keepsOutput: keepsOutput, seconds: r.seconds)
    }

    /// Peak of a segment's backward pass alone, its records already rebuilt (with overlap,
    /// by the other thread): the logits, the incoming gradient and the records live.
    func backwardOnlyPeak(_ range: Range<Int>) -> Int {
        var r = ByteReplay(self)
        r.backwardEntered(at: range.upperBound)
        guard !range.isEmpty else { return r.bytes.peak }
        r.checkpointed(range)
        r.apply(.rebuild(Segment(index: 0, blocks: range)))
        r.bytes.resetPeak()
        for k in range.reversed() { r.apply(.backward(block: k)) }
        return r.bytes.peak
    }

    /// Bytes a rebuilt segment holds until its backward pass (what a lookahead slot costs).
    func rebuiltBytes(_ range: Range<Int>) -> Int {
        guard !range.isEmpty else { return 0 }
        var r = ByteReplay(self)
        r.checkpointed(range)
        r.apply(.rebuild(Segment(index: 0, blocks: range)))
        return r.bytes.live
    }

    /// Whether each block can rebuild its output from its stash under `plan`.
    func rebuildsOutput(_ plan: CheckpointPlan) -> [Bool] {
        zip(blocks, plan.stashKinds).map { $0.stash($1).outputRebuildPeak != nil }
    }
}

/// What one stage of a plan adds to the bytes the stages before it keep: the most while its
/// forward phase runs (the last stage: with the loss and its backward phase) and while its
/// backward phase runs (a segment's rebuild included); what it keeps for the stages after
/// it, and whether that includes its output; the seconds of its rebuilds.
struct StageCost {
    var forwardPeak: Int
    var backwardPeak: Int
    var keeps: Int
    var keepsOutput: Bool
    var seconds: Double
}

/// Paces the recompute thread under `Overlap.memoryLimit` with the same replay of allocations
/// as the overlapped bound: a rebuild of block i of segment k may start only if what the
/// recompute thread then holds (k's records so far, block i's forward peak, the segments it
/// published ahead) plus the most the backward pass can still reach from where it is (the
/// checkpoints before its segment and `backwardOnlyPeak` of the blocks it has left) fits.
struct RecomputePacer: Sendable {
    let limit: Int
    let profile: ChainProfile
    let segments: [Range<Int>]
    private let prefix: [Int] // checkpoint and statistics bytes of the segments before s

    init(limit: Int, profile: ChainProfile, plan: CheckpointPlan) {
        self.limit = limit
        self.profile = profile
        segments = plan.segments
        var bytes = 0, prefix: [Int] = []
        for r in plan.segments {
            prefix.append(bytes)
            bytes += profile.checkpointBytes(r)
        }
        self.prefix = prefix
    }

    /// May block i of segment k be rebuilt now, with the backward pass in segment s with the
    /// blocks below `upper` left, and `published` segments rebuilt and not yet taken? While the
    /// block runs, the backward pass may finish s and go on into the published segments, so
    /// each of those phases must fit: its segment's backward peak, the published segments
    /// still below it, and this rebuild so far.
    func fits(block i: Int, segment k: Int, backward s: Int, upper: Int, published: [Int]) -> Bool {
        let b = profile.blocks, lo = segments[k].lowerBound
        let rebuilding = (i > lo ? profile.rebuiltBytes(lo..<i) + b[i].inputBytes : 0) + b[i].recomputePeak
        let ahead = published.sorted(by: >) // the order the backward pass takes them in
        var below = ahead.reduce(0) { $0 + profile.rebuiltBytes(segments[$1]) }
        var need = prefix[s] + profile.backwardOnlyPeak(segments[s].lowerBound..<max(upper, segments[s].lowerBound)) + below
        for p in ahead {
            below -= profile.rebuiltBytes(segments[p])
            need = max(need, prefix[p] + profile.backwardOnlyPeak(segments[p]) + below)
        }
        return need + rebuilding <= limit
    }
}

extension CheckpointPlan {
    /// The plan's predicted peak bytes and extra work on this profile (same chain length).
    public func predict(_ profile: ChainProfile, overlap: Overlap? = nil) -> PlanPrediction {
        let b = profile.blocks
        let step = b.reduce(0) { $0 + $1.forwardSeconds + $1.backwardSeconds }
        let schedule = StepSchedule(self, rebuildsOutput: profile.rebuildsOutput(self))
        var r = ByteReplay(profile, stashKinds: schedule.stashKinds)
        r.bytes.hold(0, 0) // the images, the step's first activation
        for op in schedule.operations { r.apply(op) }
        var bound: Int?
        if let o = overlap, isSegmented {
            // the main thread runs the forward and then only backward passes; while segment
            // s's runs, the recompute thread may hold up to `lookahead` earlier segments
            // rebuilt and be running a forward
            var prefix = 0, worst = 0
            for (s, range) in segments.enumerated() {
                let last = s == segments.count - 1
                worst = max(worst, prefix + profile.stageCost(range, last ? .keep : .checkpoint, inputHeld: false, rebuiltBy: nil).forwardPeak)
                let ahead = segments[max(0, s - o.lookahead)..<s].reduce(0) { $0 + profile.rebuiltBytes($1) }
                let transient = s > 0 ? segments[s - 1].map { b[$0].recomputePeak }.max() ?? 0 : 0
                worst = max(worst, prefix + profile.backwardOnlyPeak(range) + ahead + transient)
                prefix += profile.checkpointBytes(range)
            }
            bound = o.memoryLimit.map { min(worst, max($0, r.bytes.peak)) } ?? worst
        }
        return PlanPrediction(peakBytes: r.bytes.peak, overlappedPeakBound: bound, recomputedBlocks: choices.filter { $0 != .keep }.count,
                              extraForwardFLOPs: r.flops, extraForwardSeconds: r.seconds, stepSeconds: step)
    }
}

extension ChainProfile {
    /// What a checkpointed segment keeps until its rebuild: its input and its BatchNorms' statistics.
    func checkpointBytes(_ range: Range<Int>) -> Int {
        blocks[range.lowerBound].inputBytes + range.reduce(0) { $0 + blocks[$1].statisticsBytes }
    }
}
