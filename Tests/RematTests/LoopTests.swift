import Foundation
import Testing
@testable import Remat

@Suite("Training loop: schedules, augmentation, CIFAR-10 files, epochs")
struct LoopTests {
    @Test func schedules() {
        let warm = LearningRateSchedule(base: 0.1, warmup: 4)
        #expect(warm.rate(at: 0) == 0.025 && warm.rate(at: 3) == 0.1 && warm.rate(at: 100) == 0.1)
        let step = LearningRateSchedule(base: 1, shape: .step(every: 10, factor: 0.1))
        #expect(step.rate(at: 9) == 1 && abs(step.rate(at: 10) - 0.1) < 1e-7 && abs(step.rate(at: 25) - 0.01) < 1e-8)
        let cosine = LearningRateSchedule(base: 1, shape: .cosine(total: 100, minimum: 0), warmup: 0)
        #expect(cosine.rate(at: 0) == 1 && abs(cosine.rate(at: 50) - 0.5) < 1e-6 && cosine.rate(at: 100) < 1e-6)
    }

    @Test func augmentationShiftsAndFlips() throws {
        let x = try Tensor(shape: Shape(1, 1, 2, 3), values: [1, 2, 3, 4, 5, 6])
        let flipOnly = Augmentation(padding: 0, flip: true, seed: 0)
        var flipped = 0
        for step in 0..<20 {
            let y = try flipOnly.apply(x, step: step).scalars
            #expect(y == [1, 2, 3, 4, 5, 6] || y == [3, 2, 1, 6, 5, 4])
            if y != x.scalars { flipped += 1 }
        }
        #expect(flipped > 3 && flipped < 17)
        let crop = Augmentation(padding: 1, flip: false, seed: 1)
        for step in 0..<10 { // a shifted copy: every value is 0 or one of the inputs, in order
            let y = try crop.apply(x, step: step).scalars
            #expect(y.allSatisfy { $0 == 0 || x.scalars.contains($0) })
        }
        #expect(try crop.apply(x, step: 3).scalars == crop.apply(x, step: 3).scalars) // seeded
    }

    @Test func cifarFiles() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var bytes: [UInt8] = []
        for r in 0..<3 { bytes.append(UInt8(r * 4)); bytes += (0..<3072).map { UInt8(($0 + r) % 256) } }
        let path = folder.appendingPathComponent("data_batch_1.bin").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let data = try CIFAR10Dataset(files: [path])
        #expect(data.count == 3)
        let (x, y) = try data.batch([2, 0])
        #expect(y == [8, 0] && x.shape == Shape(2, 3, 32, 32))
        #expect(abs(x.scalars[0] - (2 / 255 - 0.4914) / 0.2470) < 1e-5)
        try Data(bytes.dropLast()).write(to: URL(fileURLWithPath: path))
        #expect(throws: RematError.self) { try CIFAR10Dataset(files: [path]) }           // truncated
        var badLabel = bytes; badLabel[3073] = 10
        try Data(badLabel).write(to: URL(fileURLWithPath: path))
        #expect(throws: RematError.self) { try CIFAR10Dataset(files: [path]) }           // label 10
        #expect(throws: RematError.self) { try CIFAR10Dataset(files: [path + ".missing"]) }
        // random truncations and corruptions: an error or a dataset, never a crash
        var rng = SeededGenerator(seed: 5)
        for _ in 0..<300 {
            var b = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1))))
            if !b.isEmpty { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            try Data(b).write(to: URL(fileURLWithPath: path))
            if let d = try? CIFAR10Dataset(files: [path]) { #expect(d.count * 3073 == b.count) }
        }
    }

    /// Two epochs with evaluation, a schedule and augmentation: events arrive in order, the
    /// test accuracy rises above chance, and the same seed gives the same run.
    @Test func epochsWithEvaluation() throws {
        let train = try SyntheticDataset(count: 3000, imageShape: Shape(1, 28, 28), seed: 3)
        let test = try SyntheticDataset(count: 500, imageShape: Shape(1, 28, 28), seed: 3, firstIndex: 3000)
        func run() throws -> [Double] {
            let trainer = Trainer(model: try Zoo.lenet5(seed: 2), optimizer: SGD(learningRate: 0.03), seed: 4)
            var steps = 0, epochs: [EpochMetrics] = []
            try trainer.fit(train, epochs: 0..<2, batchSize: 50, test: test,
                            schedule: LearningRateSchedule(base: 0.03, shape: .cosine(total: 120, minimum: 0.003), warmup: 5),
                            augmentation: Augmentation(padding: 2, flip: false, seed: 1)) { event in
                switch event {
                case .step: steps += 1
                case .epoch(let m): epochs.append(m)
                }
            }
            #expect(steps == 120 && epochs.map(\.epoch) == [0, 1])
            #expect((epochs.last?.testAccuracy ?? 0) > 0.5, "test accuracy \(epochs.last?.testAccuracy ?? 0)")
            return epochs.flatMap { [$0.loss, $0.testLoss ?? -1] }
        }
        #expect(try run() == run())
    }
}
