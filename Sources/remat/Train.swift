import ArgumentParser
import Foundation
import Remat

/// `remat train`: trains a zoo model on a dataset, with checkpointing, saving and resuming.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on a dataset, with checkpointing, per-epoch evaluation, saving and resuming.",
        discussion: """
            --data takes: synthetic (the default: seeded class patterns plus noise, shaped for the model), fashion-mnist (the Debian package dataset-fashion-mnist), a directory of IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], and t10k-* for the test set), a directory of CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin), or one CIFAR-10 .bin file.

            With --save, the training state (weights, BatchNorm statistics, optimizer buffers, step) is written atomically after every epoch; --resume continues from such a file (and keeps saving to it unless --save names another). Ctrl-C saves and exits with status 130; resuming then repeats the interrupted epoch.

            Examples:
              remat train --model lenet5 --data fashion-mnist --epochs 2 --lr 0.05
              remat train --model resnet20 --data ~/cifar10 --augment --policy sqrt
              remat train --model lenet5 --data fashion-mnist --save run.st
              remat train --model lenet5 --data fashion-mnist --epochs 4 --resume run.st
              remat train --model resnet20 --log-every 10 > log   # progress in a file
            """)

    enum OptimizerChoice: String, ExpressibleByArgument, CaseIterable { case sgd, adamw }
    enum ScheduleChoice: String, ExpressibleByArgument, CaseIterable { case constant, cosine, step }

    @OptionGroup var options: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @Option(help: "synthetic, fashion-mnist, or a path (IDX or CIFAR-10 files).") var data = "synthetic"
    @Option(help: "Use only the first N training images (synthetic: make N; default 2048).") var trainSize: Int?
    @Option(help: "Use only the first N test images (synthetic: make N; default 512).") var testSize: Int?
    @Option(help: "Epochs in all (a resumed run continues up to this many).") var epochs = 1
    @Option(help: "Optimizer: sgd (momentum) or adamw.") var optimizer: OptimizerChoice = .sgd
    @Option(help: "Learning rate (default 0.01 for sgd, 0.001 for adamw).") var lr: Float?
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Option(help: "Weight decay (decoupled for adamw).") var weightDecay: Float = 0
    @Option(help: "Learning-rate schedule: constant, cosine (to 0 over the run) or step (x0.1 every third of it).")
    var schedule: ScheduleChoice = .constant
    @Option(help: "Steps of linear learning-rate warm-up.") var warmupSteps = 0
    @Flag(help: "Random crops (pad 4) and flips of the training images.") var augment = false
    @Option(help: "Checkpointing: none, sqrt, every-K, selective, minimal, lean, budget-SIZE (default: none).") var policy: CheckpointPolicy?
    @OptionGroup var memoryOptions: MemoryOptions
    @Option(help: "A memory budget (bytes, or with KiB/MiB/GiB); overrides --policy.") var budget: String?
    @Flag(help: "Recompute on its own thread, overlapped with the backward pass.") var overlap = false
    @Option(help: "Write the training state here after every epoch (atomically).") var save: String?
    @Option(help: "Continue from this saved state.") var resume: String?
    @Option(help: "Append metrics as JSON lines (one per step and per epoch) to this file.") var metrics: String?
    @Option(help: "Also print a line every N steps (besides the one per epoch).") var logEvery: Int?

    func validate() throws {
        guard options.batch >= 2 else { throw ValidationError("--batch must be at least 2 for training (BatchNorm needs two images).") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1 (got \(epochs)).") }
        if let n = trainSize, n < 2 { throw ValidationError("--train-size must be at least 2 (got \(n)).") }
        if let n = testSize, n < 1 { throw ValidationError("--test-size must be at least 1 (got \(n)).") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number (got \(lr)).") }
        guard momentum >= 0 && momentum < 1 else {
            throw ValidationError("--momentum must be at least 0 and below 1, e.g. 0.9 (got \(momentum)).")
        }
        guard weightDecay >= 0 && weightDecay.isFinite else {
            throw ValidationError("--weight-decay must be 0 or a positive number, e.g. 5e-4 (got \(weightDecay)).")
        }
        if let n = logEvery, n < 1 { throw ValidationError("--log-every must be at least 1 (got \(n)).") }
        if memoryOptions.memory != nil && (policy != nil || budget != nil) {
            throw ValidationError("--memory chooses the checkpointing plan: drop --policy and --budget.")
        }
        guard warmupSteps >= 0 else { throw ValidationError("--warmup-steps cannot be negative.") }
        try validateSize(budget, option: "--budget", example: "80MiB")
        if let r = resume, !FileManager.default.fileExists(atPath: r) {
            throw ValidationError("--resume \(r): no such file. Give the path a --save wrote.")
        }
        if let path = save ?? resume { try checkWritable(path, option: save != nil ? "--save" : "--resume") }
    }

    func run() throws {
        // under mpirun: data-parallel over the ranks; rank 0 alone prints, logs and saves
        let communicator = Communicator.launchedSize > 1 ? try Communicator.world() : nil
        let lead = (communicator?.rank ?? 0) == 0
        // written at once, also into a file or a pipe, so `remat train > log` shows progress as it goes
        func print(_ text: String) { if lead { FileHandle.standardOutput.write(Data((text + "\n").utf8)) } }
        let settings = try threading.resolve(model: options.model, batch: options.batch)
        KernelRuntime.threads = settings.threads
        if let note = settings.note { print(note) }
        let model = try options.makeModel()
        let (train, test) = try loadData(for: model)
        guard train.imageShape == model.imageShape, train.classes <= model.classes else {
            throw ValidationError("\(options.model) takes \(model.imageShape) images in \(model.classes) classes; \(data) has "
                                  + "\(train.imageShape) images in \(train.classes). Pick a model that fits (lenet5 for 28x28 grey, the others for 32x32 colour).")
        }
        if let test, test.imageShape != train.imageShape || test.classes > model.classes {
            throw ValidationError("--data \(data): the test set has \(test.imageShape) images in \(test.classes) classes, the training set "
                                  + "\(train.imageShape) in \(train.classes). Give a test set of the same kind (t10k-* beside train-*).")
        }
        let opt: Optimizer = optimizer == .sgd
            ? SGD(learningRate: lr ?? 0.01, momentum: momentum, weightDecay: weightDecay)
            : AdamW(learningRate: lr ?? 1e-3, weightDecay: weightDecay)
        let trainer = Trainer(model: model, optimizer: opt, seed: options.seed)
        var chosen = budget.flatMap(CheckpointPolicy.parseBytes).map(CheckpointPolicy.budget(bytes:)) ?? policy ?? .keepAll
        trainer.checkpointing = Checkpointing(policy: chosen, overlap: overlap ? settings.overlap : nil)
        // opened (and its encoder first used) before a memory limit's runtime is measured
        let log = lead ? try metrics.map { try MetricsLog(path: $0) } : nil
        var predictedRSS: Int?
        if let limit = try memoryOptions.resolve() {
            let fit = try trainer.fit(memory: limit.bytes, batch: options.batch, overlap: trainer.checkpointing.overlap,
                                          datasetBytes: train.residentBytes + (test?.residentBytes ?? 0))
            chosen = fit.checkpointing.policy
            predictedRSS = fit.memory.total
            print("memory limit \(mib(limit.bytes)) MiB (\(limit.source)): checkpointing \(chosen), "
                  + "predicted peak resident memory \(describe(fit.memory))")
        }
        var first = 0
        if let resume {
            let meta = try TrainingState.load(into: trainer, from: resume)
            first = try nextEpoch(meta, path: resume)
            print("resumed \(resume): step \(trainer.step), continuing at epoch \(first + 1) of \(epochs)")
            if first >= epochs { print("nothing to do: \(epochs) epoch(s) already trained"); return }
        }
        trainer.communicator = communicator // copies rank 0's state to every rank
        let savePath = lead ? save ?? resume : nil
        let perEpoch = (train.count + options.batch - 1) / options.batch
        let total = perEpoch * epochs
        let rate: LearningRateSchedule
        switch schedule {
        case .constant: rate = LearningRateSchedule(base: opt.learningRate, warmup: warmupSteps)
        case .cosine: rate = LearningRateSchedule(base: opt.learningRate, shape: .cosine(total: total, minimum: 0), warmup: warmupSteps)
        case .step: rate = LearningRateSchedule(base: opt.learningRate, shape: .step(every: max(1, total / 3), factor: 0.1), warmup: warmupSteps)
        }
        let progress = Progress(quiet: !lead)
        let interrupt = Interrupt()
        let clock = Stopwatch()
        var runSteps = 0
        let runTotal = perEpoch * (epochs - first)
        print("\(options.model) on \(data): \(train.count) training images" + (test.map { ", \($0.count) test images" } ?? "")
              + ", batch \(options.batch), \(settings.threads) thread(s), checkpointing \(chosen)" + (overlap ? " overlapped" : "")
              + (communicator.map { ", \($0.size) ranks (a shard of \(options.batch / $0.size) images each)" } ?? ""))
        var epoch = first
        do {
            var seen = 0, correct = 0, lossSum = 0.0
            try trainer.fit(train, epochs: first..<epochs, batchSize: options.batch, test: test, schedule: rate,
                            augmentation: augment ? Augmentation(seed: options.seed) : nil) { event in
                switch event {
                case .step(let e, let m):
                    if e != epoch { (epoch, seen, correct, lossSum) = (e, 0, 0, 0) }
                    seen += m.images; correct += m.correct; lossSum += Double(m.loss) * Double(m.images)
                    let done = (seen + options.batch - 1) / options.batch
                    runSteps += 1
                    let elapsed = clock.seconds, left = elapsed / Double(runSteps) * Double(runTotal - runSteps)
                    let bar = String(repeating: "=", count: 20 * done / max(perEpoch, 1)).padding(toLength: 20, withPad: " ", startingAt: 0)
                    progress.show(String(format: "epoch %d/%d [%@] %d/%d loss %.4f acc %.1f%% %.0f img/s, %@ elapsed, about %@ left",
                                         e + 1, epochs, bar, done, perEpoch, lossSum / Double(seen), 100 * Double(correct) / Double(seen),
                                         m.imagesPerSecond, duration(elapsed), duration(left)))
                    if let n = logEvery, m.step % n == 0 {
                        progress.clear()
                        print(String(format: "epoch %d/%d step %d (%d/%d): loss %.4f, accuracy %.2f%%, %.0f images/s, %@ elapsed",
                                     e + 1, epochs, m.step, done, perEpoch, lossSum / Double(seen), 100 * Double(correct) / Double(seen),
                                     m.imagesPerSecond, duration(elapsed)))
                    }
                    try log?.write(["type": "step", "epoch": e + 1, "step": m.step, "loss": Double(m.loss), "accuracy": m.accuracy,
                                    "images_per_second": m.imagesPerSecond, "peak_activation_mib": Double(m.peakActivationBytes) / 1_048_576,
                                    "rss_mib": PeakRSS.currentMiB])
                    if interrupt.requested { throw Interrupted(epoch: e) }
                case .epoch(var m):
                    progress.clear()
                    if let c = communicator {
                        // every rank trained on as many images: the epoch's loss and accuracy are the
                        // ranks' mean, its speed their sum; the ranks must still agree bit for bit
                        let s = c.sum([m.loss, m.accuracy, m.imagesPerSecond])
                        (m.loss, m.accuracy, m.imagesPerSecond) = (s[0] / Double(c.size), s[1] / Double(c.size), s[2])
                        guard trainer.replicasAgree() else {
                            throw RematError.invalidArgument("the ranks' weights differ after epoch \(m.epoch + 1): a rank computed differently; not saving")
                        }
                    }
                    var line = String(format: "epoch %d/%d: loss %.4f, accuracy %.2f%%, %.0f images/s, peak activations %@ MiB",
                                      m.epoch + 1, epochs, m.loss, 100 * m.accuracy, m.imagesPerSecond, mib(m.peakActivationBytes))
                    if let l = m.testLoss, let a = m.testAccuracy { line += String(format: "; test loss %.4f, accuracy %.2f%%", l, 100 * a) }
                    let peakRSS = ProcessMemory.peakResidentBytes()
                    if let predictedRSS { line += "; peak RSS \(mib(peakRSS)) MiB (predicted \(mib(predictedRSS)))" }
                    print(line)
                    var fields: [String: Any] = ["type": "epoch", "epoch": m.epoch + 1, "loss": m.loss, "accuracy": m.accuracy,
                                                 "images_per_second": m.imagesPerSecond, "peak_activation_mib": Double(m.peakActivationBytes) / 1_048_576]
                    if let l = m.testLoss, let a = m.testAccuracy { fields["test_loss"] = l; fields["test_accuracy"] = a }
                    fields["peak_rss_mib"] = Double(peakRSS) / 1_048_576
                    if let predictedRSS { fields["predicted_peak_rss_mib"] = Double(predictedRSS) / 1_048_576 }
                    try log?.write(fields)
                    if let savePath {
                        try TrainingState.save(trainer, to: savePath, metadata: ["next_epoch": String(m.epoch + 1)])
                        print("saved \(savePath)")
                    }
                    // Ctrl-C during the evaluation: stop here rather than after the next step
                    if interrupt.requested && m.epoch + 1 < epochs { throw Interrupted(epoch: m.epoch + 1) }
                }
            }
        } catch let stop as Interrupted {
            progress.clear()
            if let savePath {
                try TrainingState.save(trainer, to: savePath, metadata: ["next_epoch": String(stop.epoch), "interrupted": "true"])
                print("interrupted: saved \(savePath) at step \(trainer.step); --resume continues with epoch \(stop.epoch + 1) from its start")
            } else {
                print("interrupted at step \(trainer.step) (nothing saved: no --save)")
            }
            throw ExitCode(130)
        }
    }

    /// The epoch a saved state continues at: its `next_epoch` field, a whole number from 0;
    /// a state saved without one (by the library) starts at the first epoch.
    func nextEpoch(_ meta: [String: String], path: String) throws -> Int {
        guard let text = meta["next_epoch"] else { return 0 }
        guard let epoch = Int(text), epoch >= 0 else {
            throw ValidationError("--resume \(path): its next_epoch field is \"\(text)\", not a whole number from 0; "
                                  + "the file is damaged or was not written by remat train. Nothing was changed.")
        }
        return epoch
    }

    /// The training set and, where there is one, the test set.
    func loadData(for model: Model) throws -> (any Dataset, (any Dataset)?) {
        func limit(_ d: some Dataset, _ n: Int?) -> any Dataset { n.map { DatasetPrefix(d, count: $0) } ?? d }
        let fm = FileManager.default
        switch data {
        case "synthetic":
            let n = trainSize ?? 2048
            let train = try SyntheticDataset(count: n, imageShape: model.imageShape, classes: model.classes, seed: options.seed + 1)
            let test = try SyntheticDataset(count: testSize ?? 512, imageShape: model.imageShape, classes: model.classes,
                                            seed: options.seed + 1, firstIndex: n)
            return (train, test)
        case "fashion-mnist":
            return (limit(try IDXDataset.fashionMNIST(train: true), trainSize), limit(try IDXDataset.fashionMNIST(train: false), testSize))
        default:
            let path = (data as NSString).expandingTildeInPath
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw ValidationError("--data \(data): no such file or directory. Use synthetic, fashion-mnist, or a path to IDX or CIFAR-10 files.")
            }
            if !isDirectory.boolValue {
                guard path.hasSuffix(".bin") else { throw ValidationError("--data \(data): a single file must be a CIFAR-10 .bin batch.") }
                return (limit(try CIFAR10Dataset(files: [path]), trainSize), nil)
            }
            let names = (try? fm.contentsOfDirectory(atPath: path)) ?? []
            func idx(_ prefix: String) -> (String, String)? {
                for ext in ["", ".gz"] where names.contains("\(prefix)-images-idx3-ubyte\(ext)") {
                    return ("\(path)/\(prefix)-images-idx3-ubyte\(ext)", "\(path)/\(prefix)-labels-idx1-ubyte\(ext)")
                }
                return nil
            }
            if let (images, labels) = idx("train") {
                let test = try idx("t10k").map { try IDXDataset(images: $0.0, labels: $0.1) }
                return (limit(try IDXDataset(images: images, labels: labels), trainSize), test.map { limit($0, testSize) })
            }
            let batches = names.filter { $0.hasPrefix("data_batch_") && $0.hasSuffix(".bin") }.sorted()
            if !batches.isEmpty {
                let test = names.contains("test_batch.bin") ? try CIFAR10Dataset(files: ["\(path)/test_batch.bin"]) : nil
                return (limit(try CIFAR10Dataset(files: batches.map { "\(path)/\($0)" }), trainSize), test.map { limit($0, testSize) })
            }
            throw ValidationError("--data \(data): found neither IDX files (train-images-idx3-ubyte[.gz]) nor CIFAR-10 batches (data_batch_*.bin) there.")
        }
    }
}

struct Interrupted: Error { let epoch: Int }

/// "42 s", "3 min 05 s", "1 h 02 min".
func duration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    if s < 60 { return "\(s) s" }
    if s < 3600 { return String(format: "%d min %02d s", s / 60, s % 60) }
    return String(format: "%d h %02d min", s / 3600, s % 3600 / 60)
}

/// Seconds since it was made.
struct Stopwatch {
    let start = DispatchTime.now()
    var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9 }
}

/// Ctrl-C asks the loop to stop after the current step or evaluation, and says so at once (a
/// second Ctrl-C exits at once).
final class Interrupt: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private let source: DispatchSourceSignal

    init() {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [unowned self] in
            let n = lock.withLock { count += 1; return count }
            if n > 1 { _exit(130) }
            FileHandle.standardError.write(Data("\ninterrupted: stopping after the step or evaluation under way (Ctrl-C again quits at once, without saving)\n".utf8))
        }
        source.resume()
    }

    var requested: Bool { lock.withLock { count > 0 } }
}

/// Appends JSON lines to a file.
final class MetricsLog {
    private let handle: FileHandle
    init(path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw ValidationError("--metrics \(path): cannot open it for writing; check the folder exists and is writable.")
        }
        handle = h
        handle.seekToEndOfFile()
        _ = try? JSONSerialization.data(withJSONObject: ["warm": 1.5], options: [.sortedKeys]) // load the encoder now
    }
    func write(_ object: [String: Any]) throws {
        var data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        data.append(0x0A)
        handle.write(data)
    }
}

