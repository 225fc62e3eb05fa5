import RematKernels

/// The calling thread's kernel team, set for a scope and restored after it.
enum KernelTeam {
    /// Runs `body` with this thread's kernels on `threads` threads plus those another team
    /// lends through `lease`, and with `cpus` bound to those of the process's usable CPUs
    /// (the lent threads included: they run on the lender's CPUs).
    static func scoped<T>(threads: Int, borrowing lease: OpaquePointer?, cpus: Range<Int>? = nil,
                          _ body: () throws -> T) rethrows -> T {
        let before = kn_get_num_threads()
        kn_set_num_threads(Int32(threads))
        kn_set_team_lease(lease)
        if let cpus { _ = kn_bind_team(Int32(cpus.lowerBound), Int32(cpus.count)) }
        defer {
            if let cpus { _ = kn_bind_team(-1, Int32(cpus.count)) } // back to libomp's pool unbound
            kn_set_team_lease(nil)
            kn_set_num_threads(before)
        }
        return try body()
    }
}
