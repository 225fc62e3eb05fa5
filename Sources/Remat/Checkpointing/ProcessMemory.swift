import Foundation
import RematKernels

/// The peak resident memory of a training process, predicted part by part: what a limit on
/// the whole process (a container's, a machine's) must hold besides the activations.
///
/// Counted from sizes: the parameter and gradient arenas, the optimizer's buffers, BatchNorm's
/// running statistics, the data pipeline's batches and the activations' peak from the plan
/// (kernel scratch included). Measured: the runtime (the program, its libraries, the Swift
/// and OpenMP runtimes with their threads), and the GEMM packing space the kernel threads hold after
/// the chain was profiled at the batch (it runs the step's GEMMs). Activation buffers from
/// 128 KiB up are mapped on their own and handed back when freed, and under a limit the
/// trainer's cache of freed buffers holds no more than the plan's peak, so what is resident
/// follows what is live.
public struct ProcessMemory: Sendable, Equatable {
    /// Resident bytes of the program, its libraries and runtimes (measured).
    public var runtime: Int
    /// Parameters and their gradients (two arenas).
    public var parameters: Int
    /// The optimizer's buffers (SGD: velocity; AdamW: two moments).
    public var optimizer: Int
    /// BatchNorm running mean and variance.
    public var statistics: Int
    /// GEMM packing space: one set per thread that drives a kernel team.
    public var kernelWorkspace: Int
    /// Batches in flight: the one training and the one prepared ahead, and a dataset held in memory.
    public var data: Int
    /// The plan's peak of activation bytes (kernel scratch included).
    public var activations: Int
    /// What the training loop touches only once it runs (the batch prefetcher's thread,
    /// metrics and progress output, evaluation): an allowance, from 2.4-3.0 MiB measured
    /// after planning on every zoo model.
    public var trainingLoop = ProcessMemory.loopAllowance
    static let loopAllowance = 3 << 20

    /// The predicted peak resident bytes of the process.
    public var total: Int { fixed + activations }

    /// Whether the prediction fits `limit` with 1 % of it free: the runtime measured again
    /// later reads a MiB or two apart.
    public func fits(_ limit: Int) -> Bool { total <= ProcessMemory.usable(limit) }

    /// What a limit leaves a prediction: all of it but 1 %.
    static func usable(_ limit: Int) -> Int { limit - limit / 100 }

    /// Everything but the activations: what a limit leaves the plan.
    public var fixed: Int { runtime + parameters + optimizer + statistics + kernelWorkspace + data + trainingLoop }

    /// The prediction for `trainer`'s model and optimizer at `batch` images, with
    /// `activations` bytes of activations at the peak, a recompute thread of its own if
    /// `overlap`, `datasetBytes` held by the dataset, `runtime` (see `runtime(of:)`) and the
    /// kernel threads' `packing` space (by default what they hold now, after a profile).
    public static func predict(trainer: Trainer, batch: Int, activations: Int, overlap: Bool = false,
                               datasetBytes: Int = 0, runtime: Int, packing: Int = Int(kn_packing_bytes())) -> ProcessMemory {
        let model = trainer.model
        let floats = model.parameterCount
        let bufferFloats = model.buffers.reduce(0) { $0 + $1.values.count }
        let stateFloats = trainer.optimizer.kind == .adamw ? 2 * floats : floats
        // `packing`: what the threads that ran the profile's GEMMs keep; a recompute thread
        // keeps one more thread's share
        let threads = max(1, KernelRuntime.threads)
        return ProcessMemory(runtime: runtime, parameters: 8 * floats, optimizer: 4 * stateFloats, statistics: 4 * bufferFloats,
                             kernelWorkspace: packing + (overlap ? packing / threads : 0),
                             data: batchBytes(model, batch: batch) + datasetBytes,
                             activations: activations)
    }

    /// The data pipeline's batches in flight: the one training and the one prepared ahead
    /// (images and labels).
    static func batchBytes(_ model: Model, batch: Int) -> Int { 2 * batch * (model.imageShape.count * 4 + 4) }

    /// One thread's largest GEMM packing space: a block of A (MC x KC) and a panel of B
    /// (KC x NC) of the active instruction set's widest micro-kernel, as mapped (for batches
    /// no profile has run at).
    static var fullPackingBytes: Int {
        let largest = KernelRuntime.gemmBlockings.map { 4 * ($0.mc * $0.kc + $0.kc * $0.nc) }.max() ?? 0
        return (largest + (2 << 20) - 1) / (2 << 20) * (2 << 20)
    }

    /// The runtime's resident bytes: the process's now, less `trainer`'s model arenas and
    /// optimizer buffers, the kernel threads' packing space and `datasetBytes`. Measured once
    /// the kernel threads have run (after a profile), and while nothing else large is held.
    public static func runtime(of trainer: Trainer, datasetBytes: Int = 0) -> Int {
        let held = 8 * trainer.model.parameterCount + 4 * trainer.optimizer.state.values.reduce(0) { $0 + $1.count }
        trimHeap() // the C heap's free pages are not the runtime's
        return max(0, residentBytes() - held - Int(kn_packing_bytes()) - datasetBytes)
    }

    /// Hands the C heap's free pages back to the system (glibc), so that what is resident next
    /// is what the process holds.
    public static func trimHeap() { kn_trim_heap() }

    /// The resident bytes of this process now (VmRSS; 0 where /proc is unavailable).
    public static func residentBytes() -> Int { status("VmRSS:") }

    /// The peak resident bytes of this process so far (VmHWM).
    public static func peakResidentBytes() -> Int { status("VmHWM:") }

    private static func status(_ field: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }
}

/// A limit on the whole process's resident memory, and where it came from.
public struct MemoryLimit: Sendable, Equatable {
    /// Bytes the process may hold.
    public var bytes: Int
    /// "given", or where `auto` found it (the cgroup file, or MemAvailable less the margin).
    public var source: String

    /// A limit of `bytes`, with where it came from.
    public init(bytes: Int, source: String) {
        self.bytes = bytes
        self.source = source
    }

    /// A share kept free under what `auto` finds, for everything the prediction leaves out.
    public static let autoMargin = 0.10

    /// The container's limit where one is set (cgroup v2 memory.max, else v1
    /// memory.limit_in_bytes), else the memory available now (MemAvailable), less `autoMargin`.
    public static func automatic() throws -> MemoryLimit {
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var found: (Int, String)?
        if let v2 = read("/sys/fs/cgroup/memory.max"), let b = Int(v2) {
            found = (b, "cgroup v2 memory.max (/sys/fs/cgroup/memory.max)")
        } else if let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes"), let b = Int(v1), b < 1 << 60 {
            found = (b, "cgroup v1 memory.limit_in_bytes")
        }
        if found == nil, let info = read("/proc/meminfo"),
           let line = info.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
            found = (kb * 1024, "MemAvailable in /proc/meminfo")
        }
        guard let (bytes, source) = found else {
            throw RematError.invalidArgument("--memory auto found no cgroup limit and no /proc/meminfo: give a size, e.g. --memory 4GiB")
        }
        let kept = Int(Double(bytes) * (1 - autoMargin))
        return MemoryLimit(bytes: kept, source: "\(source): \(bytes) bytes, less a \(Int(autoMargin * 100)) % margin")
    }
}
