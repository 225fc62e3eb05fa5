import Foundation
import Testing
@testable import Remat

/// mpirun where this build has MPI and Open MPI's launcher is installed.
let mpirun: String? = {
    guard Communicator.isAvailable else { return nil }
    return ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
}()

@Suite("Data-parallel training over MPI (mpirun -np 2 on this machine)", .enabled(if: mpirun != nil, "needs libopenmpi-dev and openmpi-bin"))
struct DistributedTests {
    /// Two ranks with shards of 8 give the weights of one process with batches of 16, within
    /// the rounding of summing the gradients in another order; the ranks agree bit for bit
    /// (checked by `remat train` at each save), and rank 0 alone prints.
    @Test func twoRanksMatchOneProcessWithTheWholeBatch() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // lenet5 has no BatchNorm, whose per-rank batch statistics would differ by design
        let args = ["train", "--model", "lenet5", "--batch", "16", "--train-size", "96", "--test-size", "16", "--epochs", "2",
                    "--lr", "0.05", "--threads", "1"]
        let single = try remat(args + ["--save", "single.safetensors"], folder: folder)
        #expect(single.status == 0, "\(single.stderr)")
        // under .ci/sanitize.sh address the ranks run without leak checks: Open MPI's plugins keep
        // what MPI_Init allocates, from code LeakSanitizer cannot name once they are unloaded
        // (Remat's own leaks are checked by every other test)
        let asan = (ProcessInfo.processInfo.environment["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "detect_leaks=0"
        let p = rematProcess(args + ["--save", "ranks.safetensors"], folder: folder, launcher: [mpirun!, "-np", "2", "--oversubscribe"],
                             environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "ASAN_OPTIONS": asan])
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(text)")
        #expect(text.contains("2 ranks") && text.components(separatedBy: "epoch 2/2:").count == 2, "rank 0 alone prints: \(text)")

        func weights(_ name: String) throws -> [Float] {
            let t = Trainer(model: try Zoo.lenet5(), optimizer: SGD())
            try TrainingState.load(into: t, from: folder.appendingPathComponent(name).path)
            return t.model.parameters
        }
        let a = try weights("single.safetensors"), b = try weights("ranks.safetensors")
        let scale = a.map { abs($0) }.max()!
        let worst = zip(a, b).map { abs($0 - $1) }.max()!
        // 12 steps; each averages 16 per-image gradients in a different order (one sum of 16
        // against two of 8), a few units in the last place of the sum; momentum and the
        // learning rate scale that by at most 10 x 0.05 per step: 1e-6 of the largest weight
        // is far above it, and far below what a wrong shard (other images) would move
        #expect(worst <= 1e-6 * scale, "largest difference \(worst), largest weight \(scale)")
    }
}
