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
    /// cheaper of selective recomputation and the budget plan (the least recompute whose
    /// activations fit what the limit leaves), on the chain measured at the batch.
    ///
    /// `datasetBytes` is what the dataset holds in memory; `runtime` the resident bytes of
    /// the rest of the process (its code, libraries and runtimes), by default measured once
    /// the chain is profiled (`ProcessMemory.runtime(of:datasetBytes:)`). A limit no plan
    /// meets throws, naming the smallest limit that works at this batch and the largest batch
    /// that fits this limit.
    public func fitting(memory limit: Int, batch: Int, overlap: Overlap? = nil, datasetBytes: Int = 0,
                        runtime given: Int? = nil) throws -> MemoryFit {
        _ = try profile(batch: batch) // the kernel threads and their packing space as a step has them
        let runtime = given ?? ProcessMemory.runtime(of: self, datasetBytes: datasetBytes)
        let candidates = try memoryCandidates(limit: limit, batch: batch, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        let fits = candidates.filter { $0.memory.total <= limit }
        if let best = fits.min(by: { $0.prediction.extraForwardSeconds < $1.prediction.extraForwardSeconds }) {
            return best
        }
        let smallest = try smallestLimit(batch: batch, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        // the estimate leaves out kernel scratch, which does not shrink with the batch:
        // bisect below it on profiles measured at each batch tried
        var largest = try largestBatch(within: limit, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime)
        if let top = largest,
           try smallestLimit(batch: top, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime) > limit {
            let lo = try Self.largest(fitting: 0, notFitting: top) {
                try smallestLimit(batch: $0, overlap: overlap, datasetBytes: datasetBytes, runtime: runtime) <= limit
            }
            largest = lo > 0 ? lo : nil
        }
        throw RematError.invalidArgument(
            "no plan for \(model.name) at batch \(batch) fits a process in \(Self.size(limit)): the smallest limit at this batch is "
            + "\(Self.size(smallest))" + (largest.map { ", and the largest batch that fits \(Self.size(limit)) is \($0)" }
                                          ?? "; not even one image fits \(Self.size(limit))")
            + ". Raise the limit or lower the batch.")
    }

    /// The predicted process peak of each plan the limit may choose: none, selective and
    /// the budget plan that takes what the limit leaves (when there is room for one).
    func memoryCandidates(limit: Int, batch: Int, overlap: Overlap?, datasetBytes: Int, runtime: Int) throws -> [MemoryFit] {
        let profile = try self.profile(batch: batch)
        let fixed = ProcessMemory.predict(trainer: self, batch: batch, activations: 0, overlap: overlap != nil,
                                          datasetBytes: datasetBytes, runtime: runtime)
        // 1 % of the limit stays free: the runtime measured again later reads a MiB or two apart
        let room = limit - fixed.total - limit / 100
        var policies: [CheckpointPolicy] = [.none, .selective]
        if room > 0, CheckpointPlan.cheapest(within: room, profile) != nil { policies.append(.budget(room)) }
        return try policies.map { policy in
            let (checkpointing, p) = try Self.planned(policy, profile, overlap: overlap)
            let memory = ProcessMemory.predict(trainer: self, batch: batch, activations: p.activationPeak,
                                               overlap: checkpointing.overlap != nil, datasetBytes: datasetBytes,
                                               runtime: runtime)
            return MemoryFit(checkpointing: checkpointing, memory: memory, prediction: p)
        }
    }

    /// `policy` with `overlap` where it can overlap (selective cannot), and its prediction.
    static func planned(_ policy: CheckpointPolicy, _ profile: ChainProfile, overlap: Overlap?) throws -> (Checkpointing, PlanPrediction) {
        let checkpointing = Checkpointing(policy: policy, overlap: policy == .selective ? nil : overlap)
        return (checkpointing, try CheckpointPlan(policy: policy, profile: profile).predict(profile, overlap: checkpointing.effectiveOverlap))
    }

    /// The largest batch in (`lo`, `hi`) that `fits`, or `lo`: `lo` fits (or is 0), `hi` does not.
    static func largest(fitting lo: Int, notFitting hi: Int, _ fits: (Int) throws -> Bool) rethrows -> Int {
        var (lo, hi) = (lo, hi)
        while hi - lo > 1 { let mid = (lo + hi) / 2; if try fits(mid) { lo = mid } else { hi = mid } }
        return lo
    }

    /// The smallest process limit any plan meets at `batch` (the smallest activation budget
    /// and everything else).
    public func smallestLimit(batch: Int, overlap: Overlap? = nil, datasetBytes: Int = 0, runtime given: Int? = nil) throws -> Int {
        let profile = try self.profile(batch: batch)
        let runtime = given ?? ProcessMemory.runtime(of: self, datasetBytes: datasetBytes)
        return ProcessMemory.predict(trainer: self, batch: batch, activations: CheckpointPlan.smallestBudget(profile),
                                     overlap: overlap != nil, datasetBytes: datasetBytes, runtime: runtime).total
    }

    /// The largest batch whose smallest process limit is within `limit`, on a profile
    /// estimated from one image (nil if not even one image fits). With `policy`, the largest
    /// batch that policy's plan fits instead.
    public func largestBatch(within limit: Int, policy: CheckpointPolicy? = nil, overlap: Overlap? = nil,
                             datasetBytes: Int = 0, runtime given: Int? = nil) throws -> Int? {
        let one = try ChainProfile.measure(model, batch: 1, seed: seed)
        let runtime = given ?? ProcessMemory.runtime(of: self, datasetBytes: datasetBytes)
        func fits(_ batch: Int) throws -> Bool {
            let profile = one.scaled(to: batch)
            let activations: Int
            if let policy {
                activations = try Self.planned(policy, profile, overlap: overlap).1.activationPeak
            } else {
                activations = CheckpointPlan.smallestBudget(profile)
            }
            // no profile ran at this batch: at least a full set of packing space
            let packing = max(Int(kn_packing_bytes()), ProcessMemory.fullPackingBytes)
            return ProcessMemory.predict(trainer: self, batch: batch, activations: activations, overlap: overlap != nil,
                                         datasetBytes: datasetBytes, runtime: runtime, packing: packing).total <= limit
        }
        guard try fits(1) else { return nil }
        var lo = 1, hi = 2
        while try fits(hi) { lo = hi; hi *= 2; if hi > 1 << 24 { return lo } }
        return try Self.largest(fitting: lo, notFitting: hi, fits)
    }

    static func size(_ bytes: Int) -> String {
        bytes >= 1 << 30 ? String(format: "%.2f GiB", Double(bytes) / Double(1 << 30))
            : String(format: "%.1f MiB", Double(bytes) / 1_048_576)
    }
}
