import Foundation

/// A learnable synthetic dataset for any image shape: each class is a fixed random smooth
/// pattern (sums of a few seeded sinusoids per channel), and each image is its class pattern
/// with a random shift of amplitude and seeded Gaussian noise. Classes differ in structure,
/// not in mean brightness, so a network has to learn spatial features; accuracy rises well
/// above chance. Image i is a pure function of (seed, firstIndex + i): any batch is
/// reproducible, and two datasets with the same seed and disjoint index ranges are a
/// train and a test split of the same classes.
public struct SyntheticDataset: Dataset {
    /// Images in the dataset.
    public let count: Int
    /// (C, H, W) of each image.
    public let imageShape: Shape
    /// Number of classes (patterns).
    public let classes: Int
    /// Seeds the patterns and the noise.
    public let seed: UInt64
    /// Standard deviation of the Gaussian noise added to each pattern.
    public let noise: Float
    /// Global index of this dataset's image 0.
    public let firstIndex: Int
    private let patterns: [[Float]] // one per class, imageShape.count values

    /// `count` images of `imageShape`: image i is the pattern of class i mod `classes` plus
    /// Gaussian `noise`, both pure functions of (seed, firstIndex + i), made on demand.
    public init(count: Int, imageShape: Shape, classes: Int = 10, seed: UInt64 = 1, noise: Float = 0.5,
                firstIndex: Int = 0) throws {
        guard count > 0, classes > 1, imageShape.dims.count == 3, imageShape.count > 0 else {
            throw RematError.invalidArgument("synthetic data needs count > 0, classes > 1 and a (C, H, W) image shape")
        }
        self.count = count
        self.imageShape = imageShape
        self.classes = classes
        self.seed = seed
        self.noise = noise
        self.firstIndex = firstIndex
        let (c, h, w) = (imageShape.dims[0], imageShape.dims[1], imageShape.dims[2])
        var rng = SeededGenerator(seed: seed)
        var patterns: [[Float]] = []
        for _ in 0..<classes {
            var p = [Float](repeating: 0, count: imageShape.count)
            for ch in 0..<c {
                for _ in 0..<3 { // three plane waves per channel
                    let fy = rng.uniform(-3, 3), fx = rng.uniform(-3, 3), phase = rng.uniform(0, 6.283), a = rng.uniform(0.3, 1)
                    for y in 0..<h {
                        for x in 0..<w {
                            let t = 6.283 * (fy * Float(y) / Float(h) + fx * Float(x) / Float(w)) + phase
                            p[(ch * h + y) * w + x] += a * Float(sin(Double(t)))
                        }
                    }
                }
            }
            patterns.append(p)
        }
        self.patterns = patterns
    }

    /// The label of image i.
    public func label(_ i: Int) -> Int32 {
        var g = SeededGenerator(seed: seed ^ (UInt64(firstIndex + i) &* 0xD1B5_4A32_D192_ED03))
        return Int32(g.next() % UInt64(classes))
    }

    public func batch(_ indices: [Int]) throws -> (images: Tensor, labels: [Int32]) {
        let per = imageShape.count
        var values = [Float](repeating: 0, count: indices.count * per)
        var labels: [Int32] = []
        for (b, i) in indices.enumerated() {
            guard i >= 0, i < count else { throw RematError.invalidArgument("index \(i) outside the dataset's \(count) images") }
            let y = label(i)
            labels.append(y)
            var g = SeededGenerator(seed: seed ^ (UInt64(firstIndex + i) &* 0x9E37_79B9_7F4A_7C15) ^ 0xABCD)
            let gain = g.uniform(0.7, 1.3)
            let p = patterns[Int(y)]
            for j in 0..<per { values[b * per + j] = gain * p[j] + noise * g.normal() }
        }
        return (try Tensor(shape: Shape([indices.count] + imageShape.dims), values: values), labels)
    }
}
