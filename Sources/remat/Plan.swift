import ArgumentParser
import Foundation
import Remat

/// `remat plan`: the checkpoint plan of a model, batch and policy, with its predictions.
struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the checkpoint plan for a model, batch and policy or budget, with its predicted memory and extra work.",
        usage: "remat plan [--model <m>] [--batch <n>] [--budget <size>] [<options>]",
        discussion: """
            Profiles the model's chain at the batch (each block's forward and backward run once, one block's activations at a time; --estimate skips that and predicts from FLOPs and a one-image run), then prints per block what the plan keeps, the predicted peak of activation bytes against no checkpointing, the forward work done twice, and the smallest budget any plan fits in.

            Examples:
              remat plan                                    # resnet56, batch 64, sqrt(n)
              remat plan --model vgg11 --policy selective
              remat plan --budget 60MiB --json
              remat plan --frontier                         # the memory / time curve
              remat plan --lookahead 1 --overlap-memory-limit 100MiB  # paced bound
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "Policy: none, sqrt, every-K, selective, minimal, lean, budget-SIZE (default: sqrt).") var policy: CheckpointPolicy?
    @OptionGroup var memoryOptions: MemoryOptions
    @Flag(help: "With --memory: the largest batch each policy fits in it, found on profiles measured at the batches tried (minutes for resnet56).") var maxBatch = false
    @Option(help: "A memory budget (bytes, or with KiB/MiB/GiB); overrides --policy.") var budget: String?
    @Option(help: "Predict the overlapped peak bound with this lookahead too.") var lookahead: Int?
    @Option(help: ArgumentHelp("... and with the recompute thread paced under this many bytes (lookahead 1 unless given).", valueName: "bytes"))
    var overlapMemoryLimit: String?
    @Flag(help: "Predict from FLOPs and a one-image run instead of profiling at the batch.") var estimate = false
    @Flag(help: "The trade-off curve: none, minimal, lean, selective, sqrt(n) and budgets from the smallest feasible to none's peak, each with its predicted peak and extra time.")
    var frontier = false
    @Option(help: "With --frontier: budget plans spread between the smallest budget and none's peak.") var budgets = 8
    @Flag(help: "One JSON object instead of a table.") var json = false
    @Flag(help: "Print which kernels run and why instead: the instruction set, the GEMM micro-kernels, and each convolution's algorithm per pass with the reasons the ones before it declined.")
    var kernels = false

    func validate() throws {
        try validateSize(budget, option: "--budget", example: "60MiB")
        if let l = lookahead, l < 1 { throw ValidationError("--lookahead must be at least 1 (got \(l)).") }
        try validateSize(overlapMemoryLimit, option: "--overlap-memory-limit", example: "100MiB")
        if memoryOptions.memory != nil && (policy != nil || budget != nil || estimate) {
            throw ValidationError("--memory chooses the plan on a measured profile: drop --policy, --budget and --estimate.")
        }
        if maxBatch && memoryOptions.memory == nil { throw ValidationError("--max-batch needs --memory SIZE: the memory to fit.") }
        if frontier && (memoryOptions.memory != nil || policy != nil || budget != nil) {
            throw ValidationError("--frontier prints every policy along the curve: drop --memory, --policy and --budget.")
        }
        if budgets < 1 || budgets > 100 { throw ValidationError("--budgets must be 1 to 100 (got \(budgets)).") }
    }

    func run() throws {
        let model = try options.makeModel()
        if kernels {
            print(try KernelRuntime.dispatchReport(for: model, batch: options.batch))
            return
        }
        var chosen = budget.flatMap(CheckpointPolicy.parseBytes).map(CheckpointPolicy.budget(bytes:)) ?? policy ?? .sqrtN
        var fit: MemoryFit?
        let processLimit = try memoryOptions.resolve()
        if let limit = processLimit {
            let trainer = Trainer(model: model, optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: options.seed)
            if maxBatch { return try printMaxBatch(trainer, limit) }
            fit = try trainer.fitting(memory: limit.bytes, batch: options.batch)
            chosen = fit!.checkpointing.policy
        }
        let profile = estimate ? try ChainProfile.estimate(model, batch: options.batch)
                               : try ChainProfile.measure(model, batch: options.batch, seed: options.seed)
        if frontier { return try printFrontier(profile) }
        let plan = try CheckpointPlan(policy: chosen, profile: profile)
        let limit = overlapMemoryLimit.flatMap(CheckpointPolicy.parseBytes)
        let overlap = (lookahead ?? limit.map { _ in 1 }).map {
            Overlap(backwardThreads: 1, recomputeThreads: 1, lookahead: $0, memoryLimit: limit)
        }
        let p = plan.predict(profile, overlap: Checkpointing(policy: chosen, overlap: overlap).effectiveOverlap)
        let none = try CheckpointPlan(policy: .keepAll, profile: profile).predict(profile)
        let smallest = CheckpointPlan.smallestBudget(profile)
        let roles = roles(plan, blocks: model.blocks.count)
        if json {
            var object: [String: Any] = [
                "model": options.model, "batch": options.batch, "policy": chosen.description, "profile": estimate ? "estimated" : "measured",
                "segments": plan.segments.map { [$0.lowerBound, $0.upperBound - 1] }, "selective": plan == .selective(blocks: model.blocks.count), "minimal": plan == .minimal(blocks: model.blocks.count),
                "choices": plan.choices.map(\.description),
                "predicted_peak_bytes": p.peakBytes, "none_peak_bytes": none.peakBytes, "smallest_budget_bytes": smallest,
                "recomputed_blocks": p.recomputedBlocks, "extra_forward_flops": p.extraForwardFLOPs,
                "extra_forward_seconds": p.extraForwardSeconds, "step_seconds": p.stepSeconds,
                "blocks": zip(model.blocks, profile.blocks).enumerated().map { i, bc in
                    ["index": i, "name": bc.0.name, "role": roles[i], "kept_bytes": kept(bc.1),
                     "forward_seconds": bc.1.forwardSeconds, "recompute_seconds": bc.1.recomputeSeconds,
                     "backward_seconds": bc.1.backwardSeconds] as [String: Any]
                }]
            if let bound = p.overlappedPeakBound { object["overlapped_peak_bound_bytes"] = bound }
            if let fit, let limit = processLimit {
                object["memory_limit_bytes"] = limit.bytes
                object["memory_limit_source"] = limit.source
                object["predicted_process_peak_bytes"] = fit.memory.total
            }
            printJSON(object)
            return
        }
        print("\(options.model), batch \(options.batch), policy \(chosen) (\(estimate ? "estimated" : "measured") profile)")
        print(" #  block                                  keeps MiB  fwd ms  rec ms  bwd ms  role")
        for (i, (block, c)) in zip(model.blocks, profile.blocks).enumerated() {
            let kept = kept(c)
            print(pad(String(format: "%2d", i), 4) + pad(String(block.name.prefix(38)), 39) + pad(String(repeating: " ", count: max(0, 9 - mib(kept).count)) + mib(kept), 11)
                  + [c.forwardSeconds, c.recomputeSeconds, c.backwardSeconds].map { pad(String(format: "%6.2f", $0 * 1e3), 8) }.joined()
                  + roles[i])
        }
        print("plan: \(plan)")
        print("predicted peak activations: \(mib(p.peakBytes)) MiB (no checkpointing: \(mib(none.peakBytes)) MiB, "
              + String(format: "%.0f%%", 100 * Double(p.peakBytes) / Double(max(none.peakBytes, 1))) + ")")
        if p.peakBytes >= none.peakBytes && chosen != .keepAll {
            // selective on conv-ReLU chains: ReLU keeps only its output already, so recording
            // the conv outputs beside it keeps more, not less
            print("this plan keeps no less than no checkpointing on \(options.model): use sqrt or a budget to save memory")
        }
        if let bound = p.overlappedPeakBound, let o = overlap {
            let paced = o.memoryLimit.map { ", paced under \(mib($0)) MiB" } ?? ""
            print("with overlap (lookahead \(o.lookahead)\(paced)): at most \(mib(bound)) MiB")
        }
        print("extra forward work: \(p.recomputedBlocks) block(s), " + String(format: "%.3f GFLOP, %.1f ms (%.0f%% of a %.1f ms step)",
              Double(p.extraForwardFLOPs) / 1e9, p.extraForwardSeconds * 1e3, 100 * p.overhead, p.stepSeconds * 1e3))
        print("smallest feasible budget: \(smallest) bytes (\(mib(smallest)) MiB)")
        if let fit, let limit = processLimit {
            print("memory limit \(mib(limit.bytes)) MiB (\(limit.source)): the fastest plan that fits is \(chosen)")
            print("predicted peak resident memory of the whole process: \(describe(fit.memory))")
        }
    }

    /// --frontier: each policy along the trade-off curve with its predicted peak and extra time.
    func printFrontier(_ profile: ChainProfile) throws {
        let none = try CheckpointPlan(policy: .keepAll, profile: profile).predict(profile)
        let points = try CheckpointPlan.frontier(profile, budgets: budgets).map { policy in
            let plan = try CheckpointPlan(policy: policy, profile: profile)
            return (policy, plan, plan.predict(profile))
        }.sorted { $0.2.activationPeak > $1.2.activationPeak }
        if json {
            for (policy, plan, p) in points {
                printJSON(["model": options.model, "batch": options.batch, "policy": policy.description, "segments": plan.segments.count,
                           "predicted_peak_activation_mib": Double(p.activationPeak) / 1_048_576,
                           "predicted_extra_ms": p.extraForwardSeconds * 1e3,
                           "predicted_overhead": p.overhead])
            }
            return
        }
        print("\(options.model), batch \(options.batch) (\(estimate ? "estimated" : "measured") profile); a step without checkpointing: "
              + String(format: "%.1f ms, %@ MiB of activations", none.stepSeconds * 1e3, mib(none.activationPeak)))
        print("policy            segs  peak MiB  of none  extra ms  overhead")
        for (policy, plan, p) in points {
            let peak = mib(p.activationPeak)
            print(pad(policy.description, 18) + pad(String(plan.segments.count), 6) + pad(String(repeating: " ", count: max(0, 8 - peak.count)) + peak, 10)
                  + pad(String(format: "%6.0f%%", 100 * Double(p.activationPeak) / Double(max(none.activationPeak, 1))), 9)
                  + pad(String(format: "%8.1f", p.extraForwardSeconds * 1e3), 10)
                  + String(format: "%+7.1f%%", 100 * p.overhead))
        }
    }

    /// --memory SIZE --max-batch: the largest batch each policy's plan fits in the limit.
    func printMaxBatch(_ trainer: Trainer, _ limit: MemoryLimit) throws {
        let rows: [(String, CheckpointPolicy?)] = [("none", CheckpointPolicy.keepAll), ("minimal", .minimal), ("lean", .lean), ("selective", .selective),
                                                   ("sqrt(n)", .sqrtN),
                                                   ("any plan (the smallest budget)", nil)]
        if !json {
            print("\(options.model) in \(mib(limit.bytes)) MiB (\(limit.source)); each answer fits on a profile measured "
                  + "at that batch, the next larger batch measured did not (or is within 1 %):")
        }
        var results: [(String, Int?)] = []
        for (name, policy) in rows {
            var batch = try trainer.largestBatch(within: limit.bytes, policy: policy)
            // any plan includes the others, whose answers were measured to fit too
            if policy == nil, let best = (results.compactMap(\.1) + [batch ?? 0]).max(), best > 0 { batch = best }
            results.append((name, batch))
            if !json { print("  " + pad(name, 32) + (batch.map { "largest batch \($0)" } ?? "does not fit one image")) }
        }
        if json {
            printJSON(["model": options.model, "memory_limit_bytes": limit.bytes, "memory_limit_source": limit.source,
                       "largest_batch": Dictionary(uniqueKeysWithValues: results.map { ($0.0, $0.1 ?? 0) })])
        }
    }

    /// Bytes a block's record keeps beyond its input (which the block before it counts).
    func kept(_ c: BlockCost) -> Int { c.savedBytes + (c.keepsOutput ? c.outputBytes : 0) }

    /// What the plan does with each block's activations.
    func roles(_ plan: CheckpointPlan, blocks n: Int) -> [String] {
        let choices = plan.choices
        var segment = -1
        return choices.enumerated().map { i, choice in
            switch choice {
            case .keep: return "kept"
            case .minimal: return "the least kept, the rest rebuilt"
            case .lean: return "the least kept, first conv and the rest rebuilt"
            case .selective: return "conv/linear outputs kept, the rest rebuilt"
            case .checkpoint, .checkpointMinimal:
                segment += 1
                return "recomputed (segment \(segment)" + (choice == .checkpointMinimal ? ", into minimal stashes)" : ")")
                    + (i > 0 ? ", input is a checkpoint" : "")
            case .recompute: return "recomputed (segment \(segment))"
            }
        }
    }
}
