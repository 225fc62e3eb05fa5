import Foundation

/// A thread that runs one job at a time and waits between them: the recompute thread of every
/// overlapped step of a trainer. Kept across steps because a new thread's kernel team starts
/// slowly (libomp registers a new root, its GEMM packing buffers are allocated and faulted in
/// again, the OS places its threads anew), and a step's recompute thread lives only ~0.1 s.
/// Lives until `stop()`.
///
/// Shared state, under `condition` (C: a caller of `run` or `stop`, T: the thread):
///
/// | field | written by | what it is |
/// |---|---|---|
/// | `job` | C sets it when none is pending, T clears it once the job and its captures are gone | the job to run |
/// | `stopping` | C (`stop`) | exit once no job is pending |
///
/// The waits: C in `run` for the previous job to be cleared; T for a job or `stopping`.
final class RecomputeThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var job: (() -> Void)?
    private var stopping = false

    init() {
        let thread = Thread { [self] in self.loop() } // holds self until stopped
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Runs `job` on the thread once the previous job has finished and let go of what it held.
    func run(_ job: @escaping () -> Void) {
        condition.lock()
        while self.job != nil { condition.wait() }
        self.job = job
        condition.broadcast()
        condition.unlock()
    }

    /// Lets the thread exit once its current job (if any) is done.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        condition.lock()
        while true {
            while job == nil && !stopping { condition.wait() }
            guard var next = job else { break }
            condition.unlock()
            next()
            next = {}
            condition.lock()
            job = nil // the job's captures go before the next one may start
            condition.broadcast()
        }
        condition.unlock()
    }
}
