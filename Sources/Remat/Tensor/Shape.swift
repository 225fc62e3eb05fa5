/// A tensor shape, batch first: (N, C, H, W) for images and activations, (N, F) for features.
public struct Shape: Hashable, Sendable, CustomStringConvertible {
    /// Sizes, outermost first: (N, C, H, W) for activations, (N, F) for features.
    public var dims: [Int]

    /// A shape of these sizes.
    public init(_ dims: [Int]) { self.dims = dims }
    /// A shape of these sizes.
    public init(_ dims: Int...) { self.dims = dims }

    /// Number of elements.
    public var count: Int { dims.reduce(1, *) }
    /// The first dimension (images in a batch).
    public var batch: Int { dims[0] }
    /// Elements per image.
    public var perImage: Int { dims.dropFirst().reduce(1, *) }
    /// The same shape with another batch size.
    public func withBatch(_ n: Int) -> Shape { Shape([n] + dims.dropFirst()) }
    /// "(N, C, H, W)".
    public var description: String { "(" + dims.map(String.init).joined(separator: ", ") + ")" }

    /// (N, C, H, W) of a 4-D shape; throws for any other rank.
    func nchw(_ what: String) throws -> (n: Int, c: Int, h: Int, w: Int) {
        guard dims.count == 4 else {
            throw RematError.shape("\(what) needs a (N, C, H, W) input, got \(self)")
        }
        return (dims[0], dims[1], dims[2], dims[3])
    }
}
