import RematKernels

/// The instruction sets the kernels are written for, by the names the dispatch report uses.
public enum InstructionSet: String, Sendable, Codable, CustomStringConvertible {
    case avx512, avx2, neon, portable
    public var description: String { rawValue }
}

/// The kernel runtime: which instruction set runs, and how many threads this thread's kernels use.
///
/// Threading contract: `threads` is a per-OS-thread setting. Two threads (for example the
/// backward pass and the recompute thread) may each set their own team size and run kernels at
/// the same time; results are bitwise identical whatever the team sizes.
public enum KernelRuntime {
    /// Team size for kernels called from the current thread, clamped to 1...`maxThreads`.
    public static var threads: Int {
        get { Int(kn_get_num_threads()) }
        set { kn_set_num_threads(Int32(min(max(1, newValue), maxThreads))) }
    }

    /// The largest team a thread may ask for: four threads a core. More only oversubscribes
    /// the cores, and thousands exhaust the system's threads inside the OpenMP runtime.
    public static var maxThreads: Int { 4 * cores }

    /// The round trip of a cache line between two threads of this thread's team, in ns (0 with
    /// one thread); takes about 0.01 s. About 100 ns where the cores share a last-level cache,
    /// several times more where they do not: 2-thread figures are only comparable between runs
    /// with similar values (benchmarks print it).
    public static var coreRoundTripNanoseconds: Double { kn_core_round_trip_ns() }

    /// Cores this process may run on.
    public static var cores: Int { Int(kn_num_cores()) }

    /// The instruction set the kernels use now.
    public static var isa: InstructionSet { InstructionSet(rawValue: String(cString: kn_isa_name(kn_isa_active())))! }

    /// Which kernels run and why, one line each: the `--verbose` report.
    public static var dispatchReport: String { String(cString: kn_dispatch_report()) }

    /// The GEMM micro-kernels of the active instruction set with their cache blocking (the
    /// blocking table `remat tune` may rewrite; see docs/ARCHITECTURE.md).
    public static var gemmBlockings: [GemmBlocking] {
        var table = [kn_gemm_blocking](repeating: kn_gemm_blocking(), count: 8)
        let n = Int(kn_gemm_kernels(kn_isa_active(), &table, 8))
        return table.prefix(min(n, 8)).map(GemmBlocking.init)
    }

    /// Replaces the blocking of the active instruction set's micro-kernel with the same
    /// MR x NR (process-wide). Throws for a table that breaks the micro-kernel's contract.
    public static func setGemmBlocking(_ b: GemmBlocking) throws {
        let s = kn_gemm_set_blocking(kn_isa_active(), b.kernelValue)
        guard s == KN_OK else {
            throw RematError.invalidArgument("GEMM blocking \(b) refused for \(isa): \(String(cString: kn_status_string(s)))")
        }
    }
}

/// Cache blocking of one GEMM micro-kernel: MR x NR register tile, MC x KC block of A in
/// L2, KC x NC panel of B in L3.
public struct GemmBlocking: Sendable, Equatable, Codable, CustomStringConvertible {
    /// Register tile (MR x NR) and cache blocks (MC, KC, NC).
    public var mr, nr, mc, kc, nc: Int

    /// A table row; `KernelRuntime.setGemmBlocking` checks it against the micro-kernel's contract.
    public init(mr: Int, nr: Int, mc: Int, kc: Int, nc: Int) {
        (self.mr, self.nr, self.mc, self.kc, self.nc) = (mr, nr, mc, kc, nc)
    }

    init(_ b: kn_gemm_blocking) {
        self.init(mr: Int(b.mr), nr: Int(b.nr), mc: Int(b.mc), kc: Int(b.kc), nc: Int(b.nc))
    }

    var kernelValue: kn_gemm_blocking {
        kn_gemm_blocking(mr: Int32(mr), nr: Int32(nr), mc: Int32(mc), kc: Int32(kc), nc: Int32(nc))
    }

    public var description: String { "\(mr)x\(nr) MC=\(mc) KC=\(kc) NC=\(nc)" }
}
