/// Seeded random-crop (with zero padding) and horizontal-flip augmentation for batches of
/// images, as CIFAR training uses (pad 4, crop back, flip half). The choice for image i of a
/// batch is a pure function of (seed, step, i).
public struct Augmentation: Sendable, Equatable {
    /// Largest shift, in pixels, each way.
    public var padding: Int
    /// Whether half the images are mirrored left to right.
    public var flip: Bool
    /// Seeds the choices (with the step and the image's place in the batch).
    public var seed: UInt64

    /// Crops of up to `padding` pixels either way (zeros outside) and, with `flip`, mirror images half the time.
    public init(padding: Int = 4, flip: Bool = true, seed: UInt64 = 0) {
        self.padding = padding
        self.flip = flip
        self.seed = seed
    }

    /// The augmented copy of a (N, C, H, W) batch for training step `step`.
    public func apply(_ images: Tensor, step: Int) throws -> Tensor {
        let (n, c, h, w) = try images.shape.nchw("augmentation")
        let src = images.scalars
        var out = [Float](repeating: 0, count: src.count)
        for i in 0..<n {
            var g = SeededGenerator(seed: seed ^ (UInt64(step) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(i) << 32))
            let dy = padding > 0 ? Int(g.next() % UInt64(2 * padding + 1)) - padding : 0
            let dx = padding > 0 ? Int(g.next() % UInt64(2 * padding + 1)) - padding : 0
            let mirror = flip && g.next() & 1 == 1
            for ch in 0..<c {
                let plane = (i * c + ch) * h * w
                for y in 0..<h {
                    let sy = y + dy
                    guard sy >= 0, sy < h else { continue } // zero padding
                    for x in 0..<w {
                        let sx0 = mirror ? w - 1 - x : x, sx = sx0 + dx
                        if sx >= 0, sx < w { out[plane + y * w + x] = src[plane + sy * w + sx] }
                    }
                }
            }
        }
        return try Tensor(shape: images.shape, values: out)
    }
}
