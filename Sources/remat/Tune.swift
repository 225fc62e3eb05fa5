import ArgumentParser
import Foundation
import Remat

/// `remat tune`: measures thread configurations for a model and batch, saves the fastest.
struct Tune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the fastest configuration (team size, overlap split, lookahead, GEMM blocking, convolution thresholds) for a model and batch.",
        usage: "remat tune [--model <m>] [--batch <n>] [--policy <p>] [<options>]",
        discussion: """
            Times training steps under the policy for each configuration it tries, searching one coordinate at a time: the team size (recompute on the backward thread), then the split of cores between the backward and the recompute team, then the lookahead, then variants of the GEMM cache blocking, then the convolution's thresholds and chunk sizes and the parallel threshold, each halved and doubled (KernelTuning); a change must be 2% faster to win, as less is noise on a shared machine. --exhaustive times every combination instead. Finally the default (all cores, no overlap, default blocking) and the search's fastest are timed again, a round of each at a time, for 3 to 8 rounds until every round agrees which is faster. The search's fastest is kept only if it beat the default in every round and by at least 2% overall; otherwise the default is kept (a winner within the noise is no winner). What is kept is saved to the tuning file under this CPU, model and batch, and printed; bench and train use it from then on unless given --no-tuning.

            Examples:
              remat tune                                    # resnet56, batch 64, sqrt(n)
              remat tune --model vgg11 --batch 32 --time-limit 60
              remat tune --exhaustive --json --no-save      # the whole space
              remat tune --check-exhaustive --no-save  # search, then the whole space
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "Policy the steps run under: none, sqrt, every-K, selective, minimal, lean, budget-SIZE.") var policy: CheckpointPolicy = .sqrtN
    @Option(help: "Timed steps per configuration (after one warm-up step).") var steps = 3
    @Option(help: "Stop searching after this many seconds (the final comparison still runs).") var timeLimit: Double = 240
    @Option(help: "Largest team size to try (default: all cores).") var maxThreads: Int?
    @Flag(help: "Time every combination instead of searching.") var exhaustive = false
    @Flag(help: "After the search, time every combination too and compare the search's winner with the fastest.")
    var checkExhaustive = false
    @Option(help: "The tuning file (default: $REMAT_TUNING_FILE, else ~/.config/remat/tuning.json).") var tuningFile: String?
    @Flag(help: "Do not save the result.") var noSave = false
    @Flag(help: "One JSON object instead of a table.") var json = false

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1 (got \(steps)).") }
        guard timeLimit > 0 else { throw ValidationError("--time-limit must be positive (got \(timeLimit)).") }
        if let m = maxThreads, !(1...KernelRuntime.maxThreads).contains(m) {
            throw ValidationError("--max-threads must be between 1 and \(KernelRuntime.maxThreads), four per core on this machine (got \(m)).")
        }
    }

    /// One point of the search space.
    struct Config: Equatable, CustomStringConvertible {
        var threads: Int
        var overlap: Overlap?
        var blocking: GemmBlocking? // nil: the default table
        var kernels: KernelVariant? // nil: the default row
        var description: String {
            "\(threads) thread(s), " + (overlap.map { "overlap \($0.backwardThreads)+\($0.recomputeThreads) lookahead \($0.lookahead)" } ?? "no overlap")
                + (blocking.map { ", blocking \($0)" } ?? "") + (kernels.map { ", \($0.change)" } ?? "")
        }
    }

    func run() throws {
        let net = try options.makeModel()
        let trainer = Trainer(model: net, optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: options.seed)
        let (x, y) = try SyntheticDataset(count: options.batch, imageShape: net.imageShape, classes: net.classes, seed: options.seed)
            .batch(Array(0..<options.batch))
        let defaults = KernelRuntime.gemmBlockings, defaultKernels = KernelRuntime.kernelTuning
        let progress = Progress(quiet: json)
        let started = DispatchTime.now()
        var elapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9 }

        func time(_ c: Config, steps: Int) throws -> [Double] {
            KernelRuntime.threads = c.threads
            for b in defaults { try KernelRuntime.setGemmBlocking(b) }
            if let b = c.blocking { try KernelRuntime.setGemmBlocking(b) }
            try KernelRuntime.setKernelTuning(c.kernels?.tuning ?? defaultKernels) // convolutions plan again
            trainer.checkpointing = Checkpointing(policy: policy, overlap: c.overlap)
            try trainer.train(images: x, labels: y) // warm-up
            return try (0..<steps).map { _ in try trainer.train(images: x, labels: y).seconds }
        }
        var tried: [(config: Config, median: Double)] = []
        func measure(_ c: Config) throws -> Double {
            if let done = tried.first(where: { $0.config == c }) { return done.median }
            progress.show("trying \(c) (\(tried.count + 1) so far, \(Int(elapsed)) s)")
            let m = median(try time(c, steps: steps))
            tried.append((c, m))
            return m
        }
        let cores = maxThreads ?? KernelRuntime.cores
        let teams = Array(1...cores)
        func splits(_ t: Int) -> [Overlap] { t < 2 ? [] : (1..<t).map { Overlap(backwardThreads: t - $0, recomputeThreads: $0) } }
        let recomputes = policy.canOverlap
        let main = defaults.first!
        var variants = [GemmBlocking]()
        for (mc, kc) in [(main.mc, max(64, main.kc / 2)), (main.mc, min(4096, main.kc * 2)), (min(4096, main.mc * 2), main.kc)] {
            var b = main
            (b.mc, b.kc) = (mc / b.mr * b.mr, kc)
            if b != main && !variants.contains(b) { variants.append(b) }
        }
        let defaultConfig = Config(threads: KernelRuntime.cores, overlap: nil, blocking: nil)
        var everything: [Config] = [] // the whole space, for --exhaustive and --check-exhaustive
        for t in teams {
            var modes: [Overlap?] = [nil]
            if recomputes { for s in splits(t) { for l in 1...3 { var o = s; o.lookahead = l; modes.append(o) } } }
            for o in modes { for b in [nil] + variants.map(Optional.some) { everything.append(Config(threads: t, overlap: o, blocking: b)) } }
        }
        var best = defaultConfig, bestTime = try measure(defaultConfig)
        func consider(_ c: Config, margin: Double = 0.98, limited: Bool = true) throws {
            guard !limited || elapsed < timeLimit else { return }
            let t = try measure(c)
            if t < bestTime * margin { (best, bestTime) = (c, t) } // 2%: less is noise on a shared machine
        }
        if exhaustive {
            for c in everything { try consider(c, margin: 1) }
        } else {
            for t in teams { try consider(Config(threads: t, overlap: nil, blocking: nil)) }
            if recomputes {
                for t in Set([best.threads, cores]).sorted() { for s in splits(t) { try consider(Config(threads: t, overlap: s, blocking: nil)) } }
                if let o = best.overlap {
                    for l in 2...3 { var m = o; m.lookahead = l; try consider(Config(threads: best.threads, overlap: m, blocking: nil)) }
                }
            }
            let base = best
            for b in variants { var c = base; c.blocking = b; try consider(c) }
            let withBlocking = best
            for k in KernelVariant.around(defaultKernels) { var c = withBlocking; c.kernels = k; try consider(c) }
        }
        // --check-exhaustive: the whole space's fastest, then it and the search's winner timed
        // again alternately
        var check: (config: Config, searched: Double, exhaustive: Double)?
        if checkExhaustive && !exhaustive {
            let searched = (best, bestTime)
            for c in everything { try consider(c, margin: 1, limited: false) }
            let fastest = best
            (best, bestTime) = searched
            var a: [Double] = [], b: [Double] = []
            for _ in 0..<3 {
                progress.show("timing the search's winner and the exhaustive sweep's again")
                a += try time(best, steps: steps)
                b += try time(fastest, steps: steps)
            }
            check = (fastest, median(a), median(b))
        }
        // the final comparison: default and winner alternately, so drift hits both alike,
        // until the rounds agree which is faster; the winner is kept only if it is
        let verdict = best == defaultConfig ? nil : try compareWithDefault(best, time: { try time($0, steps: steps) }, progress: progress)
        for b in defaults { try KernelRuntime.setGemmBlocking(b) }
        try KernelRuntime.setKernelTuning(defaultKernels)
        progress.clear()
        let searched = best
        if let verdict, !verdict.winnerFaster { best = defaultConfig }
        let stepSeconds = verdict.map { $0.winnerFaster ? $0.winner : $0.default } ?? bestTime
        let defaultSeconds = verdict?.default ?? bestTime
        let speedup = defaultSeconds / stepSeconds
        var tuning = Tuning(cpu: Tuning.thisCPU, model: options.model, batch: options.batch, policy: policy.description,
                            threads: best.threads, overlap: best.overlap, isa: KernelRuntime.isa,
                            blocking: best.blocking.map { b in defaults.map { $0.mr == b.mr && $0.nr == b.nr ? b : $0 } },
                            stepSeconds: stepSeconds, defaultStepSeconds: defaultSeconds,
                            tunedAt: ISO8601DateFormatter().string(from: Date()))
        tuning.kernels = best.kernels?.tuning ?? defaultKernels
        var savedTo: String?
        if !noSave {
            var file = try TuningFile(path: tuningFile ?? TuningFile.defaultPath)
            try file.save(tuning)
            savedTo = file.path
        }
        if json {
            printJSON(["model": options.model, "batch": options.batch, "policy": policy.description, "cpu": tuning.cpu,
                       "exhaustive": exhaustive, "seconds": elapsed,
                       "tried": tried.map { ["config": $0.config.description, "step_seconds_median": $0.median] as [String: Any] },
                       "searched_fastest": searched.description, "winner": best.description,
                       "kept_default": best == defaultConfig, "rounds": verdict?.rounds ?? 0,
                       "winner_step_seconds": tuning.stepSeconds,
                       "default_step_seconds": tuning.defaultStepSeconds, "speedup": speedup, "saved_to": savedTo ?? NSNull(),
                       "exhaustive_best": check.map { $0.config.description } ?? NSNull(),
                       "searched_over_exhaustive": check.map { $0.searched / $0.exhaustive } ?? NSNull()])
            return
        }
        print("\(options.model), batch \(options.batch), policy \(policy), \(tuning.cpu), \(KernelRuntime.isa)")
        print("tried (median of \(steps) steps each):")
        for (c, m) in tried { print(String(format: "  %8.1f ms  ", m * 1e3) + c.description) }
        print("search's fastest: \(searched)")
        if let v = verdict {
            print(String(format: "again, alternating with the default over %d rounds: %.1f ms vs %.1f ms (per-round ratios %@)",
                         v.rounds, v.winner * 1e3, v.default * 1e3, v.ratios.map { String(format: "%.3f", $0) }.joined(separator: " ")))
            print(v.winnerFaster ? String(format: "faster than the default in every round: keeping it (speed-up %.2fx)", speedup)
                  : v.winnerSlower ? "slower than the default when timed again: keeping the default"
                  : "within the noise of the default: keeping the default")
        } else {
            print("the default is the fastest")
        }
        if let check {
            print("exhaustive sweep's fastest: \(check.config)")
            print(String(format: "again, alternating: search's winner %.1f ms, exhaustive's %.1f ms: the search is within %+.1f%%",
                         check.searched * 1e3, check.exhaustive * 1e3, 100 * (check.searched / check.exhaustive - 1)))
        }
        print(savedTo.map { "saved \(best) to \($0)" } ?? "not saved (--no-save)")
    }
}

/// One threshold or size of the kernels' tuning row, halved or doubled.
struct KernelVariant: Equatable {
    var change: String
    var tuning: KernelTuning

    /// The row with one of the choices that matter per machine moved either way: when the
    /// convolution takes Winograd, batch innermost, the padded grid or an implicit GEMM at all, im2col's
    /// chunk width, the chunk sizes, and when a kernel goes parallel.
    static func around(_ row: KernelTuning) -> [KernelVariant] {
        let fields: [(String, WritableKeyPath<KernelTuning, Int>)] = [
            ("narrow plane", \.narrowPlane), ("grid junk ratio", \.gridJunkRatio), ("implicit min rows", \.implicitMinRows), ("transposed min rows", \.transposedMinRows),
            ("im2col width", \.colWidth), ("batch-inner images", \.batchImages), ("grid chunk floats", \.gridChunkFloats),
            ("parallel min", \.parallelMin), ("winograd min channels", \.winogradMinChannels), ("winograd columns", \.winogradCols),
            ("winograd dw min width", \.winogradDwMinWidth),
        ]
        return fields.flatMap { name, field in
            [row[keyPath: field] / 2, row[keyPath: field] * 2].filter { $0 >= 1 }.map { v in
                var t = row
                t[keyPath: field] = v
                return KernelVariant(change: "\(name) \(v)", tuning: t)
            }
        }
    }
}

/// The search's winner timed again against the default, a round of each at a time.
struct Verdict {
    var winner: Double, `default`: Double
    /// default / winner, per round.
    var ratios: [Double]
    var rounds: Int { ratios.count }
    /// At least 2 % faster over the rounds, and faster in every one of them.
    var winnerFaster: Bool { median(ratios) >= 1.02 && ratios.allSatisfy { $0 > 1 } }
    /// Slower in every round.
    var winnerSlower: Bool { ratios.allSatisfy { $0 < 1 } }
}

/// Times `winner` and the default alternately, at least 3 rounds and at most 8, stopping as
/// soon as every round agrees on which is faster.
func compareWithDefault(_ winner: Tune.Config, time: (Tune.Config) throws -> [Double], progress: Progress) throws -> Verdict {
    var a: [Double] = [], b: [Double] = []
    var v = Verdict(winner: 0, default: 0, ratios: [])
    for round in 1...8 {
        progress.show("timing the default and the search's fastest again, round \(round)")
        let d = try time(Tune.Config(threads: KernelRuntime.cores, overlap: nil, blocking: nil))
        let w = try time(winner)
        a += d; b += w
        v = Verdict(winner: median(b), default: median(a), ratios: v.ratios + [median(d) / median(w)])
        if round >= 3 && (v.winnerFaster || v.winnerSlower) { break }
    }
    return v
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.isEmpty ? .nan : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
