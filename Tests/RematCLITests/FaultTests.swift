import Foundation
import Testing
@testable import Remat

/// Starts `remat` (after a shell prefix such as limits, when given) and returns the process
/// (the caller kills or waits).
func launch(_ args: [String], folder: URL, shell: String? = nil) throws -> Process {
    let p = rematProcess(args, folder: folder, launcher: shell.map { ["/bin/sh", "-c", $0 + " exec \"$0\" \"$@\""] } ?? [])
    try p.run()
    return p
}

/// Step losses of an epoch, in order, from a metrics file.
func stepLosses(_ url: URL, epoch: Int) throws -> [Double] {
    try String(contentsOf: url, encoding: .utf8).split(separator: "\n")
        .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        .filter { $0["type"] as? String == "step" && $0["epoch"] as? Int == epoch }
        .map { $0["loss"] as! Double }
}

@Suite("Faults: killed processes, full disks, corrupt states, diverging losses")
struct FaultTests {
    static let small = ["train", "--model", "lenet5", "--batch", "16", "--train-size", "512", "--test-size", "32", "--seed", "3"]

    /// Train 2 epochs straight; separately train 1 with --save, kill (SIGKILL) a resumed run
    /// in the middle of epoch 2, resume again: epoch 2's losses are those of the straight run,
    /// bit for bit.
    @Test func killThenResumeMatchesAnUninterruptedRun() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let straight = try remat(Self.small + ["--epochs", "2", "--metrics", "a.jsonl"], folder: folder)
        #expect(straight.status == 0, "\(straight.stderr)")
        #expect(try remat(Self.small + ["--epochs", "1", "--save", "s.safetensors"], folder: folder).status == 0)
        let doomed = try launch(Self.small + ["--epochs", "2", "--resume", "s.safetensors", "--train-size", "60000"], folder: folder)
        Thread.sleep(forTimeInterval: 1.5)
        kill(doomed.processIdentifier, SIGKILL)
        doomed.waitUntilExit()
        #expect(doomed.terminationReason == .uncaughtSignal)
        let resumed = try remat(Self.small + ["--epochs", "2", "--resume", "s.safetensors", "--metrics", "b.jsonl"], folder: folder)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let expected = try stepLosses(folder.appendingPathComponent("a.jsonl"), epoch: 2)
        let again = try stepLosses(folder.appendingPathComponent("b.jsonl"), epoch: 2)
        #expect(!expected.isEmpty && expected == again)
    }

    /// A run that saves every couple of steps, killed at random moments: the state file is
    /// always absent (killed before the first save) or whole and loadable.
    @Test func killedWhileSavingLeavesALoadableState() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        var rng = SeededGenerator(seed: 11)
        var loaded = 0
        for _ in 0..<12 {
            let p = try launch(["train", "--model", "lenet5", "--batch", "8", "--train-size", "16", "--test-size", "8",
                                "--epochs", "100000", "--save", "s.safetensors"], folder: folder)
            Thread.sleep(forTimeInterval: 0.3 + Double(rng.next() % 1000) / 1000)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let path = folder.appendingPathComponent("s.safetensors").path
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let trainer = Trainer(model: try Zoo.lenet5(), optimizer: SGD())
            let meta = try TrainingState.load(into: trainer, from: path)
            #expect(Int(meta["next_epoch"] ?? "") ?? 0 >= 1)
            loaded += 1
        }
        #expect(loaded >= 6, "only \(loaded) of 12 runs got to a first save")
    }

    /// A save onto a full disk (a 256 KiB tmpfs where mounting is allowed, else a file-size
    /// limit) fails with a clear error and a non-zero exit; the previous state survives.
    @Test func fullDiskKeepsThePreviousState() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let disk = folder.appendingPathComponent("disk")
        try FileManager.default.createDirectory(at: disk, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=600k", "tmpfs", disk.path]
        mount.standardError = FileHandle.nullDevice
        try? mount.run()
        mount.waitUntilExit()
        let mounted = mount.terminationStatus == 0
        defer {
            if mounted {
                let u = Process()
                u.executableURL = URL(fileURLWithPath: "/bin/umount")
                u.arguments = [disk.path]
                try? u.run()
                u.waitUntilExit()
            }
        }
        // a first state (about 0.5 MB for lenet5 with SGD momentum) fits
        let first = try remat(Self.small + ["--epochs", "1", "--train-size", "32", "--save", "disk/s.safetensors"], folder: folder)
        #expect(first.status == 0, "\(first.stderr)")
        let before = try Data(contentsOf: disk.appendingPathComponent("s.safetensors"))
        // the next save needs room for a second copy before the rename: there is none
        let args = Self.small + ["--epochs", "2", "--train-size", "32", "--resume", "disk/s.safetensors"]
        let p = try launch(args, folder: folder, shell: mounted ? nil : "trap '' XFSZ; ulimit -f 600;")
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus != 0)
        let again = try remat(args, folder: folder) // the same, for its message
        if mounted { #expect(again.stderr.contains("No space left on device") && again.stderr.contains("previous file is unchanged"), "\(again.stderr)") }
        #expect(try Data(contentsOf: disk.appendingPathComponent("s.safetensors")) == before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: disk.path).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    /// A diverging run stops with the step number and a non-zero exit; the state saved
    /// before it is untouched. Truncated and corrupted state files are refused by resume.
    @Test func divergenceAndCorruptStates() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(try remat(Self.small + ["--epochs", "1", "--save", "s.safetensors"], folder: folder).status == 0)
        let state = folder.appendingPathComponent("s.safetensors")
        let before = try Data(contentsOf: state)
        let diverging = try remat(Self.small + ["--epochs", "3", "--resume", "s.safetensors", "--lr", "1e30"], folder: folder)
        #expect(diverging.status != 0 && diverging.stderr.contains("the loss became") && diverging.stderr.contains("at step"),
                "\(diverging.stdout)\(diverging.stderr)")
        #expect(try Data(contentsOf: state) == before)
        for (name, bytes) in [("truncated", before.prefix(before.count / 2)), ("corrupt", Data(before.prefix(8)) + Data(repeating: 0x7B, count: 64))] {
            try bytes.write(to: folder.appendingPathComponent("\(name).safetensors"))
            let r = try remat(Self.small + ["--epochs", "2", "--resume", "\(name).safetensors"], folder: folder)
            #expect(r.status != 0 && r.stderr.contains("Error"), "\(name): \(r.stderr)")
        }
    }
}
