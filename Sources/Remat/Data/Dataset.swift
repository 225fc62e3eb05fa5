/// A labelled image dataset: `count` images of `imageShape` (C, H, W), labels in [0, classes).
public protocol Dataset: Sendable {
    var count: Int { get }
    var imageShape: Shape { get }
    var classes: Int { get }
    /// The images (N, C, H, W) and labels of the given indices.
    func batch(_ indices: [Int]) throws -> (images: Tensor, labels: [Int32])
}

extension Dataset {
    /// Indices 0..<count in a seeded random order (one epoch).
    public func shuffledIndices(seed: UInt64) -> [Int] {
        var rng = SeededGenerator(seed: seed)
        return (0..<count).shuffled(using: &rng)
    }
}
