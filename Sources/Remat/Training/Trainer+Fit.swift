import Foundation

/// Metrics of one epoch.
public struct EpochMetrics: Sendable {
    /// The epoch, counting from 0.
    public var epoch: Int
    /// Mean training loss over the epoch's images.
    public var loss: Double
    /// Share of the epoch's training images classified right (as they were trained on).
    public var accuracy: Double
    /// Training images per second of step time (evaluation and data loading excluded).
    public var imagesPerSecond: Double
    /// The largest step peak of activation bytes in the epoch.
    public var peakActivationBytes: Int
    /// Evaluation on the test set after the epoch, when one was given.
    public var testLoss: Double?
    /// Accuracy on the test set, when one was given.
    public var testAccuracy: Double?
}

/// What a training loop reports to its observer.
public enum TrainingEvent: Sendable {
    /// After each step: the epoch and the step's metrics.
    case step(epoch: Int, StepMetrics)
    /// After each epoch (and its evaluation).
    case epoch(EpochMetrics)
}

extension Trainer {
    /// Trains for epochs `start..<end` over `data` in batches shuffled by (seed, epoch),
    /// preparing each next batch on a background thread while the current one trains,
    /// evaluating on `test` after each epoch, and calling `observe` after every step and
    /// epoch (throwing from it stops training). `schedule` sets the learning rate each step;
    /// `augmentation` transforms each training batch. A trailing batch of fewer than two
    /// images is skipped (BatchNorm needs two). With a `communicator` of N ranks, each rank
    /// trains on its N-th of every whole batch (a trailing partial batch is dropped), and the
    /// metrics are this rank's.
    public func fit(_ data: Dataset, epochs: Range<Int>, batchSize: Int, test: Dataset? = nil,
                    schedule: LearningRateSchedule? = nil, augmentation: Augmentation? = nil,
                    observe: (TrainingEvent) throws -> Void = { _ in }) throws {
        guard batchSize >= 2 else { throw RematError.invalidArgument("batch size must be at least 2, got \(batchSize)") }
        guard data.count >= 2 else { throw RematError.invalidArgument("the dataset has \(data.count) images; training needs 2") }
        let ranks = communicator?.size ?? 1, rank = communicator?.rank ?? 0
        guard batchSize % ranks == 0, batchSize / ranks >= 2 else {
            throw RematError.invalidArgument("a batch of \(batchSize) does not split into \(ranks) shards of at least 2: use a multiple of \(2 * ranks)")
        }
        for epoch in epochs {
            var order = data.shuffledIndices(seed: seed ^ UInt64(epoch))
            var batch = batchSize
            if ranks > 1 {
                // every rank shuffles alike and takes its shard of each whole batch
                let shard = batchSize / ranks
                order = stride(from: 0, to: order.count - batchSize + 1, by: batchSize).flatMap { s in
                    order[(s + rank * shard)..<(s + (rank + 1) * shard)]
                }
                batch = shard
            }
            let starts = Array(stride(from: 0, to: order.count, by: batch)).filter { order.count - $0 >= 2 }
            let prefetch = BatchPrefetcher(data: data, order: order, starts: starts, batchSize: batch)
            var lossSum = 0.0, correct = 0, images = 0, seconds = 0.0, peak = 0
            for k in starts.indices {
                var (x, y) = try prefetch.take(k)
                if let augmentation { x = try augmentation.apply(x, step: step) }
                if let schedule { optimizer.learningRate = schedule.rate(at: step) }
                let m = try train(images: x, labels: y)
                lossSum += Double(m.loss) * Double(m.images)
                correct += m.correct
                images += m.images
                seconds += m.seconds
                peak = max(peak, m.peakActivationBytes)
                try observe(.step(epoch: epoch, m))
            }
            var metrics = EpochMetrics(epoch: epoch, loss: lossSum / Double(max(images, 1)),
                                       accuracy: Double(correct) / Double(max(images, 1)),
                                       imagesPerSecond: Double(images) / max(seconds, 1e-12), peakActivationBytes: peak)
            if let test {
                let (l, a) = try evaluate(test, batchSize: batchSize) // no larger than training's: memory stays as planned
                metrics.testLoss = l
                metrics.testAccuracy = a
            }
            try observe(.epoch(metrics))
        }
    }
}

/// Prepares batch k+1 on a background queue while batch k trains.
final class BatchPrefetcher: @unchecked Sendable {
    private let data: Dataset
    private let order: [Int]
    private let starts: [Int]
    private let batchSize: Int
    private let queue = DispatchQueue(label: "remat.prefetch")
    private var pending: (index: Int, group: DispatchGroup)?
    private var result: Result<(images: Tensor, labels: [Int32]), Error>?

    init(data: Dataset, order: [Int], starts: [Int], batchSize: Int) {
        self.data = data
        self.order = order
        self.starts = starts
        self.batchSize = batchSize
        schedule(0)
    }

    private func make(_ k: Int) throws -> (images: Tensor, labels: [Int32]) {
        let s = starts[k]
        return try data.batch(Array(order[s..<min(s + batchSize, order.count)]))
    }

    private func schedule(_ k: Int) {
        guard k < starts.count else { pending = nil; return }
        let group = DispatchGroup()
        group.enter()
        queue.async { [self] in
            result = Result { try make(k) }
            group.leave()
        }
        pending = (k, group)
    }

    /// Batch k (k counts up from 0), then starts preparing k+1.
    func take(_ k: Int) throws -> (images: Tensor, labels: [Int32]) {
        guard let p = pending, p.index == k else { return try make(k) }
        p.group.wait()
        let r = result!
        result = nil
        schedule(k + 1)
        return try r.get()
    }
}
