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

    /// Which kernels run and why, one line each: the instruction set, the GEMM micro-kernels.
    public static var dispatchReport: String { String(cString: kn_dispatch_report()) }

    /// `dispatchReport`, then each convolution of `model` at `batch` images: the algorithm of
    /// each pass and why the ones before it in the list declined (`remat plan --kernels`).
    /// Runs one forward pass on zero images to plan them.
    public static func dispatchReport(for model: Model, batch: Int) throws -> String {
        _ = try model.forward(Tensor(zeros: Shape([batch] + model.imageShape.dims)), ForwardContext(training: false))
        var lines = [dispatchReport]
        for (i, block) in model.blocks.enumerated() {
            for conv in Model.leaves(of: block).compactMap({ $0 as? Conv2D }) {
                for (shape, plan) in conv.plannedShapes where shape.batch == batch {
                    lines.append("block \(i), \(conv.name) on \(shape):")
                    lines += plan.explanation.split(separator: "\n").map { "  " + $0 }
                }
            }
        }
        return lines.joined(separator: "\n")
    }

    /// The tuning table's row of the active instruction set.
    public static var kernelTuning: KernelTuning {
        var t = kn_tuning()
        _ = kn_tuning_get(kn_isa_active(), &t)
        return KernelTuning(t)
    }

    /// Replaces the tuning table's row of the active instruction set (process-wide). Throws
    /// for a value out of range (every one at least 1, the transpose tile at most 32).
    public static func setKernelTuning(_ t: KernelTuning) throws {
        var v = t.kernelValue
        let s = kn_tuning_set(kn_isa_active(), &v)
        guard s == KN_OK else {
            throw RematError.invalidArgument("kernel tuning refused for \(isa): \(String(cString: kn_status_string(s)))")
        }
    }

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

/// Every constant the kernels' speed depends on besides the GEMM blocking, for one instruction
/// set: thresholds of the convolution's choice of algorithm, chunk and tile sizes, when to go
/// parallel (the C header's `kn_tuning` documents each). The same bits for any team size.
public struct KernelTuning: Sendable, Equatable, Codable {
    public var parallelMin: Int
    public var gemmParallelFlops: Int
    public var gemmKcInPlace: Int
    public var convScratchFloats: Int
    public var colWidth: Int
    public var colImagePlane: Int
    public var colViewPlane: Int
    public var narrowPlane: Int
    public var implicitMinRows: Int
    public var transposedMinRows: Int
    public var gridJunkRatio: Int
    public var gridChunkFloats: Int
    public var batchDwMinWidth: Int
    public var batchCols: Int
    public var batchImages: Int
    public var dwGroups: Int
    public var transposeTile: Int
    public var winogradMinChannels: Int
    public var winogradCols: Int
    public var winogradDwMinWidth: Int

    init(_ t: kn_tuning) {
        parallelMin = Int(t.parallel_min)
        gemmParallelFlops = Int(t.gemm_parallel_flops)
        gemmKcInPlace = Int(t.gemm_kc_in_place)
        convScratchFloats = Int(t.conv_scratch_floats)
        colWidth = Int(t.col_width)
        colImagePlane = Int(t.col_image_plane)
        colViewPlane = Int(t.col_view_plane)
        narrowPlane = Int(t.narrow_plane)
        implicitMinRows = Int(t.implicit_min_rows)
        transposedMinRows = Int(t.transposed_min_rows)
        gridJunkRatio = Int(t.grid_junk_ratio)
        gridChunkFloats = Int(t.grid_chunk_floats)
        batchDwMinWidth = Int(t.batch_dw_min_width)
        batchCols = Int(t.batch_cols)
        batchImages = Int(t.batch_images)
        dwGroups = Int(t.dw_groups)
        transposeTile = Int(t.transpose_tile)
        winogradMinChannels = Int(t.winograd_min_channels)
        winogradCols = Int(t.winograd_cols)
        winogradDwMinWidth = Int(t.winograd_dw_min_width)
    }

    var kernelValue: kn_tuning {
        var t = kn_tuning()
        t.parallel_min = Int32(clamping: parallelMin)
        t.gemm_parallel_flops = Int32(clamping: gemmParallelFlops)
        t.gemm_kc_in_place = Int32(clamping: gemmKcInPlace)
        t.conv_scratch_floats = Int32(clamping: convScratchFloats)
        t.col_width = Int32(clamping: colWidth)
        t.col_image_plane = Int32(clamping: colImagePlane)
        t.col_view_plane = Int32(clamping: colViewPlane)
        t.narrow_plane = Int32(clamping: narrowPlane)
        t.implicit_min_rows = Int32(clamping: implicitMinRows)
        t.transposed_min_rows = Int32(clamping: transposedMinRows)
        t.grid_junk_ratio = Int32(clamping: gridJunkRatio)
        t.grid_chunk_floats = Int32(clamping: gridChunkFloats)
        t.batch_dw_min_width = Int32(clamping: batchDwMinWidth)
        t.batch_cols = Int32(clamping: batchCols)
        t.batch_images = Int32(clamping: batchImages)
        t.dw_groups = Int32(clamping: dwGroups)
        t.transpose_tile = Int32(clamping: transposeTile)
        t.winograd_min_channels = Int32(clamping: winogradMinChannels)
        t.winograd_cols = Int32(clamping: winogradCols)
        t.winograd_dw_min_width = Int32(clamping: winogradDwMinWidth)
        return t
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
