import Foundation

/// Metrics of one training step.
public struct StepMetrics: Sendable {
    /// The trainer's step count after this step.
    public var step: Int
    /// Mean softmax cross-entropy of the batch.
    public var loss: Float
    /// Images of the batch whose largest logit is their label.
    public var correct: Int
    /// Images in the batch.
    public var images: Int
    /// Wall-clock seconds of the step (forward, loss, backward, recompute, optimizer).
    public var seconds: Double
    /// The most activation bytes live at once during the step (exact, from the allocator).
    public var peakActivationBytes: Int
    /// Data-parallel steps: seconds spent averaging gradients over the ranks, and the part
    /// the step waited for after its backward pass (the rest was hidden behind it).
    public var communicationSeconds = 0.0
    public var communicationWaitSeconds = 0.0
    /// `correct / images`.
    public var accuracy: Double { Double(correct) / Double(max(images, 1)) }
    /// `images / seconds`.
    public var imagesPerSecond: Double { Double(images) / max(seconds, 1e-12) }
}

/// The training step of docs/WORKLOADS.md: forward, mean softmax cross-entropy, backward,
/// optimizer step. A non-finite loss stops the step before any parameter changes.
public final class Trainer {
    /// The model it trains (its parameters change every step).
    public let model: Model
    /// The optimizer; its `learningRate` may be changed between steps (`fit` does, per schedule).
    public let optimizer: Optimizer
    /// Where every activation of its steps is charged: `peakActivationBytes` comes from here.
    public let account: MemoryAccount
    /// Seeds dropout masks and epoch shuffles.
    public let seed: UInt64
    /// Steps taken so far (restored by `TrainingState.load`).
    public internal(set) var step = 0
    /// Checkpointing for the following steps (one line to turn it on).
    public var checkpointing: Checkpointing = .keepAll
    /// When set, every step's spans are recorded into it (Chrome trace-event JSON).
    public var trace: TraceRecorder?

    /// Data-parallel training over MPI: with a communicator of more than one rank, rank 0's
    /// weights, BatchNorm statistics and optimizer state are copied to every rank now, each
    /// step averages the gradients over the ranks (in buckets, overlapped with the backward
    /// pass) before the optimizer runs, and `fit` gives each rank its shard of every batch.
    /// BatchNorm normalises with each rank's own batch statistics, as DistributedDataParallel
    /// without SyncBatchNorm does.
    public var communicator: Communicator? {
        didSet {
            averager?.stop()
            averager = nil
            guard let c = communicator, c.size > 1 else { return }
            averager = GradientAverager(communicator: c, model: model)
            synchronizeFromRankZero()
        }
    }
    private var averager: GradientAverager?

    /// The recompute thread of overlapped steps, kept warm across them.
    private(set) var recomputeThread: RecomputeThread?

    deinit {
        averager?.stop()
        recomputeThread?.stop()
    }

    /// `account` receives every activation of the steps this trainer runs (a fresh one by
    /// default, so the reported peak is this trainer's alone).
    public init(model: Model, optimizer: Optimizer, seed: UInt64 = 0, account: MemoryAccount = MemoryAccount()) {
        self.model = model
        self.optimizer = optimizer
        self.seed = seed
        self.account = account
    }

    /// One step on a batch.
    @discardableResult
    public func train(images: Tensor, labels: [Int32]) throws -> StepMetrics {
        try account.withCurrent { try trainStep(images: images, labels: labels) }
    }

    /// The plan a step of `batch` images runs under `checkpointing`, and the chain profile
    /// it is predicted with: measured on this machine once per batch size (each block run
    /// once; see `ChainProfile.measure`).
    public func plan(batch: Int) throws -> (plan: CheckpointPlan, profile: ChainProfile) {
        (try stepPlan(batch: batch), try profile(batch: batch))
    }

    func profile(batch: Int) throws -> ChainProfile {
        if let p = profiles[batch] { return p }
        let p = try ChainProfile.measure(model, batch: batch, seed: seed)
        profiles[batch] = p
        return p
    }
    private var profiles: [Int: ChainProfile] = [:]
    private var plans: [Int: (policy: CheckpointPolicy, overlapped: Bool, plan: CheckpointPlan)] = [:]

    /// The plan of a step, made once per batch size and checkpointing (with overlap, a budget
    /// chooses among segmentations only). Policies that balance or budget bytes need the
    /// profile; the others only count blocks.
    private func stepPlan(batch: Int) throws -> CheckpointPlan {
        let policy = checkpointing.policy, overlapped = checkpointing.effectiveOverlap != nil
        if let p = plans[batch], p.policy == policy, p.overlapped == overlapped { return p.plan }
        let plan: CheckpointPlan
        switch policy {
        case .sqrtN, .budget: plan = try CheckpointPlan(policy: policy, profile: profile(batch: batch), overlapped: overlapped)
        default: plan = try CheckpointPlan(policy: policy, blocks: model.blocks.count)
        }
        plans[batch] = (policy, overlapped, plan)
        return plan
    }

    private func trainStep(images: Tensor, labels: [Int32]) throws -> StepMetrics {
        let plan = try stepPlan(batch: labels.count)
        let start = DispatchTimeSource.now()
        account.resetPeak()
        model.zeroGradients()
        let context = ForwardContext(training: true, seed: seed, step: step)
        var executor = StepExecutor(model: model, plan: plan, trace: trace)
        if let averager {
            averager.begin()
            executor.blockDone = { averager.blockDone($0) }
        }
        // distributed: an error ends this rank, and mpirun ends the others (collectives
        // cannot be matched up once one rank has left the step)
        let (loss, correct): (Float, Int)
        if let overlap = checkpointing.effectiveOverlap {
            if recomputeThread == nil { recomputeThread = RecomputeThread() }
            let pacer = try overlap.memoryLimit.map { RecomputePacer(limit: $0, profile: try profile(batch: labels.count), plan: plan) }
            (loss, correct) = try executor.runOverlapped(images: images, labels: labels, context: context, overlap: overlap,
                                                         thread: recomputeThread!, account: account, pacer: pacer)
        } else {
            (loss, correct) = try executor.run(images: images, labels: labels, context: context)
        }
        let communication = averager?.finish() ?? (0, 0)
        optimizer.step(model)
        step += 1
        var m = StepMetrics(step: step, loss: loss, correct: correct, images: labels.count,
                            seconds: DispatchTimeSource.seconds(since: start), peakActivationBytes: account.peakBytes)
        (m.communicationSeconds, m.communicationWaitSeconds) = communication
        return m
    }

    /// Accuracy and mean loss over a dataset in evaluation mode (running BN statistics, no
    /// dropout). Each block's records are dropped as soon as it has run, so evaluation holds
    /// about two activations at a time, charged to this trainer's account.
    public func evaluate(_ data: Dataset, batchSize: Int = 256) throws -> (loss: Double, accuracy: Double) {
        try account.withCurrent {
            var total = 0.0, correct = 0
            let context = ForwardContext(training: false)
            for start in stride(from: 0, to: data.count, by: batchSize) {
                let (x, y) = try data.batch(Array(start..<min(start + batchSize, data.count)))
                try model.check(x)
                let logits = try model.forward(model.blocks.indices, from: x, context, trace: nil, span: "forward")
                total += Double(try SoftmaxCrossEntropy.evaluate(logits: logits, labels: y).loss) * Double(y.count)
                correct += SoftmaxCrossEntropy.correct(logits: logits, labels: y)
            }
            return (total / Double(data.count), Double(correct) / Double(data.count))
        }
    }
}

/// Monotonic time without Foundation's Date.
enum DispatchTimeSource {
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
    static func seconds(since start: UInt64) -> Double { Double(now() - start) * 1e-9 }
}
