import RematKernels

/// The kernel runtime: which instruction set runs, and how many threads this thread's kernels use.
///
/// Threading contract: `threads` is a per-OS-thread setting. Two threads (for example the
/// backward pass and the recompute thread) may each set their own team size and run kernels at
/// the same time; results are bitwise identical whatever the team sizes.
public enum KernelRuntime {
    /// Team size for kernels called from the current thread (at least 1).
    public static var threads: Int {
        get { Int(kn_get_num_threads()) }
        set { kn_set_num_threads(Int32(clamping: max(1, newValue))) }
    }

    /// Cores this process may run on.
    public static var cores: Int { Int(kn_num_cores()) }

    /// The instruction set the kernels use now (`"avx512"`, `"avx2"`, `"neon"` or `"portable"`).
    public static var isa: String { String(cString: kn_isa_name(kn_isa_active())) }

    /// Which kernels run and why, one line each: the `--verbose` report.
    public static var dispatchReport: String { String(cString: kn_dispatch_report()) }
}
