import ArgumentParser
import Foundation
import Remat

/// `remat bench`: the CNN training benchmark on synthetic data.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps of a benchmark model on synthetic data, with and without checkpointing.",
        discussion: """
            For each configuration, runs warm-up steps, then times --steps training steps
            (forward, softmax cross-entropy, backward, SGD with momentum 0.9, lr 0.01) and prints
            the median step time and its spread, images/s, the peak activation memory (exact,
            from Remat's allocator), the process's peak RSS so far, and the overhead against no
            checkpointing. Configurations: none; sqrt(n) with recompute on the backward thread
            (sequential); sqrt(n) with recompute on its own thread (overlapped; the cores split
            between the two teams).

            Examples:
              remat bench                         # resnet56, batch 64, all cores
              remat bench --model lenet5 --batch 256 --threads 1 --configs none
              remat bench --json                  # one JSON object per configuration
              remat bench --trace step.json       # Chrome trace of one overlapped step
            """)

    enum Config: String, ExpressibleByArgument, CaseIterable {
        case none, sequential, overlapped
    }

    @Option(help: "Model: \(Zoo.names.joined(separator: ", ")).") var model = "resnet56"
    @Option(help: "Images per step.") var batch = 64
    @Option(help: "Timed steps per configuration.") var steps = 6
    @Option(help: "Untimed steps first.") var warmup = 2
    @Option(help: "Kernel threads in all (default: all cores).") var threads: Int?
    @Option(parsing: .upToNextOption, help: "Configurations: none, sequential (sqrt(n)), overlapped (sqrt(n)).")
    var configs: [Config] = Config.allCases
    @Option(help: "Seed for weights and data.") var seed: UInt64 = 0
    @Option(help: "Write the Chrome trace (JSON) of one overlapped sqrt(n) step to this file.") var trace: String?
    @Flag(help: "Print one JSON object per configuration instead of a table.") var json = false

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch)).") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1 (got \(steps)).") }
        guard warmup >= 0 else { throw ValidationError("--warmup cannot be negative (got \(warmup)).") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1 (got \(t)).") }
        guard !configs.isEmpty else { throw ValidationError("--configs needs at least one of none, sequential, overlapped.") }
        _ = try Zoo.model(named: model) // an unknown model name says which exist
    }

    struct Row {
        var config: Config
        var median: Double, spread: Double, activationBytes: Int, rssMiB: Double
        var segments: Int
    }

    func run() throws {
        let total = threads ?? KernelRuntime.cores
        KernelRuntime.threads = total
        let tty = isatty(STDOUT_FILENO) != 0 && !json
        var rows: [Row] = []
        for config in configs {
            let checkpointing: Checkpointing
            switch config {
            case .none: checkpointing = .none
            case .sequential: checkpointing = Checkpointing(policy: .sqrtN)
            case .overlapped: checkpointing = Checkpointing(policy: .sqrtN, overlap: .split(cores: total))
            }
            rows.append(try measure(checkpointing, config: config, tty: tty))
        }
        if let path = trace { try writeTrace(path, cores: total) }
        report(rows, threads: total)
    }

    func measure(_ checkpointing: Checkpointing, config: Config, tty: Bool) throws -> Row {
        let net = try Zoo.model(named: model, seed: seed)
        let data = try SyntheticDataset(count: batch * 2, imageShape: net.imageShape, classes: net.classes, seed: seed)
        let trainer = Trainer(model: net, optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: seed)
        trainer.checkpointing = checkpointing
        let batches = try (0..<2).map { b in try data.batch(Array(b * batch..<(b + 1) * batch)) }
        var times: [Double] = [], peak = 0
        for i in 0..<(warmup + steps) {
            let (x, y) = batches[i % batches.count]
            let m = try trainer.train(images: x, labels: y)
            if i >= warmup { times.append(m.seconds); peak = max(peak, m.peakActivationBytes) }
            if tty { FileHandle.standardError.write("\r\(config.rawValue): step \(i + 1)/\(warmup + steps)   ".data(using: .utf8)!) }
        }
        if tty { FileHandle.standardError.write("\r                                        \r".data(using: .utf8)!) }
        times.sort()
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let plan = try trainer.plan(batch: batch).plan
        return Row(config: config, median: times[times.count / 2], spread: (times.last! - times.first!) / 2,
                   activationBytes: peak, rssMiB: Double(usage.ru_maxrss) / 1024, segments: plan.segments.count)
    }

    func writeTrace(_ path: String, cores: Int) throws {
        let net = try Zoo.model(named: model, seed: seed)
        let (x, y) = try SyntheticDataset(count: batch, imageShape: net.imageShape, classes: net.classes, seed: seed)
            .batch(Array(0..<batch))
        let trainer = Trainer(model: net, optimizer: SGD(), seed: seed)
        trainer.checkpointing = Checkpointing(policy: .sqrtN, overlap: .split(cores: cores))
        try trainer.train(images: x, labels: y) // warm: plans made, buffers sized
        let recorder = TraceRecorder()
        trainer.trace = recorder
        try trainer.train(images: x, labels: y)
        do {
            try recorder.json(blockNames: net.blocks.map(\.name)).write(to: URL(fileURLWithPath: path))
        } catch {
            throw ValidationError("cannot write the trace to \(path): \(error.localizedDescription)")
        }
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    func report(_ rows: [Row], threads: Int) {
        let base = rows.first { $0.config == .none }?.median
        if json {
            for r in rows {
                var fields: [String: Any] = [
                    "model": model, "batch": batch, "threads": threads, "config": r.config.rawValue,
                    "policy": r.config == .none ? "none" : "sqrt(n)", "overlap": r.config == .overlapped,
                    "segments": r.segments,
                    "step_seconds_median": r.median, "step_seconds_spread": r.spread,
                    "images_per_second": Double(batch) / r.median,
                    "peak_activation_mib": Double(r.activationBytes) / 1_048_576, "peak_rss_mib": r.rssMiB,
                    "isa": KernelRuntime.isa]
                if let base { fields["overhead_vs_none"] = r.median / base - 1 }
                print(String(decoding: try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]), as: UTF8.self))
            }
            return
        }
        print("\(model), batch \(batch), \(threads) thread(s), \(KernelRuntime.isa); \(steps) timed steps after \(warmup) warm-up each")
        print("policy   overlap  step ms (median +- half range)  images/s  peak act. MiB  peak RSS MiB  vs none")
        for r in rows {
            let policy = r.config == .none ? "none" : "sqrt(n)"
            let overlap = r.config == .overlapped ? "on" : "off"
            let versus = base.map { String(format: "%+.0f%%", 100 * (r.median / $0 - 1)) } ?? "-"
            print(pad(policy, 9) + pad(overlap, 9) + pad(String(format: "%8.1f +- %.1f", r.median * 1e3, r.spread * 1e3), 32)
                  + String(format: "%8.1f  %13.1f  %12.1f  ", Double(batch) / r.median,
                           Double(r.activationBytes) / 1_048_576, r.rssMiB) + versus)
        }
    }
}
