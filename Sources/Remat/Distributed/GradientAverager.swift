import Foundation

/// Averages a model's gradients over the ranks in buckets of about `bucketBytes`, each sent as
/// soon as the backward pass has finished every block it covers, by a thread of its own: the
/// communication runs while the backward pass (and the overlapped recompute) still works on
/// earlier blocks, as PyTorch's DistributedDataParallel does. Each block's parameters are one
/// slice of the arena and the backward pass finishes blocks last to first, so a bucket is the
/// arena slice from the last finished block up to the previous bucket.
final class GradientAverager: @unchecked Sendable {
    private let communicator: Communicator
    private let gradients: UnsafeMutableBufferPointer<Float>
    private let blockRanges: [Range<Int>]
    private let bucketFloats: Int
    private let condition = NSCondition()
    private var queue: [Range<Int>] = []
    private var busy = false
    private var stopped = false
    private var open = 0 // arena offset where the current, unsent bucket ends
    private var seconds = 0.0

    init(communicator: Communicator, model: Model, bucketBytes: Int = 1 << 20) {
        self.communicator = communicator
        gradients = model.gradients
        blockRanges = model.parameterRanges
        bucketFloats = max(1, bucketBytes / 4)
        let thread = Thread { [self] in run() }
        thread.name = "remat-allreduce"
        thread.start()
    }

    /// Ends the thread (the trainer does when it goes away).
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    /// A step begins: every gradient is still to be averaged.
    func begin() {
        condition.lock()
        open = gradients.count
        seconds = 0
        condition.unlock()
    }

    /// Block i's backward pass is done: its gradients are final.
    func blockDone(_ i: Int) {
        let lower = blockRanges[i].lowerBound
        condition.lock()
        if open - lower >= bucketFloats {
            queue.append(lower..<open)
            open = lower
            condition.broadcast()
        }
        condition.unlock()
    }

    /// Sends what is left and waits until every bucket is averaged. Returns the seconds spent
    /// communicating this step and the seconds this call waited for it (the part not hidden).
    func finish() -> (communication: Double, waited: Double) {
        let start = DispatchTimeSource.now()
        condition.lock()
        if open > 0 { queue.append(0..<open); open = 0 }
        condition.broadcast()
        while !queue.isEmpty || busy { condition.wait() }
        let total = seconds
        condition.unlock()
        return (total, DispatchTimeSource.seconds(since: start))
    }

    private func run() {
        let scale = 1 / Float(communicator.size)
        while true {
            condition.lock()
            while queue.isEmpty && !stopped { condition.wait() }
            if stopped { condition.unlock(); return }
            let range = queue.removeFirst()
            busy = true
            condition.unlock()
            let start = DispatchTimeSource.now()
            let p = gradients.baseAddress! + range.lowerBound
            communicator.sum(p, count: range.count)
            for k in 0..<range.count { p[k] *= scale }
            let spent = DispatchTimeSource.seconds(since: start)
            condition.lock()
            seconds += spent
            busy = false
            condition.broadcast()
            condition.unlock()
        }
    }
}
