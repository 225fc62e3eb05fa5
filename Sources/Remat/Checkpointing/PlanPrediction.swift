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
/// charged and freed directly. Mirrors the order of `CheckpointEngine` exactly.
struct LiveBytes {
    private(set) var live = 0
    private(set) var peak = 0
    private var holders: [Int: (bytes: Int, count: Int)] = [:]

    /// A moment when `extra` more bytes are live (a kernel's scratch, a layer's transients).
    mutating func transient(_ extra: Int) { peak = max(peak, live + extra) }
    mutating func charge(_ bytes: Int) { live += bytes; peak = max(peak, live) }
    mutating func release(_ bytes: Int) { live -= bytes }

    /// Activation `id` (of `bytes`) gains a holder; the first holder charges it.
    mutating func hold(_ id: Int, _ bytes: Int) {
        if let h = holders[id] { holders[id] = (h.bytes, h.count + 1) } else { holders[id] = (bytes, 1); charge(bytes) }
    }
    mutating func drop(_ id: Int) {
        guard let h = holders[id] else { preconditionFailure("activation \(id) dropped while not held") }
        if h.count == 1 { holders[id] = nil; release(h.bytes) } else { holders[id] = (h.bytes, h.count - 1) }
    }
}

extension ChainProfile {
    /// Block k's forward pass, or (`rebuild`) its recompute.
    private func forward(_ k: Int, keep: Bool, rebuild: Bool = false, _ m: inout LiveBytes) {
        let c = blocks[k]
        m.transient(rebuild ? c.recomputePeak : c.forwardPeak)
        m.hold(k + 1, c.outputBytes) // the output, held by the loop's variable
        if keep {
            m.charge(c.savedBytes)
            if c.keepsInput { m.hold(k, c.inputBytes) }
            if c.keepsOutput { m.hold(k + 1, c.outputBytes) }
        }
        m.drop(k) // the loop moves on to the output
    }

    private func backward(_ k: Int, _ m: inout LiveBytes) {
        let c = blocks[k]
        m.transient(c.backwardPeak)
        m.charge(c.inputGradientBytes)
        m.release(k == blocks.count - 1 ? c.outputBytes : blocks[k + 1].inputGradientBytes) // the gradient it consumed
        m.release(c.savedBytes)
        if c.keepsInput { m.drop(k) }
        if c.keepsOutput { m.drop(k + 1) }
    }

    /// Peak above the bytes of earlier segments' checkpoints while segment `range` runs:
    /// its forward, and (last segment) the loss and its backward, or (other segments) its
    /// rebuild from the checkpoint and its backward.
    func segmentPeak(_ range: Range<Int>, last: Bool) -> Int {
        let n = blocks.count, i = range.lowerBound
        var m = LiveBytes()
        m.hold(i, blocks[i].inputBytes) // the checkpoint
        m.hold(i, blocks[i].inputBytes) // and the loop's variable
        for k in range { forward(k, keep: last, &m) }
        if !last { return m.peak } // the output stays as the next segment's checkpoint
        m.drop(i) // the engine lets the last checkpoint go before the backward pass
        m.charge(blocks[n - 1].outputBytes) // d(loss)/d(logits); the logits stay held
        for k in range.reversed() { backward(k, &m) }
        return m.peak
    }

    /// Peak of a non-last segment's backward phase: with the logits and the incoming
    /// gradient live, rebuild from the checkpoint, then back-propagate.
    func rebuildPeak(_ range: Range<Int>) -> Int {
        let n = blocks.count, (i, j) = (range.lowerBound, range.upperBound)
        var m = LiveBytes()
        m.charge(blocks[n - 1].outputBytes + blocks[j].inputGradientBytes)
        m.hold(i, blocks[i].inputBytes) // the checkpoint
        m.hold(i, blocks[i].inputBytes) // the rebuild's variable
        for k in range { forward(k, keep: true, rebuild: true, &m) }
        m.drop(j) // the rebuild returns its records, not its output
        m.drop(i) // the checkpoint is let go
        for k in range.reversed() { backward(k, &m) }
        return m.peak
    }

    /// Peak of a segment's backward pass alone, its records already rebuilt (with overlap,
    /// by the other thread): the logits, the incoming gradient and the records live.
    func backwardOnlyPeak(_ range: Range<Int>) -> Int {
        let n = blocks.count, j = range.upperBound
        var m = LiveBytes()
        m.charge(blocks[n - 1].outputBytes + (j == n ? blocks[n - 1].outputBytes : blocks[j].inputGradientBytes))
        if j == n { m.hold(n, 0) } // the logits, charged above, are the last record's output
        for k in range {
            m.charge(blocks[k].savedBytes)
            if blocks[k].keepsInput { m.hold(k, blocks[k].inputBytes) }
            if blocks[k].keepsOutput { m.hold(k + 1, blocks[k].outputBytes) }
        }
        for k in range.reversed() { backward(k, &m) }
        return m.peak
    }

    /// Bytes a rebuilt segment holds until its backward pass (what a lookahead slot costs).
    func rebuiltBytes(_ range: Range<Int>) -> Int {
        var m = LiveBytes()
        m.hold(range.lowerBound, blocks[range.lowerBound].inputBytes)
        for k in range { forward(k, keep: true, rebuild: true, &m) }
        m.drop(range.upperBound)
        return m.live
    }

    /// Selective recomputation of every block but the last: forward keeping block inputs
    /// that cannot be rebuilt and the expensive layers' outputs; backward rebuilding each
    /// block (and, where possible, its input) from them.
    func selectivePeak() -> Int {
        let n = blocks.count
        var m = LiveBytes()
        var inputKept = [Bool](repeating: true, count: n)
        for k in 1..<max(n, 1) { inputKept[k] = blocks[k - 1].outputRebuildPeak == nil }
        m.hold(0, 0) // the images: the loop's variable
        m.hold(0, 0) // and the kept input of block 0
        for k in 0..<n {
            let c = blocks[k]
            if k == n - 1 { forward(k, keep: true, &m); break }
            m.transient(c.forwardPeak)
            m.hold(k + 1, c.outputBytes)
            m.charge(c.stashBytes)
            if c.stashKeepsOutput { m.hold(k + 1, c.outputBytes) }
            if inputKept[k + 1] { m.hold(k + 1, c.outputBytes) }
            m.drop(k)
        }
        m.charge(blocks[n - 1].outputBytes)
        backward(n - 1, &m)
        for k in stride(from: n - 2, through: 0, by: -1) {
            let c = blocks[k]
            var rebuiltInput = 0
            if !inputKept[k] {
                let p = blocks[k - 1]
                m.transient(p.outputRebuildPeak ?? 0)
                rebuiltInput = p.outputRebuildBytes
                m.charge(rebuiltInput)
            }
            m.transient(c.rebuildPeak)
            m.charge(c.rebuildBytes)
            m.transient(c.backwardPeak)
            m.charge(c.inputGradientBytes)
            m.release(blocks[k + 1].inputGradientBytes)
            m.release(c.rebuildBytes + c.stashBytes + rebuiltInput)
            if c.stashKeepsOutput { m.drop(k + 1) }
            if inputKept[k] { m.drop(k) }
        }
        return m.peak
    }
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
            bytes += profile.blocks[r.lowerBound].inputBytes + r.reduce(0) { $0 + profile.blocks[$1].statisticsBytes }
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
        if selective {
            let seconds = b.dropLast().reduce(0) { $0 + $1.rebuildSeconds + ($1.outputRebuildPeak == nil ? 0 : $1.outputRebuildSeconds) }
            return PlanPrediction(peakBytes: profile.selectivePeak(), overlappedPeakBound: nil, recomputedBlocks: b.count - 1,
                                  extraForwardFLOPs: 0, extraForwardSeconds: seconds, stepSeconds: step)
        }
        var prefix = 0, peak = 0, bound = 0
        for (s, r) in segments.enumerated() {
            let last = s == segments.count - 1
            let running = profile.segmentPeak(r, last: last) // forward (and, last, its backward)
            let backward = last ? running : profile.rebuildPeak(r)
            peak = max(peak, prefix + running, prefix + backward)
            // with overlap, the main thread runs the forward and then only backward passes;
            // while segment s's runs, the recompute thread may hold up to `lookahead` earlier
            // segments rebuilt and be running a forward
            bound = max(bound, prefix + running)
            if let o = overlap {
                let ahead = segments[max(0, s - o.lookahead)..<s].reduce(0) { $0 + profile.rebuiltBytes($1) }
                let transient = s > 0 ? segments[s - 1].map { b[$0].recomputePeak }.max() ?? 0 : 0
                bound = max(bound, prefix + profile.backwardOnlyPeak(r) + ahead + transient)
            }
            prefix += b[r.lowerBound].inputBytes + r.reduce(0) { $0 + b[$1].statisticsBytes } // checkpoint, statistics
        }
        if let limit = overlap?.memoryLimit { bound = min(bound, max(limit, peak)) }
        let again = segments.dropLast().flatMap { $0 }
        return PlanPrediction(peakBytes: peak, overlappedPeakBound: overlap.map { _ in bound },
                              recomputedBlocks: again.count, extraForwardFLOPs: again.reduce(0) { $0 + b[$1].forwardFLOPs },
                              extraForwardSeconds: again.reduce(0) { $0 + b[$1].recomputeSeconds }, stepSeconds: step)
    }
}
