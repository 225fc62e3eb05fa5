import Foundation

/// Which block outputs a training step keeps in memory; the rest are recomputed in the
/// backward pass. See `CheckpointPlan` for the segments a policy makes.
public enum CheckpointPolicy: Sendable, Equatable, CustomStringConvertible {
    /// Keep everything: no recomputation.
    case keepAll
    /// A checkpoint every k blocks (segments of k blocks).
    case every(blocks: Int)
    /// The peak of at most ceil(sqrt(n)) segments of balanced bytes (O(sqrt n) memory), with
    /// the least recompute that peak allows (given a chain profile; see `CheckpointPlan`).
    case sqrtN
    /// The choice per block (keep, minimal or selective stash, or rebuilt in a checkpointed
    /// segment) that rebuilds for the least time while the predicted peak of activation bytes
    /// stays within this many bytes (a dynamic program over the chain's measured or estimated
    /// profile; with overlap, segmentations only). A budget below the smallest feasible one is
    /// an error that names that smallest budget.
    case budget(bytes: Int)
    /// Keep only the outputs of expensive layers (convolutions, linear) and the block
    /// inputs that cannot be rebuilt from them; recompute the cheap layers (BatchNorm, ReLU,
    /// pooling, dropout) of each block just before its backward pass. The last block keeps
    /// everything.
    case selective
    /// The least each block's backward pass needs, with no recompute of convolutions or linear
    /// layers: as `selective`, but a ResNet block keeps the sum before its last ReLU instead of
    /// its second convolution's output and its own input, since its BatchNorm is
    /// differentiated from that sum (half of what `keepAll` keeps in a BasicBlock).
    case minimal
    /// As `minimal`, but a ResNet block keeps its sum alone and runs its first convolution
    /// again before its backward pass (a quarter of what `keepAll` keeps in a BasicBlock,
    /// for one convolution recomputed a block).
    case lean

    /// Whether it recomputes segments that a recompute thread could rebuild ahead of the
    /// backward pass (none keeps everything; selective, minimal and lean rebuild each block's
    /// cheap layers on the backward thread).
    public var canOverlap: Bool { self != .keepAll && self != .selective && self != .minimal && self != .lean }

    public var description: String {
        switch self {
        case .keepAll: return "none"
        case .every(let k): return "every-\(k)"
        case .sqrtN: return "sqrt(n)"
        case .budget(let bytes): return "budget-\(Self.mebibytes(bytes))MiB"
        case .selective: return "selective"
        case .minimal: return "minimal"
        case .lean: return "lean"
        }
    }

    static func mebibytes(_ bytes: Int) -> String {
        let m = Double(bytes) / 1_048_576
        return m == m.rounded() ? String(Int(m)) : String(format: "%.1f", m)
    }

    /// Parses "none" (or "keep-all"), "sqrt" (or "sqrt(n)", "sqrtn"), "every-K", "selective", "minimal", "lean", "budget-SIZE"
    /// (SIZE in bytes, or with a KiB/MiB/GiB suffix); nil for anything else.
    public init?(parsing text: String) {
        let t = text.lowercased()
        switch t {
        case "none", "keep-all": self = .keepAll
        case "sqrt", "sqrtn", "sqrt(n)": self = .sqrtN
        case "selective": self = .selective
        case "minimal": self = .minimal
        case "lean": self = .lean
        default:
            if t.hasPrefix("every-"), let k = Int(t.dropFirst(6)), k >= 1 { self = .every(blocks: k); return }
            if t.hasPrefix("budget-"), let b = Self.parseBytes(String(t.dropFirst(7))) { self = .budget(bytes: b); return }
            return nil
        }
    }

    /// "512MiB", "1.5GiB", "300000" (bytes); nil if malformed or not positive.
    public static func parseBytes(_ text: String) -> Int? {
        let t = text.lowercased().trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in [("gib", 1 << 30), ("mib", 1 << 20), ("kib", 1 << 10), ("b", 1), ("", 1)] where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count)), v > 0, v * Double(scale) < 9e18 else { continue }
            return Int(v * Double(scale))
        }
        return nil
    }
}

/// How recomputation runs.
public struct Overlap: Sendable, Equatable, Codable {
    /// Kernel team of the backward pass (the calling thread).
    public var backwardThreads: Int
    /// Kernel team of the recompute thread.
    public var recomputeThreads: Int
    /// How many segments the recompute thread may rebuild ahead of the backward pass
    /// (each costs one segment's activations of memory).
    public var lookahead: Int
    /// For the step, bind the backward team to the first `backwardThreads` usable CPUs and the
    /// recompute team to the next `recomputeThreads` (threads lent across follow the lender's
    /// CPUs), so the scheduler cannot stack one team's threads on the other's cores. Off by
    /// default: it pays only on cores no other job uses (a busy process on one of them stalled
    /// bound teams, 20x slower steps, where unbound ones moved away).
    public var bindsCores: Bool
    /// Live activation bytes to pace the recompute thread under, or nil for the lookahead
    /// alone: it starts a block only if, by the plan's profile, that block's rebuild fits
    /// beside the most the backward pass can still reach from where it is, and otherwise waits
    /// for the backward pass to move on, unless the backward pass is waiting for that very
    /// segment (then it goes on, as a sequential recompute would). The step's peak then stays
    /// within the larger of the limit and the sequential peak (as `PlanPrediction`'s
    /// `overlappedPeakBound` says, to the profile's accuracy); a budget policy sets it to
    /// the budget.
    public var memoryLimit: Int?

    /// Team sizes of the two threads and how far ahead the recompute thread may run.
    public init(backwardThreads: Int, recomputeThreads: Int, lookahead: Int = 1, bindsCores: Bool = false,
                memoryLimit: Int? = nil) {
        self.backwardThreads = backwardThreads
        self.recomputeThreads = recomputeThreads
        self.lookahead = lookahead
        self.bindsCores = bindsCores
        self.memoryLimit = memoryLimit
    }

    public init(from decoder: Decoder) throws { // older tuning files lack the last two
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(backwardThreads: try c.decode(Int.self, forKey: .backwardThreads),
                  recomputeThreads: try c.decode(Int.self, forKey: .recomputeThreads),
                  lookahead: try c.decode(Int.self, forKey: .lookahead),
                  bindsCores: try c.decodeIfPresent(Bool.self, forKey: .bindsCores) ?? false,
                  memoryLimit: try c.decodeIfPresent(Int.self, forKey: .memoryLimit))
    }

    /// Splits `cores` between the two teams (the backward team gets the larger half).
    public static func split(cores: Int) -> Overlap {
        Overlap(backwardThreads: max(1, cores - cores / 2), recomputeThreads: max(1, cores / 2))
    }
}
