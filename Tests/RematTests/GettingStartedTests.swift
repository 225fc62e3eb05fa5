import Foundation
import Testing
@testable import Remat

/// The getting-started article's code, compiled and run here. The test also checks that the
/// article shows exactly the lines between the markers below, so neither can drift.
@Suite("Getting-started article")
struct GettingStartedTests {
    @Test func articleCodeRunsAndMatchesThePage() throws {
        let saved = KernelRuntime.threads
        defer { KernelRuntime.threads = saved }
        // BEGIN ARTICLE
        // A model is a chain of blocks: here ResNet-20 from the zoo (Zoo.model(named:)), or your
        // own Model(name:imageShape:blocks:) of Sequential, BasicBlock and the layers.
        KernelRuntime.threads = 2
        let model = try Zoo.resnet(blocksPerStage: 3, seed: 1)
        let data = try SyntheticDataset(count: 128, imageShape: model.imageShape, classes: model.classes)
        let trainer = Trainer(model: model, optimizer: SGD(learningRate: 0.05, momentum: 0.9), seed: 7)

        // Profile the chain once at the batch size, then ask for a memory budget: the plan with
        // the least recompute whose predicted peak of activation bytes fits. With overlap, a
        // recompute thread rebuilds the next segment while the backward pass runs, paced to
        // stay within the budget.
        let batch = 32
        let profile = try ChainProfile.measure(model, batch: batch)
        let unchecked = try CheckpointPlan(policy: .keepAll, profile: profile).predict(profile).peakBytes
        let overlap = Overlap(backwardThreads: 1, recomputeThreads: 1)
        trainer.checkpointing = Checkpointing(policy: .budget(bytes: unchecked * 9 / 10), overlap: overlap)
        let (plan, _) = try trainer.plan(batch: batch)
        let predicted = plan.predict(profile, overlap: trainer.checkpointing.effectiveOverlap)
        print("plan \(plan): at most \(predicted.overlappedPeakBound!) bytes, \(predicted.recomputedBlocks) blocks recomputed")

        // Train, watching the metrics of every step and epoch.
        var peak = 0
        try trainer.fit(data, epochs: 0..<2, batchSize: batch) { event in
            switch event {
            case .step(_, let m): peak = max(peak, m.peakActivationBytes)
            case .epoch(let m): print("epoch \(m.epoch): loss \(m.loss), accuracy \(m.accuracy), \(m.imagesPerSecond) images/s")
            }
        }

        // Save (atomically) and resume into a fresh trainer: it continues bit for bit.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("getting-started.safetensors").path
        try TrainingState.save(trainer, to: path, metadata: ["next_epoch": "2"])
        let resumed = Trainer(model: try Zoo.resnet(blocksPerStage: 3), optimizer: SGD(learningRate: 0.05, momentum: 0.9), seed: 7)
        let metadata = try TrainingState.load(into: resumed, from: path)
        try FileManager.default.removeItem(atPath: path)
        // END ARTICLE

        // what the article claims
        #expect(plan.segments.count > 1)
        #expect(Double(peak) <= 1.01 * Double(unchecked * 9 / 10), "peak \(peak) over the budget")
        #expect(resumed.model.parameters == trainer.model.parameters && resumed.step == trainer.step)
        #expect(metadata["next_epoch"] == "2")

        // the page shows exactly this code
        let here = URL(fileURLWithPath: #filePath)
        let source = try String(contentsOf: here, encoding: .utf8).components(separatedBy: "\n")
        let start = source.firstIndex { $0.hasSuffix("// BEGIN ARTICLE") }! + 1, end = source.firstIndex { $0.hasSuffix("// END ARTICLE") }!
        let code = source[start..<end].map { $0.hasPrefix("        ") ? String($0.dropFirst(8)) : $0 }
        let article = here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/Remat/Remat.docc/GettingStarted.md")
        let page = try String(contentsOf: article, encoding: .utf8).components(separatedBy: "\n")
        let open = page.firstIndex(of: "```swift")! + 1
        let close = page[open...].firstIndex(of: "```")!
        #expect(Array(page[open..<close]) == code, "GettingStarted.md and this test's code differ")
    }
}
