import Foundation
import Testing
import RematKernels
@testable import Remat

/// Everything a step changes, as bits: loss, gradients, updated weights, BN running statistics.
struct StepResult: Equatable {
    var loss: UInt32
    var gradients: [UInt32]
    var weights: [UInt32]
    var running: [UInt32]
}

/// The models a parameterised test runs: all of `models`, or only those REMAT_TEST_MODELS
/// names (space-separated): ThreadSanitizer's run takes the small ones, which still cover
/// every kind of block (.ci/sanitize.sh).
func testModels(_ models: [String]) -> [String] {
    guard let only = ProcessInfo.processInfo.environment["REMAT_TEST_MODELS"] else { return models }
    let names = Set(only.split(separator: " ").map(String.init))
    return models.filter(names.contains)
}

func runSteps(_ makeModel: () throws -> Model, batch: Int, checkpointing: Checkpointing, steps: Int = 2) throws -> StepResult {
    let model = try makeModel()
    let data = try SyntheticDataset(count: batch * steps, imageShape: model.imageShape, classes: model.classes, seed: 4)
    let trainer = Trainer(model: model, optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: 8)
    trainer.checkpointing = checkpointing
    var loss: Float = 0
    for s in 0..<steps {
        let (x, y) = try data.batch(Array(s * batch..<(s + 1) * batch))
        loss = try trainer.train(images: x, labels: y).loss
    }
    let bns = model.leaves.compactMap { $0 as? BatchNorm2D }
    return StepResult(loss: loss.bitPattern, gradients: model.parameterGradients.map(\.bitPattern),
                      weights: model.parameters.map(\.bitPattern),
                      running: bns.flatMap { $0.runningMean + $0.runningVariance }.map(\.bitPattern))
}

/// A block that fails in its backward pass on demand (to test cancellation).
final class FailingLayer: Layer {
    var fail = false, failRecompute = false
    var name: String { "failing" }
    func outputShape(for input: Shape) throws -> Shape { input }
    func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        if failRecompute && !context.updateRunningStatistics { throw RematError.invalidArgument("injected recompute failure") }
        return (x, Saved())
    }
    func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        if fail { throw RematError.invalidArgument("injected failure") }
        return dy
    }
}

/// A block that records the CPUs its thread may use, in its recompute and its backward pass.
final class CPUProbe: Layer, @unchecked Sendable {
    var recompute: [(count: Int32, first: Int32)] = [], backward: [(count: Int32, first: Int32)] = []
    var name: String { "cpu probe" }
    func outputShape(for input: Shape) throws -> Shape { input }
    static func cpus() -> (count: Int32, first: Int32) {
        var first: Int32 = -1
        let count = kn_thread_cpus(&first)
        return (count, first)
    }
    func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        if !context.updateRunningStatistics { recompute.append(CPUProbe.cpus()) }
        return (x, Saved())
    }
    func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        backward.append(CPUProbe.cpus())
        return dy
    }
}

@Suite("Checkpointing: plans, exactness, overlap, cancellation, trace")
struct CheckpointTests {
    @Test func plans() throws {
        let p = try CheckpointPlan(policy: .sqrtN, blocks: 29) // resnet56: stem, 27 blocks, head
        #expect(p.segments == [0..<6, 6..<12, 12..<18, 18..<24, 24..<29]) // by count without sizes
        #expect(p.recomputedBlocks == 24)
        // with sizes: at most ceil(sqrt(n)) segments, the largest as small as possible
        let bytes = [5, 4, 4, 4, 2, 2, 2, 1, 1, 1, 1]
        let b = try CheckpointPlan(policy: .sqrtN, blocks: 11, blockBytes: bytes)
        // 27 bytes in 4 segments: 7 cannot fit (5 | 4 | 4 | 4 2 ... needs a fifth), 8 can
        #expect(b.segments == [0..<1, 1..<3, 3..<6, 6..<11])
        #expect(b.segments.map { bytes[$0].reduce(0, +) }.max() == 8)
        #expect(try CheckpointPlan(policy: .keepAll, blocks: 5).segments == [0..<5])
        #expect(try CheckpointPlan(policy: .every(blocks: 2), blocks: 5).segments == [0..<2, 2..<4, 4..<5])
        #expect(throws: RematError.self) { try CheckpointPlan(policy: .every(blocks: 0), blocks: 5) }
    }

    /// A plan compiles to the operations its step runs, in order; the executors and the
    /// prediction read that one list.
    @Test func plansCompileToTheirSchedule() throws {
        let (a, b) = (Segment(index: 0, blocks: 0..<3), Segment(index: 1, blocks: 3..<5))
        let segmented = StepSchedule(.segmented([0..<3, 3..<5]), rebuildsOutput: Array(repeating: true, count: 5))
        #expect(segmented.operations == [
            .checkpoint(a), .forward(block: 0, keep: .statistics), .forward(block: 1, keep: .statistics),
            .forward(block: 2, keep: .statistics), .forward(block: 3, keep: .records), .forward(block: 4, keep: .records),
            .loss, .backward(block: 4), .backward(block: 3), .release(b),
            .rebuild(a), .backward(block: 2), .backward(block: 1), .backward(block: 0), .release(a),
        ])
        #expect(segmented.segmentOf == [0, 0, 0, 1, 1])
        // selective: a block keeps its input where the block before cannot rebuild it
        let selective = StepSchedule(.selective(blocks: 4), rebuildsOutput: [true, false, true, false])
        #expect(selective.operations == [
            .forward(block: 0, keep: .stash(keepsInput: true)), .forward(block: 1, keep: .stash(keepsInput: false)),
            .forward(block: 2, keep: .stash(keepsInput: true)), .forward(block: 3, keep: .records),
            .loss, .backward(block: 3), .release(Segment(index: 0, blocks: 3..<4)), .rebuildFromStash(block: 2), .backward(block: 2),
            .rebuildFromStash(block: 1), .backward(block: 1), .rebuildFromStash(block: 0), .backward(block: 0),
        ])
        // per block: a stash after a segment keeps its input, one after a stash that rebuilds its output does not
        let mixed = try CheckpointPlan(choices: [.checkpoint, .recompute, .minimal, .selective, .keep])
        let (s0, s1) = (Segment(index: 0, blocks: 0..<2), Segment(index: 1, blocks: 4..<5))
        #expect(StepSchedule(mixed, rebuildsOutput: [true, true, true, true, false]).operations == [
            .checkpoint(s0), .forward(block: 0, keep: .statistics), .forward(block: 1, keep: .statistics),
            .forward(block: 2, keep: .stash(keepsInput: true)), .forward(block: 3, keep: .stash(keepsInput: false)),
            .forward(block: 4, keep: .records), .loss, .backward(block: 4), .release(s1),
            .rebuildFromStash(block: 3), .backward(block: 3), .rebuildFromStash(block: 2), .backward(block: 2),
            .rebuild(s0), .backward(block: 1), .backward(block: 0), .release(s0),
        ])
        #expect(mixed.description == "rebuilt [0-1] minimal [2] selective [3] keep [4]")
        // a segment rebuilt into minimal stashes: each block's cheap layers from its stash before its backward
        let stashed = try CheckpointPlan(choices: [.checkpointMinimal, .recompute, .recompute, .keep])
        #expect(!stashed.isSegmented && stashed.stashKinds == [.minimal, .minimal, .minimal, nil])
        #expect(StepSchedule(stashed, rebuildsOutput: [true, false, true, false]).operations == [
            .checkpoint(Segment(index: 0, blocks: 0..<3)), .forward(block: 0, keep: .statistics), .forward(block: 1, keep: .statistics),
            .forward(block: 2, keep: .statistics), .forward(block: 3, keep: .records), .loss, .backward(block: 3),
            .release(Segment(index: 1, blocks: 3..<4)),
            .rebuildIntoStashes(Segment(index: 0, blocks: 0..<3), keepsInput: [true, false, true]),
            .rebuildFromStash(block: 2), .backward(block: 2), .rebuildFromStash(block: 1), .backward(block: 1),
            .rebuildFromStash(block: 0), .backward(block: 0), .release(Segment(index: 0, blocks: 0..<3)),
        ])
        // choices go by the simplest name; impossible ones are refused
        #expect(try CheckpointPlan(choices: [.checkpoint, .recompute, .checkpoint, .keep, .keep]) == .segmented([0..<2, 2..<3, 3..<5]))
        #expect(try CheckpointPlan(choices: [.selective, .selective, .keep]) == .selective(blocks: 3))
        #expect(try CheckpointPlan(choices: [.minimal, .keep]) == .minimal(blocks: 2))
        let lean = try CheckpointPlan(choices: [.lean, .lean, .minimal, .keep])
        #expect(lean == .perBlock([.lean, .lean, .minimal, .keep]) && lean.description == "lean [0-1] minimal [2] keep [3]")
        #expect(lean.stashKinds == [.lean, .lean, .minimal, nil])
        #expect(try CheckpointPlan(policy: .lean, blocks: 3) == .perBlock([.lean, .lean, .keep]))
        #expect(try CheckpointPlan(choices: [.keep, .checkpoint, .keep]) == .perBlock([.keep, .checkpoint, .keep]))
        for bad: [BlockChoice] in [[], [.recompute, .keep], [.minimal, .recompute, .keep], [.keep, .minimal]] {
            #expect(throws: RematError.self) { try CheckpointPlan(choices: bad) }
        }
        // the model and its profile agree on which blocks rebuild their outputs
        for name in ["resnet20", "vgg11", "plain-deep-6"] {
            let model = try Zoo.model(named: name), profile = try ChainProfile.measure(model, batch: 1)
            for plan in [CheckpointPlan.selective(blocks: model.blocks.count), .minimal(blocks: model.blocks.count),
                         try CheckpointPlan(policy: .lean, blocks: model.blocks.count)] {
                #expect(model.rebuildsOutput(plan) == profile.rebuildsOutput(plan), "\(name) \(plan)")
            }
            // minimal: every BasicBlock rebuilds its output (relu of its kept sum), so the block after keeps no input
            let basic = model.blocks.map { $0 is BasicBlock }
            #expect(zip(model.rebuildsOutput(.minimal(blocks: basic.count)), basic).allSatisfy { $0 || !$1 })
        }
    }

    static let overlaps: [Overlap?] = [nil, Overlap(backwardThreads: 1, recomputeThreads: 1),
                                       Overlap(backwardThreads: 2, recomputeThreads: 1, lookahead: 2)]

    /// Every zoo model, every policy, with and without overlap: bitwise the same step.
    @Test(arguments: testModels(["lenet5", "resnet20", "vgg11", "plain-deep-6", "dropout-net"]))
    func exactness(model name: String) throws {
        let make: () throws -> Model = {
            if name == "dropout-net" {
                return try Model(name: name, imageShape: Shape(3, 8, 8), blocks: [
                    Sequential([Conv2D(3, 8, kernel: 3, padding: 1), BatchNorm2D(8), ReLU(), Dropout(0.3)]),
                    Sequential([Conv2D(8, 8, kernel: 3, padding: 1), ReLU(), Dropout(0.5)]),
                    BasicBlock(8, 8),
                    Sequential([GlobalAvgPool(), Linear(8, 10)]),
                ], seed: 3)
            }
            return try Zoo.model(named: name, seed: 3)
        }
        let batch = name == "vgg11" || name.hasPrefix("plain") ? 2 : 4
        let baseline = try runSteps(make, batch: batch, checkpointing: .keepAll)
        for policy in [CheckpointPolicy.every(blocks: 1), .every(blocks: 2), .sqrtN, .selective, .minimal, .lean] {
            for overlap in Self.overlaps where policy.canOverlap || overlap == nil {
                let r = try runSteps(make, batch: batch, checkpointing: Checkpointing(policy: policy, overlap: overlap))
                #expect(r == baseline, "\(name) \(policy) overlap \(String(describing: overlap)) differs from no checkpointing")
            }
        }
    }

    /// Any mix of per-block choices gives the bits of no checkpointing, and its predicted peak
    /// is what the allocator measures (the budget program's plans are such mixes).
    @Test(arguments: testModels(["lenet5", "resnet20", "vgg11", "dropout-net"]))
    func everyMixOfChoicesIsExact(model name: String) throws {
        let make = { try name == "dropout-net" ? PlanTests.dropoutNet() : Zoo.model(named: name, seed: 3) }
        let n = try make().blocks.count, batch = name == "vgg11" ? 2 : 4
        let cycles: [[BlockChoice]] = [[.checkpoint, .recompute, .minimal, .selective, .keep],
                                       [.selective, .minimal, .checkpoint, .recompute, .recompute, .keep, .minimal],
                                       [.keep, .minimal, .minimal, .checkpoint, .selective],
                                       [.checkpointMinimal, .recompute, .minimal, .checkpointMinimal, .checkpoint, .recompute],
                                       [.lean, .lean, .minimal, .checkpoint, .lean, .selective, .lean, .keep]]
        let baseline = try runPlan(make, batch: batch, plan: .segmented([0..<n]))
        for cycle in cycles {
            let plan = try CheckpointPlan(choices: (0..<n).map { $0 == n - 1 ? .keep : cycle[$0 % cycle.count] })
            let run = try runPlan(make, batch: batch, plan: plan)
            #expect(run.result == baseline.result, "\(name) \(plan) differs from no checkpointing")
            let predicted = plan.predict(try ChainProfile.measure(try make(), batch: batch)).peakBytes
            #expect(abs(Double(run.peak - predicted)) <= 0.01 * Double(run.peak), "\(name) \(plan): predicted \(predicted), measured \(run.peak)")
        }
    }

    /// Two steps of `plan` run by its executor as a trainer runs them, and the first step's
    /// peak of activation bytes.
    func runPlan(_ makeModel: () throws -> Model, batch: Int, plan: CheckpointPlan) throws -> (result: StepResult, peak: Int) {
        let model = try makeModel(), optimizer = SGD(learningRate: 0.01, momentum: 0.9), account = MemoryAccount()
        let data = try SyntheticDataset(count: batch * 2, imageShape: model.imageShape, classes: model.classes, seed: 4)
        var loss: Float = 0, peak = 0
        for s in 0..<2 {
            let (x, y) = try data.batch(Array(s * batch..<(s + 1) * batch))
            model.zeroGradients()
            try account.withCurrent {
                account.resetPeak()
                loss = try StepExecutor(model: model, plan: plan, trace: nil)
                    .run(images: x, labels: y, context: ForwardContext(training: true, seed: 8, step: s)).loss
                if s == 0 { peak = account.peakBytes }
            }
            optimizer.step(model)
        }
        let bns = model.leaves.compactMap { $0 as? BatchNorm2D }
        return (StepResult(loss: loss.bitPattern, gradients: model.parameterGradients.map(\.bitPattern),
                           weights: model.parameters.map(\.bitPattern),
                           running: bns.flatMap { $0.runningMean + $0.runningVariance }.map(\.bitPattern)), peak)
    }

    /// A BasicBlock whose second BatchNorm scale is 0 or 1e-30 cannot be differentiated from the
    /// sum it keeps: that step its backward pass runs conv2 again instead, under every policy.
    /// It keeps no more (a plan predicted on ordinary scales holds), and the steps still
    /// agree to the bit and stay finite.
    @Test func smallScalesRebuildTheInput() throws {
        func make(tiny: Bool) throws -> Model {
            let model = try Zoo.model(named: "resnet20", seed: 3)
            var offset = 0, blocks = 0, params = model.parameters
            for block in model.blocks {
                if let b = block as? BasicBlock, blocks < 2 {
                    // bn2 is the main path's last layer; its scale comes first in its slot
                    let bn2 = b.main.layers[4] as! BatchNorm2D
                    let start = offset + b.main.parameterCount - bn2.parameterCount
                    for c in 0..<bn2.channels { params[start + c] = !tiny ? 0.5 : blocks == 0 ? 0 : 1e-30 }
                    blocks += 1
                }
                offset += block.parameterCount
            }
            model.parameters = params
            return model
        }
        let model = try make(tiny: true)
        let (x, y) = try SyntheticDataset(count: 4, imageShape: model.imageShape, seed: 1).batch(Array(0..<4))
        let saved = try model.forward(x, ForwardContext(training: true)).saved
        let bn2Records = zip(model.blocks, saved).compactMap { $0 is BasicBlock ? $1.children[0].children[4].tensors.count : nil }
        #expect(bn2Records.prefix(3) == [2, 2, 1], "mean and invstd where the scale is 0 or 1e-30, invstd alone elsewhere")
        let baseline = try runSteps({ try make(tiny: true) }, batch: 4, checkpointing: .keepAll)
        #expect(baseline.gradients.allSatisfy { Float(bitPattern: $0).isFinite })
        let profile = try ChainProfile.measure(try make(tiny: false), batch: 4)
        for policy in [CheckpointPolicy.keepAll, .minimal, .lean, .selective, .sqrtN] {
            #expect(try runSteps({ try make(tiny: true) }, batch: 4, checkpointing: Checkpointing(policy: policy)) == baseline, "\(policy)")
            let trainer = Trainer(model: try make(tiny: true), optimizer: SGD())
            trainer.checkpointing = Checkpointing(policy: policy)
            let measured = try trainer.train(images: x, labels: y).peakActivationBytes
            let predicted = try CheckpointPlan(policy: policy, profile: profile).predict(profile).peakBytes
            #expect(Double(measured) <= 1.01 * Double(predicted), "\(policy): measured \(measured), predicted on ordinary scales \(predicted)")
        }
    }

    /// Checkpointing lowers the measured peak of activation memory.
    @Test func sqrtNUsesLessMemory() throws {
        let data = try SyntheticDataset(count: 8, imageShape: Shape(3, 32, 32))
        let (x, y) = try data.batch(Array(0..<8))
        func peak(_ c: Checkpointing) throws -> Int {
            let trainer = Trainer(model: try Zoo.resnet(blocksPerStage: 3), optimizer: SGD())
            trainer.checkpointing = c
            return try trainer.train(images: x, labels: y).peakActivationBytes
        }
        let none = try peak(.keepAll), sqrt = try peak(Checkpointing(policy: .sqrtN))
        let overlapped = try peak(Checkpointing(policy: .sqrtN, overlap: Overlap(backwardThreads: 1, recomputeThreads: 1)))
        #expect(Double(sqrt) < 0.5 * Double(none), "sqrt(n) peak \(sqrt) vs none \(none)")
        #expect(overlapped > sqrt && overlapped < none, "overlapped peak \(overlapped): one segment more than \(sqrt)")
    }

    /// An error in the backward pass, or in a rebuild (on the recompute thread, or, under a
    /// memory limit, on the backward thread that claimed the segment), stops the step, frees
    /// everything and reaches the caller; the next step runs normally on the same trainer.
    @Test(arguments: [(false, nil), (true, nil), (true, 1)] as [(Bool, Int?)])
    func cancellationFreesEverything(inRecompute: Bool, memoryLimit: Int?) throws {
        let failing = FailingLayer()
        let model = try Model(name: "fails", imageShape: Shape(3, 8, 8), blocks: [
            Sequential([Conv2D(3, 4, kernel: 3, padding: 1), ReLU()]), failing,
            Sequential([Conv2D(4, 4, kernel: 3, padding: 1), ReLU()]), Sequential([Conv2D(4, 4, kernel: 3, padding: 1), ReLU()]),
            Sequential([GlobalAvgPool(), Linear(4, 10)]),
        ])
        let trainer = Trainer(model: model, optimizer: SGD())
        trainer.checkpointing = Checkpointing(policy: .every(blocks: 1),
                                              overlap: Overlap(backwardThreads: 1, recomputeThreads: 1, memoryLimit: memoryLimit))
        let trace = TraceRecorder()
        trainer.trace = trace
        let (x, y) = try SyntheticDataset(count: 4, imageShape: Shape(3, 8, 8)).batch([0, 1, 2, 3])
        (failing.fail, failing.failRecompute) = (!inRecompute, inRecompute)
        #expect(throws: RematError.self) { try trainer.train(images: x, labels: y) }
        #expect(trainer.account.liveBytes == 0)
        (failing.fail, failing.failRecompute) = (false, false)
        try trainer.train(images: x, labels: y)
        #expect(trainer.account.liveBytes == 0)
        if memoryLimit == 1 { // every rebuild was the backward thread's, the failing one too
            let spans = try PlanTests.spans(trace, model)
            #expect(Set(spans.filter { $0.cat == "recompute" }.map(\.tid)) == Set(spans.filter { $0.cat == "backward" }.map(\.tid)))
        }
    }

    /// With `bindsCores`, the backward team and the recompute team run on CPUs of their own
    /// for the step; afterwards the caller may run anywhere it could before. Without it, no
    /// thread is bound.
    @Test(.enabled(if: kn_num_cores() >= 2)) func overlapBindsEachTeamToItsCores() throws {
        for binds in [true, false] {
            let probe = CPUProbe()
            let model = try Model(name: "probed", imageShape: Shape(3, 8, 8), blocks: [
                Sequential([Conv2D(3, 4, kernel: 3, padding: 1), ReLU()]), probe,
                Sequential([Conv2D(4, 4, kernel: 3, padding: 1), ReLU()]), Sequential([GlobalAvgPool(), Linear(4, 10)]),
            ])
            let trainer = Trainer(model: model, optimizer: SGD())
            trainer.checkpointing = Checkpointing(policy: .every(blocks: 2), overlap: Overlap(backwardThreads: 1, recomputeThreads: 1, bindsCores: binds))
            let (x, y) = try SyntheticDataset(count: 4, imageShape: Shape(3, 8, 8)).batch([0, 1, 2, 3])
            let before = CPUProbe.cpus()
            try trainer.train(images: x, labels: y)
            #expect(CPUProbe.cpus() == before)
            #expect(probe.recompute.count == 1 && probe.backward.count == 1)
            let (r, b) = (probe.recompute[0], probe.backward[0])
            if binds {
                #expect(r.count == 1 && b.count == 1 && r.first != b.first)
            } else {
                #expect(r == before && b == before)
            }
        }
    }

    /// The trace shows forward, backward and recompute spans; overlapped recompute runs on a
    /// thread of its own, the same one every step (the trainer keeps it).
    @Test func traceShowsTheOverlap() throws {
        let trainer = Trainer(model: try Zoo.resnet(blocksPerStage: 1), optimizer: SGD())
        trainer.checkpointing = Checkpointing(policy: .every(blocks: 2), overlap: Overlap(backwardThreads: 1, recomputeThreads: 1))
        let trace = TraceRecorder()
        trainer.trace = trace
        let (x, y) = try SyntheticDataset(count: 4, imageShape: Shape(3, 32, 32)).batch([0, 1, 2, 3])
        try trainer.train(images: x, labels: y)
        try trainer.train(images: x, labels: y)
        let json = try JSONSerialization.jsonObject(with: trace.json(blockNames: trainer.model.blocks.map(\.name))) as! [String: Any]
        let events = json["traceEvents"] as! [[String: Any]]
        let spans = events.filter { $0["ph"] as? String == "X" }
        let tids = { (cat: String) in Set(spans.filter { $0["cat"] as? String == cat }.map { $0["tid"] as! Int }) }
        #expect(spans.filter { $0["cat"] as? String == "forward" }.count == 2 * trainer.model.blocks.count)
        #expect(spans.filter { $0["cat"] as? String == "backward" }.count == 2 * trainer.model.blocks.count)
        #expect(tids("recompute").count == 1 && tids("recompute").isDisjoint(with: tids("backward")))
        #expect(events.contains { ($0["args"] as? [String: Any])?["name"] as? String == "recompute" })
    }

    /// A trainer keeps its recompute thread through steps without overlap and stops it when
    /// it goes (a stopped thread lets go of itself).
    @Test func trainerStopsItsRecomputeThread() throws {
        weak var thread: RecomputeThread?
        do {
            let trainer = Trainer(model: try Zoo.resnet(blocksPerStage: 1), optimizer: SGD())
            trainer.checkpointing = Checkpointing(policy: .every(blocks: 2), overlap: Overlap(backwardThreads: 1, recomputeThreads: 1))
            let (x, y) = try SyntheticDataset(count: 4, imageShape: Shape(3, 32, 32)).batch([0, 1, 2, 3])
            try trainer.train(images: x, labels: y)
            thread = trainer.recomputeThread
            trainer.checkpointing = .keepAll
            try trainer.train(images: x, labels: y)
            #expect(thread != nil && trainer.recomputeThread === thread)
        }
        for _ in 0..<500 where thread != nil { usleep(10_000) }
        #expect(thread == nil, "the trainer's recompute thread outlived it")
    }

    /// The recompute thread runs jobs one at a time on one OS thread, lets go of a job's
    /// captures before the next starts, and exits (letting go of itself) once stopped.
    @Test func recomputeThreadRunsJobsInTurnAndStops() throws {
        final class Box {}
        let lock = NSLock()
        var threads: [pthread_t] = [], order: [Int] = []
        weak var captured: Box?
        weak var stopped: RecomputeThread?
        do {
            let thread = RecomputeThread()
            stopped = thread
            for k in 0..<3 {
                let box = Box()
                if k == 0 { captured = box }
                thread.run { [box] in
                    _ = box
                    usleep(2000)
                    lock.withLock { threads.append(pthread_self()); order.append(k) }
                }
            }
            thread.run {}
            #expect(captured == nil) // the first job's box went before the fourth could start
            thread.stop()
        }
        for _ in 0..<500 where stopped != nil { usleep(10_000) }
        #expect(stopped == nil, "the stopped thread still holds itself")
        lock.withLock {
            #expect(order == [0, 1, 2])
            #expect(threads.count == 3 && threads.allSatisfy { pthread_equal($0, threads[0]) != 0 })
        }
    }
}
