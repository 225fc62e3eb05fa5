import Foundation

/// What one block of a chain costs at one batch size: its times and the bytes it allocates
/// and keeps, as the accounting allocator charges them. Plans are chosen and their peaks
/// predicted from these figures (`CheckpointPlan.predict`).
public struct BlockCost: Sendable, Equatable {
    /// Seconds of the block's forward and backward passes (measured, or estimated from FLOPs).
    public var forwardSeconds: Double
    /// Seconds of its backward pass.
    public var backwardSeconds: Double
    /// Forward FLOPs of the block for one image (multiply-add = 2).
    public var forwardFLOPs: Int
    /// The block's input and output activations (the first block's input, the images, is
    /// not charged: the caller owns it).
    public var inputBytes: Int
    /// Bytes of its output activation.
    public var outputBytes: Int
    /// The most bytes the forward pass adds above what was live before it (output, what it
    /// keeps and kernel scratch).
    public var forwardPeak: Int
    /// Seconds and peak (as for the forward pass) of a checkpoint recompute of the block,
    /// which takes its BatchNorm statistics back instead of reducing again, so it is cheaper
    /// than the block's forward pass.
    public var recomputeSeconds: Double
    public var recomputePeak: Int
    /// What the forward pass keeps for the backward pass besides its input and output, and
    /// whether it keeps those two.
    public var savedBytes: Int
    /// Whether its saved record holds its input.
    public var keepsInput: Bool
    /// Whether its saved record holds its output.
    public var keepsOutput: Bool
    /// The most bytes the backward pass adds above the live saved record and incoming
    /// gradient, and the bytes of the input gradient it returns.
    public var backwardPeak: Int
    /// Bytes of the input gradient the backward pass returns.
    public var inputGradientBytes: Int
    /// What the block's stash costs under selective recomputation, `minimal` and `lean`.
    public var selective = StashCost(), minimal = StashCost(), lean = StashCost()
    /// Bytes of the batch statistics its BatchNorms record in a checkpointed segment's
    /// forward and keep until the segment's recompute takes them back (part of its records
    /// from then on).
    public var statisticsBytes = 0
}

/// What a block's stash costs (selective recomputation, `minimal` or `lean`): the bytes it keeps
/// besides the block output (and whether it keeps that); the peak, bytes and seconds of a
/// rebuild from it; and those of rebuilding only the block's output from it (nil when the
/// output cannot be rebuilt that way and the next block must keep it).
public struct StashCost: Sendable, Equatable {
    public var bytes = 0
    /// Whether the stash holds the block output itself (a block ending in a convolution or linear layer).
    public var keepsOutput = false
    public var rebuildPeak = 0, rebuildBytes = 0, rebuildSeconds = 0.0
    /// Forward FLOPs for one image that a rebuild runs again beyond the cheap layers (a lean
    /// stash's first convolution).
    public var rebuildFLOPs = 0
    public var outputRebuildPeak: Int?
    public var outputRebuildBytes = 0, outputRebuildSeconds = 0.0
}

extension BlockCost {
    /// The cost of the stash of `kind` (selective, minimal or lean; nil: selective's).
    public func stash(_ kind: BlockChoice?) -> StashCost {
        switch kind {
        case .minimal?: return minimal
        case .lean?: return lean
        default: return selective
        }
    }
}

/// Per-block costs of a model's chain at one batch size: measured on this machine by running
/// every block once (one block's activations live at a time, so profiling needs no more
/// memory than the most frugal plan), or estimated from FLOPs and bytes before any run.
public struct ChainProfile: Sendable {
    /// Images per step it describes.
    public let batch: Int
    /// One cost per block of the chain, in order.
    public let blocks: [BlockCost]
    /// True when times and bytes were measured; false for the FLOP-based estimate.
    public let measured: Bool

    /// Runs each block's forward (twice: the first warms it), backward, recompute and selective rebuild
    /// at `batch` on synthetic images (BatchNorm running statistics untouched, gradients zeroed afterwards).
    public static func measure(_ model: Model, batch: Int, seed: UInt64 = 0) throws -> ChainProfile {
        guard batch >= 1 else { throw RematError.invalidArgument("a profile needs a batch of at least 1, got \(batch)") }
        var context = ForwardContext(training: true, seed: seed)
        context.updateRunningStatistics = false
        let account = MemoryAccount()
        defer { model.zeroGradients() }
        let costs: [BlockCost] = try account.withCurrent {
            // the images too are this account's, so none of the profile's memory stays cached after it
            var x = try SyntheticDataset(count: batch, imageShape: model.imageShape, classes: model.classes, seed: seed)
                .batch(Array(0..<batch)).images
            var costs: [BlockCost] = []
            for (i, block) in model.blocks.enumerated() {
                func peak<T>(_ body: () throws -> T) rethrows -> (T, Int, Double) {
                    let before = account.liveBytes
                    account.resetPeak()
                    let start = DispatchTimeSource.now()
                    let r = try body()
                    return (r, account.peakBytes - before, DispatchTimeSource.seconds(since: start))
                }
                account.ownedLimit = 0 // the warm run caches nothing, so the process holds what it needs at once
                account.resetPeak()
                do { // warm, both ways: kernel plans made, pages touched (a cold backward ran 2-5x slower)
                    var (y, saved): (Tensor?, Saved) = try block.forward(x, context)
                    let g = Tensor(zeros: y!.shape)
                    y = nil // as in a step, the block's output is gone by its backward (unless its records keep it)
                    _ = try block.backward(g, saved, owned: true)
                }
                // the cache may hold what the warm run needed at once, no more: the profile's
                // resident memory stays what one step of this block takes
                account.ownedLimit = account.peakBytes
                // timed as a checkpointed segment's forward runs it: recording its BatchNorm statistics
                var recording = context
                recording.statistics = ActivationStash()
                var ((y, saved), fPeak, fSeconds) = try peak { () -> (Tensor?, Saved) in try block.forward(x, recording) }
                var kept = saved.storages
                let keepsInput = kept.removeValue(forKey: x.storageID) != nil && i > 0
                let keepsOutput = kept.removeValue(forKey: y!.storageID) != nil
                var cost = BlockCost(forwardSeconds: fSeconds, backwardSeconds: 0, forwardFLOPs: block.forwardFLOPs(for: x.shape),
                                     inputBytes: i == 0 ? 0 : x.accountBytes, outputBytes: y!.accountBytes,
                                     forwardPeak: fPeak, recomputeSeconds: 0, recomputePeak: 0, savedBytes: kept.values.reduce(0, +), keepsInput: keepsInput,
                                     keepsOutput: keepsOutput, backwardPeak: 0, inputGradientBytes: 0)
                cost.statisticsBytes = recording.statistics!.tensors.reduce(0) { $0 + $1.accountBytes }
                do {
                    let g = Tensor(zeros: y!.shape)
                    y = nil // taken back from the recompute below
                    let (dx, bPeak, bSeconds) = try peak { try block.backward(g, saved, owned: true) } // as a step runs it
                    (cost.backwardPeak, cost.backwardSeconds, cost.inputGradientBytes) = (bPeak, bSeconds, dx.accountBytes)
                }
                saved = Saved() // what a step frees after the backward: the runs below do not hold it
                do { // as its recompute runs it, taking its statistics back (warm: the forward just ran)
                    recording.statistics!.rewind()
                    let (replayed, rPeak, rSeconds) = try peak { try block.forward(x, recording) }
                    (cost.recomputePeak, cost.recomputeSeconds) = (rPeak, rSeconds)
                    y = replayed.0 // the same bits as the forward's output
                }
                // each kind of stash: recorded, then a rebuild from it
                func stashCost(_ kind: BlockChoice) throws -> StashCost {
                    var s = StashCost()
                    s.rebuildFLOPs = (block as? OutputFromStash)?.stashRebuildFLOPs(for: x.shape, kind) ?? 0
                    let stash = ActivationStash(), statistics = ActivationStash()
                    var recording = context
                    (recording.stash, recording.statistics) = (stash, statistics)
                    recording.keepStash(kind)
                    do {
                        let y2 = try block.forward(x, recording).0
                        var stashed = Dictionary((stash.tensors + statistics.tensors).map { ($0.storageID, $0.accountBytes) },
                                                 uniquingKeysWith: { a, _ in a })
                        s.keepsOutput = stashed.removeValue(forKey: y2.storageID) != nil
                        s.bytes = stashed.values.reduce(0, +)
                    }
                    stash.rewind()
                    statistics.rewind()
                    let before = account.liveBytes
                    let (rebuilt, rPeak, rSeconds) = try peak { try block.forward(x, recording).1 }
                    (s.rebuildPeak, s.rebuildBytes, s.rebuildSeconds) = (rPeak, account.liveBytes - before, rSeconds)
                    withExtendedLifetime(rebuilt) {}
                    if let b = block as? OutputFromStash, b.rebuildsOutputFromStash(minimal: kind.keepsMinimum) {
                        let before = account.liveBytes
                        var output = recording // as the executor derives the next block's input: no statistics
                        output.statistics = nil
                        let (out, oPeak, oSeconds) = try peak { try b.outputFromStash(stash, output) }
                        if out != nil {
                            (s.outputRebuildPeak, s.outputRebuildBytes) = (oPeak, account.liveBytes - before)
                            s.outputRebuildSeconds = oSeconds
                        }
                        withExtendedLifetime(out) {}
                    }
                    return s
                }
                (cost.selective, cost.minimal) = (try stashCost(.selective), try stashCost(.minimal))
                // a lean stash differs from minimal's only where its rebuild runs a layer again
                let reruns = ((block as? OutputFromStash)?.stashRebuildFLOPs(for: x.shape, .lean) ?? 0) > 0
                cost.lean = reruns ? try stashCost(.lean) : cost.minimal
                costs.append(cost)
                x = y!
                // what this block's runs left cached goes back: the profile holds no more than
                // one block's memory at a time, in the process's resident memory too
                account.releaseCache()
            }
            return costs
        }
        return ChainProfile(batch: batch, blocks: costs, measured: true)
    }

    /// Before any measurement: bytes from a one-image forward scaled to the batch, times from
    /// FLOPs at `gflops` plus activation traffic at `gigabytesPerSecond`; no kernel scratch.
    public static func estimate(_ model: Model, batch: Int, gflops: Double = 100, gigabytesPerSecond: Double = 10) throws -> ChainProfile {
        try measure(model, batch: 1).scaled(to: batch, gflops: gflops, gigabytesPerSecond: gigabytesPerSecond)
    }

    /// A one-image profile scaled to `batch` images, as `estimate` does.
    func scaled(to batch: Int, gflops: Double = 100, gigabytesPerSecond: Double = 10) -> ChainProfile {
        let one = self
        let costs = one.blocks.map { c -> BlockCost in
            var e = c // statisticsBytes included: a BatchNorm's statistics do not grow with the batch
            func scale(_ b: Int) -> Int { b * batch }
            let traffic = Double(scale(c.inputBytes + c.outputBytes + c.savedBytes)) / (gigabytesPerSecond * 1e9)
            e.forwardSeconds = Double(c.forwardFLOPs * batch) / (gflops * 1e9) + traffic
            e.backwardSeconds = 2 * e.forwardSeconds
            e.inputBytes = scale(c.inputBytes)
            e.outputBytes = scale(c.outputBytes)
            e.savedBytes = scale(c.savedBytes)
            e.forwardPeak = e.outputBytes + e.savedBytes
            (e.recomputeSeconds, e.recomputePeak) = (e.forwardSeconds, e.forwardPeak)
            e.backwardPeak = scale(c.inputGradientBytes)
            e.inputGradientBytes = scale(c.inputGradientBytes)
            func scaled(_ one: StashCost) -> StashCost {
                var s = one
                s.bytes = scale(s.bytes)
                s.rebuildBytes = scale(s.rebuildBytes)
                s.rebuildPeak = scale(s.rebuildPeak)
                // the cheap layers a rebuild redoes only stream their bytes
                s.rebuildSeconds = Double(s.rebuildBytes + s.bytes) / (gigabytesPerSecond * 1e9)
                    + Double(s.rebuildFLOPs * batch) / (gflops * 1e9)
                s.outputRebuildSeconds = Double(2 * e.outputBytes) / (gigabytesPerSecond * 1e9)
                s.outputRebuildPeak = s.outputRebuildPeak.map(scale)
                s.outputRebuildBytes = scale(s.outputRebuildBytes)
                return s
            }
            (e.selective, e.minimal, e.lean) = (scaled(c.selective), scaled(c.minimal), scaled(c.lean))
            return e
        }
        return ChainProfile(batch: batch, blocks: costs, measured: false)
    }

    /// The line through two measured profiles at other batches, read at `batch`: every byte
    /// count and time of a block, kernel scratch included, grows linearly with the batch as
    /// long as the kernels choose the same algorithms.
    static func extrapolated(_ a: ChainProfile, _ b: ChainProfile, to batch: Int) -> ChainProfile {
        precondition(a.blocks.count == b.blocks.count && a.batch != b.batch)
        let t = Double(batch - a.batch) / Double(b.batch - a.batch)
        func line(_ x: Int, _ y: Int) -> Int { max(0, Int((Double(x) + t * Double(y - x)).rounded(.up))) }
        func line(_ x: Double, _ y: Double) -> Double { max(0, x + t * (y - x)) }
        let costs = zip(a.blocks, b.blocks).map { x, y -> BlockCost in
            var e = y
            e.forwardSeconds = line(x.forwardSeconds, y.forwardSeconds)
            e.backwardSeconds = line(x.backwardSeconds, y.backwardSeconds)
            e.recomputeSeconds = line(x.recomputeSeconds, y.recomputeSeconds)
            e.forwardFLOPs = line(x.forwardFLOPs, y.forwardFLOPs)
            e.inputBytes = line(x.inputBytes, y.inputBytes)
            e.outputBytes = line(x.outputBytes, y.outputBytes)
            e.forwardPeak = line(x.forwardPeak, y.forwardPeak)
            e.recomputePeak = line(x.recomputePeak, y.recomputePeak)
            e.savedBytes = line(x.savedBytes, y.savedBytes)
            e.backwardPeak = line(x.backwardPeak, y.backwardPeak)
            e.inputGradientBytes = line(x.inputGradientBytes, y.inputGradientBytes)
            func stashLine(_ sx: StashCost, _ sy: StashCost) -> StashCost {
                var s = sy
                s.rebuildSeconds = line(sx.rebuildSeconds, sy.rebuildSeconds)
                s.outputRebuildSeconds = line(sx.outputRebuildSeconds, sy.outputRebuildSeconds)
                s.bytes = line(sx.bytes, sy.bytes)
                s.rebuildPeak = line(sx.rebuildPeak, sy.rebuildPeak)
                s.rebuildBytes = line(sx.rebuildBytes, sy.rebuildBytes)
                s.rebuildFLOPs = line(sx.rebuildFLOPs, sy.rebuildFLOPs)
                if let p = sx.outputRebuildPeak, let q = sy.outputRebuildPeak { s.outputRebuildPeak = line(p, q) }
                s.outputRebuildBytes = line(sx.outputRebuildBytes, sy.outputRebuildBytes)
                return s
            }
            (e.selective, e.minimal, e.lean) = (stashLine(x.selective, y.selective), stashLine(x.minimal, y.minimal),
                                                stashLine(x.lean, y.lean))
            e.statisticsBytes = line(x.statisticsBytes, y.statisticsBytes)
            return e
        }
        return ChainProfile(batch: batch, blocks: costs, measured: false)
    }
}
