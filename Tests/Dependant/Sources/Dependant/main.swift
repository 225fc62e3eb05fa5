import Remat

// One sqrt(n)-checkpointed training step of LeNet-5 with overlapped recompute, through the
// public API only; exits non-zero unless the loss is finite and the parameters moved.
KernelRuntime.threads = 2
let model = try Zoo.lenet5(seed: 1)
let data = try SyntheticDataset(count: 16, imageShape: model.imageShape, classes: model.classes)
let trainer = Trainer(model: model, optimizer: SGD(learningRate: 0.05, momentum: 0.9))
trainer.checkpointing = Checkpointing(policy: .sqrtN, overlap: Overlap(backwardThreads: 1, recomputeThreads: 1))
let before = model.parameters
let (x, y) = try data.batch(Array(0..<16))
let m = try trainer.train(images: x, labels: y)
print("dependant: \(KernelRuntime.isa), loss \(m.loss), peak activations \(m.peakActivationBytes) bytes")
guard m.loss.isFinite, model.parameters != before else { fatalError("the step did not train") }
