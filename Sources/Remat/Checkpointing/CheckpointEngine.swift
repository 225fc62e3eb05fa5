import Foundation
import RematKernels

/// Forward, loss and backward of one step under a checkpoint plan (see `CheckpointPlan`).
///
/// Forward: every segment's input is kept (its checkpoint), and the batch statistics of its
/// BatchNorms; only the last segment keeps what its backward needs. Backward, last segment
/// first: each earlier segment is rebuilt from its checkpoint (BN taking back its statistics
/// instead of reducing again, running statistics untouched, dropout masks regenerated) and
/// then back-propagated and freed.
/// With `Overlap`, the rebuilding runs on a recompute thread with its own kernel team, at most
/// `lookahead` segments ahead of the backward pass.
struct CheckpointEngine {
    let model: Model
    let plan: CheckpointPlan
    let overlap: Overlap?
    let account: MemoryAccount
    let trace: TraceRecorder?
    /// Called after each block's backward pass (its parameter gradients are then final).
    var blockDone: ((Int) -> Void)? = nil
    /// With `Overlap.memoryLimit`: paces the recompute thread (from the plan's profile).
    var pacer: RecomputePacer? = nil
    /// Where the recompute runs; required with overlap (the trainer keeps one across steps).
    var recomputeThread: RecomputeThread? = nil

    /// Returns the loss, the logits' correct count and leaves the gradients accumulated.
    func run(images: Tensor, labels: [Int32], context: ForwardContext) throws -> (loss: Float, correct: Int) {
        try model.check(images)
        if plan.selective { return try runSelective(images: images, labels: labels, context: context) }
        let blocks = model.blocks, segments = plan.segments, last = segments.count - 1
        var checkpoints = [Tensor?](repeating: nil, count: segments.count)
        var statistics = [ActivationStash?](repeating: nil, count: segments.count)
        var lastSaved: [Saved] = []
        var x = images
        for (s, range) in segments.enumerated() {
            checkpoints[s] = x
            var recording = context
            if s != last {
                statistics[s] = ActivationStash()
                recording.statistics = statistics[s]
            }
            for i in range {
                let (y, saved) = try trace.span("forward", block: i) { try blocks[i].forward(x, recording) }
                if s == last { lastSaved.append(saved) } // earlier segments: dropped here, rebuilt later
                x = y
            }
        }
        let (loss, dlogits, correct) = try CheckpointEngine.loss(x, labels, context)
        var recomputeContext = context
        recomputeContext.updateRunningStatistics = false
        checkpoints[last] = nil // the last segment's records hold its input if they need it

        precondition(overlap == nil || recomputeThread != nil, "an overlapped step needs its recompute thread")
        let worker = overlap.map { o in
            RecomputeWorker(model: model, segments: Array(segments.prefix(last)), checkpoints: checkpoints,
                            statistics: statistics, context: recomputeContext, overlap: o, account: account, trace: trace,
                            pacer: pacer, thread: recomputeThread!)
        }
        if worker != nil { // the worker holds them now, freeing each when used
            checkpoints.removeAll()
            statistics.removeAll()
        }
        let team = kn_get_num_threads()
        let bound = overlap.map { $0.bindsCores ? Int32($0.backwardThreads + $0.recomputeThreads) : 0 } ?? 0
        if let o = overlap, let worker {
            kn_set_num_threads(Int32(o.backwardThreads))
            kn_set_team_lease(worker.toBackward) // the recompute team's threads, while it is idle
            if bound > 0 { _ = kn_bind_team(0, bound) } // the lent ones on the recompute team's CPUs
        }
        defer {
            if bound > 0 { _ = kn_bind_team(-1, bound) }
            kn_set_num_threads(team)
            kn_set_team_lease(nil)
        }
        var g = dlogits
        do {
            for s in stride(from: last, through: 0, by: -1) {
                var saved: [Saved]
                let rebuildHere = { (input: Tensor, stats: ActivationStash?) in
                    try CheckpointEngine.recompute(model, segments[s], from: input, recomputeContext, statistics: stats, trace: trace)
                }
                if s == last {
                    saved = lastSaved
                    lastSaved = []
                } else if let worker {
                    saved = try worker.take(segment: s, rebuild: rebuildHere) // rebuilt here if not started
                } else {
                    saved = try rebuildHere(checkpoints[s]!, statistics[s])
                    (checkpoints[s], statistics[s]) = (nil, nil)
                }
                for (j, i) in segments[s].enumerated().reversed() {
                    g = try trace.span("backward", block: i) { try blocks[i].backward(g, saved[j]) }
                    saved[j] = Saved() // free this block's activations now
                    worker?.backwardReached(segment: s, upper: i)
                    blockDone?(i)
                }
                worker?.release()
            }
        } catch {
            worker?.cancel()
            throw error
        }
        worker?.join()
        return (loss, correct)
    }

    /// Selective recomputation: the forward keeps each block's stash of expensive outputs
    /// (and its input only where the previous block cannot rebuild it from its stash); the
    /// backward rebuilds each block's records from them, cheap layers only, just before use.
    private func runSelective(images: Tensor, labels: [Int32], context: ForwardContext) throws -> (loss: Float, correct: Int) {
        guard overlap == nil else {
            throw RematError.invalidArgument("selective recomputation runs on the backward thread: turn overlap off, or use every-k, sqrt(n) or a budget with overlap")
        }
        let blocks = model.blocks, n = blocks.count
        var inputs = [Tensor?](repeating: nil, count: n), stashes = [ActivationStash?](repeating: nil, count: n)
        var lastSaved = Saved()
        var x = images
        for (i, block) in blocks.enumerated() {
            if i == 0 || (blocks[i - 1] as? Sequential).map({ $0.canRebuildOutputFromStash }) != true { inputs[i] = x }
            if i == n - 1 {
                let (y, saved) = try trace.span("forward", block: i) { try block.forward(x, context) }
                (x, lastSaved) = (y, saved)
            } else {
                let stash = ActivationStash()
                var recording = context
                recording.stash = stash
                x = try trace.span("forward", block: i) { try block.forward(x, recording).0 }
                stashes[i] = stash
            }
        }
        let (loss, dlogits, correct) = try CheckpointEngine.loss(x, labels, context)
        var replay = context
        replay.updateRunningStatistics = false
        var g = try trace.span("backward", block: n - 1) { try blocks[n - 1].backward(dlogits, lastSaved) }
        lastSaved = Saved()
        blockDone?(n - 1)
        for i in stride(from: n - 2, through: 0, by: -1) {
            let stash = stashes[i]!
            let input = try inputs[i] ?? trace.span("recompute", block: i - 1) {
                try (blocks[i - 1] as! Sequential).outputFromStash(stashes[i - 1]!, replay)!
            }
            stash.rewind()
            replay.stash = stash
            let saved = try trace.span("recompute", block: i) { try blocks[i].forward(input, replay).1 }
            g = try trace.span("backward", block: i) { try blocks[i].backward(g, saved) }
            (inputs[i], stashes[i]) = (nil, nil)
            blockDone?(i)
        }
        return (loss, correct)
    }

    /// The mean loss, its gradient and the correct count; a non-finite loss stops the step
    /// before any gradient exists.
    private static func loss(_ logits: Tensor, _ labels: [Int32], _ context: ForwardContext) throws -> (Float, Tensor, Int) {
        let (loss, dlogits) = try SoftmaxCrossEntropy.evaluate(logits: logits, labels: labels)
        guard loss.isFinite else {
            // a loss that was finite before and is not now points at the step size; one that
            // never was, at the data or the weights it started from
            let advice = context.step == 0
                ? "check the images and the initial weights for NaN or infinite values"
                : "the learning rate is the likely cause: lower it"
            throw RematError.nonFinite("the loss became \(loss) at step \(context.step); \(advice) (parameters left as they were)")
        }
        return (loss, dlogits, SoftmaxCrossEntropy.correct(logits: logits, labels: labels))
    }

    /// Rebuilds a segment's activations from its checkpoint and the batch statistics its
    /// forward recorded (on the calling thread).
    static func recompute(_ model: Model, _ range: Range<Int>, from input: Tensor, _ recomputeContext: ForwardContext,
                          statistics: ActivationStash?, trace: TraceRecorder?,
                          before: (Int) throws -> Void = { _ in }) throws -> [Saved] {
        var x = input, saved: [Saved] = [], context = recomputeContext
        statistics?.rewind()
        context.statistics = statistics
        for i in range {
            try before(i)
            let (y, s) = try trace.span("recompute", block: i) { try model.blocks[i].forward(x, context) }
            saved.append(s)
            x = y
        }
        return saved
    }
}

/// The recompute thread: rebuilds segments last-1 ... 0 in that order, each as soon as a
/// lookahead slot is free (and, with a memory limit, its first block fits), and hands each
/// to the backward pass. Under a memory limit, a segment the backward pass needs before this
/// thread has started it, the backward pass rebuilds itself, as a sequential step would. Each side lends its
/// threads to the other while it is idle (`kn_lease`): the recompute team joins the backward
/// pass while it has nothing to rebuild, the backward team joins the recompute while it waits.
final class RecomputeWorker: @unchecked Sendable {
    let toBackward = kn_lease_create()!, toRecompute = kn_lease_create()!
    private let condition = NSCondition()
    private var ready: [Int: [Saved]] = [:]
    private var failure: Error?
    private var cancelled = false
    private var slots: Int
    private var finished = false
    private var awaited: Int? // the segment the backward pass waits for
    private var backwardAt: (segment: Int, upper: Int) // its segment, and the blocks below upper it has left
    private var started: Set<Int> = [] // segments either thread has begun to rebuild
    private var backwardRebuilding = false // the backward pass rebuilds a segment itself
    private var inputs: [Tensor?] // checkpoints and statistics of segments not yet started
    private var statistics: [ActivationStash?]

    // owned by the recompute thread once started
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
        kn_set_num_threads(Int32(overlap.recomputeThreads))
        kn_set_team_lease(toRecompute)
        let bound = Int32(overlap.bindsCores ? overlap.recomputeThreads : 0)
        if bound > 0 { _ = kn_bind_team(Int32(overlap.backwardThreads), bound) }
        trace?.nameThread("recompute")
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
        if bound > 0 { _ = kn_bind_team(-1, bound) } // its workers go back to libomp's pool unbound
        kn_set_team_lease(nil)
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
        return try CheckpointEngine.recompute(model, segments[s], from: input, context, statistics: stats, trace: trace) { i in
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
    /// backward pass's kernel that runs on it); the recompute thread's own state.
    private func lend(_ on: Bool) {
        guard on != lending else { return }
        kn_lease_offer(toBackward, on ? Int32(overlap.recomputeThreads) : 0)
        lending = on
    }
    private var lending = false

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

/// A thread that runs one job at a time and waits between them: the recompute thread of every
/// overlapped step of a trainer. Kept across steps because a new thread's kernel team starts
/// slowly (libomp registers a new root, its GEMM packing buffers are allocated and faulted in
/// again, the OS places its threads anew), and a step's recompute thread lives only ~0.1 s.
/// Lives until `stop()`.
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
