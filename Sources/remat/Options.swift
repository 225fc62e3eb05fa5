import ArgumentParser
import Foundation
import Remat

extension CheckpointPolicy: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

/// Fails validation unless `value`, the argument of `option`, is a size (bytes, or a number
/// with KiB, MiB or GiB); nil passes.
func validateSize(_ value: String?, option: String, example: String) throws {
    if let v = value, CheckpointPolicy.parseBytes(v) == nil {
        throw ValidationError("\(option) \(v) is not a size: give bytes, or a number with KiB, MiB or GiB (e.g. \(example)).")
    }
}

/// A file can be written at `path`: its folder exists and takes new files, and the path is
/// not a folder. Checked before any work, so none is lost to a path that cannot work.
func checkWritable(_ path: String, option: String) throws {
    let url = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
    let folder = url.deletingLastPathComponent().path
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
        throw ValidationError("\(option) \(path): the folder \(folder) does not exist. Create it or give another path.")
    }
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder), isFolder.boolValue {
        throw ValidationError("\(option) \(path) is a folder. Give a file name, e.g. \(path)/run.safetensors.")
    }
    // a file made and removed at once: permissions alone miss a read-only mount (and root)
    let probe = "\(folder)/.remat-probe-\(getpid())"
    let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard fd >= 0 else {
        let reason = String(cString: strerror(errno))
        throw ValidationError("\(option) \(path): cannot create files in \(folder) (\(reason)). Give a path in a folder you can write to.")
    }
    close(fd)
    unlink(probe)
}

/// `--memory SIZE|auto`: a limit on the whole process's resident memory.
struct MemoryOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Fit the whole process in this much memory, e.g. 1GiB, choosing the fastest plan that does; auto: the container's limit, else the memory available, less 10%.",
                               valueName: "size|auto"))
    var memory: String?

    func validate() throws {
        if let m = memory, m != "auto" { try validateSize(m, option: "--memory", example: "1GiB") }
    }

    /// The limit given or found, said where it came from; nil without --memory.
    func resolve() throws -> MemoryLimit? {
        guard let m = memory else { return nil }
        if m == "auto" { return try MemoryLimit.automatic() }
        return MemoryLimit(bytes: CheckpointPolicy.parseBytes(m)!, source: "--memory \(m)")
    }
}

/// "total MiB (runtime a, parameters b, ...)": a prediction's parts.
func describe(_ m: ProcessMemory) -> String {
    let parts: [(String, Int)] = [("runtime", m.runtime), ("parameters and gradients", m.parameters), ("optimizer", m.optimizer),
                 ("BatchNorm statistics", m.statistics), ("GEMM packing", m.kernelWorkspace), ("data", m.data),
                 ("training loop", m.trainingLoop), ("activations", m.activations)]
    return "\(mib(m.total)) MiB (" + parts.filter { $0.1 > 0 }.map { "\($0.0) \(mib($0.1))" }.joined(separator: ", ") + ")"
}

/// The model and batch every subcommand works on.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model: \(Zoo.names.joined(separator: ", ")).") var model = "resnet56"
    @Option(help: "Images per step.") var batch = 64
    @Option(help: "Seed for weights and data.") var seed: UInt64 = 0

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch)).") }
        do { try Zoo.checkName(model) } catch { throw ValidationError("\(error)") } // no model built: nothing to free
    }

    func makeModel() throws -> Model { try Zoo.model(named: model, seed: seed) }
}

/// "B+R": the backward team and the recompute team.
struct Split: ExpressibleByArgument, CustomStringConvertible {
    var backward: Int, recompute: Int
    init?(argument: String) {
        let parts = argument.split(separator: "+").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let b = parts[0], let r = parts[1], b >= 1, r >= 1 else { return nil }
        (backward, recompute) = (b, r)
    }
    var description: String { "\(backward)+\(recompute)" }
}

/// Threads and overlap, explicit or from the tuning file.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Kernel threads in all (default: the tuned count, else all cores).") var threads: Int?
    @Option(help: ArgumentHelp("Overlap: backward team + recompute team threads, e.g. 1+1 (default: tuned, else the threads halved).",
                               valueName: "B+R"))
    var split: Split?
    @Option(help: "Segments the recompute thread may rebuild ahead of the backward pass (default: tuned, else 1).")
    var lookahead: Int?
    @Option(help: ArgumentHelp("Pace the recompute thread to keep the peak of activation bytes under this, e.g. 100MiB, or under the sequential peak if that is higher (default: only the lookahead bounds it; a budget sets it to the budget).",
                               valueName: "bytes"))
    var overlapMemoryLimit: String?
    @Flag(help: "Bind the overlap's two teams each to cores of its own for the step (for a machine no other job uses: with one busy, bound teams stall).")
    var bindCores = false
    @Option(help: "The tuning file (default: $REMAT_TUNING_FILE, else ~/.config/remat/tuning.json).") var tuningFile: String?
    @Flag(help: "Ignore the tuning file.") var noTuning = false

    func validate() throws {
        let most = KernelRuntime.maxThreads
        if let t = threads, !(1...most).contains(t) {
            throw ValidationError("--threads must be between 1 and \(most), four per core on this machine (got \(t)).")
        }
        if let s = split, s.backward + s.recompute > most {
            throw ValidationError("--split \(s) asks for more than \(most) threads, four per core on this machine.")
        }
        if let l = lookahead, l < 1 { throw ValidationError("--lookahead must be at least 1 (got \(l)).") }
        try validateSize(overlapMemoryLimit, option: "--overlap-memory-limit", example: "100MiB")
    }

    /// What a run uses, and a line saying where it came from.
    struct Resolved {
        var threads: Int
        var overlap: Overlap
        var note: String?
    }

    /// Explicit options win; then a tuning entry for this CPU, model and batch (whose GEMM
    /// blocking is put into effect); then all cores, halved for overlap.
    func resolve(model: String, batch: Int) throws -> Resolved {
        var tuned: Tuning?
        var note: String?
        if !noTuning {
            let file = try TuningFile(path: tuningFile ?? TuningFile.defaultPath)
            tuned = file.matching(model: model, batch: batch)
            if let t = tuned {
                try t.applyKernelSettings()
                note = "using tuning from \(file.path) (tuned \(t.tunedAt): \(t.threads) threads"
                    + (t.overlap.map { ", split \($0.backwardThreads)+\($0.recomputeThreads), lookahead \($0.lookahead)" } ?? "")
                    + (t.blocking != nil ? ", tuned GEMM blocking" : "") + "); --no-tuning ignores it"
            }
        }
        let total = threads ?? tuned?.threads ?? KernelRuntime.cores
        var overlap = tuned?.overlap ?? .split(cores: total)
        if threads != nil && split == nil { overlap = .split(cores: total) } // explicit threads: their halves
        if let s = split { (overlap.backwardThreads, overlap.recomputeThreads) = (s.backward, s.recompute) }
        if let l = lookahead { overlap.lookahead = l }
        if bindCores { overlap.bindsCores = true }
        if let m = overlapMemoryLimit { overlap.memoryLimit = CheckpointPolicy.parseBytes(m) }
        if overlap.backwardThreads + overlap.recomputeThreads > max(total, 2) && split != nil {
            note = [note, "note: split \(overlap.backwardThreads)+\(overlap.recomputeThreads) runs more threads than the \(total) asked for (oversubscribed, as requested)"]
                .compactMap { $0 }.joined(separator: "\n")
        }
        return Resolved(threads: total, overlap: overlap, note: note)
    }
}

/// Writes progress to standard error when it is a terminal; silent otherwise.
struct Progress {
    let enabled: Bool
    init(quiet: Bool = false) { enabled = !quiet && isatty(STDERR_FILENO) != 0 }
    func show(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
    }
    func clear() { show("") }
}

/// The process's peak resident memory, reset between measurements (Linux clear_refs).
enum PeakRSS {
    static func reset() {
        ProcessMemory.trimHeap() // hand freed heap back first, so an earlier run's pages do not count
        if let f = fopen("/proc/self/clear_refs", "w") { fputs("5", f); fclose(f) }
    }
    /// VmRSS now, in MiB (0 where /proc is unavailable).
    static var currentMiB: Double {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb / 1024
    }

    /// VmHWM in MiB (ru_maxrss where /proc is unavailable).
    static var mebibytes: Double {
        if let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kb = Double(line.split(separator: " ").dropFirst().first ?? "") {
            return kb / 1024
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }
}

func mib(_ bytes: Int) -> String { String(format: "%.1f", Double(bytes) / 1_048_576) }

func printJSON(_ object: [String: Any]) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    print(String(decoding: data, as: UTF8.self))
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
