import Foundation
import Remat

/// One input for the target named by REMAT_FUZZ_TARGET: idx-images, idx-labels, cifar,
/// safetensors, policy. Every input must give a value or a RematError; anything else (a
/// crash, a trap, a hang, a huge allocation) is what libFuzzer reports.
enum Target: String, CaseIterable {
    case idxImages = "idx-images", idxLabels = "idx-labels", cifar, safetensors, policy

    static let current: Target = {
        if CommandLine.arguments.dropFirst().first == "--write-seeds" { return .policy }
        let name = ProcessInfo.processInfo.environment["REMAT_FUZZ_TARGET"] ?? ""
        guard let t = Target(rawValue: name) else {
            FileHandle.standardError.write(Data("set REMAT_FUZZ_TARGET to one of \(allCases.map(\.rawValue))\n".utf8))
            exit(2)
        }
        return t
    }()

    // a fixed good counterpart for the two-file IDX reader and a trainer for states
    static let goodImages: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2] + [UInt8](repeating: 7, count: 8)
    static let goodLabels: [UInt8] = [0, 0, 8, 1, 0, 0, 0, 2, 1, 3]
    // a tiny model, so that its saved state (a seed of the corpus) is small
    nonisolated(unsafe) static let trainer = Trainer(model: try! Model(name: "fuzz", imageShape: Shape(1, 2, 2), blocks: [
        Sequential([Conv2D(1, 2, kernel: 1), BatchNorm2D(2), ReLU(), Flatten(), Linear(8, 2)]),
    ], seed: 1), optimizer: SGD())

    /// Writes a valid input of each target into `folder`/<target>/seed (the corpus's start).
    static func writeSeeds(_ folder: String) throws {
        let cifar = [UInt8](repeating: 3, count: 1) + (0..<3072).map { UInt8(truncatingIfNeeded: $0) }
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-seed.safetensors").path
        try TrainingState.save(trainer, to: state, metadata: ["next_epoch": "1"])
        let seeds: [(Target, [UInt8])] = [(.idxImages, goodImages), (.idxLabels, goodLabels), (.cifar, cifar),
                                          (.safetensors, [UInt8](FileManager.default.contents(atPath: state)!)),
                                          (.policy, Array("budget-1.5GiB".utf8))]
        for (t, bytes) in seeds {
            let dir = "\(folder)/\(t.rawValue)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: "\(dir)/seed"))
        }
    }

    func run(_ bytes: [UInt8]) {
        do {
            switch self {
            case .idxImages: _ = try IDXDataset(imageBytes: bytes, labelBytes: Target.goodLabels)
            case .idxLabels: _ = try IDXDataset(imageBytes: Target.goodImages, labelBytes: bytes)
            case .cifar:
                let d = try CIFAR10Dataset(batches: [("fuzz", bytes)])
                _ = try d.batch([0, d.count - 1])
            case .safetensors: try TrainingState.load(into: Target.trainer, bytes: bytes, name: "fuzz")
            case .policy:
                let text = String(decoding: bytes, as: UTF8.self)
                _ = CheckpointPolicy(parsing: text)
                _ = CheckpointPolicy.parseBytes(text)
            }
        } catch is RematError {
            // refused with a message: what bad input should get
        } catch {
            fatalError("\(self.rawValue): an error that is not a RematError: \(error)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    Target.current.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzer(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
               _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt
#endif

@main struct Main {
    static func main() {
        if CommandLine.arguments.count == 3 && CommandLine.arguments[1] == "--write-seeds" {
            do { try Target.writeSeeds(CommandLine.arguments[2]) } catch { fatalError("\(error)") }
            return
        }
        #if FUZZING
        // libFuzzer's driver, with its usual flags (-runs=, -max_len=, corpus folders)
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(runFuzzer(&argc, &argv, fuzzOne))
        #else
        // without libFuzzer: run each file named on the command line once (replays a corpus)
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            Target.current.run([UInt8](data))
        }
        #endif
    }
}
