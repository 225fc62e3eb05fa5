import Foundation
import Testing
@testable import Remat

/// Every input is checked before any work it could waste; the error names what the user gave,
/// and nothing saved is changed.
@Suite("Bad inputs: refused up front, nothing lost")
struct InputTests {
    static let small = ["train", "--model", "lenet5", "--batch", "16", "--train-size", "64", "--test-size", "16"]

    /// A state whose next_epoch field is negative or not a number is refused, naming the
    /// field; the file is unchanged and no epoch ran.
    @Test(arguments: ["-3", "abc", "1.5"])
    func savedEpochIsValidated(_ epoch: String) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let trainer = Trainer(model: try Zoo.lenet5(), optimizer: SGD(learningRate: 0.01, momentum: 0.9))
        let state = folder.appendingPathComponent("s.safetensors")
        try TrainingState.save(trainer, to: state.path, metadata: ["next_epoch": epoch])
        let before = try Data(contentsOf: state)
        let r = try remat(Self.small + ["--epochs", "2", "--resume", "s.safetensors"], folder: folder)
        #expect(r.status != 0 && r.stderr.contains("next_epoch") && r.stderr.contains(epoch), "\(r.stdout)\(r.stderr)")
        #expect(!r.stdout.contains("epoch 1/"), "trained before refusing: \(r.stdout)")
        #expect(try Data(contentsOf: state) == before)
    }

    /// Team sizes the OpenMP runtime cannot start are refused with the bound, not an abort.
    @Test(arguments: [["--threads", "100000"], ["--split", "50000+50000"]])
    func threadsAreBounded(_ flags: [String]) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let r = try remat(Self.small + flags, folder: folder)
        #expect(r.status == 64 && r.stderr.contains("four per core"), "\(r.stderr)")
    }

    /// A --save that cannot be written fails before training, naming the path given.
    @Test func saveIsCheckedBeforeTraining() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("dir"), withIntermediateDirectories: true)
        for (path, says) in [("missing/run.st", "does not exist"), ("dir", "is a folder")] {
            let r = try remat(Self.small + ["--save", path], folder: folder)
            #expect(r.status != 0 && r.stderr.contains("--save \(path)") && r.stderr.contains(says), "\(r.stderr)")
            #expect(!r.stdout.contains("epoch 1/"), "trained before refusing: \(r.stdout)")
        }
        // a read-only folder: a read-only tmpfs where mounting is allowed (root passes permission checks)
        let ro = folder.appendingPathComponent("ro")
        try FileManager.default.createDirectory(at: ro, withIntermediateDirectories: true)
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", ro.path]) else { return }
        defer { _ = run("/bin/umount", [ro.path]) }
        let r = try remat(Self.small + ["--save", "ro/run.st"], folder: folder)
        #expect(r.status != 0 && r.stderr.contains("--save ro/run.st") && r.stderr.contains("cannot create files"), "\(r.stderr)")
        #expect(!r.stdout.contains("epoch 1/"))
    }

    /// Momentum and weight decay out of range or NaN are refused up front.
    @Test(arguments: [["--momentum", "nan"], ["--momentum", "1.5"], ["--momentum=-0.1"], ["--weight-decay", "nan"],
                      ["--weight-decay=-1"], ["--weight-decay", "inf"], ["--log-every", "0"]])
    func optimizerSettingsAreChecked(_ flags: [String]) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let r = try remat(Self.small + flags, folder: folder)
        let name = flags[0].split(separator: "=")[0]
        #expect(r.status == 64 && r.stderr.contains(name), "\(flags): \(r.stderr)")
        #expect(!r.stdout.contains("epoch 1/"))
    }

    /// A test set of another image shape than the training set is refused before training.
    @Test func testSetShapeIsChecked() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        try writeIDX(folder, "train", count: 32, side: 28)
        try writeIDX(folder, "t10k", count: 8, side: 14)
        let r = try remat(Self.small + ["--data", folder.path], folder: folder)
        #expect(r.status != 0 && r.stderr.contains("test set") && r.stderr.contains("14"), "\(r.stderr)")
        #expect(!r.stdout.contains("epoch 1/"), "trained before refusing: \(r.stdout)")
    }

    /// A labels file with a wrong count or a label out of range is named in the error, which
    /// stays short (the labels themselves are not printed).
    @Test func badLabelsNameTheFile() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        for (labels, says) in [([UInt8](repeating: 1, count: 31), "31 labels"), ([UInt8](repeating: 1, count: 31) + [12], "label 12")] {
            try writeIDX(folder, "train", count: 32, side: 28, labels: labels)
            let r = try remat(Self.small + ["--data", folder.path], folder: folder)
            #expect(r.status != 0 && r.stderr.contains("train-labels-idx1-ubyte") && r.stderr.contains(says), "\(r.stderr)")
            #expect(r.stderr.count < 1000, "\(r.stderr.count) characters of error")
        }
    }

    /// The temporary file of a save killed mid-write is removed by the next save of the same
    /// target; another target's is left alone.
    @Test func staleTemporariesAreRemoved() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // pid 2^22 + 1 is above Linux's largest pid, so no process owns these
        let stale = folder.appendingPathComponent(".s.safetensors.4194305.tmp")
        let other = folder.appendingPathComponent(".t.safetensors.4194305.tmp")
        try Data("partial".utf8).write(to: stale)
        try Data("partial".utf8).write(to: other)
        let r = try remat(Self.small + ["--save", "s.safetensors"], folder: folder)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stale.path))
        #expect(FileManager.default.fileExists(atPath: other.path))
    }

    /// Ctrl-C is acknowledged at once, also during evaluation.
    @Test func interruptIsAcknowledged() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        // a large test set (synthetic images are made batch by batch): the interrupt at 1.5 s
        // falls in the first evaluation, about 5 s long in this debug build
        // (training its 32 images takes a few ms)
        let r = try remat(["train", "--model", "lenet5", "--batch", "16", "--train-size", "32", "--test-size", "40000",
                           "--epochs", "2", "--save", "s.safetensors"], folder: folder, interruptAfter: 1.5)
        #expect(r.status == 130 && r.stderr.contains("interrupted: stopping"), "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("epoch 1/2:") && !r.stdout.contains("epoch 2/2"), "\(r.stdout)")
        let trainer = Trainer(model: try Zoo.lenet5(), optimizer: SGD())
        #expect(try TrainingState.load(into: trainer, from: folder.appendingPathComponent("s.safetensors").path)["next_epoch"] == "1")
    }

    /// Output to a file or a pipe: a line every N steps and one per epoch.
    @Test func progressLinesInAFile() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let r = try remat(Self.small + ["--log-every", "2", "--epochs", "2"], folder: folder)
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.filter { $0.contains(" step ") }.count == 4, "\(r.stdout)")
        #expect(lines.filter { $0.hasPrefix("epoch 1/2:") || $0.hasPrefix("epoch 2/2:") }.count == 2, "\(r.stdout)")
    }
}

/// Runs a program quietly; whether it exited 0.
func run(_ program: String, _ args: [String]) -> Bool {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: program)
    p.arguments = args
    p.standardError = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    do { try p.run() } catch { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}

/// Writes `prefix`-images-idx3-ubyte and `prefix`-labels-idx1-ubyte (labels 0..9 in turn
/// unless given) into `folder`.
func writeIDX(_ folder: URL, _ prefix: String, count: Int, side: Int, labels: [UInt8]? = nil) throws {
    func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
    let images = [0, 0, 8, 3] + be(count) + be(side) + be(side) + (0..<count * side * side).map { UInt8($0 % 251) }
    let l = labels ?? (0..<count).map { UInt8($0 % 10) }
    try Data(images).write(to: folder.appendingPathComponent("\(prefix)-images-idx3-ubyte"))
    try Data([0, 0, 8, 1] + be(l.count) + l).write(to: folder.appendingPathComponent("\(prefix)-labels-idx1-ubyte"))
}
