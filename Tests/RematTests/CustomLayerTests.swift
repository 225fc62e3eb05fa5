import Foundation
import Testing
import Remat // the public API only: what a user of the library has

/// y = x * scale[c]: a layer with parameters and a buffer (the training steps it has seen),
/// written with the public API alone.
final class ChannelScale: Layer {
    let channels: Int
    private var slot: ParameterSlot?
    private var steps: Float = 0

    init(_ channels: Int) { self.channels = channels }
    var name: String { "scale \(channels)" }
    var parameterCount: Int { channels }
    func bind(_ slot: ParameterSlot) { self.slot = slot }
    func initialize(_ rng: inout SeededGenerator) {
        for c in 0..<channels { slot!.values[c] = rng.uniform(0.5, 1.5) }
    }
    var buffers: [String: [Float]] {
        get { ["scale.steps": [steps]] }
        set { steps = newValue["scale.steps"]?.first ?? steps }
    }
    func outputShape(for input: Shape) throws -> Shape {
        guard input.dims.count == 4, input.dims[1] == channels else {
            throw RematError.shape("\(name) expects (N, \(channels), H, W), got \(input)")
        }
        return input
    }
    private func channel(_ i: Int, _ shape: Shape) -> Int { i / (shape.dims[2] * shape.dims[3]) % channels }

    func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        if context.training && context.updateRunningStatistics { steps += 1 } // not again in a recompute
        let v = x.scalars
        let y = try Tensor(shape: x.shape, values: v.indices.map { v[$0] * slot!.values[channel($0, x.shape)] })
        return (y, Saved(tensors: [x]))
    }

    func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        let x = saved.tensors[0].scalars, g = dy.scalars
        for i in g.indices { slot!.gradients[channel(i, dy.shape)] += g[i] * x[i] }
        return try Tensor(shape: dy.shape, values: g.indices.map { g[$0] * slot!.values[channel($0, dy.shape)] })
    }
}

/// x + body(x): a container of the user's own.
final class Residual: Layer {
    let body: Layer
    init(_ body: Layer) { self.body = body }
    var name: String { "residual(\(body.name))" }
    var sublayers: [Layer] { [body] }
    var parameterCount: Int { body.parameterCount }
    func bind(_ slot: ParameterSlot) { body.bind(slot) }
    func initialize(_ rng: inout SeededGenerator) { body.initialize(&rng) }
    func outputShape(for input: Shape) throws -> Shape {
        let out = try body.outputShape(for: input)
        guard out == input else { throw RematError.shape("\(name): the body changes \(input) into \(out)") }
        return out
    }
    func forwardFLOPs(for input: Shape) -> Int { body.forwardFLOPs(for: input) }
    func forward(_ x: Tensor, _ context: ForwardContext) throws -> (Tensor, Saved) {
        let (b, saved) = try body.forward(x, context)
        let (u, v) = (x.scalars, b.scalars)
        return (try Tensor(shape: x.shape, values: zip(u, v).map(+)), Saved(children: [saved]))
    }
    func backward(_ dy: Tensor, _ saved: Saved) throws -> Tensor {
        let db = try body.backward(dy, saved.children[0])
        return try Tensor(shape: dy.shape, values: zip(db.scalars, dy.scalars).map(+))
    }
}

@Suite("Layers and containers written outside the library")
struct CustomLayerTests {
    static func model() throws -> Model {
        try Model(name: "custom", imageShape: Shape(3, 8, 8), blocks: [
            Sequential([Conv2D(3, 4, kernel: 3, padding: 1), BatchNorm2D(4), ReLU()]),
            Residual(Sequential([ChannelScale(4), Dropout(0.5), BatchNorm2D(4)])),
            Residual(Sequential([ChannelScale(4), Dropout(0.5)])),
            Sequential([GlobalAvgPool(), Linear(4, 10)]),
        ], seed: 5)
    }

    /// Two steps, returning the bits of everything they changed and the model's buffers.
    static func train(_ checkpointing: Checkpointing) throws -> (bits: [UInt32], buffers: [String: [Float]], trainer: Trainer) {
        let trainer = Trainer(model: try model(), optimizer: SGD(learningRate: 0.05), seed: 3)
        trainer.checkpointing = checkpointing
        let data = try SyntheticDataset(count: 16, imageShape: Shape(3, 8, 8), classes: 10, seed: 2)
        for s in 0..<2 {
            let (x, y) = try data.batch(Array(s * 8..<(s + 1) * 8))
            _ = try trainer.train(images: x, labels: y)
        }
        let buffers = Dictionary(uniqueKeysWithValues: ["bn.running_mean", "bn.running_var", "scale.steps"].map {
            ($0, trainer.model.leavesBuffer($0))
        })
        let bits = (trainer.model.parameters + trainer.model.parameterGradients + buffers.sorted { $0.key < $1.key }.flatMap(\.value))
        return (bits.map(\.bitPattern), buffers, trainer)
    }

    @Test func customLayersTrainUnderEveryPolicyWithTheSameBits() throws {
        let baseline = try Self.train(.keepAll)
        // the buffers of layers inside the user's container: both BatchNorms' statistics (4
        // channels each) moved, and each scale counted two steps, not its recomputes
        #expect(baseline.buffers["bn.running_mean"]!.count == 8)
        #expect(baseline.buffers["bn.running_mean"]!.allSatisfy { $0 != 0 })
        #expect(baseline.buffers["scale.steps"] == [2, 2])
        // the scales have gradients, and the two dropouts have streams of their own
        #expect(baseline.trainer.model.parameterGradients.contains { $0 != 0 })
        #expect(baseline.trainer.model.userLeaves.compactMap { $0 as? Dropout }.map(\.stream) == [1, 2])
        let overlap = Overlap(backwardThreads: 1, recomputeThreads: 1)
        for c in [Checkpointing(policy: .every(blocks: 1)), Checkpointing(policy: .sqrtN), Checkpointing(policy: .selective),
                  Checkpointing(policy: .every(blocks: 1), overlap: overlap)] {
            let run = try Self.train(c)
            #expect(run.bits == baseline.bits, "\(c.policy) overlap \(c.overlap != nil)")
        }
    }

    /// A state saved from a model with user layers restores their buffers and parameters; a
    /// state whose buffer sizes differ is refused, leaving the trainer as it was.
    @Test func savedStatesCarryTheirBuffers() throws {
        let trained = try Self.train(.keepAll)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("custom-\(UUID()).safetensors").path
        defer { unlink(path) }
        try TrainingState.save(trained.trainer, to: path)
        let fresh = Trainer(model: try Self.model(), optimizer: SGD(learningRate: 0.05))
        try TrainingState.load(into: fresh, from: path)
        #expect(fresh.model.parameters == trained.trainer.model.parameters)
        #expect(fresh.model.leavesBuffer("scale.steps") == [2, 2])
        #expect(fresh.model.leavesBuffer("bn.running_var") == trained.buffers["bn.running_var"])

        let other = try Model(name: "custom", imageShape: Shape(3, 8, 8), blocks: [
            Sequential([Conv2D(3, 4, kernel: 3, padding: 1), BatchNorm2D(4), ReLU()]),
            Residual(Sequential([ChannelScale(4), Dropout(0.5), BatchNorm2D(4)])),
            Residual(Sequential([ChannelScale(4), Dropout(0.5)])),
            Residual(Sequential([ChannelScale(4)])), // one more scale: a third step count
            Sequential([GlobalAvgPool(), Linear(4, 10)]),
        ], seed: 5)
        let mismatch = Trainer(model: other, optimizer: SGD())
        #expect(throws: RematError.self) { try TrainingState.load(into: mismatch, from: path) }
        #expect(mismatch.model.leavesBuffer("scale.steps") == [0, 0, 0])
    }
}

extension Model {
    /// The leaf layers, found through the public protocol.
    var userLeaves: [Layer] {
        func leaves(_ l: Layer) -> [Layer] { l.sublayers.isEmpty ? [l] : l.sublayers.flatMap(leaves) }
        return blocks.flatMap(leaves)
    }

    /// One buffer's values over the model's layers in order.
    func leavesBuffer(_ name: String) -> [Float] { userLeaves.flatMap { $0.buffers[name] ?? [] } }
}
