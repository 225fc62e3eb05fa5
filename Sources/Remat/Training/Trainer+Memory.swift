import Foundation
import RematKernels

/// A plan chosen to fit a limit on the whole process, with its predictions.
public struct MemoryFit: Sendable {
    /// The checkpointing a step runs with: set it as the trainer's.
    public var checkpointing: Checkpointing
    /// The whole process's predicted peak, part by part.
    public var memory: ProcessMemory
    /// The plan's own prediction: activations, extra work, step time.
    public var prediction: PlanPrediction
}

extension Trainer {
    /// Chooses the fastest checkpointing that fits `limit` (`fitting(memory:...)`), makes it
    /// this trainer's, and caps the activation cache at the plan's predicted peak so the
    /// process stays within what was predicted.
    @discardableResult
    public func fit(memory limit: Int, batch: Int, overlap: Overlap? = nil, datasetBytes: Int = 0,
                    runtime: Int? = nil) throws -> MemoryFit {
        let fit = try fitting(memory: limit, batch: batch, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        checkpointing = fit.checkpointing
        account.ownedLimit = fit.memory.activations
        return fit
    }

    /// The fastest checkpointing for `batch` images whose predicted peak resident memory of
    /// the whole process stays within `limit` bytes: no checkpointing if it fits, else the
    /// cheapest of minimal, selective recomputation and the budget plan (the least recompute whose
    /// activations fit what the limit leaves), on the chain measured at the batch.
    ///
    /// `datasetBytes` is what the dataset holds in memory; `runtime` the resident bytes of
    /// the rest of the process (its code, libraries and runtimes), by default measured once
    /// the chain is profiled (`ProcessMemory.runtime(of:datasetBytes:)`). A limit no plan
    /// meets throws, naming the smallest limit that works at this batch and the largest batch
    /// that fits this limit.
    public func fitting(memory limit: Int, batch: Int, overlap: Overlap? = nil, datasetBytes: Int = 0,
                        runtime given: Int? = nil) throws -> MemoryFit {
        let images = ProcessMemory.batchBytes(model, batch: batch)
        if images > ProcessMemory.usable(limit) { // no profile at this batch: it could take far more than the limit
            let largest = try largestBatch(within: limit, overlap: overlap, datasetBytes: datasetBytes, runtime: given)
            throw RematError.invalidArgument(
                "no plan for \(model.name) at batch \(batch) fits a process in \(Self.size(limit)): its two batches of images alone take "
                + "\(Self.size(images))" + (largest.map { ", and the largest batch that fits \(Self.size(limit)) is \($0)" } ?? "")
                + ". Raise the limit or lower the batch.")
        }
        _ = try profile(batch: batch) // the kernel threads and their packing space as a step has them
        let runtime = given ?? ProcessMemory.runtime(of: self, datasetBytes: datasetBytes)
        let candidates = try memoryCandidates(limit: limit, batch: batch, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        let fits = candidates.filter { $0.memory.fits(limit) }
        if let best = fits.min(by: { $0.prediction.extraForwardSeconds < $1.prediction.extraForwardSeconds }) {
            return best
        }
        let smallest = try smallestLimit(batch: batch, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        let largest = try largestBatch(within: limit, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        throw RematError.invalidArgument(
            "no plan for \(model.name) at batch \(batch) fits a process in \(Self.size(limit)): the smallest limit at this batch is "
            + "\(Self.size(smallest))" + (largest.map { ", and the largest batch that fits \(Self.size(limit)) is \($0)" }
                                          ?? "; not even one image fits \(Self.size(limit))")
            + ". Raise the limit or lower the batch.")
    }

    /// The predicted process peak of each plan the limit may choose: none, minimal, lean, selective, sqrt(n)
    /// and the budget plan that takes what the limit leaves (when there is room for one:
    /// chosen per block, and with overlap also among segmentations, which can overlap).
    func memoryCandidates(limit: Int, batch: Int, overlap: Overlap?, datasetBytes: Int, runtime: Int) throws -> [MemoryFit] {
        let profile = try self.profile(batch: batch)
        let fixed = ProcessMemory.predict(trainer: self, batch: batch, activations: 0, overlap: overlap != nil,
                                          datasetBytes: datasetBytes, runtime: runtime)
        let room = ProcessMemory.usable(limit) - fixed.total
        var policies: [(CheckpointPolicy, Overlap?)] = [.keepAll, .minimal, .lean, .selective, .sqrtN].map { ($0, overlap) }
        for o in (overlap == nil ? [nil] : [overlap, nil])
            where room > 0 && CheckpointPlan.cheapest(within: room, profile, perBlock: o == nil) != nil {
            policies.append((.budget(bytes: room), o))
        }
        return try policies.map { policy, overlap in
            let (checkpointing, p) = try Self.planned(policy, profile, overlap: overlap)
            let memory = ProcessMemory.predict(trainer: self, batch: batch, activations: p.activationPeak,
                                               overlap: checkpointing.overlap != nil, datasetBytes: datasetBytes,
                                               runtime: runtime)
            return MemoryFit(checkpointing: checkpointing, memory: memory, prediction: p)
        }
    }

    /// `policy` with `overlap` where it can overlap (selective, minimal and lean cannot), and its prediction.
    static func planned(_ policy: CheckpointPolicy, _ profile: ChainProfile, overlap: Overlap?) throws -> (Checkpointing, PlanPrediction) {
        let checkpointing = Checkpointing(policy: policy, overlap: policy.canOverlap ? overlap : nil)
        let plan = try CheckpointPlan(policy: policy, profile: profile, overlapped: checkpointing.effectiveOverlap != nil)
        return (checkpointing, plan.predict(profile, overlap: checkpointing.effectiveOverlap))
    }

    /// The largest batch in (`lo`, `hi`) that `fits`, or `lo`: `lo` fits (or is 0), `hi` does not.
    static func largest(fitting lo: Int, notFitting hi: Int, _ fits: (Int) throws -> Bool) rethrows -> Int {
        var (lo, hi) = (lo, hi)
        while hi - lo > 1 { let mid = (lo + hi) / 2; if try fits(mid) { lo = mid } else { hi = mid } }
        return lo
    }

    /// The fewest activation bytes of any plan the limit may choose: the smallest budget, or
    /// sqrt(n)'s peak where the two models of a segment's peak differ by a few bytes.
    static func leastActivations(_ profile: ChainProfile) throws -> Int {
        min(CheckpointPlan.smallestBudget(profile), try planned(.sqrtN, profile, overlap: nil).1.activationPeak)
    }

    /// The smallest process limit any plan meets at `batch` (the smallest activation budget
    /// and everything else).
    public func smallestLimit(batch: Int, overlap: Overlap? = nil, datasetBytes: Int = 0, runtime given: Int? = nil) throws -> Int {
        let profile = try self.profile(batch: batch)
        let runtime = given ?? ProcessMemory.runtime(of: self, datasetBytes: datasetBytes)
        let total = ProcessMemory.predict(trainer: self, batch: batch, activations: try Self.leastActivations(profile),
                                          overlap: overlap != nil, datasetBytes: datasetBytes, runtime: runtime).total
        return (total * 100 + 98) / 99 // with the 1 % a limit keeps free
    }

    /// The largest batch whose smallest process limit is within `limit` (nil if not even one
    /// image fits); with `policy`, the largest batch that policy's plan fits instead.
    ///
    /// A secant search on measured profiles: the line through the profile at 32 images and the
    /// last one measured (first the one at 16) estimates the largest batch that fits, a profile
    /// measured there says whether it does. The search ends when the largest batch that fit and
    /// the smallest that did not are neighbours or within 1 %, when the line allows nothing
    /// between them, or after twelve profiles (a peak that grows in steps, as kernel scratch
    /// sized per chunk of images makes it, leaves the line little to go on: the search then
    /// halves the gap); the answer was always measured to fit.
    public func largestBatch(within limit: Int, policy: CheckpointPolicy? = nil, overlap: Overlap? = nil,
                             datasetBytes: Int = 0, runtime given: Int? = nil) throws -> Int? {
        let anchor = try profile(batch: 32)
        var latest = try profile(batch: 16)
        let runtime = given ?? ProcessMemory.runtime(of: self, datasetBytes: datasetBytes)
        func fits(_ profile: ChainProfile, packing: Int = Int(kn_packing_bytes())) throws -> Bool {
            let activations = try policy.map { try Self.planned($0, profile, overlap: overlap).1.activationPeak }
                ?? Self.leastActivations(profile)
            return ProcessMemory.predict(trainer: self, batch: profile.batch, activations: activations, overlap: overlap != nil,
                                         datasetBytes: datasetBytes, runtime: runtime, packing: packing).fits(limit)
        }
        var (fitted, failed) = (0, 1 << 24)
        for p in [latest, anchor] {
            if try fits(p) { fitted = max(fitted, p.batch) } else { failed = min(failed, p.batch) }
        }
        // an estimated batch may take more packing space than the profiles did: at least a full set
        let packing = max(Int(kn_packing_bytes()), ProcessMemory.fullPackingBytes)
        for _ in 0..<12 where failed - fitted > max(1, fitted / 100) {
            let through = latest
            func estimated(_ batch: Int) throws -> Bool {
                try fits(ChainProfile.extrapolated(anchor, through, to: batch), packing: packing)
            }
            var lo = fitted, top = max(1, 2 * fitted)
            while top < failed, try estimated(top) { lo = top; top *= 2 }
            var guess = try Self.largest(fitting: lo, notFitting: min(top, failed), estimated)
            // the line crossed the limit where a measured profile fit: the kernels changed algorithm
            if guess <= fitted { guess = min(fitted + (failed - fitted) / 2, 2 * fitted) }
            latest = try profile(batch: guess)
            if try fits(latest) { fitted = guess } else { failed = guess }
        }
        return fitted > 0 ? fitted : nil
    }

    static func size(_ bytes: Int) -> String {
        bytes >= 1 << 30 ? String(format: "%.2f GiB", Double(bytes) / Double(1 << 30))
            : String(format: "%.1f MiB", Double(bytes) / 1_048_576)
    }
}
