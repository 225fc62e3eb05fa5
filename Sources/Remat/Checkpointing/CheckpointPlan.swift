/// The segments of a checkpointed chain: the forward pass keeps the input of every segment
/// (its checkpoint) and, for the last segment only, everything its backward pass needs; the
/// backward pass recomputes each other segment from its checkpoint just before it needs it.
/// The last segment is never recomputed.
public struct CheckpointPlan: Sendable, Equatable, CustomStringConvertible {
    /// Blocks of each segment, in order; together they cover 0..<blocks once.
    public let segments: [Range<Int>]

    /// - Parameters:
    ///   - blockBytes: activation bytes each block keeps for its backward pass (measured by
    ///     `Model.savedBytes`); without them sqrt(n) splits by block count.
    public init(policy: CheckpointPolicy, blocks n: Int, blockBytes: [Int]? = nil) throws {
        guard n >= 1 else { throw RematError.invalidArgument("a plan needs at least one block") }
        switch policy {
        case .none:
            segments = [0..<n]
        case .every(let k):
            guard k >= 1 else { throw RematError.invalidArgument("checkpoint every k blocks needs k >= 1, got \(k)") }
            segments = stride(from: 0, to: n, by: k).map { $0..<min($0 + k, n) }
        case .sqrtN:
            let m = Int((Double(n).squareRoot()).rounded(.up))
            if let bytes = blockBytes, bytes.count == n {
                segments = CheckpointPlan.balanced(bytes, into: m)
            } else {
                segments = stride(from: 0, to: n, by: m).map { $0..<min($0 + m, n) }
            }
        }
    }

    /// At most m contiguous segments whose largest byte total is as small as it can be (the
    /// linear partition problem: binary search on the bound, greedy check). Activations of
    /// early CNN blocks are several times those of late ones, so equal block counts would
    /// leave the first segment, and the peak, far larger than the rest.
    static func balanced(_ bytes: [Int], into m: Int) -> [Range<Int>] {
        func split(_ bound: Int) -> [Range<Int>]? {
            var out: [Range<Int>] = [], start = 0, sum = 0
            for (i, b) in bytes.enumerated() {
                if b > bound { return nil }
                if sum + b > bound {
                    out.append(start..<i)
                    start = i
                    sum = 0
                }
                sum += b
            }
            out.append(start..<bytes.count)
            return out.count <= m ? out : nil
        }
        var lo = bytes.max() ?? 0, hi = bytes.reduce(0, +)
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if split(mid) != nil { hi = mid } else { lo = mid + 1 }
        }
        return split(lo)!
    }

    /// Blocks whose forward runs twice in a step.
    public var recomputedBlocks: Int { segments.dropLast().reduce(0) { $0 + $1.count } }

    public var description: String {
        segments.map { $0.count == 1 ? "[\($0.lowerBound)]" : "[\($0.lowerBound)-\($0.upperBound - 1)]" }
            .joined(separator: " ")
    }
}
