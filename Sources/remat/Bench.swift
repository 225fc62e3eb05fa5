import ArgumentParser
import Foundation
import Remat

/// `remat bench`: the CNN training benchmark on synthetic data.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps of a benchmark model on synthetic data.",
        discussion: """
            Runs warm-up steps, then times --steps training steps (forward, softmax
            cross-entropy, backward, SGD with momentum 0.9, lr 0.01) and prints the median step
            time and its spread, images/s, the peak activation memory (exact, from Remat's
            allocator) and the process's peak RSS. Checkpointing policies arrive with the
            checkpointing engine; this runs without checkpointing.

            Examples:
              remat bench                         # resnet56, batch 64, all cores
              remat bench --model lenet5 --batch 256 --threads 1
              remat bench --json                  # one JSON object, for scripts
            """)

    @Option(help: "Model: \(Zoo.names.joined(separator: ", ")).") var model = "resnet56"
    @Option(help: "Images per step.") var batch = 64
    @Option(help: "Timed steps.") var steps = 10
    @Option(help: "Untimed steps first.") var warmup = 2
    @Option(help: "Kernel threads (default: all cores).") var threads: Int?
    @Option(help: "Seed for weights and data.") var seed: UInt64 = 0
    @Flag(help: "Print one JSON object instead of a table.") var json = false

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch)).") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1 (got \(steps)).") }
        guard warmup >= 0 else { throw ValidationError("--warmup cannot be negative (got \(warmup)).") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1 (got \(t)).") }
        _ = try Zoo.model(named: model) // an unknown model name says which exist
    }

    func run() throws {
        if let t = threads { KernelRuntime.threads = t }
        let net = try Zoo.model(named: model, seed: seed)
        let data = try SyntheticDataset(count: batch * 4, imageShape: net.imageShape, classes: net.classes, seed: seed)
        let trainer = Trainer(model: net, optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: seed)
        let batches = try (0..<4).map { b in try data.batch(Array(b * batch..<(b + 1) * batch)) }
        let tty = isatty(STDOUT_FILENO) != 0 && !json
        var times: [Double] = [], peak = 0
        for i in 0..<(warmup + steps) {
            let (x, y) = batches[i % batches.count]
            let m = try trainer.train(images: x, labels: y)
            if i >= warmup { times.append(m.seconds); peak = max(peak, m.peakActivationBytes) }
            if tty { FileHandle.standardError.write("\rstep \(i + 1)/\(warmup + steps)".data(using: .utf8)!) }
        }
        if tty { FileHandle.standardError.write("\r".data(using: .utf8)!) }
        times.sort()
        let median = times[times.count / 2], spread = (times.last! - times.first!) / 2
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let rssMiB = Double(usage.ru_maxrss) / 1024, activationMiB = Double(peak) / 1_048_576
        let ips = Double(batch) / median
        if json {
            let fields: [String: Any] = ["model": model, "batch": batch, "threads": KernelRuntime.threads,
                                         "policy": "none", "step_seconds_median": median, "step_seconds_spread": spread,
                                         "images_per_second": ips, "peak_activation_mib": activationMiB,
                                         "peak_rss_mib": rssMiB, "isa": KernelRuntime.isa]
            print(String(decoding: try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]), as: UTF8.self))
            return
        }
        print("\(model), batch \(batch), \(KernelRuntime.threads) thread(s), \(KernelRuntime.isa); \(steps) timed steps after \(warmup) warm-up")
        print("policy  overlap  step ms (median +- half range)  images/s  peak activations MiB  peak RSS MiB")
        print(String(format: "none    off      %8.1f +- %-6.1f              %8.1f  %20.1f  %12.1f",
                     median * 1e3, spread * 1e3, ips, activationMiB, rssMiB))
    }
}
