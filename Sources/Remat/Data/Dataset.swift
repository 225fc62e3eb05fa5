/// A labelled image dataset: `count` images of `imageShape` (C, H, W), labels in [0, classes).
public protocol Dataset: Sendable {
    var count: Int { get }
    var imageShape: Shape { get }
    var classes: Int { get }
    /// The images (N, C, H, W) and labels of the given indices.
    func batch(_ indices: [Int]) throws -> (images: Tensor, labels: [Int32])
    /// Bytes the dataset holds in memory (0 for one that makes its images on demand): part of
    /// a whole-process memory prediction.
    var residentBytes: Int { get }
}

extension Dataset {
    public var residentBytes: Int { 0 }

    /// Indices 0..<count in a seeded random order (one epoch).
    public func shuffledIndices(seed: UInt64) -> [Int] {
        var rng = SeededGenerator(seed: seed)
        return (0..<count).shuffled(using: &rng)
    }
}

/// The first `count` images of another dataset (quick runs on part of a dataset).
public struct DatasetPrefix<Base: Dataset>: Dataset {
    /// The dataset it takes images from.
    public let base: Base
    /// Images it exposes.
    public let count: Int
    public var imageShape: Shape { base.imageShape }
    public var classes: Int { base.classes }
    public var residentBytes: Int { base.residentBytes }

    /// The first `count` images of `base` (clamped to its size).
    public init(_ base: Base, count: Int) {
        self.base = base
        self.count = min(max(count, 0), base.count)
    }

    public func batch(_ indices: [Int]) throws -> (images: Tensor, labels: [Int32]) {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw RematError.invalidArgument("index \(bad) is outside the dataset's \(count) images")
        }
        return try base.batch(indices)
    }
}
