import Foundation
import RematKernels

/// Runs one training step's schedule (`StepSchedule`): forward, loss and backward under a
/// checkpoint plan, leaving the parameter gradients accumulated. `run` rebuilds checkpointed
/// segments on the calling thread; `runOverlapped` has the recompute thread rebuild them
/// while the backward pass works (`RecomputeWorker`). Both give the same bits.
///
/// Rebuilds take back the batch statistics the forward recorded (BatchNorm does not reduce
/// again, running statistics stay untouched, dropout masks are regenerated from the seed).
struct StepExecutor {
    let model: Model
    let schedule: StepSchedule
    let trace: TraceRecorder?
    /// Called after each block's backward pass (its parameter gradients are then final).
    var blockDone: ((Int) -> Void)? = nil

    init(model: Model, plan: CheckpointPlan, trace: TraceRecorder?) {
        self.model = model
        self.trace = trace
        schedule = StepSchedule(plan, rebuildsOutput: model.rebuildsOutput(plan))
    }

    /// Runs the step on the calling thread. Returns the mean loss and the correct count.
    func run(images: Tensor, labels: [Int32], context: ForwardContext) throws -> (loss: Float, correct: Int) {
        try model.check(images)
        var state = StepState(images: images, blocks: model.blocks.count)
        for op in schedule.operations { try perform(op, &state, labels: labels, context: context, rebuilder: nil) }
        return state.result!
    }

    /// Runs the step with the checkpointed segments rebuilt on `thread` (its team as `overlap`
    /// says, paced by `pacer` under a memory limit), charged to `account`.
    func runOverlapped(images: Tensor, labels: [Int32], context: ForwardContext, overlap: Overlap,
                       thread: RecomputeThread, account: MemoryAccount, pacer: RecomputePacer?) throws -> (loss: Float, correct: Int) {
        try model.check(images)
        guard schedule.plan.isSegmented else {
            throw RematError.invalidArgument("\(schedule.plan) rebuilds stashes on the backward thread: turn overlap off, or use every-k, sqrt(n) or a budget with overlap")
        }
        var state = StepState(images: images, blocks: model.blocks.count)
        for op in schedule.forwardOperations { try perform(op, &state, labels: labels, context: context, rebuilder: nil) }
        // the worker holds the checkpoints now, freeing each when used
        let earlier = schedule.segments.dropLast()
        let worker = RecomputeWorker(model: model, segments: earlier.map(\.blocks),
                                     checkpoints: earlier.map { state.checkpoints.removeValue(forKey: $0.index) },
                                     statistics: earlier.map { state.statistics.removeValue(forKey: $0.index) },
                                     context: context.rebuilding, overlap: overlap, account: account, trace: trace,
                                     pacer: pacer, thread: thread)
        let cores = overlap.backwardThreads + overlap.recomputeThreads, segmentOf = schedule.segmentOf
        do {
            // the recompute team's threads join the backward pass while it is idle, on its CPUs
            try KernelTeam.scoped(threads: overlap.backwardThreads, borrowing: worker.toBackward,
                                  cpus: overlap.bindsCores ? 0..<cores : nil) {
                for op in schedule.backwardOperations {
                    try perform(op, &state, labels: labels, context: context, rebuilder: worker)
                    switch op {
                    case .backward(let i): worker.backwardReached(segment: segmentOf[i], upper: i)
                    case .release: worker.release()
                    default: break
                    }
                }
            }
        } catch {
            worker.cancel()
            throw error
        }
        worker.join()
        return state.result!
    }

    /// One operation. Checkpointed segments are rebuilt by `rebuilder` if given, else here.
    private func perform(_ op: StepOperation, _ state: inout StepState, labels: [Int32], context: ForwardContext,
                         rebuilder: RecomputeWorker?) throws {
        switch op {
        case .checkpoint(let s):
            state.checkpoints[s.index] = state.activation
            state.recording = ActivationStash()
            state.statistics[s.index] = state.recording
        case .forward(let i, let keep):
            var c = context
            switch keep {
            case .records: break
            case .statistics: c.statistics = state.recording
            case .stash(let keepsInput):
                if keepsInput { state.keptInputs[i] = state.activation }
                (state.stashes[i], state.stashStatistics[i]) = (ActivationStash(), ActivationStash())
                (c.stash, c.statistics) = (state.stashes[i], state.stashStatistics[i])
                c.keepStash(schedule.stashKinds[i])
            }
            let (y, saved) = try trace.span("forward", block: i) { try model.blocks[i].forward(state.activation, c) }
            if keep == .records { state.records[i] = saved } // the others are dropped here and rebuilt later
            state.activation = y
        case .loss:
            state.recording = nil
            let (loss, dlogits, correct) = try StepExecutor.loss(state.activation, labels, context)
            state.gradient = dlogits
            state.result = (loss, correct)
        case .rebuild(let s):
            let saved: [Saved]
            if let rebuilder {
                // rebuilt here instead if the recompute thread has not started it (memory limit)
                saved = try rebuilder.take(segment: s.index) { input, statistics in
                    try model.rebuild(s.blocks, from: input, statistics: statistics, context.rebuilding, trace: trace)
                }
            } else {
                let input = state.checkpoints.removeValue(forKey: s.index)!
                saved = try model.rebuild(s.blocks, from: input, statistics: state.statistics.removeValue(forKey: s.index),
                                          context.rebuilding, trace: trace)
            }
            for (i, record) in zip(s.blocks, saved) { state.records[i] = record }
        case .rebuildIntoStashes(let s, let keepsInput):
            let logits = state.activation
            state.activation = state.checkpoints.removeValue(forKey: s.index)!
            state.statistics[s.index] = nil // each stash reduces its own again (the same bits)
            for (i, keeps) in zip(s.blocks, keepsInput) {
                try perform(.forward(block: i, keep: .stash(keepsInput: keeps)), &state, labels: labels,
                            context: context.rebuilding, rebuilder: nil)
            }
            state.activation = logits
        case .rebuildFromStash(let i):
            var replay = context.rebuilding
            replay.keepStash(i > 0 ? schedule.stashKinds[i - 1] : nil)
            let input = try state.keptInputs[i] ?? trace.span("recompute", block: i - 1) {
                try (model.blocks[i - 1] as! OutputFromStash).outputFromStash(state.stashes[i - 1]!, replay)!
            }
            replay.keepStash(schedule.stashKinds[i])
            state.stashes[i]!.rewind()
            state.stashStatistics[i]!.rewind()
            (replay.stash, replay.statistics) = (state.stashes[i], state.stashStatistics[i])
            state.records[i] = try trace.span("recompute", block: i) { try model.blocks[i].forward(input, replay).1 }
        case .backward(let i):
            state.gradient = try trace.span("backward", block: i) { try model.blocks[i].backward(state.gradient!, state.records[i]!, owned: true) }
            (state.records[i], state.stashes[i], state.stashStatistics[i], state.keptInputs[i]) = (nil, nil, nil, nil) // its activations go now
            blockDone?(i)
        case .release:
            break
        }
    }

    /// The mean loss, its gradient and the correct count; a non-finite loss stops the step
    /// before any gradient exists.
    private static func loss(_ logits: Tensor, _ labels: [Int32], _ context: ForwardContext) throws -> (Float, Tensor, Int) {
        let (loss, dlogits) = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels)
        guard loss.isFinite else {
            // a loss that was finite before and is not now points at the step size; one that
            // never was, at the data or the weights it started from
            let advice = context.step == 0
                ? "check the images and the initial weights for NaN or infinite values"
                : "the learning rate is the likely cause: lower it"
            throw RematError.nonFinite("the loss became \(loss) at step \(context.step); \(advice) (parameters left as they were)")
        }
        return (loss, dlogits, SoftmaxCrossEntropy.correct(logits: logits, labels: labels))
    }
}

/// What a step holds between its operations.
private struct StepState {
    /// The current activation: the images, each block's output in turn, then the logits
    /// (held to the end of the step, as the prediction assumes).
    var activation: Tensor
    /// The gradient flowing back, from the loss on.
    var gradient: Tensor?
    /// Checkpointed segments' inputs and recorded BatchNorm statistics, by segment.
    var checkpoints: [Int: Tensor] = [:]
    var statistics: [Int: ActivationStash] = [:]
    /// Where the segment running forward records its statistics.
    var recording: ActivationStash?
    /// Each block's records, from its forward or rebuild to its backward.
    var records: [Saved?]
    /// Selective, minimal and lean: each block's stash, its BatchNorms' batch statistics (its
    /// rebuild takes them back instead of reducing again), and its input where kept.
    var stashes: [ActivationStash?]
    var stashStatistics: [ActivationStash?]
    var keptInputs: [Tensor?]
    var result: (loss: Float, correct: Int)?

    init(images: Tensor, blocks n: Int) {
        activation = images
        records = Array(repeating: nil, count: n)
        stashes = Array(repeating: nil, count: n)
        stashStatistics = Array(repeating: nil, count: n)
        keptInputs = Array(repeating: nil, count: n)
    }
}

extension ForwardContext {
    /// The context of a rebuild: the same step, running statistics left as the forward moved them.
    var rebuilding: ForwardContext {
        var c = self
        c.updateRunningStatistics = false
        return c
    }
}

extension Model {
    /// Rebuilds the records of blocks `range` from their segment's checkpoint and the batch
    /// statistics its forward recorded; `before(i)` runs before block i.
    func rebuild(_ range: Range<Int>, from checkpoint: Tensor, statistics: ActivationStash?, _ context: ForwardContext,
                 trace: TraceRecorder?, before: (Int) throws -> Void = { _ in }) throws -> [Saved] {
        var c = context
        statistics?.rewind()
        c.statistics = statistics
        var saved: [Saved] = []
        _ = try forward(range, from: checkpoint, c, trace: trace, span: "recompute", before: before, keep: { saved.append($1) })
        return saved
    }

    /// Whether each block can rebuild its output from its stash alone under `plan`.
    func rebuildsOutput(_ plan: CheckpointPlan) -> [Bool] {
        zip(blocks, plan.stashKinds).map { ($0 as? OutputFromStash)?.rebuildsOutputFromStash(minimal: $1?.keepsMinimum == true) == true }
    }
}
