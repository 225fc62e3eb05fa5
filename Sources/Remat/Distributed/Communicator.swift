import Foundation
#if canImport(CMPI)
import CMPI
#endif

/// The processes of a data-parallel run over MPI (`mpirun -np N ...`): every rank holds the
/// model, trains on its own shard of each batch, and the gradients are averaged before each
/// optimizer step (see `GradientAverager`).
///
/// Threading: MPI is initialised with MPI_THREAD_SERIALIZED; the calling thread and the
/// gradient thread never call it at the same time (the trainer waits for the gradient thread
/// before anything else communicates).
public final class Communicator: @unchecked Sendable {
    /// This process's rank, 0 ..< size.
    public let rank: Int
    /// Number of processes.
    public let size: Int

    /// Whether this build has MPI (Open MPI's libopenmpi-dev was found when it was built).
    public static var isAvailable: Bool {
        #if canImport(CMPI)
        return true
        #else
        return false
        #endif
    }

    /// Processes the launcher started (Open MPI's OMPI_COMM_WORLD_SIZE, or PMI_SIZE), 1 when
    /// not launched by mpirun. Needs no MPI.
    public static var launchedSize: Int {
        let env = ProcessInfo.processInfo.environment
        return Int(env["OMPI_COMM_WORLD_SIZE"] ?? env["PMI_SIZE"] ?? "") ?? 1
    }

    /// The world communicator: MPI is initialised on first use and finalised at exit. Throws,
    /// saying how to get MPI, when this build has none.
    public static func world() throws -> Communicator {
        #if canImport(CMPI)
        return shared
        #else
        throw RematError.invalidArgument("this Remat was built without MPI: apt-get install -y libopenmpi-dev openmpi-bin, "
                                         + "then rebuild (swift build; after installing, add --manifest-cache none once)")
        #endif
    }

    #if canImport(CMPI)
    private static let shared: Communicator = {
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, remat_mpi_thread_serialized(), &provided)
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(remat_mpi_world(), &rank)
        MPI_Comm_size(remat_mpi_world(), &size)
        atexit { MPI_Finalize() }
        return Communicator(rank: Int(rank), size: Int(size))
    }()
    #endif

    private init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    /// Sums `count` floats over all ranks into every rank's buffer, bitwise the same on each:
    /// a reduction to rank 0, then its broadcast (an allreduce may associate differently on
    /// different ranks, and the ranks' weights must stay identical).
    func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        #if canImport(CMPI)
        Communicator.chunks(buffer, count) { p, n in
            if rank == 0 {
                MPI_Reduce(remat_mpi_in_place(), p, n, remat_mpi_float(), remat_mpi_sum(), 0, remat_mpi_world())
            } else {
                MPI_Reduce(p, nil, n, remat_mpi_float(), remat_mpi_sum(), 0, remat_mpi_world())
            }
            MPI_Bcast(p, n, remat_mpi_float(), 0, remat_mpi_world())
        }
        #endif
    }

    /// Rank 0's floats on every rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        #if canImport(CMPI)
        Communicator.chunks(buffer, count) { p, n in MPI_Bcast(p, n, remat_mpi_float(), 0, remat_mpi_world()) }
        #endif
    }

    /// Calls `body` on consecutive pieces of the buffer: MPI counts are Int32.
    private static func chunks(_ buffer: UnsafeMutablePointer<Float>, _ count: Int,
                               _ body: (UnsafeMutablePointer<Float>, Int32) -> Void) {
        var offset = 0
        while offset < count {
            let n = Int32(min(count - offset, Int(Int32.max)))
            body(buffer + offset, n)
            offset += Int(n)
        }
    }

    /// Element-wise sums of a few doubles over all ranks (every rank gets them).
    public func sum(_ values: [Double]) -> [Double] { reduce(values, max: false, min: false) }
    /// Element-wise minima over all ranks.
    public func minimum(_ values: [Double]) -> [Double] { reduce(values, max: false, min: true) }
    /// Element-wise maxima over all ranks.
    public func maximum(_ values: [Double]) -> [Double] { reduce(values, max: true, min: false) }

    private func reduce(_ values: [Double], max: Bool, min: Bool) -> [Double] {
        #if canImport(CMPI)
        var out = values
        var input = values
        let op = max ? remat_mpi_max() : min ? remat_mpi_min() : remat_mpi_sum()
        MPI_Allreduce(&input, &out, Int32(values.count), remat_mpi_double(), op, remat_mpi_world())
        return out
        #else
        return values
        #endif
    }
}
