import Foundation
import Testing
@testable import Remat

@Suite("Saving and resuming training state (safetensors)")
struct TrainingStateTests {
    /// Train 6 steps; separately train 3, save, load into a fresh trainer (other seed) and
    /// train the last 3: the same losses and weights, bit for bit. SGD and AdamW.
    @Test(arguments: ["sgd", "adamw"])
    func resumeIsExact(optimizer: String) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("state.safetensors").path
        let data = try SyntheticDataset(count: 6 * 8, imageShape: Shape(3, 32, 32), seed: 2)
        let batches = try (0..<6).map { try data.batch(Array($0 * 8..<($0 + 1) * 8)) }
        func trainer(seed: UInt64) throws -> Trainer {
            let opt: Optimizer = optimizer == "sgd" ? SGD(learningRate: 0.01, momentum: 0.9, nesterov: true) : AdamW()
            return Trainer(model: try Zoo.resnet(blocksPerStage: 1, seed: seed), optimizer: opt, seed: 5)
        }
        let straight = try trainer(seed: 1)
        let expected = try batches.map { try straight.train(images: $0.images, labels: $0.labels).loss.bitPattern }

        let first = try trainer(seed: 1)
        for b in batches.prefix(3) { try first.train(images: b.images, labels: b.labels) }
        try TrainingState.save(first, to: path, metadata: ["epoch": "0"])
        let resumed = try trainer(seed: 99)
        let meta = try TrainingState.load(into: resumed, from: path)
        #expect(meta["epoch"] == "0" && resumed.step == 3)
        let rest = try batches.suffix(3).map { try resumed.train(images: $0.images, labels: $0.labels).loss.bitPattern }
        #expect(rest == Array(expected.suffix(3)))
        #expect(resumed.model.parameters.map(\.bitPattern) == straight.model.parameters.map(\.bitPattern))
    }

    /// Truncated and corrupted files are refused with an error and leave the trainer as it
    /// was; so are states of another model or optimizer.
    @Test func badFilesAreRefused() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("state.safetensors").path
        let trainer = Trainer(model: try Zoo.lenet5(seed: 1), optimizer: SGD())
        try TrainingState.save(trainer, to: path)
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let before = trainer.model.parameters
        var rng = SeededGenerator(seed: 3)
        var refused = 0
        for trial in 0..<3000 {
            var bytes = good
            if trial % 2 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count)))) }
            let header = 8 + Int(good[0]) + Int(good[1]) << 8
            for _ in 0..<1 + Int(rng.next() % 3) where !bytes.isEmpty {
                // aim most corruptions at the length and the JSON header, where they matter
                let limit = trial % 3 == 0 ? bytes.count : min(bytes.count, header)
                bytes[Int(rng.next() % UInt64(limit))] = UInt8(truncatingIfNeeded: rng.next())
            }
            do {
                _ = try TrainingState.restore(trainer, from: bytes, path: "fuzz")
            } catch is RematError {
                refused += 1
                #expect(trainer.model.parameters == before, "a refused file changed the trainer")
            }
            if trainer.model.parameters != before { trainer.model.parameters = before } // a corruption in the data itself loads
        }
        #expect(refused > 2000, "refused \(refused) of 3000")
        let other = Trainer(model: try Zoo.resnet(blocksPerStage: 1), optimizer: SGD())
        #expect(throws: RematError.self) { try TrainingState.load(into: other, from: path) }
        let adam = Trainer(model: try Zoo.lenet5(), optimizer: AdamW())
        #expect(throws: RematError.self) { try TrainingState.load(into: adam, from: path) }
        #expect(throws: RematError.self) { try TrainingState.load(into: trainer, from: path + ".missing") }
    }

    /// A save that cannot complete throws and leaves the previous file intact.
    @Test func failedSaveKeepsThePreviousFile() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("state.safetensors").path
        let trainer = Trainer(model: try Zoo.lenet5(seed: 1), optimizer: SGD())
        try TrainingState.save(trainer, to: path)
        let saved = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(throws: RematError.self) {
            try TrainingState.save(trainer, to: folder.appendingPathComponent("missing/state.safetensors").path)
        }
        // a directory where the file should go: the rename fails after the temporary is written
        let blocked = folder.appendingPathComponent("blocked").path
        try FileManager.default.createDirectory(atPath: blocked + "/x", withIntermediateDirectories: true)
        #expect(throws: RematError.self) { try TrainingState.save(trainer, to: blocked) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == saved)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).allSatisfy { !$0.hasSuffix(".tmp") })
    }
}
