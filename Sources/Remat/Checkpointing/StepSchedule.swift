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
    /// Rebuild the segment's blocks from its checkpoint, which is then let go, each keeping a
    /// minimal stash (and its input where `keepsInput` says, one flag a block).
    case rebuildIntoStashes(Segment, keepsInput: [Bool])
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

/// A part of the chain a schedule runs as one: a segment, rebuilt from its checkpoint or kept
/// whole, or rebuilt into minimal stashes; or one block that keeps a stash.
enum Stage: Sendable, Equatable {
    case segment(Segment, recomputed: Bool)
    case minimalSegment(Segment, keepsInput: [Bool])
    case stash(block: Int, keepsInput: Bool)

    /// The first block it runs.
    var firstBlock: Int {
        switch self {
        case .segment(let s, _), .minimalSegment(let s, _): return s.blocks.lowerBound
        case .stash(let i, _): return i
        }
    }
}

/// The operations of one training step under a plan, in order: the forward phase up to and
/// including the loss, then the backward phase.
struct StepSchedule: Sendable, Equatable {
    let plan: CheckpointPlan
    /// Each block's choice under the plan, and the stash it keeps (`CheckpointPlan.stashKinds`).
    let choices: [BlockChoice]
    let stashKinds: [BlockChoice?]
    let operations: [StepOperation]
    /// The segments, recomputed or kept, in order (a plan of segments: every block's).
    let segments: [Segment]
    /// The segment of each block (a plan of segments only).
    var segmentOf: [Int] { segments.flatMap { s in s.blocks.map { _ in s.index } } }

    /// The schedule of `plan`; `rebuildsOutput[i]` says whether block i can rebuild its output
    /// from its stash under this plan (so the next block need not keep its input).
    init(_ plan: CheckpointPlan, rebuildsOutput: [Bool]) {
        let choices = plan.choices
        precondition(rebuildsOutput.count == choices.count, "one flag per block")
        self.plan = plan
        self.choices = choices
        stashKinds = plan.stashKinds
        let stages: [Stage]
        (stages, segments) = StepSchedule.stages(of: plan, rebuildsOutput: rebuildsOutput)
        operations = stages.flatMap(StepSchedule.forwardPhase) + [.loss] + stages.reversed().flatMap(StepSchedule.backwardPhase)
    }

    /// The stages of `plan` in order, and its segments: a stash keeps its input unless the
    /// block before keeps a stash it can rebuild that input from.
    static func stages(of plan: CheckpointPlan, rebuildsOutput: [Bool]) -> (stages: [Stage], segments: [Segment]) {
        let choices = plan.choices
        var stages: [Stage] = [], segments: [Segment] = []
        for r in plan.segments {
            let first = r.lowerBound, choice = choices[first]
            if choice.stashes {
                stages += r.map { .stash(block: $0, keepsInput: $0 == 0 || !(choices[$0 - 1].stashes && rebuildsOutput[$0 - 1])) }
            } else {
                segments.append(Segment(index: segments.count, blocks: r))
                stages.append(choice == .checkpointMinimal
                              ? .minimalSegment(segments.last!, keepsInput: r.map { $0 == first || !rebuildsOutput[$0 - 1] })
                              : .segment(segments.last!, recomputed: choice.recomputes))
            }
        }
        return (stages, segments)
    }

    /// A stage's forward: a recomputed segment keeps its checkpoint and statistics, a kept
    /// one its records.
    static func forwardPhase(of stage: Stage) -> [StepOperation] {
        switch stage {
        case .segment(let s, let recomputed):
            return (recomputed ? [.checkpoint(s)] : []) + s.blocks.map { .forward(block: $0, keep: recomputed ? .statistics : .records) }
        case .minimalSegment(let s, _):
            return forwardPhase(of: .segment(s, recomputed: true))
        case .stash(let i, let keepsInput):
            return [.forward(block: i, keep: .stash(keepsInput: keepsInput))]
        }
    }

    /// A stage's backward: a recomputed segment is rebuilt first, a stashed block's cheap layers.
    static func backwardPhase(of stage: Stage) -> [StepOperation] {
        switch stage {
        case .segment(let s, let recomputed):
            return (recomputed ? [.rebuild(s)] : []) + s.blocks.reversed().map { .backward(block: $0) } + [.release(s)]
        case .minimalSegment(let s, let keepsInput):
            return [.rebuildIntoStashes(s, keepsInput: keepsInput)]
                + s.blocks.reversed().flatMap { [StepOperation.rebuildFromStash(block: $0), .backward(block: $0)] } + [.release(s)]
        case .stash(let i, _):
            return [.rebuildFromStash(block: i), .backward(block: i)]
        }
    }

    /// The operations up to and including the loss, and those after it.
    var forwardOperations: ArraySlice<StepOperation> { operations[...operations.firstIndex(of: .loss)!] }
    var backwardOperations: ArraySlice<StepOperation> { operations[(operations.firstIndex(of: .loss)! + 1)...] }
}
