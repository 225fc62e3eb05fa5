/// A checkpointed segment of the chain: its place among the plan's segments and its blocks.
struct Segment: Sendable, Equatable {
    let index: Int
    let blocks: Range<Int>
}

/// One operation of a training step. A plan compiles to a list of them (`StepSchedule`); the
/// executors run that list and the memory prediction replays it against byte sizes, so the
/// order of a step is written down once.
enum StepOperation: Sendable, Equatable {
    /// Keep the current activation as the segment's checkpoint; the forward passes of its
    /// blocks record their BatchNorm batch statistics beside it.
    case checkpoint(Segment)
    /// Run the block's forward pass on the current activation, keeping `keep` of what it made.
    case forward(block: Int, keep: Keep)
    /// The loss and its gradient from the logits.
    case loss
    /// Rebuild the records of the segment's blocks from its checkpoint, which is then let go.
    case rebuild(Segment)
    /// Selective: rebuild the block's records from its stash (and its input from the previous
    /// block's stash where the input was not kept).
    case rebuildFromStash(block: Int)
    /// The block's backward pass; its records are freed after it.
    case backward(block: Int)
    /// The backward pass is done with the segment (with overlap, a lookahead slot comes free).
    case release(Segment)

    /// What a forward pass keeps for the backward pass.
    enum Keep: Sendable, Equatable {
        /// Everything its backward pass needs.
        case records
        /// Only its BatchNorms' batch statistics: the segment is rebuilt from its checkpoint.
        case statistics
        /// The outputs of its expensive layers, and its input when the previous block cannot
        /// rebuild it from its own stash (selective recomputation).
        case stash(keepsInput: Bool)
    }
}

/// The operations of one training step under a plan, in order: the forward phase up to and
/// including the loss, then the backward phase.
struct StepSchedule: Sendable, Equatable {
    let plan: CheckpointPlan
    let operations: [StepOperation]
    /// The checkpointed segments (one for a plan without checkpoints).
    let segments: [Segment]
    /// The segment of each block.
    var segmentOf: [Int] { segments.flatMap { s in s.blocks.map { _ in s.index } } }

    /// The schedule of `plan`; `rebuildsOutput[i]` says whether block i can rebuild its output
    /// from its stash under this plan (so the next block need not keep its input).
    init(_ plan: CheckpointPlan, rebuildsOutput: [Bool]) {
        precondition(rebuildsOutput.count == plan.segments.last!.upperBound, "one flag per block")
        self.plan = plan
        switch plan {
        case .segmented(let ranges):
            segments = ranges.enumerated().map { Segment(index: $0, blocks: $1) }
            let last = segments.count - 1
            operations = segments.flatMap { StepSchedule.forwardPhase(of: $0, last: $0.index == last) } + [.loss]
                + segments.reversed().flatMap { StepSchedule.backwardPhase(of: $0, last: $0.index == last) }
        case .selective(let n), .minimal(let n):
            segments = [Segment(index: 0, blocks: 0..<n)]
            var ops: [StepOperation] = (0..<(n - 1)).map {
                .forward(block: $0, keep: .stash(keepsInput: $0 == 0 || !rebuildsOutput[$0 - 1]))
            }
            ops += [.forward(block: n - 1, keep: .records), .loss, .backward(block: n - 1)]
            for i in stride(from: n - 2, through: 0, by: -1) { ops += [.rebuildFromStash(block: i), .backward(block: i)] }
            operations = ops
        }
    }

    /// A segment's forward: the last keeps every record, the others keep their checkpoint.
    static func forwardPhase(of s: Segment, last: Bool) -> [StepOperation] {
        (last ? [] : [.checkpoint(s)]) + s.blocks.map { .forward(block: $0, keep: last ? .records : .statistics) }
    }

    /// A segment's backward: the others are rebuilt first.
    static func backwardPhase(of s: Segment, last: Bool) -> [StepOperation] {
        (last ? [] : [.rebuild(s)]) + s.blocks.reversed().map { .backward(block: $0) } + [.release(s)]
    }

    /// The operations up to and including the loss, and those after it.
    var forwardOperations: ArraySlice<StepOperation> { operations[...operations.firstIndex(of: .loss)!] }
    var backwardOperations: ArraySlice<StepOperation> { operations[(operations.firstIndex(of: .loss)! + 1)...] }
}
