import Foundation
import RematKernels

/// The recompute thread's job in one overlapped step: rebuilds segments last-1 ... 0 in that
/// order, each as soon as a lookahead slot is free (and, with a memory limit, its first block
/// fits), and hands each to the backward pass. Under a memory limit, a segment the backward
/// pass needs before this thread has started it, the backward pass rebuilds itself, as a
/// sequential step would. Each side lends its threads to the other while it is idle
/// (`kn_lease`): the recompute team joins the backward pass while it has nothing to rebuild,
/// the backward team joins the recompute while it waits.
///
/// Shared state, all under `condition` (R: the recompute thread, B: the backward pass):
///
/// | field | written by | what it is |
/// |---|---|---|
/// | `slots` | R takes one per segment, B returns one per segment done | lookahead left |
/// | `started` | R or B, whichever claims the segment first | segments being or already rebuilt |
/// | `inputs`, `statistics` | emptied by the claimer; R clears all at exit | what unstarted segments rebuild from |
/// | `ready` | R publishes, B takes | rebuilt records not yet taken |
/// | `awaited` | B | the segment B waits for, if any |
/// | `backwardAt` | B | B's segment and the blocks below `upper` it has left (pacing) |
/// | `backwardRebuilding` | B | B is rebuilding a segment itself (R holds back) |
/// | `failure` | R | R's error, rethrown by B's next `take` |
/// | `cancelled` | B | B failed: R stops at its next wait |
/// | `finished` | R | R has exited and dropped what it held |
///
/// `lending` is R's alone (no lock). The waits: R for a slot (`acquireSlot`), for its
/// segment's first block to fit or for B to claim it (`start`), for each later block to fit
/// (`waitForMemory`); B for its segment's records (`take`) and for R's exit (`join`). Every
/// change above broadcasts, and every wait also ends on `cancelled`.
final class RecomputeWorker: @unchecked Sendable {
    let toBackward = kn_lease_create()!, toRecompute = kn_lease_create()!
    private let condition = NSCondition()
    private var slots: Int
    private var started: Set<Int> = []
    private var inputs: [Tensor?]
    private var statistics: [ActivationStash?]
    private var ready: [Int: [Saved]] = [:]
    private var awaited: Int?
    private var backwardAt: (segment: Int, upper: Int)
    private var backwardRebuilding = false
    private var failure: Error?
    private var cancelled = false
    private var finished = false
    private var lending = false

    // set at creation, read by both
    private let model: Model
    private let account: MemoryAccount
    private let trace: TraceRecorder?
    private let segments: [Range<Int>]
    private let context: ForwardContext
    private let overlap: Overlap
    private let pacer: RecomputePacer?

    init(model: Model, segments: [Range<Int>], checkpoints: [Tensor?], statistics: [ActivationStash?],
         context: ForwardContext, overlap: Overlap, account: MemoryAccount, trace: TraceRecorder?, pacer: RecomputePacer?,
         thread: RecomputeThread) {
        slots = overlap.lookahead
        self.model = model
        self.account = account
        self.trace = trace
        self.segments = segments
        inputs = Array(checkpoints.prefix(segments.count))
        self.statistics = Array(statistics.prefix(segments.count))
        self.context = context
        self.overlap = overlap
        self.pacer = pacer
        backwardAt = pacer.map { ($0.segments.count - 1, $0.segments[$0.segments.count - 1].upperBound) } ?? (0, 0) // the last segment, whole
        thread.run { [self] in self.main() }
    }

    deinit {
        kn_lease_destroy(toBackward)
        kn_lease_destroy(toRecompute)
    }

    private func main() {
        trace?.nameThread("recompute")
        KernelTeam.scoped(threads: overlap.recomputeThreads, borrowing: toRecompute,
                          cpus: overlap.bindsCores ? overlap.backwardThreads..<(overlap.backwardThreads + overlap.recomputeThreads) : nil) {
            account.withCurrent {
                for s in stride(from: segments.count - 1, through: 0, by: -1) {
                    lend(true) // idle until a slot frees
                    guard acquireSlot() else { break }
                    do {
                        // nil: the backward pass got there first and rebuilds s itself (its slot
                        // comes back when the backward pass is done with s, as for any segment)
                        guard let saved = try rebuild(s) else { continue }
                        // handed over, not shared: a copy kept here would keep every block the
                        // backward pass frees alive until this thread next runs, over the
                        // predicted peak
                        publish(s, consume saved)
                    } catch {
                        fail(error)
                        break
                    }
                }
                lend(true)
                condition.withLock {
                    inputs.removeAll()
                    statistics.removeAll()
                }
            }
        }
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    private func acquireSlot() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while slots == 0 && !cancelled { condition.wait() }
        if cancelled { return false }
        slots -= 1
        return true
    }

    /// Rebuilds segment s on this thread, or returns nil if the backward pass claimed it. The
    /// checkpoint is gone when it returns (a separate function for that), before the
    /// records are published: held longer, it would sit beside the backward pass's peak.
    private func rebuild(_ s: Int) throws -> [Saved]? {
        guard let (input, stats) = try start(s) else { return nil }
        return try model.rebuild(segments[s], from: input, statistics: stats, context, trace: trace) { i in
            if i > self.segments[s].lowerBound { try self.waitForMemory(block: i, segment: s) }
            self.lend(false) // only now: taking threads back waits for the kernel they run
        }
    }

    /// Claims segment s and takes its checkpoint once its first block may run (after the
    /// backward pass's own rebuild, and within the memory limit); nil if the backward pass
    /// claimed it first.
    private func start(_ s: Int) throws -> (Tensor, ActivationStash?)? {
        condition.lock()
        defer { condition.unlock() }
        while !cancelled && !started.contains(s) && (backwardRebuilding || !mayRun(block: segments[s].lowerBound, segment: s)) {
            condition.wait()
        }
        if cancelled { throw CancellationError() }
        if started.contains(s) { return nil }
        return claim(s)
    }

    /// Under the lock: marks segment s started and hands over its checkpoint and statistics.
    private func claim(_ s: Int) -> (Tensor, ActivationStash?) {
        started.insert(s)
        defer { (inputs[s], statistics[s]) = (nil, nil) }
        return (inputs[s]!, statistics[s])
    }

    /// Under the lock: whether the memory limit lets block i of segment k start now.
    private func mayRun(block i: Int, segment k: Int) -> Bool {
        guard let pacer else { return true }
        return awaited == k
            || pacer.fits(block: i, segment: k, backward: backwardAt.segment, upper: backwardAt.upper, published: Array(ready.keys))
    }

    /// With a memory limit: waits until block i of segment k fits beside what the backward pass
    /// can still reach (`RecomputePacer`), or the backward pass waits for segment k (then it
    /// has nothing left to free, and the rebuild goes on as a sequential one would).
    private func waitForMemory(block i: Int, segment k: Int) throws {
        guard pacer != nil else { return }
        condition.lock()
        defer { condition.unlock() }
        // the team stays lent while this thread checks again at each block the backward pass
        // reports: taking it back for each check would slow every backward block
        while !cancelled && !mayRun(block: i, segment: k) {
            lend(true)
            condition.wait()
        }
        if cancelled { throw CancellationError() }
    }

    /// Lends this thread's team to the backward pass, or takes it back (waiting for the
    /// backward pass's kernel that runs on it).
    private func lend(_ on: Bool) {
        guard on != lending else { return }
        kn_lease_offer(toBackward, on ? Int32(overlap.recomputeThreads) : 0)
        lending = on
    }

    /// The backward pass is in segment s with the blocks below `upper` left.
    func backwardReached(segment s: Int, upper: Int) {
        guard pacer != nil else { return }
        condition.lock()
        backwardAt = (s, upper)
        condition.broadcast()
        condition.unlock()
    }

    private func publish(_ s: Int, _ saved: consuming [Saved]) {
        condition.lock()
        // the last reference moves in under the lock: a parameter released after unlock()
        // outlives the hand-off if this thread is descheduled there, and the backward pass's
        // first `saved[j] = Saved()` then copies the array and frees nothing, breaking the
        // memory limit's bound
        ready[s] = consume saved
        condition.broadcast()
        condition.unlock()
    }

    private func fail(_ error: Error) {
        condition.lock()
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// Takes segment s's activations: rebuilt by the recompute thread (waiting for it, and
    /// rethrowing its failure), or, under a memory limit, if that thread has not started s,
    /// by `rebuild` here from s's checkpoint and statistics, the recompute thread held back
    /// meanwhile (as a sequential step would, without the cost of a hand-off).
    func take(segment s: Int, rebuild: (Tensor, ActivationStash?) throws -> [Saved]) throws -> [Saved] {
        condition.lock()
        // only under a memory limit: without one the recompute thread had its slot for s
        // since the backward pass finished s + 1 and is about to start it
        if pacer != nil && ready[s] == nil && failure == nil && !cancelled && !started.contains(s) {
            backwardRebuilding = true
            var checkpoint: (Tensor, ActivationStash?)? = claim(s)
            condition.unlock()
            let result = Result { try rebuild(checkpoint!.0, checkpoint!.1) }
            checkpoint = nil // gone before the recompute thread may start the next segment
            condition.lock()
            backwardRebuilding = false
            backwardAt = (s, segments[s].upperBound)
            condition.broadcast()
            condition.unlock()
            return try result.get()
        }
        defer { condition.unlock() }
        let waitStart = trace.map { _ in DispatchTimeSource.now() }
        defer { if let waitStart { trace?.add("wait", block: segments[s].upperBound - 1, start: waitStart) } }
        if ready[s] == nil && failure == nil { kn_lease_offer(toRecompute, Int32(overlap.backwardThreads)) }
        defer { kn_lease_offer(toRecompute, 0) }
        awaited = s
        condition.broadcast() // a recompute held back by the memory limit goes on
        while ready[s] == nil && failure == nil { condition.wait() }
        awaited = nil
        backwardAt = (s, segments[s].upperBound) // taken: its records are the backward pass's now
        if let failure { throw failure }
        return ready.removeValue(forKey: s)!
    }

    /// The backward pass is done with a segment: one more may be rebuilt.
    func release() {
        condition.lock()
        slots += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the thread (after an error in the backward pass) and waits for it.
    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
        join()
    }

    /// Waits until the thread has exited and dropped everything it held.
    func join() {
        condition.lock()
        while !finished { condition.wait() }
        ready.removeAll()
        condition.unlock()
    }
}

