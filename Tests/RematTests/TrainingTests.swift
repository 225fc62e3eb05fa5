import Testing
@testable import Remat

@Suite("Training loop, memory accounting and errors")
struct TrainingTests {
    /// LeNet-5 learns the synthetic data: test accuracy far above the 10 % of chance.
    @Test func lenetLearnsSyntheticData() throws {
        let train = try SyntheticDataset(count: 4096, imageShape: Shape(1, 28, 28), seed: 11)
        let trainer = Trainer(model: try Zoo.lenet5(seed: 1), optimizer: SGD(learningRate: 0.01, momentum: 0.9))
        for epoch in 0..<2 {
            let order = train.shuffledIndices(seed: UInt64(epoch))
            for start in stride(from: 0, to: order.count, by: 64) {
                let (x, y) = try train.batch(Array(order[start..<start + 64]))
                try trainer.train(images: x, labels: y)
            }
        }
        // a held-out split: the same classes (seed), other images (indices 4096 on)
        let held = try SyntheticDataset(count: 512, imageShape: Shape(1, 28, 28), seed: 11, firstIndex: 4096)
        let (x, y) = try held.batch(Array(0..<512))
        let (logits, _) = try trainer.model.forward(x, ForwardContext(training: false))
        let accuracy = Double(SoftmaxCrossEntropy.correct(logits: logits, labels: y)) / 512
        #expect(accuracy > 0.8, "held-out accuracy \(accuracy)")
    }

    /// Activation memory is all returned after a step, and the peak is what the step held.
    @Test func allocatorIsExact() throws {
        let account = MemoryAccount()
        let a = Tensor(zeros: Shape(10, 10), account: account) // 400 bytes -> 448 (64-byte blocks)
        #expect(account.liveBytes == 448)
        do {
            let b = Tensor(zeros: Shape(16), account: account)
            #expect(account.liveBytes == 448 + 64)
            _ = b
        }
        #expect(account.liveBytes == 448)
        #expect(account.peakBytes == 512)
        account.resetPeak()
        #expect(account.peakBytes == 448)
        do { // charged as placed: whole 4 KiB pages from 128 KiB, whole 2 MiB pages from 2 MiB
            let pages = Tensor(uninitialized: Shape(33_000), account: account)     // 132,000 bytes
            let huge = Tensor(uninitialized: Shape(600_000), account: account)     // 2,400,000 bytes
            #expect(account.liveBytes == 448 + 135_168 + 4 << 20)
            _ = (pages, huge)
        }
        _ = a
        let data = try SyntheticDataset(count: 8, imageShape: Shape(3, 32, 32))
        let (x, y) = try data.batch(Array(0..<8))
        let trainer = Trainer(model: try Zoo.resnet(blocksPerStage: 1), optimizer: SGD())
        let m = try trainer.train(images: x, labels: y)
        #expect(m.peakActivationBytes > 8 * 16 * 32 * 32 * 4 * 3) // at least a few stem-sized activations
        #expect(trainer.account.liveBytes == 0) // every activation of the step was freed
    }

    @Test func badInputsGiveClearErrors() throws {
        let model = try Zoo.lenet5()
        let trainer = Trainer(model: model, optimizer: SGD())
        let wrong = Tensor(zeros: Shape(2, 3, 28, 28))
        #expect(throws: RematError.self) { try trainer.train(images: wrong, labels: [0, 1]) }
        let right = Tensor(zeros: Shape(2, 1, 28, 28))
        #expect(throws: RematError.self) { try trainer.train(images: right, labels: [0, 10]) } // label out of range
        #expect(throws: RematError.self) { try trainer.train(images: right, labels: [0]) }     // count mismatch
        #expect(throws: RematError.self) { try Tensor(shape: Shape(2, 2), values: [1, 2, 3]) }
        #expect(throws: RematError.self) {
            try Model(name: "bad", imageShape: Shape(3, 8, 8), blocks: [Sequential([Conv2D(4, 4, kernel: 3)])])
        }
    }

    /// A diverging learning rate stops training with the step number and leaves the
    /// parameters as they were before that step.
    @Test func nonFiniteLossStops() throws {
        let model = try Zoo.lenet5()
        let trainer = Trainer(model: model, optimizer: SGD(learningRate: 1e30, momentum: 0))
        let data = try SyntheticDataset(count: 64, imageShape: Shape(1, 28, 28))
        let (x, y) = try data.batch(Array(0..<64))
        var thrown: RematError?
        var before: [Float] = []
        for _ in 0..<10 {
            before = model.parameters
            do { try trainer.train(images: x, labels: y) } catch let e as RematError { thrown = e; break }
        }
        guard case .nonFinite(let message) = thrown else { Issue.record("no non-finite error"); return }
        #expect(message.contains("step"))
        #expect(model.parameters.elementsEqual(before) { $0.bitPattern == $1.bitPattern })
    }
}
