import Foundation

/// The thread configuration `remat tune` found fastest for one model and batch on one CPU.
///
/// Stored in a JSON file (`TuningFile`): `{"version": 2, "entries": [Tuning...]}`, one entry
/// per (cpu, model, batch); `remat bench` and `remat train` apply the matching entry unless
/// told `--no-tuning`.
public struct Tuning: Sendable, Equatable, Codable {
    /// The CPU model string (`/proc/cpuinfo`'s "model name") and core count it was tuned on.
    public var cpu: String
    /// The zoo model tuned.
    public var model: String
    /// Images per step it was tuned at.
    public var batch: Int
    /// The checkpointing policy it was tuned under (its description, e.g. "sqrt(n)").
    public var policy: String
    /// Kernel threads of the step (with overlap: the backward team and the recompute team).
    public var threads: Int
    /// The overlap split and lookahead, or nil when recompute on the backward thread won.
    public var overlap: Overlap?
    /// The instruction set it was tuned on (its blocking applies to that one only).
    public var isa: InstructionSet
    /// The micro-kernels' blocking of `isa`, or nil when the default table won.
    public var blocking: [GemmBlocking]?
    /// The rest of `isa`'s tuning table row it ran with (nil in files written before it was saved).
    public var kernels: KernelTuning?
    /// Median step seconds of the winner and of the default configuration, measured.
    public var stepSeconds: Double
    /// Median step seconds of the default configuration, timed alternately with the winner.
    public var defaultStepSeconds: Double
    /// When it was tuned (ISO 8601).
    public var tunedAt: String

    /// An entry as `remat tune` writes it.
    public init(cpu: String, model: String, batch: Int, policy: String, threads: Int, overlap: Overlap?, isa: InstructionSet,
                blocking: [GemmBlocking]?, stepSeconds: Double, defaultStepSeconds: Double, tunedAt: String) {
        (self.cpu, self.model, self.batch, self.policy, self.threads, self.overlap) = (cpu, model, batch, policy, threads, overlap)
        (self.isa, self.blocking, self.stepSeconds, self.defaultStepSeconds, self.tunedAt) = (isa, blocking, stepSeconds, defaultStepSeconds, tunedAt)
    }

    /// This machine's key: CPU model name and core count.
    public static var thisCPU: String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let name = info.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown cpu"
        return "\(name) (\(KernelRuntime.cores) cores)"
    }

    /// Puts its rows of the tuning table into effect, if it was tuned on this instruction set
    /// (threads and overlap are the caller's to apply).
    public func applyKernelSettings() throws {
        guard isa == KernelRuntime.isa else { return }
        for b in blocking ?? [] { try KernelRuntime.setGemmBlocking(b) }
        if let kernels { try KernelRuntime.setKernelTuning(kernels) }
    }
}

/// The tuning file: where it lives and its entries.
public struct TuningFile: Sendable {
    /// Where it is read from and saved to.
    public let path: String
    /// Every entry, oldest first.
    public private(set) var entries: [Tuning]

    /// `$REMAT_TUNING_FILE`, else `$XDG_CONFIG_HOME/remat/tuning.json`, else
    /// `~/.config/remat/tuning.json`.
    public static var defaultPath: String {
        let env = ProcessInfo.processInfo.environment
        if let p = env["REMAT_TUNING_FILE"], !p.isEmpty { return p }
        let config = env["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".config")
        return (config as NSString).appendingPathComponent("remat/tuning.json")
    }

    private struct Contents: Codable {
        var version: Int
        var entries: [Tuning]
    }
    /// Version 2 added the Winograd thresholds to the kernels' row.
    private static let version = 2
    private struct Header: Codable { var version: Int }

    /// Reads the file; a missing file has no entries; a malformed one is an error naming it.
    public init(path: String = TuningFile.defaultPath) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { entries = []; return }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RematError.malformedFile("cannot read the tuning file \(path): check its permissions")
        }
        do {
            let header = try JSONDecoder().decode(Header.self, from: data)
            guard header.version == Self.version else {
                throw RematError.malformedFile("the tuning file \(path) has version \(header.version); this Remat reads version \(Self.version): run remat tune again")
            }
            entries = try JSONDecoder().decode(Contents.self, from: data).entries
        } catch let e as RematError {
            throw e
        } catch {
            throw RematError.malformedFile("the tuning file \(path) is not valid tuning JSON (\(error)); delete it or run remat tune again")
        }
    }

    /// The entry for this CPU, model and batch.
    public func matching(model: String, batch: Int, cpu: String = Tuning.thisCPU) -> Tuning? {
        entries.last { $0.cpu == cpu && $0.model == model && $0.batch == batch }
    }

    /// Replaces the entry with the same key, and writes the file atomically (a crash leaves
    /// the old file).
    public mutating func save(_ tuning: Tuning) throws {
        entries.removeAll { $0.cpu == tuning.cpu && $0.model == tuning.model && $0.batch == tuning.batch }
        entries.append(tuning)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(Contents(version: Self.version, entries: entries))
        let folder = (path as NSString).deletingLastPathComponent
        do {
            if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw RematError.invalidArgument("cannot write the tuning file \(path): \(error.localizedDescription); pass --tuning-file with a writable path")
        }
    }
}
